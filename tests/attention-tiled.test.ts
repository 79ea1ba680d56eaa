// Tiled prefill attention (kernels/attention.ts: entry point tiled, a workgroup per block of query rows and head, K / V
// tiles in workgroup memory): forced on at odd sizes (rows not a multiple of the block, keys not of the tile, head_dim
// 40 / 64 / 128 / 256, GQA) with every per-key and per-head feature, causal (pos0 > 0 too) and not, against the
// float64 reference (tests/helpers/reference-math.ts) and against main; the fall-backs, which give main; the
// selection rule (planAttention) on both sides of each rule; and the K / V rows read (attentionKvReads).

import { describe, expect, it } from 'vitest';
import {
  attention,
  attentionKvReads,
  attentionPlan,
  attentionWorkgroup,
  planAttention,
  SPLIT_TARGET_WORKGROUPS,
  TILE_MAX_KEYS,
  TILE_MAX_ROWS,
  TILE_MIN_ROWS,
  TILED_MIN_KEYS,
  TILED_MIN_ROWS,
  tileBytes,
  type AttentionShape,
  type AttentionTiled,
} from '../kernels/attention.js';
import { adapterProfile } from '../kernels/adapter.js';
import type { GpuContext } from '../src/gpu/context.js';
import { type Case as AttentionCase, expectEmptyRangeZ, expected, inputs, segments, upload } from './helpers/attention-cases.js';
import { expectClose, gpuContext, read, rng } from './helpers/gpu.js';

interface Case extends AttentionCase {
  /** Forced tiled: rows per block and keys per tile, or true for the rule's own blocking. */
  tiled: AttentionTiled;
}

/** Tiled (forced as the case says) and main over the same inputs in one step; which kernels ran. */
async function runBoth(c: Case, seed = 10) {
  const ctx = await gpuContext();
  const x = inputs(c, seed);
  const args = upload(ctx, c, x);
  const zt = ctx.activation([c.rows, c.heads * c.headDim], 'z.tiled');
  const zm = ctx.activation([c.rows, c.heads * c.headDim], 'z.main');
  const plan = attentionPlan(ctx, { ...args, tiled: c.tiled });
  const counters = ctx.countWork();
  const before = counters.snapshot();
  const rec = ctx.recorder();
  attention(ctx, rec, { ...args, z: zt, tiled: c.tiled });
  attention(ctx, rec, { ...args, z: zm, split: false, tiled: false, solo: false });
  rec.submit();
  const got = { tiled: await read(ctx, zt), main: await read(ctx, zm) };
  const d = counters.since(before);
  ctx.counters = null;
  return { plan, ...got, want: expected(c, x), args, ctx, x, kernels: d.kernels, bound: d.bound };
}

/** Seeded ranges: begin anywhere in [0, nKeys), length 1..maxLen, some ends past nKeys (the kernel clamps). */
function randomRanges(rows: number, nKeys: number, maxLen: number, seed: number): [number, number][] {
  const r = rng(seed);
  return Array.from({ length: rows }, () => {
    const b = Math.floor(r() * nKeys);
    return [b, b + 1 + Math.floor(r() * maxLen)] as [number, number];
  });
}

