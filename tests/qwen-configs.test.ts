// Qwen2-VL / Qwen2.5-VL through loadModel against the independent float64 CPU reference
// (tests/helpers/reference-qwen.ts, held to both goldens by tests/qwen-reference.test.ts) on random checkpoints
// (src/models/random-qwen.ts) across the config space: both families; GQA 4/2, 6/2, 4/1, 4/4; bf16 / f16 / f32
// weights; random RGB images of several sizes and aspect ratios resized by the engine's own processor (small
// min_pixels / max_pixels), Qwen2.5-VL windows of 2x2 merged tokens that are partial both ways and
// fullatt_block_indexes from the config; two images in one prompt with text between and after them; flat and
// nested (text_config) configs; tied embeddings; transformers >= 4.52 tensor names; rope_scaling with rope_type
// "default" next to mrope_section; head_scale (both towers), image_temperature (layer / head subsets, scopes
// all / last / generated), mean_ablate and steer. Compared: all logits, image features and the embedding rows
// they fill, a text pattern, z at the last position, vision patterns (patch order; exactly 0 across images and
// Qwen2.5-VL windows), M-RoPE positions and rope_deltas, greedy tokens (KV cache vs no-cache reference). Last, two
// runs of one model with different grids (so different rope_deltas) and prompt lengths each equal a fresh model's.

import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/models/load.js';
import type { PatchedImage, PatternCaptured, RunResult } from '../src/models/model.js';
import type { VlmModel } from '../src/models/vlm.js';
import { type RandomQwenSpec, type QwenTokenIds, qwenTokenIds, writeRandomQwen } from '../src/models/random-qwen.js';
import { type InterventionSpec, EMPTY_INTERVENTIONS, parseCapture } from '../src/spec/spec.js';
import type { RgbImage } from '../src/io/image.js';
import { expectClose, gpuContext, maxAbsDiff, rng } from './helpers/gpu.js';
import { type Grid, type ReferenceQwen, type ReferenceQwenOutput, referenceQwen } from './helpers/reference-qwen.js';
import {
  type InterventionCase,
  NEW_TOKENS,
  TOL,
  WRONG_ROWS,
  WRONG_STEER,
  closeWithReport,
  compareTokens,
  engineRun,
  interventionTests,
  lastRowZ,
  promptIds,
  stagesRun,
  tempDirs,
  textStageLines,
  vec,
} from './helpers/compare.js';

/** smart_resize bounds of the generated preprocessor configs (patch 14, merge 2: factor 28). */
const MIN_PIXELS = 56 * 56;
const MAX_PIXELS = 112 * 112;

const tempDir = tempDirs('vlmscope-qwen-cfg-');

async function makeCheckpoint(spec: RandomQwenSpec): Promise<string> {
  const dir = await tempDir();
  await writeRandomQwen(dir, { minPixels: MIN_PIXELS, maxPixels: MAX_PIXELS, ...spec });
  return dir;
}

/** A copy of a checkpoint folder whose config.json is edited by `edit`. */
async function withConfig(dir: string, edit: (cfg: Record<string, unknown>) => void): Promise<string> {
  const out = await tempDir();
  for (const f of ['model.safetensors', 'preprocessor_config.json']) await writeFile(join(out, f), await readFile(join(dir, f)));
  const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
  edit(cfg);
  await writeFile(join(out, 'config.json'), JSON.stringify(cfg, null, 2));
  return out;
}

/** A random RGB image (the engine's processor resizes it). */
function randomRgb(height: number, width: number, seed: number): RgbImage {
  const r = rng(seed);
  const data = new Uint8Array(height * width * 3);
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(r() * 256);
  return { width, height, data };
}

/**
 * [text x3, <|vision_start|>, <|image_pad|> x n, <|vision_end|>, text x2, ...] per image, four text tokens after
 * the last one; text ids away from the special ones at the top of the vocabulary.
 */
const qwenPromptIds = (tok: QwenTokenIds, vocab: number, counts: number[], seed: number, lead = 3): number[] =>
  promptIds(seed, (u) => Math.floor(u * (vocab - 14)), [], lead, counts.map((n) => [tok.visionStart, ...new Array<number>(n).fill(tok.image), tok.visionEnd]));

