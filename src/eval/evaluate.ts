// Evaluation of a model (any family) on a question set (What'sUp / VSR / CogVSR-style JSONL, or the synthetic scenes):
// each question goes through the processor's prompt format with its one image, is answered greedily (on the GPU,
// stopping at EOS or after maxNewTokens) and scored with the dataset's rules (normalizeAnswer / isCorrect).
// Accuracy is reported overall, per question type and per function label, with every example's prediction.
//
// Many questions share an image (a scene with several questions, a main question with its sub-questions), so
// images are decoded and preprocessed once per path and kept in a byte-bounded LRU cache.

import type { VlmModel } from '../models/vlm.js';
import type { ImageInput, VlmProcessor } from '../models/model.js';
import type { Tokenizer } from '../io/tokenizer.js';
import { loadImageFile } from '../io/image.js';
import type { InterventionSpec } from '../spec/spec.js';
import { generate } from '../generate/generate.js';
import { adaptVis, checkAdaptVisOptions, type AdaptVisOptions } from '../generate/adaptvis.js';
import { roundConfidence, topProbability } from '../generate/adaptvis.js';
import { isCorrect, normalizeAnswer, type EvalItem } from './dataset.js';
import { adaptVisScoreOptions, continuationIds, scoreOptions } from './likelihood.js';
import { pickOption } from './adaptvis-data.js';

export interface EvalOptions {
  /** Most tokens generated per answer (default 4: answers are a word or two). */
  maxNewTokens?: number;
  /** Applied to every question. */
  interventions?: InterventionSpec;
  /** Called after each question with the questions done, the total and the correct answers so far. */
  onProgress?: (done: number, total: number, correct: number) => void;
  /** Evaluate only the first `limit` items. */
  limit?: number;
  /** Token ids that end an answer; default the tokenizer's EOS (the CLI adds generation_config.json's). */
  eosTokenIds?: number[];
  /** Bytes of preprocessed images kept in memory (default 256 MiB; at least one image is always kept). */
  imageCacheBytes?: number;
  /**
   * Answer every question with AdaptVis (src/generate/adaptvis.ts): the plain first token's confidence picks the
   * image temperature of the answer. `interventions` then must not set image_temperature.
   */
  adaptVis?: AdaptVisOptions;
  /**
   * 'generate' (default): answer greedily and match words (the dataset's rule, or `score`). 'likelihood': score
   * each candidate answer by its summed token log-probability after the prompt and take the most likely
   * (src/eval/likelihood.ts); items need candidates (`options`, or an AdaptVis item's `candidates`).
   */
  scoring?: Scoring;
  /** Generation mode: scores a prediction instead of the dataset's rule (e.g. isCorrectAdaptVis). */
  score?: (prediction: string, item: EvalItem) => boolean;
  /** Generation mode: record the plain first token's top-1 probability per example (`confidence`), as AdaptVis's gate reads it. */
  recordConfidence?: boolean;
}

export type Scoring = 'generate' | 'likelihood';
export const SCORINGS: readonly Scoring[] = ['generate', 'likelihood'];

export interface Accuracy {
  total: number;
  correct: number;
  /** correct / total, in [0, 1] (0 when total is 0). */
  accuracy: number;
}

export interface EvalExample {
  id: string;
  type: string;
  function: string;
  question: string;
  answer: string;
  /** The generated text, special tokens skipped. */
  prediction: string;
  correct: boolean;
  /** With `adaptVis`: the gate's confidence (rounded), the alpha it chose and the estimated cost ratio. */
  adaptvis?: { confidence: number; alpha: number; branch: 'low' | 'high'; costRatio: number };
  /** Likelihood scoring: the candidates (the prediction is one of them) and their summed log-probabilities. */
  candidates?: string[];
  logLikelihoods?: number[];
  /** With `recordConfidence` (or likelihood scoring): the first answer token's top-1 probability, rounded as AdaptVis. */
  confidence?: number;
}

export interface EvalReport extends Accuracy {
  byType: Record<string, Accuracy>;
  byFunction: Record<string, Accuracy>;
  /** One per evaluated item, in input order. */
  examples: EvalExample[];
  /** With `adaptVis`: the gate's settings, how many answers took each alpha, and the mean estimated cost ratio. */
  adaptvis?: AdaptVisSummary;
}

export interface AdaptVisSummary {
  threshold: number;
  alphaLow: number;
  alphaHigh: number;
  /** Answers generated with alphaLow / alphaHigh. */
  low: number;
  high: number;
  /** Mean over the answers of AdaptVis's cost as a ratio to one plain generation (estimated per answer). */
  costRatio: number;
}

