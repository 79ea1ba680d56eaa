// Random LLaVA-layout checkpoints in Hugging Face folder format, for benchmarks and for testing the engine
// across the config space (GQA, dtypes, feature layers, image sizes) against a CPU reference.

import { encodeSafetensors, type TensorEntry, type WriteDType } from '../io/safetensors-writer.js';
import { encodeFromF32 } from '../gpu/half.js';
import { type CheckpointFiles, mulberry32, writeCheckpointFolder } from './random-checkpoint.js';

export interface RandomLlavaSpec {
  seed?: number;
  dtype?: WriteDType;
  vision: { hidden: number; intermediate: number; layers: number; heads: number; imageSize: number; patchSize: number; act?: string };
  text: { hidden: number; intermediate: number; layers: number; heads: number; kvHeads?: number; vocab: number; ropeTheta?: number; eps?: number };
  imageTokenIndex?: number;
  featureLayer?: number | number[];
  selectStrategy?: 'default' | 'full';
  projectorAct?: string;
  /** Use the transformers >= 4.52 names (model.language_model.*, lm_head.weight). */
  newNames?: boolean;
}

export type RandomLlavaFiles = CheckpointFiles;

export function randomLlava(spec: RandomLlavaSpec): RandomLlavaFiles {
  const rand = mulberry32(spec.seed ?? 1);
  const dtype = spec.dtype ?? 'F16';
  const v = spec.vision;
  const t = spec.text;
  const kv = t.kvHeads ?? t.heads;
  const hd = t.hidden / t.heads;
  const grid = v.imageSize / v.patchSize;
  const featureLayers = Array.isArray(spec.featureLayer) ? spec.featureLayer : [spec.featureLayer ?? -2];
  const entries: TensorEntry[] = [];
  const add = (name: string, shape: number[], scale: number, offset = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const vals = new Float32Array(n);
    for (let i = 0; i < n; i++) vals[i] = offset + (rand() * 2 - 1) * scale;
    entries.push({ name, dtype, shape, bytes: encodeFromF32(vals, dtype.toLowerCase() as 'f32' | 'f16' | 'bf16') });
  };
  const vp = spec.newNames ? 'model.vision_tower.vision_model.' : 'vision_tower.vision_model.';
  const pp = spec.newNames ? 'model.multi_modal_projector.' : 'multi_modal_projector.';
  const tp = spec.newNames ? 'model.language_model.' : 'language_model.model.';
  const w = (fanIn: number) => 1 / Math.sqrt(fanIn);
  add(vp + 'embeddings.class_embedding', [v.hidden], 0.5);
  add(vp + 'embeddings.patch_embedding.weight', [v.hidden, 3, v.patchSize, v.patchSize], w(3 * v.patchSize ** 2));
  add(vp + 'embeddings.position_embedding.weight', [grid * grid + 1, v.hidden], 0.5);
  add(vp + 'pre_layrnorm.weight', [v.hidden], 0.2, 1);
  add(vp + 'pre_layrnorm.bias', [v.hidden], 0.1);
  for (let l = 0; l < v.layers; l++) {
    const p = `${vp}encoder.layers.${l}.`;
    for (const x of ['q', 'k', 'v', 'out']) {
      add(`${p}self_attn.${x}_proj.weight`, [v.hidden, v.hidden], w(v.hidden));
      add(`${p}self_attn.${x}_proj.bias`, [v.hidden], 0.1);
    }
    for (const x of ['layer_norm1', 'layer_norm2']) {
      add(`${p}${x}.weight`, [v.hidden], 0.2, 1);
      add(`${p}${x}.bias`, [v.hidden], 0.1);
    }
    add(`${p}mlp.fc1.weight`, [v.intermediate, v.hidden], w(v.hidden));
    add(`${p}mlp.fc1.bias`, [v.intermediate], 0.1);
    add(`${p}mlp.fc2.weight`, [v.hidden, v.intermediate], w(v.intermediate));
    add(`${p}mlp.fc2.bias`, [v.hidden], 0.1);
  }
  add(vp + 'post_layernorm.weight', [v.hidden], 0.2, 1);
  add(vp + 'post_layernorm.bias', [v.hidden], 0.1);
  const featIn = v.hidden * featureLayers.length;
  add(pp + 'linear_1.weight', [t.hidden, featIn], w(featIn));
  add(pp + 'linear_1.bias', [t.hidden], 0.1);
  add(pp + 'linear_2.weight', [t.hidden, t.hidden], w(t.hidden));
  add(pp + 'linear_2.bias', [t.hidden], 0.1);
  add(tp + 'embed_tokens.weight', [t.vocab, t.hidden], 1);
  for (let l = 0; l < t.layers; l++) {
    const p = `${tp}layers.${l}.`;
    add(`${p}self_attn.q_proj.weight`, [t.heads * hd, t.hidden], w(t.hidden));
    add(`${p}self_attn.k_proj.weight`, [kv * hd, t.hidden], w(t.hidden));
    add(`${p}self_attn.v_proj.weight`, [kv * hd, t.hidden], w(t.hidden));
    add(`${p}self_attn.o_proj.weight`, [t.hidden, t.heads * hd], w(t.hidden));
    add(`${p}mlp.gate_proj.weight`, [t.intermediate, t.hidden], w(t.hidden));
    add(`${p}mlp.up_proj.weight`, [t.intermediate, t.hidden], w(t.hidden));
    add(`${p}mlp.down_proj.weight`, [t.hidden, t.intermediate], w(t.intermediate));
    add(`${p}input_layernorm.weight`, [t.hidden], 0.2, 1);
    add(`${p}post_attention_layernorm.weight`, [t.hidden], 0.2, 1);
  }
  add(tp + 'norm.weight', [t.hidden], 0.2, 1);
  add(spec.newNames ? 'lm_head.weight' : 'language_model.lm_head.weight', [t.vocab, t.hidden], w(t.hidden));

  const imageTokenIndex = spec.imageTokenIndex ?? t.vocab - 2;
  const config = {
    architectures: ['LlavaForConditionalGeneration'],
    model_type: 'llava',
    image_token_index: imageTokenIndex,
    pad_token_id: t.vocab - 1,
    projector_hidden_act: spec.projectorAct ?? 'gelu',
    vision_feature_layer: Array.isArray(spec.featureLayer) ? spec.featureLayer : spec.featureLayer ?? -2,
    vision_feature_select_strategy: spec.selectStrategy ?? 'default',
    vocab_size: t.vocab,
    text_config: {
      model_type: 'llama',
      hidden_size: t.hidden,
      intermediate_size: t.intermediate,
      num_hidden_layers: t.layers,
      num_attention_heads: t.heads,
      num_key_value_heads: kv,
      rms_norm_eps: t.eps ?? 1e-5,
      rope_theta: t.ropeTheta ?? 10000,
      max_position_embeddings: 4096,
      vocab_size: t.vocab,
    },
    vision_config: {
      model_type: 'clip_vision_model',
      hidden_act: v.act ?? 'quick_gelu',
      hidden_size: v.hidden,
      intermediate_size: v.intermediate,
      num_hidden_layers: v.layers,
      num_attention_heads: v.heads,
      image_size: v.imageSize,
      patch_size: v.patchSize,
      layer_norm_eps: 1e-5,
    },
  };
  const preprocessor = {
    do_convert_rgb: true,
    do_resize: true,
    size: { shortest_edge: v.imageSize },
    resample: 3,
    do_center_crop: true,
    crop_size: { height: v.imageSize, width: v.imageSize },
    do_rescale: true,
    rescale_factor: 1 / 255,
    do_normalize: true,
    image_mean: [0.48145466, 0.4578275, 0.40821073],
    image_std: [0.26862954, 0.26130258, 0.27577711],
    image_processor_type: 'CLIPImageProcessor',
  };
  return {
    'config.json': JSON.stringify(config, null, 2),
    'preprocessor_config.json': JSON.stringify(preprocessor, null, 2),
    'model.safetensors': encodeSafetensors(entries, { format: 'pt' }),
  };
}

/** Write a random checkpoint folder (Node). */
export async function writeRandomLlava(dir: string, spec: RandomLlavaSpec): Promise<void> {
  await writeCheckpointFolder(dir, randomLlava(spec));
}
