// The batched logistic-probe kernel against its float64 CPU reference: same standardisation, optimiser and
// iterations, so weights agree to f32 rounding and accuracies agree exactly (up to examples whose logit sits within
// rounding of the decision boundary, which the test counts and allows).

import { describe, expect, it } from 'vitest';
import { type ProbeWorkgroupSize, fitLogisticGpu, fitProbeBatchGpu, probeWorkgroupSize, stepsPerDispatch } from '../kernels/probe.js';
import { fitLogisticCpu, fitProbeBatchCpu, rawProbeWeights, type LogisticFit, type LogisticProblem, type ProbeBatch } from '../src/interp/probe-cpu.js';
import { gpuContext, rng } from './helpers/gpu.js';

/** Labels shared by all probes; probe q's features carry the label with a probe-specific strength, plus offsets. */
function makeProblem(P: number, N: number, F: number, seed: number, testFraction = 0.25): LogisticProblem {
  const r = rng(seed);
  const labels = Uint8Array.from({ length: N }, () => (r() < 0.5 ? 1 : 0));
  const train = Uint8Array.from({ length: N }, () => (r() < testFraction ? 0 : 1));
  train[0] = 1;
  const x = new Float32Array(N * P * F);
  const strength = Float64Array.from({ length: P }, () => r() * 1.5);
  const offset = Float64Array.from({ length: P * F }, () => (r() * 2 - 1) * 3);
  const scale = Float64Array.from({ length: P * F }, () => 0.2 + r() * 4);
  for (let n = 0; n < N; n++)
    for (let q = 0; q < P; q++)
      for (let f = 0; f < F; f++) {
        const signal = f % 3 === 0 ? strength[q] * (labels[n] ? 1 : -1) : 0;
        x[(n * P + q) * F + f] = offset[q * F + f] + scale[q * F + f] * (signal + (r() * 2 - 1));
      }
  return { x, labels, train, probes: P, examples: N, features: F };
}

/** Example n's raw features for probe q, and how many examples a fit has. */
interface View {
  examples: number;
  probes: number;
  features: number;
  at: (n: number, q: number, f: number) => number;
}
const problemView = (p: LogisticProblem): View => ({ examples: p.examples, probes: p.probes, features: p.features, at: (n, q, f) => p.x[(n * p.probes + q) * p.features + f] });
const taskView = (b: ProbeBatch, t: number): View => ({
  examples: b.tasks[t].rows.length,
  probes: b.probes,
  features: b.features,
  at: (n, q, f) => b.x[(b.tasks[t].rows[n] * b.probes + q) * b.features + f],
});

/** CPU logits of the fitted probes on the raw features, to find examples sitting on the decision boundary. */
function boundaryExamples(v: View, fit: LogisticFit, q: number, tol: number): number {
  const { weights, bias } = rawProbeWeights(fit, q);
  let count = 0;
  for (let n = 0; n < v.examples; n++) {
    let z = bias;
    for (let f = 0; f < v.features; f++) z += weights[f] * v.at(n, q, f);
    if (Math.abs(z) < tol) count++;
  }
  return count;
}

function compare(pv: LogisticProblem | View, gpu: LogisticFit, cpu: LogisticFit, rtol = 1e-4): { worst: number; boundary: number } {
  const v = 'x' in pv ? problemView(pv) : pv;
  const F = v.features;
  let worst = 0;
  let boundary = 0;
  for (let q = 0; q < v.probes; q++) {
    let scale = Math.abs(cpu.bias[q]);
    for (let f = 0; f < F; f++) scale = Math.max(scale, Math.abs(cpu.weights[q * F + f]));
    scale = Math.max(scale, 1e-3);
    const err = (a: number, b: number) => Math.abs(a - b) / scale;
    let e = err(gpu.bias[q], cpu.bias[q]);
    for (let f = 0; f < F; f++) {
      const i = q * F + f;
      e = Math.max(e, err(gpu.weights[i], cpu.weights[i]));
      const m = Math.abs(gpu.mean[i] - cpu.mean[i]) / Math.max(1, Math.abs(cpu.mean[i]));
      const s = Math.abs(gpu.std[i] - cpu.std[i]) / cpu.std[i];
      if (m > 1e-5 || s > 1e-5) throw new Error(`probe ${q} feature ${f}: mean ${gpu.mean[i]} vs ${cpu.mean[i]}, std ${gpu.std[i]} vs ${cpu.std[i]}`);
    }
    if (e > rtol) throw new Error(`probe ${q}: weights differ by ${e} relative to the largest weight ${scale}`);
    worst = Math.max(worst, e);
    const b = boundaryExamples(v, cpu, q, 1e-3);
    boundary += b;
    const dTrain = Math.abs(gpu.trainAccuracy[q] - cpu.trainAccuracy[q]) * gpu.trainCount;
    const dTest = gpu.testCount ? Math.abs(gpu.testAccuracy[q] - cpu.testAccuracy[q]) * gpu.testCount : 0;
    if (Math.round(dTrain + dTest) > b) {
      throw new Error(`probe ${q}: accuracies train ${gpu.trainAccuracy[q]} / ${cpu.trainAccuracy[q]}, test ${gpu.testAccuracy[q]} / ${cpu.testAccuracy[q]} (${b} examples on the boundary)`);
    }
  }
  expect(gpu.trainCount).toBe(cpu.trainCount);
  expect(gpu.testCount).toBe(cpu.testCount);
  return { worst, boundary };
}

