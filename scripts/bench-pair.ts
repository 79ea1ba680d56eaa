// Paired timing of one kernel call in its plain and its subgroup form on the same device in the same process: two
// GpuContexts over one Gpu, one with ContextOptions.subgroups, one without. Shared by the norm part
// (scripts/bench-norm.ts) and the matmul part's gemv_coop comparison (scripts/bench-matmul-subgroups.ts); `timeTwo`
// pairs any two contenders the same way (scripts/bench-matmul-norm.ts: the norm folded into the GEMV or not).
//
// `inner` calls are recorded into one step, submitted and waited for; per call, the CPU time of this process
// (SwiftShader runs the kernels on its threads) and the wall time. One `inner` for both forms, from the plain one.
// The ratio is the median over repetitions of (subgroup / plain in the same repetition), so machine load that
// drifts between repetitions hits both alike; < 1 means the subgroup form is faster. The order alternates.
// Which time the ratio divides (`clock`): CPU time on a CPU adapter (the kernels run on this process's threads, and
// wall time on a shared machine swings with other jobs); on a GPU the GPU time of the step's passes (GpuTimer) where
// the device has 'timestamp-query', else the wall time (the process only waits there).

import { GpuContext } from '../src/gpu/context.js';
import type { Recorder } from '../src/gpu/context.js';
import { adapterProfile } from '../kernels/adapter.js';
import { GpuTimer } from '../src/gpu/gpu-timer.js';

/** The time a ratio divides: the process's CPU time, the wall time, or the GPU time of each measurement. */
export type BenchClock = 'cpu' | 'wall' | 'gpu';

/**
 * BENCH_CLOCK when set, else CPU time on a CPU adapter, GPU time on a GPU whose device writes timestamps (acquired
 * with { timestamps: true }), wall time on other GPUs.
 */
export function benchClock(ctx: GpuContext): BenchClock {
  const forced = process.env.BENCH_CLOCK;
  if (forced === 'gpu' && !GpuTimer.available(ctx)) throw new Error("BENCH_CLOCK=gpu: this device has no 'timestamp-query'");
  if (forced === 'cpu' || forced === 'wall' || forced === 'gpu') return forced;
  if (forced) throw new Error(`BENCH_CLOCK=${forced}: expected cpu, wall or gpu`);
  if (adapterProfile(ctx).cpu) return 'cpu';
  return GpuTimer.available(ctx) ? 'gpu' : 'wall';
}

const timers = new WeakMap<GpuContext, GpuTimer>();

/**
 * The context's timer for the gpu clock (one per context, made on first use). Room for 256 passes a step: a call
 * that copies between dispatches (attention's z-last capture) ends a pass per call.
 */
function timerOf(ctx: GpuContext): GpuTimer {
  let t = timers.get(ctx);
  if (!t) timers.set(ctx, (t = new GpuTimer(ctx, 256)));
  return t;
}

export interface PairOptions {
  reps: number;
  /** Per measurement: calls are repeated until one measurement takes about this long. */
  minMs: number;
  median(xs: number[]): number;
  /** The f-quantile of xs (0.25, 0.75: quartiles). */
  quantile(xs: number[], f: number): number;
  /** What the ratios divide (benchClock); CPU time when not given. */
  clock?: BenchClock;
}

export interface PairTiming {
  /** Calls per measurement. */
  inner: number;
  plain_cpu_ms: number;
  subgroup_cpu_ms: number;
  plain_ms: number;
  subgroup_ms: number;
  /** Median over repetitions of subgroup time / plain time in the same repetition (PairOptions.clock). */
  ratio: number;
  ratio_q1: number;
  ratio_q3: number;
  /** Median wall time, subgroup / plain. */
  wall_ratio: number;
  /** With the gpu clock: median GPU time per call of each form. */
  plain_gpu_ms?: number;
  subgroup_gpu_ms?: number;
}

/** The two contexts over `base`'s device, or null when the device has no subgroups (nothing to compare). */
export function subgroupPair(base: GpuContext): { plain: GpuContext; sg: GpuContext } | null {
  const sg = new GpuContext(base.gpu, { subgroups: true });
  return sg.subgroups ? { plain: new GpuContext(base.gpu, { subgroups: false }), sg } : null;
}

/** The largest |got - want| over the largest |want| (1 when want is all zeros): how far two forms' outputs differ. */
export function maxRelDiff(want: Float32Array, got: Float32Array): number {
  let scale = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  let maxRel = 0;
  for (let i = 0; i < want.length; i++) maxRel = Math.max(maxRel, Math.abs(got[i] - want[i]) / (scale || 1));
  return maxRel;
}

/**
 * Record `inner` calls of `record` on `ctx`, submit, wait; per call wall and CPU time in ms, and (`gpu`: the device
 * writes timestamps) the GPU time of the step's compute passes.
 */
export async function timeCalls(
  ctx: GpuContext,
  record: (ctx: GpuContext, rec: Recorder) => void,
  inner: number,
  gpu = false,
): Promise<{ wall: number; cpu: number; gpu: number | null }> {
  const timer = gpu ? timerOf(ctx) : undefined;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const rec = ctx.recorder('bench-pair');
  for (let i = 0; i < inner; i++) record(ctx, rec);
  rec.submit(timer);
  await ctx.sync();
  const cpu = process.cpuUsage(c0);
  const wall = (performance.now() - t0) / inner;
  return { wall, cpu: (cpu.user + cpu.system) / 1000 / inner, gpu: timer ? (await timer.read()) / inner : null };
}

