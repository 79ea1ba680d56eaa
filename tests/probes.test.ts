// Functional-head probing: planted-signal recovery, splits by main question, determinism per seed, ranking ties,
// heatmaps.

import { describe, expect, it } from 'vitest';
import { type ProbeExample, type ProbeResult, type SplitIndices, fitProbes, headsHeatmapPng, probeSplit, rankHeads, viridis } from '../src/interp/probes.js';
import { decodeImage } from '../src/io/image.js';
import { gpuContext, rng } from './helpers/gpu.js';

const [L, H, F] = [4, 6, 8];
const PLANTED: Record<string, [number, number][]> = {
  A: [
    [0, 2],
    [1, 4],
    [3, 0],
  ],
  B: [
    [2, 1],
    [2, 5],
    [3, 3],
  ],
};

/**
 * `mains` main questions with one sub-question of each of A, B, C (about 1 in 12 answered wrongly). Every head's
 * features are uniform noise in [-1, 1]; on the planted heads of A (B), feature 0 also carries +1.5 for A (B)
 * examples and -1.5 for the others.
 */
function plantedData(mains: number, seed = 7): { examples: ProbeExample[]; features: Float32Array } {
  const r = rng(seed);
  const examples: ProbeExample[] = [];
  for (let m = 0; m < mains; m++)
    for (const fn of ['A', 'B', 'C']) examples.push({ id: `m${m}-${fn}`, mainId: `m${m}`, function: fn, correct: r() > 1 / 12 });
  const features = new Float32Array(examples.length * L * H * F);
  examples.forEach((e, n) => {
    for (let i = 0; i < L * H * F; i++) features[n * L * H * F + i] = r() * 2 - 1;
    for (const [fn, heads] of Object.entries(PLANTED))
      for (const [l, h] of heads) features[((n * L + l) * H + h) * F] += e.function === fn ? 1.5 : -1.5;
  });
  // Shuffle the rows so that examples of one main question are not adjacent (rows are addressed through `row`).
  const order = examples.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const shuffled = new Float32Array(features.length);
  const rowSize = L * H * F;
  order.forEach((src, dst) => shuffled.set(features.subarray(src * rowSize, (src + 1) * rowSize), dst * rowSize));
  const rowOf = new Map(order.map((src, dst) => [src, dst]));
  return { examples: examples.map((e, i) => ({ ...e, row: rowOf.get(i)! })), features: shuffled };
}

const topSet = (rk: ReturnType<typeof rankHeads>, fn: string) =>
  rk.functions
    .find((f) => f.function === fn)!
    .top.map((h) => `${h.layer},${h.head}`)
    .sort();
const planted = (fn: string) => PLANTED[fn].map(([l, h]) => `${l},${h}`).sort();

