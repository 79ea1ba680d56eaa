// Pillow-exact image resizing (`PIL.Image.resize(size, resample)` with no box and no reducing_gap, the
// way Hugging Face's slow image processors call it) for 8-bit RGB images.
//
// Reimplemented from the behaviour of Pillow's src/libImaging/Resample.c (ImagingResample) and
// Geometry.c (nearest neighbour), _imaging.c `_resize` and Image.resize:
// - Convolution filters are separable and antialiased: when downscaling by s, the kernel support is
//   stretched by s (so every source pixel contributes), when upscaling it is the filter's own support.
// - Coefficients are computed in double, normalised to sum 1, then converted to fixed point with
//   PRECISION_BITS = 32 - 8 - 2 = 22 fractional bits (rounded half away from zero, truncating casts).
// - Each pass accumulates in a 32-bit int starting at 0.5 (1 << 21), then shifts right by 22 and clips
//   to 0..255, so the intermediate image between the passes is 8-bit, as in Pillow.
// - Pass order: horizontal first, then vertical (ImagingResampleInner); the horizontal pass only
//   computes the source rows the vertical pass reads. Pillow >= 12.2 makes an exception for very tall
//   images (height > 100 * width, shrinking vertically): Image.resize then runs the vertical pass
//   first. That is reproduced here; older Pillow would differ on such (rare) images only.
// - A pass runs only when its dimension changes; same size in and out returns a copy.
// Any change to the arithmetic here breaks bit-exactness with Pillow (the tiny-llava golden checks it).

import type { RgbImage } from './image.js';

export type PillowFilter = 'nearest' | 'box' | 'bilinear' | 'hamming' | 'bicubic' | 'lanczos';

/** PIL.Image.Resampling codes (as stored in preprocessor_config.json `resample`) to filter names. */
export const PIL_RESAMPLE_CODES: Readonly<Record<number, PillowFilter>> = {
  0: 'nearest',
  1: 'lanczos',
  2: 'bilinear',
  3: 'bicubic',
  4: 'box',
  5: 'hamming',
};

/** Filter name for a PIL resample code; throws on codes Pillow does not know. */
export function pillowFilterFromCode(code: number): PillowFilter {
  const f = PIL_RESAMPLE_CODES[code];
  if (f === undefined) throw new Error(`unknown PIL resample code ${code} (expected 0..5)`);
  return f;
}

interface Kernel {
  fn: (x: number) => number;
  support: number;
}

// The kernels, written with Pillow's operation order so results round identically in double.
const BOX: Kernel = { support: 0.5, fn: (x) => (x > -0.5 && x <= 0.5 ? 1.0 : 0.0) };

const BILINEAR: Kernel = {
  support: 1.0,
  fn: (x) => {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
  },
};

// Pillow writes the Hamming constants as C floats (0.54f, 0.46f): use their float32 values.
const H054 = Math.fround(0.54);
const H046 = Math.fround(0.46);
const HAMMING: Kernel = {
  support: 1.0,
  fn: (x) => {
    if (x < 0.0) x = -x;
    if (x === 0.0) return 1.0;
    if (x >= 1.0) return 0.0;
    x = x * Math.PI;
    return (Math.sin(x) / x) * (H054 + H046 * Math.cos(x));
  },
};

// Keys' cubic convolution with a = -0.5 (Pillow's BICUBIC).
const BICUBIC: Kernel = {
  support: 2.0,
  fn: (x) => {
    const a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
  },
};

const sinc = (x: number): number => {
  if (x === 0.0) return 1.0;
  x = x * Math.PI;
  return Math.sin(x) / x;
};
const LANCZOS: Kernel = {
  support: 3.0,
  fn: (x) => (-3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0),
};

const KERNELS: Record<Exclude<PillowFilter, 'nearest'>, Kernel> = {
  box: BOX,
  bilinear: BILINEAR,
  hamming: HAMMING,
  bicubic: BICUBIC,
  lanczos: LANCZOS,
};

