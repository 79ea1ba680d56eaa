// `vlmscope trace`: one prefill (plus optional greedy tokens) with interventions and captures, written as
// JSON (or .safetensors for large captures).

import { Command } from 'commander';
import { acquireGpu } from '../gpu/device.js';
import { GpuContext } from '../gpu/context.js';
import type { RunResult } from '../models/model.js';
import { loadImageFile } from '../io/image.js';
import { parseCapture, parseInterventions } from '../spec/spec.js';
import { encodeSafetensorsF32, type F32Entry } from '../io/safetensors-writer.js';
import { readIdsFile, readJsonFile, writeAtomic } from './files.js';
import { UsageError } from './errors.js';
import { intArg } from './args.js';
import { dtypeOption, loadModel, memoryBudgetOption, modelOption } from './load.js';

interface TraceOptions {
  model: string;
  image?: string;
  ids: string;
  intervene?: string;
  capture?: string;
  out: string;
  maxNewTokens: number;
  dtype?: string;
  memoryBudget?: number;
}

export function traceCommand(): Command {
  return new Command('trace')
    .description('run one forward pass with interventions and captures, and write the captured tensors')
    .addOption(modelOption())
    .option('--image <file>', 'PNG or JPEG image for the image tokens (LLaVA and Idefics3 / SmolVLM <image>, Qwen <|image_pad|>)')
    .requiredOption('--ids <file>', 'JSON array of token ids, image tokens already expanded (as many as the image makes)')
    .option('--intervene <file>', 'intervention spec (JSON), e.g. {"head_scale": [{"tower": "text", "layer": 0, "head": 1, "scale": 0}]}')
    .option('--capture <file>', 'capture spec (JSON), e.g. {"logits": "all", "pattern": [{"tower": "text", "layer": 1}], "z": {"positions": "last"}}; default {"logits": "last"}')
    .option('--max-new-tokens <n>', 'greedy tokens to generate after the prompt (written as "tokens")', intArg(0, 'a non-negative integer'), 0)
    .requiredOption('--out <file>', 'output file: .json, or .safetensors for large captures')
    .addOption(dtypeOption())
    .addOption(memoryBudgetOption())
    .option('--verbose', 'print stack traces with errors')
    .addHelpText(
      'after',
      `
Output (JSON): one object whose keys are the captured names, each {"shape": [...], "data": [...]} row-major:
  logits    [vocab] ("last") or [tokens, vocab] ("all")
  pattern   a list of {"tower", "layer", "heads", "rows", "shape": [heads, rows, keys], "data"}; vision patterns
            also name their "image" and, for tiled images (Idefics3 / SmolVLM), their "tile" (row-major crops,
            then the global image): one entry per tile, [heads, rows, patches of the tile]
  z         [layers, heads, d_head] per-head attention output before o_proj ("last" or "mean:<a>:<b>"),
            [positions, layers, heads, d_head] for a list of positions
  residual  a list of {"tower", "layer", "shape": [tokens, hidden], "data"} (layer = Hugging Face hidden_states index);
            vision residuals name their "image" (and "tile", one entry per tile, as patterns)
  image_features  [image tokens, hidden] projector output ({"image_features": true})
  tokens    greedy token ids, with --max-new-tokens
  positions Qwen2-VL / Qwen2.5-VL only: {"shape": [3, tokens], "data": [...], "rope_delta": d}, the M-RoPE
            position ids (t, h, w rows) of the prompt; decode step i is fed back at position tokens + i + d
In .safetensors output the tokens, the pattern heads / rows (/ image / tile) and the positions are in the header's
__metadata__; tiled vision captures are named pattern.vision.<layer>.tile<t> and residual.vision.<layer>.tile<t>.
Specs follow docs/interventions.md. Nothing is written when the run fails.

Examples:
  vlmscope trace --model ./llava --image photo.png --ids ids.json \\
    --intervene ablate.json --capture capture.json --max-new-tokens 8 --out trace.json
  vlmscope trace --model ./Qwen2.5-VL-3B-Instruct --image photo.png --ids ids.json \\
    --capture capture.json --memory-budget 12GiB --out trace.json`,
    )
    .action(async (opts: TraceOptions) => {
      await runTrace(opts);
    });
}

