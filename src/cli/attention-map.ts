// `vlmscope attention-map`: one prefill of a prompt about one image, the attention of one query row (the last prompt
// position by default: the row that predicts the answer) over the image tokens at one text layer, drawn over the image
// as the model saw it with the lab page's colouring, as a PNG: one head, the mean of some or all heads, or every head
// as a grid of panels (--grid). The picture is composed by src/interp/attention-png.ts.

import { stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { intArg } from './args.js';
import { acquireGpu } from '../gpu/device.js';
import { GpuContext } from '../gpu/context.js';
import { encodePng, loadImageFile } from '../io/image.js';
import { nodeFolder } from '../io/checkpoint.js';
import { Tokenizer } from '../io/tokenizer.js';
import { parseCapture, type ModelDims } from '../spec/spec.js';
import { imageAttention, imageSpans, meanOf } from '../interp/attention-map.js';
import { attentionMapImage, viewRuns } from '../interp/attention-png.js';
import { writeAtomic } from './files.js';
import { checkFolder, configDims, dtypeOption, loadModel, memoryBudgetOption, modelOption } from './load.js';
import { UsageError } from './errors.js';

interface AttentionMapOptions {
  model: string;
  image: string;
  prompt: string;
  layer: number;
  head?: number;
  heads?: number[];
  query: number | 'last';
  grid?: boolean;
  out: string;
  dtype?: string;
  memoryBudget?: number;
  verbose?: boolean;
}

/** --query: "last" or a token position (negative counts from the end: -1 = last). */
function queryArg(v: string): number | 'last' {
  if (v.trim() === 'last') return 'last';
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n)) throw new InvalidArgumentError('expected "last" or a token position (an integer; negative counts from the end)');
  return n;
}

