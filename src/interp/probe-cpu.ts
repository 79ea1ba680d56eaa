// Batched logistic-regression probes: the problem, the optimiser and a float64 CPU reference.
//
// x holds rows of P probes x F features (in probing: one row per example, one probe per (layer, head), F values of
// the head's pooled z). A task is a list of examples (rows of x, each with a 0/1 label and a train / held-out flag)
// shared by all P probes; every (task, probe) pair is an independent fit:
//
//   standardise  x'[n, f] = (x[n, f] - mean_f) / std_f   mean, std (population) over the task's TRAINING rows; a
//                feature whose std <= 1e-6 * max(1, |mean|) is constant: x' = 0 and its reported std is 1
//   fit          minimise  (1 / n_train) * sum_{train n} logloss(sigmoid(w . x'_n + b), y_n) + (l2 / 2) |w|^2
//                (bias not regularised) by full-batch gradient descent with heavy-ball momentum, from w = b = 0:
//                  g = grad (w, b);  v <- momentum * v + g;  (w, b) <- (w, b) - lr * v        `iterations` times
//   predict      1 iff w . x'_n + b > 0; accuracy over the training rows and over the held-out rows
//
// The default step lr = 2 / (0.25 (F + 1) + l2) is stable for any data: 0.25 (F + 1) + l2 bounds the curvature of
// the loss on standardised features (trace bound), and heavy ball with momentum 0.9 is stable up to
// lr * curvature < 2 (1 + 0.9). The GPU kernel (kernels/probe.ts, shaders/probe.wgsl) runs the same steps in f32.

/** One set of examples shared by all probes of a batch. */
export interface ProbeTask {
  /** Row of x of each example (rows may repeat, and tasks may share rows). */
  rows: ArrayLike<number>;
  /** [examples] 0 or 1. */
  labels: ArrayLike<number>;
  /** [examples] 1 / true: a training row; 0 / false: held out. */
  train: ArrayLike<number | boolean>;
}

/** Tasks x probes fits over one feature array. */
export interface ProbeBatch {
  /** [rows, probes, features] row-major. */
  x: Float32Array;
  rows: number;
  probes: number;
  features: number;
  tasks: readonly ProbeTask[];
}

/** A single task whose examples are the rows of x in order. */
export interface LogisticProblem {
  /** Features [examples, probes, features] row-major: example n's block holds every probe's F values. */
  x: Float32Array;
  /** [examples] 0 or 1. */
  labels: ArrayLike<number>;
  /** [examples] 1 / true: a training row; 0 / false: held out. */
  train: ArrayLike<number | boolean>;
  probes: number;
  examples: number;
  features: number;
}

export function problemAsBatch(p: LogisticProblem): ProbeBatch {
  return {
    x: p.x,
    rows: p.examples,
    probes: p.probes,
    features: p.features,
    tasks: [{ rows: Uint32Array.from({ length: p.examples }, (_, i) => i), labels: p.labels, train: p.train }],
  };
}

export interface ProbeOptimizerOptions {
  /** Gradient steps (default 300). */
  iterations?: number;
  /** L2 penalty on the weights (not the bias), as (l2 / 2) |w|^2 added to the mean log-loss (default 1e-2). */
  l2?: number;
  /** Step size (default 2 / (0.25 (F + 1) + l2), see the file comment). */
  learningRate?: number;
  /** Heavy-ball momentum in [0, 1) (default 0.9). */
  momentum?: number;
}

export const PROBE_DEFAULTS = { iterations: 300, l2: 1e-2, momentum: 0.9 } as const;

export interface ResolvedOptimizer {
  iterations: number;
  l2: number;
  learningRate: number;
  momentum: number;
}

