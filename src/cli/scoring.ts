// --scoring, shared by the commands that answer a question set (eval, sweep, adaptvis-table).

import { Option } from 'commander';
import type { EvalItem } from '../eval/dataset.js';
import { itemCandidates, SCORINGS } from '../eval/evaluate.js';
import { UsageError } from './errors.js';

export function scoringOption(): Option {
  return new Option(
    '--scoring <mode>',
    'generate: answer greedily and match words; likelihood: pick the candidate answer (the question\'s options) with the highest summed token log-probability after the prompt',
  )
    .choices([...SCORINGS])
    .default('generate');
}

/** Likelihood scoring needs candidates on every question: checked before the model is loaded. */
export function checkCandidates(items: readonly EvalItem[]): void {
  for (const item of items) {
    try {
      itemCandidates(item);
    } catch (e) {
      throw new UsageError(`--scoring likelihood: ${(e as Error).message}`);
    }
  }
}
