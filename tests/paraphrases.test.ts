// Question paraphrases (src/eval/paraphrases.ts) and the generator's wording sets (src/eval/synthetic.ts,
// scripts/make-synthetic.ts --wordings): the tables (at least 4 wordings per question type and per sub-question
// function, about 1 in 5 held out, shared templates consistent), every wording answerable with the same answer and
// options, wording choice deterministic per seed, held-out wordings never in training output, and the default
// output byte-identical to the data made before paraphrases (the organism's training data).

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isCorrect } from '../src/eval/dataset.js';
import { WORDINGS, WORDING_KEYS, type WordingKey, type WordingParams, wordingById, wordingIndices } from '../src/eval/paraphrases.js';
import { COLOURS, SHAPES, iterateDataset, itemToJsonl, type SyntheticItem } from '../src/eval/synthetic.js';
import type { Relation } from '../src/eval/synthetic.js';
import { REPO_ROOT } from './helpers/fixtures.js';

/** FNV-1a 32-bit of a string's UTF-8 bytes, as 8 hex digits. */
function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(text)) {
    h ^= b;
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16).padStart(8, '0');
}

const jsonl = (items: SyntheticItem[]): string => items.map((i) => `${itemToJsonl(i)}\n`).join('');
const itemsOf = (opts: Parameters<typeof iterateDataset>[0]): SyntheticItem[] => [...iterateDataset(opts)].flatMap((s) => s.items);

const RELATIONS: Relation[] = ['left', 'right', 'above', 'below'];
const OPPOSITE: Record<Relation, Relation> = { left: 'right', right: 'left', above: 'below', below: 'above' };
const NAMES = ['red circle', 'orange square', 'white triangle'];

/** Every combination of parameters a table is filled with (objects from a small set). */
function paramsOf<K extends WordingKey>(key: K): WordingParams[K][] {
  const pairs = NAMES.flatMap((a) => NAMES.filter((b) => b !== a).map((b) => ({ a, b })));
  const all: { [P in WordingKey]: WordingParams[P][] } = {
    spatial: pairs,
    vsr: pairs.flatMap((p) => RELATIONS.map((relation) => ({ ...p, relation }))),
    relational_reasoning: pairs.flatMap((p) => RELATIONS.map((relation) => ({ ...p, relation }))),
    color: SHAPES.map((shape) => ({ shape })),
    shape: COLOURS.map((colour) => ({ colour })),
    count: [null, ...SHAPES].map((shape) => ({ shape })),
    exists: COLOURS.flatMap((colour) => SHAPES.map((shape) => ({ colour, shape }))),
    low_level_perception: COLOURS.flatMap((colour) => SHAPES.map((shape) => ({ colour, shape }))),
    spatial_perception: NAMES.flatMap((name) => (['horizontal', 'vertical'] as const).map((axis) => ({ name, axis }))),
  };
  return all[key] as WordingParams[K][];
}

const render = <K extends WordingKey>(key: K, index: number, p: WordingParams[K]): string => (WORDINGS[key][index]!.render as (x: WordingParams[K]) => string)(p);
const words = (text: string): string[] => text.toLowerCase().match(/[a-z]+/g) ?? [];

/**
 * The content of a question written in wording 0 (the original templates), read back with the original regexes, so
 * that the question in any other wording can be rebuilt from it.
 */
function contentOf(key: WordingKey, question: string): WordingParams[WordingKey] {
  const phrase: Record<string, Relation> = { 'left of': 'left', 'right of': 'right', above: 'above', below: 'below' };
  const match = (re: RegExp): RegExpExecArray => {
    const m = re.exec(question);
    if (!m) throw new Error(`${key}: "${question}" is not in wording 0`);
    return m;
  };
  switch (key) {
    case 'spatial': {
      const m = match(/^Where is the (\w+ \w+) in relation to the (\w+ \w+)\? Answer with left, right, above or below\.$/);
      return { a: m[1]!, b: m[2]! };
    }
    case 'vsr': {
      const m = match(/^The (\w+ \w+) is (left of|right of|above|below) the (\w+ \w+)\. True or false\?$/);
      return { a: m[1]!, relation: phrase[m[2]!]!, b: m[3]! };
    }
    case 'relational_reasoning': {
      const m = match(/^Is the (\w+ \w+) (left of|right of|above|below) the (\w+ \w+)\?$/);
      return { a: m[1]!, relation: phrase[m[2]!]!, b: m[3]! };
    }
    case 'color':
      return { shape: match(/^What color is the (circle|square|triangle)\?$/)[1] as WordingParams['color']['shape'] };
    case 'shape':
      return { colour: match(/^What shape is the (\w+) object\?$/)[1] as WordingParams['shape']['colour'] };
    case 'count': {
      const m = match(/^How many (objects|circles|squares|triangles) are there\?$/);
      return { shape: m[1] === 'objects' ? null : (m[1]!.slice(0, -1) as WordingParams['color']['shape']) };
    }
    case 'exists':
    case 'low_level_perception': {
      const m = match(/^Is there an? (\w+) (circle|square|triangle)\?$/);
      return { colour: m[1] as WordingParams['exists']['colour'], shape: m[2] as WordingParams['exists']['shape'] };
    }
    case 'spatial_perception': {
      const m = match(/^Is the (\w+ \w+) in the (left|top) half or the (right|bottom) half of the image\?$/);
      return { name: m[1]!, axis: m[2] === 'left' ? 'horizontal' : 'vertical' };
    }
  }
}

