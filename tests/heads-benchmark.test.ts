// The planted-head benchmark (src/interp/heads-benchmark*.ts, `vlmscope heads-benchmark`): the scoring helpers on
// hand-checked score tables (ranks, precision@k, ties by the next criterion or a seeded order, never by position, the
// best function per head, the target functions from known_heads.json's question types, verdicts); the library on the
// organism with a tiny paraphrased set (every method runs; the planted object heads top the attention mass; ranks and
// precision agree with the ranking; the ablation shares runs); the CLI end to end and its one-line usage errors.

import { mkdirSync, readFileSync, readdirSync, writeFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/models/load.js';
import type { VlmModel } from '../src/models/vlm.js';
import { nodeFolder } from '../src/io/checkpoint.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { encodePng } from '../src/io/image.js';
import { readQuestions } from '../src/eval/dataset.js';
import { parseSceneRecord, type SceneRecord } from '../src/eval/counterfactual.js';
import { iterateDataset, itemToJsonl, renderScene, sceneImagePath } from '../src/eval/synthetic.js';
import type { SyntheticQuestionType } from '../src/eval/dataset.js';
import { readKnownHeads } from '../src/interp/known-heads.js';
import { benchmarkKs, runHeadsBenchmark, type HeadsBenchmarkResult } from '../src/interp/heads-benchmark.js';
import { combineFunctions, describeRanks, knownHeadRanks, precisionAtK, rankHeadScores, targetFunctions, verdict } from '../src/interp/heads-benchmark-scoring.js';
import { benchmarkCsv, benchmarkMarkdown, benchmarkSummaryCsv } from '../src/interp/heads-benchmark-report.js';
import { gpuContext } from './helpers/gpu.js';
import { tempDirs } from './helpers/compare.js';
import { REPO_ROOT } from './helpers/fixtures.js';
import { vlmscope } from './helpers/cli.js';

const tempDir = tempDirs('vlmscope-heads-benchmark-');
const ORGANISM = join(REPO_ROOT, 'weights/organism');

/** A synthetic set as scripts/make-synthetic.ts writes it (questions.jsonl, scenes.jsonl, images/). */
function writeSet(dir: string, opts: { seed: number; scenes: number; types: SyntheticQuestionType[]; wordings?: 'all' }): string {
  mkdirSync(join(dir, 'images'), { recursive: true });
  let lines = '';
  let meta = '';
  for (const s of iterateDataset({ seed: opts.seed, scenes: opts.scenes, types: opts.types, wordings: opts.wordings })) {
    writeFileSync(join(dir, sceneImagePath(s.id)), encodePng(renderScene(s.scene)));
    for (const item of s.items) lines += `${itemToJsonl(item)}\n`;
    const { objects, background } = s.scene;
    meta += `${JSON.stringify({ id: s.id, seed: s.seed, size: s.scene.size, background: background.name, objects: objects.map(({ colour, shape, x, y, d, cx, cy }) => ({ colour, shape, x, y, d, cx, cy })) })}\n`;
  }
  writeFileSync(join(dir, 'questions.jsonl'), lines);
  writeFileSync(join(dir, 'scenes.jsonl'), meta);
  return dir;
}

const grid = (values: number[], heads: number) => Array.from({ length: values.length / heads }, (_, l) => values.slice(l * heads, (l + 1) * heads));

describe('scoring helpers on hand-checked score tables', () => {
  const known = [
    { layer: 1, head: 0 },
    { layer: 1, head: 1 },
  ];

  it('planted heads 1st and 3rd: ranks 1 and 3, precision@2 = 0.5, precision@3 = 2/3', () => {
    // 2 layers x 3 heads; L1H0 scores best, L0H2 second, L1H1 third.
    const ranking = rankHeadScores([grid([0.1, 0.2, 0.8, 0.9, 0.7, 0.3], 3)], 0);
    expect(ranking.map((h) => `L${h.layer}H${h.head}`)).toEqual(['L1H0', 'L0H2', 'L1H1', 'L1H2', 'L0H1', 'L0H0']);
    expect(ranking.map((h) => h.position)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(knownHeadRanks(ranking, known).map((r) => r.rank)).toEqual([1, 3]);
    expect(precisionAtK(ranking, known, 2)).toEqual({ k: 2, hits: 1, precision: 0.5, recall: 0.5, cutInTie: false });
    expect(precisionAtK(ranking, known, 3).precision).toBeCloseTo(2 / 3, 12);
    expect(precisionAtK(ranking, known, 1).precision).toBe(1);
    expect(() => precisionAtK(ranking, known, 7)).toThrow(/k must be an integer in \[1, 6\]/);
  });

  it('ties are broken by the next criterion, then by a seeded order, never by position', () => {
    // Equal on the first criterion everywhere: the second decides, and it favours the last heads.
    const byNext = rankHeadScores([grid([1, 1, 1, 1, 1, 1], 3), grid([0, 1, 2, 3, 4, 5], 3)], 0);
    expect(byNext.map((h) => `L${h.layer}H${h.head}`)).toEqual(['L1H2', 'L1H1', 'L1H0', 'L0H2', 'L0H1', 'L0H0']);
    expect(byNext.every((h) => h.rank === h.position && h.tiedFrom === h.tiedTo)).toBe(true);
    // Equal on every criterion: one shared rank spanning all places, the order a function of the seed.
    const orders = new Set<string>();
    for (let seed = 0; seed < 6; seed++) {
      const r = rankHeadScores([grid([0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 3)], seed);
      expect(r.every((h) => h.rank === 1 && h.tiedFrom === 1 && h.tiedTo === 6)).toBe(true);
      orders.add(r.map((h) => `${h.layer}${h.head}`).join());
      expect(precisionAtK(r, known, 2).cutInTie).toBe(true);
    }
    expect(orders.size).toBeGreaterThan(1);
    // The same seed gives the same order.
    expect(rankHeadScores([grid([0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 3)], 3)).toEqual(rankHeadScores([grid([0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 3)], 3));
    // A tie in the middle: L0H1 and L1H1 share 2nd-3rd; NaN ranks last.
    const mid = rankHeadScores([grid([NaN, 0.5, 0.2, 0.9, 0.5, 0.1], 3)], 1);
    expect(mid.map((h) => `L${h.layer}H${h.head}`).slice(0, 1)).toEqual(['L1H0']);
    expect(new Set(mid.slice(1, 3).map((h) => `L${h.layer}H${h.head}`))).toEqual(new Set(['L0H1', 'L1H1']));
    expect(mid.slice(1, 3).map((h) => [h.rank, h.tiedFrom, h.tiedTo])).toEqual([
      [2, 2, 3],
      [2, 2, 3],
    ]);
    expect(`L${mid[5]!.layer}H${mid[5]!.head}`).toBe('L0H0');
    expect(describeRanks(knownHeadRanks(mid, known))).toMatch(/^L1H0 1st, L1H1 (2nd|3rd) \(tied 2nd-3rd\)$/);
  });

  it('a head counts with its best function; NaN only where no function scores it', () => {
    const a = [grid([0.9, 0.1, NaN, 0.2], 2), grid([0.5, 0.5, NaN, NaN], 2)];
    const b = [grid([0.3, 0.8, NaN, 0.1], 2), grid([0.6, 0.4, NaN, 0.7], 2)];
    const c = combineFunctions([a, b]);
    expect(c[0]).toEqual(grid([0.9, 0.8, NaN, 0.2], 2));
    expect(c[1]).toEqual(grid([0.6, 0.5, NaN, 0.7], 2));
  });

  it('target functions come from the known heads\' question types and the data\'s labels', () => {
    const items = [
      { type: 'spatial', function: 'decision' },
      { type: 'subquestion', function: 'relational_reasoning', mainId: 'm' },
      { type: 'subquestion', function: 'spatial_perception', mainId: 'm' },
      { type: 'vsr', function: 'relational_reasoning' },
      { type: 'color', function: 'low_level_perception' },
    ];
    const t = targetFunctions(['spatial', 'vsr', 'sub:relational_reasoning', 'sub:spatial_perception', 'sub:math', 'whatsup'], items);
    expect(t.functions).toEqual(['decision', 'relational_reasoning', 'spatial_perception']);
    expect(t.sources[0]).toEqual({ questionType: 'spatial', functions: ['decision'] });
    expect(t.missing).toEqual(['sub:math', 'whatsup']);
  });

  it('precision@k list and verdicts', () => {
    expect(benchmarkKs(undefined, 2, 32)).toEqual([2, 4, 8]);
    expect(benchmarkKs(undefined, 2, 6)).toEqual([2, 4]);
    expect(benchmarkKs([8, 2], 2, 32)).toEqual([2, 8]);
    expect(() => benchmarkKs([0], 2, 32)).toThrow(/k 0 is out of range: .* 1\.\.32/);
    expect(() => benchmarkKs([33], 2, 32)).toThrow(/k 33 is out of range/);
    const ranking = rankHeadScores([grid([0.1, 0.2, 0.8, 0.9, 0.7, 0.3], 3)], 0);
    const ranks = knownHeadRanks(ranking, known);
    const hurts = { k: 2, baseline: 1, top: 0.3, randomMean: 0.95, randomStd: 0.02, t: -70, p: 1e-6 };
    expect(verdict('m', ranks, precisionAtK(ranking, known, 2), hurts).finding).toBe('partly');
    const perfect = rankHeadScores([grid([0.1, 0.2, 0.3, 0.9, 0.8, 0.4], 3)], 0);
    const v = verdict('m', knownHeadRanks(perfect, known), precisionAtK(perfect, known, 2), hurts);
    expect(v).toEqual({ finding: 'finds', text: expect.stringMatching(/^m finds the planted heads: ranks L1H0 1st, L1H1 2nd; precision@2 = 1\.00; ablating its top-2 takes spatial accuracy 100\.0% -> 30\.0% vs 95\.0% \+- 2\.0% for random-2 \(t = -70\.00, p = 1\.0e-6\)\.$/) });
    expect(verdict('m', knownHeadRanks(perfect, known), precisionAtK(perfect, known, 2), { ...hurts, top: 0.95, t: 0, p: 1 }).finding).toBe('partly');
    // A baseline the model mostly fails leaves the ablation nothing to show: it does not count either way.
    const low = verdict('m', knownHeadRanks(perfect, known), precisionAtK(perfect, known, 2), { ...hurts, baseline: 0.2, top: 0.2, randomMean: 0.2, t: 0, p: 1 });
    expect(low.finding).toBe('finds');
    expect(low.text).toMatch(/a baseline below 50\.0% leaves the ablation nothing to show, so it does not count\)\.$/);
    const worst = rankHeadScores([grid([0.9, 0.8, 0.7, 0.1, 0.2, 0.6], 3)], 0);
    expect(verdict('m', knownHeadRanks(worst, known), precisionAtK(worst, known, 2), null).finding).toBe('misses');
    expect(verdict('m', null, null, null, 0.05, 'no pairs').text).toBe('m: no result (no pairs).');
  });
});

describe('the library on the organism (tiny paraphrased set)', () => {
  let model: VlmModel;
  let tokenizer: Tokenizer;
  let result: HeadsBenchmarkResult;
  let rankedAgain: boolean;

  beforeAll(async () => {
    const dir = writeSet(await tempDir(), { seed: 3003, scenes: 3, types: ['spatial', 'vsr'], wordings: 'all' });
    const folder = nodeFolder(ORGANISM);
    model = await loadModel(await gpuContext(), folder);
    tokenizer = await Tokenizer.fromFolder(folder);
    const items = await readQuestions(join(dir, 'questions.jsonl'), { includeSubQuestions: true });
    const scenes = new Map<string, SceneRecord>();
    readFileSync(join(dir, 'scenes.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .forEach((l, i) => {
        const r = parseSceneRecord(l, `scenes.jsonl line ${i + 1}`);
        scenes.set(r.id, r);
      });
    const knownHeads = await readKnownHeads(ORGANISM, model.dims);
    const stages: string[] = [];
    result = await runHeadsBenchmark(model, tokenizer, {
      items,
      scenes,
      knownHeads,
      seeds: [0, 1, 2],
      permutations: 2,
      mlpSeeds: [0, 1],
      mlpEpochs: 2,
      mlpBatchSize: 8,
      pairs: 1,
      attentionQuestions: 2,
      ablationSeeds: 2,
      ablationQuestions: 2,
      probeContext: await gpuContext(),
      onProgress: (p) => {
        if (stages[stages.length - 1] !== p.stage) stages.push(p.stage);
      },
    });
    for (const s of ['collect', 'patching', 'attention', 'ablation']) expect(stages).toContain(s);
    expect(stages.indexOf('collect')).toBe(0);
    expect(stages[stages.length - 1]).toBe('ablation');
    rankedAgain = result.methods.every((m) => !m.ok || JSON.stringify(knownHeadRanks(m.ranking, [{ layer: 1, head: 0 }, { layer: 1, head: 1 }])) === JSON.stringify(m.known));
  });

  it('reads the known heads and their target functions from the model folder and the data', () => {
    expect(result.known.heads.map((h) => `L${h.layer}H${h.head}`)).toEqual(['L1H0', 'L1H1']);
    expect(result.targets.functions).toEqual(['decision', 'relational_reasoning', 'spatial_perception']);
    expect(result.ks).toEqual([2, 4, 8]);
    expect([result.layers, result.heads, result.data.spatialQuestions, result.data.wordings]).toEqual([4, 8, 3, true]);
  });

  it('every method ranks all 32 heads; known ranks and precision@k agree with the ranking', () => {
    expect(result.methods.map((m) => m.method)).toEqual(['probe', 'selectivity', 'mlp', 'patching', 'attention']);
    for (const m of result.methods.filter((x) => x.ok)) {
      expect(m.ranking).toHaveLength(32);
      expect(new Set(m.ranking.map((h) => `${h.layer}:${h.head}`)).size).toBe(32);
      expect(m.precision.map((p) => p.k)).toEqual([2, 4, 8]);
      for (const p of m.precision) {
        const top = new Set(m.ranking.slice(0, p.k).map((h) => `L${h.layer}H${h.head}`));
        expect(p.hits).toBe(['L1H0', 'L1H1'].filter((h) => top.has(h)).length);
      }
    }
    expect(rankedAgain).toBe(true);
    // Methods that need no probe split always have a result here.
    for (const name of ['patching', 'attention', 'probe', 'mlp']) expect(result.methods.find((m) => m.method === name)!.ok, name).toBe(true);
    // Per-function detail: target functions only, each scored or listed as skipped with the reason.
    for (const m of result.methods.filter((x) => x.ok && x.functions.length)) {
      const fns = [...m.functions.map((f) => f.function), ...m.skipped.map((s) => s.function)].sort();
      expect(fns, m.method).toEqual(result.targets.functions);
    }
  });

  it('the attention mass ranks the planted object heads first (they were trained to look at the named objects)', () => {
    const att = result.methods.find((m) => m.method === 'attention')!;
    expect(att.known.map((k) => k.rank).sort()).toEqual([1, 2]);
    expect(att.precision[0]!.precision).toBe(1);
    expect(att.settings.questions).toBe(2);
  });

  it('ablation: the baseline once, runs of equal head sets shared, Welch t of top-k against random-k', () => {
    const a = result.ablation!;
    expect([a.k, a.seeds, a.questions]).toEqual([2, 2, 2]);
    const sets = new Set<string>();
    for (const m of result.methods.filter((x) => x.ok)) {
      const ab = m.ablation!;
      expect(ab.topHeads).toEqual(m.ranking.slice(0, 2).map(({ layer, head }) => ({ layer, head })));
      expect(ab.random).toHaveLength(2);
      for (const r of ab.random) expect(r.heads.some((h) => ab.topHeads.some((t) => t.layer === h.layer && t.head === h.head))).toBe(false);
      for (const hs of [ab.topHeads, ...ab.random.map((r) => r.heads)]) sets.add(hs.map((h) => `${h.layer}:${h.head}`).sort().join());
      expect(ab.method).toBe('one_sample');
      expect(ab.baseline).toBe(a.baseline);
    }
    expect(a.runs).toBe(1 + sets.size);
  });

  it('writes the report: markdown tables, CSVs with every head per method', () => {
    const md = benchmarkMarkdown(result);
    expect(md).toMatch(/^# Planted-head benchmark\n/);
    expect(md).toContain('| method | known heads\' ranks | P@2 | P@4 | P@8 | top-2 | top-2 ablated | random-2 ablated | t | p | finds them? |');
    expect(md).toContain('attention mass on the named objects');
    const csv = benchmarkCsv(result).trim().split('\n');
    expect(csv[0]).toBe('method,position,rank,layer,head,known,value_1,value_2,value_3,value_4');
    expect(csv).toHaveLength(1 + 32 * result.methods.filter((m) => m.ok).length);
    const summary = benchmarkSummaryCsv(result).trim().split('\n');
    expect(summary[0]).toBe('method,ok,rank_L1H0,rank_L1H1,precision_at_2,precision_at_4,precision_at_8,ablation_k,baseline,top_k,random_k_mean,random_k_std,t,p,finding');
    expect(summary).toHaveLength(6);
  });
});

describe('vlmscope heads-benchmark', () => {
  let data: string;
  beforeAll(async () => {
    data = writeSet(await tempDir(), { seed: 5, scenes: 2, types: ['spatial'] });
  });

  it('end to end (patching and attention): writes the JSON, markdown and CSVs', async () => {
    const out = join(await tempDir(), 'out');
    const r = vlmscope(['heads-benchmark', '--data', data, '--methods', 'patching,attention', '--pairs', '1', '--k', '2,4', '--ablation-seeds', '2', '--ablation-questions', '1', '--out', out], 300_000);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(readdirSync(out).sort()).toEqual(['heads-benchmark-summary.csv', 'heads-benchmark.csv', 'heads-benchmark.json', 'heads-benchmark.md']);
    expect(r.stdout).toMatch(/^activation patching \(recovery\) .*\nattention mass on the named objects .*\nwrote /);
    const j = JSON.parse(readFileSync(join(out, 'heads-benchmark.json'), 'utf8'));
    expect(j.ks).toEqual([2, 4]);
    expect(j.methods.map((m: { method: string; ok: boolean }) => [m.method, m.ok])).toEqual([
      ['patching', true],
      ['attention', true],
    ]);
    expect(j.ablation).toMatchObject({ k: 2, seeds: 2, questions: 1 });
    expect(j.known.heads.map((h: { layer: number; head: number }) => `L${h.layer}H${h.head}`)).toEqual(['L1H0', 'L1H1']);
    const md = readFileSync(join(out, 'heads-benchmark.md'), 'utf8');
    expect(md).toContain('## Summary');
    expect(md).toContain('## Verdicts');
    expect(readFileSync(join(out, 'heads-benchmark.csv'), 'utf8').trim().split('\n')).toHaveLength(1 + 2 * 32);
  });

  it('one-line usage errors before the model loads', async () => {
    const dir = await tempDir();
    // A model folder without known_heads.json.
    const bare = join(dir, 'bare');
    mkdirSync(bare);
    for (const f of readdirSync(ORGANISM)) if (f !== 'known_heads.json' && f !== 'model.safetensors') copyFileSync(join(ORGANISM, f), join(bare, f));
    // Data without scenes.jsonl.
    const noScenes = join(dir, 'no-scenes');
    mkdirSync(noScenes);
    copyFileSync(join(data, 'questions.jsonl'), join(noScenes, 'questions.jsonl'));
    const cases: [string[], RegExp][] = [
      [['--model', bare, '--data', data], /known_heads\.json: not found; a model with planted heads declares them there/],
      [['--data', noScenes], /the data has no scenes\.jsonl \(.*\): the patching and attention methods need the scenes' objects/],
      [['--data', data, '--k', '0'], /option '--k <list>' argument '0' is invalid/],
      [['--data', data, '--k', '2,40'], /--k: k 40 is out of range: precision@k needs an integer k in 1\.\.32/],
      [['--data', data, '--methods', 'probe,magic'], /option '--methods <list>' argument 'probe,magic' is invalid/],
      [['--data', join(dir, 'nowhere')], /--data .*nowhere: no such file or folder/],
    ];
    for (const [args, msg] of cases) {
      const r = vlmscope(['heads-benchmark', ...args, '--out', join(dir, 'out')]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(msg);
      expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
    }
    expect(readdirSync(dir).includes('out')).toBe(false);
  });
});
