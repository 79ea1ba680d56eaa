// AdaptVis (issue 13): the prefix reuse of VlmModel.run (the second pass recomputes only the rows the image
// temperature reaches, keeps the vision features and the KV of every earlier row) against a full recompute
// (within 1e-5) and the float64 reference, on the tiny-llava fixture and a generated LLaVA checkpoint with GQA;
// the gate (numpy's rounding, both branches, the threshold edge); pass 2's tokens against the reference greedy
// under the chosen alpha; the CLI (generate / eval --adaptvis on the organism, bad values).

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadImageFile } from '../src/io/image.js';
import { LlavaModel } from '../src/models/llava.js';
import { loadModel } from '../src/models/load.js';
import type { RunInput } from '../src/models/model.js';
import { writeRandomLlava } from '../src/models/random-llava.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { nodeFolder } from '../src/io/checkpoint.js';
import type { PrefixRunInput, PrefixRunResult, VlmModel } from '../src/models/vlm.js';
import { firstChangedRow } from '../src/models/vlm.js';
import { type InterventionSpec, parseCapture, parseInterventions } from '../src/spec/spec.js';
import { adaptVis, adaptVisBranch, parseAdaptVisTriple, roundConfidence, topProbability } from '../src/generate/adaptvis.js';
import { generate } from '../src/generate/generate.js';
import { evaluate } from '../src/eval/evaluate.js';
import { readQuestions } from '../src/eval/dataset.js';
import { expectClose, gpuContext, randn } from './helpers/gpu.js';
import { fixtureDir, golden, REPO_ROOT } from './helpers/fixtures.js';
import { compareTokens, engineRun, tempDirs } from './helpers/compare.js';
import { type ReferenceLlava, referenceLlava } from './helpers/reference-llava.js';
import { jsonWriter, vlmscope } from './helpers/cli.js';
import { writeSyntheticSet } from './helpers/synthetic-data.js';

const tempDir = tempDirs('vlmscope-adaptvis-');
const NEW = 6;

interface Subject {
  model: LlavaModel;
  ref: ReferenceLlava;
  ids: number[];
  pixels: Float32Array[];
}

/** model.run with prefix reuse, inside engineRun's validation error scope. */
const runP = (model: VlmModel, input: PrefixRunInput) => engineRun(model, input as RunInput) as Promise<PrefixRunResult>;

const LOGITS = { logits: 'last' as const, pattern: [], z: null, residual: [], imageFeatures: false };

/** Image temperatures pass 2 may run with, and the first prompt row each recomputes (L prompt rows, first image row f). */
const TEMPERATURES: Record<string, { json: Record<string, unknown>; fromRow: (L: number, f: number) => number }> = {
  last_low: { json: { alpha: 0.5, queries: 'last' }, fromRow: (L) => L - 1 },
  last_high: { json: { alpha: 2.5, queries: 'last' }, fromRow: (L) => L - 1 },
  all_layer1_heads: { json: { alpha: 1.8, queries: 'all', layers: [1], heads: [0, 1] }, fromRow: (_L, f) => f },
  generated: { json: { alpha: 0.3, queries: 'generated' }, fromRow: (L) => L - 1 },
};

function lastRow(logits: Float64Array, vocab: number): Float64Array {
  return logits.subarray(logits.length - vocab);
}

