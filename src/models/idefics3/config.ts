// Idefics3 / SmolVLM config.json (transformers configuration_idefics3.py, smolvlm/configuration_smolvlm.py): a
// SigLIP vision_config, a Llama text_config, the connector's scale_factor and the image token; image_seq_len comes
// from processor_config.json (or is derived: (image_size / patch_size)^2 / scale_factor^2).

import { ConfigError, type DecoderConfig, Fields, type VitConfig, parseLlamaText, parseVitConfig } from '../config.js';

export interface Idefics3Config {
  modelType: 'idefics3' | 'smolvlm';
  vision: VitConfig;
  text: DecoderConfig;
  /** Pixel-shuffle factor: s x s neighbouring patches become one token of s^2 * E features. */
  scaleFactor: number;
  imageTokenId: number;
  /** Patches per side of a full tile (image_size / patch_size). */
  gridSide: number;
  /** Image tokens per tile: (gridSide / scaleFactor)^2. */
  imageSeqLen: number;
}

/** Idefics3VisionConfig's class defaults (SigLIP so400m-like), used where vision_config leaves a key out. */
const SIGLIP_DEFAULTS = { hidden: 1152, intermediate: 3072, layers: 12, heads: 16, imageSize: 224, patchSize: 32, eps: 1e-6, act: 'gelu_pytorch_tanh' };

export function parseIdefics3Config(json: Record<string, unknown>, file = 'config.json', processorConfig: Record<string, unknown> | null = null, processorFile = 'processor_config.json'): Idefics3Config {
  const top = new Fields(json, file, '');
  const type = top.str('model_type');
  if (type !== 'idefics3' && type !== 'smolvlm') top.fail('model_type', `is '${type}'; this parser reads idefics3 and smolvlm`);
  const modelType = type as Idefics3Config['modelType'];
  const t = top.sub('text_config');
  const textType = t.str('model_type', 'llama');
  if (textType !== 'llama') t.fail('model_type', `'${textType}' is not supported as an Idefics3 language model (llama)`);
  // The VLM's own tie_word_embeddings decides (SmolLM2-135M ties, SmolVLM-256M does not).
  const text = { ...parseLlamaText(t, top), ...(top.has('tie_word_embeddings') ? { tieEmbeddings: top.bool('tie_word_embeddings', false) } : {}) };
  const vf = top.sub('vision_config');
  const pf = processorConfig ? new Fields(processorConfig, processorFile, '') : null;
  const givenSeqLen = pf?.has('image_seq_len') ? pf.int('image_seq_len') : undefined;
  if (givenSeqLen === undefined) {
    // image_seq_len = (image_size / patch_size)^2 / scale_factor^2 needs whole patches; say so before the vision
    // config's own patch_size check does (that one stands when processor_config.json gives image_seq_len).
    const imageSize = vf.int('image_size', SIGLIP_DEFAULTS.imageSize);
    const patchSize = vf.int('patch_size', SIGLIP_DEFAULTS.patchSize);
    if (imageSize % patchSize) {
      throw new ConfigError(
        `${processorFile}: "image_seq_len" ${processorConfig ? 'is missing' : 'is not given'} and cannot be derived: ` +
          `config.json vision_config image_size ${imageSize} is not a multiple of patch_size ${patchSize}, so a tile has no whole grid of patches (image_seq_len = (image_size / patch_size)^2 / scale_factor^2)`,
      );
    }
  }
  const vision = parseVitConfig(vf, SIGLIP_DEFAULTS);
  const scaleFactor = top.int('scale_factor', 2);
  const gridSide = vision.imageSize / vision.patchSize;
  if (gridSide % scaleFactor) {
    top.fail('scale_factor', `(${scaleFactor}) must divide the patch grid of a tile (vision_config image_size ${vision.imageSize} / patch_size ${vision.patchSize} = ${gridSide})`);
  }
  const derived = (gridSide / scaleFactor) ** 2;
  const imageSeqLen = givenSeqLen ?? derived;
  if (pf && givenSeqLen !== undefined && givenSeqLen !== derived) {
    pf.fail('image_seq_len', `(${givenSeqLen}) disagrees with config.json: a ${vision.imageSize}px tile of ${vision.patchSize}px patches pixel-shuffled by ${scaleFactor} makes ${derived} tokens`);
  }
  const imageTokenId = top.has('image_token_id') ? top.int('image_token_id', undefined, 0) : top.int('image_token_index', 128257, 0);
  if (imageTokenId >= text.vocab) top.fail('image_token_id', `${imageTokenId} is outside the vocabulary of ${text.vocab} tokens`);
  return { modelType, vision, text, scaleFactor, imageTokenId, gridSide, imageSeqLen };
}
