// The CogVSR probe ("Attention in Space", arXiv 2603.20662), beside CogVision's per-head logistic probes
// (src/interp/probes.ts). Only the abstract of that paper could be read; a summary of its text says the probe is the
// one of its authors' earlier LLM work, Cognitive Mirrors (github.com/sihuo-design/CognitiveMirrors,
// get_importance.py: FeatureLevelClassifier, train_model, compute_feature_importance_per_label), whose code is
// what is followed here:
//
//   model      one joint classifier over all heads and all functions (not one probe per head):
//                proj[n, p, :] = Wp x[n, p, :] + bp          a Linear(F -> 64) shared by every head p = (layer, head)
//                h = W1 flatten(proj[n]) + b1                Linear(64 x heads -> 512)
//                logits = W2 dropout(relu(h)) + b2           ReLU, Dropout(0.3), Linear(512 -> functions)
//              on the raw pooled activations (no standardisation, as theirs), F = d_head or 2 d_head with
//              `collect --concat-layer-mean` (their layer_bias=True input)
//   training   cross-entropy over the functions (classes: the sorted function names, their LabelEncoder), AdamW
//              (PyTorch defaults: betas 0.9 / 0.999, eps 1e-8, weight decay 0.01) at lr 1e-4, 100 epochs, batch 1,
//              training rows in order (their DataLoader has shuffle=False); PyTorch's Linear init
//              U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases, from a seeded PRNG. The CogVSR summary
//              says "Adam"; their code's AdamW is used, and weightDecay 0 gives Adam.
//   importance for function c and head p: the mean over held-out examples of class c of
//              mean_d (d logit_c / d proj[p, d]) * proj[p, d]      (gradient x activation, eval mode: no dropout)
//              heads are ranked by |importance| (theirs: sorted by abs, elbow of the sorted curve as the count)
//
// Inferences (not in their code): examples are the correctly answered ones (as CogVision's probes); train and
// held-out rows are split by main question (sub-questions of one main question never on both sides), once per seed,
// or by held-out wording (splitBy 'wording', as `probe --split-by wording`);
// across seeds a head's score is the mean of its per-seed |importance| with a 95% t-interval, and heads are ranked
// by it, then by the interval's lower bound, never by position (ties share a rank, in seeded random order).
// Classes are not rebalanced (their training file is a balanced set they made; a store holds what collect wrote).
// `batchSize` > 1 averages the loss over the batch as PyTorch's CrossEntropyLoss does; their runs use 1.
//
// Cost: each optimiser step reads and updates all of W1 (64 x heads x 512 weights, with their AdamW moments) once,
// in one fused pass (trainStep), and each example costs one forward pass over W1; on the CPU in JavaScript that is
// about 100 epochs x training rows x (forward + one W1 pass / batchSize), see README for measured times.

import { mixSeed, mulberry32 } from '../eval/synthetic.js';
import { type TopSeparation, topSeparation } from './probe-controls.js';
import { type Interval, sampleMean, tInterval } from './statistics.js';
import { rankByCriteria, topCount } from './ranking.js';
import type { ProbeExample } from './probes.js';

/** An example, with its wording's held-out flag for the split by wording. */
export interface MlpProbeExample extends ProbeExample {
  wordingHeldout?: boolean;
}

