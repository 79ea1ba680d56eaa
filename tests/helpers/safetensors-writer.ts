// Tiny safetensors writer for tests. Builds valid files by default; the options let a test write
// deliberately malformed ones (raw header text, a lying header length) to exercise the validator.

export interface TestTensor {
  /** Any string, so tests can write unknown or unsupported dtypes. */
  dtype: string;
  shape: number[];
  data: Uint8Array;
  /** Overrides the computed [begin, end] (relative to the data section). */
  dataOffsets?: unknown;
}

export interface EncodeOptions {
  /** Header JSON used verbatim (string) or stringified (object) instead of the computed one. */
  rawHeader?: string | object;
  /** Value written in the u64 length prefix instead of the real header length. */
  headerLength?: number;
}

export function encodeSafetensors(
  tensors: Record<string, TestTensor>,
  metadata?: Record<string, string>,
  options: EncodeOptions = {},
): Uint8Array<ArrayBuffer> {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  const parts: Uint8Array[] = [];
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: t.dataOffsets ?? [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
    parts.push(t.data);
  }
  let text: string;
  if (options.rawHeader === undefined) text = JSON.stringify(header);
  else text = typeof options.rawHeader === 'string' ? options.rawHeader : JSON.stringify(options.rawHeader);
  // Like the reference writer, pad the header with spaces to an 8-byte boundary.
  let headerBytes = new TextEncoder().encode(text);
  if (options.rawHeader === undefined && headerBytes.byteLength % 8 !== 0) {
    headerBytes = new TextEncoder().encode(text + ' '.repeat(8 - (headerBytes.byteLength % 8)));
  }
  const out = new Uint8Array(8 + headerBytes.byteLength + offset);
  const view = new DataView(out.buffer);
  const len = options.headerLength ?? headerBytes.byteLength;
  view.setUint32(0, len % 2 ** 32, true);
  view.setUint32(4, Math.floor(len / 2 ** 32), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.byteLength;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** Little-endian bytes of float32 values. */
export function f32Bytes(values: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(values).buffer);
}

/** float32 -> float16 bits, round-to-nearest-even; enough for test values (normals, zeros, inf). */
export function f32ToF16(v: number): number {
  const f = new Float32Array([v]);
  const u = new Uint32Array(f.buffer)[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  return sign | h;
}

export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

export function f16Bytes(values: number[]): Uint8Array {
  return new Uint8Array(new Uint16Array(values.map(f32ToF16)).buffer);
}

/** bfloat16 by truncation: tests use values exactly representable in bf16. */
export function bf16Bytes(values: number[]): Uint8Array {
  const u32 = new Uint32Array(new Float32Array(values).buffer);
  return new Uint8Array(new Uint16Array([...u32].map((u) => u >>> 16)).buffer);
}

export function bf16ToF32(bits: number): number {
  return new Float32Array(new Uint32Array([bits << 16]).buffer)[0]!;
}