function suite(name: string, setup: () => Promise<Subject>) {
  describe(name, () => {
    let s: Subject;
    beforeAll(async () => {
      s = await setup();
    });

    for (const [c, t] of Object.entries(TEMPERATURES)) {
      it(`${c}: the reuse run equals a full recompute (1e-5) and the reference, without a vision pass`, async () => {
        const { model, ids, pixels } = s;
        const L = ids.length;
        const spec = parseInterventions({ image_temperature: t.json }, model.dims);
        const first = await runP(model, { ids, pixelValues: pixels, capture: LOGITS, maxNewTokens: 0, reserveNewTokens: NEW });
        const before = { ...model.counters };
        const reused = await runP(model, { ids, pixelValues: pixels, interventions: spec, capture: LOGITS, maxNewTokens: NEW, reuse: first.prefix });
        const r0 = t.fromRow(L, ids.indexOf(model.imageTokenId));
        expect(reused.reuse).toEqual({ reused: true, fromRow: r0, rows: L - r0, promptRows: L, vision: false });
        expect(model.counters.visionPasses, 'no vision pass in the reuse run').toBe(before.visionPasses);
        expect(model.counters.prefillRows - before.prefillRows, 'prompt rows prefilled').toBe(L - r0);
        const full = await runP(model, { ids, pixelValues: pixels, interventions: spec, capture: LOGITS, maxNewTokens: NEW });
        expect(model.counters.visionPasses).toBe(before.visionPasses + 1);
        expectClose(reused.logits!.data, full.logits!.data, 1e-5, 0, `${c}: reuse vs full recompute logits`);
        expect(reused.tokens).toEqual(full.tokens);
        // The float64 reference with the same spec.
        const vocab = model.vocabSize;
        expectClose(reused.logits!.data, lastRow(s.ref.forward(ids, pixels, { interventions: spec }).logits, vocab), 1e-3, 0, `${c}: reference logits`);
        compareTokens(reused.tokens, s.ref.greedy(ids, pixels, NEW, spec), c);
        // The case must matter: the reference run moves away from the plain one (first token or later margins).
        const plain = s.ref.greedy(ids, pixels, 4).margins;
        const tempered = s.ref.greedy(ids, pixels, 4, spec).margins;
        expect(Math.max(...plain.map((m, i) => Math.abs(m - tempered[i]))), `${c} changes the reference run`).toBeGreaterThan(1e-3);
      });
    }

    it('reuse after a run that decoded (rows >= L written) and a chain of reuses stay exact', async () => {
      const { model, ids, pixels } = s;
      const a = parseInterventions({ image_temperature: { alpha: 0.6, queries: 'last' } }, model.dims);
      const b = parseInterventions({ image_temperature: { alpha: 1.7, queries: 'all' } }, model.dims);
      const p1 = await runP(model, { ids, pixelValues: pixels, capture: LOGITS, maxNewTokens: NEW });
      const p2 = await runP(model, { ids, pixelValues: pixels, interventions: a, capture: LOGITS, maxNewTokens: NEW, reuse: p1.prefix });
      expect(p2.reuse?.reused).toBe(true);
      // From a tempered prefix to another temperature: 'all' differs from 'last' from the first image row on.
      const p3 = await runP(model, { ids, pixelValues: pixels, interventions: b, capture: LOGITS, maxNewTokens: NEW, reuse: p2.prefix });
      expect(p3.reuse).toMatchObject({ reused: true, fromRow: ids.indexOf(model.imageTokenId) });
      const full = await runP(model, { ids, pixelValues: pixels, interventions: b, capture: LOGITS, maxNewTokens: NEW });
      expectClose(p3.logits!.data, full.logits!.data, 1e-5, 0, 'chained reuse logits');
      expect(p3.tokens).toEqual(full.tokens);
    });

    it('falls back to a full run, saying why, when the prefix cannot be reused', async () => {
      const { model, ids, pixels } = s;
      const spec = parseInterventions({ image_temperature: { alpha: 0.5, queries: 'last' } }, model.dims);
      const full = await runP(model, { ids, pixelValues: pixels, interventions: spec, capture: LOGITS, maxNewTokens: 3 });
      const cases: [string, (h: PrefixRunResult['prefix']) => PrefixRunInput, RegExp][] = [
        ['stale handle', (h) => ({ ids, pixelValues: pixels, interventions: spec, reuse: { id: h.id - 1 } }), /not the last run/],
        ['other ids', (h) => ({ ids: [...ids.slice(0, -1), (ids[L(ids) - 1] + 1) % 7], pixelValues: pixels, interventions: spec, reuse: h }), /ids differ/],
        ['other image', (h) => ({ ids, pixelValues: pixels.map((p) => p.map((v) => -v)), interventions: spec, reuse: h }), /images differ/],
        [
          'head_scale differs',
          (h) => ({ ids, pixelValues: pixels, interventions: { ...spec, headScale: [{ tower: 'text', layer: 0, head: 0, scale: 0 }] }, reuse: h }),
          /other than image_temperature/,
        ],
        ['pattern capture', (h) => ({ ids, pixelValues: pixels, interventions: spec, capture: parseCapture({ logits: 'last', pattern: [{ layer: 0 }] }, model.dims), reuse: h }), /captures/],
        ['cache grows', (h) => ({ ids, pixelValues: pixels, interventions: spec, maxNewTokens: model.decoder.maxLen - ids.length + 1, reuse: h }), /KV cache/],
      ];
      for (const [what, input, reason] of cases) {
        const first = await runP(model, { ids, pixelValues: pixels, capture: LOGITS });
        const before = model.counters.visionPasses;
        const r = await runP(model, { capture: LOGITS, maxNewTokens: 3, ...input(first.prefix) });
        expect(r.reuse, what).toMatchObject({ reused: false, fromRow: 0, vision: true });
        expect(r.reuse!.reason, what).toMatch(reason);
        expect(model.counters.visionPasses, what).toBe(before + 1);
        if (what === 'stale handle' || what === 'cache grows' || what === 'pattern capture') {
          expectClose(r.logits!.data, full.logits!.data, 1e-5, 0, `${what}: full-run logits`);
        }
      }
      // A run in between makes the handle stale.
      const first = await runP(model, { ids, pixelValues: pixels, capture: LOGITS, reserveNewTokens: 3 });
      await runP(model, { ids, pixelValues: pixels, capture: LOGITS });
      const r = await runP(model, { ids, pixelValues: pixels, interventions: spec, capture: LOGITS, maxNewTokens: 3, reuse: first.prefix });
      expect(r.reuse).toMatchObject({ reused: false });
      expect(r.tokens).toEqual(full.tokens);
    });

    it('AdaptVis: the gate on the rounded confidence picks the branch, pass 2 is the reference greedy under its alpha', async () => {
      const { model, ids, pixels } = s;
      const tokenizer = fakeTokenizer();
      const vocab = model.vocabSize;
      const plain = await runP(model, { ids, pixelValues: pixels, capture: LOGITS });
      const raw = topProbability(plain.logits!.data).probability;
      const refRaw = topProbability(lastRow(s.ref.forward(ids, pixels).logits, vocab)).probability;
      expect(Math.abs(raw - refRaw), 'confidence vs the float64 reference').toBeLessThan(1e-4);
      const c = roundConfidence(raw);
      const base = { ids, pixelValues: pixels, maxNewTokens: NEW, tokenizer, eosTokenIds: [], alphaLow: 0.4, alphaHigh: 2.2 };
      const want = (alpha: number) => s.ref.greedy(ids, pixels, NEW, parseInterventions({ image_temperature: { alpha, queries: 'last' } }, model.dims));
      // Threshold at the rounded confidence: high (confidence < threshold is false).
      const before = { ...model.counters };
      const high = await adaptVis(model, { ...base, threshold: c });
      expect(high.adaptvis).toMatchObject({ confidence: c, branch: 'high', alpha: 2.2, pass1: { firstToken: topProbability(plain.logits!.data).token } });
      expect(high.adaptvis.rawConfidence).toBeCloseTo(raw, 12);
      expect(high.adaptvis.pass2.reuse).toEqual({ reused: true, fromRow: ids.length - 1, rows: 1, promptRows: ids.length, vision: false });
      expect(model.counters.visionPasses - before.visionPasses, 'one vision pass for both passes').toBe(1);
      expect(model.counters.prefillRows - before.prefillRows, 'prompt rows prefilled for both passes').toBe(ids.length + 1);
      compareTokens(high.tokenIds, want(2.2), 'high branch');
      // One step above: low.
      const low = await adaptVis(model, { ...base, threshold: c + 0.01 });
      expect(low.adaptvis).toMatchObject({ confidence: c, branch: 'low', alpha: 0.4 });
      compareTokens(low.tokenIds, want(0.4), 'low branch');
      // The edge: rounding decides. Rounded up: a threshold above the raw confidence still gives high; rounded
      // down: a threshold at the raw confidence gives low.
      if (c > raw) {
        const edge = await adaptVis(model, { ...base, threshold: c });
        expect(raw < c && edge.adaptvis.branch === 'high').toBe(true);
      } else if (c < raw) {
        const edge = await adaptVis(model, { ...base, threshold: raw });
        expect(edge.adaptvis.branch).toBe('low');
      }
      // Without reuse: the same tokens, pass 2 runs the vision tower again.
      const v0 = model.counters.visionPasses;
      const noReuse = await adaptVis(model, { ...base, threshold: c, reusePrefix: false });
      expect(noReuse.tokenIds).toEqual(high.tokenIds);
      expect(noReuse.adaptvis.pass2.reuse).toBeNull();
      expect(model.counters.visionPasses - v0).toBe(2);
      // With pass 1's whole answer (as their code generates it): the plain greedy answer, and the same pass 2.
      const full = await adaptVis(model, { ...base, threshold: c, plainAnswer: true });
      expect(full.tokenIds).toEqual(high.tokenIds);
      const plainGen = await generate(model, { ids, pixelValues: pixels, maxNewTokens: NEW, tokenizer, eosTokenIds: [] });
      expect(full.adaptvis.pass1.tokenIds).toEqual(plainGen.tokenIds);
      expect(full.adaptvis.pass2.reuse?.reused).toBe(true);
      // AdaptVis sets the temperature itself.
      await expect(adaptVis(model, { ...base, threshold: c, interventions: parseInterventions({ image_temperature: { alpha: 2 } }, model.dims) })).rejects.toThrow(
        /already set image_temperature/,
      );
    });
  });
}

