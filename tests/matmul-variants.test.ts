// The matmul variants (tiled, smem, gemv_rows, gemv_coop, gemv_splitk), each forced on this adapter against a
// float64 reference at odd sizes, sizes crossing tiles / workgroups / splits, and weights split in row blocks (how
// a weight larger than one storage binding is held); and the selection rule on made-up adapter profiles, both
// sides of every branch.

import { describe, expect, it } from 'vitest';
import { adapterProfile, GEMV_MAX_ROWS, GEMV_TARGET_WORKGROUPS, matmul, matmulPlan, planMatmul, SMEM_MIN, type AdapterProfile, type MatmulVariant } from '../kernels/matmul.js';
import { rows, type Activation } from '../kernels/common.js';
import { expectClose, gpuContext, randn, read, upload } from './helpers/gpu.js';
import { RowSplitTensor, type DType } from '../src/gpu/tensor.js';
import { decodeToF32 } from '../src/gpu/half.js';
import { matmulReference } from './helpers/reference-math.js';

/** float64 y = act(x W^T + b) + r over x rows [x0, x0+M) of a row-major [*, K] array (the shared reference). */
const reference = (x: Float32Array, w: Float32Array, b: Float32Array | null, r: Float32Array | null, M: number, N: number, K: number, act: Activation) =>
  matmulReference(x, w, b, M, N, K, act, { r });

type Case = [M: number, N: number, K: number, dtype: DType, bias: boolean, residual: boolean, act: Activation];

// Per variant: odd sizes (scalar path: K % 4 != 0), vec4 sizes, and sizes crossing its tile / workgroup edges.
const CASES: Record<MatmulVariant, Case[]> = {
  tiled: [
    [1, 7, 5, 'f32', true, false, 'none'],
    [37, 70, 33, 'bf16', false, true, 'silu'],
    [33, 65, 132, 'f16', true, true, 'gelu_tanh'],
  ],
  smem: [
    [1, 1, 1, 'f32', false, false, 'none'],
    [70, 130, 37, 'f16', true, true, 'silu'], // crosses the 64 x 64 tile in M and N, BK = 16 in K, scalar loads
    [65, 67, 132, 'bf16', true, false, 'quick_gelu'], // vec4 loads, K not a multiple of BK
    [3, 200, 64, 'f32', false, true, 'none'],
    [129, 5, 48, 'f32', true, false, 'gelu_tanh'],
  ],
  gemv_rows: [
    [1, 1, 1, 'f32', false, false, 'none'],
    [1, 257, 5, 'f16', true, false, 'silu'], // 16 threads x 8 columns per workgroup: 257 needs a third, one column in it
    [1, 8201, 8, 'bf16', false, true, 'none'], // 64 threads x 8 columns, 17 workgroups
    [1, 259, 96, 'bf16', true, true, 'none'],
    [3, 66, 132, 'f16', false, true, 'gelu_tanh'],
    [2, 13, 1001, 'f32', true, true, 'quick_gelu'],
  ],
  gemv_coop: [
    [1, 1, 1, 'f32', false, false, 'none'],
    [1, 5, 1001, 'f16', true, false, 'silu'], // K strided over the workgroup several times, scalar loads
    [1, 130, 2052, 'bf16', true, true, 'none'], // 128 threads (K >= 2048), vec4
    [4, 6, 260, 'f32', false, true, 'gelu_tanh'],
  ],
  gemv_splitk: [
    [1, 3, 9, 'f32', false, false, 'none'], // the smallest K that splits
    [1, 5, 1030, 'f16', true, true, 'silu'], // scalar, uneven last split
    [1, 130, 4100, 'bf16', true, false, 'gelu_tanh'],
    [3, 7, 2048, 'f32', true, true, 'quick_gelu'],
  ],
};

