// `vlmscope probe`: functional-head probing on an activation store written by `vlmscope collect`. For each function
// and each (layer, head) a logistic probe is fitted over seeds (all heads of one function and seed at once, on the
// GPU); heads are ranked by mean held-out accuracy and the top topPercent% selected. Writes probes.json,
// probes.csv and one heatmap-<function>.png per function. --controls adds the label-permutation baseline, the
// wording-only control and selectivity with intervals over seeds (src/interp/probe-controls.ts, outputs in
// src/cli/probe-controls-report.ts); --probe mlp runs the CogVSR MLP probe instead (src/cli/probe-mlp.ts).

import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { intArg, numberArg } from './args.js';
import { acquireGpu } from '../gpu/device.js';
import { GpuContext } from '../gpu/context.js';
import { ActivationStoreError, readActivationStore, type ActivationStore } from '../interp/activation-store.js';
import { DEFAULT_PROBE_SEEDS, DEFAULT_TEST_FRACTION, SPLIT_BY, type ProbeExample, type ProbeResult, type HeadRanking, type SplitBy, fitProbes, headsHeatmapPng, rankHeads } from '../interp/probes.js';
import { PROBE_DEFAULTS } from '../interp/probe-cpu.js';
import { DEFAULT_PERMUTATIONS, type ProbeControls, type RankCriterion, fitProbeControls, rankControlledHeads } from '../interp/probe-controls.js';
import { MLP_PROBE_DEFAULTS } from '../interp/mlp-probe.js';
import { SELECTIVITY_HEATMAP_RANGE, addControlsJson, controlledProbesCsv, controlsMarkdown, controlsSummary, selectivityHeatmapName, wordedExamples } from './probe-controls-report.js';
import { runMlpProbe } from './probe-mlp.js';
import { readJsonFile, writeAtomic } from './files.js';
import { UsageError } from './errors.js';

interface ProbeCliOptions {
  activations: string;
  topPercent: number;
  seeds: number[];
  out?: string;
  testFraction: number;
  splitBy: SplitBy;
  iterations: number;
  l2: number;
  functions?: string[];
  includeMain?: boolean;
  cpu?: boolean;
  verbose?: boolean;
  probe: 'linear' | 'mlp';
  controls?: boolean;
  permutations?: number;
  rankBy?: RankCriterion;
  mlpEpochs?: number;
  mlpBatchSize?: number;
}

const HEATMAP_RANGE: [number, number] = [0.5, 1];

function seedsArg(v: string): number[] {
  const parts = v.split(',').map((s) => s.trim());
  if (parts.some((s) => !/^\d+$/.test(s))) throw new InvalidArgumentError('expected a comma-separated list of non-negative integers, e.g. 0,1,2');
  const seeds = parts.map(Number);
  if (new Set(seeds).size !== seeds.length) throw new InvalidArgumentError('expected distinct seeds');
  return seeds;
}

function listArg(v: string): string[] {
  const parts = v.split(',').map((s) => s.trim()).filter(Boolean);
  if (parts.length === 0) throw new InvalidArgumentError('expected a comma-separated list of function names');
  return parts;
}

