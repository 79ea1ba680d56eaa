// Vision-token enhancement (see ../axis-probe.ts for the method and where it differs from the authors' code).
// AdamW and the two-class axis probe (float64 on the CPU), and the random-direction control.

import { mixSeed, mulberry32, type Relation } from '../../eval/synthetic.js';
import { AXES, type Axis, AXIS_LABELS } from './items.js';
import type { AxisExamples, AxisFeatureSet } from './pooling.js';

export interface AdamWOptions {
  lr: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
}

/** The authors' probe optimiser: torch.optim.AdamW(lr=1e-3, weight_decay=1e-4) with torch's other defaults. */
export const ADAMW_DEFAULTS: AdamWOptions = { lr: 1e-3, weightDecay: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8 };

/**
 * torch.optim.AdamW (decoupled weight decay, bias-corrected moments), float64:
 *   p <- p (1 - lr wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
 *   p <- p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 */
export class AdamW {
  readonly opts: AdamWOptions;
  private t = 0;
  private readonly m: Float64Array[];
  private readonly v: Float64Array[];

  constructor(sizes: readonly number[], opts: Partial<AdamWOptions> = {}) {
    this.opts = { ...ADAMW_DEFAULTS, ...opts };
    this.m = sizes.map((n) => new Float64Array(n));
    this.v = sizes.map((n) => new Float64Array(n));
  }

  get steps(): number {
    return this.t;
  }

  step(params: readonly Float64Array[], grads: readonly Float64Array[]): void {
    const { lr, weightDecay, beta1, beta2, eps } = this.opts;
    this.t++;
    const bc1 = 1 - beta1 ** this.t;
    const sqrtBc2 = Math.sqrt(1 - beta2 ** this.t);
    const stepSize = lr / bc1;
    params.forEach((p, j) => {
      const g = grads[j]!;
      const m = this.m[j]!;
      const v = this.v[j]!;
      if (p.length !== m.length || g.length !== m.length) throw new Error(`AdamW.step: parameter ${j} has ${p.length} values and gradient ${g.length}, expected ${m.length}`);
      for (let i = 0; i < p.length; i++) {
        p[i]! *= 1 - lr * weightDecay;
        m[i] = beta1 * m[i]! + (1 - beta1) * g[i]!;
        v[i] = beta2 * v[i]! + (1 - beta2) * g[i]! * g[i]!;
        p[i]! -= (stepSize * m[i]!) / (Math.sqrt(v[i]!) / sqrtBc2 + eps);
      }
    });
  }
}

/** Standard normal draws from a seeded mulberry32 stream (Box-Muller). */
export function gaussian(seed: number): () => number {
  const u = mulberry32(seed);
  let spare: number | null = null;
  return () => {
    if (spare !== null) {
      const s = spare;
      spare = null;
      return s;
    }
    const u1 = 1 - u(); // (0, 1]
    const u2 = u();
    const r = Math.sqrt(-2 * Math.log(u1));
    spare = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  };
}

/**
 * Cross-entropy of the 2-class softmax probe over rows, and its gradient: logits z = x W + b (W row-major [D, 2]),
 * loss = mean -log softmax(z)[y], dW = X^T (p - onehot(y)) / N, db = mean (p - onehot(y)).
 */
export function probeLossAndGrad(
  rows: readonly Float64Array[],
  labels: readonly number[],
  W: Float64Array,
  b: Float64Array,
): { loss: number; gW: Float64Array; gb: Float64Array } {
  const D = W.length / 2;
  const gW = new Float64Array(W.length);
  const gb = new Float64Array(2);
  let loss = 0;
  const N = rows.length;
  for (let n = 0; n < N; n++) {
    const x = rows[n]!;
    let z0 = b[0]!;
    let z1 = b[1]!;
    for (let d = 0; d < D; d++) {
      z0 += x[d]! * W[2 * d]!;
      z1 += x[d]! * W[2 * d + 1]!;
    }
    const mx = Math.max(z0, z1);
    const lse = mx + Math.log(Math.exp(z0 - mx) + Math.exp(z1 - mx));
    const y = labels[n]!;
    loss += lse - (y === 0 ? z0 : z1);
    const e0 = Math.exp(z0 - lse) - (y === 0 ? 1 : 0);
    const e1 = Math.exp(z1 - lse) - (y === 1 ? 1 : 0);
    for (let d = 0; d < D; d++) {
      gW[2 * d]! += (x[d]! * e0) / N;
      gW[2 * d + 1]! += (x[d]! * e1) / N;
    }
    gb[0]! += e0 / N;
    gb[1]! += e1 / N;
  }
  return { loss: loss / N, gW, gb };
}

/** Class of each row under the probe (argmax; a tie is class 0, as torch's argmax). */
export function probePredict(rows: readonly Float64Array[], W: ArrayLike<number>, b: ArrayLike<number>): number[] {
  const D = W.length / 2;
  return rows.map((x) => {
    let z0 = b[0]!;
    let z1 = b[1]!;
    for (let d = 0; d < D; d++) {
      z0 += x[d]! * W[2 * d]!;
      z1 += x[d]! * W[2 * d + 1]!;
    }
    return z1 > z0 ? 1 : 0;
  });
}

export interface ProbeTrainOptions extends Partial<AdamWOptions> {
  /** Full-batch AdamW steps (default 200). */
  epochs?: number;
  /** Share of items that train (default 0.95; the rest are held out). */
  trainFraction?: number;
  /** Seed of the split and the initial weights (default 0). */
  seed?: number;
}

