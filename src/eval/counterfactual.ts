// Counterfactual pairs for spatial questions (activation patching, issue 14): the same synthetic scene with the two
// named objects' positions exchanged, so the asked relation flips while the question text stays identical (a minimal,
// "symmetric token replacement"-style counterfactual: Zhang & Nanda, ICLR 2024). Browser-safe, like synthetic.ts.
//
// The swap. Object A moves to B's place and B to A's, each keeping its colour, shape and size: A's new corner is
// x_B + floor((d_B - d_A) / 2) (and so on for y and for B). With equal sizes, or sizes of equal parity, the centres
// are exchanged exactly; otherwise both centres land half a pixel up-left of the other's (the floor), which keeps the
// offset between the pair exactly negated: cx_A' - cx_B' = cx_B - cx_A on both axes. The relation of A to B depends
// only on that offset (spatialRelation), so it becomes exactly the opposite one, with the same margins. Every other
// object, the background and its noise (the scene's noise seed) stay as they are; the pixels change only inside the
// pair's old and new boxes. A swap that would leave the image or come closer than the generator's minimum gap to
// another object is refused (with the reason), as the generator would never have drawn that layout.

import type { RgbImage } from '../io/image.js';
import {
  GEOMETRY,
  OPPOSITE,
  boxGaps,
  generateScene,
  renderScene,
  spatialRelation,
  type BackgroundKind,
  type Relation,
  type Scene,
  type SceneObject,
  type SceneOptions,
} from './synthetic.js';

/** The generator's spatial question ("Where is the A in relation to the B? ..."), the default wording of a pair. */
export function spatialQuestion(a: { name: string }, b: { name: string }): string {
  return `Where is the ${a.name} in relation to the ${b.name}? Answer with left, right, above or below.`;
}

/** A clean scene and its counterfactual, asked the same question. */
export interface SpatialPair {
  clean: Scene;
  counterfactual: Scene;
  /** The asked pair in the clean scene: "where is `a` in relation to `b`". */
  a: SceneObject;
  b: SceneObject;
  /** The clean answer (a relative to b) and the counterfactual one, its opposite. */
  answer: Relation;
  counterfactualAnswer: Relation;
  question: string;
}

/** Why a pair cannot be swapped, or the pair. */
export type SwapResult = { ok: true; pair: SpatialPair } | { ok: false; reason: string };

/** Minimum empty pixels between two boxes at the scene's size (GEOMETRY.minGap scaled as the generator does). */
const minGap = (size: number): number => Math.round((GEOMETRY.minGap * size) / 64);

function moved(o: SceneObject, x: number, y: number): SceneObject {
  return { ...o, x, y, cx: x + o.d / 2, cy: y + o.d / 2 };
}

/**
 * The scene with objects `aName` and `bName` exchanging places (sizes, colours and shapes kept; see the file
 * comment), asked `question` (default spatialQuestion(a, b)), or why not: an unknown name, no unambiguous relation
 * of a to b, or a swapped object outside the image or too close to another one.
 */
export function swapPair(scene: Scene, aName: string, bName: string, question?: string): SwapResult {
  const a = scene.objects.find((o) => o.name === aName);
  const b = scene.objects.find((o) => o.name === bName);
  if (!a || !b) return { ok: false, reason: `the scene has no ${!a ? aName : bName} (it has ${scene.objects.map((o) => o.name).join(', ')})` };
  if (a === b) return { ok: false, reason: `both named objects are the ${aName}` };
  const answer = spatialRelation(a, b, scene.size);
  if (answer === null) return { ok: false, reason: `the ${aName} has no unambiguous relation to the ${bName}` };
  const a2 = moved(a, b.x + Math.floor((b.d - a.d) / 2), b.y + Math.floor((b.d - a.d) / 2));
  const b2 = moved(b, a.x + Math.floor((a.d - b.d) / 2), a.y + Math.floor((a.d - b.d) / 2));
  for (const o of [a2, b2]) {
    if (o.x < 0 || o.y < 0 || o.x + o.d > scene.size || o.y + o.d > scene.size) {
      return { ok: false, reason: `the ${o.name} would leave the ${scene.size}x${scene.size} image at (${o.x}, ${o.y})` };
    }
  }
  const gap = minGap(scene.size);
  const objects = scene.objects.map((o) => (o === a ? a2 : o === b ? b2 : o));
  for (let i = 0; i < objects.length; i++)
    for (let j = i + 1; j < objects.length; j++) {
      const p = objects[i]!;
      const q = objects[j]!;
      if (p !== a2 && p !== b2 && q !== a2 && q !== b2) continue;
      const { gx, gy } = boxGaps(p, q);
      if (gx < gap && gy < gap) return { ok: false, reason: `the swapped ${p === a2 || p === b2 ? p.name : q.name} would come within ${gap} px of the ${p === a2 || p === b2 ? q.name : p.name}` };
    }
  const counterfactual: Scene = { ...scene, objects };
  const flipped = spatialRelation(a2, b2, scene.size);
  // Exact by construction (the offset is negated); checked so that a change in the rules cannot go unnoticed.
  if (flipped !== OPPOSITE[answer]) throw new Error(`swapPair: the swap gave ${flipped} for ${answer} (the offset was not negated)`);
  return { ok: true, pair: { clean: scene, counterfactual, a, b, answer, counterfactualAnswer: flipped, question: question ?? spatialQuestion(a, b) } };
}

