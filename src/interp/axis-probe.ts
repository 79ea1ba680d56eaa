// Vision-token enhancement ("The Dual Mechanisms of Spatial Reasoning in Vision-Language Models", Cui et al.,
// arXiv 2603.22278), as the authors' code does it (github Nix07/spatial-variable-binding, coco_amplification/):
//
// 1. Axis probes (run_experiment.py -> src/common.py `train_axis_probes`, src/qwen.py `build_probe_data`): each image
//    is run once with a neutral prompt ("Describe the image.") and the projector output (the image-token embeddings,
//    one row per image token) is read. Per question, the rows of the image tokens inside the subject's box and inside
//    the object's box are mean-pooled: two examples per item. Labels: the subject gets the class of the relation
//    (horizontal: left 0 / right 1; vertical: above 0 / below 1), the object the opposite class. Per axis a two-class
//    linear probe W [D, 2], b [2] is trained with cross-entropy by full-batch AdamW (lr 1e-3, weight decay 1e-4,
//    200 epochs = 200 steps, torch defaults betas (0.9, 0.999), eps 1e-8, decay on W and b), initialised
//    W, b ~ N(0, 1) / sqrt(D), on a 95 / 5 split by item. Only "golden" items (both listings already answered right)
//    train it, and only when the boxes' token centres agree with the relation (their `side_check`).
// 2. Enhancement (src/qwen.py `predict_with_amp`): a pre-hook on text layer 0, prefill only, over every image token:
//    h <- h + alpha * (h W) diag(|W_k|^2 + 1e-8)^-1 W^T, the `vision_token_add` intervention of src/spec/spec.ts
//    with the probe's two columns as directions. The prediction is the argmax next token, decoded, trimmed, lowercased.
// 3. Sweep (src/common.py `run_coco_baseline_eval`, `partition_results`, `run_coco_amp_sweep`, `compute_oracle`,
//    `make_random_W`): every item is asked in both option orders ("left or right" / "right or left"); an item is
//    correct only when both listings are ("strict both listings"). A failed item is fixed at alpha only when every
//    listing it failed becomes correct. Alphas 0..15; "Probe" is the best single alpha, "Probe*" the per-item oracle
//    (fixed at any alpha > 0). The control uses random directions: a Gaussian D x 2 matrix with unit-norm columns,
//    drawn afresh per axis (the authors draw one unseeded set; here one set per seed, several seeds).
//
// Where this differs from the authors' code, on purpose:
//   - A token is inside a box when its grid cell's centre is (their code takes every patch the box touches).
//   - Boxes are scaled to the model's view of the image per axis (exact for resizing processors such as Qwen's and
//     for square images; a LLaVA processor that centre-crops a non-square image would need the crop offset).
//   - Their side check passes an item whose subject and object token centres coincide when the relation is
//     right / below; here ties are skipped on both sides.
//   - Their sweep only replays the failed listings of failed items and counts golden items as still correct
//     (scope "failures", the default); scope "all" re-asks every item in both orders at every alpha and also counts
//     items the enhancement breaks.
//   - They drop items with an out-of-axis baseline answer (`clean_results`); here those count as failures unless
//     `dropInvalid` (the CLI's --drop-invalid) is set.
//
// The probe is float64 on the CPU (it is small: D x 2 weights over a few hundred pooled rows). Browser-safe: Node file
// access only through dynamic imports inside the readers.

import type { VlmModel } from '../models/vlm.js';
import type { ImageInput, VlmProcessor } from '../models/model.js';
import type { RgbImage } from '../io/image.js';
import type { Tokenizer } from '../io/tokenizer.js';
import { loadImageFile } from '../io/image.js';
import { EMPTY_INTERVENTIONS, type CaptureSpec, type InterventionSpec } from '../spec/spec.js';
import { readQuestions } from '../eval/dataset.js';
import { mixSeed, mulberry32, type Relation } from '../eval/synthetic.js';

// ---------------------------------------------------------------------------------------------------------------
// Items

export type Axis = 'horizontal' | 'vertical';
export const AXES: readonly Axis[] = ['horizontal', 'vertical'];
/** Class 0 and class 1 of each axis's probe (the authors' LABELS_BY_AXIS). */
export const AXIS_LABELS: Readonly<Record<Axis, readonly [Relation, Relation]>> = { horizontal: ['left', 'right'], vertical: ['above', 'below'] };
export const axisOf = (r: Relation): Axis => (r === 'left' || r === 'right' ? 'horizontal' : 'vertical');

/** [x0, y0, x1, y1] in pixels of the image file (x right, y down). */
export type Box = [number, number, number, number];

/** One two-object spatial question: "the subject is <relation> the object". */
export interface AxisItem {
  id: string;
  /** Image file (or URL) the boxes refer to. */
  imagePath: string;
  subject: string;
  object: string;
  relation: Relation;
  subjectBox: Box;
  objectBox: Box;
}

/** Neutral prompt the features are read with (the authors' `build_dummy_inputs`). */
export const NEUTRAL_PROMPT = 'Describe the image.';

/** The two option orders: the axis's labels in order ("left or right") and reversed ("right or left"). */
export type Listing = 'lr' | 'rl';
export const LISTINGS: readonly Listing[] = ['lr', 'rl'];

/**
 * Question wordings: `synthetic` keeps the synthetic scenes' question (src/eval/synthetic.ts) with the authors'
 * one-word answer instruction; `anchor` is the authors' Qwen2-VL / Pixtral prompt and `direct` their Gemma-3 one
 * (coco_amplification/src/prompts.py `relative_prompt_text`, `direct_prompt_text`).
 */
export const PROMPT_STYLES = ['synthetic', 'anchor', 'direct'] as const;
export type PromptStyle = (typeof PROMPT_STYLES)[number];

