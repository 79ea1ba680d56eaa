// Evaluation question files: the vlmscope JSONL schema, VSR JSONL and What'sUp JSON, read into EvalItems,
// plus answer normalisation and scoring. Node file access goes through dynamic imports of node:fs / node:path
// (inside readQuestions only), so bundling this module for browsers pulls in no Node built-ins;
// `parseQuestions` is pure and works anywhere.
//
// ## vlmscope JSONL (written by scripts/make-synthetic.ts; see docs/datasets.md)
// One JSON object per line (blank lines ignored):
//   {"id": "s000123-spatial",               unique string
//    "image": "images/s000123.png",         relative to the JSONL file's folder (or absolute, or a URL)
//    "question": "Where is the red circle in relation to the blue square? Answer with left, right, above or below.",
//    "answer": "left",                      the gold answer, a single word
//    "type": "spatial",                     spatial | vsr | color | shape | count | exists | whatsup
//    "function": "decision",                one of FUNCTIONS (CogVSR labels, snake_case)
//    "options": ["left", "right", "above", "below"],          optional: the allowed answers (answer is one)
//    "wording": "spatial.w2", "wording_heldout": false,       optional: the paraphrase used (src/eval/paraphrases.ts)
//                                                              and whether it is held out for evaluation only
//    "sub_questions": [                                        optional: CogVSR-style decomposition, in order
//      {"id": "s000123-spatial-sub0", "question": "Is there a red circle?", "answer": "yes",
//       "function": "low_level_perception", "options": ["yes", "no"]},   options, wording, wording_heldout optional
//      ...]}
// Sub-questions become their own items (type "subquestion", `mainId` and `subIndex` set), right after their
// main question, unless `includeSubQuestions: false`.
//
// ## VSR JSONL (cambridgeltl/visual-spatial-reasoning)
// {"image": "000000017697.jpg", "caption": "The car is behind the suitcase.", "label": 1, "relation": "behind", ...}
// -> question "The car is behind the suitcase. True or false?", answer "true" (label 1) / "false" (label 0),
// type "vsr", function "relational_reasoning", id "vsr-<line>". The image is looked up as for What'sUp (below):
// next to the file first, then in an `images/` folder beside it.
//
// ## What'sUp JSON (amitakamath/whatsup_vlms, controlled_images_dataset.json / controlled_clevr_dataset.json)
// [{"image_path": "data/controlled_images/beer-bottle_left_of_armchair.jpeg", "caption_options": [4 strings]}, ...]
// The first caption is the correct one. Each item becomes "Which caption describes the image? Options: (a) ...
// (b) ... (c) ... (d) ... Answer with a, b, c or d." with the captions shuffled by a PRNG seeded with the item
// index (so the same file always gives the same questions), answer the correct letter, type "whatsup",
// function "relational_reasoning", id "whatsup-<index>". The image is looked up relative to the file, in an
// `images/` folder beside it (full relative path, then base name), then relative to the file's parent folder
// (What'sUp paths are relative to its repository root, the JSON files sit in data/).
//
// The format is detected from the content: a JSON array is What'sUp; otherwise each line is JSON, and the first
// line decides between vlmscope (`question` and `answer`) and VSR (`caption` and `label`). Errors name the file
// and line: "questions.jsonl:12: missing field \"answer\"".

import { mulberry32 } from './synthetic.js';
import { arrayElementOffsets, describeValue, linesAt } from './json-text.js';

export const SYNTHETIC_QUESTION_TYPES = ['spatial', 'vsr', 'color', 'shape', 'count', 'exists'] as const;
export type SyntheticQuestionType = (typeof SYNTHETIC_QUESTION_TYPES)[number];
/** Types of JSONL records (`whatsup` for converted What'sUp items written back as JSONL). */
export const QUESTION_TYPES = [...SYNTHETIC_QUESTION_TYPES, 'whatsup'] as const;
export type QuestionType = (typeof QUESTION_TYPES)[number];
/** Types of EvalItems: record types plus `subquestion` for flattened sub-questions. */
export type EvalItemType = QuestionType | 'subquestion';

/** CogVSR's eight functions (the synthetic data uses the first four). */
export const FUNCTIONS = [
  'low_level_perception',
  'spatial_perception',
  'relational_reasoning',
  'decision',
  'high_level_perception',
  'information_extraction',
  'knowledge_recall',
  'math_reasoning',
] as const;
export type QuestionFunction = (typeof FUNCTIONS)[number];

