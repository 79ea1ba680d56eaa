// known_heads.json: the shipped organism declares its planted heads (text layer 1, heads 0 and 1), and malformed
// files are refused with the file and field named.

import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseKnownHeads, readKnownHeads } from '../src/interp/known-heads.js';
import { REPO_ROOT } from './helpers/fixtures.js';

const dims = { text: { layers: 4, heads: 8, kvHeads: 8, headDim: 16, hidden: 128 }, vision: { layers: 4, heads: 4, kvHeads: 4, headDim: 24, hidden: 96 } } as never;

describe('known heads', () => {
  it('the organism declares L1H0 and L1H1 (attend to the first / second named object)', async () => {
    const k = await readKnownHeads(join(REPO_ROOT, 'weights/organism'), dims);
    expect(k.source).toBe('scripts/train_organism.py');
    expect(k.heads.map((h) => [h.tower, h.layer, h.head, h.role])).toEqual([
      ['text', 1, 0, 'attend_first_named_object'],
      ['text', 1, 1, 'attend_second_named_object'],
    ]);
    expect(k.heads.every((h) => h.function === 'spatial' && h.questionTypes.includes('spatial'))).toBe(true);
  });

  it('refuses malformed files naming the field', async () => {
    const ok = { tower: 'text', layer: 1, head: 0, role: 'r', function: 'spatial' };
    for (const [json, msg] of [
      [[], /expected an object/],
      [{ heads: {} }, /"heads" must be a list/],
      [{ heads: [] }, /"heads" is empty/],
      [{ heads: [{ ...ok, layer: -1 }] }, /heads\[0\]\.layer must be a non-negative integer/],
      [{ heads: [{ ...ok, layer: 4 }] }, /heads\[0\]\.layer 4 does not exist: the text tower has 4 layers/],
      [{ heads: [{ ...ok, head: 8 }] }, /heads\[0\]\.head 8 does not exist/],
      [{ heads: [ok, ok] }, /heads\[1\] names text L1H0 again/],
      [{ heads: [{ ...ok, role: '' }] }, /heads\[0\]\.role must be a non-empty string/],
      [{ heads: [{ ...ok, tower: 'audio' }] }, /heads\[0\]\.tower must be "text" or "vision"/],
    ] as const) {
      expect(() => parseKnownHeads(json, 'm/known_heads.json', dims)).toThrow(msg);
      expect(() => parseKnownHeads(json, 'm/known_heads.json', dims)).toThrow(/^m\/known_heads\.json: /);
    }
    await expect(readKnownHeads(join(REPO_ROOT, 'tests/fixtures/tiny-llava'))).rejects.toThrow(/known_heads\.json: not found/);
  });
});
