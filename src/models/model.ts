// The model surface every caller holds, whatever the family: what goes into a run and what comes out, what an
// image becomes before the run, and the processor that turns a prompt and images into token ids. The families
// (llava, qwen2_vl, qwen2_5_vl) differ in their config parser, weight-name map, vision encoder and processor;
// the run contract below is the same for all of them (src/models/vlm.ts implements it once).

import type { CaptureSpec, InterventionSpec, Tower } from '../spec/spec.js';
import type { RgbImage } from '../io/image.js';
import type { Tokenizer } from '../io/tokenizer.js';
import type { DType } from '../gpu/tensor.js';
import type { LoadProgress } from './weights.js';

/** Families the engine runs, by config.json `model_type`. */
export const MODEL_TYPES = ['llava', 'qwen2_vl', 'qwen2_5_vl', 'idefics3', 'smolvlm'] as const;
export type ModelType = (typeof MODEL_TYPES)[number];

/**
 * An image after the family's image processor, as `run` takes it:
 * - LLaVA (CLIP): the pixel values [C, H, W] channels first at the tower's fixed size;
 * - Qwen2-VL / 2.5-VL: the flattened patches [patches, C*T*P*P] in the processor's 2x2-block order with their
 *   (t, h, w) patch grid (image_grid_thw), which sets how many image tokens the image makes;
 * - Idefics3 / SmolVLM: the tiles [tiles, C, H, W] (row-major crops, then the global image) with their rows x cols
 *   layout (0 x 0: one tile, no split) and, for padded tiles, the pixel attention mask [tiles, H, W].
 */
export type ImageInput = Float32Array | PatchedImage | TiledImage;

export interface PatchedImage {
  pixelValues: Float32Array;
  grid: [number, number, number];
}

export interface TiledImage {
  pixelValues: Float32Array;
  tiles: number;
  rows: number;
  cols: number;
  tileHeight: number;
  tileWidth: number;
  /** 1 on real pixels, 0 on padding; absent = every pixel real. */
  pixelAttentionMask?: Uint8Array;
}

export function isPatchedImage(x: ImageInput): x is PatchedImage {
  return !(x instanceof Float32Array) && 'grid' in x;
}

export function isTiledImage(x: ImageInput): x is TiledImage {
  return !(x instanceof Float32Array) && 'tiles' in x;
}

/** A captured array: row-major data with its shape. */
export interface Captured {
  shape: number[];
  data: Float32Array;
}

export interface PatternCaptured extends Captured {
  tower: Tower;
  layer: number;
  heads: number[];
  rows: number[];
  /** Vision captures: which image of the prompt the pattern belongs to (text: absent). */
  image?: number;
  /** Tiled images (Idefics3): which tile of the image (row-major crops, then the global image). */
  tile?: number;
}

export interface ResidualCaptured extends Captured {
  tower: Tower;
  layer: number;
  /** Vision captures: which image of the prompt the rows belong to (text: absent). */
  image?: number;
  /** Tiled images (Idefics3): which tile of the image the rows belong to. */
  tile?: number;
}

export interface RunInput {
  /** Token ids of the prompt, image tokens already expanded. */
  ids: number[];
  /** Preprocessed images (the model's `preprocess`), in the order of their image tokens. */
  pixelValues?: ImageInput[];
  interventions?: InterventionSpec;
  capture?: CaptureSpec;
  /** Tokens to generate after the prompt (0 = prefill only). */
  maxNewTokens?: number;
  /** Stop generation at these token ids (not included in the output). */
  stopTokens?: number[];
  /** Called with each generated token as soon as it is known. */
  onToken?: (id: number) => void;
  /**
   * Choose each next token from the last row's logits (sampling). Without it decoding is greedy on the GPU
   * and only the 4-byte token id is read back per step; with it the logits row is read back.
   */
  chooseToken?: (logits: Float32Array, generated: readonly number[]) => number;
  /** Stop after a token when this returns true (e.g. a stop string appeared); the token is kept. */
  stopAfter?: (generated: readonly number[]) => boolean;
}

export interface RunResult {
  logits?: Captured;
  pattern: PatternCaptured[];
  z?: Captured;
  residual: ResidualCaptured[];
  imageFeatures?: Captured;
  tokens?: number[];
  /**
   * Rotary positions of the prompt, [3, L] for M-RoPE families (t, h, w rows) or [1, L], and the offset decode
   * steps add to the sequence index (Qwen's rope_deltas; 0 for 1-D rotary).
   */
  positions?: { shape: number[]; data: Int32Array; ropeDelta: number };
  timings: { prefillMs: number; decodeMs: number; decodeSteps: number };
}

