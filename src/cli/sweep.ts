// `vlmscope sweep`: the ScalingVis image-attention temperature swept over alphas (alpha 1 always run, as the
// baseline): accuracy per alpha overall, per question type and per function, printed as a table and written to
// --out as sweep.json, sweep.csv, sweep.md and sweep.svg (accuracy against alpha). Every input (alphas, layers and
// heads against config.json, the data file, its images, the output folder) is checked before the model is loaded;
// nothing is written unless the whole sweep succeeds.

import { mkdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { intArg } from './args.js';
import { acquireGpu } from '../gpu/device.js';
import { GpuContext } from '../gpu/context.js';
import { nodeFolder } from '../io/checkpoint.js';
import { Tokenizer } from '../io/tokenizer.js';
import type { ModelDims, QueryScope } from '../spec/spec.js';
import type { EvalItem } from '../eval/dataset.js';
import { DEFAULT_EVAL_MAX_NEW_TOKENS } from '../eval/evaluate.js';
import { ADAPTVIS_SUBSETS, isCorrectAdaptVis, readAdaptVis, splitItems, type AdaptVisItem, type AdaptVisSubset } from '../eval/adaptvis-data.js';
import { DEFAULT_SWEEP_ALPHAS, formatSweepTable, sweepCsv, sweepImageTemperature, sweepJson, sweepMarkdown, type SweepProgress, type SweepResult } from '../eval/sweep.js';
import { sweepSvg } from '../eval/sweep-plot.js';
import { writeAtomic, checkOutDir } from './files.js';
import { configDims, dtypeOption, loadModel, modelOption, checkFolder, eosIds } from './load.js';
import { UsageError } from './errors.js';
import { checkImages, readData } from './data.js';
import { progressLine } from './progress.js';
import { checkCandidates, scoringOption } from './scoring.js';
import type { Scoring } from '../eval/evaluate.js';

interface SweepCliOptions {
  model: string;
  data: string;
  format: 'auto' | 'adaptvis';
  subset?: string;
  annotations?: string;
  alpha: number[];
  layers?: number[];
  heads?: number[];
  queries: QueryScope;
  split: 'all' | 'tune' | 'test';
  scoring: Scoring;
  splitSeed: number;
  limit?: number;
  maxNewTokens?: number;
  subQuestions?: boolean;
  out: string;
  json?: boolean;
  dtype?: string;
  verbose?: boolean;
}

/** --alpha: numbers >= 0 separated by commas. */
export function alphaListArg(v: string): number[] {
  const parts = v.split(',').map((s) => s.trim());
  const out = parts.map((s) => Number(s));
  if (parts.some((s, i) => s === '' || !Number.isFinite(out[i]) || out[i] < 0)) throw new InvalidArgumentError('expected numbers >= 0 separated by commas, e.g. 0.5,0.8,1.2,1.5,2.0');
  return out;
}

/** --layers / --heads: non-negative integers separated by commas, ranges a-b allowed. */
export function indexListArg(v: string): number[] {
  const out: number[] = [];
  for (const part of v.split(',').map((s) => s.trim())) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m || (m[2] !== undefined && Number(m[2]) < Number(m[1]))) throw new InvalidArgumentError('expected indices separated by commas, ranges allowed, e.g. 0,2 or 0-15');
    for (let i = Number(m[1]); i <= Number(m[2] ?? m[1]); i++) out.push(i);
  }
  return out;
}

