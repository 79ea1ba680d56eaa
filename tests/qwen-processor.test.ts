// Qwen2-VL / Qwen2.5-VL CPU pieces: the image processor (smart_resize, Pillow resize, normalisation, patch
// flattening), vision rotary positions, Qwen2.5-VL window index, get_rope_index and the M-RoPE table, against the
// tiny-qwen2vl / tiny-qwen25vl goldens and the worked examples of the model spec (HF semantics).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadImageFile, type RgbImage } from '../src/io/image.js';
import {
  type QwenImageProcessorConfig,
  type QwenPixels,
  defaultQwenImageProcessorConfig,
  parseQwenImageProcessorConfig,
  qwenPreprocess,
  roundHalfEven,
  smartResize,
} from '../src/models/qwen2-vl/image-processor.js';
import {
  mropeTable,
  ropeIndex,
  visionRotaryPositions,
  visionRotaryTable,
  windowIndex,
  windowOfPatch,
} from '../src/models/qwen2-vl/positions.js';
import { inverseFrequencies, rotaryTable } from '../src/models/rotary.js';
import { fixtureDir, golden } from './helpers/fixtures.js';

const readJson = (dir: string, f: string): Record<string, unknown> => JSON.parse(readFileSync(join(dir, f), 'utf8'));

type G3 = [number, number, number];

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

for (const name of ['tiny-qwen2vl', 'tiny-qwen25vl']) {
  describe(`${name} golden`, () => {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    let g: any;
    let cfg: QwenImageProcessorConfig;
    let img: RgbImage;
    let px: QwenPixels;

    beforeAll(async () => {
      const dir = fixtureDir(name);
      g = golden(name);
      cfg = parseQwenImageProcessorConfig(readJson(dir, 'preprocessor_config.json'), 'preprocessor_config.json');
      img = await loadImageFile(join(dir, g.image.file));
      px = qwenPreprocess(img, cfg);
    });

    it('smart_resize and the Pillow resize are exact', () => {
      const sr = g.image.smart_resize;
      expect([img.height, img.width]).toEqual(sr.input_hw);
      expect(cfg.minPixels).toBe(sr.min_pixels);
      expect(cfg.maxPixels).toBe(sr.max_pixels);
      const out = smartResize(img.height, img.width, sr.factor, sr.min_pixels, sr.max_pixels);
      expect([out.height, out.width]).toEqual(sr.output_hw);
      expect([px.resized.height, px.resized.width]).toEqual(g.image.resized_hw);
      const want = Uint8Array.from((g.image.resized_uint8 as number[][][]).flat(2));
      expect(px.resized.data.length).toBe(want.length);
      expect(Buffer.from(px.resized.data).equals(Buffer.from(want))).toBe(true);
      expect(px.resized.data.reduce((s, v) => s + v, 0)).toBe(g.image.resized_uint8_checksum);
    });

    it('grid and pixel_values', () => {
      expect([px.grid]).toEqual(g.image_grid_thw);
      const want = (g.pixel_values as number[][]).flat();
      expect(px.pixelValues.length).toBe(want.length);
      expect(maxAbsDiff(px.pixelValues, want)).toBeLessThanOrEqual(1e-6);
    });

    it('patch_grid_index and vision_rotary_pos_ids', () => {
      const grid = px.grid;
      const pos = visionRotaryPositions(grid, cfg.mergeSize);
      expect(Array.from(pos)).toEqual((g.vision_rotary_pos_ids as number[][]).flat());
      const perFrame = grid[1] * grid[2];
      const pgi = Array.from({ length: pos.length / 2 }, (_, n) => [Math.floor(n / perFrame), pos[2 * n], pos[2 * n + 1]]);
      expect(pgi).toEqual(g.patch_grid_index);
    });

    it('position_ids and rope_deltas (get_rope_index)', () => {
      const ids = g.prompt_layout.token_ids;
      const r = ropeIndex(g.input_ids, g.image_grid_thw, {
        imageTokenId: ids.image_token_id,
        visionStartTokenId: ids.vision_start_token_id,
        mergeSize: cfg.mergeSize,
      });
      expect(r.positions.map((a) => Array.from(a))).toEqual(g.position_ids);
      expect(r.ropeDeltas).toBe(g.rope_deltas);
      // Decode positions = sequence index + rope_deltas on all axes.
      const L = g.input_ids.length as number;
      const dec = (g.greedy_decode_positions as number[]).map((p) => p);
      expect(dec).toEqual(dec.map((_, i) => L + i + r.ropeDeltas));
    });
  });
}

