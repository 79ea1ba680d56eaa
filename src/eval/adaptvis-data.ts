// The AdaptVis evaluation data as the authors run it (Chen et al., ICML 2025, github shiqichen17/AdaptVis, snapshot
// 3b41399): their prompt JSONL paired with the What'sUp annotation files, the VSR zero-shot test file, their answer
// rules, their 20% / 80% split, option-likelihood support and a results table in the shape of the paper's.
// Parsing is pure (`parseAdaptVis`); `readAdaptVis` (Node) reads the files and checks that every image exists.
// Node built-ins are imported lazily inside the readers only, as in dataset.ts.
//
// ## Files (AdaptVis `main_aro.py`, `model_zoo/llava15.py`, `dataset_zoo/aro_datasets.py`)
// * Prompt JSONL, `prompts/<subset>_with_answer_{four,six}_options.jsonl` (six for VG, four otherwise:
//   llava15.py l.297 builds the name from `--option`). One object per line:
//     {"id": 0, "question": "<image>\nUSER: Where is the beer bottle in relation to the armchair? Answer with left,
//      right, on or under.\nASSISTANT:", "answer": ["On"]}
//   Line i goes with item i of the annotation file (both are indexed by the same position, llava15.py l.300-340
//   and the DataLoader over the dataset). The gold word is `answer[0]` (llava15.py l.416, l.423).
// * Annotations (aro_datasets.py): Controlled_Images_A/B `data/controlled_images_dataset.json` /
//   `data/controlled_clevr_dataset.json`, a list of {"image_path": "data/controlled_images/....jpeg",
//   "caption_options": [4 captions, correct first]}; the image path is relative to the checkout root (l.243).
//   COCO_QA_{one,two}_obj `data/coco_qa_{one,two}_obj.json` and VG_QA_{one,two}_obj `data/vg_qa_{one,two}_obj.json`,
//   lists of [image_id, correct caption, distractor]; images `data/val2017/{id:012d}.jpg` (l.402) and
//   `data/vg_images/{id}.jpg` (l.529).
// * VSR: `data/test.jsonl` of cambridgeltl/vsr_zeroshot (l.47), fields `image_link`, `caption`, `label`; the image is
//   `data/` + the link's path after ".org/" (l.78, l.103), e.g. data/train2017/000000017697.jpg. Their
//   `prompts/VSR_with_answer.jsonl` (relation words as `answer`) is NOT read by their VSR path and is refused here.
//   Prompt (llava15.py l.499): "User: <image>\n Determine whether the description about the spatial relationship is
//   correct or not. Answer with yes or no: " + caption + " Assistant:". Their VSR images are also
//   `.resize((2300, 4096))` before the processor (aro_datasets.py l.105); that is image-side, exported as
//   ADAPTVIS_VSR_RESIZE and not applied by these readers.
//
// ## Answer rules (isCorrectAdaptVis)
// * What'sUp subsets (llava15.py l.423-424, same at l.432-433), with gold = answer[0] and gen the generated text:
//     (gold in gen or gold.lower() in gen.lower()) and not (gold.lower() == 'on' and 'front' in gen.strip().lower())
//   i.e. a case-insensitive SUBSTRING test, not a first-word match and no punctuation stripping. The "front" clause
//   exists because "on" is a substring of "front"; it does not catch other words that contain "on" ("don't",
//   "none", "on the left"), which still count as "on".
// * VSR (llava15.py l.537-543): label 1 is correct iff 'Yes' in gen, label 0 iff 'No' in gen, both case-SENSITIVE
//   substrings ("yes" is wrong, "No, ... Yes" is right for both labels). Accuracy = (TP+TN)/N; their "precision" is
//   TP/(TP+FN), "recall" TN/(TN+FP) and "F1" the harmonic mean of the two (l.560-562): vsrMetrics.
// * Not copied, documented: the AdaptVis confidence in their VSR path is `max(output['scores'][0][0])`, a raw
//   logit instead of a softmax probability (llava15.py l.522; What'sUp uses the softmax, l.386), so a threshold
//   such as 0.4 practically always picks alpha_high there. The engine side uses the softmax probability for all.
//
// ## Split (splitItems)
// `random.sample(range(N), int(0.2 * N))` after `random.seed(1)` (main_aro.py l.40, l.55 via misc.seed_all; the same
// code in llava15.py l.327), sorted, is the 20% split alpha is chosen on; `TEST_MODE=True` runs the other 80%
// (main_aro.py l.60-63). splitItems reimplements CPython's Mersenne Twister seeding, getrandbits and
// random.sample, so with seed 1 it gives the indices their code draws (assuming nothing else draws from Python's
// `random` between seed_all and the sample; nothing in their code does). Their indices are cached in
// ./output/sampled_idx_<dataset>.npy; a stale cache would override the draw, this function always draws.

import type { EvalItem, QuestionFunction } from './dataset.js';
import { arrayElementOffsets, describeValue, linesAt } from './json-text.js';
import { PythonRandom } from './python-random.js';

// ---------------------------------------------------------------------------------------------------------------
// Subsets

export const ADAPTVIS_SUBSETS = [
  'Controlled_Images_A',
  'Controlled_Images_B',
  'COCO_QA_one_obj',
  'COCO_QA_two_obj',
  'VG_QA_one_obj',
  'VG_QA_two_obj',
  'VSR',
] as const;
export type AdaptVisSubset = (typeof ADAPTVIS_SUBSETS)[number];

