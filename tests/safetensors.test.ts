import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blobSource, bytesSource, FileNotFoundError, openFileSource, type ByteSource } from '../src/io/bytesource.js';
import {
  dtypeBytes,
  MAX_HEADER_BYTES,
  readSafetensorsHeader,
  readTensorBytes,
  readTensorChunks,
  SafetensorsError,
} from '../src/io/safetensors.js';
import {
  bf16Bytes,
  bf16ToF32,
  encodeSafetensors,
  f16Bytes,
  f16ToF32,
  f32Bytes,
  type EncodeOptions,
  type TestTensor,
} from './helpers/safetensors-writer.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vlmscope-st-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let counter = 0;
/** Writes bytes to a fresh temp file and opens it (real file I/O path). */
async function fileOf(bytes: Uint8Array, base = 'model'): Promise<ByteSource> {
  const path = join(dir, `${base}-${counter++}.safetensors`);
  await writeFile(path, bytes);
  return openFileSource(path);
}

async function headerError(
  tensors: Record<string, TestTensor>,
  options?: EncodeOptions,
  cut?: number,
): Promise<{ message: string; file: string }> {
  let bytes = encodeSafetensors(tensors, undefined, options);
  if (cut !== undefined) bytes = bytes.subarray(0, cut);
  const src = await fileOf(bytes, 'bad');
  try {
    await readSafetensorsHeader(src);
  } catch (e) {
    expect(e).toBeInstanceOf(SafetensorsError);
    return { message: (e as Error).message, file: src.name };
  } finally {
    await src.close();
  }
  throw new Error('expected readSafetensorsHeader to throw');
}

const f16 = (n: number, name = 'w'): Record<string, TestTensor> => ({
  [name]: { dtype: 'F16', shape: [n], data: f16Bytes(Array.from({ length: n }, (_, i) => i)) },
});

describe('safetensors round trip', () => {
  it('reads F32, F16 and BF16 values and metadata', async () => {
    const a = [1.5, -2, 3.25, 0, 1e-3, -65504];
    const b = [0.5, -1, 2, 65504, 6.103515625e-5, -0.25];
    const c = [1, -2.5, 3.140625, 0, 256, -0.0078125];
    const bytes = encodeSafetensors(
      {
        'a.f32': { dtype: 'F32', shape: [2, 3], data: f32Bytes(a) },
        'b.f16': { dtype: 'F16', shape: [3, 2], data: f16Bytes(b) },
        'c.bf16': { dtype: 'BF16', shape: [6], data: bf16Bytes(c) },
        empty: { dtype: 'F32', shape: [0, 4], data: new Uint8Array(0) },
      },
      { format: 'pt', note: 'hello' },
    );
    const src = await fileOf(bytes);
    try {
      const { tensors, metadata } = await readSafetensorsHeader(src);
      expect(metadata).toEqual({ format: 'pt', note: 'hello' });
      expect([...tensors.keys()]).toEqual(['a.f32', 'b.f16', 'c.bf16', 'empty']);

      const ia = tensors.get('a.f32')!;
      expect(ia).toMatchObject({ name: 'a.f32', file: src.name, dtype: 'F32', shape: [2, 3] });
      expect(ia.end - ia.begin).toBe(24);
      const ra = await readTensorBytes(src, ia);
      expect([...new Float32Array(ra.buffer)]).toEqual(a.map(Math.fround));

      const rb = await readTensorBytes(src, tensors.get('b.f16')!);
      expect([...new Uint16Array(rb.buffer)].map(f16ToF32)).toEqual(b);

      const rc = await readTensorBytes(src, tensors.get('c.bf16')!);
      expect([...new Uint16Array(rc.buffer)].map(bf16ToF32)).toEqual(c);

      expect((await readTensorBytes(src, tensors.get('empty')!)).byteLength).toBe(0);
    } finally {
      await src.close();
    }
  });

  it('works the same from in-memory bytes and from a Blob/File', async () => {
    const bytes = encodeSafetensors({ x: { dtype: 'F32', shape: [3], data: f32Bytes([1, 2, 3]) } });
    for (const src of [bytesSource(bytes, 'mem.safetensors'), blobSource(new Blob([bytes]), 'blob.safetensors')]) {
      const { tensors } = await readSafetensorsHeader(src);
      const got = await readTensorBytes(src, tensors.get('x')!);
      expect([...new Float32Array(got.buffer)]).toEqual([1, 2, 3]);
      await src.close();
      await expect(src.read(0, 1)).rejects.toThrow(/after close/);
    }
  });

  it('reads only the header bytes when parsing the header', async () => {
    const bytes = encodeSafetensors({ big: { dtype: 'F32', shape: [4096], data: new Uint8Array(16384) } });
    const inner = bytesSource(bytes, 'count.safetensors');
    let readBytes = 0;
    const counting: ByteSource = {
      name: inner.name,
      size: inner.size,
      read: (o, l) => ((readBytes += l), inner.read(o, l)),
      close: () => inner.close(),
    };
    const { tensors } = await readSafetensorsHeader(counting);
    expect(readBytes).toBe(tensors.get('big')!.begin);
    expect(readBytes).toBeLessThan(200);
  });

  it('dtypeBytes', () => {
    expect(dtypeBytes('F32')).toBe(4);
    expect(dtypeBytes('F16')).toBe(2);
    expect(dtypeBytes('BF16')).toBe(2);
  });
});