describe('tiny-qwen25vl window index', () => {
  it('window_index, cu_window_seqlens and window_of_token match the golden', () => {
    const g = golden('tiny-qwen25vl');
    const vc = readJson(fixtureDir('tiny-qwen25vl'), 'config.json').vision_config as Record<string, number>;
    expect(vc.window_size).toBe(56);
    const grids = g.image_grid_thw as G3[];
    const w = windowIndex(grids, vc.spatial_merge_size!, vc.window_size!, vc.patch_size!);
    expect(Array.from(w.windowIndex)).toEqual(g.vision_window.window_index);
    expect(w.cuWindowSeqlens).toEqual(g.vision_window.cu_window_seqlens);
    const wp = windowOfPatch(grids, vc.spatial_merge_size!, vc.window_size!, vc.patch_size!);
    const unit = vc.spatial_merge_size! ** 2;
    expect(Array.from({ length: wp.length / unit }, (_, k) => wp[k * unit])).toEqual(g.vision_window.window_of_token);
    for (let p = 0; p < wp.length; p++) expect(wp[p]).toBe(wp[p - (p % unit)]);
  });
});

describe('smartResize', () => {
  it('worked example 640x480 -> (476, 644)', () => {
    expect(smartResize(480, 640, 28, 3136, 12845056)).toEqual({ height: 476, width: 644 });
    expect(smartResize(480, 640, 28, 3136, 1003520)).toEqual({ height: 476, width: 644 });
  });

  it("uses Python's banker's rounding", () => {
    expect([0.5, 1.5, 2.5, 3.5, 4.5, -1.5, -2.5, 2.4999, 2.5001].map(roundHalfEven)).toEqual([0, 2, 2, 4, 4, -2, -2, 2, 3]);
    // 70/28 = 2.5 -> 2, 126/28 = 4.5 -> 4, 42/28 = 1.5 -> 2, 98/28 = 3.5 -> 4
    expect(smartResize(70, 126, 28, 3136, 1003520)).toEqual({ height: 56, width: 112 });
    expect(smartResize(42, 98, 28, 3136, 1003520)).toEqual({ height: 56, width: 112 });
  });

  it('max_pixels (floor) and min_pixels (ceil) branches', () => {
    expect(smartResize(100, 150, 28, 3136, 5000)).toEqual({ height: 56, width: 84 });
    expect(smartResize(480, 640, 28, 3136, 5000)).toEqual({ height: 56, width: 56 });
    expect(smartResize(1, 1, 28, 3136, 1003520)).toEqual({ height: 56, width: 56 });
    expect(smartResize(14, 14, 28, 3136, 1003520)).toEqual({ height: 56, width: 56 });
  });

  it('extreme but allowed aspect ratios keep sides >= factor (values from HF smart_resize)', () => {
    const cases: [number, number, number, [number, number]][] = [
      [40, 8000, 1003520, [28, 8008]],
      [8000, 40, 1003520, [8008, 28]],
      [40, 8000, 5000, [28, 980]],
      [50, 10000, 5000, [28, 980]], // floor gives 0: max(factor, ...)
      [10000, 50, 5000, [980, 28]],
      [1, 200, 1003520, [28, 812]],
      [200, 1, 1003520, [812, 28]],
      [30, 6000, 12845056, [28, 5992]],
    ];
    for (const [h, w, mx, want] of cases) {
      const r = smartResize(h, w, 28, 3136, mx);
      expect([r.height, r.width]).toEqual(want);
      expect(Math.min(r.height, r.width)).toBeGreaterThanOrEqual(28);
    }
  });

  it('aspect ratio > 200 and empty sides are clean errors', () => {
    expect(() => smartResize(40, 10000, 28, 3136, 1003520)).toThrow(/aspect ratio must be smaller than 200, got 250/);
    expect(() => smartResize(10000, 40, 28, 3136, 1003520)).toThrow(/aspect ratio must be smaller than 200, got 250/);
    expect(() => smartResize(0, 10, 28, 3136, 1003520)).toThrow(/positive integers/);
    expect(() => smartResize(10, 0, 28, 3136, 1003520)).toThrow(/positive integers/);
  });
});

