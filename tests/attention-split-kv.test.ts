// Split-KV attention (kernels/attention.ts: split_partial + split_merge, "flash decoding"): forced on, at odd sizes
// and with every per-key and per-head feature, against the float64 reference (tests/helpers/reference-math.ts) and
// against the single-pass kernel; the fall-backs; and the selection rule (planAttention) on both sides.

import { describe, expect, it } from 'vitest';
import { attention, attentionPlan, planAttention, SPLIT_MIN_KEYS, SPLIT_TARGET_WORKGROUPS, attentionWorkgroup, type AttentionArgs, type AttentionShape, type AttentionSplit } from '../kernels/attention.js';
import { adapterProfile } from '../kernels/adapter.js';
import type { GpuContext } from '../src/gpu/context.js';
import { type Case as AttentionCase, expectEmptyRangeZ, expected, inputs, segments, upload } from './helpers/attention-cases.js';
import { expectClose, gpuContext, read } from './helpers/gpu.js';

interface Case extends AttentionCase {
  /** Forced split: keys per slice, or true for the rule's own slicing. */
  split: AttentionSplit;
}

/** Split (forced as the case says) and single pass over the same inputs in one step. */
async function runBoth(c: Case, seed = 10) {
  const ctx = await gpuContext();
  const x = inputs(c, seed);
  const args = upload(ctx, c, x);
  const zs = ctx.activation([c.rows, c.heads * c.headDim], 'z.split');
  const zp = ctx.activation([c.rows, c.heads * c.headDim], 'z.plain');
  const plan = attentionPlan(ctx, { ...args, split: c.split });
  const rec = ctx.recorder();
  attention(ctx, rec, { ...args, z: zs, split: c.split });
  attention(ctx, rec, { ...args, z: zp, split: false, tiled: false });
  rec.submit();
  return { plan, split: await read(ctx, zs), plain: await read(ctx, zp), want: expected(c, x), args, ctx, x };
}

