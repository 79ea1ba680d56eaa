// `node scripts/organism-report.mjs [--model weights/organism] [--scenes 24] [--seed 3003] [--k 3] [--seeds 5]
//   [--functions spatial_perception,low_level_perception] [--limit N] [--work .tmp/report] [--out docs]`
//
// Reproduces docs/organism-report.md: the CogVision / CogVSR functional-head workflow on the model organism,
// through the vlmscope CLI exactly as a user runs it:
//   1. a held-out CogVSR-style synthetic set (scripts/make-synthetic.ts, a seed the organism never saw);
//   2. `vlmscope collect`: z of every text head at the last prompt token, [z; layer mean], sub-questions chained;
//   3. `vlmscope probe`: logistic probes per function and head over 3 seeds, top 10% per function, heatmaps;
//   4. `vlmscope ablate`: top-k heads of each target function scaled by 0 versus k random heads outside the top
//      set over --seeds seeds, accuracy per function, Welch t-test;
// then writes the report (Markdown) and copies the heatmaps next to it (docs/organism-report/).
// Needs `npm run build` first (bin/vlmscope.js runs dist/cli.js). Deterministic for given arguments.

import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { values: a } = parseArgs({
  options: {
    model: { type: 'string', default: 'weights/organism' },
    scenes: { type: 'string', default: '24' },
    seed: { type: 'string', default: '3003' },
    k: { type: 'string', default: '3' },
    seeds: { type: 'string', default: '5' },
    functions: { type: 'string', default: 'spatial_perception,low_level_perception' },
    limit: { type: 'string' },
    work: { type: 'string', default: '.tmp/report' },
    out: { type: 'string', default: 'docs' },
    'report-only': { type: 'boolean', default: false },
  },
});
const work = resolve(ROOT, a.work);
const outDir = resolve(ROOT, a.out);
const assets = join(outDir, 'organism-report');
const data = join(work, 'data');
const acts = join(work, 'acts');
const probes = join(work, 'probes');
const ablation = join(work, 'ablation');