describe('parseQwenImageProcessorConfig', () => {
  it('class defaults', () => {
    const c = parseQwenImageProcessorConfig({}, 'p.json');
    expect(c).toEqual(defaultQwenImageProcessorConfig());
    expect([c.minPixels, c.maxPixels, c.patchSize, c.temporalPatchSize, c.mergeSize]).toEqual([3136, 1003520, 14, 2, 2]);
    expect(c.resample).toBe('bicubic');
  });

  it('size.shortest_edge/longest_edge, overridden by min_pixels/max_pixels', () => {
    const s = parseQwenImageProcessorConfig({ size: { shortest_edge: 1000, longest_edge: 200000 } }, 'p.json');
    expect([s.minPixels, s.maxPixels]).toEqual([1000, 200000]);
    const o = parseQwenImageProcessorConfig({ min_pixels: 2000, size: { shortest_edge: 1000, longest_edge: 200000 } }, 'p.json');
    expect([o.minPixels, o.maxPixels]).toEqual([2000, 200000]);
    const r = parseQwenImageProcessorConfig({ resample: 2, merge_size: 3, image_mean: 0.5 }, 'p.json');
    expect([r.resample, r.mergeSize, r.imageMean]).toEqual(['bilinear', 3, [0.5, 0.5, 0.5]]);
  });

  it('bad values name the file and the key', () => {
    expect(() => parseQwenImageProcessorConfig({ max_pixels: -1 }, 'pp.json')).toThrow(/pp\.json.*"max_pixels"/);
    expect(() => parseQwenImageProcessorConfig({ size: { longest_edge: 'x' } }, 'pp.json')).toThrow(/pp\.json.*"size\.longest_edge"/);
    expect(() => parseQwenImageProcessorConfig({ patch_size: 14.5 }, 'pp.json')).toThrow(/pp\.json.*"patch_size"/);
    expect(() => parseQwenImageProcessorConfig({ image_std: [1, 2] }, 'pp.json')).toThrow(/pp\.json.*"image_std"/);
    expect(() => parseQwenImageProcessorConfig({ resample: 9 }, 'pp.json')).toThrow(/pp\.json.*"resample"/);
    expect(() => parseQwenImageProcessorConfig({ do_resize: 1 }, 'pp.json')).toThrow(/pp\.json.*"do_resize"/);
    expect(() => parseQwenImageProcessorConfig({ min_pixels: 10, max_pixels: 5 }, 'pp.json')).toThrow(/pp\.json.*"min_pixels"/);
  });
});

describe('qwenPreprocess layout', () => {
  // A synthetic image whose pixel values encode their position, no resize / rescale / normalize.
  function coded(h: number, w: number): RgbImage {
    const data = new Uint8Array(h * w * 3);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) data[(y * w + x) * 3 + c] = (y * 7 + x * 3 + c * 50) % 256;
    return { width: w, height: h, data };
  }

  it('rows follow merge blocks, columns the Conv3d [C, T, P, P] layout, for merge sizes 2 and 3', () => {
    for (const m of [2, 3]) {
      const P = 4;
      const T = 2;
      const cfg: QwenImageProcessorConfig = {
        ...defaultQwenImageProcessorConfig(),
        patchSize: P,
        temporalPatchSize: T,
        mergeSize: m,
        doResize: false,
        doRescale: false,
        doNormalize: false,
      };
      const H = P * m * 2;
      const W = P * m * 3;
      const img = coded(H, W);
      const out = qwenPreprocess(img, cfg);
      const gh = H / P;
      const gw = W / P;
      expect(out.grid).toEqual([1, gh, gw]);
      const cols = 3 * T * P * P;
      expect(out.pixelValues.length).toBe(gh * gw * cols);
      const pos = visionRotaryPositions(out.grid, m);
      for (let bh = 0; bh < gh / m; bh++) {
        for (let bw = 0; bw < gw / m; bw++) {
          for (let mh = 0; mh < m; mh++) {
            for (let mw = 0; mw < m; mw++) {
              const n = (bh * (gw / m) + bw) * m * m + mh * m + mw;
              const pr = bh * m + mh;
              const pc = bw * m + mw;
              expect([pos[2 * n], pos[2 * n + 1]]).toEqual([pr, pc]);
              for (let c = 0; c < 3; c++) {
                for (let tt = 0; tt < T; tt++) {
                  for (const [py, pxx] of [[0, 0], [1, 3], [P - 1, P - 1]] as const) {
                    const v = out.pixelValues[n * cols + (c * T + tt) * P * P + py * P + pxx];
                    expect(v).toBe(img.data[((pr * P + py) * W + pc * P + pxx) * 3 + c]);
                  }
                }
              }
            }
          }
        }
      }
    }
  });

  it('rejects a non-divisible image with doResize off, and a wild aspect ratio with a one-line error', () => {
    const cfg = { ...defaultQwenImageProcessorConfig(), doResize: false };
    expect(() => qwenPreprocess(coded(30, 28), cfg)).toThrow(/divisible by 28/);
    const wide: RgbImage = { width: 10000, height: 40, data: new Uint8Array(10000 * 40 * 3) };
    expect(() => qwenPreprocess(wide, defaultQwenImageProcessorConfig())).toThrow(/aspect ratio/);
  });

  it('a long thin and a 1x1 image preprocess with sides >= 28', () => {
    const thin = qwenPreprocess(coded(40, 5000), defaultQwenImageProcessorConfig());
    expect(thin.grid).toEqual([1, 2, 358]);
    const dot = qwenPreprocess(coded(1, 1), defaultQwenImageProcessorConfig());
    expect(dot.grid).toEqual([1, 4, 4]);
    expect([dot.resized.height, dot.resized.width]).toEqual([56, 56]);
  });
});

