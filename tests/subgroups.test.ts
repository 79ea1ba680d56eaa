// The kernels' subgroup forms (shaders/workgroup.wgsl's workgroup_sum in norm, argmax in reduce) against the float64
// references and against their plain forms on the same device, and how a context chooses between them.
// The subgroup tests need an adapter with the 'subgroups' feature (SwiftShader has it, with 4 lanes) and skip
// without one; the selection tests run everywhere.

import { describe, expect, it } from 'vitest';
import { layerNorm, rmsNorm } from '../kernels/norm.js';
import { argmax } from '../kernels/reduce.js';
import { rows } from '../kernels/common.js';
import { acquireGpu, type Gpu } from '../src/gpu/device.js';
import { GpuContext, subgroupsUsable } from '../src/gpu/context.js';
import type { DType, Tensor } from '../src/gpu/tensor.js';
import { expectClose, gpuContext, randn, read, upload } from './helpers/gpu.js';
import { argmax as refArgmax, layerNorm as refLayerNorm, rmsNorm as refRmsNorm } from './helpers/reference-math.js';

const shared = await gpuContext();
/** The same device seen by a context that uses subgroups where it can, and by one that never does. */
const sg = new GpuContext(shared.gpu, { subgroups: true });
const plain = new GpuContext(shared.gpu, { subgroups: false });
const skip = !sg.subgroups;
const why = skip ? ` (skipped: ${shared.gpu.features.has('subgroups') ? "WGSL lacks 'subgroup_id'" : "no 'subgroups' feature"})` : '';

/**
 * Column counts around the workgroup choices (normWorkgroup: 64 threads up to 1024 columns, 256 above; argmax 256)
 * and the subgroup slots: fewer columns than threads, one past a multiple, the largest of each size.
 */
const COLS = [1, 3, 17, 64, 65, 1000, 1024, 1025, 4097];
const DTYPES: DType[] = ['f32', 'f16', 'bf16'];

/** Run one launcher call on `ctx`, return its output and how many of its dispatches were subgroup forms. */
async function runOn(ctx: GpuContext, out: Tensor, record: (ctx: GpuContext, rec: ReturnType<GpuContext['recorder']>) => void) {
  const c = ctx.countWork();
  const before = c.snapshot();
  const rec = ctx.recorder();
  record(ctx, rec);
  rec.submit();
  const y = await read(ctx, out);
  return { y, subgroupDispatches: c.since(before).subgroupDispatches, dispatches: c.since(before).dispatches };
}

/** |a - b| <= 1e-5 relative, elementwise with a floor at 1e-5 of the largest |b| (outputs that are almost 0). */
function expectSameWithin(got: Float32Array, want: Float32Array, what: string) {
  let scale = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  expectClose(got, want, 1e-5 * scale, 1e-5, what);
}

