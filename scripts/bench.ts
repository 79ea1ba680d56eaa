// `npm run bench`: prefill and decode times of every family's forward (LLaVA, Qwen2-VL, Qwen2.5-VL) on its tiny
// fixture and on a larger random checkpoint of its layout generated here, and the cost of interventions and captures as ratios to a plain
// run measured in the same process; the interpretability workflow's costs: activation collection per example on
// the shipped organism (against plain answering of the same questions; also with paraphrased questions), a full
// per-head activation-patching sweep per swapped-object pair (against plain answering), and fitting every probe of a 32-layer x
// 32-head model shape on synthetic features with the batched GPU kernel (against the CPU fit of the same
// problem); AdaptVis per example on the organism (plain pass to the first token + the answer reusing its prefix,
// without the reuse, and their code's two full generations) as ratios to one plain generation.
// Results go to bench-results/bench.json (and are printed).

import { mkdtemp, mkdir, readFile, writeFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { acquireGpu } from '../src/gpu/device.js';
import { GpuContext } from '../src/gpu/context.js';
import { LlavaModel } from '../src/models/llava.js';
import type { ImageInput, RunInput } from '../src/models/model.js';
import type { VlmModel } from '../src/models/vlm.js';
import { loadModel } from '../src/models/load.js';
import { writeRandomLlava } from '../src/models/random-llava.js';
import { qwenTokenIds, writeRandomQwen, type RandomQwenSpec } from '../src/models/random-qwen.js';
import { idefics3TokenIds, writeRandomIdefics3, type RandomIdefics3Spec } from '../src/models/random-idefics3.js';
import { idefics3ImagePromptString } from '../src/models/idefics3/image-processor.js';
import { isTiledImage } from '../src/models/model.js';
import { decodeImage, type RgbImage } from '../src/io/image.js';
import { parseCapture, parseInterventions, type ModelDims } from '../src/spec/spec.js';
import { encodePng, loadImageFile } from '../src/io/image.js';
import { nodeFolder } from '../src/io/checkpoint.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { generateScene, iterateDataset, mulberry32, renderScene, sceneImagePath } from '../src/eval/synthetic.js';
import { readQuestions } from '../src/eval/dataset.js';
import { evaluate } from '../src/eval/evaluate.js';
import { generate } from '../src/generate/generate.js';
import { adaptVis } from '../src/generate/adaptvis.js';
import { collectActivations } from '../src/interp/collect.js';
import { fitProbes, type ProbeExample } from '../src/interp/probes.js';
import { answerTokenId, patchHeads } from '../src/interp/patching.js';
import { renderPair, spatialPairs } from '../src/eval/counterfactual.js';

const REPS = Number(process.env.BENCH_REPS ?? 3);
/**
 * BENCH_ONLY=forward|collect|patching|adaptvis|probes runs one part, interp all but forward (BENCH_ONLY=kernels:
 * only scripts/bench-kernels.ts).
 */
const ONLY = process.env.BENCH_ONLY ?? '';
if (ONLY === 'kernels') process.exit(0);
const NEW_TOKENS = Number(process.env.BENCH_TOKENS ?? 16);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Every intervention of the contract switched on (head scales on all heads, image temperature everywhere). */
function allInterventions(d: ModelDims) {
  const headScale = (['text', 'vision'] as const).flatMap((tower) =>
    Array.from({ length: d[tower].layers }, (_, layer) => Array.from({ length: d[tower].heads }, (_, head) => ({ tower, layer, head, scale: 0.9 }))).flat(),
  );
  return parseInterventions({ head_scale: headScale, image_temperature: { alpha: 1.5, queries: 'all' } }, d);
}

function allCaptures(d: ModelDims) {
  return parseCapture(
    {
      logits: 'all',
      pattern: [
        ...Array.from({ length: d.text.layers }, (_, layer) => ({ tower: 'text', layer })),
        ...Array.from({ length: d.vision.layers }, (_, layer) => ({ tower: 'vision', layer })),
      ],
      z: { positions: 'last' },
      image_features: true,
    },
    d,
  );
}

async function timeRuns(model: VlmModel, input: RunInput): Promise<{ prefillMs: number; decodeMsPerToken: number }> {
  await model.run({ ...input, maxNewTokens: 2 }); // warm-up: pipelines compiled, buffers sized
  const prefill: number[] = [];
  const decode: number[] = [];
  for (let i = 0; i < REPS; i++) {
    const r = await model.run({ ...input, maxNewTokens: NEW_TOKENS });
    prefill.push(r.timings.prefillMs);
    decode.push(r.timings.decodeMs / Math.max(1, r.timings.decodeSteps));
  }
  return { prefillMs: median(prefill), decodeMsPerToken: median(decode) };
}

async function benchModel(label: string, ctx: GpuContext, dir: string, ids: number[], pixels: ImageInput) {
  const model = await loadModel(ctx, dir);
  const base: RunInput = { ids, pixelValues: [pixels] };
  const plain = await timeRuns(model, base);
  const intervened = await timeRuns(model, { ...base, interventions: allInterventions(model.dims) });
  const full = await timeRuns(model, { ...base, interventions: allInterventions(model.dims), capture: allCaptures(model.dims) });
  // Issue 13's interventions: the last token -> image edges knocked out in every layer (a bitset per layer and
  // forward), and vision_token_add along two random directions (two thin matmuls over the image features).
  const knocked = await timeRuns(model, { ...base, interventions: parseInterventions({ attention_knockout: [{ queries: 'all', keys: 'image' }] }, model.dims) });
  const D = model.hiddenSize;
  const directions = [0, 1].map((k) => Array.from({ length: D }, (_, i) => Math.sin(i * 0.37 + k)));
  const added = await timeRuns(model, { ...base, interventions: parseInterventions({ vision_token_add: { alpha: 4, directions } }, model.dims) });
  model.destroy();
  const row = {
    model: label,
    family: model.type,
    tokens: ids.length,
    vision_tokens: model.visionEncoder.plan([pixels]).tokens[0],
    prefill_ms: +plain.prefillMs.toFixed(1),
    decode_ms_per_token: +plain.decodeMsPerToken.toFixed(2),
    interventions_prefill_ratio: +(intervened.prefillMs / plain.prefillMs).toFixed(3),
    interventions_decode_ratio: +(intervened.decodeMsPerToken / plain.decodeMsPerToken).toFixed(3),
    interventions_and_captures_prefill_ratio: +(full.prefillMs / plain.prefillMs).toFixed(3),
    interventions_and_captures_decode_ratio: +(full.decodeMsPerToken / plain.decodeMsPerToken).toFixed(3),
    knockout_prefill_ratio: +(knocked.prefillMs / plain.prefillMs).toFixed(3),
    knockout_decode_ratio: +(knocked.decodeMsPerToken / plain.decodeMsPerToken).toFixed(3),
    vision_token_add_prefill_ratio: +(added.prefillMs / plain.prefillMs).toFixed(3),
  };
  console.log(JSON.stringify(row));
  return row;
}

/** `vlmscope collect` per example on the organism (pool: last prompt token), and plain answering of the same items. */
async function benchCollect(ctx: GpuContext, organism: string, wordings: 'fixed' | 'all' = 'fixed') {
  const dir = await mkdtemp(join(tmpdir(), 'vlmscope-bench-collect-'));
  await mkdir(join(dir, 'images'));
  const lines: string[] = [];
  for (const s of iterateDataset({ seed: 4242, scenes: Number(process.env.BENCH_SCENES ?? 4), size: 64, wordings })) {
    await writeFile(join(dir, sceneImagePath(s.id)), encodePng(renderScene(s.scene)));
    lines.push(...s.items.map((i) => JSON.stringify(i)));
  }
  await writeFile(join(dir, 'questions.jsonl'), lines.join('\n') + '\n');
  const items = await readQuestions(join(dir, 'questions.jsonl'));
  const model = await LlavaModel.load(ctx, organism);
  const tokenizer = await Tokenizer.fromFolder(nodeFolder(organism));
  await evaluate(model, tokenizer, items.slice(0, 2)); // warm-up
  let t0 = performance.now();
  const report = await evaluate(model, tokenizer, items);
  const answerMs = (performance.now() - t0) / report.total;
  t0 = performance.now();
  const rows = await collectActivations(model, tokenizer, items, { pool: 'last_prompt', concatLayerMean: true });
  const collectMs = (performance.now() - t0) / rows.length;
  model.destroy();
  await rm(dir, { recursive: true, force: true });
  const row = {
    task: `collect z (organism, pool last, [z; layer mean], chained sub-questions${wordings === 'all' ? ', paraphrased: every wording set' : ''})`,
    examples: rows.length,
    collect_ms_per_example: +collectMs.toFixed(1),
    answer_ms_per_question: +answerMs.toFixed(1),
    collect_over_answer_ratio: +(collectMs / answerMs).toFixed(3),
  };
  console.log(JSON.stringify(row));
  return row;
}

/**
 * A full per-head activation-patching sweep (every text layer x head, z at the last prompt row) on the organism's
 * swapped-object pairs, against plain answering of the same clean question (greedy, at most 4 tokens): the default
 * sweep (the patched one-row runs batched into forwards on the clean prefix), one run per head on the prefix, and
 * one full run per head (no reuse). Runs and seconds per pair; interleaved per pair.
 */
async function benchPatching(ctx: GpuContext, organism: string) {
  const model = await LlavaModel.load(ctx, organism);
  const tokenizer = await Tokenizer.fromFolder(nodeFolder(organism));
  const processor = model.createProcessor(tokenizer);
  const nPairs = Number(process.env.BENCH_PAIRS ?? 4);
  const pairs = [];
  for (let seed = 1; pairs.length < nPairs && seed < 200; seed++) {
    const pair = spatialPairs(generateScene(seed * 7919))[0];
    if (pair) pairs.push(pair);
  }
  const ms = { plain: 0, batched: 0, perHead: 0, full: 0 };
  const runs = { batched: 0, perHead: 0, full: 0 };
  const eos = tokenizer.eosTokenId != null ? [tokenizer.eosTokenId] : [];
  for (const [k, pair] of pairs.entries()) {
    const images = renderPair(pair);
    const prompt = processor.formatPrompt(pair.question, 1);
    const input = (img: RgbImage) => {
      const pixels = model.preprocess(img);
      return { ids: processor.encodeText(prompt, [pixels]).ids, pixelValues: [pixels] };
    };
    const clean = input(images.clean);
    const cf = input(images.counterfactual);
    const opts = { answer: answerTokenId(tokenizer, prompt, pair.answer), other: answerTokenId(tokenizer, prompt, pair.counterfactualAnswer) };
    if (k === 0) await patchHeads(model, clean, cf, opts); // warm-up
    let t0 = performance.now();
    await generate(model, { ...clean, maxNewTokens: 4, tokenizer, eosTokenIds: eos });
    ms.plain += performance.now() - t0;
    for (const [name, o] of [
      ['batched', {}],
      ['perHead', { batch: false as const }],
      ['full', { reuse: false }],
    ] as const) {
      t0 = performance.now();
      const r = await patchHeads(model, clean, cf, { ...opts, ...o });
      ms[name] += performance.now() - t0;
      runs[name] = r.runs;
    }
  }
  model.destroy();
  const n = pairs.length;
  const { layers, heads } = model.dims.text;
  const row = {
    task: `activation patching, every head (${layers} layers x ${heads} heads), z at the last prompt row, organism, per swapped-object pair`,
    pairs: n,
    variants_per_pair: layers * heads,
    forwards_per_pair: { batched: runs.batched, one_run_per_head: runs.perHead, no_reuse: runs.full },
    plain_answer_ms: +(ms.plain / n).toFixed(1),
    sweep_ms: +(ms.batched / n).toFixed(1),
    sweep_over_plain_answer: +(ms.batched / ms.plain).toFixed(3),
    one_run_per_head_over_plain_answer: +(ms.perHead / ms.plain).toFixed(3),
    no_reuse_over_plain_answer: +(ms.full / ms.plain).toFixed(3),
  };
  console.log(JSON.stringify(row));
  return row;
}

/**
 * AdaptVis per question on the organism against one plain generation of the same question (greedy, the eval
 * setting: at most 4 tokens): with the prefix reuse (pass 1 to the first token, pass 2 prefills the last prompt
 * row only), without it (pass 2 from scratch, vision tower included), and as their code runs it (two full
 * generations). Interleaved per question so drift hits all alike.
 */
async function benchAdaptVis(ctx: GpuContext, organism: string) {
  const dir = await mkdtemp(join(tmpdir(), 'vlmscope-bench-adaptvis-'));
  await mkdir(join(dir, 'images'));
  const lines: string[] = [];
  for (const s of iterateDataset({ seed: 4343, scenes: Number(process.env.BENCH_ADAPTVIS_SCENES ?? 2), size: 64 })) {
    await writeFile(join(dir, sceneImagePath(s.id)), encodePng(renderScene(s.scene)));
    lines.push(...s.items.map((i) => JSON.stringify(i)));
  }
  await writeFile(join(dir, 'questions.jsonl'), lines.join('\n') + '\n');
  const items = (await readQuestions(join(dir, 'questions.jsonl'))).slice(0, Number(process.env.BENCH_ADAPTVIS_ITEMS ?? 3));
  const model = await LlavaModel.load(ctx, organism);
  const tokenizer = await Tokenizer.fromFolder(nodeFolder(organism));
  const processor = model.createProcessor(tokenizer);
  const gate = { threshold: 0.5, alphaLow: 0.5, alphaHigh: 1.5 };
  const variants = {
    plain: (a: Parameters<typeof generate>[1]) => generate(model, a),
    reuse: (a: Parameters<typeof generate>[1]) => adaptVis(model, { ...a, ...gate }),
    no_reuse: (a: Parameters<typeof generate>[1]) => adaptVis(model, { ...a, ...gate, reusePrefix: false }),
    authors: (a: Parameters<typeof generate>[1]) => adaptVis(model, { ...a, ...gate, reusePrefix: false, plainAnswer: true }),
  };
  const ms: Record<keyof typeof variants, number> = { plain: 0, reuse: 0, no_reuse: 0, authors: 0 };
  let rows = { recomputed: 0, prompt: 0 };
  // rep -1 warms up (pipelines compiled, buffers sized) on the first question only.
  for (let rep = -1; rep < REPS; rep++) {
    for (const item of rep < 0 ? items.slice(0, 1) : items) {
      const args = {
        ...processor.process(processor.formatPrompt(item.question, 1), [await loadImageFile(item.imagePath)]),
        maxNewTokens: 4,
        tokenizer,
        eosTokenIds: [...(tokenizer.eosTokenId != null ? [tokenizer.eosTokenId] : []), ...processor.stopTokenIds],
      };
      for (const [name, run] of Object.entries(variants) as [keyof typeof variants, (typeof variants)['plain']][]) {
        const t0 = performance.now();
        const r = await run(args);
        if (rep >= 0) ms[name] += performance.now() - t0;
        if (rep === 0 && name === 'reuse' && 'adaptvis' in r) {
          const info = (r as Awaited<ReturnType<typeof adaptVis>>).adaptvis.pass2.reuse!;
          rows = { recomputed: rows.recomputed + info.rows, prompt: rows.prompt + info.promptRows };
        }
      }
    }
  }
  model.destroy();
  await rm(dir, { recursive: true, force: true });
  const n = items.length * REPS;
  const row = {
    task: 'AdaptVis per question (organism, greedy, <= 4 tokens, queries last): cost as a ratio to one plain generation',
    examples: items.length,
    plain_ms_per_example: +(ms.plain / n).toFixed(1),
    adaptvis_reuse_ms_per_example: +(ms.reuse / n).toFixed(1),
    adaptvis_reuse_ratio: +(ms.reuse / ms.plain).toFixed(3),
    adaptvis_no_reuse_ratio: +(ms.no_reuse / ms.plain).toFixed(3),
    adaptvis_two_full_generations_ratio: +(ms.authors / ms.plain).toFixed(3),
    pass2_prompt_rows_recomputed: `${rows.recomputed} of ${rows.prompt}`,
  };
  console.log(JSON.stringify(row));
  return row;
}

/** Every probe of a 32 x 32-head model shape (synthetic features), batched on the GPU, against the CPU fit. */
async function benchProbes(ctx: GpuContext) {
  const layers = 32;
  const heads = 32;
  const dim = Number(process.env.BENCH_PROBE_DIM ?? 32);
  const rows = Number(process.env.BENCH_PROBE_ROWS ?? 96);
  const iterations = Number(process.env.BENCH_PROBE_ITERS ?? 100);
  const functions = ['low_level_perception', 'spatial_perception', 'relational_reasoning', 'decision'];
  const rand = mulberry32(99);
  const features = Float32Array.from({ length: rows * layers * heads * dim }, () => rand() * 2 - 1);
  const examples: ProbeExample[] = Array.from({ length: rows }, (_, i) => ({ id: i, mainId: Math.floor(i / 4), function: functions[i % 4]!, correct: rand() < 0.8 }));
  const opts = { features, layers, heads, dim, examples, seeds: [0], iterations };
  await fitProbes(ctx, { ...opts, seeds: [1], iterations: 2 }); // warm-up: pipelines compiled
  let t0 = performance.now();
  const gpuResult = await fitProbes(ctx, opts);
  const gpuMs = performance.now() - t0;
  t0 = performance.now();
  await fitProbes(null, opts);
  const cpuMs = performance.now() - t0;
  const probes = gpuResult.functions.length * layers * heads;
  const row = {
    task: `fit probes, ${layers} layers x ${heads} heads, dim ${dim}, ${rows} examples, ${functions.length} functions, ${iterations} iterations`,
    probes,
    gpu_ms: +gpuMs.toFixed(0),
    cpu_ms: +cpuMs.toFixed(0),
    gpu_speedup_over_cpu: +(cpuMs / gpuMs).toFixed(3),
  };
  console.log(JSON.stringify(row));
  return row;
}

const repo = resolve(import.meta.dirname ?? '.', '..');
const gpu = await acquireGpu();
const ctx = new GpuContext(gpu);
const rows: Record<string, unknown>[] = [];
try {
  const part = (name: string) => ONLY === '' || ONLY === name || (ONLY === 'interp' && name !== 'forward');
  if (part('forward')) await benchForward();
  // 3. The interpretability workflow.
  const organism = join(repo, 'weights/organism');
  if (part('collect')) rows.push(await benchCollect(ctx, organism));
  if (part('collect')) rows.push(await benchCollect(ctx, organism, 'all'));
  if (part('patching')) rows.push(await benchPatching(ctx, organism));
  if (part('adaptvis')) rows.push(await benchAdaptVis(ctx, organism));
  if (part('probes')) rows.push(await benchProbes(ctx));
} finally {
  gpu.destroy();
}

/** The fixture folder: under $VLMSCOPE_FIXTURES when set (as in tests/helpers/fixtures.ts), else the committed copy. */
function fixtureDir(name: string): string {
  const dirs = [process.env.VLMSCOPE_FIXTURES ? resolve(process.env.VLMSCOPE_FIXTURES, name) : '', resolve(repo, 'tests/fixtures', name)];
  return dirs.find((d) => d && existsSync(join(d, 'golden.json')))!;
}

/** A smooth synthetic photo-like image (no decoder involved). */
function syntheticImage(width: number, height: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++)
      for (let c = 0; c < 3; c++) data[(y * width + x) * 3 + c] = Math.round(127.5 + 127.5 * Math.sin(x * 0.05 * (c + 1) + y * 0.03));
  return { width, height, data };
}

