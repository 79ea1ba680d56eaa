// `vlmscope trace` as a process: the golden checks through the CLI, and bad inputs that must fail with one
// clear line, a non-zero exit code and no output file.

import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { expectClose } from './helpers/gpu.js';
import { fixtureDir, golden } from './helpers/fixtures.js';
import { jsonWriter, vlmscope } from './helpers/cli.js';

const dir = fixtureDir('tiny-llava');
const g = golden('tiny-llava');
const flat = (a: unknown): number[] => (Array.isArray(a) ? a.flatMap(flat) : [a as number]);
const work = mkdtempSync(join(tmpdir(), 'vlmscope-cli-'));
const idsFile = join(work, 'ids.json');
writeFileSync(idsFile, JSON.stringify(g.input_ids));

const writeJson = jsonWriter(work);

function trace(extra: string[], model = dir, out = join(work, `out-${Math.random().toString(36).slice(2)}.json`)) {
  const r = vlmscope(['trace', '--model', model, '--image', join(dir, 'image.png'), '--ids', idsFile, '--out', out, ...extra]);
  return { ...r, out };
}

describe('vlmscope trace (process)', () => {
  it('documents itself in --help', () => {
    const r = vlmscope(['trace', '--help']);
    expect(r.code).toBe(0);
    for (const flag of ['--model', '--image', '--ids', '--intervene', '--capture', '--out', '--max-new-tokens']) expect(r.stdout).toContain(flag);
  });

  it('matches the golden logits, pattern, z and greedy tokens', () => {
    const capture = writeJson('capture.json', { logits: 'all', pattern: [{ tower: 'text', layer: 1 }], z: { positions: 'last' } });
    const r = trace(['--capture', capture, '--max-new-tokens', '6']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const o = JSON.parse(readFileSync(r.out, 'utf8'));
    expect(o.logits.shape).toEqual([29, 256]);
    expectClose(o.logits.data, flat(g.logits), 1e-3, 0, 'logits');
    expect(o.pattern[0]).toMatchObject({ tower: 'text', layer: 1, shape: [4, 29, 29] });
    expectClose(o.pattern[0].data, flat(g.attention_pattern_layer1), 1e-3, 0, 'pattern');
    expect(o.z.shape).toEqual([3, 4, 16]);
    expectClose(o.z.data, flat(g.z_last_position), 1e-3, 0, 'z');
    expect(o.tokens).toEqual(g.greedy_6);
  });

  for (const name of Object.keys(g.interventions)) {
    it(`intervention ${name} through --intervene`, () => {
      const c = g.interventions[name];
      const spec = writeJson(`${name}.json`, c.spec);
      const r = trace(['--intervene', spec, ...(c.greedy_6 ? ['--max-new-tokens', '6'] : [])]);
      expect(r.stderr).toBe('');
      const o = JSON.parse(readFileSync(r.out, 'utf8'));
      expect(o.logits.shape).toEqual([256]);
      expectClose(o.logits.data, c.last_logits, 1e-3, 0, name);
      if (c.greedy_6) expect(o.tokens).toEqual(c.greedy_6);
    });
  }

  it('a steer spec through --intervene changes the logits (mean_ablate / steer need no CLI flag of their own)', () => {
    const direction = Array.from({ length: 16 }, (_, i) => ((i % 5) - 2) * 0.4);
    const spec = writeJson('steer.json', { steer: [{ tower: 'text', layer: 1, head: 0, alpha: 2, sigma: 0.7, direction, queries: 'all' }] });
    const r = trace(['--intervene', spec]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const o = JSON.parse(readFileSync(r.out, 'utf8'));
    expect(o.logits.shape).toEqual([256]);
    const plainLast = flat(g.logits).slice(28 * 256);
    const diff = Math.max(...o.logits.data.map((x: number, i: number) => Math.abs(x - plainLast[i])));
    expect(diff).toBeGreaterThan(1e-3);
  });

  it('--dtype f32 converts the f16 weights on load and gives the same tokens', () => {
    const r = trace(['--dtype', 'f32', '--max-new-tokens', '6']);
    expect(r.stderr).toBe('');
    expect(JSON.parse(readFileSync(r.out, 'utf8')).tokens).toEqual(g.greedy_6);
  });

  it('writes .safetensors captures', () => {
    const capture = writeJson('capture-st.json', { logits: 'last', z: { positions: 'last' } });
    const out = join(work, 'trace.safetensors');
    const r = trace(['--capture', capture], dir, out);
    expect(r.code).toBe(0);
    const bytes = readFileSync(out);
    const n = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
    expect(header.logits).toMatchObject({ dtype: 'F32', shape: [256] });
    expect(header.z).toMatchObject({ dtype: 'F32', shape: [3, 4, 16] });
    const start = 8 + n + header.z.data_offsets[0];
    const z = new Float32Array(bytes.buffer.slice(bytes.byteOffset + start, bytes.byteOffset + start + 3 * 4 * 16 * 4));
    expectClose(z, flat(g.z_last_position), 1e-3, 0, 'z');
  });
});

/** A copy of the fixture folder whose safetensors file is rewritten by `edit`. */
function brokenModel(label: string, edit: (file: Buffer) => Buffer): string {
  const d = join(work, label);
  mkdirSync(d);
  for (const f of readdirSync(dir)) if (f !== 'golden.json') copyFileSync(join(dir, f), join(d, f));
  writeFileSync(join(d, 'model.safetensors'), edit(readFileSync(join(dir, 'model.safetensors'))));
  return d;
}

/** Rewrite the JSON header, keeping the data section as it is. */
function editHeader(edit: (h: Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>) => void) {
  return (file: Buffer) => {
    const n = Number(file.readBigUInt64LE(0));
    const h = JSON.parse(file.subarray(8, 8 + n).toString('utf8'));
    edit(h);
    const json = Buffer.from(JSON.stringify(h));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    return Buffer.concat([len, json, file.subarray(8 + n)]);
  };
}

describe('vlmscope trace refuses bad input', () => {
  const gate = 'language_model.model.layers.1.mlp.gate_proj.weight';
  const cases: [string, () => string[], RegExp][] = [
    ['truncated file', () => ['--model', brokenModel('truncated', (f) => f.subarray(0, f.length - 1000))], /model\.safetensors.*(truncated|past the end|end of the file)/i],
    ['header length past the end', () => ['--model', brokenModel('hdrlen', (f) => { const c = Buffer.from(f); c.writeBigUInt64LE(BigInt(f.length * 2), 0); return c; })], /model\.safetensors.*header/i],
    ['overlapping ranges', () => ['--model', brokenModel('overlap', editHeader((h) => { h[gate].data_offsets = h['language_model.model.layers.1.self_attn.o_proj.weight'].data_offsets.map((x) => x + 16); h[gate].data_offsets[1] = h[gate].data_offsets[0] + 128 * 64 * 2; }))], /overlap/i],
    ['unknown dtype', () => ['--model', brokenModel('dtype', editHeader((h) => { h[gate].dtype = 'Q9'; }))], new RegExp(`dtype.*Q9|Q9.*dtype`, 'i')],
    ['missing tensor', () => ['--model', brokenModel('missing', editHeader((h) => { delete h[gate]; }))], new RegExp(gate.replace(/\./g, '\\.'))],
    ['wrong shape', () => ['--model', brokenModel('shape', editHeader((h) => { h[gate].shape = [64, 128]; }))], new RegExp(`${gate.replace(/\./g, '\\.')}.*\\[64, 128\\].*\\[128, 64\\]`)],
    ['intervention on a layer that does not exist', () => ['--intervene', writeJson('bad-layer.json', { head_scale: [{ tower: 'text', layer: 7, head: 0, scale: 0 }] })], /layer 7 does not exist in the text tower/],
    ['intervention on a head that does not exist', () => ['--intervene', writeJson('bad-head.json', { head_scale: [{ tower: 'vision', layer: 0, head: 4, scale: 0 }] })], /head 4 does not exist in the vision tower/],
    ['steer direction of the wrong length', () => ['--intervene', writeJson('bad-steer.json', { steer: [{ layer: 0, head: 0, alpha: 1, sigma: 1, direction: new Array(12).fill(0.1) }] })], /steer\[0\]\.direction has 12 values, but text heads have 16 dims/],
    ['image temperature on a layer that does not exist', () => ['--intervene', writeJson('bad-temp.json', { image_temperature: { alpha: 2, layers: [3] } })], /image_temperature\.layers.*layer 3 does not exist/],
    ['ids file that is not a list of ids', () => ['--ids', writeJson('bad-ids.json', { ids: [1] })], /token ids file/],
    ['image that cannot be decoded', () => ['--image', writeJson('not-an-image.png', [1, 2, 3])], /not-an-image\.png/],
    ['empty max-new-tokens', () => ['--max-new-tokens', ''], /--max-new-tokens.*non-negative integer/],
    ['negative max-new-tokens', () => ['--max-new-tokens', '-2'], /--max-new-tokens.*non-negative integer/],
  ];
  for (const [name, args, message] of cases) {
    it(name, () => {
      const out = join(work, `bad-${name.replace(/\W+/g, '-')}.json`);
      const a = args();
      const base: Record<string, string> = { '--model': dir, '--image': join(dir, 'image.png'), '--ids': idsFile, '--out': out };
      for (let i = 0; i < a.length; i += 2) base[a[i]] = a[i + 1];
      const r = vlmscope(['trace', ...Object.entries(base).flat()]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(existsSync(out)).toBe(false);
    });
  }
});
