// `vlmscope probe --probe mlp`: the CogVSR MLP probe (src/interp/mlp-probe.ts) on an activation store, with the
// same output files as the linear probes: probes.json (probe "mlp"; per function the ranking by gradient x
// activation importance, the top set, the elbow, the separation of the top set, per-seed importances and fits),
// probes.csv, probes.md and one heatmap-<function>.png of mean |importance| per function.

import { join } from 'node:path';
import type { ActivationStore } from '../interp/activation-store.js';
import { type MlpProbeExample, type MlpProbeResult, type MlpRanking, fitMlpProbes, rankMlpHeads } from '../interp/mlp-probe.js';
import { headsHeatmapPng } from '../interp/probes.js';
import { writeAtomic } from './files.js';
import { progressLine } from './progress.js';

export interface MlpCliOptions {
  topPercent: number;
  seeds: number[];
  testFraction: number;
  splitBy: 'question' | 'wording';
  functions?: string[];
  epochs: number;
  batchSize: number;
  verbose?: boolean;
}

const round = (x: number) => (Number.isFinite(x) ? x : null);
const f3 = (x: number) => (Number.isFinite(x) ? x.toPrecision(3) : 'n/a');

export async function runMlpProbe(store: ActivationStore, examples: MlpProbeExample[], outDir: string, heatmaps: Map<string, string>, opts: MlpCliOptions): Promise<void> {
  const t0 = performance.now();
  const bar = progressLine(process.stderr);
  const result = fitMlpProbes({
    features: store.z,
    layers: store.layers,
    heads: store.heads,
    dim: store.dim,
    examples,
    seeds: opts.seeds,
    testFraction: opts.testFraction,
    splitBy: opts.splitBy,
    epochs: opts.epochs,
    batchSize: opts.batchSize,
    onProgress: (p) => {
      bar?.draw(p.done, p.total, (b, rate, eta) => `probe (mlp) [${b}] ${p.done}/${p.total} epochs (seeds x epochs)  ${rate.toFixed(2)}/s  ETA ${Math.round(eta)} s`);
      if (opts.verbose && p.done % Math.max(1, opts.epochs) === 0) process.stderr.write(`probe: MLP seed ${p.done / Math.max(1, opts.epochs)} of ${opts.seeds.length} done in ${p.seconds.toFixed(1)} s\n`);
    },
  });
  bar?.done();
  const ranking = rankMlpHeads(result, { topPercent: opts.topPercent, functions: opts.functions?.filter((f) => result.classes.includes(f)) });
  for (const fr of ranking.functions) {
    const grid = fr.intervals.map((row) => row.map((iv) => iv.mean));
    const max = Math.max(...grid.flat().filter(Number.isFinite), 0);
    await writeAtomic(join(outDir, heatmaps.get(fr.function)!), headsHeatmapPng(grid, { min: 0, max: max > 0 ? max : 1, highlight: fr.top }));
  }
  await writeAtomic(join(outDir, 'probes.csv'), mlpCsv(ranking));
  await writeAtomic(join(outDir, 'probes.json'), `${JSON.stringify(mlpJson(store, result, ranking, heatmaps, examples.length))}\n`);
  await writeAtomic(join(outDir, 'probes.md'), mlpMarkdown(result, ranking, heatmaps));
  process.stdout.write(mlpSummary(result, ranking, outDir));
  if (opts.verbose) process.stderr.write(`probe: ${((performance.now() - t0) / 1000).toFixed(1)} s in all (mlp, cpu)\n`);
}

const csvField = (s: string) => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);

export function mlpCsv(ranking: MlpRanking): string {
  let out = 'function,layer,head,importance_mean,importance_ci_low,importance_ci_high,signed_importance_mean,rank,top\n';
  for (const fr of ranking.functions) {
    for (const h of [...fr.ranking].sort((a, b) => a.layer - b.layer || a.head - b.head)) {
      out += [csvField(fr.function), h.layer, h.head, h.importance, h.importanceLow, h.importanceHigh, h.signedImportance, h.rank, fr.top.includes(h) ? 1 : 0].join(',') + '\n';
    }
  }
  return out;
}

