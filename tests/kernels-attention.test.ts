import { describe, expect, it } from 'vitest';
import { attention, attentionKvVec4, type AttentionArgs } from '../kernels/attention.js';
import type { BufferRef, GpuContext } from '../src/gpu/context.js';
import { expectClose, gpuContext, randn, read, rng } from './helpers/gpu.js';

interface Case {
  rows: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  nKeys: number;
  causal: boolean;
  pos0: number;
  temp?: [number, number];
  /** Bind head vectors ([heads, 2, headDim]: mean, add); 'slot' binds them at a 256-byte offset of a larger buffer. */
  vectors?: boolean | 'slot';
  /** Query rows per steering scope (code 1..3). */
  steer?: [number, number][];
  /** Key range [begin, end) per query row (bound as keyRanges after `keyRangeRow` poison pairs). */
  ranges?: [number, number][];
  keyRangeRow?: number;
  /** Attention knockout: random blocked edges (seed), some rows fully blocked; heads with h % 3 != 0 take them. */
  knock?: number;
  /** No pattern capture (heads whose z ignores softmax · V then stream no keys); only z is compared. */
  noCapture?: boolean;
}

/** The blocked edges of a knockout case: bit k of row i (u32 words per row). */
function knockBits(c: Case): { bits: Uint32Array; words: number } {
  const words = Math.ceil(c.nKeys / 32) + 1; // one spare word: rows need not be tightly packed
  const bits = new Uint32Array(c.rows * words);
  const r = rng(c.knock ?? 0);
  for (let i = 0; i < c.rows; i++)
    for (let j = 0; j < c.nKeys; j++) if (i % 7 === 3 || r() < 0.4) bits[i * words + (j >>> 5)] |= 1 << (j & 31);
  return { bits, words };
}

/** HeadParams per head: {scale: f32, alpha: f32, replace: u32, steer: u32}. */
const HP = 4;

/**
 * float64 reference of the contract: scores scaled, image keys x alpha on temp rows, keys outside the row's range
 * [begin, min(end, causal limit)) skipped, softmax (no keys: 0); then
 * z = scale * (replace ? mean : softmax · V) + (row in the head's steering scope ? add : 0), the vector part only
 * when head vectors are bound.
 */
function reference(c: Case, q: Float32Array, k: Float32Array, v: Float32Array, hs: Float32Array, img: Uint32Array, vec: Float32Array | null) {
  const hu = new Uint32Array(hs.buffer, hs.byteOffset, hs.length);
  const ko = c.knock !== undefined ? knockBits(c) : null;
  const blocked = (h: number, i: number, j: number) => !!ko && (hu[HP * h + 2] & 2) !== 0 && ((ko.bits[i * ko.words + (j >>> 5)] >>> (j & 31)) & 1) === 1;
  const { rows, heads, kvHeads, headDim: D, nKeys } = c;
  const z = new Float64Array(rows * heads * D);
  const pat = new Float64Array(heads * rows * nKeys);
  for (let i = 0; i < rows; i++)
    for (let h = 0; h < heads; h++) {
      const kvh = Math.floor(h / (heads / kvHeads));
      let nk = c.causal ? Math.min(nKeys, c.pos0 + i + 1) : nKeys;
      const b = c.ranges ? c.ranges[i][0] : 0;
      if (c.ranges) nk = Math.min(nk, c.ranges[i][1]);
      const inTemp = c.temp && i >= c.temp[0] && i < c.temp[1];
      const s = new Float64Array(nk);
      let m = -Infinity;
      for (let j = b; j < nk; j++) {
        if (blocked(h, i, j)) continue;
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[(i * heads + h) * D + d] * k[(j * kvHeads + kvh) * D + d];
        dot /= Math.sqrt(D);
        if (inTemp && img[j]) dot *= hs[HP * h + 1];
        s[j] = dot;
        m = Math.max(m, dot);
      }
      let sum = 0;
      for (let j = b; j < nk; j++) if (!blocked(h, i, j)) sum += Math.exp(s[j] - m);
      for (let j = b; j < nk; j++) {
        if (blocked(h, i, j)) continue;
        const p = Math.exp(s[j] - m) / sum;
        pat[(h * rows + i) * nKeys + j] = p;
        for (let d = 0; d < D; d++) z[(i * heads + h) * D + d] += hs[HP * h] * p * v[(j * kvHeads + kvh) * D + d];
      }
      if (!vec) continue;
      const code = hu[HP * h + 3];
      const range = code ? c.steer?.[code - 1] : undefined;
      const steered = range !== undefined && i >= range[0] && i < range[1];
      for (let d = 0; d < D; d++) {
        const o = (i * heads + h) * D + d;
        if (hu[HP * h + 2] & 1) z[o] = hs[HP * h] * vec[(2 * h) * D + d];
        if (steered) z[o] += vec[(2 * h + 1) * D + d];
      }
    }
  return { z, pat };
}

/** (scale, replace, steer scope code) by head: each intervention alone, and mixed on one head. */
const MIX: [number, number, number][] = [
  [1, 0, 0], // plain
  [1, 1, 0], // mean_ablate
  [2.5, 0, 0], // head_scale
  [1, 0, 1], // steer, scope 1
  [0.001, 0, 2], // head_scale + steer, scope 2
  [0.5, 1, 3], // mean_ablate + head_scale + steer, scope 3
  [0, 0, 1], // ablated to 0, then steered
  [1, 1, 2], // mean_ablate + steer, scope 2
  [1, 0, 3], // steer, scope 3
  [0, 1, 0], // mean_ablate with scale 0
];

