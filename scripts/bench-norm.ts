// The norm part of `npm run bench:kernels` (BENCH_KERNELS=norm): the row reductions in their subgroup form against
// their plain form (shaders/workgroup.wgsl) on the same device in the same process: two GpuContexts over one Gpu,
// one with ContextOptions.subgroups, one without. rmsNorm at decode (1 row) and prefill (64 rows) widths of 1024
// and 4096 columns, and argmax over one row of a vocabulary (32064: LLaVA, 151937: Qwen2).
//
// Timing as in bench-attention: `inner` calls recorded into one step, submitted, waited for; CPU time of this process
// (SwiftShader runs the kernels on its threads) and wall time per call; the ratio is the median over repetitions of
// (subgroup / plain in the same repetition), so < 1 means the subgroup form is faster. The order alternates per
// repetition. Outputs are checked against each other before timing (norm within 1e-5 relative, argmax equal).

import { GpuContext } from '../src/gpu/context.js';
import type { Recorder } from '../src/gpu/context.js';
import type { Tensor } from '../src/gpu/tensor.js';
import { rows } from '../kernels/common.js';
import { rmsNorm } from '../kernels/norm.js';
import { argmax } from '../kernels/reduce.js';

export interface NormBenchOptions {
  reps: number;
  /** Per measurement: calls are repeated until one measurement takes about this long. */
  minMs: number;
  random(n: number, seed: number, scale: number): Float32Array;
  median(xs: number[]): number;
  /** The f-quantile of xs (0.25, 0.75: quartiles). */
  quantile(xs: number[], f: number): number;
}

export interface NormRow {
  kernel: 'rmsNorm' | 'argmax';
  rows: number;
  cols: number;
  /** Calls per measurement. */
  inner: number;
  plain_cpu_ms: number;
  subgroup_cpu_ms: number;
  plain_ms: number;
  subgroup_ms: number;
  /** Median over repetitions of subgroup CPU time / plain CPU time in the same repetition. */
  ratio: number;
  ratio_q1: number;
  ratio_q3: number;
  /** Median wall time, subgroup / plain. */
  wall_ratio: number;
  /** Largest |subgroup - plain| over the largest |plain| (norm), or 0 when argmax gave the same indices. */
  max_rel_diff: number;
}

const CASES: { kernel: NormRow['kernel']; rows: number; cols: number }[] = [
  { kernel: 'rmsNorm', rows: 1, cols: 1024 },
  { kernel: 'rmsNorm', rows: 1, cols: 4096 },
  { kernel: 'rmsNorm', rows: 64, cols: 1024 },
  { kernel: 'rmsNorm', rows: 64, cols: 4096 },
  { kernel: 'argmax', rows: 1, cols: 32064 },
  { kernel: 'argmax', rows: 1, cols: 151937 },
];

