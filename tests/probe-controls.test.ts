// Probe controls (src/interp/probe-controls.ts): the label-permutation baseline at chance on random features, the
// wording-only control and selectivity on synthetic activations with a planted label head and a head that carries
// only the wording, t-intervals, question templates, the one-hot fit against the reference, ties broken by the next
// criterion and never by (layer, head), and the report of a top set that is not separated.

import { describe, expect, it } from 'vitest';
import { fitProbeBatchCpu } from '../src/interp/probe-cpu.js';
import { type ProbeResult, fitProbes } from '../src/interp/probes.js';
import {
  type ProbeControls,
  type WordedProbeExample,
  fitOneHotLogistic,
  fitProbeControls,
  questionTemplate,
  rankByCriteria,
  rankControlledHeads,
  wordingIds,
} from '../src/interp/probe-controls.js';
import { studentTQuantile, tInterval } from '../src/interp/statistics.js';
import { rng } from './helpers/gpu.js';

const [L, H, F] = [2, 3, 4];
const FUNCTIONS = ['colour', 'relation', 'spatial'];
const LABEL_HEAD = { layer: 1, head: 2 };
const WORDING_HEAD = { layer: 0, head: 1 };

/**
 * 120 main questions x one sub-question per function. Wordings: each function has an own wording ("<fn>.own") for
 * half of its examples and one wording shared by all functions ("shared") for the other half, so the wording alone
 * tells the function on half of the rows: wording-only accuracy about 0.75. Head LABEL_HEAD carries the function in
 * its features (accuracy ~1, selectivity ~0.25); head WORDING_HEAD carries only the wording (accuracy ~ the wording
 * control, selectivity ~0); the other heads are noise. `sharedWording: false` gives every function its own wordings
 * only (the templated case: wording-only accuracy ~1).
 */
function plantedData(opts: { sharedWording?: boolean; randomOnly?: boolean; seed?: number } = {}) {
  const r = rng(opts.seed ?? 7);
  const examples: WordedProbeExample[] = [];
  for (let m = 0; m < 120; m++)
    FUNCTIONS.forEach((fn, k) => {
      const shared = (opts.sharedWording ?? true) && (m + k) % 2 === 0;
      examples.push({ id: `m${m}.${k}`, mainId: `m${m}`, function: fn, correct: true, wording: shared ? 'shared' : `${fn}.own` });
    });
  const wordingCode = new Map<string, number>([['shared', 0], ...FUNCTIONS.map((f, i) => [`${f}.own`, i + 1] as [string, number])]);
  const x = new Float32Array(examples.length * L * H * F).map(() => r() * 2 - 1);
  if (!opts.randomOnly)
    examples.forEach((e, n) => {
      const at = (h: { layer: number; head: number }, f: number) => ((n * L + h.layer) * H + h.head) * F + f;
      x[at(LABEL_HEAD, FUNCTIONS.indexOf(e.function))] += 3;
      x[at(WORDING_HEAD, wordingCode.get(e.wording!)!)] += 3;
    });
  return { examples, x };
}

async function fitWithControls(data: ReturnType<typeof plantedData>, permutations = 8, seeds = [0, 1, 2, 3]) {
  const result = await fitProbes(null, { features: data.x, layers: L, heads: H, dim: F, examples: data.examples, seeds, iterations: 150 });
  const controls = await fitProbeControls(null, result, { features: data.x, examples: data.examples, permutations });
  return { result, controls };
}

const cellOf = <T>(g: T[][], h: { layer: number; head: number }): T => g[h.layer][h.head];