/**
 * Time `record` on both contexts. The caller runs each form once before (its cross-check of the two outputs), which
 * compiles the pipelines outside the timing.
 */
export async function timePair(pair: { plain: GpuContext; sg: GpuContext }, record: (ctx: GpuContext, rec: Recorder) => void, o: PairOptions): Promise<PairTiming> {
  const t = await timeTwo({ ctx: pair.plain, record }, { ctx: pair.sg, record }, o);
  return {
    inner: t.inner,
    plain_cpu_ms: t.a_cpu_ms,
    subgroup_cpu_ms: t.b_cpu_ms,
    plain_ms: t.a_ms,
    subgroup_ms: t.b_ms,
    ratio: t.ratio,
    ratio_q1: t.ratio_q1,
    ratio_q3: t.ratio_q3,
    wall_ratio: t.wall_ratio,
    ...(t.a_gpu_ms !== undefined ? { plain_gpu_ms: t.a_gpu_ms, subgroup_gpu_ms: t.b_gpu_ms } : {}),
  };
}

/** One side of a paired timing: what to record, on which context. */
export interface Contender {
  ctx: GpuContext;
  record: (ctx: GpuContext, rec: Recorder) => void;
}

/** timePair's figures for any two contenders: a is the baseline, ratio = b / a. */
export interface TwoTiming {
  inner: number;
  a_cpu_ms: number;
  b_cpu_ms: number;
  a_ms: number;
  b_ms: number;
  ratio: number;
  ratio_q1: number;
  ratio_q3: number;
  wall_ratio: number;
  /** With the gpu clock: median GPU time per call (the passes of the step). */
  a_gpu_ms?: number;
  b_gpu_ms?: number;
}

/**
 * Paired timing of two contenders: `inner` calls per measurement (from a's time), the order alternating per
 * repetition, ratio = median over repetitions of b's time / a's in the same repetition (CPU, wall or GPU: o.clock).
 */
export async function timeTwo(a: Contender, b: Contender, o: PairOptions): Promise<TwoTiming> {
  // Small dispatches need many calls to reach minMs.
  const gpu = o.clock === 'gpu';
  const once = await timeCalls(a.ctx, a.record, 8, gpu);
  // Enough calls that a measurement takes about minMs of the ratio's clock (GPU time: the passes alone).
  const inner = Math.max(1, Math.min(gpu ? 16384 : 1024, Math.round(o.minMs / Math.max(gpu ? once.gpu! : once.wall, 0.001))));
  const cpu = { a: [] as number[], b: [] as number[] };
  const wall = { a: [] as number[], b: [] as number[] };
  const gpuMs = { a: [] as number[], b: [] as number[] };
  for (let r = 0; r < o.reps; r++) {
    const order: ['a' | 'b', Contender][] = [
      ['a', a],
      ['b', b],
    ];
    if (r % 2) order.reverse();
    for (const [name, c] of order) {
      const t = await timeCalls(c.ctx, c.record, inner, gpu);
      cpu[name].push(t.cpu);
      wall[name].push(t.wall);
      if (t.gpu !== null) gpuMs[name].push(t.gpu);
    }
  }
  const series = o.clock === 'wall' ? wall : gpu ? gpuMs : cpu;
  const paired = series.b.map((t, r) => t / series.a[r]);
  return {
    inner,
    a_cpu_ms: +o.median(cpu.a).toFixed(4),
    b_cpu_ms: +o.median(cpu.b).toFixed(4),
    a_ms: +o.median(wall.a).toFixed(4),
    b_ms: +o.median(wall.b).toFixed(4),
    ratio: +o.median(paired).toFixed(3),
    ratio_q1: +o.quantile(paired, 0.25).toFixed(3),
    ratio_q3: +o.quantile(paired, 0.75).toFixed(3),
    wall_ratio: +(o.median(wall.b) / o.median(wall.a)).toFixed(3),
    ...(gpu ? { a_gpu_ms: +o.median(gpuMs.a).toFixed(5), b_gpu_ms: +o.median(gpuMs.b).toFixed(5) } : {}),
  };
}

/** A table with the kernel's own columns first (left-aligned), then the timing columns; `header` prints the head. */
export function printPairs(keyHead: string[], body: { key: string[]; t: PairTiming }[], header: boolean, clock: BenchClock = 'cpu'): void {
  const head = [...keyHead, 'plain CPU ms', 'subgroup CPU ms', `subgroup / plain (${clock})`, 'wall ratio'];
  const cells = body.map(({ key, t }) => [
    ...key,
    t.plain_cpu_ms.toFixed(3),
    t.subgroup_cpu_ms.toFixed(3),
    `${t.ratio.toFixed(3)} (${t.ratio_q1.toFixed(2)}-${t.ratio_q3.toFixed(2)})`,
    t.wall_ratio.toFixed(3),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i].length)));
  const fmt = (r: string[]) => r.map((x, i) => (i < keyHead.length ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('  ');
  if (header) console.log(fmt(head));
  for (const r of cells) console.log(fmt(r));
}
