// Qwen2VLImageProcessor (the slow, PIL-based one; Qwen2.5-VL uses the same class) reimplemented bit for bit:
//   convert_to_rgb -> smart_resize -> Pillow resize -> rescale -> normalize -> tile to temporal_patch_size
//   frames -> flatten into patches in merge-block order.
// References: transformers models/qwen2_vl/image_processing_qwen2_vl.py (`smart_resize`, `__init__`,
// `_preprocess`), image_transforms.py (`resize`, `rescale`, `normalize`).

import { OPENAI_CLIP_MEAN, OPENAI_CLIP_STD } from '../../io/clip-processor.js';
import { assertRgbImage, type RgbImage } from '../../io/image.js';
import { type PillowFilter, resizePillow } from '../../io/resize.js';
import { PreprocessorFields } from '../../io/preprocessor-fields.js';

export interface QwenImageProcessorConfig {
  /** smart_resize bounds on height*width (`min_pixels` / `max_pixels`, or `size.shortest_edge` / `size.longest_edge`). */
  minPixels: number;
  maxPixels: number;
  patchSize: number;
  temporalPatchSize: number;
  mergeSize: number;
  imageMean: [number, number, number];
  imageStd: [number, number, number];
  rescaleFactor: number;
  doResize: boolean;
  doRescale: boolean;
  doNormalize: boolean;
  /** Images are always RGB after decodeImage, so this is informational. */
  doConvertRgb: boolean;
  resample: PillowFilter;
}

/** Qwen2VLImageProcessor() class defaults (note max_pixels 28*28*1280, far below the hub configs' 12845056). */
export function defaultQwenImageProcessorConfig(): QwenImageProcessorConfig {
  return {
    minPixels: 56 * 56,
    maxPixels: 28 * 28 * 1280,
    patchSize: 14,
    temporalPatchSize: 2,
    mergeSize: 2,
    imageMean: [OPENAI_CLIP_MEAN[0]!, OPENAI_CLIP_MEAN[1]!, OPENAI_CLIP_MEAN[2]!],
    imageStd: [OPENAI_CLIP_STD[0]!, OPENAI_CLIP_STD[1]!, OPENAI_CLIP_STD[2]!],
    rescaleFactor: 1 / 255,
    doResize: true,
    doRescale: true,
    doNormalize: true,
    doConvertRgb: true,
    resample: 'bicubic',
  };
}

/**
 * Reads a Qwen2-VL / Qwen2.5-VL preprocessor_config.json object. `min_pixels` / `max_pixels` win over
 * `size.shortest_edge` / `size.longest_edge` (HF's backward-compatibility override); missing or null keys take the
 * class defaults. Errors name the file and the key. Unknown keys are ignored.
 */
export function parseQwenImageProcessorConfig(json: Record<string, unknown>, file: string): QwenImageProcessorConfig {
  const f = new PreprocessorFields(json, file);
  const cfg = f.common(defaultQwenImageProcessorConfig());
  const bad = f.bad.bind(f);
  const has = f.has.bind(f);
  const posInt = (key: string, def: number): number => {
    if (!has(key)) return def;
    const v = json[key];
    return typeof v === 'number' && Number.isInteger(v) && v > 0 ? v : bad(key, 'a positive integer');
  };
  const posNum = f.posNum.bind(f);
  cfg.patchSize = posInt('patch_size', cfg.patchSize);
  cfg.temporalPatchSize = posInt('temporal_patch_size', cfg.temporalPatchSize);
  cfg.mergeSize = posInt('merge_size', cfg.mergeSize);

  // Newer transformers write the pixel bounds as size {shortest_edge, longest_edge}; min_pixels/max_pixels override.
  if (has('size')) {
    const s = json.size;
    if (typeof s !== 'object' || Array.isArray(s)) bad('size', 'an object {"shortest_edge": n, "longest_edge": n}');
    const o = s as Record<string, unknown>;
    if (o.shortest_edge !== undefined && o.shortest_edge !== null) cfg.minPixels = posNum('size.shortest_edge', o.shortest_edge);
    if (o.longest_edge !== undefined && o.longest_edge !== null) cfg.maxPixels = posNum('size.longest_edge', o.longest_edge);
  }
  if (has('min_pixels')) cfg.minPixels = posNum('min_pixels', json.min_pixels);
  if (has('max_pixels')) cfg.maxPixels = posNum('max_pixels', json.max_pixels);
  if (cfg.minPixels > cfg.maxPixels) {
    throw new Error(`${file}: "min_pixels" (${cfg.minPixels}) must not exceed "max_pixels" (${cfg.maxPixels})`);
  }
  return cfg;
}

/** Python 3 `round(x)` for a float: round half to even (banker's rounding). */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f; // exact for doubles
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * HF `smart_resize` (image_processing_qwen2_vl.py): both sides multiples of `factor`, pixels within
 * [minPixels, maxPixels] where possible, aspect ratio roughly kept. Same double operations in the same order as
 * the Python code so the floors/ceils land identically.
 */
