// `vlmscope generate` (and a smoke run of `eval` and `collect`) on a SmolVLM-layout folder built at test time
// (tests/helpers/tiny-smolvlm-folder.ts: random Idefics3 weights, a byte-level BPE tokenizer.json with SmolVLM's
// special tokens at the config's ids, SmolVLM-Instruct's chat template, generation_config.json with eos
// <end_of_utterance>): the CLI equals the library path (loadModel + createProcessor + generate), the prompt is the
// chat template's with each <image> expanded into the tile layout and tokenized as a whole (the last row's "\n" and
// the global block's "\n" merge into one "\n\n" token), generation stops on <end_of_utterance> (forced by swapping
// two lm_head rows), and two generate calls in one process with images of different tile layouts equal fresh runs.

import { cpSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { nodeFolder } from '../src/io/checkpoint.js';
import { encodePng, loadImageFile } from '../src/io/image.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { loadModel } from '../src/models/load.js';
import type { TiledImage, VlmProcessor } from '../src/models/model.js';
import type { VlmModel } from '../src/models/vlm.js';
import { Idefics3Model } from '../src/models/idefics3/model.js';
import { Idefics3Processor } from '../src/models/idefics3/processor.js';
import { idefics3ImagePromptString } from '../src/models/idefics3/image-processor.js';
import { generate, type GenerateResult } from '../src/generate/generate.js';
import { eosTokenIds } from '../src/generate/eos.js';
import { parseCapture } from '../src/spec/spec.js';
import { chainPrompt } from '../src/interp/collect.js';
import { readQuestions } from '../src/eval/dataset.js';
import { evaluate } from '../src/eval/evaluate.js';
import { collectToStore } from '../src/interp/activation-store.js';
import { gpuContext } from './helpers/gpu.js';
import { vlmscope as cli } from './helpers/cli.js';
import { swapLmHeadRows } from './helpers/tiny-qwen-folder.js';
import { SMOLVLM_CHAT_TEMPLATE, SMOLVLM_IMAGE_TOKENS, smolvlmTokenizerFiles, writeTinySmolVlmFolder, type TinySmolVlmFolder } from './helpers/tiny-smolvlm-folder.js';

const work = mkdtempSync(join(tmpdir(), 'vlmscope-generate-smolvlm-'));
const MAX = 8;
const PROMPT = 'Where is the red circle in relation to the blue square?';
const SEQ = 4; // image_seq_len: (32 / 8)^2 / 2^2

const vlmscope = (args: string[]) => cli(args, 240_000);

/** A deterministic RGB image of w x h as PNG (a colour gradient with a block, so tiles differ). */
function png(name: string, w: number, h: number, seed: number, dir = work): string {
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
  const p = join(dir, name);
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

/** A processor like `lib`'s over a tokenizer without a chat template (the family's own prompt format). */
function bareProcessor(lib: Lib): Idefics3Processor {
  const files = smolvlmTokenizerFiles();
  const bare = Tokenizer.fromJson(files.tokenizer, { ...files.tokenizerConfig, chat_template: null });
  expect(bare.chatTemplate).toBeNull();
  const model = lib.model as Idefics3Model;
  return new Idefics3Processor(bare, model.cfg, (img) => model.preprocess(img) as TiledImage);
}

describe('vlmscope generate on a SmolVLM folder', () => {
  let folder: TinySmolVlmFolder;
  let lib: Lib;
  let imgA: string;
  let imgB: string;
  const s = () => folder.special;

  beforeAll(async () => {
    folder = await writeTinySmolVlmFolder(join(work, 'smolvlm'));
    imgA = png('a.png', 120, 90, 1); // -> 48x64 -> 64x64 (HxW): 2 x 2 crops + global, 5 tiles, 20 <image>
    imgB = png('b.png', 250, 60, 2); // -> 16x64 -> 32x64: 1 x 2 crops + global, 3 tiles, 12 <image>
    lib = await openLib(folder.dir);
  });

  it('the folder has a byte-level BPE tokenizer with SmolVLM special tokens at the config ids', async () => {
    const cfg = JSON.parse(readFileSync(join(folder.dir, 'config.json'), 'utf8'));
    expect(cfg.model_type).toBe('idefics3');
    expect(cfg.vocab_size).toBe(folder.vocab);
    expect(cfg.image_token_id).toBe(s()['<image>']);
    expect([cfg.text_config.bos_token_id, cfg.text_config.eos_token_id, cfg.pad_token_id]).toEqual([s()['<|im_start|>'], s()['<|im_end|>'], s()['<|im_end|>']]);
    expect(JSON.parse(readFileSync(join(folder.dir, 'processor_config.json'), 'utf8')).image_seq_len).toBe(SEQ);
    expect(JSON.parse(readFileSync(join(folder.dir, 'generation_config.json'), 'utf8')).eos_token_id).toBe(s()['<end_of_utterance>']);
    expect(lib.model).toBeInstanceOf(Idefics3Model);
    const tok = lib.tokenizer;
    expect(tok.vocabSize).toBe(folder.vocab);
    // SmolVLM's layout: <|endoftext|> <|im_start|> <|im_end|> first, the image and turn tokens after the merges.
    expect([s()['<|endoftext|>'], s()['<|im_start|>'], s()['<|im_end|>']]).toEqual([0, 1, 2]);
    expect(SMOLVLM_IMAGE_TOKENS).toHaveLength(40);
    expect(SMOLVLM_IMAGE_TOKENS.map((t) => s()[t])).toEqual(SMOLVLM_IMAGE_TOKENS.map((_, k) => s()['<global-img>'] + k));
    expect(s()['<row_6_col_6>']).toBe(s()['<global-img>'] + 36);
    expect(s()['<end_of_utterance>']).toBe(folder.vocab - 1);
    for (const [t, id] of Object.entries(s())) expect([tok.tokenToId(t), tok.encode(t), tok.isSpecial(id)]).toEqual([id, [id], true]);
    // No BOS (GPT2Tokenizer adds none: the template writes <|im_start|>); byte-level: any text round-trips.
    for (const text of [PROMPT, 'Grüße, 東京! 3.14\n\n  tabs\tand  spaces ', "It's the dog's"]) {
      const ids = tok.encode(text);
      expect(tok.decode(ids)).toBe(text);
      expect(ids.every((id) => id > 2 && id < s()['<global-img>'])).toBe(true);
    }
    expect(tok.encode(PROMPT).length).toBeLessThan(PROMPT.length / 3);
    expect(tok.encode(' circle').map((id) => tok.idToToken(id))).toEqual(['Ġcircle']);
    expect(tok.encode('2024').map((id) => tok.idToToken(id))).toEqual(['2', '0', '2', '4']); // Digits(individual)
    expect(tok.encode('\n\n').map((id) => tok.idToToken(id))).toEqual(['ĊĊ']);
    expect([tok.bosTokenId, tok.eosTokenId, tok.padTokenId]).toEqual([s()['<|im_start|>'], s()['<end_of_utterance>'], s()['<|im_end|>']]);
    expect(lib.processor).toBeInstanceOf(Idefics3Processor);
    expect(lib.processor.imageToken).toBe('<image>');
    expect(lib.processor.stopTokenIds).toEqual([s()['<end_of_utterance>']]);
    expect(lib.eos).toEqual([s()['<end_of_utterance>']]);
  });

  it('the prompt is the chat template with each <image> expanded into its tile layout (--verbose prints it)', async () => {
    const { json, stderr } = cliJson(folder.dir, imgA, PROMPT, ['--verbose']);
    const templated = `<|im_start|>User:<image>${PROMPT}<end_of_utterance>\nAssistant:`;
    expect(lib.tokenizer.chatTemplate).toBe(SMOLVLM_CHAT_TEMPLATE);
    const { processed } = await libGenerate(lib, imgA, PROMPT);
    const img = processed.pixelValues[0] as TiledImage;
    expect([img.rows, img.cols, img.tiles]).toEqual([2, 2, 5]);
    expect(processed.text).toBe(templated.replace('<image>', idefics3ImagePromptString(2, 2, SEQ)));
    expect(processed.ids).toEqual(lib.tokenizer.encode(processed.text));
    expect(json.prompt_tokens).toBe(processed.ids.length);
    expect(stderr.split('\n')[0]).toBe(`prompt: ${JSON.stringify(templated)} (${processed.ids.length} tokens)`);

    // The ids of the image block: per crop <fake><row_r_col_c> + 4 <image>, "\n" after the first row, the second
    // row's "\n" and the global block's "\n" as one "\n\n" token, then <fake><global-img> + 4 <image> + <fake>.
    const t = (x: string) => lib.tokenizer.tokenToId(x)!;
    const nl = lib.tokenizer.encode('\n');
    const nlnl = lib.tokenizer.encode('\n\n');
    expect([nl.length, nlnl.length]).toEqual([1, 1]);
    const images = new Array<number>(SEQ).fill(s()['<image>']);
    const crop = (r: number, c: number) => [s()['<fake_token_around_image>'], s()[`<row_${r}_col_${c}>`], ...images];
    const block = [
      ...crop(1, 1),
      ...crop(1, 2),
      nl[0],
      ...crop(2, 1),
      ...crop(2, 2),
      nlnl[0],
      s()['<fake_token_around_image>'],
      s()['<global-img>'],
      ...images,
      s()['<fake_token_around_image>'],
    ];
    const start = processed.ids.indexOf(s()['<fake_token_around_image>']);
    expect(processed.ids.slice(0, start)).toEqual([s()['<|im_start|>'], ...lib.tokenizer.encode('User:')]);
    expect(processed.ids.slice(start, start + block.length)).toEqual(block);
    expect(processed.ids.slice(start + block.length)).toEqual([
      ...lib.tokenizer.encode(PROMPT),
      s()['<end_of_utterance>'],
      ...lib.tokenizer.encode('\nAssistant:'),
    ]);
    expect(processed.ids.filter((id) => id === s()['<image>'])).toHaveLength(5 * SEQ);
    expect(processed.ids.filter((id) => id === t('ĊĊ'))).toHaveLength(1);
    // The 1 x 2 layout: one row, so its "\n" merges with the global block's.
    const b = await libGenerate(lib, imgB, PROMPT);
    const ib = b.processed.pixelValues[0] as TiledImage;
    expect([ib.rows, ib.cols, ib.tiles]).toEqual([1, 2, 3]);
    expect(b.processed.ids.filter((id) => id === s()['<image>'])).toHaveLength(3 * SEQ);
    expect(b.processed.ids.filter((id) => id === nl[0])).toHaveLength(1); // "\nAssistant:"
    expect(b.processed.ids.filter((id) => id === nlnl[0])).toHaveLength(1);

    // The processor's own format (a folder without a chat template) is the template's text, with and without images.
    const bare = bareProcessor(lib);
    expect(bare.formatPrompt(PROMPT, 1)).toBe(templated);
    for (const n of [0, 2]) expect(bare.formatPrompt(PROMPT, n)).toBe(lib.processor.formatPrompt(PROMPT, n));
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

  it('stops on <end_of_utterance> when the model emits it (lm_head rows swapped so that it does)', async () => {
    const eou = s()['<end_of_utterance>'];
    const { result: free } = await libGenerate(lib, imgA, PROMPT, { stops: [] });
    expect(free.tokenIds).toHaveLength(MAX);
    // The first step k >= 1 whose greedy token is new and no <end_of_utterance> came before: swapping its lm_head
    // row with <end_of_utterance>'s leaves steps 0..k-1 as they were and makes step k <end_of_utterance>.
    const t = free.tokenIds;
    let k = -1;
    for (let i = 1; i < t.length && k < 0; i++) {
      if (t[i - 1] === eou) break;
      if (!t.slice(0, i).includes(t[i]) && t[i] !== eou) k = i;
    }
    expect(k, `greedy tokens ${t}: no step to force <end_of_utterance> at`).toBeGreaterThan(0);

    // As the folder is (generation_config.json and tokenizer_config.json name <end_of_utterance>), and a folder
    // with no generation_config.json whose tokenizer EOS is <|im_end|>: there <end_of_utterance> stops generation
    // through the processor's stop ids.
    const edited = join(work, 'eou');
    cpSync(folder.dir, edited, { recursive: true });
    swapLmHeadRows(edited, t[k], eou);
    const other = (await writeTinySmolVlmFolder(join(work, 'eou-bare'), { generationConfig: false, eosToken: '<|im_end|>' })).dir;
    swapLmHeadRows(other, t[k], eou);
    for (const dir of [edited, other]) {
      const { json } = cliJson(dir, imgA, PROMPT);
      expect(json.token_ids).toEqual(t.slice(0, k));
      expect(json.stopped_by).toBe('eos');
      const o = await openLib(dir);
      try {
        if (dir === other) expect(o.eos).toEqual([s()['<|im_end|>']]);
        const { result } = await libGenerate(o, imgA, PROMPT);
        expect(result.tokenIds).toEqual(t.slice(0, k));
        expect(result.stoppedBy).toBe('eos');
        expect(json.text).toBe(result.text);
        // Without any stop ids it goes on past <end_of_utterance>.
        const { result: on } = await libGenerate(o, imgA, PROMPT, { stops: [] });
        expect(on.tokenIds.slice(0, k + 1)).toEqual([...t.slice(0, k), eou]);
      } finally {
        o.model.destroy();
      }
    }
  });

  it('two generate calls in one process (different tile layouts and prompt lengths) equal fresh runs', async () => {
    const long = `${PROMPT} Answer with left, right, above or below.`;
    const short = 'Describe it.';
    const a1 = await libGenerate(lib, imgA, long, { capture: true });
    const b1 = await libGenerate(lib, imgB, short, { capture: true });
    const a2 = await libGenerate(lib, imgA, long, { capture: true });
    expect(a1.processed.ids.length).not.toBe(b1.processed.ids.length);
    expect((a1.processed.pixelValues[0] as TiledImage).tiles).toBe(5);
    expect((b1.processed.pixelValues[0] as TiledImage).tiles).toBe(3);
    expect(lib.model.imageTokenCounts([a1.processed.pixelValues[0], b1.processed.pixelValues[0]])).toEqual([5 * SEQ, 3 * SEQ]);

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

describe('vlmscope eval and collect on a SmolVLM folder (smoke)', () => {
  let folder: TinySmolVlmFolder;
  let data: string;
  let lib: Lib;

  beforeAll(async () => {
    folder = await writeTinySmolVlmFolder(join(work, 'smolvlm-eval'), { modelType: 'smolvlm' });
    // A tiny questions.jsonl: two images of different tile layouts (2 x 2 and 1 x 2 crops), two questions each.
    const d = join(work, 'data');
    mkdirSync(join(d, 'images'), { recursive: true });
    png('square.png', 96, 80, 3, join(d, 'images'));
    png('wide.png', 240, 60, 4, join(d, 'images'));
    const q = (id: string, image: string, question: string, answer: string, type: string, fn: string) => JSON.stringify({ id, image: `images/${image}`, question, answer, type, function: fn });
    data = join(d, 'questions.jsonl');
    writeFileSync(
      data,
      [
        q('q1', 'square.png', 'Where is the red circle in relation to the blue square? Answer with left, right, above or below.', 'left', 'spatial', 'decision'),
        q('q2', 'square.png', 'Is there a red circle?', 'yes', 'exists', 'low_level_perception'),
        q('q3', 'wide.png', 'How many objects are there?', 'two', 'count', 'high_level_perception'),
        q('q4', 'wide.png', 'What color is the triangle?', 'green', 'color', 'low_level_perception'),
      ].join('\n') + '\n',
    );
    lib = await openLib(folder.dir);
  });

  it('vlmscope eval --json --out gives the library report', async () => {
    const out = join(work, 'results.jsonl');
    const r = vlmscope(['eval', '--model', folder.dir, '--data', data, '--json', '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(lib.model.type).toBe('smolvlm');
    const report = await evaluate(lib.model, lib.tokenizer, await readQuestions(data), { eosTokenIds: lib.eos });
    expect(report.total).toBe(4);
    expect(JSON.parse(r.stdout)).toEqual({ total: 4, correct: report.correct, accuracy: report.accuracy, by_type: report.byType, by_function: report.byFunction });
    expect(readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l))).toEqual(report.examples);
  });

  it('vlmscope collect writes the store the library writes (text tower), and pools the vision tower over all tiles', async () => {
    const out = join(work, 'acts');
    const r = vlmscope(['collect', '--model', folder.dir, '--data', data, '--out', out, '--limit', '4']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^collected 4 examples into .*: z \[4, 2, 4, 16\] \(text tower, pool last_prompt/);
    const mine = join(work, 'acts-lib');
    await collectToStore(lib.model, lib.tokenizer, await readQuestions(data), mine, {
      pool: 'last_prompt',
      limit: 4,
      eosTokenIds: lib.eos,
      modelName: folder.dir,
      extraArgs: { dtype: null },
    });
    for (const f of ['activations.safetensors', 'index.json']) expect(readFileSync(join(out, f)).equals(readFileSync(join(mine, f))), f).toBe(true);
    const v = vlmscope(['collect', '--model', folder.dir, '--data', data, '--out', join(work, 'acts-vision'), '--limit', '2', '--tower', 'vision']);
    expect(v.stderr).toBe('');
    expect(v.code).toBe(0);
    expect(v.stdout).toMatch(/^collected 2 examples into .*: z \[2, 2, 4, 8\] \(vision tower, pool image_mean/);
  });

  it('chain prompts: the chat template and the SmolVLM fallback (no template) agree', () => {
    const turns = [
      { question: 'Is there a red circle?', answer: 'yes' },
      { question: 'Is there a blue square?', answer: 'no' },
    ];
    const withTemplate = chainPrompt(lib.processor, turns, 'Where is it?');
    expect(withTemplate).toBe(
      '<|im_start|>User:<image>Is there a red circle?<end_of_utterance>\nAssistant: yes<end_of_utterance>\n' +
        'User: Is there a blue square?<end_of_utterance>\nAssistant: no<end_of_utterance>\nUser: Where is it?<end_of_utterance>\nAssistant:',
    );
    expect(chainPrompt(bareProcessor(lib), turns, 'Where is it?')).toBe(withTemplate);
    expect(chainPrompt(bareProcessor(lib), [], 'Where is it?')).toBe(chainPrompt(lib.processor, [], 'Where is it?'));
  });
});