/** One image's [heads, n, n] block of the reference's all-image vision pattern [heads, N, N]. */
function imageBlock(all: Float64Array, heads: number, N: number, start: number, n: number): Float64Array {
  const out = new Float64Array(heads * n * n);
  for (let h = 0; h < heads; h++)
    for (let i = 0; i < n; i++) out.set(all.subarray((h * N + start + i) * N + start, (h * N + start + i) * N + start + n), (h * n + i) * n);
  return out;
}

/** Window of each patch of a grid in the processor's patch order (Qwen2.5-VL: windows of vmws x vmws merged tokens). */
function patchWindows([t, gh, gw]: Grid, merge: number, vmws: number): number[] {
  const win: number[] = [];
  for (let f = 0; f < t; f++)
    for (let bh = 0; bh < gh / merge; bh++)
      for (let bw = 0; bw < gw / merge; bw++)
        for (let k = 0; k < merge * merge; k++) win.push((f * 1000 + Math.floor(bh / vmws)) * 1000 + Math.floor(bw / vmws));
  return win;
}

/**
 * Where the engine first departs from the reference: every vision hidden state (all images, patch order), the
 * image features (prompt order), every decoder hidden state and the logits, from an engine run that captures them.
 */
async function divergenceReport(model: VlmModel, ref: ReferenceQwen, want: ReferenceQwenOutput, ids: number[], images: PatchedImage[], interventions: InterventionSpec): Promise<string> {
  const d = model.dims;
  const r = await stagesRun(model, { ids, pixelValues: images, interventions });
  const lines: string[] = [];
  const E = ref.cfg.vision.width;
  const D = ref.cfg.text.hidden;
  for (let layer = 0; layer <= d.vision.layers; layer++) {
    const parts = r.residual.filter((x) => x.tower === 'vision' && x.layer === layer);
    const all = new Float32Array(parts.reduce((a, p) => a + p.data.length, 0));
    let at = 0;
    for (const p of parts) {
      all.set(p.data, at);
      at += p.data.length;
    }
    const m = maxAbsDiff(all, want.visionStates[layer]);
    lines.push(`vision hidden_state ${layer}: max |diff| ${m.max.toExponential(2)} at patch ${Math.floor(m.at / E)} (all images, patch order) col ${m.at % E}`);
  }
  if (r.imageFeatures) {
    const m = maxAbsDiff(r.imageFeatures.data, want.imageFeatures);
    lines.push(`image features: max |diff| ${m.max.toExponential(2)} at image token ${Math.floor(m.at / D)} (prompt order)`);
  }
  lines.push(...textStageLines(r, want, D, ref.cfg.text.vocab));
  const pos = Array.from(r.positions!.data);
  const refPos = want.positions.flat();
  const bad = pos.findIndex((p, i) => p !== refPos[i]);
  lines.push(bad < 0 ? `positions equal (rope_deltas ${r.positions!.ropeDelta} vs ${want.ropeDeltas})` : `positions differ first at axis ${Math.floor(bad / ids.length)} row ${bad % ids.length}: ${pos[bad]} vs ${refPos[bad]}`);
  return lines.join('\n');
}

interface Case {
  name: string;
  spec: RandomQwenSpec;
  /** Random RGB images [height, width] before the processor, in prompt order. */
  images: [number, number][];
  /** The (t, h, w) patch grids the processor must make of them (what the case is about). */
  grids: Grid[];
  /** Also load a copy whose rope_scaling says this (keeping mrope_section): the same logits. */
  ropeDefault?: Record<string, unknown>;
  interventions?: Record<string, InterventionCase>;
}

const v2 = (o: Partial<RandomQwenSpec['vision']> = {}): RandomQwenSpec['vision'] => ({ width: 32, heads: 4, depth: 2, mlpRatio: 2, patchSize: 14, mergeSize: 2, ...o });
// window_size 56 = 2 merged tokens (56 / 2 / 14): windows of 2x2 merged tokens.
const v25 = (o: Partial<RandomQwenSpec['vision']> = {}): RandomQwenSpec['vision'] => ({
  width: 32, heads: 4, depth: 3, intermediate: 48, windowSize: 56, fullattBlockIndexes: [1], patchSize: 14, mergeSize: 2, ...o,
});
const text = (o: Partial<RandomQwenSpec['text']> = {}): RandomQwenSpec['text'] => ({
  hidden: 64, intermediate: 96, layers: 2, heads: 4, kvHeads: 2, vocab: 128, ropeTheta: 1000, mropeSection: [2, 3, 3], ...o,
});