/** Runs case `c` on random inputs (q, k, v, head params per MIX, image-key flags) with capture; returns both results. */
async function runCase(c: Case) {
  const ctx = await gpuContext();
  const width = c.heads * c.headDim;
  const kvWidth = c.kvHeads * c.headDim;
  const qs = randn(c.rows * width, 1, 2);
  const ks = randn(c.nKeys * kvWidth, 2, 2);
  const vs = randn(c.nKeys * kvWidth, 3);
  const r = rng(4);
  const hs = new Float32Array(HP * c.heads);
  const hu = new Uint32Array(hs.buffer);
  // Per head (h % 10): plain, mean-ablated, scaled, steered on each scope, and combinations (see MIX). Without
  // head vectors the kernel must ignore replace / steer, so they are set in every case.
  for (let h = 0; h < c.heads; h++) {
    const [scale, replace, steer] = MIX[h % MIX.length];
    hs[HP * h] = scale;
    hs[HP * h + 1] = [0.5, 1, 2, 1.5][(h + 1) % 4];
    hu[HP * h + 2] = replace | (c.knock !== undefined && h % 3 !== 0 ? 2 : 0);
    hu[HP * h + 3] = steer;
  }
  const ko = c.knock !== undefined ? knockBits(c) : null;
  const vec = c.vectors ? randn(c.heads * 2 * c.headDim, 5, 1.5) : null;
  const img = new Uint32Array(c.nKeys);
  for (let j = 0; j < c.nKeys; j++) img[j] = r() < 0.5 ? 1 : 0;
  const q = ctx.uploadF32(qs, [c.rows, width], 'q');
  const k = ctx.uploadF32(ks, [c.nKeys, kvWidth], 'k');
  const v = ctx.uploadF32(vs, [c.nKeys, kvWidth], 'v');
  const hp = ctx.uploadF32(hs, [c.heads, HP], 'head_params');
  let headVectors: BufferRef | null = null;
  if (vec && c.vectors === 'slot') {
    // Bound as the second 256-byte-aligned slot of a buffer whose first slot is poison.
    const slot = Math.ceil(vec.byteLength / 256) * 256;
    const both = new Float32Array((2 * slot) / 4).fill(1e30);
    both.set(vec, slot / 4);
    headVectors = { buffer: ctx.uploadF32(both, [both.length], 'head_vectors').buffer, offset: slot, size: slot };
  } else if (vec) {
    headVectors = ctx.uploadF32(vec, [c.heads, 2, c.headDim], 'head_vectors').buffer;
  }
  const ki = ctx.uploadTensor(new Uint8Array(img.buffer), [c.nKeys], 'f32', 'key_is_image');
  const z = ctx.activation([c.rows, width], 'z');
  const pattern = c.noCapture ? null : ctx.activation([c.heads, c.rows, c.nKeys], 'pattern');
  const rec = ctx.recorder();
  attention(ctx, rec, {
    q, rows: c.rows, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, k, v, nKeys: c.nKeys,
    causal: c.causal, pos0: c.pos0, headParams: hp.buffer, keyIsImage: ki.buffer, tempRows: c.temp, z, pattern,
    headVectors, steerRows: c.steer, keyRanges: c.ranges ? rangeBuffer(ctx, c.ranges, c.keyRangeRow ?? 0) : null,
    keyRangeRow: c.keyRangeRow,
    knockout: ko ? { bits: ctx.uploadTensor(new Uint8Array(ko.bits.buffer), [ko.bits.length], 'f32', 'knockout').buffer, words: ko.words } : null,
  });
  rec.submit();
  const want = reference(c, qs, ks, vs, hs, img, vec);
  return { got: { z: await read(ctx, z), pattern: pattern ? await read(ctx, pattern) : new Float32Array(0) }, want };
}

/** Key ranges as the kernel reads them: u32 [lead + rows, 2], the first `lead` pairs poison (all keys). */
function rangeBuffer(ctx: GpuContext, ranges: [number, number][], lead = 0): GPUBuffer {
  const u = new Uint32Array(2 * (lead + ranges.length));
  for (let j = 0; j < lead; j++) u.set([0, 0xffffffff], 2 * j);
  ranges.forEach(([b, e], i) => u.set([b, e], 2 * (lead + i)));
  return ctx.uploadTensor(new Uint8Array(u.buffer), [u.length], 'f32', 'key_ranges').buffer;
}

