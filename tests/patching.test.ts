// Activation patching per head (src/interp/patching.ts, `vlmscope patch`): the sweep against the float64 CPU reference
// on a generated LLaVA checkpoint with GQA (every patched run's logits within 1e-4, LDs and recovery), at the last row
// (one prefilled row per patched run), at listed rows and at all rows, with and without the prefix reuse; its
// one-line errors; the organism on a swapped-object pair (its answer flips; the sweep finds heads that move it); the
// CLI on the tiny checkpoint (outputs, and equal to the library) and its usage errors.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { LlavaModel } from '../src/models/llava.js';
import { loadModel } from '../src/models/load.js';
import type { VlmModel } from '../src/models/vlm.js';
import { writeRandomLlava } from '../src/models/random-llava.js';
import { nodeFolder } from '../src/io/checkpoint.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { decodeImage, encodePng, loadImageFile } from '../src/io/image.js';
import { EMPTY_INTERVENTIONS, type InterventionSpec, type PatchRows } from '../src/spec/spec.js';
import { answerTokenId, patchHeads, summarizePatching, type PatchingResult } from '../src/interp/patching.js';
import { iterateDataset, itemToJsonl, renderScene, sceneImagePath, generateScene } from '../src/eval/synthetic.js';
import { renderPair, spatialPairs } from '../src/eval/counterfactual.js';
import { expectClose, gpuContext, randn } from './helpers/gpu.js';
import { tempDirs } from './helpers/compare.js';
import { REPO_ROOT, fixtureDir, golden } from './helpers/fixtures.js';
import { vlmscope } from './helpers/cli.js';
import { type ReferenceLlava, referenceLlava } from './helpers/reference-llava.js';

const tempDir = tempDirs('vlmscope-patching-');

