import { describe, expect, it } from 'vitest';
import { attention } from '../kernels/attention.js';
import type { BufferRef } from '../src/gpu/context.js';
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
}

/** HeadParams per head: {scale: f32, alpha: f32, replace: u32, steer: u32}. */
const HP = 4;

/**
 * float64 reference of the contract: scores scaled, image keys x alpha on temp rows, causal skip, softmax; then
 * z = scale * (replace ? mean : softmax · V) + (row in the head's steering scope ? add : 0), the vector part only
 * when head vectors are bound.
 */
function reference(c: Case, q: Float32Array, k: Float32Array, v: Float32Array, hs: Float32Array, img: Uint32Array, vec: Float32Array | null) {
  const hu = new Uint32Array(hs.buffer, hs.byteOffset, hs.length);
  const { rows, heads, kvHeads, headDim: D, nKeys } = c;
  const z = new Float64Array(rows * heads * D);
  const pat = new Float64Array(heads * rows * nKeys);
  for (let i = 0; i < rows; i++)
    for (let h = 0; h < heads; h++) {
      const kvh = Math.floor(h / (heads / kvHeads));
      const nk = c.causal ? Math.min(nKeys, c.pos0 + i + 1) : nKeys;
      const inTemp = c.temp && i >= c.temp[0] && i < c.temp[1];
      const s = new Float64Array(nk);
      let m = -Infinity;
      for (let j = 0; j < nk; j++) {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[(i * heads + h) * D + d] * k[(j * kvHeads + kvh) * D + d];
        dot /= Math.sqrt(D);
        if (inTemp && img[j]) dot *= hs[HP * h + 1];
        s[j] = dot;
        m = Math.max(m, dot);
      }
      let sum = 0;
      for (let j = 0; j < nk; j++) sum += Math.exp(s[j] - m);
      for (let j = 0; j < nk; j++) {
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
        if (hu[HP * h + 2]) z[o] = hs[HP * h] * vec[(2 * h) * D + d];
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

describe('attention kernel vs float64 reference', () => {
  const cases: Case[] = [
    { rows: 1, heads: 1, kvHeads: 1, headDim: 1, nKeys: 1, causal: false, pos0: 0 },
    { rows: 29, heads: 4, kvHeads: 4, headDim: 16, nKeys: 29, causal: true, pos0: 0, temp: [28, 29] },
    { rows: 17, heads: 6, kvHeads: 2, headDim: 24, nKeys: 17, causal: false, pos0: 0, temp: [0, 17] }, // GQA, non-causal (vision)
    { rows: 1, heads: 8, kvHeads: 2, headDim: 64, nKeys: 150, causal: true, pos0: 149, temp: [0, 1] }, // decode step, GQA
    { rows: 70, heads: 3, kvHeads: 1, headDim: 130, nKeys: 200, causal: true, pos0: 130 }, // chunked prefill, D > WG
    { rows: 9, heads: 4, kvHeads: 2, headDim: 100, nKeys: 75, causal: true, pos0: 66 }, // 32-thread workgroups, keys cross 3 chunks
    { rows: 3, heads: 2, kvHeads: 2, headDim: 256, nKeys: 131, causal: false, pos0: 0 }, // D at the limit, keys cross chunks
    // Head vectors: heads mix plain, scaled, mean-ablated, steered per scope, and ablated + scaled + steered.
    { rows: 29, heads: 8, kvHeads: 2, headDim: 16, nKeys: 29, causal: true, pos0: 0, temp: [28, 29], vectors: true, steer: [[0, 29], [28, 29], [0, 0]] }, // prefill, GQA
    { rows: 1, heads: 6, kvHeads: 3, headDim: 64, nKeys: 40, causal: true, pos0: 39, vectors: 'slot', steer: [[0, 1], [0, 0], [0, 1]] }, // decode step, GQA
    { rows: 17, heads: 5, kvHeads: 5, headDim: 130, nKeys: 17, causal: false, pos0: 0, vectors: true, steer: [[0, 17]] }, // vision-like, D > WG
    { rows: 12, heads: 10, kvHeads: 5, headDim: 8, nKeys: 30, causal: true, pos0: 18, vectors: 'slot', steer: [[2, 5], [7, 9], [0, 3]] }, // odd row ranges
  ];
  for (const c of cases) {
    it(JSON.stringify(c), async () => {
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
        hu[HP * h + 2] = replace;
        hu[HP * h + 3] = steer;
      }
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
      const pattern = ctx.activation([c.heads, c.rows, c.nKeys], 'pattern');
      const rec = ctx.recorder();
      attention(ctx, rec, {
        q, rows: c.rows, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, k, v, nKeys: c.nKeys,
        causal: c.causal, pos0: c.pos0, headParams: hp.buffer, keyIsImage: ki.buffer, tempRows: c.temp, z, pattern,
        headVectors, steerRows: c.steer,
      });
      rec.submit();
      const want = reference(c, qs, ks, vs, hs, img, vec);
      expectClose(await read(ctx, z), want.z, 2e-5, 1e-4, 'z');
      expectClose(await read(ctx, pattern), want.pat, 2e-6, 1e-4, 'pattern');
    });
  }

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
