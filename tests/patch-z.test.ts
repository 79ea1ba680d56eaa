// patch_z (activation patching as a kernel input, docs/interventions.md): the spec's one-line errors, and the engine
// against the float64 CPU reference on a generated LLaVA checkpoint with GQA (6 query heads on 2 kv heads, bf16):
// logits of every row within 1e-4, z of the patched layer, greedy tokens with the KV cache (decode steps read the
// patched rows' K/V), patches at the last row, at listed rows, at every row, with mean_ablate / head_scale / steer
// on the same head; the prefix reuse of a patched run (only rows from the first patched row recomputed) equal to a
// full run; and runVariants (one-row variants of the last prompt row as the rows of one forward) equal to separate runs.

import { beforeAll, describe, expect, it } from 'vitest';
import { LlavaModel } from '../src/models/llava.js';
import { writeRandomLlava } from '../src/models/random-llava.js';
import { EMPTY_INTERVENTIONS, type InterventionSpec, type ModelDims, SpecError, parseCapture, parseInterventions } from '../src/spec/spec.js';
import { patchCall } from '../src/spec/head-params.js';
import { firstPatchChange } from '../src/models/vlm.js';
import { expectClose, gpuContext, randn } from './helpers/gpu.js';
import { compareTokens, tempDirs } from './helpers/compare.js';
import { type ReferenceLlava, referenceLlava } from './helpers/reference-llava.js';

const tempDir = tempDirs('vlmscope-patch-z-');
const rowsOf = (n: number, hd: number, seed: number) => Array.from({ length: n }, (_, r) => Array.from(randn(hd, seed + r, 0.8)));