describe('patchHeads against the float64 reference (generated LLaVA, GQA 6/2, bf16)', () => {
  let model: LlavaModel;
  let ref: ReferenceLlava;
  let ids: number[];
  let clean: Float32Array[];
  let cf: Float32Array[];
  const V = 200;
  const HD = 8;

  beforeAll(async () => {
    const dir = await tempDir();
    await writeRandomLlava(dir, {
      seed: 41,
      dtype: 'BF16',
      vision: { hidden: 32, intermediate: 64, layers: 2, heads: 2, imageSize: 28, patchSize: 14 },
      text: { hidden: 48, intermediate: 96, layers: 3, heads: 6, kvHeads: 2, vocab: V },
    });
    model = await LlavaModel.load(await gpuContext(), dir);
    ref = await referenceLlava(dir);
    ids = [1, 17, 23, ...Array(model.imageTokens).fill(model.cfg.imageTokenIndex), 40, 51, 62, 70, 81];
    clean = [Float32Array.from(randn(3 * 28 * 28, 5))];
    cf = [Float32Array.from(randn(3 * 28 * 28, 6))];
  });

  /** The reference sweep: z of the counterfactual at the rows, then one reference forward per head; LD at the last row. */
  function referenceSweep(rows: number[], rowsSpec: PatchRows, layers: number[], heads: number[], answer: number, other: number) {
    const L = ids.length;
    const last = (logits: Float64Array) => logits.subarray((L - 1) * V, L * V);
    const ld = (logits: Float64Array) => last(logits)[answer]! - last(logits)[other]!;
    const zCf = ref.forward(ids, cf).z; // [layers, L, heads * hd]
    const w = 6 * HD;
    const specOf = (l: number, h: number): InterventionSpec => {
      const values = new Float32Array(rows.length * HD);
      rows.forEach((r, j) => values.set(zCf.subarray((l * L + r) * w + h * HD, (l * L + r) * w + (h + 1) * HD), j * HD));
      return { ...EMPTY_INTERVENTIONS, patchZ: [{ tower: 'text', layer: l, head: h, rows: rowsSpec, values }] };
    };
    const patched = layers.map((l) => heads.map((h) => last(ref.forward(ids, clean, { interventions: specOf(l, h) }).logits)));
    return { ldClean: ld(ref.forward(ids, clean).logits), ldCf: ld(ref.forward(ids, cf).logits), patched, ld: patched.map((row) => row.map((x) => x[answer]! - x[other]!)), specOf };
  }

  function expectSweep(got: PatchingResult, want: ReturnType<typeof referenceSweep>) {
    expect(Math.abs(got.ldClean - want.ldClean)).toBeLessThan(1e-4);
    expect(Math.abs(got.ldCounterfactual - want.ldCf)).toBeLessThan(1e-4);
    expectClose(got.ldPatched.flat(), want.ld.flat(), 1e-4, 0, 'LD patched');
    const rec = want.ld.flat().map((x) => (x - want.ldClean) / (want.ldCf - want.ldClean));
    expectClose(got.recovery.flat(), rec, 1e-3, 1e-3, 'recovery');
  }

  it('rows last, every head of two layers: LDs and recovery equal the reference; the 12 one-row variants in one forward', async () => {
    const L = ids.length;
    const answer = 7;
    const other = 150;
    const got = await patchHeads(model, { ids, pixelValues: clean }, { ids, pixelValues: cf }, { answer, other, layers: [0, 2] });
    expect(got.rows).toEqual([L - 1]);
    expect([got.layers, got.heads, got.runs, got.variants]).toEqual([[0, 2], [0, 1, 2, 3, 4, 5], 3, 12]);
    expect(got.prefilledRows).toBe(2 * L + 12);
    const want = referenceSweep([L - 1], 'last', [0, 2], [0, 1, 2, 3, 4, 5], answer, other);
    expectSweep(got, want);
    // The batched variants equal separate one-row runs (batch: false), also in batches of 5 (3 forwards).
    const separate = await patchHeads(model, { ids, pixelValues: clean }, { ids, pixelValues: cf }, { answer, other, layers: [0, 2], batch: false });
    expect([separate.runs, separate.variants, separate.prefilledRows]).toEqual([14, 12, 2 * L + 12]);
    expectClose(got.ldPatched.flat(), separate.ldPatched.flat(), 1e-5, 0, 'batched vs separate');
    const fives = await patchHeads(model, { ids, pixelValues: clean }, { ids, pixelValues: cf }, { answer, other, layers: [0, 2], batch: 5 });
    expect(fives.runs).toBe(5);
    expectClose(fives.ldPatched.flat(), separate.ldPatched.flat(), 1e-5, 0, 'batches of 5 vs separate');
    // Heads that do something: the sweep is not flat.
    expect(Math.max(...got.recovery.flat().map(Math.abs))).toBeGreaterThan(0.02);
    // A patched run's whole logits row against the reference, with the engine's own counterfactual z (layer 2, head 3,
    // the second head of kv head 1).
    const cfRun = await model.run({ ids, pixelValues: cf, capture: { logits: 'last', pattern: [], z: { tower: 'text', positions: { kind: 'last' } }, residual: [], imageFeatures: false } });
    const values = cfRun.z!.data.slice((2 * 6 + 3) * HD, (2 * 6 + 4) * HD);
    const spec: InterventionSpec = { ...EMPTY_INTERVENTIONS, patchZ: [{ tower: 'text', layer: 2, head: 3, rows: 'last', values }] };
    const r = await model.run({ ids, pixelValues: clean, interventions: spec });
    expectClose(r.logits!.data, ref.forward(ids, clean, { interventions: spec }).logits.subarray((L - 1) * V, L * V), 1e-4, 0, 'patched logits');
    expectClose(r.logits!.data, want.patched[1]![3]!, 1e-4, 0, 'patched logits (reference z)');
  });

  it('listed rows and all rows, with and without prefix reuse, equal the reference', async () => {
    const L = ids.length;
    const answer = 12;
    const other = 99;
    const listed = [L - 4, 2, L - 1];
    const a = await patchHeads(model, { ids, pixelValues: clean }, { ids, pixelValues: cf }, { answer, other, rows: listed, layers: [1], heads: [0, 5] });
    expect(a.prefilledRows).toBe(2 * L + 2 * (L - 2));
    expectSweep(a, referenceSweep(listed, listed, [1], [0, 5], answer, other));
    const b = await patchHeads(model, { ids, pixelValues: clean }, { ids, pixelValues: cf }, { answer, other, rows: 'all', layers: [0], heads: [2, 4] });
    expect(b.rows).toEqual(Array.from({ length: L }, (_, i) => i));
    expectSweep(b, referenceSweep(b.rows, 'all', [0], [2, 4], answer, other));
    const c = await patchHeads(model, { ids, pixelValues: clean }, { ids, pixelValues: cf }, { answer, other, rows: listed, layers: [1], heads: [0, 5], reuse: false });
    expect(c.prefilledRows).toBe(4 * L);
    expectClose(c.ldPatched.flat(), a.ldPatched.flat(), 1e-5, 0, 'reuse vs full');
  });

  it('answer and other default to the two runs\' top tokens; several pairs combine', async () => {
    // A counterfactual with another text token (same layout) moves this random model's top token.
    const cfIds = [...ids.slice(0, -2), 33, ids[ids.length - 1]!];
    const r = await patchHeads(model, { ids, pixelValues: clean }, { ids: cfIds, pixelValues: cf }, { layers: [2], heads: [1] });
    const L = ids.length;
    const top = (x: Float64Array) => x.subarray((L - 1) * V, L * V).reduce((best, v, i, a) => (v > a[best]! ? i : best), 0);
    expect([r.answer, r.other]).toEqual([top(ref.forward(ids, clean).logits), top(ref.forward(cfIds, cf).logits)]);
    expect(r.answer).not.toBe(r.other);
    const s = summarizePatching([r, r]);
    expect([s.pairs, s.runs, s.variants, s.ldClean, s.recovery, s.meanRecovery]).toEqual([2, 6, 2, r.ldClean, r.recovery, r.recovery]);
  });

  it('refuses inputs it cannot patch, in one line', async () => {
    const L = ids.length;
    const run = (o: Parameters<typeof patchHeads>[3], cfIds = ids) => patchHeads(model, { ids, pixelValues: clean }, { ids: cfIds, pixelValues: cf }, o);
    await expect(run({ answer: 1, other: 2 }, [...ids, 5])).rejects.toThrow(`the clean prompt has ${L} tokens but the counterfactual one ${L + 1}; patching needs the same token layout in both`);
    await expect(run({ answer: 1, other: 2 }, [ids[0]!, ...ids.slice(2), 9])).rejects.toThrow('position 2 is an image token in one prompt and not in the other');
    await expect(run({ answer: 1, other: 2, layers: [3] })).rejects.toThrow('layers[0]: layer 3 does not exist (the text tower has layers 0..2)');
    await expect(run({ answer: 1, other: 2, heads: [1, 1] })).rejects.toThrow('heads[1]: head 1 is listed twice');
    await expect(run({ answer: 200, other: 2 })).rejects.toThrow('answer token 200 is outside the vocabulary (0..199)');
    await expect(run({ answer: 4, other: 4 })).rejects.toThrow('answer and other are the same token (4)');
    await expect(run({ answer: 1, other: 2, rows: [0, L] })).rejects.toThrow(`rows.rows[1]: row ${L} does not exist in the prompt of ${L} tokens`);
  });
});

