// Text generation on a loaded model (any family): prefill + decode with greedy or sampled tokens, EOS and stop
// strings, and the text streamed (through the tokenizer's TextStreamer) as tokens arrive.
//
// Greedy runs keep the argmax on the GPU (4 bytes read back per token); sampling and the repetition penalty
// need the logits row on the CPU each step. Stop strings follow Hugging Face: generation stops at the token
// that completes one, that token stays in `tokenIds`, and the returned text is cut before the stop string.
// Streamed text never shows the stop string: the tail that could start one is held back until it cannot.

import type { ImageInput, RunResult } from '../models/model.js';
import type { PrefixHandle, ReuseInfo, VlmModel } from '../models/vlm.js';
import type { CaptureSpec, InterventionSpec } from '../spec/spec.js';
import { TextStreamer, type Tokenizer } from '../io/tokenizer.js';
import { createSampler, validateSampling, type SamplingOptions } from './sampling.js';

export interface GenerateArgs {
  /** Prompt token ids, image tokens already expanded (the model's processor `process` gives them). */
  ids: number[];
  /** Preprocessed images, one per image in the prompt. */
  pixelValues: ImageInput[];
  /** Most tokens to generate (EOS not counted when it stops the run). */
  maxNewTokens: number;
  /** Greedy when absent or temperature is 0. */
  sampling?: SamplingOptions;
  /** Token ids that end generation (not part of the output); default: the tokenizer's EOS token. */
  eosTokenIds?: number[];
  /** Strings that end generation as soon as the decoded text contains one. */
  stopStrings?: string[];
  tokenizer: Tokenizer;
  /** Receives the text as it is produced; the chunks concatenate to `text`. */
  onText?: (chunk: string) => void;
  interventions?: InterventionSpec;
  /** Record these tensors of the prompt's forward (prefill), e.g. attention patterns at the last prompt row. */
  capture?: CaptureSpec;
  /** Reuse the prefix of an earlier run of the same prompt (VlmModel.run's `reuse`; AdaptVis's second pass). */
  reuse?: PrefixHandle;
  /** KV cache room for this many generated tokens at least (VlmModel.run's `reserveNewTokens`). */
  reserveNewTokens?: number;
}

export type StopReason = 'eos' | 'stop_string' | 'max_tokens';

export interface GenerateResult {
  /** Generated text, special tokens skipped, cut before a stop string. */
  text: string;
  /** Generated token ids (EOS excluded; the token completing a stop string included). */
  tokenIds: number[];
  stoppedBy: StopReason;
  timings: { prefillMs: number; decodeMs: number; decodeSteps: number; tokensPerSecond: number };
  /** What `capture` asked for, from the prefill (absent without `capture`). */
  captured?: Pick<RunResult, 'logits' | 'pattern' | 'z' | 'residual' | 'imageFeatures'>;
  /** This run's prefix, for a later run's `reuse`. */
  prefix?: PrefixHandle;
  /** What was reused of `reuse` (absent without it). */
  reuse?: ReuseInfo;
}

export async function generate(model: VlmModel, args: GenerateArgs): Promise<GenerateResult> {
  const { tokenizer, maxNewTokens } = args;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new Error(`maxNewTokens must be a non-negative integer, got ${maxNewTokens}`);
  const sampling = validateSampling(args.sampling);
  const stops = args.stopStrings ?? [];
  stops.forEach((s, i) => {
    if (typeof s !== 'string' || s.length === 0) throw new Error(`stop string ${i} is empty; give at least one character`);
  });
  const eos = args.eosTokenIds ?? (tokenizer.eosTokenId != null ? [tokenizer.eosTokenId] : []);

  const sampler = createSampler(sampling);
  const onGpu = sampler.greedy && sampling.repetitionPenalty === undefined;
  const prompt = args.ids;

  const streamer = new TextStreamer(tokenizer, { skipSpecialTokens: true });
  const generated: number[] = [];
  let emitted = ''; // passed to onText
  let pending = ''; // streamed but held back: it could be the start of a stop string
  let cut = null as string | null; // the final text once a stop string appeared
  const emit = (s: string) => {
    if (!s) return;
    emitted += s;
    args.onText?.(s);
  };

  const onToken = (id: number) => {
    generated.push(id);
    pending += streamer.push(id);
    if (stops.length === 0) {
      emit(pending);
      pending = '';
      return;
    }
    // A trailing U+FFFD may be an unfinished multi-byte character that the next token completes.
    const full = tokenizer.decode(generated, { skipSpecialTokens: true });
    const at = firstStop(full.replace(/\uFFFD+$/, ''), stops);
    if (at >= 0) {
      cut = full.slice(0, at);
      if (cut.startsWith(emitted)) emit(cut.slice(emitted.length));
      pending = '';
      return;
    }
    const hold = Math.min(pending.length, heldBack(emitted + pending, stops));
    emit(pending.slice(0, pending.length - hold));
    pending = pending.slice(pending.length - hold);
  };

  const r = await model.run({
    ids: prompt,
    pixelValues: args.pixelValues,
    interventions: args.interventions,
    capture: args.capture,
    reuse: args.reuse,
    reserveNewTokens: args.reserveNewTokens,
    maxNewTokens,
    stopTokens: eos,
    onToken,
    stopAfter: () => cut !== null,
    chooseToken: onGpu ? undefined : (logits, gen) => sampler.choose(logits, gen, prompt),
  });

  const tokenIds = r.tokens ?? [];
  let text: string;
  let stoppedBy: StopReason;
  if (cut !== null) {
    text = cut;
    stoppedBy = 'stop_string';
  } else {
    text = tokenizer.decode(tokenIds, { skipSpecialTokens: true });
    const at = stops.length ? firstStop(text, stops) : -1;
    if (at >= 0) {
      // Only possible when the stop string ends in U+FFFD from bytes that never formed a character.
      text = text.slice(0, at);
      if (text.startsWith(emitted)) emit(text.slice(emitted.length));
      stoppedBy = 'stop_string';
    } else {
      emit(pending + streamer.flush());
      stoppedBy = tokenIds.length < maxNewTokens ? 'eos' : 'max_tokens';
    }
  }
  const { prefillMs, decodeMs, decodeSteps } = r.timings;
  return {
    text,
    tokenIds,
    stoppedBy,
    timings: { prefillMs, decodeMs, decodeSteps, tokensPerSecond: decodeSteps > 0 && decodeMs > 0 ? (decodeSteps * 1000) / decodeMs : 0 },
    ...(args.capture ? { captured: { logits: r.logits, pattern: r.pattern, z: r.z, residual: r.residual, imageFeatures: r.imageFeatures } } : {}),
    prefix: r.prefix,
    ...(r.reuse ? { reuse: r.reuse } : {}),
  };
}

/** Index of the earliest stop string in `text`, or -1. */
export function firstStop(text: string, stops: readonly string[]): number {
  let best = -1;
  for (const s of stops) {
    const i = text.indexOf(s);
    if (i >= 0 && (best < 0 || i < best)) best = i;
  }
  return best;
}

/** Length of the longest suffix of `text` that is a proper prefix of a stop string (it may yet become one). */
export function heldBack(text: string, stops: readonly string[]): number {
  let hold = 0;
  for (const s of stops) {
    for (let n = Math.min(s.length - 1, text.length); n > hold; n--) {
      if (text.endsWith(s.slice(0, n))) {
        hold = n;
        break;
      }
    }
  }
  return hold;
}
