// Test helpers: one GPU context per test file, seeded random data, float64 references and comparisons.

import { afterAll } from 'vitest';
import { acquireGpu } from '../../src/gpu/device.js';
import { GpuContext } from '../../src/gpu/context.js';
import { decodeToF32, encodeFromF32 } from '../../src/gpu/half.js';
import type { DType, Tensor } from '../../src/gpu/tensor.js';

let shared: Promise<GpuContext> | null = null;

/** A GPU context shared by the tests of one file, destroyed after them (Dawn keeps Node alive otherwise). */
export function gpuContext(): Promise<GpuContext> {
  if (!shared) {
    shared = acquireGpu().then((g) => new GpuContext(g));
    afterAll(async () => {
      const ctx = await shared!;
      ctx.gpu.destroy();
      shared = null;
    });
  }
  return shared;
}

/** Dispatches recorded by `fn` into one step (submitted), counted by the context's work counters. */
export function countDispatches(ctx: GpuContext, fn: (rec: ReturnType<GpuContext['recorder']>) => void): number {
  const c = ctx.countWork();
  try {
    const before = c.snapshot();
    const rec = ctx.recorder();
    fn(rec);
    rec.submit();
    return c.since(before).dispatches;
  } finally {
    ctx.counters = null;
  }
}

/** Mulberry32: small, seeded, good enough for test data. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Uniform random values in [-scale, scale), never all zeros. */
export function randn(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() * 2 - 1) * scale;
  return out;
}

/** Round values to what `dtype` can store, returning [stored bytes, the exact f32 values they hold]. */
export function quantize(values: Float32Array, dtype: DType): [Uint8Array, Float32Array] {
  const bytes = encodeFromF32(values, dtype);
  return [bytes, decodeToF32(bytes, dtype)];
}

export function upload(ctx: GpuContext, values: Float32Array, shape: number[], dtype: DType, label: string): [Tensor, Float32Array] {
  const [bytes, exact] = quantize(values, dtype);
  return [ctx.uploadTensor(bytes, shape, dtype, label), exact];
}

export async function read(ctx: GpuContext, t: Tensor): Promise<Float32Array> {
  return ctx.readF32(t.buffer, 0, t.numel);
}

/** Max |a - b| with the index where it happens, for readable failures. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): { max: number; at: number } {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let max = 0;
  let at = -1;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= max)) {
      max = d;
      at = i;
    }
  }
  return { max, at };
}

/** Assert |got - want| <= atol + rtol*|want| everywhere; the message shows the worst element. */
export function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, atol: number, rtol = 0, what = ''): void {
  if (got.length !== want.length) throw new Error(`${what}: length ${got.length}, expected ${want.length}`);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    const excess = d - (atol + rtol * Math.abs(want[i]));
    if (!(excess <= 0) && (worst < 0 || !(excess <= worstExcess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    throw new Error(
      `${what}: element ${worst} is ${got[worst]}, expected ${want[worst]} (|diff| ${Math.abs(got[worst] - want[worst])}, atol ${atol}, rtol ${rtol})`,
    );
  }
}
