// `vlmscope ablate`: head interventions as experiments (CogVision / CogVSR). For each target function the top-k
// heads of `vlmscope probe`'s ranking are masked (head_scale epsilon), mean-ablated or steered, and the accuracy per
// function and overall is compared with the same intervention on k random heads (one draw per seed, from outside the
// function's functional heads) and with no intervention. Prints a table, writes ablation.json and ablation.csv.

import { mkdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { intArg, numberArg } from './args.js';
import { acquireGpu } from '../gpu/device.js';
import { GpuContext } from '../gpu/context.js';
import { nodeFolder } from '../io/checkpoint.js';
import { Tokenizer } from '../io/tokenizer.js';
import type { ModelDims, QueryScope } from '../spec/spec.js';
import type { EvalItem } from '../eval/dataset.js';
import { DEFAULT_EVAL_MAX_NEW_TOKENS, type Accuracy } from '../eval/evaluate.js';
import {
  type AblationComparison,
  type AblationPlan,
  type AblationProbes,
  type AblationProgress,
  type AblationResult,
  type AccuracyBreakdown,
  DEFAULT_ABLATION_SEEDS,
  executeAblation,
  planAblation,
  probesFromJson,
} from '../interp/ablation.js';
import { type AblationMode, ABLATION_MODES, DEFAULT_STEER_ALPHA } from '../interp/ablation-spec.js';
import { readProbeStore } from './probe.js';
import { readJsonFile, writeAtomic } from './files.js';
import { configDims, dtypeOption, loadModel, modelOption, checkFolder, eosIds } from './load.js';
import { UsageError } from './errors.js';
import { checkImages, readData } from './data.js';
import { progressLine } from './progress.js';

interface AblateCliOptions {
  model: string;
  data: string;
  probes: string;
  function?: string[];
  k?: number;
  mode: AblationMode;
  epsilon: number;
  alpha: number;
  queries: QueryScope;
  activations?: string;
  seeds: number;
  limit?: number;
  maxNewTokens: number;
  subQuestions?: boolean;
  out?: string;
  dtype?: string;
  verbose?: boolean;
}

/** --function takes names separated by spaces (several values) or commas. */
function functionArg(v: string, prev: string[] | undefined): string[] {
  const parts = v.split(',').map((s) => s.trim()).filter(Boolean);
  if (parts.length === 0) throw new InvalidArgumentError('expected a function name');
  return [...(prev ?? []), ...parts];
}

export function ablateCommand(): Command {
  return new Command('ablate')
    .description('mask, mean-ablate or steer each function\'s top-k heads and compare accuracy with k random heads over seeds (Welch t-test)')
    .addOption(modelOption())
    .requiredOption('--data <file>', 'question file (vlmscope JSONL, VSR JSONL or What\'sUp JSON), as for eval')
    .requiredOption('--probes <file>', 'probes.json written by `vlmscope probe` (or its folder): the ranking and top heads per function')
    .option('--function <name...>', 'target functions (default: every probed function that has questions)', functionArg)
    .option('--k <k>', 'heads per intervention (default: the size of each function\'s top set in probes.json)', intArg(1, 'a positive integer'))
    .addOption(new Option('--mode <mode>', 'scale: z_h *= epsilon; mean_ablate: z_h = mean z_h; steer: z_h += alpha sigma direction').choices([...ABLATION_MODES]).default('scale'))
    .option('--epsilon <x>', 'scale of the heads in --mode scale (0 ablates; 0.001 is CogVision\'s masking)', numberArg('a number >= 0', (n) => n >= 0), 0)
    .option('--alpha <a>', 'steering strength in --mode steer (CogVision: 0.1)', numberArg('a finite number', () => true), DEFAULT_STEER_ALPHA)
    .addOption(new Option('--queries <rows>', 'rows steered in --mode steer').choices(['all', 'last', 'generated']).default('all'))
    .option('--activations <dir>', 'activation store of `vlmscope collect` (needed by --mode mean_ablate and steer: means, directions, sigmas)')
    .option('--seeds <n>', 'random-k draws (seeds 0..n-1)', intArg(1, 'a positive integer'), DEFAULT_ABLATION_SEEDS)
    .option('--limit <n>', 'evaluate only the first n questions', intArg(1, 'a positive integer'))
    .option('--max-new-tokens <n>', 'most tokens generated per answer', intArg(1, 'a positive integer'), DEFAULT_EVAL_MAX_NEW_TOKENS)
    .option('--no-sub-questions', 'leave out the sub-questions of decomposed questions')
    .option('--out <dir>', 'output folder for ablation.json and ablation.csv (created if missing; default: the folder of probes.json)')
    .addOption(dtypeOption())
    .option('--verbose', 'print timings to stderr, and stack traces with errors')
    .addHelpText(
      'after',
      `
Method (CogVision / CogVSR): every question is answered greedily and scored as in eval, once with no intervention
(the baseline), then for each target function f once with f's top-k heads intervened on and once per seed with
k random heads drawn from outside f's functional heads (the top-k and the top set of probes.json):
  scale        z_h *= epsilon                    (0: ablation; 0.001: CogVision masking)
  mean_ablate  z_h  = mean of z_h over the store (all its examples)
  steer        z_h += alpha * sigma_h * d_h      d_h = unit(mean z_h | f correct - mean z_h | f incorrect) over
                                                 f's examples in the store; sigma_h = std of their projections on d_h
For a store collected with --concat-layer-mean only the head's own z (the first head_dim values) is used.
The top-k accuracy is compared with the random-k accuracies (mean, sample std) by a one-sample t-test against the
random-k mean (Welch's test with the single top-k value as a constant; df = seeds - 1), two-sided p from Student's t.

Outputs in --out:
  ablation.json   settings, baseline / top-k / random-k accuracies per function and overall, heads of every run,
                  and per target the comparison (baseline, top, random values, mean, std, t, df, p) per function
  ablation.csv    target,measured,k,mode,epsilon,alpha,baseline,top,random_mean,random_std,random_n,t,df,p,test,random_values
A progress bar is drawn on stderr when it is a terminal. Exit codes: 0 ok, 1 runtime error, 2 usage error.

Examples:
  vlmscope ablate --data cogvsr.jsonl --probes probes/probes.json --mode scale --epsilon 0.001 --seeds 5
  vlmscope ablate --model ./llava-1.5-7b-hf --data cogvsr.jsonl --probes probes/ --function spatial_perception --k 20
  vlmscope ablate --data cogvsr.jsonl --probes probes/ --mode steer --alpha 0.1 --activations acts/ --out steer/`,
    )
    .action(async (_opts: AblateCliOptions, cmd: Command) => {
      await runAblate(cmd.optsWithGlobals<AblateCliOptions>());
    });
}

async function runAblate(opts: AblateCliOptions): Promise<void> {
  const t0 = performance.now();
  const needsStore = opts.mode === 'mean_ablate' || opts.mode === 'steer';
  if (needsStore && !opts.activations) throw new UsageError(`--mode ${opts.mode} needs --activations (the store of \`vlmscope collect\` its vectors come from)`);
  const probesPath = await resolveProbes(opts.probes);
  let probes: AblationProbes;
  try {
    probes = probesFromJson(await readJsonFile(probesPath, 'probes file'), probesPath);
  } catch (e) {
    throw e instanceof UsageError ? e : new UsageError((e as Error).message);
  }
  const all = await readData(opts.data, opts.subQuestions !== false);
  const items = opts.limit !== undefined ? all.slice(0, opts.limit) : all;
  await checkImages(items, 'ablate');
  const outDir = opts.out ?? dirname(probesPath);
  await checkOutDir(outDir);
  await checkFolder(opts.model);
  const folder = nodeFolder(opts.model);
  const dims = await configDims(opts.model);
  const tower = probes.tower ?? 'text';
  const store = needsStore ? await readProbeStore(opts.activations!) : undefined;
  if (store && typeof store.tower === 'string' && store.tower !== tower) {
    throw new UsageError(`--activations ${opts.activations} holds the ${store.tower} tower's heads, but the probes rank the ${tower} tower's`);
  }
  let plan: AblationPlan;
  try {
    plan = planAblation(dims, items, {
      probes,
      functions: opts.function,
      k: opts.k,
      mode: opts.mode,
      epsilon: opts.epsilon,
      alpha: opts.alpha,
      queries: opts.queries,
      seeds: opts.seeds,
      store,
      tower,
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  await mkdir(outDir, { recursive: true }).catch((e: Error) => {
    throw new UsageError(`--out ${outDir}: cannot create the folder: ${e.message}`);
  });
  const tokenizer = await Tokenizer.fromFolder(folder);
  const eosTokenIds = await eosIds(opts.model, tokenizer);

  const gpu = await acquireGpu();
  let result: AblationResult;
  let seconds: number;
  try {
    const ctx = new GpuContext(gpu);
    const model = await loadModel(ctx, folder, opts);
    const bar = ablationProgressBar(process.stderr);
    const t1 = performance.now();
    try {
      result = await executeAblation(model, tokenizer, plan, { maxNewTokens: opts.maxNewTokens, eosTokenIds, onProgress: bar.update });
    } finally {
      bar.done();
    }
    seconds = (performance.now() - t1) / 1000;
  } finally {
    gpu.destroy();
  }
  const meta = { model: opts.model, data: opts.data, probes: probesPath, activations: needsStore ? opts.activations! : null };
  await writeAtomic(join(outDir, 'ablation.json'), `${JSON.stringify(ablationJson(result, meta), jsonNumbers, 1)}\n`);
  await writeAtomic(join(outDir, 'ablation.csv'), ablationCsv(result));
  process.stdout.write(formatAblation(result));
  if (opts.verbose) {
    const runs = 1 + result.targets.reduce((n, t) => n + 1 + t.random.length, 0);
    process.stderr.write(`${runs} runs x ${result.questions} questions in ${seconds.toFixed(1)} s; ${((performance.now() - t0) / 1000).toFixed(1)} s in all\n`);
  }
}

async function resolveProbes(path: string): Promise<string> {
  try {
    return (await stat(path)).isDirectory() ? join(path, 'probes.json') : path;
  } catch {
    throw new UsageError(`cannot read probes file ${path}: no such file; give --probes the probes.json \`vlmscope probe\` wrote (or its folder)`);
  }
}

/** --out must be a folder or not exist yet (it is created once every input has been checked). */
async function checkOutDir(out: string): Promise<void> {
  try {
    if (!(await stat(out)).isDirectory()) throw new UsageError(`--out ${out} is a file; give a folder (it is created when missing)`);
  } catch (e) {
    if (e instanceof UsageError) throw e;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Outputs

/** JSON.stringify replacer: NaN and +-Infinity (no JSON spelling) become null. */
export function jsonNumbers(_key: string, v: unknown): unknown {
  return typeof v === 'number' && !Number.isFinite(v) ? null : v;
}

const accJson = (a: Accuracy) => ({ total: a.total, correct: a.correct, accuracy: a.accuracy });
const breakdownJson = (b: AccuracyBreakdown) => ({
  overall: accJson(b.overall),
  by_function: Object.fromEntries(Object.entries(b.byFunction).map(([k, v]) => [k, accJson(v)])),
});
const comparisonJson = (c: AblationComparison) => ({
  baseline: c.baseline,
  top: c.top,
  random: c.random,
  random_mean: c.randomMean,
  random_std: c.randomStd,
  t: c.test.t,
  df: c.test.df,
  p: c.test.p,
  test: c.test.method,
});

/** ablation.json (write it with the jsonNumbers replacer). */
export function ablationJson(r: AblationResult, meta: Record<string, unknown> = {}) {
  return {
    ...meta,
    tower: r.tower,
    mode: r.mode,
    epsilon: r.epsilon,
    alpha: r.alpha,
    queries: r.queries,
    direction: r.direction,
    seeds: r.seeds,
    questions: r.questions,
    baseline: breakdownJson(r.baseline),
    targets: r.targets.map((t) => ({
      function: t.function,
      k: t.k,
      top_heads: t.top.heads,
      excluded: t.excluded,
      top: breakdownJson(t.top.accuracy),
      random: t.random.map((x) => ({ seed: x.seed, heads: x.heads, ...breakdownJson(x.accuracy) })),
      comparisons: {
        target: comparisonJson(t.target),
        overall: comparisonJson(t.overall),
        by_function: Object.fromEntries(Object.entries(t.byFunction).map(([k, v]) => [k, comparisonJson(v)])),
      },
    })),
  };
}

const csvField = (s: string) => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
const csvNum = (x: number) => (Number.isNaN(x) ? '' : Number.isFinite(x) ? String(x) : x > 0 ? 'inf' : '-inf');

/** One row per target function x measured group ("overall", then every function of the questions). */
export function ablationCsv(r: AblationResult): string {
  let out = 'target,measured,k,mode,epsilon,alpha,baseline,top,random_mean,random_std,random_n,t,df,p,test,random_values\n';
  for (const t of r.targets) {
    const rows: [string, AblationComparison][] = [['overall', t.overall], ...Object.entries(t.byFunction)];
    for (const [measured, c] of rows) {
      out +=
        [
          csvField(t.function),
          csvField(measured),
          t.k,
          r.mode,
          r.epsilon,
          r.alpha,
          csvNum(c.baseline),
          csvNum(c.top),
          csvNum(c.randomMean),
          csvNum(c.randomStd),
          c.random.length,
          csvNum(c.test.t),
          csvNum(c.test.df),
          csvNum(c.test.p),
          c.test.method,
          c.random.map(csvNum).join(';'),
        ].join(',') + '\n';
    }
  }
  return out;
}

const pct = (x: number) => (Number.isNaN(x) ? 'n/a' : `${(x * 100).toFixed(1)}%`);
const fmtT = (t: number) => (Number.isNaN(t) ? 'n/a' : Number.isFinite(t) ? t.toFixed(2) : t > 0 ? 'inf' : '-inf');
const fmtP = (p: number) => (Number.isNaN(p) ? 'n/a' : p === 0 ? '0' : p < 1e-3 ? p.toExponential(1) : p.toFixed(4));

/** The summary table: per target function, its own accuracy and the overall accuracy. */
export function formatAblation(r: AblationResult): string {
  const setting =
    r.mode === 'scale' ? `scale (epsilon ${r.epsilon})` : r.mode === 'steer' ? `steer (alpha ${r.alpha}, ${r.direction} directions, ${r.queries} rows)` : 'mean_ablate';
  let out = `ablation: mode ${setting}, ${r.seeds.length} random seed${r.seeds.length === 1 ? '' : 's'}, ${r.questions} questions, ${r.tower} tower\n`;
  const rows: string[][] = [['target', 'measured', 'k', 'baseline', 'top-k', 'random-k mean ± std', 't', 'p']];
  for (const t of r.targets) {
    const line = (first: boolean, measured: string, c: AblationComparison) => [
      first ? t.function : '',
      measured,
      first ? String(t.k) : '',
      pct(c.baseline),
      pct(c.top),
      `${pct(c.randomMean)} ± ${pct(c.randomStd)}`,
      fmtT(c.test.t),
      fmtP(c.test.p),
    ];
    rows.push(line(true, t.function, t.target), line(false, 'overall', t.overall));
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  const left = new Set([0, 1]);
  for (const row of rows) out += `${row.map((c, i) => (left.has(i) ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd()}\n`;
  return out;
}

/**
 * Progress on a terminal: the run (baseline, top-k or random-k of a function) and its questions, with the ETA of the
 * whole experiment, redrawn at most 10 times a second and erased when done. Nothing when the stream is not a TTY.
 */
export function ablationProgressBar(stream: NodeJS.WriteStream): { update: (p: AblationProgress) => void; done: () => void } {
  const line = progressLine(stream);
  return {
    update(p) {
      line?.draw(
        p.run * p.total + p.done,
        p.runs * p.total,
        (bar, rate, eta) => `ablate [${bar}] run ${p.run + 1}/${p.runs} ${p.label}  ${p.done}/${p.total}  ${rate.toFixed(1)} q/s  ETA ${eta.toFixed(0)} s`,
      );
    },
    done: () => line?.done(),
  };
}