describe('attention kernel vs float64 reference', () => {
  const cases: Case[] = [
    { rows: 1, heads: 1, kvHeads: 1, headDim: 1, nKeys: 1, causal: false, pos0: 0 },
    { rows: 29, heads: 4, kvHeads: 4, headDim: 16, nKeys: 29, causal: true, pos0: 0, temp: [28, 29] },
    { rows: 17, heads: 6, kvHeads: 2, headDim: 24, nKeys: 17, causal: false, pos0: 0, temp: [0, 17] }, // GQA, non-causal (vision)
    { rows: 1, heads: 8, kvHeads: 2, headDim: 64, nKeys: 150, causal: true, pos0: 149, temp: [0, 1] }, // decode step, GQA
    { rows: 70, heads: 3, kvHeads: 1, headDim: 130, nKeys: 200, causal: true, pos0: 130 }, // chunked prefill, D > WG
    { rows: 9, heads: 4, kvHeads: 2, headDim: 100, nKeys: 75, causal: true, pos0: 66 }, // 32-thread workgroups, keys cross 3 chunks
    { rows: 3, heads: 2, kvHeads: 2, headDim: 256, nKeys: 131, causal: false, pos0: 0 }, // D at the limit, keys cross chunks
    { rows: 5, heads: 3, kvHeads: 1, headDim: 4, nKeys: 21, causal: true, pos0: 16, temp: [0, 5] }, // one vec4 a key row: one owning thread
    // Head vectors: heads mix plain, scaled, mean-ablated, steered per scope, and ablated + scaled + steered.
    { rows: 29, heads: 8, kvHeads: 2, headDim: 16, nKeys: 29, causal: true, pos0: 0, temp: [28, 29], vectors: true, steer: [[0, 29], [28, 29], [0, 0]] }, // prefill, GQA
    { rows: 1, heads: 6, kvHeads: 3, headDim: 64, nKeys: 40, causal: true, pos0: 39, vectors: 'slot', steer: [[0, 1], [0, 0], [0, 1]] }, // decode step, GQA
    { rows: 17, heads: 5, kvHeads: 5, headDim: 130, nKeys: 17, causal: false, pos0: 0, vectors: true, steer: [[0, 17]] }, // vision-like, D > WG
    { rows: 12, heads: 10, kvHeads: 5, headDim: 8, nKeys: 30, causal: true, pos0: 18, vectors: 'slot', steer: [[2, 5], [7, 9], [0, 3]] }, // odd row ranges
  ];
  for (const c of cases) {
    it(JSON.stringify(c), async () => {
      const { got, want } = await runCase(c);
      expectClose(got.z, want.z, 2e-5, 1e-4, 'z');
      expectClose(got.pattern, want.pat, 2e-6, 1e-4, 'pattern');
    });
  }

  // Attention knockout: blocked edges masked like the causal mask on flagged heads; fully blocked rows give z 0.
  const knockCases: Case[] = [
    { rows: 29, heads: 6, kvHeads: 2, headDim: 16, nKeys: 29, causal: true, pos0: 0, temp: [28, 29], knock: 7 },
    { rows: 1, heads: 4, kvHeads: 2, headDim: 64, nKeys: 70, causal: true, pos0: 69, knock: 8 }, // decode step, 3 words
    { rows: 37, heads: 10, kvHeads: 5, headDim: 80, nKeys: 37, causal: false, pos0: 0, vectors: true, steer: [[0, 37]], ranges: segments([0, 20, 37]), knock: 9 },
    { rows: 9, heads: 4, kvHeads: 4, headDim: 130, nKeys: 75, causal: true, pos0: 66, temp: [0, 9], vectors: 'slot', steer: [[0, 9], [8, 9], [2, 4]], knock: 10 },
  ];
  for (const c of knockCases) {
    it(`knockout ${JSON.stringify(c)}`, async () => {
      const { got, want } = await runCase(c);
      expectClose(got.z, want.z, 2e-5, 1e-4, 'z');
      expectClose(got.pattern, want.pat, 2e-6, 1e-4, 'pattern');
      expect(got.z.every(Number.isFinite)).toBe(true);
    });
  }

  // Without a capture, heads scaled by 0 or mean-ablated (MIX) skip the keys; every head still matches the reference.
  for (const c of [...cases.filter((x) => x.vectors), ...knockCases]) {
    it(`no capture ${JSON.stringify(c)}`, async () => {
      const { got, want } = await runCase({ ...c, noCapture: true });
      expectClose(got.z, want.z, 2e-5, 1e-4, 'z');
      const captured = await runCase(c);
      // Bit for bit what the capturing run computes (which streams every head's keys); -0 and 0 count as equal.
      got.z.forEach((x, i) => expect(x === captured.got.z[i], `z[${i}] ${x} vs ${captured.got.z[i]}`).toBe(true));
    });
  }

  it('patch_z: patched (row, head) take scale * vector (+ steer), with and without capture, pattern unchanged', async () => {
    const ctx = await gpuContext();
    const c: Case = { rows: 6, heads: 5, kvHeads: 5, headDim: 24, nKeys: 40, causal: true, pos0: 34, temp: [0, 6], vectors: true, steer: [[0, 6], [5, 6], [0, 0]] };
    const { rows, heads, headDim: D, nKeys } = c;
    const width = heads * D;
    const qs = randn(rows * width, 61, 2);
    const ks = randn(nKeys * width, 62, 2);
    const vs = randn(nKeys * width, 63);
    // Heads: plain, scaled 0.5 + steered (scope 1), scale 0, mean-ablated, plain with temperature 2.
    const hs = new Float32Array([1, 1, 0, 0, 0.5, 1, 0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 1, 2, 0, 0]);
    const hu = new Uint32Array(hs.buffer);
    hu[HP * 1 + 3] = 1; // steer, scope 1
    hu[HP * 3 + 2] = 1; // mean_ablate
    const img = new Uint32Array(nKeys).map((_, j) => (j % 3 === 1 ? 1 : 0));
    const vec = randn(heads * 2 * D, 64, 1.5);
    // The patched (row, head) pairs and their vectors: [head_vectors | map [rows, heads] | vectors [n, D]].
    const patched: [number, number][] = [[0, 0], [5, 1], [5, 2], [2, 3], [5, 4], [3, 1]];
    const mapOffset = heads * 2 * D;
    const vecOffset = mapOffset + rows * heads;
    const data = new Float32Array(vecOffset + patched.length * D);
    data.set(vec);
    const pv = randn(patched.length * D, 65);
    patched.forEach(([i, h], n) => (data[mapOffset + i * heads + h] = n + 1));
    data.set(pv, vecOffset);
    const q = ctx.uploadF32(qs, [rows, width], 'q');
    const k = ctx.uploadF32(ks, [nKeys, width], 'k');
    const v = ctx.uploadF32(vs, [nKeys, width], 'v');
    const hp = ctx.uploadF32(hs, [heads, HP], 'hp');
    const ki = ctx.uploadTensor(new Uint8Array(img.buffer), [nKeys], 'f32', 'ki');
    const hv = ctx.uploadF32(data, [data.length], 'head_vectors+patch');
    const base = {
      q, rows, heads, kvHeads: heads, headDim: D, k, v, nKeys, causal: true, pos0: c.pos0, headParams: hp.buffer, keyIsImage: ki.buffer,
      tempRows: c.temp, steerRows: c.steer, headVectors: hv.buffer, patch: { map: mapOffset, vectors: vecOffset },
    };
    const zNo = ctx.activation([rows, width], 'z.nocapture');
    const zCap = ctx.activation([rows, width], 'z.capture');
    const pattern = ctx.activation([heads, rows, nKeys], 'pattern');
    const rec = ctx.recorder();
    attention(ctx, rec, { ...base, z: zNo });
    attention(ctx, rec, { ...base, z: zCap, pattern });
    rec.submit();
    const want = reference(c, qs, ks, vs, hs, img, vec);
    patched.forEach(([i, h], n) => {
      const steered = h === 1; // scope 1 covers every row
      for (let d = 0; d < D; d++) want.z[(i * heads + h) * D + d] = hs[HP * h] * pv[n * D + d] + (steered ? vec[(2 * h + 1) * D + d] : 0);
    });
    const [a, b] = [await read(ctx, zNo), await read(ctx, zCap)];
    expectClose(a, want.z, 2e-5, 1e-4, 'z without capture');
    expectClose(b, want.z, 2e-5, 1e-4, 'z with capture');
    a.forEach((x, i) => expect(x === b[i], `z[${i}]`).toBe(true));
    expectClose(await read(ctx, pattern), want.pat, 2e-6, 1e-4, 'pattern');
  });

  it('binds K and V only up to the last key (a larger cache is never bound whole); poison beyond is not read', async () => {
    const ctx = await gpuContext();
    const c: Case = { rows: 1, heads: 4, kvHeads: 2, headDim: 32, nKeys: 37, causal: true, pos0: 36, temp: [0, 1] };
    const kvWidth = c.kvHeads * c.headDim;
    const cache = 64;
    const ks = randn(cache * kvWidth, 71, 2);
    const vs = randn(cache * kvWidth, 72);
    ks.fill(NaN, c.nKeys * kvWidth);
    vs.fill(NaN, c.nKeys * kvWidth);
    const qs = randn(c.heads * c.headDim, 73);
    const hs = new Float32Array([1, 1, 0, 0, 0.5, 2, 0, 0, 1, 0.5, 0, 0, 2, 1, 0, 0]);
    const img = new Uint32Array(cache).map((_, j) => (j % 2 ? 1 : 0));
    const k = ctx.uploadF32(ks, [cache, kvWidth], 'k_cache');
    const v = ctx.uploadF32(vs, [cache, kvWidth], 'v_cache');
    const q = ctx.uploadF32(qs, [1, c.heads * c.headDim], 'q');
    const hp = ctx.uploadF32(hs, [c.heads, HP], 'hp');
    const ki = ctx.uploadTensor(new Uint8Array(img.buffer), [cache], 'f32', 'ki');
    const z = ctx.activation([1, c.heads * c.headDim], 'z');
    const counters = ctx.countWork();
    const before = counters.snapshot();
    const rec = ctx.recorder();
    attention(ctx, rec, { q, rows: 1, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, k, v, nKeys: c.nKeys, causal: true, pos0: c.pos0, headParams: hp.buffer, keyIsImage: ki.buffer, tempRows: c.temp, z });
    rec.submit();
    const got = await read(ctx, z);
    const d = counters.since(before);
    ctx.counters = null;
    expect(d.bound.get(k.buffer)).toBe(c.nKeys * kvWidth * 4);
    expect(d.bound.get(v.buffer)).toBe(c.nKeys * kvWidth * 4);
    const want = reference(c, qs, ks.subarray(0, c.nKeys * kvWidth), vs.subarray(0, c.nKeys * kvWidth), hs, img, null);
    expectClose(got, want.z, 2e-5, 1e-4, 'z');
  });

  it('without capture produces the same z', async () => {
    const ctx = await gpuContext();
    const c = { rows: 5, heads: 2, kvHeads: 1, headDim: 8 };
    const q = ctx.uploadF32(randn(5 * 16, 9), [5, 16], 'q');
    const k = ctx.uploadF32(randn(5 * 8, 10), [5, 8], 'k');
    const hp = ctx.uploadF32(new Float32Array([1, 1, 0, 0, 1, 1, 0, 0]), [2, HP], 'hp');
    const ki = ctx.uploadF32(new Float32Array(5), [5], 'ki');
    const z1 = ctx.activation([5, 16], 'z1');
    const z2 = ctx.activation([5, 16], 'z2');
    const pat = ctx.activation([2, 5, 5], 'pat');
    const rec = ctx.recorder();
    const base = { ...c, q, k, v: k, nKeys: 5, causal: true, pos0: 0, headParams: hp.buffer, keyIsImage: ki.buffer };
    attention(ctx, rec, { ...base, z: z1 });
    attention(ctx, rec, { ...base, z: z2, pattern: pat });
    rec.submit();
    expect(Array.from(await read(ctx, z1))).toEqual(Array.from(await read(ctx, z2)));
  });
});

