// The AdaptVis evaluation data (src/eval/adaptvis-data.ts): the authors' prompt JSONL with What'sUp Controlled A/B,
// COCO-QA and VG-QA annotation files and VSR test.jsonl, all written to a temp dir in the authors' checkout layout
// (prompts/, data/) with tiny PNG images; their answer rules (substring match, the "on" / "front" exception, VSR's
// case-sensitive Yes / No), the CPython-identical 20% / 80% split, option-likelihood helpers, errors with file:line
// and missing images named, and the paper-shaped results table. CPU only.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, mkdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodePng } from '../src/io/image.js';
import { isCorrect } from '../src/eval/dataset.js';
import { PythonRandom } from '../src/eval/python-random.js';
import {
  ADAPTVIS_VSR_PROMPT_PREFIX,
  ADAPTVIS_VSR_PROMPT_SUFFIX,
  adaptVisFiles,
  answerOptions,
  isCorrectAdaptVis,
  isCorrectByLikelihood,
  parseAdaptVis,
  parseAdaptVisPrompts,
  pickBest,
  pickOption,
  readAdaptVis,
  resultsTable,
  splitItems,
  vsrMetrics,
  type AdaptVisItem,
  type AdaptVisSubset,
} from '../src/eval/adaptvis-data.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'vlmscope-adaptvis-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const PNG = encodePng({ width: 2, height: 2, data: new Uint8Array([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9]) });

function write(rel: string, content: string | Uint8Array): string {
  const p = join(dir, rel);
  mkdirSync(join(p, '..'), { recursive: true });
  writeFileSync(p, content);
  return p;
}

const promptLine = (id: number, question: string, answer: unknown): string => JSON.stringify({ id, question: `<image>\nUSER: ${question}\nASSISTANT:`, answer });
const jsonl = (lines: string[]): string => lines.map((l) => `${l}\n`).join('');

