// Idefics3 / SmolVLM CPU pieces: Pillow-exact LANCZOS (tests/fixtures/lanczos, made by
// scripts/make-lanczos-fixtures.py with Pillow), the Idefics3ImageProcessor slow path against the tiny-smolvlm
// golden and the worked examples of the model spec, batch padding, and the image prompt string.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadImageFile, type RgbImage } from '../src/io/image.js';
import { resizePillow } from '../src/io/resize.js';
import {
  type Idefics3ImageProcessorConfig,
  type Idefics3Pixels,
  type RgbaImage,
  compositeOverWhite,
  defaultIdefics3ImageProcessorConfig,
  idefics3Grid,
  idefics3ImagePromptString,
  idefics3Preprocess,
  idefics3Stage1Size,
  padIdefics3Batch,
  parseIdefics3ImageProcessorConfig,
  resizeForVisionEncoderSize,
  resizeRgbaPillow,
} from '../src/models/idefics3/image-processor.js';
import { REPO_ROOT, fixtureDir, golden } from './helpers/fixtures.js';

interface RawEntry {
  file: string;
  width: number;
  height: number;
  channels: 3 | 4;
}

const LANCZOS_DIR = join(REPO_ROOT, 'tests/fixtures/lanczos');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const index: any = JSON.parse(readFileSync(join(LANCZOS_DIR, 'index.json'), 'utf8'));
const raw = (e: RawEntry): RgbImage => {
  const data = new Uint8Array(readFileSync(join(LANCZOS_DIR, e.file)));
  expect(data.length).toBe(e.width * e.height * e.channels);
  return { width: e.width, height: e.height, data };
};
const sum = (a: Uint8Array): number => a.reduce((s, v) => s + v, 0);
const mismatches = (a: Uint8Array, b: Uint8Array): number => {
  expect(a.length).toBe(b.length);
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n;
};
const cfgWith = (over: Partial<Idefics3ImageProcessorConfig>): Idefics3ImageProcessorConfig => ({
  ...defaultIdefics3ImageProcessorConfig(),
  ...over,
});
/** A deterministic RGB test image. */
function makeImage(w: number, h: number, seed = 1): RgbImage {
  const data = new Uint8Array(w * h * 3);
  let s = seed >>> 0;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = ((i % 3) * 80 + ((i / 3) % w) * 3 + (s >>> 28)) & 255;
  }
  return { width: w, height: h, data };
}

describe('Pillow LANCZOS (fixtures from Pillow)', () => {
  it(`fixtures come from Pillow ${index.pillow_version}`, () => {
    expect(index.resize.length).toBeGreaterThanOrEqual(16);
  });
  for (const c of index.resize as { src: RawEntry; out: RawEntry }[]) {
    it(`${c.src.width}x${c.src.height} -> ${c.out.width}x${c.out.height}`, () => {
      const out = resizePillow(raw(c.src), c.out.width, c.out.height, 'lanczos');
      expect([out.width, out.height]).toEqual([c.out.width, c.out.height]);
      expect(mismatches(out.data, raw(c.out).data)).toBe(0);
    });
  }
  for (const c of index.resize_rgba as { src: RawEntry; out: RawEntry; over_white: RawEntry }[]) {
    it(`RGBA ${c.src.width}x${c.src.height} -> ${c.out.width}x${c.out.height} (premultiplied), then over white`, () => {
      const out = resizeRgbaPillow(raw(c.src), c.out.width, c.out.height, 'lanczos');
      expect(mismatches(out.data, raw(c.out).data)).toBe(0);
      expect(mismatches(compositeOverWhite(out).data, raw(c.over_white).data)).toBe(0);
    });
  }
});

