// The LLaVA engine against the independent float64 CPU reference (tests/helpers/reference-llava.ts) across the
// config space of the architecture: GQA, f16 / bf16 / f32 weights, head_dim 48, feature layer -1 / list /
// positive, 'full' select strategy, other image grids, transformers >= 4.52 tensor names, two images in one
// prompt, and head_scale / image_temperature / mean_ablate / steer interventions. The reference itself is first held to the committed
// golden of the real tiny-llava fixture, so it is known right before it judges the engine.

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LlavaModel, type RunInput, type RunResult } from '../src/models/llava.js';
import { type RandomLlavaSpec, writeRandomLlava } from '../src/models/random-llava.js';
import { type HeadSteer, type InterventionSpec, EMPTY_INTERVENTIONS, parseCapture, parseInterventions } from '../src/spec/spec.js';
import { decodeToF32, encodeFromF32 } from '../src/gpu/half.js';
import { decodeImage } from '../src/io/image.js';
import { clipPreprocess, parseClipProcessorConfig } from '../src/io/clip-processor.js';
import { expectClose, gpuContext, maxAbsDiff, randn, rng } from './helpers/gpu.js';
import { fixtureDir, golden } from './helpers/fixtures.js';
import { type ReferenceGreedy, type ReferenceLlava, type ReferenceOutput, referenceLlava } from './helpers/reference-llava.js';

const flat = (a: unknown): number[] => (Array.isArray(a) ? a.flatMap(flat) : [a as number]);

// ---------------------------------------------------------------------------------------------------------
// 1. The reference against the golden of the real fixture (CPU only)

describe('float64 reference reproduces the tiny-llava golden', () => {
  const g = golden('tiny-llava');
  let ref: ReferenceLlava;
  let pixels: Float32Array;
  let out: ReferenceOutput;

  beforeAll(async () => {
    const dir = fixtureDir('tiny-llava');
    ref = await referenceLlava(dir);
    // golden.json prints pixel_values to 7 decimals; the float32 tensor Hugging Face was fed is what CLIP
    // preprocessing of image.png gives (checked against the printed values to their rounding below).
    const img = decodeImage(new Uint8Array(await readFile(join(dir, 'image.png'))), 'image.png');
    const pp = parseClipProcessorConfig(JSON.parse(await readFile(join(dir, 'preprocessor_config.json'), 'utf8')), 'preprocessor_config.json');
    pixels = clipPreprocess(img, pp).pixelValues;
    out = ref.forward(g.input_ids, [pixels]);
  });

  it('the float32 pixel values are the golden pixel_values (to their printed 7 decimals)', () => {
    expectClose(pixels, flat(g.pixel_values), 5.1e-8, 0, 'pixel_values');
  });

  it('all logits within 1e-6', () => {
    expectClose(out.logits, flat(g.logits), 1e-6, 0, 'logits');
  });

  it('all logits within 2e-6 from the printed golden pixel_values (their 5e-8 rounding moves logits ~1.5e-6)', () => {
    const o = ref.forward(g.input_ids, [Float32Array.from(flat(g.pixel_values))]);
    expectClose(o.logits, flat(g.logits), 2e-6, 0, 'logits from golden pixel_values');
  });

  it('vision states, image features, layer-1 pattern and z at the last position', () => {
    const sums = out.visionStates[0].map((s) => s.reduce((a, b) => a + b, 0));
    expectClose(sums, g.vision_hidden_states_sum, 1e-5, 1e-7, 'vision_hidden_states_sum');
    const lastState = out.visionStates[0][ref.cfg.vision.layers];
    expectClose(lastState.subarray(0, ref.cfg.vision.hidden), g.vision_hidden_state_last_row0, 1e-6, 0, 'vision last CLS row');
    expectClose(out.imageFeatures, flat(g.image_features), 1e-6, 0, 'image_features');
    expectClose(out.patterns.get(1)!, flat(g.attention_pattern_layer1), 1e-6, 0, 'attention_pattern_layer1');
    expectClose(lastRowZ(ref, out, g.input_ids.length), flat(g.z_last_position), 1e-6, 0, 'z_last_position');
  });

  it('greedy tokens (no KV cache) match', () => {
    expect(ref.greedy(g.input_ids, [pixels], 6).tokens).toEqual(g.greedy_6);
  });

  for (const name of Object.keys(g.interventions)) {
    it(`intervention ${name}: last logits within 1e-6`, () => {
      const c = g.interventions[name];
      const spec = parseInterventions(c.spec, { text: { layers: ref.cfg.text.layers, heads: ref.cfg.text.heads, headDim: ref.cfg.text.headDim }, vision: { layers: ref.cfg.vision.layers, heads: ref.cfg.vision.heads, headDim: ref.cfg.vision.headDim } });
      const o = ref.forward(g.input_ids, [pixels], { interventions: spec });
      const V = ref.cfg.text.vocab;
      expectClose(o.logits.subarray((g.input_ids.length - 1) * V), c.last_logits, 1e-6, 0, name);
      // image_temp_last_0.5 carries greedy tokens: this checks the no-cache emulation of the 'last' scope.
      if (c.greedy_6) expect(ref.greedy(g.input_ids, [pixels], 6, spec).tokens).toEqual(c.greedy_6);
    });
  }
});

