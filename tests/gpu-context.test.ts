import { describe, expect, it } from 'vitest';
import { preprocess } from '../src/gpu/wgsl.js';
import { GpuContext } from '../src/gpu/context.js';
import { attention } from '../kernels/attention.js';
import { gpuContext } from './helpers/gpu.js';

describe('GPU context', () => {
  it('surfaces a shader that does not compile as an error at the next readback, not as zeros', async () => {
    const ctx = await gpuContext();
    const out = ctx.activation([4], 'out');
    const kernel = ctx.kernel({
      name: 'broken',
      source: '@group(0) @binding(1) var<storage, read_write> y: array<f32>;\n@compute @workgroup_size(1) fn main() { y[0] = undefined_name; }',
      bindings: [null, 'write'],
    });
    const rec = ctx.recorder('broken-step');
    rec.dispatch(kernel, new ArrayBuffer(16), [null, out.buffer], [1]);
    rec.submit();
    await expect(ctx.readF32(out.buffer)).rejects.toThrow(/GPU error in compiling broken/);
    await expect(ctx.readF32(out.buffer)).resolves.toBeInstanceOf(Float32Array); // errors are reported once
  });

  it('refuses buffers over the adapter limits with the numbers', async () => {
    const ctx = await gpuContext();
    const tooBig = ctx.limits.maxBufferSize + 4;
    expect(() => ctx.createBuffer(tooBig, GPUBufferUsage.STORAGE, 'huge.weight')).toThrow(/buffer huge\.weight needs .* maxBufferSize is/);
  });

  it('refuses a kernel that binds more storage buffers than the adapter allows, with the numbers', async () => {
    const ctx = await gpuContext();
    const limit = ctx.limits.maxStorageBuffersPerShaderStage;
    const decls = Array.from({ length: limit + 1 }, (_, i) => `@group(0) @binding(${i + 1}) var<storage, read> b${i}: array<f32>;`).join('\n');
    const spec = (n: number) => ({
      name: `wide${n}`,
      source: `${decls}\n@compute @workgroup_size(1) fn main() {}`,
      bindings: [null, ...Array.from({ length: n }, () => 'read' as const)],
    });
    expect(() => ctx.kernel(spec(limit + 1))).toThrow(
      new RegExp(`kernel wide${limit + 1}: binds ${limit + 1} storage buffers, but this adapter allows ${limit} per shader stage`),
    );
    expect(() => ctx.kernel(spec(limit))).not.toThrow();
  });

  it("refuses attention with every optional binding on an adapter allowing the 8 WebGPU guarantees, and runs it with fewer", async () => {
    const base = await gpuContext();
    // The same device, seen as an adapter offering only the limit WebGPU guarantees.
    const ctx = new GpuContext({ ...base.gpu, limits: { ...base.gpu.limits, maxStorageBuffersPerShaderStage: 8 } });
    const [rows, heads, hd] = [3, 2, 4];
    const E = heads * hd;
    const t = (label: string) => ctx.uploadF32(Float32Array.from({ length: rows * E }, (_, i) => Math.sin(i + 1)), [rows, E], label);
    const q = t('q');
    const k = t('k');
    const v = t('v');
    const params = ctx.createBuffer(heads * 16, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, 'head_params');
    const image = ctx.createBuffer(rows * 4, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, 'key_is_image');
    const vectors = ctx.createBuffer(heads * 2 * hd * 4, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, 'head_vectors');
    const ranges = ctx.createBuffer(rows * 8, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, 'key_ranges');
    ctx.write(ranges, 0, Uint32Array.from({ length: 2 * rows }, (_, i) => (i % 2 ? rows : 0)));
    const bits = ctx.createBuffer(rows * 4, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, 'knockout');
    const z = ctx.activation([rows, E], 'z');
    const pattern = ctx.activation([heads, rows, rows], 'pattern');
    const args = { q, k, v, rows, heads, kvHeads: heads, headDim: hd, nKeys: rows, causal: true, pos0: 0, headParams: params, keyIsImage: image, z };
    const all = { ...args, pattern, headVectors: vectors, keyRanges: ranges, knockout: { bits, words: 1 } };
    expect(() => attention(ctx, ctx.recorder('all'), all)).toThrow(/kernel attention(_solo)?: binds 10 storage buffers, but this adapter allows 8 per shader stage/);
    const rec = ctx.recorder('fewer');
    attention(ctx, rec, { ...args, pattern, keyRanges: ranges });
    rec.submit();
    const got = await ctx.readF32(pattern.buffer, 0, heads * rows * rows);
    for (let h = 0; h < heads; h++) for (let r = 0; r < rows; r++) {
      const row = got.subarray((h * rows + r) * rows, (h * rows + r + 1) * rows);
      expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5); // causal rows of probabilities
    }
  });

  it('refuses dispatches over the per-dimension workgroup limit', async () => {
    const ctx = await gpuContext();
    const kernel = ctx.kernel({ name: 'noop', source: '@compute @workgroup_size(1) fn main() {}', bindings: [] });
    expect(() => ctx.recorder().dispatch(kernel, new ArrayBuffer(16), [], [70000])).toThrow(/exceeds the adapter's limit of 65535/);
  });
});