describe('readTensorChunks', () => {
  it('yields 4-byte-aligned chunks that concatenate to the whole tensor', async () => {
    const values = Array.from({ length: 1001 }, (_, i) => (i % 97) - 48);
    const bytes = encodeSafetensors({
      pad: { dtype: 'F16', shape: [3], data: f16Bytes([1, 2, 3]) },
      t: { dtype: 'F16', shape: [1001], data: f16Bytes(values) },
    });
    const src = bytesSource(bytes, 'chunks.safetensors');
    const info = (await readSafetensorsHeader(src)).tensors.get('t')!;
    const whole = await readTensorBytes(src, info);
    for (const chunkBytes of [1, 6, 100, 2002, 1 << 20]) {
      const parts: Uint8Array[] = [];
      let expectOffset = 0;
      for await (const { offset, bytes: chunk } of readTensorChunks(src, info, chunkBytes)) {
        expect(offset).toBe(expectOffset);
        expect(offset % 4).toBe(0);
        expect(chunk.byteLength).toBeLessThanOrEqual(Math.max(4, chunkBytes));
        parts.push(chunk.slice()); // chunks share one scratch buffer
        expectOffset += chunk.byteLength;
      }
      const joined = new Uint8Array(expectOffset);
      let at = 0;
      for (const p of parts) (joined.set(p, at), (at += p.byteLength));
      expect(joined).toEqual(whole);
    }
    await expect(readTensorChunks(src, info, 0).next()).rejects.toThrow(/chunkBytes/);
  });
});

describe('byte sources', () => {
  it('openFileSource names a missing path', async () => {
    const path = join(dir, 'nope.safetensors');
    const err = await openFileSource(path).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FileNotFoundError);
    expect((err as Error).message).toContain(path);
  });

  it('reads past the end are rejected', async () => {
    const src = bytesSource(new Uint8Array(10), 'ten');
    await expect(src.read(8, 3)).rejects.toThrow(/past the end/);
    await expect(src.read(-1, 1)).rejects.toThrow(/invalid read/);
    expect(await src.read(10, 0)).toEqual(new Uint8Array(0));
  });
});