describe('vision rotary table', () => {
  it('rows drive the first headDim/4 entries, columns the next', () => {
    const pos = Int32Array.from([0, 0, 3, 5]);
    const t = visionRotaryTable(pos, 8);
    const inv = [1, 1 / 100]; // 1/10000^(arange(0,4,2)/4)
    const angles = [3 * inv[0]!, 3 * inv[1]!, 5 * inv[0]!, 5 * inv[1]!];
    for (let j = 0; j < 4; j++) {
      expect(t[j * 2]).toBe(1);
      expect(t[j * 2 + 1]).toBe(0);
      expect(t[(4 + j) * 2]).toBe(Math.fround(Math.cos(angles[j]!)));
      expect(t[(4 + j) * 2 + 1]).toBe(Math.fround(Math.sin(angles[j]!)));
    }
    expect(() => visionRotaryTable(pos, 6)).toThrow(/multiple of 4/);
  });

  it('positions repeat over t', () => {
    const one = visionRotaryPositions([1, 4, 6], 2);
    const two = visionRotaryPositions([2, 4, 6], 2);
    expect(Array.from(two)).toEqual([...one, ...one]);
  });
});

describe('windowIndex (Qwen2.5-VL get_window_index)', () => {
  it('grid (1,34,46), window 112: worked example', () => {
    const w = windowIndex([[1, 34, 46]], 2, 112, 14);
    expect(Array.from(w.windowIndex.subarray(0, 16))).toEqual([0, 1, 2, 3, 23, 24, 25, 26, 46, 47, 48, 49, 69, 70, 71, 72]);
    expect(w.windowIndex.length).toBe(391);
    expect(new Set(w.windowIndex).size).toBe(391);
    expect(w.cuWindowSeqlens.length).toBe(31);
    expect(w.cuWindowSeqlens.slice(0, 7)).toEqual([0, 64, 128, 192, 256, 320, 368]);
    expect(w.cuWindowSeqlens.slice(-2)).toEqual([1552, 1564]);
  });

  it('grid (1,32,32): the empty padding windows are dropped (17 entries)', () => {
    const w = windowIndex([[1, 32, 32]], 2, 112, 14);
    expect(w.cuWindowSeqlens.length).toBe(17);
    expect(w.cuWindowSeqlens.every((v, i) => v === i * 64)).toBe(true);
    expect(windowOfPatch([[1, 32, 32]], 2, 112, 14).reduce((a, b) => Math.max(a, b), 0)).toBe(15);
  });

  it('two images, the second with two frames (values from HF get_window_index)', () => {
    const grids: G3[] = [
      [1, 6, 8],
      [2, 4, 6],
    ];
    const w = windowIndex(grids, 2, 56, 14);
    expect(Array.from(w.windowIndex)).toEqual([0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 14, 17, 18, 19, 21, 22, 20, 23]);
    expect(w.cuWindowSeqlens).toEqual([0, 16, 32, 40, 48, 64, 72, 88, 96]);
    // windowOfPatch agrees with the chunks of cuWindowSeqlens after the reorder.
    const wp = windowOfPatch(grids, 2, 56, 14);
    w.windowIndex.forEach((tok, i) => {
      const p = i * 4;
      const chunk = w.cuWindowSeqlens.findIndex((c) => c > p) - 1;
      for (let k = 0; k < 4; k++) expect(wp[tok * 4 + k]).toBe(chunk);
    });
  });

  it('a window smaller than a merged token is a clean error', () => {
    expect(() => windowIndex([[1, 4, 4]], 2, 20, 14)).toThrow(/smaller than one merged token/);
  });
});

