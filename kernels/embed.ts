// Launcher for shaders/embed.wgsl: token embedding gather (table in its stored dtype) with optional image
// features scattered over chosen rows (LLaVA's masked_scatter as a row map).

import source from '../shaders/embed.wgsl';
import type { GpuContext, Recorder } from '../src/gpu/context.js';
import { Uniforms, fold, type BufferRef } from '../src/gpu/context.js';
import { type Tensor, type Weight, dtypeBytes, weightParts } from '../src/gpu/tensor.js';
import { type RowView, assemble, bindRange, checkDtype } from './common.js';

const WG = 256;

export interface EmbedFeatures {
  /** i32 per row of this call: -1 takes the table row of the token id, k >= 0 takes row k of `data`. */
  map: GPUBuffer;
  /** f32 [n, D] features. */
  data: Tensor;
}

export interface EmbedArgs {
  /** u32 token ids; row r uses ids[idsOffset + r]. Ids past the vocabulary are clamped (validate them on the CPU). */
  ids: GPUBuffer;
  /** Element offset of the first id (default 0). */
  idsOffset?: number;
  rows: number;
  /** Embedding [vocab, D] in its stored dtype. */
  table: Weight;
  features?: EmbedFeatures | null;
  /** f32 output view, rows x D. */
  out: RowView;
  /**
   * The ids' values when the caller knows them (a decode step reads back the token it feeds): only the table rows
   * they name are bound, not the whole table. They must equal ids[idsOffset..]; rows outside them read nothing.
   */
  knownIds?: readonly number[] | null;
}

