// Drawing the image (as the model saw it) with the attention heatmap of one layer / head on top, and turning
// whatever the user gives (file, drop, synthetic scene) into the RgbImage the processor takes.

import {
  decodeImage,
  generateScene,
  imageAttention,
  meanOf,
  overlayHeatmap,
  renderScene,
  sceneQuestions,
  tiledAttention,
  type ImageSpan,
  type PatternCaptured,
  type RgbImage,
  type TiledAttention,
  type TileLayout,
  type VlmModel,
} from '../src/index.js';

/** Side of the square box the image view fits in (CSS pixels; the canvas keeps the image's aspect inside it). */
export const VIEW_BOX = 384;

/** Canvas size for an image of `width` x `height`: its longer side `box`, the aspect kept (at least 1 px). */
export function viewSize(width: number, height: number, box = VIEW_BOX): { width: number; height: number } {
  const s = box / Math.max(width, height);
  return { width: Math.max(1, Math.round(width * s)), height: Math.max(1, Math.round(height * s)) };
}

/** Side of the box the global tile of a tiled image (Idefics3 / SmolVLM) is drawn in, beside the main view. */
export const GLOBAL_VIEW_BOX = 128;

export interface DrawOptions {
  /** The box the canvas fits in (default VIEW_BOX). */
  box?: number;
  /** The value drawn at full colour (default the maximum of `values`), to share one scale between views. */
  scale?: number;
}

/**
 * Draws `img` scaled to the canvas (nearest neighbour; the canvas is resized to the image's aspect within
 * VIEW_BOX, so a Qwen image of 112x56 is not stretched to a square), with the heatmap of `values` (row-major over
 * the image tokens' rows x cols `grid`, e.g. 2x4 for it) over it when given.
 */
export function drawImage(canvas: HTMLCanvasElement, img: RgbImage, values: Float32Array | null, grid?: readonly [number, number], opts: DrawOptions = {}): void {
  const size = viewSize(img.width, img.height, opts.box);
  if (canvas.width !== size.width) canvas.width = size.width;
  if (canvas.height !== size.height) canvas.height = size.height;
  const src = document.createElement('canvas');
  src.width = img.width;
  src.height = img.height;
  const sctx = src.getContext('2d')!;
  const data = sctx.createImageData(img.width, img.height);
  for (let i = 0; i < img.width * img.height; i++) {
    data.data[i * 4] = img.data[i * 3]!;
    data.data[i * 4 + 1] = img.data[i * 3 + 1]!;
    data.data[i * 4 + 2] = img.data[i * 3 + 2]!;
    data.data[i * 4 + 3] = 255;
  }
  sctx.putImageData(data, 0, 0);
  const ctx = canvas.getContext('2d')!;
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(src, 0, 0, canvas.width, canvas.height);
  if (values) {
    const px = ctx.getImageData(0, 0, canvas.width, canvas.height);
    // A LLaVA 'full' strategy keeps CLS as the first image token: it has no place on the grid.
    const g = grid ?? [Math.round(Math.sqrt(values.length)), Math.round(Math.sqrt(values.length))];
    overlayHeatmap(px.data, canvas.width, canvas.height, values.length === g[0] * g[1] + 1 ? values.subarray(1) : values, g, undefined, opts.scale);
    ctx.putImageData(px, 0, 0);
  }
}

/** The heatmap values of one layer: one head's attention over the image tokens, or the mean over heads. */
export function heatmapValues(patterns: readonly PatternCaptured[], span: ImageSpan, layer: number, head: number | null): Float32Array {
  return spanHeatmaps(patterns, [span], layer, head)[0]!;
}

/** heatmapValues of each run of image tokens (a tiled image's tiles), in the order of `spans`. */
export function spanHeatmaps(patterns: readonly PatternCaptured[], spans: readonly ImageSpan[], layer: number, head: number | null): Float32Array[] {
  const p = patterns.find((c) => c.layer === layer);
  if (!p) throw new Error(`no attention captured for layer ${layer}`);
  return spans.map((span) => {
    const perHead = imageAttention(p, span);
    return head === null ? meanOf(perHead) : perHead[head]!;
  });
}

/**
 * The heatmaps of a tiled image (Idefics3 / SmolVLM) at one layer / head: the crops' attention placed where each
 * crop came from (one grid over the image), the global tile's on its own, and the one scale both are drawn at
 * (the larger maximum, so the colours compare across the two views).
 */
export function tiledHeatmaps(patterns: readonly PatternCaptured[], spans: readonly ImageSpan[], layout: TileLayout, layer: number, head: number | null): TiledAttention & { scale: number } {
  const t = tiledAttention(spanHeatmaps(patterns, spans, layer, head), layout);
  let scale = 0;
  for (const v of t.values) scale = Math.max(scale, v);
  if (t.global) for (const v of t.global) scale = Math.max(scale, v);
  return { ...t, scale };
}

/**
 * Decodes a picked or dropped image file. PNG and JPEG go through vlmscope's own decoders (the pixels Node
 * sees for the same file); other formats the browser can show (WebP, GIF, BMP) through a canvas.
 */
export async function imageFromFile(file: File): Promise<RgbImage> {
  const bytes = new Uint8Array(await file.arrayBuffer());
  const png = bytes[0] === 0x89 && bytes[1] === 0x50;
  const jpg = bytes[0] === 0xff && bytes[1] === 0xd8;
  if (png || jpg) return decodeImage(bytes, file.name);
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    throw new Error(`${file.name}: the browser cannot decode this file as an image`);
  }
  const c = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = c.getContext('2d')!;
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const data = new Uint8Array(bitmap.width * bitmap.height * 3);
  for (let i = 0; i < bitmap.width * bitmap.height; i++) {
    data[i * 3] = rgba[i * 4]!;
    data[i * 3 + 1] = rgba[i * 4 + 1]!;
    data[i * 3 + 2] = rgba[i * 4 + 2]!;
  }
  return { width: bitmap.width, height: bitmap.height, data };
}

/** The reference side a random scene is offered to the model at (a 224-px square). */
const SCENE_PROBE = 224;

/**
 * Side of a random scene for `model`: what it makes of a 224-px square (LLaVA: its crop size, e.g. 64 for the
 * organism or 336; Qwen: 224 on its 28-px merge blocks within min_pixels / max_pixels, i.e. 8x8 image tokens),
 * kept within generateScene's 32..4096. Without a model, the organism's 64.
 */
export function sceneSide(model: Pick<VlmModel, 'imageView'> | null | undefined): number {
  if (!model) return 64;
  const probe: RgbImage = { width: SCENE_PROBE, height: SCENE_PROBE, data: new Uint8Array(SCENE_PROBE * SCENE_PROBE * 3) };
  const { image } = model.imageView(probe);
  return Math.min(4096, Math.max(32, Math.min(image.width, image.height)));
}

/** A synthetic scene of the organism's training distribution, and a spatial question about it. */
export function syntheticScene(seed: number, size: number): { image: RgbImage; question: string } {
  const scene = generateScene(seed, { size });
  // Every scene has at least one unambiguous pair, so a spatial question always exists.
  const [item] = sceneQuestions(scene, { sceneId: `seed${seed}`, types: ['spatial'], questionsPerScene: 1 });
  return { image: renderScene(scene), question: item!.question };
}
