// Launcher for shaders/patch.wgsl: im2col of an image into patch rows (the Conv2d patch embedding becomes
// im2col · Wᵀ with W [E, C*P*P]), and the class / position embedding step of CLIP and SigLIP.

import source from '../shaders/patch.wgsl';
import type { GpuContext, Recorder } from '../src/gpu/context.js';
import { Uniforms, fold } from '../src/gpu/context.js';
import type { Tensor } from '../src/gpu/tensor.js';
import { assemble, checkDtype } from './common.js';

const WG = 256;

export interface Im2colArgs {
  /** f32 [C, H, W] pixel values. */
  pixels: Tensor;
  patch: number;
  /** f32 [gh*gw, C*patch*patch] with gh = floor(H/patch), gw = floor(W/patch) (Conv2d drops a remainder). */
  out: Tensor;
}

export interface PositionEmbedArgs {
  /** f32 [Np, E] patch embeddings. */
  patches: Tensor;
  /** [E] class embedding in its stored dtype (CLIP), or null (SigLIP). */
  cls: Tensor | null;
  /** [Np (+1 with cls), E] position embedding in its stored dtype. */
  pos: Tensor;
  /** f32 [Np (+1 with cls), E]. */
  out: Tensor;
}

/** out[n, c*P*P + py*P + px] = pixels[c, (n / gw)*P + py, (n % gw)*P + px]. */
export function im2col(ctx: GpuContext, rec: Recorder, a: Im2colArgs): void {
  const { pixels, patch: P, out } = a;
  checkDtype(pixels, ['f32'], 'im2col pixels');
  checkDtype(out, ['f32'], 'im2col output');
  if (pixels.shape.length !== 3) throw new Error(`im2col: pixels ${pixels.label} must be [C, H, W], got [${pixels.shape.join(', ')}]`);
  const [C, H, W] = pixels.shape;
  if (!Number.isInteger(P) || P < 1) throw new Error(`im2col: patch size must be a positive integer, got ${P}`);
  if (H < P || W < P) throw new Error(`im2col: pixels ${pixels.label} [${pixels.shape.join(', ')}] are smaller than one ${P}x${P} patch`);
  const gh = Math.floor(H / P);
  const gw = Math.floor(W / P);
  const cols = C * P * P;
  if (out.shape.length !== 2 || out.shape[0] !== gh * gw || out.shape[1] !== cols) {
    throw new Error(`im2col: output ${out.label} has shape [${out.shape.join(', ')}], expected [${gh * gw}, ${cols}] (${gh}x${gw} patches of ${C}x${P}x${P})`);
  }
  if (pixels.buffer === out.buffer) throw new Error(`im2col: pixels ${pixels.label} and output ${out.label} share a buffer`);
  const total = gh * gw * cols;
  if (total > 0xffffffff) throw new Error(`im2col: ${total} elements exceed the kernel's 32-bit index`);
  const asm = assemble(source, {});
  const kernel = ctx.kernel({
    name: 'patch',
    source: asm.source,
    defines: { ...asm.defines, IM2COL: true },
    constants: { WG },
    bindings: ['uniform', 'read', null, null, 'write'],
  });
  const u = new Uniforms().u32(total).u32(cols).u32(P).u32(W).u32(H * W).u32(gw).done();
  rec.dispatch(
    kernel,
    u,
    [null, pixels.buffer, null, null, out.buffer],
    fold(Math.ceil(total / WG), ctx.limits.maxComputeWorkgroupsPerDimension),
    `im2col ${pixels.label}`,
  );
}

/** CLIP: out[0] = cls + pos[0], out[1+n] = patches[n] + pos[1+n]; SigLIP (cls null): out[n] = patches[n] + pos[n]. */
export function positionEmbed(ctx: GpuContext, rec: Recorder, a: PositionEmbedArgs): void {
  const { patches, cls, pos, out } = a;
  checkDtype(patches, ['f32'], 'positionEmbed patches');
  checkDtype(out, ['f32'], 'positionEmbed output');
  if (patches.shape.length !== 2) throw new Error(`positionEmbed: patches ${patches.label} must be [Np, E], got [${patches.shape.join(', ')}]`);
  const [Np, E] = patches.shape;
  const n = Np + (cls ? 1 : 0);
  if (cls && cls.numel !== E) throw new Error(`positionEmbed: class embedding ${cls.label} has ${cls.numel} elements, expected ${E} like ${patches.label}`);
  if (pos.shape.length !== 2 || pos.shape[0] !== n || pos.shape[1] !== E) {
    throw new Error(
      `positionEmbed: position embedding ${pos.label} has shape [${pos.shape.join(', ')}], expected [${n}, ${E}] ` +
        `(${Np} patches${cls ? ' + class' : ''})`,
    );
  }
  if (out.shape.length !== 2 || out.shape[0] !== n || out.shape[1] !== E) {
    throw new Error(`positionEmbed: output ${out.label} has shape [${out.shape.join(', ')}], expected [${n}, ${E}]`);
  }
  if (patches.buffer === out.buffer) throw new Error(`positionEmbed: patches ${patches.label} and output ${out.label} share a buffer`);
  const total = n * E;
  if (total > 0xffffffff) throw new Error(`positionEmbed: ${total} elements exceed the kernel's 32-bit index`);
  const weights: Record<string, Tensor['dtype']> = { pos: pos.dtype };
  if (cls) weights.cls = cls.dtype;
  const asm = assemble(source, weights);
  const kernel = ctx.kernel({
    name: 'patch',
    source: asm.source,
    defines: { ...asm.defines, HAS_CLS: !!cls },
    constants: { WG },
    bindings: ['uniform', 'read', cls ? 'read' : null, 'read', 'write'],
  });
  const u = new Uniforms().u32(total).u32(E).u32(0).u32(0).u32(0).u32(0).done();
  rec.dispatch(
    kernel,
    u,
    [null, patches.buffer, cls?.buffer ?? null, pos.buffer, out.buffer],
    fold(Math.ceil(total / WG), ctx.limits.maxComputeWorkgroupsPerDimension),
    `positionEmbed ${pos.label}`,
  );
}
