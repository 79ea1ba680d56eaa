// Idefics3 / SmolVLM through loadModel against the independent float64 CPU reference
// (tests/helpers/reference-idefics3.ts, held to the tiny-smolvlm golden by tests/idefics3-reference.test.ts) on
// random checkpoints (src/models/random-idefics3.ts) across the config space: tile layouts 1x1 (one tile, no
// global), 2x3 and 3x2 (+ the global tile) made by the engine's own processor from images of several aspect ratios;
// two images of different layouts in one prompt with text between and after; scale_factor 2 and 4; GQA 4/2, 6/2,
// 4/1, 4/4; bf16 / f16 / f32; model_type idefics3 and smolvlm; tied embeddings; bare (Idefics3Model) tensor names;
// padded tiles built by hand with a pixel attention mask (real patches first, NaViT position ids, padded keys
// masked), next to a full tile in the same run; head_scale on both towers (the vision one in every tile),
// image_temperature (layer / head subsets, scopes all / last / generated) on the <image> columns only, mean_ablate
// and steer on a text head. Compared: all logits, image features and the embedding rows they fill, a text pattern,
// z at the last position, vision patterns per tile (tile field, rows sum to 1, padded keys 0), per-tile vision
// residuals, greedy tokens. Also the engine's index maps (NaViT position ids, pixel-shuffle gather) against the
// reference's for every valid rectangle of several grids.

