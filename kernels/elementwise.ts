// Launcher for shaders/elementwise.wgsl: gated activations (SwiGLU / GeGLU), addition and strided row copies
// over f32 row views, one invocation per element with the workgroup count folded over x and y.

import source from '../shaders/elementwise.wgsl';
import type { GpuContext, Recorder } from '../src/gpu/context.js';
import { Uniforms, fold } from '../src/gpu/context.js';
import { type Activation, type RowView, activationDefines, assemble, checkView } from './common.js';

const WG = 256;

export interface GatedActArgs {
  gate: RowView;
  up: RowView;
  /** act(gate) * up; must not share a buffer with gate or up. */
  out: RowView;
  act: Activation;
}

export interface AddArgs {
  a: RowView;
  b: RowView;
  /** a + b; must not share a buffer with a or b. */
  out: RowView;
}

export interface CopyRowsArgs {
  src: RowView;
  /** Same rows x cols as src, any offset / stride; must not share a buffer with src. */
  dst: RowView;
}

/** out = act(gate) * up element-wise (SwiGLU with silu, GeGLU with gelu / gelu_tanh). */
export function gatedAct(ctx: GpuContext, rec: Recorder, a: GatedActArgs): void {
  launch(ctx, rec, 'gatedAct', 'gated_act', a.act, [a.gate, 'gate'], [a.up, 'up'], a.out);
}

/** out = a + b element-wise. */
export function add(ctx: GpuContext, rec: Recorder, a: AddArgs): void {
  launch(ctx, rec, 'add', 'add', 'none', [a.a, 'a'], [a.b, 'b'], a.out);
}

/** dst[r, c] = src[r, c] for r < rows, c < cols (drop rows, write column slices, concatenate along columns). */
export function copyRows(ctx: GpuContext, rec: Recorder, a: CopyRowsArgs): void {
  launch(ctx, rec, 'copyRows', 'copy_rows', 'none', [a.src, 'source'], null, a.dst);
}

function launch(
  ctx: GpuContext,
  rec: Recorder,
  fn: string,
  entryPoint: string,
  act: Activation,
  [x, xWhat]: [RowView, string],
  second: [RowView, string] | null,
  out: RowView,
): void {
  const outWhat = fn === 'copyRows' ? 'destination' : 'output';
  checkView(fn, x, xWhat, false);
  if (second) checkView(fn, second[0], second[1], false);
  checkView(fn, out, outWhat, true);
  const inputs: [RowView, string][] = second ? [[x, xWhat], second] : [[x, xWhat]];
  for (const [v, what] of inputs) {
    if (v.rows !== out.rows || v.cols !== out.cols) {
      throw new Error(
        `${fn}: ${what} ${v.tensor.label} view is ${v.rows}x${v.cols} but ${outWhat} ${out.tensor.label} view is ${out.rows}x${out.cols}`,
      );
    }
    if (v.tensor.buffer === out.tensor.buffer) {
      throw new Error(
        `${fn}: ${what} ${v.tensor.label} and ${outWhat} ${out.tensor.label} share a buffer; WebGPU forbids binding a buffer ` +
          'as both read and read-write storage in one dispatch, so write into another tensor',
      );
    }
  }
  const total = out.rows * out.cols;
  if (total > 0xffffffff) throw new Error(`${fn}: ${total} elements exceed the kernel's 32-bit index`);
  const asm = assemble(source, {}, { activations: true });
  const kernel = ctx.kernel({
    name: 'elementwise',
    source: asm.source,
    entryPoint,
    defines: { ...asm.defines, ...activationDefines(act) },
    constants: { WG },
    bindings: ['uniform', 'read', second ? 'read' : null, 'write'],
  });
  const u = new Uniforms()
    .u32(total)
    .u32(out.cols)
    .u32(x.offset)
    .u32(x.stride)
    .u32(second?.[0].offset ?? 0)
    .u32(second?.[0].stride ?? 0)
    .u32(out.offset)
    .u32(out.stride)
    .done();
  rec.dispatch(
    kernel,
    u,
    [null, x.tensor.buffer, second?.[0].tensor.buffer ?? null, out.tensor.buffer],
    fold(Math.ceil(total / WG), ctx.limits.maxComputeWorkgroupsPerDimension),
    `${fn} ${out.tensor.label}`,
  );
}
