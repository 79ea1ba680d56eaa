// The intervention and capture specs of docs/interventions.md (the project's living copy of the contract,
// extended with mean_ablate, steer, attention_knockout, vision_token_add and patch_z): parsed from plain JSON,
// checked against the model's towers (layers, heads and head_dim vectors that do not fit are errors naming the
// field), normalised. The contract sits below both the models (which hand it to the kernels) and interp (which
// builds it), so imports run one way.

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

/** Replace the head's output z_h by a stored vector (its dataset mean): the input-dependent part is removed. */
export interface MeanAblate {
  tower: Tower;
  layer: number;
  head: number;
  /** [head_dim] */
  mean: Float32Array;
}

/** Add alpha * sigma * direction to the head's output z_h (ITI / CogVision emphasis) on the rows of `queries`. */
export interface HeadSteer {
  tower: Tower;
  layer: number;
  head: number;
  alpha: number;
  sigma: number;
  /** [head_dim], applied as given (not normalised here). */
  direction: Float32Array;
  queries: QueryScope;
}

/**
 * Attention knockout (information-flow experiments): in the chosen text layers and heads, the chosen query rows
 * cannot attend to the chosen keys (their scores are masked like the causal mask's).
 */
export interface AttentionKnockout {
  /** Absent = every text layer. */
  layers: number[] | null;
  /** Absent = every head. */
  heads: number[] | null;
  /** Which query rows lose the edges: a scope, or absolute positions (prompt rows or decode steps). */
  queries: QueryScope | { positions: number[] };
  /** Which keys they lose: the image-token positions, a range [start, end), or absolute positions. */
  keys: { kind: 'image' } | { kind: 'range'; start: number; end: number } | { kind: 'positions'; positions: number[] };
}

/**
 * Vision-token enhancement (Dual Mechanisms): every image-token embedding entering text layer 0, in the prefill,
 * becomes h + alpha * sum_k (h . w_k) / (|w_k|^2 + 1e-8) * w_k for the directions w_k (the columns of W).
 */
export interface VisionTokenAdd {
  alpha: number;
  /** [k] directions of the text hidden size. */
  directions: Float32Array[];
}

/**
 * Which prompt rows an activation patch replaces: the last prompt row, every prompt row, or absolute prompt
 * positions. Decode steps are never patched (patching compares prompt forwards).
 */
export type PatchRows = 'last' | 'all' | number[];

/**
 * Activation patching: the head's output z_h at the chosen prompt rows is replaced by given vectors (typically the
 * same head's z at the same rows in a counterfactual run), in place of what the head computed there.
 */
export interface PatchZ {
  tower: Tower;
  layer: number;
  head: number;
  rows: PatchRows;
  /**
   * [rows, head_dim] row-major: one vector per patched row, in the order of `rows` ("last": one; "all": one per
   * prompt position, which the run checks against the prompt's length).
   */
  values: Float32Array;
}

export interface InterventionSpec {
  headScale: HeadScale[];
  imageTemperature: ImageTemperature | null;
  meanAblate: MeanAblate[];
  steer: HeadSteer[];
  knockout: AttentionKnockout[];
  visionTokenAdd: VisionTokenAdd | null;
  patchZ: PatchZ[];
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
  /** Dims of one head's output z_h (the length of mean_ablate / steer vectors). */
  headDim: number;
  /** Width of the tower's residual stream (text: the length of vision_token_add directions), when known. */
  hidden?: number;
}

export type ModelDims = Record<Tower, TowerDims>;

export class SpecError extends Error {
  override name = 'SpecError';
}

export const EMPTY_INTERVENTIONS: InterventionSpec = { headScale: [], imageTemperature: null, meanAblate: [], steer: [], knockout: [], visionTokenAdd: null, patchZ: [] };

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

/** A value as the message shows it: JSON, except numbers JSON cannot spell (NaN, Infinity). */
function show(v: unknown): string {
  return typeof v === 'number' ? String(v) : JSON.stringify(v);
}

function num(v: unknown, where: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new SpecError(`${where} must be a finite number, got ${show(v)}`);
  return v;
}

function scope(v: unknown, where: string): QueryScope {
  const q = v ?? 'all';
  if (q !== 'all' && q !== 'last' && q !== 'generated') {
    throw new SpecError(`${where} must be "all", "last" or "generated", got ${JSON.stringify(q)}`);
  }
  return q;
}