export function mlpJson(store: ActivationStore, result: MlpProbeResult, ranking: MlpRanking, heatmaps: Map<string, string>, examplesUsed: number) {
  const functions: Record<string, unknown> = {};
  for (const fr of ranking.functions) {
    const c = result.classes.indexOf(fr.function);
    functions[fr.function] = {
      positives: result.counts[c],
      heatmap: heatmaps.get(fr.function),
      importance_mean: fr.intervals.map((r) => r.map((iv) => round(iv.mean))),
      importance_ci_low: fr.intervals.map((r) => r.map((iv) => round(iv.low))),
      importance_ci_high: fr.intervals.map((r) => r.map((iv) => round(iv.high))),
      importance_per_seed: result.fits.map((f) => f.importance[c].map((r) => r.map(round))),
      ranking: fr.ranking.map((h) => ({
        layer: h.layer,
        head: h.head,
        rank: h.rank,
        importance: round(h.importance),
        importance_ci: [round(h.importanceLow), round(h.importanceHigh)],
        signed_importance: round(h.signedImportance),
      })),
      top: fr.top.map((h) => ({ layer: h.layer, head: h.head, rank: h.rank, importance: round(h.importance) })),
      elbow: fr.elbow,
      separation: { separated: fr.separation.separated, tied_at_cut: fr.separation.tiedAtCut, overlapping: fr.separation.overlapping, note: fr.separation.note },
    };
  }
  return {
    probe: 'mlp',
    model: store.model ?? null,
    tower: store.tower ?? null,
    layers: result.layers,
    heads: result.heads,
    dim: result.dim,
    examples: examplesUsed,
    seeds: result.seeds,
    test_fraction: result.testFraction,
    split_by: result.splitBy,
    top_percent: ranking.topPercent,
    k: ranking.k,
    backend: 'cpu',
    settings: {
      projection: result.settings.projection,
      hidden: result.settings.hidden,
      dropout: result.settings.dropout,
      learning_rate: result.settings.learningRate,
      weight_decay: result.settings.weightDecay,
      epochs: result.settings.epochs,
      batch_size: result.settings.batchSize,
      optimizer: 'AdamW (betas 0.9, 0.999; eps 1e-8)',
    },
    classes: result.classes,
    criteria: ranking.criteria,
    fits: result.fits.map((f) => ({
      seed: f.seed,
      train_accuracy: round(f.trainAccuracy),
      test_accuracy: round(f.testAccuracy),
      test_accuracy_by_class: Object.fromEntries(result.classes.map((c, i) => [c, round(f.testAccuracyByClass[i])])),
      final_loss: round(f.finalLoss),
      train_examples: f.train.length,
      test_ids: f.test,
    })),
    functions,
  };
}

function mlpMarkdown(result: MlpProbeResult, ranking: MlpRanking, heatmaps: Map<string, string>): string {
  const s = result.settings;
  let out = `# Functional heads by the CogVSR MLP probe\n\n`;
  out +=
    `${result.layers} layers x ${result.heads} heads; one classifier over all heads and the ${result.classes.length} functions ` +
    `(shared Linear(${result.dim} -> ${s.projection}) per head, Linear(${s.projection} x ${result.layers * result.heads} -> ${s.hidden}), ReLU, dropout ${s.dropout}, ` +
    `Linear(${s.hidden} -> ${result.classes.length})), AdamW lr ${s.learningRate}, weight decay ${s.weightDecay}, ${s.epochs} epochs, batch ${s.batchSize}; ` +
    `seeds ${result.seeds.join(', ')}, split by ${result.splitBy}. Held-out accuracy per seed: ${result.fits.map((f) => f3(f.testAccuracy)).join(', ')}. ` +
    `A head's importance for a function is the mean over that function's held-out examples of gradient x activation on its projection; ` +
    `heads are ranked by ${ranking.criteria.join(', then ')} over the seeds (95% t-intervals).\n\n`;
  for (const fr of ranking.functions) {
    out += `## ${fr.function}\n\n| rank | head | mean abs importance | 95% CI | signed mean |\n|---:|---|---:|---|---:|\n`;
    for (const h of fr.ranking.slice(0, fr.top.length + 3)) {
      const iv = Number.isFinite(h.importanceLow) ? `[${f3(h.importanceLow)}, ${f3(h.importanceHigh)}]` : '';
      out += `| ${h.rank} | L${h.layer}H${h.head}${fr.top.includes(h) ? ' **top**' : ''} | ${f3(h.importance)} | ${iv} | ${f3(h.signedImportance)} |\n`;
    }
    out += `\nTop ${fr.top.length}: ${fr.separation.note}. Elbow of the sorted curve (CognitiveMirrors' count): ${fr.elbow}.\n\n`;
    const map = heatmaps.get(fr.function);
    if (map) out += `![${fr.function}](${map})\n\n`;
  }
  return out;
}

function mlpSummary(result: MlpProbeResult, ranking: MlpRanking, outDir: string): string {
  let out =
    `MLP probe: ${result.classes.length} functions x ${result.layers * result.heads} heads (${result.layers} layers x ${result.heads} heads, dim ${result.dim}), ` +
    `seeds ${result.seeds.join(',')}; held-out accuracy ${result.fits.map((f) => f3(f.testAccuracy)).join(', ')}; top ${ranking.topPercent}% = ${ranking.k} head${ranking.k === 1 ? '' : 's'} per function\n`;
  const rows = ranking.functions.map((fr) => [fr.function, String(result.counts[result.classes.indexOf(fr.function)]), f3(fr.ranking[0].importance), fr.top.slice(0, 8).map((h) => `L${h.layer}H${h.head}`).join(' ') + (fr.top.length > 8 ? ' ...' : '')]);
  const head = ['function', 'examples', 'best |importance|', 'top heads'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]))).join('  ') + '\n';
  out += line(head);
  for (const r of rows) out += line(r);
  for (const fr of ranking.functions) out += `${fr.function}: top ${fr.top.length} ${fr.separation.note}\n`;
  out += `wrote probes.json, probes.csv, probes.md and ${ranking.functions.length} heatmap${ranking.functions.length === 1 ? '' : 's'} to ${outDir}\n`;
  return out;
}