/** The AdaptVis summary of examples answered with `o` (their `adaptvis` fields). */
export function adaptVisSummary(examples: EvalExample[], o: AdaptVisOptions): AdaptVisSummary {
  const gated = examples.flatMap((e) => (e.adaptvis ? [e.adaptvis] : []));
  const low = gated.filter((g) => g.branch === 'low').length;
  const cost = gated.reduce((a, g) => a + g.costRatio, 0);
  return { threshold: o.threshold, alphaLow: o.alphaLow, alphaHigh: o.alphaHigh, low, high: gated.length - low, costRatio: gated.length ? cost / gated.length : 0 };
}

export const DEFAULT_EVAL_MAX_NEW_TOKENS = 4;

function accuracy(total: number, correct: number): Accuracy {
  return { total, correct, accuracy: total > 0 ? correct / total : 0 };
}

/** Groups the examples by a key: counts and accuracy per value, keys sorted. */
function tally(examples: EvalExample[], key: (e: EvalExample) => string): Record<string, Accuracy> {
  const counts = new Map<string, { total: number; correct: number }>();
  for (const e of examples) {
    const k = key(e);
    const c = counts.get(k) ?? { total: 0, correct: 0 };
    c.total++;
    if (e.correct) c.correct++;
    counts.set(k, c);
  }
  const out: Record<string, Accuracy> = {};
  for (const k of [...counts.keys()].sort()) out[k] = accuracy(counts.get(k)!.total, counts.get(k)!.correct);
  return out;
}

/** Builds the report of already scored examples (used by evaluate, and to re-tally saved results). */
export function summarize(examples: EvalExample[]): EvalReport {
  const correct = examples.reduce((n, e) => n + (e.correct ? 1 : 0), 0);
  return {
    ...accuracy(examples.length, correct),
    byType: tally(examples, (e) => e.type),
    byFunction: tally(examples, (e) => e.function),
    examples,
  };
}

/** Decoded + preprocessed images by path, least recently used dropped first once over the byte budget. */
class PixelCache {
  private readonly entries = new Map<string, Promise<ImageInput>>();
  private bytes = 0;
  private readonly sizes = new Map<string, number>();

  constructor(
    private readonly model: VlmModel,
    private readonly budget: number,
  ) {}

  async get(path: string): Promise<ImageInput> {
    let p = this.entries.get(path);
    if (p) {
      // Refresh its place in the LRU order.
      this.entries.delete(path);
      this.entries.set(path, p);
      return p;
    }
    p = loadImageFile(path).then((img) => {
      const pixels = this.model.preprocess(img);
      try {
        this.model.imageTokenCounts([pixels]); // the model's own size checks, named by path
      } catch (e) {
        throw new Error(`image ${path}: ${(e as Error).message}`);
      }
      return pixels;
    });
    this.entries.set(path, p);
    const values = await p.catch((e) => {
      this.entries.delete(path);
      throw e;
    });
    const size = (values instanceof Float32Array ? values : values.pixelValues).byteLength;
    this.sizes.set(path, size);
    this.bytes += size;
    for (const [k] of this.entries) {
      if (this.bytes <= this.budget || k === path) break;
      this.bytes -= this.sizes.get(k) ?? 0;
      this.sizes.delete(k);
      this.entries.delete(k);
    }
    return values;
  }
}

/** Prompt text and token ids for one question with its image (the image itself is preprocessed once per path). */
function promptOf(processor: VlmProcessor, question: string, image: ImageInput): { text: string; ids: number[] } {
  const text = processor.formatPrompt(question, 1);
  return { text, ids: processor.encodeText(text, [image]).ids };
}

/**
 * The candidate answers of an item for likelihood scoring, as the model would write them, and the gold one's
 * position: an AdaptVis item's `candidates` / `goldIndex`, else `options` with the answer found by normalizeAnswer.
 */
export function itemCandidates(item: EvalItem): { candidates: string[]; goldIndex: number } {
  const av = item as EvalItem & { candidates?: string[]; goldIndex?: number };
  if (Array.isArray(av.candidates) && typeof av.goldIndex === 'number') return { candidates: av.candidates, goldIndex: av.goldIndex };
  if (!item.options || item.options.length === 0) {
    throw new Error(`question ${item.id} has no options: likelihood scoring needs the candidate answers (an "options" list with the answer in it)`);
  }
  const gold = normalizeAnswer(item.answer);
  const goldIndex = item.options.findIndex((o) => normalizeAnswer(o) === gold);
  if (goldIndex < 0) throw new Error(`question ${item.id}: answer ${JSON.stringify(item.answer)} is not one of its options ${JSON.stringify(item.options)}`);
  return { candidates: item.options, goldIndex };
}

/**
 * Answers every item greedily with its image and scores it. Errors (an unreadable image, a question that holds the
 * image placeholder) name the item's id.
 */
