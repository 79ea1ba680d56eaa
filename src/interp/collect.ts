// Activation collection for functional-head probing (CogVision, arXiv 2512.10300; CogVSR, arXiv 2603.20662): every
// question is answered greedily with its image, scored, and the per-head attention outputs z (before o_proj) of
// every layer and head are pooled over a chosen token set into one row per question.
//
// Chain. The sub-questions of a main question are asked in order, each with the earlier sub-questions and their
// answers as prior conversation turns, then the main question with all of them (`chain: false`: every question
// stands alone). The turns go through the tokenizer's chat template (user / assistant messages, the image in the
// first user message) when the folder has one, else the family's multi-turn format: LLaVA-1.5's
//   USER: <image>\n{q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT:
// or Qwen's ChatML (what Qwen2-VL-Instruct's chat template writes, default system turn included).
// The answers in the context are the gold ones (default) or the model's own predictions (`context: 'predicted'`).
// Questions are processed (and rows returned) group by group in the order they are asked: a group's
// sub-questions by subIndex, then its main question; groups in the order of their first item.
//
// Pools (text tower). Let P be the prompt length and a_0..a_{n-1} the generated answer tokens (EOS excluded).
//   last_prompt      z at position P-1 (the token whose logits give a_0), captured during the answering prefill.
//   first_generated  z at position P (where a_0 is the input), from a second prefill over prompt + answer
//                    (teacher forcing: the same activations the decode steps compute).
//   answer_mean      mean of z over positions P..P+n-1 (same second prefill).
//   {indices}        mean of z over the answer tokens with these indices (negative: from the end); indices past
//                    the answer are dropped, and when none is left the last answer token is used.
// An empty answer (EOS generated first) pools over the EOS token instead. The vision tower sees only the image, so
// its one pool is `image_mean`: the mean of the vision tower's z over all its tokens (CLS included).
// concatLayerMean: each head's vector becomes [z_{l,h}; mean over heads of z_{l,h'}] (CogVision's x' = [x; mean]),
// so a row is [layers, heads, F] with F = 2 d_head instead of d_head.
//
// Interventions apply to both prefills. Head scales act the same at every position; an image_temperature whose
// queries are "last" or "generated" selects different rows in the teacher-forced prefill than during decoding.

import type { VlmModel } from '../models/vlm.js';
import type { ImageInput, VlmProcessor } from '../models/model.js';
import { QWEN_DEFAULT_SYSTEM, QwenProcessor } from '../models/qwen2-vl/processor.js';
import { Idefics3Processor } from '../models/idefics3/processor.js';
import type { ChatMessage, Tokenizer } from '../io/tokenizer.js';
import { loadImageFile } from '../io/image.js';
import { isCorrect, type EvalItem } from '../eval/dataset.js';
import { type InterventionSpec, type Tower, parseCapture } from '../spec/spec.js';

export type PoolSpec = 'last_prompt' | 'first_generated' | 'answer_mean' | 'image_mean' | { indices: readonly number[] };
export type ContextMode = 'gold' | 'predicted';

export const DEFAULT_COLLECT_MAX_NEW_TOKENS = 4;

export interface CollectOptions {
  /** Which token positions z is pooled over (see the file comment). */
  pool: PoolSpec;
  /** Append to each head's z the mean over the heads of its layer (F = 2 d_head). Default false. */
  concatLayerMean?: boolean;
  /** Ask sub-questions in a chain, earlier QAs as context (default true). */
  chain?: boolean;
  /** Answers put in the chain's context: the gold answers (default) or the model's predictions. */
  context?: ContextMode;
  /** Tower whose z is collected (default 'text'; 'vision' needs pool 'image_mean'). */
  tower?: Tower;
  /** Most tokens generated per answer (default 4). */
  maxNewTokens?: number;
  /** Applied to every forward (answering and teacher-forced). */
  interventions?: InterventionSpec;
  /** Token ids that end an answer; default the tokenizer's EOS. */
  eosTokenIds?: number[];
  /** Skip the first `startAt` questions of the plan (their rows exist elsewhere, e.g. a resumed store). */
  startAt?: number;
  /** Stop before this index of the plan (exclusive; default the end). */
  endAt?: number;
  /**
   * Predictions of questions before `startAt` by id: with `context: 'predicted'` a resumed chain needs the
   * answers of the sub-questions already done.
   */
  priorPredictions?: ReadonlyMap<string, string> | Readonly<Record<string, string>>;
  /** Called after each question with its row, the plan index + 1 and the plan length. */
  onExample?: (row: CollectRow, done: number, total: number) => void;
}

