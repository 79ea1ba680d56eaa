// Launcher for shaders/rope.wgsl: in-place rotary embedding (HF rotate_half) of rows of [heads, headDim],
// with a (cos, sin) table per row built on the CPU (src/models/rotary.ts).

import source from '../shaders/rope.wgsl';
import type { GpuContext, Recorder } from '../src/gpu/context.js';
import { Uniforms, fold } from '../src/gpu/context.js';
import type { Tensor } from '../src/gpu/tensor.js';
import { bindRange, checkDtype } from './common.js';

const WG = 256;

/** One tensor whose rows a rope call turns: rows of [heads * headDim] (at `colOffset` within rows of `rowStride`). */
export interface RopeTarget {
  /** f32 activations rotated in place. */
  x: Tensor;
  /** First row of x to rotate (default 0). */
  rowOffset?: number;
  heads: number;
  /** Elements between rows (default heads * headDim). */
  rowStride?: number;
  /** Element offset of head 0 within each row (default 0), e.g. heads*headDim for the K part of a fused QKV row. */
  colOffset?: number;
}

export interface RopeArgs extends RopeTarget {
  rows: number;
  headDim: number;
  /** Rotates the first rotaryDim dims of each head (default headDim); even. */
  rotaryDim?: number;
  /** f32 [R, rotaryDim / 2, 2] = (cos, sin) per row and frequency; table row tableRow + r applies to x row rowOffset + r. */
  table: Tensor;
  /** First table row used (default 0). */
  tableRow?: number;
  /**
   * A second tensor turned in the same dispatch: the same rows, table, headDim and rotaryDim, its own heads and
   * view (a decoder's q rows and the K-cache rows of the same positions). Must not share a buffer with x.
   */
  also?: RopeTarget | null;
}

/** Checks one target's view and returns its first rotated element and the element past its last. */
function targetRange(label: string, t: RopeTarget, rows: number, headDim: number): { first: number; end: number } {
  const rowOffset = t.rowOffset ?? 0;
  const colOffset = t.colOffset ?? 0;
  const width = t.heads * headDim;
  const rowStride = t.rowStride ?? width;
  for (const [k, v] of Object.entries({ heads: t.heads, rowOffset, colOffset, rowStride })) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`${label}: ${k} must be an integer >= 0, got ${v}`);
  }
  checkDtype(t.x, ['f32'], 'rope');
  if (t.heads < 1) throw new Error(`${label}: heads (${t.heads}) must be positive`);
  if (rows > 1 && colOffset + width > rowStride) {
    throw new Error(
      `${label}: colOffset ${colOffset} + heads*headDim ${width} exceeds rowStride ${rowStride}: rotated rows would overlap`,
    );
  }
  const end = colOffset + (rowOffset + Math.max(rows, 1) - 1) * rowStride + width;
  if (rows > 0 && end > t.x.numel) {
    throw new Error(
      `${label}: rows ${rowOffset}..${rowOffset + rows} of ${t.heads}x${headDim} (stride ${rowStride}, column offset ${colOffset}) ` +
        `end at element ${end} but ${t.x.label} [${t.x.shape.join(', ')}] has ${t.x.numel}`,
    );
  }
  return { first: colOffset + rowOffset * rowStride, end };
}

export function rope(ctx: GpuContext, rec: Recorder, a: RopeArgs): void {
  const { x, table, rows, headDim } = a;
  const rotaryDim = a.rotaryDim ?? headDim;
  const tableRow = a.tableRow ?? 0;
  const label = a.also ? `rope ${x.label} + ${a.also.x.label}` : `rope ${x.label}`;
  for (const [k, v] of Object.entries({ rows, headDim, rotaryDim, tableRow })) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`${label}: ${k} must be an integer >= 0, got ${v}`);
  }
  checkDtype(table, ['f32'], 'rope table');
  if (headDim < 1) throw new Error(`${label}: headDim (${headDim}) must be positive`);
  if (rotaryDim < 2 || rotaryDim % 2 !== 0 || rotaryDim > headDim) {
    throw new Error(`${label}: rotaryDim ${rotaryDim} must be even and in [2, headDim = ${headDim}]`);
  }
  const half = rotaryDim / 2;
  const one = targetRange(label, a, rows, headDim);
  const two = a.also ? targetRange(label, a.also, rows, headDim) : null;
  // Two writable bindings of one buffer in a dispatch are an aliasing error in WebGPU.
  if (a.also && a.also.x.buffer === x.buffer) throw new Error(`${label}: the second tensor must not share a buffer with the first; make two calls`);
  if (rows === 0) return;
  const tableShapeOk = table.shape.length === 3 ? table.shape[1] === half && table.shape[2] === 2 : table.numel % (2 * half) === 0;
  if (!tableShapeOk) {
    throw new Error(`rope: table ${table.label} [${table.shape.join(', ')}] is not [rows, ${half}, 2] for rotaryDim ${rotaryDim}`);
  }
  if ((tableRow + rows) * half * 2 > table.numel) {
    throw new Error(`rope: table ${table.label} [${table.shape.join(', ')}] has ${table.numel / (2 * half)} rows, needs ${tableRow + rows}`);
  }
  const total = rows * a.heads * half;
  const total2 = a.also ? rows * a.also.heads * half : 0;
  if (total + total2 > 0xffffffff) throw new Error(`${label}: ${total + total2} rotations exceed the kernel's 32-bit index`);
  const kernel = ctx.kernel({
    name: a.also ? 'rope_two' : 'rope',
    source,
    defines: { SECOND: !!a.also },
    constants: { WG },
    bindings: ['uniform', 'read', 'write', ...(a.also ? (['write'] as const) : [])],
  });
  // Only the rotated rows are bound (a decode step turns one row of the K cache, not the whole cache).
  const xb = bindRange(ctx, x.buffer, one.first * 4, one.end * 4);
  const x2b = two ? bindRange(ctx, a.also!.x.buffer, two.first * 4, two.end * 4) : null;
  const u = new Uniforms()
    .u32(total)
    .u32(a.heads)
    .u32(headDim)
    .u32(half)
    .u32(one.first - xb.skipped)
    .u32(a.rowStride ?? a.heads * headDim)
    .u32(tableRow)
    .u32(total2)
    .u32(a.also?.heads ?? 0)
    .u32(two ? two.first - x2b!.skipped : 0)
    .u32(a.also ? a.also.rowStride ?? a.also.heads * headDim : 0)
    .done();
  const resources = [null, table.buffer, xb.binding, ...(x2b ? [x2b.binding] : [])];
  rec.dispatch(kernel, u, resources, fold(Math.ceil((total + total2) / WG), ctx.limits.maxComputeWorkgroupsPerDimension), label);
}
