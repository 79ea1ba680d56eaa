// The attention lab page (web/) on a SmolVLM (Idefics3) folder, in headless Chromium on SwiftShader WebGPU: a tiny
// SmolVLM built at test time (tests/helpers/tiny-smolvlm-folder.ts: random weights, byte-level BPE tokenizer, the
// SmolVLM chat template; 32-px tiles of 2x2 image tokens, images resized to 64 px on the longest edge) is picked as
// a model folder, a question about an 80x60 image that splits into 2x2 crops + the global tile is answered with the
// Node engine's greedy tokens, and the heatmap is tiled: each crop's run of image tokens drawn where the crop was
// cut from the resized image (the main canvas is the image's pixels plus overlayHeatmap of tiledAttention's grid),
// the global tile's run in its own view, both on one colour scale. A wide image (1x2 crops) checks the placement on
// a non-square layout. The same folder served by URL (?model=) answers the example like Node. A screenshot lands in
// test-artifacts/attention-lab-smolvlm.png.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeFolder } from '../src/io/checkpoint.js';
import { decodeImage, encodePng, type RgbImage } from '../src/io/image.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { loadModel } from '../src/models/load.js';
import type { ImageView, PatternCaptured } from '../src/models/model.js';
import { generate } from '../src/generate/generate.js';
import { eosTokenIds } from '../src/generate/eos.js';
import { imageAttention, imageMass, imageSpans, meanOf, overlayHeatmap, tiledAttention, type ImageSpan } from '../src/interp/attention-map.js';
import { gpuContext } from './helpers/gpu.js';
import { REPO_ROOT } from './helpers/fixtures.js';
import { answerTokens, canvasPixels, labRoot, pixelDiff, runsDone, startLab, type Lab } from './helpers/lab-page.js';
import { writeTinySmolVlmFolder } from './helpers/tiny-smolvlm-folder.js';

const ARTIFACTS = join(REPO_ROOT, 'test-artifacts');
const work = mkdtempSync(join(tmpdir(), 'vlmscope-lab-smolvlm-'));
const QUESTION = 'Where is the red circle in relation to the blue square?';
// What the page asks about first (its example image and question, web/app.ts).
const EXAMPLE_QUESTION = readFileSync(join(REPO_ROOT, 'examples/scene-question.txt'), 'utf8').trim();
// The page's default: 24 new tokens, eos from the folder plus the processor's stop tokens.
const MAX_NEW = 24;

/** A deterministic RGB image: a gradient with a red disc top-left and a blue block bottom-right. */
function sceneImage(w: number, h: number): RgbImage {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      const disc = (x - w * 0.25) ** 2 + (y - h * 0.3) ** 2 < (h * 0.18) ** 2;
      const block = x > w * 0.6 && x < w * 0.9 && y > h * 0.55 && y < h * 0.9;
      data[i] = disc ? 230 : block ? 20 : 120 + (x * 100) / w;
      data[i + 1] = disc ? 30 : block ? 40 : 140 + (y * 80) / h;
      data[i + 2] = disc ? 30 : block ? 220 : 90 + ((x + y) * 60) / (w + h);
    }
  }
  return { width: w, height: h, data };
}

interface PageLast {
  layer: number;
  head: string;
  promptIds: number[];
  spans: ImageSpan[];
  grid: [number, number];
  tiles: ImageView['tiles'];
  input: [number, number];
  global: [number, number] | null;
  p: Omit<PatternCaptured, 'data'> & { data: number[] };
}

/** The page's last result (window.vlmscopeLab.last()) and the heatmap's layer / head selection. */
const pageLast = (page: Page): Promise<PageLast> =>
  page.evaluate(() => {
    const r = window.vlmscopeLab.last()!;
    const layer = Number((document.getElementById('layer-select') as HTMLSelectElement).value);
    const head = (document.getElementById('head-select') as HTMLSelectElement).value;
    const p = r.patterns.find((c) => c.layer === layer)!;
    return {
      layer,
      head,
      promptIds: r.promptIds,
      spans: r.spans,
      grid: r.grid,
      tiles: r.tiles,
      input: [r.modelInput.width, r.modelInput.height] as [number, number],
      global: r.globalImage ? ([r.globalImage.width, r.globalImage.height] as [number, number]) : null,
      p: { ...p, data: Array.from(p.data) },
    };
  });

