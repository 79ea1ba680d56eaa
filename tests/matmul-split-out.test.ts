// matmul with split outputs: one weight of stacked projections ([Nq + Nk + Nv, K], the fused q/k/v of a decoder
// layer) whose product columns go to two or three views in different buffers, each with its own row offset and
// stride (q into its scratch, k and v into KV-cache rows). Every variant forced on this adapter against a float64
// reference: f32 / f16 / bf16, with a bias and an activation, odd sizes (scalar path), boundaries that do not fall
// on a thread's column group, M = 1 and M > 1, row-split weights whose blocks straddle the boundaries, split K
// (its reduce pass writes the views). Then: bytes outside the views untouched, one dispatch, input errors.

import { describe, expect, it } from 'vitest';
import { matmul, type MatmulVariant, MATMUL_VARIANTS } from '../kernels/matmul.js';
import { rows, type RowView } from '../kernels/common.js';
import type { GpuContext } from '../src/gpu/context.js';
import { RowSplitTensor, type DType, type Tensor } from '../src/gpu/tensor.js';
import { expectClose, gpuContext, randn, read, upload } from './helpers/gpu.js';

/** float64 x Wᵀ + b (optionally gelu_tanh'd) over the M rows of a row-major [M, K] array. */
function reference(x: Float32Array, w: Float32Array, b: Float32Array | null, M: number, N: number, K: number, gelu: boolean): Float64Array {
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = b ? b[n] : 0;
      for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
      y[m * N + n] = gelu ? 0.5 * s * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (s + 0.044715 * s ** 3))) : s;
    }
  return y;
}

const FILL = 7;

/** Output tensors with room around the views: rows at `rowOffset`, columns inside wider rows, filled with FILL. */
function outputs(ctx: GpuContext, M: number, widths: number[]): { views: RowView[]; tensors: Tensor[]; strides: number[]; rowOffsets: number[] } {
  const strides = widths.map((w, i) => w + i * 3 + 1);
  const rowOffsets = widths.map((_, i) => i + 1);
  const tensors = widths.map((_, i) => ctx.uploadF32(new Float32Array((M + rowOffsets[i] + 1) * strides[i]).fill(FILL), [M + rowOffsets[i] + 1, strides[i]], `out${i}`));
  const views = widths.map((w, i) => ({ tensor: tensors[i], rows: M, cols: w, offset: rowOffsets[i] * strides[i] + 1, stride: strides[i] }));
  return { views, tensors, strides, rowOffsets };
}

async function expectOutputs(ctx: GpuContext, o: ReturnType<typeof outputs>, want: Float64Array, M: number, widths: number[], tol: number, what: string): Promise<void> {
  const N = widths.reduce((a, b) => a + b, 0);
  let c0 = 0;
  for (let i = 0; i < widths.length; i++) {
    const got = await read(ctx, o.tensors[i]);
    const w = widths[i];
    const v = o.views[i];
    for (let m = 0; m < M; m++) {
      const row = got.subarray(v.offset + m * v.stride, v.offset + m * v.stride + w);
      const ref = Array.from({ length: w }, (_, j) => want[m * N + c0 + j]);
      expectClose(row, ref, tol, tol, `${what} output ${i} row ${m}`);
    }
    // Everything outside the view keeps its fill: the bytes before and after each row, the rows around.
    for (let e = 0; e < got.length; e++) {
      const r = Math.floor((e - v.offset) / v.stride);
      const col = e - v.offset - r * v.stride;
      const inside = e >= v.offset && r < M && col >= 0 && col < w;
      if (!inside && got[e] !== FILL) throw new Error(`${what}: output ${i} element ${e} outside the view was written (${got[e]})`);
    }
    c0 += w;
  }
}

type Case = [M: number, widths: number[], K: number, dtype: DType, bias: boolean];

const CASES: Case[] = [
  [1, [12, 4, 4], 16, 'f32', true], // q / k / v of 3 heads of 4, GQA 3:1
  [1, [40, 9, 9], 35, 'f16', true], // boundaries off the eight-column group of gemv_rows, scalar loads
  [3, [64, 32, 32], 64, 'bf16', false],
  [37, [70, 33, 5], 36, 'f16', true], // prefill rows crossing tiles, a thin last output
  [2, [5, 11], 1001, 'f32', true], // two outputs
];

