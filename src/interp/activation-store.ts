// The on-disk activation store of `vlmscope collect` (Node only; node: modules are imported inside the functions,
// as in eval/dataset.ts, so bundling the library for browsers pulls in no Node built-ins):
//
//   DIR/index.json                {"model", "tower", "layers", "heads", "dim", "pool", "concat_layer_mean", "chain",
//                                  "context", "max_new_tokens", "args": {...}, "examples": [{"id", "main_id",
//                                  "function", "question", "answer", "prediction", "correct", "row"}, ...]}; examples
//                                  of questions with a paraphrase id add "wording" and "wording_heldout" before "row"
//   DIR/activations.safetensors   one F32 tensor "z" of shape [rows, layers, heads, dim]; row i = examples[i]
//
// While a run is in progress the rows go to DIR/parts/: args.json (the run's arguments), then part-00000.safetensors
// (tensor "z" [n, layers, heads, dim]) and part-00000.json ({"start", "count", "examples"}) every `chunkSize`
// questions, each written to a temp file and renamed (the .json last: a part counts once its .json exists). A rerun
// with the same arguments keeps the parts, skips the questions they hold and goes on; other arguments are refused
// (StoreMismatchError). At the end the parts are streamed into activations.safetensors and index.json (one part in
// memory at a time) and DIR/parts is removed. The final files depend only on the arguments and the rows, never on
// where runs were interrupted, so an interrupted and resumed run gives the same bytes as an uninterrupted one.

import type { VlmModel } from '../models/vlm.js';
import type { Tokenizer } from '../io/tokenizer.js';
import type { EvalItem } from '../eval/dataset.js';
import { FileNotFoundError, openFileSource, type ByteSource } from '../io/bytesource.js';
import { SafetensorsError, readSafetensorsHeader, readTensorBytes } from '../io/safetensors.js';
import {
  type CollectOptions,
  type CollectRow,
  DEFAULT_COLLECT_MAX_NEW_TOKENS,
  checkPool,
  collectDims,
  iterateActivations,
  planCollection,
  poolName,
} from './collect.js';

export const DEFAULT_CHUNK_SIZE = 64;

/** One example of index.json (snake_case, as stored). */
export interface StoreExample {
  id: string;
  main_id: string;
  function: string;
  question: string;
  answer: string;
  prediction: string;
  correct: boolean;
  /** The question's wording id ("spatial.w2", src/eval/paraphrases.ts), when its question file gives one. */
  wording?: string;
  /** The wording is held out (only in evaluation sets): `probe --split-by wording` tests on these. */
  wording_heldout?: boolean;
  /** Row of the "z" tensor. */
  row: number;
}

/** The run's arguments: a rerun must give the same to resume. */
export type StoreArgs = Record<string, unknown>;

export interface ActivationIndex {
  model: string;
  tower: 'text' | 'vision';
  layers: number;
  heads: number;
  dim: number;
  pool: string;
  concat_layer_mean: boolean;
  chain: boolean;
  context: 'gold' | 'predicted';
  max_new_tokens: number;
  args: StoreArgs;
  examples: StoreExample[];
}

export interface CollectStoreOptions extends Omit<CollectOptions, 'startAt' | 'endAt' | 'priorPredictions'> {
  /** Collect only the first `limit` questions of the plan (planCollection order). */
  limit?: number;
  /**
   * Process at most this many questions in this call and return with the store incomplete (resumable); for
   * tests and for running a long collection in slices.
   */
  stopAfter?: number;
  /** Questions per part file (default 64); does not change the final files. */
  chunkSize?: number;
  /** The "model" field of index.json (default the folder the model was loaded from). */
  modelName?: string;
  /** More arguments that a resumed run must repeat (the CLI passes its --dtype). */
  extraArgs?: Record<string, unknown>;
}

