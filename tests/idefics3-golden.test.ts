// Idefics3 / SmolVLM through loadModel against the float64 golden of tiny-smolvlm (see its README): the processor's
// tiles (bit-exact uint8) and pixel values, NaViT position ids, per-tile vision states, image features, all logits,
// a text pattern, z at the last position, greedy tokens, and every intervention case; per-tile vision captures.

import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadImageFile } from '../src/io/image.js';
import { loadModel } from '../src/models/load.js';
import type { RunResult, TiledImage } from '../src/models/model.js';
import type { VlmModel } from '../src/models/vlm.js';
import { Idefics3Model } from '../src/models/idefics3/model.js';
import { idefics3Preprocess } from '../src/models/idefics3/image-processor.js';
import { navitPositionIds, pixelShuffleSource } from '../src/models/idefics3/vision.js';
import { parseCapture, parseInterventions } from '../src/spec/spec.js';
import { expectClose, gpuContext } from './helpers/gpu.js';
import { fixtureDir, golden } from './helpers/fixtures.js';

const flat = (a: unknown): number[] => (Array.isArray(a) ? a.flatMap(flat) : [a as number]);
const dir = fixtureDir('tiny-smolvlm');
const g = golden('tiny-smolvlm');
const L = g.prompt_len as number;

describe('tiny-smolvlm golden', () => {
  let model: VlmModel;
  let image: TiledImage;
  let plain: RunResult;

  beforeAll(async () => {
    const ctx = await gpuContext();
    model = await loadModel(ctx, dir);
    expect(model).toBeInstanceOf(Idefics3Model);
    const img = await loadImageFile(join(dir, 'image.png'));
    const pre = idefics3Preprocess(img, (model as Idefics3Model).imageProcessor);
    expect(pre.tileImages.map((t) => Array.from(t.data))).toEqual(g.image.tiles_uint8.map((t: unknown) => flat(t)));
    image = model.preprocess(img) as TiledImage;
    plain = await model.run({
      ids: g.input_ids,
      pixelValues: [image],
      capture: parseCapture(
        {
          logits: 'all',
          pattern: [{ tower: 'text', layer: 1 }, { tower: 'vision', layer: 0 }],
          z: { positions: 'last' },
          residual: [0, 1, 2, 3].map((layer) => ({ tower: 'vision', layer })),
          image_features: true,
        },
        model.dims,
      ),
      maxNewTokens: 6,
    });
  });

  it('tiles: layout, pixel values, position ids of a full tile', () => {
    expect([image.rows, image.cols, image.tiles]).toEqual([g.image.rows, g.image.cols, g.image.n_tiles]);
    expect(image.pixelAttentionMask).toBeUndefined();
    expectClose(image.pixelValues, flat(g.pixel_values), 1e-6, 0, 'pixel_values');
    expect(Array.from(navitPositionIds(4, 4, 4))).toEqual(g.vision_position_ids);
  });

  it('vision hidden states match per tile (captures say which tile)', () => {
    // One residual capture per (layer, tile): 4 layers x 5 tiles.
    expect(plain.residual).toHaveLength(4 * 5);
    for (let layer = 0; layer < 4; layer++) {
      const perTile = plain.residual.filter((r) => r.layer === layer);
      expect(perTile.map((r) => r.tile)).toEqual([0, 1, 2, 3, 4]);
      const sums = perTile.map((r) => r.data.reduce((a, b) => a + b, 0));
      expectClose(sums, g.vision_hidden_states_sum_per_tile[layer], 1e-3, 1e-5, `vision_hidden_states_sum_per_tile[${layer}]`);
      expectClose([sums.reduce((a, b) => a + b, 0)], [g.vision_hidden_states_sum[layer]], 1e-3, 1e-5, `vision_hidden_states_sum[${layer}]`);
    }
  });

  it('vision patterns come per tile, each a softmax over its own tile', () => {
    const vp = plain.pattern.filter((p) => p.tower === 'vision');
    expect(vp.map((p) => p.tile)).toEqual([0, 1, 2, 3, 4]);
    for (const p of vp) {
      expect(p.shape).toEqual([4, 16, 16]);
      for (let r = 0; r < 4 * 16; r++) expect(Math.abs(p.data.subarray(r * 16, r * 16 + 16).reduce((a, b) => a + b, 0) - 1)).toBeLessThan(1e-5);
    }
  });

  it('pixel shuffle order: token t = R*2 + C holds patches (2R+m, 2C+k), feature (m*2 + k)*E + d', () => {
    // The gather map the connector uses, against the golden's layout rule on tile 0's first token.
    expect(Array.from(pixelShuffleSource(4, 2))).toEqual([0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]);
    expect(g.pixel_shuffle_tile0).toHaveLength(4);
  });

  it('image features, all logits, the text layer-1 pattern and z at the last position match within 1e-3', () => {
    expectClose(plain.imageFeatures!.data, flat(g.image_features), 1e-3, 0, 'image_features');
    expect(plain.logits!.shape).toEqual([L, 300]);
    expectClose(plain.logits!.data, flat(g.logits), 1e-3, 0, 'logits');
    const p = plain.pattern.find((x) => x.tower === 'text')!;
    expectClose(p.data, flat(g.attention_pattern_layer1), 1e-3, 0, 'attention_pattern_layer1');
    expectClose(plain.z!.data, flat(g.z_last_position), 1e-3, 0, 'z_last_position');
  });

  it('greedy decoding gives the reference tokens', () => {
    expect(plain.tokens).toEqual(g.greedy_6);
  });

  for (const c of Object.keys(g.interventions)) {
    it(`intervention ${c}: last logits within 1e-3${g.interventions[c].greedy_6 ? ', greedy tokens' : ''}`, async () => {
      const spec = g.interventions[c];
      const r = await model.run({
        ids: g.input_ids,
        pixelValues: [image],
        interventions: parseInterventions(spec.spec, model.dims),
        maxNewTokens: spec.greedy_6 ? 6 : 0,
      });
      expectClose(r.logits!.data, spec.last_logits, 1e-3, 0, c);
      if (spec.greedy_6) expect(r.tokens).toEqual(spec.greedy_6);
    });
  }
});
