// Streams checkpoint tensors to the GPU one at a time, in chunks, so the JS heap holds at most one chunk;
// shapes are checked against what the config implies, with errors naming the tensor and its file.

import type { Checkpoint } from '../io/checkpoint.js';
import type { GpuContext } from '../gpu/context.js';
import { RowSplitTensor, Tensor, type DType, type Weight, dtypeBytes, numel } from '../gpu/tensor.js';
import { fmtBytes } from '../gpu/context.js';
import { decodeToF32, encodeFromF32 } from '../gpu/half.js';

const CHUNK_BYTES = 16 << 20;
const F16_MAX = 65504;
const MAX_BLOCK_BYTES = 512 << 20;

export interface WeightLoaderOptions {
  /** Convert floating-point weights to this storage dtype while loading (e.g. f16 to halve GPU memory). */
  dtype?: DType;
  /** Split tensors above this many bytes into row blocks (default: the adapter's binding / buffer limits). */
  maxBindingBytes?: number;
}

/** One tensor of a stack (WeightLoader.loadStacked): its checkpoint name and the shape the config implies. */
export interface StackPart {
  name: string;
  expected: number[];
}

export class WeightError extends Error {
  override name = 'WeightError';
}

export interface LoadProgress {
  tensor: string;
  bytesDone: number;
  bytesTotal: number;
}

/**
 * Loads weights by name. In `check` mode nothing touches the GPU: every missing tensor and wrong shape is
 * collected, so a model load can report all problems at once before allocating anything.
 */
export class WeightLoader {
  bytesLoaded = 0;
  /** Bytes the loaded tensors occupy on the GPU (in check mode: would occupy). */
  bytesNeeded = 0;
  /** Bytes read from the checkpoint for them. */
  sourceBytes = 0;
  readonly problems: string[] = [];
  /** One read buffer for every chunk of every tensor, grown up to CHUNK_BYTES: loading leaves no garbage. */
  private scratch = new Uint8Array(0);

  /** Values saturated by an f16 conversion, per tensor. */
  readonly clamped = new Map<string, number>();

  constructor(
    private ctx: GpuContext | null,
    readonly ckpt: Checkpoint,
    private onProgress?: (p: LoadProgress) => void,
    private bytesTotal = 0,
    private options: WeightLoaderOptions = {},
  ) {}

  get checkOnly(): boolean {
    return this.ctx === null;
  }

  /** Throw one error listing every problem found in check mode. */
  finishCheck(): void {
    if (!this.problems.length) return;
    // One line (CLI errors are one line): the problems joined, the first few in full.
    const shown = this.problems.slice(0, 8);
    const more = this.problems.length > shown.length ? `; and ${this.problems.length - shown.length} more` : '';
    throw new WeightError(`checkpoint ${this.ckpt.folder.name} does not fit its config: ${shown.join('; ')}${more}`);
  }

  has(name: string): boolean {
    return this.ckpt.has(name);
  }

  /** The first of `candidates` the checkpoint holds (legacy and current Hugging Face prefixes). */
  resolve(candidates: string[]): string {
    for (const c of candidates) if (this.ckpt.has(c)) return c;
    const msg = `missing tensor ${candidates[0]}${candidates.length > 1 ? ` (also looked for ${candidates.slice(1).join(', ')})` : ''}`;
    if (this.checkOnly) {
      this.problems.push(msg);
      return candidates[0];
    }
    throw new WeightError(`missing tensor ${candidates[0]} in ${this.ckpt.folder.name}${candidates.length > 1 ? ` (also looked for ${candidates.slice(1).join(', ')})` : ''}`);
  }

  /** Stored shape of a tensor. */
  shape(name: string): number[] {
    return this.ckpt.info(name).shape;
  }

  /**
   * Upload a tensor as stored (f16/bf16 stay packed), checking its shape. `viewShape` reinterprets the same
   * bytes (e.g. a conv weight [E, C, p, p] used as a matrix [E, C*p*p]).
   */
  /** Upload a tensor that must fit one binding (norms, biases, embeddings of positions). */
  async loadTensor(name: string, expected: number[], viewShape?: number[]): Promise<Tensor> {
    const w = await this.load(name, expected, viewShape);
    if (w instanceof RowSplitTensor) throw new WeightError(`tensor ${name} is too large for one GPU binding and cannot be split`);
    return w;
  }