export interface SubQuestionRecord {
  id: string;
  question: string;
  answer: string;
  function: QuestionFunction;
  options?: string[];
  /** The paraphrase the question is written in ("low_level_perception.w3"; src/eval/paraphrases.ts). */
  wording?: string;
  /** The wording is held out: it appears only in evaluation sets. */
  wording_heldout?: boolean;
}

/** One line of a vlmscope JSONL file. */
export interface QuestionRecord {
  id: string;
  image: string;
  question: string;
  answer: string;
  type: QuestionType;
  function: QuestionFunction;
  options?: string[];
  /** The paraphrase the question is written in ("spatial.w2"; src/eval/paraphrases.ts). */
  wording?: string;
  /** The wording is held out: it appears only in evaluation sets. */
  wording_heldout?: boolean;
  sub_questions?: SubQuestionRecord[];
}

export interface EvalItem {
  id: string;
  /** Resolved image location: an absolute path (readQuestions), a path joined to the file's folder, or a URL. */
  imagePath: string;
  question: string;
  answer: string;
  type: EvalItemType;
  function: QuestionFunction;
  options?: string[];
  /** For sub-questions: the id of the main question and the position among its sub-questions (0-based). */
  mainId?: string;
  subIndex?: number;
  /** The record's `wording` id and `wording_heldout` flag, when the file gives them. */
  wording?: string;
  wordingHeldout?: boolean;
}

export type DatasetFormat = 'vlmscope' | 'vsr' | 'whatsup';

export interface ReadOptions {
  /** Sub-questions become items after their main question (default true). */
  includeSubQuestions?: boolean;
}

export interface ParseOptions extends ReadOptions {
  /**
   * Maps an image reference from the file to the EvalItem's imagePath. Default: URLs and absolute paths are
   * kept, other paths are joined to the folder of `source`.
   */
  resolveImage?: (image: string, format: DatasetFormat) => string;
}

// ---------------------------------------------------------------------------------------------------------------
// Paths (string-only, so parseQuestions needs no node:path)

const isUrl = (p: string): boolean => /^[a-z][a-z0-9+.-]*:\/\//i.test(p) || p.startsWith('data:');
const isAbsolutePath = (p: string): boolean => p.startsWith('/') || /^[A-Za-z]:[\\/]/.test(p);

function dirnameOf(p: string): string {
  const i = Math.max(p.lastIndexOf('/'), p.lastIndexOf('\\'));
  if (i < 0) return '.';
  return i === 0 ? '/' : p.slice(0, i);
}

function basenameOf(p: string): string {
  return p.slice(Math.max(p.lastIndexOf('/'), p.lastIndexOf('\\')) + 1);
}

/** Joins a relative reference to a base folder (or URL folder of a file URL). */
function joinRef(source: string, ref: string): string {
  if (isUrl(ref) || isAbsolutePath(ref)) return ref;
  if (isUrl(source)) return new URL(ref, source).href;
  const dir = dirnameOf(source);
  const parts = (dir === '.' ? [] : dir.split('/')).concat(ref.split('/'));
  const out: string[] = [];
  for (const part of parts) {
    if (part === '.' || (part === '' && out.length > 0)) continue;
    if (part === '..' && out.length > 0 && out[out.length - 1] !== '..' && out[out.length - 1] !== '') out.pop();
    else out.push(part);
  }
  const joined = out.join('/');
  return joined === '' ? '.' : joined;
}

// ---------------------------------------------------------------------------------------------------------------
// Parsing

class LineError extends Error {}

/** Detects the format of a question file from its text. */
export function detectFormat(text: string, source = 'input'): DatasetFormat {
  const body = text.replace(/^\uFEFF/, '').trimStart();
  if (body === '') throw new Error(`${source}: empty question file`);
  if (body.startsWith('[')) return 'whatsup';
  const firstLine = body.split(/\r?\n/, 1)[0]!;
  let first: unknown;
  try {
    first = JSON.parse(firstLine);
  } catch {
    // Leave the precise error to the line parser.
    return 'vlmscope';
  }
  if (first !== null && typeof first === 'object' && !Array.isArray(first)) {
    const o = first as Record<string, unknown>;
    if ('caption' in o && 'label' in o && !('question' in o)) return 'vsr';
  }
  return 'vlmscope';
}

