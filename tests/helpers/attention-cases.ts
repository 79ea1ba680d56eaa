// Attention test cases shared by the split-KV and tiled tests: a case (sizes, causal / pos0, every per-head parameter,
// key ranges, knockout, patch, variants), random inputs for it, the float64 z of the contract from the shared
// reference (tests/helpers/reference-math.ts), and the launcher arguments over the uploaded inputs.

import type { AttentionArgs } from '../../kernels/attention.js';
import type { BufferRef, GpuContext } from '../../src/gpu/context.js';
import { attention as reference, type HeadVectors } from './reference-math.js';
import { expect } from 'vitest';
import { randn, rng } from './gpu.js';

export interface Case {
  rows: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  nKeys: number;
  causal: boolean;
  pos0: number;
  temp?: [number, number];
  /** Head vectors (mean_ablate, steer) bound; heads get replace / steer per MIX. */
  vectors?: boolean;
  steer?: [number, number][];
  /** activation patching: these (row, head) pairs take a vector (needs vectors). */
  patch?: [number, number][];
  ranges?: [number, number][];
  /** Knockout seed: random blocked edges, row 3 fully blocked, on heads h % 3 != 0. */
  knock?: number;
  /** VARIANTS: rows see keys [0, prefix) and their own key pos0 + i. */
  variants?: number;
}

/** HeadParams per head: {scale: f32, alpha: f32, replace: u32, steer: u32}. */
export const HP = 4;
/** (scale, alpha, mean_ablate, steer scope) by head: plain + temperature, ablated to 0, gain + mean + steer, ... */
export const MIX: [number, number, number, number][] = [
  [1, 2, 0, 1],
  [0, 0.5, 0, 2],
  [2.5, 1.5, 1, 3],
  [0.5, 1, 0, 1],
  [1, 0.75, 1, 0],
  [1.25, 2, 0, 0],
];

export function knockBits(c: Case): { bits: Uint32Array; words: number } {
  const words = Math.ceil(c.nKeys / 32);
  const bits = new Uint32Array(c.rows * words);
  const r = rng(c.knock ?? 0);
  for (let i = 0; i < c.rows; i++)
    for (let j = 0; j < c.nKeys; j++) if (i === 3 || r() < 0.4) bits[i * words + (j >>> 5)] |= 1 << (j & 31);
  return { bits, words };
}

export interface Inputs {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  hs: Float32Array;
  img: Uint32Array;
  vec: Float32Array | null;
  /** Patch vectors, one per entry of c.patch. */
  pv: Float32Array | null;
  ko: { bits: Uint32Array; words: number } | null;
}

export function inputs(c: Case, seed: number): Inputs {
  const width = c.heads * c.headDim;
  const kvWidth = c.kvHeads * c.headDim;
  const hs = new Float32Array(HP * c.heads);
  const hu = new Uint32Array(hs.buffer);
  for (let h = 0; h < c.heads; h++) {
    const [scale, alpha, replace, steer] = MIX[h % MIX.length];
    hs.set([scale, alpha], HP * h);
    hu[HP * h + 2] = (c.vectors ? replace : 0) | (c.knock !== undefined && h % 3 !== 0 ? 2 : 0);
    hu[HP * h + 3] = c.vectors ? steer : 0;
  }
  const r = rng(seed + 7);
  return {
    q: randn(c.rows * width, seed + 1, 2),
    k: randn(c.nKeys * kvWidth, seed + 2, 2),
    v: randn(c.nKeys * kvWidth, seed + 3),
    hs,
    img: new Uint32Array(c.nKeys).map(() => (r() < 0.5 ? 1 : 0)),
    vec: c.vectors ? randn(c.heads * 2 * c.headDim, seed + 4, 1.5) : null,
    pv: c.patch ? randn(c.patch.length * c.headDim, seed + 5) : null,
    ko: c.knock !== undefined ? knockBits(c) : null,
  };
}

/**
 * float64 z [rows, heads * headDim] from the shared reference, whose rows index its keys too (n >= keys). Kernel row
 * i is reference row pos0 + i (the other rows see no keys); under VARIANTS each row is reference row 0 of its own
 * call over keys [0, prefix) then its own.
 */