/** The question of one listing. */
export function listingPrompt(item: Pick<AxisItem, 'subject' | 'object' | 'relation'>, listing: Listing, style: PromptStyle = 'synthetic'): string {
  const axis = axisOf(item.relation);
  const [a, b] = listing === 'lr' ? AXIS_LABELS[axis] : [AXIS_LABELS[axis][1], AXIS_LABELS[axis][0]];
  const { subject: s, object: o } = item;
  switch (style) {
    case 'synthetic':
      return `Where is the ${s} in relation to the ${o}? Answer with one word: ${a} or ${b}.`;
    case 'anchor':
      return axis === 'horizontal'
        ? `Using the ${o} as the reference point, which side is the ${s} on? Answer with one word: ${a} or ${b}.`
        : `Using the ${o} as the reference point, where is the ${s} located? Answer with one word: ${a} or ${b}.`;
    case 'direct':
      return axis === 'horizontal'
        ? `Is the ${s} to the ${a} or to the ${b} of the ${o}? Answer with one word.`
        : `Is the ${s} ${a} or ${b} the ${o}? Answer with one word.`;
  }
}

const RELATION_SET = new Set<string>(['left', 'right', 'above', 'below']);
/** The synthetic scenes' spatial question (src/eval/synthetic.ts `sceneQuestions`, type "spatial"). */
const SYNTHETIC_SPATIAL = /^Where is the (.+?) in relation to the (.+?)\?/;

interface SceneRecord {
  id: string;
  objects: { name: string; x: number; y: number; d: number }[];
}

function parseSceneLine(line: string, where: string): SceneRecord {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (e) {
    throw new Error(`${where}: invalid JSON (${(e as Error).message})`);
  }
  const o = v as Record<string, unknown>;
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new Error(`${where}: expected a JSON object`);
  if (typeof o.id !== 'string') throw new Error(`${where}: missing field "id"`);
  if (!Array.isArray(o.objects)) throw new Error(`${where}: missing field "objects" (a list)`);
  const objects = o.objects.map((x, i) => {
    const ob = x as Record<string, unknown>;
    const num = (k: string) => {
      if (typeof ob?.[k] !== 'number' || !Number.isFinite(ob[k])) throw new Error(`${where}: objects[${i}].${k} must be a number`);
      return ob[k] as number;
    };
    if (typeof ob?.colour !== 'string' || typeof ob?.shape !== 'string') throw new Error(`${where}: objects[${i}] needs "colour" and "shape"`);
    return { name: `${ob.colour} ${ob.shape}`, x: num('x'), y: num('y'), d: num('d') };
  });
  return { id: o.id, objects };
}

function boxArg(v: unknown, where: string): Box {
  if (!Array.isArray(v) || v.length !== 4 || v.some((x) => typeof x !== 'number' || !Number.isFinite(x))) {
    throw new Error(`${where} must be [x0, y0, x1, y1] (4 numbers, pixels of the image)`);
  }
  const b = v as Box;
  if (!(b[2] > b[0] && b[3] > b[1])) throw new Error(`${where} [${b.join(', ')}] is empty: need x1 > x0 and y1 > y0`);
  return b;
}

const isUrl = (p: string): boolean => /^[a-z][a-z0-9+.-]*:\/\//i.test(p) || p.startsWith('data:');

/**
 * Items of a JSONL file with boxes per example, one object per line:
 *   {"id": "q1", "image": "images/a.png", "subject": "red circle", "object": "blue square", "relation": "left",
 *    "subject_box": [x0, y0, x1, y1], "object_box": [x0, y0, x1, y1]}
 * (`id` optional: "line-<n>"; `image` relative to the file's folder; boxes in pixels of the image file).
 */
export function parseBoxItems(text: string, source: string, resolveImage: (image: string) => string): AxisItem[] {
  const items: AxisItem[] = [];
  const seen = new Set<string>();
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '') return;
    const where = `${source}:${i + 1}`;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (e) {
      throw new Error(`${where}: invalid JSON (${(e as Error).message})`);
    }
    const o = v as Record<string, unknown>;
    if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new Error(`${where}: expected a JSON object`);
    for (const k of ['image', 'subject', 'object', 'relation']) {
      if (typeof o[k] !== 'string' || (o[k] as string).trim() === '') throw new Error(`${where}: missing field "${k}" (a string)`);
    }
    const relation = (o.relation as string).toLowerCase();
    if (!RELATION_SET.has(relation)) throw new Error(`${where}: "relation" must be left, right, above or below, got ${JSON.stringify(o.relation)}`);
    const id = o.id === undefined ? `line-${i + 1}` : String(o.id);
    if (seen.has(id)) throw new Error(`${where}: duplicate id ${JSON.stringify(id)}`);
    seen.add(id);
    items.push({
      id,
      imagePath: resolveImage(o.image as string),
      subject: o.subject as string,
      object: o.object as string,
      relation: relation as Relation,
      subjectBox: boxArg(o.subject_box, `${where}: "subject_box"`),
      objectBox: boxArg(o.object_box, `${where}: "object_box"`),
    });
  });
  return items;
}

export interface AxisDataSummary {
  items: AxisItem[];
  /** Questions of the file that are not two-object left / right / above / below questions (synthetic sets). */
  ignored: number;
  /** The files read. */
  questions: string;
  scenes: string | null;
}

/**
 * Reads spatial items with boxes: a synthetic dataset folder (questions.jsonl + scenes.jsonl, as
 * scripts/make-synthetic.ts writes), its questions.jsonl (scenes.jsonl beside it, or `scenesPath`), or a JSONL file
 * with boxes per example (parseBoxItems; detected by a "subject_box" field on the first line). From synthetic sets
 * the "spatial" questions are used ("Where is the A in relation to the B?", answer the relation), the boxes those
 * of the named objects in the scene file. Errors name the file (and line).
 */
