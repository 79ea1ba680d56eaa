// `vlmscope collect`: per-head attention outputs z of every layer and head, pooled per question, for probing
// (CogVision / CogVSR). Questions come from a question file (sub-questions asked in a chain), answers are generated
// greedily and scored, and the rows go to an activation store (src/interp/activation-store.ts) that a killed run
// resumes. Progress bar on a terminal, a summary per function at the end.

import { stat } from 'node:fs/promises';
import { Command, Option } from 'commander';
import { intArg } from './args.js';
import { acquireGpu } from '../gpu/device.js';
import { GpuContext } from '../gpu/context.js';
import { nodeFolder } from '../io/checkpoint.js';
import { Tokenizer } from '../io/tokenizer.js';
import { type ModelDims, type Tower, SpecError, parseInterventions } from '../spec/spec.js';
import type { EvalItem } from '../eval/dataset.js';
import { type ContextMode, type PoolSpec, DEFAULT_COLLECT_MAX_NEW_TOKENS, checkPool, parsePool, planCollection } from '../interp/collect.js';
import {
  type CollectStoreOptions,
  type StoreExample,
  DEFAULT_CHUNK_SIZE,
  StoreMismatchError,
  collectToStore,
  inspectStore,
  storeArgs,
} from '../interp/activation-store.js';
import { readJsonFile } from './files.js';
import { configDims, dtypeOption, loadModel, modelOption, checkFolder, eosIds } from './load.js';
import { UsageError } from './errors.js';
import { checkImages, readData } from './data.js';
import { progressLine } from './progress.js';

interface CollectCliOptions {
  model: string;
  data: string;
  out: string;
  pool?: string;
  concatLayerMean?: boolean;
  chain: boolean;
  context: ContextMode;
  tower: Tower;
  limit?: number;
  maxNewTokens: number;
  chunkSize: number;
  intervene?: string;
  dtype?: string;
  verbose?: boolean;
}

export function collectCommand(): Command {
  return new Command('collect')
    .description('answer every question (sub-questions in a chain) and store the per-head attention outputs z, pooled per question, for probing')
    .addOption(modelOption())
    .requiredOption('--data <file>', 'question file (vlmscope JSONL with sub_questions, VSR JSONL or What\'sUp JSON; docs/datasets.md)')
    .requiredOption('--out <dir>', 'output folder: index.json + activations.safetensors (parts/ while running; rerun to resume)')
    .option('--pool <pool>', 'tokens z is pooled over: last_prompt, first_generated, answer_mean, indices:<i,j,...> (answer-token indices); image_mean for --tower vision (default: last_prompt, or image_mean for vision)')
    .option('--concat-layer-mean', 'append to each head\'s z the mean over its layer\'s heads ([z; mean], dim = 2 d_head)')
    .option('--no-chain', 'ask every question on its own (default: sub-questions in a chain, earlier QAs as context, then the main question)')
    .addOption(new Option('--context <answers>', 'answers in the chain context: gold or the model\'s predicted ones').choices(['gold', 'predicted']).default('gold'))
    .addOption(new Option('--tower <tower>', 'tower whose z is collected').choices(['text', 'vision']).default('text'))
    .option('--limit <n>', 'collect only the first n questions, in the order they are asked', intArg(1, 'a positive integer'))
    .option('--max-new-tokens <n>', 'most tokens generated per answer', intArg(1, 'a positive integer'), DEFAULT_COLLECT_MAX_NEW_TOKENS)
    .option('--chunk-size <n>', 'questions per part file written while running (the unit of resumption)', intArg(1, 'a positive integer'), DEFAULT_CHUNK_SIZE)
    .option('--intervene <file>', 'intervention spec (JSON), as for trace, applied to every forward')
    .addOption(dtypeOption())
    .option('--verbose', 'print timings to stderr, and stack traces with errors')
    .addHelpText(
      'after',
      `
Each main question's sub-questions are asked in order, each with the earlier sub-questions and their answers as
prior turns (the chat template, else LLaVA's "USER: <image>\\n{q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT:",
Qwen's ChatML or SmolVLM's User: / Assistant: turns), then the main question with all of them. Answers are
greedy (until EOS or --max-new-tokens) and scored as in eval. z (per-head attention output before o_proj) is
pooled per question:
  last_prompt      at the last prompt token (captured while answering)
  first_generated  at the first answer token   } from a second prefill over prompt + answer
  answer_mean      mean over the answer tokens } (teacher forcing), EOS excluded
  indices:0,2      mean over these answer tokens
Output: DIR/index.json {"model", "tower", "layers", "heads", "dim", "pool", "concat_layer_mean", "chain", "context",
"max_new_tokens", "args", "examples": [{"id", "main_id", "function", "question", "answer", "prediction", "correct",
"row"}]} (plus "wording" and "wording_heldout" before "row" for questions with a paraphrase id, as make-synthetic
--wordings writes them) and DIR/activations.safetensors (F32 "z" [rows, layers, heads, dim]). An interrupted run keeps its parts;
rerunning the same command resumes, and gives the same files as an uninterrupted run. A progress bar is drawn on
stderr when it is a terminal. Exit codes: 0 ok, 1 runtime error, 2 usage error (bad options, a missing or
malformed data file, an output folder holding a collection with other arguments).

Examples:
  vlmscope collect --model weights/tiny-llava --data synthetic/questions.jsonl --out acts --limit 200
  vlmscope collect --model ./llava-1.5-7b-hf --data cogvsr.jsonl --out acts --pool answer_mean --concat-layer-mean`,
    )
    .action(async (_opts: CollectCliOptions, cmd: Command) => {
      await runCollect(cmd.optsWithGlobals<CollectCliOptions>());
    });
}