export async function evaluate(model: VlmModel, tokenizer: Tokenizer, items: EvalItem[], opts: EvalOptions = {}): Promise<EvalReport> {
  const maxNewTokens = opts.maxNewTokens ?? DEFAULT_EVAL_MAX_NEW_TOKENS;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw new Error(`maxNewTokens must be a positive integer, got ${maxNewTokens}`);
  if (opts.limit !== undefined && (!Number.isInteger(opts.limit) || opts.limit < 0)) {
    throw new Error(`limit must be a non-negative integer, got ${opts.limit}`);
  }
  if (opts.adaptVis) {
    checkAdaptVisOptions(opts.adaptVis);
    if (opts.interventions?.imageTemperature) throw new Error('adaptVis: the interventions already set image_temperature; AdaptVis sets it (alpha_low / alpha_high)');
  }
  const scoring = opts.scoring ?? 'generate';
  if (!SCORINGS.includes(scoring)) throw new Error(`scoring must be one of ${SCORINGS.join(', ')}, got ${JSON.stringify(scoring)}`);
  const todo = opts.limit !== undefined ? items.slice(0, opts.limit) : items;
  if (scoring === 'likelihood') for (const item of todo) itemCandidates(item); // every item has candidates before any work
  const processor = model.createProcessor(tokenizer);
  const images = new PixelCache(model, opts.imageCacheBytes ?? 256 * 2 ** 20);
  const examples: EvalExample[] = [];
  let correct = 0;
  for (const item of todo) {
    if (item.question.includes(processor.imageToken)) {
      throw new Error(`question ${item.id} contains ${processor.imageToken}: leave it out, the image goes in the prompt on its own`);
    }
    let pixelValues: ImageInput;
    try {
      pixelValues = await images.get(item.imagePath);
    } catch (e) {
      throw new Error(`question ${item.id}: ${(e as Error).message}`);
    }
    const prompt = promptOf(processor, item.question, pixelValues);
    const base = { id: item.id, type: item.type, function: item.function, question: item.question, answer: item.answer };
    let example: EvalExample;
    if (scoring === 'likelihood') {
      const { candidates, goldIndex } = itemCandidates(item);
      const continuations = candidates.map((c) => continuationIds(processor, prompt.text, [pixelValues], prompt.ids, c));
      const args = { ids: prompt.ids, pixelValues: [pixelValues], continuations, interventions: opts.interventions };
      const gated = opts.adaptVis ? await adaptVisScoreOptions(model, { ...args, ...opts.adaptVis }) : null;
      const r = gated ?? (await scoreOptions(model, args));
      const choice = pickOption(r.logLikelihoods);
      example = {
        ...base,
        prediction: candidates[choice]!,
        correct: choice === goldIndex,
        candidates,
        logLikelihoods: r.logLikelihoods,
        confidence: gated ? gated.confidence : roundConfidence(topProbability(r.firstLogits).probability),
        ...(gated ? { adaptvis: { confidence: gated.confidence, alpha: gated.alpha, branch: gated.branch, costRatio: gated.costRatio } } : {}),
      };
    } else {
      const args = {
        ids: prompt.ids,
        pixelValues: [pixelValues],
        maxNewTokens,
        eosTokenIds: [...(opts.eosTokenIds ?? (tokenizer.eosTokenId != null ? [tokenizer.eosTokenId] : [])), ...processor.stopTokenIds],
        tokenizer,
        interventions: opts.interventions,
        ...(opts.recordConfidence ? { capture: { logits: 'last' as const, pattern: [], z: null, residual: [], imageFeatures: false } } : {}),
      };
      const gated = opts.adaptVis ? await adaptVis(model, { ...args, ...opts.adaptVis }) : null;
      const r = gated ?? (await generate(model, args));
      const firstLogits = r.captured?.logits?.data;
      example = {
        ...base,
        prediction: r.text,
        correct: opts.score ? opts.score(r.text, item) : isCorrect(r.text, item),
        ...(gated ? { adaptvis: { confidence: gated.adaptvis.confidence, alpha: gated.adaptvis.alpha, branch: gated.adaptvis.branch, costRatio: gated.adaptvis.costRatio } } : {}),
        ...(gated ? { confidence: gated.adaptvis.confidence } : firstLogits ? { confidence: roundConfidence(topProbability(firstLogits).probability) } : {}),
      };
    }
    if (example.correct) correct++;
    examples.push(example);
    opts.onProgress?.(examples.length, todo.length, correct);
  }
  const report = summarize(examples);
  if (opts.adaptVis) report.adaptvis = adaptVisSummary(examples, opts.adaptVis);
  return report;
}
