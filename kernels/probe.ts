// Launcher for shaders/probe.wgsl: tasks x probes logistic-regression fits on the GPU at once (maths and float64
// reference: src/interp/probe-cpu.ts).
//
// `recordProbeBatch` records one batch into a recorder: prepare, ceil(iterations / steps per dispatch) train
// dispatches and finish, each covering every (task, probe) pair; nothing is read back in between.
// `fitProbeBatchGpu` uploads the features once, records, submits and reads the packed results back once. When the
// features (or the scratch) exceed one storage binding, the probes are fitted in chunks, one upload and one
// readback per chunk.

import source from '../shaders/probe.wgsl';
import type { GpuContext, Recorder } from '../src/gpu/context.js';
import { Uniforms, fold } from '../src/gpu/context.js';
import type { Tensor } from '../src/gpu/tensor.js';
import {
  type LogisticFit,
  type LogisticProblem,
  type ProbeBatch,
  type ProbeOptimizerOptions,
  type ResolvedOptimizer,
  checkBatch,
  problemAsBatch,
  resolveOptimizer,
} from '../src/interp/probe-cpu.js';

/** Floats per (task, probe) in the packed result: w (F), bias, train correct, test correct, mean (F), std (F). */
export const probeResultStride = (features: number) => 3 * features + 3;
/** Floats per (task, probe) of optimiser state: w and bias, velocity, mean, 1 / std. */
export const probeStateStride = (features: number) => 4 * features + 2;

/** Feature reads one train dispatch may do (each step reads x twice): keeps single dispatches short. */
const READS_PER_DISPATCH = 2 ** 29;
const MAX_STEPS_PER_DISPATCH = 32;

export type ProbeWorkgroupSize = 64 | 128 | 256;

/**
 * Threads per fit: small fits take 64 (less idle work per barrier on CPU adapters), large ones 256 (more loads in
 * flight on GPUs). One workgroup per (task, probe) either way.
 */
export function probeWorkgroupSize(examples: number, features: number): ProbeWorkgroupSize {
  const work = examples * (features + 1);
  return work <= 16384 ? 64 : work <= 65536 ? 128 : 256;
}

/** Gradient steps per train dispatch for a batch reading this many (example, probe) pairs per step. */
export function stepsPerDispatch(probes: number, examples: number, features: number): number {
  const reads = 2 * probes * examples * (features + 1);
  return Math.max(1, Math.min(MAX_STEPS_PER_DISPATCH, Math.floor(READS_PER_DISPATCH / reads)));
}

export interface ProbeBatchArgs {
  /** [rows, probes, features] f32, read only. */
  x: Tensor;
  /** u32 x 4 per task: first example in `examples`, examples, training rows, f32 bits of 1 / training rows. */
  tasks: GPUBuffer;
  /** u32 per example of all tasks, task after task: row << 2 | train << 1 | label. */
  examples: GPUBuffer;
  /** f32 [tasks, probes, probeStateStride(features)] scratch. */
  state: GPUBuffer;
  /** f32 [probes x examples of all tasks] scratch. */
  resid: GPUBuffer;
  /** f32 [tasks, probes, probeResultStride(features)] results. */
  out: GPUBuffer;
  rows: number;
  probes: number;
  features: number;
  taskCount: number;
  /** Examples of all tasks together. */
  exampleTotal: number;
  /** The most examples of one task (sets the default workgroup size). */
  maxExamples: number;
  optimizer: ResolvedOptimizer;
  /** Threads per workgroup (default by problem size, see probeWorkgroupSize). */
  workgroupSize?: ProbeWorkgroupSize;
}

