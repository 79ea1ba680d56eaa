// Idefics3ImageProcessor (the slow, PIL-based one; SmolVLM uses it too) reimplemented bit for bit, plus the
// processor's image-token expansion:
//   resize (longest edge, LANCZOS) -> resize_for_vision_encoder -> split_image (row-major crops, global image
//   last) -> convert_to_rgb -> rescale -> normalize -> pad.
// References: transformers models/idefics3/image_processing_idefics3.py (`_resize_output_size_rescale_to_max_len`,
// `_resize_output_size_scale_below_upper_bound`, `resize_for_vision_encoder`, `split_image`, `convert_to_rgb`,
// `pad`, `preprocess`), image_processing_pil_idefics3.py (MAX_IMAGE_SIZE 4096, squaring when not splitting),
// processing_idefics3.py (`_prompt_split_image`, `_prompt_single_image`), image_transforms.py (`rescale`,
// `normalize`).

import { assertRgbImage, type RgbImage } from '../../io/image.js';
import { type PillowFilter, resizePillow } from '../../io/resize.js';
import { PreprocessorFields } from '../../io/preprocessor-fields.js';

/** image_processing_idefics3.py MAX_IMAGE_SIZE: upper bound on the stage-1 size ("4k resolution"). */
export const IDEFICS3_MAX_IMAGE_SIZE = 4096;

export interface Idefics3ImageProcessorConfig {
  doResize: boolean;
  /** Stage-1 target: `size.longest_edge` (aspect kept), or `size.height` + `size.width` (exact). */
  size: { longestEdge: number } | { height: number; width: number };
  /** `max_image_size.longest_edge`: the tile side (the vision encoder's image size). */
  maxImageSize: number;
  doImageSplitting: boolean;
  doRescale: boolean;
  rescaleFactor: number;
  doNormalize: boolean;
  imageMean: [number, number, number];
  imageStd: [number, number, number];
  /** Informational for one image (its tiles all have one size); padIdefics3Batch does the batch padding. */
  doPad: boolean;
  /** RGBA input is composited over white (required for RGBA: the model takes 3 channels). */
  doConvertRgb: boolean;
  resample: PillowFilter;
}

/** Idefics3ImageProcessor() class defaults (size 4*364, max_image_size 364; SmolVLM's file sets 2048 / 512). */
export function defaultIdefics3ImageProcessorConfig(): Idefics3ImageProcessorConfig {
  return {
    doResize: true,
    size: { longestEdge: 4 * 364 },
    maxImageSize: 364,
    doImageSplitting: true,
    doRescale: true,
    rescaleFactor: 1 / 255,
    doNormalize: true,
    imageMean: [0.5, 0.5, 0.5],
    imageStd: [0.5, 0.5, 0.5],
    doPad: true,
    doConvertRgb: true,
    resample: 'lanczos',
  };
}

/**
 * Reads an Idefics3 / SmolVLM preprocessor_config.json object (only that file: config.json's vision
 * `image_size` plays no part here). Missing or null keys take the class defaults; errors name the file and the
 * key. Unknown keys (image_processor_type, processor_class, ...) are ignored.
 */
export function parseIdefics3ImageProcessorConfig(json: Record<string, unknown>, file: string): Idefics3ImageProcessorConfig {
  const f = new PreprocessorFields(json, file);
  const cfg = f.common(defaultIdefics3ImageProcessorConfig());
  const bad = f.bad.bind(f);
  const has = f.has.bind(f);
  const isPosInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;
  const dict = (key: string): Record<string, unknown> => {
    const v = json[key];
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad(key, 'an object {"longest_edge": n}');
    return v as Record<string, unknown>;
  };
  cfg.doImageSplitting = f.bool('do_image_splitting', cfg.doImageSplitting);
  cfg.doPad = f.bool('do_pad', cfg.doPad);
  // size: {"longest_edge": n} (what Idefics3/SmolVLM files use) or {"height": h, "width": w} (resize's other form).
  if (has('size')) {
    const s = dict('size');
    if (s.longest_edge !== undefined && s.longest_edge !== null) {
      cfg.size = { longestEdge: isPosInt(s.longest_edge) ? s.longest_edge : bad('size.longest_edge', 'a positive integer', s.longest_edge) };
    } else if (s.height !== undefined || s.width !== undefined) {
      if (!isPosInt(s.height)) bad('size.height', 'a positive integer', s.height);
      if (!isPosInt(s.width)) bad('size.width', 'a positive integer', s.width);
      cfg.size = { height: s.height as number, width: s.width as number };
    } else {
      bad('size', 'an object with "longest_edge" (or "height" and "width")');
    }
  }
  if (has('max_image_size')) {
    const m = dict('max_image_size');
    cfg.maxImageSize = isPosInt(m.longest_edge) ? m.longest_edge : bad('max_image_size.longest_edge', 'a positive integer', m.longest_edge);
  }
  return cfg;
}