describe('Idefics3 pipelines redone with Pillow', () => {
  for (const p of index.idefics3) {
    it(`${p.name}: sizes, grid and uint8 tiles`, () => {
      const cfg = cfgWith({
        size: { longestEdge: p.longest_edge },
        maxImageSize: p.max_image_size,
        doResize: p.do_resize,
        doImageSplitting: p.do_image_splitting,
      });
      const src: RgbImage | RgbaImage = raw(p.src);
      const px = idefics3Preprocess(src, cfg);
      expect([px.stage1.height, px.stage1.width]).toEqual(p.stage1_hw);
      expect([px.stage2.height, px.stage2.width]).toEqual(p.stage2_hw);
      expect([px.rows, px.cols]).toEqual([p.rows, p.cols]);
      expect(px.tiles).toBe(p.tiles.length);
      expect(px.tileImages.length).toBe(px.tiles);
      px.tileImages.forEach((t, i) => {
        expect([t.width, t.height]).toEqual([p.tiles[i].width, p.tiles[i].height]);
        expect(mismatches(t.data, raw(p.tiles[i]).data)).toBe(0);
      });
      expect(px.pixelValues.length).toBe(px.tiles * 3 * px.tileHeight * px.tileWidth);
    });
  }

  it('RGBA: transparent pixels come out white, opaque ones unchanged', () => {
    const rgba: RgbaImage = { width: 2, height: 1, data: new Uint8Array([10, 20, 30, 0, 40, 50, 60, 255]) };
    expect(Array.from(compositeOverWhite(rgba).data)).toEqual([255, 255, 255, 40, 50, 60]);
    const px = idefics3Preprocess(rgba, cfgWith({ doResize: false, maxImageSize: 2, doImageSplitting: false }));
    expect(px.tiles).toBe(1);
    expect(Array.from(px.tileImages[0]!.data.subarray(0, 6))).toEqual([255, 255, 255, 40, 50, 60]);
    expect(() => idefics3Preprocess(rgba, cfgWith({ doConvertRgb: false }))).toThrow(/RGBA.*do_convert_rgb/);
  });
});