export function resolveOptimizer(o: ProbeOptimizerOptions, features: number): ResolvedOptimizer {
  const iterations = o.iterations ?? PROBE_DEFAULTS.iterations;
  const l2 = o.l2 ?? PROBE_DEFAULTS.l2;
  const momentum = o.momentum ?? PROBE_DEFAULTS.momentum;
  if (!Number.isInteger(iterations) || iterations < 0) throw new Error(`probe iterations must be an integer >= 0, got ${iterations}`);
  if (!(l2 >= 0) || !Number.isFinite(l2)) throw new Error(`probe l2 must be a finite number >= 0, got ${l2}`);
  if (!(momentum >= 0 && momentum < 1)) throw new Error(`probe momentum must be in [0, 1), got ${momentum}`);
  const learningRate = o.learningRate ?? 2 / (0.25 * (features + 1) + l2);
  if (!(learningRate > 0) || !Number.isFinite(learningRate)) throw new Error(`probe learning rate must be a finite number > 0, got ${learningRate}`);
  return { iterations, l2, learningRate, momentum };
}

/** Fitted probes: weights act on standardised features (raw-space weights: rawProbeWeights). */
export interface LogisticFit {
  probes: number;
  features: number;
  /** [probes, features] weights on standardised features. */
  weights: Float32Array | Float64Array;
  /** [probes] */
  bias: Float32Array | Float64Array;
  /** [probes, features] training-row mean and std used to standardise (std 1 for constant features). */
  mean: Float32Array | Float64Array;
  std: Float32Array | Float64Array;
  /** [probes] accuracy on the training rows and on the held-out rows (NaN when there are none). */
  trainAccuracy: Float64Array;
  testAccuracy: Float64Array;
  trainCount: number;
  testCount: number;
}

/** Checks sizes and values of a batch; returns each task's number of training and held-out rows. */
export function checkBatch(b: ProbeBatch): { trainCount: number; testCount: number }[] {
  const { rows: R, probes: P, features: F } = b;
  for (const [k, v] of [['rows', R], ['probes', P], ['features', F]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`logistic probes: ${k} must be a positive integer, got ${v}`);
  }
  if (b.x.length !== R * P * F) throw new Error(`logistic probes: x has ${b.x.length} values, expected rows x probes x features = ${R} x ${P} x ${F} = ${R * P * F}`);
  if (b.tasks.length === 0) throw new Error('logistic probes: no tasks');
  return b.tasks.map((t, k) => {
    const what = b.tasks.length > 1 ? `task ${k}: ` : '';
    const N = t.rows.length;
    if (N === 0) throw new Error(`logistic probes: ${what}no examples`);
    if (t.labels.length !== N) throw new Error(`logistic probes: ${what}${t.labels.length} labels for ${N} examples`);
    if (t.train.length !== N) throw new Error(`logistic probes: ${what}${t.train.length} train flags for ${N} examples`);
    let trainCount = 0;
    for (let n = 0; n < N; n++) {
      const y = t.labels[n];
      if (y !== 0 && y !== 1) throw new Error(`logistic probes: ${what}label ${n} is ${y}, expected 0 or 1`);
      const r = t.rows[n];
      if (!Number.isInteger(r) || r < 0 || r >= R) throw new Error(`logistic probes: ${what}example ${n} is row ${r}, outside [0, ${R})`);
      if (t.train[n]) trainCount++;
    }
    if (trainCount === 0) throw new Error(`logistic probes: ${what}no training rows`);
    return { trainCount, testCount: N - trainCount };
  });
}

/** Whether a feature with this training mean and std is treated as constant (standardised to 0). */
export function isConstantFeature(mean: number, std: number): boolean {
  return !(std > 1e-6 * Math.max(1, Math.abs(mean)));
}

const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));

/** The float64 reference: the same standardisation, optimiser, iterations and prediction rule as the GPU kernel. */
export function fitProbeBatchCpu(b: ProbeBatch, opts: ProbeOptimizerOptions = {}): LogisticFit[] {
  const counts = checkBatch(b);
  const o = resolveOptimizer(opts, b.features);
  return b.tasks.map((t, k) => fitTaskCpu(b, t, counts[k].trainCount, counts[k].testCount, o));
}

/** fitProbeBatchCpu of a single task. */
export function fitLogisticCpu(p: LogisticProblem, opts: ProbeOptimizerOptions = {}): LogisticFit {
  return fitProbeBatchCpu(problemAsBatch(p), opts)[0];
}