/** One collected question. */
export interface CollectRow {
  id: string;
  /** The main question this question belongs to (its own id for a main question). */
  mainId: string;
  function: string;
  question: string;
  answer: string;
  /** The generated answer text (special tokens skipped). */
  prediction: string;
  correct: boolean;
  /** Pooled z, [layers, heads, F] row-major (F = d_head, or 2 d_head with concatLayerMean). */
  z: Float32Array;
  /** The question's wording id and held-out flag (EvalItem.wording / wordingHeldout), when its file gives them. */
  wording?: string;
  wordingHeldout?: boolean;
}

/** One question of the plan with the earlier questions of its chain (empty without chain). */
export interface CollectStep {
  item: EvalItem;
  mainId: string;
  context: EvalItem[];
}

/** A chain turn: a question and the answer given in the context. */
export interface ChainTurn {
  question: string;
  answer: string;
}

/** The shape of the rows: [layers, heads, dim]. */
export interface CollectDims {
  layers: number;
  heads: number;
  /** d_head, or 2 d_head with concatLayerMean. */
  dim: number;
  headDim: number;
}

/** The pool as written in the store and on the command line: "last_prompt", ..., "indices:0,1". */
export function poolName(pool: PoolSpec): string {
  return typeof pool === 'string' ? pool : `indices:${pool.indices.join(',')}`;
}

/** Parses a pool name (poolName's inverse); throws with the accepted forms. */
export function parsePool(s: string): PoolSpec {
  if (s === 'last_prompt' || s === 'first_generated' || s === 'answer_mean' || s === 'image_mean') return s;
  const m = /^indices:(.*)$/.exec(s);
  if (m) {
    const parts = m[1].split(',').map((x) => x.trim());
    if (parts.length > 0 && parts.every((x) => /^-?\d+$/.test(x))) return { indices: parts.map(Number) };
  }
  throw new Error(`pool ${JSON.stringify(s)} is not one of last_prompt, first_generated, answer_mean, image_mean, indices:<i,j,...> (e.g. indices:0,1)`);
}

/** Checks the pool against the tower; throws naming the fix. */
export function checkPool(pool: PoolSpec, tower: Tower): void {
  if (typeof pool === 'object') {
    if (!Array.isArray(pool.indices) || pool.indices.length === 0 || !pool.indices.every((i) => Number.isInteger(i))) {
      throw new Error(`pool indices must be a non-empty list of integers, got ${JSON.stringify(pool.indices)}`);
    }
  } else if (!['last_prompt', 'first_generated', 'answer_mean', 'image_mean'].includes(pool)) {
    throw new Error(`unknown pool ${JSON.stringify(pool)}`);
  }
  if (tower === 'vision' && pool !== 'image_mean') {
    throw new Error(`the vision tower sees only the image, so its z is pooled with "image_mean" (mean over its tokens), not ${JSON.stringify(poolName(pool))}`);
  }
  if (tower === 'text' && pool === 'image_mean') throw new Error('pool "image_mean" is for the vision tower; the text tower takes last_prompt, first_generated, answer_mean or indices');
}

/** Row shape for a model: [layers, heads, F] of the chosen tower. */
export function collectDims(model: Pick<VlmModel, 'dims'>, opts: { tower?: Tower; concatLayerMean?: boolean }): CollectDims {
  const c = model.dims[opts.tower ?? 'text'];
  return { layers: c.layers, heads: c.heads, headDim: c.headDim, dim: opts.concatLayerMean ? 2 * c.headDim : c.headDim };
}

/**
 * The order questions are asked in and each one's chain context. Items are grouped by main question (a
 * sub-question's `mainId`, else its own id), groups in order of first appearance; in a group the sub-questions
 * come by subIndex, then the main question. With chain, a sub-question's context is the group's earlier
 * sub-questions and the main question's context all of them; without, contexts are empty.
 */