/** A tokenizer stand-in (the fixtures have none; ids only, generate streams through decode). */
function fakeTokenizer(): Tokenizer {
  return { eosTokenId: null, isSpecial: () => false, decode: (ids: readonly number[]) => ids.map((i) => `<${i}>`).join('') } as unknown as Tokenizer;
}

const L = (ids: number[]) => ids.length;

suite('tiny-llava fixture', async () => {
  const dir = fixtureDir('tiny-llava');
  const g = golden('tiny-llava');
  const model = await LlavaModel.load(await gpuContext(), dir);
  return { model, ref: await referenceLlava(dir), ids: g.input_ids, pixels: [model.preprocess(await loadImageFile(join(dir, 'image.png')))] };
});

suite('generated LLaVA, GQA 6/2, bf16', async () => {
  const dir = await tempDir();
  await writeRandomLlava(dir, {
    seed: 23,
    dtype: 'BF16',
    vision: { hidden: 32, intermediate: 64, layers: 2, heads: 2, imageSize: 28, patchSize: 14 },
    text: { hidden: 48, intermediate: 96, layers: 3, heads: 6, kvHeads: 2, vocab: 200 },
  });
  const model = await LlavaModel.load(await gpuContext(), dir);
  const imageId = model.cfg.imageTokenIndex;
  const ids = [1, 17, 23, ...Array(model.imageTokens).fill(imageId), 40, 51, 62, 70, 81];
  const pixels = [Float32Array.from(randn(3 * 28 * 28, 5))];
  return { model, ref: await referenceLlava(dir), ids, pixels };
});

