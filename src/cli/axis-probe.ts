// `vlmscope axis-probe`: the Dual Mechanisms vision-token enhancement (Cui et al., arXiv 2603.22278; the authors'
// github Nix07/spatial-variable-binding, coco_amplification/run_experiment.py). Trains one two-class linear probe
// per axis (left / right, above / below) on the projector outputs pooled inside the two objects' boxes and writes
// probes.json; with --sweep, asks every spatial question in both option orders under vision_token_add with the
// probe's columns at each alpha, against random unit-norm directions over seeds, and writes sweep.json and
// sweep.txt (strict both-listings accuracy and fixed failures per alpha). src/interp/axis-probe.ts has the method.

import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { intArg, numberArg } from './args.js';
import { acquireGpu } from '../gpu/device.js';
import { GpuContext } from '../gpu/context.js';
import { nodeFolder } from '../io/checkpoint.js';
import { Tokenizer } from '../io/tokenizer.js';
import {
  type AxisItem,
  type AxisProbes,
  type ItemBaseline,
  type PromptStyle,
  type SweepResult,
  type SweepScope,
  ADAMW_DEFAULTS,
  AXES,
  DEFAULT_ALPHAS,
  PROBE_TRAIN_DEFAULTS,
  PROMPT_STYLES,
  SWEEP_SCOPES,
  NEUTRAL_PROMPT,
  collectAxisFeatures,
  enhancementSweep,
  evaluateListings,
  goldenItems,
  normalizeAlphas,
  probesFromJson,
  probesToJson,
  readAxisItems,
  trainAxisProbes,
} from '../interp/axis-probe.js';
import { readJsonFile, writeAtomic } from './files.js';
import { checkFolder, dtypeOption, loadModel, modelOption } from './load.js';
import { UsageError } from './errors.js';
import { progressLine } from './progress.js';
import { jsonNumbers } from './ablate.js';

interface AxisProbeCliOptions {
  model: string;
  data: string;
  scenes?: string;
  out: string;
  epochs: number;
  lr: number;
  weightDecay: number;
  seed: number;
  golden: boolean;
  prompt: PromptStyle;
  limit?: number;
  sweep?: boolean;
  probes?: string;
  alphas: number[];
  randomSeeds: number;
  scope: SweepScope;
  dropInvalid?: boolean;
  dtype?: string;
  verbose?: boolean;
}

