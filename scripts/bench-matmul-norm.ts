// `BENCH_KERNELS=matmul_norm` part of `npm run bench:kernels`: a decode step's RMSNorm folded into the GEMV that
// reads it (matmul / matmulGated with `norm`, one dispatch) against rmsNorm into a scratch row then the GEMV (two
// dispatches), at decode shapes (M = 1): the q/k/v stack at the widths of the organism, SmolVLM-256M, Qwen2-VL-2B,
// SmolVLM-2B and LLaVA-1.5-7B, the gated MLP (organism, 7B) and lm_head (7B); f16 weights, f32 norm scale;
// gemv_rows (the CPU decode kernel) and gemv_coop (the GPU one), the fold forced (RowNorm.fold: normFolds keeps CPU
// adapters on the two passes, which is what these ratios measured). Outputs checked against each other first (1e-5 relative to the largest).
// Paired timing on one device (scripts/bench-pair.ts timeTwo): ratio = fused time / two-pass time (CPU time on a CPU
// adapter, GPU or wall time on a GPU: benchClock).

import type { GpuContext, Recorder } from '../src/gpu/context.js';
import { encodeFromF32 } from '../src/gpu/half.js';
import type { Tensor } from '../src/gpu/tensor.js';
import { rows } from '../kernels/common.js';
import { matmul, matmulGated, matmulPlan, type MatmulVariant } from '../kernels/matmul.js';
import { rmsNorm } from '../kernels/norm.js';
import { type BenchClock, type PairOptions, type TwoTiming, maxRelDiff, timeCalls, timeTwo } from './bench-pair.js';

export interface MatmulNormRow extends TwoTiming {
  K: number;
  N: number;
  what: string;
  form: 'plain' | 'gated';
  variant: MatmulVariant;
  /** Dispatches per call: two-pass, fused. */
  dispatches: [number, number];
  max_rel_diff: number;
}

const SHAPES: { K: number; N: number; what: string; form: 'plain' | 'gated' }[] = [
  { K: 128, N: 384, what: 'organism q/k/v', form: 'plain' },
  { K: 128, N: 512, what: 'organism gate/up', form: 'gated' },
  { K: 576, N: 960, what: 'SmolVLM-256M q/k/v', form: 'plain' },
  { K: 1536, N: 2048, what: 'Qwen2-VL-2B q/k/v', form: 'plain' },
  { K: 2048, N: 6144, what: 'SmolVLM-2B q/k/v', form: 'plain' },
  { K: 4096, N: 12288, what: '7B q/k/v', form: 'plain' },
  { K: 4096, N: 11008, what: '7B gate/up', form: 'gated' },
  { K: 4096, N: 32064, what: '7B lm_head', form: 'plain' },
];

export async function benchMatmulNorm(ctx: GpuContext, o: PairOptions & { random(n: number, seed: number, scale: number): Float32Array; quick: boolean }): Promise<{ rows: MatmulNormRow[] }> {
  const out: MatmulNormRow[] = [];
  const shapes = o.quick ? SHAPES.filter((s) => s.K < 4096) : SHAPES;
  for (const { K, N, what, form } of shapes) {
    const owned: Tensor[] = [];
    const keep = (t: Tensor) => (owned.push(t), t);
    const x = keep(ctx.uploadF32(o.random(K, 3 + K, 2), [1, K], 'x'));
    const g = keep(ctx.uploadF32(o.random(K, 4 + K, 0.2).map((v) => v + 1), [K], 'norm_w'));
    const normed = keep(ctx.activation([1, K], 'normed'));
    const y = keep(ctx.activation([1, N], 'y'));
    const weight = (seed: number, label: string) => keep(ctx.uploadTensor(encodeFromF32(o.random(N * K, seed + N, 0.05), 'f16'), [N, K], 'f16', label));
    const w = weight(7, 'w');
    const up = form === 'gated' ? weight(8, 'up') : null;
    const norm = { w: g, eps: 1e-5, scratch: rows(normed), fold: true };
    for (const variant of ['gemv_rows', 'gemv_coop'] as const) {
      const product = (rec: Recorder, xIn: ReturnType<typeof rows>, withNorm: boolean) =>
        up
          ? matmulGated(ctx, rec, { x: xIn, norm: withNorm ? norm : null, gate: w, up, act: 'silu', out: rows(y), variant })
          : matmul(ctx, rec, { x: xIn, norm: withNorm ? norm : null, w, out: rows(y), variant });
      const twoPass = {
        ctx,
        record: (c: GpuContext, rec: Recorder) => {
          rmsNorm(c, rec, { x: rows(x), w: g, eps: 1e-5, out: rows(normed) });
          product(rec, rows(normed), false);
        },
      };
      const fused = { ctx, record: (_c: GpuContext, rec: Recorder) => product(rec, rows(x), true) };
      // The cross-check (also the warm-up: pipelines) and the dispatch counts.
      const outputs: Float32Array[] = [];
      const dispatches: number[] = [];
      for (const c of [twoPass, fused]) {
        const counters = ctx.countWork();
        const before = counters.snapshot();
        await timeCalls(ctx, c.record, 1);
        dispatches.push(counters.since(before).dispatches);
        ctx.counters = null;
        outputs.push(await ctx.readF32(y.buffer, 0, N));
      }
      const maxRel = maxRelDiff(outputs[0], outputs[1]);
      if (!(maxRel <= 1e-5)) throw new Error(`bench-matmul-norm: ${what} ${variant}: the fused norm differs from rmsNorm + matmul by ${maxRel} (relative)`);
      const row: MatmulNormRow = {
        K,
        N,
        what,
        form,
        variant,
        dispatches: [dispatches[0], dispatches[1]],
        ...(await timeTwo(twoPass, fused, o)),
        max_rel_diff: +maxRel.toExponential(2),
      };
      out.push(row);
      printMatmulNorm([row], out.length === 1, o.clock);
      if (matmulPlan(ctx, 1, N, K).variant !== 'gemv_rows' && variant === 'gemv_rows') console.log('  (gemv_rows forced: not what this adapter plans)');
    }
    for (const t of owned) ctx.destroyBuffer(t.buffer);
  }
  return { rows: out };
}

export function printMatmulNorm(body: MatmulNormRow[], header: boolean, clock: BenchClock = 'cpu'): void {
  const head = ['1 x K x N', 'what', 'variant', 'dispatches', 'two-pass CPU ms', 'fused CPU ms', `fused / two-pass (${clock})`, 'wall ratio'];
  const cells = body.map((r) => [
    `1x${r.K}x${r.N}`,
    `${r.what}${r.form === 'gated' ? ' (gated)' : ''}`,
    r.variant,
    `${r.dispatches[0]} -> ${r.dispatches[1]}`,
    r.a_cpu_ms.toFixed(3),
    r.b_cpu_ms.toFixed(3),
    `${r.ratio.toFixed(3)} (${r.ratio_q1.toFixed(2)}-${r.ratio_q3.toFixed(2)})`,
    r.wall_ratio.toFixed(3),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const fmt = (c: string[]) => c.map((x, i) => (i < 4 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('  ');
  if (header) console.log(fmt(head));
  for (const c of cells) console.log(fmt(c));
}