describe('matmul split outputs vs float64 reference (forced variants on this adapter)', () => {
  for (const variant of MATMUL_VARIANTS) {
    for (const [M, widths, K, dtype, bias] of CASES) {
      it(`${variant} M=${M} cols=${widths.join('+')} K=${K} ${dtype} bias=${bias}`, async () => {
        const ctx = await gpuContext();
        const N = widths.reduce((a, b) => a + b, 0);
        const xs = randn(M * K, 11 + M + K);
        const [w, wq] = upload(ctx, randn(N * K, 12 + N, 0.5), [N, K], dtype, 'qkv');
        const [b, bq] = bias ? upload(ctx, randn(N, 13), [N], dtype, 'qkv_bias') : [null, null];
        const o = outputs(ctx, M, widths);
        const rec = ctx.recorder();
        matmul(ctx, rec, { x: rows(ctx.uploadF32(xs, [M, K], 'x')), w, b, out: o.views, act: 'gelu_tanh', variant });
        rec.submit();
        const tol = K > 1000 ? 3e-4 : 1e-4;
        await expectOutputs(ctx, o, reference(xs, wq, bq, M, N, K, true), M, widths, tol, `${variant} ${M}x${N}x${K}`);
      });
    }

    it(`${variant}: a row-split stacked weight whose blocks straddle the output boundaries`, async () => {
      const ctx = await gpuContext();
      const [M, K] = [2, 20];
      const widths = [24, 8, 8];
      const N = 40;
      const wv = randn(N * K, 31, 0.5);
      const [, wq] = upload(ctx, wv, [N, K], 'f16', 'whole');
      const starts = [0, 18, 30]; // blocks [0, 18), [18, 30), [30, 40): two cross a boundary
      const parts = starts.map((r0, i) => upload(ctx, wv.subarray(r0 * K, (starts[i + 1] ?? N) * K), [(starts[i + 1] ?? N) - r0, K], 'f16', `qkv[${r0}..]`)[0]);
      const w = new RowSplitTensor(parts, starts, [N, K], 'f16', 'qkv');
      const [b, bq] = upload(ctx, randn(N, 32), [N], 'f32', 'qkv_bias');
      const xs = randn(M * K, 33);
      const o = outputs(ctx, M, widths);
      const rec = ctx.recorder();
      matmul(ctx, rec, { x: rows(ctx.uploadF32(xs, [M, K], 'x')), w, b, out: o.views, variant });
      rec.submit();
      await expectOutputs(ctx, o, reference(xs, wq, bq, M, N, K, false), M, widths, 1e-4, `${variant} row-split`);
    });
  }

  it('the planned variant, one dispatch (decode) and the same values as three matmuls', async () => {
    const ctx = await gpuContext();
    for (const M of [1, 9]) {
      const [K, widths] = [48, [32, 16, 16]];
      const N = 64;
      const xs = randn(M * K, 41 + M);
      const x = ctx.uploadF32(xs, [M, K], 'x');
      const wv = randn(N * K, 42, 0.5);
      const bv = randn(N, 43);
      const [w] = upload(ctx, wv, [N, K], 'bf16', 'qkv');
      const [b] = upload(ctx, bv, [N], 'bf16', 'qkv_bias');
      const o = outputs(ctx, M, widths);
      const c = ctx.countWork();
      const before = c.snapshot();
      const rec = ctx.recorder();
      matmul(ctx, rec, { x: rows(x), w, b, out: o.views });
      rec.submit();
      expect(c.since(before).dispatches).toBe(1);
      ctx.counters = null;
      // The separate projections on the same variant: bit for bit on this adapter (same accumulation order).
      let c0 = 0;
      for (let i = 0; i < 3; i++) {
        const n = widths[i];
        const [wi] = upload(ctx, wv.subarray(c0 * K, (c0 + n) * K), [n, K], 'bf16', `w${i}`);
        const [bi] = upload(ctx, bv.subarray(c0, c0 + n), [n], 'bf16', `b${i}`);
        const yi = ctx.activation([M, n], `y${i}`);
        const r = ctx.recorder();
        matmul(ctx, r, { x: rows(x), w: wi, b: bi, out: rows(yi) });
        r.submit();
        const got = await read(ctx, o.tensors[i]);
        const want = await read(ctx, yi);
        const v = o.views[i];
        for (let m = 0; m < M; m++) expectClose(got.subarray(v.offset + m * v.stride, v.offset + m * v.stride + n), want.subarray(m * n, m * n + n), 0, 1e-6, `M=${M} output ${i}`);
        c0 += n;
      }
    }
  });

  it('rejects views that do not make the product, share a buffer, alias x, come with a residual, or are too many', async () => {
    const ctx = await gpuContext();
    const [w] = upload(ctx, randn(20 * 8, 51, 0.5), [20, 8], 'f32', 'qkv');
    const x = ctx.uploadF32(randn(2 * 8, 52), [2, 8], 'x');
    const a = ctx.activation([2, 10], 'a');
    const b = ctx.activation([2, 10], 'b');
    const c = ctx.activation([2, 10], 'c');
    const run = (out: RowView[], extra: object = {}) => matmul(ctx, ctx.recorder(), { x: rows(x), w, out, ...extra });
    expect(() => run([rows(a), { ...rows(b), cols: 9 }])).toThrow(/does not make 2x20/);
    expect(() => run([{ ...rows(a), cols: 5 }, { ...rows(a), cols: 5, offset: 5 }, rows(b)])).toThrow(/different buffers/);
    expect(() => run([rows(a), rows(b)], { residual: rows(c) })).toThrow(/residual/);
    const xw = ctx.activation([2, 10], 'xw');
    expect(() => matmul(ctx, ctx.recorder(), { x: { ...rows(xw), cols: 8, stride: 10 }, w, out: [rows(xw), rows(b)] })).toThrow(/shares a buffer with its input/);
    const d = ctx.activation([2, 5], 'd');
    expect(() => run([{ ...rows(a), cols: 5 }, { ...rows(b), cols: 5 }, { ...rows(c), cols: 5 }, rows(d)])).toThrow(/at most three/);
  });
});

// Variant names the test loops over (a new variant must be added to the cases' expectations).
export const variantsCovered: readonly MatmulVariant[] = MATMUL_VARIANTS;