export interface MlpProbeOptions {
  /** [rows, layers, heads, dim] row-major pooled activations. */
  features: Float32Array;
  layers: number;
  heads: number;
  dim: number;
  examples: readonly MlpProbeExample[];
  /** One split, initialisation, dropout stream and fit per seed (default [0, 1, 2]). */
  seeds?: readonly number[];
  /** Share of the examples held out, by main question (default 0.2; not used by the wording split). */
  testFraction?: number;
  /**
   * 'question' (default): held-out rows are whole main questions, drawn per seed; 'wording': the held-out rows are the
   * examples in held-out wordings (wordingHeldout), the same for every seed (seeds then vary initialisation and dropout).
   */
  splitBy?: 'question' | 'wording';
  /** Keep each seed's trained weights in its fit (for checks; large). */
  keepWeights?: boolean;
  /** Width of the shared per-head projection (default 64). */
  projection?: number;
  /** Hidden units (default 512). */
  hidden?: number;
  /** Dropout probability after the ReLU (default 0.3). */
  dropout?: number;
  /** AdamW step (default 1e-4). */
  learningRate?: number;
  /** AdamW decoupled weight decay (default 0.01, PyTorch's; 0 = Adam). */
  weightDecay?: number;
  /** Passes over the training rows (default 100). */
  epochs?: number;
  /** Examples per optimiser step (default 1, as theirs). */
  batchSize?: number;
  /** Epochs done of all (seeds x epochs). */
  onProgress?: (p: { done: number; total: number; seconds: number }) => void;
}

export const MLP_PROBE_DEFAULTS = { projection: 64, hidden: 512, dropout: 0.3, learningRate: 1e-4, weightDecay: 0.01, epochs: 100, batchSize: 1 } as const;
const ADAM = { beta1: 0.9, beta2: 0.999, eps: 1e-8 } as const;

export interface MlpSeedFit {
  seed: number;
  /** Ids of the training and held-out examples. */
  train: (string | number)[];
  test: (string | number)[];
  trainAccuracy: number;
  testAccuracy: number;
  /** Held-out accuracy per class (NaN when the class has no held-out example). */
  testAccuracyByClass: number[];
  /** Mean training loss of the last epoch. */
  finalLoss: number;
  /** Signed gradient x activation [classes][layers][heads] (NaN where the class has no held-out example). */
  importance: number[][][];
  /** With keepWeights: the trained weights (Wp [F, 64], W1 [512, 64 x heads] as PyTorch's weight, W2 [512, classes]). */
  weights?: MlpWeights;
}

export interface MlpWeights {
  wp: Float32Array;
  bp: Float32Array;
  w1: Float32Array;
  b1: Float32Array;
  w2: Float32Array;
  b2: Float32Array;
}

export interface MlpProbeResult {
  layers: number;
  heads: number;
  dim: number;
  /** The classes (functions), sorted. */
  classes: string[];
  /** Correct examples per class. */
  counts: number[];
  seeds: number[];
  testFraction: number;
  splitBy: 'question' | 'wording';
  settings: { projection: number; hidden: number; dropout: number; learningRate: number; weightDecay: number; epochs: number; batchSize: number };
  fits: MlpSeedFit[];
}

/** Seeded split by main question: main questions move to the held-out side until it holds round(testFraction x n) examples (at least one main question on each side). */
export function mlpSplit(examples: readonly MlpProbeExample[], use: readonly number[], seed: number, testFraction: number, splitBy: 'question' | 'wording' = 'question'): { train: number[]; test: number[] } {
  if (splitBy === 'wording') {
    const unflagged = use.find((i) => typeof examples[i].wordingHeldout !== 'boolean');
    if (unflagged !== undefined) throw new Error(`MLP probe: splitting by wording needs every example's wordingHeldout flag; example ${JSON.stringify(examples[unflagged].id)} has none`);
    const test = use.filter((i) => examples[i].wordingHeldout === true);
    if (test.length === 0 || test.length === use.length) throw new Error(`MLP probe: splitting by wording needs correct examples in both training and held-out wordings, has ${use.length - test.length} and ${test.length}`);
    return { train: use.filter((i) => examples[i].wordingHeldout !== true), test };
  }
  const mains = new Map<string, number[]>();
  for (const i of use) {
    const m = String(examples[i].mainId);
    const list = mains.get(m);
    if (list) list.push(i);
    else mains.set(m, [i]);
  }
  if (mains.size < 2) throw new Error(`MLP probe: needs correct examples from at least 2 main questions to split by main question, has ${mains.size}`);
  const keys = [...mains.keys()];
  const rand = mulberry32(mixSeed(seed >>> 0, 0x6d6c70));
  for (let i = keys.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [keys[i], keys[j]] = [keys[j], keys[i]];
  }
  const target = Math.max(1, Math.round(testFraction * use.length));
  const testMains = new Set<string>();
  let n = 0;
  for (const m of keys) {
    if (n >= target || testMains.size === keys.length - 1) break;
    testMains.add(m);
    n += mains.get(m)!.length;
  }
  const train: number[] = [];
  const test: number[] = [];
  for (const i of use) (testMains.has(String(examples[i].mainId)) ? test : train).push(i);
  return { train, test };
}

/** PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias. */
function linearInit(w: Float32Array, b: Float32Array, fanIn: number, rand: () => number): void {
  const bound = 1 / Math.sqrt(fanIn);
  for (let i = 0; i < w.length; i++) w[i] = (rand() * 2 - 1) * bound;
  for (let i = 0; i < b.length; i++) b[i] = (rand() * 2 - 1) * bound;
}

/** The network's parameters as flat arrays: Wp and W2 input-major (W[i * out + j]), W1 output-major as PyTorch's weight (W1[j * in + i], so the hidden layer is one dot product per unit and a unit that is off costs nothing in the backward pass). */
interface Net {
  F: number;
  P: number;
  D: number;
  Hd: number;
  C: number;
  wp: Float32Array; // [F, D]
  bp: Float32Array; // [D]
  w1: Float32Array; // [Hd, P * D]
  b1: Float32Array; // [Hd]
  w2: Float32Array; // [Hd, C]
  b2: Float32Array; // [C]
}

const params = (n: Net) => [n.wp, n.bp, n.w1, n.b1, n.w2, n.b2];

function newNet(F: number, P: number, D: number, Hd: number, C: number, rand: () => number): Net {
  const n: Net = {
    F,
    P,
    D,
    Hd,
    C,
    wp: new Float32Array(F * D),
    bp: new Float32Array(D),
    w1: new Float32Array(P * D * Hd),
    b1: new Float32Array(Hd),
    w2: new Float32Array(Hd * C),
    b2: new Float32Array(C),
  };
  linearInit(n.wp, n.bp, F, rand);
  linearInit(n.w1, n.b1, P * D, rand);
  linearInit(n.w2, n.b2, Hd, rand);
  return n;
}

/** Scratch of one forward / backward pass. */
interface Pass {
  proj: Float64Array; // [P * D]
  h: Float64Array; // [Hd] pre-activation
  a: Float64Array; // [Hd] after ReLU and dropout
  keep: Float64Array; // [Hd] dropout factor (0 or 1 / (1 - p); 1 in eval)
  logits: Float64Array; // [C]
  dh: Float64Array; // [Hd]
  dproj: Float64Array; // [P * D]
  active: Int32Array; // indices j with dh[j] != 0
}

function newPass(n: Net): Pass {
  return {
    proj: new Float64Array(n.P * n.D),
    h: new Float64Array(n.Hd),
    a: new Float64Array(n.Hd),
    keep: new Float64Array(n.Hd).fill(1),
    logits: new Float64Array(n.C),
    dh: new Float64Array(n.Hd),
    dproj: new Float64Array(n.P * n.D),
    active: new Int32Array(n.Hd),
  };
}

