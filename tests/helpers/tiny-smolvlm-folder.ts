// A small SmolVLM (Idefics3) folder built at test time, laid out like HuggingFaceTB/SmolVLM-256M-Instruct: random
// weights from writeRandomIdefics3 (config.json, preprocessor_config.json, processor_config.json,
// model.safetensors), and a GPT-2-style byte-level BPE tokenizer as SmolLM2 / SmolVLM ship it — tokenizer.json with
// no normalizer, the Digits(individual) + ByteLevel(use_regex) pre-tokenizer, the ByteLevel post-processor (no BOS)
// and decoder, a few hundred merges learned here (tests/helpers/tiny-qwen-folder.ts's learner and corpus, whose
// Qwen2 word split differs a little from GPT-2's; any merge list makes a valid BPE) including "\n\n" —
// with SmolVLM's special tokens where SmolVLM puts them: <|endoftext|> <|im_start|> <|im_end|> at 0..2 before the
// bytes, and after the merges <global-img>, the 36 <row_r_col_c>, <fake_token_around_image>, <image> and
// <end_of_utterance> (49152.. in the real vocabulary, `base`.. here); tokenizer_config.json with SmolVLM's chat
// template (docs/model-specs.md §3.3) and generation_config.json whose eos is <end_of_utterance>. The model's
// special ids (config.json) are the tokenizer's.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type RandomIdefics3Spec, type Idefics3ModelType, writeRandomIdefics3 } from '../../src/models/random-idefics3.js';
import { CORPUS, bytesToUnicode, learnMerges } from './tiny-qwen-folder.js';

/** SmolVLM-256M-Instruct's chat template (tokenizer_config.json / chat_template.json on the hub), verbatim. */
export const SMOLVLM_CHAT_TEMPLATE =
  "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

/** The tokens at the start of the vocabulary (ids 0, 1, 2), before the byte tokens. */
const LEADING_SPECIAL = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'] as const;

/** SmolVLM's image and turn tokens in id order from `base` (49152 in the real vocabulary). */
export const SMOLVLM_IMAGE_TOKENS: string[] = [
  '<global-img>',
  ...Array.from({ length: 36 }, (_, i) => `<row_${Math.floor(i / 6) + 1}_col_${(i % 6) + 1}>`),
  '<fake_token_around_image>',
  '<image>',
  '<end_of_utterance>',
];

/** The pieces of SmolVLM prompts, for the merges: the template's words and the tile layout's "\n\n". */
const SMOLVLM_CORPUS = [
  ...CORPUS,
  'User: Assistant: User:Assistant:',
  'A first paragraph.\n\nA second paragraph.\n\nA third one.\n\nAnd more.\n\n',
];

/** SmolLM2's ByteLevel pre-tokenizer: GPT-2's split regex (use_regex), no prefix space. */
const BYTE_LEVEL = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };

export interface SmolVlmTokenizerFiles {
  tokenizer: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  /** Id of each special token (leading ones and the image / turn tokens). */
  special: Record<string, number>;
  /** Tokens in the vocabulary: the model's vocab_size. */
  size: number;
  merges: number;
}

