// Per-layer attention parameter blocks built from an intervention spec, read by the attention kernel:
//  - head params, per head {scale: f32, alpha: f32, replace: u32, steer: u32} (16 bytes): head_scale, the
//    image-key temperature, `replace` bits (1: mean_ablate, 2: the layer's knocked-out edges apply to the head), and
//    the steering scope code (0 = off, else STEER_SCOPES index + 1);
//  - knockout bitsets, per layer and query row of one forward call, u32 words over the keys (knockoutBits);
//  - head vectors, per head [2, head_dim] f32: the mean_ablate replacement m_h, then the steering vector
//    alpha * sigma * direction (summed over the head's steer entries). Only a spec with mean_ablate / steer
//    entries for a tower builds (and binds) them.
//  - patch_z, per prefill call and patched layer: the layer's head vectors followed by a row map [rows, heads] (0: the
//    head is not patched on the row, k + 1: it takes vector k) and the vectors [count, head_dim] (patchCall). The
//    kernel reads them through the head-vector binding (no extra binding), only in layers that have patches.
// A plain run is scale 1, alpha 1, no replace, no steer everywhere, so an intervened run does exactly the work
// of a plain one; per head the kernel computes z' = scale * (replace ? m : z) + (steered row ? add : 0).

import { type InterventionSpec, type QueryScope, type Tower, type TowerDims, SpecError, resolvePatchRows } from './spec.js';

/** Bytes of one head's HeadParams. */
export const HEAD_PARAM_BYTES = 16;

/** Steering scopes in kernel code order: a head's `steer` field is the index here + 1 (0 = not steered). */
export const STEER_SCOPES: readonly QueryScope[] = ['all', 'last', 'generated'];

const align256 = (bytes: number) => Math.max(256, Math.ceil(bytes / 256) * 256);

/** Bytes per layer slot of the head params: storage bindings must start at 256-byte offsets. */
export function headParamSlotBytes(heads: number): number {
  return align256(heads * HEAD_PARAM_BYTES);
}

/** Bytes per layer slot of the head vectors ([heads, 2, headDim] f32, 256-byte aligned). */
export function headVectorSlotBytes(heads: number, headDim: number): number {
  return align256(heads * 2 * headDim * 4);
}

/** The [layers] x slot head-param buffer contents for one tower (u32 fields written through a view). */
export function headParamTable(spec: InterventionSpec, tower: Tower, dims: TowerDims): Float32Array {
  const slot = headParamSlotBytes(dims.heads) / 4;
  const table = new Float32Array(dims.layers * slot);
  const u32 = new Uint32Array(table.buffer);
  const at = (l: number, h: number) => l * slot + (HEAD_PARAM_BYTES / 4) * h;
  for (let l = 0; l < dims.layers; l++) {
    for (let h = 0; h < dims.heads; h++) {
      table[at(l, h)] = 1;
      table[at(l, h) + 1] = 1;
    }
  }
  for (const e of spec.headScale) {
    // Several entries for one head compose multiplicatively.
    if (e.tower === tower) table[at(e.layer, e.head)] *= e.scale;
  }
  const it = spec.imageTemperature;
  if (it && tower === 'text') {
    for (let l = 0; l < dims.layers; l++) {
      if (it.layers && !it.layers.includes(l)) continue;
      for (let h = 0; h < dims.heads; h++) {
        if (it.heads && !it.heads.includes(h)) continue;
        table[at(l, h) + 1] = it.alpha;
      }
    }
  }
  for (const e of spec.meanAblate) if (e.tower === tower) u32[at(e.layer, e.head) + 2] |= 1;
  // Knockout acts on the text tower's heads: bit 1 of `replace` lets the layer's blocked edges apply to the head.
  if (tower === 'text') {
    for (const k of spec.knockout) {
      for (let l = 0; l < dims.layers; l++) {
        if (k.layers && !k.layers.includes(l)) continue;
        for (let h = 0; h < dims.heads; h++) if (!k.heads || k.heads.includes(h)) u32[at(l, h) + 2] |= 2;
      }
    }
  }
  for (const e of spec.steer) if (e.tower === tower) u32[at(e.layer, e.head) + 3] = STEER_SCOPES.indexOf(e.queries) + 1;
  return table;
}

