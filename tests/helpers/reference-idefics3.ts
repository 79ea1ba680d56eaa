// An independent float64 CPU reference of the Hugging Face Idefics3 / SmolVLM forward
// (Idefics3ForConditionalGeneration, SmolVLMForConditionalGeneration): SigLIP vision tower with NaViT position
// bucketing and padded-patch masks, pixel-shuffle connector, Llama decoder, and the intervention contract. It
// parses config.json itself and shares only the file readers and the float64 math of reference-math.ts with the
// rest of the tests; every number is computed here in float64 from the weights as stored, with no KV cache.

import type { InterventionSpec } from '../../src/spec/spec.js';
import {
  type HeadVectors,
  type ReferenceGreedy,
  activation,
  addInPlace,
  allKeys,
  attention,
  greedyNoCache,
  headScales,
  headVectors,
  layerNorm,
  linear,
  llamaDecoder,
  mapInPlace,
  mergeImageFeatures,
  readFloat64Checkpoint,
  ropeInvFreq,
  rotate,
} from './reference-math.js';

// ---------------------------------------------------------------------------------------------------------
// Config (parsed here, independently of src/models/config.ts)

export type Idefics3ModelType = 'idefics3' | 'smolvlm';
export type Idefics3Merge = Idefics3ModelType;

export interface Idefics3RefConfig {
  modelType: Idefics3ModelType;
  imageTokenId: number;
  scaleFactor: number;
  /** lm_head is embed_tokens (tie_word_embeddings, or no lm_head.weight stored). Set when the weights are read. */
  tied: boolean;
  text: {
    hidden: number;
    intermediate: number;
    layers: number;
    heads: number;
    kvHeads: number;
    headDim: number;
    vocab: number;
    eps: number;
    ropeTheta: number;
    act: string;
    attentionBias: boolean;
    mlpBias: boolean;
  };
  vision: {
    hidden: number;
    intermediate: number;
    layers: number;
    heads: number;
    headDim: number;
    channels: number;
    imageSize: number;
    patchSize: number;
    /** image_size // patch_size: the position-embedding grid side (num_patches_per_side). */
    patchesPerSide: number;
    eps: number;
    act: string;
  };
}

type Json = Record<string, unknown>;

const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Idefics3Config / SmolVLMConfig with the class defaults of configuration_idefics3.py and LlamaConfig where a key is absent. */
export function parseIdefics3RefConfig(raw: Json): Idefics3RefConfig {
  const mt = raw.model_type;
  if (mt !== 'idefics3' && mt !== 'smolvlm') throw new Error(`reference: model_type ${String(mt)} is not idefics3 / smolvlm`);
  const tc = isObj(raw.text_config) ? raw.text_config : {};
  const vc = isObj(raw.vision_config) ? raw.vision_config : {};
  const num = (v: unknown, what: string, dflt?: number): number => {
    if (v === undefined || v === null) {
      if (dflt === undefined) throw new Error(`reference: config has no ${what}`);
      return dflt;
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`reference: config ${what} = ${JSON.stringify(v)} is not a number`);
    return v;
  };
  const hidden = num(tc.hidden_size, 'text_config.hidden_size', 4096);
  const heads = num(tc.num_attention_heads, 'text_config.num_attention_heads', 32);
  // rope_scaling (v4) or rope_parameters (v5): only the default rotary is supported.
  const rope = [tc.rope_parameters, tc.rope_scaling].find(isObj) ?? {};
  const ropeType = rope.rope_type ?? rope.type ?? 'default';
  if (ropeType !== 'default') throw new Error(`reference: rope type ${String(ropeType)} is not supported`);
  const vHidden = num(vc.hidden_size, 'vision_config.hidden_size', 1152);
  const vHeads = num(vc.num_attention_heads, 'vision_config.num_attention_heads', 16);
  const imageSize = num(vc.image_size, 'vision_config.image_size', 224);
  const patchSize = num(vc.patch_size, 'vision_config.patch_size', 32);
  const tieTop = raw.tie_word_embeddings ?? tc.tie_word_embeddings;
  const cfg: Idefics3RefConfig = {
    modelType: mt,
    imageTokenId: num(raw.image_token_id, 'image_token_id', 128257),
    scaleFactor: num(raw.scale_factor, 'scale_factor', 2),
    tied: tieTop === true,
    text: {
      hidden,
      intermediate: num(tc.intermediate_size, 'text_config.intermediate_size', 11008),
      layers: num(tc.num_hidden_layers, 'text_config.num_hidden_layers', 32),
      heads,
      kvHeads: num(tc.num_key_value_heads, 'text_config.num_key_value_heads', heads),
      headDim: num(tc.head_dim, 'text_config.head_dim', hidden / heads),
      vocab: num(tc.vocab_size ?? raw.vocab_size, 'text_config.vocab_size', 32000),
      eps: num(tc.rms_norm_eps, 'text_config.rms_norm_eps', 1e-6),
      ropeTheta: num(tc.rope_theta ?? rope.rope_theta, 'text_config.rope_theta', 10000),
      act: (tc.hidden_act as string | undefined) ?? 'silu',
      attentionBias: tc.attention_bias === true,
      mlpBias: tc.mlp_bias === true,
    },
    vision: {
      hidden: vHidden,
      intermediate: num(vc.intermediate_size, 'vision_config.intermediate_size', 3072),
      layers: num(vc.num_hidden_layers, 'vision_config.num_hidden_layers', 12),
      heads: vHeads,
      headDim: vHidden / vHeads,
      channels: num(vc.num_channels, 'vision_config.num_channels', 3),
      imageSize,
      patchSize,
      patchesPerSide: Math.floor(imageSize / patchSize),
      eps: num(vc.layer_norm_eps, 'vision_config.layer_norm_eps', 1e-6),
      act: (vc.hidden_act as string | undefined) ?? 'gelu_pytorch_tanh',
    },
  };
  if (!Number.isInteger(cfg.vision.headDim)) throw new Error(`reference: vision hidden ${vHidden} is not a multiple of ${vHeads} heads`);
  if (heads % cfg.text.kvHeads !== 0) throw new Error(`reference: ${heads} heads is not a multiple of ${cfg.text.kvHeads} KV heads`);
  if (cfg.text.headDim % 2) throw new Error(`reference: text head_dim ${cfg.text.headDim} is odd`);
  return cfg;
}