describe('fitProbes + rankHeads', () => {
  const data = plantedData(50);
  const base = { features: data.features, layers: L, heads: H, dim: F, examples: data.examples, iterations: 100 };

  it('recovers exactly the planted heads of each function as the top set (GPU)', async () => {
    const ctx = await gpuContext();
    const res = await fitProbes(ctx, base);
    expect(res.backend).toBe('gpu');
    expect(res.functions.map((f) => f.function)).toEqual(['A', 'B', 'C']);
    const rk = rankHeads(res, { topPercent: 12.5 }); // 3 of 24 heads
    expect(rk.k).toBe(3);
    for (const fn of ['A', 'B']) {
      expect(topSet(rk, fn)).toEqual(planted(fn));
      const fp = res.functions.find((f) => f.function === fn)!;
      for (const [l, h] of PLANTED[fn]) expect(fp.mean[l][h]).toBeGreaterThan(0.95);
      // every other head of this function scores below every planted one
      const best = rk.functions.find((f) => f.function === fn)!.ranking[3];
      expect(best.accuracy).toBeLessThan(0.9);
      expect(fp.accuracy).toHaveLength(3);
      expect(fp.accuracy[0]).toHaveLength(L);
      expect(fp.accuracy[0][0]).toHaveLength(H);
      expect(fp.probes.seed).toBe(0);
      expect(fp.probes.weights).toHaveLength(L * H * F);
      expect(fp.probes.bias).toHaveLength(L * H);
      // the planted feature dominates the planted heads' probe weights
      const [l, h] = PLANTED[fn][0];
      const w = Array.from(fp.probes.weights.subarray((l * H + h) * F, (l * H + h + 1) * F), Math.abs);
      expect(w.indexOf(Math.max(...w))).toBe(0);
    }
    // The CPU reference backend selects the same heads.
    const cpu = await fitProbes(null, base);
    expect(cpu.backend).toBe('cpu');
    const rkc = rankHeads(cpu, { topPercent: 12.5 });
    for (const fn of ['A', 'B']) expect(topSet(rkc, fn)).toEqual(planted(fn));
  });

  it('is deterministic per seed: same seeds, same splits, accuracies and ranking; other seeds, other splits', async () => {
    const ctx = await gpuContext();
    const opts = { ...base, seeds: [4, 9], iterations: 40, functions: ['A', 'C'] };
    const a = await fitProbes(ctx, opts);
    const b = await fitProbes(ctx, opts);
    expect(b.functions.map((f) => [f.splits, f.accuracy])).toEqual(a.functions.map((f) => [f.splits, f.accuracy]));
    expect(rankHeads(b)).toEqual(rankHeads(a));
    expect(a.functions.map((f) => f.function)).toEqual(['A', 'C']);
    const c = await fitProbes(ctx, { ...opts, seeds: [5] });
    expect(c.functions[0].splits[0].test).not.toEqual(a.functions[0].splits[0].test);
    // seed 9's split does not depend on which other seeds are run
    const d = await fitProbes(ctx, { ...opts, seeds: [9] });
    expect(d.functions[0].splits[0]).toEqual(a.functions[0].splits[1]);
    expect(d.functions[0].accuracy[0]).toEqual(a.functions[0].accuracy[1]);
  });

  it('skips functions that cannot be split by main question, with the reason', async () => {
    const ex: ProbeExample[] = [
      ...data.examples.slice(0, 30),
      { id: 'solo-1', mainId: 'solo', function: 'D', correct: true, row: 0 },
      { id: 'solo-2', mainId: 'solo', function: 'D', correct: true, row: 1 },
    ];
    const res = await fitProbes(null, { ...base, examples: ex, iterations: 5, seeds: [0] });
    expect(res.skipped).toEqual([{ function: 'D', reason: expect.stringMatching(/at least 2 main questions/) }]);
    expect(res.functions.map((f) => f.function)).toEqual(['A', 'B', 'C']);
  });

  it('refuses inconsistent inputs', async () => {
    await expect(fitProbes(null, { ...base, features: base.features.subarray(1) })).rejects.toThrow(/whole number of rows/);
    await expect(fitProbes(null, { ...base, examples: [{ id: 1, mainId: 1, function: 'A', correct: true, row: 99999 }] })).rejects.toThrow(/row 99999/);
    await expect(fitProbes(null, { ...base, seeds: [1, 1] })).rejects.toThrow(/seeds repeat/);
  });
});

describe('probeSplit', () => {
  // Main questions with 1-5 sub-questions of random functions, some answered wrongly.
  const r = rng(3);
  const fns = ['spatial', 'relational', 'low', 'high', 'math'];
  const examples: ProbeExample[] = [];
  for (let m = 0; m < 70; m++) {
    const k = 1 + Math.floor(r() * 5);
    for (let j = 0; j < k; j++) examples.push({ id: `q${m}.${j}`, mainId: m, function: fns[Math.floor(r() * fns.length)], correct: r() > 0.2 });
  }

  it('never puts one main question on both sides, balances classes and uses only correct examples', () => {
    for (const fn of fns)
      for (let seed = 0; seed < 10; seed++) {
        const s = probeSplit(examples, fn, seed, 0.2);
        if ('reason' in s) throw new Error(s.reason);
        const mains = (idx: number[]) => new Set(idx.map((i) => String(examples[i].mainId)));
        const trainMains = mains(s.train);
        for (const m of mains(s.test)) expect(trainMains.has(m)).toBe(false);
        for (const i of [...s.train, ...s.test]) {
          expect(examples[i].correct).toBe(true);
          expect(s.positive.has(i)).toBe(examples[i].function === fn);
        }
        // every correct positive is used; negatives match positives on each side when there are enough candidates
        const pos = examples.filter((e) => e.correct && e.function === fn).length;
        const count = (idx: number[]) => idx.filter((i) => s.positive.has(i)).length;
        expect(count(s.train) + count(s.test)).toBe(pos);
        expect(s.train.length - count(s.train)).toBe(count(s.train));
        expect(s.test.length - count(s.test)).toBeLessThanOrEqual(count(s.test));
        expect(count(s.test)).toBeGreaterThanOrEqual(1);
        expect(Math.abs(count(s.test) - 0.2 * pos)).toBeLessThanOrEqual(5); // whole main questions move together
      }
  });

  it('is a function of (examples, function, seed) only', () => {
    expect(probeSplit(examples, 'math', 4)).toEqual(probeSplit(examples, 'math', 4));
    expect(probeSplit(examples, 'math', 4)).not.toEqual(probeSplit(examples, 'math', 5));
  });

  it('fitProbes reports the same split, by example id, and keeps main questions apart', async () => {
    const features = new Float32Array(examples.length * 2 * 2 * 3).map(() => r());
    const res = await fitProbes(null, { features, layers: 2, heads: 2, dim: 3, examples, iterations: 3, seeds: [0, 1] });
    const mainOf = new Map(examples.map((e) => [e.id, String(e.mainId)]));
    for (const fp of res.functions)
      for (const sp of fp.splits) {
        const train = new Set(sp.train.map((id) => mainOf.get(id)));
        expect(sp.test.some((id) => train.has(mainOf.get(id)))).toBe(false);
        const direct = probeSplit(examples, fp.function, sp.seed);
        if ('reason' in direct) throw new Error(direct.reason);
        expect(sp.test).toEqual(direct.test.map((i) => examples[i].id));
        expect(sp.trainPositives + sp.trainNegatives).toBe(sp.train.length);
      }
  });
});