export interface CollectStoreResult {
  dir: string;
  /** The store is finished (index.json and activations.safetensors written). */
  complete: boolean;
  /** The store was already complete with these arguments: nothing was computed. */
  alreadyComplete: boolean;
  /** Questions in the plan (after limit). */
  total: number;
  /** Questions stored so far. */
  done: number;
  /** Questions found stored when the call began. */
  resumedFrom: number;
  /** Every stored example (no z), in row order. */
  examples: StoreExample[];
}

/** A rerun with arguments other than the stored run's. */
export class StoreMismatchError extends Error {
  override name = 'StoreMismatchError';
}

interface Part {
  start: number;
  count: number;
  examples: StoreExample[];
}

type Fs = typeof import('node:fs/promises');
type NodePath = typeof import('node:path');

async function node(): Promise<{ fs: Fs; path: NodePath }> {
  return { fs: await import('node:fs/promises'), path: await import('node:path') };
}

const partName = (k: number, ext: 'json' | 'safetensors') => `part-${String(k).padStart(5, '0')}.${ext}`;

/** JSON with typed arrays written as plain arrays (interventions may hold vectors). */
function plainJson(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v, (_k, x) => (ArrayBuffer.isView(x) && !(x instanceof DataView) ? Array.from(x as unknown as ArrayLike<number>) : x)));
}

async function sha256Hex(text: string): Promise<string> {
  const digest = await globalThis.crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The safetensors header of one F32 tensor "z" (the layout encodeSafetensors writes: JSON padded to 8 bytes). */
function zHeader(shape: number[]): Uint8Array {
  const bytes = shape.reduce((a, b) => a * b, 1) * 4;
  let json = JSON.stringify({ z: { dtype: 'F32', shape, data_offsets: [0, bytes] } });
  json += ' '.repeat((8 - ((8 + json.length) % 8)) % 8);
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  return out;
}

/** The whole safetensors file of one F32 tensor "z". */
function zFile(shape: number[], data: Float32Array): Uint8Array {
  const head = zHeader(shape);
  const out = new Uint8Array(head.length + data.byteLength);
  out.set(head);
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), head.length);
  return out;
}

/** Parses a one-tensor "z" safetensors file: its shape and where the data starts; throws when malformed. */
function parseZFile(bytes: Uint8Array, name: string): { shape: number[]; dataStart: number } {
  if (bytes.length < 8) throw new Error(`${name} is not a safetensors file (${bytes.length} bytes)`);
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  if (8 + n > bytes.length) throw new Error(`${name}: header length ${n} runs past the end of the file`);
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  } catch (e) {
    throw new Error(`${name}: the header is not JSON (${(e as Error).message})`);
  }
  const z = header.z;
  if (!z || z.dtype !== 'F32' || !Array.isArray(z.shape)) throw new Error(`${name} does not hold an F32 tensor "z"`);
  const numel = z.shape.reduce((a, b) => a * b, 1);
  if (z.data_offsets[0] !== 0 || z.data_offsets[1] !== numel * 4 || bytes.length !== 8 + n + numel * 4) {
    throw new Error(`${name}: tensor "z" of shape [${z.shape}] does not match the file size ${bytes.length}`);
  }
  return { shape: z.shape, dataStart: 8 + n };
}

