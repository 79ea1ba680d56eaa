// AdaptVis (Chen et al., "Why Is Spatial Reasoning Hard for VLMs? An Attention Mechanism Perspective on Focus
// Areas", ICML 2025, arXiv 2503.01773; code github shiqichen17/AdaptVis): confidence-gated image-attention
// temperature, on any family the engine runs.
//
// What their code does (model_zoo/llava15.py l.380-400, the What'sUp / COCO / VG path):
//  1. Pass 1: generate with weight=1.0 (the plain model), output_scores=True.
//  2. uncertainty = np.round(float(max(softmax(output['scores'][0], dim=-1)[0])), 2): the top-1 softmax
//     probability of the FIRST generated token, rounded by numpy (rint(x * 100) / 100, ties to even on the
//     product, which is not Python's round(x, 2): 0.355 -> 0.36 here, 0.35 there). `roundConfidence` copies numpy.
//  3. if uncertainty < threshold: regenerate with weight1 (alpha_low, < 1 flattens) else with weight2 (alpha_high,
//     > 1 sharpens). The weight multiplies the pre-softmax scores of the image-token keys of the LAST prompt row,
//     in every layer and head, in the prefill only (model_zoo/llama/modeling_llama_add_attn.py l.257-302): the
//     spec's image_temperature {alpha, queries: 'last'} with all layers and heads.
// Not copied, documented: their VSR path (get_judge_scores_vsr_batched, llava15.py l.522) gates on
// np.round(float(max(output['scores'][0][0])), 2), the top RAW LOGIT and not a probability, so a threshold such as
// 0.3 or 0.4 practically always picks weight2 there. Here the confidence is the softmax probability everywhere.
//
// What this does not recompute (the answer is the same as theirs, the work is not):
//  - Pass 1's answer is never used (both branches regenerate), so pass 1 stops after the prefill: the first
//    token's logits are all the gate reads (`plainAnswer` generates it anyway, as their code does).
//  - Pass 2 reuses pass 1's prefix (VlmModel.run `reuse`): the image features (no vision pass) and the KV cache of
//    every prompt row before the first row the temperature reaches. For queries 'last' that is every row but the
//    last: pass 2 prefills one row (the last prompt token, whose scores change), then decodes as usual. Decode
//    steps read the changed K/V of that row in every layer, so they are all recomputed; nothing else changes.
// The confidence is computed from the model's logits (their greedy run applies no logits processor, so its
// scores are the logits); sampling settings only affect pass 2.

import type { PrefixHandle, ReuseInfo, VlmModel } from '../models/vlm.js';
import { EMPTY_INTERVENTIONS, type InterventionSpec, type QueryScope } from '../spec/spec.js';
import { generate, type GenerateArgs, type GenerateResult } from './generate.js';

export interface AdaptVisOptions {
  /** The gate: confidence < threshold -> alphaLow, else alphaHigh (their --threshold). */
  threshold: number;
  /** Image-attention temperature when the model is unsure (their --weight1, e.g. 0.5 or 0.8). */
  alphaLow: number;
  /** Image-attention temperature when the model is confident (their --weight2, e.g. 1.2, 1.5 or 2.0). */
  alphaHigh: number;
  /** Query rows the temperature scales (default 'last', as their code). */
  queries?: QueryScope;
  /** Text layers / heads it scales (default all, as their code). */
  layers?: number[] | null;
  heads?: number[] | null;
  /** Reuse pass 1's prefix in pass 2 (default true; false recomputes pass 2 from scratch, vision tower included). */
  reusePrefix?: boolean;
  /** Generate pass 1's whole answer (as their code does, then discarded) instead of stopping at the first token. */
  plainAnswer?: boolean;
}

export type AdaptVisArgs = Omit<GenerateArgs, 'reuse'> & AdaptVisOptions;

