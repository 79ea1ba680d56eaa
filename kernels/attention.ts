// Launcher for shaders/attention.wgsl: multi-head (GQA) attention whose per-head interventions (head scale,
// image-key temperature, mean ablation, steering) and pattern capture are kernel inputs. Optional per-query key
// ranges and strided q/k/v views let the same kernel serve the Qwen2-VL / 2.5-VL vision towers (block-diagonal
// per image, windowed, from one fused qkv matmul output) instead of a second kernel.
// Two ways to run a call (`planAttention` picks): the single-pass kernel (entry point main, one workgroup per query
// row and head), or split KV ("flash decoding": split_partial over (row, head, key slice), then split_merge) when the
// single pass would leave a GPU mostly idle: few rows and heads (a decode step) over many keys.

import source from '../shaders/attention.wgsl';
import type { GpuContext, Recorder } from '../src/gpu/context.js';
import { Uniforms, fold, type BufferRef } from '../src/gpu/context.js';
import type { Tensor } from '../src/gpu/tensor.js';
import { bindRange, scratchBuffer } from './common.js';
import { type AdapterProfile, adapterProfile } from './matmul.js';

/** Largest workgroup (threads per query row and head); each thread owns up to 4 of the head's dims. */
const MAX_WG = 64;
const MAX_HEAD_DIM = 4 * MAX_WG;

/**
 * Threads per (query row, head): the fewest that give every thread at most 4 dims, at least 16. Small heads get
 * small workgroups: on CPU drivers (SwiftShader) every invocation of a workgroup with barriers is a coroutine,
 * so a 64-thread workgroup for 16-dim heads was 4x the cost of a 16-thread one. Key chunks are WG long.
 */
export function attentionWorkgroup(headDim: number): number {
  let wg = 16;
  while (wg * 4 < headDim) wg *= 2;
  return Math.min(wg, MAX_WG);
}

/**
 * Workgroups a split call aims for: enough to fill a large GPU (an H100 has 132 SMs, each running several
 * workgroups at once; a decode step of 32 heads in the single pass gives 32).
 */
export const SPLIT_TARGET_WORKGROUPS = 256;
/**
 * Fewest keys per slice the rule picks: each slice also loads q, writes 2 + head_dim floats and is read back by the
 * merge, which a slice of a few hundred keys (each a head_dim dot product and a head_dim FMA) amortises.
 */
export const SPLIT_MIN_KEYS = 256;

/** How a call is run: split KV or the single pass, with the slicing and the reason. */
export interface AttentionPlan {
  split: boolean;
  /** Split only: slices per (row, head), and stream indices (keys) per slice; 1 and nKeys for the single pass. */
  splits: number;
  chunk: number;
  /** One line: why. */
  reason: string;
}

/** What the split rule needs to know about a call. */
export interface AttentionShape {
  rows: number;
  heads: number;
  headDim: number;
  nKeys: number;
  /** A pattern capture is requested. */
  capture: boolean;
  /** Storage buffers split_partial would bind (6 + key ranges + knockout). */
  partialBuffers: number;
}

/** false: the single pass; true: split KV sliced as the rule would (at least two slices); { chunk }: keys per slice. */
export type AttentionSplit = boolean | { chunk: number };

/**
 * Split KV or the single pass for a call on an adapter. Pure: the tests call it on made-up profiles to cover both
 * sides of every rule. Never split: a pattern capture (see below), no (row, head) at all, more storage bindings than
 * the adapter allows. Forced (`force`): as forced. Otherwise split only on a GPU (a CPU adapter runs a workgroup per
 * core anyway: there the extra pass and partials cost more than they free), when the single pass has at most half
 * SPLIT_TARGET_WORKGROUPS workgroups and there are at least two slices of SPLIT_MIN_KEYS keys; the slice count is
 * what reaches the target, at most one per SPLIT_MIN_KEYS keys, and a slice is a whole number of the kernel's key
 * chunks (its workgroup size), so each slice streams the chunks the single pass would.
 */
