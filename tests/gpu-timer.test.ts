// GpuTimer: the GPU time of a step's compute passes from timestamp queries (AcquireOptions.timestamps), what the
// benchmarks divide on a GPU. On a device that writes timestamps: a step's time grows with its work, every pass of a
// step is counted, and misuse is refused; on a device without them the timer is refused with what to do.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acquireGpu, type Gpu } from '../src/gpu/device.js';
import { GpuContext } from '../src/gpu/context.js';
import { GpuTimer } from '../src/gpu/gpu-timer.js';
import { rows } from '../kernels/common.js';
import { matmul } from '../kernels/matmul.js';
import { gpuContext, randn } from './helpers/gpu.js';

describe('GpuTimer', () => {
  let gpu: Gpu;
  let ctx: GpuContext;
  beforeAll(async () => {
    gpu = await acquireGpu({ timestamps: true });
    ctx = new GpuContext(gpu);
  });
  afterAll(() => gpu?.destroy());

  it('is refused on a device acquired without timestamps, saying how to get them', async () => {
    const plain = await gpuContext();
    expect(plain.gpu.features.has('timestamp-query')).toBe(false);
    expect(GpuTimer.available(plain)).toBe(false);
    expect(() => new GpuTimer(plain)).toThrow(/no 'timestamp-query' \(acquire it with \{ timestamps: true \}/);
  });

  describe('on a device with timestamps', () => {
    const K = 512;
    const N = 1024;
    let timer: GpuTimer;
    let step: (calls: number, copyBetween?: boolean) => Promise<number>;
    beforeAll(() => {
      if (!GpuTimer.available(ctx)) return;
      timer = new GpuTimer(ctx, 4);
      const x = ctx.uploadF32(randn(K, 1), [1, K], 'x');
      const w = ctx.uploadF32(randn(N * K, 2, 0.05), [N, K], 'w');
      const y = ctx.activation([1, N], 'y');
      const spare = ctx.activation([1, N], 'spare');
      step = async (calls, copyBetween = false) => {
        const rec = ctx.recorder('timed');
        for (let i = 0; i < calls; i++) {
          matmul(ctx, rec, { x: rows(x), w, out: rows(y) });
          if (copyBetween && i < calls - 1) rec.copy(y.buffer, 0, spare.buffer, 0, N * 4); // ends the pass
        }
        rec.submit(timer);
        await ctx.sync();
        return timer.read();
      };
    });

    it('times a step, longer for more work of the same kind', async (t) => {
      if (!GpuTimer.available(ctx)) t.skip();
      await step(1); // pipeline compiled outside the timing
      const one = Math.min(await step(1), await step(1), await step(1));
      const many = Math.min(await step(32), await step(32));
      expect(one).toBeGreaterThan(0);
      expect(many).toBeGreaterThan(4 * one);
    });

    it('counts every pass of a step: a copy between dispatches splits the step, the passes still add up', async (t) => {
      if (!GpuTimer.available(ctx)) t.skip();
      const onePass = Math.min(await step(4), await step(4), await step(4));
      const fourPasses = Math.min(await step(4, true), await step(4, true), await step(4, true));
      expect(fourPasses).toBeGreaterThan(0.5 * onePass);
      await expect(timer.read()).resolves.toBe(0); // nothing pending after a read
    });

    it('refuses a step with more passes than it has room for, and a second timed step before the first is read', async (t) => {
      if (!GpuTimer.available(ctx)) t.skip();
      await expect(step(5, true)).rejects.toThrow(/GpuTimer: a timed step has more than 4 compute passes/);
      await ctx.sync().catch(() => undefined);
      const x = ctx.uploadF32(randn(8, 3), [1, 8], 'x8');
      const w = ctx.uploadF32(randn(64, 4), [8, 8], 'w8');
      const y = ctx.activation([1, 8], 'y8');
      const rec = ctx.recorder('unread');
      matmul(ctx, rec, { x: rows(x), w, out: rows(y) });
      rec.submit(timer);
      matmul(ctx, rec, { x: rows(x), w, out: rows(y) });
      expect(() => rec.submit(timer)).toThrow(/the previous timed step was not read/);
      await expect(timer.read()).resolves.toBeGreaterThan(0);
    });
  });
});