// ---------------------------------------------------------------------------------------------------
// Sizes (same double operations as the Python, so int() / ceil land identically)

/** `_resize_output_size_rescale_to_max_len`: longest side -> maxLen, the other `int()`-truncated, odd -> +1. */
export function resizeOutputSizeRescaleToMaxLen(height: number, width: number, maxLen: number, minLen = 1): [number, number] {
  const aspectRatio = width / height;
  if (width >= height) {
    width = maxLen;
    height = Math.trunc(width / aspectRatio);
    if (height % 2 !== 0) height += 1;
  } else {
    height = maxLen;
    width = Math.trunc(height * aspectRatio);
    if (width % 2 !== 0) width += 1;
  }
  return [Math.max(height, minLen), Math.max(width, minLen)];
}

/** `_resize_output_size_scale_below_upper_bound`: shrink (aspect kept) if the longest side exceeds maxLen. */
export function resizeOutputSizeScaleBelowUpperBound(height: number, width: number, maxLen: number): [number, number] {
  const aspectRatio = width / height;
  if (width >= height && width > maxLen) {
    width = maxLen;
    height = Math.trunc(width / aspectRatio);
  } else if (height > width && height > maxLen) {
    height = maxLen;
    width = Math.trunc(height * aspectRatio);
  }
  return [Math.max(height, 1), Math.max(width, 1)];
}

/** Stage-1 (height, width): image_processing_idefics3.py `get_resize_output_image_size` (or the exact size). */
export function idefics3Stage1Size(height: number, width: number, cfg: Pick<Idefics3ImageProcessorConfig, 'size'>): [number, number] {
  const s = cfg.size;
  if ('height' in s) return [s.height, s.width];
  const [h, w] = resizeOutputSizeRescaleToMaxLen(height, width, s.longestEdge);
  return resizeOutputSizeScaleBelowUpperBound(h, w, IDEFICS3_MAX_IMAGE_SIZE);
}

/** `resize_for_vision_encoder`: both sides up to multiples of maxSize (aspect roughly kept). */
export function resizeForVisionEncoderSize(height: number, width: number, maxSize: number): [number, number] {
  const aspectRatio = width / height;
  if (width >= height) {
    width = Math.ceil(width / maxSize) * maxSize;
    height = Math.trunc(width / aspectRatio);
    height = Math.ceil(height / maxSize) * maxSize;
  } else {
    height = Math.ceil(height / maxSize) * maxSize;
    width = Math.trunc(height * aspectRatio);
    width = Math.ceil(width / maxSize) * maxSize;
  }
  return [height, width];
}

/** Rows and columns of crops for an image of (height, width) after stage 2; 0, 0 when it fits one tile. */
export function idefics3Grid(height: number, width: number, maxSize: number): { rows: number; cols: number } {
  if (height > maxSize || width > maxSize) return { rows: Math.ceil(height / maxSize), cols: Math.ceil(width / maxSize) };
  return { rows: 0, cols: 0 };
}

// ---------------------------------------------------------------------------------------------------
// RGBA handling (Pillow arithmetic)

/** 8-bit RGBA, interleaved, straight (not premultiplied) alpha: `data.length === width * height * 4`. */
export interface RgbaImage {
  width: number;
  height: number;
  data: Uint8Array;
}

/** Pixels as processed: RGB, or RGBA (told apart by the data length). */
interface Raster {
  width: number;
  height: number;
  data: Uint8Array;
  channels: 3 | 4;
}

