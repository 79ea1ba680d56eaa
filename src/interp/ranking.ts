// Ranking heads (or anything) by several criteria: each tie broken by the next criterion, and items equal on every
// criterion in a seeded random order sharing one rank, never in their input (layer, head) order: a position
// tie-break would pick "the first heads of layer 0" whenever scores saturate, and report it as a finding.

import { mulberry32 } from '../eval/synthetic.js';

/** FNV-1a of a string: a seed per function name. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export function shuffleInPlace<T>(a: T[], rand: () => number): T[] {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/**
 * Best first by the criteria (higher is better for each; NaN lowest). Values are compared quantised to 1e-9, so
 * equal means summed in another order still tie.
 */
export function criteriaComparator<T>(criteria: readonly ((t: T) => number)[]): (a: T, b: T) => number {
  const key = (x: number) => (Number.isNaN(x) ? -Infinity : Math.round(x * 1e9));
  return (a, b) => {
    for (const c of criteria) {
      const ka = key(c(a));
      const kb = key(c(b));
      if (ka !== kb) return kb > ka ? 1 : -1;
    }
    return 0;
  };
}

/**
 * Items best first by the criteria, each tie broken by the next criterion; items equal on every criterion share a
 * rank (1 = best) and stand in a seeded random order, never in their input (e.g. layer, head) order.
 */
export function rankByCriteria<T>(items: readonly T[], criteria: readonly ((t: T) => number)[], seed: number): { item: T; rank: number }[] {
  const compare = criteriaComparator(criteria);
  const order = shuffleInPlace([...items], mulberry32(seed >>> 0));
  order.sort(compare); // stable: ties keep the shuffled order
  const out: { item: T; rank: number }[] = [];
  order.forEach((item, i) => out.push({ item, rank: i > 0 && compare(order[i - 1], item) === 0 ? out[i - 1].rank : i + 1 }));
  return out;
}

/**
 * How many heads a top set holds: topK when given (an integer in [1, total]), else round(topPercent% of total),
 * at least 1 (topPercent default 10, as CogVision).
 */
export function topCount(total: number, opts: { topPercent?: number; topK?: number }): { topPercent: number; k: number } {
  const topPercent = opts.topPercent ?? 10;
  if (!(topPercent > 0 && topPercent <= 100)) throw new Error(`topPercent must be in (0, 100], got ${topPercent}`);
  if (opts.topK !== undefined) {
    if (!Number.isInteger(opts.topK) || opts.topK < 1 || opts.topK > total) throw new Error(`topK must be an integer in [1, ${total}], got ${opts.topK}`);
    return { topPercent, k: opts.topK };
  }
  return { topPercent, k: Math.min(total, Math.max(1, Math.round((topPercent * total) / 100))) };
}
