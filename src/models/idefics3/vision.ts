// The Idefics3 / SmolVLM vision side (transformers modeling_idefics3.py Idefics3VisionTransformer + Idefics3Connector):
// SigLIP patch conv with bias (im2col + matmul), NaViT-style bucketed position ids (identity on full tiles), the
// shared ViT blocks (LayerNorm, gelu tanh), post_layernorm, then the connector's pixel shuffle (scale_factor s: s x s
// neighbouring patches concatenated row offset, then column offset, then channel) and its bias-free projection.
//
// All tiles of all images run as one sequence; each query row sees its own tile's keys (a per-row key range), and
// attention patterns are captured per tile ([heads, rows, tile] relative to the range). The pixel shuffle is one row
// gather (the embedding kernel with an index map: [tokens, s^2 * E] is [tokens * s^2, E] row-major). A padded tile
// (pixel_attention_mask) keeps its real patches first so that they are a key range, and the map undoes that order.

import type { GpuContext, Recorder } from '../../gpu/context.js';
import type { Tensor, Weight } from '../../gpu/tensor.js';
import { rows, type RowView } from '../../../kernels/common.js';
import { matmul } from '../../../kernels/matmul.js';
import { layerNorm } from '../../../kernels/norm.js';
import { embed } from '../../../kernels/embed.js';
import { im2col } from '../../../kernels/patch.js';
import { type CaptureSpec, type InterventionSpec, type TowerDims, SpecError, resolvePositions } from '../../spec/spec.js';
import { SequenceCaptures } from '../capture-read.js';
import { type ImageInput, type TiledImage, isTiledImage } from '../model.js';
import type { VisionCaptureReader, VisionEncoder, VisionPlan } from '../vlm.js';
import type { VitEncoder } from '../vit.js';
import type { Idefics3Config } from './config.js';

export interface Idefics3VisionWeights {
  patchWeight: Weight;
  patchBias: Tensor;
  positionEmbedding: Weight;
  postNormW: Tensor;
  postNormB: Tensor;
  projection: Weight;
}

/**
 * HF Idefics3VisionEmbeddings position ids of one tile with nbH x nbW real patches: boundaries = arange(1/side, 1,
 * 1/side), fractional coords = arange(0, 1 - 1e-6, 1/nb) with 1/nb a float32 tensor, bucketize(right=True) = the
 * number of boundaries <= x. torch.arange in float32 on the CPU (where HF builds both; its scalar loop) makes
 * element i as float32(start + step * i) computed in double, its length ceil((end - start) / step); accumulating the
 * boundaries in float32 instead drifts by an ulp and moves whole buckets (side 26, Idefics3's 364/14: a full tile
 * would not be the identity).
 */
export function navitPositionIds(nbH: number, nbW: number, side: number): Int32Array {
  const arangeF32 = (start: number, end: number, step: number, n = Math.max(0, Math.ceil((end - start) / step))) =>
    Array.from({ length: n }, (_, i) => Math.fround(start + step * i));
  const boundaries = arangeF32(1 / side, 1.0, 1 / side);
  const bucket = (n: number) => {
    // n coords (torch's length ceil((1 - 1e-6) / f32(1/n)) is n for every n below 2^19).
    const frac = arangeF32(0, 1 - 1e-6, Math.fround(1 / n), n);
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      let k = 0;
      while (k < boundaries.length && boundaries[k] <= frac[i]) k++;
      out[i] = k;
    }
    return out;
  };
  const bh = bucket(nbH);
  const bw = bucket(nbW);
  const ids = new Int32Array(nbH * nbW);
  for (let r = 0; r < nbH; r++) for (let c = 0; c < nbW; c++) ids[r * nbW + c] = bh[r] * side + bw[c];
  return ids;
}

/**
 * The pixel shuffle (Idefics3Connector.pixel_shuffle: view(g, g/s, s*E) -> permute -> reshape(g/s, g/s, s*s*E) ->
 * permute -> reshape) as a row gather: [g^2/s^2, s^2 * E] seen as [g^2, E] rows, row j = ((R*(g/s) + C)*s + m)*s + k
 * reads the tile's raster row (s*R + m)*g + s*C + k (patch row offset m, then column offset k, then channel).
 */
