// Attention maps from captured patterns (src/interp/attention-map.ts) and the lab page's head-grid logic
// (web/head-grid.ts), on random captures checked against direct indexing.

import { describe, expect, it } from 'vitest';
import { gridSide, imageAttention, imageMass, imageSpans, meanOf, overlayHeatmap, tiledAttention } from '../src/interp/attention-map.js';
import type { PatternCaptured } from '../src/models/llava.js';
import { nextScale, parseProbeFile } from '../web/head-grid.js';
import { sceneSide, spanHeatmaps, tiledHeatmaps, viewSize } from '../web/view.js';
import type { RgbImage } from '../src/io/image.js';
import { mulberry32 } from '../src/eval/synthetic.js';

function randomPattern(layer: number, heads: number, rows: number[], keys: number, seed: number): PatternCaptured {
  const r = mulberry32(seed);
  const data = new Float32Array(heads * rows.length * keys);
  for (let i = 0; i < data.length; i++) data[i] = r() + 0.01;
  return { tower: 'text', layer, heads: Array.from({ length: heads }, (_, h) => h), rows, shape: [heads, rows.length, keys], data };
}

describe('attention maps', () => {
  it('finds every run of image tokens', () => {
    expect(imageSpans([1, 9, 9, 9, 5, 9, 9, 2], 9)).toEqual([
      { start: 1, length: 3 },
      { start: 5, length: 2 },
    ]);
    expect(imageSpans([1, 2, 3], 9)).toEqual([]);
    expect(imageSpans([9], 9)).toEqual([{ start: 0, length: 1 }]);
  });

  it('takes the image columns of a captured row per head, and their sums as mass', () => {
    const keys = 23;
    const span = { start: 3, length: 9 };
    const p = randomPattern(2, 5, [20, 22], keys, 7);
    const att = imageAttention(p, span);
    expect(att).toHaveLength(5);
    for (let h = 0; h < 5; h++) {
      for (let i = 0; i < span.length; i++) expect(att[h]![i]).toBe(p.data[(h * 2 + 1) * keys + span.start + i]);
    }
    const first = imageAttention(p, span, 0);
    expect(first[4]![8]).toBe(p.data[(4 * 2 + 0) * keys + span.start + 8]);
    const mass = imageMass([p, randomPattern(3, 5, [22], keys, 8)], span);
    expect(mass).toHaveLength(2);
    let want = 0;
    for (let i = 0; i < span.length; i++) want += p.data[(3 * 2 + 1) * keys + span.start + i]!;
    expect(mass[0]![3]).toBeCloseTo(want, 5);
    expect(() => imageAttention(p, { start: 20, length: 9 })).toThrow(/outside the 23 keys/);
    expect(() => imageAttention(p, span, 2)).toThrow(/not among the 2 captured rows/);
  });

  it('sums the mass over every run of a tiled image', () => {
    const keys = 30;
    const spans = [
      { start: 2, length: 4 },
      { start: 8, length: 4 },
      { start: 20, length: 4 },
    ];
    const p = randomPattern(1, 3, [29], keys, 9);
    const mass = imageMass([p], spans);
    for (let h = 0; h < 3; h++) {
      let want = 0;
      for (const s of spans) for (let i = 0; i < s.length; i++) want += p.data[h * keys + s.start + i]!;
      expect(mass[0]![h]).toBeCloseTo(want, 5);
    }
    // One span alone or as a list of one: the same.
    expect(imageMass([p], spans[1]!)).toEqual(imageMass([p], [spans[1]!]));
  });

  it('places each crop\'s tokens where the crop came from and keeps the global tile apart', () => {
    // 2 rows x 3 cols of crops of 2x2 tokens, then a global tile: token (y, x) of crop k holds 100 k + 10 y + x.
    const n = 2;
    const tiles = Array.from({ length: 7 }, (_, k) => Float32Array.from({ length: n * n }, (_, i) => 100 * k + 10 * Math.floor(i / n) + (i % n)));
    const t = tiledAttention(tiles, { rows: 2, cols: 3, tokenSide: n, global: true });
    expect(t.grid).toEqual([4, 6]);
    // Row-major over the 4 x 6 image grid: crop (r, c) = tile r * 3 + c covers rows 2r..2r+1, cols 2c..2c+1.
    expect([...t.values]).toEqual([
      [0, 1, 100, 101, 200, 201],
      [10, 11, 110, 111, 210, 211],
      [300, 301, 400, 401, 500, 501],
      [310, 311, 410, 411, 510, 511],
    ].flat());
    expect([...t.global!]).toEqual([600, 601, 610, 611]);
    // A single tile (an image that fits one tile): its run is the whole grid, no global view.
    const one = tiledAttention([tiles[3]!], { rows: 1, cols: 1, tokenSide: n, global: false });
    expect(one).toEqual({ grid: [2, 2], values: tiles[3], global: null });
    // A wide 1 x 2 split: the crops side by side.
    const wide = tiledAttention([tiles[0]!, tiles[1]!, tiles[2]!], { rows: 1, cols: 2, tokenSide: n, global: true });
    expect([...wide.values]).toEqual([0, 1, 100, 101, 10, 11, 110, 111]);
    expect(() => tiledAttention(tiles.slice(0, 6), { rows: 2, cols: 3, tokenSide: n, global: true })).toThrow(/6 runs of image tokens for 2 x 3 tiles and a global tile \(7 runs\)/);
    expect(() => tiledAttention([tiles[0]!, new Float32Array(5)], { rows: 1, cols: 1, tokenSide: n, global: true })).toThrow(/run 1 has 5 image tokens, not 2 x 2/);
    expect(() => tiledAttention([], { rows: 0, cols: 0, tokenSide: n, global: false })).toThrow(/invalid tile layout/);
  });

  it('takes the tiles\' heatmaps from the captured row and draws crops and global tile on one scale', () => {
    // A prompt with 2 x 2 crops + global of 2x2 tokens each, separated by other tokens.
    const ids = [1, 5, 9, 9, 9, 9, 5, 9, 9, 9, 9, 7, 5, 9, 9, 9, 9, 5, 9, 9, 9, 9, 7, 7, 6, 9, 9, 9, 9, 5, 2];
    const spans = imageSpans(ids, 9);
    expect(spans.map((s) => s.length)).toEqual([4, 4, 4, 4, 4]);
    const p = randomPattern(0, 3, [ids.length - 1], ids.length, 4);
    const layout = { rows: 2, cols: 2, tokenSide: 2, global: true };
    const head1 = spanHeatmaps([p], spans, 0, 1);
    expect(head1[4]![3]).toBe(p.data[1 * ids.length + spans[4]!.start + 3]);
    const mean = spanHeatmaps([p], spans, 0, null);
    const t = tiledHeatmaps([p], spans, layout, 0, null);
    expect(t).toMatchObject(tiledAttention(mean, layout));
    expect(t.scale).toBe(Math.max(...mean.flatMap((v) => [...v])));
    // Crop (1, 0)'s token (0, 1) is the image grid's (2, 1).
    expect(t.values[2 * 4 + 1]).toBe(mean[2]![1]);
    expect(() => spanHeatmaps([p], spans, 3, null)).toThrow(/no attention captured for layer 3/);
  });

  it('averages heads and checks the grid is square', () => {
    const m = meanOf([new Float32Array([1, 2]), new Float32Array([3, 6])]);
    expect([...m]).toEqual([2, 4]);
    expect(gridSide(576)).toBe(24);
    expect(() => gridSide(577)).toThrow(/square patch grid/);
  });

  it('overlays the hottest patch fully coloured and leaves zero-attention patches unchanged', () => {
    const w = 6;
    const px = new Uint8ClampedArray(w * w * 4).fill(100);
    overlayHeatmap(px, w, w, [0, 0, 0, 1], 2);
    expect([...px.slice(0, 3)]).toEqual([100, 100, 100]); // top-left patch: value 0
    const br = ((w - 1) * w + (w - 1)) * 4; // bottom-right patch: the maximum -> viridis yellow blended at 0.8
    expect(px[br]).toBeGreaterThan(200);
    expect(px[br + 2]).toBeLessThan(100);
  });

  it('overlays a non-square rows x cols grid (Qwen: merged 2x2 patches) row-major, each token on its own cell', () => {
    // 2 rows x 4 cols of tokens over a 12 x 6 image: each token covers 3 x 3 pixels.
    const w = 12;
    const h = 6;
    const hot = { row: 1, col: 2 };
    const values = new Float32Array(8);
    values[hot.row * 4 + hot.col] = 1;
    const px = new Uint8ClampedArray(w * h * 4).fill(100);
    overlayHeatmap(px, w, h, values, [2, 4]);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = (y * w + x) * 4;
        const inHot = Math.floor(y / 3) === hot.row && Math.floor(x / 3) === hot.col;
        if (inHot) expect(px[i], `(${x}, ${y})`).toBeGreaterThan(200);
        else expect([...px.slice(i, i + 3)], `(${x}, ${y})`).toEqual([100, 100, 100]);
      }
    }
    // The same 8 values as 4 rows x 2 cols put the hot token (index 6) at row 3, col 0: another region.
    const tall = new Uint8ClampedArray(w * h * 4).fill(100);
    overlayHeatmap(tall, w, h, values, [4, 2]);
    const at = (x: number, y: number) => tall[(y * w + x) * 4]!;
    expect(at(0, 5)).toBeGreaterThan(200);
    expect(at(7, 4)).toBe(100);
    // A square number of values is not taken for a square grid when the grid says otherwise.
    expect(() => overlayHeatmap(px, w, h, new Float32Array(8), [3, 3])).toThrow(/8 values for a 3x3 grid/);
    expect(() => overlayHeatmap(px, w, h, new Float32Array(9), [2, 4])).toThrow(/9 values for a 2x4 grid/);
  });

  it('draws on a given scale: a shared maximum colours only the values that reach it fully', () => {
    const w = 4;
    const own = new Uint8ClampedArray(w * w * 4).fill(100);
    overlayHeatmap(own, w, w, [0, 0, 0, 0.5], 2);
    const shared = new Uint8ClampedArray(w * w * 4).fill(100);
    overlayHeatmap(shared, w, w, [0, 0, 0, 0.5], 2, 0.8, 1);
    const br = ((w - 1) * w + (w - 1)) * 4;
    expect(own[br]).toBeGreaterThan(200); // 0.5 is its own maximum: yellow
    expect(shared[br]).toBeLessThan(own[br]!); // half the shared scale: a cooler colour at lower opacity
    // The default scale is the maximum: passing it changes nothing; values above a scale are clamped.
    const same = new Uint8ClampedArray(w * w * 4).fill(100);
    overlayHeatmap(same, w, w, [0, 0, 0, 0.5], 2, 0.8, 0.5);
    expect(same).toEqual(own);
    const clamped = new Uint8ClampedArray(w * w * 4).fill(100);
    overlayHeatmap(clamped, w, w, [0, 0, 0, 2], 2, 0.8, 0.5);
    expect(clamped).toEqual(own);
  });

  it('overlays a grid that does not divide the image evenly without leaving pixels out', () => {
    // 3 x 5 tokens over 7 x 11 pixels, every token hot with a distinct value: every pixel is coloured by the token
    // floor(y * 3 / 11), floor(x * 5 / 7).
    const w = 7;
    const h = 11;
    const values = Float32Array.from({ length: 15 }, (_, i) => 1 + i);
    const px = new Uint8ClampedArray(w * h * 4).fill(0);
    overlayHeatmap(px, w, h, values, [3, 5], 1);
    const colourOf = new Map<number, string>();
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const token = Math.floor((y * 3) / h) * 5 + Math.floor((x * 5) / w);
        const c = [...px.slice((y * w + x) * 4, (y * w + x) * 4 + 3)].join(',');
        if (!colourOf.has(token)) colourOf.set(token, c);
        expect(c, `(${x}, ${y})`).toBe(colourOf.get(token));
      }
    }
    expect(colourOf.size).toBe(15);
    expect(new Set(colourOf.values()).size).toBe(15);
  });
});

