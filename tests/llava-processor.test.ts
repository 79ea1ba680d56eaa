// LlavaProcessor on the shipped weights/tiny-llava folder: prompt formatting (chat template / LLaVA-1.5), the
// <image> placeholder expanded before tokenizing, BOS, do_pad, count checks; then the whole path from a text
// prompt and an image to generated tokens on the GPU, deterministic across runs.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { nodeFolder } from '../src/io/checkpoint.js';
import { type ClipProcessorConfig, clipPreprocess, parseClipProcessorConfig } from '../src/io/clip-processor.js';
import type { RgbImage } from '../src/io/image.js';
import { Tokenizer, TokenizerError } from '../src/io/tokenizer.js';
import { type LlavaConfig, imageTokenCount, parseLlavaConfig } from '../src/models/config.js';
import { LLAVA_15_TEMPLATE, LlavaProcessor } from '../src/models/llava-processor.js';
import { LlavaModel } from '../src/models/llava.js';
import { REPO_ROOT } from './helpers/fixtures.js';
import { gpuContext, rng } from './helpers/gpu.js';

const DIR = join(REPO_ROOT, 'weights/tiny-llava');
const readJson = (f: string): Record<string, unknown> => JSON.parse(readFileSync(join(DIR, f), 'utf8'));

function randomImage(width: number, height: number, seed: number): RgbImage {
  const r = rng(seed);
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(r() * 256);
  return { width, height, data };
}

describe('LlavaProcessor on weights/tiny-llava', () => {
  let tok: Tokenizer;
  let cfg: LlavaConfig;
  let pp: ClipProcessorConfig;
  let proc: LlavaProcessor;
  const IMAGE = 478;

  beforeAll(async () => {
    tok = await Tokenizer.fromFolder(nodeFolder(DIR));
    cfg = parseLlavaConfig(readJson('config.json'));
    pp = parseClipProcessorConfig(readJson('preprocessor_config.json'), 'preprocessor_config.json');
    proc = new LlavaProcessor(tok, cfg, pp);
  });

  it('formats the prompt with the folder chat template, or the LLaVA-1.5 template without one', () => {
    const q = 'Where is the red circle in relation to the blue square?';
    expect(LLAVA_15_TEMPLATE(q)).toBe(`USER: <image>\n${q} ASSISTANT:`);
    expect(proc.imageToken).toBe('<image>');
    expect(cfg.imageTokenIndex).toBe(IMAGE);
    expect(proc.formatPrompt(q, 1)).toBe(LLAVA_15_TEMPLATE(q));
    expect(proc.formatPrompt(q, 2)).toBe(`USER: <image>\n<image>\n${q} ASSISTANT:`);
    expect(proc.formatPrompt(q, 0)).toBe(`USER: ${q} ASSISTANT:`);
    const noTemplate = new LlavaProcessor(
      Tokenizer.fromJson(readJson('tokenizer.json'), readJson('tokenizer_config.json'), readJson('special_tokens_map.json'), null),
      cfg,
      pp,
    );
    expect(noTemplate.formatPrompt(q, 1)).toBe(LLAVA_15_TEMPLATE(q));
    expect(noTemplate.formatPrompt(q, 2)).toBe(proc.formatPrompt(q, 2));
    // A folder template is used as is.
    const custom = new LlavaProcessor(
      Tokenizer.fromJson(readJson('tokenizer.json'), readJson('tokenizer_config.json'), undefined, '{% for m in messages %}{% for p in m.content %}{{ "[" + p.type + "]" }}{% endfor %}{% endfor %}{% if add_generation_prompt %}>{% endif %}'),
      cfg,
      pp,
    );
    expect(custom.formatPrompt(q, 2)).toBe('[image][image][text]>');
  });

  it('expands <image> to imageTokenCount ids before tokenizing, with BOS first', () => {
    const img = randomImage(40, 30, 1);
    const text = proc.formatPrompt('Where is the dog in relation to the horse?', 1);
    const out = proc.process(text, [img]);
    const n = imageTokenCount(cfg);
    expect(n).toBe(4);
    expect(proc.imageTokens).toBe(n);
    expect(out.text).toBe(text.replace('<image>', '<image>'.repeat(n)));
    expect(out.ids).toEqual(tok.encode(out.text));
    expect(out.ids.filter((id) => id === IMAGE)).toHaveLength(n);
    // The processor rule written out: [bos] + "USER: " + n image ids + "\n<prompt> ASSISTANT:", each text section
    // normalized on its own (so the section after the image starts with ▁, like llava-hf's 29871).
    const plain = (s: string) => tok.encode(s, { addSpecialTokens: false });
    const [before, after] = text.split('<image>') as [string, string];
    expect(out.ids).toEqual([tok.bosTokenId, ...plain(before), ...Array(n).fill(IMAGE), ...plain(after)]);
    expect(tok.idToToken(out.ids[1 + plain(before).length + n]!)).toBe('▁');
    expect(out.pixelValues).toHaveLength(1);
    expect(out.pixelValues[0]).toEqual(clipPreprocess(img, pp).pixelValues);
    expect(out.pixelValues[0]!.length).toBe(3 * 28 * 28);
  });

  it('handles several images in order, and text without images', () => {
    const a = randomImage(28, 28, 2);
    const b = randomImage(50, 70, 3);
    const out = proc.process(proc.formatPrompt('Compare them.', 2), [a, b]);
    expect(out.ids.filter((id) => id === IMAGE)).toHaveLength(8);
    expect(out.pixelValues.map((p) => Array.from(p))).toEqual([a, b].map((im) => Array.from(clipPreprocess(im, pp).pixelValues)));
    const textOnly = proc.process('USER: hello ASSISTANT:', []);
    expect(textOnly.ids).toEqual(tok.encode('USER: hello ASSISTANT:'));
    expect(textOnly.pixelValues).toEqual([]);
  });

  it('pads to a square with the mean colour first when do_pad is set', () => {
    const img = randomImage(41, 20, 4); // wider than tall: 10 rows of padding above, 11 below
    const padded = new LlavaPad(img, pp.imageMean.map((m) => Math.trunc(m * 255)));
    expect(padded.bg).toEqual([122, 116, 104]);
    const withPad = new LlavaProcessor(tok, cfg, { ...pp, doPad: true }).process('<image>', [img]);
    const noPad = proc.process('<image>', [img]);
    expect(withPad.pixelValues[0]).toEqual(clipPreprocess(padded.square(), pp).pixelValues);
    expect(withPad.pixelValues[0]).not.toEqual(noPad.pixelValues[0]);
    // A square image is unchanged by padding.
    const sq = randomImage(30, 30, 5);
    expect(new LlavaProcessor(tok, cfg, { ...pp, doPad: true }).process('<image>', [sq]).pixelValues).toEqual(proc.process('<image>', [sq]).pixelValues);
  });

  it('rejects a placeholder / image count mismatch and an image token the tokenizer lacks', () => {
    const img = randomImage(28, 28, 6);
    expect(() => proc.process(proc.formatPrompt('q', 2), [img])).toThrow(/2 <image> placeholders but 1 image was given/);
    expect(() => proc.process('no placeholder', [img])).toThrow(/0 <image> placeholders but 1 image was given/);
    expect(() => proc.process(proc.formatPrompt('q', 1), [])).toThrow(/1 <image> placeholder but 0 images were given/);
    expect(() => new LlavaProcessor(tok, { ...cfg, imageTokenIndex: 5000 }, pp)).toThrow(TokenizerError);
    expect(() => new LlavaProcessor(tok, { ...cfg, imageTokenIndex: 5000 }, pp)).toThrow(/image_token_index is 5000/);
    // A preprocessor that does not produce the tower's input size.
    const wrong = new LlavaProcessor(tok, cfg, { ...pp, cropSize: { height: 20, width: 20 } });
    expect(() => wrong.process('<image>', [img])).toThrow(/preprocesses to 20x20, but the vision tower takes 28x28/);
  });
});

