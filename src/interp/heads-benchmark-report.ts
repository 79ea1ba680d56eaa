// The planted-head benchmark's outputs (runHeadsBenchmark's result): heads-benchmark.json (everything; NaN as
// null, infinities as strings), heads-benchmark.md (the tables and verdicts), heads-benchmark.csv (every method's
// full ranking) and heads-benchmark-summary.csv (one line per method).

import type { HeadsBenchmarkResult, MethodResult } from './heads-benchmark.js';
import { describeRanks, fmtP, fmtT } from './heads-benchmark-scoring.js';
import { headName } from './heads.js';

const pct = (x: number) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : 'n/a');
const num = (x: number, d = 3) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const csvCell = (v: unknown) => {
  const s = typeof v === 'number' ? (Number.isFinite(v) ? String(v) : '') : String(v ?? '');
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};

/** JSON's stand-ins for numbers it cannot hold: NaN as null, infinities (a t with no spread) as "Infinity" / "-Infinity". */
export const jsonNumber = (_k: string, v: unknown): unknown => (typeof v === 'number' && !Number.isFinite(v) ? (Number.isNaN(v) ? null : String(v)) : v);

/** The result as JSON text (jsonNumber's stand-ins), 1-space indent. */
export function benchmarkJson(r: HeadsBenchmarkResult, meta: Record<string, unknown> = {}): string {
  return `${JSON.stringify({ ...meta, ...r }, jsonNumber, 1)}\n`;
}

const MAX_CRITERIA = 4;

/** Every method's ranking: method,position,rank,layer,head,known,value_1..value_4 (the method's criteria in order). */
export function benchmarkCsv(r: HeadsBenchmarkResult): string {
  const known = new Set(r.known.heads.map((h) => `${h.layer}:${h.head}`));
  let out = `method,position,rank,layer,head,known,${Array.from({ length: MAX_CRITERIA }, (_, i) => `value_${i + 1}`).join(',')}\n`;
  for (const m of r.methods) {
    for (const h of m.ranking) {
      const values = Array.from({ length: MAX_CRITERIA }, (_, i) => h.values[i] ?? NaN);
      out += [m.method, h.position, h.rank, h.layer, h.head, known.has(`${h.layer}:${h.head}`) ? 1 : 0, ...values].map(csvCell).join(',') + '\n';
    }
  }
  return out;
}

/** One line per method: known ranks, precision@k, the ablation and the finding. */
export function benchmarkSummaryCsv(r: HeadsBenchmarkResult): string {
  const heads = r.known.heads.map(headName);
  let out = ['method', 'ok', ...heads.map((h) => `rank_${h}`), ...r.ks.map((k) => `precision_at_${k}`), 'ablation_k', 'baseline', 'top_k', 'random_k_mean', 'random_k_std', 't', 'p', 'finding'].join(',') + '\n';
  for (const m of r.methods) {
    const a = m.ablation;
    out +=
      [
        m.method,
        m.ok ? 1 : 0,
        ...r.known.heads.map((_, i) => m.known[i]?.rank ?? ''),
        ...r.ks.map((k) => m.precision.find((p) => p.k === k)?.precision ?? ''),
        a?.k ?? '',
        a?.baseline ?? '',
        a?.top ?? '',
        a?.randomMean ?? '',
        a?.randomStd ?? '',
        a?.t ?? '',
        a?.p ?? '',
        m.verdict.finding,
      ]
        .map(csvCell)
        .join(',') + '\n';
  }
  return out;
}

function table(header: string[], rows: string[][], align: ('l' | 'r')[]): string {
  return [`| ${header.join(' | ')} |`, `|${align.map((a) => (a === 'r' ? '---:' : '---')).join('|')}|`, ...rows.map((row) => `| ${row.join(' | ')} |`)].join('\n') + '\n';
}

function topList(m: MethodResult, k: number): string {
  return m.ranking
    .slice(0, k)
    .map((h) => `${headName(h)} ${num(h.values[0]!)}`)
    .join(', ');
}

