// Controls for functional-head probes (CogVision's per-head logistic probes, src/interp/probes.ts), so that a
// head's probe accuracy can be told apart from what the probe would score without reading the head's content.
// Hewitt & Liang (EMNLP 2019, "Designing and Interpreting Probes with Control Tasks"): fit the same probe to a
// control labelling that keeps the surface structure but not the property; selectivity = task accuracy minus
// control accuracy. On templated questions every function has its own wording, so any head that sees the
// question text separates the functions and accuracies saturate: the controls below expose that.
//
//   label permutation   per (function, seed split, permutation): the split's labels shuffled within its training
//                       rows and within its held-out rows (each side keeps its class balance, so chance stays 0.5),
//                       and the same probe (same standardisation, optimiser, iterations) fitted per head on them;
//                       its held-out accuracy is chance plus the probe's spread on this data
//   wording only        per (function, seed split): the same logistic probe fitted on the same rows and labels, but
//                       its features are a one-hot of the example's question template (its `wording` field, else
//                       the question with the object words masked, see questionTemplate) instead of a head's
//                       activation: how well the function is told by the wording alone
//   control             per (function, seed, head): max(permutation mean over permutations, wording-only accuracy)
//   selectivity         per (function, seed, head): held-out accuracy minus control; mean and 95% t-interval over
//                       the seeds (each seed is its own split, so seeds are the independent repeats)
//
// Ranking (rankControlledHeads): by selectivity (or accuracy), then by the next criterion while equal (the CI lower
// bound, then the other statistic and its lower bound), never by (layer, head). Heads equal on every criterion share
// a rank; their order in the list is a seeded shuffle, so no layer is favoured. The top-k set is "separated" when the
// k-th head's interval on the first criterion lies above the (k+1)-th's; otherwise the report says so.

import type { GpuContext } from '../gpu/context.js';
import { wordingById } from '../eval/paraphrases.js';
import { COLOURS, NUMBER_WORDS, SHAPES, mixSeed, mulberry32 } from '../eval/synthetic.js';
import { type LogisticFit, type ProbeTask, type ResolvedOptimizer, fitProbeBatchCpu, isConstantFeature, resolveOptimizer } from './probe-cpu.js';
import type { ProbeExample, ProbeResult } from './probes.js';
import { criteriaComparator, hashString, rankByCriteria, shuffleInPlace, topCount } from './ranking.js';
import { CI_LEVEL, type Interval, sampleMean, sampleStd, tInterval } from './statistics.js';

// ---------------------------------------------------------------------------------------------------------------
// Question templates

/**
 * Words and phrases masked by questionTemplate: the synthetic scenes' colours, shapes (and plurals), number words and
 * the relation words, i.e. what changes between two questions of one wording. Relation words are masked too because
 * the relation asked is content (which objects, which relation), not wording; "left of" is one relation, as "above".
 */
export const TEMPLATE_MASK_WORDS: readonly string[] = [
  ...COLOURS,
  ...SHAPES,
  ...SHAPES.map((s) => `${s}s`),
  ...NUMBER_WORDS,
  'to the left of',
  'to the right of',
  'left of',
  'right of',
  'left',
  'right',
  'above',
  'below',
  'top',
  'bottom',
];

const SLOT = '_';

/**
 * The template of a question: lower-cased, masked words and phrases (and digits) replaced by one slot per run of
 * them, "a"/"an" before a slot unified (so "a red" and "an orange" give one template), whitespace collapsed.
 * "Is there an orange circle?" and "Is there a red square?" -> "is there a _?".
 */
