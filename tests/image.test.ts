// Image decoding, Pillow-exact resizing and CLIPImageProcessor preprocessing.
// Exactness references (no Python/Pillow on these machines):
// - tests/fixtures/tiny-llava/golden.json `image` / `pixel_values`: Pillow + HF's slow CLIP processor.
// - Expected pixel values from Pillow's own test suite (Tests/test_image_resample.py,
//   TestImagingCoreResampleAccuracy and friends), re-expressed here as data.

import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fixtureDir } from './helpers/fixtures.js';
import { encode as encodePngRaw } from 'fast-png';
import * as jpeg from 'jpeg-js';
import { decodeImage, encodePng, loadImageFile, type RgbImage } from '../src/io/image.js';
import { resizeBicubic, resizePillow, type PillowFilter } from '../src/io/resize.js';
import {
  centerCrop,
  clipPreprocess,
  defaultClipProcessorConfig,
  parseClipProcessorConfig,
  shortestEdgeSize,
} from '../src/io/clip-processor.js';

const fixturePath = (name: string): string => join(fixtureDir('tiny-llava'), name);

/** An RGB image whose pixel (x, y) is f(x, y) = [r, g, b]. */
function makeImage(width: number, height: number, f: (x: number, y: number) => [number, number, number]): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) data.set(f(x, y), (y * width + x) * 3);
  }
  return { width, height, data };
}

const px = (img: RgbImage, x: number, y: number): number[] => Array.from(img.data.subarray((y * img.width + x) * 3, (y * img.width + x) * 3 + 3));

describe('tiny-llava golden (HF CLIPImageProcessor, slow/Pillow)', () => {
  const golden = JSON.parse(readFileSync(fixturePath('golden.json'), 'utf8')) as {
    image: { file: string; size_wh: [number, number]; resized_hw: [number, number]; resized_uint8_checksum: number; cropped_uint8: number[][][] };
    pixel_values: number[][][];
  };
  const cfgJson = JSON.parse(readFileSync(fixturePath('preprocessor_config.json'), 'utf8')) as Record<string, unknown>;

  it('decodes image.png and reproduces resize, crop and pixel_values', async () => {
    const img = await loadImageFile(fixturePath(golden.image.file));
    expect([img.width, img.height]).toEqual(golden.image.size_wh);

    const cfg = parseClipProcessorConfig(cfgJson, 'preprocessor_config.json');
    const out = clipPreprocess(img, cfg);

    expect([out.resized.height, out.resized.width]).toEqual(golden.image.resized_hw);
    let checksum = 0;
    for (const v of out.resized.data) checksum += v;
    expect(checksum).toBe(golden.image.resized_uint8_checksum);

    expect([out.height, out.width]).toEqual([56, 56]);
    expect(Array.from(out.cropped.data)).toEqual(golden.image.cropped_uint8.flat(2));

    const expected = golden.pixel_values.flat(2);
    expect(out.pixelValues.length).toBe(3 * 56 * 56);
    let maxErr = 0;
    expected.forEach((v, i) => (maxErr = Math.max(maxErr, Math.abs(v - out.pixelValues[i]!))));
    expect(maxErr).toBeLessThan(1e-5);
  });
});

