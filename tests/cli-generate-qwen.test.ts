// `vlmscope generate` (and a smoke run of `eval` and `collect`) on a Qwen2.5-VL folder built at test time
// (tests/helpers/tiny-qwen-folder.ts: random weights, a byte-level BPE tokenizer.json with Qwen's special tokens,
// Qwen2-VL-Instruct's chat template): the CLI equals the library path (loadModel + createProcessor + generate), the
// prompt is the chat template's with the image expansion, generation stops on <|im_end|> (forced by swapping two
// lm_head rows), and two generate calls in one process with different images (rope deltas) and prompt lengths equal
// fresh runs.

import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { nodeFolder } from '../src/io/checkpoint.js';
import { encodePng, loadImageFile } from '../src/io/image.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { loadModel } from '../src/models/load.js';
import type { PatchedImage, VlmProcessor } from '../src/models/model.js';
import type { VlmModel } from '../src/models/vlm.js';
import { QwenProcessor } from '../src/models/qwen2-vl/processor.js';
import { generate, type GenerateResult } from '../src/generate/generate.js';
import { eosTokenIds } from '../src/generate/eos.js';
import { parseCapture } from '../src/spec/spec.js';
import { chainPrompt } from '../src/interp/collect.js';
import { readQuestions } from '../src/eval/dataset.js';
import { evaluate } from '../src/eval/evaluate.js';
import { collectToStore } from '../src/interp/activation-store.js';
import { gpuContext } from './helpers/gpu.js';
import { vlmscope as runCli } from './helpers/cli.js';
import { writeSyntheticSet } from './helpers/synthetic-data.js';
import { QWEN2_VL_CHAT_TEMPLATE, qwenTokenizerFiles, swapLmHeadRows, writeTinyQwenFolder, type TinyQwenFolder } from './helpers/tiny-qwen-folder.js';

const work = mkdtempSync(join(tmpdir(), 'vlmscope-generate-qwen-'));
const MAX = 8;
const PROMPT = 'Where is the red circle in relation to the blue square?';

/** The CLI with a longer timeout: generate, eval and collect each load the model. */
const vlmscope = (args: string[]) => runCli(args, 240_000);

/** A deterministic RGB image of w x h as PNG (a colour gradient with a block, so patches differ). */
function png(name: string, w: number, h: number, seed: number): string {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      const block = x > w / 3 && x < w / 2 && y > h / 4 && y < h / 2;
      data[i] = block ? 220 : (x * 255) / w;
      data[i + 1] = block ? 30 : ((y * 255) / h + seed * 40) % 256;
      data[i + 2] = (x * y + seed * 17) % 256;
    }
  }
  const p = join(work, name);
  writeFileSync(p, encodePng({ width: w, height: h, data }));
  return p;
}

const cliJson = (dir: string, image: string, prompt: string, extra: string[] = []) => {
  const r = vlmscope(['generate', '--model', dir, '--image', image, '--prompt', prompt, '--max-new-tokens', String(MAX), '--json', ...extra]);
  expect(r.code, r.stderr).toBe(0);
  const lines = r.stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  return { json: JSON.parse(lines[0]), stderr: r.stderr };
};

interface Lib {
  model: VlmModel;
  tokenizer: Tokenizer;
  processor: VlmProcessor;
  eos: number[];
}

async function openLib(dir: string): Promise<Lib> {
  const ctx = await gpuContext();
  const model = await loadModel(ctx, dir);
  const tokenizer = await Tokenizer.fromFolder(nodeFolder(dir));
  return { model, tokenizer, processor: model.createProcessor(tokenizer), eos: await eosTokenIds(nodeFolder(dir), tokenizer) };
}

/** The library path of `vlmscope generate`: the chat prompt, the processor's expansion, greedy generate. */
async function libGenerate(lib: Lib, image: string, prompt: string, opts: { stops?: number[]; capture?: boolean } = {}) {
  const text = lib.processor.formatPrompt(prompt, 1);
  const p = lib.processor.process(text, [await loadImageFile(image)]);
  const r = await generate(lib.model, {
    ids: p.ids,
    pixelValues: p.pixelValues,
    maxNewTokens: MAX,
    eosTokenIds: opts.stops ?? [...lib.eos, ...lib.processor.stopTokenIds],
    tokenizer: lib.tokenizer,
    capture: opts.capture ? parseCapture({ logits: 'all' }, lib.model.dims) : undefined,
  });
  return { prompt: text, processed: p, result: r };
}