/** z of the last row as [layers, heads, hd] (the engine's z capture at positions 'last'). */
function lastRowZ(ref: ReferenceLlava, out: ReferenceOutput, L: number): Float64Array {
  const W = ref.cfg.text.heads * ref.cfg.text.headDim;
  const layers = ref.cfg.text.layers;
  const z = new Float64Array(layers * W);
  for (let l = 0; l < layers; l++) z.set(out.z.subarray((l * L + L - 1) * W, (l * L + L) * W), l * W);
  return z;
}

// ---------------------------------------------------------------------------------------------------------
// 2. The engine against the reference on random checkpoints

const TOL = { logits: 1e-3, pattern: 1e-4, z: 1e-3, features: 1e-3 };
/** A greedy step whose reference top-2 gap is below this cannot be compared token for token. */
const MIN_MARGIN = 1e-3;
const NEW_TOKENS = 8;
/** Intervention runs decode further so the decode-step semantics of each temperature scope show in the tokens. */
const INTERVENTION_TOKENS = 6;
/** Multiplies the final RMSNorm weight so random logits are O(1..10) (a power of two: exact in f16 / bf16). */
const LOGIT_GAIN = 8;

const tmpDirs: string[] = [];
afterAll(async () => {
  for (const d of tmpDirs) await rm(d, { recursive: true, force: true });
});

/** Scale one stored tensor of a single-file safetensors checkpoint in place (same dtype, same size). */
async function scaleStoredTensor(dir: string, names: string[], factor: number): Promise<void> {
  const file = join(dir, 'model.safetensors');
  const bytes = new Uint8Array(await readFile(file));
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  const name = names.find((x) => header[x]);
  if (!name) throw new Error(`none of ${names.join(', ')} in ${file}`);
  const { dtype, data_offsets: [b, e] } = header[name];
  const dt = dtype.toLowerCase() as 'f32' | 'f16' | 'bf16';
  const start = 8 + n + b;
  const vals = decodeToF32(bytes.slice(start, 8 + n + e), dt);
  for (let i = 0; i < vals.length; i++) vals[i] *= factor;
  bytes.set(encodeFromF32(vals, dt), start);
  await writeFile(file, bytes);
}

async function makeCheckpoint(spec: RandomLlavaSpec): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'vlmscope-llava-cfg-'));
  tmpDirs.push(dir);
  await writeRandomLlava(dir, spec);
  await scaleStoredTensor(dir, ['language_model.model.norm.weight', 'model.language_model.norm.weight'], LOGIT_GAIN);
  return dir;
}

