import { describe, expect, it } from 'vitest';
import { matmul } from '../kernels/matmul.js';
import { rows, type Activation } from '../kernels/common.js';
import { expectClose, gpuContext, randn, read, upload } from './helpers/gpu.js';
import { RowSplitTensor, type DType } from '../src/gpu/tensor.js';
import { matmulReference } from './helpers/reference-math.js';

/** float64 act(x Wᵀ + b) + r (the shared reference, this file's argument order). */
const refMatmul = (x: Float32Array, w: Float32Array, b: Float32Array | null, r: Float32Array | null, M: number, N: number, K: number, act: Activation) =>
  matmulReference(x, w, b, M, N, K, act, { r });

describe('matmul kernel vs float64 reference', () => {
  const cases: [number, number, number, DType, boolean, boolean, Activation][] = [
    [1, 1, 1, 'f32', false, false, 'none'],
    [7, 13, 5, 'f32', true, false, 'none'],
    [33, 65, 31, 'f16', true, true, 'gelu'],
    [5, 129, 67, 'bf16', true, false, 'quick_gelu'],
    [70, 37, 130, 'f16', false, true, 'silu'],
    [3, 50, 17, 'f32', true, false, 'gelu_tanh'],
    // K % 4 == 0: the vec4 path, for every weight dtype, few rows (decode layout) and many
    [1, 257, 96, 'f16', true, false, 'none'],
    [3, 50, 20, 'bf16', true, true, 'silu'],
    [4, 33, 64, 'f32', false, false, 'gelu'],
    [5, 65, 128, 'f16', true, true, 'quick_gelu'],
    [70, 37, 132, 'bf16', false, true, 'none'],
    [33, 130, 36, 'f32', true, false, 'gelu_tanh'],
  ];
  for (const [M, N, K, dtype, bias, res, act] of cases) {
    it(`M=${M} N=${N} K=${K} ${dtype} bias=${bias} residual=${res} ${act}`, async () => {
      const ctx = await gpuContext();
      const xs = randn(M * K, 1 + M);
      const x = ctx.uploadF32(xs, [M, K], 'x');
      const [w, wq] = upload(ctx, randn(N * K, 2 + N, 0.5), [N, K], dtype, 'w');
      const [b, bq] = bias ? upload(ctx, randn(N, 3), [N], dtype, 'b') : [null, null];
      const rs = res ? randn(M * N, 4) : null;
      const r = rs ? ctx.uploadF32(rs, [M, N], 'r') : null;
      const y = ctx.activation([M, N], 'y');
      const rec = ctx.recorder();
      matmul(ctx, rec, { x: rows(x), w, b, residual: r ? rows(r) : null, out: rows(y), act });
      rec.submit();
      const got = await read(ctx, y);
      expectClose(got, refMatmul(xs, wq, bq, rs, M, N, K, act), 1e-4, 1e-4, 'matmul');
    });
  }

  it('reads a row subset and writes into a column slice (views)', async () => {
    const ctx = await gpuContext();
    const [M, N, K] = [3, 6, 9];
    const xs = randn(5 * K, 11);
    const x = ctx.uploadF32(xs, [5, K], 'x');
    const [w, wq] = upload(ctx, randn(N * K, 12), [N, K], 'f32', 'w');
    const y = ctx.uploadF32(new Float32Array(M * 10).fill(7), [M, 10], 'y');
    const rec = ctx.recorder();
    matmul(ctx, rec, { x: rows(x, 2, M), w, out: { tensor: y, rows: M, cols: N, offset: 2, stride: 10 } });
    rec.submit();
    const got = await read(ctx, y);
    const want = refMatmul(xs.subarray(2 * K), wq, null, null, M, N, K, 'none');
    for (let m = 0; m < M; m++) {
      expect(got[m * 10]).toBe(7);
      expect(got[m * 10 + 1]).toBe(7);
      expectClose(got.subarray(m * 10 + 2, m * 10 + 2 + N), want.subarray(m * N, m * N + N), 1e-4, 1e-4);
      expect(got[m * 10 + 8]).toBe(7);
    }
  });

  it('vec4 path on a row view whose offset and stride are multiples of 4', async () => {
    const ctx = await gpuContext();
    const [M, N, K] = [3, 10, 8];
    const xs = randn(6 * K, 21);
    const x = ctx.uploadF32(xs, [6, K], 'x');
    const [w, wq] = upload(ctx, randn(N * K, 22), [N, K], 'f16', 'w');
    const y = ctx.activation([M, N], 'y');
    const rec = ctx.recorder();
    matmul(ctx, rec, { x: rows(x, 3, M), w, out: rows(y) });
    rec.submit();
    expectClose(await read(ctx, y), refMatmul(xs.subarray(3 * K), wq, null, null, M, N, K, 'none'), 1e-4, 1e-4);
  });

  it('a weight split in row blocks gives the same result as the whole weight', async () => {
    const ctx = await gpuContext();
    const [M, N, K] = [6, 23, 12];
    const xs = randn(M * K, 31);
    const x = ctx.uploadF32(xs, [M, K], 'x');
    const wv = randn(N * K, 32);
    const [, wq] = upload(ctx, wv, [N, K], 'f16', 'w');
    const [b, bq] = upload(ctx, randn(N, 33), [N], 'f32', 'b');
    const starts = [0, 8, 16];
    const parts = starts.map((r0, i) => {
      const r1 = starts[i + 1] ?? N;
      return upload(ctx, wv.subarray(r0 * K, r1 * K), [r1 - r0, K], 'f16', `w[${r0}..]`)[0];
    });
    const split = new RowSplitTensor(parts, starts, [N, K], 'f16', 'w');
    const y = ctx.activation([M, N], 'y');
    const rec = ctx.recorder();
    matmul(ctx, rec, { x: rows(x), w: split, b, out: rows(y), act: 'silu' });
    rec.submit();
    expectClose(await read(ctx, y), refMatmul(xs, wq, bq, null, M, N, K, 'silu'), 1e-4, 1e-4);
  });

  it('refuses mismatched shapes with a message naming the tensors', async () => {
    const ctx = await gpuContext();
    const x = ctx.activation([2, 3], 'acts');
    const w = ctx.activation([4, 5], 'proj.weight');
    const y = ctx.activation([2, 4], 'out');
    expect(() => matmul(ctx, ctx.recorder(), { x: rows(x), w, out: rows(y) })).toThrow(/acts has 3 columns but proj.weight expects 5/);
  });
});