/**
 * Checks both canvases against the page's captured pattern: the main view is its plain pixels plus overlayHeatmap
 * of the crops' attention as tiledAttention places it, the global view its plain pixels plus the global run's
 * heatmap, both at the larger maximum of the two. Returns the page's result.
 */
async function expectTiledHeatmap(page: Page): Promise<PageLast> {
  const withMap = { view: await canvasPixels(page, '#view'), global: await canvasPixels(page, '#global-view') };
  await page.uncheck('#show-heatmap');
  const plain = { view: await canvasPixels(page, '#view'), global: await canvasPixels(page, '#global-view') };
  await page.check('#show-heatmap');
  expect(pixelDiff((await canvasPixels(page, '#view')).data, withMap.view.data)).toBe(0);
  expect(pixelDiff(withMap.view.data, plain.view.data)).toBeGreaterThan(0);
  expect(pixelDiff(withMap.global.data, plain.global.data)).toBeGreaterThan(0);

  const last = await pageLast(page);
  const layout = last.tiles!;
  expect(last.head).toBe('mean');
  const pattern: PatternCaptured = { ...last.p, data: Float32Array.from(last.p.data) };
  const perTile = last.spans.map((s) => meanOf(imageAttention(pattern, s)));
  const t = tiledAttention(perTile, layout);
  expect(t.grid).toEqual(last.grid);
  // Spot check of the placement by direct indexing: the last crop's top-left token sits at the crop's corner.
  const n = layout.tokenSide;
  const lastCrop = layout.rows * layout.cols - 1;
  expect(t.values[(layout.rows - 1) * n * t.grid[1] + (layout.cols - 1) * n]).toBe(perTile[lastCrop]![0]);
  const scale = Math.max(...perTile.flatMap((v) => [...v]));

  const view = Uint8ClampedArray.from(plain.view.data);
  overlayHeatmap(view, plain.view.width, plain.view.height, t.values, t.grid, 0.8, scale);
  expect(pixelDiff(withMap.view.data, view)).toBe(0);
  const global = Uint8ClampedArray.from(plain.global.data);
  overlayHeatmap(global, plain.global.width, plain.global.height, t.global!, [n, n], 0.8, scale);
  expect(pixelDiff(withMap.global.data, global)).toBe(0);
  // The crops' runs concatenated as if they were one image-wide run would draw other pixels.
  const flat = Float32Array.from(perTile.slice(0, lastCrop + 1).flatMap((v) => [...v]));
  const naive = Uint8ClampedArray.from(plain.view.data);
  overlayHeatmap(naive, plain.view.width, plain.view.height, flat, t.grid, 0.8, scale);
  expect(pixelDiff(withMap.view.data, naive)).toBeGreaterThan(0);
  return last;
}

