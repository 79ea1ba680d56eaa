// Launcher for shaders/attention.wgsl: multi-head (GQA) attention whose per-head interventions (head scale,
// image-key temperature, mean ablation, steering) and pattern capture are kernel inputs. Optional per-query key
// ranges and strided q/k/v views let the same kernel serve the Qwen2-VL / 2.5-VL vision towers (block-diagonal
// per image, windowed, from one fused qkv matmul output) instead of a second kernel.
// Three ways to run a call (`planAttention` picks): the single-pass kernel (entry point main, one workgroup per query
// row and head); split KV ("flash decoding": split_partial over (row, head, key slice), then split_merge) when the
// single pass would leave a GPU mostly idle: few rows and heads (a decode step) over many keys; or tiled (entry point
// tiled: a workgroup per block of query rows and head, K / V tiles in workgroup memory shared by the block's rows)
// for a prefill of many rows over many keys, where main would read every K / V row once per query row. On CPU adapters
// the single pass runs as solo from SOLO_MIN_ROWS rows: a thread per (row, head), no workgroup memory or barrier,
// the same arithmetic as main in the same order (bit-equal results).

import source from '../shaders/attention.wgsl';
import type { GpuContext, Recorder } from '../src/gpu/context.js';
import { Uniforms, fold, type BufferRef } from '../src/gpu/context.js';
import type { Tensor } from '../src/gpu/tensor.js';
import { bindRange, scratchBuffer } from './common.js';
import { type AdapterProfile, adapterProfile } from './adapter.js';

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

/**
 * Tiled path: query rows that a block of rows must reach before a GPU takes it (below: a decode step or a few rows,
 * where a block would be mostly empty and main or split KV fill the GPU better).
 */
export const TILED_MIN_ROWS = 16;
/** Tiled path: fewest keys for the rule, a few tiles (below, the q block load and barriers are not amortised). */
export const TILED_MIN_KEYS = 128;
/** Rows per block at most (MAX_TILE_ROWS in the shader: each thread keeps every row's key range in registers). */
export const TILE_MAX_ROWS = 16;
/** Rows per block the rule keeps at least while it shrinks blocks to give the GPU more workgroups. */
export const TILE_MIN_ROWS = 4;
/** Keys per tile at most: past this the tile's workgroup memory buys no more reuse, only fewer barriers. */
export const TILE_MAX_KEYS = 64;

/** A tiled call's blocking: rows per workgroup, keys per tile, threads per row (lanes) and in all, workgroup bytes. */
export interface AttentionTile {
  rows: number;
  keys: number;
  lanes: number;
  threads: number;
  bytes: number;
}

/** How a call is run: split KV, tiled or the single pass (main or solo), with the slicing or blocking and the reason. */
export interface AttentionPlan {
  split: boolean;
  /** The single pass as one thread per (row, head) (entry point solo: no workgroup memory, no barrier). */
  solo: boolean;
  /** Split only: slices per (row, head), and stream indices (keys) per slice; 1 and nKeys for the single pass. */
  splits: number;
  chunk: number;
  /** The tiled path's blocking; null for main and split KV. */
  tile: AttentionTile | null;
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
  /** Storage buffers the tiled kernel would bind (6 + head vectors + key ranges + knockout); default partialBuffers. */
  tiledBuffers?: number;
  /** VARIANTS rows (each reads its own key sequence): never tiled. */
  variants?: boolean;
  /** K and V load as vec4s (attentionKvVec4), which solo needs. */
  kv4?: boolean;
}

/**
 * Query rows from which a CPU adapter runs the single pass as solo (one thread per (row, head)) rather than main (a
 * workgroup per (row, head)): a decode step's few (row, head) items would leave solo's lanes and the CPU's cores idle.
 */
export const SOLO_MIN_ROWS = 16;

/** false: the single pass; true: split KV sliced as the rule would (at least two slices); { chunk }: keys per slice. */
export type AttentionSplit = boolean | { chunk: number };

/**
 * false: never tiled; true: tiled, blocked as the rule would block; { rows, keys }: rows per block and keys per tile
 * (either may be left to the rule). Forced, it still runs main where the tiled kernel does not apply (a pattern capture,
 * variants, no rows, too many bindings, a tile that does not fit the adapter), with the reason in the plan.
 */
