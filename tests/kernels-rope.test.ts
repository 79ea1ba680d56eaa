import { describe, expect, it } from 'vitest';
import { rope } from '../kernels/rope.js';
import { inverseFrequencies, rotaryTable } from '../src/models/rotary.js';
import { GpuContext } from '../src/gpu/context.js';
import { expectClose, gpuContext, randn, read } from './helpers/gpu.js';

/** The same device seen with a lower workgroups-per-dimension limit, so the folded dispatch runs cheaply. */
function lowLimit(ctx: GpuContext, max: number): GpuContext {
  return new GpuContext({ ...ctx.gpu, limits: { ...ctx.gpu.limits, maxComputeWorkgroupsPerDimension: max } });
}

interface Case {
  rows: number;
  heads: number;
  headDim: number;
  rotaryDim?: number;
  rowStride?: number;
  rowOffset?: number;
  colOffset?: number;
  totalRows?: number;
}

/**
 * float64 reference: for each rotated row and head, x[:rd] = x[:rd] * cat(cos, cos) + rotate_half(x[:rd]) * cat(sin, sin)
 * with rotate_half(v) = cat(-v[half:], v[:half]); everything else unchanged.
 */
function refRope(c: Case, xs: Float32Array, angles: (r: number, j: number) => [number, number]): Float64Array {
  const out = Float64Array.from(xs);
  const rd = c.rotaryDim ?? c.headDim;
  const half = rd / 2;
  const stride = c.rowStride ?? c.heads * c.headDim;
  for (let r = 0; r < c.rows; r++)
    for (let h = 0; h < c.heads; h++) {
      const base = (c.colOffset ?? 0) + ((c.rowOffset ?? 0) + r) * stride + h * c.headDim;
      const v = Array.from(xs.subarray(base, base + rd));
      const rot = [...v.slice(half).map((e) => -e), ...v.slice(0, half)];
      for (let d = 0; d < rd; d++) {
        const [cos, sin] = angles(r, d % half);
        out[base + d] = v[d] * cos + rot[d] * sin;
      }
    }
  return out;
}

async function runCase(ctx: GpuContext, c: Case, seed: number) {
  const rd = c.rotaryDim ?? c.headDim;
  const stride = c.rowStride ?? c.heads * c.headDim;
  const totalRows = c.totalRows ?? (c.rowOffset ?? 0) + c.rows;
  const xs = randn(totalRows * stride + (c.colOffset ?? 0), seed);
  const x = ctx.uploadF32(xs, [xs.length], 'q');
  const positions = Array.from({ length: c.rows }, (_, r) => 3 * r + 1);
  const tab = rotaryTable(positions, inverseFrequencies(rd, 10000));
  const table = ctx.uploadF32(tab, [c.rows, rd / 2, 2], 'rope.table');
  const rec = ctx.recorder();
  rope(ctx, rec, { ...c, x, table });
  rec.submit();
  const got = await read(ctx, x);
  const want = refRope(c, xs, (r, j) => [tab[(r * (rd / 2) + j) * 2], tab[(r * (rd / 2) + j) * 2 + 1]]);
  expectClose(got, want, 1e-6, 1e-6, 'rope');
  return { got, xs, positions };
}

describe('rotary tables (CPU)', () => {
  it('inverse frequencies are 1 / theta^(2i/dim) in float64', () => {
    const f = inverseFrequencies(128, 500000);
    expect(f.length).toBe(64);
    expect(f[0]).toBe(1);
    for (let i = 0; i < 64; i++) expect(f[i]).toBeCloseTo(Math.exp(-((2 * i) / 128) * Math.log(500000)), 14);
    expect(() => inverseFrequencies(7, 10000)).toThrow(/even/);
  });

  it('the table holds cos / sin of pos * invFreq as [rows, half, 2]', () => {
    const inv = inverseFrequencies(6, 10000);
    const t = rotaryTable([0, 5, 1234], inv);
    expect(t.length).toBe(3 * 3 * 2);
    for (const [r, pos] of [0, 5, 1234].entries())
      for (let j = 0; j < 3; j++) {
        expect(t[(r * 3 + j) * 2]).toBe(Math.fround(Math.cos(pos * inv[j])));
        expect(t[(r * 3 + j) * 2 + 1]).toBe(Math.fround(Math.sin(pos * inv[j])));
      }
  });
});