describe('attention lab on a SmolVLM folder (headless Chromium, WebGPU on SwiftShader)', () => {
  let lab: Lab;
  let dir: string;
  let tokenizer: Tokenizer;
  let imageTokenId: number;
  const images = {
    example: { path: join(REPO_ROOT, 'examples/scene.png'), question: EXAMPLE_QUESTION },
    square: { path: join(work, 'scene-80x60.png'), question: QUESTION, image: sceneImage(80, 60) },
    wide: { path: join(work, 'wide-120x40.png'), question: QUESTION, image: sceneImage(120, 40) },
  };
  const node: Record<keyof typeof images, { tokens: number[]; ids: number[]; view: ImageView }> = {} as never;

  beforeAll(async () => {
    dir = (await writeTinySmolVlmFolder(join(work, 'tiny-smolvlm'), { modelType: 'smolvlm' })).dir;
    writeFileSync(images.square.path, encodePng(images.square.image));
    writeFileSync(images.wide.path, encodePng(images.wide.image));
    lab = await startLab({ root: labRoot(join(work, 'root'), { 'tiny-smolvlm': dir }) });

    // The Node engine on the same folder, images and question, the way the page runs it (web/engine.ts).
    const ctx = await gpuContext();
    const model = await loadModel(ctx, dir);
    imageTokenId = model.imageTokenId;
    const folder = nodeFolder(dir);
    tokenizer = await Tokenizer.fromFolder(folder);
    const processor = model.createProcessor(tokenizer);
    const eos = [...(await eosTokenIds(folder, tokenizer)), ...processor.stopTokenIds];
    for (const key of Object.keys(images) as (keyof typeof images)[]) {
      const image = decodeImage(new Uint8Array(readFileSync(images[key].path)), images[key].path);
      const { ids, pixelValues } = processor.process(processor.formatPrompt(images[key].question, 1), [image]);
      const r = await generate(model, { ids, pixelValues, maxNewTokens: MAX_NEW, tokenizer, eosTokenIds: eos });
      node[key] = { tokens: r.tokenIds, ids, view: model.imageView(image) };
    }
    model.destroy();
  });

  afterAll(async () => {
    await lab?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('answers like Node and draws each tile\'s attention where the tile came from, the global tile in its own view', async () => {
    // What Node's model says about the images: 80x60 -> 64x48 -> 64x64, 2x2 crops of 32 px + the global tile;
    // 120x40 -> 64x22 -> 64x32, 1x2 crops + global; 2x2 tokens per tile.
    expect(node.square.view).toMatchObject({ grid: [4, 4], tiles: { rows: 2, cols: 2, tokenSide: 2, global: true } });
    expect([node.square.view.image.width, node.square.view.image.height, node.square.view.globalImage!.width]).toEqual([64, 64, 32]);
    expect(node.wide.view).toMatchObject({ grid: [2, 4], tiles: { rows: 1, cols: 2, tokenSide: 2, global: true } });
    expect(imageSpans(node.square.ids, imageTokenId).map((s) => s.length)).toEqual([4, 4, 4, 4, 4]);
    expect(node.square.tokens.length).toBeGreaterThan(0);

    const page = await lab.browser.newPage({ viewport: { width: 1200, height: 960 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    // No default model: the folder is picked, as a user would.
    await page.goto(`${lab.base}/web/?model=../weights/no-such-model/`);
    await page.waitForFunction(() => document.body.dataset.state === 'error', null, { timeout: 60_000 });
    expect(await page.isHidden('#global-box')).toBe(true);
    await page.setInputFiles('#model-files', dir);
    // The example image (64x64: 2x2 crops + global) and question are answered once the model is in.
    expect(await answerTokens(page)).toEqual(node.example.tokens);
    expect(await page.textContent('#model-info')).toMatch(/^tiny-smolvlm: 2 text layers x 4 heads, vision 2 layers x 4 heads \(SmolVLM, smolvlm\)/);
    expect((await pageLast(page)).tiles).toEqual({ rows: 2, cols: 2, tokenSide: 2, global: true });

    // The 80x60 image and the question: Node's greedy tokens and text.
    await page.setInputFiles('#image-file', images.square.path);
    await page.waitForFunction(() => document.getElementById('answer')!.dataset.tokens === '[]');
    expect(await page.isHidden('#global-box')).toBe(true); // no result for this image yet
    await page.fill('#question', QUESTION);
    let runs = await runsDone(page);
    await page.click('#ask');
    expect(await answerTokens(page, runs)).toEqual(node.square.tokens);
    expect((await page.textContent('#answer'))!.trim()).toBe(tokenizer.decode(node.square.tokens, { skipSpecialTokens: true }).trim());
    expect(await page.textContent('#answer-meta')).toMatch(/\(5 tiles: 2x2 crops \+ global, 20 image tokens\)/);
    const sq = await expectTiledHeatmap(page);
    expect(sq.promptIds).toEqual(node.square.ids);
    expect(sq).toMatchObject({ layer: 1, grid: [4, 4], input: [64, 64], global: [32, 32] });
    expect(sq.spans).toEqual(imageSpans(node.square.ids, imageTokenId));
    // The main view is the resized image on a 384 x 384 canvas with the crops' borders over it; the global view a
    // 128 x 128 canvas with its caption.
    expect(await page.$eval('#view', (c) => [(c as HTMLCanvasElement).width, (c as HTMLCanvasElement).height])).toEqual([384, 384]);
    expect(await page.$eval('#global-view', (c) => [(c as HTMLCanvasElement).width, (c as HTMLCanvasElement).height])).toEqual([128, 128]);
    expect(await page.isVisible('#global-box')).toBe(true);
    expect(await page.textContent('#global-caption')).toMatch(/^Global tile: the whole image at 32x32 px, its own 2x2 image tokens \(the last of 5 runs\)/);
    expect(await page.$$eval('#tile-lines > div', (ds) => ds.length)).toBe(4);
    expect(await page.isVisible('#tile-lines')).toBe(true);
    expect(await page.textContent('#heatmap-caption')).toMatch(/2x2 crops of 2x2 tokens, each where it was cut from/);
    // The head grid's mass counts every tile's image tokens (last layer's cells: its heads' sums over all 5 runs).
    const cells = await page.$$eval('#head-grid td', (tds) => tds.map((td) => td.textContent));
    expect(cells).toHaveLength(2 * 4);
    const sqPattern: PatternCaptured = { ...sq.p, data: Float32Array.from(sq.p.data) };
    const mass = imageMass([sqPattern], sq.spans)[0]!;
    expect(cells.slice(4)).toEqual(mass.map((m) => (m * 100).toFixed(0)));
    expect(mass[0]).toBeGreaterThan(imageMass([sqPattern], sq.spans[0]!)[0]![0]!);

    // One head instead of the mean: the same placement of that head's attention.
    await page.selectOption('#head-select', '2');
    const one = await pageLast(page);
    const pattern: PatternCaptured = { ...one.p, data: Float32Array.from(one.p.data) };
    const head2 = tiledAttention(one.spans.map((s) => imageAttention(pattern, s)[2]!), one.tiles!);
    const scale = Math.max(...head2.values, ...head2.global!);
    await page.uncheck('#show-heatmap');
    const plain = await canvasPixels(page, '#view');
    await page.check('#show-heatmap');
    const expected = Uint8ClampedArray.from(plain.data);
    overlayHeatmap(expected, 384, 384, head2.values, head2.grid, 0.8, scale);
    expect(pixelDiff((await canvasPixels(page, '#view')).data, expected)).toBe(0);
    await page.selectOption('#head-select', 'mean');

    mkdirSync(ARTIFACTS, { recursive: true });
    const shot = join(ARTIFACTS, 'attention-lab-smolvlm.png');
    await page.screenshot({ path: shot, fullPage: true });
    expect(statSync(shot).size).toBeGreaterThan(20_000);

    // A wide image: 1 row x 2 crops over a 64x32 image on a 384 x 192 canvas, answered like Node.
    await page.setInputFiles('#image-file', images.wide.path);
    await page.waitForFunction(() => document.getElementById('answer')!.dataset.tokens === '[]');
    runs = await runsDone(page);
    await page.click('#ask');
    expect(await answerTokens(page, runs)).toEqual(node.wide.tokens);
    const wide = await expectTiledHeatmap(page);
    expect(wide).toMatchObject({ grid: [2, 4], tiles: { rows: 1, cols: 2, tokenSide: 2, global: true }, input: [64, 32], global: [32, 32] });
    expect(await page.$eval('#view', (c) => [(c as HTMLCanvasElement).width, (c as HTMLCanvasElement).height])).toEqual([384, 192]);
    expect(await page.$$eval('#tile-lines > div', (ds) => ds.length)).toBe(2);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('loads the folder by URL and answers the example like Node, with the tiled views', async () => {
    const page = await lab.browser.newPage({ viewport: { width: 1200, height: 960 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${lab.base}/web/?model=../weights/tiny-smolvlm/`);
    expect(await answerTokens(page)).toEqual(node.example.tokens);
    expect(await page.getAttribute('#model-info', 'data-family')).toBe('smolvlm');
    expect(await page.inputValue('#model-url')).toBe(`${lab.base}/weights/tiny-smolvlm/`);
    const last = await expectTiledHeatmap(page);
    expect(last).toMatchObject({ grid: [4, 4], tiles: { rows: 2, cols: 2, tokenSide: 2, global: true }, input: [64, 64], global: [32, 32] });
    expect(last.promptIds).toEqual(node.example.ids);
    expect(errors).toEqual([]);
    await page.close();
  });
});