export interface AdaptVisInfo {
  /** Top-1 softmax probability of pass 1's first token, rounded as their code rounds (roundConfidence). */
  confidence: number;
  /** The same, unrounded. */
  rawConfidence: number;
  threshold: number;
  alphaLow: number;
  alphaHigh: number;
  branch: 'low' | 'high';
  /** The image temperature of pass 2. */
  alpha: number;
  /** Pass 1 (the plain model): its first token, and its whole answer with `plainAnswer`. */
  pass1: {
    firstToken: number;
    firstTokenText: string;
    text?: string;
    tokenIds?: number[];
    prefillMs: number;
    decodeMs: number;
  };
  /** Pass 2 (the answer): what it reused of pass 1 (null when reuse was off). */
  pass2: { prefillMs: number; decodeMs: number; decodeSteps: number; reuse: ReuseInfo | null };
  /** Both passes, prefill + decode. */
  totalMs: number;
  /**
   * Estimated cost as a ratio to one plain generation of the same answer: totalMs over (pass 1's prefill, a full
   * plain one, + pass 2's decode). `npm run bench` measures it against real plain generations.
   */
  costRatio: number;
}

export interface AdaptVisResult extends GenerateResult {
  adaptvis: AdaptVisInfo;
}

/** np.round(x, 2) as numpy computes it for a float64: rint(x * 100) / 100, the product rounded half to even. */
export function roundConfidence(x: number): number {
  const y = x * 100;
  let r = Math.floor(y);
  const frac = y - r; // exact for |y| < 2^52
  if (frac > 0.5 || (frac === 0.5 && r % 2 !== 0)) r += 1;
  return r / 100;
}

/** Top-1 softmax probability of a logits row (float64) and its token (the first index of the maximum). */
export function topProbability(logits: ArrayLike<number>): { probability: number; token: number } {
  let token = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[token]) token = i;
  const max = logits[token];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  return { probability: 1 / sum, token };
}

/** Their gate (llava15.py l.390-398): below the threshold the low alpha, at or above it the high one. */
export function adaptVisBranch(confidence: number, o: Pick<AdaptVisOptions, 'threshold' | 'alphaLow' | 'alphaHigh'>): { branch: 'low' | 'high'; alpha: number } {
  return confidence < o.threshold ? { branch: 'low', alpha: o.alphaLow } : { branch: 'high', alpha: o.alphaHigh };
}

/**
 * The gate on pass 1's first-token logits: the top-1 probability (raw and rounded as their code rounds) and the
 * branch and alpha it picks.
 */
export function adaptVisGate(
  logits: ArrayLike<number>,
  o: Pick<AdaptVisOptions, 'threshold' | 'alphaLow' | 'alphaHigh'>,
): { top: { probability: number; token: number }; confidence: number; branch: 'low' | 'high'; alpha: number } {
  const top = topProbability(logits);
  const confidence = roundConfidence(top.probability);
  return { top, confidence, ...adaptVisBranch(confidence, o) };
}

/** The checked options' base spec (the run's other interventions), which must leave image_temperature to AdaptVis. */
export function adaptVisBaseSpec(o: AdaptVisOptions & { interventions?: InterventionSpec }): InterventionSpec {
  checkAdaptVisOptions(o);
  const base = o.interventions ?? EMPTY_INTERVENTIONS;
  if (base.imageTemperature) throw new Error('adaptVis: the interventions already set image_temperature; AdaptVis sets it (alpha_low / alpha_high)');
  return base;
}

/** Pass 2's spec: the base spec with the chosen alpha on the options' rows, layers and heads (default: last, all). */
export function adaptVisSpec(base: InterventionSpec, alpha: number, o: Pick<AdaptVisOptions, 'queries' | 'layers' | 'heads'>): InterventionSpec {
  return { ...base, imageTemperature: { alpha, queries: o.queries ?? 'last', layers: o.layers ?? null, heads: o.heads ?? null } };
}

/** Checks the options; throws a one-line error naming the bad one. */
export function checkAdaptVisOptions(o: AdaptVisOptions): void {
  for (const k of ['threshold', 'alphaLow', 'alphaHigh'] as const) {
    if (typeof o[k] !== 'number' || !Number.isFinite(o[k])) throw new Error(`adaptVis: ${k} must be a finite number, got ${String(o[k])}`);
  }
  if (o.queries !== undefined && o.queries !== 'all' && o.queries !== 'last' && o.queries !== 'generated') {
    throw new Error(`adaptVis: queries must be "all", "last" or "generated", got ${JSON.stringify(o.queries)}`);
  }
}

