// `vlmscope eval`: a model and a question set (JSONL) in, accuracy overall, per question type and per function out
// (a table, or JSON with --json), with a progress bar on a terminal and, with --out, one JSON line per example.

import { stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { Command } from 'commander';
import { intArg } from './args.js';
import { acquireGpu } from '../gpu/device.js';
import { GpuContext } from '../gpu/context.js';
import { nodeFolder } from '../io/checkpoint.js';
import { Tokenizer } from '../io/tokenizer.js';
import { parseInterventions } from '../spec/spec.js';
import type { EvalItem } from '../eval/dataset.js';
import { DEFAULT_EVAL_MAX_NEW_TOKENS, evaluate, type Accuracy, type EvalExample, type EvalReport, type Scoring } from '../eval/evaluate.js';
import { checkCandidates, scoringOption } from './scoring.js';
import { readJsonFile, writeAtomic } from './files.js';
import { dtypeOption, loadModel, modelOption, checkFolder, eosIds } from './load.js';
import { UsageError } from './errors.js';
import { checkImages, readData } from './data.js';
import { progressLine } from './progress.js';
import { adaptVisArg } from './generate.js';
import type { AdaptVisOptions } from '../generate/adaptvis.js';

interface EvalCliOptions {
  model: string;
  data: string;
  limit?: number;
  maxNewTokens: number;
  intervene?: string;
  adaptvis?: AdaptVisOptions;
  scoring: Scoring;
  out?: string;
  json?: boolean;
  subQuestions?: boolean;
  dtype?: string;
  verbose?: boolean;
}

export function evalCommand(): Command {
  return new Command('eval')
    .description('answer every question of a question file and report accuracy per question type and per function')
    .addOption(modelOption())
    .requiredOption('--data <file>', 'question file: vlmscope JSONL (id, image, question, answer, type, function[, options, sub_questions]), VSR JSONL or What\'sUp JSON; images relative to it')
    .option('--limit <n>', 'evaluate only the first n questions', intArg(1, 'a positive integer'))
    .option('--max-new-tokens <n>', 'most tokens generated per answer', intArg(1, 'a positive integer'), DEFAULT_EVAL_MAX_NEW_TOKENS)
    .option('--no-sub-questions', 'leave out the sub-questions of decomposed (CogVSR-style) questions (by default each is scored as type "subquestion" with its own function)')
    .option('--intervene <file>', 'intervention spec (JSON), as for trace, applied to every question')
    .option(
      '--adaptvis <t,low,high>',
      'answer with AdaptVis: image temperature alpha_low when the plain first token\'s top-1 probability (rounded to 2 decimals) is below t, else alpha_high (last prompt row, all layers and heads; e.g. 0.4,0.5,1.5)',
      adaptVisArg,
    )
    .addOption(scoringOption())
    .option('--out <file>', 'write one JSON line per example: {id, type, function, question, answer, prediction, correct[, confidence, alpha][, candidates, log_likelihoods]}')
    .option('--json', 'print the summary as one JSON object {total, correct, accuracy, by_type, by_function[, adaptvis]} instead of a table')
    .addOption(dtypeOption())
    .option('--verbose', 'print timings to stderr, and stack traces with errors')
    .addHelpText(
      'after',
      `
Each question is asked with its image in the model's prompt format (the folder's chat template, else the
family's: LLaVA "USER: <image>\\n{question} ASSISTANT:", Qwen ChatML, SmolVLM "User:<image>{question}..."),
answered greedily until an end-of-sequence token or --max-new-tokens, and scored against the gold answer after
normalizing both (lowercase, first word, punctuation stripped, digits as words, yes/no for true/false). Accuracy
is the fraction of correct answers, overall, per question type and per function label. A progress bar
(questions, running accuracy, rate, ETA) is drawn on stderr when it is a terminal. Exit codes: 0 ok, 1 runtime
error, 2 usage error (bad options, a missing or malformed data file).

Examples:
  vlmscope eval --model weights/tiny-llava --data synthetic/questions.jsonl --limit 200
  vlmscope eval --model ./llava-1.5-7b-hf --data whatsup.jsonl --out results.jsonl --json
  vlmscope eval --model ./llava-1.5-7b-hf --data whatsup.jsonl --intervene temperature.json --out tempered.jsonl
  vlmscope eval --model ./llava-1.5-7b-hf --data whatsup.jsonl --adaptvis 0.4,0.5,1.5 --out adaptvis.jsonl`,
    )
    .action(async (_opts: EvalCliOptions, cmd: Command) => {
      // --verbose may be taken by the top-level command: read it with the globals.
      await runEval(cmd.optsWithGlobals<EvalCliOptions>());
    });
}

async function runEval(opts: EvalCliOptions): Promise<void> {
  const t0 = performance.now();
  const interventionJson = opts.intervene ? await readJsonFile(opts.intervene, 'intervention spec') : null;
  if (opts.out) await checkOutputDir(opts.out);
  const all = await readData(opts.data, opts.subQuestions !== false);
  const items = opts.limit !== undefined ? all.slice(0, opts.limit) : all;
  if (opts.scoring === 'likelihood') checkCandidates(items);
  await checkImages(items, 'eval');
  await checkFolder(opts.model);
  const folder = nodeFolder(opts.model);
  const tokenizer = await Tokenizer.fromFolder(folder);
  const eosTokenIds = await eosIds(opts.model, tokenizer);

  const gpu = await acquireGpu();
  let report: EvalReport;
  let evalSeconds: number;
  try {
    const ctx = new GpuContext(gpu);
    const model = await loadModel(ctx, folder, opts);
    const interventions = interventionJson ? parseInterventions(interventionJson, model.dims, opts.intervene) : undefined;
    if (opts.adaptvis && interventions?.imageTemperature) {
      throw new UsageError(`--intervene ${opts.intervene} sets image_temperature, which --adaptvis sets itself: leave one out`);
    }
    const bar = evalProgressBar(process.stderr);
    const t1 = performance.now();
    try {
      report = await evaluate(model, tokenizer, items, { maxNewTokens: opts.maxNewTokens, interventions, eosTokenIds, onProgress: bar.update, adaptVis: opts.adaptvis, scoring: opts.scoring });
    } finally {
      bar.done();
    }
    evalSeconds = (performance.now() - t1) / 1000;
  } finally {
    gpu.destroy();
  }

  if (opts.out) await writeAtomic(opts.out, examplesJsonl(report));
  process.stdout.write(opts.json ? `${JSON.stringify(summaryJson(report))}\n` : formatReport(report));
  if (opts.verbose) {
    const rate = evalSeconds > 0 ? report.total / evalSeconds : 0;
    process.stderr.write(
      `${report.total} questions in ${evalSeconds.toFixed(1)} s (${rate.toFixed(2)} questions/s); ` +
        `${((performance.now() - t0) / 1000).toFixed(1)} s in all\n`,
    );
  }
}

async function checkOutputDir(out: string): Promise<void> {
  const dir = dirname(resolve(out));
  let isDir = false;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch {
    isDir = false;
  }
  if (!isDir) throw new UsageError(`--out ${out}: folder ${dir} does not exist`);
}

/** One example as its --out JSON object. */
export function exampleJson(e: EvalExample): Record<string, unknown> {
  return {
    id: e.id,
    type: e.type,
    function: e.function,
    question: e.question,
    answer: e.answer,
    prediction: e.prediction,
    correct: e.correct,
    ...(e.adaptvis ? { confidence: e.adaptvis.confidence, alpha: e.adaptvis.alpha } : {}),
    ...(e.candidates ? { candidates: e.candidates, log_likelihoods: e.logLikelihoods } : {}),
  };
}

/** One JSON line per example, in input order. */
export function examplesJsonl(report: EvalReport): string {
  return report.examples.map((e) => `${JSON.stringify(exampleJson(e))}\n`).join('');
}

export function summaryJson(r: EvalReport) {
  const a = r.adaptvis;
  return {
    total: r.total,
    correct: r.correct,
    accuracy: r.accuracy,
    by_type: r.byType,
    by_function: r.byFunction,
    ...(a ? { adaptvis: { threshold: a.threshold, alpha_low: a.alphaLow, alpha_high: a.alphaHigh, low: a.low, high: a.high, cost_ratio: a.costRatio } } : {}),
  };
}

const pct = (a: Accuracy) => `${(a.accuracy * 100).toFixed(1)}%`;

/** The report as aligned tables: overall, then per type and per function (count, correct, accuracy). */
export function formatReport(r: EvalReport): string {
  const sections: [string, Record<string, Accuracy>][] = [
    ['type', r.byType],
    ['function', r.byFunction],
  ];
  const names = ['overall', ...sections.flatMap(([h, g]) => [h, ...Object.keys(g).map((k) => `  ${k}`)])];
  const w = Math.max(...names.map((n) => n.length)) + 2;
  const row = (name: string, a: Accuracy) =>
    `${name.padEnd(w)}${String(a.total).padStart(7)}${String(a.correct).padStart(9)}${pct(a).padStart(10)}\n`;
  let out = `${''.padEnd(w)}${'count'.padStart(7)}${'correct'.padStart(9)}${'accuracy'.padStart(10)}\n`;
  out += row('overall', r);
  for (const [heading, groups] of sections) {
    out += `${heading}\n`;
    for (const [k, a] of Object.entries(groups)) out += row(`  ${k}`, a);
  }
  const a = r.adaptvis;
  if (a) {
    out +=
      `adaptvis: threshold ${a.threshold}: alpha_low ${a.alphaLow} on ${a.low}, alpha_high ${a.alphaHigh} on ${a.high} of ${a.low + a.high} answers; ` +
      `cost ${a.costRatio.toFixed(2)}x a plain generation (estimated per answer)\n`;
  }
  return out;
}

/**
 * Evaluation progress on a terminal, in the style of the loading bar: questions done, running accuracy, rate and
 * ETA on one line, redrawn at most 10 times a second and erased when done. Nothing when the stream is not a TTY.
 */
export function evalProgressBar(stream: NodeJS.WriteStream): { update: (done: number, total: number, correct: number) => void; done: () => void } {
  const line = progressLine(stream);
  return {
    update(done, total, correct) {
      const acc = done > 0 ? ((correct / done) * 100).toFixed(1) : '0.0';
      line?.draw(done, total, (bar, rate, eta) => `eval [${bar}] ${done}/${total}  acc ${acc}%  ${rate.toFixed(1)} q/s  ETA ${eta.toFixed(0)} s`);
    },
    done: () => line?.done(),
  };
}
