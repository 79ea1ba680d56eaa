// The float64 Qwen2-VL / Qwen2.5-VL reference (tests/helpers/reference-qwen.ts) held to the tiny-qwen2vl and
// tiny-qwen25vl goldens field by field (fed the goldens' own image_grid_thw, input_ids and pixel values: the
// float32 tensor rebuilt from resized_uint8, equal to the printed pixel_values to their 7 decimals), and
// run on random checkpoints of both families written by src/models/random-qwen.ts (CPU only).

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseInterventions, type ModelDims } from '../src/spec/spec.js';
import { type RandomQwenSpec, qwenTokenIds, writeRandomQwen } from '../src/models/random-qwen.js';
import { expectClose } from './helpers/gpu.js';
import { fixtureDir, golden } from './helpers/fixtures.js';
import {
  type Grid,
  type QwenImage,
  type ReferenceQwen,
  type ReferenceQwenOutput,
  qwenWindowIndex,
  referenceQwen,
} from './helpers/reference-qwen.js';

const flat = (a: unknown): number[] => (Array.isArray(a) ? a.flatMap(flat) : [a as number]);

const dimsOf = (ref: ReferenceQwen): ModelDims => ({
  text: { layers: ref.cfg.text.layers, heads: ref.cfg.text.heads, headDim: ref.cfg.text.headDim },
  vision: { layers: ref.cfg.vision.depth, heads: ref.cfg.vision.heads, headDim: ref.cfg.vision.headDim },
});

/** z of the last row as [layers, heads, hd]. */
function lastRowZ(ref: ReferenceQwen, out: ReferenceQwenOutput, L: number): Float64Array {
  const W = ref.cfg.text.heads * ref.cfg.text.headDim;
  const z = new Float64Array(ref.cfg.text.layers * W);
  for (let l = 0; l < ref.cfg.text.layers; l++) z.set(out.z.subarray((l * L + L - 1) * W, (l * L + L) * W), l * W);
  return z;
}

const sum = (a: Float64Array) => a.reduce((s, x) => s + x, 0);

/**
 * The float32 pixel_values Hugging Face was fed, from golden's resized_uint8 (Pillow's exact output): the slow
 * Qwen2VLImageProcessor's rescale (float64 product cast to float32) and normalize (float32 arithmetic,
 * image_transforms.py), the image repeated to temporal_patch_size frames, then _preprocess's patch flattening
 * (2x2 merge blocks row-major, row-major inside; columns in the Conv3d layout [C, T, P, P]). golden.json prints
 * pixel_values to 7 decimals, and that 5e-8 rounding alone moves the logits by up to ~5e-6.
 */
