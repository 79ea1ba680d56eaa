// The single pass as one thread per (row, head) (kernels/attention.ts: entry point solo, no workgroup memory, no
// barrier; the CPU adapters' single pass from SOLO_MIN_ROWS rows): forced on at odd sizes with every per-key and
// per-head feature (temperature, head vectors, steering scopes, patch, key ranges, knockout, variants, GQA, causal
// with pos0 > 0 and not, head_dim 4 to 256), against the float64 reference and against main bit for bit (it streams
// main's chunks in main's order of operations); a pattern capture; the selection rule on both sides of each branch.

import { describe, expect, it } from 'vitest';
import { attention, attentionPlan, attentionWorkgroup, planAttention, SOLO_MIN_ROWS, type AttentionShape } from '../kernels/attention.js';
import { type Case, type Inputs, expected, inputs, segments, upload } from './helpers/attention-cases.js';
import { expectClose, gpuContext, read } from './helpers/gpu.js';

/** Solo (forced) and main (forced) over the same inputs in one step, with which kernels ran. */
async function runBoth(c: Case, seed = 20, capture = false, tweak?: (x: Inputs) => void) {
  const ctx = await gpuContext();
  const x = inputs(c, seed);
  tweak?.(x);
  const args = upload(ctx, c, x);
  const width = c.heads * c.headDim;
  const zs = ctx.activation([c.rows, width], 'z.solo');
  const zm = ctx.activation([c.rows, width], 'z.main');
  const ps = capture ? ctx.activation([c.heads, c.rows, c.nKeys], 'pattern.solo') : null;
  const pm = capture ? ctx.activation([c.heads, c.rows, c.nKeys], 'pattern.main') : null;
  const plan = attentionPlan(ctx, { ...args, pattern: ps, solo: true });
  const counters = ctx.countWork();
  const before = counters.snapshot();
  const rec = ctx.recorder();
  attention(ctx, rec, { ...args, z: zs, pattern: ps, solo: true });
  attention(ctx, rec, { ...args, z: zm, pattern: pm, split: false, tiled: false, solo: false });
  rec.submit();
  const got = { solo: await read(ctx, zs), main: await read(ctx, zm), ps: ps && (await read(ctx, ps)), pm: pm && (await read(ctx, pm)) };
  const kernels = counters.since(before).kernels;
  ctx.counters = null;
  return { plan, ...got, want: expected(c, x), kernels };
}

describe('solo attention vs float64 reference and main', () => {
  const cases: [string, Case][] = [
    ['causal prefill from 0, GQA 4/2, D 64, every per-head parameter', {
      rows: 37, heads: 4, kvHeads: 2, headDim: 64, nKeys: 37, causal: true, pos0: 0, temp: [3, 30], vectors: true, steer: [[0, 10], [5, 37], [36, 37]],
    }],
    ['prefill continuing a cache (pos0 129), D 40, GQA 6/2, more items than a workgroup', {
      rows: 21, heads: 6, kvHeads: 2, headDim: 40, nKeys: 150, causal: true, pos0: 129, temp: [3, 17], vectors: true, steer: [[0, 21]],
    }],
    ['non-causal (vision tower), D 128, GQA 4/1', { rows: 19, heads: 4, kvHeads: 1, headDim: 128, nKeys: 141, causal: false, pos0: 0, temp: [0, 19], vectors: true }],
    ['D 256 (64 vec4s a row), 2 heads', { rows: 9, heads: 2, kvHeads: 2, headDim: 256, nKeys: 77, causal: true, pos0: 68, temp: [0, 9], vectors: true, steer: [[0, 9]] }],
    ['D 4 (one vec4 a row), 5 heads', { rows: 17, heads: 5, kvHeads: 5, headDim: 4, nKeys: 70, causal: true, pos0: 53, temp: [2, 11] }],
    ['key ranges with empty, inverted and clamped ones (non-causal), D 24', {
      rows: 20, heads: 4, kvHeads: 4, headDim: 24, nKeys: 211, causal: false, pos0: 0, temp: [0, 20], vectors: true,
      ranges: [[0, 50], [10, 10], [30, 20], [200, 400], ...segments([0, 60, 120, 211]).flatMap((r) => Array(5).fill(r))].slice(0, 20),
    }],
    ['knockout + key ranges + patch (non-causal), D 40', {
      rows: 17, heads: 6, kvHeads: 2, headDim: 40, nKeys: 120, causal: false, pos0: 0, temp: [0, 17], vectors: true, knock: 5,
      ranges: Array.from({ length: 17 }, (_, i) => [i * 3, 60 + i * 3] as [number, number]), patch: [[0, 0], [4, 2], [16, 5]],
    }],
    ['causal knockout, GQA 6/3, D 64', { rows: 16, heads: 6, kvHeads: 3, headDim: 64, nKeys: 140, causal: true, pos0: 124, knock: 9, temp: [0, 16] }],
    ['variants (patching\'s batched positions), D 40', { rows: 4, heads: 4, kvHeads: 2, headDim: 40, nKeys: 204, causal: true, pos0: 200, temp: [0, 4], vectors: true, steer: [[0, 4]], variants: 200, patch: [[2, 0]] }],
  ];
  for (const [name, c] of cases) {
    it(name, async () => {
      const r = await runBoth(c);
      expect(r.plan.solo, r.plan.reason).toBe(true);
      expect(r.kernels.get('attention_solo')?.dispatches).toBe(1);
      expect(r.kernels.get('attention')?.dispatches).toBe(1); // main, the comparison
      expectClose(r.solo, r.want, 2e-5, 1e-4, 'solo z vs float64');
      expect(Array.from(r.solo)).toEqual(Array.from(r.main));
    });
  }

  it('a pattern capture (causal, knockout, every per-head parameter): z and pattern equal main, bit for bit', async () => {
    const c: Case = { rows: 18, heads: 4, kvHeads: 2, headDim: 32, nKeys: 90, causal: true, pos0: 72, temp: [0, 18], vectors: true, steer: [[0, 18]], knock: 3 };
    const r = await runBoth(c, 30, true);
    expect(r.plan.solo).toBe(true);
    expectClose(r.solo, r.want, 2e-5, 1e-4, 'solo z vs float64');
    expect(Array.from(r.solo)).toEqual(Array.from(r.main));
    expect(Array.from(r.ps!)).toEqual(Array.from(r.pm!));
    // Rows sum to 1 over the keys they see, or 0 where every key is knocked out.
    for (let row = 0; row < c.heads * c.rows; row++) {
      const sum = r.ps!.slice(row * c.nKeys, (row + 1) * c.nKeys).reduce((a, b) => a + b, 0);
      expect(Math.abs(sum - 1) < 1e-5 || sum === 0, `pattern row ${row} sums to ${sum}`).toBe(true);
    }
  });

  it('knockout on a few rows only: rows without a blocked edge skip the per-key test, the others keep it', async () => {
    const c: Case = { rows: 20, heads: 6, kvHeads: 3, headDim: 32, nKeys: 100, causal: true, pos0: 80, knock: 7, temp: [0, 20], vectors: true };
    // Keep the bits of rows 3 (every key blocked), 11 and 19 only; row 11's lie past its causal limit for no key.
    const keep = new Set([3, 11, 19]);
    const r = await runBoth(c, 50, true, (x) => {
      for (let i = 0; i < c.rows; i++) if (!keep.has(i)) x.ko!.bits.fill(0, i * x.ko!.words, (i + 1) * x.ko!.words);
    });
    expect(r.plan.solo).toBe(true);
    expectClose(r.solo, r.want, 2e-5, 1e-4, 'solo z vs float64');
    expect(Array.from(r.solo)).toEqual(Array.from(r.main));
    expect(Array.from(r.ps!)).toEqual(Array.from(r.pm!));
  });

  it('a fused qkv view whose k / v columns are 4-aligned runs solo; a misaligned one falls back to main', async () => {
    const ctx = await gpuContext();
    const c: Case = { rows: 16, heads: 2, kvHeads: 2, headDim: 8, nKeys: 16, causal: true, pos0: 0 };
    const x = inputs(c, 40);
    const args = upload(ctx, c, x);
    expect(attentionPlan(ctx, { ...args, solo: true }).solo).toBe(true);
    const off = attentionPlan(ctx, { ...args, kvStride: 17, kOffset: 1, solo: true });
    expect(off.solo).toBe(false);
    expect(off.reason).toMatch(/do not load as vec4s, which solo needs/);
  });
});