/** tokenizer.json and tokenizer_config.json of a SmolVLM-style byte-level BPE tokenizer with about `merges` merges. */
export function smolvlmTokenizerFiles(merges = 300, opts: { eosToken?: string } = {}): SmolVlmTokenizerFiles {
  const { chars, order } = bytesToUnicode();
  const special: Record<string, number> = {};
  LEADING_SPECIAL.forEach((t, k) => (special[t] = k));
  const vocab: Record<string, number> = {};
  let next = LEADING_SPECIAL.length;
  for (const b of order) vocab[chars[b]] = next++;
  const learned = learnMerges(SMOLVLM_CORPUS, merges);
  // "\n\n" must be one token (the tile layout's row end + the global block's start merge; model-specs §3.3).
  const nl = chars[10];
  if (!learned.some(([a, b]) => a === nl && b === nl)) learned.push([nl, nl]);
  for (const [a, b] of learned) if (!(a + b in vocab)) vocab[a + b] = next++;
  const base = next;
  SMOLVLM_IMAGE_TOKENS.forEach((t, k) => (special[t] = base + k));
  const added = Object.entries(special)
    .sort((a, b) => a[1] - b[1])
    .map(([content, id]) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }));
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: true }, BYTE_LEVEL] },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: learned.map(([a, b]) => `${a} ${b}`),
    },
  };
  const addedDecoder: Record<string, unknown> = {};
  for (const { id, ...rest } of added) addedDecoder[String(id)] = rest;
  const tokenizerConfig = {
    add_prefix_space: false,
    added_tokens_decoder: addedDecoder,
    additional_special_tokens: ['<fake_token_around_image>', '<image>', '<end_of_utterance>'],
    bos_token: '<|im_start|>',
    chat_template: SMOLVLM_CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: opts.eosToken ?? '<end_of_utterance>',
    legacy: false,
    model_max_length: 8192,
    pad_token: '<|im_end|>',
    processor_class: 'Idefics3Processor',
    tokenizer_class: 'GPT2Tokenizer',
    truncation_side: 'left',
    unk_token: '<|endoftext|>',
  };
  return { tokenizer, tokenizerConfig, special, size: base + SMOLVLM_IMAGE_TOKENS.length, merges: learned.length };
}

export interface TinySmolVlmFolderOptions {
  modelType?: Idefics3ModelType;
  seed?: number;
  /** preprocessor_config.json size.longest_edge (default 64: up to 2 x 2 tiles of 32 px + the global one). */
  longestEdge?: number;
  /** Write generation_config.json (eos <end_of_utterance>, as SmolVLM-Instruct). Default true. */
  generationConfig?: boolean;
  /** tokenizer_config.json eos_token (default <end_of_utterance>, as SmolVLM-Instruct). */
  eosToken?: string;
}

export interface TinySmolVlmFolder {
  dir: string;
  spec: RandomIdefics3Spec;
  special: Record<string, number>;
  vocab: number;
}

/** Writes a tiny SmolVLM folder (32-px tiles of 8-px patches, scale factor 2: 4 image tokens per tile) to `dir`. */
export async function writeTinySmolVlmFolder(dir: string, opts: TinySmolVlmFolderOptions = {}): Promise<TinySmolVlmFolder> {
  const tok = smolvlmTokenizerFiles(300, { eosToken: opts.eosToken });
  const s = tok.special;
  const spec: RandomIdefics3Spec = {
    modelType: opts.modelType ?? 'idefics3',
    seed: opts.seed ?? 7,
    vision: { hidden: 32, heads: 4, layers: 2, intermediate: 64, imageSize: 32, patchSize: 8 },
    text: { hidden: 64, intermediate: 128, layers: 2, heads: 4, kvHeads: 2, vocab: tok.size },
    scaleFactor: 2,
    longestEdge: opts.longestEdge ?? 64,
    tokens: {
      endOfText: s['<|endoftext|>'],
      imStart: s['<|im_start|>'],
      imEnd: s['<|im_end|>'],
      globalImg: s['<global-img>'],
      rowCol: Array.from({ length: 6 }, (_, r) => Array.from({ length: 6 }, (_, c) => s[`<row_${r + 1}_col_${c + 1}>`])),
      fakeTokenAroundImage: s['<fake_token_around_image>'],
      image: s['<image>'],
      endOfUtterance: s['<end_of_utterance>'],
    },
  };
  mkdirSync(dir, { recursive: true });
  await writeRandomIdefics3(dir, spec);
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tok.tokenizer));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(tok.tokenizerConfig, null, 2));
  if (opts.generationConfig !== false) {
    // SmolVLM-256M-Instruct's generation_config.json: bos 0 (the template writes <|im_start|> itself), eos
    // <end_of_utterance>, pad <|im_end|>.
    const gen = { bos_token_id: s['<|endoftext|>'], eos_token_id: s['<end_of_utterance>'], pad_token_id: s['<|im_end|>'] };
    writeFileSync(join(dir, 'generation_config.json'), JSON.stringify(gen, null, 2));
  }
  return { dir, spec, special: s, vocab: tok.size };
}
