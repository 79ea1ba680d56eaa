// The planted-head benchmark's methods that run the model (src/interp/heads-benchmark.ts), each a score table per
// text head on the synthetic set's spatial main questions:
//
//   patching   per-head activation patching at the last prompt row (patchHeads, noising) over N swapped-object
//              pairs (src/eval/counterfactual.ts: the scene regenerated from scenes.jsonl with the two named objects
//              swapped, so the answer flips and the question text stays); pairs whose prompts differ in length or
//              whose two answers start with the same token are skipped with the reason, as `vlmscope patch` does;
//              criteria: the recovery of the mean LDs (summarizePatching), then the mean of per-pair recoveries
//   attention  one prefill per question with every text layer's attention pattern captured at the last prompt row;
//              a head's mass = the sum of its attention on the image tokens of the two objects the question names
//              (namedObjects / objectTokens / boxToView, the tokens knockoutByLayer knocks out); criteria: the mean
//              mass over the questions, then its 95% t-interval's lower bound

import type { VlmModel } from '../models/vlm.js';
import type { ImageInput } from '../models/model.js';
import type { Tokenizer } from '../io/tokenizer.js';
import type { EvalItem } from '../eval/dataset.js';
import { loadImageFile, type RgbImage } from '../io/image.js';
import type { CaptureSpec } from '../spec/spec.js';
import { type SceneRecord, type SpatialPair, pairForQuestion, renderPair, sceneFromRecord } from '../eval/counterfactual.js';
import { answerTokenId, patchHeads, summarizePatching, type PatchingInput, type PatchingResult } from './patching.js';
import { type Box, type SceneBoxes, boxToView, namedObjects, objectTokens, sceneIdOfImage } from './knockout.js';
import { tInterval } from './statistics.js';
import type { ScoreTable } from './heads-benchmark-probes.js';

/** The boxes knockout.ts reads, from a scenes.jsonl record (object "colour shape", box [x, y, x + d, y + d]). */
export function sceneBoxes(rec: SceneRecord): SceneBoxes {
  return { id: rec.id, width: rec.size, height: rec.size, objects: rec.objects.map((o) => ({ name: `${o.colour} ${o.shape}`, box: [o.x, o.y, o.x + o.d, o.y + o.d] as Box })) };
}

/** The scene record of a question (its image's file name), or an error naming both. */
export function sceneOf(item: EvalItem, scenes: ReadonlyMap<string, SceneRecord>): SceneRecord {
  const id = sceneIdOfImage(item.imagePath);
  const rec = scenes.get(id);
  if (!rec) throw new Error(`question ${item.id}: no scene ${id} (the name of its image ${item.imagePath}) in scenes.jsonl`);
  return rec;
}

// ---------------------------------------------------------------------------------------------------------------
// Patching

export interface PreparedPair {
  id: string;
  question: string;
  pair: SpatialPair;
  clean: PatchingInput;
  counterfactual: PatchingInput;
  answer: number;
  other: number;
}

/**
 * The first `limit` usable swapped-object pairs of the spatial questions, in order; the others before the limit is
 * reached are skipped with the reason (objects that cannot be swapped, prompts of different lengths, answers that
 * start with the same token).
 */
