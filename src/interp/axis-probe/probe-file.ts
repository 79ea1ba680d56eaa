// Vision-token enhancement (see ../axis-probe.ts for the method and where it differs from the authors' code).
// probes.json: the trained probes and their settings, written and read back.

import { AXES, AXIS_LABELS } from './items.js';
import type { AxisProbes } from './probe.js';

export interface ProbeFileSettings {
  [key: string]: unknown;
}

/** probes.json: {"horizontal": {W: [[w0, w1] x D], b, accuracy: {train, held_out}, ...}, "vertical": ..., "settings"}. */
export function probesToJson(probes: AxisProbes, settings: ProbeFileSettings = {}): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const axis of AXES) {
    const p = probes[axis];
    if (!p) continue;
    out[axis] = {
      labels: [...p.labels],
      W: Array.from({ length: p.D }, (_, d) => [p.W[2 * d]!, p.W[2 * d + 1]!]),
      b: [p.b[0]!, p.b[1]!],
      accuracy: { train: p.trainAccuracy, held_out: p.heldOutAccuracy },
      items: { train: p.trainItems, held_out: p.heldOutItems },
      final_loss: p.losses.length ? p.losses[p.losses.length - 1] : null,
    };
  }
  out.settings = settings;
  return out;
}

/** Reads probes.json (one-line errors naming `source`); at least one axis must be present. */
export function probesFromJson(json: unknown, source: string): AxisProbes {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${source}: expected a JSON object with "horizontal" and / or "vertical" probes`);
  const o = json as Record<string, unknown>;
  const probes: AxisProbes = {};
  let D: number | null = null;
  for (const axis of AXES) {
    if (o[axis] === undefined) continue;
    const p = o[axis] as Record<string, unknown>;
    const w = `${source}: ${axis}`;
    if (typeof p !== 'object' || p === null) throw new Error(`${w} must be an object with W and b`);
    if (!Array.isArray(p.W) || p.W.length === 0) throw new Error(`${w}.W must be a non-empty list of [w0, w1] rows`);
    const W = new Float64Array(2 * p.W.length);
    p.W.forEach((row: unknown, d: number) => {
      if (!Array.isArray(row) || row.length !== 2 || row.some((x) => typeof x !== 'number' || !Number.isFinite(x))) throw new Error(`${w}.W[${d}] must be 2 numbers`);
      W[2 * d] = row[0] as number;
      W[2 * d + 1] = row[1] as number;
    });
    if (D !== null && p.W.length !== D) throw new Error(`${w}.W has ${p.W.length} rows, unlike the other axis (${D})`);
    D = p.W.length;
    if (!Array.isArray(p.b) || p.b.length !== 2 || p.b.some((x) => typeof x !== 'number' || !Number.isFinite(x))) throw new Error(`${w}.b must be 2 numbers`);
    const acc = (p.accuracy ?? {}) as Record<string, unknown>;
    const items = (p.items ?? {}) as Record<string, unknown>;
    const numOr = (v: unknown) => (typeof v === 'number' ? v : NaN);
    probes[axis] = {
      axis,
      labels: AXIS_LABELS[axis],
      D,
      W,
      b: Float64Array.from(p.b as number[]),
      trainAccuracy: numOr(acc.train),
      heldOutAccuracy: numOr(acc.held_out),
      trainItems: numOr(items.train),
      heldOutItems: numOr(items.held_out),
      losses: [],
    };
  }
  if (Object.keys(probes).length === 0) throw new Error(`${source}: no "horizontal" or "vertical" probe`);
  return probes;
}
