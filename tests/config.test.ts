import { describe, expect, it } from 'vitest';
import { ConfigError, imageTokenCount, parseLlavaConfig } from '../src/models/config.js';

const tiny = {
  model_type: 'llava',
  image_token_index: 250,
  vision_feature_layer: -2,
  vision_feature_select_strategy: 'default',
  text_config: { model_type: 'llama', hidden_size: 64, intermediate_size: 128, num_hidden_layers: 3, num_attention_heads: 4, rms_norm_eps: 1e-5, vocab_size: 256 },
  vision_config: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 3, num_attention_heads: 4, image_size: 56, patch_size: 14 },
};

describe('LLaVA config', () => {
  it('reads the fixture-style config with Hugging Face defaults for absent keys', () => {
    const c = parseLlavaConfig(tiny);
    expect(c.text).toMatchObject({ hidden: 64, heads: 4, kvHeads: 4, headDim: 16, eps: 1e-5, ropeTheta: 10000, act: 'silu', vocab: 256 });
    expect(c.vision).toMatchObject({ hidden: 32, headDim: 8, eps: 1e-5, act: 'quick_gelu', channels: 3 });
    expect(c.featureStates).toEqual([2]); // hidden_states[-2] of 4 entries
    expect(c.projectorAct).toBe('gelu');
    expect(imageTokenCount(c)).toBe(16);
  });

  it('uses LlavaConfig defaults (CLIP-L/14-336, Llama-7B) when sub-configs are absent', () => {
    // llava-1.5-7b-hf pads the vocabulary to 32064 so that <image> = 32000 fits.
    const c = parseLlavaConfig({ model_type: 'llava', text_config: { vocab_size: 32064 } });
    expect(c.vision).toMatchObject({ hidden: 1024, layers: 24, heads: 16, imageSize: 336, patchSize: 14 });
    expect(c.text).toMatchObject({ hidden: 4096, layers: 32, heads: 32, intermediate: 11008, vocab: 32064, eps: 1e-6 });
    expect(c.imageTokenIndex).toBe(32000);
    expect(imageTokenCount(c)).toBe(576);
  });

  it('honours GQA, rope_theta (also under rope_parameters), feature layer lists and the full strategy', () => {
    const c = parseLlavaConfig({
      ...tiny,
      vision_feature_layer: [0, -1, 1],
      vision_feature_select_strategy: 'full',
      text_config: { ...tiny.text_config, num_key_value_heads: 2, rope_parameters: { rope_theta: 500000 } },
    });
    expect(c.text.kvHeads).toBe(2);
    expect(c.text.ropeTheta).toBe(500000);
    expect(c.featureStates).toEqual([0, 3, 1]);
    expect(imageTokenCount(c)).toBe(17);
  });

  const bad: [string, Record<string, unknown>, RegExp][] = [
    ['wrong model_type', { ...tiny, model_type: 'qwen2_vl' }, /"model_type" is 'qwen2_vl'/],
    ['feature layer out of range', { ...tiny, vision_feature_layer: -5 }, /"vision_feature_layer" -5 is out of range: the vision tower has 3 layers/],
    ['feature layer not an int', { ...tiny, vision_feature_layer: 'last' }, /"vision_feature_layer" must be an integer/],
    ['unknown strategy', { ...tiny, vision_feature_select_strategy: 'cls' }, /"vision_feature_select_strategy" must be 'default' or 'full'/],
    ['kv heads not dividing heads', { ...tiny, text_config: { ...tiny.text_config, num_key_value_heads: 3 } }, /"text_config\.num_key_value_heads" \(3\) must divide/],
    ['hidden size of wrong type', { ...tiny, text_config: { ...tiny.text_config, hidden_size: '64' } }, /"text_config\.hidden_size" must be an integer/],
    ['unsupported activation', { ...tiny, vision_config: { ...tiny.vision_config, hidden_act: 'relu6' } }, /"vision_config\.hidden_act": unsupported activation 'relu6'/],
    ['image token outside the vocabulary', { ...tiny, image_token_index: 999 }, /"image_token_index" 999 is outside the vocabulary of 256/],
    ['patch not dividing the image', { ...tiny, vision_config: { ...tiny.vision_config, patch_size: 15 } }, /"vision_config\.patch_size" \(15\) must divide image_size/],
    ['unsupported rope scaling', { ...tiny, text_config: { ...tiny.text_config, rope_scaling: { rope_type: 'yarn', factor: 4 } } }, /rope_scaling.*'yarn' is not supported/],
  ];
  for (const [name, cfg, msg] of bad) {
    it(`refuses ${name} with the file and key`, () => {
      expect(() => parseLlavaConfig(cfg, 'm/config.json')).toThrow(ConfigError);
      expect(() => parseLlavaConfig(cfg, 'm/config.json')).toThrow(msg);
      expect(() => parseLlavaConfig(cfg, 'm/config.json')).toThrow(/^m\/config\.json: /);
    });
  }
});