async function writeAtomic(fs: Fs, file: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${file}.tmp-${typeof process !== 'undefined' ? process.pid : 0}`;
  try {
    await fs.writeFile(tmp, data);
    await fs.rename(tmp, file);
  } catch (e) {
    await fs.unlink(tmp).catch(() => {});
    throw new Error(`cannot write ${file}: ${(e as Error).message}`);
  }
}

async function readJson(fs: Fs, file: string): Promise<unknown | undefined> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  return JSON.parse(text);
}

/**
 * The arguments that identify a collection run (checked on resume): the model, every collection option and a
 * SHA-256 of the planned questions (id, image, question, answer, function, chain context, and the wording when any
 * question has one: stores of files without wordings keep the hash they had before wordings). Only the model's dims
 * and folder name are read, so a loaded model or `{dims: modelDimsFromConfig(...), source}` will do.
 */
export async function storeArgs(
  model: Pick<VlmModel, 'dims' | 'source'>,
  tokenizer: Tokenizer,
  items: readonly EvalItem[],
  opts: CollectStoreOptions,
): Promise<StoreArgs> {
  const tower = opts.tower ?? 'text';
  const plan = planCollection(items, { chain: opts.chain }).slice(0, opts.limit ?? Infinity);
  const worded = plan.some((s) => s.item.wording !== undefined || s.item.wordingHeldout !== undefined);
  const planText = JSON.stringify(
    plan.map((s) => {
      const key: unknown[] = [s.item.id, s.mainId, s.item.imagePath, s.item.question, s.item.answer, s.item.function, s.context.map((c) => c.id)];
      if (worded) key.push(s.item.wording ?? null, s.item.wordingHeldout ?? null);
      return key;
    }),
  );
  const dims = collectDims(model, { tower, concatLayerMean: opts.concatLayerMean });
  const eos = opts.eosTokenIds ?? (tokenizer.eosTokenId != null ? [tokenizer.eosTokenId] : []);
  return {
    model: opts.modelName ?? model.source,
    tower,
    layers: dims.layers,
    heads: dims.heads,
    dim: dims.dim,
    pool: poolName(opts.pool),
    concat_layer_mean: opts.concatLayerMean ?? false,
    chain: opts.chain ?? true,
    context: opts.context ?? 'gold',
    max_new_tokens: opts.maxNewTokens ?? DEFAULT_COLLECT_MAX_NEW_TOKENS,
    eos_token_ids: eos,
    interventions: opts.interventions ? plainJson(opts.interventions) : null,
    examples: plan.length,
    examples_sha256: await sha256Hex(planText),
    ...(opts.extraArgs ? (plainJson(opts.extraArgs) as Record<string, unknown>) : {}),
  };
}

function describeMismatch(dir: string, stored: StoreArgs, wanted: StoreArgs, complete: boolean): StoreMismatchError {
  const keys = [...new Set([...Object.keys(stored), ...Object.keys(wanted)])];
  const diffs = keys
    .filter((k) => JSON.stringify(stored[k]) !== JSON.stringify(wanted[k]))
    .map((k) => {
      const s = k === 'examples_sha256' ? 'other questions' : JSON.stringify(stored[k]) ?? 'absent';
      const w = k === 'examples_sha256' ? 'these' : JSON.stringify(wanted[k]) ?? 'absent';
      return `${k} ${s} (now ${w})`;
    });
  return new StoreMismatchError(
    `${dir} holds ${complete ? 'a finished' : 'an unfinished'} collection with other arguments: ${diffs.join(', ')}; ` +
      `rerun with the same arguments to ${complete ? 'keep it' : 'resume'}, or choose another output folder (or remove it)`,
  );
}

const argsEqual = (a: StoreArgs, b: StoreArgs) => JSON.stringify(a) === JSON.stringify(b);

export type StoreState =
  | { state: 'empty' }
  | { state: 'partial'; parts: Part[]; done: number }
  | { state: 'complete'; index: ActivationIndex };

/**
 * What DIR holds for a run with `args`: nothing yet, resumable parts (invalid trailing parts are ignored) or a
 * finished store. Throws StoreMismatchError when it was made with other arguments, and a plain Error when DIR is
 * a file or the store is damaged.
 */
export async function inspectStore(dir: string, args: StoreArgs): Promise<StoreState> {
  const { fs, path } = await node();
  try {
    if (!(await fs.stat(dir)).isDirectory()) throw new Error(`output ${dir} is a file; give a folder`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'empty' };
    throw e;
  }
  let index: unknown;
  try {
    index = await readJson(fs, path.join(dir, 'index.json'));
  } catch (e) {
    throw new Error(`${path.join(dir, 'index.json')} is not valid JSON (${(e as Error).message}); remove ${dir} or choose another output folder`);
  }
  if (index !== undefined) {
    const ix = index as ActivationIndex;
    if (typeof ix !== 'object' || ix === null || typeof ix.args !== 'object' || !Array.isArray(ix.examples)) {
      throw new Error(`${path.join(dir, 'index.json')} is not an activation index; choose another output folder`);
    }
    if (!argsEqual(ix.args, args)) throw describeMismatch(dir, ix.args, args, true);
    return { state: 'complete', index: ix };
  }
  const partsDir = path.join(dir, 'parts');
  let stored: unknown;
  try {
    stored = await readJson(fs, path.join(partsDir, 'args.json'));
  } catch (e) {
    throw new Error(`${path.join(partsDir, 'args.json')} is not valid JSON (${(e as Error).message}); remove ${partsDir} to start over`);
  }
  if (stored === undefined) return { state: 'empty' };
  if (!argsEqual(stored as StoreArgs, args)) throw describeMismatch(dir, stored as StoreArgs, args, false);
  const parts: Part[] = [];
  let done = 0;
  const width = (args.layers as number) * (args.heads as number) * (args.dim as number);
  for (let k = 0; ; k++) {
    let part: Part | undefined;
    try {
      part = (await readJson(fs, path.join(partsDir, partName(k, 'json')))) as Part | undefined;
      if (part !== undefined) {
        const st = await fs.stat(path.join(partsDir, partName(k, 'safetensors')));
        const ok = part.start === done && Number.isInteger(part.count) && part.count > 0 && part.examples.length === part.count;
        if (!ok || st.size < part.count * width * 4) part = undefined;
      }
    } catch {
      part = undefined; // unreadable: redo from here
    }
    if (part === undefined) break;
    parts.push(part);
    done += part.count;
  }
  return { state: 'partial', parts, done };
}

/** Removes part files after the valid ones, and temp files, so numbering continues cleanly. */
async function pruneParts(fs: Fs, partsDir: string, validParts: number): Promise<void> {
  let names: string[] = [];
  try {
    names = await fs.readdir(partsDir);
  } catch {
    return;
  }
  for (const n of names) {
    const m = /^part-(\d+)\.(json|safetensors)$/.exec(n);
    if ((m && Number(m[1]) >= validParts) || /\.tmp-\d+$/.test(n)) await fs.unlink(`${partsDir}/${n}`).catch(() => {});
  }
}

/** Streams the parts into activations.safetensors and index.json, then removes DIR/parts. */
async function mergeParts(dir: string, args: StoreArgs, parts: Part[]): Promise<ActivationIndex> {
  const { fs, path } = await node();
  const partsDir = path.join(dir, 'parts');
  const L = args.layers as number;
  const H = args.heads as number;
  const F = args.dim as number;
  const rows = parts.reduce((n, p) => n + p.count, 0);
  const pid = typeof process !== 'undefined' ? process.pid : 0;

  const zPath = path.join(dir, 'activations.safetensors');
  const zTmp = `${zPath}.tmp-${pid}`;
  const out = await fs.open(zTmp, 'w');
  try {
    await out.write(zHeader([rows, L, H, F]));
    for (let k = 0; k < parts.length; k++) {
      const name = path.join(partsDir, partName(k, 'safetensors'));
      const bytes = new Uint8Array(await fs.readFile(name));
      const { shape, dataStart } = parseZFile(bytes, name);
      const want = [parts[k].count, L, H, F];
      if (shape.join(',') !== want.join(',')) throw new Error(`${name} holds z of shape [${shape}], expected [${want}]; remove ${partsDir} to start over`);
      await out.write(bytes.subarray(dataStart));
    }
  } catch (e) {
    await out.close();
    await fs.unlink(zTmp).catch(() => {});
    throw e;
  }
  await out.close();
  await fs.rename(zTmp, zPath);

  const head: Omit<ActivationIndex, 'examples'> = {
    model: args.model as string,
    tower: args.tower as ActivationIndex['tower'],
    layers: L,
    heads: H,
    dim: F,
    pool: args.pool as string,
    concat_layer_mean: args.concat_layer_mean as boolean,
    chain: args.chain as boolean,
    context: args.context as ActivationIndex['context'],
    max_new_tokens: args.max_new_tokens as number,
    args,
  };
  // index.json: the fields on one line, then one example per line.
  const iPath = path.join(dir, 'index.json');
  const iTmp = `${iPath}.tmp-${pid}`;
  const ix = await fs.open(iTmp, 'w');
  const examples: StoreExample[] = [];
  try {
    const fields = Object.entries(head).map(([k, v]) => `${JSON.stringify(k)}: ${JSON.stringify(v)}`);
    await ix.write(`{${fields.join(', ')}, "examples": [`);
    let first = true;
    for (const p of parts) {
      const lines = p.examples.map((e) => {
        const s = `${first ? '' : ','}\n${JSON.stringify(e)}`;
        first = false;
        return s;
      });
      await ix.write(lines.join(''));
      examples.push(...p.examples);
    }
    await ix.write('\n]}\n');
  } catch (e) {
    await ix.close();
    await fs.unlink(iTmp).catch(() => {});
    throw e;
  }
  await ix.close();
  await fs.rename(iTmp, iPath);
  await fs.rm(partsDir, { recursive: true, force: true });
  return { ...head, examples };
}

function toExample(r: CollectRow, row: number): StoreExample {
  // The wording fields only for worded questions (other stores keep their bytes), before "row" as documented.
  const wording = r.wording !== undefined ? { wording: r.wording } : {};
  const heldout = r.wordingHeldout !== undefined ? { wording_heldout: r.wordingHeldout } : {};
  return { id: r.id, main_id: r.mainId, function: r.function, question: r.question, answer: r.answer, prediction: r.prediction, correct: r.correct, ...wording, ...heldout, row };
}

/**
 * Collects activations into DIR (format: the file comment), resuming from the parts an interrupted run with the
 * same arguments left, and merging them into the final files when every question is done.
 *
 * @example
 * const r = await collectToStore(model, tokenizer, items, 'acts/', { pool: 'last_prompt', concatLayerMean: true });
 * const { index, z } = await readActivationStore('acts/'); // z: Float32Array [rows * layers * heads * dim]
 */
export async function collectToStore(
  model: VlmModel,
  tokenizer: Tokenizer,
  items: readonly EvalItem[],
  dir: string,
  opts: CollectStoreOptions,
): Promise<CollectStoreResult> {
  const { fs, path } = await node();
  checkPool(opts.pool, opts.tower ?? 'text');
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  if (!Number.isInteger(chunkSize) || chunkSize < 1) throw new Error(`chunkSize must be a positive integer, got ${chunkSize}`);
  if (opts.limit !== undefined && (!Number.isInteger(opts.limit) || opts.limit < 0)) throw new Error(`limit must be a non-negative integer, got ${opts.limit}`);
  if (opts.stopAfter !== undefined && (!Number.isInteger(opts.stopAfter) || opts.stopAfter < 0)) {
    throw new Error(`stopAfter must be a non-negative integer, got ${opts.stopAfter}`);
  }
  const args = await storeArgs(model, tokenizer, items, opts);
  const total = args.examples as number;
  if (total === 0) throw new Error('there are no questions to collect');
  const state = await inspectStore(dir, args);
  if (state.state === 'complete') {
    return { dir, complete: true, alreadyComplete: true, total, done: total, resumedFrom: total, examples: state.index.examples };
  }
  const partsDir = path.join(dir, 'parts');
  const parts = state.state === 'partial' ? state.parts : [];
  let done = state.state === 'partial' ? state.done : 0;
  const resumedFrom = done;
  await fs.mkdir(partsDir, { recursive: true });
  if (state.state === 'empty') await writeAtomic(fs, path.join(partsDir, 'args.json'), `${JSON.stringify(args, null, 1)}\n`);
  await pruneParts(fs, partsDir, parts.length);

  const dims = collectDims(model, { tower: opts.tower, concatLayerMean: opts.concatLayerMean });
  const width = dims.layers * dims.heads * dims.dim;
  const endAt = Math.min(total, opts.stopAfter !== undefined ? done + opts.stopAfter : total);
  const predictions = new Map<string, string>();
  for (const p of parts) for (const e of p.examples) predictions.set(e.id, e.prediction);

  let buffer: CollectRow[] = [];
  const flush = async () => {
    if (buffer.length === 0) return;
    const start = done - buffer.length;
    const data = new Float32Array(buffer.length * width);
    buffer.forEach((r, i) => data.set(r.z, i * width));
    const k = parts.length;
    const part: Part = { start, count: buffer.length, examples: buffer.map((r, i) => toExample(r, start + i)) };
    await writeAtomic(fs, path.join(partsDir, partName(k, 'safetensors')), zFile([buffer.length, dims.layers, dims.heads, dims.dim], data));
    await writeAtomic(fs, path.join(partsDir, partName(k, 'json')), `${JSON.stringify(part)}\n`);
    parts.push(part);
    buffer = [];
  };

  const { limit: _l, stopAfter: _s, chunkSize: _c, modelName: _m, extraArgs: _e, ...collectOpts } = opts;
  try {
    const onExample = opts.onExample ? (row: CollectRow, n: number) => opts.onExample!(row, n, total) : undefined;
    const rows = iterateActivations(model, tokenizer, items, { ...collectOpts, startAt: done, endAt, priorPredictions: predictions, onExample });
    for await (const row of rows) {
      buffer.push(row);
      done++;
      if (buffer.length >= chunkSize) await flush();
    }
  } finally {
    // Keep what was computed, also when a question failed.
    await flush();
  }
  const examples = parts.flatMap((p) => p.examples);
  if (done < total) return { dir, complete: false, alreadyComplete: false, total, done, resumedFrom, examples };
  const index = await mergeParts(dir, args, parts);
  return { dir, complete: true, alreadyComplete: false, total, done, resumedFrom, examples: index.examples };
}

/** A problem with an activation store on disk; the message names the file and the field. */
export class ActivationStoreError extends Error {
  override name = 'ActivationStoreError';
}

/** A finished store, validated: its index, dims and all rows of z. */
export interface ActivationStore {
  dir: string;
  index: ActivationIndex;
  model: unknown;
  tower: unknown;
  layers: number;
  heads: number;
  dim: number;
  rows: number;
  examples: StoreExample[];
  /** [rows, layers, heads, dim] row-major. */
  z: Float32Array;
  /** [rows, layers, heads, dim] */
  shape: number[];
}

/**
 * Reads and checks a finished store (`vlmscope collect` output, or one written by other tools in the same format:
 * index.json + activations.safetensors with tensor "z" [rows, layers, heads, dim]). Every problem is an
 * ActivationStoreError naming the file and field: a missing or unfinished store, invalid JSON, missing or
 * mistyped fields, duplicate ids, a z tensor of another dtype or shape, rows past the tensor.
 */
export async function readActivationStore(dir: string): Promise<ActivationStore> {
  const { fs, path } = await node();
  const fail = (msg: string): never => {
    throw new ActivationStoreError(msg);
  };
  const isDir = await fs.stat(dir).then(
    (st) => st.isDirectory(),
    () => fail(`activation store ${dir} does not exist; give the folder \`vlmscope collect\` wrote (index.json + activations.safetensors)`),
  );
  if (!isDir) fail(`activation store ${dir} is a file; give the folder that holds index.json and activations.safetensors`);
  const indexPath = path.join(dir, 'index.json');
  const exists = (p: string) => fs.stat(p).then(() => true, () => false);
  if (!(await exists(indexPath)) && (await exists(path.join(dir, 'parts')))) {
    fail(`activation store ${dir} is not finished (no index.json, only parts/); rerun the same \`vlmscope collect\` to complete it`);
  }
  let text = '';
  try {
    text = await fs.readFile(indexPath, 'utf8');
  } catch (e) {
    fail(`cannot read activation index ${indexPath}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  let index: Record<string, unknown> = {};
  try {
    index = JSON.parse(text);
  } catch (e) {
    fail(`activation index ${indexPath} is not valid JSON: ${(e as Error).message}`);
  }
  if (!index || typeof index !== 'object' || Array.isArray(index)) fail(`${indexPath} must hold a JSON object`);
  const dims = {} as Record<'layers' | 'heads' | 'dim', number>;
  for (const k of ['layers', 'heads', 'dim'] as const) {
    const v = index[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) fail(`${indexPath}: "${k}" is ${JSON.stringify(v)}, expected a positive integer`);
    dims[k] = v as number;
  }
  if (!Array.isArray(index.examples) || index.examples.length === 0) fail(`${indexPath}: "examples" must be a non-empty array`);
  const examples: StoreExample[] = (index.examples as unknown[]).map((e, i) => {
    const at = `${indexPath}: examples[${i}]`;
    if (!e || typeof e !== 'object') fail(`${at} is not an object`);
    const o = e as Record<string, unknown>;
    for (const k of ['id', 'main_id'] as const) {
      if (typeof o[k] !== 'string' && typeof o[k] !== 'number') fail(`${at}: "${k}" is ${JSON.stringify(o[k])}, expected a string or number`);
    }
    if (typeof o.function !== 'string' || o.function === '') fail(`${at}: "function" is ${JSON.stringify(o.function)}, expected a function label`);
    if (typeof o.correct !== 'boolean') fail(`${at}: "correct" is ${JSON.stringify(o.correct)}, expected true or false`);
    if (typeof o.row !== 'number' || !Number.isInteger(o.row) || o.row < 0) fail(`${at}: "row" is ${JSON.stringify(o.row)}, expected a row index`);
    if (o.wording !== undefined && (typeof o.wording !== 'string' || o.wording === '')) fail(`${at}: "wording" is ${JSON.stringify(o.wording)}, expected a wording id such as "spatial.w2"`);
    if (o.wording_heldout !== undefined && typeof o.wording_heldout !== 'boolean') fail(`${at}: "wording_heldout" is ${JSON.stringify(o.wording_heldout)}, expected true or false`);
    return o as unknown as StoreExample;
  });
  const ids = new Set<string>();
  for (const e of examples) {
    if (ids.has(String(e.id))) fail(`${indexPath}: example id ${JSON.stringify(e.id)} appears twice`);
    ids.add(String(e.id));
  }

  const zPath = path.join(dir, 'activations.safetensors');
  let src: ByteSource;
  try {
    src = await openFileSource(zPath);
  } catch (e) {
    throw new ActivationStoreError(e instanceof FileNotFoundError ? `activation store ${dir} has no activations.safetensors` : (e as Error).message);
  }
  try {
    let header;
    try {
      header = await readSafetensorsHeader(src);
    } catch (e) {
      throw new ActivationStoreError(e instanceof SafetensorsError ? e.message : `${zPath}: ${(e as Error).message}`);
    }
    const info = header.tensors.get('z');
    if (!info) throw new ActivationStoreError(`${zPath} has no tensor "z" (it has ${[...header.tensors.keys()].join(', ') || 'none'})`);
    const want = [dims.layers, dims.heads, dims.dim];
    if (info.dtype !== 'F32') fail(`${zPath}: tensor "z" is ${info.dtype}, expected F32`);
    if (info.shape.length !== 4 || want.some((d, i) => info.shape[i + 1] !== d)) {
      fail(`${zPath}: tensor "z" has shape [${info.shape.join(', ')}], but index.json says [rows, ${want.join(', ')}] (layers, heads, dim)`);
    }
    const rows = info.shape[0]!;
    const bad = examples.find((e) => e.row >= rows);
    if (bad) fail(`${indexPath}: example ${JSON.stringify(bad.id)} has row ${bad.row}, but "z" in ${zPath} has ${rows} rows`);
    const bytes = await readTensorBytes(src, info);
    const z = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    return { dir, index: index as unknown as ActivationIndex, model: index.model, tower: index.tower, ...dims, rows, examples, z, shape: [rows, ...want] };
  } finally {
    await src.close();
  }
}
