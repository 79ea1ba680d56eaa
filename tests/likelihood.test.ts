// Option-likelihood scoring (issue 13): the summed log-probabilities of each candidate's tokens after the prompt
// against the float64 reference (tiny-llava fixture and a generated LLaVA with GQA), the prefix shared between
// candidates (one vision pass, one full prefill), AdaptVis with likelihood scoring (both branches, scores under the
// chosen alpha), continuations through real tokenizers (SentencePiece-style and byte-level BPE), and evaluate /
// eval / sweep with --scoring likelihood on the organism.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadImageFile } from '../src/io/image.js';
import { LlavaModel } from '../src/models/llava.js';
import { writeRandomLlava } from '../src/models/random-llava.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { nodeFolder } from '../src/io/checkpoint.js';
import { loadModel } from '../src/models/load.js';
import { parseInterventions } from '../src/spec/spec.js';
import { adaptVisScoreOptions, continuationIds, logProbability, scoreOptions } from '../src/eval/likelihood.js';
import { evaluate, itemCandidates } from '../src/eval/evaluate.js';
import { readQuestions, type EvalItem } from '../src/eval/dataset.js';
import { roundConfidence, topProbability } from '../src/generate/adaptvis.js';
import { gpuContext, randn } from './helpers/gpu.js';
import { fixtureDir, golden, REPO_ROOT } from './helpers/fixtures.js';
import { tempDirs } from './helpers/compare.js';
import { type ReferenceLlava, referenceLlava } from './helpers/reference-llava.js';
import { vlmscope } from './helpers/cli.js';
import { writeSyntheticSet } from './helpers/synthetic-data.js';
import { writeTinyQwenFolder } from './helpers/tiny-qwen-folder.js';

const tempDir = tempDirs('vlmscope-likelihood-');

/**
 * The reference's summed log-probability of `cont` after `ids`: one forward over ids ++ cont with the image
 * temperature on the rows the engine's prefill + forced decode steps scale (the prompt's last row for 'last').
 */
function referenceScore(ref: ReferenceLlava, ids: number[], pixels: Float32Array[], cont: number[], vocab: number, spec?: ReturnType<typeof parseInterventions>): number {
  const P = ids.length;
  const L = P + cont.length;
  const scope = spec?.imageTemperature?.queries ?? null;
  const temperatureRows: [number, number] = scope === 'all' ? [0, L] : scope === 'last' ? [P - 1, P] : scope === 'generated' ? [P, L] : [0, 0];
  const logits = ref.forward([...ids, ...cont], pixels, spec ? { interventions: spec, temperatureRows, promptLength: P } : { promptLength: P }).logits;
  let ll = 0;
  cont.forEach((tok, k) => {
    const row = ids.length - 1 + k;
    ll += logProbability(logits.subarray(row * vocab, (row + 1) * vocab), tok);
  });
  return ll;
}

interface Subject {
  model: LlavaModel;
  ref: ReferenceLlava;
  ids: number[];
  pixels: Float32Array[];
}

