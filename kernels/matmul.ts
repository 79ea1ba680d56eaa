// Launcher for the matmul family: y = act(x · Wᵀ + b) + residual, W in its stored dtype. One entry point,
// `matmul`, picks a variant per shape and per adapter (`planMatmul`):
//   tiled        shaders/matmul.wgsl       register tiles, no workgroup memory (CPU adapters; small shapes)
//   smem         shaders/matmul_smem.wgsl  workgroup-memory tiles (GPU prefill)
//   gemv_rows    shaders/matmul_vec.wgsl   one thread per eight outputs over all of K (CPU decode)
//   gemv_coop    shaders/matmul_vec.wgsl   one workgroup per four outputs, K strided over its threads and
//                                          reduced in workgroup memory, with subgroups where the context
//                                          uses them (GPU decode)
//   gemv_splitk  matmul_vec.wgsl, twice    gemv_coop with K split over workgroups, then a reduce pass (GPU decode
//                                          with few outputs and a long K)
// Workgroup sizes and tiles come from the adapter's limits; whether the adapter is a CPU (SwiftShader, llvmpipe,
// WARP) decides between the register-only and the workgroup-memory kernels.
// `matmulGated` is the gated MLP's act(x · Wgᵀ + bg) * (x · Wuᵀ + bu) in one dispatch (the GATED define): both
// weights bound as the checkpoint stores them, x read once for both, no gate / up intermediates. Every variant but
// gemv_splitk has the gated form; the rest falls back to two matmuls and gatedAct (`planMatmulGated` says which).
// `norm` (both entry points): RMS-normalise x's rows first. gemv_rows and gemv_coop can fold it into the kernel
// (the NORM define: a decode step's norm costs no dispatch and no normalised row written and read back), which
// `normFolds` does on GPUs; otherwise rmsNorm writes the caller's scratch first.

import commonSource from '../shaders/matmul_common.wgsl';
import tiledSource from '../shaders/matmul.wgsl';
import vecSource from '../shaders/matmul_vec.wgsl';
import smemSource from '../shaders/matmul_smem.wgsl';
import workgroupSource from '../shaders/workgroup.wgsl';
import type { GpuContext, Recorder } from '../src/gpu/context.js';
import { Uniforms } from '../src/gpu/context.js';
import { type Weight, RowSplitTensor, Tensor, weightParts } from '../src/gpu/tensor.js';
import { type Activation, type RowView, activationDefines, assemble, bindView, scratchBuffer } from './common.js';
import { type AdapterProfile, adapterProfile } from './adapter.js';

export { type AdapterProfile, adapterProfile } from './adapter.js';
import { gatedAct } from './elementwise.js';
import { rmsNorm } from './norm.js';

/**
 * An RMSNorm (HF Llama: w * (x * rsqrt(mean(x²) + eps))) applied to x's rows on the way into a matmul. Variants
 * without the prologue (normPrologue) write the normalised rows into `scratch` first: rows x K, not x's buffer nor
 * an output's.
 */
export interface RowNorm {
  /** Scale [K], any weight dtype. */
  w: Tensor;
  eps: number;
  scratch: RowView;
  /**
   * Fold the norm into the kernel: true wherever the variant can (tests, benchmarks), false never; by default the
   * context's ContextOptions.foldNorms, else the adapter's rule (normFolds).
   */
  fold?: boolean;
}

/** Whether a variant can normalise x in the kernel (else the norm runs as its own pass into the scratch first). */
export function normPrologue(variant: MatmulVariant): boolean {
  return variant === 'gemv_rows' || variant === 'gemv_coop';
}

/**
 * Whether a call folds its norm into the kernel. By default on GPUs only: their decode GEMV (gemv_coop) waits on
 * weight bytes, so the prologue's arithmetic (the scale on each x load, a sum of squares reduced with the dot
 * products) hides behind the loads, and the step loses a dispatch and the normalised row's write and read. A CPU
 * adapter pays every operation: each GEMV thread would redo the row's normalisation (N / 8 times over in gemv_rows),
 * measured 0.89-1.26x the time of rmsNorm then the GEMV on SwiftShader (gemv_rows at widths 128-4096, faster only
 * at 128: scripts/bench-matmul-norm.ts), so it keeps the separate pass.
 */
