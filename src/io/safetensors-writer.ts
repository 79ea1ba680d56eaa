// Writes .safetensors files: captures too large for JSON, and generated checkpoints. The header lists tensors
// in the order given; data follows 8-byte aligned as the format recommends.

export type WriteDType = 'F32' | 'F16' | 'BF16';

export interface TensorEntry {
  name: string;
  dtype: WriteDType;
  shape: number[];
  /** Little-endian bytes in `dtype`. */
  bytes: Uint8Array;
}

export interface F32Entry {
  name: string;
  shape: number[];
  data: Float32Array;
}

const BYTES: Record<WriteDType, number> = { F32: 4, F16: 2, BF16: 2 };

export function encodeSafetensors(entries: TensorEntry[], metadata: Record<string, string> = {}): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const e of entries) {
    const n = e.shape.reduce((a, b) => a * b, 1);
    if (n * BYTES[e.dtype] !== e.bytes.byteLength) {
      throw new Error(`tensor ${e.name}: shape [${e.shape}] of ${e.dtype} needs ${n * BYTES[e.dtype]} bytes, got ${e.bytes.byteLength}`);
    }
    if (e.name in header) throw new Error(`tensor ${e.name} given twice`);
    header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + e.bytes.byteLength] };
    offset += e.bytes.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + json.length) % 8)) % 8); // pad so the data starts 8-byte aligned
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const e of entries) {
    out.set(e.bytes, at);
    at += e.bytes.byteLength;
  }
  return out;
}

export function encodeSafetensorsF32(entries: F32Entry[], metadata: Record<string, string> = {}): Uint8Array {
  return encodeSafetensors(
    entries.map((e) => ({ name: e.name, dtype: 'F32', shape: e.shape, bytes: new Uint8Array(e.data.buffer, e.data.byteOffset, e.data.byteLength) })),
    metadata,
  );
}
