// Head-intervention experiments (src/interp/ablation.ts, with heads.ts, statistics.ts, store-vectors.ts and
// ablation-spec.ts): seeded random head draws, the t distribution (regularised incomplete beta against closed forms
// and a numeric integration), Welch / one-sample t-tests, intervention specs, mean vectors and steering directions
// on a synthetic store (hand computations), probes.json parsing, the experiment's bookkeeping with a stand-in
// scorer, and runAblation on weights/tiny-llava (random weights: the accuracies are noise there, so structure,
// determinism and the random-head exclusion are what is checked).

import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { type AblationProbes, planAblation, probesFromJson, runAblation } from '../src/interp/ablation.js';
import { buildIntervention } from '../src/interp/ablation-spec.js';
import { type HeadRef, headKey, randomHeads } from '../src/interp/heads.js';
import { regularizedIncompleteBeta, sampleStd, studentTwoSidedP, welchTTest } from '../src/interp/statistics.js';
import { type AblationStore, meanVectors, steeringDirections } from '../src/interp/store-vectors.js';
import { SpecError, type ModelDims } from '../src/spec/spec.js';
import { summarize, evaluate, type EvalExample, type EvalOptions } from '../src/eval/evaluate.js';
import { readQuestions, type EvalItem } from '../src/eval/dataset.js';
import { LlavaModel } from '../src/models/llava.js';
import type { VlmModel } from '../src/models/vlm.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { nodeFolder } from '../src/io/checkpoint.js';
import { gpuContext, rng } from './helpers/gpu.js';
import { REPO_ROOT } from './helpers/fixtures.js';
import { writeSyntheticSet } from './helpers/synthetic-data.js';

const work = mkdtempSync(join(tmpdir(), 'vlmscope-ablation-'));
const sorted = (hs: HeadRef[]) => [...hs].sort((a, b) => a.layer - b.layer || a.head - b.head);

describe('randomHeads', () => {
  it('draws k distinct heads outside the excluded set, the same for the same seed', () => {
    const exclude = new Set(['0:1', '2:3', '3:0']);
    for (let seed = 0; seed < 20; seed++) {
      const hs = randomHeads(5, exclude, 4, 6, seed);
      expect(hs).toHaveLength(5);
      expect(new Set(hs.map(headKey)).size).toBe(5);
      for (const h of hs) {
        expect(exclude.has(headKey(h))).toBe(false);
        expect(h.layer).toBeGreaterThanOrEqual(0);
        expect(h.layer).toBeLessThan(4);
        expect(h.head).toBeGreaterThanOrEqual(0);
        expect(h.head).toBeLessThan(6);
      }
      expect(hs).toEqual(sorted(hs));
      expect(randomHeads(5, new Set(exclude), 4, 6, seed)).toEqual(hs);
    }
    const draws = new Set(Array.from({ length: 20 }, (_, s) => JSON.stringify(randomHeads(5, exclude, 4, 6, s))));
    expect(draws.size).toBeGreaterThan(10);
  });

  it('is uniform enough: every allowed head is drawn, no excluded one ever', () => {
    const exclude = new Set(['0:0', '1:1']);
    const counts = new Map<string, number>();
    for (let s = 0; s < 2000; s++) for (const h of randomHeads(2, exclude, 2, 4, s)) counts.set(headKey(h), (counts.get(headKey(h)) ?? 0) + 1);
    expect([...counts.keys()].sort()).toEqual(['0:1', '0:2', '0:3', '1:0', '1:2', '1:3']);
    // 2000 draws of 2 of 6 heads: 666.7 each on average.
    for (const c of counts.values()) expect(Math.abs(c - 666.7)).toBeLessThan(120);
  });

  it('takes every allowed head when k is all of them, and refuses more', () => {
    expect(randomHeads(3, new Set(['0:1']), 2, 2, 9)).toEqual([
      { layer: 0, head: 0 },
      { layer: 1, head: 0 },
      { layer: 1, head: 1 },
    ]);
    expect(randomHeads(0, new Set(), 2, 2, 1)).toEqual([]);
    expect(() => randomHeads(4, new Set(['0:1']), 2, 2, 9)).toThrow(/cannot draw 4 heads: only 3 of the 4 heads/);
    expect(() => randomHeads(1.5, new Set(), 2, 2, 0)).toThrow(/k must be a non-negative integer/);
  });
});

