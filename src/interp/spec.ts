// The intervention and capture specs of ../shared/docs/interventions.md: parsed from plain JSON, checked
// against the model's towers (layers and heads that do not exist are errors naming the field), normalised.

export type Tower = 'text' | 'vision';
export type QueryScope = 'all' | 'last' | 'generated';

export interface HeadScale {
  tower: Tower;
  layer: number;
  head: number;
  scale: number;
}

export interface ImageTemperature {
  alpha: number;
  queries: QueryScope;
  /** Absent = all layers. */
  layers: number[] | null;
  /** Absent = all heads. */
  heads: number[] | null;
}

export interface InterventionSpec {
  headScale: HeadScale[];
  imageTemperature: ImageTemperature | null;
}

export type ZPositions = { kind: 'last' } | { kind: 'list'; positions: number[] } | { kind: 'mean'; start: number; end: number };

export interface PatternCapture {
  tower: Tower;
  layer: number;
  heads: number[] | null;
  rows: number[] | null;
}

export interface CaptureSpec {
  logits: 'last' | 'all' | null;
  pattern: PatternCapture[];
  z: { tower: Tower; positions: ZPositions } | null;
  /** Hugging Face hidden_states indices per tower: 0 = embeddings, i = output of layer i-1. */
  residual: { tower: Tower; layer: number }[];
  /** Extension: the projector output that fills the image tokens, [image tokens, text hidden]. */
  imageFeatures: boolean;
}

export interface TowerDims {
  layers: number;
  heads: number;
}

export type ModelDims = Record<Tower, TowerDims>;

export class SpecError extends Error {
  override name = 'SpecError';
}

export const EMPTY_INTERVENTIONS: InterventionSpec = { headScale: [], imageTemperature: null };

type Json = Record<string, unknown>;

function obj(v: unknown, where: string): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new SpecError(`${where} must be a JSON object`);
  return v as Json;
}

function onlyKeys(o: Json, allowed: string[], where: string): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) throw new SpecError(`${where}: unknown field "${k}" (expected one of: ${allowed.join(', ')})`);
  }
}

function int(v: unknown, where: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new SpecError(`${where} must be an integer, got ${JSON.stringify(v)}`);
  return v;
}

function num(v: unknown, where: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new SpecError(`${where} must be a finite number, got ${JSON.stringify(v)}`);
  return v;
}

function tower(v: unknown, where: string): Tower {
  if (v !== 'text' && v !== 'vision') throw new SpecError(`${where} must be "text" or "vision", got ${JSON.stringify(v)}`);
  return v;
}

function layerIn(v: unknown, t: Tower, dims: ModelDims, where: string): number {
  const l = int(v, where);
  if (l < 0 || l >= dims[t].layers) {
    throw new SpecError(`${where}: layer ${l} does not exist in the ${t} tower (it has layers 0..${dims[t].layers - 1})`);
  }
  return l;
}

function headIn(v: unknown, t: Tower, dims: ModelDims, where: string): number {
  const h = int(v, where);
  if (h < 0 || h >= dims[t].heads) {
    throw new SpecError(`${where}: head ${h} does not exist in the ${t} tower (it has heads 0..${dims[t].heads - 1})`);
  }
  return h;
}

function intList(v: unknown, where: string, check: (x: unknown, w: string) => number): number[] {
  if (!Array.isArray(v)) throw new SpecError(`${where} must be a list of integers`);
  return v.map((x, i) => check(x, `${where}[${i}]`));
}

export function parseInterventions(json: unknown, dims: ModelDims, source = 'intervention spec'): InterventionSpec {
  const o = obj(json, source);
  onlyKeys(o, ['head_scale', 'image_temperature'], source);
  const headScale: HeadScale[] = [];
  if (o.head_scale !== undefined) {
    if (!Array.isArray(o.head_scale)) throw new SpecError(`${source}: "head_scale" must be a list`);
    o.head_scale.forEach((e, i) => {
      const w = `${source}: head_scale[${i}]`;
      const eo = obj(e, w);
      onlyKeys(eo, ['tower', 'layer', 'head', 'scale'], w);
      const t = tower(eo.tower ?? 'text', `${w}.tower`);
      headScale.push({
        tower: t,
        layer: layerIn(eo.layer, t, dims, `${w}.layer`),
        head: headIn(eo.head, t, dims, `${w}.head`),
        scale: num(eo.scale, `${w}.scale`),
      });
    });
  }
  let imageTemperature: ImageTemperature | null = null;
  if (o.image_temperature !== undefined && o.image_temperature !== null) {
    const w = `${source}: image_temperature`;
    const it = obj(o.image_temperature, w);
    onlyKeys(it, ['alpha', 'queries', 'layers', 'heads'], w);
    const queries = it.queries ?? 'all';
    if (queries !== 'all' && queries !== 'last' && queries !== 'generated') {
      throw new SpecError(`${w}.queries must be "all", "last" or "generated", got ${JSON.stringify(queries)}`);
    }
    imageTemperature = {
      alpha: num(it.alpha, `${w}.alpha`),
      queries,
      layers: it.layers === undefined || it.layers === null ? null : intList(it.layers, `${w}.layers`, (x, ww) => layerIn(x, 'text', dims, ww)),
      heads: it.heads === undefined || it.heads === null ? null : intList(it.heads, `${w}.heads`, (x, ww) => headIn(x, 'text', dims, ww)),
    };
  }
  return { headScale, imageTemperature };
}