/** A [head_dim] vector of the tower: a JSON list of finite numbers (from the library, a Float32Array or any numeric typed array). */
function headVector(v: unknown, t: Tower, dims: ModelDims, where: string): Float32Array {
  const hd = dims[t].headDim;
  const typed = ArrayBuffer.isView(v) && !(v instanceof DataView);
  if (!Array.isArray(v) && !typed) throw new SpecError(`${where} must be a list of ${hd} numbers (the ${t} head dim), got ${show(v)}`);
  const a = v as ArrayLike<unknown>;
  if (a.length !== hd) throw new SpecError(`${where} has ${a.length} values, but ${t} heads have ${hd} dims`);
  const out = new Float32Array(hd);
  for (let i = 0; i < hd; i++) {
    const x = a[i];
    if (typeof x !== 'number' || !Number.isFinite(x)) throw new SpecError(`${where}[${i}] must be a finite number, got ${show(x)}`);
    out[i] = x;
    if (!Number.isFinite(out[i])) throw new SpecError(`${where}[${i}] = ${x} is outside the float32 range`);
  }
  return out;
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
  onlyKeys(o, ['head_scale', 'image_temperature', 'mean_ablate', 'steer', 'attention_knockout', 'vision_token_add', 'patch_z'], source);
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
    const queries = scope(it.queries, `${w}.queries`);
    imageTemperature = {
      alpha: num(it.alpha, `${w}.alpha`),
      queries,
      layers: it.layers === undefined || it.layers === null ? null : intList(it.layers, `${w}.layers`, (x, ww) => layerIn(x, 'text', dims, ww)),
      heads: it.heads === undefined || it.heads === null ? null : intList(it.heads, `${w}.heads`, (x, ww) => headIn(x, 'text', dims, ww)),
    };
  }
  // Which head an entry names, for the duplicate checks below.
  const headKey = (e: { tower: Tower; layer: number; head: number }) => `${e.tower} layer ${e.layer} head ${e.head}`;
  const meanAblate: MeanAblate[] = [];
  const ablated = new Map<string, number>();
  for (const [i, eo, w] of entries(o, 'mean_ablate', source)) {
    onlyKeys(eo, ['tower', 'layer', 'head', 'mean'], w);
    const t = tower(eo.tower ?? 'text', `${w}.tower`);
    const e: MeanAblate = {
      tower: t,
      layer: layerIn(eo.layer, t, dims, `${w}.layer`),
      head: headIn(eo.head, t, dims, `${w}.head`),
      mean: headVector(eo.mean, t, dims, `${w}.mean`),
    };
    const prev = ablated.get(headKey(e));
    if (prev !== undefined) throw new SpecError(`${w} replaces ${headKey(e)} again (mean_ablate[${prev}] already does)`);
    ablated.set(headKey(e), i);
    meanAblate.push(e);
  }
  const steer: HeadSteer[] = [];
  const steered = new Map<string, { i: number; queries: QueryScope }>();
  for (const [i, eo, w] of entries(o, 'steer', source)) {
    onlyKeys(eo, ['tower', 'layer', 'head', 'alpha', 'sigma', 'direction', 'queries'], w);
    const t = tower(eo.tower ?? 'text', `${w}.tower`);
    const e: HeadSteer = {
      tower: t,
      layer: layerIn(eo.layer, t, dims, `${w}.layer`),
      head: headIn(eo.head, t, dims, `${w}.head`),
      alpha: num(eo.alpha, `${w}.alpha`),
      sigma: num(eo.sigma, `${w}.sigma`),
      direction: headVector(eo.direction, t, dims, `${w}.direction`),
      queries: scope(eo.queries, `${w}.queries`),
    };
    if (t === 'vision' && e.queries !== 'all') {
      throw new SpecError(`${w}.queries: the vision tower runs once over all its tokens, so only "all" applies there, got ${JSON.stringify(e.queries)}`);
    }
    for (let d = 0; d < e.direction.length; d++) {
      if (!Number.isFinite(Math.fround(e.alpha * e.sigma * e.direction[d]))) {
        throw new SpecError(`${w}: alpha * sigma * direction[${d}] = ${e.alpha * e.sigma * e.direction[d]} is outside the float32 range`);
      }
    }
    // Several entries on one head add up; they must then share one query scope (the kernel gates a head once).
    const prev = steered.get(headKey(e));
    if (prev && prev.queries !== e.queries) {
      throw new SpecError(`${w}.queries is "${e.queries}" but steer[${prev.i}] steers ${headKey(e)} on "${prev.queries}": one head has one steering scope`);
    }
    if (!prev) steered.set(headKey(e), { i, queries: e.queries });
    steer.push(e);
  }
  const knockout: AttentionKnockout[] = [];
  for (const [, eo, w] of entries(o, 'attention_knockout', source)) {
    onlyKeys(eo, ['layers', 'heads', 'queries', 'keys'], w);
    const layers = eo.layers === undefined || eo.layers === null ? null : intList(eo.layers, `${w}.layers`, (x, ww) => layerIn(x, 'text', dims, ww));
    const heads = eo.heads === undefined || eo.heads === null ? null : intList(eo.heads, `${w}.heads`, (x, ww) => headIn(x, 'text', dims, ww));
    const position = (x: unknown, ww: string) => {
      const p = int(x, ww);
      if (p < 0) throw new SpecError(`${ww} must be a position >= 0, got ${p}`);
      return p;
    };
    let queries: AttentionKnockout['queries'];
    if (Array.isArray(eo.queries)) queries = { positions: eo.queries.map((x, i) => position(x, `${w}.queries[${i}]`)) };
    else queries = scope(eo.queries, `${w}.queries`);
    let keys: AttentionKnockout['keys'];
    const k = eo.keys ?? 'image';
    if (k === 'image') keys = { kind: 'image' };
    else if (Array.isArray(k)) keys = { kind: 'positions', positions: k.map((x, i) => position(x, `${w}.keys[${i}]`)) };
    else if (typeof k === 'object' && k !== null) {
      const ko = obj(k, `${w}.keys`);
      onlyKeys(ko, ['start', 'end'], `${w}.keys`);
      const start = position(ko.start, `${w}.keys.start`);
      const end = position(ko.end, `${w}.keys.end`);
      if (end <= start) throw new SpecError(`${w}.keys: end ${end} must be greater than start ${start}`);
      keys = { kind: 'range', start, end };
    } else {
      throw new SpecError(`${w}.keys must be "image", {"start", "end"} or a list of positions, got ${JSON.stringify(k)}`);
    }
    // One head flag per (layer, head) gates the layer's edges: entries sharing a layer must name the same heads.
    for (const [j, prev] of knockout.entries()) {
      const shared = (layers ?? [...Array(dims.text.layers).keys()]).some((l) => prev.layers === null || prev.layers.includes(l));
      if (shared && JSON.stringify(prev.heads) !== JSON.stringify(heads)) {
        throw new SpecError(`${w}.heads differ from attention_knockout[${j}].heads in a layer both name; give one entry per set of heads and layers`);
      }
    }
    knockout.push({ layers, heads, queries, keys });
  }
  let visionTokenAdd: VisionTokenAdd | null = null;
  if (o.vision_token_add !== undefined && o.vision_token_add !== null) {
    const w = `${source}: vision_token_add`;
    const vo = obj(o.vision_token_add, w);
    onlyKeys(vo, ['alpha', 'directions'], w);
    if (!Array.isArray(vo.directions) || vo.directions.length === 0) throw new SpecError(`${w}.directions must be a non-empty list of vectors`);
    const hidden = dims.text.hidden;
    const directions = vo.directions.map((d, i) => {
      const ww = `${w}.directions[${i}]`;
      const arr = d instanceof Float32Array ? d : Array.isArray(d) ? Float32Array.from(d.map((x, j) => num(x, `${ww}[${j}]`))) : null;
      if (!arr) throw new SpecError(`${ww} must be a list of numbers`);
      if (hidden !== undefined && arr.length !== hidden) throw new SpecError(`${ww} has ${arr.length} values, but the text hidden size is ${hidden}`);
      if (i > 0 && arr.length !== directionLength(vo.directions as unknown[])) throw new SpecError(`${ww} has ${arr.length} values, unlike directions[0]`);
      return arr;
    });
    visionTokenAdd = { alpha: num(vo.alpha, `${w}.alpha`), directions };
  }
  const patchZ: PatchZ[] = [];
  const patched = new Map<string, number>();
  for (const [i, eo, w] of entries(o, 'patch_z', source)) {
    onlyKeys(eo, ['tower', 'layer', 'head', 'rows', 'values'], w);
    const t = tower(eo.tower ?? 'text', `${w}.tower`);
    // The vision tower runs once over its tokens with per-layer vectors only; per-row replacement is a text feature.
    if (t !== 'text') throw new SpecError(`${w}.tower: only text heads can be patched, got ${JSON.stringify(t)}`);
    const layer = layerIn(eo.layer, t, dims, `${w}.layer`);
    const head = headIn(eo.head, t, dims, `${w}.head`);
    const rows = patchRows(eo.rows, `${w}.rows`);
    const values = rowVectors(eo.values, t, dims, `${w}.values`);
    const n = values.length / dims[t].headDim;
    if (rows === 'last' && n !== 1) throw new SpecError(`${w}.values has ${n} rows, but rows "last" patches one row`);
    if (Array.isArray(rows) && n !== rows.length) throw new SpecError(`${w}.values has ${n} rows, but rows lists ${rows.length} positions`);
    const e: PatchZ = { tower: t, layer, head, rows, values };
    const prev = patched.get(headKey(e));
    if (prev !== undefined) throw new SpecError(`${w} patches ${headKey(e)} again (patch_z[${prev}] already does; give all its rows in one entry)`);
    patched.set(headKey(e), i);
    patchZ.push(e);
  }
  return { headScale, imageTemperature, meanAblate, steer, knockout, visionTokenAdd, patchZ };
}