export function pixelShuffleSource(gridSide: number, s: number): Int32Array {
  if (gridSide % s) throw new Error(`pixel shuffle: scale_factor ${s} does not divide the ${gridSide}x${gridSide} patch grid`);
  const out = gridSide / s;
  const src = new Int32Array(gridSide * gridSide);
  for (let R = 0; R < out; R++)
    for (let C = 0; C < out; C++)
      for (let m = 0; m < s; m++) for (let k = 0; k < s; k++) src[((R * out + C) * s + m) * s + k] = (s * R + m) * gridSide + s * C + k;
  return src;
}

/** How one run's tiles are laid out in the vision sequence. */
interface Layout {
  /** Per tile: image index, tile index within the image, first row. */
  tiles: { image: number; tile: number; start: number; valid: number }[];
  total: number;
  /** Run row of each raster (patch-order) row, per tile offset included. */
  runOf: Int32Array;
  /** Position id of each run row. */
  positions: Uint32Array;
  ranges: Uint32Array;
  /** Run-row permutation applied after the patch embedding (null: identity, every tile full). */
  gather: Uint32Array | null;
}

export class Idefics3Vision implements VisionEncoder {
  constructor(
    private ctx: GpuContext,
    readonly cfg: Idefics3Config,
    private w: Idefics3VisionWeights,
    readonly encoder: VitEncoder,
  ) {}

  get dims(): TowerDims {
    const v = this.cfg.vision;
    return { layers: v.layers, heads: v.heads, headDim: v.headDim };
  }

  get width(): number {
    return this.cfg.vision.hidden;
  }

  /** Patches of a full tile. */
  private get tilePatches(): number {
    return this.cfg.gridSide ** 2;
  }

  plan(images: readonly ImageInput[]): VisionPlan {
    const v = this.cfg.vision;
    const features: number[] = [];
    const tokens: number[] = [];
    images.forEach((img, i) => {
      if (!isTiledImage(img)) throw new Error(`image ${i} is not tiled; Idefics3 takes the processor's tiles with their layout (model.preprocess gives them)`);
      if (img.tileHeight !== v.imageSize || img.tileWidth !== v.imageSize) {
        throw new Error(`image ${i}: tiles of ${img.tileHeight}x${img.tileWidth} px, but the vision tower takes ${v.imageSize}x${v.imageSize} (vision_config image_size; padded tiles keep that size)`);
      }
      if (!Number.isInteger(img.tiles) || img.tiles < 1) throw new Error(`image ${i}: ${img.tiles} tiles`);
      const expect = img.rows * img.cols + (img.rows * img.cols > 0 ? 1 : 0);
      if (img.tiles !== Math.max(1, expect)) throw new Error(`image ${i}: ${img.tiles} tiles for a ${img.rows}x${img.cols} layout (expected ${Math.max(1, expect)})`);
      const px = v.channels * v.imageSize * v.imageSize;
      if (img.pixelValues.length !== img.tiles * px) throw new Error(`image ${i}: ${img.pixelValues.length} pixel values for ${img.tiles} tiles of ${v.channels}x${v.imageSize}x${v.imageSize}`);
      if (img.pixelAttentionMask && img.pixelAttentionMask.length !== img.tiles * v.imageSize * v.imageSize) {
        throw new Error(`image ${i}: pixel attention mask of ${img.pixelAttentionMask.length} values for ${img.tiles} tiles of ${v.imageSize}x${v.imageSize}`);
      }
      tokens.push(img.tiles * this.tilePatches);
      features.push(img.tiles * this.cfg.imageSeqLen);
    });
    return { features, tokens };
  }

  scratchBytes(plan: VisionPlan, capture: CaptureSpec): { total: number; largest: number } {
    const v = this.cfg.vision;
    const N = plan.tokens.reduce((a, b) => a + b, 0);
    const T = this.tilePatches;
    const pattern = capture.pattern.some((p) => p.tower === 'vision') ? v.heads * N * T * 4 : 0;
    const patterns = new Set(capture.pattern.filter((p) => p.tower === 'vision').map((p) => p.layer)).size * pattern;
    const residual = new Set(capture.residual.filter((r) => r.tower === 'vision').map((r) => r.layer)).size * N * v.hidden * 4;
    const pixels = N * v.channels * v.patchSize ** 2 * 4;
    const blocks = this.encoder.scratchBytes(N);
    const total = 2 * pixels + N * (5 * v.hidden + 4) * 4 + blocks.total + patterns + residual;
    return { total, largest: Math.max(pixels, blocks.largest, pattern) };
  }