/** Two-sided Student t p-value by numeric integration: x = sqrt(nu) tan(theta) turns the density into cos^(nu-1). */
function tPValueReference(t: number, nu: number): number {
  const simpson = (f: (x: number) => number, a: number, b: number, n: number) => {
    const h = (b - a) / n;
    let s = f(a) + f(b);
    for (let i = 1; i < n; i++) s += (i % 2 ? 4 : 2) * f(a + i * h);
    return (s * h) / 3;
  };
  const f = (th: number) => Math.cos(th) ** (nu - 1);
  const th = Math.atan(Math.abs(t) / Math.sqrt(nu));
  return simpson(f, th, Math.PI / 2, 200_000) / simpson(f, 0, Math.PI / 2, 200_000);
}

describe('t distribution and t-tests', () => {
  it('regularised incomplete beta matches closed forms', () => {
    expect(regularizedIncompleteBeta(0.5, 2, 3)).toBeCloseTo(11 / 16, 14);
    for (const x of [0.01, 0.3, 0.77, 0.999]) {
      expect(regularizedIncompleteBeta(x, 1, 1)).toBeCloseTo(x, 14);
      expect(regularizedIncompleteBeta(x, 2, 2)).toBeCloseTo(3 * x * x - 2 * x ** 3, 13);
      expect(regularizedIncompleteBeta(x, 0.5, 0.5)).toBeCloseTo((2 / Math.PI) * Math.asin(Math.sqrt(x)), 12);
      expect(regularizedIncompleteBeta(x, 3, 1)).toBeCloseTo(x ** 3, 13);
    }
    expect(regularizedIncompleteBeta(0, 2, 5)).toBe(0);
    expect(regularizedIncompleteBeta(1, 2, 5)).toBe(1);
    expect(() => regularizedIncompleteBeta(1.2, 2, 5)).toThrow(/x must be in \[0, 1\]/);
  });

  it('two-sided p-values match known values, closed forms for df 1 and 2, and a numeric integration', () => {
    expect(studentTwoSidedP(2.0, 10)).toBeCloseTo(0.0734, 4);
    expect(Math.abs(studentTwoSidedP(2.0, 10) - 0.07338803)).toBeLessThan(1e-7);
    expect(studentTwoSidedP(2.228, 10)).toBeCloseTo(0.05, 3); // the 97.5% quantile of t(10) is 2.228
    expect(studentTwoSidedP(-2.0, 10)).toBe(studentTwoSidedP(2.0, 10));
    for (const t of [0.1, 0.9, 2.5, 12]) {
      expect(studentTwoSidedP(t, 1)).toBeCloseTo(1 - (2 / Math.PI) * Math.atan(t), 12);
      expect(studentTwoSidedP(t, 2)).toBeCloseTo(1 - t / Math.sqrt(2 + t * t), 12);
    }
    const ref = tPValueReference(3.5, 4.2);
    expect(ref).toBeGreaterThan(0.01);
    expect(ref).toBeLessThan(0.04);
    expect(Math.abs(studentTwoSidedP(3.5, 4.2) - ref)).toBeLessThan(1e-9);
    expect(Math.abs(ref - 0.02299374245547738)).toBeLessThan(1e-9); // 2 * scipy.stats.t.sf(3.5, 4.2), for the record
    for (const [t, nu] of [
      [0.7, 2.5],
      [1.3, 7.7],
      [5.0, 3.3],
      [2.0, 10],
    ]) {
      expect(Math.abs(studentTwoSidedP(t, nu) - tPValueReference(t, nu))).toBeLessThan(1e-9);
    }
    expect(studentTwoSidedP(0, 3)).toBe(1);
    expect(studentTwoSidedP(Infinity, 3)).toBe(0);
    expect(studentTwoSidedP(NaN, 3)).toBeNaN();
  });

  it('one value against a sample is the one-sample t-test with df n - 1', () => {
    const random = [0.5, 0.6, 0.55, 0.45, 0.5];
    const m = random.reduce((a, b) => a + b) / 5;
    const s = Math.sqrt(random.reduce((a, x) => a + (x - m) ** 2, 0) / 4);
    expect(sampleStd(random)).toBeCloseTo(s, 15);
    const r = welchTTest([0.2], random);
    expect(r.method).toBe('one_sample');
    expect(r.t).toBeCloseTo((0.2 - m) / (s / Math.sqrt(5)), 12);
    expect(r.df).toBeCloseTo(4, 12);
    expect(r.p).toBeCloseTo(studentTwoSidedP(r.t, 4), 14);
    expect(r.p).toBeLessThan(0.001);
  });

  it('Welch two-sample: t on the difference of means, Welch-Satterthwaite df', () => {
    const a = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4];
    const b = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4];
    const mean = (x: number[]) => x.reduce((p, q) => p + q) / x.length;
    const v = (x: number[]) => sampleStd(x) ** 2 / x.length;
    const r = welchTTest(a, b);
    expect(r.method).toBe('welch');
    expect(r.t).toBeCloseTo((mean(a) - mean(b)) / Math.sqrt(v(a) + v(b)), 12);
    expect(r.df).toBeCloseTo((v(a) + v(b)) ** 2 / (v(a) ** 2 / 14 + v(b) ** 2 / 14), 10);
    // Wikipedia's Welch example 1: t = -2.46, df = 24.98, p = 0.021.
    expect(r.t).toBeCloseTo(-2.46, 2);
    expect(r.df).toBeCloseTo(24.98, 1);
    expect(r.p).toBeCloseTo(0.021, 3);
  });

  it('handles degenerate samples', () => {
    expect(welchTTest([0.2], [0.5, 0.5, 0.5])).toMatchObject({ t: -Infinity, p: 0, df: 2 });
    expect(welchTTest([0.5], [0.5, 0.5, 0.5])).toMatchObject({ t: 0, p: 1 });
    const one = welchTTest([0.2], [0.5]);
    expect(one.t).toBeNaN();
    expect(one.p).toBeNaN();
    expect(() => welchTTest([], [1, 2])).toThrow(/at least one value/);
  });
});

