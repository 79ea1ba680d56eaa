// The decode part of `npm run bench:kernels`: per decoded token, counted (GpuContext work counters, not estimated),
// on the shipped organism and on a random LLaVA-shaped stack of 7B width (src/models/random-llava.ts):
//   dispatches (printed beside the layer count), submits, bind groups created, readback and upload bytes;
//   storage bytes of the weights and of the KV cache bound per dispatch, summed over the token's dispatches, against
//   the minimum (every text weight once, the embedding table as the one row a token reads, plus the live KV rows);
//   GPU bytes allocated (the most alive at once during load + run) against the minimum (all weights + the KV cache
//   for the run's context, f32 as the engine keeps it).
// A token's figures are the counts between two `onToken` callbacks, i.e. whole decode steps (the rotary upload, the
// recorded step, its submit and the token readback), divided by the steps between them.
//
// Whole-model speed beside them: prefill tokens/s (the prompt's tokens over the time to the first token, vision
// included) and decode tokens/s.
//
// Env: BENCH_DECODE=organism|7b|qwen7b|all (default all; 7b = LLaVA-1.5-7B width, qwen7b = Qwen2.5-VL-7B width),
// BENCH_DECODE_LAYERS (7B-width stacks, default 2),
// BENCH_DECODE_STEPS (decode steps counted, default 4).

import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type GpuContext, type GpuCounters, fmtBytes } from '../src/gpu/context.js';
import { type Weight, weightParts } from '../src/gpu/tensor.js';
import { loadModel } from '../src/models/load.js';
import { type RandomLlavaSpec, writeRandomLlava } from '../src/models/random-llava.js';
import { type RandomQwenSpec, qwenTokenIds, writeRandomQwen } from '../src/models/random-qwen.js';
import type { VlmModel } from '../src/models/vlm.js';
import type { RgbImage } from '../src/io/image.js';

export interface DecodeRow {
  model: string;
  layers: number;
  hidden: number;
  weight_dtype: string;
  prompt_tokens: number;
  /** Decode steps counted (tokens fed back). */
  steps: number;
  /** Run start to the first token (vision encoder + prefill + first argmax), and prompt tokens per second of it. */
  prefill_ms: number;
  prefill_tokens_per_s: number;
  decode_tokens_per_s: number;
  /** Everything below is per decoded token (averaged over the counted steps) unless it says otherwise. */
  ms_per_token: number;
  dispatches: number;
  /** dispatches / layers (the per-layer dispatches plus a share of the fixed ones: embed, final norm, lm_head, argmax). */
  dispatches_per_layer: number;
  submits: number;
  bind_groups: number;
  compute_passes: number;
  readback_bytes: number;
  upload_bytes: number;
  weight_bytes_bound: number;
  weight_bytes_min: number;
  kv_bytes_bound: number;
  kv_bytes_live: number;
  /** (weights + KV bound) / (weights min + live KV): 1 = every byte bound once. */
  bound_vs_min: number;
  weights_bound_vs_min: number;
  kv_bound_vs_live: number;
  /** Storage bytes bound of everything else (activations, head params, key flags). */
  other_bytes_bound: number;
  /** Per kernel family: dispatches and bytes bound per token, and those of weights and of the KV cache. */
  kernels: Record<string, { dispatches: number; bytes_bound: number; weight_bytes_bound: number; kv_bytes_bound: number }>;
  /** Whole run, not per token: the most bytes alive at once through the context during load and run. */
  gpu_bytes_peak: number;
  gpu_bytes_min: number;
  gpu_peak_vs_min: number;
  weight_bytes_all: number;
  kv_bytes_context: number;
}

interface Subject {
  name: string;
  folder: string;
  /** The prompt's ids around `nImage` image tokens (default LLaVA's: bos, the image tokens, three text tokens). */
  promptIds?: (model: VlmModel, nImage: number) => number[];
  /** Side of the square test image (default 336; the processor resizes it). */
  imageSize?: number;
}