async function runCollect(opts: CollectCliOptions): Promise<void> {
  const t0 = performance.now();
  const tower = opts.tower;
  let pool: PoolSpec;
  try {
    pool = parsePool(opts.pool ?? (tower === 'vision' ? 'image_mean' : 'last_prompt'));
    checkPool(pool, tower);
  } catch (e) {
    throw new UsageError(`--pool: ${(e as Error).message}`);
  }
  const interventionJson = opts.intervene ? await readJsonFile(opts.intervene, 'intervention spec') : null;
  await checkOut(opts.out);
  const items = await readData(opts.data);
  const planned = planCollection(items, { chain: opts.chain }).slice(0, opts.limit ?? Infinity);
  await checkImages(planned.map((s) => s.item), 'collect');
  await checkFolder(opts.model);
  const folder = nodeFolder(opts.model);
  const tokenizer = await Tokenizer.fromFolder(folder);
  const eosTokenIds = await eosIds(opts.model, tokenizer);
  const dims: ModelDims = await configDims(opts.model);
  let interventions;
  try {
    interventions = interventionJson ? parseInterventions(interventionJson, dims, opts.intervene) : undefined;
  } catch (e) {
    throw e instanceof SpecError ? new UsageError(e.message) : e;
  }

  const storeOpts: CollectStoreOptions = {
    pool,
    concatLayerMean: opts.concatLayerMean ?? false,
    chain: opts.chain,
    context: opts.context,
    tower,
    maxNewTokens: opts.maxNewTokens,
    interventions,
    eosTokenIds,
    limit: opts.limit,
    chunkSize: opts.chunkSize,
    modelName: opts.model,
    extraArgs: { dtype: opts.dtype ?? null },
  };

  // Check the output folder before loading the model: a finished store is reported, other arguments refused.
  const args = await storeArgs({ dims, source: opts.model }, tokenizer, items, storeOpts);
  let state;
  try {
    state = await inspectStore(opts.out, args);
  } catch (e) {
    if (e instanceof StoreMismatchError) throw new UsageError(e.message);
    throw e;
  }
  if (state.state === 'complete') {
    process.stdout.write(`${opts.out} already holds these ${state.index.examples.length} examples; nothing to do\n`);
    process.stdout.write(formatSummary(state.index.examples));
    return;
  }
  const resumed = state.state === 'partial' ? state.parts.flatMap((p) => p.examples) : [];
  if (resumed.length > 0) process.stderr.write(`resuming: ${resumed.length} of ${planned.length} questions already in ${opts.out}\n`);

  const gpu = await acquireGpu();
  let seconds: number;
  let examples: StoreExample[];
  let computed: number;
  try {
    const ctx = new GpuContext(gpu);
    const model = await loadModel(ctx, folder, opts);
    const bar = collectProgressBar(process.stderr, resumed.length, resumed.filter((e) => e.correct).length);
    const t1 = performance.now();
    try {
      const r = await collectToStore(model, tokenizer, items, opts.out, { ...storeOpts, onExample: bar.update });
      examples = r.examples;
      computed = r.done - r.resumedFrom;
    } finally {
      bar.done();
    }
    seconds = (performance.now() - t1) / 1000;
  } finally {
    gpu.destroy();
  }
  const c = dims[tower];
  const dim = storeOpts.concatLayerMean ? 2 * c.headDim : c.headDim;
  process.stdout.write(
    `collected ${examples.length} examples into ${opts.out}: z [${examples.length}, ${c.layers}, ${c.heads}, ${dim}] ` +
      `(${tower} tower, pool ${args.pool as string}${storeOpts.concatLayerMean ? ', layer mean appended' : ''}, ${opts.chain ? `chain (${opts.context} answers)` : 'no chain'})\n`,
  );
  process.stdout.write(formatSummary(examples));
  if (opts.verbose) {
    const rate = seconds > 0 ? computed / seconds : 0;
    process.stderr.write(
      `${computed} questions in ${seconds.toFixed(1)} s (${rate.toFixed(2)} questions/s); ${((performance.now() - t0) / 1000).toFixed(1)} s in all\n`,
    );
  }
}