/**
 * Parses the CLI's `threshold,alpha_low,alpha_high` (e.g. "0.4,0.5,1.5"); throws a one-line error naming the bad
 * field.
 */
export function parseAdaptVisTriple(text: string): Pick<AdaptVisOptions, 'threshold' | 'alphaLow' | 'alphaHigh'> {
  const parts = text.split(',');
  const names = ['threshold', 'alpha_low', 'alpha_high'];
  if (parts.length !== 3) throw new Error(`expected threshold,alpha_low,alpha_high (e.g. 0.4,0.5,1.5), got ${JSON.stringify(text)}`);
  const v = parts.map((p, i) => {
    const n = Number(p);
    if (p.trim() === '' || !Number.isFinite(n)) throw new Error(`${names[i]} ${JSON.stringify(p)} is not a number (expected threshold,alpha_low,alpha_high, e.g. 0.4,0.5,1.5)`);
    return n;
  });
  return { threshold: v[0], alphaLow: v[1], alphaHigh: v[2] };
}

/**
 * AdaptVis generation: pass 1 plain (to the first token's logits), the gate on its rounded top-1 probability, and
 * pass 2 with the chosen image temperature, reusing pass 1's prefix. Returns pass 2's generation with the gate's
 * numbers and both passes' timings. `interventions` apply to both passes (they must not set image_temperature,
 * which AdaptVis sets); `onText` streams pass 2 only.
 */
export async function adaptVis(model: VlmModel, args: AdaptVisArgs): Promise<AdaptVisResult> {
  const base = adaptVisBaseSpec(args);
  const { maxNewTokens, tokenizer } = args;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new Error(`maxNewTokens must be a non-negative integer, got ${maxNewTokens}`);

  // Pass 1: the plain model; its prefill's last row is the first generated token's distribution.
  let logits: Float32Array;
  let prefix: PrefixHandle;
  let pass1: Omit<AdaptVisInfo['pass1'], 'firstToken' | 'firstTokenText'>;
  const lastLogits = { logits: 'last' as const, pattern: [], z: null, residual: [], imageFeatures: false };
  if (args.plainAnswer) {
    const r = await generate(model, { ...args, interventions: base, capture: lastLogits, onText: undefined, reuse: undefined });
    logits = r.captured!.logits!.data;
    prefix = r.prefix!;
    pass1 = { text: r.text, tokenIds: r.tokenIds, prefillMs: r.timings.prefillMs, decodeMs: r.timings.decodeMs };
  } else {
    const r = await model.run({
      ids: args.ids,
      pixelValues: args.pixelValues,
      interventions: base,
      capture: lastLogits,
      maxNewTokens: 0,
      reserveNewTokens: maxNewTokens,
    });
    logits = r.logits!.data;
    prefix = r.prefix;
    pass1 = { prefillMs: r.timings.prefillMs, decodeMs: 0 };
  }
  const { top, confidence, branch, alpha } = adaptVisGate(logits, args);

  // Pass 2: the answer, with the chosen temperature.
  const interventions = adaptVisSpec(base, alpha, args);
  const reuse = args.reusePrefix !== false;
  const r2 = await generate(model, { ...args, interventions, reuse: reuse ? prefix : undefined });
  const p1 = pass1.prefillMs + pass1.decodeMs;
  const p2 = r2.timings.prefillMs + r2.timings.decodeMs;
  const plain = pass1.prefillMs + r2.timings.decodeMs;
  return {
    ...r2,
    adaptvis: {
      confidence,
      rawConfidence: top.probability,
      threshold: args.threshold,
      alphaLow: args.alphaLow,
      alphaHigh: args.alphaHigh,
      branch,
      alpha,
      pass1: { firstToken: top.token, firstTokenText: tokenizer.decode([top.token], { skipSpecialTokens: false }), ...pass1 },
      pass2: { prefillMs: r2.timings.prefillMs, decodeMs: r2.timings.decodeMs, decodeSteps: r2.timings.decodeSteps, reuse: r2.reuse ?? null },
      totalMs: p1 + p2,
      costRatio: plain > 0 ? (p1 + p2) / plain : 0,
    },
  };
}