function fitTaskCpu(b: ProbeBatch, t: ProbeTask, trainCount: number, testCount: number, o: ResolvedOptimizer): LogisticFit {
  const { probes: P, features: F } = b;
  const N = t.rows.length;
  const Fa = F + 1;
  const weights = new Float64Array(P * F);
  const bias = new Float64Array(P);
  const meanOut = new Float64Array(P * F);
  const stdOut = new Float64Array(P * F);
  const trainAccuracy = new Float64Array(P);
  const testAccuracy = new Float64Array(P);
  const isTrain = Uint8Array.from({ length: N }, (_, n) => (t.train[n] ? 1 : 0));
  const y = Float64Array.from({ length: N }, (_, n) => t.labels[n]);
  const xs = new Float64Array(N * F); // this probe's standardised features
  const w = new Float64Array(Fa);
  const v = new Float64Array(Fa);
  const g = new Float64Array(Fa);
  const r = new Float64Array(N);
  const invTrain = 1 / trainCount;
  for (let q = 0; q < P; q++) {
    const at = (n: number, f: number) => b.x[(t.rows[n] * P + q) * F + f];
    for (let f = 0; f < F; f++) {
      let s = 0;
      for (let n = 0; n < N; n++) if (isTrain[n]) s += at(n, f);
      const mean = s * invTrain;
      let ss = 0;
      for (let n = 0; n < N; n++) {
        if (!isTrain[n]) continue;
        const d = at(n, f) - mean;
        ss += d * d;
      }
      const sd = Math.sqrt(ss * invTrain);
      const constant = isConstantFeature(mean, sd);
      for (let n = 0; n < N; n++) xs[n * F + f] = constant ? 0 : (at(n, f) - mean) / sd;
      meanOut[q * F + f] = mean;
      stdOut[q * F + f] = constant ? 1 : sd;
    }
    w.fill(0);
    v.fill(0);
    const logit = (n: number) => {
      let z = w[F];
      for (let f = 0; f < F; f++) z += xs[n * F + f] * w[f];
      return z;
    };
    for (let it = 0; it < o.iterations; it++) {
      for (let n = 0; n < N; n++) r[n] = isTrain[n] ? (sigmoid(logit(n)) - y[n]) * invTrain : 0;
      g.fill(0);
      for (let n = 0; n < N; n++) {
        const rn = r[n];
        if (rn === 0) continue;
        for (let f = 0; f < F; f++) g[f] += rn * xs[n * F + f];
        g[F] += rn;
      }
      for (let f = 0; f < Fa; f++) {
        const grad = f < F ? g[f] + o.l2 * w[f] : g[f];
        v[f] = o.momentum * v[f] + grad;
        w[f] -= o.learningRate * v[f];
      }
    }
    let cTrain = 0;
    let cTest = 0;
    for (let n = 0; n < N; n++) {
      const pred = logit(n) > 0 ? 1 : 0;
      if (pred === y[n]) {
        if (isTrain[n]) cTrain++;
        else cTest++;
      }
    }
    weights.set(w.subarray(0, F), q * F);
    bias[q] = w[F];
    trainAccuracy[q] = cTrain / trainCount;
    testAccuracy[q] = testCount ? cTest / testCount : NaN;
  }
  return { probes: P, features: F, weights, bias, mean: meanOut, std: stdOut, trainAccuracy, testAccuracy, trainCount, testCount };
}

/**
 * Probe p's weights on raw (unstandardised) features: logit = w_raw . x + b_raw with w_raw = w / std and
 * b_raw = b - sum(w_raw * mean) (constant features get weight 0).
 */
export function rawProbeWeights(fit: LogisticFit, probe: number): { weights: Float64Array; bias: number } {
  const F = fit.features;
  const out = new Float64Array(F);
  let b = fit.bias[probe];
  for (let f = 0; f < F; f++) {
    const i = probe * F + f;
    const wr = fit.weights[i] / fit.std[i];
    out[f] = wr;
    b -= wr * fit.mean[i];
  }
  return { weights: out, bias: b };
}
