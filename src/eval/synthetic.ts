// Seeded synthetic spatial scenes and their questions: the training and evaluation data of the "model
// organism" (issue 4). Browser-safe: no Node imports here (scripts/make-synthetic.ts writes the files).
//
// A scene is a `size` x `size` RGB image (default 64) on a plain background colour with mild per-pixel noise,
// holding 2 to 4 objects of distinct colours (COLOURS) and any shapes (SHAPES), placed without overlap. Every
// question has a single-word answer that is unambiguous by construction:
//   - objects are named "<colour> <shape>", unique in a scene because colours are distinct;
//   - spatial relations are only asked for pairs whose centres differ by >= 10 px (at size 64, scaled with
//     size) on the dominant axis and by at least twice as much as on the other axis; false VSR statements use
//     the opposite relation (never the perpendicular one, which could be nearly true);
//   - "left half / right half" sub-questions need the centre >= 4 px (at 64) from the midline.
// Centres are bounding-box centres (x + d/2, y + d/2), also for triangles. Image y grows downward, so
// "A above B" means A's centre y is smaller.
//
// Variants (What'sUp-style out-of-distribution sets, never seen in training): `objectScale` multiplies the object
// size range (12-18 px at 64), `background` swaps the plain training palette for unseen plain colours ('novel'),
// a two-colour linear gradient ('gradient') or a two-colour checkerboard ('checker'), both of one lightness class;
// `variant: 'ood'` draws both per scene (scale from OOD_OBJECT_SCALES, background from OOD_BACKGROUNDS) from a
// stream of its own. Object colours contrast with every background colour of the scene. Without these options a
// scene is byte-identical to the training generator's (the options consume no random numbers when absent).
//
// Wordings (src/eval/paraphrases.ts): by default ('fixed') every question is written in its original template, as the
// organism's training data was; 'train', 'heldout' and 'all' write each question and sub-question in a paraphrase
// drawn from that set (held-out wordings only outside 'train') and record it as `wording` / `wording_heldout`. The
// draw has a stream of its own, so the questions' content, answers and options do not depend on the wording set.
//
// Determinism: everything comes from mulberry32 streams seeded from the scene seed (scene layout, noise,
// questions, wordings) and, in a dataset, from balancing counters that depend only on the previous scenes. The same
// seed gives the same scenes, bytes and questions on every platform (integer arithmetic and Math.imul only;
// floats are used only for comparisons and uniform draws, exactly reproducible in IEEE double).

import type { RgbImage } from '../io/image.js';
import { mulberry32 } from '../models/random-checkpoint.js';
import type { QuestionFunction, QuestionRecord, SubQuestionRecord, SyntheticQuestionType } from './dataset.js';
import { type Phrasing, type WordingSet, RELATION_PHRASE, WORDINGS, WORDING_SETS, phrasing, wordingIndices } from './paraphrases.js';

// ---------------------------------------------------------------------------------------------------------------
// Random numbers

/** Mulberry32 (shared with the random checkpoint writers). */
export { mulberry32 };

