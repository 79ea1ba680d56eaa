// The synthetic scene + question generator (src/eval/synthetic.ts): determinism (pinned hashes and texts),
// geometry invariants, answers checked against the object centres with independently written rules,
// answer balance, CogVSR-style decomposition, and exact PNG round trips.

import { describe, expect, it } from 'vitest';
import { decodeImage, encodePng } from '../src/io/image.js';
import {
  COLOUR_RGB,
  COLOURS,
  SHAPES,
  contrastingColours,
  generateDataset,
  generateScene,
  iterateDataset,
  renderScene,
  type Scene,
  type SceneObject,
  type SyntheticItem,
} from '../src/eval/synthetic.js';

/** FNV-1a 32-bit, as 8 hex digits. */
function fnv1a(bytes: Uint8Array): string {
  let h = 0x811c9dc5;
  for (const b of bytes) {
    h ^= b;
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16).padStart(8, '0');
}

// One 400-scene dataset shared by the statistical tests.
const BIG = [...iterateDataset({ seed: 2024, scenes: 400 })];
const BIG_ITEMS = BIG.flatMap((s) => s.items.map((item) => ({ item, scene: s.scene })));

function objectByName(scene: Scene, name: string): SceneObject {
  const o = scene.objects.find((x) => `${x.colour} ${x.shape}` === name);
  if (o === undefined) throw new Error(`no ${name} in scene ${scene.seed}`);
  return o;
}

/**
 * Independent statement of the relation rule at size 64: dominant-axis centre offset >= 10 px and >= 2x the
 * other axis. Returns the true relation of a to b or throws when the pair is ambiguous.
 */
function expectedRelation(a: SceneObject, b: SceneObject, size: number): 'left' | 'right' | 'above' | 'below' {
  const s = size / 64;
  const ax = a.x + a.d / 2;
  const ay = a.y + a.d / 2;
  const bx = b.x + b.d / 2;
  const by = b.y + b.d / 2;
  const dx = ax - bx;
  const dy = ay - by;
  if (Math.abs(dx) >= 10 * s && Math.abs(dx) >= 2 * Math.abs(dy)) return dx < 0 ? 'left' : 'right';
  if (Math.abs(dy) >= 10 * s && Math.abs(dy) >= 2 * Math.abs(dx)) return dy < 0 ? 'above' : 'below';
  throw new Error(`ambiguous pair ${a.colour} ${a.shape} / ${b.colour} ${b.shape}: dx ${dx}, dy ${dy}`);
}

const PHRASE_TO_RELATION: Record<string, 'left' | 'right' | 'above' | 'below'> = {
  'left of': 'left',
  'right of': 'right',
  above: 'above',
  below: 'below',
};
const OPP = { left: 'right', right: 'left', above: 'below', below: 'above' } as const;
const NAME = '(\\w+ (?:circle|square|triangle))';

function fractions(answers: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const a of answers) out[a] = (out[a] ?? 0) + 1;
  for (const k of Object.keys(out)) out[k]! /= answers.length;
  return out;
}