describe('resizePillow: Pillow accuracy cases', () => {
  // Pillow's TestImagingCoreResampleAccuracy: an image with two dark (0xe1... "color") and two bright
  // quadrants is resized; `quarter` is the expected top-left quarter (hex), the rest follows by
  // symmetry: mirrored in both axes it is equal, mirrored in one axis it is 255 - value.
  function makeCase(w: number, h: number, color: number): RgbImage {
    return makeImage(w, h, (x, y) => {
      const dark = (x < w / 2 && y < h / 2) || (x >= w / 2 && y >= h / 2);
      const v = dark ? color : 255 - color;
      return [v, v, v];
    });
  }
  function expectedSample(quarter: string, w: number, h: number): number[] {
    const vals = quarter.split(/\s+/).filter(Boolean).map((s) => parseInt(s, 16));
    const out = new Array<number>(w * h).fill(-1);
    const qw = w / 2;
    for (let y = 0; y < h / 2; y++) {
      for (let x = 0; x < qw; x++) {
        const v = vals[y * qw + x]!;
        out[y * w + x] = v;
        out[(h - y - 1) * w + (w - x - 1)] = v;
        out[(h - y - 1) * w + x] = 255 - v;
        out[y * w + (w - x - 1)] = 255 - v;
      }
    }
    return out;
  }
  const cases: [PillowFilter, [number, number], [number, number], string][] = [
    ['box', [8, 8], [4, 4], 'e1 e1 e1 e1'],
    ['bilinear', [8, 8], [4, 4], 'e1 c9 c9 b7'],
    ['hamming', [8, 8], [4, 4], 'e1 da da d3'],
    ['bicubic', [12, 12], [6, 6], 'e1 e3 d4 e3 e5 d6 d4 d6 c9'],
    ['lanczos', [16, 16], [8, 8], 'e1 e0 e4 d7 e0 df e3 d6 e4 e3 e7 da d7 d6 d9 ce'],
    ['box', [2, 2], [4, 4], 'e1 e1 e1 e1'],
    ['bilinear', [2, 2], [4, 4], 'e1 b0 b0 98'],
    ['hamming', [2, 2], [4, 4], 'e1 d2 d2 c5'],
    ['bicubic', [4, 4], [8, 8], 'e1 e5 ee b9 e5 e9 f3 bc ee f3 fd c1 b9 bc c1 a2'],
    [
      'lanczos',
      [6, 6],
      [12, 12],
      'e1 e0 db ed f5 b8 e0 df da ec f3 b7 db db d6 e7 ee b5 ed ec e6 fb ff bf f5 f4 ee ff ff c4 b8 b7 b4 bf c4 a0',
    ],
  ];
  for (const [filter, [iw, ih], [ow, oh], quarter] of cases) {
    it(`${filter} ${iw}x${ih} -> ${ow}x${oh}`, () => {
      const out = resizePillow(makeCase(iw, ih, 0xe1), ow, oh, filter);
      const want = expectedSample(quarter, ow, oh);
      for (let c = 0; c < 3; c++) {
        const got = Array.from({ length: ow * oh }, (_, i) => out.data[i * 3 + c]!);
        expect(got).toEqual(want);
      }
    });
  }

  it('box enlarge keeps a flat colour exactly (8x8 -> 100x100)', () => {
    const out = resizePillow(makeImage(8, 8, () => [0x16, 0x88, 0xff]), 100, 100, 'box');
    for (let i = 0; i < 100 * 100; i++) expect(px(out, i % 100, Math.floor(i / 100))).toEqual([0x16, 0x88, 0xff]);
  });

  it('lanczos 512x9 -> 9x512 keeps a flat colour exactly (TestCoreResampleConsistency)', () => {
    const out = resizePillow(makeImage(512, 9, () => [0, 64, 255]), 9, 512, 'lanczos');
    const bad = Array.from({ length: 9 * 512 }, (_, i) => px(out, i % 9, Math.floor(i / 9))).filter(
      (p) => p[0] !== 0 || p[1] !== 64 || p[2] !== 255,
    );
    expect(bad).toEqual([]);
  });

  it('bicubic coefficients on a huge downscale (TestCoreResampleCoefficients.test_reduce)', () => {
    for (const size of [400000, 400006]) {
      const img = makeImage(size, 1, (x) => (x < size / 2 ? [254, 254, 254] : [0, 0, 0]));
      const out = resizeBicubic(img, 5, 1);
      expect(px(out, 2, 0)).toEqual([127, 127, 127]);
    }
  });

  it('very tall images (Pillow >= 12.2 vertical-first path) stay exact on flat colour', () => {
    const img = makeImage(2, 301, () => [10, 200, 77]);
    for (const [w, h] of [[1, 20], [2, 7], [5, 3]] as const) {
      const out = resizeBicubic(img, w, h);
      expect([out.width, out.height]).toEqual([w, h]);
      for (let i = 0; i < w * h; i++) expect(px(out, i % w, Math.floor(i / w))).toEqual([10, 200, 77]);
    }
  });
});

