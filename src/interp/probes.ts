// Functional-head probing (CogVision, Jiang et al., arXiv 2512.10300): for each function and each (layer, head), a
// logistic probe on the head's pooled activation predicts "this sub-question is of function f". Positives are the
// correctly answered examples of f; negatives a balanced, seeded random sample of correctly answered examples of the
// other functions. Train and held-out rows are split by main question (sub-questions of one main question never
// straddle the split), the fit is repeated over seeds, and a head's importance for f is its probe's held-out
// accuracy (mean over seeds). All functions x seeds x layers x heads probes are fitted together as one batch on the
// GPU (kernels/probe.ts: the rows in use are uploaded once, each (function, seed) is a task of row indices), or with
// the float64 CPU reference when no GPU context is given.
//
// Split of function f for a seed (probeSplit), with a PRNG seeded by (seed, f):
//   1. the main questions holding positives are shuffled and moved to the held-out side until it holds
//      round(testFraction x positives) of them (at least 1, and never all: one main question stays in training);
//   2. the other main questions (holding only negatives) are shuffled and moved to the held-out side until it holds
//      round(testFraction x candidate negatives) of the candidates (negatives in step-1 main questions count);
//   3. on each side, negatives are drawn at random among that side's candidates, as many as that side's positives
//      (all of them when there are fewer).
// Both sides are thus class-balanced (chance accuracy 0.5) and no main question is on both.
//
// Split by wording (splitBy 'wording', issue 14), for data written in paraphrases (make-synthetic --wordings all):
// the held-out side is every example whose wording is held out (wordingHeldout true), the training side every other
// one; testFraction is not used, and step 3 balances each side as above. A probe that is accurate there reads more
// than the question template it was trained on. Main questions may straddle the split (a main question's
// sub-questions are worded independently); every example needs its wordingHeldout flag.

import type { GpuContext } from '../gpu/context.js';
import { encodePng } from '../io/image.js';
import { mixSeed, mulberry32 } from '../eval/synthetic.js';
import { type LogisticFit, type ProbeOptimizerOptions, type ProbeTask, type ResolvedOptimizer, fitProbeBatchCpu, resolveOptimizer } from './probe-cpu.js';
import { hashString, rankByCriteria, topCount } from './ranking.js';

export interface ProbeExample {
  id: string | number;
  /** The main question the example belongs to (its own id for a main question). */
  mainId: string | number;
  function: string;
  correct: boolean;
  /** Row of `features` holding this example (default: its index in `examples`). */
  row?: number;
  /** The question's wording id ("spatial.w2") and whether it is held out (src/eval/paraphrases.ts). */
  wording?: string;
  wordingHeldout?: boolean;
}

/** How train and held-out examples are separated: by main question (CogVision) or by held-out wording. */
export const SPLIT_BY = ['question', 'wording'] as const;
export type SplitBy = (typeof SPLIT_BY)[number];

export interface FitProbesOptions extends ProbeOptimizerOptions {
  /** [rows, layers, heads, dim] row-major pooled activations. */
  features: Float32Array;
  layers: number;
  heads: number;
  /** Features per head (d_head, or 2 d_head with the layer-mean concatenation). */
  dim: number;
  examples: readonly ProbeExample[];
  /** Functions to probe (default: every function with a correct example, sorted). */
  functions?: readonly string[];
  /** One split and fit per seed (default [0, 1, 2]). */
  seeds?: readonly number[];
  /** Share of each function's positives (and of the negative candidates) held out (default 0.2; not used by the wording split). */
  testFraction?: number;
  /** Split by main question (default) or by held-out wording (see the file comment). */
  splitBy?: SplitBy;
  /** Fits done of all (function, seed) fits: after each on the CPU, once at the end of the GPU batch. */
  onProgress?: (p: { done: number; total: number; seconds: number }) => void;
}

export interface ProbeSplit {
  seed: number;
  /** Ids of the training and held-out examples (positives and sampled negatives). */
  train: (string | number)[];
  test: (string | number)[];
  trainPositives: number;
  trainNegatives: number;
  testPositives: number;
  testNegatives: number;
}