/** Forward of one example (x: its [P, F] block at `at`); fills pass.proj, h, a, logits. */
function forward(n: Net, x: Float32Array, at: number, s: Pass): void {
  const { F, P, D, Hd, C } = n;
  for (let p = 0; p < P; p++) {
    const o = p * D;
    for (let d = 0; d < D; d++) s.proj[o + d] = n.bp[d];
    for (let f = 0; f < F; f++) {
      const xv = x[at + p * F + f];
      if (xv === 0) continue;
      const w = f * D;
      for (let d = 0; d < D; d++) s.proj[o + d] += xv * n.wp[w + d];
    }
  }
  const h = s.h;
  const w1 = n.w1;
  const z = s.proj;
  const I = P * D;
  for (let j = 0; j < Hd; j++) {
    const row = j * I;
    let acc = n.b1[j];
    for (let i = 0; i < I; i++) acc += z[i] * w1[row + i];
    h[j] = acc;
  }
  for (let j = 0; j < Hd; j++) s.a[j] = h[j] > 0 ? h[j] * s.keep[j] : 0;
  for (let c = 0; c < C; c++) s.logits[c] = n.b2[c];
  for (let j = 0; j < Hd; j++) {
    const aj = s.a[j];
    if (aj === 0) continue;
    const row = j * C;
    for (let c = 0; c < C; c++) s.logits[c] += aj * n.w2[row + c];
  }
}

/** Backward of logit weights dlogits into the hidden layer: pass.dh (zero where the unit is off or dropped) and the list of active units. */
function backwardHidden(n: Net, s: Pass, dlogits: Float64Array): number {
  const { Hd, C } = n;
  let nActive = 0;
  for (let j = 0; j < Hd; j++) {
    let g = 0;
    if (s.a[j] !== 0) {
      const row = j * C;
      for (let c = 0; c < C; c++) g += n.w2[row + c] * dlogits[c];
      g *= s.keep[j];
      s.active[nActive++] = j;
    }
    s.dh[j] = g;
  }
  return nActive;
}

/** d logits . dlogits / d proj of the last forward (eval mode, no parameter gradients): fills pass.dproj. */
function backwardToProj(n: Net, s: Pass, dlogits: Float64Array): void {
  const nActive = backwardHidden(n, s, dlogits);
  const I = n.P * n.D;
  const w1 = n.w1;
  const dproj = s.dproj;
  dproj.fill(0);
  for (let k = 0; k < nActive; k++) {
    const j = s.active[k];
    const d = s.dh[j];
    const row = j * I;
    for (let i = 0; i < I; i++) dproj[i] += d * w1[row + i];
  }
}

/** AdamW state and its step's constants (torch.optim.AdamW: decoupled decay, then the bias-corrected Adam step). */
interface AdamStep {
  decay: number;
  stepSize: number;
  sqrtC2: number;
}

function adamStep(lr: number, weightDecay: number, step: number): AdamStep {
  return { decay: 1 - lr * weightDecay, stepSize: lr / (1 - ADAM.beta1 ** step), sqrtC2: Math.sqrt(1 - ADAM.beta2 ** step) };
}

