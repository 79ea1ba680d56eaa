// Question-file readers (src/eval/dataset.ts): vlmscope JSONL (with and without sub-questions), VSR JSONL and
// What'sUp JSON written to a temp dir, errors naming file:line, and answer normalisation / scoring.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodePng } from '../src/io/image.js';
import { detectFormat, isCorrect, normalizeAnswer, parseQuestions, readQuestions, type EvalItem } from '../src/eval/dataset.js';
import { generateDataset, itemToJsonl } from '../src/eval/synthetic.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'vlmscope-dataset-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function write(rel: string, content: string | Uint8Array): string {
  const p = join(dir, rel);
  mkdirSync(join(p, '..'), { recursive: true });
  writeFileSync(p, content);
  return p;
}

async function readError(path: string): Promise<string> {
  try {
    await readQuestions(path);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error(`reading ${path} did not fail`);
}

describe('vlmscope JSONL', () => {
  it('reads a generated set, sub-questions after their main question', async () => {
    const d = generateDataset({ seed: 11, scenes: 3 });
    for (const s of d.scenes) write(`syn/images/${s.id}.png`, encodePng(s.image));
    const path = write('syn/questions.jsonl', d.items.map((i) => `${itemToJsonl(i)}\n`).join(''));
    const items = await readQuestions(path);
    const subCount = d.items.reduce((n, i) => n + (i.sub_questions?.length ?? 0), 0);
    expect(subCount).toBeGreaterThan(0);
    expect(items.length).toBe(d.items.length + subCount);
    let k = 0;
    for (const main of d.items) {
      const it0 = items[k++]!;
      expect(it0).toEqual({
        id: main.id,
        imagePath: join(dir, 'syn', main.image),
        question: main.question,
        answer: main.answer,
        type: main.type,
        function: main.function,
        options: main.options,
      } satisfies EvalItem);
      (main.sub_questions ?? []).forEach((s, subIndex) => {
        expect(items[k++]).toEqual({
          id: s.id,
          imagePath: join(dir, 'syn', main.image),
          question: s.question,
          answer: s.answer,
          type: 'subquestion',
          function: s.function,
          options: s.options,
          mainId: main.id,
          subIndex,
        } satisfies EvalItem);
      });
    }
    const mainsOnly = await readQuestions(path, { includeSubQuestions: false });
    expect(mainsOnly.map((i) => i.id)).toEqual(d.items.map((i) => i.id));
    expect(mainsOnly.every((i) => i.mainId === undefined)).toBe(true);
  });

  it('keeps the wording id and held-out flag of questions and sub-questions (make-synthetic --wordings)', () => {
    const d = generateDataset({ seed: 11, scenes: 3, wordings: 'all' });
    const items = parseQuestions(d.items.map((i) => `${itemToJsonl(i)}\n`).join(''), 'syn/questions.jsonl');
    const records = d.items.flatMap((main) => [main, ...(main.sub_questions ?? [])]);
    expect(items.map((i) => i.id)).toEqual(records.map((r) => r.id));
    items.forEach((item, k) => {
      expect(item.wording).toMatch(/^[a-z_]+\.w\d+$/);
      expect([item.wording, item.wordingHeldout]).toEqual([records[k]!.wording, records[k]!.wording_heldout]);
    });
    expect(items.some((i) => i.type === 'subquestion' && i.wordingHeldout === true)).toBe(true);
    // Records without wordings give items without the fields (as before).
    const plain = parseQuestions(itemToJsonl(generateDataset({ seed: 11, scenes: 1 }).items[0]!), 'q.jsonl');
    for (const item of plain) expect(Object.keys(item)).not.toContain('wording');
  });

  it('keeps absolute and URL images, ignores blank lines, accepts minimal records', () => {
    const text = [
      '{"id": "a", "image": "/abs/x.png", "question": "Q?", "answer": "yes", "type": "exists", "function": "low_level_perception"}',
      '',
      '{"id": "b", "image": "https://example.org/y.png", "question": "Q?", "answer": "no", "type": "exists", "function": "low_level_perception"}',
      '{"id": "c", "image": "../img/z.png", "question": "Q?", "answer": "two", "type": "count", "function": "low_level_perception"}',
    ].join('\n');
    const items = parseQuestions(text, 'data/sets/q.jsonl');
    expect(items.map((i) => i.imagePath)).toEqual(['/abs/x.png', 'https://example.org/y.png', 'data/img/z.png']);
    expect(items[0]!.options).toBeUndefined();
    expect(parseQuestions(text, 'https://host/sets/q.jsonl')[2]!.imagePath).toBe('https://host/img/z.png');
  });

  it('reports malformed lines with file:line', async () => {
    const ok = '{"id": "a", "image": "i.png", "question": "Q?", "answer": "yes", "type": "exists", "function": "low_level_perception"}';
    const cases: [string, string, RegExp][] = [
      ['bad-json.jsonl', `${ok}\n\n{"id": "b", "image": oops}\n`, /bad-json\.jsonl:3: invalid JSON/],
      ['missing.jsonl', `${ok}\n{"id": "b", "image": "i.png", "question": "Q?", "type": "exists", "function": "decision"}\n`, /missing\.jsonl:2: missing field "answer"/],
      ['empty-answer.jsonl', `${ok}\n${ok.replace('"a"', '"b"').replace('"yes"', '""')}\n`, /empty-answer\.jsonl:2: field "answer" must be a non-empty string/],
      ['bad-function.jsonl', ok.replace('low_level_perception', 'seeing'), /bad-function\.jsonl:1: field "function" is "seeing", expected one of low_level_perception, /],
      ['bad-type.jsonl', ok.replace('"exists"', '"colour"'), /bad-type\.jsonl:1: field "type" is "colour", expected one of spatial, /],
      ['not-option.jsonl', ok.replace('"function"', '"options": ["no", "maybe"], "function"'), /not-option\.jsonl:1: answer "yes" is not one of options/],
      ['dup.jsonl', `${ok}\n${ok}\n`, /dup\.jsonl:2: duplicate id "a" \(first on line 1\)/],
      ['bad-wording.jsonl', ok.replace('"function"', '"wording": 3, "function"'), /bad-wording\.jsonl:1: field "wording" must be a non-empty string, got 3/],
      ['bad-heldout.jsonl', ok.replace('"function"', '"wording": "exists.w4", "wording_heldout": "yes", "function"'), /bad-heldout\.jsonl:1: field "wording_heldout" must be true or false, got "yes"/],
      ['heldout-alone.jsonl', ok.replace('"function"', '"wording_heldout": true, "function"'), /heldout-alone\.jsonl:1: field "wording_heldout" is given without a "wording" id/],
      ['not-object.jsonl', `${ok}\n[1, 2]\n`, /not-object\.jsonl:2: line must be a JSON object/],
      [
        'bad-sub.jsonl',
        ok.replace('}', ', "sub_questions": [{"id": "a-sub0", "question": "Is there?", "answer": "yes", "function": "low_level_perception"}, {"id": "a-sub1", "question": "Q", "function": "decision"}]}'),
        /bad-sub\.jsonl:1: sub_questions\[1\]: missing field "answer"/,
      ],
      [
        'bad-sub-wording.jsonl',
        ok.replace('}', ', "sub_questions": [{"id": "a-sub0", "question": "Is there?", "answer": "yes", "function": "low_level_perception", "wording": ""}]}'),
        /bad-sub-wording\.jsonl:1: sub_questions\[0\]: field "wording" must be a non-empty string, got ""/,
      ],
    ];
    for (const [name, content, re] of cases) {
      const msg = await readError(write(`bad/${name}`, content));
      expect(msg).toMatch(re);
      expect(msg.startsWith(join(dir, 'bad', name))).toBe(true);
    }
    expect(await readError(join(dir, 'nope.jsonl'))).toMatch(/cannot read .*nope\.jsonl: file not found/);
    expect(await readError(write('bad/empty.jsonl', '\n\n'))).toMatch(/empty\.jsonl: empty question file/);
  });
});

describe('VSR JSONL', () => {
  const lines = [
    {
      image: '000000017697.jpg',
      image_link: 'http://images.cocodataset.org/train2017/000000017697.jpg',
      caption: 'The car is behind the suitcase.',
      label: 1,
      relation: 'behind',
      subj: 'car',
      obj: 'suitcase',
    },
    { image: '000000000001.jpg', caption: 'The cat is on the bed', label: 0, relation: 'on' },
  ];

  it('turns captions into true/false questions, images next to the file or in images/', async () => {
    write('vsr/images/000000017697.jpg', 'x');
    write('vsr/000000000001.jpg', 'x');
    const path = write('vsr/test.jsonl', lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
    expect(detectFormat(lines.map((l) => JSON.stringify(l)).join('\n'))).toBe('vsr');
    const items = await readQuestions(path);
    expect(items).toEqual([
      {
        id: 'vsr-1',
        imagePath: join(dir, 'vsr/images/000000017697.jpg'),
        question: 'The car is behind the suitcase. True or false?',
        answer: 'true',
        type: 'vsr',
        function: 'relational_reasoning',
      },
      {
        id: 'vsr-2',
        imagePath: join(dir, 'vsr/000000000001.jpg'),
        question: 'The cat is on the bed. True or false?',
        answer: 'false',
        type: 'vsr',
        function: 'relational_reasoning',
      },
    ]);
  });

  it('rejects bad labels and missing fields with file:line', async () => {
    const bad = (i: number, patch: Record<string, unknown>): string =>
      lines.map((l, k) => JSON.stringify(k === i ? { ...l, ...patch } : l)).join('\n');
    expect(await readError(write('vsr/bad-label.jsonl', bad(1, { label: 2 })))).toMatch(/bad-label\.jsonl:2: bad label 2: expected 0 or 1/);
    expect(await readError(write('vsr/str-label.jsonl', bad(1, { label: 'yes' })))).toMatch(/str-label\.jsonl:2: bad label "yes"/);
    expect(await readError(write('vsr/no-label.jsonl', bad(1, { label: undefined })))).toMatch(/no-label\.jsonl:2: missing field "label"/);
    expect(await readError(write('vsr/no-image.jsonl', bad(1, { image: undefined })))).toMatch(/no-image\.jsonl:2: missing field "image"/);
    expect(await readError(write('vsr/no-caption.jsonl', bad(1, { caption: undefined })))).toMatch(/no-caption\.jsonl:2: missing field "caption"/);
  });
});

describe("What'sUp JSON", () => {
  const data = [
    {
      image_path: 'data/controlled_images/beer-bottle_on_armchair.jpeg',
      caption_options: ['A beer bottle on a armchair', 'A beer bottle under a armchair', 'A beer bottle to the left of a armchair', 'A beer bottle to the right of a armchair'],
    },
    {
      image_path: 'data/controlled_images/cup_left_of_plate.jpeg',
      caption_options: ['A cup to the left of a plate', 'A cup to the right of a plate', 'A cup on a plate', 'A cup under a plate'],
    },
    {
      image_path: 'data/controlled_images/dog_under_table.jpeg',
      caption_options: ['A dog under a table', 'A dog on a table', 'A dog to the left of a table', 'A dog to the right of a table'],
    },
  ];

  it('makes deterministic 4-way letter questions whose answer is the first caption', async () => {
    // What'sUp paths are relative to the repository root; the JSON lives in data/.
    write('whatsup/data/controlled_images/beer-bottle_on_armchair.jpeg', 'x');
    const path = write('whatsup/data/controlled_images_dataset.json', JSON.stringify(data, null, 2));
    const items = await readQuestions(path);
    expect(items.length).toBe(3);
    items.forEach((item, i) => {
      expect(item.id).toBe(`whatsup-${i}`);
      expect(item.type).toBe('whatsup');
      expect(item.function).toBe('relational_reasoning');
      expect(item.options).toEqual(['a', 'b', 'c', 'd']);
      const m = /^Which caption describes the image\? Options: \(a\) (.+) \(b\) (.+) \(c\) (.+) \(d\) (.+) Answer with a, b, c or d\.$/.exec(item.question)!;
      expect(m).not.toBeNull();
      const shown = m.slice(1, 5);
      expect([...shown].sort()).toEqual([...data[i]!.caption_options].sort());
      expect(shown['abcd'.indexOf(item.answer)]).toBe(data[i]!.caption_options[0]);
    });
    expect(items[0]!.imagePath).toBe(join(dir, 'whatsup/data/controlled_images/beer-bottle_on_armchair.jpeg'));
    // Not found anywhere: the path relative to the file.
    expect(items[1]!.imagePath).toBe(join(dir, 'whatsup/data/data/controlled_images/cup_left_of_plate.jpeg'));
    expect(await readQuestions(path)).toEqual(items);
    // Shuffles differ between items, so the answer letter is not always the same.
    const many = parseQuestions(JSON.stringify(Array.from({ length: 40 }, () => data[0])), 'w.json');
    expect(new Set(many.map((i) => i.answer))).toEqual(new Set(['a', 'b', 'c', 'd']));
  });

  it('names the line of a bad item', async () => {
    const bad = [data[0], data[1], { image_path: 'x.jpeg' }];
    expect(await readError(write('whatsup/bad.json', JSON.stringify(bad, null, 2)))).toMatch(/bad\.json:20: item 2: missing field "caption_options"/);
    const short = [{ image_path: 'x.jpeg', caption_options: ['only one'] }];
    expect(await readError(write('whatsup/short.json', JSON.stringify(short)))).toMatch(/short\.json:1: item 0: field "caption_options" must be a list of 2 to 26/);
    expect(await readError(write('whatsup/triples.json', '[\n  [37777, "A photo of a dining table to the left of a refrigerator", "A photo"]\n]'))).toMatch(
      /triples\.json:2: item 0: a list .* is not supported/,
    );
    expect(await readError(write('whatsup/broken.json', '[\n  {"image_path": "x.jpeg",\n   "caption_options": ["a", "b"]\n  ,,\n]'))).toMatch(/broken\.json:\d+: invalid JSON/);
  });
});

describe('scoring', () => {
  it('normalizeAnswer', () => {
    const cases: [string, string][] = [
      ['Yes.', 'yes'],
      ['  True', 'true'],
      ['FALSE!', 'false'],
      ['Left, because the red circle is ...', 'left'],
      ['left', 'left'],
      ['(a) A beer bottle on a armchair', 'a'],
      ['b)', 'b'],
      ['3', 'three'],
      ['0 objects', 'zero'],
      ['4.', 'four'],
      ['Two', 'two'],
      ['"Below"', 'below'],
      ['- above', 'above'],
      ['', ''],
      ['  ...  ', ''],
      ['\nred\n', 'red'],
    ];
    for (const [input, want] of cases) expect(normalizeAnswer(input), JSON.stringify(input)).toBe(want);
  });

  it('isCorrect', () => {
    const item = (answer: string): Pick<EvalItem, 'answer'> => ({ answer });
    expect(isCorrect('Left.', item('left'))).toBe(true);
    expect(isCorrect('right', item('left'))).toBe(false);
    expect(isCorrect('left right', item('right'))).toBe(false);
    expect(isCorrect('3', item('three'))).toBe(true);
    expect(isCorrect('True', item('true'))).toBe(true);
    expect(isCorrect('yes', item('true'))).toBe(true);
    expect(isCorrect('No', item('false'))).toBe(true);
    expect(isCorrect('no', item('true'))).toBe(false);
    expect(isCorrect('true', item('yes'))).toBe(false);
    expect(isCorrect('(c)', item('c'))).toBe(true);
    expect(isCorrect('', item('left'))).toBe(false);
    expect(isCorrect('Orange', item('orange'))).toBe(true);
  });
});
