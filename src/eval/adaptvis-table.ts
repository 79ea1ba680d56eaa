// The AdaptVis evaluation as the paper reports it, in one call: per subset, the authors' 20% / 80% split
// (splitItems), ScalingVis's alpha and AdaptVis's (threshold, alpha_low, alpha_high) chosen on the 20%, and the
// plain model, ScalingVis and AdaptVis reported on the 80%, as resultsTable's rows (Chen et al., ICML 2025; the
// per-subset settings of their table are not in their code, methods.md: "tuned per subset on a 20% split").
//
// Work on the tuning split: one evaluation per alpha of the union of the ScalingVis grid, the alpha_low and the
// alpha_high grids (alpha 1 plain, recording each question's first-token confidence). AdaptVis needs no run of
// its own there: its answer to a question is the ScalingVis answer at the alpha its gate picks (the same
// image_temperature {alpha, queries 'last', all layers and heads} on the same prompt; only the prefix reuse
// differs, which is exact), so every (threshold, alpha_low, alpha_high) of the grid is scored from those runs.
// Ties go to the first candidate: alpha 1 first for ScalingVis, then the grid in ascending order; AdaptVis in
// threshold, alpha_low, alpha_high order.
// On the test split: the plain model, ScalingVis at its alpha (the plain run again when that is 1) and AdaptVis
// itself (two passes with the prefix reuse, its cost ratio reported), each scored with the authors' rule
// (isCorrectAdaptVis) or by option likelihood; VSR also gets the authors' F1 (vsrMetrics).

import type { VlmModel } from '../models/vlm.js';
import type { Tokenizer } from '../io/tokenizer.js';
import { parseInterventions } from '../spec/spec.js';
import { evaluate, type EvalReport, type Scoring } from './evaluate.js';
import { isCorrectAdaptVis, pickBest, splitItems, vsrMetrics, type AdaptVisItem, type AdaptVisResult, type AdaptVisSubset } from './adaptvis-data.js';
import { BASELINE_ALPHA, DEFAULT_SWEEP_ALPHAS, sweepAlphas, temperatureSpecJson } from './sweep.js';
import type { EvalItem } from './dataset.js';

/** The AdaptVis grids of the authors' README: weight1 (alpha_low) and weight2 (alpha_high). */
export const DEFAULT_ALPHA_LOW: readonly number[] = [0.5, 0.8];
export const DEFAULT_ALPHA_HIGH: readonly number[] = [1.2, 1.5, 2.0];
/** Thresholds tried on the tuning split (their README and run.sh use 0.3 and 0.4). */
export const DEFAULT_THRESHOLDS: readonly number[] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
/** The authors' max_new_tokens for these datasets. */
export const ADAPTVIS_MAX_NEW_TOKENS = 100;

export interface AdaptVisTableProgress {
  subset: AdaptVisSubset;
  split: 'tune' | 'test';
  /** What is being run: "alpha 1.5", "ScalingVis alpha 2", "AdaptVis". */
  run: string;
  done: number;
  total: number;
}

export interface AdaptVisTableOptions {
  /** ScalingVis alphas (1 is added as the baseline). Default the authors' grid. */
  alphas?: readonly number[];
  alphaLow?: readonly number[];
  alphaHigh?: readonly number[];
  thresholds?: readonly number[];
  scoring?: Scoring;
  /** Split seed (the authors': 1) and tuning share (0.2). */
  seed?: number;
  fraction?: number;
  /** Use only the first n items of each part after the split (a quick look; the numbers are then not the paper's protocol). */
  limit?: number;
  maxNewTokens?: number;
  eosTokenIds?: number[];
  onProgress?: (p: AdaptVisTableProgress) => void;
}

export interface AdaptVisGridPoint {
  threshold: number;
  alphaLow: number;
  alphaHigh: number;
  accuracy: number;
}

export interface AdaptVisSubsetRun {
  subset: AdaptVisSubset;
  tuneIndices: number[];
  testIndices: number[];
  /** Tuning split: accuracy per alpha (ascending, 1 included), and every AdaptVis grid point. */
  tune: { alphas: number[]; accuracy: number[]; adaptVisGrid: AdaptVisGridPoint[] };
  /** Test split reports. */
  test: { baseline: EvalReport; scalingVis: EvalReport; adaptVis: EvalReport };
  /** The row of the paper's table. */
  result: AdaptVisResult;
}

function checkGrid(v: readonly number[], what: string, ok: (x: number) => boolean, range: string): void {
  if (v.length === 0) throw new Error(`${what}: give at least one value`);
  for (const x of v) if (typeof x !== 'number' || !Number.isFinite(x) || !ok(x)) throw new Error(`${what}: ${String(x)} is not ${range}`);
}

/**
 * Runs one subset (items: the whole subset in file order, as readAdaptVis gives it) and returns its row of the
 * table with what it was chosen from.
 */