describe('matmul variants vs float64 reference (forced on this adapter)', () => {
  for (const [variant, cases] of Object.entries(CASES) as [MatmulVariant, Case[]][]) {
    for (const [M, N, K, dtype, bias, res, act] of cases) {
      it(`${variant} M=${M} N=${N} K=${K} ${dtype} bias=${bias} residual=${res} ${act}`, async () => {
        const ctx = await gpuContext();
        const xs = randn(M * K, 100 + M + K);
        const x = ctx.uploadF32(xs, [M, K], 'x');
        const [w, wq] = upload(ctx, randn(N * K, 200 + N, 0.5), [N, K], dtype, 'w');
        const [b, bq] = bias ? upload(ctx, randn(N, 300 + N), [N], dtype, 'b') : [null, null];
        const rs = res ? randn(M * N, 400) : null;
        const r = rs ? ctx.uploadF32(rs, [M, N], 'r') : null;
        const y = ctx.activation([M, N], 'y');
        const rec = ctx.recorder();
        matmul(ctx, rec, { x: rows(x), w, b, residual: r ? rows(r) : null, out: rows(y), act, variant });
        rec.submit();
        const tol = K > 1000 ? 3e-4 : 1e-4;
        expectClose(await read(ctx, y), reference(xs, wq, bq, rs, M, N, K, act), tol, tol, `${variant} ${M}x${N}x${K}`);
        if (variant === 'gemv_splitk') expect(matmulPlan(ctx, M, N, K, variant).splits).toBeGreaterThan(1);
      });
    }

    it(`${variant}: row views in and out, a weight split in row blocks (larger than one binding)`, async () => {
      const ctx = await gpuContext();
      // x rows 2..2+M of a [7, K] tensor (offset and stride multiples of 4: vec4 path), y columns 3..3+N of [M, 70].
      for (const K of [36, 35]) {
        const [M, N] = [3, 61];
        const xs = randn(7 * K, 500 + K);
        const x = ctx.uploadF32(xs, [7, K], 'x');
        const wv = randn(N * K, 501);
        const [, wq] = upload(ctx, wv, [N, K], 'f16', 'w');
        const starts = [0, 24, 40];
        const parts = starts.map((r0, i) => upload(ctx, wv.subarray(r0 * K, (starts[i + 1] ?? N) * K), [(starts[i + 1] ?? N) - r0, K], 'f16', `w[${r0}..]`)[0]);
        const split = new RowSplitTensor(parts, starts, [N, K], 'f16', 'w');
        const [b, bq] = upload(ctx, randn(N, 502), [N], 'bf16', 'b');
        const rs = randn(M * N, 503);
        const r = ctx.uploadF32(rs, [M, N], 'r');
        const y = ctx.uploadF32(new Float32Array(M * 70).fill(9), [M, 70], 'y');
        const rec = ctx.recorder();
        matmul(ctx, rec, { x: rows(x, 2, M), w: split, b, residual: rows(r), out: { tensor: y, rows: M, cols: N, offset: 3, stride: 70 }, act: 'silu', variant });
        rec.submit();
        const got = await read(ctx, y);
        const want = reference(xs.subarray(2 * K), wq, bq, rs, M, N, K, 'silu');
        for (let m = 0; m < M; m++) {
          expect(got[m * 70 + 2]).toBe(9);
          expect(got[m * 70 + 3 + N]).toBe(9);
          expectClose(got.subarray(m * 70 + 3, m * 70 + 3 + N), want.subarray(m * N, m * N + N), 1e-4, 1e-4, `${variant} K=${K} row ${m}`);
        }
      }
    });
  }

  it('binds only the rows of x, the residual and the output it touches (one row of a KV cache)', async () => {
    const ctx = await gpuContext();
    const [N, K, rowsInCache] = [48, 36, 300];
    const xs = randn(10 * K, 700);
    const x = ctx.uploadF32(xs, [10, K], 'x');
    const [w, wq] = upload(ctx, randn(N * K, 701), [N, K], 'f16', 'w');
    const cache = ctx.uploadF32(new Float32Array(rowsInCache * N).fill(5), [rowsInCache, N], 'k_cache');
    const rs = randn(20 * N, 702);
    const r = ctx.uploadF32(rs, [20, N], 'r');
    const c = ctx.countWork();
    try {
      for (const variant of ['tiled', 'smem', 'gemv_rows', 'gemv_coop', 'gemv_splitk'] as MatmulVariant[]) {
        const before = c.snapshot();
        const rec = ctx.recorder();
        matmul(ctx, rec, { x: rows(x, 7, 1), w, residual: rows(r, 13, 1), out: rows(cache, 157, 1), variant });
        rec.submit();
        const d = c.since(before);
        const slack = ctx.limits.minStorageBufferOffsetAlignment + 16;
        for (const [buf, bytes] of [[cache.buffer, N * 4], [x.buffer, K * 4], [r.buffer, N * 4]] as const) {
          const bound = d.bound.get(buf)!;
          expect(bound, `${variant} ${buf.label}`).toBeGreaterThanOrEqual(bytes);
          expect(bound, `${variant} ${buf.label}`).toBeLessThanOrEqual(bytes + slack);
        }
        const got = await read(ctx, cache);
        const want = reference(xs.subarray(7 * K), wq, null, rs.subarray(13 * N), 1, N, K, 'none');
        expectClose(got.subarray(157 * N, 158 * N), want, 1e-4, 1e-4, variant);
        expect(got[157 * N - 1]).toBe(5);
        expect(got[158 * N]).toBe(5);
      }
    } finally {
      ctx.counters = null;
    }
  });

  it('two split-K matmuls in one step share the scratch and stay correct', async () => {
    const ctx = await gpuContext();
    const [N, K] = [9, 2048];
    const xs = randn(K, 600);
    const x = ctx.uploadF32(xs, [1, K], 'x');
    const [w1, w1q] = upload(ctx, randn(N * K, 601), [N, K], 'f32', 'w1');
    const [w2, w2q] = upload(ctx, randn(3 * N * K, 602), [3 * N, K], 'f16', 'w2');
    const y1 = ctx.activation([1, N], 'y1');
    const y2 = ctx.activation([1, 3 * N], 'y2');
    const rec = ctx.recorder();
    matmul(ctx, rec, { x: rows(x), w: w1, out: rows(y1), variant: 'gemv_splitk' });
    matmul(ctx, rec, { x: rows(x), w: w2, out: rows(y2), variant: 'gemv_splitk' });
    rec.submit();
    expectClose(await read(ctx, y1), reference(xs, w1q, null, null, 1, N, K, 'none'), 3e-4, 3e-4, 'first');
    expectClose(await read(ctx, y2), reference(xs, w2q, null, null, 1, 3 * N, K, 'none'), 3e-4, 3e-4, 'second');
  });
});

