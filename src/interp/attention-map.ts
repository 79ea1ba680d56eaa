// From captured attention patterns to what a person looks at: the attention one query row pays to the image
// tokens, laid out on the patch grid (a heatmap per head), and the image-attention mass of every head (the
// layers x heads grid); for tiled images (Idefics3 / SmolVLM: one run of image tokens per tile) each tile's
// attention placed where the tile came from. Pure functions over captures, shared by the browser lab page and scripts.

import type { PatternCaptured, TileLayout } from '../models/model.js';
import { viridis } from './probes.js';

/** The run of consecutive image-token positions of one image in a prompt. */
export interface ImageSpan {
  start: number;
  /** Number of image tokens (grid * grid for LLaVA-1.5's default strategy). */
  length: number;
}

/** Every run of `imageTokenId` in `ids`, in order (one per image). */
export function imageSpans(ids: readonly number[], imageTokenId: number): ImageSpan[] {
  const spans: ImageSpan[] = [];
  for (let i = 0; i < ids.length; i++) {
    if (ids[i] !== imageTokenId) continue;
    const start = i;
    while (i + 1 < ids.length && ids[i + 1] === imageTokenId) i++;
    spans.push({ start, length: i - start + 1 });
  }
  return spans;
}

/** Side of the square patch grid of `tokens` image tokens; throws when it is not a square (e.g. a CLS kept). */
export function gridSide(tokens: number): number {
  const side = Math.round(Math.sqrt(tokens));
  if (side * side !== tokens) throw new Error(`${tokens} image tokens do not form a square patch grid`);
  return side;
}

/**
 * Attention of one captured query row over one image's tokens, per captured head: `[heads][span.length]`,
 * row-major over the patch grid. `row` is an index into the capture's rows (default its last).
 */
export function imageAttention(p: PatternCaptured, span: ImageSpan, row = p.rows.length - 1): Float32Array[] {
  const [heads, rows, keys] = p.shape as [number, number, number];
  if (row < 0 || row >= rows) throw new Error(`row ${row} is not among the ${rows} captured rows`);
  if (span.start < 0 || span.start + span.length > keys) throw new Error(`image tokens ${span.start}..${span.start + span.length - 1} lie outside the ${keys} keys`);
  const out: Float32Array[] = [];
  for (let h = 0; h < heads; h++) {
    const base = (h * rows + row) * keys + span.start;
    out.push(p.data.slice(base, base + span.length));
  }
  return out;
}

/** Element-wise mean of equally long vectors (e.g. the heads' image attention). */
export function meanOf(vs: readonly Float32Array[]): Float32Array {
  if (vs.length === 0) throw new Error('meanOf: no vectors');
  const out = new Float32Array(vs[0]!.length);
  for (const v of vs) for (let i = 0; i < out.length; i++) out[i]! += v[i]! / vs.length;
  return out;
}

/**
 * Image-attention mass of every captured layer and head at one query row: the softmax probability the row puts
 * on the image tokens (sum over `span`, or over all of `spans`: a tiled image's runs), `[layer][head]` in the order
 * of `patterns`' layers (one capture per layer).
 */
export function imageMass(patterns: readonly PatternCaptured[], span: ImageSpan | readonly ImageSpan[], row?: number): number[][] {
  const spans: readonly ImageSpan[] = 'start' in span ? [span] : span;
  return patterns.map((p) => {
    const mass = new Array<number>(p.shape[0]!).fill(0);
    for (const s of spans) imageAttention(p, s, row ?? p.rows.length - 1).forEach((v, h) => (mass[h]! += v.reduce((a, b) => a + b, 0)));
    return mass;
  });
}

/** A tiled image's attention laid out as the image: the crops' tokens on one grid, the global tile's on its own. */
export interface TiledAttention {
  /** Rows x cols of tokens over the image the crops were cut from: rows * tokenSide x cols * tokenSide. */
  grid: [number, number];
  /** Row-major over `grid`: each crop's tokens on the crop's own square. */
  values: Float32Array;
  /** The global tile's tokens, row-major over tokenSide x tokenSide; null when the layout has no global tile. */
  global: Float32Array | null;
}

/**
 * Places the attention of a tiled image's runs (one per tile, in prompt order: the `rows` x `cols` crops row-major,
 * then the global tile when `layout.global`; each run row-major over a tokenSide x tokenSide square) where the tiles
 * came from: crop (r, c)'s token (y, x) lands at row r * tokenSide + y, column c * tokenSide + x of the image grid.
 */
export function tiledAttention(tiles: readonly ArrayLike<number>[], layout: TileLayout): TiledAttention {
  const { rows, cols, tokenSide: n } = layout;
  const pos = (v: number) => Number.isInteger(v) && v > 0;
  if (!pos(rows) || !pos(cols) || !pos(n)) throw new Error(`tiledAttention: invalid tile layout ${rows} x ${cols} tiles of ${n} x ${n} tokens`);
  const want = rows * cols + (layout.global ? 1 : 0);
  if (tiles.length !== want) {
    throw new Error(`tiledAttention: ${tiles.length} runs of image tokens for ${rows} x ${cols} tiles${layout.global ? ' and a global tile' : ''} (${want} runs)`);
  }
  tiles.forEach((t, i) => {
    if (t.length !== n * n) throw new Error(`tiledAttention: run ${i} has ${t.length} image tokens, not ${n} x ${n}`);
  });
  const width = cols * n;
  const values = new Float32Array(rows * n * width);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const t = tiles[r * cols + c]!;
      for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) values[(r * n + y) * width + c * n + x] = t[y * n + x]!;
    }
  }
  return { grid: [rows * n, width], values, global: layout.global ? Float32Array.from(tiles[rows * cols]!) : null };
}

/**
 * Overlays a heatmap of `values` (row-major over a `grid` of rows x cols image tokens, or a square of side `grid`;
 * any scale) on RGBA pixels `rgba` (`width` x `height`, modified in place): each pixel is blended with the viridis
 * colour of its token's value, normalised to the maximum (or to `scale`, e.g. one shared by several views, values
 * above it clamped), with opacity `opacity` times the normalised value: unattended tokens show the image unchanged.
 * Qwen images make non-square grids (merged 2x2 patches).
 */
export function overlayHeatmap(
  rgba: Uint8ClampedArray | Uint8Array,
  width: number,
  height: number,
  values: ArrayLike<number>,
  grid: number | readonly [number, number],
  opacity = 0.8,
  scale?: number,
): void {
  const [gh, gw] = typeof grid === 'number' ? [grid, grid] : grid;
  if (values.length !== gh * gw) throw new Error(`overlayHeatmap: ${values.length} values for a ${gh}x${gw} grid`);
  let max = 0;
  if (scale !== undefined) max = scale;
  else for (let i = 0; i < values.length; i++) max = Math.max(max, values[i]!);
  for (let y = 0; y < height; y++) {
    const gy = Math.min(gh - 1, Math.floor((y * gh) / height));
    for (let x = 0; x < width; x++) {
      const gx = Math.min(gw - 1, Math.floor((x * gw) / width));
      const t = max > 0 ? Math.min(1, values[gy * gw + gx]! / max) : 0;
      const [r, g, b] = viridis(t);
      const a = opacity * t;
      const i = (y * width + x) * 4;
      rgba[i] = Math.round(rgba[i]! * (1 - a) + r * a);
      rgba[i + 1] = Math.round(rgba[i + 1]! * (1 - a) + g * a);
      rgba[i + 2] = Math.round(rgba[i + 2]! * (1 - a) + b * a);
    }
  }
}