describe('resizePillow: behaviour', () => {
  const gradient = makeImage(37, 23, (x, y) => [(x * 7) % 256, (y * 11) % 256, (x * y * 3) % 256]);
  const photo = makeImage(80, 60, (x, y) => [
    Math.round(127 + 120 * Math.sin(x / 5) * Math.cos(y / 7)),
    (x * 3 + y * 2) % 256,
    x % 8 < 4 !== y % 8 < 4 ? 230 : 20,
  ]);

  it('same size returns the same pixels in a new buffer', () => {
    for (const f of ['bicubic', 'bilinear', 'lanczos', 'nearest'] as const) {
      const out = resizePillow(gradient, 37, 23, f);
      expect(out.data).toEqual(gradient.data);
      expect(out.data).not.toBe(gradient.data);
    }
  });

  it('odd up/down scales are deterministic, sized right and in range', () => {
    for (const f of ['bicubic', 'bilinear', 'lanczos', 'nearest', 'box', 'hamming'] as const) {
      for (const [src, w, h] of [
        [gradient, 56, 56],
        [photo, 13, 9],
        [photo, 81, 7],
        [gradient, 5, 40],
      ] as const) {
        const a = resizePillow(src, w, h, f);
        const b = resizePillow(src, w, h, f);
        expect([a.width, a.height, a.data.length]).toEqual([w, h, w * h * 3]);
        expect(a.data).toEqual(b.data);
        if (f === 'bilinear' || f === 'box' || f === 'nearest') {
          // Non-negative kernels: every output is a convex mix of inputs, so within the input's range.
          for (let c = 0; c < 3; c++) {
            let lo = 255;
            let hi = 0;
            for (let i = c; i < src.data.length; i += 3) {
              lo = Math.min(lo, src.data[i]!);
              hi = Math.max(hi, src.data[i]!);
            }
            for (let i = c; i < a.data.length; i += 3) {
              expect(a.data[i]!).toBeGreaterThanOrEqual(lo);
              expect(a.data[i]!).toBeLessThanOrEqual(hi);
            }
          }
        }
      }
    }
  });

  it('flat images stay flat and ramps stay monotonic under every filter', () => {
    const flat = makeImage(37, 23, () => [3, 128, 252]);
    const ramp = makeImage(37, 3, (x) => [x * 6, x * 6, x * 6]);
    for (const f of ['bicubic', 'bilinear', 'lanczos', 'nearest', 'box', 'hamming'] as const) {
      const out = resizePillow(flat, 56, 13, f);
      for (let i = 0; i < 56 * 13; i++) expect(px(out, i % 56, Math.floor(i / 56))).toEqual([3, 128, 252]);
      if (f === 'bilinear' || f === 'box' || f === 'nearest') {
        for (const w of [13, 56, 80]) {
          const r = resizePillow(ramp, w, 3, f);
          for (let x = 1; x < w; x++) expect(px(r, x, 1)[0]!).toBeGreaterThanOrEqual(px(r, x - 1, 1)[0]!);
        }
      }
    }
  });

  it('nearest samples at (i + 0.5) * in / out, truncated', () => {
    const src = makeImage(4, 4, (x, y) => [x, y, 0]);
    const down = resizePillow(src, 2, 2, 'nearest');
    expect([px(down, 0, 0), px(down, 1, 1)]).toEqual([
      [1, 1, 0],
      [3, 3, 0],
    ]);
    const three = resizePillow(makeImage(3, 1, (x) => [x, 0, 0]), 2, 1, 'nearest');
    expect([px(three, 0, 0)[0], px(three, 1, 0)[0]]).toEqual([0, 2]);
    const up = resizePillow(makeImage(2, 1, (x) => [x, 0, 0]), 4, 1, 'nearest');
    expect(Array.from({ length: 4 }, (_, x) => px(up, x, 0)[0])).toEqual([0, 0, 1, 1]);
  });

  it('rejects bad target sizes', () => {
    expect(() => resizePillow(gradient, 0, 5)).toThrow(/positive integers/);
    expect(() => resizePillow(gradient, 2.5, 5)).toThrow(/positive integers/);
  });
});

