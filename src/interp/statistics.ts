// Sample statistics and Student t inference: mean, std, the t distribution (p-values, quantiles), Welch and one-sample
// t-tests, t-intervals. Shared by the ablation experiment, the heads benchmark and the probe controls, so it is its
// own file; it is plain arithmetic on numbers and imports nothing.

// ---------------------------------------------------------------------------------------------------------------
// The t distribution (regularised incomplete beta: continued fraction, modified Lentz; Lanczos log-gamma)

const LANCZOS = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905, -0.13857109526572012,
  9.9843695780195716e-6, 1.5056327351493116e-7,
];

/** ln Gamma(x) for x > 0 (Lanczos, g = 7; about 15 significant digits). */
export function logGamma(x: number): number {
  if (!(x > 0)) throw new Error(`logGamma: x must be > 0, got ${x}`);
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  const y = x - 1;
  let a = LANCZOS[0];
  const t = y + 7.5;
  for (let i = 1; i < 9; i++) a += LANCZOS[i] / (y + i);
  return 0.5 * Math.log(2 * Math.PI) + (y + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Continued fraction of the incomplete beta function (modified Lentz). */
function betaContinuedFraction(x: number, a: number, b: number): number {
  const tiny = 1e-300;
  const eps = 1e-16;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let f = d;
  for (let m = 1; m <= 1000; m++) {
    const m2 = 2 * m;
    // even step
    let num = (m * (b - m) * x) / ((a + m2 - 1) * (a + m2));
    d = 1 + num * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + num / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    f *= d * c;
    // odd step
    num = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1));
    d = 1 + num * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + num / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const delta = d * c;
    f *= delta;
    if (Math.abs(delta - 1) < eps) return f;
  }
  return f;
}

/** The regularised incomplete beta function I_x(a, b), x in [0, 1], a, b > 0. */
export function regularizedIncompleteBeta(x: number, a: number, b: number): number {
  if (!(a > 0) || !(b > 0)) throw new Error(`regularizedIncompleteBeta: a and b must be > 0, got a = ${a}, b = ${b}`);
  if (Number.isNaN(x) || x < 0 || x > 1) throw new Error(`regularizedIncompleteBeta: x must be in [0, 1], got ${x}`);
  if (x === 0) return 0;
  if (x === 1) return 1;
  const lnFront = logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log1p(-x);
  const front = Math.exp(lnFront);
  // The continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) otherwise.
  if (x < (a + 1) / (a + b + 2)) return (front * betaContinuedFraction(x, a, b)) / a;
  return 1 - (front * betaContinuedFraction(1 - x, b, a)) / b;
}

/**
 * Two-sided p-value P(|T| >= |t|) of Student's t distribution with df degrees of freedom (df > 0, not necessarily an
 * integer): I_{df/(df+t^2)}(df/2, 1/2).
 */
export function studentTwoSidedP(t: number, df: number): number {
  if (Number.isNaN(t) || Number.isNaN(df)) return NaN;
  if (!(df > 0)) throw new Error(`studentTwoSidedP: df must be > 0, got ${df}`);
  if (!Number.isFinite(t)) return 0;
  if (t === 0) return 1;
  if (!Number.isFinite(df)) return 2 * normalUpperTail(Math.abs(t));
  return Math.min(1, regularizedIncompleteBeta(df / (df + t * t), df / 2, 0.5));
}

