// Dataset inputs shared by the commands that run over a question set (eval, collect, ablate): read and check
// everything before a model is loaded, so a long run does not fail midway.

import { stat } from 'node:fs/promises';
import { readQuestions, type EvalItem } from '../eval/dataset.js';
import { UsageError } from './errors.js';

/** Reads the question set; a missing, empty or malformed file is a usage error naming it. */
export async function readData(path: string, includeSubQuestions = true): Promise<EvalItem[]> {
  let isFile: boolean;
  try {
    isFile = (await stat(path)).isFile();
  } catch {
    throw new UsageError(`cannot read data file ${path}: no such file`);
  }
  if (!isFile) throw new UsageError(`data file ${path} is not a file; give a JSONL file of questions`);
  let items: EvalItem[];
  try {
    items = await readQuestions(path, { includeSubQuestions });
  } catch (e) {
    const msg = (e as Error).message ?? String(e);
    throw new UsageError(msg.includes(path) ? msg : `data file ${path}: ${msg}`);
  }
  if (items.length === 0) throw new UsageError(`data file ${path} holds no questions`);
  return items;
}

/** Every image the questions name must exist before the model is loaded (a long run should not fail midway). */
export async function checkImages(items: EvalItem[], command: string): Promise<void> {
  const seen = new Set<string>();
  for (const item of items) {
    if (seen.has(item.imagePath)) continue;
    seen.add(item.imagePath);
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(item.imagePath) || item.imagePath.startsWith('data:')) {
      throw new UsageError(`question ${item.id}: image ${item.imagePath} is a URL; ${command} reads images from files, download them next to the data file`);
    }
    let ok = false;
    try {
      ok = (await stat(item.imagePath)).isFile();
    } catch {
      ok = false;
    }
    if (!ok) throw new Error(`question ${item.id}: image ${item.imagePath} does not exist`);
  }
}
