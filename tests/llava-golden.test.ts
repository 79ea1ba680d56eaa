// The LLaVA forward pass against the float64 reference of tests/fixtures/tiny-llava (see its README):
// preprocessing, vision states, image features, all logits, a text attention pattern, per-head z, greedy
// tokens, and the six intervention cases.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { LlavaModel, LlavaVision, type RunResult } from '../src/models/llava.js';
import { decodeImage } from '../src/io/image.js';
import { clipPreprocess } from '../src/io/clip-processor.js';
import { parseCapture, parseInterventions } from '../src/spec/spec.js';
import { expectClose, gpuContext } from './helpers/gpu.js';
import { GpuContext } from '../src/gpu/context.js';
import { fixtureDir, golden } from './helpers/fixtures.js';
import { checkGoldenIntervention, flat } from './helpers/compare.js';

const dir = fixtureDir('tiny-llava');
const g = golden('tiny-llava');

describe('tiny-llava golden', () => {
  let model: LlavaModel;
  let pixels: Float32Array;
  let plain: RunResult;

  beforeAll(async () => {
    const ctx = await gpuContext();
    model = await LlavaModel.load(ctx, dir);
    const img = decodeImage(new Uint8Array(await readFile(join(dir, 'image.png'))), 'image.png');
    const pre = clipPreprocess(img, model.imageProcessor);
    expect(Array.from(pre.cropped.data)).toEqual(flat(g.image.cropped_uint8));
    pixels = pre.pixelValues;
    plain = await model.run({
      ids: g.input_ids,
      pixelValues: [pixels],
      capture: parseCapture(
        {
          logits: 'all',
          pattern: [{ tower: 'text', layer: 1 }],
          z: { positions: 'last' },
          residual: [0, 1, 2, 3].map((layer) => ({ tower: 'vision', layer })),
          image_features: true,
        },
        model.dims,
      ),
      maxNewTokens: 6,
    });
  });

  it('pixel values match within 1e-5', () => {
    expectClose(pixels, flat(g.pixel_values), 1e-5, 0, 'pixel_values');
  });

  it('vision hidden states match (sums and the last CLS row)', () => {
    const sums = plain.residual.map((r) => r.data.reduce((a, b) => a + b, 0));
    expectClose(sums, g.vision_hidden_states_sum, 1e-3, 1e-5, 'vision_hidden_states_sum');
    const last = plain.residual[3];
    expectClose(last.data.subarray(0, last.shape[1]), g.vision_hidden_state_last_row0, 1e-3, 0, 'vision_hidden_state_last_row0');
  });

  it('image features match within 1e-3', () => {
    expect(plain.imageFeatures!.shape).toEqual([16, 64]);
    expectClose(plain.imageFeatures!.data, flat(g.image_features), 1e-3, 0, 'image_features');
  });

  it('all logits match within 1e-3', () => {
    expect(plain.logits!.shape).toEqual([29, 256]);
    expectClose(plain.logits!.data, flat(g.logits), 1e-3, 0, 'logits');
  });

  it('text layer-1 attention pattern and z at the last position match within 1e-3', () => {
    const p = plain.pattern[0];
    expect(p.shape).toEqual([4, 29, 29]);
    expectClose(p.data, flat(g.attention_pattern_layer1), 1e-3, 0, 'attention_pattern_layer1');
    expect(plain.z!.shape).toEqual([3, 4, 16]);
    expectClose(plain.z!.data, flat(g.z_last_position), 1e-3, 0, 'z_last_position');
  });

  it('greedy decoding with the KV cache gives the reference tokens', () => {
    expect(plain.tokens).toEqual(g.greedy_6);
  });

  for (const name of Object.keys(g.interventions)) {
    it(`intervention ${name}: last logits within 1e-3`, () => checkGoldenIntervention(model, { ids: g.input_ids, pixelValues: [pixels] }, g.interventions[name], name));
  }

  it('an intervened run differs from the plain one (the spec reaches the kernels)', async () => {
    const a = await model.run({ ids: g.input_ids, pixelValues: [pixels] });
    const b = await model.run({
      ids: g.input_ids,
      pixelValues: [pixels],
      interventions: parseInterventions(g.interventions.ablate_text_heads.spec, model.dims),
    });
    // On a GPU adapter the last-row run folds the final norm into lm_head's GEMV (RowNorm, normFolds), the all-rows run
    // normalises first: the same arithmetic in another order, so f32 rounding (a few ulps) apart.
    expectClose(a.logits!.data, plain.logits!.data.subarray(28 * 256), 1e-6, 1e-6, 'plain rerun');
    let diff = 0;
    for (let i = 0; i < 256; i++) diff = Math.max(diff, Math.abs(a.logits!.data[i] - b.logits!.data[i]));
    expect(diff).toBeGreaterThan(1e-3);
  });

  it('a CPU token chooser (argmax) reproduces the GPU greedy tokens, and stopAfter ends decoding', async () => {
    const argmaxCpu = (l: Float32Array) => l.reduce((best, v, i) => (v > l[best] ? i : best), 0);
    const seen: number[] = [];
    const r = await model.run({ ids: g.input_ids, pixelValues: [pixels], maxNewTokens: 6, chooseToken: argmaxCpu, onToken: (t) => seen.push(t) });
    expect(r.tokens).toEqual(g.greedy_6);
    expect(seen).toEqual(g.greedy_6);
    const stopped = await model.run({ ids: g.input_ids, pixelValues: [pixels], maxNewTokens: 6, stopAfter: (t) => t.length === 3 });
    expect(stopped.tokens).toEqual(g.greedy_6.slice(0, 3));
    const eos = await model.run({ ids: g.input_ids, pixelValues: [pixels], maxNewTokens: 6, stopTokens: [g.greedy_6[2]] });
    expect(eos.tokens).toEqual(g.greedy_6.slice(0, 2));
  });
});

