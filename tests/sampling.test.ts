// Sampling on the CPU: greedy, seeds, temperature, top-k, top-p (the nucleus and its frequencies), the
// repetition penalty formula and option validation; generate()'s stop and streaming logic with a scripted
// model. No GPU.

import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  applyRepetitionPenalty,
  createRng,
  createSampler,
  samplingDistribution,
  SamplingError,
  validateSampling,
  type SamplingOptions,
} from '../src/generate/sampling.js';
import { firstStop, generate, heldBack, type GenerateArgs } from '../src/generate/generate.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { nodeFolder } from '../src/io/checkpoint.js';
import type { LlavaModel, RunInput, RunResult } from '../src/models/llava.js';
import { rng } from './helpers/gpu.js';
import { REPO_ROOT } from './helpers/fixtures.js';

const logitsOf = (xs: number[]) => Float32Array.from(xs);
const randomLogits = (n: number, seed: number) => {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => (r() * 2 - 1) * 4);
};
const argmaxOf = (a: ArrayLike<number>) => Array.from(a).reduce((b, x, i, arr) => (x > arr[b] ? i : b), 0);
/** Logits whose softmax is exactly `probs`. */
const fromProbs = (probs: number[]) => logitsOf(probs.map((p) => (p > 0 ? Math.log(p) : -Infinity)));

function draws(opts: SamplingOptions, logits: Float32Array, n: number, prompt: number[] = []): number[] {
  const s = createSampler(opts);
  return Array.from({ length: n }, () => s.choose(logits, [], prompt));
}

function frequencies(samples: number[], vocab: number): number[] {
  const f = new Array<number>(vocab).fill(0);
  for (const x of samples) f[x]++;
  return f.map((c) => c / samples.length);
}

describe('greedy', () => {
  it('is the argmax, with or without temperature 0', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const l = randomLogits(100, seed);
      for (const opts of [{}, { temperature: 0 }, { temperature: 0, topK: 3, topP: 0.5, seed: 7 }]) {
        const s = createSampler(opts);
        expect(s.greedy).toBe(true);
        expect(s.choose(l, [])).toBe(argmaxOf(l));
      }
    }
  });

  it('takes the first of tied maxima and handles -Infinity', () => {
    expect(createSampler({}).choose(logitsOf([1, 3, 3, -Infinity]), [])).toBe(1);
    expect(createSampler({}).choose(logitsOf([-Infinity, -Infinity, -5]), [])).toBe(2);
  });

  it('is the argmax after the repetition penalty', () => {
    const l = logitsOf([2.0, 1.9, -1, 0.5]);
    expect(createSampler({}).choose(l, [])).toBe(0);
    // 2.0 / 1.2 = 1.667 < 1.9: token 0, seen in the prompt, loses to token 1.
    expect(createSampler({ repetitionPenalty: 1.2 }).choose(l, [], [0])).toBe(0 + 1);
    // Seen among the generated tokens counts too.
    expect(createSampler({ repetitionPenalty: 1.2 }).choose(l, [0])).toBe(1);
  });

  it('refuses NaN logits', () => {
    expect(() => createSampler({}).choose(logitsOf([0, NaN, 1]), [])).toThrow(/NaN/);
    expect(() => createSampler({ temperature: 1, seed: 1 }).choose(logitsOf([0, NaN, 1]), [])).toThrow(/NaN/);
  });
});

describe('seeded sampling', () => {
  const l = randomLogits(50, 3);

  it('the same seed reproduces the same draws', () => {
    const a = draws({ temperature: 1, seed: 42 }, l, 200);
    const b = draws({ temperature: 1, seed: 42 }, l, 200);
    expect(a).toEqual(b);
    expect(new Set(a).size).toBeGreaterThan(5); // it is really sampling
  });

  it('different seeds give different draws', () => {
    const runs = [0, 1, 2, 42, 2 ** 32, 2 ** 32 + 1].map((seed) => draws({ temperature: 1, seed }, l, 100).join(','));
    expect(new Set(runs).size).toBe(runs.length);
  });

  it('without a seed, two samplers differ', () => {
    expect(draws({ temperature: 1 }, l, 100)).not.toEqual(draws({ temperature: 1 }, l, 100));
  });

  it('the PRNG gives uniform floats in [0, 1)', () => {
    const r = createRng(123);
    const xs = Array.from({ length: 20000 }, r);
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.01);
    const buckets = frequencies(xs.map((x) => Math.floor(x * 10)), 10);
    for (const b of buckets) expect(Math.abs(b - 0.1)).toBeLessThan(0.01);
  });
});