/** Whether the spec has mean_ablate / steer entries for the tower (only then the kernel binds head vectors). */
export function hasHeadVectors(spec: InterventionSpec, tower: Tower): boolean {
  return spec.meanAblate.some((e) => e.tower === tower) || spec.steer.some((e) => e.tower === tower);
}

/**
 * The [layers] x slot head-vector buffer contents for one tower: per head the mean_ablate vector, then the sum of
 * alpha * sigma * direction over its steer entries. Null when the tower has no such entries.
 */
export function headVectorTable(spec: InterventionSpec, tower: Tower, dims: TowerDims): Float32Array | null {
  if (!hasHeadVectors(spec, tower)) return null;
  const { heads, headDim: hd } = dims;
  const slot = headVectorSlotBytes(heads, hd) / 4;
  const at = (l: number, h: number) => l * slot + 2 * hd * h;
  const table = new Float32Array(dims.layers * slot);
  // A spec parsed for another model would land in the wrong slots: refuse it here rather than misplace vectors.
  const check = (what: string, e: { layer: number; head: number }, len: number) => {
    if (e.layer >= dims.layers || e.head >= dims.heads || len !== hd) {
      throw new SpecError(`${what} of ${tower} layer ${e.layer} head ${e.head} (${len} values) does not fit this model (${dims.layers} layers, ${heads} heads of ${hd} dims)`);
    }
  };
  for (const e of spec.meanAblate) {
    if (e.tower !== tower) continue;
    check('mean_ablate', e, e.mean.length);
    table.set(e.mean, at(e.layer, e.head));
  }
  // Accumulate in float64 so several entries on one head round once.
  const add = new Map<number, Float64Array>();
  for (const e of spec.steer) {
    if (e.tower !== tower) continue;
    check('steer', e, e.direction.length);
    const o = at(e.layer, e.head) + hd;
    const acc = add.get(o) ?? new Float64Array(hd);
    for (let d = 0; d < hd; d++) acc[d] += e.alpha * e.sigma * e.direction[d];
    add.set(o, acc);
  }
  for (const [o, acc] of add) table.set(acc, o);
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

/** The query rows of one forward call in each steering scope, in STEER_SCOPES order (same meaning as temperatureRows). */
export function steerRows(phase: 'prefill' | 'decode', rows: number): [number, number][] {
  return STEER_SCOPES.map((s) => temperatureRows(s, phase, rows));
}

/** Knocked-out edges of one forward call: per layer with entries, a bitset [rows, words] (bit k = key k blocked). */
export interface KnockoutCall {
  words: number;
  /** [layers] x [rows, words] u32, layers without entries left zero. */
  bits: Uint32Array;
  /** Layers that have entries (only they bind the bitset). */
  layers: Set<number>;
}

/**
 * The edges `spec.knockout` blocks in one forward call of `rows` query rows at positions pos0.. (phase as in
 * temperatureRows: 'last' is the last prompt row of the prefill, 'generated' every decode row, positions absolute).
 * Keys: the image-token positions, a range, or positions, below `nKeys`. Null when the spec has no knockout.
 */
export function knockoutBits(
  spec: InterventionSpec,
  o: { layers: number; phase: 'prefill' | 'decode'; pos0: number; rows: number; words: number; nKeys: number; imageKeys: readonly number[] },
): KnockoutCall | null {
  if (spec.knockout.length === 0) return null;
  const { rows, words } = o;
  const bits = new Uint32Array(o.layers * rows * words);
  const layers = new Set<number>();
  for (const k of spec.knockout) {
    let qrows: number[];
    if (typeof k.queries !== 'string') {
      qrows = (k.queries as { positions: number[] }).positions.map((p) => p - o.pos0).filter((r) => r >= 0 && r < rows);
    } else {
      const [b, e] = temperatureRows(k.queries as QueryScope, o.phase, rows);
      qrows = Array.from({ length: Math.max(0, e - b) }, (_, j) => b + j);
    }
    const keys =
      k.keys.kind === 'image'
        ? [...o.imageKeys]
        : k.keys.kind === 'range'
          ? Array.from({ length: k.keys.end - k.keys.start }, (_, j) => (k.keys as { start: number }).start + j)
          : k.keys.positions;
    for (let l = 0; l < o.layers; l++) {
      if (k.layers && !k.layers.includes(l)) continue;
      layers.add(l);
      for (const r of qrows) {
        const base = (l * rows + r) * words;
        for (const key of keys) if (key < o.nKeys) bits[base + (key >>> 5)] |= 1 << (key & 31);
      }
    }
  }
  return { words, bits, layers };
}

/**
 * patch_z of one prefill call over prompt rows [pos0, pos0 + rows) of a prompt of `promptLength` tokens: one slot per
 * patched text layer holding the layer's head vectors (`vectors`, headVectorTable's, or zeros), then the row map
 * [rows, heads] as f32 (0 = not patched, k + 1 = vector k; exact integers), then the vectors [count, headDim].
 */
export interface PatchCall {
  /** [slots] x slotBytes / 4 f32. */
  data: Float32Array;
  /** Bytes per slot (256-byte aligned, so every slot can be bound at its offset). */
  slotBytes: number;
  /** Slot of each patched layer (other layers bind the run's head vectors, if any, as usual). */
  slots: Map<number, number>;
  /** Element offsets inside a slot of the row map and of the first vector. */
  mapOffset: number;
  vectorOffset: number;
}

/** One replaced (call row, head) of one layer: the vector z_h takes there. */
export interface RowPatch {
  row: number;
  layer: number;
  head: number;
  /** [headDim] */
  values: Float32Array;
}

/** The patch_z data of one prefill call (null when no patched row falls in it; decode steps are never patched). */
export function patchCall(
  spec: InterventionSpec,
  dims: TowerDims,
  o: { pos0: number; rows: number; promptLength: number; vectors: Float32Array | null },
): PatchCall | null {
  const { heads, headDim: hd } = dims;
  const entries: RowPatch[] = [];
  spec.patchZ.forEach((e, i) => {
    if (e.tower !== 'text') return;
    if (e.layer >= dims.layers || e.head >= heads || e.values.length % hd !== 0) {
      throw new SpecError(`patch_z[${i}] (text layer ${e.layer} head ${e.head}, ${e.values.length} values) does not fit this model (${dims.layers} layers, ${heads} heads of ${hd} dims)`);
    }
    resolvePatchRows(e, o.promptLength, hd, `patch_z[${i}]`).forEach((p, j) => {
      const row = p - o.pos0;
      if (row >= 0 && row < o.rows) entries.push({ row, layer: e.layer, head: e.head, values: e.values.subarray(j * hd, (j + 1) * hd) });
    });
  });
  return rowPatchCall(entries, dims, o.rows, o.vectors);
}

/**
 * The patch data of a call of `rows` rows from (call row, layer, head, vector) entries (null when there are none):
 * patchCall's layout, also for calls whose rows are not prompt positions (the batched variants of patchHeads).
 */
export function rowPatchCall(entries: readonly RowPatch[], dims: TowerDims, rows: number, vectors: Float32Array | null): PatchCall | null {
  const { heads, headDim: hd } = dims;
  const perLayer = new Map<number, RowPatch[]>();
  for (const e of entries) {
    if (e.row < 0 || e.row >= rows || e.layer < 0 || e.layer >= dims.layers || e.head < 0 || e.head >= heads || e.values.length !== hd) {
      throw new SpecError(`patch of row ${e.row} layer ${e.layer} head ${e.head} (${e.values.length} values) does not fit a call of ${rows} rows (${dims.layers} layers, ${heads} heads of ${hd} dims)`);
    }
    const list = perLayer.get(e.layer) ?? [];
    list.push(e);
    perLayer.set(e.layer, list);
  }
  if (perLayer.size === 0) return null;
  const vecFloats = heads * 2 * hd;
  const mapOffset = vecFloats;
  const vectorOffset = mapOffset + rows * heads;
  const most = Math.max(...[...perLayer.values()].map((l) => l.length));
  const slotBytes = align256((vectorOffset + most * hd) * 4);
  const slotFloats = slotBytes / 4;
  const data = new Float32Array(perLayer.size * slotFloats);
  const slots = new Map<number, number>();
  const vslot = headVectorSlotBytes(heads, hd) / 4;
  [...perLayer.keys()].sort((a, b) => a - b).forEach((layer, s) => {
    slots.set(layer, s);
    const base = s * slotFloats;
    if (vectors) data.set(vectors.subarray(layer * vslot, layer * vslot + vecFloats), base);
    perLayer.get(layer)!.forEach((x, k) => {
      data[base + mapOffset + x.row * heads + x.head] = k + 1;
      data.set(x.values, base + vectorOffset + k * hd);
    });
  });
  return { data, slotBytes, slots, mapOffset, vectorOffset };
}