/** P(Z >= z) of the standard normal (for infinite df), via erfc (Numerical Recipes' Chebyshev fit, |err| < 1.2e-7). */
function normalUpperTail(z: number): number {
  const x = z / Math.SQRT2;
  const t = 1 / (1 + 0.5 * Math.abs(x));
  const y =
    t *
    Math.exp(
      -x * x - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return (x >= 0 ? y : 2 - y) / 2;
}

/** Student t quantile: the t with P(T <= t) = p for df degrees of freedom (p in (0, 1), df > 0), by bisection. */
export function studentTQuantile(p: number, df: number): number {
  if (!(p > 0 && p < 1)) throw new Error(`studentTQuantile: p must be in (0, 1), got ${p}`);
  if (!(df > 0)) throw new Error(`studentTQuantile: df must be > 0, got ${df}`);
  if (p === 0.5) return 0;
  // Upper tail probability of |T| >= t is 2 (1 - p) for p > 0.5.
  const tail = 2 * (p > 0.5 ? 1 - p : p);
  let lo = 0;
  let hi = 1;
  while (studentTwoSidedP(hi, df) > tail) hi *= 2;
  for (let i = 0; i < 200 && hi - lo > 1e-12 * hi; i++) {
    const mid = (lo + hi) / 2;
    if (studentTwoSidedP(mid, df) > tail) lo = mid;
    else hi = mid;
  }
  const t = (lo + hi) / 2;
  return p > 0.5 ? t : -t;
}

// ---------------------------------------------------------------------------------------------------------------
// Samples: mean, std, t-test, t-interval

export const sampleMean = (xs: readonly number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

/** Sample std (n - 1 in the denominator); NaN for fewer than 2 values. */
export function sampleStd(xs: readonly number[]): number {
  if (xs.length < 2) return NaN;
  const m = sampleMean(xs);
  return Math.sqrt(xs.reduce((a, x) => a + (x - m) ** 2, 0) / (xs.length - 1));
}

export interface TTestResult {
  /** (mean(a) - mean(b)) / standard error. */
  t: number;
  /** Welch-Satterthwaite degrees of freedom (n_b - 1 in the one-sample case). */
  df: number;
  /** Two-sided p-value from the Student t distribution. */
  p: number;
  /** "one_sample": a (or b) is a single value, tested against the other sample's mean; "welch": two samples. */
  method: 'one_sample' | 'welch';
}

/**
 * Welch's t-test of mean(a) - mean(b): t on the difference of means with separate variances, Welch-Satterthwaite df.
 * A sample of one value counts as a constant (variance 0), which makes this the one-sample t-test of the other
 * sample's mean against it: t = (a - mean(b)) / (s_b / sqrt(n_b)), df = n_b - 1 (the Welch-Satterthwaite df with one
 * variance term 0). Degenerate cases: no spread on either side gives t = 0 and p = 1 when the means are equal,
 * t = +-Infinity and p = 0 when they differ; fewer than two values in all gives NaN.
 */
export function welchTTest(a: readonly number[], b: readonly number[]): TTestResult {
  if (a.length === 0 || b.length === 0) throw new Error('welchTTest: both samples need at least one value');
  const method = a.length === 1 || b.length === 1 ? 'one_sample' : 'welch';
  const na = a.length;
  const nb = b.length;
  const va = na > 1 ? sampleStd(a) ** 2 / na : 0;
  const vb = nb > 1 ? sampleStd(b) ** 2 / nb : 0;
  const diff = sampleMean(a) - sampleMean(b);
  if (na < 2 && nb < 2) return { t: NaN, df: NaN, p: NaN, method };
  const se2 = va + vb;
  if (se2 === 0) {
    const df = Math.max(1, (na - 1) + (nb - 1));
    return diff === 0 ? { t: 0, df, p: 1, method } : { t: diff > 0 ? Infinity : -Infinity, df, p: 0, method };
  }
  let den = 0;
  if (na > 1) den += va ** 2 / (na - 1);
  if (nb > 1) den += vb ** 2 / (nb - 1);
  const df = (se2 * se2) / den;
  const t = diff / Math.sqrt(se2);
  return { t, df, p: studentTwoSidedP(t, df), method };
}

/** Mean and two-sided t-interval of independent repeats; with fewer than 2 values the interval is NaN (unknown). */
export interface Interval {
  mean: number;
  /** Sample standard deviation (n - 1); NaN for n < 2. */
  std: number;
  low: number;
  high: number;
  n: number;
}

export const CI_LEVEL = 0.95;

/** mean ± t_{(1+level)/2, n-1} * std / sqrt(n) over the finite values (NaN values, e.g. empty held-out sides, are left out). */
export function tInterval(values: readonly number[], level = CI_LEVEL): Interval {
  if (!(level > 0 && level < 1)) throw new Error(`tInterval: level must be in (0, 1), got ${level}`);
  const xs = values.filter((v) => Number.isFinite(v));
  const n = xs.length;
  if (n === 0) return { mean: NaN, std: NaN, low: NaN, high: NaN, n };
  const mean = sampleMean(xs);
  if (n < 2) return { mean, std: NaN, low: NaN, high: NaN, n };
  const std = sampleStd(xs);
  const half = studentTQuantile((1 + level) / 2, n - 1) * (std / Math.sqrt(n));
  return { mean, std, low: mean - half, high: mean + half, n };
}
