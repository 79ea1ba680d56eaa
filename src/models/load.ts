// Loading a Hugging Face folder as a model: config.json's `model_type` picks the family; every family returns the
// same VlmModel surface.

import type { GpuContext } from '../gpu/context.js';
import { Checkpoint, type FolderSource, nodeFolder } from '../io/checkpoint.js';
import { ConfigError, parseLlavaConfig } from './config.js';
import type { ModelDims } from '../spec/spec.js';
import { parseQwenConfig } from './qwen2-vl/config.js';
import { LlavaModel } from './llava.js';
import { MODEL_TYPES, type LoadOptions, type ModelType } from './model.js';
import { loadQwen2VL } from './qwen2-vl/model.js';
import { loadIdefics3 } from './idefics3/model.js';
import { parseIdefics3Config } from './idefics3/config.js';
import type { VlmModel } from './vlm.js';

type FamilyLoader = (ctx: GpuContext, ckpt: Checkpoint, name: string, opts: LoadOptions) => Promise<VlmModel>;

const FAMILIES: Record<ModelType, FamilyLoader> = {
  llava: (ctx, ckpt, name, opts) => LlavaModel.fromCheckpoint(ctx, ckpt, name, opts),
  qwen2_vl: loadQwen2VL,
  qwen2_5_vl: loadQwen2VL,
  idefics3: loadIdefics3,
  smolvlm: loadIdefics3,
};

/** The family of a parsed config.json (`model_type`), or a one-line error naming it and the supported ones. */
export function modelTypeOf(config: Record<string, unknown>, file = 'config.json'): ModelType {
  const t = config.model_type;
  if (t === undefined || t === null) throw new ConfigError(`${file}: "model_type" is missing (supported: ${MODEL_TYPES.join(', ')})`);
  if (typeof t !== 'string' || !(MODEL_TYPES as readonly string[]).includes(t)) {
    throw new ConfigError(`${file}: model_type ${JSON.stringify(t)} is not supported (supported: ${MODEL_TYPES.join(', ')})`);
  }
  return t as ModelType;
}

/** Load a Hugging Face model folder (a path in Node, or any FolderSource) of any supported family. */
export async function loadModel(ctx: GpuContext, folder: FolderSource | string, opts: LoadOptions = {}): Promise<VlmModel> {
  const src = typeof folder === 'string' ? nodeFolder(folder) : folder;
  const ckpt = await Checkpoint.open(src);
  try {
    const type = modelTypeOf(ckpt.config, `${src.name}/config.json`);
    return await FAMILIES[type](ctx, ckpt, src.name, opts);
  } finally {
    await ckpt.close();
  }
}

/**
 * Layers, heads and head dims of both towers from a parsed config.json, without loading weights (what interventions
 * and stores are checked against; a loaded model's `dims` are the same).
 */
export function modelDimsFromConfig(config: Record<string, unknown>, file = 'config.json'): ModelDims {
  const dims = (c: { layers: number; heads: number; headDim: number }) => ({ layers: c.layers, heads: c.heads, headDim: c.headDim });
  const type = modelTypeOf(config, file);
  const cfg = type === 'llava' ? parseLlavaConfig(config, file) : type === 'idefics3' || type === 'smolvlm' ? parseIdefics3Config(config, file) : parseQwenConfig(config, file);
  return { text: dims(cfg.text), vision: dims(cfg.vision) };
}