/** The markdown report: known heads, data, one summary table, verdicts, per-function detail, each method's top heads and settings. */
export function benchmarkMarkdown(r: HeadsBenchmarkResult, opts: { title?: string; level?: number } = {}): string {
  const h = '#'.repeat(opts.level ?? 1);
  const hh = `${h}#`;
  const n = r.known.heads.length;
  let out = `${h} ${opts.title ?? 'Planted-head benchmark'}\n\n`;
  out += `Known heads (${r.known.source || 'known_heads.json'}), on ${r.layers} text layers x ${r.heads} heads:\n\n`;
  out += table(
    ['head', 'role', 'function', 'question types'],
    r.known.heads.map((k) => [headName(k), k.role, k.function, k.questionTypes.join(', ')]),
    ['l', 'l', 'l', 'l'],
  );
  out += `\nProbe functions they point at: ${r.targets.sources.map((s) => `${s.questionType} -> ${s.functions.length ? s.functions.join(', ') : '(not in the data)'}`).join('; ')}; a head's probe score is its best over ${r.targets.functions.join(', ') || '(none)'}.\n`;
  const collected = Object.entries(r.data.collected);
  out += `\nData: ${r.data.questions} questions (${r.data.spatialQuestions} spatial main questions)${r.data.wordings ? ', with held-out wordings' : ''}`;
  if (collected.length) out += `; collected at the last prompt row: ${collected.map(([f, c]) => `${f} ${c.correct}/${c.total} correct`).join(', ')}`;
  out += '.\n';
  if (r.ablation) {
    out += `Ablation: each method's top-${r.ablation.k} heads scaled by 0 vs ${r.ablation.k} random heads outside them (${r.ablation.seeds} seeds), on ${r.ablation.questions} spatial questions (baseline ${pct(r.ablation.baseline)}); t and p: the top-k accuracy against the random-k accuracies (Welch, one value against ${r.ablation.seeds}).\n`;
  }

  out += `\n${hh} Summary\n\n`;
  const header = ['method', 'known heads\' ranks', ...r.ks.map((k) => `P@${k}`), `top-${n}`, ...(r.ablation ? [`top-${n} ablated`, `random-${n} ablated`, 't', 'p'] : []), 'finds them?'];
  const rows = r.methods.map((m) => {
    if (!m.ok) return [m.label, 'no result', ...r.ks.map(() => ''), '', ...(r.ablation ? ['', '', '', ''] : []), 'no result'];
    const a = m.ablation;
    return [
      m.label,
      describeRanks(m.known),
      ...r.ks.map((k) => {
        const p = m.precision.find((x) => x.k === k)!;
        return `${p.precision.toFixed(2)}${p.cutInTie ? '*' : ''}`;
      }),
      m.ranking.slice(0, n).map(headName).join(', '),
      ...(r.ablation ? (a ? [pct(a.top), `${pct(a.randomMean)} +- ${pct(a.randomStd)}`, fmtT(a.t), fmtP(a.p)] : ['', '', '', '']) : []),
      m.verdict.finding === 'finds' ? 'yes' : m.verdict.finding === 'partly' ? 'partly' : m.verdict.finding === 'misses' ? 'no' : 'no result',
    ];
  });
  out += table(header, rows, ['l', 'l', ...r.ks.map(() => 'r' as const), 'l', ...(r.ablation ? (['r', 'r', 'r', 'r'] as const) : []), 'l']);
  if (r.methods.some((m) => m.precision.some((p) => p.cutInTie))) out += '\n\\* the cut at k falls inside a tie (heads equal on every criterion, in seeded order).\n';
  out += '\nRanks are 1-based; heads equal on a criterion are ordered by the next one, heads equal on all by a seeded order (never by position); "tied a-b" gives the places such a tie spans.\n';

  out += `\n${hh} Verdicts\n\n`;
  for (const m of r.methods) out += `- ${m.verdict.text}\n`;

  const withFns = r.methods.filter((m) => m.functions.length);
  if (withFns.length) {
    out += `\n${hh} Probe methods per function\n\n`;
    out += table(
      ['method', 'function', 'known heads\' ranks', `P@${n}`, 'top set separated?'],
      withFns.flatMap((m) =>
        m.functions.map((f) => {
          const p = f.precision.find((x) => x.k === n) ?? f.precision[0]!;
          return [m.label, f.function, describeRanks(f.known), `${p.precision.toFixed(2)}${p.cutInTie ? '*' : ''}`, f.separation ?? ''];
        }),
      ),
      ['l', 'l', 'l', 'r', 'l'],
    );
    const skipped = withFns.flatMap((m) => m.skipped.map((s) => `${m.method}: ${s.function} (${s.reason})`));
    if (skipped.length) out += `\nNot scored: ${skipped.join('; ')}.\n`;
  }

  out += `\n${hh} Top heads per method\n\n`;
  const top = Math.min(8, r.layers * r.heads);
  out += table(
    ['method', 'criteria (best first)', `top ${top} (first criterion)`, 'seconds'],
    r.methods.map((m) => (m.ok ? [m.label, m.criteria.join('; '), topList(m, top), m.seconds.toFixed(1)] : [m.label, '', `no result: ${m.reason ?? ''}`, m.seconds.toFixed(1)])),
    ['l', 'l', 'l', 'r'],
  );
  out += `\n${hh} Settings\n\n`;
  for (const m of r.methods.filter((x) => x.ok)) {
    const s = Object.entries(m.settings)
      .filter(([, v]) => !(Array.isArray(v) && v.length > 8))
      .map(([k, v]) => `${k} ${typeof v === 'object' ? JSON.stringify(v, (_k, x: unknown) => (typeof x === 'number' ? Number(x.toPrecision(4)) : x)) : typeof v === 'number' ? Number(v.toPrecision(4)) : String(v)}`)
      .join(', ');
    out += `- ${m.label}: ${s}\n`;
  }
  return out;
}