/** --heads: head indices separated by commas (repeatable). */
function headsArg(v: string, prev: number[] | undefined): number[] {
  const parts = v.split(',').map((s) => s.trim());
  const out = parts.map((s) => {
    const n = Number(s);
    if (s === '' || !Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected head indices separated by commas, e.g. 0,3');
    return n;
  });
  return [...(prev ?? []), ...out];
}

export function attentionMapCommand(): Command {
  return new Command('attention-map')
    .description("draw the attention of a query token over the image tokens at one layer over the image, as a PNG (one head, a mean of heads, or every head in a grid)")
    .addOption(modelOption())
    .requiredOption('--image <file>', 'PNG or JPEG image (one; its placeholder is put in the prompt for you)')
    .requiredOption('--prompt <text>', "the question or instruction, wrapped in the folder's chat template or the family's format as for generate")
    .requiredOption('--layer <l>', 'text layer whose attention is drawn (0-based)', intArg(0, 'a non-negative integer'))
    .option('--head <h>', 'draw this head (default: the mean of all heads of the layer)', intArg(0, 'a non-negative integer'))
    .option('--heads <list>', 'draw the mean of these heads, e.g. 0,3 (with --grid: one panel for each of them)', headsArg)
    .option('--query <pos>', 'the query row: "last" (the last prompt position, which predicts the answer) or a token position, negative counting from the end', queryArg, 'last')
    .option('--grid', 'one panel per head of the layer (or of --heads), row-major in a near-square grid with thin dark separators')
    .requiredOption('--out <file>', 'output PNG file')
    .addOption(dtypeOption())
    .addOption(memoryBudgetOption())
    .option('--verbose', 'print the prompt to stderr, and stack traces with errors')
    .addHelpText(
      'after',
      `
The prompt is prefilled once (nothing is generated) with the attention pattern of --layer captured at the --query row.
The picture is the image as the model saw it (LLaVA: resized and centre-cropped; Qwen: resized to its 28-px blocks;
Idefics3 / SmolVLM: the resized image the crops were cut from), upscaled by a whole factor (nearest neighbour) to at
least 256 px on its longer side, with each image token's attention as a viridis overlay whose opacity grows with the
value, normalised to the panel's maximum: the colouring of the attention lab (npm run web). Idefics3 / SmolVLM
images split into crops get the global tile's map as a second panel on the right, on the crops' colour scale.
--grid panels are each normalised to their own maximum. A line on stdout says what was drawn and the share of the
query's attention that went to the image tokens. Nothing is written when the run fails. Exit codes: 0 ok, 1 runtime
error, 2 usage error.

Examples:
  vlmscope attention-map --image examples/scene.png --prompt "$(cat examples/scene-question.txt)" --layer 3 --out map.png
  vlmscope attention-map --image examples/scene.png --prompt "Where is the green circle?" --layer 2 --grid --out heads.png
  vlmscope attention-map --model ./llava-1.5-7b-hf --image photo.jpg --prompt "Where is the dog?" \\
    --layer 14 --heads 3,7,12 --query -1 --out dog.png`,
    )
    .action(async (_opts: AttentionMapOptions, cmd: Command) => {
      await runAttentionMap(cmd.optsWithGlobals<AttentionMapOptions>());
    });
}

/** Layer and heads against the model's text tower, before the weights are loaded. */
function checkHeads(opts: AttentionMapOptions, dims: ModelDims): number[] {
  const { layers, heads } = dims.text;
  if (opts.layer >= layers) throw new UsageError(`--layer ${opts.layer} is out of range: the model has ${layers} text layers (0..${layers - 1})`);
  const chosen = opts.head !== undefined ? [opts.head] : (opts.heads ?? Array.from({ length: heads }, (_, h) => h));
  for (const h of chosen) {
    if (h >= heads) throw new UsageError(`${opts.head !== undefined ? '--head' : '--heads'} ${h} is out of range: the model has ${heads} heads per text layer (0..${heads - 1})`);
  }
  if (new Set(chosen).size !== chosen.length) throw new UsageError(`--heads ${chosen.join(',')} names a head twice`);
  return chosen;
}

async function checkOut(out: string): Promise<void> {
  if (!/\.png$/i.test(out)) throw new UsageError(`--out ${out}: use a .png file name`);
  const dir = dirname(out);
  let isDir = false;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch {
    throw new UsageError(`--out ${out}: folder ${dir} does not exist`);
  }
  if (!isDir) throw new UsageError(`--out ${out}: ${dir} is not a folder`);
}

async function runAttentionMap(opts: AttentionMapOptions): Promise<void> {
  if (opts.head !== undefined && opts.heads !== undefined) throw new UsageError('give --head or --heads, not both');
  if (opts.grid && opts.head !== undefined) throw new UsageError('--grid draws one panel per head: leave --head out (use --heads to pick the heads)');
  await checkOut(opts.out);
  await checkFolder(opts.model);
  const heads = checkHeads(opts, await configDims(opts.model));
  const image = await loadImageFile(opts.image);
  const folder = nodeFolder(opts.model);
  const tokenizer = await Tokenizer.fromFolder(folder);

  const gpu = await acquireGpu();
  try {
    const ctx = new GpuContext(gpu);
    const model = await loadModel(ctx, folder, opts);
    const processor = model.createProcessor(tokenizer);
    if (opts.prompt.includes(processor.imageToken)) {
      throw new UsageError(`--prompt contains ${processor.imageToken}: leave it out, the image's placeholder is put in the prompt for you`);
    }
    const prompt = processor.formatPrompt(opts.prompt, 1);
    const { ids, pixelValues } = processor.process(prompt, [image]);
    if (opts.verbose) process.stderr.write(`prompt: ${JSON.stringify(prompt)} (${ids.length} tokens)\n`);
    const L = ids.length;
    const q = opts.query === 'last' ? L - 1 : opts.query < 0 ? L + opts.query : opts.query;
    if (q < 0 || q >= L) throw new UsageError(`--query ${opts.query} is out of range: the prompt has ${L} tokens (positions 0..${L - 1}, or -${L}..-1 from the end)`);

    const view = model.imageView(image);
    const spans = imageSpans(ids, model.imageTokenId);
    if (spans.length !== viewRuns(view)) throw new Error(`internal: the prompt has ${spans.length} runs of image tokens, the image view ${viewRuns(view)}`);
    const capture = parseCapture({ pattern: [{ tower: 'text', layer: opts.layer, rows: [q] }] }, model.dims, 'attention-map capture');
    const r = await model.run({ ids, pixelValues, capture, maxNewTokens: 0 });
    const p = r.pattern.find((c) => c.tower === 'text' && c.layer === opts.layer);
    if (!p) throw new Error(`internal: no attention captured for text layer ${opts.layer}`);

    // perRun[run][head]: the query's attention over each run of image tokens, per head of the layer.
    const perRun = spans.map((s) => imageAttention(p, s, 0));
    const mass = (hs: readonly number[]) => hs.reduce((a, h) => a + perRun.reduce((b, run) => b + run[h]!.reduce((x, y) => x + y, 0), 0), 0) / hs.length;
    const panels = opts.grid ? heads.map((h) => perRun.map((run) => run[h]!)) : [perRun.map((run) => meanOf(heads.map((h) => run[h]!)))];
    const picture = attentionMapImage(view, panels);
    await writeAtomic(opts.out, encodePng(picture));

    const what = opts.grid
      ? `${heads.length} head panels (${heads.join(',')})`
      : heads.length === 1
        ? `head ${heads[0]}`
        : heads.length === model.dims.text.heads
          ? 'the mean of all heads'
          : `the mean of heads ${heads.join(',')}`;
    const token = JSON.stringify(tokenizer.decode([ids[q]!]));
    const imageShare = opts.grid ? heads.map((h) => mass([h]).toFixed(3)).join(' ') : mass(heads).toFixed(3);
    process.stdout.write(
      `${opts.out}: ${picture.width}x${picture.height} px, layer ${opts.layer}, ${what}, query position ${q} of ${L} (${token}) over ${view.image.width}x${view.image.height} px ` +
        `(${view.grid[0]}x${view.grid[1]} image tokens${view.tiles?.global ? ' + the global tile' : ''}); attention on the image: ${imageShare}\n`,
    );
  } finally {
    gpu.destroy();
  }
}
