// Attention knockout as an information-flow experiment (Geva et al. 2023, "Dissecting recall"; the What'sUp-style
// question "Where is the A in relation to the B?"): for each text layer L, the last prompt position (the row that
// predicts the answer) is kept from attending to the image tokens inside the two named objects' boxes in layer L
// only, and every spatial question is answered again. A layer whose knockout hurts is one where the answer reads the
// objects; a control knocks as many random other image tokens of the same image in the same layer. One more row
// knocks the edges in every layer at once.
//
// Token selection. The image tokens tile the image as the model sees it (VlmModel.imageView: LLaVA resizes and
// centre-crops, Qwen resizes) in raster order over `grid` = [rows, cols]; token r * cols + c is inside a box when its
// cell's centre ((c + 0.5) W / cols, (r + 0.5) H / rows) lies in the box (edges included). Boxes come in the scene's
// pixels (scenes.jsonl of scripts/make-synthetic.ts) and are mapped to the view: scaled per axis when the view keeps
// the image's aspect (a resize), else as a shortest-side resize plus centre crop (LLaVA's CLIP preprocessing). An
// object smaller than a cell may hold no cell centre: it then takes the one cell its box centre falls in (counted
// as `fallback`). The keys of the knockout are the prompt positions of those tokens (VlmModel.imageKeyPositions).
//
// Measures per run: accuracy (greedy answer scored as in eval) and the probability the prefill's last row gives
// the token the baseline answered with first (its mean over questions, and the mean relative change against the
// baseline, Geva et al.'s measure). The baseline also records where the last row looks: per layer, the attention
// (mean over heads) on the named objects' tokens and on the other image tokens, and their per-token density ratio.
//
// Images split into tiles (Idefics3 / SmolVLM crops) have no single raster of tokens over the image: refused.

import type { VlmModel } from '../models/vlm.js';
import type { ImageInput, VlmProcessor } from '../models/model.js';
import type { Tokenizer } from '../io/tokenizer.js';
import { loadImageFile, type RgbImage } from '../io/image.js';
import { generate, type GenerateResult } from '../generate/generate.js';
import { isCorrect, type EvalItem } from '../eval/dataset.js';
import { DEFAULT_EVAL_MAX_NEW_TOKENS, type Accuracy } from '../eval/evaluate.js';
import { mixSeed, mulberry32 } from '../eval/synthetic.js';
import { type Box, tokensInBox } from './image-boxes.js';

export { type Box, tokensInBox } from './image-boxes.js';
import { parseInterventions, type CaptureSpec, type InterventionSpec } from '../spec/spec.js';

// ---------------------------------------------------------------------------------------------------------------
// Scenes and boxes

/** [x0, y0, x1, y1] in pixels, x to the right, y down. */

export interface SceneBoxes {
  id: string;
  /** Width and height of the scene's image in the box coordinates (make-synthetic's `size`). */
  width: number;
  height: number;
  objects: { name: string; box: Box }[];
}

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/**
 * Parses a scenes.jsonl (scripts/make-synthetic.ts): one JSON object per line with `id`, `size` (or `width` and
 * `height`) and `objects`, each {colour, shape, x, y, d} (named "colour shape", box [x, y, x + d, y + d]) or
 * {name, box: [x0, y0, x1, y1]}. Errors name the source and the line.
 */