type Layout = 'controlled' | 'coco' | 'vg' | 'vsr';

interface SubsetInfo {
  /** Column label of the paper's table (project page, branch `web`, index.html). */
  label: string;
  /** Prompt file under prompts/ (none for VSR: its path builds the prompt, llava15.py l.499). */
  promptFile?: string;
  /** Annotation file under data/. */
  annotationFile: string;
  layout: Layout;
}

const SUBSETS: Record<AdaptVisSubset, SubsetInfo> = {
  Controlled_Images_A: { label: 'Cont_A', promptFile: 'Controlled_Images_A_with_answer_four_options.jsonl', annotationFile: 'controlled_images_dataset.json', layout: 'controlled' },
  Controlled_Images_B: { label: 'Cont_B', promptFile: 'Controlled_Images_B_with_answer_four_options.jsonl', annotationFile: 'controlled_clevr_dataset.json', layout: 'controlled' },
  COCO_QA_one_obj: { label: 'COCO_1', promptFile: 'COCO_QA_one_obj_with_answer_four_options.jsonl', annotationFile: 'coco_qa_one_obj.json', layout: 'coco' },
  COCO_QA_two_obj: { label: 'COCO_2', promptFile: 'COCO_QA_two_obj_with_answer_four_options.jsonl', annotationFile: 'coco_qa_two_obj.json', layout: 'coco' },
  VG_QA_one_obj: { label: 'VG_1', promptFile: 'VG_QA_one_obj_with_answer_six_options.jsonl', annotationFile: 'vg_qa_one_obj.json', layout: 'vg' },
  VG_QA_two_obj: { label: 'VG_2', promptFile: 'VG_QA_two_obj_with_answer_six_options.jsonl', annotationFile: 'vg_qa_two_obj.json', layout: 'vg' },
  VSR: { label: 'VSR', annotationFile: 'test.jsonl', layout: 'vsr' },
};

/** Default file names of a subset, relative to a checkout laid out as the authors' (prompts/, data/). */
export function adaptVisFiles(subset: AdaptVisSubset): { prompts?: string; annotations: string } {
  const info = subsetInfo(subset);
  return info.promptFile !== undefined ? { prompts: `prompts/${info.promptFile}`, annotations: `data/${info.annotationFile}` } : { annotations: `data/${info.annotationFile}` };
}

/** The (width, height) the authors resize VSR images to before the processor (aro_datasets.py l.105). Not applied here. */
export const ADAPTVIS_VSR_RESIZE = { width: 2300, height: 4096 } as const;

/** The VSR prompt of llava15.py l.499: prefix + caption + suffix. */
export const ADAPTVIS_VSR_PROMPT_PREFIX = 'User: <image>\n Determine whether the description about the spatial relationship is correct or not. Answer with yes or no: ';
export const ADAPTVIS_VSR_PROMPT_SUFFIX = ' Assistant:';
/** The VSR question without the authors' "User: <image>\n" / " Assistant:" wrapping (for a processor's own template). */
export const ADAPTVIS_VSR_QUESTION = 'Determine whether the description about the spatial relationship is correct or not. Answer with yes or no:';

function subsetInfo(subset: string): SubsetInfo {
  if (!(ADAPTVIS_SUBSETS as readonly string[]).includes(subset)) throw new Error(`unknown AdaptVis subset ${JSON.stringify(subset)}: expected one of ${ADAPTVIS_SUBSETS.join(', ')}`);
  return SUBSETS[subset as AdaptVisSubset];
}

// ---------------------------------------------------------------------------------------------------------------
// Items

/** One line of the authors' prompt JSONL. */
export interface AdaptVisPromptRecord {
  id: number;
  /** The full text as in the file: `<image>\nUSER: ... \nASSISTANT:`. */
  prompt: string;
  /** The text between `USER:` and `ASSISTANT:`, trimmed (what a processor's own chat template wraps). */
  question: string;
  /** `answer` as in the file; the authors score against answers[0]. */
  answers: string[];
  /**
   * The words of the question's "Answer with a, b or c." clause, lowercase, in order. answers[0] need not be one
   * (VG_QA_two_obj line 57 answers "Above" to "... top, or bottom."): see AdaptVisItem.goldListed.
   */
  options: string[];
  /** 1-based line in the file. */
  line: number;
}

/** An EvalItem of an AdaptVis subset, with what the authors' scoring and an option-likelihood scorer need. */
export interface AdaptVisItem extends EvalItem {
  subset: AdaptVisSubset;
  /** 0-based position in the dataset: what the 20% / 80% split draws from. */
  index: number;
  /** The authors' full prompt text (image placeholder and USER/ASSISTANT turns included). */
  prompt: string;
  /** The gold word as the authors compare it: answer[0] of the prompt file ("On", "Left"), or "Yes" / "No" for VSR. */
  gold: string;
  /**
   * Candidate answers, lowercase: the question's "Answer with" words, plus the gold word at the end where the
   * question does not list it (goldListed false). `answer` (lowercase `gold`) is one of them.
   */
  options: string[];
  /** The same candidates as the model writes them ("Left", "On", "Yes"): the continuations to score by likelihood. */
  candidates: string[];
  /** Position of the gold answer in `options` / `candidates`. */
  goldIndex: number;
  /** Whether the question lists the gold word among its options (false for one VG_QA_two_obj prompt). */
  goldListed: boolean;
  /** What'sUp subsets: the annotation's caption options, correct first. */
  captions?: string[];
  /** VSR: the label (true = the caption holds). */
  label?: boolean;
}