export function recordProbeBatch(ctx: GpuContext, rec: Recorder, a: ProbeBatchArgs): void {
  const { rows: R, probes: P, features: F, taskCount: G, exampleTotal: E, optimizer: o } = a;
  if (a.x.numel !== R * P * F) throw new Error(`probe fit: ${a.x.label} has ${a.x.numel} values, expected ${R} x ${P} x ${F}`);
  if (a.x.dtype !== 'f32') throw new Error(`probe fit: ${a.x.label} must be f32, got ${a.x.dtype}`);
  if (R >= 2 ** 30) throw new Error(`probe fit: ${R} rows, at most 2^30`);
  const need: [GPUBuffer, number, string][] = [
    [a.tasks, G * 4, 'tasks'],
    [a.examples, E, 'examples'],
    [a.state, G * P * probeStateStride(F), 'state'],
    [a.resid, P * E, 'resid'],
    [a.out, G * P * probeResultStride(F), 'out'],
  ];
  for (const [b, n, what] of need) {
    if (b.size < n * 4) throw new Error(`probe fit: ${what} buffer ${b.label || ''} holds ${b.size} bytes, needs ${n * 4}`);
  }
  const wg = a.workgroupSize ?? probeWorkgroupSize(a.maxExamples, F);
  if (wg !== 64 && wg !== 128 && wg !== 256) throw new Error(`probe fit: workgroup size must be 64, 128 or 256, got ${wg}`);
  const defines = { WG64: wg === 64, WG128: wg === 128 };
  const bindings = ['uniform', 'read', 'read', 'read', 'write', 'write', 'write'] as const;
  const kernel = (entryPoint: string) => ctx.kernel({ name: 'probe', source, entryPoint, defines, bindings: [...bindings] });
  const resources = [null, a.x.buffer, a.tasks, a.examples, a.state, a.resid, a.out];
  const groups = fold(G * P, ctx.limits.maxComputeWorkgroupsPerDimension);
  const params = (iters: number) => new Uniforms().u32(P).u32(F).u32(G * P).u32(iters).f32(o.learningRate).f32(o.momentum).f32(o.l2).done();
  rec.dispatch(kernel('prepare'), params(0), resources, groups, 'probe prepare');
  const step = stepsPerDispatch(P, E, F);
  for (let done = 0; done < o.iterations; done += step) {
    rec.dispatch(kernel('train'), params(Math.min(step, o.iterations - done)), resources, groups, 'probe train');
  }
  rec.dispatch(kernel('finish'), params(0), resources, groups, 'probe finish');
}

export interface ProbeGpuOptions extends ProbeOptimizerOptions {
  /** Cap on the bytes of one buffer (default: the adapter's binding limit); smaller caps fit the probes in more chunks. */
  maxChunkBytes?: number;
  workgroupSize?: ProbeWorkgroupSize;
}

/**
 * Fit every (task, probe) pair of a batch on the GPU: the same standardisation, optimiser and prediction rule as
 * fitProbeBatchCpu, in f32. The features are uploaded once and all tasks run together; one readback per chunk of
 * probes (a single chunk unless a buffer would exceed a storage binding).
 */