/** patch_z rows: "last", "all", or a non-empty list of distinct prompt positions >= 0. */
function patchRows(v: unknown, where: string): PatchRows {
  if (v === 'last' || v === 'all') return v;
  if (!Array.isArray(v)) throw new SpecError(`${where} must be "last", "all" or a list of prompt positions, got ${show(v)}`);
  if (v.length === 0) throw new SpecError(`${where} lists no positions`);
  const seen = new Set<number>();
  return v.map((x, i) => {
    const p = int(x, `${where}[${i}]`);
    if (p < 0) throw new SpecError(`${where}[${i}] must be a prompt position >= 0, got ${p}`);
    if (seen.has(p)) throw new SpecError(`${where}[${i}]: row ${p} is listed twice`);
    seen.add(p);
    return p;
  });
}

/**
 * Vectors of [head_dim] values, one per row: a JSON list of such lists (from the library also a list of typed
 * arrays, or one flat typed array of rows * head_dim values), as [rows, head_dim] float32.
 */
function rowVectors(v: unknown, t: Tower, dims: ModelDims, where: string): Float32Array {
  const hd = dims[t].headDim;
  if (ArrayBuffer.isView(v) && !(v instanceof DataView)) {
    const a = v as unknown as ArrayLike<unknown>;
    if (a.length === 0 || a.length % hd !== 0) throw new SpecError(`${where} has ${a.length} values, not a whole number of rows of ${hd} (the ${t} head dim)`);
    const out = new Float32Array(a.length);
    for (let r = 0; r < a.length / hd; r++) out.set(headVector(Array.prototype.slice.call(a, r * hd, (r + 1) * hd), t, dims, `${where}[${r}]`), r * hd);
    return out;
  }
  if (!Array.isArray(v) || v.length === 0) throw new SpecError(`${where} must be a non-empty list of vectors of ${hd} numbers (the ${t} head dim), got ${show(v)}`);
  const out = new Float32Array(v.length * hd);
  v.forEach((row, r) => out.set(headVector(row, t, dims, `${where}[${r}]`), r * hd));
  return out;
}

