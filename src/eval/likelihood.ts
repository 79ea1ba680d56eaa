// Option-likelihood scoring: instead of generating an answer and matching words, each candidate answer is scored
// by the log-probability the model gives its tokens after the prompt, and the most likely candidate is the answer
// (lm-eval-harness's "loglikelihood" multiple choice; the AdaptVis data has the candidates per question). Useful
// where generation drifts ("The answer is ...") or a word rule is lenient: the score reads the model's own
// distribution over the allowed answers.
//
// The continuation of a candidate is the tokens the model would generate to write it: the prompt text with the
// candidate appended (a space first when the prompt ends in a non-space character, as "ASSISTANT:" -> " Left"; none
// after a newline, as ChatML's "assistant\n" -> "Left") is tokenized whole and the prompt's ids are cut off the
// front, so merges across the boundary follow the tokenizer. When the prompt's ids are not a prefix of the whole
// (a tokenizer that appends a special token, a merge into the prompt's last token), the candidate is tokenized on
// its own, without special tokens.
//
// Work per question: one prefill of the prompt (vision tower included) and, per candidate, its tokens fed one by one
// as forced decode steps; every candidate after the first reuses the prompt's KV cache and image features
// (VlmModel.run `reuse`: same ids, images and interventions, so only the last prompt row is prefilled again). Each
// step's logits row is read back and log-softmaxed in float64 on the CPU. With n candidates of t tokens: 1 full
// prefill + (n - 1) one-row prefills + n (t - 1) decode steps.

import type { ImageInput } from '../models/model.js';
import type { PrefixHandle, VlmModel } from '../models/vlm.js';
import type { VlmProcessor } from '../models/model.js';
import type { InterventionSpec } from '../spec/spec.js';
import { adaptVisBaseSpec, adaptVisGate, adaptVisSpec, type AdaptVisOptions } from '../generate/adaptvis.js';

/** The token ids that write `candidate` after the prompt (see the file header). */
export function continuationIds(processor: VlmProcessor, promptText: string, images: readonly ImageInput[], promptIds: readonly number[], candidate: string): number[] {
  if (candidate.length === 0) throw new Error('an empty candidate answer cannot be scored');
  const sep = /\s$/.test(promptText) ? '' : ' ';
  const whole = processor.encodeText(promptText + sep + candidate, images).ids;
  const isPrefix = whole.length > promptIds.length && promptIds.every((id, i) => whole[i] === id);
  const ids = isPrefix ? whole.slice(promptIds.length) : processor.tokenizer.encode(sep + candidate, { addSpecialTokens: false });
  if (ids.length === 0) throw new Error(`candidate ${JSON.stringify(candidate)} tokenizes to no tokens`);
  return ids;
}

/** log softmax(logits)[token] in float64 (max-subtracted log-sum-exp). */
export function logProbability(logits: ArrayLike<number>, token: number): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return logits[token]! - max - Math.log(sum);
}

export interface ScoreOptionsArgs {
  /** Prompt ids, image tokens expanded. */
  ids: number[];
  pixelValues: ImageInput[];
  /** Token ids of each candidate's continuation (continuationIds), at least one token each. */
  continuations: number[][];
  interventions?: InterventionSpec;
  /** Reuse an earlier run of the same prompt (e.g. AdaptVis's plain pass) for the first candidate too. */
  reuse?: PrefixHandle;
}

export interface OptionScores {
  /** Summed log-probability of each continuation's tokens, in candidate order. */
  logLikelihoods: number[];
  /** The last prompt row's logits (the first answer token's distribution), from the first candidate's run. */
  firstLogits: Float32Array;
  /** The last run's prefix: later runs of the same prompt may reuse it. */
  prefix: PrefixHandle;
  /** Per candidate run: milliseconds of its prefill (the prompt rows it computed) and of its decode steps. */
  timings: { prefillMs: number; decodeMs: number; prefillRows: number; decodeSteps: number }[];
}