const CASES: Case[] = [
  {
    name: '(a) qwen2_vl, GQA 4/2, bf16, flat config, wide image 56x112, rope_type "default"',
    spec: { family: 'qwen2_vl', seed: 101, dtype: 'BF16', vision: v2(), text: text() },
    images: [[56, 112]],
    grids: [[1, 4, 8]],
    ropeDefault: { mrope_section: [2, 3, 3], rope_type: 'default', type: 'default' },
  },
  {
    name: '(b) qwen2_vl, GQA 6/2, f16, nested config, two images (tall, square) in one prompt',
    spec: { family: 'qwen2_vl', seed: 102, dtype: 'F16', nested: true, vision: v2({ width: 24, heads: 2, depth: 3 }), text: text({ hidden: 48, heads: 6, kvHeads: 2, layers: 3, mropeSection: [1, 1, 2] }) },
    images: [[110, 60], [80, 90]],
    grids: [[1, 8, 4], [1, 6, 6]],
    // Text heads have 8 dims; heads 0-2 share KV head 0, heads 3-5 KV head 1.
    interventions: {
      head_scale_text_and_vision: {
        json: {
          head_scale: [
            { tower: 'text', layer: 0, head: 1, scale: 3 },
            { tower: 'text', layer: 2, head: 5, scale: 0 },
            { tower: 'vision', layer: 1, head: 0, scale: 0 },
          ],
        },
      },
      temp_all_layers01_heads04: { json: { image_temperature: { alpha: 5, queries: 'all', layers: [0, 1], heads: [0, 4] } } },
      temp_generated_8: { json: { image_temperature: { alpha: 8, queries: 'generated' } } },
      mean_ablate_and_steer_last: {
        json: {
          mean_ablate: [{ tower: 'text', layer: 1, head: 3, mean: vec(8, 21, 2) }],
          steer: [{ tower: 'text', layer: 2, head: 4, alpha: 4, sigma: 1, direction: vec(8, 22), queries: 'last' }],
        },
      },
    },
  },
  {
    name: '(c) qwen2_vl, MHA 4/4, f32, tied embeddings, >= 4.52 names, image downscaled to max_pixels',
    spec: { family: 'qwen2_vl', seed: 103, dtype: 'F32', tied: true, newNames: true, vision: v2({ width: 16, heads: 2 }), text: text({ kvHeads: 4, hidden: 32, mropeSection: [1, 1, 2] }) },
    images: [[200, 130]],
    grids: [[1, 8, 6]],
  },
  {
    name: '(d) qwen2_5_vl, GQA 4/1, bf16, flat, 3x5 merged tokens (windows partial both ways), rope_type "default"',
    spec: { family: 'qwen2_5_vl', seed: 104, dtype: 'BF16', vision: v25(), text: text({ kvHeads: 1 }) },
    images: [[84, 140]],
    grids: [[1, 6, 10]],
    ropeDefault: { rope_type: 'default', mrope_section: [2, 3, 3] },
  },
  {
    name: '(e) qwen2_5_vl, GQA 6/2, f16, nested + >= 4.52 names, fullatt [0, 2], two images (5x3 and 2x2 merged)',
    spec: { family: 'qwen2_5_vl', seed: 105, dtype: 'F16', nested: true, newNames: true, vision: v25({ width: 16, heads: 2, intermediate: 24, fullattBlockIndexes: [0, 2] }), text: text({ hidden: 48, heads: 6, kvHeads: 2, mropeSection: [2, 1, 1] }) },
    images: [[140, 84], [56, 56]],
    grids: [[1, 10, 6], [1, 4, 4]],
  },
  {
    name: '(f) qwen2_5_vl, MHA 4/4, f32, tied, window 112 (4x4 merged), 4 blocks fullatt [3], very wide 2x6 merged image',
    spec: { family: 'qwen2_5_vl', seed: 106, dtype: 'F32', tied: true, vision: v25({ width: 24, heads: 2, depth: 4, windowSize: 112, fullattBlockIndexes: [3] }), text: text({ kvHeads: 4, layers: 3 }) },
    images: [[50, 170]],
    grids: [[1, 4, 12]],
  },
];