export function questionTemplate(question: string, maskWords: readonly string[] = TEMPLATE_MASK_WORDS): string {
  let text = question.toLowerCase();
  // Phrases first, longest first, each turned into a digit token (digits are slots below).
  const escape = (w: string) => w.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  for (const phrase of [...maskWords].filter((w) => /\s/.test(w.trim())).sort((a, b) => b.length - a.length)) {
    text = text.replace(new RegExp(`(?<![a-z0-9'])${escape(phrase.toLowerCase().trim()).replace(/\s+/g, '\\s+')}(?![a-z0-9'])`, 'g'), ' 0 ');
  }
  const masked = new Set(maskWords.map((w) => w.toLowerCase()));
  const tokens = text.match(/[a-z0-9']+|[^a-z0-9'\s]+/g) ?? [];
  const out: string[] = [];
  for (const tok of tokens) {
    const isSlot = masked.has(tok) || /^\d+$/.test(tok);
    if (isSlot) {
      if (out[out.length - 1] === SLOT) continue;
      if (out[out.length - 1] === 'an') out[out.length - 1] = 'a';
      out.push(SLOT);
    } else out.push(tok);
  }
  // Words joined by spaces, punctuation attached to the word before it.
  return out.reduce((s, t) => (s === '' ? t : /^[a-z0-9_']/.test(t) ? `${s} ${t}` : `${s}${t}`), '');
}

/** An example with what its wording control needs: its template id, else its question text. */
export interface WordedProbeExample extends ProbeExample {
  /** The example's wording / template id (e.g. the paraphrase id the synthetic generator records). */
  wording?: string;
  /** The question text, for deriving the template when there is no `wording`. */
  question?: string;
}

/** Where the template ids came from: the examples' `wording` fields, masked question text, or the exact question text. */
export type WordingSource = 'wording' | 'masked-question' | 'question';

/**
 * The template id of every example. When every example has a `wording`: that wording's template name when it is one
 * of the synthetic paraphrases (src/eval/paraphrases.ts: a template shared by two tables, e.g. the yes/no relation
 * question of the vsr type and of the relational_reasoning sub-question, has one name, while the wording ids
 * "vsr.w0" / "relational_reasoning.w0" would name the function), else the wording itself ("wording"). Otherwise
 * questionTemplate of the question ("masked-question"; "question" when masking changed no question, i.e. the
 * template is the exact text). Throws when an example has neither.
 */
export function wordingIds(examples: readonly WordedProbeExample[], maskWords: readonly string[] = TEMPLATE_MASK_WORDS): { ids: string[]; source: WordingSource } {
  if (examples.every((e) => typeof e.wording === 'string' && e.wording !== '')) {
    return { ids: examples.map((e) => wordingById(e.wording!)?.template ?? e.wording!), source: 'wording' };
  }
  const missing = examples.findIndex((e) => typeof e.question !== 'string');
  if (missing >= 0) throw new Error(`wording control: example ${JSON.stringify(examples[missing].id)} has neither a wording nor a question text`);
  let changed = false;
  const ids = examples.map((e) => {
    const t = questionTemplate(e.question!, maskWords);
    if (t !== questionTemplate(e.question!, [])) changed = true;
    return t;
  });
  return { ids, source: changed ? 'masked-question' : 'question' };
}

// ---------------------------------------------------------------------------------------------------------------
// The wording-only probe: logistic regression on a one-hot of the template

export interface OneHotProblem {
  /** Column (template index in [0, columns)) of each example. */
  column: ArrayLike<number>;
  columns: number;
  labels: ArrayLike<number>;
  train: ArrayLike<number | boolean>;
}

export interface OneHotFit {
  /** [columns] weights on standardised columns (0 for constant ones) and the bias. */
  weights: Float64Array;
  bias: number;
  trainAccuracy: number;
  testAccuracy: number;
  trainCount: number;
  testCount: number;
}

/**
 * fitProbeBatchCpu's fit (same standardisation, optimiser and prediction rule) of one probe whose features are the
 * one-hot rows of `column`, in O(examples + columns) per step instead of O(examples x columns): a standardised
 * one-hot column t is (1[t(n) = t] - m_t) / s_t, so the logit is b + c + w_t(n) / s_t(n) with c = -sum_t w_t m_t / s_t,
 * and the gradient of w_t is (R_t - m_t R) / s_t with R_t the residual sum over the rows of template t.
 * The learning rate defaults to fitProbeBatchCpu's for `columns` features.
 */
export function fitOneHotLogistic(p: OneHotProblem, optimizer: { iterations: number; l2: number; momentum: number; learningRate?: number }): OneHotFit {
  const T = p.columns;
  const N = p.column.length;
  const o: ResolvedOptimizer = resolveOptimizer(optimizer, T);
  const isTrain = Uint8Array.from({ length: N }, (_, n) => (p.train[n] ? 1 : 0));
  let trainCount = 0;
  const count = new Float64Array(T);
  for (let n = 0; n < N; n++) {
    const t = p.column[n];
    if (!Number.isInteger(t) || t < 0 || t >= T) throw new Error(`fitOneHotLogistic: example ${n} has column ${t}, outside [0, ${T})`);
    if (isTrain[n]) {
      trainCount++;
      count[t]++;
    }
  }
  if (trainCount === 0) throw new Error('fitOneHotLogistic: no training rows');
  const mean = new Float64Array(T);
  const invStd = new Float64Array(T); // 0 for constant columns (standardised to 0)
  for (let t = 0; t < T; t++) {
    const m = count[t] / trainCount;
    const s = Math.sqrt(m * (1 - m));
    mean[t] = m;
    invStd[t] = isConstantFeature(m, s) ? 0 : 1 / s;
  }
  const w = new Float64Array(T + 1); // w[T] is the bias
  const v = new Float64Array(T + 1);
  const g = new Float64Array(T + 1);
  const Rt = new Float64Array(T);
  const logit = (n: number, c: number) => w[T] + c + w[p.column[n]] * invStd[p.column[n]];
  const offset = () => {
    let c = 0;
    for (let t = 0; t < T; t++) c -= w[t] * mean[t] * invStd[t];
    return c;
  };
  const inv = 1 / trainCount;
  for (let it = 0; it < o.iterations; it++) {
    const c = offset();
    Rt.fill(0);
    let R = 0;
    for (let n = 0; n < N; n++) {
      if (!isTrain[n]) continue;
      const r = (1 / (1 + Math.exp(-logit(n, c))) - p.labels[n]) * inv;
      Rt[p.column[n]] += r;
      R += r;
    }
    for (let t = 0; t < T; t++) g[t] = (Rt[t] - mean[t] * R) * invStd[t] + o.l2 * w[t];
    g[T] = R;
    for (let f = 0; f <= T; f++) {
      v[f] = o.momentum * v[f] + g[f];
      w[f] -= o.learningRate * v[f];
    }
  }
  const c = offset();
  let cTrain = 0;
  let cTest = 0;
  for (let n = 0; n < N; n++) {
    if ((logit(n, c) > 0 ? 1 : 0) !== p.labels[n]) continue;
    if (isTrain[n]) cTrain++;
    else cTest++;
  }
  const testCount = N - trainCount;
  return { weights: w.slice(0, T), bias: w[T], trainAccuracy: cTrain / trainCount, testAccuracy: testCount ? cTest / testCount : NaN, trainCount, testCount };
}

// ---------------------------------------------------------------------------------------------------------------
// Fitting the controls

export interface ProbeControlOptions {
  /** The pooled activations fitProbes was given ([rows, layers, heads, dim]). */
  features: Float32Array;
  /** The examples fitProbes was given, with `wording` or `question` for the wording control. */
  examples: readonly WordedProbeExample[];
  /** Label permutations per (function, seed) (default 10). */
  permutations?: number;
  /** Words masked when templates are derived from question text (default TEMPLATE_MASK_WORDS). */
  maskWords?: readonly string[];
  /** Permutation fits done of all, after each on the CPU, once at the end of the GPU batch. */
  onProgress?: (p: { done: number; total: number; seconds: number }) => void;
}

export interface FunctionControls {
  function: string;
  /** Held-out accuracy on permuted labels [seeds][permutations][layers][heads]. */
  permutationAccuracy: number[][][][];
  /** Mean over permutations per seed [seeds][layers][heads], and mean / sample std over all seeds x permutations [layers][heads]. */
  permutationMeanPerSeed: number[][][];
  permutationMean: number[][];
  permutationStd: number[][];
  /** Wording-only probe: held-out and training accuracy per seed, and the templates among the function's rows per seed. */
  wordingAccuracy: number[];
  wordingTrainAccuracy: number[];
  wordingTemplates: number[];
  /** max(permutation mean of the seed, wording-only accuracy of the seed) [seeds][layers][heads]. */
  control: number[][][];
  /** Held-out accuracy minus control [seeds][layers][heads]. */
  selectivity: number[][][];
  /** Intervals over seeds [layers][heads]. */
  accuracyCi: Interval[][];
  selectivityCi: Interval[][];
  controlMean: number[][];
  /** Which control is larger on average over heads and seeds. */
  binding: 'wording' | 'permutation';
}

export interface ProbeControls {
  permutations: number;
  level: number;
  wordingSource: WordingSource;
  /** Distinct template ids over all examples. */
  templates: number;
  functions: FunctionControls[];
}

export const DEFAULT_PERMUTATIONS = 10;

/** FNV-1a of a string, for seeding per function. */


const grid = (values: ArrayLike<number>, L: number, H: number): number[][] => Array.from({ length: L }, (_, l) => Array.from({ length: H }, (_, h) => values[l * H + h]));

/**
 * The label-permutation baseline, the wording-only control and selectivity for every function and seed of a
 * fitProbes result, on the same splits (read back from result.splits) and with the same optimiser. Permutation fits
 * run on the GPU when ctx is given (one batch), else with the float64 CPU reference, as fitProbes does.
 */
export async function fitProbeControls(ctx: GpuContext | null, result: ProbeResult, opts: ProbeControlOptions): Promise<ProbeControls> {
  const { layers: L, heads: H, dim: F } = result;
  const P = L * H;
  const rowSize = P * F;
  const { features, examples } = opts;
  if (features.length % rowSize !== 0) throw new Error(`probe controls: features hold ${features.length} values, not whole rows of ${L} x ${H} x ${F}`);
  const permutations = opts.permutations ?? DEFAULT_PERMUTATIONS;
  if (!Number.isInteger(permutations) || permutations < 1) throw new Error(`probe controls: permutations must be a positive integer, got ${permutations}`);
  const byId = new Map<string, number>();
  examples.forEach((e, i) => byId.set(String(e.id), i));
  const index = (id: string | number) => {
    const i = byId.get(String(id));
    if (i === undefined) throw new Error(`probe controls: split example ${JSON.stringify(id)} is not among the examples`);
    return i;
  };
  const { ids: wording, source } = wordingIds(examples, opts.maskWords);

  // Every (function, seed, permutation) is one task of one batch over the rows the splits use.
  const compact = new Map<number, number>();
  const tasks: ProbeTask[] = [];
  interface SplitRows {
    order: number[];
    labels: Uint8Array;
    train: Uint8Array;
  }
  const splitRows: SplitRows[][] = [];
  for (const fp of result.functions) {
    const perSeed: SplitRows[] = [];
    for (const s of fp.splits) {
      const order = [...s.train.map(index), ...s.test.map(index)];
      const labels = Uint8Array.from(order, (i) => (examples[i].function === fp.function ? 1 : 0));
      const train = Uint8Array.from(order, (_, n) => (n < s.train.length ? 1 : 0));
      perSeed.push({ order, labels, train });
      const rows = Uint32Array.from(order, (i) => {
        const row = examples[i].row ?? i;
        let c = compact.get(row);
        if (c === undefined) compact.set(row, (c = compact.size));
        return c;
      });
      for (let k = 0; k < permutations; k++) {
        const rand = mulberry32(mixSeed(mixSeed(s.seed >>> 0, hashString(fp.function)), 0x5eed + k));
        const permuted = new Uint8Array(labels.length);
        for (const side of [1, 0]) {
          const at = order.map((_, n) => n).filter((n) => train[n] === side);
          const ys = shuffleInPlace(
            at.map((n) => labels[n]),
            rand,
          );
          at.forEach((n, j) => (permuted[n] = ys[j]));
        }
        tasks.push({ rows, labels: permuted, train });
      }
    }
    splitRows.push(perSeed);
  }
  const fits: LogisticFit[] = [];
  if (tasks.length) {
    const x = new Float32Array(compact.size * rowSize);
    for (const [row, c] of compact) {
      if (row < 0 || (row + 1) * rowSize > features.length) throw new Error(`probe controls: row ${row} is outside the features`);
      x.set(features.subarray(row * rowSize, (row + 1) * rowSize), c * rowSize);
    }
    const batch = { x, rows: compact.size, probes: P, features: F, tasks };
    const t0 = performance.now();
    if (ctx) {
      const { fitProbeBatchGpu } = await import('../../kernels/probe.js');
      fits.push(...(await fitProbeBatchGpu(ctx, batch, result.optimizer)));
      opts.onProgress?.({ done: tasks.length, total: tasks.length, seconds: (performance.now() - t0) / 1000 });
    } else {
      for (const task of tasks) {
        fits.push(fitProbeBatchCpu({ ...batch, tasks: [task] }, result.optimizer)[0]);
        opts.onProgress?.({ done: fits.length, total: tasks.length, seconds: (performance.now() - t0) / 1000 });
      }
    }
  }

  let t = 0;
  const functions = result.functions.map((fp, k): FunctionControls => {
    const S = fp.splits.length;
    const permutationAccuracy: number[][][][] = [];
    const wordingAccuracy: number[] = [];
    const wordingTrainAccuracy: number[] = [];
    const wordingTemplates: number[] = [];
    for (let s = 0; s < S; s++) {
      const perm: number[][][] = [];
      for (let j = 0; j < permutations; j++) perm.push(grid(fits[t++].testAccuracy, L, H));
      permutationAccuracy.push(perm);
      // Wording only: one-hot columns are the templates among this split's rows.
      const { order, labels, train } = splitRows[k][s];
      const columns = new Map<string, number>();
      const column = order.map((i) => {
        let c = columns.get(wording[i]);
        if (c === undefined) columns.set(wording[i], (c = columns.size));
        return c;
      });
      const w = fitOneHotLogistic({ column, columns: columns.size, labels, train }, { iterations: result.optimizer.iterations, l2: result.optimizer.l2, momentum: result.optimizer.momentum });
      wordingAccuracy.push(w.testAccuracy);
      wordingTrainAccuracy.push(w.trainAccuracy);
      wordingTemplates.push(columns.size);
    }
    const cell = <T>(f: (l: number, h: number) => T): T[][] => Array.from({ length: L }, (_, l) => Array.from({ length: H }, (_, h) => f(l, h)));
    const permutationMeanPerSeed = permutationAccuracy.map((perm) => cell((l, h) => perm.reduce((a, g) => a + g[l][h], 0) / permutations));
    const pooled = (l: number, h: number) => permutationAccuracy.flatMap((perm) => perm.map((g) => g[l][h]));
    const permutationMean = cell((l, h) => sampleMean(pooled(l, h)));
    const permutationStd = cell((l, h) => sampleStd(pooled(l, h)));
    const control = permutationMeanPerSeed.map((pm, s) => cell((l, h) => Math.max(pm[l][h], wordingAccuracy[s])));
    const selectivity = control.map((c, s) => cell((l, h) => fp.accuracy[s][l][h] - c[l][h]));
    let wordingWins = 0;
    let cells = 0;
    permutationMeanPerSeed.forEach((pm, s) =>
      pm.forEach((row) =>
        row.forEach((v) => {
          cells++;
          if (wordingAccuracy[s] >= v) wordingWins++;
        }),
      ),
    );
    return {
      function: fp.function,
      permutationAccuracy,
      permutationMeanPerSeed,
      permutationMean,
      permutationStd,
      wordingAccuracy,
      wordingTrainAccuracy,
      wordingTemplates,
      control,
      selectivity,
      accuracyCi: cell((l, h) => tInterval(fp.accuracy.map((a) => a[l][h]))),
      selectivityCi: cell((l, h) => tInterval(selectivity.map((a) => a[l][h]))),
      controlMean: cell((l, h) => control.reduce((a, c) => a + c[l][h], 0) / S),
      binding: wordingWins * 2 >= cells ? 'wording' : 'permutation',
    };
  });
  return { permutations, level: CI_LEVEL, wordingSource: source, templates: new Set(wording).size, functions };
}

export { criteriaComparator, rankByCriteria } from './ranking.js';

// ---------------------------------------------------------------------------------------------------------------
// Ranking with controls

export type RankCriterion = 'selectivity' | 'accuracy';

export interface ControlledHead {
  layer: number;
  head: number;
  /** 1 = best; heads equal on every criterion share a rank. */
  rank: number;
  accuracy: number;
  accuracyLow: number;
  accuracyHigh: number;
  selectivity: number;
  selectivityLow: number;
  selectivityHigh: number;
  control: number;
  permutationMean: number;
  wordingAccuracy: number;
}

/** Whether the top-k set stands apart from the heads after it. */
export interface TopSeparation {
  /** The k-th head's interval on the first criterion lies above the (k+1)-th's (false when intervals are unknown). */
  separated: boolean;
  /** The k-th and (k+1)-th heads are equal on every criterion (the cut falls inside a tie). */
  tiedAtCut: boolean;
  /** Heads ranked after k whose interval on the first criterion overlaps the k-th head's. */
  overlapping: number;
  /** One sentence for the report. */
  note: string;
}

export interface ControlledFunctionRanking {
  function: string;
  ranking: ControlledHead[];
  top: ControlledHead[];
  separation: TopSeparation;
}

export interface ControlledRanking {
  rankBy: RankCriterion;
  /** The criteria in the order they are compared, in words ("selectivity mean", "selectivity CI lower bound", ...). */
  criteria: string[];
  topPercent: number;
  k: number;
  functions: ControlledFunctionRanking[];
}

const CRITERION_NAMES = { selectivity: 'selectivity mean', selectivityLow: 'selectivity CI lower bound', accuracy: 'accuracy mean', accuracyLow: 'accuracy CI lower bound' } as const;

const CRITERIA: Record<RankCriterion, (keyof typeof CRITERION_NAMES)[]> = {
  selectivity: ['selectivity', 'selectivityLow', 'accuracy', 'accuracyLow'],
  accuracy: ['accuracy', 'accuracyLow', 'selectivity', 'selectivityLow'],
};

const headLabel = (h: { layer: number; head: number }) => `L${h.layer}H${h.head}`;
const fmt = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : 'n/a');

/**
 * Ranks each function's heads by selectivity (default) or accuracy with ties broken by the next criterion (see the
 * file comment) and selects the top topPercent% (or topK); says whether the top set is separated from the rest.
 */
export function rankControlledHeads(
  result: Pick<ProbeResult, 'layers' | 'heads' | 'seeds' | 'functions'>,
  controls: ProbeControls,
  opts: { topPercent?: number; topK?: number; rankBy?: RankCriterion } = {},
): ControlledRanking {
  const { topPercent, k } = topCount(result.layers * result.heads, opts);
  const rankBy = opts.rankBy ?? 'selectivity';
  const criteria = CRITERIA[rankBy];
  const criterionNames = criteria.map((c) => CRITERION_NAMES[c as keyof typeof CRITERION_NAMES]);
  const compare = criteriaComparator(criteria.map((c) => (x: ControlledHead) => x[c] as number));
  const functions = result.functions.map((fp): ControlledFunctionRanking => {
    const fc = controls.functions.find((c) => c.function === fp.function);
    if (!fc) throw new Error(`rankControlledHeads: no controls for function ${JSON.stringify(fp.function)}`);
    const heads: ControlledHead[] = [];
    for (let l = 0; l < result.layers; l++)
      for (let h = 0; h < result.heads; h++) {
        const a = fc.accuracyCi[l][h];
        const s = fc.selectivityCi[l][h];
        heads.push({
          layer: l,
          head: h,
          rank: 0,
          accuracy: a.mean,
          accuracyLow: a.low,
          accuracyHigh: a.high,
          selectivity: s.mean,
          selectivityLow: s.low,
          selectivityHigh: s.high,
          control: fc.controlMean[l][h],
          permutationMean: fc.permutationMean[l][h],
          wordingAccuracy: fc.wordingAccuracy.reduce((x, y) => x + y, 0) / fc.wordingAccuracy.length,
        });
      }
    const ranking = rankByCriteria(heads, criteria.map((c) => (x: ControlledHead) => x[c] as number), mixSeed((result.seeds[0] ?? 0) >>> 0, hashString(fp.function))).map(({ item, rank }) => ({ ...item, rank }));
    const stat = (h: ControlledHead) =>
      rankBy === 'selectivity' ? { value: h.selectivity, low: h.selectivityLow, high: h.selectivityHigh } : { value: h.accuracy, low: h.accuracyLow, high: h.accuracyHigh };
    return { function: fp.function, ranking, top: ranking.slice(0, k), separation: topSeparation(ranking, k, rankBy, stat, (a, b) => compare(a, b) === 0) };
  });
  return { rankBy, criteria: criterionNames, topPercent, k, functions };
}

/**
 * Whether the first k of a best-first ranking stand apart: the k-th item's interval on the first criterion lies
 * above the (k+1)-th's, with the count of later items whose interval reaches the k-th's lower bound.
 */
export function topSeparation<T extends { layer: number; head: number }>(
  ranked: readonly T[],
  k: number,
  what: string,
  stat: (t: T) => { value: number; low: number; high: number },
  tied: (a: T, b: T) => boolean,
): TopSeparation {
  if (k >= ranked.length) return { separated: true, tiedAtCut: false, overlapping: 0, note: 'the top set holds every head' };
  const kth = ranked[k - 1];
  const next = ranked[k];
  const a = stat(kth);
  const b = stat(next);
  const tiedAtCut = tied(kth, next);
  const known = Number.isFinite(a.low) && Number.isFinite(b.high);
  const overlapping = known ? ranked.slice(k).filter((h) => stat(h).high >= a.low).length : ranked.length - k;
  const separated = !tiedAtCut && known && a.low > b.high;
  const show = (s: { value: number; low: number; high: number }) => `${fmt(s.value)} [${fmt(s.low)}, ${fmt(s.high)}]`;
  let note: string;
  if (tiedAtCut) note = `not separated: the ${ordinal(k)} head ${headLabel(kth)} ties with the ${ordinal(k + 1)} ${headLabel(next)} on every criterion (the cut falls inside a tie; tied heads stand in seeded random order)`;
  else if (!known) note = `separation unknown: the ${ordinal(k)} and ${ordinal(k + 1)} heads have no ${what} interval (it needs at least 2 seeds)`;
  else if (separated) note = `separated: the ${ordinal(k)} head ${headLabel(kth)} (${what} ${show(a)}) lies above the ${ordinal(k + 1)} ${headLabel(next)} (${show(b)})`;
  else note = `not separated: the ${ordinal(k)} head ${headLabel(kth)} (${what} ${show(a)}) overlaps the ${ordinal(k + 1)} ${headLabel(next)} (${show(b)}); ${overlapping} head${overlapping === 1 ? '' : 's'} after the top ${k} reach its interval`;
  return { separated, tiedAtCut, overlapping, note };
}

function ordinal(n: number): string {
  const s = n % 100 >= 11 && n % 100 <= 13 ? 'th' : (['th', 'st', 'nd', 'rd'][n % 10] ?? 'th');
  return `${n}${s}`;
}