/** [BOS, text..., <image> x n, text...] per image, with random text ids away from the special ones. */
function promptIds(vocab: number, imageToken: number, perImage: number, images: number, seed: number): number[] {
  const r = rng(seed);
  const text = (k: number) => Array.from({ length: k }, () => 3 + Math.floor(r() * (vocab - 6)));
  const ids = [1, ...text(3)];
  for (let i = 0; i < images; i++) ids.push(...new Array(perImage).fill(imageToken), ...text(i === images - 1 ? 4 : 2));
  return ids;
}

/** Greedy steps that can be compared token for token: those before the first reference margin below MIN_MARGIN. */
function comparableSteps(want: ReferenceGreedy): number {
  const low = want.margins.findIndex((m) => m < MIN_MARGIN);
  return low >= 0 ? low : want.tokens.length;
}

/** No-cache greedy with explicit temperature rows per step (prompt length P, sequence length L). */
function greedyWithRows(
  ref: ReferenceLlava,
  ids: number[],
  px: Float32Array[],
  n: number,
  spec: InterventionSpec,
  rowsOf: (P: number, L: number) => [number, number],
): number[] {
  const seq = ids.slice();
  const V = ref.cfg.text.vocab;
  const out: number[] = [];
  for (let t = 0; t < n; t++) {
    const L = seq.length;
    const logits = ref.forward(seq, px, { interventions: spec, temperatureRows: rowsOf(ids.length, L), promptLength: ids.length }).logits.subarray((L - 1) * V);
    let best = 0;
    for (let i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    out.push(best);
    seq.push(best);
  }
  return out;
}

/** Compare greedy tokens up to the first step whose reference top-2 margin is too small to decide. */
function compareTokens(got: number[] | undefined, want: ReferenceGreedy, what: string): void {
  expect(got, `${what}: engine returned no tokens`).toBeDefined();
  const n = comparableSteps(want);
  const low = n < want.tokens.length ? n : -1;
  if (low >= 0) {
    console.warn(`${what}: reference top-2 margin ${want.margins[low].toExponential(2)} < ${MIN_MARGIN} at step ${low}; comparing only the ${n} tokens before it`);
  }
  expect(got!.slice(0, n), `${what}: greedy tokens (reference margins ${want.margins.map((m) => m.toFixed(4)).join(', ')})`).toEqual(want.tokens.slice(0, n));
}

/**
 * model.run inside a WebGPU validation error scope: a shader that fails to compile or an invalid submit would
 * otherwise read back as zeros and look like a numerical mismatch.
 */
async function engineRun(model: LlavaModel, input: RunInput): Promise<RunResult> {
  const device = model.ctx.device;
  device.pushErrorScope('validation');
  let result: RunResult | undefined;
  let thrown: unknown = null;
  try {
    result = await model.run(input);
  } catch (e) {
    thrown = e;
  }
  const err = await device.popErrorScope();
  if (err) throw new Error(`WebGPU validation error during the engine run: ${err.message}`);
  if (thrown) throw thrown;
  return result!;
}

/**
 * Where the engine first departs from the reference: every vision hidden state (per image), the image features,
 * and every decoder hidden state, read back from an engine run that captures them all.
 */
async function divergenceReport(model: LlavaModel, ref: ReferenceOutput, ids: number[], pixelValues: Float32Array[], interventions: InterventionSpec): Promise<string> {
  const d = model.dims;
  const r = await engineRun(model, {
    ids,
    pixelValues,
    interventions,
    capture: parseCapture(
      {
        logits: 'all',
        residual: [
          ...Array.from({ length: d.vision.layers + 1 }, (_, layer) => ({ tower: 'vision', layer })),
          ...Array.from({ length: d.text.layers + 1 }, (_, layer) => ({ tower: 'text', layer })),
        ],
        image_features: true,
      },
      d,
    ),
  });
  const lines: string[] = [];
  const visionCount = new Map<number, number>();
  for (const res of r.residual) {
    if (res.tower === 'vision') {
      const img = visionCount.get(res.layer) ?? 0;
      visionCount.set(res.layer, img + 1);
      const m = maxAbsDiff(res.data, ref.visionStates[img][res.layer]);
      lines.push(`vision image ${img} hidden_state ${res.layer}: max |diff| ${m.max.toExponential(2)} at ${m.at}`);
    }
  }
  if (r.imageFeatures) {
    const m = maxAbsDiff(r.imageFeatures.data, ref.imageFeatures);
    lines.push(`image features: max |diff| ${m.max.toExponential(2)} at ${m.at} (row ${Math.floor(m.at / model.cfg.text.hidden)})`);
  }
  for (const res of r.residual) {
    if (res.tower === 'text') {
      const m = maxAbsDiff(res.data, ref.textStates[res.layer]);
      lines.push(`text hidden_state ${res.layer}: max |diff| ${m.max.toExponential(2)} at row ${Math.floor(m.at / model.cfg.text.hidden)} col ${m.at % model.cfg.text.hidden}`);
    }
  }
  const m = maxAbsDiff(r.logits!.data, ref.logits);
  lines.push(`logits: max |diff| ${m.max.toExponential(2)} at row ${Math.floor(m.at / model.cfg.text.vocab)}`);
  return lines.join('\n');
}

interface Case {
  name: string;
  spec: RandomLlavaSpec;
  images?: number;
  /**
   * Intervention specs (JSON contract) to compare besides the plain run; `wrong` names other choices of the
   * temperature's query rows per greedy step (prompt length P, sequence length L) that must give other tokens.
   */
  interventions?: Record<
    string,
    {
      json: unknown;
      wrong?: Record<string, (P: number, L: number) => [number, number]>;
      /** Other readings of each steer entry's query scope (as entries) that must give other greedy tokens. */
      wrongSteer?: Record<string, (e: HeadSteer) => HeadSteer[]>;
    }
  >;
}

/** A seeded vector as a JSON list (mean_ablate / steer entries). */
const vec = (n: number, seed: number, scale = 1): number[] => Array.from(randn(n, seed, scale));

const vision = (o: Partial<RandomLlavaSpec['vision']> = {}): RandomLlavaSpec['vision'] => ({
  hidden: 32, intermediate: 64, layers: 2, heads: 2, imageSize: 28, patchSize: 14, ...o,
});
const text = (o: Partial<RandomLlavaSpec['text']> = {}): RandomLlavaSpec['text'] => ({
  hidden: 64, intermediate: 128, layers: 2, heads: 4, vocab: 300, ...o,
});

const CASES: Case[] = [
  { name: '(a) GQA 6 heads / 2 kv heads, f16', spec: { seed: 11, dtype: 'F16', vision: vision({ imageSize: 42 }), text: text({ hidden: 96, heads: 6, kvHeads: 2, layers: 3 }) } },
  // (b) also generates the <image> id (298) at greedy step 3: a generated image-token id is a plain token.
  { name: '(b) bf16 weights, head_dim 48', spec: { seed: 12, dtype: 'BF16', vision: vision({ layers: 3, heads: 4 }), text: text({ hidden: 96, heads: 2, intermediate: 160, ropeTheta: 500000 }) } },
  { name: '(c) f32 weights, rms eps 1e-6, vision gelu', spec: { seed: 13, dtype: 'F32', vision: vision({ act: 'gelu' }), text: text({ eps: 1e-6, kvHeads: 1 }) } },
  { name: "(d) feature layer -1, strategy 'full'", spec: { seed: 14, vision: vision({ layers: 3 }), text: text(), featureLayer: -1, selectStrategy: 'full' } },
  { name: '(e) feature layers [-2, 0]', spec: { seed: 15, vision: vision({ layers: 3 }), text: text(), featureLayer: [-2, 0] } },
  { name: '(f) positive feature layer 1', spec: { seed: 16, vision: vision({ layers: 3 }), text: text(), featureLayer: 1 } },
  { name: '(g1) image 42 px, patch 14 (3x3 grid)', spec: { seed: 17, vision: vision({ imageSize: 42, patchSize: 14 }), text: text() } },
  { name: '(g2) image 32 px, patch 8 (4x4 grid)', spec: { seed: 18, vision: vision({ imageSize: 32, patchSize: 8 }), text: text() } },
  { name: '(h) transformers >= 4.52 tensor names', spec: { seed: 19, newNames: true, vision: vision(), text: text({ kvHeads: 2 }) } },
  { name: '(i) two images in one prompt', spec: { seed: 20, vision: vision(), text: text({ kvHeads: 2 }), featureLayer: [-1, 1] }, images: 2 },
  {
    // Seed 25 and alpha 10 make the decode-step semantics of each temperature scope visible in the greedy tokens:
    // the `wrong` emulations below give other tokens (checked on the reference), so an engine that scaled the
    // wrong rows in its decode steps would fail the token comparison.
    name: '(j) interventions (GQA 4/2, 3 text layers)',
    spec: { seed: 25, vision: vision({ heads: 4, imageSize: 42 }), text: text({ layers: 3, kvHeads: 2 }) },
    interventions: {
      head_scale_text_and_vision: {
        json: {
          head_scale: [
            { tower: 'text', layer: 0, head: 1, scale: 0 },
            { tower: 'text', layer: 2, head: 3, scale: 2.5 },
            { tower: 'text', layer: 1, head: 0, scale: 0.001 },
            { tower: 'vision', layer: 1, head: 0, scale: 0 },
            { tower: 'vision', layer: 0, head: 2, scale: 1.7 },
          ],
        },
      },
      temp_all_10: {
        json: { image_temperature: { alpha: 10, queries: 'all' } },
        wrong: { 'decode rows unscaled': (P) => [0, P] },
      },
      temp_all_layers02_heads13: { json: { image_temperature: { alpha: 0.5, queries: 'all', layers: [0, 2], heads: [1, 3] } } },
      temp_last_10: {
        json: { image_temperature: { alpha: 10, queries: 'last' } },
        wrong: { 'decode rows scaled too': (P, L) => [L - 1, L], 'unscaled (scope ignored)': () => [0, 0] },
      },
      temp_last_layer1_head2: { json: { image_temperature: { alpha: 0.25, queries: 'last', layers: [1], heads: [2] } } },
      temp_generated_10: {
        json: { image_temperature: { alpha: 10, queries: 'generated' } },
        wrong: { 'unscaled (scope ignored)': () => [0, 0], 'last prompt row scaled too': (P, L) => [P - 1, L] },
      },
      temp_generated_layers12_heads02: { json: { image_temperature: { alpha: 0.2, queries: 'generated', layers: [1, 2], heads: [0, 2] } } },
      head_scale_plus_temp_last: {
        json: {
          head_scale: [{ tower: 'text', layer: 1, head: 3, scale: 0 }, { tower: 'vision', layer: 1, head: 3, scale: 3 }],
          image_temperature: { alpha: 2, queries: 'last', heads: [0] },
        },
      },
      // Text heads have 16 dims, vision heads 8.
      mean_ablate_text_and_vision: {
        json: {
          mean_ablate: [
            { tower: 'text', layer: 0, head: 1, mean: vec(16, 31) },
            { tower: 'text', layer: 2, head: 3, mean: vec(16, 32, 2) },
            { tower: 'vision', layer: 1, head: 0, mean: vec(8, 33) },
          ],
        },
      },
      steer_all_text_and_vision: {
        json: {
          steer: [
            { tower: 'text', layer: 1, head: 2, alpha: 2, sigma: 0.7, direction: vec(16, 34) },
            { tower: 'text', layer: 1, head: 2, alpha: -1, sigma: 0.5, direction: vec(16, 35), queries: 'all' }, // adds up
            { tower: 'vision', layer: 0, head: 3, alpha: 1.5, sigma: 0.5, direction: vec(8, 36) },
          ],
        },
      },
      steer_last: {
        json: {
          steer: [
            { tower: 'text', layer: 0, head: 0, alpha: 4, sigma: 1, direction: vec(16, 37), queries: 'last' },
            { tower: 'text', layer: 2, head: 1, alpha: 4, sigma: 1, direction: vec(16, 38), queries: 'last' },
          ],
        },
        wrongSteer: { 'decode rows steered too': (e) => [e, { ...e, queries: 'generated' }] },
      },
      steer_generated: {
        json: { steer: [{ tower: 'text', layer: 1, head: 3, alpha: 6, sigma: 1, direction: vec(16, 39), queries: 'generated' }] },
        wrongSteer: { 'unsteered (scope ignored)': () => [], 'last prompt row steered too': (e) => [e, { ...e, queries: 'last' }] },
      },
      mean_ablate_scale_steer_one_head: {
        json: {
          mean_ablate: [{ tower: 'text', layer: 1, head: 2, mean: vec(16, 40) }],
          head_scale: [{ tower: 'text', layer: 1, head: 2, scale: 0.5 }],
          steer: [
            { tower: 'text', layer: 1, head: 2, alpha: 3, sigma: 0.5, direction: vec(16, 41) },
            { tower: 'text', layer: 0, head: 3, alpha: 3, sigma: 1, direction: vec(16, 42), queries: 'generated' },
          ],
          image_temperature: { alpha: 2, queries: 'last' },
        },
      },
    },
  },
];

for (const c of CASES) {
  describe(`LLaVA engine vs float64 reference: ${c.name}`, () => {
    let model: LlavaModel;
    let ref: ReferenceLlava;
    let ids: number[];
    let px: Float32Array[];
    let run: RunResult;
    let want: ReferenceOutput;
    let report: string | null = null;

    /** Assert closeness; on failure, append where the engine first departs from the reference. */
    const close = async (got: ArrayLike<number>, exp: ArrayLike<number>, atol: number, what: string, spec: InterventionSpec, refOut: ReferenceOutput) => {
      try {
        expectClose(got, exp, atol, 0, what);
      } catch (e) {
        if (report === null || spec !== EMPTY_INTERVENTIONS) {
          const rep = await divergenceReport(model, refOut, ids, px, spec);
          if (spec === EMPTY_INTERVENTIONS) report = rep;
          throw new Error(`${(e as Error).message}\nstage by stage:\n${rep}`);
        }
        throw new Error(`${(e as Error).message}\nstage by stage:\n${report}`);
      }
    };

    beforeAll(async () => {
      const dir = await makeCheckpoint(c.spec);
      const ctx = await gpuContext();
      model = await LlavaModel.load(ctx, dir);
      ref = await referenceLlava(dir);
      expect(model.imageTokens).toBe(ref.imageTokens);
      const S = ref.cfg.vision.imageSize;
      const n = c.images ?? 1;
      ids = promptIds(ref.cfg.text.vocab, ref.cfg.imageTokenIndex, ref.imageTokens, n, c.spec.seed ?? 1);
      px = Array.from({ length: n }, (_, i) => randn(3 * S * S, 1000 + 7 * i + (c.spec.seed ?? 0), 2));
      run = await engineRun(model, {
        ids,
        pixelValues: px,
        capture: parseCapture({ logits: 'all', pattern: [{ tower: 'text', layer: 1 }], z: { positions: 'last' }, image_features: true }, model.dims),
        maxNewTokens: NEW_TOKENS,
      });
      want = ref.forward(ids, px);
    });

    afterAll(() => model?.destroy());

    it('logits are O(1..10) (the test has teeth)', () => {
      const m = want.logits.reduce((a, b) => Math.max(a, Math.abs(b)), 0);
      expect(m).toBeGreaterThan(1);
      expect(m).toBeLessThan(100);
    });

    it('image features within 1e-3', async () => {
      expect(run.imageFeatures!.shape).toEqual([(c.images ?? 1) * ref.imageTokens, ref.cfg.text.hidden]);
      await close(run.imageFeatures!.data, want.imageFeatures, TOL.features, 'image features', EMPTY_INTERVENTIONS, want);
    });

    it('all logits within 1e-3', async () => {
      expect(run.logits!.shape).toEqual([ids.length, ref.cfg.text.vocab]);
      await close(run.logits!.data, want.logits, TOL.logits, 'logits', EMPTY_INTERVENTIONS, want);
    });

    it('text layer-1 attention pattern within 1e-4', async () => {
      const p = run.pattern[0];
      expect(p.shape).toEqual([ref.cfg.text.heads, ids.length, ids.length]);
      await close(p.data, want.patterns.get(1)!, TOL.pattern, 'text layer-1 pattern', EMPTY_INTERVENTIONS, want);
    });

    it('z at the last position within 1e-3', async () => {
      expect(run.z!.shape).toEqual([ref.cfg.text.layers, ref.cfg.text.heads, ref.cfg.text.headDim]);
      await close(run.z!.data, lastRowZ(ref, want, ids.length), TOL.z, 'z at the last position', EMPTY_INTERVENTIONS, want);
    });

    it(`${NEW_TOKENS} greedy tokens (KV cache) equal the no-cache reference`, () => {
      compareTokens(run.tokens, ref.greedy(ids, px, NEW_TOKENS), 'plain greedy');
    });

    for (const [name, { json, wrong, wrongSteer }] of Object.entries(c.interventions ?? {})) {
      it(`intervention ${name}: logits, layer-1 pattern, z and ${INTERVENTION_TOKENS} greedy tokens`, async () => {
        const spec = parseInterventions(json, model.dims, name);
        const r = await engineRun(model, {
          ids,
          pixelValues: px,
          interventions: spec,
          capture: parseCapture({ logits: 'all', pattern: [{ tower: 'text', layer: 1 }], z: { positions: 'last' } }, model.dims),
          maxNewTokens: INTERVENTION_TOKENS,
        });
        const o = ref.forward(ids, px, { interventions: spec });
        const changed = maxAbsDiff(o.logits, want.logits).max;
        const g = ref.greedy(ids, px, INTERVENTION_TOKENS, spec);
        // 'generated' leaves the prefill alone: its logits must equal the plain ones, its tokens need not.
        const prefillUntouched =
          spec.headScale.length === 0 &&
          spec.meanAblate.length === 0 &&
          (spec.imageTemperature?.queries ?? 'generated') === 'generated' &&
          spec.steer.every((e) => e.queries === 'generated');
        if (prefillUntouched) expect(changed).toBeLessThan(1e-12);
        else expect(changed, `${name} does not change the reference logits`).toBeGreaterThan(1e-3);
        const plain = ref.greedy(ids, px, INTERVENTION_TOKENS);
        if (plain.tokens.join() === g.tokens.join()) {
          console.warn(`${c.name} / ${name}: the intervention leaves the reference's greedy tokens unchanged (${g.tokens})`);
        }
        // The token comparison has teeth: other row choices for the temperature give other tokens.
        const n = comparableSteps(g);
        for (const [what, rowsOf] of Object.entries(wrong ?? {})) {
          const alt = greedyWithRows(ref, ids, px, INTERVENTION_TOKENS, spec, rowsOf);
          expect(alt.slice(0, n), `${name}: the '${what}' emulation should give other tokens`).not.toEqual(g.tokens.slice(0, n));
        }
        for (const [what, entries] of Object.entries(wrongSteer ?? {})) {
          const alt = ref.greedy(ids, px, INTERVENTION_TOKENS, { ...spec, steer: spec.steer.flatMap(entries) }).tokens;
          expect(alt.slice(0, n), `${name}: the '${what}' emulation should give other tokens`).not.toEqual(g.tokens.slice(0, n));
        }
        await close(r.logits!.data, o.logits, TOL.logits, `${name}: logits`, spec, o);
        await close(r.pattern[0].data, o.patterns.get(1)!, TOL.pattern, `${name}: text layer-1 pattern`, spec, o);
        await close(r.z!.data, lastRowZ(ref, o, ids.length), TOL.z, `${name}: z at the last position (after head_scale)`, spec, o);
        compareTokens(r.tokens, g, `${name}: greedy`);
      });
    }
  });
}