export function smartResize(
  height: number,
  width: number,
  factor: number,
  minPixels: number,
  maxPixels: number,
): { height: number; width: number } {
  if (!Number.isInteger(height) || !Number.isInteger(width) || height < 1 || width < 1) {
    throw new Error(`smart_resize: height and width must be positive integers, got ${height}x${width} (HxW)`);
  }
  if (!Number.isInteger(factor) || factor < 1) throw new Error(`smart_resize: factor must be a positive integer, got ${factor}`);
  if (!(minPixels > 0) || !(maxPixels > 0)) {
    throw new Error(`smart_resize: min_pixels and max_pixels must be > 0, got ${minPixels} and ${maxPixels}`);
  }
  const ratio = Math.max(height, width) / Math.min(height, width);
  if (ratio > 200) {
    throw new Error(`smart_resize: absolute aspect ratio must be smaller than 200, got ${ratio} (image ${height}x${width} HxW)`);
  }
  let hBar = roundHalfEven(height / factor) * factor;
  let wBar = roundHalfEven(width / factor) * factor;
  if (hBar * wBar > maxPixels) {
    const beta = Math.sqrt((height * width) / maxPixels);
    // max(factor, ...) as newer transformers do: a very long thin image would otherwise get a 0 side.
    hBar = Math.max(factor, Math.floor(height / beta / factor) * factor);
    wBar = Math.max(factor, Math.floor(width / beta / factor) * factor);
  } else if (hBar * wBar < minPixels) {
    const beta = Math.sqrt(minPixels / (height * width));
    hBar = Math.ceil((height * beta) / factor) * factor;
    wBar = Math.ceil((width * beta) / factor) * factor;
  }
  return { height: hBar, width: wBar };
}

export interface QwenPixels {
  /** [patches, C*T*P*P]: row = patch in merge-block order, column = (c*T + t)*P*P + py*P + px. */
  pixelValues: Float32Array;
  /** (t, h, w) in patches. */
  grid: [number, number, number];
  /** The image after resizing, as Pillow returns it. */
  resized: RgbImage;
}

/**
 * Runs the Qwen2VLImageProcessor pipeline on one RGB image. Rescale is `uint8.astype(float64) * factor` then cast
 * to float32; normalize is float32 `(x - mean) / std` with mean/std cast to float32 (Math.fround at each step:
 * one double op on float32 operands rounded once to float32 is exactly the float32 op).
 */
export function qwenPreprocess(img: RgbImage, cfg: QwenImageProcessorConfig): QwenPixels {
  assertRgbImage(img, 'qwenPreprocess');
  const P = cfg.patchSize;
  const T = cfg.temporalPatchSize;
  const m = cfg.mergeSize;
  const factor = P * m;
  // do_convert_rgb: decodeImage already produced RGB exactly as Pillow's convert("RGB") would.
  let cur = img;
  if (cfg.doResize) {
    const size = smartResize(img.height, img.width, factor, cfg.minPixels, cfg.maxPixels);
    cur = resizePillow(img, size.width, size.height, cfg.resample);
  } else if (img.height % factor !== 0 || img.width % factor !== 0) {
    throw new Error(`qwenPreprocess: with doResize off the image (${img.height}x${img.width} HxW) must have sides divisible by ${factor}`);
  }
  const resized = cur;
  const { width: W, height: H, data } = resized;

  // Normalised channels-first planes [3, H, W].
  const plane = W * H;
  const norm = new Float32Array(3 * plane);
  const mean = cfg.imageMean.map(Math.fround);
  const std = cfg.imageStd.map(Math.fround);
  for (let c = 0; c < 3; c++) {
    const mc = mean[c]!;
    const sc = std[c]!;
    for (let i = 0; i < plane; i++) {
      let v = data[i * 3 + c]!;
      if (cfg.doRescale) v = Math.fround(v * cfg.rescaleFactor);
      if (cfg.doNormalize) v = Math.fround(Math.fround(v - mc) / sc);
      norm[c * plane + i] = v;
    }
  }

  // One image is tiled to T identical frames, so grid_t = 1. HF's reshape
  // (gt, T, C, gh/m, m, P, gw/m, m, P).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8) as explicit loops.
  const gh = H / P;
  const gw = W / P;
  const cols = 3 * T * P * P;
  const pixelValues = new Float32Array(gh * gw * cols);
  let n = 0;
  for (let bh = 0; bh < gh / m; bh++) {
    for (let bw = 0; bw < gw / m; bw++) {
      for (let mh = 0; mh < m; mh++) {
        for (let mw = 0; mw < m; mw++, n++) {
          const y0 = (bh * m + mh) * P;
          const x0 = (bw * m + mw) * P;
          const row = n * cols;
          for (let c = 0; c < 3; c++) {
            for (let tt = 0; tt < T; tt++) {
              const base = row + (c * T + tt) * P * P;
              for (let py = 0; py < P; py++) {
                const src = c * plane + (y0 + py) * W + x0;
                pixelValues.set(norm.subarray(src, src + P), base + py * P);
              }
            }
          }
        }
      }
    }
  }
  return { pixelValues, grid: [1, gh, gw], resized };
}
