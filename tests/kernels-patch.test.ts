import { describe, expect, it } from 'vitest';
import { im2col, positionEmbed } from '../kernels/patch.js';
import { matmul } from '../kernels/matmul.js';
import { rows } from '../kernels/common.js';
import { GpuContext } from '../src/gpu/context.js';
import { expectClose, gpuContext, randn, read, upload } from './helpers/gpu.js';
import type { DType } from '../src/gpu/tensor.js';

/** The same device seen with a lower workgroups-per-dimension limit, so the folded dispatch runs cheaply. */
function lowLimit(ctx: GpuContext, max: number): GpuContext {
  return new GpuContext({ ...ctx.gpu, limits: { ...ctx.gpu.limits, maxComputeWorkgroupsPerDimension: max } });
}

function refIm2col(px: Float32Array, C: number, H: number, W: number, P: number): Float32Array {
  const gh = Math.floor(H / P);
  const gw = Math.floor(W / P);
  const cols = C * P * P;
  const out = new Float32Array(gh * gw * cols);
  for (let gy = 0; gy < gh; gy++)
    for (let gx = 0; gx < gw; gx++)
      for (let c = 0; c < C; c++)
        for (let py = 0; py < P; py++)
          for (let qx = 0; qx < P; qx++)
            out[(gy * gw + gx) * cols + c * P * P + py * P + qx] = px[c * H * W + (gy * P + py) * W + gx * P + qx];
  return out;
}

/** torch conv2d(stride = kernel = P, no padding) in float64: y[n, e] for patch n = gy*gw + gx. */
function refConv(px: Float32Array, w: Float32Array, E: number, C: number, H: number, W: number, P: number): Float64Array {
  const gh = Math.floor(H / P);
  const gw = Math.floor(W / P);
  const y = new Float64Array(gh * gw * E);
  for (let gy = 0; gy < gh; gy++)
    for (let gx = 0; gx < gw; gx++)
      for (let e = 0; e < E; e++) {
        let s = 0;
        for (let c = 0; c < C; c++)
          for (let ky = 0; ky < P; ky++)
            for (let kx = 0; kx < P; kx++) s += w[((e * C + c) * P + ky) * P + kx] * px[c * H * W + (gy * P + ky) * W + gx * P + kx];
        y[(gy * gw + gx) * E + e] = s;
      }
  return y;
}

describe('im2col kernel', () => {
  const cases: [number, number, number, number][] = [
    [1, 1, 1, 1],
    [3, 8, 8, 4],
    [3, 28, 20, 7], // non-square
    [3, 31, 34, 5], // remainders dropped like Conv2d
    [3, 224, 224, 14], // CLIP-L/14 at 224: 256 x 588
    [4, 6, 1000, 2], // rows wider than a workgroup
  ];
  for (const [C, H, W, P] of cases) {
    it(`C=${C} H=${H} W=${W} patch=${P}`, async () => {
      const ctx = await gpuContext();
      const px = randn(C * H * W, H + W);
      const pixels = ctx.uploadF32(px, [C, H, W], 'pixel_values');
      const n = Math.floor(H / P) * Math.floor(W / P);
      const out = ctx.activation([n, C * P * P], 'patches');
      const rec = ctx.recorder();
      im2col(ctx, rec, { pixels, patch: P, out });
      rec.submit();
      expectClose(await read(ctx, out), refIm2col(px, C, H, W, P), 0);
    });
  }

  for (const dtype of ['f32', 'f16', 'bf16'] as DType[]) {
    it(`im2col · Wᵀ equals a float64 Conv2d (${dtype} weight)`, async () => {
      const ctx = await gpuContext();
      const [C, H, W, P, E] = [3, 21, 14, 7, 10];
      const px = randn(C * H * W, 31);
      const pixels = ctx.uploadF32(px, [C, H, W], 'pixel_values');
      const [w, wq] = upload(ctx, randn(E * C * P * P, 32, 0.2), [E, C * P * P], dtype, 'patch_embedding.weight');
      const n = (H / P) * (W / P);
      const patches = ctx.activation([n, C * P * P], 'patches');
      const y = ctx.activation([n, E], 'patch_embeds');
      const rec = ctx.recorder();
      im2col(ctx, rec, { pixels, patch: P, out: patches });
      matmul(ctx, rec, { x: rows(patches), w, out: rows(y) });
      rec.submit();
      expectClose(await read(ctx, y), refConv(px, wq, E, C, H, W, P), 1e-5, 1e-5, 'conv');
    });
  }

  it('folds a large element count over a 2-D dispatch (limit lowered to 9)', async () => {
    const ctx = lowLimit(await gpuContext(), 9);
    const [C2, H2, W2, P] = [3, 40, 48, 4]; // 120 patches x 48 = 5760 elements = 23 workgroups -> [8, 3]
    const px = randn(C2 * H2 * W2, 77);
    const pixels = ctx.uploadF32(px, [C2, H2, W2], 'pixel_values');
    const out = ctx.activation([(H2 / P) * (W2 / P), C2 * P * P], 'patches');
    const rec = ctx.recorder();
    im2col(ctx, rec, { pixels, patch: P, out });
    rec.submit();
    expectClose(await read(ctx, out), refIm2col(px, C2, H2, W2, P), 0);
  });

  it('refuses an output of the wrong shape, naming it', async () => {
    const ctx = await gpuContext();
    const pixels = ctx.activation([3, 16, 16], 'pixel_values');
    const out = ctx.activation([16, 47], 'patches');
    expect(() => im2col(ctx, ctx.recorder(), { pixels, patch: 4, out })).toThrow(
      /output patches has shape \[16, 47\], expected \[16, 48\] \(4x4 patches of 3x4x4\)/,
    );
  });
});