export function normFolds(profile: AdapterProfile, variant: MatmulVariant, fold?: boolean): boolean {
  if (!normPrologue(variant) || fold === false) return false;
  return fold === true || !profile.cpu;
}

export interface MatmulArgs {
  x: RowView;
  /** Weight [N, K] (Hugging Face Linear layout), possibly split in row blocks over several buffers. */
  w: Weight;
  b?: Tensor | null;
  residual?: RowView | null;
  /**
   * [M, N], or the product's columns split over two or three views in different buffers (the first view takes
   * the first `cols` columns, and so on): a weight of stacked projections (q, k, v) writes each where it belongs.
   */
  out: RowView | RowView[];
  act?: Activation;
  /** Force a variant (tests, benchmarks); by default `planMatmul` picks one for the shape and the adapter. */
  variant?: MatmulVariant;
  /** RMS-normalise x's rows first (RowNorm); the product then reads the normalised rows. */
  norm?: RowNorm | null;
}

export interface MatmulGatedArgs {
  x: RowView;
  /** Gate projection [F, K] (Linear layout), possibly split in row blocks. */
  gate: Weight;
  /** Up projection, the same shape as gate. */
  up: Weight;
  gateBias?: Tensor | null;
  upBias?: Tensor | null;
  /** Applied to the gate projection: out = act(gate) * up (SwiGLU with silu, GeGLU with gelu / gelu_tanh). */
  act: Activation;
  /** [M, F]; must not share a buffer with x. */
  out: RowView;
  /** Force a variant (tests, benchmarks); gemv_splitk forces the fallback. */
  variant?: MatmulVariant;
  /** RMS-normalise x's rows first (RowNorm). */
  norm?: RowNorm | null;
}

export type MatmulVariant = 'tiled' | 'smem' | 'gemv_rows' | 'gemv_coop' | 'gemv_splitk';
export const MATMUL_VARIANTS: readonly MatmulVariant[] = ['tiled', 'smem', 'gemv_rows', 'gemv_coop', 'gemv_splitk'];

export interface MatmulPlan {
  variant: MatmulVariant;
  /** Variants that are worth timing at this shape (all are correct at any shape). */
  applicable: MatmulVariant[];
  /** Workgroup size [x, y]. */
  workgroup: [number, number];
  /** gemv_splitk: number of K splits and k per split (a multiple of 4). */
  splits: number;
  kChunk: number;
  /**
   * Times each weight element is loaded from memory in one call (1 = the minimum), from the variant's access
   * pattern: the GEMVs read W once per row of x, the tiled kernels once per block of rows of a workgroup.
   */
  weightReads: number;
  /** One line: why this variant. */
  reason: string;
}

/**
 * Rows of x up to which the GEMV kernels serve (each re-reads W per row of x, so only for decode-like shapes). On
 * SwiftShader the register tiles already beat gemv_rows at M = 2 (1024 x 2048 f16: 44 vs 77 ms).
 */
export const GEMV_MAX_ROWS = { cpu: 1, gpu: 4 } as const;
/** Workgroups a GEMV should have before it splits K (enough to fill a large GPU). */
export const GEMV_TARGET_WORKGROUPS = 256;
/** The smem tiles pay off from this many rows and columns; below, the register tiles waste less. */
export const SMEM_MIN = 32;
/**
 * Output columns per gemv_rows thread. Gated: four (gate, up) pairs, the same eight accumulators and eight weight
 * rows per x load as the plain kernel's eight outputs (ROWS_COLS in shaders/matmul_vec.wgsl).
 */
export const GEMV_ROWS_COLS = { plain: 8, gated: 4 } as const;

function pow2AtMost(n: number): number {
  return 2 ** Math.floor(Math.log2(Math.max(1, n)));
}

/**
 * The variant, workgroup and split for an M x K by K x N product on an adapter. Pure: the tests call it on made-up
 * profiles to cover both sides of every rule.
 */
export function planMatmul(profile: AdapterProfile, M: number, N: number, K: number, forced?: MatmulVariant): MatmulPlan {
  return plan(profile, M, N, K, forced, false);
}

export interface GatedPlan extends MatmulPlan {
  /** One dispatch per weight block computes act(gate) * up; false: two matmuls into scratch, then gatedAct. */
  fused: boolean;
}

/**
 * planMatmul for the gated MLP's two projections at M x K by K x N each: the same variant rule (the fused kernels
 * keep each variant's tiles and access pattern, with a second weight), and whether the variant has a gated form.
 */