function adamUpdate(w: Float32Array, g: ArrayLike<number>, m: Float32Array, v: Float32Array, a: AdamStep): void {
  for (let i = 0; i < w.length; i++) {
    const gi = g[i];
    const mi = ADAM.beta1 * m[i] + (1 - ADAM.beta1) * gi;
    const vi = ADAM.beta2 * v[i] + (1 - ADAM.beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    w[i] = w[i] * a.decay - (a.stepSize * mi) / (Math.sqrt(vi) / a.sqrtC2 + ADAM.eps);
  }
}

/** Moments of every parameter array, in params() order. */
interface Moments {
  m: Float32Array[];
  v: Float32Array[];
}

/**
 * One optimiser step on a batch whose forward passes (training mode) and dlogits are done: the gradient of W1 is
 * never stored; one pass over W1 reads each weight for the batch's d proj, forms its gradient sum_b proj_b[i] dh_b[j]
 * and applies AdamW to it at once (all gradients are of the old weights: each weight is read before it is updated).
 */
function trainStep(n: Net, passes: Pass[], dlogits: Float64Array[], x: Float32Array, at: number[], mo: Moments, small: Net, a: AdamStep): void {
  const { F, P, D, Hd, C } = n;
  const B = passes.length;
  for (const g of [small.wp, small.bp, small.b1, small.w2, small.b2]) g.fill(0);
  passes.forEach((s, b) => {
    backwardHidden(n, s, dlogits[b]);
    for (let j = 0; j < Hd; j++) {
      const aj = s.a[j];
      small.b1[j] += s.dh[j];
      if (aj === 0) continue;
      const row = j * C;
      for (let c = 0; c < C; c++) small.w2[row + c] += aj * dlogits[b][c];
    }
    for (let c = 0; c < C; c++) small.b2[c] += dlogits[b][c];
  });
  // Fused W1, one row (hidden unit) at a time: d proj from the old row, the row's gradient, AdamW.
  const w1 = n.w1;
  const m1 = mo.m[2];
  const v1 = mo.v[2];
  const I = P * D;
  const grow = new Float64Array(I);
  for (const s of passes) s.dproj.fill(0);
  const { beta1, beta2, eps } = ADAM;
  const { decay, stepSize, sqrtC2 } = a;
  for (let j = 0; j < Hd; j++) {
    const row = j * I;
    let any = false;
    for (let b = 0; b < B; b++) {
      const s = passes[b];
      const d = s.dh[j];
      if (d === 0) continue;
      const dproj = s.dproj;
      const z = s.proj;
      if (!any) grow.fill(0);
      any = true;
      for (let i = 0; i < I; i++) {
        dproj[i] += d * w1[row + i];
        grow[i] += d * z[i];
      }
    }
    if (any) {
      for (let i = 0; i < I; i++) {
        const idx = row + i;
        const gi = grow[i];
        const mi = beta1 * m1[idx] + (1 - beta1) * gi;
        const vi = beta2 * v1[idx] + (1 - beta2) * gi * gi;
        m1[idx] = mi;
        v1[idx] = vi;
        w1[idx] = w1[idx] * decay - (stepSize * mi) / (Math.sqrt(vi) / sqrtC2 + eps);
      }
    } else {
      // A unit off (or dropped) for the whole batch: zero gradient, the moments decay and the step still moves.
      for (let i = 0; i < I; i++) {
        const idx = row + i;
        const mi = beta1 * m1[idx];
        const vi = beta2 * v1[idx];
        m1[idx] = mi;
        v1[idx] = vi;
        w1[idx] = w1[idx] * decay - (stepSize * mi) / (Math.sqrt(vi) / sqrtC2 + eps);
      }
    }
  }
  passes.forEach((s, b) => {
    for (let p = 0; p < P; p++) {
      const o = p * D;
      for (let d = 0; d < D; d++) small.bp[d] += s.dproj[o + d];
      for (let f = 0; f < F; f++) {
        const xv = x[at[b] + p * F + f];
        if (xv === 0) continue;
        const w = f * D;
        for (let d = 0; d < D; d++) small.wp[w + d] += xv * s.dproj[o + d];
      }
    }
  });
  adamUpdate(n.wp, small.wp, mo.m[0], mo.v[0], a);
  adamUpdate(n.bp, small.bp, mo.m[1], mo.v[1], a);
  adamUpdate(n.b1, small.b1, mo.m[3], mo.v[3], a);
  adamUpdate(n.w2, small.w2, mo.m[4], mo.v[4], a);
  adamUpdate(n.b2, small.b2, mo.m[5], mo.v[5], a);
}

/** Softmax cross-entropy of pass.logits against class y: writes (softmax - onehot) * scale into out, returns the loss. */
function crossEntropy(logits: Float64Array, y: number, scale: number, out: Float64Array): number {
  let m = -Infinity;
  for (const v of logits) m = Math.max(m, v);
  let sum = 0;
  for (let c = 0; c < logits.length; c++) sum += Math.exp(logits[c] - m);
  for (let c = 0; c < logits.length; c++) out[c] = (Math.exp(logits[c] - m) / sum - (c === y ? 1 : 0)) * scale;
  return Math.log(sum) + m - logits[y];
}

function argmax(v: Float64Array): number {
  let best = 0;
  for (let c = 1; c < v.length; c++) if (v[c] > v[best]) best = c;
  return best;
}

/** Fits the CogVSR MLP probe once per seed and computes gradient x activation head importance per class; see the file comment. */
export function fitMlpProbes(opts: MlpProbeOptions): MlpProbeResult {
  const { features, layers: L, heads: H, dim: F, examples } = opts;
  for (const [k, v] of [['layers', L], ['heads', H], ['dim', F]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`MLP probe: ${k} must be a positive integer, got ${v}`);
  }
  const P = L * H;
  const rowSize = P * F;
  if (features.length % rowSize !== 0) throw new Error(`MLP probe: features hold ${features.length} values, not a whole number of rows of layers x heads x dim = ${L} x ${H} x ${F}`);
  const rows = features.length / rowSize;
  const s = {
    projection: opts.projection ?? MLP_PROBE_DEFAULTS.projection,
    hidden: opts.hidden ?? MLP_PROBE_DEFAULTS.hidden,
    dropout: opts.dropout ?? MLP_PROBE_DEFAULTS.dropout,
    learningRate: opts.learningRate ?? MLP_PROBE_DEFAULTS.learningRate,
    weightDecay: opts.weightDecay ?? MLP_PROBE_DEFAULTS.weightDecay,
    epochs: opts.epochs ?? MLP_PROBE_DEFAULTS.epochs,
    batchSize: opts.batchSize ?? MLP_PROBE_DEFAULTS.batchSize,
  };
  for (const k of ['projection', 'hidden', 'epochs', 'batchSize'] as const) {
    if (!Number.isInteger(s[k]) || s[k] < (k === 'epochs' ? 0 : 1)) throw new Error(`MLP probe: ${k} must be an integer >= ${k === 'epochs' ? 0 : 1}, got ${s[k]}`);
  }
  if (!(s.dropout >= 0 && s.dropout < 1)) throw new Error(`MLP probe: dropout must be in [0, 1), got ${s.dropout}`);
  if (!(s.learningRate > 0) || !Number.isFinite(s.learningRate)) throw new Error(`MLP probe: learningRate must be a finite number > 0, got ${s.learningRate}`);
  if (!(s.weightDecay >= 0) || !Number.isFinite(s.weightDecay)) throw new Error(`MLP probe: weightDecay must be a finite number >= 0, got ${s.weightDecay}`);
  const testFraction = opts.testFraction ?? 0.2;
  if (!(testFraction > 0 && testFraction < 1)) throw new Error(`MLP probe: testFraction must be in (0, 1), got ${testFraction}`);
  const splitBy = opts.splitBy ?? 'question';
  if (splitBy !== 'question' && splitBy !== 'wording') throw new Error(`MLP probe: splitBy must be question or wording, got ${JSON.stringify(splitBy)}`);
  const seeds = [...(opts.seeds ?? [0, 1, 2])];
  if (seeds.length === 0) throw new Error('MLP probe: no seeds');
  for (const sd of seeds) if (!Number.isInteger(sd)) throw new Error(`MLP probe: seed ${sd} is not an integer`);
  if (new Set(seeds).size !== seeds.length) throw new Error(`MLP probe: seeds repeat (${seeds.join(', ')})`);

  const use: number[] = [];
  examples.forEach((e, i) => {
    const row = e.row ?? i;
    if (!Number.isInteger(row) || row < 0 || row >= rows) throw new Error(`MLP probe: example ${e.id} has row ${row}, but features hold ${rows} rows`);
    if (e.correct) use.push(i);
  });
  const classes = [...new Set(use.map((i) => examples[i].function))].sort();
  if (classes.length < 2) throw new Error(`MLP probe: needs correctly answered examples of at least 2 functions, has ${classes.length}${classes.length ? ` (${classes[0]})` : ''}`);
  const C = classes.length;
  const classOf = new Map(classes.map((c, i) => [c, i]));
  const counts = classes.map((c) => use.filter((i) => examples[i].function === c).length);
  const rowAt = (i: number) => (examples[i].row ?? i) * rowSize;

  const total = seeds.length * s.epochs;
  let done = 0;
  const t0 = performance.now();
  const fits = seeds.map((seed): MlpSeedFit => {
    const { train, test } = mlpSplit(examples, use, seed, testFraction, splitBy);
    const rand = mulberry32(mixSeed(seed >>> 0, 0x696e6974));
    const dropRand = mulberry32(mixSeed(seed >>> 0, 0x64726f70));
    const net = newNet(F, P, s.projection, s.hidden, C, rand);
    // Gradients of the small parameters (W1's is never stored, see trainStep).
    const small: Net = { ...net, wp: new Float32Array(net.wp.length), bp: new Float32Array(net.bp.length), w1: new Float32Array(0), b1: new Float32Array(net.b1.length), w2: new Float32Array(net.w2.length), b2: new Float32Array(net.b2.length) };
    const moments: Moments = { m: params(net).map((a) => new Float32Array(a.length)), v: params(net).map((a) => new Float32Array(a.length)) };
    const passes = Array.from({ length: Math.min(s.batchSize, Math.max(1, train.length)) }, () => newPass(net));
    const dlogits = passes.map(() => new Float64Array(C));
    const pass = passes[0];
    const keepScale = 1 / (1 - s.dropout);
    let step = 0;
    let finalLoss = NaN;
    for (let epoch = 0; epoch < s.epochs; epoch++) {
      let lossSum = 0;
      for (let b0 = 0; b0 < train.length; b0 += s.batchSize) {
        const batch = train.slice(b0, b0 + s.batchSize);
        const used = passes.slice(0, batch.length);
        batch.forEach((i, b) => {
          const ps = used[b];
          for (let j = 0; j < s.hidden; j++) ps.keep[j] = s.dropout > 0 && dropRand() < s.dropout ? 0 : keepScale;
          forward(net, features, rowAt(i), ps);
          lossSum += crossEntropy(ps.logits, classOf.get(examples[i].function)!, 1 / batch.length, dlogits[b]);
        });
        trainStep(net, used, dlogits, features, batch.map(rowAt), moments, small, adamStep(s.learningRate, s.weightDecay, ++step));
      }
      finalLoss = train.length ? lossSum / train.length : NaN;
      done++;
      opts.onProgress?.({ done, total, seconds: (performance.now() - t0) / 1000 });
    }

    // Evaluation and importance, eval mode (no dropout).
    pass.keep.fill(1);
    const accuracy = (idx: number[]) => {
      let right = 0;
      for (const i of idx) {
        forward(net, features, rowAt(i), pass);
        if (argmax(pass.logits) === classOf.get(examples[i].function)) right++;
      }
      return idx.length ? right / idx.length : NaN;
    };
    const importance: number[][][] = [];
    const testAccuracyByClass: number[] = [];
    const unit = new Float64Array(C);
    for (let c = 0; c < C; c++) {
      const mine = test.filter((i) => classOf.get(examples[i].function) === c);
      testAccuracyByClass.push(accuracy(mine));
      const sum = new Float64Array(P);
      unit.fill(0);
      unit[c] = 1;
      for (const i of mine) {
        forward(net, features, rowAt(i), pass);
        backwardToProj(net, pass, unit);
        for (let p = 0; p < P; p++) {
          let gxa = 0;
          for (let d = 0; d < s.projection; d++) gxa += pass.dproj[p * s.projection + d] * pass.proj[p * s.projection + d];
          sum[p] += gxa / s.projection;
        }
      }
      importance.push(Array.from({ length: L }, (_, l) => Array.from({ length: H }, (_, h) => (mine.length ? sum[l * H + h] / mine.length : NaN))));
    }
    return {
      seed,
      train: train.map((i) => examples[i].id),
      test: test.map((i) => examples[i].id),
      trainAccuracy: accuracy(train),
      testAccuracy: accuracy(test),
      testAccuracyByClass,
      finalLoss,
      importance,
      ...(opts.keepWeights ? { weights: { wp: net.wp, bp: net.bp, w1: net.w1, b1: net.b1, w2: net.w2, b2: net.b2 } } : {}),
    };
  });
  return { layers: L, heads: H, dim: F, classes, counts, seeds, testFraction, splitBy, settings: s, fits };
}

// ---------------------------------------------------------------------------------------------------------------
// Ranking

export interface MlpRankedHead {
  layer: number;
  head: number;
  /** 1 = best; heads equal on every criterion share a rank. */
  rank: number;
  /** Mean over seeds of |importance|, with its t-interval. */
  importance: number;
  importanceLow: number;
  importanceHigh: number;
  /** Mean over seeds of the signed importance. */
  signedImportance: number;
}

export interface MlpFunctionRanking {
  function: string;
  ranking: MlpRankedHead[];
  top: MlpRankedHead[];
  /** Their find_elbow_point on the mean |importance| sorted descending: the index of the point farthest from the chord. */
  elbow: number;
  /** Intervals per head [layers][heads] of |importance| over seeds. */
  intervals: Interval[][];
  separation: TopSeparation;
}

export interface MlpRanking {
  criteria: string[];
  topPercent: number;
  k: number;
  functions: MlpFunctionRanking[];
}

/** Index of the point farthest from the line through the first and last points of y (CognitiveMirrors' find_elbow_point). */
export function elbowIndex(y: readonly number[]): number {
  const n = y.length;
  if (n < 3) return 0;
  const lx = n - 1;
  const ly = y[n - 1] - y[0];
  const norm = Math.hypot(lx, ly);
  let best = 0;
  let bestDist = -Infinity;
  for (let i = 0; i < n; i++) {
    const vx = i;
    const vy = y[i] - y[0];
    const dist = Math.abs(vx * ly - vy * lx) / norm;
    if (dist > bestDist) {
      bestDist = dist;
      best = i;
    }
  }
  return best;
}

/** Ranks each function's heads by mean |importance| over seeds, then the interval's lower bound; selects the top topPercent% (or topK). */
export function rankMlpHeads(result: MlpProbeResult, opts: { topPercent?: number; topK?: number; functions?: readonly string[] } = {}): MlpRanking {
  const { layers: L, heads: H } = result;
  const { topPercent, k } = topCount(L * H, opts);
  const wanted = opts.functions ?? result.classes;
  const functions = wanted.map((fn): MlpFunctionRanking => {
    const c = result.classes.indexOf(fn);
    if (c < 0) throw new Error(`rankMlpHeads: function ${JSON.stringify(fn)} is not a class of the probe (${result.classes.join(', ')})`);
    const intervals = Array.from({ length: L }, (_, l) => Array.from({ length: H }, (_, h) => tInterval(result.fits.map((f) => Math.abs(f.importance[c][l][h])))));
    const heads: MlpRankedHead[] = [];
    for (let l = 0; l < L; l++)
      for (let h = 0; h < H; h++) {
        const iv = intervals[l][h];
        const signed = result.fits.map((f) => f.importance[c][l][h]).filter(Number.isFinite);
        heads.push({ layer: l, head: h, rank: 0, importance: iv.mean, importanceLow: iv.low, importanceHigh: iv.high, signedImportance: sampleMean(signed) });
      }
    const ranked = rankByCriteria(heads, [(x) => x.importance, (x) => x.importanceLow], mixSeed(result.seeds[0] >>> 0, c + 1));
    const ranking = ranked.map(({ item, rank }) => ({ ...item, rank }));
    const sorted = ranking.map((h) => h.importance).filter(Number.isFinite);
    const separation = topSeparation(ranking, k, '|importance|', (h) => ({ value: h.importance, low: h.importanceLow, high: h.importanceHigh }), (a, b) => a.rank === b.rank);
    return { function: fn, ranking, top: ranking.slice(0, k), elbow: elbowIndex(sorted), intervals, separation };
  });
  return { criteria: ['|importance| mean', '|importance| CI lower bound'], topPercent, k, functions };
}