describe('GPU work counters', () => {
  const source = [
    '@group(0) @binding(1) var<storage, read> x: array<f32>;',
    '@group(0) @binding(2) var<storage, read_write> y: array<f32>;',
    '@compute @workgroup_size(1) fn main() { y[0] = x[0] + 1.0; }',
  ].join('\n');

  it('are off by default and count nothing', async () => {
    const ctx = await gpuContext();
    expect(ctx.counters).toBeNull();
    const x = ctx.activation([4], 'x');
    const y = ctx.activation([4], 'y');
    const rec = ctx.recorder();
    rec.dispatch(ctx.kernel({ name: 'plus1', source, bindings: [null, 'read', 'write'] }), new ArrayBuffer(16), [null, x.buffer, y.buffer], [1]);
    rec.submit();
    await ctx.readF32(y.buffer);
    expect(ctx.counters).toBeNull();
  });

  it('count submits, dispatches, bind groups, passes, copies, bytes bound per buffer and kernel, uploads, readbacks, allocations', async () => {
    const ctx = await gpuContext();
    const c = ctx.countWork();
    expect(ctx.countWork()).toBe(c); // kept when already on
    const before = c.snapshot();
    const x = ctx.uploadF32(new Float32Array(64).fill(2), [64], 'x'); // one buffer, one upload of 256 bytes
    const y = ctx.activation([16], 'y');
    const kernel = ctx.kernel({ name: 'plus1', source, bindings: ['uniform', 'read', 'write'] });
    const rec = ctx.recorder();
    rec.dispatch(kernel, new ArrayBuffer(16), [null, { buffer: x.buffer, offset: 0, size: 64 }, y.buffer], [1]);
    rec.dispatch(kernel, new ArrayBuffer(16), [null, x.buffer, y.buffer], [1]);
    rec.copy(y.buffer, 0, x.buffer, 0, 8);
    rec.dispatch(kernel, new ArrayBuffer(16), [null, x.buffer, y.buffer], [1]);
    rec.submit();
    expect((await ctx.readF32(y.buffer, 0, 1))[0]).toBe(4); // x[0] was set to y[0] = 3 by the copy
    const d = c.since(before);
    expect(d.submits).toBe(2); // the step and the readback's copy
    expect(d.dispatches).toBe(3);
    expect(d.bindGroups).toBe(2); // the second and third dispatch bind the same buffers: one group, reused
    expect(d.passes).toBe(2); // the copy splits the pass
    expect([d.copies, d.copyBytes]).toEqual([1, 8]);
    expect([d.readbacks, d.readbackBytes]).toEqual([1, 4]);
    expect(d.uploads).toBe(2); // x, then the step's uniform blocks
    expect(d.uploadBytes).toBe(256 + 3 * 256);
    expect(d.bound.get(x.buffer)).toBe(64 + 256 + 256); // a range counts its size, a whole buffer its own
    expect(d.bound.get(y.buffer)).toBe(3 * 64);
    expect(d.boundBytes()).toBe(576 + 192);
    expect(d.boundBytes((b) => b === y.buffer)).toBe(192);
    expect(d.kernels.get('plus1')).toMatchObject({ dispatches: 3, boundBytes: 768 });
    expect(d.boundBytes((b) => b === x.buffer, 'plus1')).toBe(576);
    expect(d.boundBytes(undefined, 'other')).toBe(0);
    expect(d.buffersCreated).toBe(2);
    expect(c.peakAllocatedBytes).toBeGreaterThanOrEqual(ctx.allocatedBytes);
    // A second interval counts only its own work.
    const mid = c.snapshot();
    const rec2 = ctx.recorder();
    rec2.dispatch(kernel, new ArrayBuffer(16), [null, x.buffer, y.buffer], [1]);
    rec2.submit();
    const d2 = c.since(mid);
    expect([d2.submits, d2.dispatches, d2.readbacks, d2.bindGroups]).toEqual([1, 1, 0, 0]);
    expect(d2.bound.get(x.buffer)).toBe(256);
    expect(d2.kernels.get('plus1')).toMatchObject({ dispatches: 1, boundBytes: 320 });
    expect([...d2.kernels.get('plus1')!.bound.values()]).toEqual([256, 64]);
    ctx.counters = null;
  });
});

