// Attention maps as pictures: the attention a query row pays to the image tokens drawn over the image as the model
// saw it (ImageView), with the lab page's colouring (overlayHeatmap: viridis, opacity growing with the value), as
// RGBA canvases composed into one picture: a tiled image's crops beside its global tile, several heads as a grid of
// panels with thin separators. Pure functions (no DOM, no files); `vlmscope attention-map` encodes the result as PNG.

import type { RgbImage } from '../io/image.js';
import type { ImageView } from '../models/model.js';
import { overlayHeatmap, tiledAttention } from './attention-map.js';

/** RGBA pixels, row-major, 4 bytes a pixel. */
export interface RgbaCanvas {
  width: number;
  height: number;
  data: Uint8ClampedArray;
}

/** A panel is upscaled (by a whole factor, nearest neighbour) until its longer side is at least this many pixels. */
export const MIN_PANEL_SIDE = 256;
/** Width of the separator lines between panels, in pixels. */
export const SEPARATOR = 2;
/** Colour of the separators between the panels of a grid (one per head) and of its empty cells. */
export const SEPARATOR_RGB: readonly [number, number, number] = [40, 40, 40];
/** Colour of the gap between a tiled image's crops panel and its global-tile panel (and below the shorter one). */
export const PAIR_RGB: readonly [number, number, number] = [255, 255, 255];

export interface PanelOptions {
  /** Smallest longer side of the upscaled image (default MIN_PANEL_SIDE); never downscaled. */
  minSide?: number;
  /** Heatmap opacity at the maximum (default overlayHeatmap's 0.8, as the lab page). */
  opacity?: number;
}

export interface ComposeOptions {
  /** Separator width in pixels (default SEPARATOR). */
  gap?: number;
  /** Separator / background colour of a grid (default SEPARATOR_RGB; a crops + global pair is always on PAIR_RGB). */
  background?: readonly [number, number, number];
}

/** The whole factor that brings the longer side of width x height to at least `minSide` (1 when it already is). */
export function upscaleFactor(width: number, height: number, minSide = MIN_PANEL_SIDE): number {
  const side = Math.max(width, height);
  if (!(side > 0)) throw new Error(`upscaleFactor: invalid size ${width}x${height}`);
  return Math.max(1, Math.ceil(minSide / side));
}

/** An opaque canvas filled with `rgb`. */
export function filledCanvas(width: number, height: number, rgb: readonly [number, number, number] = SEPARATOR_RGB): RgbaCanvas {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) throw new Error(`filledCanvas: invalid size ${width}x${height}`);
  const data = new Uint8ClampedArray(width * height * 4);
  for (let i = 0; i < width * height; i++) {
    data[i * 4] = rgb[0];
    data[i * 4 + 1] = rgb[1];
    data[i * 4 + 2] = rgb[2];
    data[i * 4 + 3] = 255;
  }
  return { width, height, data };
}

/** `img` scaled by a whole `factor` (each pixel a factor x factor block), as an opaque RGBA canvas. */
export function upscaleNearest(img: RgbImage, factor: number): RgbaCanvas {
  if (!Number.isInteger(factor) || factor < 1) throw new Error(`upscaleNearest: factor must be a positive integer, got ${factor}`);
  const width = img.width * factor;
  const height = img.height * factor;
  const data = new Uint8ClampedArray(width * height * 4);
  for (let y = 0; y < height; y++) {
    const row = Math.floor(y / factor) * img.width;
    for (let x = 0; x < width; x++) {
      const s = (row + Math.floor(x / factor)) * 3;
      const d = (y * width + x) * 4;
      data[d] = img.data[s]!;
      data[d + 1] = img.data[s + 1]!;
      data[d + 2] = img.data[s + 2]!;
      data[d + 3] = 255;
    }
  }
  return { width, height, data };
}

/** Copies `src` into `dst` with its top-left corner at (x, y); whatever falls outside `dst` is cut off. */
export function blit(dst: RgbaCanvas, src: RgbaCanvas, x: number, y: number): void {
  for (let sy = 0; sy < src.height; sy++) {
    const dy = y + sy;
    if (dy < 0 || dy >= dst.height) continue;
    const x0 = Math.max(0, -x);
    const x1 = Math.min(src.width, dst.width - x);
    if (x1 <= x0) continue;
    dst.data.set(src.data.subarray((sy * src.width + x0) * 4, (sy * src.width + x1) * 4), (dy * dst.width + x + x0) * 4);
  }
}

/**
 * `img` upscaled by `factor` (default: to MIN_PANEL_SIDE) with the heatmap of `values` (row-major over the rows x
 * cols `grid` of image tokens) over it, normalised to the values' maximum or to `scale`: overlayHeatmap, the lab
 * page's colouring.
 */
export function heatmapPanel(
  img: RgbImage,
  values: ArrayLike<number>,
  grid: readonly [number, number],
  opts: PanelOptions & { factor?: number; scale?: number } = {},
): RgbaCanvas {
  const c = upscaleNearest(img, opts.factor ?? upscaleFactor(img.width, img.height, opts.minSide));
  overlayHeatmap(c.data, c.width, c.height, values, grid, opts.opacity, opts.scale);
  return c;
}