// The other families' layouts: Qwen2.5-VL (M-RoPE tables, window-ordered features), Qwen2-VL, SmolVLM (tiles).
describe('prefix reuse on the other families (reuse vs full recompute, 1e-5)', () => {
  for (const name of ['tiny-qwen2vl', 'tiny-qwen25vl', 'tiny-smolvlm']) {
    it(name, async () => {
      const dir = fixtureDir(name);
      const model = await loadModel(await gpuContext(), dir);
      const ids: number[] = golden(name).input_ids;
      const pixels = [model.preprocess(await loadImageFile(join(dir, 'image.png')))];
      for (const t of [{ alpha: 0.5, queries: 'last' }, { alpha: 1.6, queries: 'all' }]) {
        const spec = parseInterventions({ image_temperature: t }, model.dims);
        const first = await runP(model, { ids, pixelValues: pixels, capture: LOGITS, reserveNewTokens: NEW });
        const v0 = model.counters.visionPasses;
        const reused = await runP(model, { ids, pixelValues: pixels, interventions: spec, capture: LOGITS, maxNewTokens: NEW, reuse: first.prefix });
        expect(reused.reuse).toMatchObject({ reused: true, fromRow: t.queries === 'last' ? ids.length - 1 : ids.indexOf(model.imageTokenId), vision: false });
        expect(model.counters.visionPasses).toBe(v0);
        const full = await runP(model, { ids, pixelValues: pixels, interventions: spec, capture: LOGITS, maxNewTokens: NEW });
        expectClose(reused.logits!.data, full.logits!.data, 1e-5, 0, `${name} ${t.queries}: reuse vs full recompute`);
        expect(reused.tokens).toEqual(full.tokens);
      }
      model.destroy();
    });
  }
});