describe('rankHeads ties and selection', () => {
  const fake = (mean: number[][]): Pick<ProbeResult, 'layers' | 'heads' | 'functions'> => ({
    layers: mean.length,
    heads: mean[0].length,
    functions: [{ function: 'f', mean, std: mean.map((r) => r.map(() => 0)) } as unknown as ProbeResult['functions'][number]],
  });

  it('breaks ties by the lower std, then a seeded order with a shared rank, never by layer and head', () => {
    const a = (0.1 + 0.2 + 0.3) / 3;
    const b = (0.3 + 0.2 + 0.1) / 3; // differs from a in the last bit: still a tie
    expect(a).not.toBe(b);
    const withStd = (mean: number[][], std: number[][], fn = 'f'): Pick<ProbeResult, 'layers' | 'heads' | 'functions'> => ({
      layers: mean.length,
      heads: mean[0].length,
      functions: [{ function: fn, mean, std } as unknown as ProbeResult['functions'][number]],
    });
    const rk = rankHeads(withStd([[0.5, b, 0.9], [a, 0.9, b]], [[0, 0.2, 0.1], [0.1, 0.05, 0.1]]), { topK: 3 });
    // 0.9: L1H1 (std 0.05) before L0H2 (0.1); 0.2: L0H1 (std 0.2) after the two with std 0.1, which tie.
    const r = rk.functions[0].ranking.map((h) => [h.layer, h.head, h.rank]);
    expect(r.slice(0, 2)).toEqual([[1, 1, 1], [0, 2, 2]]);
    expect(r[2]).toEqual([0, 0, 3]);
    expect(r.slice(3, 5).map((x) => x[2])).toEqual([4, 4]);
    expect(new Set(r.slice(3, 5).map((x) => `${x[0]}:${x[1]}`))).toEqual(new Set(['1:0', '1:2']));
    expect(r[5]).toEqual([0, 1, 6]);
    expect(rk.functions[0].top.map((h) => [h.layer, h.head])).toEqual([[1, 1], [0, 2], [0, 0]]);
    // Saturated scores: every head ties; the order is seeded per function, not positional, and repeatable.
    const flat = Array.from({ length: 4 }, () => Array(8).fill(1));
    const zeros = flat.map((row) => row.map(() => 0));
    const orders = ['f', 'g', 'h', 'spatial'].map((fn) => rankHeads(withStd(flat, zeros, fn), { topK: 3 }).functions[0].ranking.map((h) => h.layer * 8 + h.head));
    expect(orders.some((o) => o.some((x, i) => x !== i)), 'not in (layer, head) order').toBe(true);
    expect(rankHeads(withStd(flat, zeros, 'g'), { topK: 3 }).functions[0].ranking.map((h) => h.layer * 8 + h.head)).toEqual(orders[1]);
    expect(new Set(rankHeads(withStd(flat, zeros, 'g'), { topK: 3 }).functions[0].ranking.map((h) => h.rank))).toEqual(new Set([1]));
  });

  it('selects round(topPercent% of the heads), at least one; NaN ranks last', () => {
    const grid = Array.from({ length: 32 }, (_, l) => Array.from({ length: 32 }, (_, h) => ((l * 7 + h * 13) % 101) / 100));
    expect(rankHeads(fake(grid)).k).toBe(102);
    expect(rankHeads(fake(grid), { topPercent: 5 }).k).toBe(51);
    expect(rankHeads(fake([[0.7, 0.6]]), { topPercent: 1 }).k).toBe(1);
    const withNaN = rankHeads(fake([[NaN, 0.6, 0.6]]), { topPercent: 100 });
    expect(withNaN.functions[0].ranking.map((h) => [h.head, h.rank]).sort()).toEqual([[0, 3], [1, 1], [2, 1]]);
    expect(withNaN.functions[0].ranking[2].head, 'NaN last').toBe(0);
    expect(() => rankHeads(fake(grid), { topPercent: 0 })).toThrow(/topPercent/);
  });
});

