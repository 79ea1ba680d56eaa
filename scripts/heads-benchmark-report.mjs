// `node scripts/heads-benchmark-report.mjs [--model weights/organism] [--scenes 60] [--seed 3003] [--wordings all]
//   [--pairs 8] [--mlp-epochs 100] [--mlp-batch-size 16] [--ablation-questions 30] [--ablation-seeds 5]
//   [--work .tmp/heads-benchmark] [--out docs/heads-benchmark.md] [--organism-report docs/organism-report.md] [--report-only]`
//
// Regenerates docs/heads-benchmark.md: the planted-head benchmark (`vlmscope heads-benchmark`) on the model organism,
// through the CLI exactly as a user runs it, once per wording setting in --wordings (comma-separated: all, fixed):
//   1. a held-out synthetic set (scripts/make-synthetic.ts, a seed the organism never saw; --wordings all gives the
//      paraphrases with held-out wordings, fixed the one wording per type the organism was trained on);
//   2. `vlmscope heads-benchmark`: every head-finding method, the known heads from the model folder's
//      known_heads.json, ranks, precision@k, top-k vs random-k ablation;
// then writes the report with the exact commands and their times, and makes sure docs/organism-report.md links it
// (--organism-report '' leaves it alone).
// Rerun it after the organism's weights change (the report names the weights' SHA-256). --report-only rewrites the
// Markdown from an earlier run's outputs in --work. Needs `npm run build` first (bin/vlmscope.js runs dist/cli.js).

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { values: a } = parseArgs({
  options: {
    model: { type: 'string', default: 'weights/organism' },
    scenes: { type: 'string', default: '60' },
    seed: { type: 'string', default: '3003' },
    wordings: { type: 'string', default: 'all' },
    pairs: { type: 'string', default: '8' },
    'mlp-epochs': { type: 'string', default: '100' },
    'mlp-batch-size': { type: 'string', default: '16' },
    'ablation-questions': { type: 'string', default: '30' },
    'ablation-seeds': { type: 'string', default: '5' },
    work: { type: 'string', default: '.tmp/heads-benchmark' },
    out: { type: 'string', default: 'docs/heads-benchmark.md' },
    'organism-report': { type: 'string', default: 'docs/organism-report.md' },
    'report-only': { type: 'boolean', default: false },
  },
});
const work = resolve(ROOT, a.work);
const outFile = resolve(ROOT, a.out);
const settings = a.wordings.split(',').map((s) => s.trim()).filter(Boolean);
for (const w of settings) if (w !== 'all' && w !== 'fixed') throw new Error(`--wordings: expected all and/or fixed, got ${w}`);

const show = (cmd, args) =>
  [cmd === process.execPath ? 'node' : cmd.endsWith('/.bin/tsx') ? 'npx tsx' : cmd, ...args.map((x) => (x.startsWith(ROOT) ? relative(ROOT, x) || '.' : x))].join(' ');