export function sweepCommand(): Command {
  return new Command('sweep')
    .description('ScalingVis: answer a question set at each image-attention temperature alpha (alpha 1 as the baseline) and tabulate and plot accuracy per question type and per function')
    .addOption(modelOption())
    .requiredOption('--data <file>', "question file as for eval (vlmscope JSONL, VSR JSONL, What'sUp JSON); with --format adaptvis the authors' checkout folder (prompts/, data/) or their prompt JSONL (VSR: test.jsonl)")
    .addOption(new Option('--format <format>', 'auto: the formats eval reads; adaptvis: the AdaptVis authors\' files, scored with their substring rule').choices(['auto', 'adaptvis']).default('auto'))
    .addOption(new Option('--subset <name>', 'AdaptVis subset (with --format adaptvis)').choices([...ADAPTVIS_SUBSETS]))
    .option('--annotations <file>', 'with --format adaptvis and a prompt JSONL as --data: its annotation file (default ../data/<the subset\'s file> next to it)')
    .addOption(new Option('--alpha <list>', 'alphas to try, separated by commas; 1 is always added as the baseline').argParser(alphaListArg).default([...DEFAULT_SWEEP_ALPHAS], DEFAULT_SWEEP_ALPHAS.join(',')))
    .option('--layers <list>', 'text layers whose scores are scaled, e.g. 0,2 or 8-15 (default all)', indexListArg)
    .option('--heads <list>', 'heads scaled in those layers (default all)', indexListArg)
    .addOption(new Option('--queries <rows>', 'query rows scaled: last = the last prompt row in the prefill (the authors\' code), all = every row of every forward, generated = the decode steps').choices(['last', 'all', 'generated']).default('last'))
    .addOption(new Option('--split <part>', 'the authors\' split (random.seed + random.sample): tune = the 20% alpha is chosen on, test = the other 80%').choices(['all', 'tune', 'test']).default('all'))
    .option('--split-seed <n>', 'seed of --split (the authors\': 1)', intArg(0, 'a non-negative integer'), 1)
    .addOption(scoringOption())
    .option('--limit <n>', 'sweep only the first n questions (after --split)', intArg(1, 'a positive integer'))
    .option('--max-new-tokens <n>', `most tokens generated per answer (default ${DEFAULT_EVAL_MAX_NEW_TOKENS}; 100 with --format adaptvis, as the authors)`, intArg(1, 'a positive integer'))
    .option('--no-sub-questions', 'leave out the sub-questions of decomposed (CogVSR-style) questions')
    .option('--out <dir>', 'output folder for sweep.json, sweep.csv, sweep.md and sweep.svg (created if missing)', 'sweep')
    .option('--json', 'print the summary (alphas, accuracies per group, best alphas) as one JSON object instead of the table')
    .addOption(dtypeOption())
    .option('--verbose', 'print timings to stderr, and stack traces with errors')
    .addHelpText(
      'after',
      `
ScalingVis (Chen et al., ICML 2025): the pre-softmax attention scores of the image-token key columns are multiplied
by alpha (>1 sharpens the attention over the image, <1 flattens it), by default on the last prompt row only, in
every layer and head, as the authors' code does (the image_temperature intervention of docs/interventions.md).
Every question is answered and scored as in eval at each alpha, on one loaded model; alpha 1 runs with no
intervention and is the baseline of the deltas. Best alpha per row: the highest accuracy, ties to the baseline.

Outputs in --out (written only when the whole sweep succeeded):
  sweep.json  settings, best alpha per group, per alpha the spec, accuracies and every question's prediction
  sweep.csv   group,name,alpha,baseline,total,correct,accuracy,delta,best (one line per group and alpha)
  sweep.md    the table in markdown
  sweep.svg   accuracy (%) against alpha, a line overall and per question type
A progress bar is drawn on stderr when it is a terminal. Exit codes: 0 ok, 1 runtime error, 2 usage error.

Examples:
  vlmscope sweep --data heldout/questions.jsonl --alpha 0.5,0.8,1.2,1.5,2.0 --out sweep/
  vlmscope sweep --model ./llava-1.5-7b-hf --data whatsup.jsonl --layers 8-15 --queries all --out sweep-mid/
  vlmscope sweep --model ./llava-1.5-7b-hf --format adaptvis --subset Controlled_Images_A --data AdaptVis/ --split tune`,
    )
    .action(async (_opts: SweepCliOptions, cmd: Command) => {
      await runSweep(cmd.optsWithGlobals<SweepCliOptions>());
    });
}

/** --layers / --heads against the model's text tower (from config.json, before the weights are loaded). */
function checkIndices(opts: SweepCliOptions, dims: ModelDims): void {
  const { layers, heads } = dims.text;
  for (const [flag, list, n, what] of [
    ['--layers', opts.layers, layers, 'text layers'],
    ['--heads', opts.heads, heads, 'heads per text layer'],
  ] as const) {
    if (!list) continue;
    const bad = list.find((i) => i >= n);
    if (bad !== undefined) throw new UsageError(`${flag} ${bad} is out of range: the model has ${n} ${what} (0..${n - 1})`);
    if (new Set(list).size !== list.length) throw new UsageError(`${flag} ${list.join(',')} names one twice`);
  }
}

async function readAdaptVisData(opts: SweepCliOptions): Promise<AdaptVisItem[]> {
  if (!opts.subset) throw new UsageError(`--format adaptvis needs --subset (one of ${ADAPTVIS_SUBSETS.join(', ')})`);
  const subset = opts.subset as AdaptVisSubset;
  let isDir: boolean;
  try {
    isDir = (await stat(opts.data)).isDirectory();
  } catch {
    throw new UsageError(`cannot read data ${opts.data}: no such file or folder`);
  }
  try {
    if (isDir) {
      if (opts.annotations) throw new UsageError('--annotations goes with a prompt JSONL as --data, not a folder');
      return await readAdaptVis(subset, { root: opts.data });
    }
    if (subset === 'VSR') return await readAdaptVis(subset, { annotations: opts.data });
    return await readAdaptVis(subset, { prompts: opts.data, root: join(dirname(opts.data), '..'), annotations: opts.annotations });
  } catch (e) {
    throw e instanceof UsageError ? e : new UsageError((e as Error).message);
  }
}

