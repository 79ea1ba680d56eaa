// mean_ablate and steer (docs/interventions.md): the spec's checks, and identities on the golden tiny-llava
// fixture that pin the semantics down without a reference: replacing a head's output by itself changes nothing,
// steering by -z at the last row is zeroing the head there, alpha 0 is a no-op. (The engine against the float64
// CPU reference with these interventions, prefill and decode, is in llava-configs.test.ts case (j); the kernel
// against its own float64 reference in kernels-attention.test.ts.)

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { LlavaModel, type RunResult } from '../src/models/llava.js';
import { decodeImage } from '../src/io/image.js';
import { type ModelDims, SpecError, parseCapture, parseInterventions } from '../src/spec/spec.js';
import { headParamTable, headVectorTable, headParamSlotBytes, headVectorSlotBytes } from '../src/spec/head-params.js';
import { expectClose, gpuContext, maxAbsDiff } from './helpers/gpu.js';
import { fixtureDir, golden } from './helpers/fixtures.js';

// The golden fixture's towers.
const DIMS: ModelDims = { text: { layers: 3, heads: 4, headDim: 16 }, vision: { layers: 3, heads: 4, headDim: 8 } };
const flat = (a: unknown): number[] => (Array.isArray(a) ? a.flatMap(flat) : [a as number]);
const v = (n: number, x = 0.1) => Array.from({ length: n }, (_, i) => x * (i + 1));