describe('tiny-smolvlm golden', () => {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  let g: any;
  let cfg: Idefics3ImageProcessorConfig;
  let img: RgbImage;
  let px: Idefics3Pixels;
  let preJson: Record<string, unknown>;

  beforeAll(async () => {
    const dir = fixtureDir('tiny-smolvlm');
    g = golden('tiny-smolvlm');
    preJson = JSON.parse(readFileSync(join(dir, 'preprocessor_config.json'), 'utf8'));
    cfg = parseIdefics3ImageProcessorConfig(preJson, 'preprocessor_config.json');
    img = await loadImageFile(join(dir, g.image.file));
    px = idefics3Preprocess(img, cfg);
  });

  it('reads preprocessor_config.json (longest_edge 64, max_image_size 32, LANCZOS)', () => {
    expect(cfg.size).toEqual({ longestEdge: 64 });
    expect(cfg.maxImageSize).toBe(32);
    expect(cfg.resample).toBe('lanczos');
    expect(cfg.doImageSplitting).toBe(true);
    expect(cfg.imageMean).toEqual([0.5, 0.5, 0.5]);
    expect(cfg.imageStd).toEqual([0.5, 0.5, 0.5]);
    expect(cfg.rescaleFactor).toBe(1 / 255);
  });

  it('config.json values play no part (the parser only reads the preprocessor json)', () => {
    const dir = fixtureDir('tiny-smolvlm');
    const modelCfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    modelCfg.vision_config.image_size = 512;
    // Keys that belong to config.json, mixed into the preprocessor json, change nothing.
    const mixed = { ...preJson, vision_config: modelCfg.vision_config, image_size: 999, scale_factor: 4 };
    expect(parseIdefics3ImageProcessorConfig(mixed, 'preprocessor_config.json')).toEqual(cfg);
    // And config.json itself is no preprocessor config: it yields the class defaults, not its vision image_size.
    const fromModel = parseIdefics3ImageProcessorConfig(modelCfg, 'config.json');
    expect(fromModel.maxImageSize).toBe(364);
    expect(fromModel.size).toEqual({ longestEdge: 1456 });
  });

  it('stage 1 and stage 2 sizes and checksums', () => {
    expect([img.width, img.height]).toEqual(g.image.size_wh);
    expect([px.stage1.height, px.stage1.width]).toEqual(g.image.stage1_resize_hw);
    expect(sum(px.stage1.data)).toBe(g.image.stage1_uint8_checksum);
    expect([px.stage2.height, px.stage2.width]).toEqual(g.image.stage2_resize_hw);
    expect(sum(px.stage2.data)).toBe(g.image.stage2_uint8_checksum);
  });

  it('rows, cols, tile order (row-major crops, global last)', () => {
    expect([px.rows, px.cols]).toEqual([g.image.rows, g.image.cols]);
    expect(px.tiles).toBe(g.image.n_tiles);
    const order: string[] = [];
    for (let r = 1; r <= px.rows; r++) for (let c = 1; c <= px.cols; c++) order.push(`row_${r}_col_${c}`);
    order.push('global');
    expect(order).toEqual(g.image.tile_order);
    // The crops are literal slices of stage 2.
    const M = cfg.maxImageSize;
    const s2 = px.stage2;
    for (let r = 0; r < px.rows; r++) {
      for (let c = 0; c < px.cols; c++) {
        const t = px.tileImages[r * px.cols + c]!;
        for (let y = 0; y < M; y++) {
          const src = ((r * M + y) * s2.width + c * M) * 3;
          expect(mismatches(t.data.subarray(y * M * 3, (y + 1) * M * 3), s2.data.subarray(src, src + M * 3))).toBe(0);
        }
      }
    }
    expect(mismatches(px.tileImages[px.tiles - 1]!.data, resizePillow(s2, M, M, 'lanczos').data)).toBe(0);
  });

  it('tiles_uint8 bit-exact', () => {
    const tiles: number[][][][] = g.image.tiles_uint8;
    expect(tiles.length).toBe(px.tiles);
    tiles.forEach((t, i) => {
      expect(mismatches(px.tileImages[i]!.data, Uint8Array.from(t.flat(2)))).toBe(0);
    });
  });

  it('pixel_values within 1e-6, mask all ones', () => {
    const want = Float64Array.from((g.pixel_values as number[][][][]).flat(3));
    expect(px.pixelValues.length).toBe(want.length);
    let m = 0;
    for (let i = 0; i < want.length; i++) m = Math.max(m, Math.abs(px.pixelValues[i]! - want[i]!));
    expect(m).toBeLessThanOrEqual(1e-6);
    expect([px.tileHeight, px.tileWidth]).toEqual([32, 32]);
    expect(px.pixelAttentionMask.length).toBe(5 * 32 * 32);
    expect(px.pixelAttentionMask.every((v) => v === 1)).toBe(true);
  });

  it('the image prompt string equals the golden one', () => {
    const s = idefics3ImagePromptString(px.rows, px.cols, g.prompt.image_seq_len);
    expect(s).toBe(g.prompt.image_prompt_string);
    for (const m of ['<row_1_col_1>', '<row_1_col_2>', '<row_2_col_1>', '<row_2_col_2>']) expect(s).toContain(m);
    expect(s).toContain('\n\n<fake_token_around_image><global-img>');
    expect(s.split('<image>').length - 1).toBe(px.tiles * g.prompt.image_seq_len);
  });

  it('padIdefics3Batch: images of 5 and 1 tiles (different tile sizes)', () => {
    const small = idefics3Preprocess(makeImage(9, 6), cfgWith({ size: { longestEdge: 16 }, maxImageSize: 16 }));
    expect([small.tiles, small.rows, small.cols, small.tileHeight]).toEqual([1, 0, 0, 16]);

    // Two samples: [2, 5, 3, 32, 32]; the second holds one 16x16 tile padded to 32x32, then 4 empty slots.
    const b = padIdefics3Batch([px, small]);
    expect([b.batch, b.maxTiles, b.height, b.width]).toEqual([2, 5, 32, 32]);
    expect(b.tilesPerSample).toEqual([5, 1]);
    const plane = 32 * 32;
    expect(Array.from(b.pixelValues.subarray(0, 5 * 3 * plane))).toEqual(Array.from(px.pixelValues));
    expect(b.pixelAttentionMask.subarray(0, 5 * plane).every((v) => v === 1)).toBe(true);
    const t1 = 5; // sample 1, slot 0
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < 32; y++) {
        for (let x = 0; x < 32; x++) {
          const v = b.pixelValues[(t1 * 3 + c) * plane + y * 32 + x]!;
          const want = y < 16 && x < 16 ? small.pixelValues[c * 256 + y * 16 + x]! : 0;
          if (v !== want) expect([c, y, x, v]).toEqual([c, y, x, want]);
        }
      }
    }
    for (let y = 0; y < 32; y++) {
      for (let x = 0; x < 32; x++) expect(b.pixelAttentionMask[t1 * plane + y * 32 + x]).toBe(y < 16 && x < 16 ? 1 : 0);
    }
    // Slots 1..4 of sample 1: all-zero tiles and masks (the model drops them).
    expect(b.pixelValues.subarray(6 * 3 * plane).every((v) => v === 0)).toBe(true);
    expect(b.pixelAttentionMask.subarray(6 * plane).every((v) => v === 0)).toBe(true);

    // One sample holding both images: 6 tiles in order, no empty slot.
    const one = padIdefics3Batch([[px, small]]);
    expect([one.batch, one.maxTiles, one.height, one.width]).toEqual([1, 6, 32, 32]);
    expect(Array.from(one.pixelValues.subarray(5 * 3 * plane))).toEqual(Array.from(b.pixelValues.subarray(5 * 3 * plane, 6 * 3 * plane)));
  });
});