/** "0..15" (integers, inclusive), "0,2.5,10", or both mixed: "0..4,8,15". */
export function alphasArg(v: string): number[] {
  const out: number[] = [];
  for (const part of v.split(',').map((s) => s.trim())) {
    const range = /^(\d+)\.\.(\d+)$/.exec(part);
    if (range) {
      const [a, b] = [Number(range[1]), Number(range[2])];
      if (b < a) throw new InvalidArgumentError(`expected a..b with a <= b, got ${part}`);
      for (let x = a; x <= b; x++) out.push(x);
      continue;
    }
    const n = Number(part);
    if (part === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError('expected alphas >= 0 as a range and / or a list, e.g. 0..15 or 0,4,12');
    out.push(n);
  }
  return out;
}

const SWEEP_ONLY = ['alphas', 'randomSeeds', 'scope', 'dropInvalid', 'probes'] as const;
const TRAIN_ONLY = ['epochs', 'lr', 'weightDecay', 'seed', 'golden'] as const;
const FLAG: Record<string, string> = {
  alphas: '--alphas',
  randomSeeds: '--random-seeds',
  scope: '--scope',
  dropInvalid: '--drop-invalid',
  probes: '--probes',
  epochs: '--epochs',
  lr: '--lr',
  weightDecay: '--weight-decay',
  seed: '--seed',
  golden: '--no-golden',
};

export function axisProbeCommand(): Command {
  return new Command('axis-probe')
    .description('Dual Mechanisms vision-token enhancement: train left/right and above/below probes on projector outputs in the objects\' boxes; --sweep: enhance the image tokens along them over alphas, against random directions')
    .addOption(modelOption())
    .requiredOption('--data <path>', 'a synthetic dataset folder (questions.jsonl + scenes.jsonl), its questions.jsonl, or a JSONL with boxes per example (image, subject, object, relation, subject_box, object_box)')
    .option('--scenes <file>', 'scene file with the object boxes (default: scenes.jsonl beside the questions)')
    .requiredOption('--out <dir>', 'output folder for probes.json (and sweep.json, sweep.txt); created if missing')
    .option('--epochs <n>', 'full-batch AdamW steps per probe', intArg(1, 'a positive integer'), PROBE_TRAIN_DEFAULTS.epochs)
    .option('--lr <x>', 'AdamW learning rate', numberArg('a number > 0', (n) => n > 0), ADAMW_DEFAULTS.lr)
    .option('--weight-decay <x>', 'AdamW weight decay', numberArg('a number >= 0', (n) => n >= 0), ADAMW_DEFAULTS.weightDecay)
    .option('--seed <n>', 'seed of the 95/5 item split and the initial weights', intArg(0, 'a non-negative integer'), PROBE_TRAIN_DEFAULTS.seed)
    .option('--no-golden', 'train on every item (default: only items whose both listings the model already answers right, as the authors)')
    .addOption(new Option('--prompt <style>', 'question wording of the listings').choices([...PROMPT_STYLES]).default('synthetic'))
    .option('--limit <n>', 'use only the first n spatial questions', intArg(1, 'a positive integer'))
    .option('--sweep', 'run the enhancement sweep with the probes (trained here, or --probes) and write sweep.json and sweep.txt')
    .option('--probes <file>', 'probes.json of an earlier run (or its folder): sweep with these instead of training')
    .option('--alphas <list>', 'enhancement strengths, a range and / or a list (0, the baseline, is always included)', alphasArg, [...DEFAULT_ALPHAS])
    .option('--random-seeds <n>', 'random-direction controls (seeds 0..n-1)', intArg(0, 'a non-negative integer'), 3)
    .addOption(new Option('--scope <scope>', 'failures: replay the failed listings of failed items (the authors); all: every item in both orders at every alpha').choices([...SWEEP_SCOPES]).default('failures'))
    .option('--drop-invalid', 'leave out items with an out-of-axis baseline answer, as the authors do (default: they count as failures)')
    .addOption(dtypeOption())
    .option('--verbose', 'print timings to stderr, and stack traces with errors')
    .addHelpText(
      'after',
      `
Method (github Nix07/spatial-variable-binding, coco_amplification): each image is run once with the prompt
"${NEUTRAL_PROMPT}" and its projector output (one row per image token) is mean-pooled over the tokens whose grid
cell centre lies in the subject's box and in the object's box. Labels: the subject gets the relation's class
(left / above = 0, right / below = 1), the object the other. Per axis, W [D, 2] and b are trained on the pooled rows
with cross-entropy by full-batch AdamW (lr 1e-3, weight decay 1e-4, 200 epochs) on a 95/5 split by item.
The sweep asks "Where is the A in relation to the B? Answer with one word: left or right." and the same with
"right or left" (--prompt anchor / direct: the authors' wordings); the answer is the argmax next token. At alpha a
every image-token embedding entering text layer 0 (prefill) becomes h + a (h W) diag(|W_k|^2 + 1e-8)^-1 W^T
(vision_token_add). An item is right only when both listings are; a failure is fixed when every listing it failed
becomes right. Random control: per seed and axis a Gaussian D x 2 matrix with unit-norm columns.

Outputs in --out:
  probes.json   {"horizontal": {W: [[w0, w1] x D], b, accuracy: {train, held_out}, ...}, "vertical": ..., "settings"}
  sweep.json    settings, baseline, per alpha for the probe and each random seed: strict accuracy (per axis),
                fixed / failures (and broken items with --scope all), the summary and every item's log
  sweep.txt     the table printed
Exit codes: 0 ok, 1 runtime error, 2 usage error.

Examples:
  npx tsx scripts/make-synthetic.ts --out scenes --seed 5 --scenes 200 --types spatial
  vlmscope axis-probe --data scenes --out axis
  vlmscope axis-probe --data scenes --out axis --sweep --alphas 0..15 --random-seeds 3
  vlmscope axis-probe --model ./qwen2-vl-2b --data boxes.jsonl --out axis --sweep --prompt anchor --probes axis/probes.json`,
    )
    .action(async (_opts: AxisProbeCliOptions, cmd: Command) => {
      await runAxisProbe(cmd.optsWithGlobals<AxisProbeCliOptions>(), (k) => cmd.getOptionValueSource(k) === 'cli');
    });
}

async function runAxisProbe(opts: AxisProbeCliOptions, given: (key: string) => boolean): Promise<void> {
  const t0 = performance.now();
  if (!opts.sweep) {
    const stray = SWEEP_ONLY.find((k) => given(k));
    if (stray) throw new UsageError(`${FLAG[stray]} belongs to the sweep; add --sweep`);
  }
  if (opts.probes) {
    const stray = TRAIN_ONLY.find((k) => given(k));
    if (stray) throw new UsageError(`${FLAG[stray]} sets probe training, but --probes gives trained probes; leave one out`);
  }
  let data: Awaited<ReturnType<typeof readAxisItems>>;
  try {
    data = await readAxisItems(opts.data, opts.scenes);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const items = opts.limit !== undefined ? data.items.slice(0, opts.limit) : data.items;
  if (items.length === 0) {
    throw new UsageError(`${data.questions} holds no left / right / above / below questions with boxes (${data.ignored} other question${data.ignored === 1 ? '' : 's'})`);
  }
  let loaded: AxisProbes | undefined;
  let probesPath: string | undefined;
  if (opts.probes) {
    probesPath = (await stat(opts.probes).catch(() => null))?.isDirectory() ? join(opts.probes, 'probes.json') : opts.probes;
    try {
      loaded = probesFromJson(await readJsonFile(probesPath, 'probes file'), probesPath);
    } catch (e) {
      throw e instanceof UsageError ? e : new UsageError((e as Error).message);
    }
  }
  const outStat = await stat(opts.out).catch(() => null);
  if (outStat && !outStat.isDirectory()) throw new UsageError(`--out ${opts.out} is a file; give a folder (it is created when missing)`);
  await checkImagesExist(items);
  await checkFolder(opts.model);
  const folder = nodeFolder(opts.model);
  const tokenizer = await Tokenizer.fromFolder(folder);
  const alphas = normalizeAlphas(opts.alphas);
  const randomSeeds = Array.from({ length: opts.randomSeeds }, (_, i) => i);

  const gpu = await acquireGpu();
  let probes: AxisProbes;
  let trainText = '';
  let probesJson: Record<string, unknown> | null = null;
  let sweep: SweepResult | null = null;
  try {
    const ctx = new GpuContext(gpu);
    const model = await loadModel(ctx, folder, opts);
    const D = model.hiddenSize;
    for (const axis of AXES) {
      const p = loaded?.[axis];
      if (p && p.D !== D) throw new Error(`${probesPath}: the ${axis} probe has ${p.D} weights per class, but the model's text hidden size is ${D}`);
    }
    const bar = phaseBar(process.stderr);
    try {
      let baseline: ItemBaseline[] | undefined;
      if (opts.sweep || (!loaded && opts.golden)) {
        baseline = await evaluateListings(model, tokenizer, items, { prompt: opts.prompt, onProgress: (d, t) => bar.update('baseline (both listings)', d, t) });
      }
      if (loaded) probes = loaded;
      else {
        const trainOn = opts.golden ? goldenItems(items, baseline!) : items;
        const set = await collectAxisFeatures(model, tokenizer, trainOn, { onProgress: (d, t) => bar.update('features', d, t) });
        const { probes: trained, untrained } = trainAxisProbes(set, { epochs: opts.epochs, lr: opts.lr, weightDecay: opts.weightDecay, seed: opts.seed });
        if (Object.keys(trained).length === 0) {
          const usable = AXES.map((a) => `${a} ${set.axes[a].items.length}`).join(', ');
          throw new Error(
            `no axis has the 2 items a probe needs (usable items: ${usable}; ${trainOn.length} of ${items.length} ${opts.golden ? 'golden' : 'items'}, ` +
              `${set.skipped.emptyBox.length} with an empty box, ${set.skipped.sideCheck.length} failing the side check)${opts.golden ? '; try --no-golden or more data' : '; give more data'}`,
          );
        }
        probes = trained;
        const settings = {
          model: opts.model,
          data: data.questions,
          scenes: data.scenes,
          features: 'projector output (image_features), mean-pooled over the tokens whose cell centre is in the box',
          neutral_prompt: NEUTRAL_PROMPT,
          items: items.length,
          golden: opts.golden,
          prompt: opts.prompt,
          trained_on: trainOn.length,
          skipped: { empty_box: set.skipped.emptyBox, side_check: set.skipped.sideCheck },
          untrained,
          optimizer: { name: 'AdamW', lr: opts.lr, weight_decay: opts.weightDecay, betas: [ADAMW_DEFAULTS.beta1, ADAMW_DEFAULTS.beta2], eps: ADAMW_DEFAULTS.eps, epochs: opts.epochs },
          split: PROBE_TRAIN_DEFAULTS.trainFraction,
          seed: opts.seed,
        };
        probesJson = probesToJson(trained, settings);
        trainText = formatProbes(trained, untrained, { items, trainOn: trainOn.length, golden: opts.golden, skipped: set.skipped, opts });
      }
      if (opts.sweep) {
        sweep = await enhancementSweep(model, tokenizer, items, {
          probes: probes!,
          alphas,
          randomSeeds,
          scope: opts.scope,
          prompt: opts.prompt,
          dropInvalid: opts.dropInvalid,
          baseline,
          onSweepProgress: (p) => bar.update(p.label, p.done, p.total),
        });
      }
    } finally {
      bar.done();
    }
  } finally {
    gpu.destroy();
  }

  await mkdir(opts.out, { recursive: true }).catch((e: Error) => {
    throw new UsageError(`--out ${opts.out}: cannot create the folder: ${e.message}`);
  });
  let text = trainText;
  if (probesJson) await writeAtomic(join(opts.out, 'probes.json'), `${JSON.stringify(probesJson, jsonNumbers, 1)}\n`);
  if (sweep) {
    const table = formatSweep(sweep);
    text += (text ? '\n' : '') + table;
    const meta = { model: opts.model, data: data.questions, probes: probesPath ?? join(opts.out, 'probes.json') };
    await writeAtomic(join(opts.out, 'sweep.json'), `${JSON.stringify(sweepJson(sweep, meta), jsonNumbers, 1)}\n`);
    await writeAtomic(join(opts.out, 'sweep.txt'), table);
  }
  process.stdout.write(text);
  if (opts.verbose) process.stderr.write(`axis-probe: ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
}

/** Every image must exist before the model is loaded (a long run should not fail midway). */
async function checkImagesExist(items: readonly AxisItem[]): Promise<void> {
  const seen = new Set<string>();
  for (const item of items) {
    if (seen.has(item.imagePath)) continue;
    seen.add(item.imagePath);
    if (!(await stat(item.imagePath).catch(() => null))?.isFile()) throw new Error(`question ${item.id}: image ${item.imagePath} does not exist`);
  }
}

/** One progress line per phase on a terminal (nothing otherwise). */
function phaseBar(stream: NodeJS.WriteStream): { update: (label: string, done: number, total: number) => void; done: () => void } {
  let line = progressLine(stream);
  let phase = '';
  return {
    update(label, done, total) {
      const p = label.startsWith('baseline') || label === 'features' ? label : 'sweep';
      if (p !== phase) {
        line?.done();
        line = progressLine(stream);
        phase = p;
      }
      line?.draw(done, total, (bar, rate, eta) => `axis-probe ${p} [${bar}] ${done}/${total} ${p === 'sweep' ? label : ''}  ${rate.toFixed(1)}/s  ETA ${eta.toFixed(0)} s`);
    },
    done: () => line?.done(),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Outputs

const pct = (x: number) => (Number.isFinite(x) ? `${(x * 100).toFixed(1)}%` : 'n/a');

function table(rows: string[][], right: Set<number>): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (right.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n') + '\n';
}

function formatProbes(
  probes: AxisProbes,
  untrained: Partial<Record<string, number>>,
  c: { items: readonly AxisItem[]; trainOn: number; golden: boolean; skipped: { emptyBox: string[]; sideCheck: string[] }; opts: AxisProbeCliOptions },
): string {
  const { opts } = c;
  let out = `axis probes: projector outputs pooled in the object boxes; AdamW lr ${opts.lr}, weight decay ${opts.weightDecay}, ${opts.epochs} epochs, seed ${opts.seed}\n`;
  out += `${c.items.length} spatial questions, ${c.trainOn} ${c.golden ? 'golden (both listings right at baseline)' : 'used'}; skipped: ${c.skipped.emptyBox.length} empty box, ${c.skipped.sideCheck.length} side check\n`;
  const rows = [['axis', 'items', 'train', 'held out', 'train acc', 'held-out acc', 'final loss']];
  for (const axis of AXES) {
    const p = probes[axis];
    if (!p) continue;
    rows.push([axis, String(p.trainItems + p.heldOutItems), String(p.trainItems), String(p.heldOutItems), pct(p.trainAccuracy), pct(p.heldOutAccuracy), (p.losses.at(-1) ?? NaN).toFixed(4)]);
  }
  out += table(rows, new Set([1, 2, 3, 4, 5, 6]));
  for (const [axis, n] of Object.entries(untrained)) out += `${axis}: not trained (${n} usable item${n === 1 ? '' : 's'}; a probe needs 2)\n`;
  return out;
}

const frac = (n: number, d: number) => `${n}/${d}`;

/** The sweep table: one row per direction and alpha, then the paper's summary (None, Random, Random*, Probe, Probe*). */
export function formatSweep(r: SweepResult): string {
  const axes = Object.entries(r.byAxis).map(([a, n]) => `${a} ${n}`).join(', ');
  const f = r.baseline.failures;
  let out =
    `vision-token enhancement: ${r.items} items (${axes}), prompt ${r.prompt}, scope ${r.scope}, ${r.randomSeeds.length} random seed${r.randomSeeds.length === 1 ? '' : 's'}\n` +
    `baseline (strict both listings): ${frac(r.baseline.strict.correct, r.baseline.strict.total)} ${pct(r.baseline.strict.accuracy)}; ` +
    `failures ${f.lrOnly + f.rlOnly + f.both} (first listing only ${f.lrOnly}, second only ${f.rlOnly}, both ${f.both}); out-of-axis answers ${r.baseline.invalidListings}/${2 * r.items}\n`;
  if (r.skipped.noProbe.length) out += `left out: ${r.skipped.noProbe.length} item(s) of an axis without a probe\n`;
  if (r.skipped.invalid.length) out += `left out: ${r.skipped.invalid.length} item(s) with an out-of-axis baseline answer (--drop-invalid)\n`;
  out += '\n';
  const axisNames = Object.keys(r.byAxis);
  const header = ['direction', 'alpha', 'strict', '', ...axisNames, 'fixed', ...(r.scope === 'all' ? ['broken'] : [])];
  const rows = [header];
  const dirs = [{ label: 'probe', s: r.probe }, ...r.random.map((x) => ({ label: `random seed ${x.seed}`, s: x as typeof r.probe }))];
  for (const d of dirs) {
    for (const row of d.s.rows) {
      rows.push([
        d.label,
        String(row.alpha),
        pct(row.strict.accuracy),
        frac(row.strict.correct, row.strict.total),
        ...axisNames.map((a) => pct(row.byAxis[a as keyof typeof row.byAxis]?.accuracy ?? NaN)),
        frac(row.fixed, row.failures),
        ...(r.scope === 'all' ? [String(row.broken)] : []),
      ]);
    }
  }
  if (r.random.length > 1) {
    for (const m of r.randomMean) {
      rows.push(['random mean', String(m.alpha), pct(m.accuracyMean), `± ${pct(m.accuracyStd)}`, ...axisNames.map(() => ''), `${m.fixedMean.toFixed(1)}/${r.probe.rows[0]!.failures}`, ...(r.scope === 'all' ? [''] : [])]);
    }
  }
  out += table(rows, new Set(Array.from({ length: header.length }, (_, i) => i).filter((i) => i > 0)));
  out += '\n' + summaryLines(r).map((l) => `${l}\n`).join('');
  return out;
}

/** None / Random / Random* / Probe / Probe* (the authors' `print_final_coco_summary`); random ones averaged over seeds. */
export function summary(r: SweepResult) {
  const n = r.items;
  const failures = r.probe.rows[0]!.failures;
  const golden = r.baseline.strict.correct;
  const accOf = (fixed: number) => (n > 0 ? (golden + fixed) / n : 0);
  const rate = (fixed: number) => (failures > 0 ? fixed / failures : 0);
  const out: { name: string; accuracy: number; fixRate: number | null; fixed: number | null; alpha: number | null }[] = [
    { name: 'None', accuracy: r.baseline.strict.accuracy, fixRate: null, fixed: null, alpha: null },
  ];
  if (r.random.length) {
    const amp = r.randomMean.slice(1);
    let best: (typeof amp)[number] | null = null;
    for (const m of amp) if (best === null || m.fixedMean > best.fixedMean) best = m;
    if (best) out.push({ name: 'Random', accuracy: best.accuracyMean, fixRate: rate(best.fixedMean), fixed: best.fixedMean, alpha: best.alpha });
    const oracle = r.random.reduce((s, x) => s + x.oracleFixed, 0) / r.random.length;
    if (amp.length) out.push({ name: 'Random*', accuracy: r.scope === 'failures' ? accOf(oracle) : NaN, fixRate: rate(oracle), fixed: oracle, alpha: null });
  }
  const b = r.probe.best;
  if (b) {
    out.push({ name: 'Probe', accuracy: b.strict.accuracy, fixRate: rate(b.fixed), fixed: b.fixed, alpha: b.alpha });
    out.push({ name: 'Probe*', accuracy: r.scope === 'failures' ? accOf(r.probe.oracleFixed) : NaN, fixRate: rate(r.probe.oracleFixed), fixed: r.probe.oracleFixed, alpha: null });
  }
  return out;
}

function summaryLines(r: SweepResult): string[] {
  const lines = ['summary (Random: mean over seeds at the alpha with the most mean fixes; *: per-item oracle over alphas > 0)'];
  const failures = r.probe.rows[0]!.failures;
  for (const s of summary(r)) {
    let l = `  ${s.name.padEnd(8)} ${Number.isNaN(s.accuracy) ? '   n/a' : pct(s.accuracy).padStart(6)}`;
    if (s.fixed !== null) l += `  fixed ${Number.isInteger(s.fixed) ? s.fixed : s.fixed.toFixed(1)}/${failures} (${pct(s.fixRate ?? NaN)})`;
    if (s.alpha !== null) l += `  alpha ${s.alpha}`;
    lines.push(l);
  }
  return lines;
}

export function sweepJson(r: SweepResult, meta: Record<string, unknown> = {}) {
  const rowJson = (row: SweepResult['probe']['rows'][number]) => ({
    alpha: row.alpha,
    strict: row.strict,
    by_axis: row.byAxis,
    fixed: row.fixed,
    failures: row.failures,
    broken: row.broken,
  });
  const dirJson = (d: SweepResult['probe']) => ({ rows: d.rows.map(rowJson), best_alpha: d.best?.alpha ?? null, best_fixed: d.best?.fixed ?? null, oracle_fixed: d.oracleFixed });
  return {
    ...meta,
    scope: r.scope,
    prompt: r.prompt,
    alphas: r.alphas,
    random_seeds: r.randomSeeds,
    items: r.items,
    by_axis: r.byAxis,
    skipped: { no_probe: r.skipped.noProbe, invalid: r.skipped.invalid },
    baseline: {
      strict: r.baseline.strict,
      failures: { first_listing_only: r.baseline.failures.lrOnly, second_listing_only: r.baseline.failures.rlOnly, both: r.baseline.failures.both },
      invalid_listings: r.baseline.invalidListings,
    },
    probe: dirJson(r.probe),
    random: r.random.map((x) => ({ seed: x.seed, ...dirJson(x) })),
    random_mean: r.randomMean.map((m) => ({ alpha: m.alpha, accuracy_mean: m.accuracyMean, accuracy_std: m.accuracyStd, fixed_mean: m.fixedMean })),
    summary: summary(r).map((s) => ({ name: s.name, accuracy: s.accuracy, fix_rate: s.fixRate, fixed: s.fixed, alpha: s.alpha })),
    items_log: r.log.map((x) => ({
      id: x.id,
      axis: x.axis,
      relation: x.relation,
      baseline: { first: x.baseline.pred.lr, second: x.baseline.pred.rl, first_ok: x.baseline.ok.lr, second_ok: x.baseline.ok.rl },
      failed_listings: x.failedListings.map((l) => (l === 'lr' ? 'first' : 'second')),
      probe_fixed_at: x.probeFixedAt,
      random_fixed_at: x.randomFixedAt,
    })),
  };
}

