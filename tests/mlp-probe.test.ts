// The CogVSR MLP probe (src/interp/mlp-probe.ts): it learns a separable toy problem and its gradient x activation
// importance ranks the planted head first; the importance equals finite differences of an independent float64
// forward; the first two AdamW steps equal a reference AdamW on finite-difference gradients of the loss;
// deterministic per seed; the split by wording; the elbow point; errors.

import { describe, expect, it } from 'vitest';
import { type MlpProbeExample, type MlpWeights, MLP_PROBE_DEFAULTS, elbowIndex, fitMlpProbes, mlpSplit, rankMlpHeads } from '../src/interp/mlp-probe.js';
import { rng } from './helpers/gpu.js';

const [L, H, F] = [2, 3, 4];
const CLASSES = ['colour', 'relation', 'spatial'];
const PLANTED = { layer: 1, head: 1 };

/** 40 main questions x one example per class; head PLANTED carries the class (feature c + 3), the rest is noise. */
function toy(seed = 5, mains = 40) {
  const r = rng(seed);
  const examples: MlpProbeExample[] = [];
  for (let m = 0; m < mains; m++) CLASSES.forEach((fn, k) => examples.push({ id: `m${m}.${k}`, mainId: `m${m}`, function: fn, correct: m % 13 !== 5, wordingHeldout: m % 5 === 0 }));
  const x = new Float32Array(examples.length * L * H * F).map(() => r() * 2 - 1);
  examples.forEach((e, n) => (x[((n * L + PLANTED.layer) * H + PLANTED.head) * F + CLASSES.indexOf(e.function)] += 3));
  return { examples, x };
}

const SMALL = { projection: 8, hidden: 16, learningRate: 1e-3, epochs: 25 };

/** Independent float64 forward of the probe from its weights: proj [P * D] and logits [C]. */
function reference(w: MlpWeights, x: Float32Array, at: number, D: number, Hd: number, C: number, projOverride?: Float64Array) {
  const P = L * H;
  const proj = projOverride ?? new Float64Array(P * D);
  if (!projOverride)
    for (let p = 0; p < P; p++)
      for (let d = 0; d < D; d++) {
        let s = w.bp[d];
        for (let f = 0; f < F; f++) s += x[at + p * F + f] * w.wp[f * D + d];
        proj[p * D + d] = s;
      }
  const logits = new Float64Array(C);
  for (let c = 0; c < C; c++) logits[c] = w.b2[c];
  for (let j = 0; j < Hd; j++) {
    let h = w.b1[j];
    for (let i = 0; i < P * D; i++) h += proj[i] * w.w1[j * P * D + i];
    if (h > 0) for (let c = 0; c < C; c++) logits[c] += h * w.w2[j * C + c];
  }
  return { proj, logits };
}