/** Per-row ranges of consecutive segments (block-diagonal per image, or Qwen2.5-VL windows): row i sees its own. */
function segments(bounds: number[]): [number, number][] {
  const out: [number, number][] = [];
  for (let s = 0; s + 1 < bounds.length; s++) for (let i = bounds[s]; i < bounds[s + 1]; i++) out.push([bounds[s], bounds[s + 1]]);
  return out;
}

/** Seeded ranges: begin anywhere in [0, nKeys), length 1..maxLen, some ends past nKeys (the kernel clamps). */
function randomRanges(rows: number, nKeys: number, maxLen: number, seed: number): [number, number][] {
  const r = rng(seed);
  return Array.from({ length: rows }, () => {
    const b = Math.floor(r() * nKeys);
    return [b, b + 1 + Math.floor(r() * maxLen)] as [number, number];
  });
}

describe('attention with per-query key ranges', () => {
  const cases: [string, Case][] = [
    // 16-thread workgroups: 37 keys are 3 chunks; ranges start mid-chunk and cross chunks.
    ['random ranges, D 8, GQA 4/2', { rows: 37, heads: 4, kvHeads: 2, headDim: 8, nKeys: 37, causal: false, pos0: 0, ranges: randomRanges(37, 37, 40, 11) }],
    ['block-diagonal two images, D 16, temperature + head vectors', {
      rows: 37, heads: 4, kvHeads: 2, headDim: 16, nKeys: 37, causal: false, pos0: 0, temp: [0, 37], vectors: true,
      steer: [[0, 37], [20, 37], [3, 9]], ranges: segments([0, 20, 37]),
    }],
    ['windows per row, D 80, head vectors in a slot', {
      rows: 37, heads: 10, kvHeads: 5, headDim: 80, nKeys: 37, causal: false, pos0: 0, temp: [5, 30], vectors: 'slot',
      steer: [[0, 37], [36, 37], [0, 16]], ranges: segments([0, 5, 16, 17, 30, 37]),
    }],
    ['ranges over many chunks, D 128', {
      rows: 37, heads: 4, kvHeads: 2, headDim: 128, nKeys: 150, causal: false, pos0: 0, temp: [0, 37],
      ranges: Array.from({ length: 37 }, (_, i) => [(i * 13 + 5) % 70, (i * 13 + 5) % 70 + 1 + ((i * 29) % 100)] as [number, number]),
    }],
    ['causal + ranges (chunked prefill)', {
      rows: 37, heads: 8, kvHeads: 2, headDim: 16, nKeys: 50, causal: true, pos0: 13, temp: [0, 37], vectors: true,
      steer: [[0, 37], [30, 37], [0, 10]],
      // Rows at positions 13..49: an image block [0, 25) and then [25, 50) (past the causal limit), and a few
      // ranges entirely behind or ahead of the query.
      ranges: Array.from({ length: 37 }, (_, i) => (i % 9 === 4 ? [3, 11] : i % 9 === 7 ? [45, 50] : 13 + i < 25 ? [0, 25] : [25, 50]) as [number, number]),
    }],
    ['empty ranges give z 0', {
      rows: 10, heads: 2, kvHeads: 1, headDim: 16, nKeys: 30, causal: false, pos0: 0,
      ranges: [[7, 7], [20, 3], [40, 50], [30, 31], [0, 30], [0, 0], [29, 30], [0, 1], [12, 12], [5, 25]],
    }],
    ['empty ranges with head vectors', {
      rows: 10, heads: 10, kvHeads: 5, headDim: 8, nKeys: 30, causal: false, pos0: 0, vectors: true, temp: [0, 10],
      steer: [[0, 10], [9, 10], [2, 6]], ranges: [[7, 7], [20, 3], [40, 50], [30, 31], [0, 30], [0, 0], [29, 30], [0, 1], [12, 12], [5, 25]],
    }],
    ['keyRangeRow skips pairs of other rows', {
      rows: 20, heads: 4, kvHeads: 4, headDim: 80, nKeys: 60, causal: false, pos0: 0, keyRangeRow: 17, ranges: randomRanges(20, 60, 45, 12),
    }],
  ];
  for (const [name, c] of cases) {
    it(name, async () => {
      const { got, want } = await runCase(c);
      expectClose(got.z, want.z, 2e-5, 1e-4, 'z');
      expectClose(got.pattern, want.pat, 2e-6, 1e-4, 'pattern');
      for (let h = 0; h < c.heads; h++)
        for (let i = 0; i < c.rows; i++) {
          const [b, e0] = c.ranges![i];
          const e = Math.min(e0, c.nKeys, c.causal ? c.pos0 + i + 1 : c.nKeys);
          const row = got.pattern.subarray((h * c.rows + i) * c.nKeys, (h * c.rows + i + 1) * c.nKeys);
          let sum = 0;
          row.forEach((p, j) => {
            if (j < b || j >= e) expect(p, `pattern h${h} row ${i} key ${j} outside [${b}, ${e})`).toBe(0);
            sum += p;
          });
          expect(Math.abs(sum - (b < e ? 1 : 0)), `pattern h${h} row ${i} sum ${sum}`).toBeLessThan(1e-5);
          if (b >= e && !c.vectors) {
            for (let d = 0; d < c.headDim; d++) expect(got.z[(i * c.heads + h) * c.headDim + d]).toBe(0);
          }
        }
    });
  }

  it('full ranges give the same z and pattern as no ranges, causal and not', async () => {
    const ctx = await gpuContext();
    const [rows, heads, kvHeads, D, nKeys, pos0] = [23, 4, 2, 24, 70, 47];
    const q = ctx.uploadF32(randn(rows * heads * D, 21), [rows, heads * D], 'q');
    const k = ctx.uploadF32(randn(nKeys * kvHeads * D, 22, 2), [nKeys, kvHeads * D], 'k');
    const v = ctx.uploadF32(randn(nKeys * kvHeads * D, 23), [nKeys, kvHeads * D], 'v');
    const hp = ctx.uploadF32(new Float32Array([1, 0.5, 0, 0, 2, 1.5, 0, 0, 1, 2, 0, 0, 0.3, 1, 0, 0]), [heads, HP], 'hp');
    const img = new Uint32Array(nKeys).map((_, j) => j % 3 === 0 ? 1 : 0);
    const ki = ctx.uploadTensor(new Uint8Array(img.buffer), [nKeys], 'f32', 'ki');
    const all = rangeBuffer(ctx, Array.from({ length: rows }, () => [0, nKeys] as [number, number]));
    const base = { q, rows, heads, kvHeads, headDim: D, k, v, nKeys, pos0, headParams: hp.buffer, keyIsImage: ki.buffer, tempRows: [3, 20] as [number, number] };
    const outs = Array.from({ length: 4 }, (_, j) => ({ z: ctx.activation([rows, heads * D], `z${j}`), pattern: ctx.activation([heads, rows, nKeys], `p${j}`) }));
    const rec = ctx.recorder();
    attention(ctx, rec, { ...base, causal: false, ...outs[0] });
    attention(ctx, rec, { ...base, causal: false, ...outs[1], keyRanges: all });
    attention(ctx, rec, { ...base, causal: true, ...outs[2] });
    attention(ctx, rec, { ...base, causal: true, ...outs[3], keyRanges: all });
    rec.submit();
    for (const j of [0, 2]) {
      expect(Array.from(await read(ctx, outs[j + 1].z))).toEqual(Array.from(await read(ctx, outs[j].z)));
      expect(Array.from(await read(ctx, outs[j + 1].pattern))).toEqual(Array.from(await read(ctx, outs[j].pattern)));
    }
  });

  it('captures the pattern relative to each row\'s range (patternKeys): entry j is key begin + j', async () => {
    const ctx = await gpuContext();
    // Three tiles of 13 tokens (block-diagonal) plus rows whose ranges are shorter or cross chunks.
    const [rows, heads, kvHeads, D, block] = [39, 4, 2, 16, 13];
    const qs = randn(rows * heads * D, 51, 2);
    const ks = randn(rows * kvHeads * D, 52, 2);
    const vs = randn(rows * kvHeads * D, 53);
    const ranges = segments([0, 13, 26, 39]);
    ranges[5] = [2, 9];
    ranges[30] = [27, 28];
    const q = ctx.uploadF32(qs, [rows, heads * D], 'q');
    const k = ctx.uploadF32(ks, [rows, kvHeads * D], 'k');
    const v = ctx.uploadF32(vs, [rows, kvHeads * D], 'v');
    const hsArr = new Float32Array([1, 1, 0, 0, 0.5, 2, 0, 0, 1, 0.5, 0, 0, 2, 1, 0, 0]);
    const hp = ctx.uploadF32(hsArr, [heads, HP], 'hp');
    const img = new Uint32Array(rows).map((_, j) => (j % 4 === 1 ? 1 : 0));
    const ki = ctx.uploadTensor(new Uint8Array(img.buffer), [rows], 'f32', 'ki');
    const base = { q, rows, heads, kvHeads, headDim: D, k, v, nKeys: rows, causal: false, pos0: 0, headParams: hp.buffer, keyIsImage: ki.buffer, keyRanges: rangeBuffer(ctx, ranges), tempRows: [0, rows] as [number, number] };
    const full = { z: ctx.activation([rows, heads * D], 'z1'), pattern: ctx.activation([heads, rows, rows], 'p1') };
    const rel = { z: ctx.activation([rows, heads * D], 'z2'), pattern: ctx.activation([heads, rows, block], 'p2') };
    const rec = ctx.recorder();
    attention(ctx, rec, { ...base, ...full });
    attention(ctx, rec, { ...base, ...rel, patternKeys: block });
    rec.submit();
    expect(Array.from(await read(ctx, rel.z))).toEqual(Array.from(await read(ctx, full.z)));
    const pf = await read(ctx, full.pattern);
    const pr = await read(ctx, rel.pattern);
    for (let h = 0; h < heads; h++)
      for (let i = 0; i < rows; i++)
        for (let j = 0; j < block; j++) {
          const key = ranges[i][0] + j;
          const want = key < ranges[i][1] ? pf[(h * rows + i) * rows + key] : 0;
          expect(pr[(h * rows + i) * block + j], `h${h} row ${i} entry ${j}`).toBe(want);
        }
    expect(() => attention(ctx, ctx.recorder(), { ...base, keyRanges: null, ...rel, patternKeys: block })).toThrow(/patternKeys \(13\) needs key ranges/);
    expect(() => attention(ctx, ctx.recorder(), { ...base, ...rel, patternKeys: 12 })).toThrow(/pattern p2 must be \[4, 39, 12\]/);
  });

  it('one range buffer serves slices of rows (qRow + keyRangeRow)', async () => {
    const ctx = await gpuContext();
    const [rows, heads, D] = [37, 2, 16];
    const qs = randn(rows * heads * D, 31, 2);
    const ks = randn(rows * heads * D, 32, 2);
    const vs = randn(rows * heads * D, 33);
    const ranges = segments([0, 9, 16, 30, 37]);
    const q = ctx.uploadF32(qs, [rows, heads * D], 'q');
    const k = ctx.uploadF32(ks, [rows, heads * D], 'k');
    const v = ctx.uploadF32(vs, [rows, heads * D], 'v');
    const hsArr = new Float32Array([1, 1, 0, 0, 1, 1, 0, 0]);
    const hp = ctx.uploadF32(hsArr, [heads, HP], 'hp');
    const img = new Uint32Array(rows);
    const ki = ctx.uploadTensor(new Uint8Array(img.buffer), [rows], 'f32', 'ki');
    const kr = rangeBuffer(ctx, ranges);
    const base = { q, heads, kvHeads: heads, headDim: D, k, v, nKeys: rows, causal: false, pos0: 0, headParams: hp.buffer, keyIsImage: ki.buffer, keyRanges: kr };
    const split = 13;
    const z1 = ctx.activation([split, heads * D], 'z1');
    const z2 = ctx.activation([rows - split, heads * D], 'z2');
    const rec = ctx.recorder();
    attention(ctx, rec, { ...base, rows: split, z: z1 });
    attention(ctx, rec, { ...base, qRow: split, keyRangeRow: split, rows: rows - split, z: z2 });
    rec.submit();
    const c: Case = { rows, heads, kvHeads: heads, headDim: D, nKeys: rows, causal: false, pos0: 0, ranges };
    const want = reference(c, qs, ks, vs, hsArr, img, null).z;
    const got = new Float32Array(rows * heads * D);
    got.set(await read(ctx, z1));
    got.set(await read(ctx, z2), split * heads * D);
    expectClose(got, want, 2e-5, 1e-4, 'z');
  });
});

