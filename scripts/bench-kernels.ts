// `npm run bench:kernels` (also the last part of `npm run bench`): matmul GFLOP/s at transformer shapes (M = 1
// decode GEMV, M = 64..1024 prefill, K/N = 256..4096; f32, f16 and bf16 weights as the engine stores them) against
// @tensorflow/tfjs-backend-webgpu's matMul on the same GPUDevice in the same process, as ratios ours / tfjs; then
// attention with and without per-head parameters and captures (scripts/bench-attention.ts), the per-token decode
// counts on the organism and a 7B-width LLaVA stack (scripts/bench-decode.ts), and rmsNorm / argmax in their
// subgroup form against their plain form (scripts/bench-norm.ts; skipped on an adapter without subgroups). The
// matmul part ends with gemv_coop (the GPU decode kernel) forced in its subgroup form against its plain form at the
// set's decode shapes (scripts/bench-matmul-subgroups.ts; also skipped without subgroups). `matmul_norm`: a decode
// step's RMSNorm folded into the GEMV against rmsNorm then the GEMV (scripts/bench-matmul-norm.ts).
//
// tfjs runs on the engine's own device: its WebGPUBackend is constructed with the GPUDevice that acquireGpu made
// from the `webgpu` package (navigator.gpu only has to exist for tfjs to load; Node 20 has no navigator). tfjs has
// no f16 / bf16 tensors, so its weights are always f32 (what a tfjs user would have to upload); our f16 / bf16 rows
// compare the engine's stored weights against that. Each measurement is `inner` calls recorded and submitted
// together, then a wait for the queue; contenders are interleaved within each repetition and the medians are
// reported, so machine load hits all of them alike.
//
// Env: BENCH_REPS (default 5; decode shapes run three times as many), BENCH_KERNEL_SHAPES=quick|default|full, BENCH_MIN_MS (default 150: per measurement),
// BENCH_VARIANTS=1 also times every applicable forced variant, BENCH_ONLY (anything but 'kernels' skips this part),
// BENCH_KERNELS (comma-separated parts, default matmul,attention,decode,norm,matmul_norm), BENCH_ATTENTION=quick|default|full,
// BENCH_ATTENTION_REPS (default 9), BENCH_DECODE=organism|7b|qwen7b|all, BENCH_DECODE_LAYERS (default 2), BENCH_DECODE_STEPS,
// BENCH_NORM_REPS (default 15), BENCH_MATMUL_SUBGROUPS=0 skips the gemv_coop subgroup / plain comparison,
// BENCH_MATMUL_SUBGROUPS_REPS (default 15).
// BENCH_MATMUL_NORM_REPS (default 15). BENCH_CLOCK=cpu|wall|gpu: what the paired ratios divide (default: the
// process's CPU time on a CPU adapter, where the kernels run on its threads; on a GPU the GPU time of the step's
// passes from timestamps, or the wall time where the device has no 'timestamp-query').
// Results: bench-results/kernels.json (matmul results, matmul_subgroups, attention, decode, norm, matmul_norm) and
// printed tables.

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { acquireGpu } from '../src/gpu/device.js';
import { GpuContext } from '../src/gpu/context.js';
import { encodeFromF32 } from '../src/gpu/half.js';
import type { DType, Tensor } from '../src/gpu/tensor.js';
import { dtypeBytes } from '../src/gpu/tensor.js';
import { rows } from '../kernels/common.js';
import { matmul, matmulPlan, type MatmulVariant, MATMUL_VARIANTS } from '../kernels/matmul.js';
import { benchAttention, printAttentionTable, printTiledTable } from './bench-attention.js';
import { benchDecode, printDecode } from './bench-decode.js';
import { benchNorm, printNorm } from './bench-norm.js';
import { benchMatmulSubgroups, printMatmulSubgroups } from './bench-matmul-subgroups.js';
import { benchMatmulNorm, printMatmulNorm } from './bench-matmul-norm.js';
import { benchClock } from './bench-pair.js';