describe('the wording tables', () => {
  it('have at least 4 wordings per question type and per sub-question function, about 1 in 5 held out, wording 0 trained', () => {
    expect([...WORDING_KEYS].sort()).toEqual(
      ['color', 'count', 'exists', 'shape', 'spatial', 'vsr', 'low_level_perception', 'spatial_perception', 'relational_reasoning'].sort(),
    );
    for (const key of WORDING_KEYS) {
      const table = WORDINGS[key];
      expect(table.length, key).toBeGreaterThanOrEqual(4);
      table.forEach((w, i) => {
        expect(w.id).toBe(`${key}.w${i}`);
        expect(wordingById(w.id)).toBe(w);
      });
      expect(table[0]!.heldout, key).toBe(false);
      const heldout = table.filter((w) => w.heldout).length;
      expect(heldout, key).toBeGreaterThanOrEqual(1);
      expect(heldout, key).toBeLessThanOrEqual(Math.ceil(table.length / 4));
      expect(wordingIndices(key, 'fixed')).toEqual([0]);
      expect([...wordingIndices(key, 'train'), ...wordingIndices(key, 'heldout')].sort()).toEqual(wordingIndices(key, 'all'));
      expect(wordingIndices(key, 'train').length, key).toBeGreaterThanOrEqual(3);
    }
    for (const bad of ['spatial.w9', 'spatial', 'nope.w0', 'spatial.w1x']) expect(wordingById(bad)).toBeUndefined();
  });

  it('give distinct texts within a table, and held-out texts that no training wording of any table writes', () => {
    const trainTexts = new Set<string>();
    const heldoutTexts = new Map<string, string>();
    for (const key of WORDING_KEYS)
      for (const p of paramsOf(key)) {
        const texts = WORDINGS[key].map((_, i) => render(key, i, p));
        expect(new Set(texts).size, `${key} ${JSON.stringify(p)}`).toBe(texts.length);
        WORDINGS[key].forEach((w, i) => (w.heldout ? heldoutTexts.set(texts[i]!, w.id) : trainTexts.add(texts[i]!)));
      }
    for (const [text, id] of heldoutTexts) expect(trainTexts.has(text), `${id}: ${text}`).toBe(false);
  });

  it('share templates between tables where the meaning allows, with one text and one held-out status', () => {
    const byTemplate = new Map<string, { key: WordingKey; index: number }[]>();
    for (const key of WORDING_KEYS) WORDINGS[key].forEach((w, index) => byTemplate.set(w.template, [...(byTemplate.get(w.template) ?? []), { key, index }]));
    const shared = [...byTemplate].filter(([, uses]) => uses.length > 1);
    const pairsOfTables = new Set(shared.map(([, uses]) => [...new Set(uses.map((u) => u.key))].sort().join('+')));
    expect(pairsOfTables).toEqual(new Set(['relational_reasoning+vsr', 'exists+low_level_perception']));
    for (const [template, uses] of shared) {
      expect(template).toMatch(/^shared\./);
      expect(new Set(uses.map((u) => WORDINGS[u.key][u.index]!.heldout)).size, template).toBe(1);
      for (const p of paramsOf(uses[0]!.key)) expect(new Set(uses.map((u) => render(u.key, u.index, p as never))).size, template).toBe(1);
    }
    // The yes/no relation question asked as a vsr main question and as a relational sub-question.
    expect(WORDINGS.vsr.some((w) => w.render({ a: 'red circle', relation: 'left', b: 'blue square' }) === 'Is the red circle left of the blue square?')).toBe(true);
  });

  it('every wording names the same objects and relation and, where wording 0 lists the answers, lists them too', () => {
    for (const key of WORDING_KEYS)
      for (const p of paramsOf(key))
        WORDINGS[key].forEach((w, i) => {
          const text = render(key, i, p);
          const ws = words(text);
          const has = (phrase: string) => expect(text.toLowerCase(), `${w.id}: ${text}`).toContain(phrase);
          switch (key) {
            case 'spatial': {
              const q = p as WordingParams['spatial'];
              has(`the ${q.a}`);
              has(`the ${q.b}`);
              for (const option of ['left', 'right', 'above', 'below']) expect(ws, `${w.id}: ${text}`).toContain(option);
              break;
            }
            case 'vsr':
            case 'relational_reasoning': {
              const q = p as WordingParams['vsr'];
              // "the A is ... the B", in this order, with the asked relation and never its opposite.
              const lower = text.toLowerCase();
              expect(lower.indexOf(`the ${q.a}`), `${w.id}: ${text}`).toBeGreaterThanOrEqual(0);
              expect(lower.indexOf(`the ${q.b}`), `${w.id}: ${text}`).toBeGreaterThan(lower.indexOf(`the ${q.a}`));
              expect(ws, `${w.id}: ${text}`).toContain(q.relation);
              expect(ws, `${w.id}: ${text}`).not.toContain(OPPOSITE[q.relation]);
              // A vsr wording asks for true or false, or is a yes/no question, which the scorer counts as true/false.
              if (key === 'vsr' && !/true or false/i.test(text)) {
                expect(text, w.id).toMatch(/^Is .*\?$/);
                expect(isCorrect('Yes', { answer: 'true' }) && isCorrect('No', { answer: 'false' })).toBe(true);
              }
              if (key === 'relational_reasoning') expect(text, w.id).toMatch(/\?$/);
              break;
            }
            case 'color': {
              const q = p as WordingParams['color'];
              has(`the ${q.shape}`);
              expect(ws).toContain('color');
              break;
            }
            case 'shape': {
              const q = p as WordingParams['shape'];
              has(`the ${q.colour} object`);
              break;
            }
            case 'count': {
              const q = p as WordingParams['count'];
              has(q.shape === null ? 'objects' : `${q.shape}s`);
              break;
            }
            case 'exists':
            case 'low_level_perception': {
              const q = p as WordingParams['exists'];
              has(`${/^[aeiou]/.test(q.colour) ? 'an' : 'a'} ${q.colour} ${q.shape}`);
              expect(text).toMatch(/^(Is|Does|Can) .*\?$/);
              break;
            }
            case 'spatial_perception': {
              const q = p as WordingParams['spatial_perception'];
              has(`the ${q.name}`);
              for (const option of q.axis === 'horizontal' ? ['left', 'right'] : ['top', 'bottom']) expect(ws, `${w.id}: ${text}`).toContain(option);
              expect(ws).toContain('half');
              break;
            }
          }
        });
  });
});