export function parseScenes(text: string, source: string): Map<string, SceneBoxes> {
  const out = new Map<string, SceneBoxes>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '') return;
    const where = `${source} line ${i + 1}`;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (e) {
      throw new Error(`${where}: not valid JSON (${(e as Error).message})`);
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${where}: expected a JSON object`);
    const o = v as Record<string, unknown>;
    if (typeof o.id !== 'string' || o.id === '') throw new Error(`${where}: "id" must be a non-empty string`);
    const width = o.width ?? o.size;
    const height = o.height ?? o.size;
    if (!isNum(width) || !isNum(height) || width <= 0 || height <= 0) throw new Error(`${where}: needs "size" (or "width" and "height"), positive numbers`);
    if (!Array.isArray(o.objects)) throw new Error(`${where}: "objects" must be a list`);
    const objects = o.objects.map((x, j) => {
      const w = `${where}: objects[${j}]`;
      if (typeof x !== 'object' || x === null) throw new Error(`${w} must be an object`);
      const ob = x as Record<string, unknown>;
      if (Array.isArray(ob.box)) {
        if (typeof ob.name !== 'string' || ob.box.length !== 4 || !ob.box.every(isNum)) throw new Error(`${w}: needs "name" and "box": [x0, y0, x1, y1]`);
        return { name: ob.name, box: ob.box as Box };
      }
      if (typeof ob.colour !== 'string' || typeof ob.shape !== 'string' || !isNum(ob.x) || !isNum(ob.y) || !isNum(ob.d)) {
        throw new Error(`${w}: needs "colour", "shape", "x", "y" and "d" (or "name" and "box")`);
      }
      return { name: `${ob.colour} ${ob.shape}`, box: [ob.x, ob.y, ob.x + ob.d, ob.y + ob.d] as Box };
    });
    if (out.has(o.id)) throw new Error(`${where}: scene ${o.id} appears twice`);
    out.set(o.id, { id: o.id, width, height, objects });
  });
  return out;
}

/** The scene id of an item: its image file's name without the extension (make-synthetic: images/s000123.png). */
export function sceneIdOfImage(imagePath: string): string {
  const base = imagePath.split(/[\\/]/).pop() ?? imagePath;
  return base.replace(/\.[^.]*$/, '');
}

/**
 * The scene objects a question names, in the order it names them (whole-word, case-insensitive matches of the
 * objects' names), or null when it does not name exactly two.
 */
export function namedObjects(question: string, scene: SceneBoxes): [SceneBoxes['objects'][number], SceneBoxes['objects'][number]] | null {
  const q = question.toLowerCase();
  const found: { at: number; o: SceneBoxes['objects'][number] }[] = [];
  for (const o of scene.objects) {
    const re = new RegExp(`(^|[^a-z0-9])${o.name.toLowerCase().replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?![a-z0-9])`);
    const m = re.exec(q);
    if (m) found.push({ at: m.index + m[1]!.length, o });
  }
  if (found.length !== 2) return null;
  found.sort((a, b) => a.at - b.at);
  return [found[0]!.o, found[1]!.o];
}

/** Maps a box from an image of `from` size to the model's view of `to` size (see the file comment). */
export function boxToView(box: Box, from: { width: number; height: number }, to: { width: number; height: number }): Box {
  const sx = to.width / from.width;
  const sy = to.height / from.height;
  if (Math.abs(sx - sy) <= 0.01 * Math.max(sx, sy)) return [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy];
  // Shortest side resized to the view, the rest centre-cropped.
  const s = Math.max(sx, sy);
  const ox = (from.width * s - to.width) / 2;
  const oy = (from.height * s - to.height) / 2;
  return [box[0] * s - ox, box[1] * s - oy, box[2] * s - ox, box[3] * s - oy];
}

/** tokensInBox, or, when no cell centre lies in the box, the one cell holding the box centre (`fallback`). */
export function objectTokens(grid: readonly [number, number], size: { width: number; height: number }, box: Box): { tokens: number[]; fallback: boolean } {
  const tokens = tokensInBox(grid, size, box);
  if (tokens.length > 0) return { tokens, fallback: false };
  const [rows, cols] = grid;
  const clampIdx = (v: number, n: number) => Math.min(n - 1, Math.max(0, Math.floor(v)));
  const c = clampIdx((((box[0] + box[2]) / 2) * cols) / size.width, cols);
  const r = clampIdx((((box[1] + box[3]) / 2) * rows) / size.height, rows);
  return { tokens: [r * cols + c], fallback: true };
}

/**
 * `count` distinct tokens of 0..total-1 outside `exclude`, drawn with a PRNG seeded by `seed` (partial
 * Fisher-Yates), sorted; all of them when fewer than `count` are left.
 */
export function randomTokens(count: number, total: number, exclude: ReadonlySet<number>, seed: number): number[] {
  const pool: number[] = [];
  for (let t = 0; t < total; t++) if (!exclude.has(t)) pool.push(t);
  const k = Math.min(count, pool.length);
  const rand = mulberry32(seed >>> 0);
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(rand() * (pool.length - i));
    [pool[i], pool[j]] = [pool[j]!, pool[i]!];
  }
  return pool.slice(0, k).sort((a, b) => a - b);
}

// ---------------------------------------------------------------------------------------------------------------
// The experiment

export interface KnockoutOptions {
  /** Scene boxes by scene id (parseScenes); an item's scene is its image's file name without the extension. */
  scenes: ReadonlyMap<string, SceneBoxes>;
  /** Seed of the random-token control (default 0); question i draws with mixSeed(seed, i). */
  seed?: number;
  /** Text layers to knock one at a time (default all). The every-layer row is always run. */
  layers?: number[];
  /** Most tokens generated per answer (default eval's, 4). */
  maxNewTokens?: number;
  /** Token ids that end an answer (default the tokenizer's EOS; the processor's stop tokens are added as in eval). */
  eosTokenIds?: number[];
  /** Reads an image file (default loadImageFile). */
  loadImage?: (path: string) => Promise<RgbImage>;
  /** After each question: questions done and their total. */
  onProgress?: (done: number, total: number) => void;
}

/** One answer of one run. */
export interface KnockoutAnswer {
  prediction: string;
  correct: boolean;
  /** Probability the prefill's last row gives the baseline's first answer token. */
  p: number;
}

export interface KnockoutExample {
  id: string;
  scene: string;
  answer: string;
  objects: [string, string];
  /** Image-token indices (raster over the grid) of each named object, and whether it took the centre cell. */
  objectTokens: [number[], number[]];
  fallback: [boolean, boolean];
  /** Prompt positions knocked: the named objects' tokens (union), and the control's random other tokens. */
  keys: number[];
  randomKeys: number[];
  /** Image tokens of the prompt. */
  imageTokens: number;
  baseline: KnockoutAnswer;
  /** In the order of KnockoutResult.runs. */
  runs: { objects: KnockoutAnswer; random: KnockoutAnswer }[];
  /** Baseline attention of the last prompt row per text layer, mean over heads: on the objects, on other image tokens. */
  attention: { objects: number; other: number }[];
}

export interface KnockoutSummary extends Accuracy {
  /** Mean of KnockoutAnswer.p. */
  meanP: number;
  /** Mean over questions of (p - p_baseline) / p_baseline (0 for the baseline). */
  relativeChange: number;
}

export interface KnockoutRun {
  /** The knocked layer, or 'all' for every layer at once. */
  layer: number | 'all';
  objects: KnockoutSummary;
  random: KnockoutSummary;
}

export interface KnockoutResult {
  layers: number;
  grid: [number, number];
  seed: number;
  /** Items answered: the spatial main questions that name two objects of their scene. */
  questions: number;
  /** Items not answered, with why (not a spatial main question, or not two named objects). */
  skipped: { id: string; reason: string }[];
  /** Image tokens knocked per question: mean over questions (objects; the control knocks as many, or all left). */
  meanKeys: number;
  meanRandomKeys: number;
  /** Named objects that held no cell centre and took their centre's cell. */
  fallbacks: number;
  baseline: KnockoutSummary;
  runs: KnockoutRun[];
  /** Per text layer: mean over questions of the baseline attention of the last row (see KnockoutExample). */
  attention: { layer: number; objects: number; other: number; density: number }[];
  examples: KnockoutExample[];
}

/** The spatial main questions of a question set (sub-questions and other types are left out). */
export const isSpatialMain = (item: EvalItem): boolean => item.type === 'spatial' && item.mainId === undefined;

/** The knockout spec of one run: the last prompt row loses `keys` in `layer` (null: every layer). */
export function knockoutSpec(model: VlmModel, layer: number | null, keys: number[]): InterventionSpec {
  return parseInterventions({ attention_knockout: [{ ...(layer === null ? {} : { layers: [layer] }), queries: 'last', keys }] }, model.dims, 'knockout');
}

function softmaxAt(logits: Float32Array, token: number): number {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  return Math.exp(logits[token]! - max) / sum;
}

function summarise(answers: KnockoutAnswer[], base: KnockoutAnswer[]): KnockoutSummary {
  const total = answers.length;
  const correct = answers.filter((a) => a.correct).length;
  const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);
  return {
    total,
    correct,
    accuracy: total ? correct / total : 0,
    meanP: mean(answers.map((a) => a.p)),
    relativeChange: mean(answers.map((a, i) => (base[i]!.p > 0 ? (a.p - base[i]!.p) / base[i]!.p : 0))),
  };
}

interface Prepared {
  item: EvalItem;
  ids: number[];
  scene: SceneBoxes;
  objects: [string, string];
  objectTokens: [number[], number[]];
  fallback: [boolean, boolean];
  keys: number[];
  randomKeys: number[];
  /** Object token indices (union), for the attention measure. */
  objectSet: Set<number>;
  imagePositions: number[];
}

/**
 * Answers every spatial main question of `items` with no intervention (the baseline), then for each text layer
 * with the last row's edges to the named objects' image tokens knocked out in that layer, and with as many random
 * other image tokens knocked (the control), then with both knocked in every layer. Items that are not spatial main
 * questions or do not name two objects of their scene are skipped and listed; an item with no scene, or an image
 * of another size than its scene, is an error naming it.
 */
export async function knockoutByLayer(model: VlmModel, tokenizer: Tokenizer, items: readonly EvalItem[], opts: KnockoutOptions): Promise<KnockoutResult> {
  const nLayers = model.dims.text.layers;
  const layers = opts.layers ?? Array.from({ length: nLayers }, (_, l) => l);
  for (const l of layers) if (!Number.isInteger(l) || l < 0 || l >= nLayers) throw new Error(`knockout: layer ${l} is out of range: the model has ${nLayers} text layers (0..${nLayers - 1})`);
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(seed)) throw new Error(`knockout: seed must be an integer, got ${seed}`);
  const maxNewTokens = opts.maxNewTokens ?? DEFAULT_EVAL_MAX_NEW_TOKENS;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw new Error(`knockout: maxNewTokens must be a positive integer, got ${maxNewTokens}`);
  const load = opts.loadImage ?? loadImageFile;
  const processor = model.createProcessor(tokenizer);
  const eos = [...(opts.eosTokenIds ?? (tokenizer.eosTokenId != null ? [tokenizer.eosTokenId] : [])), ...processor.stopTokenIds];

  // Everything is checked and prepared before the first forward.
  const skipped: { id: string; reason: string }[] = [];
  const prepared: Prepared[] = [];
  let grid: [number, number] | null = null;
  type Loaded = { path: string; pixels: ImageInput; view: ReturnType<VlmModel['imageView']> };
  let last = null as Loaded | null;
  for (const item of items) {
    if (!isSpatialMain(item)) {
      skipped.push({ id: item.id, reason: item.mainId !== undefined ? 'a sub-question' : `type ${item.type}, not spatial` });
      continue;
    }
    const sceneId = sceneIdOfImage(item.imagePath);
    const scene = opts.scenes.get(sceneId);
    if (!scene) throw new Error(`question ${item.id}: no scene ${sceneId} (the name of its image ${item.imagePath}) in the scenes file`);
    const named = namedObjects(item.question, scene);
    if (!named) {
      skipped.push({ id: item.id, reason: `does not name exactly two objects of scene ${sceneId}` });
      continue;
    }
    if (last?.path !== item.imagePath) {
      let img: RgbImage;
      try {
        img = await load(item.imagePath);
      } catch (e) {
        throw new Error(`question ${item.id}: ${(e as Error).message}`);
      }
      if (img.width !== scene.width || img.height !== scene.height) {
        throw new Error(`question ${item.id}: image ${item.imagePath} is ${img.width}x${img.height}, but its scene ${sceneId} is ${scene.width}x${scene.height}`);
      }
      const view = model.imageView(img);
      if (view.tiles && (view.tiles.rows * view.tiles.cols > 1 || view.tiles.global)) {
        throw new Error(`image ${item.imagePath}: the model splits it into tiles; the knockout needs one raster of image tokens over the image (LLaVA, Qwen2-VL)`);
      }
      last = { path: item.imagePath, pixels: model.preprocess(img), view };
    }
    const { pixels, view } = last;
    grid = view.grid;
    const ids = promptIds(processor, item.id, item.question, pixels);
    const imagePositions = model.imageKeyPositions(ids);
    const total = view.grid[0] * view.grid[1];
    if (imagePositions.length !== total) {
      throw new Error(`question ${item.id}: ${imagePositions.length} image tokens in the prompt do not tile the model's ${view.grid[0]}x${view.grid[1]} grid`);
    }
    const size = { width: view.image.width, height: view.image.height };
    const from = { width: scene.width, height: scene.height };
    const a = objectTokens(view.grid, size, boxToView(named[0].box, from, size));
    const b = objectTokens(view.grid, size, boxToView(named[1].box, from, size));
    const objectSet = new Set([...a.tokens, ...b.tokens]);
    const tokens = [...objectSet].sort((x, y) => x - y);
    const random = randomTokens(tokens.length, total, objectSet, mixSeed(seed >>> 0, prepared.length));
    prepared.push({
      item,
      ids,
      scene,
      objects: [named[0].name, named[1].name],
      objectTokens: [a.tokens, b.tokens],
      fallback: [a.fallback, b.fallback],
      keys: tokens.map((t) => imagePositions[t]!),
      randomKeys: random.map((t) => imagePositions[t]!),
      objectSet,
      imagePositions,
    });
  }

  const runLayers: (number | null)[] = [...layers, null];
  const captureBase: CaptureSpec = {
    logits: 'last',
    pattern: Array.from({ length: nLayers }, (_, layer) => ({ tower: 'text' as const, layer, heads: null, rows: [-1] })),
    z: null,
    residual: [],
    imageFeatures: false,
  };
  const captureLogits: CaptureSpec = { logits: 'last', pattern: [], z: null, residual: [], imageFeatures: false };
  const examples: KnockoutExample[] = [];
  // Images are preprocessed again here rather than kept from the checks (consecutive questions share one).
  let current = null as { path: string; pixels: ImageInput } | null;
  for (const [n, p] of prepared.entries()) {
    if (current?.path !== p.item.imagePath) current = { path: p.item.imagePath, pixels: model.preprocess(await load(p.item.imagePath)) };
    const args = { ids: p.ids, pixelValues: [current.pixels], maxNewTokens, eosTokenIds: eos, tokenizer };
    const base = await generate(model, { ...args, capture: captureBase });
    // The probability of the baseline's first answer token (the tokenizer's EOS when it answered nothing).
    const token = base.tokenIds[0] ?? eos[0] ?? 0;
    const answerOf = (r: GenerateResult): KnockoutAnswer => ({
      prediction: r.text,
      correct: isCorrect(r.text, p.item),
      p: softmaxAt(r.captured!.logits!.data, token),
    });
    const baseline = answerOf(base);
    const attention = base.captured!.pattern.map((pat) => lastRowAttention(pat.shape as [number, number, number], pat.data, p.imagePositions, p.objectSet));
    const runs: KnockoutExample['runs'] = [];
    for (const layer of runLayers) {
      const objects = answerOf(await generate(model, { ...args, capture: captureLogits, interventions: knockoutSpec(model, layer, p.keys) }));
      const random =
        p.randomKeys.length > 0 ? answerOf(await generate(model, { ...args, capture: captureLogits, interventions: knockoutSpec(model, layer, p.randomKeys) })) : baseline;
      runs.push({ objects, random });
    }
    examples.push({
      id: p.item.id,
      scene: p.scene.id,
      answer: p.item.answer,
      objects: p.objects,
      objectTokens: p.objectTokens,
      fallback: p.fallback,
      keys: p.keys,
      randomKeys: p.randomKeys,
      imageTokens: p.imagePositions.length,
      baseline,
      runs,
      attention,
    });
    opts.onProgress?.(n + 1, prepared.length);
  }

  const baseAnswers = examples.map((e) => e.baseline);
  const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);
  return {
    layers: nLayers,
    grid: grid ?? [0, 0],
    seed,
    questions: examples.length,
    skipped,
    meanKeys: mean(examples.map((e) => e.keys.length)),
    meanRandomKeys: mean(examples.map((e) => e.randomKeys.length)),
    fallbacks: examples.reduce((s, e) => s + e.fallback.filter(Boolean).length, 0),
    baseline: summarise(baseAnswers, baseAnswers),
    runs: runLayers.map((layer, i) => ({
      layer: layer ?? 'all',
      objects: summarise(examples.map((e) => e.runs[i]!.objects), baseAnswers),
      random: summarise(examples.map((e) => e.runs[i]!.random), baseAnswers),
    })),
    attention: Array.from({ length: nLayers }, (_, layer) => {
      const objects = mean(examples.map((e) => e.attention[layer]!.objects));
      const other = mean(examples.map((e) => e.attention[layer]!.other));
      // Attention per token on the objects over attention per token elsewhere on the image (sums over questions).
      const nObj = examples.reduce((s, e) => s + e.keys.length, 0);
      const nOther = examples.reduce((s, e) => s + e.imageTokens - e.keys.length, 0);
      return { layer, objects, other, density: other > 0 && nObj > 0 && nOther > 0 ? objects / nObj / (other / nOther) : NaN };
    }),
    examples,
  };
}

/** Prompt token ids of a question with its image, as eval builds them. */
function promptIds(processor: VlmProcessor, id: string, question: string, image: ImageInput): number[] {
  if (question.includes(processor.imageToken)) throw new Error(`question ${id} contains ${processor.imageToken}: leave it out, the image goes in the prompt on its own`);
  return processor.encodeText(processor.formatPrompt(question, 1), [image]).ids;
}

/** Attention of the captured (last) row on the object tokens and on the other image tokens, mean over heads. */
function lastRowAttention(shape: [number, number, number], data: Float32Array, imagePositions: number[], objectSet: ReadonlySet<number>): { objects: number; other: number } {
  const [heads, rows, keys] = shape;
  let objects = 0;
  let other = 0;
  for (let h = 0; h < heads; h++) {
    const base = (h * rows + rows - 1) * keys;
    imagePositions.forEach((pos, t) => {
      const v = data[base + pos]!;
      if (objectSet.has(t)) objects += v;
      else other += v;
    });
  }
  return { objects: objects / heads, other: other / heads };
}