describe('statistics', () => {
  it('Student t quantiles and t-intervals', () => {
    expect(studentTQuantile(0.975, 2)).toBeCloseTo(4.302653, 5);
    expect(studentTQuantile(0.975, 9)).toBeCloseTo(2.262157, 5);
    expect(studentTQuantile(0.025, 4)).toBeCloseTo(-2.776445, 5);
    expect(studentTQuantile(0.5, 3)).toBe(0);
    const iv = tInterval([1, 2, 3]);
    expect(iv.mean).toBe(2);
    expect(iv.std).toBeCloseTo(1, 12);
    expect(iv.high - iv.mean).toBeCloseTo(4.302653 / Math.sqrt(3), 5);
    expect(iv.mean - iv.low).toBeCloseTo(iv.high - iv.mean, 12);
    const one = tInterval([0.7, NaN]);
    expect([one.mean, one.n]).toEqual([0.7, 1]);
    expect(Number.isNaN(one.low) && Number.isNaN(one.high)).toBe(true);
    expect(() => studentTQuantile(1, 3)).toThrow(/p must be in \(0, 1\)/);
  });
});

describe('question templates', () => {
  it('masks the objects, numbers and relations of a question, not its wording', () => {
    expect(questionTemplate('Is there an orange circle?')).toBe('is there a _?');
    expect(questionTemplate('Is there a red square?')).toBe('is there a _?');
    expect(questionTemplate('Is the red circle left of the blue square?')).toBe('is the _ the _?');
    expect(questionTemplate('Is the green triangle above the white circle?')).toBe('is the _ the _?');
    expect(questionTemplate('Is the red circle located to the right of the blue square?')).toBe('is the _ located _ the _?');
    expect(questionTemplate('The 2 circles are left.')).toBe('the _ are _.');
    expect(questionTemplate('How many circles are there?')).toBe('how many _ are there?');
    expect(questionTemplate('How many objects are there?')).toBe('how many objects are there?');
    expect(questionTemplate('Is there a red circle?')).not.toBe(questionTemplate('Can you see a red circle?'));
    expect(questionTemplate('Where is the dog?', [])).toBe('where is the dog?');
  });

  it('takes the wording field (a shared paraphrase by its template name) before the question text', () => {
    const base = { mainId: 'm', function: 'f', correct: true };
    const worded = wordingIds([
      { ...base, id: 1, wording: 'vsr.w2', question: 'x' },
      { ...base, id: 2, wording: 'relational_reasoning.w0', question: 'y' },
      { ...base, id: 3, wording: 'my.own', question: 'z' },
    ]);
    expect(worded.source).toBe('wording');
    expect(worded.ids[0]).toBe(worded.ids[1]); // one template shared by two tables
    expect(worded.ids[2]).toBe('my.own');
    const masked = wordingIds([
      { ...base, id: 1, question: 'Is there a red circle?' },
      { ...base, id: 2, wording: 'w', question: 'Is there a blue square?' },
    ]);
    expect(masked).toEqual({ ids: ['is there a _?', 'is there a _?'], source: 'masked-question' });
    expect(wordingIds([{ ...base, id: 1, question: 'Where is the dog?' }]).source).toBe('question');
    expect(() => wordingIds([{ ...base, id: 'q7' }])).toThrow(/example "q7" has neither a wording nor a question text/);
  });
});

describe('the wording-only probe', () => {
  it('equals the reference logistic fit on explicit one-hot features', () => {
    const r = rng(3);
    const N = 70;
    const T = 5;
    const column = Array.from({ length: N }, () => Math.floor(r() * (T - 1)));
    column[0] = 4; // template 4 appears in one row only, held out: a constant column in training
    const train = Array.from({ length: N }, (_, n) => (n === 0 ? 0 : r() < 0.75 ? 1 : 0));
    const labels = column.map((c) => (r() < 0.2 + 0.15 * c ? 1 : 0));
    const optimizer = { iterations: 120, l2: 1e-2, momentum: 0.9 };
    const fast = fitOneHotLogistic({ column, columns: T, labels, train }, optimizer);
    const x = new Float32Array(N * T);
    column.forEach((c, n) => (x[n * T + c] = 1));
    const ref = fitProbeBatchCpu({ x, rows: N, probes: 1, features: T, tasks: [{ rows: Array.from({ length: N }, (_, n) => n), labels, train }] }, optimizer)[0];
    for (let t = 0; t < T; t++) expect(fast.weights[t]).toBeCloseTo(ref.weights[t], 10);
    expect(fast.bias).toBeCloseTo(ref.bias[0], 10);
    expect(fast.trainAccuracy).toBe(ref.trainAccuracy[0]);
    expect(fast.testAccuracy).toBe(ref.testAccuracy[0]);
    expect(fast.weights[4]).toBe(0);
  });
});