  private layout(images: readonly TiledImage[]): Layout {
    const v = this.cfg.vision;
    const side = this.cfg.gridSide;
    const T = this.tilePatches;
    const P = v.patchSize;
    const tiles: Layout['tiles'] = [];
    let total = 0;
    images.forEach((img, i) => {
      for (let t = 0; t < img.tiles; t++) tiles.push({ image: i, tile: t, start: (total += T) - T, valid: T });
    });
    const runOf = new Int32Array(total);
    const positions = new Uint32Array(total);
    const ranges = new Uint32Array(total * 2);
    let gather: Uint32Array | null = null;
    for (const tl of tiles) {
      const mask = images[tl.image].pixelAttentionMask;
      // Real patches: any real pixel inside (HF: unfold + sum > 0); padding is bottom/right, so a rectangle.
      let nbH = side;
      let nbW = side;
      if (mask) {
        const S = v.imageSize;
        const m = mask.subarray(tl.tile * S * S, (tl.tile + 1) * S * S);
        const real = (pr: number, pc: number) => {
          for (let y = pr * P; y < pr * P + P; y++) for (let x = pc * P; x < pc * P + P; x++) if (m[y * S + x]) return true;
          return false;
        };
        nbH = 0;
        nbW = 0;
        for (let r = 0; r < side; r++) for (let c = 0; c < side; c++) if (real(r, c)) ((nbH = Math.max(nbH, r + 1)), (nbW = Math.max(nbW, c + 1)));
        if (nbH * nbW === 0) throw new Error(`image ${tl.image}, tile ${tl.tile}: the pixel attention mask has no real patch`);
      }
      const ids = navitPositionIds(nbH, nbW, side);
      tl.valid = nbH * nbW;
      let next = 0;
      let pad = tl.valid;
      for (let r = 0; r < side; r++)
        for (let c = 0; c < side; c++) {
          const raster = r * side + c;
          const inside = r < nbH && c < nbW;
          const run = inside ? next++ : pad++;
          runOf[tl.start + raster] = tl.start + run;
          positions[tl.start + run] = inside ? ids[r * nbW + c] : 0;
        }
      if (tl.valid < T) {
        gather ??= Uint32Array.from({ length: total }, (_, k) => k);
        for (let raster = 0; raster < T; raster++) gather[runOf[tl.start + raster]] = tl.start + raster;
      }
      for (let r = tl.start; r < tl.start + T; r++) {
        ranges[2 * r] = tl.start;
        ranges[2 * r + 1] = tl.start + tl.valid;
      }
    }
    return { tiles, total, runOf, positions, ranges, gather };
  }

  writeHeadParams(spec: InterventionSpec): void {
    this.encoder.writeSpec(spec, this.dims);
  }

  prepare(): void {
    this.encoder.prepare();
  }

  destroy(): void {
    this.encoder.destroy();
  }

