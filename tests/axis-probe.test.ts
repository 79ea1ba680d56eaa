// Dual Mechanisms vision-token enhancement (src/interp/axis-probe.ts, `vlmscope axis-probe`): AdamW against a float64
// hand computation, the probe's cross-entropy gradient against finite differences, box pooling on a known grid,
// probes on separable vs shuffled features, the random control's unit-norm columns, the sweep at alpha 0 against
// plain evaluation on the shipped organism (and vision_token_add at alpha 0 against no intervention), the CLI end
// to end on ~12 synthetic scenes, and one-line errors that write nothing.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/models/load.js';
import type { VlmModel } from '../src/models/vlm.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { nodeFolder } from '../src/io/checkpoint.js';
import { encodePng } from '../src/io/image.js';
import { EMPTY_INTERVENTIONS } from '../src/spec/spec.js';
import { readQuestions, type EvalItem } from '../src/eval/dataset.js';
import { evaluate } from '../src/eval/evaluate.js';
import { iterateDataset, itemToJsonl, mulberry32, renderScene, sceneImagePath } from '../src/eval/synthetic.js';
import {
  type AxisExamples,
  type AxisItem,
  AdamW,
  AXES,
  LISTINGS,
  columns,
  enhancementSweep,
  gaussian,
  listingPrompt,
  meanRows,
  parseBoxItems,
  probeLossAndGrad,
  probesFromJson,
  probesToJson,
  randomDirections,
  readAxisItems,
  scaleBox,
  sideCheck,
  tokensInBox,
  trainAxisProbe,
} from '../src/interp/axis-probe.js';
import { gpuContext } from './helpers/gpu.js';
import { REPO_ROOT } from './helpers/fixtures.js';

const organism = join(REPO_ROOT, 'weights/organism');
const work = mkdtempSync(join(tmpdir(), 'vlmscope-axis-probe-'));