function parsePositions(v: unknown, where: string): ZPositions {
  if (v === undefined || v === 'last') return { kind: 'last' };
  if (Array.isArray(v)) return { kind: 'list', positions: v.map((x, i) => int(x, `${where}[${i}]`)) };
  if (typeof v === 'string') {
    const m = /^mean:(-?\d+):(-?\d+)$/.exec(v);
    if (m) return { kind: 'mean', start: Number(m[1]), end: Number(m[2]) };
  }
  throw new SpecError(`${where} must be "last", a list of positions, or "mean:<start>:<end>", got ${JSON.stringify(v)}`);
}

export function parseCapture(json: unknown, dims: ModelDims, source = 'capture spec'): CaptureSpec {
  const o = obj(json, source);
  onlyKeys(o, ['logits', 'pattern', 'z', 'residual', 'image_features'], source);
  let logits: CaptureSpec['logits'] = null;
  if (o.logits !== undefined && o.logits !== null) {
    if (o.logits !== 'last' && o.logits !== 'all') throw new SpecError(`${source}: "logits" must be "last" or "all", got ${JSON.stringify(o.logits)}`);
    logits = o.logits;
  }
  const pattern: PatternCapture[] = [];
  if (o.pattern !== undefined) {
    if (!Array.isArray(o.pattern)) throw new SpecError(`${source}: "pattern" must be a list`);
    o.pattern.forEach((e, i) => {
      const w = `${source}: pattern[${i}]`;
      const eo = obj(e, w);
      onlyKeys(eo, ['tower', 'layer', 'heads', 'rows'], w);
      const t = tower(eo.tower ?? 'text', `${w}.tower`);
      pattern.push({
        tower: t,
        layer: layerIn(eo.layer, t, dims, `${w}.layer`),
        heads: eo.heads === undefined ? null : intList(eo.heads, `${w}.heads`, (x, ww) => headIn(x, t, dims, ww)),
        rows: eo.rows === undefined ? null : intList(eo.rows, `${w}.rows`, int),
      });
    });
  }
  let z: CaptureSpec['z'] = null;
  if (o.z !== undefined && o.z !== null) {
    const w = `${source}: z`;
    const zo = obj(o.z, w);
    onlyKeys(zo, ['positions', 'tower'], w);
    z = { tower: tower(zo.tower ?? 'text', `${w}.tower`), positions: parsePositions(zo.positions, `${w}.positions`) };
  }
  const residual: CaptureSpec['residual'] = [];
  if (o.residual !== undefined) {
    if (!Array.isArray(o.residual)) throw new SpecError(`${source}: "residual" must be a list`);
    o.residual.forEach((e, i) => {
      const w = `${source}: residual[${i}]`;
      const eo = obj(e, w);
      onlyKeys(eo, ['tower', 'layer'], w);
      const t = tower(eo.tower ?? 'text', `${w}.tower`);
      const l = int(eo.layer, `${w}.layer`);
      const n = dims[t].layers + 1;
      const idx = l < 0 ? n + l : l;
      if (idx < 0 || idx >= n) throw new SpecError(`${w}.layer: hidden state ${l} does not exist in the ${t} tower (valid: ${-n}..${n - 1})`);
      residual.push({ tower: t, layer: idx });
    });
  }
  if (o.image_features !== undefined && typeof o.image_features !== 'boolean') {
    throw new SpecError(`${source}: "image_features" must be true or false`);
  }
  return { logits, pattern, z, residual, imageFeatures: o.image_features === true };
}

/** Resolve z positions against a sequence of `len` rows (negative positions count from the end). */
export function resolvePositions(p: ZPositions, len: number, where = 'z.positions'): number[] {
  const fix = (x: number) => {
    const i = x < 0 ? len + x : x;
    if (i < 0 || i >= len) throw new SpecError(`${where}: position ${x} is outside the sequence of ${len} tokens`);
    return i;
  };
  if (p.kind === 'last') return [len - 1];
  if (p.kind === 'list') return p.positions.map(fix);
  const s = fix(p.start);
  const e = p.end < 0 ? len + p.end : p.end; // end is exclusive
  if (e <= s || e > len) throw new SpecError(`${where}: mean range ${p.start}:${p.end} is empty or outside the sequence of ${len} tokens`);
  return Array.from({ length: e - s }, (_, i) => s + i);
}