describe('fitProbeControls', () => {
  it('puts the label-permutation baseline at chance on random features', async () => {
    const { controls } = await fitWithControls(plantedData({ randomOnly: true }), 12, [0, 1, 2]);
    const all: number[] = [];
    for (const fc of controls.functions) {
      expect(fc.permutationAccuracy).toHaveLength(3);
      expect(fc.permutationAccuracy[0]).toHaveLength(12);
      for (const row of fc.permutationMean)
        for (const v of row) {
          expect(Math.abs(v - 0.5)).toBeLessThan(0.07);
          all.push(v);
        }
      for (const row of fc.permutationStd) for (const v of row) expect(v).toBeGreaterThan(0.02); // a spread, not a constant
    }
    expect(Math.abs(all.reduce((a, b) => a + b, 0) / all.length - 0.5)).toBeLessThan(0.025);
  });

  it('finds the planted label head by selectivity; the wording head reads ~0 above the wording control', async () => {
    const { result, controls } = await fitWithControls(plantedData());
    expect(controls.wordingSource).toBe('wording');
    expect(controls.templates).toBe(4);
    for (const fc of controls.functions) {
      const fp = result.functions.find((f) => f.function === fc.function)!;
      const wording = fc.wordingAccuracy.reduce((a, b) => a + b, 0) / fc.wordingAccuracy.length;
      expect(wording).toBeGreaterThan(0.62);
      expect(wording).toBeLessThan(0.88);
      expect(fc.binding).toBe('wording');
      // Label head: accurate and selective, the interval above 0.
      expect(cellOf(fp.mean, LABEL_HEAD)).toBeGreaterThan(0.95);
      const label = cellOf(fc.selectivityCi, LABEL_HEAD);
      expect(label.mean).toBeGreaterThan(0.12);
      expect(label.low).toBeGreaterThan(0);
      // Wording head: as accurate as the wording alone, selectivity about 0.
      const wh = cellOf(fc.selectivityCi, WORDING_HEAD);
      expect(cellOf(fp.mean, WORDING_HEAD)).toBeGreaterThan(0.62);
      expect(Math.abs(wh.mean)).toBeLessThan(0.1);
      // Noise heads: below the control.
      for (let l = 0; l < L; l++)
        for (let h = 0; h < H; h++) {
          if ((l === LABEL_HEAD.layer && h === LABEL_HEAD.head) || (l === WORDING_HEAD.layer && h === WORDING_HEAD.head)) continue;
          expect(fc.selectivityCi[l][h].mean).toBeLessThan(-0.1);
        }
      // selectivity = accuracy - max(permutation mean, wording) per seed
      for (let s = 0; s < fc.selectivity.length; s++) {
        const c = Math.max(cellOf(fc.permutationMeanPerSeed[s], LABEL_HEAD), fc.wordingAccuracy[s]);
        expect(cellOf(fc.selectivity[s], LABEL_HEAD)).toBeCloseTo(cellOf(fp.accuracy[s], LABEL_HEAD) - c, 12);
      }
    }
    const rk = rankControlledHeads(result, controls, { topK: 2 });
    for (const fr of rk.functions) {
      expect(fr.ranking.map((h) => [h.layer, h.head]).slice(0, 2)).toEqual([
        [LABEL_HEAD.layer, LABEL_HEAD.head],
        [WORDING_HEAD.layer, WORDING_HEAD.head],
      ]);
      expect(fr.top).toHaveLength(2);
    }
  });

  it('on one wording per function the wording control saturates and nothing is selective', async () => {
    const { result, controls } = await fitWithControls(plantedData({ sharedWording: false }), 4, [0, 1, 2]);
    for (const fc of controls.functions) {
      expect(Math.min(...fc.wordingAccuracy)).toBe(1);
      expect(fc.binding).toBe('wording');
      const fp = result.functions.find((f) => f.function === fc.function)!;
      expect(cellOf(fp.mean, LABEL_HEAD)).toBeGreaterThan(0.95); // accurate ...
      for (const row of fc.selectivityCi) for (const iv of row) expect(iv.mean).toBeLessThanOrEqual(0.02); // ... but not selective
    }
  });

  it('is deterministic per seed and reads the splits of the result', async () => {
    const data = plantedData({ seed: 9 });
    const a = await fitWithControls(data, 3, [0, 1]);
    const b = await fitWithControls(data, 3, [0, 1]);
    expect(b.controls).toEqual(a.controls);
    const c = await fitWithControls(data, 3, [2, 3]);
    expect(c.controls.functions[0].permutationAccuracy).not.toEqual(a.controls.functions[0].permutationAccuracy);
    const broken: ProbeResult = { ...a.result, functions: [{ ...a.result.functions[0], splits: [{ ...a.result.functions[0].splits[0], train: ['nope'] }] }] };
    await expect(fitProbeControls(null, broken, { features: data.x, examples: data.examples })).rejects.toThrow(/split example "nope" is not among the examples/);
  });
});

