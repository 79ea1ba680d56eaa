// `node scripts/organism-spatial-report.mjs [--model weights/organism] [--scenes 40] [--seed 4242] [--alphas 0.5,0.8,1.2,1.5,2.0]
//   [--thresholds 0.5,0.7,0.9] [--axis-alphas 0,1,2,4,8,15] [--random-seeds 3] [--axis-no-golden] [--knockout-seed 0] [--examples 3]
//   [--work .tmp/spatial-report] [--out docs] [--report-only]`
//
// Reproduces docs/organism-spatial-report.md: the seed papers' spatial-reasoning methods on the model organism, on a
// What'sUp-style set it was not trained on (scripts/make-synthetic.ts --variant ood: objects 0.4x / 0.6x / 1.5x / 2x
// the training sizes, unseen plain colours, gradients and checkerboards as backgrounds; "Where is the A in relation
// to the B?" with left / right / above / below answers), through the vlmscope CLI exactly as a user runs it:
//   1. `vlmscope eval`: the baseline, broken down by object scale and background kind (scenes.jsonl), answered by
//      generation and by option likelihood (`--scoring likelihood`);
//   2. `vlmscope sweep --split tune|test`: ScalingVis over --alphas on the authors' 20% / 80% split (seed 1);
//   3. `vlmscope eval --adaptvis t,low,high`: alpha_low / alpha_high = the best alphas below / above 1 on the 20%,
//      the threshold the best of --thresholds on the 20%, reported on the 80%;
//   4. `vlmscope axis-probe --sweep`: Dual Mechanisms vision-token enhancement along the axis probes against random
//      directions over --random-seeds seeds (strict both-listings accuracy); --axis-no-golden trains the probes on
//      every item instead of only those the model answers right in both listings (the authors' default);
//   5. `vlmscope knockout`: the last token's edges to the two named objects' image tokens cut in each text layer,
//      against as many random image tokens;
//   6. `vlmscope attention-map`: where the last token looks, at the layer whose knockout hurts most (mean of heads,
//      and --grid for every head), on --examples questions of different object scales / backgrounds;
// then writes the report (Markdown) and copies the pictures next to it (docs/organism-spatial-report/).
// Needs `npm run build` first (bin/vlmscope.js runs dist/cli.js). Deterministic for given arguments.
// Commands that are missing from the built CLI (`vlmscope --help`) are left out of the report, said so there.

import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { values: a } = parseArgs({
  options: {
    model: { type: 'string', default: 'weights/organism' },
    scenes: { type: 'string', default: '40' },
    seed: { type: 'string', default: '4242' },
    alphas: { type: 'string', default: '0.5,0.8,1.2,1.5,2.0' },
    thresholds: { type: 'string', default: '0.5,0.7,0.9' },
    'axis-alphas': { type: 'string', default: '0,1,2,4,8,15' },
    'random-seeds': { type: 'string', default: '3' },
    'axis-no-golden': { type: 'boolean', default: false },
    'knockout-seed': { type: 'string', default: '0' },
    examples: { type: 'string', default: '3' },
    work: { type: 'string', default: '.tmp/spatial-report' },
    out: { type: 'string', default: 'docs' },
    'report-only': { type: 'boolean', default: false },
  },
});
const work = resolve(ROOT, a.work);
const outDir = resolve(ROOT, a.out);
const assetsName = 'organism-spatial-report';
const assets = join(outDir, assetsName);
const data = join(work, 'data');
const questions = join(data, 'questions.jsonl');
const P = {
  eval: join(work, 'eval.jsonl'),
  evalJson: join(work, 'eval.json'),
  evalLikelihood: join(work, 'eval-likelihood.jsonl'),
  evalLikelihoodJson: join(work, 'eval-likelihood.json'),
  sweepTune: join(work, 'sweep-tune'),
  sweepTest: join(work, 'sweep-test'),
  tune: join(data, 'tune.jsonl'),
  test: join(data, 'test.jsonl'),
  adaptTune: (t) => join(work, `adaptvis-tune-${t}.json`),
  adaptTest: join(work, 'adaptvis-test.jsonl'),
  adaptTestJson: join(work, 'adaptvis-test.json'),
  axis: join(work, 'axis'),
  knockout: join(work, 'knockout'),
  maps: join(work, 'maps'),
};