describe(`norm kernels: subgroup form${why}`, () => {
  COLS.forEach((D, i) => {
    const dtype = DTYPES[i % 3];
    const R = 3;
    it.skipIf(skip)(`rmsNorm D=${D} ${dtype}: vs float64 and vs the plain form`, async () => {
      const xs = randn(R * D, 100 + D, 3);
      const x = sg.uploadF32(xs, [R, D], 'x');
      const [w, wq] = upload(sg, randn(D, 200 + D), [D], dtype, 'norm.weight');
      const out = sg.activation([R, D], 'y');
      const call = (ctx: GpuContext, rec: ReturnType<GpuContext['recorder']>) => rmsNorm(ctx, rec, { x: rows(x), w, eps: 1e-6, out: rows(out) });
      const a = await runOn(sg, out, call);
      const b = await runOn(plain, out, call);
      expect([a.subgroupDispatches, a.dispatches, b.subgroupDispatches, b.dispatches]).toEqual([1, 1, 0, 1]);
      expectClose(a.y, refRmsNorm(Float64Array.from(xs), D, Float64Array.from(wq), 1e-6), 1e-5, 1e-5, 'rmsNorm subgroup vs float64');
      expectSameWithin(a.y, b.y, 'rmsNorm subgroup vs plain');
    });
  });

  COLS.forEach((D, i) => {
    const dtype = DTYPES[(i + 1) % 3];
    const bias = i % 2 === 0;
    // Every other case shifts the row by a mean far above its spread: the mean must come out exact enough that
    // the centred values keep their digits (the second sum reads the first's result).
    const shift = i % 2 === 1 ? 50 : 0;
    const R = 4;
    it.skipIf(skip)(`layerNorm D=${D} ${dtype} bias=${bias}${shift ? ` mean~${shift}` : ''}: vs float64 and vs the plain form`, async () => {
      const xs = randn(R * D, 300 + D, 2);
      if (shift) for (let k = 0; k < xs.length; k++) xs[k] += shift;
      const x = sg.uploadF32(xs, [R, D], 'x');
      const [w, wq] = upload(sg, randn(D, 400 + D), [D], dtype, 'ln.weight');
      const [b, bq] = bias ? upload(sg, randn(D, 500 + D), [D], dtype, 'ln.bias') : [null, new Float32Array(D)];
      const out = sg.activation([R, D], 'y');
      const call = (ctx: GpuContext, rec: ReturnType<GpuContext['recorder']>) => layerNorm(ctx, rec, { x: rows(x), w, b, eps: 1e-5, out: rows(out) });
      const a = await runOn(sg, out, call);
      const p = await runOn(plain, out, call);
      expect([a.subgroupDispatches, p.subgroupDispatches]).toEqual([1, 0]);
      const want = refLayerNorm(Float64Array.from(xs), D, Float64Array.from(wq), Float64Array.from(bq), 1e-5);
      expectClose(a.y, want, 2e-5, 2e-5, 'layerNorm subgroup vs float64');
      expectSameWithin(a.y, p.y, 'layerNorm subgroup vs plain');
    });
  });

  it.skipIf(skip)('many rows in one dispatch: every workgroup reduces its own row', async () => {
    const [R, D] = [257, 300];
    const xs = randn(R * D, 7, 1);
    for (let r = 0; r < R; r++) for (let c = 0; c < D; c++) xs[r * D + c] *= 1 + r; // rows of different scales
    const x = sg.uploadF32(xs, [R, D], 'x');
    const [w, wq] = upload(sg, randn(D, 8), [D], 'bf16', 'norm.weight');
    const out = sg.activation([R, D], 'y');
    const a = await runOn(sg, out, (ctx, rec) => rmsNorm(ctx, rec, { x: rows(x), w, eps: 1e-6, out: rows(out) }));
    expect(a.subgroupDispatches).toBe(1);
    expectClose(a.y, refRmsNorm(Float64Array.from(xs), D, Float64Array.from(wq), 1e-6), 1e-5, 1e-5, 'rmsNorm');
  });
});

describe(`argmax: subgroup form${why}`, () => {
  /** argmax of each row of `values` ([R, C]) on `ctx`, and the subgroup dispatches it made. */
  async function argmaxOn(ctx: GpuContext, values: Float32Array, R: number) {
    const C = values.length / R;
    const x = ctx.uploadF32(values, [R, C], 'logits');
    const out = ctx.activation([R], 'ids');
    const r = await runOn(ctx, out, (c, rec) => argmax(c, rec, { x: rows(x), out: out.buffer }));
    return { ids: Array.from(new Uint32Array(r.y.buffer, r.y.byteOffset, R)), subgroupDispatches: r.subgroupDispatches };
  }
  function refRows(values: Float32Array, R: number): number[] {
    const C = values.length / R;
    return Array.from({ length: R }, (_, r) => refArgmax(values.subarray(r * C, (r + 1) * C)));
  }

  for (const C of [...COLS, 255, 256, 257, 32064, 151937]) {
    it.skipIf(skip)(`C=${C}: the same index as the plain form and the reference`, async () => {
      const R = C > 10000 ? 1 : 3;
      const v = randn(R * C, 600 + C, 10);
      const a = await argmaxOn(sg, v, R);
      const p = await argmaxOn(plain, v, R);
      expect([a.subgroupDispatches, p.subgroupDispatches]).toEqual([1, 0]);
      expect(a.ids).toEqual(refRows(v, R));
      expect(a.ids).toEqual(p.ids);
    });
  }

  it.skipIf(skip)('ties (lowest index, within a subgroup and across subgroups), NaN and -0', async () => {
    const C = 1031;
    const cases: Float32Array[] = [];
    // The maximum twice: in neighbouring threads (one subgroup), 64 threads apart (other subgroups), and in
    // one thread's stride (256 apart).
    for (const pair of [[5, 6], [6, 5], [3, 67], [700, 444], [257, 513], [1030, 774]]) {
      const v = randn(C, pair[0] * 7 + pair[1], 1);
      for (const i of pair) v[i] = 4;
      cases.push(v);
    }
    cases.push(new Float32Array(C).fill(3)); // all equal: index 0
    const nan = randn(C, 9, 1);
    nan[0] = NaN;
    nan[300] = NaN;
    cases.push(nan, new Float32Array(C).fill(NaN)); // NaN never wins; all NaN: index 0
    cases.push(new Float32Array([-1, -0, 0, -0.5])); // -0 == +0: the first zero
    const empty = new Float32Array(C).fill(-Infinity);
    empty[1000] = -3e38; // one finite value, in a thread whose subgroup neighbours hold -inf
    cases.push(empty);
    for (const v of cases) {
      const a = await argmaxOn(sg, v, 1);
      expect(a.ids).toEqual([refArgmax(v)]);
      expect(a.ids).toEqual((await argmaxOn(plain, v, 1)).ids);
    }
  });
});

