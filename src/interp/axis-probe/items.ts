// Vision-token enhancement (see ../axis-probe.ts for the method and where it differs from the authors' code).
// Items: the questions with subject / object boxes, their prompts, and the readers of box files.

import { readQuestions } from '../../eval/dataset.js';
import type { Relation } from '../../eval/synthetic.js';
import type { Box } from '../image-boxes.js';
import type { RgbImage } from '../../io/image.js';

export type { Box } from '../image-boxes.js';

export type Axis = 'horizontal' | 'vertical';
export const AXES: readonly Axis[] = ['horizontal', 'vertical'];
/** Class 0 and class 1 of each axis's probe (the authors' LABELS_BY_AXIS). */
export const AXIS_LABELS: Readonly<Record<Axis, readonly [Relation, Relation]>> = { horizontal: ['left', 'right'], vertical: ['above', 'below'] };
export const axisOf = (r: Relation): Axis => (r === 'left' || r === 'right' ? 'horizontal' : 'vertical');

/** [x0, y0, x1, y1] in pixels of the image file (x right, y down). */

/** One two-object spatial question: "the subject is <relation> the object". */
export interface AxisItem {
  id: string;
  /** Image file (or URL) the boxes refer to. */
  imagePath: string;
  subject: string;
  object: string;
  relation: Relation;
  subjectBox: Box;
  objectBox: Box;
}

/** Neutral prompt the features are read with (the authors' `build_dummy_inputs`). */
export const NEUTRAL_PROMPT = 'Describe the image.';

/** The two option orders: the axis's labels in order ("left or right") and reversed ("right or left"). */
export type Listing = 'lr' | 'rl';
export const LISTINGS: readonly Listing[] = ['lr', 'rl'];

/**
 * Question wordings: `synthetic` keeps the synthetic scenes' question (src/eval/synthetic.ts) with the authors'
 * one-word answer instruction; `anchor` is the authors' Qwen2-VL / Pixtral prompt and `direct` their Gemma-3 one
 * (coco_amplification/src/prompts.py `relative_prompt_text`, `direct_prompt_text`).
 */
export const PROMPT_STYLES = ['synthetic', 'anchor', 'direct'] as const;
export type PromptStyle = (typeof PROMPT_STYLES)[number];

/** The question of one listing. */
export function listingPrompt(item: Pick<AxisItem, 'subject' | 'object' | 'relation'>, listing: Listing, style: PromptStyle = 'synthetic'): string {
  const axis = axisOf(item.relation);
  const [a, b] = listing === 'lr' ? AXIS_LABELS[axis] : [AXIS_LABELS[axis][1], AXIS_LABELS[axis][0]];
  const { subject: s, object: o } = item;
  switch (style) {
    case 'synthetic':
      return `Where is the ${s} in relation to the ${o}? Answer with one word: ${a} or ${b}.`;
    case 'anchor':
      return axis === 'horizontal'
        ? `Using the ${o} as the reference point, which side is the ${s} on? Answer with one word: ${a} or ${b}.`
        : `Using the ${o} as the reference point, where is the ${s} located? Answer with one word: ${a} or ${b}.`;
    case 'direct':
      return axis === 'horizontal'
        ? `Is the ${s} to the ${a} or to the ${b} of the ${o}? Answer with one word.`
        : `Is the ${s} ${a} or ${b} the ${o}? Answer with one word.`;
  }
}

const RELATION_SET = new Set<string>(['left', 'right', 'above', 'below']);
/** The synthetic scenes' spatial question (src/eval/synthetic.ts `sceneQuestions`, type "spatial"). */
const SYNTHETIC_SPATIAL = /^Where is the (.+?) in relation to the (.+?)\?/;

interface SceneRecord {
  id: string;
  objects: { name: string; x: number; y: number; d: number }[];
}