/** Pillow's MULDIV255: a * b / 255 rounded (Convert.c rgbA2rgba). */
function mulDiv255(a: number, b: number): number {
  const t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

/**
 * `Image.resize` on an RGBA image: Pillow converts RGBA -> RGBa (premultiplied, MULDIV255), resamples the four
 * channels independently with the same coefficients, then RGBa -> RGBA (Convert.c rgba2rgbA: alpha 0 or 255
 * copies, else CLIP8(255 * c / alpha), integer division). Same size returns a copy without the round trip.
 */
function resizeRaster(img: Raster, width: number, height: number, filter: PillowFilter): Raster {
  if (img.channels === 3) return { ...resizePillow(img, width, height, filter), channels: 3 };
  if (width === img.width && height === img.height) return { ...img, data: img.data.slice() };
  const n = img.width * img.height;
  const color = new Uint8Array(n * 3);
  const alpha = new Uint8Array(n * 3); // alpha in channel 0; each channel resamples on its own
  for (let i = 0; i < n; i++) {
    const a = img.data[i * 4 + 3]!;
    for (let c = 0; c < 3; c++) color[i * 3 + c] = mulDiv255(img.data[i * 4 + c]!, a);
    alpha[i * 3] = a;
  }
  const rc = resizePillow({ width: img.width, height: img.height, data: color }, width, height, filter).data;
  const ra = resizePillow({ width: img.width, height: img.height, data: alpha }, width, height, filter).data;
  const m = width * height;
  const out = new Uint8Array(m * 4);
  for (let i = 0; i < m; i++) {
    const a = ra[i * 3]!;
    for (let c = 0; c < 3; c++) {
      const v = rc[i * 3 + c]!;
      out[i * 4 + c] = a === 255 || a === 0 ? v : Math.min(255, Math.trunc((255 * v) / a));
    }
    out[i * 4 + 3] = a;
  }
  return { width, height, data: out, channels: 4 };
}

/**
 * idefics3 `convert_to_rgb`: `Image.alpha_composite(white, rgba).convert("RGB")` with Pillow's integer
 * arithmetic (AlphaComposite.c, 7 extra precision bits, rounded divisions by 255). RGB input is returned as is.
 */
function toRgb(img: Raster): RgbImage {
  if (img.channels === 3) return { width: img.width, height: img.height, data: img.data };
  const n = img.width * img.height;
  const out = new Uint8Array(n * 3);
  const PB = 7;
  const shiftDiv255 = (x: number): number => ((x >>> 8) + x) >>> 8;
  for (let i = 0; i < n; i++) {
    const sa = img.data[i * 4 + 3]!;
    if (sa === 0) {
      out[i * 3] = out[i * 3 + 1] = out[i * 3 + 2] = 255;
      continue;
    }
    // dst = opaque white: blend = 255 * (255 - sa), outa255 = sa * 255 + blend (all UINT32, no overflow here).
    const outa255 = sa * 255 + 255 * (255 - sa);
    const coef1 = Math.trunc((sa * 255 * 255 * (1 << PB)) / outa255);
    const coef2 = 255 * (1 << PB) - coef1;
    for (let c = 0; c < 3; c++) {
      const t = img.data[i * 4 + c]! * coef1 + 255 * coef2;
      out[i * 3 + c] = shiftDiv255(t + (0x80 << PB)) >>> PB;
    }
  }
  return { width: img.width, height: img.height, data: out };
}

/** Pillow `Image.resize` of an RGBA image (premultiplied while resampling), bit for bit. */
export function resizeRgbaPillow(img: RgbaImage, width: number, height: number, filter: PillowFilter): RgbaImage {
  checkRgba(img, 'resizeRgbaPillow');
  const { channels: _c, ...out } = resizeRaster({ ...img, channels: 4 }, width, height, filter);
  return out;
}

/** `Image.alpha_composite(white, img).convert("RGB")`, bit for bit (idefics3 convert_to_rgb). */
export function compositeOverWhite(img: RgbaImage): RgbImage {
  checkRgba(img, 'compositeOverWhite');
  return toRgb({ ...img, channels: 4 });
}

function checkRgba(img: RgbaImage, what: string): void {
  const { width, height, data } = img;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1 || data.length !== width * height * 4) {
    throw new Error(`${what}: expected ${width}x${height} RGBA (${width * height * 4} bytes), got ${data.length} bytes`);
  }
}

function cropRaster(img: Raster, x0: number, y0: number, w: number, h: number): Raster {
  const ch = img.channels;
  const out = new Uint8Array(w * h * ch);
  for (let y = 0; y < h; y++) {
    const src = ((y0 + y) * img.width + x0) * ch;
    out.set(img.data.subarray(src, src + w * ch), y * w * ch);
  }
  return { width: w, height: h, data: out, channels: ch };
}

// ---------------------------------------------------------------------------------------------------
// Preprocessing

export interface Idefics3Pixels {
  /** [tiles, 3, tileHeight, tileWidth], channels first: the crops in row-major order, then the global image. */
  pixelValues: Float32Array;
  tiles: number;
  /** Crop grid; 0, 0 when the image is one tile (no global duplicate then). */
  rows: number;
  cols: number;
  tileHeight: number;
  tileWidth: number;
  /** [tiles, tileHeight, tileWidth]: all ones for one image (padIdefics3Batch makes the zeros). */
  pixelAttentionMask: Uint8Array;
  /** After the longest-edge resize (the input itself when doResize is off). RGBA input: shown over white. */
  stage1: RgbImage;
  /** After resize_for_vision_encoder (or the max x max square when not splitting). RGBA input: over white. */
  stage2: RgbImage;
  /** The uint8 tiles pixelValues is made from, in its order. */
  tileImages: RgbImage[];
}

