// Swapped-object counterfactuals (src/eval/counterfactual.ts): the swap flips exactly the asked relation and nothing
// else about the asked pair (colours, shapes, sizes, margins), leaves every other object, the background and its
// noise alone (pixels change only inside the pair's old and new boxes), keeps the question text, refuses swaps the
// generator would not have drawn, finds the pair of a question in any naming order, and regenerates scenes from
// scenes.jsonl records exactly.

import { describe, expect, it } from 'vitest';
import { OPPOSITE, GEOMETRY, boxGaps, generateScene, iterateDataset, renderScene, spatialRelation, type Scene, type SceneObject } from '../src/eval/synthetic.js';
import { pairForQuestion, parseSceneRecord, renderPair, sceneFromRecord, spatialPairs, spatialQuestion, swapPair, type SceneRecord } from '../src/eval/counterfactual.js';

const inBox = (o: SceneObject, px: number, py: number) => px >= o.x && px < o.x + o.d && py >= o.y && py < o.y + o.d;

describe('swapped-object counterfactual', () => {
  it('flips exactly the asked relation and nothing else, on every swappable pair of 120 scenes', () => {
    let pairs = 0;
    let refused = 0;
    for (let seed = 0; seed < 120; seed++) {
      const scene = generateScene(seed);
      for (const a of scene.objects)
        for (const b of scene.objects) {
          if (a === b || spatialRelation(a, b, scene.size) === null) continue;
          const r = swapPair(scene, a.name, b.name);
          if (!r.ok) {
            refused++;
            continue;
          }
          pairs++;
          const p = r.pair;
          const cf = p.counterfactual;
          const a2 = cf.objects.find((o) => o.name === a.name)!;
          const b2 = cf.objects.find((o) => o.name === b.name)!;
          // The asked relation flips to its opposite, with the offset exactly negated (same margins).
          expect(p.answer).toBe(spatialRelation(a, b, scene.size));
          expect(p.counterfactualAnswer).toBe(OPPOSITE[p.answer]);
          expect(spatialRelation(a2, b2, cf.size)).toBe(OPPOSITE[p.answer]);
          expect([a2.cx - b2.cx, a2.cy - b2.cy]).toEqual([b.cx - a.cx, b.cy - a.cy]);
          // Nothing else about the pair: colour, shape, size; each object sits where the other was (centres within
          // half a pixel, exactly when the sizes have the same parity).
          for (const [o, o2, other] of [[a, a2, b], [b, b2, a]] as const) {
            expect([o2.colour, o2.shape, o2.d, o2.name]).toEqual([o.colour, o.shape, o.d, o.name]);
            const off = (other.d - o.d) % 2 === 0 ? 0 : 0.5;
            expect([other.cx - o2.cx, other.cy - o2.cy]).toEqual([off, off]);
            expect(o2.x >= 0 && o2.y >= 0 && o2.x + o2.d <= scene.size && o2.y + o2.d <= scene.size).toBe(true);
          }
          // Every other object, the background and the noise stay; the question is the same text.
          expect(cf.objects.filter((o) => o !== a2 && o !== b2)).toEqual(scene.objects.filter((o) => o !== a && o !== b));
          expect(cf.objects.map((o) => o.name)).toEqual(scene.objects.map((o) => o.name));
          expect([cf.background, cf.noiseSeed, cf.size, cf.seed]).toEqual([scene.background, scene.noiseSeed, scene.size, scene.seed]);
          expect(p.question).toBe(spatialQuestion(a, b));
          // The generator's rules hold: no two boxes closer than the minimum gap.
          const gap = Math.round((GEOMETRY.minGap * scene.size) / 64);
          for (let i = 0; i < cf.objects.length; i++)
            for (let j = i + 1; j < cf.objects.length; j++) {
              const { gx, gy } = boxGaps(cf.objects[i]!, cf.objects[j]!);
              expect(gx >= gap || gy >= gap).toBe(true);
            }
          // Pixels differ only inside the pair's old and new boxes.
          if (seed < 20) {
            const { clean, counterfactual } = renderPair(p);
            expect(Buffer.compare(clean.data, renderScene(scene).data)).toBe(0);
            for (let i = 0; i < clean.width * clean.height; i++) {
              const px = i % clean.width;
              const py = Math.floor(i / clean.width);
              if ([a, b, a2, b2].some((o) => inBox(o, px, py))) continue;
              for (let c = 0; c < 3; c++) if (clean.data[i * 3 + c] !== counterfactual.data[i * 3 + c]) throw new Error(`seed ${seed}: pixel (${px}, ${py}) outside the pair changed`);
            }
            expect(Buffer.compare(counterfactual.data, clean.data)).not.toBe(0);
          }
        }
    }
    // Most pairs swap; the rest would leave the image or touch a third object.
    expect(pairs).toBeGreaterThan(180);
    expect(refused).toBeLessThan(pairs / 2);
  });

  it('refuses swaps the generator would not draw, and pairs without a relation, saying why', () => {
    const obj = (colour: 'red' | 'blue' | 'green', shape: 'circle' | 'square', x: number, y: number, d: number): SceneObject => ({ colour, shape, name: `${colour} ${shape}`, x, y, d, cx: x + d / 2, cy: y + d / 2 });
    const base = generateScene(1);
    const scene = (objects: SceneObject[]): Scene => ({ ...base, objects });
    // A large object at the edge cannot take a small one's place there.
    const edge = swapPair(scene([obj('red', 'circle', 20, 20, 18), obj('blue', 'square', 58, 22, 6)]), 'red circle', 'blue square');
    expect(edge).toEqual({ ok: false, reason: 'the red circle would leave the 64x64 image at (52, 16)' });
    // A third object right next to B's place blocks A, which is larger than B.
    const crowd = swapPair(scene([obj('red', 'circle', 2, 20, 18), obj('blue', 'square', 40, 24, 10), obj('green', 'square', 52, 24, 10)]), 'red circle', 'blue square');
    expect(crowd.ok).toBe(false);
    expect(!crowd.ok && crowd.reason).toMatch(/^the swapped red circle would come within 3 px of the green square$/);
    const none = swapPair(scene([obj('red', 'circle', 10, 10, 14), obj('blue', 'square', 14, 14, 14)]), 'red circle', 'blue square');
    expect(none).toEqual({ ok: false, reason: 'the red circle has no unambiguous relation to the blue square' });
    expect(swapPair(base, 'pink circle', base.objects[0]!.name)).toMatchObject({ ok: false, reason: expect.stringMatching(/^the scene has no pink circle/) });
  });

  it('takes the pair of a question in either naming order, the order set by its answer, and keeps its text', () => {
    for (let seed = 0; seed < 40; seed++) {
      const scene = generateScene(seed);
      for (const p of spatialPairs(scene).slice(0, 2)) {
        const reversed = `Relative to the ${p.b.name}, where is the ${p.a.name}?`;
        const r = pairForQuestion(scene, { id: 'q', question: reversed, answer: p.answer });
        expect(r.ok && [r.pair.a.name, r.pair.b.name, r.pair.answer, r.pair.counterfactualAnswer, r.pair.question]).toEqual([p.a.name, p.b.name, p.answer, OPPOSITE[p.answer], reversed]);
      }
    }
    const scene = generateScene(3);
    expect(pairForQuestion(scene, { id: 'q7', question: 'How many objects are there?', answer: 'two' })).toMatchObject({ ok: false, reason: expect.stringMatching(/^question q7 names 0 of the scene's objects/) });
  });

  it('regenerates the scenes of a make-synthetic scenes.jsonl exactly (any object-count range, variants)', () => {
    const record = (s: { id: string; seed: number; scene: Scene }): SceneRecord =>
      parseSceneRecord(
        JSON.stringify({
          id: s.id,
          seed: s.seed,
          size: s.scene.size,
          background: s.scene.background.name,
          objects: s.scene.objects.map(({ colour, shape, x, y, d, cx, cy }) => ({ colour, shape, x, y, d, cx, cy })),
          ...(s.scene.variant ? { variant: { object_scale: s.scene.variant.objectScale, background: s.scene.variant.background } } : {}),
        }),
        'scenes.jsonl line 1',
      );
    for (const opts of [{}, { minObjects: 2, maxObjects: 2 }, { minObjects: 3, maxObjects: 4 }, { variant: 'ood' as const }, { size: 96 }]) {
      for (const s of iterateDataset({ seed: 5, scenes: 6, types: ['spatial'], ...opts })) {
        const back = sceneFromRecord(record(s));
        expect(back).toEqual(s.scene);
      }
    }
    const s = [...iterateDataset({ seed: 5, scenes: 1 })][0]!;
    const rec = record(s);
    rec.objects[0]!.x += 1;
    expect(() => sceneFromRecord(rec)).toThrow(`scene s000000: regenerating seed ${s.seed} (size 64) does not give the recorded objects`);
    expect(() => parseSceneRecord('{"id": "s1", "seed": 1.5, "size": 64, "objects": []}', 'scenes.jsonl line 4')).toThrow('scenes.jsonl line 4: "seed" must be an integer, got 1.5');
  });
});