export async function runAdaptVisSubset(model: VlmModel, tokenizer: Tokenizer, subset: AdaptVisSubset, items: readonly AdaptVisItem[], opts: AdaptVisTableOptions = {}): Promise<AdaptVisSubsetRun> {
  const alphas = sweepAlphas(opts.alphas ?? DEFAULT_SWEEP_ALPHAS);
  const lows = [...new Set(opts.alphaLow ?? DEFAULT_ALPHA_LOW)];
  const highs = [...new Set(opts.alphaHigh ?? DEFAULT_ALPHA_HIGH)];
  const thresholds = [...new Set(opts.thresholds ?? DEFAULT_THRESHOLDS)];
  checkGrid(lows, 'alpha_low', (x) => x >= 0, 'a number >= 0');
  checkGrid(highs, 'alpha_high', (x) => x >= 0, 'a number >= 0');
  checkGrid(thresholds, 'threshold', (x) => x >= 0 && x <= 1, 'in [0, 1]');
  if (items.length === 0) throw new Error(`${subset}: no items`);
  for (const it of items) if (it.subset !== subset) throw new Error(`${subset}: item ${it.id} is of ${it.subset}`);
  const scoring = opts.scoring ?? 'generate';
  const split = splitItems(items, { seed: opts.seed ?? 1, fraction: opts.fraction ?? 0.2 });
  const cap = <T>(v: T[]): T[] => (opts.limit !== undefined ? v.slice(0, opts.limit) : v);
  const tune = cap(split.tune);
  const test = cap(split.test);
  if (tune.length === 0 || test.length === 0) throw new Error(`${subset}: ${items.length} items give ${tune.length} to tune on and ${test.length} to test on; both need at least one`);

  const score = (prediction: string, item: EvalItem) => isCorrectAdaptVis(prediction, item as AdaptVisItem);
  const spec = (alpha: number) => (alpha === BASELINE_ALPHA ? undefined : parseInterventions(temperatureSpecJson(alpha, { queries: 'last' }), model.dims, `${subset} at alpha ${alpha}`));
  const run = (part: 'tune' | 'test', label: string, todo: AdaptVisItem[], extra: Parameters<typeof evaluate>[3]) =>
    evaluate(model, tokenizer, todo, {
      scoring,
      score,
      maxNewTokens: opts.maxNewTokens ?? ADAPTVIS_MAX_NEW_TOKENS,
      eosTokenIds: opts.eosTokenIds,
      onProgress: opts.onProgress && ((done, total) => opts.onProgress!({ subset, split: part, run: label, done, total })),
      ...extra,
    });

  // Tuning split: every alpha any method may pick, the plain run first (it records the gate's confidences).
  const tuneAlphas = [...new Set([BASELINE_ALPHA, ...alphas, ...lows, ...highs])];
  const byAlpha = new Map<number, EvalReport>();
  for (const a of tuneAlphas) byAlpha.set(a, await run('tune', `alpha ${a}`, tune, { interventions: spec(a), recordConfidence: a === BASELINE_ALPHA }));
  const confidence = byAlpha.get(BASELINE_ALPHA)!.examples.map((e) => e.confidence!);
  const svCandidates = [BASELINE_ALPHA, ...alphas.filter((a) => a !== BASELINE_ALPHA)].map((alpha) => ({ alpha, accuracy: byAlpha.get(alpha)!.accuracy }));
  const sv = pickBest(svCandidates);
  const grid: AdaptVisGridPoint[] = [];
  for (const threshold of thresholds) {
    for (const alphaLow of lows) {
      for (const alphaHigh of highs) {
        const lo = byAlpha.get(alphaLow)!.examples;
        const hi = byAlpha.get(alphaHigh)!.examples;
        const correct = confidence.reduce((n, c, i) => n + ((c < threshold ? lo[i]! : hi[i]!).correct ? 1 : 0), 0);
        grid.push({ threshold, alphaLow, alphaHigh, accuracy: correct / tune.length });
      }
    }
  }
  const av = pickBest(grid);

  // Test split.
  const baseline = await run('test', 'plain', test, {});
  const scalingVis = sv.alpha === BASELINE_ALPHA ? baseline : await run('test', `ScalingVis alpha ${sv.alpha}`, test, { interventions: spec(sv.alpha) });
  const adaptVis = await run('test', 'AdaptVis', test, { adaptVis: { threshold: av.threshold, alphaLow: av.alphaLow, alphaHigh: av.alphaHigh } });

  const result: AdaptVisResult = {
    subset,
    baseline: baseline.accuracy,
    scalingVis: { alpha: sv.alpha, accuracy: scalingVis.accuracy },
    adaptVis: { threshold: av.threshold, alphaLow: av.alphaLow, alphaHigh: av.alphaHigh, accuracy: adaptVis.accuracy },
  };
  if (subset === 'VSR') {
    const f1 = (r: EvalReport) => vsrMetrics(r.examples.map((e) => e.prediction), test).f1;
    result.f1 = { baseline: f1(baseline), scalingVis: f1(scalingVis), adaptVis: f1(adaptVis) };
  }
  return {
    subset,
    tuneIndices: split.tuneIndices.slice(0, tune.length),
    testIndices: split.testIndices.slice(0, test.length),
    tune: { alphas, accuracy: alphas.map((a) => byAlpha.get(a)!.accuracy), adaptVisGrid: grid },
    test: { baseline, scalingVis, adaptVis },
    result,
  };
}
