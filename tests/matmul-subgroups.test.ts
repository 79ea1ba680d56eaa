// matmul's GPU decode kernel in its subgroup form: gemv_coop and split K's partial pass (the gemv_coop entry) sum
// their threads' vec4 partial sums with subgroupAdd and one slot per subgroup (shaders/workgroup.wgsl's
// workgroup_sum4 / workgroup_sum4x2) where the context uses subgroups. Both forced, in every form of the kernel
// (plain with bias / residual / activation, GATED, SPLIT_OUT with two and three views), f32 / f16 / bf16 weights,
// odd K (scalar loads), K from 2048 (128 threads), M = 1..4: against the float64 reference, against the plain form
// (the log2(WG) tree) on a context with subgroups off, and which form ran (GpuCounters.subgroupDispatches).
// Skipped where the adapter lacks subgroups (SwiftShader has them, with 4 lanes); the selection test runs everywhere.

import { describe, expect, it } from 'vitest';
import { matmul, matmulGated, matmulPlan, type MatmulVariant } from '../kernels/matmul.js';
import { rows, type Activation, type RowView } from '../kernels/common.js';
import { GpuContext, type Recorder } from '../src/gpu/context.js';
import type { DType } from '../src/gpu/tensor.js';
import { expectClose, gpuContext, randn, read, upload } from './helpers/gpu.js';
import { matmulReference } from './helpers/reference-math.js';

const shared = await gpuContext();
/** The same device seen by a context that uses subgroups where it can, and by one that never does. */
const sg = new GpuContext(shared.gpu, { subgroups: true });
const plain = new GpuContext(shared.gpu, { subgroups: false });
const skip = !sg.subgroups;
const why = skip ? ' (skipped: no subgroups on this device)' : '';

const reference = matmulReference;

/** |a - b| <= 1e-5 relative, elementwise with a floor at 1e-5 of the largest |b| (outputs that are almost 0). */
function expectSameWithin(got: Float32Array, want: Float32Array, what: string) {
  let scale = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  expectClose(got, want, 1e-5 * scale, 1e-5, what);
}

type Form = 'plain' | 'gated' | 'split_out';
type Case = [M: number, N: number, K: number, dtype: DType, act: Activation];

// K around the workgroup (64 threads below K = 2048, 128 from it) and the vec4 / scalar paths; N not a multiple of
// the four columns of a workgroup; every M of a GPU decode (GEMV_MAX_ROWS.gpu = 4).
const CASES: Case[] = [
  [1, 5, 1001, 'f16', 'silu'], // scalar, K strided over 64 threads 16 times
  [2, 9, 35, 'bf16', 'gelu_tanh'], // scalar, K below the workgroup: most threads add nothing
  [3, 130, 2052, 'f32', 'none'], // vec4, 128 threads
  [4, 7, 4100, 'bf16', 'quick_gelu'], // vec4, 128 threads, several splits
  [1, 66, 2049, 'f16', 'gelu'], // scalar, 128 threads
  [4, 33, 260, 'f32', 'silu'], // vec4, 64 threads, every row of a GPU decode
];

/** Two views (N < 10) or three, in different buffers, with room before and after; the boundaries off the 4-column groups. */
function splitViews(ctx: GpuContext, M: number, N: number): RowView[] {
  const widths = N < 10 ? [N - 2, 2] : [Math.floor(N / 2) + 1, Math.floor(N / 4), 0];
  if (widths.length === 3) widths[2] = N - widths[0] - widths[1];
  return widths.map((cols, i) => {
    const stride = cols + 3;
    const t = ctx.uploadF32(new Float32Array((M + 2) * stride).fill(7), [M + 2, stride], `out${i}`);
    return { tensor: t, rows: M, cols, offset: stride + 1, stride };
  });
}

/** The views' elements, row by row and view after view, as one [M, N] array. */
async function gather(ctx: GpuContext, views: RowView[], M: number): Promise<Float32Array> {
  const N = views.reduce((c, v) => c + v.cols, 0);
  const y = new Float32Array(M * N);
  let c0 = 0;
  for (const v of views) {
    const got = await read(ctx, v.tensor);
    for (let m = 0; m < M; m++) y.set(got.subarray(v.offset + m * v.stride, v.offset + m * v.stride + v.cols), m * N + c0);
    c0 += v.cols;
  }
  return y;
}

/** Run `record` on `ctx` and read `views`; with the dispatches it made and how many were subgroup forms. */
async function runOn(ctx: GpuContext, views: RowView[], M: number, record: (ctx: GpuContext, rec: Recorder) => void) {
  const c = ctx.countWork();
  const before = c.snapshot();
  const rec = ctx.recorder();
  record(ctx, rec);
  rec.submit();
  const y = await gather(ctx, views, M);
  const d = c.since(before);
  return { y, subgroupDispatches: d.subgroupDispatches, dispatches: d.dispatches };
}

/** [subgroup form dispatches, all dispatches] of one call on a context with subgroups. */
function expectedDispatches(variant: MatmulVariant, form: Form): [number, number] {
  if (variant === 'gemv_coop') return [1, 1];
  // Split K: the partial pass takes the subgroup form, its reduce pass has no reduction over threads. The gated
  // form falls back to two split-K matmuls (partials + reduce each) and gatedAct.
  return form === 'gated' ? [2, 5] : [1, 2];
}

