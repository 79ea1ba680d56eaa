// An independent float64 CPU reference of the Hugging Face Qwen2-VL / Qwen2.5-VL forward
// (Qwen2VLForConditionalGeneration, Qwen2_5_VLForConditionalGeneration), written from the model spec (§1, §4)
// and the intervention contract. It shares only the file readers with the engine (checkpoint, f16/bf16
// decoding) and parses config.json itself; its float64 math (norms, attention with the interventions, the decoder,
// no-cache greedy) is the LLaVA reference's (reference-math.ts). Every number is computed in float64 from the
// weights as stored, with no KV cache, so it can judge the GPU engine (and its cache) across configs.

import type { InterventionSpec } from '../../src/spec/spec.js';
import {
  type DecoderDims,
  type DecoderOutput,
  type ReferenceForwardOptions,
  type ReferenceGreedy,
  activation,
  addInPlace,
  attention,
  geluExact,
  greedyNoCache,
  headScales,
  headVectors,
  layerNorm,
  linear,
  llamaDecoder,
  mergeImageFeatures,
  readFloat64Checkpoint,
  rmsNorm,
  rotate,
  ropeInvFreq,
} from './reference-math.js';

// ---------------------------------------------------------------------------------------------------------
// Config (parsed here, independently of src/models/config.ts)

export type QwenFamily = 'qwen2_vl' | 'qwen2_5_vl';

export interface QwenRefConfig {
  family: QwenFamily;
  imageTokenId: number;
  videoTokenId: number;
  visionStartTokenId: number;
  visionEndTokenId: number;
  /** lm_head is embed_tokens (tie_word_embeddings, or no lm_head.weight stored). Set when the weights are read. */
  tied: boolean;
  text: DecoderDims & {
    ropeTheta: number;
    /** Frequencies per axis (t, h, w); sums to headDim / 2. */
    mropeSection: [number, number, number];
    act: string;
  };
  vision: {
    /** ViT width (Qwen2-VL embed_dim, Qwen2.5-VL hidden_size). */
    width: number;
    heads: number;
    headDim: number;
    depth: number;
    /** MLP width: embed_dim * mlp_ratio (2-VL) or intermediate_size (2.5-VL). */
    intermediate: number;
    act: string;
    channels: number;
    patchSize: number;
    temporalPatchSize: number;
    mergeSize: number;
    /** Merger output (Qwen2-VL hidden_size, Qwen2.5-VL out_hidden_size). */
    outHidden: number;
    /** Qwen2.5-VL only (2-VL: every block is full attention). */
    windowSize: number;
    fullattBlockIndexes: number[];
    tokensPerSecond: number;
  };
}

type Json = Record<string, unknown>;

const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