/** Reference pad-to-square (LLaVA expand2square): the image centred on a square of the background colour. */
class LlavaPad {
  constructor(
    readonly img: RgbImage,
    readonly bg: number[],
  ) {}

  square(): RgbImage {
    const { width: w, height: h, data } = this.img;
    const s = Math.max(w, h);
    const out = new Uint8Array(s * s * 3);
    for (let i = 0; i < s * s; i++) out.set(this.bg, i * 3);
    const x0 = Math.floor((s - w) / 2);
    const y0 = Math.floor((s - h) / 2);
    for (let y = 0; y < h; y++) out.set(data.subarray(y * w * 3, (y + 1) * w * 3), ((y + y0) * s + x0) * 3);
    return { width: s, height: s, data: out };
  }
}

describe('weights/tiny-llava end to end (GPU)', () => {
  it('runs from a text prompt and an image to tokens, the same on two runs', async () => {
    const ctx = await gpuContext();
    const model = await LlavaModel.load(ctx, DIR);
    const tok = await Tokenizer.fromFolder(nodeFolder(DIR));
    const proc = new LlavaProcessor(tok, model.cfg, model.imageProcessor);
    const { ids, pixelValues } = proc.process(proc.formatPrompt('Where is the red circle in relation to the blue square?', 1), [randomImage(64, 48, 9)]);
    const a = await model.run({ ids, pixelValues, maxNewTokens: 5 });
    const b = await model.run({ ids, pixelValues, maxNewTokens: 5 });
    expect(a.tokens).toHaveLength(5);
    expect(b.tokens).toEqual(a.tokens);
    for (const t of a.tokens!) expect(t >= 0 && t < tok.vocabSize).toBe(true);
    expect(typeof tok.decode(a.tokens!, { skipSpecialTokens: true })).toBe('string');
    expect(Array.from(a.logits!.data).every(Number.isFinite)).toBe(true);
    expect(b.logits!.data).toEqual(a.logits!.data);
  });
});
