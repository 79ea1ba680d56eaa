// `npx tsx scripts/make-synthetic.ts --out DIR --seed S --scenes N [--size 64] [--questions-per-scene K]
//  [--types spatial,vsr,...] [--variant ood] [--object-scale X] [--background plain|novel|gradient|checker]
//  [--objects MIN-MAX] [--wordings fixed|train|heldout|all]`: writes a synthetic spatial-scene dataset (src/eval/synthetic.ts):
//   DIR/images/s000000.png ...   one PNG per scene (8-bit RGB)
//   DIR/questions.jsonl          the question index (schema: docs/datasets.md, src/eval/dataset.ts)
//   DIR/scenes.jsonl             scene metadata: {"id", "seed", "size", "background", "objects": [{colour, shape,
//                                x, y, d, cx, cy}]} (for probes and debugging; not needed to train or evaluate);
//                                variant scenes add "variant": {"object_scale", "background"} (the kind)
// --variant ood draws per scene an object scale (0.4, 0.6, 1.5 or 2: smaller or larger objects than the 12-18 px of
// training) and an unseen background (new plain colours, two-colour gradients, checkerboards); --object-scale and
// --background fix either instead. Without them the set is drawn like the organism's training data.
// --wordings picks the question wordings (src/eval/paraphrases.ts): fixed (the default) writes the original
// templates and no "wording" field, byte-identical to the sets made before paraphrases (the organism's training data);
// train draws each question's wording among the wordings that are not held out, heldout among the held-out ones only,
// all among every wording; those records carry "wording" (e.g. "spatial.w2") and "wording_heldout". The wording is
// drawn from a stream of its own: questions, answers and options are the same in every setting.
// and prints counts per question type and answer. Same arguments, same bytes.

import { mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { encodePng } from '../src/io/image.js';
import { SYNTHETIC_QUESTION_TYPES, type SyntheticQuestionType } from '../src/eval/dataset.js';
import { WORDING_SETS, type WordingSet } from '../src/eval/paraphrases.js';
import { BACKGROUND_KINDS, SCENE_VARIANTS, iterateDataset, itemToJsonl, renderScene, sceneImagePath, type BackgroundKind, type SceneVariant } from '../src/eval/synthetic.js';

function usage(msg: string): never {
  process.stderr.write(
    `make-synthetic: ${msg}\nusage: npx tsx scripts/make-synthetic.ts --out DIR --seed S --scenes N [--size 64] [--questions-per-scene K] [--types spatial,vsr,color,shape,count,exists] ` +
      `[--variant ${SCENE_VARIANTS.join('|')}] [--object-scale X] [--background ${BACKGROUND_KINDS.join('|')}] [--objects MIN-MAX] [--wordings ${WORDING_SETS.join('|')}]\n`,
  );
  process.exit(2);
}

function intArg(name: string, value: string | undefined, fallback?: number): number {
  if (value === undefined) {
    if (fallback === undefined) usage(`--${name} is required`);
    return fallback;
  }
  if (!/^\d+$/.test(value)) usage(`--${name} must be a non-negative integer, got "${value}"`);
  return Number(value);
}

async function main(): Promise<void> {
  let values: Record<string, string | undefined>;
  try {
    ({ values } = parseArgs({
      options: {
        out: { type: 'string' },
        seed: { type: 'string' },
        scenes: { type: 'string' },
        size: { type: 'string' },
        'questions-per-scene': { type: 'string' },
        types: { type: 'string' },
        variant: { type: 'string' },
        'object-scale': { type: 'string' },
        background: { type: 'string' },
        objects: { type: 'string' },
        wordings: { type: 'string' },
      },
      strict: true,
    }) as { values: Record<string, string | undefined> });
  } catch (e) {
    usage((e as Error).message);
  }
  const out = values.out ?? usage('--out is required');
  const seed = intArg('seed', values.seed);
  const scenes = intArg('scenes', values.scenes);
  const size = intArg('size', values.size, 64);
  const qps = values['questions-per-scene'] === undefined ? undefined : intArg('questions-per-scene', values['questions-per-scene']);
  let types: SyntheticQuestionType[] | undefined;
  if (values.types !== undefined) {
    types = values.types.split(',').map((t) => t.trim()) as SyntheticQuestionType[];
    const bad = types.filter((t) => !(SYNTHETIC_QUESTION_TYPES as readonly string[]).includes(t));
    if (bad.length > 0) usage(`unknown type(s) ${bad.join(', ')}; expected ${SYNTHETIC_QUESTION_TYPES.join(', ')}`);
  }

  const variant = values.variant as SceneVariant | undefined;
  if (variant !== undefined && !(SCENE_VARIANTS as readonly string[]).includes(variant)) usage(`--variant must be one of ${SCENE_VARIANTS.join(', ')}, got "${variant}"`);
  let objectScale: number | undefined;
  if (values['object-scale'] !== undefined) {
    objectScale = Number(values['object-scale']);
    if (values['object-scale'].trim() === '' || !(objectScale >= 0.25 && objectScale <= 2)) usage(`--object-scale must be a number in [0.25, 2], got "${values['object-scale']}"`);
  }
  const background = values.background as BackgroundKind | undefined;
  if (background !== undefined && !(BACKGROUND_KINDS as readonly string[]).includes(background)) usage(`--background must be one of ${BACKGROUND_KINDS.join(', ')}, got "${background}"`);
  let minObjects: number | undefined;
  let maxObjects: number | undefined;
  if (values.objects !== undefined) {
    const m = /^([2-4])(?:-([2-4]))?$/.exec(values.objects);
    if (!m || Number(m[2] ?? m[1]) < Number(m[1])) usage(`--objects must be N or MIN-MAX with 2 <= MIN <= MAX <= 4, got "${values.objects}"`);
    minObjects = Number(m[1]);
    maxObjects = Number(m[2] ?? m[1]);
  }

  const wordings = (values.wordings ?? 'fixed') as WordingSet;
  if (!(WORDING_SETS as readonly string[]).includes(wordings)) usage(`--wordings must be one of ${WORDING_SETS.join(', ')}, got "${wordings}"`);

  await mkdir(join(out, 'images'), { recursive: true });
  const questions = await open(join(out, 'questions.jsonl'), 'w');
  const sceneIndex = await open(join(out, 'scenes.jsonl'), 'w');
  const counts = new Map<string, Map<string, number>>();
  const bump = (key: string, answer: string): void => {
    const m = counts.get(key) ?? new Map<string, number>();
    m.set(answer, (m.get(answer) ?? 0) + 1);
    counts.set(key, m);
  };
  const wordingCounts = new Map<string, number>();
  const countWording = (id: string | undefined): void => {
    if (id !== undefined) wordingCounts.set(id, (wordingCounts.get(id) ?? 0) + 1);
  };
  let items = 0;
  let subs = 0;
  try {
    for (const s of iterateDataset({ seed, scenes, size, questionsPerScene: qps, types, variant, objectScale, background, minObjects, maxObjects, wordings })) {
      await writeFile(join(out, sceneImagePath(s.id)), encodePng(renderScene(s.scene)));
      const { objects, background } = s.scene;
      const meta = {
        id: s.id,
        seed: s.seed,
        size: s.scene.size,
        background: background.name,
        objects: objects.map(({ colour, shape, x, y, d, cx, cy }) => ({ colour, shape, x, y, d, cx, cy })),
        ...(s.scene.variant ? { variant: { object_scale: s.scene.variant.objectScale, background: s.scene.variant.background } } : {}),
      };
      await sceneIndex.write(`${JSON.stringify(meta)}\n`);
      let lines = '';
      for (const item of s.items) {
        lines += `${itemToJsonl(item)}\n`;
        items++;
        bump(item.type, item.answer);
        countWording(item.wording);
        for (const sub of item.sub_questions ?? []) {
          subs++;
          countWording(sub.wording);
          bump(`${item.type} sub (${sub.function})`, sub.answer);
        }
      }
      await questions.write(lines);
    }
  } finally {
    await questions.close();
    await sceneIndex.close();
  }

  const drawn = variant !== undefined || objectScale !== undefined || background !== undefined;
  const setting = drawn ? `, variant ${[variant, objectScale !== undefined ? `object scale ${objectScale}` : '', background !== undefined ? `${background} background` : ''].filter(Boolean).join(', ')}` : '';
  const worded = wordings === 'fixed' ? '' : `, ${wordings} wordings`;
  process.stdout.write(`wrote ${scenes} scenes (${size}x${size}${setting}${worded}), ${items} questions and ${subs} sub-questions to ${out}\n`);
  for (const [key, m] of [...counts].sort(([a], [b]) => a.localeCompare(b))) {
    const total = [...m.values()].reduce((a, b) => a + b, 0);
    const parts = [...m].sort(([a], [b]) => a.localeCompare(b)).map(([ans, n]) => `${ans} ${n} (${((100 * n) / total).toFixed(1)}%)`);
    process.stdout.write(`  ${key.padEnd(40)} ${String(total).padStart(7)}: ${parts.join(', ')}\n`);
  }
  if (wordingCounts.size > 0) {
    // Per table (main question type or sub-question function): how often each wording was drawn.
    const tables = new Map<string, string[]>();
    for (const [id, n] of [...wordingCounts].sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true }))) {
      const table = id.slice(0, id.lastIndexOf('.'));
      tables.set(table, [...(tables.get(table) ?? []), `${id.slice(table.length + 1)} ${n}`]);
    }
    for (const [table, parts] of tables) process.stdout.write(`  wordings ${table.padEnd(31)}: ${parts.join(', ')}\n`);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`make-synthetic: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