export type AttentionTiled = boolean | { rows?: number; keys?: number };

/** Workgroup memory of a tile: the block's q rows, one K-or-V tile of padded rows, scores and probabilities (f32). */
export function tileBytes(rows: number, keys: number, headDim: number): number {
  return 4 * (rows * headDim + keys * (headDim + 1) + 2 * rows * keys);
}

function pow2AtMost(n: number): number {
  return 2 ** Math.floor(Math.log2(Math.max(1, n)));
}

/**
 * The blocking of a tiled call on an adapter, or why there is none. Lanes per row: attentionWorkgroup's (each owns at
 * most 4 dims of the row's acc, as in main). Rows: what maxComputeInvocationsPerWorkgroup allows with those lanes (4 of
 * 64 lanes for head_dim 256), at most TILE_MAX_ROWS, halved (not below TILE_MIN_ROWS) while the blocks x heads
 * workgroups fall short of SPLIT_TARGET_WORKGROUPS or the block is twice the rows. Keys: the largest power of two up
 * to TILE_MAX_KEYS whose tileBytes fit maxComputeWorkgroupStorageSize, so tiles shrink as head_dim grows (16 KiB,
 * the WebGPU minimum: 16 keys at head_dim 64 and 128 with 16 and 8 rows, 8 keys at 256 with 4 rows).
 */
function tileFor(profile: AdapterProfile, s: AttentionShape, want: { rows?: number; keys?: number }): AttentionTile | string {
  const lanes = attentionWorkgroup(s.headDim);
  const maxRows = Math.min(TILE_MAX_ROWS, Math.floor(profile.maxInvocations / lanes));
  for (const [what, n, max] of [['rows', want.rows, TILE_MAX_ROWS], ['keys', want.keys, Infinity]] as const) {
    if (n !== undefined && (!Number.isInteger(n) || n < 1 || n > max)) throw new Error(`attention: tile ${what} ${n} is not an integer in 1..${max}`);
  }
  let rows = want.rows ?? pow2AtMost(maxRows);
  if (want.rows === undefined) {
    while (rows > TILE_MIN_ROWS && (Math.ceil(s.rows / rows) * s.heads < SPLIT_TARGET_WORKGROUPS || rows >= 2 * s.rows)) rows /= 2;
  }
  if (rows > maxRows || rows < 1) return `${rows} rows of ${lanes} lanes exceed the adapter's ${profile.maxInvocations} invocations per workgroup`;
  let keys = want.keys ?? TILE_MAX_KEYS;
  if (want.keys === undefined) while (keys > 1 && tileBytes(rows, keys, s.headDim) > profile.maxWorkgroupStorage) keys /= 2;
  const bytes = tileBytes(rows, keys, s.headDim);
  if (bytes > profile.maxWorkgroupStorage) return `a tile of ${rows} rows x ${keys} keys at head_dim ${s.headDim} needs ${bytes} bytes of workgroup memory, the adapter has ${profile.maxWorkgroupStorage}`;
  return { rows, keys, lanes, threads: rows * lanes, bytes };
}

/**
 * Split KV, tiled or the single pass for a call on an adapter. Pure: the tests call it on made-up profiles to cover
 * both sides of every rule. Never split nor tiled: a pattern capture (see below), no (row, head) at all. Split KV
 * forced (`split` true or { chunk }): split, unless split_partial would bind more storage buffers than the adapter
 * allows. Tiled forced (`tiled` true or { rows, keys }): tiled, unless the call has variants or the tiled kernel
 * would bind too many buffers or its tile does not fit (see tileFor); both forced is an error. Otherwise neither on a
 * CPU adapter (it runs a workgroup per core anyway: there the extra pass and partials, or the tiles' barriers, cost
 * more than they free). On a GPU, split KV first: when the single pass has at most half SPLIT_TARGET_WORKGROUPS
 * workgroups and there are at least two slices of SPLIT_MIN_KEYS keys; the slice count is what reaches the target,
 * at most one per SPLIT_MIN_KEYS keys, and a slice is a whole number of the kernel's key chunks (its workgroup size),
 * so each slice streams the chunks the single pass would. Then tiled (unless `tiled` is false): at least
 * TILED_MIN_ROWS query rows and TILED_MIN_KEYS keys. `split` false only rules split KV out, `tiled` false tiled.
 */