describe('fitMlpProbes', () => {
  it('learns a separable toy problem and ranks the planted head first for every function', () => {
    const { examples, x } = toy();
    const res = fitMlpProbes({ features: x, layers: L, heads: H, dim: F, examples, seeds: [0, 1, 2], ...SMALL });
    expect(res.classes).toEqual(CLASSES);
    expect(res.counts).toEqual([37, 37, 37]); // correct examples only
    for (const f of res.fits) {
      expect(f.testAccuracy).toBeGreaterThanOrEqual(0.9);
      expect(f.trainAccuracy).toBe(1);
      // Split by main question: no main question on both sides.
      const mainOf = (id: string | number) => String(id).split('.')[0];
      const testMains = new Set(f.test.map(mainOf));
      expect(f.train.some((id) => testMains.has(mainOf(id)))).toBe(false);
    }
    const rk = rankMlpHeads(res, { topK: 1 });
    for (const fr of rk.functions) {
      expect(fr.ranking[0]).toMatchObject({ ...PLANTED, rank: 1 });
      expect(fr.ranking[0].importance).toBeGreaterThan(3 * fr.ranking[1].importance);
      expect(fr.separation.separated).toBe(true);
      expect(fr.top).toHaveLength(1);
    }
  });

  it('uses the CogVSR settings by default', () => {
    const { examples, x } = toy(5, 6);
    const res = fitMlpProbes({ features: x, layers: L, heads: H, dim: F, examples, seeds: [0], epochs: 1 });
    expect(res.settings).toEqual({ ...MLP_PROBE_DEFAULTS, epochs: 1 });
    expect(MLP_PROBE_DEFAULTS).toEqual({ projection: 64, hidden: 512, dropout: 0.3, learningRate: 1e-4, weightDecay: 0.01, epochs: 100, batchSize: 1 });
  });

  it('is deterministic per seed', () => {
    const { examples, x } = toy(8);
    const opts = { features: x, layers: L, heads: H, dim: F, examples, ...SMALL, epochs: 3 };
    const a = fitMlpProbes({ ...opts, seeds: [4] });
    expect(fitMlpProbes({ ...opts, seeds: [4] })).toEqual(a);
    const b = fitMlpProbes({ ...opts, seeds: [5] });
    expect(b.fits[0].test).not.toEqual(a.fits[0].test);
    expect(b.fits[0].importance).not.toEqual(a.fits[0].importance);
  });

  it('computes importance as gradient x activation of the class logit (finite differences of a float64 forward)', () => {
    const { examples, x } = toy(9, 12);
    const D = 4;
    const Hd = 6;
    const res = fitMlpProbes({ features: x, layers: L, heads: H, dim: F, examples, seeds: [1], projection: D, hidden: Hd, learningRate: 1e-2, epochs: 5, keepWeights: true });
    const fit = res.fits[0];
    const w = fit.weights!;
    const byId = new Map(examples.map((e, i) => [String(e.id), i]));
    const eps = 1e-5;
    for (let c = 0; c < 3; c++) {
      const mine = fit.test.map((id) => byId.get(String(id))!).filter((i) => examples[i].function === CLASSES[c]);
      expect(mine.length).toBeGreaterThan(0);
      const want = new Float64Array(L * H);
      for (const i of mine) {
        const { proj } = reference(w, x, i * L * H * F, D, Hd, 3);
        for (let p = 0; p < L * H; p++) {
          let gxa = 0;
          for (let d = 0; d < D; d++) {
            const plus = Float64Array.from(proj);
            const minus = Float64Array.from(proj);
            plus[p * D + d] += eps;
            minus[p * D + d] -= eps;
            const g = (reference(w, x, 0, D, Hd, 3, plus).logits[c] - reference(w, x, 0, D, Hd, 3, minus).logits[c]) / (2 * eps);
            gxa += g * proj[p * D + d];
          }
          want[p] += gxa / D / mine.length;
        }
      }
      for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) expect(fit.importance[c][l][h]).toBeCloseTo(want[l * H + h], 6);
    }
  });

  // Adam is invariant to a constant scale of the gradient (up to eps), so this checks each parameter's gradient
  // direction through two steps, plus the decoupled decay and bias corrections.
  it('takes AdamW steps on the loss gradient (two full-batch steps against a reference on finite differences)', () => {
    const { examples, x } = toy(10, 8);
    const D = 3;
    const Hd = 5;
    const common = { features: x, layers: L, heads: H, dim: F, examples, seeds: [2], projection: D, hidden: Hd, dropout: 0, batchSize: 1000, keepWeights: true, learningRate: 1e-2, weightDecay: 0.1 };
    const w0 = fitMlpProbes({ ...common, epochs: 0 }).fits[0].weights!;
    const after = fitMlpProbes({ ...common, epochs: 2 }).fits[0];
    const byId = new Map(examples.map((e, i) => [String(e.id), i]));
    const train = after.train.map((id) => byId.get(String(id))!);
    const keys = ['wp', 'bp', 'w1', 'b1', 'w2', 'b2'] as const;
    const loss = (w: MlpWeights) => {
      let s = 0;
      for (const i of train) {
        const { logits } = reference(w, x, i * L * H * F, D, Hd, 3);
        const m = Math.max(...logits);
        const lse = m + Math.log(logits.reduce((a, v) => a + Math.exp(v - m), 0));
        s += lse - logits[CLASSES.indexOf(examples[i].function)];
      }
      return s / train.length;
    };
    // Reference AdamW in float64 from the same initial weights.
    const cur = Object.fromEntries(keys.map((k) => [k, Float64Array.from(w0[k])])) as unknown as Record<(typeof keys)[number], Float64Array>;
    const m = Object.fromEntries(keys.map((k) => [k, new Float64Array(w0[k].length)])) as Record<(typeof keys)[number], Float64Array>;
    const v = Object.fromEntries(keys.map((k) => [k, new Float64Array(w0[k].length)])) as Record<(typeof keys)[number], Float64Array>;
    const lr = common.learningRate;
    for (let step = 1; step <= 2; step++) {
      const grads = keys.map((k) =>
        Array.from(cur[k], (_, i) => {
          const h = 1e-6;
          const keep = cur[k][i];
          cur[k][i] = keep + h;
          const up = loss(cur as unknown as MlpWeights);
          cur[k][i] = keep - h;
          const down = loss(cur as unknown as MlpWeights);
          cur[k][i] = keep;
          return (up - down) / (2 * h);
        }),
      );
      keys.forEach((k, n) => {
        for (let i = 0; i < cur[k].length; i++) {
          const g = grads[n][i];
          m[k][i] = 0.9 * m[k][i] + 0.1 * g;
          v[k][i] = 0.999 * v[k][i] + 0.001 * g * g;
          const mh = m[k][i] / (1 - 0.9 ** step);
          const vh = v[k][i] / (1 - 0.999 ** step);
          cur[k][i] = cur[k][i] * (1 - lr * common.weightDecay) - (lr * mh) / (Math.sqrt(vh) + 1e-8);
        }
      });
    }
    for (const k of keys) for (let i = 0; i < cur[k].length; i++) expect(after.weights![k][i]).toBeCloseTo(cur[k][i], 5);
  });

  it('splits by main question or by held-out wording', () => {
    const { examples } = toy(3, 20);
    const use = examples.flatMap((e, i) => (e.correct ? [i] : []));
    const q = mlpSplit(examples, use, 0, 0.25);
    expect(q.test.length).toBeGreaterThanOrEqual(Math.round(0.25 * use.length));
    expect(q.train.length + q.test.length).toBe(use.length);
    const w = mlpSplit(examples, use, 0, 0.25, 'wording');
    expect(w.test.every((i) => examples[i].wordingHeldout)).toBe(true);
    expect(w.train.every((i) => !examples[i].wordingHeldout)).toBe(true);
    expect(() => mlpSplit([{ ...examples[0], wordingHeldout: undefined }, examples[1]], [0, 1], 0, 0.2, 'wording')).toThrow(/needs every example's wordingHeldout flag; example "m0\.0" has none/);
  });

  it('finds the elbow as CognitiveMirrors does and refuses bad input in one line', () => {
    expect(elbowIndex([10, 9, 1, 0.9, 0.8, 0.7])).toBe(2);
    expect(elbowIndex([1, 0.5])).toBe(0);
    const { examples, x } = toy(1, 4);
    const one = examples.map((e) => ({ ...e, function: 'only' }));
    expect(() => fitMlpProbes({ features: x, layers: L, heads: H, dim: F, examples: one })).toThrow(/needs correctly answered examples of at least 2 functions, has 1 \(only\)/);
    expect(() => fitMlpProbes({ features: x, layers: L, heads: H, dim: F + 1, examples })).toThrow(/not a whole number of rows/);
    expect(() => fitMlpProbes({ features: x, layers: L, heads: H, dim: F, examples, dropout: 1 })).toThrow(/dropout must be in \[0, 1\)/);
  });
});
