// Random Idefics3 / SmolVLM checkpoints in Hugging Face folder format (laid out like
// HuggingFaceTB/SmolVLM-256M-Instruct), for benchmarks and for testing the engine across the config space
// (scale factors, GQA, head_dim, dtypes, tied embeddings, both model types) against a CPU reference.
// Weights are small: the residual streams stay near 1e-2, where the norms' epsilons change the outputs.

import { encodeSafetensors, type TensorEntry, type WriteDType } from '../io/safetensors-writer.js';
import { encodeFromF32 } from '../gpu/half.js';
import { type CheckpointFiles, mulberry32, writeCheckpointFolder } from './random-checkpoint.js';

export type Idefics3ModelType = 'idefics3' | 'smolvlm';

export interface RandomIdefics3Spec {
  /** config model_type (default 'idefics3'); 'smolvlm' differs only in the feature merge. */
  modelType?: Idefics3ModelType;
  seed?: number;
  /** Stored dtype (default BF16, as SmolVLM ships). */
  dtype?: WriteDType;
  vision: {
    hidden: number;
    heads: number;
    layers: number;
    intermediate: number;
    /** Tile side in pixels (max_image_size.longest_edge); the position grid is imageSize / patchSize per side. */
    imageSize: number;
    patchSize: number;
    act?: string;
    eps?: number;
  };
  text: {
    hidden: number;
    intermediate: number;
    layers: number;
    heads: number;
    kvHeads?: number;
    /** Default hidden / heads. */
    headDim?: number;
    vocab: number;
    ropeTheta?: number;
    eps?: number;
  };
  /** Pixel-shuffle factor (default 2); (imageSize / patchSize) must be a multiple of it. */
  scaleFactor?: number;
  /** tie_word_embeddings: no lm_head.weight is stored. */
  tied?: boolean;
  /** Special ids; default at the top of the vocabulary like the tiny-smolvlm fixture. */
  tokens?: Partial<Idefics3TokenIds>;
  /** preprocessor size.longest_edge (default 2 * imageSize: up to 2x2 tiles + the global one). */
  longestEdge?: number;
  doImageSplitting?: boolean;
  /** Store an Idefics3Model's own names (vision_model.*, connector.*, text_model.*) instead of model.*. */
  bareNames?: boolean;
}

export interface Idefics3TokenIds {
  endOfText: number;
  imStart: number;
  imEnd: number;
  globalImg: number;
  /** rowCol[r - 1][c - 1] = <row_r_col_c>, r, c in 1..6. */
  rowCol: number[][];
  fakeTokenAroundImage: number;
  image: number;
  endOfUtterance: number;
}

export type RandomIdefics3Files = CheckpointFiles & { 'processor_config.json': string };

/**
 * The special ids of a spec. Default: SmolVLM's layout relative to the top of the vocabulary, as the fixture
 * has it for vocab 300: <global-img> V-50, <row_r_col_c> V-50 + (r-1)*6 + c, <fake_token_around_image> V-13,
 * <image> V-12, <end_of_utterance> V-1; <|endoftext|> 0, <|im_start|> 1, <|im_end|> 2.
 */
export function idefics3TokenIds(spec: RandomIdefics3Spec): Idefics3TokenIds {
  const v = spec.text.vocab;
  const base = v - 50;
  return {
    endOfText: 0,
    imStart: 1,
    imEnd: 2,
    globalImg: base,
    rowCol: Array.from({ length: 6 }, (_, r) => Array.from({ length: 6 }, (_, c) => base + r * 6 + c + 1)),
    fakeTokenAroundImage: v - 13,
    image: v - 12,
    endOfUtterance: v - 1,
    ...spec.tokens,
  };
}