export async function readAxisItems(path: string, scenesPath?: string): Promise<AxisDataSummary> {
  const fs = await import('node:fs/promises');
  const nodePath = await import('node:path');
  const statOf = async (p: string) => fs.stat(p).catch(() => null);
  const st = await statOf(path);
  if (!st) throw new Error(`cannot read data ${path}: no such file or folder`);
  let questions = path;
  if (st.isDirectory()) {
    questions = nodePath.join(path, 'questions.jsonl');
    if (!(await statOf(questions))?.isFile()) throw new Error(`data folder ${path} has no questions.jsonl; give the folder scripts/make-synthetic.ts wrote, or a JSONL file`);
  }
  const text = await fs.readFile(questions, 'utf8');
  const lines = text.split(/\r?\n/);
  const firstIndex = lines.findIndex((l) => l.trim() !== '');
  if (firstIndex < 0) throw new Error(`data file ${questions} is empty`);
  const dir = nodePath.dirname(nodePath.resolve(questions));
  const resolveImage = (image: string) => (isUrl(image) || nodePath.isAbsolute(image) ? image : nodePath.join(dir, image));
  let first: unknown;
  try {
    first = JSON.parse(lines[firstIndex]!);
  } catch (e) {
    throw new Error(`${questions}:${firstIndex + 1}: invalid JSON (${(e as Error).message})`);
  }
  if (first !== null && typeof first === 'object' && 'subject_box' in first) {
    if (scenesPath !== undefined) throw new Error(`${questions} gives boxes per example; --scenes is only for synthetic question files`);
    return { items: parseBoxItems(text, questions, resolveImage), ignored: 0, questions, scenes: null };
  }

  const scenesFile = scenesPath ?? nodePath.join(dir, 'scenes.jsonl');
  if (!(await statOf(scenesFile))?.isFile()) {
    throw new Error(
      scenesPath !== undefined
        ? `cannot read scene file ${scenesFile}: no such file`
        : `no scenes.jsonl beside ${questions} (the object boxes); give --scenes FILE, or a JSONL with "subject_box" / "object_box" per example`,
    );
  }
  const scenes = new Map<string, SceneRecord>();
  (await fs.readFile(scenesFile, 'utf8')).split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '') return;
    const s = parseSceneLine(line, `${scenesFile}:${i + 1}`);
    scenes.set(s.id, s);
  });
  const all = await readQuestions(questions, { includeSubQuestions: false });
  const items: AxisItem[] = [];
  let ignored = 0;
  for (const q of all) {
    const m = SYNTHETIC_SPATIAL.exec(q.question);
    const relation = q.answer.trim().toLowerCase();
    if (q.type !== 'spatial' || !m || !RELATION_SET.has(relation)) {
      ignored++;
      continue;
    }
    const base = q.imagePath.slice(Math.max(q.imagePath.lastIndexOf('/'), q.imagePath.lastIndexOf('\\')) + 1).replace(/\.[^.]*$/, '');
    const scene = scenes.get(base) ?? scenes.get(q.id.split('-')[0]!);
    if (!scene) throw new Error(`question ${q.id}: no scene "${base}" in ${scenesFile}`);
    const box = (name: string): Box => {
      const o = scene.objects.find((x) => x.name === name);
      if (!o) throw new Error(`question ${q.id}: scene ${scene.id} in ${scenesFile} has no ${name}`);
      return [o.x, o.y, o.x + o.d, o.y + o.d];
    };
    items.push({ id: q.id, imagePath: q.imagePath, subject: m[1]!, object: m[2]!, relation: relation as Relation, subjectBox: box(m[1]!), objectBox: box(m[2]!) });
  }
  return { items, ignored, questions, scenes: scenesFile };
}

// ---------------------------------------------------------------------------------------------------------------
// Pooling

/** A box from image pixels to the model's view (per-axis scaling; see the header for what that assumes). */
export function scaleBox(box: Box, from: { width: number; height: number }, to: { width: number; height: number }): Box {
  const sx = to.width / from.width;
  const sy = to.height / from.height;
  return [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy];
}

/**
 * Image tokens inside a box: a `grid` = [rows, cols] of tokens tiles the view (`size`) in raster order, and token
 * r * cols + c is inside when its cell's centre ((c + 0.5) W / cols, (r + 0.5) H / rows) lies in the box (edges
 * included). Sorted indices.
 */