describe('patch_z spec', () => {
  const DIMS: ModelDims = { text: { layers: 3, heads: 4, headDim: 4 }, vision: { layers: 2, heads: 2, headDim: 4 } };
  const v = [0.1, 0.2, 0.3, 0.4];
  const parse = (json: unknown) => parseInterventions(json, DIMS);
  const bad: [string, unknown, string | RegExp][] = [
    ['a layer that does not exist', { patch_z: [{ layer: 3, head: 0, rows: 'last', values: [v] }] }, 'intervention spec: patch_z[0].layer: layer 3 does not exist in the text tower (it has layers 0..2)'],
    ['a head that does not exist', { patch_z: [{ layer: 0, head: 4, rows: 'last', values: [v] }] }, 'intervention spec: patch_z[0].head: head 4 does not exist in the text tower (it has heads 0..3)'],
    ['a negative row', { patch_z: [{ layer: 0, head: 0, rows: [2, -1], values: [v, v] }] }, 'intervention spec: patch_z[0].rows[1] must be a prompt position >= 0, got -1'],
    ['a row listed twice', { patch_z: [{ layer: 0, head: 0, rows: [2, 2], values: [v, v] }] }, 'intervention spec: patch_z[0].rows[1]: row 2 is listed twice'],
    ['an unknown row scope', { patch_z: [{ layer: 0, head: 0, rows: 'generated', values: [v] }] }, 'intervention spec: patch_z[0].rows must be "last", "all" or a list of prompt positions, got "generated"'],
    ['fewer values than rows', { patch_z: [{ layer: 0, head: 0, rows: [1, 2, 3], values: [v, v] }] }, 'intervention spec: patch_z[0].values has 2 rows, but rows lists 3 positions'],
    ['two rows for "last"', { patch_z: [{ layer: 0, head: 0, rows: 'last', values: [v, v] }] }, 'intervention spec: patch_z[0].values has 2 rows, but rows "last" patches one row'],
    ['a value row of the wrong length', { patch_z: [{ layer: 1, head: 1, rows: [0, 1], values: [v, [1, 2, 3]] }] }, 'intervention spec: patch_z[0].values[1] has 3 values, but text heads have 4 dims'],
    ['NaN in a value', { patch_z: [{ layer: 1, head: 1, rows: 'last', values: [[0, NaN, 0, 0]] }] }, 'intervention spec: patch_z[0].values[0][1] must be a finite number, got NaN'],
    ['a flat typed array that is not whole rows', { patch_z: [{ layer: 1, head: 1, rows: 'all', values: new Float32Array(6) }] }, 'intervention spec: patch_z[0].values has 6 values, not a whole number of rows of 4 (the text head dim)'],
    ['no values', { patch_z: [{ layer: 1, head: 1, rows: 'all', values: [] }] }, /patch_z\[0\]\.values must be a non-empty list of vectors of 4 numbers/],
    ['a vision head', { patch_z: [{ tower: 'vision', layer: 0, head: 0, rows: 'last', values: [v] }] }, 'intervention spec: patch_z[0].tower: only text heads can be patched, got "vision"'],
    ['two entries for one head', { patch_z: [{ layer: 1, head: 2, rows: [0], values: [v] }, { layer: 1, head: 2, rows: [3], values: [v] }] }, /patch_z\[1\] patches text layer 1 head 2 again \(patch_z\[0\] already does/],
    ['an unknown field', { patch_z: [{ layer: 0, head: 0, rows: 'last', value: [v] }] }, 'intervention spec: patch_z[0]: unknown field "value" (expected one of: tower, layer, head, rows, values)'],
  ];
  for (const [name, json, message] of bad) {
    it(`refuses ${name}`, () => {
      expect(() => parse(json)).toThrow(SpecError);
      expect(() => parse(json)).toThrow(message);
    });
  }

  it('parses lists of rows and flat typed arrays alike', () => {
    const s = parse({ patch_z: [{ layer: 2, head: 3, rows: [4, 1], values: [v, [5, 6, 7, 8]] }, { layer: 0, head: 0, rows: 'all', values: Float32Array.from([...v, ...v, ...v]) }] });
    expect(s.patchZ[0]).toEqual({ tower: 'text', layer: 2, head: 3, rows: [4, 1], values: Float32Array.from([...v, 5, 6, 7, 8]) });
    expect(s.patchZ[1].values.length).toBe(12);
  });

  it('builds one slot per patched layer: the run vectors, the row map, the vectors', () => {
    const s = parse({ patch_z: [{ layer: 2, head: 3, rows: [4, 1], values: [v, [5, 6, 7, 8]] }, { layer: 2, head: 0, rows: 'last', values: [[9, 9, 9, 9]] }] });
    const call = patchCall(s, DIMS.text, { pos0: 1, rows: 5, promptLength: 6, vectors: null })!;
    expect([...call.slots]).toEqual([[2, 0]]);
    expect(call.slotBytes % 256).toBe(0);
    const map = call.data.subarray(call.mapOffset, call.mapOffset + 5 * 4);
    // Call row = position - pos0: position 4 -> row 3 head 3, position 1 -> row 0 head 3, last (5) -> row 4 head 0.
    expect([...map].flatMap((k, i) => (k ? [[Math.floor(i / 4), i % 4, k]] : []))).toEqual([[0, 3, 2], [3, 3, 1], [4, 0, 3]]);
    expect(call.data.subarray(call.vectorOffset, call.vectorOffset + 12)).toEqual(Float32Array.from([...v, 5, 6, 7, 8, 9, 9, 9, 9]));
    // A call that holds no patched row (a reuse prefill of the last row only, with patches at rows 1 and 4) is none.
    expect(patchCall(parse({ patch_z: [{ layer: 2, head: 3, rows: [4, 1], values: [v, v] }] }), DIMS.text, { pos0: 5, rows: 1, promptLength: 6, vectors: null })).toBeNull();
    expect(() => patchCall(s, DIMS.text, { pos0: 0, rows: 4, promptLength: 4, vectors: null })).toThrow('patch_z[0].rows[0]: row 4 does not exist in the prompt of 4 tokens (rows 0..3)');
  });

  it('finds the first row two patch lists compute differently', () => {
    const a = parse({ patch_z: [{ layer: 2, head: 3, rows: [4, 6], values: [v, v] }, { layer: 1, head: 0, rows: 'last', values: [v] }] }).patchZ;
    const b = parse({ patch_z: [{ layer: 1, head: 0, rows: 'last', values: [v] }] }).patchZ;
    expect(firstPatchChange(a, a, 9)).toBe(9);
    expect(firstPatchChange(a, b, 9)).toBe(4);
    expect(firstPatchChange(b, [], 9)).toBe(8);
    expect(firstPatchChange([], parse({ patch_z: [{ layer: 0, head: 0, rows: 'all', values: Array(9).fill(v) }] }).patchZ, 9)).toBe(0);
  });
});

describe('patch_z against the float64 reference (generated LLaVA, GQA 6/2, bf16)', () => {
  let model: LlavaModel;
  let ref: ReferenceLlava;
  let ids: number[];
  let pixels: Float32Array[];
  const HD = 8;

  beforeAll(async () => {
    const dir = await tempDir();
    await writeRandomLlava(dir, {
      seed: 31,
      dtype: 'BF16',
      vision: { hidden: 32, intermediate: 64, layers: 2, heads: 2, imageSize: 28, patchSize: 14 },
      text: { hidden: 48, intermediate: 96, layers: 3, heads: 6, kvHeads: 2, vocab: 200 },
    });
    model = await LlavaModel.load(await gpuContext(), dir);
    ref = await referenceLlava(dir);
    const imageId = model.cfg.imageTokenIndex;
    ids = [1, 17, 23, ...Array(model.imageTokens).fill(imageId), 40, 51, 62, 70, 81];
    pixels = [Float32Array.from(randn(3 * 28 * 28, 5))];
  });

  const cases = (L: number): Record<string, unknown> => ({
    last_row_layer0_head1: { patch_z: [{ layer: 0, head: 1, rows: 'last', values: rowsOf(1, HD, 1) }] },
    last_row_heads_sharing_a_kv_head: {
      patch_z: [
        { layer: 1, head: 3, rows: 'last', values: rowsOf(1, HD, 2) },
        { layer: 1, head: 5, rows: 'last', values: rowsOf(1, HD, 3) },
      ],
    },
    listed_rows_two_layers: {
      patch_z: [
        { layer: 0, head: 4, rows: [2, 4, L - 2], values: rowsOf(3, HD, 4) },
        { layer: 2, head: 0, rows: [L - 1, 1], values: rowsOf(2, HD, 7) },
      ],
    },
    all_rows: { patch_z: [{ layer: 1, head: 2, rows: 'all', values: rowsOf(L, HD, 9) }] },
    with_mean_ablate_scale_and_steer_on_the_head: {
      patch_z: [{ layer: 1, head: 2, rows: [L - 3, L - 1], values: rowsOf(2, HD, 40) }],
      mean_ablate: [{ layer: 1, head: 2, mean: rowsOf(1, HD, 50)[0] }],
      head_scale: [{ layer: 1, head: 2, scale: 1.7 }],
      steer: [{ layer: 1, head: 2, alpha: 1, sigma: 0.5, direction: rowsOf(1, HD, 60)[0], queries: 'all' }],
    },
  });

  for (const name of Object.keys(cases(10))) {
    it(`${name}: logits (1e-4), z and greedy tokens equal the reference`, async () => {
      const L = ids.length;
      const spec: InterventionSpec = parseInterventions(cases(L)[name], model.dims);
      const r = await model.run({
        ids,
        pixelValues: pixels,
        interventions: spec,
        capture: parseCapture({ logits: 'all', z: { positions: Array.from({ length: L }, (_, i) => i) } }, model.dims),
        maxNewTokens: 5,
      });
      const want = ref.forward(ids, pixels, { interventions: spec });
      const plain = ref.forward(ids, pixels).logits;
      let moved = 0;
      want.logits.forEach((x, i) => (moved = Math.max(moved, Math.abs(x - plain[i]))));
      expect(moved, `${name} changes the reference logits`).toBeGreaterThan(1e-2);
      expectClose(r.logits!.data, want.logits, 1e-4, 0, `${name} logits`);
      // Engine z: [positions, layers, heads * hd]; reference: [layers, L, heads * hd].
      const { layers, heads } = model.dims.text;
      const w = heads * HD;
      const zWant = new Float64Array(L * layers * w);
      for (let p = 0; p < L; p++) for (let l = 0; l < layers; l++) zWant.set(want.z.subarray((l * L + p) * w, (l * L + p + 1) * w), (p * layers + l) * w);
      expectClose(r.z!.data, zWant, 1e-4, 0, `${name} z`);
      compareTokens(r.tokens, ref.greedy(ids, pixels, 5, spec), name);
    });
  }

  it('a patch with the head\'s own z changes nothing; the patched rows hold exactly the given values', async () => {
    const L = ids.length;
    const cap = parseCapture({ logits: 'all', z: { positions: [L - 1] } }, model.dims);
    const plain = await model.run({ ids, pixelValues: pixels, capture: cap });
    const own = plain.z!.data.subarray((1 * 6 + 4) * HD, (1 * 6 + 5) * HD); // layer 1 head 4 at the last row
    const same = await model.run({ ids, pixelValues: pixels, capture: cap, interventions: parseInterventions({ patch_z: [{ layer: 1, head: 4, rows: 'last', values: Float32Array.from(own) }] }, model.dims) });
    expectClose(same.logits!.data, plain.logits!.data, 1e-6, 0, 'own z');
    const given = rowsOf(1, HD, 77)[0];
    const other = await model.run({ ids, pixelValues: pixels, capture: cap, interventions: parseInterventions({ patch_z: [{ layer: 1, head: 4, rows: 'last', values: [given] }] }, model.dims) });
    expect(Array.from(other.z!.data.subarray((1 * 6 + 4) * HD, (1 * 6 + 5) * HD))).toEqual(Array.from(Float32Array.from(given)));
  });

  it('rows beyond the prompt are refused before any GPU work, naming the entry and the row', async () => {
    const L = ids.length;
    const spec = parseInterventions({ patch_z: [{ layer: 2, head: 5, rows: [0, L], values: rowsOf(2, HD, 1) }] }, model.dims);
    await expect(model.run({ ids, pixelValues: pixels, interventions: spec })).rejects.toThrow(`patch_z[0].rows[1]: row ${L} does not exist in the prompt of ${L} tokens (rows 0..${L - 1})`);
    const all = parseInterventions({ patch_z: [{ layer: 2, head: 5, rows: 'all', values: rowsOf(L - 1, HD, 1) }] }, model.dims);
    await expect(model.run({ ids, pixelValues: pixels, interventions: all })).rejects.toThrow(`patch_z[0].values has ${L - 1} rows, but rows "all" patches every row of the prompt of ${L} tokens`);
  });

  it('runVariants: each row of one forward equals its own one-row reuse run (GQA heads, none, two heads at once)', async () => {
    const L = ids.length;
    const logits = parseCapture({ logits: 'last' }, model.dims);
    const v = (l: number, h: number, seed: number) => ({ layer: l, head: h, values: Float32Array.from(rowsOf(1, HD, seed)[0]!) });
    const variants = [[v(0, 1, 90)], [], [v(2, 4, 91), v(2, 5, 92)], [v(1, 3, 93), v(0, 0, 94)], [v(2, 0, 95)]];
    const clean = await model.run({ ids, pixelValues: pixels, capture: logits, reserveNewTokens: variants.length });
    const got = await model.runVariants({ ids, pixelValues: pixels, reuse: clean.prefix, variants });
    expect(got.shape).toEqual([variants.length, 200]);
    let prefix = clean.prefix;
    for (const [k, list] of variants.entries()) {
      const spec = { ...EMPTY_INTERVENTIONS, patchZ: list.map((e) => ({ tower: 'text' as const, ...e, rows: 'last' as const })) };
      const one = await model.run({ ids, pixelValues: pixels, capture: logits, interventions: spec, reuse: prefix });
      expect(one.reuse?.reused).toBe(true);
      prefix = one.prefix;
      const row = got.data.subarray(k * 200, (k + 1) * 200);
      expectClose(row, one.logits!.data, 1e-5, 0, `variant ${k}`);
      expectClose(row, ref.forward(ids, pixels, { interventions: spec }).logits.subarray((L - 1) * 200, L * 200), 1e-4, 0, `variant ${k} vs reference`);
    }
    // The prefix stays usable after the variants; it must have room for them, and must be plain before the last row.
    await expect(model.runVariants({ ids, pixelValues: pixels, reuse: prefix, variants: Array.from({ length: 7 }, () => []) })).rejects.toThrow(/runVariants: cannot read the prefix: the KV cache \(\d+ positions\) must grow/);
    const early = await model.run({ ids, pixelValues: pixels, capture: logits, reserveNewTokens: 4, interventions: parseInterventions({ patch_z: [{ layer: 1, head: 0, rows: [L - 3], values: rowsOf(1, HD, 96) }] }, model.dims) });
    await expect(model.runVariants({ ids, pixelValues: pixels, reuse: early.prefix, variants: [[]] })).rejects.toThrow(`runVariants: the prefix run's interventions reach row ${L - 3}, before the last prompt row`);
    await expect(model.runVariants({ ids: [...ids.slice(0, -1), 7], pixelValues: pixels, reuse: early.prefix, variants: [[]] })).rejects.toThrow('runVariants: cannot read the prefix: the prompt ids differ from the reused run');
  });

  it('prefix reuse: a patched run after another recomputes rows from the first changed row and equals a full run', async () => {
    const L = ids.length;
    const logits = parseCapture({ logits: 'last' }, model.dims);
    const specA = parseInterventions({ patch_z: [{ layer: 0, head: 2, rows: 'last', values: rowsOf(1, HD, 80) }] }, model.dims);
    const specB = parseInterventions({ patch_z: [{ layer: 2, head: 1, rows: [L - 4, L - 1], values: rowsOf(2, HD, 81) }] }, model.dims);
    const clean = await model.run({ ids, pixelValues: pixels, capture: logits });
    const a = await model.run({ ids, pixelValues: pixels, capture: logits, interventions: specA, reuse: clean.prefix });
    expect(a.reuse).toMatchObject({ reused: true, fromRow: L - 1, rows: 1, vision: false });
    const b = await model.run({ ids, pixelValues: pixels, capture: logits, interventions: specB, reuse: a.prefix });
    expect(b.reuse).toMatchObject({ reused: true, fromRow: L - 4, rows: 4 });
    const fullA = await model.run({ ids, pixelValues: pixels, capture: logits, interventions: specA });
    const fullB = await model.run({ ids, pixelValues: pixels, capture: logits, interventions: specB });
    expectClose(a.logits!.data, fullA.logits!.data, 1e-5, 0, 'reuse A');
    expectClose(b.logits!.data, fullB.logits!.data, 1e-5, 0, 'reuse B');
    expectClose(b.logits!.data, ref.forward(ids, pixels, { interventions: specB }).logits.subarray((L - 1) * 200, L * 200), 1e-4, 0, 'reuse B vs reference');
  });
});