export function randomIdefics3(spec: RandomIdefics3Spec): RandomIdefics3Files {
  const rand = mulberry32(spec.seed ?? 1);
  const dtype = spec.dtype ?? 'BF16';
  const modelType = spec.modelType ?? 'idefics3';
  const v = spec.vision;
  const t = spec.text;
  const s = spec.scaleFactor ?? 2;
  const kv = t.kvHeads ?? t.heads;
  const hd = t.headDim ?? t.hidden / t.heads;
  if (!Number.isInteger(hd) || hd % 2) throw new Error(`randomIdefics3: text head dim ${hd} is not an even integer`);
  if (t.heads % kv) throw new Error(`randomIdefics3: ${t.heads} heads is not a multiple of ${kv} KV heads`);
  if (v.hidden % v.heads) throw new Error(`randomIdefics3: vision hidden ${v.hidden} is not a multiple of ${v.heads} heads`);
  const side = v.imageSize / v.patchSize;
  if (!Number.isInteger(side) || side % s) throw new Error(`randomIdefics3: ${v.imageSize}/${v.patchSize} patches per side is not a multiple of scale_factor ${s}`);
  const tok = idefics3TokenIds(spec);
  const ids = [tok.endOfText, tok.imStart, tok.imEnd, tok.globalImg, ...tok.rowCol.flat(), tok.fakeTokenAroundImage, tok.image, tok.endOfUtterance];
  for (const id of ids) if (!Number.isInteger(id) || id < 0 || id >= t.vocab) throw new Error(`randomIdefics3: token id ${id} outside the vocabulary of ${t.vocab}`);
  if (new Set(ids).size !== ids.length) throw new Error(`randomIdefics3: special token ids collide (vocab ${t.vocab} is too small for the default layout)`);

  const entries: TensorEntry[] = [];
  // Uniform in offset +- std * sqrt(3) (standard deviation std).
  const add = (name: string, shape: number[], std: number, offset = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const vals = new Float32Array(n);
    for (let i = 0; i < n; i++) vals[i] = offset + (rand() * 2 - 1) * std * Math.sqrt(3);
    entries.push({ name, dtype, shape, bytes: encodeFromF32(vals, dtype.toLowerCase() as 'f32' | 'f16' | 'bf16') });
  };
  // Residual streams (embeddings, image features, what out_proj / fc2 / o_proj / down_proj write) at ~`small`;
  // projections read by attention and MLPs are unit-gain (1/sqrt(fan in)) after the norms.
  const small = 0.01;
  const unit = (fanIn: number) => 1 / Math.sqrt(fanIn);
  const vp = spec.bareNames ? 'vision_model.' : 'model.vision_model.';
  const cp = spec.bareNames ? 'connector.' : 'model.connector.';
  const tp = spec.bareNames ? 'text_model.' : 'model.text_model.';
  const K = 3 * v.patchSize * v.patchSize;
  add(vp + 'embeddings.patch_embedding.weight', [v.hidden, 3, v.patchSize, v.patchSize], small / Math.sqrt(K / 3));
  add(vp + 'embeddings.patch_embedding.bias', [v.hidden], small / 2);
  add(vp + 'embeddings.position_embedding.weight', [side * side, v.hidden], small);
  for (let l = 0; l < v.layers; l++) {
    const p = `${vp}encoder.layers.${l}.`;
    for (const x of ['q', 'k', 'v']) {
      add(`${p}self_attn.${x}_proj.weight`, [v.hidden, v.hidden], unit(v.hidden));
      add(`${p}self_attn.${x}_proj.bias`, [v.hidden], 0.1);
    }
    add(`${p}self_attn.out_proj.weight`, [v.hidden, v.hidden], small * unit(v.hidden));
    add(`${p}self_attn.out_proj.bias`, [v.hidden], small / 2);
    for (const x of ['layer_norm1', 'layer_norm2']) {
      add(`${p}${x}.weight`, [v.hidden], 0.1, 1);
      add(`${p}${x}.bias`, [v.hidden], 0.1);
    }
    add(`${p}mlp.fc1.weight`, [v.intermediate, v.hidden], unit(v.hidden));
    add(`${p}mlp.fc1.bias`, [v.intermediate], 0.1);
    add(`${p}mlp.fc2.weight`, [v.hidden, v.intermediate], small * unit(v.intermediate));
    add(`${p}mlp.fc2.bias`, [v.hidden], small / 2);
  }
  add(vp + 'post_layernorm.weight', [v.hidden], 0.1, 1);
  add(vp + 'post_layernorm.bias', [v.hidden], 0.1);
  const featIn = v.hidden * s * s;
  add(cp + 'modality_projection.proj.weight', [t.hidden, featIn], small * unit(featIn));
  add(tp + 'embed_tokens.weight', [t.vocab, t.hidden], small);
  for (let l = 0; l < t.layers; l++) {
    const p = `${tp}layers.${l}.`;
    add(`${p}self_attn.q_proj.weight`, [t.heads * hd, t.hidden], unit(t.hidden));
    add(`${p}self_attn.k_proj.weight`, [kv * hd, t.hidden], unit(t.hidden));
    add(`${p}self_attn.v_proj.weight`, [kv * hd, t.hidden], unit(t.hidden));
    add(`${p}self_attn.o_proj.weight`, [t.hidden, t.heads * hd], small * unit(t.heads * hd));
    add(`${p}mlp.gate_proj.weight`, [t.intermediate, t.hidden], unit(t.hidden));
    add(`${p}mlp.up_proj.weight`, [t.intermediate, t.hidden], unit(t.hidden));
    add(`${p}mlp.down_proj.weight`, [t.hidden, t.intermediate], small * unit(t.intermediate));
    add(`${p}input_layernorm.weight`, [t.hidden], 0.1, 1);
    add(`${p}post_attention_layernorm.weight`, [t.hidden], 0.1, 1);
  }
  add(tp + 'norm.weight', [t.hidden], 0.1, 1);
  if (!spec.tied) add('lm_head.weight', [t.vocab, t.hidden], unit(t.hidden));

  const smol = modelType === 'smolvlm';
  const torchDtype = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' }[dtype];
  const config = {
    architectures: [smol ? 'SmolVLMForConditionalGeneration' : 'Idefics3ForConditionalGeneration'],
    model_type: modelType,
    image_token_id: tok.image,
    scale_factor: s,
    pad_token_id: tok.imEnd,
    tie_word_embeddings: spec.tied ?? false,
    torch_dtype: torchDtype,
    use_cache: true,
    vocab_size: t.vocab,
    text_config: {
      model_type: 'llama',
      architectures: ['LlamaForCausalLM'],
      hidden_act: 'silu',
      hidden_size: t.hidden,
      intermediate_size: t.intermediate,
      num_hidden_layers: t.layers,
      num_attention_heads: t.heads,
      num_key_value_heads: kv,
      head_dim: hd,
      rms_norm_eps: t.eps ?? 1e-5,
      rope_theta: t.ropeTheta ?? 100000,
      rope_scaling: null,
      attention_bias: false,
      mlp_bias: false,
      max_position_embeddings: 8192,
      tie_word_embeddings: spec.tied ?? false,
      bos_token_id: tok.imStart,
      eos_token_id: tok.imEnd,
      pad_token_id: tok.imEnd,
      torch_dtype: torchDtype,
      vocab_size: t.vocab,
    },
    vision_config: {
      model_type: smol ? 'smolvlm_vision' : 'idefics3_vision',
      hidden_size: v.hidden,
      intermediate_size: v.intermediate,
      num_hidden_layers: v.layers,
      num_attention_heads: v.heads,
      num_channels: 3,
      image_size: v.imageSize,
      patch_size: v.patchSize,
      layer_norm_eps: v.eps ?? 1e-6,
      hidden_act: v.act ?? 'gelu_pytorch_tanh',
      attention_dropout: 0.0,
    },
  };
  const processorClass = smol ? 'SmolVLMProcessor' : 'Idefics3Processor';
  const preprocessor = {
    do_convert_rgb: true,
    do_image_splitting: spec.doImageSplitting ?? true,
    do_normalize: true,
    do_pad: true,
    do_rescale: true,
    do_resize: true,
    image_mean: [0.5, 0.5, 0.5],
    image_std: [0.5, 0.5, 0.5],
    image_processor_type: smol ? 'SmolVLMImageProcessor' : 'Idefics3ImageProcessor',
    max_image_size: { longest_edge: v.imageSize },
    processor_class: processorClass,
    resample: 1,
    rescale_factor: 1 / 255,
    size: { longest_edge: spec.longestEdge ?? 2 * v.imageSize },
  };
  const processor = { image_seq_len: (side * side) / (s * s), processor_class: processorClass };
  return {
    'config.json': JSON.stringify(config, null, 2),
    'preprocessor_config.json': JSON.stringify(preprocessor, null, 2),
    'processor_config.json': JSON.stringify(processor, null, 2),
    'model.safetensors': encodeSafetensors(entries, { format: 'pt' }),
  };
}

/** Write a random checkpoint folder (Node). */
export async function writeRandomIdefics3(dir: string, spec: RandomIdefics3Spec): Promise<void> {
  await writeCheckpointFolder(dir, randomIdefics3(spec));
}