function requireString(o: Record<string, unknown>, key: string, what = ''): string {
  const v = o[key];
  if (v === undefined) throw new LineError(`${what}missing field "${key}"`);
  if (typeof v !== 'string' || v.trim() === '') throw new LineError(`${what}field "${key}" must be a non-empty string, got ${describeValue(v)}`);
  return v;
}

function requireOneOf<T extends string>(o: Record<string, unknown>, key: string, allowed: readonly T[], what = ''): T {
  const v = requireString(o, key, what);
  if (!(allowed as readonly string[]).includes(v)) throw new LineError(`${what}field "${key}" is ${describeValue(v)}, expected one of ${allowed.join(', ')}`);
  return v as T;
}

function optionalOptions(o: Record<string, unknown>, answer: string, what = ''): string[] | undefined {
  const v = o.options;
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'string' && x.trim() !== '')) {
    throw new LineError(`${what}field "options" must be a non-empty list of strings, got ${describeValue(v)}`);
  }
  const opts = v as string[];
  const gold = normalizeAnswer(answer);
  if (!opts.some((x) => normalizeAnswer(x) === gold)) throw new LineError(`${what}answer ${describeValue(answer)} is not one of options ${describeValue(opts)}`);
  return opts.slice();
}

/** The optional `wording` id and `wording_heldout` flag of a record (the flag needs the id). */
function optionalWording(o: Record<string, unknown>, what = ''): { wording?: string; wordingHeldout?: boolean } {
  const out: { wording?: string; wordingHeldout?: boolean } = {};
  if (o.wording !== undefined) {
    if (typeof o.wording !== 'string' || o.wording.trim() === '') throw new LineError(`${what}field "wording" must be a non-empty string, got ${describeValue(o.wording)}`);
    out.wording = o.wording;
  }
  if (o.wording_heldout !== undefined) {
    if (typeof o.wording_heldout !== 'boolean') throw new LineError(`${what}field "wording_heldout" must be true or false, got ${describeValue(o.wording_heldout)}`);
    if (out.wording === undefined) throw new LineError(`${what}field "wording_heldout" is given without a "wording" id`);
    out.wordingHeldout = o.wording_heldout;
  }
  return out;
}

function asObject(v: unknown, what: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new LineError(`${what} must be a JSON object, got ${describeValue(v)}`);
  return v as Record<string, unknown>;
}

function jsonLines(text: string): { line: number; value: unknown }[] {
  const out: { line: number; value: unknown }[] = [];
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  lines.forEach((raw, i) => {
    if (raw.trim() === '') return;
    try {
      out.push({ line: i + 1, value: JSON.parse(raw) });
    } catch (e) {
      throw new LineError(`${i + 1}\u0000invalid JSON (${(e as Error).message})`);
    }
  });
  return out;
}

function parseVlmscope(text: string, resolve: (image: string) => string, includeSubs: boolean): EvalItem[] {
  const items: EvalItem[] = [];
  const ids = new Map<string, number>();
  const claim = (id: string, line: number): void => {
    const prev = ids.get(id);
    if (prev !== undefined) throw new LineError(`duplicate id ${describeValue(id)} (first on line ${prev})`);
    ids.set(id, line);
  };
  for (const { line, value } of jsonLines(text)) {
    try {
      const o = asObject(value, 'line');
      const id = requireString(o, 'id');
      const image = requireString(o, 'image');
      const question = requireString(o, 'question');
      const answer = requireString(o, 'answer');
      const type = requireOneOf(o, 'type', QUESTION_TYPES);
      const fn = requireOneOf(o, 'function', FUNCTIONS);
      const options = optionalOptions(o, answer);
      const wording = optionalWording(o);
      claim(id, line);
      const imagePath = resolve(image);
      const main: EvalItem = { id, imagePath, question, answer, type, function: fn };
      if (options !== undefined) main.options = options;
      Object.assign(main, wording);
      items.push(main);
      const subs = o.sub_questions;
      if (subs === undefined) continue;
      if (!Array.isArray(subs)) throw new LineError(`field "sub_questions" must be a list, got ${describeValue(subs)}`);
      subs.forEach((s, k) => {
        const what = `sub_questions[${k}]: `;
        const so = asObject(s, `sub_questions[${k}]`);
        const subId = requireString(so, 'id', what);
        const subQuestion = requireString(so, 'question', what);
        const subAnswer = requireString(so, 'answer', what);
        const subFn = requireOneOf(so, 'function', FUNCTIONS, what);
        const subOptions = optionalOptions(so, subAnswer, what);
        const subWording = optionalWording(so, what);
        claim(subId, line);
        if (!includeSubs) return;
        const item: EvalItem = { id: subId, imagePath, question: subQuestion, answer: subAnswer, type: 'subquestion', function: subFn, mainId: id, subIndex: k };
        if (subOptions !== undefined) item.options = subOptions;
        Object.assign(item, subWording);
        items.push(item);
      });
    } catch (e) {
      if (e instanceof LineError) throw new LineError(`${line}\u0000${e.message}`);
      throw e;
    }
  }
  return items;
}

