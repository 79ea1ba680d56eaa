// matmul / matmulGated with `norm`: x's rows RMS-normalised on the way in (HF Llama RMSNorm). gemv_rows and
// gemv_coop fold it into the kernel (the NORM define: the sum of squares beside the dot products, the scale on each
// x load, one dispatch) where asked (fold: true here) or where normFolds says (GPUs); tiled, smem and gemv_splitk,
// and unfolded calls, run rmsNorm into the scratch first (one dispatch more). The rule on both kinds of adapter. Every
// variant forced on this adapter against a float64 reference: f32 / f16 / bf16 weights and norm scales in other
// dtypes than the weight, odd K (scalar loads), K crossing the workgroup (128 threads from 2048), N crossing
// workgroups, M = 1..4 with row views, bias, residual and activation, split outputs (fused q/k/v), weights split in
// row blocks, the gated form; gemv_coop in its subgroup and plain forms; the fused result against rmsNorm + matmul;
// what the scratch holds on each path; input errors.

import { describe, expect, it } from 'vitest';
import { adapterProfile, matmul, matmulGated, normFolds, normPrologue, type AdapterProfile, type MatmulVariant, type RowNorm } from '../kernels/matmul.js';
import { rmsNorm } from '../kernels/norm.js';
import { rows, type Activation, type RowView } from '../kernels/common.js';
import { GpuContext } from '../src/gpu/context.js';
import { RowSplitTensor, type DType, type Tensor } from '../src/gpu/tensor.js';
import { countDispatches as dispatches, expectClose, gpuContext, randn, read, upload } from './helpers/gpu.js';
import { matmulReference, rmsNorm as rmsNormReference } from './helpers/reference-math.js';

const shared = await gpuContext();
const sg = new GpuContext(shared.gpu, { subgroups: true });
const plainForm = new GpuContext(shared.gpu, { subgroups: false });

/** float64 RMSNorm of the M rows of a row-major [M, K] array (HF Llama). */
const normRows = (x: Float32Array, g: Float32Array, eps: number, M: number, K: number): Float64Array => rmsNormReference(Float64Array.from(x.subarray(0, M * K)), K, Float64Array.from(g), eps);
const product = matmulReference;

interface Input {
  /** x rows as the reference sees them (row-major [M, K]). */
  xs: Float32Array;
  /** The view the kernel reads: rows 2..2+M of a larger tensor. */
  x: RowView;
  norm: RowNorm;
  gq: Float32Array;
  eps: number;
}

/**
 * x: rows 2..2+M of a [M + 3, K] tensor, with a spread of row scales and an offset (so the norm matters), the norm
 * scale in `gDtype` and a scratch of its own. Never zeros.
 */
function input(ctx: GpuContext, M: number, K: number, gDtype: DType, seed: number): Input {
  const all = randn((M + 3) * K, seed, 1);
  for (let i = 0; i < all.length; i++) all[i] = all[i] * (1 + (Math.floor(i / K) % 3) * 4) + 0.3;
  const t = ctx.uploadF32(all, [M + 3, K], 'x');
  const [g, gq] = upload(ctx, randn(K, seed + 1, 0.5).map((v) => v + 1), [K], gDtype, 'norm_w');
  const eps = 1e-5 * (1 + (seed % 3));
  const scratch = ctx.activation([M, K], 'normed');
  // fold: true, so the forced GEMVs run their prologue on this adapter too (normFolds keeps CPU adapters unfolded).
  return { xs: all.slice(2 * K, (2 + M) * K), x: rows(t, 2, M), norm: { w: g, eps, scratch: rows(scratch), fold: true }, gq, eps };
}

type Case = [M: number, N: number, K: number, wDtype: DType, gDtype: DType];

