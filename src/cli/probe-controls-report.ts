// `vlmscope probe --controls`: the outputs of the probe controls (src/interp/probe-controls.ts) beside the plain
// probe outputs of src/cli/probe.ts: the CSV grows columns after the plain ones, probes.json's ranking and top set
// become the controlled ranking (the accuracy ranking stays as accuracy_ranking), probes.md reports per function the
// wording-only control, the top heads with their intervals and whether the top set is separated, and a selectivity
// heatmap is written per function.

import type { ActivationStore } from '../interp/activation-store.js';
import type { ControlledRanking, ProbeControls, WordedProbeExample } from '../interp/probe-controls.js';
import type { HeadRanking, ProbeExample, ProbeResult } from '../interp/probes.js';
import { sampleMean } from '../interp/statistics.js';

/** The probe examples with the question text of their store rows, for the wording control. */
export function wordedExamples(examples: readonly ProbeExample[], store: ActivationStore): WordedProbeExample[] {
  const question = new Map(store.examples.map((e) => [String(e.id), e.question]));
  return examples.map((e) => ({ ...e, question: question.get(String(e.id)) }));
}

/** Selectivity heatmap range: 0 (no better than the control) in the middle. */
export const SELECTIVITY_HEATMAP_RANGE: [number, number] = [-0.5, 0.5];

/** selectivity-<slug>.png beside each heatmap-<slug>.png. */
export const selectivityHeatmapName = (heatmap: string): string => heatmap.replace(/^heatmap-/, 'selectivity-');

const csvField = (s: string) => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);

/** probes.csv with controls: the plain columns (rank and top from the controlled ranking), then the controls' columns. */
export function controlledProbesCsv(result: ProbeResult, controls: ProbeControls, ranking: ControlledRanking, accuracyRanking: HeadRanking): string {
  let out =
    'function,layer,head,accuracy_mean,accuracy_std,rank,top,accuracy_ci_low,accuracy_ci_high,permutation_mean,permutation_std,wording_accuracy,control,selectivity_mean,selectivity_ci_low,selectivity_ci_high,accuracy_rank\n';
  for (const fr of ranking.functions) {
    const fp = result.functions.find((f) => f.function === fr.function)!;
    const fc = controls.functions.find((f) => f.function === fr.function)!;
    const accRank = new Map(accuracyRanking.functions.find((f) => f.function === fr.function)!.ranking.map((h) => [`${h.layer},${h.head}`, h.rank]));
    const byHead = [...fr.ranking].sort((a, b) => a.layer - b.layer || a.head - b.head);
    for (const h of byHead) {
      const { layer: l, head: hd } = h;
      out +=
        [
          csvField(fr.function),
          l,
          hd,
          fp.mean[l][hd],
          fp.std[l][hd],
          h.rank,
          fr.top.includes(h) ? 1 : 0,
          h.accuracyLow,
          h.accuracyHigh,
          fc.permutationMean[l][hd],
          fc.permutationStd[l][hd],
          h.wordingAccuracy,
          h.control,
          h.selectivity,
          h.selectivityLow,
          h.selectivityHigh,
          accRank.get(`${l},${hd}`),
        ].join(',') + '\n';
    }
  }
  return out;
}

const round = (x: number) => (Number.isFinite(x) ? x : null);
const gridOf = (g: readonly (readonly number[])[]) => g.map((row) => row.map(round));

/**
 * probes.json with controls: takes the plain probesJson object and replaces each function's ranking and top with the
 * controlled ones (the plain ranking moves to accuracy_ranking), adding its controls and separation, and the
 * settings at the top level.
 */
export function addControlsJson(json: { functions: Record<string, unknown> } & Record<string, unknown>, controls: ProbeControls, ranking: ControlledRanking): Record<string, unknown> {
  const functions: Record<string, unknown> = {};
  for (const fr of ranking.functions) {
    const f = json.functions[fr.function] as Record<string, unknown>;
    const fc = controls.functions.find((c) => c.function === fr.function)!;
    const { ranking: accuracyRanking, top: accuracyTop, ...rest } = f;
    functions[fr.function] = {
      ...rest,
      ranking: fr.ranking.map((h) => ({
        layer: h.layer,
        head: h.head,
        rank: h.rank,
        accuracy: round(h.accuracy),
        accuracy_ci: [round(h.accuracyLow), round(h.accuracyHigh)],
        selectivity: round(h.selectivity),
        selectivity_ci: [round(h.selectivityLow), round(h.selectivityHigh)],
        control: round(h.control),
        permutation_mean: round(h.permutationMean),
        wording_accuracy: round(h.wordingAccuracy),
      })),
      top: fr.top.map((h) => ({ layer: h.layer, head: h.head, rank: h.rank, accuracy: round(h.accuracy), selectivity: round(h.selectivity) })),
      separation: { separated: fr.separation.separated, tied_at_cut: fr.separation.tiedAtCut, overlapping: fr.separation.overlapping, note: fr.separation.note },
      accuracy_ranking: accuracyRanking,
      accuracy_top: accuracyTop,
      controls: {
        binding: fc.binding,
        wording_accuracy_per_seed: fc.wordingAccuracy.map(round),
        wording_train_accuracy_per_seed: fc.wordingTrainAccuracy.map(round),
        wording_templates_per_seed: fc.wordingTemplates,
        permutation_mean: gridOf(fc.permutationMean),
        permutation_std: gridOf(fc.permutationStd),
        permutation_accuracy_per_seed: fc.permutationAccuracy.map((perm) => perm.map(gridOf)),
        control_mean: gridOf(fc.controlMean),
        accuracy_ci_low: gridOf(fc.accuracyCi.map((r) => r.map((iv) => iv.low))),
        accuracy_ci_high: gridOf(fc.accuracyCi.map((r) => r.map((iv) => iv.high))),
        selectivity_mean: gridOf(fc.selectivityCi.map((r) => r.map((iv) => iv.mean))),
        selectivity_ci_low: gridOf(fc.selectivityCi.map((r) => r.map((iv) => iv.low))),
        selectivity_ci_high: gridOf(fc.selectivityCi.map((r) => r.map((iv) => iv.high))),
        selectivity_per_seed: fc.selectivity.map(gridOf),
      },
    };
  }
  return {
    ...json,
    functions: { ...json.functions, ...functions },
    controls: {
      permutations: controls.permutations,
      ci_level: controls.level,
      wording_source: controls.wordingSource,
      templates: controls.templates,
      control: 'max(label-permutation mean, wording-only accuracy) per seed',
      rank_by: ranking.rankBy,
      criteria: ranking.criteria,
    },
  };
}