/**
 * Runs the Idefics3ImageProcessor slow path on one image (RGB, or RGBA with straight alpha).
 * RGBA follows image_processing_idefics3.py's order: resized and split as RGBA (Pillow premultiplies alpha while
 * resampling), each tile then composited over white. (The newer PIL backend instead calls PIL's convert("RGB")
 * first, which drops alpha; decodeImage does the same, so for decoded files both agree.)
 * Rescale is `uint8.astype(float64) * factor` cast to float32; normalize is float32 `(x - mean) / std` with
 * mean/std cast to float32 (Math.fround at each step equals the float32 operation).
 */
export function idefics3Preprocess(img: RgbImage | RgbaImage, cfg: Idefics3ImageProcessorConfig): Idefics3Pixels {
  const { width, height, data } = img;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new Error(`idefics3Preprocess: invalid image size ${width}x${height}`);
  }
  let cur: Raster;
  if (data.length === width * height * 4) {
    if (!cfg.doConvertRgb) {
      throw new Error('idefics3Preprocess: an RGBA image needs do_convert_rgb (the vision encoder takes 3 channels)');
    }
    cur = { width, height, data, channels: 4 };
  } else {
    assertRgbImage(img, 'idefics3Preprocess');
    cur = { width, height, data, channels: 3 };
  }
  const M = cfg.maxImageSize;
  const f = cfg.resample;

  if (cfg.doResize) {
    const [h, w] = idefics3Stage1Size(cur.height, cur.width, cfg);
    cur = resizeRaster(cur, w, h, f);
  }
  const stage1 = cur;

  let rows = 0;
  let cols = 0;
  let frames: Raster[];
  if (cfg.doImageSplitting) {
    const [h, w] = resizeForVisionEncoderSize(cur.height, cur.width, M);
    cur = resizeRaster(cur, w, h, f);
    ({ rows, cols } = idefics3Grid(cur.height, cur.width, M));
    if (rows > 0) {
      // split_image: crops at (r*M, c*M), row-major; then the whole image resized to M x M, last.
      frames = [];
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) frames.push(cropRaster(cur, c * M, r * M, M, M));
      }
      frames.push(resizeRaster(cur, M, M, f));
    } else {
      frames = [cur];
    }
  } else {
    // Not splitting: every image squared to M x M (image_processing_pil_idefics3.py).
    cur = resizeRaster(cur, M, M, f);
    frames = [cur];
  }
  const stage2 = cur;

  const tileImages = frames.map(toRgb);
  const tileHeight = tileImages[0]!.height;
  const tileWidth = tileImages[0]!.width;
  const plane = tileHeight * tileWidth;
  const pixelValues = new Float32Array(tileImages.length * 3 * plane);
  const mean = cfg.imageMean.map(Math.fround);
  const std = cfg.imageStd.map(Math.fround);
  tileImages.forEach((t, n) => {
    for (let c = 0; c < 3; c++) {
      const mc = mean[c]!;
      const sc = std[c]!;
      const base = (n * 3 + c) * plane;
      for (let i = 0; i < plane; i++) {
        let v = t.data[i * 3 + c]!;
        if (cfg.doRescale) v = Math.fround(v * cfg.rescaleFactor);
        if (cfg.doNormalize) v = Math.fround(Math.fround(v - mc) / sc);
        pixelValues[base + i] = v;
      }
    }
  });
  return {
    pixelValues,
    tiles: tileImages.length,
    rows,
    cols,
    tileHeight,
    tileWidth,
    pixelAttentionMask: new Uint8Array(tileImages.length * plane).fill(1),
    stage1: toRgb(stage1),
    stage2: toRgb(stage2),
    tileImages,
  };
}

// ---------------------------------------------------------------------------------------------------
// Batch padding

export interface Idefics3Batch {
  /** [batch, maxTiles, 3, height, width]. */
  pixelValues: Float32Array;
  /** [batch, maxTiles, height, width]: 1 on real pixels, 0 on padding. */
  pixelAttentionMask: Uint8Array;
  batch: number;
  maxTiles: number;
  height: number;
  width: number;
  /** Real tiles per sample (the rest of each sample's maxTiles slots are all-zero padding tiles). */
  tilesPerSample: number[];
}