export async function fitProbeBatchGpu(ctx: GpuContext, batch: ProbeBatch, opts: ProbeGpuOptions = {}): Promise<LogisticFit[]> {
  const counts = checkBatch(batch);
  const { rows: R, probes: P, features: F, tasks } = batch;
  const G = tasks.length;
  const o = resolveOptimizer(opts, F);
  const E = tasks.reduce((s, t) => s + t.rows.length, 0);
  const maxExamples = Math.max(...tasks.map((t) => t.rows.length));
  const limit = Math.min(ctx.limits.maxStorageBufferBindingSize, ctx.limits.maxBufferSize, opts.maxChunkBytes ?? Infinity);
  // Bytes per probe of each per-probe buffer; the chunk is the most probes every one of them allows.
  const perProbe = [R * F * 4, E * 4, G * probeStateStride(F) * 4, G * probeResultStride(F) * 4];
  const worst = Math.max(...perProbe);
  if (worst > limit) {
    throw new Error(`probe fit: one probe needs a ${worst}-byte buffer (${R} rows x ${F} features, ${E} examples over ${G} tasks), more than one storage binding holds (${limit})`);
  }
  const chunk = Math.min(P, ...perProbe.map((b) => Math.floor(limit / b)));

  const taskWords = new Uint32Array(G * 4);
  const taskFloats = new Float32Array(taskWords.buffer);
  const ex = new Uint32Array(E);
  let first = 0;
  tasks.forEach((t, g) => {
    const N = t.rows.length;
    taskWords[g * 4] = first;
    taskWords[g * 4 + 1] = N;
    taskWords[g * 4 + 2] = counts[g].trainCount;
    taskFloats[g * 4 + 3] = 1 / counts[g].trainCount;
    for (let n = 0; n < N; n++) ex[first + n] = t.rows[n] * 4 + (t.train[n] ? 2 : 0) + (t.labels[n] ? 1 : 0);
    first += N;
  });
  const fits: LogisticFit[] = tasks.map((_, g) => ({
    probes: P,
    features: F,
    weights: new Float32Array(P * F),
    bias: new Float32Array(P),
    mean: new Float32Array(P * F),
    std: new Float32Array(P * F),
    trainAccuracy: new Float64Array(P),
    testAccuracy: new Float64Array(P),
    trainCount: counts[g].trainCount,
    testCount: counts[g].testCount,
  }));

  const RS = probeResultStride(F);
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  const made: GPUBuffer[] = [];
  const buffer = (bytes: number, label: string) => {
    const b = ctx.createBuffer(bytes, usage, label);
    made.push(b);
    return b;
  };
  try {
    const taskBuf = buffer(taskWords.byteLength, 'probe tasks');
    ctx.write(taskBuf, 0, taskWords);
    const exBuf = buffer(ex.byteLength, 'probe examples');
    ctx.write(exBuf, 0, ex);
    for (let p0 = 0; p0 < P; p0 += chunk) {
      const pc = Math.min(chunk, P - p0);
      // This chunk's features as [R, pc, F]: the whole array when there is one chunk, else gathered per row.
      let xs: Float32Array;
      if (pc === P) xs = batch.x;
      else {
        xs = new Float32Array(R * pc * F);
        for (let r = 0; r < R; r++) xs.set(batch.x.subarray((r * P + p0) * F, (r * P + p0 + pc) * F), r * pc * F);
      }
      const scratch: GPUBuffer[] = [];
      try {
        const x = ctx.uploadF32(xs, [R, pc, F], 'probe x');
        scratch.push(x.buffer);
        const state = ctx.createBuffer(G * pc * probeStateStride(F) * 4, usage, 'probe state');
        scratch.push(state);
        const resid = ctx.createBuffer(pc * E * 4, usage, 'probe resid');
        scratch.push(resid);
        const out = ctx.createBuffer(G * pc * RS * 4, usage, 'probe out');
        scratch.push(out);
        const rec = ctx.recorder('probe fit');
        recordProbeBatch(ctx, rec, {
          x,
          tasks: taskBuf,
          examples: exBuf,
          state,
          resid,
          out,
          rows: R,
          probes: pc,
          features: F,
          taskCount: G,
          exampleTotal: E,
          maxExamples,
          optimizer: o,
          workgroupSize: opts.workgroupSize,
        });
        rec.submit();
        const res = await ctx.readF32(out, 0, G * pc * RS);
        for (let g = 0; g < G; g++) {
          const fit = fits[g];
          for (let i = 0; i < pc; i++) {
            const q = p0 + i;
            const b = (g * pc + i) * RS;
            fit.weights.set(res.subarray(b, b + F), q * F);
            fit.bias[q] = res[b + F];
            fit.trainAccuracy[q] = res[b + F + 1] / fit.trainCount;
            fit.testAccuracy[q] = fit.testCount ? res[b + F + 2] / fit.testCount : NaN;
            fit.mean.set(res.subarray(b + F + 3, b + 2 * F + 3), q * F);
            fit.std.set(res.subarray(b + 2 * F + 3, b + 3 * F + 3), q * F);
          }
        }
      } finally {
        for (const b of scratch) ctx.destroyBuffer(b);
      }
    }
  } finally {
    for (const b of made) ctx.destroyBuffer(b);
  }
  return fits;
}

/** fitProbeBatchGpu of a single task whose examples are the rows of x in order. */
export async function fitLogisticGpu(ctx: GpuContext, problem: LogisticProblem, opts: ProbeGpuOptions = {}): Promise<LogisticFit> {
  return (await fitProbeBatchGpu(ctx, problemAsBatch(problem), opts))[0];
}