const sameRun = (a: GenerateResult, b: GenerateResult) => {
  expect(a.tokenIds).toEqual(b.tokenIds);
  expect(a.text).toBe(b.text);
  expect(a.stoppedBy).toBe(b.stoppedBy);
  expect(a.captured!.logits!.shape).toEqual(b.captured!.logits!.shape);
  expect(Array.from(a.captured!.logits!.data)).toEqual(Array.from(b.captured!.logits!.data));
};

describe('vlmscope generate on a Qwen2.5-VL folder', () => {
  let folder: TinyQwenFolder;
  let lib: Lib;
  let imgA: string;
  let imgB: string;
  const s = () => folder.special;

  beforeAll(async () => {
    folder = await writeTinyQwenFolder(join(work, 'qwen25'));
    imgA = png('a.png', 120, 90, 1); // -> 84x112 (HxW): 3x4 merged tokens
    imgB = png('b.png', 250, 130, 2); // -> 140x252: 5x9 merged tokens
    lib = await openLib(folder.dir);
  });

  it('the folder has a byte-level BPE tokenizer with Qwen special tokens at the config ids', async () => {
    const cfg = JSON.parse(readFileSync(join(folder.dir, 'config.json'), 'utf8'));
    expect(cfg.model_type).toBe('qwen2_5_vl');
    expect(cfg.vocab_size).toBe(folder.vocab);
    expect([cfg.image_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id, cfg.eos_token_id]).toEqual([
      s()['<|image_pad|>'],
      s()['<|vision_start|>'],
      s()['<|vision_end|>'],
      s()['<|im_end|>'],
    ]);
    const tok = lib.tokenizer;
    expect(tok.vocabSize).toBe(folder.vocab);
    expect(qwenTokenizerFiles().merges).toBe(300);
    for (const [t, id] of Object.entries(s())) expect([tok.tokenToId(t), tok.encode(t), tok.isSpecial(id)]).toEqual([id, [id], true]);
    // No BOS (Qwen2Tokenizer adds none); byte-level: any text round-trips, and the merges shorten known words.
    for (const text of [PROMPT, 'Grüße, 東京! 3.14\n\n  tabs\tand  spaces ', "It's the dog's"]) {
      const ids = tok.encode(text);
      expect(tok.decode(ids)).toBe(text);
      expect(ids.every((id) => id < s()['<|endoftext|>'])).toBe(true);
    }
    expect(tok.encode(PROMPT).length).toBeLessThan(PROMPT.length / 3);
    expect(tok.encode(' circle').map((id) => tok.idToToken(id))).toEqual(['Ġcircle']);
    expect([tok.bosTokenId, tok.eosTokenId, tok.padTokenId]).toEqual([null, s()['<|im_end|>'], s()['<|endoftext|>']]);
    expect(lib.processor).toBeInstanceOf(QwenProcessor);
    expect(lib.processor.imageToken).toBe('<|image_pad|>');
    expect(lib.processor.stopTokenIds).toEqual([s()['<|im_end|>'], s()['<|endoftext|>']]);
    expect(lib.eos).toEqual([s()['<|im_end|>'], s()['<|endoftext|>']]);
  });

  it('the prompt is the chat template with the image expanded (--verbose prints it)', async () => {
    const { json, stderr } = cliJson(folder.dir, imgA, PROMPT, ['--verbose']);
    const templated = `<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>${PROMPT}<|im_end|>\n<|im_start|>assistant\n`;
    const { processed } = await libGenerate(lib, imgA, PROMPT);
    const grid = (processed.pixelValues[0] as PatchedImage).grid;
    expect(grid).toEqual([1, 6, 8]);
    const n = (grid[1] * grid[2]) / 4;
    expect(processed.text).toBe(templated.replace('<|image_pad|>', '<|image_pad|>'.repeat(n)));
    expect(processed.ids).toEqual(lib.tokenizer.encode(processed.text));
    const start = processed.ids.indexOf(s()['<|vision_start|>']);
    expect(processed.ids.slice(start, start + n + 2)).toEqual([s()['<|vision_start|>'], ...new Array(n).fill(s()['<|image_pad|>']), s()['<|vision_end|>']]);
    expect(processed.ids.filter((id) => id === s()['<|image_pad|>'])).toHaveLength(n);
    expect(processed.ids[0]).toBe(s()['<|im_start|>']);
    expect(json.prompt_tokens).toBe(processed.ids.length);
    expect(stderr.split('\n')[0]).toBe(`prompt: ${JSON.stringify(templated)} (${processed.ids.length} tokens)`);
    // The processor's own ChatML (a folder without a chat template) is the template's text.
    const files = qwenTokenizerFiles();
    const bare = Tokenizer.fromJson(files.tokenizer, { ...files.tokenizerConfig, chat_template: null });
    expect(bare.chatTemplate).toBeNull();
    const q = lib.processor as QwenProcessor;
    expect(new QwenProcessor(bare, q.config, q.imageProcessor).formatPrompt(PROMPT, 1)).toBe(templated);
    expect(lib.tokenizer.chatTemplate).toBe(QWEN2_VL_CHAT_TEMPLATE);
  });

  it('--json equals the library path (loadModel + createProcessor + generate), deterministically', async () => {
    const a = cliJson(folder.dir, imgA, PROMPT).json;
    const b = cliJson(folder.dir, imgB, 'What color is it?').json;
    for (const [cli, image, prompt] of [[a, imgA, PROMPT], [b, imgB, 'What color is it?']] as const) {
      const { processed, result } = await libGenerate(lib, image, prompt);
      expect(cli).toMatchObject({ text: result.text, token_ids: result.tokenIds, prompt_tokens: processed.ids.length, stopped_by: result.stoppedBy });
    }
    expect(a.token_ids.length).toBeGreaterThan(0);
    expect(cliJson(folder.dir, imgA, PROMPT).json.token_ids).toEqual(a.token_ids);
    // Streaming prints the same text.
    const streamed = vlmscope(['generate', '--model', folder.dir, '--image', imgA, '--prompt', PROMPT, '--max-new-tokens', String(MAX)]);
    expect(streamed.code).toBe(0);
    expect(streamed.stdout).toBe(`${a.text}\n`);
  });

  it('stops on <|im_end|> when the model emits it (lm_head rows swapped so that it does)', async () => {
    const stops = new Set([s()['<|im_end|>'], s()['<|endoftext|>']]);
    const { result: free } = await libGenerate(lib, imgA, PROMPT, { stops: [] });
    expect(free.tokenIds).toHaveLength(MAX);
    // The first step k >= 1 whose greedy token is new and no stop token came before: swapping its lm_head row with
    // <|im_end|>'s leaves steps 0..k-1 as they were (their argmax is neither token) and makes step k <|im_end|>.
    const t = free.tokenIds;
    let k = -1;
    for (let i = 1; i < t.length && k < 0; i++) {
      if (stops.has(t[i - 1])) break;
      if (!t.slice(0, i).includes(t[i]) && !stops.has(t[i])) k = i;
    }
    expect(k, `greedy tokens ${t}: no step to force <|im_end|> at`).toBeGreaterThan(0);

    // As the folder is (generation_config.json and tokenizer_config.json name <|im_end|>), and a base-model-like
    // folder whose only EOS is <|endoftext|>: there <|im_end|> stops generation through the processor's stop ids.
    const edited = join(work, 'im-end');
    cpSync(folder.dir, edited, { recursive: true });
    swapLmHeadRows(edited, t[k], s()['<|im_end|>']);
    const base = (await writeTinyQwenFolder(join(work, 'im-end-base'), { generationConfig: false, eosToken: '<|endoftext|>' })).dir;
    swapLmHeadRows(base, t[k], s()['<|im_end|>']);
    for (const dir of [edited, base]) {
      const { json } = cliJson(dir, imgA, PROMPT);
      expect(json.token_ids).toEqual(t.slice(0, k));
      expect(json.stopped_by).toBe('eos');
      const other = await openLib(dir);
      try {
        if (dir === base) expect(other.eos).toEqual([s()['<|endoftext|>']]);
        const { result } = await libGenerate(other, imgA, PROMPT);
        expect(result.tokenIds).toEqual(t.slice(0, k));
        expect(result.stoppedBy).toBe('eos');
        expect(json.text).toBe(result.text);
        // Without any stop ids it goes on past <|im_end|>.
        const { result: on } = await libGenerate(other, imgA, PROMPT, { stops: [] });
        expect(on.tokenIds.slice(0, k + 1)).toEqual([...t.slice(0, k), s()['<|im_end|>']]);
      } finally {
        other.model.destroy();
      }
    }
  });

  it('two generate calls in one process (different image sizes and prompt lengths) equal fresh runs', async () => {
    const long = `${PROMPT} Answer with left, right, above or below.`;
    const short = 'Describe it.';
    const a1 = await libGenerate(lib, imgA, long, { capture: true });
    const b1 = await libGenerate(lib, imgB, short, { capture: true });
    const a2 = await libGenerate(lib, imgA, long, { capture: true });
    expect(a1.processed.ids.length).not.toBe(b1.processed.ids.length);

    // Different images give different grids and so different M-RoPE rope deltas: max(h, w) - h * w merged tokens.
    const delta = async (p: typeof a1.processed) => (await lib.model.run({ ids: p.ids, pixelValues: p.pixelValues })).positions!.ropeDelta;
    expect(await delta(a1.processed)).toBe(4 - 12);
    expect(await delta(b1.processed)).toBe(9 - 45);

    for (const [mine, image, prompt] of [[b1, imgB, short], [a2, imgA, long]] as const) {
      const fresh = await openLib(folder.dir);
      try {
        const f = await libGenerate(fresh, image, prompt, { capture: true });
        expect(f.processed.ids).toEqual(mine.processed.ids);
        sameRun(mine.result, f.result);
      } finally {
        fresh.model.destroy();
      }
    }
    sameRun(a1.result, a2.result);
  });
});

