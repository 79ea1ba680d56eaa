// Activation collection on weights/tiny-llava (random weights: the answers are noise, the mechanics are not) with a
// small synthetic CogVSR-style set: the plan order and chain contexts, chain prompts as token ids against
// hand-built prompts (chat template and the LLaVA-1.5 fallback), every pool against z captured directly with
// model.run at the right positions, the layer-mean concatenation, predicted-answer contexts, the vision tower, the
// store format, resumption giving byte-identical files, and refusal of other arguments.

import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { LlavaModel } from '../src/models/llava.js';
import { LlavaProcessor } from '../src/models/llava-processor.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { type FolderSource, nodeFolder } from '../src/io/checkpoint.js';
import { loadImageFile } from '../src/io/image.js';
import { parseCapture } from '../src/spec/spec.js';
import { generate } from '../src/generate/generate.js';
import { encodeSafetensorsF32 } from '../src/io/safetensors-writer.js';
import { readQuestions, type EvalItem } from '../src/eval/dataset.js';
import {
  type CollectRow,
  appendLayerMean,
  answerIndices,
  chainPrompt,
  checkPool,
  collectActivations,
  parsePool,
  planCollection,
  poolName,
} from '../src/interp/collect.js';
import { StoreMismatchError, collectToStore, readActivationStore, storeArgs } from '../src/interp/activation-store.js';
import { encodePng } from '../src/io/image.js';
import { iterateDataset, itemToJsonl, renderScene, sceneImagePath } from '../src/eval/synthetic.js';
import { expectClose, gpuContext } from './helpers/gpu.js';
import { REPO_ROOT } from './helpers/fixtures.js';
import { writeSyntheticSet } from './helpers/synthetic-data.js';

const modelDir = join(REPO_ROOT, 'weights/tiny-llava');
const work = mkdtempSync(join(tmpdir(), 'vlmscope-collect-'));

/** The LLaVA-1.5 multi-turn prompt, written out by hand. */
function handPrompt(turns: [string, string][], question: string): string {
  if (turns.length === 0) return `USER: <image>\n${question} ASSISTANT:`;
  return turns.map(([q, a], i) => `USER: ${i === 0 ? '<image>\n' : ''}${q} ASSISTANT: ${a}</s>`).join('') + `USER: ${question} ASSISTANT:`;
}

/** The folder with the chat template taken out of tokenizer_config.json. */
function withoutTemplate(dir: string): FolderSource {
  const base = nodeFolder(dir);
  return {
    ...base,
    name: `${dir} (no chat template)`,
    async readText(f) {
      const text = await base.readText(f);
      if (f !== 'tokenizer_config.json' || text === null) return text;
      const cfg = JSON.parse(text) as Record<string, unknown>;
      delete cfg.chat_template;
      return JSON.stringify(cfg);
    },
  };
}

const bytes = (p: string) => readFileSync(p);

