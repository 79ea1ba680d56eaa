// `vlmscope collect` as a process on weights/tiny-llava with a small synthetic set: the store it writes equals the
// library's (collectToStore) byte for byte, the summary per function, a rerun of a finished store, a run killed
// with SIGKILL mid-collection and rerun giving the same bytes as an uninterrupted run, --intervene, the vision
// tower, the progress bar, and one-line errors with exit codes 1 / 2.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { LlavaModel } from '../src/models/llava.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { nodeFolder } from '../src/io/checkpoint.js';
import { readQuestions, type EvalItem } from '../src/eval/dataset.js';
import { planCollection } from '../src/interp/collect.js';
import { collectToStore, readActivationStore, type StoreExample } from '../src/interp/activation-store.js';
import { collectProgressBar, formatSummary } from '../src/cli/collect.js';
import { gpuContext } from './helpers/gpu.js';
import { REPO_ROOT } from './helpers/fixtures.js';
import { writeSyntheticSet } from './helpers/synthetic-data.js';

const modelDir = join(REPO_ROOT, 'weights/tiny-llava');
const bin = join(REPO_ROOT, 'bin/vlmscope.js');
const work = mkdtempSync(join(tmpdir(), 'vlmscope-cli-collect-'));

function vlmscope(args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 240_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const bytes = (p: string) => readFileSync(p);
const sameFiles = (a: string, b: string) => {
  for (const f of ['activations.safetensors', 'index.json']) expect(bytes(join(a, f)).equals(bytes(join(b, f))), f).toBe(true);
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('vlmscope collect on weights/tiny-llava', () => {
  let data: string;
  let items: EvalItem[];
  const outA = join(work, 'a');
  let runA: ReturnType<typeof vlmscope>;

  beforeAll(async () => {
    data = writeSyntheticSet(join(work, 'data'), { seed: 7, scenes: 2, types: ['spatial', 'exists'] });
    items = await readQuestions(data);
    runA = vlmscope(['collect', '--model', modelDir, '--data', data, '--out', outA, '--limit', '7', '--chunk-size', '3']);
  });

  it('writes the store the library writes, byte for byte, and prints a summary per function', async () => {
    expect(runA.stderr).toBe('');
    expect(runA.code).toBe(0);
    expect(readdirSync(outA).sort()).toEqual(['activations.safetensors', 'index.json']);
    const { index, shape } = await readActivationStore(outA);
    expect(shape).toEqual([7, 2, 4, 16]);
    expect(index.examples.map((e) => e.id)).toEqual(planCollection(items).slice(0, 7).map((s) => s.item.id));
    expect(index.args).toMatchObject({ dtype: null, eos_token_ids: [2], interventions: null });

    const ctx = await gpuContext();
    const model = await LlavaModel.load(ctx, modelDir);
    const tokenizer = await Tokenizer.fromFolder(nodeFolder(modelDir));
    const lib = join(work, 'lib');
    await collectToStore(model, tokenizer, items, lib, { pool: 'last_prompt', limit: 7, eosTokenIds: [2], modelName: modelDir, extraArgs: { dtype: null } });
    sameFiles(outA, lib);

    expect(runA.stdout).toBe(`collected 7 examples into ${outA}: z [7, 2, 4, 16] (text tower, pool last_prompt, chain (gold answers))\n${formatSummary(index.examples)}`);
    const fns = [...new Set(index.examples.map((e) => e.function))].sort();
    for (const f of fns) {
      const mine = index.examples.filter((e) => e.function === f);
      expect(runA.stdout).toMatch(new RegExp(`^  ${f}\\s+${mine.length}\\s+${mine.filter((e) => e.correct).length}\\s+[\\d.]+%$`, 'm'));
    }
    expect(runA.stdout).toMatch(new RegExp(`^overall\\s+7\\s+${index.examples.filter((e) => e.correct).length}\\s`, 'm'));
  });

  it('formatSummary counts examples and correct answers per function', () => {
    const ex = (fn: string, correct: boolean): StoreExample => ({ id: 'x', main_id: 'x', function: fn, question: '', answer: '', prediction: '', correct, row: 0 });
    expect(formatSummary([ex('b', true), ex('a', false), ex('b', false)])).toBe(
      [
        'function   examples  correct  accuracy',
        '  a               1        0      0.0%',
        '  b               2        1     50.0%',
        'overall           3        1     33.3%',
        '',
      ].join('\n'),
    );
  });

  it('a rerun of a finished collection does nothing; other arguments are refused with exit code 2', () => {
    const before = bytes(join(outA, 'activations.safetensors'));
    const again = vlmscope(['collect', '--model', modelDir, '--data', data, '--out', outA, '--limit', '7']);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/already holds these 7 examples; nothing to do/);
    expect(bytes(join(outA, 'activations.safetensors')).equals(before)).toBe(true);
    const other = vlmscope(['collect', '--model', modelDir, '--data', data, '--out', outA, '--limit', '7', '--pool', 'answer_mean']);
    expect(other.code).toBe(2);
    expect(other.stdout).toBe('');
    expect(other.stderr).toMatch(/^vlmscope: .* holds a finished collection with other arguments: pool "last_prompt" \(now "answer_mean"\).*another output folder/);
    expect(other.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('a run killed with SIGKILL mid-collection and rerun gives the bytes of an uninterrupted run', async () => {
    const args = (out: string) => ['collect', '--model', modelDir, '--data', data, '--out', out, '--pool', 'answer_mean', '--concat-layer-mean'];
    const killed = join(work, 'killed');
    const child = spawn(process.execPath, [bin, ...args(killed), '--chunk-size', '1'], { stdio: 'ignore' });
    const exited = new Promise<void>((r) => child.on('exit', () => r()));
    const t0 = Date.now();
    while (!existsSync(join(killed, 'parts', 'part-00001.json')) && Date.now() - t0 < 180_000) await sleep(20);
    child.kill('SIGKILL');
    await exited;
    expect(existsSync(join(killed, 'index.json'))).toBe(false);
    const parts = readdirSync(join(killed, 'parts')).filter((f) => f.endsWith('.json') && f !== 'args.json').length;
    expect(parts).toBeGreaterThanOrEqual(2);
    expect(parts).toBeLessThan(items.length);

    const resumed = vlmscope(args(killed));
    expect(resumed.code).toBe(0);
    expect(resumed.stderr).toMatch(new RegExp(`^resuming: ${parts} of ${items.length} questions already in `));
    expect(resumed.stdout).toMatch(new RegExp(`collected ${items.length} examples .*z \\[${items.length}, 2, 4, 32\\]`));
    const whole = join(work, 'whole');
    const uninterrupted = vlmscope(args(whole));
    expect(uninterrupted.code).toBe(0);
    expect(uninterrupted.stderr).toBe('');
    sameFiles(killed, whole);
  });

  it('--intervene changes z and is recorded; --tower vision pools over the image', async () => {
    const spec = join(work, 'ablate.json');
    writeFileSync(spec, JSON.stringify({ head_scale: [{ tower: 'text', layer: 0, head: 1, scale: 0 }] }));
    const ab = join(work, 'ablated');
    expect(vlmscope(['collect', '--model', modelDir, '--data', data, '--out', ab, '--limit', '2', '--intervene', spec]).code).toBe(0);
    const plain = await readActivationStore(outA);
    const ablated = await readActivationStore(ab);
    expect(ablated.index.args.interventions).toMatchObject({ headScale: [{ tower: 'text', layer: 0, head: 1, scale: 0 }], imageTemperature: null });
    // Layer 0's other heads are untouched (z is before o_proj); the next layer sees the ablation.
    const d = 16;
    const at = (z: Float32Array, l: number, h: number) => z.subarray((l * 4 + h) * d, (l * 4 + h + 1) * d);
    expect(at(ablated.z, 0, 0)).toEqual(at(plain.z, 0, 0));
    expect(at(ablated.z, 1, 0)).not.toEqual(at(plain.z, 1, 0));

    const vis = join(work, 'vision');
    const r = vlmscope(['collect', '--model', modelDir, '--data', data, '--out', vis, '--limit', '2', '--tower', 'vision']);
    expect(r.code).toBe(0);
    const v = await readActivationStore(vis);
    expect(v.index).toMatchObject({ tower: 'vision', pool: 'image_mean', layers: 2, heads: 2, dim: 16 });
    expect(v.z.subarray(0, 64)).toEqual(v.z.subarray(64, 128));
  });

  it('draws a progress bar only on a terminal', () => {
    const writes: string[] = [];
    const tty = { isTTY: true, write: (s: string) => writes.push(s) } as unknown as NodeJS.WriteStream;
    const bar = collectProgressBar(tty, 2, 1);
    bar.update({ correct: true }, 3, 4);
    bar.update({ correct: false }, 4, 4);
    bar.done();
    expect(writes[0]).toMatch(/^\r\x1b\[Kcollect \[#{18}\.{6}\] 3\/4  acc 66\.7%  [\d.]+ q\/s  ETA \d+ s$/);
    expect(writes.at(-2)).toMatch(/4\/4  acc 50\.0%/);
    expect(writes.at(-1)).toBe('\r\x1b[K');
    const none: string[] = [];
    const pipe = { isTTY: false, write: (s: string) => none.push(s) } as unknown as NodeJS.WriteStream;
    const quiet = collectProgressBar(pipe);
    quiet.update({ correct: true }, 1, 1);
    quiet.done();
    expect(none).toEqual([]);
  });

  it('reports bad calls in one line: exit 2 for usage errors, 1 for runtime errors', () => {
    const base = ['collect', '--model', modelDir, '--data', data];
    const cases: [string[], number, RegExp][] = [
      [[...base, '--out', join(work, 'e1'), '--pool', 'bogus'], 2, /--pool: pool "bogus" is not one of/],
      [[...base, '--out', join(work, 'e2'), '--tower', 'vision', '--pool', 'last_prompt'], 2, /image_mean/],
      [[...base, '--out', join(work, 'e3'), '--context', 'maybe'], 2, /--context/],
      [[...base], 2, /--out/],
      [['collect', '--model', modelDir, '--data', join(work, 'nope.jsonl'), '--out', join(work, 'e4')], 2, /cannot read data file .*nope\.jsonl/],
      [[...base, '--out', data], 2, /is a file/],
      [[...base, '--out', join(work, 'e5'), '--intervene', join(work, 'missing.json')], 2, /cannot read intervention spec/],
      [[...base, '--out', join(work, 'e6'), '--limit', '0'], 2, /--limit/],
      [['collect', '--model', join(work, 'no-model'), '--data', data, '--out', join(work, 'e7')], 1, /model folder .* does not exist/],
    ];
    const badSpec = join(work, 'bad-spec.json');
    writeFileSync(badSpec, JSON.stringify({ head_scale: [{ layer: 9, head: 0, scale: 0 }] }));
    cases.push([[...base, '--out', join(work, 'e8'), '--intervene', badSpec], 2, /layer 9 does not exist/]);
    for (const [args, code, msg] of cases) {
      const r = vlmscope(args);
      expect(r.code, args.join(' ')).toBe(code);
      expect(r.stderr, args.join(' ')).toMatch(new RegExp(`^vlmscope: .*${msg.source}`));
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(r.stdout).toBe('');
    }
    expect(existsSync(join(work, 'e1'))).toBe(false);
  });
});
