// matmulGated: the gated MLP's act(x · Wgᵀ + bg) * (x · Wuᵀ + bu) in one dispatch. Each variant with a gated form
// (tiled, smem, gemv_rows, gemv_coop) forced on this adapter against a float64 reference: every activation, f32 /
// f16 / bf16 weights, with and without each bias, odd sizes (scalar path), sizes crossing tiles and workgroups,
// M = 1 and M > 1, row views in and out, weights split in the same row blocks. Then the fallback (split K, gate
// and up of different dtypes or row blocks: two matmuls and gatedAct), dispatch counts, the equality with the
// unfused path, input errors, and the plan on made-up adapter profiles.

import { describe, expect, it } from 'vitest';
import { adapterProfile, matmul, matmulGated, matmulGatedPlan, planMatmul, planMatmulGated, GEMV_ROWS_COLS, type AdapterProfile, type MatmulVariant } from '../kernels/matmul.js';
import { gatedAct } from '../kernels/elementwise.js';
import { rows, type Activation, type RowView } from '../kernels/common.js';
import type { GpuContext } from '../src/gpu/context.js';
import { RowSplitTensor, type DType, type Tensor } from '../src/gpu/tensor.js';
import { countDispatches as dispatches, expectClose, gpuContext, randn, read, upload } from './helpers/gpu.js';
import { matmulReference } from './helpers/reference-math.js';

/** float64 act(x Wgᵀ + bg) * (x Wuᵀ + bu) over the M rows of a row-major [M, K] array (the shared reference). */
const reference = (x: Float32Array, wg: Float32Array, wu: Float32Array, bg: Float32Array | null, bu: Float32Array | null, M: number, N: number, K: number, act: Activation) =>
  matmulReference(x, wg, bg, M, N, K, act, { up: { w: wu, b: bu } });

/** A weight as row blocks starting at `starts` (how the loader holds one larger than a storage binding). */
function splitWeight(ctx: GpuContext, values: Float32Array, N: number, K: number, dtype: DType, starts: number[], label: string): RowSplitTensor {
  const parts = starts.map((r0, i) => upload(ctx, values.subarray(r0 * K, (starts[i + 1] ?? N) * K), [(starts[i + 1] ?? N) - r0, K], dtype, `${label}[${r0}..]`)[0]);
  return new RowSplitTensor(parts, starts, [N, K], dtype, label);
}

type Case = [M: number, N: number, K: number, dtype: DType, gateBias: boolean, upBias: boolean, act: Activation];

// Per fused variant: odd sizes (scalar path: K % 4 != 0), vec4 sizes, sizes crossing its tile / workgroup edges.
const CASES: Record<Exclude<MatmulVariant, 'gemv_splitk'>, Case[]> = {
  tiled: [
    [1, 7, 5, 'f32', true, false, 'silu'],
    [37, 70, 33, 'bf16', false, true, 'gelu_tanh'], // 8 x 8 threads x 4 x 4: crosses the 32 x 32 block in M and N
    [33, 65, 132, 'f16', true, true, 'quick_gelu'],
    [5, 9, 1001, 'f32', true, true, 'gelu'],
    [2, 6, 8, 'bf16', false, false, 'none'],
  ],
  smem: [
    [1, 1, 1, 'f32', false, false, 'silu'],
    [70, 130, 37, 'f16', true, true, 'silu'], // crosses the 64 x 64 tile in M and N, BK = 16 in K, scalar loads
    [65, 67, 132, 'bf16', true, false, 'gelu'], // vec4 loads, K not a multiple of BK
    [3, 200, 64, 'f32', false, true, 'quick_gelu'],
    [33, 5, 1004, 'f16', true, true, 'gelu_tanh'],
  ],
  gemv_rows: [
    [1, 1, 1, 'f32', false, false, 'silu'],
    [1, 257, 5, 'f16', true, true, 'silu'], // 16 threads x 4 pairs per workgroup: 257 needs a fifth, one column in it
    [1, 4099, 8, 'bf16', false, true, 'gelu_tanh'], // 64 threads x 4 pairs, 17 workgroups
    [3, 66, 132, 'f16', true, false, 'quick_gelu'],
    [2, 13, 1001, 'f32', true, true, 'gelu'],
    [1, 10, 12, 'bf16', false, false, 'none'],
  ],
  gemv_coop: [
    [1, 1, 1, 'f32', false, false, 'silu'],
    [1, 5, 1001, 'f16', true, true, 'silu'], // K strided over the workgroup several times, scalar loads
    [1, 130, 2052, 'bf16', true, false, 'gelu_tanh'], // 128 threads (K >= 2048), vec4
    [4, 6, 260, 'f32', false, true, 'quick_gelu'],
    [2, 9, 36, 'f16', true, true, 'gelu'],
  ],
};

