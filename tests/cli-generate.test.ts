// `vlmscope generate` as a process on the shipped checkpoint (weights/tiny-llava, real tokenizer.json): greedy
// output deterministic and equal to the library's generate(), seeded sampling reproducible, stop strings,
// --json fields, and bad arguments / a missing model folder failing with one line and the right exit code.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { LlavaModel } from '../src/models/llava.js';
import { LlavaProcessor } from '../src/models/llava-processor.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { nodeFolder } from '../src/io/checkpoint.js';
import { loadImageFile } from '../src/io/image.js';
import { parseInterventions } from '../src/spec/spec.js';
import { generate, type GenerateArgs, type GenerateResult } from '../src/generate/generate.js';
import { gpuContext } from './helpers/gpu.js';
import { REPO_ROOT, fixtureDir } from './helpers/fixtures.js';

const modelDir = join(REPO_ROOT, 'weights/tiny-llava');
const image = join(fixtureDir('tiny-llava'), 'image.png');
const prompt = 'What is in the image?';
const MAX = 24;
const work = mkdtempSync(join(tmpdir(), 'vlmscope-generate-'));

function vlmscope(args: string[]) {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'bin/vlmscope.js'), ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const base = (extra: string[] = []) => ['generate', '--model', modelDir, '--image', image, '--prompt', prompt, '--max-new-tokens', String(MAX), ...extra];

function runJson(extra: string[] = []) {
  const r = vlmscope(base([...extra, '--json']));
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  const lines = r.stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]);
}