const PRECISION_BITS = 32 - 8 - 2;
const HALF = 1 << (PRECISION_BITS - 1);

/** Fixed-point coefficients for one axis: output i reads `count[i]` inputs from `start[i]`. */
interface Coeffs {
  ksize: number;
  start: Int32Array;
  count: Int32Array;
  /** [outSize * ksize] fixed-point weights (Q22), zero past count. */
  k: Int32Array;
}

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc for the box [0, inSize) (no crop box). */
function precomputeCoeffs(inSize: number, outSize: number, kernel: Kernel): Coeffs {
  // in0 = 0, in1 = inSize (floats in Pillow; exact for any realistic size).
  const scale = inSize / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = kernel.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const k = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  const ss = 1.0 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = 0 + (xx + 0.5) * scale;
    // C `(int)` truncates toward zero; negative values are clamped to 0 right after anyway.
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      const v = kernel.fn((x + xmin - center + 0.5) * ss);
      w[x] = v;
      ww += v;
    }
    for (let x = 0; x < xmax; x++) {
      let v = w[x]!;
      if (ww !== 0.0) v /= ww;
      // normalize_coeffs_8bpc: round half away from zero, then a truncating int cast.
      k[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS)) : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
    }
    start[xx] = xmin;
    count[xx] = xmax;
  }
  return { ksize, start, count, k };
}