interface Problem {
  xs: Float32Array;
  x: Tensor;
  gate: Tensor;
  up: Tensor;
  gq: Float32Array;
  uq: Float32Array;
  gb: Tensor | null;
  ub: Tensor | null;
  gbq: Float32Array | null;
  ubq: Float32Array | null;
}

/** Random x [M, K], gate and up [N, K] (up of `upDtype`), biases where asked; never zeros. */
function problem(ctx: GpuContext, M: number, N: number, K: number, dtype: DType, gateBias: boolean, upBias: boolean, seed: number, upDtype = dtype): Problem {
  const xs = randn(M * K, seed + M + K);
  const [gate, gq] = upload(ctx, randn(N * K, seed + 1 + N, 0.5), [N, K], dtype, 'gate');
  const [up, uq] = upload(ctx, randn(N * K, seed + 2 + N, 0.5), [N, K], upDtype, 'up');
  const [gb, gbq] = gateBias ? upload(ctx, randn(N, seed + 3), [N], dtype, 'gate_bias') : [null, null];
  // The up bias in another dtype than the gate bias: each bias has its own loader.
  const [ub, ubq] = upBias ? upload(ctx, randn(N, seed + 4), [N], dtype === 'f32' ? 'bf16' : 'f32', 'up_bias') : [null, null];
  return { xs, x: ctx.uploadF32(xs, [M, K], 'x'), gate, up, gq, uq, gb, ub, gbq, ubq };
}