describe('decodeImage', () => {
  const rgb = makeImage(5, 3, (x, y) => [x * 50, y * 100, 255 - x * 10]);

  it('round-trips an RGB PNG through encodePng', () => {
    const out = decodeImage(encodePng(rgb), 'rgb.png');
    expect(out).toEqual(rgb);
  });

  it('RGBA drops alpha (convert("RGB"), no compositing)', () => {
    const data = new Uint8Array(5 * 3 * 4);
    for (let i = 0; i < 15; i++) data.set([...rgb.data.subarray(i * 3, i * 3 + 3), i * 17], i * 4);
    const out = decodeImage(encodePngRaw({ width: 5, height: 3, data, channels: 4, depth: 8 }), 'rgba.png');
    expect(out.data).toEqual(rgb.data);
  });

  it('greyscale and grey+alpha replicate the grey value', () => {
    const grey = Uint8Array.from({ length: 6 }, (_, i) => i * 40);
    const g = decodeImage(encodePngRaw({ width: 3, height: 2, data: grey, channels: 1, depth: 8 }), 'g.png');
    expect(Array.from(g.data)).toEqual(Array.from(grey).flatMap((v) => [v, v, v]));
    const la = Uint8Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? i * 20 : 7));
    const l = decodeImage(encodePngRaw({ width: 3, height: 2, data: la, channels: 2, depth: 8 }), 'la.png');
    expect(Array.from(l.data)).toEqual([0, 2, 4, 6, 8, 10].flatMap((i) => [i * 20, i * 20, i * 20]));
  });

  it('sub-byte greyscale scales like Pillow (1-bit 0/255, 2-bit x0x55, 4-bit x0x11)', () => {
    // 5 pixels per row, 2 rows: packed MSB first, rows padded to whole bytes.
    const one = decodeImage(encodePngRaw({ width: 5, height: 2, channels: 1, depth: 1, data: Uint8Array.of(0b10110000, 0b01001000) }), 'g1.png');
    expect(Array.from(one.data).filter((_, i) => i % 3 === 0)).toEqual([255, 0, 255, 255, 0, 0, 255, 0, 0, 255]);
    const two = decodeImage(encodePngRaw({ width: 5, height: 1, channels: 1, depth: 2, data: Uint8Array.of(0b00011011, 0b01000000) }), 'g2.png');
    expect(Array.from(two.data).filter((_, i) => i % 3 === 0)).toEqual([0, 0x55, 0xaa, 0xff, 0x55]);
    const four = decodeImage(encodePngRaw({ width: 3, height: 1, channels: 1, depth: 4, data: Uint8Array.of(0x0f, 0x70) }), 'g4.png');
    expect(Array.from(four.data).filter((_, i) => i % 3 === 0)).toEqual([0, 0xff, 0x77]);
  });

  it('palette images look colours up (8-bit, 2-bit, with tRNS; missing entries are black)', () => {
    const palette = [
      [255, 0, 0],
      [0, 255, 0],
      [0, 0, 255],
    ];
    const p8 = decodeImage(encodePngRaw({ width: 4, height: 1, channels: 1, depth: 8, palette, data: Uint8Array.of(2, 1, 0, 2) }), 'p8.png');
    expect(Array.from(p8.data)).toEqual([0, 0, 255, 0, 255, 0, 255, 0, 0, 0, 0, 255]);
    const p2 = decodeImage(
      encodePngRaw({ width: 4, height: 1, channels: 1, depth: 2, palette, data: Uint8Array.of(0b00011011) }),
      'p2.png',
    );
    expect(Array.from(p2.data)).toEqual([255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0]);
    const pa = [
      [10, 20, 30, 0],
      [40, 50, 60, 128],
    ];
    const pt = decodeImage(encodePngRaw({ width: 2, height: 1, channels: 1, depth: 8, palette: pa, data: Uint8Array.of(1, 0) }), 'pt.png');
    expect(Array.from(pt.data)).toEqual([40, 50, 60, 10, 20, 30]);
  });

  it('16-bit: colour keeps the high byte, grey clips to 255 (Pillow I;16 -> RGB)', () => {
    const rgb16 = Uint16Array.of(0x1234, 0xff00, 0x00ff, 0xabcd, 0x0100, 0x0001);
    const c = decodeImage(encodePngRaw({ width: 2, height: 1, channels: 3, depth: 16, data: rgb16 }), 'c16.png');
    expect(Array.from(c.data)).toEqual([0x12, 0xff, 0x00, 0xab, 0x01, 0x00]);
    const grey16 = Uint16Array.of(0, 200, 255, 256, 65535);
    const g = decodeImage(encodePngRaw({ width: 5, height: 1, channels: 1, depth: 16, data: grey16 }), 'g16.png');
    expect(Array.from(g.data).filter((_, i) => i % 3 === 0)).toEqual([0, 200, 255, 255, 255]);
    const rgba16 = Uint16Array.of(0x8000, 0x4000, 0x2000, 0x1000);
    const a = decodeImage(encodePngRaw({ width: 1, height: 1, channels: 4, depth: 16, data: rgba16 }), 'a16.png');
    expect(Array.from(a.data)).toEqual([0x80, 0x40, 0x20]);
  });

  it('interlaced (Adam7) 8-bit PNGs decode like non-interlaced ones; sub-byte interlaced is refused', () => {
    const big = makeImage(13, 11, (x, y) => [x * 19, y * 23, (x ^ y) * 9]);
    const bytes = encodePngRaw({ width: 13, height: 11, data: big.data, channels: 3, depth: 8 }, { interlace: 'Adam7' });
    expect(decodeImage(bytes, 'i.png')).toEqual(big);
    const sub = encodePngRaw({ width: 8, height: 8, channels: 1, depth: 1, data: new Uint8Array(8).fill(0xaa) }, { interlace: 'Adam7' });
    expect(() => decodeImage(sub, 'sub.png')).toThrow(/sub\.png.*interlaced/);
  });

  it('decodes a JPEG written by jpeg-js (lossy: close, not exact)', () => {
    const img = makeImage(37, 23, (x, y) => [60 + x * 4, 40 + y * 6, 200 - x * 2]);
    const rgba = new Uint8Array(37 * 23 * 4);
    for (let i = 0; i < 37 * 23; i++) rgba.set([...img.data.subarray(i * 3, i * 3 + 3), 255], i * 4);
    const bytes = jpeg.encode({ width: 37, height: 23, data: rgba }, 95).data;
    const out = decodeImage(new Uint8Array(bytes), 'photo.jpg');
    expect([out.width, out.height]).toEqual([37, 23]);
    let maxErr = 0;
    for (let i = 0; i < out.data.length; i++) maxErr = Math.max(maxErr, Math.abs(out.data[i]! - img.data[i]!));
    expect(maxErr).toBeLessThan(16);
  });

  it('errors name the file', () => {
    expect(() => decodeImage(new TextEncoder().encode('hello world'), 'notes.txt')).toThrow(
      'cannot decode image notes.txt: not a PNG or JPEG (starts with 68 65 6c 6c 6f 20 77 6f ...)',
    );
    expect(() => decodeImage(new Uint8Array(0), 'empty.png')).toThrow(/empty\.png.*empty file/);

    const png = encodePng(makeImage(20, 20, (x, y) => [x * 12, y * 12, (x * y) % 256]));
    expect(() => decodeImage(png.subarray(0, Math.floor(png.length / 2)), 'half.png')).toThrow(/cannot decode image half\.png: corrupt or truncated PNG/);
    expect(() => decodeImage(png.subarray(0, 20), 'tiny.png')).toThrow(/tiny\.png/);
    const corrupt = png.slice();
    corrupt[45] = corrupt[45]! ^ 0xff; // inside the IDAT data: the CRC no longer matches
    expect(() => decodeImage(corrupt, 'crc.png')).toThrow(/crc\.png/);

    const jpg = new Uint8Array(jpeg.encode({ width: 16, height: 16, data: new Uint8Array(16 * 16 * 4).fill(200) }, 90).data);
    expect(() => decodeImage(jpg.subarray(0, Math.floor(jpg.length / 2)), 'cut.jpg')).toThrow(/cannot decode image cut\.jpg: corrupt or truncated JPEG/);
  });

  it('loadImageFile names a missing path', async () => {
    await expect(loadImageFile('/nonexistent/dir/cat.png')).rejects.toThrow('cannot read image /nonexistent/dir/cat.png: file not found');
  });
});

