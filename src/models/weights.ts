// Streams checkpoint tensors to the GPU one at a time, in chunks, so the JS heap holds at most one chunk;
// shapes are checked against what the config implies, with errors naming the tensor and its file.

import type { Checkpoint } from '../io/checkpoint.js';
import type { GpuContext } from '../gpu/context.js';
import { Tensor, type DType, numel } from '../gpu/tensor.js';

const CHUNK_BYTES = 16 << 20;

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
  /** Bytes the loaded tensors occupy (in check mode: would occupy). */
  bytesNeeded = 0;
  readonly problems: string[] = [];
  /** One read buffer for every chunk of every tensor, grown up to CHUNK_BYTES: loading leaves no garbage. */
  private scratch = new Uint8Array(0);

  constructor(
    private ctx: GpuContext | null,
    readonly ckpt: Checkpoint,
    private onProgress?: (p: LoadProgress) => void,
    private bytesTotal = 0,
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
  async load(name: string, expected: number[], viewShape?: number[]): Promise<Tensor> {
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
    const dtype = info.dtype.toLowerCase() as DType;
    const bytes = info.end - info.begin;
    this.bytesNeeded += bytes;
    if (!this.ctx) return placeholder(name, shape, dtype);
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    const ctx = this.ctx;
    const buffer = ctx.createBuffer(bytes, usage, name);
    try {
      const want = Math.min(CHUNK_BYTES, bytes);
      if (this.scratch.byteLength < want) this.scratch = new Uint8Array(Math.max(want, Math.min(CHUNK_BYTES, this.scratch.byteLength * 2)));
      for await (const chunk of this.ckpt.readChunks(name, CHUNK_BYTES, this.scratch)) {
        ctx.writeBytes(buffer, chunk.offset, chunk.bytes);
        this.bytesLoaded += chunk.bytes.byteLength;
        this.onProgress?.({ tensor: name, bytesDone: this.bytesLoaded, bytesTotal: this.bytesTotal });
      }
    } catch (e) {
      ctx.destroyBuffer(buffer);
      throw e;
    }
    return new Tensor(buffer, shape, dtype, name);
  }
}

/** A tensor with no GPU buffer, returned in check mode so model construction code runs unchanged. */
function placeholder(name: string, shape: number[], dtype: DType = 'f32'): Tensor {
  return new Tensor(null as unknown as GPUBuffer, shape, dtype, name);
}