describe('other families (M-RoPE, windows, tiles): the batched last-row sweep equals separate runs', () => {
  for (const name of ['tiny-qwen2vl', 'tiny-qwen25vl', 'tiny-smolvlm']) {
    it(`${name}: batched = one run per head, 1e-5`, async () => {
      const dir = fixtureDir(name);
      const model = await loadModel(await gpuContext(), dir);
      const image = await loadImageFile(join(dir, 'image.png'));
      // The counterfactual: the image mirrored left-right (same size, so the same token layout).
      const mirrored = { ...image, data: new Uint8Array(image.data.length) };
      for (let y = 0; y < image.height; y++)
        for (let x = 0; x < image.width; x++)
          for (let c = 0; c < 3; c++) mirrored.data[(y * image.width + x) * 3 + c] = image.data[(y * image.width + image.width - 1 - x) * 3 + c]!;
      const ids = golden(name).input_ids as number[];
      const clean = { ids, pixelValues: [model.preprocess(image)] };
      const cf = { ids, pixelValues: [model.preprocess(mirrored)] };
      const layers = [0, model.dims.text.layers - 1];
      const a = await patchHeads(model, clean, cf, { answer: 3, other: 5, layers });
      const b = await patchHeads(model, clean, cf, { answer: 3, other: 5, layers, batch: false });
      expect([a.runs, b.runs]).toEqual([3, 2 + 2 * model.dims.text.heads]);
      expectClose(a.ldPatched.flat(), b.ldPatched.flat(), 1e-5, 0, `${name} batched vs separate`);
      expect(Math.max(...a.ldPatched.flat().map((x) => Math.abs(x - a.ldClean)))).toBeGreaterThan(1e-4);
    });
  }
});