describe('mean_ablate / steer spec', () => {
  const parse = (json: unknown) => parseInterventions(json, DIMS);
  const bad: [string, unknown, RegExp | string][] = [
    ['a layer that does not exist', { mean_ablate: [{ tower: 'text', layer: 3, head: 0, mean: v(16) }] }, 'intervention spec: mean_ablate[0].layer: layer 3 does not exist in the text tower (it has layers 0..2)'],
    ['a head that does not exist', { steer: [{ layer: 0, head: 4, alpha: 1, sigma: 1, direction: v(16) }] }, 'intervention spec: steer[0].head: head 4 does not exist in the text tower (it has heads 0..3)'],
    ['a vision head that does not exist', { mean_ablate: [{ tower: 'vision', layer: 0, head: -1, mean: v(8) }] }, /mean_ablate\[0\]\.head: head -1 does not exist in the vision tower/],
    ['a direction of the wrong length', { steer: [{ tower: 'text', layer: 0, head: 0, alpha: 1, sigma: 1, direction: v(12) }] }, 'intervention spec: steer[0].direction has 12 values, but text heads have 16 dims'],
    ['a text-sized mean on a vision head', { mean_ablate: [{ tower: 'vision', layer: 1, head: 0, mean: v(16) }] }, 'intervention spec: mean_ablate[0].mean has 16 values, but vision heads have 8 dims'],
    ['a mean that is not a list', { mean_ablate: [{ layer: 0, head: 0, mean: 0.5 }] }, 'intervention spec: mean_ablate[0].mean must be a list of 16 numbers (the text head dim), got 0.5'],
    ['a missing direction', { steer: [{ layer: 0, head: 0, alpha: 1, sigma: 1 }] }, /steer\[0\]\.direction must be a list of 16 numbers/],
    ['NaN in a mean', { mean_ablate: [{ layer: 0, head: 0, mean: [...v(3), NaN, ...v(12)] }] }, 'intervention spec: mean_ablate[0].mean[3] must be a finite number, got NaN'],
    ['Infinity in a Float32Array direction', { steer: [{ layer: 0, head: 0, alpha: 1, sigma: 1, direction: Float32Array.from([...v(15), Infinity]) }] }, 'intervention spec: steer[0].direction[15] must be a finite number, got Infinity'],
    ['a string in a direction', { steer: [{ layer: 0, head: 0, alpha: 1, sigma: 1, direction: [...v(15), '1'] }] }, 'intervention spec: steer[0].direction[15] must be a finite number, got "1"'],
    ['a value beyond float32', { mean_ablate: [{ layer: 0, head: 0, mean: [1e39, ...v(15)] }] }, 'intervention spec: mean_ablate[0].mean[0] = 1e+39 is outside the float32 range'],
    ['a non-finite alpha', { steer: [{ layer: 0, head: 0, alpha: Infinity, sigma: 1, direction: v(16) }] }, 'intervention spec: steer[0].alpha must be a finite number, got Infinity'],
    ['a missing sigma', { steer: [{ layer: 0, head: 0, alpha: 1, direction: v(16) }] }, /steer\[0\]\.sigma must be a finite number, got undefined/],
    ['alpha * sigma * direction beyond float32', { steer: [{ layer: 0, head: 0, alpha: 1e30, sigma: 1e30, direction: v(16) }] }, /steer\[0\]: alpha \* sigma \* direction\[0\] = .* is outside the float32 range/],
    ['an unknown field of an entry', { steer: [{ layer: 0, head: 0, alpha: 1, sigma: 1, dir: v(16) }] }, 'intervention spec: steer[0]: unknown field "dir" (expected one of: tower, layer, head, alpha, sigma, direction, queries)'],
    ['an unknown top-level field', { means_file: 'means.safetensors' }, /intervention spec: unknown field "means_file" \(expected one of: head_scale, image_temperature, mean_ablate, steer, attention_knockout, vision_token_add, patch_z\)/],
    ['an unknown scope', { steer: [{ layer: 0, head: 0, alpha: 1, sigma: 1, direction: v(16), queries: 'first' }] }, 'intervention spec: steer[0].queries must be "all", "last" or "generated", got "first"'],
    ['a scope other than "all" on the vision tower', { steer: [{ tower: 'vision', layer: 0, head: 0, alpha: 1, sigma: 1, direction: v(8), queries: 'last' }] }, /steer\[0\]\.queries: the vision tower runs once over all its tokens, so only "all" applies there/],
    ['a list that is not a list', { mean_ablate: { layer: 0, head: 0, mean: v(16) } }, 'intervention spec: "mean_ablate" must be a list'],
    ['two means for one head', { mean_ablate: [{ layer: 1, head: 2, mean: v(16) }, { layer: 0, head: 2, mean: v(16) }, { tower: 'text', layer: 1, head: 2, mean: v(16) }] }, 'intervention spec: mean_ablate[2] replaces text layer 1 head 2 again (mean_ablate[0] already does)'],
    ['two scopes for one steered head', { steer: [{ layer: 1, head: 2, alpha: 1, sigma: 1, direction: v(16) }, { layer: 1, head: 2, alpha: 1, sigma: 1, direction: v(16), queries: 'last' }] }, /steer\[1\]\.queries is "last" but steer\[0\] steers text layer 1 head 2 on "all"/],
  ];
  for (const [name, json, message] of bad) {
    it(`refuses ${name}`, () => {
      expect(() => parse(json)).toThrow(SpecError);
      expect(() => parse(json)).toThrow(message);
    });
  }

  it('parses both entries (defaults: tower text, queries all; typed arrays from the library)', () => {
    const mean = Float32Array.from(v(8));
    const s = parse({
      mean_ablate: [{ tower: 'vision', layer: 2, head: 3, mean }],
      steer: [{ layer: 1, head: 0, alpha: 2, sigma: 0.7, direction: v(16) }, { layer: 2, head: 1, alpha: 0.1, sigma: 3, direction: v(16), queries: 'generated' }],
    });
    expect(s.meanAblate).toEqual([{ tower: 'vision', layer: 2, head: 3, mean }]);
    expect(s.steer.map((e) => [e.tower, e.layer, e.head, e.alpha, e.sigma, e.queries])).toEqual([
      ['text', 1, 0, 2, 0.7, 'all'],
      ['text', 2, 1, 0.1, 3, 'generated'],
    ]);
    expect(s.steer[0].direction).toEqual(Float32Array.from(v(16)));
    expect(s.headScale).toEqual([]);
  });

  it('builds the kernel tables: flags per head, vectors per layer slot, steer entries of one head summed', () => {
    const s = parse({
      mean_ablate: [{ layer: 1, head: 2, mean: v(16, 1) }],
      head_scale: [{ layer: 1, head: 2, scale: 0.5 }],
      steer: [
        { layer: 1, head: 2, alpha: 2, sigma: 0.5, direction: v(16, 1), queries: 'last' },
        { layer: 1, head: 2, alpha: 1, sigma: 1, direction: v(16, 2), queries: 'last' },
        { layer: 2, head: 0, alpha: 1, sigma: 1, direction: v(16, 1), queries: 'generated' },
      ],
    });
    const hp = headParamTable(s, 'text', DIMS.text);
    const hu = new Uint32Array(hp.buffer);
    const slot = headParamSlotBytes(4) / 4;
    expect(Array.from(hp.subarray(slot + 8, slot + 10))).toEqual([0.5, 1]);
    expect(Array.from(hu.subarray(slot + 10, slot + 12))).toEqual([1, 2]); // replace, scope "last" = code 2
    expect(Array.from(hu.subarray(2 * slot + 2, 2 * slot + 4))).toEqual([0, 3]); // layer 2 head 0: "generated"
    expect(Array.from(hu.subarray(2, 4))).toEqual([0, 0]); // untouched heads
    const vt = headVectorTable(s, 'text', DIMS.text)!;
    const vslot = headVectorSlotBytes(4, 16) / 4;
    expect(vt.length).toBe(3 * vslot);
    const at = vslot + 2 * 16 * 2;
    expectClose(vt.subarray(at, at + 16), v(16, 1), 0, 0, 'mean');
    expectClose(vt.subarray(at + 16, at + 32), v(16, 3), 1e-6, 0, 'add = 2 * 0.5 * d1 + d2');
    expect(headVectorTable(s, 'vision', DIMS.vision)).toBeNull(); // a plain tower binds no vectors
    // A spec parsed for another model does not fit this one's slots.
    expect(() => headVectorTable(s, 'text', { layers: 3, heads: 4, headDim: 8 })).toThrow(/mean_ablate of text layer 1 head 2 \(16 values\) does not fit this model \(3 layers, 4 heads of 8 dims\)/);
  });
});

