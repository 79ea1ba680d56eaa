// The Idefics3 / SmolVLM family: its weight-name map, loading, and its image inputs. The forward is the shared one
// (src/models/vlm.ts, vit.ts, decoder.ts); SmolVLM's block-wise feature merge (modular_smolvlm.py inputs_merger)
// puts the k-th <image> token's feature at block k // image_seq_len, row k % image_seq_len, which is the same
// sequential fill as Idefics3's, so both model types run the same path.

import type { GpuContext } from '../../gpu/context.js';
import type { Checkpoint } from '../../io/checkpoint.js';
import type { RgbImage } from '../../io/image.js';
import type { Tokenizer } from '../../io/tokenizer.js';
import { Decoder } from '../decoder.js';
import { loadChecked, planTextMemory } from '../memory.js';
import type { LoadOptions, TiledImage } from '../model.js';
import { RotaryPositions } from '../rotary.js';
import { VitEncoder } from '../vit.js';
import { CLIP_BLOCK_NAMES } from '../clip.js';
import { VlmModel } from '../vlm.js';
import type { WeightLoader } from '../weights.js';
import { type Idefics3Config, parseIdefics3Config } from './config.js';
import { type Idefics3ImageProcessorConfig, idefics3Preprocess, parseIdefics3ImageProcessorConfig } from './image-processor.js';
import { Idefics3Processor } from './processor.js';
import { Idefics3Vision, type Idefics3VisionWeights } from './vision.js';

// transformers >= 4.46 names (model.vision_model.*, model.connector.*, model.text_model.*) and the bare ones.
const VISION_PREFIXES = ['model.vision_model.', 'vision_model.'];
const CONNECTOR_PREFIXES = ['model.connector.', 'connector.'];
const TEXT_PREFIXES = ['model.text_model.', 'text_model.'];
const LM_HEAD_NAMES = ['lm_head.weight'];

/** Tiles as the vision tower takes them: padded bottom/right to image_size with their pixel mask when smaller. */
export function toTiledImage(p: ReturnType<typeof idefics3Preprocess>, size: number): TiledImage {
  const { tiles, tileHeight: th, tileWidth: tw } = p;
  if (th === size && tw === size) return { pixelValues: p.pixelValues, tiles, rows: p.rows, cols: p.cols, tileHeight: th, tileWidth: tw };
  if (th > size || tw > size) throw new Error(`tiles of ${th}x${tw} px are larger than the vision tower's ${size}x${size} (preprocessor_config.json max_image_size vs config.json vision_config image_size)`);
  const pixelValues = new Float32Array(tiles * 3 * size * size);
  const mask = new Uint8Array(tiles * size * size);
  for (let t = 0; t < tiles; t++) {
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < th; y++) pixelValues.set(p.pixelValues.subarray(((t * 3 + c) * th + y) * tw, ((t * 3 + c) * th + y + 1) * tw), ((t * 3 + c) * size + y) * size);
    for (let y = 0; y < th; y++) mask.fill(1, (t * size + y) * size, (t * size + y) * size + tw);
  }
  return { pixelValues, tiles, rows: p.rows, cols: p.cols, tileHeight: size, tileWidth: size, pixelAttentionMask: mask };
}

