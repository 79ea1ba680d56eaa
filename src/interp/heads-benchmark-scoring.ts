// Scoring head-finding methods against known heads (the planted-head benchmark, head-finding.md section 4): every
// method gives each (layer, head) a list of criteria (larger is better: the method's score first, then what breaks
// its ties); heads are ranked by them, ties broken by the next criterion and, when equal on every criterion, by a
// seeded random order, never by (layer, head) position. The known heads' ranks and precision@k = |top-k AND known| / k
// are read off that ranking.
//
// Pure functions on score tables: no model, no files.
//
//   rankHeadScores      criteria grids [criteria][layers][heads] -> the ranking (positions 1..n, shared ranks of
//                       heads equal on every criterion, the positions each tie spans)
//   knownHeadRanks      where each known head stands (its position, and the span of its tie)
//   precisionAtK        hits among the first k of the ranking
//   combineFunctions    per-function criteria grids -> one grid per criterion, each the best (max) over the functions
//   targetFunctions     the probe functions a known head's question_types point at, read from the data's labels
//   verdict             "finds the planted heads" or not, in one sentence with the numbers

import { mixSeed } from '../eval/synthetic.js';
import { rankByCriteria } from './probe-controls.js';
import { hashString } from './ranking.js';
import { type HeadRef, headName } from './heads.js';

/** One head of a ranking. */
export interface RankedHeadScore {
  layer: number;
  head: number;
  /** 1-based place in the ranking (ties in seeded order). */
  position: number;
  /** Shared rank: the first position of the heads equal to it on every criterion. */
  rank: number;
  /** Positions its tie spans (tiedFrom = rank; equal when it ties with no head). */
  tiedFrom: number;
  tiedTo: number;
  /** Its criteria values, in the order given. */
  values: number[];
}

/** FNV-1a of a string, for per-method seeds (the ranking's hash, exported under the benchmark's name). */
export const hashLabel = hashString;

function checkGrids(grids: readonly (readonly (readonly number[])[])[], what: string): { layers: number; heads: number } {
  if (grids.length === 0) throw new Error(`${what}: no criteria`);
  const layers = grids[0]!.length;
  const heads = layers ? grids[0]![0]!.length : 0;
  if (layers < 1 || heads < 1) throw new Error(`${what}: empty score grid`);
  for (const [c, g] of grids.entries()) {
    if (g.length !== layers || g.some((row) => row.length !== heads)) throw new Error(`${what}: criterion ${c} is not a ${layers} x ${heads} grid`);
  }
  return { layers, heads };
}

/**
 * Ranks every head by `grids` (criteria best first, each [layers][heads], larger is better; NaN is worst): by the
 * first criterion, ties by the next, heads equal on all of them in the order of a PRNG seeded by `seed` (values are
 * compared after rounding to 1e-9, as the probes' rankings do).
 */
export function rankHeadScores(grids: readonly (readonly (readonly number[])[])[], seed: number): RankedHeadScore[] {
  const { layers, heads } = checkGrids(grids, 'rankHeadScores');
  const items: { layer: number; head: number; values: number[] }[] = [];
  for (let l = 0; l < layers; l++) for (let h = 0; h < heads; h++) items.push({ layer: l, head: h, values: grids.map((g) => g[l]![h]!) });
  const ranked = rankByCriteria(
    items,
    grids.map((_, c) => (x: (typeof items)[number]) => x.values[c]!),
    seed >>> 0,
  );
  const out: RankedHeadScore[] = ranked.map(({ item, rank }, i) => ({ layer: item.layer, head: item.head, position: i + 1, rank, tiedFrom: rank, tiedTo: i + 1, values: item.values }));
  // tiedTo: the last position holding the same shared rank.
  for (let i = out.length - 1; i >= 0; i--) {
    const next = out[i + 1];
    out[i]!.tiedTo = next && next.rank === out[i]!.rank ? next.tiedTo : out[i]!.position;
  }
  return out;
}

/** Where a known head stands in a ranking. */
export interface KnownHeadRank {
  layer: number;
  head: number;
  /** 1-based position (ties in seeded order). */
  rank: number;
  /** The positions its tie spans (equal to rank when it ties with no head). */
  tiedFrom: number;
  tiedTo: number;
  /** Its criteria values. */
  values: number[];
}