export function probeCommand(): Command {
  return new Command('probe')
    .description('fit one logistic probe per function and (layer, head) on collected activations; rank heads and select the top ones')
    .requiredOption('--activations <dir>', 'activation store written by `vlmscope collect` (index.json + activations.safetensors)')
    .option('--top-percent <p>', 'percentage of heads selected per function', numberArg('a number in (0, 100]', (n) => n > 0 && n <= 100), 10)
    .option('--seeds <list>', 'seeds of the splits and negative samples, comma-separated', seedsArg, [...DEFAULT_PROBE_SEEDS])
    .option('--out <dir>', 'output folder (created if missing; default <activations>/probes)')
    .option('--test-fraction <f>', 'share of each function\'s examples held out, split by main question', numberArg('a number in (0, 1)', (n) => n > 0 && n < 1), DEFAULT_TEST_FRACTION)
    .addOption(new Option('--split-by <how>', 'held-out examples: whole main questions (question), or the questions in held-out wordings, training on the other wordings (wording; needs a store collected from make-synthetic --wordings all)').choices([...SPLIT_BY]).default('question'))
    .option('--iterations <n>', 'gradient steps per probe', numberArg('a non-negative integer', (n) => Number.isInteger(n) && n >= 0), PROBE_DEFAULTS.iterations)
    .option('--l2 <x>', 'L2 penalty on probe weights (on standardised features)', numberArg('a number >= 0', (n) => n >= 0), PROBE_DEFAULTS.l2)
    .option('--functions <list>', 'probe only these functions, comma-separated (negatives still come from all others)', listArg)
    .option('--include-main', 'also use main-question rows (by default only sub-question rows are used when the store has any)')
    .option('--cpu', 'fit with the float64 CPU reference instead of the GPU (slow; for checks)')
    .addOption(new Option('--probe <kind>', 'linear: CogVision\'s logistic probe per (layer, head); mlp: the CogVSR MLP over all heads, heads ranked by gradient x activation (CPU)').choices(['linear', 'mlp']).default('linear'))
    .option('--controls', 'add a label-permutation baseline and a wording-only control per head; rank by selectivity (accuracy minus the larger control) with 95% intervals over the seeds')
    .option('--permutations <n>', `label permutations per function and seed with --controls (default ${DEFAULT_PERMUTATIONS})`, intArg(1, 'a positive integer'))
    .addOption(new Option('--rank-by <stat>', 'with --controls: rank by selectivity (default) or accuracy, ties by the next criterion').choices(['selectivity', 'accuracy']))
    .option('--mlp-epochs <n>', `with --probe mlp: passes over the training rows (default ${MLP_PROBE_DEFAULTS.epochs})`, intArg(1, 'a positive integer'))
    .option('--mlp-batch-size <n>', `with --probe mlp: examples per AdamW step (default ${MLP_PROBE_DEFAULTS.batchSize}, as CogVSR; larger is faster)`, intArg(1, 'a positive integer'))
    .option('--verbose', 'print each fit\'s time to stderr, and stack traces with errors')
    .addHelpText(
      'after',
      `
Method (CogVision): positives are the correctly answered examples of a function, negatives an equal-sized random
sample of correctly answered examples of the other functions. Train and held-out examples are split by main
question (sub-questions of one main question are never on both sides), class-balanced on each side, once per
seed. With --split-by wording the held-out side is instead every example in a held-out wording and the training
side every other one (--test-fraction unused): a head that stays accurate there reads more than the question
template. Each probe is a logistic regression on the head's standardised activation (L2-regularised, full-batch
gradient descent with momentum). A head's score is its probe's held-out accuracy, averaged over the seeds;
heads are ranked by it (ties by layer, then head) and the top --top-percent are selected.

Controls (--controls; Hewitt & Liang's control tasks): on the same splits, each head's probe is refitted on labels
permuted within each side (--permutations times per seed: chance and its spread), and the same probe is fitted on
a one-hot of the question template alone (the store's wording ids, else the question with colours, shapes,
numbers and relation words masked): how well the wording alone tells the function. Control = the larger of the
two per seed; selectivity = accuracy minus control, with 95% t-intervals over the seeds. Heads are ranked by
selectivity, ties by its interval's lower bound, then accuracy and its lower bound, never by position; the report
says whether the top set is separated from the next head (their intervals do not overlap).

MLP probe (--probe mlp; CogVSR, as the Cognitive Mirrors code): one classifier over all heads and functions (a
shared 64-d projection per head, 512 hidden, dropout 0.3, AdamW lr 1e-4, 100 epochs, batch 1), on the CPU; a
head's importance for a function is gradient x activation on its projection over that function's held-out
examples; heads ranked by mean |importance| over the seeds.

Outputs in --out:
  probes.json           per function: accuracy per head (mean, std, per seed), ranking, top set, splits;
                        with --controls the ranking and top set by selectivity, "controls" and "separation"
  probes.csv            function,layer,head,accuracy_mean,accuracy_std,rank,top (--controls adds
                        accuracy_ci_low/high, permutation_mean/std, wording_accuracy, control,
                        selectivity_mean, selectivity_ci_low/high, accuracy_rank; --probe mlp has
                        importance columns instead)
  probes.md             with --controls or --probe mlp: the report per function
  heatmap-<fn>.png      layers (rows, layer 0 on top) x heads (columns), viridis from 0.5 (chance) to 1;
                        the top set framed in red (--probe mlp: mean |importance| from 0)
  selectivity-<fn>.png  with --controls: selectivity from -0.5 to 0.5

Examples:
  vlmscope probe --activations acts/
  vlmscope probe --activations acts/ --top-percent 5 --seeds 0,1,2,3,4 --out probes/
  vlmscope probe --activations acts/ --controls --seeds 0,1,2,3,4 --permutations 20
  vlmscope probe --activations acts/ --probe mlp --mlp-batch-size 16`,
    )
    .action(async (_opts: ProbeCliOptions, cmd: Command) => {
      await runProbe(cmd.optsWithGlobals<ProbeCliOptions>());
    });
}

