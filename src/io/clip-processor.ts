// Hugging Face CLIPImageProcessor (the slow, PIL-based one) reimplemented bit for bit:
//   convert_to_rgb -> [LLaVA do_pad: pad to square with the mean colour] -> resize (shortest edge, Pillow
//   filter) -> center_crop -> rescale -> normalize -> channels-first float32.
// References: transformers image_processing_clip.py `preprocess`, image_transforms.py (`resize`,
// `center_crop`, `rescale`, `normalize`, `get_resize_output_image_size`), llava image_processing_llava.py
// `pad_to_square`, and docs/source/en/model_doc/llava.md (do_pad: the original LLaVA pads to square first).

import { assertRgbImage, type RgbImage } from './image.js';
import { pillowFilterFromCode, resizePillow } from './resize.js';

export interface ClipProcessorConfig {
  doResize: boolean;
  /** Either `shortestEdge` (aspect-preserving) or `height` + `width` (exact size). */
  size: { shortestEdge?: number; height?: number; width?: number };
  /** PIL resample code: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming. */
  resample: number;
  doCenterCrop: boolean;
  cropSize: { height: number; width: number };
  doRescale: boolean;
  rescaleFactor: number;
  doNormalize: boolean;
  imageMean: number[];
  imageStd: number[];
  /** Images are always RGB after decodeImage, so this is informational. */
  doConvertRgb: boolean;
  /** LLaVA's pad-to-square (background = mean colour) before resizing. */
  doPad?: boolean;
}

export interface ClipPreprocessed {
  /** [3, height, width], channels first. */
  pixelValues: Float32Array;
  height: number;
  width: number;
  /** The image after (padding and) resizing, as Pillow returns it. */
  resized: RgbImage;
  /** The image after center cropping (what pixelValues is computed from). */
  cropped: RgbImage;
}

/** OpenAI CLIP normalisation constants (transformers OPENAI_CLIP_MEAN / OPENAI_CLIP_STD). */
export const OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073];
export const OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711];

/** CLIPImageProcessor() defaults. */
export function defaultClipProcessorConfig(): ClipProcessorConfig {
  return {
    doResize: true,
    size: { shortestEdge: 224 },
    resample: 3,
    doCenterCrop: true,
    cropSize: { height: 224, width: 224 },
    doRescale: true,
    rescaleFactor: 1 / 255,
    doNormalize: true,
    imageMean: [...OPENAI_CLIP_MEAN],
    imageStd: [...OPENAI_CLIP_STD],
    doConvertRgb: true,
    doPad: false,
  };
}

// ---------------------------------------------------------------------------------------------------
// preprocessor_config.json parsing

function isPositiveInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v > 0;
}

/**
 * Reads a preprocessor_config.json object. Missing keys (or null, which HF also replaces by the
 * default) take CLIPImageProcessor's defaults; present keys must have the right type. Errors name the
 * file and the key. Unknown keys (image_processor_type, processor_class, ...) are ignored.
 */
