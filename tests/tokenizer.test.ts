// The tokenizer on the shipped weights/tiny-llava tokenizer.json (a real Llama-style BPE with byte fallback):
// round trips, special tokens, the BOS rule of tokenizer_config.json, streaming detokenization, chat templates,
// and errors for missing or malformed files.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { nodeFolder, type FolderSource } from '../src/io/checkpoint.js';
import { TextStreamer, Tokenizer, TokenizerError, type ChatMessage } from '../src/io/tokenizer.js';
import { REPO_ROOT } from './helpers/fixtures.js';
import { rng } from './helpers/gpu.js';

const DIR = join(REPO_ROOT, 'weights/tiny-llava');
const readJson = (f: string): Record<string, unknown> => JSON.parse(readFileSync(join(DIR, f), 'utf8'));

/** An in-memory folder of text files. */
function memFolder(name: string, files: Record<string, string>): FolderSource {
  return {
    name,
    async readText(f) {
      return files[f] ?? null;
    },
    async open(f) {
      throw new Error(`not here: ${f}`);
    },
  };
}

const SENTENCES = [
  'Where is the red circle in relation to the blue square?',
  'The green triangle is to the left of the yellow star.',
  'USER: Is the dog above the horse? ASSISTANT: No, it is below.',
  'Quick zebras jumped; 42 VEXED wizards (maybe) fly!',
  '  leading and  double  spaces ',
  'line one\nline two\ttab',
];