function suite(name: string, setup: () => Promise<Subject>) {
  describe(name, () => {
    let s: Subject;
    beforeAll(async () => {
      s = await setup();
    });

    it('log-likelihoods equal the float64 reference; candidates share one vision pass and one full prefill', async () => {
      const { model, ref, ids, pixels } = s;
      const vocab = model.vocabSize;
      const continuations = [[5], [9, 3, 11], [40, 2], [7, 7]];
      const before = { ...model.counters };
      const r = await scoreOptions(model, { ids, pixelValues: pixels, continuations });
      expect(model.counters.visionPasses - before.visionPasses, 'one vision pass').toBe(1);
      expect(model.counters.prefillRows - before.prefillRows, 'one full prefill, then one row per candidate').toBe(ids.length + continuations.length - 1);
      expect(r.timings.map((t) => t.prefillRows)).toEqual([ids.length, 1, 1, 1]);
      expect(r.timings.map((t) => t.decodeSteps)).toEqual(continuations.map((c) => c.length - 1));
      continuations.forEach((c, i) => {
        const want = referenceScore(ref, ids, pixels, c, vocab);
        expect(Math.abs(r.logLikelihoods[i]! - want), `candidate ${i}: ${r.logLikelihoods[i]} vs ${want}`).toBeLessThan(1e-4 * Math.max(1, Math.abs(want)));
      });
      // The first logits row is the plain last prompt row.
      const refLast = ref.forward(ids, pixels).logits;
      const top = topProbability(r.firstLogits);
      expect(Math.abs(top.probability - topProbability(refLast.subarray(refLast.length - vocab)).probability)).toBeLessThan(1e-4);
      // Under an intervention the scores move, and still equal the reference.
      const spec = parseInterventions({ image_temperature: { alpha: 2.5, queries: 'all' }, head_scale: [{ layer: 0, head: 1, scale: 0 }] }, model.dims);
      const t = await scoreOptions(model, { ids, pixelValues: pixels, continuations, interventions: spec });
      continuations.forEach((c, i) => {
        const want = referenceScore(ref, ids, pixels, c, vocab, spec);
        expect(Math.abs(t.logLikelihoods[i]! - want), `tempered candidate ${i}`).toBeLessThan(1e-4 * Math.max(1, Math.abs(want)));
      });
      expect(Math.max(...t.logLikelihoods.map((v, i) => Math.abs(v - r.logLikelihoods[i]!)))).toBeGreaterThan(1e-3);
      await expect(scoreOptions(model, { ids, pixelValues: pixels, continuations: [[1], []] })).rejects.toThrow(/candidate 1 has no tokens/);
    });

    it('AdaptVis with likelihood scoring: the rounded plain confidence picks the branch, the scores are the reference under its alpha', async () => {
      const { model, ref, ids, pixels } = s;
      const vocab = model.vocabSize;
      const continuations = [[5], [9, 3]];
      const refLast = ref.forward(ids, pixels).logits;
      const c = roundConfidence(topProbability(refLast.subarray(refLast.length - vocab)).probability);
      for (const [threshold, branch, alpha] of [
        [c, 'high', 2.2],
        [c + 0.01, 'low', 0.4],
      ] as const) {
        const before = { ...model.counters };
        const r = await adaptVisScoreOptions(model, { ids, pixelValues: pixels, continuations, threshold, alphaLow: 0.4, alphaHigh: 2.2 });
        expect(r).toMatchObject({ confidence: c, branch, alpha });
        expect(model.counters.visionPasses - before.visionPasses, 'one vision pass for both passes').toBe(1);
        expect(r.timings[0]!.prefillRows, 'pass 2 reuses the plain prefix').toBe(1);
        expect(r.costRatio).toBeGreaterThan(0);
        const spec = parseInterventions({ image_temperature: { alpha, queries: 'last' } }, model.dims);
        continuations.forEach((cont, i) => {
          const want = referenceScore(ref, ids, pixels, cont, vocab, spec);
          expect(Math.abs(r.logLikelihoods[i]! - want), `${branch} candidate ${i}`).toBeLessThan(1e-4 * Math.max(1, Math.abs(want)));
        });
      }
    });
  });
}

suite('tiny-llava fixture', async () => {
  const dir = fixtureDir('tiny-llava');
  const model = await LlavaModel.load(await gpuContext(), dir);
  return { model, ref: await referenceLlava(dir), ids: golden('tiny-llava').input_ids, pixels: [model.preprocess(await loadImageFile(join(dir, 'image.png')))] };
});

suite('generated LLaVA, GQA 6/2, bf16', async () => {
  const dir = await tempDir();
  await writeRandomLlava(dir, {
    seed: 31,
    dtype: 'BF16',
    vision: { hidden: 32, intermediate: 64, layers: 2, heads: 2, imageSize: 28, patchSize: 14 },
    text: { hidden: 48, intermediate: 96, layers: 3, heads: 6, kvHeads: 2, vocab: 200 },
  });
  const model = await LlavaModel.load(await gpuContext(), dir);
  const ids = [1, 17, 23, ...Array(model.imageTokens).fill(model.cfg.imageTokenIndex), 40, 51, 62, 70, 81];
  return { model, ref: await referenceLlava(dir), ids, pixels: [Float32Array.from(randn(3 * 28 * 28, 5))] };
});

describe('continuations through real tokenizers', () => {
  it('SentencePiece-style (the organism): "ASSISTANT:" + " left", the ids the model would generate', async () => {
    const dir = join(REPO_ROOT, 'weights/organism');
    const model = await loadModel(await gpuContext(), nodeFolder(dir));
    const tokenizer = await Tokenizer.fromFolder(nodeFolder(dir));
    const processor = model.createProcessor(tokenizer);
    const image = model.preprocess(await loadImageFile(join(REPO_ROOT, 'examples/scene.png')));
    const text = processor.formatPrompt('Is the red circle left or right of the blue square?', 1);
    expect(text).toMatch(/ASSISTANT:$/);
    const ids = processor.encodeText(text, [image]).ids;
    for (const cand of ['left', 'right', 'above']) {
      const cont = continuationIds(processor, text, [image], ids, cand);
      expect(processor.encodeText(`${text} ${cand}`, [image]).ids).toEqual([...ids, ...cont]);
      expect(tokenizer.decode(cont, { skipSpecialTokens: true }).trim()).toBe(cand);
    }
    expect(() => continuationIds(processor, text, [image], ids, '')).toThrow(/empty candidate/);
    model.destroy();
  });

  it('byte-level BPE with ChatML (Qwen): no space after "assistant\\n"', async () => {
    const dir = await tempDir();
    await writeTinyQwenFolder(dir);
    const model = await loadModel(await gpuContext(), nodeFolder(dir));
    const tokenizer = await Tokenizer.fromFolder(nodeFolder(dir));
    const processor = model.createProcessor(tokenizer);
    const image = model.preprocess(await loadImageFile(join(REPO_ROOT, 'examples/scene.png')));
    const text = processor.formatPrompt('Where is the cat?', 1);
    expect(text).toMatch(/\n$/);
    const ids = processor.encodeText(text, [image]).ids;
    const cont = continuationIds(processor, text, [image], ids, 'Left');
    expect(tokenizer.decode(cont)).toBe('Left');
    expect(processor.encodeText(`${text}Left`, [image]).ids).toEqual([...ids, ...cont]);
    model.destroy();
  });
});

