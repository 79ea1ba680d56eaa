// The layers x heads grid of the lab page: each cell shows one text head's image-attention mass (or, with a
// probe result loaded, the function it was found to serve) and its intervention state; clicks change the state.

import { viridis } from '../src/interp/probes.js';
import { headKey, type HeadScales } from './engine.js';

/** The cycle a click moves a head through: normal -> ablated (x0) -> gain (x2) -> normal. */
export function nextScale(scale: number | undefined): number {
  if (scale === undefined || scale === 1) return 0;
  if (scale === 0) return 2;
  return 1;
}

/** For each head, the function whose top set it is in (best rank first), from a `vlmscope probe` probes.json. */
export interface ProbeColouring {
  functions: string[];
  byHead: Map<string, string>;
}

export const FUNCTION_COLOURS = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4', '#f032e6', '#9a6324'];

export function parseProbeFile(text: string, file: string, layers: number, heads: number): ProbeColouring {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file} is not valid JSON: ${(e as Error).message}`);
  }
  const o = json as { layers?: unknown; heads?: unknown; functions?: unknown };
  if (typeof o !== 'object' || o === null || typeof o.functions !== 'object' || o.functions === null) {
    throw new Error(`${file} has no "functions": load the probes.json that \`vlmscope probe\` writes`);
  }
  if (o.layers !== layers || o.heads !== heads) {
    throw new Error(`${file} is for ${String(o.layers)} layers x ${String(o.heads)} heads, but the model has ${layers} x ${heads}`);
  }
  const best = new Map<string, { fn: string; rank: number }>();
  const functions = Object.keys(o.functions as object).sort();
  for (const fn of functions) {
    const top = (o.functions as Record<string, { top?: unknown }>)[fn]?.top;
    if (!Array.isArray(top)) throw new Error(`${file}: functions.${fn}.top is missing or not a list`);
    top.forEach((t: { layer?: unknown; head?: unknown; rank?: unknown }, i) => {
      if (!Number.isInteger(t.layer) || !Number.isInteger(t.head) || (t.layer as number) >= layers || (t.head as number) >= heads) {
        throw new Error(`${file}: functions.${fn}.top[${i}] names head ${String(t.layer)}.${String(t.head)}, which the model does not have`);
      }
      const key = headKey(t.layer as number, t.head as number);
      const rank = typeof t.rank === 'number' ? t.rank : i;
      const prev = best.get(key);
      if (!prev || rank < prev.rank) best.set(key, { fn, rank });
    });
  }
  return { functions, byHead: new Map([...best].map(([k, v]) => [k, v.fn])) };
}

export interface GridState {
  layers: number;
  heads: number;
  scales: HeadScales;
  /** [layer][head] image-attention mass of the last run, or null before the first answer. */
  mass: number[][] | null;
  mode: 'mass' | 'probe';
  probe: ProbeColouring | null;
  selected: { layer: number; head: number | null };
}

export interface GridEvents {
  onHead(layer: number, head: number): void;
  onLayer(layer: number): void;
}

export function renderGrid(table: HTMLTableElement, s: GridState, ev: GridEvents): void {
  table.replaceChildren();
  const head = table.createTHead().insertRow();
  head.appendChild(document.createElement('th'));
  for (let h = 0; h < s.heads; h++) {
    const th = document.createElement('th');
    th.textContent = `H${h}`;
    head.appendChild(th);
  }
  const body = table.createTBody();
  let max = 0;
  for (const row of s.mass ?? []) for (const v of row) max = Math.max(max, v);
  for (let l = 0; l < s.layers; l++) {
    const tr = body.insertRow();
    const th = document.createElement('th');
    th.className = 'layer';
    th.textContent = `L${l}`;
    th.title = `layer ${l}: click to ablate or restore all its heads`;
    th.addEventListener('click', () => ev.onLayer(l));
    tr.appendChild(th);
    for (let h = 0; h < s.heads; h++) {
      const td = tr.insertCell();
      const key = headKey(l, h);
      td.dataset.head = key;
      const scale = s.scales.get(key) ?? 1;
      if (scale === 0) td.classList.add('ablated');
      else if (scale !== 1) td.classList.add('gained');
      if (s.selected.layer === l && (s.selected.head === null || s.selected.head === h)) td.classList.add('selected');
      const mass = s.mass?.[l]?.[h];
      let title = `layer ${l} head ${h}`;
      if (s.mode === 'probe' && s.probe) {
        const fn = s.probe.byHead.get(key);
        td.style.background = fn ? FUNCTION_COLOURS[s.probe.functions.indexOf(fn) % FUNCTION_COLOURS.length]! : '#d8dce3';
        if (fn) title += `: ${fn}`;
      } else if (mass !== undefined) {
        const [r, g, b] = viridis(max > 0 ? mass / max : 0);
        td.style.background = `rgb(${r},${g},${b})`;
        td.textContent = (mass * 100).toFixed(0);
        title += `: ${(mass * 100).toFixed(1)}% of its attention on the image`;
      } else {
        td.style.background = '#d8dce3';
      }
      if (scale !== 1) title += ` (scaled x${scale})`;
      td.title = title;
      td.addEventListener('click', () => ev.onHead(l, h));
    }
  }
}

export function renderLegend(el: HTMLElement, probe: ProbeColouring | null, mode: 'mass' | 'probe'): void {
  el.replaceChildren();
  if (mode === 'mass') {
    const span = document.createElement('span');
    span.className = 'muted';
    span.textContent = 'cell = % of the head\'s attention (last prompt row) on image tokens';
    el.appendChild(span);
    return;
  }
  if (!probe) {
    el.textContent = 'load a probes.json from `vlmscope probe` to colour heads by function';
    return;
  }
  probe.functions.forEach((fn, i) => {
    const span = document.createElement('span');
    span.style.setProperty('--swatch', FUNCTION_COLOURS[i % FUNCTION_COLOURS.length]!);
    span.textContent = fn;
    el.appendChild(span);
  });
}
