// Question wordings of the synthetic set (issue 14). With one fixed template per question type and per
// sub-question function, any head that sees the question text separates the functions, so functional-head probes
// read the template instead of the content. Here every main question type and every sub-question function has
// several paraphrases (WORDINGS), all answerable with the same answer from the same options, and a few of them
// are held out: they are never written into a training set (`--wordings train`), only into evaluation sets
// (`--wordings heldout` or `all`), so a probe can be trained on some wordings and tested on others.
//
// Rules the tables keep (tests/paraphrases.test.ts checks them):
//   - wording 0 of every table is the original template, the only one the shipped organism was trained on; the
//     generator's default ('fixed') writes it and nothing else, byte-identical to the data made before wordings;
//   - at least 4 wordings per table, of which about 1 in 5 is held out (never wording 0);
//   - every wording names the same objects and relation as wording 0 and, where wording 0 lists the allowed
//     answers, lists them too; so the gold answer and `options` never depend on the wording;
//   - some templates are shared between tables where the meaning allows (the yes/no relation questions of the
//     vsr type and of the relational_reasoning sub-question; all existence questions of the exists type and of the
//     low_level_perception sub-question): a shared template has one `template` name and one held-out status in
//     every table that uses it, so its text never lands on the training side under one function and on the
//     held-out side under another.
//
// Browser-safe and free of random numbers: the generator (src/eval/synthetic.ts) draws which wording to use from
// a stream of its own, so the questions' content and answers are the same in every wording set.

import type { Colour, Relation, Shape } from './synthetic.js';

/** The phrase used in statements: "The A is {left of} the B." (the original templates' wording). */
export const RELATION_PHRASE: Readonly<Record<Relation, string>> = {
  left: 'left of',
  right: 'right of',
  above: 'above',
  below: 'below',
};

/** A longer phrase some paraphrases use: "the A is {to the left of} the B". */
const RELATION_PHRASE_LONG: Readonly<Record<Relation, string>> = {
  left: 'to the left of',
  right: 'to the right of',
  above: 'above',
  below: 'below',
};

/** "a" or "an" before a word. */
export const article = (word: string): string => (/^[aeiou]/.test(word) ? 'an' : 'a');

/**
 * Which wordings the generator writes: 'fixed' only wording 0 with no `wording` field (the original data);
 * 'train' the wordings that are not held out; 'heldout' only the held-out ones; 'all' every wording. Each
 * non-fixed question records its wording id and whether it is held out.
 */
export const WORDING_SETS = ['fixed', 'train', 'heldout', 'all'] as const;
export type WordingSet = (typeof WORDING_SETS)[number];

/**
 * What each table's templates are filled with. Main question types key their own tables; sub-questions are keyed
 * by their function (the synthetic set has one sub-question form per function).
 */
export interface WordingParams {
  spatial: { a: string; b: string };
  vsr: { a: string; relation: Relation; b: string };
  color: { shape: Shape };
  shape: { colour: Colour };
  /** `shape` null: all objects ("How many objects ..."). */
  count: { shape: Shape | null };
  exists: { colour: Colour; shape: Shape };
  low_level_perception: { colour: Colour; shape: Shape };
  /** horizontal: left half / right half; vertical: top half / bottom half. */
  spatial_perception: { name: string; axis: 'horizontal' | 'vertical' };
  relational_reasoning: { a: string; relation: Relation; b: string };
}
export type WordingKey = keyof WordingParams;
export const WORDING_KEYS: readonly WordingKey[] = [
  'spatial',
  'vsr',
  'color',
  'shape',
  'count',
  'exists',
  'low_level_perception',
  'spatial_perception',
  'relational_reasoning',
];

export interface Wording<P> {
  /** "<key>.w<index>", e.g. "spatial.w2"; written to the question record as `wording`. */
  id: string;
  /** The template's name: the id, or "shared.<name>" for a template that several tables use. */
  template: string;
  /** Held out: only in evaluation sets. */
  heldout: boolean;
  render: (params: P) => string;
}

interface Template<P> {
  /** Set for templates shared between tables. */
  shared?: string;
  heldout: boolean;
  render: (params: P) => string;
}

type RelationParams = { a: string; relation: Relation; b: string };
type ObjectParams = { colour: Colour; shape: Shape };