describe('bind group reuse', () => {
  // y[slot] = value, both from the uniform block: every dispatch binds the same buffers, only its uniforms differ.
  const source = [
    'struct P { slot: u32, value: f32 }',
    '@group(0) @binding(0) var<uniform> p: P;',
    '@group(0) @binding(1) var<storage, read_write> y: array<f32>;',
    '@compute @workgroup_size(1) fn main() { y[p.slot] = p.value; }',
  ].join('\n');
  const uniforms = (slot: number, value: number) => {
    const b = new ArrayBuffer(16);
    new Uint32Array(b, 0, 1)[0] = slot;
    new Float32Array(b, 4, 1)[0] = value;
    return b;
  };

  it('one group serves dispatches that differ only in their uniforms, within a step and across steps', async () => {
    const ctx = await gpuContext();
    const kernel = ctx.kernel({ name: 'set_slot', source, bindings: ['uniform', 'write'] });
    const y = ctx.activation([8], 'y');
    const other = ctx.activation([8], 'other');
    const c = ctx.countWork();
    try {
      const before = c.snapshot();
      const rec = ctx.recorder();
      for (let i = 0; i < 4; i++) rec.dispatch(kernel, uniforms(i, 10 + i), [null, y.buffer], [1]);
      rec.submit();
      const rec2 = ctx.recorder();
      for (let i = 4; i < 8; i++) rec2.dispatch(kernel, uniforms(i, 10 + i), [null, y.buffer], [1]);
      rec2.dispatch(kernel, uniforms(0, 99), [null, { buffer: other.buffer, offset: 0, size: 16 }], [1]);
      rec2.submit();
      expect(Array.from(await ctx.readF32(y.buffer))).toEqual([10, 11, 12, 13, 14, 15, 16, 17]);
      expect((await ctx.readF32(other.buffer, 0, 1))[0]).toBe(99);
      const d = c.since(before);
      expect(d.dispatches).toBe(9);
      expect(d.bindGroups).toBe(2); // y, then the range of other
      // A destroyed buffer's groups are never handed to a new buffer: fresh buffers make fresh groups.
      ctx.destroyBuffer(y.buffer);
      const y2 = ctx.activation([8], 'y2');
      const mid = c.snapshot();
      const rec3 = ctx.recorder();
      rec3.dispatch(kernel, uniforms(3, 7), [null, y2.buffer], [1]);
      rec3.submit();
      expect((await ctx.readF32(y2.buffer, 12, 1))[0]).toBe(7);
      expect(c.since(mid).bindGroups).toBe(1);
    } finally {
      ctx.counters = null;
    }
  });
});

describe('WGSL preprocessor', () => {
  const src = ['a', '#if X', 'b', '#elif Y', 'c', '#else', 'd', '#endif', '#if !X', 'e', '#endif'].join('\n');
  it('selects branches by defines and keeps line numbers', () => {
    const lines = (d: Record<string, boolean>) => preprocess(src, d).split('\n').filter((l) => l);
    expect(lines({ X: true })).toEqual(['a', 'b']);
    expect(lines({ Y: true })).toEqual(['a', 'c', 'e']);
    expect(lines({})).toEqual(['a', 'd', 'e']);
    expect(preprocess(src, {}).split('\n')).toHaveLength(11);
  });
  it('reports unbalanced directives with the file and line', () => {
    expect(() => preprocess('#if X\na', {}, 'm.wgsl')).toThrow(/m\.wgsl: unterminated #if/);
    expect(() => preprocess('#endif', {}, 'm.wgsl')).toThrow(/m\.wgsl:1: #endif without #if/);
  });
});