describe('Tokenizer on weights/tiny-llava', () => {
  let tok: Tokenizer;
  let tokJson: Record<string, unknown>;
  let cfg: Record<string, unknown>;
  let stm: Record<string, unknown>;

  beforeAll(async () => {
    tok = await Tokenizer.fromFolder(nodeFolder(DIR));
    tokJson = readJson('tokenizer.json');
    cfg = readJson('tokenizer_config.json');
    stm = readJson('special_tokens_map.json');
  });

  it('has the special tokens the config names, <image> and <pad> at the end of the vocabulary', () => {
    const config = readJson('config.json') as { image_token_index: number; pad_token_id: number; text_config: { vocab_size: number } };
    expect(tok.vocabSize).toBe(config.text_config.vocab_size);
    expect(tok.vocabSize).toBeGreaterThanOrEqual(400);
    expect(tok.vocabSize).toBeLessThanOrEqual(500);
    expect([tok.tokenToId('<unk>'), tok.bosTokenId, tok.eosTokenId]).toEqual([0, 1, 2]);
    expect(tok.tokenToId('<image>')).toBe(config.image_token_index);
    expect(tok.tokenToId('<image>')).toBe(tok.vocabSize - 2);
    expect(tok.padTokenId).toBe(config.pad_token_id);
    expect(tok.padTokenId).toBe(tok.vocabSize - 1);
    expect(tok.idToToken(3)).toBe('<0x00>');
    expect(tok.idToToken(258)).toBe('<0xFF>');
    expect(tok.idToToken(tok.vocabSize)).toBeUndefined();
  });

  it('round-trips ASCII text, with BOS first as add_bos_token says', () => {
    for (const s of SENTENCES) {
      const ids = tok.encode(s);
      expect(ids[0]).toBe(tok.bosTokenId);
      expect(ids.filter((id) => id === tok.bosTokenId)).toHaveLength(1);
      expect(tok.decode(ids, { skipSpecialTokens: true })).toBe(s);
      expect(tok.decode(ids)).toBe(`<s> ${s}`); // "<s>" then the ▁ of the first word as a space, as HF prints it
      expect(tok.decode(ids.slice(1))).toBe(s);
    }
    // The learnt merges make whole words of the corpus single tokens.
    const ids = tok.encode('Where is the red circle', { addSpecialTokens: false });
    expect(ids.map((id) => tok.idToToken(id))).toEqual(['▁Where', '▁is', '▁the', '▁red', '▁c', 'ir', 'c', 'le']);
  });

  it('falls back to UTF-8 byte tokens for characters outside the vocabulary, and decodes them', () => {
    const s = 'café €😀 日本';
    const ids = tok.encode(s, { addSpecialTokens: false });
    const toks = ids.map((id) => tok.idToToken(id)!);
    // € is E2 82 AC, 😀 is F0 9F 98 80.
    expect(toks.join('')).toContain('<0xE2><0x82><0xAC>');
    expect(toks.join('')).toContain('<0xF0><0x9F><0x98><0x80>');
    expect(tok.decode(ids)).toBe(s);
    const euro = ['<0xE2>', '<0x82>', '<0xAC>'].map((t) => tok.tokenToId(t)!);
    expect(tok.decode(euro)).toBe('€');
    // An incomplete sequence decodes to U+FFFD rather than failing.
    expect(tok.decode(euro.slice(0, 2))).toContain('\uFFFD');
    expect(tok.encode('\n', { addSpecialTokens: false }).map((id) => tok.idToToken(id))).toEqual(['▁', '<0x0A>']);
  });

  it('keeps special tokens written in the text as single ids, and skipSpecialTokens drops them', () => {
    const image = tok.tokenToId('<image>')!;
    const ids = tok.encode('USER: <image>\nWhat is this?');
    expect(ids.filter((id) => id === image)).toHaveLength(1);
    expect(tok.encode('<image><image><image>', { addSpecialTokens: false })).toEqual([image, image, image]);
    expect(tok.encode('a</s>b', { addSpecialTokens: false })).toContain(tok.eosTokenId);
    expect(tok.encode('<pad>', { addSpecialTokens: false })).toEqual([tok.padTokenId]);
    // Sections around a special token are normalized separately (HF tokenizers): "USER: " -> ▁USER:▁, "\nWhat" -> ▁\nWhat.
    const toks = (text: string) => tok.encode(text, { addSpecialTokens: false }).map((id) => tok.idToToken(id));
    expect(ids.map((id) => tok.idToToken(id))).toEqual(['<s>', ...toks('USER: '), '<image>', ...toks('\nWhat is this?')]);
    expect(toks('USER: ')).toEqual(['▁USER', ':', '▁']);
    expect(toks('\nWhat is this?').slice(0, 2)).toEqual(['▁', '<0x0A>']);
    expect(tok.decode(ids)).toBe('<s> USER: <image> \nWhat is this?');
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('USER:  \nWhat is this?');
    expect(tok.decode([tok.eosTokenId!, tok.padTokenId!, 300], { skipSpecialTokens: true })).toBe(tok.decode([300]));
  });

  it('follows add_bos_token / add_eos_token, and the tokenizer.json post-processor without a Llama config', () => {
    const s = 'the red cube';
    const plain = tok.encode(s, { addSpecialTokens: false });
    expect(plain[0]).not.toBe(1);
    expect(tok.encode(s)).toEqual([1, ...plain]);
    expect(tok.encode('')).toEqual([1]);
    expect(tok.encode('', { addSpecialTokens: false })).toEqual([]);
    const noBos = Tokenizer.fromJson(tokJson, { ...cfg, add_bos_token: false }, stm);
    expect(noBos.encode(s)).toEqual(plain);
    const withEos = Tokenizer.fromJson(tokJson, { ...cfg, add_eos_token: true }, stm);
    expect(withEos.encode(s)).toEqual([1, ...plain, 2]);
    expect(withEos.encode(s, { addSpecialTokens: false })).toEqual(plain);
    // Llama class without the flag: BOS by default (LlamaTokenizerFast), even if tokenizer.json had no post-processor.
    const { add_bos_token: _a, add_eos_token: _b, ...llamaNoFlags } = cfg;
    expect(Tokenizer.fromJson({ ...tokJson, post_processor: null }, llamaNoFlags, stm).encode(s)).toEqual([1, ...plain]);
    // No tokenizer_config.json: tokenizer.json's TemplateProcessing decides (it adds <s>); without one, nothing.
    expect(Tokenizer.fromJson(tokJson).encode(s)).toEqual([1, ...plain]);
    expect(Tokenizer.fromJson({ ...tokJson, post_processor: null }).encode(s)).toEqual(plain);
    expect(Tokenizer.fromJson(tokJson).bosTokenId).toBeNull();
    // Special tokens from special_tokens_map.json alone.
    const fromMap = Tokenizer.fromJson(tokJson, undefined, stm);
    expect([fromMap.bosTokenId, fromMap.eosTokenId, fromMap.padTokenId]).toEqual([1, 2, tok.padTokenId]);
    expect(() => Tokenizer.fromJson(tokJson, { ...cfg, bos_token: '<nope>' })).toThrow(/bos_token "<nope>" is not in the vocabulary/);
  });

  it('streams text that, concatenated, equals decode() (multi-byte characters held back until complete)', () => {
    const euro = ['<0xE2>', '<0x82>', '<0xAC>'].map((t) => tok.tokenToId(t)!);
    const st = new TextStreamer(tok);
    const ids = tok.encode('the €', { addSpecialTokens: false });
    const pieces = ids.map((id) => st.push(id));
    // The three byte tokens of € give nothing until the last one.
    expect(pieces.slice(-3)).toEqual(['', '', '€']);
    expect(pieces.join('') + st.flush()).toBe(tok.decode(ids));
    expect(tok.decode(ids)).toBe('the €');

    const check = (seq: number[], skip: boolean) => {
      const s = new TextStreamer(tok, { skipSpecialTokens: skip });
      let out = '';
      for (const id of seq) out += s.push(id);
      out += s.flush();
      expect(out).toBe(tok.decode(seq, { skipSpecialTokens: skip }));
    };
    for (const sentence of [...SENTENCES, 'café €😀 日本', 'USER: <image>\nWhere? ASSISTANT: left</s>']) {
      check(tok.encode(sentence), false);
      check(tok.encode(sentence), true);
    }
    // A truncated character at the end comes out of flush() as decode() gives it.
    check([...tok.encode('a', { addSpecialTokens: false }), ...euro.slice(0, 2)], false);
    // Random id sequences (bytes, specials, pieces, spaces) from a seeded generator.
    const r = rng(7);
    const spaceId = tok.tokenToId('▁')!;
    for (let trial = 0; trial < 200; trial++) {
      const n = 1 + Math.floor(r() * 24);
      const seq = Array.from({ length: n }, () => {
        const u = r();
        if (u < 0.3) return 3 + Math.floor(r() * 256); // a byte token
        if (u < 0.4) return spaceId;
        if (u < 0.5) return [0, 1, 2, tok.vocabSize - 2, tok.vocabSize - 1][Math.floor(r() * 5)]!;
        return 259 + Math.floor(r() * (tok.vocabSize - 261));
      });
      check(seq, trial % 2 === 0);
    }
  });

  it('renders the chat template (LLaVA-1.5 format) with bos/eos variables', () => {
    expect(tok.chatTemplate).not.toBeNull();
    const msgs: ChatMessage[] = [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'Where is the dog?' }] }];
    expect(tok.applyChatTemplate(msgs, { addGenerationPrompt: true })).toBe('USER: <image>\nWhere is the dog? ASSISTANT:');
    expect(tok.applyChatTemplate(msgs)).toBe('USER: <image>\nWhere is the dog? ');
    const multi: ChatMessage[] = [
      ...msgs,
      { role: 'assistant', content: [{ type: 'text', text: 'Left of the horse.' }] },
      { role: 'user', content: 'And the cat?' },
    ];
    expect(tok.applyChatTemplate(multi, { addGenerationPrompt: true })).toBe(
      'USER: <image>\nWhere is the dog? ASSISTANT: Left of the horse.</s>USER: And the cat? ASSISTANT:',
    );
    // bos_token is a template variable, as in transformers.
    const withBos = Tokenizer.fromJson(tokJson, cfg, stm, '{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ eos_token }}{% endfor %}');
    expect(withBos.applyChatTemplate([{ role: 'user', content: 'hi' }])).toBe('<s>[user]hi</s>');
    // No template: a TokenizerError.
    const none = Tokenizer.fromJson(tokJson, cfg, stm, null);
    expect(none.chatTemplate).toBeNull();
    expect(() => none.applyChatTemplate(msgs)).toThrow(TokenizerError);
    expect(() => Tokenizer.fromJson(tokJson, cfg, stm, '{% for %}').applyChatTemplate(msgs)).toThrow(/chat template does not parse/);
  });

  it('takes the chat template from chat_template.jinja, then chat_template.json, then tokenizer_config.json', async () => {
    const base = {
      'tokenizer.json': JSON.stringify(tokJson),
      'tokenizer_config.json': JSON.stringify(cfg),
    };
    const msgs: ChatMessage[] = [{ role: 'user', content: 'x' }];
    const fromCfg = await Tokenizer.fromFolder(memFolder('m', base));
    expect(fromCfg.applyChatTemplate(msgs)).toBe('USER: x ');
    const fromJsonFile = await Tokenizer.fromFolder(memFolder('m', { ...base, 'chat_template.json': JSON.stringify({ chat_template: 'J{{ messages[0].content }}' }) }));
    expect(fromJsonFile.applyChatTemplate(msgs)).toBe('Jx');
    const fromJinja = await Tokenizer.fromFolder(
      memFolder('m', { ...base, 'chat_template.json': JSON.stringify({ chat_template: 'J' }), 'chat_template.jinja': 'K{{ messages[0].content }}' }),
    );
    expect(fromJinja.applyChatTemplate(msgs)).toBe('Kx');
    // Only tokenizer.json: works, no template.
    const bare = await Tokenizer.fromFolder(memFolder('m', { 'tokenizer.json': JSON.stringify(tokJson) }));
    expect(bare.chatTemplate).toBeNull();
    expect(bare.decode(bare.encode('the red cube', { addSpecialTokens: false }))).toBe('the red cube');
  });

  it('fails with the file named when tokenizer.json is missing or malformed', async () => {
    await expect(Tokenizer.fromFolder(memFolder('/models/x', {}))).rejects.toThrow(/no tokenizer\.json in \/models\/x/);
    await expect(Tokenizer.fromFolder(memFolder('/models/x', { 'tokenizer.json': '{"model": ' }))).rejects.toThrow(
      /\/models\/x\/tokenizer\.json is not valid JSON/,
    );
    await expect(Tokenizer.fromFolder(memFolder('/models/x', { 'tokenizer.json': '[1, 2]' }))).rejects.toThrow(
      /\/models\/x\/tokenizer\.json must be a JSON object/,
    );
    await expect(Tokenizer.fromFolder(memFolder('/models/x', { 'tokenizer.json': '{"version": "1.0"}' }))).rejects.toThrow(
      /\/models\/x\/tokenizer\.json has no "model" object/,
    );
    for (const model of [{ type: 'Mystery' }, { type: 'BPE', vocab: { a: 0 } }]) {
      await expect(Tokenizer.fromFolder(memFolder('/models/x', { 'tokenizer.json': JSON.stringify({ model }) }))).rejects.toThrow(
        /\/models\/x\/tokenizer\.json could not be loaded/,
      );
    }
    await expect(
      Tokenizer.fromFolder(memFolder('/models/x', { 'tokenizer.json': JSON.stringify(tokJson), 'tokenizer_config.json': '{oops' })),
    ).rejects.toThrow(/\/models\/x\/tokenizer_config\.json is not valid JSON/);
    // A real directory too, and every error is a TokenizerError.
    const dir = mkdtempSync(join(tmpdir(), 'vlmscope-tok-'));
    try {
      writeFileSync(join(dir, 'tokenizer.json'), '{"model": {"type": "BPE"');
      const err = await Tokenizer.fromFolder(nodeFolder(dir)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TokenizerError);
      expect((err as Error).message).toContain(join(dir, 'tokenizer.json'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(() => tok.decode([tok.vocabSize])).toThrow(/outside the vocabulary/);
  });

  it('is what scripts/make-tiny-llava.ts makes (byte for byte)', () => {
    const out = mkdtempSync(join(tmpdir(), 'vlmscope-tiny-'));
    try {
      mkdirSync(out, { recursive: true });
      execFileSync(process.execPath, [join(REPO_ROOT, 'node_modules/tsx/dist/cli.mjs'), join(REPO_ROOT, 'scripts/make-tiny-llava.ts'), out], {
        cwd: REPO_ROOT,
        stdio: 'pipe',
      });
      const files = readdirSync(out).sort();
      expect(files).toEqual(readdirSync(DIR).sort());
      for (const f of files) expect(readFileSync(join(out, f)).equals(readFileSync(join(DIR, f))), f).toBe(true);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
