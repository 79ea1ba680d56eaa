// `vlmscope attention-map` as a process, and the picture composition it uses (src/interp/attention-png.ts).
// Composition: whole-factor nearest upscaling, grids with separators, a LLaVA CLS value left out, a tiled view's
// crops + global panels. The CLI on the shipped organism (LLaVA, examples/scene.png + its question): the PNG decodes,
// is 256 px (64-px image x 4), and its pixels equal overlayHeatmap of the attention the library captures
// (model.run + imageAttention) for the mean of heads, one head at an integer query, a --heads mean; --grid has one
// panel per head with separators. A Qwen2.5-VL and a SmolVLM folder built at test time give PNGs of the shapes of
// their image views (SmolVLM: crops beside the global tile; a one-tile image as one panel). Bad input fails with one
// line, exit code 2 (usage) or 1 (runtime), and no output file.

import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { decodeImage, encodePng, loadImageFile, type RgbImage } from '../src/io/image.js';
import { nodeFolder } from '../src/io/checkpoint.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { loadModel } from '../src/models/load.js';
import type { ImageView } from '../src/models/model.js';
import type { VlmModel } from '../src/models/vlm.js';
import { parseCapture } from '../src/spec/spec.js';
import { imageAttention, imageSpans, meanOf, overlayHeatmap, tiledAttention } from '../src/interp/attention-map.js';
import {
  MIN_PANEL_SIDE,
  SEPARATOR,
  attentionMapImage,
  attentionPanel,
  blit,
  canvasToRgb,
  composeGrid,
  filledCanvas,
  gridColumns,
  upscaleFactor,
  upscaleNearest,
} from '../src/interp/attention-png.js';
import { gpuContext } from './helpers/gpu.js';
import { REPO_ROOT } from './helpers/fixtures.js';
import { vlmscope as runCli, type CliResult } from './helpers/cli.js';
import { writeTinyQwenFolder } from './helpers/tiny-qwen-folder.js';
import { writeTinySmolVlmFolder } from './helpers/tiny-smolvlm-folder.js';

const work = mkdtempSync(join(tmpdir(), 'vlmscope-attention-map-'));
const organism = join(REPO_ROOT, 'weights/organism');
const scene = join(REPO_ROOT, 'examples/scene.png');
const question = readFileSync(join(REPO_ROOT, 'examples/scene-question.txt'), 'utf8').trim();
const vlmscope = (args: string[]) => runCli(args, 240_000);

/** Test-side nearest upscale + overlayHeatmap: what the lab page draws, independent of attention-png.ts. */
function expectedPanel(img: RgbImage, factor: number, values: ArrayLike<number>, grid: readonly [number, number], scale?: number): RgbImage {
  const w = img.width * factor;
  const h = img.height * factor;
  const rgba = new Uint8ClampedArray(w * h * 4);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const s = (Math.floor(y / factor) * img.width + Math.floor(x / factor)) * 3;
      const d = (y * w + x) * 4;
      rgba.set([img.data[s]!, img.data[s + 1]!, img.data[s + 2]!, 255], d);
    }
  overlayHeatmap(rgba, w, h, values, grid, undefined, scale);
  const data = new Uint8Array(w * h * 3);
  for (let i = 0; i < w * h; i++) data.set(rgba.subarray(i * 4, i * 4 + 3), i * 3);
  return { width: w, height: h, data };
}

/** The w x h region of `img` at (x, y). */
function crop(img: RgbImage, x: number, y: number, w: number, h: number): RgbImage {
  const data = new Uint8Array(w * h * 3);
  for (let r = 0; r < h; r++) data.set(img.data.subarray(((y + r) * img.width + x) * 3, ((y + r) * img.width + x + w) * 3), r * w * 3);
  return { width: w, height: h, data };
}

function expectSame(got: RgbImage, want: RgbImage, what: string) {
  expect([got.width, got.height], what).toEqual([want.width, want.height]);
  let diff = 0;
  for (let i = 0; i < got.data.length; i++) if (got.data[i] !== want.data[i]) diff++;
  expect(diff, `${what}: ${diff} differing channel values`).toBe(0);
}