export function planMatmulGated(profile: AdapterProfile, M: number, N: number, K: number, forced?: MatmulVariant): GatedPlan {
  const p = plan(profile, M, N, K, forced, true);
  // Split K would need partial sums of both projections and a gated reduce; it only serves small N on GPUs.
  if (p.variant === 'gemv_splitk') return { ...p, fused: false, reason: `${p.reason}; split K has no gated form: gate, up, then gatedAct` };
  return { ...p, fused: true, reason: `${p.reason}; gate and up in one dispatch` };
}

function plan(profile: AdapterProfile, M: number, N: number, K: number, forced: MatmulVariant | undefined, gated: boolean): MatmulPlan {
  const gemvMax = profile.cpu ? GEMV_MAX_ROWS.cpu : GEMV_MAX_ROWS.gpu;
  const applicable: MatmulVariant[] = M <= 8 ? ['tiled', 'smem', 'gemv_rows', 'gemv_coop', 'gemv_splitk'] : ['tiled', 'smem'];
  let variant: MatmulVariant;
  let reason: string;
  // GEMV workgroup: 64 threads, 128 for long rows, never above the adapter's limit.
  const coopWg = Math.min(pow2AtMost(profile.maxInvocations), K >= 2048 ? 128 : 64);
  const coopWorkgroups = Math.ceil(N / 4) * M;
  // Split K only while each split keeps four loads per thread.
  const maxSplits = Math.max(1, Math.floor(K / (16 * coopWg)));
  const wantSplits = Math.min(maxSplits, Math.ceil(GEMV_TARGET_WORKGROUPS / coopWorkgroups));
  if (forced) {
    variant = forced;
    reason = 'forced';
  } else if (M <= gemvMax && (profile.cpu || Math.ceil(N / 4) <= (profile.maxWorkgroups ?? 65535))) {
    if (profile.cpu) {
      variant = 'gemv_rows';
      reason = `M=${M} <= ${gemvMax} on a CPU adapter: one thread per ${gated ? 'four gate/up pairs' : 'eight outputs'}, no barriers`;
    } else if (wantSplits > 1) {
      variant = 'gemv_splitk';
      reason = `M=${M} <= ${gemvMax}, ${coopWorkgroups} workgroups < ${GEMV_TARGET_WORKGROUPS}: K split ${wantSplits} ways`;
    } else {
      variant = 'gemv_coop';
      reason = `M=${M} <= ${gemvMax}: a workgroup per four outputs, coalesced over K`;
    }
  } else if (!profile.cpu && M >= SMEM_MIN && N >= SMEM_MIN) {
    variant = 'smem';
    reason = `M, N >= ${SMEM_MIN} on a GPU: workgroup-memory tiles`;
  } else {
    variant = 'tiled';
    reason = profile.cpu ? 'CPU adapter: register tiles without workgroup memory' : `M or N < ${SMEM_MIN}: register tiles`;
  }
  let workgroup: [number, number];
  let splits = 1;
  let kChunk = Math.ceil(K / 4) * 4;
  switch (variant) {
    case 'tiled':
      // Few rows: one row of 64 threads, so no thread idles on rows past M.
      workgroup = M <= 4 ? [Math.min(64, profile.maxInvocations), 1] : [8, 8];
      break;
    case 'smem': {
      // 16 x 16 threads (64 x 64 tiles, 8 KiB of workgroup memory; 12 KiB gated: a second W tile) where the
      // adapter allows, else 8 x 8.
      const big = profile.maxInvocations >= 256 && profile.maxWorkgroupStorage >= (gated ? 3 : 2) * 16 * 64 * 4;
      workgroup = big ? [16, 16] : [8, 8];
      break;
    }
    case 'gemv_rows': {
      // About 16 workgroups so every core of a CPU adapter gets some, 16..64 threads each.
      const cols = gated ? GEMV_ROWS_COLS.gated : GEMV_ROWS_COLS.plain;
      workgroup = [Math.min(pow2AtMost(profile.maxInvocations), Math.max(16, Math.min(64, pow2AtMost(N / (cols * 16))))), 1];
      break;
    }
    case 'gemv_coop':
    case 'gemv_splitk':
      workgroup = [coopWg, 1];
      if (variant === 'gemv_splitk') {
        splits = Math.max(wantSplits, Math.min(2, Math.ceil(K / 4))); // forced: at least two when K allows
        kChunk = Math.ceil(K / splits / 4) * 4;
        splits = Math.ceil(K / kChunk);
      }
      break;
  }
  const weightReads = variant === 'tiled' || variant === 'smem' ? Math.ceil(M / (workgroup[1] * 4)) : M;
  return { variant, applicable, workgroup, splits, kChunk, weightReads, reason };
}