/**
 * The prompt positions a patch_z entry replaces, in the order of its value rows, against a prompt of `L` tokens;
 * `where` names the entry (e.g. "patch_z[0]"). Rows beyond the prompt and a value count that does not match are
 * errors naming the entry and the row.
 */
export function resolvePatchRows(e: PatchZ, L: number, headDim: number, where: string): number[] {
  const n = e.values.length / headDim;
  if (e.rows === 'last') return [L - 1];
  if (e.rows === 'all') {
    if (n !== L) throw new SpecError(`${where}.values has ${n} rows, but rows "all" patches every row of the prompt of ${L} tokens`);
    return Array.from({ length: L }, (_, r) => r);
  }
  e.rows.forEach((p, i) => {
    if (p >= L) throw new SpecError(`${where}.rows[${i}]: row ${p} does not exist in the prompt of ${L} tokens (rows 0..${L - 1})`);
  });
  return e.rows;
}

function directionLength(ds: unknown[]): number {
  const d = ds[0];
  return d instanceof Float32Array || Array.isArray(d) ? d.length : -1;
}

/** The entries of list field `key` of `o` as [index, object, where] (none when the field is absent). */
function entries(o: Json, key: string, source: string): [number, Json, string][] {
  const v = o[key];
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new SpecError(`${source}: "${key}" must be a list`);
  return v.map((e, i) => {
    const w = `${source}: ${key}[${i}]`;
    return [i, obj(e, w), w];
  });
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