/** One line of a JSONL file as a JSON object; `where` (file:line) starts the error. */
function objectLine(line: string, where: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (e) {
    throw new Error(`${where}: invalid JSON (${(e as Error).message})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${where}: expected a JSON object`);
  return v as Record<string, unknown>;
}

function parseSceneLine(line: string, where: string): SceneRecord {
  const o = objectLine(line, where);
  if (typeof o.id !== 'string') throw new Error(`${where}: missing field "id"`);
  if (!Array.isArray(o.objects)) throw new Error(`${where}: missing field "objects" (a list)`);
  const objects = o.objects.map((x, i) => {
    const ob = x as Record<string, unknown>;
    const num = (k: string) => {
      if (typeof ob?.[k] !== 'number' || !Number.isFinite(ob[k])) throw new Error(`${where}: objects[${i}].${k} must be a number`);
      return ob[k] as number;
    };
    if (typeof ob?.colour !== 'string' || typeof ob?.shape !== 'string') throw new Error(`${where}: objects[${i}] needs "colour" and "shape"`);
    return { name: `${ob.colour} ${ob.shape}`, x: num('x'), y: num('y'), d: num('d') };
  });
  return { id: o.id, objects };
}

function boxArg(v: unknown, where: string): Box {
  if (!Array.isArray(v) || v.length !== 4 || v.some((x) => typeof x !== 'number' || !Number.isFinite(x))) {
    throw new Error(`${where} must be [x0, y0, x1, y1] (4 numbers, pixels of the image)`);
  }
  const b = v as Box;
  if (!(b[2] > b[0] && b[3] > b[1])) throw new Error(`${where} [${b.join(', ')}] is empty: need x1 > x0 and y1 > y0`);
  return b;
}

const isUrl = (p: string): boolean => /^[a-z][a-z0-9+.-]*:\/\//i.test(p) || p.startsWith('data:');

/**
 * Items of a JSONL file with boxes per example, one object per line:
 *   {"id": "q1", "image": "images/a.png", "subject": "red circle", "object": "blue square", "relation": "left",
 *    "subject_box": [x0, y0, x1, y1], "object_box": [x0, y0, x1, y1]}
 * (`id` optional: "line-<n>"; `image` relative to the file's folder; boxes in pixels of the image file).
 */
export function parseBoxItems(text: string, source: string, resolveImage: (image: string) => string): AxisItem[] {
  const items: AxisItem[] = [];
  const seen = new Set<string>();
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '') return;
    const where = `${source}:${i + 1}`;
    const o = objectLine(line, where);
    for (const k of ['image', 'subject', 'object', 'relation']) {
      if (typeof o[k] !== 'string' || (o[k] as string).trim() === '') throw new Error(`${where}: missing field "${k}" (a string)`);
    }
    const relation = (o.relation as string).toLowerCase();
    if (!RELATION_SET.has(relation)) throw new Error(`${where}: "relation" must be left, right, above or below, got ${JSON.stringify(o.relation)}`);
    const id = o.id === undefined ? `line-${i + 1}` : String(o.id);
    if (seen.has(id)) throw new Error(`${where}: duplicate id ${JSON.stringify(id)}`);
    seen.add(id);
    items.push({
      id,
      imagePath: resolveImage(o.image as string),
      subject: o.subject as string,
      object: o.object as string,
      relation: relation as Relation,
      subjectBox: boxArg(o.subject_box, `${where}: "subject_box"`),
      objectBox: boxArg(o.object_box, `${where}: "object_box"`),
    });
  });
  return items;
}

export interface AxisDataSummary {
  items: AxisItem[];
  /** Questions of the file that are not two-object left / right / above / below questions (synthetic sets). */
  ignored: number;
  /** The files read. */
  questions: string;
  scenes: string | null;
}

/**
 * Reads spatial items with boxes: a synthetic dataset folder (questions.jsonl + scenes.jsonl, as
 * scripts/make-synthetic.ts writes), its questions.jsonl (scenes.jsonl beside it, or `scenesPath`), or a JSONL file
 * with boxes per example (parseBoxItems; detected by a "subject_box" field on the first line). From synthetic sets
 * the "spatial" questions are used ("Where is the A in relation to the B?", answer the relation), the boxes those
 * of the named objects in the scene file. Errors name the file (and line).
 */