/** The plan `matmul` uses for this shape on this context's adapter. */
export function matmulPlan(ctx: GpuContext, M: number, N: number, K: number, forced?: MatmulVariant): MatmulPlan {
  return planMatmul(adapterProfile(ctx), M, N, K, forced);
}

/**
 * How `matmulGated` runs this call: fused (one dispatch per weight block) or the fallback, with the reason. The
 * weights decide first (one shader reads both, so one dtype and the same row blocks), then each block's plan.
 */
export function matmulGatedPlan(ctx: GpuContext, a: Pick<MatmulGatedArgs, 'x' | 'gate' | 'up' | 'variant'>): GatedPlan {
  return gatedPlans(ctx, a).plan;
}

/** The call's plan (matmulGatedPlan) and the per-block plans it was decided from. */
function gatedPlans(ctx: GpuContext, a: Pick<MatmulGatedArgs, 'x' | 'gate' | 'up' | 'variant'>): { plan: GatedPlan; blocks: ReturnType<typeof blockPlans> } {
  const blocks = blockPlans(ctx, a);
  const plans = blocks.map((b) => b.plan);
  const mismatch = weightsMismatch(a.gate, a.up);
  if (mismatch) return { plan: { ...plans[0], fused: false, reason: `${mismatch}: gate, up, then gatedAct` }, blocks };
  return { plan: plans.find((p) => !p.fused) ?? plans[0], blocks };
}

/** The gate's row blocks with each one's gated plan (a block's N sets its workgroups, on a GPU its variant). */
function blockPlans(ctx: GpuContext, a: Pick<MatmulGatedArgs, 'x' | 'gate' | 'variant'>): { tensor: Tensor; rowStart: number; plan: GatedPlan }[] {
  const K = a.gate.shape[1];
  return weightParts(a.gate).map((b) => ({ ...b, plan: planMatmulGated(adapterProfile(ctx), a.x.rows, b.tensor.shape[0], K, a.variant) }));
}

/** Why gate and up cannot share one shader, or null. */
function weightsMismatch(gate: Weight, up: Weight): string | null {
  if (gate.dtype !== up.dtype) return `gate ${gate.label} is ${gate.dtype}, up ${up.label} ${up.dtype}`;
  const g = weightParts(gate);
  const u = weightParts(up);
  if (g.length !== u.length || g.some((b, i) => b.rowStart !== u[i].rowStart || b.tensor.shape[0] !== u[i].tensor.shape[0])) {
    const starts = (w: Weight) => (w instanceof RowSplitTensor ? w.rowStarts.join(', ') : '0');
    return `gate ${gate.label} and up ${up.label} are split in different row blocks (first rows ${starts(gate)} vs ${starts(up)})`;
  }
  return null;
}