/**
 * Scores every continuation after the prompt (see the file header): the summed log-probabilities, in float64 from
 * the f32 logits. The runs share the prompt's prefix; no tokens are generated.
 */
export async function scoreOptions(model: VlmModel, args: ScoreOptionsArgs): Promise<OptionScores> {
  if (args.continuations.length === 0) throw new Error('scoreOptions: no candidates');
  args.continuations.forEach((c, i) => {
    if (c.length === 0) throw new Error(`scoreOptions: candidate ${i} has no tokens`);
  });
  const longest = Math.max(...args.continuations.map((c) => c.length));
  const logLikelihoods: number[] = [];
  let firstLogits: Float32Array | null = null;
  let prefix = args.reuse;
  const timings: OptionScores['timings'] = [];
  for (const c of args.continuations) {
    let ll = 0;
    const r = await model.run({
      ids: args.ids,
      pixelValues: args.pixelValues,
      interventions: args.interventions,
      maxNewTokens: c.length,
      // Forced decoding: each step's logits score the candidate's next token, which is then fed in.
      chooseToken: (logits, generated) => {
        const tok = c[generated.length]!;
        if (generated.length === 0 && firstLogits === null) firstLogits = logits.slice();
        ll += logProbability(logits, tok);
        return tok;
      },
      reuse: prefix,
      reserveNewTokens: longest,
    });
    timings.push({ prefillMs: r.timings.prefillMs, decodeMs: r.timings.decodeMs, prefillRows: r.reuse?.reused ? r.reuse.rows : args.ids.length, decodeSteps: r.timings.decodeSteps });
    logLikelihoods.push(ll);
    prefix = r.prefix;
  }
  return { logLikelihoods, firstLogits: firstLogits!, prefix: prefix!, timings };
}

export interface AdaptVisScores extends OptionScores {
  /** The plain first token's top-1 probability, rounded as the authors' code (roundConfidence), and unrounded. */
  confidence: number;
  rawConfidence: number;
  branch: 'low' | 'high';
  alpha: number;
  /** AdaptVis's time over plain scoring of the same candidates (estimated per question from the runs' timings). */
  costRatio: number;
}

/**
 * AdaptVis with option-likelihood scoring: the plain prompt's first-token confidence picks alpha_low or alpha_high
 * (src/generate/adaptvis.ts), then the candidates are scored under that image temperature. Pass 1 is a prefill
 * only; pass 2 reuses its prefix (the last prompt row is prefilled again, the temperature reaches it).
 */
export async function adaptVisScoreOptions(model: VlmModel, args: Omit<ScoreOptionsArgs, 'reuse'> & AdaptVisOptions): Promise<AdaptVisScores> {
  const base = adaptVisBaseSpec(args);
  const longest = Math.max(1, ...args.continuations.map((c) => c.length));
  const p1 = await model.run({ ids: args.ids, pixelValues: args.pixelValues, interventions: base, maxNewTokens: 0, reserveNewTokens: longest });
  const { top, confidence, branch, alpha } = adaptVisGate(p1.logits!.data, args);
  const scores = await scoreOptions(model, { ...args, interventions: adaptVisSpec(base, alpha, args), reuse: args.reusePrefix === false ? undefined : p1.prefix });
  // Plain scoring of the same candidates is pass 2 with pass 1's full prefill in place of pass 2's first prefill
  // (one row with the reuse, the whole prompt without): timed, so the vision tower and the prompt length are in it.
  const pass2 = scores.timings.reduce((a, t) => a + t.prefillMs + t.decodeMs, 0);
  const plain = p1.timings.prefillMs + pass2 - scores.timings[0]!.prefillMs;
  const costRatio = plain > 0 ? (p1.timings.prefillMs + pass2) / plain : 0;
  return { ...scores, confidence, rawConfidence: top.probability, branch, alpha, costRatio };
}