export interface FunctionProbes {
  function: string;
  /** Correctly answered examples of the function (the positive pool). */
  positives: number;
  splits: ProbeSplit[];
  /** Held-out accuracy [seeds][layers][heads]. */
  accuracy: number[][][];
  /** Training accuracy [seeds][layers][heads]. */
  trainAccuracy: number[][][];
  /** Mean and population std over seeds of the held-out accuracy, [layers][heads]. */
  mean: number[][];
  std: number[][];
  /** The probes of the first seed: weights [layers, heads, dim] on standardised features, bias [layers, heads], and the standardisation. */
  probes: { seed: number; weights: Float32Array | Float64Array; bias: Float32Array | Float64Array; mean: Float32Array | Float64Array; std: Float32Array | Float64Array };
}

export interface ProbeResult {
  layers: number;
  heads: number;
  dim: number;
  seeds: number[];
  testFraction: number;
  splitBy: SplitBy;
  optimizer: ResolvedOptimizer;
  backend: 'gpu' | 'cpu';
  functions: FunctionProbes[];
  /** Functions that could not be probed, with the reason. */
  skipped: { function: string; reason: string }[];
}

export const DEFAULT_PROBE_SEEDS = [0, 1, 2] as const;
export const DEFAULT_TEST_FRACTION = 0.2;

/** FNV-1a of a string, for seeding per function. */

