// Streaming, validating safetensors reader.
//
// Format: u64 little-endian header length N, then N bytes of UTF-8 JSON mapping tensor names to
// {dtype, shape, data_offsets: [begin, end]} (offsets relative to the data section that starts at
// 8 + N), plus an optional "__metadata__" string map, then the raw tensor bytes.
//
// Only the header is read here; tensor bytes are read later one tensor (or one chunk) at a time.
// Everything in the header is checked up front, so a corrupt or truncated download fails at load
// with a message naming the file and tensor, instead of as garbage weights or a GPU-side crash.

import type { ByteSource } from './bytesource.js';

/** The dtypes vlmscope can upload; everything else is rejected (or skipped, see HeaderOptions). */
export type StoredDType = 'F32' | 'F16' | 'BF16';

export interface TensorInfo {
  name: string;
  /** The ByteSource name of the file holding the tensor. */
  file: string;
  dtype: StoredDType;
  shape: number[];
  /** Absolute byte offsets in the file: the tensor is bytes [begin, end). */
  begin: number;
  end: number;
}

/** A tensor whose dtype is a valid safetensors dtype that vlmscope does not read (e.g. I64 position ids). */
export interface SkippedTensor {
  name: string;
  file: string;
  dtype: string;
  shape: number[];
}

export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
}

export interface HeaderOptions {
  /**
   * When true, tensors of a known but unsupported dtype (I64, U8, F64, ...) are still fully validated
   * but are returned in `skipped` instead of failing the whole file. Some checkpoints carry integer
   * buffers (old CLIP exports store I64 `position_ids`) that the engine recomputes anyway.
   * Default false: any unsupported dtype is an error.
   */
  allowUnsupported?: boolean;
}

export interface SafetensorsHeader {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
  /** Only filled with HeaderOptions.allowUnsupported. */
  skipped: Map<string, SkippedTensor>;
}

/** Same limit as the reference implementation (safetensors' MAX_HEADER_SIZE): larger means corruption. */
export const MAX_HEADER_BYTES = 100_000_000;

const SUPPORTED_BYTES: Record<StoredDType, number> = { F32: 4, F16: 2, BF16: 2 };

// Every other dtype the safetensors format defines, in bits per element (F4/F6 are sub-byte).
// Knowing their sizes lets us say "unsupported" rather than "unknown", and validate skipped tensors.
const OTHER_DTYPE_BITS: Record<string, number> = {
  F64: 64,
  I8: 8,
  U8: 8,
  I16: 16,
  U16: 16,
  I32: 32,
  U32: 32,
  I64: 64,
  U64: 64,
  BOOL: 8,
  F8_E4M3: 8,
  F8_E5M2: 8,
  F8_E8M0: 8,
  C64: 64,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
};

export function dtypeBytes(d: StoredDType): number {
  const n = SUPPORTED_BYTES[d];
  if (n === undefined) throw new SafetensorsError(`unknown dtype ${String(d)}`);
  return n;
}

function isStoredDType(d: string): d is StoredDType {
  return Object.prototype.hasOwnProperty.call(SUPPORTED_BYTES, d);
}

const fmtShape = (shape: unknown[]): string => `[${shape.join(', ')}]`;

/** Number of bytes `shape` needs at `bits` per element, or an error string if not representable. */
function byteSize(shape: number[], bits: number): number | null {
  let n = 1;
  for (const d of shape) {
    n *= d;
    if (!Number.isSafeInteger(n)) return null;
  }
  const totalBits = n * bits;
  if (!Number.isSafeInteger(totalBits) || totalBits % 8 !== 0) return null;
  return totalBits / 8;
}

