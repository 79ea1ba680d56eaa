// The float64 math the CPU references (reference-llava.ts, reference-qwen.ts) share: scalar functions and
// activations, row-major linear algebra and norms, rotary, eager attention with the per-head interventions of
// the contract, the Llama-style decoder both families run (LLaVA's Llama, Qwen2's: Llama with q/k/v biases),
// no-cache greedy decoding, and reading a checkpoint into float64 weights. Like the references, it shares only
// the file readers with the engine (checkpoint, f16/bf16 decoding); every number is computed here in float64.

import { Checkpoint, nodeFolder } from '../../src/io/checkpoint.js';
import { decodeToF32 } from '../../src/gpu/half.js';
import type { ImageTemperature, InterventionSpec, QueryScope } from '../../src/spec/spec.js';

// ---------------------------------------------------------------------------------------------------------
// Scalar math

/**
 * erf(x) in float64 from the everywhere-positive series erf(x) = 2/sqrt(pi) e^{-x^2} sum_n (2x^2)^n x / (2n+1)!!,
 * which has no cancellation; |x| >= 6 is +-1 to double precision.
 */
export function erf(x: number): number {
  if (x === 0 || Number.isNaN(x)) return x;
  const ax = Math.abs(x);
  if (ax >= 6) return Math.sign(x);
  const x2 = ax * ax;
  let term = ax;
  let sum = ax;
  for (let n = 1; n < 500; n++) {
    term *= (2 * x2) / (2 * n + 1);
    sum += term;
    if (term < sum * 1e-17) break;
  }
  const r = (2 / Math.sqrt(Math.PI)) * Math.exp(-x2) * sum;
  return x < 0 ? -r : r;
}

export const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
/** Exact (erf) GELU: nn.GELU() / ACT2FN['gelu']. */
export const geluExact = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));

