// Qwen2-VL / Qwen2.5-VL config.json (transformers configuration_qwen2_vl.py / configuration_qwen2_5_vl.py):
// flat (text keys at the top level, as the hub files are) or nested under `text_config` (configs re-saved by
// recent transformers); `rope_scaling` or `rope_parameters` carrying `mrope_section` (M-RoPE whatever its
// `type` / `rope_type` says, "default" included); the vision width is `embed_dim` in Qwen2-VL but `hidden_size`
// in Qwen2.5-VL, whose `out_hidden_size` is the merger output (Qwen2-VL's `hidden_size` is).

import type { Activation } from '../../../kernels/activation.js';
import { ConfigError, type DecoderConfig, Fields } from '../config.js';

export interface QwenVisionConfig {
  /** ViT width (Qwen2-VL embed_dim, Qwen2.5-VL hidden_size). */
  hidden: number;
  heads: number;
  headDim: number;
  layers: number;
  intermediate: number;
  act: Activation;
  norm: 'layernorm' | 'rmsnorm';
  mlp: 'fc' | 'gated';
  eps: number;
  channels: number;
  patchSize: number;
  temporalPatchSize: number;
  mergeSize: number;
  /** Merger output width (= text hidden). */
  outHidden: number;
  /** Qwen2.5-VL: window attention side in pixels, and the blocks that attend over the whole image instead. */
  windowSize: number | null;
  fullAttentionBlocks: number[];
}

export interface QwenConfig {
  modelType: 'qwen2_vl' | 'qwen2_5_vl';
  vision: QwenVisionConfig;
  text: DecoderConfig;
  mropeSection: number[];
  imageTokenId: number;
  videoTokenId: number;
  visionStartTokenId: number;
  visionEndTokenId: number;
}