/** A random checkpoint written once per spec into the temp folder (named by a hash of the spec) and reused. */
async function cachedCheckpoint(name: string, spec: object, write: (dir: string) => Promise<void>): Promise<string> {
  const tag = createHash('sha256').update(JSON.stringify(spec)).digest('hex').slice(0, 12);
  const folder = join(tmpdir(), `vlmscope-bench-${name}-${tag}`);
  if (!existsSync(join(folder, 'model.safetensors'))) {
    const t0 = performance.now();
    await write(folder);
    console.log(`  wrote ${folder} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  }
  return folder;
}

/** A 7B-width LLaVA stack (LLaVA-1.5-7B's text dims) with a small vocab and a tiny vision tower, cached on disk. */
async function randomLlava7b(layers: number): Promise<Subject> {
  const spec: RandomLlavaSpec = {
    seed: 15,
    dtype: 'F16',
    vision: { hidden: 64, intermediate: 128, layers: 1, heads: 2, imageSize: 28, patchSize: 14 },
    text: { hidden: 4096, intermediate: 11008, layers, heads: 32, kvHeads: 32, vocab: 1024 },
  };
  const folder = await cachedCheckpoint(`llava-7b-width-${layers}l`, spec, (dir) => writeRandomLlava(dir, spec));
  return { name: `random LLaVA, 7B width (4096 hidden, 11008 MLP, 32 heads), ${layers} layers, vocab 1024, tiny vision`, folder };
}

/**
 * A Qwen2.5-VL-7B-width stack (3584 hidden, 18944 MLP, 28 heads over 4 KV heads, head dim 128, M-RoPE sections
 * 16/24/24) with a small vocab and a tiny vision tower, cached on disk.
 */
async function randomQwen7b(layers: number): Promise<Subject> {
  const spec: RandomQwenSpec = {
    family: 'qwen2_5_vl',
    seed: 16,
    dtype: 'BF16',
    minPixels: 56 * 56,
    maxPixels: 56 * 56,
    vision: { width: 32, heads: 2, depth: 1, intermediate: 64, windowSize: 56, fullattBlockIndexes: [0], patchSize: 14, mergeSize: 2 },
    text: { hidden: 3584, intermediate: 18944, layers, heads: 28, kvHeads: 4, vocab: 1024, ropeTheta: 1000000, mropeSection: [16, 24, 24] },
  };
  const folder = await cachedCheckpoint(`qwen25-7b-width-${layers}l`, spec, (dir) => writeRandomQwen(dir, spec));
  const tok = qwenTokenIds(spec);
  return {
    name: `random Qwen2.5-VL, 7B width (3584 hidden, 18944 MLP, 28 heads / 4 KV), ${layers} layers, vocab 1024, tiny vision`,
    folder,
    imageSize: 56,
    promptIds: (_model, n) => [5, tok.visionStart, ...Array(n).fill(tok.image), tok.visionEnd, 6, 7, 8],
  };
}

/** Buffers of the text decoder's weights, with the bytes a token needs of each at least. */
function textWeights(model: VlmModel): { buffers: Set<GPUBuffer>; min: number } {
  const d = model.decoder;
  const buffers = new Set<GPUBuffer>();
  const add = (w: Weight | null | undefined) => {
    if (w) for (const p of weightParts(w)) buffers.add(p.tensor.buffer);
  };
  for (const { qkv, ...rest } of d.layers) {
    for (const w of [...Object.values(qkv), ...Object.values(rest)]) add(w as Weight | null);
  }
  add(d.finalNorm);
  add(d.lmHead);
  let min = 0;
  for (const b of buffers) min += b.size;
  // The embedding table: one row a token (unless it is the lm_head too, which reads all of it anyway).
  const embed = weightParts(d.embedTokens).map((p) => p.tensor.buffer);
  const tied = embed.some((b) => buffers.has(b));
  for (const b of embed) buffers.add(b);
  if (!tied) min += d.cfg.hidden * (d.embedTokens.dtype === 'f32' ? 4 : 2);
  return { buffers, min };
}

const isKv = (b: GPUBuffer) => /^text\.\d+\.[kv]_cache$/.test(b.label);

async function measure(ctx: GpuContext, subject: Subject, steps: number): Promise<DecodeRow> {
  const counters = ctx.countWork();
  const startAlloc = ctx.allocatedBytes;
  counters.peakAllocatedBytes = startAlloc;
  const model = await loadModel(ctx, subject.folder);
  try {
    const cfg = model.decoder.cfg;
    // A grey image and a short prompt: bos, the image tokens, a few text tokens.
    const size = subject.imageSize ?? 336;
    const img: RgbImage = { width: size, height: size, data: new Uint8Array(size * size * 3).fill(128) };
    const pixels = model.preprocess(img);
    const nImage = model.imageTokenCounts([pixels])[0];
    const ids = subject.promptIds ? subject.promptIds(model, nImage) : [1, ...Array(nImage).fill(model.imageTokenId), 5, 6, 7];
    const maxNew = steps + 2;
    const snaps: { c: GpuCounters; t: number }[] = [];
    const t0 = performance.now();
    await model.run({
      ids,
      pixelValues: [pixels],
      maxNewTokens: maxNew,
      onToken: () => snaps.push({ c: counters.snapshot(), t: performance.now() }),
    });
    if (snaps.length < steps + 2) throw new Error(`bench-decode: ${subject.name} stopped after ${snaps.length} tokens`);
    // Token 0 comes from the prefill; steps 1..steps (between onToken 1 and onToken steps + 1) are counted.
    const a = snaps[1];
    const b = snaps[1 + steps];
    const d = b.c.since(a.c);
    const L = ids.length;
    const kvRow = cfg.kvHeads * cfg.headDim * 4;
    // The counted steps feed the tokens at positions L + 1 .. L + steps; a query at pos reads keys 0..pos.
    let live = 0;
    for (let j = 1; j <= steps; j++) live += 2 * cfg.layers * (L + j + 1) * kvRow;
    const w = textWeights(model);
    const per = (x: number) => x / steps;
    const wBound = per(d.boundBytes((buf) => w.buffers.has(buf)));
    const kvBound = per(d.boundBytes(isKv));
    const other = per(d.boundBytes()) - wBound - kvBound;
    const kvLive = per(live);
    const weightAll = (model as unknown as { parts: { memory: { weights: number } } }).parts.memory.weights;
    const kvContext = 2 * cfg.layers * (L + maxNew) * kvRow;
    const kernels: DecodeRow['kernels'] = {};
    for (const [name, k] of d.kernels) {
      kernels[name] = {
        dispatches: per(k.dispatches),
        bytes_bound: per(k.boundBytes),
        weight_bytes_bound: per(d.boundBytes((buf) => w.buffers.has(buf), name)),
        kv_bytes_bound: per(d.boundBytes(isKv, name)),
      };
    }
    const peak = counters.peakAllocatedBytes - startAlloc;
    return {
      model: subject.name,
      layers: cfg.layers,
      hidden: cfg.hidden,
      weight_dtype: model.decoder.layers[0].o.dtype,
      prompt_tokens: L,
      steps,
      prefill_ms: +(snaps[0].t - t0).toFixed(1),
      prefill_tokens_per_s: +(L / ((snaps[0].t - t0) / 1000)).toFixed(2),
      decode_tokens_per_s: +(1000 / per(b.t - a.t)).toFixed(3),
      ms_per_token: +per(b.t - a.t).toFixed(1),
      dispatches: per(d.dispatches),
      dispatches_per_layer: +(per(d.dispatches) / cfg.layers).toFixed(2),
      submits: per(d.submits),
      bind_groups: per(d.bindGroups),
      compute_passes: per(d.passes),
      readback_bytes: per(d.readbackBytes),
      upload_bytes: per(d.uploadBytes),
      weight_bytes_bound: wBound,
      weight_bytes_min: w.min,
      kv_bytes_bound: kvBound,
      kv_bytes_live: kvLive,
      bound_vs_min: +((wBound + kvBound) / (w.min + kvLive)).toFixed(4),
      weights_bound_vs_min: +(wBound / w.min).toFixed(4),
      kv_bound_vs_live: +(kvBound / kvLive).toFixed(3),
      other_bytes_bound: other,
      kernels,
      gpu_bytes_peak: peak,
      gpu_bytes_min: weightAll + kvContext,
      gpu_peak_vs_min: +(peak / (weightAll + kvContext)).toFixed(3),
      weight_bytes_all: weightAll,
      kv_bytes_context: kvContext,
    };
  } finally {
    model.destroy();
  }
}

export async function benchDecode(ctx: GpuContext, which: string, layers7b: number, steps: number): Promise<{ rows: DecodeRow[] }> {
  const subjects: Subject[] = [];
  if (which === 'all' || which === 'organism') subjects.push({ name: 'organism (weights/organism: 4 layers, 128 hidden)', folder: 'weights/organism' });
  if (which === 'all' || which === '7b') subjects.push(await randomLlava7b(layers7b));
  if (which === 'all' || which === 'qwen7b') subjects.push(await randomQwen7b(layers7b));
  const rows: DecodeRow[] = [];
  for (const s of subjects) {
    const r = await measure(ctx, s, steps);
    rows.push(r);
    printDecode(r);
  }
  return { rows };
}

export function printDecode(r: DecodeRow): void {
  const x = (v: number) => `${v.toFixed(v < 10 ? 3 : 2)}x`;
  console.log(`\n${r.model} (${r.weight_dtype} weights, prompt ${r.prompt_tokens} tokens, ${r.steps} decode steps counted)`);
  console.log(`  dispatches per token: ${r.dispatches} with ${r.layers} layers; submits ${r.submits}, bind groups created ${r.bind_groups}, compute passes ${r.compute_passes}`);
  console.log(`  readback ${fmtBytes(r.readback_bytes)} per token, uploads ${fmtBytes(r.upload_bytes)} per token (uniforms + rotary row)`);
  console.log(
    `  bound per token: weights ${fmtBytes(r.weight_bytes_bound)} vs min ${fmtBytes(r.weight_bytes_min)} (${x(r.weights_bound_vs_min)}), ` +
      `KV ${fmtBytes(r.kv_bytes_bound)} vs live ${fmtBytes(r.kv_bytes_live)} (${x(r.kv_bound_vs_live)}); together ${x(r.bound_vs_min)} the minimum; other ${fmtBytes(r.other_bytes_bound)}`,
  );
  const by = (what: 'weight_bytes_bound' | 'kv_bytes_bound') =>
    Object.entries(r.kernels)
      .filter(([, k]) => k[what] > 0)
      .map(([n, k]) => `${n} ${fmtBytes(k[what])}`)
      .join(', ');
  console.log(`  weights bound by: ${by('weight_bytes_bound')}; KV bound by: ${by('kv_bytes_bound')}`);
  console.log(`  GPU bytes at most alive: ${fmtBytes(r.gpu_bytes_peak)} vs min ${fmtBytes(r.gpu_bytes_min)} (weights ${fmtBytes(r.weight_bytes_all)} + KV ${fmtBytes(r.kv_bytes_context)}): ${x(r.gpu_peak_vs_min)}`);
  console.log(
    `  on this adapter: prefill ${r.prefill_tokens_per_s} tokens/s (${r.prompt_tokens} tokens in ${r.prefill_ms} ms, vision included), ` +
      `decode ${r.decode_tokens_per_s} tokens/s (${r.ms_per_token} ms per token)`,
  );
}