describe('f16 weights: every half through each variant', () => {
  // Every finite half (63488 patterns: both signs, zeros, subnormals, the largest normals) as W[n][k] with K = 4,
  // read back through x = the identity, so y[m][n] = W[n][m] exactly: each variant's vec4 path. (A cheaper
  // bit-moving conversion for CPU adapters was measured and dropped: SwiftShader flushes f32 denormals, so only a
  // branchy or select-heavy version is exact for subnormal halves, and those were no faster than unpack2x16float.)
  const finite: number[] = [];
  for (let h = 0; h < 65536; h++) if ((h & 0x7c00) !== 0x7c00) finite.push(h);
  const halves = new Uint16Array(finite);
  const N = halves.length / 4;
  for (const variant of ['tiled', 'smem', 'gemv_rows', 'gemv_coop', 'gemv_splitk'] as MatmulVariant[]) {
    it(`${variant}: every finite half exactly`, async () => {
      const ctx = await gpuContext();
      const bytes = new Uint8Array(halves.buffer.slice(0));
      const want = decodeToF32(bytes, 'f16');
      const w = ctx.uploadTensor(bytes, [N, 4], 'f16', 'w');
      const M = variant.startsWith('gemv') ? 1 : 4;
      const eye = new Float32Array(M * 4);
      for (let m = 0; m < M; m++) eye[m * 4 + m] = 1;
      const x = ctx.uploadF32(eye, [M, 4], 'x');
      const y = ctx.activation([M, N], 'y');
      const rec = ctx.recorder();
      matmul(ctx, rec, { x: rows(x), w, out: rows(y), variant });
      rec.submit();
      const got = await read(ctx, y);
      for (let m = 0; m < M; m++)
        for (let n = 0; n < N; n++) {
          const g = got[m * N + n];
          const e = want[n * 4 + m];
          if (g !== e) throw new Error(`${variant}: half 0x${halves[n * 4 + m].toString(16)} read as ${g}, expected ${e}`);
        }
    });
  }

  it('inf and NaN halves propagate', async () => {
    const ctx = await gpuContext();
    // Rows: +inf, -inf, NaN, and 65504 (the largest half) times x = 3e4.
    const h = new Uint16Array([0x7c00, 0x3c00, 0x3c00, 0x3c00, 0xfc00, 0x3c00, 0x3c00, 0x3c00, 0x7e01, 0, 0, 0, 0x7bff, 0x7bff, 0, 0x8001]);
    const w = ctx.uploadTensor(new Uint8Array(h.buffer), [4, 4], 'f16', 'w');
    const x = ctx.uploadF32(new Float32Array([3e4, 1, 2, -1]), [1, 4], 'x');
    for (const variant of ['tiled', 'smem', 'gemv_rows', 'gemv_coop', 'gemv_splitk'] as MatmulVariant[]) {
      const y = ctx.activation([1, 4], 'y');
      const rec = ctx.recorder();
      matmul(ctx, rec, { x: rows(x), w, out: rows(y), variant });
      rec.submit();
      const g = await read(ctx, y);
      expect(g[0], variant).toBe(Infinity);
      expect(g[1], variant).toBe(-Infinity);
      expect(Number.isNaN(g[2]), variant).toBe(true);
      expect(Math.abs(g[3] / (65504 * 3e4 + 65504 + 2 ** -24) - 1), variant).toBeLessThan(1e-6);
    }
  });
});

