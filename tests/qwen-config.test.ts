// parseQwenConfig and loadModel's dispatch on model_type: the layouts real Qwen configs come in (flat hub files,
// text_config nesting, rope_scaling vs rope_parameters, rope_type "default" beside mrope_section), the naming
// trap of the vision widths, fullatt_block_indexes as numbers, and one-line errors naming the file and key.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseQwenConfig } from '../src/models/qwen2-vl/config.js';
import { modelDimsFromConfig, modelTypeOf } from '../src/models/load.js';
import { fixtureDir } from './helpers/fixtures.js';

const read = (name: string) => JSON.parse(readFileSync(join(fixtureDir(name), 'config.json'), 'utf8')) as Record<string, unknown>;
const q2 = read('tiny-qwen2vl');
const q25 = read('tiny-qwen25vl');

/** The flat hub config re-saved the way transformers v5 nests it: text keys under text_config, rope_parameters. */
function nest(flat: Record<string, unknown>): Record<string, unknown> {
  const textKeys = ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads', 'rms_norm_eps', 'vocab_size', 'max_position_embeddings', 'hidden_act', 'rope_theta'];
  const text: Record<string, unknown> = { model_type: `${flat.model_type}_text` };
  const top: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(flat)) {
    if (textKeys.includes(k)) text[k] = v;
    else if (k !== 'rope_scaling') top[k] = v;
  }
  text.rope_parameters = { rope_type: 'default', mrope_section: (flat.rope_scaling as { mrope_section: number[] }).mrope_section, rope_theta: flat.rope_theta };
  delete text.rope_theta;
  top.text_config = text;
  return top;
}

describe('parseQwenConfig', () => {
  it('reads the Qwen2-VL fixture: embed_dim is the ViT width, vision hidden_size the merger output', () => {
    const c = parseQwenConfig(q2);
    expect(c.modelType).toBe('qwen2_vl');
    expect(c.vision).toMatchObject({ hidden: 32, heads: 4, headDim: 8, layers: 3, intermediate: 128, act: 'quick_gelu', norm: 'layernorm', mlp: 'fc', outHidden: 64, windowSize: null });
    expect(c.text).toMatchObject({ hidden: 64, heads: 4, kvHeads: 2, headDim: 16, layers: 3, ropeTheta: 100, qkvBias: true, oBias: false, mlpBias: false, tieEmbeddings: false });
    expect(c.mropeSection).toEqual([2, 3, 3]);
    expect([c.imageTokenId, c.visionStartTokenId, c.visionEndTokenId]).toEqual([251, 248, 249]);
  });

  it('reads the Qwen2.5-VL fixture: hidden_size is the ViT width, out_hidden_size the merger output, windows', () => {
    const c = parseQwenConfig(q25);
    expect(c.vision).toMatchObject({ hidden: 32, intermediate: 80, act: 'silu', norm: 'rmsnorm', mlp: 'gated', outHidden: 64, windowSize: 56, fullAttentionBlocks: [1, 3] });
  });

  it('reads a nested (text_config + rope_parameters) config like the flat one', () => {
    for (const flat of [q2, q25]) expect(parseQwenConfig(nest(flat))).toEqual(parseQwenConfig(flat));
  });

  it('keeps M-RoPE when rope_scaling says rope_type "default" next to an mrope_section', () => {
    const c = parseQwenConfig({ ...q25, rope_scaling: { rope_type: 'default', type: 'default', mrope_section: [2, 3, 3] } });
    expect(c.mropeSection).toEqual([2, 3, 3]);
  });

  it('compares fullatt_block_indexes as numbers', () => {
    const c = parseQwenConfig({ ...q25, vision_config: { ...(q25.vision_config as object), fullatt_block_indexes: ['1', 3] } });
    expect(c.vision.fullAttentionBlocks).toEqual([1, 3]);
    expect(c.vision.fullAttentionBlocks.includes(1)).toBe(true);
  });

  it('takes tie_word_embeddings from the top level or the text part', () => {
    expect(parseQwenConfig({ ...q2, tie_word_embeddings: true }).text.tieEmbeddings).toBe(true);
    const n = nest(q2);
    (n.text_config as Record<string, unknown>).tie_word_embeddings = true;
    expect(parseQwenConfig(n).text.tieEmbeddings).toBe(true);
  });

  it('refuses bad configs in one line naming the file and key', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ ...q2, num_hidden_layers: undefined }, /config\.json: "num_hidden_layers" is missing \(required\)/],
      [{ ...q2, rope_scaling: undefined }, /"rope_scaling" is missing or has no "mrope_section"/],
      [{ ...q2, rope_scaling: { type: 'mrope', mrope_section: [2, 3, 4] } }, /mrope_section" \[2,3,4\] must sum to head_dim \/ 2 = 8/],
      [{ ...q2, rope_scaling: { type: 'yarn', mrope_section: [2, 3, 3] } }, /"rope_scaling\.type" 'yarn' is not supported/],
      [{ ...q2, vision_config: { ...(q2.vision_config as object), hidden_size: 48 } }, /"vision_config\.hidden_size" \(48\) is the merger output and must equal the text hidden_size \(64\)/],
      [{ ...q25, vision_config: { ...(q25.vision_config as object), fullatt_block_indexes: ['x'] } }, /fullatt_block_indexes" must hold block indices, got "x"/],
      [{ ...q2, image_token_id: 9999 }, /"image_token_id" 9999 is outside the vocabulary of 256 tokens/],
      [{ ...q2, num_key_value_heads: 3 }, /"num_key_value_heads" \(3\) must divide num_attention_heads \(4\)/],
    ];
    for (const [cfg, re] of bad) {
      let msg = '';
      try {
        parseQwenConfig(cfg, 'qwen/config.json');
      } catch (e) {
        msg = (e as Error).message;
      }
      expect(msg, JSON.stringify(re)).toMatch(re);
      expect(msg).toMatch(/^qwen\/config\.json: /);
      expect(msg).not.toContain('\n');
    }
  });
});

describe('model_type dispatch', () => {
  it('names the supported families when model_type is missing or unknown', () => {
    expect(modelTypeOf(q2)).toBe('qwen2_vl');
    expect(modelTypeOf(q25)).toBe('qwen2_5_vl');
    expect(() => modelTypeOf({ model_type: 'mllama' }, 'm/config.json')).toThrow(
      /^m\/config\.json: model_type "mllama" is not supported \(supported: llava, qwen2_vl, qwen2_5_vl, idefics3, smolvlm\)$/,
    );
    expect(() => modelTypeOf({}, 'm/config.json')).toThrow(/"model_type" is missing \(supported: llava, qwen2_vl, qwen2_5_vl, idefics3, smolvlm\)/);
  });

  it('gives the towers dims without loading weights', () => {
    expect(modelDimsFromConfig(q25)).toEqual({ text: { layers: 3, heads: 4, headDim: 16 }, vision: { layers: 4, heads: 4, headDim: 8 } });
  });
});