const CASES: Record<MatmulVariant, Case[]> = {
  gemv_rows: [
    [1, 1, 1, 'f32', 'f32'],
    [1, 17, 36, 'f16', 'f32'],
    [1, 9, 35, 'bf16', 'f16'], // scalar loads
    [3, 130, 132, 'f32', 'bf16'],
    [1, 4099, 8, 'f16', 'f16'], // 64 threads x 8 columns: 9 workgroups, the last nearly empty
    [2, 13, 1001, 'f32', 'f32'],
  ],
  gemv_coop: [
    [1, 1, 1, 'f32', 'f32'],
    [1, 5, 1001, 'f16', 'bf16'], // K strided over the workgroup several times, scalar loads
    [1, 130, 2052, 'bf16', 'f32'], // 128 threads (K >= 2048), vec4
    [4, 6, 260, 'f32', 'f16'],
  ],
  // No prologue: rmsNorm into the scratch, then the product.
  tiled: [
    [1, 7, 36, 'f16', 'f32'],
    [37, 70, 33, 'bf16', 'bf16'],
  ],
  smem: [[40, 70, 132, 'f32', 'f16']],
  gemv_splitk: [[1, 5, 1030, 'f16', 'f32']],
};

const ACTS: Activation[] = ['none', 'silu', 'gelu_tanh'];

