// Launcher for shaders/matmul.wgsl: y = act(x · Wᵀ + b) + residual, W in its stored dtype.

import source from '../shaders/matmul.wgsl';
import type { GpuContext, Recorder } from '../src/gpu/context.js';
import { Uniforms } from '../src/gpu/context.js';
import { type Tensor, type Weight, weightParts } from '../src/gpu/tensor.js';
import { type Activation, type RowView, activationDefines, assemble } from './common.js';

const WG = 8;
const TILE = 4;

export interface MatmulArgs {
  x: RowView;
  /** Weight [N, K] (Hugging Face Linear layout), possibly split in row blocks over several buffers. */
  w: Weight;
  b?: Tensor | null;
  residual?: RowView | null;
  out: RowView;
  act?: Activation;
}

export function matmul(ctx: GpuContext, rec: Recorder, a: MatmulArgs): void {
  const [N, K] = a.w.shape;
  const M = a.x.rows;
  if (a.w.shape.length !== 2) throw new Error(`matmul: weight ${a.w.label} must be 2-D, got [${a.w.shape.join(', ')}]`);
  if (a.x.cols !== K) throw new Error(`matmul: ${a.x.tensor.label} has ${a.x.cols} columns but ${a.w.label} expects ${K}`);
  if (a.out.rows !== M || a.out.cols !== N) {
    throw new Error(`matmul: output ${a.out.tensor.label} view is ${a.out.rows}x${a.out.cols}, expected ${M}x${N}`);
  }
  if (a.b && a.b.numel !== N) throw new Error(`matmul: bias ${a.b.label} has ${a.b.numel} elements, expected ${N}`);
  if (a.residual && (a.residual.rows !== M || a.residual.cols !== N)) {
    throw new Error(`matmul: residual ${a.residual.tensor.label} view is ${a.residual.rows}x${a.residual.cols}, expected ${M}x${N}`);
  }
  // A weight split in row blocks is N = sum of block rows: one dispatch per block into its output columns.
  for (const { tensor, rowStart } of weightParts(a.w)) {
    const n = tensor.shape[0];
    matmulBlock(ctx, rec, a, tensor, rowStart, n, M, K);
  }
}

function matmulBlock(ctx: GpuContext, rec: Recorder, a: MatmulArgs, w: Tensor, n0: number, N: number, M: number, K: number): void {
  // Vector loads need K, the x view and (for 16-bit weights, two per u32) every W row on 4-element boundaries.
  const vec4 = K % 4 === 0 && a.x.offset % 4 === 0 && a.x.stride % 4 === 0;
  const weights: Record<string, Tensor['dtype']> = vec4 ? {} : { w: w.dtype };
  if (a.b) weights.b = a.b.dtype;
  const asm = assemble(source, weights, { activations: true });
  // Few rows (decode steps): one row of 64 threads per workgroup instead of 8x8, so no thread idles.
  const [wgX, wgY] = M <= TILE ? [64, 1] : [WG, WG];
  const kernel = ctx.kernel({
    name: 'matmul',
    source: asm.source,
    defines: {
      ...asm.defines,
      ...activationDefines(a.act ?? 'none'),
      HAS_BIAS: !!a.b,
      HAS_RESIDUAL: !!a.residual,
      VEC4: vec4,
      [`W_${w.dtype.toUpperCase()}`]: true,
    },
    constants: { WG_X: wgX, WG_Y: wgY },
    bindings: ['uniform', 'read', 'read', a.b ? 'read' : null, a.residual ? 'read' : null, 'write'],
  });
  const u = new Uniforms()
    .u32(M)
    .u32(N)
    .u32(K)
    .u32(a.x.offset)
    .u32(a.x.stride)
    .u32(a.out.offset + n0)
    .u32(a.out.stride)
    .u32((a.residual?.offset ?? 0) + n0)
    .u32(a.residual?.stride ?? 0)
    .u32(n0)
    .done();
  rec.dispatch(
    kernel,
    u,
    [null, a.x.tensor.buffer, w.buffer, a.b?.buffer ?? null, a.residual?.tensor.buffer ?? null, a.out.tensor.buffer],
    [Math.ceil(N / (wgX * TILE)), Math.ceil(M / (wgY * TILE))],
    `matmul ${w.label}`,
  );
}