export interface AxisProbe {
  axis: Axis;
  /** Class 0 and class 1. */
  labels: readonly [Relation, Relation];
  D: number;
  /** [D, 2] row-major: column k (W[2d + k]) is class k's weight vector, a vision_token_add direction. */
  W: Float64Array;
  b: Float64Array;
  /** On the training rows and on the held-out rows (2 per item), in [0, 1]. */
  trainAccuracy: number;
  heldOutAccuracy: number;
  trainItems: number;
  heldOutItems: number;
  /** Cross-entropy before each step. */
  losses: number[];
}

export const PROBE_TRAIN_DEFAULTS = { epochs: 200, trainFraction: 0.95, seed: 0 } as const;

/** Seeded Fisher-Yates permutation of 0..n-1. */
function permutation(n: number, next: () => number): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [p[i], p[j]] = [p[j]!, p[i]!];
  }
  return p;
}

/**
 * Trains one axis probe on paired rows (rows 2i, 2i + 1 = item i) as `train_axis_probes` does: the items are split
 * train / held out by a seeded permutation (split = max(1, floor(trainFraction n)), at most n - 1), W and b start as
 * N(0, 1) / sqrt(D) draws from the seed, then `epochs` full-batch AdamW steps on the mean cross-entropy.
 */
export function trainAxisProbe(axis: Axis, examples: AxisExamples, opts: ProbeTrainOptions = {}): AxisProbe {
  const epochs = opts.epochs ?? PROBE_TRAIN_DEFAULTS.epochs;
  const frac = opts.trainFraction ?? PROBE_TRAIN_DEFAULTS.trainFraction;
  const seed = opts.seed ?? PROBE_TRAIN_DEFAULTS.seed;
  if (!Number.isInteger(epochs) || epochs < 0) throw new Error(`epochs must be a non-negative integer, got ${epochs}`);
  if (!(frac > 0 && frac < 1)) throw new Error(`trainFraction must be in (0, 1), got ${frac}`);
  const nItems = examples.items.length;
  if (examples.rows.length !== 2 * nItems || examples.labels.length !== 2 * nItems) throw new Error(`${axis}: expected 2 rows and labels per item`);
  if (nItems < 2) throw new Error(`${axis}: need at least 2 items to split train / held out, got ${nItems}`);
  const D = examples.rows[0]!.length;
  const rng = mulberry32(mixSeed(seed >>> 0, AXES.indexOf(axis) + 1));
  const perm = permutation(nItems, rng);
  let split = Math.max(1, Math.floor(frac * nItems));
  if (split >= nItems) split = nItems - 1;
  const pick = (items: number[]) => ({
    rows: items.flatMap((i) => [examples.rows[2 * i]!, examples.rows[2 * i + 1]!]),
    labels: items.flatMap((i) => [examples.labels[2 * i]!, examples.labels[2 * i + 1]!]),
  });
  const train = pick(perm.slice(0, split));
  const held = pick(perm.slice(split));
  const normal = gaussian(rng() * 2 ** 32);
  const W = Float64Array.from({ length: 2 * D }, () => normal() / Math.sqrt(D));
  const b = Float64Array.from({ length: 2 }, () => normal() / Math.sqrt(D));
  const opt = new AdamW([W.length, 2], opts);
  const losses: number[] = [];
  for (let e = 0; e < epochs; e++) {
    const { loss, gW, gb } = probeLossAndGrad(train.rows, train.labels, W, b);
    losses.push(loss);
    opt.step([W, b], [gW, gb]);
  }
  const acc = (s: { rows: Float64Array[]; labels: number[] }) => {
    const p = probePredict(s.rows, W, b);
    return p.reduce((n, c, i) => n + (c === s.labels[i] ? 1 : 0), 0) / Math.max(1, p.length);
  };
  return { axis, labels: AXIS_LABELS[axis], D, W, b, trainAccuracy: acc(train), heldOutAccuracy: acc(held), trainItems: split, heldOutItems: nItems - split, losses };
}

export type AxisProbes = Partial<Record<Axis, AxisProbe>>;

/** Probes of every axis with at least 2 items (the others are returned in `untrained` with their item counts). */
export function trainAxisProbes(set: AxisFeatureSet, opts: ProbeTrainOptions = {}): { probes: AxisProbes; untrained: Partial<Record<Axis, number>> } {
  const probes: AxisProbes = {};
  const untrained: Partial<Record<Axis, number>> = {};
  for (const axis of AXES) {
    const n = set.axes[axis].items.length;
    if (n < 2) untrained[axis] = n;
    else probes[axis] = trainAxisProbe(axis, set.axes[axis], opts);
  }
  return { probes, untrained };
}

/** The two columns of a [D, 2] matrix as vision_token_add directions. */
export function columns(W: ArrayLike<number>): [Float32Array, Float32Array] {
  const D = W.length / 2;
  const c0 = new Float32Array(D);
  const c1 = new Float32Array(D);
  for (let d = 0; d < D; d++) {
    c0[d] = W[2 * d]!;
    c1[d] = W[2 * d + 1]!;
  }
  return [c0, c1];
}

/**
 * The random control (`make_random_W`): per axis a D x 2 Gaussian matrix with unit-norm columns, row-major like
 * AxisProbe.W, drawn from its own stream of `seed` per axis (so each axis gets a fresh draw).
 */
export function randomDirections(D: number, seed: number): Record<Axis, Float64Array> {
  const out = {} as Record<Axis, Float64Array>;
  for (const [a, axis] of AXES.entries()) {
    const normal = gaussian(mixSeed(mixSeed(seed >>> 0, 0x5eed), a + 1));
    const W = Float64Array.from({ length: 2 * D }, () => normal());
    for (let k = 0; k < 2; k++) {
      let norm = 0;
      for (let d = 0; d < D; d++) norm += W[2 * d + k]! ** 2;
      norm = Math.sqrt(norm);
      for (let d = 0; d < D; d++) W[2 * d + k]! /= norm;
    }
    out[axis] = W;
  }
  return out;
}