/** The known heads' places in `ranking`, in the order of `known`; a known head the ranking lacks is an error. */
export function knownHeadRanks(ranking: readonly RankedHeadScore[], known: readonly HeadRef[]): KnownHeadRank[] {
  return known.map((k) => {
    const r = ranking.find((x) => x.layer === k.layer && x.head === k.head);
    if (!r) throw new Error(`knownHeadRanks: known head ${headName(k)} is not in the ranking`);
    return { layer: k.layer, head: k.head, rank: r.position, tiedFrom: r.tiedFrom, tiedTo: r.tiedTo, values: r.values };
  });
}

export interface PrecisionAtK {
  k: number;
  /** Known heads among the first k. */
  hits: number;
  /** hits / k. */
  precision: number;
  /** hits / known heads (recall@k). */
  recall: number;
  /** The cut at k falls inside a tie (the k-th and (k+1)-th heads are equal on every criterion): the seeded order decided. */
  cutInTie: boolean;
}

/** precision@k = |first k of the ranking AND known| / k (with recall@k and whether the cut falls inside a tie). */
export function precisionAtK(ranking: readonly RankedHeadScore[], known: readonly HeadRef[], k: number): PrecisionAtK {
  if (!Number.isInteger(k) || k < 1 || k > ranking.length) throw new Error(`precisionAtK: k must be an integer in [1, ${ranking.length}], got ${k}`);
  if (known.length === 0) throw new Error('precisionAtK: no known heads');
  const set = new Set(known.map((h) => `${h.layer}:${h.head}`));
  const hits = ranking.slice(0, k).filter((h) => set.has(`${h.layer}:${h.head}`)).length;
  const cutInTie = k < ranking.length && ranking[k - 1]!.rank === ranking[k]!.rank;
  return { k, hits, precision: hits / k, recall: hits / set.size, cutInTie };
}

/**
 * One grid per criterion from per-function grids: each cell the largest finite value over the functions (NaN when
 * no function has one), so a head is scored by its best function.
 */
export function combineFunctions(perFunction: readonly (readonly (readonly (readonly number[])[])[])[]): number[][][] {
  if (perFunction.length === 0) throw new Error('combineFunctions: no functions');
  const shapes = perFunction.map((g) => checkGrids(g, 'combineFunctions'));
  const C = perFunction[0]!.length;
  const { layers, heads } = shapes[0]!;
  if (perFunction.some((g, i) => g.length !== C || shapes[i]!.layers !== layers || shapes[i]!.heads !== heads)) throw new Error('combineFunctions: functions have different criteria or grids');
  return Array.from({ length: C }, (_, c) =>
    Array.from({ length: layers }, (_, l) =>
      Array.from({ length: heads }, (_, h) => {
        let best = NaN;
        for (const g of perFunction) {
          const v = g[c]![l]![h]!;
          if (Number.isFinite(v) && !(v <= best)) best = v;
        }
        return best;
      }),
    ),
  );
}

/** What a known head's question type points at. */
export interface TargetSource {
  /** The question type as known_heads.json names it ("spatial", "vsr", "sub:relational_reasoning"). */
  questionType: string;
  /** The function labels it maps to in the data (empty when the data has no such question). */
  functions: string[];
}

/**
 * The probe functions of the known heads: for each of their question_types, a main question type ("spatial", "vsr")
 * maps to the function labels of the data's main questions of that type, "sub:X" to function X (when some question of
 * the data carries it). Returns the union (sorted), per type where it came from, and the types the data lacks.
 */
export function targetFunctions(
  questionTypes: readonly string[],
  items: readonly { type: string; function: string; mainId?: string }[],
): { functions: string[]; sources: TargetSource[]; missing: string[] } {
  const sources: TargetSource[] = [];
  const missing: string[] = [];
  const all = new Set<string>();
  for (const qt of [...new Set(questionTypes)]) {
    let fns: string[];
    if (qt.startsWith('sub:')) {
      const fn = qt.slice(4);
      fns = items.some((i) => i.function === fn) ? [fn] : [];
    } else {
      fns = [...new Set(items.filter((i) => i.mainId === undefined && i.type === qt).map((i) => i.function))].sort();
    }
    if (fns.length === 0) missing.push(qt);
    fns.forEach((f) => all.add(f));
    sources.push({ questionType: qt, functions: fns });
  }
  return { functions: [...all].sort(), sources, missing };
}

