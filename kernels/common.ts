// Shared launcher pieces: dtype loaders for weight bindings, activation selection, tensor views.

import dtypeSource from '../shaders/dtype.wgsl';
import activationSource from '../shaders/activations.wgsl';
import type { GpuContext } from '../src/gpu/context.js';
import type { DType, Tensor } from '../src/gpu/tensor.js';
import type { Defines } from '../src/gpu/wgsl.js';
export { type Activation, activationDefines, parseActivation } from './activation.js';

export const ACTIVATIONS_WGSL = activationSource;

/**
 * WGSL for `fn load_<name>(i: u32) -> f32` reading element i of the weight binding `<name>` in `dtype`, plus a
 * define naming the variant so the pipeline cache keys differ by dtype.
 */
export function weightLoader(name: string, dtype: DType): { code: string; define: string } {
  const body =
    dtype === 'f32'
      ? `return bitcast<f32>(${name}[i]);`
      : `return unpack_${dtype}(${name}[i >> 1u], (i & 1u) == 1u);`;
  return {
    code: `fn load_${name}(i: u32) -> f32 {\n  ${body}\n}\n`,
    define: `${name.toUpperCase()}_${dtype.toUpperCase()}`,
  };
}

/** Assemble a shader: dtype helpers, generated loaders, optional activations, then the kernel file. */
export function assemble(
  kernelSource: string,
  weights: Record<string, DType>,
  opts: { activations?: boolean } = {},
): { source: string; defines: Defines } {
  const parts = [dtypeSource];
  const defines: Defines = {};
  for (const [name, dtype] of Object.entries(weights)) {
    const l = weightLoader(name, dtype);
    parts.push(l.code);
    defines[l.define] = true;
  }
  if (opts.activations) parts.push(activationSource);
  parts.push(kernelSource);
  return { source: parts.join('\n'), defines };
}

/** A row view of a 2-D activation: rows [offset, offset+rows) with `stride` elements between rows. */
export interface RowView {
  tensor: Tensor;
  rows: number;
  cols: number;
  /** Element offset of the first row's first element. */
  offset: number;
  /** Elements between consecutive rows. */
  stride: number;
}

/** The whole of a 2-D tensor (or a higher-rank one seen as [prod(leading), last]) as a row view. */
export function rows(t: Tensor, first = 0, count?: number): RowView {
  const cols = t.shape[t.shape.length - 1];
  const total = t.numel / cols;
  const n = count ?? total - first;
  if (first < 0 || first + n > total) {
    throw new Error(`row view [${first}, ${first + n}) outside ${t.label} with ${total} rows`);
  }
  return { tensor: t, rows: n, cols, offset: first * cols, stride: cols };
}

export function checkDtype(t: Tensor, allowed: DType[], what: string): void {
  if (!allowed.includes(t.dtype)) throw new Error(`${what}: tensor ${t.label} has dtype ${t.dtype}, expected ${allowed.join(' or ')}`);
}

/** An f32 view inside its tensor; a written view's rows must not overlap. */
export function checkView(fn: string, v: RowView, what: string, written: boolean): void {
  const t = v.tensor;
  checkDtype(t, ['f32'], `${fn} ${what}`);
  for (const k of ['rows', 'cols', 'offset', 'stride'] as const) {
    if (!Number.isInteger(v[k]) || v[k] < 0) throw new Error(`${fn}: ${what} view of ${t.label} has ${k} ${v[k]}`);
  }
  if (v.rows === 0 || v.cols === 0) return;
  const end = v.offset + (v.rows - 1) * v.stride + v.cols;
  if (end > t.numel) {
    throw new Error(
      `${fn}: ${what} view of ${t.label} (${v.rows}x${v.cols}, offset ${v.offset}, stride ${v.stride}) ends at element ${end} ` +
        `but the tensor has ${t.numel}`,
    );
  }
  if (written && v.rows > 1 && v.stride < v.cols) {
    throw new Error(`${fn}: ${what} view of ${t.label} has stride ${v.stride} < ${v.cols} columns: its rows overlap`);
  }
}

/**
 * Bytes [begin, end) of `buffer` as a storage binding, its start rounded down to the adapter's offset alignment.
 * A kernel bound this way indexes from the binding's start, so its element offsets drop `skipped` (the elements
 * of `elemBytes` before the binding). Binding only what a dispatch touches keeps the bytes bound per dispatch
 * near what it reads: a decode step writes one row of the KV cache and reads one row of the embedding table,
 * and binds those rather than the whole cache and table.
 */
export function bindRange(ctx: GpuContext, buffer: GPUBuffer, begin: number, end: number, elemBytes = 4): { binding: { buffer: GPUBuffer; offset: number; size: number }; skipped: number } {
  if (!(begin >= 0 && end > begin && end <= buffer.size)) {
    throw new Error(`bindRange: bytes [${begin}, ${end}) outside ${buffer.label || 'a buffer'} of ${buffer.size} bytes`);
  }
  const align = ctx.limits.minStorageBufferOffsetAlignment;
  const offset = Math.floor(begin / align) * align;
  // Storage binding sizes are multiples of 4; 16 keeps a vec4 array's last element whole.
  const size = Math.min(buffer.size, Math.ceil(end / 16) * 16) - offset;
  return { binding: { buffer, offset, size }, skipped: offset / elemBytes };
}

/** bindRange over the elements a row view covers (f32 activations). */
export function bindView(ctx: GpuContext, v: RowView): { binding: { buffer: GPUBuffer; offset: number; size: number }; skipped: number } {
  const end = v.rows === 0 ? v.offset + 1 : v.offset + (v.rows - 1) * v.stride + v.cols;
  return bindRange(ctx, v.tensor.buffer, v.offset * 4, end * 4);
}

/**
 * A launcher's scratch buffer, one per context and purpose (label), grown on demand to at least `floats` f32.
 * Dispatches run in recording order, so successive calls of one step can share it. A grown-out buffer may still be
 * referenced by a recorded, not yet submitted step, so it is kept, not destroyed (scratch is small: partial sums).
 */
const scratch = new WeakMap<GpuContext, Map<string, { buffer: GPUBuffer; floats: number; retired: GPUBuffer[] }>>();

export function scratchBuffer(ctx: GpuContext, label: string, floats: number): GPUBuffer {
  let mine = scratch.get(ctx);
  if (!mine) scratch.set(ctx, (mine = new Map()));
  let s = mine.get(label);
  if (!s || s.floats < floats) {
    const size = Math.max(floats, (s?.floats ?? 0) * 2, 1024);
    const buffer = ctx.createBuffer(size * 4, GPUBufferUsage.STORAGE, label);
    s = { buffer, floats: size, retired: s ? [...s.retired, s.buffer] : [] };
    mine.set(label, s);
  }
  return s.buffer;
}