/** Hugging Face ACT2FN entries (activations.py) the LLaVA and Qwen configs use. */
export function activation(name: string): (x: number) => number {
  switch (name) {
    case 'gelu':
      return geluExact;
    case 'gelu_tanh':
    case 'gelu_pytorch_tanh':
    case 'gelu_new':
    case 'gelu_fast':
      return (x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
    case 'quick_gelu':
      return (x) => x * sigmoid(1.702 * x);
    case 'silu':
    case 'swish':
      return (x) => x * sigmoid(x);
    case 'none':
      return (x) => x;
    default:
      throw new Error(`reference: unknown activation ${name}`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Row-major float64 linear algebra

/** y[n, out] = x[n, in] @ W[out, in]^T + b. */
export function linear(x: Float64Array, n: number, inDim: number, w: Float64Array, outDim: number, b: Float64Array | null): Float64Array {
  if (w.length !== outDim * inDim) throw new Error(`reference: weight of ${w.length} values is not [${outDim}, ${inDim}]`);
  if (b && b.length !== outDim) throw new Error(`reference: bias of ${b.length} values is not [${outDim}]`);
  const y = new Float64Array(n * outDim);
  for (let r = 0; r < n; r++) {
    const xo = r * inDim;
    for (let o = 0; o < outDim; o++) {
      const wo = o * inDim;
      let s = 0;
      for (let i = 0; i < inDim; i++) s += x[xo + i] * w[wo + i];
      y[r * outDim + o] = b ? s + b[o] : s;
    }
  }
  return y;
}

/** Lowest index of the largest value; NaN never wins (index 0 when everything is NaN). */
export function argmax(x: ArrayLike<number>): number {
  let best = -1;
  for (let i = 0; i < x.length; i++) {
    if (Number.isNaN(x[i])) continue;
    if (best < 0 || x[i] > x[best]) best = i;
  }
  return Math.max(best, 0);
}

/** torch.nn.LayerNorm: (x - mean) / sqrt(biased var + eps) * w + b over rows of width d. */
export function layerNorm(x: Float64Array, d: number, w: Float64Array, b: Float64Array, eps: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let o = 0; o < x.length; o += d) {
    let mean = 0;
    for (let i = 0; i < d; i++) mean += x[o + i];
    mean /= d;
    let v = 0;
    for (let i = 0; i < d; i++) v += (x[o + i] - mean) ** 2;
    const inv = 1 / Math.sqrt(v / d + eps);
    for (let i = 0; i < d; i++) y[o + i] = (x[o + i] - mean) * inv * w[i] + b[i];
  }
  return y;
}

/** LlamaRMSNorm / Qwen2RMSNorm: w * x / sqrt(mean(x^2) + eps) (no bias, no mean subtraction, weight used as is). */
export function rmsNorm(x: Float64Array, d: number, w: Float64Array, eps: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let o = 0; o < x.length; o += d) {
    let ss = 0;
    for (let i = 0; i < d; i++) ss += x[o + i] * x[o + i];
    const inv = 1 / Math.sqrt(ss / d + eps);
    for (let i = 0; i < d; i++) y[o + i] = x[o + i] * inv * w[i];
  }
  return y;
}

/**
 * float64 act(x Wᵀ + b) + r over the M rows of a row-major [M, K] array, or with `up` the gated MLP's
 * act(x Wᵀ + b) * (x Wuᵀ + bu): what every matmul launcher computes.
 */
export function matmulReference(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  b: ArrayLike<number> | null,
  M: number,
  N: number,
  K: number,
  act: string,
  extra: { r?: ArrayLike<number> | null; up?: { w: ArrayLike<number>; b: ArrayLike<number> | null } } = {},
): Float64Array {
  const f = activation(act);
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let g = b ? b[n] : 0;
      let u = extra.up?.b ? extra.up.b[n] : 0;
      for (let k = 0; k < K; k++) {
        g += x[m * K + k] * w[n * K + k];
        if (extra.up) u += x[m * K + k] * extra.up.w[n * K + k];
      }
      y[m * N + n] = extra.up ? f(g) * u : f(g) + (extra.r ? extra.r[m * N + n] : 0);
    }
  return y;
}

export function addInPlace(a: Float64Array, b: Float64Array): Float64Array {
  for (let i = 0; i < a.length; i++) a[i] += b[i];
  return a;
}

export function mapInPlace(a: Float64Array, f: (x: number) => number): Float64Array {
  for (let i = 0; i < a.length; i++) a[i] = f(a[i]);
  return a;
}

// ---------------------------------------------------------------------------------------------------------
// Rotary

/** HF rotate_half rotary in place on x [n, heads * hd]: pair (j, j + hd/2) turns by angle(r, j), j < hd/2. */
export function rotate(x: Float64Array, n: number, heads: number, hd: number, angle: (r: number, j: number) => number): void {
  const half = hd / 2;
  for (let r = 0; r < n; r++) {
    for (let j = 0; j < half; j++) {
      const a = angle(r, j);
      const c = Math.cos(a);
      const s = Math.sin(a);
      for (let h = 0; h < heads; h++) {
        const o = (r * heads + h) * hd;
        const x1 = x[o + j];
        const x2 = x[o + j + half];
        // x*cos + rotate_half(x)*sin, rotate_half(x) = cat(-x[half:], x[:half])
        x[o + j] = x1 * c - x2 * s;
        x[o + j + half] = x2 * c + x1 * s;
      }
    }
  }
}

/** Rotary inverse frequencies 1 / theta^(2i / dim), i < dim / 2. */
export function ropeInvFreq(dim: number, theta: number): Float64Array {
  const inv = new Float64Array(dim / 2);
  for (let i = 0; i < inv.length; i++) inv[i] = 1 / Math.pow(theta, (2 * i) / dim);
  return inv;
}

// ---------------------------------------------------------------------------------------------------------
// The interventions of the contract, per layer and head

/** mean_ablate and steer of one layer's heads. */
export interface HeadVectors {
  /** mean_ablate: the vector replacing z_h before head_scale (null = untouched). */
  replace: (Float64Array | null)[];
  /** steer: the summed alpha * sigma * direction added after head_scale, and the query rows that get it (null = none). */
  steer: ({ add: Float64Array; row: (r: number) => boolean } | null)[];
  /** patch_z: per head, the vector replacing z_h (before head_scale, in place of the mean) on each patched row. */
  patch?: (Map<number, Float64Array> | null)[];
}

/** head_scale of one tower: [layers][heads] multipliers (1 = untouched; entries for one head multiply). */
export function headScales(spec: InterventionSpec | undefined, tower: 'text' | 'vision', layers: number, heads: number): Float64Array[] {
  const out = Array.from({ length: layers }, () => new Float64Array(heads).fill(1));
  for (const e of spec?.headScale ?? []) if (e.tower === tower) out[e.layer][e.head] *= e.scale;
  return out;
}

/**
 * mean_ablate and steer of one tower, per layer and head: the replacement vector, and the summed steering vector
 * with the query rows of its scope. Rows come from the prompt length P of a forward without cache, as the
 * engine's cached rows saw them (see greedyNoCache): 'all' every row, 'last' row P-1 only, 'generated' rows >= P
 * (none in a prefill-only forward, where P = L).
 */
export function headVectors(spec: InterventionSpec | undefined, tower: 'text' | 'vision', layers: number, heads: number, P: number): HeadVectors[] {
  const out = Array.from({ length: layers }, (): HeadVectors => ({ replace: new Array(heads).fill(null), steer: new Array(heads).fill(null) }));
  for (const e of spec?.meanAblate ?? []) if (e.tower === tower) out[e.layer].replace[e.head] = Float64Array.from(e.mean);
  // patch_z rows are prompt rows: "last" is row P-1, "all" rows 0..P-1, a list its positions (value row j for rows[j]).
  for (const e of spec?.patchZ ?? []) {
    if (e.tower !== tower) continue;
    const hd = e.values.length / (e.rows === 'last' ? 1 : e.rows === 'all' ? P : e.rows.length);
    const rows = e.rows === 'last' ? [P - 1] : e.rows === 'all' ? Array.from({ length: P }, (_, r) => r) : e.rows;
    const patch = (out[e.layer].patch ??= new Array(heads).fill(null));
    const m = (patch[e.head] ??= new Map());
    rows.forEach((r, j) => m.set(r, Float64Array.from(e.values.subarray(j * hd, (j + 1) * hd))));
  }
  for (const e of spec?.steer ?? []) {
    if (e.tower !== tower) continue;
    const row = e.queries === 'all' ? () => true : e.queries === 'last' ? (r: number) => r === P - 1 : (r: number) => r >= P;
    const st = (out[e.layer].steer[e.head] ??= { add: new Float64Array(e.direction.length), row });
    for (let d = 0; d < e.direction.length; d++) st.add[d] += e.alpha * e.sigma * e.direction[d];
  }
  return out;
}

/** No mean_ablate and no steer (vision towers without vectors). */
export const noHeadVectors = (heads: number): HeadVectors => ({ replace: new Array(heads).fill(null), steer: new Array(heads).fill(null) });

/** image_temperature's alpha per head of one text layer (null = the layer is untouched). */
export function temperatureAlphas(it: ImageTemperature | null, layer: number, heads: number): Float64Array | null {
  if (!it || (it.layers && !it.layers.includes(layer))) return null;
  const alphas = new Float64Array(heads).fill(1);
  for (let h = 0; h < heads; h++) if (!it.heads || it.heads.includes(h)) alphas[h] = it.alpha;
  return alphas;
}

/** The rows a prefill over L rows scales under each scope (the engine's temperatureRows for 'prefill'). */
export function defaultTemperatureRows(scope: QueryScope | null, L: number): [number, number] {
  if (scope === 'all') return [0, L];
  if (scope === 'last') return [L - 1, L];
  return [0, 0];
}

// ---------------------------------------------------------------------------------------------------------
// Attention (eager_attention_forward) with the per-head interventions of the contract

export interface AttentionArgs {
  /** [n, heads * hd], [n, kvHeads * hd], [n, kvHeads * hd]; rotary already applied. */
  q: Float64Array;
  k: Float64Array;
  v: Float64Array;
  n: number;
  heads: number;
  kvHeads: number;
  hd: number;
  /** Keys [lo, hi) query row i attends to (causal, all, or its cu_seqlens chunk): masked keys get probability 0 exactly. */
  keys: (i: number) => [number, number];
  /** Per query head: z multiplier (head_scale; 1 = untouched). */
  headScale: Float64Array;
  /** Per query head: mean_ablate and steer. */
  vectors: HeadVectors;
  /** Per query head: alpha on image-key scores (null = none). */
  headAlpha: Float64Array | null;
  /** Key columns that are image tokens. */
  isImageKey: Uint8Array | null;
  /** Query rows that get the temperature. */
  tempRow: ((r: number) => boolean) | null;
  /** Filled with the softmax probabilities [heads, n, n] when given. */
  pattern: Float64Array | null;
  /** Attention knockout: edges (head, query row, key) removed like masked keys (probability 0; all removed: z 0). */
  blocked?: ((h: number, i: number, j: number) => boolean) | null;
}

/** Causal keys: row i sees keys 0..i. */
export const causalKeys = (i: number): [number, number] => [0, i + 1];
/** Every row sees all n keys. */
export const allKeys = (n: number) => (): [number, number] => [0, n];

/** Returns z [n, heads * hd] after mean_ablate, head_scale and steer (exactly what the output projection reads). */
export function attention(a: AttentionArgs): Float64Array {
  const { q, k, v, n, heads: H, kvHeads: KV, hd } = a;
  const nRep = H / KV;
  const scaling = 1 / Math.sqrt(hd); // head_dim ** -0.5 on the scores
  const z = new Float64Array(n * H * hd);
  const p = new Float64Array(n);
  for (let h = 0; h < H; h++) {
    const kvh = Math.floor(h / nRep); // repeat_kv: query head h reads KV head h // n_rep
    const alpha = a.headAlpha ? a.headAlpha[h] : 1;
    for (let i = 0; i < n; i++) {
      const [lo, hi] = a.keys(i);
      const qo = (i * H + h) * hd;
      const temp = alpha !== 1 && a.tempRow !== null && a.tempRow(i);
      let max = -Infinity;
      const cut = a.blocked ?? null;
      for (let j = lo; j < hi; j++) {
        if (cut && cut(h, i, j)) {
          p[j] = -Infinity;
          continue;
        }
        const ko = (j * KV + kvh) * hd;
        let s = 0;
        for (let d = 0; d < hd; d++) s += q[qo + d] * k[ko + d];
        s *= scaling;
        if (temp && a.isImageKey && a.isImageKey[j]) s *= alpha; // before the mask and softmax
        p[j] = s;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let j = lo; j < hi; j++) sum += p[j] = p[j] === -Infinity ? 0 : Math.exp(p[j] - max);
      const zo = (i * H + h) * hd;
      for (let j = lo; j < hi; j++) {
        const pj = sum > 0 ? p[j] / sum : 0;
        if (a.pattern) a.pattern[(h * n + i) * n + j] = pj;
        const vo = (j * KV + kvh) * hd;
        for (let d = 0; d < hd; d++) z[zo + d] += pj * v[vo + d];
      }
      // The contract's order: z' = scale * (patched row ? value : ablated ? m : z) + alpha * sigma * direction.
      const m = a.vectors.replace[h];
      const pv = a.vectors.patch?.[h]?.get(i);
      if (pv) z.set(pv, zo);
      else if (m) z.set(m, zo);
      const sc = a.headScale[h];
      if (sc !== 1) for (let d = 0; d < hd; d++) z[zo + d] *= sc;
      const st = a.vectors.steer[h];
      if (st && st.row(i)) for (let d = 0; d < hd; d++) z[zo + d] += st.add[d];
    }
  }
  return z;
}

// ---------------------------------------------------------------------------------------------------------
// Text side: merged embeddings, the Llama-style decoder, greedy decoding without a KV cache

/**
 * embed_tokens, then masked_scatter of the image features [images * tokens, D] over the image-token rows of the
 * prompt, in order. Ids at positions >= promptLength are generated tokens: plain embeddings even when they are
 * the image id (pixel values reach only the prefill), and not image keys.
 */
export function mergeImageFeatures(
  ids: number[],
  promptLength: number,
  imageTokenId: number,
  embed: Float64Array,
  D: number,
  vocab: number,
  features: Float64Array,
): { h: Float64Array; isImage: Uint8Array } {
  const L = ids.length;
  const nFeat = features.length / D;
  const isImage = new Uint8Array(L);
  const h = new Float64Array(L * D);
  let k = 0;
  for (let r = 0; r < L; r++) {
    const id = ids[r];
    if (id === imageTokenId && r < promptLength) {
      isImage[r] = 1;
      if (k >= nFeat) throw new Error('reference: more image tokens than image features');
      h.set(features.subarray(k * D, (k + 1) * D), r * D);
      k++;
    } else {
      if (!(id >= 0 && id < vocab)) throw new Error(`reference: token id ${id} outside the vocabulary`);
      h.set(embed.subarray(id * D, (id + 1) * D), r * D);
    }
  }
  if (k !== nFeat) throw new Error(`reference: ${k} image tokens for ${nFeat} image features`);
  return { h, isImage };
}

export interface DecoderDims {
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
  eps: number;
}

/** What a forward of either reference takes besides ids and images. */
export interface ReferenceForwardOptions {
  interventions?: InterventionSpec;
  /**
   * Query rows [start, end) of this forward that get the image temperature (when the spec has one). Default:
   * the rows the engine's prefill over this sequence scales: 'all' -> every row, 'last' -> the last row,
   * 'generated' -> none.
   */
  temperatureRows?: [number, number];
  /**
   * Only ids at positions < this are image tokens (default: all). Hugging Face passes the pixels only to the
   * prefill, so an image-token id the model generates is embedded as a plain token (embed_tokens row), and it is
   * not an image key for the temperature either: the greedy re-run passes the prompt length here. It also places
   * the steering scopes: 'last' steers row promptLength-1, 'generated' rows >= promptLength.
   */
  promptLength?: number;
}

export interface DecoderArgs extends ReferenceForwardOptions {
  dims: DecoderDims;
  /** A decoder tensor by its name below the decoder prefix ('layers.0.self_attn.q_proj.weight', 'norm.weight'); throws when absent. */
  weight: (name: string) => Float64Array;
  /** The bias of a projection ('layers.0.self_attn.q_proj.bias'), or null for none. */
  bias: (name: string) => Float64Array | null;
  lmHead: Float64Array;
  act: (x: number) => number;
  /** Rotary in place on q or k [L, heads * hd]. */
  rope: (x: Float64Array, heads: number) => void;
  /** Merged embeddings [L, hidden] (hidden state 0) and the image-token rows (image keys for the temperature). */
  h: Float64Array;
  isImage: Uint8Array;
}

export interface DecoderOutput {
  /** [L, vocab] */
  logits: Float64Array;
  /** Softmax probabilities [heads, L, L] of every text layer. */
  patterns: Map<number, Float64Array>;
  /** Per-head attention outputs after mean_ablate, head_scale and steer (what o_proj reads): [layers, L, heads * hd]. */
  z: Float64Array;
  /** Decoder hidden states, Hugging Face indices 0..layers (0 = merged embeddings, before the final norm): each [L, hidden]. */
  textStates: Float64Array[];
}

/** The Llama / Qwen2 decoder: RMSNorm, GQA attention with rotary, SwiGLU MLP, final RMSNorm and lm_head. */
export function llamaDecoder(a: DecoderArgs): DecoderOutput {
  const { hidden: D, heads: H, kvHeads: KV, headDim: hd, vocab, eps, intermediate: F } = a.dims;
  const L = a.h.length / D;
  const W = a.weight;
  const B = a.bias;
  const spec = a.interventions;
  const it = spec?.imageTemperature ?? null;
  const tr = a.temperatureRows ?? defaultTemperatureRows(it?.queries ?? null, L);
  const tempRow = (r: number) => r >= tr[0] && r < tr[1];
  const scales = headScales(spec, 'text', a.dims.layers, H);
  const vectors = headVectors(spec, 'text', a.dims.layers, H, a.promptLength ?? L);
  let h = a.h;
  const P = a.promptLength ?? L;
  const add = spec?.visionTokenAdd ?? null;
  if (add) {
    // Dual Mechanisms: h + alpha * sum_k (h . w_k) / (|w_k|^2 + 1e-8) w_k on the image-token embeddings.
    h = Float64Array.from(h);
    for (let r = 0; r < L; r++) {
      if (!a.isImage[r]) continue;
      const row = h.subarray(r * D, (r + 1) * D);
      const delta = new Float64Array(D);
      for (const w of add.directions) {
        let dot = 0;
        let n2 = 0;
        for (let d = 0; d < D; d++) ((dot += row[d] * w[d]), (n2 += w[d] * w[d]));
        const c = (add.alpha * dot) / (n2 + 1e-8);
        for (let d = 0; d < D; d++) delta[d] += c * w[d];
      }
      for (let d = 0; d < D; d++) row[d] += delta[d];
    }
  }
  const knock = spec?.knockout ?? [];
  const blockedFor = (l: number) => {
    const entries = knock.filter((k) => !k.layers || k.layers.includes(l));
    if (!entries.length) return null;
    return (hh: number, i: number, j: number) =>
      entries.some((k) => {
        if (k.heads && !k.heads.includes(hh)) return false;
        const q = k.queries;
        const row =
          typeof q === 'string' ? (q === 'all' ? true : q === 'last' ? i === P - 1 : i >= P) : q.positions.includes(i);
        if (!row) return false;
        const kk = k.keys;
        return kk.kind === 'image' ? a.isImage[j] === 1 && j < P : kk.kind === 'range' ? j >= kk.start && j < kk.end : kk.positions.includes(j);
      });
  };
  const textStates = [h];
  const patterns = new Map<number, Float64Array>();
  const zAll = new Float64Array(a.dims.layers * L * H * hd);
  for (let l = 0; l < a.dims.layers; l++) {
    const p = `layers.${l}.`;
    const n1 = rmsNorm(h, D, W(p + 'input_layernorm.weight'), eps);
    const q = linear(n1, L, D, W(p + 'self_attn.q_proj.weight'), H * hd, B(p + 'self_attn.q_proj.bias'));
    const k = linear(n1, L, D, W(p + 'self_attn.k_proj.weight'), KV * hd, B(p + 'self_attn.k_proj.bias'));
    const v = linear(n1, L, D, W(p + 'self_attn.v_proj.weight'), KV * hd, B(p + 'self_attn.v_proj.bias'));
    a.rope(q, H);
    a.rope(k, KV);
    const pattern = new Float64Array(H * L * L);
    const z = attention({
      q, k, v, n: L, heads: H, kvHeads: KV, hd, keys: causalKeys,
      headScale: scales[l], vectors: vectors[l], headAlpha: temperatureAlphas(it, l, H), isImageKey: a.isImage, tempRow, pattern,
      blocked: blockedFor(l),
    });
    patterns.set(l, pattern);
    zAll.set(z, l * L * H * hd);
    const h2 = addInPlace(linear(z, L, H * hd, W(p + 'self_attn.o_proj.weight'), D, B(p + 'self_attn.o_proj.bias')), h);
    const n2 = rmsNorm(h2, D, W(p + 'post_attention_layernorm.weight'), eps);
    const g = linear(n2, L, D, W(p + 'mlp.gate_proj.weight'), F, B(p + 'mlp.gate_proj.bias'));
    const u = linear(n2, L, D, W(p + 'mlp.up_proj.weight'), F, B(p + 'mlp.up_proj.bias'));
    for (let i = 0; i < g.length; i++) g[i] = a.act(g[i]) * u[i];
    h = addInPlace(linear(g, L, F, W(p + 'mlp.down_proj.weight'), D, B(p + 'mlp.down_proj.bias')), h2);
    textStates.push(h);
  }
  const logits = linear(rmsNorm(h, D, W('norm.weight'), eps), L, D, a.lmHead, vocab, null);
  return { logits, patterns, z: zAll, textStates };
}

export interface ReferenceGreedy {
  tokens: number[];
  /** Top-1 minus top-2 logit at each step. */
  margins: number[];
}

/** What one no-cache step passes to the forward. */
export type StepOptions = ReferenceForwardOptions & Required<Pick<ReferenceForwardOptions, 'temperatureRows' | 'promptLength'>>;

/*
 * Greedy decoding without a KV cache: every step re-runs the forward over prompt + generated tokens and takes
 * the argmax of the last row. With the engine's KV cache, each row's keys/values are computed once, in the
 * forward that first saw the row, and later steps reuse them. So a row's hidden states (hence its cached K/V in
 * every layer) carry whatever temperature that row's queries got in that forward; to reproduce the cache, the
 * re-run must scale, in EVERY forward, exactly the rows the engine scaled when it computed them:
 *  - 'all': the engine scales every prefill row and each decode step's new row -> every row, every forward.
 *  - 'last': the engine scales only the last prompt row, in the prefill; decode steps are unscaled. Row
 *    promptLen-1's hidden states at layer l+1 depend on its scaling at layer l, and its cached K/V at layers
 *    > l (which later queries read) carry that; so row promptLen-1 is scaled in every re-run forward, and no
 *    other row.
 *  - 'generated': the prefill is unscaled; each decode step scales its new row (the token generated before
 *    it, at index >= promptLen) -> rows >= promptLen, in every forward. The first generated token comes from
 *    row promptLen-1 of the prefill, which is unscaled, consistently.
 * A generated image-token id is a plain token (pixel values only reach the prefill): see promptLength.
 * Steering scopes follow the same rows, derived in the forward from promptLength: 'last' = row P-1,
 * 'generated' = rows >= P, in every forward.
 */
export function greedyNoCache(
  ids: number[],
  n: number,
  vocab: number,
  interventions: InterventionSpec | undefined,
  logitsOf: (seq: number[], opts: StepOptions) => Float64Array,
): ReferenceGreedy {
  const P = ids.length;
  const seq = ids.slice();
  const tokens: number[] = [];
  const margins: number[] = [];
  const scope = interventions?.imageTemperature?.queries ?? null;
  for (let t = 0; t < n; t++) {
    const L = seq.length;
    const rows: [number, number] = scope === 'all' ? [0, L] : scope === 'last' ? [P - 1, P] : scope === 'generated' ? [P, L] : [0, 0];
    const last = logitsOf(seq, { interventions, temperatureRows: rows, promptLength: P }).subarray((L - 1) * vocab, L * vocab);
    let best = 0;
    for (let i = 1; i < last.length; i++) if (last[i] > last[best]) best = i;
    let second = -Infinity;
    for (let i = 0; i < last.length; i++) if (i !== best && last[i] > second) second = last[i];
    tokens.push(best);
    margins.push(last[best] - second);
    seq.push(best);
  }
  return { tokens, margins };
}

// ---------------------------------------------------------------------------------------------------------
// Weights

export interface Float64Checkpoint<C> {
  cfg: C;
  /** config.json as read. */
  raw: Record<string, unknown>;
  /** Every tensor decoded to float64, by its stored name. */
  weights: Map<string, Float64Array>;
  /** The first of prefix + suffix that is stored; throws (or, with required = false, returns null) when none is. */
  get(prefixes: string[], suffix: string, required?: boolean): Float64Array | null;
}

/** Reads a Hugging Face folder: config.json through `parse` (first, so a bad config fails before any tensor is read), then every tensor as float64. */
export async function readFloat64Checkpoint<C>(dir: string, parse: (raw: Record<string, unknown>) => C): Promise<Float64Checkpoint<C>> {
  const ckpt = await Checkpoint.open(nodeFolder(dir));
  const weights = new Map<string, Float64Array>();
  let cfg: C;
  try {
    cfg = parse(ckpt.config);
    for (const name of ckpt.tensors.keys()) {
      const info = ckpt.info(name);
      weights.set(name, Float64Array.from(decodeToF32(await ckpt.read(name), info.dtype.toLowerCase() as 'f32' | 'f16' | 'bf16')));
    }
  } finally {
    await ckpt.close();
  }
  const get = (prefixes: string[], suffix: string, required = true): Float64Array | null => {
    for (const p of prefixes) {
      const w = weights.get(p + suffix);
      if (w) return w;
    }
    if (required) throw new Error(`reference: no tensor ${prefixes[0]}${suffix} in ${dir}`);
    return null;
  };
  return { cfg, raw: ckpt.config, weights, get };
}
