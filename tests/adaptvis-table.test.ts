// The paper-shaped AdaptVis table from the authors' files (issue 13): a checkout in their layout (Controlled_Images_A
// prompt JSONL + annotations, VSR test.jsonl) built from synthetic scenes, run on the organism. Checks: the split is
// the authors' (splitItems), the chosen ScalingVis alpha and AdaptVis settings are the best on the 20% (ties as
// documented) and the AdaptVis grid is scored from the per-alpha runs, the test numbers equal plain evaluations of
// the 80% with the authors' rule, AdaptVis's gate on the test answers, the table and files of the CLI, VSR's F1,
// likelihood scoring, and one-line usage errors.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LlavaModel } from '../src/models/llava.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { nodeFolder } from '../src/io/checkpoint.js';
import { evaluate } from '../src/eval/evaluate.js';
import { isCorrectAdaptVis, readAdaptVis, resultsTable, splitItems, vsrMetrics, type AdaptVisItem } from '../src/eval/adaptvis-data.js';
import { runAdaptVisSubset } from '../src/eval/adaptvis-table.js';
import { gpuContext } from './helpers/gpu.js';
import { REPO_ROOT } from './helpers/fixtures.js';
import { vlmscope } from './helpers/cli.js';
import { writeSyntheticSet } from './helpers/synthetic-data.js';

const organism = join(REPO_ROOT, 'weights/organism');
const PHRASE: Record<string, string> = { left: 'to the left of', right: 'to the right of', above: 'above', below: 'below' };
const cap = (w: string) => w[0]!.toUpperCase() + w.slice(1);