import { beforeAll, afterAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/models/load.js';
import type { PatternCaptured, ResidualCaptured, RunResult, TiledImage } from '../src/models/model.js';
import type { VlmModel } from '../src/models/vlm.js';
import { type Idefics3TokenIds, type RandomIdefics3Spec, idefics3TokenIds, writeRandomIdefics3 } from '../src/models/random-idefics3.js';
import { idefics3ImagePromptString } from '../src/models/idefics3/image-processor.js';
import { navitPositionIds as engineNavit, pixelShuffleSource } from '../src/models/idefics3/vision.js';
import { type InterventionSpec, EMPTY_INTERVENTIONS, parseCapture, parseInterventions } from '../src/spec/spec.js';
import type { RgbImage } from '../src/io/image.js';
import { expectClose, gpuContext, maxAbsDiff, rng } from './helpers/gpu.js';
import {
  type Idefics3Tile,
  type ReferenceIdefics3,
  type ReferenceIdefics3Output,
  navitPositionIds as referenceNavit,
  parseIdefics3RefConfig,
  pixelShuffle,
  referenceIdefics3,
} from './helpers/reference-idefics3.js';
import { activation, llamaDecoder, readFloat64Checkpoint, ropeInvFreq, rotate } from './helpers/reference-math.js';
import {
  type InterventionCase,
  NEW_TOKENS,
  TOL,
  WRONG_ROWS,
  WRONG_STEER,
  closeWithReport,
  compareTokens,
  engineRun,
  interventionTests,
  lastRowZ,
  promptIds,
  stagesRun,
  tempDirs,
  textStageLines,
  vec,
} from './helpers/compare.js';

/** Per-tile vision hidden states (values ~1e-2..1): float32 against float64. */
const TOL_VISION = 1e-4;

const tempDir = tempDirs('vlmscope-idefics3-cfg-');

// ---------------------------------------------------------------------------------------------------------
// 1. Index maps: the engine's NaViT position ids and pixel-shuffle gather against the reference's

describe('Idefics3 index maps: engine vs reference', () => {
  it('navitPositionIds(nbH, nbW, side) equals the reference for every nbH, nbW <= side (float32 arange + bucketize right=True)', () => {
    // 7: f32(1/49) * 7 < f32(1/7) ties; 26 / 27: Idefics3's 364/14 and SigLIP-384's 384/14; 32: SmolVLM's 512/16.
    for (const side of [1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 13, 14, 16, 20, 24, 26, 27, 28, 32]) {
      const bad: string[] = [];
      for (let nbH = 1; nbH <= side; nbH++)
        for (let nbW = 1; nbW <= side; nbW++) {
          const mask = new Uint8Array(side * side);
          for (let r = 0; r < nbH; r++) mask.fill(1, r * side, r * side + nbW);
          const want = referenceNavit(mask, side, side, side).filter((_, i) => mask[i]);
          const got = Array.from(engineNavit(nbH, nbW, side));
          if (got.join() !== want.join()) bad.push(`${nbH}x${nbW}`);
        }
      expect(bad, `side ${side}: valid rectangles whose position ids differ`).toEqual([]);
      // A full tile is the identity.
      expect(Array.from(engineNavit(side, side, side))).toEqual([...Array(side * side).keys()]);
    }
  });

  it('pixelShuffleSource(g, s) is the reference pixel shuffle as a row gather (s = 2, 4)', () => {
    const E = 3;
    for (const [g, s] of [[2, 2], [4, 2], [6, 2], [8, 2], [14, 2], [16, 2], [4, 4], [8, 4], [12, 4], [16, 4], [32, 4]] as const) {
      const n = g * g;
      const x = Float64Array.from({ length: n * E }, (_, i) => Math.floor(i / E) * 10 + (i % E));
      const want = pixelShuffle(x, n, E, s);
      const src = pixelShuffleSource(g, s);
      expect(src.length).toBe(n);
      const got = new Float64Array(n * E);
      src.forEach((r, j) => got.set(x.subarray(r * E, (r + 1) * E), j * E));
      expect(Array.from(got), `g ${g}, s ${s}`).toEqual(Array.from(want));
    }
  });
});

// ---------------------------------------------------------------------------------------------------------
// 2. Generated checkpoints: the engine against the reference

/** A random RGB image (the engine's processor resizes and splits it). */
function randomRgb(height: number, width: number, seed: number): RgbImage {
  const r = rng(seed);
  const data = new Uint8Array(height * width * 3);
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(r() * 256);
  return { width, height, data };
}

/**
 * One padded tile built by hand (HF's batch padding: real pixels top-left, mask 1 on them): `h` x `w` real pixels
 * of random values in an S x S tile; the padding is 0.0 as HF pads, or random junk (`junk`) that must reach only
 * the padded patches' own rows.
 */
function paddedTile(S: number, h: number, w: number, seed: number, junk = false): TiledImage {
  const r = rng(seed);
  const pixelValues = new Float32Array(3 * S * S);
  const mask = new Uint8Array(S * S);
  for (let y = 0; y < S; y++)
    for (let x = 0; x < S; x++) {
      const real = y < h && x < w;
      if (real) mask[y * S + x] = 1;
      for (let c = 0; c < 3; c++) pixelValues[(c * S + y) * S + x] = real || junk ? Math.fround(r() * 2 - 1) : 0;
    }
  return { pixelValues, tiles: 1, rows: 0, cols: 0, tileHeight: S, tileWidth: S, pixelAttentionMask: mask };
}

/** The reference's tiles of a run's images, in order (all tiles of image 0, then image 1, ...). */
function referenceTiles(images: TiledImage[]): Idefics3Tile[] {
  return images.flatMap((im) => {
    const S = im.tileHeight;
    return Array.from({ length: im.tiles }, (_, t) => ({
      pixelValues: im.pixelValues.subarray(t * 3 * S * S, (t + 1) * 3 * S * S),
      mask: im.pixelAttentionMask?.subarray(t * S * S, (t + 1) * S * S),
      height: S,
      width: S,
    }));
  });
}

/** Token ids of one image's prompt string (processing_idefics3.py's layout), each special one id, "\n" id 10. */
function imagePromptIds(tok: Idefics3TokenIds, rows: number, cols: number, seqLen: number): number[] {
  const specials: Record<string, number> = { '<fake_token_around_image>': tok.fakeTokenAroundImage, '<global-img>': tok.globalImg, '<image>': tok.image, '\n': 10 };
  for (let r = 1; r <= 6; r++) for (let c = 1; c <= 6; c++) specials[`<row_${r}_col_${c}>`] = tok.rowCol[r - 1][c - 1];
  return (idefics3ImagePromptString(rows, cols, seqLen).match(/<[^>]+>|\n/g) ?? []).map((x) => {
    const id = specials[x];
    if (id === undefined) throw new Error(`no id for ${JSON.stringify(x)}`);
    return id;
  });
}

/**
 * [<|im_start|>, text x3, image 0's layout ids, text x2, image 1's ..., text x4]; text ids from 3 up to the
 * specials at the top of the vocabulary (vocab - 50).
 */
const idefics3PromptIds = (tok: Idefics3TokenIds, vocab: number, layouts: TiledImage[], seqLen: number, seed: number): number[] =>
  promptIds(seed, (u) => 3 + Math.floor(u * (vocab - 53)), [tok.imStart], 3, layouts.map((im) => imagePromptIds(tok, im.rows, im.cols, seqLen)));

type ImageSource = { rgb: [number, number] } | { padded: [number, number]; junk?: boolean };

interface Case {
  name: string;
  spec: RandomIdefics3Spec;
  /** Images in prompt order: random RGB [height, width] through the engine's processor, or a hand-made padded tile [real height, real width]. */
  images: ImageSource[];
  /** [rows, cols] of each image's tile layout (0, 0: one tile, no global). */
  layouts: [number, number][];
  /** Per tile of the run: its real patch rectangle [nbH, nbW] where it is padded. */
  padded?: Record<number, [number, number]>;
  interventions?: Record<string, InterventionCase>;
}

const vis = (o: Partial<RandomIdefics3Spec['vision']> = {}): RandomIdefics3Spec['vision'] => ({ hidden: 32, heads: 4, layers: 2, intermediate: 48, imageSize: 28, patchSize: 7, ...o });
const text = (o: Partial<RandomIdefics3Spec['text']> = {}): RandomIdefics3Spec['text'] => ({ hidden: 64, intermediate: 96, layers: 2, heads: 4, kvHeads: 2, vocab: 128, ropeTheta: 1000, ...o });

const CASES: Case[] = [
  {
    name: '(a) idefics3, GQA 4/2, bf16, 1x1: an image that fits one 28-px tile (no split, no global tile)',
    spec: { modelType: 'idefics3', seed: 201, dtype: 'BF16', vision: vis(), text: text(), longestEdge: 28 },
    images: [{ rgb: [40, 30] }],
    layouts: [[0, 0]],
  },
  {
    name: '(b) smolvlm, GQA 6/2, f16, 2x3 tiles + global (wide image, 28-px tiles of 7-px patches)',
    spec: { modelType: 'smolvlm', seed: 202, dtype: 'F16', vision: vis({ hidden: 24, heads: 2, layers: 3 }), text: text({ hidden: 48, heads: 6, kvHeads: 2, layers: 3 }), longestEdge: 84 },
    images: [{ rgb: [60, 90] }],
    layouts: [[2, 3]],
    // Text heads have 8 dims; heads 0-2 share KV head 0, heads 3-5 KV head 1.
    interventions: {
      head_scale_text_and_vision: {
        json: {
          head_scale: [
            { tower: 'text', layer: 0, head: 1, scale: 3 },
            { tower: 'text', layer: 2, head: 5, scale: 0 },
            { tower: 'vision', layer: 1, head: 0, scale: 0 },
          ],
        },
      },
      temp_all_layers01_heads04: { json: { image_temperature: { alpha: 5, queries: 'all', layers: [0, 1], heads: [0, 4] } } },
    },
  },
  {
    name: '(c) idefics3, GQA 4/1, f32, tied embeddings, bare names, 3x2 tiles + global (tall image, 56-px tiles of 14-px patches)',
    spec: { modelType: 'idefics3', seed: 203, dtype: 'F32', tied: true, bareNames: true, vision: vis({ imageSize: 56, patchSize: 14 }), text: text({ kvHeads: 1 }), longestEdge: 168 },
    images: [{ rgb: [90, 60] }],
    layouts: [[3, 2]],
  },
  {
    name: '(d) smolvlm, MHA 4/4, bf16, scale_factor 4 (8x8 patches -> 4 tokens a tile), two images (1x2 and 2x2) in one prompt',
    spec: { modelType: 'smolvlm', seed: 204, dtype: 'BF16', scaleFactor: 4, vision: vis({ imageSize: 56, patchSize: 7 }), text: text({ kvHeads: 4 }), longestEdge: 112 },
    images: [{ rgb: [40, 100] }, { rgb: [100, 90] }],
    layouts: [[1, 2], [2, 2]],
  },
  {
    // 10 patches a side: the float32 position bucketing has ties there (5 of 10 rows, and the full tile).
    name: '(e) idefics3, GQA 4/2, f16, 70-px tiles of 7-px patches, padded tiles: 35x49 px real (patch-aligned, zero padding), a full tile, 13x64 px real (partial patches, junk padding)',
    spec: { modelType: 'idefics3', seed: 205, dtype: 'F16', vision: vis({ imageSize: 70, patchSize: 7 }), text: text(), longestEdge: 70 },
    images: [{ padded: [35, 49] }, { rgb: [50, 40] }, { padded: [13, 64], junk: true }],
    layouts: [[0, 0], [0, 0], [0, 0]],
    padded: { 0: [5, 7], 2: [2, 10] },
  },
];

const INTERVENTION_CASE: Case = {
  name: '(f) interventions, idefics3, GQA 4/2, 3 text layers, bf16, 2x2 tiles + global',
  spec: { modelType: 'idefics3', seed: 206, dtype: 'BF16', vision: vis(), text: text({ layers: 3 }), longestEdge: 56 },
  images: [{ rgb: [56, 50] }],
  layouts: [[2, 2]],
  // Text heads have 16 dims.
  interventions: {
    head_scale_text_and_vision: {
      json: {
        head_scale: [
          { tower: 'text', layer: 0, head: 1, scale: 0 },
          { tower: 'text', layer: 2, head: 3, scale: 2.5 },
          { tower: 'vision', layer: 0, head: 1, scale: 0 },
          { tower: 'vision', layer: 1, head: 3, scale: 1.7 },
        ],
      },
    },
    temp_all_10: { json: { image_temperature: { alpha: 10, queries: 'all' } }, wrong: WRONG_ROWS.all },
    temp_all_layers02_heads13: { json: { image_temperature: { alpha: 4, queries: 'all', layers: [0, 2], heads: [1, 3] } } },
    temp_last_10: {
      json: { image_temperature: { alpha: 10, queries: 'last' } },
      wrong: { 'decode rows scaled too': (P, L) => [P - 1, L], 'unscaled (scope ignored)': () => [0, 0] },
    },
    temp_last_layer1_heads12: { json: { image_temperature: { alpha: 12, queries: 'last', layers: [1], heads: [1, 2] } } },
    temp_generated_10: { json: { image_temperature: { alpha: 10, queries: 'generated' } }, wrong: WRONG_ROWS.generated },
    temp_generated_layers12_heads02: { json: { image_temperature: { alpha: 0.2, queries: 'generated', layers: [1, 2], heads: [0, 2] } } },
    mean_ablate_text_head: { json: { mean_ablate: [{ tower: 'text', layer: 1, head: 2, mean: vec(16, 41, 2) }] } },
    steer_text_head_all: { json: { steer: [{ tower: 'text', layer: 1, head: 0, alpha: 3, sigma: 0.7, direction: vec(16, 42) }] } },
    steer_last: {
      json: { steer: [{ tower: 'text', layer: 1, head: 2, alpha: 4, sigma: 1, direction: vec(16, 43), queries: 'last' }] },
      wrongSteer: WRONG_STEER.last,
    },
    steer_generated: {
      json: { steer: [{ tower: 'text', layer: 1, head: 3, alpha: 6, sigma: 1, direction: vec(16, 44), queries: 'generated' }] },
      wrongSteer: WRONG_STEER.generated,
    },
    mean_ablate_steer_scale_temp: {
      json: {
        mean_ablate: [{ tower: 'text', layer: 0, head: 2, mean: vec(16, 45) }],
        steer: [{ tower: 'text', layer: 0, head: 2, alpha: 2, sigma: 0.5, direction: vec(16, 46) }],
        head_scale: [{ tower: 'text', layer: 0, head: 2, scale: 0.5 }, { tower: 'vision', layer: 1, head: 0, scale: 0 }],
        image_temperature: { alpha: 3, queries: 'last', heads: [0, 1] },
      },
    },
  },
};

/**
 * Where the engine first departs from the reference: every vision hidden state per tile (raster order), the image
 * features (prompt order), every decoder hidden state and the logits, from an engine run that captures them.
 */
async function divergenceReport(model: VlmModel, ref: ReferenceIdefics3, want: ReferenceIdefics3Output, ids: number[], images: TiledImage[], interventions: InterventionSpec): Promise<string> {
  const r = await stagesRun(model, { ids, pixelValues: images, interventions });
  const lines: string[] = [];
  const E = ref.cfg.vision.hidden;
  const D = ref.cfg.text.hidden;
  for (let layer = 0; layer <= ref.cfg.vision.layers; layer++) {
    r.residual
      .filter((x) => x.tower === 'vision' && x.layer === layer)
      .forEach((x, k) => {
        const m = maxAbsDiff(x.data, want.visionStates[layer][k]);
        lines.push(`vision hidden_state ${layer}, image ${x.image} tile ${x.tile}: max |diff| ${m.max.toExponential(2)} at patch ${Math.floor(m.at / E)} col ${m.at % E}`);
      });
  }
  if (r.imageFeatures) {
    const m = maxAbsDiff(r.imageFeatures.data, want.imageFeatures);
    lines.push(`image features: max |diff| ${m.max.toExponential(2)} at image token ${Math.floor(m.at / D)} (prompt order)`);
  }
  lines.push(...textStageLines(r, want, D, ref.cfg.text.vocab));
  return lines.join('\n');
}

for (const c of [...CASES, INTERVENTION_CASE]) {
  describe(`Idefics3 engine vs float64 reference: ${c.name}`, () => {
    let dir: string;
    let model: VlmModel;
    let ref: ReferenceIdefics3;
    let ids: number[];
    let images: TiledImage[];
    let tiles: Idefics3Tile[];
    let run: RunResult;
    let want: ReferenceIdefics3Output;
    const tok = idefics3TokenIds(c.spec);
    const vLayers = c.spec.vision.layers;
    const visionLayers = [0, vLayers - 1];

    const close = closeWithReport<ReferenceIdefics3Output>((spec, refOut) => divergenceReport(model, ref, refOut, ids, images, spec));

    beforeAll(async () => {
      dir = await tempDir();
      await writeRandomIdefics3(dir, c.spec);
      const ctx = await gpuContext();
      model = await loadModel(ctx, dir);
      ref = await referenceIdefics3(dir);
      const S = c.spec.vision.imageSize;
      images = c.images.map((src, i) => {
        const seed = 700 + 13 * i + (c.spec.seed ?? 0);
        return 'rgb' in src ? (model.preprocess(randomRgb(src.rgb[0], src.rgb[1], seed)) as TiledImage) : paddedTile(S, src.padded[0], src.padded[1], seed, src.junk);
      });
      tiles = referenceTiles(images);
      ids = idefics3PromptIds(tok, c.spec.text.vocab, images, ref.imageSeqLen, c.spec.seed ?? 1);
      run = await engineRun(model, {
        ids,
        pixelValues: images,
        capture: parseCapture(
          {
            logits: 'all',
            pattern: [{ tower: 'text', layer: 1 }, ...visionLayers.map((layer) => ({ tower: 'vision', layer }))],
            z: { positions: 'last' },
            residual: [{ tower: 'text', layer: 0 }, ...Array.from({ length: vLayers + 1 }, (_, layer) => ({ tower: 'vision', layer }))],
            image_features: true,
          },
          model.dims,
        ),
        maxNewTokens: NEW_TOKENS,
      });
      want = ref.forward(ids, tiles);
    });

    afterAll(() => model?.destroy());

    it('the processor makes the tile layouts of the case; token counts, padding and config agree with the reference', () => {
      expect(images.map((im) => [im.rows, im.cols])).toEqual(c.layouts);
      expect(images.map((im) => im.tiles)).toEqual(c.layouts.map(([r, cc]) => (r === 0 ? 1 : r * cc + 1)));
      const side = c.spec.vision.imageSize / c.spec.vision.patchSize;
      const s = c.spec.scaleFactor ?? 2;
      expect(ref.imageSeqLen).toBe((side / s) ** 2);
      expect(model.imageTokenCounts(images)).toEqual(images.map((im) => im.tiles * ref.imageSeqLen));
      expect(ids.filter((id) => id === tok.image).length).toBe(tiles.length * ref.imageSeqLen);
      expect(want.keptTiles).toEqual([...tiles.keys()]);
      // Padded tiles are what the case says (the reference's patch masks); the others are full.
      want.patchMasks.forEach((m, t) => {
        const rect = c.padded?.[t] ?? [side, side];
        const expected = Array.from({ length: side * side }, (_, p) => (Math.floor(p / side) < rect[0] && p % side < rect[1] ? 1 : 0));
        expect(Array.from(m), `tile ${t} patch mask`).toEqual(expected);
      });
      expect(ref.cfg.modelType).toBe(c.spec.modelType);
      expect(ref.cfg.tied).toBe(!!c.spec.tied);
      expect(ref.cfg.scaleFactor).toBe(s);
      expect(model.dims).toEqual({
        text: { layers: ref.cfg.text.layers, heads: ref.cfg.text.heads, headDim: ref.cfg.text.headDim },
        vision: { layers: ref.cfg.vision.layers, heads: ref.cfg.vision.heads, headDim: ref.cfg.vision.headDim },
      });
    });

    it('logits are O(0.1..10) (the test has teeth)', () => {
      const m = want.logits.reduce((a, b) => Math.max(a, Math.abs(b)), 0);
      // Tied: lm_head is the small embedding table.
      expect(m).toBeGreaterThan(c.spec.tied ? 0.05 : 1);
      expect(m).toBeLessThan(100);
    });

    it('image features within 1e-3, in order in the <image> rows of the embeddings', async () => {
      const D = ref.cfg.text.hidden;
      expect(run.imageFeatures!.shape).toEqual([tiles.length * ref.imageSeqLen, D]);
      await close(run.imageFeatures!.data, want.imageFeatures, TOL.features, 'image features', EMPTY_INTERVENTIONS, want);
      const emb = run.residual.find((r) => r.tower === 'text' && r.layer === 0)!;
      await close(emb.data, want.textStates[0], TOL.features, 'text hidden_state 0 (embeddings with the features merged)', EMPTY_INTERVENTIONS, want);
      const imageRows = ids.flatMap((id, r) => (id === tok.image ? [r] : []));
      imageRows.forEach((r, k) => expect(emb.data.subarray(r * D, (r + 1) * D), `image token ${k} (row ${r})`).toEqual(run.imageFeatures!.data.subarray(k * D, (k + 1) * D)));
    });

    it('all logits within 1e-3', async () => {
      expect(run.logits!.shape).toEqual([ids.length, ref.cfg.text.vocab]);
      await close(run.logits!.data, want.logits, TOL.logits, 'logits', EMPTY_INTERVENTIONS, want);
    });

    it('text layer-1 attention pattern within 1e-4 and z at the last position within 1e-3', async () => {
      const p = run.pattern.find((x) => x.tower === 'text')!;
      expect(p.shape).toEqual([ref.cfg.text.heads, ids.length, ids.length]);
      await close(p.data, want.patterns.get(1)!, TOL.pattern, 'text layer-1 pattern', EMPTY_INTERVENTIONS, want);
      expect(run.z!.shape).toEqual([ref.cfg.text.layers, ref.cfg.text.heads, ref.cfg.text.headDim]);
      await close(run.z!.data, lastRowZ(ref.cfg.text, want, ids.length), TOL.z, 'z at the last position', EMPTY_INTERVENTIONS, want);
    });

    it(`vision patterns of blocks ${visionLayers.join(', ')} per tile (raster order): tile fields, rows sum to 1, padded keys 0, within 1e-4`, async () => {
      const v = ref.cfg.vision;
      const T = v.patchesPerSide ** 2;
      const where = images.flatMap((im, image) => Array.from({ length: im.tiles }, (_, tile) => [image, tile]));
      for (const layer of visionLayers) {
        const ps = run.pattern.filter((x): x is PatternCaptured => x.tower === 'vision' && x.layer === layer);
        expect(ps.map((p) => [p.image, p.tile]), `vision block ${layer}: one capture per tile, in order`).toEqual(where);
        for (let k = 0; k < ps.length; k++) {
          const p = ps[k];
          expect(p.shape).toEqual([v.heads, T, T]);
          const mask = want.patchMasks[k];
          let worstSum = 0;
          let paddedNonZero = 0;
          for (let row = 0; row < v.heads * T; row++) {
            const r = p.data.subarray(row * T, (row + 1) * T);
            worstSum = Math.max(worstSum, Math.abs(r.reduce((a, b) => a + b, 0) - 1));
            for (let j = 0; j < T; j++) if (!mask[j] && r[j] !== 0) paddedNonZero++;
          }
          expect(worstSum, `block ${layer} tile ${k}: rows sum to 1`).toBeLessThan(1e-5);
          expect(paddedNonZero, `block ${layer} tile ${k}: nonzero probabilities on padded keys`).toBe(0);
          await close(p.data, want.visionPatterns.get(layer)![k], TOL.pattern, `vision block ${layer} pattern, image ${p.image} tile ${p.tile}`, EMPTY_INTERVENTIONS, want);
        }
      }
    });

    it(`vision hidden states 0..${vLayers} per tile (raster order, padded patches included) within ${TOL_VISION}`, async () => {
      const T = ref.cfg.vision.patchesPerSide ** 2;
      for (let layer = 0; layer <= vLayers; layer++) {
        const rs = run.residual.filter((x): x is ResidualCaptured => x.tower === 'vision' && x.layer === layer);
        expect(rs.map((x) => x.tile)).toEqual(images.flatMap((im) => [...Array(im.tiles).keys()]));
        expect(rs.map((x) => x.image)).toEqual(images.flatMap((im, i) => new Array<number>(im.tiles).fill(i)));
        for (let k = 0; k < rs.length; k++) {
          expect(rs[k].shape).toEqual([T, ref.cfg.vision.hidden]);
          await close(rs[k].data, want.visionStates[layer][k], TOL_VISION, `vision hidden_state ${layer}, image ${rs[k].image} tile ${rs[k].tile}`, EMPTY_INTERVENTIONS, want);
        }
      }
    });

    it(`${NEW_TOKENS} greedy tokens (KV cache) equal the no-cache reference`, () => {
      compareTokens(run.tokens, ref.greedy(ids, tiles, NEW_TOKENS), 'plain greedy');
    });

    if (c.interventions?.head_scale_text_and_vision) {
      it('vision head_scale acts in every tile: the engine features under it equal the reference, and every tile changes', async () => {
        const spec = parseInterventions(c.interventions!.head_scale_text_and_vision.json, model.dims);
        const r = await engineRun(model, { ids, pixelValues: images, interventions: spec, capture: parseCapture({ image_features: true }, model.dims) });
        const o = ref.vision(tiles, spec);
        expectClose(r.imageFeatures!.data, o.imageFeatures, TOL.features, 0, 'image features under the vision head_scale');
        const per = ref.imageSeqLen * ref.cfg.text.hidden;
        for (let k = 0; k < tiles.length; k++) {
          const d = maxAbsDiff(o.imageFeatures.subarray(k * per, (k + 1) * per), want.imageFeatures.subarray(k * per, (k + 1) * per)).max;
          expect(d, `tile ${k}: the vision head_scale changes its features`).toBeGreaterThan(1e-4);
          const e = maxAbsDiff(r.imageFeatures!.data.subarray(k * per, (k + 1) * per), run.imageFeatures!.data.subarray(k * per, (k + 1) * per)).max;
          expect(e, `tile ${k}: the engine's features change too`).toBeGreaterThan(d / 2);
        }
      });
    }

    if (c === INTERVENTION_CASE) {
      it('image_temperature scales the <image> columns only: scaling the wrapper tokens too would give other logits', async () => {
        // The reference's decoder on its own merged embeddings, with the wrapper tokens (<fake_token_around_image>,
        // <row_r_col_c>, <global-img>) flagged as image keys too.
        const ck = await readFloat64Checkpoint(dir, parseIdefics3RefConfig);
        const tc = ref.cfg.text;
        const T = (s: string) => ck.get(['model.text_model.', 'text_model.'], s)!;
        const invFreq = ropeInvFreq(tc.headDim, tc.ropeTheta);
        const wrappers = new Set([tok.fakeTokenAroundImage, tok.globalImg, ...tok.rowCol.flat()]);
        const spec = parseInterventions(c.interventions!.temp_all_10.json, model.dims);
        const decode = (isImage: Uint8Array) =>
          llamaDecoder({
            dims: tc,
            weight: T,
            bias: () => null,
            lmHead: ref.cfg.tied ? T('embed_tokens.weight') : ck.weights.get('lm_head.weight')!,
            act: activation(tc.act),
            rope: (x, heads) => rotate(x, x.length / (heads * tc.headDim), heads, tc.headDim, (r, j) => r * invFreq[j]),
            h: want.textStates[0],
            isImage,
            interventions: spec,
          }).logits;
        const right = decode(Uint8Array.from(ids, (id) => (id === tok.image ? 1 : 0)));
        expect(maxAbsDiff(right, ref.forward(ids, tiles, { interventions: spec }).logits).max, 'the rebuilt decoder is the reference').toBeLessThan(1e-12);
        const wrong = decode(Uint8Array.from(ids, (id) => (id === tok.image || wrappers.has(id) ? 1 : 0)));
        expect(maxAbsDiff(wrong, right).max, 'wrapper tokens as image keys change the logits').toBeGreaterThan(10 * TOL.logits);
        const r = await engineRun(model, { ids, pixelValues: images, interventions: spec, capture: parseCapture({ logits: 'all' }, model.dims) });
        expectClose(r.logits!.data, right, TOL.logits, 0, 'engine logits under image_temperature');
      });
    }

    interventionTests(c.interventions, () => ({
      caseName: c.name, model, ids, pixelValues: images, text: ref.cfg.text, want, close,
      forward: (seq, opts) => ref.forward(seq, tiles, opts),
      greedy: (n, spec) => ref.greedy(ids, tiles, n, spec),
    }));
  });
}
