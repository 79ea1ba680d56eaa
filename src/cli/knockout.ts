// `vlmscope knockout`: the last prompt token's attention edges to the two named objects' image tokens knocked out one
// text layer at a time (and in every layer at once), against the same number of random other image tokens, on the
// spatial questions of a synthetic (What'sUp-style) set with its scenes.jsonl boxes (src/interp/knockout.ts). Prints
// a table, writes knockout.json, knockout.csv and knockout.md to --out. Every input (data, scenes, every question's
// scene and named objects, layers, the output folder) is checked before the model is loaded; nothing is written
// unless the whole run succeeds.

import { mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Command } from 'commander';
import { intArg } from './args.js';
import { acquireGpu } from '../gpu/device.js';
import { GpuContext } from '../gpu/context.js';
import { nodeFolder } from '../io/checkpoint.js';
import { Tokenizer } from '../io/tokenizer.js';
import { DEFAULT_EVAL_MAX_NEW_TOKENS } from '../eval/evaluate.js';
import { isSpatialMain, knockoutByLayer, namedObjects, parseScenes, sceneIdOfImage, type KnockoutResult, type KnockoutSummary, type SceneBoxes } from '../interp/knockout.js';
import { indexListArg } from './sweep.js';
import { writeAtomic, checkOutDir } from './files.js';
import { configDims, dtypeOption, loadModel, modelOption, checkFolder, eosIds } from './load.js';
import { UsageError } from './errors.js';
import { checkImages, readData } from './data.js';
import { progressLine } from './progress.js';

interface KnockoutCliOptions {
  model: string;
  data: string;
  scenes?: string;
  out: string;
  limit?: number;
  seed: number;
  layers?: number[];
  maxNewTokens: number;
  dtype?: string;
  verbose?: boolean;
}

export function knockoutCommand(): Command {
  return new Command('knockout')
    .description("attention knockout: the last token's edges to the two named objects' image tokens cut per text layer, against as many random image tokens")
    .addOption(modelOption())
    .requiredOption('--data <file>', 'question JSONL of scripts/make-synthetic.ts (its spatial questions are used; scenes.jsonl beside it holds the boxes)')
    .option('--scenes <file>', 'scene boxes, one JSON object per line {id, size, objects: [{colour, shape, x, y, d} | {name, box}]} (default: scenes.jsonl beside --data); a question\'s scene is its image\'s file name without the extension')
    .option('--out <dir>', 'output folder for knockout.json, knockout.csv and knockout.md (created if missing)', 'knockout')
    .option('--limit <n>', 'use only the first n spatial questions', intArg(1, 'a positive integer'))
    .option('--seed <s>', 'seed of the random-token control', intArg(0, 'a non-negative integer'), 0)
    .option('--layers <list>', 'text layers knocked one at a time, e.g. 0,2 or 1-3 (default all)', indexListArg)
    .option('--max-new-tokens <n>', 'most tokens generated per answer', intArg(1, 'a positive integer'), DEFAULT_EVAL_MAX_NEW_TOKENS)
    .addOption(dtypeOption())
    .option('--verbose', 'print timings to stderr, and stack traces with errors')
    .addHelpText(
      'after',
      `
Method (information flow by attention knockout, Geva et al. 2023): every spatial question ("Where is the A in relation
to the B?") is answered greedily and scored as in eval: once with no intervention (the baseline), then for each text
layer L with attention_knockout {layers: [L], queries: "last", keys: K}, where K are the prompt positions of the image
tokens whose grid cell centre lies in A's or B's box (boxes scaled from the scene to the image as the model sees it;
an object too small to hold a cell centre takes the cell of its box centre), and with K' = as many random other image
tokens of the same image (seeded per question: the control). A last row knocks both in every layer at once.
P(answer) is the probability the last prompt row gives the baseline's first answer token; "rel. change" is the mean of
(p - p_baseline) / p_baseline. The baseline also reports where the last row looks: per layer, its attention (mean over
heads) on the named objects' tokens and on the other image tokens, and the per-token density ratio of the two.

Outputs in --out (written only when the whole run succeeded):
  knockout.json  settings, summary per run, the baseline attention per layer, every question's tokens and answers
  knockout.csv   run,layer,target,total,correct,accuracy,mean_p,relative_change (one line per run and target)
  knockout.md    the tables in markdown
A progress bar is drawn on stderr when it is a terminal. Exit codes: 0 ok, 1 runtime error, 2 usage error.

Examples:
  npx tsx scripts/make-synthetic.ts --out ood --seed 4242 --scenes 60 --variant ood --types spatial
  vlmscope knockout --data ood/questions.jsonl --out knockout/
  vlmscope knockout --data ood/questions.jsonl --layers 1,2 --limit 20 --seed 3 --out knockout-12/`,
    )
    .action(async (_opts: KnockoutCliOptions, cmd: Command) => {
      await runKnockout(cmd.optsWithGlobals<KnockoutCliOptions>());
    });
}