export function expected(c: Case, x: Inputs): Float64Array {
  const { rows, heads: H, kvHeads: KV, headDim: D } = c;
  const hu = new Uint32Array(x.hs.buffer);
  const headScale = Float64Array.from({ length: H }, (_, h) => x.hs[HP * h]);
  const headAlpha = Float64Array.from({ length: H }, (_, h) => x.hs[HP * h + 1]);
  const inTemp = (i: number) => !!c.temp && i >= c.temp[0] && i < c.temp[1];
  // Reference row r -> kernel row rowOf(r) (or < 0).
  const vectorsFor = (rowOf: (r: number) => number): HeadVectors => ({
    replace: Array.from({ length: H }, (_, h) => (x.vec && hu[HP * h + 2] & 1 ? Float64Array.from(x.vec.subarray(2 * h * D, (2 * h + 1) * D)) : null)),
    steer: Array.from({ length: H }, (_, h) => {
      const code = hu[HP * h + 3];
      const range = c.steer?.[code - 1];
      if (!x.vec || !code || !range) return null;
      return { add: Float64Array.from(x.vec.subarray((2 * h + 1) * D, (2 * h + 2) * D)), row: (r: number) => rowOf(r) >= range[0] && rowOf(r) < range[1] };
    }),
    patch: Array.from({ length: H }, (_, h) => {
      const m = new Map<number, Float64Array>();
      c.patch?.forEach(([i, hh], n) => {
        if (hh !== h) return;
        for (let r = 0; r < Math.max(rows + c.pos0, c.nKeys + 1); r++) if (rowOf(r) === i) m.set(r, Float64Array.from(x.pv!.subarray(n * D, (n + 1) * D)));
      });
      return m;
    }),
  });
  const blockedFor = (rowOf: (r: number) => number, keyOf: (j: number) => number) =>
    x.ko ? (h: number, r: number, j: number) => (hu[HP * h + 2] & 2) !== 0 && ((x.ko!.bits[rowOf(r) * x.ko!.words + (keyOf(j) >>> 5)] >>> (keyOf(j) & 31)) & 1) === 1 : null;
  const z = new Float64Array(rows * H * D);
  if (c.variants !== undefined) {
    const prefix = c.variants;
    for (let i = 0; i < rows; i++) {
      const keys = [...Array(prefix).keys(), c.pos0 + i];
      const gather = (a: Float32Array) => Float64Array.from(keys.flatMap((j) => Array.from(a.subarray(j * KV * D, (j + 1) * KV * D))));
      const q = new Float64Array(keys.length * H * D);
      q.set(x.q.subarray(i * H * D, (i + 1) * H * D));
      const rowOf = (r: number) => (r === 0 ? i : -1);
      const zi = reference({
        q, k: gather(x.k), v: gather(x.v), n: keys.length, heads: H, kvHeads: KV, hd: D,
        keys: (r) => (r === 0 ? [0, keys.length] : [0, 0]), headScale, vectors: vectorsFor(rowOf), headAlpha,
        isImageKey: Uint8Array.from(keys, (j) => x.img[j]), tempRow: (r) => r === 0 && inTemp(i), pattern: null, blocked: blockedFor(rowOf, (j) => keys[j]),
      });
      z.set(zi.subarray(0, H * D), i * H * D);
    }
    return z;
  }
  const n = Math.max(c.pos0 + rows, c.nKeys);
  const rowOf = (r: number) => r - c.pos0;
  const q = new Float64Array(n * H * D);
  q.set(x.q, c.pos0 * H * D);
  const zr = reference({
    q, k: Float64Array.from(x.k), v: Float64Array.from(x.v), n, heads: H, kvHeads: KV, hd: D,
    keys: (r) => {
      const i = rowOf(r);
      if (i < 0 || i >= rows) return [0, 0];
      let hi = c.causal ? Math.min(c.nKeys, c.pos0 + i + 1) : c.nKeys;
      if (c.ranges) hi = Math.min(hi, c.ranges[i][1]);
      return [c.ranges ? c.ranges[i][0] : 0, hi];
    },
    headScale, vectors: vectorsFor(rowOf), headAlpha, isImageKey: Uint8Array.from(x.img), tempRow: (r) => inTemp(rowOf(r)), pattern: null,
    blocked: blockedFor(rowOf, (j) => j),
  });
  z.set(zr.subarray(c.pos0 * H * D, (c.pos0 + rows) * H * D));
  return z;
}