  /**
   * Upload a tensor as stored (f16/bf16 stay packed) or converted to the loader's `dtype`, checking its shape.
   * `viewShape` reinterprets the same bytes (a conv weight [E, C, p, p] used as a matrix [E, C*p*p]). A tensor
   * larger than one storage binding comes back as row blocks over several buffers.
   */
  async load(name: string, expected: number[], viewShape?: number[]): Promise<Weight> {
    const shape = viewShape ?? expected;
    if (numel(shape) !== numel(expected)) throw new Error(`internal: view [${shape}] of ${name} changes the element count`);
    if (this.checkOnly && !this.ckpt.has(name)) return placeholder(name, shape); // already reported by resolve()
    const info = this.ckpt.info(name);
    const same = info.shape.length === expected.length && info.shape.every((s, i) => s === expected[i]);
    if (!same) {
      const msg = `tensor ${name} in ${info.file} has shape [${info.shape.join(', ')}], but the config implies [${expected.join(', ')}]`;
      if (!this.checkOnly) throw new WeightError(msg);
      this.problems.push(msg);
    }
    const stored = info.dtype.toLowerCase() as DType;
    const dtype = this.options.dtype ?? stored;
    this.bytesNeeded += numel(shape) * dtypeBytes(dtype);
    this.sourceBytes += info.end - info.begin;
    if (!this.ctx) return placeholder(name, shape, dtype);
    return this.upload(name, [name], shape, dtype);
  }

  /** Why `parts` cannot be stacked into one buffer (loadStacked), or null when they can. Reads headers only. */
  stackReason(parts: StackPart[]): string | null {
    if (!parts.length) return 'nothing to stack';
    const rest = parts[0].expected.slice(1);
    if (parts.some((q) => q.expected.length !== rest.length + 1 || q.expected.slice(1).some((d, i) => d !== rest[i]))) return 'their trailing dimensions differ';
    const present = parts.filter((q) => !this.checkOnly || this.ckpt.has(q.name));
    const dtype = this.stackDtype(present);
    const other = present.find((q) => this.storedDtype(q.name) !== dtype);
    if (!this.options.dtype && other) return `${other.name} is ${this.storedDtype(other.name)}, ${present[0].name} ${dtype}`;
    const odd = parts.find((q) => (numel(q.expected) * dtypeBytes(dtype)) % 4 !== 0);
    if (odd) return `${odd.name} does not end on a 4-byte boundary in ${dtype}`;
    return null;
  }

  private storedDtype(name: string): DType {
    return this.ckpt.info(name).dtype.toLowerCase() as DType;
  }

  /** The dtype a stack is held in: the loader's conversion, else the first present part's stored dtype. */
  private stackDtype(present: StackPart[]): DType {
    return this.options.dtype ?? (present.length ? this.storedDtype(present[0].name) : 'f32');
  }

  /**
   * Tensors [n_i, ...rest] stacked by rows into one weight [sum n_i, ...rest], in the order given: a decoder layer's
   * q, k and v projections (or their biases) in one buffer, so one matmul reads x once for all three and writes
   * each part's columns where they belong. The same bytes as loading them one by one. Only for parts that
   * `stackReason` accepts: one stored dtype (or a loader conversion), the same trailing dimensions, each part
   * ending on a 4-byte boundary (16-bit values are packed two per u32 word). Shapes are checked as `load` does.
   */
  async loadStacked(parts: StackPart[], label: string): Promise<Weight> {
    const why = this.stackReason(parts);
    if (why) throw new Error(`internal: ${label} cannot be stacked: ${why}`);
    const rest = parts[0].expected.slice(1);
    const present = parts.filter((q) => !this.checkOnly || this.ckpt.has(q.name));
    const dtype = this.stackDtype(present);
    for (const q of present) {
      const info = this.ckpt.info(q.name);
      if (info.shape.length !== q.expected.length || info.shape.some((d, i) => d !== q.expected[i])) {
        const msg = `tensor ${q.name} in ${info.file} has shape [${info.shape.join(', ')}], but the config implies [${q.expected.join(', ')}]`;
        if (!this.checkOnly) throw new WeightError(msg);
        this.problems.push(msg);
      }
    }
    const shape = [parts.reduce((n, q) => n + q.expected[0], 0), ...rest];
    this.bytesNeeded += numel(shape) * dtypeBytes(dtype);
    for (const q of present) this.sourceBytes += this.ckpt.info(q.name).end - this.ckpt.info(q.name).begin;
    if (!this.ctx) return placeholder(label, shape, dtype);
    return this.upload(label, parts.map((q) => q.name), shape, dtype);
  }

