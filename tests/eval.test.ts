// Evaluation on the shipped checkpoint (weights/tiny-llava: random weights, so accuracy itself means nothing here):
// the report's structure and per type / per function counts, predictions equal to the library's generate() on the
// processor's prompt, determinism, limit, progress, and `vlmscope eval` as a process (table, --json, --out lines
// matching the report, the same predictions as the library, --intervene, one-line errors with exit codes 1 / 2).

import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { LlavaModel } from '../src/models/llava.js';
import { LlavaProcessor } from '../src/models/llava-processor.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { nodeFolder } from '../src/io/checkpoint.js';
import { encodePng, loadImageFile } from '../src/io/image.js';
import { parseInterventions } from '../src/spec/spec.js';
import { generate } from '../src/generate/generate.js';
import { isCorrect, normalizeAnswer, readQuestions, type EvalItem } from '../src/eval/dataset.js';
import { evaluate, summarize, type EvalReport } from '../src/eval/evaluate.js';
import { gpuContext } from './helpers/gpu.js';
import { REPO_ROOT, fixtureDir } from './helpers/fixtures.js';

const modelDir = join(REPO_ROOT, 'weights/tiny-llava');
const work = mkdtempSync(join(tmpdir(), 'vlmscope-eval-'));

function vlmscope(args: string[]) {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'bin/vlmscope.js'), ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A generated 40x30 RGB image (a diagonal gradient with a square), unlike the fixture image. */
function syntheticPng(): Uint8Array {
  const width = 40;
  const height = 30;
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      const inSquare = x >= 5 && x < 15 && y >= 8 && y < 18;
      data[i] = inSquare ? 230 : (x * 6) % 256;
      data[i + 1] = inSquare ? 20 : (y * 8) % 256;
      data[i + 2] = inSquare ? 30 : 128;
    }
  }
  return encodePng({ width, height, data });
}

interface Row {
  id: string;
  image: string;
  question: string;
  answer: string;
  type: string;
  function: string;
}

const ROWS: Row[] = [
  { id: 'q0', image: 'images/a.png', question: 'Where is the red circle in relation to the blue square? Answer with left, right, above or below.', answer: 'left', type: 'spatial', function: 'relational_reasoning' },
  { id: 'q1', image: 'images/b.png', question: 'What color is the square?', answer: 'red', type: 'color', function: 'low_level_perception' },
  { id: 'q2', image: 'images/a.png', question: 'How many objects are there?', answer: '2', type: 'count', function: 'low_level_perception' },
  { id: 'q3', image: 'images/b.png', question: 'Is the square above the circle? Answer with yes or no.', answer: 'no', type: 'spatial', function: 'spatial_perception' },
  { id: 'q4', image: 'images/a.png', question: 'What shape is the red object?', answer: 'circle', type: 'shape', function: 'low_level_perception' },
  { id: 'q5', image: 'images/b.png', question: 'Is there a green triangle? Answer with yes or no.', answer: 'yes', type: 'exists', function: 'decision' },
];

function writeData(name: string, rows: Row[]): string {
  const path = join(work, name);
  writeFileSync(path, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return path;
}

const readJsonl = (path: string) =>
  readFileSync(path, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));

