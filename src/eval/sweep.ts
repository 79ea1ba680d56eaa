// ScalingVis (Chen et al., ICML 2025, arXiv 2503.01773): the image-attention temperature swept over a grid of
// alphas. At each alpha every question is answered and scored as `evaluate` does, with the `image_temperature`
// intervention {alpha, queries, layers, heads} (docs/interventions.md: the pre-softmax scores of the image-token key
// columns are multiplied by alpha). Alpha 1 is always run, as the baseline, with no intervention at all (a plain
// `evaluate`); every run reuses the one loaded model. The authors' code scales the last prompt row only, in all
// layers and heads (their modeling_llama_add_attn.py), which is the default here (queries "last", layers and heads
// all); their README grid is 0.5, 0.8, 1.2, 1.5, 2.0.
//
// Besides the runner: the per-group rows (overall, per question type, per function) with the best alpha and the
// deltas against the baseline, as a text table, a markdown table and CSV. The plot is in sweep-plot.ts.

import type { VlmModel } from '../models/vlm.js';
import type { Tokenizer } from '../io/tokenizer.js';
import { parseInterventions, type InterventionSpec, type QueryScope } from '../spec/spec.js';
import type { EvalItem } from './dataset.js';
import { evaluate, type Accuracy, type EvalReport, type Scoring } from './evaluate.js';

/** The ScalingVis grid of the authors' README (their "0, 5" read as 0.5); alpha 1 is added as the baseline. */
export const DEFAULT_SWEEP_ALPHAS: readonly number[] = [0.5, 0.8, 1.2, 1.5, 2.0];
export const BASELINE_ALPHA = 1;

export interface SweepProgress {
  /** 1-based run number, in the order the runs are made (the baseline first). */
  run: number;
  runs: number;
  alpha: number;
  /** Questions done in this run, of `total`, and correct so far (the default scoring). */
  done: number;
  total: number;
  correct: number;
}

export interface SweepOptions {
  /** The alphas to try; 1 is added when missing. Duplicates are dropped and the runs are reported in ascending order. */
  alphas: readonly number[];
  /** Text layers scaled (default all). */
  layers?: readonly number[] | null;
  /** Heads scaled in each of those layers (default all). */
  heads?: readonly number[] | null;
  /** Rows scaled (default "last": the last prompt row, as the authors' code). */
  queries?: QueryScope;
  /** Most tokens generated per answer (evaluate's default when absent). */
  maxNewTokens?: number;
  /** Sweep only the first `limit` items. */
  limit?: number;
  eosTokenIds?: number[];
  imageCacheBytes?: number;
  /**
   * Scores a prediction instead of the dataset's rule (e.g. the AdaptVis authors' substring rule, isCorrectAdaptVis);
   * `item` is the swept item itself, so subtypes of EvalItem pass through.
   */
  score?: (prediction: string, item: EvalItem) => boolean;
  /** 'generate' (default) or 'likelihood': option-likelihood scoring at every alpha (evaluate's `scoring`). */
  scoring?: Scoring;
  onProgress?: (p: SweepProgress) => void;
}

export interface SweepRun {
  alpha: number;
  /** Alpha 1: no intervention. */
  baseline: boolean;
  /** What the run handed to the model (null for the baseline). */
  interventions: InterventionSpec | null;
  report: EvalReport;
}

export interface SweepResult {
  /** Ascending, the baseline's 1 included. */
  alphas: number[];
  queries: QueryScope;
  layers: number[] | null;
  heads: number[] | null;
  /** One per alpha, in the order of `alphas`. */
  runs: SweepRun[];
  /** Index of the baseline in `alphas` / `runs`. */
  baselineIndex: number;
}

/** The alphas a sweep runs: finite, at least 0, duplicates dropped, 1 added, ascending. */
export function sweepAlphas(alphas: readonly number[]): number[] {
  for (const a of alphas) {
    if (typeof a !== 'number' || !Number.isFinite(a) || a < 0) throw new Error(`alpha must be a finite number >= 0, got ${String(a)}`);
  }
  return [...new Set([...alphas, BASELINE_ALPHA])].sort((a, b) => a - b);
}

