// Loading streams tensors to the GPU one chunk at a time: the JS memory peak while loading stays near the
// largest tensor, not the model. Measured in a child process with --expose-gc for a clean baseline.

import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { REPO_ROOT } from './helpers/fixtures.js';

const script = `
const { writeRandomLlava, LlavaModel, GpuContext, acquireGpu, Checkpoint, nodeFolder } = await import(${JSON.stringify(join(REPO_ROOT, 'dist/index.js'))});
const dir = process.argv[1];
await writeRandomLlava(dir, {
  dtype: 'F32',
  vision: { hidden: 64, intermediate: 128, layers: 2, heads: 2, imageSize: 28, patchSize: 14 },
  text: { hidden: 256, intermediate: 1024, layers: 12, heads: 4, vocab: 512 },
});
const ck = await Checkpoint.open(nodeFolder(dir));
let largest = 0, total = 0;
for (const t of ck.tensors.values()) { largest = Math.max(largest, t.end - t.begin); total += t.end - t.begin; }
await ck.close();
const ctx = new GpuContext(await acquireGpu());
const used = () => { const m = process.memoryUsage(); return m.heapUsed + m.arrayBuffers; };
globalThis.gc(); globalThis.gc();
const base = used();
let peak = base;
const timer = setInterval(() => { peak = Math.max(peak, used()); }, 1);
const model = await LlavaModel.load(ctx, dir, { onProgress: () => { peak = Math.max(peak, used()); } });
clearInterval(timer);
console.log(JSON.stringify({ largest, total, peakDelta: peak - base }));
ctx.gpu.destroy();
`;

it('keeps the JS memory peak while loading near the largest tensor, far below the model size', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vlmscope-mem-'));
  const r = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script, dir], { encoding: 'utf8', timeout: 120_000 });
  expect(r.status, r.stderr).toBe(0);
  const m = JSON.parse(r.stdout.trim().split('\n').pop()!);
  console.log(`load memory: peak +${(m.peakDelta / 2 ** 20).toFixed(1)} MiB, largest tensor ${(m.largest / 2 ** 20).toFixed(1)} MiB, model ${(m.total / 2 ** 20).toFixed(1)} MiB`);
  expect(m.total).toBeGreaterThan(20 * m.largest); // the check is meaningful only for a model of many tensors
  expect(m.peakDelta).toBeLessThan(3 * m.largest + 4 * 2 ** 20);
});
