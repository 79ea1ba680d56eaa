// attention_knockout and vision_token_add (issue 13) against the float64 reference on the tiny-llava golden
// fixture and on a generated LLaVA checkpoint with GQA: logits of every row, the knocked layer's pattern (blocked
// edges exactly 0, rows still softmaxes), z at the last position, greedy tokens with the KV cache (decode steps
// knocked by scope or position), and the spec's one-line errors.

import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadImageFile } from '../src/io/image.js';
import { LlavaModel } from '../src/models/llava.js';
import { writeRandomLlava } from '../src/models/random-llava.js';
import { type InterventionSpec, parseCapture, parseInterventions, SpecError } from '../src/spec/spec.js';
import { expectClose, gpuContext, randn } from './helpers/gpu.js';
import { fixtureDir, golden } from './helpers/fixtures.js';
import { compareTokens, engineRun, tempDirs } from './helpers/compare.js';
import { type ReferenceLlava, referenceLlava } from './helpers/reference-llava.js';

const tempDir = tempDirs('vlmscope-knockout-');

interface Subject {
  model: LlavaModel;
  ref: ReferenceLlava;
  ids: number[];
  pixels: Float32Array[];
}

function cases(s: () => Subject): Record<string, unknown> {
  const { model, ids } = s();
  const L = ids.length;
  const D = model.cfg.text.hidden;
  const dir = (seed: number) => Array.from(randn(D, seed));
  return {
    knock_last_to_image_all_layers: { attention_knockout: [{ queries: 'last', keys: 'image' }] },
    knock_layer1_heads_range: { attention_knockout: [{ layers: [1], heads: [0, 2], queries: 'all', keys: { start: 1, end: 7 } }] },
    knock_positions_with_decode: { attention_knockout: [{ layers: [0, 2], queries: [L - 1, L + 1], keys: 'image' }] },
    knock_generated_to_prompt_start: { attention_knockout: [{ queries: 'generated', keys: [0, 1, 2] }] },
    knock_everything_of_a_row: { attention_knockout: [{ layers: [1], queries: [L - 2], keys: { start: 0, end: L } }] },
    vision_token_add_two_axes: { vision_token_add: { alpha: 6, directions: [dir(1), dir(2)] } },
    vision_token_add_negative_with_head_scale: {
      vision_token_add: { alpha: -0.7, directions: [dir(3)] },
      head_scale: [{ tower: 'text', layer: 1, head: 1, scale: 0 }],
      attention_knockout: [{ layers: [0], queries: 'last', keys: 'image' }],
    },
  };
}

function suite(name: string, setup: () => Promise<Subject>) {
  describe(name, () => {
    let s: Subject;
    beforeAll(async () => {
      s = await setup();
    });
    for (const c of Object.keys(cases(() => ({ model: { cfg: { text: { hidden: 4 } } } as never, ref: null as never, ids: [0, 1, 2, 3, 4, 5, 6, 7], pixels: [] })))) {
      it(`${c}: logits, pattern, z and greedy tokens equal the reference`, async () => {
        const json = cases(() => s)[c];
        const spec: InterventionSpec = parseInterventions(json, s.model.dims);
        const L = s.ids.length;
        const r = await engineRun(s.model, {
          ids: s.ids,
          pixelValues: s.pixels,
          interventions: spec,
          capture: parseCapture({ logits: 'all', pattern: [{ tower: 'text', layer: 1 }], z: { positions: 'last' } }, s.model.dims),
          maxNewTokens: 6,
        });
        const want = s.ref.forward(s.ids, s.pixels, { interventions: spec });
        // The case must matter: its reference logits move away from the plain run's.
        const plainRef = s.ref.forward(s.ids, s.pixels).logits;
        let moved = 0;
        want.logits.forEach((v, i) => (moved = Math.max(moved, Math.abs(v - plainRef[i]))));
        // Decode-only cases ('generated' queries) move the decode steps' margins instead.
        if (moved <= 1e-2) {
          const a = s.ref.greedy(s.ids, s.pixels, 4).margins;
          const b = s.ref.greedy(s.ids, s.pixels, 4, spec).margins;
          moved = Math.max(...a.map((m, i) => Math.abs(m - b[i])));
        }
        expect(moved, `${c} changes the reference run`).toBeGreaterThan(1e-2);
        expectClose(r.logits!.data, want.logits, 1e-3, 0, `${c} logits`);
        const p = r.pattern[0];
        expectClose(p.data, want.patterns.get(1)!, 1e-4, 0, `${c} pattern`);
        // Rows are softmaxes over what is left (a fully knocked row sums to 0).
        const H = s.model.dims.text.heads;
        for (let h = 0; h < H; h++)
          for (let i = 0; i < L; i++) {
            const sum = p.data.subarray((h * L + i) * L, (h * L + i + 1) * L).reduce((a, b) => a + b, 0);
            expect(Math.abs(sum - 1) < 1e-4 || Math.abs(sum) < 1e-7, `${c} row ${i} head ${h} sums to ${sum}`).toBe(true);
          }
        const hdw = H * s.model.dims.text.headDim;
        const zWant = new Float64Array(s.model.dims.text.layers * hdw);
        for (let l = 0; l < s.model.dims.text.layers; l++) zWant.set(want.z.subarray((l * L + L - 1) * hdw, (l * L + L) * hdw), l * hdw);
        expectClose(r.z!.data, zWant, 1e-3, 0, `${c} z`);
        compareTokens(r.tokens, s.ref.greedy(s.ids, s.pixels, 6, spec), c);
      });
    }

    it('a knockout changes the run and knocked edges are exactly 0 in the pattern', async () => {
      const L = s.ids.length;
      const imageKeys = s.ids.flatMap((id, i) => (id === s.model.imageTokenId ? [i] : []));
      const spec = parseInterventions({ attention_knockout: [{ layers: [1], queries: 'last', keys: 'image' }] }, s.model.dims);
      const cap = parseCapture({ logits: 'last', pattern: [{ tower: 'text', layer: 1 }] }, s.model.dims);
      const plain = await s.model.run({ ids: s.ids, pixelValues: s.pixels, capture: cap });
      const knocked = await s.model.run({ ids: s.ids, pixelValues: s.pixels, capture: cap, interventions: spec });
      const last = (r: typeof plain, h: number) => r.pattern[0].data.subarray((h * L + L - 1) * L, (h * L + L) * L);
      for (let h = 0; h < s.model.dims.text.heads; h++) {
        expect(imageKeys.some((k) => last(plain, h)[k] > 0)).toBe(true);
        for (const k of imageKeys) expect(last(knocked, h)[k]).toBe(0);
      }
      let diff = 0;
      plain.logits!.data.forEach((v, i) => (diff = Math.max(diff, Math.abs(v - knocked.logits!.data[i]))));
      expect(diff).toBeGreaterThan(1e-4);
    });
  });
}

