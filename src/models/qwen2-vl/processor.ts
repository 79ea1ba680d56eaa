// Hugging Face Qwen2VLProcessor (processing_qwen2_vl.py): the chat template writes one <|image_pad|> per image
// between <|vision_start|> and <|vision_end|>; each is replaced by grid_t*grid_h*grid_w / merge_size^2 copies
// (the image's token count) before tokenizing; no BOS (the byte-level BPE tokenizer adds none).

import type { RgbImage } from '../../io/image.js';
import { type Tokenizer, TokenizerError } from '../../io/tokenizer.js';
import { type ImageInput, type PatchedImage, type ProcessedPrompt, type VlmProcessor, chatTemplatePrompt, isPatchedImage } from '../model.js';
import type { QwenConfig } from './config.js';
import { type QwenImageProcessorConfig, qwenPreprocess } from './image-processor.js';

/** Qwen2-VL-Instruct's default system prompt, used when the folder has no chat template. */
export const QWEN_DEFAULT_SYSTEM = 'You are a helpful assistant.';

export class QwenProcessor implements VlmProcessor {
  readonly imageToken: string;
  readonly visionStart: string;
  readonly visionEnd: string;
  readonly stopTokenIds: number[];

  constructor(
    readonly tokenizer: Tokenizer,
    readonly config: QwenConfig,
    readonly imageProcessor: QwenImageProcessorConfig,
  ) {
    const name = (id: number, key: string) => {
      const tok = tokenizer.idToToken(id);
      if (tok === undefined || tokenizer.tokenToId(tok) !== id) {
        throw new TokenizerError(`config.json ${key} is ${id}, but the tokenizer (${tokenizer.vocabSize} tokens) has no such token`);
      }
      return tok;
    };
    this.imageToken = name(config.imageTokenId, 'image_token_id');
    this.visionStart = name(config.visionStartTokenId, 'vision_start_token_id');
    this.visionEnd = name(config.visionEndTokenId, 'vision_end_token_id');
    // Instruct models end a turn with <|im_end|>; base models with <|endoftext|>.
    this.stopTokenIds = ['<|im_end|>', '<|endoftext|>'].map((t) => tokenizer.tokenToId(t)).filter((id): id is number => id !== undefined);
  }

  formatPrompt(prompt: string, imageCount: number): string {
    const templated = chatTemplatePrompt(this.tokenizer, prompt, imageCount);
    if (templated !== null) return templated;
    const images = `${this.visionStart}${this.imageToken}${this.visionEnd}`.repeat(imageCount);
    return `<|im_start|>system\n${QWEN_DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\n${images}${prompt}<|im_end|>\n<|im_start|>assistant\n`;
  }

  /** Image tokens of one preprocessed image (grid_t * grid_h * grid_w / merge_size^2). */
  imageTokens(image: ImageInput): number {
    if (!isPatchedImage(image)) throw new Error('a Qwen image must be preprocessed into patches with their grid (QwenProcessor.process / model.preprocess)');
    const [t, h, w] = image.grid;
    return (t * h * w) / this.config.vision.mergeSize ** 2;
  }

  encodeText(text: string, images: readonly ImageInput[]): { text: string; ids: number[] } {
    const tok = this.imageToken;
    const parts = text.split(tok);
    if (parts.length - 1 !== images.length) {
      throw new Error(
        `the prompt has ${parts.length - 1} ${tok} placeholder${parts.length === 2 ? '' : 's'} but ${images.length} image${images.length === 1 ? ' was' : 's were'} given; ` +
          `put one ${this.visionStart}${tok}${this.visionEnd} in the prompt per image (formatPrompt does this)`,
      );
    }
    const counts = images.map((img) => this.imageTokens(img));
    const expanded = parts.map((p, i) => (i < counts.length ? p + tok.repeat(counts[i]) : p)).join('');
    const ids = this.tokenizer.encode(expanded);
    const found = ids.reduce((n, id) => n + (id === this.config.imageTokenId ? 1 : 0), 0);
    const want = counts.reduce((a, b) => a + b, 0);
    if (found !== want) {
      throw new Error(`tokenizing the prompt gave ${found} image tokens (id ${this.config.imageTokenId}) but the images need ${want} (${counts.join(' + ')}); the tokenizer must keep ${tok} as one special token`);
    }
    return { text: expanded, ids };
  }

  process(text: string, images: RgbImage[]): ProcessedPrompt & { pixelValues: PatchedImage[] } {
    const pixelValues = images.map((img) => {
      const p = qwenPreprocess(img, this.imageProcessor);
      return { pixelValues: p.pixelValues, grid: p.grid };
    });
    const { text: expanded, ids } = this.encodeText(text, pixelValues);
    return { text: expanded, ids, pixelValues };
  }
}