async function runTrace(opts: TraceOptions): Promise<void> {
  if (!/\.(json|safetensors)$/.test(opts.out)) throw new UsageError(`--out ${opts.out}: use a .json or .safetensors file name`);
  const ids = await readIdsFile(opts.ids);
  const interventionJson = opts.intervene ? await readJsonFile(opts.intervene, 'intervention spec') : null;
  const captureJson = opts.capture ? await readJsonFile(opts.capture, 'capture spec') : { logits: 'last' };
  const image = opts.image ? await loadImageFile(opts.image) : null;
  const gpu = await acquireGpu();
  try {
    const ctx = new GpuContext(gpu);
    const model = await loadModel(ctx, opts.model, opts);
    const interventions = interventionJson ? parseInterventions(interventionJson, model.dims, opts.intervene) : undefined;
    const capture = parseCapture(captureJson, model.dims, opts.capture ?? 'default capture');
    const result = await model.run({
      ids,
      pixelValues: image ? [model.preprocess(image)] : [],
      interventions,
      capture,
      maxNewTokens: opts.maxNewTokens,
    });
    await writeAtomic(opts.out, opts.out.endsWith('.safetensors') ? toSafetensors(result) : toJson(result));
  } finally {
    gpu.destroy();
  }
}

const arr = (c: { shape: number[]; data: Float32Array }) => ({ shape: c.shape, data: Array.from(c.data) });

/** Which image (vision captures) and which tile of it (tiled images: Idefics3 / SmolVLM) a capture belongs to. */
const where = (c: { image?: number; tile?: number }) => ({
  ...(c.image !== undefined ? { image: c.image } : {}),
  ...(c.tile !== undefined ? { tile: c.tile } : {}),
});

/** Tensor name of a pattern / residual capture in .safetensors: one per tile for tiled images. */
const captureName = (kind: string, c: { tower: string; layer: number; tile?: number }) => `${kind}.${c.tower}.${c.layer}${c.tile !== undefined ? `.tile${c.tile}` : ''}`;

export function toJson(r: RunResult): string {
  const out: Record<string, unknown> = {};
  if (r.logits) out.logits = arr(r.logits);
  if (r.pattern.length) out.pattern = r.pattern.map((p) => ({ tower: p.tower, layer: p.layer, ...where(p), heads: p.heads, rows: p.rows, ...arr(p) }));
  if (r.z) out.z = arr(r.z);
  if (r.residual.length) out.residual = r.residual.map((p) => ({ tower: p.tower, layer: p.layer, ...where(p), ...arr(p) }));
  if (r.imageFeatures) out.image_features = arr(r.imageFeatures);
  if (r.tokens) out.tokens = r.tokens;
  const pos = mropePositions(r);
  if (pos) out.positions = pos;
  return JSON.stringify(out);
}

/**
 * The prompt's M-RoPE positions and rope delta (Qwen2-VL / Qwen2.5-VL), written as "positions"; 1-D rotary (LLaVA)
 * positions are just 0..L-1 and are not written, so its output stays as it was.
 */
function mropePositions(r: RunResult): { shape: number[]; data: number[]; rope_delta: number } | null {
  const p = r.positions;
  if (!p || (p.shape[0] === 1 && p.ropeDelta === 0)) return null;
  return { shape: p.shape, data: Array.from(p.data), rope_delta: p.ropeDelta };
}

function toSafetensors(r: RunResult): Uint8Array {
  const entries: F32Entry[] = [];
  if (r.logits) entries.push({ name: 'logits', ...r.logits });
  for (const p of r.pattern) entries.push({ name: captureName('pattern', p), shape: p.shape, data: p.data });
  if (r.z) entries.push({ name: 'z', ...r.z });
  for (const p of r.residual) entries.push({ name: captureName('residual', p), shape: p.shape, data: p.data });
  if (r.imageFeatures) entries.push({ name: 'image_features', ...r.imageFeatures });
  const meta: Record<string, string> = {};
  if (r.tokens) meta.tokens = JSON.stringify(r.tokens);
  const pos = mropePositions(r);
  if (pos) meta.positions = JSON.stringify(pos);
  for (const p of r.pattern) meta[captureName('pattern', p)] = JSON.stringify({ heads: p.heads, rows: p.rows, ...where(p) });
  return encodeSafetensorsF32(entries, meta);
}