describe('determinism', () => {
  it('pins the images and first questions of seed 7', () => {
    const d = generateDataset({ seed: 7, scenes: 3 });
    expect(d.scenes.map((s) => [s.id, s.seed, fnv1a(s.image.data)])).toEqual([
      ['s000000', 1478832577, 'a2e1f9d7'],
      ['s000001', 746935934, '583b95ee'],
      ['s000002', 2535364964, '542cd67c'],
    ]);
    expect(d.items.slice(0, 4).map((i) => [i.question, i.answer])).toEqual([
      ['Where is the blue square in relation to the purple square? Answer with left, right, above or below.', 'left'],
      ['The orange circle is above the blue square. True or false?', 'false'],
      ['What color is the circle?', 'orange'],
      ['What shape is the red object?', 'square'],
    ]);
    expect(d.items[0]!.id).toBe('s000000-spatial');
    expect(d.items[0]!.image).toBe('images/s000000.png');
  });

  it('pins single scenes, at 64 and 96 px', () => {
    expect(fnv1a(renderScene(generateScene(1)).data)).toBe('c7b810a3');
    expect(fnv1a(renderScene(generateScene(2)).data)).toBe('669c784d');
    expect(fnv1a(renderScene(generateScene(96, { size: 96 })).data)).toBe('abdb8019');
  });

  it('same seed gives identical bytes and questions; different seeds differ', () => {
    const a = generateDataset({ seed: 99, scenes: 20 });
    const b = generateDataset({ seed: 99, scenes: 20 });
    expect(b.items).toEqual(a.items);
    a.scenes.forEach((s, i) => expect(Buffer.from(b.scenes[i]!.image.data).equals(Buffer.from(s.image.data))).toBe(true));
    const c = generateDataset({ seed: 100, scenes: 20 });
    expect(c.items.map((i) => i.question)).not.toEqual(a.items.map((i) => i.question));
    const differing = c.scenes.filter((s, i) => !Buffer.from(s.image.data).equals(Buffer.from(a.scenes[i]!.image.data)));
    expect(differing.length).toBe(20);
    expect(fnv1a(renderScene(generateScene(1)).data)).not.toBe(fnv1a(renderScene(generateScene(2)).data));
  });

  it('a scene is regenerated from its recorded seed', () => {
    const d = generateDataset({ seed: 5, scenes: 4 });
    for (const s of d.scenes) expect(renderScene(generateScene(s.seed)).data).toEqual(s.image.data);
  });
});