export function parseQwenRefConfig(raw: Json): QwenRefConfig {
  const family = raw.model_type;
  if (family !== 'qwen2_vl' && family !== 'qwen2_5_vl') throw new Error(`reference: model_type ${String(family)} is not qwen2_vl / qwen2_5_vl`);
  // Flat hub configs keep the text keys at the top; configs saved by recent transformers nest them in text_config.
  const tc = isObj(raw.text_config) ? raw.text_config : {};
  const vc = isObj(raw.vision_config) ? raw.vision_config : {};
  const text = (k: string): unknown => tc[k] ?? raw[k];
  const top = (k: string): unknown => raw[k] ?? tc[k];
  const num = (v: unknown, what: string, dflt?: number): number => {
    if (v === undefined || v === null) {
      if (dflt === undefined) throw new Error(`reference: config has no ${what}`);
      return dflt;
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`reference: config ${what} = ${JSON.stringify(v)} is not a number`);
    return v;
  };

  const hidden = num(text('hidden_size'), 'hidden_size');
  const heads = num(text('num_attention_heads'), 'num_attention_heads');
  const headDim = num(text('head_dim'), 'head_dim', hidden / heads);
  if (text('use_sliding_window') === true) throw new Error('reference: use_sliding_window is not supported');
  // rope_scaling {type: "mrope" | rope_type: "default", mrope_section} (hub) or rope_parameters (transformers v5).
  const rope = [text('rope_parameters'), text('rope_scaling')].find(isObj) ?? {};
  const ropeType = rope.rope_type ?? rope.type ?? 'default';
  if (ropeType !== 'default' && ropeType !== 'mrope') throw new Error(`reference: rope type ${String(ropeType)} is not supported`);
  const section = rope.mrope_section;
  if (!Array.isArray(section) || section.length !== 3 || section.some((s) => !Number.isInteger(s) || s < 0)) {
    throw new Error(`reference: mrope_section ${JSON.stringify(section)} is not three integers`);
  }
  if (section[0] + section[1] + section[2] !== headDim / 2) throw new Error(`reference: mrope_section ${section} does not sum to head_dim/2 = ${headDim / 2}`);

  const is25 = family === 'qwen2_5_vl';
  // Naming trap: Qwen2-VL's vision hidden_size is the merger output (width = embed_dim); Qwen2.5-VL's is the width.
  const width = num(is25 ? vc.hidden_size : vc.embed_dim, is25 ? 'vision_config.hidden_size' : 'vision_config.embed_dim');
  const vHeads = num(vc.num_heads, 'vision_config.num_heads');
  const fullatt = vc.fullatt_block_indexes ?? [7, 15, 23, 31];
  if (!Array.isArray(fullatt) || fullatt.some((i) => !Number.isInteger(i))) throw new Error('reference: fullatt_block_indexes is not a list of integers');
  const cfg: QwenRefConfig = {
    family,
    imageTokenId: num(top('image_token_id'), 'image_token_id', 151655),
    videoTokenId: num(top('video_token_id'), 'video_token_id', 151656),
    visionStartTokenId: num(top('vision_start_token_id'), 'vision_start_token_id', 151652),
    visionEndTokenId: num(top('vision_end_token_id'), 'vision_end_token_id', 151653),
    tied: top('tie_word_embeddings') === true,
    text: {
      hidden,
      intermediate: num(text('intermediate_size'), 'intermediate_size'),
      layers: num(text('num_hidden_layers'), 'num_hidden_layers'),
      heads,
      kvHeads: num(text('num_key_value_heads'), 'num_key_value_heads', heads),
      headDim,
      vocab: num(text('vocab_size'), 'vocab_size'),
      eps: num(text('rms_norm_eps'), 'rms_norm_eps', 1e-6),
      ropeTheta: num(text('rope_theta') ?? rope.rope_theta, 'rope_theta', 1e6),
      mropeSection: [section[0], section[1], section[2]],
      act: (text('hidden_act') as string | undefined) ?? 'silu',
    },
    vision: {
      width,
      heads: vHeads,
      headDim: width / vHeads,
      depth: num(vc.depth, 'vision_config.depth'),
      intermediate: is25 ? num(vc.intermediate_size, 'vision_config.intermediate_size') : width * num(vc.mlp_ratio, 'vision_config.mlp_ratio', 4),
      act: (vc.hidden_act as string | undefined) ?? (is25 ? 'silu' : 'quick_gelu'),
      channels: num(vc.in_channels ?? vc.in_chans, 'vision_config.in_channels', 3),
      patchSize: num(vc.patch_size ?? vc.spatial_patch_size, 'vision_config.patch_size', 14),
      temporalPatchSize: num(vc.temporal_patch_size, 'vision_config.temporal_patch_size', 2),
      mergeSize: num(vc.spatial_merge_size, 'vision_config.spatial_merge_size', 2),
      outHidden: num(is25 ? vc.out_hidden_size : vc.hidden_size, is25 ? 'vision_config.out_hidden_size' : 'vision_config.hidden_size'),
      windowSize: is25 ? num(vc.window_size, 'vision_config.window_size', 112) : 0,
      fullattBlockIndexes: is25 ? (fullatt as number[]) : [],
      tokensPerSecond: num(vc.tokens_per_second, 'vision_config.tokens_per_second', is25 ? 4 : 1),
    },
  };
  if (cfg.vision.outHidden !== hidden) throw new Error(`reference: merger output ${cfg.vision.outHidden} != text hidden_size ${hidden}`);
  if (!Number.isInteger(cfg.vision.headDim) || cfg.vision.headDim % 4 !== 0) throw new Error(`reference: vision head dim ${cfg.vision.headDim} is not a multiple of 4`);
  if (heads % cfg.text.kvHeads !== 0) throw new Error(`reference: ${heads} heads is not a multiple of ${cfg.text.kvHeads} KV heads`);
  return cfg;
}