function expectOneLineFailure(r: CliResult, message: RegExp, out: string, code: number) {
  expect(r.stderr).toMatch(/^vlmscope: /);
  expect(r.stderr).toMatch(message);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  expect(r.code).toBe(code);
  expect(r.stdout).toBe('');
  expect(existsSync(out)).toBe(false);
}

/** A deterministic RGB image of w x h as PNG (a gradient with a block). */
function png(name: string, w: number, h: number): string {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const block = x > w / 3 && x < w / 2 && y > h / 4 && y < h / 2;
      data.set([block ? 220 : (x * 255) / w, block ? 30 : (y * 255) / h, (x * y) % 256], (y * w + x) * 3);
    }
  const p = join(work, name);
  writeFileSync(p, encodePng({ width: w, height: h, data }));
  return p;
}

/** The library path: prompt through the processor, prefill with the layer's pattern at row q; [run][head] attention. */
async function libAttention(model: VlmModel, dir: string, image: string, prompt: string, layer: number, query: number | 'last' = 'last') {
  const tokenizer = await Tokenizer.fromFolder(nodeFolder(dir));
  const processor = model.createProcessor(tokenizer);
  const img = await loadImageFile(image);
  const { ids, pixelValues } = processor.process(processor.formatPrompt(prompt, 1), [img]);
  const q = query === 'last' ? ids.length - 1 : query < 0 ? ids.length + query : query;
  const r = await model.run({ ids, pixelValues, capture: parseCapture({ pattern: [{ tower: 'text', layer, rows: [q] }] }, model.dims) });
  const p = r.pattern[0]!;
  const perRun = imageSpans(ids, model.imageTokenId).map((s) => imageAttention(p, s));
  return { ids, view: model.imageView(img), perRun };
}