describe('split-KV attention vs float64 reference and the single pass', () => {
  const cases: [string, Case][] = [
    ['decode, GQA 4/2, D 64, 385 keys in slices of 64 (last slice one key), every per-head parameter', {
      rows: 1, heads: 4, kvHeads: 2, headDim: 64, nKeys: 385, causal: true, pos0: 384, split: { chunk: 64 }, temp: [0, 1], vectors: true, steer: [[0, 1], [0, 1], [0, 1]],
    }],
    ['five causal rows, D 40, GQA 6/2, slices of 50 (not a multiple of the key chunk), temperature on some rows', {
      rows: 5, heads: 6, kvHeads: 2, headDim: 40, nKeys: 303, causal: true, pos0: 298, split: { chunk: 50 }, temp: [1, 4], vectors: true, steer: [[0, 5], [4, 5], [1, 3]],
    }],
    ['patch_z, mean replacement, gain and steer, D 64, slices of 32', {
      rows: 3, heads: 4, kvHeads: 2, headDim: 64, nKeys: 257, causal: true, pos0: 254, split: { chunk: 32 }, temp: [0, 3], vectors: true,
      steer: [[0, 3], [2, 3], [0, 1]], patch: [[0, 0], [2, 1], [1, 2], [2, 3]],
    }],
    ['key ranges with empty, inverted and clamped ones (non-causal), D 24, slices of 40', {
      rows: 8, heads: 4, kvHeads: 4, headDim: 24, nKeys: 211, causal: false, pos0: 0, split: { chunk: 40 }, temp: [0, 8], vectors: true, steer: [[0, 8], [7, 8], [2, 5]],
      ranges: [[7, 7], [150, 30], [190, 400], [0, 211], [39, 41], [80, 81], [0, 0], [3, 170]],
    }],
    ['causal + key ranges (chunked prefill over image blocks), GQA 4/2, D 64, slices of 48', {
      rows: 6, heads: 4, kvHeads: 2, headDim: 64, nKeys: 230, causal: true, pos0: 224, split: { chunk: 48 }, temp: [0, 6],
      ranges: [...segments([0, 100, 230]).slice(224, 229), [120, 226]],
    }],
    ['knockout (row 3 fully blocked), D 64, GQA 6/3, slices of 40', {
      rows: 4, heads: 6, kvHeads: 3, headDim: 64, nKeys: 333, causal: true, pos0: 329, split: { chunk: 40 }, temp: [0, 4], vectors: true, steer: [[0, 4], [3, 4], [0, 2]], knock: 5,
    }],
    ['variants: rows of one position over a shared prefix, D 40, slices of 64', {
      rows: 4, heads: 4, kvHeads: 2, headDim: 40, nKeys: 204, causal: true, pos0: 200, split: { chunk: 64 }, temp: [0, 4], vectors: true, steer: [[0, 4], [1, 2], [3, 4]],
      variants: 200, patch: [[2, 0], [3, 3]],
    }],
    ['scalar K / V loads (D 30, not a multiple of 4), GQA 4/2, slices of 48, knockout and every per-head parameter', {
      rows: 2, heads: 4, kvHeads: 2, headDim: 30, nKeys: 211, causal: true, pos0: 209, split: { chunk: 48 }, temp: [0, 2], vectors: true, steer: [[0, 2]], knock: 3,
    }],
    ['one key per slice, D 128', {
      rows: 2, heads: 2, kvHeads: 1, headDim: 128, nKeys: 37, causal: true, pos0: 35, split: { chunk: 1 }, temp: [0, 2], vectors: true, steer: [[0, 2]],
    }],
    ['the rule\'s own slicing (forced), decode over 700 keys, D 64', {
      rows: 1, heads: 4, kvHeads: 4, headDim: 64, nKeys: 700, causal: true, pos0: 699, split: true, temp: [0, 1],
    }],
  ];
  for (const [name, c] of cases) {
    it(name, async () => {
      const r = await runBoth(c);
      expect(r.plan.split, r.plan.reason).toBe(true);
      expect(r.plan.splits).toBe(Math.ceil(c.nKeys / r.plan.chunk));
      if (c.split === true) expect(r.plan.splits).toBeGreaterThanOrEqual(2);
      expectClose(r.split, r.want, 2e-5, 1e-4, 'split z vs float64');
      expectClose(r.plain, r.want, 2e-5, 1e-4, 'single-pass z vs float64');
      expectClose(r.split, r.plain, 1e-6, 1e-5, 'split z vs single pass');
      expect(r.split.every(Number.isFinite)).toBe(true);
    });
  }

  it('empty ranges give z 0 before the head vectors: exactly the steering vector, or 0', async () => {
    const c: Case = { rows: 3, heads: 4, kvHeads: 2, headDim: 16, nKeys: 120, causal: false, pos0: 0, split: { chunk: 16 }, vectors: true, steer: [[0, 3], [0, 3], [0, 3]], ranges: [[5, 5], [90, 10], [300, 400]] };
    const r = await runBoth(c);
    expectEmptyRangeZ(c, r.x, r.split, r.plain);
  });

  it('binds K and V up to the last key in the partial pass only, and only this call\'s part of the scratch', async () => {
    const c: Case = { rows: 1, heads: 4, kvHeads: 2, headDim: 32, nKeys: 150, causal: true, pos0: 149, split: { chunk: 32 } };
    const ctx = await gpuContext();
    const x = inputs(c, 20);
    const args = upload(ctx, c, x);
    const z = ctx.activation([1, c.heads * c.headDim], 'z');
    const counters = ctx.countWork();
    const before = counters.snapshot();
    const rec = ctx.recorder();
    attention(ctx, rec, { ...args, z, split: c.split });
    expect(rec.dispatchCount).toBe(2);
    rec.submit();
    const got = await read(ctx, z);
    const d = counters.since(before);
    ctx.counters = null;
    expect(d.bound.get(args.k.buffer)).toBe(c.nKeys * c.kvHeads * c.headDim * 4);
    expect(d.bound.get(args.v.buffer)).toBe(c.nKeys * c.kvHeads * c.headDim * 4);
    const partial = d.kernels.get('attention_split_partial')!;
    const scratch = [...partial.bound.keys()].find((b) => b.label === 'attention-split-partials')!;
    const bytes = c.heads * Math.ceil(c.nKeys / 32) * (2 + c.headDim) * 4;
    expect(partial.bound.get(scratch)).toBe(Math.ceil(bytes / 16) * 16);
    expect(d.kernels.get('attention_split_merge')!.bound.get(scratch)).toBe(Math.ceil(bytes / 16) * 16);
    expectClose(got, expected(c, x), 2e-5, 1e-4, 'z');
  });

  it('calls of one step share the scratch; one that grows it leaves the earlier calls right', async () => {
    const ctx = await gpuContext();
    const small: Case = { rows: 1, heads: 2, kvHeads: 2, headDim: 16, nKeys: 40, causal: true, pos0: 39, split: { chunk: 16 } };
    const big: Case = { rows: 2, heads: 4, kvHeads: 2, headDim: 64, nKeys: 300, causal: true, pos0: 298, split: { chunk: 8 } };
    const xs = [inputs(small, 30), inputs(big, 31), inputs(small, 32)];
    const cs = [small, big, small];
    const zs = cs.map((c, j) => ctx.activation([c.rows, c.heads * c.headDim], `z${j}`));
    const rec = ctx.recorder();
    cs.forEach((c, j) => attention(ctx, rec, { ...upload(ctx, c, xs[j]), z: zs[j], split: c.split }));
    rec.submit();
    for (let j = 0; j < 3; j++) expectClose(await read(ctx, zs[j]), expected(cs[j], xs[j]), 2e-5, 1e-4, `call ${j}`);
  });
});