// ---------------------------------------------------------------------------------------------------------------
// Parsing helpers (the conventions of dataset.ts: one-line errors "file:line: message")

class LineError extends Error {
  constructor(
    readonly line: number,
    message: string,
  ) {
    super(message);
  }
}

function withSource<T>(source: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof LineError) throw new Error(`${source}:${e.line}: ${e.message}`);
    throw e;
  }
}

function jsonLines(text: string): { line: number; value: unknown }[] {
  const out: { line: number; value: unknown }[] = [];
  text
    .replace(/^\uFEFF/, '')
    .split(/\r?\n/)
    .forEach((raw, i) => {
      if (raw.trim() === '') return;
      try {
        out.push({ line: i + 1, value: JSON.parse(raw) });
      } catch (e) {
        throw new LineError(i + 1, `invalid JSON (${(e as Error).message})`);
      }
    });
  return out;
}

function asObject(v: unknown, line: number, what: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new LineError(line, `${what} must be a JSON object, got ${describeValue(v)}`);
  return v as Record<string, unknown>;
}

function requireString(o: Record<string, unknown>, key: string, line: number, what = ''): string {
  const v = o[key];
  if (v === undefined) throw new LineError(line, `${what}missing field "${key}"`);
  if (typeof v !== 'string' || v.trim() === '') throw new LineError(line, `${what}field "${key}" must be a non-empty string, got ${describeValue(v)}`);
  return v;
}

/** A JSON array file: its elements with their 1-based lines. */
function jsonArray(text: string, what: string): { line: number; value: unknown }[] {
  const body = text.replace(/^\uFEFF/, '');
  if (body.trim() === '') throw new LineError(1, `empty file: expected a JSON list of ${what}`);
  let data: unknown;
  try {
    data = JSON.parse(body);
  } catch (e) {
    const msg = (e as Error).message;
    const pos = /position (\d+)/.exec(msg);
    throw new LineError(pos ? linesAt(body, [Number(pos[1])])[0]! : 1, `invalid JSON (${msg})`);
  }
  if (!Array.isArray(data)) throw new LineError(1, `expected a JSON list of ${what}, got ${describeValue(data)}`);
  const lines = linesAt(body, arrayElementOffsets(body));
  return data.map((value, i) => ({ line: lines[i] ?? 1, value }));
}

const capitalize = (w: string): string => (w === '' ? w : w[0]!.toUpperCase() + w.slice(1));

// ---------------------------------------------------------------------------------------------------------------
// Prompt JSONL

const TEMPLATE = /^<image>\s*USER:([\s\S]*?)ASSISTANT:\s*$/;

/**
 * The answer words of a question's first "Answer with a, b, c or d." clause, lowercase; [] when there is none. The
 * clause ends at a full stop, ?, ! or line end (two VG_QA_two_obj prompts go on with an "Option ..." line, l.85
 * and l.216; one VG_QA_one_obj prompt ends "bottom..").
 */
export function answerOptions(question: string): string[] {
  const m = /Answer with ([^.?!\n]*)/i.exec(question);
  if (!m) return [];
  const words = m[1]!
    .split(/\s*,\s*|\s+or\s+/i)
    .map((w) => w.replace(/^or\s+/i, '').trim().toLowerCase())
    .filter((w) => w !== '');
  return [...new Set(words)];
}

