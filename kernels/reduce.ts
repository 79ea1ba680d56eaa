// Launcher for shaders/reduce.wgsl: greedy-decoding argmax on the GPU, written straight into a u32 id buffer
// (the next step's embedding input), so decoding reads back one u32 per token. Threads are combined with
// subgroups where the context uses them (ctx.subgroups), else by a tree in workgroup memory.

import source from '../shaders/reduce.wgsl';
import workgroupSource from '../shaders/workgroup.wgsl';
import type { GpuContext, Recorder } from '../src/gpu/context.js';
import { Uniforms, fold } from '../src/gpu/context.js';
import { type RowView, checkDtype } from './common.js';

export interface ArgmaxArgs {
  /** The row(s) to reduce, usually one row of logits; row r's index goes to out[outIndex + r]. */
  x: RowView;
  /** u32 buffer receiving the indices (STORAGE usage). */
  out: GPUBuffer;
  /** Element of `out` receiving row 0's index (default 0). */
  outIndex?: number;
}

/** Index of the largest value of each row (lowest index on ties; NaN counts as smaller than everything). */
export function argmax(ctx: GpuContext, rec: Recorder, a: ArgmaxArgs): void {
  const { x, out } = a;
  const outIndex = a.outIndex ?? 0;
  const t = x.tensor;
  checkDtype(t, ['f32'], 'argmax');
  for (const k of ['rows', 'cols', 'offset', 'stride'] as const) {
    if (!Number.isInteger(x[k]) || x[k] < 0) throw new Error(`argmax: view of ${t.label} has ${k} ${x[k]}`);
  }
  if (!Number.isInteger(outIndex) || outIndex < 0) throw new Error(`argmax: outIndex must be an integer >= 0, got ${outIndex}`);
  if (x.rows === 0) return;
  if (x.cols < 1) throw new Error(`argmax: view of ${t.label} has no columns`);
  const end = x.offset + (x.rows - 1) * x.stride + x.cols;
  if (end > t.numel) {
    throw new Error(`argmax: view of ${t.label} (${x.rows}x${x.cols}, offset ${x.offset}, stride ${x.stride}) ends at element ${end} but the tensor has ${t.numel}`);
  }
  const outName = out.label || '(unlabelled)';
  if (!(out.usage & GPUBufferUsage.STORAGE)) throw new Error(`argmax: output buffer ${outName} lacks STORAGE usage`);
  if ((outIndex + x.rows) * 4 > out.size) {
    throw new Error(`argmax: output buffer ${outName} holds ${Math.floor(out.size / 4)} u32, index ${outIndex + x.rows - 1} is past its end`);
  }
  if (out === t.buffer) throw new Error(`argmax: output buffer ${outName} is the buffer of ${t.label}`);
  const kernel = ctx.kernel({
    name: 'reduce',
    source: `${workgroupSource}\n${source}`,
    entryPoint: 'main',
    bindings: ['uniform', 'read', 'write'],
    subgroups: ctx.subgroups,
  });
  const u = new Uniforms().u32(x.rows).u32(x.cols).u32(x.offset).u32(x.stride).u32(outIndex).done();
  rec.dispatch(kernel, u, [null, t.buffer, out], fold(x.rows, ctx.limits.maxComputeWorkgroupsPerDimension), `argmax ${t.label}`);
}
