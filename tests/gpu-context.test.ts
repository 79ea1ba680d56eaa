import { describe, expect, it } from 'vitest';
import { preprocess } from '../src/gpu/wgsl.js';
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

  it('refuses dispatches over the per-dimension workgroup limit', async () => {
    const ctx = await gpuContext();
    const kernel = ctx.kernel({ name: 'noop', source: '@compute @workgroup_size(1) fn main() {}', bindings: [] });
    expect(() => ctx.recorder().dispatch(kernel, new ArrayBuffer(16), [], [70000])).toThrow(/exceeds the adapter's limit of 65535/);
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