export function tokensInBox(grid: readonly [number, number], size: { width: number; height: number }, box: Box): number[] {
  const [rows, cols] = grid;
  const out: number[] = [];
  for (let r = 0; r < rows; r++) {
    const cy = ((r + 0.5) * size.height) / rows;
    if (cy < box[1] || cy > box[3]) continue;
    for (let c = 0; c < cols; c++) {
      const cx = ((c + 0.5) * size.width) / cols;
      if (cx >= box[0] && cx <= box[2]) out.push(r * cols + c);
    }
  }
  return out;
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
const CAPTURE_LOGITS: CaptureSpec = { logits: 'last', pattern: [], z: null, residual: [], imageFeatures: false };

/** The image's token grid as the model tiles it; throws for layouts whose tokens are not one raster over the grid. */
function untiledGrid(model: VlmModel, img: RgbImage, path: string): { grid: [number, number]; size: { width: number; height: number } } {
  const view = model.imageView(img);
  if (view.tiles && (view.tiles.rows * view.tiles.cols > 1 || view.tiles.global)) {
    throw new Error(`image ${path}: the model splits it into tiles (${view.tiles.rows}x${view.tiles.cols} crops${view.tiles.global ? ' + a global tile' : ''}); axis probes need one raster of image tokens over the image (LLaVA, Qwen2-VL)`);
  }
  return { grid: view.grid, size: { width: view.image.width, height: view.image.height } };
}

/**
 * Pooled projector outputs per item (see the header): each image runs once with NEUTRAL_PROMPT through the model's
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
      let img: RgbImage;
      try {
        img = await load(item.imagePath);
      } catch (e) {
        throw new Error(`question ${item.id}: ${(e as Error).message}`);
      }
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

// ---------------------------------------------------------------------------------------------------------------
// AdamW and the probe

export interface AdamWOptions {
  lr: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
}

/** The authors' probe optimiser: torch.optim.AdamW(lr=1e-3, weight_decay=1e-4) with torch's other defaults. */
export const ADAMW_DEFAULTS: AdamWOptions = { lr: 1e-3, weightDecay: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8 };

/**
 * torch.optim.AdamW (decoupled weight decay, bias-corrected moments), float64:
 *   p <- p (1 - lr wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
 *   p <- p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 */
export class AdamW {
  readonly opts: AdamWOptions;
  private t = 0;
  private readonly m: Float64Array[];
  private readonly v: Float64Array[];

  constructor(sizes: readonly number[], opts: Partial<AdamWOptions> = {}) {
    this.opts = { ...ADAMW_DEFAULTS, ...opts };
    this.m = sizes.map((n) => new Float64Array(n));
    this.v = sizes.map((n) => new Float64Array(n));
  }

  get steps(): number {
    return this.t;
  }

  step(params: readonly Float64Array[], grads: readonly Float64Array[]): void {
    const { lr, weightDecay, beta1, beta2, eps } = this.opts;
    this.t++;
    const bc1 = 1 - beta1 ** this.t;
    const sqrtBc2 = Math.sqrt(1 - beta2 ** this.t);
    const stepSize = lr / bc1;
    params.forEach((p, j) => {
      const g = grads[j]!;
      const m = this.m[j]!;
      const v = this.v[j]!;
      if (p.length !== m.length || g.length !== m.length) throw new Error(`AdamW.step: parameter ${j} has ${p.length} values and gradient ${g.length}, expected ${m.length}`);
      for (let i = 0; i < p.length; i++) {
        p[i]! *= 1 - lr * weightDecay;
        m[i] = beta1 * m[i]! + (1 - beta1) * g[i]!;
        v[i] = beta2 * v[i]! + (1 - beta2) * g[i]! * g[i]!;
        p[i]! -= (stepSize * m[i]!) / (Math.sqrt(v[i]!) / sqrtBc2 + eps);
      }
    });
  }
}

/** Standard normal draws from a seeded mulberry32 stream (Box-Muller). */
export function gaussian(seed: number): () => number {
  const u = mulberry32(seed);
  let spare: number | null = null;
  return () => {
    if (spare !== null) {
      const s = spare;
      spare = null;
      return s;
    }
    const u1 = 1 - u(); // (0, 1]
    const u2 = u();
    const r = Math.sqrt(-2 * Math.log(u1));
    spare = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  };
}

/**
 * Cross-entropy of the 2-class softmax probe over rows, and its gradient: logits z = x W + b (W row-major [D, 2]),
 * loss = mean -log softmax(z)[y], dW = X^T (p - onehot(y)) / N, db = mean (p - onehot(y)).
 */
export function probeLossAndGrad(
  rows: readonly Float64Array[],
  labels: readonly number[],
  W: Float64Array,
  b: Float64Array,
): { loss: number; gW: Float64Array; gb: Float64Array } {
  const D = W.length / 2;
  const gW = new Float64Array(W.length);
  const gb = new Float64Array(2);
  let loss = 0;
  const N = rows.length;
  for (let n = 0; n < N; n++) {
    const x = rows[n]!;
    let z0 = b[0]!;
    let z1 = b[1]!;
    for (let d = 0; d < D; d++) {
      z0 += x[d]! * W[2 * d]!;
      z1 += x[d]! * W[2 * d + 1]!;
    }
    const mx = Math.max(z0, z1);
    const lse = mx + Math.log(Math.exp(z0 - mx) + Math.exp(z1 - mx));
    const y = labels[n]!;
    loss += lse - (y === 0 ? z0 : z1);
    const e0 = Math.exp(z0 - lse) - (y === 0 ? 1 : 0);
    const e1 = Math.exp(z1 - lse) - (y === 1 ? 1 : 0);
    for (let d = 0; d < D; d++) {
      gW[2 * d]! += (x[d]! * e0) / N;
      gW[2 * d + 1]! += (x[d]! * e1) / N;
    }
    gb[0]! += e0 / N;
    gb[1]! += e1 / N;
  }
  return { loss: loss / N, gW, gb };
}

/** Class of each row under the probe (argmax; a tie is class 0, as torch's argmax). */
export function probePredict(rows: readonly Float64Array[], W: ArrayLike<number>, b: ArrayLike<number>): number[] {
  const D = W.length / 2;
  return rows.map((x) => {
    let z0 = b[0]!;
    let z1 = b[1]!;
    for (let d = 0; d < D; d++) {
      z0 += x[d]! * W[2 * d]!;
      z1 += x[d]! * W[2 * d + 1]!;
    }
    return z1 > z0 ? 1 : 0;
  });
}

export interface ProbeTrainOptions extends Partial<AdamWOptions> {
  /** Full-batch AdamW steps (default 200). */
  epochs?: number;
  /** Share of items that train (default 0.95; the rest are held out). */
  trainFraction?: number;
  /** Seed of the split and the initial weights (default 0). */
  seed?: number;
}

export interface AxisProbe {
  axis: Axis;
  /** Class 0 and class 1. */
  labels: readonly [Relation, Relation];
  D: number;
  /** [D, 2] row-major: column k (W[2d + k]) is class k's weight vector, a vision_token_add direction. */
  W: Float64Array;
  b: Float64Array;
  /** On the training rows and on the held-out rows (2 per item), in [0, 1]. */
  trainAccuracy: number;
  heldOutAccuracy: number;
  trainItems: number;
  heldOutItems: number;
  /** Cross-entropy before each step. */
  losses: number[];
}

export const PROBE_TRAIN_DEFAULTS = { epochs: 200, trainFraction: 0.95, seed: 0 } as const;

/** Seeded Fisher-Yates permutation of 0..n-1. */
function permutation(n: number, next: () => number): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [p[i], p[j]] = [p[j]!, p[i]!];
  }
  return p;
}

/**
 * Trains one axis probe on paired rows (rows 2i, 2i + 1 = item i) as `train_axis_probes` does: the items are split
 * train / held out by a seeded permutation (split = max(1, floor(trainFraction n)), at most n - 1), W and b start as
 * N(0, 1) / sqrt(D) draws from the seed, then `epochs` full-batch AdamW steps on the mean cross-entropy.
 */