const INTERVENTION_CASE: Case = {
  name: '(g) interventions, qwen2_5_vl, GQA 4/2, 3 text layers, 3x3 merged image (windows partial both ways)',
  spec: { family: 'qwen2_5_vl', seed: 107, dtype: 'BF16', vision: v25(), text: text({ layers: 3 }) },
  images: [[84, 84]],
  grids: [[1, 6, 6]],
  interventions: {
    head_scale_text_and_vision: {
      json: {
        head_scale: [
          { tower: 'text', layer: 0, head: 1, scale: 0 },
          { tower: 'text', layer: 2, head: 3, scale: 2.5 },
          { tower: 'vision', layer: 0, head: 1, scale: 0 }, // a windowed block
          { tower: 'vision', layer: 2, head: 3, scale: 1.7 }, // windowed
          { tower: 'vision', layer: 1, head: 0, scale: 0.5 }, // the full-attention block
        ],
      },
    },
    temp_all_10: { json: { image_temperature: { alpha: 10, queries: 'all' } }, wrong: WRONG_ROWS.all },
    temp_all_layers02_heads13: { json: { image_temperature: { alpha: 4, queries: 'all', layers: [0, 2], heads: [1, 3] } } },
    temp_last_10: {
      json: { image_temperature: { alpha: 10, queries: 'last' } },
      wrong: { 'decode rows scaled too': (P, L) => [P - 1, L], 'unscaled (scope ignored)': () => [0, 0] },
    },
    temp_last_layer1_heads12: { json: { image_temperature: { alpha: 12, queries: 'last', layers: [1], heads: [1, 2] } } },
    temp_generated_10: {
      json: { image_temperature: { alpha: 10, queries: 'generated' } },
      wrong: WRONG_ROWS.generated,
    },
    temp_generated_layers12_heads02: { json: { image_temperature: { alpha: 0.2, queries: 'generated', layers: [1, 2], heads: [0, 2] } } },
    mean_ablate_text_head: { json: { mean_ablate: [{ tower: 'text', layer: 1, head: 2, mean: vec(16, 31, 2) }] } },
    steer_text_head_all: { json: { steer: [{ tower: 'text', layer: 1, head: 0, alpha: 3, sigma: 0.7, direction: vec(16, 32) }] } },
    steer_last: {
      json: { steer: [{ tower: 'text', layer: 1, head: 2, alpha: 4, sigma: 1, direction: vec(16, 33), queries: 'last' }] },
      wrongSteer: WRONG_STEER.last,
    },
    steer_generated: {
      json: { steer: [{ tower: 'text', layer: 1, head: 3, alpha: 6, sigma: 1, direction: vec(16, 34), queries: 'generated' }] },
      wrongSteer: WRONG_STEER.generated,
    },
    mean_ablate_steer_scale_temp: {
      json: {
        mean_ablate: [{ tower: 'text', layer: 0, head: 2, mean: vec(16, 35) }],
        steer: [{ tower: 'text', layer: 0, head: 2, alpha: 2, sigma: 0.5, direction: vec(16, 36) }],
        head_scale: [{ tower: 'text', layer: 0, head: 2, scale: 0.5 }, { tower: 'vision', layer: 2, head: 0, scale: 0 }],
        image_temperature: { alpha: 3, queries: 'last', heads: [0, 1] },
      },
    },
  },
};

