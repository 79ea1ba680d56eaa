// The Qwen2-VL / Qwen2.5-VL family: its weight-name map (hub names and transformers >= 4.52 ones), loading, and
// its M-RoPE text positions. The forward is the shared one (src/models/vlm.ts, vit.ts, decoder.ts).

import type { GpuContext } from '../../gpu/context.js';
import type { Checkpoint } from '../../io/checkpoint.js';
import type { Tokenizer } from '../../io/tokenizer.js';
import { Decoder } from '../decoder.js';
import { loadChecked, planTextMemory } from '../memory.js';
import type { ImageInput, LoadOptions, PatchedImage } from '../model.js';
import { VitEncoder } from '../vit.js';
import { type TextPositions, VlmModel } from '../vlm.js';
import type { WeightLoader } from '../weights.js';
import { type QwenConfig, parseQwenConfig } from './config.js';
import { type QwenImageProcessorConfig, parseQwenImageProcessorConfig, qwenPreprocess } from './image-processor.js';
import { mropeTable, ropeIndex } from './positions.js';
import { QwenProcessor } from './processor.js';
import { type MergerWeights, QwenVision } from './vision.js';

// Hub checkpoints (visual.*, model.*) and transformers >= 4.52 (model.visual.*, model.language_model.*).
const VISION_PREFIXES = ['visual.', 'model.visual.'];
const TEXT_PREFIXES = ['model.language_model.', 'model.', 'language_model.model.'];
const LM_HEAD_NAMES = ['lm_head.weight', 'language_model.lm_head.weight'];

/** M-RoPE (get_rope_index): text and image positions on three axes; decode steps add rope_deltas. */
export class MropePositions implements TextPositions {
  constructor(private cfg: QwenConfig) {}

  prompt(ids: readonly number[], images: readonly ImageInput[]) {
    const c = this.cfg;
    const grids = images.map((img) => (img as PatchedImage).grid);
    const { positions, ropeDeltas } = ropeIndex(ids as number[], grids, {
      imageTokenId: c.imageTokenId,
      visionStartTokenId: c.visionStartTokenId,
      mergeSize: c.vision.mergeSize,
    });
    const L = ids.length;
    const flat = new Int32Array(3 * L);
    positions.forEach((axis, a) => flat.set(axis, a * L));
    return { axes: 3, positions: flat, ropeDelta: ropeDeltas, table: mropeTable(positions, c.text.headDim, c.text.ropeTheta, c.mropeSection) };
  }

  decode(index: number, ropeDelta: number): Float32Array {
    const p = [index + ropeDelta];
    return mropeTable([p, p, p], this.cfg.text.headDim, this.cfg.text.ropeTheta, this.cfg.mropeSection);
  }
}

/** A loaded Qwen2-VL / Qwen2.5-VL model. */
export class QwenModel extends VlmModel {
  constructor(
    ctx: GpuContext,
    readonly cfg: QwenConfig,
    readonly imageProcessor: QwenImageProcessorConfig,
    vision: QwenVision,
    text: Decoder,
    source: string,
    memory: { weights: number; budget: number | undefined; budgetWhat: string },
  ) {
    super(ctx, {
      type: cfg.modelType,
      source,
      imageTokenId: cfg.imageTokenId,
      decoder: text,
      vision,
      positions: new MropePositions(cfg),
      preprocess: (img) => {
        const p = qwenPreprocess(img, imageProcessor);
        return { pixelValues: p.pixelValues, grid: p.grid };
      },
      imageView: (img) => {
        const p = qwenPreprocess(img, imageProcessor);
        const m = cfg.vision.mergeSize;
        return { image: p.resized, grid: [p.grid[1] / m, p.grid[2] / m] };
      },
      createProcessor: (tokenizer: Tokenizer) => new QwenProcessor(tokenizer, cfg, imageProcessor),
      memory,
    });
  }
}

async function loadWeights(ctx: GpuContext, cfg: QwenConfig, w: WeightLoader) {
  const v = cfg.vision;
  const E = v.hidden;
  const vname = (s: string) => w.resolve(VISION_PREFIXES.map((p) => p + s));
  const pd = v.channels * v.temporalPatchSize * v.patchSize * v.patchSize;
  const patch = await w.load(vname('patch_embed.proj.weight'), [E, v.channels, v.temporalPatchSize, v.patchSize, v.patchSize], [E, pd]);
  const is25 = cfg.modelType === 'qwen2_5_vl';
  const encoder = await VitEncoder.load(
    ctx,
    { hidden: E, heads: v.heads, headDim: v.headDim, intermediate: v.intermediate, eps: v.eps, norm: v.norm, mlp: v.mlp, act: v.act },
    v.layers,
    w,
    vname,
    (l) => `blocks.${l}.`,
    {
      norm1: 'norm1',
      norm2: 'norm2',
      qkv: { fused: 'attn.qkv' },
      o: 'attn.proj',
      mlp: is25 ? { gate: 'mlp.gate_proj', up: 'mlp.up_proj', down: 'mlp.down_proj' } : { fc1: 'mlp.fc1', fc2: 'mlp.fc2' },
      bias: true,
    },
  );
  const U = v.mergeSize ** 2 * E;
  const merger: MergerWeights = {
    lnW: await w.loadTensor(vname('merger.ln_q.weight'), [E]),
    lnB: v.norm === 'layernorm' ? await w.loadTensor(vname('merger.ln_q.bias'), [E]) : null,
    fc1: await w.load(vname('merger.mlp.0.weight'), [U, U]),
    fc1b: await w.loadTensor(vname('merger.mlp.0.bias'), [U]),
    fc2: await w.load(vname('merger.mlp.2.weight'), [v.outHidden, U]),
    fc2b: await w.loadTensor(vname('merger.mlp.2.bias'), [v.outHidden]),
  };
  const text = await Decoder.load(ctx, cfg.text, w, TEXT_PREFIXES, LM_HEAD_NAMES);
  return { vision: new QwenVision(ctx, cfg, patch, encoder, merger), text };
}

/** loadModel's entry for model_type qwen2_vl and qwen2_5_vl (the caller closes the checkpoint). */
export async function loadQwen2VL(ctx: GpuContext, ckpt: Checkpoint, name: string, opts: LoadOptions = {}): Promise<QwenModel> {
  const cfg = parseQwenConfig(ckpt.config, `${name}/config.json`);
  const pp = await ckpt.readJson('preprocessor_config.json');
  const imageProcessor = parseQwenImageProcessorConfig(pp ?? {}, `${name}/preprocessor_config.json`);
  if (imageProcessor.patchSize !== cfg.vision.patchSize || imageProcessor.mergeSize !== cfg.vision.mergeSize || imageProcessor.temporalPatchSize !== cfg.vision.temporalPatchSize) {
    throw new Error(
      `${name}/preprocessor_config.json patch_size ${imageProcessor.patchSize} / merge_size ${imageProcessor.mergeSize} / temporal_patch_size ${imageProcessor.temporalPatchSize} ` +
        `disagree with config.json vision_config (${cfg.vision.patchSize} / ${cfg.vision.mergeSize} / ${cfg.vision.temporalPatchSize})`,
    );
  }
  // The vision pass depends on the image and is checked per run (VlmModel.run) once its size is known.
  const { parts, memory } = await loadChecked(ctx, ckpt, name, opts, cfg.text, (bytes, context) => planTextMemory(cfg.text, bytes, context), (w) => loadWeights(ctx, cfg, w));
  return new QwenModel(ctx, cfg, imageProcessor, parts.vision, parts.text, name, memory);
}