export function parseClipProcessorConfig(json: Record<string, unknown>, file: string): ClipProcessorConfig {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new Error(`${file}: preprocessor config must be a JSON object`);
  }
  const cfg = defaultClipProcessorConfig();
  const bad = (key: string, want: string): never => {
    throw new Error(`${file}: "${key}" must be ${want}, got ${JSON.stringify(json[key])}`);
  };
  const has = (key: string): boolean => json[key] !== undefined && json[key] !== null;
  const bool = (key: string, def: boolean): boolean => {
    if (!has(key)) return def;
    const v = json[key];
    return typeof v === 'boolean' ? v : bad(key, 'a boolean');
  };
  const num = (key: string, def: number): number => {
    if (!has(key)) return def;
    const v = json[key];
    return typeof v === 'number' && Number.isFinite(v) ? v : bad(key, 'a finite number');
  };
  // image_mean / image_std: a list of 3 numbers, or one number used for every channel.
  const triple = (key: string, def: number[]): number[] => {
    if (!has(key)) return def;
    const v = json[key];
    if (typeof v === 'number' && Number.isFinite(v)) return [v, v, v];
    if (Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x))) {
      return v as number[];
    }
    return bad(key, 'a number or a list of 3 numbers');
  };
  // {height, width} from a dict or a [height, width] list (get_size_dict's list form).
  const heightWidth = (key: string, v: unknown): { height: number; width: number } | undefined => {
    if (Array.isArray(v) && v.length === 2 && isPositiveInt(v[0]) && isPositiveInt(v[1])) {
      return { height: v[0], width: v[1] };
    }
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      const o = v as Record<string, unknown>;
      if (o.height !== undefined || o.width !== undefined) {
        if (!isPositiveInt(o.height) || !isPositiveInt(o.width)) {
          bad(key, 'an object whose "height" and "width" are positive integers');
        }
        return { height: o.height as number, width: o.width as number };
      }
    }
    return undefined;
  };

  cfg.doResize = bool('do_resize', cfg.doResize);
  cfg.doCenterCrop = bool('do_center_crop', cfg.doCenterCrop);
  cfg.doRescale = bool('do_rescale', cfg.doRescale);
  cfg.doNormalize = bool('do_normalize', cfg.doNormalize);
  cfg.doConvertRgb = bool('do_convert_rgb', cfg.doConvertRgb);
  cfg.doPad = bool('do_pad', false);

  if (has('resample')) {
    const r = json.resample;
    if (typeof r !== 'number' || !Number.isInteger(r) || r < 0 || r > 5) {
      bad('resample', 'a PIL resample code 0..5 (0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming)');
    }
    cfg.resample = r as number;
  }
  cfg.rescaleFactor = num('rescale_factor', cfg.rescaleFactor);
  cfg.imageMean = triple('image_mean', cfg.imageMean);
  cfg.imageStd = triple('image_std', cfg.imageStd);
  if (cfg.imageStd.some((s) => s === 0)) bad('image_std', 'non-zero');

  // size: an int means {shortest_edge: n} (get_size_dict(default_to_square=False)); a dict must have
  // shortest_edge or height+width (CLIPImageProcessor.resize accepts nothing else).
  if (has('size')) {
    const v = json.size;
    if (isPositiveInt(v)) {
      cfg.size = { shortestEdge: v };
    } else {
      const hw = heightWidth('size', v);
      if (hw) {
        cfg.size = hw;
      } else if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
        const se = (v as Record<string, unknown>).shortest_edge;
        if (!isPositiveInt(se)) bad('size', 'an object with a positive integer "shortest_edge" (or "height" and "width")');
        cfg.size = { shortestEdge: se as number };
      } else {
        bad('size', 'a positive integer, {"shortest_edge": n} or {"height": h, "width": w}');
      }
    }
  }
  // Kosmos-2 legacy flag handled by CLIPImageProcessor.__init__: a square resize of shortest_edge.
  if (json.use_square_size === true && cfg.size.shortestEdge !== undefined) {
    cfg.size = { height: cfg.size.shortestEdge, width: cfg.size.shortestEdge };
  }

  // crop_size: an int n means n x n (get_size_dict(default_to_square=True)).
  if (has('crop_size')) {
    const v = json.crop_size;
    if (isPositiveInt(v)) {
      cfg.cropSize = { height: v, width: v };
    } else {
      cfg.cropSize = heightWidth('crop_size', v) ?? bad('crop_size', 'a positive integer or {"height": h, "width": w}');
    }
  }
  return cfg;
}

// ---------------------------------------------------------------------------------------------------
// The pipeline steps

/**
 * get_resize_output_image_size(size=shortest_edge, default_to_square=False): the short side becomes
 * `shortest`, the long side int(shortest * long / short) (float64 division, truncated). Returns [h, w].
 */
export function shortestEdgeSize(height: number, width: number, shortest: number): [number, number] {
  const short = Math.min(width, height);
  const long = Math.max(width, height);
  const newLong = Math.trunc((shortest * long) / short);
  return width <= height ? [newLong, shortest] : [shortest, newLong];
}

/**
 * LLaVA pad_to_square: a max(w,h) square filled with `background`, the image pasted centred at
 * ((max - w) // 2, (max - h) // 2). Square images are returned unchanged.
 */
export function padToSquare(img: RgbImage, background: readonly number[]): RgbImage {
  const { width, height } = img;
  if (width === height) return img;
  const size = Math.max(width, height);
  const out = new Uint8Array(size * size * 3);
  for (let i = 0; i < size * size; i++) {
    out[i * 3] = background[0]!;
    out[i * 3 + 1] = background[1]!;
    out[i * 3 + 2] = background[2]!;
  }
  const left = Math.floor((size - width) / 2);
  const top = Math.floor((size - height) / 2);
  for (let y = 0; y < height; y++) {
    out.set(img.data.subarray(y * width * 3, (y + 1) * width * 3), ((top + y) * size + left) * 3);
  }
  return { width: size, height: size, data: out };
}