describe('split-KV fall-backs give the single pass', () => {
  it('a pattern capture runs the single pass even when split is forced: same z and pattern, bit for bit', async () => {
    const ctx = await gpuContext();
    const c: Case = { rows: 2, heads: 4, kvHeads: 2, headDim: 32, nKeys: 130, causal: true, pos0: 128, split: { chunk: 32 }, temp: [0, 2], vectors: true, steer: [[0, 2]] };
    const x = inputs(c, 40);
    const args = upload(ctx, c, x);
    const out = () => ({ z: ctx.activation([c.rows, c.heads * c.headDim], 'z'), pattern: ctx.activation([c.heads, c.rows, c.nKeys], 'pattern') });
    const [forced, plain] = [out(), out()];
    const plan = attentionPlan(ctx, { ...args, pattern: forced.pattern, split: c.split });
    expect(plan.split).toBe(false);
    expect(plan.reason).toMatch(/pattern capture/);
    const rec = ctx.recorder();
    attention(ctx, rec, { ...args, ...forced, split: c.split });
    expect(rec.dispatchCount).toBe(1);
    attention(ctx, rec, { ...args, ...plain, split: false });
    rec.submit();
    expect(Array.from(await read(ctx, forced.z))).toEqual(Array.from(await read(ctx, plain.z)));
    expect(Array.from(await read(ctx, forced.pattern))).toEqual(Array.from(await read(ctx, plain.pattern)));
    expectClose(await read(ctx, forced.z), expected(c, x), 2e-5, 1e-4, 'z');
  });

  it('no query rows, or more storage bindings than the adapter allows: the single pass', async () => {
    const gpu = { cpu: false, maxInvocations: 1024, maxWorkgroupStorage: 32768, maxStorageBuffers: 8 };
    const shape: AttentionShape = { rows: 1, heads: 8, headDim: 64, nKeys: 4096, capture: false, partialBuffers: 8 };
    expect(planAttention(gpu, shape).split).toBe(true);
    expect(planAttention({ ...gpu, maxStorageBuffers: 7 }, shape).reason).toMatch(/8 storage buffers, the adapter allows 7/);
    expect(planAttention({ ...gpu, maxStorageBuffers: 7 }, shape, true).split).toBe(false);
    expect(planAttention(gpu, { ...shape, rows: 0 }, true).split).toBe(false);
    // Zero rows through the launcher: nothing dispatched, nothing thrown.
    const ctx = await gpuContext();
    const c: Case = { rows: 1, heads: 2, kvHeads: 2, headDim: 16, nKeys: 40, causal: false, pos0: 0, split: true };
    const args = upload(ctx, c, inputs(c, 50));
    const rec = ctx.recorder();
    attention(ctx, rec, { ...args, rows: 0, z: ctx.activation([1, 32], 'z'), split: true });
    expect(rec.dispatchCount).toBe(0);
  });
});