export function trainAxisProbe(axis: Axis, examples: AxisExamples, opts: ProbeTrainOptions = {}): AxisProbe {
  const epochs = opts.epochs ?? PROBE_TRAIN_DEFAULTS.epochs;
  const frac = opts.trainFraction ?? PROBE_TRAIN_DEFAULTS.trainFraction;
  const seed = opts.seed ?? PROBE_TRAIN_DEFAULTS.seed;
  if (!Number.isInteger(epochs) || epochs < 0) throw new Error(`epochs must be a non-negative integer, got ${epochs}`);
  if (!(frac > 0 && frac < 1)) throw new Error(`trainFraction must be in (0, 1), got ${frac}`);
  const nItems = examples.items.length;
  if (examples.rows.length !== 2 * nItems || examples.labels.length !== 2 * nItems) throw new Error(`${axis}: expected 2 rows and labels per item`);
  if (nItems < 2) throw new Error(`${axis}: need at least 2 items to split train / held out, got ${nItems}`);
  const D = examples.rows[0]!.length;
  const rng = mulberry32(mixSeed(seed >>> 0, AXES.indexOf(axis) + 1));
  const perm = permutation(nItems, rng);
  let split = Math.max(1, Math.floor(frac * nItems));
  if (split >= nItems) split = nItems - 1;
  const pick = (items: number[]) => ({
    rows: items.flatMap((i) => [examples.rows[2 * i]!, examples.rows[2 * i + 1]!]),
    labels: items.flatMap((i) => [examples.labels[2 * i]!, examples.labels[2 * i + 1]!]),
  });
  const train = pick(perm.slice(0, split));
  const held = pick(perm.slice(split));
  const normal = gaussian(rng() * 2 ** 32);
  const W = Float64Array.from({ length: 2 * D }, () => normal() / Math.sqrt(D));
  const b = Float64Array.from({ length: 2 }, () => normal() / Math.sqrt(D));
  const opt = new AdamW([W.length, 2], opts);
  const losses: number[] = [];
  for (let e = 0; e < epochs; e++) {
    const { loss, gW, gb } = probeLossAndGrad(train.rows, train.labels, W, b);
    losses.push(loss);
    opt.step([W, b], [gW, gb]);
  }
  const acc = (s: { rows: Float64Array[]; labels: number[] }) => {
    const p = probePredict(s.rows, W, b);
    return p.reduce((n, c, i) => n + (c === s.labels[i] ? 1 : 0), 0) / Math.max(1, p.length);
  };
  return { axis, labels: AXIS_LABELS[axis], D, W, b, trainAccuracy: acc(train), heldOutAccuracy: acc(held), trainItems: split, heldOutItems: nItems - split, losses };
}

export type AxisProbes = Partial<Record<Axis, AxisProbe>>;

/** Probes of every axis with at least 2 items (the others are returned in `untrained` with their item counts). */
export function trainAxisProbes(set: AxisFeatureSet, opts: ProbeTrainOptions = {}): { probes: AxisProbes; untrained: Partial<Record<Axis, number>> } {
  const probes: AxisProbes = {};
  const untrained: Partial<Record<Axis, number>> = {};
  for (const axis of AXES) {
    const n = set.axes[axis].items.length;
    if (n < 2) untrained[axis] = n;
    else probes[axis] = trainAxisProbe(axis, set.axes[axis], opts);
  }
  return { probes, untrained };
}

/** The two columns of a [D, 2] matrix as vision_token_add directions. */
export function columns(W: ArrayLike<number>): [Float32Array, Float32Array] {
  const D = W.length / 2;
  const c0 = new Float32Array(D);
  const c1 = new Float32Array(D);
  for (let d = 0; d < D; d++) {
    c0[d] = W[2 * d]!;
    c1[d] = W[2 * d + 1]!;
  }
  return [c0, c1];
}

/**
 * The random control (`make_random_W`): per axis a D x 2 Gaussian matrix with unit-norm columns, row-major like
 * AxisProbe.W, drawn from its own stream of `seed` per axis (so each axis gets a fresh draw).
 */
export function randomDirections(D: number, seed: number): Record<Axis, Float64Array> {
  const out = {} as Record<Axis, Float64Array>;
  for (const [a, axis] of AXES.entries()) {
    const normal = gaussian(mixSeed(mixSeed(seed >>> 0, 0x5eed), a + 1));
    const W = Float64Array.from({ length: 2 * D }, () => normal());
    for (let k = 0; k < 2; k++) {
      let norm = 0;
      for (let d = 0; d < D; d++) norm += W[2 * d + k]! ** 2;
      norm = Math.sqrt(norm);
      for (let d = 0; d < D; d++) W[2 * d + k]! /= norm;
    }
    out[axis] = W;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// probes.json

export interface ProbeFileSettings {
  [key: string]: unknown;
}

/** probes.json: {"horizontal": {W: [[w0, w1] x D], b, accuracy: {train, held_out}, ...}, "vertical": ..., "settings"}. */
export function probesToJson(probes: AxisProbes, settings: ProbeFileSettings = {}): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const axis of AXES) {
    const p = probes[axis];
    if (!p) continue;
    out[axis] = {
      labels: [...p.labels],
      W: Array.from({ length: p.D }, (_, d) => [p.W[2 * d]!, p.W[2 * d + 1]!]),
      b: [p.b[0]!, p.b[1]!],
      accuracy: { train: p.trainAccuracy, held_out: p.heldOutAccuracy },
      items: { train: p.trainItems, held_out: p.heldOutItems },
      final_loss: p.losses.length ? p.losses[p.losses.length - 1] : null,
    };
  }
  out.settings = settings;
  return out;
}

