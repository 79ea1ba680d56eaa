// Model configs read from a Hugging Face config.json, with the Hugging Face class defaults where keys are
// absent. The tower configs (ViT, decoder) are family-neutral: LLaVA, SmolVLM and Qwen2-VL differ in which
// norm, activation, rotary and attention window they pick, not in code.

import { type Activation, parseActivation } from '../../kernels/activation.js';

export interface VitConfig {
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  headDim: number;
  channels: number;
  imageSize: number;
  patchSize: number;
  eps: number;
  act: Activation;
}

export interface DecoderConfig {
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  eps: number;
  act: Activation;
  ropeTheta: number;
  vocab: number;
  maxPositions: number;
  /** Biases on q_proj / k_proj / v_proj (Llama attention_bias; always on in Qwen2). */
  qkvBias: boolean;
  /** Bias on o_proj (Llama attention_bias; never in Qwen2). */
  oBias: boolean;
  mlpBias: boolean;
  tieEmbeddings: boolean;
}

export interface LlavaConfig {
  modelType: 'llava';
  vision: VitConfig;
  text: DecoderConfig;
  imageTokenIndex: number;
  projectorAct: Activation;
  projectorBias: boolean;
  /** `vision_feature_layer` as Hugging Face hidden_states indices (negative counts from the end). */
  featureLayers: number[];
  /** Resolved non-negative hidden_states indices (0 = embeddings after pre_layrnorm, i = output of layer i-1). */
  featureStates: number[];
  selectStrategy: 'default' | 'full';
  padTokenId: number | null;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Json = Record<string, unknown>;

/** Typed field reader that names the file and the key path in every error. */
export class Fields {
  constructor(
    private obj: Json,
    private file: string,
    private path: string,
  ) {}

  private where(key: string) {
    return `${this.file}: "${this.path}${key}"`;
  }

  has(key: string): boolean {
    return this.obj[key] !== undefined && this.obj[key] !== null;
  }

  int(key: string, dflt?: number, min = 1): number {
    const v = this.obj[key];
    if (v === undefined || v === null) {
      if (dflt === undefined) throw new ConfigError(`${this.where(key)} is missing (required)`);
      return dflt;
    }
    if (typeof v !== 'number' || !Number.isInteger(v)) throw new ConfigError(`${this.where(key)} must be an integer, got ${JSON.stringify(v)}`);
    if (v < min) throw new ConfigError(`${this.where(key)} must be >= ${min}, got ${v}`);
    return v;
  }