describe('sizes and splitting rules', () => {
  it('model-spec §3.2 worked examples with 2048 / 512 (sizes and tile counts)', () => {
    const cfg = cfgWith({ size: { longestEdge: 2048 }, maxImageSize: 512 });
    const count = (w: number, h: number): [number[], number[], number, number, number] => {
      const s1 = idefics3Stage1Size(h, w, cfg);
      const s2 = resizeForVisionEncoderSize(s1[0], s1[1], 512);
      const { rows, cols } = idefics3Grid(s2[0], s2[1], 512);
      return [s1, s2, rows, cols, rows > 0 ? rows * cols + 1 : 1];
    };
    expect(count(100, 80)).toEqual([[1638, 2048], [2048, 2048], 4, 4, 17]);
    expect(count(640, 480)).toEqual([[1536, 2048], [1536, 2048], 3, 4, 13]);
    // And the full pipeline agrees for 100x80.
    const px = idefics3Preprocess(makeImage(100, 80), cfg);
    expect([px.stage1.height, px.stage1.width, px.stage2.height, px.stage2.width]).toEqual([1638, 2048, 2048, 2048]);
    expect([px.rows, px.cols, px.tiles, px.tileHeight, px.tileWidth]).toEqual([4, 4, 17, 512, 512]);
    expect(px.pixelValues.length).toBe(17 * 3 * 512 * 512);
  });

  it('int() truncation then odd -> +1 (70x45 -> 42x64; portrait too)', () => {
    expect(idefics3Stage1Size(45, 70, { size: { longestEdge: 64 } })).toEqual([42, 64]); // int(41.14) = 41 -> 42
    expect(idefics3Stage1Size(70, 45, { size: { longestEdge: 64 } })).toEqual([64, 42]);
    expect(idefics3Stage1Size(61, 5, { size: { longestEdge: 64 } })).toEqual([64, 6]); // int(5.24) = 5 -> 6
    // MAX_IMAGE_SIZE 4096 caps stage 1 (no odd bump in that step).
    expect(idefics3Stage1Size(300, 1000, { size: { longestEdge: 5000 } })).toEqual([1228, 4096]);
  });

  it('small images are upscaled (10x7 -> longest edge 64)', () => {
    const px = idefics3Preprocess(makeImage(10, 7), cfgWith({ size: { longestEdge: 64 }, maxImageSize: 32 }));
    expect([px.stage1.height, px.stage1.width]).toEqual([44, 64]); // int(64 / (10/7)) = 44
    expect([px.stage2.height, px.stage2.width]).toEqual([64, 64]);
    expect([px.rows, px.cols, px.tiles]).toEqual([2, 2, 5]);
  });

  it('an image that fits one tile gives ONE tile and no global duplicate', () => {
    // longest_edge <= max_image_size.
    const a = idefics3Preprocess(makeImage(37, 23), cfgWith({ size: { longestEdge: 32 }, maxImageSize: 32 }));
    expect([a.stage1.height, a.stage1.width]).toEqual([20, 32]);
    expect([a.stage2.height, a.stage2.width]).toEqual([32, 32]);
    expect([a.rows, a.cols, a.tiles, a.tileHeight, a.tileWidth]).toEqual([0, 0, 1, 32, 32]);
    expect(mismatches(a.tileImages[0]!.data, a.stage2.data)).toBe(0);
    expect(idefics3ImagePromptString(a.rows, a.cols, 4)).toBe(
      '<fake_token_around_image><global-img><image><image><image><image><fake_token_around_image>',
    );
    // do_resize false: stage 1 is the input; stage 2 still rounds up to the tile side.
    const img = makeImage(20, 10);
    const b = idefics3Preprocess(img, cfgWith({ doResize: false, maxImageSize: 32 }));
    expect(mismatches(b.stage1.data, img.data)).toBe(0);
    expect([b.stage2.height, b.stage2.width]).toEqual([32, 32]);
    expect([b.rows, b.cols, b.tiles]).toEqual([0, 0, 1]);
  });

  it('do_image_splitting false: one max x max tile', () => {
    const img = makeImage(70, 45);
    const px = idefics3Preprocess(img, cfgWith({ size: { longestEdge: 64 }, maxImageSize: 32, doImageSplitting: false }));
    expect([px.rows, px.cols, px.tiles, px.tileHeight, px.tileWidth]).toEqual([0, 0, 1, 32, 32]);
    expect(mismatches(px.tileImages[0]!.data, resizePillow(resizePillow(img, 64, 42, 'lanczos'), 32, 32, 'lanczos').data)).toBe(0);
  });

  it('rescale in float64 then float32, normalize in float32; switches honoured', () => {
    const img: RgbImage = { width: 1, height: 1, data: new Uint8Array([0, 128, 255]) };
    const base = { doResize: false, maxImageSize: 1, doImageSplitting: false };
    const f = Math.fround;
    expect(Array.from(idefics3Preprocess(img, cfgWith(base)).pixelValues)).toEqual([
      -1,
      f(f(f(128 / 255) - 0.5) / 0.5),
      1,
    ]);
    expect(Array.from(idefics3Preprocess(img, cfgWith({ ...base, doNormalize: false })).pixelValues)).toEqual([
      0,
      f(128 * (1 / 255)),
      1,
    ]);
    expect(Array.from(idefics3Preprocess(img, cfgWith({ ...base, doRescale: false, doNormalize: false })).pixelValues)).toEqual([0, 128, 255]);
  });
});

