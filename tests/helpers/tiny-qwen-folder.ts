// A small Qwen2.5-VL (or Qwen2-VL) folder built at test time, laid out like a hub checkpoint
// (Qwen/Qwen2-VL-7B-Instruct, Qwen/Qwen2.5-VL-3B-Instruct): random weights from writeRandomQwen, and a real
// GPT-2/Qwen2-style byte-level BPE tokenizer — tokenizer.json with Qwen2's NFC normalizer, its Split regex +
// ByteLevel pre-tokenizer, the ByteLevel post-processor and decoder, a few hundred merges learned here from a
// small English corpus, and the Qwen special tokens (<|endoftext|> ... <|video_pad|>) as added special tokens at
// the offsets Qwen gives them (151643 + k there, `base` + k here) — tokenizer_config.json with Qwen2-VL-Instruct's
// chat template, and generation_config.json. The model's special ids (config.json) are the tokenizer's.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeRandomQwen, type QwenFamily, type RandomQwenSpec } from '../../src/models/random-qwen.js';
import { addedToken, addedTokensDecoder, bpeMerges } from '../../scripts/lib/bpe.js';

/** Qwen2's pre-tokenizer regex (tokenizer.json of every Qwen2 / Qwen2-VL / Qwen2.5-VL checkpoint). */
export const QWEN2_SPLIT_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** The same split in JavaScript (no inline (?i:...) group), for training the merges. */
const SPLIT_JS = /'(?:[sStTmMdD]|[rR][eE]|[vV][eE]|[lL][lL])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+/gu;

/**
 * Qwen2-VL-7B-Instruct's chat template (chat_template.json / tokenizer_config.json on the hub): a default system
 * turn, one <|vision_start|><|image_pad|><|vision_end|> per image part (Picture N: with add_vision_id), video
 * parts likewise, text parts as they are, and "<|im_start|>assistant\n" as the generation prompt.
 */
export const QWEN2_VL_CHAT_TEMPLATE =
  "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/** Qwen's special tokens in id order from `base` (151643 in the real vocabulary). */
export const QWEN_SPECIAL_TOKENS = [
  '<|endoftext|>',
  '<|im_start|>',
  '<|im_end|>',
  '<|object_ref_start|>',
  '<|object_ref_end|>',
  '<|box_start|>',
  '<|box_end|>',
  '<|quad_start|>',
  '<|quad_end|>',
  '<|vision_start|>',
  '<|vision_end|>',
  '<|vision_pad|>',
  '<|image_pad|>',
  '<|video_pad|>',
] as const;

/** GPT-2's bytes_to_unicode: every byte as a printable character; vocabulary ids 0..255 follow this order. */
export function bytesToUnicode(): { chars: string[]; order: number[] } {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const chars = new Array<string>(256);
  bs.forEach((b, i) => (chars[b] = String.fromCodePoint(cs[i])));
  return { chars, order: bs };
}

/** A corpus for the merges: the chat template's words and the synthetic questions' vocabulary, plus some prose. */
export const CORPUS = [
  'system You are a helpful assistant. user assistant',
  'Where is the red circle in relation to the blue square? Answer with left, right, above or below.',
  'Is the green triangle in the left half or the right half of the image? Is the yellow star in the top half or the bottom half of the image?',
  'Is there a red circle? Is there an orange square? What color is the triangle? What shape is the purple object?',
  'How many objects are there? How many circles are there? How many squares are there? How many triangles are there?',
  'The red circle is left of the blue square. True or false? The green triangle is above the yellow star. True or false?',
  'The picture shows a small red circle to the left of a large blue square, and a green triangle below them.',
  'There are two objects in the image: one circle and one square. The circle is above the square.',
  'Describe the image in one sentence. The image shows shapes of different colors on a white background.',
  'What is in the image? The image contains a red circle, a blue square and a green triangle.',
  'yes no left right above below top bottom one two three four five six seven eight nine ten',
  'The quick brown fox jumps over the lazy dog. The dog sleeps in the sun while the fox runs away.',
  'Attention heads in vision language models read the image tokens; some heads look at the objects in the scene.',
  "It's a circle, isn't it? They're shapes, we've seen them, I'm sure, you'll see, he'd know.",
  'Numbers like 2024, 3.14 and 42 are split into single digits. Prices: $5, 10% off!',
];

/** Learns byte-level BPE merges (most frequent pair first, ties by code-unit order) over CORPUS's words. */
export function learnMerges(corpus: readonly string[], maxMerges: number): [string, string][] {
  const { chars } = bytesToUnicode();
  const enc = new TextEncoder();
  const counts = new Map<string, number>();
  for (const line of corpus) {
    for (const w of line.normalize('NFC').match(SPLIT_JS) ?? []) {
      const s = Array.from(enc.encode(w), (b) => chars[b]).join('');
      counts.set(s, (counts.get(s) ?? 0) + 1);
    }
  }
  return bpeMerges(counts, (merges) => merges.length < maxMerges);
}

export interface QwenTokenizerFiles {
  tokenizer: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  /** Id of each Qwen special token. */
  special: Record<(typeof QWEN_SPECIAL_TOKENS)[number], number>;
  /** Tokens in the vocabulary (bytes + merges + special tokens): the model's vocab_size. */
  size: number;
  merges: number;
}