/** Controls whose every head has the given selectivity / accuracy intervals, for ranking tests. */
function fakeControls(cells: { sel: number; selLow: number; selHigh?: number; acc?: number; accLow?: number }[][]): { result: Pick<ProbeResult, 'layers' | 'heads' | 'seeds' | 'functions'>; controls: ProbeControls } {
  const layers = cells.length;
  const heads = cells[0].length;
  const iv = (mean: number, low: number, high: number) => ({ mean, std: 0.1, low, high, n: 3 });
  const grid = <T>(f: (c: (typeof cells)[0][0]) => T) => cells.map((row) => row.map(f));
  return {
    result: { layers, heads, seeds: [0], functions: [{ function: 'f' } as ProbeResult['functions'][0]] },
    controls: {
      permutations: 1,
      level: 0.95,
      wordingSource: 'wording',
      templates: 1,
      functions: [
        {
          function: 'f',
          permutationAccuracy: [],
          permutationMeanPerSeed: [],
          permutationMean: grid(() => 0.5),
          permutationStd: grid(() => 0.05),
          wordingAccuracy: [0.5],
          wordingTrainAccuracy: [0.5],
          wordingTemplates: [1],
          control: [],
          selectivity: [],
          accuracyCi: grid((c) => iv(c.acc ?? 0.9, c.accLow ?? 0.8, 1)),
          selectivityCi: grid((c) => iv(c.sel, c.selLow, c.selHigh ?? c.sel + (c.sel - c.selLow))),
          controlMean: grid(() => 0.5),
          binding: 'wording',
        },
      ],
    },
  };
}