export function preparePairs(
  model: VlmModel,
  tokenizer: Tokenizer,
  items: readonly EvalItem[],
  scenes: ReadonlyMap<string, SceneRecord>,
  limit: number,
): { pairs: PreparedPair[]; skipped: { id: string; reason: string }[] } {
  if (!Number.isInteger(limit) || limit < 1) throw new Error(`pairs must be a positive integer, got ${limit}`);
  const processor = model.createProcessor(tokenizer);
  const pairs: PreparedPair[] = [];
  const skipped: { id: string; reason: string }[] = [];
  for (const item of items) {
    if (pairs.length >= limit) break;
    const swap = pairForQuestion(sceneFromRecord(sceneOf(item, scenes)), item);
    if (!swap.ok) {
      skipped.push({ id: item.id, reason: swap.reason });
      continue;
    }
    const images = renderPair(swap.pair);
    const prompt = processor.formatPrompt(item.question, 1);
    const c = processor.process(prompt, [images.clean]);
    const f = processor.process(prompt, [images.counterfactual]);
    if (c.ids.length !== f.ids.length) {
      skipped.push({ id: item.id, reason: `the clean prompt makes ${c.ids.length} tokens and the counterfactual one ${f.ids.length}` });
      continue;
    }
    const answer = answerTokenId(tokenizer, prompt, swap.pair.answer);
    const other = answerTokenId(tokenizer, prompt, swap.pair.counterfactualAnswer);
    if (answer === other) {
      skipped.push({ id: item.id, reason: `the answers "${swap.pair.answer}" and "${swap.pair.counterfactualAnswer}" start with the same token` });
      continue;
    }
    pairs.push({ id: item.id, question: item.question, pair: swap.pair, clean: { ids: c.ids, pixelValues: c.pixelValues }, counterfactual: { ids: f.ids, pixelValues: f.pixelValues }, answer, other });
  }
  return { pairs, skipped };
}