// Forced tiles are small: SwiftShader compiles a pipeline's workgroup memory into per-element code (its zero
// initialisation), about 1 s per 2,000 floats of tile, so the file's time goes into compiling, not running.
describe('tiled attention vs float64 reference and main', () => {
  const cases: [string, Case][] = [
    ['causal prefill from 0, GQA 4/2, D 64, 37 rows in blocks of 8, tiles of 16, every per-head parameter', {
      rows: 37, heads: 4, kvHeads: 2, headDim: 64, nKeys: 37, causal: true, pos0: 0, tiled: { rows: 8, keys: 16 }, temp: [3, 30], vectors: true,
      steer: [[0, 37], [36, 37], [5, 9]],
    }],
    ['prefill continuing a cache (pos0 129), D 40, GQA 6/2, blocks of 5, tiles of 24 (neither a power of two)', {
      rows: 21, heads: 6, kvHeads: 2, headDim: 40, nKeys: 150, causal: true, pos0: 129, tiled: { rows: 5, keys: 24 }, temp: [3, 17], vectors: true,
      steer: [[0, 21], [20, 21], [2, 11]],
    }],
    ['non-causal (vision tower), D 128, GQA 4/1, the rule\'s blocking', {
      rows: 19, heads: 4, kvHeads: 1, headDim: 128, nKeys: 141, causal: false, pos0: 0, tiled: true, temp: [0, 19], vectors: true, steer: [[0, 19]],
    }],
    ['D 256 (tiles shrink), causal pos0 68, the rule\'s blocking', {
      rows: 9, heads: 2, kvHeads: 2, headDim: 256, nKeys: 77, causal: true, pos0: 68, tiled: true, temp: [0, 9], vectors: true, steer: [[0, 9], [8, 9]],
    }],
    ['patch_z, mean replacement, gain and steer, D 64, blocks of 4, tiles of 32', {
      rows: 12, heads: 4, kvHeads: 2, headDim: 64, nKeys: 140, causal: true, pos0: 128, tiled: { rows: 4, keys: 32 }, temp: [0, 12], vectors: true,
      steer: [[0, 12], [11, 12], [0, 1]], patch: [[0, 0], [11, 1], [5, 2], [6, 3], [3, 0], [4, 0], [5, 0], [6, 0]],
    }],
    ['key ranges with empty, inverted and clamped ones (non-causal), D 24, blocks of 8, tiles of 16', {
      rows: 20, heads: 4, kvHeads: 4, headDim: 24, nKeys: 211, causal: false, pos0: 0, tiled: { rows: 8, keys: 16 }, temp: [0, 20], vectors: true,
      steer: [[0, 20], [19, 20], [2, 5]],
      ranges: [[7, 7], [150, 30], [190, 400], [0, 211], [39, 41], [80, 81], [0, 0], [3, 170], [300, 400], [5, 6],
        [100, 211], [0, 17], [17, 18], [60, 140], [140, 60], [210, 211], [0, 1], [33, 34], [33, 99], [120, 121]],
    }],
    ['causal + key ranges (chunked prefill over image blocks), GQA 4/2, D 64, blocks of 16, tiles of 8', {
      rows: 40, heads: 4, kvHeads: 2, headDim: 64, nKeys: 230, causal: true, pos0: 190, tiled: { rows: 16, keys: 8 }, temp: [0, 40],
      ranges: [...segments([0, 100, 200, 230]).slice(190, 228), [120, 226], [3, 9]],
    }],
    ['block-diagonal images (tiles skip the gaps between the rows\' blocks), D 16, blocks of 16, tiles of 8', {
      rows: 100, heads: 2, kvHeads: 1, headDim: 16, nKeys: 100, causal: false, pos0: 0, tiled: { rows: 16, keys: 8 }, temp: [0, 100], vectors: true,
      steer: [[0, 100], [99, 100]], ranges: segments([0, 7, 30, 31, 64, 100]),
    }],
    ['random ranges, D 40, blocks of 16, tiles of 16', {
      rows: 33, heads: 3, kvHeads: 3, headDim: 40, nKeys: 180, causal: false, pos0: 0, tiled: { rows: 16, keys: 16 }, temp: [4, 28],
      ranges: randomRanges(33, 180, 120, 12),
    }],
    ['knockout (row 3 fully blocked), D 64, GQA 6/3, causal pos0 127, blocks of 4, tiles of 16', {
      rows: 13, heads: 6, kvHeads: 3, headDim: 64, nKeys: 140, causal: true, pos0: 127, tiled: { rows: 4, keys: 16 }, temp: [0, 13], vectors: true,
      steer: [[0, 13], [12, 13], [0, 2]], knock: 5,
    }],
    ['knockout + key ranges + patch (non-causal), D 40, blocks of 8, tiles of 8', {
      rows: 17, heads: 6, kvHeads: 2, headDim: 40, nKeys: 120, causal: false, pos0: 0, tiled: { rows: 8, keys: 8 }, temp: [0, 17], vectors: true,
      steer: [[0, 17], [16, 17]], knock: 6, ranges: segments([0, 50, 51, 120]).slice(40, 57), patch: [[2, 3], [9, 0]],
    }],
    ['one key per tile, fewer rows than a block, D 16', {
      rows: 3, heads: 2, kvHeads: 1, headDim: 16, nKeys: 37, causal: true, pos0: 34, tiled: { rows: 16, keys: 1 }, temp: [0, 3], vectors: true, steer: [[0, 3]],
    }],
  ];
  for (const [name, c] of cases) {
    it(name, async () => {
      const r = await runBoth(c);
      expect(r.plan.tile, r.plan.reason).not.toBeNull();
      if (typeof c.tiled === 'object') expect(r.plan.tile).toMatchObject(c.tiled);
      expect(r.kernels.get('attention_tiled')?.dispatches).toBe(1);
      expect(r.kernels.get('attention')?.dispatches).toBe(1); // main, the comparison
      expectClose(r.tiled, r.want, 2e-5, 1e-4, 'tiled z vs float64');
      expectClose(r.main, r.want, 2e-5, 1e-4, 'main z vs float64');
      expectClose(r.tiled, r.main, 1e-6, 1e-5, 'tiled z vs main');
      expect(r.tiled.every(Number.isFinite)).toBe(true);
    });
  }

  it('the rule\'s blocking at D 40 / 64 / 128 / 256 stays in this adapter\'s limits', async () => {
    const ctx = await gpuContext();
    const p = { ...adapterProfile(ctx), maxStorageBuffers: ctx.limits.maxStorageBuffersPerShaderStage };
    for (const headDim of [40, 64, 128, 256]) {
      // The cases above run D 128 and 256 with this blocking (a pipeline costs ~1 s to compile on SwiftShader).
      const tile = planAttention(p, { rows: 18, heads: 2, headDim, nKeys: 70, capture: false, partialBuffers: 6 }, undefined, true).tile!;
      expect(tile.threads).toBeLessThanOrEqual(p.maxInvocations);
      expect(tile.bytes).toBeLessThanOrEqual(p.maxWorkgroupStorage);
      expect(tile.lanes * 4).toBeGreaterThanOrEqual(headDim);
    }
  });

  it('empty ranges give z 0 before the head vectors: exactly the steering vector, or 0, as main', async () => {
    const c: Case = {
      rows: 6, heads: 4, kvHeads: 2, headDim: 16, nKeys: 120, causal: false, pos0: 0, tiled: { rows: 4, keys: 16 }, vectors: true,
      steer: [[0, 6], [0, 6], [0, 6]], ranges: [[5, 5], [90, 10], [300, 400], [0, 0], [120, 121], [119, 119]],
    };
    const r = await runBoth(c);
    expectEmptyRangeZ(c, r.x, r.tiled, r.main);
  });

  it('no per-head features: binds K and V up to the last key, as main', async () => {
    const c: Case = { rows: 20, heads: 4, kvHeads: 2, headDim: 32, nKeys: 150, causal: true, pos0: 130, tiled: { rows: 16, keys: 16 }, temp: [0, 20] };
    const r = await runBoth(c, 20);
    const bytes = c.nKeys * c.kvHeads * c.headDim * 4;
    expect(r.kernels.get('attention_tiled')!.bound.get(r.args.k.buffer)).toBe(bytes);
    expect(r.kernels.get('attention_tiled')!.bound.get(r.args.v.buffer)).toBe(bytes);
    expect(r.kernels.get('attention')!.bound.get(r.args.k.buffer)).toBe(bytes);
    expectClose(r.tiled, r.want, 2e-5, 1e-4, 'tiled z vs float64');
    expectClose(r.tiled, r.main, 1e-6, 1e-5, 'tiled z vs main');
  });
});