// ---------------------------------------------------------------------------------------------------------
// Index bookkeeping: vision window index and get_rope_index

export type Grid = [number, number, number];

/**
 * Qwen2.5-VL get_window_index (modeling_qwen2_5_vl.py), computed directly: per frame, the merged grid
 * (h/m x w/m) is cut into windows of vmws x vmws merged tokens, row-major over windows, row-major inside; a
 * partial window at the bottom / right keeps what fits and empty windows (HF's padding) are dropped, as
 * unique_consecutive does. windowIndex lists merged tokens (global, all images) in window order; cuWindowSeqlens
 * are the chunk bounds in patches; windows lists each window's [rows, cols] (for tests).
 */
export function qwenWindowIndex(grids: Grid[], cfg: QwenRefConfig): { windowIndex: number[]; cuWindowSeqlens: number[]; windows: [number, number][] } {
  const m = cfg.vision.mergeSize;
  const unit = m * m;
  const vmws = Math.floor(Math.floor(cfg.vision.windowSize / m) / cfg.vision.patchSize);
  if (vmws < 1) throw new Error(`reference: window_size ${cfg.vision.windowSize} is under one merged token`);
  const windowIndex: number[] = [];
  const cu = [0];
  const windows: [number, number][] = [];
  let offset = 0;
  for (const [t, gh, gw] of grids) {
    const lh = gh / m;
    const lw = gw / m;
    for (let f = 0; f < t; f++) {
      for (let r0 = 0; r0 < lh; r0 += vmws) {
        for (let c0 = 0; c0 < lw; c0 += vmws) {
          const r1 = Math.min(r0 + vmws, lh);
          const c1 = Math.min(c0 + vmws, lw);
          for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) windowIndex.push(offset + (f * lh + r) * lw + c);
          cu.push(cu[cu.length - 1] + (r1 - r0) * (c1 - c0) * unit);
          windows.push([r1 - r0, c1 - c0]);
        }
      }
    }
    offset += t * lh * lw;
  }
  return { windowIndex, cuWindowSeqlens: cu, windows };
}

/**
 * get_rope_index (modeling_qwen2_vl.py / modeling_qwen2_5_vl.py) for one unpadded sequence with images only:
 * text runs on all three axes; an image's tokens (starting at its first image pad, in raster order over the
 * merged grid) get (t, row, col) + text_len + st_idx; text after an image resumes at max + 1. Qwen2.5-VL scales t
 * by second_per_grid_t * tokens_per_second, with second_per_grid_t = 0 for images.
 */
