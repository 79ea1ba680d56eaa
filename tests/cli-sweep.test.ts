// The ScalingVis sweep (src/eval/sweep.ts, src/eval/sweep-plot.ts, `vlmscope sweep`) on the shipped organism with a
// small synthetic question set (one scene, one question of each type): the sweep at alpha 1 gives exactly plain
// `evaluate`'s predictions and at another alpha exactly `evaluate`'s with the corresponding image_temperature spec;
// the library sweep's ordering, progress and non-default layers / heads / queries; the table, CSV, markdown and the
// SVG (well-formed, a polyline with one point per alpha for every series, axes, legend); bad input -> one line,
// exit code 2, nothing written. Best-alpha ties and escaping on a hand-made result.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { nodeFolder } from '../src/io/checkpoint.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { loadModel } from '../src/models/load.js';
import type { VlmModel } from '../src/models/vlm.js';
import { eosTokenIds } from '../src/generate/eos.js';
import { parseInterventions } from '../src/spec/spec.js';
import { readQuestions, type EvalItem } from '../src/eval/dataset.js';
import { evaluate, summarize, type EvalExample, type EvalReport } from '../src/eval/evaluate.js';
import { bestIndex, formatSweepTable, sweepAlphas, sweepCsv, sweepImageTemperature, sweepMarkdown, sweepRows, type SweepProgress, type SweepResult } from '../src/eval/sweep.js';
import { sweepSvg } from '../src/eval/sweep-plot.js';
import { gpuContext } from './helpers/gpu.js';
import { REPO_ROOT } from './helpers/fixtures.js';
import { VLMSCOPE_BIN, vlmscope, type CliResult } from './helpers/cli.js';
import { writeSyntheticSet } from './helpers/synthetic-data.js';

const organism = join(REPO_ROOT, 'weights/organism');
const work = mkdtempSync(join(tmpdir(), 'vlmscope-cli-sweep-'));
const SCALED = 0; // alpha 0: the last row's image logits all 0, which changes the organism's answers

function vlmscopeAsync(args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [VLMSCOPE_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const predictions = (examples: { id: string; prediction: string; correct: boolean }[]) => examples.map((e) => [e.id, e.prediction, e.correct]);

/** Tags balanced and properly nested, attributes quoted, nothing outside the root but the XML declaration. */
function checkXml(text: string): void {
  const body = text.replace(/^<\?xml[^?]*\?>\s*/, '');
  const stack: string[] = [];
  const tag = /<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|<!--[\s\S]*?-->/g;
  let last = 0;
  let roots = 0;
  for (let m = tag.exec(body); m; m = tag.exec(body)) {
    const between = body.slice(last, m.index);
    expect(between, `stray markup before ${m[0]}`).not.toMatch(/[<>]/);
    expect(between.replace(/&(amp|lt|gt|quot|apos);/g, ''), 'bare &').not.toMatch(/&/);
    if (stack.length === 0) expect(between.trim(), 'text outside the root').toBe('');
    last = m.index + m[0].length;
    if (m[0].startsWith('<!--')) continue;
    if (m[1] === '/') expect(stack.pop(), `</${m[2]}>`).toBe(m[2]);
    else if (m[4] !== '/') {
      if (stack.length === 0) roots++;
      stack.push(m[2]);
    } else if (stack.length === 0) roots++;
  }
  expect(body.slice(last).trim()).toBe('');
  expect(stack).toEqual([]);
  expect(roots).toBe(1);
}

interface SvgSeries {
  name: string;
  points: [number, number][];
  circles: number;
}

function svgSeries(svg: string): SvgSeries[] {
  return [...svg.matchAll(/<g class="series" data-series="([^"]*)"[^>]*>([\s\S]*?)<\/g>/g)].map((m) => ({
    name: m[1],
    points: /<polyline points="([^"]*)"/.exec(m[2])![1].split(' ').map((p) => p.split(',').map(Number) as [number, number]),
    circles: (m[2].match(/<circle /g) ?? []).length,
  }));
}

function fakeResult(alphas: number[], acc: Record<string, number[]>): SweepResult {
  const baselineIndex = alphas.indexOf(1);
  const runs = alphas.map((alpha, i) => {
    const examples: EvalExample[] = [];
    for (const [type, accs] of Object.entries(acc)) {
      for (let k = 0; k < 4; k++) examples.push({ id: `${type}${k}`, type, function: 'decision', question: 'q', answer: 'a', prediction: 'p', correct: k < accs[i] * 4 });
    }
    return { alpha, baseline: i === baselineIndex, interventions: null, report: summarize(examples) };
  });
  return { alphas, queries: 'last', layers: null, heads: null, runs, baselineIndex };
}