const DIMS: ModelDims = { text: { layers: 2, heads: 3, headDim: 4 }, vision: { layers: 1, heads: 2, headDim: 8 } };

describe('buildIntervention', () => {
  const heads = [
    { layer: 0, head: 2 },
    { layer: 1, head: 0 },
  ];

  it('scale: head_scale entries with epsilon', () => {
    const spec = buildIntervention('scale', heads, { epsilon: 0.001 }, DIMS);
    expect(spec.headScale).toEqual([
      { tower: 'text', layer: 0, head: 2, scale: 0.001 },
      { tower: 'text', layer: 1, head: 0, scale: 0.001 },
    ]);
    expect(spec.meanAblate).toEqual([]);
    expect(spec.steer).toEqual([]);
    expect(spec.imageTemperature).toBeNull();
    expect(buildIntervention('scale', heads, {}, DIMS).headScale.map((e) => e.scale)).toEqual([0, 0]);
    expect(buildIntervention('scale', [{ layer: 0, head: 1 }], { tower: 'vision' }, DIMS).headScale).toEqual([{ tower: 'vision', layer: 0, head: 1, scale: 0 }]);
  });

  it('mean_ablate: the head vectors', () => {
    const means = new Map([
      ['0:2', new Float32Array([1, 2, 3, 4])],
      ['1:0', new Float32Array([-1, 0, 0.5, 2])],
    ]);
    const spec = buildIntervention('mean_ablate', heads, { means }, DIMS);
    expect(spec.meanAblate).toEqual([
      { tower: 'text', layer: 0, head: 2, mean: new Float32Array([1, 2, 3, 4]) },
      { tower: 'text', layer: 1, head: 0, mean: new Float32Array([-1, 0, 0.5, 2]) },
    ]);
    expect(spec.headScale).toEqual([]);
    expect(() => buildIntervention('mean_ablate', [...heads, { layer: 1, head: 1 }], { means }, DIMS)).toThrow(/no mean vector for head L1H1/);
  });

  it('steer: alpha, sigma, direction and queries', () => {
    const directions = new Map([
      ['0:2', { direction: new Float32Array([0.5, 0.5, 0.5, 0.5]), sigma: 0.7 }],
      ['1:0', { direction: new Float32Array([1, 0, 0, 0]), sigma: 2 }],
    ]);
    const spec = buildIntervention('steer', heads, { alpha: 0.1, directions, queries: 'last' }, DIMS);
    expect(spec.steer).toEqual([
      { tower: 'text', layer: 0, head: 2, alpha: 0.1, sigma: 0.7, direction: new Float32Array([0.5, 0.5, 0.5, 0.5]), queries: 'last' },
      { tower: 'text', layer: 1, head: 0, alpha: 0.1, sigma: 2, direction: new Float32Array([1, 0, 0, 0]), queries: 'last' },
    ]);
    expect(buildIntervention('steer', heads, { directions }, DIMS).steer.map((e) => [e.alpha, e.queries])).toEqual([
      [0.1, 'all'],
      [0.1, 'all'],
    ]);
  });

  it('refuses repeated heads, heads outside the tower and vectors of the wrong length', () => {
    expect(() => buildIntervention('scale', [heads[0], heads[0]], {}, DIMS)).toThrow(/head L0H2 is listed twice/);
    expect(() => buildIntervention('scale', [{ layer: 2, head: 0 }], {}, DIMS)).toThrow(SpecError);
    expect(() => buildIntervention('mean_ablate', [heads[0]], { means: new Map([['0:2', new Float32Array(5)]]) }, DIMS)).toThrow(/has 5 values, but text heads have 4 dims/);
  });
});