/** y = act(x · gateᵀ + gateBias) * (x · upᵀ + upBias): the gated MLP's first half, one dispatch where it fuses. */
export function matmulGated(ctx: GpuContext, rec: Recorder, a: MatmulGatedArgs): void {
  const { gate, up } = a;
  const M = a.x.rows;
  if (gate.shape.length !== 2) throw new Error(`matmulGated: gate ${gate.label} must be 2-D, got [${gate.shape.join(', ')}]`);
  const [N, K] = gate.shape;
  if (up.shape.length !== 2 || up.shape[0] !== N || up.shape[1] !== K) {
    throw new Error(`matmulGated: up ${up.label} is [${up.shape.join(', ')}] but gate ${gate.label} is [${N}, ${K}]; both must be [F, D]`);
  }
  if (a.x.cols !== K) throw new Error(`matmulGated: ${a.x.tensor.label} has ${a.x.cols} columns but gate ${gate.label} expects ${K}`);
  if (a.out.rows !== M || a.out.cols !== N) {
    throw new Error(`matmulGated: output ${a.out.tensor.label} view is ${a.out.rows}x${a.out.cols}, expected ${M}x${N}`);
  }
  for (const [b, what] of [[a.gateBias, 'gate'], [a.upBias, 'up']] as const) {
    if (b && b.numel !== N) throw new Error(`matmulGated: ${what} bias ${b.label} has ${b.numel} elements, expected ${N}`);
  }
  if (a.out.tensor.buffer === a.x.tensor.buffer) {
    throw new Error(`matmulGated: input ${a.x.tensor.label} and output ${a.out.tensor.label} share a buffer; write into another tensor`);
  }
  if (a.norm) checkNorm(`matmulGated ${gate.label}`, a.x, a.norm, [a.out]);
  const { plan, blocks } = gatedPlans(ctx, a);
  const folds = plan.fused && foldsNorm(ctx, a.norm, blocks);
  const x = folds ? a.x : normFirst(ctx, rec, a.x, a.norm);
  if (!plan.fused) {
    // Both projections into scratch, then the element-wise gate: three dispatches (more with split K).
    const s = gatedScratch(ctx, M * N);
    const g: RowView = { tensor: s, rows: M, cols: N, offset: 0, stride: N };
    const u: RowView = { ...g, offset: M * N };
    matmul(ctx, rec, { x, w: gate, b: a.gateBias, out: g, variant: a.variant });
    matmul(ctx, rec, { x, w: up, b: a.upBias, out: u, variant: a.variant });
    gatedAct(ctx, rec, { gate: g, up: u, out: a.out, act: a.act });
    return;
  }
  // One dispatch per row block, gate block i beside up block i (weightsMismatch checked they match).
  const ups = weightParts(up);
  blocks.forEach(({ tensor, rowStart, plan: p }, i) => {
    const args: MatmulArgs = { x, w: tensor, b: a.gateBias, out: a.out, act: a.act, norm: folds ? a.norm : null };
    matmulBlock(ctx, rec, args, tensor, rowStart, tensor.shape[0], M, K, p, { w: ups[i].tensor, b: a.upBias ?? null });
  });
}

export function matmul(ctx: GpuContext, rec: Recorder, a: MatmulArgs): void {
  const [N, K] = a.w.shape;
  const M = a.x.rows;
  if (a.w.shape.length !== 2) throw new Error(`matmul: weight ${a.w.label} must be 2-D, got [${a.w.shape.join(', ')}]`);
  if (a.x.cols !== K) throw new Error(`matmul: ${a.x.tensor.label} has ${a.x.cols} columns but ${a.w.label} expects ${K}`);
  const outs = outputViews(a.out);
  if (outs.length > 3) throw new Error(`matmul: ${outs.length} output views for ${a.w.label}; at most three`);
  const outCols = outs.reduce((c, o) => c + o.cols, 0);
  if (outs.some((o) => o.rows !== M) || outCols !== N) {
    const views = outs.map((o) => `${o.tensor.label} ${o.rows}x${o.cols}`).join(' + ');
    throw new Error(`matmul: output ${views} does not make ${M}x${N}`);
  }
  if (outs.length > 1) {
    // Two writable bindings of one buffer in a dispatch are an aliasing error in WebGPU.
    const bufs = new Set(outs.map((o) => o.tensor.buffer));
    if (bufs.size < outs.length) throw new Error(`matmul: the split outputs of ${a.w.label} must lie in different buffers (one buffer: use one view)`);
    if (a.residual) throw new Error(`matmul: ${a.w.label} has split outputs and a residual; a residual needs one output`);
    if (bufs.has(a.x.tensor.buffer)) throw new Error(`matmul: an output of ${a.w.label} shares a buffer with its input ${a.x.tensor.label}`);
  }
  if (a.b && a.b.numel !== N) throw new Error(`matmul: bias ${a.b.label} has ${a.b.numel} elements, expected ${N}`);
  if (a.residual && (a.residual.rows !== M || a.residual.cols !== N)) {
    throw new Error(`matmul: residual ${a.residual.tensor.label} view is ${a.residual.rows}x${a.residual.cols}, expected ${M}x${N}`);
  }
  if (a.norm) checkNorm(`matmul ${a.w.label}`, a.x, a.norm, outs);
  // A weight split in row blocks is N = sum of block rows: one dispatch per block into its output columns.
  const blocks = weightParts(a.w).map((b) => ({ ...b, plan: matmulPlan(ctx, M, b.tensor.shape[0], K, a.variant) }));
  const args = !a.norm || foldsNorm(ctx, a.norm, blocks) ? a : { ...a, x: normFirst(ctx, rec, a.x, a.norm), norm: null };
  for (const { tensor, rowStart, plan } of blocks) matmulBlock(ctx, rec, args, tensor, rowStart, tensor.shape[0], M, K, plan);
}