async function benchForward() {
  // 1. The tiny fixtures, one per family, on their golden prompts and images.
  for (const name of ['tiny-llava', 'tiny-qwen2vl', 'tiny-qwen25vl', 'tiny-smolvlm']) {
    const dir = fixtureDir(name);
    const golden = JSON.parse(await readFile(join(dir, 'golden.json'), 'utf8'));
    const model = await loadModel(ctx, dir);
    const pixels = model.preprocess(decodeImage(new Uint8Array(await readFile(join(dir, 'image.png'))), 'image.png'));
    model.destroy();
    rows.push(await benchModel(`${name} (fixture)`, ctx, dir, golden.input_ids, pixels));
  }

  // 2. Larger random checkpoints: vision 256 wide x 4 blocks, text 512 wide x 4 layers, 224 px (LLaVA) / 448 px images.
  const dir = await mkdtemp(join(tmpdir(), 'vlmscope-bench-'));
  const spec = {
    seed: 7,
    vision: { hidden: 256, intermediate: 1024, layers: 4, heads: 4, imageSize: 224, patchSize: 14 },
    text: { hidden: 512, intermediate: 1376, layers: 4, heads: 8, kvHeads: 8, vocab: 4096 },
  };
  await writeRandomLlava(dir, spec);
  const big = await LlavaModel.load(ctx, dir);
  const ids = [1, ...Array(big.imageTokens).fill(spec.text.vocab - 2), ...Array.from({ length: 31 }, (_, i) => 10 + i)];
  const pixels = Float32Array.from({ length: 3 * 224 * 224 }, (_, i) => Math.sin(i * 0.01));
  big.destroy();
  rows.push(await benchModel('random llava (vision 256x4, text 512x4, 224 px)', ctx, dir, ids, pixels));
  await rm(dir, { recursive: true, force: true });

  for (const family of ['qwen2_vl', 'qwen2_5_vl'] as const) {
    const qdir = await mkdtemp(join(tmpdir(), 'vlmscope-bench-'));
    const qspec: RandomQwenSpec = {
      family,
      seed: 7,
      vision: { width: 256, heads: 4, depth: 4, intermediate: 688, windowSize: 112, fullattBlockIndexes: [3] },
      text: { hidden: 512, intermediate: 1376, layers: 4, heads: 8, kvHeads: 2, vocab: 4096, ropeTheta: 1e6 },
    };
    await writeRandomQwen(qdir, qspec);
    const model = await loadModel(ctx, qdir);
    const image = model.preprocess(syntheticImage(448, 448));
    const n = model.imageTokenCounts([image])[0];
    const t = qwenTokenIds(qspec);
    const qids = [...Array.from({ length: 8 }, (_, i) => 10 + i), t.visionStart, ...Array(n).fill(t.image), t.visionEnd, ...Array.from({ length: 24 }, (_, i) => 30 + i)];
    model.destroy();
    rows.push(await benchModel(`random ${family} (vision 256x4, text 512x4, 448x448 image)`, ctx, qdir, qids, image));
    await rm(qdir, { recursive: true, force: true });
  }

  // Idefics3 / SmolVLM: 224-px tiles of 14-px patches (256 patches, 64 tokens at scale 2), an image that splits into
  // 2x2 tiles + the global one (5 tiles, 1280 vision tokens).
  const idir = await mkdtemp(join(tmpdir(), 'vlmscope-bench-'));
  const ispec: RandomIdefics3Spec = {
    seed: 7,
    vision: { hidden: 256, heads: 4, layers: 4, intermediate: 1024, imageSize: 224, patchSize: 14 },
    text: { hidden: 512, intermediate: 1376, layers: 4, heads: 8, kvHeads: 2, vocab: 4096 },
    scaleFactor: 2,
    longestEdge: 448,
  };
  await writeRandomIdefics3(idir, ispec);
  const smol = await loadModel(ctx, idir);
  const tiled = smol.preprocess(syntheticImage(448, 448));
  if (!isTiledImage(tiled)) throw new Error('internal: Idefics3 preprocess gave no tiles');
  const t = idefics3TokenIds(ispec);
  // The tile layout's prompt in ids (each special is one token; "\n" as a plain id).
  const layout = idefics3ImagePromptString(tiled.rows, tiled.cols, 64);
  const specials: Record<string, number> = { '<fake_token_around_image>': t.fakeTokenAroundImage, '<global-img>': t.globalImg, '<image>': t.image, '\n': 10 };
  for (let r = 1; r <= 6; r++) for (let c = 1; c <= 6; c++) specials[`<row_${r}_col_${c}>`] = t.rowCol[r - 1]![c - 1]!;
  const iids = [t.imStart, ...Array.from({ length: 8 }, (_, i) => 20 + i), ...(layout.match(/<[^>]+>|\n/g) ?? []).map((x) => specials[x]!), ...Array.from({ length: 24 }, (_, i) => 40 + i)];
  smol.destroy();
  rows.push(await benchModel('random idefics3 (vision 256x4, text 512x4, 2x2 tiles + global of 224 px)', ctx, idir, iids, tiled));
  await rm(idir, { recursive: true, force: true });
}
await mkdir(join(repo, 'bench-results'), { recursive: true });
const out = { date: new Date().toISOString(), adapter: gpu.adapterName, reps: REPS, new_tokens: NEW_TOKENS, results: rows };
await writeFile(join(repo, 'bench-results/bench.json'), JSON.stringify(out, null, 2));
console.log(`wrote bench-results/bench.json (adapter: ${gpu.adapterName})`);