suite('tiny-llava fixture', async () => {
  const dir = fixtureDir('tiny-llava');
  const g = golden('tiny-llava');
  const model = await LlavaModel.load(await gpuContext(), dir);
  return { model, ref: await referenceLlava(dir), ids: g.input_ids, pixels: [model.preprocess(await loadImageFile(join(dir, 'image.png')))] };
});

suite('generated LLaVA, GQA 6/2, bf16', async () => {
  const dir = await tempDir();
  await writeRandomLlava(dir, {
    seed: 11,
    dtype: 'BF16',
    vision: { hidden: 32, intermediate: 64, layers: 2, heads: 2, imageSize: 28, patchSize: 14 },
    text: { hidden: 48, intermediate: 96, layers: 3, heads: 6, kvHeads: 2, vocab: 200 },
  });
  const model = await LlavaModel.load(await gpuContext(), dir);
  const imageId = model.cfg.imageTokenIndex;
  const ids = [1, 17, 23, ...Array(model.imageTokens).fill(imageId), 40, 51, 62, 70, 81];
  const pixels = [Float32Array.from(randn(3 * 28 * 28, 5))];
  return { model, ref: await referenceLlava(dir), ids, pixels };
});

describe('attention_knockout / vision_token_add specs', () => {
  const dims = { text: { layers: 3, heads: 4, headDim: 16, hidden: 8 }, vision: { layers: 2, heads: 2, headDim: 8 } };
  it('refuses bad entries in one line naming the field', () => {
    const bad: [unknown, RegExp][] = [
      [{ attention_knockout: [{ layers: [3], queries: 'last' }] }, /attention_knockout\[0\]\.layers\[0\]/],
      [{ attention_knockout: [{ heads: [9] }] }, /attention_knockout\[0\]\.heads\[0\]/],
      [{ attention_knockout: [{ queries: 'first' }] }, /attention_knockout\[0\]\.queries must be "all", "last" or "generated"/],
      [{ attention_knockout: [{ keys: { start: 5, end: 2 } }] }, /keys: end 2 must be greater than start 5/],
      [{ attention_knockout: [{ keys: 'text' }] }, /keys must be "image", \{"start", "end"\} or a list of positions/],
      [{ attention_knockout: [{ queries: [-1] }] }, /queries\[0\] must be a position >= 0/],
      [{ attention_knockout: [{ layers: [0], heads: [1] }, { layers: [0, 1], heads: [2] }] }, /heads differ from attention_knockout\[0\]\.heads/],
      [{ vision_token_add: { alpha: 2, directions: [[1, 2, 3]] } }, /directions\[0\] has 3 values, but the text hidden size is 8/],
      [{ vision_token_add: { alpha: 2, directions: [] } }, /directions must be a non-empty list/],
      [{ vision_token_add: { directions: [[1, 2, 3, 4, 5, 6, 7, 8]] } }, /vision_token_add\.alpha must be a finite number/],
    ];
    for (const [json, re] of bad) {
      expect(() => parseInterventions(json, dims)).toThrow(SpecError);
      expect(() => parseInterventions(json, dims)).toThrow(re);
    }
  });
});
