import { describe, expect, it } from 'vitest';
import { add, copyRows, gatedAct } from '../kernels/elementwise.js';
import { rows, type Activation, type RowView } from '../kernels/common.js';
import { GpuContext } from '../src/gpu/context.js';
import { expectClose, gpuContext, randn, read } from './helpers/gpu.js';
import { activation } from './helpers/reference-math.js';

/** The float64 reference of an activation (Hugging Face ACT2FN semantics). */
const refAct = (v: number, a: Activation): number => activation(a)(v);

/** The same device seen with a lower workgroups-per-dimension limit, so the folded dispatch runs cheaply. */
function lowLimit(ctx: GpuContext, max: number): GpuContext {
  return new GpuContext({ ...ctx.gpu, limits: { ...ctx.gpu.limits, maxComputeWorkgroupsPerDimension: max } });
}

/** Values of a view, row-major. */
function gather(data: Float32Array, v: { rows: number; cols: number; offset: number; stride: number }): Float32Array {
  const out = new Float32Array(v.rows * v.cols);
  for (let r = 0; r < v.rows; r++) out.set(data.subarray(v.offset + r * v.stride, v.offset + r * v.stride + v.cols), r * v.cols);
  return out;
}

describe('gatedAct kernel vs float64 reference', () => {
  const cases: [number, number, Activation][] = [
    [1, 1, 'silu'],
    [3, 7, 'silu'],
    [5, 1000, 'gelu'],
    [2, 4099, 'gelu_tanh'],
    [17, 33, 'quick_gelu'],
    [4, 9, 'none'],
  ];
  for (const [R, C, act] of cases) {
    it(`${R}x${C} ${act}`, async () => {
      const ctx = await gpuContext();
      const gs = randn(R * C, 1 + C, 4);
      const us = randn(R * C, 2 + C, 2);
      const g = ctx.uploadF32(gs, [R, C], 'gate');
      const u = ctx.uploadF32(us, [R, C], 'up');
      const o = ctx.activation([R, C], 'act');
      const rec = ctx.recorder();
      gatedAct(ctx, rec, { gate: rows(g), up: rows(u), out: rows(o), act });
      rec.submit();
      const want = Float64Array.from(gs, (v, i) => refAct(v, act) * us[i]);
      expectClose(await read(ctx, o), want, 1e-6, 1e-5, `gatedAct ${act}`);
    });
  }

  it('reads the gate and up halves of one fused row (views with stride)', async () => {
    const ctx = await gpuContext();
    const [R, F] = [6, 37];
    const fs = randn(R * 2 * F, 9, 3);
    const fused = ctx.uploadF32(fs, [R, 2 * F], 'gate_up');
    const o = ctx.activation([R, F], 'act');
    const gate: RowView = { tensor: fused, rows: R, cols: F, offset: 0, stride: 2 * F };
    const up: RowView = { tensor: fused, rows: R, cols: F, offset: F, stride: 2 * F };
    const rec = ctx.recorder();
    gatedAct(ctx, rec, { gate, up, out: rows(o), act: 'silu' });
    rec.submit();
    const gv = gather(fs, gate);
    const uv = gather(fs, up);
    expectClose(await read(ctx, o), Float64Array.from(gv, (v, i) => refAct(v, 'silu') * uv[i]), 1e-6, 1e-5);
  });

  it('refuses mismatched views, naming the tensors', async () => {
    const ctx = await gpuContext();
    const g = ctx.activation([2, 8], 'mlp.gate');
    const u = ctx.activation([2, 9], 'mlp.up');
    const o = ctx.activation([2, 8], 'mlp.act');
    expect(() => gatedAct(ctx, ctx.recorder(), { gate: rows(g), up: rows(u), out: rows(o), act: 'silu' })).toThrow(
      /up mlp.up view is 2x9 but output mlp.act view is 2x8/,
    );
  });
});

describe('add kernel', () => {
  for (const [R, C] of [
    [1, 1],
    [7, 13],
    [3, 4099],
    [300, 257],
  ] as [number, number][]) {
    it(`${R}x${C}`, async () => {
      const ctx = await gpuContext();
      const as = randn(R * C, 3 + R);
      const bs = randn(R * C, 4 + R);
      const [a, b, o] = [ctx.uploadF32(as, [R, C], 'a'), ctx.uploadF32(bs, [R, C], 'b'), ctx.activation([R, C], 'sum')];
      const rec = ctx.recorder();
      add(ctx, rec, { a: rows(a), b: rows(b), out: rows(o) });
      rec.submit();
      expectClose(await read(ctx, o), Float64Array.from(as, (v, i) => v + bs[i]), 1e-7, 1e-7);
    });
  }

  it('adds strided views into a column slice, leaving the rest', async () => {
    const ctx = await gpuContext();
    const [R, C] = [5, 11];
    const as = randn(R * 20, 5);
    const bs = randn(R * 30 + 3, 6);
    const a = ctx.uploadF32(as, [R, 20], 'a');
    const b = ctx.uploadF32(bs, [R * 30 + 3], 'b');
    const o = ctx.uploadF32(new Float32Array(R * 16).fill(-5), [R, 16], 'o');
    const av: RowView = { tensor: a, rows: R, cols: C, offset: 4, stride: 20 };
    const bv: RowView = { tensor: b, rows: R, cols: C, offset: 3, stride: 30 };
    const rec = ctx.recorder();
    add(ctx, rec, { a: av, b: bv, out: { tensor: o, rows: R, cols: C, offset: 5, stride: 16 } });
    rec.submit();
    const got = await read(ctx, o);
    const ag = gather(as, av);
    const bg = gather(bs, bv);
    for (let r = 0; r < R; r++) {
      for (let c = 0; c < 16; c++) {
        const v = got[r * 16 + c];
        if (c < 5) expect(v).toBe(-5);
        else expect(v).toBeCloseTo(ag[r * C + c - 5] + bg[r * C + c - 5], 6);
      }
    }
  });

  it('refuses an output sharing the buffer of an input', async () => {
    const ctx = await gpuContext();
    const h = ctx.activation([2, 4], 'hidden');
    const d = ctx.activation([2, 4], 'delta');
    expect(() => add(ctx, ctx.recorder(), { a: rows(h), b: rows(d), out: rows(h) })).toThrow(/a hidden and output hidden share a buffer/);
  });
});

