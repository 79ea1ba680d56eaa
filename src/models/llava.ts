// LLaVA: CLIP vision tower -> feature selection (vision_feature_layer / select strategy) -> MLP projector ->
// image features scattered over the <image> tokens of a Llama decoder (src/models/vlm.ts runs it). This file is
// the family's part: its weight-name map, its vision encoder and its 1-D rotary positions.

import type { GpuContext, Recorder } from '../gpu/context.js';
import type { DType, Tensor, Weight } from '../gpu/tensor.js';
import { Checkpoint, type FolderSource, nodeFolder } from '../io/checkpoint.js';
import { type ClipProcessorConfig, clipPreprocess, parseClipProcessorConfig } from '../io/clip-processor.js';
import type { RgbImage } from '../io/image.js';
import type { Tokenizer } from '../io/tokenizer.js';
import { rows } from '../../kernels/common.js';
import { matmul } from '../../kernels/matmul.js';
import { copyRows } from '../../kernels/elementwise.js';
import { ClipVisionTower, type VisionCaptures } from './clip.js';
import { Decoder } from './decoder.js';
import { type LlavaConfig, imageTokenCount, parseLlavaConfig } from './config.js';
import type { WeightLoader } from './weights.js';
import { RotaryPositions } from './rotary.js';
import { loadChecked, planTextMemory } from './memory.js';
import { type CaptureSpec, type InterventionSpec, type TowerDims, SpecError, resolvePositions } from '../spec/spec.js';
import { readPattern, readZ } from './capture-read.js';
import { type ImageInput, type LoadOptions, type MemoryPlan, type PatternCaptured, type ResidualCaptured, isPatchedImage } from './model.js';
import { type VisionCaptureReader, type VisionEncoder, type VisionPlan, VlmModel } from './vlm.js';
import { LlavaProcessor } from './llava-processor.js';

export type { Captured, PatternCaptured, RunInput, RunResult, MemoryPlan } from './model.js';
/** @deprecated the family-neutral name is LoadOptions (src/models/model.ts). */
export type LlavaLoadOptions = LoadOptions;

// llava-hf checkpoints (legacy names), transformers >= 4.52 names, and transformers 5 state dicts (no vision_model).
const VISION_PREFIXES = ['vision_tower.vision_model.', 'model.vision_tower.vision_model.', 'model.vision_tower.', 'vision_tower.'];
const PROJECTOR_PREFIXES = ['multi_modal_projector.', 'model.multi_modal_projector.'];
const TEXT_PREFIXES = ['language_model.model.', 'model.language_model.', 'language_model.'];
const LM_HEAD_NAMES = ['language_model.lm_head.weight', 'lm_head.weight'];

interface Projector {
  linear1: Weight;
  linear1Bias: Tensor | null;
  linear2: Weight;
  linear2Bias: Tensor | null;
}

/** CLIP tower + feature selection + projector: one image at a time, each into its rows of the features. */
export class LlavaVision implements VisionEncoder {
  constructor(
    private ctx: GpuContext,
    readonly cfg: LlavaConfig,
    readonly tower: ClipVisionTower,
    private projector: Projector,
  ) {}

  get dims(): TowerDims {
    const v = this.cfg.vision;
    return { layers: v.layers, heads: v.heads, headDim: v.headDim };
  }

  get width(): number {
    return this.cfg.vision.hidden;
  }

  plan(images: readonly ImageInput[]): VisionPlan {
    const v = this.cfg.vision;
    const size = v.channels * v.imageSize * v.imageSize;
    images.forEach((p, i) => {
      if (!(p instanceof Float32Array)) throw new Error(`image ${i} is ${isPatchedImage(p) ? 'patchified (a Qwen-style input)' : 'tiled (an Idefics3-style input)'}; LLaVA takes pixel values [${v.channels}, ${v.imageSize}, ${v.imageSize}]`);
      if (p.length !== size) throw new Error(`pixel values of image ${i} have ${p.length} values, expected ${v.channels}x${v.imageSize}x${v.imageSize}`);
    });
    const n = imageTokenCount(this.cfg);
    return { features: images.map(() => n), tokens: images.map(() => this.tower.tokens) };
  }

  scratchBytes(plan: VisionPlan, capture: CaptureSpec): { total: number; largest: number } {
    const v = this.cfg.vision;
    const n = this.tower.tokens;
    const pattern = capture.pattern.some((p) => p.tower === 'vision') ? v.heads * n * n * 4 : 0;
    const patterns = capture.pattern.filter((p) => p.tower === 'vision').length * pattern * plan.tokens.length;
    const patchRows = n * v.channels * v.patchSize ** 2 * 4;
    const blocks = this.tower.encoder.scratchBytes(n);
    return { total: n * (4 * v.hidden) * 4 + patchRows + blocks.total + patterns, largest: Math.max(blocks.largest, patchRows, pattern) };
  }

  writeHeadParams(spec: InterventionSpec): void {
    this.tower.encoder.writeSpec(spec, this.dims);
  }

  prepare(): void {
    this.tower.prepare();
  }