async function readError(subset: AdaptVisSubset, opts: Parameters<typeof readAdaptVis>[1]): Promise<string> {
  try {
    await readAdaptVis(subset, opts);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error(`reading ${subset} did not fail`);
}

// ---------------------------------------------------------------------------------------------------------------
// Fixtures in the authors' layout

const CONTROLLED_A = [
  { image_path: 'data/controlled_images/beer-bottle_on_armchair.jpeg', caption_options: ['A beer bottle on a armchair', 'A beer bottle under a armchair', 'A beer bottle to the left of a armchair', 'A beer bottle to the right of a armchair'] },
  { image_path: 'data/controlled_images/scarf_right_of_armchair.jpeg', caption_options: ['A scarf to the right of a armchair', 'A scarf on a armchair', 'A scarf under a armchair', 'A scarf to the left of a armchair'] },
  { image_path: 'data/controlled_images/cup_under_table.jpeg', caption_options: ['A cup under a table', 'A cup on a table', 'A cup to the left of a table', 'A cup to the right of a table'] },
];
const A_PROMPTS = [
  promptLine(0, 'Where is the beer bottle in relation to the armchair? Answer with left, right, on or under.', ['On']),
  promptLine(1, 'Where is the scarf in relation to the armchair? Answer with left, right, on or under.', ['Right']),
  promptLine(2, 'Where is the cup in relation to the table? Answer with left, right, on, or under.', ['Under']),
];

function writeControlledA(root: string): void {
  write(`${root}/prompts/Controlled_Images_A_with_answer_four_options.jsonl`, jsonl(A_PROMPTS));
  write(`${root}/data/controlled_images_dataset.json`, JSON.stringify(CONTROLLED_A, null, 2));
  for (const d of CONTROLLED_A) write(`${root}/${d.image_path}`, PNG);
}

describe('prompt JSONL', () => {
  it('parses the authors\' lines, quirks included', () => {
    const text = jsonl([
      promptLine(0, 'Where is the dining table in the photo? Answer with left, right, top or bottom.', ['Bottom']),
      // Their files: a doubled full stop (VG_QA_one_obj l.5), two options only (l.202), an "Option ..." line after the
      // clause (VG_QA_two_obj l.85), a gold word the question does not list (VG_QA_two_obj l.57), a double space.
      promptLine(4, 'Where is the pink bed in the photo? Answer with left, right, front, behind, top or bottom..', ['Left']),
      promptLine(201, 'Where is the grass in the photo? Answer with behind or front.', ['Behind']),
      promptLine(84, 'Where is the man in relation to the woman?\nAnswer with left, right, front, behind, above or below.\nOption A photo of a man to the right of a woman.', ['Right']),
      promptLine(56, 'Where is the girl in relation to the pillow? Answer with left, right, front, behind, top, or bottom.', ['Above']),
      '',
      JSON.stringify({ id: 7, question: '<image>\nUSER:  Where is the toilet in relation to the sink? Answer with left, right, above or below.\nASSISTANT:', answer: ['Below'] }),
    ]);
    const r = parseAdaptVisPrompts(text, 'p.jsonl');
    expect(r.map((x) => x.line)).toEqual([1, 2, 3, 4, 5, 7]);
    expect(r[0]).toEqual({
      id: 0,
      prompt: '<image>\nUSER: Where is the dining table in the photo? Answer with left, right, top or bottom.\nASSISTANT:',
      question: 'Where is the dining table in the photo? Answer with left, right, top or bottom.',
      answers: ['Bottom'],
      options: ['left', 'right', 'top', 'bottom'],
      line: 1,
    });
    expect(r[1]!.options).toEqual(['left', 'right', 'front', 'behind', 'top', 'bottom']);
    expect(r[2]!.options).toEqual(['behind', 'front']);
    expect(r[3]!.options).toEqual(['left', 'right', 'front', 'behind', 'above', 'below']);
    expect(r[3]!.question).toBe('Where is the man in relation to the woman?\nAnswer with left, right, front, behind, above or below.\nOption A photo of a man to the right of a woman.');
    expect(r[4]!.options).toEqual(['left', 'right', 'front', 'behind', 'top', 'bottom']);
    expect(r[5]!.question).toBe('Where is the toilet in relation to the sink? Answer with left, right, above or below.');
    expect(answerOptions('Answer with left, right, above, or below.')).toEqual(['left', 'right', 'above', 'below']);
    expect(answerOptions('Answer with one word.')).toEqual(['one word']);
    expect(answerOptions('What is it?')).toEqual([]);
  });

  it('rejects malformed lines with file:line', () => {
    const ok = A_PROMPTS[0]!;
    const err = (text: string): string => {
      try {
        parseAdaptVisPrompts(text, 'prompts/x.jsonl');
      } catch (e) {
        return (e as Error).message;
      }
      throw new Error('did not fail');
    };
    expect(err(jsonl([ok, '{"id": 1, "question": ']))).toMatch(/^prompts\/x\.jsonl:2: invalid JSON/);
    expect(err(jsonl([ok, '', JSON.stringify({ id: 1, answer: ['Left'] })]))).toBe('prompts/x.jsonl:3: missing field "question"');
    expect(err(jsonl([ok, JSON.stringify({ id: 1, question: '<image>\nUSER: Q? Answer with a or b.\nASSISTANT:' })]))).toBe('prompts/x.jsonl:2: missing field "answer"');
    expect(err(jsonl([ok, JSON.stringify({ question: 'q', answer: ['a'] })]))).toBe('prompts/x.jsonl:2: missing field "id"');
    expect(err(jsonl([ok, promptLine(-1, 'Q? Answer with a or b.', ['a'])]))).toMatch(/^prompts\/x\.jsonl:2: field "id" must be a non-negative integer, got -1$/);
    expect(err(jsonl([ok, promptLine(1, 'Q? Answer with a or b.', [])]))).toMatch(/^prompts\/x\.jsonl:2: field "answer" must be a non-empty list of strings/);
    // Their VSR_with_answer.jsonl: answer is a relation string, and their VSR path does not read it.
    expect(err(jsonl([promptLine(0, 'Where is the car in relation to suitcase? Answer with one word or phrase.', 'behind')]))).toMatch(
      /^prompts\/x\.jsonl:1: field "answer" is a string \("behind"\), expected a list .*test\.jsonl/,
    );
    expect(err(jsonl([ok, JSON.stringify({ id: 1, question: 'Where is it? Answer with a or b.', answer: ['a'] })]))).toMatch(/^prompts\/x\.jsonl:2: field "question" must be the authors' "<image>\\nUSER: \.\.\. ASSISTANT:" text/);
    expect(err(jsonl([ok, promptLine(1, 'Where is it?', ['left'])]))).toMatch(/^prompts\/x\.jsonl:2: the question has no answer list/);
    expect(err(jsonl([ok, promptLine(0, 'Q? Answer with a or b.', ['a'])]))).toBe('prompts/x.jsonl:2: duplicate id 0 (first on line 1)');
    expect(err(jsonl([ok, '[1, 2]']))).toMatch(/^prompts\/x\.jsonl:2: line must be a JSON object/);
    expect(err('\n\n')).toBe('prompts/x.jsonl:1: no prompts in the file');
    // One line each.
    expect(err(jsonl([ok, '{"id": 1, "question": '])).includes('\n')).toBe(false);
  });
});

describe('What\'sUp subsets', () => {
  it('reads Controlled_Images_A from a checkout layout, images resolved as the authors open them', async () => {
    writeControlledA('ca');
    const items = await readAdaptVis('Controlled_Images_A', { root: join(dir, 'ca') });
    expect(items.length).toBe(3);
    const first = items[0]!;
    expect(first).toEqual({
      id: 'Controlled_Images_A-0',
      imagePath: join(dir, 'ca/data/controlled_images/beer-bottle_on_armchair.jpeg'),
      question: 'Where is the beer bottle in relation to the armchair? Answer with left, right, on or under.',
      answer: 'on',
      type: 'whatsup',
      function: 'relational_reasoning',
      options: ['left', 'right', 'on', 'under'],
      subset: 'Controlled_Images_A',
      index: 0,
      prompt: '<image>\nUSER: Where is the beer bottle in relation to the armchair? Answer with left, right, on or under.\nASSISTANT:',
      gold: 'On',
      candidates: ['Left', 'Right', 'On', 'Under'],
      goldIndex: 2,
      goldListed: true,
      captions: CONTROLLED_A[0]!.caption_options,
    } satisfies AdaptVisItem);
    expect(items.map((i) => [i.gold, i.goldIndex, i.index])).toEqual([
      ['On', 2, 0],
      ['Right', 1, 1],
      ['Under', 3, 2],
    ]);
    // The same items from explicit paths, and from the pure parser with a string image root.
    expect(await readAdaptVis('Controlled_Images_A', { prompts: join(dir, 'ca', adaptVisFiles('Controlled_Images_A').prompts!), annotations: join(dir, 'ca/data/controlled_images_dataset.json') })).toEqual(items);
    const pure = parseAdaptVis('Controlled_Images_A', {
      prompts: { text: jsonl(A_PROMPTS), source: 'prompts/a.jsonl' },
      annotations: { text: JSON.stringify(CONTROLLED_A), source: 'ck/data/controlled_images_dataset.json' },
    });
    expect(pure[1]!.imagePath).toBe('ck/data/controlled_images/scarf_right_of_armchair.jpeg');
    expect(pure.map(({ imagePath: _, ...rest }) => rest)).toEqual(items.map(({ imagePath: _, ...rest }) => rest));
  });

  it('reads Controlled_Images_B with images in an images/ folder beside the JSON', async () => {
    const data = [
      { image_path: 'data/controlled_clevr/mug_right_of_knife.jpeg', caption_options: ['A mug to the right of a knife', 'A mug to the left of a knife', 'A mug in front of a knife', 'A mug behind a knife'] },
      { image_path: 'data/controlled_clevr/bowl_in-front_of_cup.jpeg', caption_options: ['A bowl in front of a cup', 'A bowl behind a cup', 'A bowl to the left of a cup', 'A bowl to the right of a cup'] },
    ];
    write(
      'cb/prompts/Controlled_Images_B_with_answer_four_options.jsonl',
      jsonl([
        promptLine(0, 'Where is the mug in relation to the knife? Answer with left, right, front or behind.', ['Right']),
        promptLine(1, 'Where is the bowl in relation to the cup? Answer with left, right, front or behind.', ['Front']),
      ]),
    );
    write('cb/data/controlled_clevr_dataset.json', JSON.stringify(data));
    write('cb/data/images/mug_right_of_knife.jpeg', PNG);
    write('cb/data/images/bowl_in-front_of_cup.jpeg', PNG);
    const items = await readAdaptVis('Controlled_Images_B', { root: join(dir, 'cb') });
    expect(items.map((i) => i.imagePath)).toEqual([join(dir, 'cb/data/images/mug_right_of_knife.jpeg'), join(dir, 'cb/data/images/bowl_in-front_of_cup.jpeg')]);
    expect(items.map((i) => [i.answer, i.candidates[i.goldIndex]])).toEqual([
      ['right', 'Right'],
      ['front', 'Front'],
    ]);
  });

  it('reads COCO-QA one-object triples: val2017/{id:012d}.jpg', async () => {
    write(
      'coco/prompts/COCO_QA_one_obj_with_answer_four_options.jsonl',
      jsonl([
        promptLine(0, 'Where is the dining table in the photo? Answer with left, right, top or bottom.', ['Bottom']),
        promptLine(1, 'Where is the refrigerator in the photo? Answer with left, right, top or bottom.', ['Right']),
      ]),
    );
    write(
      'coco/data/coco_qa_one_obj.json',
      JSON.stringify([
        [37777, 'A photo of a dining table on the bottom', 'A photo of a dining table on the top'],
        ['331352', 'A photo of a refrigerator on the right', 'A photo of a refrigerator on the left'],
      ]),
    );
    write('coco/data/val2017/000000037777.jpg', PNG);
    write('coco/data/val2017/000000331352.jpg', PNG);
    const items = await readAdaptVis('COCO_QA_one_obj', { root: join(dir, 'coco') });
    expect(items.map((i) => i.imagePath)).toEqual([join(dir, 'coco/data/val2017/000000037777.jpg'), join(dir, 'coco/data/val2017/000000331352.jpg')]);
    expect(items[0]!.function).toBe('spatial_perception');
    expect(items[0]!.type).toBe('whatsup');
    expect(items[0]!.captions).toEqual(['A photo of a dining table on the bottom', 'A photo of a dining table on the top']);
    expect(items.map((i) => i.id)).toEqual(['COCO_QA_one_obj-0', 'COCO_QA_one_obj-1']);
  });

  it('reads VG-QA two-object triples: vg_images/{id}.jpg, an unlisted gold word appended to the candidates', async () => {
    write(
      'vg/prompts/VG_QA_two_obj_with_answer_six_options.jsonl',
      jsonl([
        promptLine(0, 'Where is the cart in relation to the green trees? Answer with left, right, front, behind, above or below.', ['Front']),
        promptLine(56, 'Where is the girl in relation to the pillow? Answer with left, right, front, behind, top, or bottom.', ['Above']),
      ]),
    );
    write(
      'vg/data/vg_qa_two_obj.json',
      JSON.stringify([
        [2345, 'A photo of a cart in front of a green trees', 'A photo of a cart behind a green trees'],
        [2400, 'A photo of a girl above a pillow', 'A photo of a girl below a pillow'],
      ]),
    );
    write('vg/data/vg_images/2345.jpg', PNG);
    write('vg/data/vg_images/2400.jpg', PNG);
    const items = await readAdaptVis('VG_QA_two_obj', { root: join(dir, 'vg') });
    expect(items[0]!.imagePath).toBe(join(dir, 'vg/data/vg_images/2345.jpg'));
    expect(items[0]!.function).toBe('relational_reasoning');
    expect(items[0]!.goldListed).toBe(true);
    expect(items[1]!.goldListed).toBe(false);
    expect(items[1]!.options).toEqual(['left', 'right', 'front', 'behind', 'top', 'bottom', 'above']);
    expect(items[1]!.candidates[items[1]!.goldIndex]).toBe('Above');
    expect(items[1]!.id).toBe('VG_QA_two_obj-56');
  });

  it('names a missing image with the annotation file and line', async () => {
    writeControlledA('cmiss');
    unlinkSync(join(dir, 'cmiss/data/controlled_images/cup_under_table.jpeg'));
    const msg = await readError('Controlled_Images_A', { root: join(dir, 'cmiss') });
    expect(msg).toMatch(/controlled_images_dataset\.json:\d+: item 2: image not found: /);
    expect(msg).toContain(join(dir, 'cmiss/data/controlled_images/cup_under_table.jpeg'));
    expect(msg.split('\n').length).toBe(1);
    // The line is the item's line in the pretty-printed JSON.
    const text = JSON.stringify(CONTROLLED_A, null, 2).split('\n');
    const line = text.findIndex((l, i) => i > 0 && l === '  {' && text.slice(0, i).filter((x) => x === '  {').length === 2) + 1;
    expect(msg).toContain(`controlled_images_dataset.json:${line}: item 2:`);
    // checkImages: false keeps the authors' location.
    const items = await readAdaptVis('Controlled_Images_A', { root: join(dir, 'cmiss'), checkImages: false });
    expect(items[2]!.imagePath).toBe(join(dir, 'cmiss/data/controlled_images/cup_under_table.jpeg'));

    write('cocomiss/prompts/COCO_QA_two_obj_with_answer_four_options.jsonl', jsonl([promptLine(0, 'Where is the cat in relation to the tv? Answer with left, right, above or below.', ['Left'])]));
    write('cocomiss/data/coco_qa_two_obj.json', '[\n  [403817, "A photo of a cat to the left of a tv", "A photo of a cat to the right of a tv"]\n]');
    expect(await readError('COCO_QA_two_obj', { root: join(dir, 'cocomiss') })).toMatch(
      new RegExp(`coco_qa_two_obj\\.json:2: item 0: image not found: ${join(dir, 'cocomiss/data/val2017/000000403817.jpg').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`),
    );
  });

  it('rejects malformed annotation items, mismatched files and missing files', async () => {
    const root = 'cbad';
    writeControlledA(root);
    const ann = join(dir, root, 'data/controlled_images_dataset.json');
    const withAnn = (content: string): Promise<string> => {
      writeFileSync(ann, content);
      return readError('Controlled_Images_A', { root: join(dir, root) });
    };
    const bad = [CONTROLLED_A[0], CONTROLLED_A[1], { image_path: 'data/controlled_images/cup_under_table.jpeg' }];
    expect(await withAnn(JSON.stringify(bad, null, 2))).toMatch(/controlled_images_dataset\.json:20: item 2: missing field "caption_options"$/);
    expect(await withAnn('[\n  [1, "a", "b"]\n]')).toMatch(/controlled_images_dataset\.json:2: item 0: a list \(the COCO-QA/);
    expect(await withAnn('[\n  {"image_path": "x.jpeg",\n   "caption_options": ["a", "b"]\n  ,,\n]')).toMatch(/controlled_images_dataset\.json:\d+: invalid JSON/);
    expect(await withAnn('{"a": 1}')).toMatch(/controlled_images_dataset\.json:1: expected a JSON list/);
    // Count mismatch: the prompts and annotations do not belong together.
    expect(await withAnn(JSON.stringify(CONTROLLED_A.slice(0, 2)))).toMatch(/Controlled_Images_A_with_answer_four_options\.jsonl has 3 prompts but .*controlled_images_dataset\.json has 2 items/);
    // Same count, other order: the gold words disagree with the correct captions.
    expect(await withAnn(JSON.stringify([CONTROLLED_A[1], CONTROLLED_A[0], CONTROLLED_A[2]]))).toMatch(
      /Controlled_Images_A_with_answer_four_options\.jsonl:1: answer "On" disagrees with item 0 of .*controlled_images_dataset\.json \(line 1\), whose correct caption "A scarf to the right of a armchair" says "right"; 2 of 3 checked items disagree/,
    );
    writeFileSync(ann, JSON.stringify(CONTROLLED_A));

    write('cocobad/prompts/COCO_QA_one_obj_with_answer_four_options.jsonl', jsonl([promptLine(0, 'Where is it? Answer with left, right, top or bottom.', ['Left'])]));
    const coco = (content: string): Promise<string> => {
      write('cocobad/data/coco_qa_one_obj.json', content);
      return readError('COCO_QA_one_obj', { root: join(dir, 'cocobad'), checkImages: false });
    };
    expect(await coco('[\n  [37777, "A photo of a x on the left"]\n]')).toMatch(/coco_qa_one_obj\.json:2: item 0: expected \[image_id, correct caption, distractor\], got 2 elements/);
    expect(await coco('[\n  ["abc", "A photo on the left", "A photo on the right"]\n]')).toMatch(/coco_qa_one_obj\.json:2: item 0: the image id \(first element\) must be a non-negative integer, got "abc"/);
    expect(await coco('[{"image_path": "x.jpeg", "caption_options": ["a", "b"]}]')).toMatch(/coco_qa_one_obj\.json:1: item 0: expected a list .*\(this is the Controlled_Images layout\)/);

    expect(await readError('Controlled_Images_A', { root: join(dir, 'nowhere') })).toMatch(/cannot read .*nowhere\/prompts\/Controlled_Images_A_with_answer_four_options\.jsonl: file not found/);
    expect(await readError('VSR', { root: join(dir, root), prompts: 'p.jsonl' })).toMatch(/VSR has no prompt file/);
    await expect(readAdaptVis('Nope' as AdaptVisSubset, {})).rejects.toThrow(/unknown AdaptVis subset "Nope"/);
  });
});

describe('VSR', () => {
  const lines = [
    { image: '000000017697.jpg', image_link: 'http://images.cocodataset.org/train2017/000000017697.jpg', caption: 'The car is behind the suitcase.', label: 1, relation: 'behind', subj: 'car', obj: 'suitcase' },
    { image: '000000080336.jpg', image_link: 'http://images.cocodataset.org/val2017/000000080336.jpg', caption: 'The cat is on the bed.', label: 0, relation: 'on' },
    { image: '000000005555.jpg', caption: 'The dog is under the table.', label: 1 },
  ];

  it('reads test.jsonl: the image under data/ from image_link, the authors\' prompt, Yes / No gold', async () => {
    write('vsr/data/test.jsonl', jsonl(lines.map((l) => JSON.stringify(l))));
    write('vsr/data/train2017/000000017697.jpg', PNG);
    write('vsr/data/val2017/000000080336.jpg', PNG);
    write('vsr/data/images/000000005555.jpg', PNG);
    const items = await readAdaptVis('VSR', { root: join(dir, 'vsr') });
    expect(items.map((i) => i.imagePath)).toEqual([join(dir, 'vsr/data/train2017/000000017697.jpg'), join(dir, 'vsr/data/val2017/000000080336.jpg'), join(dir, 'vsr/data/images/000000005555.jpg')]);
    expect(items[0]).toEqual({
      id: 'VSR-0',
      imagePath: join(dir, 'vsr/data/train2017/000000017697.jpg'),
      question: 'Determine whether the description about the spatial relationship is correct or not. Answer with yes or no: The car is behind the suitcase.',
      answer: 'yes',
      type: 'vsr',
      function: 'relational_reasoning',
      options: ['yes', 'no'],
      subset: 'VSR',
      index: 0,
      prompt: 'User: <image>\n Determine whether the description about the spatial relationship is correct or not. Answer with yes or no: The car is behind the suitcase. Assistant:',
      gold: 'Yes',
      candidates: ['Yes', 'No'],
      goldIndex: 0,
      goldListed: true,
      label: true,
    } satisfies AdaptVisItem);
    expect(items[1]!.prompt).toBe(`${ADAPTVIS_VSR_PROMPT_PREFIX}The cat is on the bed.${ADAPTVIS_VSR_PROMPT_SUFFIX}`);
    expect(items.map((i) => [i.gold, i.answer, i.goldIndex, i.label])).toEqual([
      ['Yes', 'yes', 0, true],
      ['No', 'no', 1, false],
      ['Yes', 'yes', 0, true],
    ]);
  });

  it('rejects bad lines with file:line and names a missing image', async () => {
    const bad = (i: number, patch: Record<string, unknown>): string =>
      jsonl(lines.map((l, k) => JSON.stringify(k === i ? Object.fromEntries(Object.entries({ ...l, ...patch }).filter(([, v]) => v !== undefined)) : l)));
    const err = (content: string): Promise<string> => {
      write('vsrbad/data/test.jsonl', content);
      return readError('VSR', { root: join(dir, 'vsrbad'), checkImages: false });
    };
    expect(await err(bad(1, { label: 2 }))).toMatch(/test\.jsonl:2: bad label 2: expected 0 or 1$/);
    expect(await err(bad(1, { label: undefined }))).toMatch(/test\.jsonl:2: missing field "label"$/);
    expect(await err(bad(2, { caption: undefined }))).toMatch(/test\.jsonl:3: missing field "caption"$/);
    expect(await err(bad(2, { image: undefined }))).toMatch(/test\.jsonl:3: missing field "image_link" \(or "image"\)$/);
    expect(await err(bad(0, { image_link: 'http://example.com' }))).toMatch(/test\.jsonl:1: field "image_link" "http:\/\/example\.com" has no path after "\.org\/"/);
    expect(await err(`${JSON.stringify(lines[0])}\nnot json\n`)).toMatch(/test\.jsonl:2: invalid JSON/);
    expect(await err(jsonl([promptLine(0, 'Where is the car in relation to suitcase? Answer with one word or phrase.', 'behind')]))).toMatch(/test\.jsonl:1: a prompt line \("question"\)/);
    write('vsrmiss/data/test.jsonl', jsonl(lines.slice(0, 1).map((l) => JSON.stringify(l))));
    const msg = await readError('VSR', { root: join(dir, 'vsrmiss') });
    expect(msg).toMatch(/test\.jsonl:1: item 0: image not found: /);
    expect(msg).toContain(join(dir, 'vsrmiss/data/train2017/000000017697.jpg'));
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Scoring

const whatsup = (gold: string, subset: AdaptVisSubset = 'Controlled_Images_A') => ({ subset, gold });

describe('answer rules', () => {
  it('What\'sUp: case-insensitive substring of answer[0], except gold "on" with "front" in the output', () => {
    const on = whatsup('On');
    expect(isCorrectAdaptVis('On', on)).toBe(true);
    expect(isCorrectAdaptVis(' on the armchair.', on)).toBe(true);
    expect(isCorrectAdaptVis('ON', on)).toBe(true);
    // "on" is a substring of "front": the authors' exception.
    expect(isCorrectAdaptVis('Front', on)).toBe(false);
    expect(isCorrectAdaptVis('In front of the armchair', on)).toBe(false);
    expect(isCorrectAdaptVis('On, not in front', on)).toBe(false);
    expect(isCorrectAdaptVis('Under', on)).toBe(false);
    // ... but other words containing "on" still count (substring rule, copied as is).
    expect(isCorrectAdaptVis("I don't know", on)).toBe(true);
    expect(isCorrectAdaptVis('Left', on)).toBe(false);
    // Not a first-word match: anywhere in the text, any case.
    const left = whatsup('Left', 'COCO_QA_two_obj');
    expect(isCorrectAdaptVis('The dining table is to the left of the refrigerator.', left)).toBe(true);
    expect(isCorrectAdaptVis('LEFT', left)).toBe(true);
    expect(isCorrectAdaptVis('Right', left)).toBe(false);
    expect(isCorrectAdaptVis('Right, not left', left)).toBe(true);
    expect(isCorrect('The dining table is to the left of the refrigerator.', { answer: 'left' })).toBe(false); // vlmscope's first-word rule differs
    // The exception is for "on" only: "front" as gold is plain substring.
    expect(isCorrectAdaptVis('In front', whatsup('Front', 'Controlled_Images_B'))).toBe(true);
    expect(isCorrectAdaptVis('Behind', whatsup('Front', 'Controlled_Images_B'))).toBe(false);
    expect(isCorrectAdaptVis('Top', whatsup('Bottom', 'VG_QA_one_obj'))).toBe(false);
    expect(isCorrectAdaptVis('bottom', whatsup('Bottom', 'VG_QA_one_obj'))).toBe(true);
  });

  it('VSR: case-sensitive "Yes" for label 1, "No" for label 0', () => {
    const yes = { subset: 'VSR' as const, gold: 'Yes' };
    const no = { subset: 'VSR' as const, gold: 'No' };
    expect(isCorrectAdaptVis('Yes', yes)).toBe(true);
    expect(isCorrectAdaptVis('Yes, the car is behind the suitcase.', yes)).toBe(true);
    expect(isCorrectAdaptVis('yes', yes)).toBe(false);
    expect(isCorrectAdaptVis('YES', yes)).toBe(false);
    expect(isCorrectAdaptVis('No', yes)).toBe(false);
    expect(isCorrectAdaptVis('No', no)).toBe(true);
    expect(isCorrectAdaptVis('no', no)).toBe(false);
    expect(isCorrectAdaptVis('Not really', no)).toBe(true);
    expect(isCorrectAdaptVis('Yes', no)).toBe(false);
    // Both words: right for either label.
    expect(isCorrectAdaptVis('No... Yes', yes)).toBe(true);
    expect(isCorrectAdaptVis('No... Yes', no)).toBe(true);
    expect(() => isCorrectAdaptVis('Yes', { subset: 'VSR', gold: 'yes' })).toThrow(/VSR gold must be "Yes" or "No"/);
  });

  it('vsrMetrics: accuracy and the authors\' precision (TPR), recall (TNR) and F1', () => {
    const items = ['Yes', 'Yes', 'Yes', 'No', 'No'].map((gold, i) => ({ subset: 'VSR' as const, gold, id: `VSR-${i}` }));
    const m = vsrMetrics(['Yes', 'yes', 'Yes.', 'No', 'Yes'], items);
    expect(m).toMatchObject({ total: 5, tp: 2, fn: 1, tn: 1, fp: 1 });
    expect(m.accuracy).toBeCloseTo(3 / 5, 12);
    expect(m.precision).toBeCloseTo(2 / 3, 12);
    expect(m.recall).toBeCloseTo(1 / 2, 12);
    expect(m.f1).toBeCloseTo((2 * (2 / 3) * 0.5) / (2 / 3 + 0.5), 12);
    expect(Number.isNaN(vsrMetrics(['Yes'], items.slice(0, 1)).recall)).toBe(true);
    expect(() => vsrMetrics(['Yes'], items)).toThrow(/1 predictions for 5 items/);
    expect(() => vsrMetrics(['On'], [{ subset: 'Controlled_Images_A', gold: 'On', id: 'x' }])).toThrow(/not a VSR item/);
  });

  it('option likelihood: argmax over the candidates, first on ties', () => {
    const item = { id: 'Controlled_Images_A-0', candidates: ['Left', 'Right', 'On', 'Under'], goldIndex: 2 };
    expect(pickOption([-3, -2, -0.5, -4])).toBe(2);
    expect(pickOption([-1, -1, -2])).toBe(0);
    expect(pickOption([-Infinity, -5])).toBe(1);
    expect(isCorrectByLikelihood([-3, -2, -0.5, -4], item)).toBe(true);
    expect(isCorrectByLikelihood([-0.5, -2, -0.5, -4], item)).toBe(false);
    expect(() => isCorrectByLikelihood([-1, -2], item)).toThrow('item Controlled_Images_A-0: 2 log-likelihoods for 4 candidates (Left, Right, On, Under)');
    expect(() => pickOption([-1, NaN])).toThrow(/log-likelihood 1 is NaN/);
    expect(() => pickOption([])).toThrow(/no options/);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Split

describe('splitItems', () => {
  it('draws what CPython draws: sorted(random.sample(range(n), int(0.2 * n))) after random.seed(seed)', () => {
    // Values printed by CPython 3.11 (both random.sample paths: the pool for small n, the set for large n).
    expect(splitItems(Array.from({ length: 30 }, (_, i) => i), { seed: 0 }).tuneIndices).toEqual([1, 8, 12, 13, 24, 27]);
    expect(splitItems(Array.from({ length: 20 }, (_, i) => i), { seed: 5 }).tuneIndices).toEqual([8, 11, 16, 19]);
    const a = splitItems(Array.from({ length: 412 }, (_, i) => i), { seed: 1 }); // Controlled_Images_A's size
    expect(a.tuneIndices.length).toBe(82);
    expect(a.tuneIndices.slice(0, 16)).toEqual([1, 4, 11, 13, 14, 15, 17, 32, 48, 51, 52, 60, 61, 68, 95, 97]);
    expect(a.tuneIndices.slice(-6)).toEqual([390, 391, 392, 403, 408, 410]);
    expect(splitItems(Array.from({ length: 1222 }, (_, i) => i)).tuneIndices.slice(0, 12)).toEqual([3, 4, 11, 17, 18, 25, 29, 34, 35, 36, 37, 42]); // seed 1 default
    const r = new PythonRandom(1);
    expect([r.getrandbits(32), r.getrandbits(32)]).toEqual([577090037, 2444712010]); // random.seed(1); random.getrandbits(32) twice
  });

  it('is deterministic, disjoint, complete and sized trunc(fraction * n)', () => {
    const items = Array.from({ length: 103 }, (_, i) => ({ id: `x${i}` }));
    const s = splitItems(items, { fraction: 0.2, seed: 7 });
    expect(splitItems(items, { fraction: 0.2, seed: 7 })).toEqual(s);
    expect(s.tune.length).toBe(20);
    expect(s.test.length).toBe(83);
    const all = [...s.tuneIndices, ...s.testIndices].sort((x, y) => x - y);
    expect(all).toEqual(items.map((_, i) => i));
    expect(new Set(s.tuneIndices).size).toBe(20);
    expect(s.tuneIndices.some((i) => s.testIndices.includes(i))).toBe(false);
    expect(s.tune).toEqual(s.tuneIndices.map((i) => items[i]));
    expect(s.test).toEqual(s.testIndices.map((i) => items[i]));
    expect([...s.tuneIndices].sort((x, y) => x - y)).toEqual(s.tuneIndices);
    expect(splitItems(items, { fraction: 0.2, seed: 8 }).tuneIndices).not.toEqual(s.tuneIndices);
    expect(splitItems(items, { fraction: 0.5, seed: 7 }).tune.length).toBe(51);
    expect(splitItems(items, { fraction: 0 }).tune).toEqual([]);
    expect(splitItems(items, { fraction: 1 }).test).toEqual([]);
    expect(splitItems([], {}).tune).toEqual([]);
    expect(splitItems(Array.from({ length: 4 }), {}).tune.length).toBe(0); // int(0.8) = 0
    expect(() => splitItems(items, { fraction: 1.5 })).toThrow(/fraction must be in \[0, 1\]/);
    expect(() => splitItems(items, { seed: 0.5 })).toThrow(/seed must be an integer/);
  });

  it('pickBest: highest accuracy, first on ties', () => {
    const sweep = [
      { alpha: 0.5, accuracy: 0.6 },
      { alpha: 1.2, accuracy: 0.7 },
      { alpha: 1.5, accuracy: 0.7 },
    ];
    expect(pickBest(sweep)).toBe(sweep[1]);
    expect(() => pickBest([])).toThrow(/no candidates/);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Results table

describe('resultsTable', () => {
  it('prints the paper\'s layout: methods by subset, percentages, then the chosen settings', () => {
    const table = resultsTable(
      [
        { subset: 'VSR', baseline: 0.624, scalingVis: { alpha: 1.2, accuracy: 0.649 }, adaptVis: { threshold: 0.4, alphaLow: 0.5, alphaHigh: 1.5, accuracy: 0.65 }, f1: { baseline: 0.513, adaptVis: 0.625 } },
        { subset: 'Controlled_Images_A', baseline: 0.603, scalingVis: { alpha: 0.8, accuracy: 0.645 }, adaptVis: { threshold: 0.3, alphaLow: 0.5, alphaHigh: 2, accuracy: 0.849 } },
        { subset: 'COCO_QA_two_obj', baseline: 0.582 },
      ],
      { model: 'LLaVA-1.5' },
    );
    expect(table).toBe(
      [
        '|  | Cont_A | COCO_2 | VSR EM | VSR F1 |',
        '|---|---:|---:|---:|---:|',
        '| LLaVA-1.5 | 60.3 | 58.2 | 62.4 | 51.3 |',
        '| +ScalingVis | 64.5 | - | 64.9 | - |',
        '| +AdaptVis | 84.9 | - | 65.0 | 62.5 |',
        '',
        'Accuracy (%) on the 80% split; settings chosen on the 20% split:',
        '',
        '| setting | Cont_A | COCO_2 | VSR EM | VSR F1 |',
        '|---|---:|---:|---:|---:|',
        '| ScalingVis alpha | 0.8 | - | 1.2 | 1.2 |',
        '| AdaptVis threshold, alpha_low, alpha_high | 0.3, 0.5, 2 | - | 0.4, 0.5, 1.5 | 0.4, 0.5, 1.5 |',
        '',
      ].join('\n'),
    );
    expect(resultsTable([{ subset: 'VG_QA_one_obj', baseline: 0.35912 }], { digits: 2 })).toContain('| model | 35.91 |');
    expect(() => resultsTable([{ subset: 'VSR', baseline: 0.5 }, { subset: 'VSR', baseline: 0.6 }])).toThrow(/VSR given twice/);
    expect(() => resultsTable([{ subset: 'VSR', baseline: 62.4 }])).toThrow(/baseline must be an accuracy in \[0, 1\], got 62\.4/);
    expect(() => resultsTable([{ subset: 'Controlled_Images_A', baseline: 0.5, f1: { baseline: 0.5 } }])).toThrow(/f1 is for VSR only/);
    expect(() => resultsTable([])).toThrow(/no results/);
  });
});