// Shared templates: one object per template, used by every table that lists it.
const IS_RELATION: Template<RelationParams> = { shared: 'is-relation', heldout: false, render: (p) => `Is the ${p.a} ${RELATION_PHRASE[p.relation]} the ${p.b}?` };
const IS_IT_TRUE_THAT: Template<RelationParams> = {
  shared: 'is-it-true-that',
  heldout: false,
  render: (p) => `Is it true that the ${p.a} is ${RELATION_PHRASE[p.relation]} the ${p.b}?`,
};
const EXISTS_TEMPLATES: readonly Template<ObjectParams>[] = [
  { shared: 'is-there', heldout: false, render: (p) => `Is there ${article(p.colour)} ${p.colour} ${p.shape}?` },
  { shared: 'is-there-in-the-image', heldout: false, render: (p) => `Is there ${article(p.colour)} ${p.colour} ${p.shape} in the image?` },
  { shared: 'does-the-image-contain', heldout: false, render: (p) => `Does the image contain ${article(p.colour)} ${p.colour} ${p.shape}?` },
  { shared: 'can-you-see', heldout: false, render: (p) => `Can you see ${article(p.colour)} ${p.colour} ${p.shape}?` },
  { shared: 'does-the-image-show', heldout: true, render: (p) => `Does the image show ${article(p.colour)} ${p.colour} ${p.shape}?` },
];

const halves = (axis: 'horizontal' | 'vertical'): [string, string] => (axis === 'horizontal' ? ['left', 'right'] : ['top', 'bottom']);
const plural = (shape: Shape | null): string => (shape === null ? 'objects' : `${shape}s`);

const TEMPLATES: { readonly [K in WordingKey]: readonly Template<WordingParams[K]>[] } = {
  spatial: [
    { heldout: false, render: (p) => `Where is the ${p.a} in relation to the ${p.b}? Answer with left, right, above or below.` },
    { heldout: false, render: (p) => `Is the ${p.a} left of, right of, above or below the ${p.b}?` },
    { heldout: false, render: (p) => `Where is the ${p.a} relative to the ${p.b}: left, right, above or below?` },
    { heldout: false, render: (p) => `Relative to the ${p.b}, where is the ${p.a}? Answer with left, right, above or below.` },
    { heldout: true, render: (p) => `In which direction from the ${p.b} is the ${p.a}: left, right, above or below?` },
  ],
  vsr: [
    { heldout: false, render: (p) => `The ${p.a} is ${RELATION_PHRASE[p.relation]} the ${p.b}. True or false?` },
    { heldout: false, render: (p) => `True or false: the ${p.a} is ${RELATION_PHRASE_LONG[p.relation]} the ${p.b}.` },
    IS_RELATION,
    IS_IT_TRUE_THAT,
    { heldout: true, render: (p) => `Decide whether this is true or false: the ${p.a} is ${RELATION_PHRASE[p.relation]} the ${p.b}.` },
  ],
  color: [
    { heldout: false, render: (p) => `What color is the ${p.shape}?` },
    { heldout: false, render: (p) => `Which color is the ${p.shape}?` },
    { heldout: false, render: (p) => `What is the color of the ${p.shape}?` },
    { heldout: false, render: (p) => `Name the color of the ${p.shape}.` },
    { heldout: true, render: (p) => `The ${p.shape} has which color?` },
  ],
  shape: [
    { heldout: false, render: (p) => `What shape is the ${p.colour} object?` },
    { heldout: false, render: (p) => `Which shape does the ${p.colour} object have?` },
    { heldout: false, render: (p) => `What is the shape of the ${p.colour} object?` },
    { heldout: false, render: (p) => `Is the ${p.colour} object a circle, a square or a triangle?` },
    { heldout: true, render: (p) => `Name the shape of the ${p.colour} object.` },
  ],
  count: [
    { heldout: false, render: (p) => `How many ${plural(p.shape)} are there?` },
    { heldout: false, render: (p) => `How many ${plural(p.shape)} are in the image?` },
    { heldout: false, render: (p) => `Count the ${plural(p.shape)}.` },
    { heldout: false, render: (p) => `What is the number of ${plural(p.shape)}?` },
    { heldout: true, render: (p) => `How many ${plural(p.shape)} can you see?` },
  ],
  exists: EXISTS_TEMPLATES,
  low_level_perception: EXISTS_TEMPLATES,
  spatial_perception: [
    { heldout: false, render: (p) => `Is the ${p.name} in the ${halves(p.axis)[0]} half or the ${halves(p.axis)[1]} half of the image?` },
    { heldout: false, render: (p) => `Which half of the image is the ${p.name} in, the ${halves(p.axis)[0]} or the ${halves(p.axis)[1]}?` },
    { heldout: false, render: (p) => `Is the ${p.name} in the ${halves(p.axis)[0]} or the ${halves(p.axis)[1]} half of the image?` },
    { heldout: false, render: (p) => `In which half of the image is the ${p.name}: ${halves(p.axis)[0]} or ${halves(p.axis)[1]}?` },
    { heldout: true, render: (p) => `Does the ${p.name} lie in the ${halves(p.axis)[0]} half or the ${halves(p.axis)[1]} half of the image?` },
  ],
  relational_reasoning: [
    IS_RELATION,
    IS_IT_TRUE_THAT,
    { heldout: false, render: (p) => `Would you say the ${p.a} is ${RELATION_PHRASE_LONG[p.relation]} the ${p.b}?` },
    { heldout: false, render: (p) => `Is the ${p.a} located ${RELATION_PHRASE_LONG[p.relation]} the ${p.b}?` },
    { heldout: true, render: (p) => `Looking at the image, is the ${p.a} ${RELATION_PHRASE[p.relation]} the ${p.b}?` },
  ],
};

