// The knockout experiment (src/interp/knockout.ts, `vlmscope knockout`) and the What'sUp-style out-of-distribution
// scenes it runs on (src/eval/synthetic.ts variants, scripts/make-synthetic.ts --variant): token selection for known
// boxes on a grid, box mapping to the model's view, the seeded control, scenes.jsonl parsing; on the shipped organism
// with a few OOD scenes, the baseline is plain `evaluate`, a knocked layer really has zero attention from the last row
// to the knocked keys, the control knocks as many other image tokens; the CLI end to end (the same numbers as the
// library) and bad input as one line with exit code 2 and nothing written.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { nodeFolder } from '../src/io/checkpoint.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { loadImageFile } from '../src/io/image.js';
import { loadModel } from '../src/models/load.js';
import type { VlmModel } from '../src/models/vlm.js';
import { eosTokenIds } from '../src/generate/eos.js';
import { readQuestions, type EvalItem } from '../src/eval/dataset.js';
import { evaluate, type EvalReport } from '../src/eval/evaluate.js';
import { GEOMETRY, OOD_OBJECT_SCALES, backgroundAt, contrastingColours, generateScene, iterateDataset, objectCovers, renderScene } from '../src/eval/synthetic.js';
import {
  boxToView,
  isSpatialMain,
  knockoutByLayer,
  knockoutSpec,
  namedObjects,
  objectTokens,
  parseScenes,
  randomTokens,
  sceneIdOfImage,
  tokensInBox,
  type KnockoutResult,
  type SceneBoxes,
} from '../src/interp/knockout.js';
import { gpuContext } from './helpers/gpu.js';
import { REPO_ROOT } from './helpers/fixtures.js';
import { VLMSCOPE_BIN, vlmscope, type CliResult } from './helpers/cli.js';

const organism = join(REPO_ROOT, 'weights/organism');
const work = mkdtempSync(join(tmpdir(), 'vlmscope-knockout-'));