describe('positionEmbed kernel', () => {
  const cases: [number, number, DType, boolean][] = [
    [1, 1, 'f32', true],
    [4, 7, 'f32', true],
    [16, 1000, 'f16', true], // CLIP
    [9, 4099, 'bf16', true],
    [16, 33, 'bf16', false], // SigLIP
    [7, 1000, 'f16', false],
  ];
  for (const [Np, E, dtype, withCls] of cases) {
    it(`Np=${Np} E=${E} ${dtype} cls=${withCls}`, async () => {
      const ctx = await gpuContext();
      const n = Np + (withCls ? 1 : 0);
      const ps = randn(Np * E, Np + E);
      const patches = ctx.uploadF32(ps, [Np, E], 'patch_embeds');
      const [cls, cq] = withCls ? upload(ctx, randn(E, 2 + E), [E], dtype, 'class_embedding') : [null, null];
      const [pos, pq] = upload(ctx, randn(n * E, 3 + E), [n, E], dtype, 'position_embedding.weight');
      const out = ctx.activation([n, E], 'embeddings');
      const rec = ctx.recorder();
      positionEmbed(ctx, rec, { patches, cls, pos, out });
      rec.submit();
      const want = new Float64Array(n * E);
      for (let r = 0; r < n; r++)
        for (let e = 0; e < E; e++) {
          const x = withCls ? (r === 0 ? cq![e] : ps[(r - 1) * E + e]) : ps[r * E + e];
          want[r * E + e] = x + pq[r * E + e];
        }
      expectClose(await read(ctx, out), want, 1e-6, 1e-6, 'positionEmbed');
    });
  }

  it('folds over a 2-D dispatch (limit lowered to 3)', async () => {
    const ctx = lowLimit(await gpuContext(), 3);
    const [Np, E] = [12, 170]; // 13 x 170 = 2210 elements = 9 workgroups -> [3, 3]
    const ps = randn(Np * E, 1);
    const patches = ctx.uploadF32(ps, [Np, E], 'patch_embeds');
    const [cls, cq] = upload(ctx, randn(E, 2), [E], 'f16', 'class_embedding');
    const [pos, pq] = upload(ctx, randn((Np + 1) * E, 3), [Np + 1, E], 'f16', 'position_embedding.weight');
    const out = ctx.activation([Np + 1, E], 'embeddings');
    const rec = ctx.recorder();
    positionEmbed(ctx, rec, { patches, cls, pos, out });
    rec.submit();
    const want = Float64Array.from({ length: (Np + 1) * E }, (_, i) => (i < E ? cq[i] : ps[i - E]) + pq[i]);
    expectClose(await read(ctx, out), want, 1e-6, 1e-6);
  });

  it('refuses a position table that does not match the patches, naming it', async () => {
    const ctx = await gpuContext();
    const patches = ctx.activation([16, 8], 'patch_embeds');
    const cls = ctx.activation([8], 'class_embedding');
    const pos = ctx.activation([16, 8], 'position_embedding.weight');
    const out = ctx.activation([17, 8], 'embeddings');
    expect(() => positionEmbed(ctx, ctx.recorder(), { patches, cls, pos, out })).toThrow(
      /position embedding position_embedding.weight has shape \[16, 8\], expected \[17, 8\] \(16 patches \+ class\)/,
    );
  });
});
