// The planted-head benchmark's probe methods (src/interp/heads-benchmark.ts), each a score table per head from
// activations collected at the last prompt row (collectActivations), by the library's own fits:
//
//   probe        CogVision's per-head logistic probes (fitProbes), split by main question as the paper does;
//                per function: held-out accuracy (mean over seeds), then its 95% t-interval's lower bound
//   selectivity  the same probes with controls (fitProbeControls): split by held-out wording when every example has
//                a wording_heldout flag and both sides hold some, else by main question; per function:
//                selectivity (accuracy minus the larger of the permutation baseline and the wording-only probe), its
//                lower bound, then accuracy and its lower bound (rankControlledHeads' criteria)
//   mlp          the CogVSR MLP probe (fitMlpProbes), split by main question; per function: mean |gradient x
//                activation| importance over seeds, then its lower bound, both divided by the function's largest
//                mean (relative importance: classes' logits are not on one scale, so a head's best function is
//                chosen on the relative value)
//
// A head's score for the method is its best value over the target functions (combineFunctions); every function's
// own grids are kept for the per-function detail.

import type { GpuContext } from '../gpu/context.js';
import type { CollectRow } from './collect.js';
import { fitProbes, type SplitBy } from './probes.js';
import { DEFAULT_PERMUTATIONS, type WordedProbeExample, fitProbeControls, rankControlledHeads } from './probe-controls.js';
import { sampleMean, tInterval } from './statistics.js';
import { MLP_PROBE_DEFAULTS, fitMlpProbes, rankMlpHeads, type MlpProbeExample } from './mlp-probe.js';
import { combineFunctions } from './heads-benchmark-scoring.js';

/** Pooled activations and their examples, as the probes take them. */
export interface ProbeData {
  /** [rows, layers, heads, dim] row-major. */
  features: Float32Array;
  layers: number;
  heads: number;
  dim: number;
  examples: (WordedProbeExample & MlpProbeExample)[];
}

/** Collected rows -> one feature block (row i = rows[i]) and their probe examples. */
export function probeDataFromRows(rows: readonly CollectRow[], shape: { layers: number; heads: number; dim: number }): ProbeData {
  const width = shape.layers * shape.heads * shape.dim;
  const features = new Float32Array(rows.length * width);
  const examples = rows.map((r, i) => {
    if (r.z.length !== width) throw new Error(`probe data: row ${r.id} holds ${r.z.length} values, expected ${shape.layers} x ${shape.heads} x ${shape.dim}`);
    features.set(r.z, i * width);
    const e: ProbeData['examples'][number] = { id: r.id, mainId: r.mainId, function: r.function, correct: r.correct, row: i, question: r.question };
    if (r.wording !== undefined) e.wording = r.wording;
    if (r.wordingHeldout !== undefined) e.wordingHeldout = r.wordingHeldout;
    return e;
  });
  return { features, ...shape, examples };
}

/** 'wording' when every example has a wording_heldout flag and correct examples sit on both sides, else 'question'. */
export function wordingSplitAvailable(examples: readonly { correct: boolean; wordingHeldout?: boolean }[]): boolean {
  if (examples.some((e) => typeof e.wordingHeldout !== 'boolean')) return false;
  const used = examples.filter((e) => e.correct);
  return used.some((e) => e.wordingHeldout) && used.some((e) => !e.wordingHeldout);
}

/** One function's criteria grids ([criteria][layers][heads]) and, where the method states one, its top-k separation. */
export interface FunctionScores {
  function: string;
  grids: number[][][];
  /** rankControlledHeads' / rankMlpHeads' note on whether its top-k set stands apart from the next head. */
  separation?: string;
}

/** A method's score table: criteria best first, each combined over the target functions. */
export interface ScoreTable {
  criteria: string[];
  grids: number[][][];
  functions: FunctionScores[];
  /** Target functions the method could not score, with why. */
  skipped: { function: string; reason: string }[];
  settings: Record<string, unknown>;
}

export interface ProbeMethodOptions {
  /** The target functions (each scored, the head's best one counts). */
  functions: readonly string[];
  /** Split / fit seeds (default 0..4). */
  seeds?: readonly number[];
  /** Probe optimiser iterations (fitProbes' default when absent). */
  iterations?: number;
  onProgress?: (p: { done: number; total: number; seconds: number }) => void;
}

export const DEFAULT_BENCHMARK_SEEDS = [0, 1, 2, 3, 4] as const;

const cells = <T>(L: number, H: number, f: (l: number, h: number) => T): T[][] => Array.from({ length: L }, (_, l) => Array.from({ length: H }, (_, h) => f(l, h)));

function noResult(functions: readonly string[], skipped: ScoreTable['skipped'], what: string): never {
  throw new Error(`${what}: none of the target functions (${functions.join(', ')}) could be scored: ${skipped.map((s) => `${s.function}: ${s.reason}`).join('; ')}`);
}

