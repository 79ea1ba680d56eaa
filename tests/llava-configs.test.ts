// The LLaVA engine against the independent float64 CPU reference (tests/helpers/reference-llava.ts) across the
// config space of the architecture: GQA, f16 / bf16 / f32 weights, head_dim 48, feature layer -1 / list /
// positive, 'full' select strategy, other image grids, transformers >= 4.52 tensor names, two images in one
// prompt, and head_scale / image_temperature / mean_ablate / steer interventions. The reference itself is first held to the committed
// golden of the real tiny-llava fixture, so it is known right before it judges the engine.

import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LlavaModel, type RunResult } from '../src/models/llava.js';
import { type RandomLlavaSpec, writeRandomLlava } from '../src/models/random-llava.js';
import { type InterventionSpec, EMPTY_INTERVENTIONS, parseCapture, parseInterventions } from '../src/spec/spec.js';
import { decodeToF32, encodeFromF32 } from '../src/gpu/half.js';
import { decodeImage } from '../src/io/image.js';
import { clipPreprocess, parseClipProcessorConfig } from '../src/io/clip-processor.js';
import { expectClose, gpuContext, maxAbsDiff, randn } from './helpers/gpu.js';
import { fixtureDir, golden } from './helpers/fixtures.js';
import { type ReferenceLlava, type ReferenceOutput, referenceLlava } from './helpers/reference-llava.js';
import {
  type InterventionCase,
  NEW_TOKENS,
  TOL,
  WRONG_ROWS,
  WRONG_STEER,
  closeWithReport,
  compareTokens,
  engineRun,
  flat,
  interventionTests,
  lastRowZ,
  promptIds,
  stagesRun,
  tempDirs,
  textStageLines,
  vec,
} from './helpers/compare.js';

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
    expectClose(lastRowZ(ref.cfg.text, out, g.input_ids.length), flat(g.z_last_position), 1e-6, 0, 'z_last_position');
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

// ---------------------------------------------------------------------------------------------------------
// 2. The engine against the reference on random checkpoints

/** Multiplies the final RMSNorm weight so random logits are O(1..10) (a power of two: exact in f16 / bf16). */
const LOGIT_GAIN = 8;

const tempDir = tempDirs('vlmscope-llava-cfg-');

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
  const dir = await tempDir();
  await writeRandomLlava(dir, spec);
  await scaleStoredTensor(dir, ['language_model.model.norm.weight', 'model.language_model.norm.weight'], LOGIT_GAIN);
  return dir;
}

/** [BOS, text..., <image> x n, text...] per image, with random text ids away from the special ones. */
const llavaPromptIds = (vocab: number, imageToken: number, perImage: number, images: number, seed: number): number[] =>
  promptIds(seed, (u) => 3 + Math.floor(u * (vocab - 6)), [1], 3, Array.from({ length: images }, () => new Array<number>(perImage).fill(imageToken)));

/**
 * Where the engine first departs from the reference: every vision hidden state (per image), the image features,
 * and every decoder hidden state, read back from an engine run that captures them all.
 */
async function divergenceReport(model: LlavaModel, ref: ReferenceOutput, ids: number[], pixelValues: Float32Array[], interventions: InterventionSpec): Promise<string> {
  const r = await stagesRun(model, { ids, pixelValues, interventions });
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
  lines.push(...textStageLines(r, ref, model.cfg.text.hidden, model.cfg.text.vocab));
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
  interventions?: Record<string, InterventionCase>;
}

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
        wrong: WRONG_ROWS.all,
      },
      temp_all_layers02_heads13: { json: { image_temperature: { alpha: 0.5, queries: 'all', layers: [0, 2], heads: [1, 3] } } },
      temp_last_10: {
        json: { image_temperature: { alpha: 10, queries: 'last' } },
        wrong: { 'decode rows scaled too': (P, L) => [L - 1, L], 'unscaled (scope ignored)': () => [0, 0] },
      },
      temp_last_layer1_head2: { json: { image_temperature: { alpha: 0.25, queries: 'last', layers: [1], heads: [2] } } },
      temp_generated_10: {
        json: { image_temperature: { alpha: 10, queries: 'generated' } },
        wrong: WRONG_ROWS.generated,
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
        wrongSteer: WRONG_STEER.last,
      },
      steer_generated: {
        json: { steer: [{ tower: 'text', layer: 1, head: 3, alpha: 6, sigma: 1, direction: vec(16, 39), queries: 'generated' }] },
        wrongSteer: WRONG_STEER.generated,
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
    /** Assert closeness; on failure, append where the engine first departs from the reference. */
    const close = closeWithReport<ReferenceOutput>((spec, refOut) => divergenceReport(model, refOut, ids, px, spec));

    beforeAll(async () => {
      const dir = await makeCheckpoint(c.spec);
      const ctx = await gpuContext();
      model = await LlavaModel.load(ctx, dir);
      ref = await referenceLlava(dir);
      expect(model.imageTokens).toBe(ref.imageTokens);
      const S = ref.cfg.vision.imageSize;
      const n = c.images ?? 1;
      ids = llavaPromptIds(ref.cfg.text.vocab, ref.cfg.imageTokenIndex, ref.imageTokens, n, c.spec.seed ?? 1);
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
      await close(run.z!.data, lastRowZ(ref.cfg.text, want, ids.length), TOL.z, 'z at the last position', EMPTY_INTERVENTIONS, want);
    });

    it(`${NEW_TOKENS} greedy tokens (KV cache) equal the no-cache reference`, () => {
      compareTokens(run.tokens, ref.greedy(ids, px, NEW_TOKENS), 'plain greedy');
    });

    interventionTests(c.interventions, () => ({
      caseName: c.name, model, ids, pixelValues: px, text: ref.cfg.text, want, close,
      forward: (seq, opts) => ref.forward(seq, px, opts),
      greedy: (n, spec) => ref.greedy(ids, px, n, spec),
    }));
  });
}
