// The attention lab page (web/) on a Qwen2.5-VL folder, in headless Chromium on SwiftShader WebGPU: a tiny
// Qwen2.5-VL built at test time (tests/helpers/tiny-qwen-folder.ts: random weights, byte-level BPE tokenizer, chat
// template) is picked as a model folder (the page's webkitdirectory input; the server is not widened), a question
// about a non-square 112x56 image is answered with the Node engine's greedy tokens, a layer ablation from the head
// grid equals Node under the same spec, the heatmap lies on the model's 2x4 grid of merged patches (the canvas
// pixels are the image's plus overlayHeatmap on that grid), and the random-scene button gives a scene of the size
// the model sees (224 px, 8x8 tokens) answered like Node. A screenshot lands in test-artifacts/attention-lab-qwen.png.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeFolder } from '../src/io/checkpoint.js';
import { decodeImage, encodePng, type RgbImage } from '../src/io/image.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { loadModel } from '../src/models/load.js';
import type { PatternCaptured } from '../src/models/model.js';
import { generate } from '../src/generate/generate.js';
import { eosTokenIds } from '../src/generate/eos.js';
import { imageAttention, meanOf, overlayHeatmap } from '../src/interp/attention-map.js';
import { parseInterventions } from '../src/index.js';
import { syntheticScene } from '../web/view.js';
import { gpuContext } from './helpers/gpu.js';
import { REPO_ROOT } from './helpers/fixtures.js';
import { answerTokens, runsDone, startLab, type Lab } from './helpers/lab-page.js';
import { writeTinyQwenFolder } from './helpers/tiny-qwen-folder.js';

const ARTIFACTS = join(REPO_ROOT, 'test-artifacts');
const work = mkdtempSync(join(tmpdir(), 'vlmscope-lab-qwen-'));
const QUESTION = 'Where is the red circle in relation to the blue square?';
// The page's default: 24 new tokens, eos from the folder plus the processor's stop tokens.
const MAX_NEW = 24;
// The first random scene the page draws (#scene-seed starts at 1) and the side it should have for Qwen.
const SCENE_SEED = 1;
const SCENE_SIDE = 224;

/** A deterministic 112 x 56 (width x height) RGB image: a gradient with a block, so the patches differ. */
function wideImage(): RgbImage {
  const w = 112;
  const h = 56;
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      const block = x > 60 && x < 90 && y > 10 && y < 35;
      data[i] = block ? 220 : (x * 255) / w;
      data[i + 1] = block ? 30 : (y * 255) / h;
      data[i + 2] = (x * y) % 256;
    }
  }
  return { width: w, height: h, data };
}

interface LastView {
  grid: [number, number];
  span: { start: number; length: number };
  input: [number, number];
  canvas: [number, number];
}

/** What the page's last result says about the image view (window.vlmscopeLab.last()). */
const lastView = (page: import('playwright-core').Page): Promise<LastView> =>
  page.evaluate(() => {
    const r = window.vlmscopeLab.last()!;
    const c = document.getElementById('view') as HTMLCanvasElement;
    return { grid: r.grid, span: r.span, input: [r.modelInput.width, r.modelInput.height] as [number, number], canvas: [c.width, c.height] as [number, number] };
  });