describe('evaluate and vlmscope eval on weights/tiny-llava', () => {
  let model: LlavaModel;
  let tokenizer: Tokenizer;
  let dataPath: string;
  let items: EvalItem[];
  let report: EvalReport;
  const progress: [number, number, number][] = [];

  beforeAll(async () => {
    const { mkdirSync } = await import('node:fs');
    mkdirSync(join(work, 'images'));
    copyFileSync(join(fixtureDir('tiny-llava'), 'image.png'), join(work, 'images/a.png'));
    writeFileSync(join(work, 'images/b.png'), syntheticPng());
    dataPath = writeData('questions.jsonl', ROWS);
    items = await readQuestions(dataPath);
    const ctx = await gpuContext();
    model = await LlavaModel.load(ctx, modelDir);
    tokenizer = await Tokenizer.fromFolder(nodeFolder(modelDir));
    report = await evaluate(model, tokenizer, items, { onProgress: (d, t, c) => progress.push([d, t, c]) });
  });

  it('reads the JSONL written for the test', () => {
    expect(items.map((i) => i.id)).toEqual(ROWS.map((r) => r.id));
    expect(items[1].imagePath.endsWith(join('images', 'b.png'))).toBe(true);
  });

  it('reports totals, per type and per function counts, and every example in order', () => {
    expect(report.total).toBe(ROWS.length);
    expect(report.examples).toHaveLength(ROWS.length);
    report.examples.forEach((e, i) => {
      expect(Object.keys(e).sort()).toEqual(['answer', 'correct', 'function', 'id', 'prediction', 'question', 'type']);
      expect(e.id).toBe(items[i].id);
      expect(e.type).toBe(items[i].type);
      expect(e.function).toBe(items[i].function);
      expect(e.question).toBe(items[i].question);
      expect(e.answer).toBe(items[i].answer);
      expect(typeof e.prediction).toBe('string');
      expect(e.correct).toBe(isCorrect(e.prediction, items[i]));
    });
    const correct = report.examples.filter((e) => e.correct).length;
    expect(report.correct).toBe(correct);
    expect(report.accuracy).toBeCloseTo(correct / ROWS.length, 12);

    expect(Object.keys(report.byType)).toEqual(['color', 'count', 'exists', 'shape', 'spatial']);
    expect(report.byType.spatial.total).toBe(2);
    expect(report.byType.color.total).toBe(1);
    expect(Object.keys(report.byFunction)).toEqual(['decision', 'low_level_perception', 'relational_reasoning', 'spatial_perception']);
    expect(report.byFunction.low_level_perception.total).toBe(3);
    for (const groups of [report.byType, report.byFunction]) {
      const key = groups === report.byType ? 'type' : 'function';
      expect(Object.values(groups).reduce((n, g) => n + g.total, 0)).toBe(report.total);
      for (const [k, g] of Object.entries(groups)) {
        const mine = report.examples.filter((e) => e[key] === k);
        expect(g.total).toBe(mine.length);
        expect(g.correct).toBe(mine.filter((e) => e.correct).length);
        expect(g.accuracy).toBeCloseTo(g.correct / g.total, 12);
      }
    }
    expect(summarize(report.examples)).toEqual(report);
  });

  it('reports progress after every question', () => {
    expect(progress.map((p) => p[0])).toEqual(ROWS.map((_, i) => i + 1));
    expect(progress.every((p) => p[1] === ROWS.length)).toBe(true);
    expect(progress.at(-1)![2]).toBe(report.correct);
  });

  it('predicts what generate() gives on the processor prompt (greedy, 4 tokens, stopping at EOS)', async () => {
    const processor = new LlavaProcessor(tokenizer, model.cfg, model.imageProcessor);
    for (const i of [0, 1, 3]) {
      const { ids, pixelValues } = processor.process(processor.formatPrompt(items[i].question, 1), [await loadImageFile(items[i].imagePath)]);
      const g = await generate(model, { ids, pixelValues, maxNewTokens: 4, tokenizer });
      expect(report.examples[i].prediction).toBe(g.text);
    }
  });

  it('is deterministic, with or without the image cache, and --limit takes the first questions', async () => {
    const again = await evaluate(model, tokenizer, items, { imageCacheBytes: 1 });
    expect(again).toEqual(report);
    const limited = await evaluate(model, tokenizer, items, { limit: 3 });
    expect(limited.total).toBe(3);
    expect(limited.examples).toEqual(report.examples.slice(0, 3));
    expect(limited).toEqual(summarize(report.examples.slice(0, 3)));
  });

  it('scores an answer equal to the prediction as correct', async () => {
    const rows = ROWS.map((r, i) => ({ ...r, answer: report.examples[i].prediction }));
    const scored = rows.filter((r) => normalizeAnswer(r.answer) !== '');
    expect(scored.length).toBeGreaterThan(0);
    const own = await evaluate(model, tokenizer, await readQuestions(writeData('own.jsonl', scored)));
    expect(own.examples.map((e) => e.prediction)).toEqual(scored.map((r) => r.answer));
    expect(own.correct).toBe(scored.length);
    expect(own.accuracy).toBe(1);
  });

  it('vlmscope eval --json and --out give the library report', () => {
    const out = join(work, 'results.jsonl');
    const r = vlmscope(['eval', '--model', modelDir, '--data', dataPath, '--json', '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0])).toEqual({
      total: report.total,
      correct: report.correct,
      accuracy: report.accuracy,
      by_type: report.byType,
      by_function: report.byFunction,
    });
    expect(readJsonl(out)).toEqual(report.examples);
  });

  it('vlmscope eval prints a table, deterministically, and honours --limit', () => {
    const a = vlmscope(['eval', '--model', modelDir, '--data', dataPath]);
    const b = vlmscope(['eval', '--model', modelDir, '--data', dataPath]);
    expect(a.stderr).toBe('');
    expect(a.code).toBe(0);
    expect(b.stdout).toBe(a.stdout);
    const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
    expect(a.stdout).toMatch(new RegExp(`^overall\\s+${report.total}\\s+${report.correct}\\s+${pct(report.accuracy).replace('.', '\\.')}$`, 'm'));
    for (const [k, g] of [...Object.entries(report.byType), ...Object.entries(report.byFunction)]) {
      expect(a.stdout).toMatch(new RegExp(`^  ${k}\\s+${g.total}\\s+${g.correct}\\s+${pct(g.accuracy).replace('.', '\\.')}$`, 'm'));
    }
    expect(a.stdout).toMatch(/^type$/m);
    expect(a.stdout).toMatch(/^function$/m);

    const out = join(work, 'limited.jsonl');
    const l = vlmscope(['eval', '--model', modelDir, '--data', dataPath, '--limit', '2', '--out', out, '--json']);
    expect(l.code).toBe(0);
    expect(JSON.parse(l.stdout).total).toBe(2);
    expect(readJsonl(out)).toEqual(report.examples.slice(0, 2));
  });

  it('sub-questions are scored as type "subquestion" with their own function, unless --no-sub-questions', async () => {
    const main = {
      ...ROWS[0],
      id: 'm0',
      sub_questions: [
        { id: 'm0-sub0', question: 'Is there a red circle?', answer: 'yes', function: 'low_level_perception', options: ['yes', 'no'] },
        { id: 'm0-sub1', question: 'Is the red circle left of the blue square?', answer: 'no', function: 'relational_reasoning' },
      ],
    };
    const path = join(work, 'subs.jsonl');
    writeFileSync(path, `${JSON.stringify(main)}\n${JSON.stringify(ROWS[1])}\n`);
    const withSubs = await evaluate(model, tokenizer, await readQuestions(path));
    expect(withSubs.examples.map((e) => e.id)).toEqual(['m0', 'm0-sub0', 'm0-sub1', 'q1']);
    expect(Object.fromEntries(Object.entries(withSubs.byType).map(([k, g]) => [k, g.total]))).toEqual({ color: 1, spatial: 1, subquestion: 2 });
    expect(withSubs.byFunction.relational_reasoning.total).toBe(2);
    expect(withSubs.examples[0]).toEqual({ ...report.examples[0], id: 'm0' });
    expect(withSubs.examples[3]).toEqual(report.examples[1]);
    const all = vlmscope(['eval', '--model', modelDir, '--data', path, '--json']);
    expect(all.code).toBe(0);
    expect(JSON.parse(all.stdout).by_type).toEqual(withSubs.byType);
    const mainOnly = vlmscope(['eval', '--model', modelDir, '--data', path, '--json', '--no-sub-questions']);
    expect(mainOnly.code).toBe(0);
    expect(JSON.parse(mainOnly.stdout)).toMatchObject({ total: 2, by_type: { color: { total: 1 }, spatial: { total: 1 } } });
  });

  it('vlmscope eval --intervene gives what the library gives with the same interventions', async () => {
    const json = { head_scale: [{ tower: 'text', layer: 0, head: 0, scale: 0 }, { tower: 'text', layer: 1, head: 2, scale: 0 }], image_temperature: { alpha: 2, queries: 'all' } };
    const spec = join(work, 'ablate.json');
    writeFileSync(spec, JSON.stringify(json));
    const lib = await evaluate(model, tokenizer, items, { interventions: parseInterventions(json, model.dims) });
    const out = join(work, 'ablated.jsonl');
    const r = vlmscope(['eval', '--model', modelDir, '--data', dataPath, '--intervene', spec, '--out', out, '--json']);
    expect(r.code).toBe(0);
    expect(readJsonl(out)).toEqual(lib.examples);
  });

  it('documents itself, with an example', () => {
    const r = vlmscope(['eval', '--help']);
    expect(r.code).toBe(0);
    for (const flag of ['--model', '--data', '--limit', '--max-new-tokens', '--intervene', '--out', '--json', '--dtype', '--verbose']) expect(r.stdout).toContain(flag);
    expect(r.stdout).toMatch(/Examples:[\s\S]*vlmscope eval --model/);
    expect(vlmscope(['--help']).stdout).toMatch(/vlmscope eval --model/);
  });

  const oneLine = (r: { stderr: string; stdout: string }) => {
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^vlmscope: /);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  };

  it('usage errors (missing or malformed data file, bad options) -> exit 2, one line', () => {
    const bad = join(work, 'bad.jsonl');
    writeFileSync(bad, `${JSON.stringify(ROWS[0])}\n{"id": "q1", "question": \n`);
    const cases: [string[], RegExp][] = [
      [['--data', join(work, 'nope.jsonl')], /nope\.jsonl/],
      [['--data', bad], /bad\.jsonl:2: invalid JSON/],
      [['--data', writeData('bad-type.jsonl', [{ ...ROWS[0], type: 'colour' }])], /bad-type\.jsonl:1: .*"type"/],
      [['--data', writeData('empty.jsonl', [])], /empty\.jsonl/],
      [['--data', work], /is not a file/],
      [['--data', dataPath, '--limit', '0'], /--limit.*positive integer/],
      [['--data', dataPath, '--max-new-tokens', 'x'], /--max-new-tokens.*positive integer/],
      [['--data', dataPath, '--out', join(work, 'no-such-dir', 'r.jsonl')], /no-such-dir.*does not exist/],
      [['--data', dataPath, '--intervene', join(work, 'nope.json')], /cannot read intervention spec/],
      [[], /--data/],
    ];
    for (const [extra, message] of cases) {
      const r = vlmscope(['eval', '--model', modelDir, ...extra]);
      expect(r.code, extra.join(' ')).toBe(2);
      oneLine(r);
      expect(r.stderr).toMatch(message);
    }
  });

  it('runtime errors (a missing image, a missing model) -> exit 1, one line, and no --out file', () => {
    const noImage = writeData('no-image.jsonl', [ROWS[0], { ...ROWS[1], image: 'images/missing.png' }]);
    const out = join(work, 'never.jsonl');
    const r = vlmscope(['eval', '--model', modelDir, '--data', noImage, '--out', out]);
    expect(r.code).toBe(1);
    oneLine(r);
    expect(r.stderr).toMatch(/q1.*missing\.png.*does not exist/);
    expect(() => readFileSync(out)).toThrow();
    const m = vlmscope(['eval', '--model', join(work, 'no-such-model'), '--data', dataPath]);
    expect(m.code).toBe(1);
    oneLine(m);
    expect(m.stderr).toMatch(/no-such-model.*does not exist/);
  });
});
