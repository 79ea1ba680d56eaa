// Bad input for Idefics3 / SmolVLM folders through the CLI: each fails with one line on stderr, a non-zero exit code
// and no output file. An image whose tile layout does not match the prompt's <image> tokens, a scale_factor that
// does not divide a tile's patch grid, an image_seq_len that is missing and cannot be derived, or that disagrees
// with config.json, an unsupported model_type (the message lists idefics3 and smolvlm), and an image whose tiles do
// not fit the memory budget (a preprocessor_config.json with a large size.longest_edge: many tiles), on trace and
// generate. A missing image_seq_len that can be derived, and model_type smolvlm, run as the golden.

import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { encodePng } from '../src/io/image.js';
import { idefics3Grid, idefics3Stage1Size, resizeForVisionEncoderSize } from '../src/models/idefics3/image-processor.js';
import { expectClose } from './helpers/gpu.js';
import { fixtureDir, golden } from './helpers/fixtures.js';
import { type CliResult, jsonWriter, vlmscope } from './helpers/cli.js';
import { writeTinySmolVlmFolder } from './helpers/tiny-smolvlm-folder.js';

const work = mkdtempSync(join(tmpdir(), 'vlmscope-cli-smolvlm-errors-'));
const fixture = fixtureDir('tiny-smolvlm');
const g = golden('tiny-smolvlm');
const IMAGE = 288;
const FAKE = 287;
const GLOBAL = 250;

const writeJson = jsonWriter(work);

type Edit = (c: Record<string, unknown>) => void;

/** A copy of the tiny-smolvlm fixture with config.json / processor_config.json / preprocessor_config.json edited (null: removed). */
function editedFixture(label: string, edit: { config?: Edit; processor?: Edit | null; preprocessor?: Edit }): string {
  const d = join(work, label);
  mkdirSync(d);
  for (const f of readdirSync(fixture)) {
    if (f === 'golden.json' || (f === 'processor_config.json' && edit.processor === null)) continue;
    copyFileSync(join(fixture, f), join(d, f));
    chmodSync(join(d, f), 0o644);
  }
  for (const [file, fn] of [['config.json', edit.config], ['processor_config.json', edit.processor], ['preprocessor_config.json', edit.preprocessor]] as const) {
    if (!fn) continue;
    const c = JSON.parse(readFileSync(join(d, file), 'utf8'));
    fn(c);
    writeFileSync(join(d, file), JSON.stringify(c));
  }
  return d;
}

/** A deterministic RGB image of w x h as PNG. */
function png(name: string, w: number, h: number): string {
  const data = new Uint8Array(w * h * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37 + (i >> 7)) & 255;
  const p = join(work, name);
  writeFileSync(p, encodePng({ width: w, height: h, data }));
  return p;
}

/** Tiles an image of w x h makes with 32-px tiles and the given longest edge (crops + the global tile). */
function tilesFor(w: number, h: number, longestEdge: number): { rows: number; cols: number; tiles: number } {
  const [h1, w1] = idefics3Stage1Size(h, w, { size: { longestEdge } });
  const [h2, w2] = resizeForVisionEncoderSize(h1, w1, 32);
  const { rows, cols } = idefics3Grid(h2, w2, 32);
  return { rows, cols, tiles: rows * cols + 1 };
}

/** The golden prompt with its image block (first to last <fake_token_around_image>) replaced by `n` <image> tokens. */
function idsWithImageTokens(n: number): number[] {
  const ids: number[] = g.input_ids;
  const a = ids.indexOf(FAKE);
  const b = ids.lastIndexOf(FAKE);
  return [...ids.slice(0, a), FAKE, GLOBAL, ...new Array<number>(n).fill(IMAGE), FAKE, ...ids.slice(b + 1)];
}

function expectOneLineFailure(r: CliResult, message: RegExp, out?: string, code = 1) {
  expect(r.stderr).toMatch(message);
  expect(r.stderr).toMatch(/^vlmscope: /);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  expect(r.code).toBe(code);
  expect(r.stdout).toBe('');
  if (out) expect(existsSync(out)).toBe(false);
}