/** A RowNorm's scale and scratch fit x, and the scratch is no buffer the call writes or x's own. */
function checkNorm(what: string, x: RowView, n: RowNorm, outs: RowView[]): void {
  const K = x.cols;
  if (n.w.numel !== K) throw new Error(`${what}: norm weight ${n.w.label} has ${n.w.numel} elements, expected ${K} (the columns of ${x.tensor.label})`);
  if (!(n.eps >= 0) || !Number.isFinite(n.eps)) throw new Error(`${what}: norm eps must be a finite number >= 0, got ${n.eps}`);
  const s = n.scratch;
  if (s.rows !== x.rows || s.cols !== K) {
    throw new Error(`${what}: norm scratch ${s.tensor.label} view is ${s.rows}x${s.cols}, expected ${x.rows}x${K} like ${x.tensor.label}`);
  }
  if (s.tensor.buffer === x.tensor.buffer || outs.some((o) => o.tensor.buffer === s.tensor.buffer)) {
    throw new Error(`${what}: norm scratch ${s.tensor.label} shares a buffer with the input or an output; give it its own`);
  }
}

/**
 * Whether the call's kernels normalise x themselves: every block's variant folds it, by the call's RowNorm.fold, else
 * the context's foldNorms, else the adapter's rule (normFolds).
 */
function foldsNorm(ctx: GpuContext, norm: RowNorm | null | undefined, blocks: { plan: MatmulPlan }[]): boolean {
  if (!norm) return false;
  const profile = adapterProfile(ctx);
  return blocks.every((b) => normFolds(profile, b.plan.variant, norm.fold ?? ctx.foldNorms));
}

/** x for a product whose kernels do not normalise: x itself without a norm, else the scratch after rmsNorm. */
function normFirst(ctx: GpuContext, rec: Recorder, x: RowView, norm: RowNorm | null | undefined): RowView {
  if (!norm) return x;
  rmsNorm(ctx, rec, { x, w: norm.w, eps: norm.eps, out: norm.scratch });
  return norm.scratch;
}

/** A binding list with the norm scale's entry at binding 11 (matmul_common.wgsl), padded with unused slots. */
function withNormBinding<T>(list: readonly (T | null)[], normEntry: T | null): (T | null)[] {
  if (normEntry === null) return [...list];
  return [...list, ...new Array<null>(11 - list.length).fill(null), normEntry];
}

function outputViews(out: RowView | RowView[]): RowView[] {
  return Array.isArray(out) ? out : [out];
}

// gemv_coop takes workgroup.wgsl's Invocation and vec4 sums; gemv_rows shares its file, so the whole file gets them.
const vecModule = `${workgroupSource}\n${vecSource}`;

const SOURCES: Record<MatmulVariant, { source: string; entry: string }> = {
  tiled: { source: tiledSource, entry: 'main' },
  smem: { source: smemSource, entry: 'main' },
  gemv_rows: { source: vecModule, entry: 'gemv_rows' },
  gemv_coop: { source: vecModule, entry: 'gemv_coop' },
  gemv_splitk: { source: vecModule, entry: 'gemv_coop' },
};

/**
 * Whether this block runs its subgroup form: gemv_coop and split K's partial pass (the gemv_coop entry) reduce a
 * workgroup's partial sums with subgroupAdd where the context uses subgroups; the other variants have no
 * cross-thread reduction to speed up. Not part of MatmulPlan: the plan is a pure function of the adapter's
 * profile and the shape (tested on made-up profiles), while subgroups are the context's choice (ContextOptions,
 * VLMSCOPE_NO_SUBGROUPS) and change neither the variant nor its sizes, only how the workgroup sums.
 */
function subgroupForm(ctx: GpuContext, variant: MatmulVariant): boolean {
  return ctx.subgroups && (variant === 'gemv_coop' || variant === 'gemv_splitk');
}

