// Head interventions as experiments (CogVision, arXiv 2512.10300; CogVSR, arXiv 2603.20662): for each target function f,
// the top-k functional heads of f (from `vlmscope probe`'s ranking) are
//   - masked:        z_h *= epsilon            (mode "scale"; epsilon 0 ablates, 0.001 is CogVision's masking),
//   - mean-ablated:  z_h  = mean_h             (mode "mean_ablate"; the head's mean z over the activation store),
//   - steered:       z_h += alpha sigma_h d_h  (mode "steer"; ITI / CogVision emphasis, alpha 0.1 in CogVision),
// and the accuracy per function (and overall) is compared with the same intervention on k random heads drawn from
// outside f's functional heads, once per seed, and with no intervention at all (the baseline).
//
// Steering directions d_h are unit vectors: mean(correct) - mean(incorrect) of the head's z over f's examples in
// the store ("mean_diff", CogVision / Cognitive Mirrors), or the head's probe weights mapped back to raw features
// ("probe"); sigma_h is the population std (as numpy's np.std in ITI) of the projections <z_h, d_h> over f's
// examples. A store collected with --concat-layer-mean holds [z; layer mean] per head: only the first head_dim values
// (the head's own z) are used, for means, directions and projections alike.
//
// Statistics. There is one top-k set per function, so one top-k accuracy, against n random-k accuracies (n seeds).
// welchTTest treats a sample of one value as a constant (variance 0): Welch's t then reduces to the one-sample t-test
// of the random-k mean against the top-k value, t = (top - mean_r) / (s_r / sqrt(n)), df = n - 1 (the
// Welch-Satterthwaite df with one variance term 0). With several values on both sides it is Welch's two-sample
// test (t on the difference of means with separate variances, Welch-Satterthwaite df). The two-sided p-value comes
// from the Student t distribution, P(|T| >= |t|) = I_{df/(df+t^2)}(df/2, 1/2), with the regularised incomplete beta
// function computed here (continued fraction, modified Lentz; Lanczos log-gamma). Degenerate cases: no spread on
// either side gives t = 0 and p = 1 when the means are equal, t = +-Infinity and p = 0 when they differ; fewer than
// two values in all gives NaN.

import type { VlmModel } from '../models/vlm.js';
import type { Tokenizer } from '../io/tokenizer.js';
import type { EvalItem } from '../eval/dataset.js';
import { evaluate, type Accuracy, type EvalOptions, type EvalReport } from '../eval/evaluate.js';
import { mulberry32 } from '../eval/synthetic.js';
import type { ActivationIndex } from './activation-store.js';
import { type InterventionSpec, type ModelDims, type QueryScope, type Tower, parseInterventions } from '../spec/spec.js';

// ---------------------------------------------------------------------------------------------------------------
// Heads

export interface HeadRef {
  layer: number;
  head: number;
}

/** "layer:head", the key of head sets and vector maps here. */
export const headKey = (h: HeadRef): string => `${h.layer}:${h.head}`;

const headName = (h: HeadRef) => `L${h.layer}H${h.head}`;

function positiveInt(v: number, what: string): void {
  if (!Number.isInteger(v) || v < 1) throw new Error(`${what} must be a positive integer, got ${v}`);
}

/**
 * k distinct heads of a layers x heads grid, none in `exclude` ("layer:head" keys), drawn uniformly with a PRNG
 * seeded by `seed` (the same arguments always give the same heads), sorted by layer then head.
 */
export function randomHeads(k: number, exclude: ReadonlySet<string>, layers: number, heads: number, seed: number): HeadRef[] {
  positiveInt(layers, 'randomHeads: layers');
  positiveInt(heads, 'randomHeads: heads');
  if (!Number.isInteger(k) || k < 0) throw new Error(`randomHeads: k must be a non-negative integer, got ${k}`);
  if (!Number.isInteger(seed)) throw new Error(`randomHeads: seed must be an integer, got ${seed}`);
  const pool: HeadRef[] = [];
  for (let l = 0; l < layers; l++) for (let h = 0; h < heads; h++) if (!exclude.has(`${l}:${h}`)) pool.push({ layer: l, head: h });
  if (k > pool.length) {
    throw new Error(`randomHeads: cannot draw ${k} heads: only ${pool.length} of the ${layers * heads} heads are outside the ${layers * heads - pool.length} excluded`);
  }
  // Partial Fisher-Yates: the first k positions.
  const rand = mulberry32(seed >>> 0);
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(rand() * (pool.length - i));
    [pool[i], pool[j]] = [pool[j], pool[i]];
  }
  return pool.slice(0, k).sort((a, b) => a.layer - b.layer || a.head - b.head);
}

// ---------------------------------------------------------------------------------------------------------------
// Activation-store statistics

export interface AblationStoreExample {
  function: string;
  correct: boolean;
  /** Row of z. */
  row: number;
  id?: string | number;
}