// ---------------------------------------------------------------------------------------------------------
// The vision-side index maps (exported so tests can hold them to literal transcriptions)

/** float32 rounding, for the torch float32 arithmetic of the position bucketing. */
const f32 = Math.fround;

/** torch.arange(start, end, step) in float32 on CPU: size ceil((end - start) / step) in double, values f32(start + step * i) in double. */
function arangeF32(start: number, end: number, step: number): number[] {
  const n = Math.max(0, Math.ceil((end - start) / step));
  return Array.from({ length: n }, (_, i) => f32(start + step * i));
}

/**
 * NaViT-style position ids of one tile (Idefics3VisionEmbeddings.forward, modeling_idefics3.py): nb_h = valid
 * patches in column 0, nb_w = valid patches in row 0; boundaries = arange(1/n, 1, 1/n), fractional coords =
 * arange(0, 1 - 1e-6, 1/nb) (float32), bucketize(right=True) = the number of boundaries <= x; ids
 * bucket_h * n + bucket_w written, row-major, at the valid patches; padded patches keep 0.
 */
export function navitPositionIds(patchMask: Uint8Array, rows: number, cols: number, patchesPerSide: number): number[] {
  if (patchMask.length !== rows * cols) throw new Error(`reference: patch mask of ${patchMask.length} for a ${rows}x${cols} grid`);
  const n = patchesPerSide;
  const boundaries = arangeF32(1 / n, 1.0, 1 / n);
  let nbH = 0;
  let nbW = 0;
  for (let r = 0; r < rows; r++) nbH += patchMask[r * cols];
  for (let c = 0; c < cols; c++) nbW += patchMask[c];
  // 1 / nb_patches (a 0-dim int tensor) is a float32 tensor; arange takes it as its step.
  const bucket = (nb: number) =>
    arangeF32(0, 1 - 1e-6, f32(1 / nb)).map((x) => {
      let b = 0;
      for (const v of boundaries) if (v <= x) b++;
      return b;
    });
  const bh = bucket(nbH);
  const bw = bucket(nbW);
  const ids: number[] = [];
  for (const h of bh) for (const w of bw) ids.push(h * n + w);
  const out = new Array<number>(rows * cols).fill(0);
  let k = 0;
  for (let i = 0; i < out.length; i++) if (patchMask[i]) out[i] = ids[k++];
  if (k !== ids.length) throw new Error(`reference: ${k} valid patches but nb_h x nb_w = ${ids.length} (the valid patches are not a top-left rectangle)`);
  return out;
}

