// The Qwen2-VL / Qwen2.5-VL vision side (transformers modeling_qwen2_vl.py Qwen2VisionTransformerPretrainedModel,
// modeling_qwen2_5_vl.py Qwen2_5_VisionTransformerPretrainedModel): Conv3d patch embedding as a matmul over the
// processor's flattened patches, the shared ViT blocks with the 2-D vision rotary, then the PatchMerger (ln_q, four
// consecutive rows = one 2x2 block concatenated, Linear, exact GELU, Linear).
//
// All images of a prompt run as one sequence; which keys a query row sees is a per-row key range given to the
// attention kernel: its image (block-diagonal, HF cu_seqlens) or, in Qwen2.5-VL's windowed blocks, its window.
// Qwen2.5-VL windows are contiguous in HF's window order, so the patch rows are uploaded in that order (a CPU
// permutation of the input, the rotary table permuted alike) and the merger's output rows stay in it: the text
// embedding reads each image token's row through the feature map, so nothing is reordered on the GPU.
// Captures are reported in the processor's patch order (un-permuted on readback).

import type { GpuContext, Recorder } from '../../gpu/context.js';
import type { Tensor, Weight } from '../../gpu/tensor.js';
import { rows, type RowView } from '../../../kernels/common.js';
import { matmul } from '../../../kernels/matmul.js';
import { layerNorm, rmsNorm } from '../../../kernels/norm.js';
import { type CaptureSpec, type InterventionSpec, type TowerDims, SpecError, resolvePositions } from '../../spec/spec.js';
import { SequenceCaptures } from '../capture-read.js';
import { type ImageInput, type PatchedImage, isPatchedImage } from '../model.js';
import type { VisionCaptureReader, VisionEncoder, VisionPlan } from '../vlm.js';
import type { VitEncoder } from '../vit.js';
import type { QwenConfig } from './config.js';
import { type Grid, visionRotaryPositions, visionRotaryTable, windowIndex } from './positions.js';

export interface MergerWeights {
  lnW: Tensor;
  lnB: Tensor | null;
  fc1: Weight;
  fc1b: Tensor | null;
  fc2: Weight;
  fc2b: Tensor | null;
}

/** How one run's images are laid out in the vision sequence. */
interface Layout {
  grids: Grid[];
  /** First patch row of each image (images stay contiguous in every order). */
  starts: number[];
  total: number;
  /** Run row of each patch-order row, and the patch-order row of each run row (identity without windows). */
  runOf: Int32Array;
  patchOf: Int32Array;
  /** Per run row: [begin, end) of its image, and of its window (Qwen2.5-VL). */
  imageRanges: Uint32Array;
  windowRanges: Uint32Array | null;
}

export class QwenVision implements VisionEncoder {
  private readonly unit: number;

  constructor(
    private ctx: GpuContext,
    readonly cfg: QwenConfig,
    private patchWeight: Weight,
    readonly encoder: VitEncoder,
    private merger: MergerWeights,
  ) {
    this.unit = cfg.vision.mergeSize ** 2;
  }

  get dims(): TowerDims {
    const v = this.cfg.vision;
    return { layers: v.layers, heads: v.heads, headDim: v.headDim };
  }

  get width(): number {
    return this.cfg.vision.hidden;
  }

  private get patchDim(): number {
    const v = this.cfg.vision;
    return v.channels * v.temporalPatchSize * v.patchSize * v.patchSize;
  }

