// The image-key span (AttentionArgs.imageKeySpan, define IMAGE_SPAN): when the caller knows the image keys are one run
// of positions, every attention path tests a key's position instead of loading its flag. Each path (main, solo,
// tiled, split KV) with the span gives z (and the pattern) bit-equal to the same call reading the flags, and the
// float64 reference; a bad span is refused by name. imageKeySpanAfter (the decoder's bookkeeping of its flag buffer)
// on both sides of each rule.

import { describe, expect, it } from 'vitest';
import { attention, attentionPlan, imageKeySpanAfter, type AttentionArgs } from '../kernels/attention.js';
import { type Case, expected, inputs, upload } from './helpers/attention-cases.js';
import { expectClose, gpuContext, read } from './helpers/gpu.js';

const paths: [string, Partial<AttentionArgs>][] = [
  ['main', { split: false, tiled: false, solo: false }],
  ['solo', { solo: true }],
  ['tiled', { tiled: { rows: 8, keys: 16 } }],
  ['split KV', { split: { chunk: 32 } }],
];

describe('attention with an image-key span', () => {
  const c: Case = { rows: 18, heads: 4, kvHeads: 2, headDim: 32, nKeys: 120, causal: true, pos0: 102, temp: [2, 15], vectors: true, steer: [[0, 18]], knock: 4 };
  const span: [number, number] = [7, 71];
  for (const [name, force] of paths) {
    it(`${name}: z equal to the flags' call bit for bit, and to float64`, async () => {
      const ctx = await gpuContext();
      const x = inputs(c, 60);
      x.img.fill(0);
      x.img.fill(1, span[0], span[1]);
      const args = upload(ctx, c, x);
      const zs = ctx.activation([c.rows, c.heads * c.headDim], 'z.span');
      const zf = ctx.activation([c.rows, c.heads * c.headDim], 'z.flags');
      const counters = ctx.countWork();
      const before = counters.snapshot();
      const rec = ctx.recorder();
      attention(ctx, rec, { ...args, ...force, z: zs, imageKeySpan: span });
      attention(ctx, rec, { ...args, ...force, z: zf });
      rec.submit();
      const keys = [...counters.since(before).kernels.keys()];
      ctx.counters = null;
      const plan = attentionPlan(ctx, { ...args, ...force });
      if (name === 'solo') expect(plan.solo).toBe(true);
      if (name === 'tiled') expect(plan.tile).not.toBeNull();
      if (name === 'split KV') expect(plan.split).toBe(true);
      expect(keys.length).toBeGreaterThan(0);
      const [s, f] = [await read(ctx, zs), await read(ctx, zf)];
      expect(Array.from(s)).toEqual(Array.from(f));
      expectClose(s, expected(c, x), 2e-5, 1e-4, `${name} z vs float64`);
    });
  }

  it('a pattern capture with the span equals the flags\' pattern', async () => {
    const ctx = await gpuContext();
    const x = inputs(c, 61);
    x.img.fill(0);
    x.img.fill(1, span[0], span[1]);
    const args = upload(ctx, c, x);
    const out = () => ({ z: ctx.activation([c.rows, c.heads * c.headDim], 'z'), pattern: ctx.activation([c.heads, c.rows, c.nKeys], 'pattern') });
    const [a, b] = [out(), out()];
    const rec = ctx.recorder();
    attention(ctx, rec, { ...args, ...a, imageKeySpan: span });
    attention(ctx, rec, { ...args, ...b });
    rec.submit();
    expect(Array.from(await read(ctx, a.pattern))).toEqual(Array.from(await read(ctx, b.pattern)));
    expect(Array.from(await read(ctx, a.z))).toEqual(Array.from(await read(ctx, b.z)));
  });

  it('a span that is not a range of positions is refused by name', async () => {
    const ctx = await gpuContext();
    const args = upload(ctx, c, inputs(c, 62));
    const z = ctx.activation([c.rows, c.heads * c.headDim], 'z');
    for (const bad of [[5, 4], [-1, 3], [0.5, 3]] as [number, number][]) {
      expect(() => attention(ctx, ctx.recorder(), { ...args, z, imageKeySpan: bad })).toThrow(/imageKeySpan \[.*\] is not a range of positions/);
    }
  });
});

describe('imageKeySpanAfter (the decoder\'s record of its image-key flags)', () => {
  const flags = (n: number, ones: number[]) => {
    const f = new Uint32Array(n);
    for (const j of ones) f[j] = 1;
    return f;
  };
  it('a write of the whole buffer decides afresh: one run, none, or not one run', () => {
    expect(imageKeySpanAfter(null, 0, flags(10, [3, 4, 5]), 10)).toEqual([3, 6]);
    expect(imageKeySpanAfter([1, 2], 0, flags(10, []), 10)).toEqual([0, 0]);
    expect(imageKeySpanAfter([3, 6], 0, flags(10, [3, 5]), 10)).toBeNull();
    expect(imageKeySpanAfter(null, 0, flags(12, [0, 11]), 10)).toBeNull();
  });
  it('a partial write keeps the span only when it writes no image key and misses the span', () => {
    expect(imageKeySpanAfter([3, 6], 8, flags(2, []), 10)).toEqual([3, 6]);
    expect(imageKeySpanAfter([3, 6], 6, flags(2, []), 10)).toEqual([3, 6]);
    expect(imageKeySpanAfter([3, 6], 0, flags(3, []), 10)).toEqual([3, 6]);
    expect(imageKeySpanAfter([3, 6], 5, flags(2, []), 10)).toBeNull(); // zeros over the span's last key
    expect(imageKeySpanAfter([3, 6], 8, flags(2, [0]), 10)).toBeNull(); // a new image key
    expect(imageKeySpanAfter([0, 0], 4, flags(3, []), 10)).toEqual([0, 0]);
    expect(imageKeySpanAfter(null, 4, flags(3, []), 10)).toBeNull();
  });
});