/** Parses the authors' prompt JSONL (`{id, question, answer: [...]}` per line). `source` names the file in errors. */
export function parseAdaptVisPrompts(text: string, source: string): AdaptVisPromptRecord[] {
  return withSource(source, () => {
    const records: AdaptVisPromptRecord[] = [];
    const ids = new Map<number, number>();
    for (const { line, value } of jsonLines(text)) {
      const o = asObject(value, line, 'line');
      if (!('id' in o)) throw new LineError(line, 'missing field "id"');
      const id = o.id;
      if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) throw new LineError(line, `field "id" must be a non-negative integer, got ${describeValue(id)}`);
      const prompt = requireString(o, 'question', line);
      if (!('answer' in o)) throw new LineError(line, 'missing field "answer"');
      const answer = o.answer;
      if (typeof answer === 'string') {
        throw new LineError(
          line,
          `field "answer" is a string (${describeValue(answer)}), expected a list like ["Left"]; VSR_with_answer.jsonl is not what the authors' VSR path reads: read VSR's test.jsonl (subset "VSR")`,
        );
      }
      if (!Array.isArray(answer) || answer.length === 0 || !answer.every((a) => typeof a === 'string' && a.trim() !== '')) {
        throw new LineError(line, `field "answer" must be a non-empty list of strings, got ${describeValue(answer)}`);
      }
      const m = TEMPLATE.exec(prompt);
      if (!m) throw new LineError(line, `field "question" must be the authors' "<image>\\nUSER: ... ASSISTANT:" text, got ${describeValue(prompt)}`);
      const question = m[1]!.trim();
      if (question === '') throw new LineError(line, 'field "question" has no text between USER: and ASSISTANT:');
      const options = answerOptions(question);
      if (options.length < 2) throw new LineError(line, `the question has no answer list ("Answer with a, b or c."): ${describeValue(question)}`);
      const prev = ids.get(id);
      if (prev !== undefined) throw new LineError(line, `duplicate id ${id} (first on line ${prev})`);
      ids.set(id, line);
      records.push({ id, prompt, question, answers: (answer as string[]).slice(), options, line });
    }
    if (records.length === 0) throw new LineError(1, 'no prompts in the file');
    return records;
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Annotations

/** Where an item's image may be: paths relative to the image root, the first being the authors' layout. */
interface ImageRef {
  /** As written in the file (for URLs and absolute paths: used as is). */
  candidates: string[];
  /** Annotation line and 0-based index, for errors. */
  line: number;
  index: number;
}

interface Annotation {
  image: ImageRef;
  captions?: string[];
  /** VSR only. */
  caption?: string;
  label?: boolean;
}

const isUrl = (p: string): boolean => /^[a-z][a-z0-9+.-]*:\/\//i.test(p) || p.startsWith('data:');
const isAbsolutePath = (p: string): boolean => p.startsWith('/') || /^[A-Za-z]:[\\/]/.test(p);
const basenameOf = (p: string): string => p.slice(Math.max(p.lastIndexOf('/'), p.lastIndexOf('\\')) + 1);

function dirnameOf(p: string): string {
  const i = Math.max(p.lastIndexOf('/'), p.lastIndexOf('\\'));
  if (i < 0) return '.';
  return i === 0 ? '/' : p.slice(0, i);
}

/** Joins a relative path to a folder, resolving "." and ".." (string-only, so parsing needs no node:path). */
function joinPath(dir: string, ref: string): string {
  if (isUrl(ref) || isAbsolutePath(ref)) return ref;
  if (isUrl(dir)) return new URL(ref, dir.endsWith('/') ? dir : `${dir}/`).href;
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

function imageId(v: unknown, line: number, index: number): string {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return String(v);
  if (typeof v === 'string' && /^\d+$/.test(v)) return v;
  throw new LineError(line, `item ${index}: the image id (first element) must be a non-negative integer, got ${describeValue(v)}`);
}

function parseAnnotations(layout: Layout, text: string): Annotation[] {
  if (layout === 'vsr') return parseVsrLines(text);
  if (layout === 'controlled') {
    return jsonArray(text, 'What\'sUp items {"image_path", "caption_options"}').map(({ line, value }, index) => {
      if (Array.isArray(value)) throw new LineError(line, `item ${index}: a list (the COCO-QA / VG-QA [image_id, caption, distractor] layout); expected {"image_path", "caption_options"}`);
      const o = asObject(value, line, `item ${index}`);
      const what = `item ${index}: `;
      const path = requireString(o, 'image_path', line, what);
      const captions = o.caption_options;
      if (captions === undefined) throw new LineError(line, `${what}missing field "caption_options"`);
      if (!Array.isArray(captions) || captions.length < 2 || !captions.every((c) => typeof c === 'string' && c.trim() !== '')) {
        throw new LineError(line, `${what}field "caption_options" must be a list of at least 2 non-empty strings, got ${describeValue(captions)}`);
      }
      // The authors open image_path relative to the checkout root, the JSON lying in data/ (aro_datasets.py l.243).
      const candidates = [`../${path}`, path, `images/${path}`, `images/${basenameOf(path)}`, basenameOf(path)];
      return { image: { candidates: isUrl(path) || isAbsolutePath(path) ? [path] : candidates, line, index }, captions: (captions as string[]).slice() };
    });
  }
  const folder = layout === 'coco' ? 'val2017' : 'vg_images';
  return jsonArray(text, '[image_id, correct caption, distractor] triples').map(({ line, value }, index) => {
    if (!Array.isArray(value)) {
      const hint = value !== null && typeof value === 'object' && 'image_path' in value ? ' (this is the Controlled_Images layout)' : '';
      throw new LineError(line, `item ${index}: expected a list [image_id, correct caption, distractor], got ${describeValue(value)}${hint}`);
    }
    if (value.length < 3) throw new LineError(line, `item ${index}: expected [image_id, correct caption, distractor], got ${value.length} element${value.length === 1 ? '' : 's'}`);
    const id = imageId(value[0], line, index);
    const captions = value.slice(1);
    if (!captions.every((c) => typeof c === 'string' && c.trim() !== '')) throw new LineError(line, `item ${index}: the captions must be non-empty strings, got ${describeValue(captions)}`);
    // aro_datasets.py l.402: val2017/{str(id).zfill(12)}.jpg; l.529: vg_images/{id}.jpg.
    const file = layout === 'coco' ? `${id.padStart(12, '0')}.jpg` : `${id}.jpg`;
    return { image: { candidates: [`${folder}/${file}`, `images/${file}`, file], line, index }, captions: captions as string[] };
  });
}

function parseVsrLines(text: string): Annotation[] {
  return jsonLines(text).map(({ line, value }, index) => {
    const o = asObject(value, line, 'line');
    if ('question' in o && !('caption' in o)) {
      throw new LineError(line, 'a prompt line ("question"), expected a VSR line {"image_link", "caption", "label"}: the authors\' VSR path reads cambridgeltl/vsr_zeroshot test.jsonl');
    }
    const caption = requireString(o, 'caption', line).trim();
    if (!('label' in o)) throw new LineError(line, 'missing field "label"');
    const label = o.label;
    let truth: boolean;
    if (label === 1 || label === true) truth = true;
    else if (label === 0 || label === false) truth = false;
    else throw new LineError(line, `bad label ${describeValue(label)}: expected 0 or 1`);
    const candidates: string[] = [];
    if (o.image_link !== undefined) {
      const link = requireString(o, 'image_link', line);
      // aro_datasets.py l.78: re.search(r"\.org/(.*)", image_link).group(1), opened under data/ (l.103).
      const m = /\.org\/(.*)/.exec(link);
      if (!m || m[1]!.trim() === '') throw new LineError(line, `field "image_link" ${describeValue(link)} has no path after ".org/"`);
      candidates.push(m[1]!, `images/${basenameOf(m[1]!)}`, basenameOf(m[1]!));
    }
    if (o.image !== undefined || candidates.length === 0) {
      if (o.image === undefined) throw new LineError(line, 'missing field "image_link" (or "image")');
      const image = requireString(o, 'image', line);
      if (isUrl(image) || isAbsolutePath(image)) candidates.push(image);
      else for (const c of [image, `images/${image}`, `train2017/${image}`, `val2017/${image}`]) if (!candidates.includes(c)) candidates.push(c);
    }
    return { image: { candidates, line, index }, caption, label: truth };
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Items

export interface ParseAdaptVisInput {
  /** The prompt JSONL (not for VSR). */
  prompts?: { text: string; source: string };
  /** The annotation file: What'sUp JSON or VSR test.jsonl. */
  annotations: { text: string; source: string };
  /** Folder images are relative to (the authors' `data/`); default the annotation file's folder. */
  imageRoot?: string;
  /**
   * Picks an item's image among the candidate locations (absolute or joined to imageRoot, the authors' layout
   * first). Default: the first. readAdaptVis passes the first that exists.
   */
  resolveImage?: (candidates: string[], where: { source: string; line: number; index: number }) => string;
}

/** Whole-word occurrences of the options in a caption (for the alignment check of prompts against annotations). */
function optionsInCaption(caption: string, options: readonly string[]): string[] {
  const words = new Set(caption.toLowerCase().split(/[^a-z-]+/));
  return options.filter((o) => o.split(/\s+/).every((w) => words.has(w)));
}

/**
 * Builds the items of one subset from file texts (pure). Prompt line i goes with annotation item i; the counts must
 * agree, and where the correct caption names exactly one of the options it should be the gold word: more than 10%
 * of such items disagreeing is an error (the files do not belong together).
 */
export function parseAdaptVis(subset: AdaptVisSubset, input: ParseAdaptVisInput): AdaptVisItem[] {
  const info = subsetInfo(subset);
  const annSource = input.annotations.source;
  const annotations = withSource(annSource, () => parseAnnotations(info.layout, input.annotations.text));
  if (annotations.length === 0) throw new Error(`${annSource}: no items in the file`);
  const root = input.imageRoot ?? dirnameOf(annSource);
  const resolve = input.resolveImage ?? ((candidates: string[]): string => candidates[0]!);
  const imageOf = (a: Annotation): string => resolve(a.image.candidates.map((c) => joinPath(root, c)), { source: annSource, line: a.image.line, index: a.image.index });
  const fn = (objects: 'one' | 'two'): QuestionFunction => (objects === 'one' ? 'spatial_perception' : 'relational_reasoning');

  if (info.layout === 'vsr') {
    if (input.prompts !== undefined) throw new Error(`VSR has no prompt file: the authors build its prompt from each caption (llava15.py l.499); pass only the annotations (test.jsonl)`);
    return annotations.map((a, index) => {
      const gold = a.label ? 'Yes' : 'No';
      return {
        id: `VSR-${index}`,
        imagePath: imageOf(a),
        question: `${ADAPTVIS_VSR_QUESTION} ${a.caption!}`,
        answer: gold.toLowerCase(),
        type: 'vsr',
        function: 'relational_reasoning',
        options: ['yes', 'no'],
        subset,
        index,
        prompt: `${ADAPTVIS_VSR_PROMPT_PREFIX}${a.caption!}${ADAPTVIS_VSR_PROMPT_SUFFIX}`,
        gold,
        candidates: ['Yes', 'No'],
        goldIndex: a.label ? 0 : 1,
        goldListed: true,
        label: a.label!,
      } satisfies AdaptVisItem;
    });
  }

  if (input.prompts === undefined) throw new Error(`${subset} needs its prompt file (prompts/${info.promptFile})`);
  const promptSource = input.prompts.source;
  const records = parseAdaptVisPrompts(input.prompts.text, promptSource);
  if (records.length !== annotations.length) {
    throw new Error(`${promptSource} has ${records.length} prompts but ${annSource} has ${annotations.length} items: line i of the prompts goes with item i, the files must belong together`);
  }
  const objects = subset.includes('one_obj') ? 'one' : 'two';
  const items = records.map((r, index) => {
    const a = annotations[index]!;
    const gold = r.answers[0]!.trim();
    const answer = gold.toLowerCase();
    const goldListed = r.options.includes(answer);
    const options = goldListed ? r.options.slice() : [...r.options, answer];
    return {
      id: `${subset}-${r.id}`,
      imagePath: imageOf(a),
      question: r.question,
      answer,
      type: 'whatsup',
      function: fn(objects),
      options,
      subset,
      index,
      prompt: r.prompt,
      gold,
      candidates: options.map(capitalize),
      goldIndex: options.indexOf(answer),
      goldListed,
      captions: a.captions!.slice(),
    } satisfies AdaptVisItem;
  });
  // Do the files belong together? Where the correct caption names exactly one of the options, it should be the
  // gold word. A few disagreements are tolerated (annotation wording), a pairing of the wrong files or orders is not.
  let checked = 0;
  const disagree: { item: AdaptVisItem; said: string; line: number }[] = [];
  items.forEach((item, i) => {
    const named = optionsInCaption(item.captions![0]!, item.options);
    if (named.length !== 1) return;
    checked++;
    if (named[0] !== item.answer) disagree.push({ item, said: named[0]!, line: records[i]!.line });
  });
  if (disagree.length > 0 && disagree.length > 0.1 * checked) {
    const { item, said, line } = disagree[0]!;
    throw new Error(
      `${promptSource}:${line}: answer ${describeValue(item.gold)} disagrees with item ${item.index} of ${annSource} (line ${annotations[item.index]!.image.line}), whose correct caption ${describeValue(item.captions![0])} says "${said}"; ${disagree.length} of ${checked} checked items disagree: are the files of the same subset, in the same order?`,
    );
  }
  return items;
}

export interface ReadAdaptVisOptions {
  /** A folder laid out as the authors' checkout (prompts/, data/); the default files are found under it (default "."). */
  root?: string;
  /** The prompt JSONL (default `<root>/prompts/<subset>_with_answer_{four,six}_options.jsonl`; not for VSR). */
  prompts?: string;
  /** The annotation file (default `<root>/data/<file>`: controlled_images_dataset.json, ..., test.jsonl for VSR). */
  annotations?: string;
  /** Folder images are relative to (the authors' `data/`); default the annotation file's folder. */
  imageRoot?: string;
  /** Fail when an image file is missing (default true); otherwise the authors' location is kept. */
  checkImages?: boolean;
}

async function readText(path: string): Promise<string> {
  const fs = await import('node:fs/promises');
  try {
    return await fs.readFile(path, 'utf8');
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ENOENT') throw new Error(`cannot read ${path}: file not found`);
    if (code === 'EISDIR') throw new Error(`cannot read ${path}: is a directory`);
    throw new Error(`cannot read ${path}: ${(e as Error).message}`);
  }
}

/**
 * Reads one subset as the authors run it (Node): the prompt JSONL with its annotation file (or VSR's test.jsonl),
 * items in dataset order with absolute image paths. Each image is looked for at the authors' location under the
 * image root first, then in an images/ folder and beside the file; a missing image is an error that names it.
 */
export async function readAdaptVis(subset: AdaptVisSubset, opts: ReadAdaptVisOptions = {}): Promise<AdaptVisItem[]> {
  const info = subsetInfo(subset);
  const nodePath = await import('node:path');
  const fsSync = await import('node:fs');
  const root = opts.root ?? '.';
  const defaults = adaptVisFiles(subset);
  const annotations = nodePath.resolve(opts.annotations ?? nodePath.join(root, defaults.annotations));
  let prompts: string | undefined;
  if (info.layout === 'vsr') {
    if (opts.prompts !== undefined) throw new Error(`VSR has no prompt file: the authors build its prompt from each caption (llava15.py l.499); pass only the annotations (test.jsonl)`);
  } else {
    prompts = nodePath.resolve(opts.prompts ?? nodePath.join(root, defaults.prompts!));
  }
  const promptText = prompts !== undefined ? await readText(prompts) : undefined;
  const annotationText = await readText(annotations);
  const check = opts.checkImages ?? true;
  const input: ParseAdaptVisInput = {
    annotations: { text: annotationText, source: annotations },
    imageRoot: nodePath.resolve(opts.imageRoot ?? nodePath.dirname(annotations)),
    resolveImage: (candidates, where) => {
      const found = candidates.find((c) => isUrl(c) || fsSync.existsSync(c));
      if (found !== undefined) return found;
      if (check) {
        const others = candidates.slice(1);
        throw new Error(`${where.source}:${where.line}: item ${where.index}: image not found: ${candidates[0]}${others.length > 0 ? ` (also looked for ${others.join(', ')})` : ''}`);
      }
      return candidates[0]!;
    },
  };
  if (prompts !== undefined) input.prompts = { text: promptText!, source: prompts };
  return parseAdaptVis(subset, input);
}

// ---------------------------------------------------------------------------------------------------------------
// Scoring

/**
 * The authors' correctness of a generated text (see the file header):
 * * What'sUp subsets (llava15.py l.423-424): `(gold in gen or gold.lower() in gen.lower()) and not
 *   (gold.lower() == 'on' and 'front' in gen.strip().lower())`, a case-insensitive substring test.
 * * VSR (llava15.py l.537-543): 'Yes' in gen for label 1, 'No' in gen for label 0 (case-sensitive substrings).
 */
export function isCorrectAdaptVis(prediction: string, item: Pick<AdaptVisItem, 'subset' | 'gold'>): boolean {
  const gen = prediction;
  const gold = item.gold;
  if (item.subset === 'VSR') {
    if (gold !== 'Yes' && gold !== 'No') throw new Error(`VSR gold must be "Yes" or "No", got ${describeValue(gold)}`);
    return gen.includes(gold);
  }
  if (gold === '') throw new Error('empty gold answer');
  // Python's str.lower() and String.toLowerCase() agree on the ASCII answer words.
  const contains = gen.includes(gold) || gen.toLowerCase().includes(gold.toLowerCase());
  return contains && !(gold.toLowerCase() === 'on' && gen.trim().toLowerCase().includes('front'));
}

export interface VsrMetrics {
  total: number;
  tp: number;
  tn: number;
  fp: number;
  fn: number;
  /** (TP + TN) / N: the paper's "VSR Exact-Match" column [INFER]. */
  accuracy: number;
  /** The authors' "precision": TP / (TP + FN), i.e. the true-positive rate (llava15.py l.560). NaN without positives. */
  precision: number;
  /** The authors' "recall": TN / (TN + FP), i.e. the true-negative rate (l.561). NaN without negatives. */
  recall: number;
  /** Harmonic mean of the two (l.562): the paper's "VSR F1" column [INFER]. NaN when undefined. */
  f1: number;
}

/** The authors' VSR counts and metrics over generated texts, in item order (their label-1 / label-0 tests). */
export function vsrMetrics(predictions: readonly string[], items: readonly Pick<AdaptVisItem, 'subset' | 'gold' | 'id'>[]): VsrMetrics {
  if (predictions.length !== items.length) throw new Error(`vsrMetrics: ${predictions.length} predictions for ${items.length} items`);
  let tp = 0;
  let tn = 0;
  let fp = 0;
  let fn = 0;
  items.forEach((item, i) => {
    if (item.subset !== 'VSR') throw new Error(`vsrMetrics: item ${item.id} is not a VSR item (${item.subset})`);
    const ok = isCorrectAdaptVis(predictions[i]!, item);
    if (item.gold === 'Yes') ok ? tp++ : fn++;
    else ok ? tn++ : fp++;
  });
  const total = items.length;
  const precision = tp + fn > 0 ? tp / (tp + fn) : NaN;
  const recall = tn + fp > 0 ? tn / (tn + fp) : NaN;
  const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : NaN;
  return { total, tp, tn, fp, fn, accuracy: total > 0 ? (tp + tn) / total : 0, precision, recall, f1 };
}

/**
 * Option-likelihood scoring: the index of the highest log-likelihood (the first on ties, as numpy's argmax).
 * -Infinity is allowed; NaN is an error.
 */
export function pickOption(logLikelihoods: readonly number[]): number {
  if (logLikelihoods.length === 0) throw new Error('pickOption: no options');
  let best = 0;
  logLikelihoods.forEach((v, i) => {
    if (Number.isNaN(v)) throw new Error(`pickOption: log-likelihood ${i} is NaN`);
    if (v > logLikelihoods[best]!) best = i;
  });
  return best;
}

/**
 * Whether the candidate with the highest log-likelihood (one value per `item.candidates`, e.g. the summed token
 * log-probabilities of each candidate after the prompt) is the gold answer.
 */
export function isCorrectByLikelihood(logLikelihoods: readonly number[], item: Pick<AdaptVisItem, 'id' | 'candidates' | 'goldIndex'>): boolean {
  if (logLikelihoods.length !== item.candidates.length) {
    throw new Error(`item ${item.id}: ${logLikelihoods.length} log-likelihoods for ${item.candidates.length} candidates (${item.candidates.join(', ')})`);
  }
  return pickOption(logLikelihoods) === item.goldIndex;
}

// ---------------------------------------------------------------------------------------------------------------
// The tuning / test split (CPython's random.sample, python-random.ts) and the pick of the best setting

export interface SplitOptions {
  /** Share of the items in the tuning split (default 0.2, as the authors). The count is trunc(fraction * n). */
  fraction?: number;
  /** Python `random.seed` value (default 1, the authors' `--seed`). */
  seed?: number;
}

export interface Split<T> {
  /** The sampled `fraction` (the authors' default run): choose alpha / threshold here. */
  tune: T[];
  /** The rest (the authors' TEST_MODE=True run): report here. */
  test: T[];
  /** Positions in the input, ascending. */
  tuneIndices: number[];
  testIndices: number[];
}

/**
 * The authors' 20% / 80% split (main_aro.py l.50-63): `sorted(random.sample(range(n), int(fraction * n)))` after
 * `random.seed(seed)` is the tuning part, the rest the test part, both in input order. Deterministic; with the
 * full dataset in file order and seed 1 it gives the authors' indices. Items must be the whole subset, unfiltered.
 */
export function splitItems<T>(items: readonly T[], opts: SplitOptions = {}): Split<T> {
  const fraction = opts.fraction ?? 0.2;
  const seed = opts.seed ?? 1;
  if (!(fraction >= 0 && fraction <= 1)) throw new Error(`split fraction must be in [0, 1], got ${fraction}`);
  if (!Number.isSafeInteger(seed)) throw new Error(`split seed must be an integer, got ${seed}`);
  const n = items.length;
  const k = Math.trunc(fraction * n); // Python int(0.2 * total_data_count): the same double product, truncated
  const tuneIndices = new PythonRandom(seed).sampleRange(n, k).sort((a, b) => a - b);
  const inTune = new Uint8Array(n);
  for (const i of tuneIndices) inTune[i] = 1;
  const testIndices: number[] = [];
  for (let i = 0; i < n; i++) if (!inTune[i]) testIndices.push(i);
  return { tune: tuneIndices.map((i) => items[i]!), test: testIndices.map((i) => items[i]!), tuneIndices, testIndices };
}

/** The candidate with the highest accuracy (the first on ties): alpha / threshold selection on the tuning split. */
export function pickBest<T extends { accuracy: number }>(candidates: readonly T[]): T {
  if (candidates.length === 0) throw new Error('pickBest: no candidates');
  let best = candidates[0]!;
  for (const c of candidates) {
    if (Number.isNaN(c.accuracy)) throw new Error('pickBest: accuracy is NaN');
    if (c.accuracy > best.accuracy) best = c;
  }
  return best;
}

// ---------------------------------------------------------------------------------------------------------------
// Results table

export interface AdaptVisResult {
  subset: AdaptVisSubset;
  /** Accuracies in [0, 1], on the reported (80%) split. Plain model. */
  baseline: number;
  /** ScalingVis at the alpha chosen on the tuning (20%) split. */
  scalingVis?: { alpha: number; accuracy: number };
  /** AdaptVis at the threshold and alphas chosen on the tuning split. */
  adaptVis?: { threshold: number; alphaLow: number; alphaHigh: number; accuracy: number };
  /** VSR only: the authors' "F1" (vsrMetrics) of each method, in [0, 1]. */
  f1?: { baseline?: number; scalingVis?: number; adaptVis?: number };
}

export interface ResultsTableOptions {
  /** Name of the baseline row (default "model"), e.g. "LLaVA-1.5". */
  model?: string;
  /** Decimals of the percentages (default 1, as the paper). */
  digits?: number;
}

/**
 * A markdown table in the shape of the paper's (rows: the model, +ScalingVis, +AdaptVis; columns: Cont_A, Cont_B,
 * COCO_1, COCO_2, VG_1, VG_2, VSR EM, VSR F1, those given, in that order; percentages), then a table of the
 * settings chosen on the tuning split. Missing entries are "-".
 */
export function resultsTable(results: readonly AdaptVisResult[], opts: ResultsTableOptions = {}): string {
  const digits = opts.digits ?? 1;
  if (!Number.isInteger(digits) || digits < 0 || digits > 6) throw new Error(`digits must be an integer in [0, 6], got ${digits}`);
  const bySubset = new Map<AdaptVisSubset, AdaptVisResult>();
  for (const r of results) {
    subsetInfo(r.subset);
    if (bySubset.has(r.subset)) throw new Error(`resultsTable: ${r.subset} given twice`);
    const check = (v: number | undefined, what: string): void => {
      if (v !== undefined && !(v >= 0 && v <= 1)) throw new Error(`resultsTable: ${r.subset} ${what} must be an accuracy in [0, 1], got ${v}`);
    };
    check(r.baseline, 'baseline');
    check(r.scalingVis?.accuracy, 'ScalingVis accuracy');
    check(r.adaptVis?.accuracy, 'AdaptVis accuracy');
    if (r.f1 !== undefined && r.subset !== 'VSR') throw new Error(`resultsTable: f1 is for VSR only, given for ${r.subset}`);
    bySubset.set(r.subset, r);
  }
  if (bySubset.size === 0) throw new Error('resultsTable: no results');
  const subsets = ADAPTVIS_SUBSETS.filter((s) => bySubset.has(s));
  const pct = (v: number | undefined): string => (v === undefined || !Number.isFinite(v) ? '-' : (100 * v).toFixed(digits));
  const num = (v: number): string => String(Number(v.toFixed(4)));
  const header: string[] = [];
  const rows: string[][] = [[opts.model ?? 'model'], ['+ScalingVis'], ['+AdaptVis']];
  const settings: string[][] = [['ScalingVis alpha'], ['AdaptVis threshold, alpha_low, alpha_high']];
  for (const s of subsets) {
    const r = bySubset.get(s)!;
    const label = SUBSETS[s].label;
    const sv = r.scalingVis ? num(r.scalingVis.alpha) : '-';
    const av = r.adaptVis ? `${num(r.adaptVis.threshold)}, ${num(r.adaptVis.alphaLow)}, ${num(r.adaptVis.alphaHigh)}` : '-';
    header.push(s === 'VSR' ? 'VSR EM' : label);
    rows[0]!.push(pct(r.baseline));
    rows[1]!.push(pct(r.scalingVis?.accuracy));
    rows[2]!.push(pct(r.adaptVis?.accuracy));
    settings[0]!.push(sv);
    settings[1]!.push(av);
    if (s === 'VSR') {
      header.push('VSR F1');
      rows[0]!.push(pct(r.f1?.baseline));
      rows[1]!.push(pct(r.f1?.scalingVis));
      rows[2]!.push(pct(r.f1?.adaptVis));
      settings[0]!.push(sv);
      settings[1]!.push(av);
    }
  }
  const table = (head: string[], body: string[][]): string => {
    const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`];
    for (const row of body) lines.push(`| ${row.join(' | ')} |`);
    return lines.join('\n');
  };
  return [
    table(['', ...header], rows),
    '',
    'Accuracy (%) on the 80% split; settings chosen on the 20% split:',
    '',
    table(['setting', ...header], settings),
    '',
  ].join('\n');
}