describe('parseIdefics3ImageProcessorConfig', () => {
  it('class defaults when keys are absent', () => {
    expect(parseIdefics3ImageProcessorConfig({}, 'p.json')).toEqual(defaultIdefics3ImageProcessorConfig());
    const d = defaultIdefics3ImageProcessorConfig();
    expect([d.size, d.maxImageSize, d.resample, d.doImageSplitting, d.doPad]).toEqual([{ longestEdge: 1456 }, 364, 'lanczos', true, true]);
  });

  it('SmolVLM-256M values; size {height, width}; resample codes', () => {
    const c = parseIdefics3ImageProcessorConfig(
      { size: { longest_edge: 2048 }, max_image_size: { longest_edge: 512 }, resample: 1, do_image_splitting: false, image_mean: 0.5 },
      'p.json',
    );
    expect([c.size, c.maxImageSize, c.resample, c.doImageSplitting, c.imageMean]).toEqual([
      { longestEdge: 2048 },
      512,
      'lanczos',
      false,
      [0.5, 0.5, 0.5],
    ]);
    expect(parseIdefics3ImageProcessorConfig({ size: { height: 40, width: 50 }, resample: 3 }, 'p.json')).toMatchObject({
      size: { height: 40, width: 50 },
      resample: 'bicubic',
    });
  });

  it('errors name the file and the key', () => {
    const p = (j: Record<string, unknown>) => () => parseIdefics3ImageProcessorConfig(j, 'x/preprocessor_config.json');
    expect(p({ size: { longest_edge: 0 } })).toThrow(/x\/preprocessor_config\.json: "size\.longest_edge"/);
    expect(p({ size: { shortest_edge: 5 } })).toThrow(/preprocessor_config\.json: "size"/);
    expect(p({ max_image_size: 512 })).toThrow(/"max_image_size"/);
    expect(p({ max_image_size: { longest_edge: 'a' } })).toThrow(/"max_image_size\.longest_edge"/);
    expect(p({ do_image_splitting: 'yes' })).toThrow(/"do_image_splitting" must be a boolean/);
    expect(p({ resample: 9 })).toThrow(/"resample"/);
    expect(p({ image_std: [0.5, 0, 0.5] })).toThrow(/"image_std"/);
    expect(p({ rescale_factor: -1 })).toThrow(/"rescale_factor"/);
  });
});

describe('idefics3ImagePromptString', () => {
  it('rows x cols markers, "\\n" after each row, "\\n" before the global block', () => {
    const s = idefics3ImagePromptString(2, 3, 1, { fake: 'F', global: 'G', image: 'I' });
    expect(s).toBe('F<row_1_col_1>IF<row_1_col_2>IF<row_1_col_3>I\nF<row_2_col_1>IF<row_2_col_2>IF<row_2_col_3>I\n\nFGIF');
    expect(idefics3ImagePromptString(0, 0, 2, { fake: 'F', global: 'G', image: 'I' })).toBe('FGIIF');
    expect(() => idefics3ImagePromptString(2, 0, 4)).toThrow(/rows and cols/);
    expect(() => idefics3ImagePromptString(1, 1, 0)).toThrow(/image_seq_len/);
  });
});