function parseVsr(text: string, resolve: (image: string) => string): EvalItem[] {
  const items: EvalItem[] = [];
  for (const { line, value } of jsonLines(text)) {
    try {
      const o = asObject(value, 'line');
      const caption = requireString(o, 'caption').trim();
      const image = requireString(o, 'image');
      if (!('label' in o)) throw new LineError('missing field "label"');
      const label = o.label;
      let truth: boolean;
      if (label === 1 || label === true) truth = true;
      else if (label === 0 || label === false) truth = false;
      else throw new LineError(`bad label ${describeValue(label)}: expected 0 or 1`);
      const statement = /[.!?]$/.test(caption) ? caption : `${caption}.`;
      items.push({
        id: `vsr-${line}`,
        imagePath: resolve(image),
        question: `${statement} True or false?`,
        answer: truth ? 'true' : 'false',
        type: 'vsr',
        function: 'relational_reasoning',
      });
    } catch (e) {
      if (e instanceof LineError) throw new LineError(`${line}\u0000${e.message}`);
      throw e;
    }
  }
  return items;
}

const LETTERS = 'abcdefghijklmnopqrstuvwxyz';

function parseWhatsUp(text: string, resolve: (image: string) => string): EvalItem[] {
  const body = text.replace(/^\uFEFF/, '');
  let data: unknown;
  try {
    data = JSON.parse(body);
  } catch (e) {
    const msg = (e as Error).message;
    const pos = /position (\d+)/.exec(msg);
    throw new LineError(`${pos ? linesAt(body, [Number(pos[1])])[0]! : 1}\u0000invalid JSON (${msg})`);
  }
  if (!Array.isArray(data)) throw new LineError(`1\u0000expected a JSON list of What'sUp items`);
  const lines = linesAt(body, arrayElementOffsets(body));
  return data.map((value, index) => {
    const line = lines[index] ?? 1;
    try {
      if (Array.isArray(value)) {
        throw new LineError(`item ${index}: a list (the COCO-QA / VG-QA [image_id, caption, distractor] layout) is not supported; expected {"image_path", "caption_options"}`);
      }
      const o = asObject(value, `item ${index}`);
      const image = requireString(o, 'image_path', `item ${index}: `);
      const captions = o.caption_options;
      if (captions === undefined) throw new LineError(`item ${index}: missing field "caption_options"`);
      if (!Array.isArray(captions) || captions.length < 2 || captions.length > LETTERS.length || !captions.every((c) => typeof c === 'string' && c.trim() !== '')) {
        throw new LineError(`item ${index}: field "caption_options" must be a list of 2 to 26 non-empty strings, got ${describeValue(captions)}`);
      }
      const rng = mulberry32(0x5eed0000 + index);
      const order = captions.map((_, i) => i);
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(rng() * (i + 1));
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
      const letters = order.map((_, i) => LETTERS[i]!);
      const listed = order.map((src, i) => `(${letters[i]}) ${(captions[src] as string).trim()}`).join(' ');
      const choice = letters.length === 2 ? `${letters[0]} or ${letters[1]}` : `${letters.slice(0, -1).join(', ')} or ${letters[letters.length - 1]}`;
      return {
        id: `whatsup-${index}`,
        imagePath: resolve(image),
        question: `Which caption describes the image? Options: ${listed} Answer with ${choice}.`,
        answer: letters[order.indexOf(0)]!,
        type: 'whatsup',
        function: 'relational_reasoning',
        options: letters,
      } satisfies EvalItem;
    } catch (e) {
      if (e instanceof LineError) throw new LineError(`${line}\u0000${e.message}`);
      throw e;
    }
  });
}

