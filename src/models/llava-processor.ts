// Hugging Face LlavaProcessor: the prompt (chat template or the LLaVA-1.5 format), each <image> placeholder
// expanded to as many image tokens as the config gives image features, BEFORE tokenizing (processing_llava.py),
// the tokenizer's BOS rule, and CLIP preprocessing of the images (with LLaVA's optional pad-to-square, do_pad).
// References (transformers): llava/processing_llava.py `__call__` (num_image_tokens, the expansion),
// clip/image_processing_clip.py `preprocess`, docs/source/en/model_doc/llava.md (the "USER: <image>\n<prompt>
// ASSISTANT:" prompt format).

import { clipPreprocess, type ClipProcessorConfig } from '../io/clip-processor.js';
import type { RgbImage } from '../io/image.js';
import { type Tokenizer, TokenizerError } from '../io/tokenizer.js';
import { type LlavaConfig, imageTokenCount } from './config.js';
import { type ImageInput, type ProcessedPrompt as VlmProcessedPrompt, type VlmProcessor, chatTemplatePrompt } from './model.js';

/** The LLaVA-1.5 single-turn prompt (llava docs): `USER: <image>\n{prompt} ASSISTANT:`. */
export const LLAVA_15_TEMPLATE = (prompt: string): string => `USER: <image>\n${prompt} ASSISTANT:`;

export interface ProcessedPrompt extends VlmProcessedPrompt {
  /** One preprocessed image per placeholder, [3, H, W] channels first, in prompt order. */
  pixelValues: Float32Array[];
}

function countOccurrences(text: string, needle: string): number {
  let n = 0;
  for (let i = text.indexOf(needle); i >= 0; i = text.indexOf(needle, i + needle.length)) n++;
  return n;
}

export class LlavaProcessor implements VlmProcessor {
  /** The image placeholder: the tokenizer's token for config.imageTokenIndex (e.g. "<image>"). */
  readonly imageToken: string;
  /** Image tokens each image expands to. */
  readonly imageTokens: number;
  /** LLaVA stops on the tokenizer's EOS only. */
  readonly stopTokenIds: number[] = [];

  constructor(
    readonly tokenizer: Tokenizer,
    readonly config: LlavaConfig,
    readonly imageProcessor: ClipProcessorConfig,
  ) {
    const token = tokenizer.idToToken(config.imageTokenIndex);
    if (token === undefined) {
      throw new TokenizerError(
        `config.json image_token_index is ${config.imageTokenIndex}, but the tokenizer (${tokenizer.vocabSize} tokens) has no such token`,
      );
    }
    if (tokenizer.tokenToId(token) !== config.imageTokenIndex) {
      throw new TokenizerError(
        `the tokenizer's token ${JSON.stringify(token)} for image_token_index ${config.imageTokenIndex} maps back to id ${tokenizer.tokenToId(token)}`,
      );
    }
    this.imageToken = token;
    this.imageTokens = imageTokenCount(config);
  }

  /**
   * The user prompt wrapped by the folder's chat template when it has one (a user message with one image part per
   * image then the text part, add_generation_prompt), else the LLaVA-1.5 template; one image placeholder per image.
   */
  formatPrompt(prompt: string, imageCount: number): string {
    const templated = chatTemplatePrompt(this.tokenizer, prompt, imageCount);
    if (templated !== null) return templated;
    if (imageCount === 1 && this.imageToken === '<image>') return LLAVA_15_TEMPLATE(prompt);
    return `USER: ${`${this.imageToken}\n`.repeat(imageCount)}${prompt} ASSISTANT:`;
  }

  /**
   * The text half of `process`: expands every image placeholder to imageTokenCount(config) copies and tokenizes
   * (BOS per the tokenizer config), checking the placeholders against `imageCount` and the image-token ids found.
   */
  encodeText(text: string, images: number | readonly ImageInput[]): { text: string; ids: number[] } {
    // Every LLaVA image makes the same number of tokens, so a count is enough.
    const imageCount = typeof images === 'number' ? images : images.length;
    const tok = this.imageToken;
    const placeholders = countOccurrences(text, tok);
    if (placeholders !== imageCount) {
      throw new Error(
        `the prompt has ${placeholders} ${tok} placeholder${placeholders === 1 ? '' : 's'} but ${imageCount} image${imageCount === 1 ? ' was' : 's were'} given; ` +
          `put one ${tok} in the prompt per image (formatPrompt does this)`,
      );
    }
    const expanded = text.split(tok).join(tok.repeat(this.imageTokens));
    const ids = this.tokenizer.encode(expanded);
    const found = ids.reduce((n, id) => n + (id === this.config.imageTokenIndex ? 1 : 0), 0);
    if (found !== imageCount * this.imageTokens) {
      throw new Error(
        `tokenizing the prompt gave ${found} image tokens (id ${this.config.imageTokenIndex}) but ${imageCount} image(s) need ` +
          `${imageCount * this.imageTokens} (${this.imageTokens} each); the tokenizer must keep ${tok} as one special token`,
      );
    }
    return { text: expanded, ids };
  }

  /**
   * Expands every image placeholder to imageTokenCount(config) copies, tokenizes (BOS per the tokenizer config),
   * preprocesses the images (clipPreprocess, do_pad honoured) and checks that placeholders, images and image-token
   * ids agree.
   */
  process(text: string, images: RgbImage[]): ProcessedPrompt {
    const { text: expanded, ids } = this.encodeText(text, images.length);
    const { channels, imageSize } = this.config.vision;
    const pixelValues = images.map((img, i) => {
      const p = clipPreprocess(img, this.imageProcessor);
      if (p.height !== imageSize || p.width !== imageSize || p.pixelValues.length !== channels * imageSize * imageSize) {
        throw new Error(
          `image ${i} preprocesses to ${p.height}x${p.width}, but the vision tower takes ${imageSize}x${imageSize} ` +
            `(check preprocessor_config.json crop_size / size against config.json vision_config.image_size)`,
        );
      }
      return p.pixelValues;
    });
    return { text: expanded, ids, pixelValues };
  }
}
