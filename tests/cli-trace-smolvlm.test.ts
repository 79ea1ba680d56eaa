// `vlmscope trace` as a process on the Idefics3 / SmolVLM golden fixture (tiny-smolvlm; see its README): all
// logits, the text layer-1 pattern, z at the last position, image features (tile by tile, global last), the text
// hidden states, the greedy tokens, every intervention case through --intervene (last logits, greedy tokens where
// the case has them), and the vision captures per tile: patterns and residuals name their image and tile (2 x 2
// crops row-major, then the global tile), residual sums per tile as the golden's. No "positions" (1-D rotary).
// .safetensors output names tiled captures per tile.

import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { expectClose } from './helpers/gpu.js';
import { fixtureDir, golden } from './helpers/fixtures.js';
import { jsonWriter, vlmscope } from './helpers/cli.js';

const flat = (a: unknown): number[] => (Array.isArray(a) ? a.flatMap(flat) : [a as number]);
const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);
const work = mkdtempSync(join(tmpdir(), 'vlmscope-cli-smolvlm-'));
const dir = fixtureDir('tiny-smolvlm');
const g = golden('tiny-smolvlm');
const L = g.prompt_len as number;
const V = 300;
const TILES = g.image.n_tiles as number; // 2 x 2 crops + the global tile
const PATCHES = 16; // 32-px tiles of 8-px patches
const E = 32; // vision hidden size

const writeJson = jsonWriter(work);

const idsFile = writeJson('ids.json', g.input_ids);
const trace = (extra: string[], out = join(work, `out-${Math.random().toString(36).slice(2)}.json`)) => {
  const r = vlmscope(['trace', '--model', dir, '--image', join(dir, 'image.png'), '--ids', idsFile, '--out', out, ...extra]);
  return { ...r, out };
};

interface VisionCapture {
  tower: string;
  layer: number;
  image?: number;
  tile?: number;
  heads?: number[];
  rows?: number[];
  shape: number[];
  data: number[];
}

