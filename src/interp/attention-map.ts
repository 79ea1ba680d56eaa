// From captured attention patterns to what a person looks at: the attention one query row pays to the image
// tokens, laid out on the patch grid (a heatmap per head), and the image-attention mass of every head (the
// layers x heads grid). Pure functions over captures, shared by the browser lab page and scripts.

import type { PatternCaptured } from '../models/model.js';
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
 * on the image tokens (sum over `span`), `[layer][head]` in the order of `patterns`' layers (one capture per layer).
 */
export function imageMass(patterns: readonly PatternCaptured[], span: ImageSpan, row?: number): number[][] {
  return patterns.map((p) => imageAttention(p, span, row ?? p.rows.length - 1).map((v) => v.reduce((a, b) => a + b, 0)));
}

/**
 * Overlays a heatmap of `values` (row-major over a `grid` of rows x cols image tokens, or a square of side `grid`;
 * any scale) on RGBA pixels `rgba` (`width` x `height`, modified in place): each pixel is blended with the viridis
 * colour of its token's value, normalised to the maximum, with opacity `opacity` times the normalised value:
 * unattended tokens show the image unchanged. Qwen images make non-square grids (merged 2x2 patches).
 */
export function overlayHeatmap(
  rgba: Uint8ClampedArray | Uint8Array,
  width: number,
  height: number,
  values: ArrayLike<number>,
  grid: number | readonly [number, number],
  opacity = 0.8,
): void {
  const [gh, gw] = typeof grid === 'number' ? [grid, grid] : grid;
  if (values.length !== gh * gw) throw new Error(`overlayHeatmap: ${values.length} values for a ${gh}x${gw} grid`);
  let max = 0;
  for (let i = 0; i < values.length; i++) max = Math.max(max, values[i]!);
  for (let y = 0; y < height; y++) {
    const gy = Math.min(gh - 1, Math.floor((y * gh) / height));
    for (let x = 0; x < width; x++) {
      const gx = Math.min(gw - 1, Math.floor((x * gw) / width));
      const t = max > 0 ? values[gy * gw + gx]! / max : 0;
      const [r, g, b] = viridis(t);
      const a = opacity * t;
      const i = (y * width + x) * 4;
      rgba[i] = Math.round(rgba[i]! * (1 - a) + r * a);
      rgba[i + 1] = Math.round(rgba[i + 1]! * (1 - a) + g * a);
      rgba[i + 2] = Math.round(rgba[i + 2]! * (1 - a) + b * a);
    }
  }
}