  plan(images: readonly ImageInput[]): VisionPlan {
    const v = this.cfg.vision;
    const features: number[] = [];
    const tokens: number[] = [];
    images.forEach((img, i) => {
      if (!isPatchedImage(img)) {
        throw new Error(`image ${i} is plain pixel values; Qwen2-VL takes the processor's patches with their grid (model.preprocess gives them)`);
      }
      const [t, h, w] = img.grid;
      if (![t, h, w].every((x) => Number.isInteger(x) && x > 0)) throw new Error(`image ${i}: grid (t, h, w) must be positive integers, got (${img.grid.join(', ')})`);
      if (h % v.mergeSize || w % v.mergeSize) {
        throw new Error(`image ${i}: grid ${h}x${w} patches is not divisible by spatial_merge_size ${v.mergeSize}`);
      }
      const n = t * h * w;
      if (img.pixelValues.length !== n * this.patchDim) {
        throw new Error(`image ${i}: ${img.pixelValues.length} pixel values, but grid (${img.grid.join(', ')}) needs ${n} patches x ${this.patchDim}`);
      }
      tokens.push(n);
      features.push(n / this.unit);
    });
    if (v.windowSize === null || images.length === 0) return { features, tokens };
    // The merger writes unit j of the window order to row j; the k-th image token is unit k in patch order.
    const grids = images.map((img) => (img as PatchedImage).grid);
    const win = windowIndex(grids, v.mergeSize, v.windowSize, v.patchSize);
    const featureRowOf = new Int32Array(win.windowIndex.length);
    win.windowIndex.forEach((unit, j) => (featureRowOf[unit] = j));
    return { features, tokens, featureRowOf };
  }

  scratchBytes(plan: VisionPlan, capture: CaptureSpec): { total: number; largest: number } {
    const v = this.cfg.vision;
    const N = plan.tokens.reduce((a, b) => a + b, 0);
    const pattern = capture.pattern.some((p) => p.tower === 'vision') ? v.heads * N * N * 4 : 0;
    const patterns = new Set(capture.pattern.filter((p) => p.tower === 'vision').map((p) => p.layer)).size * pattern;
    const residual = new Set(capture.residual.filter((r) => r.tower === 'vision').map((r) => r.layer)).size * N * v.hidden * 4;
    // patches, embeddings, rotary, two key-range tables, ln_q and the merger's [N/4, 4E] hidden, plus the blocks' scratch.
    const patches = N * this.patchDim * 4;
    const blocks = this.encoder.scratchBytes(N);
    const total = patches + N * (v.hidden + v.headDim + 4 + 2 * v.hidden) * 4 + blocks.total + patterns + residual;
    return { total, largest: Math.max(patches, blocks.largest, pattern) };
  }

