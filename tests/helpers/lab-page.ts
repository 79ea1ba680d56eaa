// Shared setup for the attention lab page tests (tests/browser*.test.ts): the page server and headless Chromium
// on SwiftShader WebGPU, and waiting for a run of the page to finish.

import { existsSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Server } from 'node:http';
import { chromium, type Browser, type Page } from 'playwright-core';
import { REPO_ROOT } from './fixtures.js';
// @ts-expect-error: a plain .mjs script without type declarations
import { startServer } from '../../scripts/serve-web.mjs';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

export interface Lab {
  server: Server;
  /** Base URL of the server: the page is at `${base}/web/`. */
  base: string;
  browser: Browser;
  close(): Promise<void>;
}

/**
 * Starts the page server (web/, weights/, examples/, dist/ only) and Chromium with WebGPU on SwiftShader.
 * `root`: serve another tree than the repository's (e.g. labRoot's, with a model folder built at test time).
 */
export async function startLab(opts: { root?: string } = {}): Promise<Lab> {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: run scripts/setup.sh (apt-get install chromium) or set CHROMIUM_PATH`);
  if (!existsSync(join(REPO_ROOT, 'web/dist/app.js'))) throw new Error('web/dist/app.js is missing: run `npm run build`');
  const { server, url: base } = (await startServer({ port: 0, ...(opts.root ? { root: opts.root } : {}) })) as { server: Server; url: string };
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader', '--no-sandbox', '--disable-background-networking', '--disable-dev-shm-usage'],
  });
  return {
    server,
    base,
    browser,
    async close() {
      await browser.close();
      server.close();
    },
  };
}

/**
 * A server root at `dir` for startLab: the repository's web/, dist/ and examples/ (linked) and a weights/ holding
 * only `models` (name -> folder, linked), so a folder built at test time loads by URL (../weights/<name>/) without
 * writing into the repository.
 */
export function labRoot(dir: string, models: Record<string, string>): string {
  mkdirSync(join(dir, 'weights'), { recursive: true });
  for (const top of ['web', 'dist', 'examples']) symlinkSync(join(REPO_ROOT, top), join(dir, top), 'dir');
  for (const [name, folder] of Object.entries(models)) symlinkSync(folder, join(dir, 'weights', name), 'dir');
  return dir;
}

/** Completed runs so far (the page counts them on #answer). */
export async function runsDone(page: Page): Promise<number> {
  return Number((await page.getAttribute('#answer', 'data-runs')) ?? 0);
}

/** Waits until the page has finished a run after `after` runs, and returns its answer tokens. */
export async function answerTokens(page: Page, after = 0): Promise<number[]> {
  await page.waitForFunction(
    (n) => {
      const s = document.body.dataset.state;
      if (s === 'error' || s === 'no-webgpu' || s === 'lost') return true;
      return s === 'ready' && Number(document.getElementById('answer')!.dataset.runs ?? 0) > n;
    },
    after,
    { timeout: 120_000 },
  );
  const state = await page.evaluate(() => document.body.dataset.state);
  if (state !== 'ready') throw new Error(`page is in state ${state}: ${await page.textContent('#alert-text')}`);
  return JSON.parse((await page.getAttribute('#answer', 'data-tokens'))!);
}

/** The RGBA pixels of a canvas of the page (e.g. '#view'), with its size (read back as base64: fast for large canvases). */
export async function canvasPixels(page: Page, selector: string): Promise<{ width: number; height: number; data: Uint8ClampedArray }> {
  const r = await page.$eval(selector, (c) => {
    const cv = c as HTMLCanvasElement;
    const px = cv.getContext('2d')!.getImageData(0, 0, cv.width, cv.height).data;
    let bin = '';
    for (let i = 0; i < px.length; i += 0x8000) bin += String.fromCharCode(...px.subarray(i, i + 0x8000));
    return { width: cv.width, height: cv.height, base64: btoa(bin) };
  });
  return { width: r.width, height: r.height, data: new Uint8ClampedArray(Buffer.from(r.base64, 'base64')) };
}

/** Bytes that differ between two pixel arrays of one length (0: the same picture). */
export function pixelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`pixelDiff: ${a.length} vs ${b.length} bytes`);
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n;
}