/**
 * A store of 2 layers x 3 heads, head_dim 4 (dim 8 with the layer mean appended when `concat`): 6 examples of
 * function "a" (4 correct) and 3 of "b"; values from a seeded PRNG, junk in the appended half.
 */
function syntheticStore(concat: boolean): AblationStore {
  const [L, H, D] = [2, 3, 4];
  const F = concat ? 2 * D : D;
  const fns = ['a', 'b', 'a', 'a', 'b', 'a', 'a', 'b', 'a'];
  const correct = [true, true, false, true, false, true, false, true, true];
  const r = rng(5);
  const z = new Float32Array(fns.length * L * H * F);
  for (let n = 0; n < fns.length; n++)
    for (let p = 0; p < L * H; p++) for (let i = 0; i < F; i++) z[(n * L * H + p) * F + i] = i < D ? Math.round((r() * 4 - 2) * 8) / 8 : 1000 + r();
  return { layers: L, heads: H, dim: F, z, concat_layer_mean: concat, examples: fns.map((f, i) => ({ id: `e${i}`, function: f, correct: correct[i], row: i })) };
}

/** Head (l, h)'s first 4 values of row n. */
const zOf = (s: AblationStore, n: number, l: number, h: number) => Array.from(s.z.subarray(((n * s.layers + l) * s.heads + h) * s.dim, ((n * s.layers + l) * s.heads + h) * s.dim + 4));