const ONLY = process.env.BENCH_ONLY ?? '';
if (ONLY && ONLY !== 'kernels') {
  console.log(`bench-kernels: skipped (BENCH_ONLY=${ONLY})`);
  process.exit(0);
}
const REPS = Number(process.env.BENCH_REPS ?? 5);
const MIN_MS = Number(process.env.BENCH_MIN_MS ?? 150);
const SET = process.env.BENCH_KERNEL_SHAPES ?? 'default';
const VARIANTS = process.env.BENCH_VARIANTS === '1';
const DTYPES: DType[] = ['f32', 'f16', 'bf16'];
const PARTS = new Set((process.env.BENCH_KERNELS ?? 'matmul,attention,decode,norm,matmul_norm').split(',').map((x) => x.trim()));
const ATTENTION_SET = (process.env.BENCH_ATTENTION ?? 'default') as 'quick' | 'default' | 'full';
const ATTENTION_REPS = Number(process.env.BENCH_ATTENTION_REPS ?? 9);
const NORM_REPS = Number(process.env.BENCH_NORM_REPS ?? 15);
const MATMUL_SUBGROUPS = PARTS.has('matmul') && process.env.BENCH_MATMUL_SUBGROUPS !== '0';
const MATMUL_SUBGROUPS_REPS = Number(process.env.BENCH_MATMUL_SUBGROUPS_REPS ?? 15);
const MATMUL_NORM_REPS = Number(process.env.BENCH_MATMUL_NORM_REPS ?? 15);

interface Shape {
  M: number;
  K: number;
  N: number;
  what: string;
}