/**
 * Panels in a grid of `cols` columns, row-major, separated (and nothing else: no outer border) by `gap`-pixel lines
 * of the background colour. Each column is as wide as its widest panel and each row as tall as its tallest; a
 * smaller panel sits in its cell's top-left corner on the background.
 */
export function composeGrid(panels: readonly RgbaCanvas[], cols: number, opts: ComposeOptions = {}): RgbaCanvas {
  if (panels.length === 0) throw new Error('composeGrid: no panels');
  if (!Number.isInteger(cols) || cols < 1) throw new Error(`composeGrid: cols must be a positive integer, got ${cols}`);
  const gap = opts.gap ?? SEPARATOR;
  const n = Math.min(cols, panels.length);
  const rows = Math.ceil(panels.length / n);
  const colW = new Array<number>(n).fill(0);
  const rowH = new Array<number>(rows).fill(0);
  panels.forEach((p, i) => {
    colW[i % n] = Math.max(colW[i % n]!, p.width);
    rowH[Math.floor(i / n)] = Math.max(rowH[Math.floor(i / n)]!, p.height);
  });
  const offsets = (sizes: number[]) => sizes.map((_, i) => sizes.slice(0, i).reduce((a, b) => a + b + gap, 0));
  const xs = offsets(colW);
  const ys = offsets(rowH);
  const out = filledCanvas(xs[n - 1]! + colW[n - 1]!, ys[rows - 1]! + rowH[rows - 1]!, opts.background);
  panels.forEach((p, i) => blit(out, p, xs[i % n]!, ys[Math.floor(i / n)]!));
  return out;
}

/** Columns of a near-square grid of `n` panels (ceil(sqrt(n))). */
export function gridColumns(n: number): number {
  return Math.max(1, Math.ceil(Math.sqrt(n)));
}

/** The number of runs of image tokens an ImageView's image makes in a prompt (one per tile for tiled images). */
export function viewRuns(view: Pick<ImageView, 'tiles'>): number {
  const t = view.tiles;
  return t ? t.rows * t.cols + (t.global ? 1 : 0) : 1;
}

/**
 * One attention map of one image: `runs` holds the query's attention over each run of the image's tokens (prompt
 * order; one run unless the view is tiled), drawn over `view.image` upscaled to at least MIN_PANEL_SIDE. A LLaVA
 * 'full' strategy's leading CLS token (one value more than the grid) has no place on the grid and is left out, as
 * on the lab page. Tiled views (Idefics3 / SmolVLM): the crops' attention placed where each crop was cut from
 * (tiledAttention) over the stage-2 image, and, with a global tile, the global tile's own map as a second panel to
 * its right at the largest whole scale that fits the first panel's height, on a white gap; both on one colour scale
 * (the larger maximum), as the lab page draws them.
 */
export function attentionPanel(view: ImageView, runs: readonly ArrayLike<number>[], opts: PanelOptions & ComposeOptions = {}): RgbaCanvas {
  if (runs.length !== viewRuns(view)) throw new Error(`attentionPanel: ${runs.length} runs of image-token attention for an image of ${viewRuns(view)}`);
  if (!view.tiles) {
    const [gh, gw] = view.grid;
    const v = runs[0]!;
    const values = v.length === gh * gw + 1 ? Float32Array.from(v).subarray(1) : v;
    return heatmapPanel(view.image, values, view.grid, opts);
  }
  const t = tiledAttention(runs, view.tiles);
  let scale = 0;
  for (const v of t.values) scale = Math.max(scale, v);
  if (t.global) for (const v of t.global) scale = Math.max(scale, v);
  const main = heatmapPanel(view.image, t.values, t.grid, { ...opts, scale });
  if (!t.global || !view.globalImage) return main;
  const g = view.globalImage;
  const factor = Math.max(1, Math.floor(main.height / g.height));
  const side = view.tiles.tokenSide;
  const global = heatmapPanel(g, t.global, [side, side], { ...opts, factor, scale });
  return composeGrid([main, global], 2, { gap: opts.gap, background: PAIR_RGB });
}

/**
 * The attention-map picture: one panel per entry of `panels` (each the query's attention over the image's runs of
 * tokens, e.g. one head or a mean of heads; see attentionPanel), a single panel as it is, several as a near-square
 * grid (row-major in the given order) with separators. Returns RGB, ready for encodePng.
 */
export function attentionMapImage(view: ImageView, panels: readonly (readonly ArrayLike<number>[])[], opts: PanelOptions & ComposeOptions & { cols?: number } = {}): RgbImage {
  if (panels.length === 0) throw new Error('attentionMapImage: no panels');
  const drawn = panels.map((runs) => attentionPanel(view, runs, opts));
  return canvasToRgb(drawn.length === 1 ? drawn[0]! : composeGrid(drawn, opts.cols ?? gridColumns(drawn.length), opts));
}

/** The RGB channels of an (opaque) canvas. */
export function canvasToRgb(c: RgbaCanvas): RgbImage {
  const data = new Uint8Array(c.width * c.height * 3);
  for (let i = 0; i < c.width * c.height; i++) {
    data[i * 3] = c.data[i * 4]!;
    data[i * 3 + 1] = c.data[i * 4 + 1]!;
    data[i * 3 + 2] = c.data[i * 4 + 2]!;
  }
  return { width: c.width, height: c.height, data };
}