/** A loaded Idefics3 / SmolVLM model. */
export class Idefics3Model extends VlmModel {
  constructor(
    ctx: GpuContext,
    readonly cfg: Idefics3Config,
    readonly imageProcessor: Idefics3ImageProcessorConfig,
    vision: Idefics3Vision,
    text: Decoder,
    source: string,
    memory: { weights: number; budget: number | undefined; budgetWhat: string },
  ) {
    const preprocess = (img: RgbImage) => toTiledImage(idefics3Preprocess(img, imageProcessor), cfg.vision.imageSize);
    super(ctx, {
      type: cfg.modelType,
      source,
      imageTokenId: cfg.imageTokenId,
      decoder: text,
      vision,
      positions: new RotaryPositions(cfg.text.headDim, cfg.text.ropeTheta),
      preprocess,
      imageView: (img) => {
        const p = idefics3Preprocess(img, imageProcessor);
        // The heatmap view: the resized image the crops were cut from (stage 2), each crop's run of image tokens a
        // side x side square on its own part of it (row-major crops), and the global tile (the whole image at one
        // tile, its run last) as its own view. An image that fits one tile is that tile: one run over stage 2.
        // (Tiles smaller than the tower's image_size are padded bottom-right; their tokens then overhang the crop.)
        const side = cfg.gridSide / cfg.scaleFactor;
        if (p.rows === 0) return { image: p.stage2, grid: [side, side], tiles: { rows: 1, cols: 1, tokenSide: side, global: false } };
        return {
          image: p.stage2,
          grid: [p.rows * side, p.cols * side],
          tiles: { rows: p.rows, cols: p.cols, tokenSide: side, global: true },
          globalImage: p.tileImages[p.tileImages.length - 1]!,
        };
      },
      createProcessor: (tokenizer: Tokenizer) => new Idefics3Processor(tokenizer, cfg, preprocess),
      memory,
    });
  }
}

async function loadWeights(ctx: GpuContext, cfg: Idefics3Config, w: WeightLoader) {
  const v = cfg.vision;
  const E = v.hidden;
  const vname = (s: string) => w.resolve(VISION_PREFIXES.map((p) => p + s));
  const P = v.patchSize;
  const weights: Idefics3VisionWeights = {
    patchWeight: await w.load(vname('embeddings.patch_embedding.weight'), [E, v.channels, P, P], [E, v.channels * P * P]),
    patchBias: await w.loadTensor(vname('embeddings.patch_embedding.bias'), [E]),
    positionEmbedding: await w.load(vname('embeddings.position_embedding.weight'), [cfg.gridSide ** 2, E]),
    postNormW: await w.loadTensor(vname('post_layernorm.weight'), [E]),
    postNormB: await w.loadTensor(vname('post_layernorm.bias'), [E]),
    projection: await w.load(w.resolve(CONNECTOR_PREFIXES.map((p) => p + 'modality_projection.proj.weight')), [cfg.text.hidden, E * cfg.scaleFactor ** 2]),
  };
  const encoder = await VitEncoder.load(
    ctx,
    { hidden: E, heads: v.heads, headDim: v.headDim, intermediate: v.intermediate, eps: v.eps, norm: 'layernorm', mlp: 'fc', act: v.act },
    v.layers,
    w,
    vname,
    (l) => `encoder.layers.${l}.`,
    CLIP_BLOCK_NAMES,
  );
  const text = await Decoder.load(ctx, cfg.text, w, TEXT_PREFIXES, LM_HEAD_NAMES);
  return { vision: new Idefics3Vision(ctx, cfg, weights, encoder), text };
}

/** loadModel's entry for model_type idefics3 and smolvlm (the caller closes the checkpoint). */
export async function loadIdefics3(ctx: GpuContext, ckpt: Checkpoint, name: string, opts: LoadOptions = {}): Promise<Idefics3Model> {
  const processorJson = await ckpt.readJson('processor_config.json');
  const cfg = parseIdefics3Config(ckpt.config, `${name}/config.json`, processorJson, `${name}/processor_config.json`);
  const pp = await ckpt.readJson('preprocessor_config.json');
  const imageProcessor = parseIdefics3ImageProcessorConfig(pp ?? {}, `${name}/preprocessor_config.json`);
  if (imageProcessor.maxImageSize > cfg.vision.imageSize) {
    throw new Error(
      `${name}/preprocessor_config.json max_image_size ${imageProcessor.maxImageSize} is larger than the vision tower's tiles (config.json vision_config.image_size ${cfg.vision.imageSize})`,
    );
  }
  // The vision pass depends on the image's tiles and is checked per run (VlmModel.run) once they are known.
  const { parts, memory } = await loadChecked(ctx, ckpt, name, opts, cfg.text, (bytes, context) => planTextMemory(cfg.text, bytes, context), (w) => loadWeights(ctx, cfg, w));
  return new Idefics3Model(ctx, cfg, imageProcessor, parts.vision, parts.text, name, memory);
}
