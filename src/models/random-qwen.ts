// Random Qwen2-VL / Qwen2.5-VL checkpoints in Hugging Face folder format, for benchmarks and for testing the
// engine across the config space (families, GQA, dtypes, windows, merge sizes, config layouts, tensor names,
// tied embeddings) against a CPU reference.

import { encodeSafetensors, type TensorEntry, type WriteDType } from '../io/safetensors-writer.js';
import { encodeFromF32 } from '../gpu/half.js';
import { type CheckpointFiles, mulberry32, writeCheckpointFolder } from './random-checkpoint.js';

export type QwenFamily = 'qwen2_vl' | 'qwen2_5_vl';

export interface RandomQwenSpec {
  family: QwenFamily;
  seed?: number;
  /** Stored dtype (default BF16, as Qwen ships). */
  dtype?: WriteDType;
  vision: {
    width: number;
    heads: number;
    depth: number;
    /** Qwen2.5-VL SwiGLU width (default 2 * width). */
    intermediate?: number;
    /** Qwen2-VL MLP ratio (default 4). */
    mlpRatio?: number;
    /** Qwen2.5-VL window in pixels (default 112); windows are windowSize / mergeSize / patchSize merged tokens wide. */
    windowSize?: number;
    /** Qwen2.5-VL full-attention blocks (default: the last block). */
    fullattBlockIndexes?: number[];
    patchSize?: number;
    mergeSize?: number;
    temporalPatchSize?: number;
  };
  text: {
    hidden: number;
    intermediate: number;
    layers: number;
    heads: number;
    kvHeads?: number;
    vocab: number;
    ropeTheta?: number;
    /** Frequencies per axis (t, h, w), summing to head_dim / 2 (default: an even split, t the smallest). */
    mropeSection?: [number, number, number];
    eps?: number;
  };
  /** text_config nesting and rope_parameters, as configs saved by transformers v5 are (default: flat hub layout). */
  nested?: boolean;
  /** tie_word_embeddings: no lm_head.weight is stored. */
  tied?: boolean;
  /** Use the transformers >= 4.52 names (model.visual.*, model.language_model.*, lm_head.weight). */
  newNames?: boolean;
  /** Special ids; default near the top of the vocabulary like the tiny fixtures (image pad = vocab - 5). */
  tokens?: Partial<QwenTokenIds>;
  /** preprocessor_config.json pixel bounds (default the hub's 3136 / 12845056). */
  minPixels?: number;
  maxPixels?: number;
}

export interface QwenTokenIds {
  bos: number;
  eos: number;
  visionStart: number;
  visionEnd: number;
  visionPad: number;
  image: number;
  video: number;
}

export type RandomQwenFiles = CheckpointFiles;

/** The special ids of a spec (defaults at vocab - 13 .. vocab - 4, as in the tiny fixtures). */
export function qwenTokenIds(spec: RandomQwenSpec): QwenTokenIds {
  const v = spec.text.vocab;
  return {
    bos: v - 13,
    eos: v - 11,
    visionStart: v - 8,
    visionEnd: v - 7,
    visionPad: v - 6,
    image: v - 5,
    video: v - 4,
    ...spec.tokens,
  };
}

function defaultSection(headDim: number): [number, number, number] {
  const half = headDim / 2;
  const t = Math.floor(half / 3);
  const h = Math.floor((half - t) / 2);
  return [t, h, half - t - h];
}