async function readScenes(path: string, fromDefault: boolean): Promise<Map<string, SceneBoxes>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new UsageError(
      fromDefault ? `no scenes.jsonl beside the data file (${path}): give --scenes FILE with the object boxes` : `cannot read scenes file ${path}: no such file`,
    );
  }
  try {
    const scenes = parseScenes(text, path);
    if (scenes.size === 0) throw new Error(`${path} holds no scenes`);
    return scenes;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

async function runKnockout(opts: KnockoutCliOptions): Promise<void> {
  const t0 = performance.now();
  if (opts.layers?.length === 0) throw new UsageError('--layers takes at least one index');
  if (opts.layers && new Set(opts.layers).size !== opts.layers.length) throw new UsageError(`--layers ${opts.layers.join(',')} names one twice`);
  await checkOutDir(opts.out);
  const all = await readData(opts.data, false);
  const spatial = all.filter(isSpatialMain);
  if (spatial.length === 0) throw new UsageError(`data file ${opts.data} holds no spatial questions (type "spatial"); knockout asks "Where is the A in relation to the B?"`);
  const items = opts.limit !== undefined ? spatial.slice(0, opts.limit) : spatial;
  const scenesPath = opts.scenes ?? join(dirname(opts.data), 'scenes.jsonl');
  const scenes = await readScenes(scenesPath, opts.scenes === undefined);
  for (const item of items) {
    const id = sceneIdOfImage(item.imagePath);
    const scene = scenes.get(id);
    if (!scene) throw new UsageError(`question ${item.id}: no scene ${id} (the name of its image ${item.imagePath}) in ${scenesPath}`);
    if (!namedObjects(item.question, scene)) throw new UsageError(`question ${item.id}: names ${scene.objects.length === 0 ? 'objects of an empty scene' : 'not exactly two'} of scene ${id}'s objects (${scene.objects.map((o) => o.name).join(', ')})`);
  }
  await checkImages(items, 'knockout');
  await checkFolder(opts.model);
  const dims = await configDims(opts.model);
  const bad = opts.layers?.find((l) => l >= dims.text.layers);
  if (bad !== undefined) throw new UsageError(`--layers ${bad} is out of range: the model has ${dims.text.layers} text layers (0..${dims.text.layers - 1})`);
  const folder = nodeFolder(opts.model);
  const tokenizer = await Tokenizer.fromFolder(folder);
  const eosTokenIds = await eosIds(opts.model, tokenizer);

  const gpu = await acquireGpu();
  let result: KnockoutResult;
  let seconds: number;
  try {
    const ctx = new GpuContext(gpu);
    const model = await loadModel(ctx, folder, opts);
    const line = progressLine(process.stderr);
    const runs = 1 + 2 * ((opts.layers?.length ?? dims.text.layers) + 1);
    const t1 = performance.now();
    try {
      result = await knockoutByLayer(model, tokenizer, items, {
        scenes,
        seed: opts.seed,
        layers: opts.layers,
        maxNewTokens: opts.maxNewTokens,
        eosTokenIds,
        onProgress: (done, total) => line?.draw(done, total, (bar, rate, eta) => `knockout [${bar}] ${done}/${total} questions (${runs} runs each)  ${rate.toFixed(2)} q/s  ETA ${eta.toFixed(0)} s`),
      });
    } finally {
      line?.done();
    }
    seconds = (performance.now() - t1) / 1000;
  } finally {
    gpu.destroy();
  }

  const meta = { model: opts.model, data: opts.data, scenes: scenesPath, limit: opts.limit ?? null, max_new_tokens: opts.maxNewTokens };
  const files: [string, string][] = [
    ['knockout.json', `${JSON.stringify(knockoutJson(result, meta), (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 1)}\n`],
    ['knockout.csv', knockoutCsv(result)],
    ['knockout.md', knockoutMarkdown(result)],
  ];
  await mkdir(opts.out, { recursive: true }).catch((e: Error) => {
    throw new Error(`--out ${opts.out}: cannot create the folder: ${e.message}`);
  });
  for (const [name, text] of files) await writeAtomic(join(opts.out, name), text);
  process.stdout.write(formatKnockout(result));
  process.stdout.write(`wrote ${files.map(([n]) => join(opts.out, n)).join(', ')}\n`);
  if (opts.verbose) {
    const runs = result.questions * (1 + 2 * result.runs.length);
    process.stderr.write(`${runs} answers in ${seconds.toFixed(1)} s (${(runs / seconds).toFixed(2)}/s); ${((performance.now() - t0) / 1000).toFixed(1)} s in all\n`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Outputs

const summaryJson = (s: KnockoutSummary) => ({ total: s.total, correct: s.correct, accuracy: s.accuracy, mean_p: s.meanP, relative_change: s.relativeChange });

/** knockout.json: settings, summaries, attention per layer, every question. */
export function knockoutJson(r: KnockoutResult, meta: Record<string, unknown> = {}) {
  return {
    ...meta,
    method: 'attention_knockout, queries "last", keys = image tokens whose cell centre lies in either named object\'s box; control = as many random other image tokens',
    seed: r.seed,
    text_layers: r.layers,
    grid: r.grid,
    questions: r.questions,
    skipped: r.skipped,
    mean_keys: r.meanKeys,
    mean_random_keys: r.meanRandomKeys,
    fallbacks: r.fallbacks,
    baseline: summaryJson(r.baseline),
    runs: r.runs.map((run) => ({ layer: run.layer, objects: summaryJson(run.objects), random: summaryJson(run.random) })),
    attention: r.attention,
    examples: r.examples.map((e) => ({
      id: e.id,
      scene: e.scene,
      answer: e.answer,
      objects: e.objects,
      object_tokens: e.objectTokens,
      fallback: e.fallback,
      keys: e.keys,
      random_keys: e.randomKeys,
      baseline: e.baseline,
      runs: e.runs.map((x, i) => ({ layer: r.runs[i]!.layer, objects: x.objects, random: x.random })),
      attention: e.attention,
    })),
  };
}

const layerName = (l: number | 'all') => (l === 'all' ? 'all' : String(l));

/** One line per run and target, the baseline first. */
export function knockoutCsv(r: KnockoutResult): string {
  let out = 'run,layer,target,total,correct,accuracy,mean_p,relative_change\n';
  const line = (run: string, layer: string, target: string, s: KnockoutSummary) => `${run},${layer},${target},${s.total},${s.correct},${s.accuracy},${s.meanP},${s.relativeChange}\n`;
  out += line('baseline', '', 'none', r.baseline);
  for (const run of r.runs) {
    out += line(run.layer === 'all' ? 'all_layers' : 'layer', layerName(run.layer), 'objects', run.objects);
    out += line(run.layer === 'all' ? 'all_layers' : 'layer', layerName(run.layer), 'random', run.random);
  }
  return out;
}

const pct = (x: number) => (Number.isNaN(x) ? 'n/a' : `${(100 * x).toFixed(1)}%`);
const pts = (x: number) => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)}`;
const num = (x: number, d = 3) => (Number.isNaN(x) ? 'n/a' : x.toFixed(d));

function rows(r: KnockoutResult): string[][] {
  const b = r.baseline;
  const out: string[][] = [['knocked layer', 'objects: acc', 'Δ', 'P(answer)', 'rel. change', 'random: acc', 'Δ', 'P(answer)', 'rel. change']];
  out.push(['none (baseline)', pct(b.accuracy), '', num(b.meanP), '', '', '', '', '']);
  for (const run of r.runs) {
    const o = run.objects;
    const x = run.random;
    out.push([
      run.layer === 'all' ? 'all layers' : `layer ${run.layer}`,
      pct(o.accuracy),
      pts(o.accuracy - b.accuracy),
      num(o.meanP),
      pts(o.relativeChange) + '%',
      pct(x.accuracy),
      pts(x.accuracy - b.accuracy),
      num(x.meanP),
      pts(x.relativeChange) + '%',
    ]);
  }
  return out;
}

function attentionRows(r: KnockoutResult): string[][] {
  return [['layer', 'on named objects', 'on other image tokens', 'density ratio'], ...r.attention.map((a) => [String(a.layer), num(a.objects), num(a.other), num(a.density, 2)])];
}

function header(r: KnockoutResult): string {
  return (
    `knockout: last token -> named-object image tokens, ${r.questions} spatial question${r.questions === 1 ? '' : 's'}, ${r.grid[0]}x${r.grid[1]} image tokens, ` +
    `${num(r.meanKeys, 1)} knocked on average (control ${num(r.meanRandomKeys, 1)}), seed ${r.seed}` +
    (r.fallbacks ? `, ${r.fallbacks} object${r.fallbacks === 1 ? '' : 's'} smaller than a cell took its centre's cell` : '') +
    (r.skipped.length ? `, ${r.skipped.length} item${r.skipped.length === 1 ? '' : 's'} skipped` : '')
  );
}

function textTable(table: string[][]): string {
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  return table.map((row) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd()).join('\n') + '\n';
}

/** The printed summary: accuracy per knocked layer against the control, then the baseline attention per layer. */
export function formatKnockout(r: KnockoutResult): string {
  return `${header(r)}\n${textTable(rows(r))}\nbaseline attention of the last token (mean over heads):\n${textTable(attentionRows(r))}`;
}

function mdTable(table: string[][]): string {
  const [head, ...body] = table;
  return [`| ${head!.join(' | ')} |`, `|${head!.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`, ...body.map((row) => `| ${row.join(' | ')} |`)].join('\n') + '\n';
}

/** The tables in markdown. */
export function knockoutMarkdown(r: KnockoutResult): string {
  return `${header(r)}\n\n${mdTable(rows(r))}\nBaseline attention of the last token (mean over heads):\n\n${mdTable(attentionRows(r))}`;
}