/** Tasks of different sizes over shared rows: random rows (with repeats), labels from the rows' planted classes. */
function makeBatch(R: number, P: number, F: number, sizes: number[], seed: number): ProbeBatch {
  const base = makeProblem(P, R, F, seed);
  const r = rng(seed + 1);
  const tasks = sizes.map((N, k) => {
    const rows = Uint32Array.from({ length: N }, (_, n) => (k === 0 ? n % R : Math.floor(r() * R)));
    // task k predicts the planted label (even k) or its opposite (odd k)
    const labels = Uint8Array.from(rows, (row) => (k % 2 ? 1 - base.labels[row] : base.labels[row]));
    const train = Uint8Array.from(rows, (_, n) => (n === 0 || r() > 0.3 ? 1 : 0));
    return { rows, labels, train };
  });
  return { x: base.x, rows: R, probes: P, features: F, tasks };
}

describe('logistic probe kernel vs float64 reference', () => {
  const cases: [number, number, number, number, ProbeWorkgroupSize?][] = [
    // P, N, F, iterations[, threads per probe]
    [7, 53, 19, 300],
    [7, 53, 19, 300, 256],
    [1, 1, 1, 10],
    [5, 37, 3, 77, 128],
    [3, 29, 300, 40], // F + 1 > workgroup: one thread per feature, several features per thread
    [2, 17, 63, 25, 64], // F + 1 == workgroup size exactly
    [2, 19, 255, 25, 256],
    [2, 23, 127, 25, 128],
    [11, 300, 64, 60], // more examples than threads
    [1024, 200, 16, 12], // many probes: 1024 workgroups
  ];
  for (const [P, N, F, iterations, workgroupSize] of cases) {
    it(`P=${P} N=${N} F=${F} ${iterations} iterations, ${workgroupSize ?? probeWorkgroupSize(N, F)} threads per probe`, async () => {
      const ctx = await gpuContext();
      const p = makeProblem(P, N, F, P * 1000 + N + F);
      const opts = { iterations, l2: 1e-2, workgroupSize };
      const gpu = await fitLogisticGpu(ctx, p, opts);
      const cpu = fitLogisticCpu(p, opts);
      const { worst, boundary } = compare(p, gpu, cpu);
      expect(worst).toBeLessThan(1e-4);
      // The planted label signal is learnt: training accuracy well above chance for the strong probes.
      if (N > 20 && iterations > 20) expect(Math.max(...cpu.trainAccuracy)).toBeGreaterThan(0.75);
      expect(boundary).toBeLessThan(Math.max(2, P * N * 1e-3));
    });
  }

  it('fits a batch of tasks of different sizes over shared, repeated rows like the reference does task by task', async () => {
    const ctx = await gpuContext();
    const b = makeBatch(40, 5, 7, [40, 23, 61, 2, 11], 21);
    const opts = { iterations: 90 };
    const gpu = await fitProbeBatchGpu(ctx, b, opts);
    const cpu = fitProbeBatchCpu(b, opts);
    expect(gpu).toHaveLength(5);
    gpu.forEach((g, t) => compare(taskView(b, t), g, cpu[t]));
    // a task in a batch fits exactly as it does alone
    const alone = await fitProbeBatchGpu(ctx, { ...b, tasks: [b.tasks[2]] }, opts);
    expect(Array.from(alone[0].weights)).toEqual(Array.from(gpu[2].weights));
    expect(Array.from(alone[0].testAccuracy)).toEqual(Array.from(gpu[2].testAccuracy));
  });

  it('batches many tasks x probes (23 x 97), also with the workgroups folded over two dimensions', async () => {
    const ctx = await gpuContext();
    const b = makeBatch(120, 97, 8, Array.from({ length: 23 }, (_, k) => 30 + ((k * 7) % 50)), 5);
    const gpu = await fitProbeBatchGpu(ctx, b, { iterations: 15 });
    const cpu = fitProbeBatchCpu(b, { iterations: 15 });
    gpu.forEach((g, t) => compare(taskView(b, t), g, cpu[t]));
    // 2231 fits under a per-dimension limit of 1000: 744 x 3 workgroups, the last one past the end
    const limits = ctx.gpu.limits;
    const max = limits.maxComputeWorkgroupsPerDimension;
    limits.maxComputeWorkgroupsPerDimension = 1000;
    try {
      const folded = await fitProbeBatchGpu(ctx, b, { iterations: 15 });
      folded.forEach((f, t) => expect(Array.from(f.weights)).toEqual(Array.from(gpu[t].weights)));
    } finally {
      limits.maxComputeWorkgroupsPerDimension = max;
    }
  });

  it('crosses several train dispatches with a remainder', async () => {
    const ctx = await gpuContext();
    const p = makeProblem(4, 40, 6, 5);
    const step = stepsPerDispatch(4, 40, 6);
    const iterations = step * 2 + 3;
    compare(p, await fitLogisticGpu(ctx, p, { iterations, momentum: 0.5, learningRate: 0.3, l2: 0.1 }), fitLogisticCpu(p, { iterations, momentum: 0.5, learningRate: 0.3, l2: 0.1 }));
  });

  it('fits probes in chunks when a buffer would exceed the chunk size, with the same results', async () => {
    const ctx = await gpuContext();
    const b = makeBatch(21, 10, 5, [21, 15, 30], 9);
    const whole = await fitProbeBatchGpu(ctx, b, { iterations: 50 });
    const chunked = await fitProbeBatchGpu(ctx, b, { iterations: 50, maxChunkBytes: 3 * 21 * 5 * 4 }); // 3 probes per chunk
    for (let t = 0; t < 3; t++) {
      expect(Array.from(chunked[t].weights)).toEqual(Array.from(whole[t].weights));
      expect(Array.from(chunked[t].testAccuracy)).toEqual(Array.from(whole[t].testAccuracy));
      expect(Array.from(chunked[t].std)).toEqual(Array.from(whole[t].std));
    }
    await expect(fitProbeBatchGpu(ctx, b, { maxChunkBytes: 100 })).rejects.toThrow(/one probe needs a \d+-byte buffer/);
  });

  it('standardises with training rows only and zeroes constant features', async () => {
    const ctx = await gpuContext();
    const [P, N, F] = [3, 24, 4];
    const p = makeProblem(P, N, F, 17, 0.3);
    for (let n = 0; n < N; n++) {
      // feature 1 of probe 0 is constant (2.5) on every row; feature 2 of probe 1 is constant on training rows only
      p.x[(n * P + 0) * F + 1] = 2.5;
      if (p.train[n]) p.x[(n * P + 1) * F + 2] = -7;
    }
    const gpu = await fitLogisticGpu(ctx, p, { iterations: 80 });
    const cpu = fitLogisticCpu(p, { iterations: 80 });
    compare(p, gpu, cpu);
    expect(gpu.std[0 * F + 1]).toBe(1);
    expect(gpu.weights[0 * F + 1]).toBe(0);
    expect(gpu.mean[1 * F + 2]).toBeCloseTo(-7, 5);
    expect(gpu.weights[1 * F + 2]).toBe(0);
  });

  it('zero iterations predict class 0 everywhere; no held-out rows give NaN test accuracy', async () => {
    const ctx = await gpuContext();
    const p = makeProblem(2, 10, 3, 3);
    p.train = new Uint8Array(10).fill(1);
    const gpu = await fitLogisticGpu(ctx, p, { iterations: 0 });
    const zeros = Array.from(p.labels).filter((y) => y === 0).length / 10;
    expect(Array.from(gpu.trainAccuracy)).toEqual([zeros, zeros]);
    expect(Number.isNaN(gpu.testAccuracy[0])).toBe(true);
    expect(Array.from(gpu.weights).every((w) => w === 0)).toBe(true);
  });

  it('is deterministic: the same problem twice gives bit-identical results', async () => {
    const ctx = await gpuContext();
    const p = makeProblem(9, 45, 7, 12);
    const a = await fitLogisticGpu(ctx, p, { iterations: 60 });
    const b = await fitLogisticGpu(ctx, p, { iterations: 60 });
    expect(Array.from(a.weights)).toEqual(Array.from(b.weights));
    expect(Array.from(a.bias)).toEqual(Array.from(b.bias));
  });

  it('refuses malformed problems with a message', async () => {
    const ctx = await gpuContext();
    const p = makeProblem(2, 5, 3, 1);
    await expect(fitLogisticGpu(ctx, { ...p, x: p.x.subarray(1) })).rejects.toThrow(/x has 29 values, expected rows x probes x features = 5 x 2 x 3 = 30/);
    await expect(fitLogisticGpu(ctx, { ...p, labels: [0, 1, 2, 0, 1] })).rejects.toThrow(/label 2 is 2/);
    await expect(fitLogisticGpu(ctx, { ...p, train: new Uint8Array(5) })).rejects.toThrow(/no training rows/);
    const b = makeBatch(6, 2, 3, [4, 5], 2);
    await expect(fitProbeBatchGpu(ctx, { ...b, tasks: [b.tasks[0], { ...b.tasks[1], rows: [0, 1, 2, 3, 6] }] })).rejects.toThrow(/task 1: example 4 is row 6, outside \[0, 6\)/);
    await expect(fitProbeBatchGpu(ctx, { ...b, tasks: [] })).rejects.toThrow(/no tasks/);
    expect(() => fitLogisticCpu(p, { momentum: 1 })).toThrow(/momentum/);
  });
});