export async function readAxisItems(path: string, scenesPath?: string): Promise<AxisDataSummary> {
  const fs = await import('node:fs/promises');
  const nodePath = await import('node:path');
  const statOf = async (p: string) => fs.stat(p).catch(() => null);
  const st = await statOf(path);
  if (!st) throw new Error(`cannot read data ${path}: no such file or folder`);
  let questions = path;
  if (st.isDirectory()) {
    questions = nodePath.join(path, 'questions.jsonl');
    if (!(await statOf(questions))?.isFile()) throw new Error(`data folder ${path} has no questions.jsonl; give the folder scripts/make-synthetic.ts wrote, or a JSONL file`);
  }
  const text = await fs.readFile(questions, 'utf8');
  const lines = text.split(/\r?\n/);
  const firstIndex = lines.findIndex((l) => l.trim() !== '');
  if (firstIndex < 0) throw new Error(`data file ${questions} is empty`);
  const dir = nodePath.dirname(nodePath.resolve(questions));
  const resolveImage = (image: string) => (isUrl(image) || nodePath.isAbsolute(image) ? image : nodePath.join(dir, image));
  let first: unknown;
  try {
    first = JSON.parse(lines[firstIndex]!);
  } catch (e) {
    throw new Error(`${questions}:${firstIndex + 1}: invalid JSON (${(e as Error).message})`);
  }
  if (first !== null && typeof first === 'object' && 'subject_box' in first) {
    if (scenesPath !== undefined) throw new Error(`${questions} gives boxes per example; --scenes is only for synthetic question files`);
    return { items: parseBoxItems(text, questions, resolveImage), ignored: 0, questions, scenes: null };
  }

  const scenesFile = scenesPath ?? nodePath.join(dir, 'scenes.jsonl');
  if (!(await statOf(scenesFile))?.isFile()) {
    throw new Error(
      scenesPath !== undefined
        ? `cannot read scene file ${scenesFile}: no such file`
        : `no scenes.jsonl beside ${questions} (the object boxes); give --scenes FILE, or a JSONL with "subject_box" / "object_box" per example`,
    );
  }
  const scenes = new Map<string, SceneRecord>();
  (await fs.readFile(scenesFile, 'utf8')).split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '') return;
    const s = parseSceneLine(line, `${scenesFile}:${i + 1}`);
    scenes.set(s.id, s);
  });
  const all = await readQuestions(questions, { includeSubQuestions: false });
  const items: AxisItem[] = [];
  let ignored = 0;
  for (const q of all) {
    const m = SYNTHETIC_SPATIAL.exec(q.question);
    const relation = q.answer.trim().toLowerCase();
    if (q.type !== 'spatial' || !m || !RELATION_SET.has(relation)) {
      ignored++;
      continue;
    }
    const base = q.imagePath.slice(Math.max(q.imagePath.lastIndexOf('/'), q.imagePath.lastIndexOf('\\')) + 1).replace(/\.[^.]*$/, '');
    const scene = scenes.get(base) ?? scenes.get(q.id.split('-')[0]!);
    if (!scene) throw new Error(`question ${q.id}: no scene "${base}" in ${scenesFile}`);
    const box = (name: string): Box => {
      const o = scene.objects.find((x) => x.name === name);
      if (!o) throw new Error(`question ${q.id}: scene ${scene.id} in ${scenesFile} has no ${name}`);
      return [o.x, o.y, o.x + o.d, o.y + o.d];
    };
    items.push({ id: q.id, imagePath: q.imagePath, subject: m[1]!, object: m[2]!, relation: relation as Relation, subjectBox: box(m[1]!), objectBox: box(m[2]!) });
  }
  return { items, ignored, questions, scenes: scenesFile };
}

/** An item's image through `load`, a failure named by the item's question. */
export async function loadItemImage(item: AxisItem, load: (path: string) => Promise<RgbImage>): Promise<RgbImage> {
  try {
    return await load(item.imagePath);
  } catch (e) {
    throw new Error(`question ${item.id}: ${(e as Error).message}`);
  }
}