/** The call's arguments over uploaded inputs (z and the path left to the caller). */
export function upload(ctx: GpuContext, c: Case, x: Inputs): Omit<AttentionArgs, 'z'> {
  const width = c.heads * c.headDim;
  const kvWidth = c.kvHeads * c.headDim;
  const u32 = (a: Uint32Array, label: string) => ctx.uploadTensor(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), [a.length], 'f32', label).buffer;
  let headVectors: BufferRef | null = null;
  let patch: AttentionArgs['patch'] = null;
  if (x.vec) {
    // [vectors | patch map [rows, heads] | patch vectors], as patchCall lays them out.
    const map = x.vec.length;
    const vecs = map + c.rows * c.heads;
    const data = new Float32Array(vecs + (x.pv?.length ?? 0));
    data.set(x.vec);
    c.patch?.forEach(([i, h], n) => (data[map + i * c.heads + h] = n + 1));
    if (x.pv) data.set(x.pv, vecs);
    headVectors = ctx.uploadF32(data, [data.length], 'head_vectors').buffer;
    if (c.patch) patch = { map, vectors: vecs };
  }
  let keyRanges: GPUBuffer | null = null;
  if (c.ranges) keyRanges = u32(Uint32Array.from(c.ranges.flat()), 'key_ranges');
  return {
    q: ctx.uploadF32(x.q, [c.rows, width], 'q'),
    rows: c.rows,
    heads: c.heads,
    kvHeads: c.kvHeads,
    headDim: c.headDim,
    k: ctx.uploadF32(x.k, [c.nKeys, kvWidth], 'k'),
    v: ctx.uploadF32(x.v, [c.nKeys, kvWidth], 'v'),
    nKeys: c.nKeys,
    causal: c.causal,
    pos0: c.pos0,
    headParams: ctx.uploadF32(x.hs, [c.heads, HP], 'head_params').buffer,
    keyIsImage: u32(x.img, 'key_is_image'),
    tempRows: c.temp,
    headVectors,
    patch,
    steerRows: c.steer,
    keyRanges,
    knockout: x.ko ? { bits: u32(x.ko.bits, 'knockout'), words: x.ko.words } : null,
    variants: c.variants !== undefined ? { prefix: c.variants } : null,
  };
}

/** Per-row key ranges of consecutive segments. */
export function segments(bounds: number[]): [number, number][] {
  const out: [number, number][] = [];
  for (let s = 0; s + 1 < bounds.length; s++) for (let i = bounds[s]; i < bounds[s + 1]; i++) out.push([bounds[s], bounds[s + 1]]);
  return out;
}

/**
 * Rows whose key ranges are empty: z before the head vectors is 0, so each output is exactly what the kernel's f32
 * steps make of the vectors (scale * mean, or 0 without a mean, then + the steering vector), and equal to `other`
 * (the same case through another path of the kernel).
 */
export function expectEmptyRangeZ(c: Case, x: Inputs, got: Float32Array, other: Float32Array): void {
  const hu = new Uint32Array(x.hs.buffer);
  for (let i = 0; i < c.rows; i++)
    for (let h = 0; h < c.heads; h++)
      for (let d = 0; d < c.headDim; d++) {
        const at = (i * c.heads + h) * c.headDim + d;
        const mean = hu[HP * h + 2] & 1 ? Math.fround(x.hs[HP * h] * x.vec![2 * h * c.headDim + d]) : 0;
        const steer = hu[HP * h + 3] ? x.vec![(2 * h + 1) * c.headDim + d] : 0;
        expect(got[at], `row ${i} head ${h} dim ${d}`).toBe(Math.fround(mean + steer));
        expect(got[at]).toBe(other[at]);
      }
}