describe('solo selection rule', () => {
  const cpu = { cpu: true, maxInvocations: 256, maxWorkgroupStorage: 16384, maxStorageBuffers: 10 };
  const gpu = { ...cpu, cpu: false };
  const shape = (rows: number, over: Partial<AttentionShape> = {}): AttentionShape => ({ rows, heads: 8, headDim: 64, nKeys: 512, capture: false, partialBuffers: 6, kv4: true, ...over });

  it('a CPU adapter: solo from SOLO_MIN_ROWS rows with vec4 K / V, main below, without vec4s, or when ruled out', () => {
    expect(planAttention(cpu, shape(SOLO_MIN_ROWS)).solo).toBe(true);
    expect(planAttention(cpu, shape(SOLO_MIN_ROWS)).reason).toMatch(/solo, a thread per/);
    expect(planAttention(cpu, shape(4096, { capture: true })).solo).toBe(true);
    expect(planAttention(cpu, shape(SOLO_MIN_ROWS - 1)).solo).toBe(false);
    expect(planAttention(cpu, shape(1)).solo).toBe(false); // a decode step
    expect(planAttention(cpu, shape(4096, { kv4: false })).solo).toBe(false);
    expect(planAttention(cpu, shape(4096), undefined, undefined, false).solo).toBe(false);
    expect(planAttention(cpu, shape(4096, { rows: 0 }), undefined, undefined, true).solo).toBe(false);
    // Forced split KV or tiled on a CPU adapter is not solo.
    expect(planAttention(cpu, shape(4096), true).solo).toBe(false);
    expect(planAttention(cpu, shape(4096), undefined, true).solo).toBe(false);
  });

  it('a GPU: never solo unless forced; forcing it with split KV or tiled is an error', () => {
    for (const rows of [1, SOLO_MIN_ROWS, 4096]) expect(planAttention(gpu, shape(rows)).solo).toBe(false);
    expect(planAttention(gpu, shape(1), undefined, undefined, true).solo).toBe(true);
    expect(planAttention(gpu, shape(1), undefined, undefined, true).reason).toMatch(/forced/);
    expect(() => planAttention(gpu, shape(64), true, undefined, true)).toThrow(/solo and split KV or tiled are both forced/);
    expect(() => planAttention(gpu, shape(64), undefined, true, true)).toThrow(/both forced/);
  });

  it('its workgroup is main\'s (a chunk of keys per rescale, as main streams them)', () => {
    for (const d of [4, 64, 128, 256]) expect(attentionWorkgroup(d)).toBeGreaterThanOrEqual(16);
  });
});