/** What these functions read of an activation store (readActivationStore's result fits). */
export interface AblationStore {
  layers: number;
  heads: number;
  /** Values per head: head_dim, or 2 head_dim with the layer mean appended. */
  dim: number;
  examples: readonly AblationStoreExample[];
  /** [rows, layers, heads, dim] row-major. */
  z: Float32Array;
  /** The store holds [z; layer mean] per head (index.json's concat_layer_mean). */
  concat_layer_mean?: boolean;
}

/** readActivationStore's result, or a store in the flat form. */
export type AblationStoreInput = AblationStore | { index: ActivationIndex; z: Float32Array };

function asStore(s: AblationStoreInput): AblationStore {
  if ('index' in s) {
    const { layers, heads, dim, examples, concat_layer_mean } = s.index;
    return { layers, heads, dim, examples, z: s.z, concat_layer_mean };
  }
  return s;
}

/** The head's own z length in the store (the first that many values of each head's row). */
function storeHeadDim(store: AblationStore, headDim?: number): number {
  if (headDim !== undefined) {
    positiveInt(headDim, 'headDim');
    if (store.concat_layer_mean === true ? store.dim !== 2 * headDim : store.dim !== headDim && store.dim !== 2 * headDim) {
      throw new Error(
        `the activation store has ${store.dim} values per head${store.concat_layer_mean ? ' (z and the layer mean)' : ''}, but the heads have ${headDim} dims ` +
          `(expected ${store.concat_layer_mean ? '' : `${headDim} or `}${2 * headDim}); was it collected from this model and tower?`,
      );
    }
    return headDim;
  }
  if (store.concat_layer_mean) {
    if (store.dim % 2 !== 0) throw new Error(`the activation store appends the layer mean but has an odd dim ${store.dim}`);
    return store.dim / 2;
  }
  return store.dim;
}

function checkStore(store: AblationStore, heads: readonly HeadRef[]): void {
  positiveInt(store.layers, 'store layers');
  positiveInt(store.heads, 'store heads');
  positiveInt(store.dim, 'store dim');
  const rowSize = store.layers * store.heads * store.dim;
  if (store.z.length % rowSize !== 0) throw new Error(`the activation store's z holds ${store.z.length} values, not whole rows of ${store.layers} x ${store.heads} x ${store.dim}`);
  const rows = store.z.length / rowSize;
  for (const e of store.examples) {
    if (!Number.isInteger(e.row) || e.row < 0 || e.row >= rows) throw new Error(`activation store example ${e.id ?? '?'} has row ${e.row}, but z has ${rows} rows`);
  }
  for (const h of heads) {
    if (!Number.isInteger(h.layer) || !Number.isInteger(h.head) || h.layer < 0 || h.layer >= store.layers || h.head < 0 || h.head >= store.heads) {
      throw new Error(`head ${headName(h)} is outside the activation store's ${store.layers} layers x ${store.heads} heads`);
    }
  }
}

/** Offset of (row, layer, head) in z. */
const at = (s: AblationStore, row: number, h: HeadRef) => ((row * s.layers + h.layer) * s.heads + h.head) * s.dim;

export interface StoreVectorOptions {
  /** The head dim of the model's tower: the store's dim must be it or twice it (then the first half is used). */
  headDim?: number;
}

/**
 * Each head's mean z over the store's examples (all of them, or those `filter` keeps), first head_dim values:
 * the vectors of mean ablation. Keys "layer:head".
 */
export function meanVectors(
  storeIn: AblationStoreInput,
  heads: readonly HeadRef[],
  opts: StoreVectorOptions & { filter?: (e: AblationStoreExample) => boolean } = {},
): Map<string, Float32Array> {
  const store = asStore(storeIn);
  checkStore(store, heads);
  const d = storeHeadDim(store, opts.headDim);
  const rows = opts.filter ? store.examples.filter(opts.filter) : store.examples;
  if (rows.length === 0) throw new Error('meanVectors: no examples to average');
  const out = new Map<string, Float32Array>();
  for (const h of heads) {
    const acc = new Float64Array(d);
    for (const e of rows) {
      const o = at(store, e.row, h);
      for (let i = 0; i < d; i++) acc[i] += store.z[o + i];
    }
    out.set(headKey(h), Float32Array.from(acc, (x) => x / rows.length));
  }
  return out;
}

export type DirectionKind = 'mean_diff' | 'probe';

/** Probe weights of one function for every head (FunctionProbes.probes fits): on standardised features when `std` is given. */
export interface ProbeWeights {
  /** [layers, heads, dim] row-major, dim the store's. */
  weights: ArrayLike<number>;
  /** [layers, heads, dim]: the standardisation's std; the raw-feature direction is weights / std. */
  std?: ArrayLike<number>;
}

export interface SteeringDirection {
  /** Unit vector of head_dim values. */
  direction: Float32Array;
  /** Population std of the projections <z_h, direction> over the function's examples. */
  sigma: number;
}

export interface SteeringOptions extends StoreVectorOptions {
  kind: DirectionKind;
  /** For kind "probe". */
  probeWeights?: ProbeWeights;
}

