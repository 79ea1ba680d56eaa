import { describe, expect, it } from 'vitest';
import { embed } from '../kernels/embed.js';
import { rows, type RowView } from '../kernels/common.js';
import { GpuContext } from '../src/gpu/context.js';
import { expectClose, gpuContext, randn, read, rng, upload } from './helpers/gpu.js';
import { RowSplitTensor, type DType, type Weight } from '../src/gpu/tensor.js';

/** The same device seen with a lower workgroups-per-dimension limit, so the folded dispatch runs cheaply. */
function lowLimit(ctx: GpuContext, max: number): GpuContext {
  return new GpuContext({ ...ctx.gpu, limits: { ...ctx.gpu.limits, maxComputeWorkgroupsPerDimension: max } });
}

function u32Buffer(ctx: GpuContext, data: Uint32Array | Int32Array, label: string): GPUBuffer {
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const b = ctx.createBuffer(data.byteLength, usage, label);
  ctx.writeBytes(b, 0, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  return b;
}

/** Reference: out[r] = map[r] >= 0 ? data[map[r]] : table[min(ids[off + r], vocab - 1)]. */
function refEmbed(ids: Uint32Array, off: number, R: number, table: Float32Array, vocab: number, D: number, map?: Int32Array, data?: Float32Array) {
  const out = new Float32Array(R * D);
  for (let r = 0; r < R; r++) {
    const k = map ? map[r] : -1;
    if (k >= 0) out.set(data!.subarray(k * D, (k + 1) * D), r * D);
    else {
      const id = Math.min(ids[off + r], vocab - 1);
      out.set(table.subarray(id * D, (id + 1) * D), r * D);
    }
  }
  return out;
}

/**
 * Embed ids[off..off + R] with knownIds, counting the work: checks the rows against the reference and returns the
 * counts of that one call.
 */
async function embedKnown(ctx: GpuContext, idsBuf: GPUBuffer, ids: Uint32Array, off: number, R: number, table: Weight, tq: Float32Array) {
  const c = ctx.countWork();
  try {
    const [vocab, D] = table.shape;
    const out = ctx.activation([R, D], 'h');
    const before = c.snapshot();
    const rec = ctx.recorder();
    embed(ctx, rec, { ids: idsBuf, idsOffset: off, rows: R, table, out: rows(out), knownIds: [...ids.subarray(off, off + R)] });
    rec.submit();
    expectClose(await read(ctx, out), refEmbed(ids, off, R, tq, vocab, D), 0, 0, `ids ${off}..${off + R}`);
    return c.since(before);
  } finally {
    ctx.counters = null;
  }
}

describe('embed kernel', () => {
  const cases: [number, number, number, DType][] = [
    [1, 1, 1, 'f32'],
    [7, 50, 9, 'f32'],
    [13, 33, 1000, 'f16'],
    [5, 11, 4099, 'bf16'],
    [300, 1000, 64, 'f16'],
  ];
  for (const [R, vocab, D, dtype] of cases) {
    it(`rows=${R} vocab=${vocab} D=${D} ${dtype}`, async () => {
      const ctx = await gpuContext();
      const r = rng(R + D);
      const ids = Uint32Array.from({ length: R + 3 }, () => Math.floor(r() * vocab));
      const idsBuf = u32Buffer(ctx, ids, 'ids');
      const [table, tq] = upload(ctx, randn(vocab * D, D, 0.5), [vocab, D], dtype, 'embed_tokens.weight');
      const out = ctx.activation([R, D], 'h');
      const rec = ctx.recorder();
      embed(ctx, rec, { ids: idsBuf, idsOffset: 2, rows: R, table, out: rows(out) });
      rec.submit();
      expectClose(await read(ctx, out), refEmbed(ids, 2, R, tq, vocab, D), 0);
    });
  }

  for (const dtype of ['f32', 'f16', 'bf16'] as DType[]) {
    it(`scatters image features over mapped rows (${dtype} table, strided output)`, async () => {
      const ctx = await gpuContext();
      const [R, vocab, D, n] = [12, 20, 37, 5];
      const ids = Uint32Array.from({ length: R }, (_, i) => (i * 7) % vocab);
      const map = Int32Array.from([-1, -1, 0, 1, 2, -1, 3, 4, -1, -1, 0, -1]);
      const [table, tq] = upload(ctx, randn(vocab * D, 3), [vocab, D], dtype, 'table');
      const ds = randn(n * D, 4);
      const data = ctx.uploadF32(ds, [n, D], 'image_features');
      const out = ctx.uploadF32(new Float32Array(R * 40).fill(9), [R, 40], 'h');
      const view: RowView = { tensor: out, rows: R, cols: D, offset: 2, stride: 40 };
      const rec = ctx.recorder();
      embed(ctx, rec, {
        ids: u32Buffer(ctx, ids, 'ids'),
        rows: R,
        table,
        features: { map: u32Buffer(ctx, map, 'map'), data },
        out: view,
      });
      rec.submit();
      const got = await read(ctx, out);
      const want = refEmbed(ids, 0, R, tq, vocab, D, map, ds);
      for (let r = 0; r < R; r++) {
        expectClose(got.subarray(r * 40 + 2, r * 40 + 2 + D), want.subarray(r * D, (r + 1) * D), 0);
        expect([got[r * 40], got[r * 40 + 1], got[r * 40 + 39]]).toEqual([9, 9, 9]);
      }
    });
  }

  it('clamps ids past the vocabulary and map entries past the data instead of reading out of bounds', async () => {
    const ctx = await gpuContext();
    const [vocab, D] = [4, 3];
    const [table, tq] = upload(ctx, randn(vocab * D, 5), [vocab, D], 'f16', 'table');
    const ds = randn(2 * D, 6);
    const data = ctx.uploadF32(ds, [2, D], 'data');
    const ids = Uint32Array.from([0, 4, 0xffffffff, 3]);
    const map = Int32Array.from([-1, -1, -1, 7]);
    const out = ctx.activation([4, D], 'h');
    const rec = ctx.recorder();
    embed(ctx, rec, { ids: u32Buffer(ctx, ids, 'ids'), rows: 4, table, features: { map: u32Buffer(ctx, map, 'map'), data }, out: rows(out) });
    rec.submit();
    const got = await read(ctx, out);
    expectClose(got.subarray(0, D), tq.subarray(0, D), 0);
    expectClose(got.subarray(D, 2 * D), tq.subarray(3 * D, 4 * D), 0);
    expectClose(got.subarray(2 * D, 3 * D), tq.subarray(3 * D, 4 * D), 0);
    expectClose(got.subarray(3 * D, 4 * D), ds.subarray(D, 2 * D), 0);
  });

  it('folds a large element count over a 2-D dispatch (limit lowered to 5)', async () => {
    const ctx = lowLimit(await gpuContext(), 5);
    const [R, vocab, D] = [31, 17, 100]; // 3100 elements = 13 workgroups -> [5, 3]
    const ids = Uint32Array.from({ length: R }, (_, i) => (i * 5 + 3) % vocab);
    const [table, tq] = upload(ctx, randn(vocab * D, 8), [vocab, D], 'bf16', 'table');
    const out = ctx.activation([R, D], 'h');
    const rec = ctx.recorder();
    embed(ctx, rec, { ids: u32Buffer(ctx, ids, 'ids'), rows: R, table, out: rows(out) });
    rec.submit();
    expectClose(await read(ctx, out), refEmbed(ids, 0, R, tq, vocab, D), 0);
  });

  it('refuses an output view of the wrong width and too few ids, naming them', async () => {
    const ctx = await gpuContext();
    const table = ctx.activation([10, 8], 'embed_tokens.weight');
    const ids = u32Buffer(ctx, new Uint32Array(4), 'token_ids');
    const out = ctx.activation([4, 6], 'hidden');
    expect(() => embed(ctx, ctx.recorder(), { ids, rows: 4, table, out: rows(out) })).toThrow(
      /output hidden view is 4x6, expected 4x8 \(rows x the width of embed_tokens.weight\)/,
    );
    const out8 = ctx.activation([4, 8], 'hidden8');
    expect(() => embed(ctx, ctx.recorder(), { ids, idsOffset: 1, rows: 4, table, out: rows(out8) })).toThrow(
      /ids buffer token_ids holds 4 ids, needs 5/,
    );
  });

  for (const dtype of ['f32', 'f16', 'bf16'] as DType[]) {
    it(`known ids (decode): the same rows, binding only the table rows they name (${dtype}, rows not aligned)`, async () => {
      const ctx = await gpuContext();
      const [vocab, D] = [1000, 37];
      const ids = new Uint32Array([5, 613, 999, 640, 0]);
      const idsBuf = u32Buffer(ctx, ids, 'ids');
      const [table, tq] = upload(ctx, randn(vocab * D, 77, 0.5), [vocab, D], dtype, 'embed_tokens.weight');
      for (const [off, R] of [[1, 1], [2, 1], [1, 3], [4, 1]] as const) {
        const d = await embedKnown(ctx, idsBuf, ids, off, R, table, tq);
        const known = [...ids.subarray(off, off + R)];
        const spanBytes = (Math.max(...known) - Math.min(...known) + 1) * D * (dtype === 'f32' ? 4 : 2);
        const bound = d.bound.get(table.buffer as GPUBuffer)!;
        expect(bound).toBeGreaterThanOrEqual(spanBytes);
        expect(bound).toBeLessThanOrEqual(spanBytes + ctx.limits.minStorageBufferOffsetAlignment + 16);
      }
    });
  }

  it('known ids with a table split in row blocks: blocks without any of them are not dispatched', async () => {
    const ctx = await gpuContext();
    const [vocab, D] = [300, 20];
    const values = randn(vocab * D, 88, 0.5);
    const [, tq] = upload(ctx, values, [vocab, D], 'f16', 'w');
    const starts = [0, 100, 200];
    const parts = starts.map((r0, i) => upload(ctx, values.subarray(r0 * D, (starts[i + 1] ?? vocab) * D), [(starts[i + 1] ?? vocab) - r0, D], 'f16', `embed[${r0}..]`)[0]);
    const table = new RowSplitTensor(parts, starts, [vocab, D], 'f16', 'embed_tokens.weight');
    const ids = new Uint32Array([150, 299, 101]);
    const idsBuf = u32Buffer(ctx, ids, 'ids');
    for (const [off, R, dispatches] of [[0, 1, 1], [0, 2, 2], [2, 1, 1]] as const) {
      expect((await embedKnown(ctx, idsBuf, ids, off, R, table, tq)).dispatches).toBe(dispatches);
    }
  });

  it('refuses known ids that do not match the rows or the vocabulary', async () => {
    const ctx = await gpuContext();
    const table = ctx.activation([10, 8], 'embed_tokens.weight');
    const ids = u32Buffer(ctx, new Uint32Array(4), 'token_ids');
    const out = ctx.activation([2, 8], 'hidden');
    expect(() => embed(ctx, ctx.recorder(), { ids, rows: 2, table, out: rows(out), knownIds: [1] })).toThrow(/knownIds has 1 ids for 2 rows/);
    expect(() => embed(ctx, ctx.recorder(), { ids, rows: 2, table, out: rows(out), knownIds: [1, 10] })).toThrow(
      /known id 10 is outside the vocabulary of embed_tokens.weight \(10 rows\)/,
    );
  });
});
