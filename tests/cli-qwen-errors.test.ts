// Bad input for Qwen folders through the CLI: each fails with one line on stderr, a non-zero exit code and no
// output file. An unsupported model_type, a Qwen config missing a required key, an image whose patches do not
// match the prompt's <|image_pad|> tokens, an image that does not fit the memory budget after resizing (the run-time
// check, with --memory-budget on trace and generate), and a model that does not fit it at all.

import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { encodePng } from '../src/io/image.js';
import { smartResize } from '../src/models/qwen2-vl/image-processor.js';
import { fixtureDir, golden } from './helpers/fixtures.js';
import { jsonWriter, vlmscope } from './helpers/cli.js';
import { writeTinyQwenFolder } from './helpers/tiny-qwen-folder.js';

const work = mkdtempSync(join(tmpdir(), 'vlmscope-cli-qwen-errors-'));
const fixture = fixtureDir('tiny-qwen25vl');
const g = golden('tiny-qwen25vl');
const IMAGE_PAD = 251;

const writeJson = jsonWriter(work);

/** A copy of the tiny-qwen25vl fixture with config.json / preprocessor_config.json edited. */
function editedFixture(label: string, edit: { config?: (c: Record<string, unknown>) => void; preprocessor?: (c: Record<string, unknown>) => void }): string {
  const d = join(work, label);
  mkdirSync(d);
  for (const f of readdirSync(fixture)) {
    if (f === 'golden.json') continue;
    copyFileSync(join(fixture, f), join(d, f));
    chmodSync(join(d, f), 0o644);
  }
  for (const [file, fn] of [['config.json', edit.config], ['preprocessor_config.json', edit.preprocessor]] as const) {
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

/** The golden prompt with its <|image_pad|> run replaced by `n` pads (what an image of n merged tokens needs). */
function idsWithPads(n: number): number[] {
  const ids: number[] = g.input_ids;
  const a = ids.indexOf(IMAGE_PAD);
  const b = ids.lastIndexOf(IMAGE_PAD);
  return [...ids.slice(0, a), ...new Array<number>(n).fill(IMAGE_PAD), ...ids.slice(b + 1)];
}

function expectOneLineFailure(r: ReturnType<typeof vlmscope>, message: RegExp, out?: string, code = 1) {
  expect(r.stderr).toMatch(message);
  expect(r.stderr).toMatch(/^vlmscope: /);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  expect(r.code).toBe(code);
  expect(r.stdout).toBe('');
  if (out) expect(existsSync(out)).toBe(false);
}

describe('vlmscope trace refuses bad Qwen input with one line', () => {
  const idsFile = writeJson('ids.json', g.input_ids);
  const trace = (model: string, extra: string[] = [], ids = idsFile, image = join(fixture, 'image.png')) => {
    const out = join(work, `out-${Math.random().toString(36).slice(2)}.json`);
    return { ...vlmscope(['trace', '--model', model, '--image', image, '--ids', ids, '--out', out, ...extra]), out };
  };

  it('an unsupported model_type names it and the supported ones', () => {
    const d = editedFixture('mllama', { config: (c) => (c.model_type = 'mllama') });
    const r = trace(d);
    expectOneLineFailure(r, /mllama\/config\.json: model_type "mllama" is not supported \(supported: llava, qwen2_vl, qwen2_5_vl, idefics3, smolvlm\)/, r.out);
  });

  it('a missing model_type says so', () => {
    const d = editedFixture('no-type', { config: (c) => delete c.model_type });
    const r = trace(d);
    expectOneLineFailure(r, /config\.json: "model_type" is missing \(supported: llava, qwen2_vl, qwen2_5_vl, idefics3, smolvlm\)/, r.out);
  });

  it('a Qwen config without num_hidden_layers', () => {
    const d = editedFixture('no-layers', { config: (c) => delete c.num_hidden_layers });
    const r = trace(d);
    expectOneLineFailure(r, /no-layers\/config\.json: "num_hidden_layers" is missing/, r.out);
  });

  it('a Qwen config without mrope_section', () => {
    const d = editedFixture('no-mrope', { config: (c) => delete (c.rope_scaling as Record<string, unknown>).mrope_section });
    const r = trace(d);
    expectOneLineFailure(r, /no-mrope\/config\.json: .*mrope_section/, r.out);
  });

  it("an image whose patches do not match the prompt's <|image_pad|> tokens", () => {
    // tiny-qwen2vl's 150x100 image resizes to 112x140 here (max_pixels 12845056): 4 x 5 merged tokens, not 12.
    const r = trace(fixture, [], idsFile, join(fixtureDir('tiny-qwen2vl'), 'image.png'));
    expectOneLineFailure(r, /the prompt has 12 image tokens \(id 251\) but 1 image\(s\) give 20 features/, r.out);
  });

  it('a prompt with <|image_pad|> tokens and no --image', () => {
    const out = join(work, 'no-image.json');
    const r = vlmscope(['trace', '--model', fixture, '--ids', idsFile, '--out', out]);
    expectOneLineFailure(r, /the prompt has 12 image tokens \(id 251\) but 0 image\(s\)/, out);
  });

  describe('an image that does not fit the memory budget after resizing', () => {
    // A huge max_pixels keeps a 2000x1500 image at about its size: 1988x1512 -> 142 x 108 = 15336 patches, 3834
    // image tokens.
    let big: string;
    let model: string;
    let ids: string;
    let patches: number;
    beforeAll(() => {
      model = editedFixture('huge-max-pixels', {
        preprocessor: (c) => {
          c.max_pixels = 1e9;
          c.size = { shortest_edge: 3136, longest_edge: 1e9 };
        },
      });
      big = png('big.png', 2000, 1500);
      const { height, width } = smartResize(1500, 2000, 28, 3136, 1e9);
      patches = (height / 14) * (width / 14);
      ids = writeJson('big-ids.json', idsWithPads(patches / 4));
    });

    it('is refused before the run with the numbers (trace --memory-budget)', () => {
      const r = trace(model, ['--memory-budget', '16MiB'], ids, big);
      expectOneLineFailure(
        r,
        new RegExp(
          `the image\\(s\\) make ${patches} vision tokens whose vision pass needs [\\d.]+ MiB of GPU memory; with weights [\\d.]+ KiB and KV cache [\\d.]+ (KiB|MiB) ` +
            `that exceeds the given memory budget \\(16\\.0 MiB\\); use a smaller image or lower max_pixels`,
        ),
        r.out,
      );
    });

    it('the same image within a budget that fits gets past the check (it fails later only on the context length)', () => {
      const r = trace(model, ['--memory-budget', '2GiB'], ids, big);
      expect(r.stderr).not.toMatch(/memory/);
      expect(r.code).not.toBe(0); // 3834 + 13 tokens > max_position_embeddings 512 of this fixture
      expect(r.stderr).toMatch(/max_position_embeddings \(512\)/);
    });
  });

  it('a model that does not fit the budget at all is refused at load', () => {
    const r = trace(fixture, ['--memory-budget', '100KiB']);
    expectOneLineFailure(r, /needs [\d.]+ MiB of GPU memory \(weights .*\) but the given memory budget is 100\.0 KiB/, r.out);
  });

  for (const bad of ['abc', '0', '-5', '12XB']) {
    it(`--memory-budget ${bad} is a usage error`, () => {
      const r = trace(fixture, ['--memory-budget', bad]);
      expectOneLineFailure(r, /--memory-budget.*expected a byte count/, r.out, 2);
    });
  }
});

describe('vlmscope generate refuses an image that does not fit the memory budget', () => {
  it('with --memory-budget, before running, on a Qwen2.5-VL folder with a huge max_pixels', async () => {
    const folder = await writeTinyQwenFolder(join(work, 'gen-huge'), { maxPixels: 1e9 });
    const big = png('big-gen.png', 1600, 1200);
    const { height, width } = smartResize(1200, 1600, 28, 3136, 1e9);
    const r = vlmscope(['generate', '--model', folder.dir, '--image', big, '--prompt', 'Where is the circle?', '--memory-budget', '24MiB']);
    expectOneLineFailure(r, new RegExp(`the image\\(s\\) make ${(height / 14) * (width / 14)} vision tokens whose vision pass needs .* exceeds the given memory budget \\(24\\.0 MiB\\)`));
  });
});