  destroy(): void {
    this.tower.destroy();
  }

  record(
    rec: Recorder,
    images: readonly ImageInput[],
    _plan: VisionPlan,
    features: Tensor,
    cap: CaptureSpec,
    alloc: (shape: number[], label: string) => Tensor,
  ): VisionCaptureReader {
    const { ctx, cfg } = this;
    const n = this.tower.tokens;
    const perImage = imageTokenCount(cfg);
    if (cap.z?.tower === 'vision' && cap.z.positions.kind !== 'last') resolvePositions(cap.z.positions, n);
    for (const p of cap.pattern) {
      if (p.tower !== 'vision') continue;
      for (const r of p.rows ?? []) if (r < -n || r >= n) throw new SpecError(`capture pattern rows: row ${r} is outside the vision sequence of ${n} tokens`);
    }
    const visionCaps: VisionCaptures[] = images.map(() => ({ pattern: new Map(), residual: new Map() }));
    const patternOut: { spec: CaptureSpec['pattern'][number]; t: Tensor[] }[] = [];
    for (const p of cap.pattern) {
      if (p.tower !== 'vision') continue;
      const ts = images.map((_, i) => {
        const t = alloc([cfg.vision.heads, n, n], `capture.vision.${p.layer}.pattern`);
        visionCaps[i].pattern!.set(p.layer, t);
        return t;
      });
      patternOut.push({ spec: p, t: ts });
    }
    const residualOut: { layer: number; t: Tensor[] }[] = [];
    for (const r of cap.residual) {
      if (r.tower !== 'vision') continue;
      const ts = images.map((_, i) => {
        const t = alloc([n, cfg.vision.hidden], `capture.vision.residual.${r.layer}`);
        visionCaps[i].residual!.set(r.layer, t);
        return t;
      });
      residualOut.push({ layer: r.layer, t: ts });
    }
    let zOut: { t: Tensor; rows: number; mean: boolean } | null = null;
    if (cap.z?.tower === 'vision') {
      const zRows = resolvePositions(cap.z.positions, n);
      const v = cfg.vision;
      const t = alloc([v.layers, zRows.length, v.heads * v.headDim], 'capture.vision.z');
      visionCaps[0].z = { rows: zRows, dst: t };
      zOut = { t, rows: zRows.length, mean: cap.z.positions.kind === 'mean' };
    }

    const deepest = Math.max(
      ...cfg.featureStates,
      ...cap.pattern.filter((p) => p.tower === 'vision').map((p) => p.layer + 1),
      ...cap.residual.filter((r) => r.tower === 'vision').map((r) => r.layer),
      ...(cap.z?.tower === 'vision' ? [cfg.vision.layers] : []),
    );
    const E = cfg.vision.hidden;
    const nFeat = cfg.featureStates.length;
    const first = cfg.selectStrategy === 'default' ? 1 : 0;
    const keep = new Map<number, Tensor>();
    if (nFeat > 1 || deepest > cfg.featureStates[0]) {
      for (const s of cfg.featureStates) keep.set(s, alloc([n, E], `vision.hidden_state.${s}`));
    }
    const concat = nFeat > 1 ? alloc([perImage, E * nFeat], 'vision.features_concat') : null;
    const mid = alloc([perImage, cfg.text.hidden], 'projector.hidden');
    const pr = this.projector;
    images.forEach((pv, i) => {
      const pixels = alloc([cfg.vision.channels, cfg.vision.imageSize, cfg.vision.imageSize], `pixel_values.${i}`);
      ctx.write(pixels.buffer, 0, pv as Float32Array);
      const last = this.tower.record(rec, pixels, deepest, keep, visionCaps[i]);
      let x;
      if (concat) {
        cfg.featureStates.forEach((s, j) => {
          copyRows(ctx, rec, {
            src: rows(keep.get(s)!, first, perImage),
            dst: { tensor: concat, rows: perImage, cols: E, offset: j * E, stride: E * nFeat },
          });
        });
        x = rows(concat);
      } else {
        x = rows(keep.get(cfg.featureStates[0]) ?? last, first, perImage);
      }
      matmul(ctx, rec, { x, w: pr.linear1, b: pr.linear1Bias, out: rows(mid), act: cfg.projectorAct });
      matmul(ctx, rec, { x: rows(mid), w: pr.linear2, b: pr.linear2Bias, out: rows(features, i * perImage, perImage) });
    });

    return async () => {
      const pattern: PatternCaptured[][] = [];
      for (const p of patternOut) pattern.push(await Promise.all(p.t.map((t, i) => readPattern(ctx, p.spec, t, { image: i }))));
      const residual: ResidualCaptured[][] = [];
      for (const r of residualOut) {
        residual.push(
          await Promise.all(
            r.t.map(async (t, i) => ({ tower: 'vision' as const, layer: r.layer, image: i, shape: [...t.shape], data: await ctx.readF32(t.buffer, 0, t.numel) })),
          ),
        );
      }
      const z = zOut ? await readZ(ctx, zOut.t, zOut.rows, this.dims, zOut.mean) : undefined;
      return { pattern, residual, z };
    };
  }
}