for (const c of [...CASES, INTERVENTION_CASE]) {
  describe(`Qwen engine vs float64 reference: ${c.name}`, () => {
    let dir: string;
    let model: VlmModel;
    let ref: ReferenceQwen;
    let ids: number[];
    let images: PatchedImage[];
    let counts: number[];
    let run: RunResult;
    let want: ReferenceQwenOutput;
    const is25 = c.spec.family === 'qwen2_5_vl';
    const tok = qwenTokenIds(c.spec);
    // Qwen2.5-VL: the first windowed block and the first full-attention one; Qwen2-VL: the first and last blocks.
    const depth = c.spec.vision.depth;
    const fullatt = c.spec.vision.fullattBlockIndexes ?? [depth - 1];
    const visionLayers = is25 ? [[...Array(depth).keys()].find((b) => !fullatt.includes(b))!, fullatt[0]] : [0, depth - 1];

    /** Assert closeness; on failure, append where the engine first departs from the reference. */
    const close = closeWithReport<ReferenceQwenOutput>((spec, refOut) => divergenceReport(model, ref, refOut, ids, images, spec));

    beforeAll(async () => {
      dir = await makeCheckpoint(c.spec);
      const ctx = await gpuContext();
      model = await loadModel(ctx, dir);
      ref = await referenceQwen(dir);
      images = c.images.map(([h, w], i) => model.preprocess(randomRgb(h, w, 500 + 13 * i + (c.spec.seed ?? 0))) as PatchedImage);
      counts = model.imageTokenCounts(images);
      ids = qwenPromptIds(tok, c.spec.text.vocab, counts, c.spec.seed ?? 1);
      run = await engineRun(model, {
        ids,
        pixelValues: images,
        capture: parseCapture(
          {
            logits: 'all',
            pattern: [{ tower: 'text', layer: 1 }, ...visionLayers.map((layer) => ({ tower: 'vision', layer }))],
            z: { positions: 'last' },
            residual: [{ tower: 'text', layer: 0 }],
            image_features: true,
          },
          model.dims,
        ),
        maxNewTokens: NEW_TOKENS,
      });
      want = ref.forward(ids, images);
    });

    afterAll(() => model?.destroy());

    it('the processor makes the grids of the case; token counts and config agree with the reference', () => {
      expect(images.map((im) => im.grid)).toEqual(c.grids);
      expect(counts).toEqual(images.map((im) => ref.imageTokens(im.grid)));
      expect(ref.cfg.family).toBe(c.spec.family);
      expect(ref.cfg.tied).toBe(!!c.spec.tied);
      expect(model.dims).toEqual({
        text: { layers: ref.cfg.text.layers, heads: ref.cfg.text.heads, headDim: ref.cfg.text.headDim },
        vision: { layers: ref.cfg.vision.depth, heads: ref.cfg.vision.heads, headDim: ref.cfg.vision.headDim },
      });
    });

    it('logits are O(1..10) (the test has teeth)', () => {
      const m = want.logits.reduce((a, b) => Math.max(a, Math.abs(b)), 0);
      expect(m).toBeGreaterThan(1);
      expect(m).toBeLessThan(100);
    });

    it('M-RoPE positions and rope_deltas equal the reference', () => {
      expect(run.positions!.shape).toEqual([3, ids.length]);
      expect(Array.from(run.positions!.data)).toEqual(want.positions.flat());
      expect(run.positions!.ropeDelta).toBe(want.ropeDeltas);
    });

    it('image features within 1e-3, each in its own image-pad rows of the embeddings', async () => {
      const D = ref.cfg.text.hidden;
      expect(run.imageFeatures!.shape).toEqual([counts.reduce((a, b) => a + b, 0), D]);
      await close(run.imageFeatures!.data, want.imageFeatures, TOL.features, 'image features', EMPTY_INTERVENTIONS, want);
      const emb = run.residual.find((r) => r.tower === 'text' && r.layer === 0)!;
      await close(emb.data, want.textStates[0], TOL.features, 'text hidden_state 0 (embeddings with the features scattered)', EMPTY_INTERVENTIONS, want);
      const padRows = ids.flatMap((id, r) => (id === tok.image ? [r] : []));
      padRows.forEach((r, k) => expect(emb.data.subarray(r * D, (r + 1) * D), `image token ${k} (row ${r})`).toEqual(run.imageFeatures!.data.subarray(k * D, (k + 1) * D)));
    });

    it('all logits within 1e-3', async () => {
      expect(run.logits!.shape).toEqual([ids.length, ref.cfg.text.vocab]);
      await close(run.logits!.data, want.logits, TOL.logits, 'logits', EMPTY_INTERVENTIONS, want);
    });

    it('text layer-1 attention pattern within 1e-4 and z at the last position within 1e-3', async () => {
      const p = run.pattern.find((x) => x.tower === 'text')!;
      expect(p.shape).toEqual([ref.cfg.text.heads, ids.length, ids.length]);
      await close(p.data, want.patterns.get(1)!, TOL.pattern, 'text layer-1 pattern', EMPTY_INTERVENTIONS, want);
      expect(run.z!.shape).toEqual([ref.cfg.text.layers, ref.cfg.text.heads, ref.cfg.text.headDim]);
      await close(run.z!.data, lastRowZ(ref.cfg.text, want, ids.length), TOL.z, 'z at the last position', EMPTY_INTERVENTIONS, want);
    });

    it(`vision patterns of blocks ${visionLayers.join(', ')} (patch order) within 1e-4, exactly 0 across${is25 ? ' windows in windowed blocks' : ' images'}`, async () => {
      const v = ref.cfg.vision;
      const N = images.reduce((a, im) => a + im.grid[0] * im.grid[1] * im.grid[2], 0);
      const vmws = Math.floor(Math.floor(v.windowSize / v.mergeSize) / v.patchSize);
      for (const layer of visionLayers) {
        const windowed = is25 && !v.fullattBlockIndexes.includes(layer);
        let start = 0;
        for (let i = 0; i < images.length; i++) {
          const n = images[i].grid[0] * images[i].grid[1] * images[i].grid[2];
          const p = run.pattern.find((x): x is PatternCaptured => x.tower === 'vision' && x.layer === layer && x.image === i);
          expect(p, `vision block ${layer} image ${i} captured`).toBeDefined();
          expect(p!.shape).toEqual([v.heads, n, n]);
          await close(p!.data, imageBlock(want.visionPatterns.get(layer)!, v.heads, N, start, n), TOL.pattern, `vision block ${layer} pattern, image ${i}`, EMPTY_INTERVENTIONS, want);
          if (is25) {
            const win = patchWindows(images[i].grid, v.mergeSize, vmws);
            let cross = 0;
            let crossNonZero = 0;
            for (let h = 0; h < v.heads; h++)
              for (let a = 0; a < n; a++)
                for (let b = 0; b < n; b++) {
                  if (win[a] === win[b]) continue;
                  cross++;
                  if (p!.data[(h * n + a) * n + b] !== 0) crossNonZero++;
                }
            if (windowed) expect(crossNonZero, `vision block ${layer} image ${i}: nonzero probabilities across windows`).toBe(0);
            else if (cross > 0) expect(crossNonZero, `full-attention block ${layer} image ${i} attends across windows`).toBeGreaterThan(0);
          }
          start += n;
        }
      }
      if (is25) {
        // The case has what it claims: partial windows both ways (rows and columns not multiples of the window).
        const merged = images.map((im) => [im.grid[1] / v.mergeSize, im.grid[2] / v.mergeSize]);
        if (vmws === 2) {
          expect(merged.some(([r]) => r % vmws !== 0), 'a partial window at the bottom').toBe(true);
          expect(merged.some(([, cc]) => cc % vmws !== 0), 'a partial window at the right').toBe(true);
        }
        expect(merged.some(([r, cc]) => r > vmws || cc > vmws), 'more than one window').toBe(true);
      }
    });

    it(`${NEW_TOKENS} greedy tokens (KV cache, rope_deltas) equal the no-cache reference`, () => {
      compareTokens(run.tokens, ref.greedy(ids, images, NEW_TOKENS), 'plain greedy');
    });

    if (c.ropeDefault) {
      it(`rope_scaling ${JSON.stringify(c.ropeDefault)} is still M-RoPE: the same logits and tokens`, async () => {
        const other = await withConfig(dir, (cfg) => {
          cfg.rope_scaling = c.ropeDefault;
        });
        const r2 = await referenceQwen(other);
        expect(r2.forward(ids, images).logits).toEqual(want.logits);
        const m2 = await loadModel(model.ctx, other);
        try {
          const r = await engineRun(m2, { ids, pixelValues: images, capture: parseCapture({ logits: 'all' }, m2.dims), maxNewTokens: NEW_TOKENS });
          expect(maxAbsDiff(r.logits!.data, run.logits!.data).max, 'logits of the "default" config vs the "mrope" one').toBe(0);
          expect(r.tokens).toEqual(run.tokens);
          expect(Array.from(r.positions!.data)).toEqual(Array.from(run.positions!.data));
        } finally {
          m2.destroy();
        }
      });
    }

    interventionTests(c.interventions, () => ({
      caseName: c.name, model, ids, pixelValues: images, text: ref.cfg.text, want, close,
      forward: (seq, opts) => ref.forward(seq, images, opts),
      greedy: (n, spec) => ref.greedy(ids, images, n, spec),
    }));
  });
}