export function planAttention(
  profile: AdapterProfile & { maxStorageBuffers?: number },
  s: AttentionShape,
  force?: AttentionSplit,
  tiled?: AttentionTiled,
  solo?: boolean,
): AttentionPlan {
  const main = (reason: string): AttentionPlan => ({ split: false, solo: false, splits: 1, chunk: s.nKeys, tile: null, reason });
  const forcedSplit = force !== undefined && force !== false;
  const forcedTiled = tiled !== undefined && tiled !== false;
  if (forcedSplit && forcedTiled) throw new Error('attention: split KV and tiled are both forced');
  if (solo === true && (forcedSplit || forcedTiled)) throw new Error('attention: solo and split KV or tiled are both forced');
  // The single pass: solo where forced or, on a CPU adapter, for SOLO_MIN_ROWS rows or more; main otherwise, and
  // where K / V do not load as vec4s (solo keeps a row's q and acc as vec4s).
  const soloAsked = solo === true || (solo === undefined && profile.cpu && s.rows >= SOLO_MIN_ROWS);
  const plain = (reason: string): AttentionPlan => {
    if (!soloAsked || s.rows * s.heads === 0) return main(reason);
    if (!s.kv4) return main(`${reason} (main: K / V do not load as vec4s, which solo needs)`);
    return { ...main(`${reason}: solo, a thread per (row, head)${solo ? ' (forced)' : ''}`), solo: true };
  };
  if (solo === true) return plain('forced single pass');
  const items = s.rows * s.heads;
  // The pattern holds exp(s - m) / l with the row's final m and l, which exist only after the merge (split KV) or
  // after the last tile (tiled): it would take another pass re-reading every stored score. A capture run writes heads
  // x keys per row anyway, so the single pass (which normalises its stored scores in place) serves it.
  if (s.capture) return plain('pattern capture: the single pass (probabilities need the merged normaliser)');
  if (items === 0) return plain('no query rows');
  if (force === false && tiled === false) return plain('forced single pass');
  const maxBuffers = profile.maxStorageBuffers ?? 8;
  const tiledPlan = (why: string): AttentionPlan => {
    if (s.variants) return plain(`${why}variants: the single pass (each row reads its own key sequence: no tile is shared)`);
    const buffers = s.tiledBuffers ?? s.partialBuffers;
    if (buffers > maxBuffers) return plain(`${why}the tiled kernel would bind ${buffers} storage buffers, the adapter allows ${maxBuffers}`);
    const tile = tileFor(profile, s, typeof tiled === 'object' ? tiled : {});
    if (typeof tile === 'string') return plain(`${why}${tile}`);
    const blocks = Math.ceil(s.rows / tile.rows);
    return { split: false, solo: false, splits: 1, chunk: s.nKeys, tile, reason: `${why}tiled: ${blocks} blocks of ${tile.rows} rows x ${s.heads} heads, tiles of ${tile.keys} keys` };
  };
  if (forcedTiled) return tiledPlan('forced ');
  const wg = attentionWorkgroup(s.headDim);
  const slices = (want: number): AttentionPlan => {
    const chunk = Math.max(wg, Math.ceil(Math.ceil(s.nKeys / want) / wg) * wg);
    const splits = Math.max(1, Math.ceil(s.nKeys / chunk));
    return { split: true, solo: false, splits, chunk, tile: null, reason: '' };
  };
  let noSplit = 'split KV forced off';
  if (force !== false) {
    if (s.partialBuffers > maxBuffers) {
      noSplit = `split_partial would bind ${s.partialBuffers} storage buffers, the adapter allows ${maxBuffers}`;
      if (forcedSplit) return plain(noSplit);
    } else {
      const want = Math.max(1, Math.min(Math.floor(s.nKeys / SPLIT_MIN_KEYS), Math.ceil(SPLIT_TARGET_WORKGROUPS / items)));
      if (force === true) return { ...slices(Math.max(2, want)), reason: 'forced split' };
      if (force) {
        if (!Number.isInteger(force.chunk) || force.chunk < 1) throw new Error(`attention: split chunk ${force.chunk} is not a positive integer`);
        return { split: true, solo: false, splits: Math.max(1, Math.ceil(s.nKeys / force.chunk)), chunk: force.chunk, tile: null, reason: `forced split, ${force.chunk} keys per slice` };
      }
      if (profile.cpu) return plain('CPU adapter: the single pass');
      if (2 * items > SPLIT_TARGET_WORKGROUPS) noSplit = `${items} (row, head) workgroups already fill the GPU`;
      else if (s.nKeys < 2 * SPLIT_MIN_KEYS) noSplit = `${s.nKeys} keys: fewer than two slices of ${SPLIT_MIN_KEYS}`;
      else {
        const p = slices(want);
        return { ...p, reason: `${items} (row, head) workgroups over ${s.nKeys} keys: ${p.splits} slices of ${p.chunk}` };
      }
    }
  }
  if (tiled === false) return plain(`${noSplit}; tiled forced off`);
  if (profile.cpu) return plain('CPU adapter: the single pass');
  if (s.rows < TILED_MIN_ROWS) return plain(`${noSplit}; ${s.rows} query rows: fewer than a block of ${TILED_MIN_ROWS} to tile`);
  if (s.nKeys < TILED_MIN_KEYS) return plain(`${noSplit}; ${s.nKeys} keys: fewer than ${TILED_MIN_KEYS} to tile`);
  return tiledPlan(`${noSplit}; `);
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
  /**
   * When the image-token keys are exactly the positions [begin, end) (one run, as one image's tokens are; [0, 0] for
   * none), and `keyIsImage` says the same: the kernels then test a key's position instead of loading its flag.
   * Absent: the flags.
   */
  imageKeySpan?: readonly [number, number] | null;
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
  /** Force split KV (true, or { chunk } keys per slice) or rule it out (false); default: planAttention decides. */
  split?: AttentionSplit;
  /** Force the tiled path (true, or { rows, keys } per block and tile) or rule it out (false); default: the rule. */
  tiled?: AttentionTiled;
  /** Force the single pass as solo (true; main where K / V do not load as vec4s) or rule solo out (false); default: the rule. */
  solo?: boolean;
  label?: string;
}

