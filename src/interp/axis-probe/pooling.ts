// Vision-token enhancement (see ../axis-probe.ts for the method and where it differs from the authors' code).
// Pooling: image tokens inside a box, their mean rows, the side check, and the projector features per item.

import type { VlmModel } from '../../models/vlm.js';
import type { RgbImage } from '../../io/image.js';
import type { Tokenizer } from '../../io/tokenizer.js';
import { loadImageFile } from '../../io/image.js';
import type { CaptureSpec } from '../../spec/spec.js';
import type { Relation } from '../../eval/synthetic.js';
import { type Axis, AXIS_LABELS, type AxisItem, axisOf, type Box, NEUTRAL_PROMPT, loadItemImage } from './items.js';
import { tokensInBox } from '../image-boxes.js';

export { tokensInBox } from '../image-boxes.js';

/** A box from image pixels to the model's view (per-axis scaling; see ../axis-probe.ts for what that assumes). */
export function scaleBox(box: Box, from: { width: number; height: number }, to: { width: number; height: number }): Box {
  const sx = to.width / from.width;
  const sy = to.height / from.height;
  return [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy];
}

/** Mean of the rows `idx` of a row-major [n, D] array, in float64. */
export function meanRows(data: ArrayLike<number>, D: number, idx: readonly number[]): Float64Array {
  const out = new Float64Array(D);
  for (const i of idx) for (let d = 0; d < D; d++) out[d]! += data[i * D + d]!;
  for (let d = 0; d < D; d++) out[d]! /= idx.length;
  return out;
}

/** Mean grid row and column of tokens (the authors' `merged_token_centers`). */
function tokenCentre(idx: readonly number[], cols: number): { row: number; col: number } {
  let row = 0;
  let col = 0;
  for (const i of idx) {
    row += Math.floor(i / cols);
    col += i % cols;
  }
  return { row: row / idx.length, col: col / idx.length };
}

/** Whether the token centres put the subject on the relation's side of the object (ties fail). */
export function sideCheck(relation: Relation, subj: readonly number[], obj: readonly number[], cols: number): boolean {
  const s = tokenCentre(subj, cols);
  const o = tokenCentre(obj, cols);
  switch (relation) {
    case 'left':
      return s.col < o.col;
    case 'right':
      return s.col > o.col;
    case 'above':
      return s.row < o.row;
    case 'below':
      return s.row > o.row;
  }
}

/** Pooled examples of one axis: rows 2i (subject) and 2i + 1 (object) belong to item i. */
export interface AxisExamples {
  rows: Float64Array[];
  labels: number[];
  items: string[];
}

export interface AxisFeatureSet {
  /** Width of the features (the text hidden size). */
  D: number;
  axes: Record<Axis, AxisExamples>;
  /** Items left out: a box with no token centre inside, or token centres that contradict the relation. */
  skipped: { emptyBox: string[]; sideCheck: string[] };
}

export interface ImageSource {
  /** Reads an image file (default: loadImageFile). */
  loadImage?: (path: string) => Promise<RgbImage>;
}

const CAPTURE_FEATURES: CaptureSpec = { logits: null, pattern: [], z: null, residual: [], imageFeatures: true };
export const CAPTURE_LOGITS: CaptureSpec = { logits: 'last', pattern: [], z: null, residual: [], imageFeatures: false };

/** The image's token grid as the model tiles it; throws for layouts whose tokens are not one raster over the grid. */
function untiledGrid(model: VlmModel, img: RgbImage, path: string): { grid: [number, number]; size: { width: number; height: number } } {
  const view = model.imageView(img);
  if (view.tiles && (view.tiles.rows * view.tiles.cols > 1 || view.tiles.global)) {
    throw new Error(`image ${path}: the model splits it into tiles (${view.tiles.rows}x${view.tiles.cols} crops${view.tiles.global ? ' + a global tile' : ''}); axis probes need one raster of image tokens over the image (LLaVA, Qwen2-VL)`);
  }
  return { grid: view.grid, size: { width: view.image.width, height: view.image.height } };
}

/**
 * Pooled projector outputs per item (see ../axis-probe.ts): each image runs once with NEUTRAL_PROMPT through the model's
 * processor, its image features [tokens, D] (prompt order = raster over imageView's grid) are read, and the tokens
 * inside each box (scaled to the view) are averaged. Items whose boxes hold no token centre, or whose token centres
 * contradict the relation, are skipped and listed. Consecutive items on one image share its run.
 */
export async function collectAxisFeatures(
  model: VlmModel,
  tokenizer: Tokenizer,
  items: readonly AxisItem[],
  opts: ImageSource & { onProgress?: (done: number, total: number) => void } = {},
): Promise<AxisFeatureSet> {
  const load = opts.loadImage ?? loadImageFile;
  const processor = model.createProcessor(tokenizer);
  const D = model.hiddenSize;
  const axes: Record<Axis, AxisExamples> = { horizontal: { rows: [], labels: [], items: [] }, vertical: { rows: [], labels: [], items: [] } };
  const skipped = { emptyBox: [] as string[], sideCheck: [] as string[] };
  type Run = { path: string; features: Float32Array; grid: [number, number]; size: { width: number; height: number }; image: RgbImage };
  let last = null as Run | null;
  for (const [n, item] of items.entries()) {
    if (last?.path !== item.imagePath) {
      const img = await loadItemImage(item, load);
      const pixels = model.preprocess(img);
      const ids = processor.encodeText(processor.formatPrompt(NEUTRAL_PROMPT, 1), [pixels]).ids;
      const r = await model.run({ ids, pixelValues: [pixels], capture: CAPTURE_FEATURES });
      const { grid, size } = untiledGrid(model, img, item.imagePath);
      const f = r.imageFeatures!;
      if (f.shape[0] !== grid[0] * grid[1]) {
        throw new Error(`image ${item.imagePath}: ${f.shape[0]} image tokens do not tile the ${grid[0]}x${grid[1]} grid of the model's view`);
      }
      last = { path: item.imagePath, features: f.data, grid, size, image: img };
    }
    const { grid, size, image, features } = last;
    const subj = tokensInBox(grid, size, scaleBox(item.subjectBox, image, size));
    const obj = tokensInBox(grid, size, scaleBox(item.objectBox, image, size));
    if (subj.length === 0 || obj.length === 0) skipped.emptyBox.push(item.id);
    else if (!sideCheck(item.relation, subj, obj, grid[1])) skipped.sideCheck.push(item.id);
    else {
      const axis = axisOf(item.relation);
      const subjectClass = AXIS_LABELS[axis].indexOf(item.relation);
      const a = axes[axis];
      a.rows.push(meanRows(features, D, subj), meanRows(features, D, obj));
      a.labels.push(subjectClass, 1 - subjectClass);
      a.items.push(item.id);
    }
    opts.onProgress?.(n + 1, items.length);
  }
  return { D, axes, skipped };
}
