// The float64 Idefics3 / SmolVLM reference (tests/helpers/reference-idefics3.ts) held to the tiny-smolvlm golden
// field by field (fed the golden's input_ids and the float32 pixel values rebuilt from tiles_uint8, equal to the
// printed pixel_values to their 7 decimals); its index maps (NaViT position bucketing, pixel shuffle, the two
// feature merges) held to literal transcriptions of the Hugging Face code; and run on random checkpoints of both
// model types written by src/models/random-idefics3.ts (CPU only).

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseInterventions, type ModelDims } from '../src/spec/spec.js';
import { type RandomIdefics3Spec, idefics3TokenIds, randomIdefics3, writeRandomIdefics3 } from '../src/models/random-idefics3.js';
import { expectClose, rng } from './helpers/gpu.js';
import { fixtureDir, golden } from './helpers/fixtures.js';
import { mergeImageFeatures } from './helpers/reference-math.js';
import {
  type Idefics3Tile,
  type ReferenceIdefics3,
  type ReferenceIdefics3Output,
  navitPositionIds,
  pixelShuffle,
  referenceIdefics3,
  smolvlmMerge,
} from './helpers/reference-idefics3.js';

const flat = (a: unknown): number[] => (Array.isArray(a) ? a.flatMap(flat) : [a as number]);
const sum = (a: Float64Array) => a.reduce((s, x) => s + x, 0);

const dimsOf = (ref: ReferenceIdefics3): ModelDims => ({
  text: { layers: ref.cfg.text.layers, heads: ref.cfg.text.heads, headDim: ref.cfg.text.headDim },
  vision: { layers: ref.cfg.vision.layers, heads: ref.cfg.vision.heads, headDim: ref.cfg.vision.headDim },
});

/** z of the last row as [layers, heads, hd]. */
function lastRowZ(ref: ReferenceIdefics3, out: ReferenceIdefics3Output, L: number): Float64Array {
  const W = ref.cfg.text.heads * ref.cfg.text.headDim;
  const z = new Float64Array(ref.cfg.text.layers * W);
  for (let l = 0; l < ref.cfg.text.layers; l++) z.set(out.z.subarray((l * L + L - 1) * W, (l * L + L) * W), l * W);
  return z;
}

/**
 * The float32 pixel_values Hugging Face was fed, from one tile of golden's tiles_uint8 [H][W][3] (Pillow's exact
 * output): the slow Idefics3ImageProcessor's rescale (float64 product cast to float32) and normalize ((x - 0.5)
 * / 0.5 in float32, image_transforms.py), channels first. golden.json prints pixel_values to 7 decimals, and that
 * rounding alone moves the logits by ~1e-6.
 */
