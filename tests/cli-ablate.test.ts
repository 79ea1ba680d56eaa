// `vlmscope ablate` as a process on weights/tiny-llava with a small synthetic question set and a probes.json / an
// activation store written here: the table, ablation.json equal to the library's runAblation result, ablation.csv,
// --mode steer with --activations, and one-line errors with exit codes 1 / 2 that write nothing.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { LlavaModel } from '../src/models/llava.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { nodeFolder } from '../src/io/checkpoint.js';
import { readQuestions } from '../src/eval/dataset.js';
import { encodeSafetensorsF32 } from '../src/io/safetensors-writer.js';
import { type AblationResult, probesFromJson, runAblation } from '../src/interp/ablation.js';
import { ablationCsv, ablationJson, ablationProgressBar, formatAblation, jsonNumbers } from '../src/cli/ablate.js';
import { gpuContext, rng } from './helpers/gpu.js';
import { REPO_ROOT } from './helpers/fixtures.js';
import { writeSyntheticSet } from './helpers/synthetic-data.js';

const modelDir = join(REPO_ROOT, 'weights/tiny-llava');
const work = mkdtempSync(join(tmpdir(), 'vlmscope-cli-ablate-'));
const [L, H, D] = [2, 4, 16];

function vlmscope(args: string[]) {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'bin/vlmscope.js'), ...args], { encoding: 'utf8', timeout: 240_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const ranking = (pairs: number[][]) => pairs.map(([layer, head], i) => ({ layer, head, accuracy: 1 - i / 10, std: 0, rank: i + 1 }));

/** probes.json in the layout `vlmscope probe` writes (the fields ablate reads, and a few others). */
function writeProbes(dir: string, mutate?: (j: Record<string, unknown>) => void): string {
  mkdirSync(dir, { recursive: true });
  const low = ranking([
    [0, 1],
    [1, 2],
    [0, 0],
    [0, 2],
    [0, 3],
    [1, 0],
    [1, 1],
    [1, 3],
  ]);
  const dec = ranking([
    [1, 3],
    [0, 0],
    [0, 1],
    [0, 2],
    [0, 3],
    [1, 0],
    [1, 1],
    [1, 2],
  ]);
  const j: Record<string, unknown> = {
    model: 'tiny',
    tower: 'text',
    layers: L,
    heads: H,
    dim: D,
    seeds: [0],
    top_percent: 25,
    k: 2,
    functions: {
      low_level_perception: { positives: 10, ranking: low, top: low.slice(0, 2).map(({ layer, head, accuracy, rank }) => ({ layer, head, accuracy, rank })) },
      decision: { positives: 4, ranking: dec, top: dec.slice(0, 2).map(({ layer, head, accuracy, rank }) => ({ layer, head, accuracy, rank })) },
    },
    skipped: [],
  };
  mutate?.(j);
  writeFileSync(join(dir, 'probes.json'), JSON.stringify(j));
  return dir;
}

/** An activation store (the layout `vlmscope collect` writes) of random z, 12 rows, both functions, right and wrong answers. */
function writeStore(dir: string, dim = 2 * D): string {
  mkdirSync(dir, { recursive: true });
  const r = rng(21);
  const examples = Array.from({ length: 12 }, (_, i) => ({
    id: `e${i}`,
    main_id: `m${i >> 2}`,
    function: i % 2 ? 'decision' : 'low_level_perception',
    question: 'q',
    answer: 'a',
    prediction: i % 3 ? 'a' : 'b',
    correct: i % 3 !== 0,
    row: i,
  }));
  const data = Float32Array.from({ length: examples.length * L * H * dim }, () => r() * 2 - 1);
  writeFileSync(join(dir, 'index.json'), JSON.stringify({ model: 'tiny', tower: 'text', layers: L, heads: H, dim, pool: 'last_prompt', concat_layer_mean: dim === 2 * D, examples }));
  writeFileSync(join(dir, 'activations.safetensors'), encodeSafetensorsF32([{ name: 'z', shape: [examples.length, L, H, dim], data }]));
  return dir;
}

describe('vlmscope ablate on weights/tiny-llava', () => {
  let data: string;
  let probesDir: string;
  let run: ReturnType<typeof vlmscope>;
  let lib: AblationResult;

  beforeAll(async () => {
    data = writeSyntheticSet(join(work, 'data'), { seed: 3, scenes: 2, types: ['spatial', 'exists'] });
    probesDir = writeProbes(join(work, 'probes'));
    // No --out: the files go next to probes.json.
    run = vlmscope(['ablate', '--model', modelDir, '--data', data, '--probes', probesDir, '--seeds', '2', '--limit', '6', '--epsilon', '0.001']);
    const ctx = await gpuContext();
    const model = await LlavaModel.load(ctx, modelDir);
    const tokenizer = await Tokenizer.fromFolder(nodeFolder(modelDir));
    const items = (await readQuestions(data)).slice(0, 6);
    const probes = probesFromJson(JSON.parse(readFileSync(join(probesDir, 'probes.json'), 'utf8')));
    lib = await runAblation(model, tokenizer, items, { probes, seeds: 2, epsilon: 0.001, eosTokenIds: [2] });
  });

  it('documents itself in --help', () => {
    const r = vlmscope(['ablate', '--help']);
    expect(r.code).toBe(0);
    for (const flag of ['--model', '--data', '--probes', '--function', '--k', '--mode', '--epsilon', '--alpha', '--activations', '--seeds', '--limit', '--out', '--dtype', '--verbose']) {
      expect(r.stdout).toContain(flag);
    }
  });

  it('prints the table and writes ablation.json (the library result) and ablation.csv', () => {
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(formatAblation(lib));
    const lines = run.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe('ablation: mode scale (epsilon 0.001), 2 random seeds, 6 questions, text tower');
    expect(lines[1]).toMatch(/^target\s+measured\s+k\s+baseline\s+top-k\s+random-k mean ± std\s+t\s+p$/);
    expect(lines).toHaveLength(2 + 2 * lib.targets.length);
    expect(lines[2]).toMatch(/^low_level_perception\s+low_level_perception\s+2\s+[\d.]+%\s+[\d.]+%\s+[\d.]+% ± [\d.]+%\s+\S+\s+\S+$/);
    expect(lines[3]).toMatch(/^\s+overall\s+[\d.]+%/);

    const j = JSON.parse(readFileSync(join(probesDir, 'ablation.json'), 'utf8'));
    const meta = { model: modelDir, data, probes: join(probesDir, 'probes.json'), activations: null };
    expect(j).toEqual(JSON.parse(JSON.stringify(ablationJson(lib, meta), jsonNumbers)));
    expect(j).toMatchObject({ mode: 'scale', epsilon: 0.001, seeds: [0, 1], questions: 6, tower: 'text' });
    expect(j.targets.map((t: { function: string }) => t.function)).toEqual(['low_level_perception', 'decision']);
    const t = j.targets[0];
    expect(t.top_heads).toEqual([
      { layer: 0, head: 1 },
      { layer: 1, head: 2 },
    ]);
    expect(t.random).toHaveLength(2);
    for (const x of t.random) for (const h of x.heads) expect(['0:1', '1:2']).not.toContain(`${h.layer}:${h.head}`);
    expect(Object.keys(t.comparisons).sort()).toEqual(['by_function', 'overall', 'target']);
    expect(Object.keys(t.comparisons.target).sort()).toEqual(['baseline', 'df', 'p', 'random', 'random_mean', 'random_std', 't', 'test', 'top']);

    const csv = readFileSync(join(probesDir, 'ablation.csv'), 'utf8');
    expect(csv).toBe(ablationCsv(lib));
    const rows = csv.trim().split('\n');
    expect(rows[0]).toBe('target,measured,k,mode,epsilon,alpha,baseline,top,random_mean,random_std,random_n,t,df,p,test,random_values');
    const nFns = Object.keys(lib.baseline.byFunction).length;
    expect(rows).toHaveLength(1 + lib.targets.length * (1 + nFns));
    expect(rows[1]).toMatch(/^low_level_perception,overall,2,scale,0\.001,0\.1,/);
  });

  it('--mode steer takes directions from --activations', () => {
    const store = writeStore(join(work, 'store'));
    const out = join(work, 'steer-out');
    const r = vlmscope(['ablate', '--model', modelDir, '--data', data, '--probes', join(probesDir, 'probes.json'), '--mode', 'steer', '--alpha', '2', '--activations', store, '--function', 'decision', '--k', '1', '--seeds', '1', '--limit', '6', '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')[0]).toBe('ablation: mode steer (alpha 2, mean_diff directions, all rows), 1 random seed, 6 questions, text tower');
    const j = JSON.parse(readFileSync(join(out, 'ablation.json'), 'utf8'));
    expect(j).toMatchObject({ mode: 'steer', alpha: 2, activations: store, direction: 'mean_diff' });
    expect(j.targets).toHaveLength(1);
    expect(j.targets[0].top_heads).toEqual([{ layer: 1, head: 3 }]);
    expect(j.targets[0].comparisons.target.t).toBeNull(); // one seed: no spread
    expect(existsSync(join(out, 'ablation.csv'))).toBe(true);
  });

  it('draws progress on a terminal only, over all runs of the experiment', () => {
    const writes: string[] = [];
    const tty = { isTTY: true, write: (s: string) => writes.push(s) } as unknown as NodeJS.WriteStream;
    const bar = ablationProgressBar(tty);
    bar.update({ run: 1, runs: 4, label: 'top-k decision', done: 2, total: 4, correct: 1 });
    bar.update({ run: 3, runs: 4, label: 'random-k decision seed 1', done: 4, total: 4, correct: 0 });
    bar.done();
    expect(writes[0]).toMatch(/^\r\x1b\[Kablate \[#{9}\.{15}\] run 2\/4 top-k decision  2\/4  [\d.]+ q\/s  ETA \d+ s$/);
    expect(writes.at(-2)).toMatch(/\[#{24}\] run 4\/4 random-k decision seed 1  4\/4 /);
    expect(writes.at(-1)).toBe('\r\x1b[K');
    const none: string[] = [];
    const pipe = { isTTY: false, write: (s: string) => none.push(s) } as unknown as NodeJS.WriteStream;
    const quiet = ablationProgressBar(pipe);
    quiet.update({ run: 0, runs: 1, label: 'baseline', done: 1, total: 1, correct: 1 });
    quiet.done();
    expect(none).toEqual([]);
  });

  const bad: [string, string[], RegExp, number][] = [
    ['a missing probes file', ['--probes', join(work, 'nope.json')], /cannot read probes file .*nope\.json: no such file/, 2],
    ['probes that are not JSON', ['--probes', 'NOTJSON'], /probes file .* is not valid JSON/, 2],
    ['probes with a bad grid', ['--probes', 'BADLAYERS'], /"layers" is 0, expected a positive integer/, 2],
    ['probes of another model', ['--probes', 'THREELAYERS'], /the probes rank 3 layers x 4 heads, but the model's text tower has 2 x 4/, 2],
    ['steering without a store', ['--mode', 'steer'], /--mode steer needs --activations/, 2],
    ['an unknown function', ['--function', 'vision'], /function "vision" is not in the probes/, 2],
    ['a k too large for a random draw', ['--k', '5'], /k = 5 random heads cannot be drawn from the 3 heads outside/, 2],
    ['a store that does not fit the heads', ['--mode', 'mean_ablate', '--activations', 'BADSTORE'], /has 5 values per head, but the heads have 16 dims/, 2],
    ['a missing store', ['--mode', 'mean_ablate', '--activations', join(work, 'no-store')], /activation store .* does not exist/, 2],
    ['a negative epsilon', ['--epsilon', '-1'], /epsilon/, 2],
    ['an unknown mode', ['--mode', 'zap'], /--mode/, 2],
    ['a missing data file', ['--data', join(work, 'none.jsonl')], /cannot read data file .*none\.jsonl: no such file/, 2],
    ['a missing model folder', ['--model', join(work, 'no-model')], /model folder .*no-model does not exist/, 1],
  ];
  for (const [what, extra, message, code] of bad) {
    it(`refuses ${what} with one line`, () => {
      const tag = what.replace(/\W+/g, '-');
      const out = join(work, `bad-out-${tag}`);
      const fix = (a: string) => {
        if (a === 'NOTJSON') return (mkdirSync(join(work, tag), { recursive: true }), writeFileSync(join(work, tag, 'probes.json'), '{"layers": 2,'), join(work, tag));
        if (a === 'BADLAYERS') return writeProbes(join(work, tag), (j) => (j.layers = 0));
        if (a === 'THREELAYERS') return writeProbes(join(work, tag), (j) => (j.layers = 3));
        if (a === 'BADSTORE') return writeStore(join(work, tag), 5);
        return a;
      };
      const args = ['--model', modelDir, '--data', data, '--probes', probesDir, '--seeds', '2', '--limit', '6', '--out', out];
      const given = extra.map(fix);
      for (let i = 0; i < given.length; i += 2) {
        const at = args.indexOf(given[i]);
        if (at >= 0) args.splice(at, 2);
      }
      const r = vlmscope(['ablate', ...args, ...given]);
      expect(r.code).toBe(code);
      expect(r.stdout).toBe('');
      const lines = r.stderr.split('\n').filter(Boolean);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^vlmscope: /);
      expect(lines[0]).toMatch(message);
      expect(existsSync(join(out, 'ablation.json'))).toBe(false);
    });
  }
});