describe('vlmscope generate (process) on weights/tiny-llava', () => {
  let model: LlavaModel;
  let tokenizer: Tokenizer;
  let input: Pick<GenerateArgs, 'ids' | 'pixelValues'>;
  let greedy: GenerateResult;
  let greedyChunks: string[];
  const lib = (extra: Partial<GenerateArgs> = {}) => generate(model, { ...input, maxNewTokens: MAX, tokenizer, ...extra });

  beforeAll(async () => {
    const ctx = await gpuContext();
    model = await LlavaModel.load(ctx, modelDir);
    tokenizer = await Tokenizer.fromFolder(nodeFolder(modelDir));
    const processor = new LlavaProcessor(tokenizer, model.cfg, model.imageProcessor);
    const { ids, pixelValues } = processor.process(processor.formatPrompt(prompt, 1), [await loadImageFile(image)]);
    input = { ids, pixelValues };
    greedyChunks = [];
    greedy = await lib({ onText: (c) => greedyChunks.push(c) });
  });

  it('documents itself, with examples', () => {
    const top = vlmscope(['--help']);
    expect(top.code).toBe(0);
    expect(top.stdout).toMatch(/generate/);
    expect(top.stdout).toMatch(/Examples:[\s\S]*vlmscope generate --model/);
    const r = vlmscope(['generate', '--help']);
    expect(r.code).toBe(0);
    for (const flag of ['--model', '--image', '--prompt', '--max-new-tokens', '--temperature', '--top-k', '--top-p', '--repetition-penalty', '--seed', '--stop', '--intervene', '--json', '--verbose']) {
      expect(r.stdout).toContain(flag);
    }
    expect(r.stdout).toMatch(/Examples:[\s\S]*vlmscope generate --model/);
    expect(vlmscope(['trace', '--help']).stdout).toMatch(/Example[\s\S]*vlmscope trace --model/);
  });

  it('the library streams the text it returns', () => {
    expect(greedy.tokenIds.length).toBeGreaterThan(0);
    expect(greedy.text.length).toBeGreaterThan(0);
    expect(greedyChunks.join('')).toBe(greedy.text);
    expect(greedyChunks.length).toBeGreaterThan(1);
    expect(greedy.text).toBe(tokenizer.decode(greedy.tokenIds, { skipSpecialTokens: true }));
  });

  it('greedy output is deterministic and equal to the library API', () => {
    const a = vlmscope(base());
    const b = vlmscope(base());
    expect(a.stderr).toBe('');
    expect(a.code).toBe(0);
    expect(b.stdout).toBe(a.stdout);
    expect(a.stdout).toBe(`${greedy.text}\n`);
  });

  it('--json prints text, token ids, prompt length, stop reason and timings', () => {
    const o = runJson();
    expect(Object.keys(o).sort()).toEqual(['prompt_tokens', 'stopped_by', 'text', 'timings', 'token_ids']);
    expect(o.text).toBe(greedy.text);
    expect(o.token_ids).toEqual(greedy.tokenIds);
    expect(o.prompt_tokens).toBe(input.ids.length);
    expect(o.stopped_by).toBe(greedy.stoppedBy);
    expect(['eos', 'max_tokens']).toContain(o.stopped_by);
    if (o.stopped_by === 'max_tokens') expect(o.token_ids).toHaveLength(MAX);
    for (const k of ['prefill_ms', 'decode_ms', 'decode_steps', 'tokens_per_second']) {
      expect(typeof o.timings[k]).toBe('number');
      expect(o.timings[k]).toBeGreaterThanOrEqual(0);
    }
    expect(o.timings.prefill_ms).toBeGreaterThan(0);
  });

  it('seeded sampling is reproducible, differs between seeds, and matches the library', async () => {
    const flags = ['--temperature', '1.0', '--top-k', '50', '--top-p', '0.95'];
    const a = runJson([...flags, '--seed', '7']);
    const b = runJson([...flags, '--seed', '7']);
    const c = runJson([...flags, '--seed', '8']);
    expect(b.token_ids).toEqual(a.token_ids);
    expect(b.text).toBe(a.text);
    expect(c.token_ids).not.toEqual(a.token_ids);
    const l = await lib({ sampling: { temperature: 1, topK: 50, topP: 0.95, seed: 7 } });
    expect(l.tokenIds).toEqual(a.token_ids);
    expect(l.text).toBe(a.text);
  });

  it('--stop ends the output before the stop string', async () => {
    const text = greedy.text;
    const k = Math.floor(text.length / 2);
    const stop = text.slice(k, k + 2);
    expect(stop.length).toBe(2);
    const expected = text.slice(0, text.indexOf(stop));
    const plain = vlmscope(base(['--stop', stop]));
    expect(plain.code).toBe(0);
    expect(plain.stdout).toBe(`${expected}\n`);
    const o = runJson(['--stop', stop, '--stop', 'never-appears-anywhere']);
    expect(o.stopped_by).toBe('stop_string');
    expect(o.text).toBe(expected);
    expect(o.token_ids.length).toBeLessThan(greedy.tokenIds.length);
    expect(o.token_ids).toEqual(greedy.tokenIds.slice(0, o.token_ids.length));
    // The tokens kept are exactly those up to the first one whose text completes the stop string.
    expect(tokenizer.decode(o.token_ids, { skipSpecialTokens: true })).toContain(stop);
    expect(tokenizer.decode(o.token_ids.slice(0, -1), { skipSpecialTokens: true })).not.toContain(stop);
    // The library streams the same cut text.
    const chunks: string[] = [];
    const l = await lib({ stopStrings: [stop], onText: (c) => chunks.push(c) });
    expect(l.text).toBe(expected);
    expect(chunks.join('')).toBe(expected);
  });

  it('an EOS token ends generation and is left out', async () => {
    const eos = greedy.tokenIds[Math.min(3, greedy.tokenIds.length - 1)];
    const r = await lib({ eosTokenIds: [eos] });
    const first = greedy.tokenIds.indexOf(eos);
    expect(r.stoppedBy).toBe('eos');
    expect(r.tokenIds).toEqual(greedy.tokenIds.slice(0, first));
  });

  it('the repetition penalty (CPU path) and --intervene give what the library gives', async () => {
    const p = runJson(['--repetition-penalty', '1.3']);
    expect(p.token_ids).toEqual((await lib({ sampling: { repetitionPenalty: 1.3 } })).tokenIds);
    const json = { head_scale: [{ tower: 'text', layer: 0, head: 0, scale: 0 }, { tower: 'text', layer: 1, head: 2, scale: 0 }] };
    const spec = join(work, 'ablate.json');
    writeFileSync(spec, JSON.stringify(json));
    const v = runJson(['--intervene', spec]);
    expect(v.token_ids).toEqual((await lib({ interventions: parseInterventions(json, model.dims) })).tokenIds);
  });

  const usage: [string, string[], RegExp][] = [
    ['top-p above 1', ['--top-p', '1.5'], /top_p must be in \(0, 1\]/],
    ['negative temperature', ['--temperature', '-1'], /temperature must be a number >= 0/],
    ['top-k 0', ['--top-k', '0'], /top_k must be an integer >= 1/],
    ['non-numeric top-k', ['--top-k', 'many'], /--top-k.*expected a number/],
    ['zero repetition penalty', ['--repetition-penalty', '0'], /repetition_penalty must be a number > 0/],
    ['negative max-new-tokens', ['--max-new-tokens', '-3'], /--max-new-tokens.*non-negative integer/],
    ['unknown option', ['--temprature', '1'], /unknown option '--temprature'/],
    ['empty stop string', ['--stop', ''], /--stop needs a non-empty string/],
    ['missing intervention file', ['--intervene', join(work, 'nope.json')], /cannot read intervention spec .*nope\.json/],
  ];
  for (const [name, extra, message] of usage) {
    it(`usage error: ${name} -> exit 2, one line`, () => {
      const r = vlmscope(base(extra));
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    });
  }

  it('usage error: missing --prompt -> exit 2, one line', () => {
    const r = vlmscope(['generate', '--model', modelDir, '--image', image]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--prompt/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('a missing model folder -> exit 1, one line (stack only with --verbose)', () => {
    const missing = join(work, 'no-such-model');
    const r = vlmscope(['generate', '--model', missing, '--image', image, '--prompt', prompt]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/no-such-model.*does not exist/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    const v = vlmscope(['generate', '--model', missing, '--image', image, '--prompt', prompt, '--verbose']);
    expect(v.code).toBe(1);
    expect(v.stderr.trim().split('\n').length).toBeGreaterThan(1);
    expect(v.stderr).toMatch(/\n\s+at /);
  });
});
