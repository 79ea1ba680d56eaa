// `vlmscope patch`: activation patching per text head (src/interp/patching.ts). A clean and a counterfactual input,
// given as two (image, prompt) pairs or made from synthetic spatial questions (the same scene with the two named
// objects swapped: src/eval/counterfactual.ts), are run once each; then, per (layer, head), the clean input with that
// head's z at the chosen rows replaced by its counterfactual value (patch_z). Writes the logit-difference recovery
// per (layer, head) as patch.csv, patch.json and a heatmap patch.png. Every input is checked before the model is
// loaded; nothing is written unless the whole run succeeds.

import { mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { intArg } from './args.js';
import { acquireGpu } from '../gpu/device.js';
import { GpuContext } from '../gpu/context.js';
import { encodePng, loadImageFile, type RgbImage } from '../io/image.js';
import { nodeFolder } from '../io/checkpoint.js';
import { Tokenizer } from '../io/tokenizer.js';
import type { PatchRows } from '../spec/spec.js';
import type { VlmModel } from '../models/vlm.js';
import type { ImageInput } from '../models/model.js';
import { type PatchingResult, type PatchingSummary, answerTokenId, patchHeads, summarizePatching } from '../interp/patching.js';
import { headsHeatmapPng } from '../interp/probes.js';
import { isSpatialMain, sceneIdOfImage } from '../interp/knockout.js';
import { type SceneRecord, type SpatialPair, pairForQuestion, parseSceneRecord, renderPair, sceneFromRecord } from '../eval/counterfactual.js';
import { indexListArg } from './sweep.js';
import { writeAtomic, checkOutDir } from './files.js';
import { checkFolder, configDims, dtypeOption, loadModel, modelOption } from './load.js';
import { UsageError } from './errors.js';
import { checkImages, readData } from './data.js';
import { progressLine } from './progress.js';

interface PatchCliOptions {
  model: string;
  image?: string;
  prompt?: string;
  cfImage?: string;
  cfPrompt?: string;
  answer?: string;
  other?: string;
  data?: string;
  scenes?: string;
  item?: string[];
  limit?: number;
  rows: RowsArg;
  layers?: number[];
  heads?: number[];
  top: number;
  out: string;
  dtype?: string;
  verbose?: boolean;
}

/** --rows: "last", "all", or prompt positions separated by commas (negative counts from the end). */
type RowsArg = 'last' | 'all' | number[];

function rowsArg(v: string): RowsArg {
  const t = v.trim();
  if (t === 'last' || t === 'all') return t;
  const parts = t.split(',').map((s) => s.trim());
  const out = parts.map((s) => {
    const n = Number(s);
    if (s === '' || !Number.isInteger(n)) throw new InvalidArgumentError('expected last, all, or prompt positions separated by commas (negative counts from the end), e.g. -1,-2');
    return n;
  });
  return out;
}

function itemArg(v: string, prev: string[] | undefined): string[] {
  const ids = v.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (ids.length === 0) throw new InvalidArgumentError('expected question ids separated by commas');
  return [...(prev ?? []), ...ids];
}

export function patchCommand(): Command {
  return new Command('patch')
    .description("activation patching per head: a clean and a counterfactual input, then one run per (layer, head) with that head's z at the chosen rows taken from the counterfactual; logit-difference recovery per head as CSV, JSON and a heatmap")
    .addOption(modelOption())
    .option('--image <file>', 'clean image (with --prompt and --cf-image: an explicit pair)')
    .option('--prompt <text>', "clean question, through the folder's chat template or the family's format as for generate")
    .option('--cf-image <file>', 'counterfactual image (same size, so the prompts have the same tokens)')
    .option('--cf-prompt <text>', 'counterfactual question (default: --prompt); it must tokenize to as many tokens as --prompt')
    .option('--answer <word>', "the clean answer (its first token is `answer` in LD); default: the clean run's top token")
    .option('--other <word>', "the counterfactual answer; default: the counterfactual run's top token")
    .option('--data <file>', "synthetic question JSONL (scripts/make-synthetic.ts): its spatial questions become pairs, the scene with the two named objects swapped as the counterfactual")
    .option('--scenes <file>', 'scenes.jsonl of --data (default: the one beside it)')
    .option('--item <ids>', 'question ids of --data to use, separated by commas (repeatable; default all its spatial questions)', itemArg)
    .option('--limit <n>', 'use at most the first n pairs of --data', intArg(1, 'a positive integer'))
    .option('--rows <rows>', 'query rows whose z is patched: last (the last prompt row), all, or prompt positions, e.g. -1,-3 (negative from the end)', rowsArg, 'last')
    .option('--layers <list>', 'text layers swept, e.g. 0,2 or 1-3 (default all)', indexListArg)
    .option('--heads <list>', 'heads swept in each layer (default all)', indexListArg)
    .option('--top <k>', 'heads framed in the heatmap and listed on stdout (highest recovery)', intArg(0, 'a non-negative integer'), 3)
    .option('--out <dir>', 'output folder for patch.csv, patch.json and patch.png (created if missing)', 'patch')
    .addOption(dtypeOption())
    .option('--verbose', 'print prompts and timings to stderr, and stack traces with errors')
    .addHelpText(
      'after',
      `
Method (per-head activation patching, noising direction). Runs: the counterfactual input once, capturing every
head's z (its output before o_proj) at the patched rows; the clean input once; then for each swept (layer, head) the
clean input with that head's z at those rows replaced by its counterfactual value (the patch_z intervention, a kernel
input). LD = logit(answer) - logit(other) at the last prompt row, answer/other the first tokens of the clean and the
counterfactual answers. recovery = (LD_patched - LD_clean) / (LD_cf - LD_clean): 0 = the head's counterfactual z
changes nothing, 1 = it alone moves the clean answer all the way to the counterfactual one.
A full sweep is 2 + layers x heads runs per pair (the organism: 34): no two heads are patched in one run, since their
effects are not additive (later layers and the final norm are nonlinear). Each patched run keeps the clean run's KV
cache for the rows before the first patched row; with --rows last that leaves one row per head, and those rows (each
seeing the prompt and itself only) are computed together as the rows of one forward: 3 forward passes per pair with
the numbers of the 34 separate runs.
With several pairs (--data), the recovery is that of the mean LDs; the per-pair mean is in the CSV and JSON too.

Outputs in --out (written only when the whole run succeeded):
  patch.csv   layer,head,recovery,mean_recovery,ld_patched (one line per swept head)
  patch.json  settings, LDs, recovery per (layer, head), every pair (tokens, LDs, recovery), skipped questions
  patch.png   layers (rows, layer 0 on top) x heads (columns), viridis over recovery 0..1 (clamped), grey = not
              swept, the --top heads framed in red
Exit codes: 0 ok, 1 runtime error, 2 usage error.

Examples:
  npx tsx scripts/make-synthetic.ts --out pairs --seed 7 --scenes 20 --types spatial
  vlmscope patch --data pairs/questions.jsonl --limit 10 --out patch/
  vlmscope patch --image a.png --cf-image b.png --prompt "Where is the red circle in relation to the blue square?" \\
    --answer left --other right --rows last --layers 1-3 --out patch-ab/`,
    )
    .action(async (_opts: PatchCliOptions, cmd: Command) => {
      await runPatch(cmd.optsWithGlobals<PatchCliOptions>());
    });
}

/** One pair as the CLI runs it: prompt texts, images, and the answer words when known. */
interface CliPair {
  id: string;
  prompt: string;
  cfPrompt: string;
  clean: RgbImage;
  counterfactual: RgbImage;
  answer?: string;
  other?: string;
  pair?: SpatialPair;
}

async function explicitPair(opts: PatchCliOptions): Promise<CliPair> {
  if (!opts.image || !opts.cfImage || opts.prompt === undefined) throw new UsageError('an explicit pair needs --image, --cf-image and --prompt (or give --data for synthetic pairs)');
  return {
    id: 'pair',
    prompt: opts.prompt,
    cfPrompt: opts.cfPrompt ?? opts.prompt,
    clean: await loadImageFile(opts.image),
    counterfactual: await loadImageFile(opts.cfImage),
    answer: opts.answer,
    other: opts.other,
  };
}

async function readSceneRecords(path: string, fromDefault: boolean): Promise<Map<string, SceneRecord>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new UsageError(fromDefault ? `no scenes.jsonl beside the data file (${path}): give --scenes FILE` : `cannot read scenes file ${path}: no such file`);
  }
  const out = new Map<string, SceneRecord>();
  text.split('\n').forEach((raw, i) => {
    if (raw.trim() === '') return;
    let rec: SceneRecord;
    try {
      rec = parseSceneRecord(raw, `${path} line ${i + 1}`);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    out.set(rec.id, rec);
  });
  if (out.size === 0) throw new UsageError(`scenes file ${path} holds no scenes`);
  return out;
}