describe('CLIP preprocessing', () => {
  it('parses configs with HF defaults and legacy forms', () => {
    const d = parseClipProcessorConfig({}, 'p.json');
    expect(d).toEqual(defaultClipProcessorConfig());
    expect(d.size).toEqual({ shortestEdge: 224 });
    expect(d.cropSize).toEqual({ height: 224, width: 224 });
    expect(d.resample).toBe(3);
    expect(d.imageMean).toEqual([0.48145466, 0.4578275, 0.40821073]);

    const legacy = parseClipProcessorConfig({ size: 336, crop_size: 336, do_pad: true, image_mean: 0.5, resample: 2 }, 'p.json');
    expect(legacy.size).toEqual({ shortestEdge: 336 });
    expect(legacy.cropSize).toEqual({ height: 336, width: 336 });
    expect(legacy.doPad).toBe(true);
    expect(legacy.imageMean).toEqual([0.5, 0.5, 0.5]);
    expect(legacy.resample).toBe(2);

    const hw = parseClipProcessorConfig({ size: { height: 384, width: 512 }, crop_size: { height: 10, width: 20 } }, 'p.json');
    expect(hw.size).toEqual({ height: 384, width: 512 });
    expect(hw.cropSize).toEqual({ height: 10, width: 20 });
    expect(parseClipProcessorConfig({ size: { shortest_edge: 56 }, use_square_size: true }, 'p.json').size).toEqual({ height: 56, width: 56 });
  });

  it('config errors name the file and the key', () => {
    const bad: [Record<string, unknown>, string][] = [
      [{ do_resize: 'yes' }, 'do_resize'],
      [{ resample: 7 }, 'resample'],
      [{ size: { longest_edge: 3 } }, 'size'],
      [{ size: -4 }, 'size'],
      [{ crop_size: { height: 3 } }, 'crop_size'],
      [{ image_mean: [0.5, 0.5] }, 'image_mean'],
      [{ image_std: [1, 0, 1] }, 'image_std'],
      [{ rescale_factor: '1/255' }, 'rescale_factor'],
    ];
    for (const [json, key] of bad) {
      expect(() => parseClipProcessorConfig(json, 'model/preprocessor_config.json')).toThrow(`model/preprocessor_config.json: "${key}"`);
    }
  });

  it('shortest-edge sizes truncate the long side', () => {
    expect(shortestEdgeSize(60, 80, 56)).toEqual([56, 74]);
    expect(shortestEdgeSize(80, 60, 56)).toEqual([74, 56]);
    expect(shortestEdgeSize(480, 640, 336)).toEqual([336, 448]);
    expect(shortestEdgeSize(100, 100, 7)).toEqual([7, 7]);
  });

  it('center crop: floor offsets, zero padding when the image is smaller', () => {
    const img = makeImage(3, 5, (x, y) => [x + 1, y + 1, 9]);
    // Height 5 -> 2: top = (5 - 2) // 2 = 1. Width 3 -> 4: padded, left pad = ceil(1 / 2) = 1.
    const c = centerCrop(img, 2, 4);
    expect([c.width, c.height]).toEqual([4, 2]);
    expect([px(c, 0, 0), px(c, 1, 0), px(c, 3, 0), px(c, 3, 1)]).toEqual([
      [0, 0, 0],
      [1, 2, 9],
      [3, 2, 9],
      [3, 3, 9],
    ]);
    // Both axes smaller: 3x5 -> 6x8: left pad ceil(3/2) = 2, top pad ceil(3/2) = 2.
    const p = centerCrop(img, 8, 6);
    expect([px(p, 1, 2), px(p, 2, 2), px(p, 4, 6), px(p, 5, 6), px(p, 4, 7)]).toEqual([
      [0, 0, 0],
      [1, 1, 9],
      [3, 5, 9],
      [0, 0, 0],
      [0, 0, 0],
    ]);
  });

  it('pads to square with the mean colour, then rescales and normalizes in float32', () => {
    const cfg = { ...defaultClipProcessorConfig(), doPad: true, doResize: false, doCenterCrop: false, rescaleFactor: 0.00392156862745098 };
    const img = makeImage(4, 2, () => [255, 0, 17]);
    const out = clipPreprocess(img, cfg);
    expect([out.width, out.height]).toEqual([4, 4]);
    // background = int(mean * 255) = (122, 116, 104); image pasted at row (4 - 2) // 2 = 1.
    expect([px(out.cropped, 0, 0), px(out.cropped, 0, 1), px(out.cropped, 3, 2), px(out.cropped, 3, 3)]).toEqual([
      [122, 116, 104],
      [255, 0, 17],
      [255, 0, 17],
      [122, 116, 104],
    ]);
    const f = Math.fround;
    const norm = (v: number, c: number): number => f(f(f(v * cfg.rescaleFactor) - f(cfg.imageMean[c]!)) / f(cfg.imageStd[c]!));
    expect(out.pixelValues[0]).toBe(norm(122, 0)); // R, (0, 0)
    expect(out.pixelValues[16 + 4]).toBe(norm(0, 1)); // G, (0, 1)
    expect(out.pixelValues[32 + 15]).toBe(norm(104, 2)); // B, (3, 3)
    expect(out.pixelValues[4]).toBeCloseTo((1 - 0.48145466) / 0.26862954, 5);
  });

  it('exact-size resize with another filter, no rescale/normalize gives raw values', () => {
    const cfg = {
      ...defaultClipProcessorConfig(),
      size: { height: 9, width: 13 },
      resample: 2,
      doCenterCrop: false,
      doRescale: false,
      doNormalize: false,
    };
    const img = makeImage(37, 23, (x, y) => [x * 6, y * 10, 50]);
    const out = clipPreprocess(img, cfg);
    const ref = resizePillow(img, 13, 9, 'bilinear');
    expect(out.resized).toEqual(ref);
    expect(Array.from(out.pixelValues.subarray(0, 13 * 9))).toEqual(Array.from({ length: 13 * 9 }, (_, i) => ref.data[i * 3]!));
  });
});