function vlmscope(args: string[]) {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'bin/vlmscope.js'), ...args], { encoding: 'utf8', timeout: 300_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A synthetic set as scripts/make-synthetic.ts writes it: images/*.png, questions.jsonl and scenes.jsonl. */
function writeSceneSet(dir: string, seed: number, scenes: number, types: ('spatial' | 'color')[] = ['spatial']): string {
  mkdirSync(join(dir, 'images'), { recursive: true });
  let questions = '';
  let sceneLines = '';
  for (const s of iterateDataset({ seed, scenes, types })) {
    writeFileSync(join(dir, sceneImagePath(s.id)), encodePng(renderScene(s.scene)));
    const objects = s.scene.objects.map(({ colour, shape, x, y, d, cx, cy }) => ({ colour, shape, x, y, d, cx, cy }));
    sceneLines += `${JSON.stringify({ id: s.id, seed: s.seed, size: s.scene.size, background: s.scene.background.name, objects })}\n`;
    for (const item of s.items) questions += `${itemToJsonl(item)}\n`;
  }
  writeFileSync(join(dir, 'questions.jsonl'), questions);
  writeFileSync(join(dir, 'scenes.jsonl'), sceneLines);
  return dir;
}

describe('AdamW and the probe', () => {
  it('one AdamW step and the next equal a float64 hand computation (torch.optim.AdamW semantics)', () => {
    const [lr, wd, b1, b2, eps] = [0.1, 0.01, 0.9, 0.999, 1e-8];
    const p = Float64Array.from([0.5, -1.0, 2.0]);
    const g1 = Float64Array.from([0.2, -0.4, 0.0]);
    const g2 = Float64Array.from([0.1, 0.3, -0.05]);
    const opt = new AdamW([3], { lr, weightDecay: wd });
    opt.step([p], [g1]);
    // Step 1: m = 0.1 g, v = 0.001 g^2; bias-corrected m / (1 - 0.9) = g and sqrt(v / (1 - 0.999)) = |g|.
    const s1 = [0.5 * (1 - lr * wd) - (lr * 0.02) / 0.1 / (Math.sqrt(0.001 * 0.04) / Math.sqrt(0.001) + eps),
      -1.0 * (1 - lr * wd) - (lr * -0.04) / 0.1 / (Math.sqrt(0.001 * 0.16) / Math.sqrt(0.001) + eps),
      2.0 * (1 - lr * wd) - 0];
    for (let i = 0; i < 3; i++) expect(p[i]).toBeCloseTo(s1[i]!, 14);
    expect(p[0]).toBeCloseTo(0.5 * 0.999 - 0.1, 7); // the first step is lr * sign(g)
    opt.step([p], [g2]);
    const m2 = [0.9 * 0.02 + 0.1 * 0.1, 0.9 * -0.04 + 0.1 * 0.3, 0.9 * 0 + 0.1 * -0.05];
    const v2 = [0.999 * 0.001 * 0.04 + 0.001 * 0.01, 0.999 * 0.001 * 0.16 + 0.001 * 0.09, 0.001 * 0.0025];
    const [bc1, bc2] = [1 - 0.9 ** 2, 1 - 0.999 ** 2];
    for (let i = 0; i < 3; i++) {
      const hand = s1[i]! * (1 - lr * wd) - ((lr / bc1) * m2[i]!) / (Math.sqrt(v2[i]!) / Math.sqrt(bc2) + eps);
      expect(p[i]).toBeCloseTo(hand, 14);
    }
    expect(opt.steps).toBe(2);
  });

  it('the cross-entropy gradient of the 2-class probe matches finite differences', () => {
    const normal = gaussian(7);
    const D = 5;
    const rows = Array.from({ length: 6 }, () => Float64Array.from({ length: D }, () => normal()));
    const labels = [0, 1, 1, 0, 1, 0];
    const W = Float64Array.from({ length: 2 * D }, () => normal() * 0.3);
    const b = Float64Array.from([0.1, -0.2]);
    const { loss, gW, gb } = probeLossAndGrad(rows, labels, W, b);
    // Hand loss for row 0: logits, log-sum-exp, -log p[y].
    const hand = rows.reduce((s, x, n) => {
      const z = [0, 1].map((k) => b[k]! + x.reduce((a, xd, d) => a + xd * W[2 * d + k]!, 0));
      return s + Math.log(Math.exp(z[0]!) + Math.exp(z[1]!)) - z[labels[n]!]!;
    }, 0) / rows.length;
    expect(loss).toBeCloseTo(hand, 12);
    const h = 1e-6;
    const fd = (arr: Float64Array, i: number) => {
      const keep = arr[i]!;
      arr[i] = keep + h;
      const up = probeLossAndGrad(rows, labels, W, b).loss;
      arr[i] = keep - h;
      const down = probeLossAndGrad(rows, labels, W, b).loss;
      arr[i] = keep;
      return (up - down) / (2 * h);
    };
    for (let i = 0; i < W.length; i++) expect(gW[i]).toBeCloseTo(fd(W, i), 7);
    for (let i = 0; i < 2; i++) expect(gb[i]).toBeCloseTo(fd(b, i), 7);
  });

  /** Items with a subject / object pair of rows: class c has mean (2c - 1) * 3 u plus N(0, 0.5^2) noise. */
  function examples(n: number, D: number, seed: number, shuffle: boolean): AxisExamples {
    const normal = gaussian(seed);
    const u = Float64Array.from({ length: D }, () => normal());
    const norm = Math.hypot(...u);
    const out: AxisExamples = { rows: [], labels: [], items: [] };
    for (let i = 0; i < n; i++) {
      const c = i % 2;
      for (const k of [c, 1 - c]) {
        out.rows.push(Float64Array.from({ length: D }, (_, d) => ((2 * k - 1) * 3 * u[d]!) / norm + 0.5 * normal()));
        out.labels.push(k);
      }
      out.items.push(`i${i}`);
    }
    if (shuffle) {
      const r = mulberry32(seed + 1);
      for (let i = out.labels.length - 1; i > 0; i--) {
        const j = Math.floor(r() * (i + 1));
        [out.labels[i], out.labels[j]] = [out.labels[j]!, out.labels[i]!];
      }
    }
    return out;
  }

  it('a probe trained as the authors (AdamW 1e-3, 200 epochs, 95/5 split) separates separable features, not shuffled labels', () => {
    const sep = trainAxisProbe('horizontal', examples(400, 32, 3, false), { seed: 1 });
    expect(sep.trainItems).toBe(380);
    expect(sep.heldOutItems).toBe(20);
    expect(sep.losses).toHaveLength(200);
    expect(sep.losses.at(-1)!).toBeLessThan(sep.losses[0]!);
    expect(sep.trainAccuracy).toBeGreaterThan(0.97);
    expect(sep.heldOutAccuracy).toBeGreaterThan(0.95);
    const shuffled = trainAxisProbe('horizontal', examples(400, 32, 3, true), { seed: 1 });
    expect(shuffled.heldOutAccuracy).toBeLessThan(0.75);
    expect(shuffled.trainAccuracy).toBeLessThan(0.7);
    // Seeded: the same seed gives the same probe, another seed another split / init.
    expect(trainAxisProbe('horizontal', examples(40, 8, 3, false), { seed: 1 }).W).toEqual(trainAxisProbe('horizontal', examples(40, 8, 3, false), { seed: 1 }).W);
    expect(trainAxisProbe('horizontal', examples(40, 8, 3, false), { seed: 2 }).W).not.toEqual(trainAxisProbe('horizontal', examples(40, 8, 3, false), { seed: 1 }).W);
    // probes.json round trip.
    const back = probesFromJson(JSON.parse(JSON.stringify(probesToJson({ horizontal: sep }))), 'probes.json');
    expect(back.horizontal!.W).toEqual(sep.W);
    expect(back.horizontal!.heldOutAccuracy).toBe(sep.heldOutAccuracy);
    expect(back.vertical).toBeUndefined();
    expect(() => probesFromJson({ horizontal: { W: [[1, 2], [3]], b: [0, 0] } }, 'p.json')).toThrow(/p\.json: horizontal\.W\[1\] must be 2 numbers/);
    expect(() => probesFromJson({ settings: {} }, 'p.json')).toThrow(/no "horizontal" or "vertical" probe/);
  });

  it('random directions: unit-norm Gaussian columns, a fresh draw per axis and per seed', () => {
    const r0 = randomDirections(64, 0);
    const r1 = randomDirections(64, 1);
    for (const axis of AXES) {
      for (const c of columns(r0[axis])) expect(Math.hypot(...c)).toBeCloseTo(1, 6);
    }
    expect(r0.horizontal).not.toEqual(r0.vertical);
    expect(r0.horizontal).not.toEqual(r1.horizontal);
    expect(randomDirections(64, 0)).toEqual(r0);
  });
});

describe('pooling inside boxes', () => {
  it('takes the tokens whose grid cell centre lies in the box, raster order', () => {
    // 8 x 8 tokens over 64 x 64: centres at 4, 12, 20, ...; x in [10, 30] -> cols 1..3, y in [20, 36] -> rows 2..4.
    expect(tokensInBox([8, 8], { width: 64, height: 64 }, [10, 20, 30, 36])).toEqual([17, 18, 19, 25, 26, 27, 33, 34, 35]);
    expect(tokensInBox([8, 8], { width: 64, height: 64 }, [5, 5, 11, 11])).toEqual([]);
    // A non-square view: 4 rows x 8 cols over 64 x 32, the box given on a 100 x 50 image.
    const box = scaleBox([0, 25, 25, 50], { width: 100, height: 50 }, { width: 64, height: 32 });
    expect(box).toEqual([0, 16, 16, 32]);
    expect(tokensInBox([4, 8], { width: 64, height: 32 }, box)).toEqual([16, 17, 24, 25]);
    const data = Float32Array.from({ length: 4 * 3 }, (_, i) => i);
    expect(Array.from(meanRows(data, 3, [1, 3]))).toEqual([6, 7, 8]);
    expect(sideCheck('left', [0, 8], [3, 11], 8)).toBe(true);
    expect(sideCheck('right', [0, 8], [3, 11], 8)).toBe(false);
    expect(sideCheck('below', [40], [3], 8)).toBe(true);
    expect(sideCheck('above', [3], [5], 8)).toBe(false); // same row: a tie fails
  });

  it('reads items with boxes from a synthetic set and from a JSONL with boxes per example', async () => {
    const dir = writeSceneSet(join(work, 'read'), 11, 3, ['spatial', 'color']);
    const { items, ignored } = await readAxisItems(dir);
    expect(items.length).toBe(3);
    expect(ignored).toBeGreaterThan(0);
    const q = (await readQuestions(join(dir, 'questions.jsonl'), { includeSubQuestions: false })).find((x) => x.id === items[0]!.id)!;
    expect(q.question).toContain(`Where is the ${items[0]!.subject} in relation to the ${items[0]!.object}?`);
    expect(items[0]!.relation).toBe(q.answer);
    const scene = JSON.parse(readFileSync(join(dir, 'scenes.jsonl'), 'utf8').split('\n')[0]!);
    const o = scene.objects.find((x: { colour: string; shape: string }) => `${x.colour} ${x.shape}` === items[0]!.subject);
    expect(items[0]!.subjectBox).toEqual([o.x, o.y, o.x + o.d, o.y + o.d]);
    expect(await readAxisItems(join(dir, 'questions.jsonl'))).toEqual(await readAxisItems(dir));
    const boxes = parseBoxItems('{"image": "a.png", "subject": "cat", "object": "dog", "relation": "Left", "subject_box": [0, 0, 5, 5], "object_box": [10, 0, 20, 5]}\n', 'b.jsonl', (p) => `/x/${p}`);
    expect(boxes).toEqual([{ id: 'line-1', imagePath: '/x/a.png', subject: 'cat', object: 'dog', relation: 'left', subjectBox: [0, 0, 5, 5], objectBox: [10, 0, 20, 5] }]);
    expect(listingPrompt(boxes[0]!, 'lr')).toBe('Where is the cat in relation to the dog? Answer with one word: left or right.');
    expect(listingPrompt(boxes[0]!, 'rl')).toBe('Where is the cat in relation to the dog? Answer with one word: right or left.');
    expect(listingPrompt({ ...boxes[0]!, relation: 'below' }, 'rl', 'anchor')).toBe('Using the dog as the reference point, where is the cat located? Answer with one word: below or above.');
  });
});

describe('on the organism (weights/organism)', () => {
  let model: VlmModel;
  let tokenizer: Tokenizer;
  let data: string;
  let items: AxisItem[];

  beforeAll(async () => {
    data = writeSceneSet(join(work, 'organism'), 5, 12);
    items = (await readAxisItems(data)).items;
    model = await loadModel(await gpuContext(), nodeFolder(organism));
    tokenizer = await Tokenizer.fromFolder(nodeFolder(organism));
  });

  it('the sweep at alpha 0 is plain evaluation, and vision_token_add at alpha 0 changes nothing', async () => {
    const some = items.slice(0, 2);
    const sweep = await enhancementSweep(model, tokenizer, some, { probes: { horizontal: undefined }, alphas: [0], randomSeeds: [] });
    expect(sweep.skipped.noProbe).toEqual(some.map((i) => i.id)); // no probe: nothing is swept
    const probes = { horizontal: { ...fakeProbe('horizontal') }, vertical: { ...fakeProbe('vertical') } };
    const s0 = await enhancementSweep(model, tokenizer, some, { probes, alphas: [0], randomSeeds: [0] });
    expect(s0.alphas).toEqual([0]);
    // evaluate() on the listings as ordinary questions, one greedy token: the same answers and scores.
    const asked: EvalItem[] = some.flatMap((it) =>
      LISTINGS.map((l) => ({ id: `${it.id}-${l}`, imagePath: it.imagePath, question: listingPrompt(it, l), answer: it.relation, type: 'spatial' as const, function: 'decision' as const })),
    );
    const plain = await evaluate(model, tokenizer, asked, { maxNewTokens: 1 });
    some.forEach((it, i) => {
      LISTINGS.forEach((l, j) => {
        const e = plain.examples[2 * i + j]!;
        expect(s0.log[i]!.baseline.pred[l]).toBe(e.prediction.trim().toLowerCase());
        expect(s0.log[i]!.baseline.ok[l]).toBe(e.correct);
      });
    });
    const strict = some.filter((_, i) => plain.examples[2 * i]!.correct && plain.examples[2 * i + 1]!.correct).length;
    expect(s0.probe.rows[0]!.strict.correct).toBe(strict);
    expect(s0.random[0]!.rows[0]).toEqual(s0.probe.rows[0]);

    const processor = model.createProcessor(tokenizer);
    const img = renderScene([...iterateDataset({ seed: 5, scenes: 1, types: ['spatial'] })][0]!.scene);
    const pixels = model.preprocess(img);
    const ids = processor.encodeText(processor.formatPrompt(listingPrompt(some[0]!, 'lr'), 1), [pixels]).ids;
    const a = await model.run({ ids, pixelValues: [pixels] });
    const b = await model.run({ ids, pixelValues: [pixels], interventions: { ...EMPTY_INTERVENTIONS, visionTokenAdd: { alpha: 0, directions: columns(probes.horizontal.W) } } });
    expect(b.logits!.data).toEqual(a.logits!.data);
    const c = await model.run({ ids, pixelValues: [pixels], interventions: { ...EMPTY_INTERVENTIONS, visionTokenAdd: { alpha: 8, directions: columns(probes.horizontal.W) } } });
    expect(c.logits!.data).not.toEqual(a.logits!.data);
  });

  function fakeProbe(axis: 'horizontal' | 'vertical') {
    const W = randomDirections(model.hiddenSize, 9)[axis];
    return { axis, labels: axis === 'horizontal' ? (['left', 'right'] as const) : (['above', 'below'] as const), D: model.hiddenSize, W, b: new Float64Array(2), trainAccuracy: NaN, heldOutAccuracy: NaN, trainItems: 0, heldOutItems: 0, losses: [] };
  }

  it('vlmscope axis-probe trains probes.json, then sweeps alpha 0 and two others with them against random seeds', () => {
    const out = join(work, 'cli-out');
    const t = vlmscope(['axis-probe', '--model', organism, '--data', data, '--out', out, '--no-golden']);
    expect(t.stderr).toBe('');
    expect(t.code).toBe(0);
    const probes = JSON.parse(readFileSync(join(out, 'probes.json'), 'utf8'));
    for (const axis of AXES) {
      expect(probes[axis].W).toHaveLength(128);
      expect(probes[axis].W[0]).toHaveLength(2);
      expect(probes[axis].b).toHaveLength(2);
      expect(probes[axis].accuracy.train).toBeGreaterThanOrEqual(0.9);
      expect(probes[axis].items.train + probes[axis].items.held_out).toBe(items.filter((i) => (axis === 'horizontal') === ['left', 'right'].includes(i.relation)).length);
    }
    expect(probes.settings).toMatchObject({ golden: false, items: 12, trained_on: 12, optimizer: { name: 'AdamW', lr: 0.001, weight_decay: 0.0001, epochs: 200 }, split: 0.95, seed: 0 });
    expect(t.stdout).toMatch(/^horizontal\s+\d+\s+\d+\s+\d+\s+[\d.]+%\s+[\d.]+%/m);
    expect(t.stdout).toMatch(/^vertical\s+\d+\s+\d+\s+\d+\s+[\d.]+%\s+[\d.]+%/m);
    expect(existsSync(join(out, 'sweep.json'))).toBe(false);

    // The sweep on the first 4 questions with those probes (scope failures, as the authors).
    const n = 4;
    const r = vlmscope(['axis-probe', '--model', organism, '--data', data, '--out', out, '--limit', String(n), '--sweep', '--probes', out, '--alphas', '0,4,12', '--random-seeds', '2']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const sweep = JSON.parse(readFileSync(join(out, 'sweep.json'), 'utf8'));
    expect(sweep.probes).toBe(join(out, 'probes.json'));
    expect(sweep.alphas).toEqual([0, 4, 12]);
    expect(sweep.items).toBe(n);
    expect(sweep.random.map((x: { seed: number }) => x.seed)).toEqual([0, 1]);
    expect(sweep.probe.rows.map((x: { alpha: number }) => x.alpha)).toEqual([0, 4, 12]);
    const failures = n - sweep.baseline.strict.correct;
    expect(failures).toBeGreaterThan(0);
    for (const dir of [sweep.probe, ...sweep.random]) {
      expect(dir.rows[0]).toEqual(sweep.probe.rows[0]); // alpha 0: the same plain evaluation
      expect(dir.rows[0].fixed).toBe(0);
      for (const row of dir.rows) {
        expect(row.failures).toBe(failures);
        expect(row.strict.correct).toBe(sweep.baseline.strict.correct + row.fixed); // scope failures
      }
    }
    expect(sweep.items_log.map((x: { id: string }) => x.id)).toEqual(items.slice(0, n).map((i) => i.id));
    const table = readFileSync(join(out, 'sweep.txt'), 'utf8');
    expect(r.stdout).toBe(table);
    for (const alpha of [0, 4, 12]) {
      expect(table).toMatch(new RegExp(`^probe\\s+${alpha}\\s+[\\d.]+%`, 'm'));
      for (const seed of [0, 1]) expect(table).toMatch(new RegExp(`^random seed ${seed}\\s+${alpha}\\s+[\\d.]+%`, 'm'));
      expect(table).toMatch(new RegExp(`^random mean\\s+${alpha}\\s+[\\d.]+%`, 'm'));
    }
    expect(table).toMatch(/^ {2}Probe\*? /m);
    expect(table).toMatch(/^ {2}Random /m);
  });

  it('documents itself', () => {
    const r = vlmscope(['axis-probe', '--help']);
    expect(r.code).toBe(0);
    for (const flag of ['--model', '--data', '--scenes', '--out', '--epochs', '--seed', '--no-golden', '--sweep', '--probes', '--alphas', '--random-seeds', '--scope', '--prompt']) expect(r.stdout).toContain(flag);
    expect(r.stdout).toMatch(/Examples:[\s\S]*vlmscope axis-probe --data/);
  });

  it('bad input -> one-line errors (exit 2 usage, 1 runtime) and no output', () => {
    const bad = join(work, 'bad');
    mkdirSync(bad, { recursive: true });
    const noScenes = join(bad, 'no-scenes');
    mkdirSync(noScenes, { recursive: true });
    writeFileSync(join(noScenes, 'questions.jsonl'), readFileSync(join(data, 'questions.jsonl')));
    const boxes = (line: string) => {
      const p = join(bad, `boxes-${Math.random().toString(36).slice(2)}.jsonl`);
      writeFileSync(p, `{"image": "images/s000000.png", "subject": "a", "object": "b", "relation": "left", "subject_box": [0, 0, 5, 5], "object_box": [9, 0, 20, 5]}\n${line}\n`);
      return p;
    };
    const colours = writeSceneSet(join(bad, 'colours'), 3, 2, ['color']);
    const firstBad = join(bad, 'first-bad.jsonl');
    writeFileSync(firstBad, '\n{"image": \n');
    const asFile = join(bad, 'a-file');
    writeFileSync(asFile, 'x');
    const badProbes = join(bad, 'probes.json');
    writeFileSync(badProbes, '{"horizontal": {"W": [[1, 2]], "b": [0]}}');
    const smallProbes = join(bad, 'small.json');
    writeFileSync(smallProbes, JSON.stringify({ horizontal: { W: [[1, 0], [0, 1]], b: [0, 0] } }));
    const missingImage = join(bad, 'missing-image');
    mkdirSync(missingImage, { recursive: true });
    writeFileSync(join(missingImage, 'questions.jsonl'), readFileSync(join(data, 'questions.jsonl')));
    writeFileSync(join(missingImage, 'scenes.jsonl'), readFileSync(join(data, 'scenes.jsonl')));

    const cases: [string[], number, RegExp][] = [
      [['--data', join(bad, 'nope')], 2, /cannot read data .*nope/],
      [['--data', noScenes], 2, /no scenes\.jsonl beside/],
      [['--data', noScenes, '--scenes', join(bad, 'none.jsonl')], 2, /cannot read scene file .*none\.jsonl/],
      [['--data', boxes('{"image": "x.png", "subject": "a", "object": "b", "relation": "left", "subject_box": [5, 0, 1, 5], "object_box": [9, 0, 20, 5]}')], 2, /boxes-.*\.jsonl:2: "subject_box" \[5, 0, 1, 5\] is empty/],
      [['--data', boxes('{"image": "x.png", "subject": "a", "object": "b", "relation": "front", "subject_box": [0, 0, 1, 5], "object_box": [9, 0, 20, 5]}')], 2, /:2: "relation" must be left, right, above or below/],
      [['--data', boxes('{"image": "x.png", "subject": "a", "relation": "left"')], 2, /:2: invalid JSON/],
      [['--data', firstBad], 2, /first-bad\.jsonl:2: invalid JSON/],
      [['--data', colours], 2, /holds no left \/ right \/ above \/ below questions/],
      [['--data', data, '--alphas', '0,-1', '--sweep'], 2, /--alphas.*expected alphas >= 0/],
      [['--data', data, '--alphas', '0..4'], 2, /--alphas belongs to the sweep; add --sweep/],
      [['--data', data, '--sweep', '--probes', badProbes, '--epochs', '3'], 2, /--epochs sets probe training, but --probes/],
      [['--data', data, '--sweep', '--probes', badProbes], 2, /probes\.json: horizontal\.b must be 2 numbers/],
      [['--data', data, '--sweep', '--probes', join(bad, 'nope.json')], 2, /cannot read probes file/],
      [['--data', data, '--out', asFile], 2, /--out .*a-file is a file/],
      [['--data', data, '--prompt', 'chatty'], 2, /--prompt/],
      [['--data', data, '--epochs', '0'], 2, /--epochs.*positive integer/],
      [['--data', missingImage], 1, /question s000000-spatial: image .*s000000\.png does not exist/],
      [['--data', data, '--model', join(bad, 'no-model')], 1, /no-model does not exist/],
      [['--data', data, '--sweep', '--probes', smallProbes], 1, /small\.json: the horizontal probe has 2 weights per class, but the model's text hidden size is 128/],
    ];
    for (const [extra, code, message] of cases) {
      const out = join(bad, 'out-never');
      const r = vlmscope(['axis-probe', '--model', organism, '--out', out, ...extra]);
      expect(r.code, extra.join(' ')).toBe(code);
      expect(r.stdout).toBe('');
      expect(r.stderr, extra.join(' ')).toMatch(/^vlmscope: /);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(message);
      expect(existsSync(out)).toBe(false);
    }
  });
});