describe('copyRows kernel', () => {
  it('drops a CLS row', async () => {
    const ctx = await gpuContext();
    const [N, E] = [577, 33];
    const hs = randn(N * E, 7);
    const h = ctx.uploadF32(hs, [N, E], 'vision.h');
    const o = ctx.activation([N - 1, E], 'features');
    const rec = ctx.recorder();
    copyRows(ctx, rec, { src: rows(h, 1), dst: rows(o) });
    rec.submit();
    expectClose(await read(ctx, o), hs.subarray(E), 0);
  });

  it('concatenates layers along columns', async () => {
    const ctx = await gpuContext();
    const [N, E, L] = [9, 1000, 3];
    const layers = [0, 1, 2].map((l) => randn(N * E, 20 + l));
    const ts = layers.map((d, l) => ctx.uploadF32(d, [N, E], `layer${l}`));
    const o = ctx.activation([N, E * L], 'concat');
    const rec = ctx.recorder();
    ts.forEach((t, l) => copyRows(ctx, rec, { src: rows(t), dst: { tensor: o, rows: N, cols: E, offset: l * E, stride: E * L } }));
    rec.submit();
    const got = await read(ctx, o);
    const want = new Float32Array(N * E * L);
    for (let r = 0; r < N; r++) for (let l = 0; l < L; l++) want.set(layers[l].subarray(r * E, (r + 1) * E), r * E * L + l * E);
    expectClose(got, want, 0);
  });

  it('folds a large element count over a 2-D dispatch (limit lowered to 7)', async () => {
    const ctx = lowLimit(await gpuContext(), 7);
    const [R, C] = [97, 101]; // 9797 elements = 39 workgroups -> [7, 6]
    const s = randn(R * (C + 2), 8);
    const src = ctx.uploadF32(s, [R, C + 2], 'src');
    const [ga, gb] = [ctx.uploadF32(randn(R * C, 9), [R, C], 'g'), ctx.uploadF32(randn(R * C, 10), [R, C], 'u')];
    const dst = ctx.activation([R, C], 'dst');
    const sum = ctx.activation([R, C], 'sum');
    const act = ctx.activation([R, C], 'act');
    const rec = ctx.recorder();
    const sv: RowView = { tensor: src, rows: R, cols: C, offset: 1, stride: C + 2 };
    copyRows(ctx, rec, { src: sv, dst: rows(dst) });
    add(ctx, rec, { a: rows(ga), b: rows(gb), out: rows(sum) });
    gatedAct(ctx, rec, { gate: rows(ga), up: rows(gb), out: rows(act), act: 'silu' });
    rec.submit();
    expectClose(await read(ctx, dst), gather(s, sv), 0);
    const [g, u] = [await read(ctx, ga), await read(ctx, gb)];
    expectClose(await read(ctx, sum), Float64Array.from(g, (v, i) => v + u[i]), 1e-7, 1e-7);
    expectClose(await read(ctx, act), Float64Array.from(g, (v, i) => refAct(v, 'silu') * u[i]), 1e-6, 1e-5);
  });

  it('copies more elements than 65535 workgroups of 256 hold (real folded dispatch)', async () => {
    const ctx = await gpuContext();
    const [R, C] = [65535 * 2 + 1, 128]; // 16.8M elements, 65537 workgroups
    const s = new Float32Array(R * C);
    for (let i = 0; i < s.length; i++) s[i] = i + 1;
    const src = ctx.uploadF32(s, [R, C], 'src');
    const dst = ctx.activation([R, C], 'dst');
    const rec = ctx.recorder();
    copyRows(ctx, rec, { src: rows(src), dst: rows(dst) });
    rec.submit();
    const got = await read(ctx, dst);
    let bad = -1;
    for (let i = 0; i < got.length && bad < 0; i++) if (got[i] !== s[i]) bad = i;
    expect(bad).toBe(-1);
  });

  it('refuses a destination view past the end of its tensor', async () => {
    const ctx = await gpuContext();
    const s = ctx.activation([4, 8], 'src');
    const d = ctx.activation([4, 16], 'concat');
    expect(() => copyRows(ctx, ctx.recorder(), { src: rows(s), dst: { tensor: d, rows: 4, cols: 8, offset: 12, stride: 16 } })).toThrow(
      /destination view of concat .* ends at element 68 but the tensor has 64/,
    );
  });
});
