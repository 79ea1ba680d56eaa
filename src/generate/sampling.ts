// Next-token choice from a logits row with Hugging Face `generate` semantics and order: repetition penalty
// (RepetitionPenaltyLogitsProcessor over prompt + generated ids), then temperature, top-k and top-p
// (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper), then a draw from the softmax with a seeded
// PRNG so that a seed reproduces a run. Greedy (temperature 0 or absent) is the argmax after the penalty.

export interface SamplingOptions {
  /** Softmax temperature; 0 or absent = greedy (argmax). */
  temperature?: number;
  /** Keep only the K most likely tokens (ties with the K-th are kept, as in Hugging Face). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probabilities sum to at least P (0 < P <= 1). */
  topP?: number;
  /** Hugging Face repetition penalty (> 0; 1 = none): seen tokens' logits l become l / p (l > 0) or l * p. */
  repetitionPenalty?: number;
  /** PRNG seed: the same seed, options and logits give the same tokens. Random when absent. */
  seed?: number;
}

export interface Sampler {
  /** The next token id from one logits row; `prompt` and `generated` feed the repetition penalty. */
  choose(logits: Float32Array, generated: readonly number[], prompt?: readonly number[]): number;
  /** True when the choice is the argmax (no randomness). */
  readonly greedy: boolean;
}

export class SamplingError extends Error {
  override name = 'SamplingError';
}

/** Checks the options and returns them normalised (undefined where a setting has no effect). */
export function validateSampling(opts: SamplingOptions = {}): SamplingOptions {
  const { temperature, topK, topP, repetitionPenalty, seed } = opts;
  const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
  if (temperature !== undefined && (!finite(temperature) || temperature < 0)) {
    throw new SamplingError(`temperature must be a number >= 0 (0 = greedy), got ${temperature}`);
  }
  if (topK !== undefined && (!finite(topK) || !Number.isInteger(topK) || topK < 1)) {
    throw new SamplingError(`top_k must be an integer >= 1, got ${topK}`);
  }
  if (topP !== undefined && (!finite(topP) || topP <= 0 || topP > 1)) {
    throw new SamplingError(`top_p must be in (0, 1], got ${topP}`);
  }
  if (repetitionPenalty !== undefined && (!finite(repetitionPenalty) || repetitionPenalty <= 0)) {
    throw new SamplingError(`repetition_penalty must be a number > 0 (1 = no penalty), got ${repetitionPenalty}`);
  }
  if (seed !== undefined && (!finite(seed) || !Number.isSafeInteger(seed))) {
    throw new SamplingError(`seed must be an integer, got ${seed}`);
  }
  return {
    temperature: temperature || undefined,
    topK,
    topP: topP === 1 ? undefined : topP,
    repetitionPenalty: repetitionPenalty === 1 ? undefined : repetitionPenalty,
    seed,
  };
}

/** A sampler for the options (validated first; throws SamplingError on a bad setting). */
export function createSampler(options: SamplingOptions = {}): Sampler {
  const opts = validateSampling(options);
  const greedy = opts.temperature === undefined;
  const rng = createRng(opts.seed ?? Math.floor(Math.random() * 2 ** 32));
  return {
    greedy,
    choose(logits, generated, prompt = []) {
      if (logits.length === 0) throw new SamplingError('empty logits row');
      const scores = Float64Array.from(logits);
      if (opts.repetitionPenalty !== undefined) applyRepetitionPenalty(scores, [...prompt, ...generated], opts.repetitionPenalty);
      if (greedy) return argmax(scores);
      return sampleFrom(scores, opts, rng);
    },
  };
}

/** Hugging Face RepetitionPenaltyLogitsProcessor, in place: each distinct seen id once. */
export function applyRepetitionPenalty(scores: Float64Array | Float32Array, ids: Iterable<number>, penalty: number): void {
  const seen = new Set<number>();
  for (const id of ids) {
    if (seen.has(id) || id < 0 || id >= scores.length) continue;
    seen.add(id);
    const s = scores[id];
    scores[id] = s < 0 ? s * penalty : s / penalty;
  }
}

