// A deterministic Llama/SentencePiece-style BPE trainer and the Hugging Face tokenizer files it makes
// (tokenizer.json with byte fallback, tokenizer_config.json with a LLaVA-1.5 chat template,
// special_tokens_map.json). Used by the scripts that generate shipped checkpoints.

import { addedToken, addedTokensDecoder, bpeMerges } from './bpe.js';

export const SPACE = '\u2581'; // ▁

// ---------------------------------------------------------------------------------------------------------------
// BPE trainer (SentencePiece-style words: each starts with ▁; punctuation and digits stand alone)

/** Characters always in the base alphabet, whether or not the corpus uses them. */
const BASE_CHARS = [
  SPACE,
  ...'abcdefghijklmnopqrstuvwxyz',
  ...'ABCDEFGHIJKLMNOPQRSTUVWXYZ',
  ...'0123456789',
  ...'.,?!:;\'"-()/',
];

function wordCounts(lines: string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const line of lines) {
    const norm = SPACE + line.replaceAll(' ', SPACE);
    for (const w of norm.match(new RegExp(`${SPACE}?[A-Za-z]+|[0-9]|[^A-Za-z0-9${SPACE}]|${SPACE}`, 'gu')) ?? []) {
      counts.set(w, (counts.get(w) ?? 0) + 1);
    }
  }
  return counts;
}

export interface Bpe {
  alphabet: string[];
  merges: [string, string][];
}

/** Merges until the model vocabulary (<unk> <s> </s>, the byte tokens, the alphabet, the merges) reaches maxModelVocab; pairs seen once are not merged. */
export function trainBpe(lines: string[], maxModelVocab: number): Bpe {
  const counts = wordCounts(lines);
  const alphabet = [...new Set([...BASE_CHARS, ...[...counts.keys()].flatMap((w) => [...w])])].sort();
  const vocab = new Set(alphabet);
  const fixed = 3 + 256; // <unk> <s> </s> and the byte tokens
  const more = (merges: readonly [string, string][]) => {
    const last = merges[merges.length - 1];
    if (last) vocab.add(last[0] + last[1]);
    return fixed + vocab.size < maxModelVocab;
  };
  return { alphabet, merges: bpeMerges(counts, more, 2) };
}

// ---------------------------------------------------------------------------------------------------------------
// Tokenizer files

const byteToken = (b: number) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;

export function tokenizerFiles(bpe: Bpe) {
  const vocab: Record<string, number> = {};
  let next = 0;
  const add = (t: string) => {
    if (!(t in vocab)) vocab[t] = next++;
  };
  ['<unk>', '<s>', '</s>'].forEach(add);
  for (let b = 0; b < 256; b++) add(byteToken(b));
  bpe.alphabet.forEach(add);
  for (const [a, b] of bpe.merges) add(a + b);
  const imageId = next;
  const padId = next + 1;
  const size = next + 2;

  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      addedToken(0, '<unk>'),
      addedToken(1, '<s>'),
      addedToken(2, '</s>'),
      addedToken(imageId, '<image>'),
      addedToken(padId, '<pad>'),
    ],
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: SPACE },
        { type: 'Replace', pattern: { String: ' ' }, content: SPACE },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: '<s>', type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '<s>', type_id: 1 } },
        { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: SPACE }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges: bpe.merges,
    },
  };

  const special = (content: string) => ({ content, lstrip: false, normalized: false, rstrip: false, single_word: false });
  const tokenizerConfig = {
    add_bos_token: true,
    add_eos_token: false,
    added_tokens_decoder: addedTokensDecoder(tokenizer.added_tokens),
    bos_token: '<s>',
    chat_template: CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: '</s>',
    legacy: false,
    model_max_length: 4096,
    pad_token: '<pad>',
    padding_side: 'left',
    processor_class: 'LlavaProcessor',
    sp_model_kwargs: {},
    tokenizer_class: 'LlamaTokenizer',
    unk_token: '<unk>',
    use_default_system_prompt: false,
  };
  const specialTokensMap = {
    bos_token: special('<s>'),
    eos_token: special('</s>'),
    pad_token: special('<pad>'),
    unk_token: special('<unk>'),
  };
  return { tokenizer, tokenizerConfig, specialTokensMap, imageId, padId, size };
}

/**
 * LLaVA-1.5 conversation format: "USER: <image>\n{prompt} ASSISTANT:", answers end with </s>, a system message
 * is written as is before the first turn. Images of a message come first, one "<image>\n" each.
 */
export const CHAT_TEMPLATE =
  "{%- for message in messages -%}" +
  "{%- if message['role'] == 'user' -%}{{ 'USER: ' }}{%- elif message['role'] == 'assistant' -%}{{ 'ASSISTANT: ' }}{%- endif -%}" +
  "{%- if message['content'] is string -%}{{ message['content'] }}{%- else -%}" +
  "{%- for part in message['content'] | selectattr('type', 'equalto', 'image') -%}{{ '<image>\\n' }}{%- endfor -%}" +
  "{%- for part in message['content'] | selectattr('type', 'equalto', 'text') -%}{{ part['text'] }}{%- if not loop.last -%}{{ ' ' }}{%- endif -%}{%- endfor -%}" +
  '{%- endif -%}' +
  "{%- if message['role'] == 'assistant' -%}{{ eos_token }}{%- else -%}{{ ' ' }}{%- endif -%}" +
  '{%- endfor -%}' +
  "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}";