describe('headsHeatmapPng', () => {
  it('draws one viridis cell per head, layer 0 on top, with highlighted cells framed', () => {
    const acc = [
      [0.5, 1, 0.75],
      [NaN, 0.2, 0.9],
    ];
    const png = headsHeatmapPng(acc, { cell: 12, highlight: [{ layer: 1, head: 2 }] });
    const img = decodeImage(png, 'heatmap.png');
    expect([img.width, img.height]).toEqual([3 * 13 + 1, 2 * 13 + 1]);
    const px = (x: number, y: number) => Array.from(img.data.subarray((y * img.width + x) * 3, (y * img.width + x) * 3 + 3));
    const centre = (l: number, h: number) => px(1 + h * 13 + 6, 1 + l * 13 + 6);
    expect(centre(0, 0)).toEqual(viridis(0));
    expect(centre(0, 1)).toEqual(viridis(1));
    expect(centre(0, 2)).toEqual(viridis(0.5));
    expect(centre(1, 0)).toEqual([128, 128, 128]);
    expect(centre(1, 1)).toEqual(viridis(0)); // below the range: clamped
    expect(centre(1, 2)).toEqual(viridis(0.8));
    expect(px(1 + 2 * 13, 1 + 13)).toEqual([230, 20, 20]); // frame corner of the highlighted cell
    expect(px(0, 0)).toEqual([32, 32, 32]); // grid line
    expect(() => headsHeatmapPng(acc, { cell: 8 })).toThrow(/at least|>= 12/);
  });
});