export function randomQwen(spec: RandomQwenSpec): RandomQwenFiles {
  const rand = mulberry32(spec.seed ?? 1);
  const dtype = spec.dtype ?? 'BF16';
  const is25 = spec.family === 'qwen2_5_vl';
  const v = spec.vision;
  const t = spec.text;
  const kv = t.kvHeads ?? t.heads;
  const hd = t.hidden / t.heads;
  if (!Number.isInteger(hd) || hd % 2) throw new Error(`randomQwen: text hidden ${t.hidden} / ${t.heads} heads is not an even head dim`);
  if (t.heads % kv) throw new Error(`randomQwen: ${t.heads} heads is not a multiple of ${kv} KV heads`);
  const vhd = v.width / v.heads;
  if (!Number.isInteger(vhd) || vhd % 4) throw new Error(`randomQwen: vision head dim ${v.width / v.heads} is not a multiple of 4 (2-D rotary)`);
  const section = t.mropeSection ?? defaultSection(hd);
  if (section[0] + section[1] + section[2] !== hd / 2) throw new Error(`randomQwen: mrope_section ${section} does not sum to head_dim/2 = ${hd / 2}`);
  const patch = v.patchSize ?? 14;
  const merge = v.mergeSize ?? 2;
  const temporal = v.temporalPatchSize ?? 2;
  const vInter = is25 ? v.intermediate ?? 2 * v.width : v.width * (v.mlpRatio ?? 4);
  const tok = qwenTokenIds(spec);
  for (const [k, id] of Object.entries(tok)) {
    if (!Number.isInteger(id) || id < 0 || id >= t.vocab) throw new Error(`randomQwen: ${k} token id ${id} outside the vocabulary of ${t.vocab}`);
  }

  const entries: TensorEntry[] = [];
  // Uniform in offset +- scale * sqrt(3) (std = scale).
  const add = (name: string, shape: number[], std: number, offset = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const vals = new Float32Array(n);
    for (let i = 0; i < n; i++) vals[i] = offset + (rand() * 2 - 1) * std * Math.sqrt(3);
    entries.push({ name, dtype, shape, bytes: encodeFromF32(vals, dtype.toLowerCase() as 'f32' | 'f16' | 'bf16') });
  };
  // Residual streams stay small (std ~0.05: writers into them get small weights) so the norm epsilons matter;
  // readers of normalised inputs get unit gain (1/sqrt(fan_in)) so attention patterns are far from uniform.
  const RES = 0.05;
  const unit = (fanIn: number) => 1 / Math.sqrt(fanIn);
  const small = (fanIn: number) => RES / Math.sqrt(fanIn);
  const BIAS = 0.02;
  const NORM = 0.2;

  const vp = spec.newNames ? 'model.visual.' : 'visual.';
  const tp = spec.newNames ? 'model.language_model.' : 'model.';
  const E = v.width;
  const K = 3 * temporal * patch * patch;
  add(vp + 'patch_embed.proj.weight', [E, 3, temporal, patch, patch], small(K)); // Conv3d, no bias
  const norm = (p: string, d: number, withBias: boolean) => {
    add(p + '.weight', [d], NORM, 1);
    if (withBias) add(p + '.bias', [d], BIAS);
  };
  for (let b = 0; b < v.depth; b++) {
    const p = `${vp}blocks.${b}.`;
    norm(p + 'norm1', E, !is25); // Qwen2-VL LayerNorm, Qwen2.5-VL RMSNorm
    norm(p + 'norm2', E, !is25);
    add(p + 'attn.qkv.weight', [3 * E, E], unit(E));
    add(p + 'attn.qkv.bias', [3 * E], BIAS);
    add(p + 'attn.proj.weight', [E, E], small(E));
    add(p + 'attn.proj.bias', [E], BIAS);
    if (is25) {
      add(p + 'mlp.gate_proj.weight', [vInter, E], unit(E));
      add(p + 'mlp.gate_proj.bias', [vInter], BIAS);
      add(p + 'mlp.up_proj.weight', [vInter, E], unit(E));
      add(p + 'mlp.up_proj.bias', [vInter], BIAS);
      add(p + 'mlp.down_proj.weight', [E, vInter], small(vInter));
      add(p + 'mlp.down_proj.bias', [E], BIAS);
    } else {
      add(p + 'mlp.fc1.weight', [vInter, E], unit(E));
      add(p + 'mlp.fc1.bias', [vInter], BIAS);
      add(p + 'mlp.fc2.weight', [E, vInter], small(vInter));
      add(p + 'mlp.fc2.bias', [E], BIAS);
    }
  }
  const mIn = E * merge * merge;
  norm(vp + 'merger.ln_q', E, !is25);
  add(vp + 'merger.mlp.0.weight', [mIn, mIn], unit(mIn));
  add(vp + 'merger.mlp.0.bias', [mIn], BIAS);
  add(vp + 'merger.mlp.2.weight', [t.hidden, mIn], small(mIn));
  add(vp + 'merger.mlp.2.bias', [t.hidden], BIAS);

  add(tp + 'embed_tokens.weight', [t.vocab, t.hidden], RES);
  for (let l = 0; l < t.layers; l++) {
    const p = `${tp}layers.${l}.`;
    add(p + 'self_attn.q_proj.weight', [t.heads * hd, t.hidden], unit(t.hidden));
    add(p + 'self_attn.q_proj.bias', [t.heads * hd], BIAS);
    add(p + 'self_attn.k_proj.weight', [kv * hd, t.hidden], unit(t.hidden));
    add(p + 'self_attn.k_proj.bias', [kv * hd], BIAS);
    add(p + 'self_attn.v_proj.weight', [kv * hd, t.hidden], unit(t.hidden));
    add(p + 'self_attn.v_proj.bias', [kv * hd], BIAS);
    add(p + 'self_attn.o_proj.weight', [t.hidden, t.heads * hd], small(t.heads * hd)); // no bias
    add(p + 'mlp.gate_proj.weight', [t.intermediate, t.hidden], unit(t.hidden));
    add(p + 'mlp.up_proj.weight', [t.intermediate, t.hidden], unit(t.hidden));
    add(p + 'mlp.down_proj.weight', [t.hidden, t.intermediate], small(t.intermediate));
    add(p + 'input_layernorm.weight', [t.hidden], NORM, 1);
    add(p + 'post_attention_layernorm.weight', [t.hidden], NORM, 1);
  }
  add(tp + 'norm.weight', [t.hidden], NORM, 1);
  if (!spec.tied) add('lm_head.weight', [t.vocab, t.hidden], 4 * unit(t.hidden)); // logits of a few units

  const textKeys: Record<string, unknown> = {
    hidden_act: 'silu',
    hidden_size: t.hidden,
    intermediate_size: t.intermediate,
    max_position_embeddings: 32768,
    max_window_layers: t.layers,
    num_attention_heads: t.heads,
    num_hidden_layers: t.layers,
    num_key_value_heads: kv,
    rms_norm_eps: t.eps ?? 1e-6,
    sliding_window: 32768,
    use_sliding_window: false,
    vocab_size: t.vocab,
    bos_token_id: tok.bos,
    eos_token_id: tok.eos,
  };
  const ropeTheta = t.ropeTheta ?? 1e6;
  const vision: Record<string, unknown> = is25
    ? {
        depth: v.depth,
        hidden_act: 'silu',
        hidden_size: E, // the ViT width in Qwen2.5-VL
        intermediate_size: vInter,
        num_heads: v.heads,
        in_chans: 3,
        out_hidden_size: t.hidden,
        patch_size: patch,
        spatial_merge_size: merge,
        spatial_patch_size: patch,
        window_size: v.windowSize ?? 112,
        fullatt_block_indexes: v.fullattBlockIndexes ?? [v.depth - 1],
        tokens_per_second: 2,
        temporal_patch_size: temporal,
      }
    : {
        depth: v.depth,
        embed_dim: E, // the ViT width in Qwen2-VL
        mlp_ratio: v.mlpRatio ?? 4,
        num_heads: v.heads,
        in_chans: 3,
        in_channels: 3,
        hidden_size: t.hidden, // the merger output in Qwen2-VL
        hidden_act: 'quick_gelu',
        patch_size: patch,
        spatial_merge_size: merge,
        spatial_patch_size: patch,
        temporal_patch_size: temporal,
      };
  const ids = {
    vision_start_token_id: tok.visionStart,
    vision_end_token_id: tok.visionEnd,
    vision_token_id: tok.visionPad,
    image_token_id: tok.image,
    video_token_id: tok.video,
  };
  const architectures = [is25 ? 'Qwen2_5_VLForConditionalGeneration' : 'Qwen2VLForConditionalGeneration'];
  const torchDtype = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' }[dtype];
  const config = spec.nested
    ? {
        architectures,
        model_type: spec.family,
        ...ids,
        tie_word_embeddings: !!spec.tied,
        torch_dtype: torchDtype,
        text_config: {
          model_type: is25 ? 'qwen2_5_vl_text' : 'qwen2_vl_text',
          ...textKeys,
          rope_parameters: { rope_type: 'default', mrope_section: section, rope_theta: ropeTheta },
          tie_word_embeddings: !!spec.tied,
        },
        vision_config: vision,
      }
    : {
        architectures,
        model_type: spec.family,
        ...ids,
        ...textKeys,
        rope_theta: ropeTheta,
        rope_scaling: { type: 'mrope', mrope_section: section },
        tie_word_embeddings: !!spec.tied,
        torch_dtype: torchDtype,
        vision_config: vision,
      };
  const minPixels = spec.minPixels ?? 3136;
  const maxPixels = spec.maxPixels ?? 12845056;
  const preprocessor = {
    min_pixels: minPixels,
    max_pixels: maxPixels,
    patch_size: patch,
    temporal_patch_size: temporal,
    merge_size: merge,
    image_mean: [0.48145466, 0.4578275, 0.40821073],
    image_std: [0.26862954, 0.26130258, 0.27577711],
    image_processor_type: 'Qwen2VLImageProcessor',
    processor_class: is25 ? 'Qwen2_5_VLProcessor' : 'Qwen2VLProcessor',
    do_convert_rgb: true,
    do_resize: true,
    resample: 3,
    do_rescale: true,
    rescale_factor: 1 / 255,
    do_normalize: true,
    size: { shortest_edge: minPixels, longest_edge: maxPixels },
  };
  return {
    'config.json': JSON.stringify(config, null, 2),
    'preprocessor_config.json': JSON.stringify(preprocessor, null, 2),
    'model.safetensors': encodeSafetensors(entries, { format: 'pt' }),
  };
}

/** Write a random checkpoint folder (Node). */
export async function writeRandomQwen(dir: string, spec: RandomQwenSpec): Promise<void> {
  await writeCheckpointFolder(dir, randomQwen(spec));
}