/** A pair, or why a question of --data gives none. */
type Candidate = { id: string; make: () => Promise<CliPair | { skip: string }> };

/**
 * The spatial questions of --data as pair makers (checked before the model loads: ids, scenes, images); a question
 * whose objects cannot be swapped gives the reason instead, and the run skips it.
 */
async function syntheticPairs(opts: PatchCliOptions): Promise<Candidate[]> {
  const all = await readData(opts.data!, false);
  let items = all.filter(isSpatialMain);
  if (items.length === 0) throw new UsageError(`data file ${opts.data} holds no spatial questions (type "spatial")`);
  if (opts.item) {
    const byId = new Map(all.map((it) => [it.id, it]));
    items = opts.item.map((id) => {
      const it = byId.get(id);
      if (!it) throw new UsageError(`--item ${id}: no question with that id in ${opts.data}`);
      if (!isSpatialMain(it)) throw new UsageError(`--item ${id} is not a spatial main question (type ${it.type})`);
      return it;
    });
  }
  const scenesPath = opts.scenes ?? join(dirname(opts.data!), 'scenes.jsonl');
  const records = await readSceneRecords(scenesPath, opts.scenes === undefined);
  await checkImages(items, 'patch');
  const scenes = items.map((item) => {
    const sceneId = sceneIdOfImage(item.imagePath);
    const rec = records.get(sceneId);
    if (!rec) throw new UsageError(`question ${item.id}: no scene ${sceneId} (the name of its image ${item.imagePath}) in ${scenesPath}`);
    return rec;
  });
  return items.map((item, k) => ({
    id: item.id,
    make: async () => {
      const rec = scenes[k]!;
      const swap = pairForQuestion(sceneFromRecord(rec), item);
      if (!swap.ok) return { skip: swap.reason };
      const images = renderPair(swap.pair);
      // The clean image is the rendered scene; the file beside the data must be that same picture.
      const file = await loadImageFile(item.imagePath);
      if (file.width !== images.clean.width || file.height !== images.clean.height || file.data.some((v, i) => v !== images.clean.data[i])) {
        throw new Error(`question ${item.id}: image ${item.imagePath} differs from scene ${rec.id} regenerated from its seed`);
      }
      return { id: item.id, prompt: item.question, cfPrompt: item.question, clean: images.clean, counterfactual: images.counterfactual, answer: swap.pair.answer, other: swap.pair.counterfactualAnswer, pair: swap.pair };
    },
  }));
}