describe('evaluate / eval / sweep with --scoring likelihood on the organism', () => {
  const organism = join(REPO_ROOT, 'weights/organism');
  let work: string;
  let data: string;
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'vlmscope-likelihood-cli-'));
    data = writeSyntheticSet(join(work, 'set'), { seed: 78, scenes: 2, types: ['spatial', 'color'] });
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('candidates come from options (gold found by normalizeAnswer) or an AdaptVis item; none is an error naming the item', () => {
    const item: EvalItem = { id: 'q1', imagePath: 'x.png', question: 'Where?', answer: 'Left', type: 'spatial', function: 'spatial_perception', options: ['right', 'left'] };
    expect(itemCandidates(item)).toEqual({ candidates: ['right', 'left'], goldIndex: 1 });
    expect(itemCandidates({ ...item, candidates: ['On', 'Under'], goldIndex: 0 } as EvalItem)).toEqual({ candidates: ['On', 'Under'], goldIndex: 0 });
    expect(() => itemCandidates({ ...item, options: undefined })).toThrow(/question q1 has no options/);
    expect(() => itemCandidates({ ...item, answer: 'up' })).toThrow(/question q1: answer "up" is not one of its options/);
  });

  it('eval --scoring likelihood: each prediction is the most likely option; the CLI equals the library; a file without options is refused', async () => {
    const out = join(work, 'll.jsonl');
    const r = vlmscope(['eval', '--model', organism, '--data', data, '--scoring', 'likelihood', '--json', '--out', out, '--limit', '8']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(8);
    for (const l of lines) {
      expect(l.candidates.length).toBe(l.log_likelihoods.length);
      const best = l.log_likelihoods.indexOf(Math.max(...l.log_likelihoods));
      expect(l.prediction).toBe(l.candidates[best]);
      expect(l.correct).toBe(l.candidates[best] === l.answer);
      for (const v of l.log_likelihoods) expect(v).toBeLessThanOrEqual(0);
    }
    const summary = JSON.parse(r.stdout);
    expect(summary.correct).toBe(lines.filter((l) => l.correct).length);
    const model = await LlavaModel.load(await gpuContext(), organism);
    const tokenizer = await Tokenizer.fromFolder(nodeFolder(organism));
    const report = await evaluate(model, tokenizer, await readQuestions(data), { limit: 8, scoring: 'likelihood' });
    report.examples.forEach((e, i) => {
      expect(e.prediction).toBe(lines[i].prediction);
      e.logLikelihoods!.forEach((v, k) => expect(Math.abs(v - lines[i].log_likelihoods[k])).toBeLessThan(1e-5));
    });
    // The trained organism knows its answers: likelihood scoring agrees with greedy generation on most questions.
    const gen = await evaluate(model, tokenizer, await readQuestions(data), { limit: 8 });
    expect(report.correct).toBeGreaterThanOrEqual(gen.correct - 1);
    model.destroy();
    // No options: refused before the model loads, naming the question.
    const bare = join(work, 'bare.jsonl');
    const first = JSON.parse(readFileSync(data, 'utf8').split('\n')[0]!);
    delete first.options;
    delete first.sub_questions;
    writeFileSync(bare, `${JSON.stringify({ ...first, image: join(work, 'set', first.image) })}\n`);
    const e = vlmscope(['eval', '--model', organism, '--data', bare, '--scoring', 'likelihood']);
    expect(e.code).toBe(2);
    expect(e.stderr.trim().split('\n')).toHaveLength(1);
    expect(e.stderr).toMatch(new RegExp(`--scoring likelihood: question ${first.id} has no options`));
  });

  it('sweep --scoring likelihood scores every alpha by likelihood and says so', () => {
    const out = join(work, 'sweep');
    const r = vlmscope(['sweep', '--model', organism, '--data', data, '--alpha', '0.5,2', '--scoring', 'likelihood', '--limit', '4', '--out', out, '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(readFileSync(join(out, 'sweep.json'), 'utf8'));
    expect(j.scoring).toBe('option likelihood');
    expect(j.alphas).toEqual([0.5, 1, 2]);
    // Every prediction is one of its question's options (the file's own, as eval reads them).
    const records = readFileSync(data, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const options = new Map<string, string[]>(records.flatMap((q) => [[q.id, q.options], ...(q.sub_questions ?? []).map((sq: { id: string; options: string[] }) => [sq.id, sq.options])]));
    for (const run of j.runs) {
      expect(run.examples).toHaveLength(4);
      run.examples.forEach((e: { prediction: string }, i: number) => expect(options.get(j.questions[i].id)).toContain(e.prediction));
    }
  });
});