function run(cmd, args, commands) {
  const shown = show(cmd, args);
  commands.push(shown);
  console.error(`$ ${shown}`);
  const t0 = Date.now();
  execFileSync(cmd, args, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  return (Date.now() - t0) / 1000;
}

const sha = (path) => createHash('sha256').update(readFileSync(path)).digest('hex');
const modelDir = resolve(ROOT, a.model);
const weights = join(modelDir, 'model.safetensors');

/** Runs (or, with --report-only, reads back) one wording setting; returns its commands, times and results. */
function runSetting(wording) {
  const dir = join(work, wording);
  const data = join(dir, 'data');
  const out = join(dir, 'out');
  if (a['report-only']) return JSON.parse(readFileSync(join(dir, 'run.json'), 'utf8'));
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const commands = [];
  const seconds = {};
  seconds.data = run(join(ROOT, 'node_modules/.bin/tsx'), [join(ROOT, 'scripts/make-synthetic.ts'), '--out', data, '--seed', a.seed, '--scenes', a.scenes, ...(wording === 'all' ? ['--wordings', 'all'] : [])], commands);
  seconds.benchmark = run(
    process.execPath,
    [
      join(ROOT, 'bin/vlmscope.js'), 'heads-benchmark', '--model', modelDir, '--data', data, '--pairs', a.pairs, '--mlp-epochs', a['mlp-epochs'], '--mlp-batch-size', a['mlp-batch-size'],
      '--ablation-questions', a['ablation-questions'], '--ablation-seeds', a['ablation-seeds'], '--out', out,
    ],
    commands,
  );
  const info = { wording, commands, seconds, weights: sha(weights), date: new Date().toISOString().slice(0, 10) };
  writeFileSync(join(dir, 'run.json'), JSON.stringify(info));
  return info;
}

const runs = settings.map((w) => ({ ...runSetting(w), dir: join(work, w) }));

// The results as the library holds them (JSON wrote NaN as null, infinities as strings), with the t-tests and verdicts
// recomputed by the library of this checkout, so --report-only after a change to the verdict rule gives the current
// wording.
const { benchmarkMarkdown, verdict, welchTTest } = await import(join(ROOT, 'dist/index.js'));
const NUMERIC = new Set(['t', 'p', 'df', 'top', 'baseline', 'randomMean', 'randomStd', 'precision', 'recall']);
function readResult(dir) {
  const j = JSON.parse(readFileSync(join(dir, 'out/heads-benchmark.json'), 'utf8'), function (key, v) {
    if (v === 'Infinity' || v === '-Infinity') return Number(v);
    return v === null && (Array.isArray(this) || NUMERIC.has(key)) ? NaN : v;
  });
  const n = j.known.heads.length;
  for (const m of j.methods) {
    // The t-test again from the accuracies (JSON cannot hold the infinite t of a random-k set with no spread).
    if (m.ablation) Object.assign(m.ablation, (({ t, p, df }) => ({ t, p, df }))(welchTTest([m.ablation.top], m.ablation.random.map((x) => x.accuracy))));
  }
  for (const m of j.methods) if (m.ok) m.verdict = verdict(m.label, m.known, m.precision.find((p) => p.k === n) ?? null, m.ablation);
  return j;
}
for (const r of runs) r.result = readResult(r.dir);

// ---------------------------------------------------------------------------------------------------------------
// The report

const pct = (x) => (x === null || x === undefined || Number.isNaN(x) ? 'n/a' : `${(100 * x).toFixed(1)}%`);
const name = (h) => `L${h.layer}H${h.head}`;
const demote = (md) =>
  md
    .split('\n')
    .filter((l, i) => !(i === 0 && l.startsWith('# ')))
    .map((l) => (/^#{1,5} /.test(l) ? `#${l}` : l))
    .join('\n');
const title = { all: 'Paraphrased questions with held-out wordings (`--wordings all`)', fixed: 'The wording the organism was trained on (one per type, the default)' };

let doc = '# Planted-head benchmark on the model organism\n\n';
doc += `Regenerate with \`node scripts/heads-benchmark-report.mjs --scenes ${a.scenes} --seed ${a.seed} --wordings ${settings.join(',')} --pairs ${a.pairs} --mlp-epochs ${a['mlp-epochs']} --mlp-batch-size ${a['mlp-batch-size']} --ablation-questions ${a['ablation-questions']} --ablation-seeds ${a['ablation-seeds']}\``;
doc += ` on \`${relative(ROOT, modelDir)}\` (model.safetensors SHA-256 \`${runs[0].weights.slice(0, 16)}...\`, ${runs[0].date}); every number below comes from the runs listed under Reproduce (make-synthetic, then \`vlmscope heads-benchmark\`).`;
if (runs.some((r) => r.weights !== sha(weights))) doc += ' **The weights have changed since this run: rerun the script.**';
doc += '\n\n';
const first = runs[0].result;
const knownNames = first.known.heads.map(name);
const nKnown = knownNames.length;
doc += `The organism declares its planted heads in \`known_heads.json\` (written by its trainer): ${first.known.heads.map((h) => `${name(h)} (${h.role.replace(/_/g, ' ')})`).join(', ')}, trained at the last prompt token of spatial-type questions. `;
doc += `Every head-finding method of the tool is run on it and scored as a retrieval problem: where it ranks ${knownNames.join(' and ')} among the ${first.layers * first.heads} text heads, precision@k, and whether ablating its own top-${nKnown} hurts the spatial answers more than ${nKnown} random heads (${a['ablation-seeds']} seeds, Welch t; it counts only where the organism answers most of those questions at baseline). The benchmark reads the known heads from the model folder; nothing about them is written into it.\n\n`;

doc += '## Which methods find the planted heads\n\n';
for (const r of runs) {
  const j = r.result;
  const finds = j.methods.filter((m) => m.verdict.finding === 'finds').map((m) => m.label);
  const partly = j.methods.filter((m) => m.verdict.finding === 'partly').map((m) => m.label);
  const misses = j.methods.filter((m) => m.verdict.finding === 'misses' || m.verdict.finding === 'no result').map((m) => m.label);
  doc += `${title[r.wording]}: `;
  doc += [finds.length ? `finds them: ${finds.join(', ')}` : 'no method finds them', partly.length ? `partly: ${partly.join(', ')}` : '', misses.length ? `does not: ${misses.join(', ')}` : ''].filter(Boolean).join('; ');
  doc += '.\n\n';
  for (const m of j.methods) doc += `- ${m.verdict.text}\n`;
  doc += '\n';
}

for (const r of runs) {
  const j = r.result;
  const md = benchmarkMarkdown(j);
  doc += `## ${title[r.wording]}\n\n`;
  // Reading: what each method's numbers say, from the result alone.
  const reading = [];
  const by = (name) => j.methods.find((m) => m.method === name && m.ok);
  const known = new Set(j.known.heads.map(name));
  if (j.ablation) reading.push(`The organism answers ${pct(j.ablation.baseline)} of the ${j.ablation.questions} spatial questions of the ablation at baseline${j.ablation.baseline < 0.5 ? ' (chance is 25%): it does not answer this wording of the questions, so the ablation cannot show a method\'s heads hurting the answers' : ''}.`);
  const probe = by('probe');
  if (probe) {
    const best = probe.ranking[0].values[0];
    const high = probe.ranking.filter((h) => h.values[0] >= 0.9).length;
    const layer0 = probe.ranking.slice(0, 8).filter((h) => h.layer === 0).length;
    reading.push(`Linear probe: ${high} of ${probe.ranking.length} heads reach a held-out accuracy of 0.9 or more on their best target function (the best ${best.toFixed(3)}), ${layer0} of its top 8 in layer 0; the planted heads rank ${probe.known.map((k) => `${name(k)} ${k.rank} (${k.values[0].toFixed(3)})`).join(', ')}.`);
  }
  const sel = by('selectivity');
  if (sel) {
    const w = sel.settings.wording_only_accuracy ?? {};
    const best = sel.ranking[0].values[0];
    reading.push(`Probe with controls (split by ${sel.settings.split_by}): the wording-only probe scores ${Object.entries(w).map(([f, v]) => `${v.toFixed(2)} on ${f}`).join(', ')}; the best head's selectivity is ${best.toFixed(3)}${best <= 0.05 ? ': with one wording per function the template tells the functions apart and no head adds to it' : ''}.`);
  }
  const mlp = by('mlp');
  if (mlp) {
    const acc = mlp.settings.held_out_accuracy ?? [];
    reading.push(`MLP probe: held-out accuracy ${acc.map((x) => x.toFixed(3)).join(', ')} over its seeds; its importance is highest for ${mlp.ranking.slice(0, 2).map(name).join(' and ')}; the planted heads rank ${mlp.known.map((k) => `${name(k)} ${k.rank}`).join(', ')}.`);
  }
  const patch = by('patching');
  if (patch) {
    const others = patch.ranking.filter((h) => !known.has(name(h))).slice(0, 1);
    reading.push(`Patching (${patch.settings.pairs} pairs, LD clean ${patch.settings.ld_clean.toFixed(2)}, counterfactual ${patch.settings.ld_counterfactual.toFixed(2)}): ${patch.known.map((k) => `${name(k)} recovers ${k.values[0].toFixed(3)} (ranked ${k.rank})`).join(', ')}; the strongest other head is ${others.map((h) => `${name(h)} (${h.values[0].toFixed(3)}, ranked ${h.position})`).join('')}.`);
  }
  const att = by('attention');
  if (att) {
    const next = att.ranking.find((h) => !known.has(name(h)));
    reading.push(`Attention: ${att.known.map((k) => `${name(k)} puts ${(100 * k.values[0]).toFixed(1)}%`).join(', ')} of the last row's attention on the two named objects, the next head ${next ? `${name(next)} ${(100 * next.values[0]).toFixed(1)}%` : 'none'}.`);
  }
  doc += reading.map((x) => `- ${x}`).join('\n') + '\n\n';
  doc += demote(md).trim() + '\n\n';
}

doc += '## Reproduce\n\n```sh\nnpm run build\n';
for (const r of runs) for (const c of r.commands) doc += `${c}\n`;
doc += '```\n\n';
doc += `Times on this run's machine (SwiftShader on 2 shared CPU cores): ${runs.map((r) => `${r.wording}: data ${r.seconds.data.toFixed(0)} s, benchmark ${r.seconds.benchmark.toFixed(0)} s`).join('; ')}.`;
const perMethod = runs.map((r) => {
  const j = r.result;
  return `${r.wording}: ${j.methods.map((m) => `${m.method} ${m.seconds.toFixed(0)} s`).join(', ')} (collect and ablation are the rest)`;
});
doc += ` Per method: ${perMethod.join('; ')}.\n`;
mkdirSync(dirname(outFile), { recursive: true });
writeFileSync(outFile, doc);
console.error(`wrote ${relative(ROOT, outFile)}`);

// docs/organism-report.md links the benchmark (a section kept by this script, since organism-report.mjs rewrites the file).
const organism = a['organism-report'] ? resolve(ROOT, a['organism-report']) : '';
if (organism && existsSync(organism)) {
  const link = relative(dirname(organism), outFile);
  const n = nKnown;
  const perRun = runs.map((r) => {
    const lines = r.result.methods.map((m) => {
      const found = m.verdict.finding === 'finds' ? 'finds them' : m.verdict.finding === 'partly' ? 'partly' : m.verdict.finding === 'misses' ? 'does not find them' : 'no result';
      const p = m.precision.find((x) => x.k === n);
      return `${m.label} ${found} (${m.known.map((k) => `${name(k)} ranked ${k.rank}`).join(', ') || 'no ranking'}${p ? `, precision@${n} ${p.precision.toFixed(2)}` : ''})`;
    });
    return `- ${title[r.wording]}: ${lines.join('; ')}.\n`;
  });
  const section =
    '## Planted-head benchmark\n\n' +
    `Which head-finding methods find the organism's planted heads (${knownNames.join(', ')} in known_heads.json), with their ranks, precision@k and top-k vs random-k ablation: [${link}](${link}) (\`node scripts/heads-benchmark-report.mjs\`).\n\n${perRun.join('')}\n`;
  let text = readFileSync(organism, 'utf8');
  const re = /## Planted-head benchmark\n\n[\s\S]*?(?=\n## |$)/;
  if (re.test(text)) text = text.replace(re, section.trimEnd() + '\n');
  else if (text.includes('\n## Reproduce\n')) text = text.replace('\n## Reproduce\n', `\n${section}## Reproduce\n`);
  else text = `${text.trimEnd()}\n\n${section}`;
  writeFileSync(organism, text);
  console.error(`linked from ${relative(ROOT, organism)}`);
}