describe('ScalingVis sweep on the shipped organism', () => {
  let model: VlmModel;
  let tokenizer: Tokenizer;
  let eos: number[];
  let dataPath: string;
  let items: EvalItem[];
  let plain: EvalReport;
  let scaled: EvalReport;
  let cli: CliResult;
  const out = join(work, 'out');

  beforeAll(async () => {
    dataPath = writeSyntheticSet(join(work, 'data'), { seed: 2002, scenes: 1, types: ['spatial', 'vsr', 'color', 'shape', 'count', 'exists'] });
    items = await readQuestions(dataPath, { includeSubQuestions: false });
    // The CLI runs in its own process meanwhile.
    const running = vlmscopeAsync(['sweep', '--model', organism, '--data', dataPath, '--no-sub-questions', '--alpha', `${SCALED},2`, '--out', out]);
    model = await loadModel(await gpuContext(), organism);
    tokenizer = await Tokenizer.fromFolder(nodeFolder(organism));
    eos = await eosTokenIds(nodeFolder(organism), tokenizer);
    plain = await evaluate(model, tokenizer, items, { eosTokenIds: eos });
    const spec = parseInterventions({ image_temperature: { alpha: SCALED, queries: 'last' } }, model.dims);
    scaled = await evaluate(model, tokenizer, items, { eosTokenIds: eos, interventions: spec });
    cli = await running;
  });

  it('writes the table and sweep.json: alpha 1 is plain evaluate, alpha 0 is evaluate with its spec', () => {
    expect(cli.stderr).toBe('');
    expect(cli.code).toBe(0);
    expect(items.length).toBeGreaterThanOrEqual(5);
    const j = JSON.parse(readFileSync(join(out, 'sweep.json'), 'utf8'));
    expect(j.method).toBe('ScalingVis');
    expect(j.alphas).toEqual([0, 1, 2]);
    expect(j.queries).toBe('last');
    expect(j.layers).toBeNull();
    expect(j.questions.map((q: { id: string }) => q.id)).toEqual(items.map((i) => i.id));
    const [r0, r1, r2] = j.runs;
    expect([r0.alpha, r1.alpha, r2.alpha]).toEqual([0, 1, 2]);
    expect([r0.baseline, r1.baseline, r2.baseline]).toEqual([false, true, false]);
    expect(r1.spec).toBeNull();
    expect(r0.spec).toEqual({ image_temperature: { alpha: 0, queries: 'last' } });
    expect(predictions(r1.examples)).toEqual(predictions(plain.examples));
    expect(predictions(r0.examples)).toEqual(predictions(scaled.examples));
    for (const [run, report] of [
      [r1, plain],
      [r0, scaled],
    ] as const) {
      expect(run.accuracy).toBe(report.accuracy);
      expect(run.by_type).toEqual(report.byType);
      expect(run.by_function).toEqual(report.byFunction);
    }
    // The intervention acts: some answer changes at alpha 0.
    expect(predictions(scaled.examples)).not.toEqual(predictions(plain.examples));

    // The printed table: a column per alpha, a row per type and function, the best marked.
    const lines = cli.stdout.split('\n');
    expect(lines[0]).toMatch(/^ScalingVis sweep: .*last prompt row, all layers, all heads; \d+ questions/);
    expect(lines[1]).toMatch(/n\s+a=0\s+a=1 \(base\)\s+a=2\s+best$/);
    expect(lines[2]).toMatch(new RegExp(`^overall\\s+${items.length}\\s`));
    for (const name of [...Object.keys(plain.byType), ...Object.keys(plain.byFunction)]) expect(cli.stdout).toMatch(new RegExp(`^  ${name} `, 'm'));
    expect(lines.slice(1).filter((l) => l.includes('*'))).toHaveLength(1 + Object.keys(plain.byType).length + Object.keys(plain.byFunction).length);
    expect(lines[2]).toContain(`${(scaled.accuracy * 100).toFixed(1)} ${scaled.accuracy >= plain.accuracy ? '+' : '-'}${Math.abs((scaled.accuracy - plain.accuracy) * 100).toFixed(1)}`);
  });

  it('writes sweep.csv and sweep.md with a line per group and alpha', () => {
    const groups = 1 + Object.keys(plain.byType).length + Object.keys(plain.byFunction).length;
    const csv = readFileSync(join(out, 'sweep.csv'), 'utf8').trim().split('\n');
    expect(csv[0]).toBe('group,name,alpha,baseline,total,correct,accuracy,delta,best');
    expect(csv).toHaveLength(1 + 3 * groups);
    const overall = csv.filter((l) => l.startsWith('overall,overall,'));
    expect(overall.map((l) => l.split(',')[2])).toEqual(['0', '1', '2']);
    expect(Number(overall[1].split(',')[6])).toBe(plain.accuracy);
    expect(Number(overall[0].split(',')[7])).toBeCloseTo(scaled.accuracy - plain.accuracy, 12);
    expect(overall.filter((l) => l.endsWith(',true')).length).toBe(1);
    const md = readFileSync(join(out, 'sweep.md'), 'utf8').trim().split('\n');
    expect(md[2]).toMatch(/^\| group \| name \| n \| α=0 \| α=1 \(base\) \| α=2 \| best α \|$/);
    expect(md.slice(4)).toHaveLength(groups);
  });

  it('writes sweep.svg: well-formed, a line per question type and overall with a point per alpha, axes and legend', () => {
    const svg = readFileSync(join(out, 'sweep.svg'), 'utf8');
    expect(svg.startsWith('<?xml')).toBe(true);
    checkXml(svg);
    const series = svgSeries(svg);
    expect(series.map((s) => s.name).sort()).toEqual(['overall', ...Object.keys(plain.byType)].sort());
    for (const s of series) {
      expect(s.points).toHaveLength(3);
      expect(s.circles).toBe(3);
      expect(s.points.every(([x, y]) => Number.isFinite(x) && Number.isFinite(y))).toBe(true);
      expect(s.points[0][0]).toBeLessThan(s.points[1][0]);
      expect(s.points[1][0]).toBeLessThan(s.points[2][0]);
    }
    // Higher accuracy is higher up (smaller y); equal accuracy, equal y.
    const o = series.find((s) => s.name === 'overall')!;
    expect(Math.sign(o.points[1][1] - o.points[0][1])).toBe(Math.sign(scaled.accuracy - plain.accuracy));
    expect(svg).toContain('>accuracy (%)</text>');
    expect(svg).toMatch(/>alpha \(image-key logit scale; 1 = baseline\)<\/text>/);
    const ticks = [...svg.matchAll(/<text class="tick-label"[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]);
    expect(ticks).toEqual(['0', '20', '40', '60', '80', '100', '0', '1', '2']);
    expect((svg.match(/<text class="legend-label"/g) ?? []).length).toBe(series.length);
    expect(svg).toContain('class="baseline"');
  });

  it('sweeps in the library: baseline first, ascending results, progress, layers / heads / queries as the spec', async () => {
    const few = items.slice(0, 2);
    const progress: SweepProgress[] = [];
    const r = await sweepImageTemperature(model, tokenizer, few, {
      alphas: [SCALED, 1, SCALED],
      layers: [0, 1],
      heads: [0, 1, 2, 3],
      queries: 'all',
      eosTokenIds: eos,
      onProgress: (p) => progress.push(p),
    });
    expect(r.alphas).toEqual([SCALED, 1]);
    expect(r.baselineIndex).toBe(1);
    expect(r.runs.map((x) => [x.alpha, x.baseline])).toEqual([
      [SCALED, false],
      [1, true],
    ]);
    expect(progress.map((p) => [p.run, p.runs, p.alpha, p.done, p.total])).toEqual([
      [1, 2, 1, 1, 2],
      [1, 2, 1, 2, 2],
      [2, 2, SCALED, 1, 2],
      [2, 2, SCALED, 2, 2],
    ]);
    expect(r.runs[1].interventions).toBeNull();
    expect(r.runs[0].interventions!.imageTemperature).toEqual({ alpha: SCALED, queries: 'all', layers: [0, 1], heads: [0, 1, 2, 3] });
    expect(predictions(r.runs[1].report.examples)).toEqual(predictions(plain.examples.slice(0, 2)));
    const spec = parseInterventions({ image_temperature: { alpha: SCALED, queries: 'all', layers: [0, 1], heads: [0, 1, 2, 3] } }, model.dims);
    const want = await evaluate(model, tokenizer, few, { eosTokenIds: eos, interventions: spec });
    expect(predictions(r.runs[0].report.examples)).toEqual(predictions(want.examples));
    // Re-scoring with another rule.
    const rescored = await sweepImageTemperature(model, tokenizer, few.slice(0, 1), { alphas: [], eosTokenIds: eos, score: () => true });
    expect(rescored.alphas).toEqual([1]);
    expect(rescored.runs[0].report.correct).toBe(1);
    await expect(sweepImageTemperature(model, tokenizer, few, { alphas: [2], layers: [99] })).rejects.toThrow(/layer 99 does not exist in the text tower/);
  });

  it('refuses bad input with one line, exit code 2 and no output', () => {
    const cases: [string[], RegExp][] = [
      [['--alpha', '0.5,x'], /option '--alpha <list>' argument '0\.5,x' is invalid/],
      [['--alpha', '0.5,,2'], /argument '0\.5,,2' is invalid/],
      [['--layers', '99'], /--layers 99 is out of range: the model has 4 text layers \(0\.\.3\)/],
      [['--heads', '0,8'], /--heads 8 is out of range: the model has 8 heads per text layer/],
      [['--layers', '1-0'], /argument '1-0' is invalid/],
      [['--queries', 'first'], /argument 'first' is invalid\. Allowed choices are last, all, generated/],
      [['--subset', 'VSR'], /--subset goes with --format adaptvis/],
      [['--format', 'adaptvis'], /--format adaptvis needs --subset/],
    ];
    for (const [k, [args, msg]] of cases.entries()) {
      const dir = join(work, `bad${k}`);
      const r = vlmscope(['sweep', '--model', organism, '--data', dataPath, ...args, '--out', dir]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(msg);
      expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
      expect(r.stdout).toBe('');
      expect(existsSync(dir)).toBe(false);
    }
    const dir = join(work, 'missing');
    const r = vlmscope(['sweep', '--model', organism, '--data', join(work, 'nope.jsonl'), '--out', dir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`vlmscope: cannot read data file ${join(work, 'nope.jsonl')}: no such file\n`);
    expect(existsSync(dir)).toBe(false);
    const noData = vlmscope(['sweep', '--model', organism, '--out', dir]);
    expect(noData.code).toBe(2);
    expect(noData.stderr).toMatch(/required option '--data <file>' not specified/);
    expect(existsSync(dir)).toBe(false);
  });
});

describe('sweep tables and plot on a hand-made result', () => {
  it('picks the best alpha: highest accuracy, ties to the baseline, then to the alpha nearest 1', () => {
    expect(sweepAlphas([2, 0.5, 2, 0.8])).toEqual([0.5, 0.8, 1, 2]);
    expect(() => sweepAlphas([-1])).toThrow(/alpha must be a finite number >= 0/);
    expect(bestIndex([0.5, 1, 2], [0.5, 0.75, 0.75])).toBe(1);
    expect(bestIndex([0.5, 1, 2], [0.75, 0.5, 0.75])).toBe(0); // |log 0.5| = |log 2|: the first
    expect(bestIndex([0.5, 0.8, 1, 1.5], [0.75, 0.75, 0.5, 0.75])).toBe(1);
    expect(bestIndex([0, 1, 5], [1, 0.5, 0.25])).toBe(0);
    const r = fakeResult([0.5, 1, 2], { 'a<b&c': [0.25, 0.5, 1], plain: [0.75, 0.75, 0.5] });
    const rows = sweepRows(r);
    expect(rows.map((x) => [x.group, x.name, x.total, x.best])).toEqual([
      ['overall', 'overall', 8, 2],
      ['type', 'a<b&c', 4, 2],
      ['type', 'plain', 4, 1],
      ['function', 'decision', 8, 2],
    ]);
    expect(rows[1].delta).toEqual([-0.25, 0, 0.5]);
    const table = formatSweepTable(r);
    expect(table).toMatch(/^overall\s+8\s+50\.0 -12\.5\s+62\.5\s+75\.0 \+12\.5\*\s+a=2 \+12\.5$/m);
    expect(table).toMatch(/^ {2}plain\s+4\s+75\.0 \+0\.0\s+75\.0\*\s+50\.0 -25\.0\s+a=1 \(base\)$/m);
    expect(sweepMarkdown(r)).toContain('| type | plain | 4 | 75.0 (+0.0) | **75.0** | 50.0 (-25.0) | 1 |');
    expect(sweepCsv(r).split('\n')[1]).toBe('overall,overall,0.5,false,8,4,0.5,-0.125,false');
    const svg = sweepSvg(r, { title: 'T & <t>' });
    checkXml(svg);
    expect(svg).toContain('data-series="a&lt;b&amp;c"');
    expect(svg).toContain('<title>T &amp; &lt;t&gt;</title>');
    expect(svgSeries(svg).map((s) => [s.name, s.points.length])).toEqual([
      ['plain', 3],
      ['a&lt;b&amp;c', 3],
      ['overall', 3],
    ]);
    expect(svgSeries(sweepSvg(r, { series: 'function' })).map((s) => s.name)).toEqual(['decision', 'overall']);
    // One alpha only (the baseline): still a plot.
    const one = fakeResult([1], { x: [0.5] });
    checkXml(sweepSvg(one));
    expect(svgSeries(sweepSvg(one))[0].points).toHaveLength(1);
  });
});