/** The rows of --rows against a prompt of L tokens (negative positions from the end); errors name the option. */
function resolveRows(rows: RowsArg, L: number): PatchRows {
  if (rows === 'last' || rows === 'all') return rows;
  const out = rows.map((p) => {
    const r = p < 0 ? L + p : p;
    if (r < 0 || r >= L) throw new UsageError(`--rows ${p} is out of range: the prompt has ${L} tokens (positions 0..${L - 1}, or -${L}..-1 from the end)`);
    return r;
  });
  if (new Set(out).size !== out.length) throw new UsageError(`--rows ${rows.join(',')} names a row twice`);
  return out;
}

interface PairRun {
  pair: CliPair;
  result: PatchingResult;
  answerText: string;
  otherText: string;
}

async function runPatch(opts: PatchCliOptions): Promise<void> {
  const t0 = performance.now();
  const explicit = opts.image !== undefined || opts.cfImage !== undefined || opts.prompt !== undefined || opts.cfPrompt !== undefined;
  if (explicit && opts.data !== undefined) throw new UsageError('give an explicit pair (--image, --cf-image, --prompt) or --data, not both');
  if (!explicit && opts.data === undefined) throw new UsageError('give an explicit pair (--image, --cf-image, --prompt) or --data with synthetic spatial questions');
  if (opts.data === undefined && (opts.item || opts.limit !== undefined || opts.scenes)) throw new UsageError('--item, --limit and --scenes go with --data');
  if (opts.data !== undefined && (opts.answer !== undefined || opts.other !== undefined)) throw new UsageError('--answer and --other go with an explicit pair (synthetic pairs know their answers)');
  for (const [k, v] of [['--layers', opts.layers], ['--heads', opts.heads]] as const) {
    if (v && v.length === 0) throw new UsageError(`${k} takes at least one index`);
    if (v && new Set(v).size !== v.length) throw new UsageError(`${k} ${v.join(',')} names one twice`);
  }
  await checkOutDir(opts.out);
  await checkFolder(opts.model);
  const dims = await configDims(opts.model);
  const badLayer = opts.layers?.find((l) => l >= dims.text.layers);
  if (badLayer !== undefined) throw new UsageError(`--layers ${badLayer} is out of range: the model has ${dims.text.layers} text layers (0..${dims.text.layers - 1})`);
  const badHead = opts.heads?.find((h) => h >= dims.text.heads);
  if (badHead !== undefined) throw new UsageError(`--heads ${badHead} is out of range: the model has ${dims.text.heads} heads per text layer (0..${dims.text.heads - 1})`);
  const candidates: Candidate[] = explicit ? [{ id: 'pair', make: () => explicitPair(opts) }] : await syntheticPairs(opts);
  const folder = nodeFolder(opts.model);
  const tokenizer = await Tokenizer.fromFolder(folder);

  const gpu = await acquireGpu();
  const runs: PairRun[] = [];
  const skipped: { id: string; reason: string }[] = [];
  try {
    const ctx = new GpuContext(gpu);
    const model = await loadModel(ctx, folder, opts);
    // Pairs in order until --limit; a synthetic question that gives no usable pair is skipped with the reason.
    const pairs: Prepared[] = [];
    for (const { id, make } of candidates) {
      if (opts.limit !== undefined && pairs.length >= opts.limit) break;
      const c = await make();
      const p = 'skip' in c ? c : prepare(model, tokenizer, c, opts);
      if ('skip' in p) {
        if (explicit) throw new UsageError(p.skip);
        skipped.push({ id, reason: p.skip });
        continue;
      }
      pairs.push(p);
    }
    if (pairs.length === 0) throw new Error(`no question of ${opts.data} gives a pair: ${skipped.map((s) => `${s.id}: ${s.reason}`).join('; ')}`);
    const line = progressLine(process.stderr);
    try {
      for (const [k, p] of pairs.entries()) {
        runs.push(await runPair(model, tokenizer, p, opts, (done, total) =>
          line?.draw(k * total + done, pairs.length * total, (bar, rate, eta) => `patch [${bar}] pair ${k + 1}/${pairs.length}, run ${done}/${total}  ${rate.toFixed(1)} runs/s  ETA ${eta.toFixed(0)} s`),
        ));
      }
    } finally {
      line?.done();
    }
  } finally {
    gpu.destroy();
  }

  const summary = summarizePatching(runs.map((r) => r.result));
  const grid = fullGrid(summary, dims.text.layers, dims.text.heads);
  const top = topHeads(summary, opts.top);
  const meta = { model: opts.model, rows: opts.rows, data: opts.data ?? null };
  const files: [string, string | Uint8Array][] = [
    ['patch.csv', patchCsv(summary)],
    ['patch.json', `${JSON.stringify(patchJson(summary, runs, skipped, meta), (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 1)}\n`],
    ['patch.png', headsHeatmapPng(grid, { min: 0, max: 1, highlight: top })],
  ];
  await mkdir(opts.out, { recursive: true }).catch((e: Error) => {
    throw new Error(`--out ${opts.out}: cannot create the folder: ${e.message}`);
  });
  for (const [name, data] of files) await writeAtomic(join(opts.out, name), data);
  process.stdout.write(formatPatch(summary, runs, top, skipped));
  process.stdout.write(`wrote ${files.map(([n]) => join(opts.out, n)).join(', ')}\n`);
  if (opts.verbose) process.stderr.write(`${summary.variants} patched heads in ${summary.runs} forward passes (${summary.prefilledRows} prompt rows prefilled) in ${summary.seconds.toFixed(1)} s; ${((performance.now() - t0) / 1000).toFixed(1)} s in all\n`);
}