/** Q22 accumulator to uint8, as Pillow's clip8 (its lookup table clamps to 0..255). */
function clip8(ss: number): number {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * Horizontal pass: rows [rowOffset, rowOffset + outH) of `src` resampled to width `outW`.
 * Sums are kept in int32 (Math.imul, |0) exactly like Pillow's `int ss0`.
 */
function resampleHorizontal(src: RgbImage, outW: number, rowOffset: number, outH: number, c: Coeffs): RgbImage {
  const inRow = src.width * 3;
  const out = new Uint8Array(outW * outH * 3);
  const { ksize, start, count, k } = c;
  const s = src.data;
  for (let yy = 0; yy < outH; yy++) {
    const rowBase = (yy + rowOffset) * inRow;
    for (let xx = 0; xx < outW; xx++) {
      const kb = xx * ksize;
      const n = count[xx]!;
      let p = rowBase + start[xx]! * 3;
      let s0 = HALF;
      let s1 = HALF;
      let s2 = HALF;
      for (let x = 0; x < n; x++, p += 3) {
        const w = k[kb + x]!;
        s0 = (s0 + Math.imul(s[p]!, w)) | 0;
        s1 = (s1 + Math.imul(s[p + 1]!, w)) | 0;
        s2 = (s2 + Math.imul(s[p + 2]!, w)) | 0;
      }
      const o = (yy * outW + xx) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return { width: outW, height: outH, data: out };
}

/** Vertical pass: output row yy reads rows start[yy] - rowShift ... of `src` (rowShift: rows the
 *  horizontal pass skipped at the top). */
function resampleVertical(src: RgbImage, outH: number, c: Coeffs, rowShift: number): RgbImage {
  const W = src.width;
  const rowStride = W * 3;
  const out = new Uint8Array(W * outH * 3);
  const { ksize, start, count, k } = c;
  const s = src.data;
  for (let yy = 0; yy < outH; yy++) {
    const kb = yy * ksize;
    const n = count[yy]!;
    const base = (start[yy]! - rowShift) * rowStride;
    for (let xx = 0; xx < W; xx++) {
      let p = base + xx * 3;
      let s0 = HALF;
      let s1 = HALF;
      let s2 = HALF;
      for (let y = 0; y < n; y++, p += rowStride) {
        const w = k[kb + y]!;
        s0 = (s0 + Math.imul(s[p]!, w)) | 0;
        s1 = (s1 + Math.imul(s[p + 1]!, w)) | 0;
        s2 = (s2 + Math.imul(s[p + 2]!, w)) | 0;
      }
      const o = (yy * W + xx) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return { width: W, height: outH, data: out };
}

/** ImagingResampleInner with the full-image box: horizontal (restricted rows) then vertical. */
function resampleHorizontalFirst(img: RgbImage, width: number, height: number, kernel: Kernel): RgbImage {
  const needH = width !== img.width;
  const needV = height !== img.height;
  let cur = img;
  const vert = precomputeCoeffs(img.height, height, kernel);
  let rowShift = 0;
  if (needH) {
    // Only the source rows some output row reads: [first row of output 0, last row of the last output).
    const first = vert.start[0]!;
    const last = vert.start[height - 1]! + vert.count[height - 1]!;
    cur = resampleHorizontal(img, width, first, last - first, precomputeCoeffs(img.width, width, kernel));
    rowShift = first;
  }
  if (needV) cur = resampleVertical(cur, height, vert, rowShift);
  return cur === img ? copyImage(img) : cur;
}

/** Nearest neighbour as Pillow does it for a scale-only affine map (Geometry.c ImagingScaleAffine):
 *  source coordinate = (i + 0.5) * in/out, accumulated by repeated addition, truncated. */
function resizeNearest(img: RgbImage, width: number, height: number): RgbImage {
  const ax = img.width / width;
  const ay = img.height / height;
  const xin = new Int32Array(width).fill(-1);
  let xo = ax * 0.5;
  for (let x = 0; x < width; x++) {
    const xi = xo < 0.0 ? -1 : Math.trunc(xo);
    if (xi >= 0 && xi < img.width) xin[x] = xi;
    xo += ax;
  }
  // Out-of-range positions (never hit in practice) stay 0, as Pillow's `fill` leaves them.
  const out = new Uint8Array(width * height * 3);
  let yo = ay * 0.5;
  for (let y = 0; y < height; y++) {
    const yi = yo < 0.0 ? -1 : Math.trunc(yo);
    if (yi >= 0 && yi < img.height) {
      const srcRow = yi * img.width * 3;
      for (let x = 0; x < width; x++) {
        const xi = xin[x]!;
        if (xi < 0) continue;
        const o = (y * width + x) * 3;
        const p = srcRow + xi * 3;
        out[o] = img.data[p]!;
        out[o + 1] = img.data[p + 1]!;
        out[o + 2] = img.data[p + 2]!;
      }
    }
    yo += ay;
  }
  return { width, height, data: out };
}

function copyImage(img: RgbImage): RgbImage {
  return { width: img.width, height: img.height, data: img.data.slice() };
}

/**
 * `PIL.Image.resize((width, height), filter)` on an RGB image, bit for bit.
 * The input is never modified; the result is always a new image.
 */
export function resizePillow(img: RgbImage, width: number, height: number, filter: PillowFilter = 'bicubic'): RgbImage {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new Error(`resize: height and width must be positive integers, got ${width}x${height}`);
  }
  if (img.data.length !== img.width * img.height * 3) {
    throw new Error(`resize: image data has ${img.data.length} bytes, expected ${img.width}x${img.height}x3`);
  }
  // Image.resize returns a copy when the size is unchanged (no resampling at all).
  if (width === img.width && height === img.height) return copyImage(img);
  if (filter === 'nearest') return resizeNearest(img, width, height);
  const kernel = KERNELS[filter];
  if (kernel === undefined) throw new Error(`resize: unknown filter '${String(filter)}'`);

  // Pillow >= 12.2 Image.resize: for images more than 100x taller than wide that shrink vertically,
  // resize the height first (a vertical-only ImagingResample), then the width (horizontal-only).
  if (img.height > img.width * 100 && height < img.height) {
    const tall = resampleHorizontalFirst(img, img.width, height, kernel);
    return width === img.width ? tall : resampleHorizontalFirst(tall, width, height, kernel);
  }
  return resampleHorizontalFirst(img, width, height, kernel);
}

/** Pillow bicubic resize (PIL.Image.Resampling.BICUBIC, the CLIP default). */
export function resizeBicubic(img: RgbImage, width: number, height: number): RgbImage {
  return resizePillow(img, width, height, 'bicubic');
}