/** Every ordered pair of the scene that swaps cleanly, in the order of relationPairs (objects in scene order). */
export function spatialPairs(scene: Scene): SpatialPair[] {
  const out: SpatialPair[] = [];
  for (const a of scene.objects)
    for (const b of scene.objects) {
      if (a === b) continue;
      const r = swapPair(scene, a.name, b.name);
      if (r.ok) out.push(r.pair);
    }
  return out;
}

/**
 * The pair a spatial question item asks about: the two scene objects its question names (whole words, any order, so
 * paraphrases that name B first work too), ordered so that the first one's relation to the second is the item's
 * answer; then swapPair with the item's own question text. Errors name the item.
 */
export function pairForQuestion(scene: Scene, item: { id: string; question: string; answer: string }): SwapResult {
  const q = item.question.toLowerCase();
  const named = scene.objects.filter((o) => new RegExp(`(^|[^a-z0-9])${o.name}(?![a-z0-9])`).test(q));
  if (named.length !== 2) return { ok: false, reason: `question ${item.id} names ${named.length} of the scene's objects (${scene.objects.map((o) => o.name).join(', ')}), not 2` };
  const [x, y] = named as [SceneObject, SceneObject];
  const answer = item.answer.trim().toLowerCase();
  const [a, b] = spatialRelation(x, y, scene.size) === answer ? [x, y] : spatialRelation(y, x, scene.size) === answer ? [y, x] : [null, null];
  if (!a || !b) return { ok: false, reason: `question ${item.id}: neither order of the ${x.name} and the ${y.name} has the answer "${item.answer}" in the scene` };
  return swapPair(scene, a.name, b.name, item.question);
}

/** What scripts/make-synthetic.ts writes per scene in scenes.jsonl (the fields this file reads). */
export interface SceneRecord {
  id: string;
  seed: number;
  size: number;
  objects: { colour: string; shape: string; x: number; y: number; d: number }[];
  variant?: { object_scale: number; background: string };
}

/**
 * The scene of a scenes.jsonl record, regenerated from its seed (generateScene is deterministic) with the record's
 * size and variant; the object count range is not recorded, so each range make-synthetic allows is tried until the
 * objects match the record exactly. Throws naming the scene when none does (the record was not made by this
 * generator, or by another version of it).
 */
export function sceneFromRecord(rec: SceneRecord): Scene {
  const base: SceneOptions = { size: rec.size };
  if (rec.variant) {
    base.objectScale = rec.variant.object_scale;
    base.background = rec.variant.background as BackgroundKind;
  }
  const same = (s: Scene) =>
    s.objects.length === rec.objects.length &&
    s.objects.every((o, i) => {
      const r = rec.objects[i]!;
      return o.colour === r.colour && o.shape === r.shape && o.x === r.x && o.y === r.y && o.d === r.d;
    });
  const ranges: [number, number][] = [[2, 4], [2, 2], [3, 3], [4, 4], [2, 3], [3, 4]];
  for (const [minObjects, maxObjects] of ranges) {
    if (rec.objects.length < minObjects || rec.objects.length > maxObjects) continue;
    let s: Scene;
    try {
      s = generateScene(rec.seed, { ...base, minObjects, maxObjects });
    } catch (e) {
      throw new Error(`scene ${rec.id}: ${(e as Error).message}`);
    }
    if (same(s)) return s;
  }
  throw new Error(`scene ${rec.id}: regenerating seed ${rec.seed} (size ${rec.size}) does not give the recorded objects; was it made by scripts/make-synthetic.ts?`);
}

/** Parses one scenes.jsonl line into a SceneRecord; errors name `where` and the field. */
export function parseSceneRecord(line: string, where: string): SceneRecord {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (e) {
    throw new Error(`${where}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${where}: expected a JSON object`);
  const o = v as Record<string, unknown>;
  const int = (k: string) => {
    if (typeof o[k] !== 'number' || !Number.isInteger(o[k])) throw new Error(`${where}: "${k}" must be an integer, got ${JSON.stringify(o[k])}`);
    return o[k] as number;
  };
  if (typeof o.id !== 'string' || o.id === '') throw new Error(`${where}: "id" must be a non-empty string`);
  if (!Array.isArray(o.objects)) throw new Error(`${where}: "objects" must be a list`);
  const rec: SceneRecord = { id: o.id, seed: int('seed'), size: int('size'), objects: o.objects as SceneRecord['objects'] };
  if (o.variant !== undefined) rec.variant = o.variant as SceneRecord['variant'];
  return rec;
}

/** Both images of a pair, rendered (same noise, same background). */
export function renderPair(pair: SpatialPair): { clean: RgbImage; counterfactual: RgbImage } {
  return { clean: renderScene(pair.clean), counterfactual: renderScene(pair.counterfactual) };
}