export function parseQwenConfig(json: Record<string, unknown>, file = 'config.json'): QwenConfig {
  const top = new Fields(json, file, '');
  const type = top.str('model_type');
  if (type !== 'qwen2_vl' && type !== 'qwen2_5_vl') top.fail('model_type', `is '${type}'; this parser reads qwen2_vl and qwen2_5_vl`);
  const modelType = type as QwenConfig['modelType'];
  const is25 = modelType === 'qwen2_5_vl';
  // Nested text_config when it holds the text model's keys, else the flat hub layout.
  const nested = top.has('text_config') && top.sub('text_config').has('hidden_size');
  const t = nested ? top.sub('text_config') : top;

  const hidden = t.int('hidden_size');
  const heads = t.int('num_attention_heads');
  const kvHeads = t.int('num_key_value_heads', heads);
  if (heads % kvHeads) t.fail('num_key_value_heads', `(${kvHeads}) must divide num_attention_heads (${heads})`);
  if (hidden % heads) t.fail('num_attention_heads', `(${heads}) must divide hidden_size (${hidden})`);
  const headDim = hidden / heads;
  if (headDim % 2) t.fail('hidden_size', `/ num_attention_heads gives head_dim ${headDim}, which must be even for rotary embeddings`);

  // M-RoPE parameters: rope_scaling (hub files, transformers 4.x) or rope_parameters (transformers 5), in the
  // text part or at the top level.
  const ropeKey = [t, top].flatMap((f) => ['rope_scaling', 'rope_parameters'].filter((k) => f.has(k) && f.sub(k).has('mrope_section')).map((k) => ({ f, k })))[0];
  if (!ropeKey) t.fail('rope_scaling', 'is missing or has no "mrope_section" (Qwen2-VL needs M-RoPE sections, e.g. {"type": "mrope", "mrope_section": [16, 24, 24]})');
  const rope = ropeKey.f.sub(ropeKey.k);
  const rawSection = rope.raw('mrope_section');
  if (!Array.isArray(rawSection) || rawSection.length !== 3 || !rawSection.every((x) => Number.isInteger(x) && x >= 0)) {
    rope.fail('mrope_section', `must be three non-negative integers (t, h, w), got ${JSON.stringify(rawSection)}`);
  }
  const mropeSection = rawSection as number[];
  if (mropeSection.reduce((a, b) => a + b, 0) !== headDim / 2) {
    rope.fail('mrope_section', `${JSON.stringify(mropeSection)} must sum to head_dim / 2 = ${headDim / 2}`);
  }
  const kind = rope.has('rope_type') ? rope.str('rope_type') : rope.has('type') ? rope.str('type') : 'default';
  if (kind !== 'default' && kind !== 'mrope') rope.fail(rope.has('rope_type') ? 'rope_type' : 'type', `'${kind}' is not supported (M-RoPE: "mrope" or "default")`);
  const ropeTheta = t.has('rope_theta') ? t.num('rope_theta') : rope.has('rope_theta') ? rope.num('rope_theta') : top.num('rope_theta', 1e6);
  if (!(ropeTheta > 0)) t.fail('rope_theta', `must be > 0, got ${ropeTheta}`);

  const vocab = t.int('vocab_size', top.has('vocab_size') ? top.int('vocab_size') : undefined);
  const text: DecoderConfig = {
    hidden,
    intermediate: t.int('intermediate_size'),
    layers: t.int('num_hidden_layers'),
    heads,
    kvHeads,
    headDim,
    eps: t.num('rms_norm_eps', 1e-6),
    act: t.act('hidden_act', 'silu'),
    ropeTheta,
    vocab,
    maxPositions: t.int('max_position_embeddings', 32768),
    qkvBias: true,
    oBias: false,
    mlpBias: false,
    tieEmbeddings: t.bool('tie_word_embeddings', top.bool('tie_word_embeddings', false)),
  };

  const v = top.sub('vision_config');
  const width = is25 ? v.int('hidden_size', 1280) : v.int('embed_dim', 1280);
  const vHeads = v.int('num_heads', 16);
  if (width % vHeads) v.fail('num_heads', `(${vHeads}) must divide the vision width (${width})`);
  const vHeadDim = width / vHeads;
  if (vHeadDim % 4) v.fail('num_heads', `gives a vision head_dim of ${vHeadDim}; the 2-D vision rotary needs a multiple of 4`);
  const outHidden = is25 ? v.int('out_hidden_size', hidden) : v.int('hidden_size', hidden);
  if (outHidden !== hidden) v.fail(is25 ? 'out_hidden_size' : 'hidden_size', `(${outHidden}) is the merger output and must equal the text hidden_size (${hidden})`);
  const layers = v.int('depth', 32);
  const mergeSize = v.int('spatial_merge_size', 2);
  const patchSize = v.int('patch_size', v.int('spatial_patch_size', 14));
  let windowSize: number | null = null;
  let fullAttentionBlocks: number[] = [];
  if (is25) {
    windowSize = v.int('window_size', 112);
    if (Math.floor(Math.floor(windowSize / mergeSize) / patchSize) < 1) {
      v.fail('window_size', `(${windowSize}) must span at least one merged patch (spatial_merge_size ${mergeSize} x patch_size ${patchSize})`);
    }
    const raw = v.raw('fullatt_block_indexes') ?? [7, 15, 23, 31];
    if (!Array.isArray(raw)) v.fail('fullatt_block_indexes', `must be a list of block indices, got ${JSON.stringify(raw)}`);
    // Numbers, whatever JSON spelled them as ("7" would otherwise never equal block 7).
    fullAttentionBlocks = (raw as unknown[]).map((x): number => {
      const n = typeof x === 'string' && x.trim() !== '' ? Number(x) : x;
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) v.fail('fullatt_block_indexes', `must hold block indices, got ${JSON.stringify(x)}`);
      return n as number;
    });
  }
  const vision: QwenVisionConfig = {
    hidden: width,
    heads: vHeads,
    headDim: vHeadDim,
    layers,
    intermediate: is25 ? v.int('intermediate_size', 3420) : width * v.num('mlp_ratio', 4),
    act: v.act('hidden_act', is25 ? 'silu' : 'quick_gelu'),
    norm: is25 ? 'rmsnorm' : 'layernorm',
    mlp: is25 ? 'gated' : 'fc',
    eps: 1e-6,
    channels: v.int('in_channels', v.int('in_chans', 3)),
    patchSize,
    temporalPatchSize: v.int('temporal_patch_size', 2),
    mergeSize,
    outHidden,
    windowSize,
    fullAttentionBlocks,
  };
  if (!Number.isInteger(vision.intermediate)) v.fail('mlp_ratio', `gives a non-integer MLP width ${vision.intermediate}`);

  const id = (key: string, dflt: number) => {
    const f = top.has(key) ? top : t.has(key) ? t : top;
    const x = f.int(key, dflt, 0);
    if (x >= vocab) f.fail(key, `${x} is outside the vocabulary of ${vocab} tokens`);
    return x;
  };
  return {
    modelType,
    vision,
    text,
    mropeSection,
    imageTokenId: id('image_token_id', 151655),
    videoTokenId: id('video_token_id', 151656),
    visionStartTokenId: id('vision_start_token_id', 151652),
    visionEndTokenId: id('vision_end_token_id', 151653),
  };
}

export { ConfigError };