export function planAttention(profile: AdapterProfile & { maxStorageBuffers?: number }, s: AttentionShape, force?: AttentionSplit): AttentionPlan {
  const plain = (reason: string): AttentionPlan => ({ split: false, splits: 1, chunk: s.nKeys, reason });
  const items = s.rows * s.heads;
  if (force === false) return plain('forced single pass');
  // The pattern holds exp(s - m) / l with the row's final m and l, which exist only after the merge: it would take a
  // third pass re-reading every stored score. A capture run writes heads x keys per row anyway, so the single pass
  // (which normalises its stored scores in place) serves it.
  if (s.capture) return plain('pattern capture: the single pass (probabilities need the merged normaliser)');
  if (items === 0) return plain('no query rows');
  const maxBuffers = profile.maxStorageBuffers ?? 8;
  if (s.partialBuffers > maxBuffers) return plain(`split_partial would bind ${s.partialBuffers} storage buffers, the adapter allows ${maxBuffers}`);
  const wg = attentionWorkgroup(s.headDim);
  const slices = (want: number): AttentionPlan => {
    const chunk = Math.max(wg, Math.ceil(Math.ceil(s.nKeys / want) / wg) * wg);
    const splits = Math.max(1, Math.ceil(s.nKeys / chunk));
    return { split: true, splits, chunk, reason: '' };
  };
  const want = Math.max(1, Math.min(Math.floor(s.nKeys / SPLIT_MIN_KEYS), Math.ceil(SPLIT_TARGET_WORKGROUPS / items)));
  if (force === true) return { ...slices(Math.max(2, want)), reason: 'forced split' };
  if (force) {
    if (!Number.isInteger(force.chunk) || force.chunk < 1) throw new Error(`attention: split chunk ${force.chunk} is not a positive integer`);
    return { split: true, splits: Math.max(1, Math.ceil(s.nKeys / force.chunk)), chunk: force.chunk, reason: `forced split, ${force.chunk} keys per slice` };
  }
  if (profile.cpu) return plain('CPU adapter: the single pass');
  if (2 * items > SPLIT_TARGET_WORKGROUPS) return plain(`${items} (row, head) workgroups already fill the GPU`);
  if (s.nKeys < 2 * SPLIT_MIN_KEYS) return plain(`${s.nKeys} keys: fewer than two slices of ${SPLIT_MIN_KEYS}`);
  const p = slices(want);
  return { ...p, reason: `${items} (row, head) workgroups over ${s.nKeys} keys: ${p.splits} slices of ${p.chunk}` };
}

export interface AttentionArgs {
  /** Query rows: `rows` rows of [heads * headDim] starting at row `qRow` of `q`. */
  q: Tensor;
  qRow?: number;
  /** Elements between query rows (default heads * headDim; 3E when q is a view of a fused [rows, 3E] qkv). */
  qStride?: number;
  rows: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** Keys and values: rows of [kvHeads * headDim]; the first `nKeys` rows are attended. */
  k: Tensor;
  v: Tensor;
  nKeys: number;
  /** Element offset of key row 0 in `k` (default 0; E for a fused qkv). */
  kOffset?: number;
  /** Element offset of value row 0 in `v` (default 0; 2E for a fused qkv). */
  vOffset?: number;
  /** Elements between key (and value) rows (default kvHeads * headDim; 3E for a fused qkv). */
  kvStride?: number;
  /**
   * u32 pairs [.., 2]: query row i of this call sees only keys begin <= k < end of pair `keyRangeRow + i`
   * (intersected with the causal limit; end is clamped to nKeys). begin >= end: z = 0 before the head vectors,
   * pattern row 0. Absent: every key (nothing more is bound or read).
   */
  keyRanges?: BufferRef | null;
  /** Index of the key-range pair for query row 0 (default 0), so one buffer serves slices of rows. */
  keyRangeRow?: number;
  /**
   * Attention knockout: a bitset u32 [rows, words] for this call's query rows (bit k of row i set = the edge i -> key
   * k is blocked, like the causal mask) applied to heads whose params set bit 1 of `replace`. Absent: nothing bound.
   */
  knockout?: { bits: BufferRef; words: number } | null;
  causal: boolean;
  /** Absolute position of query row 0 (a causal query at position p sees keys 0..p). */
  pos0: number;
  /**
   * Per-head {scale: f32, alpha: f32, replace: u32, steer: u32}, `heads` of them (a buffer or a 256-byte-aligned
   * slot of one); see src/interp/head-params.ts.
   */
  headParams: BufferRef;
  /**
   * Per-head [2, headDim] f32 (mean_ablate vector, steering vector), `heads` of them; only read for heads whose
   * params set replace / steer. Absent: those fields are ignored and nothing more is bound or read.
   */
  headVectors?: BufferRef | null;
  /**
   * Activation patching (needs headVectors, whose bound range then also holds them): element offsets in that range
   * of the row map [rows, heads] (f32; 0 = not patched, k + 1 = vector k) and of the vectors [.., headDim]. A patched
   * (row, head) takes its vector in place of softmax · V (and of the mean), before head_scale and steer. Absent: none.
   */
  patch?: { map: number; vectors: number } | null;
  /**
   * Independent variants of one position (activation patching's batched per-head variants): row i sees keys
   * [0, prefix) and its own key pos0 + i only, streamed in that order, so it computes what a one-row call at position
   * `prefix` would. Not with keyRanges, knockout or a pattern capture. Absent: the ordinary (causal) keys.
   */
  variants?: { prefix: number } | null;
  /** Query rows [begin, end) of this call in each steering scope (head param steer = index + 1). Default: none. */
  steerRows?: [number, number][];
  /** u32 per key position, 1 for image-token keys. At least `nKeys` entries. */
  keyIsImage: GPUBuffer;
  /** Query rows [begin, end) (relative to this call) that get the image temperature. */
  tempRows?: [number, number];
  /** Output [rows, heads * headDim]. */
  z: Tensor;
  /** Optional capture of probabilities, [heads, rows, nKeys] (or [heads, rows, patternKeys], see below). */
  pattern?: Tensor | null;
  /**
   * With keyRanges: capture each row's probabilities relative to its range, [heads, rows, patternKeys] with entry j
   * holding key begin + j (0 past the range). A block-diagonal sequence (Idefics3 tiles, images) then captures
   * n x block instead of n x n.
   */
  patternKeys?: number;
  scale?: number;
  /** Force split KV (true, or { chunk } keys per slice) or the single pass (false); default: planAttention decides. */
  split?: AttentionSplit;
  label?: string;
}