/** Method "probe": CogVision's logistic probes, split by main question; accuracy then its lower bound. */
export async function probeAccuracyScores(ctx: GpuContext | null, data: ProbeData, opts: ProbeMethodOptions): Promise<ScoreTable> {
  const seeds = [...(opts.seeds ?? DEFAULT_BENCHMARK_SEEDS)];
  const r = await fitProbes(ctx, { ...data, functions: opts.functions, seeds, splitBy: 'question', iterations: opts.iterations, onProgress: opts.onProgress });
  const functions = r.functions.map((fp): FunctionScores => ({
    function: fp.function,
    grids: [fp.mean, cells(r.layers, r.heads, (l, h) => tInterval(fp.accuracy.map((a) => a[l]![h]!)).low)],
  }));
  if (functions.length === 0) noResult(opts.functions, r.skipped, 'probe');
  return {
    criteria: ['held-out accuracy (mean over seeds)', 'accuracy 95% CI lower bound'],
    grids: combineFunctions(functions.map((f) => f.grids)),
    functions,
    skipped: r.skipped,
    settings: { split_by: 'question', seeds, test_fraction: r.testFraction, iterations: r.optimizer.iterations, backend: r.backend },
  };
}

/** Method "selectivity": the probes with controls, split by held-out wording when the data has it. */
export async function probeSelectivityScores(ctx: GpuContext | null, data: ProbeData, opts: ProbeMethodOptions & { permutations?: number; topK: number }): Promise<ScoreTable> {
  const seeds = [...(opts.seeds ?? DEFAULT_BENCHMARK_SEEDS)];
  const splitBy: SplitBy = wordingSplitAvailable(data.examples) ? 'wording' : 'question';
  const permutations = opts.permutations ?? DEFAULT_PERMUTATIONS;
  const r = await fitProbes(ctx, { ...data, functions: opts.functions, seeds, splitBy, iterations: opts.iterations, onProgress: opts.onProgress });
  if (r.functions.length === 0) noResult(opts.functions, r.skipped, 'selectivity');
  const controls = await fitProbeControls(ctx, r, { features: data.features, examples: data.examples, permutations, onProgress: opts.onProgress });
  const ranking = rankControlledHeads(r, controls, { topK: Math.min(opts.topK, r.layers * r.heads), rankBy: 'selectivity' });
  const functions = controls.functions.map((fc): FunctionScores => {
    const ci = (f: (l: number, h: number) => number) => cells(r.layers, r.heads, f);
    return {
      function: fc.function,
      grids: [ci((l, h) => fc.selectivityCi[l]![h]!.mean), ci((l, h) => fc.selectivityCi[l]![h]!.low), ci((l, h) => fc.accuracyCi[l]![h]!.mean), ci((l, h) => fc.accuracyCi[l]![h]!.low)],
      separation: ranking.functions.find((f) => f.function === fc.function)?.separation.note,
    };
  });
  return {
    criteria: ranking.criteria,
    grids: combineFunctions(functions.map((f) => f.grids)),
    functions,
    skipped: r.skipped,
    settings: {
      split_by: splitBy,
      seeds,
      permutations,
      iterations: r.optimizer.iterations,
      backend: r.backend,
      wording_source: controls.wordingSource,
      templates: controls.templates,
      wording_only_accuracy: Object.fromEntries(controls.functions.map((fc) => [fc.function, sampleMean(fc.wordingAccuracy)])),
    },
  };
}

export interface MlpMethodOptions {
  functions: readonly string[];
  /** Default [0, 1, 2] (each seed is a full training). */
  seeds?: readonly number[];
  /** Default the paper's 100. */
  epochs?: number;
  /** Default the paper's 1. */
  batchSize?: number;
  topK: number;
  onProgress?: (p: { done: number; total: number; seconds: number }) => void;
}

export const DEFAULT_MLP_SEEDS = [0, 1, 2] as const;

/** Method "mlp": the CogVSR MLP probe's |importance|, relative to each function's most important head. */
export function mlpImportanceScores(data: ProbeData, opts: MlpMethodOptions): ScoreTable {
  const seeds = [...(opts.seeds ?? DEFAULT_MLP_SEEDS)];
  const epochs = opts.epochs ?? MLP_PROBE_DEFAULTS.epochs;
  const batchSize = opts.batchSize ?? MLP_PROBE_DEFAULTS.batchSize;
  const r = fitMlpProbes({ ...data, seeds, epochs, batchSize, splitBy: 'question', onProgress: opts.onProgress });
  const skipped = opts.functions.filter((f) => !r.classes.includes(f)).map((f) => ({ function: f, reason: 'no correctly answered example of this function' }));
  const wanted = opts.functions.filter((f) => r.classes.includes(f));
  if (wanted.length === 0) noResult(opts.functions, skipped, 'mlp');
  const ranking = rankMlpHeads(r, { topK: Math.min(opts.topK, r.layers * r.heads), functions: wanted });
  const functions = ranking.functions.map((fr): FunctionScores => {
    const max = Math.max(...fr.ranking.map((h) => h.importance).filter(Number.isFinite));
    const scale = max > 0 ? 1 / max : NaN;
    const at = (l: number, h: number) => fr.ranking.find((x) => x.layer === l && x.head === h)!;
    return {
      function: fr.function,
      grids: [cells(r.layers, r.heads, (l, h) => at(l, h).importance * scale), cells(r.layers, r.heads, (l, h) => at(l, h).importanceLow * scale)],
      separation: fr.separation.note,
    };
  });
  return {
    criteria: ['|importance| / the function\'s largest (mean over seeds)', 'its 95% CI lower bound, same scale'],
    grids: combineFunctions(functions.map((f) => f.grids)),
    functions,
    skipped,
    settings: {
      split_by: 'question',
      seeds,
      epochs,
      batch_size: batchSize,
      classes: r.classes,
      held_out_accuracy: r.fits.map((f) => f.testAccuracy),
    },
  };
}
