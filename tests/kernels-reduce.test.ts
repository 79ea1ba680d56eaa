import { describe, expect, it } from 'vitest';
import { argmax } from '../kernels/reduce.js';
import { rows, type RowView } from '../kernels/common.js';
import { GpuContext } from '../src/gpu/context.js';
import { gpuContext, randn } from './helpers/gpu.js';
import { argmax as refArgmax } from './helpers/reference-math.js';

/** The same device seen with a lower workgroups-per-dimension limit, so the folded dispatch runs cheaply. */
function lowLimit(ctx: GpuContext, max: number): GpuContext {
  return new GpuContext({ ...ctx.gpu, limits: { ...ctx.gpu.limits, maxComputeWorkgroupsPerDimension: max } });
}

function idsBuffer(ctx: GpuContext, n: number, label = 'token_ids'): GPUBuffer {
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const b = ctx.createBuffer(n * 4, usage, label);
  ctx.writeBytes(b, 0, new Uint8Array(new Uint32Array(n).fill(0xdeadbeef).buffer));
  return b;
}

async function argmaxOf(ctx: GpuContext, values: Float32Array, outIndex = 3): Promise<Uint32Array> {
  const x = ctx.uploadF32(values, [1, values.length], 'logits');
  const out = idsBuffer(ctx, outIndex + 2);
  const rec = ctx.recorder();
  argmax(ctx, rec, { x: rows(x), out, outIndex });
  rec.submit();
  return ctx.readU32(out, 0, outIndex + 2);
}

describe('argmax kernel', () => {
  for (const n of [1, 7, 257, 32064, 151937]) {
    it(`random row of ${n}`, async () => {
      const ctx = await gpuContext();
      const v = randn(n, n, 10);
      const got = await argmaxOf(ctx, v);
      expect(got[3]).toBe(refArgmax(v));
      // neighbours untouched
      expect([got[0], got[1], got[2], got[4]]).toEqual([0xdeadbeef, 0xdeadbeef, 0xdeadbeef, 0xdeadbeef]);
    });
  }

  it('places the maximum at the first, last and every thread-stride position', async () => {
    const ctx = await gpuContext();
    const n = 1031;
    for (const at of [0, 1, 255, 256, 257, 511, 1030]) {
      const v = randn(n, at, 1);
      v[at] = 5;
      expect((await argmaxOf(ctx, v, 0))[0]).toBe(at);
    }
  });

  it('takes the lowest index on ties (across and within threads)', async () => {
    const ctx = await gpuContext();
    const n = 151937;
    const v = randn(n, 3, 1);
    for (const i of [70000, 600, 345, 100000, 90001]) v[i] = 2.5; // 345 and 600 fall in different threads
    expect((await argmaxOf(ctx, v))[3]).toBe(345);
    const w = new Float32Array(1000).fill(-1);
    w[513] = 0;
    w[257] = 0;
    w[769] = 0; // same thread as 257 and 513 (stride 256), the lowest wins
    expect((await argmaxOf(ctx, w))[3]).toBe(257);
    expect((await argmaxOf(ctx, new Float32Array(777).fill(3)))[3]).toBe(0);
    const z = new Float32Array([-1, -0, 0, -0.5]);
    expect((await argmaxOf(ctx, z))[3]).toBe(1); // -0 == +0: the first zero
  });

  it('handles all-negative rows and infinities', async () => {
    const ctx = await gpuContext();
    const v = randn(32064, 4, 1).map((e) => e - 100);
    v[31000] = -99.5;
    v[5] = -Infinity;
    expect((await argmaxOf(ctx, v))[3]).toBe(refArgmax(v));
    const w = new Float32Array([-Infinity, -Infinity, -3e38, -Infinity]);
    expect((await argmaxOf(ctx, w))[3]).toBe(2);
    const u = randn(300, 5);
    u[299] = Infinity;
    u[1] = Infinity;
    expect((await argmaxOf(ctx, u))[3]).toBe(1);
  });

  it('treats NaN as the smallest value', async () => {
    const ctx = await gpuContext();
    const v = randn(4099, 6, 1);
    v[0] = NaN;
    v[17] = NaN;
    v[4098] = NaN;
    expect((await argmaxOf(ctx, v))[3]).toBe(refArgmax(v));
    expect((await argmaxOf(ctx, new Float32Array([NaN, -Infinity, NaN])))[3]).toBe(1);
    expect((await argmaxOf(ctx, new Float32Array([NaN, NaN, -1e30])))[3]).toBe(2);
    expect((await argmaxOf(ctx, new Float32Array(300).fill(NaN)))[3]).toBe(0);
    // a negative-signed NaN bit pattern too
    const neg = new Float32Array([1, 2, 0]);
    new Uint32Array(neg.buffer)[2] = 0xffc00001;
    expect((await argmaxOf(ctx, neg))[3]).toBe(1);
  });

  it('reduces several strided rows into consecutive outputs, folded (limit lowered to 4)', async () => {
    const ctx = lowLimit(await gpuContext(), 4);
    const [R, C, S] = [11, 301, 320]; // 11 rows -> [4, 3] workgroups
    const data = randn(R * S + 7, 8, 3);
    const x = ctx.uploadF32(data, [R * S + 7], 'logits');
    const view: RowView = { tensor: x, rows: R, cols: C, offset: 7, stride: S };
    const out = idsBuffer(ctx, 2 + R);
    const rec = ctx.recorder();
    argmax(ctx, rec, { x: view, out, outIndex: 2 });
    rec.submit();
    const got = await ctx.readU32(out, 0, 2 + R);
    const want = Array.from({ length: R }, (_, r) => refArgmax(data.subarray(7 + r * S, 7 + r * S + C)));
    expect(Array.from(got.subarray(2))).toEqual(want);
    expect(got[0]).toBe(0xdeadbeef);
  });

  it('refuses an output index past the end of the id buffer, naming it', async () => {
    const ctx = await gpuContext();
    const x = ctx.activation([1, 50], 'logits');
    const out = idsBuffer(ctx, 8, 'token_ids');
    expect(() => argmax(ctx, ctx.recorder(), { x: rows(x), out, outIndex: 8 })).toThrow(
      /output buffer token_ids holds 8 u32, index 8 is past its end/,
    );
  });
});