/** A loaded LLaVA model: the family-neutral VlmModel plus LLaVA's config and CLIP processor settings. */
export class LlavaModel extends VlmModel {
  private constructor(
    ctx: GpuContext,
    readonly cfg: LlavaConfig,
    readonly imageProcessor: ClipProcessorConfig,
    readonly vision: ClipVisionTower,
    text: Decoder,
    projector: Projector,
    source: string,
    memory: { weights: number; budget: number | undefined; budgetWhat: string },
  ) {
    super(ctx, {
      type: 'llava',
      source,
      imageTokenId: cfg.imageTokenIndex,
      decoder: text,
      vision: new LlavaVision(ctx, cfg, vision, projector),
      positions: new RotaryPositions(cfg.text.headDim, cfg.text.ropeTheta),
      preprocess: (img) => clipPreprocess(img, imageProcessor).pixelValues,
      imageView: (img) => {
        const side = cfg.vision.imageSize / cfg.vision.patchSize;
        return { image: clipPreprocess(img, imageProcessor).cropped, grid: [side, side] };
      },
      createProcessor: (tokenizer: Tokenizer) => new LlavaProcessor(tokenizer, cfg, imageProcessor),
      memory,
    });
  }

  /** The decoder (LLaVA's Llama language model). */
  get text(): Decoder {
    return this.decoder;
  }

  /** Number of <image> tokens one image takes. */
  get imageTokens(): number {
    return imageTokenCount(this.cfg);
  }

  /** CLIP preprocessing of this checkpoint's preprocessor_config.json. */
  override preprocess(img: RgbImage): Float32Array {
    return clipPreprocess(img, this.imageProcessor).pixelValues;
  }

  /** Load a Hugging Face LLaVA folder (a path in Node, or any FolderSource). */
  static async load(ctx: GpuContext, folder: FolderSource | string, opts: LoadOptions = {}): Promise<LlavaModel> {
    const src = typeof folder === 'string' ? nodeFolder(folder) : folder;
    const ckpt = await Checkpoint.open(src);
    try {
      return await LlavaModel.fromCheckpoint(ctx, ckpt, src.name, opts);
    } finally {
      await ckpt.close();
    }
  }

  /** Load from an opened checkpoint (the caller closes it); loadModel dispatches here for model_type llava. */
  static async fromCheckpoint(ctx: GpuContext, ckpt: Checkpoint, name: string, opts: LoadOptions = {}): Promise<LlavaModel> {
    const cfg = parseLlavaConfig(ckpt.config, `${name}/config.json`);
    const ppJson = await ckpt.readJson('preprocessor_config.json');
    const processor = parseClipProcessorConfig(ppJson ?? {}, `${name}/preprocessor_config.json`);
    const crop = processor.doCenterCrop ? processor.cropSize : null;
    if (crop && (crop.height !== cfg.vision.imageSize || crop.width !== cfg.vision.imageSize)) {
      throw new Error(
        `${name}/preprocessor_config.json crops to ${crop.height}x${crop.width} but config.json vision_config.image_size is ${cfg.vision.imageSize}`,
      );
    }
    const { parts, memory } = await loadChecked(ctx, ckpt, name, opts, cfg.text, (bytes, context) => planMemory(cfg, bytes, context), (w) => LlavaModel.loadWeights(ctx, cfg, w));
    return new LlavaModel(ctx, cfg, processor, parts.vision, parts.text, parts.projector, name, memory);
  }

  private static async loadWeights(ctx: GpuContext, cfg: LlavaConfig, w: WeightLoader) {
    const vision = await ClipVisionTower.load(ctx, cfg.vision, w, VISION_PREFIXES);
    const featIn = cfg.vision.hidden * cfg.featureStates.length;
    const D = cfg.text.hidden;
    const pname = (s: string) => w.resolve(PROJECTOR_PREFIXES.map((p) => p + s));
    const projector: Projector = {
      linear1: await w.load(pname('linear_1.weight'), [D, featIn]),
      linear1Bias: cfg.projectorBias ? await w.loadTensor(pname('linear_1.bias'), [D]) : null,
      linear2: await w.load(pname('linear_2.weight'), [D, D]),
      linear2Bias: cfg.projectorBias ? await w.loadTensor(pname('linear_2.bias'), [D]) : null,
    };
    const text = await Decoder.load(ctx, cfg.text, w, TEXT_PREFIXES, LM_HEAD_NAMES);
    return { vision, projector, text };
  }
}

/** Bytes the model needs on the GPU: weights as stored, the KV cache for `context` tokens, and activations. */
export function planMemory(cfg: LlavaConfig, weightBytes: number, context: number): MemoryPlan {
  const v = cfg.vision;
  const visionTokens = (v.imageSize / v.patchSize) ** 2 + 1;
  return planTextMemory(cfg.text, weightBytes, context, visionTokens * (8 * v.hidden + v.intermediate + v.channels * v.patchSize ** 2) * 4);
}