describe('tiny-llava golden with the RMSNorms folded into the decode GEMVs (what GPU adapters do)', () => {
  it('matches the reference last logits and greedy tokens, with 6 dispatches per layer per decoded token (8 unfolded)', async () => {
    const shared = await gpuContext();
    const perToken = async (foldNorms: boolean) => {
      const ctx = new GpuContext(shared.gpu, { foldNorms });
      const model = await LlavaModel.load(ctx, dir);
      const img = decodeImage(new Uint8Array(await readFile(join(dir, 'image.png'))), 'image.png');
      const counters = ctx.countWork();
      const marks: number[] = [];
      const r = await model.run({ ids: g.input_ids, pixelValues: [model.preprocess(img)], maxNewTokens: 6, onToken: () => marks.push(counters.dispatches) });
      ctx.counters = null;
      // The last-row logits: a one-row lm_head, so the final norm rides in it where folded.
      const last = await model.run({ ids: g.input_ids, pixelValues: [model.preprocess(img)] });
      expectClose(last.logits!.data, flat(g.logits).slice(28 * 256), 1e-3, 0, `last logits (foldNorms ${foldNorms})`);
      expect(r.tokens).toEqual(g.greedy_6);
      return { dispatches: marks[2] - marks[1], layers: model.cfg.text.layers };
    };
    const folded = await perToken(true);
    const unfolded = await perToken(false);
    // Per layer: q/k/v (input norm folded), rope, attention, o, gate/up (post norm folded), down; then embed,
    // lm_head (final norm folded), argmax. Unfolded: + the three norms.
    expect(folded.dispatches).toBe(6 * folded.layers + 3);
    expect(unfolded.dispatches).toBe(8 * unfolded.layers + 4);
  });
});

describe('tiny-llava golden with every weight split in row blocks', () => {
  it('matches the reference logits and greedy tokens when matmul and embedding run block by block', async () => {
    const ctx = await gpuContext();
    // 2 KiB per binding: every matrix of the fixture (and the embedding table) is split into several blocks.
    const model = await LlavaModel.load(ctx, dir, { maxBindingBytes: 2048 });
    const img = decodeImage(new Uint8Array(await readFile(join(dir, 'image.png'))), 'image.png');
    const r = await model.run({ ids: g.input_ids, pixelValues: [model.preprocess(img)], capture: parseCapture({ logits: 'all' }, model.dims), maxNewTokens: 6 });
    expectClose(r.logits!.data, flat(g.logits), 1e-3, 0, 'logits (split weights)');
    expect(r.tokens).toEqual(g.greedy_6);
  });

  it('converts f16 weights to f32 storage on load (--dtype f32) with the same results', async () => {
    const ctx = await gpuContext();
    const model = await LlavaModel.load(ctx, dir, { dtype: 'f32' });
    const L = model.text.layers[0];
    expect(L.o.dtype).toBe('f32');
    // q, k and v stacked in one weight (one matmul per layer for the three), converted like the rest.
    expect('fused' in L.qkv && L.qkv.fused.dtype).toBe('f32');
    // CLIP's separate q / k / v stacked the same way: one [3E, E] matmul per vision block.
    const block = (model.visionEncoder as LlavaVision).tower.encoder.blocks[0];
    expect('fused' in block.qkv && block.qkv.fused.shape).toEqual([3 * model.cfg.vision.hidden, model.cfg.vision.hidden]);
    const img = decodeImage(new Uint8Array(await readFile(join(dir, 'image.png'))), 'image.png');
    const r = await model.run({ ids: g.input_ids, pixelValues: [model.preprocess(img)], capture: parseCapture({ logits: 'all' }, model.dims), maxNewTokens: 6 });
    expectClose(r.logits!.data, flat(g.logits), 1e-3, 0, 'logits (f32 storage)');
    expect(r.tokens).toEqual(g.greedy_6);
  });

  it('refuses at once, with the numbers, a model that does not fit the memory budget', async () => {
    const ctx = await gpuContext();
    await expect(LlavaModel.load(ctx, dir, { memoryBudget: 100_000 })).rejects.toThrow(
      /needs [\d.]+ MiB of GPU memory \(weights [\d.]+ KiB \+ KV cache [\d.]+ KiB for 512 tokens \+ activations [\d.]+ (KiB|MiB)\) but the given memory budget is 97\.7 KiB; try --dtype f16/,
    );
  });
});