describe('tiled fall-backs give main', () => {
  it('a pattern capture runs the single pass even when tiled is forced (solo on a CPU adapter): same z and pattern as main, bit for bit', async () => {
    const ctx = await gpuContext();
    const c: Case = { rows: 20, heads: 4, kvHeads: 2, headDim: 32, nKeys: 130, causal: true, pos0: 110, tiled: true, temp: [0, 20], vectors: true, steer: [[0, 20]] };
    const x = inputs(c, 40);
    const args = upload(ctx, c, x);
    const out = () => ({ z: ctx.activation([c.rows, c.heads * c.headDim], 'z'), pattern: ctx.activation([c.heads, c.rows, c.nKeys], 'pattern') });
    const [forced, plain] = [out(), out()];
    const plan = attentionPlan(ctx, { ...args, pattern: forced.pattern, tiled: true });
    expect(plan.tile).toBeNull();
    expect(plan.reason).toMatch(/pattern capture/);
    const counters = ctx.countWork();
    const before = counters.snapshot();
    const rec = ctx.recorder();
    attention(ctx, rec, { ...args, ...forced, tiled: true });
    attention(ctx, rec, { ...args, ...plain, tiled: false, solo: false });
    rec.submit();
    const k = counters.since(before).kernels;
    expect(k.get('attention_solo')?.dispatches ?? 0).toBe(plan.solo ? 1 : 0);
    expect(k.get('attention')?.dispatches).toBe(plan.solo ? 1 : 2);
    ctx.counters = null;
    expect(Array.from(await read(ctx, forced.z))).toEqual(Array.from(await read(ctx, plain.z)));
    expect(Array.from(await read(ctx, forced.pattern))).toEqual(Array.from(await read(ctx, plain.pattern)));
    expectClose(await read(ctx, forced.z), expected(c, x), 2e-5, 1e-4, 'z');
  });

  it('variants run main even when tiled is forced: same z, bit for bit', async () => {
    const c: Case = { rows: 4, heads: 4, kvHeads: 2, headDim: 40, nKeys: 204, causal: true, pos0: 200, tiled: true, temp: [0, 4], vectors: true, steer: [[0, 4]], variants: 200, patch: [[2, 0]] };
    const r = await runBoth(c);
    expect(r.plan.tile).toBeNull();
    expect(r.plan.reason).toMatch(/variants/);
    expect(r.kernels.get('attention_tiled')).toBeUndefined();
    expect(Array.from(r.tiled)).toEqual(Array.from(r.main));
    expectClose(r.tiled, r.want, 2e-5, 1e-4, 'z');
  });

  it('no query rows: nothing dispatched', async () => {
    const ctx = await gpuContext();
    const c: Case = { rows: 1, heads: 2, kvHeads: 2, headDim: 16, nKeys: 40, causal: false, pos0: 0, tiled: true };
    const args = upload(ctx, c, inputs(c, 50));
    const rec = ctx.recorder();
    attention(ctx, rec, { ...args, rows: 0, z: ctx.activation([1, 32], 'z'), tiled: true });
    expect(rec.dispatchCount).toBe(0);
  });
});