describe('attention lab on a Qwen2.5-VL folder (headless Chromium, WebGPU on SwiftShader)', () => {
  let lab: Lab;
  let dir: string;
  let pngPath: string;
  let tokenizer: Tokenizer;
  let nodeTokens: number[];
  let ablatedLayer: number;
  let ablationSpec: Record<string, unknown>;
  let nodeAblatedTokens: number[];
  let nodeGrid: [number, number];
  let scene: { question: string; tokens: number[]; grid: [number, number] };

  beforeAll(async () => {
    dir = (await writeTinyQwenFolder(join(work, 'tiny-qwen25vl'))).dir;
    pngPath = join(work, 'wide.png');
    writeFileSync(pngPath, encodePng(wideImage()));
    lab = await startLab();

    // The Node engine on the same folder, image and question, the way the page runs it (web/engine.ts).
    const ctx = await gpuContext();
    const model = await loadModel(ctx, dir);
    const folder = nodeFolder(dir);
    tokenizer = await Tokenizer.fromFolder(folder);
    const processor = model.createProcessor(tokenizer);
    const eos = [...(await eosTokenIds(folder, tokenizer)), ...processor.stopTokenIds];
    const image = decodeImage(new Uint8Array(readFileSync(pngPath)), 'wide.png');
    nodeGrid = model.imageView(image).grid;
    const answer = async (img: RgbImage, question: string, spec: unknown) => {
      const { ids, pixelValues } = processor.process(processor.formatPrompt(question, 1), [img]);
      const r = await generate(model, { ids, pixelValues, maxNewTokens: MAX_NEW, tokenizer, eosTokenIds: eos, interventions: parseInterventions(spec, model.dims) });
      return r.tokenIds;
    };
    nodeTokens = await answer(image, QUESTION, {});
    expect(nodeTokens.length).toBeGreaterThan(0);
    // The first whole-layer ablation (from the last layer down) that changes the answer.
    for (ablatedLayer = model.dims.text.layers - 1; ablatedLayer >= 0; ablatedLayer--) {
      ablationSpec = { head_scale: Array.from({ length: model.dims.text.heads }, (_, head) => ({ tower: 'text', layer: ablatedLayer, head, scale: 0 })) };
      nodeAblatedTokens = await answer(image, QUESTION, ablationSpec);
      if (JSON.stringify(nodeAblatedTokens) !== JSON.stringify(nodeTokens)) break;
    }
    if (ablatedLayer < 0) throw new Error('no single-layer ablation changes the tiny Qwen2.5-VL\'s answer');
    const s = syntheticScene(SCENE_SEED, SCENE_SIDE);
    scene = { question: s.question, tokens: await answer(s.image, s.question, {}), grid: model.imageView(s.image).grid };
    model.destroy();
  });

  afterAll(async () => {
    await lab?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('answers about a 112x56 image like Node, ablates like Node, draws the heatmap on the 2x4 token grid and names the family', async () => {
    expect(nodeGrid).toEqual([2, 4]); // 112 x 56 px -> 8 x 4 patches of 14 -> 4 x 2 merged tokens (cols x rows)
    const page = await lab.browser.newPage({ viewport: { width: 1200, height: 880 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    // No default model: the folder is picked, as a user would.
    await page.goto(`${lab.base}/web/?model=../weights/no-such-model/`);
    await page.waitForFunction(() => document.body.dataset.state === 'error', null, { timeout: 60_000 });
    await page.setInputFiles('#model-files', dir);
    // The example image and question are answered once the model is in (a 64x64 image: a 2x2 grid for Qwen).
    await answerTokens(page);
    expect(await page.textContent('#model-info')).toMatch(/^tiny-qwen25vl: 2 text layers x 4 heads, vision 2 layers x 4 heads \(Qwen2\.5-VL, qwen2_5_vl\)/);
    expect(await page.getAttribute('#model-info', 'data-family')).toBe('qwen2_5_vl');
    expect((await lastView(page)).grid).toEqual([2, 2]);
    const cells = await page.$$eval('#head-grid td', (tds) => tds.map((td) => td.textContent));
    expect(cells).toHaveLength(2 * 4);
    expect(cells.every((c) => /^\d+$/.test(c ?? ''))).toBe(true);

    // The non-square image and the question: Node's greedy tokens and text.
    await page.setInputFiles('#image-file', pngPath);
    await page.waitForFunction(() => document.getElementById('answer')!.dataset.tokens === '[]');
    await page.fill('#question', QUESTION);
    let runs = await runsDone(page);
    await page.click('#ask');
    expect(await answerTokens(page, runs)).toEqual(nodeTokens);
    expect((await page.textContent('#answer'))!.trim()).toBe(tokenizer.decode(nodeTokens, { skipSpecialTokens: true }).trim());
    expect(await page.textContent('#answer-meta')).toMatch(/\(8 image tokens\)/);
    // The model's view: 112 x 56 px, 2 rows x 4 cols of image tokens, drawn on a 384 x 192 canvas (aspect kept).
    expect(await lastView(page)).toMatchObject({ grid: [2, 4], input: [112, 56], canvas: [384, 192] });
    expect((await lastView(page)).span.length).toBe(2 * 4);

    // The heatmap (mean of the last layer's heads) is overlayHeatmap on the 2x4 grid over the drawn image.
    const pixels = () =>
      page.$eval('#view', (c) => {
        const cv = c as HTMLCanvasElement;
        return Array.from(cv.getContext('2d')!.getImageData(0, 0, cv.width, cv.height).data);
      });
    const withMap = await pixels();
    await page.uncheck('#show-heatmap');
    const plain = await pixels();
    await page.check('#show-heatmap');
    expect(await pixels()).toEqual(withMap);
    const captured = await page.evaluate(() => {
      const r = window.vlmscopeLab.last()!;
      const layer = Number((document.getElementById('layer-select') as HTMLSelectElement).value);
      const p = r.patterns.find((c) => c.layer === layer)!;
      return { layer, span: r.span, p: { ...p, data: Array.from(p.data) } };
    });
    expect(captured.layer).toBe(1);
    const pattern: PatternCaptured = { ...captured.p, data: Float32Array.from(captured.p.data) };
    const values = meanOf(imageAttention(pattern, captured.span));
    const expected = Uint8ClampedArray.from(plain);
    overlayHeatmap(expected, 384, 192, values, [2, 4]);
    expect(withMap).toEqual(Array.from(expected));
    // The same values on a square-ish or transposed grid would draw other pixels: the check tells grids apart.
    const transposed = Uint8ClampedArray.from(plain);
    overlayHeatmap(transposed, 384, 192, values, [4, 2]);
    expect(withMap).not.toEqual(Array.from(transposed));

    // Ablate a whole layer from the head grid: Node's tokens under the same spec.
    runs = await runsDone(page);
    await page.click(`#head-grid th.layer >> text=L${ablatedLayer}`);
    expect(await answerTokens(page, runs)).toEqual(nodeAblatedTokens);
    expect(JSON.parse((await page.textContent('#spec'))!)).toEqual(ablationSpec);
    expect(await page.$$eval('#head-grid td.ablated', (tds) => tds.length)).toBe(4);
    expect((await lastView(page)).grid).toEqual([2, 4]);
    runs = await runsDone(page);
    await page.click(`#head-grid th.layer >> text=L${ablatedLayer}`);
    expect(await answerTokens(page, runs)).toEqual(nodeTokens);

    mkdirSync(ARTIFACTS, { recursive: true });
    const shot = join(ARTIFACTS, 'attention-lab-qwen.png');
    await page.screenshot({ path: shot, fullPage: true });
    expect(statSync(shot).size).toBeGreaterThan(20_000);

    // A random scene at the size Qwen sees a 224-px square (8x8 merged tokens), answered like Node.
    runs = await runsDone(page);
    await page.click('#random-scene');
    expect(await answerTokens(page, runs)).toEqual(scene.tokens);
    expect(await page.inputValue('#question')).toBe(scene.question);
    expect(scene.grid).toEqual([8, 8]);
    expect(await lastView(page)).toMatchObject({ grid: [8, 8], span: { length: 64 }, input: [SCENE_SIDE, SCENE_SIDE], canvas: [384, 384] });
    expect(errors).toEqual([]);
    await page.close();
  });
});
