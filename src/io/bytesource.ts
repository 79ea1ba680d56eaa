// Random-access byte sources: the one thing the safetensors reader needs from a file. Weights are read
// by byte range (header first, then one tensor at a time), so a multi-gigabyte checkpoint never has
// to sit in memory, and the same reader works on a Node file, a browser File/Blob, an HTTP URL
// (see checkpoint.ts) or bytes already in memory.

export interface ByteSource {
  /** Shown in every error message: a path, URL or file name. */
  readonly name: string;
  /** Total size in bytes. */
  readonly size: number;
  /**
   * Exactly `length` bytes starting at `offset`, as a fresh Uint8Array the caller owns (byteOffset 0,
   * so `new Float32Array(bytes.buffer)` is safe). Rejects a range outside [0, size].
   */
  /**
   * Read `length` bytes at `offset`. With `into` (at least `length` bytes) a source may fill it and return a
   * view of it instead of allocating: streaming loops reuse one buffer and leave no garbage per chunk.
   */
  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array>;
  /** Releases the underlying handle; idempotent. Reads after close reject. */
  close(): Promise<void>;
}

/** Thrown when a file (or folder, or URL) does not exist, so callers can tell "absent" from "broken". */
export class FileNotFoundError extends Error {
  override name = 'FileNotFoundError';
  constructor(
    readonly path: string,
    message = `no such file: ${path}`,
  ) {
    super(message);
  }
}

/** Validates a read request against the source size; shared by every source so they fail alike. */
export function checkRange(name: string, size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new RangeError(`${name}: invalid read of ${length} bytes at offset ${offset}`);
  }
  if (offset + length > size) {
    throw new RangeError(
      `${name}: read of ${length} bytes at offset ${offset} goes past the end of the file (${size} bytes)`,
    );
  }
}

function closedError(name: string): Error {
  return new Error(`${name}: read after close`);
}

/**
 * A Node file opened for positional reads. node:fs/promises is imported dynamically so that bundling
 * this module for the browser does not pull in (or fail on) Node built-ins.
 */
export async function openFileSource(path: string): Promise<ByteSource> {
  const fs = await import('node:fs/promises');
  let handle: import('node:fs/promises').FileHandle;
  try {
    handle = await fs.open(path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new FileNotFoundError(path);
    throw new Error(`cannot open ${path}: ${(e as Error).message}`);
  }
  let size: number;
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new Error(`${path} is not a regular file`);
    size = st.size;
  } catch (e) {
    await handle.close();
    throw e;
  }
  let closed = false;
  return {
    name: path,
    size,
    async read(offset, length, into) {
      if (closed) throw closedError(path);
      checkRange(path, size, offset, length);
      const out = into && into.byteLength >= length ? into.subarray(0, length) : new Uint8Array(length);
      // FileHandle.read may return fewer bytes than asked (large reads, some file systems): loop.
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(out, done, length - done, offset + done);
        if (bytesRead === 0) {
          throw new Error(`${path}: file ended at byte ${offset + done} while reading (was it truncated after opening?)`);
        }
        done += bytesRead;
      }
      return out;
    },
    async close() {
      if (closed) return;
      closed = true;
      await handle.close();
    },
  };
}

/** A browser File or Blob: each read slices the blob, so only the requested range is loaded. */
export function blobSource(blob: Blob, name: string): ByteSource {
  let closed = false;
  return {
    name,
    size: blob.size,
    async read(offset, length) {
      if (closed) throw closedError(name);
      checkRange(name, blob.size, offset, length);
      const buf = await blob.slice(offset, offset + length).arrayBuffer();
      if (buf.byteLength !== length) {
        throw new Error(`${name}: read ${buf.byteLength} bytes at offset ${offset}, expected ${length}`);
      }
      return new Uint8Array(buf);
    },
    async close() {
      closed = true;
    },
  };
}

/** Bytes already in memory (tests, fetched-whole files). Reads copy, to keep the ownership contract. */
export function bytesSource(bytes: Uint8Array, name: string): ByteSource {
  let closed = false;
  return {
    name,
    size: bytes.byteLength,
    async read(offset, length) {
      if (closed) throw closedError(name);
      checkRange(name, bytes.byteLength, offset, length);
      return bytes.slice(offset, offset + length);
    },
    async close() {
      closed = true;
    },
  };
}