/** out[r] = map[r] >= 0 ? data[map[r]] : table[ids[idsOffset + r]]. */
export function embed(ctx: GpuContext, rec: Recorder, a: EmbedArgs): void {
  const { table, out, rows } = a;
  const f = a.features ?? null;
  const idsOffset = a.idsOffset ?? 0;
  if (table.shape.length !== 2) throw new Error(`embed: table ${table.label} must be 2-D [vocab, D], got [${table.shape.join(', ')}]`);
  const [vocab, D] = table.shape;
  if (vocab < 1 || D < 1) throw new Error(`embed: table ${table.label} [${table.shape.join(', ')}] is empty`);
  for (const [k, v] of [['rows', rows], ['idsOffset', idsOffset]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`embed: ${k} must be an integer >= 0, got ${v}`);
  }
  checkDtype(out.tensor, ['f32'], 'embed output');
  for (const k of ['rows', 'cols', 'offset', 'stride'] as const) {
    if (!Number.isInteger(out[k]) || out[k] < 0) throw new Error(`embed: output view of ${out.tensor.label} has ${k} ${out[k]}`);
  }
  if (out.rows !== rows || out.cols !== D) {
    throw new Error(`embed: output ${out.tensor.label} view is ${out.rows}x${out.cols}, expected ${rows}x${D} (rows x the width of ${table.label})`);
  }
  if (rows > 1 && out.stride < D) throw new Error(`embed: output view of ${out.tensor.label} has stride ${out.stride} < ${D} columns: its rows overlap`);
  if (rows === 0) return;
  const outEnd = out.offset + (rows - 1) * out.stride + D;
  if (outEnd > out.tensor.numel) {
    throw new Error(`embed: output view of ${out.tensor.label} ends at element ${outEnd} but the tensor has ${out.tensor.numel}`);
  }
  for (const [buf, what] of f ? [[a.ids, 'ids'] as const, [f.map, 'feature map'] as const] : [[a.ids, 'ids'] as const]) {
    if (!(buf.usage & GPUBufferUsage.STORAGE)) throw new Error(`embed: ${what} buffer ${buf.label || '(unlabelled)'} lacks STORAGE usage`);
  }
  if ((idsOffset + rows) * 4 > a.ids.size) {
    throw new Error(`embed: ids buffer ${a.ids.label || '(unlabelled)'} holds ${Math.floor(a.ids.size / 4)} ids, needs ${idsOffset + rows}`);
  }
  if (f) {
    checkDtype(f.data, ['f32'], 'embed features');
    const dataRows = f.data.shape.length === 2 ? f.data.shape[0] : 0;
    if (f.data.shape.length !== 2 || f.data.shape[1] !== D || dataRows < 1) {
      throw new Error(`embed: features ${f.data.label} [${f.data.shape.join(', ')}] must be [n >= 1, ${D}] like the rows of ${table.label}`);
    }
    if (rows * 4 > f.map.size) {
      throw new Error(`embed: feature map ${f.map.label || '(unlabelled)'} holds ${Math.floor(f.map.size / 4)} entries, needs ${rows}`);
    }
    if (f.data.buffer === out.tensor.buffer) {
      throw new Error(`embed: features ${f.data.label} and output ${out.tensor.label} share a buffer; write into another tensor`);
    }
  }
  if (weightParts(table).some((b) => b.tensor.buffer === out.tensor.buffer) || a.ids === out.tensor.buffer || f?.map === out.tensor.buffer) {
    throw new Error(`embed: output ${out.tensor.label} shares a buffer with the table, ids or feature map; write into another tensor`);
  }
  const known = a.knownIds ?? null;
  if (known) {
    if (known.length !== rows) throw new Error(`embed: knownIds has ${known.length} ids for ${rows} rows`);
    for (const id of known) {
      if (!Number.isInteger(id) || id < 0 || id >= vocab) throw new Error(`embed: known id ${id} is outside the vocabulary of ${table.label} (${vocab} rows)`);
    }
  }
  const total = rows * D;
  const parts = weightParts(table);
  if (total > 0xffffffff || Math.max(...parts.map((p) => p.tensor.numel)) > 0xffffffff) {
    throw new Error(`embed: ${table.label} is too large for the kernel's 32-bit index`);
  }
  const dispatch = (block: { tensor: Tensor; rowStart: number } | null, withFeatures: boolean, last: boolean) => {
    // With known ids, the block's rows between the lowest and the highest of them (none: the block is skipped,
    // unless image rows still have to be written by this dispatch).
    let tableBinding: BufferRef | null = block?.tensor.buffer ?? null;
    let tableSkipped = 0;
    if (block && known) {
      const n = block.tensor.shape[0];
      const inBlock = known.map((id) => id - block.rowStart).filter((r) => r >= 0 && r < n);
      if (!inBlock.length && !withFeatures) return;
      const lo = inBlock.length ? Math.min(...inBlock) : 0;
      const hi = inBlock.length ? Math.max(...inBlock) : 0;
      const eb = dtypeBytes(block.tensor.dtype);
      const r = bindRange(ctx, block.tensor.buffer, lo * D * eb, (hi + 1) * D * eb, eb);
      tableBinding = r.binding;
      tableSkipped = r.skipped;
    }
    const asm = assemble(source, block ? { table: block.tensor.dtype } : {});
    const kernel = ctx.kernel({
      name: 'embed',
      source: asm.source,
      defines: { ...asm.defines, FEATURES: withFeatures, TABLE: !!block },
      constants: { WG },
      bindings: ['uniform', 'read', block ? 'read' : null, withFeatures ? 'read' : null, withFeatures ? 'read' : null, 'write'],
    });
    const u = new Uniforms()
      .u32(total)
      .u32(D)
      .u32(block ? block.tensor.shape[0] : 0)
      .u32(idsOffset)
      .u32(f ? f.data.shape[0] : 0)
      .u32(out.offset)
      .u32(out.stride)
      .u32(block?.rowStart ?? 0)
      .u32(last ? 1 : 0)
      .u32(tableSkipped)
      .done();
    rec.dispatch(
      kernel,
      u,
      [null, a.ids, tableBinding, withFeatures ? f!.map : null, withFeatures ? f!.data.buffer : null, out.tensor.buffer],
      fold(Math.ceil(total / WG), ctx.limits.maxComputeWorkgroupsPerDimension),
      `embed ${block?.tensor.label ?? 'image features'}`,
    );
  };
  if (parts.length === 1) {
    dispatch(parts[0], !!f, true);
    return;
  }
  // Split table: every block writes the rows whose ids it holds, then the image rows are overwritten last.
  parts.forEach((b, i) => dispatch(b, false, i === parts.length - 1));
  if (f) dispatch(null, true, true);
}