describe('matmulGated vs float64 reference (forced variants on this adapter)', () => {
  for (const [variant, cases] of Object.entries(CASES) as [MatmulVariant, Case[]][]) {
    for (const [M, N, K, dtype, gateBias, upBias, act] of cases) {
      it(`${variant} M=${M} N=${N} K=${K} ${dtype} gateBias=${gateBias} upBias=${upBias} ${act}`, async () => {
        const ctx = await gpuContext();
        const p = problem(ctx, M, N, K, dtype, gateBias, upBias, 100);
        const y = ctx.activation([M, N], 'y');
        expect(matmulGatedPlan(ctx, { x: rows(p.x), gate: p.gate, up: p.up, variant }).fused).toBe(true);
        const n = dispatches(ctx, (rec) => matmulGated(ctx, rec, { x: rows(p.x), gate: p.gate, up: p.up, gateBias: p.gb, upBias: p.ub, act, out: rows(y), variant }));
        expect(n).toBe(1);
        const tol = K > 1000 ? 3e-4 : 1e-4;
        expectClose(await read(ctx, y), reference(p.xs, p.gq, p.uq, p.gbq, p.ubq, M, N, K, act), tol, tol, `${variant} ${M}x${N}x${K}`);
      });
    }

    it(`${variant}: row views in and out, gate and up split in the same row blocks (one dispatch per block)`, async () => {
      const ctx = await gpuContext();
      // x rows 2..2+M of a [7, K] tensor (vec4 path for K = 36), y columns 3..3+N of [M, 70].
      for (const K of [36, 35]) {
        const [M, N] = [3, 61];
        const xs = randn(7 * K, 500 + K);
        const x = ctx.uploadF32(xs, [7, K], 'x');
        const gv = randn(N * K, 501, 0.5);
        const uv = randn(N * K, 502, 0.5);
        const [, gq] = upload(ctx, gv, [N, K], 'f16', 'gate');
        const [, uq] = upload(ctx, uv, [N, K], 'f16', 'up');
        const starts = [0, 24, 40];
        const gate = splitWeight(ctx, gv, N, K, 'f16', starts, 'gate');
        const up = splitWeight(ctx, uv, N, K, 'f16', starts, 'up');
        const [gb, gbq] = upload(ctx, randn(N, 503), [N], 'bf16', 'gate_bias');
        const [ub, ubq] = upload(ctx, randn(N, 504), [N], 'f16', 'up_bias');
        const y = ctx.uploadF32(new Float32Array(M * 70).fill(9), [M, 70], 'y');
        const out: RowView = { tensor: y, rows: M, cols: N, offset: 3, stride: 70 };
        const n = dispatches(ctx, (rec) => matmulGated(ctx, rec, { x: rows(x, 2, M), gate, up, gateBias: gb, upBias: ub, act: 'silu', out, variant }));
        expect(n).toBe(starts.length);
        const got = await read(ctx, y);
        const want = reference(xs.subarray(2 * K), gq, uq, gbq, ubq, M, N, K, 'silu');
        for (let m = 0; m < M; m++) {
          expect(got[m * 70 + 2]).toBe(9);
          expect(got[m * 70 + 3 + N]).toBe(9);
          expectClose(got.subarray(m * 70 + 3, m * 70 + 3 + N), want.subarray(m * N, m * N + N), 1e-4, 1e-4, `${variant} K=${K} row ${m}`);
        }
      }
    });

    it(`${variant}: the same values as matmul (gate), matmul (up) and gatedAct on this variant`, async () => {
      const ctx = await gpuContext();
      for (const [M, N, K] of [[1, 70, 36], [5, 33, 35]]) {
        const p = problem(ctx, M, N, K, 'bf16', true, true, 900);
        const fused = ctx.activation([M, N], 'fused');
        const g = ctx.activation([M, N], 'g');
        const u = ctx.activation([M, N], 'u');
        const plain = ctx.activation([M, N], 'plain');
        const rec = ctx.recorder();
        matmulGated(ctx, rec, { x: rows(p.x), gate: p.gate, up: p.up, gateBias: p.gb, upBias: p.ub, act: 'silu', out: rows(fused), variant });
        matmul(ctx, rec, { x: rows(p.x), w: p.gate, b: p.gb, out: rows(g), variant });
        matmul(ctx, rec, { x: rows(p.x), w: p.up, b: p.ub, out: rows(u), variant });
        gatedAct(ctx, rec, { gate: rows(g), up: rows(u), out: rows(plain), act: 'silu' });
        rec.submit();
        // Each output accumulates in the same order in both, and the epilogue is gatedAct's expression: bit for bit
        // on SwiftShader; a GPU compiler may contract the two kernels' arithmetic differently.
        const rtol = adapterProfile(ctx).cpu ? 0 : 1e-6;
        expectClose(await read(ctx, fused), await read(ctx, plain), 0, rtol, `${variant} ${M}x${N}x${K}`);
      }
    });
  }

  it('the planned variant at decode (M = 1) and prefill (M = 40) shapes', async () => {
    const ctx = await gpuContext();
    for (const M of [1, 40]) {
      const [N, K] = [300, 64];
      const p = problem(ctx, M, N, K, 'f16', true, true, 700);
      const y = ctx.activation([M, N], 'y');
      expect(matmulGatedPlan(ctx, { x: rows(p.x), gate: p.gate, up: p.up }).fused).toBe(true);
      const n = dispatches(ctx, (rec) => matmulGated(ctx, rec, { x: rows(p.x), gate: p.gate, up: p.up, gateBias: p.gb, upBias: p.ub, act: 'silu', out: rows(y) }));
      expect(n).toBe(1);
      expectClose(await read(ctx, y), reference(p.xs, p.gq, p.uq, p.gbq, p.ubq, M, N, K, 'silu'), 1e-4, 1e-4, `M=${M}`);
    }
  });
});

