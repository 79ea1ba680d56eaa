// Launcher for shaders/norm.wgsl: LayerNorm (torch) and RMSNorm (HF Llama) over the rows of a view, one
// workgroup per row; weights in their stored dtype. The row sums use subgroups where the context does
// (ctx.subgroups), else workgroup memory alone (shaders/workgroup.wgsl).

import source from '../shaders/norm.wgsl';
import workgroupSource from '../shaders/workgroup.wgsl';
import type { GpuContext, Recorder } from '../src/gpu/context.js';
import { Uniforms, fold } from '../src/gpu/context.js';
import type { Tensor } from '../src/gpu/tensor.js';
import { type RowView, assemble, checkView } from './common.js';

export interface LayerNormArgs {
  x: RowView;
  /** Scale [cols]. */
  w: Tensor;
  /** Shift [cols], or null for a LayerNorm without bias. */
  b: Tensor | null;
  eps: number;
  /** Output view (rows x cols); must not share a buffer with `x`. */
  out: RowView;
}

export interface RmsNormArgs {
  x: RowView;
  /** Scale [cols]. */
  w: Tensor;
  eps: number;
  /** Output view (rows x cols); must not share a buffer with `x`. */
  out: RowView;
}

/** torch LayerNorm over the last dimension: (x - mean) / sqrt(var_biased + eps) * w + b. */
export function layerNorm(ctx: GpuContext, rec: Recorder, a: LayerNormArgs): void {
  norm(ctx, rec, 'layerNorm', a.x, a.w, a.b, a.eps, a.out);
}

/** HF Llama RMSNorm: w * (x * rsqrt(mean(x^2) + eps)). */
export function rmsNorm(ctx: GpuContext, rec: Recorder, a: RmsNormArgs): void {
  norm(ctx, rec, 'rmsNorm', a.x, a.w, null, a.eps, a.out);
}

function norm(
  ctx: GpuContext,
  rec: Recorder,
  fn: 'layerNorm' | 'rmsNorm',
  x: RowView,
  w: Tensor,
  b: Tensor | null,
  eps: number,
  out: RowView,
): void {
  const D = x.cols;
  checkView(fn, x, 'input', false);
  checkView(fn, out, 'output', true);
  if (D < 1) throw new Error(`${fn}: input ${x.tensor.label} view has no columns`);
  if (out.rows !== x.rows || out.cols !== D) {
    throw new Error(`${fn}: output ${out.tensor.label} view is ${out.rows}x${out.cols}, expected ${x.rows}x${D} like ${x.tensor.label}`);
  }
  if (w.numel !== D) throw new Error(`${fn}: weight ${w.label} has ${w.numel} elements, expected ${D} (the columns of ${x.tensor.label})`);
  if (b && b.numel !== D) throw new Error(`${fn}: bias ${b.label} has ${b.numel} elements, expected ${D} (the columns of ${x.tensor.label})`);
  if (!(eps >= 0) || !Number.isFinite(eps)) throw new Error(`${fn}: eps must be a finite number >= 0, got ${eps}`);
  if (x.tensor.buffer === out.tensor.buffer) {
    throw new Error(
      `${fn}: input ${x.tensor.label} and output ${out.tensor.label} share a buffer; WebGPU forbids binding a buffer ` +
        'as both read and read-write storage in one dispatch, so write into another tensor',
    );
  }
  const weights: Record<string, Tensor['dtype']> = { w: w.dtype };
  if (b) weights.b = b.dtype;
  const asm = assemble(`${workgroupSource}\n${source}`, weights);
  const kernel = ctx.kernel({
    name: 'norm',
    source: asm.source,
    defines: { ...asm.defines, RMS: fn === 'rmsNorm', HAS_BIAS: !!b },
    bindings: ['uniform', 'read', 'read', b ? 'read' : null, 'write'],
    constants: normWorkgroup(D),
    subgroups: ctx.subgroups,
  });
  const u = new Uniforms()
    .u32(x.rows)
    .u32(D)
    .u32(x.offset)
    .u32(x.stride)
    .u32(out.offset)
    .u32(out.stride)
    .f32(eps)
    .done();
  rec.dispatch(
    kernel,
    u,
    [null, x.tensor.buffer, w.buffer, b?.buffer ?? null, out.tensor.buffer],
    fold(x.rows, ctx.limits.maxComputeWorkgroupsPerDimension),
    `${fn} ${w.label}`,
  );
}

/**
 * Threads per row: WG = PARTS^2, 64 up to 1024 columns (at most 16 values per thread), else 256. The subgroup form
 * takes the same WG (and ignores PARTS), so both forms stride over a row alike and differ only in the reduction.
 */
export function normWorkgroup(cols: number): { WG: number; PARTS: number } {
  return cols <= 1024 ? { WG: 64, PARTS: 8 } : { WG: 256, PARTS: 16 };
}