/**
 * Idefics3Connector.pixel_shuffle (modeling_idefics3.py) on one tile x [seq, E]: g = int(sqrt(seq)), x viewed as
 * [g, g, E]; output token t = R * (g/s) + C, feature (m * s + k) * E + d = x[s*R + m, s*C + k, d].
 */
export function pixelShuffle(x: Float64Array, seq: number, E: number, s: number): Float64Array {
  const g = Math.floor(Math.sqrt(seq));
  if (g * g !== seq) throw new Error(`reference: pixel shuffle needs a square number of patches, got ${seq}`);
  if (g % s) throw new Error(`reference: pixel shuffle grid side ${g} is not a multiple of scale_factor ${s}`);
  if (x.length !== seq * E) throw new Error(`reference: pixel shuffle input of ${x.length} values is not [${seq}, ${E}]`);
  const gs = g / s;
  const out = new Float64Array(seq * E);
  for (let R = 0; R < gs; R++)
    for (let C = 0; C < gs; C++)
      for (let m = 0; m < s; m++)
        for (let k = 0; k < s; k++) {
          const src = ((s * R + m) * g + (s * C + k)) * E;
          out.set(x.subarray(src, src + E), ((R * gs + C) * s * s + m * s + k) * E);
        }
  return out;
}

/**
 * SmolVLMModel.inputs_merger (modular_smolvlm.py): the k-th <image> of the prompt takes row k % seq of block
 * k // seq; the count of <image> tokens must be a multiple of seq. Generated ids (rows >= promptLength) are
 * plain embeddings. Blocks past the last tile are an error; unused blocks are not (as in HF).
 */
export function smolvlmMerge(
  ids: number[],
  promptLength: number,
  imageTokenId: number,
  embed: Float64Array,
  D: number,
  vocab: number,
  blocks: Float64Array,
  seq: number,
): { h: Float64Array; isImage: Uint8Array } {
  const L = ids.length;
  const isImage = new Uint8Array(L);
  let count = 0;
  for (let r = 0; r < Math.min(L, promptLength); r++) {
    if (ids[r] === imageTokenId) {
      isImage[r] = 1;
      count++;
    }
  }
  if (count % seq) throw new Error(`reference: ${count} <image> tokens is not a multiple of image_seq_len ${seq}`);
  const nBlocks = blocks.length / (seq * D);
  const h = new Float64Array(L * D);
  let cum = 0;
  for (let r = 0; r < L; r++) {
    if (isImage[r]) {
      const block = Math.floor(cum / seq);
      const row = cum % seq;
      cum++;
      if (block >= nBlocks) throw new Error(`reference: <image> block ${block} but only ${nBlocks} tiles of features`);
      h.set(blocks.subarray((block * seq + row) * D, (block * seq + row + 1) * D), r * D);
    } else {
      const id = ids[r];
      if (!(id >= 0 && id < vocab)) throw new Error(`reference: token id ${id} outside the vocabulary`);
      h.set(embed.subarray(id * D, (id + 1) * D), r * D);
    }
  }
  return { h, isImage };
}

// ---------------------------------------------------------------------------------------------------------
// The model

export interface Idefics3Tile {
  /** [channels, H, W] float32, as the processor's pixel_values. */
  pixelValues: Float32Array;
  /** pixel_attention_mask [H, W] (1 = real pixel); absent = all ones. */
  mask?: Uint8Array;
  /** Tile size in pixels (default: a square holding pixelValues). */
  height?: number;
  width?: number;
}

export interface ReferenceIdefics3ForwardOptions {
  interventions?: InterventionSpec;
  /** Query rows [start, end) that get the image temperature. Default: the prefill's rows for the spec's scope. */
  temperatureRows?: [number, number];
  /** Ids at rows >= this are generated tokens (plain embeddings, not image keys); places the steering scopes. Default L. */
  promptLength?: number;
  /** Feature merge: Idefics3's sequential fill or SmolVLM's block-wise inputs_merger (default: the config's model_type). */
  merge?: Idefics3Merge;
}