/** Method "patching": last-row per-head patching over the pairs; recovery of the mean LDs, then the mean per-pair recovery. */
export async function patchingScores(
  model: VlmModel,
  pairs: readonly PreparedPair[],
  opts: { skipped?: { id: string; reason: string }[]; onProgress?: (done: number, total: number) => void } = {},
): Promise<ScoreTable & { results: PatchingResult[] }> {
  if (pairs.length === 0) throw new Error(`patching: no usable swapped-object pair${opts.skipped?.length ? ` (${opts.skipped.map((s) => `${s.id}: ${s.reason}`).join('; ')})` : ''}`);
  const results: PatchingResult[] = [];
  for (const [k, p] of pairs.entries()) {
    results.push(await patchHeads(model, p.clean, p.counterfactual, { answer: p.answer, other: p.other, rows: 'last', onProgress: (d, t) => opts.onProgress?.(k * t + d, pairs.length * t) }));
  }
  const s = summarizePatching(results);
  return {
    criteria: ['recovery of the mean logit differences', 'mean of per-pair recoveries'],
    grids: [s.recovery, s.meanRecovery],
    functions: [],
    skipped: [],
    settings: {
      direction: 'noising: the clean run with one head\'s z at the last prompt row from the counterfactual run',
      rows: 'last',
      pairs: s.pairs,
      pair_ids: pairs.map((p) => p.id),
      skipped_questions: opts.skipped ?? [],
      ld_clean: s.ldClean,
      ld_counterfactual: s.ldCounterfactual,
      forward_passes: s.runs,
      patched_heads: s.variants,
    },
    results,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Attention mass

export interface AttentionOptions {
  /** Use at most the first `limit` questions that name two objects (default all). */
  limit?: number;
  loadImage?: (path: string) => Promise<RgbImage>;
  onProgress?: (done: number, total: number) => void;
}

/**
 * Method "attention": per text head, the attention of the last prompt row on the two named objects' image tokens,
 * mean over the spatial questions, then the lower bound of its t-interval over them.
 */
export async function attentionScores(model: VlmModel, tokenizer: Tokenizer, items: readonly EvalItem[], scenes: ReadonlyMap<string, SceneRecord>, opts: AttentionOptions = {}): Promise<ScoreTable> {
  const { layers: L, heads: H } = model.dims.text;
  const load = opts.loadImage ?? loadImageFile;
  const processor = model.createProcessor(tokenizer);
  const skipped: { id: string; reason: string }[] = [];
  const todo: { item: EvalItem; scene: SceneBoxes; named: NonNullable<ReturnType<typeof namedObjects>> }[] = [];
  for (const item of items) {
    if (opts.limit !== undefined && todo.length >= opts.limit) break;
    const scene = sceneBoxes(sceneOf(item, scenes));
    const named = namedObjects(item.question, scene);
    if (!named) skipped.push({ id: item.id, reason: `does not name exactly two objects of scene ${scene.id}` });
    else todo.push({ item, scene, named });
  }
  if (todo.length === 0) throw new Error(`attention: no spatial question names two objects of its scene${skipped.length ? ` (${skipped.slice(0, 3).map((s) => `${s.id}: ${s.reason}`).join('; ')})` : ''}`);
  const capture: CaptureSpec = {
    logits: null,
    pattern: Array.from({ length: L }, (_, layer) => ({ tower: 'text' as const, layer, heads: null, rows: [-1] })),
    z: null,
    residual: [],
    imageFeatures: false,
  };
  // masses[q][l][h]
  const masses: number[][][] = [];
  let fallbacks = 0;
  let current = null as { path: string; img: RgbImage; pixels: ImageInput } | null;
  for (const [n, { item, scene, named }] of todo.entries()) {
    if (current?.path !== item.imagePath) {
      const img = await load(item.imagePath);
      if (img.width !== scene.width || img.height !== scene.height) throw new Error(`question ${item.id}: image ${item.imagePath} is ${img.width}x${img.height}, but its scene ${scene.id} is ${scene.width}x${scene.height}`);
      current = { path: item.imagePath, img, pixels: model.preprocess(img) };
    }
    const view = model.imageView(current.img);
    if (view.tiles && (view.tiles.rows * view.tiles.cols > 1 || view.tiles.global)) throw new Error(`image ${item.imagePath}: the model splits it into tiles; the attention mass needs one raster of image tokens (LLaVA, Qwen2-VL)`);
    const ids = processor.encodeText(processor.formatPrompt(item.question, 1), [current.pixels]).ids;
    const positions = model.imageKeyPositions(ids);
    if (positions.length !== view.grid[0] * view.grid[1]) throw new Error(`question ${item.id}: ${positions.length} image tokens do not tile the ${view.grid[0]}x${view.grid[1]} grid`);
    const size = { width: view.image.width, height: view.image.height };
    const from = { width: scene.width, height: scene.height };
    const a = objectTokens(view.grid, size, boxToView(named[0].box, from, size));
    const b = objectTokens(view.grid, size, boxToView(named[1].box, from, size));
    fallbacks += Number(a.fallback) + Number(b.fallback);
    const keys = [...new Set([...a.tokens, ...b.tokens])].map((t) => positions[t]!);
    const r = await model.run({ ids, pixelValues: [current.pixels], capture, maxNewTokens: 0 });
    const grid = Array.from({ length: L }, () => new Array<number>(H).fill(0));
    for (const pat of r.pattern) {
      const [heads, rows, cols] = pat.shape as [number, number, number];
      pat.heads.forEach((h, hi) => {
        const base = (hi * rows + rows - 1) * cols;
        let m = 0;
        for (const k of keys) m += pat.data[base + k]!;
        grid[pat.layer]![h] = m;
      });
      if (heads !== pat.heads.length) throw new Error(`attention: layer ${pat.layer}'s pattern has ${heads} heads but lists ${pat.heads.length}`);
    }
    masses.push(grid);
    opts.onProgress?.(n + 1, todo.length);
  }
  const iv = Array.from({ length: L }, (_, l) => Array.from({ length: H }, (_, h) => tInterval(masses.map((g) => g[l]![h]!))));
  return {
    criteria: ['attention mass on the named objects (mean over questions)', 'its 95% CI lower bound'],
    grids: [iv.map((row) => row.map((x) => x.mean)), iv.map((row) => row.map((x) => x.low))],
    functions: [],
    skipped: [],
    settings: { query: 'last prompt row', questions: masses.length, skipped_questions: skipped, fallback_objects: fallbacks },
  };
}