export interface LoadOptions {
  onProgress?: (p: LoadProgress) => void;
  /** Store weights in this dtype (converted while loading), e.g. 'f16' to halve an f32/bf16 checkpoint. */
  dtype?: DType;
  /** Split weights above this size into row blocks (default: the adapter's binding limit). */
  maxBindingBytes?: number;
  /** Tokens of context to plan the KV cache for when checking that the model fits (default 2048). */
  contextLength?: number;
  /**
   * Bytes of GPU memory the model may use. Default: for CPU adapters (SwiftShader) the free system memory in Node,
   * half of navigator.deviceMemory in a browser; WebGPU does not tell a real GPU's memory size, so there it is only
   * checked when given.
   */
  memoryBudget?: number;
}

/** What a model needs on the GPU, computed before anything is allocated. */
export interface MemoryPlan {
  weights: number;
  kvCache: number;
  activations: number;
  total: number;
}

export interface ProcessedPrompt {
  /** The text that was tokenized: every image placeholder expanded to the image's token count. */
  text: string;
  /** Token ids (BOS as the tokenizer config says), image tokens expanded. */
  ids: number[];
  /** One preprocessed image per placeholder, in prompt order. */
  pixelValues: ImageInput[];
}

/**
 * A family's processor (Hugging Face's *Processor): the chat prompt, image preprocessing and the expansion of each
 * image placeholder to the image's token count before tokenizing.
 */
export interface VlmProcessor {
  readonly tokenizer: Tokenizer;
  /** The placeholder one image takes in prompt text before expansion (e.g. "<image>", "<|image_pad|>"). */
  readonly imageToken: string;
  /** The user prompt with one placeholder per image, through the folder's chat template or the family's format. */
  formatPrompt(prompt: string, imageCount: number): string;
  /** Expand the placeholders for these images (their sizes decide the counts) and tokenize. */
  encodeText(text: string, images: readonly ImageInput[]): { text: string; ids: number[] };
  /** Preprocess the images, expand the placeholders, tokenize, and check that everything agrees. */
  process(text: string, images: RgbImage[]): ProcessedPrompt;
  /** Token ids that end an answer besides the tokenizer's EOS (e.g. Qwen's <|im_end|>). */
  readonly stopTokenIds: number[];
}

/** An image as the model sees it after resizing / cropping, and how its image tokens tile it (rows x cols). */
export interface ImageView {
  image: RgbImage;
  /** Rows x cols of image tokens over `image` (tiled images: the crops' tokens, rows * tokenSide x cols * tokenSide). */
  grid: [number, number];
  /** Tiled images (Idefics3 / SmolVLM): the image tokens come as one run per tile; absent = one run over `grid`. */
  tiles?: TileLayout;
  /** The global tile as the model saw it (the whole image downscaled to one tile) when `tiles.global`. */
  globalImage?: RgbImage;
}

/**
 * How a tiled image's runs of image tokens (one per tile, in prompt order) lie on the image: `rows` x `cols` crops
 * of ImageView.image in row-major order, then, when `global`, one run for the whole image downscaled to a tile.
 * Each run is a `tokenSide` x `tokenSide` square of tokens, row-major. An image that fits one tile has rows = cols
 * = 1 and no global run (its single run covers the whole image).
 */
export interface TileLayout {
  rows: number;
  cols: number;
  tokenSide: number;
  global: boolean;
}

/** Where a model's image tokens are in a prompt: [start, end) spans of consecutive image-token positions. */
export function imageTokenSpans(ids: readonly number[], imageTokenId: number): [number, number][] {
  const spans: [number, number][] = [];
  for (let i = 0; i < ids.length; i++) {
    if (ids[i] !== imageTokenId) continue;
    const start = i;
    while (i + 1 < ids.length && ids[i + 1] === imageTokenId) i++;
    spans.push([start, i + 1]);
  }
  return spans;
}

/**
 * The prompt through the folder's chat template, as the Hugging Face processors build it: one user message with one
 * image part per image, then the text part, and the generation prompt. Null when the tokenizer has no template
 * (each family then has its own format).
 */
export function chatTemplatePrompt(tokenizer: Tokenizer, prompt: string, imageCount: number): string | null {
  if (!Number.isInteger(imageCount) || imageCount < 0) throw new Error(`image count must be a non-negative integer, got ${imageCount}`);
  if (tokenizer.chatTemplate === null) return null;
  const content: { type: 'text' | 'image'; text?: string }[] = [];
  for (let i = 0; i < imageCount; i++) content.push({ type: 'image' });
  content.push({ type: 'text', text: prompt });
  return tokenizer.applyChatTemplate([{ role: 'user', content }], { addGenerationPrompt: true });
}