describe('mean_ablate / steer on the golden fixture', () => {
  const dir = fixtureDir('tiny-llava');
  const g = golden('tiny-llava');
  const V = 256;
  const LAST_LAYER = 2;
  let model: LlavaModel;
  let pixels: Float32Array;
  let plain: RunResult;
  /** z at the last position, [layers, heads, 16]. */
  let z: Float32Array;

  const zOf = (layer: number, head: number) => Array.from(z.subarray((layer * 4 + head) * 16, (layer * 4 + head + 1) * 16));
  const lastLogits = async (json: unknown, maxNewTokens = 0) =>
    model.run({ ids: g.input_ids, pixelValues: [pixels], interventions: parseInterventions(json, model.dims), maxNewTokens });

  beforeAll(async () => {
    const ctx = await gpuContext();
    model = await LlavaModel.load(ctx, dir);
    pixels = model.preprocess(decodeImage(new Uint8Array(await readFile(join(dir, 'image.png'))), 'image.png'));
    plain = await model.run({ ids: g.input_ids, pixelValues: [pixels], capture: parseCapture({ logits: 'last', z: { positions: 'last' } }, model.dims), maxNewTokens: 6 });
    expect(plain.z!.shape).toEqual([3, 4, 16]);
    z = plain.z!.data;
  });

  it('model.dims carries the head dims the vectors are checked against', () => {
    expect(model.dims).toEqual(DIMS);
  });

  it("mean_ablate of a last-layer head with its own last-position z leaves the last logits unchanged; another vector changes them", async () => {
    for (const head of [0, 3]) {
      const same = await lastLogits({ mean_ablate: [{ layer: LAST_LAYER, head, mean: zOf(LAST_LAYER, head) }] });
      expectClose(same.logits!.data, plain.logits!.data, 1e-4, 0, `mean_ablate head ${head} with its own z`);
      const other = await lastLogits({ mean_ablate: [{ layer: LAST_LAYER, head, mean: zOf(LAST_LAYER, head).map((x, i) => x + (i % 2 ? 0.5 : -0.5)) }] });
      expect(maxAbsDiff(other.logits!.data, plain.logits!.data).max).toBeGreaterThan(1e-3);
    }
  });

  it('mean_ablate with a zero vector is head_scale 0 (all logits, an early layer, vision too)', async () => {
    const capture = parseCapture({ logits: 'all' }, model.dims);
    const run = (json: unknown) => model.run({ ids: g.input_ids, pixelValues: [pixels], interventions: parseInterventions(json, model.dims), capture });
    const a = await run({ mean_ablate: [{ layer: 0, head: 1, mean: new Array(16).fill(0) }, { tower: 'vision', layer: 1, head: 2, mean: new Array(8).fill(0) }] });
    const b = await run({ head_scale: [{ layer: 0, head: 1, scale: 0 }, { tower: 'vision', layer: 1, head: 2, scale: 0 }] });
    expectClose(a.logits!.data, b.logits!.data, 1e-5, 0, 'mean_ablate 0 vs head_scale 0');
    expect(maxAbsDiff(a.logits!.data, flat(g.logits)).max).toBeGreaterThan(1e-3);
  });

  it('steer with alpha 0 is a no-op (logits and greedy tokens)', async () => {
    const r = await lastLogits(
      {
        steer: [
          { layer: 0, head: 2, alpha: 0, sigma: 0.7, direction: v(16, 3) },
          { tower: 'vision', layer: 0, head: 0, alpha: 0, sigma: 2, direction: v(8, 3) },
          { layer: 1, head: 1, alpha: 0, sigma: 1, direction: v(16, 3), queries: 'generated' },
        ],
      },
      6,
    );
    expectClose(r.logits!.data, plain.logits!.data, 1e-6, 0, 'alpha 0');
    expect(r.tokens).toEqual(plain.tokens);
    expect(r.tokens).toEqual(g.greedy_6);
  });

  it('steer by -z on "last" zeroes a last-layer head at the last row: the last logits of head_scale 0', async () => {
    for (const head of [1, 2]) {
      const minusZ = zOf(LAST_LAYER, head).map((x) => -x);
      // Spread over alpha * sigma * direction (2 * 0.25 * 2 = 1), as the contract applies it.
      const s = await lastLogits({ steer: [{ layer: LAST_LAYER, head, alpha: 2, sigma: 0.25, direction: minusZ.map((x) => 2 * x), queries: 'last' }] });
      const zeroed = await lastLogits({ head_scale: [{ layer: LAST_LAYER, head, scale: 0 }] });
      expectClose(s.logits!.data, zeroed.logits!.data, 1e-4, 0, `steer -z vs head_scale 0, head ${head}`);
      expect(maxAbsDiff(s.logits!.data, plain.logits!.data).max).toBeGreaterThan(1e-3);
    }
  });

  it('steer on "last" and "generated" leave the prefill as the scope says', async () => {
    const dirn = v(16, 0.5);
    const gen = await lastLogits({ steer: [{ layer: 1, head: 0, alpha: 4, sigma: 1, direction: dirn, queries: 'generated' }] }, 6);
    expectClose(gen.logits!.data, plain.logits!.data, 1e-6, 0, '"generated" leaves the prefill logits');
    const all = await lastLogits({ steer: [{ layer: 1, head: 0, alpha: 4, sigma: 1, direction: dirn }] });
    const last = await lastLogits({ steer: [{ layer: 1, head: 0, alpha: 4, sigma: 1, direction: dirn, queries: 'last' }] });
    for (const r of [all, last]) expect(maxAbsDiff(r.logits!.data, plain.logits!.data).max).toBeGreaterThan(1e-3);
    expect(maxAbsDiff(all.logits!.data, last.logits!.data).max).toBeGreaterThan(1e-3);
  });

  it('a plain run after an intervened one gives the plain logits again (the vectors are switched off)', async () => {
    await lastLogits({ mean_ablate: [{ layer: 1, head: 1, mean: v(16) }] });
    const again = await model.run({ ids: g.input_ids, pixelValues: [pixels] });
    expectClose(again.logits!.data, plain.logits!.data, 1e-6, 0, 'plain after intervened');
    expect(again.logits!.data.length).toBe(V);
  });
});