describe('wording sets of the generator', () => {
  const opts = { seed: 31, scenes: 150 };
  const fixed = itemsOf(opts);
  const sets = { train: itemsOf({ ...opts, wordings: 'train' }), heldout: itemsOf({ ...opts, wordings: 'heldout' }), all: itemsOf({ ...opts, wordings: 'all' }) };

  it('leave the default output byte-identical to the data made before paraphrases', () => {
    // Hashes of the JSONL written before src/eval/paraphrases.ts existed (the organism's held-out seed and a
    // many-questions-per-scene set): the shipped organism was trained on output of this generator.
    expect(fnv1a(jsonl(itemsOf({ seed: 2002, scenes: 60 })))).toBe('e55e3be7');
    expect(fnv1a(jsonl(itemsOf({ seed: 7, scenes: 30, questionsPerScene: 12 })))).toBe('841a533f');
    expect(jsonl(itemsOf({ ...opts, wordings: 'fixed' }))).toBe(jsonl(fixed));
    for (const item of fixed) {
      expect(item).not.toHaveProperty('wording');
      for (const s of item.sub_questions ?? []) expect(s).not.toHaveProperty('wording');
    }
  });

  it('change only the question text: ids, answers, options, types, functions and sub-questions stay', () => {
    const shape = (items: SyntheticItem[]) =>
      items.map((i) => [i.id, i.image, i.answer, i.type, i.function, i.options, (i.sub_questions ?? []).map((s) => [s.id, s.answer, s.function, s.options])]);
    for (const [name, items] of Object.entries(sets)) {
      expect(shape(items), name).toEqual(shape(fixed));
      // More than wording 0 is used, so the texts do change.
      expect(items.filter((it, k) => it.question !== fixed[k]!.question).length, name).toBeGreaterThan(items.length / 2);
    }
  });

  it('write each question in the wording its record names, rebuilt from the same content', () => {
    for (const [name, items] of Object.entries(sets))
      items.forEach((item, k) => {
        const pairs: [string, string, string | undefined, boolean | undefined, WordingKey][] = [
          [item.question, fixed[k]!.question, item.wording, item.wording_heldout, item.type as WordingKey],
          ...(item.sub_questions ?? []).map((s, j): [string, string, string | undefined, boolean | undefined, WordingKey] => [
            s.question,
            fixed[k]!.sub_questions![j]!.question,
            s.wording,
            s.wording_heldout,
            s.function as WordingKey,
          ]),
        ];
        for (const [question, original, wording, heldout, key] of pairs) {
          expect(wording, `${name} ${item.id}`).toMatch(new RegExp(`^${key}\\.w\\d+$`));
          const w = wordingById(wording!)!;
          expect(heldout).toBe(w.heldout);
          expect(question).toBe(render(key, Number(wording!.split('.w')[1]), contentOf(key, original) as never));
        }
      });
  });

  it('keep held-out wordings out of training output, and only held-out ones in a held-out set', () => {
    const flags = (items: SyntheticItem[]) => items.flatMap((i) => [i.wording_heldout, ...(i.sub_questions ?? []).map((s) => s.wording_heldout)]);
    expect(new Set(flags(sets.train))).toEqual(new Set([false]));
    expect(new Set(flags(sets.heldout))).toEqual(new Set([true]));
    const all = flags(sets.all);
    const share = all.filter(Boolean).length / all.length;
    expect(share).toBeGreaterThan(0.12);
    expect(share).toBeLessThan(0.28);
    // Every wording of a set is used in 150 scenes.
    const used = (items: SyntheticItem[]) => new Set(items.flatMap((i) => [i.wording!, ...(i.sub_questions ?? []).map((s) => s.wording!)]));
    const expected = (set: 'train' | 'heldout' | 'all') => new Set(WORDING_KEYS.flatMap((key) => wordingIndices(key, set).map((i) => `${key}.w${i}`)));
    for (const set of ['train', 'heldout', 'all'] as const) expect(used(sets[set]), set).toEqual(expected(set));
  });

  it('are deterministic per seed', () => {
    for (const set of ['train', 'heldout', 'all'] as const) expect(jsonl(itemsOf({ ...opts, wordings: set }))).toBe(jsonl(sets[set]));
    const other = itemsOf({ seed: 32, scenes: 150, wordings: 'all' });
    expect(other.map((i) => i.wording)).not.toEqual(sets.all.map((i) => i.wording));
    // The wording of a scene's questions does not depend on how many scenes come before or after.
    expect(itemsOf({ ...opts, scenes: 20, wordings: 'all' })).toEqual(sets.all.slice(0, itemsOf({ ...opts, scenes: 20 }).length));
    expect(() => itemsOf({ seed: 1, scenes: 1, wordings: 'some' as 'all' })).toThrow(/wordings must be one of fixed, train, heldout, all, got "some"/);
  });

  it('make-synthetic --wordings writes them; a bad value fails with the usage line', () => {
    const tsx = join(REPO_ROOT, 'node_modules/.bin/tsx');
    const out = mkdtempSync(join(tmpdir(), 'vlmscope-paraphrases-'));
    const run = (...args: string[]) => spawnSync(tsx, [join(REPO_ROOT, 'scripts/make-synthetic.ts'), '--out', out, '--seed', '31', '--scenes', '5', ...args], { encoding: 'utf8', timeout: 120_000 });
    const r = run('--wordings', 'heldout');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/wrote 5 scenes \(64x64, heldout wordings\)/);
    expect(r.stdout).toMatch(/wordings spatial +: w4 5/);
    expect(readFileSync(join(out, 'questions.jsonl'), 'utf8')).toBe(jsonl(itemsOf({ seed: 31, scenes: 5, wordings: 'heldout' })));
    const bad = run('--wordings', 'novel');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/^make-synthetic: --wordings must be one of fixed, train, heldout, all, got "novel"\n/);
  });
});