  record(
    rec: Recorder,
    images: readonly ImageInput[],
    plan: VisionPlan,
    features: Tensor,
    cap: CaptureSpec,
    alloc: (shape: number[], label: string) => Tensor,
  ): VisionCaptureReader {
    const { ctx, cfg, w } = this;
    const v = cfg.vision;
    const E = v.hidden;
    const T = this.tilePatches;
    const S = v.imageSize;
    const s = cfg.scaleFactor;
    const tiled = images as readonly TiledImage[];
    const lay = this.layout(tiled);
    const N = lay.total;
    const n0 = plan.tokens[0];
    if (cap.z?.tower === 'vision' && cap.z.positions.kind !== 'last') resolvePositions(cap.z.positions, n0);
    for (const p of cap.pattern) {
      if (p.tower !== 'vision') continue;
      for (const r of p.rows ?? []) if (r < -T || r >= T) throw new SpecError(`capture pattern rows: row ${r} is outside a tile's ${T} patches`);
    }
    const u32 = (data: Uint32Array, label: string) => {
      const t = alloc([data.length], label);
      ctx.write(t.buffer, 0, data);
      return t;
    };

    // Patch embedding per tile (im2col of [C, S, S] -> [T, C*P*P]), + bias, + the position embedding rows.
    const pd = v.channels * v.patchSize ** 2;
    const patches = alloc([N, pd], 'vision.patches');
    const posRows = alloc([N, E], 'vision.position_rows');
    embed(ctx, rec, { ids: u32(lay.positions, 'vision.position_ids').buffer, rows: N, table: w.positionEmbedding, out: rows(posRows) });
    const h = alloc([N, E], 'vision.h');
    const tilePatches = alloc([T, pd], 'vision.tile_patches');
    lay.tiles.forEach((tl) => {
      const img = tiled[tl.image];
      const px = v.channels * S * S;
      const tileTensor = alloc([v.channels, S, S], `vision.tile.${tl.image}.${tl.tile}`);
      ctx.write(tileTensor.buffer, 0, img.pixelValues.subarray(tl.tile * px, (tl.tile + 1) * px));
      im2col(ctx, rec, { pixels: tileTensor, patch: v.patchSize, out: tilePatches });
      rec.copy(tilePatches.buffer, 0, patches.buffer, tl.start * pd * 4, T * pd * 4);
    });
    // Raster-order embeddings; padded tiles are then gathered into real-patches-first order.
    const raster = lay.gather ? alloc([N, E], 'vision.raster_embeddings') : h;
    const posRaster = lay.gather ? alloc([N, E], 'vision.position_rows_raster') : posRows;
    if (lay.gather) {
      // Position rows are in run order; bring them to raster order for the residual add.
      const toRaster = new Uint32Array(N);
      for (let r = 0; r < N; r++) toRaster[r] = lay.runOf[r];
      embed(ctx, rec, { ids: u32(toRaster, 'vision.run_of_raster').buffer, rows: N, table: posRows, out: rows(posRaster) });
    }
    matmul(ctx, rec, { x: rows(patches), w: w.patchWeight, b: w.patchBias, residual: rows(posRaster), out: rows(raster) });
    if (lay.gather) embed(ctx, rec, { ids: u32(lay.gather, 'vision.real_first').buffer, rows: N, table: raster, out: rows(h) });

    // Captures: residuals [N, E] whole, patterns [heads, N, T] relative to each tile; read back per tile.
    const caps = new SequenceCaptures(cap, this.dims, E, N, lay.runOf, n0, alloc, T);
    const keyRanges = u32(lay.ranges, 'vision.tile_key_ranges').buffer;
    this.encoder.record(rec, {
      h,
      n: N,
      upTo: v.layers,
      keyRanges: () => keyRanges,
      patternKeys: T,
      captures: caps,
    });

    // post_layernorm, pixel shuffle (a row gather in raster order), projection.
    const normed = alloc([N, E], 'vision.post_layernorm');
    layerNorm(ctx, rec, { x: rows(h), w: w.postNormW, b: w.postNormB, eps: v.eps, out: rows(normed) });
    const shuffle = pixelShuffleSource(cfg.gridSide, s);
    const map = new Uint32Array(N);
    lay.tiles.forEach((tl) => shuffle.forEach((src, j) => (map[tl.start + j] = lay.runOf[tl.start + src])));
    const shuffled = alloc([N, E], 'connector.pixel_shuffle');
    embed(ctx, rec, { ids: u32(map, 'connector.shuffle_map').buffer, rows: N, table: normed, out: rows(shuffled) });
    const U = N / (s * s);
    const grouped: RowView = { tensor: shuffled, rows: U, cols: s * s * E, offset: 0, stride: s * s * E };
    matmul(ctx, rec, { x: grouped, w: w.projection, out: rows(features, 0, U) });

    return caps.reader(ctx, lay.tiles.map((tl) => ({ image: tl.image, tile: tl.tile, start: tl.start, n: T })), lay.gather !== null);
  }
}
