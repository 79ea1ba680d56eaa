// Reading captures back from the GPU into the RunResult shapes, shared by the text decoder and every vision
// encoder: patterns select heads and query rows on the CPU (the kernel writes whole [heads, rows, keys] blocks),
// z copies are [layers, rows, heads * headDim] and come back per position or averaged over a range.

import type { GpuContext } from '../gpu/context.js';
import type { Tensor } from '../gpu/tensor.js';
import type { PatternCapture, Tower, TowerDims } from '../spec/spec.js';
import type { Captured, PatternCaptured } from './model.js';

/**
 * The pattern capture `p` from a [heads, total, keys] tensor: the block of `n` rows starting at `offset` (default
 * all), with `keys` = total (square captures; key k of row r is at column offset + order[k]) or a per-row relative
 * layout (`relative`: column order[k], the kernel's patternKeys). `order` (optional) maps the caller's row/key index
 * i to the tensor's order[i], for encoders that run their sequence in another order than they report it
 * (Qwen2.5-VL runs its windows contiguously but reports patches in the processor's order).
 */
export async function readPattern(
  ctx: GpuContext,
  p: PatternCapture,
  t: Tensor,
  extra: { image?: number; tile?: number; order?: Int32Array; offset?: number; n?: number; relative?: boolean } = {},
): Promise<PatternCaptured> {
  const [H, total, keys] = t.shape as [number, number, number];
  const n = extra.n ?? total;
  const off = extra.offset ?? 0;
  const koff = extra.relative ? 0 : off;
  const all = await ctx.readF32(t.buffer, 0, t.numel);
  const heads = p.heads ?? Array.from({ length: H }, (_, h) => h);
  const rowsSel = (p.rows ?? Array.from({ length: n }, (_, r) => r)).map((r) => (r < 0 ? n + r : r));
  const at = (i: number) => (extra.order ? extra.order[i] : i);
  const data = new Float32Array(heads.length * rowsSel.length * n);
  heads.forEach((h, hi) =>
    rowsSel.forEach((r, ri) => {
      const src = (h * total + off + at(r)) * keys + koff; // the row's first key of the block
      const dst = (hi * rowsSel.length + ri) * n;
      if (!extra.order) data.set(all.subarray(src, src + n), dst);
      else for (let k = 0; k < n; k++) data[dst + k] = all[src + extra.order[k]];
    }),
  );
  const out: PatternCaptured = { tower: p.tower, layer: p.layer, heads, rows: rowsSel, shape: [heads.length, rowsSel.length, n], data };
  if (extra.image !== undefined) out.image = extra.image;
  if (extra.tile !== undefined) out.tile = extra.tile;
  return out;
}

/**
 * z captured as [layers, rows, heads * headDim]: one position (or the mean over a range) -> [layers, heads, headDim],
 * several positions -> [positions, layers, heads, headDim].
 */
export async function readZ(ctx: GpuContext, t: Tensor, rowCount: number, dims: TowerDims, mean: boolean): Promise<Captured> {
  const width = dims.heads * dims.headDim;
  const all = await ctx.readF32(t.buffer, 0, t.numel);
  const nr = rowCount;
  if (nr === 1 || mean) {
    const out = new Float32Array(dims.layers * width);
    for (let l = 0; l < dims.layers; l++)
      for (let r = 0; r < nr; r++)
        for (let j = 0; j < width; j++) out[l * width + j] += all[(l * nr + r) * width + j] / nr;
    return { shape: [dims.layers, dims.heads, dims.headDim], data: out };
  }
  const out = new Float32Array(nr * dims.layers * width);
  for (let r = 0; r < nr; r++)
    for (let l = 0; l < dims.layers; l++) out.set(all.subarray((l * nr + r) * width, (l * nr + r + 1) * width), (r * dims.layers + l) * width);
  return { shape: [nr, dims.layers, dims.heads, dims.headDim], data: out };
}

/** Which tower a capture entry names, for messages. */
export const towerName = (t: Tower) => (t === 'text' ? 'text' : 'vision');
