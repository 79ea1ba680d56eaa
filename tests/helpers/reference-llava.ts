// An independent float64 CPU reference of the Hugging Face LLaVA-1.5 forward (LlavaForConditionalGeneration
// with a CLIP vision tower and a Llama decoder), written straight from ../../../shared/docs/model-specs.md §1-§2
// and the intervention contract in ../../../shared/docs/interventions.md. It shares only the file readers with
// the engine (checkpoint, config.json parser, f16/bf16 decoding); every number is computed here in float64
// from the weights as stored, with no KV cache, so it can judge the GPU engine (and its cache) across configs.

import { Checkpoint, nodeFolder } from '../../src/io/checkpoint.js';
import { type LlavaConfig, parseLlavaConfig } from '../../src/models/config.js';
import { decodeToF32 } from '../../src/gpu/half.js';
import type { InterventionSpec, QueryScope } from '../../src/spec/spec.js';

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

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/** Hugging Face ACT2FN entries the LLaVA configs use (activations.py). */
export function activation(name: string): (x: number) => number {
  switch (name) {
    case 'gelu':
      return (x) => 0.5 * x * (1 + erf(x / Math.SQRT2));
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
function linear(x: Float64Array, n: number, inDim: number, w: Float64Array, outDim: number, b: Float64Array | null): Float64Array {
  if (w.length !== outDim * inDim) throw new Error(`reference: weight of ${w.length} values is not [${outDim}, ${inDim}]`);
  const y = new Float64Array(n * outDim);
  for (let r = 0; r < n; r++) {
    const xo = r * inDim;
    for (let o = 0; o < outDim; o++) {
      const wo = o * inDim;
      let s = b ? b[o] : 0;
      for (let i = 0; i < inDim; i++) s += x[xo + i] * w[wo + i];
      y[r * outDim + o] = s;
    }
  }
  return y;
}

/** torch.nn.LayerNorm: (x - mean) / sqrt(biased var + eps) * w + b over rows of width d. */
function layerNorm(x: Float64Array, d: number, w: Float64Array, b: Float64Array, eps: number): Float64Array {
  const n = x.length / d;
  const y = new Float64Array(x.length);
  for (let r = 0; r < n; r++) {
    const o = r * d;
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

/** LlamaRMSNorm: w * x / sqrt(mean(x^2) + eps) (no bias, no mean subtraction, weight used as is). */
function rmsNorm(x: Float64Array, d: number, w: Float64Array, eps: number): Float64Array {
  const n = x.length / d;
  const y = new Float64Array(x.length);
  for (let r = 0; r < n; r++) {
    const o = r * d;
    let ss = 0;
    for (let i = 0; i < d; i++) ss += x[o + i] * x[o + i];
    const inv = 1 / Math.sqrt(ss / d + eps);
    for (let i = 0; i < d; i++) y[o + i] = x[o + i] * inv * w[i];
  }
  return y;
}

function addInPlace(a: Float64Array, b: Float64Array): Float64Array {
  for (let i = 0; i < a.length; i++) a[i] += b[i];
  return a;
}

function mapInPlace(a: Float64Array, f: (x: number) => number): Float64Array {
  for (let i = 0; i < a.length; i++) a[i] = f(a[i]);
  return a;
}

// ---------------------------------------------------------------------------------------------------------
// Attention (eager_attention_forward, §1.4) with the per-head interventions of the contract

interface AttentionArgs {
  /** [n, heads * hd], [n, kvHeads * hd], [n, kvHeads * hd]; rotary already applied for the decoder. */
  q: Float64Array;
  k: Float64Array;
  v: Float64Array;
  n: number;
  heads: number;
  kvHeads: number;
  hd: number;
  causal: boolean;
  /** Per query head: z multiplier (head_scale; 1 = untouched). */
  headScale: Float64Array;
  /** Per query head: mean_ablate, the vector that replaces z_h before head_scale (null = untouched). */
  replace?: (Float64Array | null)[];
  /** Per query head: steer, the vector added to z_h after head_scale and the query rows that get it (null = none). */
  steer?: ({ add: Float64Array; row: (row: number) => boolean } | null)[];
  /** Per query head: alpha on image-key scores (1 = untouched). */
  headAlpha: Float64Array | null;
  /** Key columns that are image tokens. */
  isImageKey: Uint8Array | null;
  /** Query rows that get the temperature. */
  tempRow: ((row: number) => boolean) | null;
  /** Filled with the softmax probabilities [heads, n, n] when given. */
  pattern: Float64Array | null;
}

/** Returns z [n, heads * hd] (after mean_ablate, head_scale and steer, i.e. exactly what o_proj reads). */
function attention(a: AttentionArgs): Float64Array {
  const { q, k, v, n, heads: H, kvHeads: KV, hd } = a;
  const nRep = H / KV;
  const scaling = 1 / Math.sqrt(hd); // head_dim ** -0.5 on the scores
  const z = new Float64Array(n * H * hd);
  const scores = new Float64Array(n);
  for (let h = 0; h < H; h++) {
    const kvh = Math.floor(h / nRep); // repeat_kv: contiguous groups
    const alpha = a.headAlpha ? a.headAlpha[h] : 1;
    for (let i = 0; i < n; i++) {
      const qo = (i * H + h) * hd;
      const nk = a.causal ? i + 1 : n; // masked keys get exp(dtype.min - max) = 0 exactly
      const tempHere = alpha !== 1 && a.tempRow !== null && a.tempRow(i);
      let max = -Infinity;
      for (let j = 0; j < nk; j++) {
        const ko = (j * KV + kvh) * hd;
        let s = 0;
        for (let d = 0; d < hd; d++) s += q[qo + d] * k[ko + d];
        s *= scaling;
        if (tempHere && a.isImageKey && a.isImageKey[j]) s *= alpha;
        scores[j] = s;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let j = 0; j < nk; j++) {
        scores[j] = Math.exp(scores[j] - max);
        sum += scores[j];
      }
      for (let j = 0; j < nk; j++) scores[j] /= sum;
      if (a.pattern) {
        const po = (h * n + i) * n;
        for (let j = 0; j < nk; j++) a.pattern[po + j] = scores[j];
      }
      const zo = (i * H + h) * hd;
      for (let j = 0; j < nk; j++) {
        const p = scores[j];
        const vo = (j * KV + kvh) * hd;
        for (let d = 0; d < hd; d++) z[zo + d] += p * v[vo + d];
      }
      // The contract's order: z' = scale * (ablated ? m : z) + alpha * sigma * direction.
      const m = a.replace?.[h];
      if (m) for (let d = 0; d < hd; d++) z[zo + d] = m[d];
      const sc = a.headScale[h];
      if (sc !== 1) for (let d = 0; d < hd; d++) z[zo + d] *= sc;
      const st = a.steer?.[h];
      if (st && st.row(i)) for (let d = 0; d < hd; d++) z[zo + d] += st.add[d];
    }
  }
  return z;
}

/** HF rotate_half RoPE (§1.5) in place on x [n, heads * hd], row r at position r. */
function applyRope(x: Float64Array, n: number, heads: number, hd: number, invFreq: Float64Array): void {
  const half = hd / 2;
  for (let r = 0; r < n; r++) {
    for (let j = 0; j < half; j++) {
      const ang = r * invFreq[j];
      const c = Math.cos(ang);
      const s = Math.sin(ang);
      for (let h = 0; h < heads; h++) {
        const o = (r * heads + h) * hd;
        const x1 = x[o + j];
        const x2 = x[o + j + half];
        // q*cos + rotate_half(q)*sin with rotate_half(q) = cat(-q[half:], q[:half])
        x[o + j] = x1 * c - x2 * s;
        x[o + j + half] = x2 * c + x1 * s;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// The model

export interface ReferenceForwardOptions {
  interventions?: InterventionSpec;
  /**
   * Query rows [start, end) of this forward that get the image temperature (when the spec has one). Default:
   * the rows the engine's prefill over this sequence scales: 'all' -> every row, 'last' -> the last row,
   * 'generated' -> none.
   */
  temperatureRows?: [number, number];
  /**
   * Only ids at positions < this are image tokens (default: all). Hugging Face passes pixel_values only to the
   * prefill, so an image-token id the model generates is embedded as a plain token (embed_tokens row), and it is
   * not an image key for the temperature either: the greedy re-run passes the prompt length here. It also places
   * the steering scopes: 'last' steers row promptLength-1, 'generated' rows >= promptLength.
   */
  promptLength?: number;
}

export interface ReferenceOutput {
  /** [L, vocab] */
  logits: Float64Array;
  /** Softmax probabilities [heads, L, L] of every text layer. */
  patterns: Map<number, Float64Array>;
  /** Per-head attention outputs after mean_ablate, head_scale and steer (what o_proj reads): [layers, L, heads * hd]. */
  z: Float64Array;
  /** Projector outputs of all images in order: [images * tokensPerImage, text hidden]. */
  imageFeatures: Float64Array;
  /** CLIP hidden states per image, Hugging Face indices 0..layers: each [visionTokens, vision hidden]. */
  visionStates: Float64Array[][];
  /** Decoder hidden states, Hugging Face indices 0..layers (0 = merged embeddings, before the final norm): each [L, hidden]. */
  textStates: Float64Array[];
}

export interface ReferenceGreedy {
  tokens: number[];
  /** Top-1 minus top-2 logit at each step. */
  margins: number[];
}

export interface ReferenceLlava {
  cfg: LlavaConfig;
  /** Image tokens per image. */
  imageTokens: number;
  /** CLIP tokens (patches + CLS). */
  visionTokens: number;
  forward(ids: number[], pixelValues: Float32Array[], opts?: ReferenceForwardOptions): ReferenceOutput;
  greedy(ids: number[], pixelValues: Float32Array[], n: number, interventions?: InterventionSpec): ReferenceGreedy;
}

const VISION_PREFIXES = ['vision_tower.vision_model.', 'model.vision_tower.vision_model.'];
const PROJECTOR_PREFIXES = ['multi_modal_projector.', 'model.multi_modal_projector.'];
const TEXT_PREFIXES = ['language_model.model.', 'model.language_model.', 'language_model.'];
const LM_HEAD_NAMES = ['language_model.lm_head.weight', 'lm_head.weight'];

/** hidden_states indices of vision_feature_layer, resolved against the raw config (negative from the end). */
function featureStates(raw: unknown, layers: number): number[] {
  const list = raw === undefined || raw === null ? [-2] : Array.isArray(raw) ? raw : [raw];
  return list.map((l) => {
    const idx = (l as number) < 0 ? layers + 1 + (l as number) : (l as number);
    if (!Number.isInteger(idx) || idx < 0 || idx > layers) throw new Error(`reference: vision_feature_layer ${l} out of range`);
    return idx;
  });
}

/** Read a Hugging Face LLaVA folder into float64 weights and return the reference model. */
export async function referenceLlava(dir: string): Promise<ReferenceLlava> {
  const ckpt = await Checkpoint.open(nodeFolder(dir));
  const weights = new Map<string, Float64Array>();
  let cfg: LlavaConfig;
  let rawFeatureLayer: unknown;
  let strategy: 'default' | 'full';
  try {
    cfg = parseLlavaConfig(ckpt.config);
    rawFeatureLayer = ckpt.config.vision_feature_layer;
    strategy = ((ckpt.config.vision_feature_select_strategy as string | undefined) ?? 'default') as 'default' | 'full';
    for (const name of ckpt.tensors.keys()) {
      const info = ckpt.info(name);
      const f32 = decodeToF32(await ckpt.read(name), info.dtype.toLowerCase() as 'f32' | 'f16' | 'bf16');
      weights.set(name, Float64Array.from(f32));
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
  const V = (s: string) => get(VISION_PREFIXES, s)!;
  const T = (s: string) => get(TEXT_PREFIXES, s)!;
  const Topt = (s: string) => get(TEXT_PREFIXES, s, false);

  const vc = cfg.vision;
  const tc = cfg.text;
  const grid = vc.imageSize / vc.patchSize;
  const nPatches = grid * grid;
  const visionTokens = nPatches + 1;
  const states = featureStates(rawFeatureLayer, vc.layers);
  const first = strategy === 'default' ? 1 : 0;
  const imageTokens = visionTokens - first;
  const rawVisionAct = ((ckpt.config.vision_config as Record<string, unknown> | undefined)?.hidden_act as string | undefined) ?? 'quick_gelu';
  const rawTextAct = ((ckpt.config.text_config as Record<string, unknown> | undefined)?.hidden_act as string | undefined) ?? 'silu';
  const rawProjAct = (ckpt.config.projector_hidden_act as string | undefined) ?? 'gelu';
  const visionAct = activation(rawVisionAct);
  const textAct = activation(rawTextAct);
  const projAct = activation(rawProjAct);

  const lmHead =
    LM_HEAD_NAMES.map((n) => weights.get(n)).find((w) => w !== undefined) ?? (tc.tieEmbeddings ? T('embed_tokens.weight') : null);
  if (!lmHead) throw new Error(`reference: no lm_head in ${dir}`);
  const pw = (s: string) => get(PROJECTOR_PREFIXES, s, s.endsWith('weight'));

  const invFreq = new Float64Array(tc.headDim / 2);
  for (let i = 0; i < invFreq.length; i++) invFreq[i] = 1 / Math.pow(tc.ropeTheta, (2 * i) / tc.headDim);

  const headScales = (spec: InterventionSpec | undefined, tower: 'text' | 'vision', layers: number, heads: number) => {
    const out = Array.from({ length: layers }, () => new Float64Array(heads).fill(1));
    for (const e of spec?.headScale ?? []) if (e.tower === tower) out[e.layer][e.head] *= e.scale;
    return out;
  };

  /**
   * mean_ablate and steer of one tower, per layer and head: the replacement vector, and the summed steering vector
   * with the query rows of its scope. Rows come from the prompt length P and the sequence length L of a forward
   * without cache, as the engine's cached rows saw them (see greedy): 'all' every row, 'last' row P-1 only,
   * 'generated' rows >= P (none in a prefill-only forward, where P = L).
   */
  const headVectors = (spec: InterventionSpec | undefined, tower: 'text' | 'vision', layers: number, heads: number, P: number) => {
    const replace = Array.from({ length: layers }, () => new Array<Float64Array | null>(heads).fill(null));
    const steer = Array.from({ length: layers }, () => new Array<{ add: Float64Array; row: (r: number) => boolean } | null>(heads).fill(null));
    for (const e of spec?.meanAblate ?? []) if (e.tower === tower) replace[e.layer][e.head] = Float64Array.from(e.mean);
    for (const e of spec?.steer ?? []) {
      if (e.tower !== tower) continue;
      const row = e.queries === 'all' ? () => true : e.queries === 'last' ? (r: number) => r === P - 1 : (r: number) => r >= P;
      const st = (steer[e.layer][e.head] ??= { add: new Float64Array(e.direction.length), row });
      for (let d = 0; d < e.direction.length; d++) st.add[d] += e.alpha * e.sigma * e.direction[d];
    }
    return { replace, steer };
  };

  /** CLIP vision tower (§2.4) over one image [C, S, S]: hidden_states 0..layers. */
  const vision = (px: Float32Array, scales: Float64Array[], vectors: ReturnType<typeof headVectors>): Float64Array[] => {
    const { hidden: E, channels: C, patchSize: P, imageSize: S, heads: H, headDim: hd, eps } = vc;
    if (px.length !== C * S * S) throw new Error(`reference: pixel values have ${px.length} values, expected ${C * S * S}`);
    const conv = V('embeddings.patch_embedding.weight'); // [E, C, P, P], no bias
    const cls = V('embeddings.class_embedding');
    const pos = V('embeddings.position_embedding.weight');
    const e = new Float64Array(visionTokens * E);
    for (let i = 0; i < E; i++) e[i] = cls[i] + pos[i];
    for (let py = 0; py < grid; py++) {
      for (let pxi = 0; pxi < grid; pxi++) {
        const t = 1 + py * grid + pxi; // flatten(2): row-major (row, col), CLS first
        for (let o = 0; o < E; o++) {
          let s = 0;
          for (let c = 0; c < C; c++)
            for (let ky = 0; ky < P; ky++)
              for (let kx = 0; kx < P; kx++) {
                s += conv[((o * C + c) * P + ky) * P + kx] * px[(c * S + py * P + ky) * S + pxi * P + kx];
              }
          e[t * E + o] = s + pos[t * E + o];
        }
      }
    }
    let h = layerNorm(e, E, V('pre_layrnorm.weight'), V('pre_layrnorm.bias'), eps);
    const out = [h];
    for (let l = 0; l < vc.layers; l++) {
      const p = `encoder.layers.${l}.`;
      const n1 = layerNorm(h, E, V(p + 'layer_norm1.weight'), V(p + 'layer_norm1.bias'), eps);
      const q = linear(n1, visionTokens, E, V(p + 'self_attn.q_proj.weight'), E, V(p + 'self_attn.q_proj.bias'));
      const k = linear(n1, visionTokens, E, V(p + 'self_attn.k_proj.weight'), E, V(p + 'self_attn.k_proj.bias'));
      const v = linear(n1, visionTokens, E, V(p + 'self_attn.v_proj.weight'), E, V(p + 'self_attn.v_proj.bias'));
      const z = attention({
        q, k, v, n: visionTokens, heads: H, kvHeads: H, hd, causal: false,
        headScale: scales[l], headAlpha: null, isImageKey: null, tempRow: null, pattern: null,
        replace: vectors.replace[l], steer: vectors.steer[l],
      });
      const h2 = addInPlace(linear(z, visionTokens, E, V(p + 'self_attn.out_proj.weight'), E, V(p + 'self_attn.out_proj.bias')), h);
      const n2 = layerNorm(h2, E, V(p + 'layer_norm2.weight'), V(p + 'layer_norm2.bias'), eps);
      const f = mapInPlace(linear(n2, visionTokens, E, V(p + 'mlp.fc1.weight'), vc.intermediate, V(p + 'mlp.fc1.bias')), visionAct);
      h = addInPlace(linear(f, visionTokens, vc.intermediate, V(p + 'mlp.fc2.weight'), E, V(p + 'mlp.fc2.bias')), h2);
      out.push(h); // post_layernorm is never applied to hidden_states
    }
    return out;
  };

  /** get_image_features (§2.5): select + concat hidden states, drop CLS under 'default', then the projector. */
  const project = (hs: Float64Array[]): Float64Array => {
    const E = vc.hidden;
    const nf = states.length;
    const feat = new Float64Array(imageTokens * E * nf);
    states.forEach((s, j) => {
      for (let r = 0; r < imageTokens; r++)
        for (let i = 0; i < E; i++) feat[r * E * nf + j * E + i] = hs[s][(r + first) * E + i];
    });
    const D = tc.hidden;
    const mid = mapInPlace(linear(feat, imageTokens, E * nf, pw('linear_1.weight')!, D, pw('linear_1.bias')), projAct);
    return linear(mid, imageTokens, D, pw('linear_2.weight')!, D, pw('linear_2.bias'));
  };

  const forward = (ids: number[], pixelValues: Float32Array[], opts: ReferenceForwardOptions = {}): ReferenceOutput => {
    const spec = opts.interventions;
    const L = ids.length;
    const { hidden: D, heads: H, kvHeads: KV, headDim: hd, vocab, eps } = tc;

    // Vision + projector, image by image.
    const vScales = headScales(spec, 'vision', vc.layers, vc.heads);
    const vVectors = headVectors(spec, 'vision', vc.layers, vc.heads, visionTokens);
    const visionStates = pixelValues.map((px) => vision(px, vScales, vVectors));
    const imageFeatures = new Float64Array(pixelValues.length * imageTokens * D);
    visionStates.forEach((hs, i) => imageFeatures.set(project(hs), i * imageTokens * D));

    // embed_tokens + masked_scatter of the features over <image> rows, in order (§2.6).
    const embed = T('embed_tokens.weight');
    const isImage = new Uint8Array(L);
    let h: Float64Array = new Float64Array(L * D);
    let k = 0;
    const promptLength = opts.promptLength ?? L;
    ids.forEach((id, r) => {
      if (id === cfg.imageTokenIndex && r < promptLength) {
        isImage[r] = 1;
        if (k >= pixelValues.length * imageTokens) throw new Error('reference: more image tokens than image features');
        h.set(imageFeatures.subarray(k * D, (k + 1) * D), r * D);
        k++;
      } else {
        h.set(embed.subarray(id * D, (id + 1) * D), r * D);
      }
    });
    if (k !== pixelValues.length * imageTokens) throw new Error(`reference: ${k} image tokens for ${pixelValues.length * imageTokens} image features`);

    // Llama decoder (§1.6).
    const it = spec?.imageTemperature ?? null;
    const tr = opts.temperatureRows ?? defaultTemperatureRows(it?.queries ?? null, L);
    const tempRow = (r: number) => r >= tr[0] && r < tr[1];
    const tScales = headScales(spec, 'text', tc.layers, H);
    const tVectors = headVectors(spec, 'text', tc.layers, H, promptLength);
    const textStates = [h];
    const patterns = new Map<number, Float64Array>();
    const zAll = new Float64Array(tc.layers * L * H * hd);
    for (let l = 0; l < tc.layers; l++) {
      const p = `layers.${l}.`;
      const n1 = rmsNorm(h, D, T(p + 'input_layernorm.weight'), eps);
      const q = linear(n1, L, D, T(p + 'self_attn.q_proj.weight'), H * hd, Topt(p + 'self_attn.q_proj.bias'));
      const kk = linear(n1, L, D, T(p + 'self_attn.k_proj.weight'), KV * hd, Topt(p + 'self_attn.k_proj.bias'));
      const v = linear(n1, L, D, T(p + 'self_attn.v_proj.weight'), KV * hd, Topt(p + 'self_attn.v_proj.bias'));
      applyRope(q, L, H, hd, invFreq);
      applyRope(kk, L, KV, hd, invFreq);
      let alphas: Float64Array | null = null;
      if (it && (!it.layers || it.layers.includes(l))) {
        alphas = new Float64Array(H).fill(1);
        for (let hh = 0; hh < H; hh++) if (!it.heads || it.heads.includes(hh)) alphas[hh] = it.alpha;
      }
      const pattern = new Float64Array(H * L * L);
      const z = attention({
        q, k: kk, v, n: L, heads: H, kvHeads: KV, hd, causal: true,
        headScale: tScales[l], headAlpha: alphas, isImageKey: isImage, tempRow, pattern,
        replace: tVectors.replace[l], steer: tVectors.steer[l],
      });
      patterns.set(l, pattern);
      zAll.set(z, l * L * H * hd);
      const h2 = addInPlace(linear(z, L, H * hd, T(p + 'self_attn.o_proj.weight'), D, Topt(p + 'self_attn.o_proj.bias')), h);
      const n2 = rmsNorm(h2, D, T(p + 'post_attention_layernorm.weight'), eps);
      const F = tc.intermediate;
      const g = linear(n2, L, D, T(p + 'mlp.gate_proj.weight'), F, Topt(p + 'mlp.gate_proj.bias'));
      const u = linear(n2, L, D, T(p + 'mlp.up_proj.weight'), F, Topt(p + 'mlp.up_proj.bias'));
      for (let i = 0; i < g.length; i++) g[i] = textAct(g[i]) * u[i];
      h = addInPlace(linear(g, L, F, T(p + 'mlp.down_proj.weight'), D, Topt(p + 'mlp.down_proj.bias')), h2);
      textStates.push(h);
    }
    const logits = linear(rmsNorm(h, D, T('norm.weight'), eps), L, D, lmHead, vocab, null);
    return { logits, patterns, z: zAll, imageFeatures, visionStates, textStates };
  };

  /*
   * Greedy decoding without a KV cache: every step re-runs the whole forward over prompt + generated tokens and
   * takes the argmax of the last row. With the engine's KV cache, each row's keys/values are computed once, in
   * the forward that first saw the row, and later steps reuse them. So a row's hidden states (hence its cached
   * K/V in every layer) carry whatever temperature that row's queries got in that forward; to reproduce the
   * cache, the re-run must scale, in EVERY forward, exactly the rows the engine scaled when it computed them:
   *  - 'all': the engine scales every prefill row and each decode step's new row -> every row, every forward.
   *  - 'last': the engine scales only the last prompt row, in the prefill; decode steps are unscaled. Row
   *    promptLen-1's hidden states at layer l+1 depend on its scaling at layer l, and its cached K/V at layers
   *    > l (which later queries read) carry that; so row promptLen-1 is scaled in every re-run forward, and no
   *    other row.
   *  - 'generated': the prefill is unscaled; each decode step scales its new row (the token generated before
   *    it, at index >= promptLen) -> rows >= promptLen, in every forward. The first generated token comes from
   *    row promptLen-1 of the prefill, which is unscaled, consistently.
   * A generated <image> id is a plain token (pixel_values only reach the prefill): see promptLength.
   * Steering scopes follow the same rows, derived in forward from promptLength: 'last' = row P-1, 'generated' =
   * rows >= P, in every forward.
   */
  const greedy = (ids: number[], pixelValues: Float32Array[], n: number, interventions?: InterventionSpec): ReferenceGreedy => {
    const P = ids.length;
    const seq = ids.slice();
    const tokens: number[] = [];
    const margins: number[] = [];
    const scope = interventions?.imageTemperature?.queries ?? null;
    for (let t = 0; t < n; t++) {
      const L = seq.length;
      const rows: [number, number] =
        scope === 'all' ? [0, L] : scope === 'last' ? [P - 1, P] : scope === 'generated' ? [P, L] : [0, 0];
      const out = forward(seq, pixelValues, { interventions, temperatureRows: rows, promptLength: P });
      const last = out.logits.subarray((L - 1) * tc.vocab, L * tc.vocab);
      let best = 0;
      for (let i = 1; i < last.length; i++) if (last[i] > last[best]) best = i;
      let second = -Infinity;
      for (let i = 0; i < last.length; i++) if (i !== best && last[i] > second) second = last[i];
      tokens.push(best);
      margins.push(last[best] - second);
      seq.push(best);
    }
    return { tokens, margins };
  };

  return { cfg, imageTokens, visionTokens, forward, greedy };
}

/** The rows a prefill over L rows scales under each scope (the engine's temperatureRows for 'prefill'). */
function defaultTemperatureRows(scope: QueryScope | null, L: number): [number, number] {
  if (scope === 'all') return [0, L];
  if (scope === 'last') return [L - 1, L];
  return [0, 0];
}