export function planCollection(items: readonly EvalItem[], opts: { chain?: boolean } = {}): CollectStep[] {
  const chain = opts.chain ?? true;
  const groups = new Map<string, { main: EvalItem | null; subs: EvalItem[] }>();
  const seen = new Set<string>();
  for (const item of items) {
    if (seen.has(item.id)) throw new Error(`question id ${JSON.stringify(item.id)} appears twice`);
    seen.add(item.id);
    const key = item.mainId ?? item.id;
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { main: null, subs: [] }));
    if (item.mainId !== undefined) g.subs.push(item);
    else g.main = item;
  }
  const steps: CollectStep[] = [];
  for (const [mainId, g] of groups) {
    const subs = g.subs.map((s, i) => ({ s, i })).sort((a, b) => (a.s.subIndex ?? a.i) - (b.s.subIndex ?? b.i) || a.i - b.i).map((x) => x.s);
    subs.forEach((s, k) => steps.push({ item: s, mainId, context: chain ? subs.slice(0, k) : [] }));
    if (g.main) steps.push({ item: g.main, mainId, context: chain ? subs : [] });
  }
  return steps;
}

/**
 * The prompt text for `question` after the chain turns, with one image placeholder in the first user turn:
 * the folder's chat template (user / assistant messages, add_generation_prompt) when it has one, else the
 * family's multi-turn format: LLaVA-1.5's `USER: <image>\n{q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT:`, Qwen's
 * ChatML as Qwen2-VL-Instruct's template writes it, or SmolVLM-Instruct's `<|im_start|>User:<image>{q1}<end_of_utterance>
 * \nAssistant: {a1}<end_of_utterance>\nUser: {q2}<end_of_utterance>\nAssistant:`. Without turns it equals
 * `processor.formatPrompt(question, 1)`.
 */
export function chainPrompt(processor: VlmProcessor, turns: readonly ChainTurn[], question: string): string {
  const tok = processor.tokenizer;
  if (turns.length === 0) return processor.formatPrompt(question, 1);
  if (tok.chatTemplate !== null) {
    const messages: ChatMessage[] = [];
    const user = (text: string, first: boolean): ChatMessage => ({
      role: 'user',
      content: first ? [{ type: 'image' }, { type: 'text', text }] : [{ type: 'text', text }],
    });
    turns.forEach((t, i) => {
      messages.push(user(t.question, i === 0));
      messages.push({ role: 'assistant', content: [{ type: 'text', text: t.answer }] });
    });
    messages.push(user(question, false));
    return tok.applyChatTemplate(messages, { addGenerationPrompt: true });
  }
  if (processor instanceof QwenProcessor) {
    const image = `${processor.visionStart}${processor.imageToken}${processor.visionEnd}`;
    let text = `<|im_start|>system\n${QWEN_DEFAULT_SYSTEM}<|im_end|>\n`;
    turns.forEach((t, i) => {
      text += `<|im_start|>user\n${i === 0 ? image : ''}${t.question}<|im_end|>\n<|im_start|>assistant\n${t.answer}<|im_end|>\n`;
    });
    return `${text}<|im_start|>user\n${question}<|im_end|>\n<|im_start|>assistant\n`;
  }
  if (processor instanceof Idefics3Processor) {
    // SmolVLM-Instruct's template: "User:" before an image, "User: " / "Assistant: " before text, each turn ending
    // with <end_of_utterance>\n.
    let text = '<|im_start|>';
    turns.forEach((t, i) => {
      text += `User:${i === 0 ? processor.imageToken : ' '}${t.question}<end_of_utterance>\nAssistant: ${t.answer}<end_of_utterance>\n`;
    });
    return `${text}User: ${question}<end_of_utterance>\nAssistant:`;
  }
  const eos = (tok.eosTokenId !== null ? tok.idToToken(tok.eosTokenId) : undefined) ?? '</s>';
  let text = '';
  turns.forEach((t, i) => {
    text += `USER: ${i === 0 ? `${processor.imageToken}\n` : ''}${t.question} ASSISTANT: ${t.answer}${eos}`;
  });
  return `${text}USER: ${question} ASSISTANT:`;
}

/** [layers, heads, d] -> [layers, heads, 2d]: each head's z followed by the mean over its layer's heads. */
export function appendLayerMean(z: Float32Array, layers: number, heads: number, d: number): Float32Array {
  if (z.length !== layers * heads * d) throw new Error(`z has ${z.length} values, expected ${layers}x${heads}x${d}`);
  const out = new Float32Array(layers * heads * 2 * d);
  const mean = new Float64Array(d);
  for (let l = 0; l < layers; l++) {
    mean.fill(0);
    for (let h = 0; h < heads; h++) for (let j = 0; j < d; j++) mean[j] += z[(l * heads + h) * d + j];
    for (let h = 0; h < heads; h++) {
      const o = (l * heads + h) * 2 * d;
      out.set(z.subarray((l * heads + h) * d, (l * heads + h + 1) * d), o);
      for (let j = 0; j < d; j++) out[o + d + j] = mean[j] / heads;
    }
  }
  return out;
}