describe('matmulGated fallback: two matmuls into scratch, then gatedAct', () => {
  it('forced gemv_splitk (no gated form): split K for each projection, then gatedAct', async () => {
    const ctx = await gpuContext();
    for (const [M, N, K, dtype, act] of [[1, 5, 1030, 'f16', 'silu'], [3, 7, 2048, 'bf16', 'gelu_tanh']] as const) {
      const p = problem(ctx, M, N, K, dtype, true, true, 800);
      const y = ctx.activation([M, N], 'y');
      const plan = matmulGatedPlan(ctx, { x: rows(p.x), gate: p.gate, up: p.up, variant: 'gemv_splitk' });
      expect(plan.fused).toBe(false);
      expect(plan.reason).toMatch(/split K has no gated form/);
      const n = dispatches(ctx, (rec) => matmulGated(ctx, rec, { x: rows(p.x), gate: p.gate, up: p.up, gateBias: p.gb, upBias: p.ub, act, out: rows(y), variant: 'gemv_splitk' }));
      expect(n).toBe(5); // (partials + reduce) x 2, gatedAct
      expectClose(await read(ctx, y), reference(p.xs, p.gq, p.uq, p.gbq, p.ubq, M, N, K, act), 3e-4, 3e-4, `splitk ${M}x${N}x${K}`);
    }
  });

  it('gate and up of different dtypes: three dispatches, row views in and out', async () => {
    const ctx = await gpuContext();
    const [M, N, K] = [2, 45, 20];
    const p = problem(ctx, 7, N, K, 'f16', true, false, 810, 'bf16');
    const y = ctx.uploadF32(new Float32Array(M * 60).fill(9), [M, 60], 'y');
    const a = { x: rows(p.x, 4, M), gate: p.gate, up: p.up, gateBias: p.gb, act: 'quick_gelu' as const, out: { tensor: y, rows: M, cols: N, offset: 5, stride: 60 } };
    const plan = matmulGatedPlan(ctx, a);
    expect(plan.fused).toBe(false);
    expect(plan.reason).toBe('gate gate is f16, up up bf16: gate, up, then gatedAct');
    expect(dispatches(ctx, (rec) => matmulGated(ctx, rec, a))).toBe(3);
    const got = await read(ctx, y);
    const want = reference(p.xs.subarray(4 * K), p.gq, p.uq, p.gbq, null, M, N, K, 'quick_gelu');
    for (let m = 0; m < M; m++) {
      expect(got[m * 60 + 4]).toBe(9);
      expect(got[m * 60 + 5 + N]).toBe(9);
      expectClose(got.subarray(m * 60 + 5, m * 60 + 5 + N), want.subarray(m * N, m * N + N), 1e-4, 1e-4, `row ${m}`);
    }
  });

  it('gate and up split in different row blocks: each matmul per block, then gatedAct', async () => {
    const ctx = await gpuContext();
    const [M, N, K] = [3, 50, 24];
    const xs = randn(M * K, 820);
    const x = ctx.uploadF32(xs, [M, K], 'x');
    const gv = randn(N * K, 821, 0.5);
    const uv = randn(N * K, 822, 0.5);
    const [, gq] = upload(ctx, gv, [N, K], 'bf16', 'gate');
    const [, uq] = upload(ctx, uv, [N, K], 'bf16', 'up');
    const gate = splitWeight(ctx, gv, N, K, 'bf16', [0, 20, 35], 'gate');
    const up = splitWeight(ctx, uv, N, K, 'bf16', [0, 25], 'up');
    const y = ctx.activation([M, N], 'y');
    const plan = matmulGatedPlan(ctx, { x: rows(x), gate, up });
    expect(plan.fused).toBe(false);
    expect(plan.reason).toMatch(/split in different row blocks \(first rows 0, 20, 35 vs 0, 25\)/);
    expect(dispatches(ctx, (rec) => matmulGated(ctx, rec, { x: rows(x), gate, up, act: 'gelu', out: rows(y) }))).toBe(3 + 2 + 1);
    expectClose(await read(ctx, y), reference(xs, gq, uq, null, null, M, N, K, 'gelu'), 1e-4, 1e-4, 'split');
  });

  it('two fallbacks in one step share the scratch and stay correct', async () => {
    const ctx = await gpuContext();
    const [N, K] = [9, 36];
    const p1 = problem(ctx, 1, N, K, 'f32', false, true, 830);
    const p2 = problem(ctx, 1, 3 * N, K, 'f16', true, false, 840);
    const y1 = ctx.activation([1, N], 'y1');
    const y2 = ctx.activation([1, 3 * N], 'y2');
    const rec = ctx.recorder();
    matmulGated(ctx, rec, { x: rows(p1.x), gate: p1.gate, up: p1.up, upBias: p1.ub, act: 'silu', out: rows(y1), variant: 'gemv_splitk' });
    matmulGated(ctx, rec, { x: rows(p2.x), gate: p2.gate, up: p2.up, gateBias: p2.gb, act: 'silu', out: rows(y2), variant: 'gemv_splitk' });
    rec.submit();
    expectClose(await read(ctx, y1), reference(p1.xs, p1.gq, p1.uq, null, p1.ubq, 1, N, K, 'silu'), 1e-4, 1e-4, 'first');
    expectClose(await read(ctx, y2), reference(p2.xs, p2.gq, p2.uq, p2.gbq, null, 1, 3 * N, K, 'silu'), 1e-4, 1e-4, 'second');
  });
});