describe('scenes', () => {
  it('objects are inside, apart, sized 12-18 px, of distinct contrasting colours', () => {
    const counts = new Set<number>();
    for (const { scene } of BIG) {
      expect(scene.size).toBe(64);
      counts.add(scene.objects.length);
      expect(scene.objects.length).toBeGreaterThanOrEqual(2);
      expect(scene.objects.length).toBeLessThanOrEqual(4);
      expect(new Set(scene.objects.map((o) => o.colour)).size).toBe(scene.objects.length);
      const allowed = contrastingColours(scene.background.rgb);
      for (const o of scene.objects) {
        expect(allowed).toContain(o.colour);
        expect(SHAPES).toContain(o.shape);
        expect(o.d).toBeGreaterThanOrEqual(12);
        expect(o.d).toBeLessThanOrEqual(18);
        expect(o.x).toBeGreaterThanOrEqual(0);
        expect(o.y).toBeGreaterThanOrEqual(0);
        expect(o.x + o.d).toBeLessThanOrEqual(64);
        expect(o.y + o.d).toBeLessThanOrEqual(64);
        expect([o.cx, o.cy]).toEqual([o.x + o.d / 2, o.y + o.d / 2]);
      }
      for (const a of scene.objects) {
        for (const b of scene.objects) {
          if (a === b) continue;
          const gx = Math.max(a.x - (b.x + b.d), b.x - (a.x + a.d));
          const gy = Math.max(a.y - (b.y + b.d), b.y - (a.y + a.d));
          expect(Math.max(gx, gy)).toBeGreaterThanOrEqual(3);
        }
      }
    }
    expect([...counts].sort()).toEqual([2, 3, 4]);
  });

  it('light and dark backgrounds never carry a low-contrast colour', () => {
    for (const { scene } of BIG) {
      const lum = scene.background.rgb[0] + scene.background.rgb[1] + scene.background.rgb[2];
      for (const o of scene.objects) {
        if (lum > 450) expect(o.colour).not.toBe('white');
        if (lum < 300) expect(o.colour).not.toBe('black');
      }
    }
  });

  it('renders crisp objects on a background with +-8 noise', () => {
    for (const { scene } of BIG.slice(0, 60)) {
      const img = renderScene(scene);
      expect([img.width, img.height, img.data.length]).toEqual([64, 64, 64 * 64 * 3]);
      const owner = new Int8Array(64 * 64).fill(-1);
      scene.objects.forEach((o, k) => {
        for (let y = o.y; y < o.y + o.d; y++) {
          for (let x = o.x; x < o.x + o.d; x++) {
            const i = (y * 64 + x) * 3;
            const px = [img.data[i]!, img.data[i + 1]!, img.data[i + 2]!];
            if (px.join() === COLOUR_RGB[o.colour].join()) owner[y * 64 + x] = k;
          }
        }
        // The centre pixel (and its row for squares) is the object's exact colour.
        const c = (Math.floor(o.cy) * 64 + Math.floor(o.cx)) * 3;
        expect([img.data[c], img.data[c + 1], img.data[c + 2]]).toEqual([...COLOUR_RGB[o.colour]]);
      });
      const bg = scene.background.rgb;
      let maxDev = 0;
      for (let p = 0; p < 64 * 64; p++) {
        if (owner[p] !== -1) continue;
        for (let ch = 0; ch < 3; ch++) maxDev = Math.max(maxDev, Math.abs(img.data[p * 3 + ch]! - bg[ch]!));
      }
      expect(maxDev).toBe(8); // noise present, never more than +-8
      // Squares fill their box; circles and triangles cover a plausible fraction of it.
      scene.objects.forEach((o, k) => {
        let n = 0;
        for (let p = 0; p < 64 * 64; p++) if (owner[p] === k) n++;
        const frac = n / (o.d * o.d);
        if (o.shape === 'square') expect(frac).toBe(1);
        if (o.shape === 'circle') expect(frac).toBeGreaterThan(0.7);
        if (o.shape === 'circle') expect(frac).toBeLessThan(0.84);
        if (o.shape === 'triangle') expect(frac).toBeGreaterThan(0.4);
        if (o.shape === 'triangle') expect(frac).toBeLessThan(0.6);
      });
    }
  });

  it('scales object sizes with the image size', () => {
    for (let seed = 0; seed < 50; seed++) {
      const s = generateScene(seed, { size: 96 });
      for (const o of s.objects) {
        expect(o.d).toBeGreaterThanOrEqual(18);
        expect(o.d).toBeLessThanOrEqual(27);
        expect(o.x + o.d).toBeLessThanOrEqual(96);
        expect(o.y + o.d).toBeLessThanOrEqual(96);
      }
    }
  });

  it('PNG round trip of a rendered scene is exact', () => {
    for (const seed of [0, 1, 2, 3]) {
      const img = renderScene(generateScene(seed));
      const back = decodeImage(encodePng(img), `scene ${seed}`);
      expect([back.width, back.height]).toEqual([img.width, img.height]);
      expect(Buffer.from(back.data).equals(Buffer.from(img.data))).toBe(true);
    }
  });
});