/** tokenizer.json and tokenizer_config.json of a Qwen2-style byte-level BPE tokenizer with `merges` merges. */
export function qwenTokenizerFiles(merges = 300, opts: { eosToken?: string } = {}): QwenTokenizerFiles {
  const { chars, order } = bytesToUnicode();
  const vocab: Record<string, number> = {};
  let next = 0;
  for (const b of order) vocab[chars[b]] = next++;
  const learned = learnMerges(CORPUS, merges);
  for (const [a, b] of learned) if (!(a + b in vocab)) vocab[a + b] = next++;
  const base = next;
  const special = Object.fromEntries(QWEN_SPECIAL_TOKENS.map((t, k) => [t, base + k])) as QwenTokenizerFiles['special'];
  const added = QWEN_SPECIAL_TOKENS.map((content, k) => addedToken(base + k, content));
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false };
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: { type: 'NFC' },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [{ type: 'Split', pattern: { Regex: QWEN2_SPLIT_REGEX }, behavior: 'Isolated', invert: false }, byteLevel],
    },
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      // The hub file's form: "a b" strings.
      merges: learned.map(([a, b]) => `${a} ${b}`),
    },
  };
  const tokenizerConfig = {
    add_prefix_space: false,
    added_tokens_decoder: addedTokensDecoder(added),
    additional_special_tokens: ['<|im_start|>', '<|im_end|>', '<|object_ref_start|>', '<|object_ref_end|>', '<|box_start|>', '<|box_end|>', '<|quad_start|>', '<|quad_end|>', '<|vision_start|>', '<|vision_end|>', '<|vision_pad|>', '<|image_pad|>', '<|video_pad|>'],
    bos_token: null,
    chat_template: QWEN2_VL_CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: opts.eosToken ?? '<|im_end|>',
    errors: 'replace',
    model_max_length: 32768,
    pad_token: '<|endoftext|>',
    padding_side: 'left',
    processor_class: 'Qwen2VLProcessor',
    split_special_tokens: false,
    tokenizer_class: 'Qwen2Tokenizer',
    unk_token: null,
  };
  return { tokenizer, tokenizerConfig, special, size: base + QWEN_SPECIAL_TOKENS.length, merges: learned.length };
}

export interface TinyQwenFolderOptions {
  family?: QwenFamily;
  seed?: number;
  /** Write generation_config.json (eos_token_id [<|im_end|>, <|endoftext|>] as the Instruct models have). Default true. */
  generationConfig?: boolean;
  /** tokenizer_config.json eos_token (default <|im_end|>, as Qwen2-VL-Instruct; base models say <|endoftext|>). */
  eosToken?: string;
  /** preprocessor_config.json max_pixels. */
  maxPixels?: number;
}

export interface TinyQwenFolder {
  dir: string;
  spec: RandomQwenSpec;
  special: QwenTokenizerFiles['special'];
  vocab: number;
}

/** Writes a tiny Qwen2.5-VL (default) or Qwen2-VL folder to `dir`; small enough for SwiftShader. */
export async function writeTinyQwenFolder(dir: string, opts: TinyQwenFolderOptions = {}): Promise<TinyQwenFolder> {
  const family = opts.family ?? 'qwen2_5_vl';
  const tok = qwenTokenizerFiles(300, { eosToken: opts.eosToken });
  const s = tok.special;
  const spec: RandomQwenSpec = {
    family,
    seed: opts.seed ?? 11,
    vision: family === 'qwen2_5_vl' ? { width: 32, heads: 4, depth: 2, intermediate: 64, windowSize: 56, fullattBlockIndexes: [1] } : { width: 32, heads: 4, depth: 2 },
    text: { hidden: 64, intermediate: 128, layers: 2, heads: 4, kvHeads: 2, vocab: tok.size, ropeTheta: 1e4 },
    tokens: {
      bos: s['<|endoftext|>'],
      eos: s['<|im_end|>'],
      visionStart: s['<|vision_start|>'],
      visionEnd: s['<|vision_end|>'],
      visionPad: s['<|vision_pad|>'],
      image: s['<|image_pad|>'],
      video: s['<|video_pad|>'],
    },
    maxPixels: opts.maxPixels,
  };
  mkdirSync(dir, { recursive: true });
  await writeRandomQwen(dir, spec);
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tok.tokenizer));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(tok.tokenizerConfig, null, 2));
  if (opts.generationConfig !== false) {
    const gen = { bos_token_id: s['<|endoftext|>'], pad_token_id: s['<|endoftext|>'], eos_token_id: [s['<|im_end|>'], s['<|endoftext|>']] };
    writeFileSync(join(dir, 'generation_config.json'), JSON.stringify(gen, null, 2));
  }
  return { dir, spec, special: s, vocab: tok.size };
}

/**
 * Swap two rows of lm_head.weight in DIR/model.safetensors (in place): the logits of tokens `a` and `b` trade
 * places and nothing else in the model changes.
 */
export function swapLmHeadRows(dir: string, a: number, b: number): void {
  const path = join(dir, 'model.safetensors');
  const file = readFileSync(path);
  const n = Number(file.readBigUInt64LE(0));
  const header = JSON.parse(file.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const t = header['lm_head.weight'];
  if (!t) throw new Error(`${path} has no lm_head.weight`);
  const rowBytes = (t.data_offsets[1] - t.data_offsets[0]) / t.shape[0];
  const at = (r: number) => 8 + n + t.data_offsets[0] + r * rowBytes;
  const rowA = Buffer.from(file.subarray(at(a), at(a) + rowBytes));
  file.copy(file, at(a), at(b), at(b) + rowBytes);
  rowA.copy(file, at(b));
  writeFileSync(path, file);
}