describe('attention-png: composing attention maps', () => {
  const img: RgbImage = { width: 3, height: 2, data: Uint8Array.from({ length: 18 }, (_, i) => i * 10) };

  it('upscales by a whole factor to at least MIN_PANEL_SIDE, nearest neighbour', () => {
    expect(upscaleFactor(64, 64)).toBe(4);
    expect(upscaleFactor(100, 30)).toBe(3);
    expect(upscaleFactor(336, 336)).toBe(1);
    expect(upscaleFactor(3, 2, 10)).toBe(4);
    const c = upscaleNearest(img, 2);
    expect([c.width, c.height]).toEqual([6, 4]);
    const rgb = canvasToRgb(c);
    for (let y = 0; y < 4; y++)
      for (let x = 0; x < 6; x++) {
        const s = (Math.floor(y / 2) * 3 + Math.floor(x / 2)) * 3;
        expect(Array.from(rgb.data.subarray((y * 6 + x) * 3, (y * 6 + x) * 3 + 3))).toEqual(Array.from(img.data.subarray(s, s + 3)));
      }
    expect(c.data.filter((_, i) => i % 4 === 3).every((a) => a === 255)).toBe(true);
  });

  it('blits with clipping and composes grids with separators', () => {
    const red = filledCanvas(2, 2, [255, 0, 0]);
    const dst = filledCanvas(3, 3, [0, 0, 0]);
    blit(dst, red, 2, -1);
    expect(Array.from(dst.data.subarray(2 * 4, 2 * 4 + 4))).toEqual([255, 0, 0, 255]);
    expect(Array.from(dst.data.subarray((3 + 2) * 4, (3 + 2) * 4 + 4))).toEqual([0, 0, 0, 255]);
    const tall = filledCanvas(2, 3, [0, 0, 255]);
    const g = composeGrid([red, tall, red], 2, { gap: 1, background: [9, 9, 9] });
    // columns 2 + 1 + 2, rows 3 (tallest of the first row) + 1 + 2
    expect([g.width, g.height]).toEqual([5, 6]);
    const at = (x: number, y: number) => Array.from(g.data.subarray((y * 5 + x) * 4, (y * 5 + x) * 4 + 3));
    expect(at(0, 0)).toEqual([255, 0, 0]);
    expect(at(2, 0)).toEqual([9, 9, 9]); // separator
    expect(at(3, 2)).toEqual([0, 0, 255]);
    expect(at(0, 2)).toEqual([9, 9, 9]); // below the short panel
    expect(at(0, 3)).toEqual([9, 9, 9]); // separator row
    expect(at(1, 5)).toEqual([255, 0, 0]);
    expect(at(4, 5)).toEqual([9, 9, 9]); // empty cell
    expect(gridColumns(1)).toBe(1);
    expect(gridColumns(8)).toBe(3);
    expect(gridColumns(9)).toBe(3);
    expect(gridColumns(32)).toBe(6);
  });

  it('a panel is overlayHeatmap over the upscaled view; a CLS value is left out; several panels make a grid', () => {
    const view: ImageView = { image: img, grid: [1, 3] };
    const v = Float32Array.from([0.1, 0.5, 0.2]);
    const want = expectedPanel(img, upscaleFactor(3, 2), v, [1, 3]);
    expectSame(canvasToRgb(attentionPanel(view, [v])), want, 'panel');
    expectSame(canvasToRgb(attentionPanel(view, [Float32Array.from([9, ...v])])), want, 'panel with CLS');
    const pic = attentionMapImage(view, [[v], [v], [v]]);
    expect([pic.width, pic.height]).toEqual([2 * want.width + SEPARATOR, 2 * want.height + SEPARATOR]);
    expectSame(crop(pic, want.width + SEPARATOR, 0, want.width, want.height), want, 'second panel');
    expect(() => attentionPanel(view, [v, v])).toThrow(/2 runs of image-token attention for an image of 1/);
  });

  it('a tiled view: the crops over the stage-2 image, the global tile beside it on one scale', () => {
    const stage2: RgbImage = { width: 8, height: 4, data: Uint8Array.from({ length: 96 }, (_, i) => (i * 7) % 256) };
    const globalImage: RgbImage = { width: 2, height: 2, data: Uint8Array.from({ length: 12 }, (_, i) => i * 20) };
    const view: ImageView = { image: stage2, grid: [2, 4], tiles: { rows: 1, cols: 2, tokenSide: 2, global: true }, globalImage };
    const runs = [Float32Array.from([0.1, 0.2, 0.3, 0.4]), Float32Array.from([0, 0.05, 0.1, 0]), Float32Array.from([0.8, 0, 0, 0.2])];
    const t = tiledAttention(runs, view.tiles!);
    const scale = Math.fround(0.8); // the largest value of either view
    const main = expectedPanel(stage2, 32, t.values, [2, 4], scale);
    const global = expectedPanel(globalImage, 64, t.global!, [2, 2], scale);
    const pic = canvasToRgb(attentionPanel(view, runs));
    expect([pic.width, pic.height]).toEqual([256 + SEPARATOR + 128, 128]);
    expectSame(crop(pic, 0, 0, 256, 128), main, 'crops');
    expectSame(crop(pic, 256 + SEPARATOR, 0, 128, 128), global, 'global tile');
    expect(crop(pic, 256, 0, SEPARATOR, 128).data.every((v) => v === 255)).toBe(true); // the white gap of a pair
    expect(MIN_PANEL_SIDE).toBe(256);
  });
});

