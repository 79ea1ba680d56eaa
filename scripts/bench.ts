// `npm run bench`: prefill and decode times of the LLaVA forward on the tiny fixture and on a larger random
// LLaVA-layout checkpoint generated here, and the cost of interventions and captures as ratios to a plain
// run measured in the same process. Results go to bench-results/bench.json (and are printed).

import { mkdtemp, mkdir, readFile, writeFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { acquireGpu } from '../src/gpu/device.js';
import { GpuContext } from '../src/gpu/context.js';
import { LlavaModel, type RunInput } from '../src/models/llava.js';
import { writeRandomLlava } from '../src/models/random-llava.js';
import { decodeImage } from '../src/io/image.js';
import { parseCapture, parseInterventions, type ModelDims } from '../src/interp/spec.js';

const REPS = Number(process.env.BENCH_REPS ?? 3);
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

async function timeRuns(model: LlavaModel, input: RunInput): Promise<{ prefillMs: number; decodeMsPerToken: number }> {
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

async function benchModel(label: string, ctx: GpuContext, dir: string, ids: number[], pixels: Float32Array) {
  const model = await LlavaModel.load(ctx, dir);
  const base: RunInput = { ids, pixelValues: [pixels] };
  const plain = await timeRuns(model, base);
  const intervened = await timeRuns(model, { ...base, interventions: allInterventions(model.dims) });
  const full = await timeRuns(model, { ...base, interventions: allInterventions(model.dims), capture: allCaptures(model.dims) });
  model.destroy();
  const row = {
    model: label,
    tokens: ids.length,
    prefill_ms: +plain.prefillMs.toFixed(1),
    decode_ms_per_token: +plain.decodeMsPerToken.toFixed(2),
    interventions_prefill_ratio: +(intervened.prefillMs / plain.prefillMs).toFixed(3),
    interventions_decode_ratio: +(intervened.decodeMsPerToken / plain.decodeMsPerToken).toFixed(3),
    interventions_and_captures_prefill_ratio: +(full.prefillMs / plain.prefillMs).toFixed(3),
  };
  console.log(JSON.stringify(row));
  return row;
}

const repo = resolve(import.meta.dirname ?? '.', '..');
const gpu = await acquireGpu();
const ctx = new GpuContext(gpu);
const rows = [];
try {
  // 1. The tiny fixture.
  const fixture = [resolve(repo, '../shared/fixtures/tiny-llava'), resolve(repo, 'tests/fixtures/tiny-llava')].find((d) => existsSync(d))!;
  const golden = JSON.parse(await readFile(join(fixture, 'golden.json'), 'utf8'));
  const tiny = await LlavaModel.load(ctx, fixture);
  const img = decodeImage(new Uint8Array(await readFile(join(fixture, 'image.png'))), 'image.png');
  const tinyPixels = tiny.preprocess(img);
  tiny.destroy();
  rows.push(await benchModel('tiny-llava (fixture)', ctx, fixture, golden.input_ids, tinyPixels));

  // 2. A larger random LLaVA-layout checkpoint: vision 256 wide x 4 layers, text 512 wide x 4 layers.
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
  rows.push(await benchModel('random llava (vision 256x4, text 512x4)', ctx, dir, ids, pixels));
  await rm(dir, { recursive: true, force: true });
} finally {
  gpu.destroy();
}
await mkdir(join(repo, 'bench-results'), { recursive: true });
const out = { date: new Date().toISOString(), adapter: gpu.adapterName, reps: REPS, new_tokens: NEW_TOKENS, results: rows };
await writeFile(join(repo, 'bench-results/bench.json'), JSON.stringify(out, null, 2));
console.log(`wrote bench-results/bench.json (adapter: ${gpu.adapterName})`);