describe(`matmul gemv_coop / gemv_splitk: subgroup form${why}`, () => {
  for (const variant of ['gemv_coop', 'gemv_splitk'] as const) {
    for (const form of ['plain', 'gated', 'split_out'] as const) {
      CASES.forEach(([M, N, K, dtype, act], i) => {
        const bias = i % 2 === 0;
        it.skipIf(skip)(`${variant} ${form} M=${M} N=${N} K=${K} ${dtype} ${act}${bias ? ' bias' : ''}: vs float64 and vs the plain form`, async () => {
          const seed = 1000 * i + K;
          const xs = randn(M * K, seed);
          const x = sg.uploadF32(xs, [M, K], 'x');
          const [w, wq] = upload(sg, randn(N * K, seed + 1, 0.5), [N, K], dtype, 'w');
          const [b, bq] = bias ? upload(sg, randn(N, seed + 2), [N], dtype, 'b') : [null, null];
          let views: RowView[];
          let record: (ctx: GpuContext, rec: Recorder) => void;
          let want: Float64Array;
          if (form === 'gated') {
            const [up, uq] = upload(sg, randn(N * K, seed + 3, 0.5), [N, K], dtype, 'up');
            // The up bias in another dtype (its own loader), on the cases without a gate bias.
            const [ub, ubq] = bias ? [null, null] : upload(sg, randn(N, seed + 4), [N], dtype === 'f32' ? 'bf16' : 'f32', 'up_bias');
            views = [rows(sg.activation([M, N], 'y'))];
            record = (ctx, rec) => matmulGated(ctx, rec, { x: rows(x), gate: w, up, gateBias: b, upBias: ub, act, out: views[0], variant });
            want = reference(xs, wq, bq, M, N, K, act, { up: { w: uq, b: ubq } });
          } else if (form === 'split_out') {
            views = splitViews(sg, M, N);
            record = (ctx, rec) => matmul(ctx, rec, { x: rows(x), w, b, out: views, act, variant });
            want = reference(xs, wq, bq, M, N, K, act, {});
          } else {
            const rs = bias ? null : randn(M * N, seed + 5);
            const r = rs ? sg.uploadF32(rs, [M, N], 'r') : null;
            views = [rows(sg.activation([M, N], 'y'))];
            record = (ctx, rec) => matmul(ctx, rec, { x: rows(x), w, b, residual: r ? rows(r) : null, out: views[0], act, variant });
            want = reference(xs, wq, bq, M, N, K, act, { r: rs });
          }
          if (variant === 'gemv_splitk' && K > 100) expect(matmulPlan(sg, M, N, K, variant).splits).toBeGreaterThan(1);
          const a = await runOn(sg, views, M, record);
          const p = await runOn(plain, views, M, record);
          const [sgDispatches, dispatches] = expectedDispatches(variant, form);
          expect([a.subgroupDispatches, a.dispatches, p.subgroupDispatches, p.dispatches]).toEqual([sgDispatches, dispatches, 0, dispatches]);
          const tol = K > 1000 ? 3e-4 : 1e-4;
          expectClose(a.y, want, tol, tol, `${variant} ${form} subgroup vs float64`);
          expectClose(p.y, want, tol, tol, `${variant} ${form} plain vs float64`);
          expectSameWithin(a.y, p.y, `${variant} ${form} subgroup vs plain`);
        });
      });
    }
  }

  it.skipIf(skip)('many workgroups and rows in one dispatch: each sums only its own threads (N = 4099, M = 4)', async () => {
    const [M, N, K] = [4, 4099, 64];
    const xs = randn(M * K, 51);
    for (let m = 0; m < M; m++) for (let k = 0; k < K; k++) xs[m * K + k] *= 1 + 10 * m; // rows of different scales
    const x = sg.uploadF32(xs, [M, K], 'x');
    const [w, wq] = upload(sg, randn(N * K, 52, 0.5), [N, K], 'bf16', 'w');
    const views = [rows(sg.activation([M, N], 'y'))];
    for (const variant of ['gemv_coop', 'gemv_splitk'] as const) {
      const record = (ctx: GpuContext, rec: Recorder) => matmul(ctx, rec, { x: rows(x), w, out: views[0], variant });
      const a = await runOn(sg, views, M, record);
      expect(a.subgroupDispatches).toBe(1);
      expectClose(a.y, reference(xs, wq, null, M, N, K, 'none', {}), 1e-3, 1e-4, variant);
      expectSameWithin(a.y, (await runOn(plain, views, M, record)).y, `${variant} subgroup vs plain`);
    }
  });
});

describe('matmul: which variants take the subgroup form', () => {
  it('only gemv_coop and split K, and only on a context with subgroups; the others are unchanged', async () => {
    const [M, N, K] = [2, 12, 40];
    const xs = randn(M * K, 61);
    const x = shared.uploadF32(xs, [M, K], 'x');
    const [w, wq] = upload(shared, randn(N * K, 62, 0.5), [N, K], 'f16', 'w');
    const views = [rows(shared.activation([M, N], 'y'))];
    const want = reference(xs, wq, null, M, N, K, 'none', {});
    for (const variant of ['tiled', 'smem', 'gemv_rows', 'gemv_coop', 'gemv_splitk'] as const) {
      const record = (ctx: GpuContext, rec: Recorder) => matmul(ctx, rec, { x: rows(x), w, out: views[0], variant });
      const coop = variant === 'gemv_coop' || variant === 'gemv_splitk';
      for (const ctx of [sg, plain]) {
        const r = await runOn(ctx, views, M, record);
        expect(r.subgroupDispatches, `${variant} subgroups=${ctx.subgroups}`).toBe(coop && ctx.subgroups ? 1 : 0);
        expectClose(r.y, want, 1e-4, 1e-4, `${variant} subgroups=${ctx.subgroups}`);
      }
    }
    // The plan does not depend on the context's subgroups: the same variant and sizes for both forms.
    expect(matmulPlan(sg, 1, 4096, 4096)).toEqual(matmulPlan(plain, 1, 4096, 4096));
  });
});