/**
 * Steering directions of function `fn` for the given heads (keys "layer:head"), from the store's examples of fn:
 * "mean_diff" = mean(z | correct) - mean(z | incorrect), "probe" = the head's probe weights (divided by the
 * standardisation's std when given), both normalised to unit length; sigma as in the file comment.
 */
export function steeringDirections(storeIn: AblationStoreInput, fn: string, heads: readonly HeadRef[], opts: SteeringOptions): Map<string, SteeringDirection> {
  const store = asStore(storeIn);
  checkStore(store, heads);
  const d = storeHeadDim(store, opts.headDim);
  const rows = store.examples.filter((e) => e.function === fn);
  if (rows.length === 0) throw new Error(`steering: the activation store has no examples of function ${JSON.stringify(fn)}`);
  const correct = rows.filter((e) => e.correct);
  const wrong = rows.filter((e) => !e.correct);
  if (opts.kind === 'mean_diff' && (correct.length === 0 || wrong.length === 0)) {
    throw new Error(
      `steering: function ${JSON.stringify(fn)} has ${correct.length} correctly and ${wrong.length} wrongly answered examples in the activation store; ` +
        'mean(correct) - mean(incorrect) needs both',
    );
  }
  if (opts.kind === 'probe') {
    const want = store.layers * store.heads * store.dim;
    if (!opts.probeWeights) throw new Error('steering: kind "probe" needs probeWeights');
    if (opts.probeWeights.weights.length !== want) throw new Error(`steering: probe weights hold ${opts.probeWeights.weights.length} values, expected layers x heads x dim = ${want}`);
    if (opts.probeWeights.std && opts.probeWeights.std.length !== want) throw new Error(`steering: probe std holds ${opts.probeWeights.std.length} values, expected ${want}`);
  } else if (opts.kind !== 'mean_diff') {
    throw new Error(`steering: kind must be "mean_diff" or "probe", got ${JSON.stringify(opts.kind)}`);
  }
  const headMean = (es: readonly AblationStoreExample[], h: HeadRef) => {
    const acc = new Float64Array(d);
    for (const e of es) {
      const o = at(store, e.row, h);
      for (let i = 0; i < d; i++) acc[i] += store.z[o + i];
    }
    return acc.map((x) => x / es.length);
  };
  const out = new Map<string, SteeringDirection>();
  for (const h of heads) {
    let dir: Float64Array;
    if (opts.kind === 'mean_diff') {
      const mc = headMean(correct, h);
      const mi = headMean(wrong, h);
      dir = mc.map((x, i) => x - mi[i]);
    } else {
      const { weights, std } = opts.probeWeights!;
      const o = (h.layer * store.heads + h.head) * store.dim;
      dir = Float64Array.from({ length: d }, (_, i) => {
        const s = std ? std[o + i] : 1;
        return s > 0 ? weights[o + i] / s : 0;
      });
    }
    const norm = Math.hypot(...dir);
    if (!(norm > 0) || !Number.isFinite(norm)) {
      throw new Error(`steering: head ${headName(h)} has no ${opts.kind === 'mean_diff' ? 'difference between correct and incorrect means' : 'probe weights'} for function ${JSON.stringify(fn)} (zero direction)`);
    }
    for (let i = 0; i < d; i++) dir[i] /= norm;
    // Projections of fn's examples, then their population std.
    const proj = rows.map((e) => {
      const o = at(store, e.row, h);
      let p = 0;
      for (let i = 0; i < d; i++) p += store.z[o + i] * dir[i];
      return p;
    });
    const m = proj.reduce((a, b) => a + b, 0) / proj.length;
    const sigma = Math.sqrt(proj.reduce((a, p) => a + (p - m) ** 2, 0) / proj.length);
    out.set(headKey(h), { direction: Float32Array.from(dir), sigma });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Intervention specs

export type AblationMode = 'scale' | 'mean_ablate' | 'steer';
export const ABLATION_MODES: readonly AblationMode[] = ['scale', 'mean_ablate', 'steer'];
/** CogVision's emphasis strength. */
export const DEFAULT_STEER_ALPHA = 0.1;
export const DEFAULT_ABLATION_SEEDS = 5;

export interface BuildInterventionOptions {
  /** Mode "scale": the factor on z_h (default 0: ablation; 0.001 is CogVision's masking). */
  epsilon?: number;
  /** Mode "steer": the strength (default 0.1). */
  alpha?: number;
  /** Mode "mean_ablate": vectors by "layer:head" (meanVectors). */
  means?: ReadonlyMap<string, ArrayLike<number>>;
  /** Mode "steer": direction and sigma by "layer:head" (steeringDirections). */
  directions?: ReadonlyMap<string, SteeringDirection>;
  /** Default "text". */
  tower?: Tower;
  /** Mode "steer": the rows steered (default "all"). */
  queries?: QueryScope;
}

/** The InterventionSpec that applies `mode` to `heads`, validated by parseInterventions against the model's dims. */
export function buildIntervention(mode: AblationMode, heads: readonly HeadRef[], opts: BuildInterventionOptions, dims: ModelDims): InterventionSpec {
  const tower = opts.tower ?? 'text';
  const seen = new Set<string>();
  for (const h of heads) {
    if (seen.has(headKey(h))) throw new Error(`buildIntervention: head ${headName(h)} is listed twice`);
    seen.add(headKey(h));
  }
  const base = (h: HeadRef) => ({ tower, layer: h.layer, head: h.head });
  let json: Record<string, unknown>;
  if (mode === 'scale') {
    json = { head_scale: heads.map((h) => ({ ...base(h), scale: opts.epsilon ?? 0 })) };
  } else if (mode === 'mean_ablate') {
    json = {
      mean_ablate: heads.map((h) => {
        const mean = opts.means?.get(headKey(h));
        if (!mean) throw new Error(`buildIntervention: no mean vector for head ${headName(h)}`);
        return { ...base(h), mean };
      }),
    };
  } else if (mode === 'steer') {
    json = {
      steer: heads.map((h) => {
        const s = opts.directions?.get(headKey(h));
        if (!s) throw new Error(`buildIntervention: no steering direction for head ${headName(h)}`);
        return { ...base(h), alpha: opts.alpha ?? DEFAULT_STEER_ALPHA, sigma: s.sigma, direction: s.direction, queries: opts.queries ?? 'all' };
      }),
    };
  } else {
    throw new Error(`buildIntervention: mode must be one of ${ABLATION_MODES.join(', ')}, got ${JSON.stringify(mode)}`);
  }
  return parseInterventions(json, dims, `${mode} intervention`);
}

// ---------------------------------------------------------------------------------------------------------------
// Statistics

const LANCZOS = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905, -0.13857109526572012,
  9.9843695780195716e-6, 1.5056327351493116e-7,
];

/** ln Gamma(x) for x > 0 (Lanczos, g = 7; about 15 significant digits). */
export function logGamma(x: number): number {
  if (!(x > 0)) throw new Error(`logGamma: x must be > 0, got ${x}`);
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  const y = x - 1;
  let a = LANCZOS[0];
  const t = y + 7.5;
  for (let i = 1; i < 9; i++) a += LANCZOS[i] / (y + i);
  return 0.5 * Math.log(2 * Math.PI) + (y + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Continued fraction of the incomplete beta function (modified Lentz). */
function betaContinuedFraction(x: number, a: number, b: number): number {
  const tiny = 1e-300;
  const eps = 1e-16;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let f = d;
  for (let m = 1; m <= 1000; m++) {
    const m2 = 2 * m;
    // even step
    let num = (m * (b - m) * x) / ((a + m2 - 1) * (a + m2));
    d = 1 + num * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + num / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    f *= d * c;
    // odd step
    num = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1));
    d = 1 + num * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + num / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const delta = d * c;
    f *= delta;
    if (Math.abs(delta - 1) < eps) return f;
  }
  return f;
}

/** The regularised incomplete beta function I_x(a, b), x in [0, 1], a, b > 0. */
export function regularizedIncompleteBeta(x: number, a: number, b: number): number {
  if (!(a > 0) || !(b > 0)) throw new Error(`regularizedIncompleteBeta: a and b must be > 0, got a = ${a}, b = ${b}`);
  if (Number.isNaN(x) || x < 0 || x > 1) throw new Error(`regularizedIncompleteBeta: x must be in [0, 1], got ${x}`);
  if (x === 0) return 0;
  if (x === 1) return 1;
  const lnFront = logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log1p(-x);
  const front = Math.exp(lnFront);
  // The continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) otherwise.
  if (x < (a + 1) / (a + b + 2)) return (front * betaContinuedFraction(x, a, b)) / a;
  return 1 - (front * betaContinuedFraction(1 - x, b, a)) / b;
}

/** Two-sided p-value P(|T| >= |t|) of Student's t distribution with df degrees of freedom (df > 0, not necessarily an integer). */
export function studentTwoSidedP(t: number, df: number): number {
  if (Number.isNaN(t) || Number.isNaN(df)) return NaN;
  if (!(df > 0)) throw new Error(`studentTwoSidedP: df must be > 0, got ${df}`);
  if (!Number.isFinite(t)) return 0;
  if (t === 0) return 1;
  if (!Number.isFinite(df)) return 2 * normalUpperTail(Math.abs(t));
  return Math.min(1, regularizedIncompleteBeta(df / (df + t * t), df / 2, 0.5));
}

/** P(Z >= z) of the standard normal (for infinite df), via erfc (Numerical Recipes' Chebyshev fit, |err| < 1.2e-7). */
function normalUpperTail(z: number): number {
  const x = z / Math.SQRT2;
  const t = 1 / (1 + 0.5 * Math.abs(x));
  const y =
    t *
    Math.exp(
      -x * x - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return (x >= 0 ? y : 2 - y) / 2;
}

export const sampleMean = (xs: readonly number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

/** Sample std (n - 1 in the denominator); NaN for fewer than 2 values. */
export function sampleStd(xs: readonly number[]): number {
  if (xs.length < 2) return NaN;
  const m = sampleMean(xs);
  return Math.sqrt(xs.reduce((a, x) => a + (x - m) ** 2, 0) / (xs.length - 1));
}

export interface TTestResult {
  /** (mean(a) - mean(b)) / standard error. */
  t: number;
  /** Welch-Satterthwaite degrees of freedom (n_b - 1 in the one-sample case). */
  df: number;
  /** Two-sided p-value from the Student t distribution. */
  p: number;
  /** "one_sample": a (or b) is a single value, tested against the other sample's mean; "welch": two samples. */
  method: 'one_sample' | 'welch';
}

/**
 * Welch's t-test of mean(a) - mean(b). A sample of one value counts as a constant (variance 0), which makes this
 * the one-sample t-test of the other sample's mean against it (see the file comment for degenerate cases).
 */
export function welchTTest(a: readonly number[], b: readonly number[]): TTestResult {
  if (a.length === 0 || b.length === 0) throw new Error('welchTTest: both samples need at least one value');
  const method = a.length === 1 || b.length === 1 ? 'one_sample' : 'welch';
  const na = a.length;
  const nb = b.length;
  const va = na > 1 ? sampleStd(a) ** 2 / na : 0;
  const vb = nb > 1 ? sampleStd(b) ** 2 / nb : 0;
  const diff = sampleMean(a) - sampleMean(b);
  if (na < 2 && nb < 2) return { t: NaN, df: NaN, p: NaN, method };
  const se2 = va + vb;
  if (se2 === 0) {
    const df = Math.max(1, (na - 1) + (nb - 1));
    return diff === 0 ? { t: 0, df, p: 1, method } : { t: diff > 0 ? Infinity : -Infinity, df, p: 0, method };
  }
  let den = 0;
  if (na > 1) den += va ** 2 / (na - 1);
  if (nb > 1) den += vb ** 2 / (nb - 1);
  const df = (se2 * se2) / den;
  const t = diff / Math.sqrt(se2);
  return { t, df, p: studentTwoSidedP(t, df), method };
}

// ---------------------------------------------------------------------------------------------------------------
// Probes (the ranking of `vlmscope probe`)

export interface FunctionHeads {
  function: string;
  /** Every head, best first (at least k of them). */
  ranking: HeadRef[];
  /** The function's selected (functional) heads. */
  top: HeadRef[];
}

/** The rankings the experiments read: rankHeads' HeadRanking fits, as does probesFromJson's result. */
export interface AblationProbes {
  tower?: Tower | null;
  /** Grid size (default: the model's tower). */
  layers?: number;
  heads?: number;
  functions: readonly FunctionHeads[];
}

/** probes.json as `vlmscope probe` writes it ({tower, layers, heads, functions: {name: {ranking, top, ...}}}) -> AblationProbes. */
export function probesFromJson(json: unknown, source = 'probes.json'): AblationProbes {
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new Error(`${source} must hold a JSON object`);
  const o = json as Record<string, unknown>;
  const dim = (k: 'layers' | 'heads') => {
    const v = o[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new Error(`${source}: "${k}" is ${JSON.stringify(v)}, expected a positive integer`);
    return v;
  };
  const layers = dim('layers');
  const heads = dim('heads');
  let tower: Tower | null = null;
  if (o.tower !== undefined && o.tower !== null) {
    if (o.tower !== 'text' && o.tower !== 'vision') throw new Error(`${source}: "tower" is ${JSON.stringify(o.tower)}, expected "text" or "vision"`);
    tower = o.tower;
  }
  const fns = o.functions;
  if (!fns || typeof fns !== 'object' || Array.isArray(fns) || Object.keys(fns).length === 0) {
    throw new Error(`${source}: "functions" must be a non-empty object of function name -> {ranking, top}`);
  }
  const headList = (v: unknown, where: string): HeadRef[] => {
    if (!Array.isArray(v)) throw new Error(`${where} must be a list of {layer, head}`);
    return v.map((x, i) => {
      const e = x as Record<string, unknown> | null;
      const l = e?.layer;
      const h = e?.head;
      if (typeof l !== 'number' || typeof h !== 'number' || !Number.isInteger(l) || !Number.isInteger(h) || l < 0 || l >= layers || h < 0 || h >= heads) {
        throw new Error(`${where}[${i}] is ${JSON.stringify(x)}, expected {"layer": 0..${layers - 1}, "head": 0..${heads - 1}}`);
      }
      return { layer: l, head: h };
    });
  };
  const functions = Object.entries(fns as Record<string, unknown>).map(([name, v]) => {
    const where = `${source}: functions[${JSON.stringify(name)}]`;
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${where} must be an object with "ranking" and "top"`);
    const f = v as Record<string, unknown>;
    const ranking = headList(f.ranking, `${where}.ranking`);
    const top = headList(f.top, `${where}.top`);
    if (top.length === 0) throw new Error(`${where}.top is empty`);
    return { function: name, ranking, top };
  });
  return { tower, layers, heads, functions };
}

// ---------------------------------------------------------------------------------------------------------------
// The experiment

export interface AccuracyBreakdown {
  overall: Accuracy;
  byFunction: Record<string, Accuracy>;
}

export interface AblationRun {
  /** The heads intervened on. */
  heads: HeadRef[];
  /** For random-k runs: the seed of the draw (randomHeads(k, excluded, layers, heads, seed)). */
  seed?: number;
  accuracy: AccuracyBreakdown;
}

export interface AblationComparison {
  /** Accuracy (in [0, 1]) with no intervention. */
  baseline: number;
  /** With the function's top-k heads intervened on. */
  top: number;
  /** With k random heads, one value per seed. */
  random: number[];
  randomMean: number;
  /** Sample std (n - 1); NaN for one seed. */
  randomStd: number;
  /** welchTTest([top], random). */
  test: TTestResult;
}

export interface AblationTarget {
  function: string;
  k: number;
  /** Heads no random draw may take: the top-k heads and the function's selected heads. */
  excluded: HeadRef[];
  top: AblationRun;
  random: AblationRun[];
  /** The target function's own accuracy. */
  target: AblationComparison;
  overall: AblationComparison;
  /** Every function of the questions, the target included. */
  byFunction: Record<string, AblationComparison>;
}

/** The settings of an experiment, as planned and as reported. */
export interface AblationSettings {
  mode: AblationMode;
  tower: Tower;
  epsilon: number;
  alpha: number;
  queries: QueryScope;
  direction: DirectionKind;
  seeds: number[];
}

export interface AblationResult extends AblationSettings {
  /** Questions evaluated per run. */
  questions: number;
  baseline: AccuracyBreakdown;
  targets: AblationTarget[];
}

export interface AblationProgress {
  /** Runs finished before this one (0-based index of the current run) and the total. */
  run: number;
  runs: number;
  /** "baseline", "top-k <fn>" or "random-k <fn> seed <s>". */
  label: string;
  /** Questions done in this run, of total, and how many right. */
  done: number;
  total: number;
  correct: number;
}

export interface AblationOptions {
  probes: AblationProbes;
  /** Target functions (default: every function of the probes that has questions). */
  functions?: readonly string[];
  /** Heads per intervention (default: the size of each function's top set). */
  k?: number;
  /** Default "scale". */
  mode?: AblationMode;
  /** Mode "scale" (default 0). */
  epsilon?: number;
  /** Mode "steer" (default 0.1). */
  alpha?: number;
  /** Mode "steer": rows steered (default "all"). */
  queries?: QueryScope;
  /** Random-k draws, seeds 0..seeds-1 (default 5). */
  seeds?: number;
  /** Activations (vlmscope collect) for mean_ablate and steer. */
  store?: AblationStoreInput;
  /** Mode "steer": direction kind (default "mean_diff"). */
  direction?: DirectionKind;
  /** Mode "steer" with direction "probe": probe weights per function. */
  probeWeights?: Readonly<Record<string, ProbeWeights>>;
  /** Tower of the heads (default probes.tower, else "text"). */
  tower?: Tower;
  /** Evaluate only the first `limit` questions. */
  limit?: number;
  maxNewTokens?: number;
  eosTokenIds?: number[];
  onProgress?: (p: AblationProgress) => void;
  /** The scorer (default evaluate; tests pass a stand-in). */
  evaluate?: (model: VlmModel, tokenizer: Tokenizer, items: EvalItem[], opts: EvalOptions) => Promise<EvalReport>;
}

const breakdown = (r: EvalReport): AccuracyBreakdown => ({ overall: { total: r.total, correct: r.correct, accuracy: r.accuracy }, byFunction: r.byFunction });

function compare(baseline: AccuracyBreakdown, top: AccuracyBreakdown, random: AccuracyBreakdown[], pick: (b: AccuracyBreakdown) => Accuracy | undefined): AblationComparison {
  const acc = (b: AccuracyBreakdown) => pick(b)?.accuracy ?? NaN;
  const r = random.map(acc);
  return {
    baseline: acc(baseline),
    top: acc(top),
    random: r,
    randomMean: sampleMean(r),
    randomStd: sampleStd(r),
    test: welchTTest([acc(top)], r),
  };
}

/** One intervention run of a plan. */
export interface PlannedRun {
  /** "top-k <fn>" or "random-k <fn> seed <s>". */
  label: string;
  heads: HeadRef[];
  seed?: number;
  spec: InterventionSpec;
}

export interface PlannedTarget {
  function: string;
  k: number;
  excluded: HeadRef[];
  top: PlannedRun;
  random: PlannedRun[];
}

/** Everything runAblation will run, with every intervention spec built and checked (planAblation). */
export interface AblationPlan extends AblationSettings {
  /** The questions of every run (after limit). */
  questions: EvalItem[];
  targets: PlannedTarget[];
}

/**
 * Checks the options against the model's dims and the questions and plans the experiment: the target functions,
 * their top-k heads, the random draws (randomHeads(k, excluded, layers, heads, seed) for seeds 0..seeds-1, the
 * excluded heads being the top-k and the function's selected heads) and every intervention spec (means and
 * steering directions from the store). Needs no GPU: errors here are mistakes in the inputs.
 */
export function planAblation(dims: ModelDims, items: readonly EvalItem[], opts: AblationOptions): AblationPlan {
  const mode = opts.mode ?? 'scale';
  if (!ABLATION_MODES.includes(mode)) throw new Error(`mode must be one of ${ABLATION_MODES.join(', ')}, got ${JSON.stringify(mode)}`);
  const epsilon = opts.epsilon ?? 0;
  if (!Number.isFinite(epsilon)) throw new Error(`epsilon must be a finite number, got ${epsilon}`);
  const alpha = opts.alpha ?? DEFAULT_STEER_ALPHA;
  if (!Number.isFinite(alpha)) throw new Error(`alpha must be a finite number, got ${alpha}`);
  const queries = opts.queries ?? 'all';
  const directionKind = opts.direction ?? 'mean_diff';
  if (directionKind !== 'mean_diff' && directionKind !== 'probe') throw new Error(`direction must be "mean_diff" or "probe", got ${JSON.stringify(directionKind)}`);
  const nSeeds = opts.seeds ?? DEFAULT_ABLATION_SEEDS;
  if (!Number.isInteger(nSeeds) || nSeeds < 1) throw new Error(`seeds must be a positive integer, got ${nSeeds}`);
  const seeds = Array.from({ length: nSeeds }, (_, i) => i);
  if (opts.limit !== undefined && (!Number.isInteger(opts.limit) || opts.limit < 0)) throw new Error(`limit must be a non-negative integer, got ${opts.limit}`);
  const questions = opts.limit !== undefined ? items.slice(0, opts.limit) : [...items];
  if (questions.length === 0) throw new Error('there are no questions to evaluate');

  const tower: Tower = opts.tower ?? opts.probes.tower ?? 'text';
  const { layers, heads, headDim } = dims[tower];
  if ((opts.probes.layers !== undefined && opts.probes.layers !== layers) || (opts.probes.heads !== undefined && opts.probes.heads !== heads)) {
    throw new Error(
      `the probes rank ${opts.probes.layers ?? '?'} layers x ${opts.probes.heads ?? '?'} heads, but the model's ${tower} tower has ${layers} x ${heads}; ` +
        'were they fitted on activations of this model?',
    );
  }
  const byName = new Map(opts.probes.functions.map((f) => [f.function, f]));
  const inData = new Set(questions.map((q) => q.function as string));
  let targets: string[];
  if (opts.functions) {
    targets = [...new Set(opts.functions)];
    if (targets.length === 0) throw new Error('functions is empty');
    for (const f of targets) {
      if (!byName.has(f)) throw new Error(`function ${JSON.stringify(f)} is not in the probes (they rank ${[...byName.keys()].join(', ')})`);
      if (!inData.has(f)) throw new Error(`function ${JSON.stringify(f)} has no questions to measure it on (the questions cover ${[...inData].sort().join(', ')})`);
    }
  } else {
    targets = [...byName.keys()].filter((f) => inData.has(f));
    if (targets.length === 0) {
      throw new Error(`none of the probed functions (${[...byName.keys()].join(', ')}) has questions (the questions cover ${[...inData].sort().join(', ')})`);
    }
  }
  if (opts.k !== undefined && (!Number.isInteger(opts.k) || opts.k < 1)) throw new Error(`k must be a positive integer, got ${opts.k}`);
  const store = opts.store ? asStore(opts.store) : undefined;
  if ((mode === 'mean_ablate' || mode === 'steer') && !store) throw new Error(`mode ${mode} needs an activation store (store) for its vectors`);
  if (store && (mode === 'mean_ablate' || mode === 'steer') && (store.layers !== layers || store.heads !== heads)) {
    throw new Error(`the activation store holds ${store.layers} layers x ${store.heads} heads, but the model's ${tower} tower has ${layers} x ${heads}`);
  }
  const means = mode === 'mean_ablate' ? meanVectors(store!, allHeads(layers, heads), { headDim }) : undefined;

  const specFor = (fn: string, hs: HeadRef[]): InterventionSpec => {
    let directions: Map<string, SteeringDirection> | undefined;
    if (mode === 'steer') {
      const probeWeights = directionKind === 'probe' ? opts.probeWeights?.[fn] : undefined;
      if (directionKind === 'probe' && !probeWeights) throw new Error(`direction "probe" needs probe weights for function ${JSON.stringify(fn)}`);
      directions = steeringDirections(store!, fn, hs, { kind: directionKind, probeWeights, headDim });
    }
    return buildIntervention(mode, hs, { epsilon, alpha, means, directions, tower, queries }, dims);
  };
  const planned: PlannedTarget[] = [];
  for (const fn of targets) {
    const fh = byName.get(fn)!;
    const k = opts.k ?? fh.top.length;
    if (fh.ranking.length < k) throw new Error(`function ${JSON.stringify(fn)}: the ranking holds ${fh.ranking.length} heads, fewer than k = ${k}`);
    const top = (opts.k !== undefined ? fh.ranking.slice(0, k) : fh.top).map(({ layer, head }) => ({ layer, head }));
    for (const h of [...top, ...fh.top]) {
      if (!Number.isInteger(h.layer) || !Number.isInteger(h.head) || h.layer < 0 || h.layer >= layers || h.head < 0 || h.head >= heads) {
        throw new Error(`function ${JSON.stringify(fn)}: head ${headName(h)} is outside the ${tower} tower (${layers} layers x ${heads} heads)`);
      }
    }
    const exclude = new Map<string, HeadRef>();
    for (const h of [...top, ...fh.top]) exclude.set(headKey(h), { layer: h.layer, head: h.head });
    if (layers * heads - exclude.size < k) {
      throw new Error(
        `function ${JSON.stringify(fn)}: k = ${k} random heads cannot be drawn from the ${layers * heads - exclude.size} heads outside its ${exclude.size} functional heads; use a smaller k`,
      );
    }
    const excludeKeys = new Set(exclude.keys());
    planned.push({
      function: fn,
      k,
      excluded: [...exclude.values()].sort((a, b) => a.layer - b.layer || a.head - b.head),
      top: { label: `top-k ${fn}`, heads: top, spec: specFor(fn, top) },
      random: seeds.map((seed) => {
        const hs = randomHeads(k, excludeKeys, layers, heads, seed);
        return { label: `random-k ${fn} seed ${seed}`, heads: hs, seed, spec: specFor(fn, hs) };
      }),
    });
  }
  return { mode, tower, epsilon, alpha, queries, direction: directionKind, seeds, questions, targets: planned };
}

export type ExecuteOptions = Pick<AblationOptions, 'maxNewTokens' | 'eosTokenIds' | 'onProgress' | 'evaluate'>;

/** Runs a plan: the baseline, then per target its top-k run and its random-k runs; accuracies and tests as in the file comment. */
export async function executeAblation(model: VlmModel, tokenizer: Tokenizer, plan: AblationPlan, opts: ExecuteOptions = {}): Promise<AblationResult> {
  const runs = 1 + plan.targets.reduce((n, p) => n + 1 + p.random.length, 0);
  const score = opts.evaluate ?? evaluate;
  let run = 0;
  const evalRun = async (label: string, interventions: InterventionSpec | undefined): Promise<AccuracyBreakdown> => {
    const r = await score(model, tokenizer, plan.questions, {
      interventions,
      maxNewTokens: opts.maxNewTokens,
      eosTokenIds: opts.eosTokenIds,
      onProgress: opts.onProgress ? (done, total, correct) => opts.onProgress!({ run, runs, label, done, total, correct }) : undefined,
    });
    run++;
    return breakdown(r);
  };

  const baseline = await evalRun('baseline', undefined);
  const out: AblationTarget[] = [];
  for (const p of plan.targets) {
    const top: AblationRun = { heads: p.top.heads, accuracy: await evalRun(p.top.label, p.top.spec) };
    const random: AblationRun[] = [];
    for (const r of p.random) random.push({ heads: r.heads, seed: r.seed, accuracy: await evalRun(r.label, r.spec) });
    const ra = random.map((r) => r.accuracy);
    const byFunction: Record<string, AblationComparison> = {};
    for (const f of Object.keys(baseline.byFunction)) byFunction[f] = compare(baseline, top.accuracy, ra, (b) => b.byFunction[f]);
    out.push({
      function: p.function,
      k: p.k,
      excluded: p.excluded,
      top,
      random,
      target: byFunction[p.function],
      overall: compare(baseline, top.accuracy, ra, (b) => b.overall),
      byFunction,
    });
  }
  const { questions, targets: _t, ...settings } = plan;
  return { ...settings, questions: questions.length, baseline, targets: out };
}

/**
 * The experiment of the file comment: a baseline run, then per target function one top-k run and `seeds` random-k
 * runs of the same intervention, every run over the same questions; accuracies per function and overall with the
 * random-k mean, sample std and the t-test of the top-k value against them. The whole plan (planAblation) is
 * built and checked before the first question is answered.
 *
 * @example
 * const probes = probesFromJson(JSON.parse(await readFile('probes/probes.json', 'utf8')));
 * const r = await runAblation(model, tokenizer, items, { probes, mode: 'scale', epsilon: 0.001, seeds: 5 });
 * for (const t of r.targets) console.log(t.function, t.target.baseline, t.target.top, t.target.randomMean, t.target.test.p);
 */
export async function runAblation(model: VlmModel, tokenizer: Tokenizer, items: readonly EvalItem[], opts: AblationOptions): Promise<AblationResult> {
  return executeAblation(model, tokenizer, planAblation(model.dims, items, opts), opts);
}

function allHeads(layers: number, heads: number): HeadRef[] {
  const out: HeadRef[] = [];
  for (let l = 0; l < layers; l++) for (let h = 0; h < heads; h++) out.push({ layer: l, head: h });
  return out;
}