/** The plan `attention` follows for this call on this context's adapter. */
export function attentionPlan(
  ctx: GpuContext,
  a: Pick<AttentionArgs, 'rows' | 'heads' | 'headDim' | 'nKeys' | 'pattern' | 'keyRanges' | 'knockout' | 'split'> &
    Partial<Pick<AttentionArgs, 'headVectors' | 'variants' | 'tiled' | 'solo' | 'kvStride' | 'kOffset' | 'vOffset' | 'kvHeads'>>,
): AttentionPlan {
  const perRow = (a.keyRanges ? 1 : 0) + (a.knockout ? 1 : 0);
  return planAttention(
    { ...adapterProfile(ctx), maxStorageBuffers: ctx.limits.maxStorageBuffersPerShaderStage },
    {
      rows: a.rows,
      heads: a.heads,
      headDim: a.headDim,
      nKeys: a.nKeys,
      capture: !!a.pattern,
      partialBuffers: 6 + perRow,
      tiledBuffers: 6 + perRow + (a.headVectors ? 1 : 0),
      variants: !!a.variants,
      kv4: attentionKvVec4({
        headDim: a.headDim,
        kvStride: a.kvStride ?? (a.kvHeads ?? a.heads) * a.headDim,
        kOffset: a.kOffset ?? 0,
        vOffset: a.vOffset ?? 0,
      }),
    },
    a.split,
    a.tiled,
    a.solo,
  );
}

/**
 * K and V rows (head_dim floats of one kv head each) a call reads from global memory, summed over query heads: a
 * device-independent count of what tiling saves. main and split KV read every key a row sees once per (row, head);
 * tiled once per (block, head), the keys from the block's first needed one to its last row's limit. Counts the plain
 * case (no key ranges, knockout, or heads that skip their keys).
 */