/** A pair made into model inputs with its answer tokens. */
interface Prepared {
  pair: CliPair;
  clean: { ids: number[]; pixelValues: ImageInput[] };
  counterfactual: { ids: number[]; pixelValues: ImageInput[] };
  answer?: number;
  other?: number;
}

/** Prompts through the processor and the answers' first tokens; why not, when the pair cannot be patched. */
function prepare(model: VlmModel, tokenizer: Tokenizer, p: CliPair, opts: PatchCliOptions): Prepared | { skip: string } {
  const processor = model.createProcessor(tokenizer);
  for (const [flag, text] of [['--prompt', p.prompt], ['--cf-prompt', p.cfPrompt]] as const) {
    if (text.includes(processor.imageToken)) throw new UsageError(`${flag} contains ${processor.imageToken}: leave it out, the image's placeholder is put in the prompt for you`);
  }
  const prompt = processor.formatPrompt(p.prompt, 1);
  const cfPrompt = processor.formatPrompt(p.cfPrompt, 1);
  const clean = processor.process(prompt, [p.clean]);
  const cf = processor.process(cfPrompt, [p.counterfactual]);
  if (opts.verbose) process.stderr.write(`${p.id}: prompt ${JSON.stringify(prompt)} (${clean.ids.length} tokens)\n`);
  if (clean.ids.length !== cf.ids.length) {
    return { skip: `the clean prompt makes ${clean.ids.length} tokens and the counterfactual one ${cf.ids.length}; patching needs the same token layout (same question length, same image size)` };
  }
  const answer = p.answer !== undefined ? answerTokenId(tokenizer, prompt, p.answer) : undefined;
  const other = p.other !== undefined ? answerTokenId(tokenizer, cfPrompt, p.other) : undefined;
  // LD reads the first answer token at the last prompt row: answers that start alike cannot be told apart there.
  if (answer !== undefined && answer === other) {
    return { skip: `the answers "${p.answer}" and "${p.other}" start with the same token (${JSON.stringify(tokenizer.idToToken(answer) ?? '')}, id ${answer}); the logit difference of the first token cannot tell them apart` };
  }
  return { pair: p, clean: { ids: clean.ids, pixelValues: clean.pixelValues }, counterfactual: { ids: cf.ids, pixelValues: cf.pixelValues }, answer, other };
}