describe('attention on a fused [rows, 3E] qkv', () => {
  for (const [heads, kvHeads, D, ranged] of [[4, 4, 16, false], [4, 4, 16, true], [6, 2, 80, true], [2, 2, 128, false]] as const) {
    it(`heads ${heads}/${kvHeads}, D ${D}${ranged ? ', windows' : ''}: same z and pattern as separate q, k, v`, async () => {
      const ctx = await gpuContext();
      const rows = 37;
      const E = heads * D;
      const kvE = kvHeads * D;
      const W = E + 2 * kvE; // fused row: q | k | v
      const qkv = randn(rows * W, 41, 2);
      const qs = new Float32Array(rows * E);
      const ks = new Float32Array(rows * kvE);
      const vs = new Float32Array(rows * kvE);
      for (let i = 0; i < rows; i++) {
        qs.set(qkv.subarray(i * W, i * W + E), i * E);
        ks.set(qkv.subarray(i * W + E, i * W + E + kvE), i * kvE);
        vs.set(qkv.subarray(i * W + E + kvE, (i + 1) * W), i * kvE);
      }
      const fused = ctx.uploadF32(qkv, [rows, W], 'qkv');
      const q = ctx.uploadF32(qs, [rows, E], 'q');
      const k = ctx.uploadF32(ks, [rows, kvE], 'k');
      const v = ctx.uploadF32(vs, [rows, kvE], 'v');
      const hs = new Float32Array(HP * heads);
      for (let h = 0; h < heads; h++) hs.set([h === 1 ? 0 : 1 + 0.5 * h, [0.5, 1, 2][h % 3]], HP * h);
      const hp = ctx.uploadF32(hs, [heads, HP], 'hp');
      const img = new Uint32Array(rows).map((_, j) => (j * 7) % 3 === 0 ? 1 : 0);
      const ki = ctx.uploadTensor(new Uint8Array(img.buffer), [rows], 'f32', 'ki');
      const ranges = ranged ? segments([0, 16, 17, 33, 37]) : undefined;
      const base = {
        rows, heads, kvHeads, headDim: D, nKeys: rows, causal: false, pos0: 0, headParams: hp.buffer, keyIsImage: ki.buffer,
        tempRows: [0, rows] as [number, number], keyRanges: ranges ? rangeBuffer(ctx, ranges) : null,
      };
      const out = () => ({ z: ctx.activation([rows, E], 'z'), pattern: ctx.activation([heads, rows, rows], 'pattern') });
      const [a, b] = [out(), out()];
      const rec = ctx.recorder();
      attention(ctx, rec, { ...base, q, k, v, ...a });
      attention(ctx, rec, { ...base, q: fused, k: fused, v: fused, qStride: W, kOffset: E, vOffset: E + kvE, kvStride: W, ...b });
      rec.submit();
      const want = reference({ rows, heads, kvHeads, headDim: D, nKeys: rows, causal: false, pos0: 0, temp: [0, rows], ranges }, qs, ks, vs, hs, img, null);
      const [za, zb] = [await read(ctx, a.z), await read(ctx, b.z)];
      expectClose(za, want.z, 2e-5, 1e-4, 'z');
      expect(Array.from(zb)).toEqual(Array.from(za));
      expect(Array.from(await read(ctx, b.pattern))).toEqual(Array.from(await read(ctx, a.pattern)));
    });
  }

  it('a slice of query rows of the fused buffer (qRow with qStride), causal', async () => {
    const ctx = await gpuContext();
    const [rows, heads, D] = [30, 3, 8];
    const E = heads * D;
    const qkv = randn(rows * 3 * E, 51, 2);
    const fused = ctx.uploadF32(qkv, [rows, 3 * E], 'qkv');
    const pick = (col: number) => {
      const out = new Float32Array(rows * E);
      for (let i = 0; i < rows; i++) out.set(qkv.subarray(i * 3 * E + col, i * 3 * E + col + E), i * E);
      return out;
    };
    const [qs, ks, vs] = [pick(0), pick(E), pick(2 * E)];
    const hs = new Float32Array([1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0]);
    const hp = ctx.uploadF32(hs, [heads, HP], 'hp');
    const img = new Uint32Array(rows);
    const ki = ctx.uploadTensor(new Uint8Array(img.buffer), [rows], 'f32', 'ki');
    const [qRow, n] = [11, 19];
    const z = ctx.activation([n, E], 'z');
    const rec = ctx.recorder();
    attention(ctx, rec, {
      q: fused, qRow, qStride: 3 * E, rows: n, heads, kvHeads: heads, headDim: D, k: fused, v: fused, kOffset: E, vOffset: 2 * E,
      kvStride: 3 * E, nKeys: rows, causal: true, pos0: qRow, headParams: hp.buffer, keyIsImage: ki.buffer, z,
    });
    rec.submit();
    const want = reference({ rows: n, heads, kvHeads: heads, headDim: D, nKeys: rows, causal: true, pos0: qRow }, qs.subarray(qRow * E), ks, vs, hs, img, null);
    expectClose(await read(ctx, z), want.z, 2e-5, 1e-4, 'z');
  });
});