async function runProbe(opts: ProbeCliOptions): Promise<void> {
  const t0 = performance.now();
  const store = await readProbeStore(opts.activations);
  const subs = store.examples.filter((e) => String(e.id) !== String(e.main_id));
  const used = opts.includeMain || subs.length === 0 ? store.examples : subs;
  const examples: ProbeExample[] = used.map((e) => ({ id: e.id, mainId: e.main_id, function: e.function, correct: e.correct, row: e.row, wording: e.wording, wordingHeldout: e.wording_heldout }));
  const unworded = examples.find((e) => e.wordingHeldout === undefined);
  if (opts.splitBy === 'wording' && unworded) {
    throw new UsageError(`--split-by wording: example ${JSON.stringify(unworded.id)} in ${opts.activations} has no "wording_heldout"; collect from a question file written with make-synthetic --wordings all`);
  }
  if (opts.functions) {
    const known = new Set(examples.map((e) => e.function));
    const missing = opts.functions.filter((f) => !known.has(f));
    if (missing.length) throw new UsageError(`--functions: ${missing.join(', ')} not in the store (it has ${[...known].sort().join(', ')})`);
  }
  const linearOnly = opts.probe === 'mlp' && (['controls', 'permutations', 'rankBy', 'cpu'] as const).find((k) => opts[k] !== undefined);
  if (linearOnly) throw new UsageError(`--${linearOnly.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} applies to the linear probe, not --probe mlp`);
  const mlpOnly = opts.probe !== 'mlp' && (['mlpEpochs', 'mlpBatchSize'] as const).find((k) => opts[k] !== undefined);
  if (mlpOnly) throw new UsageError(`--${mlpOnly.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} needs --probe mlp`);
  if (!opts.controls && (opts.permutations !== undefined || opts.rankBy !== undefined)) throw new UsageError(`--${opts.permutations !== undefined ? 'permutations' : 'rank-by'} needs --controls`);
  const outDir = opts.out ?? join(opts.activations, 'probes');
  await mkdir(outDir, { recursive: true }).catch((e: Error) => {
    throw new UsageError(`--out ${outDir}: cannot create the folder: ${e.message}`);
  });
  if (opts.probe === 'mlp') {
    const classes = [...new Set(examples.filter((e) => e.correct).map((e) => e.function))].sort();
    const epochs = opts.mlpEpochs ?? MLP_PROBE_DEFAULTS.epochs;
    const batchSize = opts.mlpBatchSize ?? MLP_PROBE_DEFAULTS.batchSize;
    await runMlpProbe(store, examples, outDir, heatmapNames(opts.functions ?? classes), { ...opts, epochs, batchSize });
    return;
  }

  const bar = fitProgress(process.stderr, opts.verbose ?? false);
  let result: ProbeResult;
  let controls = null as ProbeControls | null; // set inside fitAll
  // Probes, then (--controls) their controls on the same splits, on one backend.
  const fitAll = async (ctx: GpuContext | null) => {
    const r = await fitProbes(ctx, fitOpts);
    if (opts.controls && r.functions.length) {
      const permutations = opts.permutations ?? DEFAULT_PERMUTATIONS;
      bar.start(`fitting ${permutations} label permutation${permutations === 1 ? '' : 's'} x functions x seeds ...`);
      controls = await fitProbeControls(ctx, r, { features: store.z, examples: wordedExamples(examples, store), permutations, onProgress: bar.update });
    }
    return r;
  };
  const fitOpts = {
    features: store.z,
    layers: store.layers,
    heads: store.heads,
    dim: store.dim,
    examples,
    functions: opts.functions,
    seeds: opts.seeds,
    testFraction: opts.testFraction,
    splitBy: opts.splitBy,
    iterations: opts.iterations,
    l2: opts.l2,
    onProgress: bar.update,
  };
  bar.start(`fitting ${store.layers * store.heads} heads x functions x ${opts.seeds.length} seed${opts.seeds.length === 1 ? '' : 's'}${opts.cpu ? ' on the CPU' : ' on the GPU'} ...`);
  try {
    if (opts.cpu) result = await fitAll(null);
    else {
      const gpu = await acquireGpu();
      try {
        result = await fitAll(new GpuContext(gpu));
      } finally {
        gpu.destroy();
      }
    }
  } finally {
    bar.done();
  }
  if (result.functions.length === 0) {
    throw new Error(`no function could be probed: ${result.skipped.map((s) => `${s.function}: ${s.reason}`).join('; ') || 'the store has no correctly answered examples'}`);
  }
  const ranking = rankHeads(result, { topPercent: opts.topPercent });
  const files = heatmapNames(result.functions.map((f) => f.function));
  const controlled = controls ? rankControlledHeads(result, controls, { topPercent: opts.topPercent, rankBy: opts.rankBy }) : null;

  for (const fr of ranking.functions) {
    const fp = result.functions.find((f) => f.function === fr.function)!;
    const top = controlled?.functions.find((f) => f.function === fr.function)!.top ?? fr.top;
    await writeAtomic(join(outDir, files.get(fr.function)!), headsHeatmapPng(fp.mean, { min: HEATMAP_RANGE[0], max: HEATMAP_RANGE[1], highlight: top }));
    const fc = controls?.functions.find((f) => f.function === fr.function);
    if (fc) {
      const selectivity = fc.selectivityCi.map((row) => row.map((iv) => iv.mean));
      await writeAtomic(join(outDir, selectivityHeatmapName(files.get(fr.function)!)), headsHeatmapPng(selectivity, { min: SELECTIVITY_HEATMAP_RANGE[0], max: SELECTIVITY_HEATMAP_RANGE[1], highlight: top }));
    }
  }
  const plainJson = probesJson(store, result, ranking, files, examples.length);
  if (controls && controlled) {
    await writeAtomic(join(outDir, 'probes.csv'), controlledProbesCsv(result, controls, controlled, ranking));
    await writeAtomic(join(outDir, 'probes.json'), `${JSON.stringify(addControlsJson(plainJson, controls, controlled))}\n`);
    await writeAtomic(join(outDir, 'probes.md'), controlsMarkdown(result, controls, controlled, files));
    process.stdout.write(summary(result, ranking, outDir).replace(/^wrote .*\n$/m, ''));
    process.stdout.write(controlsSummary(controls, controlled));
    process.stdout.write(`wrote probes.json, probes.csv, probes.md and ${2 * ranking.functions.length} heatmaps (accuracy, selectivity) to ${outDir}\n`);
  } else {
    await writeAtomic(join(outDir, 'probes.csv'), probesCsv(result, ranking));
    await writeAtomic(join(outDir, 'probes.json'), `${JSON.stringify(plainJson)}\n`);
    process.stdout.write(summary(result, ranking, outDir));
  }
  if (opts.verbose) process.stderr.write(`probe: ${((performance.now() - t0) / 1000).toFixed(1)} s in all (${result.backend})\n`);
}

