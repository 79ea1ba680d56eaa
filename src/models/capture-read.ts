// Reading captures back from the GPU into the RunResult shapes, shared by the text decoder and every vision
// encoder: patterns select heads and query rows on the CPU (the kernel writes whole [heads, rows, keys] blocks),
// z copies are [layers, rows, heads * headDim] and come back per position or averaged over a range.

import type { GpuContext } from '../gpu/context.js';
import type { Tensor } from '../gpu/tensor.js';
import { type CaptureSpec, type PatternCapture, type Tower, type TowerDims, resolvePositions } from '../spec/spec.js';
import type { Captured, PatternCaptured, ResidualCaptured } from './model.js';

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

/** One part of a vision sequence as captures report it: an image (Qwen) or a tile of an image (Idefics3). */
export interface SequencePart {
  image: number;
  tile?: number;
  /** First run row of the part and its length (parts are contiguous in the run order). */
  start: number;
  n: number;
}

/**
 * The vision captures of an encoder that runs all its parts as one sequence (Qwen2-VL images, Idefics3 tiles):
 * whole-sequence tensors filled by the ViT blocks, read back per part in the processor's order (`runOf` maps a
 * reported row, part offset included, to its run row). Patterns are [heads, N, N], or [heads, N, block] relative
 * to each row's key range when `block` is given (the kernel's patternKeys).
 */
export class SequenceCaptures {
  readonly pattern = new Map<number, Tensor>();
  readonly residual = new Map<number, Tensor>();
  /** z rows (run order) copied per layer into dst: what VitEncoder captures. */
  readonly z?: { rows: number[]; dst: Tensor };
  private readonly patternOut: { spec: PatternCapture; t: Tensor }[] = [];
  private readonly residualOut: { layer: number; t: Tensor }[] = [];
  private readonly zOut?: { t: Tensor; rows: number; mean: boolean };

  constructor(
    cap: CaptureSpec,
    private readonly dims: TowerDims,
    private readonly width: number,
    N: number,
    private readonly runOf: Int32Array,
    /** Tokens of the first image (z positions index them). */
    firstImageTokens: number,
    alloc: (shape: number[], label: string) => Tensor,
    private readonly block?: number,
  ) {
    for (const p of cap.pattern) {
      if (p.tower !== 'vision') continue;
      const t = this.pattern.get(p.layer) ?? alloc([dims.heads, N, block ?? N], `capture.vision.${p.layer}.pattern`);
      this.pattern.set(p.layer, t);
      this.patternOut.push({ spec: p, t });
    }
    for (const r of cap.residual) {
      if (r.tower !== 'vision') continue;
      const t = this.residual.get(r.layer) ?? alloc([N, width], `capture.vision.residual.${r.layer}`);
      this.residual.set(r.layer, t);
      this.residualOut.push({ layer: r.layer, t });
    }
    if (cap.z?.tower === 'vision') {
      const zRows = resolvePositions(cap.z.positions, firstImageTokens);
      const t = alloc([dims.layers, zRows.length, dims.heads * dims.headDim], 'capture.vision.z');
      this.z = { rows: zRows.map((p) => runOf[p]), dst: t };
      this.zOut = { t, rows: zRows.length, mean: cap.z.positions.kind === 'mean' };
    }
  }

  /** Read everything back per part; `reordered` = some part runs in another order than it reports. */
  reader(ctx: GpuContext, parts: readonly SequencePart[], reordered: boolean): () => Promise<{ pattern: PatternCaptured[][]; residual: ResidualCaptured[][]; z?: Captured }> {
    const E = this.width;
    const orderOf = (p: SequencePart) => (reordered ? Int32Array.from({ length: p.n }, (_, k) => this.runOf[p.start + k] - p.start) : undefined);
    return async () => {
      const pattern: PatternCaptured[][] = [];
      for (const o of this.patternOut) {
        const list: PatternCaptured[] = [];
        for (const p of parts) list.push(await readPattern(ctx, o.spec, o.t, { image: p.image, ...(p.tile !== undefined ? { tile: p.tile } : {}), offset: p.start, n: p.n, order: orderOf(p), relative: this.block !== undefined }));
        pattern.push(list);
      }
      const residual: ResidualCaptured[][] = [];
      for (const r of this.residualOut) {
        const data = await ctx.readF32(r.t.buffer, 0, r.t.numel);
        residual.push(
          parts.map((p) => {
            const out = new Float32Array(p.n * E);
            for (let k = 0; k < p.n; k++) {
              const run = this.runOf[p.start + k];
              out.set(data.subarray(run * E, (run + 1) * E), k * E);
            }
            const c: ResidualCaptured = { tower: 'vision', layer: r.layer, image: p.image, shape: [p.n, E], data: out };
            if (p.tile !== undefined) c.tile = p.tile;
            return c;
          }),
        );
      }
      const z = this.zOut ? await readZ(ctx, this.zOut.t, this.zOut.rows, this.dims, this.zOut.mean) : undefined;
      return { pattern, residual, z };
    };
  }
}