function shuffle<T>(a: T[], rand: () => number): T[] {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** Indices (into `examples`) of one (function, seed) split; `null` with a reason when the function cannot be probed. */
export interface SplitIndices {
  train: number[];
  test: number[];
  /** 1 for positives, by example index (only for indices in train / test). */
  positive: Set<number>;
}

export function probeSplit(
  examples: readonly ProbeExample[],
  fn: string,
  seed: number,
  testFraction = DEFAULT_TEST_FRACTION,
  splitBy: SplitBy = 'question',
): SplitIndices | { reason: string } {
  if (!(testFraction > 0 && testFraction < 1)) throw new Error(`testFraction must be in (0, 1), got ${testFraction}`);
  if (!(SPLIT_BY as readonly string[]).includes(splitBy)) throw new Error(`splitBy must be one of ${SPLIT_BY.join(', ')}, got ${JSON.stringify(splitBy)}`);
  const rand = mulberry32(mixSeed(seed >>> 0, hashString(fn)));
  const main = (i: number) => String(examples[i].mainId);
  const pos: number[] = [];
  const neg: number[] = [];
  examples.forEach((e, i) => {
    if (!e.correct) return;
    (e.function === fn ? pos : neg).push(i);
  });
  // Balanced negatives on each side: that side's positives and as many of its negative candidates, drawn at random.
  const side = (isTest: (i: number) => boolean, test: boolean) => {
    const p = pos.filter((i) => isTest(i) === test);
    const candidates = shuffle(
      neg.filter((i) => isTest(i) === test),
      rand,
    );
    const n = candidates.slice(0, Math.min(p.length, candidates.length));
    return [...p, ...n].sort((a, b) => a - b);
  };
  if (splitBy === 'wording') {
    const unflagged = [...pos, ...neg].find((i) => typeof examples[i].wordingHeldout !== 'boolean');
    if (unflagged !== undefined) {
      throw new Error(`splitting by wording needs every example's wordingHeldout flag; example ${JSON.stringify(examples[unflagged].id)} has none (collect from a question file written with make-synthetic --wordings all)`);
    }
    const heldout = (i: number) => examples[i].wordingHeldout === true;
    const testPos = pos.filter(heldout).length;
    if (testPos === 0) return { reason: `no correct example in a held-out wording to test on (${pos.length} in training wordings)` };
    if (testPos === pos.length) return { reason: `no correct example in a training wording to train on (${pos.length} in held-out wordings)` };
    if (!neg.some((i) => !heldout(i))) return { reason: 'no correct examples of other functions in training wordings to draw negatives from' };
    return { train: side(heldout, false), test: side(heldout, true), positive: new Set(pos) };
  }
  const count = (idx: number[]) => {
    const m = new Map<string, number>();
    for (const i of idx) m.set(main(i), (m.get(main(i)) ?? 0) + 1);
    return m;
  };
  const posPerMain = count(pos);
  if (posPerMain.size < 2) {
    return { reason: `needs correct examples from at least 2 main questions to split by main question, has ${pos.length} from ${posPerMain.size}` };
  }
  if (neg.length === 0) return { reason: 'no correct examples of other functions to draw negatives from' };
  const negPerMain = count(neg);
  const testMains = new Set<string>();
  // 1. positives' main questions
  const targetPos = Math.min(pos.length - 1, Math.max(1, Math.round(testFraction * pos.length)));
  let testPos = 0;
  let testNeg = 0;
  for (const m of shuffle([...posPerMain.keys()], rand)) {
    if (testPos >= targetPos) break;
    const c = posPerMain.get(m)!;
    if (pos.length - testPos - c < 1) continue; // keep at least one positive in training
    testMains.add(m);
    testPos += c;
    testNeg += negPerMain.get(m) ?? 0;
  }
  // 2. main questions holding only negatives
  const targetNeg = Math.round(testFraction * neg.length);
  for (const m of shuffle([...negPerMain.keys()].filter((m) => !posPerMain.has(m)), rand)) {
    if (testNeg >= targetNeg) break;
    const c = negPerMain.get(m)!;
    if (neg.length - testNeg - c < 1) continue;
    testMains.add(m);
    testNeg += c;
  }
  // 3. balanced negatives per side
  const inTest = (i: number) => testMains.has(main(i));
  const test = side(inTest, true);
  const train = side(inTest, false);
  if (!train.some((i) => examples[i].function !== fn)) {
    return { reason: 'no negatives left for training after splitting by main question' };
  }
  return { train, test, positive: new Set(pos) };
}

function grid(values: ArrayLike<number>, layers: number, heads: number): number[][] {
  return Array.from({ length: layers }, (_, l) => Array.from({ length: heads }, (_, h) => values[l * heads + h]));
}

/** Fit every (layer, head) probe of every function over the seeds; see the file comment. */
export async function fitProbes(ctx: GpuContext | null, opts: FitProbesOptions): Promise<ProbeResult> {
  const { features, layers: L, heads: H, dim: F, examples } = opts;
  for (const [k, v] of [['layers', L], ['heads', H], ['dim', F]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`fitProbes: ${k} must be a positive integer, got ${v}`);
  }
  const P = L * H;
  const rowSize = P * F;
  if (features.length % rowSize !== 0) {
    throw new Error(`fitProbes: features hold ${features.length} values, not a whole number of rows of layers x heads x dim = ${L} x ${H} x ${F}`);
  }
  const rows = features.length / rowSize;
  const ids = new Set<string>();
  examples.forEach((e, i) => {
    const row = e.row ?? i;
    if (!Number.isInteger(row) || row < 0 || row >= rows) throw new Error(`fitProbes: example ${e.id} has row ${row}, but features hold ${rows} rows`);
    if (typeof e.function !== 'string' || e.function === '') throw new Error(`fitProbes: example ${e.id} has no function label`);
    const key = String(e.id);
    if (ids.has(key)) throw new Error(`fitProbes: example id ${JSON.stringify(e.id)} appears twice`);
    ids.add(key);
  });
  const seeds = [...(opts.seeds ?? DEFAULT_PROBE_SEEDS)];
  if (seeds.length === 0) throw new Error('fitProbes: no seeds');
  for (const s of seeds) if (!Number.isInteger(s)) throw new Error(`fitProbes: seed ${s} is not an integer`);
  if (new Set(seeds).size !== seeds.length) throw new Error(`fitProbes: seeds repeat (${seeds.join(', ')})`);
  const testFraction = opts.testFraction ?? DEFAULT_TEST_FRACTION;
  const splitBy = opts.splitBy ?? 'question';
  const optimizer = resolveOptimizer(opts, F);
  const functions = opts.functions ? [...new Set(opts.functions)] : [...new Set(examples.filter((e) => e.correct).map((e) => e.function))].sort();

  const result: ProbeResult = { layers: L, heads: H, dim: F, seeds, testFraction, splitBy, optimizer, backend: ctx ? 'gpu' : 'cpu', functions: [], skipped: [] };
  const plans: { fn: string; splits: (SplitIndices & { seed: number })[] }[] = [];
  for (const fn of functions) {
    const splits: (SplitIndices & { seed: number })[] = [];
    let reason: string | null = null;
    for (const seed of seeds) {
      const s = probeSplit(examples, fn, seed, testFraction, splitBy);
      if ('reason' in s) {
        reason = s.reason;
        break;
      }
      splits.push({ ...s, seed });
    }
    if (reason) result.skipped.push({ function: fn, reason });
    else plans.push({ fn, splits });
  }

  // One batch: the rows any task uses, gathered once (x is uploaded once), every (function, seed) a task.
  const compact = new Map<number, number>();
  const tasks: ProbeTask[] = [];
  const owners: { fp: number; split: SplitIndices & { seed: number } }[] = [];
  plans.forEach(({ splits }, k) => {
    for (const split of splits) {
      const order = [...split.train, ...split.test];
      const rowsOf = new Uint32Array(order.length);
      order.forEach((i, n) => {
        const row = examples[i].row ?? i;
        let c = compact.get(row);
        if (c === undefined) compact.set(row, (c = compact.size));
        rowsOf[n] = c;
      });
      tasks.push({
        rows: rowsOf,
        labels: Uint8Array.from(order, (i) => (split.positive.has(i) ? 1 : 0)),
        train: Uint8Array.from(order, (_, n) => (n < split.train.length ? 1 : 0)),
      });
      owners.push({ fp: k, split });
    }
  });
  const fits: LogisticFit[] = [];
  if (tasks.length) {
    const x = new Float32Array(compact.size * rowSize);
    for (const [row, c] of compact) x.set(features.subarray(row * rowSize, (row + 1) * rowSize), c * rowSize);
    const batch = { x, rows: compact.size, probes: P, features: F, tasks };
    const t0 = performance.now();
    if (ctx) {
      // Imported on demand: the CPU path (and scripts run without a WGSL loader) never load the shader.
      const { fitProbeBatchGpu } = await import('../../kernels/probe.js');
      fits.push(...(await fitProbeBatchGpu(ctx, batch, optimizer)));
      opts.onProgress?.({ done: tasks.length, total: tasks.length, seconds: (performance.now() - t0) / 1000 });
    } else {
      for (const task of tasks) {
        fits.push(fitProbeBatchCpu({ ...batch, tasks: [task] }, optimizer)[0]);
        opts.onProgress?.({ done: fits.length, total: tasks.length, seconds: (performance.now() - t0) / 1000 });
      }
    }
  }

  for (const [k, { fn }] of plans.entries()) {
    const fp: FunctionProbes = {
      function: fn,
      positives: examples.filter((e) => e.correct && e.function === fn).length,
      splits: [],
      accuracy: [],
      trainAccuracy: [],
      mean: [],
      std: [],
      probes: null as unknown as FunctionProbes['probes'],
    };
    owners.forEach(({ fp: owner, split }, t) => {
      if (owner !== k) return;
      const fit = fits[t];
      const positives = (idx: number[]) => idx.filter((i) => split.positive.has(i)).length;
      fp.splits.push({
        seed: split.seed,
        train: split.train.map((i) => examples[i].id),
        test: split.test.map((i) => examples[i].id),
        trainPositives: positives(split.train),
        trainNegatives: split.train.length - positives(split.train),
        testPositives: positives(split.test),
        testNegatives: split.test.length - positives(split.test),
      });
      fp.accuracy.push(grid(fit.testAccuracy, L, H));
      fp.trainAccuracy.push(grid(fit.trainAccuracy, L, H));
      if (!fp.probes) fp.probes = { seed: split.seed, weights: fit.weights, bias: fit.bias, mean: fit.mean, std: fit.std };
    });
    const S = fp.accuracy.length;
    fp.mean = Array.from({ length: L }, (_, l) => Array.from({ length: H }, (_, h) => fp.accuracy.reduce((s, a) => s + a[l][h], 0) / S));
    fp.std = Array.from({ length: L }, (_, l) =>
      Array.from({ length: H }, (_, h) => Math.sqrt(fp.accuracy.reduce((s, a) => s + (a[l][h] - fp.mean[l][h]) ** 2, 0) / S)),
    );
    result.functions.push(fp);
  }
  return result;
}

// ---------------------------------------------------------------------------------------------------------------
// Ranking

export interface RankedHead {
  layer: number;
  head: number;
  /** Mean held-out accuracy over seeds. */
  accuracy: number;
  std: number;
  /** 1 = best. */
  rank: number;
}

export interface FunctionRanking {
  function: string;
  /**
   * Every head, best first: by mean accuracy (descending; equal to 1e-9), ties by the lower std over seeds, heads
   * equal on both sharing a rank in a seeded random order (never by layer and head).
   */
  ranking: RankedHead[];
  /** The first k of the ranking. */
  top: RankedHead[];
}

export interface HeadRanking {
  topPercent: number;
  /** Heads selected per function: round(topPercent% of layers x heads), at least 1 (or topK when given). */
  k: number;
  functions: FunctionRanking[];
}

/**
 * Ranks each function's heads by mean held-out accuracy (ties: lower std, then a seeded order) and selects the top
 * topPercent% (default 10%, as CogVision). Whether the top set stands apart from the next heads is what
 * `probe --controls` reports.
 */
export function rankHeads(result: Pick<ProbeResult, 'layers' | 'heads' | 'functions'>, opts: { topPercent?: number; topK?: number } = {}): HeadRanking {
  const { topPercent, k } = topCount(result.layers * result.heads, opts);
  const functions = result.functions.map((fp) => {
    const heads: RankedHead[] = [];
    for (let l = 0; l < result.layers; l++) for (let h = 0; h < result.heads; h++) heads.push({ layer: l, head: h, accuracy: fp.mean[l][h], std: fp.std[l][h], rank: 0 });
    const ranked = rankByCriteria(heads, [(x) => x.accuracy, (x) => -x.std], hashString(fp.function)).map(({ item, rank }) => ({ ...item, rank }));
    return { function: fp.function, ranking: ranked, top: ranked.slice(0, k) };
  });
  return { topPercent, k, functions };
}

// ---------------------------------------------------------------------------------------------------------------
// Heatmap

export interface HeatmapOptions {
  /** Pixels per cell side (default 16, at least 12). */
  cell?: number;
  /** Values mapped to the ends of the colour map (default 0.5, chance for balanced probes, and 1). */
  min?: number;
  max?: number;
  /** Cells framed in red (e.g. the top set). */
  highlight?: readonly { layer: number; head: number }[];
}

// Viridis at 9 evenly spaced stops (perceptually uniform, readable in grey and by colour-blind readers).
const VIRIDIS: [number, number, number][] = [
  [68, 1, 84],
  [71, 44, 122],
  [59, 81, 139],
  [44, 113, 142],
  [33, 144, 141],
  [39, 173, 129],
  [92, 200, 99],
  [170, 220, 50],
  [253, 231, 37],
];

/** Viridis colour of t in [0, 1] (clamped); NaN is grey. */
export function viridis(t: number): [number, number, number] {
  if (Number.isNaN(t)) return [128, 128, 128];
  const u = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(u));
  const f = u - i;
  const a = VIRIDIS[i];
  const b = VIRIDIS[i + 1];
  return [0, 1, 2].map((c) => Math.round(a[c] + (b[c] - a[c]) * f)) as [number, number, number];
}

