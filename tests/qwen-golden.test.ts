// Qwen2-VL and Qwen2.5-VL through loadModel against the float64 goldens of tiny-qwen2vl / tiny-qwen25vl (see their
// READMEs): the processor's resized pixels (bit-exact) and patches, vision states, the windowed and full vision
// patterns, image features, M-RoPE positions and rope_deltas, all logits, a text pattern, z at the last position,
// greedy tokens with their decode positions, and every intervention case.

import { describe, expect, it, beforeAll } from 'vitest';
import { join } from 'node:path';
import { loadImageFile } from '../src/io/image.js';
import { loadModel } from '../src/models/load.js';
import type { PatchedImage, RunResult } from '../src/models/model.js';
import type { VlmModel } from '../src/models/vlm.js';
import { QwenModel } from '../src/models/qwen2-vl/model.js';
import { qwenPreprocess } from '../src/models/qwen2-vl/image-processor.js';
import { parseCapture } from '../src/spec/spec.js';
import { expectClose, gpuContext } from './helpers/gpu.js';
import { fixtureDir, golden } from './helpers/fixtures.js';
import { checkGoldenIntervention, flat } from './helpers/compare.js';

for (const name of ['tiny-qwen2vl', 'tiny-qwen25vl'] as const) {
  describe(`${name} golden`, () => {
    const dir = fixtureDir(name);
    const g = golden(name);
    const is25 = name === 'tiny-qwen25vl';
    const L = g.prompt_len as number;
    const V = 256;
    let model: VlmModel;
    let image: PatchedImage;
    let plain: RunResult;

    beforeAll(async () => {
      const ctx = await gpuContext();
      model = await loadModel(ctx, dir);
      expect(model).toBeInstanceOf(QwenModel);
      const img = await loadImageFile(join(dir, 'image.png'));
      const pre = qwenPreprocess(img, (model as QwenModel).imageProcessor);
      expect(Array.from(pre.resized.data)).toEqual(flat(g.image.resized_uint8));
      image = model.preprocess(img) as PatchedImage;
      plain = await model.run({
        ids: g.input_ids,
        pixelValues: [image],
        capture: parseCapture(
          {
            logits: 'all',
            pattern: [{ tower: 'text', layer: 1 }, { tower: 'vision', layer: 0 }, ...(is25 ? [{ tower: 'vision', layer: 1 }] : [])],
            z: { positions: 'last' },
            residual: Array.from({ length: (model.dims.vision.layers as number) + 1 }, (_, layer) => ({ tower: 'vision', layer })),
            image_features: true,
          },
          model.dims,
        ),
        maxNewTokens: 6,
      });
    });

    it('patches and grid match the processor reference', () => {
      expect(image.grid).toEqual(g.image_grid_thw[0]);
      expectClose(image.pixelValues, flat(g.pixel_values), 1e-6, 0, 'pixel_values');
    });

    it('vision hidden states match (sums, rows in patch order)', () => {
      const sums = plain.residual.map((r) => r.data.reduce((a, b) => a + b, 0));
      expectClose(sums, g.vision_hidden_states_sum, 1e-3, 1e-5, 'vision_hidden_states_sum');
      const E = plain.residual[0].shape[1];
      expectClose(plain.residual[0].data.subarray(0, E), g.vision_patch_embed_row0, 1e-4, 0, 'vision_patch_embed_row0');
      const last = plain.residual[plain.residual.length - 1];
      expectClose(last.data.subarray(0, E), g.vision_last_block_row0, 1e-3, 0, 'vision_last_block_row0');
      if (g.vision_last_block) expectClose(last.data, flat(g.vision_last_block), 1e-3, 0, 'vision_last_block');
    });

    it('vision attention patterns match (windowed and full blocks, patch order)', () => {
      const v0 = plain.pattern.find((p) => p.tower === 'vision' && p.layer === 0)!;
      expect(v0.image).toBe(0);
      expectClose(v0.data, flat(g.vision_attention_pattern_layer0), 1e-4, 0, 'vision_attention_pattern_layer0');
      if (is25) {
        const v1 = plain.pattern.find((p) => p.tower === 'vision' && p.layer === 1)!;
        expectClose(v1.data, flat(g.vision_attention_pattern_layer1), 1e-4, 0, 'vision_attention_pattern_layer1');
      }
    });

    it('image features, positions and rope_deltas match', () => {
      expectClose(plain.imageFeatures!.data, flat(g.image_features), 1e-3, 0, 'image_features');
      expect(plain.positions!.shape).toEqual([3, L]);
      expect(Array.from(plain.positions!.data)).toEqual(flat(g.position_ids));
      expect(plain.positions!.ropeDelta).toBe(g.rope_deltas);
    });

    it('all logits, the text layer-1 pattern and z at the last position match within 1e-3', () => {
      expect(plain.logits!.shape).toEqual([L, V]);
      expectClose(plain.logits!.data, flat(g.logits), 1e-3, 0, 'logits');
      const p = plain.pattern.find((x) => x.tower === 'text')!;
      expect(p.shape).toEqual([4, L, L]);
      expectClose(p.data, flat(g.attention_pattern_layer1), 1e-3, 0, 'attention_pattern_layer1');
      expectClose(plain.z!.data, flat(g.z_last_position), 1e-3, 0, 'z_last_position');
    });

    it('greedy decoding (KV cache, rope_deltas) gives the reference tokens', () => {
      expect(plain.tokens).toEqual(g.greedy_6);
      // Each token is fed back at its sequence index + rope_deltas.
      expect(g.greedy_decode_positions).toEqual(g.greedy_6.map((_: number, i: number) => L + i + g.rope_deltas));
    });

    for (const c of Object.keys(g.interventions)) {
      it(`intervention ${c}: last logits within 1e-3${g.interventions[c].greedy_6 ? ', greedy tokens' : ''}`, () =>
        checkGoldenIntervention(model, { ids: g.input_ids, pixelValues: [image] }, g.interventions[c], c));
    }
  });
}