describe('collectActivations and the activation store on weights/tiny-llava', () => {
  let model: LlavaModel;
  let tokenizer: Tokenizer;
  let processor: LlavaProcessor;
  let items: EvalItem[];
  let rows: CollectRow[]; // last_prompt, chain, gold context: all questions
  const pixels = new Map<string, Float32Array>();
  let L: number, H: number, D: number;

  const pixelsOf = async (item: EvalItem) => {
    if (!pixels.has(item.imagePath)) pixels.set(item.imagePath, model.preprocess(await loadImageFile(item.imagePath)));
    return pixels.get(item.imagePath)!;
  };
  const idsOf = (text: string) => processor.encodeText(text, 1).ids;
  /** z captured directly at `positions`, averaged over them (float64), as [layers * heads * d_head]. */
  const directZ = async (ids: number[], item: EvalItem, positions: number[]) => {
    const r = await model.run({ ids, pixelValues: [await pixelsOf(item)], capture: parseCapture({ z: { positions } }, model.dims) });
    const width = L * H * D;
    const acc = new Float64Array(width);
    for (let p = 0; p < positions.length; p++) for (let j = 0; j < width; j++) acc[j] += r.z!.data[p * width + j];
    return Float32Array.from(acc, (x) => x / positions.length);
  };
  const byId = (id: string) => items.find((i) => i.id === id)!;

  beforeAll(async () => {
    const dataPath = writeSyntheticSet(join(work, 'data'), { seed: 5, scenes: 2, types: ['spatial', 'exists'] });
    items = await readQuestions(dataPath);
    const ctx = await gpuContext();
    model = await LlavaModel.load(ctx, modelDir);
    tokenizer = await Tokenizer.fromFolder(nodeFolder(modelDir));
    processor = new LlavaProcessor(tokenizer, model.cfg, model.imageProcessor);
    ({ layers: L, heads: H, headDim: D } = model.cfg.text);
    rows = await collectActivations(model, tokenizer, items, { pool: 'last_prompt' });
  });

  it('plans sub-questions in order, then their main question, with the earlier sub-questions as context', () => {
    const plan = planCollection(items);
    expect(plan).toHaveLength(items.length);
    const main0 = items[0];
    const subs0 = items.filter((i) => i.mainId === main0.id);
    expect(subs0.length).toBeGreaterThanOrEqual(3);
    expect(plan.slice(0, subs0.length + 1).map((s) => s.item.id)).toEqual([...subs0.map((s) => s.id), main0.id]);
    plan.slice(0, subs0.length).forEach((s, k) => {
      expect(s.mainId).toBe(main0.id);
      expect(s.context.map((c) => c.id)).toEqual(subs0.slice(0, k).map((c) => c.id));
    });
    expect(plan[subs0.length].context.map((c) => c.id)).toEqual(subs0.map((c) => c.id));
    // A question without sub-questions stands alone and is its own main question.
    const lone = plan[subs0.length + 1];
    expect(lone.item.type).toBe('exists');
    expect(lone.mainId).toBe(lone.item.id);
    expect(lone.context).toEqual([]);
    // Without chain: same order, no context.
    const flat = planCollection(items, { chain: false });
    expect(flat.map((s) => s.item.id)).toEqual(plan.map((s) => s.item.id));
    expect(flat.every((s) => s.context.length === 0)).toBe(true);
    expect(() => planCollection([items[0], items[0]])).toThrow(/appears twice/);
  });

  it('builds chain prompts whose token ids equal hand-built LLaVA-1.5 multi-turn prompts, with or without a chat template', async () => {
    const plain = await Tokenizer.fromFolder(withoutTemplate(modelDir));
    expect(tokenizer.chatTemplate).not.toBeNull();
    expect(plain.chatTemplate).toBeNull();
    const plainProc = new LlavaProcessor(plain, model.cfg, model.imageProcessor);
    const plan = planCollection(items);
    for (const step of plan.slice(0, 6)) {
      const turns = step.context.map((c) => ({ question: c.question, answer: c.answer }));
      const want = idsOf(handPrompt(step.context.map((c) => [c.question, c.answer]), step.item.question));
      expect(idsOf(chainPrompt(processor, turns, step.item.question))).toEqual(want);
      expect(plainProc.encodeText(chainPrompt(plainProc, turns, step.item.question), 1).ids).toEqual(want);
      // The earlier questions and answers are in the prompt, and the image once.
      const text = chainPrompt(processor, turns, step.item.question);
      for (const c of step.context) expect(text).toContain(`${c.question} ASSISTANT: ${c.answer}</s>`);
      expect(want.filter((id) => id === model.cfg.imageTokenIndex)).toHaveLength(model.imageTokens);
    }
    expect(chainPrompt(processor, [], 'Is there a cat?')).toBe(processor.formatPrompt('Is there a cat?', 1));
  });

  it('last_prompt rows hold z at the last token of the hand-built chain prompt, and the greedy answer', async () => {
    const plan = planCollection(items);
    expect(rows.map((r) => r.id)).toEqual(plan.map((s) => s.item.id));
    for (const k of [0, 2, 4, 5]) {
      const step = plan[k];
      const row = rows[k];
      expect(row.mainId).toBe(step.mainId);
      expect(row.function).toBe(step.item.function);
      expect(row.question).toBe(step.item.question);
      expect(row.answer).toBe(step.item.answer);
      expect(row.z).toHaveLength(L * H * D);
      const ids = idsOf(handPrompt(step.context.map((c) => [c.question, c.answer]), step.item.question));
      expectClose(row.z, await directZ(ids, step.item, [ids.length - 1]), 1e-6, 0, `z of ${row.id}`);
      const g = await generate(model, { ids, pixelValues: [await pixelsOf(step.item)], maxNewTokens: 4, tokenizer });
      expect(row.prediction).toBe(g.text);
    }
    // The context changes the activations: sub-questions of one main question see different prompts.
    expect(rows[1].z).not.toEqual(rows[0].z);
  });

  it('first_generated, answer_mean and indices pool z from a teacher-forced prefill over prompt + answer', async () => {
    const plan = planCollection(items);
    const n = 3;
    for (const pool of ['first_generated', 'answer_mean', { indices: [0, -1] }] as const) {
      const got = await collectActivations(model, tokenizer, items, { pool, endAt: n });
      expect(got.map((r) => r.prediction)).toEqual(rows.slice(0, n).map((r) => r.prediction));
      for (let k = 0; k < n; k++) {
        const step = plan[k];
        const ids = idsOf(handPrompt(step.context.map((c) => [c.question, c.answer]), step.item.question));
        const g = await generate(model, { ids, pixelValues: [await pixelsOf(step.item)], maxNewTokens: 4, tokenizer });
        expect(g.tokenIds.length).toBeGreaterThan(0);
        const answerPositions = answerIndices(pool, g.tokenIds.length).map((i) => ids.length + i);
        if (pool === 'first_generated') expect(answerPositions).toEqual([ids.length]);
        if (pool === 'answer_mean') expect(answerPositions).toHaveLength(g.tokenIds.length);
        const want = await directZ([...ids, ...g.tokenIds], step.item, answerPositions);
        expectClose(got[k].z, want, 1e-6, 0, `${poolName(pool)} z of ${step.item.id}`);
      }
    }
  });

  it('an empty answer (EOS first) pools over the EOS token', async () => {
    const item = planCollection(items)[0].item;
    const ids = idsOf(handPrompt([], item.question));
    const first = (await generate(model, { ids, pixelValues: [await pixelsOf(item)], maxNewTokens: 1, tokenizer })).tokenIds[0];
    // Declare the first token an end-of-sequence token: the answer is empty.
    const got = await collectActivations(model, tokenizer, items, { pool: 'first_generated', endAt: 1, eosTokenIds: [first] });
    expect(got[0].prediction).toBe('');
    expectClose(got[0].z, await directZ([...ids, first], item, [ids.length]), 1e-6, 0, 'z at the EOS');
  });

  it('answerIndices: negative from the end, out of range dropped, the last token when none is left', () => {
    expect(answerIndices('answer_mean', 3)).toEqual([0, 1, 2]);
    expect(answerIndices('first_generated', 3)).toEqual([0]);
    expect(answerIndices({ indices: [0, -1] }, 3)).toEqual([0, 2]);
    expect(answerIndices({ indices: [1, 5] }, 2)).toEqual([1]);
    expect(answerIndices({ indices: [7] }, 2)).toEqual([1]);
    expect(() => answerIndices('last_prompt', 2)).toThrow();
  });

  it('concatLayerMean appends the mean over each layer\'s heads to every head (F = 2 d_head)', async () => {
    const got = await collectActivations(model, tokenizer, items, { pool: 'last_prompt', concatLayerMean: true, endAt: 2 });
    for (let k = 0; k < 2; k++) {
      const z = got[k].z;
      const base = rows[k].z;
      expect(z).toHaveLength(L * H * 2 * D);
      expect(appendLayerMean(base, L, H, D)).toEqual(z);
      for (let l = 0; l < L; l++) {
        for (let h = 0; h < H; h++) {
          const o = (l * H + h) * 2 * D;
          for (let j = 0; j < D; j++) {
            expect(z[o + j]).toBe(base[(l * H + h) * D + j]);
            let m = 0;
            for (let h2 = 0; h2 < H; h2++) m += base[(l * H + h2) * D + j];
            expect(z[o + D + j]).toBeCloseTo(m / H, 6);
          }
        }
      }
    }
  });

  it('chain: false asks every question alone', async () => {
    const plan = planCollection(items, { chain: false });
    const got = await collectActivations(model, tokenizer, items, { pool: 'last_prompt', chain: false, endAt: 3 });
    expectClose(got[0].z, rows[0].z, 0, 0, 'the first sub-question has no context either way');
    for (const k of [1, 2]) {
      const ids = idsOf(handPrompt([], plan[k].item.question));
      expectClose(got[k].z, await directZ(ids, plan[k].item, [ids.length - 1]), 1e-6, 0, `z of ${plan[k].item.id}`);
    }
  });

  it('context: predicted puts the model\'s own earlier answers in the chain, also when resumed from a store', async () => {
    const plan = planCollection(items);
    const subs = plan.findIndex((s) => s.item.mainId === undefined); // index of the first main question
    const got = await collectActivations(model, tokenizer, items, { pool: 'last_prompt', context: 'predicted', endAt: subs + 1 });
    const pred = new Map(got.map((r) => [r.id, r.prediction]));
    for (const k of [1, subs]) {
      const step = plan[k];
      const ids = idsOf(handPrompt(step.context.map((c) => [c.question, pred.get(c.id)!.trim()]), step.item.question));
      expectClose(got[k].z, await directZ(ids, step.item, [ids.length - 1]), 1e-6, 0, `z of ${step.item.id}`);
    }
    // Mid-chain starts need the earlier predictions.
    await expect(collectActivations(model, tokenizer, items, { pool: 'last_prompt', context: 'predicted', startAt: 2, endAt: 3 })).rejects.toThrow(
      /prediction for .* is not known/,
    );
    // A store resumed mid-chain takes them from its parts.
    const dir = join(work, 'predicted');
    const opts = { pool: 'last_prompt' as const, context: 'predicted' as const, limit: subs + 1, chunkSize: 1 };
    const totals: number[] = [];
    const part = await collectToStore(model, tokenizer, items, dir, { ...opts, stopAfter: 2, onExample: (_r, _d, t) => totals.push(t) });
    expect(part.complete).toBe(false);
    expect(totals).toEqual([subs + 1, subs + 1]);
    const r = await collectToStore(model, tokenizer, items, dir, opts);
    expect(r).toMatchObject({ complete: true, resumedFrom: 2, done: subs + 1 });
    const { z, index } = await readActivationStore(dir);
    expect(index.context).toBe('predicted');
    expect(index.examples.map((e) => e.prediction)).toEqual(got.map((r) => r.prediction));
    const width = L * H * D;
    got.forEach((row, i) => expect(z.subarray(i * width, (i + 1) * width)).toEqual(row.z));
  });

  it('the vision tower is pooled over all its tokens (image_mean), the same for questions on one image', async () => {
    expect(() => checkPool('last_prompt', 'vision')).toThrow(/image_mean/);
    expect(() => checkPool('image_mean', 'text')).toThrow(/vision tower/);
    const got = await collectActivations(model, tokenizer, items, { tower: 'vision', pool: 'image_mean', endAt: 2 });
    const v = model.cfg.vision;
    expect(got[0].z).toHaveLength(v.layers * v.heads * v.headDim);
    expect(got[1].z).toEqual(got[0].z);
    expect(got.map((r) => r.prediction)).toEqual(rows.slice(0, 2).map((r) => r.prediction));
    const ids = idsOf(handPrompt([], got[0].question));
    const r = await model.run({
      ids,
      pixelValues: [await pixelsOf(items[1])],
      capture: parseCapture({ z: { tower: 'vision', positions: `mean:0:${model.vision.tokens}` } }, model.dims),
    });
    expect(r.z!.shape).toEqual([v.layers, v.heads, v.headDim]);
    expectClose(got[0].z, r.z!.data, 1e-6, 0, 'vision z');
  });

  it('parses and names pools', () => {
    for (const s of ['last_prompt', 'first_generated', 'answer_mean', 'image_mean', 'indices:0,-1,3']) expect(poolName(parsePool(s))).toBe(s);
    expect(parsePool('indices:1, 2')).toEqual({ indices: [1, 2] });
    for (const bad of ['mean', 'indices:', 'indices:a', 'indices:1.5']) expect(() => parsePool(bad)).toThrow(/not one of/);
  });

  describe('the store', () => {
    const full = join(work, 'full');
    const opts = { pool: 'last_prompt' as const };

    beforeAll(async () => {
      const r = await collectToStore(model, tokenizer, items, full, opts);
      expect(r).toMatchObject({ complete: true, alreadyComplete: false, total: items.length, done: items.length, resumedFrom: 0 });
    });

    it('writes index.json and activations.safetensors as specified, and no parts', async () => {
      expect(readdirSync(full).sort()).toEqual(['activations.safetensors', 'index.json']);
      const index = JSON.parse(readFileSync(join(full, 'index.json'), 'utf8'));
      expect(Object.keys(index)).toEqual(['model', 'tower', 'layers', 'heads', 'dim', 'pool', 'concat_layer_mean', 'chain', 'context', 'max_new_tokens', 'args', 'examples']);
      expect(index).toMatchObject({ model: modelDir, tower: 'text', layers: L, heads: H, dim: D, pool: 'last_prompt', concat_layer_mean: false, chain: true, context: 'gold', max_new_tokens: 4 });
      expect(index.examples).toHaveLength(rows.length);
      index.examples.forEach((e: Record<string, unknown>, i: number) => {
        expect(Object.keys(e)).toEqual(['id', 'main_id', 'function', 'question', 'answer', 'prediction', 'correct', 'row']);
        const r = rows[i];
        expect(e).toEqual({ id: r.id, main_id: r.mainId, function: r.function, question: r.question, answer: r.answer, prediction: r.prediction, correct: r.correct, row: i });
      });
      // One F32 tensor "z" [rows, L, H, F]: exactly what encodeSafetensors writes for the rows collected in memory.
      const data = new Float32Array(rows.length * L * H * D);
      rows.forEach((r, i) => data.set(r.z, i * L * H * D));
      const want = encodeSafetensorsF32([{ name: 'z', shape: [rows.length, L, H, D], data }]);
      expect(new Uint8Array(bytes(join(full, 'activations.safetensors')))).toEqual(want);
      const back = await readActivationStore(full);
      expect(back.shape).toEqual([rows.length, L, H, D]);
      expect(back.z).toEqual(data);
    });

    it('a run interrupted at any point and resumed gives byte-identical files', async () => {
      const dir = join(work, 'resumed');
      let r = await collectToStore(model, tokenizer, items, dir, { ...opts, chunkSize: 2, stopAfter: 3 });
      expect(r).toMatchObject({ complete: false, done: 3, resumedFrom: 0 });
      expect(existsSync(join(dir, 'index.json'))).toBe(false);
      expect(readdirSync(join(dir, 'parts')).sort()).toEqual(['args.json', 'part-00000.json', 'part-00000.safetensors', 'part-00001.json', 'part-00001.safetensors']);
      // A kill while the next part was being written: its .safetensors landed, its .json (the commit) did not,
      // and a temp file was left behind.
      writeFileSync(join(dir, 'parts', 'part-00002.safetensors'), 'torn');
      writeFileSync(join(dir, 'parts', 'part-00002.json.tmp-12345'), '{"start"');
      const seen: number[] = [];
      r = await collectToStore(model, tokenizer, items, dir, { ...opts, chunkSize: 4, stopAfter: 4, onExample: (_row, done, total) => seen.push(done, total) });
      expect(r).toMatchObject({ complete: false, done: 7, resumedFrom: 3 });
      expect(seen).toEqual([4, 5, 6, 7].flatMap((d) => [d, items.length]));
      r = await collectToStore(model, tokenizer, items, dir, { ...opts, chunkSize: 3 });
      expect(r).toMatchObject({ complete: true, done: items.length, resumedFrom: 7 });
      expect(readdirSync(dir).sort()).toEqual(['activations.safetensors', 'index.json']);
      for (const f of ['activations.safetensors', 'index.json']) expect(bytes(join(dir, f)).equals(bytes(join(full, f)))).toBe(true);
    });

    it('a finished store with the same arguments is left alone; other arguments are refused', async () => {
      const before = bytes(join(full, 'index.json'));
      const again = await collectToStore(model, tokenizer, items, full, opts);
      expect(again).toMatchObject({ complete: true, alreadyComplete: true, done: items.length });
      expect(again.examples.map((e) => e.id)).toEqual(rows.map((r) => r.id));
      expect(bytes(join(full, 'index.json')).equals(before)).toBe(true);
      await expect(collectToStore(model, tokenizer, items, full, { ...opts, concatLayerMean: true })).rejects.toThrow(StoreMismatchError);
      await expect(collectToStore(model, tokenizer, items, full, { ...opts, concatLayerMean: true })).rejects.toThrow(/finished collection .*concat_layer_mean false \(now true\)/);
      // An unfinished one too, before anything is computed.
      const dir = join(work, 'mismatch');
      await collectToStore(model, tokenizer, items, dir, { ...opts, stopAfter: 1 });
      await expect(collectToStore(model, tokenizer, items, dir, { pool: 'answer_mean' })).rejects.toThrow(/unfinished collection .*pool "last_prompt" \(now "answer_mean"\)/);
      await expect(collectToStore(model, tokenizer, items, dir, { ...opts, limit: 5 })).rejects.toThrow(new RegExp(`examples ${items.length} \\(now 5\\)`));
      await expect(collectToStore(model, tokenizer, items.slice(1), dir, { ...opts, chain: false })).rejects.toThrow(/chain true \(now false\)/);
      await expect(collectToStore(model, tokenizer, items, dir, { ...opts, maxNewTokens: 2 })).rejects.toThrow(/max_new_tokens 4 \(now 2\)/);
      expect(readdirSync(join(dir, 'parts')).sort()).toEqual(['args.json', 'part-00000.json', 'part-00000.safetensors']);
    });

    it('keeps each question\'s wording id and held-out flag; stores of files without wordings keep their arguments hash', async () => {
      // The same scenes and questions as `items`, in paraphrases drawn from every wording (make-synthetic --wordings all).
      const dataDir = join(work, 'worded-data');
      mkdirSync(join(dataDir, 'images'), { recursive: true });
      let lines = '';
      for (const sc of iterateDataset({ seed: 5, scenes: 2, types: ['spatial', 'exists'], wordings: 'all' })) {
        writeFileSync(join(dataDir, sceneImagePath(sc.id)), encodePng(renderScene(sc.scene)));
        for (const item of sc.items) lines += `${itemToJsonl(item)}\n`;
      }
      writeFileSync(join(dataDir, 'questions.jsonl'), lines);
      const worded = await readQuestions(join(dataDir, 'questions.jsonl'));
      expect(worded.map((i) => [i.id, i.answer, i.options])).toEqual(items.map((i) => [i.id, i.answer, i.options]));
      expect(new Set(worded.map((i) => i.wordingHeldout))).toEqual(new Set([true, false]));

      const dir = join(work, 'worded');
      const r = await collectToStore(model, tokenizer, worded, dir, opts);
      expect(r.complete).toBe(true);
      const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8'));
      const back = await readActivationStore(dir);
      for (const [n, e] of (index.examples as Record<string, unknown>[]).entries()) {
        const item = worded.find((i) => i.id === e.id)!;
        expect(Object.keys(e)).toEqual(['id', 'main_id', 'function', 'question', 'answer', 'prediction', 'correct', 'wording', 'wording_heldout', 'row']);
        expect([e.question, e.wording, e.wording_heldout]).toEqual([item.question, item.wording, item.wordingHeldout]);
        expect(back.examples[n]).toEqual(e);
      }
      // The hash of a file without wordings is the one stores had before wordings existed.
      const plan = planCollection(items);
      const before = createHash('sha256')
        .update(JSON.stringify(plan.map((st) => [st.item.id, st.mainId, st.item.imagePath, st.item.question, st.item.answer, st.item.function, st.context.map((c) => c.id)])))
        .digest('hex');
      expect((await storeArgs(model, tokenizer, items, opts)).examples_sha256).toBe(before);
      // With wordings, a changed held-out flag is another collection.
      const flipped = worded.map((i, k) => (k === 0 ? { ...i, wordingHeldout: !i.wordingHeldout } : i));
      await expect(collectToStore(model, tokenizer, flipped, dir, opts)).rejects.toThrow(/examples_sha256 other questions \(now these\)/);
    });
  });
});