describe('matmulGated input checks', () => {
  it('names the tensors and shapes that do not fit', async () => {
    const ctx = await gpuContext();
    const p = problem(ctx, 2, 8, 12, 'f32', false, false, 850);
    const y = ctx.activation([2, 8], 'y');
    const [up9] = upload(ctx, randn(9 * 12, 1), [9, 12], 'f32', 'up9');
    const [b7] = upload(ctx, randn(7, 2), [7], 'f32', 'b7');
    const base = { x: rows(p.x), gate: p.gate, up: p.up, act: 'silu' as const, out: rows(y) };
    const rec = ctx.recorder();
    expect(() => matmulGated(ctx, rec, { ...base, up: up9 })).toThrow('matmulGated: up up9 is [9, 12] but gate gate is [8, 12]; both must be [F, D]');
    expect(() => matmulGated(ctx, rec, { ...base, x: { ...rows(p.x), cols: 11 } })).toThrow('matmulGated: x has 11 columns but gate gate expects 12');
    expect(() => matmulGated(ctx, rec, { ...base, out: rows(y, 0, 1) })).toThrow('matmulGated: output y view is 1x8, expected 2x8');
    expect(() => matmulGated(ctx, rec, { ...base, upBias: b7 })).toThrow('matmulGated: up bias b7 has 7 elements, expected 8');
    expect(() => matmulGated(ctx, rec, { ...base, out: { tensor: p.x, rows: 2, cols: 8, offset: 0, stride: 12 } })).toThrow(
      'matmulGated: input x and output x share a buffer',
    );
    expect(rec.dispatchCount).toBe(0);
  });
});

describe('matmulGated plan', () => {
  const cpu: AdapterProfile = { cpu: true, maxInvocations: 256, maxWorkgroupStorage: 32768 };
  const gpu: AdapterProfile = { cpu: false, maxInvocations: 1024, maxWorkgroupStorage: 32768 };

  it('the variant rule of planMatmul; gemv_splitk, and only it, falls back', () => {
    for (const [p, M, N, K] of [[cpu, 1, 4096, 4096], [cpu, 64, 4096, 4096], [gpu, 1, 4096, 4096], [gpu, 64, 4096, 4096], [gpu, 3, 64, 64]] as const) {
      const g = planMatmulGated(p, M, N, K);
      expect(g.variant).toBe(planMatmul(p, M, N, K).variant);
      expect(g.fused).toBe(true);
      expect(g.reason).toMatch(/gate and up in one dispatch$/);
    }
    const thin = planMatmulGated(gpu, 1, 256, 4096);
    expect(thin.variant).toBe('gemv_splitk');
    expect(thin.fused).toBe(false);
    for (const v of ['tiled', 'smem', 'gemv_rows', 'gemv_coop'] as const) expect(planMatmulGated(cpu, 1, 8, 8, v).fused).toBe(true);
    expect(planMatmulGated(cpu, 1, 8, 8, 'gemv_splitk').fused).toBe(false);
  });

  it('gemv_rows: four gate/up pairs per thread, about 16 workgroups', () => {
    expect(GEMV_ROWS_COLS.gated).toBe(4);
    const g = planMatmulGated(cpu, 1, 4096, 4096);
    expect(g.variant).toBe('gemv_rows');
    expect(g.workgroup).toEqual([64, 1]); // 4096 / (4 x 64) = 16 workgroups
    expect(g.reason).toMatch(/four gate\/up pairs/);
    expect(planMatmul(cpu, 1, 4096, 4096).workgroup).toEqual([32, 1]); // eight outputs per thread
    expect(planMatmulGated(cpu, 1, 256, 4096).workgroup).toEqual([16, 1]);
  });

  it('smem: 16 x 16 threads only where the workgroup memory holds the second weight tile', () => {
    expect(planMatmulGated(gpu, 256, 256, 256).workgroup).toEqual([16, 16]);
    const tight = { ...gpu, maxWorkgroupStorage: 8192 };
    expect(planMatmul(tight, 256, 256, 256).workgroup).toEqual([16, 16]);
    expect(planMatmulGated(tight, 256, 256, 256).workgroup).toEqual([8, 8]);
    expect(planMatmulGated({ ...gpu, maxWorkgroupStorage: 12288 }, 256, 256, 256).workgroup).toEqual([16, 16]);
  });
});