/**
 * Answer-token indices a pool averages over, for an answer of `n` tokens (n >= 1): first_generated [0],
 * answer_mean 0..n-1, indices as given (negative from the end, out of range dropped, the last token when none is left).
 */
export function answerIndices(pool: PoolSpec, n: number): number[] {
  if (pool === 'first_generated') return [0];
  if (pool === 'answer_mean') return Array.from({ length: n }, (_, i) => i);
  if (typeof pool === 'object') {
    const idx = pool.indices.map((i) => (i < 0 ? n + i : i)).filter((i) => i >= 0 && i < n);
    return idx.length ? idx : [n - 1];
  }
  throw new Error(`pool ${poolName(pool)} does not use answer tokens`);
}

/** Mean over the first axis of a [positions, rest] capture (or the capture itself when it has one position). */
function meanPositions(data: Float32Array, positions: number, width: number): Float32Array {
  if (positions === 1) return data.length === width ? data : data.slice(0, width);
  const acc = new Float64Array(width);
  for (let p = 0; p < positions; p++) for (let j = 0; j < width; j++) acc[j] += data[p * width + j];
  const out = new Float32Array(width);
  for (let j = 0; j < width; j++) out[j] = acc[j] / positions;
  return out;
}

/** Preprocessed images by path, the most recent few kept (a group's questions share one image). */
class ImageCache {
  private readonly entries = new Map<string, Promise<ImageInput>>();
  constructor(
    private readonly model: VlmModel,
    private readonly keep = 16,
  ) {}

  get(path: string): Promise<ImageInput> {
    let p = this.entries.get(path);
    if (p) {
      this.entries.delete(path);
      this.entries.set(path, p);
      return p;
    }
    p = loadImageFile(path).then((img) => this.model.preprocess(img));
    p.catch(() => this.entries.delete(path));
    this.entries.set(path, p);
    while (this.entries.size > this.keep) this.entries.delete(this.entries.keys().next().value!);
    return p;
  }
}

function predictionMap(p: CollectOptions['priorPredictions']): Map<string, string> {
  if (!p) return new Map();
  if (p instanceof Map) return new Map(p);
  return new Map(Object.entries(p as Record<string, string>));
}

/**
 * Rows one at a time, in plan order from `startAt` (see planCollection and the file comment); memory stays at one
 * row. Errors name the question.
 */