/**
 * image_processing_idefics3.py `pad`: each sample (one processed image, or several whose tiles are concatenated
 * in order) gets maxTiles slots; every tile is padded bottom/right with 0.0 to the batch's largest height and
 * width, its mask 1 on the original pixels; missing slots are all-zero tiles with all-zero masks.
 * The model drops every tile whose values are all exactly 0.0 before the vision encoder (modeling_idefics3.py
 * `real_images_inds`), so padding tiles cost nothing; a real tile that happens to be all 0.0 is dropped too.
 */
export function padIdefics3Batch(samples: ReadonlyArray<Idefics3Pixels | ReadonlyArray<Idefics3Pixels>>): Idefics3Batch {
  if (samples.length === 0) throw new Error('padIdefics3Batch: no samples');
  const lists = samples.map((s) => (Array.isArray(s) ? (s as ReadonlyArray<Idefics3Pixels>) : [s as Idefics3Pixels]));
  const all = lists.flat();
  if (all.length === 0) throw new Error('padIdefics3Batch: no images');
  const height = Math.max(...all.map((p) => p.tileHeight));
  const width = Math.max(...all.map((p) => p.tileWidth));
  const tilesPerSample = lists.map((l) => l.reduce((s, p) => s + p.tiles, 0));
  const maxTiles = Math.max(...tilesPerSample);
  const B = lists.length;
  const plane = height * width;
  const pixelValues = new Float32Array(B * maxTiles * 3 * plane);
  const pixelAttentionMask = new Uint8Array(B * maxTiles * plane);
  lists.forEach((list, b) => {
    let slot = 0;
    for (const p of list) {
      const tp = p.tileHeight * p.tileWidth;
      for (let t = 0; t < p.tiles; t++, slot++) {
        const dstTile = b * maxTiles + slot;
        for (let c = 0; c < 3; c++) {
          for (let y = 0; y < p.tileHeight; y++) {
            const src = (t * 3 + c) * tp + y * p.tileWidth;
            pixelValues.set(p.pixelValues.subarray(src, src + p.tileWidth), (dstTile * 3 + c) * plane + y * width);
          }
        }
        for (let y = 0; y < p.tileHeight; y++) {
          const src = t * tp + y * p.tileWidth;
          pixelAttentionMask.set(p.pixelAttentionMask.subarray(src, src + p.tileWidth), dstTile * plane + y * width);
        }
      }
    }
  });
  return { pixelValues, pixelAttentionMask, batch: B, maxTiles, height, width, tilesPerSample };
}

// ---------------------------------------------------------------------------------------------------
// Prompt expansion

export interface Idefics3PromptTokens {
  fake: string;
  global: string;
  image: string;
}

export const IDEFICS3_PROMPT_TOKENS: Readonly<Idefics3PromptTokens> = {
  fake: '<fake_token_around_image>',
  global: '<global-img>',
  image: '<image>',
};

/**
 * processing_idefics3.py `get_image_prompt_string`: what one `<image>` of the prompt expands to.
 * Split (rows, cols > 0): per crop `<fake><row_r_col_c>` + imageSeqLen x `<image>` (1-based r, c), "\n" after
 * each row, then "\n<fake><global-img>" + imageSeqLen x `<image>` + `<fake>`. Single (0, 0): `<fake><global-img>`
 * + imageSeqLen x `<image>` + `<fake>`. Tokenize the whole string (BPE merges the "\n\n" before the global block).
 */
export function idefics3ImagePromptString(
  rows: number,
  cols: number,
  imageSeqLen: number,
  tokens: Idefics3PromptTokens = IDEFICS3_PROMPT_TOKENS,
): string {
  const nonNeg = (v: number): boolean => Number.isInteger(v) && v >= 0;
  if (!nonNeg(rows) || !nonNeg(cols) || (rows === 0) !== (cols === 0)) {
    throw new Error(`idefics3ImagePromptString: rows and cols must be both 0 or both positive integers, got ${rows} x ${cols}`);
  }
  if (!Number.isInteger(imageSeqLen) || imageSeqLen < 1) {
    throw new Error(`idefics3ImagePromptString: image_seq_len must be a positive integer, got ${imageSeqLen}`);
  }
  const images = tokens.image.repeat(imageSeqLen);
  const globalBlock = `${tokens.fake}${tokens.global}${images}${tokens.fake}`;
  if (rows === 0) return globalBlock;
  let s = '';
  for (let r = 1; r <= rows; r++) {
    for (let c = 1; c <= cols; c++) s += `${tokens.fake}<row_${r}_col_${c}>${images}`;
    s += '\n';
  }
  return `${s}\n${globalBlock}`;
}