export interface Idefics3VisionOutput {
  /** Indices of the tiles kept (all-zero tiles are dropped, as get_image_features does). */
  keptTiles: number[];
  /** Per kept tile: the patch mask [patches] (1 = valid) and the position ids [patches]. */
  patchMasks: Uint8Array[];
  positionIds: number[][];
  /** Hidden states per Hugging Face index 0..layers (0 = embeddings), per kept tile, before post_layernorm: [patches, E]. */
  visionStates: Float64Array[][];
  /** Per kept tile, after post_layernorm (the connector's input): [patches, E]. */
  visionLast: Float64Array[];
  /** Softmax probabilities per layer, per kept tile: [heads, patches, patches] (0 on padded keys). */
  visionPatterns: Map<number, Float64Array[]>;
  /** Per kept tile, after the pixel shuffle: [seq, E * s^2]. */
  pixelShuffle: Float64Array[];
  /** Connector output of the kept tiles in order: [tiles * seq, text hidden]. */
  imageFeatures: Float64Array;
  /** Image tokens per tile. */
  seq: number;
}

export interface ReferenceIdefics3Output extends Idefics3VisionOutput {
  /** [L, vocab] */
  logits: Float64Array;
  /** Softmax probabilities [heads, L, L] of every text layer. */
  patterns: Map<number, Float64Array>;
  /** Per-head attention outputs after mean_ablate, head_scale and steer (what o_proj reads): [layers, L, heads * hd]. */
  z: Float64Array;
  /** Decoder hidden states 0..layers (0 = merged embeddings, before the final norm): each [L, hidden]. */
  textStates: Float64Array[];
}

export interface ReferenceIdefics3 {
  cfg: Idefics3RefConfig;
  /** image_seq_len of a full tile: (image_size / patch_size)^2 / scale_factor^2. */
  imageSeqLen: number;
  vision(tiles: Idefics3Tile[], interventions?: InterventionSpec): Idefics3VisionOutput;
  forward(ids: number[], tiles: Idefics3Tile[], opts?: ReferenceIdefics3ForwardOptions): ReferenceIdefics3Output;
  greedy(ids: number[], tiles: Idefics3Tile[], n: number, interventions?: InterventionSpec, merge?: Idefics3Merge): ReferenceGreedy;
}

// Idefics3ForConditionalGeneration names; a bare Idefics3Model save has no "model." prefix.
const VISION_PREFIXES = ['model.vision_model.', 'vision_model.'];
const CONNECTOR_PREFIXES = ['model.connector.', 'connector.'];
const TEXT_PREFIXES = ['model.text_model.', 'text_model.'];