export async function* iterateActivations(
  model: VlmModel,
  tokenizer: Tokenizer,
  items: readonly EvalItem[],
  opts: CollectOptions,
): AsyncGenerator<CollectRow> {
  const tower = opts.tower ?? 'text';
  checkPool(opts.pool, tower);
  const maxNewTokens = opts.maxNewTokens ?? DEFAULT_COLLECT_MAX_NEW_TOKENS;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw new Error(`maxNewTokens must be a positive integer, got ${maxNewTokens}`);
  const contextMode = opts.context ?? 'gold';
  if (contextMode !== 'gold' && contextMode !== 'predicted') throw new Error(`context must be "gold" or "predicted", got ${JSON.stringify(contextMode)}`);
  const plan = planCollection(items, { chain: opts.chain });
  const startAt = opts.startAt ?? 0;
  const endAt = opts.endAt ?? plan.length;
  if (!Number.isInteger(startAt) || startAt < 0 || startAt > plan.length) throw new Error(`startAt must be an integer in 0..${plan.length}, got ${startAt}`);
  if (!Number.isInteger(endAt) || endAt < startAt || endAt > plan.length) throw new Error(`endAt must be an integer in ${startAt}..${plan.length}, got ${endAt}`);

  const processor = model.createProcessor(tokenizer);
  const images = new ImageCache(model);
  const eos = [...(opts.eosTokenIds ?? (tokenizer.eosTokenId != null ? [tokenizer.eosTokenId] : [])), ...processor.stopTokenIds];
  const eosSet = new Set(eos);
  const dims = collectDims(model, { tower, concatLayerMean: opts.concatLayerMean });
  const width = dims.layers * dims.heads * dims.headDim;
  const predictions = predictionMap(opts.priorPredictions);
  const noCapture = parseCapture({}, model.dims);
  const lastCapture = parseCapture({ z: { positions: 'last' } }, model.dims);
  // The vision pool is the mean over all of the image's vision tokens, however many its size makes.
  const imageCapture = (pixels: ImageInput) =>
    tower === 'vision' ? parseCapture({ z: { tower: 'vision', positions: `mean:0:${model.visionEncoder.plan([pixels]).tokens[0]}` } }, model.dims) : null;
  const atPrompt = opts.pool === 'last_prompt' || opts.pool === 'image_mean';

  for (let k = startAt; k < endAt; k++) {
    const { item, mainId, context } = plan[k];
    const where = `question ${item.id}`;
    if (item.question.includes(processor.imageToken)) {
      throw new Error(`${where} contains ${processor.imageToken}: leave it out, the image goes in the prompt on its own`);
    }
    const turns = context.map((c) => {
      if (contextMode === 'gold') return { question: c.question, answer: c.answer };
      const p = predictions.get(c.id);
      if (p === undefined) throw new Error(`${where}: the prediction for ${c.id}, which its chain context needs, is not known (give priorPredictions when starting mid-chain)`);
      return { question: c.question, answer: p.trim() };
    });
    let pixels: ImageInput;
    try {
      pixels = await images.get(item.imagePath);
    } catch (e) {
      throw new Error(`${where}: ${(e as Error).message}`);
    }
    const ids = processor.encodeText(chainPrompt(processor, turns, item.question), [pixels]).ids;

    // Answer greedily, stopping after an end-of-sequence token (kept, so an empty answer still has a token).
    const r = await model.run({
      ids,
      pixelValues: [pixels],
      interventions: opts.interventions,
      capture: imageCapture(pixels) ?? (opts.pool === 'last_prompt' ? lastCapture : noCapture),
      maxNewTokens,
      stopAfter: (g) => eosSet.has(g[g.length - 1]),
    });
    const generated = r.tokens ?? [];
    const answerIds = generated.length > 0 && eosSet.has(generated[generated.length - 1]) ? generated.slice(0, -1) : generated;
    const prediction = tokenizer.decode(answerIds, { skipSpecialTokens: true });

    let z: Float32Array;
    if (atPrompt) {
      z = r.z!.data;
    } else {
      // Teacher forcing: the prompt and the answer (or the EOS of an empty answer) in one prefill.
      const forced = answerIds.length > 0 ? answerIds : generated.slice(0, 1);
      if (forced.length === 0) throw new Error(`${where}: the model generated no token`);
      const positions = answerIndices(opts.pool, forced.length).map((i) => ids.length + i);
      const t = await model.run({
        ids: [...ids, ...forced],
        pixelValues: [pixels],
        interventions: opts.interventions,
        capture: parseCapture({ z: { positions } }, model.dims),
        maxNewTokens: 0,
      });
      z = meanPositions(t.z!.data, positions.length, width);
    }
    if (z.length !== width) throw new Error(`${where}: captured z has ${z.length} values, expected ${width}`);
    if (opts.concatLayerMean) z = appendLayerMean(z, dims.layers, dims.heads, dims.headDim);
    predictions.set(item.id, prediction);
    const row: CollectRow = {
      id: item.id,
      mainId,
      function: item.function,
      question: item.question,
      answer: item.answer,
      prediction,
      correct: isCorrect(prediction, item),
      z,
    };
    if (item.wording !== undefined) row.wording = item.wording;
    if (item.wordingHeldout !== undefined) row.wordingHeldout = item.wordingHeldout;
    opts.onExample?.(row, k + 1, plan.length);
    yield row;
  }
}

/**
 * Answers every question (sub-questions in a chain, then their main question), scores it and returns one row
 * of pooled per-head z per question, in plan order (planCollection).
 *
 * @example
 * const items = await readQuestions('data/questions.jsonl');
 * const rows = await collectActivations(model, tokenizer, items, { pool: 'answer_mean', concatLayerMean: true });
 * rows[0].z; // Float32Array [layers * heads * 2 * d_head]
 */
export async function collectActivations(
  model: VlmModel,
  tokenizer: Tokenizer,
  items: readonly EvalItem[],
  opts: CollectOptions,
): Promise<CollectRow[]> {
  const rows: CollectRow[] = [];
  for await (const row of iterateActivations(model, tokenizer, items, opts)) rows.push(row);
  return rows;
}