const commands = [];
function run(cmd, args) {
  const shown = [cmd === process.execPath ? 'node' : cmd.endsWith('/.bin/tsx') ? 'npx tsx' : cmd, ...args.map((x) => (x.startsWith(ROOT) ? relative(ROOT, x) || '.' : x))].join(' ');
  commands.push(shown);
  console.error(`$ ${shown}`);
  const t0 = Date.now();
  execFileSync(cmd, args, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  return (Date.now() - t0) / 1000;
}
const vlmscope = (args) => run(process.execPath, [join(ROOT, 'bin/vlmscope.js'), ...args]);

// --report-only: rewrite the Markdown from the outputs of an earlier run in --work (same arguments).
const seconds = JSON.parse(a['report-only'] ? readFileSync(join(work, 'seconds.json'), 'utf8') : '{}');
const targets = a.functions.split(',').filter(Boolean);
if (a['report-only']) {
  commands.push(...JSON.parse(readFileSync(join(work, 'commands.json'), 'utf8')));
} else {
  rmSync(work, { recursive: true, force: true });
  seconds.data = run(join(ROOT, 'node_modules/.bin/tsx'), [join(ROOT, 'scripts/make-synthetic.ts'), '--out', data, '--seed', a.seed, '--scenes', a.scenes]);
  const questions = join(data, 'questions.jsonl');
  seconds.collect = vlmscope(['collect', '--model', a.model, '--data', questions, '--out', acts, '--pool', 'last_prompt', '--concat-layer-mean']);
  seconds.probe = vlmscope(['probe', '--activations', acts, '--out', probes]);
  seconds.ablate = vlmscope([
    'ablate', '--model', a.model, '--data', questions, '--probes', join(probes, 'probes.json'), '--function', ...targets,
    '--k', a.k, '--mode', 'scale', '--epsilon', '0', '--seeds', a.seeds, '--out', ablation, ...(a.limit ? ['--limit', a.limit] : []),
  ]);
  writeFileSync(join(work, 'seconds.json'), JSON.stringify(seconds));
  writeFileSync(join(work, 'commands.json'), JSON.stringify(commands));
}
mkdirSync(assets, { recursive: true });

// ---------------------------------------------------------------------------------------------------------------
// The report

const index = JSON.parse(readFileSync(join(acts, 'index.json'), 'utf8'));
const pj = JSON.parse(readFileSync(join(probes, 'probes.json'), 'utf8'));
const ab = JSON.parse(readFileSync(join(ablation, 'ablation.json'), 'utf8'));
const pct = (x) => (x === null || x === undefined || Number.isNaN(x) ? 'n/a' : `${(100 * x).toFixed(1)}%`);
const fmtP = (p) => (p === null || p === undefined ? 'n/a' : p === 0 ? '0' : p < 1e-3 ? p.toExponential(1) : p.toFixed(3));
// JSON has no Infinity: ablation.json stores an infinite t (random heads all at one accuracy, top-k elsewhere) as null
// with p = 0; the sign is that of top-k minus the random mean.
const fmtT = (c) => (c.t !== null ? c.t.toFixed(2) : c.p === 0 ? (c.top < c.random_mean ? '-inf' : 'inf') : 'n/a');

const byFn = new Map();
for (const e of index.examples) {
  const s = byFn.get(e.function) ?? { n: 0, correct: 0 };
  s.n++;
  s.correct += e.correct ? 1 : 0;
  byFn.set(e.function, s);
}

let md = `# Functional heads of the model organism (CogVision / CogVSR method)

Generated by \`${['node scripts/organism-report.mjs', ...process.argv.slice(2).filter((x) => x !== '--report-only')].join(' ')}\` on ${pj.layers} text layers x ${pj.heads} heads of
\`${a.model}\`; every number below comes from the vlmscope CLI runs listed at the end.

## Data and answers

${a.scenes} held-out synthetic scenes (seed ${a.seed}; the organism was trained on seed 1001): ${index.examples.length} questions
answered greedily, sub-questions chained (earlier sub-questions and their gold answers as prior turns).

| function | questions | answered correctly |
|---|---:|---:|
${[...byFn].sort().map(([f, s]) => `| ${f} | ${s.n} | ${pct(s.correct / s.n)} |`).join('\n')}

## Functional heads per function

Logistic probe per (layer, head) on \`[z; layer mean]\` at the last prompt token, positives = correctly answered
sub-questions of the function, negatives = a balanced sample of other functions', split by main question, seeds
${pj.seeds.join(', ')}; test accuracy averaged over seeds. The top ${pj.top_percent}% (${pj.k} heads) per function are its
functional heads. "Heads >= 0.75" counts heads whose mean probe accuracy reaches 0.75 (chance is 0.5).

| function | positives | best head (acc) | top-${pj.k} heads | heads >= 0.75 | heatmap |
|---|---:|---|---|---:|---|
`;
for (const [fn, f] of Object.entries(pj.functions)) {
  const accs = f.accuracy_mean.flat();
  const strong = accs.filter((x) => x >= 0.75).length;
  const best = f.top[0];
  const heat = `organism-report/${f.heatmap}`;
  copyFileSync(join(probes, f.heatmap), join(assets, f.heatmap));
  md += `| ${fn} | ${f.positives} | L${best.layer}H${best.head} (${best.accuracy.toFixed(3)}) | ${f.top.map((t) => `L${t.layer}H${t.head}`).join(', ')} | ${strong} | ![${fn}](${heat}) |\n`;
}
for (const s of pj.skipped ?? []) md += `\nNot probed: ${s.function} (${s.reason}).\n`;

md += `
Heatmaps: layers (rows, layer 0 on top) x heads (columns), probe accuracy from 0.5 (dark) to 1 (yellow).

## Ablating functional heads versus random heads

Each target function's top-${a.k} heads scaled by 0 (ablated) versus ${a.k} random heads drawn outside its top set, for
${ab.seeds.length} seeds; accuracy on the questions of each function${a.limit ? ` (first ${a.limit} questions)` : ''}. t and p: the top-k accuracy
against the random-k accuracies (one-sample Welch t-test, df = seeds - 1).

| ablated heads of | measured on | baseline | top-k ablated | random-k ablated (mean +- std) | t | p |
|---|---|---:|---:|---:|---:|---:|
`;
for (const t of ab.targets) {
  const rows = [[t.function, t.comparisons.by_function[t.function]], ['all questions', t.comparisons.overall]];
  for (const [fn, c] of Object.entries(t.comparisons.by_function)) if (fn !== t.function) rows.push([fn, c]);
  for (const [measured, c] of rows) {
    if (!c) continue;
    md += `| ${t.function} (${t.top_heads.map((h) => `L${h.layer}H${h.head}`).join(', ')}) | ${measured} | ${pct(c.baseline)} | ${pct(c.top)} | ${pct(c.random_mean)} +- ${pct(c.random_std)} | ${fmtT(c)} | ${fmtP(c.p)} |\n`;
  }
}

md += `
## Reading

${readingOf(ab)}

## Reproduce

\`\`\`sh
${commands.join('\n')}
\`\`\`

Timings on this run's machine: data ${seconds.data.toFixed(0)} s, collect ${seconds.collect.toFixed(0)} s, probe ${seconds.probe.toFixed(0)} s, ablate ${seconds.ablate.toFixed(0)} s.
`;
writeFileSync(join(outDir, 'organism-report.md'), md);
console.error(`wrote ${relative(ROOT, join(outDir, 'organism-report.md'))} and ${relative(ROOT, assets)}/`);

/** Chance accuracy per function: the mean of 1 / (number of answer options) over its questions and sub-questions. */
function chanceByFunction() {
  const acc = new Map();
  const add = (fn, options) => {
    if (!Array.isArray(options) || options.length === 0) return;
    const s = acc.get(fn) ?? { n: 0, sum: 0 };
    s.n++;
    s.sum += 1 / options.length;
    acc.set(fn, s);
  };
  for (const line of readFileSync(join(data, 'questions.jsonl'), 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const q = JSON.parse(line);
    add(q.function, q.options);
    for (const sq of q.sub_questions ?? []) add(sq.function, sq.options);
  }
  return new Map([...acc].map(([k, v]) => [k, v.sum / v.n]));
}

/** A plain statement of whether ablating the functional heads hurt their function more than random heads did. */
function readingOf(r) {
  const lines = [];
  const chanceOf = chanceByFunction();
  for (const [fn, f] of Object.entries(pj.functions)) {
    const saturated = f.accuracy_mean.flat().filter((x) => x >= 0.99).length;
    if (saturated > pj.k) {
      lines.push(
        `- ${fn}: ${saturated} of ${pj.layers * pj.heads} heads probe at >= 99%, so its top-${pj.k} set is decided by the ranking's tie-break ` +
          '(layer, then head), not by the heads\' function. On templated synthetic questions every function has its own question ' +
          'wording, which any head that sees the question text separates; the probes measure the question template here.',
      );
    }
  }
  for (const t of r.targets) {
    const c = t.comparisons.by_function[t.function];
    if (!c) continue;
    const drop = c.baseline - c.top;
    const randomDrop = c.baseline - c.random_mean;
    const clear = c.top < c.random_mean && c.p !== null && c.p < 0.05;
    lines.push(
      `- ${t.function}: ablating its top-${t.k} heads takes its accuracy from ${pct(c.baseline)} to ${pct(c.top)} ` +
        `(${(100 * drop).toFixed(1)} points); random heads: ${pct(c.random_mean)} (${(100 * randomDrop).toFixed(1)} points). ` +
        (clear ? 'The functional heads matter clearly more than random ones (p < 0.05).' : 'Not a clear difference from random heads at p < 0.05.'),
    );
    const chance = chanceOf.get(t.function);
    if (chance !== undefined && c.baseline <= chance + 0.1) {
      lines.push(
        `  But the model answers ${t.function} questions at chance (${pct(c.baseline)}; chance ${pct(chance)} from their answer options), so ` +
          'there is no such skill for its heads to carry: a drop below chance shows heads the model needs to answer these questions ' +
          'in their own terms (read the question, pick one of the options it names), not heads that perceive space.',
      );
    }
  }
  return lines.join('\n');
}
