// The shipped model organism (weights/organism): the engine reproduces the trainer's forward pass, it answers a
// held-out slice of synthetic questions well above chance, and the README's main job answers correctly.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { LlavaModel } from '../src/models/llava.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { nodeFolder } from '../src/io/checkpoint.js';
import { decodeImage, encodePng } from '../src/io/image.js';
import { parseCapture } from '../src/spec/spec.js';
import { iterateDataset, renderScene, sceneImagePath } from '../src/eval/synthetic.js';
import { readQuestions } from '../src/eval/dataset.js';
import { evaluate } from '../src/eval/evaluate.js';
import { expectClose, gpuContext } from './helpers/gpu.js';
import { REPO_ROOT } from './helpers/fixtures.js';

const ORGANISM = join(REPO_ROOT, 'weights/organism');
const REFERENCE = join(REPO_ROOT, 'tests/fixtures/organism');
/** The held-out seed: the organism was trained on seed 1001 (scripts/make-organism.ts). */
const HELD_OUT_SEED = 2002;

/** The engine's last-position logits on the trainer's reference examples (reference.json + images in `dir`). */
async function expectTrainerReference(model: LlavaModel, dir: string): Promise<void> {
  const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8'));
  expect(ref.examples).toHaveLength(3);
  for (const ex of ref.examples) {
    const img = decodeImage(new Uint8Array(readFileSync(join(dir, ex.image))), ex.image);
    const r = await model.run({ ids: ex.ids, pixelValues: [model.preprocess(img)], capture: parseCapture({ logits: 'last' }, model.dims) });
    expectClose(r.logits!.data, ex.last_logits, 1e-3, 0, `${ex.image} (${ex.type})`);
  }
}

describe('model organism', () => {
  let model: LlavaModel;
  let tokenizer: Tokenizer;

  beforeAll(async () => {
    const ctx = await gpuContext();
    model = await LlavaModel.load(ctx, ORGANISM);
    tokenizer = await Tokenizer.fromFolder(nodeFolder(ORGANISM));
  });

  it('matches the trainer forward pass (stored float64 logits) on 3 examples within 1e-3', async () => {
    await expectTrainerReference(model, REFERENCE);
  });

  it('answers a held-out slice of synthetic questions (and sub-questions) accurately', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vlmscope-organism-'));
    mkdirSync(join(dir, 'images'));
    const lines: string[] = [];
    for (const s of iterateDataset({ seed: HELD_OUT_SEED, scenes: 10, size: model.cfg.vision.imageSize })) {
      writeFileSync(join(dir, sceneImagePath(s.id)), encodePng(renderScene(s.scene)));
      lines.push(...s.items.map((i) => JSON.stringify(i)));
    }
    writeFileSync(join(dir, 'questions.jsonl'), lines.join('\n') + '\n');
    const items = await readQuestions(join(dir, 'questions.jsonl'));
    const report = await evaluate(model, tokenizer, items);
    const pct = (a: number) => `${(100 * a).toFixed(1)}%`;
    console.log(
      `organism on ${report.total} held-out questions: ${pct(report.accuracy)}; ` +
        Object.entries(report.byType)
          .map(([t, a]) => `${t} ${pct(a.accuracy)} (${a.total})`)
          .join(', '),
    );
    expect(report.total).toBeGreaterThan(80);
    // The slice is deterministic (seeded data, greedy decoding). The shipped weights answer all 95 here (colour 5,
    // count 10, shape 10, exists 10, spatial 10, VSR 10, sub-questions 40); on the 1043-question held-out set
    // spatial is 100% and colour/shape/count >= 98.9% (weights/organism/README.md). The floors are the issue's
    // targets (spatial >= 95%, i.e. 10/10 here; colour/shape/count >= 90%), with room for one miss elsewhere.
    expect(report.byType.spatial.accuracy).toBeGreaterThanOrEqual(0.95);
    const perception = ['color', 'count', 'shape'].map((t) => report.byType[t]!);
    const right = perception.reduce((n, a) => n + a.correct, 0);
    const asked = perception.reduce((n, a) => n + a.total, 0);
    expect(right / asked).toBeGreaterThanOrEqual(0.9);
    expect(report.byType.exists.accuracy).toBeGreaterThanOrEqual(0.9);
    expect(report.byType.vsr.accuracy).toBeGreaterThanOrEqual(0.9);
    expect(report.byType.subquestion.accuracy).toBeGreaterThanOrEqual(0.9);
    expect(report.accuracy).toBeGreaterThanOrEqual(0.95);
  }, 900_000);

  it("answers the README's example question about the shipped scene with the default model", () => {
    const r = spawnSync(
      process.execPath,
      [join(REPO_ROOT, 'bin/vlmscope.js'), 'generate', '--image', join(REPO_ROOT, 'examples/scene.png'), '--prompt', readFileSync(join(REPO_ROOT, 'examples/scene-question.txt'), 'utf8').trim(), '--json'],
      { encoding: 'utf8', timeout: 120_000 },
    );
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout);
    expect(out.text.trim().toLowerCase()).toBe(readFileSync(join(REPO_ROOT, 'examples/scene-answer.txt'), 'utf8').trim());
  });
});

describe('model organism, continued on paraphrases (weights/organism-paraphrase)', () => {
  const FOLDER = join(REPO_ROOT, 'weights/organism-paraphrase');
  const REF = join(REPO_ROOT, 'tests/fixtures/organism-paraphrase');

  it('matches its trainer forward pass (stored float64 logits) on 3 examples within 1e-3', async () => {
    const model = await LlavaModel.load(await gpuContext(), FOLDER);
    try {
      await expectTrainerReference(model, REF);
    } finally {
      model.destroy();
    }
  });

  it('declares the same planted heads as the organism it continues, with their earlier losses kept', () => {
    const heads = (dir: string) => JSON.parse(readFileSync(join(dir, 'known_heads.json'), 'utf8')).heads;
    const before = heads(ORGANISM);
    const after = heads(FOLDER);
    expect(after.map((h: { layer: number; head: number; role: string }) => [h.layer, h.head, h.role])).toEqual(
      before.map((h: { layer: number; head: number; role: string }) => [h.layer, h.head, h.role]),
    );
    for (const h of after) expect(h.losses).toEqual(expect.arrayContaining(['attention', 'read', 'position']));
  });
});
