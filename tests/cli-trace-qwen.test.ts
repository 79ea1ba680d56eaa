// `vlmscope trace` as a process on the Qwen2-VL and Qwen2.5-VL golden fixtures (tiny-qwen2vl, tiny-qwen25vl; see
// their READMEs): all logits, the text layer-1 pattern, the vision patterns (windowed and full blocks), image
// features, z at the last position, greedy tokens, the M-RoPE positions and rope delta, and every intervention
// case through --intervene; .safetensors output; LLaVA's output keeps its fields (no "positions").

import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { expectClose } from './helpers/gpu.js';
import { fixtureDir, golden } from './helpers/fixtures.js';
import { jsonWriter, vlmscope } from './helpers/cli.js';

const flat = (a: unknown): number[] => (Array.isArray(a) ? a.flatMap(flat) : [a as number]);
const work = mkdtempSync(join(tmpdir(), 'vlmscope-cli-qwen-'));

const writeJson = jsonWriter(work);

for (const name of ['tiny-qwen2vl', 'tiny-qwen25vl'] as const) {
  describe(`vlmscope trace on ${name} (process)`, () => {
    const dir = fixtureDir(name);
    const g = golden(name);
    const is25 = name === 'tiny-qwen25vl';
    const L = g.prompt_len as number;
    const V = 256;
    const idsFile = writeJson(`${name}-ids.json`, g.input_ids);
    const trace = (extra: string[], out = join(work, `${name}-${Math.random().toString(36).slice(2)}.json`)) => {
      const r = vlmscope(['trace', '--model', dir, '--image', join(dir, 'image.png'), '--ids', idsFile, '--out', out, ...extra]);
      return { ...r, out };
    };

    it('matches the golden logits, patterns, image features, z, greedy tokens and M-RoPE positions', () => {
      const capture = writeJson(`${name}-capture.json`, {
        logits: 'all',
        pattern: [{ tower: 'text', layer: 1 }, { tower: 'vision', layer: 0 }, ...(is25 ? [{ tower: 'vision', layer: 1 }] : [])],
        z: { positions: 'last' },
        image_features: true,
      });
      const r = trace(['--capture', capture, '--max-new-tokens', '6']);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const o = JSON.parse(readFileSync(r.out, 'utf8'));
      expect(Object.keys(o).sort()).toEqual(['image_features', 'logits', 'pattern', 'positions', 'tokens', 'z']);
      expect(o.logits.shape).toEqual([L, V]);
      expectClose(o.logits.data, flat(g.logits), 1e-3, 0, 'logits');

      const text = o.pattern.find((p: { tower: string }) => p.tower === 'text');
      expect(text).toMatchObject({ tower: 'text', layer: 1, heads: [0, 1, 2, 3], shape: [4, L, L] });
      expectClose(text.data, flat(g.attention_pattern_layer1), 1e-3, 0, 'attention_pattern_layer1');
      const vision = o.pattern.filter((p: { tower: string }) => p.tower === 'vision');
      const N = g.pixel_values.length;
      expect(vision.map((p: { layer: number; shape: number[] }) => [p.layer, p.shape])).toEqual(
        (is25 ? [0, 1] : [0]).map((l) => [l, [4, N, N]]),
      );
      expectClose(vision[0].data, flat(g.vision_attention_pattern_layer0), 1e-4, 0, 'vision_attention_pattern_layer0');
      if (is25) expectClose(vision[1].data, flat(g.vision_attention_pattern_layer1), 1e-4, 0, 'vision_attention_pattern_layer1');

      expect(o.image_features.shape).toEqual([g.image_features.length, 64]);
      expectClose(o.image_features.data, flat(g.image_features), 1e-3, 0, 'image_features');
      expect(o.z.shape).toEqual([3, 4, 16]);
      expectClose(o.z.data, flat(g.z_last_position), 1e-3, 0, 'z_last_position');
      expect(o.tokens).toEqual(g.greedy_6);

      expect(o.positions).toEqual({ shape: [3, L], data: flat(g.position_ids), rope_delta: g.rope_deltas });
    });

    for (const c of Object.keys(g.interventions)) {
      it(`intervention ${c} through --intervene`, () => {
        const spec = g.interventions[c];
        const r = trace(['--intervene', writeJson(`${name}-${c}.json`, spec.spec), ...(spec.greedy_6 ? ['--max-new-tokens', '6'] : [])]);
        expect(r.stderr).toBe('');
        expect(r.code).toBe(0);
        const o = JSON.parse(readFileSync(r.out, 'utf8'));
        expect(o.logits.shape).toEqual([V]);
        expectClose(o.logits.data, spec.last_logits, 1e-3, 0, c);
        if (spec.greedy_6) expect(o.tokens).toEqual(spec.greedy_6);
        else expect(o.tokens).toBeUndefined();
      });
    }

    it('writes .safetensors with the positions in the metadata', () => {
      const out = join(work, `${name}.safetensors`);
      const r = trace(['--capture', writeJson(`${name}-capture-st.json`, { logits: 'last', z: { positions: 'last' } }), '--max-new-tokens', '2'], out);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const bytes = readFileSync(out);
      const n = Number(bytes.readBigUInt64LE(0));
      const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
      expect(header.logits).toMatchObject({ dtype: 'F32', shape: [V] });
      expect(header.z).toMatchObject({ dtype: 'F32', shape: [3, 4, 16] });
      const start = 8 + n + header.z.data_offsets[0];
      const z = new Float32Array(bytes.buffer.slice(bytes.byteOffset + start, bytes.byteOffset + start + 3 * 4 * 16 * 4));
      expectClose(z, flat(g.z_last_position), 1e-3, 0, 'z');
      expect(JSON.parse(header.__metadata__.tokens)).toEqual(g.greedy_6.slice(0, 2));
      expect(JSON.parse(header.__metadata__.positions)).toEqual({ shape: [3, L], data: flat(g.position_ids), rope_delta: g.rope_deltas });
    });
  });
}

describe('vlmscope trace output on LLaVA is unchanged', () => {
  it('has no "positions" (1-D rotary) and only the captured keys', () => {
    const dir = fixtureDir('tiny-llava');
    const ids = writeJson('llava-ids.json', golden('tiny-llava').input_ids);
    const out = join(work, 'llava.json');
    const r = vlmscope(['trace', '--model', dir, '--image', join(dir, 'image.png'), '--ids', ids, '--out', out, '--max-new-tokens', '2']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(Object.keys(JSON.parse(readFileSync(out, 'utf8')))).toEqual(['logits', 'tokens']);
  });
});
