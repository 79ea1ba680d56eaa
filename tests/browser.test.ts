// The attention lab page (web/) in a real headless Chromium on SwiftShader WebGPU (Playwright, Debian's chromium
// binary, no browser download): it loads the shipped organism, answers the example question with the same greedy
// tokens as the Node engine, an ablation changes the answer exactly as in Node, weights come from the browser
// cache on the second visit, device loss and missing WebGPU give messages instead of a frozen page. A screenshot
// of the heatmap lands in test-artifacts/attention-lab.png.

import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LlavaModel } from '../src/models/llava.js';
import { LlavaProcessor } from '../src/models/llava-processor.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { nodeFolder } from '../src/io/checkpoint.js';
import { decodeImage } from '../src/io/image.js';
import { parseInterventions } from '../src/spec/spec.js';
import { generate } from '../src/generate/generate.js';
import { eosTokenIds } from '../src/generate/eos.js';
import { gpuContext } from './helpers/gpu.js';
import { REPO_ROOT } from './helpers/fixtures.js';
import { answerTokens, runsDone, startLab, type Lab } from './helpers/lab-page.js';

const ARTIFACTS = join(REPO_ROOT, 'test-artifacts');
const ORGANISM = join(REPO_ROOT, 'weights/organism');
const QUESTION = readFileSync(join(REPO_ROOT, 'examples/scene-question.txt'), 'utf8').trim();