describe('lab image view', () => {
  it('keeps the image aspect in the view box and picks a random-scene side from what the model sees', () => {
    expect(viewSize(64, 64)).toEqual({ width: 384, height: 384 });
    expect(viewSize(112, 56)).toEqual({ width: 384, height: 192 });
    expect(viewSize(56, 112)).toEqual({ width: 192, height: 384 });
    expect(viewSize(1000, 1)).toEqual({ width: 384, height: 1 });
    const seen = (w: number, h: number) => ({ imageView: (): { image: RgbImage; grid: [number, number] } => ({ image: { width: w, height: h, data: new Uint8Array(w * h * 3) }, grid: [h / 28, w / 28] }) });
    expect(sceneSide(null)).toBe(64);
    expect(sceneSide(seen(64, 64))).toBe(64); // the organism's crop
    expect(sceneSide(seen(224, 224))).toBe(224); // Qwen: 8x8 merged tokens
    expect(sceneSide(seen(28, 28))).toBe(32); // generateScene's minimum
  });
});

describe('lab head grid', () => {
  it('cycles a head normal -> ablated -> gain -> normal', () => {
    expect(nextScale(undefined)).toBe(0);
    expect(nextScale(0)).toBe(2);
    expect(nextScale(2)).toBe(1);
    expect(nextScale(1)).toBe(0);
  });

  it('colours heads by the function whose top set ranks them best, and names bad probe files', () => {
    const json = {
      layers: 2,
      heads: 3,
      functions: {
        spatial_perception: { top: [{ layer: 1, head: 2, rank: 0 }, { layer: 0, head: 0, rank: 1 }] },
        decision: { top: [{ layer: 0, head: 0, rank: 0 }] },
      },
    };
    const p = parseProbeFile(JSON.stringify(json), 'probes.json', 2, 3);
    expect(p.functions).toEqual(['decision', 'spatial_perception']);
    expect(p.byHead.get('1:2')).toBe('spatial_perception');
    expect(p.byHead.get('0:0')).toBe('decision');
    expect(p.byHead.size).toBe(2);
    expect(() => parseProbeFile('{', 'p.json', 2, 3)).toThrow(/p\.json is not valid JSON/);
    expect(() => parseProbeFile(JSON.stringify(json), 'p.json', 4, 8)).toThrow(/p\.json is for 2 layers x 3 heads, but the model has 4 x 8/);
    const bad = { ...json, functions: { x: { top: [{ layer: 1, head: 7 }] } } };
    expect(() => parseProbeFile(JSON.stringify(bad), 'p.json', 2, 3)).toThrow(/functions\.x\.top\[0\] names head 1\.7/);
    expect(() => parseProbeFile('{"layers":2}', 'p.json', 2, 3)).toThrow(/no "functions"/);
  });
});