/** Python floor division (rounds toward -infinity, also for negatives). */
const floorDiv = (a: number, b: number): number => Math.floor(a / b);

/**
 * image_transforms.center_crop: top = (H - ch) // 2, left = (W - cw) // 2; when the image is smaller
 * than the crop on an axis it is zero-padded to the crop size with ceil((crop - size) / 2) before it.
 * Always returns exactly cropH x cropW.
 */
export function centerCrop(img: RgbImage, cropH: number, cropW: number): RgbImage {
  const { width: W, height: H } = img;
  // Per axis: the crop window start in the (possibly padded) image and the padding before the image.
  const axis = (orig: number, crop: number): { start: number; pad: number } => {
    const top = floorDiv(orig - crop, 2);
    if (top >= 0 && top + crop <= orig) return { start: top, pad: 0 };
    const pad = Math.ceil((Math.max(crop, orig) - orig) / 2);
    return { start: Math.max(0, top + pad), pad };
  };
  // HF only takes the padding path when either axis does not fit, but then pads both axes with
  // max(crop, orig), which on a fitting axis is pad 0: handling the axes independently is the same.
  const ay = axis(H, cropH);
  const ax = axis(W, cropW);
  const out = new Uint8Array(cropH * cropW * 3);
  for (let y = 0; y < cropH; y++) {
    const sy = ay.start + y - ay.pad;
    if (sy < 0 || sy >= H) continue;
    for (let x = 0; x < cropW; x++) {
      const sx = ax.start + x - ax.pad;
      if (sx < 0 || sx >= W) continue;
      const o = (y * cropW + x) * 3;
      const p = (sy * W + sx) * 3;
      out[o] = img.data[p]!;
      out[o + 1] = img.data[p + 1]!;
      out[o + 2] = img.data[p + 2]!;
    }
  }
  return { width: cropW, height: cropH, data: out };
}

/**
 * Runs the CLIPImageProcessor pipeline on one RGB image. Float arithmetic follows numpy's dtypes:
 * rescale is `uint8.astype(float64) * factor` then cast to float32; normalize is float32
 * `(x - mean) / std` with mean/std cast to float32 (each step rounded to float32 via Math.fround;
 * one double op on float32 operands rounded once to float32 is exactly the float32 op).
 */
export function clipPreprocess(img: RgbImage, cfg: ClipProcessorConfig): ClipPreprocessed {
  assertRgbImage(img, 'clipPreprocess');
  // do_convert_rgb: decodeImage already produced RGB exactly as Pillow's convert("RGB") would.
  let cur = img;

  if (cfg.doPad) {
    // background_color = tuple(int(x * 255) for x in image_mean)
    cur = padToSquare(cur, cfg.imageMean.map((m) => Math.trunc(m * 255)));
  }

  if (cfg.doResize) {
    let h: number;
    let w: number;
    if (cfg.size.shortestEdge !== undefined) {
      [h, w] = shortestEdgeSize(cur.height, cur.width, cfg.size.shortestEdge);
    } else if (cfg.size.height !== undefined && cfg.size.width !== undefined) {
      h = cfg.size.height;
      w = cfg.size.width;
    } else {
      throw new Error("clipPreprocess: size must contain either 'shortestEdge' or 'height' and 'width'");
    }
    cur = resizePillow(cur, w, h, pillowFilterFromCode(cfg.resample));
  }
  const resized = cur;

  if (cfg.doCenterCrop) cur = centerCrop(cur, cfg.cropSize.height, cfg.cropSize.width);
  const cropped = cur;

  const { width: W, height: H, data } = cropped;
  const plane = W * H;
  const pixelValues = new Float32Array(3 * plane);
  const mean = cfg.imageMean.map(Math.fround);
  const std = cfg.imageStd.map(Math.fround);
  if (cfg.doNormalize && (mean.length !== 3 || std.length !== 3)) {
    throw new Error('clipPreprocess: imageMean and imageStd must have 3 values');
  }
  for (let c = 0; c < 3; c++) {
    const m = mean[c]!;
    const s = std[c]!;
    for (let i = 0; i < plane; i++) {
      let v = data[i * 3 + c]!;
      if (cfg.doRescale) v = Math.fround(v * cfg.rescaleFactor);
      if (cfg.doNormalize) v = Math.fround(Math.fround(v - m) / s);
      pixelValues[c * plane + i] = v;
    }
  }
  return { pixelValues, height: H, width: W, resized, cropped };
}