describe('matmul variant selection', () => {
  const cpu: AdapterProfile = { cpu: true, maxInvocations: 256, maxWorkgroupStorage: 32768 };
  const gpu: AdapterProfile = { cpu: false, maxInvocations: 1024, maxWorkgroupStorage: 32768 };
  const small: AdapterProfile = { cpu: false, maxInvocations: 128, maxWorkgroupStorage: 16384 };

  it('this adapter is profiled from its name and limits', async () => {
    const ctx = await gpuContext();
    const p = adapterProfile(ctx);
    expect(p.cpu).toBe(/swiftshader/i.test(ctx.gpu.adapterName) || p.cpu);
    expect(p.maxInvocations).toBe(ctx.limits.maxComputeInvocationsPerWorkgroup);
    expect(p.maxWorkgroupStorage).toBe(ctx.limits.maxComputeWorkgroupStorageSize);
  });

  it('decode rows: gemv_rows on a CPU adapter up to its row limit, register tiles above', () => {
    expect(planMatmul(cpu, 1, 4096, 4096).variant).toBe('gemv_rows');
    expect(planMatmul(cpu, GEMV_MAX_ROWS.cpu, 4096, 4096).variant).toBe('gemv_rows');
    expect(planMatmul(cpu, GEMV_MAX_ROWS.cpu + 1, 4096, 4096).variant).toBe('tiled');
    expect(planMatmul(cpu, 1, 256, 4096).variant).toBe('gemv_rows'); // never splits K on a CPU
  });

  it('decode rows on a GPU: coalesced GEMV, split K when there are too few workgroups', () => {
    const wide = planMatmul(gpu, 1, 4096, 4096);
    expect(wide.variant).toBe('gemv_coop');
    expect(wide.splits).toBe(1);
    expect(wide.workgroup).toEqual([128, 1]); // K >= 2048
    const thin = planMatmul(gpu, 1, 256, 4096);
    expect(thin.variant).toBe('gemv_splitk');
    expect(thin.splits).toBeGreaterThan(1);
    expect(thin.splits * Math.ceil(256 / 4)).toBeLessThanOrEqual(GEMV_TARGET_WORKGROUPS);
    expect(thin.kChunk % 4).toBe(0);
    expect(thin.kChunk * thin.splits).toBeGreaterThanOrEqual(4096);
    // Too short a K to split (each split keeps four loads per thread): no split even with few workgroups.
    expect(planMatmul(gpu, 1, 256, 1024).variant).toBe('gemv_coop');
    expect(planMatmul(gpu, 1, 256, 1024).workgroup).toEqual([64, 1]);
    expect(planMatmul(gpu, GEMV_MAX_ROWS.gpu, 4096, 4096).variant).toBe('gemv_coop');
    // More four-column workgroups than one dispatch dimension holds: register tiles instead.
    expect(planMatmul({ ...gpu, maxWorkgroups: 1000 }, 1, 4000, 4096).variant).toBe('gemv_coop');
    expect(planMatmul({ ...gpu, maxWorkgroups: 1000 }, 1, 4004, 4096).variant).toBe('tiled');
    expect(planMatmul(gpu, GEMV_MAX_ROWS.gpu + 1, 4096, 4096).variant).toBe('tiled'); // below SMEM_MIN rows
  });

  it('prefill: smem tiles on a GPU from SMEM_MIN rows and columns, register tiles on a CPU or below', () => {
    expect(planMatmul(gpu, SMEM_MIN, SMEM_MIN, 64).variant).toBe('smem');
    expect(planMatmul(gpu, SMEM_MIN - 1, 4096, 64).variant).toBe('tiled');
    expect(planMatmul(gpu, 1024, SMEM_MIN - 1, 64).variant).toBe('tiled');
    expect(planMatmul(cpu, 1024, 4096, 4096).variant).toBe('tiled');
    expect(planMatmul(cpu, 1024, 4096, 4096).workgroup).toEqual([8, 8]);
    expect(planMatmul(cpu, 3, 4096, 4096).workgroup).toEqual([64, 1]);
  });

  it('workgroup sizes follow the adapter limits', () => {
    expect(planMatmul(gpu, 256, 256, 256).workgroup).toEqual([16, 16]);
    expect(planMatmul(small, 256, 256, 256).workgroup).toEqual([8, 8]); // 128 invocations: no 16 x 16
    expect(planMatmul({ ...gpu, maxWorkgroupStorage: 4096 }, 256, 256, 256).workgroup).toEqual([8, 8]);
    expect(planMatmul({ ...gpu, maxInvocations: 64 }, 1, 4096, 4096).workgroup).toEqual([64, 1]);
    // gemv_rows: about 16 workgroups of 16..64 threads (eight columns each), never above the limit.
    expect(planMatmul(cpu, 1, 4096, 4096).workgroup).toEqual([32, 1]);
    expect(planMatmul(cpu, 1, 256, 4096).workgroup).toEqual([16, 1]);
    expect(planMatmul(cpu, 1, 1 << 16, 256).workgroup).toEqual([64, 1]);
    expect(planMatmul({ ...cpu, maxInvocations: 8 }, 1, 4096, 4096).workgroup).toEqual([8, 1]);
  });

  it('weight reads per call: once per row of x for the GEMVs, once per row block for the tiles', () => {
    expect(planMatmul(cpu, 1, 4096, 4096).weightReads).toBe(1);
    expect(planMatmul(gpu, 1, 256, 4096).weightReads).toBe(1);
    expect(planMatmul(gpu, 3, 4096, 4096).weightReads).toBe(3);
    expect(planMatmul(cpu, 64, 4096, 4096).weightReads).toBe(2); // 8 x 8 threads x 4 rows = 32 rows per block
    expect(planMatmul(gpu, 64, 4096, 4096).weightReads).toBe(1); // 16 x 16 threads x 4 rows = 64
    expect(planMatmul(gpu, 65, 4096, 4096).weightReads).toBe(2);
  });

  it('a forced variant is kept; forced split-K splits whenever K allows', () => {
    for (const v of ['tiled', 'smem', 'gemv_rows', 'gemv_coop', 'gemv_splitk'] as const) expect(planMatmul(cpu, 1, 8, 8, v).variant).toBe(v);
    expect(planMatmul(cpu, 1, 4096, 64, 'gemv_splitk').splits).toBe(2);
    expect(planMatmul(cpu, 1, 4096, 4, 'gemv_splitk').splits).toBe(1);
  });
});