/** LLaVA-1.5-7B / Qwen2.5-VL widths scaled into 256..4096, prefill rows 64..1024. */
function shapes(): Shape[] {
  const decode: Shape[] = [
    { M: 1, K: 256, N: 256, what: 'decode, tiny' },
    { M: 1, K: 1024, N: 1024, what: 'decode, 1k square' },
    { M: 1, K: 1024, N: 4096, what: 'decode, up-proj 1k->4k' },
    { M: 1, K: 4096, N: 1024, what: 'decode, down-proj 4k->1k' },
    { M: 1, K: 4096, N: 4096, what: 'decode, 7B q/o-proj' },
  ];
  const prefill: Shape[] = [
    { M: 64, K: 1024, N: 1024, what: 'prefill 64 rows, 1k square' },
    { M: 64, K: 4096, N: 512, what: 'prefill 64, long K' },
    { M: 256, K: 512, N: 2048, what: 'prefill 256, up-proj' },
    { M: 1024, K: 256, N: 256, what: 'prefill 1024, narrow' },
  ];
  if (SET === 'quick') return [decode[1], decode[4], prefill[0], prefill[3]];
  if (SET === 'full') {
    const more: Shape[] = [
      { M: 1, K: 4096, N: 256, what: 'decode, thin output' },
      { M: 256, K: 1024, N: 1024, what: 'prefill 256, 1k square' },
      { M: 1024, K: 1024, N: 1024, what: 'prefill 1024, 1k square' },
      { M: 576, K: 1024, N: 4096, what: 'prefill 576 (LLaVA image), up-proj' },
      { M: 64, K: 4096, N: 4096, what: 'prefill 64, 7B width' },
    ];
    return [...decode, more[0], ...prefill, ...more.slice(1)];
  }
  return [...decode, ...prefill];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Linear interpolation between order statistics: quantile(xs, 0.5) is the median. */
function quantile(xs: number[], f: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const at = f * (s.length - 1);
  return s[Math.floor(at)] + (s[Math.ceil(at)] - s[Math.floor(at)]) * (at - Math.floor(at));
}

function randomValues(n: number, seed: number, scale: number): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

// --- tfjs on the engine's device --------------------------------------------------------------------------------

interface Tfjs {
  tf: typeof import('@tensorflow/tfjs-core');
  flush(): Promise<void>;
}

async function tfjsOnDevice(device: GPUDevice, adapterName: string): Promise<Tfjs> {
  const g = globalThis as { navigator?: { gpu?: unknown } };
  // tfjs-backend-webgpu registers itself only when navigator.gpu exists; it is never asked for an adapter here,
  // since the backend below is built on the engine's device.
  if (!g.navigator) Object.defineProperty(globalThis, 'navigator', { value: {}, configurable: true, writable: true });
  if (!g.navigator!.gpu) {
    g.navigator!.gpu = {
      requestAdapter: () => Promise.reject(new Error('bench-kernels: tfjs must use the engine device')),
      getPreferredCanvasFormat: () => 'rgba8unorm',
      wgslLanguageFeatures: new Set(),
    };
  }
  const tf = await import('@tensorflow/tfjs-core');
  const { WebGPUBackend } = await import('@tensorflow/tfjs-backend-webgpu');
  tf.removeBackend('webgpu');
  const info = (device as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo ?? ({ vendor: adapterName, architecture: '' } as GPUAdapterInfo);
  tf.registerBackend('webgpu', () => new WebGPUBackend(device, info), 3);
  if (!(await tf.setBackend('webgpu'))) throw new Error('bench-kernels: tfjs could not start its webgpu backend on the engine device');
  const backend = tf.backend() as unknown as {
    device: GPUDevice;
    commandEncoder: GPUCommandEncoder | null;
    endComputePassEncoder(): void;
    submitQueue(): void;
  };
  if (backend.device !== device) throw new Error('bench-kernels: tfjs backend is not on the engine device');
  return {
    tf,
    async flush() {
      if (backend.commandEncoder) {
        backend.endComputePassEncoder();
        backend.submitQueue();
      }
      await device.queue.onSubmittedWorkDone();
    },
  };
}

// --- timing ------------------------------------------------------------------------------------------------------

interface Contender {
  name: string;
  dtype: DType;
  variant: string;
  /** Loads of each weight element per call (ours: from the variant's access pattern; tfjs: unknown). */
  weightReads: number | null;
  /** Record (and submit) `inner` calls; resolves when the GPU finished them. */
  run(inner: number): Promise<void>;
  /** The output of one call, for the cross-check against tfjs. */
  output(): Promise<Float32Array>;
  dispose(): void;
}

async function timeOnce(c: Contender, inner: number): Promise<number> {
  const t0 = performance.now();
  await c.run(inner);
  return performance.now() - t0;
}

async function main() {
  const repo = resolve(process.cwd());
  // Timestamps where offered: on a GPU the paired ratios divide the GPU time of the passes (benchClock).
  const gpu = await acquireGpu({ timestamps: true });
  const ctx = new GpuContext(gpu);
  const clock = benchClock(ctx);
  const tfjs = await tfjsOnDevice(gpu.device, gpu.adapterName);
  const { tf } = tfjs;
  console.log(`adapter: ${gpu.adapterName}; tfjs-core ${tf.version_core}, backend ${tf.getBackend()} on the engine's GPUDevice`);
  const results: Record<string, unknown>[] = [];
  const table: string[][] = [];

  for (const s of PARTS.has('matmul') ? shapes() : []) {
    const { M, K, N } = s;
    const flops = 2 * M * N * K;
    const xv = randomValues(M * K, 1 + M + K, 1);
    const wv = randomValues(N * K, 7 + N, 0.05);
    const x = ctx.uploadF32(xv, [M, K], 'x');
    const y = ctx.activation([M, N], 'y');
    const contenders: Contender[] = [];
    const weights: Tensor[] = [];
    for (const dtype of DTYPES) {
      const w = ctx.uploadTensor(encodeFromF32(wv, dtype), [N, K], dtype, `w.${dtype}`);
      weights.push(w);
      const plan = matmulPlan(ctx, M, N, K);
      const variants: (MatmulVariant | undefined)[] = [undefined];
      if (VARIANTS) for (const v of MATMUL_VARIANTS) if (v !== plan.variant && plan.applicable.includes(v)) variants.push(v);
      for (const variant of variants) {
        contenders.push({
          name: `vlmscope ${dtype}${variant ? ` [${variant}]` : ''}`,
          dtype,
          variant: variant ?? plan.variant,
          weightReads: matmulPlan(ctx, M, N, K, variant).weightReads,
          async run(inner) {
            const rec = ctx.recorder('bench');
            for (let i = 0; i < inner; i++) matmul(ctx, rec, { x: rows(x), w, out: rows(y), variant });
            rec.submit();
            await ctx.sync();
          },
          async output() {
            await this.run(1);
            return ctx.readF32(y.buffer, 0, M * N);
          },
          dispose() {},
        });
      }
    }
    const tx = tf.tensor2d(xv, [M, K]);
    const tw = tf.tensor2d(wv, [N, K]);
    contenders.push({
      name: 'tfjs-webgpu f32',
      dtype: 'f32',
      variant: 'tfjs',
      weightReads: null,
      async run(inner) {
        const outs = [];
        for (let i = 0; i < inner; i++) outs.push(tf.matMul(tx, tw, false, true));
        await tfjs.flush();
        for (const o of outs) o.dispose();
      },
      async output() {
        const o = tf.matMul(tx, tw, false, true);
        const d = (await o.data()) as Float32Array;
        o.dispose();
        return d;
      },
      dispose() {
        tx.dispose();
        tw.dispose();
      },
    });

    // Cross-check (f32 weights against tfjs, all others against f32 with their rounding) and warm-up.
    const ref = await contenders[contenders.length - 1].output();
    let scale = 0;
    for (const v of ref) scale = Math.max(scale, Math.abs(v));
    const maxRel: Record<string, number> = {};
    for (const c of contenders.slice(0, -1)) {
      const got = await c.output();
      let d = 0;
      for (let i = 0; i < got.length; i++) d = Math.max(d, Math.abs(got[i] - ref[i]));
      maxRel[c.name] = d / (scale || 1);
      const tol = c.dtype === 'f32' ? 1e-4 : 2e-2;
      if (!(maxRel[c.name] <= tol)) throw new Error(`bench-kernels: ${c.name} at ${M}x${K}x${N} differs from tfjs by ${maxRel[c.name]} (relative)`);
    }
    // Calibrate `inner` per contender so one measurement takes about MIN_MS.
    const inner = new Map<Contender, number>();
    for (const c of contenders) {
      const t = await timeOnce(c, 1);
      inner.set(c, Math.max(1, Math.min(64, Math.round(MIN_MS / Math.max(t, 0.05)))));
    }
    const times = new Map<Contender, number[]>(contenders.map((c) => [c, []]));
    // Decode shapes are cheap and short, so noisier: three times the repetitions.
    const reps = M === 1 ? 3 * REPS : REPS;
    for (let r = 0; r < reps; r++) {
      // Rotate the order each repetition so no contender always runs first after a pause.
      for (let j = 0; j < contenders.length; j++) {
        const c = contenders[(j + r) % contenders.length];
        const n = inner.get(c)!;
        times.get(c)!.push((await timeOnce(c, n)) / n);
      }
    }
    const tfjsMs = median(times.get(contenders[contenders.length - 1])!);
    for (const c of contenders) {
      const ms = median(times.get(c)!);
      const weightBytes = N * K * (c.variant === 'tfjs' ? 4 : dtypeBytes(c.dtype));
      const row = {
        M,
        K,
        N,
        shape: s.what,
        contender: c.name,
        dtype: c.dtype,
        variant: c.variant,
        ms: +ms.toFixed(3),
        gflops: +(flops / ms / 1e6).toFixed(3),
        ratio_vs_tfjs: +(tfjsMs / ms).toFixed(2),
        weight_bytes: weightBytes,
        weight_gbps: +(weightBytes / ms / 1e6).toFixed(3),
        weight_bytes_read: c.weightReads === null ? null : c.weightReads * weightBytes,
        weight_reads_vs_min: c.weightReads,
        max_rel_diff_vs_tfjs: maxRel[c.name] !== undefined ? +maxRel[c.name].toExponential(2) : 0,
        samples_ms: times.get(c)!.map((t) => +t.toFixed(3)),
      };
      results.push(row);
      table.push([
        `${M}x${K}x${N}`,
        c.name,
        c.variant,
        ms.toFixed(2),
        (flops / ms / 1e6).toFixed(2),
        M === 1 ? (weightBytes / ms / 1e6).toFixed(2) : '',
        c.weightReads === null ? '?' : String(c.weightReads),
        c.variant === 'tfjs' ? '1' : (tfjsMs / ms).toFixed(2),
      ]);
    }
    for (const c of contenders) c.dispose();
    for (const w of weights) ctx.destroyBuffer(w.buffer);
    ctx.destroyBuffer(x.buffer);
    ctx.destroyBuffer(y.buffer);
    printTable(table.slice(-contenders.length));
  }
  // Per kind of shape and weight dtype (default variants only): the smallest and the median ratio to tfjs.
  const summary: Record<string, { shapes: number; min_ratio: number; median_ratio: number }> = {};
  for (const kind of ['decode', 'prefill'] as const)
    for (const dtype of DTYPES) {
      const r = results.filter((x) => (kind === 'decode' ? x.M === 1 : (x.M as number) > 1) && x.dtype === dtype && x.variant !== 'tfjs' && !String(x.contender).includes('['));
      if (!r.length) continue;
      const ratios = r.map((x) => x.ratio_vs_tfjs as number);
      summary[`${kind} ${dtype}`] = { shapes: r.length, min_ratio: Math.min(...ratios), median_ratio: +median(ratios).toFixed(2) };
    }
  // gemv_coop's two forms on the engine's device (tfjs idles meanwhile), at the decode shapes of the set.
  const matmulSubgroups = MATMUL_SUBGROUPS
    ? await benchMatmulSubgroups(
        ctx,
        shapes().filter((s) => s.M === 1),
        { reps: MATMUL_SUBGROUPS_REPS, minMs: MIN_MS, random: randomValues, median, quantile, clock },
      )
    : null;
  if (MATMUL_SUBGROUPS && !matmulSubgroups) console.log('\nmatmul subgroups: skipped (this device has no subgroups to compare with)');
  // Attention and decode use the engine's context alone (tfjs idles meanwhile).
  const attention = PARTS.has('attention')
    ? await benchAttention(ctx, { reps: ATTENTION_REPS, minMs: 2 * MIN_MS, set: ATTENTION_SET, random: randomValues, median, clock })
    : null;
  const decode = PARTS.has('decode')
    ? await benchDecode(ctx, process.env.BENCH_DECODE ?? 'all', Number(process.env.BENCH_DECODE_LAYERS ?? 2), Number(process.env.BENCH_DECODE_STEPS ?? 4))
    : null;
  const norm = PARTS.has('norm') ? await benchNorm(ctx, { reps: NORM_REPS, minMs: MIN_MS, random: randomValues, median, quantile, clock }) : null;
  if (PARTS.has('norm') && !norm) console.log('\nnorm: skipped (this device has no subgroups to compare with)');
  const matmulNorm = PARTS.has('matmul_norm')
    ? await benchMatmulNorm(ctx, { reps: MATMUL_NORM_REPS, minMs: MIN_MS, random: randomValues, median, quantile, clock, quick: SET === 'quick' })
    : null;

  await mkdir(join(repo, 'bench-results'), { recursive: true });
  // Parts not run this time keep what an earlier run wrote (each part says when and on which adapter it ran).
  const file = join(repo, 'bench-results/kernels.json');
  let previous: Record<string, unknown> = {};
  try {
    previous = JSON.parse(await readFile(file, 'utf8'));
  } catch {
    // first run
  }
  // ratio_clock: what the paired ratios (subgroups, attention, norm, matmul_norm) divide (cpu, wall or gpu time);
  // matmul vs tfjs is wall time (tfjs submits its own command buffers).
  const stamp = { date: new Date().toISOString(), adapter: gpu.adapterName, ratio_clock: clock };
  const out = {
    ...previous,
    ...(PARTS.has('matmul')
      ? {
          summary,
          ...stamp,
          limits: gpu.limits,
          tfjs: `@tensorflow/tfjs-backend-webgpu ${tf.version_core} (f32 weights: tfjs has no f16/bf16 tensors)`,
          reps: REPS,
          note: 'ms and GFLOP/s are medians over reps of (time of `inner` calls submitted together) / inner; ratio_vs_tfjs = tfjs ms / ours',
          results,
        }
      : {}),
    ...(matmulSubgroups
      ? {
          matmul_subgroups: {
            ...stamp,
            set: SET,
            reps: MATMUL_SUBGROUPS_REPS,
            note:
              'gemv_coop forced, subgroup form (subgroupAdd, one slot per subgroup, one barrier) vs plain form (log2(WG)-step tree) on one ' +
              'device (two contexts): per call, *_cpu_ms = median CPU time of the process, *_ms = median wall time; ratio = median over ' +
              'reps of subgroup / plain time (ratio_clock) in the same rep (< 1: subgroups faster), ratio_q1..q3 its quartiles; gated = silu(x Wgᵀ) * (x Wuᵀ)',
            results: matmulSubgroups.rows,
          },
        }
      : {}),
    ...(attention
      ? {
          attention: {
            ...stamp,
            set: ATTENTION_SET,
            reps: ATTENTION_REPS,
            note:
              'per call: ms = median wall time, cpu_ms = median CPU time of the process; ratio_vs_plain = median over reps of ' +
              'time(contender) / time(plain) in the same rep, CPU, wall or GPU time as ratio_clock says (ratio_q1..q3 their quartiles); prefill from L = 1024 times the last 32 query rows; ' +
              "split-KV and tiled rows compare against the first contender of their case ('single pass', 'main'); kv_rows_read = K / V rows " +
              '(head_dim floats each) read from global memory per call (main once per (row, head), tiled once per (block, head))',
            results: attention.rows,
          },
        }
      : {}),
    ...(decode ? { decode: { ...stamp, note: 'per decoded token unless named otherwise; bytes bound = storage binding sizes summed over dispatches', results: decode.rows } } : {}),
    ...(norm
      ? {
          norm: {
            ...stamp,
            reps: NORM_REPS,
            note:
              'subgroup form vs plain form on one device (two contexts): per call, *_cpu_ms = median CPU time of the process, *_ms = median ' +
              'wall time; ratio = median over reps of subgroup / plain time (ratio_clock) in the same rep (< 1: subgroups faster), ratio_q1..q3 its quartiles',
            results: norm.rows,
          },
        }
      : {}),
    ...(matmulNorm
      ? {
          matmul_norm: {
            ...stamp,
            reps: MATMUL_NORM_REPS,
            note:
              'decode (M = 1): rmsNorm into a scratch row then the GEMV (a: two dispatches) vs the GEMV with the norm folded in (b: one); ' +
              'per call *_cpu_ms = median CPU time of the process, *_ms = median wall time; ratio = median over reps of b / a time (ratio_clock) in ' +
              'the same rep (< 1: folding is faster); f16 weights, f32 norm scale; gated = silu(xn Wgᵀ) * (xn Wuᵀ)',
            results: matmulNorm.rows,
          },
        }
      : {}),
  };
  await writeFile(file, JSON.stringify(out, null, 2));
  if (PARTS.has('matmul')) {
    console.log('\nmatmul, ours vs tfjs-backend-webgpu (same device, same process; ratio = tfjs time / ours):');
    printTable(table, true);
    console.log('\nratio to tfjs (tfjs time / ours) per kind of shape and our weight dtype:');
    for (const [k, v] of Object.entries(summary)) console.log(`  ${k.padEnd(13)} min ${v.min_ratio.toFixed(2)}x  median ${v.median_ratio.toFixed(2)}x  over ${v.shapes} shapes`);
  }
  if (matmulSubgroups) {
    console.log(`\ngemv_coop, subgroup form / plain form (${clock} time, median over repetitions, quartiles in brackets):`);
    printMatmulSubgroups(matmulSubgroups.rows, true, clock);
  }
  if (attention) {
    console.log(`\nattention, ${clock}-time ratios to plain (median over repetitions, quartiles in brackets):`);
    printAttentionTable(attention.table, attention.names, true);
    if (attention.tiledTable.length) printTiledTable(attention.tiledTable, true);
  }
  if (decode) {
    console.log('\nper decoded token:');
    for (const r of decode.rows) printDecode(r);
  }
  if (norm) {
    console.log(`\nrow reductions, subgroup form / plain form (${clock} time, median over repetitions, quartiles in brackets):`);
    printNorm(norm.rows, true, clock);
  }
  if (matmulNorm) {
    console.log(`\nRMSNorm folded into the decode GEMV / rmsNorm then the GEMV (${clock} time, median over repetitions, quartiles in brackets):`);
    printMatmulNorm(matmulNorm.rows, true, clock);
  }
  console.log(`wrote bench-results/kernels.json (adapter: ${gpu.adapterName})`);
  tf.engine().reset();
  gpu.destroy();
}

function printTable(body: string[][], header = false): void {
  const head = ['M x K x N', 'contender', 'variant', 'ms', 'GFLOP/s', 'W GB/s', 'W reads', 'x tfjs'];
  const all = [head, ...body];
  const widths = head.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  const fmt = (r: string[]) => r.map((c, i) => (i < 3 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  if (header) console.log(fmt(head));
  for (const r of body) console.log(fmt(r));
}

await main();