describe('the split by wording', () => {
  // 120 main questions with one sub-question of each of A, B, C; each example worded in one of 5 wordings of its
  // function, wording 4 held out (as make-synthetic --wordings all). Head (0, 0) reads only the template: a one-hot
  // of (function, wording) in features 0..14. Head (0, 1) reads the content: feature 0 is +1.5 for A examples and
  // -1.5 otherwise, plus noise, whatever the wording. Head (0, 2) is noise.
  const [WL, WH, WF] = [1, 3, 16];
  const FNS = ['A', 'B', 'C'];
  const r = rng(21);
  const examples: ProbeExample[] = [];
  for (let m = 0; m < 120; m++)
    for (const fn of FNS) {
      const w = Math.floor(r() * 5);
      examples.push({ id: `m${m}-${fn}`, mainId: `m${m}`, function: fn, correct: r() > 0.05, wording: `${fn}.w${w}`, wordingHeldout: w === 4, row: examples.length });
    }
  const features = new Float32Array(examples.length * WL * WH * WF);
  examples.forEach((e, n) => {
    const template = FNS.indexOf(e.function) * 5 + Number(e.wording!.slice(-1));
    features[(n * WH + 0) * WF + template] = 1;
    for (let f = 0; f < WF; f++) features[(n * WH + 1) * WF + f] = r() * 2 - 1;
    features[(n * WH + 1) * WF] += e.function === 'A' ? 1.5 : -1.5;
    for (let f = 0; f < WF; f++) features[(n * WH + 2) * WF + f] = r() * 2 - 1;
  });
  const base = { features, layers: WL, heads: WH, dim: WF, examples, iterations: 150, seeds: [0, 1] };

  it('puts held-out wordings only in test and the other wordings only in training, balanced, deterministic per seed', () => {
    for (const fn of FNS)
      for (const seed of [0, 1, 2]) {
        const s = probeSplit(examples, fn, seed, 0.2, 'wording');
        if ('reason' in s) throw new Error(s.reason);
        for (const i of s.test) expect(examples[i].wordingHeldout).toBe(true);
        for (const i of s.train) expect(examples[i].wordingHeldout).toBe(false);
        for (const i of [...s.train, ...s.test]) expect(examples[i].correct).toBe(true);
        const positives = (idx: number[]) => idx.filter((i) => s.positive.has(i)).length;
        // every correct positive is used, and each side has as many negatives as positives
        expect(positives(s.train) + positives(s.test)).toBe(examples.filter((e) => e.correct && e.function === fn).length);
        expect(s.train.length).toBe(2 * positives(s.train));
        expect(s.test.length).toBe(2 * positives(s.test));
        expect(probeSplit(examples, fn, seed, 0.2, 'wording')).toEqual(s);
      }
    // The membership is fixed by the wordings; seeds change only which negatives are drawn.
    const [a, b] = [0, 1].map((seed) => probeSplit(examples, 'A', seed, 0.2, 'wording') as SplitIndices);
    expect(a.test.filter((i) => a.positive.has(i))).toEqual(b.test.filter((i) => b.positive.has(i)));
    expect(a.test).not.toEqual(b.test);
    // testFraction does not matter to it; the default split is still by main question.
    expect(probeSplit(examples, 'A', 0, 0.5, 'wording')).toEqual(a);
    expect(probeSplit(examples, 'A', 0)).toEqual(probeSplit(examples, 'A', 0, 0.2, 'question'));
  });

  it('tells a head that reads the template from one that reads the content', async () => {
    const byQuestion = await fitProbes(null, base);
    const byWording = await fitProbes(null, { ...base, splitBy: 'wording' });
    expect([byQuestion.splitBy, byWording.splitBy]).toEqual(['question', 'wording']);
    const mean = (res: ProbeResult, fn: string, h: number) => res.functions.find((f) => f.function === fn)!.mean[0][h];
    for (const fn of FNS) {
      // Split by main question, the template head looks as good as a content head: the test wordings were trained on.
      expect(mean(byQuestion, fn, 0)).toBeGreaterThan(0.95);
      // Split by wording, it has never seen the test templates: every test example gets one logit, exactly chance.
      for (const acc of byWording.functions.find((f) => f.function === fn)!.accuracy) expect(acc[0][0]).toBe(0.5);
    }
    // The content head survives the held-out wordings.
    expect(mean(byQuestion, 'A', 1)).toBeGreaterThan(0.9);
    expect(mean(byWording, 'A', 1)).toBeGreaterThan(0.9);
    expect(rankHeads(byWording, { topK: 1 }).functions.find((f) => f.function === 'A')!.top[0]).toMatchObject({ layer: 0, head: 1 });
    // fitProbes reports the split it made: test ids are all in held-out wordings.
    const heldout = new Set(examples.filter((e) => e.wordingHeldout).map((e) => e.id));
    for (const fp of byWording.functions)
      for (const sp of fp.splits) {
        expect(sp.test.every((id) => heldout.has(id))).toBe(true);
        expect(sp.train.some((id) => heldout.has(id))).toBe(false);
      }
  });

  it('skips a function with no held-out (or no training) wording, and needs every example\'s flag', async () => {
    const noHeldoutA = examples.map((e) => (e.function === 'A' ? { ...e, wordingHeldout: false } : e));
    expect(probeSplit(noHeldoutA, 'A', 0, 0.2, 'wording')).toEqual({ reason: expect.stringMatching(/no correct example in a held-out wording/) });
    const allHeldoutB = examples.map((e) => (e.function === 'B' ? { ...e, wordingHeldout: true } : e));
    expect(probeSplit(allHeldoutB, 'B', 0, 0.2, 'wording')).toEqual({ reason: expect.stringMatching(/no correct example in a training wording/) });
    const res = await fitProbes(null, { ...base, examples: noHeldoutA, iterations: 5, seeds: [0], splitBy: 'wording' });
    expect(res.skipped).toEqual([{ function: 'A', reason: expect.stringMatching(/held-out wording/) }]);
    const unflagged = examples.map((e, i) => (i === 7 ? { ...e, wordingHeldout: undefined } : e));
    expect(() => probeSplit(unflagged, 'A', 0, 0.2, 'wording')).toThrow(/example "m2-B" has none/);
    expect(() => probeSplit(examples, 'A', 0, 0.2, 'template' as 'wording')).toThrow(/splitBy must be one of question, wording/);
  });
});