const commands = [];
const show = (cmd, args) =>
  [cmd === process.execPath ? 'node' : cmd.endsWith('/.bin/tsx') ? 'npx tsx' : cmd, ...args.map((x) => (x.startsWith(ROOT) ? relative(ROOT, x) || '.' : /[\s"'?]/.test(x) ? JSON.stringify(x) : x))].join(' ');
/** Runs a command from the repository root; returns [seconds, stdout]. stdout is also saved to `saveTo` when given. */
function run(cmd, args, saveTo) {
  const shown = show(cmd, args) + (saveTo ? ` > ${saveTo.startsWith(ROOT) ? relative(ROOT, saveTo) : saveTo}` : '');
  commands.push(shown);
  console.error(`$ ${shown}`);
  const t0 = Date.now();
  const stdout = execFileSync(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', maxBuffer: 1 << 28 });
  process.stderr.write(stdout.length > 4000 ? `${stdout.slice(0, 4000)}...\n` : stdout);
  if (saveTo) writeFileSync(saveTo, stdout);
  return [(Date.now() - t0) / 1000, stdout];
}
const bin = join(ROOT, 'bin/vlmscope.js');
const vlmscope = (args, saveTo) => run(process.execPath, [bin, ...args], saveTo);
const readJson = (p) => JSON.parse(readFileSync(p, 'utf8'));
const readJsonl = (p) => readFileSync(p, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));

const help = execFileSync(process.execPath, [bin, '--help'], { cwd: ROOT, encoding: 'utf8' });
const evalHelp = execFileSync(process.execPath, [bin, 'eval', '--help'], { cwd: ROOT, encoding: 'utf8' });
const has = {
  sweep: /^\s+sweep \[options\]/m.test(help),
  knockout: /^\s+knockout \[options\]/m.test(help),
  attentionMap: /^\s+attention-map \[options\]/m.test(help),
  axisProbe: /^\s+axis-probe \[options\]/m.test(help),
  adaptvis: evalHelp.includes('--adaptvis'),
  likelihood: evalHelp.includes('--scoring'),
};
const list = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
const thresholds = list(a.thresholds);

// ---------------------------------------------------------------------------------------------------------------
// The runs

const state = a['report-only'] ? readJson(join(work, 'state.json')) : { seconds: {}, has, chosen: {}, maps: [] };
if (a['report-only']) {
  commands.push(...state.commands);
} else {
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const S = state.seconds;
  [S.data] = run(join(ROOT, 'node_modules/.bin/tsx'), [join(ROOT, 'scripts/make-synthetic.ts'), '--out', data, '--seed', a.seed, '--scenes', a.scenes, '--variant', 'ood', '--types', 'spatial']);
  [S.eval] = vlmscope(['eval', '--model', a.model, '--data', questions, '--no-sub-questions', '--out', P.eval, '--json'], P.evalJson);
  if (has.likelihood) {
    [S.evalLikelihood] = vlmscope(['eval', '--model', a.model, '--data', questions, '--no-sub-questions', '--scoring', 'likelihood', '--out', P.evalLikelihood, '--json'], P.evalLikelihoodJson);
  }

  if (has.sweep) {
    const sweep = (part, out) => vlmscope(['sweep', '--model', a.model, '--data', questions, '--no-sub-questions', '--alpha', a.alphas, '--split', part, '--out', out])[0];
    S.sweepTune = sweep('tune', P.sweepTune);
    S.sweepTest = sweep('test', P.sweepTest);
    // The two parts as question files (for AdaptVis), with the ids the sweep's split put in each.
    const lines = readFileSync(questions, 'utf8').split('\n').filter((l) => l.trim());
    const byId = new Map(lines.map((l) => [JSON.parse(l).id, l]));
    for (const [dir, file] of [
      [P.sweepTune, P.tune],
      [P.sweepTest, P.test],
    ]) {
      writeFileSync(file, readJson(join(dir, 'sweep.json')).questions.map((q) => byId.get(q.id)).join('\n') + '\n');
    }
  }

  if (has.adaptvis && has.sweep) {
    // alpha_low / alpha_high: the best alphas below / above 1 on the 20% (ties: the one nearer 1).
    const tune = readJson(join(P.sweepTune, 'sweep.json'));
    const bestOf = (pred) =>
      tune.runs
        .filter((r) => pred(r.alpha))
        .sort((x, y) => y.accuracy - x.accuracy || Math.abs(x.alpha - 1) - Math.abs(y.alpha - 1))[0]?.alpha;
    const low = bestOf((x) => x < 1);
    const high = bestOf((x) => x > 1);
    if (low !== undefined && high !== undefined) {
      S.adaptTune = 0;
      const grid = [];
      for (const t of thresholds) {
        const [s] = vlmscope(['eval', '--model', a.model, '--data', P.tune, '--no-sub-questions', '--adaptvis', `${t},${low},${high}`, '--json'], P.adaptTune(t));
        S.adaptTune += s;
        grid.push({ threshold: Number(t), accuracy: readJson(P.adaptTune(t)).accuracy });
      }
      // The best threshold on the 20% (ties: the first of --thresholds).
      const best = grid.reduce((b, g) => (g.accuracy > b.accuracy ? g : b), grid[0]);
      state.chosen.adaptvis = { low, high, threshold: best.threshold, grid };
      [S.adaptTest] = vlmscope(['eval', '--model', a.model, '--data', P.test, '--no-sub-questions', '--adaptvis', `${best.threshold},${low},${high}`, '--out', P.adaptTest, '--json'], P.adaptTestJson);
    }
  }

  if (has.axisProbe) {
    [S.axis] = vlmscope(['axis-probe', '--model', a.model, '--data', data, '--out', P.axis, '--sweep', '--alphas', a['axis-alphas'], '--random-seeds', a['random-seeds'], ...(a['axis-no-golden'] ? ['--no-golden'] : [])]);
  }

  if (has.knockout) {
    [S.knockout] = vlmscope(['knockout', '--model', a.model, '--data', questions, '--out', P.knockout, '--seed', a['knockout-seed']]);
  }

  if (has.attentionMap) {
    // The layer whose knockout hurts most (accuracy, then P(answer)); layer 1 without a knockout run.
    const ko = has.knockout ? readJson(join(P.knockout, 'knockout.json')) : null;
    const layer = ko
      ? ko.runs.filter((r) => r.layer !== 'all').sort((x, y) => x.objects.accuracy - y.objects.accuracy || x.objects.mean_p - y.objects.mean_p)[0].layer
      : 1;
    state.chosen.mapLayer = layer;
    mkdirSync(P.maps, { recursive: true });
    S.maps = 0;
    for (const q of pickExamples(Number(a.examples))) {
      const image = join(data, q.image);
      for (const grid of [false, true]) {
        const file = join(P.maps, `${q.id}-layer${layer}${grid ? '-heads' : ''}.png`);
        const [s, stdout] = vlmscope(['attention-map', '--model', a.model, '--image', image, '--prompt', q.question, '--layer', String(layer), ...(grid ? ['--grid'] : []), '--out', file]);
        S.maps += s;
        state.maps.push({ id: q.id, grid, file: relative(work, file), line: stdout.trim() });
      }
    }
  }
  state.commands = commands;
  writeFileSync(join(work, 'state.json'), JSON.stringify(state, null, 1));
}

/** Up to n spatial questions, each of another (object scale, background) pair when there are enough. */
function pickExamples(n) {
  const scenes = new Map(readJsonl(join(data, 'scenes.jsonl')).map((s) => [s.id, s]));
  const qs = readJsonl(questions);
  const seen = new Set();
  const out = [];
  for (const q of qs) {
    const v = scenes.get(q.id.split('-')[0])?.variant;
    const key = v ? `${v.object_scale}/${v.background}` : '';
    if (seen.has(key) || seen.has(`scale ${v?.object_scale}`) || seen.has(`bg ${v?.background}`)) continue;
    seen.add(key);
    seen.add(`scale ${v?.object_scale}`);
    seen.add(`bg ${v?.background}`);
    out.push(q);
    if (out.length === n) return out;
  }
  for (const q of qs) if (out.length < n && !out.includes(q)) out.push(q);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// The report

mkdirSync(assets, { recursive: true });
const pct = (x) => (x === null || x === undefined || Number.isNaN(x) ? 'n/a' : `${(100 * x).toFixed(1)}%`);
const signed = (x) => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)}`;
const cmdOf = (re) => commands.find((c) => re.test(c));
const cited = (re) => {
  const c = cmdOf(re);
  return c ? `\`${c}\`` : '(not run)';
};
const S = state.seconds;
const scenes = new Map(readJsonl(join(data, 'scenes.jsonl')).map((s) => [s.id, s]));
const evalRows = readJsonl(P.eval);
const evalSummary = readJson(P.evalJson);

/** Accuracy of eval lines grouped by a key of their scene. */
function breakdown(rows, key) {
  const g = new Map();
  for (const r of rows) {
    const k = key(scenes.get(r.id.split('-')[0]));
    const s = g.get(k) ?? { n: 0, correct: 0 };
    s.n++;
    s.correct += r.correct ? 1 : 0;
    g.set(k, s);
  }
  return [...g].sort(([x], [y]) => String(x).localeCompare(String(y), undefined, { numeric: true }));
}
/** Baseline rows: all, per object scale, per background; generation and (when run) likelihood counts. */
function baselineRows() {
  const ll = state.has.likelihood && existsSync(P.evalLikelihood) ? readJsonl(P.evalLikelihood) : null;
  const llSummary = ll ? readJson(P.evalLikelihoodJson) : null;
  const cells = (n, c, lc) => `${n} | ${c} | ${pct(c / n)} | ${lc === undefined ? '-' : lc} | ${lc === undefined ? '-' : pct(lc / n)}`;
  const out = [`| all | ${cells(evalSummary.total, evalSummary.correct, llSummary?.correct)} |`];
  for (const key of [(s) => `object scale ${s?.variant?.object_scale} (${sizeOf(s?.variant?.object_scale)})`, (s) => `background: ${s?.variant?.background}`]) {
    const lb = ll ? new Map(breakdown(ll, key)) : null;
    for (const [k, s] of breakdown(evalRows, key)) out.push(`| ${k} | ${cells(s.n, s.correct, lb?.get(k)?.correct)} |`);
  }
  return out;
}
const trainD = [12, 18];
const sizeOf = (scale) => `${Math.max(2, Math.round(trainD[0] * scale))}-${Math.round(trainD[1] * scale)} px`;

let md = `# Spatial reasoning of the model organism out of distribution: ScalingVis, AdaptVis, vision-token enhancement, attention knockout

Generated by \`${['node scripts/organism-spatial-report.mjs', ...process.argv.slice(2).filter((x) => x !== '--report-only')].join(' ')}\` with
\`${a.model}\`. Every number below comes from the vlmscope CLI runs listed with it and, all together, at the end
(their outputs are in \`${relative(ROOT, work)}/\`).

## Data: a What'sUp-style set the organism was not trained on

${cited(/make-synthetic/)}

${a.scenes} scenes (seed ${a.seed}), one question each: "Where is the A in relation to the B? Answer with left, right, above or
below." about two of the scene's 2-4 objects, answers balanced over the four relations, the objects' boxes in
\`scenes.jsonl\`. The organism was trained on scenes with objects of ${trainD[0]}-${trainD[1]} px (at 64 px) on eight plain backgrounds
(seed 1001); here every scene draws an object scale of 0.4, 0.6, 1.5 or 2 (objects of ${[0.4, 0.6, 1.5, 2].map(sizeOf).join(', ')}) and a background
it never saw: one of eight new plain colours ("novel"), a two-colour linear gradient, or a two-colour checkerboard of
4 px cells (the image tokens are 8 x 8 patches of 8 px).

## Baseline

${cited(/ eval .*--no-sub-questions --out .*--json > /)}
${state.has.likelihood ? cited(/ eval .*--scoring likelihood/) : ''}

Answered by generation (greedy, the first word matched) and${state.has.likelihood ? '' : ' (not run: the built CLI has no `--scoring`)'} by option
likelihood (the most likely of left / right / above / below after the prompt):

| | questions | generation | accuracy | likelihood | accuracy |
|---|---:|---:|---:|---:|---:|
${baselineRows().join('\n')}
`;

// ScalingVis and AdaptVis
if (state.has.sweep && existsSync(join(P.sweepTest, 'sweep.json'))) {
  const tune = readJson(join(P.sweepTune, 'sweep.json'));
  const test = readJson(join(P.sweepTest, 'sweep.json'));
  copyFileSync(join(P.sweepTest, 'sweep.svg'), join(assets, 'sweep-test.svg'));
  const at = (j, alpha) => j.runs.find((r) => r.alpha === alpha);
  const svAlpha = tune.best.overall.alpha;
  md += `
## ScalingVis: image-attention temperature

${cited(/ sweep .*--split tune/)}
${cited(/ sweep .*--split test/)}

The pre-softmax scores of the image-token keys are multiplied by alpha on the last prompt row, in every layer and head
(the authors' setting); alpha 1 is the plain model. The authors' split (20% to choose on, 80% to report on, seed 1):

| alpha | 20% split (${tune.questions.length} q.) | 80% split (${test.questions.length} q.) | Δ on the 80% |
|---:|---:|---:|---:|
${test.alphas.map((x) => `| ${x}${x === 1 ? ' (baseline)' : ''} | ${pct(at(tune, x)?.accuracy)} | ${pct(at(test, x).accuracy)} | ${x === 1 ? '' : signed(at(test, x).accuracy - at(test, 1).accuracy)} |`).join('\n')}

![accuracy against alpha on the 80% split](${assetsName}/sweep-test.svg)
`;
  const av = state.chosen.adaptvis;
  let avRow = '| +AdaptVis | - | - |';
  if (av && existsSync(P.adaptTestJson)) {
    const t = readJson(P.adaptTestJson);
    const g = t.adaptvis;
    avRow = `| +AdaptVis | ${pct(t.accuracy)} | threshold ${av.threshold}, alpha_low ${av.low}, alpha_high ${av.high} |`;
    md += `
## AdaptVis: confidence-gated temperature

${thresholds.map((th) => cited(new RegExp(` eval .*tune\\.jsonl --no-sub-questions --adaptvis ${th.replace('.', '\\.')},`))).join('\n')}
${cited(/ eval .*test\.jsonl --no-sub-questions --adaptvis/)}

The first answer token's top-1 probability (rounded to 2 decimals) picks alpha_low below the threshold, else
alpha_high. alpha_low and alpha_high are the best alphas below and above 1 on the 20% split (the ScalingVis sweep
above); the threshold is the best of ${thresholds.join(', ')} on the 20%:

| threshold | accuracy on the 20% |
|---:|---:|
${av.grid.map((x) => `| ${x.threshold}${x.threshold === av.threshold ? ' (chosen)' : ''} | ${pct(x.accuracy)} |`).join('\n')}

On the 80%: ${g ? `alpha_low on ${g.low} answers, alpha_high on ${g.high}; estimated cost ${g.cost_ratio.toFixed(2)}x one plain generation.` : ''}
`;
  }
  md += `
### The paper's table, on this set (80% split; settings chosen on the 20%)

| | accuracy | setting |
|---|---:|---|
| organism | ${pct(at(test, 1).accuracy)} | |
| +ScalingVis | ${pct(at(test, svAlpha).accuracy)} | alpha ${svAlpha} (best on the 20%${svAlpha === 1 ? ': the baseline' : ''}) |
${avRow}
`;
} else {
  md += '\n## ScalingVis and AdaptVis\n\nNot run: the built CLI has no `sweep` command.\n';
}

// Vision-token enhancement
if (state.has.axisProbe && existsSync(join(P.axis, 'sweep.json'))) {
  const probes = readJson(join(P.axis, 'probes.json'));
  const sw = readJson(join(P.axis, 'sweep.json'));
  const txt = readFileSync(join(P.axis, 'sweep.txt'), 'utf8').trimEnd();
  const axisRows = ['horizontal', 'vertical']
    .filter((k) => probes[k])
    .map((k) => {
      const acc = probes[k].accuracy ?? {};
      const fmt = (v) => (typeof v === 'number' ? pct(v) : v && typeof v === 'object' && 'accuracy' in v ? pct(v.accuracy) : 'n/a');
      return `| ${k} | ${fmt(acc.train)} | ${fmt(acc.held_out)} |`;
    });
  md += `
## Vision-token enhancement along the axis probes (Dual Mechanisms)

${cited(/ axis-probe /)}

Per axis a two-class linear probe on the projector outputs pooled inside each object's box; every image-token
embedding entering text layer 0 is then enhanced along the probe's columns (vision_token_add) at each alpha, against
unit-norm Gaussian random directions over ${a['random-seeds']} seeds. Strict scoring: an item is right only when both option orders
("left or right" / "right or left") are.

| probe | train accuracy | held-out accuracy |
|---|---:|---:|
${axisRows.join('\n')}

${Array.isArray(sw.summary) ? `| | strict accuracy | fixed failures | alpha |\n|---|---:|---:|---:|\n${sw.summary.map((s) => `| ${s.name} | ${pct(s.accuracy)} | ${typeof s.fixed === 'number' ? +s.fixed.toFixed(2) : s.fixed ?? ''}${s.fix_rate !== undefined && s.fix_rate !== null ? ` (${pct(s.fix_rate)})` : ''} | ${s.alpha ?? ''} |`).join('\n')}\n` : ''}
The sweep as the command printed it:

\`\`\`
${txt}
\`\`\`
`;
} else {
  md += '\n## Vision-token enhancement\n\nNot run: the built CLI has no `axis-probe` command.\n';
}

// Knockout
if (state.has.knockout && existsSync(join(P.knockout, 'knockout.json'))) {
  const ko = readJson(join(P.knockout, 'knockout.json'));
  const b = ko.baseline;
  md += `
## Attention knockout: the last token -> the named objects, layer by layer

${cited(/ knockout /)}

In one text layer at a time (and then in all ${ko.text_layers} at once) the last prompt position, which predicts the answer, is kept
from attending to the image tokens whose cell centre lies in the two named objects' boxes (${ko.mean_keys.toFixed(1)} of the
${ko.grid[0] * ko.grid[1]} image tokens on average${ko.fallbacks ? `; ${ko.fallbacks} objects smaller than a cell took the cell of their centre` : ''}); the control knocks as many random other image tokens of the same image
(${ko.mean_random_keys.toFixed(1)} on average, seed ${ko.seed}). P(answer): the probability of the baseline's first answer token at the last
prompt row; rel. change: its mean relative change against the baseline.

| knocked layer | named objects: accuracy | Δ | P(answer) | rel. change | random tokens: accuracy | Δ | P(answer) | rel. change |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
| none (baseline) | ${pct(b.accuracy)} | | ${b.mean_p.toFixed(3)} | | | | | |
${ko.runs
  .map(
    (r) =>
      `| ${r.layer === 'all' ? 'all layers' : `layer ${r.layer}`} | ${pct(r.objects.accuracy)} | ${signed(r.objects.accuracy - b.accuracy)} | ${r.objects.mean_p.toFixed(3)} | ${signed(r.objects.relative_change)}% | ${pct(r.random.accuracy)} | ${signed(r.random.accuracy - b.accuracy)} | ${r.random.mean_p.toFixed(3)} | ${signed(r.random.relative_change)}% |`,
  )
  .join('\n')}

${knockoutByScale(ko)}
Where the last token looks in the baseline (attention at the last prompt row, mean over heads and questions): on the
named objects' tokens, on the other image tokens, and the ratio of the two per token (1 = no preference for the
objects):

| layer | on the named objects | on other image tokens | per-token ratio |
|---:|---:|---:|---:|
${ko.attention.map((x) => `| ${x.layer} | ${x.objects.toFixed(3)} | ${x.other.toFixed(3)} | ${x.density === null ? 'n/a' : x.density.toFixed(2)} |`).join('\n')}
`;
} else {
  md += '\n## Attention knockout\n\nNot run: the built CLI has no `knockout` command.\n';
}

/** The knockout of the layer that hurts most, per object scale of the scenes (from knockout.json's examples). */
function knockoutByScale(ko) {
  const worst = ko.runs.filter((r) => r.layer !== 'all').sort((x, y) => x.objects.accuracy - y.objects.accuracy || x.objects.mean_p - y.objects.mean_p)[0];
  if (!worst) return '';
  const i = ko.runs.indexOf(worst);
  const groups = new Map();
  for (const e of ko.examples) {
    const k = scenes.get(e.scene)?.variant?.object_scale;
    const g = groups.get(k) ?? { n: 0, base: 0, obj: 0, rnd: 0, keys: 0 };
    g.n++;
    g.base += e.baseline.correct ? 1 : 0;
    g.obj += e.runs[i].objects.correct ? 1 : 0;
    g.rnd += e.runs[i].random.correct ? 1 : 0;
    g.keys += e.keys.length;
    groups.set(k, g);
  }
  const rows = [...groups].sort(([x], [y]) => x - y).map(([k, g]) => `| ${k} (${sizeOf(k)}) | ${g.n} | ${(g.keys / g.n).toFixed(1)} | ${pct(g.base / g.n)} | ${pct(g.obj / g.n)} | ${pct(g.rnd / g.n)} |`);
  return `
Layer ${worst.layer}'s knockout per object scale (the same runs, grouped by the scenes' \`variant\`):

| object scale | questions | tokens knocked (mean) | baseline | named objects knocked | random tokens knocked |
|---|---:|---:|---:|---:|---:|
${rows.join('\n')}
`;
}

// Heatmaps
if (state.maps.length > 0) {
  md += `
## Where the answer looks

\`vlmscope attention-map\` at layer ${state.chosen.mapLayer} (${state.has.knockout ? 'the layer whose knockout hurts most' : 'layer 1'}): the last prompt token's attention over the image
tokens, drawn over the image as the model saw it (viridis, opacity growing with the value, each panel normalised to its
maximum); the mean of all heads of the layer, then each head (--grid).

`;
  const qs = new Map(readJsonl(questions).map((q) => [q.id, q]));
  for (const m of state.maps) {
    const q = qs.get(m.id);
    const v = scenes.get(m.id.split('-')[0])?.variant;
    const name = m.file.split('/').pop();
    copyFileSync(join(work, m.file), join(assets, name));
    if (!m.grid) md += `**${m.id}** (object scale ${v?.object_scale}, ${v?.background} background): "${q.question}" (answer: ${q.answer}; the baseline said "${evalRows.find((r) => r.id === m.id)?.prediction}")\n\n`;
    md += `${cited(new RegExp(`attention-map .*${m.file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`))}\n${m.line ? `(${m.line})` : ''}\n\n![${m.id}${m.grid ? ' heads' : ''}](${assetsName}/${name})\n\n`;
  }
}

const timing = Object.entries(S)
  .map(([k, v]) => `${k} ${v.toFixed(0)} s`)
  .join(', ');
md += `
## Reproduce

\`\`\`sh
npm run build
${commands.join('\n')}
\`\`\`

Timings on this run's machine: ${timing}.
`;
writeFileSync(join(outDir, 'organism-spatial-report.md'), md);
console.error(`wrote ${relative(ROOT, join(outDir, 'organism-spatial-report.md'))} and ${relative(ROOT, assets)}/`);
