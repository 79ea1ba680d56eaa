// Launcher for shaders/rope.wgsl: in-place rotary embedding (HF rotate_half) of rows of [heads, headDim],
// with a (cos, sin) table per row built on the CPU (src/models/rotary.ts).

import source from '../shaders/rope.wgsl';
import type { GpuContext, Recorder } from '../src/gpu/context.js';
import { Uniforms, fold } from '../src/gpu/context.js';
import type { Tensor } from '../src/gpu/tensor.js';
import { bindRange, checkDtype } from './common.js';

const WG = 256;

export interface RopeArgs {
  /** f32 activations rotated in place: rows of [heads * headDim] (at `colOffset` within rows of `rowStride`). */
  x: Tensor;
  /** First row of x to rotate (default 0). */
  rowOffset?: number;
  rows: number;
  heads: number;
  headDim: number;
  /** Rotates the first rotaryDim dims of each head (default headDim); even. */
  rotaryDim?: number;
  /** Elements between rows (default heads * headDim). */
  rowStride?: number;
  /** Element offset of head 0 within each row (default 0), e.g. heads*headDim for the K part of a fused QKV row. */
  colOffset?: number;
  /** f32 [R, rotaryDim / 2, 2] = (cos, sin) per row and frequency; table row tableRow + r applies to x row rowOffset + r. */
  table: Tensor;
  /** First table row used (default 0). */
  tableRow?: number;
}

export function rope(ctx: GpuContext, rec: Recorder, a: RopeArgs): void {
  const { x, table, rows, heads, headDim } = a;
  const rotaryDim = a.rotaryDim ?? headDim;
  const rowOffset = a.rowOffset ?? 0;
  const colOffset = a.colOffset ?? 0;
  const tableRow = a.tableRow ?? 0;
  const width = heads * headDim;
  const rowStride = a.rowStride ?? width;
  const label = `rope ${x.label}`;
  const ints = { rows, heads, headDim, rotaryDim, rowOffset, colOffset, tableRow, rowStride };
  for (const [k, v] of Object.entries(ints)) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`${label}: ${k} must be an integer >= 0, got ${v}`);
  }
  checkDtype(x, ['f32'], 'rope');
  checkDtype(table, ['f32'], 'rope table');
  if (heads < 1 || headDim < 1) throw new Error(`${label}: heads (${heads}) and headDim (${headDim}) must be positive`);
  if (rotaryDim < 2 || rotaryDim % 2 !== 0 || rotaryDim > headDim) {
    throw new Error(`${label}: rotaryDim ${rotaryDim} must be even and in [2, headDim = ${headDim}]`);
  }
  const half = rotaryDim / 2;
  if (rows > 1 && colOffset + width > rowStride) {
    throw new Error(
      `${label}: colOffset ${colOffset} + heads*headDim ${width} exceeds rowStride ${rowStride}: rotated rows would overlap`,
    );
  }
  if (rows === 0) return;
  const end = colOffset + (rowOffset + rows - 1) * rowStride + width;
  if (end > x.numel) {
    throw new Error(
      `${label}: rows ${rowOffset}..${rowOffset + rows} of ${heads}x${headDim} (stride ${rowStride}, column offset ${colOffset}) ` +
        `end at element ${end} but ${x.label} [${x.shape.join(', ')}] has ${x.numel}`,
    );
  }
  const tableShapeOk = table.shape.length === 3 ? table.shape[1] === half && table.shape[2] === 2 : table.numel % (2 * half) === 0;
  if (!tableShapeOk) {
    throw new Error(`rope: table ${table.label} [${table.shape.join(', ')}] is not [rows, ${half}, 2] for rotaryDim ${rotaryDim}`);
  }
  if ((tableRow + rows) * half * 2 > table.numel) {
    throw new Error(`rope: table ${table.label} [${table.shape.join(', ')}] has ${table.numel / (2 * half)} rows, needs ${tableRow + rows}`);
  }
  const total = rows * heads * half;
  if (total > 0xffffffff) throw new Error(`${label}: ${total} rotations exceed the kernel's 32-bit index`);
  const kernel = ctx.kernel({
    name: 'rope',
    source,
    constants: { WG },
    bindings: ['uniform', 'read', 'write'],
  });
  // Only the rotated rows are bound (a decode step turns one row of the K cache, not the whole cache).
  const first = colOffset + rowOffset * rowStride;
  const xb = bindRange(ctx, x.buffer, first * 4, end * 4);
  const u = new Uniforms()
    .u32(total)
    .u32(heads)
    .u32(headDim)
    .u32(half)
    .u32(first - xb.skipped)
    .u32(rowStride)
    .u32(tableRow)
    .done();
  rec.dispatch(kernel, u, [null, table.buffer, xb.binding], fold(Math.ceil(total / WG), ctx.limits.maxComputeWorkgroupsPerDimension), label);
}