function exactPixels(g: any, pp: any): Float32Array {
  const img = g.image.resized_uint8 as number[][][];
  const [H, W] = [img.length, img[0].length];
  const mean = (pp.image_mean as number[]).map(Math.fround);
  const std = (pp.image_std as number[]).map(Math.fround);
  const at = (c: number, y: number, x: number) => Math.fround(Math.fround(Math.fround(img[y][x][c] * pp.rescale_factor) - mean[c]) / std[c]);
  const { patch_size: p, temporal_patch_size: T, merge_size: m } = pp;
  const [gh, gw] = [H / p, W / p];
  const K = 3 * T * p * p;
  const out = new Float32Array(gh * gw * K);
  let n = 0;
  for (let bh = 0; bh < gh / m; bh++)
    for (let bw = 0; bw < gw / m; bw++)
      for (let mh = 0; mh < m; mh++)
        for (let mw = 0; mw < m; mw++, n++)
          for (let c = 0; c < 3; c++)
            for (let t = 0; t < T; t++)
              for (let py = 0; py < p; py++)
                for (let px = 0; px < p; px++) out[n * K + ((c * T + t) * p + py) * p + px] = at(c, (bh * m + mh) * p + py, (bw * m + mw) * p + px);
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// 1. The goldens

for (const fixture of ['tiny-qwen2vl', 'tiny-qwen25vl']) {
  describe(`float64 reference reproduces the ${fixture} golden`, () => {
    const g = golden(fixture);
    const P: number = g.prompt_len;
    let ref: ReferenceQwen;
    let images: QwenImage[];
    let out: ReferenceQwenOutput;

    beforeAll(async () => {
      const dir = fixtureDir(fixture);
      ref = await referenceQwen(dir);
      const pp = JSON.parse(await readFile(join(dir, 'preprocessor_config.json'), 'utf8'));
      images = [{ pixelValues: exactPixels(g, pp), grid: g.image_grid_thw[0] as Grid }];
      out = ref.forward(g.input_ids, images);
    });

    it('the float32 pixel values are the golden pixel_values (to their printed 7 decimals)', () => {
      expect(flat(g.image.resized_uint8).reduce((a, b) => a + b, 0)).toBe(g.image.resized_uint8_checksum);
      expectClose(images[0].pixelValues, flat(g.pixel_values), 5.1e-8, 0, 'pixel_values');
    });

    it('from the printed pixel_values: vision and features within 1e-6, logits within 1e-5 (their rounding moves logits ~5e-6)', () => {
      const o = ref.forward(g.input_ids, [{ pixelValues: Float32Array.from(flat(g.pixel_values)), grid: images[0].grid }]);
      expectClose(o.visionStates.map(sum), g.vision_hidden_states_sum, 1e-6, 0, 'vision_hidden_states_sum');
      expectClose(o.imageFeatures, flat(g.image_features), 1e-6, 0, 'image_features');
      expectClose(o.logits, flat(g.logits), 1e-5, 0, 'logits');
    });

    it('parses the config (family, widths, special ids)', () => {
      expect(ref.cfg.family).toBe(fixture === 'tiny-qwen2vl' ? 'qwen2_vl' : 'qwen2_5_vl');
      expect(ref.cfg.vision.width).toBe(32);
      expect(ref.cfg.vision.outHidden).toBe(64);
      expect(ref.cfg.text.mropeSection).toEqual([2, 3, 3]);
      expect(ref.cfg.imageTokenId).toBe(g.prompt_layout.token_ids.image_token_id);
      expect(ref.cfg.tied).toBe(false);
      expect(ref.imageTokens(images[0].grid)).toBe(g.prompt_layout.image_pad_count);
    });

    it('M-RoPE position ids and rope_deltas are exact', () => {
      expect(out.positions).toEqual(g.position_ids);
      expect(out.ropeDeltas).toBe(g.rope_deltas);
    });

    if (g.vision_window) {
      it('window index and cu_window_seqlens match', () => {
        const w = qwenWindowIndex([images[0].grid], ref.cfg);
        expect(w.windowIndex).toEqual(g.vision_window.window_index);
        expect(w.cuWindowSeqlens).toEqual(g.vision_window.cu_window_seqlens);
      });
    }

    it('vision states: sums, patch embedding row 0, last block', () => {
      expectClose(out.visionStates.map(sum), g.vision_hidden_states_sum, 1e-9, 0, 'vision_hidden_states_sum'); // unrounded in golden
      const E = ref.cfg.vision.width;
      expectClose(out.visionStates[0].subarray(0, E), g.vision_patch_embed_row0, 1e-6, 0, 'vision_patch_embed_row0');
      const last = out.visionStates[ref.cfg.vision.depth];
      expectClose(last.subarray(0, E), g.vision_last_block_row0, 1e-6, 0, 'vision_last_block_row0');
      if (g.vision_last_block) expectClose(last, flat(g.vision_last_block), 1e-6, 0, 'vision_last_block');
    });

    it('vision attention patterns (patch order)', () => {
      expectClose(out.visionPatterns.get(0)!, flat(g.vision_attention_pattern_layer0), 1e-6, 0, 'vision_attention_pattern_layer0');
      if (g.vision_attention_pattern_layer1) {
        expectClose(out.visionPatterns.get(1)!, flat(g.vision_attention_pattern_layer1), 1e-6, 0, 'vision_attention_pattern_layer1');
      }
    });

    it('image features', () => {
      expectClose(out.imageFeatures, flat(g.image_features), 1e-6, 0, 'image_features');
    });

    it('all logits, the layer-1 pattern and z at the last position', () => {
      expectClose(out.logits, flat(g.logits), 1e-6, 0, 'logits');
      expectClose(out.patterns.get(1)!, flat(g.attention_pattern_layer1), 1e-6, 0, 'attention_pattern_layer1');
      expectClose(lastRowZ(ref, out, P), flat(g.z_last_position), 1e-6, 0, 'z_last_position');
    });

    it('greedy tokens (no KV cache), their margin and decode positions', () => {
      const gr = ref.greedy(g.input_ids, images, 6);
      expect(gr.tokens).toEqual(g.greedy_6);
      expectClose([Math.min(...gr.margins)], [g.greedy_min_top2_margin], 1e-9, 0, 'greedy_min_top2_margin');
      const o = ref.forward([...g.input_ids, ...gr.tokens], images, { promptLength: P });
      for (const axis of o.positions) expect(axis.slice(P)).toEqual(g.greedy_decode_positions);
    });

    for (const name of Object.keys(g.interventions)) {
      it(`intervention ${name}`, () => {
        const c = g.interventions[name];
        const spec = parseInterventions(c.spec, dimsOf(ref));
        const o = ref.forward(g.input_ids, images, { interventions: spec });
        const V = ref.cfg.text.vocab;
        expectClose(o.logits.subarray((P - 1) * V), c.last_logits, 1e-6, 0, `${name} last_logits`);
        if (c.greedy_6) {
          const gr = ref.greedy(g.input_ids, images, 6, spec);
          expect(gr.tokens).toEqual(c.greedy_6);
          if (c.greedy_min_top2_margin !== undefined) {
            expectClose([Math.min(...gr.margins)], [c.greedy_min_top2_margin], 1e-9, 0, `${name} greedy_min_top2_margin`);
          }
        }
      });
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// 2. Random checkpoints of both families: two images of different aspect ratios in one prompt

/** Deterministic pixel values in [-2, 2) for a grid. */
function randomImage(grid: Grid, K: number, seed: number): QwenImage {
  let s = seed >>> 0;
  const px = new Float32Array(grid[0] * grid[1] * grid[2] * K);
  for (let i = 0; i < px.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    px[i] = (s / 2 ** 32) * 4 - 2;
  }
  return { pixelValues: px, grid };
}

interface RandomCase {
  name: string;
  spec: RandomQwenSpec;
  grids: [Grid, Grid];
}

const CASES: RandomCase[] = [
  {
    name: 'qwen2_vl',
    spec: {
      family: 'qwen2_vl',
      seed: 7,
      vision: { width: 16, heads: 2, depth: 2, mlpRatio: 2, patchSize: 14, mergeSize: 2 },
      text: { hidden: 32, intermediate: 48, layers: 2, heads: 4, kvHeads: 2, vocab: 64, ropeTheta: 100, mropeSection: [2, 1, 1] },
    },
    grids: [[1, 4, 8], [1, 6, 2]], // merged 2x4 (wide) and 3x1 (tall)
  },
  {
    name: 'qwen2_5_vl',
    spec: {
      family: 'qwen2_5_vl',
      seed: 11,
      vision: { width: 16, heads: 2, depth: 3, intermediate: 24, windowSize: 28, fullattBlockIndexes: [1], patchSize: 7, mergeSize: 2 },
      text: { hidden: 32, intermediate: 48, layers: 2, heads: 4, kvHeads: 1, vocab: 64, ropeTheta: 100, mropeSection: [1, 2, 1] },
    },
    grids: [[1, 6, 10], [1, 10, 6]], // merged 3x5 and 5x3: windows of 2x2 merged tokens, partial both ways
  },
];

describe('random Qwen checkpoints through the reference', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'vlmscope-random-qwen-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  for (const c of CASES) {
    describe(c.name, () => {
      let ref: ReferenceQwen;
      let images: QwenImage[];
      let ids: number[];
      let out: ReferenceQwenOutput;
      const tok = qwenTokenIds(c.spec);

      beforeAll(async () => {
        const dir = join(root, c.name);
        await writeRandomQwen(dir, c.spec);
        ref = await referenceQwen(dir);
        const v = ref.cfg.vision;
        const K = v.channels * v.temporalPatchSize * v.patchSize * v.patchSize;
        images = c.grids.map((g, i) => randomImage(g, K, 100 + i));
        const pads = images.map((im) => new Array<number>(ref.imageTokens(im.grid)).fill(tok.image));
        ids = [3, 4, tok.visionStart, ...pads[0], tok.visionEnd, 5, tok.visionStart, ...pads[1], tok.visionEnd, 6, 7];
        out = ref.forward(ids, images);
      });

      it('the config parses as written', () => {
        expect(ref.cfg.family).toBe(c.spec.family);
        expect(ref.cfg.vision.width).toBe(c.spec.vision.width);
        expect(ref.cfg.vision.outHidden).toBe(c.spec.text.hidden);
        expect(ref.cfg.text.mropeSection).toEqual(c.spec.text.mropeSection);
        expect(ref.cfg.imageTokenId).toBe(tok.image);
        expect(ref.cfg.tied).toBe(false);
      });

      it('finite logits; each image features fill its own pads and do not depend on the other image', () => {
        expect(out.logits.length).toBe(ids.length * c.spec.text.vocab);
        expect(out.logits.every(Number.isFinite)).toBe(true);
        const D = c.spec.text.hidden;
        // masked_scatter: the pads' input embeddings are the features, in prompt order.
        const padRows = ids.flatMap((id, r) => (id === tok.image ? [r] : []));
        expect(padRows.length * D).toBe(out.imageFeatures.length);
        padRows.forEach((r, k) => expect(out.textStates[0].subarray(r * D, (r + 1) * D)).toEqual(out.imageFeatures.subarray(k * D, (k + 1) * D)));
        // Vision attention never crosses images: each image alone gives the same features.
        let at = 0;
        for (const im of images) {
          const n = ref.imageTokens(im.grid);
          const alone = ref.forward([tok.visionStart, ...new Array<number>(n).fill(tok.image), tok.visionEnd], [im]);
          expectClose(out.imageFeatures.subarray(at * D, (at + n) * D), alone.imageFeatures, 1e-12, 0, `features of image ${im.grid}`);
          at += n;
        }
      });

      it('M-RoPE positions: each image on its own grid, text resuming at max + 1', () => {
        const m = ref.cfg.vision.mergeSize;
        let r = 0;
        let next = 0;
        const want: number[][] = [[], [], []];
        const text = (n: number) => {
          for (let i = 0; i < n; i++, r++, next++) for (const a of want) a.push(next);
        };
        text(3);
        for (const [i, [, gh, gw]] of c.grids.entries()) {
          for (let y = 0; y < gh / m; y++) for (let x = 0; x < gw / m; x++, r++) want.forEach((a, ax) => a.push(next + [0, y, x][ax]));
          next += Math.max(gh, gw) / m;
          text(3); // vision_end and two text tokens (or vision_start)
        }
        expect(r).toBe(ids.length);
        expect(out.positions).toEqual(want);
        expect(out.ropeDeltas).toBe(next - ids.length);
      });

      it('vision attention: block-diagonal per image; Qwen2.5-VL windowed blocks within windows, partial both ways', () => {
        const v = ref.cfg.vision;
        const m = v.mergeSize;
        const vmws = Math.floor(v.windowSize / m / v.patchSize);
        // Image and window of each patch, from the processor's patch order.
        const img: number[] = [];
        const win: number[] = [];
        c.grids.forEach(([t, gh, gw], i) => {
          for (let f = 0; f < t; f++)
            for (let bh = 0; bh < gh / m; bh++)
              for (let bw = 0; bw < gw / m; bw++)
                for (let k = 0; k < m * m; k++) {
                  img.push(i);
                  win.push(((i * t + f) * 1000 + Math.floor(bh / vmws)) * 1000 + Math.floor(bw / vmws));
                }
        });
        const N = img.length;
        for (let b = 0; b < v.depth; b++) {
          const windowed = c.spec.family === 'qwen2_5_vl' && !v.fullattBlockIndexes.includes(b);
          const pat = out.visionPatterns.get(b)!;
          let crossWindow = 0;
          for (let h = 0; h < v.heads; h++)
            for (let i = 0; i < N; i++) {
              let rowSum = 0;
              for (let j = 0; j < N; j++) {
                const p = pat[(h * N + i) * N + j];
                rowSum += p;
                if (img[i] !== img[j]) expect(p).toBe(0);
                else if (win[i] !== win[j]) {
                  if (windowed) expect(p).toBe(0);
                  else crossWindow += p;
                }
              }
              expect(Math.abs(rowSum - 1)).toBeLessThan(1e-12);
            }
          if (c.spec.family === 'qwen2_5_vl' && !windowed) expect(crossWindow).toBeGreaterThan(0);
        }
        if (c.spec.family === 'qwen2_5_vl') {
          const w = qwenWindowIndex(c.grids, ref.cfg);
          expect(w.windows.some(([rows]) => rows < vmws)).toBe(true);
          expect(w.windows.some(([, cols]) => cols < vmws)).toBe(true);
          expect(w.windows.some(([rows, cols]) => rows === vmws && cols === vmws)).toBe(true);
          expect([...w.windowIndex].sort((a, b) => a - b)).toEqual(w.windowIndex.map((_, i) => i));
          expect(w.cuWindowSeqlens[w.cuWindowSeqlens.length - 1]).toBe(N);
        }
      });

      it('nested config + new tensor names, and a flat rope_scaling with rope_type "default", give the same logits', async () => {
        const nested = join(root, `${c.name}-nested`);
        await writeRandomQwen(nested, { ...c.spec, nested: true, newNames: true });
        const o1 = (await referenceQwen(nested)).forward(ids, images);
        expect(o1.logits).toEqual(out.logits);
        const dflt = join(root, `${c.name}-default-rope`);
        await writeRandomQwen(dflt, c.spec);
        const cfgPath = join(dflt, 'config.json');
        const raw = JSON.parse(await readFile(cfgPath, 'utf8'));
        raw.rope_scaling = { mrope_section: c.spec.text.mropeSection, rope_type: 'default', type: 'default' };
        await writeFile(cfgPath, JSON.stringify(raw));
        expect((await referenceQwen(dflt)).forward(ids, images).logits).toEqual(out.logits);
      });

      it('tied embeddings (no lm_head.weight) and F16 / F32 storage load and run', async () => {
        for (const [k, extra] of [['tied', { tied: true }], ['f16', { dtype: 'F16' }], ['f32', { dtype: 'F32', nested: true }]] as const) {
          const d = join(root, `${c.name}-${k}`);
          await writeRandomQwen(d, { ...c.spec, ...extra });
          const r = await referenceQwen(d);
          expect(r.cfg.tied).toBe(k === 'tied');
          const o = r.forward(ids, images);
          expect(o.logits.every(Number.isFinite)).toBe(true);
          // The same draws in another dtype: close to the BF16 checkpoint, not equal.
          if (k !== 'tied') expectClose(o.imageFeatures, out.imageFeatures, 0.05, 0, `${k} image features vs bf16`);
        }
      });

      it('mean_ablate replaces z_h on every row; steer "last" adds alpha * sigma * direction on the last row only', () => {
        const { heads: H, headDim: hd } = ref.cfg.text;
        const mean = Array.from({ length: hd }, (_, d) => 0.1 * (d - hd / 2));
        const dir = Array.from({ length: hd }, (_, d) => (d % 3) - 1);
        const spec = parseInterventions(
          {
            mean_ablate: [{ tower: 'text', layer: 0, head: 1, mean }],
            steer: [{ tower: 'text', layer: 0, head: 2, alpha: 2, sigma: 0.5, direction: dir, queries: 'last' }],
          },
          dimsOf(ref),
        );
        const o = ref.forward(ids, images, { interventions: spec });
        const L = ids.length;
        const W = H * hd;
        for (let r = 0; r < L; r++) {
          const z = (x: ReferenceQwenOutput, h: number) => Array.from(x.z.subarray(r * W + h * hd, r * W + (h + 1) * hd));
          expectClose(z(o, 1), Float32Array.from(mean), 0, 0, `mean-ablated z row ${r}`);
          const want = z(out, 2).map((x, d) => x + (r === L - 1 ? 2 * 0.5 * dir[d] : 0));
          expectClose(z(o, 2), want, 1e-15, 0, `steered z row ${r}`);
          expectClose(z(o, 0), z(out, 0), 0, 0, `untouched z row ${r}`);
        }
      });

      it('greedy decoding runs with a vision and a text intervention', () => {
        const spec = parseInterventions(
          { head_scale: [{ tower: 'vision', layer: 0, head: 1, scale: 0 }], image_temperature: { alpha: 0.5, queries: 'all' } },
          dimsOf(ref),
        );
        const gr = ref.greedy(ids, images, 3, spec);
        expect(gr.tokens.length).toBe(3);
        expect(gr.margins.every((x) => x >= 0)).toBe(true);
      });
    });
  }
});