describe('meanVectors and steeringDirections on a synthetic store', () => {
  for (const concat of [false, true]) {
    it(`mean vectors are the per-head means${concat ? ' (first head_dim values of [z; layer mean])' : ''}`, () => {
      const s = syntheticStore(concat);
      const m = meanVectors(s, [{ layer: 1, head: 2 }], { headDim: 4 });
      const want = [0, 1, 2, 3].map((i) => s.examples.reduce((a, e) => a + zOf(s, e.row, 1, 2)[i], 0) / s.examples.length);
      expect(Array.from(m.get('1:2')!)).toEqual(want.map(Math.fround));
      const onlyB = meanVectors(s, [{ layer: 0, head: 0 }], { headDim: 4, filter: (e) => e.function === 'b' }).get('0:0')!;
      const wantB = [0, 1, 2, 3].map((i) => [1, 4, 7].reduce((a, n) => a + zOf(s, n, 0, 0)[i], 0) / 3);
      expect(Array.from(onlyB)).toEqual(wantB.map(Math.fround));
      // Without headDim, concat_layer_mean decides.
      expect(meanVectors(s, [{ layer: 1, head: 2 }]).get('1:2')).toEqual(m.get('1:2'));
    });

    it(`mean_diff direction = unit(mean correct - mean incorrect), sigma = std of the projections${concat ? ' (concatenated store)' : ''}`, () => {
      const s = syntheticStore(concat);
      const heads = [
        { layer: 0, head: 1 },
        { layer: 1, head: 0 },
      ];
      const d = steeringDirections(s, 'a', heads, { kind: 'mean_diff', headDim: 4 });
      expect([...d.keys()]).toEqual(['0:1', '1:0']);
      for (const h of heads) {
        const rowsA = [0, 2, 3, 5, 6, 8];
        const good = rowsA.filter((n) => s.examples[n].correct);
        const bad = rowsA.filter((n) => !s.examples[n].correct);
        const mean = (rows: number[]) => [0, 1, 2, 3].map((i) => rows.reduce((a, n) => a + zOf(s, n, h.layer, h.head)[i], 0) / rows.length);
        const diff = mean(good).map((x, i) => x - mean(bad)[i]);
        const norm = Math.sqrt(diff.reduce((a, x) => a + x * x, 0));
        const dir = diff.map((x) => x / norm);
        const got = d.get(headKey(h))!;
        got.direction.forEach((x, i) => expect(x).toBeCloseTo(dir[i], 6));
        const proj = rowsA.map((n) => zOf(s, n, h.layer, h.head).reduce((a, x, i) => a + x * dir[i], 0));
        const pm = proj.reduce((a, b) => a + b) / proj.length;
        const sigma = Math.sqrt(proj.reduce((a, p) => a + (p - pm) ** 2, 0) / proj.length);
        expect(got.sigma).toBeCloseTo(sigma, 10);
        expect(Math.hypot(...got.direction)).toBeCloseTo(1, 6);
      }
    });
  }

  it('probe directions are the weights over the standardisation std, normalised', () => {
    const s = syntheticStore(false);
    const n = s.layers * s.heads * s.dim;
    const weights = Float32Array.from({ length: n }, (_, i) => (i % 5) - 2);
    const std = Float32Array.from({ length: n }, (_, i) => 1 + (i % 3));
    const d = steeringDirections(s, 'b', [{ layer: 1, head: 1 }], { kind: 'probe', probeWeights: { weights, std } }).get('1:1')!;
    const o = (1 * 3 + 1) * 4;
    const raw = [0, 1, 2, 3].map((i) => weights[o + i] / std[o + i]);
    const norm = Math.hypot(...raw);
    d.direction.forEach((x, i) => expect(x).toBeCloseTo(raw[i] / norm, 6));
    const proj = [1, 4, 7].map((r) => zOf(s, r, 1, 1).reduce((a, x, i) => a + (x * raw[i]) / norm, 0));
    const pm = proj.reduce((a, b) => a + b) / 3;
    expect(d.sigma).toBeCloseTo(Math.sqrt(proj.reduce((a, p) => a + (p - pm) ** 2, 0) / 3), 6);
  });

  it('refuses a function without incorrect examples, an unknown function and a dim that does not fit the heads', () => {
    const s = syntheticStore(false);
    const allRight = { ...s, examples: s.examples.map((e) => ({ ...e, correct: true })) };
    expect(() => steeringDirections(allRight, 'a', [{ layer: 0, head: 0 }], { kind: 'mean_diff' })).toThrow(/6 correctly and 0 wrongly answered examples/);
    expect(() => steeringDirections(s, 'c', [{ layer: 0, head: 0 }], { kind: 'mean_diff' })).toThrow(/no examples of function "c"/);
    expect(() => meanVectors(s, [{ layer: 0, head: 0 }], { headDim: 3 })).toThrow(/has 4 values per head, but the heads have 3 dims/);
    expect(() => meanVectors(s, [{ layer: 2, head: 0 }])).toThrow(/outside the activation store/);
  });
});

describe('probesFromJson', () => {
  const json = {
    model: 'm',
    tower: 'text',
    layers: 2,
    heads: 3,
    functions: {
      a: { ranking: [{ layer: 1, head: 2, accuracy: 0.9, std: 0, rank: 1 }, { layer: 0, head: 0, accuracy: 0.8, std: 0, rank: 2 }], top: [{ layer: 1, head: 2, accuracy: 0.9, rank: 1 }] },
    },
  };
  it('reads rankings and top sets', () => {
    expect(probesFromJson(json)).toEqual({
      tower: 'text',
      layers: 2,
      heads: 3,
      functions: [{ function: 'a', ranking: [{ layer: 1, head: 2 }, { layer: 0, head: 0 }], top: [{ layer: 1, head: 2 }] }],
    });
  });
  it('names the field at fault', () => {
    expect(() => probesFromJson({ ...json, layers: 0 }, 'p.json')).toThrow(/^p\.json: "layers" is 0, expected a positive integer$/);
    expect(() => probesFromJson({ ...json, functions: {} }, 'p.json')).toThrow(/"functions" must be a non-empty object/);
    expect(() => probesFromJson({ ...json, functions: { a: { ranking: [{ layer: 2, head: 0 }], top: [] } } }, 'p.json')).toThrow(
      /functions\["a"\]\.ranking\[0\] is \{"layer":2,"head":0\}, expected \{"layer": 0\.\.1, "head": 0\.\.2\}/,
    );
  });
});