describe('vlmscope eval and collect on a Qwen2.5-VL folder (smoke)', () => {
  let folder: TinyQwenFolder;
  let data: string;
  let lib: Lib;

  beforeAll(async () => {
    folder = await writeTinyQwenFolder(join(work, 'qwen25-eval'));
    data = writeSyntheticSet(join(work, 'data'), { seed: 5, scenes: 1, types: ['spatial', 'exists'] });
    lib = await openLib(folder.dir);
  });

  it('vlmscope eval --json --out gives the library report', async () => {
    const out = join(work, 'results.jsonl');
    const r = vlmscope(['eval', '--model', folder.dir, '--data', data, '--limit', '4', '--json', '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const report = await evaluate(lib.model, lib.tokenizer, await readQuestions(data), { limit: 4, eosTokenIds: lib.eos });
    expect(report.total).toBe(4);
    expect(JSON.parse(r.stdout)).toEqual({ total: 4, correct: report.correct, accuracy: report.accuracy, by_type: report.byType, by_function: report.byFunction });
    expect(readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l))).toEqual(report.examples);
  });

  it('vlmscope collect writes the store the library writes (text tower, chain through the chat template)', async () => {
    const out = join(work, 'acts');
    const r = vlmscope(['collect', '--model', folder.dir, '--data', data, '--out', out, '--limit', '4']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^collected 4 examples into .*: z \[4, 2, 4, 16\] \(text tower, pool last_prompt, chain \(gold answers\)\)/);
    const mine = join(work, 'acts-lib');
    await collectToStore(lib.model, lib.tokenizer, await readQuestions(data), mine, {
      pool: 'last_prompt',
      limit: 4,
      eosTokenIds: lib.eos,
      modelName: folder.dir,
      extraArgs: { dtype: null },
    });
    for (const f of ['activations.safetensors', 'index.json']) expect(readFileSync(join(out, f)).equals(readFileSync(join(mine, f))), f).toBe(true);
  });

  it('vlmscope collect --tower vision pools over all of the image vision tokens', () => {
    const r = vlmscope(['collect', '--model', folder.dir, '--data', data, '--out', join(work, 'acts-vision'), '--limit', '2', '--tower', 'vision']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^collected 2 examples into .*: z \[2, 2, 4, 8\] \(vision tower, pool image_mean/);
  });

  it('chain prompts: the chat template and the ChatML fallback (no template) agree', () => {
    const turns = [
      { question: 'Is there a red circle?', answer: 'yes' },
      { question: 'Is there a blue square?', answer: 'no' },
    ];
    const withTemplate = chainPrompt(lib.processor, turns, 'Where is it?');
    expect(withTemplate).toBe(
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Is there a red circle?<|im_end|>\n' +
        '<|im_start|>assistant\nyes<|im_end|>\n<|im_start|>user\nIs there a blue square?<|im_end|>\n<|im_start|>assistant\nno<|im_end|>\n' +
        '<|im_start|>user\nWhere is it?<|im_end|>\n<|im_start|>assistant\n',
    );
    const files = qwenTokenizerFiles();
    const bare = Tokenizer.fromJson(files.tokenizer, { ...files.tokenizerConfig, chat_template: null });
    const q = lib.processor as QwenProcessor;
    expect(chainPrompt(new QwenProcessor(bare, q.config, q.imageProcessor), turns, 'Where is it?')).toBe(withTemplate);
  });
});
