// `vlmscope probe` as a process: a synthetic activation store written here (the layout `vlmscope collect` writes)
// -> probes.json, probes.csv and one heatmap per function; bad stores fail with one line and write nothing.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { encodeSafetensorsF32 } from '../src/io/safetensors-writer.js';
import { decodeImage } from '../src/io/image.js';
import { REPO_ROOT } from './helpers/fixtures.js';
import { rng } from './helpers/gpu.js';

const work = mkdtempSync(join(tmpdir(), 'vlmscope-probe-'));
const [L, H, F] = [2, 3, 4];

function vlmscope(args: string[]) {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'bin/vlmscope.js'), ...args], { encoding: 'utf8', timeout: 300_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * 40 main questions, each with a "spatial perception", a "math" and a "knowledge" sub-question and the main
 * question itself ("decision"). Head (0, 1) carries the spatial label in feature 0, head (1, 2) the math label in
 * feature 2; nothing carries "knowledge".
 */
function writeStore(dir: string, mutate?: (index: Record<string, unknown>, z: { shape: number[]; data: Float32Array }) => void): string {
  mkdirSync(dir, { recursive: true });
  const r = rng(11);
  const examples: Record<string, unknown>[] = [];
  for (let m = 0; m < 40; m++) {
    for (const [k, fn] of ['spatial perception', 'math', 'knowledge'].entries())
      examples.push({ id: `m${m}.${k}`, main_id: `m${m}`, function: fn, question: 'q', answer: 'a', prediction: 'a', correct: r() > 0.1 });
    examples.push({ id: `m${m}`, main_id: `m${m}`, function: 'decision', question: 'q', answer: 'a', prediction: 'b', correct: true });
  }
  examples.forEach((e, i) => (e.row = i));
  const data = new Float32Array(examples.length * L * H * F).map(() => r() * 2 - 1);
  examples.forEach((e, n) => {
    data[((n * L + 0) * H + 1) * F + 0] += e.function === 'spatial perception' ? 2 : -2;
    data[((n * L + 1) * H + 2) * F + 2] += e.function === 'math' ? 2 : -2;
  });
  const index: Record<string, unknown> = { model: 'synthetic', tower: 'text', layers: L, heads: H, dim: F, pool: 'last_prompt', examples };
  const z = { shape: [examples.length, L, H, F], data };
  mutate?.(index, z);
  writeFileSync(join(dir, 'index.json'), JSON.stringify(index));
  writeFileSync(join(dir, 'activations.safetensors'), encodeSafetensorsF32([{ name: 'z', shape: z.shape, data: z.data }]));
  return dir;
}

describe('vlmscope probe (process)', () => {
  it('documents itself in --help', () => {
    const r = vlmscope(['probe', '--help']);
    expect(r.code).toBe(0);
    for (const flag of ['--activations', '--top-percent', '--seeds', '--out', '--test-fraction', '--split-by', '--iterations', '--cpu']) expect(r.stdout).toContain(flag);
  });

  it('writes probes.json, probes.csv and a heatmap per function, finding the planted heads', () => {
    const store = writeStore(join(work, 'store'));
    const out = join(work, 'out');
    const r = vlmscope(['probe', '--activations', store, '--seeds', '0,1', '--iterations', '60', '--top-percent', '20', '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/3 functions x 6 heads/);
    expect(r.stdout).toMatch(/spatial perception\s+\d+\s+1\.000\s+L0H1/);
    expect(readdirSync(out).sort()).toEqual(['heatmap-knowledge.png', 'heatmap-math.png', 'heatmap-spatial-perception.png', 'probes.csv', 'probes.json']);

    const j = JSON.parse(readFileSync(join(out, 'probes.json'), 'utf8'));
    expect(j).toMatchObject({ model: 'synthetic', tower: 'text', layers: L, heads: H, dim: F, seeds: [0, 1], top_percent: 20, k: 1, backend: 'gpu' });
    expect(Object.keys(j.functions).sort()).toEqual(['knowledge', 'math', 'spatial perception']); // main-question rows left out
    expect(j.functions['spatial perception'].top).toEqual([{ layer: 0, head: 1, accuracy: 1, rank: 1 }]);
    expect(j.functions.math.top.map((h: { layer: number; head: number }) => [h.layer, h.head])).toEqual([[1, 2]]);
    const sp = j.functions['spatial perception'];
    expect(sp.accuracy_per_seed).toHaveLength(2);
    expect(sp.accuracy_mean).toHaveLength(L);
    expect(sp.accuracy_mean[0]).toHaveLength(H);
    expect(sp.ranking).toHaveLength(L * H);
    expect(sp.heatmap).toBe('heatmap-spatial-perception.png');
    for (const s of sp.splits) {
      expect(s.test_positives).toBeGreaterThan(0);
      for (const id of s.test_ids) expect(String(id)).toMatch(/^m\d+\.\d$/);
    }

    const csv = readFileSync(join(out, 'probes.csv'), 'utf8').trim().split('\n');
    expect(csv[0]).toBe('function,layer,head,accuracy_mean,accuracy_std,rank,top');
    expect(csv).toHaveLength(1 + 3 * L * H);
    expect(csv.filter((l) => /^(math|spatial)/.test(l) && l.endsWith(',1,1'))).toEqual([expect.stringMatching(/^math,1,2,/), expect.stringMatching(/^spatial perception,0,1,1,0,1,1$/)]);

    const img = decodeImage(readFileSync(join(out, 'heatmap-math.png')), 'heatmap');
    expect([img.width, img.height]).toEqual([H * 17 + 1, L * 17 + 1]);
  });

  it('--cpu fits with the reference, --include-main adds the main questions, the default --out is <activations>/probes', () => {
    const store = writeStore(join(work, 'store-cpu'));
    const r = vlmscope(['probe', '--activations', store, '--seeds', '3', '--iterations', '40', '--cpu', '--include-main']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(readFileSync(join(store, 'probes', 'probes.json'), 'utf8'));
    expect(j.backend).toBe('cpu');
    expect(Object.keys(j.functions).sort()).toEqual(['decision', 'knowledge', 'math', 'spatial perception']);
    expect(j.k).toBe(1); // 10% of 6 heads, at least one
  });

  it('--split-by wording tests only on the examples in held-out wordings', () => {
    // Wording i % 5 of each example's function, wording 4 held out (as make-synthetic --wordings all records them).
    const store = writeStore(join(work, 'store-worded'), (index) =>
      (index.examples as Record<string, unknown>[]).forEach((e, i) => Object.assign(e, { wording: `${e.function}.w${i % 5}`, wording_heldout: i % 5 === 4 })),
    );
    const heldout = new Set(
      (JSON.parse(readFileSync(join(store, 'index.json'), 'utf8')).examples as { id: string; wording_heldout: boolean }[]).filter((e) => e.wording_heldout).map((e) => e.id),
    );
    const r = vlmscope(['probe', '--activations', store, '--seeds', '0,1', '--iterations', '60', '--split-by', 'wording', '--cpu']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(readFileSync(join(store, 'probes', 'probes.json'), 'utf8'));
    expect(j.split_by).toBe('wording');
    for (const fp of Object.values(j.functions) as { splits: { test_ids: string[]; test_positives: number }[] }[])
      for (const sp of fp.splits) {
        expect(sp.test_positives).toBeGreaterThan(0);
        expect(sp.test_ids.every((id) => heldout.has(id))).toBe(true);
      }
    // The planted head carries the function whatever the wording.
    expect(j.functions['spatial perception'].top[0]).toMatchObject({ layer: 0, head: 1 });
    // The default split is still by main question, recorded as such.
    const plain = vlmscope(['probe', '--activations', store, '--seeds', '0', '--iterations', '5', '--cpu', '--out', join(work, 'out-worded-question')]);
    expect(plain.code).toBe(0);
    expect(JSON.parse(readFileSync(join(work, 'out-worded-question', 'probes.json'), 'utf8')).split_by).toBe('question');
  });

  const bad: [string, (dir: string) => void, RegExp, number][] = [
    ['a missing folder', () => {}, /activation store .* does not exist/, 2],
    ['a store without index.json', (d) => mkdirSync(d), /cannot read activation index .*index\.json: no such file/, 2],
    ['an unfinished collection', (d) => mkdirSync(join(d, 'parts'), { recursive: true }), /is not finished .*rerun the same `vlmscope collect`/, 2],
    ['index.json that is not JSON', (d) => (mkdirSync(d), writeFileSync(join(d, 'index.json'), '{"layers": 2,')), /index\.json is not valid JSON/, 2],
    [
      'a z tensor of the wrong shape',
      (d) => writeStore(d, (_i, z) => ((z.shape = [z.shape[0], L, H, F - 1]), (z.data = z.data.subarray(0, z.shape.reduce((a, b) => a * b, 1))))),
      /tensor "z" has shape \[160, 2, 3, 3\], but index\.json says \[rows, 2, 3, 4\]/,
      2,
    ],
    ['a row past the tensor', (d) => writeStore(d, (i) => ((i.examples as { row: number }[])[5].row = 500)), /example "m1\.1" has row 500, but "z" .* has 160 rows/, 2],
    ['an example without "correct"', (d) => writeStore(d, (i) => delete (i.examples as Record<string, unknown>[])[3].correct), /examples\[3\]: "correct" is undefined, expected true or false/, 2],
    ['an empty safetensors file', (d) => (writeStore(d), writeFileSync(join(d, 'activations.safetensors'), '')), /too short to be a safetensors file/, 2],
    ['a missing safetensors file', (d) => (writeStore(d), unlinkSync(join(d, 'activations.safetensors'))), /has no activations\.safetensors/, 2],
    ['an unknown --functions name', (d) => writeStore(d), /--functions: vision not in the store/, 2],
    ['--split-by wording on a store without wordings', (d) => writeStore(d), /--split-by wording: example "m0\.0" in .* has no "wording_heldout"; collect from a question file written with make-synthetic --wordings all/, 2],
    ['a "wording_heldout" that is not a boolean', (d) => writeStore(d, (i) => ((i.examples as Record<string, unknown>[])[2].wording_heldout = 'yes')), /examples\[2\]: "wording_heldout" is "yes", expected true or false/, 2],
  ];
  for (const [what, make, message, code] of bad) {
    it(`refuses ${what} with one line`, () => {
      const dir = join(work, `bad-${what.replace(/\W+/g, '-')}`);
      make(dir);
      const out = join(work, `bad-out-${what.replace(/\W+/g, '-')}`);
      const extra = what.includes('--functions') ? ['--functions', 'vision'] : what.includes('--split-by') ? ['--split-by', 'wording'] : [];
      const r = vlmscope(['probe', '--activations', dir, '--out', out, '--iterations', '5', ...extra]);
      expect(r.code).toBe(code);
      expect(r.stdout).toBe('');
      const lines = r.stderr.split('\n').filter(Boolean);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^vlmscope: /);
      expect(lines[0]).toMatch(message);
      expect(existsSync(join(out, 'probes.json'))).toBe(false);
    });
  }

  it('refuses bad options with one line', () => {
    for (const args of [
      ['--seeds', '0,x'],
      ['--top-percent', '0'],
      ['--test-fraction', '1'],
      ['--split-by', 'template'],
    ]) {
      const r = vlmscope(['probe', '--activations', work, ...args]);
      expect(r.code).toBe(2);
      expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1);
    }
  });
});