describe('the organism on a swapped-object pair', () => {
  let model: VlmModel;
  let tokenizer: Tokenizer;
  beforeAll(async () => {
    const folder = nodeFolder(join(REPO_ROOT, 'weights/organism'));
    model = await loadModel(await gpuContext(), folder);
    tokenizer = await Tokenizer.fromFolder(folder);
  });

  it('the answer flips between the pair, and the sweep of all 32 heads takes 3 forward passes (32 one-row variants)', async () => {
    const scene = generateScene(11);
    const pair = spatialPairs(scene)[0]!;
    const images = renderPair(pair);
    const processor = model.createProcessor(tokenizer);
    const prompt = processor.formatPrompt(pair.question, 1);
    const c = processor.process(prompt, [images.clean]);
    const f = processor.process(prompt, [images.counterfactual]);
    expect(f.ids).toEqual(c.ids);
    const answer = answerTokenId(tokenizer, prompt, pair.answer);
    const other = answerTokenId(tokenizer, prompt, pair.counterfactualAnswer);
    expect([tokenizer.decode([answer]).trim(), tokenizer.decode([other]).trim()]).toEqual([pair.answer, pair.counterfactualAnswer]);
    const r = await patchHeads(model, c, f, { answer, other });
    expect([r.runs, r.variants, r.prefilledRows]).toEqual([3, 32, 2 * c.ids.length + 32]);
    // The organism answers both right: the clean run prefers the clean answer, the counterfactual run the other.
    expect(r.ldClean).toBeGreaterThan(0);
    expect(r.ldCounterfactual).toBeLessThan(0);
    // Some head's counterfactual z moves the answer a good part of the way.
    expect(Math.max(...r.recovery.flat())).toBeGreaterThan(0.1);
  });
});

/** A synthetic set as scripts/make-synthetic.ts writes it, scenes.jsonl included. */
function writeSet(dir: string, seed: number, scenes: number): string {
  mkdirSync(join(dir, 'images'), { recursive: true });
  let lines = '';
  let meta = '';
  for (const s of iterateDataset({ seed, scenes, types: ['spatial'] })) {
    writeFileSync(join(dir, sceneImagePath(s.id)), encodePng(renderScene(s.scene)));
    for (const item of s.items) lines += `${itemToJsonl(item)}\n`;
    const { objects, background } = s.scene;
    meta += `${JSON.stringify({ id: s.id, seed: s.seed, size: s.scene.size, background: background.name, objects: objects.map(({ colour, shape, x, y, d, cx, cy }) => ({ colour, shape, x, y, d, cx, cy })) })}\n`;
  }
  writeFileSync(join(dir, 'questions.jsonl'), lines);
  writeFileSync(join(dir, 'scenes.jsonl'), meta);
  return join(dir, 'questions.jsonl');
}

