// Shared setup for the attention lab page tests (tests/browser*.test.ts): the page server and headless Chromium
// on SwiftShader WebGPU, and waiting for a run of the page to finish.

import { existsSync } from 'node:fs';
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

/** Starts the page server (web/, weights/, examples/, dist/ only) and Chromium with WebGPU on SwiftShader. */
export async function startLab(): Promise<Lab> {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: run scripts/setup.sh (apt-get install chromium) or set CHROMIUM_PATH`);
  if (!existsSync(join(REPO_ROOT, 'web/dist/app.js'))) throw new Error('web/dist/app.js is missing: run `npm run build`');
  const { server, url: base } = (await startServer({ port: 0 })) as { server: Server; url: string };
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