describe('rope kernel vs float64 rotate_half reference', () => {
  const cases: Case[] = [
    { rows: 1, heads: 1, headDim: 2 },
    { rows: 5, heads: 3, headDim: 8 },
    { rows: 33, heads: 4, headDim: 128 }, // 8448 rotations: many workgroups
    { rows: 7, heads: 2, headDim: 64, rotaryDim: 32 }, // partial rotary
    { rows: 3, heads: 1, headDim: 4100 }, // one head wider than a workgroup
    { rows: 4, heads: 2, headDim: 6, rowStride: 37, rowOffset: 2, colOffset: 12, totalRows: 8 }, // K of a fused row, row subset
    { rows: 9, heads: 5, headDim: 10, rotaryDim: 4, rowStride: 53, colOffset: 1 },
    { rows: 1, heads: 3, headDim: 6, rowOffset: 95, totalRows: 200 }, // a decode step's row of a KV cache, offset not aligned
    { rows: 2, heads: 2, headDim: 8, rowOffset: 64, totalRows: 100 }, // starts on an aligned offset
  ];
  for (const c of cases) {
    it(JSON.stringify(c), async () => {
      await runCase(await gpuContext(), c, 7 + c.rows + c.headDim);
    });
  }

  it('binds only the rotated rows (a decode step does not bind the whole K cache)', async () => {
    const ctx = await gpuContext();
    const c = ctx.countWork();
    try {
      const before = c.snapshot();
      const { got, xs } = await runCase(ctx, { rows: 1, heads: 4, headDim: 16, rowOffset: 77, totalRows: 300 }, 5);
      const d = c.since(before);
      const [x] = [...d.kernels.get('rope')!.bound.entries()].filter(([b]) => b.size === xs.length * 4).map(([, n]) => n);
      expect(x).toBeGreaterThanOrEqual(64 * 4);
      expect(x).toBeLessThanOrEqual(64 * 4 + ctx.limits.minStorageBufferOffsetAlignment + 16);
      // Rows outside the rotated one are untouched.
      expect(Array.from(got.subarray(0, 77 * 64))).toEqual(Array.from(xs.subarray(0, 77 * 64)));
    } finally {
      ctx.counters = null;
    }
  });

  it('folds a large rotation count over a 2-D dispatch (limit lowered to 13)', async () => {
    // 50 rows x 7 heads x 16 pairs = 5600 rotations = 22 workgroups of 256 -> [11, 2]
    await runCase(lowLimit(await gpuContext(), 13), { rows: 50, heads: 7, headDim: 32 }, 99);
  });

  it('matches a direct float64 rotation at the given positions (table from rotary.ts)', async () => {
    const ctx = await gpuContext();
    const c: Case = { rows: 6, heads: 3, headDim: 16, rotaryDim: 12 };
    const inv = inverseFrequencies(12, 10000);
    const { got, xs, positions } = await runCase(ctx, c, 5);
    const want = refRope(c, xs, (r, j) => [Math.cos(positions[r] * inv[j]), Math.sin(positions[r] * inv[j])]);
    expectClose(got, want, 2e-6, 2e-6, 'rope vs float64 angles');
  });

  it('uses table rows from tableRow', async () => {
    const ctx = await gpuContext();
    const inv = inverseFrequencies(4, 100);
    const tab = rotaryTable([0, 1, 2, 3, 4, 5, 6], inv);
    const table = ctx.uploadF32(tab, [7, 2, 2], 'table');
    const xs = randn(2 * 4, 3);
    const x = ctx.uploadF32(xs, [2, 4], 'k');
    const rec = ctx.recorder();
    rope(ctx, rec, { x, rows: 2, heads: 1, headDim: 4, table, tableRow: 5 });
    rec.submit();
    const want = refRope({ rows: 2, heads: 1, headDim: 4 }, xs, (r, j) => [Math.cos((5 + r) * inv[j]), Math.sin((5 + r) * inv[j])]);
    expectClose(await read(ctx, x), want, 2e-6, 2e-6);
  });

  // `also`: a second tensor's rows in the same dispatch (a decoder's q rows and its K-cache rows at the step's
  // positions): its own heads and view, the same rows, table and rotary dims; both against the reference.
  const pairs: [Case, Case][] = [
    [{ rows: 1, heads: 4, headDim: 16 }, { rows: 1, heads: 2, headDim: 16, rowOffset: 37, totalRows: 60 }], // decode, GQA
    [{ rows: 5, heads: 3, headDim: 8, rotaryDim: 4 }, { rows: 5, heads: 1, headDim: 8, rotaryDim: 4, rowOffset: 2, totalRows: 9 }], // partial rotary
    [{ rows: 33, heads: 4, headDim: 64 }, { rows: 33, heads: 4, headDim: 64, rowStride: 300, colOffset: 7, rowOffset: 1, totalRows: 40 }], // many workgroups, a strided view
    [{ rows: 2, heads: 1, headDim: 2 }, { rows: 2, heads: 5, headDim: 2 }], // the second larger than the first
  ];
  for (const [a, b] of pairs) {
    it(`two tensors in one dispatch: ${JSON.stringify(a)} + ${JSON.stringify(b)}`, async () => {
      const ctx = await gpuContext();
      const rd = a.rotaryDim ?? a.headDim;
      const make = (c: Case, seed: number, label: string) => {
        const stride = c.rowStride ?? c.heads * c.headDim;
        const xs = randn(((c.totalRows ?? (c.rowOffset ?? 0) + c.rows) * stride) + (c.colOffset ?? 0), seed);
        return { xs, x: ctx.uploadF32(xs, [xs.length], label) };
      };
      const q = make(a, 21 + a.rows, 'q');
      const k = make(b, 22 + b.rows, 'k_cache');
      const tab = rotaryTable(Array.from({ length: a.rows }, (_, r) => 5 * r + 2), inverseFrequencies(rd, 10000));
      const table = ctx.uploadF32(tab, [a.rows, rd / 2, 2], 'rope.table');
      const angles = (r: number, j: number): [number, number] => [tab[(r * (rd / 2) + j) * 2], tab[(r * (rd / 2) + j) * 2 + 1]];
      const c = ctx.countWork();
      try {
        const before = c.snapshot();
        const rec = ctx.recorder();
        rope(ctx, rec, { ...a, x: q.x, table, also: { x: k.x, heads: b.heads, rowOffset: b.rowOffset, rowStride: b.rowStride, colOffset: b.colOffset } });
        rec.submit();
        expect(c.since(before).dispatches).toBe(1);
      } finally {
        ctx.counters = null;
      }
      expectClose(await read(ctx, q.x), refRope(a, q.xs, angles), 1e-6, 1e-6, 'first tensor');
      expectClose(await read(ctx, k.x), refRope(b, k.xs, angles), 1e-6, 1e-6, 'second tensor');
    });
  }

  it('refuses a second tensor in the same buffer or with a view past its end, naming it', async () => {
    const ctx = await gpuContext();
    const x = ctx.activation([4, 16], 'q');
    const k = ctx.activation([6, 8], 'k_cache');
    const table = ctx.activation([4, 4, 2], 'cos_sin');
    expect(() => rope(ctx, ctx.recorder(), { x, rows: 4, heads: 2, headDim: 8, table, also: { x, heads: 2 } })).toThrow(/must not share a buffer/);
    expect(() => rope(ctx, ctx.recorder(), { x, rows: 4, heads: 2, headDim: 8, table, also: { x: k, heads: 1, rowOffset: 3 } })).toThrow(
      /end at element 56 but k_cache \[6, 8\] has 48/,
    );
  });

  it('refuses a table that does not match rotaryDim, naming it', async () => {
    const ctx = await gpuContext();
    const x = ctx.activation([4, 2 * 8], 'q');
    const table = ctx.activation([4, 3, 2], 'cos_sin');
    expect(() => rope(ctx, ctx.recorder(), { x, rows: 4, heads: 2, headDim: 8, table })).toThrow(
      /table cos_sin \[4, 3, 2\] is not \[rows, 4, 2\] for rotaryDim 8/,
    );
    const t4 = ctx.activation([4, 4, 2], 't4');
    expect(() => rope(ctx, ctx.recorder(), { x, rows: 4, rowOffset: 1, heads: 2, headDim: 8, table: t4 })).toThrow(
      /end at element 80 but q \[4, 16\] has 64/,
    );
  });
});