/** The seed of a method's tie order: mixed from the benchmark seed and the method's name. */
export const methodSeed = (seed: number, method: string): number => mixSeed(seed >>> 0, hashLabel(method));

// ---------------------------------------------------------------------------------------------------------------
// Verdicts

export interface AblationSummary {
  k: number;
  baseline: number;
  top: number;
  randomMean: number;
  randomStd: number;
  t: number;
  p: number;
}

export type Finding = 'finds' | 'partly' | 'misses' | 'no result';

export interface Verdict {
  finding: Finding;
  /** One sentence with the numbers. */
  text: string;
}

const pct = (x: number) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : 'n/a');
const ordinal = (n: number) => `${n}${n % 100 >= 11 && n % 100 <= 13 ? 'th' : (['th', 'st', 'nd', 'rd'][n % 10] ?? 'th')}`;
export const fmtP = (p: number): string => (!Number.isFinite(p) ? 'n/a' : p === 0 ? '0' : p < 1e-3 ? p.toExponential(1) : p.toFixed(3));
export const fmtT = (t: number): string => (Number.isNaN(t) ? 'n/a' : Number.isFinite(t) ? t.toFixed(2) : t > 0 ? 'inf' : '-inf');

/** "L1H0 1st, L1H1 3rd (tied 3rd-5th)". */
export function describeRanks(ranks: readonly KnownHeadRank[]): string {
  return ranks.map((r) => `${headName(r)} ${ordinal(r.rank)}${r.tiedTo > r.tiedFrom ? ` (tied ${ordinal(r.tiedFrom)}-${ordinal(r.tiedTo)})` : ''}`).join(', ');
}

/** Below this baseline accuracy the ablation cannot show a method's heads hurting the job: it does not count. */
export const MIN_ABLATION_BASELINE = 0.5;

/**
 * A method finds the planted heads when its first n (n = known heads) are exactly the known heads, not by the seeded
 * tie order, and ablating them hurts the job more than n random heads (p < alpha, top-k below the random mean) when
 * the ablation was run on questions the model mostly answers (baseline >= MIN_ABLATION_BASELINE; a lower baseline
 * leaves nothing to hurt, and the sentence says so); partly when some known head is in its first n or all are in its
 * first 2n; else it misses.
 */
export function verdict(method: string, ranks: readonly KnownHeadRank[] | null, atN: PrecisionAtK | null, ablation: AblationSummary | null, alpha = 0.05, reason?: string): Verdict {
  if (!ranks || !atN) return { finding: 'no result', text: `${method}: no result${reason ? ` (${reason})` : ''}.` };
  const n = ranks.length;
  const where = `ranks ${describeRanks(ranks)}; precision@${atN.k} = ${atN.precision.toFixed(2)}${atN.cutInTie ? ' (the cut falls inside a tie)' : ''}`;
  let abl = '';
  let hurts: boolean | null = null;
  if (ablation) {
    const informative = ablation.baseline >= MIN_ABLATION_BASELINE;
    hurts = informative ? ablation.p < alpha && ablation.top < ablation.randomMean : null;
    abl = `; ablating its top-${ablation.k} takes spatial accuracy ${pct(ablation.baseline)} -> ${pct(ablation.top)} vs ${pct(ablation.randomMean)} +- ${pct(ablation.randomStd)} for random-${ablation.k} (t = ${fmtT(ablation.t)}, p = ${fmtP(ablation.p)})`;
    if (!informative) abl += ` (a baseline below ${pct(MIN_ABLATION_BASELINE)} leaves the ablation nothing to show, so it does not count)`;
  }
  const allTop = atN.precision === 1 && !atN.cutInTie;
  let finding: Finding;
  if (allTop && hurts !== false) finding = 'finds';
  else if (atN.hits > 0 || ranks.every((r) => r.tiedTo <= 2 * n)) finding = 'partly';
  else finding = 'misses';
  const head =
    finding === 'finds'
      ? 'finds the planted heads'
      : finding === 'partly'
        ? allTop
          ? 'ranks the planted heads first, but ablating them does not hurt more than random heads'
          : 'finds the planted heads only in part'
        : 'does not find the planted heads';
  return { finding, text: `${method} ${head}: ${where}${abl}.` };
}
