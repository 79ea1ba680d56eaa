// Heads of one tower as (layer, head) pairs: the HeadRef type, its map key and display name, and seeded random draws
// of heads from the layers x heads grid. Its own file because the store vectors, the intervention specs, the ablation
// experiment and the heads benchmark all name heads the same way.

import { mulberry32 } from '../eval/synthetic.js';

export interface HeadRef {
  layer: number;
  head: number;
}

/** "layer:head", the key of head sets and vector maps. */
export const headKey = (h: HeadRef): string => `${h.layer}:${h.head}`;

/** "L<layer>H<head>", the name of a head in messages and reports. */
export const headName = (h: HeadRef): string => `L${h.layer}H${h.head}`;

/**
 * k distinct heads of a layers x heads grid, none in `exclude` ("layer:head" keys), drawn uniformly with a PRNG
 * seeded by `seed` (the same arguments always give the same heads), sorted by layer then head.
 */
export function randomHeads(k: number, exclude: ReadonlySet<string>, layers: number, heads: number, seed: number): HeadRef[] {
  for (const [v, what] of [[layers, 'layers'], [heads, 'heads']] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`randomHeads: ${what} must be a positive integer, got ${v}`);
  }
  if (!Number.isInteger(k) || k < 0) throw new Error(`randomHeads: k must be a non-negative integer, got ${k}`);
  if (!Number.isInteger(seed)) throw new Error(`randomHeads: seed must be an integer, got ${seed}`);
  const pool: HeadRef[] = [];
  for (let l = 0; l < layers; l++) for (let h = 0; h < heads; h++) if (!exclude.has(`${l}:${h}`)) pool.push({ layer: l, head: h });
  if (k > pool.length) {
    throw new Error(`randomHeads: cannot draw ${k} heads: only ${pool.length} of the ${layers * heads} heads are outside the ${layers * heads - pool.length} excluded`);
  }
  // Partial Fisher-Yates: the first k positions.
  const rand = mulberry32(seed >>> 0);
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(rand() * (pool.length - i));
    [pool[i], pool[j]] = [pool[j], pool[i]];
  }
  return pool.slice(0, k).sort((a, b) => a.layer - b.layer || a.head - b.head);
}