async function runPair(model: VlmModel, tokenizer: Tokenizer, prepared: Prepared, opts: PatchCliOptions, onProgress: (done: number, total: number) => void): Promise<PairRun> {
  const { pair: p, clean, counterfactual: cf, answer, other } = prepared;
  const result = await patchHeads(model, clean, cf, {
    answer,
    other,
    rows: resolveRows(opts.rows, clean.ids.length),
    layers: opts.layers,
    heads: opts.heads,
    onProgress,
  });
  const text = (id: number) => tokenizer.decode([id], { skipSpecialTokens: false });
  return { pair: p, result, answerText: text(result.answer), otherText: text(result.other) };
}

// ---------------------------------------------------------------------------------------------------------------
// Outputs

/** Recovery over the whole layers x heads grid (NaN where not swept: grey in the heatmap). */
function fullGrid(s: PatchingSummary, layers: number, heads: number): number[][] {
  const grid = Array.from({ length: layers }, () => new Array<number>(heads).fill(NaN));
  s.layers.forEach((l, li) => s.heads.forEach((h, hi) => (grid[l]![h] = s.recovery[li]![hi]!)));
  return grid;
}

/** The k swept heads with the highest recovery (NaN last; ties by the mean per-pair recovery, then the lower LD). */
export function topHeads(s: PatchingSummary, k: number): { layer: number; head: number; recovery: number }[] {
  const all = s.layers.flatMap((l, li) => s.heads.map((h, hi) => ({ layer: l, head: h, recovery: s.recovery[li]![hi]!, mean: s.meanRecovery[li]![hi]! })));
  const key = (x: number) => (Number.isNaN(x) ? -Infinity : x);
  all.sort((a, b) => key(b.recovery) - key(a.recovery) || key(b.mean) - key(a.mean));
  return all.slice(0, k).map(({ layer, head, recovery }) => ({ layer, head, recovery }));
}