export function qwenRopeIndex(ids: number[], grids: Grid[], cfg: QwenRefConfig): { positions: number[][]; ropeDeltas: number } {
  const L = ids.length;
  const pos: number[][] = [[], [], []];
  let nImages = 0;
  for (let i = 0; i + 1 < L; i++) if (ids[i] === cfg.visionStartTokenId && ids[i + 1] === cfg.imageTokenId) nImages++;
  if (nImages > grids.length) throw new Error(`reference: ${nImages} images in the prompt, ${grids.length} grids given`);
  let st = 0;
  let next = 0; // the next position (max + 1 so far)
  const m = cfg.vision.mergeSize;
  for (let img = 0; img < nImages; img++) {
    const ed = ids.indexOf(cfg.imageTokenId, st);
    if (ed < 0) throw new Error('reference: fewer image pads than images');
    for (let i = st; i < ed; i++) for (const a of pos) a.push(next + i - st);
    const base = next + ed - st;
    const [t, gh, gw] = grids[img];
    const lh = gh / m;
    const lw = gw / m;
    let max = base;
    for (let f = 0; f < t; f++) {
      const tp = cfg.family === 'qwen2_5_vl' ? 0 : f;
      for (let r = 0; r < lh; r++) {
        for (let c = 0; c < lw; c++) {
          pos[0].push(base + tp);
          pos[1].push(base + r);
          pos[2].push(base + c);
          max = Math.max(max, base + tp, base + r, base + c);
        }
      }
    }
    next = max + 1;
    st = ed + t * lh * lw;
  }
  for (let i = st; i < L; i++) for (const a of pos) a.push(next + i - st);
  let max = -1;
  for (const a of pos) for (const x of a) if (x > max) max = x;
  return { positions: pos, ropeDeltas: max + 1 - L }; // llm_positions.max() + 1 - len(input_ids)
}

// ---------------------------------------------------------------------------------------------------------
// The model

export interface QwenImage {
  /** [patches, C * T * P * P] in the processor's patch order (2x2 merge blocks). */
  pixelValues: Float32Array;
  grid: Grid;
}

/**
 * Ids at positions >= promptLength are generated tokens: plain embeddings (even an image pad id), not image keys,
 * positions seqIndex + rope_deltas.
 */
export type ReferenceQwenForwardOptions = ReferenceForwardOptions;

export interface ReferenceQwenOutput extends DecoderOutput {
  /** Merger outputs of all images in prompt order: [image tokens, text hidden]. */
  imageFeatures: Float64Array;
  /** Vision hidden states 0..depth (0 = patch embedding), all images, in patch (processor) order: [patches, width]. */
  visionStates: Float64Array[];
  /** Vision softmax probabilities per block, [heads, N, N] over all patches in patch order (0 across images / windows). */
  visionPatterns: Map<number, Float64Array>;
  /** M-RoPE positions (t, h, w) of every row. */
  positions: number[][];
  ropeDeltas: number;
}

export type ReferenceQwenGreedy = ReferenceGreedy;

export interface ReferenceQwen {
  cfg: QwenRefConfig;
  /** Image tokens of a grid: t * h * w / merge^2. */
  imageTokens(grid: Grid): number;
  forward(ids: number[], images: QwenImage[], opts?: ReferenceQwenForwardOptions): ReferenceQwenOutput;
  greedy(ids: number[], images: QwenImage[], n: number, interventions?: InterventionSpec): ReferenceQwenGreedy;
}

const VISION_PREFIXES = ['visual.', 'model.visual.'];
const TEXT_PREFIXES = ['model.language_model.', 'model.'];

interface VisionResult {
  features: Float64Array;
  states: Float64Array[];
  patterns: Map<number, Float64Array>;
}

