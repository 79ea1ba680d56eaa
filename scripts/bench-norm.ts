// The norm part of `npm run bench:kernels` (BENCH_KERNELS=norm): the row reductions in their subgroup form against
// their plain form (shaders/workgroup.wgsl) on the same device in the same process (scripts/bench-pair.ts: two
// GpuContexts over one Gpu, paired CPU-time ratios). rmsNorm at decode (1 row) and prefill (64 rows) widths of 1024
// and 4096 columns, and argmax over one row of a vocabulary (32064: LLaVA, 151937: Qwen2). Outputs are checked
// against each other before timing (norm within 1e-5 relative, argmax equal).

import type { GpuContext, Recorder } from '../src/gpu/context.js';
import type { Tensor } from '../src/gpu/tensor.js';
import { rows } from '../kernels/common.js';
import { rmsNorm } from '../kernels/norm.js';
import { argmax } from '../kernels/reduce.js';
import { type BenchClock, type PairOptions, type PairTiming, printPairs, subgroupPair, timeCalls, timePair } from './bench-pair.js';

export interface NormBenchOptions extends PairOptions {
  random(n: number, seed: number, scale: number): Float32Array;
}

export interface NormRow extends PairTiming {
  kernel: 'rmsNorm' | 'argmax';
  rows: number;
  cols: number;
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
  const pair = subgroupPair(base);
  if (!pair) return null;
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
    // The cross-check (also the warm-up: pipelines).
    const outputs: Float32Array[] = [];
    for (const ctx of [pair.plain, pair.sg]) {
      await timeCalls(ctx, record, 1);
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
    const row: NormRow = { kernel: c.kernel, rows: c.rows, cols: c.cols, ...(await timePair(pair, record, o)), max_rel_diff: +maxRel.toExponential(2) };
    out.push(row);
    printNorm([row], out.length === 1, o.clock);
    for (const b of owned) base.destroyBuffer(b);
  }
  return { rows: out };
}

export function printNorm(body: NormRow[], header: boolean, clock: BenchClock = 'cpu'): void {
  printPairs(['kernel', 'rows x cols'], body.map((r) => ({ key: [r.kernel, `${r.rows} x ${r.cols}`], t: r })), header, clock);
}