/** Examples and correct answers per function, then overall, as an aligned table. */
export function formatSummary(examples: readonly StoreExample[]): string {
  const by = new Map<string, { total: number; correct: number }>();
  for (const e of examples) {
    const c = by.get(e.function) ?? { total: 0, correct: 0 };
    c.total++;
    if (e.correct) c.correct++;
    by.set(e.function, c);
  }
  const correct = examples.filter((e) => e.correct).length;
  const rows: [string, number, number][] = [...by.keys()].sort().map((k) => [`  ${k}`, by.get(k)!.total, by.get(k)!.correct]);
  rows.push(['overall', examples.length, correct]);
  const w = Math.max('function'.length, ...rows.map((r) => r[0].length)) + 2;
  const pct = (t: number, c: number) => `${(t > 0 ? (100 * c) / t : 0).toFixed(1)}%`;
  let out = `${'function'.padEnd(w)}${'examples'.padStart(9)}${'correct'.padStart(9)}${'accuracy'.padStart(10)}\n`;
  for (const [name, t, c] of rows) out += `${name.padEnd(w)}${String(t).padStart(9)}${String(c).padStart(9)}${pct(t, c).padStart(10)}\n`;
  return out;
}

/**
 * Progress on a terminal: questions done / total (resumed ones included), accuracy so far, rate of this run and
 * ETA, redrawn at most 10 times a second and erased when done. Nothing when the stream is not a TTY.
 */
export function collectProgressBar(
  stream: NodeJS.WriteStream,
  resumed = 0,
  resumedCorrect = 0,
): { update: (row: { correct: boolean }, done: number, total: number) => void; done: () => void } {
  const line = progressLine(stream, resumed);
  let correct = resumedCorrect;
  return {
    update(row, done, total) {
      if (row.correct) correct++;
      const acc = done > 0 ? ((correct / done) * 100).toFixed(1) : '0.0';
      line?.draw(done, total, (bar, rate, eta) => `collect [${bar}] ${done}/${total}  acc ${acc}%  ${rate.toFixed(2)} q/s  ETA ${eta.toFixed(0)} s`);
    },
    done: () => line?.done(),
  };
}

async function checkOut(out: string): Promise<void> {
  try {
    if (!(await stat(out)).isDirectory()) throw new UsageError(`--out ${out} is a file; give a folder (it is created when missing)`);
  } catch (e) {
    if (e instanceof UsageError) throw e;
  }
}