const f3 = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : 'n/a');
const ci = (lo: number, hi: number) => (Number.isFinite(lo) && Number.isFinite(hi) ? `[${f3(lo)}, ${f3(hi)}]` : '');
const mean = (xs: readonly number[]) => sampleMean(xs.filter(Number.isFinite));

const WORDING_SOURCE_TEXT: Record<ProbeControls['wordingSource'], string> = {
  wording: "the examples' wording ids (a paraphrase shared by two question types counts once)",
  'masked-question': 'the question text with colours, shapes, numbers and relation words masked',
  question: 'the exact question text (masking changed no question)',
};

/** probes.md: the controlled probes per function, with the separation of each top set stated. */
export function controlsMarkdown(result: ProbeResult, controls: ProbeControls, ranking: ControlledRanking, heatmaps: Map<string, string>): string {
  const pct = Math.round(controls.level * 100);
  let out = `# Functional-head probes with controls\n\n`;
  out +=
    `${result.layers} layers x ${result.heads} heads, seeds ${result.seeds.join(', ')} (${result.seeds.length} splits), split by ${result.splitBy}; ` +
    `${controls.permutations} label permutations per function and seed; wording-only control on ${controls.templates} templates from ` +
    `${WORDING_SOURCE_TEXT[controls.wordingSource]}. Control = max(permutation mean, wording-only accuracy) per seed; selectivity = held-out accuracy minus control; ` +
    `intervals are ${pct}% t-intervals over the seeds. Heads are ranked by ${ranking.criteria.join(', then ')}; heads equal on all of them share a rank.` +
    (result.splitBy === 'wording'
      ? ' Split by wording, every seed tests on the same held-out wordings (seeds change only the negatives drawn), so the intervals show that sampling spread, not the spread between wordings; templates unseen in training leave the wording-only probe at chance.'
      : '') +
    '\n\n';
  for (const fr of ranking.functions) {
    const fp = result.functions.find((f) => f.function === fr.function)!;
    const fc = controls.functions.find((f) => f.function === fr.function)!;
    out += `## ${fr.function}\n\n`;
    out +=
      `${fp.positives} positives. Wording-only accuracy ${f3(mean(fc.wordingAccuracy))} (per seed ${fc.wordingAccuracy.map(f3).join(', ')}); ` +
      `label-permutation accuracy ${f3(mean(fc.permutationMean.flat()))} on average over heads. The ${fc.binding === 'wording' ? 'wording-only' : 'permutation'} control is the larger one.\n\n`;
    out += `| rank | head | accuracy | ${pct}% CI | permutation | control | selectivity | ${pct}% CI |\n|---:|---|---:|---|---:|---:|---:|---|\n`;
    for (const h of fr.ranking.slice(0, fr.top.length + 3)) {
      const mark = fr.top.includes(h) ? ' **top**' : '';
      out += `| ${h.rank} | L${h.layer}H${h.head}${mark} | ${f3(h.accuracy)} | ${ci(h.accuracyLow, h.accuracyHigh)} | ${f3(h.permutationMean)} | ${f3(h.control)} | ${f3(h.selectivity)} | ${ci(h.selectivityLow, h.selectivityHigh)} |\n`;
    }
    out += `\nTop ${fr.top.length}: ${fr.separation.note}.\n\n`;
    const map = heatmaps.get(fr.function);
    if (map) out += `![${fr.function} selectivity](${selectivityHeatmapName(map)}) ![${fr.function} accuracy](${map})\n\n`;
  }
  for (const s of result.skipped) out += `Skipped ${s.function}: ${s.reason}.\n\n`;
  return out;
}

/** The stdout lines of a controlled run: one row per function, then each top set's separation. */
export function controlsSummary(controls: ProbeControls, ranking: ControlledRanking): string {
  const rows = ranking.functions.map((fr) => {
    const fc = controls.functions.find((f) => f.function === fr.function)!;
    const best = fr.ranking[0];
    const shown = fr.top.slice(0, 6).map((h) => `L${h.layer}H${h.head}`);
    return [fr.function, f3(mean(fc.wordingAccuracy)), f3(best.accuracy), f3(best.selectivity), shown.join(' ') + (fr.top.length > shown.length ? ' ...' : '')];
  });
  const head = ['function', 'wording-only', 'best acc', 'best selectivity', `top heads (by ${ranking.rankBy})`];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]))).join('  ') + '\n';
  let out = line(head);
  for (const r of rows) out += line(r);
  for (const fr of ranking.functions) out += `${fr.function}: top ${fr.top.length} ${fr.separation.note}\n`;
  return out;
}