// ---------------------------------------------------------------------------------------------------------
// Runs of one model do not leak into each other: rope_deltas, prompt length, grids (and Qwen2.5-VL window order)

describe('two runs of one Qwen model with different grids and prompt lengths each equal a fresh model', () => {
  const spec: RandomQwenSpec = { family: 'qwen2_5_vl', seed: 108, vision: v25({ width: 16, heads: 2 }), text: text({ kvHeads: 1 }) };
  const tok = qwenTokenIds(spec);
  let dir: string;
  let ref: ReferenceQwen;
  const inputs: { ids: number[]; images: PatchedImage[] }[] = [];
  const results: RunResult[] = [];
  const fresh: RunResult[] = [];
  const capture = (m: VlmModel) => parseCapture({ logits: 'all', image_features: true }, m.dims);

  beforeAll(async () => {
    dir = await makeCheckpoint(spec);
    const ctx = await gpuContext();
    ref = await referenceQwen(dir);
    const model = await loadModel(ctx, dir);
    try {
      // Run 1: a wide 2x4 merged image (rope_deltas -4), short prompt. Run 2: a tall 5x3 one (rope_deltas -10)
      // with a longer prompt, so every buffer grows. Then run 1 again, shorter than run 2.
      for (const [k, [h, w], lead] of [[0, [56, 112], 2], [1, [140, 84], 9]] as const) {
        const images = [model.preprocess(randomRgb(h, w, 900 + k)) as PatchedImage];
        inputs.push({ images, ids: qwenPromptIds(tok, spec.text.vocab, model.imageTokenCounts(images), 60 + k, lead) });
      }
      for (const i of [0, 1, 0]) results.push(await engineRun(model, { ...inputs[i], pixelValues: inputs[i].images, capture: capture(model), maxNewTokens: NEW_TOKENS }));
    } finally {
      model.destroy();
    }
    for (const i of [0, 1]) {
      const m = await loadModel(ctx, dir);
      try {
        fresh.push(await engineRun(m, { ...inputs[i], pixelValues: inputs[i].images, capture: capture(m), maxNewTokens: NEW_TOKENS }));
      } finally {
        m.destroy();
      }
    }
  });

  it('the two runs have different grids, rope_deltas and prompt lengths', () => {
    expect(inputs.map((x) => x.images[0].grid)).toEqual([[1, 4, 8], [1, 10, 6]]);
    expect(results.map((r) => r.positions!.ropeDelta)).toEqual([-4, -10, -4]);
    expect(inputs[1].ids.length).toBeGreaterThan(inputs[0].ids.length);
  });

  for (const [k, i, what] of [[0, 0, 'first run'], [1, 1, 'second run (after the first)'], [2, 0, 'third run (the first input again, after the longer second)']] as const) {
    it(`${what}: logits, features, positions and ${NEW_TOKENS} tokens equal a fresh model's run and the reference`, () => {
      const got = results[k];
      const f = fresh[i];
      expect(maxAbsDiff(got.logits!.data, f.logits!.data).max, `${what}: logits vs a fresh model`).toBe(0);
      expect(maxAbsDiff(got.imageFeatures!.data, f.imageFeatures!.data).max, `${what}: image features vs a fresh model`).toBe(0);
      expect(got.tokens).toEqual(f.tokens);
      expect(got.positions!.ropeDelta).toBe(f.positions!.ropeDelta);
      expect(Array.from(got.positions!.data)).toEqual(Array.from(f.positions!.data));
      const { ids, images } = inputs[i];
      const want = ref.forward(ids, images);
      expect(got.positions!.ropeDelta).toBe(want.ropeDeltas);
      expectClose(got.logits!.data, want.logits, TOL.logits, 0, `${what}: logits vs the reference`);
      compareTokens(got.tokens, ref.greedy(ids, images, NEW_TOKENS), `${what}: greedy`);
    });
  }
});