/** An AdaptVis checkout (prompts/, data/) holding Controlled_Images_A and VSR made of synthetic scenes. */
function writeCheckout(root: string, scenes: number): void {
  const set = writeSyntheticSet(join(root, 'synthetic'), { seed: 41, scenes, types: ['spatial', 'vsr'] });
  const qs = readFileSync(set, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  mkdirSync(join(root, 'prompts'), { recursive: true });
  mkdirSync(join(root, 'data/controlled_images'), { recursive: true });
  mkdirSync(join(root, 'data/train2017'), { recursive: true });
  const prompts: string[] = [];
  const annotations: unknown[] = [];
  const vsr: string[] = [];
  for (const q of qs) {
    const png = readFileSync(join(root, 'synthetic', q.image));
    const name = basename(q.image);
    if (q.type === 'spatial') {
      const m = /^Where is the (.+) in relation to the (.+)\? Answer/.exec(q.question)!;
      writeFileSync(join(root, 'data/controlled_images', name), png);
      const others = Object.keys(PHRASE).filter((r) => r !== q.answer);
      prompts.push(JSON.stringify({ id: prompts.length, question: `<image>\nUSER: ${q.question}\nASSISTANT:`, answer: [cap(q.answer)] }));
      annotations.push({ image_path: `data/controlled_images/${name}`, caption_options: [q.answer, ...others].map((r) => `A ${m[1]} ${PHRASE[r]} a ${m[2]}`) });
    } else {
      writeFileSync(join(root, 'data/train2017', name), png);
      vsr.push(JSON.stringify({ image_link: `http://images.cocodataset.org/train2017/${name}`, caption: q.question.replace(/ True or false\?$/, ''), label: q.answer === 'true' ? 1 : 0 }));
    }
  }
  writeFileSync(join(root, 'prompts/Controlled_Images_A_with_answer_four_options.jsonl'), `${prompts.join('\n')}\n`);
  writeFileSync(join(root, 'data/controlled_images_dataset.json'), JSON.stringify(annotations));
  writeFileSync(join(root, 'data/test.jsonl'), `${vsr.join('\n')}\n`);
}

describe('adaptvis-table on the organism', () => {
  let work: string;
  let root: string;
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'vlmscope-adaptvis-table-'));
    root = join(work, 'AdaptVis');
    writeCheckout(root, 12);
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('library: the authors\' split, settings chosen on the 20% from the per-alpha runs, test numbers = plain evaluations of the 80%', async () => {
    const items = await readAdaptVis('Controlled_Images_A', { root });
    expect(items).toHaveLength(12);
    const model = await LlavaModel.load(await gpuContext(), organism);
    const tokenizer = await Tokenizer.fromFolder(nodeFolder(organism));
    const opts = { alphas: [0.5, 2], alphaLow: [0.5, 0.8], alphaHigh: [2], thresholds: [0.3, 0.99], maxNewTokens: 4, eosTokenIds: [2] };
    const run = await runAdaptVisSubset(model, tokenizer, 'Controlled_Images_A', items, opts);
    const split = splitItems(items, { seed: 1 });
    expect(run.tuneIndices).toEqual(split.tuneIndices);
    expect(run.testIndices).toEqual(split.testIndices);
    expect(run.tuneIndices).toHaveLength(2);
    // The tuning accuracies are plain evaluations of the 20% at each alpha, scored with the authors' rule.
    const score = (p: string, it: unknown) => isCorrectAdaptVis(p, it as AdaptVisItem);
    const at = async (todo: AdaptVisItem[], alpha: number) =>
      evaluate(model, tokenizer, todo, {
        maxNewTokens: 4,
        eosTokenIds: [2],
        score,
        ...(alpha === 1 ? {} : { interventions: { ...(await import('../src/spec/spec.js')).EMPTY_INTERVENTIONS, imageTemperature: { alpha, queries: 'last', layers: null, heads: null } } }),
      });
    expect(run.tune.alphas).toEqual([0.5, 1, 2]);
    const tuneAt = new Map<number, Awaited<ReturnType<typeof at>>>();
    for (const a of [0.5, 0.8, 1, 2]) tuneAt.set(a, await at(split.tune, a));
    expect(run.tune.accuracy).toEqual([0.5, 1, 2].map((a) => tuneAt.get(a)!.accuracy));
    // ScalingVis: the best alpha, ties to alpha 1 then the smaller.
    const order = [1, 0.5, 2];
    const bestAcc = Math.max(...order.map((a) => tuneAt.get(a)!.accuracy));
    expect(run.result.scalingVis!.alpha).toBe(order.find((a) => tuneAt.get(a)!.accuracy === bestAcc));
    // AdaptVis: every grid point scored from the per-alpha answers and the plain confidences; the first best chosen.
    const conf = (await evaluate(model, tokenizer, split.tune, { maxNewTokens: 4, eosTokenIds: [2], recordConfidence: true })).examples.map((e) => e.confidence!);
    expect(run.tune.adaptVisGrid).toHaveLength(2 * 2 * 1);
    for (const g of run.tune.adaptVisGrid) {
      const correct = conf.filter((c, i) => (c < g.threshold ? tuneAt.get(g.alphaLow)! : tuneAt.get(g.alphaHigh)!).examples[i]!.correct).length;
      expect(g.accuracy, `grid point ${JSON.stringify(g)}`).toBe(correct / 2);
    }
    const best = run.tune.adaptVisGrid.find((g) => g.accuracy === Math.max(...run.tune.adaptVisGrid.map((x) => x.accuracy)))!;
    expect(run.result.adaptVis).toMatchObject({ threshold: best.threshold, alphaLow: best.alphaLow, alphaHigh: best.alphaHigh });
    // Test split: plain and ScalingVis are evaluations of the 80%; AdaptVis's answers follow its gate.
    const base = await at(split.test, 1);
    expect(run.result.baseline).toBe(base.accuracy);
    expect(run.test.baseline.examples.map((e) => e.prediction)).toEqual(base.examples.map((e) => e.prediction));
    expect(run.result.scalingVis!.accuracy).toBe((await at(split.test, run.result.scalingVis!.alpha)).accuracy);
    for (const e of run.test.adaptVis.examples) expect(e.adaptvis!.alpha).toBe(e.adaptvis!.confidence < best.threshold ? best.alphaLow : best.alphaHigh);
    expect(run.result.adaptVis!.accuracy).toBe(run.test.adaptVis.accuracy);
    expect(run.test.adaptVis.adaptvis!.costRatio).toBeGreaterThan(0);
    // Likelihood scoring: predictions are candidates, correct iff the gold one.
    const ll = await runAdaptVisSubset(model, tokenizer, 'Controlled_Images_A', items, { ...opts, scoring: 'likelihood', alphas: [2], alphaLow: [0.5], thresholds: [0.5], limit: 3 });
    expect(ll.testIndices).toEqual(split.testIndices.slice(0, 3));
    for (const e of ll.test.baseline.examples) {
      const item = items.find((it) => it.id === e.id)!;
      expect(item.candidates).toContain(e.prediction);
      expect(e.correct).toBe(e.prediction === item.candidates[item.goldIndex]);
    }
    await expect(runAdaptVisSubset(model, tokenizer, 'VSR', items, opts)).rejects.toThrow(/item Controlled_Images_A-0 is of Controlled_Images_A/);
    await expect(runAdaptVisSubset(model, tokenizer, 'Controlled_Images_A', items, { ...opts, thresholds: [1.5] })).rejects.toThrow(/threshold: 1.5 is not in \[0, 1\]/);
    model.destroy();
  });

  it('CLI: finds both subsets, prints the paper-shaped table, writes results.json, table.md and the answers; VSR gets F1', () => {
    const out = join(work, 'table');
    const args = ['adaptvis-table', '--model', organism, '--data', root, '--alpha', '0.5,2', '--alpha-low', '0.5', '--alpha-high', '2', '--thresholds', '0.5', '--max-new-tokens', '4', '--limit', '4', '--out', out];
    const r = vlmscope(args);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
    expect(j.subsets.map((s: { subset: string }) => s.subset)).toEqual(['Controlled_Images_A', 'VSR']);
    const table = readFileSync(join(out, 'table.md'), 'utf8');
    expect(r.stdout.startsWith(table)).toBe(true);
    expect(table.split('\n')[0]).toBe('|  | Cont_A | VSR EM | VSR F1 |');
    // The table is resultsTable of the JSON's numbers.
    const results = j.subsets.map((s: any) => ({
      subset: s.subset,
      baseline: s.test.baseline,
      scalingVis: { alpha: s.scalingvis_alpha, accuracy: s.test.scalingvis },
      adaptVis: { threshold: s.adaptvis.threshold, alphaLow: s.adaptvis.alpha_low, alphaHigh: s.adaptvis.alpha_high, accuracy: s.test.adaptvis },
      ...(s.test.f1 ? { f1: s.test.f1 } : {}),
    }));
    expect(table).toBe(resultsTable(results, { model: 'organism' }));
    for (const s of j.subsets) {
      expect([s.tune_count, s.test_count], '--limit 4 of the 2 / 10 split').toEqual([2, 4]);
      const lines = readFileSync(join(out, `${s.subset}.test.jsonl`), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      expect(lines).toHaveLength(3 * s.test_count);
      for (const m of ['plain', 'scalingvis', 'adaptvis']) {
        const mine = lines.filter((l) => l.method === m);
        const acc = mine.filter((l) => l.correct).length / mine.length;
        expect(acc).toBeCloseTo(s.test[m === 'plain' ? 'baseline' : m], 12);
      }
      if (s.subset === 'VSR') {
        const plain = lines.filter((l) => l.method === 'plain');
        const items = plain.map((l) => ({ id: l.id, subset: 'VSR' as const, gold: l.answer === 'yes' ? 'Yes' : 'No' }));
        const f1 = vsrMetrics(plain.map((l) => l.prediction), items).f1;
        expect(s.test.f1.baseline, 'F1 (null in JSON when undefined)').toEqual(Number.isNaN(f1) ? null : f1);
      }
    }
  });

  it('usage errors: one line, exit 2, before the model loads', () => {
    const empty = join(work, 'empty');
    mkdirSync(empty, { recursive: true });
    const broken = join(work, 'broken');
    mkdirSync(join(broken, 'data'), { recursive: true });
    writeFileSync(join(broken, 'data/test.jsonl'), `${JSON.stringify({ image_link: 'http://images.cocodataset.org/train2017/nope.png', caption: 'A cat is left of a dog.', label: 1 })}\n`);
    for (const [args, msg] of [
      [['--data', join(work, 'missing')], /cannot read --data .*missing: no such folder/],
      [['--data', empty], /holds none of the subsets' annotation files/],
      [['--data', root, '--subsets', 'Cont_A'], /unknown subset "Cont_A"/],
      [['--data', root, '--thresholds', '0.3,1.2'], /numbers in \[0, 1\]/],
      [['--data', broken], /VSR: .*image not found: .*nope\.png/],
    ] as const) {
      const r = vlmscope(['adaptvis-table', '--model', organism, ...args]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
      expect(r.stderr).toMatch(msg);
    }
  });
});
