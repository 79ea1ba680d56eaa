// Part of the matmul part of `npm run bench:kernels` (BENCH_KERNELS=matmul, on a device with subgroups;
// BENCH_MATMUL_SUBGROUPS=0 skips it): gemv_coop, the GPU decode kernel, forced in its subgroup form (workgroup.wgsl's
// workgroup_sum4: one barrier) against its plain form (a log2(WG) tree in workgroup memory) at the decode shapes of
// the matmul set, f32 / f16 / bf16 weights, and the gated MLP form (two accumulators, workgroup_sum4x2) with f16
// weights. Paired timing on one device (scripts/bench-pair.ts); the outputs are checked against each other first
// (1e-5 relative to the largest output).

import type { GpuContext, Recorder } from '../src/gpu/context.js';
import { encodeFromF32 } from '../src/gpu/half.js';
import type { DType, Tensor } from '../src/gpu/tensor.js';
import { rows } from '../kernels/common.js';
import { matmul, matmulGated, matmulPlan } from '../kernels/matmul.js';
import { type BenchClock, type PairOptions, type PairTiming, printPairs, maxRelDiff, subgroupPair, timeCalls, timePair } from './bench-pair.js';

export interface MatmulSubgroupRow extends PairTiming {
  M: number;
  K: number;
  N: number;
  dtype: DType;
  /** plain: y = x Wᵀ; gated: silu(x Wgᵀ) * (x Wuᵀ) in one dispatch. */
  form: 'plain' | 'gated';
  variant: 'gemv_coop';
  /** Threads per workgroup (64, 128 from K = 2048). */
  workgroup: number;
  /** Largest |subgroup - plain| over the largest |plain|. */
  max_rel_diff: number;
}

const FORMS: { form: MatmulSubgroupRow['form']; dtype: DType }[] = [
  { form: 'plain', dtype: 'f32' },
  { form: 'plain', dtype: 'f16' },
  { form: 'plain', dtype: 'bf16' },
  { form: 'gated', dtype: 'f16' },
];

/** Null when the device has no subgroups (nothing to compare). */
export async function benchMatmulSubgroups(
  base: GpuContext,
  shapes: { M: number; K: number; N: number }[],
  o: PairOptions & { random(n: number, seed: number, scale: number): Float32Array },
): Promise<{ rows: MatmulSubgroupRow[] } | null> {
  const pair = subgroupPair(base);
  if (!pair) return null;
  const out: MatmulSubgroupRow[] = [];
  for (const { M, K, N } of shapes) {
    const xv = o.random(M * K, 1 + M + K, 1);
    const x = base.uploadF32(xv, [M, K], 'x');
    const y = base.activation([M, N], 'y');
    for (const { form, dtype } of FORMS) {
      const owned: Tensor[] = [];
      const weight = (seed: number, label: string) => {
        const t = base.uploadTensor(encodeFromF32(o.random(N * K, seed + N, 0.05), dtype), [N, K], dtype, label);
        owned.push(t);
        return t;
      };
      const w = weight(7, 'w');
      const up = form === 'gated' ? weight(8, 'up') : null;
      const record = up
        ? (ctx: GpuContext, rec: Recorder) => matmulGated(ctx, rec, { x: rows(x), gate: w, up, act: 'silu', out: rows(y), variant: 'gemv_coop' })
        : (ctx: GpuContext, rec: Recorder) => matmul(ctx, rec, { x: rows(x), w, out: rows(y), variant: 'gemv_coop' });
      // The cross-check (also the warm-up: pipelines).
      const outputs: Float32Array[] = [];
      for (const ctx of [pair.plain, pair.sg]) {
        await timeCalls(ctx, record, 1);
        outputs.push(await ctx.readF32(y.buffer, 0, M * N));
      }
      const maxRel = maxRelDiff(outputs[0], outputs[1]);
      if (!(maxRel <= 1e-5)) throw new Error(`bench-matmul-subgroups: gemv_coop ${form} ${dtype} ${M}x${K}x${N}: subgroup form differs from plain by ${maxRel} (relative)`);
      const row: MatmulSubgroupRow = {
        M,
        K,
        N,
        dtype,
        form,
        variant: 'gemv_coop',
        workgroup: matmulPlan(base, M, N, K, 'gemv_coop').workgroup[0],
        ...(await timePair(pair, record, o)),
        max_rel_diff: +maxRel.toExponential(2),
      };
      out.push(row);
      printMatmulSubgroups([row], out.length === 1, o.clock);
      for (const t of owned) base.destroyBuffer(t.buffer);
    }
    base.destroyBuffer(x.buffer);
    base.destroyBuffer(y.buffer);
  }
  return { rows: out };
}

export function printMatmulSubgroups(body: MatmulSubgroupRow[], header: boolean, clock: BenchClock = 'cpu'): void {
  printPairs(
    ['M x K x N', 'gemv_coop', 'WG'],
    body.map((r) => ({ key: [`${r.M}x${r.K}x${r.N}`, `${r.form} ${r.dtype}`, String(r.workgroup)], t: r })),
    header,
    clock,
  );
}