/** Reads probes.json (one-line errors naming `source`); at least one axis must be present. */
export function probesFromJson(json: unknown, source: string): AxisProbes {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${source}: expected a JSON object with "horizontal" and / or "vertical" probes`);
  const o = json as Record<string, unknown>;
  const probes: AxisProbes = {};
  let D: number | null = null;
  for (const axis of AXES) {
    if (o[axis] === undefined) continue;
    const p = o[axis] as Record<string, unknown>;
    const w = `${source}: ${axis}`;
    if (typeof p !== 'object' || p === null) throw new Error(`${w} must be an object with W and b`);
    if (!Array.isArray(p.W) || p.W.length === 0) throw new Error(`${w}.W must be a non-empty list of [w0, w1] rows`);
    const W = new Float64Array(2 * p.W.length);
    p.W.forEach((row: unknown, d: number) => {
      if (!Array.isArray(row) || row.length !== 2 || row.some((x) => typeof x !== 'number' || !Number.isFinite(x))) throw new Error(`${w}.W[${d}] must be 2 numbers`);
      W[2 * d] = row[0] as number;
      W[2 * d + 1] = row[1] as number;
    });
    if (D !== null && p.W.length !== D) throw new Error(`${w}.W has ${p.W.length} rows, unlike the other axis (${D})`);
    D = p.W.length;
    if (!Array.isArray(p.b) || p.b.length !== 2 || p.b.some((x) => typeof x !== 'number' || !Number.isFinite(x))) throw new Error(`${w}.b must be 2 numbers`);
    const acc = (p.accuracy ?? {}) as Record<string, unknown>;
    const items = (p.items ?? {}) as Record<string, unknown>;
    const numOr = (v: unknown) => (typeof v === 'number' ? v : NaN);
    probes[axis] = {
      axis,
      labels: AXIS_LABELS[axis],
      D,
      W,
      b: Float64Array.from(p.b as number[]),
      trainAccuracy: numOr(acc.train),
      heldOutAccuracy: numOr(acc.held_out),
      trainItems: numOr(items.train),
      heldOutItems: numOr(items.held_out),
      losses: [],
    };
  }
  if (Object.keys(probes).length === 0) throw new Error(`${source}: no "horizontal" or "vertical" probe`);
  return probes;
}

// ---------------------------------------------------------------------------------------------------------------
// Listings and the sweep

/** Both listings of one item at one setting: the decoded argmax token (trimmed, lowercased) and whether it is right. */
export interface ListingResult {
  pred: Record<Listing, string>;
  ok: Record<Listing, boolean>;
}

export interface ItemBaseline extends ListingResult {
  id: string;
  axis: Axis;
  relation: Relation;
}

interface Prepared {
  pixels: ImageInput;
  ids: Record<Listing, number[]>;
}

async function prepare(model: VlmModel, processor: VlmProcessor, item: AxisItem, style: PromptStyle, load: (p: string) => Promise<RgbImage>): Promise<Prepared> {
  let img: RgbImage;
  try {
    img = await load(item.imagePath);
  } catch (e) {
    throw new Error(`question ${item.id}: ${(e as Error).message}`);
  }
  const pixels = model.preprocess(img);
  const ids = {} as Record<Listing, number[]>;
  for (const l of LISTINGS) ids[l] = processor.encodeText(processor.formatPrompt(listingPrompt(item, l, style), 1), [pixels]).ids;
  return { pixels, ids };
}

/** The argmax next token after the prompt, decoded as the authors do (skip special tokens, trim, lowercase). */
async function predict(model: VlmModel, tokenizer: Tokenizer, ids: number[], pixels: ImageInput, interventions?: InterventionSpec): Promise<string> {
  const r = await model.run({ ids, pixelValues: [pixels], interventions, capture: CAPTURE_LOGITS });
  const l = r.logits!.data;
  let best = 0;
  for (let k = 1; k < l.length; k++) if (l[k]! > l[best]!) best = k;
  return tokenizer.decode([best], { skipSpecialTokens: true }).trim().toLowerCase();
}

/** vision_token_add with the two columns of W at strength alpha (no intervention at alpha 0). */
export function enhancementSpec(W: ArrayLike<number>, alpha: number): InterventionSpec | undefined {
  if (alpha === 0) return undefined;
  return { ...EMPTY_INTERVENTIONS, visionTokenAdd: { alpha, directions: columns(W) } };
}

export interface ListingOptions extends ImageSource {
  prompt?: PromptStyle;
  onProgress?: (done: number, total: number) => void;
}

/** Every item in both option orders with no intervention (the sweep's alpha 0, and the "golden" test). */
export async function evaluateListings(model: VlmModel, tokenizer: Tokenizer, items: readonly AxisItem[], opts: ListingOptions = {}): Promise<ItemBaseline[]> {
  const processor = model.createProcessor(tokenizer);
  const load = opts.loadImage ?? loadImageFile;
  const out: ItemBaseline[] = [];
  for (const item of items) {
    const p = await prepare(model, processor, item, opts.prompt ?? 'synthetic', load);
    const pred = {} as Record<Listing, string>;
    const ok = {} as Record<Listing, boolean>;
    for (const l of LISTINGS) {
      pred[l] = await predict(model, tokenizer, p.ids[l], p.pixels);
      ok[l] = pred[l] === item.relation;
    }
    out.push({ id: item.id, axis: axisOf(item.relation), relation: item.relation, pred, ok });
    opts.onProgress?.(out.length, items.length);
  }
  return out;
}

const isGolden = (b: ListingResult) => b.ok.lr && b.ok.rl;
const isValid = (b: ItemBaseline, l: Listing) => (AXIS_LABELS[b.axis] as readonly string[]).includes(b.pred[l]);

export const SWEEP_SCOPES = ['failures', 'all'] as const;
export type SweepScope = (typeof SWEEP_SCOPES)[number];

export const DEFAULT_ALPHAS: readonly number[] = Array.from({ length: 16 }, (_, i) => i);
export const DEFAULT_RANDOM_SEEDS: readonly number[] = [0, 1, 2];

export interface SweepOptions extends ListingOptions {
  probes: AxisProbes;
  /** Default 0..15; alpha 0 (the baseline) is always evaluated and listed first. */
  alphas?: readonly number[];
  /** Seeds of the random-direction controls (default 0, 1, 2). */
  randomSeeds?: readonly number[];
  /** "failures" (default, the authors'): replay only the failed listings of failed items; "all": every item, both listings. */
  scope?: SweepScope;
  /** Leave out items with an out-of-axis baseline answer, as the authors' `clean_results` (default: they count as failures). */
  dropInvalid?: boolean;
  /** Baseline listings already computed for these items (same order, same prompt style), e.g. by the golden filter. */
  baseline?: readonly ItemBaseline[];
  onSweepProgress?: (p: { phase: 'baseline' | 'sweep'; done: number; total: number; label: string }) => void;
}

export interface Count {
  correct: number;
  total: number;
  accuracy: number;
}

export interface SweepRow {
  alpha: number;
  /** Strict both-listings accuracy (scope failures: golden items counted as still right, plus the fixed ones). */
  strict: Count;
  byAxis: Partial<Record<Axis, Count>>;
  /** Baseline failures whose every failed listing is right at this alpha, of `failures`. */
  fixed: number;
  failures: number;
  /** Scope all: baseline-correct items no longer strictly right (scope failures: null, not measured). */
  broken: number | null;
}

export interface DirectionSweep {
  rows: SweepRow[];
  /** The alpha > 0 with the most fixes (the first on ties) and its row; null without an alpha > 0. */
  best: SweepRow | null;
  /** Failures fixed at some alpha > 0 (the per-item oracle, "Probe*" / "Random*"). */
  oracleFixed: number;
}

export interface SweepItemLog {
  id: string;
  axis: Axis;
  relation: Relation;
  baseline: ListingResult;
  /** Scope failures: the listings replayed. */
  failedListings: Listing[];
  /** Alphas > 0 at which the probe fixes the item (baseline failures only). */
  probeFixedAt: number[];
  randomFixedAt: number[][];
}

export interface SweepResult {
  scope: SweepScope;
  prompt: PromptStyle;
  alphas: number[];
  randomSeeds: number[];
  /** Items swept, per axis; items of an axis without a probe and (dropInvalid) invalid ones are left out. */
  items: number;
  byAxis: Partial<Record<Axis, number>>;
  skipped: { noProbe: string[]; invalid: string[] };
  baseline: {
    strict: Count;
    failures: { lrOnly: number; rlOnly: number; both: number };
    /** Out-of-axis answers over both listings of the swept items. */
    invalidListings: number;
  };
  probe: DirectionSweep;
  random: ({ seed: number } & DirectionSweep)[];
  /** Per alpha over the random seeds: mean and sample std of the strict accuracy, mean fixes. */
  randomMean: { alpha: number; accuracyMean: number; accuracyStd: number; fixedMean: number }[];
  log: SweepItemLog[];
}

const count = (correct: number, total: number): Count => ({ correct, total, accuracy: total > 0 ? correct / total : 0 });

/** Alphas with 0 first, distinct, each a finite number >= 0. */
export function normalizeAlphas(alphas: readonly number[]): number[] {
  for (const a of alphas) if (!Number.isFinite(a) || a < 0) throw new Error(`alphas must be finite numbers >= 0, got ${a}`);
  return [0, ...[...new Set(alphas)].filter((a) => a !== 0)];
}

/**
 * The enhancement sweep: every item asked in both option orders with the axis probe's columns as vision_token_add
 * directions at each alpha, and the same with random unit-norm directions per seed (see the header). Alpha 0 is the
 * plain evaluation (no intervention), shared by all directions.
 */
export async function enhancementSweep(model: VlmModel, tokenizer: Tokenizer, allItems: readonly AxisItem[], opts: SweepOptions): Promise<SweepResult> {
  const scope = opts.scope ?? 'failures';
  const style = opts.prompt ?? 'synthetic';
  const alphas = normalizeAlphas(opts.alphas ?? DEFAULT_ALPHAS);
  const amp = alphas.slice(1);
  const seeds = [...(opts.randomSeeds ?? DEFAULT_RANDOM_SEEDS)];
  const D = model.hiddenSize;
  for (const axis of AXES) {
    const p = opts.probes[axis];
    if (p && p.D !== D) throw new Error(`the ${axis} probe has ${p.D} weights per class, but the model's text hidden size is ${D}`);
  }
  if (opts.baseline && opts.baseline.length !== allItems.length) throw new Error(`baseline has ${opts.baseline.length} items, expected ${allItems.length}`);

  const noProbe: string[] = [];
  const kept: { item: AxisItem; index: number }[] = [];
  allItems.forEach((item, index) => (opts.probes[axisOf(item.relation)] ? kept.push({ item, index }) : noProbe.push(item.id)));
  const progress = opts.onSweepProgress;

  // Alpha 0: plain evaluation of both listings.
  let base: ItemBaseline[];
  if (opts.baseline) base = kept.map((k) => opts.baseline![k.index]!);
  else {
    base = await evaluateListings(model, tokenizer, kept.map((k) => k.item), {
      ...opts,
      onProgress: (done, total) => progress?.({ phase: 'baseline', done, total, label: 'alpha 0' }),
    });
  }
  base.forEach((b, i) => {
    if (b.id !== kept[i]!.item.id) throw new Error(`baseline item ${i} is ${b.id}, expected ${kept[i]!.item.id}`);
  });
  const invalid: string[] = [];
  const swept: { item: AxisItem; base: ItemBaseline }[] = [];
  kept.forEach((k, i) => {
    const b = base[i]!;
    if (opts.dropInvalid && LISTINGS.some((l) => !isValid(b, l))) invalid.push(k.item.id);
    else swept.push({ item: k.item, base: b });
  });

  const directions: { label: string; W: Record<Axis, ArrayLike<number> | undefined> }[] = [
    { label: 'probe', W: { horizontal: opts.probes.horizontal?.W, vertical: opts.probes.vertical?.W } },
    ...seeds.map((s) => ({ label: `random seed ${s}`, W: randomDirections(D, s) as Record<Axis, ArrayLike<number> | undefined> })),
  ];
  const listingsOf = (b: ItemBaseline): Listing[] => (scope === 'all' ? [...LISTINGS] : LISTINGS.filter((l) => !b.ok[l]));
  const todo = new Set(swept.filter((s) => scope === 'all' || !isGolden(s.base)));
  const total = [...todo].reduce((n, s) => n + listingsOf(s.base).length, 0) * amp.length * directions.length;
  let done = 0;
  const processor = model.createProcessor(tokenizer);
  const load = opts.loadImage ?? loadImageFile;

  // results[direction][item][alpha index > 0] = the listing results at that alpha (only the replayed listings).
  const results: Map<number, Partial<ListingResult>[]>[] = directions.map(() => new Map());
  for (const [t, s] of swept.entries()) {
    if (!todo.has(s)) continue;
    const p = await prepare(model, processor, s.item, style, load);
    const ls = listingsOf(s.base);
    for (const [d, dir] of directions.entries()) {
      const W = dir.W[s.base.axis]!;
      const perAlpha: Partial<ListingResult>[] = [];
      for (const alpha of amp) {
        const r: Partial<ListingResult> = { pred: {} as Record<Listing, string>, ok: {} as Record<Listing, boolean> };
        for (const l of ls) {
          const pred = await predict(model, tokenizer, p.ids[l], p.pixels, enhancementSpec(W, alpha));
          r.pred![l] = pred;
          r.ok![l] = pred === s.item.relation;
          done++;
          progress?.({ phase: 'sweep', done, total, label: `${dir.label} alpha ${alpha}` });
        }
        perAlpha.push(r);
      }
      results[d]!.set(t, perAlpha);
    }
  }

  const failures = swept.filter((s) => !isGolden(s.base)).length;
  const axesPresent = AXES.filter((a) => swept.some((s) => s.base.axis === a));
  const baseStrict = swept.filter((s) => isGolden(s.base)).length;
  const log: SweepItemLog[] = swept.map((s) => ({
    id: s.item.id,
    axis: s.base.axis,
    relation: s.item.relation,
    baseline: { pred: s.base.pred, ok: s.base.ok },
    failedListings: LISTINGS.filter((l) => !s.base.ok[l]),
    probeFixedAt: [],
    randomFixedAt: seeds.map(() => []),
  }));

  const sweepOf = (d: number): DirectionSweep => {
    const rows: SweepRow[] = [];
    const oracle = new Set<number>();
    for (const [ai, alpha] of alphas.entries()) {
      let correct = 0;
      let fixed = 0;
      let broken = 0;
      const axisCorrect = new Map<Axis, number>();
      for (const [t, s] of swept.entries()) {
        const golden = isGolden(s.base);
        let strictOk: boolean;
        let isFixed = false;
        if (ai === 0) strictOk = golden;
        else {
          const r = results[d]!.get(t)?.[ai - 1];
          if (scope === 'failures') {
            isFixed = !golden && LISTINGS.every((l) => s.base.ok[l] || r!.ok![l]!);
            strictOk = golden || isFixed;
          } else {
            strictOk = r!.ok!.lr! && r!.ok!.rl!;
            isFixed = !golden && LISTINGS.every((l) => s.base.ok[l] || r!.ok![l]!);
            if (golden && !strictOk) broken++;
          }
          if (isFixed) {
            fixed++;
            oracle.add(t);
            (d === 0 ? log[t]!.probeFixedAt : log[t]!.randomFixedAt[d - 1]!).push(alpha);
          }
        }
        if (strictOk) {
          correct++;
          axisCorrect.set(s.base.axis, (axisCorrect.get(s.base.axis) ?? 0) + 1);
        }
      }
      const byAxis: Partial<Record<Axis, Count>> = {};
      for (const a of axesPresent) byAxis[a] = count(axisCorrect.get(a) ?? 0, swept.filter((s) => s.base.axis === a).length);
      rows.push({ alpha, strict: count(correct, swept.length), byAxis, fixed, failures, broken: ai === 0 ? 0 : scope === 'all' ? broken : null });
    }
    let best: SweepRow | null = null;
    for (const r of rows.slice(1)) if (best === null || r.fixed > best.fixed) best = r;
    return { rows, best, oracleFixed: oracle.size };
  };

  const probe = sweepOf(0);
  const random = seeds.map((seed, i) => ({ seed, ...sweepOf(i + 1) }));
  const randomMean = alphas.map((alpha, ai) => {
    const accs = random.map((r) => r.rows[ai]!.strict.accuracy);
    const mean = accs.reduce((a, b) => a + b, 0) / Math.max(1, accs.length);
    const std = accs.length > 1 ? Math.sqrt(accs.reduce((a, b) => a + (b - mean) ** 2, 0) / (accs.length - 1)) : 0;
    return { alpha, accuracyMean: mean, accuracyStd: std, fixedMean: random.reduce((n, r) => n + r.rows[ai]!.fixed, 0) / Math.max(1, random.length) };
  });
  const byAxis: Partial<Record<Axis, number>> = {};
  for (const a of axesPresent) byAxis[a] = swept.filter((s) => s.base.axis === a).length;
  return {
    scope,
    prompt: style,
    alphas,
    randomSeeds: seeds,
    items: swept.length,
    byAxis,
    skipped: { noProbe, invalid },
    baseline: {
      strict: count(baseStrict, swept.length),
      failures: {
        lrOnly: swept.filter((s) => !s.base.ok.lr && s.base.ok.rl).length,
        rlOnly: swept.filter((s) => s.base.ok.lr && !s.base.ok.rl).length,
        both: swept.filter((s) => !s.base.ok.lr && !s.base.ok.rl).length,
      },
      invalidListings: swept.reduce((n, s) => n + LISTINGS.filter((l) => !isValid(s.base, l)).length, 0),
    },
    probe,
    random,
    randomMean,
    log,
  };
}

/** Items both of whose listings the baseline answers right (what the authors train the probes on). */
export function goldenItems(items: readonly AxisItem[], baseline: readonly ItemBaseline[]): AxisItem[] {
  return items.filter((_, i) => isGolden(baseline[i]!));
}