/** The store of `--activations DIR` (src/interp/activation-store.ts validates it); problems are one-line UsageErrors. */
export async function readProbeStore(dir: string): Promise<ActivationStore> {
  try {
    return await readActivationStore(dir);
  } catch (e) {
    throw e instanceof ActivationStoreError ? new UsageError(e.message) : e;
  }
}

/** heatmap-<slug>.png per function: lower-case, runs of other characters as '-', made unique. */
export function heatmapNames(functions: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  const taken = new Set<string>();
  for (const fn of functions) {
    const slug = fn.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '') || 'function';
    let name = `heatmap-${slug}.png`;
    for (let i = 2; taken.has(name); i++) name = `heatmap-${slug}-${i}.png`;
    taken.add(name);
    out.set(fn, name);
  }
  return out;
}

const csvField = (s: string) => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);

export function probesCsv(result: ProbeResult, ranking: HeadRanking): string {
  let out = 'function,layer,head,accuracy_mean,accuracy_std,rank,top\n';
  for (const fr of ranking.functions) {
    const byHead = [...fr.ranking].sort((a, b) => a.layer - b.layer || a.head - b.head);
    const k = fr.top.length;
    for (const h of byHead) out += `${csvField(fr.function)},${h.layer},${h.head},${h.accuracy},${h.std},${h.rank},${h.rank <= k ? 1 : 0}\n`;
  }
  return out;
}