describe('vlmscope trace refuses bad Idefics3 / SmolVLM input with one line', () => {
  const idsFile = writeJson('ids.json', g.input_ids);
  const trace = (model: string, extra: string[] = [], ids = idsFile, image = join(fixture, 'image.png')) => {
    const out = join(work, `out-${Math.random().toString(36).slice(2)}.json`);
    return { ...vlmscope(['trace', '--model', model, '--image', image, '--ids', ids, '--out', out, ...extra]), out };
  };

  it("an image whose tile layout does not match the prompt's <image> tokens", () => {
    // The golden ids are for 2 x 2 crops + the global tile (20 <image>); a 200 x 40 image makes 1 x 2 crops + global.
    expect(tilesFor(200, 40, 64)).toEqual({ rows: 1, cols: 2, tiles: 3 });
    const r = trace(fixture, [], idsFile, png('wide.png', 200, 40));
    expectOneLineFailure(r, /the prompt has 20 image tokens \(id 288\) but 1 image\(s\) give 12 features \(12\); image 0: 1x2 crops \+ the global tile = 3 tiles/, r.out);
  });

  it('an image small enough for one tile (no split) against the 2 x 2 prompt', () => {
    const d = editedFixture('no-split', { preprocessor: (c) => (c.do_image_splitting = false) });
    const r = trace(d);
    expectOneLineFailure(r, /the prompt has 20 image tokens \(id 288\) but 1 image\(s\) give 4 features \(4\); image 0: one tile = 1 tiles/, r.out);
  });

  it('a prompt with <image> tokens and no --image', () => {
    const out = join(work, 'no-image.json');
    const r = vlmscope(['trace', '--model', fixture, '--ids', idsFile, '--out', out]);
    expectOneLineFailure(r, /the prompt has 20 image tokens \(id 288\) but 0 image\(s\)/, out);
  });

  it('a scale_factor that does not divide the patch grid of a tile', () => {
    const d = editedFixture('scale-3', { config: (c) => (c.scale_factor = 3) });
    const r = trace(d);
    expectOneLineFailure(r, /scale-3\/config\.json: "scale_factor" \(3\) must divide the patch grid of a tile \(vision_config image_size 32 \/ patch_size 8 = 4\)/, r.out);
  });

  it('a missing image_seq_len that cannot be derived (image_size not a multiple of patch_size)', () => {
    const d = editedFixture('no-seq-len', {
      processor: (c) => delete c.image_seq_len,
      config: (c) => ((c.vision_config as Record<string, unknown>).image_size = 36),
    });
    const r = trace(d);
    expectOneLineFailure(
      r,
      /no-seq-len\/processor_config\.json: "image_seq_len" is missing and cannot be derived: config\.json vision_config image_size 36 is not a multiple of patch_size 8/,
      r.out,
    );
    // Without processor_config.json at all, likewise.
    const d2 = editedFixture('no-processor-config', { processor: null, config: (c) => ((c.vision_config as Record<string, unknown>).image_size = 36) });
    const r2 = trace(d2);
    expectOneLineFailure(r2, /no-processor-config\/processor_config\.json: "image_seq_len" is not given and cannot be derived: .*image_size 36 is not a multiple of patch_size 8/, r2.out);
  });

  it('an image_seq_len that disagrees with config.json', () => {
    const d = editedFixture('seq-len-9', { processor: (c) => (c.image_seq_len = 9) });
    const r = trace(d);
    expectOneLineFailure(r, /seq-len-9\/processor_config\.json: "image_seq_len" \(9\) disagrees with config\.json: a 32px tile of 8px patches pixel-shuffled by 2 makes 4 tokens/, r.out);
  });

  it('an unsupported model_type names it and the supported ones, idefics3 and smolvlm among them', () => {
    const d = editedFixture('mllama', { config: (c) => (c.model_type = 'mllama') });
    const r = trace(d);
    expectOneLineFailure(r, /mllama\/config\.json: model_type "mllama" is not supported \(supported: llava, qwen2_vl, qwen2_5_vl, idefics3, smolvlm\)/, r.out);
    const d2 = editedFixture('no-type', { config: (c) => delete c.model_type });
    const r2 = trace(d2);
    expectOneLineFailure(r2, /no-type\/config\.json: "model_type" is missing \(supported: llava, qwen2_vl, qwen2_5_vl, idefics3, smolvlm\)/, r2.out);
  });

  it('a derivable image_seq_len (none in processor_config.json, or no such file) and model_type smolvlm run as the golden', () => {
    for (const d of [
      editedFixture('derived-seq-len', { processor: (c) => delete c.image_seq_len }),
      editedFixture('derived-no-file', { processor: null }),
      editedFixture('smolvlm-type', { config: (c) => (c.model_type = 'smolvlm') }),
    ]) {
      const r = trace(d, ['--max-new-tokens', '6']);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const o = JSON.parse(readFileSync(r.out, 'utf8'));
      expectClose(o.logits.data, (g.logits as number[][])[g.prompt_len - 1], 1e-3, 0, d);
      expect(o.tokens).toEqual(g.greedy_6);
    }
  });

  describe('an image whose tiles do not fit the memory budget', () => {
    // size.longest_edge 512 keeps a 2000 x 1500 image at 512 x 384: 16 x 12 crops + the global tile, 193 tiles of
    // 16 patches = 3088 vision tokens and 772 <image> tokens.
    let model: string;
    let big: string;
    let ids: string;
    let tiles: number;
    beforeAll(() => {
      model = editedFixture('longest-512', {
        preprocessor: (c) => (c.size = { longest_edge: 512 }),
        config: (c) => ((c.text_config as Record<string, unknown>).max_position_embeddings = 512),
      });
      big = png('big.png', 2000, 1500);
      const t = tilesFor(2000, 1500, 512);
      expect([t.rows, t.cols]).toEqual([12, 16]);
      tiles = t.tiles;
      ids = writeJson('big-ids.json', idsWithImageTokens(tiles * 4));
    });

    it('is refused before the run with the numbers (trace --memory-budget)', () => {
      const r = trace(model, ['--memory-budget', '8MiB'], ids, big);
      expectOneLineFailure(
        r,
        new RegExp(
          `the image\\(s\\) make ${tiles * 16} vision tokens whose vision pass needs [\\d.]+ MiB of GPU memory; with weights [\\d.]+ KiB and KV cache [\\d.]+ (KiB|MiB) ` +
            `that exceeds the given memory budget \\(8\\.0 MiB\\); use a smaller image or a lower size\\.longest_edge in preprocessor_config\\.json \\(fewer tiles\\)`,
        ),
        r.out,
      );
    });

    it('the same image within a budget that fits gets past the check (it fails later only on the context length)', () => {
      const r = trace(model, ['--memory-budget', '2GiB'], ids, big);
      expect(r.stderr).not.toMatch(/memory/);
      expect(r.code).not.toBe(0); // 772 + 25 tokens > max_position_embeddings 512 of this copy
      expect(r.stderr).toMatch(/max_position_embeddings \(512\)/);
    });

    it('a model that does not fit the budget at all is refused at load', () => {
      const r = trace(fixture, ['--memory-budget', '100KiB']);
      expectOneLineFailure(r, /needs [\d.]+ MiB of GPU memory \(weights .*\) but the given memory budget is 100\.0 KiB/, r.out);
    });
  });
});

describe('vlmscope generate refuses an image whose tiles do not fit the memory budget', () => {
  it('with --memory-budget, before running, on a SmolVLM folder with a large size.longest_edge', async () => {
    const folder = await writeTinySmolVlmFolder(join(work, 'gen-longest'), { longestEdge: 512 });
    const big = png('big-gen.png', 1600, 1200);
    const t = tilesFor(1600, 1200, 512);
    expect(t.tiles).toBe(12 * 16 + 1);
    const r = vlmscope(['generate', '--model', folder.dir, '--image', big, '--prompt', 'Where is the circle?', '--memory-budget', '8MiB']);
    expectOneLineFailure(r, new RegExp(`the image\\(s\\) make ${t.tiles * 16} vision tokens whose vision pass needs .* exceeds the given memory budget \\(8\\.0 MiB\\); use a smaller image or a lower size\\.longest_edge`));
  });
});