/** Mixes two 32-bit values into a well-scrambled 32-bit seed (murmur3 finaliser). */
export function mixSeed(a: number, b: number): number {
  let h = (a ^ Math.imul(b + 1, 0x9e3779b9)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** The seed of scene `index` of a dataset generated with `datasetSeed`. */
export function sceneSeed(datasetSeed: number, index: number): number {
  return mixSeed(datasetSeed >>> 0, index);
}

class Rng {
  readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  /** Uniform integer in [lo, hi] (inclusive). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('Rng.pick: empty list');
    return items[Math.floor(this.next() * items.length)]!;
  }
  shuffle<T>(items: readonly T[]): T[] {
    const out = items.slice();
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
  }
}

// Distinct streams derived from one scene seed.
const STREAM_LAYOUT = 1;
const STREAM_NOISE = 2;
const STREAM_QUESTIONS = 3;
const STREAM_VARIANT = 4;
const STREAM_WORDING = 5;

// ---------------------------------------------------------------------------------------------------------------
// Vocabulary and palette

export const COLOURS = ['red', 'green', 'blue', 'yellow', 'purple', 'orange', 'white', 'black'] as const;
export type Colour = (typeof COLOURS)[number];
export const SHAPES = ['circle', 'square', 'triangle'] as const;
export type Shape = (typeof SHAPES)[number];
export type Rgb = readonly [number, number, number];

export const COLOUR_RGB: Readonly<Record<Colour, Rgb>> = {
  red: [220, 30, 30],
  green: [30, 170, 50],
  blue: [40, 70, 220],
  yellow: [240, 220, 30],
  purple: [140, 50, 180],
  orange: [245, 140, 20],
  white: [250, 250, 250],
  black: [15, 15, 15],
};

/** Plain background colours: four light, four dark. */
export const BACKGROUNDS: readonly { name: string; rgb: Rgb }[] = [
  { name: 'light grey', rgb: [200, 200, 200] },
  { name: 'beige', rgb: [230, 220, 190] },
  { name: 'pale blue', rgb: [185, 205, 230] },
  { name: 'pale pink', rgb: [235, 200, 210] },
  { name: 'dark grey', rgb: [60, 60, 60] },
  { name: 'navy', rgb: [25, 30, 70] },
  { name: 'brown', rgb: [75, 55, 40] },
  { name: 'dark green', rgb: [30, 60, 45] },
];

/** Plain background colours the organism never saw (variants only): four light, four dark. */
export const NOVEL_BACKGROUNDS: readonly { name: string; rgb: Rgb }[] = [
  { name: 'mint', rgb: [195, 230, 205] },
  { name: 'lavender', rgb: [215, 200, 235] },
  { name: 'peach', rgb: [245, 215, 180] },
  { name: 'pale yellow', rgb: [240, 235, 175] },
  { name: 'teal', rgb: [25, 80, 85] },
  { name: 'maroon', rgb: [80, 25, 35] },
  { name: 'olive', rgb: [70, 70, 30] },
  { name: 'slate', rgb: [45, 55, 75] },
];

/** Background kinds: the training palette ('plain'), or the unseen ones of the variants. */
export const BACKGROUND_KINDS = ['plain', 'novel', 'gradient', 'checker'] as const;
export type BackgroundKind = (typeof BACKGROUND_KINDS)[number];

/** What `variant: 'ood'` draws from, uniformly per scene. */
export const OOD_OBJECT_SCALES: readonly number[] = [0.4, 0.6, 1.5, 2];
export const OOD_BACKGROUNDS: readonly BackgroundKind[] = ['novel', 'gradient', 'checker'];
export const SCENE_VARIANTS = ['ood'] as const;
export type SceneVariant = (typeof SCENE_VARIANTS)[number];

/** Checkerboard cell side at size 64 (scaled with the image size). */
const CHECKER_CELL = 4;

/** Background noise amplitude: each channel of each background pixel gets a uniform integer in [-8, 8]. */
export const NOISE_LEVELS = 8;
/** Minimum Euclidean RGB distance between an object colour and the background. */
const MIN_RGB_DISTANCE = 120;
/** Minimum luma difference (BT.601) between an object colour and the background (drops yellow on light). */
const MIN_LUMA_DIFFERENCE = 15;

const luma = (c: Rgb): number => 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];

/** Object colours with strong contrast to a background colour (RGB distance and luma difference). */
export function contrastingColours(background: Rgb): Colour[] {
  return COLOURS.filter((name) => {
    const c = COLOUR_RGB[name];
    const dist = Math.hypot(c[0] - background[0], c[1] - background[1], c[2] - background[2]);
    return dist >= MIN_RGB_DISTANCE && Math.abs(luma(c) - luma(background)) >= MIN_LUMA_DIFFERENCE;
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Scenes

export interface SceneObject {
  colour: Colour;
  shape: Shape;
  /** "<colour> <shape>", unique in its scene. */
  name: string;
  /** Top-left corner of the bounding box (pixels). */
  x: number;
  y: number;
  /** Diameter of a circle, side of a square, base and height of a triangle (pixels). */
  d: number;
  /** Bounding-box centre: x + d / 2, y + d / 2. */
  cx: number;
  cy: number;
}

/**
 * A non-plain background: a linear gradient from `rgb` to `to` along x ('horizontal') or y ('vertical'), or a
 * checkerboard of `rgb` and `to` with square cells of `cell` px (the top-left cell is `rgb`).
 */
export type BackgroundPattern = { kind: 'gradient'; to: Rgb; axis: 'horizontal' | 'vertical' } | { kind: 'checker'; to: Rgb; cell: number };

export interface Scene {
  seed: number;
  size: number;
  /** Plain: `rgb` everywhere. With `pattern`: its first colour is `rgb`. */
  background: { name: string; rgb: Rgb; pattern?: BackgroundPattern };
  /** Seed of the background noise stream. */
  noiseSeed: number;
  objects: SceneObject[];
  /** Set only for variant scenes: the object-size factor and the background kind they were drawn with. */
  variant?: { objectScale: number; background: BackgroundKind };
}

export interface SceneOptions {
  /** Image side in pixels (default 64, at least 32). */
  size?: number;
  /** Number of objects: uniform in [minObjects, maxObjects] (defaults 2 and 4; at most 4). */
  minObjects?: number;
  maxObjects?: number;
  /** 'ood': object scale and background kind drawn per scene (OOD_OBJECT_SCALES, OOD_BACKGROUNDS). */
  variant?: SceneVariant;
  /** Multiplies the object size range (default 1: 12-18 px at 64); in [0.25, 2]. Overrides the variant's draw. */
  objectScale?: number;
  /** Background kind (default 'plain', the training palette). Overrides the variant's draw. */
  background?: BackgroundKind;
}

export type Relation = 'left' | 'right' | 'above' | 'below';
export const RELATIONS: readonly Relation[] = ['left', 'right', 'above', 'below'];
export const OPPOSITE: Readonly<Record<Relation, Relation>> = { left: 'right', right: 'left', above: 'below', below: 'above' };
/** The phrase used in statements: "The A is {left of} the B." (defined with the other wordings). */
export { RELATION_PHRASE };

/** Geometry rules, in pixels at size 64 (scaled linearly with the image size). */
export const GEOMETRY = {
  minObjectSize: 12,
  maxObjectSize: 18,
  /** Empty pixels required between two bounding boxes (on at least one axis). */
  minGap: 3,
  /** A relation needs the dominant-axis centre offset >= this ... */
  minRelationOffset: 10,
  /** ... and >= this times the other axis offset. */
  dominanceRatio: 2,
  /** A "which half" sub-question needs the centre this far from the midline. */
  minMidlineOffset: 4,
} as const;

const scaled = (px: number, size: number): number => (px * size) / 64;

/**
 * The unambiguous relation of `a` to `b` ("a is left of b", ...), or null when the centres are too close on
 * the dominant axis or the other axis offset is more than half the dominant one.
 */
export function spatialRelation(a: { cx: number; cy: number }, b: { cx: number; cy: number }, size: number): Relation | null {
  const dx = a.cx - b.cx;
  const dy = a.cy - b.cy;
  const min = scaled(GEOMETRY.minRelationOffset, size);
  const ratio = GEOMETRY.dominanceRatio;
  if (Math.abs(dx) >= min && Math.abs(dx) >= ratio * Math.abs(dy)) return dx < 0 ? 'left' : 'right';
  if (Math.abs(dy) >= min && Math.abs(dy) >= ratio * Math.abs(dx)) return dy < 0 ? 'above' : 'below';
  return null;
}

/** Ordered pairs (a, b) of distinct objects with an unambiguous relation of a to b. */
export function relationPairs(scene: Scene): { a: SceneObject; b: SceneObject; relation: Relation }[] {
  const out: { a: SceneObject; b: SceneObject; relation: Relation }[] = [];
  for (const a of scene.objects) {
    for (const b of scene.objects) {
      if (a === b) continue;
      const relation = spatialRelation(a, b, scene.size);
      if (relation !== null) out.push({ a, b, relation });
    }
  }
  return out;
}

/** Empty pixels between two bounding boxes along x and along y (negative when they overlap on that axis). */
export function boxGaps(a: SceneObject, b: SceneObject): { gx: number; gy: number } {
  return {
    gx: Math.max(a.x - (b.x + b.d), b.x - (a.x + a.d)),
    gy: Math.max(a.y - (b.y + b.d), b.y - (a.y + a.d)),
  };
}

function makeObject(colour: Colour, shape: Shape, x: number, y: number, d: number): SceneObject {
  return { colour, shape, name: `${colour} ${shape}`, x, y, d, cx: x + d / 2, cy: y + d / 2 };
}

/** The variant settings of a scene (null: the training distribution). Throws on invalid options. */
function sceneVariantOf(seed: number, opts: SceneOptions): NonNullable<Scene['variant']> | null {
  const { variant, objectScale, background } = opts;
  if (variant !== undefined && !(SCENE_VARIANTS as readonly string[]).includes(variant)) {
    throw new Error(`generateScene: variant must be one of ${SCENE_VARIANTS.join(', ')}, got ${JSON.stringify(variant)}`);
  }
  if (objectScale !== undefined && !(Number.isFinite(objectScale) && objectScale >= 0.25 && objectScale <= 2)) {
    throw new Error(`generateScene: objectScale must be a number in [0.25, 2], got ${objectScale}`);
  }
  if (background !== undefined && !(BACKGROUND_KINDS as readonly string[]).includes(background)) {
    throw new Error(`generateScene: background must be one of ${BACKGROUND_KINDS.join(', ')}, got ${JSON.stringify(background)}`);
  }
  if (variant === undefined && (objectScale === undefined || objectScale === 1) && (background === undefined || background === 'plain')) return null;
  const rng = new Rng(mixSeed(seed >>> 0, STREAM_VARIANT));
  const drawnScale = variant === 'ood' ? rng.pick(OOD_OBJECT_SCALES) : 1;
  const drawnBackground = variant === 'ood' ? rng.pick(OOD_BACKGROUNDS) : 'plain';
  return { objectScale: objectScale ?? drawnScale, background: background ?? drawnBackground };
}

const isLight = (c: Rgb): boolean => luma(c) > 128;

/**
 * A non-training background of `kind` and the object colours that contrast with every colour in it. Gradients and
 * checkerboards pair two colours of one lightness class (both light or both dark), from both palettes.
 */
function variantBackground(kind: Exclude<BackgroundKind, 'plain'>, rng: Rng, size: number): { background: Scene['background']; palette: Colour[] } {
  if (kind === 'novel') {
    const b = rng.pick(NOVEL_BACKGROUNDS);
    return { background: { name: b.name, rgb: b.rgb }, palette: contrastingColours(b.rgb) };
  }
  const all = [...BACKGROUNDS, ...NOVEL_BACKGROUNDS];
  const first = rng.pick(all);
  const second = rng.pick(all.filter((b) => b !== first && isLight(b.rgb) === isLight(first.rgb)));
  const other = new Set(contrastingColours(second.rgb));
  const palette = contrastingColours(first.rgb).filter((c) => other.has(c));
  const pattern: BackgroundPattern =
    kind === 'gradient'
      ? { kind, to: second.rgb, axis: rng.next() < 0.5 ? 'horizontal' : 'vertical' }
      : { kind, to: second.rgb, cell: Math.max(1, Math.round(scaled(CHECKER_CELL, size))) };
  return { background: { name: `${first.name} / ${second.name} ${kind}`, rgb: first.rgb, pattern }, palette };
}

/**
 * Generates the scene of `seed`. Objects never overlap (>= 3 px between bounding boxes at 64), lie fully inside
 * the image, and at least one pair of them has an unambiguous spatial relation (layouts without one are redrawn).
 */
export function generateScene(seed: number, opts: SceneOptions = {}): Scene {
  const size = opts.size ?? 64;
  const minObjects = opts.minObjects ?? 2;
  const maxObjects = opts.maxObjects ?? 4;
  if (!Number.isInteger(size) || size < 32 || size > 4096) throw new Error(`generateScene: size must be an integer in [32, 4096], got ${size}`);
  if (!Number.isInteger(minObjects) || !Number.isInteger(maxObjects) || minObjects < 2 || maxObjects > 4 || minObjects > maxObjects) {
    throw new Error(`generateScene: need 2 <= minObjects <= maxObjects <= 4, got ${minObjects}..${maxObjects}`);
  }
  const variant = sceneVariantOf(seed, opts);
  const objectScale = variant?.objectScale ?? 1;
  const rng = new Rng(mixSeed(seed >>> 0, STREAM_LAYOUT));
  let background: Scene['background'];
  let palette: Colour[];
  if (variant === null || variant.background === 'plain') {
    const b = rng.pick(BACKGROUNDS);
    background = { name: b.name, rgb: b.rgb };
    palette = contrastingColours(b.rgb);
  } else {
    ({ background, palette } = variantBackground(variant.background, rng, size));
  }
  const count = rng.int(minObjects, maxObjects);
  const colours = rng.shuffle(palette).slice(0, count);
  const shapes = colours.map(() => rng.pick(SHAPES));
  const dMin = Math.max(2, Math.round(scaled(GEOMETRY.minObjectSize * objectScale, size)));
  const dMax = Math.max(dMin, Math.round(scaled(GEOMETRY.maxObjectSize * objectScale, size)));
  const gap = Math.round(scaled(GEOMETRY.minGap, size));

  for (let layout = 0; layout < 10_000; layout++) {
    const objects: SceneObject[] = [];
    let failed = false;
    for (let i = 0; i < count && !failed; i++) {
      failed = true;
      for (let attempt = 0; attempt < 200; attempt++) {
        const d = rng.int(dMin, dMax);
        const obj = makeObject(colours[i]!, shapes[i]!, rng.int(0, size - d), rng.int(0, size - d), d);
        const clear = objects.every((o) => {
          const { gx, gy } = boxGaps(obj, o);
          return gx >= gap || gy >= gap;
        });
        if (clear) {
          objects.push(obj);
          failed = false;
          break;
        }
      }
    }
    if (failed) continue;
    const scene: Scene = { seed: seed >>> 0, size, background, noiseSeed: mixSeed(seed >>> 0, STREAM_NOISE), objects };
    if (variant !== null) scene.variant = variant;
    if (relationPairs(scene).length > 0) return scene;
  }
  throw new Error(`generateScene: no valid layout found for seed ${seed}`);
}

/** Whether pixel (px, py) is inside the object (tested at the pixel centre; no anti-aliasing). */
export function objectCovers(o: SceneObject, px: number, py: number): boolean {
  const x = px + 0.5;
  const y = py + 0.5;
  if (x < o.x || x > o.x + o.d || y < o.y || y > o.y + o.d) return false;
  switch (o.shape) {
    case 'square':
      return true;
    case 'circle': {
      const r = o.d / 2;
      return (x - o.cx) ** 2 + (y - o.cy) ** 2 <= r * r;
    }
    case 'triangle':
      // Apex at the top centre, base along the bottom edge: half-width grows linearly from 0 to d/2.
      return Math.abs(x - o.cx) <= ((y - o.y) / o.d) * (o.d / 2);
  }
}

/** The background colour (before noise) at pixel (px, py): integer RGB. */
export function backgroundAt(scene: Scene): (px: number, py: number) => Rgb {
  const { rgb, pattern } = scene.background;
  if (pattern === undefined) return () => rgb;
  const n = scene.size;
  if (pattern.kind === 'checker') {
    const cell = pattern.cell;
    return (px, py) => ((Math.floor(px / cell) + Math.floor(py / cell)) % 2 === 0 ? rgb : pattern.to);
  }
  const to = pattern.to;
  const horizontal = pattern.axis === 'horizontal';
  // Integer weights k / (n - 1): exact in every IEEE double implementation.
  const mix = (a: number, b: number, k: number): number => Math.round((a * (n - 1 - k) + b * k) / (n - 1));
  const rows = Array.from({ length: n }, (_, k): Rgb => [mix(rgb[0], to[0], k), mix(rgb[1], to[1], k), mix(rgb[2], to[2], k)]);
  return (px, py) => rows[horizontal ? px : py]!;
}

/** Renders a scene: noisy plain background, then the objects in flat colours. Same scene, same bytes. */
export function renderScene(scene: Scene): RgbImage {
  const { size } = scene;
  const data = new Uint8Array(size * size * 3);
  const noise = mulberry32(scene.noiseSeed);
  const span = 2 * NOISE_LEVELS + 1;
  const clamp = (v: number): number => (v < 0 ? 0 : v > 255 ? 255 : v);
  const base = backgroundAt(scene);
  for (let i = 0; i < size * size; i++) {
    const [br, bg, bb] = base(i % size, Math.floor(i / size));
    data[i * 3] = clamp(br + Math.floor(noise() * span) - NOISE_LEVELS);
    data[i * 3 + 1] = clamp(bg + Math.floor(noise() * span) - NOISE_LEVELS);
    data[i * 3 + 2] = clamp(bb + Math.floor(noise() * span) - NOISE_LEVELS);
  }
  for (const o of scene.objects) {
    const [r, g, b] = COLOUR_RGB[o.colour];
    for (let py = o.y; py < o.y + o.d; py++) {
      for (let px = o.x; px < o.x + o.d; px++) {
        if (!objectCovers(o, px, py)) continue;
        const i = (py * size + px) * 3;
        data[i] = r;
        data[i + 1] = g;
        data[i + 2] = b;
      }
    }
  }
  return { width: size, height: size, data };
}

// ---------------------------------------------------------------------------------------------------------------
// Questions

/** A question item as written to the JSONL index (see src/eval/dataset.ts for the schema). */
export type SyntheticItem = QuestionRecord;

export const SYNTHETIC_TYPES: readonly SyntheticQuestionType[] = ['spatial', 'vsr', 'color', 'shape', 'count', 'exists'];
export const NUMBER_WORDS = ['zero', 'one', 'two', 'three', 'four'] as const;

/** Allowed answers per question type (written as `options`). */
export const ANSWER_OPTIONS: Readonly<Record<SyntheticQuestionType, readonly string[]>> = {
  spatial: ['left', 'right', 'above', 'below'],
  vsr: ['true', 'false'],
  color: COLOURS,
  shape: SHAPES,
  count: NUMBER_WORDS,
  exists: ['yes', 'no'],
};

/** Function label (CogVSR style) of each standalone question type. */
const STANDALONE_FUNCTION: Readonly<Record<SyntheticQuestionType, QuestionFunction>> = {
  // The main spatial question is the final step of its decomposition: deciding from the sub-answers.
  spatial: 'decision',
  vsr: 'relational_reasoning',
  color: 'low_level_perception',
  shape: 'low_level_perception',
  // Counting is labelled low-level perception too: the scenes are simple enough that counting is finding the
  // objects (of a shape), with no arithmetic; CogVSR has no separate counting function.
  count: 'low_level_perception',
  exists: 'low_level_perception',
};

/** "Is there a red circle?" / "Is there an orange square?" (wording 0 of the exists questions). */
export function existsQuestion(colour: Colour, shape: Shape): string {
  return WORDINGS.exists[0]!.render({ colour, shape });
}

/**
 * Keeps answer classes balanced across a dataset: `choose` returns, among the candidates, one with the lowest
 * count so far (ties broken by the RNG) and counts it.
 */
export class AnswerBalancer {
  private readonly counts = new Map<string, number>();
  choose<T extends string>(key: string, candidates: readonly T[], rng: () => number): T {
    if (candidates.length === 0) throw new Error('AnswerBalancer.choose: no candidates');
    const count = (c: T): number => this.counts.get(`${key}\u0000${c}`) ?? 0;
    const min = Math.min(...candidates.map(count));
    const ties = candidates.filter((c) => count(c) === min);
    const chosen = ties[Math.floor(rng() * ties.length)]!;
    this.counts.set(`${key}\u0000${chosen}`, min + 1);
    return chosen;
  }
}

export interface SceneQuestionOptions {
  /** Scene id used in item ids and the image path (e.g. "s000123"). */
  sceneId: string;
  /** Number of main questions; default: one of each applicable type. Types are cycled in SYNTHETIC_TYPES order. */
  questionsPerScene?: number;
  /** Types to ask (default all of SYNTHETIC_TYPES). */
  types?: readonly SyntheticQuestionType[];
  /** Shared balancing state; pass the same one for all scenes of a dataset. */
  balancer?: AnswerBalancer;
  /**
   * Question wordings (src/eval/paraphrases.ts): 'fixed' (default) writes the original templates and no `wording`
   * field; 'train', 'heldout' and 'all' draw each question's wording from that set and record it. The questions'
   * content, answers and options are the same in every set.
   */
  wordings?: WordingSet;
}

/** Image path of a scene, relative to the JSONL file's folder. */
export const sceneImagePath = (sceneId: string): string => `images/${sceneId}.png`;
/** Scene id of scene `index`: "s000123". */
export const sceneIdOf = (index: number): string => `s${String(index).padStart(6, '0')}`;

/** A question's content before its wording is chosen; its text in wording 0 identifies it (repeats are skipped). */
interface DraftSub {
  phrasing: Phrasing;
  answer: string;
  function: QuestionFunction;
  options: string[];
}
interface Draft {
  phrasing: Phrasing;
  answer: string;
  subQuestions?: DraftSub[];
}

/** Questions about one scene. Deterministic given the scene, the options and the balancer's state. */
export function sceneQuestions(scene: Scene, opts: SceneQuestionOptions): SyntheticItem[] {
  const wordings = opts.wordings ?? 'fixed';
  if (!(WORDING_SETS as readonly string[]).includes(wordings)) throw new Error(`wordings must be one of ${WORDING_SETS.join(', ')}, got ${JSON.stringify(wordings)}`);
  const rng = new Rng(mixSeed(scene.seed, STREAM_QUESTIONS));
  // Wordings come from a stream of their own, drawn only for accepted questions, so that the content stream (and
  // with it every answer) is the same whatever the wording set; 'fixed' draws nothing.
  const wordingRng = wordings === 'fixed' ? null : new Rng(mixSeed(scene.seed, STREAM_WORDING));
  const worded = (p: Phrasing): { question: string; wording?: string; wording_heldout?: boolean } => {
    if (wordingRng === null) return { question: p.render(0) };
    const index = wordingRng.pick(wordingIndices(p.key, wordings));
    const w = WORDINGS[p.key][index]!;
    return { question: p.render(index), wording: w.id, wording_heldout: w.heldout };
  };
  const balancer = opts.balancer ?? new AnswerBalancer();
  const types = opts.types ?? SYNTHETIC_TYPES;
  const pairs = relationPairs(scene);
  const available = RELATIONS.filter((r) => pairs.some((p) => p.relation === r));
  const shapeCounts = new Map<Shape, number>(SHAPES.map((s) => [s, scene.objects.filter((o) => o.shape === s).length]));
  const uniqueShapes = SHAPES.filter((s) => shapeCounts.get(s) === 1);
  const applicable = types.filter((t) => {
    if (t === 'spatial' || t === 'vsr') return available.length > 0;
    if (t === 'color') return uniqueShapes.length > 0;
    return true;
  });
  if (applicable.length === 0) return [];

  const pairWith = (relation: Relation) => rng.pick(pairs.filter((p) => p.relation === relation));
  const midline = scene.size / 2;
  const minMid = scaled(GEOMETRY.minMidlineOffset, scene.size);

  const draft = (type: SyntheticQuestionType): Draft => {
    switch (type) {
      case 'spatial': {
        const relation = balancer.choose('spatial', available, rng.next);
        const { a, b } = pairWith(relation);
        const subs: DraftSub[] = [
          { phrasing: phrasing('low_level_perception', { colour: a.colour, shape: a.shape }), answer: 'yes', function: 'low_level_perception', options: ['yes', 'no'] },
          { phrasing: phrasing('low_level_perception', { colour: b.colour, shape: b.shape }), answer: 'yes', function: 'low_level_perception', options: ['yes', 'no'] },
        ];
        const horizontal = relation === 'left' || relation === 'right';
        const half = [a, b].find((o) => Math.abs((horizontal ? o.cx : o.cy) - midline) >= minMid);
        if (half !== undefined) {
          const centre = horizontal ? half.cx : half.cy;
          const where = phrasing('spatial_perception', { name: half.name, axis: horizontal ? 'horizontal' : 'vertical' });
          subs.push(
            horizontal
              ? { phrasing: where, answer: centre < midline ? 'left' : 'right', function: 'spatial_perception', options: ['left', 'right'] }
              : { phrasing: where, answer: centre < midline ? 'top' : 'bottom', function: 'spatial_perception', options: ['top', 'bottom'] },
          );
        }
        const truth = balancer.choose('spatial-sub-relation', ['yes', 'no'] as const, rng.next);
        const asked = truth === 'yes' ? relation : OPPOSITE[relation];
        subs.push({ phrasing: phrasing('relational_reasoning', { a: a.name, relation: asked, b: b.name }), answer: truth, function: 'relational_reasoning', options: ['yes', 'no'] });
        return { phrasing: phrasing('spatial', { a: a.name, b: b.name }), answer: relation, subQuestions: subs };
      }
      case 'vsr': {
        const truth = balancer.choose('vsr', ['true', 'false'] as const, rng.next);
        // Available relations are closed under OPPOSITE (both orderings of a pair are listed).
        const stated = balancer.choose('vsr-relation', available, rng.next);
        const { a, b } = pairWith(truth === 'true' ? stated : OPPOSITE[stated]);
        return { phrasing: phrasing('vsr', { a: a.name, relation: stated, b: b.name }), answer: truth };
      }
      case 'color': {
        const shape = rng.pick(uniqueShapes);
        const obj = scene.objects.find((o) => o.shape === shape)!;
        return { phrasing: phrasing('color', { shape }), answer: obj.colour };
      }
      case 'shape': {
        const obj = rng.pick(scene.objects);
        return { phrasing: phrasing('shape', { colour: obj.colour }), answer: obj.shape };
      }
      case 'count': {
        const kind = balancer.choose('count-kind', ['objects', 'shape'] as const, rng.next);
        if (kind === 'objects') return { phrasing: phrasing('count', { shape: null }), answer: NUMBER_WORDS[scene.objects.length]! };
        const shape = rng.pick(SHAPES);
        return { phrasing: phrasing('count', { shape }), answer: NUMBER_WORDS[shapeCounts.get(shape)!]! };
      }
      case 'exists': {
        const answer = balancer.choose('exists', ['yes', 'no'] as const, rng.next);
        if (answer === 'yes') {
          const obj = rng.pick(scene.objects);
          return { phrasing: phrasing('exists', { colour: obj.colour, shape: obj.shape }), answer };
        }
        const present = new Set(scene.objects.map((o) => o.name));
        const absent = COLOURS.flatMap((c) => SHAPES.map((s) => [c, s] as const)).filter(([c, s]) => !present.has(`${c} ${s}`));
        // Half the negatives are hard: a colour that is in the scene, on another shape.
        const hard = absent.filter(([c]) => scene.objects.some((o) => o.colour === c));
        const [colour, shape] = rng.next() < 0.5 && hard.length > 0 ? rng.pick(hard) : rng.pick(absent);
        return { phrasing: phrasing('exists', { colour, shape }), answer };
      }
    }
  };

  const total = opts.questionsPerScene ?? applicable.length;
  if (!Number.isInteger(total) || total < 0) throw new Error(`questionsPerScene must be a non-negative integer, got ${total}`);
  const items: SyntheticItem[] = [];
  const seen = new Set<string>();
  const perType = new Map<SyntheticQuestionType, number>();
  for (let k = 0; k < total; k++) {
    const type = applicable[k % applicable.length]!;
    // Repeats of a type (questionsPerScene > number of types) avoid asking the same question twice.
    let d: Draft | undefined;
    for (let attempt = 0; attempt < 8 && d === undefined; attempt++) {
      const candidate = draft(type);
      if (!seen.has(candidate.phrasing.render(0))) d = candidate;
    }
    if (d === undefined) continue;
    seen.add(d.phrasing.render(0));
    const n = (perType.get(type) ?? 0) + 1;
    perType.set(type, n);
    const id = `${opts.sceneId}-${type}${n > 1 ? `-${n}` : ''}`;
    // Key order as docs/datasets.md lists the fields; the wording fields only outside the 'fixed' set.
    const { question, ...wording } = worded(d.phrasing);
    const item: SyntheticItem = {
      id,
      image: sceneImagePath(opts.sceneId),
      question,
      answer: d.answer,
      type,
      function: STANDALONE_FUNCTION[type],
      options: [...ANSWER_OPTIONS[type]],
      ...wording,
    };
    if (d.subQuestions !== undefined) {
      item.sub_questions = d.subQuestions.map((s, i): SubQuestionRecord => {
        const { question: subQuestion, ...subWording } = worded(s.phrasing);
        return { id: `${id}-sub${i}`, question: subQuestion, answer: s.answer, function: s.function, options: s.options, ...subWording };
      });
    }
    items.push(item);
  }
  return items;
}

// ---------------------------------------------------------------------------------------------------------------
// Datasets

export interface DatasetOptions {
  seed: number;
  scenes: number;
  /** Image side (default 64). */
  size?: number;
  /** Main questions per scene; default one of each applicable type. */
  questionsPerScene?: number;
  /** Question types to generate (default all). */
  types?: readonly SyntheticQuestionType[];
  /** Scene variant and overrides (SceneOptions); absent: the training distribution. */
  variant?: SceneVariant;
  objectScale?: number;
  background?: BackgroundKind;
  /** Objects per scene: uniform in [minObjects, maxObjects] (defaults 2 and 4). */
  minObjects?: number;
  maxObjects?: number;
  /** Question wordings (SceneQuestionOptions.wordings); default 'fixed', the original templates. */
  wordings?: WordingSet;
}

export interface DatasetScene {
  id: string;
  seed: number;
  scene: Scene;
  items: SyntheticItem[];
}

/** The SceneOptions of a dataset's options (only the fields given, so defaults stay the generator's). */
function sceneOptionsOf(opts: DatasetOptions): SceneOptions {
  const out: SceneOptions = { size: opts.size };
  if (opts.variant !== undefined) out.variant = opts.variant;
  if (opts.objectScale !== undefined) out.objectScale = opts.objectScale;
  if (opts.background !== undefined) out.background = opts.background;
  if (opts.minObjects !== undefined) out.minObjects = opts.minObjects;
  if (opts.maxObjects !== undefined) out.maxObjects = opts.maxObjects;
  return out;
}

/**
 * Scenes and their questions one at a time (no images rendered), so large sets can be written without keeping
 * them in memory. Scene i has id sceneIdOf(i) and seed sceneSeed(opts.seed, i); answers are balanced over the
 * whole sequence (spatial left/right/above/below, vsr true/false, exists and sub-question yes/no).
 */
export function* iterateDataset(opts: DatasetOptions): Generator<DatasetScene> {
  if (!Number.isInteger(opts.scenes) || opts.scenes < 0) throw new Error(`scenes must be a non-negative integer, got ${opts.scenes}`);
  const balancer = new AnswerBalancer();
  for (let i = 0; i < opts.scenes; i++) {
    const id = sceneIdOf(i);
    const seed = sceneSeed(opts.seed, i);
    const scene = generateScene(seed, sceneOptionsOf(opts));
    const items = sceneQuestions(scene, { sceneId: id, questionsPerScene: opts.questionsPerScene, types: opts.types, balancer, wordings: opts.wordings });
    yield { id, seed, scene, items };
  }
}

/** A whole dataset in memory, images rendered. */
export function generateDataset(opts: DatasetOptions): {
  scenes: { id: string; seed: number; image: RgbImage; scene: Scene }[];
  items: SyntheticItem[];
} {
  const scenes: { id: string; seed: number; image: RgbImage; scene: Scene }[] = [];
  const items: SyntheticItem[] = [];
  for (const s of iterateDataset(opts)) {
    scenes.push({ id: s.id, seed: s.seed, image: renderScene(s.scene), scene: s.scene });
    items.push(...s.items);
  }
  return { scenes, items };
}

/** One JSONL line (no newline) for an item, keys in schema order. */
export function itemToJsonl(item: SyntheticItem): string {
  return JSON.stringify(item);
}
