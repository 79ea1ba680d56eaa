// The heads a model is known to have (a model organism's planted heads): `known_heads.json` in the model folder,
// written by the trainer (scripts/train_organism.py) with what each supervised head was trained to do. Head-finding
// methods are scored against it, so the answer is declared by whoever planted it, never hard-coded by the judge.
//
//   {"source": "...", "heads": [{"tower": "text", "layer": 1, "head": 0, "role": "attend_first_named_object",
//     "function": "spatial", "trained_to": "...", "query": "last_prompt_token", "question_types": [...], ...}]}

import type { ModelDims } from '../spec/spec.js';

export interface KnownHead {
  tower: 'text' | 'vision';
  layer: number;
  head: number;
  /** Short name of the job, e.g. "attend_first_named_object". */
  role: string;
  /** The question function / type the head serves (e.g. "spatial"). */
  function: string;
  /** Free text: what the training asked of it. */
  trainedTo: string;
  questionTypes: string[];
}

export interface KnownHeads {
  source: string;
  heads: KnownHead[];
}

export const KNOWN_HEADS_FILE = 'known_heads.json';

/** Parses and checks a known_heads.json (against the model's dims when given); errors name the file and field. */
export function parseKnownHeads(json: unknown, source: string, dims?: ModelDims): KnownHeads {
  const fail = (msg: string): never => {
    throw new Error(`${source}: ${msg}`);
  };
  if (typeof json !== 'object' || json === null || Array.isArray(json)) fail('expected an object {"source", "heads": [...]}');
  const o = json as Record<string, unknown>;
  if (!Array.isArray(o.heads)) fail('"heads" must be a list');
  const seen = new Set<string>();
  const heads = (o.heads as unknown[]).map((h, i): KnownHead => {
    const w = `heads[${i}]`;
    if (typeof h !== 'object' || h === null || Array.isArray(h)) fail(`${w} must be an object`);
    const e = h as Record<string, unknown>;
    const tower = e.tower ?? 'text';
    if (tower !== 'text' && tower !== 'vision') fail(`${w}.tower must be "text" or "vision", got ${JSON.stringify(tower)}`);
    for (const k of ['layer', 'head'] as const) {
      if (!Number.isInteger(e[k]) || (e[k] as number) < 0) fail(`${w}.${k} must be a non-negative integer, got ${JSON.stringify(e[k])}`);
    }
    const layer = e.layer as number;
    const head = e.head as number;
    if (dims) {
      const t = dims[tower as 'text' | 'vision'];
      if (layer >= t.layers) fail(`${w}.layer ${layer} does not exist: the ${tower} tower has ${t.layers} layers (0..${t.layers - 1})`);
      if (head >= t.heads) fail(`${w}.head ${head} does not exist: ${tower} layers have ${t.heads} heads (0..${t.heads - 1})`);
    }
    const key = `${tower}:${layer}:${head}`;
    if (seen.has(key)) fail(`${w} names ${tower} L${layer}H${head} again`);
    seen.add(key);
    const str = (k: string): string => {
      const v = e[k];
      if (typeof v !== 'string' || v === '') fail(`${w}.${k} must be a non-empty string, got ${JSON.stringify(e[k])}`);
      return v as string;
    };
    const types = e.question_types ?? [];
    if (!Array.isArray(types) || types.some((t) => typeof t !== 'string')) fail(`${w}.question_types must be a list of strings`);
    return { tower: tower as 'text' | 'vision', layer, head, role: str('role'), function: str('function'), trainedTo: e.trained_to === undefined ? '' : str('trained_to'), questionTypes: types as string[] };
  });
  if (heads.length === 0) fail('"heads" is empty: a known-heads file declares at least one head');
  return { source: typeof o.source === 'string' ? o.source : '', heads };
}

/** Reads `<folder>/known_heads.json` (Node); a missing file is an error that says what the file is. */
export async function readKnownHeads(folder: string, dims?: ModelDims): Promise<KnownHeads> {
  const { readFile } = await import('node:fs/promises');
  const { join } = await import('node:path');
  const path = join(folder, KNOWN_HEADS_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new Error(`${path}: not found; a model with planted heads declares them there (scripts/train_organism.py writes it)`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message})`);
  }
  return parseKnownHeads(json, path, dims);
}