/** The plan `attention` follows for this call on this context's adapter. */
export function attentionPlan(ctx: GpuContext, a: Pick<AttentionArgs, 'rows' | 'heads' | 'headDim' | 'nKeys' | 'pattern' | 'keyRanges' | 'knockout' | 'split'>): AttentionPlan {
  return planAttention(
    { ...adapterProfile(ctx), maxStorageBuffers: ctx.limits.maxStorageBuffersPerShaderStage },
    {
      rows: a.rows,
      heads: a.heads,
      headDim: a.headDim,
      nKeys: a.nKeys,
      capture: !!a.pattern,
      partialBuffers: 6 + (a.keyRanges ? 1 : 0) + (a.knockout ? 1 : 0),
    },
    a.split,
  );
}

export function attention(ctx: GpuContext, rec: Recorder, a: AttentionArgs): void {
  const label = a.label ?? 'attention';
  const width = a.heads * a.headDim;
  const kvWidth = a.kvHeads * a.headDim;
  const qRow = a.qRow ?? 0;
  const qStride = a.qStride ?? width;
  const kvStride = a.kvStride ?? kvWidth;
  const kOffset = a.kOffset ?? 0;
  const vOffset = a.vOffset ?? 0;
  const keyRangeRow = a.keyRangeRow ?? 0;
  const count = (what: string, n: number) => {
    if (!Number.isInteger(n) || n < 0) throw new Error(`${label}: ${what} ${n} is not a non-negative integer`);
  };
  count('qRow', qRow);
  count('qStride', qStride);
  count('kOffset', kOffset);
  count('vOffset', vOffset);
  count('kvStride', kvStride);
  count('keyRangeRow', keyRangeRow);
  if (a.headDim > MAX_HEAD_DIM) throw new Error(`${label}: head_dim ${a.headDim} exceeds the kernel's maximum of ${MAX_HEAD_DIM}`);
  if (a.heads % a.kvHeads !== 0) throw new Error(`${label}: ${a.heads} query heads are not a multiple of ${a.kvHeads} kv heads`);
  // Plain tensors must be rows of exactly the width; strided views (fused qkv) must only lie inside the tensor.
  if (a.qStride === undefined) {
    if (a.q.shape[a.q.shape.length - 1] !== width || (qRow + a.rows) * width > a.q.numel) {
      throw new Error(`${label}: query ${a.q.label} [${a.q.shape.join(', ')}] does not hold rows ${qRow}..${qRow + a.rows} of width ${width}`);
    }
  } else if (qStride < width || (a.rows > 0 && (qRow + a.rows - 1) * qStride + width > a.q.numel)) {
    throw new Error(
      `${label}: query view (stride ${qStride}) of ${a.q.label} [${a.q.shape.join(', ')}] does not hold rows ${qRow}..${qRow + a.rows} of width ${width}`,
    );
  }
  const kvView = a.kOffset !== undefined || a.vOffset !== undefined || a.kvStride !== undefined;
  for (const [t, off, what] of [[a.k, kOffset, 'key'], [a.v, vOffset, 'value']] as const) {
    if (!kvView) {
      if (t.shape[t.shape.length - 1] !== kvWidth || a.nKeys * kvWidth > t.numel) {
        throw new Error(`${label}: ${t.label} [${t.shape.join(', ')}] does not hold ${a.nKeys} keys of width ${kvWidth}`);
      }
    } else if (kvStride < kvWidth || (a.nKeys > 0 && off + (a.nKeys - 1) * kvStride + kvWidth > t.numel)) {
      throw new Error(
        `${label}: ${what} view (offset ${off}, stride ${kvStride}) of ${t.label} [${t.shape.join(', ')}] does not hold ${a.nKeys} keys of width ${kvWidth}`,
      );
    }
  }
  if (a.z.numel < a.rows * width) throw new Error(`${label}: output ${a.z.label} is smaller than ${a.rows}x${width}`);
  if (a.causal && a.pos0 + a.rows > a.nKeys) {
    throw new Error(`${label}: causal queries at positions ${a.pos0}..${a.pos0 + a.rows - 1} need ${a.pos0 + a.rows} keys, have ${a.nKeys}`);
  }
  if (a.patternKeys !== undefined && (!a.keyRanges || !Number.isInteger(a.patternKeys) || a.patternKeys < 1)) {
    throw new Error(`${label}: patternKeys (${a.patternKeys}) needs key ranges and a positive integer`);
  }
  const patKeys = a.patternKeys ?? a.nKeys;
  if (a.pattern && a.pattern.numel !== a.heads * a.rows * patKeys) {
    throw new Error(`${label}: pattern ${a.pattern.label} must be [${a.heads}, ${a.rows}, ${patKeys}]`);
  }
  const capture = !!a.pattern;
  const vectors = a.headVectors ?? null;
  // A GPUBuffer's size is the whole buffer, a slot's the bound range: both must hold [heads, 2, headDim] f32.
  if (vectors && vectors.size < a.heads * 2 * a.headDim * 4) {
    throw new Error(`${label}: head vectors of ${vectors.size} bytes are smaller than [${a.heads}, 2, ${a.headDim}] f32`);
  }
  const patch = a.patch ?? null;
  if (patch) {
    if (!vectors) throw new Error(`${label}: patch needs head vectors (the map and vectors are read through that binding)`);
    count('patch.map', patch.map);
    count('patch.vectors', patch.vectors);
    if ((patch.map + a.rows * a.heads) * 4 > vectors.size || patch.vectors * 4 > vectors.size) {
      throw new Error(`${label}: patch map at ${patch.map} ([${a.rows}, ${a.heads}]) or vectors at ${patch.vectors} lie outside the ${vectors.size}-byte head vectors`);
    }
  }
  const variants = a.variants ?? null;
  if (variants) {
    count('variants.prefix', variants.prefix);
    if (a.keyRanges || a.knockout || a.pattern) throw new Error(`${label}: variants do not go with key ranges, knockout or a pattern capture`);
    if (variants.prefix > a.pos0 || a.pos0 + a.rows > a.nKeys) {
      throw new Error(`${label}: variant rows at cache slots ${a.pos0}..${a.pos0 + a.rows - 1} after a prefix of ${variants.prefix} keys do not fit ${a.nKeys} keys`);
    }
  }
  const ranges = a.keyRanges ?? null;
  if (ranges && ranges.size < (keyRangeRow + a.rows) * 8) {
    throw new Error(`${label}: key ranges of ${ranges.size} bytes do not hold pairs ${keyRangeRow}..${keyRangeRow + a.rows} (u32 [.., 2])`);
  }
  const ko = a.knockout ?? null;
  if (ko) {
    if (!Number.isInteger(ko.words) || ko.words < Math.ceil(a.nKeys / 32)) throw new Error(`${label}: knockout rows of ${ko.words} words do not cover ${a.nKeys} keys`);
    const size = 'size' in ko.bits ? ko.bits.size : (ko.bits as GPUBuffer).size;
    if (size < a.rows * ko.words * 4) throw new Error(`${label}: knockout bitset of ${size} bytes is smaller than [${a.rows}, ${ko.words}] u32`);
  }
  const steerRows = a.steerRows ?? [];
  if (steerRows.length > 3) throw new Error(`${label}: ${steerRows.length} steering row ranges, the kernel has 3 scopes`);
  const sr = (j: number, e: 0 | 1) => Math.max(0, steerRows[j]?.[e] ?? 0);
  const plan = attentionPlan(ctx, a);
  const constants = { WG: attentionWorkgroup(a.headDim) };
  const [tb, te] = a.tempRows ?? [0, 0];
  const u = new Uniforms()
    .u32(a.rows)
    .u32(a.heads)
    .u32(a.kvHeads)
    .u32(a.headDim)
    .u32(qRow * qStride)
    .u32(qStride)
    .u32(kvStride)
    .u32(width)
    .u32(a.pos0)
    .u32(a.nKeys)
    .u32(a.causal ? 1 : 0)
    .f32(a.scale ?? 1 / Math.sqrt(a.headDim))
    .u32(Math.max(0, tb))
    .u32(Math.max(0, te))
    .u32(patKeys)
    .u32(sr(0, 0))
    .u32(sr(0, 1))
    .u32(sr(1, 0))
    .u32(sr(1, 1))
    .u32(sr(2, 0))
    .u32(sr(2, 1))
    .u32(kOffset)
    .u32(vOffset)
    .u32(keyRangeRow)
    .u32(a.patternKeys !== undefined ? 1 : 0)
    .u32(ko?.words ?? 0)
    .u32(patch?.map ?? 0)
    .u32(patch?.vectors ?? 0)
    .u32(variants?.prefix ?? 0)
    .u32(plan.splits)
    .u32(plan.chunk)
    .done();
  // K and V are bound up to the last key attended (a KV cache bigger than the context binds only its live rows).
  const keysBound = (t: Tensor, off: number): BufferRef => {
    const elems = a.nKeys === 0 ? 1 : kvView ? off + (a.nKeys - 1) * kvStride + kvWidth : a.nKeys * kvWidth;
    return bindRange(ctx, t.buffer, 0, Math.min(t.buffer.size, elems * 4)).binding;
  };
  const resources = [null, a.q.buffer, keysBound(a.k, kOffset), keysBound(a.v, vOffset), a.headParams, a.keyIsImage, a.z.buffer, a.pattern?.buffer ?? null, vectors, ranges, ko?.bits ?? null];
  const maxGroups = ctx.limits.maxComputeWorkgroupsPerDimension;
  if (!plan.split) {
    const kernel = ctx.kernel({
      name: 'attention',
      source,
      defines: { CAPTURE: capture, HEAD_VECTORS: !!vectors, PATCH: !!patch, KEY_RANGES: !!ranges, KNOCKOUT: !!ko, VARIANTS: !!variants },
      constants,
      bindings: ['uniform', 'read', 'read', 'read', 'read', 'read', 'write', capture ? 'write' : null, vectors ? 'read' : null, ranges ? 'read' : null, ko ? 'read' : null],
    });
    rec.dispatch(kernel, u, resources, fold(a.rows * a.heads, maxGroups), label);
    return;
  }
  // Split KV: slices' (m, l, acc) in the context's scratch, written by split_partial and read by split_merge in
  // recording order (the next call's split_partial comes after this merge), bound only as far as this call's part.
  const partialFloats = a.rows * a.heads * plan.splits * (2 + a.headDim);
  const partials = bindRange(ctx, scratchBuffer(ctx, 'attention-split-partials', partialFloats), 0, partialFloats * 4).binding;
  // split_partial is compiled without PATCH (no head-vector binding: the patch map is read by the merge); with
  // HEAD_VECTORS it still skips mean-ablated heads' keys (the replace bit is in head_params).
  const partial = ctx.kernel({
    name: 'attention_split_partial',
    source,
    entryPoint: 'split_partial',
    defines: { SPLIT: true, HEAD_VECTORS: !!vectors, KEY_RANGES: !!ranges, KNOCKOUT: !!ko, VARIANTS: !!variants },
    constants,
    bindings: ['uniform', 'read', 'read', 'read', 'read', 'read', null, null, null, ranges ? 'read' : null, ko ? 'read' : null, 'write'],
  });
  const merge = ctx.kernel({
    name: 'attention_split_merge',
    source,
    entryPoint: 'split_merge',
    defines: { SPLIT: true, HEAD_VECTORS: !!vectors, PATCH: !!patch },
    constants,
    bindings: ['uniform', null, null, null, 'read', null, 'write', null, vectors ? 'read' : null, null, null, 'write'],
  });
  resources.push(partials);
  rec.dispatch(partial, u, resources, fold(a.rows * a.heads * plan.splits, maxGroups), `${label} (split KV x${plan.splits})`);
  rec.dispatch(merge, u, resources, fold(a.rows * a.heads, maxGroups), `${label} (split KV merge)`);
}