/** Parses the text of a question file (any of the three formats). `source` names it in errors and anchors images. */
export function parseQuestions(text: string, source: string, opts: ParseOptions = {}): EvalItem[] {
  const format = detectFormat(text, source);
  const resolver = opts.resolveImage ?? ((image: string) => joinRef(source, image));
  const resolve = (image: string): string => resolver(image, format);
  try {
    if (format === 'whatsup') return parseWhatsUp(text, resolve);
    if (format === 'vsr') return parseVsr(text, resolve);
    return parseVlmscope(text, resolve, opts.includeSubQuestions ?? true);
  } catch (e) {
    if (e instanceof LineError) {
      const sep = e.message.indexOf('\u0000');
      throw new Error(`${source}:${e.message.slice(0, sep)}: ${e.message.slice(sep + 1)}`);
    }
    throw e;
  }
}

/**
 * Reads a question file (vlmscope JSONL, VSR JSONL or What'sUp JSON; detected from the content) into EvalItems
 * with absolute image paths. Node only (http(s) URLs are fetched, and their images resolved as URLs).
 */
export async function readQuestions(path: string, opts: ReadOptions = {}): Promise<EvalItem[]> {
  if (/^https?:\/\//i.test(path)) {
    const res = await fetch(path);
    if (!res.ok) throw new Error(`cannot read ${path}: HTTP ${res.status}`);
    return parseQuestions(await res.text(), path, opts);
  }
  const fs = await import('node:fs/promises');
  const fsSync = await import('node:fs');
  const nodePath = await import('node:path');
  let text: string;
  try {
    text = await fs.readFile(path, 'utf8');
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ENOENT') throw new Error(`cannot read ${path}: file not found`);
    if (code === 'EISDIR') throw new Error(`cannot read ${path}: is a directory`);
    throw new Error(`cannot read ${path}: ${(e as Error).message}`);
  }
  const dir = nodePath.dirname(nodePath.resolve(path));
  const resolveImage = (image: string, format: DatasetFormat): string => {
    if (isUrl(image)) return image;
    if (nodePath.isAbsolute(image)) return image;
    const primary = nodePath.resolve(dir, image);
    if (format === 'vlmscope') return primary;
    // Public datasets: look in a few conventional places; first existing wins, else the primary guess.
    const candidates = [
      primary,
      nodePath.resolve(dir, 'images', image),
      nodePath.resolve(dir, 'images', nodePath.basename(image)),
      nodePath.resolve(dir, nodePath.basename(image)),
      nodePath.resolve(dir, '..', image),
    ];
    return candidates.find((c) => fsSync.existsSync(c)) ?? primary;
  };
  return parseQuestions(text, path, { ...opts, resolveImage });
}

// ---------------------------------------------------------------------------------------------------------------
// Scoring

const DIGIT_WORDS = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten'];

/**
 * Canonical form of a (generated or gold) answer: lowercase, first word that has a letter or digit, with
 * punctuation stripped from both ends, digits 0-10 as words. "Yes." -> "yes", " True" -> "true", "(a)" -> "a",
 * "3 objects" -> "three", "Left, because" -> "left".
 */
export function normalizeAnswer(text: string): string {
  for (const raw of text.toLowerCase().trim().split(/\s+/)) {
    const word = raw.replace(/^[^\p{L}\p{N}]+|[^\p{L}\p{N}]+$/gu, '');
    if (word === '') continue;
    return /^\d+$/.test(word) && Number(word) < DIGIT_WORDS.length ? DIGIT_WORDS[Number(word)]! : word;
  }
  return '';
}

/**
 * Whether a prediction matches the item's gold answer after normalizeAnswer. For true/false answers, yes/no
 * count as true/false (VSR prompts in the literature ask for yes/no).
 */
export function isCorrect(prediction: string, item: Pick<EvalItem, 'answer'>): boolean {
  const gold = normalizeAnswer(item.answer);
  let pred = normalizeAnswer(prediction);
  if (gold === 'true' || gold === 'false') {
    if (pred === 'yes') pred = 'true';
    else if (pred === 'no') pred = 'false';
  }
  return pred !== '' && pred === gold;
}