function exactTile(tile: number[][][], pp: { rescale_factor: number; image_mean: number[]; image_std: number[] }): Float32Array {
  const [H, W] = [tile.length, tile[0].length];
  const out = new Float32Array(3 * H * W);
  for (let c = 0; c < 3; c++) {
    const mean = Math.fround(pp.image_mean[c]);
    const std = Math.fround(pp.image_std[c]);
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++) out[(c * H + y) * W + x] = Math.fround(Math.fround(Math.fround(tile[y][x][c] * pp.rescale_factor) - mean) / std);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// 1. The golden

describe('float64 reference reproduces the tiny-smolvlm golden', () => {
  const g = golden('tiny-smolvlm');
  const P: number = g.prompt_len;
  let ref: ReferenceIdefics3;
  let tiles: Idefics3Tile[];
  let out: ReferenceIdefics3Output;

  beforeAll(async () => {
    const dir = fixtureDir('tiny-smolvlm');
    ref = await referenceIdefics3(dir);
    const pp = JSON.parse(await readFile(join(dir, 'preprocessor_config.json'), 'utf8'));
    tiles = (g.image.tiles_uint8 as number[][][][]).map((t) => ({ pixelValues: exactTile(t, pp) }));
    out = ref.forward(g.input_ids, tiles);
  });

  it('parses the config (model type, scale factor, image_seq_len, special ids)', () => {
    expect(ref.cfg.modelType).toBe('idefics3');
    expect(ref.cfg.scaleFactor).toBe(2);
    expect(ref.imageSeqLen).toBe(g.prompt.image_seq_len);
    expect(ref.cfg.imageTokenId).toBe(g.special_tokens['<image>']);
    expect(ref.cfg.tied).toBe(false);
    expect(ref.cfg.text.headDim).toBe(16);
    expect(ref.cfg.vision.patchesPerSide).toBe(4);
    expect(g.input_ids.filter((id: number) => id === ref.cfg.imageTokenId).length).toBe(g.image.n_tiles * ref.imageSeqLen);
  });

  it('the float32 pixel values are the golden pixel_values (to their printed 7 decimals)', () => {
    expectClose(tiles.flatMap((t) => [...t.pixelValues]), flat(g.pixel_values), 6e-8, 0, 'pixel_values');
  });

  it('from the printed pixel_values: vision and features within 1e-6, logits within 1e-5 (their rounding moves logits ~1e-6)', () => {
    const o = ref.forward(g.input_ids, (g.pixel_values as unknown[]).map((t) => ({ pixelValues: Float32Array.from(flat(t)) })));
    expectClose(o.visionLast.map(sum), g.vision_last_hidden_state_sum_per_tile, 1e-5, 0, 'vision_last_hidden_state_sum_per_tile');
    expectClose(o.imageFeatures, flat(g.image_features), 1e-6, 0, 'image_features');
    expectClose(o.logits, flat(g.logits), 1e-5, 0, 'logits');
  });

  it('vision position ids: every full tile is the identity', () => {
    expect(out.keptTiles).toEqual([0, 1, 2, 3, 4]);
    for (const ids of out.positionIds) expect(ids).toEqual(g.vision_position_ids);
  });

  it('vision hidden states: sums over tiles and per tile (unrounded in golden)', () => {
    expectClose(out.visionStates.map((st) => st.reduce((a, t) => a + sum(t), 0)), g.vision_hidden_states_sum, 1e-9, 0, 'vision_hidden_states_sum');
    expectClose(out.visionStates.flatMap((st) => st.map(sum)), flat(g.vision_hidden_states_sum_per_tile), 1e-9, 0, 'vision_hidden_states_sum_per_tile');
  });

  it('after post_layernorm: per-tile sums and tile 0 row 0', () => {
    expectClose(out.visionLast.map(sum), g.vision_last_hidden_state_sum_per_tile, 1e-9, 0, 'vision_last_hidden_state_sum_per_tile');
    expectClose(out.visionLast[0].subarray(0, ref.cfg.vision.hidden), g.vision_last_hidden_state_tile0_row0, 1e-6, 0, 'vision_last_hidden_state_tile0_row0');
  });

  it('pixel shuffle of tile 0 and the image features', () => {
    expectClose(out.pixelShuffle[0], flat(g.pixel_shuffle_tile0), 1e-6, 0, 'pixel_shuffle_tile0');
    expectClose(out.imageFeatures, flat(g.image_features), 1e-6, 0, 'image_features');
  });

  it('text hidden-state sums, all logits, the layer-1 pattern and z at the last position', () => {
    expectClose(out.textStates.map(sum), g.text_hidden_states_sum, 1e-9, 0, 'text_hidden_states_sum');
    expectClose(out.logits, flat(g.logits), 1e-6, 0, 'logits');
    expectClose(out.patterns.get(1)!, flat(g.attention_pattern_layer1), 1e-6, 0, 'attention_pattern_layer1');
    expectClose(lastRowZ(ref, out, P), flat(g.z_last_position), 1e-6, 0, 'z_last_position');
  });

  it('greedy tokens (no KV cache) and their margin', () => {
    const gr = ref.greedy(g.input_ids, tiles, 6);
    expect(gr.tokens).toEqual(g.greedy_6);
    expectClose([Math.min(...gr.margins)], [g.greedy_min_top2_margin], 1e-9, 0, 'greedy_min_top2_margin');
  });

  it('the SmolVLM merge gives the same embeddings and logits', () => {
    const o = ref.forward(g.input_ids, tiles, { merge: 'smolvlm' });
    expect(o.textStates[0]).toEqual(out.textStates[0]);
    expect(o.logits).toEqual(out.logits);
  });

  for (const name of Object.keys(g.interventions)) {
    it(`intervention ${name}`, () => {
      const c = g.interventions[name];
      const spec = parseInterventions(c.spec, dimsOf(ref));
      const o = ref.forward(g.input_ids, tiles, { interventions: spec });
      const V = ref.cfg.text.vocab;
      expectClose(o.logits.subarray((P - 1) * V), c.last_logits, 1e-6, 0, `${name} last_logits`);
      if (c.greedy_6) {
        const gr = ref.greedy(g.input_ids, tiles, 6, spec);
        expect(gr.tokens).toEqual(c.greedy_6);
        if (c.greedy_min_top2_margin !== undefined) {
          expectClose([Math.min(...gr.margins)], [c.greedy_min_top2_margin], 1e-9, 0, `${name} greedy_min_top2_margin`);
        }
      }
    });
  }

  it('a vision head scale applies in every tile', () => {
    const spec = parseInterventions({ head_scale: [{ tower: 'vision', layer: 1, head: 0, scale: 0 }] }, dimsOf(ref));
    const o = ref.forward(g.input_ids, tiles, { interventions: spec });
    const E = ref.cfg.vision.hidden;
    for (let t = 0; t < tiles.length; t++) {
      expect(o.visionStates[1][t]).toEqual(out.visionStates[1][t]); // layer 0 untouched
      expect(o.visionStates[2][t]).not.toEqual(out.visionStates[2][t]);
    }
    expect(o.visionStates[2][4].length).toBe(16 * E);
  });

  it('a padded tile (valid 24x16 of 32x32 pixels): bucketized ids, masked keys, padding content never reaches valid patches', () => {
    const [H, W] = [32, 32];
    const mask = new Uint8Array(H * W);
    for (let y = 0; y < 24; y++) for (let x = 0; x < 16; x++) mask[y * W + x] = 1;
    const padded = (fill: number): Idefics3Tile => {
      const px = Float32Array.from(tiles[0].pixelValues);
      for (let c = 0; c < 3; c++) for (let i = 0; i < H * W; i++) if (!mask[i]) px[c * H * W + i] = fill;
      return { pixelValues: px, mask };
    };
    const a = ref.vision([padded(0)]);
    const b = ref.vision([padded(0.7)]);
    // nb_h = 3, nb_w = 2 on a 4-per-side grid: rows -> buckets 0, 1, 2; cols -> 0, 2.
    expect(a.positionIds[0]).toEqual([0, 2, 0, 0, 4, 6, 0, 0, 8, 10, 0, 0, 0, 0, 0, 0]);
    expect(a.positionIds[0]).toEqual(hfPositionIds(a.patchMasks[0], 4, 4, 4));
    const valid = [0, 1, 4, 5, 8, 9];
    const E = ref.cfg.vision.hidden;
    for (let i = 1; i <= ref.cfg.vision.layers; i++) {
      for (const p of valid) expect(b.visionStates[i][0].subarray(p * E, (p + 1) * E)).toEqual(a.visionStates[i][0].subarray(p * E, (p + 1) * E));
      const pat = a.visionPatterns.get(i - 1)![0];
      for (let h = 0; h < ref.cfg.vision.heads; h++)
        for (let q = 0; q < 16; q++) {
          let rowSum = 0;
          for (let k = 0; k < 16; k++) {
            const x = pat[(h * 16 + q) * 16 + k];
            rowSum += x;
            if (!valid.includes(k)) expect(x).toBe(0);
          }
          expect(Math.abs(rowSum - 1)).toBeLessThan(1e-12);
        }
    }
    // Padded patches still go through the shuffle and the projection (as in HF).
    expect(a.imageFeatures.length).toBe(4 * ref.cfg.text.hidden);
  });

  it('all-zero tiles are dropped before the vision tower', () => {
    const zero: Idefics3Tile = { pixelValues: new Float32Array(3 * 32 * 32) };
    const o = ref.vision([tiles[0], zero, tiles[1]]);
    expect(o.keptTiles).toEqual([0, 2]);
    expect(o.imageFeatures).toEqual(out.imageFeatures.subarray(0, 2 * 4 * ref.cfg.text.hidden));
  });
});

// ---------------------------------------------------------------------------------------------------------
// 2. Index maps against literal transcriptions of the Hugging Face code

/** torch.arange in float32 (CPU): length ceil((end - start) / step) in double, element i = float32(start + i * step). */
function torchArangeF32(start: number, end: number, step: number): Float32Array {
  const n = Math.ceil((end - start) / step);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = start + i * step;
  return out;
}

/** torch.bucketize(x, boundaries, right=True): the first index i with boundaries[i] > x (searchsorted right). */
function torchBucketizeRight(x: Float32Array, boundaries: Float32Array): number[] {
  return Array.from(x, (v) => {
    let lo = 0;
    let hi = boundaries.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (boundaries[mid] <= v) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  });
}

/** Idefics3VisionEmbeddings.forward's position ids, line by line, for one p_attn_mask [rows, cols]. */
function hfPositionIds(pAttnMask: Uint8Array, rows: number, cols: number, numPatchesPerSide: number): number[] {
  const boundaries = torchArangeF32(1 / numPatchesPerSide, 1.0, 1 / numPatchesPerSide);
  const positionIds = new Array<number>(rows * cols).fill(0);
  let nbPatchesH = 0;
  for (let r = 0; r < rows; r++) nbPatchesH += pAttnMask[r * cols + 0]; // p_attn_mask[:, 0].sum()
  let nbPatchesW = 0;
  for (let c = 0; c < cols; c++) nbPatchesW += pAttnMask[0 * cols + c]; // p_attn_mask[0].sum()
  const fractionalCoordsH = torchArangeF32(0, 1 - 1e-6, Math.fround(1 / nbPatchesH));
  const fractionalCoordsW = torchArangeF32(0, 1 - 1e-6, Math.fround(1 / nbPatchesW));
  const bucketCoordsH = torchBucketizeRight(fractionalCoordsH, boundaries);
  const bucketCoordsW = torchBucketizeRight(fractionalCoordsW, boundaries);
  const posIds = bucketCoordsH.flatMap((h) => bucketCoordsW.map((w) => h * numPatchesPerSide + w));
  let k = 0;
  for (let i = 0; i < rows * cols; i++) if (pAttnMask[i]) positionIds[i] = posIds[k++]; // position_ids[mask] = pos_ids
  return positionIds;
}

describe('NaViT position bucketing', () => {
  it('matches the transcription for every top-left valid rectangle of several grids', () => {
    for (const [n, rows, cols] of [[4, 4, 4], [32, 32, 32], [14, 20, 9], [37, 40, 40], [7, 7, 13], [7, 64, 2], [14, 2, 64]] as const) {
      for (let nh = 1; nh <= rows; nh++)
        for (let nw = 1; nw <= cols; nw++) {
          const mask = new Uint8Array(rows * cols);
          for (let r = 0; r < nh; r++) for (let c = 0; c < nw; c++) mask[r * cols + c] = 1;
          const got = navitPositionIds(mask, rows, cols, n);
          const want = hfPositionIds(mask, rows, cols, n);
          if (got.join() !== want.join()) throw new Error(`grid ${rows}x${cols}, side ${n}, valid ${nh}x${nw}: ${got} vs ${want}`);
        }
    }
  });

  it('float32 pins the ties: 7 of 49 patches on a 7-per-side table is bucket 0 (f32(1/49) * 7 < f32(1/7)), not 1', () => {
    const ids = navitPositionIds(new Uint8Array(49).fill(1), 49, 1, 7);
    expect(ids.slice(6, 9)).toEqual([0, 0, 7]);
    expect(ids).toEqual(hfPositionIds(new Uint8Array(49).fill(1), 49, 1, 7));
  });

  it('a full grid of the embedding side is the identity; a half-valid one spreads over the whole table', () => {
    const full = new Uint8Array(32 * 32).fill(1);
    expect(navitPositionIds(full, 32, 32, 32)).toEqual([...Array(1024).keys()]);
    const mask = new Uint8Array(32 * 32);
    for (let r = 0; r < 16; r++) for (let c = 0; c < 16; c++) mask[r * 32 + c] = 1;
    const ids = navitPositionIds(mask, 32, 32, 32);
    expect(ids[0]).toBe(0);
    expect(ids[1]).toBe(2);
    expect(ids[15 * 32 + 15]).toBe(30 * 32 + 30);
  });
});

/** A row-major tensor with torch's view / permute / reshape semantics (permute copies, so reshape is a view). */
class Strided {
  constructor(readonly data: Float64Array, readonly shape: number[]) {}
  view(...shape: number[]): Strided {
    if (shape.reduce((a, b) => a * b, 1) !== this.data.length) throw new Error(`view ${shape} of ${this.shape}`);
    return new Strided(this.data, shape);
  }
  permute(...dims: number[]): Strided {
    const shape = dims.map((d) => this.shape[d]);
    const strides = this.shape.map((_, i) => this.shape.slice(i + 1).reduce((a, b) => a * b, 1));
    const out = new Float64Array(this.data.length);
    const idx = new Array<number>(shape.length).fill(0);
    for (let o = 0; o < out.length; o++) {
      let src = 0;
      for (let i = 0; i < shape.length; i++) src += idx[i] * strides[dims[i]];
      out[o] = this.data[src];
      for (let i = shape.length - 1; i >= 0; i--) {
        if (++idx[i] < shape[i]) break;
        idx[i] = 0;
      }
    }
    return new Strided(out, shape);
  }
}

describe('pixel shuffle', () => {
  it('scale 4 on an 8x8 grid (and scale 2 on 12x12) equals the literal view / permute sequence of Idefics3Connector.pixel_shuffle', () => {
    for (const [g, s, E] of [[8, 4, 3], [12, 2, 5], [12, 4, 2]] as const) {
      const seq = g * g;
      const x = Float64Array.from({ length: seq * E }, (_, i) => i);
      // bsz = 1; height = width = int(seq ** 0.5)
      const want = new Strided(x, [1, seq, E])
        .view(1, g, g, E)
        .view(1, g, g / s, E * s)
        .permute(0, 2, 1, 3)
        .view(1, g / s, g / s, E * s * s)
        .permute(0, 2, 1, 3)
        .view(1, seq / (s * s), E * s * s);
      const got = pixelShuffle(x, seq, E, s);
      expect(got).toEqual(want.data);
      // The documented index map: token R * (g/s) + C, feature (m*s + k)*E + d = x[s*R + m, s*C + k, d].
      const gs = g / s;
      for (let R = 0; R < gs; R++)
        for (let C = 0; C < gs; C++)
          for (let m = 0; m < s; m++)
            for (let k = 0; k < s; k++)
              for (let d = 0; d < E; d++) {
                expect(got[(R * gs + C) * E * s * s + (m * s + k) * E + d]).toBe(((s * R + m) * g + s * C + k) * E + d);
              }
    }
  });

  it('rejects grids HF cannot view', () => {
    expect(() => pixelShuffle(new Float64Array(12 * 2), 12, 2, 2)).toThrow(/square/);
    expect(() => pixelShuffle(new Float64Array(36 * 2), 36, 2, 4)).toThrow(/multiple/);
  });
});

describe('feature merges', () => {
  it("SmolVLM's block-wise inputs_merger equals Idefics3's sequential fill; it needs a multiple of image_seq_len", () => {
    const r = rng(5);
    const D = 3;
    const vocab = 20;
    const seq = 4;
    const embed = Float64Array.from({ length: vocab * D }, () => r());
    const feats = Float64Array.from({ length: 3 * seq * D }, () => r());
    const img = 19;
    const ids = [1, 2, ...Array(seq).fill(img), 3, ...Array(seq).fill(img), 4, 5, ...Array(seq).fill(img), 6, img];
    const P = ids.length - 1; // the last <image> is a generated token: a plain embedding
    const a = mergeImageFeatures(ids, P, img, embed, D, vocab, feats);
    const b = smolvlmMerge(ids, P, img, embed, D, vocab, feats, seq);
    expect(b.h).toEqual(a.h);
    expect(b.isImage).toEqual(a.isImage);
    expect(() => smolvlmMerge(ids.slice(0, 5), 5, img, embed, D, vocab, feats, seq)).toThrow(/multiple/);
  });
});

// ---------------------------------------------------------------------------------------------------------
// 3. Random checkpoints of both model types

interface RandomCase {
  spec: RandomIdefics3Spec;
  /** Tile side in pixels. */
  side: number;
}

const CASES: RandomCase[] = [
  {
    spec: {
      modelType: 'idefics3',
      seed: 3,
      vision: { hidden: 32, heads: 4, layers: 2, intermediate: 48, imageSize: 32, patchSize: 4 },
      text: { hidden: 48, intermediate: 96, layers: 2, heads: 6, kvHeads: 2, headDim: 12, vocab: 120, ropeTheta: 1000 },
      scaleFactor: 4,
    },
    side: 32, // 8x8 patches -> 4 tokens per tile
  },
  {
    spec: {
      modelType: 'smolvlm',
      seed: 4,
      vision: { hidden: 24, heads: 2, layers: 2, intermediate: 40, imageSize: 24, patchSize: 4 },
      text: { hidden: 32, intermediate: 64, layers: 2, heads: 4, kvHeads: 1, vocab: 100 },
      scaleFactor: 2,
    },
    side: 24, // 6x6 patches -> 9 tokens per tile
  },
];

/** The Idefics3Processor prompt for a rows x cols split + global tile, with plain ids 3..9 for text. */
function splitPrompt(tok: ReturnType<typeof idefics3TokenIds>, seq: number, rows: number, cols: number): number[] {
  const img = Array<number>(seq).fill(tok.image);
  const ids = [tok.imStart, 3, 4];
  for (let r = 1; r <= rows; r++) {
    for (let c = 1; c <= cols; c++) ids.push(tok.fakeTokenAroundImage, tok.rowCol[r - 1][c - 1], ...img);
    ids.push(5); // "\n"
  }
  ids.push(6, tok.fakeTokenAroundImage, tok.globalImg, ...img, tok.fakeTokenAroundImage, 7, 8, tok.endOfUtterance, 5, 9, 3);
  return ids;
}

describe('random Idefics3 / SmolVLM checkpoints through the reference', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'vlmscope-random-idefics3-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  for (const c of CASES) {
    const name = c.spec.modelType!;
    describe(name, () => {
      let ref: ReferenceIdefics3;
      let tiles: Idefics3Tile[];
      let ids: number[];
      let out: ReferenceIdefics3Output;
      const tok = idefics3TokenIds(c.spec);

      beforeAll(async () => {
        const dir = join(root, name);
        await writeRandomIdefics3(dir, c.spec);
        ref = await referenceIdefics3(dir);
        const r = rng(50);
        const S = c.side;
        // 2x2 tiles + the global one; tile 1 padded (valid 20x12 pixels), and an all-zero tile that is dropped.
        tiles = Array.from({ length: 5 }, () => ({ pixelValues: Float32Array.from({ length: 3 * S * S }, () => r() * 2 - 1) }));
        const mask = new Uint8Array(S * S);
        for (let y = 0; y < 20; y++) for (let x = 0; x < 12; x++) mask[y * S + x] = 1;
        for (let ch = 0; ch < 3; ch++) for (let i = 0; i < S * S; i++) if (!mask[i]) tiles[1].pixelValues[ch * S * S + i] = 0;
        tiles[1].mask = mask;
        tiles.splice(4, 0, { pixelValues: new Float32Array(3 * S * S) });
        ids = splitPrompt(tok, ref.imageSeqLen, 2, 2);
        out = ref.forward(ids, tiles);
      });

      it('the config and the processor files parse as written', async () => {
        expect(ref.cfg.modelType).toBe(name);
        expect(ref.cfg.scaleFactor).toBe(c.spec.scaleFactor);
        expect(ref.cfg.imageTokenId).toBe(tok.image);
        expect(ref.cfg.text.headDim).toBe(c.spec.text.headDim ?? c.spec.text.hidden / c.spec.text.heads);
        expect(ref.cfg.tied).toBe(false);
        const files = randomIdefics3(c.spec);
        expect(JSON.parse(files['processor_config.json']).image_seq_len).toBe(ref.imageSeqLen);
        const pp = JSON.parse(files['preprocessor_config.json']);
        expect(pp.max_image_size.longest_edge).toBe(c.spec.vision.imageSize);
        expect(pp.size.longest_edge).toBe(2 * c.spec.vision.imageSize);
        expect(pp.resample).toBe(1);
        expect(pp.do_image_splitting).toBe(true);
      });

      it('5 tiles (one padded, an all-zero one dropped): finite logits, features in the <image> rows in order', () => {
        expect(out.keptTiles).toEqual([0, 1, 2, 3, 5]);
        expect(out.logits.length).toBe(ids.length * c.spec.text.vocab);
        expect(out.logits.every(Number.isFinite)).toBe(true);
        const D = c.spec.text.hidden;
        const rows = ids.flatMap((id, r) => (id === tok.image ? [r] : []));
        expect(rows.length).toBe(5 * ref.imageSeqLen);
        rows.forEach((r, k) => expect(out.textStates[0].subarray(r * D, (r + 1) * D)).toEqual(out.imageFeatures.subarray(k * D, (k + 1) * D)));
        expect(out.positionIds[1]).toEqual(hfPositionIds(out.patchMasks[1], c.side / 4, c.side / 4, c.side / 4));
        expect(ref.forward(ids, tiles, { merge: name === 'smolvlm' ? 'idefics3' : 'smolvlm' }).logits).toEqual(out.logits);
      });

      it("the norms' epsilons matter at these weight scales", async () => {
        const dir = join(root, `${name}-eps`);
        await writeRandomIdefics3(dir, c.spec);
        const raw = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
        raw.text_config.rms_norm_eps = 1e-6;
        raw.vision_config.layer_norm_eps = 1e-7;
        await writeFile(join(dir, 'config.json'), JSON.stringify(raw));
        const o = (await referenceIdefics3(dir)).forward(ids, tiles);
        let worst = 0;
        for (let i = 0; i < o.logits.length; i++) worst = Math.max(worst, Math.abs(o.logits[i] - out.logits[i]));
        expect(worst).toBeGreaterThan(1e-2);
        let vWorst = 0;
        const a = out.visionLast[0];
        const b = o.visionLast[0];
        for (let i = 0; i < a.length; i++) vWorst = Math.max(vWorst, Math.abs(a[i] - b[i]));
        expect(vWorst).toBeGreaterThan(1e-3);
      });

      it('tied embeddings, bare Idefics3Model names and F32 storage load and run', async () => {
        for (const [k, extra] of [['tied', { tied: true }], ['bare', { bareNames: true }], ['f32', { dtype: 'F32' }]] as const) {
          const d = join(root, `${name}-${k}`);
          await writeRandomIdefics3(d, { ...c.spec, ...extra });
          const r = await referenceIdefics3(d);
          expect(r.cfg.tied).toBe(k === 'tied');
          const o = r.forward(ids, tiles);
          expect(o.logits.every(Number.isFinite)).toBe(true);
          if (k === 'bare') expect(o.logits).toEqual(out.logits);
          if (k === 'f32') expectClose(o.imageFeatures, out.imageFeatures, 1e-3, 0, 'f32 image features vs bf16');
        }
      });

      it('greedy decoding runs with vision and text interventions; steer "last" moves z on the last row only', () => {
        const { headDim: vhd } = ref.cfg.vision;
        const hd = ref.cfg.text.headDim;
        const base = {
          head_scale: [{ tower: 'vision', layer: 0, head: 1, scale: 0 }],
          image_temperature: { alpha: 0.5, queries: 'all' },
          mean_ablate: [{ tower: 'vision', layer: 1, head: 0, mean: Array(vhd).fill(0.1) }],
        };
        const steer = [{ tower: 'text', layer: 1, head: 0, alpha: 1, sigma: 0.5, direction: Array(hd).fill(1), queries: 'last' }];
        const spec = parseInterventions({ ...base, steer }, dimsOf(ref));
        const gr = ref.greedy(ids, tiles, 3, spec);
        expect(gr.tokens.length).toBe(3);
        expect(gr.margins.every((x) => x >= 0)).toBe(true);
        const o = ref.forward(ids, tiles, { interventions: spec });
        const o0 = ref.forward(ids, tiles, { interventions: parseInterventions(base, dimsOf(ref)) });
        expect(o.imageFeatures).toEqual(o0.imageFeatures);
        expect(o0.imageFeatures).not.toEqual(out.imageFeatures);
        const W = ref.cfg.text.heads * hd;
        const L = ids.length;
        const zRow = (x: ReferenceIdefics3Output, r: number) => Array.from(x.z.subarray((L + r) * W, (L + r) * W + hd)); // layer 1, head 0
        for (let r = 0; r < L - 1; r++) expect(zRow(o, r)).toEqual(zRow(o0, r));
        expectClose(zRow(o, L - 1), zRow(o0, L - 1).map((x) => x + 0.5), 1e-12, 0, 'steered z');
      });
    });
  }
});