// ---------------------------------------------------------------------------------------------------------------
// The experiment with a stand-in scorer: function "a" loses one of its 4 questions per intervened head in layer 0.

describe('runAblation bookkeeping (stand-in scorer)', () => {
  const DIMS8: ModelDims = { text: { layers: 2, heads: 4, headDim: 4 }, vision: { layers: 1, heads: 1, headDim: 4 } };
  const model = { dims: DIMS8 } as unknown as LlavaModel;
  const items: EvalItem[] = [...['a', 'a', 'a', 'a', 'b', 'b'].entries()].map(([i, f]) => ({
    id: `q${i}`,
    imagePath: 'x.png',
    question: 'q',
    answer: 'yes',
    type: 'exists',
    function: f as EvalItem['function'],
  }));
  const probes: AblationProbes = {
    tower: 'text',
    layers: 2,
    heads: 4,
    functions: [
      {
        function: 'a',
        ranking: [
          [0, 0],
          [0, 1],
          [1, 3],
          [0, 2],
          [0, 3],
          [1, 0],
          [1, 1],
          [1, 2],
        ].map(([layer, head]) => ({ layer, head })),
        top: [
          { layer: 0, head: 0 },
          { layer: 0, head: 1 },
        ],
      },
      { function: 'b', ranking: [{ layer: 1, head: 1 }], top: [{ layer: 1, head: 1 }] },
    ],
  };
  const calls: EvalOptions[] = [];
  const fake = async (_m: VlmModel, _t: Tokenizer, qs: EvalItem[], opts: EvalOptions) => {
    calls.push(opts);
    const hit = (opts.interventions?.headScale ?? []).filter((e) => e.layer === 0).length;
    const examples: EvalExample[] = qs.map((q, i) => ({ id: q.id, type: q.type, function: q.function, question: q.question, answer: q.answer, prediction: '', correct: (q.function as string) === 'a' ? i >= hit : i % 2 === 0 }));
    examples.forEach((_, i) => opts.onProgress?.(i + 1, qs.length, 0));
    return summarize(examples);
  };

  it('plans, runs and compares as documented', async () => {
    const progress: string[] = [];
    const r = await runAblation(model, {} as Tokenizer, items, { probes, seeds: 4, epsilon: 0.001, evaluate: fake, onProgress: (p) => progress.push(`${p.run}/${p.runs} ${p.label} ${p.done}/${p.total}`) });
    expect(calls).toHaveLength(1 + 2 * 5);
    expect(calls[0].interventions).toBeUndefined();
    expect(r).toMatchObject({ mode: 'scale', tower: 'text', epsilon: 0.001, alpha: 0.1, seeds: [0, 1, 2, 3], questions: 6 });
    expect(r.baseline.byFunction).toEqual({ a: { total: 4, correct: 4, accuracy: 1 }, b: { total: 2, correct: 1, accuracy: 0.5 } });
    expect(r.targets.map((t) => [t.function, t.k])).toEqual([
      ['a', 2],
      ['b', 1],
    ]);
    const [a, b] = r.targets;
    expect(a.top.heads).toEqual(probes.functions[0].top);
    expect(a.top.accuracy.byFunction.a.accuracy).toBe(0.5);
    expect(calls[1].interventions!.headScale.map((e) => [e.layer, e.head, e.scale])).toEqual([
      [0, 0, 0.001],
      [0, 1, 0.001],
    ]);
    expect(a.excluded).toEqual(probes.functions[0].top);
    a.random.forEach((x, s) => {
      expect(x.seed).toBe(s);
      expect(x.heads).toEqual(randomHeads(2, new Set(['0:0', '0:1']), 2, 4, s));
      for (const h of x.heads) expect(['0:0', '0:1']).not.toContain(headKey(h));
      expect(x.accuracy.byFunction.a.accuracy).toBe(1 - x.heads.filter((h) => h.layer === 0).length / 4);
    });
    const ra = a.random.map((x) => x.accuracy.byFunction.a.accuracy);
    expect(a.target).toEqual({ baseline: 1, top: 0.5, random: ra, randomMean: ra.reduce((p, q) => p + q) / 4, randomStd: sampleStd(ra), test: welchTTest([0.5], ra) });
    expect(a.byFunction.a).toBe(a.target);
    expect(a.overall.top).toBeCloseTo(3 / 6, 12);
    expect(Object.keys(a.byFunction)).toEqual(['a', 'b']);
    expect(b.top.heads).toEqual([{ layer: 1, head: 1 }]);
    expect(b.random.every((x) => x.heads.length === 1 && headKey(x.heads[0]) !== '1:1')).toBe(true);
    expect(progress[0]).toBe('0/11 baseline 1/6');
    expect(progress).toContain('1/11 top-k a 6/6');
    expect(progress).toContain('6/11 top-k b 1/6');
    expect(progress.at(-1)).toBe('10/11 random-k b seed 3 6/6');

    // The same call again: the same draws and numbers.
    calls.length = 0;
    expect(await runAblation(model, {} as Tokenizer, items, { probes, seeds: 4, epsilon: 0.001, evaluate: fake })).toEqual(r);
  });

  it('k takes the first k of the ranking and excludes them and the top set from the draws; functions and limit select', async () => {
    const plan = planAblation(DIMS8, items, { probes, k: 3, functions: ['a'], seeds: 3, limit: 5 });
    expect(plan.questions).toHaveLength(5);
    expect(plan.targets).toHaveLength(1);
    const t = plan.targets[0];
    expect(t.top.heads).toEqual([
      { layer: 0, head: 0 },
      { layer: 0, head: 1 },
      { layer: 1, head: 3 },
    ]);
    expect(t.excluded.map(headKey)).toEqual(['0:0', '0:1', '1:3']);
    for (const r of t.random) {
      expect(r.heads).toHaveLength(3);
      for (const h of r.heads) expect(t.excluded.map(headKey)).not.toContain(headKey(h));
    }
  });

  it('refuses what cannot be run, before running anything', () => {
    const plan = (o: Partial<Parameters<typeof planAblation>[2]>) => () => planAblation(DIMS8, items, { probes, ...o });
    expect(plan({ functions: ['c'] })).toThrow(/function "c" is not in the probes/);
    expect(plan({ k: 2, functions: ['b'] })).toThrow(/function "b": the ranking holds 1 heads, fewer than k = 2/);
    expect(plan({ k: 5, functions: ['a'] })).toThrow(/k = 5 random heads cannot be drawn from the 3 heads outside its 5 functional heads/);
    expect(plan({ mode: 'steer' })).toThrow(/mode steer needs an activation store/);
    expect(plan({ probes: { ...probes, heads: 3 } })).toThrow(/the probes rank 2 layers x 3 heads, but the model's text tower has 2 x 4/);
    expect(plan({ seeds: 0 })).toThrow(/seeds must be a positive integer/);
    const noB = items.filter((q) => (q.function as string) !== 'b');
    expect(() => planAblation(DIMS8, noB, { probes, functions: ['b'] })).toThrow(/function "b" has no questions/);
    expect(planAblation(DIMS8, noB, { probes }).targets.map((t) => t.function)).toEqual(['a']);
  });

  it('mean_ablate and steer take their vectors from the store', () => {
    const [L, H, D] = [2, 4, 4];
    const r = rng(3);
    const fns = ['a', 'a', 'a', 'b', 'b', 'b'];
    const store: AblationStore = {
      layers: L,
      heads: H,
      dim: D,
      z: Float32Array.from({ length: fns.length * L * H * D }, () => r() - 0.5),
      examples: fns.map((f, i) => ({ function: f, correct: i % 3 !== 1, row: i })),
    };
    const m = planAblation(DIMS8, items, { probes, mode: 'mean_ablate', store, functions: ['a'], seeds: 1 });
    const means = meanVectors(store, [{ layer: 0, head: 0 }]);
    expect(m.targets[0].top.spec.meanAblate[0]).toEqual({ tower: 'text', layer: 0, head: 0, mean: means.get('0:0') });
    const s = planAblation(DIMS8, items, { probes, mode: 'steer', alpha: 0.5, store, functions: ['b'], seeds: 2 });
    const rand = s.targets[0].random[1];
    const dirs = steeringDirections(store, 'b', rand.heads, { kind: 'mean_diff' });
    expect(rand.spec.steer).toEqual(rand.heads.map((h) => ({ tower: 'text', layer: h.layer, head: h.head, alpha: 0.5, sigma: dirs.get(headKey(h))!.sigma, direction: dirs.get(headKey(h))!.direction, queries: 'all' })));
  });
});

// ---------------------------------------------------------------------------------------------------------------
// On weights/tiny-llava (SwiftShader or a GPU).

describe('runAblation on weights/tiny-llava', () => {
  const modelDir = join(REPO_ROOT, 'weights/tiny-llava');
  let model: LlavaModel;
  let tokenizer: Tokenizer;
  let items: EvalItem[];
  const probes: AblationProbes = {
    tower: 'text',
    layers: 2,
    heads: 4,
    functions: [
      {
        function: 'low_level_perception',
        ranking: [
          [0, 1],
          [1, 2],
          [0, 0],
          [0, 2],
          [0, 3],
          [1, 0],
          [1, 1],
          [1, 3],
        ].map(([layer, head]) => ({ layer, head })),
        top: [
          { layer: 0, head: 1 },
          { layer: 1, head: 2 },
        ],
      },
      { function: 'decision', ranking: [{ layer: 1, head: 3 }], top: [{ layer: 1, head: 3 }] },
    ],
  };

  beforeAll(async () => {
    const data = writeSyntheticSet(join(work, 'data'), { seed: 3, scenes: 2, types: ['spatial', 'exists'] });
    items = (await readQuestions(data)).slice(0, 6);
    const ctx = await gpuContext();
    model = await LlavaModel.load(ctx, modelDir);
    tokenizer = await Tokenizer.fromFolder(nodeFolder(modelDir));
  });

  it('runs baseline, top-k and random-k evaluations, deterministically, with the top heads never drawn', async () => {
    expect(items.map((q) => q.function)).toContain('low_level_perception');
    expect(items.map((q) => q.function)).toContain('decision');
    const r = await runAblation(model, tokenizer, items, { probes, seeds: 2, epsilon: 0 });
    const plain = await evaluate(model, tokenizer, items);
    expect(r.baseline.overall).toEqual({ total: plain.total, correct: plain.correct, accuracy: plain.accuracy });
    expect(r.baseline.byFunction).toEqual(plain.byFunction);
    expect(r.targets.map((t) => t.function)).toEqual(['low_level_perception', 'decision']);
    const fns = Object.keys(plain.byFunction);
    for (const t of r.targets) {
      expect(t.random).toHaveLength(2);
      expect(Object.keys(t.byFunction)).toEqual(fns);
      for (const c of [t.target, t.overall, ...Object.values(t.byFunction)]) {
        for (const x of [c.baseline, c.top, ...c.random]) {
          expect(x).toBeGreaterThanOrEqual(0);
          expect(x).toBeLessThanOrEqual(1);
        }
        expect(c.random).toHaveLength(2);
        expect(c.test.method).toBe('one_sample');
      }
      const top = new Set(t.top.heads.map(headKey));
      for (const x of t.random) for (const h of x.heads) expect(top.has(headKey(h))).toBe(false);
    }
    // The top-k run equals evaluate() with the same spec built by hand.
    const t0 = r.targets[0];
    const byHand = await evaluate(model, tokenizer, items, { interventions: buildIntervention('scale', t0.top.heads, { epsilon: 0 }, model.dims) });
    expect(t0.top.accuracy.byFunction).toEqual(byHand.byFunction);
    // Random seed 1 of the first target again, alone: the same heads and accuracies.
    const again = await runAblation(model, tokenizer, items, { probes, seeds: 2, epsilon: 0, functions: ['low_level_perception'] });
    expect(again.targets[0]).toEqual(t0);
  });

  it('mean_ablate and steer run through the attention kernel with store vectors', async () => {
    const [L, H, D] = [2, 4, 16];
    const r = rng(8);
    const fns = ['low_level_perception', 'low_level_perception', 'low_level_perception', 'decision', 'decision', 'decision'];
    const store: AblationStore = {
      layers: L,
      heads: H,
      dim: 2 * D,
      concat_layer_mean: true,
      z: Float32Array.from({ length: fns.length * L * H * 2 * D }, () => r() * 2 - 1),
      examples: fns.map((f, i) => ({ function: f, correct: i % 3 !== 0, row: i })),
    };
    for (const mode of ['mean_ablate', 'steer'] as const) {
      const res = await runAblation(model, tokenizer, items, { probes, mode, store, alpha: 4, seeds: 1, functions: ['decision'] });
      expect(res.mode).toBe(mode);
      expect(res.targets[0].top.heads).toEqual([{ layer: 1, head: 3 }]);
      expect(res.targets[0].random[0].heads).toEqual(randomHeads(1, new Set(['1:3']), 2, 4, 0));
      expect(res.targets[0].target.test.t).toBeNaN(); // one seed: no spread to test against
    }
  });
});