export function probesJson(store: ActivationStore, result: ProbeResult, ranking: HeadRanking, heatmaps: Map<string, string>, examplesUsed: number) {
  const functions: Record<string, unknown> = {};
  for (const fr of ranking.functions) {
    const fp = result.functions.find((f) => f.function === fr.function)!;
    functions[fr.function] = {
      positives: fp.positives,
      heatmap: heatmaps.get(fr.function),
      accuracy_mean: fp.mean,
      accuracy_std: fp.std,
      accuracy_per_seed: fp.accuracy,
      train_accuracy_per_seed: fp.trainAccuracy,
      splits: fp.splits.map((s) => ({
        seed: s.seed,
        train_positives: s.trainPositives,
        train_negatives: s.trainNegatives,
        test_positives: s.testPositives,
        test_negatives: s.testNegatives,
        test_ids: s.test,
      })),
      ranking: fr.ranking,
      top: fr.top.map(({ layer, head, accuracy, rank }) => ({ layer, head, accuracy, rank })),
    };
  }
  return {
    model: store.model ?? null,
    tower: store.tower ?? null,
    layers: result.layers,
    heads: result.heads,
    dim: result.dim,
    examples: examplesUsed,
    seeds: result.seeds,
    test_fraction: result.testFraction,
    split_by: result.splitBy,
    top_percent: ranking.topPercent,
    k: ranking.k,
    backend: result.backend,
    optimizer: {
      iterations: result.optimizer.iterations,
      l2: result.optimizer.l2,
      learning_rate: result.optimizer.learningRate,
      momentum: result.optimizer.momentum,
    },
    heatmap_range: HEATMAP_RANGE,
    functions,
    skipped: result.skipped,
  };
}

function summary(result: ProbeResult, ranking: HeadRanking, outDir: string): string {
  const heads = result.layers * result.heads;
  let out =
    `${result.functions.length} function${result.functions.length === 1 ? '' : 's'} x ${heads} heads (${result.layers} layers x ${result.heads} heads, dim ${result.dim}), ` +
    `seeds ${result.seeds.join(',')}; top ${ranking.topPercent}% = ${ranking.k} head${ranking.k === 1 ? '' : 's'} per function\n`;
  const rows = ranking.functions.map((fr) => {
    const fp = result.functions.find((f) => f.function === fr.function)!;
    const shown = fr.top.slice(0, 8).map((h) => `L${h.layer}H${h.head}`);
    return [fr.function, String(fp.positives), fr.top[0].accuracy.toFixed(3), shown.join(' ') + (fr.top.length > shown.length ? ' ...' : '')];
  });
  const head = ['function', 'positives', 'best acc', 'top heads'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]))).join('  ') + '\n';
  out += line(head);
  for (const r of rows) out += line(r);
  for (const s of result.skipped) out += `skipped ${s.function}: ${s.reason}\n`;
  out += `wrote probes.json, probes.csv and ${ranking.functions.length} heatmap${ranking.functions.length === 1 ? '' : 's'} to ${outDir}\n`;
  return out;
}

/** Fit progress: a redrawn line on a terminal; with --verbose one line per fit; otherwise nothing. */
function fitProgress(stream: NodeJS.WriteStream, verbose: boolean) {
  let drawn = false;
  return {
    /** Shown while a GPU batch runs (it reports only at its end). */
    start(what: string) {
      if (!verbose && stream.isTTY) {
        stream.write(`\r\x1b[Kprobe: ${what}`);
        drawn = true;
      }
    },
    update(p: { done: number; total: number; seconds: number }) {
      if (verbose) {
        stream.write(`${drawn ? '\r\x1b[K' : ''}probe: ${p.done}/${p.total} fits (functions x seeds) in ${p.seconds.toFixed(2)} s\n`);
        drawn = false;
      } else if (stream.isTTY) {
        const width = 24;
        const bar = '#'.repeat(Math.round((p.done / p.total) * width)).padEnd(width, '.');
        stream.write(`\r\x1b[Kprobe [${bar}] ${p.done}/${p.total} fits  ${p.seconds.toFixed(1)} s`);
        drawn = true;
      }
    },
    done() {
      if (drawn) stream.write('\r\x1b[K');
    },
  };
}