describe('temperature', () => {
  it('tends to greedy as it goes to 0', () => {
    for (let seed = 1; seed <= 10; seed++) {
      const l = randomLogits(64, seed);
      const samples = draws({ temperature: 1e-4, seed }, l, 200);
      expect(new Set(samples)).toEqual(new Set([argmaxOf(l)]));
    }
  });

  it('sampled frequencies follow softmax(logits / T)', () => {
    const l = logitsOf([1, 0.5, 0, -1]);
    for (const T of [0.5, 1, 2]) {
      const e = Array.from(l, (x) => Math.exp(x / T));
      const z = e.reduce((a, b) => a + b, 0);
      const f = frequencies(draws({ temperature: T, seed: 9 }, l, 20000), 4);
      e.forEach((x, i) => expect(Math.abs(f[i] - x / z)).toBeLessThan(0.015));
    }
  });
});

describe('top-k', () => {
  it('k = 1 equals greedy', () => {
    for (let seed = 1; seed <= 10; seed++) {
      const l = randomLogits(64, seed);
      expect(new Set(draws({ temperature: 1.5, topK: 1, seed }, l, 100))).toEqual(new Set([argmaxOf(l)]));
    }
  });

  it('keeps the k most likely tokens (ties with the k-th kept), renormalised', () => {
    const d = samplingDistribution(logitsOf([0, 3, 1, 2, 2, -1]), { topK: 3 });
    expect(d.ids).toEqual([1, 3, 4]); // 3, then the tie 2, 2 at the k-th place
    expect(samplingDistribution(logitsOf([0, 3, 1, 2, 2, -1]), { topK: 2 }).ids).toEqual([1, 3, 4]);
    expect(d.probs.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
    const f = frequencies(draws({ temperature: 1, topK: 2, seed: 5 }, logitsOf([0, 3, 1, 2.5, -1]), 2000), 5);
    expect(f[0] + f[2] + f[4]).toBe(0);
  });
});

describe('top-p', () => {
  // A hand-made distribution: the nucleus for p = 0.75 is {1, 3, 0} (0.4 + 0.25 + 0.15 = 0.8 >= 0.75; the
  // first two alone give 0.65 < 0.75).
  const probs = [0.15, 0.4, 0.1, 0.25, 0.06, 0.04];
  const l = fromProbs(probs);

  it('keeps the minimal nucleus', () => {
    expect(samplingDistribution(l, { topP: 0.75 }).ids).toEqual([0, 1, 3]);
    expect(samplingDistribution(l, { topP: 0.64 }).ids).toEqual([1, 3]);
    expect(samplingDistribution(l, { topP: 0.3 }).ids).toEqual([1]);
    expect(samplingDistribution(l, { topP: 0.01 }).ids).toEqual([1]); // always at least one token
    expect(samplingDistribution(l, { topP: 1 }).ids).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('never samples outside the nucleus, and samples inside it in proportion (2000 draws)', () => {
    const n = 2000;
    const f = frequencies(draws({ temperature: 1, topP: 0.75, seed: 11 }, l, n), probs.length);
    expect(f[2]).toBe(0);
    expect(f[4]).toBe(0);
    expect(f[5]).toBe(0);
    const z = 0.15 + 0.4 + 0.25;
    for (const i of [0, 1, 3]) {
      const p = probs[i] / z;
      // 4 standard deviations of a frequency over n draws.
      expect(Math.abs(f[i] - p)).toBeLessThan(4 * Math.sqrt((p * (1 - p)) / n));
    }
  });

  it('applies after temperature and top-k, as Hugging Face does', () => {
    // Temperature 0.5 squares the probabilities: 0.4^2 : 0.25^2 : 0.15^2 ... -> the top one alone is > 0.6.
    expect(samplingDistribution(l, { temperature: 0.5, topP: 0.6 }).ids).toEqual([1]);
    expect(samplingDistribution(l, { temperature: 1, topP: 0.6 }).ids).toEqual([1, 3]);
    // Top-k 2 leaves {1, 3} renormalised to 0.615, 0.385: top-p 0.6 then keeps only token 1.
    expect(samplingDistribution(l, { topK: 2, topP: 0.6 }).ids).toEqual([1]);
  });
});

describe('repetition penalty', () => {
  it('divides positive and multiplies negative logits of seen tokens, once each', () => {
    const s = Float64Array.from([2, -2, 0.5, -0.5, 1]);
    applyRepetitionPenalty(s, [0, 1, 1, 3, 0, 99, -1], 2);
    expect(Array.from(s)).toEqual([1, -4, 0.5, -1, 1]);
  });

  it('penalty < 1 encourages seen tokens', () => {
    const s = Float64Array.from([2, -2]);
    applyRepetitionPenalty(s, [0, 1], 0.5);
    expect(Array.from(s)).toEqual([4, -1]);
  });

  it('is applied before temperature in sampling', () => {
    const l = logitsOf([2, 1.5]);
    const d = samplingDistribution(Float64Array.from([2 / 4, 1.5]), { temperature: 0.5 });
    const expected = Math.exp(1.5 / 0.5) / (Math.exp(0.5 / 0.5) + Math.exp(1.5 / 0.5));
    expect(d.probs[1]).toBeCloseTo(expected, 12);
    const f = frequencies(draws({ temperature: 0.5, repetitionPenalty: 4, seed: 3 }, l, 4000, [0]), 2);
    expect(Math.abs(f[1] - expected)).toBeLessThan(0.03);
  });
});

describe('validation', () => {
  const bad: [SamplingOptions, RegExp][] = [
    [{ temperature: -0.1 }, /temperature must be a number >= 0/],
    [{ temperature: NaN }, /temperature/],
    [{ topK: 0 }, /top_k must be an integer >= 1/],
    [{ topK: 2.5 }, /top_k must be an integer >= 1/],
    [{ topP: 0 }, /top_p must be in \(0, 1\]/],
    [{ topP: 1.5 }, /top_p must be in \(0, 1\]/],
    [{ repetitionPenalty: 0 }, /repetition_penalty must be a number > 0/],
    [{ repetitionPenalty: -1 }, /repetition_penalty/],
    [{ seed: 1.5 }, /seed must be an integer/],
  ];
  for (const [opts, message] of bad) {
    it(`refuses ${JSON.stringify(opts)}`, () => {
      expect(() => createSampler(opts)).toThrow(SamplingError);
      expect(() => createSampler(opts)).toThrow(message);
    });
  }

  it('accepts the edges and normalises no-op settings away', () => {
    expect(validateSampling({ temperature: 0, topK: 1, topP: 1, repetitionPenalty: 1, seed: 0 })).toEqual({
      temperature: undefined,
      topK: 1,
      topP: undefined,
      repetitionPenalty: undefined,
      seed: 0,
    });
  });
});

describe('stop-string helpers', () => {
  it('finds the earliest stop string', () => {
    expect(firstStop('abc. def\n', ['\n', '.'])).toBe(3);
    expect(firstStop('abc', ['x'])).toBe(-1);
  });

  it('holds back a tail that could still become a stop string', () => {
    expect(heldBack('hello wo', ['world'])).toBe(2);
    expect(heldBack('hello', ['world'])).toBe(0);
    expect(heldBack('a##', ['###', 'x'])).toBe(2);
    expect(heldBack('abc', ['c'])).toBe(0); // a one-character stop string is found, never held
  });
});

// generate()'s control flow on the CPU: a scripted stand-in for LlavaModel.run (it follows the run contract:
// stopTokens end the run unreported, onToken per token, stopAfter after it) and the shipped tokenizer.
describe('generate() with a scripted model', () => {
  const tokenizer = Tokenizer.fromFolder(nodeFolder(join(REPO_ROOT, 'weights/tiny-llava')));

  function scripted(tokens: number[]) {
    const seen: { chooseToken: boolean; stopTokens: number[] }[] = [];
    const model = {
      seen,
      async run(input: RunInput): Promise<RunResult> {
        seen.push({ chooseToken: input.chooseToken !== undefined, stopTokens: input.stopTokens ?? [] });
        const out: number[] = [];
        for (const t of tokens) {
          if (out.length >= (input.maxNewTokens ?? 0)) break;
          if (input.stopTokens?.includes(t)) break;
          out.push(t);
          input.onToken?.(t);
          if (input.stopAfter?.(out)) break;
        }
        return { tokens: out, pattern: [], residual: [], timings: { prefillMs: 1, decodeMs: 4, decodeSteps: Math.max(0, out.length - 1) } };
      },
    };
    return model as typeof model & LlavaModel;
  }

  async function gen(text: string, extra: Partial<GenerateArgs> = {}, tail: number[] = []) {
    const tok = await tokenizer;
    const ids = [...tok.encode(text, { addSpecialTokens: false }), ...tail];
    const model = scripted(ids);
    const chunks: string[] = [];
    const r = await generate(model, { ids: [1, 5], pixelValues: [], maxNewTokens: 100, tokenizer: tok, onText: (c) => chunks.push(c), ...extra });
    return { r, chunks, ids, seen: model.seen[0] };
  }

  it('streams the whole text, stops at EOS (left out) and reports max_tokens', async () => {
    const a = await gen('the blue tree is left of the car', {}, [2, 40, 41]);
    expect(a.r.text).toBe('the blue tree is left of the car');
    expect(a.chunks.join('')).toBe(a.r.text);
    expect(a.chunks.length).toBeGreaterThan(1);
    expect(a.r.stoppedBy).toBe('eos');
    expect(a.r.tokenIds).toEqual(a.ids.slice(0, -3));
    expect(a.seen).toEqual({ chooseToken: false, stopTokens: [2] }); // greedy on the GPU, EOS from the tokenizer
    expect(a.r.timings.tokensPerSecond).toBeCloseTo((a.r.tokenIds.length - 1) * 250, 6);
    const m = await gen('the blue tree is left of the car', { maxNewTokens: 3 });
    expect(m.r.stoppedBy).toBe('max_tokens');
    expect(m.r.tokenIds).toEqual(m.ids.slice(0, 3));
    expect(m.chunks.join('')).toBe(m.r.text);
  });

  it('cuts text and stream before a stop string, even one spanning tokens or inside one', async () => {
    for (const stop of [' blue', 'e bl', 'lue tr', 'ree', ' car']) {
      const g = await gen('the blue tree is left of the car', { stopStrings: ['zzz', stop] });
      const full = 'the blue tree is left of the car';
      expect(g.r.text).toBe(full.slice(0, full.indexOf(stop)));
      expect(g.chunks.join('')).toBe(g.r.text);
      expect(g.r.stoppedBy).toBe('stop_string');
      const decoded = (await tokenizer).decode(g.r.tokenIds);
      expect(decoded).toContain(stop); // the token completing the stop string is kept
      expect((await tokenizer).decode(g.r.tokenIds.slice(0, -1))).not.toContain(stop);
    }
  });

  it('releases held-back text that did not become a stop string', async () => {
    const g = await gen('the tree is left of the tree', { stopStrings: ['tree!', 'left side'] });
    expect(g.r.stoppedBy).toBe('eos');
    expect(g.r.text).toBe('the tree is left of the tree');
    expect(g.chunks.join('')).toBe(g.r.text);
  });

  it('handles multi-byte characters from byte-fallback tokens', async () => {
    const g = await gen('a café → the tree', { stopStrings: ['→'] });
    expect(g.r.text).toBe('a café ');
    expect(g.chunks.join('')).toBe('a café ');
    expect(g.chunks.some((c) => c.includes('\uFFFD'))).toBe(false);
  });

  it('uses the CPU sampler for sampling and for the repetition penalty', async () => {
    expect((await gen('the tree', { sampling: { temperature: 0.7, seed: 1 } })).seen.chooseToken).toBe(true);
    expect((await gen('the tree', { sampling: { repetitionPenalty: 1.2 } })).seen.chooseToken).toBe(true);
    expect((await gen('the tree', { sampling: { repetitionPenalty: 1, temperature: 0 } })).seen.chooseToken).toBe(false);
    expect((await gen('the tree', { eosTokenIds: [7, 8] })).seen.stopTokens).toEqual([7, 8]);
  });

  it('refuses bad arguments', async () => {
    await expect(gen('x', { maxNewTokens: -1 })).rejects.toThrow(/maxNewTokens/);
    await expect(gen('x', { stopStrings: [''] })).rejects.toThrow(/stop string 0 is empty/);
    await expect(gen('x', { sampling: { topP: 2 } })).rejects.toThrow(/top_p/);
  });
});