describe('subgroup selection', () => {
  /** A Gpu as far as subgroupsUsable looks. */
  const gpuWith = (features: string[], wgsl: string[]) => ({ features: new Set(features), wgslFeatures: new Set(wgsl) });

  it('uses subgroups only with the feature, the subgroup_id builtin, and not turned off', () => {
    expect(subgroupsUsable(gpuWith(['subgroups'], ['subgroup_id']), true)).toBe(true);
    expect(subgroupsUsable(gpuWith(['subgroups'], ['subgroup_id']), false)).toBe(false);
    expect(subgroupsUsable(gpuWith([], ['subgroup_id']), true)).toBe(false);
    expect(subgroupsUsable(gpuWith(['shader-f16'], ['subgroup_id']), true)).toBe(false);
    expect(subgroupsUsable(gpuWith(['subgroups'], []), true)).toBe(false);
  });

  it('a context follows the device, ContextOptions.subgroups and VLMSCOPE_NO_SUBGROUPS', () => {
    const has = subgroupsUsable(shared.gpu, true);
    expect(new GpuContext(shared.gpu).subgroups).toBe(has && process.env.VLMSCOPE_NO_SUBGROUPS !== '1');
    expect(new GpuContext(shared.gpu, { subgroups: true }).subgroups).toBe(has);
    expect(new GpuContext(shared.gpu, { subgroups: false }).subgroups).toBe(false);
    const saved = process.env.VLMSCOPE_NO_SUBGROUPS;
    try {
      process.env.VLMSCOPE_NO_SUBGROUPS = '1';
      expect(new GpuContext(shared.gpu).subgroups).toBe(false);
      expect(new GpuContext(shared.gpu, { subgroups: true }).subgroups).toBe(has); // an explicit option wins
    } finally {
      if (saved === undefined) delete process.env.VLMSCOPE_NO_SUBGROUPS;
      else process.env.VLMSCOPE_NO_SUBGROUPS = saved;
    }
  });

  it.skipIf(skip)('the device has the feature the adapter offered; the two forms are two pipelines', () => {
    expect(shared.gpu.features.has('subgroups')).toBe(true);
    const spec = { name: 'probe', source: '@compute @workgroup_size(1) fn main() {}', bindings: [] };
    const a = sg.kernel({ ...spec, subgroups: true });
    const b = sg.kernel(spec);
    expect(a).not.toBe(b);
    expect([a.subgroups, b.subgroups]).toEqual([true, false]);
    expect(a.key).toMatch(/\[SUBGROUPS\]/);
    expect(b.key).not.toMatch(/SUBGROUPS/);
  });

  it('a context without subgroups refuses a subgroup form', () => {
    const spec = { name: 'probe', source: '@compute @workgroup_size(1) fn main() {}', bindings: [], subgroups: true };
    expect(() => plain.kernel(spec)).toThrow(/kernel probe: its subgroup form was asked for, but this context does not use subgroups/);
  });

  it('a device created without the feature runs the plain forms, with the same results', async () => {
    // acquireGpu({ subgroups: false }) does not request the feature even where the adapter offers it: the
    // device a browser without subgroups would give.
    let gpu: Gpu | null = null;
    try {
      gpu = await acquireGpu({ subgroups: false });
      expect(gpu.features.has('subgroups')).toBe(false);
      const ctx = new GpuContext(gpu, { subgroups: true });
      expect(ctx.subgroups).toBe(false);
      const D = 1000;
      const xs = randn(2 * D, 11, 2);
      const x = ctx.uploadF32(xs, [2, D], 'x');
      const [w, wq] = upload(ctx, randn(D, 12), [D], 'f16', 'norm.weight');
      const out = ctx.activation([2, D], 'y');
      const r = await runOn(ctx, out, (c, rec) => rmsNorm(c, rec, { x: rows(x), w, eps: 1e-6, out: rows(out) }));
      expect([r.subgroupDispatches, r.dispatches]).toEqual([0, 1]);
      expectClose(r.y, refRmsNorm(Float64Array.from(xs), D, Float64Array.from(wq), 1e-6), 1e-5, 1e-5, 'rmsNorm');
    } finally {
      gpu?.destroy();
    }
  });
});