describe('the gate', () => {
  it('rounds as numpy does (np.round(x, 2) = rint(x * 100) / 100), not as Python round()', () => {
    // python3 -c "import numpy as np; print([np.round(x, 2) for x in ...])"
    const cases: [number, number][] = [
      [0.345, 0.34],
      [0.355, 0.36], // Python round(0.355, 2) gives 0.35
      [0.125, 0.12],
      [0.135, 0.14],
      [0.375, 0.38],
      [0.005, 0],
      [0.015, 0.02], // Python: 0.01
      [0.995, 1], // Python: 0.99
      [0.285, 0.28],
      [0.575, 0.57],
      [1, 1],
      [0.3461, 0.35],
    ];
    for (const [x, want] of cases) expect(roundConfidence(x), `np.round(${x}, 2)`).toBe(want);
  });

  it('picks alpha_low below the threshold and alpha_high at or above it, after rounding', () => {
    const o = { threshold: 0.35, alphaLow: 0.5, alphaHigh: 1.5 };
    expect(adaptVisBranch(roundConfidence(0.345), o)).toEqual({ branch: 'low', alpha: 0.5 }); // 0.34 < 0.35
    expect(adaptVisBranch(roundConfidence(0.3461), o)).toEqual({ branch: 'high', alpha: 1.5 }); // 0.35, not < 0.35
    expect(adaptVisBranch(0.35, o)).toEqual({ branch: 'high', alpha: 1.5 });
    expect(adaptVisBranch(0.36, o)).toEqual({ branch: 'high', alpha: 1.5 });
    expect(adaptVisBranch(0, o).branch).toBe('low');
  });

  it('top-1 softmax probability in float64', () => {
    const { probability, token } = topProbability(Float32Array.from([1, 3, 2, 3]));
    const z = Math.exp(-2) + 1 + Math.exp(-1) + 1;
    expect(token).toBe(1);
    expect(probability).toBeCloseTo(1 / z, 15);
  });

  it('parses threshold,alpha_low,alpha_high and names the bad field', () => {
    expect(parseAdaptVisTriple('0.4,0.5,1.5')).toEqual({ threshold: 0.4, alphaLow: 0.5, alphaHigh: 1.5 });
    expect(() => parseAdaptVisTriple('0.5,x,2')).toThrow(/^alpha_low "x" is not a number/);
    expect(() => parseAdaptVisTriple('0.5,1')).toThrow(/expected threshold,alpha_low,alpha_high/);
    expect(() => parseAdaptVisTriple('0.5,1,')).toThrow(/alpha_high/);
  });

  it('firstChangedRow: the first row an image temperature reaches', () => {
    const text = { layers: 2, heads: 2 };
    const t = (alpha: number, queries: 'all' | 'last' | 'generated', layers: number[] | null = null) => ({ alpha, queries, layers, heads: null });
    expect(firstChangedRow(null, t(0.5, 'last'), 10, 3, text)).toBe(9);
    expect(firstChangedRow(null, t(0.5, 'all'), 10, 3, text)).toBe(3);
    expect(firstChangedRow(t(0.5, 'all'), t(0.5, 'all'), 10, 3, text)).toBe(9);
    expect(firstChangedRow(null, t(1, 'all'), 10, 3, text)).toBe(9); // alpha 1 changes nothing
    expect(firstChangedRow(null, t(2, 'all', []), 10, 3, text)).toBe(9); // no layer
    expect(firstChangedRow(null, t(0.5, 'generated'), 10, 3, text)).toBe(9);
    expect(firstChangedRow(null, t(0.5, 'all'), 10, -1, text)).toBe(9); // no image key
    expect(firstChangedRow(t(0.5, 'last'), t(0.5, 'all'), 10, 3, text)).toBe(3);
  });
});