describe('questions', () => {
  it('spatial answers follow the object centres with unambiguous margins', () => {
    const re = new RegExp(`^Where is the ${NAME} in relation to the ${NAME}\\? Answer with left, right, above or below\\.$`);
    let n = 0;
    for (const { item, scene } of BIG_ITEMS) {
      if (item.type !== 'spatial') continue;
      const m = re.exec(item.question);
      expect(m, item.question).not.toBeNull();
      expect(m![1]).not.toBe(m![2]);
      expect(item.answer).toBe(expectedRelation(objectByName(scene, m![1]!), objectByName(scene, m![2]!), 64));
      expect(item.function).toBe('decision');
      expect(item.options).toEqual(['left', 'right', 'above', 'below']);
      n++;
    }
    expect(n).toBe(400); // every scene has an unambiguous pair, so every scene gets a spatial question
  });

  it('vsr statements are true or the exact opposite of the true relation', () => {
    const re = new RegExp(`^The ${NAME} is (left of|right of|above|below) the ${NAME}\\. True or false\\?$`);
    for (const { item, scene } of BIG_ITEMS) {
      if (item.type !== 'vsr') continue;
      const m = re.exec(item.question);
      expect(m, item.question).not.toBeNull();
      const truth = expectedRelation(objectByName(scene, m![1]!), objectByName(scene, m![3]!), 64);
      const stated = PHRASE_TO_RELATION[m![2]!]!;
      expect(stated === truth || stated === OPP[truth]).toBe(true);
      expect(item.answer).toBe(stated === truth ? 'true' : 'false');
      expect(item.function).toBe('relational_reasoning');
    }
  });

  it('color, shape, count and exists answers match the scene', () => {
    for (const { item, scene } of BIG_ITEMS) {
      const q = item.question;
      if (item.type === 'color') {
        const shape = /^What color is the (circle|square|triangle)\?$/.exec(q)![1];
        const matches = scene.objects.filter((o) => o.shape === shape);
        expect(matches.length).toBe(1);
        expect(item.answer).toBe(matches[0]!.colour);
      } else if (item.type === 'shape') {
        const colour = /^What shape is the (\w+) object\?$/.exec(q)![1];
        expect(item.answer).toBe(scene.objects.find((o) => o.colour === colour)!.shape);
      } else if (item.type === 'count') {
        const words = ['zero', 'one', 'two', 'three', 'four'];
        const m = /^How many (objects|circles|squares|triangles) are there\?$/.exec(q)!;
        const n = m[1] === 'objects' ? scene.objects.length : scene.objects.filter((o) => `${o.shape}s` === m[1]).length;
        expect(item.answer).toBe(words[n]);
      } else if (item.type === 'exists') {
        const m = /^Is there an? (\w+) (circle|square|triangle)\?$/.exec(q)!;
        expect(COLOURS).toContain(m[1]);
        const present = scene.objects.some((o) => o.colour === m[1] && o.shape === m[2]);
        expect(item.answer).toBe(present ? 'yes' : 'no');
        expect(q.startsWith(/^[aeiou]/.test(m[1]!) ? 'Is there an ' : 'Is there a ')).toBe(true);
      }
      if (['color', 'shape', 'count', 'exists'].includes(item.type)) expect(item.function).toBe('low_level_perception');
      expect(item.options).toContain(item.answer);
    }
  });

  it('decomposes each spatial question in order, with function labels', () => {
    for (const { item, scene } of BIG_ITEMS) {
      if (item.type !== 'spatial') {
        expect(item.sub_questions).toBeUndefined();
        continue;
      }
      const [, a, b] = new RegExp(`^Where is the ${NAME} in relation to the ${NAME}\\?`).exec(item.question)!;
      const A = objectByName(scene, a!);
      const B = objectByName(scene, b!);
      const subs = item.sub_questions!;
      expect(subs.length === 3 || subs.length === 4).toBe(true);
      subs.forEach((s, k) => expect(s.id).toBe(`${item.id}-sub${k}`));
      const art = (n: string): string => (/^[aeiou]/.test(n) ? 'an' : 'a');
      expect(subs[0]).toMatchObject({ question: `Is there ${art(a!)} ${a}?`, answer: 'yes', function: 'low_level_perception' });
      expect(subs[1]).toMatchObject({ question: `Is there ${art(b!)} ${b}?`, answer: 'yes', function: 'low_level_perception' });
      const horizontal = item.answer === 'left' || item.answer === 'right';
      const centre = (o: SceneObject): number => (horizontal ? o.x + o.d / 2 : o.y + o.d / 2);
      const clear = (o: SceneObject): boolean => Math.abs(centre(o) - 32) >= 4;
      if (subs.length === 4) {
        const half = subs[2]!;
        expect(half.function).toBe('spatial_perception');
        const m = /^Is the (\w+ \w+) in the (left|top) half or the (right|bottom) half of the image\?$/.exec(half.question)!;
        expect(m[2]).toBe(horizontal ? 'left' : 'top');
        const subject = objectByName(scene, m[1]!);
        // Asked about A when A is clear of the midline, else about B.
        expect(subject).toBe(clear(A) ? A : B);
        expect(clear(subject)).toBe(true);
        expect(half.answer).toBe(centre(subject) < 32 ? m[2] : m[3]);
      } else {
        expect(clear(A) || clear(B)).toBe(false);
      }
      const rel = subs[subs.length - 1]!;
      expect(rel.function).toBe('relational_reasoning');
      const m = new RegExp(`^Is the ${NAME} (left of|right of|above|below) the ${NAME}\\?$`).exec(rel.question)!;
      expect([m[1], m[3]]).toEqual([a, b]);
      const asked = PHRASE_TO_RELATION[m[2]!]!;
      expect(asked === item.answer || asked === OPP[item.answer as 'left']).toBe(true);
      expect(rel.answer).toBe(asked === item.answer ? 'yes' : 'no');
    }
  });

  it('balances answers over 400 scenes', () => {
    const of = (pred: (i: SyntheticItem) => boolean): string[] => BIG_ITEMS.filter(({ item }) => pred(item)).map(({ item }) => item.answer);
    const spatial = fractions(of((i) => i.type === 'spatial'));
    for (const r of ['left', 'right', 'above', 'below']) {
      expect(spatial[r]).toBeGreaterThanOrEqual(0.2);
      expect(spatial[r]).toBeLessThanOrEqual(0.3);
    }
    const subRel = fractions(BIG_ITEMS.flatMap(({ item }) => (item.sub_questions ?? []).filter((s) => s.function === 'relational_reasoning').map((s) => s.answer)));
    for (const [name, f] of [
      ['vsr', fractions(of((i) => i.type === 'vsr')).true],
      ['exists', fractions(of((i) => i.type === 'exists')).yes],
      ['sub relation', subRel.yes],
    ] as const) {
      expect(f, name).toBeGreaterThanOrEqual(0.4);
      expect(f, name).toBeLessThanOrEqual(0.6);
    }
    // VSR statements use all four relation words.
    const words = fractions(BIG_ITEMS.filter(({ item }) => item.type === 'vsr').map(({ item }) => /is (left of|right of|above|below) the/.exec(item.question)![1]!));
    for (const w of Object.values(words)) expect(w).toBeGreaterThan(0.2);
    expect(Object.keys(words).length).toBe(4);
    // Both count forms appear, and all of 'two', 'three', 'four' for the object count.
    const counts = of((i) => i.question === 'How many objects are there?');
    expect(new Set(counts)).toEqual(new Set(['two', 'three', 'four']));
    expect(counts.length).toBeGreaterThan(150);
  });

  it('asks one question of each applicable type by default, more on request, ids unique', () => {
    const d = generateDataset({ seed: 3, scenes: 30 });
    for (const s of d.scenes) {
      const types = d.items.filter((i) => i.image === `images/${s.id}.png`).map((i) => i.type);
      const hasUniqueShape = SHAPES.some((sh) => s.scene.objects.filter((o) => o.shape === sh).length === 1);
      expect(types).toEqual(['spatial', 'vsr', ...(hasUniqueShape ? ['color'] : []), 'shape', 'count', 'exists']);
    }
    const more = generateDataset({ seed: 3, scenes: 30, questionsPerScene: 12 });
    const ids = more.items.flatMap((i) => [i.id, ...(i.sub_questions ?? []).map((s) => s.id)]);
    expect(new Set(ids).size).toBe(ids.length);
    for (const s of more.scenes) {
      const qs = more.items.filter((i) => i.image === `images/${s.id}.png`).map((i) => i.question);
      expect(new Set(qs).size).toBe(qs.length);
      expect(qs.length).toBeGreaterThan(6);
    }
    const only = generateDataset({ seed: 3, scenes: 10, types: ['spatial'] });
    expect(only.items.map((i) => i.type)).toEqual(Array(10).fill('spatial'));
  });
});