/** Index of the largest score (the first one on ties); throws on NaN. */
export function argmax(scores: ArrayLike<number>): number {
  let best = 0;
  for (let i = 0; i < scores.length; i++) {
    const s = scores[i];
    if (Number.isNaN(s)) throw new SamplingError(`logits contain NaN (token ${i})`);
    if (s > scores[best]) best = i;
  }
  return best;
}

/**
 * The probability of each token after temperature, top-k and top-p, as [ids, probs] over the tokens that
 * remain (probs sum to 1). Exposed for tests and for callers that want the distribution itself.
 */
export function samplingDistribution(scores: ArrayLike<number>, opts: SamplingOptions): { ids: number[]; probs: number[] } {
  const t = opts.temperature ?? 1;
  let ids: number[] = [];
  let max = -Infinity;
  for (let i = 0; i < scores.length; i++) {
    const s = scores[i];
    if (Number.isNaN(s)) throw new SamplingError(`logits contain NaN (token ${i})`);
    if (s === -Infinity) continue;
    if (s === Infinity) throw new SamplingError(`logits contain +Infinity (token ${i})`);
    ids.push(i);
    if (s > max) max = s;
  }
  if (ids.length === 0) throw new SamplingError('every token has a logit of -Infinity');
  const scaled = (i: number) => scores[i] / t;

  // Top-k: drop tokens scoring below the k-th largest (ties with it stay, as torch.topk's threshold does).
  if (opts.topK !== undefined && opts.topK < ids.length) {
    const sorted = ids.map(scaled).sort((a, b) => b - a);
    const kth = sorted[opts.topK - 1];
    ids = ids.filter((i) => scaled(i) >= kth);
  }

  // Softmax over what is left (max subtracted for range).
  const m = max / t;
  let probs = ids.map((i) => Math.exp(scaled(i) - m));
  let sum = probs.reduce((a, b) => a + b, 0);
  probs = probs.map((p) => p / sum);

  // Top-p: the smallest most-likely prefix whose cumulative probability reaches top_p (at least one token).
  if (opts.topP !== undefined && opts.topP < 1) {
    const order = ids.map((_, j) => j).sort((a, b) => probs[b] - probs[a] || ids[a] - ids[b]);
    const keep: number[] = [];
    let cum = 0;
    for (const j of order) {
      keep.push(j);
      cum += probs[j];
      // A relative 1e-12 slack so a nucleus that sums to top_p exactly is not widened by rounding.
      if (cum >= opts.topP * (1 - 1e-12)) break;
    }
    keep.sort((a, b) => a - b);
    ids = keep.map((j) => ids[j]);
    probs = keep.map((j) => probs[j]);
    sum = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((p) => p / sum);
  }
  return { ids, probs };
}

function sampleFrom(scores: Float64Array, opts: SamplingOptions, rng: () => number): number {
  const { ids, probs } = samplingDistribution(scores, opts);
  const u = rng();
  let cum = 0;
  for (let j = 0; j < ids.length; j++) {
    cum += probs[j];
    if (u < cum) return ids[j];
  }
  return ids[ids.length - 1]; // u within rounding of 1
}

/**
 * A seeded PRNG: xoshiro128** with its state filled by splitmix32 from the seed's low and high 32 bits.
 * Returns floats in [0, 1) with 53 random bits.
 */
export function createRng(seed: number): () => number {
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 2 ** 32) >>> 0;
  // Two splitmix32 streams, one per half of the seed: distinct seeds give distinct states.
  const splitmix = (state: number) => () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  const a = splitmix(lo);
  const b = splitmix(hi ^ 0x5bd1e995);
  const s = new Uint32Array([a(), a(), b(), b()]);
  if (!(s[0] | s[1] | s[2] | s[3])) s[0] = 1;
  const next = () => {
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  };
  return () => ((next() >>> 5) * 2 ** 26 + (next() >>> 6)) / 2 ** 53;
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