describe('safetensors validation', () => {
  it('file shorter than 8 bytes', async () => {
    const src = await fileOf(new Uint8Array([1, 2, 3]), 'short');
    await expect(readSafetensorsHeader(src)).rejects.toThrow(new RegExp(`${escape(src.name)}.*too short`));
    await src.close();
  });

  it('header length past the end of the file', async () => {
    const { message, file } = await headerError(f16(4), { headerLength: 5000 });
    expect(message).toContain(file);
    expect(message).toMatch(/header length 5000 runs past the end of the file/);
  });

  it('absurd header length', async () => {
    const { message, file } = await headerError(f16(4), { headerLength: 2 ** 40 });
    expect(message).toContain(file);
    expect(message).toMatch(/absurdly large/);
    const { message: m2 } = await headerError(f16(4), { headerLength: MAX_HEADER_BYTES + 1 });
    expect(m2).toMatch(/absurdly large/);
  });

  it('bad JSON, non-object JSON, non-UTF-8 header', async () => {
    const bad = await headerError({}, { rawHeader: '{"w": {"dtype": "F16",' });
    expect(bad.message).toContain(bad.file);
    expect(bad.message).toMatch(/not valid JSON/);
    const arr = await headerError({}, { rawHeader: '[1, 2]' });
    expect(arr.message).toMatch(/not an object/);

    const bytes = encodeSafetensors({}, undefined, { rawHeader: '{"a":1}' });
    bytes[9] = 0xff; // invalid UTF-8 byte inside the header
    const src = bytesSource(bytes, 'utf.safetensors');
    await expect(readSafetensorsHeader(src)).rejects.toThrow(/utf\.safetensors: header is not valid UTF-8/);
  });

  it('entries missing fields or with wrong types', async () => {
    const cases: [object, RegExp][] = [
      [{ w: { shape: [1], data_offsets: [0, 2] } }, /no dtype/],
      [{ w: { dtype: 'F16', data_offsets: [0, 2] } }, /no shape/],
      [{ w: { dtype: 'F16', shape: [1] } }, /no data_offsets/],
      [{ w: { dtype: 7, shape: [1], data_offsets: [0, 2] } }, /dtype must be a string/],
      [{ w: 'x' }, /not an object/],
      [{ w: { dtype: 'F16', shape: [1.5], data_offsets: [0, 2] } }, /non-negative integers/],
      [{ w: { dtype: 'F16', shape: [-1], data_offsets: [0, 2] } }, /non-negative integers/],
      [{ w: { dtype: 'F16', shape: 3, data_offsets: [0, 2] } }, /non-negative integers/],
      [{ w: { dtype: 'F16', shape: [1], data_offsets: [0] } }, /data_offsets must be/],
      [{ w: { dtype: 'F16', shape: [1], data_offsets: ['0', 2] } }, /data_offsets must be/],
      [{ w: { dtype: 'F16', shape: [1], data_offsets: [4, 2] } }, /begin after end/],
      [{ __metadata__: { a: 1 } }, /__metadata__/],
      [{ __metadata__: ['x'] }, /__metadata__/],
    ];
    for (const [raw, re] of cases) {
      const { message, file } = await headerError({}, { rawHeader: raw });
      expect(message).toContain(file);
      expect(message).toMatch(re);
      if (!('__metadata__' in raw)) expect(message).toContain('tensor w');
    }
  });

  it('unknown dtype', async () => {
    const { message, file } = await headerError({ 'layer.q': { dtype: 'F17', shape: [1], data: new Uint8Array(2) } });
    expect(message).toContain(file);
    expect(message).toContain('layer.q');
    expect(message).toMatch(/unknown dtype "F17"/);
  });

  it('unsupported dtype (rejected, or skipped when allowed)', async () => {
    const tensors: Record<string, TestTensor> = {
      'emb.position_ids': { dtype: 'I64', shape: [2], data: new Uint8Array(16) },
      w: { dtype: 'F32', shape: [1], data: f32Bytes([7]) },
    };
    const { message, file } = await headerError(tensors);
    expect(message).toBe(
      `unsupported dtype I64 for tensor emb.position_ids in ${file} (vlmscope reads F32, F16, BF16)`,
    );
    const src = bytesSource(encodeSafetensors(tensors), 'skip.safetensors');
    const h = await readSafetensorsHeader(src, { allowUnsupported: true });
    expect([...h.tensors.keys()]).toEqual(['w']);
    expect(h.skipped.get('emb.position_ids')).toMatchObject({ dtype: 'I64', shape: [2] });
    // Skipped tensors are still size-checked.
    const bad = encodeSafetensors({ p: { dtype: 'I64', shape: [2], data: new Uint8Array(8) } });
    await expect(readSafetensorsHeader(bytesSource(bad, 'b'), { allowUnsupported: true })).rejects.toThrow(
      /needs 16 bytes but data_offsets span 8/,
    );
  });

  it('shape/bytes mismatch', async () => {
    const { message, file } = await headerError({
      'mlp.up': { dtype: 'F16', shape: [2, 3], data: new Uint8Array(10) },
    });
    expect(message).toBe(`tensor mlp.up in ${file}: shape [2, 3] of F16 needs 12 bytes but data_offsets span 10`);
  });

  it('range past the end (truncated file)', async () => {
    const tensors = { a: f16(8, 'a').a!, 'b.last': f16(8, 'b.last')['b.last']! };
    const full = encodeSafetensors(tensors);
    const { message, file } = await headerError(tensors, undefined, full.byteLength - 3);
    expect(message).toContain(file);
    expect(message).toContain('b.last');
    expect(message).toMatch(/past the end of the file/);
    expect(message).toMatch(/truncated/);
  });

  it('offsets pointing past the data section', async () => {
    const { message, file } = await headerError({
      w: { dtype: 'F32', shape: [1], data: f32Bytes([1]), dataOffsets: [100, 104] },
    });
    expect(message).toContain(file);
    expect(message).toContain('tensor w');
    expect(message).toMatch(/past the end of the file/);
  });

  it('overlapping ranges', async () => {
    const { message, file } = await headerError({
      first: { dtype: 'F32', shape: [2], data: f32Bytes([1, 2]) },
      second: { dtype: 'F32', shape: [2], data: f32Bytes([3, 4]), dataOffsets: [4, 12] },
    });
    expect(message).toContain(file);
    expect(message).toContain('first');
    expect(message).toContain('second');
    expect(message).toMatch(/overlap/);
  });

  it('empty tensors never count as overlapping', async () => {
    const bytes = encodeSafetensors({
      a: { dtype: 'F32', shape: [2], data: f32Bytes([1, 2]) },
      e: { dtype: 'F32', shape: [0], data: new Uint8Array(0), dataOffsets: [4, 4] },
    });
    const h = await readSafetensorsHeader(bytesSource(bytes, 'e.safetensors'));
    expect(h.tensors.size).toBe(2);
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