async function runSweep(opts: SweepCliOptions): Promise<void> {
  const t0 = performance.now();
  const adaptvis = opts.format === 'adaptvis';
  if (!adaptvis && (opts.subset || opts.annotations)) throw new UsageError(`--${opts.subset ? 'subset' : 'annotations'} goes with --format adaptvis`);
  if (opts.layers?.length === 0 || opts.heads?.length === 0) throw new UsageError('--layers and --heads take at least one index');
  await checkOutDir(opts.out);
  const all: EvalItem[] = adaptvis ? await readAdaptVisData(opts) : await readData(opts.data, opts.subQuestions !== false);
  const split = opts.split === 'all' ? all : splitItems(all, { seed: opts.splitSeed })[opts.split];
  if (split.length === 0) throw new UsageError(`--split ${opts.split} of ${opts.data} holds no questions (${all.length} in all)`);
  const items = opts.limit !== undefined ? split.slice(0, opts.limit) : split;
  if (opts.scoring === 'likelihood') checkCandidates(items);
  await checkImages(items, 'sweep');
  await checkFolder(opts.model);
  checkIndices(opts, await configDims(opts.model));
  const folder = nodeFolder(opts.model);
  const tokenizer = await Tokenizer.fromFolder(folder);
  const eosTokenIds = await eosIds(opts.model, tokenizer);
  const maxNewTokens = opts.maxNewTokens ?? (adaptvis ? 100 : DEFAULT_EVAL_MAX_NEW_TOKENS);

  const gpu = await acquireGpu();
  let result: SweepResult;
  let seconds: number;
  try {
    const ctx = new GpuContext(gpu);
    const model = await loadModel(ctx, folder, opts);
    const bar = sweepProgressBar(process.stderr);
    const t1 = performance.now();
    try {
      result = await sweepImageTemperature(model, tokenizer, items, {
        alphas: opts.alpha,
        layers: opts.layers ?? null,
        heads: opts.heads ?? null,
        queries: opts.queries,
        maxNewTokens,
        eosTokenIds,
        score: adaptvis ? (prediction, item) => isCorrectAdaptVis(prediction, item as AdaptVisItem) : undefined,
        scoring: opts.scoring,
        onProgress: bar.update,
      });
    } finally {
      bar.done();
    }
    seconds = (performance.now() - t1) / 1000;
  } finally {
    gpu.destroy();
  }

  const meta = {
    model: opts.model,
    data: opts.data,
    format: opts.format,
    ...(adaptvis ? { subset: opts.subset } : {}),
    scoring: opts.scoring === 'likelihood' ? 'option likelihood' : adaptvis ? 'generate + adaptvis substring rule' : 'generate + answer match',
    split: opts.split === 'all' ? null : { part: opts.split, seed: opts.splitSeed, fraction: 0.2 },
    limit: opts.limit ?? null,
    max_new_tokens: maxNewTokens,
  };
  const json = sweepJson(result, meta);
  const files: [string, string][] = [
    ['sweep.json', `${JSON.stringify(json, null, 1)}\n`],
    ['sweep.csv', sweepCsv(result)],
    ['sweep.md', sweepMarkdown(result)],
    ['sweep.svg', sweepSvg(result)],
  ];
  await mkdir(opts.out, { recursive: true }).catch((e: Error) => {
    throw new Error(`--out ${opts.out}: cannot create the folder: ${e.message}`);
  });
  for (const [name, text] of files) await writeAtomic(join(opts.out, name), text);
  if (opts.json) {
    const { runs, questions: _q, ...rest } = json;
    const summary = { ...rest, runs: runs.map(({ examples: _e, spec: _s, ...r }) => r) };
    process.stdout.write(`${JSON.stringify(summary)}\n`);
  } else {
    process.stdout.write(formatSweepTable(result));
    process.stdout.write(`wrote ${files.map(([n]) => join(opts.out, n)).join(', ')}\n`);
  }
  if (opts.verbose) {
    const n = result.alphas.length * items.length;
    process.stderr.write(`${result.alphas.length} runs x ${items.length} questions in ${seconds.toFixed(1)} s (${(n / seconds).toFixed(2)} questions/s); ${((performance.now() - t0) / 1000).toFixed(1)} s in all\n`);
  }
}

/** Sweep progress on a terminal: the alpha being run, questions done over all runs, running accuracy, rate, ETA. */
export function sweepProgressBar(stream: NodeJS.WriteStream): { update: (p: SweepProgress) => void; done: () => void } {
  const line = progressLine(stream);
  return {
    update(p) {
      const done = (p.run - 1) * p.total + p.done;
      const acc = p.done > 0 ? ((p.correct / p.done) * 100).toFixed(1) : '0.0';
      line?.draw(done, p.runs * p.total, (bar, rate, eta) => `sweep alpha ${p.alpha} (${p.run}/${p.runs}) [${bar}] ${p.done}/${p.total}  acc ${acc}%  ${rate.toFixed(1)} q/s  ETA ${eta.toFixed(0)} s`);
    },
    done: () => line?.done(),
  };
}