/** One line per swept head. */
export function patchCsv(s: PatchingSummary): string {
  let out = 'layer,head,recovery,mean_recovery,ld_patched\n';
  s.layers.forEach((l, li) => s.heads.forEach((h, hi) => (out += `${l},${h},${s.recovery[li]![hi]},${s.meanRecovery[li]![hi]},${s.ldPatched[li]![hi]}\n`)));
  return out;
}

function patchJson(s: PatchingSummary, runs: PairRun[], skipped: { id: string; reason: string }[], meta: Record<string, unknown>) {
  return {
    ...meta,
    method: 'per-head activation patching (noising): the clean input with one head\'s z at the patched rows taken from the counterfactual run; LD = logit(answer) - logit(other) at the last prompt row; recovery = (LD_patched - LD_clean) / (LD_cf - LD_clean)',
    layers: s.layers,
    heads: s.heads,
    pairs: s.pairs,
    runs: s.runs,
    variants: s.variants,
    prefilled_rows: s.prefilledRows,
    seconds: s.seconds,
    ld_clean: s.ldClean,
    ld_counterfactual: s.ldCounterfactual,
    recovery: s.recovery,
    mean_recovery: s.meanRecovery,
    ld_patched: s.ldPatched,
    examples: runs.map((r) => ({
      id: r.pair.id,
      prompt: r.pair.prompt,
      counterfactual_prompt: r.pair.cfPrompt,
      ...(r.pair.pair
        ? { objects: [r.pair.pair.a.name, r.pair.pair.b.name], answer: r.pair.pair.answer, counterfactual_answer: r.pair.pair.counterfactualAnswer, counterfactual_objects: r.pair.pair.counterfactual.objects }
        : {}),
      rows: r.result.rows,
      answer_token: r.result.answer,
      answer_text: r.answerText,
      other_token: r.result.other,
      other_text: r.otherText,
      ld_clean: r.result.ldClean,
      ld_counterfactual: r.result.ldCounterfactual,
      ld_patched: r.result.ldPatched,
      recovery: r.result.recovery,
    })),
    skipped,
  };
}

const fmt = (x: number) => (Number.isNaN(x) ? 'n/a' : x.toFixed(3));

/** The printed summary: LDs, a layers x heads table of recovery, the top heads. */
export function formatPatch(s: PatchingSummary, runs: PairRun[], top: { layer: number; head: number; recovery: number }[], skipped: { id: string; reason: string }[]): string {
  const first = runs[0]!;
  const tokens = runs.length === 1 ? ` (answer ${JSON.stringify(first.answerText)} vs ${JSON.stringify(first.otherText)})` : '';
  let out = `patching: ${s.pairs} pair${s.pairs === 1 ? '' : 's'}${tokens}, ${first.result.rows.length === 1 ? `row ${first.result.rows[0]}` : `${first.result.rows.length} rows`} patched, ${s.variants} head${s.variants === 1 ? '' : 's'} in ${s.runs} runs` +
    (skipped.length ? `, ${skipped.length} question${skipped.length === 1 ? '' : 's'} skipped` : '') + '\n';
  out += `LD clean ${fmt(s.ldClean)}, LD counterfactual ${fmt(s.ldCounterfactual)}\n`;
  const table = [['layer \\ head', ...s.heads.map(String)], ...s.layers.map((l, li) => [String(l), ...s.recovery[li]!.map(fmt)])];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  out += 'recovery = (LD_patched - LD_clean) / (LD_cf - LD_clean):\n';
  out += table.map((row) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')).join('\n') + '\n';
  if (top.length) out += `top heads: ${top.map((t) => `L${t.layer}H${t.head} ${fmt(t.recovery)}`).join(', ')}\n`;
  return out;
}
