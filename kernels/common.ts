// Shared launcher pieces: dtype loaders for weight bindings, activation selection, tensor views.

import dtypeSource from '../shaders/dtype.wgsl';
import activationSource from '../shaders/activations.wgsl';
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
