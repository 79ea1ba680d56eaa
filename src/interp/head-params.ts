// Per-layer attention parameter blocks built from an intervention spec: for every head a (scale, alpha)
// pair the attention kernel reads. A plain run is scale 1, alpha 1 everywhere, so an intervened run does
// exactly the same work as a plain one.

import type { InterventionSpec, QueryScope, Tower, TowerDims } from './spec.js';

/** Bytes per layer slot: storage bindings must start at 256-byte offsets. */
export function headParamSlotBytes(heads: number): number {
  return Math.ceil((heads * 8) / 256) * 256;
}

/** The [layers] x slot buffer contents for one tower. */
export function headParamTable(spec: InterventionSpec, tower: Tower, dims: TowerDims): Float32Array {
  const slotFloats = headParamSlotBytes(dims.heads) / 4;
  const table = new Float32Array(dims.layers * slotFloats);
  for (let l = 0; l < dims.layers; l++) {
    for (let h = 0; h < dims.heads; h++) {
      table[l * slotFloats + 2 * h] = 1;
      table[l * slotFloats + 2 * h + 1] = 1;
    }
  }
  for (const e of spec.headScale) {
    // Several entries for one head compose multiplicatively.
    if (e.tower === tower) table[e.layer * slotFloats + 2 * e.head] *= e.scale;
  }
  const it = spec.imageTemperature;
  if (it && tower === 'text') {
    for (let l = 0; l < dims.layers; l++) {
      if (it.layers && !it.layers.includes(l)) continue;
      for (let h = 0; h < dims.heads; h++) {
        if (it.heads && !it.heads.includes(h)) continue;
        table[l * slotFloats + 2 * h + 1] = it.alpha;
      }
    }
  }
  return table;
}

/**
 * Query rows (relative to one forward call of `rows` rows) that get the image temperature, per the scope:
 * `all` every row of every call, `last` the last prompt row of the prefill only, `generated` decode steps only.
 */
export function temperatureRows(scope: QueryScope | null, phase: 'prefill' | 'decode', rows: number): [number, number] {
  if (!scope) return [0, 0];
  if (scope === 'all') return [0, rows];
  if (scope === 'last') return phase === 'prefill' ? [rows - 1, rows] : [0, 0];
  return phase === 'decode' ? [0, rows] : [0, 0];
}