describe('vec4 K / V loads (KV4) and scalar loads', () => {
  it('the rule: vec4 only when head_dim, the kv stride and both offsets are multiples of 4', () => {
    const aligned = { headDim: 64, kvStride: 128, kOffset: 0, vOffset: 256 };
    expect(attentionKvVec4(aligned)).toBe(true);
    for (const change of [{ headDim: 30 }, { headDim: 130 }, { kvStride: 130 }, { kOffset: 1 }, { vOffset: 258 }]) {
      expect(attentionKvVec4({ ...aligned, ...change }), JSON.stringify(change)).toBe(false);
    }
  });

  it('no keys at all: z is 0 on both paths (bindRange rounds the K / V bindings up to whole vec4s)', async () => {
    const ctx = await gpuContext();
    for (const D of [8, 6]) {
      const [rows, heads] = [2, 2];
      const k = ctx.uploadF32(randn(heads * D, 71, 1), [1, heads * D], 'k');
      const z = ctx.uploadF32(new Float32Array(rows * heads * D).fill(7), [rows, heads * D], 'z');
      const rec = ctx.recorder();
      attention(ctx, rec, {
        q: ctx.uploadF32(randn(rows * heads * D, 72, 1), [rows, heads * D], 'q'), rows, heads, kvHeads: heads, headDim: D, k, v: k, nKeys: 0,
        causal: false, pos0: 0, headParams: ctx.uploadF32(new Float32Array([1, 1, 0, 0, 1, 1, 0, 0]), [heads, HP], 'hp').buffer,
        keyIsImage: ctx.activation([1], 'ki').buffer, z,
      });
      rec.submit();
      expect(Array.from(await read(ctx, z)), `D ${D}`).toEqual(new Array(rows * heads * D).fill(0));
    }
  });

  // The same keys and values read both ways: separate aligned tensors (vec4), and views one float into a padded
  // buffer (kOffset / vOffset 1: scalar), single pass and split KV, every per-head parameter on, against float64.
  for (const split of [false, { chunk: 24 }] as const) {
    it(`same z both ways and as the float64 reference, GQA 4/2, D 64, 53 causal keys${split ? ', split KV' : ''}`, async () => {
      const ctx = await gpuContext();
      const [rows, heads, kvHeads, D, nKeys] = [3, 4, 2, 64, 53];
      const [E, kvE] = [heads * D, kvHeads * D];
      const qs = randn(rows * E, 61, 1);
      const ks = randn(nKeys * kvE, 62, 1);
      const vs = randn(nKeys * kvE, 63, 1);
      const padded = (x: Float32Array, label: string) => {
        const buf = new Float32Array(x.length + 1);
        buf.set(x, 1);
        buf[0] = Number.NaN; // read by neither path
        return ctx.uploadF32(buf, [buf.length], label);
      };
      const hs = new Float32Array(HP * heads);
      const hu = new Uint32Array(hs.buffer);
      for (let h = 0; h < heads; h++) hs.set([[1, 0.5, 2.5, 1][h], [0.5, 1, 2, 1.5][h]], HP * h);
      hu[HP * 3 + 2] = 1; // head 3 mean-ablated
      hu[HP * 1 + 3] = 1; // head 1 steered on scope 1
      const vec = randn(heads * 2 * D, 64, 1);
      const img = new Uint32Array(nKeys).map((_, j) => (j % 3 === 1 ? 1 : 0));
      const base = {
        q: ctx.uploadF32(qs, [rows, E], 'q'), rows, heads, kvHeads, headDim: D, nKeys, causal: true, pos0: nKeys - rows,
        headParams: ctx.uploadF32(hs, [heads, HP], 'hp').buffer, keyIsImage: ctx.uploadTensor(new Uint8Array(img.buffer), [nKeys], 'f32', 'ki').buffer,
        headVectors: ctx.uploadF32(vec, [heads * 2 * D], 'vec').buffer, tempRows: [0, rows] as [number, number], steerRows: [[0, rows]] as [number, number][],
        split, tiled: false,
      };
      expect(attentionKvVec4({ headDim: D, kvStride: kvE, kOffset: 1, vOffset: 1 })).toBe(false);
      const zv = ctx.activation([rows, E], 'z.vec4');
      const zs = ctx.activation([rows, E], 'z.scalar');
      const rec = ctx.recorder();
      attention(ctx, rec, { ...base, k: ctx.uploadF32(ks, [nKeys, kvE], 'k'), v: ctx.uploadF32(vs, [nKeys, kvE], 'v'), z: zv });
      attention(ctx, rec, { ...base, k: padded(ks, 'k.pad'), v: padded(vs, 'v.pad'), kOffset: 1, vOffset: 1, kvStride: kvE, z: zs });
      rec.submit();
      const want = reference({ rows, heads, kvHeads, headDim: D, nKeys, causal: true, pos0: nKeys - rows, temp: [0, rows], steer: [[0, rows]] }, qs, ks, vs, hs, img, vec);
      const [a, b] = [await read(ctx, zv), await read(ctx, zs)];
      expectClose(a, want.z, 2e-5, 1e-4, 'vec4 z');
      expectClose(b, want.z, 2e-5, 1e-4, 'scalar z');
      expectClose(a, b, 1e-6, 1e-5, 'vec4 vs scalar');
    });
  }
});