describe('rankControlledHeads: ties and separation', () => {
  it('breaks a selectivity tie by the CI lower bound, then by accuracy, never by position', () => {
    const { result, controls } = fakeControls([
      [
        { sel: 0.3, selLow: 0.1 },
        { sel: 0.1, selLow: 0.0 },
        { sel: 0.3, selLow: 0.1, acc: 0.8 },
      ],
      [
        { sel: 0.1, selLow: 0.0 },
        { sel: 0.3, selLow: 0.2 },
        { sel: 0.3, selLow: 0.1, acc: 0.95 },
      ],
    ]);
    const fr = rankControlledHeads(result, controls, { topK: 2 }).functions[0];
    expect(fr.ranking.slice(0, 4).map((h) => [h.layer, h.head, h.rank])).toEqual([
      [1, 1, 1], // same selectivity as three others, highest lower bound
      [1, 2, 2], // then the highest accuracy
      [0, 0, 3],
      [0, 2, 4],
    ]);
    // Accuracy first: (1, 2) leads.
    expect(rankControlledHeads(result, controls, { topK: 1, rankBy: 'accuracy' }).functions[0].ranking[0]).toMatchObject({ layer: 1, head: 2 });
  });

  it('gives heads equal on every criterion one rank, in a seeded order that is not (layer, head), and flags the cut', () => {
    const same = Array.from({ length: 3 }, () => Array.from({ length: 4 }, () => ({ sel: 0.2, selLow: 0.1 })));
    const { result, controls } = fakeControls(same);
    const fr = rankControlledHeads(result, controls, { topK: 2 }).functions[0];
    expect(new Set(fr.ranking.map((h) => h.rank))).toEqual(new Set([1]));
    const order = fr.ranking.map((h) => h.layer * 4 + h.head);
    expect(order).not.toEqual([...order].sort((a, b) => a - b));
    expect(order.slice(0, 3)).not.toEqual([0, 1, 2]);
    expect(fr.separation).toMatchObject({ separated: false, tiedAtCut: true });
    expect(fr.separation.note).toMatch(/^not separated: the 2nd head L\dH\d ties with the 3rd/);
    // Deterministic for the seeds.
    expect(rankControlledHeads(result, controls, { topK: 2 }).functions[0].ranking).toEqual(fr.ranking);
    // A generic check on many items: ties never come out in input order.
    const items = Array.from({ length: 20 }, (_, i) => ({ i, v: i % 2 }));
    const ranked = rankByCriteria(items, [(x) => x.v], 5);
    expect(ranked.slice(0, 10).every((r) => r.item.v === 1 && r.rank === 1)).toBe(true);
    expect(ranked.slice(10).every((r) => r.rank === 11)).toBe(true);
    expect(ranked.slice(0, 10).map((r) => r.item.i)).not.toEqual([1, 3, 5, 7, 9, 11, 13, 15, 17, 19]);
  });

  it('says whether the top-k set is separated from the next head', () => {
    const clear = fakeControls([
      [
        { sel: 0.4, selLow: 0.3 },
        { sel: 0.05, selLow: -0.05 },
      ],
      [
        { sel: 0.0, selLow: -0.1 },
        { sel: 0.02, selLow: -0.08 },
      ],
    ]);
    const a = rankControlledHeads(clear.result, clear.controls, { topK: 1 }).functions[0];
    expect(a.separation).toMatchObject({ separated: true, tiedAtCut: false, overlapping: 0 });
    expect(a.separation.note).toMatch(/^separated: the 1st head L0H0 \(selectivity 0\.400 \[0\.300, 0\.500\]\) lies above the 2nd L0H1/);
    const close = fakeControls([
      [
        { sel: 0.3, selLow: 0.1 },
        { sel: 0.25, selLow: 0.05 },
      ],
      [
        { sel: 0.2, selLow: 0.0 },
        { sel: -0.2, selLow: -0.3 },
      ],
    ]);
    const b = rankControlledHeads(close.result, close.controls, { topK: 1 }).functions[0];
    expect(b.separation).toMatchObject({ separated: false, tiedAtCut: false, overlapping: 2 });
    expect(b.separation.note).toMatch(/^not separated: the 1st head L0H0 .* overlaps the 2nd L0H1 .*; 2 heads after the top 1 reach its interval/);
    const unknown = fakeControls([[{ sel: 0.3, selLow: NaN, selHigh: NaN }, { sel: 0.1, selLow: NaN, selHigh: NaN }]]);
    expect(rankControlledHeads(unknown.result, unknown.controls, { topK: 1 }).functions[0].separation.note).toMatch(/^separation unknown/);
  });
});