describe('tiled selection rule', () => {
  const limits = { maxComputeInvocationsPerWorkgroup: 256, maxComputeWorkgroupStorageSize: 16384, maxComputeWorkgroupsPerDimension: 65535 };
  /** The profile adapterProfile makes of an adapter by this name (its CPU_ADAPTER test), plus its binding limit. */
  const named = (adapterName: string, over: Partial<typeof limits> = {}) => ({
    ...adapterProfile({ gpu: { adapterName }, limits: { ...limits, ...over } } as unknown as GpuContext),
    maxStorageBuffers: 10,
  });
  const prefill = (rows: number, nKeys: number, heads = 32, headDim = 128): AttentionShape => ({
    rows, heads, headDim, nKeys, capture: false, partialBuffers: 6, tiledBuffers: 6,
  });
  const gpu = named('nvidia hopper NVIDIA H100 80GB HBM3');

  it('CPU adapters keep main unless forced', () => {
    for (const name of ['Google SwiftShader Device (Subzero)', 'llvmpipe (LLVM 15.0.6, 256 bits)']) {
      const p = named(name);
      const plan = planAttention(p, prefill(1024, 1024));
      expect(plan.tile, name).toBeNull();
      expect(plan.split).toBe(false);
      expect(plan.reason).toMatch(/CPU adapter/);
      expect(planAttention(p, prefill(1024, 1024), undefined, true).tile).not.toBeNull();
    }
  });

  it('a GPU tiles from TILED_MIN_ROWS rows and TILED_MIN_KEYS keys, and not below', () => {
    expect(planAttention(gpu, prefill(TILED_MIN_ROWS, TILED_MIN_KEYS)).tile).not.toBeNull();
    expect(planAttention(gpu, prefill(4096, 4096)).tile).not.toBeNull();
    expect(planAttention(gpu, prefill(TILED_MIN_ROWS - 1, 4096)).reason).toMatch(/15 query rows: fewer than a block of 16/);
    expect(planAttention(gpu, prefill(4096, TILED_MIN_KEYS - 1)).reason).toMatch(/127 keys: fewer than 128 to tile/);
    expect(planAttention(gpu, prefill(4096, TILED_MIN_KEYS - 1)).tile).toBeNull();
    // The reason says why split KV was not taken either.
    expect(planAttention(gpu, prefill(4096, 4096)).reason).toMatch(/already fill the GPU; tiled: /);
  });

  it('split KV comes first: few (row, head) workgroups over many keys split, even with a block of rows', () => {
    const plan = planAttention(gpu, prefill(16, 4096, 8));
    expect(plan.split).toBe(true);
    expect(plan.tile).toBeNull();
    const off = planAttention(gpu, prefill(16, 4096, 8), false);
    expect(off.split).toBe(false);
    expect(off.tile).not.toBeNull();
    expect(off.reason).toMatch(/split KV forced off; tiled/);
  });

  it('forced off, a capture, variants, too many bindings, a tile that does not fit: main', () => {
    expect(planAttention(gpu, prefill(4096, 4096), undefined, false).tile).toBeNull();
    expect(planAttention(gpu, prefill(4096, 4096), false, false).reason).toBe('forced single pass');
    expect(planAttention(gpu, { ...prefill(4096, 4096), capture: true }, undefined, true).reason).toMatch(/pattern capture/);
    expect(planAttention(gpu, { ...prefill(4096, 4096), variants: true }).reason).toMatch(/variants: the single pass/);
    expect(planAttention(gpu, { ...prefill(4096, 4096), variants: true }, undefined, true).tile).toBeNull();
    expect(planAttention(gpu, { ...prefill(4096, 4096), tiledBuffers: 11 }).reason).toMatch(/tiled kernel would bind 11 storage buffers, the adapter allows 10/);
    expect(planAttention(gpu, { ...prefill(4096, 4096), tiledBuffers: 10 }).tile).not.toBeNull();
    expect(planAttention(gpu, { ...prefill(4096, 4096), rows: 0 }, undefined, true).tile).toBeNull();
    // 4 rows x 1 key at head_dim 256 need 4 * (1024 + 257 + 8) bytes.
    const tiny = named('AMD RDNA3', { maxComputeWorkgroupStorageSize: 4 * (1024 + 257 + 8) - 4 });
    expect(planAttention(tiny, prefill(4096, 4096, 32, 256)).reason).toMatch(/needs 5156 bytes of workgroup memory, the adapter has 5152/);
    expect(planAttention(tiny, prefill(4096, 4096, 32, 256), undefined, true).tile).toBeNull();
    expect(planAttention(gpu, prefill(4096, 4096, 32, 256), undefined, { keys: 64 }).reason).toMatch(/needs .* bytes of workgroup memory/);
    expect(planAttention(gpu, prefill(4096, 4096, 32, 256), undefined, { rows: 8 }).reason).toMatch(/8 rows of 64 lanes exceed the adapter's 256 invocations/);
  });

  it('bad forced sizes and both paths forced are errors', () => {
    expect(() => planAttention(gpu, prefill(64, 256), undefined, { rows: TILE_MAX_ROWS + 1 })).toThrow(/tile rows 17/);
    expect(() => planAttention(gpu, prefill(64, 256), undefined, { keys: 0 })).toThrow(/tile keys 0/);
    expect(() => planAttention(gpu, prefill(64, 256), undefined, { keys: 2.5 })).toThrow(/tile keys 2.5/);
    expect(() => planAttention(gpu, prefill(64, 256), true, true)).toThrow(/both forced/);
    expect(() => planAttention(gpu, prefill(64, 256), { chunk: 64 }, { rows: 4 })).toThrow(/both forced/);
  });

  it('the blocking: lanes own <= 4 dims, threads and bytes within the limits, tiles shrink as head_dim grows', () => {
    for (const [inv, storage] of [[256, 16384], [256, 32768], [1024, 32768], [1024, 65536]]) {
      const p = named('nvidia', { maxComputeInvocationsPerWorkgroup: inv, maxComputeWorkgroupStorageSize: storage });
      let keysBefore = Infinity;
      for (const hd of [40, 64, 128, 256]) {
        const t = planAttention(p, prefill(8192, 8192, 32, hd)).tile!;
        expect(t.lanes).toBe(attentionWorkgroup(hd));
        expect(t.threads).toBe(t.rows * t.lanes);
        expect(t.threads).toBeLessThanOrEqual(inv);
        expect(t.bytes).toBe(tileBytes(t.rows, t.keys, hd));
        expect(t.bytes).toBeLessThanOrEqual(storage);
        expect(t.keys).toBeLessThanOrEqual(TILE_MAX_KEYS);
        expect(t.rows).toBeLessThanOrEqual(TILE_MAX_ROWS);
        // The next power of two of keys would not fit (unless at the maximum).
        if (t.keys < TILE_MAX_KEYS) expect(tileBytes(t.rows, 2 * t.keys, hd)).toBeGreaterThan(storage);
        expect(t.keys * t.rows).toBeLessThanOrEqual(keysBefore);
        keysBefore = t.keys * t.rows;
      }
    }
    // The WebGPU minimum limits (256 invocations, 16 KiB): head_dim 256 takes 4 rows x 8 keys.
    expect(planAttention(gpu, prefill(8192, 8192, 32, 256)).tile).toMatchObject({ rows: 4, keys: 8, lanes: 64, threads: 256 });
    expect(planAttention(gpu, prefill(8192, 8192, 32, 64)).tile).toMatchObject({ rows: 16, keys: 16, lanes: 16, threads: 256 });
  });

  it('blocks shrink (not below TILE_MIN_ROWS) until blocks x heads reach SPLIT_TARGET_WORKGROUPS, and to the rows', () => {
    const p = named('nvidia', { maxComputeInvocationsPerWorkgroup: 1024, maxComputeWorkgroupStorageSize: 32768 });
    expect(planAttention(p, prefill(4096, 4096, 32, 64)).tile!.rows).toBe(TILE_MAX_ROWS);
    // 256 rows x 8 heads: 16 x 8 = 128 workgroups with blocks of 16, 256 with blocks of 8.
    expect(planAttention(p, prefill(256, 4096, 8, 64)).tile!.rows).toBe(8);
    expect(Math.ceil(256 / 8) * 8).toBe(SPLIT_TARGET_WORKGROUPS);
    expect(planAttention(p, prefill(64, 4096, 1, 64), false).tile!.rows).toBe(TILE_MIN_ROWS);
    expect(planAttention(p, prefill(3, 4096, 512, 64), undefined, true).tile!.rows).toBe(TILE_MIN_ROWS);
  });

  it('K / V rows read: main once per (row, head), tiled once per (block, head)', () => {
    const main = planAttention(gpu, prefill(256, 256, 1, 64), false, false);
    const tiled = planAttention(gpu, prefill(256, 256, 1, 64), false, { rows: 16 });
    expect(tiled.tile!.rows).toBe(16);
    // Causal from 0: row i sees i + 1 keys; block b (rows 16b .. 16b + 15) loads keys 0 .. 16b + 15.
    expect(attentionKvReads(main, { rows: 256, heads: 1, nKeys: 256, pos0: 0, causal: true })).toBe(2 * (256 * 257) / 2);
    expect(attentionKvReads(tiled, { rows: 256, heads: 1, nKeys: 256, pos0: 0, causal: true })).toBe(2 * 16 * ((16 * 17) / 2));
    // Non-causal: exactly the block's rows fewer; a partial last block reads its keys once too.
    expect(attentionKvReads(main, { rows: 40, heads: 3, nKeys: 100, pos0: 0, causal: false })).toBe(2 * 3 * 40 * 100);
    expect(attentionKvReads(tiled, { rows: 40, heads: 3, nKeys: 100, pos0: 0, causal: false })).toBe(2 * 3 * 3 * 100);
  });

  it('this adapter: attention follows planAttention on its own profile', async () => {
    const ctx = await gpuContext();
    const own = planAttention({ ...adapterProfile(ctx), maxStorageBuffers: ctx.limits.maxStorageBuffersPerShaderStage }, { ...prefill(512, 512), variants: false, kv4: true });
    expect(attentionPlan(ctx, { rows: 512, heads: 32, headDim: 128, nKeys: 512, pattern: null, keyRanges: null, knockout: null })).toEqual(own);
    expect(own.tile !== null).toBe(!adapterProfile(ctx).cpu);
  });
});
