// `vlmscope adaptvis-table`: the AdaptVis paper's results table from the authors' files in one command: per subset,
// the 20% / 80% split, ScalingVis alpha and AdaptVis settings chosen on the 20%, plain / ScalingVis / AdaptVis
// accuracy on the 80% (src/eval/adaptvis-table.ts). Every subset's files and images are read and checked before
// the model is loaded; nothing is written unless every subset ran.

import { mkdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { intArg } from './args.js';
import { acquireGpu } from '../gpu/device.js';
import { GpuContext } from '../gpu/context.js';
import { nodeFolder } from '../io/checkpoint.js';
import { Tokenizer } from '../io/tokenizer.js';
import type { Scoring } from '../eval/evaluate.js';
import { ADAPTVIS_SUBSETS, adaptVisFiles, readAdaptVis, resultsTable, type AdaptVisItem, type AdaptVisSubset } from '../eval/adaptvis-data.js';
import {
  ADAPTVIS_MAX_NEW_TOKENS,
  DEFAULT_ALPHA_HIGH,
  DEFAULT_ALPHA_LOW,
  DEFAULT_THRESHOLDS,
  runAdaptVisSubset,
  type AdaptVisSubsetRun,
  type AdaptVisTableProgress,
} from '../eval/adaptvis-table.js';
import { DEFAULT_SWEEP_ALPHAS } from '../eval/sweep.js';
import { alphaListArg } from './sweep.js';
import { writeAtomic } from './files.js';
import { dtypeOption, loadModel, modelOption, checkFolder, eosIds } from './load.js';
import { UsageError } from './errors.js';
import { checkImages } from './data.js';
import { progressLine } from './progress.js';
import { scoringOption } from './scoring.js';
import { exampleJson } from './eval.js';

interface TableCliOptions {
  model: string;
  data: string;
  subsets?: AdaptVisSubset[];
  alpha: number[];
  alphaLow: number[];
  alphaHigh: number[];
  thresholds: number[];
  scoring: Scoring;
  splitSeed: number;
  limit?: number;
  maxNewTokens: number;
  modelName?: string;
  out: string;
  json?: boolean;
  dtype?: string;
  verbose?: boolean;
}

/** --subsets: names of AdaptVis subsets separated by commas. */
export function subsetListArg(v: string): AdaptVisSubset[] {
  const names = v.split(',').map((s) => s.trim());
  const bad = names.find((n) => !(ADAPTVIS_SUBSETS as readonly string[]).includes(n));
  if (bad !== undefined) throw new InvalidArgumentError(`unknown subset ${JSON.stringify(bad)}: expected names among ${ADAPTVIS_SUBSETS.join(', ')}, separated by commas`);
  if (new Set(names).size !== names.length) throw new InvalidArgumentError('a subset is named twice');
  return names as AdaptVisSubset[];
}

/** --thresholds: numbers in [0, 1] separated by commas. */
function thresholdListArg(v: string): number[] {
  const out = alphaListArg(v);
  if (out.some((x) => x > 1)) throw new InvalidArgumentError('expected numbers in [0, 1] separated by commas, e.g. 0.3,0.4,0.5');
  return out;
}

export function adaptVisTableCommand(): Command {
  return new Command('adaptvis-table')
    .description("the AdaptVis paper's table from the authors' files: per subset, ScalingVis alpha and AdaptVis settings chosen on their 20% split, plain / ScalingVis / AdaptVis accuracy on the other 80%")
    .addOption(modelOption())
    .requiredOption('--data <dir>', "the authors' checkout (or a folder laid out as it): prompts/<subset>_with_answer_*_options.jsonl, data/<annotations>, data/<images>")
    .option('--subsets <list>', `subsets, separated by commas (default: every one whose files are under --data): ${ADAPTVIS_SUBSETS.join(', ')}`, subsetListArg)
    .addOption(new Option('--alpha <list>', 'ScalingVis alphas tried on the 20% (1 always added)').argParser(alphaListArg).default([...DEFAULT_SWEEP_ALPHAS], DEFAULT_SWEEP_ALPHAS.join(',')))
    .addOption(new Option('--alpha-low <list>', "AdaptVis alpha_low values tried (their weight1)").argParser(alphaListArg).default([...DEFAULT_ALPHA_LOW], DEFAULT_ALPHA_LOW.join(',')))
    .addOption(new Option('--alpha-high <list>', 'AdaptVis alpha_high values tried (their weight2)').argParser(alphaListArg).default([...DEFAULT_ALPHA_HIGH], DEFAULT_ALPHA_HIGH.join(',')))
    .addOption(new Option('--thresholds <list>', 'AdaptVis thresholds tried').argParser(thresholdListArg).default([...DEFAULT_THRESHOLDS], DEFAULT_THRESHOLDS.join(',')))
    .addOption(scoringOption())
    .option('--split-seed <n>', "seed of the 20% / 80% split (the authors': 1)", intArg(0, 'a non-negative integer'), 1)
    .option('--limit <n>', 'only the first n questions of each split part (a quick look: not the paper protocol)', intArg(1, 'a positive integer'))
    .option('--max-new-tokens <n>', 'most tokens generated per answer (the authors\': 100)', intArg(1, 'a positive integer'), ADAPTVIS_MAX_NEW_TOKENS)
    .option('--model-name <name>', 'name of the baseline row (default: the model folder name)')
    .option('--out <dir>', 'output folder for table.md, results.json and <subset>.<split>.jsonl answers (created if missing)', 'adaptvis-table')
    .option('--json', 'print results.json\'s summary instead of the table')
    .addOption(dtypeOption())
    .option('--verbose', 'print timings to stderr, and stack traces with errors')
    .addHelpText(
      'after',
      `
Per subset (Chen et al., ICML 2025; github shiqichen17/AdaptVis): the items in file order are split as the authors'
code splits them (random.seed(1); random.sample 20%, src/eval/adaptvis-data.ts). On the 20%, every alpha of the
ScalingVis, alpha_low and alpha_high grids is run once (image_temperature on the last prompt row, all layers and
heads, as their code); the ScalingVis alpha with the best accuracy is chosen (ties to alpha 1, then the smaller),
and the AdaptVis (threshold, alpha_low, alpha_high) with the best accuracy is scored from those same runs (AdaptVis
answers a question as ScalingVis at the alpha its gate picks, from the plain first token's rounded top-1
probability). On the 80%: the plain model, ScalingVis at its alpha, and AdaptVis itself (with its cost ratio).
Answers are scored with the authors' rule (case-insensitive substring, "front" is not "on"; VSR: "Yes"/"No"), or
by option likelihood with --scoring likelihood. The table is markdown, rows model / +ScalingVis / +AdaptVis,
columns Cont_A .. VG_2, VSR EM, VSR F1, then the chosen settings.

Outputs in --out (written only when every subset ran):
  table.md              the tables, as printed
  results.json          settings, per subset the split sizes, tuning accuracies per alpha, the AdaptVis grid,
                        the chosen settings and the test accuracies (and VSR F1, AdaptVis cost ratio)
  <subset>.test.jsonl   every test answer of the three methods (method, id, prediction, correct, ...)
Exit codes: 0 ok, 1 runtime error, 2 usage error.

Examples:
  vlmscope adaptvis-table --model ./llava-1.5-7b-hf --data AdaptVis/ --out paper-table/
  vlmscope adaptvis-table --model ./llava-1.5-7b-hf --data AdaptVis/ --subsets Controlled_Images_A,VSR --scoring likelihood`,
    )
    .action(async (_opts: TableCliOptions, cmd: Command) => {
      await runTable(cmd.optsWithGlobals<TableCliOptions>());
    });
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

/** The subsets to run: the named ones, or every one whose annotation file is under the checkout. */
async function chooseSubsets(opts: TableCliOptions): Promise<AdaptVisSubset[]> {
  let isDir = false;
  try {
    isDir = (await stat(opts.data)).isDirectory();
  } catch {
    throw new UsageError(`cannot read --data ${opts.data}: no such folder`);
  }
  if (!isDir) throw new UsageError(`--data ${opts.data} is not a folder: give the authors' checkout (prompts/, data/)`);
  if (opts.subsets) return opts.subsets;
  const found: AdaptVisSubset[] = [];
  for (const s of ADAPTVIS_SUBSETS) if (await exists(join(opts.data, adaptVisFiles(s).annotations))) found.push(s);
  if (found.length === 0) {
    throw new UsageError(`--data ${opts.data} holds none of the subsets' annotation files (${ADAPTVIS_SUBSETS.map((s) => adaptVisFiles(s).annotations).join(', ')})`);
  }
  return found;
}

async function runTable(opts: TableCliOptions): Promise<void> {
  const t0 = performance.now();
  const subsets = await chooseSubsets(opts);
  const data: { subset: AdaptVisSubset; items: AdaptVisItem[] }[] = [];
  for (const subset of subsets) {
    let items: AdaptVisItem[];
    try {
      items = await readAdaptVis(subset, { root: opts.data });
    } catch (e) {
      throw new UsageError(`${subset}: ${(e as Error).message}`);
    }
    await checkImages(items, 'adaptvis-table');
    data.push({ subset, items });
  }
  await checkFolder(opts.model);
  const folder = nodeFolder(opts.model);
  const tokenizer = await Tokenizer.fromFolder(folder);
  const eosTokenIds = await eosIds(opts.model, tokenizer);

  const runs: AdaptVisSubsetRun[] = [];
  const gpu = await acquireGpu();
  try {
    const ctx = new GpuContext(gpu);
    const model = await loadModel(ctx, folder, opts);
    const line = progressLine(process.stderr);
    const onProgress = (p: AdaptVisTableProgress) =>
      line?.draw(p.done, p.total, (bar, rate, eta) => `${p.subset} ${p.split} ${p.run} [${bar}] ${p.done}/${p.total}  ${rate.toFixed(1)} q/s  ETA ${eta.toFixed(0)} s`);
    try {
      for (const { subset, items } of data) {
        const t1 = performance.now();
        runs.push(
          await runAdaptVisSubset(model, tokenizer, subset, items, {
            alphas: opts.alpha,
            alphaLow: opts.alphaLow,
            alphaHigh: opts.alphaHigh,
            thresholds: opts.thresholds,
            scoring: opts.scoring,
            seed: opts.splitSeed,
            limit: opts.limit,
            maxNewTokens: opts.maxNewTokens,
            eosTokenIds,
            onProgress,
          }),
        );
        if (opts.verbose) process.stderr.write(`${subset}: ${items.length} items in ${((performance.now() - t1) / 1000).toFixed(1)} s\n`);
      }
    } finally {
      line?.done();
    }
  } finally {
    gpu.destroy();
  }

  const modelName = opts.modelName ?? resolve(opts.model).split(/[\\/]/).pop()!;
  const table = resultsTable(
    runs.map((r) => r.result),
    { model: modelName },
  );
  const json = resultsJson(runs, opts, modelName);
  await mkdir(opts.out, { recursive: true }).catch((e: Error) => {
    throw new Error(`--out ${opts.out}: cannot create the folder: ${e.message}`);
  });
  await writeAtomic(join(opts.out, 'table.md'), table);
  await writeAtomic(join(opts.out, 'results.json'), `${JSON.stringify(json, null, 1)}\n`);
  for (const r of runs) {
    const methods = [
      ['plain', r.test.baseline],
      ['scalingvis', r.test.scalingVis],
      ['adaptvis', r.test.adaptVis],
    ] as const;
    const lines = methods.flatMap(([method, report]) => report.examples.map((e) => `${JSON.stringify({ method, ...exampleJson(e) })}\n`)).join('');
    await writeAtomic(join(opts.out, `${r.subset}.test.jsonl`), lines);
  }
  process.stdout.write(opts.json ? `${JSON.stringify(json.subsets.map(({ tune: _t, ...s }) => s))}\n` : `${table}wrote ${join(opts.out, 'table.md')}, ${join(opts.out, 'results.json')} and the answers\n`);
  if (opts.verbose) process.stderr.write(`${((performance.now() - t0) / 1000).toFixed(1)} s in all\n`);
}

function resultsJson(runs: AdaptVisSubsetRun[], opts: TableCliOptions, modelName: string) {
  return {
    method: 'AdaptVis table',
    model: opts.model,
    model_name: modelName,
    data: opts.data,
    scoring: opts.scoring === 'likelihood' ? 'option likelihood' : 'generate + adaptvis substring rule',
    split: { seed: opts.splitSeed, fraction: 0.2, limit: opts.limit ?? null },
    max_new_tokens: opts.maxNewTokens,
    grids: { alpha: opts.alpha, alpha_low: opts.alphaLow, alpha_high: opts.alphaHigh, thresholds: opts.thresholds },
    subsets: runs.map((r) => ({
      subset: r.subset,
      tune_count: r.tuneIndices.length,
      test_count: r.testIndices.length,
      scalingvis_alpha: r.result.scalingVis!.alpha,
      adaptvis: { threshold: r.result.adaptVis!.threshold, alpha_low: r.result.adaptVis!.alphaLow, alpha_high: r.result.adaptVis!.alphaHigh },
      test: {
        baseline: r.result.baseline,
        scalingvis: r.result.scalingVis!.accuracy,
        adaptvis: r.result.adaptVis!.accuracy,
        adaptvis_cost_ratio: r.test.adaptVis.adaptvis?.costRatio ?? null,
        ...(r.result.f1 ? { f1: r.result.f1 } : {}),
      },
      tune: {
        indices: r.tuneIndices,
        alphas: r.tune.alphas,
        accuracy: r.tune.accuracy,
        adaptvis_grid: r.tune.adaptVisGrid.map((g) => ({ threshold: g.threshold, alpha_low: g.alphaLow, alpha_high: g.alphaHigh, accuracy: g.accuracy })),
      },
    })),
  };
}