function vlmscopeAsync(args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [VLMSCOPE_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('token selection', () => {
  const grid: [number, number] = [8, 8];
  const size = { width: 64, height: 64 };

  it('takes the tokens whose cell centre lies in the box, edges included, raster order', () => {
    // Cell centres at 4, 12, 20, ...: [8, 24] holds 12 and 20 -> rows and columns 1 and 2.
    expect(tokensInBox(grid, size, [8, 8, 24, 24])).toEqual([9, 10, 17, 18]);
    expect(tokensInBox(grid, size, [12, 12, 20, 20])).toEqual([9, 10, 17, 18]);
    expect(tokensInBox(grid, size, [12.01, 12, 20, 20])).toEqual([10, 18]);
    expect(tokensInBox(grid, size, [0, 56, 64, 64])).toEqual([56, 57, 58, 59, 60, 61, 62, 63]);
    // A non-square grid over a non-square view: 2 rows x 4 cols over 80 x 40 (cells 20 x 20, centres 10, 30, ...).
    expect(tokensInBox([2, 4], { width: 80, height: 40 }, [25, 0, 55, 15])).toEqual([1, 2]);
  });

  it('gives an object smaller than a cell the cell of its box centre', () => {
    expect(objectTokens(grid, size, [13, 13, 18, 18])).toEqual({ tokens: [9], fallback: true });
    expect(objectTokens(grid, size, [61, 61, 64, 64])).toEqual({ tokens: [63], fallback: true });
    expect(objectTokens(grid, size, [8, 8, 24, 24])).toEqual({ tokens: [9, 10, 17, 18], fallback: false });
  });

  it('maps boxes to the view: scaled on a resize, shortest side + centre crop otherwise', () => {
    expect(boxToView([8, 8, 24, 24], { width: 64, height: 64 }, { width: 336, height: 336 })).toEqual([42, 42, 126, 126]);
    expect(boxToView([30, 0, 40, 10], { width: 100, height: 50 }, { width: 50, height: 50 })).toEqual([5, 0, 15, 10]);
    expect(boxToView([0, 30, 10, 40], { width: 50, height: 100 }, { width: 100, height: 100 })).toEqual([0, 10, 20, 30]);
  });

  it('draws the control from the other tokens, seeded, capped at what is left', () => {
    const exclude = new Set([9, 10, 17, 18]);
    const a = randomTokens(4, 64, exclude, 7);
    expect(a).toHaveLength(4);
    expect(new Set(a).size).toBe(4);
    expect(a.some((t) => exclude.has(t))).toBe(false);
    expect(a).toEqual([...a].sort((x, y) => x - y));
    expect(randomTokens(4, 64, exclude, 7)).toEqual(a);
    expect(randomTokens(4, 64, exclude, 8)).not.toEqual(a);
    expect(randomTokens(10, 6, new Set([0, 1, 2]), 1)).toEqual([3, 4, 5]);
  });

  it('finds the two named objects in order and the scene of an image', () => {
    const scene: SceneBoxes = {
      id: 's000001',
      width: 64,
      height: 64,
      objects: [
        { name: 'red circle', box: [0, 0, 10, 10] },
        { name: 'blue square', box: [20, 20, 30, 30] },
        { name: 'green triangle', box: [40, 40, 50, 50] },
      ],
    };
    const [a, b] = namedObjects('Where is the blue square in relation to the red circle? Answer with left, right, above or below.', scene)!;
    expect([a.name, b.name]).toEqual(['blue square', 'red circle']);
    expect(namedObjects('Where is the blue square?', scene)).toBeNull();
    expect(namedObjects('Is the dark red circle left of the blue squares?', scene)).toBeNull();
    expect(sceneIdOfImage('/data/set/images/s000001.png')).toBe('s000001');
  });

  it('parses scenes.jsonl; malformed lines name the line', () => {
    const text = [
      JSON.stringify({ id: 's0', seed: 1, size: 64, background: 'navy', objects: [{ colour: 'red', shape: 'circle', x: 3, y: 4, d: 12, cx: 9, cy: 10 }] }),
      '',
      JSON.stringify({ id: 's1', width: 100, height: 50, objects: [{ name: 'dog', box: [1, 2, 3, 4] }] }),
    ].join('\n');
    const scenes = parseScenes(text, 'scenes.jsonl');
    expect(scenes.get('s0')).toEqual({ id: 's0', width: 64, height: 64, objects: [{ name: 'red circle', box: [3, 4, 15, 16] }] });
    expect(scenes.get('s1')!.objects).toEqual([{ name: 'dog', box: [1, 2, 3, 4] }]);
    expect(() => parseScenes(`${text}\n{"id": "s2", "size": 64}`, 'sc.jsonl')).toThrow(/^sc\.jsonl line 4: "objects" must be a list$/);
    expect(() => parseScenes('{"id": "s2", "size": 64, "objects": [{"colour": "red"}]}', 'sc.jsonl')).toThrow(/line 1: objects\[0\]: needs "colour"/);
    expect(() => parseScenes('nope', 'sc.jsonl')).toThrow(/^sc\.jsonl line 1: not valid JSON/);
  });
});

describe('What\'sUp-style out-of-distribution scenes', () => {
  it('leave the default scenes as they were; an explicit scale 1 on plain backgrounds is the default', () => {
    for (const seed of [1, 2, 3]) {
      const plain = generateScene(seed);
      expect(plain.variant).toBeUndefined();
      expect(plain.background.pattern).toBeUndefined();
      expect(generateScene(seed, { objectScale: 1, background: 'plain' })).toEqual(plain);
    }
    const a = [...iterateDataset({ seed: 7, scenes: 5 })];
    const b = [...iterateDataset({ seed: 7, scenes: 5, objectScale: 1, background: 'plain' })];
    expect(b).toEqual(a);
  });

  it('draw other object sizes and unseen backgrounds, objects contrasting with every background colour', () => {
    const scenes = [...iterateDataset({ seed: 11, scenes: 60, variant: 'ood', types: ['spatial'] })];
    const kinds = new Set(scenes.map((s) => s.scene.variant!.background));
    expect([...kinds].sort()).toEqual(['checker', 'gradient', 'novel']);
    expect(new Set(scenes.map((s) => s.scene.variant!.objectScale))).toEqual(new Set(OOD_OBJECT_SCALES));
    for (const { scene, items } of scenes) {
      const { objectScale } = scene.variant!;
      const lo = Math.max(2, Math.round(GEOMETRY.minObjectSize * objectScale));
      const hi = Math.max(lo, Math.round(GEOMETRY.maxObjectSize * objectScale));
      for (const o of scene.objects) {
        expect(o.d).toBeGreaterThanOrEqual(lo);
        expect(o.d).toBeLessThanOrEqual(hi);
        expect(o.x + o.d).toBeLessThanOrEqual(64);
        expect(o.y + o.d).toBeLessThanOrEqual(64);
        const bgs = scene.background.pattern ? [scene.background.rgb, scene.background.pattern.to] : [scene.background.rgb];
        for (const bg of bgs) expect(contrastingColours(bg)).toContain(o.colour);
      }
      expect(items.map((i) => i.type)).toEqual(['spatial']);
      expect(['left', 'right', 'above', 'below']).toContain(items[0]!.answer);
    }
    // Checkerboards and gradients: both colours where the pattern puts them, the +-8 noise around them elsewhere
    // on the background, and the same bytes from the recorded seed.
    for (const kind of ['checker', 'gradient'] as const) {
      const scene = scenes.find((s) => s.scene.background.pattern?.kind === kind)!.scene;
      const pattern = scene.background.pattern!;
      const bg = backgroundAt(scene);
      expect(bg(0, 0)).toEqual(scene.background.rgb);
      if (pattern.kind === 'checker') expect(bg(pattern.cell, 0)).toEqual(pattern.to);
      else expect(pattern.axis === 'horizontal' ? bg(63, 0) : bg(0, 63)).toEqual(pattern.to);
      const img = renderScene(scene);
      expect(renderScene(generateScene(scene.seed, { variant: 'ood' })).data).toEqual(img.data);
      let maxDev = 0;
      for (let y = 0; y < 64; y++) {
        for (let x = 0; x < 64; x++) {
          if (scene.objects.some((o) => objectCovers(o, x, y))) continue;
          const want = bg(x, y);
          for (let c = 0; c < 3; c++) maxDev = Math.max(maxDev, Math.abs(img.data[(y * 64 + x) * 3 + c]! - want[c]!));
        }
      }
      expect(maxDev).toBe(8);
    }
    expect(() => generateScene(1, { objectScale: 3 })).toThrow(/objectScale must be a number in \[0.25, 2\]/);
    expect(() => generateScene(1, { background: 'stripes' as never })).toThrow(/background must be one of plain, novel, gradient, checker/);
  });

  it('make-synthetic --variant ood writes the variant into scenes.jsonl; bad flags are usage errors', () => {
    const dir = join(work, 'flags');
    const tsx = join(REPO_ROOT, 'node_modules/.bin/tsx');
    const script = join(REPO_ROOT, 'scripts/make-synthetic.ts');
    const ok = spawnSync(tsx, [script, '--out', dir, '--seed', '5', '--scenes', '3', '--variant', 'ood', '--types', 'spatial', '--objects', '2'], { encoding: 'utf8' });
    expect(ok.status, ok.stderr).toBe(0);
    const lines = readFileSync(join(dir, 'scenes.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(3);
    for (const l of lines) {
      expect(l.objects).toHaveLength(2);
      expect(OOD_OBJECT_SCALES).toContain(l.variant.object_scale);
      expect(['novel', 'gradient', 'checker']).toContain(l.variant.background);
    }
    const bad = spawnSync(tsx, [script, '--out', join(work, 'flags-bad'), '--seed', '5', '--scenes', '3', '--background', 'stripes'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/^make-synthetic: --background must be one of plain, novel, gradient, checker/);
    expect(existsSync(join(work, 'flags-bad'))).toBe(false);
  });
});

describe('knockout on the shipped organism', () => {
  let model: VlmModel;
  let tokenizer: Tokenizer;
  let eos: number[];
  let all: EvalItem[];
  let items: EvalItem[];
  let scenes: Map<string, SceneBoxes>;
  let plain: EvalReport;
  let result: KnockoutResult;
  let cli: CliResult;
  const data = join(work, 'ood');
  const out = join(work, 'out');
  const LAYER = 1;

  beforeAll(async () => {
    const made = spawnSync(join(REPO_ROOT, 'node_modules/.bin/tsx'), [join(REPO_ROOT, 'scripts/make-synthetic.ts'), '--out', data, '--seed', '4242', '--scenes', '3', '--variant', 'ood'], {
      encoding: 'utf8',
    });
    if (made.status !== 0) throw new Error(made.stderr);
    const questions = join(data, 'questions.jsonl');
    // The CLI runs in its own process meanwhile: the first two spatial questions, layer 1 only.
    const running = vlmscopeAsync(['knockout', '--model', organism, '--data', questions, '--out', out, '--limit', '2', '--layers', String(LAYER), '--seed', '5']);
    all = await readQuestions(questions);
    items = all.filter(isSpatialMain);
    scenes = parseScenes(readFileSync(join(data, 'scenes.jsonl'), 'utf8'), 'scenes.jsonl');
    model = await loadModel(await gpuContext(), organism);
    tokenizer = await Tokenizer.fromFolder(nodeFolder(organism));
    eos = await eosTokenIds(nodeFolder(organism), tokenizer);
    plain = await evaluate(model, tokenizer, items, { eosTokenIds: eos });
    // Every question of the set (sub-questions and other types are skipped and listed).
    result = await knockoutByLayer(model, tokenizer, all, { scenes, seed: 5, layers: [LAYER], eosTokenIds: eos });
    cli = await running;
  });

  it('answers the spatial questions; its baseline is plain evaluate', () => {
    expect(items).toHaveLength(3);
    expect(result.questions).toBe(3);
    expect(all.length).toBeGreaterThan(3);
    expect(result.skipped.map((s) => s.id)).toEqual(all.filter((i) => !isSpatialMain(i)).map((i) => i.id));
    expect(result.skipped.every((s) => /not spatial|sub-question/.test(s.reason))).toBe(true);
    expect(result.grid).toEqual([8, 8]);
    expect(result.examples.map((e) => [e.id, e.baseline.prediction, e.baseline.correct])).toEqual(plain.examples.map((e) => [e.id, e.prediction, e.correct]));
    expect(result.baseline.accuracy).toBe(plain.accuracy);
    expect(result.baseline.relativeChange).toBe(0);
    expect(result.runs.map((r) => r.layer)).toEqual([LAYER, 'all']);
    for (const e of result.examples) {
      expect(e.baseline.p).toBeGreaterThan(0);
      expect(e.baseline.p).toBeLessThanOrEqual(1);
      expect(e.attention).toHaveLength(model.dims.text.layers);
    }
  });

  it('knocks the image tokens of the two named objects, and as many others in the control', async () => {
    for (const e of result.examples) {
      const item = items.find((i) => i.id === e.id)!;
      const scene = scenes.get(sceneIdOfImage(item.imagePath))!;
      const img = await loadImageFile(item.imagePath);
      const view = model.imageView(img);
      const processor = model.createProcessor(tokenizer);
      const ids = processor.encodeText(processor.formatPrompt(item.question, 1), [model.preprocess(img)]).ids;
      const positions = model.imageKeyPositions(ids);
      const [a, b] = namedObjects(item.question, scene)!;
      const size = { width: view.image.width, height: view.image.height };
      const expectTokens = (box: SceneBoxes['objects'][number]['box']) => objectTokens(view.grid, size, boxToView(box, { width: 64, height: 64 }, size)).tokens;
      expect(e.objectTokens).toEqual([expectTokens(a.box), expectTokens(b.box)]);
      const union = [...new Set([...e.objectTokens[0], ...e.objectTokens[1]])].sort((x, y) => x - y);
      expect(e.keys).toEqual(union.map((t) => positions[t]));
      expect(e.randomKeys).toHaveLength(Math.min(e.keys.length, 64 - e.keys.length));
      expect(e.randomKeys.some((k) => e.keys.includes(k))).toBe(false);
      expect(e.randomKeys.every((k) => positions.includes(k))).toBe(true);
    }
  });

  it('a knocked layer gives the knocked keys exactly zero attention from the last row', async () => {
    const e = result.examples[0]!;
    const item = items.find((i) => i.id === e.id)!;
    const img = await loadImageFile(item.imagePath);
    const pixels = model.preprocess(img);
    const processor = model.createProcessor(tokenizer);
    const ids = processor.encodeText(processor.formatPrompt(item.question, 1), [pixels]).ids;
    const capture = {
      logits: null,
      pattern: [LAYER, LAYER + 1].map((layer) => ({ tower: 'text' as const, layer, heads: null, rows: [-1] })),
      z: null,
      residual: [],
      imageFeatures: false,
    };
    const before = await model.run({ ids, pixelValues: [pixels], capture });
    const after = await model.run({ ids, pixelValues: [pixels], capture, interventions: knockoutSpec(model, LAYER, e.keys) });
    const heads = model.dims.text.heads;
    const L = ids.length;
    expect(after.pattern[0]!.shape).toEqual([heads, 1, L]);
    const at = (p: { data: Float32Array }, h: number, k: number) => p.data[h * L + k]!;
    for (let h = 0; h < heads; h++) {
      for (const k of e.keys) expect(at(after.pattern[0]!, h, k)).toBe(0);
      // The row is renormalised over the keys left.
      let sum = 0;
      for (let k = 0; k < L; k++) sum += at(after.pattern[0]!, h, k);
      expect(sum).toBeCloseTo(1, 4);
    }
    // Without the knockout the last row does look at those tokens in that layer; the next layer keeps its edges.
    const mass = (r: typeof after, i: number) => e.keys.reduce((s, k) => s + Array.from({ length: heads }, (_, h) => at(r.pattern[i]!, h, k)).reduce((x, y) => x + y, 0), 0);
    expect(mass(before, 0)).toBeGreaterThan(0.01);
    expect(mass(after, 1)).toBeGreaterThan(0);
  });

  it('the CLI writes the same numbers for the same questions, a table, CSV and markdown', () => {
    expect(cli.stderr).toBe('');
    expect(cli.code).toBe(0);
    const j = JSON.parse(readFileSync(join(out, 'knockout.json'), 'utf8'));
    expect(j.questions).toBe(2);
    expect(j.seed).toBe(5);
    expect(j.runs.map((r: { layer: number | string }) => r.layer)).toEqual([LAYER, 'all']);
    for (const [i, e] of j.examples.entries()) {
      const lib = result.examples[i]!;
      expect(e.id).toBe(lib.id);
      expect(e.keys).toEqual(lib.keys);
      expect(e.random_keys).toEqual(lib.randomKeys);
      expect(e.baseline.prediction).toBe(lib.baseline.prediction);
      expect(e.runs.map((r: { objects: { prediction: string }; random: { prediction: string } }) => [r.objects.prediction, r.random.prediction])).toEqual(
        lib.runs.map((r) => [r.objects.prediction, r.random.prediction]),
      );
      expect(e.baseline.p).toBeCloseTo(lib.baseline.p, 5);
    }
    expect(j.attention).toHaveLength(model.dims.text.layers);
    const lines = cli.stdout.split('\n');
    expect(lines[0]).toMatch(/^knockout: last token -> named-object image tokens, 2 spatial questions, 8x8 image tokens/);
    expect(cli.stdout).toMatch(/^none \(baseline\)\s+\d+\.\d%/m);
    expect(cli.stdout).toMatch(new RegExp(`^layer ${LAYER}\\s+\\d+\\.\\d%`, 'm'));
    expect(cli.stdout).toMatch(/^all layers\s+/m);
    const csv = readFileSync(join(out, 'knockout.csv'), 'utf8').trim().split('\n');
    expect(csv[0]).toBe('run,layer,target,total,correct,accuracy,mean_p,relative_change');
    expect(csv).toHaveLength(1 + 1 + 2 * 2);
    expect(readFileSync(join(out, 'knockout.md'), 'utf8')).toMatch(/^\| knocked layer \| objects: acc \|/m);
  });

  it('bad input is one line, exit code 2, nothing written', () => {
    const questions = join(data, 'questions.jsonl');
    const noSpatial = join(work, 'no-spatial.jsonl');
    writeFileSync(noSpatial, readFileSync(questions, 'utf8').split('\n').filter((l) => l && !l.includes('"type":"spatial"')).join('\n') + '\n');
    const badScenes = join(work, 'bad-scenes.jsonl');
    writeFileSync(badScenes, '{"id": "s000000", "size": 64}\n');
    const emptyScenes = join(work, 'other-scenes.jsonl');
    writeFileSync(emptyScenes, '{"id": "s999999", "size": 64, "objects": []}\n');
    const cases: [string[], RegExp][] = [
      [['--data', join(work, 'missing.jsonl')], /cannot read data file .*missing\.jsonl: no such file/],
      [['--data', noSpatial, '--scenes', join(data, 'scenes.jsonl')], /holds no spatial questions/],
      [['--data', questions, '--scenes', join(work, 'nope.jsonl')], /cannot read scenes file .*nope\.jsonl: no such file/],
      [['--data', questions, '--scenes', badScenes], /bad-scenes\.jsonl line 1: "objects" must be a list/],
      [['--data', questions, '--scenes', emptyScenes], /question s000000-spatial: no scene s000000 /],
      [['--data', questions, '--layers', '4'], /--layers 4 is out of range: the model has 4 text layers \(0\.\.3\)/],
      [['--data', questions, '--limit', '0'], /--limit.*expected a positive integer/],
    ];
    for (const [args, msg] of cases) {
      const dest = join(work, `bad-${cases.findIndex((c) => c[0] === args)}`);
      const r = vlmscope(['knockout', '--model', organism, ...args, '--out', dest]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^vlmscope: /);
      expect(r.stderr).toMatch(msg);
      expect(r.stdout).toBe('');
      expect(existsSync(dest)).toBe(false);
    }
  });
});
