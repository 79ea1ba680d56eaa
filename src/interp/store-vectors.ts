// Per-head vectors read from an activation store (`vlmscope collect`): each head's mean z for mean ablation, and
// steering directions with their sigma for steering. Separate from the intervention specs and the experiment, which
// only consume these vectors; the store is all it reads.

import type { ActivationIndex } from './activation-store.js';
import { type HeadRef, headKey, headName } from './heads.js';

// ---------------------------------------------------------------------------------------------------------------
// The store
//
// A store collected with --concat-layer-mean holds [z; layer mean] per head: only the first head_dim values (the
// head's own z) are used, for means, directions and projections alike.

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

/** The store in the form these functions read (the flat form as it is). */
export function asStore(s: AblationStoreInput): AblationStore {
  if ('index' in s) {
    const { layers, heads, dim, examples, concat_layer_mean } = s.index;
    return { layers, heads, dim, examples, z: s.z, concat_layer_mean };
  }
  return s;
}

function positiveInt(v: number, what: string): void {
  if (!Number.isInteger(v) || v < 1) throw new Error(`${what} must be a positive integer, got ${v}`);
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

// ---------------------------------------------------------------------------------------------------------------
// Mean vectors and steering directions

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
 * "mean_diff" = mean(z | correct) - mean(z | incorrect) (CogVision / Cognitive Mirrors), "probe" = the head's probe
 * weights mapped back to raw features (divided by the standardisation's std when given), both normalised to unit
 * length; sigma is the population std (as numpy's np.std in ITI) of the projections <z_h, direction> over fn's examples.
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