describe('attention lab in headless Chromium (WebGPU on SwiftShader)', () => {
  let lab: Lab;
  let nodeTokens: number[];
  let ablatedLayer: number;
  let nodeAblatedTokens: number[];
  let nodeTempTokens: number[];
  let tokenizer: Tokenizer;

  beforeAll(async () => {
    lab = await startLab();

    // The Node engine on the same input: the greedy tokens the page must reproduce, plain and with the first
    // whole-layer ablation (from the last layer down) that changes them.
    const ctx = await gpuContext();
    const folder = nodeFolder(ORGANISM);
    const model = await LlavaModel.load(ctx, folder);
    tokenizer = await Tokenizer.fromFolder(folder);
    const processor = new LlavaProcessor(tokenizer, model.cfg, model.imageProcessor);
    const image = decodeImage(new Uint8Array(readFileSync(join(REPO_ROOT, 'examples/scene.png'))), 'scene.png');
    const { ids, pixelValues } = processor.process(processor.formatPrompt(QUESTION, 1), [image]);
    const eos = await eosTokenIds(folder, tokenizer);
    const run = async (spec: unknown) =>
      (await generate(model, { ids, pixelValues, maxNewTokens: 24, tokenizer, eosTokenIds: eos, interventions: parseInterventions(spec, model.dims) })).tokenIds;
    nodeTokens = await run({});
    nodeTempTokens = await run({ image_temperature: { alpha: 0.5, queries: 'all' } });
    for (ablatedLayer = model.dims.text.layers - 1; ablatedLayer >= 0; ablatedLayer--) {
      const heads = Array.from({ length: model.dims.text.heads }, (_, head) => ({ tower: 'text', layer: ablatedLayer, head, scale: 0 }));
      nodeAblatedTokens = await run({ head_scale: heads });
      if (JSON.stringify(nodeAblatedTokens) !== JSON.stringify(nodeTokens)) break;
    }
    if (ablatedLayer < 0) throw new Error('no single-layer ablation changes the organism\'s answer to the example question');
    model.destroy();
  });

  afterAll(async () => {
    await lab?.close();
  });

  it('ships a browser bundle of the library without static Node imports', () => {
    for (const f of ['dist/vlmscope.browser.js', 'web/dist/app.js']) {
      const js = readFileSync(join(REPO_ROOT, f), 'utf8');
      expect(js, f).not.toMatch(/^\s*import[^;]*from\s*["'](node:|fs|path|os|webgpu)["']/m);
      expect(js, f).not.toMatch(/\brequire\(["']node:/);
    }
  });

  it('loads the organism, answers like the Node engine, re-runs an ablation like Node, and draws the heatmap', async () => {
    const page = await lab.browser.newPage({ viewport: { width: 1200, height: 880 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${lab.base}/web/`);
    const tokens = await answerTokens(page);
    expect(tokens).toEqual(nodeTokens);
    expect((await page.textContent('#answer'))!.trim()).toBe(tokenizer.decode(nodeTokens, { skipSpecialTokens: true }).trim());
    expect(await page.textContent('#limits')).toMatch(/max buffer .* max storage binding/);

    // The head grid: one cell per text layer and head, each with its image-attention percentage.
    const cells = await page.$$eval('#head-grid td', (tds) => tds.map((td) => td.textContent));
    expect(cells).toHaveLength(4 * 8);
    expect(cells.every((c) => /^\d+$/.test(c ?? ''))).toBe(true);

    // Ablate a whole layer by clicking its label: the page re-runs and must give Node's ablated tokens.
    const plainRuns = await runsDone(page);
    await page.click(`#head-grid th.layer >> text=L${ablatedLayer}`);
    const ablated = await answerTokens(page, plainRuns);
    expect(ablated).toEqual(nodeAblatedTokens);
    expect(await page.$$eval('#head-grid td.ablated', (tds) => tds.length)).toBe(8);
    const spec = JSON.parse((await page.textContent('#spec'))!);
    expect(spec.head_scale).toHaveLength(8);

    // Back to normal, then a head-by-head heatmap selection; screenshot for people to look at.
    const before = await runsDone(page);
    await page.click(`#head-grid th.layer >> text=L${ablatedLayer}`);
    expect(await answerTokens(page, before)).toEqual(nodeTokens);
    await page.selectOption('#head-select', '1');
    mkdirSync(ARTIFACTS, { recursive: true });
    const shot = join(ARTIFACTS, 'attention-lab.png');
    await page.screenshot({ path: shot, fullPage: true });
    expect(statSync(shot).size).toBeGreaterThan(20_000);
    // The canvas shows the image with a heatmap: many distinct colours, not a blank.
    const colours = await page.$eval('#view', (c) => {
      const d = (c as HTMLCanvasElement).getContext('2d')!.getImageData(0, 0, 384, 384).data;
      const seen = new Set<number>();
      for (let i = 0; i < d.length; i += 4) seen.add((d[i]! << 16) | (d[i + 1]! << 8) | d[i + 2]!);
      return seen.size;
    });
    expect(colours).toBeGreaterThan(50);
    expect(errors).toEqual([]);

    // Second visit: the weights come from the Cache API, and the answer is the same.
    await page.reload();
    expect(await answerTokens(page)).toEqual(nodeTokens);
    expect(Number(await page.getAttribute('#model-info', 'data-cached-files'))).toBeGreaterThan(0);

    // Device loss: a message and a restart button, not a frozen page; restarting answers again.
    await page.evaluate(() => window.vlmscopeLab.loseDevice());
    await page.waitForFunction(() => document.body.dataset.state === 'lost', null, { timeout: 30_000 });
    expect(await page.textContent('#alert-text')).toMatch(/GPU device was lost/);
    const beforeRestart = await runsDone(page);
    await page.click('#restart');
    expect(await answerTokens(page, beforeRestart)).toEqual(nodeTokens);
    await page.close();
  });

  it('loads a picked model folder, an uploaded image and a probe file; the temperature slider runs like Node', async () => {
    const page = await lab.browser.newPage({ viewport: { width: 1200, height: 880 } });
    // No default model: the user picks the folder.
    await page.goto(`${lab.base}/web/?model=../weights/no-such-model/`);
    await page.waitForFunction(() => document.body.dataset.state === 'error', null, { timeout: 60_000 });
    await page.setInputFiles('#model-files', ORGANISM);
    expect(await answerTokens(page)).toEqual(nodeTokens);
    expect(await page.textContent('#model-info')).toMatch(/organism: 4 text layers x 8 heads/);

    // An uploaded image (the same PNG) resets the answer; asking gives the same tokens.
    await page.setInputFiles('#image-file', join(REPO_ROOT, 'examples/scene.png'));
    await page.waitForFunction(() => document.getElementById('answer')!.dataset.tokens === '[]');
    let runs = await runsDone(page);
    await page.click('#ask');
    expect(await answerTokens(page, runs)).toEqual(nodeTokens);

    // Image temperature 0.5 on every query row: the Node engine's tokens under the same spec.
    runs = await runsDone(page);
    await page.$eval('#temperature', (el) => {
      (el as HTMLInputElement).value = '0.5';
      el.dispatchEvent(new Event('input'));
    });
    expect(await answerTokens(page, runs)).toEqual(nodeTempTokens);
    expect(JSON.parse((await page.textContent('#spec'))!)).toEqual({ image_temperature: { alpha: 0.5, queries: 'all' } });

    // A probe result colours the grid by function.
    const probes = { layers: 4, heads: 8, functions: { spatial_perception: { top: [{ layer: 2, head: 4, rank: 0 }, { layer: 3, head: 1, rank: 1 }] }, decision: { top: [{ layer: 3, head: 6, rank: 0 }] } } };
    await page.setInputFiles('#probe-file', { name: 'probes.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(probes)) });
    await page.waitForFunction(() => (document.getElementById('grid-mode') as HTMLSelectElement).value === 'probe');
    const titled = await page.$$eval('#head-grid td', (tds) => tds.filter((td) => /: (spatial_perception|decision)$/.test((td as HTMLElement).title)).map((td) => (td as HTMLElement).dataset.head));
    expect(titled.sort()).toEqual(['2:4', '3:1', '3:6']);
    expect(await page.textContent('#legend')).toMatch(/decision.*spatial_perception/);

    // A random synthetic scene comes with a spatial question and is answered.
    runs = await runsDone(page);
    await page.click('#random-scene');
    await answerTokens(page, runs);
    expect(await page.inputValue('#question')).toMatch(/^Where is the .* in relation to the .*\?/);
    expect((await page.textContent('#answer'))!.trim()).not.toBe('');
    await page.close();
  });

  it('says clearly when WebGPU is missing or a model cannot be loaded', async () => {
    const page = await lab.browser.newPage();
    await page.addInitScript(() => {
      // A browser without WebGPU.
      delete (Navigator.prototype as unknown as { gpu?: unknown }).gpu;
    });
    await page.goto(`${lab.base}/web/`);
    await page.waitForFunction(() => document.body.dataset.state === 'no-webgpu', null, { timeout: 30_000 });
    expect(await page.textContent('#alert-text')).toMatch(/no WebGPU/);
    await page.close();

    const page2 = await lab.browser.newPage();
    await page2.goto(`${lab.base}/web/?model=../weights/no-such-model/`);
    await page2.waitForFunction(() => document.body.dataset.state === 'error', null, { timeout: 60_000 });
    expect(await page2.textContent('#alert-text')).toMatch(/Could not load .*no-such-model.*config\.json/);

    // A model that does not fit the memory the page may use is refused before anything is allocated.
    await page2.goto(`${lab.base}/web/?memory=100000`);
    await page2.waitForFunction(() => document.body.dataset.state === 'error', null, { timeout: 60_000 });
    expect(await page2.textContent('#alert-text')).toMatch(/Could not load .*organism.*needs .* of GPU memory .* but the given memory budget is 97\.7 KiB/);
    await page2.close();
  });
});