describe('CLI on the organism', () => {
  const organism = join(REPO_ROOT, 'weights/organism');
  let work: string;
  let data: string;
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'vlmscope-adaptvis-cli-'));
    data = writeSyntheticSet(join(work, 'set'), { seed: 77, scenes: 2, types: ['spatial'] });
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('generate --adaptvis --json reports the gate, and its text is generate --intervene with the chosen alpha', () => {
    const image = join(REPO_ROOT, 'examples/scene.png');
    const prompt = 'Is the red circle left or right of the blue square?';
    const r = vlmscope(['generate', '--model', organism, '--image', image, '--prompt', prompt, '--adaptvis', '0.5,0.5,1.5', '--max-new-tokens', '4', '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    const a = j.adaptvis;
    expect(a.threshold).toBe(0.5);
    expect(a.alpha).toBe(a.confidence < 0.5 ? 0.5 : 1.5);
    expect(a.branch).toBe(a.confidence < 0.5 ? 'low' : 'high');
    expect(a.reuse).toEqual({ reused: true, from_row: j.prompt_tokens - 1, rows: 1, prompt_rows: j.prompt_tokens, vision: false });
    expect(a.cost_ratio).toBeGreaterThan(0);
    const spec = jsonWriter(work)('temp.json', { image_temperature: { alpha: a.alpha, queries: 'last' } });
    const want = vlmscope(['generate', '--model', organism, '--image', image, '--prompt', prompt, '--intervene', spec, '--max-new-tokens', '4', '--json']);
    expect(want.code).toBe(0);
    expect(j.text).toBe(JSON.parse(want.stdout).text);
    expect(j.token_ids).toEqual(JSON.parse(want.stdout).token_ids);
    // Streaming with --verbose: the gate on stderr.
    const v = vlmscope(['generate', '--model', organism, '--image', image, '--prompt', prompt, '--adaptvis', '0.5,0.5,1.5', '--max-new-tokens', '4', '--verbose']);
    expect(v.code).toBe(0);
    expect(v.stdout.trim()).toBe(j.text.trim());
    expect(v.stderr).toMatch(/^adaptvis: confidence \d\.\d+ (<|>=) threshold 0\.5 -> alpha (0\.5|1\.5) \((low|high)\); pass 2 recomputed 1 of \d+ prompt rows/m);
  });

  it('eval --adaptvis writes each answer\'s confidence and alpha and the summary; the library gives the same', async () => {
    const out = join(work, 'results.jsonl');
    const r = vlmscope(['eval', '--model', organism, '--data', data, '--adaptvis', '0.6,0.5,2', '--json', '--out', out, '--limit', '6']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.stdout);
    const lines = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(6);
    for (const l of lines) {
      expect(l.alpha).toBe(l.confidence < 0.6 ? 0.5 : 2);
      expect(l.confidence).toBe(Math.round(l.confidence * 100) / 100);
    }
    const low = lines.filter((l) => l.alpha === 0.5).length;
    expect(summary.adaptvis).toMatchObject({ threshold: 0.6, alpha_low: 0.5, alpha_high: 2, low, high: 6 - low });
    expect(summary.adaptvis.cost_ratio).toBeGreaterThan(0);
    // The library, in this process.
    const model = await LlavaModel.load(await gpuContext(), organism);
    const tokenizer = await Tokenizer.fromFolder(nodeFolder(organism));
    const report = await evaluate(model, tokenizer, await readQuestions(data), { limit: 6, adaptVis: { threshold: 0.6, alphaLow: 0.5, alphaHigh: 2 }, eosTokenIds: [2] });
    expect(report.examples.map((e) => [e.prediction, e.adaptvis!.confidence, e.adaptvis!.alpha])).toEqual(lines.map((l) => [l.prediction, l.confidence, l.alpha]));
    expect(summary.correct).toBe(report.correct);
    // The table ends with the AdaptVis line.
    const t = vlmscope(['eval', '--model', organism, '--data', data, '--adaptvis', '0.6,0.5,2', '--limit', '6']);
    expect(t.code).toBe(0);
    expect(t.stdout).toMatch(new RegExp(`^adaptvis: threshold 0\\.6: alpha_low 0\\.5 on ${low}, alpha_high 2 on ${6 - low} of 6 answers; cost \\d+\\.\\d+x a plain generation`, 'm'));
    model.destroy();
  });

  it('bad --adaptvis values: one line, exit 2', () => {
    const image = join(REPO_ROOT, 'examples/scene.png');
    for (const [v, msg] of [
      ['0.5,x,2', /alpha_low "x" is not a number/],
      ['0.5,1', /expected threshold,alpha_low,alpha_high/],
    ] as const) {
      const r = vlmscope(['generate', '--model', organism, '--image', image, '--prompt', 'hi', '--adaptvis', v]);
      expect(r.code, v).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
      expect(r.stderr).toMatch(msg);
      const e = vlmscope(['eval', '--model', organism, '--data', data, '--adaptvis', v]);
      expect(e.code, v).toBe(2);
      expect(e.stderr.trim().split('\n'), e.stderr).toHaveLength(1);
      expect(e.stderr).toMatch(msg);
    }
    // With an intervention spec that sets image_temperature itself.
    const spec = jsonWriter(work)('t.json', { image_temperature: { alpha: 2 } });
    const r = vlmscope(['generate', '--model', organism, '--image', image, '--prompt', 'hi', '--adaptvis', '0.5,0.5,1.5', '--intervene', spec]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/image_temperature/);
  });
});