describe('vlmscope trace on tiny-smolvlm (process)', () => {
  it('the fixture is what its README says', () => {
    expect(g.prompt_len).toBe(45);
    expect(g.input_ids).toHaveLength(45);
    expect([g.image.rows, g.image.cols, g.image.n_tiles]).toEqual([2, 2, 5]);
    expect(g.input_ids.filter((id: number) => id === 288)).toHaveLength(20);
    expect(g.special_tokens['<image>']).toBe(288);
    expect(g.special_tokens['<end_of_utterance>']).toBe(299);
    expect(JSON.parse(readFileSync(join(dir, 'processor_config.json'), 'utf8')).image_seq_len).toBe(4);
  });

  it('matches the golden logits, text pattern, z, image features, text states and greedy tokens; vision captures per tile', () => {
    const capture = writeJson('capture.json', {
      logits: 'all',
      pattern: [{ tower: 'text', layer: 1 }, { tower: 'vision', layer: 0 }, { tower: 'vision', layer: 2, heads: [1, 3], rows: [0, -1] }],
      z: { positions: 'last' },
      residual: [0, 1, 2, 3].flatMap((layer) => [{ tower: 'vision', layer }, { tower: 'text', layer }]),
      image_features: true,
    });
    const r = trace(['--capture', capture, '--max-new-tokens', '6']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const o = JSON.parse(readFileSync(r.out, 'utf8'));
    expect(Object.keys(o).sort()).toEqual(['image_features', 'logits', 'pattern', 'residual', 'tokens', 'z']);

    expect(o.logits.shape).toEqual([L, V]);
    expectClose(o.logits.data, flat(g.logits), 1e-3, 0, 'logits');
    const text = o.pattern.filter((p: VisionCapture) => p.tower === 'text');
    expect(text).toHaveLength(1);
    expect(text[0]).toMatchObject({ tower: 'text', layer: 1, heads: [0, 1, 2, 3], shape: [4, L, L] });
    expect('image' in text[0] || 'tile' in text[0]).toBe(false);
    expectClose(text[0].data, flat(g.attention_pattern_layer1), 1e-3, 0, 'attention_pattern_layer1');
    expect(o.z.shape).toEqual([3, 4, 16]);
    expectClose(o.z.data, flat(g.z_last_position), 1e-3, 0, 'z_last_position');
    expect(o.image_features.shape).toEqual([TILES * 4, 64]);
    expectClose(o.image_features.data, flat(g.image_features), 1e-3, 0, 'image_features');
    expect(o.tokens).toEqual(g.greedy_6);

    // Vision patterns: one per tile, each a softmax over its own tile's 16 patches.
    const vision: VisionCapture[] = o.pattern.filter((p: VisionCapture) => p.tower === 'vision');
    expect(vision.map((p) => [p.layer, p.image, p.tile])).toEqual([
      ...[0, 1, 2, 3, 4].map((t) => [0, 0, t]),
      ...[0, 1, 2, 3, 4].map((t) => [2, 0, t]),
    ]);
    for (const p of vision) {
      const [H, R] = p.layer === 0 ? [4, PATCHES] : [2, 2];
      expect(p).toMatchObject({ heads: p.layer === 0 ? [0, 1, 2, 3] : [1, 3], shape: [H, R, PATCHES] });
      expect(p.rows).toEqual(p.layer === 0 ? Array.from({ length: PATCHES }, (_, i) => i) : [0, PATCHES - 1]);
      for (let i = 0; i < H * R; i++) expect(Math.abs(sum(p.data.slice(i * PATCHES, (i + 1) * PATCHES)) - 1)).toBeLessThan(1e-5);
    }
    // Different tiles see different pixels.
    expect(vision[0].data).not.toEqual(vision[4].data);

    // Vision residuals (hidden_states 0..3, before post_layernorm): one per tile, sums as the golden's per tile.
    const vres: VisionCapture[] = o.residual.filter((p: VisionCapture) => p.tower === 'vision');
    expect(vres.map((p) => [p.layer, p.image, p.tile])).toEqual([0, 1, 2, 3].flatMap((l) => [0, 1, 2, 3, 4].map((t) => [l, 0, t])));
    for (let layer = 0; layer < 4; layer++) {
      const perTile = vres.filter((p) => p.layer === layer);
      for (const p of perTile) expect(p.shape).toEqual([PATCHES, E]);
      expectClose(perTile.map((p) => sum(p.data)), g.vision_hidden_states_sum_per_tile[layer], 1e-3, 1e-5, `vision_hidden_states_sum_per_tile[${layer}]`);
      expectClose([sum(perTile.map((p) => sum(p.data)))], [g.vision_hidden_states_sum[layer]], 1e-3, 1e-5, `vision_hidden_states_sum[${layer}]`);
    }
    // Text residuals: the merged input embeddings, then each decoder layer's output.
    const tres: VisionCapture[] = o.residual.filter((p: VisionCapture) => p.tower === 'text');
    expect(tres.map((p) => [p.layer, p.shape])).toEqual([0, 1, 2, 3].map((l) => [l, [L, 64]]));
    expect(tres.every((p) => !('image' in p) && !('tile' in p))).toBe(true);
    expectClose(tres.map((p) => sum(p.data)), g.text_hidden_states_sum, 1e-3, 1e-5, 'text_hidden_states_sum');
  });

  for (const c of Object.keys(g.interventions)) {
    it(`intervention ${c} through --intervene`, () => {
      const spec = g.interventions[c];
      const r = trace(['--intervene', writeJson(`${c}.json`, spec.spec), ...(spec.greedy_6 ? ['--max-new-tokens', '6'] : [])]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const o = JSON.parse(readFileSync(r.out, 'utf8'));
      expect(o.logits.shape).toEqual([V]);
      expectClose(o.logits.data, spec.last_logits, 1e-3, 0, c);
      if (spec.greedy_6) expect(o.tokens).toEqual(spec.greedy_6);
      else expect(o.tokens).toBeUndefined();
    });
  }

  it('the interventions change the run (image temperature on the last query moves the greedy tokens from the 4th on)', () => {
    const spec = g.interventions['image_temp_last_0.5'];
    expect(spec.greedy_6.slice(0, 3)).toEqual(g.greedy_6.slice(0, 3));
    expect(spec.greedy_6).not.toEqual(g.greedy_6);
  });

  it('writes .safetensors with one vision pattern and residual per tile, image and tile in the metadata', () => {
    const out = join(work, 'trace.safetensors');
    const capture = writeJson('capture-st.json', {
      logits: 'last',
      z: { positions: 'last' },
      pattern: [{ tower: 'text', layer: 1 }, { tower: 'vision', layer: 1 }],
      residual: [{ tower: 'vision', layer: 3 }],
    });
    const r = trace(['--capture', capture, '--max-new-tokens', '2'], out);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const bytes = readFileSync(out);
    const n = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
    const tensor = (name: string) => {
      const t = header[name];
      const start = 8 + n + t.data_offsets[0];
      return Array.from(new Float32Array(bytes.buffer.slice(bytes.byteOffset + start, bytes.byteOffset + 8 + n + t.data_offsets[1])));
    };
    const tiles = [0, 1, 2, 3, 4];
    expect(Object.keys(header).sort()).toEqual(
      ['__metadata__', 'logits', 'z', 'pattern.text.1', ...tiles.map((t) => `pattern.vision.1.tile${t}`), ...tiles.map((t) => `residual.vision.3.tile${t}`)].sort(),
    );
    expect(header.logits).toMatchObject({ dtype: 'F32', shape: [V] });
    expectClose(tensor('logits'), flat(g.logits).slice((L - 1) * V), 1e-3, 0, 'last logits');
    expectClose(tensor('z'), flat(g.z_last_position), 1e-3, 0, 'z');
    for (const t of tiles) {
      expect(header[`pattern.vision.1.tile${t}`]).toMatchObject({ dtype: 'F32', shape: [4, PATCHES, PATCHES] });
      expect(JSON.parse(header.__metadata__[`pattern.vision.1.tile${t}`])).toEqual({ heads: [0, 1, 2, 3], rows: Array.from({ length: PATCHES }, (_, i) => i), image: 0, tile: t });
      expect(header[`residual.vision.3.tile${t}`]).toMatchObject({ dtype: 'F32', shape: [PATCHES, E] });
      expectClose([sum(tensor(`residual.vision.3.tile${t}`))], [g.vision_hidden_states_sum_per_tile[3][t]], 1e-3, 1e-5, `residual tile ${t}`);
    }
    expect(JSON.parse(header.__metadata__['pattern.text.1'])).toEqual({ heads: [0, 1, 2, 3], rows: Array.from({ length: L }, (_, i) => i) });
    expect(JSON.parse(header.__metadata__.tokens)).toEqual(g.greedy_6.slice(0, 2));
    expect(header.__metadata__.positions).toBeUndefined();
  });

  it('vision captures on LLaVA name their image and keep their fields', () => {
    const llava = fixtureDir('tiny-llava');
    const out = join(work, 'llava.json');
    const ids = writeJson('llava-ids.json', golden('tiny-llava').input_ids);
    const capture = writeJson('llava-capture.json', { pattern: [{ tower: 'vision', layer: 0 }], residual: [{ tower: 'vision', layer: 1 }] });
    const r = vlmscope(['trace', '--model', llava, '--image', join(llava, 'image.png'), '--ids', ids, '--capture', capture, '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const o = JSON.parse(readFileSync(out, 'utf8'));
    expect(o.pattern).toHaveLength(1);
    expect(Object.keys(o.pattern[0]).sort()).toEqual(['data', 'heads', 'image', 'layer', 'rows', 'shape', 'tower']);
    expect(o.pattern[0]).toMatchObject({ tower: 'vision', layer: 0, image: 0 });
    expect(Object.keys(o.residual[0]).sort()).toEqual(['data', 'image', 'layer', 'shape', 'tower']);
  });
});