/** Null when the device has no subgroups (nothing to compare). */
export async function benchNorm(base: GpuContext, o: NormBenchOptions): Promise<{ rows: NormRow[] } | null> {
  const sg = new GpuContext(base.gpu, { subgroups: true });
  const plain = new GpuContext(base.gpu, { subgroups: false });
  if (!sg.subgroups) return null;
  const out: NormRow[] = [];
  for (const c of CASES) {
    const owned: GPUBuffer[] = [];
    const keep = <T extends { buffer: GPUBuffer }>(t: T) => (owned.push(t.buffer), t);
    const x = keep(base.uploadF32(o.random(c.rows * c.cols, 1 + c.cols + c.rows, 2), [c.rows, c.cols], 'x'));
    let record: (ctx: GpuContext, rec: Recorder) => void;
    let result: Tensor;
    if (c.kernel === 'rmsNorm') {
      const w = keep(base.uploadF32(o.random(c.cols, 7 + c.cols, 1), [c.cols], 'norm.weight'));
      result = keep(base.activation([c.rows, c.cols], 'y'));
      record = (ctx, rec) => rmsNorm(ctx, rec, { x: rows(x), w, eps: 1e-6, out: rows(result) });
    } else {
      result = keep(base.activation([c.rows], 'ids'));
      record = (ctx, rec) => argmax(ctx, rec, { x: rows(x), out: result.buffer });
    }
    const run = async (ctx: GpuContext, inner: number) => {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const rec = ctx.recorder('bench-norm');
      for (let i = 0; i < inner; i++) record(ctx, rec);
      rec.submit();
      await ctx.sync();
      const cpu = process.cpuUsage(c0);
      return { wall: (performance.now() - t0) / inner, cpu: (cpu.user + cpu.system) / 1000 / inner };
    };
    // Warm-up (pipelines) and the cross-check.
    const outputs: Float32Array[] = [];
    for (const ctx of [plain, sg]) {
      await run(ctx, 1);
      outputs.push(await ctx.readF32(result.buffer, 0, result.numel));
    }
    const ids = (f: Float32Array) => Array.from(new Uint32Array(f.buffer, f.byteOffset, f.length));
    let maxRel = 0;
    if (c.kernel === 'rmsNorm') {
      let scale = 0;
      for (const v of outputs[0]) scale = Math.max(scale, Math.abs(v));
      for (let i = 0; i < outputs[0].length; i++) maxRel = Math.max(maxRel, Math.abs(outputs[1][i] - outputs[0][i]) / scale);
      if (!(maxRel <= 1e-5)) throw new Error(`bench-norm: rmsNorm ${c.rows}x${c.cols}: subgroup form differs from plain by ${maxRel} (relative)`);
    } else if (ids(outputs[0]).join() !== ids(outputs[1]).join()) {
      throw new Error(`bench-norm: argmax over ${c.cols}: subgroup form picked another index than plain`);
    }
    // One `inner` for both, from plain; small dispatches need many calls to reach minMs.
    const once = (await run(plain, 8)).wall;
    const inner = Math.max(1, Math.min(1024, Math.round(o.minMs / Math.max(once, 0.01))));
    const cpu = { plain: [] as number[], sg: [] as number[] };
    const wall = { plain: [] as number[], sg: [] as number[] };
    for (let r = 0; r < o.reps; r++) {
      const order: ['plain' | 'sg', GpuContext][] = [
        ['plain', plain],
        ['sg', sg],
      ];
      if (r % 2) order.reverse();
      for (const [name, ctx] of order) {
        const t = await run(ctx, inner);
        cpu[name].push(t.cpu);
        wall[name].push(t.wall);
      }
    }
    const paired = cpu.sg.map((t, r) => t / cpu.plain[r]);
    const row: NormRow = {
      kernel: c.kernel,
      rows: c.rows,
      cols: c.cols,
      inner,
      plain_cpu_ms: +o.median(cpu.plain).toFixed(4),
      subgroup_cpu_ms: +o.median(cpu.sg).toFixed(4),
      plain_ms: +o.median(wall.plain).toFixed(4),
      subgroup_ms: +o.median(wall.sg).toFixed(4),
      ratio: +o.median(paired).toFixed(3),
      ratio_q1: +o.quantile(paired, 0.25).toFixed(3),
      ratio_q3: +o.quantile(paired, 0.75).toFixed(3),
      wall_ratio: +(o.median(wall.sg) / o.median(wall.plain)).toFixed(3),
      max_rel_diff: +maxRel.toExponential(2),
    };
    out.push(row);
    printNorm([row], out.length === 1);
    for (const b of owned) base.destroyBuffer(b);
  }
  return { rows: out };
}

export function printNorm(body: NormRow[], header: boolean): void {
  const head = ['kernel', 'rows x cols', 'plain CPU ms', 'subgroup CPU ms', 'subgroup / plain (CPU)', 'wall ratio'];
  const cells = body.map((r) => [
    r.kernel,
    `${r.rows} x ${r.cols}`,
    r.plain_cpu_ms.toFixed(3),
    r.subgroup_cpu_ms.toFixed(3),
    `${r.ratio.toFixed(3)} (${r.ratio_q1.toFixed(2)}-${r.ratio_q3.toFixed(2)})`,
    r.wall_ratio.toFixed(3),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i].length)));
  const fmt = (r: string[]) => r.map((x, i) => (i < 2 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('  ');
  if (header) console.log(fmt(head));
  for (const r of cells) console.log(fmt(r));
}
