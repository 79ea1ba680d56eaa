// Hugging Face Idefics3Processor (processing_idefics3.py): the folder's chat template (SmolVLM's writes
// `<|im_start|>User:<image>...<end_of_utterance>\nAssistant:`), each `<image>` replaced by the tile layout's prompt
// string (`<fake_token_around_image>`, `<row_r_col_c>`, "\n" per row, `<global-img>`, image_seq_len `<image>` per
// tile) BEFORE tokenizing the whole text (BPE merges "\n\n"); the byte-level BPE tokenizer adds no BOS.

import type { RgbImage } from '../../io/image.js';
import { type Tokenizer, TokenizerError } from '../../io/tokenizer.js';
import { type ImageInput, type ProcessedPrompt, type TiledImage, type VlmProcessor, chatTemplatePrompt, isTiledImage } from '../model.js';
import type { Idefics3Config } from './config.js';
import { idefics3ImagePromptString } from './image-processor.js';

export class Idefics3Processor implements VlmProcessor {
  readonly imageToken: string;
  readonly stopTokenIds: number[];

  constructor(
    readonly tokenizer: Tokenizer,
    readonly config: Idefics3Config,
    private preprocessImage: (img: RgbImage) => TiledImage,
  ) {
    const tok = tokenizer.idToToken(config.imageTokenId);
    if (tok === undefined || tokenizer.tokenToId(tok) !== config.imageTokenId) {
      throw new TokenizerError(`config.json image_token_id is ${config.imageTokenId}, but the tokenizer (${tokenizer.vocabSize} tokens) has no such token`);
    }
    this.imageToken = tok;
    for (const t of ['<fake_token_around_image>', '<global-img>']) {
      if (tokenizer.tokenToId(t) === undefined) throw new TokenizerError(`the tokenizer has no ${t} token, which Idefics3 prompts need around every image`);
    }
    // SmolVLM-Instruct ends a turn with <end_of_utterance>.
    this.stopTokenIds = ['<end_of_utterance>'].map((t) => tokenizer.tokenToId(t)).filter((id): id is number => id !== undefined);
  }

  formatPrompt(prompt: string, imageCount: number): string {
    const templated = chatTemplatePrompt(this.tokenizer, prompt, imageCount);
    if (templated !== null) return templated;
    // SmolVLM's template: "User:" when the turn starts with an image, "User: " when it starts with text.
    return `<|im_start|>User:${imageCount ? this.imageToken.repeat(imageCount) : ' '}${prompt}<end_of_utterance>\nAssistant:`;
  }

  encodeText(text: string, images: readonly ImageInput[]): { text: string; ids: number[] } {
    const tok = this.imageToken;
    const parts = text.split(tok);
    if (parts.length - 1 !== images.length) {
      throw new Error(
        `the prompt has ${parts.length - 1} ${tok} placeholder${parts.length === 2 ? '' : 's'} but ${images.length} image${images.length === 1 ? ' was' : 's were'} given; ` +
          `put one ${tok} in the prompt per image (formatPrompt does this)`,
      );
    }
    const layouts = images.map((img, i) => {
      if (!isTiledImage(img)) throw new Error(`image ${i}: an Idefics3 image must be preprocessed into tiles (Idefics3Processor.process / model.preprocess)`);
      return img;
    });
    const expanded = parts.map((p, i) => (i < layouts.length ? p + idefics3ImagePromptString(layouts[i].rows, layouts[i].cols, this.config.imageSeqLen) : p)).join('');
    const ids = this.tokenizer.encode(expanded);
    const found = ids.reduce((n, id) => n + (id === this.config.imageTokenId ? 1 : 0), 0);
    const want = layouts.reduce((n, l) => n + l.tiles * this.config.imageSeqLen, 0);
    if (found !== want) {
      throw new Error(`tokenizing the prompt gave ${found} image tokens (id ${this.config.imageTokenId}) but the images' tiles need ${want}; the tokenizer must keep ${tok} as one special token`);
    }
    return { text: expanded, ids };
  }

  process(text: string, images: RgbImage[]): ProcessedPrompt & { pixelValues: TiledImage[] } {
    const pixelValues = images.map((img) => this.preprocessImage(img));
    const { text: expanded, ids } = this.encodeText(text, pixelValues);
    return { text: expanded, ids, pixelValues };
  }
}
