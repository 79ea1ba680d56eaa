// A small synthetic question set on disk, as scripts/make-synthetic.ts writes it: images/*.png + questions.jsonl.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodePng } from '../../src/io/image.js';
import type { SyntheticQuestionType } from '../../src/eval/dataset.js';
import { iterateDataset, itemToJsonl, renderScene, sceneImagePath } from '../../src/eval/synthetic.js';

/** Writes `scenes` scenes to DIR and returns the path of DIR/questions.jsonl. */
export function writeSyntheticSet(dir: string, opts: { seed: number; scenes: number; types: SyntheticQuestionType[] }): string {
  mkdirSync(join(dir, 'images'), { recursive: true });
  let lines = '';
  for (const s of iterateDataset(opts)) {
    writeFileSync(join(dir, sceneImagePath(s.id)), encodePng(renderScene(s.scene)));
    for (const item of s.items) lines += `${itemToJsonl(item)}\n`;
  }
  const path = join(dir, 'questions.jsonl');
  writeFileSync(path, lines);
  return path;
}
