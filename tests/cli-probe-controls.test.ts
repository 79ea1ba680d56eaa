// `vlmscope probe --controls` and `--probe mlp` as processes on a synthetic activation store (the layout
// `vlmscope collect` writes): the controlled outputs (CSV columns, probes.json controls and separation, probes.md,
// selectivity heatmaps), the MLP probe's outputs, and one-line errors for flags that do not go together.

import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { encodeSafetensorsF32 } from '../src/io/safetensors-writer.js';
import { REPO_ROOT } from './helpers/fixtures.js';
import { rng } from './helpers/gpu.js';

const work = mkdtempSync(join(tmpdir(), 'vlmscope-probe-controls-'));
const [L, H, F] = [2, 3, 4];
const FUNCTIONS = ['spatial perception', 'math', 'knowledge'];

function vlmscope(args: string[]) {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'bin/vlmscope.js'), ...args], { encoding: 'utf8', timeout: 300_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * 60 main questions, each with one sub-question per function. Questions come in two wordings per function, one of
 * them ("Is there a <colour> <shape>?") shared by all three functions, so the wording alone tells the function on
 * about half of the rows. Head (0, 1) carries the spatial label, head (1, 2) the math label; the rest is noise.
 * `worded` writes wording ids as collect does for paraphrased data; otherwise the question text is the only cue.
 */
function writeStore(dir: string, worded: boolean): string {
  mkdirSync(dir, { recursive: true });
  const r = rng(21);
  const colours = ['red', 'blue', 'green'];
  const examples: Record<string, unknown>[] = [];
  for (let m = 0; m < 60; m++)
    FUNCTIONS.forEach((fn, k) => {
      const shared = (m + k) % 2 === 0;
      const colour = colours[(m * 7 + k) % 3];
      const question = shared ? `Is there a ${colour} circle?` : `Tell me about the ${colour} square for ${fn}.`;
      const wording = worded ? { wording: shared ? 'shared.w0' : `${fn}.w1`, wording_heldout: false } : {};
      examples.push({ id: `m${m}.${k}`, main_id: `m${m}`, function: fn, question, answer: 'a', prediction: 'a', correct: true, ...wording });
    });
  examples.forEach((e, i) => (e.row = i));
  const data = new Float32Array(examples.length * L * H * F).map(() => r() * 2 - 1);
  examples.forEach((e, n) => {
    data[((n * L + 0) * H + 1) * F + 0] += e.function === 'spatial perception' ? 2 : -2;
    data[((n * L + 1) * H + 2) * F + 2] += e.function === 'math' ? 2 : -2;
  });
  writeFileSync(join(dir, 'index.json'), JSON.stringify({ model: 'synthetic', tower: 'text', layers: L, heads: H, dim: F, pool: 'last_prompt', examples }));
  writeFileSync(join(dir, 'activations.safetensors'), encodeSafetensorsF32([{ name: 'z', shape: [examples.length, L, H, F], data }]));
  return dir;
}

describe('vlmscope probe --controls (process)', () => {
  it('documents the flags in --help', () => {
    const r = vlmscope(['probe', '--help']);
    expect(r.code).toBe(0);
    for (const flag of ['--controls', '--permutations', '--rank-by', '--probe <kind>', '--mlp-epochs', '--mlp-batch-size', 'selectivity-<fn>.png']) expect(r.stdout).toContain(flag);
  });

  it('writes the controlled ranking, the controls, probes.md and selectivity heatmaps (GPU)', () => {
    const store = writeStore(join(work, 'worded'), true);
    const out = join(work, 'out-gpu');
    const r = vlmscope(['probe', '--activations', store, '--controls', '--seeds', '0,1,2', '--permutations', '4', '--iterations', '80', '--top-percent', '20', '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(readdirSync(out).sort()).toEqual([
      'heatmap-knowledge.png',
      'heatmap-math.png',
      'heatmap-spatial-perception.png',
      'probes.csv',
      'probes.json',
      'probes.md',
      'selectivity-knowledge.png',
      'selectivity-math.png',
      'selectivity-spatial-perception.png',
    ]);
    expect(r.stdout).toMatch(/top heads \(by selectivity\)/);
    expect(r.stdout).toMatch(/^math: top 1 (separated|not separated)/m);

    const j = JSON.parse(readFileSync(join(out, 'probes.json'), 'utf8'));
    expect(j.controls).toMatchObject({ permutations: 4, wording_source: 'wording', templates: 4, rank_by: 'selectivity', ci_level: 0.95 });
    expect(j.controls.criteria).toEqual(['selectivity mean', 'selectivity CI lower bound', 'accuracy mean', 'accuracy CI lower bound']);
    const math = j.functions.math;
    expect(math.top).toEqual([expect.objectContaining({ layer: 1, head: 2, rank: 1 })]);
    expect(j.functions['spatial perception'].top).toEqual([expect.objectContaining({ layer: 0, head: 1, rank: 1 })]);
    expect(math.ranking).toHaveLength(L * H);
    expect(math.ranking[0]).toMatchObject({ layer: 1, head: 2, accuracy: expect.any(Number), selectivity: expect.any(Number), accuracy_ci: [expect.any(Number), expect.any(Number)] });
    expect(math.accuracy_ranking[0]).toMatchObject({ layer: 1, head: 2, rank: 1 });
    expect(math.controls.wording_accuracy_per_seed).toHaveLength(3);
    expect(math.controls.permutation_accuracy_per_seed).toHaveLength(3);
    expect(math.controls.permutation_accuracy_per_seed[0]).toHaveLength(4);
    expect(math.controls.selectivity_mean[1][2]).toBeGreaterThan(0.1);
    expect(math.separation).toMatchObject({ separated: expect.any(Boolean), note: expect.any(String) });

    const csv = readFileSync(join(out, 'probes.csv'), 'utf8').trim().split('\n');
    expect(csv[0]).toBe(
      'function,layer,head,accuracy_mean,accuracy_std,rank,top,accuracy_ci_low,accuracy_ci_high,permutation_mean,permutation_std,wording_accuracy,control,selectivity_mean,selectivity_ci_low,selectivity_ci_high,accuracy_rank',
    );
    expect(csv).toHaveLength(1 + 3 * L * H);
    expect(csv.find((l) => l.startsWith('math,1,2,'))!.split(',')[6]).toBe('1');

    const md = readFileSync(join(out, 'probes.md'), 'utf8');
    expect(md).toMatch(/^# Functional-head probes with controls/);
    expect(md).toMatch(/## math\n\n\d+ positives\. Wording-only accuracy 0\.\d{3}/);
    expect(md).toMatch(/\| 1 \| L1H2 \*\*top\*\* \|/);
    expect(md).toMatch(/Top 1: (separated|not separated|separation unknown)/);
  });

  it('derives templates from the question text when the store has no wordings; --rank-by accuracy; --cpu', () => {
    const store = writeStore(join(work, 'plain'), false);
    const out = join(work, 'out-cpu');
    const r = vlmscope(['probe', '--activations', store, '--controls', '--rank-by', 'accuracy', '--cpu', '--seeds', '0,1', '--permutations', '2', '--iterations', '60', '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(readFileSync(join(out, 'probes.json'), 'utf8'));
    // "Is there a red circle?" and "Is there a blue circle?" are one template; each function's other question is one more.
    expect(j.controls).toMatchObject({ wording_source: 'masked-question', templates: 4, rank_by: 'accuracy' });
    expect(j.backend).toBe('cpu');
    expect(j.functions.math.top[0]).toMatchObject({ layer: 1, head: 2 });
  });

  it('runs the CogVSR MLP probe with --probe mlp and finds the planted heads', () => {
    const store = writeStore(join(work, 'mlp'), true);
    const out = join(work, 'out-mlp');
    const r = vlmscope(['probe', '--activations', store, '--probe', 'mlp', '--seeds', '0,1', '--mlp-epochs', '12', '--mlp-batch-size', '2', '--top-percent', '20', '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^MLP probe: 3 functions x 6 heads/);
    expect(readdirSync(out).sort()).toEqual(['heatmap-knowledge.png', 'heatmap-math.png', 'heatmap-spatial-perception.png', 'probes.csv', 'probes.json', 'probes.md']);
    const j = JSON.parse(readFileSync(join(out, 'probes.json'), 'utf8'));
    expect(j).toMatchObject({ probe: 'mlp', layers: L, heads: H, k: 1, classes: ['knowledge', 'math', 'spatial perception'] });
    expect(j.settings).toMatchObject({ projection: 64, hidden: 512, dropout: 0.3, learning_rate: 1e-4, weight_decay: 0.01, epochs: 12, batch_size: 2 });
    expect(j.fits).toHaveLength(2);
    expect(j.functions.math.top).toEqual([expect.objectContaining({ layer: 1, head: 2, rank: 1 })]);
    expect(j.functions['spatial perception'].top).toEqual([expect.objectContaining({ layer: 0, head: 1, rank: 1 })]);
    const csv = readFileSync(join(out, 'probes.csv'), 'utf8').trim().split('\n');
    expect(csv[0]).toBe('function,layer,head,importance_mean,importance_ci_low,importance_ci_high,signed_importance_mean,rank,top');
    expect(readFileSync(join(out, 'probes.md'), 'utf8')).toMatch(/^# Functional heads by the CogVSR MLP probe/);
  });

  const bad: [string[], RegExp][] = [
    [['--permutations', '3'], /^vlmscope: --permutations needs --controls\n$/],
    [['--rank-by', 'accuracy'], /^vlmscope: --rank-by needs --controls\n$/],
    [['--probe', 'mlp', '--controls'], /^vlmscope: --controls applies to the linear probe, not --probe mlp\n$/],
    [['--mlp-epochs', '3'], /^vlmscope: --mlp-epochs needs --probe mlp\n$/],
    [['--controls', '--permutations', '0'], /--permutations.*positive integer/],
    [['--probe', 'svm'], /--probe.*svm.*choices/i],
  ];
  for (const [args, message] of bad) {
    it(`refuses ${args.join(' ')} in one line`, () => {
      const store = writeStore(join(work, `bad-${args.join('')}`), true);
      const r = vlmscope(['probe', '--activations', store, ...args]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    });
  }
});