/**
 * A layers x heads heatmap as PNG bytes: layer 0 in the top row, head 0 in the left column, one `cell`-pixel
 * square per head coloured by viridis over [min, max], 1-pixel dark grid lines, highlighted cells framed in red.
 */
export function headsHeatmapPng(acc: readonly (readonly number[])[], opts: HeatmapOptions = {}): Uint8Array {
  const layers = acc.length;
  const heads = layers ? acc[0].length : 0;
  if (layers < 1 || heads < 1) throw new Error('headsHeatmapPng: empty accuracy grid');
  if (acc.some((r) => r.length !== heads)) throw new Error('headsHeatmapPng: rows of different lengths');
  const cell = opts.cell ?? 16;
  if (!Number.isInteger(cell) || cell < 12) throw new Error(`headsHeatmapPng: cell must be an integer >= 12, got ${cell}`);
  const min = opts.min ?? 0.5;
  const max = opts.max ?? 1;
  if (!(max > min)) throw new Error(`headsHeatmapPng: max (${max}) must exceed min (${min})`);
  const gap = 1;
  const width = heads * (cell + gap) + gap;
  const height = layers * (cell + gap) + gap;
  const data = new Uint8Array(width * height * 3).fill(32);
  const marked = new Set((opts.highlight ?? []).map((h) => h.layer * heads + h.head));
  const frame = 2;
  for (let l = 0; l < layers; l++)
    for (let h = 0; h < heads; h++) {
      const c = viridis((acc[l][h] - min) / (max - min));
      const edge = marked.has(l * heads + h);
      const x0 = gap + h * (cell + gap);
      const y0 = gap + l * (cell + gap);
      for (let y = 0; y < cell; y++)
        for (let x = 0; x < cell; x++) {
          const onFrame = edge && (x < frame || y < frame || x >= cell - frame || y >= cell - frame);
          const i = ((y0 + y) * width + x0 + x) * 3;
          if (onFrame) {
            data[i] = 230;
            data[i + 1] = 20;
            data[i + 2] = 20;
          } else {
            data[i] = c[0];
            data[i + 1] = c[1];
            data[i + 2] = c[2];
          }
        }
    }
  return encodePng({ width, height, data });
}