/** Read a Hugging Face Qwen2-VL / Qwen2.5-VL folder into float64 weights and return the reference model. */
export async function referenceQwen(dir: string): Promise<ReferenceQwen> {
  const { cfg, weights, get } = await readFloat64Checkpoint(dir, parseQwenRefConfig);
  const V = (s: string) => get(VISION_PREFIXES, s)!;
  const T = (s: string) => get(TEXT_PREFIXES, s)!;
  const stored = weights.get('lm_head.weight');
  if (!stored) cfg.tied = true;
  const lmHead = cfg.tied ? T('embed_tokens.weight') : stored!;

  const vc = cfg.vision;
  const tc = cfg.text;
  const is25 = cfg.family === 'qwen2_5_vl';
  const visionAct = activation(vc.act);
  const textAct = activation(tc.act);
  const unit = vc.mergeSize * vc.mergeSize;
  const K = vc.channels * vc.temporalPatchSize * vc.patchSize * vc.patchSize;

  // Text M-RoPE (apply_multimodal_rotary_pos_emb, modeling_qwen2_vl.py): cos/sin split by mrope_section * 2, chunk i
  // taking axis i % 3, i.e. frequency f is driven by t, h or w per mrope_section.
  const textInv = ropeInvFreq(tc.headDim, tc.ropeTheta);
  const textAxis = new Uint8Array(tc.headDim / 2);
  for (let f = 0; f < textAxis.length; f++) {
    const [s0, s1] = tc.mropeSection;
    textAxis[f] = f < s0 ? 0 : f < s0 + s1 ? 1 : 2;
  }
  // Vision 2-D rotary: VisionRotaryEmbedding(dim = head_dim/2, theta 10000); first half row, second half column.
  const quarter = vc.headDim / 4;
  const visInv = ropeInvFreq(vc.headDim / 2, 10000);

  /** The vision tower over all images (Qwen2VisionTransformerPretrainedModel / Qwen2_5_VisionTransformerPretrainedModel). */
  const vision = (images: QwenImage[], spec: InterventionSpec | undefined): VisionResult => {
    const E = vc.width;
    const H = vc.heads;
    const hd = vc.headDim;
    const grids = images.map((im) => im.grid);
    let N = 0;
    for (const im of images) {
      const [t, gh, gw] = im.grid;
      if (gh % vc.mergeSize || gw % vc.mergeSize) throw new Error(`reference: grid ${im.grid} is not a multiple of the merge size`);
      if (im.pixelValues.length !== t * gh * gw * K) throw new Error(`reference: pixel values of ${im.pixelValues.length} values for grid ${im.grid} x ${K}`);
      N += t * gh * gw;
    }
    const x0 = new Float64Array(N * K);
    let at = 0;
    for (const im of images) {
      x0.set(im.pixelValues, at);
      at += im.pixelValues.length;
    }
    // PatchEmbed: Conv3d with kernel = stride = (T, P, P), no bias = a dot with the [E, C*T*P*P] weight.
    const embed = linear(x0, N, K, V('patch_embed.proj.weight'), E, null);

    // rot_pos_emb: (row, col) of each patch in the processor's order (merge blocks row-major, row-major inside).
    const rowOf = new Int32Array(N);
    const colOf = new Int32Array(N);
    const frameSegs: number[] = [0]; // cu_seqlens: one chunk per image frame
    {
      let n = 0;
      const m = vc.mergeSize;
      for (const [t, gh, gw] of grids) {
        for (let f = 0; f < t; f++) {
          for (let bh = 0; bh < gh / m; bh++)
            for (let bw = 0; bw < gw / m; bw++)
              for (let mh = 0; mh < m; mh++)
                for (let mw = 0; mw < m; mw++) {
                  rowOf[n] = bh * m + mh;
                  colOf[n] = bw * m + mw;
                  n++;
                }
          frameSegs.push(n);
        }
      }
    }

    // Qwen2.5-VL: rows are reordered by window_index (per merge unit) before the blocks; perm[i] = patch row of row i.
    const perm = new Int32Array(N);
    let windowSegs = frameSegs;
    let windowIndex: number[] | null = null;
    if (is25) {
      const w = qwenWindowIndex(grids, cfg);
      windowIndex = w.windowIndex;
      windowSegs = w.cuWindowSeqlens;
      for (let i = 0; i < N; i++) perm[i] = windowIndex[Math.floor(i / unit)] * unit + (i % unit);
    } else {
      for (let i = 0; i < N; i++) perm[i] = i;
    }
    const chunkKeys = (segs: number[]) => {
      const lo = new Int32Array(N);
      const hi = new Int32Array(N);
      for (let s = 0; s + 1 < segs.length; s++) for (let i = segs[s]; i < segs[s + 1]; i++) [lo[i], hi[i]] = [segs[s], segs[s + 1]];
      return (i: number): [number, number] => [lo[i], hi[i]];
    };
    const fullKeys = chunkKeys(frameSegs);
    const windowKeys = chunkKeys(windowSegs);
    /** Rows of x (reordered) back to patch order. */
    const unpermute = (x: Float64Array, d: number) => {
      const y = new Float64Array(x.length);
      for (let i = 0; i < N; i++) y.set(x.subarray(i * d, (i + 1) * d), perm[i] * d);
      return y;
    };
    let x: Float64Array = new Float64Array(N * E);
    for (let i = 0; i < N; i++) x.set(embed.subarray(perm[i] * E, (perm[i] + 1) * E), i * E);
    const angle = (r: number, j: number) => (j < quarter ? rowOf[perm[r]] * visInv[j] : colOf[perm[r]] * visInv[j - quarter]);

    const scales = headScales(spec, 'vision', vc.depth, H);
    const vectors = headVectors(spec, 'vision', vc.depth, H, N);
    const states = [embed];
    const patterns = new Map<number, Float64Array>();
    const eps = 1e-6; // hard-coded in both vision towers
    const norm = (y: Float64Array, p: string) => (is25 ? rmsNorm(y, E, V(p + '.weight'), eps) : layerNorm(y, E, V(p + '.weight'), V(p + '.bias'), eps));
    // Qwen2VLVisionBlock (LayerNorm, quick_gelu MLP) / Qwen2_5_VLVisionBlock (RMSNorm, SwiGLU with biases).
    for (let b = 0; b < vc.depth; b++) {
      const p = `blocks.${b}.`;
      const n1 = norm(x, p + 'norm1');
      const qkv = linear(n1, N, E, V(p + 'attn.qkv.weight'), 3 * E, V(p + 'attn.qkv.bias'));
      // reshape(seq, 3, heads, hd): q, k, v are the three E-wide column blocks.
      const q = new Float64Array(N * E);
      const k = new Float64Array(N * E);
      const v = new Float64Array(N * E);
      for (let i = 0; i < N; i++) {
        q.set(qkv.subarray(i * 3 * E, i * 3 * E + E), i * E);
        k.set(qkv.subarray(i * 3 * E + E, i * 3 * E + 2 * E), i * E);
        v.set(qkv.subarray(i * 3 * E + 2 * E, (i + 1) * 3 * E), i * E);
      }
      rotate(q, N, H, hd, angle);
      rotate(k, N, H, hd, angle);
      // Qwen2.5-VL: fullatt_block_indexes attend within cu_seqlens (each frame), the others within cu_window_seqlens.
      const full = !is25 || vc.fullattBlockIndexes.includes(b);
      const pat = new Float64Array(H * N * N);
      const z = attention({
        q, k, v, n: N, heads: H, kvHeads: H, hd, keys: full ? fullKeys : windowKeys,
        headScale: scales[b], vectors: vectors[b], headAlpha: null, isImageKey: null, tempRow: null, pattern: pat,
      });
      // The pattern back to patch order on both axes.
      const pp = new Float64Array(H * N * N);
      for (let h = 0; h < H; h++)
        for (let i = 0; i < N; i++) {
          const src = (h * N + i) * N;
          const dst = (h * N + perm[i]) * N;
          for (let j = 0; j < N; j++) pp[dst + perm[j]] = pat[src + j];
        }
      patterns.set(b, pp);
      addInPlace(x, linear(z, N, E, V(p + 'attn.proj.weight'), E, V(p + 'attn.proj.bias')));
      const n2 = norm(x, p + 'norm2');
      let mlp: Float64Array;
      if (is25) {
        const I = vc.intermediate;
        const g = linear(n2, N, E, V(p + 'mlp.gate_proj.weight'), I, V(p + 'mlp.gate_proj.bias'));
        const u = linear(n2, N, E, V(p + 'mlp.up_proj.weight'), I, V(p + 'mlp.up_proj.bias'));
        for (let i = 0; i < g.length; i++) g[i] = visionAct(g[i]) * u[i];
        mlp = linear(g, N, I, V(p + 'mlp.down_proj.weight'), E, V(p + 'mlp.down_proj.bias'));
      } else {
        const f = linear(n2, N, E, V(p + 'mlp.fc1.weight'), vc.intermediate, V(p + 'mlp.fc1.bias'));
        for (let i = 0; i < f.length; i++) f[i] = visionAct(f[i]);
        mlp = linear(f, N, vc.intermediate, V(p + 'mlp.fc2.weight'), E, V(p + 'mlp.fc2.bias'));
      }
      x = addInPlace(x, mlp);
      states.push(unpermute(x, E));
    }
    // PatchMerger: ln_q, view(-1, unit * E) (consecutive rows = one merge block), Linear, exact GELU, Linear.
    const lnq = norm(x, 'merger.ln_q');
    const M = N / unit;
    const mid = linear(lnq, M, unit * E, V('merger.mlp.0.weight'), unit * E, V('merger.mlp.0.bias'));
    for (let i = 0; i < mid.length; i++) mid[i] = geluExact(mid[i]);
    const D = vc.outHidden;
    const merged = linear(mid, M, unit * E, V('merger.mlp.2.weight'), D, V('merger.mlp.2.bias'));
    // [argsort(window_index)]: merged row i belongs to merged token window_index[i].
    const features = new Float64Array(M * D);
    for (let i = 0; i < M; i++) {
      const dst = windowIndex ? windowIndex[i] : i;
      features.set(merged.subarray(i * D, (i + 1) * D), dst * D);
    }
    return { features, states, patterns };
  };

  const text = (ids: number[], images: QwenImage[], vis: VisionResult, opts: ReferenceQwenForwardOptions) => {
    const L = ids.length;
    const P = opts.promptLength ?? L;

    // get_rope_index over the prompt; generated rows at seqIndex + rope_deltas on all three axes.
    const rope = qwenRopeIndex(ids.slice(0, P), images.map((im) => im.grid), cfg);
    const positions = rope.positions.map((a) => a.slice());
    for (let r = P; r < L; r++) for (const a of positions) a.push(r + rope.ropeDeltas);

    // embed_tokens, then masked_scatter of the image features over the image pads of the prompt, in order.
    const { h, isImage } = mergeImageFeatures(ids, P, cfg.imageTokenId, T('embed_tokens.weight'), tc.hidden, tc.vocab, vis.features);

    const angle = (r: number, f: number) => positions[textAxis[f]][r] * textInv[f];
    const dec = llamaDecoder({
      dims: tc,
      weight: T,
      // Qwen2: q, k and v carry biases; o_proj and the MLP none.
      bias: (name) => (/self_attn\.[qkv]_proj\.bias$/.test(name) ? T(name) : null),
      lmHead,
      act: textAct,
      rope: (x, heads) => rotate(x, L, heads, tc.headDim, angle),
      h,
      isImage,
      interventions: opts.interventions,
      temperatureRows: opts.temperatureRows,
      promptLength: P,
    });
    return { ...dec, positions, ropeDeltas: rope.ropeDeltas };
  };

  const forward = (ids: number[], images: QwenImage[], opts: ReferenceQwenForwardOptions = {}): ReferenceQwenOutput => {
    const vis = vision(images, opts.interventions);
    const t = text(ids, images, vis, opts);
    return { ...t, imageFeatures: vis.features, visionStates: vis.states, visionPatterns: vis.patterns };
  };

  /*
   * Greedy decoding without a KV cache (see greedyNoCache): every step re-runs the decoder over prompt + generated
   * tokens (the vision tower once: it sees only pixels). Generated tokens sit at seqIndex + rope_deltas
   * (Qwen2VLModel.forward's cache_position + rope_deltas) and are plain embeddings.
   */
  const greedy = (ids: number[], images: QwenImage[], n: number, interventions?: InterventionSpec): ReferenceQwenGreedy => {
    const vis = vision(images, interventions);
    return greedyNoCache(ids, n, tc.vocab, interventions, (seq, o) => text(seq, images, vis, o).logits);
  };

  const imageTokens = ([t, h, w]: Grid) => (t * h * w) / unit;
  return { cfg, imageTokens, forward, greedy };
}