  num(key: string, dflt?: number): number {
    const v = this.obj[key];
    if (v === undefined || v === null) {
      if (dflt === undefined) throw new ConfigError(`${this.where(key)} is missing (required)`);
      return dflt;
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(`${this.where(key)} must be a number, got ${JSON.stringify(v)}`);
    return v;
  }

  bool(key: string, dflt: boolean): boolean {
    const v = this.obj[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') throw new ConfigError(`${this.where(key)} must be true or false, got ${JSON.stringify(v)}`);
    return v;
  }

  str(key: string, dflt?: string): string {
    const v = this.obj[key];
    if (v === undefined || v === null) {
      if (dflt === undefined) throw new ConfigError(`${this.where(key)} is missing (required)`);
      return dflt;
    }
    if (typeof v !== 'string') throw new ConfigError(`${this.where(key)} must be a string, got ${JSON.stringify(v)}`);
    return v;
  }

  act(key: string, dflt: string): Activation {
    const name = this.str(key, dflt);
    try {
      return parseActivation(name, this.where(key));
    } catch (e) {
      throw new ConfigError((e as Error).message);
    }
  }

  sub(key: string): Fields {
    const v = this.obj[key];
    if (v === undefined || v === null) return new Fields({}, this.file, `${this.path}${key}.`);
    if (typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(`${this.where(key)} must be an object`);
    return new Fields(v as Json, this.file, `${this.path}${key}.`);
  }

  raw(key: string): unknown {
    return this.obj[key];
  }

  fail(key: string, msg: string): never {
    throw new ConfigError(`${this.where(key)} ${msg}`);
  }
}

/** Defaults of a ViT vision config class (what an absent key means). */
export interface VitDefaults {
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  imageSize: number;
  patchSize: number;
  eps: number;
  act: string;
}

/** CLIPVisionConfig; `whole` = vision_config absent: LlavaConfig's CLIP-L/14-336 defaults. */
function parseClipVision(f: Fields, whole: boolean): VitConfig {
  const d = whole
    ? { hidden: 1024, intermediate: 4096, layers: 24, heads: 16, imageSize: 336, patchSize: 14, eps: 1e-5, act: 'quick_gelu' }
    : { hidden: 768, intermediate: 3072, layers: 12, heads: 12, imageSize: 224, patchSize: 32, eps: 1e-5, act: 'quick_gelu' };
  return parseVitConfig(f, d);
}

/** A CLIP / SigLIP-style vision_config (hidden_size, num_attention_heads, image_size, patch_size, ...). */
export function parseVitConfig(f: Fields, d: VitDefaults): VitConfig {
  const hidden = f.int('hidden_size', d.hidden);
  const heads = f.int('num_attention_heads', d.heads);
  if (hidden % heads) f.fail('num_attention_heads', `(${heads}) must divide hidden_size (${hidden})`);
  const imageSize = f.int('image_size', d.imageSize);
  const patchSize = f.int('patch_size', d.patchSize);
  if (imageSize % patchSize) f.fail('patch_size', `(${patchSize}) must divide image_size (${imageSize})`);
  return {
    hidden,
    intermediate: f.int('intermediate_size', d.intermediate),
    layers: f.int('num_hidden_layers', d.layers),
    heads,
    headDim: hidden / heads,
    channels: f.int('num_channels', 3),
    imageSize,
    patchSize,
    eps: f.num('layer_norm_eps', d.eps),
    act: f.act('hidden_act', d.act),
  };
}

/** LlamaConfig defaults (transformers), which LlavaConfig uses for an absent text_config. */
export function parseLlamaText(f: Fields, top: Fields): DecoderConfig {
  const hidden = f.int('hidden_size', 4096);
  const heads = f.int('num_attention_heads', 32);
  const kvHeads = f.int('num_key_value_heads', heads);
  if (heads % kvHeads) f.fail('num_key_value_heads', `(${kvHeads}) must divide num_attention_heads (${heads})`);
  const headDim = f.int('head_dim', hidden % heads === 0 ? hidden / heads : undefined);
  const rope = f.sub('rope_scaling');
  if (rope.has('rope_type') || rope.has('type')) {
    const kind = rope.str(rope.has('rope_type') ? 'rope_type' : 'type');
    if (kind !== 'default') f.fail('rope_scaling', `type '${kind}' is not supported yet (only default rotary)`);
  }
  // transformers v5 moved rope_theta into rope_parameters.
  const ropeParams = f.sub('rope_parameters');
  const ropeTheta = f.has('rope_theta') ? f.num('rope_theta') : ropeParams.num('rope_theta', 10000);
  if (headDim % 2) f.fail('head_dim', `must be even for rotary embeddings, got ${headDim}`);
  return {
    hidden,
    intermediate: f.int('intermediate_size', 11008),
    layers: f.int('num_hidden_layers', 32),
    heads,
    kvHeads,
    headDim,
    eps: f.num('rms_norm_eps', 1e-6),
    act: f.act('hidden_act', 'silu'),
    ropeTheta,
    vocab: f.int('vocab_size', top.has('vocab_size') ? top.int('vocab_size') : 32000),
    maxPositions: f.int('max_position_embeddings', 2048),
    qkvBias: f.bool('attention_bias', false),
    oBias: f.bool('attention_bias', false),
    mlpBias: f.bool('mlp_bias', false),
    tieEmbeddings: f.bool('tie_word_embeddings', top.bool('tie_word_embeddings', false)),
  };
}

export function parseLlavaConfig(json: Json, file = 'config.json'): LlavaConfig {
  const top = new Fields(json, file, '');
  const modelType = top.str('model_type', 'llava');
  if (modelType !== 'llava') {
    top.fail('model_type', `is '${modelType}'; this loader reads LLaVA checkpoints (model_type 'llava')`);
  }
  const textF = top.sub('text_config');
  const textType = textF.str('model_type', 'llama');
  if (textType !== 'llama' && textType !== 'mistral' && textType !== 'vicuna') {
    textF.fail('model_type', `'${textType}' is not supported as a LLaVA language model yet (llama, mistral)`);
  }
  const visionF = top.sub('vision_config');
  const visionType = visionF.str('model_type', 'clip_vision_model');
  if (visionType !== 'clip_vision_model') {
    visionF.fail('model_type', `'${visionType}' is not supported as a LLaVA vision tower yet (clip_vision_model)`);
  }
  const vision = parseClipVision(visionF, !top.has('vision_config'));
  const text = parseLlamaText(textF, top);

  // vision_feature_layer: an int or a list of ints, Hugging Face hidden_states indices.
  const rawLayer = top.raw('vision_feature_layer');
  const featureLayers = rawLayer === undefined || rawLayer === null ? [-2] : Array.isArray(rawLayer) ? rawLayer : [rawLayer];
  const nStates = vision.layers + 1;
  const featureStates = featureLayers.map((l) => {
    if (typeof l !== 'number' || !Number.isInteger(l)) top.fail('vision_feature_layer', `must be an integer or a list of integers, got ${JSON.stringify(rawLayer)}`);
    const idx = l < 0 ? nStates + l : l;
    if (idx < 0 || idx >= nStates) {
      top.fail('vision_feature_layer', `${l} is out of range: the vision tower has ${vision.layers} layers, so hidden_states has ${nStates} entries (valid: ${-nStates}..${nStates - 1})`);
    }
    return idx;
  });
  if (featureStates.length === 0) top.fail('vision_feature_layer', 'must not be an empty list');
  const strategy = top.str('vision_feature_select_strategy', 'default') as LlavaConfig['selectStrategy'];
  if (strategy !== 'default' && strategy !== 'full') top.fail('vision_feature_select_strategy', `must be 'default' or 'full', got '${strategy}'`);
  const imageTokenIndex = top.has('image_token_index') ? top.int('image_token_index', undefined, 0) : top.int('image_token_id', 32000, 0);
  if (imageTokenIndex >= text.vocab) top.fail('image_token_index', `${imageTokenIndex} is outside the vocabulary of ${text.vocab} tokens`);
  return {
    modelType: 'llava',
    vision,
    text,
    imageTokenIndex,
    projectorAct: top.act('projector_hidden_act', 'gelu'),
    projectorBias: top.bool('multimodal_projector_bias', true),
    featureLayers: featureLayers as number[],
    featureStates,
    selectStrategy: strategy,
    padTokenId: top.has('pad_token_id') ? top.int('pad_token_id', undefined, 0) : null,
  };
}

/** Number of image tokens one image expands to under this config. */
export function imageTokenCount(cfg: LlavaConfig): number {
  const grid = cfg.vision.imageSize / cfg.vision.patchSize;
  return grid * grid + (cfg.selectStrategy === 'full' ? 1 : 0);
}
