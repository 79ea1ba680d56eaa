// `vlmscope heads-benchmark`: every head-finding method of the library on a model with declared known heads
// (known_heads.json in the model folder), scored by where each ranks them, precision@k and the ablation of its top-k
// against random-k heads (src/interp/heads-benchmark.ts). Inputs (model folder, known heads, data folder with
// questions.jsonl and scenes.jsonl, k, methods, output folder) are checked before the model loads; the outputs are
// written only when the whole run succeeded.

import { mkdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { intArg } from './args.js';
import { acquireGpu } from '../gpu/device.js';
import { GpuContext } from '../gpu/context.js';
import { nodeFolder } from '../io/checkpoint.js';
import { Tokenizer } from '../io/tokenizer.js';
import { type SceneRecord, parseSceneRecord } from '../eval/counterfactual.js';
import { readKnownHeads } from '../interp/known-heads.js';
import { isSpatialMain, sceneIdOfImage } from '../interp/knockout.js';
import { BENCHMARK_METHODS, DEFAULT_PATCH_PAIRS, type BenchmarkMethod, type HeadsBenchmarkResult, benchmarkKs, runHeadsBenchmark } from '../interp/heads-benchmark.js';
import { benchmarkCsv, benchmarkJson, benchmarkMarkdown, benchmarkSummaryCsv } from '../interp/heads-benchmark-report.js';
import { writeAtomic, checkOutDir } from './files.js';
import { checkFolder, configDims, dtypeOption, eosIds, loadModel, modelOption } from './load.js';
import { UsageError } from './errors.js';
import { checkImages, readData } from './data.js';
import { progressLine } from './progress.js';

interface BenchmarkCliOptions {
  model: string;
  data: string;
  scenes?: string;
  out: string;
  methods?: BenchmarkMethod[];
  k?: number[];
  seeds?: number[];
  permutations?: number;
  mlpSeeds?: number[];
  mlpEpochs?: number;
  mlpBatchSize?: number;
  pairs: number;
  attentionQuestions?: number;
  ablationSeeds: number;
  ablationQuestions?: number;
  seed: number;
  maxNewTokens?: number;
  cpu?: boolean;
  dtype?: string;
  verbose?: boolean;
}

function intListArg(what: string, min: number) {
  return (v: string): number[] => {
    const parts = v.split(',').map((s) => s.trim());
    if (parts.some((s) => !/^\d+$/.test(s) || Number(s) < min)) throw new InvalidArgumentError(`expected ${what} separated by commas, e.g. 2,4,8`);
    const out = parts.map(Number);
    if (new Set(out).size !== out.length) throw new InvalidArgumentError(`expected distinct ${what}`);
    return out;
  };
}

function methodsArg(v: string): BenchmarkMethod[] {
  const parts = v.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = parts.find((p) => !(BENCHMARK_METHODS as readonly string[]).includes(p));
  if (parts.length === 0 || bad !== undefined) throw new InvalidArgumentError(`expected methods among ${BENCHMARK_METHODS.join(', ')} separated by commas`);
  return [...new Set(parts)] as BenchmarkMethod[];
}

export function headsBenchmarkCommand(): Command {
  return new Command('heads-benchmark')
    .description("the planted-head benchmark: every head-finding method (probe, probe with controls, MLP probe, activation patching, attention mass) on a model with declared known heads; where each ranks them, precision@k, and its top-k ablated vs random-k")
    .addOption(modelOption())
    .requiredOption('--data <dir>', 'a synthetic set folder from scripts/make-synthetic.ts (questions.jsonl and scenes.jsonl), or its questions.jsonl')
    .option('--scenes <file>', 'scenes.jsonl of the set (default: the one beside questions.jsonl)')
    .option('--out <dir>', 'output folder (created if missing)', 'heads-benchmark')
    .option('--methods <list>', `methods to run, separated by commas (default all: ${BENCHMARK_METHODS.join(', ')})`, methodsArg)
    .option('--k <list>', 'the k of precision@k, e.g. 2,4,8 (default: the number of known heads, 4 and 8)', intListArg('positive integers', 1))
    .option('--seeds <list>', 'seeds of the linear probes\' splits (default 0,1,2,3,4)', intListArg('non-negative integers', 0))
    .option('--permutations <n>', 'label permutations of the selectivity control per function and seed (default 10)', intArg(1, 'a positive integer'))
    .option('--mlp-seeds <list>', 'MLP probe seeds, each a full training (default 0,1,2)', intListArg('non-negative integers', 0))
    .option('--mlp-epochs <n>', 'MLP probe epochs (default the paper\'s 100; fewer for speed)', intArg(1, 'a positive integer'))
    .option('--mlp-batch-size <n>', 'MLP probe batch size (default the paper\'s 1)', intArg(1, 'a positive integer'))
    .option('--pairs <n>', 'swapped-object pairs patched', intArg(1, 'a positive integer'), DEFAULT_PATCH_PAIRS)
    .option('--attention-questions <n>', 'spatial questions the attention mass is averaged over (default all)', intArg(1, 'a positive integer'))
    .option('--ablation-seeds <n>', 'random-k draws per method (0 skips the ablation)', intArg(0, 'a non-negative integer'), 5)
    .option('--ablation-questions <n>', 'spatial questions of each ablation run (default all)', intArg(1, 'a positive integer'))
    .option('--seed <s>', 'seed of the tie orders', intArg(0, 'a non-negative integer'), 0)
    .option('--max-new-tokens <n>', 'most tokens generated per answer (collect and ablation)', intArg(1, 'a positive integer'))
    .option('--cpu', 'fit the linear probes with the float64 CPU reference instead of the GPU batch')
    .addOption(dtypeOption())
    .option('--verbose', 'print stage timings to stderr, and stack traces with errors')
    .addHelpText(
      'after',
      `
Known heads come from the model folder's known_heads.json (written by the trainer that planted them), never from
the benchmark. The probe methods score each head per function, for the functions the known heads' question_types
point at (a main type -> the function label of its main questions in the data, "sub:X" -> X), a head counting with
its best function. Methods and their criteria (ties by the next criterion, then a seeded order, never position):
  probe        CogVision logistic probe per head on z at the last prompt row, split by main question: accuracy
  selectivity  the same with controls (label permutation, wording-only probe), split by held-out wording when the
               data has it: selectivity = accuracy - control
  mlp          CogVSR MLP probe: |gradient x activation| per head, relative to the function's largest
  patching     per-head activation patching at the last prompt row over --pairs swapped-object pairs: recovery
  attention    the last prompt row's attention on the two named objects' image tokens, mean over questions
Per method: the rank of each known head, precision@k, and (unless --ablation-seeds 0) its top-k heads (k = the
number of known heads) scaled by 0 vs k random heads outside them for each seed, accuracy on the spatial questions,
Welch t of the top-k value against the random-k values; then a verdict: finds the planted heads, partly, or not.

Outputs in --out (written only when the whole run succeeded):
  heads-benchmark.json          everything: known heads, targets, per method ranking, ranks, precision@k, ablation
  heads-benchmark.md            the tables and verdicts
  heads-benchmark.csv           method,position,rank,layer,head,known,value_1..value_4 (each method's ranking)
  heads-benchmark-summary.csv   one line per method: ranks, precision@k, ablation, finding
A progress line is drawn on stderr when it is a terminal. Exit codes: 0 ok, 1 runtime error, 2 usage error.

Examples:
  npx tsx scripts/make-synthetic.ts --out bench-data --seed 3003 --scenes 60 --wordings all
  vlmscope heads-benchmark --data bench-data --pairs 8 --out heads-benchmark/
  vlmscope heads-benchmark --data bench-data --methods patching,attention --ablation-seeds 0 --out quick/`,
    )
    .action(async (_opts: BenchmarkCliOptions, cmd: Command) => {
      await runBenchmark(cmd.optsWithGlobals<BenchmarkCliOptions>());
    });
}

/** --data as a folder (its questions.jsonl) or a questions file; the scenes file beside it unless --scenes. */
async function dataPaths(opts: BenchmarkCliOptions): Promise<{ questions: string; scenes: string }> {
  let isDir = false;
  try {
    isDir = (await stat(opts.data)).isDirectory();
  } catch {
    throw new UsageError(`--data ${opts.data}: no such file or folder; give a synthetic set folder from scripts/make-synthetic.ts`);
  }
  const questions = isDir ? join(opts.data, 'questions.jsonl') : opts.data;
  const scenes = opts.scenes ?? join(dirname(questions), 'scenes.jsonl');
  return { questions, scenes };
}

async function readScenes(path: string, fromDefault: boolean): Promise<Map<string, SceneRecord>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new UsageError(
      fromDefault
        ? `the data has no scenes.jsonl (${path}): the patching and attention methods need the scenes' objects; make the set with scripts/make-synthetic.ts or give --scenes FILE`
        : `cannot read scenes file ${path}: no such file`,
    );
  }
  const out = new Map<string, SceneRecord>();
  text.split('\n').forEach((raw, i) => {
    if (raw.trim() === '') return;
    try {
      const rec = parseSceneRecord(raw, `${path} line ${i + 1}`);
      out.set(rec.id, rec);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  });
  if (out.size === 0) throw new UsageError(`scenes file ${path} holds no scenes`);
  return out;
}