/** The image_temperature spec of one alpha (JSON as docs/interventions.md spells it). */
export function temperatureSpecJson(alpha: number, opts: Pick<SweepOptions, 'layers' | 'heads' | 'queries'>): { image_temperature: Record<string, unknown> } {
  const it: Record<string, unknown> = { alpha, queries: opts.queries ?? 'last' };
  if (opts.layers) it.layers = [...opts.layers];
  if (opts.heads) it.heads = [...opts.heads];
  return { image_temperature: it };
}

function checkList(v: readonly number[] | null | undefined, what: string): void {
  if (v === null || v === undefined) return;
  if (v.length === 0) throw new Error(`${what} is empty: leave it out to scale all ${what}`);
  if (new Set(v).size !== v.length) throw new Error(`${what} ${v.join(',')} names one twice`);
}

/**
 * Answers every item at each alpha (the baseline, alpha 1, first, with no intervention) on the one loaded model and
 * returns the reports in ascending alpha order. Every spec is built and checked against the model (layers, heads)
 * before the first question is asked.
 */
export async function sweepImageTemperature(model: VlmModel, tokenizer: Tokenizer, items: readonly EvalItem[], opts: SweepOptions): Promise<SweepResult> {
  const alphas = sweepAlphas(opts.alphas);
  const queries = opts.queries ?? 'last';
  checkList(opts.layers, 'layers');
  checkList(opts.heads, 'heads');
  if (opts.limit !== undefined && (!Number.isInteger(opts.limit) || opts.limit < 0)) throw new Error(`limit must be a non-negative integer, got ${opts.limit}`);
  const todo = opts.limit !== undefined ? items.slice(0, opts.limit) : [...items];
  const specs = alphas.map((a) => (a === BASELINE_ALPHA ? null : parseInterventions(temperatureSpecJson(a, { ...opts, queries }), model.dims, `sweep at alpha ${a}`)));
  const baselineIndex = alphas.indexOf(BASELINE_ALPHA);
  const order = [baselineIndex, ...alphas.keys()].filter((i, k) => k === 0 || i !== baselineIndex);
  const reports: EvalReport[] = new Array(alphas.length);
  for (const [k, i] of order.entries()) {
    const alpha = alphas[i];
    const report = await evaluate(model, tokenizer, todo, {
      maxNewTokens: opts.maxNewTokens,
      scoring: opts.scoring,
      score: opts.score,
      interventions: specs[i] ?? undefined,
      eosTokenIds: opts.eosTokenIds,
      imageCacheBytes: opts.imageCacheBytes,
      onProgress: opts.onProgress && ((done, total, correct) => opts.onProgress!({ run: k + 1, runs: alphas.length, alpha, done, total, correct })),
    });
    reports[i] = report;
  }
  return {
    alphas,
    queries,
    layers: opts.layers ? [...opts.layers] : null,
    heads: opts.heads ? [...opts.heads] : null,
    runs: alphas.map((alpha, i) => ({ alpha, baseline: i === baselineIndex, interventions: specs[i], report: reports[i] })),
    baselineIndex,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Rows, best alpha, tables

export type SweepGroup = 'overall' | 'type' | 'function';

export interface SweepRow {
  group: SweepGroup;
  /** "overall", a question type or a function label. */
  name: string;
  /** Questions in the row (the same at every alpha). */
  total: number;
  /** Per alpha, in the order of SweepResult.alphas. */
  correct: number[];
  accuracy: number[];
  /** accuracy - the baseline's accuracy, per alpha (0 at the baseline). */
  delta: number[];
  /** Index of the best alpha: the highest accuracy; on a tie the baseline, else the alpha nearest 1 (in log scale). */
  best: number;
}

/** Index of the best accuracy: highest; ties go to the baseline, then to the alpha nearest 1 in log scale, then the smaller. */
export function bestIndex(alphas: readonly number[], accuracy: readonly number[]): number {
  const dist = (a: number) => (a === BASELINE_ALPHA ? -1 : Math.abs(Math.log(a)));
  let best = 0;
  for (let i = 1; i < alphas.length; i++) {
    if (accuracy[i] > accuracy[best] || (accuracy[i] === accuracy[best] && dist(alphas[i]) < dist(alphas[best]))) best = i;
  }
  return best;
}

function row(result: SweepResult, group: SweepGroup, name: string, pick: (r: EvalReport) => Accuracy | undefined): SweepRow {
  const accs = result.runs.map((r) => pick(r.report) ?? { total: 0, correct: 0, accuracy: 0 });
  const accuracy = accs.map((a) => a.accuracy);
  const base = accuracy[result.baselineIndex];
  return {
    group,
    name,
    total: accs[result.baselineIndex].total,
    correct: accs.map((a) => a.correct),
    accuracy,
    delta: accuracy.map((a) => a - base),
    best: bestIndex(result.alphas, accuracy),
  };
}

/** Overall, then per question type, then per function (names sorted, as the reports hold them). */
export function sweepRows(result: SweepResult): SweepRow[] {
  const base = result.runs[result.baselineIndex].report;
  return [
    row(result, 'overall', 'overall', (r) => r),
    ...Object.keys(base.byType).map((k) => row(result, 'type', k, (r) => r.byType[k])),
    ...Object.keys(base.byFunction).map((k) => row(result, 'function', k, (r) => r.byFunction[k])),
  ];
}

/** An alpha as it is printed: the shortest decimal (0.5, 1, 1.25). */
export const fmtAlpha = (a: number): string => String(a);
const pct = (x: number) => (x * 100).toFixed(1);
const signed = (x: number) => `${x >= 0 ? '+' : '-'}${Math.abs(x * 100).toFixed(1)}`;

/** One line naming what was scaled, e.g. "image_temperature on the last prompt row, all layers, all heads". */
export function describeSweep(result: Pick<SweepResult, 'queries' | 'layers' | 'heads'>): string {
  const rows = { last: 'the last prompt row', all: 'every query row', generated: 'the generated rows (decode steps)' }[result.queries];
  const layers = result.layers ? `layers ${result.layers.join(',')}` : 'all layers';
  const heads = result.heads ? `heads ${result.heads.join(',')}` : 'all heads';
  return `image-key logits x alpha on ${rows}, ${layers}, ${heads}`;
}

/**
 * The sweep as an aligned text table: a row per group (overall, then per type, then per function), a column per
 * alpha with the accuracy (%) and its difference from the baseline (points), the best alpha of each row marked
 * with `*`, and the best alpha with its gain in the last column.
 */
export function formatSweepTable(result: SweepResult): string {
  const rows = sweepRows(result);
  const b = result.baselineIndex;
  const cell = (r: SweepRow, i: number) => `${pct(r.accuracy[i])}${i === b ? '' : ` ${signed(r.delta[i])}`}${r.best === i ? '*' : ''}`;
  const heads = result.alphas.map((a, i) => `a=${fmtAlpha(a)}${i === b ? ' (base)' : ''}`);
  const names = rows.map((r) => (r.group === 'overall' ? r.name : `  ${r.name}`));
  const nameW = Math.max(8, ...names.map((n) => n.length)) + 2;
  const colW = result.alphas.map((_, i) => Math.max(heads[i].length, ...rows.map((r) => cell(r, i).length)) + 2);
  const best = (r: SweepRow) => `a=${fmtAlpha(result.alphas[r.best])}${r.best === b ? ' (base)' : ` ${signed(r.delta[r.best])}`}`;
  const line = (name: string, n: string, cells: string[], last: string) => `${name.padEnd(nameW)}${n.padStart(6)}${cells.map((c, i) => c.padStart(colW[i])).join('')}  ${last}`.trimEnd() + '\n';
  let out = `ScalingVis sweep: ${describeSweep(result)}; ${rows[0].total} questions; accuracy % (points vs alpha 1), * best\n`;
  out += line('', 'n', heads, 'best');
  let group: SweepGroup = 'overall';
  rows.forEach((r, k) => {
    if (r.group !== group) {
      group = r.group;
      out += `${group}\n`;
    }
    out += line(names[k], String(r.total), result.alphas.map((_, i) => cell(r, i)), best(r));
  });
  return out;
}

/** The same table in markdown, the best cell of each row in bold. */
export function sweepMarkdown(result: SweepResult): string {
  const rows = sweepRows(result);
  const b = result.baselineIndex;
  const cell = (r: SweepRow, i: number) => {
    const t = `${pct(r.accuracy[i])}${i === b ? '' : ` (${signed(r.delta[i])})`}`;
    return r.best === i ? `**${t}**` : t;
  };
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  let out = `ScalingVis sweep: ${describeSweep(result)}. Accuracy % (points vs alpha 1); best alpha in bold.\n\n`;
  out += `| group | name | n | ${result.alphas.map((a, i) => `α=${fmtAlpha(a)}${i === b ? ' (base)' : ''}`).join(' | ')} | best α |\n`;
  out += `|---|---|---:|${result.alphas.map(() => '---:').join('|')}|---:|\n`;
  for (const r of rows) {
    out += `| ${r.group} | ${esc(r.name)} | ${r.total} | ${result.alphas.map((_, i) => cell(r, i)).join(' | ')} | ${fmtAlpha(result.alphas[r.best])} |\n`;
  }
  return out;
}

function csvField(s: string): string {
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Long CSV: one line per (group, name, alpha). */
export function sweepCsv(result: SweepResult): string {
  let out = 'group,name,alpha,baseline,total,correct,accuracy,delta,best\n';
  for (const r of sweepRows(result)) {
    result.alphas.forEach((a, i) => {
      out += `${r.group},${csvField(r.name)},${a},${i === result.baselineIndex},${r.total},${r.correct[i]},${r.accuracy[i]},${r.delta[i]},${r.best === i}\n`;
    });
  }
  return out;
}

/**
 * The sweep as JSON: settings, the best alpha per group, and per alpha the spec, the accuracies and each
 * question's prediction (questions themselves listed once).
 */
export function sweepJson(result: SweepResult, meta: Record<string, unknown> = {}) {
  const rows = sweepRows(result);
  const best = (r: SweepRow) => ({ alpha: result.alphas[r.best], accuracy: r.accuracy[r.best], delta: r.delta[r.best] });
  const base = result.runs[result.baselineIndex].report;
  return {
    method: 'ScalingVis',
    ...meta,
    queries: result.queries,
    layers: result.layers,
    heads: result.heads,
    alphas: result.alphas,
    baseline_alpha: BASELINE_ALPHA,
    questions: base.examples.map((e) => ({ id: e.id, type: e.type, function: e.function, question: e.question, answer: e.answer })),
    best: {
      overall: best(rows[0]),
      by_type: Object.fromEntries(rows.filter((r) => r.group === 'type').map((r) => [r.name, best(r)])),
      by_function: Object.fromEntries(rows.filter((r) => r.group === 'function').map((r) => [r.name, best(r)])),
    },
    runs: result.runs.map((run) => ({
      alpha: run.alpha,
      baseline: run.baseline,
      spec: run.baseline ? null : temperatureSpecJson(run.alpha, result),
      total: run.report.total,
      correct: run.report.correct,
      accuracy: run.report.accuracy,
      by_type: run.report.byType,
      by_function: run.report.byFunction,
      examples: run.report.examples.map((e) => ({ id: e.id, prediction: e.prediction, correct: e.correct })),
    })),
  };
}