  /** Allocate `shape` in `dtype` (row blocks within the binding limit) and stream the named tensors into it in order. */
  private async upload(name: string, sources: string[], shape: number[], dtype: DType): Promise<Weight> {
    const ctx = this.ctx!;
    const bytes = numel(shape) * dtypeBytes(dtype);

    // Row blocks, each within one binding; an even row count keeps 16-bit pairs inside one u32 word.
    const rows = shape[0];
    const rowBytes = bytes / rows;
    // Blocks stay within one binding and at most 512 MiB: drivers can fail an allocation of exactly the
    // advertised maximum (SwiftShader does at 1 GiB), and a few more dispatches per matmul cost nothing.
    const limit = this.options.maxBindingBytes ?? Math.min(ctx.limits.maxStorageBufferBindingSize, ctx.limits.maxBufferSize, MAX_BLOCK_BYTES);
    let perPart = rows;
    if (bytes > limit) {
      perPart = Math.floor(limit / rowBytes);
      if (perPart % 2 && perPart > 1) perPart--;
      if (perPart < 1) throw new WeightError(`tensor ${name}: one row of ${fmtBytes(rowBytes)} exceeds the adapter's binding limit of ${fmtBytes(limit)}`);
    }
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    const parts: Tensor[] = [];
    const rowStarts: number[] = [];
    try {
      ctx.scoped(`allocating ${name}`, () => {
        for (let r0 = 0; r0 < rows; r0 += perPart) {
          const n = Math.min(perPart, rows - r0);
          const label = perPart < rows ? `${name}[rows ${r0}..${r0 + n - 1}]` : name;
          parts.push(new Tensor(ctx.createBuffer(n * rowBytes, usage, label), [n, ...shape.slice(1)], dtype, label));
          rowStarts.push(r0);
        }
      });
      const partBytes = perPart * rowBytes;
      // Route a run of converted bytes at storage offset `at` into the part buffers it covers.
      const write = (at: number, data: Uint8Array) => {
        while (data.byteLength) {
          const i = Math.floor(at / partBytes);
          const inPart = at - i * partBytes;
          const n = Math.min(data.byteLength, partBytes - inPart);
          ctx.writeBytes(parts[i].buffer, inPart, data.subarray(0, n));
          at += n;
          data = data.subarray(n);
        }
      };
      let base = 0; // storage byte offset of the current source
      for (const source of sources) {
        const info = this.ckpt.info(source);
        const stored = info.dtype.toLowerCase() as DType;
        const want = Math.min(CHUNK_BYTES, info.end - info.begin);
        if (this.scratch.byteLength < want) this.scratch = new Uint8Array(Math.max(want, Math.min(CHUNK_BYTES, this.scratch.byteLength * 2)));
        const ratio = dtypeBytes(dtype) / dtypeBytes(stored);
        for await (const chunk of this.ckpt.readChunks(source, CHUNK_BYTES, this.scratch)) {
          write(base + chunk.offset * ratio, dtype === stored ? chunk.bytes : this.convert(chunk.bytes, stored, dtype, source));
          this.bytesLoaded += chunk.bytes.byteLength;
          this.onProgress?.({ tensor: source, bytesDone: this.bytesLoaded, bytesTotal: this.bytesTotal });
        }
        base += numel(info.shape) * dtypeBytes(dtype);
      }
      // An allocation the device could not satisfy is reported here, with how far loading got.
      await ctx.checkErrors().catch((e: Error) => {
        throw new WeightError(`${e.message} (after loading ${fmtBytes(this.bytesLoaded)} of ${fmtBytes(this.bytesTotal)})`);
      });
    } catch (e) {
      for (const t of parts) ctx.destroyBuffer(t.buffer);
      throw e;
    }
    return parts.length === 1 ? parts[0] : new RowSplitTensor(parts, rowStarts, shape, dtype, name);
  }

  /** On-load dtype conversion of one chunk (f16 saturates at ±65504 instead of overflowing to infinity). */
  private convert(bytes: Uint8Array, from: DType, to: DType, name: string): Uint8Array {
    const values = decodeToF32(bytes, from);
    if (to === 'f16') {
      let clamped = 0;
      for (let i = 0; i < values.length; i++) {
        const v = values[i];
        if (v > F16_MAX) (values[i] = F16_MAX), clamped++;
        else if (v < -F16_MAX) (values[i] = -F16_MAX), clamped++;
      }
      if (clamped) this.clamped.set(name, (this.clamped.get(name) ?? 0) + clamped);
    }
    return encodeFromF32(values, to);
  }

}

/** A tensor with no GPU buffer, returned in check mode so model construction code runs unchanged. */
function placeholder(name: string, shape: number[], dtype: DType = 'f32'): Tensor {
  return new Tensor(null as unknown as GPUBuffer, shape, dtype, name);
}