export async function readSafetensorsHeader(
  src: ByteSource,
  options: HeaderOptions = {},
): Promise<SafetensorsHeader> {
  const file = src.name;
  if (src.size < 8) {
    throw new SafetensorsError(
      `${file} is too short to be a safetensors file (${src.size} bytes, need at least 8; truncated?)`,
    );
  }
  const prefix = await src.read(0, 8);
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  // u64 read as two u32 halves: any non-zero high half is far beyond MAX_HEADER_BYTES anyway.
  const lo = view.getUint32(0, true);
  const hi = view.getUint32(4, true);
  const headerLen = hi * 2 ** 32 + lo;
  if (headerLen > MAX_HEADER_BYTES) {
    throw new SafetensorsError(
      `${file}: header length ${headerLen} is absurdly large (limit ${MAX_HEADER_BYTES}); not a safetensors file or corrupt`,
    );
  }
  if (8 + headerLen > src.size) {
    throw new SafetensorsError(
      `${file}: header length ${headerLen} runs past the end of the file (${src.size} bytes); truncated or not a safetensors file`,
    );
  }
  const dataStart = 8 + headerLen;
  const dataLen = src.size - dataStart;

  const headerBytes = await src.read(8, headerLen);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new SafetensorsError(`${file}: header is not valid UTF-8`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(`${file}: header is not valid JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new SafetensorsError(`${file}: header JSON is not an object`);
  }

  const tensors = new Map<string, TensorInfo>();
  const skipped = new Map<string, SkippedTensor>();
  let metadata: Record<string, string> = {};
  // Every tensor's absolute range, supported or skipped, for the overlap check.
  const ranges: { name: string; begin: number; end: number }[] = [];

  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(file, entry);
      continue;
    }
    const where = `tensor ${name} in ${file}`;
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
      throw new SafetensorsError(`${where}: header entry is not an object`);
    }
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    if (dtype === undefined) throw new SafetensorsError(`${where}: header entry has no dtype`);
    if (shape === undefined) throw new SafetensorsError(`${where}: header entry has no shape`);
    if (offsets === undefined) throw new SafetensorsError(`${where}: header entry has no data_offsets`);
    if (typeof dtype !== 'string') {
      throw new SafetensorsError(`${where}: dtype must be a string, got ${JSON.stringify(dtype)}`);
    }

    let bits: number;
    if (isStoredDType(dtype)) {
      bits = SUPPORTED_BYTES[dtype] * 8;
    } else if (Object.prototype.hasOwnProperty.call(OTHER_DTYPE_BITS, dtype)) {
      if (!options.allowUnsupported) {
        throw new SafetensorsError(
          `unsupported dtype ${dtype} for tensor ${name} in ${file} (vlmscope reads F32, F16, BF16)`,
        );
      }
      bits = OTHER_DTYPE_BITS[dtype]!;
    } else {
      throw new SafetensorsError(
        `unknown dtype ${JSON.stringify(dtype)} for tensor ${name} in ${file} (not a safetensors dtype; vlmscope reads F32, F16, BF16)`,
      );
    }

    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new SafetensorsError(
        `${where}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`,
      );
    }
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)
    ) {
      throw new SafetensorsError(
        `${where}: data_offsets must be [begin, end] non-negative integers, got ${JSON.stringify(offsets)}`,
      );
    }
    const [relBegin, relEnd] = offsets as [number, number];
    if (relBegin > relEnd) {
      throw new SafetensorsError(`${where}: data_offsets [${relBegin}, ${relEnd}] has begin after end`);
    }
    const need = byteSize(shape as number[], bits);
    if (need === null) {
      throw new SafetensorsError(`${where}: shape ${fmtShape(shape)} of ${dtype} has an unrepresentable byte size`);
    }
    if (relEnd - relBegin !== need) {
      throw new SafetensorsError(
        `${where}: shape ${fmtShape(shape)} of ${dtype} needs ${need} bytes but data_offsets span ${relEnd - relBegin}`,
      );
    }
    if (relEnd > dataLen) {
      throw new SafetensorsError(
        `${where}: data_offsets [${relBegin}, ${relEnd}] run past the end of the file ` +
          `(data section is ${dataLen} bytes; file truncated?)`,
      );
    }

    const begin = dataStart + relBegin;
    const end = dataStart + relEnd;
    ranges.push({ name, begin, end });
    if (isStoredDType(dtype)) {
      tensors.set(name, { name, file, dtype, shape: shape as number[], begin, end });
    } else {
      skipped.set(name, { name, file, dtype, shape: shape as number[] });
    }
  }

  // Overlapping ranges mean a corrupt (or hostile) header: two tensors would alias the same bytes.
  // Empty tensors own no bytes and cannot overlap anything.
  const nonEmpty = ranges.filter((r) => r.end > r.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < nonEmpty.length; i++) {
    const prev = nonEmpty[i - 1]!;
    const cur = nonEmpty[i]!;
    if (cur.begin < prev.end) {
      throw new SafetensorsError(
        `tensors ${prev.name} and ${cur.name} overlap in ${file}: ${prev.name} spans bytes ` +
          `[${prev.begin - dataStart}, ${prev.end - dataStart}) of the data section, ${cur.name} starts at ${cur.begin - dataStart}`,
      );
    }
  }

  return { tensors, metadata, skipped };
}

function parseMetadata(file: string, entry: unknown): Record<string, string> {
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
    throw new SafetensorsError(`${file}: __metadata__ must be an object of strings`);
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
    if (typeof v !== 'string') {
      throw new SafetensorsError(`${file}: __metadata__ value for ${JSON.stringify(k)} is not a string`);
    }
    out[k] = v;
  }
  return out;
}

/** Reads exactly the tensor's byte range (little-endian element data, as stored). */
export async function readTensorBytes(src: ByteSource, info: TensorInfo): Promise<Uint8Array> {
  checkInfoFits(src, info);
  return src.read(info.begin, info.end - info.begin);
}

/**
 * Streams a tensor in pieces, so a large weight can be written to a GPU buffer without holding it
 * all in memory. `offset` is relative to the tensor start. The chunk size is rounded down to a
 * multiple of 4 bytes (at least 4) because GPUQueue.writeBuffer needs 4-byte-aligned offsets and
 * sizes; only the last chunk of an odd-length F16/BF16 tensor can end unaligned. Yields nothing for
 * an empty tensor.
 */
/** Chunks of a tensor's bytes; a chunk's `bytes` may be overwritten by the next chunk, so copy or use it first. */
export async function* readTensorChunks(
  src: ByteSource,
  info: TensorInfo,
  chunkBytes: number,
  scratch?: Uint8Array,
): AsyncGenerator<{ offset: number; bytes: Uint8Array }> {
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes <= 0) {
    throw new RangeError(`readTensorChunks: chunkBytes must be a positive integer, got ${chunkBytes}`);
  }
  checkInfoFits(src, info);
  const step = Math.max(4, chunkBytes - (chunkBytes % 4));
  const total = info.end - info.begin;
  // One scratch buffer for all chunks (the caller's, to share it across tensors): each yielded view is valid
  // until the consumer asks for the next one.
  const buf = scratch && scratch.byteLength >= Math.min(step, total) ? scratch : new Uint8Array(Math.min(step, total));
  for (let offset = 0; offset < total; offset += step) {
    const length = Math.min(step, total - offset);
    yield { offset, bytes: await src.read(info.begin + offset, length, buf) };
  }
}

// Guards against a TensorInfo paired with the wrong source (e.g. from another shard).
function checkInfoFits(src: ByteSource, info: TensorInfo): void {
  if (info.file !== src.name) {
    throw new SafetensorsError(`tensor ${info.name} belongs to ${info.file}, not ${src.name}`);
  }
  if (info.end > src.size) {
    throw new SafetensorsError(
      `tensor ${info.name} in ${src.name}: bytes [${info.begin}, ${info.end}) run past the end of the file (${src.size} bytes); truncated?`,
    );
  }
}