describe('vlmscope attention-map on the shipped organism', () => {
  let model: VlmModel;
  const LAYER = 3;

  beforeAll(async () => {
    model = await loadModel(await gpuContext(), organism);
  });

  it('documents itself', () => {
    const top = vlmscope(['--help']);
    expect(top.stdout).toMatch(/attention-map/);
    const r = vlmscope(['attention-map', '--help']);
    expect(r.code).toBe(0);
    for (const flag of ['--model', '--image', '--prompt', '--layer', '--head', '--heads', '--query', '--grid', '--out']) expect(r.stdout).toContain(flag);
    expect(r.stdout).toMatch(/Examples:[\s\S]*vlmscope attention-map/);
  });

  it('draws the mean of the heads the library captures over the model view, 4x upscaled', async () => {
    const out = join(work, 'mean.png');
    const r = vlmscope(['attention-map', '--model', organism, '--image', scene, '--prompt', question, '--layer', String(LAYER), '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/mean\.png: 256x256 px, layer 3, the mean of all heads, query position \d+/);
    const pic = decodeImage(readFileSync(out), out);
    const lib = await libAttention(model, organism, scene, question, LAYER);
    expect(lib.perRun).toHaveLength(1);
    expect(lib.view.grid).toEqual([8, 8]);
    expectSame(pic, expectedPanel(lib.view.image, 4, meanOf(lib.perRun[0]!), [8, 8]), 'mean of heads');
  });

  it('--head at an integer query, and --heads as the mean of those heads', async () => {
    const lib = await libAttention(model, organism, scene, question, 1, -4);
    const q = lib.ids.length - 4;
    const one = join(work, 'head.png');
    const r1 = vlmscope(['attention-map', '--model', organism, '--image', scene, '--prompt', question, '--layer', '1', '--head', '5', '--query', String(q), '--out', one]);
    expect(r1.code, r1.stderr).toBe(0);
    expect(r1.stdout).toMatch(new RegExp(`layer 1, head 5, query position ${q} of ${lib.ids.length}`));
    expectSame(decodeImage(readFileSync(one), one), expectedPanel(lib.view.image, 4, lib.perRun[0]![5]!, [8, 8]), 'head 5');

    const two = join(work, 'heads.png');
    const r2 = vlmscope(['attention-map', '--model', organism, '--image', scene, '--prompt', question, '--layer', '1', '--heads', '0,3', '--query', '-4', '--out', two]);
    expect(r2.code, r2.stderr).toBe(0);
    expect(r2.stdout).toMatch(/the mean of heads 0,3, query position/);
    expectSame(decodeImage(readFileSync(two), two), expectedPanel(lib.view.image, 4, meanOf([lib.perRun[0]![0]!, lib.perRun[0]![3]!]), [8, 8]), 'heads 0,3');
  });

  it('--grid: one panel per head, row-major, separated', async () => {
    const out = join(work, 'grid.png');
    const r = vlmscope(['attention-map', '--model', organism, '--image', scene, '--prompt', question, '--layer', String(LAYER), '--grid', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    const pic = decodeImage(readFileSync(out), out);
    const heads = model.dims.text.heads;
    expect(heads).toBe(8);
    const cols = 3; // ceil(sqrt(8)): 3 x 3 cells, the last empty
    expect([pic.width, pic.height]).toEqual([3 * 256 + 2 * SEPARATOR, 3 * 256 + 2 * SEPARATOR]);
    const lib = await libAttention(model, organism, scene, question, LAYER);
    for (let h = 0; h < heads; h++) {
      const x = (h % cols) * (256 + SEPARATOR);
      const y = Math.floor(h / cols) * (256 + SEPARATOR);
      expectSame(crop(pic, x, y, 256, 256), expectedPanel(lib.view.image, 4, lib.perRun[0]![h]!, [8, 8]), `head ${h}`);
    }
    const sep = crop(pic, 256, 0, SEPARATOR, pic.height);
    expect(sep.data.every((v) => v === 40)).toBe(true);
    expect(crop(pic, 2 * (256 + SEPARATOR), 2 * (256 + SEPARATOR), 256, 256).data.every((v) => v === 40)).toBe(true); // the empty ninth cell
    const masses = /attention on the image: ([\d. ]+)$/.exec(r.stdout.trim())![1]!.split(' ').map(Number);
    expect(masses).toHaveLength(heads);
    masses.forEach((m, h) => expect(m).toBeCloseTo(lib.perRun[0]![h]!.reduce((a, b) => a + b, 0), 3));
  });

  describe('bad input: one line, no output file', () => {
    const run = (extra: string[], out = join(work, 'bad.png'), image = scene) =>
      vlmscope(['attention-map', '--model', organism, '--image', image, '--prompt', question, '--out', out, ...extra]);
    const bad = join(work, 'bad.png');

    it('a layer out of range names the model layer count', () => {
      expectOneLineFailure(run(['--layer', '4']), /--layer 4 is out of range: the model has 4 text layers \(0\.\.3\)/, bad, 2);
    });
    it('a head out of range names the model head count', () => {
      expectOneLineFailure(run(['--layer', '0', '--head', '8']), /--head 8 is out of range: the model has 8 heads per text layer \(0\.\.7\)/, bad, 2);
      expectOneLineFailure(run(['--layer', '0', '--heads', '1,9']), /--heads 9 is out of range: the model has 8 heads per text layer \(0\.\.7\)/, bad, 2);
      expectOneLineFailure(run(['--layer', '0', '--heads', '1,x']), /--heads <list>' argument '1,x' is invalid/, bad, 2);
    });
    it('a query out of range names the prompt length', () => {
      expectOneLineFailure(run(['--layer', '0', '--query', '5000']), /--query 5000 is out of range: the prompt has \d+ tokens/, bad, 2);
      expectOneLineFailure(run(['--layer', '0', '--query', '-5000']), /--query -5000 is out of range/, bad, 2);
      expectOneLineFailure(run(['--layer', '0', '--query', 'first']), /--query <pos>' argument 'first' is invalid/, bad, 2);
    });
    it('an undecodable image', () => {
      const junk = join(work, 'junk.png');
      writeFileSync(junk, 'not an image');
      expectOneLineFailure(run(['--layer', '0'], bad, junk), /cannot decode image .*junk\.png: not a PNG or JPEG/, bad, 1);
      expectOneLineFailure(run(['--layer', '0'], bad, join(work, 'missing.png')), /cannot read image .*missing\.png: file not found/, bad, 1);
    });
    it('a missing --out folder, a non-PNG --out, conflicting head options', () => {
      const deep = join(work, 'no-such-dir', 'map.png');
      expectOneLineFailure(run(['--layer', '0'], deep), /--out .*map\.png: folder .*no-such-dir does not exist/, deep, 2);
      const jpg = join(work, 'map.jpg');
      expectOneLineFailure(run(['--layer', '0'], jpg), /use a \.png file name/, jpg, 2);
      expectOneLineFailure(run(['--layer', '0', '--head', '1', '--heads', '2']), /give --head or --heads, not both/, bad, 2);
      expectOneLineFailure(run(['--layer', '0', '--head', '1', '--grid']), /--grid draws one panel per head/, bad, 2);
      expectOneLineFailure(run([]), /required option '--layer <l>' not specified/, bad, 2);
    });
  });
});

describe('vlmscope attention-map on Qwen2.5-VL and SmolVLM folders', () => {
  const prompt = 'Where is the red block?';

  it('Qwen: a non-square token grid drawn over the resized image', async () => {
    const { dir } = await writeTinyQwenFolder(join(work, 'qwen'));
    const image = png('qwen.png', 120, 70);
    const model = await loadModel(await gpuContext(), dir);
    const lib = await libAttention(model, dir, image, prompt, 1);
    const { image: seen, grid } = lib.view;
    expect(grid[0]).not.toBe(grid[1]);
    const f = upscaleFactor(seen.width, seen.height);
    const out = join(work, 'qwen-map.png');
    const r = vlmscope(['attention-map', '--model', dir, '--image', image, '--prompt', prompt, '--layer', '1', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    const pic = decodeImage(readFileSync(out), out);
    expect(Math.max(pic.width, pic.height)).toBeGreaterThanOrEqual(MIN_PANEL_SIDE);
    expectSame(pic, expectedPanel(seen, f, meanOf(lib.perRun[0]!), grid), 'qwen mean of heads');

    const gridOut = join(work, 'qwen-grid.png');
    const g = vlmscope(['attention-map', '--model', dir, '--image', image, '--prompt', prompt, '--layer', '0', '--grid', '--out', gridOut]);
    expect(g.code, g.stderr).toBe(0);
    const gp = decodeImage(readFileSync(gridOut), gridOut);
    // 4 heads: 2 x 2 panels
    expect([gp.width, gp.height]).toEqual([2 * seen.width * f + SEPARATOR, 2 * seen.height * f + SEPARATOR]);
    expectOneLineFailure(
      vlmscope(['attention-map', '--model', dir, '--image', image, '--prompt', prompt, '--layer', '0', '--head', '4', '--out', join(work, 'q-bad.png')]),
      /--head 4 is out of range: the model has 4 heads per text layer \(0\.\.3\)/,
      join(work, 'q-bad.png'),
      2,
    );
  });

  it('SmolVLM: crops over the stage-2 image beside the global tile; a one-tile image as one panel', async () => {
    const { dir } = await writeTinySmolVlmFolder(join(work, 'smolvlm'));
    const model = await loadModel(await gpuContext(), dir);

    const big = png('smol-big.png', 90, 60);
    const lib = await libAttention(model, dir, big, prompt, 1);
    const { image: stage2, tiles, globalImage } = lib.view;
    expect(tiles?.global).toBe(true);
    expect(tiles!.rows * tiles!.cols).toBeGreaterThan(1);
    expect(lib.perRun).toHaveLength(tiles!.rows * tiles!.cols + 1);
    const f = upscaleFactor(stage2.width, stage2.height);
    const mainW = stage2.width * f;
    const mainH = stage2.height * f;
    const gf = Math.max(1, Math.floor(mainH / globalImage!.height));
    const out = join(work, 'smol-map.png');
    const r = vlmscope(['attention-map', '--model', dir, '--image', big, '--prompt', prompt, '--layer', '1', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/\+ the global tile/);
    const pic = decodeImage(readFileSync(out), out);
    expect([pic.width, pic.height]).toEqual([mainW + SEPARATOR + globalImage!.width * gf, Math.max(mainH, globalImage!.height * gf)]);
    const t = tiledAttention(lib.perRun.map((heads) => meanOf(heads)), tiles!);
    const scale = Math.max(...t.values, ...t.global!);
    expectSame(crop(pic, 0, 0, mainW, mainH), expectedPanel(stage2, f, t.values, t.grid, scale), 'crops');
    expectSame(crop(pic, mainW + SEPARATOR, 0, globalImage!.width * gf, globalImage!.height * gf), expectedPanel(globalImage!, gf, t.global!, [tiles!.tokenSide, tiles!.tokenSide], scale), 'global');

    const gridOut = join(work, 'smol-grid.png');
    const g = vlmscope(['attention-map', '--model', dir, '--image', big, '--prompt', prompt, '--layer', '0', '--heads', '1,2,3', '--grid', '--out', gridOut]);
    expect(g.code, g.stderr).toBe(0);
    const gp = decodeImage(readFileSync(gridOut), gridOut);
    // 3 panels of [crops | global]: 2 columns, 2 rows
    expect([gp.width, gp.height]).toEqual([2 * pic.width + SEPARATOR, 2 * pic.height + SEPARATOR]);

    // size.longest_edge 32 = one tile: every image is resized to a single tile, one run, no global tile.
    const { dir: oneDir } = await writeTinySmolVlmFolder(join(work, 'smolvlm-one-tile'), { longestEdge: 32 });
    const oneModel = await loadModel(await gpuContext(), oneDir);
    const small = png('smol-small.png', 40, 30);
    const one = await libAttention(oneModel, oneDir, small, prompt, 0);
    expect(one.view.tiles).toEqual({ rows: 1, cols: 1, tokenSide: 2, global: false });
    const oneOut = join(work, 'smol-one.png');
    const r1 = vlmscope(['attention-map', '--model', oneDir, '--image', small, '--prompt', prompt, '--layer', '0', '--head', '2', '--out', oneOut]);
    expect(r1.code, r1.stderr).toBe(0);
    const p1 = decodeImage(readFileSync(oneOut), oneOut);
    const f1 = upscaleFactor(one.view.image.width, one.view.image.height);
    expectSame(p1, expectedPanel(one.view.image, f1, one.perRun[0]![2]!, [2, 2]), 'one tile');
  });
});