export function attentionKvReads(plan: AttentionPlan, s: { rows: number; heads: number; nKeys: number; pos0: number; causal: boolean }): number {
  const seen = (i: number) => (s.causal ? Math.min(s.nKeys, s.pos0 + i + 1) : s.nKeys);
  let rows = 0;
  if (plan.tile) for (let b = 0; b < s.rows; b += plan.tile.rows) rows += seen(Math.min(s.rows, b + plan.tile.rows) - 1);
  else for (let i = 0; i < s.rows; i++) rows += seen(i);
  return 2 * s.heads * rows;
}

/**
 * Whether main and split KV read K and V four floats at a time (define KV4): when every key row's slice of a kv head
 * starts on a 16-byte boundary, i.e. head_dim, the row stride and both offsets are multiples of 4. Each thread then owns
 * four consecutive dims (one vec4 of V per key) instead of dims strided by the workgroup size, and q · k runs over vec4s.
 * On SwiftShader every storage load is a per-lane bounds-checked branch, so a quarter of the loads is 1.5-1.8x faster
 * attention (decode over 2048 keys, prefill over 256); on GPUs consecutive threads still read consecutive 16-byte
 * words. Otherwise (odd head_dim, a fused qkv view whose k / v columns are not 4-aligned) the scalar loads serve.
 */