describe('split-KV selection rule', () => {
  const limits = { maxComputeInvocationsPerWorkgroup: 1024, maxComputeWorkgroupStorageSize: 32768, maxComputeWorkgroupsPerDimension: 65535 };
  /** The profile adapterProfile makes of an adapter by this name (its CPU_ADAPTER test), plus its binding limit. */
  const named = (adapterName: string) => ({
    ...adapterProfile({ gpu: { adapterName }, limits } as unknown as GpuContext),
    maxStorageBuffers: 10,
  });
  const decode = (heads: number, nKeys: number, headDim = 128): AttentionShape => ({ rows: 1, heads, headDim, nKeys, capture: false, partialBuffers: 6 });

  it('CPU adapters (SwiftShader, llvmpipe) keep the single pass unless forced', () => {
    for (const name of ['Google SwiftShader Device (Subzero)', 'llvmpipe (LLVM 15.0.6, 256 bits)']) {
      const p = named(name);
      expect(p.cpu, name).toBe(true);
      const plan = planAttention(p, decode(32, 4096));
      expect(plan.split, name).toBe(false);
      expect(plan.reason).toMatch(/CPU adapter/);
      expect(planAttention(p, decode(32, 4096), true).split).toBe(true);
    }
  });

  it('a GPU with few (row, head) workgroups and many keys splits; the slicing fills SPLIT_TARGET_WORKGROUPS', () => {
    const p = named('nvidia hopper NVIDIA H100 80GB HBM3');
    expect(p.cpu).toBe(false);
    for (const [heads, nKeys, hd] of [[32, 4096, 128], [28, 2048, 128], [8, 1000, 64], [32, 2 * SPLIT_MIN_KEYS, 128]]) {
      const plan = planAttention(p, decode(heads, nKeys, hd));
      expect(plan.split, `${heads} heads, ${nKeys} keys`).toBe(true);
      expect(plan.splits).toBeGreaterThanOrEqual(2);
      expect(plan.chunk % attentionWorkgroup(hd)).toBe(0);
      expect(plan.chunk).toBeGreaterThanOrEqual(SPLIT_MIN_KEYS);
      expect(plan.splits * plan.chunk).toBeGreaterThanOrEqual(nKeys);
      expect((plan.splits - 1) * plan.chunk).toBeLessThan(nKeys);
      expect(heads * (plan.splits - 1)).toBeLessThan(SPLIT_TARGET_WORKGROUPS);
    }
    expect(planAttention(p, decode(32, 4096)).splits).toBe(SPLIT_TARGET_WORKGROUPS / 32);
    // A few decode rows at once (speculative / batched) still split while rows x heads stays small.
    expect(planAttention(p, { ...decode(32, 4096), rows: 4 }).split).toBe(true);
  });

  it('a GPU keeps the single pass with many rows, few keys, a capture, or when forced off', () => {
    const p = named('AMD RDNA3 Radeon RX 7900 XTX');
    expect(planAttention(p, { ...decode(32, 4096), rows: 64 }).reason).toMatch(/already fill the GPU/);
    expect(planAttention(p, { ...decode(2, 4096), rows: SPLIT_TARGET_WORKGROUPS / 4 + 1 }).split).toBe(false);
    expect(planAttention(p, decode(32, 2 * SPLIT_MIN_KEYS - 1)).reason).toMatch(/fewer than two slices/);
    expect(planAttention(p, { ...decode(32, 4096), capture: true }).split).toBe(false);
    expect(planAttention(p, { ...decode(32, 4096), capture: true }, { chunk: 64 }).split).toBe(false);
    expect(planAttention(p, decode(32, 4096), false).split).toBe(false);
    expect(() => planAttention(p, decode(32, 4096), { chunk: 0 })).toThrow(/split chunk 0/);
  });

  it('this adapter: attention follows planAttention on its own profile', async () => {
    const ctx = await gpuContext();
    const shape = decode(32, 4096);
    const own = planAttention({ ...adapterProfile(ctx), maxStorageBuffers: ctx.limits.maxStorageBuffersPerShaderStage }, shape);
    expect(attentionPlan(ctx, { rows: 1, heads: 32, headDim: 128, nKeys: 4096, pattern: null, keyRanges: null, knockout: null })).toEqual(own);
    expect(own.split).toBe(!adapterProfile(ctx).cpu);
  });
});