/** Read a Hugging Face Idefics3 / SmolVLM folder into float64 weights and return the reference model. */
export async function referenceIdefics3(dir: string): Promise<ReferenceIdefics3> {
  const ck = await readFloat64Checkpoint(dir, parseIdefics3RefConfig);
  const cfg = ck.cfg;
  const V = (s: string) => ck.get(VISION_PREFIXES, s)!;
  const T = (s: string) => ck.get(TEXT_PREFIXES, s)!;
  const stored = ck.weights.get('lm_head.weight');
  if (!stored) cfg.tied = true;
  const lmHead = cfg.tied ? T('embed_tokens.weight') : stored!;
  const proj = ck.get(CONNECTOR_PREFIXES, 'modality_projection.proj.weight')!;

  const vc = cfg.vision;
  const tc = cfg.text;
  const s = cfg.scaleFactor;
  const visionAct = activation(vc.act);
  const textAct = activation(tc.act);
  const imageSeqLen = (vc.patchesPerSide * vc.patchesPerSide) / (s * s);
  const invFreq = ropeInvFreq(tc.headDim, tc.ropeTheta);

  /** One tile through the vision tower (Idefics3VisionTransformer): embeddings, encoder, post_layernorm. */
  const visionTile = (tile: Idefics3Tile, scales: Float64Array[], vectors: HeadVectors[]) => {
    const { hidden: E, channels: Ch, patchSize: P, heads: VH, headDim: vhd, eps } = vc;
    const px = tile.pixelValues;
    const Hh = tile.height ?? Math.round(Math.sqrt(px.length / Ch));
    const Ww = tile.width ?? px.length / (Ch * Hh);
    if (px.length !== Ch * Hh * Ww) throw new Error(`reference: a tile of ${px.length} values is not [${Ch}, ${Hh}, ${Ww}]`);
    if (tile.mask && tile.mask.length !== Hh * Ww) throw new Error(`reference: a mask of ${tile.mask.length} values is not [${Hh}, ${Ww}]`);
    const gh = Math.floor(Hh / P);
    const gw = Math.floor(Ww / P);
    const N = gh * gw;
    // patch_attention_mask: any real pixel in the patch (unfold + sum > 0).
    const pmask = new Uint8Array(N).fill(1);
    if (tile.mask) {
      for (let r = 0; r < gh; r++)
        for (let c = 0; c < gw; c++) {
          let any = 0;
          for (let y = 0; y < P && !any; y++) for (let x = 0; x < P && !any; x++) any = tile.mask[(r * P + y) * Ww + c * P + x] ? 1 : 0;
          pmask[r * gw + c] = any;
        }
    }
    const positionIds = navitPositionIds(pmask, gh, gw, vc.patchesPerSide);
    // Valid patches first: the additive key mask becomes keys [0, nValid) for every query row.
    const order = [...positionIds.keys()].sort((a, b) => pmask[b] - pmask[a] || a - b);
    const nValid = pmask.reduce((a, b) => a + b, 0);
    if (nValid === 0) throw new Error('reference: a non-zero tile with no valid patch');
    // Conv2d(C -> E, kernel = stride = P, padding "valid", bias) + position_embedding, in `order`.
    const conv = V('embeddings.patch_embedding.weight');
    const convBias = V('embeddings.patch_embedding.bias');
    const pos = V('embeddings.position_embedding.weight');
    let h: Float64Array = new Float64Array(N * E);
    order.forEach((p, t) => {
      const r = Math.floor(p / gw);
      const c = p % gw;
      const id = positionIds[p];
      for (let o = 0; o < E; o++) {
        let acc = 0;
        for (let ch = 0; ch < Ch; ch++)
          for (let ky = 0; ky < P; ky++) {
            const wo = ((o * Ch + ch) * P + ky) * P;
            const po = (ch * Hh + r * P + ky) * Ww + c * P;
            for (let kx = 0; kx < P; kx++) acc += conv[wo + kx] * px[po + kx];
          }
        h[t * E + o] = acc + convBias[o] + pos[id * E + o];
      }
    });
    const unpermute = (a: Float64Array, w: number) => {
      const out = new Float64Array(a.length);
      order.forEach((p, t) => out.set(a.subarray(t * w, (t + 1) * w), p * w));
      return out;
    };
    const states = [unpermute(h, E)];
    const patterns: Float64Array[] = [];
    const keys = allKeys(nValid);
    for (let l = 0; l < vc.layers; l++) {
      const p = `encoder.layers.${l}.`;
      const n1 = layerNorm(h, E, V(p + 'layer_norm1.weight'), V(p + 'layer_norm1.bias'), eps);
      const q = linear(n1, N, E, V(p + 'self_attn.q_proj.weight'), E, V(p + 'self_attn.q_proj.bias'));
      const k = linear(n1, N, E, V(p + 'self_attn.k_proj.weight'), E, V(p + 'self_attn.k_proj.bias'));
      const v = linear(n1, N, E, V(p + 'self_attn.v_proj.weight'), E, V(p + 'self_attn.v_proj.bias'));
      const pat = new Float64Array(VH * N * N);
      const z = attention({
        q, k, v, n: N, heads: VH, kvHeads: VH, hd: vhd, keys,
        headScale: scales[l], vectors: vectors[l], headAlpha: null, isImageKey: null, tempRow: null, pattern: pat,
      });
      const h2 = addInPlace(linear(z, N, E, V(p + 'self_attn.out_proj.weight'), E, V(p + 'self_attn.out_proj.bias')), h);
      const n2 = layerNorm(h2, E, V(p + 'layer_norm2.weight'), V(p + 'layer_norm2.bias'), eps);
      const f = mapInPlace(linear(n2, N, E, V(p + 'mlp.fc1.weight'), vc.intermediate, V(p + 'mlp.fc1.bias')), visionAct);
      h = addInPlace(linear(f, N, vc.intermediate, V(p + 'mlp.fc2.weight'), E, V(p + 'mlp.fc2.bias')), h2);
      states.push(unpermute(h, E));
      const pattern = new Float64Array(VH * N * N);
      for (let hh = 0; hh < VH; hh++)
        for (let i = 0; i < N; i++)
          for (let j = 0; j < N; j++) pattern[(hh * N + order[i]) * N + order[j]] = pat[(hh * N + i) * N + j];
      patterns.push(pattern);
    }
    const last = layerNorm(states[vc.layers], E, V('post_layernorm.weight'), V('post_layernorm.bias'), eps);
    return { pmask, positionIds, states, patterns, last, N };
  };

  const vision = (tiles: Idefics3Tile[], spec?: InterventionSpec): Idefics3VisionOutput => {
    // get_image_features: drop the tiles whose every value is 0.0 (padding images); keep the first if all are.
    let keptTiles = tiles.flatMap((t, i) => (t.pixelValues.some((x) => x !== 0) ? [i] : []));
    if (keptTiles.length === 0 && tiles.length > 0) keptTiles = [0];
    const scales = headScales(spec, 'vision', vc.layers, vc.heads);
    const E = vc.hidden;
    const D = tc.hidden;
    const out: Idefics3VisionOutput = {
      keptTiles, patchMasks: [], positionIds: [], visionStates: Array.from({ length: vc.layers + 1 }, () => []),
      visionLast: [], visionPatterns: new Map(), pixelShuffle: [], imageFeatures: new Float64Array(0), seq: 0,
    };
    // Vision steering is 'all' rows only (the contract), so the prompt length argument is moot.
    const vectors = headVectors(spec, 'vision', vc.layers, vc.heads, 0);
    const feats: Float64Array[] = [];
    for (const ti of keptTiles) {
      const r = visionTile(tiles[ti], scales, vectors);
      out.patchMasks.push(r.pmask);
      out.positionIds.push(r.positionIds);
      r.states.forEach((st, i) => out.visionStates[i].push(st));
      r.patterns.forEach((p, l) => {
        if (!out.visionPatterns.has(l)) out.visionPatterns.set(l, []);
        out.visionPatterns.get(l)!.push(p);
      });
      out.visionLast.push(r.last);
      // Idefics3Connector: pixel shuffle, then the bias-free modality_projection.
      const shuffled = pixelShuffle(r.last, r.N, E, s);
      out.pixelShuffle.push(shuffled);
      const seq = r.N / (s * s);
      if (out.seq && seq !== out.seq) throw new Error(`reference: tiles of ${out.seq} and ${seq} image tokens in one forward`);
      out.seq = seq;
      feats.push(linear(shuffled, seq, E * s * s, proj, D, null));
    }
    out.imageFeatures = new Float64Array(feats.reduce((a, f) => a + f.length, 0));
    let at = 0;
    for (const f of feats) {
      out.imageFeatures.set(f, at);
      at += f.length;
    }
    return out;
  };

  const decode = (ids: number[], vis: Idefics3VisionOutput, opts: ReferenceIdefics3ForwardOptions) => {
    const P = opts.promptLength ?? ids.length;
    const merge = opts.merge ?? cfg.modelType;
    const embed = T('embed_tokens.weight');
    const { h, isImage } =
      merge === 'smolvlm'
        ? smolvlmMerge(ids, P, cfg.imageTokenId, embed, tc.hidden, tc.vocab, vis.imageFeatures, vis.seq || imageSeqLen)
        : mergeImageFeatures(ids, P, cfg.imageTokenId, embed, tc.hidden, tc.vocab, vis.imageFeatures);
    return llamaDecoder({
      dims: tc,
      weight: T,
      bias: (name) => {
        const on = name.includes('self_attn.') ? tc.attentionBias : tc.mlpBias;
        return on ? T(name) : null;
      },
      lmHead,
      act: textAct,
      rope: (x, heads) => rotate(x, x.length / (heads * tc.headDim), heads, tc.headDim, (r, j) => r * invFreq[j]),
      h,
      isImage,
      interventions: opts.interventions,
      temperatureRows: opts.temperatureRows,
      promptLength: P,
    });
  };

  const forward = (ids: number[], tiles: Idefics3Tile[], opts: ReferenceIdefics3ForwardOptions = {}): ReferenceIdefics3Output => {
    const vis = vision(tiles, opts.interventions);
    return { ...vis, ...decode(ids, vis, opts) };
  };

  // Vision runs once: image features reach only the prefill, and the no-cache re-runs reuse them.
  const greedy = (ids: number[], tiles: Idefics3Tile[], n: number, interventions?: InterventionSpec, merge?: Idefics3Merge): ReferenceGreedy => {
    const vis = vision(tiles, interventions);
    return greedyNoCache(ids, n, tc.vocab, interventions, (seq, o) => decode(seq, vis, { ...o, merge }).logits);
  };

  return { cfg, imageSeqLen, vision, forward, greedy };
}