export function attentionKvVec4(v: { headDim: number; kvStride: number; kOffset: number; vOffset: number }): boolean {
  return v.headDim % 4 === 0 && v.kvStride % 4 === 0 && v.kOffset % 4 === 0 && v.vOffset % 4 === 0;
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
  const span = a.imageKeySpan ?? null;
  if (span && !(Number.isInteger(span[0]) && Number.isInteger(span[1]) && span[0] >= 0 && span[1] >= span[0])) {
    throw new Error(`${label}: imageKeySpan [${span.join(', ')}] is not a range of positions (integers, 0 <= begin <= end)`);
  }
  const steerRows = a.steerRows ?? [];
  if (steerRows.length > 3) throw new Error(`${label}: ${steerRows.length} steering row ranges, the kernel has 3 scopes`);
  const sr = (j: number, e: 0 | 1) => Math.max(0, steerRows[j]?.[e] ?? 0);
  const plan = attentionPlan(ctx, a);
  const constants = { WG: attentionWorkgroup(a.headDim) };
  const [tb, te] = a.tempRows ?? [0, 0];
  const u = new Uniforms(36) // 33 fields
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
    .u32(span?.[0] ?? 0)
    .u32(span?.[1] ?? 0)
    .done();
  // K and V are bound up to the last key attended (a KV cache bigger than the context binds only its live rows).
  const keysBound = (t: Tensor, off: number): BufferRef => {
    const elems = a.nKeys === 0 ? 1 : kvView ? off + (a.nKeys - 1) * kvStride + kvWidth : a.nKeys * kvWidth;
    return bindRange(ctx, t.buffer, 0, Math.min(t.buffer.size, elems * 4)).binding;
  };
  const kv4 = attentionKvVec4({ headDim: a.headDim, kvStride, kOffset, vOffset });
  const resources = [null, a.q.buffer, keysBound(a.k, kOffset), keysBound(a.v, vOffset), a.headParams, a.keyIsImage, a.z.buffer, a.pattern?.buffer ?? null, vectors, ranges, ko?.bits ?? null];
  const maxGroups = ctx.limits.maxComputeWorkgroupsPerDimension;
  if (plan.tile) {
    // The tile's sizes are override constants (one pipeline per blocking and head_dim); the workgroup arrays are sized
    // from them, as tileBytes counts them, so they stay within the limit planAttention checked.
    const tl = plan.tile;
    const kernel = ctx.kernel({
      name: 'attention_tiled',
      source,
      entryPoint: 'tiled',
      defines: { IMAGE_SPAN: !!span, TILED: true, HEAD_VECTORS: !!vectors, PATCH: !!patch, KEY_RANGES: !!ranges, KNOCKOUT: !!ko },
      constants: {
        TILE_ROWS: tl.rows,
        TILE_LANES: tl.lanes,
        TILE_THREADS: tl.threads,
        TILE_KEYS: tl.keys,
        TILE_Q: tl.rows * a.headDim,
        TILE_KV: tl.keys * (a.headDim + 1),
        TILE_S: tl.rows * tl.keys,
      },
      bindings: ['uniform', 'read', 'read', 'read', 'read', 'read', 'write', null, vectors ? 'read' : null, ranges ? 'read' : null, ko ? 'read' : null],
    });
    rec.dispatch(kernel, u, resources, fold(Math.ceil(a.rows / tl.rows) * a.heads, maxGroups), `${label} (tiled ${tl.rows} rows x ${tl.keys} keys)`);
    return;
  }
  if (plan.solo) {
    const kernel = ctx.kernel({
      name: 'attention_solo',
      source,
      entryPoint: 'solo',
      defines: { IMAGE_SPAN: !!span, SOLO: true, CAPTURE: capture, HEAD_VECTORS: !!vectors, PATCH: !!patch, KEY_RANGES: !!ranges, KNOCKOUT: !!ko, VARIANTS: !!variants, KV4: true },
      constants,
      bindings: ['uniform', 'read', 'read', 'read', 'read', 'read', 'write', capture ? 'write' : null, vectors ? 'read' : null, ranges ? 'read' : null, ko ? 'read' : null],
    });
    rec.dispatch(kernel, u, resources, fold(Math.ceil((a.rows * a.heads) / constants.WG), maxGroups), `${label} (solo)`);
    return;
  }
  if (!plan.split) {
    const kernel = ctx.kernel({
      name: 'attention',
      source,
      defines: { IMAGE_SPAN: !!span, CAPTURE: capture, HEAD_VECTORS: !!vectors, PATCH: !!patch, KEY_RANGES: !!ranges, KNOCKOUT: !!ko, VARIANTS: !!variants, KV4: kv4 },
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
    defines: { IMAGE_SPAN: !!span, SPLIT: true, HEAD_VECTORS: !!vectors, KEY_RANGES: !!ranges, KNOCKOUT: !!ko, VARIANTS: !!variants, KV4: kv4 },
    constants,
    bindings: ['uniform', 'read', 'read', 'read', 'read', 'read', null, null, null, ranges ? 'read' : null, ko ? 'read' : null, 'write'],
  });
  // The merge binds no K / V, but takes KV4 too: it reads the partials in the dim order split_partial wrote (own_dim).
  const merge = ctx.kernel({
    name: 'attention_split_merge',
    source,
    entryPoint: 'split_merge',
    defines: { SPLIT: true, HEAD_VECTORS: !!vectors, PATCH: !!patch, KV4: kv4 },
    constants,
    bindings: ['uniform', null, null, null, 'read', null, 'write', null, vectors ? 'read' : null, null, null, 'write'],
  });
  resources.push(partials);
  rec.dispatch(partial, u, resources, fold(a.rows * a.heads * plan.splits, maxGroups), `${label} (split KV x${plan.splits})`);
  rec.dispatch(merge, u, resources, fold(a.rows * a.heads, maxGroups), `${label} (split KV merge)`);
}

/**
 * The image keys as one run after writing `flags` at `pos0` into a flag buffer of `length` positions that held `span`
 * (null: not one run, or not known). A write from 0 over the whole buffer decides afresh: its ones as [first, last + 1)
 * when they are consecutive ([0, 0] for none), else null. A partial write keeps `span` when it writes no one and misses
 * the span, and otherwise gives null (the kernels then read the flags, which are always right).
 */
export function imageKeySpanAfter(span: readonly [number, number] | null, pos0: number, flags: Uint32Array, length: number): [number, number] | null {
  let first = -1;
  let last = -1;
  let ones = 0;
  flags.forEach((f, j) => {
    if (f === 0) return;
    if (first < 0) first = pos0 + j;
    last = pos0 + j;
    ones++;
  });
  if (pos0 === 0 && flags.length >= length) return ones === 0 ? [0, 0] : ones === last - first + 1 ? [first, last + 1] : null;
  if (!span || ones > 0) return null;
  const end = pos0 + flags.length;
  return span[0] === span[1] || end <= span[0] || pos0 >= span[1] ? [span[0], span[1]] : null;
}