describe('vlmscope patch', () => {
  const tiny = join(REPO_ROOT, 'weights/tiny-llava');

  it('synthetic pairs on the tiny checkpoint: CSV, JSON and heatmap, equal to the library', async () => {
    const dir = await tempDir();
    const data = writeSet(join(dir, 'set'), 3, 4);
    const out = join(dir, 'out');
    const r = vlmscope(['patch', '--model', tiny, '--data', data, '--limit', '1', '--layers', '0-1', '--heads', '0,2', '--top', '2', '--out', out], 300_000);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // The tiny tokenizer spells " left" and " right" both from "▁": the first question (left) is skipped; the first
    // usable one asks above / below ("▁a" vs "▁be").
    expect(r.stdout).toMatch(/^patching: 1 pair \(answer "(be|a)" vs "(be|a)"\), row \d+ patched, 4 heads in 3 runs, \d questions? skipped\n/);
    expect(r.stdout).toMatch(/top heads: L\dH\d -?\d\.\d{3}, L\dH\d/);
    const csv = readFileSync(join(out, 'patch.csv'), 'utf8').trim().split('\n');
    expect(csv[0]).toBe('layer,head,recovery,mean_recovery,ld_patched');
    expect(csv.slice(1).map((l) => l.split(',').slice(0, 2).join(','))).toEqual(['0,0', '0,2', '1,0', '1,2']);
    const json = JSON.parse(readFileSync(join(out, 'patch.json'), 'utf8'));
    expect([json.pairs, json.runs, json.variants, json.layers, json.heads]).toEqual([1, 3, 4, [0, 1], [0, 2]]);
    expect(json.skipped[0]).toEqual({ id: 's000000-spatial', reason: expect.stringMatching(/^the answers "left" and "right" start with the same token \("▁", id \d+\)/) });
    const ex = json.examples[0];
    expect(['above', 'below']).toContain(ex.answer);
    // The first tokens of the answers (the tiny tokenizer splits words: "be" of "below").
    expect(ex.answer.startsWith(ex.answer_text.trim()) && ex.counterfactual_answer.startsWith(ex.other_text.trim())).toBe(true);
    const png = decodeImage(readFileSync(join(out, 'patch.png')), 'patch.png');
    // The tiny checkpoint's text tower: a cell of 16 px plus a 1-px line per layer and head.
    const text = JSON.parse(readFileSync(join(tiny, 'config.json'), 'utf8')).text_config;
    expect([png.width, png.height]).toEqual([text.num_attention_heads * 17 + 1, text.num_hidden_layers * 17 + 1]);

    // The library on the same pair gives the same numbers.
    const folder = nodeFolder(tiny);
    const model = await loadModel(await gpuContext(), folder);
    const tokenizer = await Tokenizer.fromFolder(folder);
    const processor = model.createProcessor(tokenizer);
    const scene = [...iterateDataset({ seed: 3, scenes: 4, types: ['spatial'] })].find((s) => s.items.some((i) => i.id === ex.id))!;
    const item = scene.items.find((i) => i.id === ex.id)!;
    const pair = spatialPairs(scene.scene).find((p) => p.a.name === ex.objects[0] && p.b.name === ex.objects[1])!;
    const images = renderPair(pair);
    const prompt = processor.formatPrompt(item.question, 1);
    const lib = await patchHeads(model, processor.process(prompt, [images.clean]), processor.process(prompt, [images.counterfactual]), {
      answer: answerTokenId(tokenizer, prompt, pair.answer),
      other: answerTokenId(tokenizer, prompt, pair.counterfactualAnswer),
      layers: [0, 1],
      heads: [0, 2],
    });
    expect([ex.answer_token, ex.other_token]).toEqual([lib.answer, lib.other]);
    expectClose(json.ld_patched.flat(), lib.ldPatched.flat(), 1e-6, 0, 'CLI vs library');
    expectClose(json.recovery.flat(), lib.recovery.flat(), 1e-6, 0, 'CLI vs library recovery');
  });

  it('an explicit pair of images and a prompt', async () => {
    const dir = await tempDir();
    const pair = spatialPairs(generateScene(21))[0]!;
    const images = renderPair(pair);
    writeFileSync(join(dir, 'a.png'), encodePng(images.clean));
    writeFileSync(join(dir, 'b.png'), encodePng(images.counterfactual));
    const out = join(dir, 'out');
    const r = vlmscope(['patch', '--model', tiny, '--image', join(dir, 'a.png'), '--cf-image', join(dir, 'b.png'), '--prompt', pair.question, '--answer', 'above', '--other', 'below', '--rows', '-1,-2', '--layers', '1', '--heads', '3', '--out', out], 300_000);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^patching: 1 pair \(answer ".*" vs ".*"\), 2 rows patched, 1 head in 3 runs\n/);
    const json = JSON.parse(readFileSync(join(out, 'patch.json'), 'utf8'));
    const L = json.examples[0].rows[0] + 1;
    expect(json.examples[0].rows).toEqual([L - 1, L - 2]);
  });

  it('refuses bad input in one line before loading the model, and writes nothing', async () => {
    const dir = await tempDir();
    const data = writeSet(join(dir, 'set'), 4, 1);
    const out = join(dir, 'out');
    const cases: [string[], RegExp][] = [
      [['--data', data, '--image', 'x.png'], /^vlmscope: give an explicit pair \(--image, --cf-image, --prompt\) or --data, not both\n$/],
      [[], /^vlmscope: give an explicit pair \(--image, --cf-image, --prompt\) or --data with synthetic spatial questions\n$/],
      [['--image', join(dir, 'set/images/s000000.png'), '--prompt', 'Where?'], /^vlmscope: an explicit pair needs --image, --cf-image and --prompt/],
      [['--data', data, '--layers', '9'], /^vlmscope: --layers 9 is out of range: the model has \d+ text layers/],
      [['--data', data, '--heads', '1,1'], /^vlmscope: --heads 1,1 names one twice\n$/],
      [['--data', data, '--item', 'nope'], /^vlmscope: --item nope: no question with that id in /],
      [['--data', data, '--answer', 'left'], /^vlmscope: --answer and --other go with an explicit pair/],
      [['--data', data, '--rows', 'first'], /^vlmscope: option '--rows <rows>' argument 'first' is invalid\. expected last, all, or prompt positions/],
      [['--data', join(dir, 'missing.jsonl')], /^vlmscope: cannot read data file .*missing\.jsonl: no such file\n$/],
    ];
    for (const [args, msg] of cases) {
      const r = vlmscope(['patch', '--model', tiny, ...args, '--out', out]);
      expect(r.stderr, args.join(' ')).toMatch(msg);
      expect(r.code).toBe(2);
    }
    expect(() => readFileSync(join(out, 'patch.csv'))).toThrow();
  });
});