describe('ropeIndex (get_rope_index)', () => {
  const VS = 248;
  const VE = 249;
  const I = 251;
  const o = { imageTokenId: I, visionStartTokenId: VS, mergeSize: 2 };

  it('no images: 0..L-1 on all axes, delta 0', () => {
    const r = ropeIndex([5, 6, 7, 8], [], o);
    for (const a of r.positions) expect(Array.from(a)).toEqual([0, 1, 2, 3]);
    expect(r.ropeDeltas).toBe(0);
  });

  it('worked example: grid (1,34,46) gives rope_deltas -368', () => {
    const s = 4;
    const ids = [1, 2, 3, VS, ...new Array<number>(391).fill(I), VE, 9];
    const r = ropeIndex(ids, [[1, 34, 46]], o);
    const [pt, ph, pw] = r.positions;
    for (const k of [0, 1, 22, 23, 390]) {
      expect([pt[s + k], ph[s + k], pw[s + k]]).toEqual([s, s + Math.floor(k / 23), s + (k % 23)]);
    }
    expect([pt[s + 391], ph[s + 391], pw[s + 391]]).toEqual([s + 23, s + 23, s + 23]);
    // one more trailing text token than the spec's example: the delta is unchanged
    expect(r.ropeDeltas).toBe(-368);
  });

  it('two images: the second starts at max + 1 after the text between them', () => {
    const ids = [1, VS, I, I, I, I, VE, 2, 3, VS, I, I, I, I, I, I, VE, 4];
    const r = ropeIndex(ids, [[1, 4, 4], [1, 4, 6]], o);
    expect(Array.from(r.positions[0])).toEqual([0, 1, 2, 2, 2, 2, 4, 5, 6, 7, 8, 8, 8, 8, 8, 8, 11, 12]);
    expect(Array.from(r.positions[1])).toEqual([0, 1, 2, 2, 3, 3, 4, 5, 6, 7, 8, 8, 8, 9, 9, 9, 11, 12]);
    expect(Array.from(r.positions[2])).toEqual([0, 1, 2, 3, 2, 3, 4, 5, 6, 7, 8, 9, 10, 8, 9, 10, 11, 12]);
    expect(r.ropeDeltas).toBe(13 - 18);
  });

  it('grid_t > 1 uses t as Qwen2-VL does', () => {
    const ids = [VS, ...new Array<number>(8).fill(I), VE];
    const r = ropeIndex(ids, [[2, 4, 4]], o);
    expect(Array.from(r.positions[0])).toEqual([0, 1, 1, 1, 1, 2, 2, 2, 2, 3]);
    expect(Array.from(r.positions[1])).toEqual([0, 1, 1, 2, 2, 1, 1, 2, 2, 3]);
    expect(Array.from(r.positions[2])).toEqual([0, 1, 2, 1, 2, 1, 2, 1, 2, 3]);
    expect(r.ropeDeltas).toBe(4 - 10);
  });

  it('mismatched image-token counts are one-line errors', () => {
    const ids = [1, VS, I, I, I, VE, 2];
    expect(() => ropeIndex(ids, [[1, 4, 4]], o)).toThrow(/image 0 has 3 image tokens .* needs 4/);
    expect(() => ropeIndex(ids, [], o)).toThrow(/found 1 images .* 0 image grids/);
    expect(() => ropeIndex([1, I, VS, I, I, I, I], [[1, 4, 4]], o)).toThrow(/1 of the 5 image tokens/);
    expect(() => ropeIndex([1, VS, I, I, I, I], [[1, 4, 5]], o)).toThrow(/not divisible by mergeSize 2/);
  });
});

describe('mropeTable', () => {
  it('equals the 1-D rotary table for text rows', () => {
    const pos = Array.from({ length: 12 }, (_, i) => i * 3);
    const m = mropeTable([pos, pos, pos], 16, 100, [2, 3, 3]);
    const r = rotaryTable(pos, inverseFrequencies(16, 100));
    expect(Array.from(m)).toEqual(Array.from(r));
  });

  it('frequencies take t, h, w by mrope_section', () => {
    const m = mropeTable([[1], [2], [3]], 16, 100, [2, 3, 3]);
    const inv = inverseFrequencies(16, 100);
    const axis = [1, 1, 2, 2, 2, 3, 3, 3];
    for (let j = 0; j < 8; j++) {
      expect(m[j * 2]).toBe(Math.fround(Math.cos(axis[j]! * inv[j]!)));
      expect(m[j * 2 + 1]).toBe(Math.fround(Math.sin(axis[j]! * inv[j]!)));
    }
  });

  it('checks mrope_section against headDim/2', () => {
    expect(() => mropeTable([[0], [0], [0]], 16, 100, [2, 3, 4])).toThrow(/sums to 9, expected headDim\/2 = 8/);
    expect(() => mropeTable([[0], [0], [0, 1]], 16, 100, [2, 3, 3])).toThrow(/differ in length/);
  });
});