describe('matmul with an RMSNorm prologue vs float64 (forced variants on this adapter)', () => {
  for (const [variant, cases] of Object.entries(CASES) as [MatmulVariant, Case[]][]) {
    cases.forEach(([M, N, K, wd, gd], i) => {
      const act = ACTS[i % ACTS.length];
      const bias = i % 2 === 0;
      const residual = i % 3 !== 2;
      it(`${variant} M=${M} N=${N} K=${K} W ${wd}, norm ${gd}, ${act}${bias ? ', bias' : ''}${residual ? ', residual' : ''}`, async () => {
        const ctx = shared;
        const inp = input(ctx, M, K, gd, 10 + i + K);
        const [w, wq] = upload(ctx, randn(N * K, 20 + N, 0.5), [N, K], wd, 'w');
        const [b, bq] = bias ? upload(ctx, randn(N, 30 + N), [N], wd, 'b') : [null, null];
        const rs = randn(M * N, 40 + N);
        const r = residual ? ctx.uploadF32(rs, [M, N], 'r') : null;
        const y = ctx.activation([M, N], 'y');
        const n = dispatches(ctx, (rec) => matmul(ctx, rec, { x: inp.x, norm: inp.norm, w, b, residual: r && rows(r), act, out: rows(y), variant }));
        expect(n).toBe((normPrologue(variant) ? 1 : 2) + (variant === 'gemv_splitk' ? 1 : 0));
        const want = product(normRows(inp.xs, inp.gq, inp.eps, M, K), wq, bq, M, N, K, act, { r: residual ? rs : null });
        const tol = K > 1000 ? 3e-4 : 1e-4;
        expectClose(await read(ctx, y), want, tol, tol, `${variant} ${M}x${N}x${K}`);
      });
    });
  }

  for (const variant of ['gemv_rows', 'gemv_coop', 'tiled'] as const) {
    it(`${variant}: the gated form with the norm (act(gate) * up of the normalised rows)`, async () => {
      const ctx = shared;
      for (const [M, N, K, wd, gd] of [[1, 70, 36, 'f16', 'f32'], [2, 33, 35, 'bf16', 'f16']] as Case[]) {
        const inp = input(ctx, M, K, gd, 50 + K);
        const [gate, gateq] = upload(ctx, randn(N * K, 51, 0.5), [N, K], wd, 'gate');
        const [up, upq] = upload(ctx, randn(N * K, 52, 0.5), [N, K], wd, 'up');
        const [ub, ubq] = upload(ctx, randn(N, 53), [N], 'f32', 'up_bias');
        const y = ctx.activation([M, N], 'y');
        const n = dispatches(ctx, (rec) => matmulGated(ctx, rec, { x: inp.x, norm: inp.norm, gate, up, upBias: ub, act: 'silu', out: rows(y), variant }));
        expect(n).toBe(normPrologue(variant) ? 1 : 2);
        const want = product(normRows(inp.xs, inp.gq, inp.eps, M, K), gateq, null, M, N, K, 'silu', { up: { w: upq, b: ubq } });
        expectClose(await read(ctx, y), want, 1e-4, 1e-4, `${variant} gated ${M}x${N}x${K}`);
      }
    });
  }

  it('the gated fallback (split K) normalises once into the scratch, then gate, up and gatedAct', async () => {
    const ctx = shared;
    const [M, N, K] = [1, 9, 1030];
    const inp = input(ctx, M, K, 'f16', 60);
    const [gate, gateq] = upload(ctx, randn(N * K, 61, 0.5), [N, K], 'f16', 'gate');
    const [up, upq] = upload(ctx, randn(N * K, 62, 0.5), [N, K], 'f16', 'up');
    const y = ctx.activation([M, N], 'y');
    const n = dispatches(ctx, (rec) => matmulGated(ctx, rec, { x: inp.x, norm: inp.norm, gate, up, act: 'gelu', out: rows(y), variant: 'gemv_splitk' }));
    expect(n).toBe(1 + 2 * 2 + 1);
    const want = product(normRows(inp.xs, inp.gq, inp.eps, M, K), gateq, null, M, N, K, 'gelu', { up: { w: upq, b: null } });
    expectClose(await read(ctx, y), want, 3e-4, 3e-4, 'gated split K');
  });

  for (const variant of ['gemv_rows', 'gemv_coop', 'tiled'] as const) {
    it(`${variant}: split outputs (stacked q/k/v) and a weight in row blocks, each block normalising its own way`, async () => {
      const ctx = shared;
      for (const K of [36, 35]) {
        const [M, N] = [1, 40];
        const inp = input(ctx, M, K, 'bf16', 70 + K);
        const wv = randn(N * K, 71, 0.5);
        const [w, wq] = upload(ctx, wv, [N, K], 'f16', 'qkv');
        const [b, bq] = upload(ctx, randn(N, 72), [N], 'f32', 'qkv_bias');
        const q = ctx.activation([M, 24], 'q');
        const kk = ctx.activation([M, 8], 'k');
        const v = ctx.activation([M, 8], 'v');
        const want = product(normRows(inp.xs, inp.gq, inp.eps, M, K), wq, bq, M, N, K, 'none');
        const n = dispatches(ctx, (rec) => matmul(ctx, rec, { x: inp.x, norm: inp.norm, w, b, out: [rows(q), rows(kk), rows(v)], variant }));
        expect(n).toBe(normPrologue(variant) ? 1 : 2);
        const got = [...(await read(ctx, q)), ...(await read(ctx, kk)), ...(await read(ctx, v))];
        expectClose(got, want, 1e-4, 1e-4, `${variant} split out K=${K}`);
        // The same weight held in three row blocks: one dispatch each (plus the norm's own where it is not folded).
        const starts = [0, 16, 30];
        const parts = starts.map((r0, j) => upload(ctx, wv.subarray(r0 * K, (starts[j + 1] ?? N) * K), [(starts[j + 1] ?? N) - r0, K], 'f16', `qkv[${r0}..]`)[0]);
        const split = new RowSplitTensor(parts, starts, [N, K], 'f16', 'qkv');
        const y = ctx.activation([M, N], 'y');
        const nb = dispatches(ctx, (rec) => matmul(ctx, rec, { x: inp.x, norm: inp.norm, w: split, b, out: rows(y), variant }));
        expect(nb).toBe(starts.length + (normPrologue(variant) ? 0 : 1));
        expectClose(await read(ctx, y), want, 1e-4, 1e-4, `${variant} row blocks K=${K}`);
      }
    });
  }

  it('gemv_coop with the norm in its subgroup form and its plain form (tree) agree with float64', async (t) => {
    if (!sg.subgroups) t.skip();
    for (const ctx of [sg, plainForm]) {
      for (const [M, N, K, gated] of [[1, 12, 2052, false], [2, 9, 260, true], [1, 7, 37, false]] as const) {
        const inp = input(ctx, M, K, 'f16', 80 + K);
        const [w, wq] = upload(ctx, randn(N * K, 81, 0.5), [N, K], 'bf16', 'w');
        const [up, upq] = upload(ctx, randn(N * K, 82, 0.5), [N, K], 'bf16', 'up');
        const y = ctx.activation([M, N], 'y');
        const c = ctx.countWork();
        const before = c.snapshot();
        const rec = ctx.recorder();
        if (gated) matmulGated(ctx, rec, { x: inp.x, norm: inp.norm, gate: w, up, act: 'silu', out: rows(y), variant: 'gemv_coop' });
        else matmul(ctx, rec, { x: inp.x, norm: inp.norm, w, out: rows(y), variant: 'gemv_coop' });
        rec.submit();
        const d = c.since(before);
        ctx.counters = null;
        expect(d.dispatches).toBe(1);
        expect(d.subgroupDispatches).toBe(ctx === sg ? 1 : 0);
        const xn = normRows(inp.xs, inp.gq, inp.eps, M, K);
        const want = gated ? product(xn, wq, null, M, N, K, 'silu', { up: { w: upq, b: null } }) : product(xn, wq, null, M, N, K, 'none');
        const tol = K > 1000 ? 3e-4 : 1e-4;
        expectClose(await read(ctx, y), want, tol, tol, `${ctx === sg ? 'subgroups' : 'plain'} ${M}x${N}x${K}${gated ? ' gated' : ''}`);
      }
    }
  });

  it('the folded norm gives what rmsNorm then matmul give (within f32 rounding), and leaves the scratch alone', async () => {
    const ctx = shared;
    for (const variant of ['gemv_rows', 'gemv_coop'] as const) {
      const [M, N, K] = [1, 70, 132];
      const inp = input(ctx, M, K, 'f32', 90);
      const [w] = upload(ctx, randn(N * K, 91, 0.5), [N, K], 'f16', 'w');
      ctx.write(inp.norm.scratch.tensor.buffer, 0, new Float32Array(M * K).fill(7));
      const fused = ctx.activation([M, N], 'fused');
      const twoPass = ctx.activation([M, N], 'two_pass');
      const normed = ctx.activation([M, K], 'normed_ref');
      const rec = ctx.recorder();
      matmul(ctx, rec, { x: inp.x, norm: inp.norm, w, out: rows(fused), variant });
      rmsNorm(ctx, rec, { x: inp.x, w: inp.norm.w, eps: inp.eps, out: rows(normed) });
      matmul(ctx, rec, { x: rows(normed), w, out: rows(twoPass), variant });
      rec.submit();
      expectClose(await read(ctx, fused), await read(ctx, twoPass), 1e-5, 1e-5, variant);
      expect((await read(ctx, inp.norm.scratch.tensor)).every((v) => v === 7)).toBe(true);
    }
    // Without the prologue the scratch holds the normalised rows (callers may read them).
    const [M, N, K] = [40, 8, 36];
    const inp = input(ctx, M, K, 'bf16', 95);
    const [w] = upload(ctx, randn(N * K, 96, 0.5), [N, K], 'f32', 'w');
    const y = ctx.activation([M, N], 'y');
    const rec = ctx.recorder();
    matmul(ctx, rec, { x: inp.x, norm: inp.norm, w, out: rows(y), variant: 'tiled' });
    rec.submit();
    expectClose(await read(ctx, inp.norm.scratch.tensor), normRows(inp.xs, inp.gq, inp.eps, M, K), 1e-5, 1e-5, 'scratch');
  });

  it('normFolds: GPUs fold where the variant can, CPU adapters only when asked; fold: false never', () => {
    const gpu: AdapterProfile = { cpu: false, maxInvocations: 256, maxWorkgroupStorage: 16384, maxWorkgroups: 65535 };
    const cpu: AdapterProfile = { ...gpu, cpu: true };
    for (const v of ['gemv_rows', 'gemv_coop'] as const) {
      expect([normFolds(gpu, v), normFolds(cpu, v), normFolds(cpu, v, true), normFolds(gpu, v, false)]).toEqual([true, false, true, false]);
    }
    for (const v of ['tiled', 'smem', 'gemv_splitk'] as const) expect([normFolds(gpu, v), normFolds(cpu, v, true)]).toEqual([false, false]);
  });

  it("by default the planned decode GEMV follows this adapter's rule (one dispatch if it folds, two if not)", async () => {
    const ctx = shared;
    const [M, N, K] = [1, 40, 64];
    const inp = input(ctx, M, K, 'f16', 33);
    const [w, wq] = upload(ctx, randn(N * K, 34, 0.5), [N, K], 'f16', 'w');
    const y = ctx.activation([M, N], 'y');
    const norm = { ...inp.norm, fold: undefined };
    const n = dispatches(ctx, (rec) => matmul(ctx, rec, { x: inp.x, norm, w, out: rows(y) }));
    expect(n).toBe(adapterProfile(ctx).cpu ? 2 : 1);
    expectClose(await read(ctx, y), product(normRows(inp.xs, inp.gq, inp.eps, M, K), wq, null, M, N, K, 'none'), 1e-4, 1e-4, 'default rule');
    const n2 = dispatches(ctx, (rec) => matmul(ctx, rec, { x: inp.x, norm: { ...norm, fold: false }, w, out: rows(y), variant: 'gemv_coop' }));
    expect(n2).toBe(2);
    expectClose(await read(ctx, y), product(normRows(inp.xs, inp.gq, inp.eps, M, K), wq, null, M, N, K, 'none'), 1e-4, 1e-4, 'fold: false');
  });

  it('bad norms name the weight, the scratch and what is wrong', async () => {
    const ctx = shared;
    const inp = input(ctx, 2, 12, 'f32', 99);
    const [w] = upload(ctx, randn(5 * 12, 98), [5, 12], 'f32', 'proj');
    const y = ctx.activation([2, 5], 'y');
    const call = (norm: RowNorm, out: RowView = rows(y)) => {
      const rec = ctx.recorder();
      try {
        matmul(ctx, rec, { x: inp.x, norm, w, out });
      } finally {
        rec.submit();
      }
    };
    const [short] = upload(ctx, randn(11, 97), [11], 'f32', 'short_norm');
    expect(() => call({ ...inp.norm, w: short })).toThrow('matmul proj: norm weight short_norm has 11 elements, expected 12 (the columns of x)');
    expect(() => call({ ...inp.norm, eps: Number.NaN })).toThrow('matmul proj: norm eps must be a finite number >= 0, got NaN');
    const small = ctx.activation([1, 12], 'small_scratch');
    expect(() => call({ ...inp.norm, scratch: rows(small) })).toThrow('matmul proj: norm scratch small_scratch view is 1x12, expected 2x12 like x');
    expect(() => call({ ...inp.norm, scratch: { ...inp.x } })).toThrow('matmul proj: norm scratch x shares a buffer with the input or an output; give it its own');
    const wide = ctx.activation([2, 12], 'wide');
    const [w12] = upload(ctx, randn(12 * 12, 96), [12, 12], 'f32', 'square');
    const rec = ctx.recorder();
    expect(() => matmul(ctx, rec, { x: inp.x, norm: { ...inp.norm, scratch: rows(wide) }, w: w12, out: rows(wide) })).toThrow(
      'matmul square: norm scratch wide shares a buffer with the input or an output; give it its own',
    );
    rec.submit();
    const [gate] = upload(ctx, randn(5 * 12, 95), [5, 12], 'f32', 'gate');
    const rec2 = ctx.recorder();
    expect(() => matmulGated(ctx, rec2, { x: inp.x, norm: { ...inp.norm, w: short }, gate, up: gate, act: 'silu', out: rows(y) })).toThrow(
      'matmulGated gate: norm weight short_norm has 11 elements, expected 12 (the columns of x)',
    );
    rec2.submit();
  });
});