describe('attention launcher rejects views that do not fit', () => {
  it('names the label and the view', async () => {
    const ctx = await gpuContext();
    const [rows, heads, D] = [5, 2, 8];
    const E = heads * D;
    const fused = ctx.activation([rows, 3 * E], 'qkv');
    const hp = ctx.activation([heads, HP], 'hp');
    const ki = ctx.activation([rows], 'ki');
    const z = ctx.activation([rows, E], 'z');
    const ok = {
      q: fused, qStride: 3 * E, rows, heads, kvHeads: heads, headDim: D, k: fused, v: fused, kOffset: E, vOffset: 2 * E, kvStride: 3 * E,
      nKeys: rows, causal: false, pos0: 0, headParams: hp.buffer, keyIsImage: ki.buffer, z, label: 'L3.attn',
    };
    const rec = ctx.recorder();
    expect(() => attention(ctx, rec, ok)).not.toThrow();
    const bad: [Partial<AttentionArgs>, RegExp][] = [
      [{ qStride: E - 1 }, /^L3\.attn: query view \(stride 15\) of qkv \[5, 48\] does not hold rows 0\.\.5 of width 16/],
      [{ qRow: 1 }, /^L3\.attn: query view .* does not hold rows 1\.\.6/],
      [{ qStride: undefined }, /^L3\.attn: query qkv \[5, 48\] does not hold rows 0\.\.5 of width 16/],
      [{ kvStride: E - 1 }, /^L3\.attn: key view \(offset 16, stride 15\) of qkv/],
      [{ kOffset: 2 * E + 1 }, /^L3\.attn: key view \(offset 33, stride 48\) of qkv \[5, 48\] does not hold 5 keys of width 16/],
      [{ vOffset: 2 * E + 1 }, /^L3\.attn: value view \(offset 33, stride 48\)/],
      [{ nKeys: rows + 1 }, /^L3\.attn: key view .* does not hold 6 keys/],
      [{ kOffset: -1 }, /^L3\.attn: kOffset -1 is not a non-negative integer/],
      [{ qStride: 1.5 }, /^L3\.attn: qStride 1\.5 is not a non-negative integer/],
      [{ keyRanges: ctx.activation([2 * rows - 1], 'kr').buffer }, /^L3\.attn: key ranges of 36 bytes do not hold pairs 0\.\.5/],
      [{ keyRanges: ctx.activation([2 * rows], 'kr').buffer, keyRangeRow: 1 }, /^L3\.attn: key ranges of 40 bytes do not hold pairs 1\.\.6/],
    ];
    for (const [change, message] of bad) expect(() => attention(ctx, rec, { ...ok, ...change }), JSON.stringify(Object.keys(change))).toThrow(message);
    rec.submit();
  });
});