/**
 * One dispatch (two for split K) over the rows [n0, n0 + N) of the weight, held in `w`. `up`: the gated form, `w`
 * being the gate block and `up.w` the matching block of the up projection (same dtype and rows).
 */
function matmulBlock(
  ctx: GpuContext,
  rec: Recorder,
  a: MatmulArgs,
  w: Tensor,
  n0: number,
  N: number,
  M: number,
  K: number,
  plan: MatmulPlan,
  up: { w: Tensor; b: Tensor | null } | null = null,
): void {
  // Vector loads need K, the x view and (for 16-bit weights, two per u32) every W row on 4-element boundaries.
  const vec4 = K % 4 === 0 && a.x.offset % 4 === 0 && a.x.stride % 4 === 0;
  const split = plan.variant === 'gemv_splitk';
  if (up && (split || a.residual)) throw new Error(`matmul ${w.label}: the gated form has no split K and no residual`);
  const weights: Record<string, Tensor['dtype']> = vec4 ? {} : { w: w.dtype, ...(up ? { wu: up.w.dtype } : {}) };
  if (a.b && !split) weights.b = a.b.dtype;
  if (up?.b) weights.bu = up.b.dtype;
  const norm = a.norm ?? null;
  if (norm && !normPrologue(plan.variant)) throw new Error(`matmul ${w.label}: ${plan.variant} has no norm prologue`);
  // The scale's loads: vector ones on the VEC4 path (its dtype define by hand, as for W), else the generated load_g.
  if (norm && !vec4) weights.g = norm.w.dtype;
  const { source, entry } = SOURCES[plan.variant];
  const outs = outputViews(a.out);
  const splitOut = outs.length > 1;
  if (splitOut && up) throw new Error(`matmul ${w.label}: the gated form has one output`);
  const asm = assemble(commonSource + '\n' + source, weights, { activations: !split });
  const [wgX, wgY] = plan.workgroup;
  const constants: Record<string, number> = plan.variant === 'smem' ? { TX: wgX, TY: wgY } : plan.variant === 'tiled' ? { WG_X: wgX, WG_Y: wgY } : { WG: wgX };
  const kernel = ctx.kernel({
    name: `matmul_${split ? 'gemv_splitk_partial' : plan.variant}${up ? '_gated' : ''}${splitOut && !split ? `_out${outs.length}` : ''}${norm ? '_norm' : ''}`,
    source: asm.source,
    entryPoint: entry,
    defines: {
      ...asm.defines,
      ...(split ? {} : activationDefines(a.act ?? 'none')),
      HAS_BIAS: !!a.b && !split,
      HAS_RESIDUAL: !!a.residual && !split,
      PARTIALS_OUT: split,
      VEC4: vec4,
      GATED: !!up,
      HAS_UP_BIAS: !!up?.b,
      SPLIT_OUT: splitOut && !split,
      SPLIT_OUT3: outs.length === 3 && !split,
      NORM: !!norm,
      ...(norm && vec4 ? { [`G_${norm.w.dtype.toUpperCase()}`]: true } : {}),
      [`W_${w.dtype.toUpperCase()}`]: true,
    },
    constants,
    subgroups: subgroupForm(ctx, plan.variant),
    bindings: split
      ? ['uniform', 'read', 'read', null, null, null, 'write']
      : withNormBinding(
          [
            'uniform', 'read', 'read', a.b ? 'read' : null, a.residual ? 'read' : null, 'write',
            ...(up ? ([null, 'read', up.b ? 'read' : null] as const) : splitOut ? ([null, null, null, 'write', outs.length === 3 ? 'write' : null] as const) : []),
          ],
          norm ? 'read' : null,
        ),
  });
  // x, the residual and the output are bound over the rows (and this block's columns) the call touches. Split
  // outputs are addressed by the column of the whole product, so each is bound whole.
  const xb = bindView(ctx, a.x);
  const out0 = outs[0];
  const ob = splitOut ? bindView(ctx, out0) : bindView(ctx, { ...out0, offset: out0.offset + n0, cols: N });
  const extra = outs.slice(1).map((o) => ({ view: o, bound: bindView(ctx, o) }));
  const rb = a.residual ? bindView(ctx, { ...a.residual, offset: a.residual.offset + n0, cols: N }) : null;
  const n1 = out0.cols;
  const n2 = n1 + (outs[1]?.cols ?? 0);
  const u = new Uniforms()
    .u32(M)
    .u32(N)
    .u32(K)
    .u32(a.x.offset - xb.skipped)
    .u32(a.x.stride)
    .u32(out0.offset + (splitOut ? 0 : n0) - ob.skipped)
    .u32(out0.stride)
    .u32(rb ? a.residual!.offset + n0 - rb.skipped : 0)
    .u32(a.residual?.stride ?? 0)
    .u32(n0)
    .u32(plan.splits)
    .u32(plan.kChunk)
    .u32(n1)
    .u32(n2)
    .u32(extra[0] ? extra[0].view.offset - extra[0].bound.skipped : 0)
    .u32(extra[0]?.view.stride ?? 0)
    .u32(extra[1] ? extra[1].view.offset - extra[1].bound.skipped : 0)
    .u32(extra[1]?.view.stride ?? 0)
    .f32(norm?.eps ?? 0)
    .done();
  const label = up ? `matmul ${w.label} * ${up.w.label}` : `matmul ${w.label}`;
  const outExtra = splitOut ? [null, null, null, extra[0].bound.binding, extra[1]?.bound.binding ?? null] : [];
  const resources = withNormBinding([null, xb.binding, w.buffer, a.b?.buffer ?? null, rb?.binding ?? null, ob.binding, ...(up ? [null, up.w.buffer, up.b?.buffer ?? null] : outExtra)], norm?.w.buffer ?? null);
  switch (plan.variant) {
    case 'tiled':
    case 'smem':
      rec.dispatch(kernel, u, resources, [Math.ceil(N / (wgX * 4)), Math.ceil(M / (wgY * 4))], label);
      return;
    case 'gemv_rows':
      rec.dispatch(kernel, u, resources, [Math.ceil(N / (wgX * (up ? GEMV_ROWS_COLS.gated : GEMV_ROWS_COLS.plain))), M], label);
      return;
    case 'gemv_coop':
      rec.dispatch(kernel, u, resources, [Math.ceil(N / 4), M, 1], label);
      return;
    case 'gemv_splitk': {
      const part = scratchBuffer(ctx, 'matmul-splitk-partials', plan.splits * M * N);
      rec.dispatch(kernel, u, [null, xb.binding, w.buffer, null, null, null, part], [Math.ceil(N / 4), M, plan.splits], `${label} (split K)`);
      const reduce = ctx.kernel({
        name: 'matmul_gemv_splitk_reduce',
        source: assemble(commonSource + '\n' + vecSource, a.b ? { b: a.b.dtype } : {}, { activations: true }).source,
        entryPoint: 'splitk_reduce',
        defines: {
          ...activationDefines(a.act ?? 'none'),
          REDUCE: true,
          HAS_BIAS: !!a.b,
          HAS_RESIDUAL: !!a.residual,
          SPLIT_OUT: splitOut,
          SPLIT_OUT3: outs.length === 3,
          ...(a.b ? { [`B_${a.b.dtype.toUpperCase()}`]: true } : {}),
        },
        constants: { WG: 64 },
        bindings: ['uniform', null, null, a.b ? 'read' : null, a.residual ? 'read' : null, 'write', 'read', ...(splitOut ? ([null, null, 'write', outs.length === 3 ? 'write' : null] as const) : [])],
      });
      const reduceExtra = splitOut ? [null, null, extra[0].bound.binding, extra[1]?.bound.binding ?? null] : [];
      rec.dispatch(reduce, u, [null, null, null, a.b?.buffer ?? null, rb?.binding ?? null, ob.binding, part, ...reduceExtra], [Math.ceil((M * N) / 64)], `${label} (reduce)`);
      return;
    }
  }
}

// Scratch (common.ts scratchBuffer): the split-K partial sums (splits x M x N floats) and matmulGated's fallback
// (2 x M x N: gate and up projections; only mixed-dtype or differently split gate / up weights and split-K plans take it).

/** [2 * M * N] f32 for the fallback's gate (first half) and up (second half) projections. */
function gatedScratch(ctx: GpuContext, floatsEach: number): Tensor {
  const buffer = scratchBuffer(ctx, 'matmul-gated-scratch', 2 * floatsEach);
  return new Tensor(buffer, [buffer.size / 4], 'f32', 'matmul-gated-scratch');
}