function buildTable<K extends WordingKey>(key: K): readonly Wording<WordingParams[K]>[] {
  return TEMPLATES[key].map((t, i) => ({
    id: `${key}.w${i}`,
    template: t.shared !== undefined ? `shared.${t.shared}` : `${key}.w${i}`,
    heldout: t.heldout,
    render: t.render,
  }));
}

/** Every table: wording i of key K has id "K.wi". */
export const WORDINGS: { readonly [K in WordingKey]: readonly Wording<WordingParams[K]>[] } = {
  spatial: buildTable('spatial'),
  vsr: buildTable('vsr'),
  color: buildTable('color'),
  shape: buildTable('shape'),
  count: buildTable('count'),
  exists: buildTable('exists'),
  low_level_perception: buildTable('low_level_perception'),
  spatial_perception: buildTable('spatial_perception'),
  relational_reasoning: buildTable('relational_reasoning'),
};

/** A question's content, ready to be put in any wording of its table. */
export interface Phrasing {
  key: WordingKey;
  /** The question in wording `index` of the key's table. */
  render: (index: number) => string;
}

export function phrasing<K extends WordingKey>(key: K, params: WordingParams[K]): Phrasing {
  const table = WORDINGS[key] as readonly Wording<WordingParams[K]>[];
  return {
    key,
    render: (index) => {
      const w = table[index];
      if (w === undefined) throw new Error(`paraphrases: ${key} has no wording ${index} (it has ${table.length})`);
      return w.render(params);
    },
  };
}

/** Indices of the wordings of `key` in a set ('fixed': wording 0 only). */
export function wordingIndices(key: WordingKey, set: WordingSet): number[] {
  const table = WORDINGS[key] as readonly Wording<unknown>[];
  switch (set) {
    case 'fixed':
      return [0];
    case 'train':
      return table.flatMap((w, i) => (w.heldout ? [] : [i]));
    case 'heldout':
      return table.flatMap((w, i) => (w.heldout ? [i] : []));
    case 'all':
      return table.map((_, i) => i);
    default:
      throw new Error(`paraphrases: wording set must be one of ${WORDING_SETS.join(', ')}, got ${JSON.stringify(set)}`);
  }
}

/** The wording of an id ("spatial.w2"), or undefined when no table has it. */
export function wordingById(id: string): Wording<unknown> | undefined {
  const m = /^([a-z_]+)\.w(\d+)$/.exec(id);
  if (!m || !(WORDING_KEYS as readonly string[]).includes(m[1]!)) return undefined;
  return (WORDINGS[m[1] as WordingKey] as readonly Wording<unknown>[])[Number(m[2])];
}