  private layout(images: readonly ImageInput[]): Layout {
    const v = this.cfg.vision;
    const grids = images.map((img) => [...(img as PatchedImage).grid] as unknown as Grid);
    const starts: number[] = [];
    let total = 0;
    for (const [t, h, w] of grids) {
      starts.push(total);
      total += t * h * w;
    }
    const runOf = new Int32Array(total);
    const patchOf = new Int32Array(total);
    const imageRanges = new Uint32Array(total * 2);
    grids.forEach(([t, h, w], i) => {
      for (let r = starts[i]; r < starts[i] + t * h * w; r++) {
        imageRanges[2 * r] = starts[i];
        imageRanges[2 * r + 1] = starts[i] + t * h * w;
      }
    });
    let windowRanges: Uint32Array | null = null;
    if (v.windowSize !== null) {
      // HF get_window_index: merged units in window order (global indices), window boundaries in patches.
      const win = windowIndex(grids, v.mergeSize, v.windowSize, v.patchSize);
      win.windowIndex.forEach((unitIdx, j) => {
        for (let u = 0; u < this.unit; u++) {
          patchOf[j * this.unit + u] = unitIdx * this.unit + u;
          runOf[unitIdx * this.unit + u] = j * this.unit + u;
        }
      });
      windowRanges = new Uint32Array(total * 2);
      const cu = win.cuWindowSeqlens;
      for (let k = 0; k + 1 < cu.length; k++) {
        for (let r = cu[k]; r < cu[k + 1]; r++) {
          windowRanges[2 * r] = cu[k];
          windowRanges[2 * r + 1] = cu[k + 1];
        }
      }
    } else {
      for (let r = 0; r < total; r++) runOf[r] = patchOf[r] = r;
    }
    return { grids, starts, total, runOf, patchOf, imageRanges, windowRanges };
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
    const { ctx, cfg } = this;
    const v = cfg.vision;
    const E = v.hidden;
    const lay = this.layout(images);
    const N = lay.total;
    const n0 = plan.tokens[0];
    if (cap.z?.tower === 'vision' && cap.z.positions.kind !== 'last') resolvePositions(cap.z.positions, n0);
    for (const p of cap.pattern) {
      if (p.tower !== 'vision') continue;
      for (const r of p.rows ?? []) {
        const small = Math.min(...plan.tokens);
        if (r < -small || r >= small) throw new SpecError(`capture pattern rows: row ${r} is outside the vision sequence of an image with ${small} patches`);
      }
    }

    // Inputs in run order: patches, rotary rows, key ranges.
    const pd = this.patchDim;
    const patches = alloc([N, pd], 'vision.patches');
    const all = new Float32Array(N * pd);
    images.forEach((img, i) => {
      const pv = (img as PatchedImage).pixelValues;
      const n = plan.tokens[i];
      for (let p = 0; p < n; p++) {
        const run = lay.runOf[lay.starts[i] + p];
        all.set(pv.subarray(p * pd, (p + 1) * pd), run * pd);
      }
    });
    ctx.write(patches.buffer, 0, all);
    const rotPatch = new Int32Array(N * 2);
    lay.grids.forEach((g, i) => rotPatch.set(visionRotaryPositions(g, v.mergeSize), lay.starts[i] * 2));
    const rotRun = new Int32Array(N * 2);
    for (let r = 0; r < N; r++) {
      rotRun[2 * r] = rotPatch[2 * lay.patchOf[r]];
      rotRun[2 * r + 1] = rotPatch[2 * lay.patchOf[r] + 1];
    }
    const rotary = alloc([N, v.headDim / 2, 2], 'vision.rotary');
    ctx.write(rotary.buffer, 0, visionRotaryTable(rotRun, v.headDim));
    // One sequence with one image needs no range for full attention: every key is its own image's.
    const ranges = (table: Uint32Array, label: string) => {
      const t = alloc([N, 2], label);
      ctx.write(t.buffer, 0, table);
      return t.buffer;
    };
    const imageRanges = images.length > 1 ? ranges(lay.imageRanges, 'vision.image_key_ranges') : null;
    const windowRanges = lay.windowRanges ? ranges(lay.windowRanges, 'vision.window_key_ranges') : null;
    const full = new Set(v.fullAttentionBlocks);
    const keyRanges = (l: number) => (windowRanges && !full.has(l) ? windowRanges : imageRanges);

    // Captures: whole-sequence tensors, split per image (and un-permuted) on readback.
    const caps = new SequenceCaptures(cap, this.dims, E, N, lay.runOf, n0, alloc);

    const h = alloc([N, E], 'vision.h');
    matmul(ctx, rec, { x: rows(patches), w: this.patchWeight, out: rows(h) });
    this.encoder.record(rec, {
      h,
      n: N,
      upTo: v.layers,
      rotary,
      keyRanges,
      captures: caps,
    });

    // PatchMerger: ln_q, then m*m consecutive rows seen as one row of m*m*E.
    const m = this.merger;
    const normed = alloc([N, E], 'merger.ln_q');
    if (v.norm === 'layernorm') layerNorm(ctx, rec, { x: rows(h), w: m.lnW, b: m.lnB, eps: v.eps, out: rows(normed) });
    else rmsNorm(ctx, rec, { x: rows(h), w: m.lnW, eps: v.eps, out: rows(normed) });
    const U = N / this.unit;
    const wide = this.unit * E;
    const grouped: RowView = { tensor: normed, rows: U, cols: wide, offset: 0, stride: wide };
    const mid = alloc([U, wide], 'merger.hidden');
    matmul(ctx, rec, { x: grouped, w: m.fc1, b: m.fc1b, out: rows(mid), act: 'gelu' });
    matmul(ctx, rec, { x: rows(mid), w: m.fc2, b: m.fc2b, out: rows(features, 0, U) });

    // Only windowed encoders run in another order than they report.
    return caps.reader(ctx, lay.grids.map((_, i) => ({ image: i, start: lay.starts[i], n: plan.tokens[i] })), lay.windowRanges !== null);
  }
}