async function runBenchmark(opts: BenchmarkCliOptions): Promise<void> {
  const t0 = performance.now();
  await checkOutDir(opts.out);
  await checkFolder(opts.model);
  const dims = await configDims(opts.model);
  let knownHeads;
  try {
    knownHeads = await readKnownHeads(opts.model, dims);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const textHeads = knownHeads.heads.filter((h) => h.tower === 'text');
  if (textHeads.length !== knownHeads.heads.length) throw new UsageError(`${join(opts.model, 'known_heads.json')} declares vision-tower heads; the benchmark's methods score text heads only`);
  let ks: number[];
  try {
    ks = benchmarkKs(opts.k, knownHeads.heads.length, dims.text.layers * dims.text.heads);
  } catch (e) {
    throw new UsageError(`--k: ${(e as Error).message}`);
  }
  const paths = await dataPaths(opts);
  const items = await readData(paths.questions, true);
  const scenes = await readScenes(paths.scenes, opts.scenes === undefined);
  const spatial = items.filter(isSpatialMain);
  if (spatial.length === 0) throw new UsageError(`data file ${paths.questions} holds no spatial main questions (type "spatial"); make the set with scripts/make-synthetic.ts`);
  const missing = spatial.find((it) => !scenes.has(sceneIdOfImage(it.imagePath)));
  if (missing) throw new UsageError(`question ${missing.id}: no scene ${sceneIdOfImage(missing.imagePath)} (the name of its image ${basename(missing.imagePath)}) in ${paths.scenes}`);
  await checkImages(items, 'heads-benchmark');

  const folder = nodeFolder(opts.model);
  const tokenizer = await Tokenizer.fromFolder(folder);
  const eos = await eosIds(opts.model, tokenizer);
  const gpu = await acquireGpu();
  let result: HeadsBenchmarkResult;
  const line = progressLine(process.stderr);
  let stage = '';
  let stageStart = performance.now();
  try {
    const ctx = new GpuContext(gpu);
    const model = await loadModel(ctx, folder, opts);
    result = await runHeadsBenchmark(model, tokenizer, {
      items,
      scenes,
      knownHeads,
      methods: opts.methods,
      ks,
      seeds: opts.seeds,
      permutations: opts.permutations,
      mlpSeeds: opts.mlpSeeds,
      mlpEpochs: opts.mlpEpochs,
      mlpBatchSize: opts.mlpBatchSize,
      pairs: opts.pairs,
      attentionQuestions: opts.attentionQuestions,
      ablationSeeds: opts.ablationSeeds,
      ablationQuestions: opts.ablationQuestions,
      seed: opts.seed,
      maxNewTokens: opts.maxNewTokens,
      eosTokenIds: eos,
      probeContext: opts.cpu ? null : ctx,
      onProgress: (p) => {
        if (p.stage !== stage) {
          if (opts.verbose && stage) process.stderr.write(`${stage}: ${((performance.now() - stageStart) / 1000).toFixed(1)} s\n`);
          stage = p.stage;
          stageStart = performance.now();
        }
        line?.draw(p.done, p.total, (bar, rate, eta) => `heads-benchmark ${p.stage} [${bar}] ${p.done}/${p.total}  ${rate.toFixed(1)}/s  ETA ${eta.toFixed(0)} s`);
      },
    });
    if (opts.verbose && stage) process.stderr.write(`${stage}: ${((performance.now() - stageStart) / 1000).toFixed(1)} s\n`);
  } finally {
    line?.done();
    gpu.destroy();
  }

  const meta = { model: opts.model, data: paths.questions, scenes: paths.scenes };
  const files: [string, string][] = [
    ['heads-benchmark.json', benchmarkJson(result, meta)],
    ['heads-benchmark.md', benchmarkMarkdown(result)],
    ['heads-benchmark.csv', benchmarkCsv(result)],
    ['heads-benchmark-summary.csv', benchmarkSummaryCsv(result)],
  ];
  await mkdir(opts.out, { recursive: true }).catch((e: Error) => {
    throw new Error(`--out ${opts.out}: cannot create the folder: ${e.message}`);
  });
  for (const [name, data] of files) await writeAtomic(join(opts.out, name), data);
  for (const m of result.methods) process.stdout.write(`${m.verdict.text}\n`);
  process.stdout.write(`wrote ${files.map(([n]) => join(opts.out, n)).join(', ')}\n`);
  if (opts.verbose) process.stderr.write(`${((performance.now() - t0) / 1000).toFixed(1)} s in all\n`);
}
