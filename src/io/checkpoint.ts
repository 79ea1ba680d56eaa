// Hugging Face checkpoint folders: config.json plus either model.safetensors or a sharded set
// described by model.safetensors.index.json ({"weight_map": {tensor: shardFile}}), plus side files
// such as preprocessor_config.json.
//
// The folder is abstracted (FolderSource) so the same loader runs on a Node directory, an HTTP(S)
// base URL (HTTP Range requests) or the files a browser user picked. Opening a checkpoint reads and
// validates only the JSON files and each shard's safetensors header; tensor bytes are read on
// demand, one tensor or chunk at a time, so memory never holds more than that.

import { blobSource, checkRange, FileNotFoundError, openFileSource, type ByteSource } from './bytesource.js';
import {
  readSafetensorsHeader,
  readTensorBytes,
  readTensorChunks,
  type HeaderOptions,
  type SkippedTensor,
  type TensorInfo,
} from './safetensors.js';

export interface FolderSource {
  /** Shown in error messages: a directory path, URL, or description of the picked files. */
  readonly name: string;
  /** The file's text, or null if the folder has no such file. */
  readText(file: string): Promise<string | null>;
  /** Opens a file for range reads; rejects with FileNotFoundError if it is absent. */
  open(file: string): Promise<ByteSource>;
  /** File names in the folder, when the source can enumerate them (used only for error messages). */
  list?(): Promise<string[]>;
}

export class CheckpointError extends Error {
  override name = 'CheckpointError';
}

const INDEX_FILE = 'model.safetensors.index.json';
const SINGLE_FILE = 'model.safetensors';

// Custom FolderSources may throw plain Node errors rather than FileNotFoundError.
function isNotFound(e: unknown): boolean {
  return e instanceof FileNotFoundError || (e as NodeJS.ErrnoException | null)?.code === 'ENOENT';
}

// ---------------------------------------------------------------------------------------------
// Folder sources

/** A local directory. Node modules are imported lazily so this file still bundles for browsers. */
export function nodeFolder(dir: string): FolderSource {
  const mods = async () => ({ fs: await import('node:fs/promises'), path: await import('node:path') });
  return {
    name: dir,
    async readText(file) {
      const { fs, path } = await mods();
      try {
        return await fs.readFile(path.join(dir, file), 'utf8');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw e;
      }
    },
    async open(file) {
      const { path } = await mods();
      return openFileSource(path.join(dir, file));
    },
    async list() {
      const { fs } = await mods();
      try {
        return (await fs.readdir(dir)).sort();
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
          throw new FileNotFoundError(dir, `no such directory: ${dir}`);
        }
        throw e;
      }
    },
  };
}

/**
 * A folder served over HTTP(S), e.g. https://huggingface.co/ORG/REPO/resolve/main. Weights are read
 * with Range requests, so the server must honour them (and, cross-origin, expose Content-Range).
 */
export function urlFolder(baseUrl: string): FolderSource {
  const base = baseUrl.replace(/\/+$/, '');
  const urlOf = (file: string) => `${base}/${file.split('/').map(encodeURIComponent).join('/')}`;
  return {
    name: base,
    async readText(file) {
      const url = urlOf(file);
      const res = await fetch(url);
      if (res.status === 404 || res.status === 410) {
        await res.body?.cancel();
        return null;
      }
      if (!res.ok) {
        await res.body?.cancel();
        throw new Error(`GET ${url} failed: HTTP ${res.status} ${res.statusText}`);
      }
      return res.text();
    },
    async open(file) {
      const url = urlOf(file);
      return openUrlSource(url);
    },
  };
}

async function openUrlSource(url: string): Promise<ByteSource> {
  // A one-byte Range request tells both the size (Content-Range: bytes 0-0/SIZE) and whether the
  // server supports ranges at all; a HEAD's Content-Length would not tell the latter.
  const probe = await fetch(url, { headers: { Range: 'bytes=0-0' } });
  await probe.body?.cancel();
  if (probe.status === 404 || probe.status === 410) throw new FileNotFoundError(url);
  let size: number;
  if (probe.status === 206 || probe.status === 416) {
    // 416 is what a server answers for an empty file ("bytes */0").
    const cr = probe.headers.get('Content-Range');
    const m = cr ? /\/(\d+)\s*$/.exec(cr) : null;
    if (!m) {
      throw new Error(
        `${url}: the server's range response has no usable Content-Range header` +
          ` (cross-origin servers must send Access-Control-Expose-Headers: Content-Range)`,
      );
    }
    size = Number(m[1]);
  } else if (probe.ok) {
    // 200: the server ignored Range; every tensor read would download the whole file.
    throw new Error(`${url}: the server does not support HTTP Range requests, which weight loading needs`);
  } else {
    throw new Error(`GET ${url} failed: HTTP ${probe.status} ${probe.statusText}`);
  }
  let closed = false;
  return {
    name: url,
    size,
    async read(offset, length) {
      if (closed) throw new Error(`${url}: read after close`);
      checkRange(url, size, offset, length);
      if (length === 0) return new Uint8Array(0);
      const res = await fetch(url, { headers: { Range: `bytes=${offset}-${offset + length - 1}` } });
      // A 200 is only acceptable when we asked for the whole file anyway.
      const whole = res.status === 200 && offset === 0 && length === size;
      if (res.status !== 206 && !whole) {
        await res.body?.cancel();
        throw new Error(`${url}: range read of bytes ${offset}-${offset + length - 1} got HTTP ${res.status}`);
      }
      const bytes = new Uint8Array(await res.arrayBuffer());
      if (bytes.byteLength !== length) {
        throw new Error(`${url}: range read at ${offset} returned ${bytes.byteLength} bytes, expected ${length}`);
      }
      return bytes;
    },
    async close() {
      closed = true;
    },
  };
}

/**
 * Files picked in a browser (<input type=file multiple> or webkitdirectory). Files are matched by
 * basename, since a picked directory gives paths like "tiny-llava/config.json".
 */
export function fileListFolder(files: File[]): FolderSource {
  const byName = new Map<string, File>();
  const ambiguous = new Set<string>();
  for (const f of files) {
    const base = basename(f.name);
    if (byName.has(base)) ambiguous.add(base);
    else byName.set(base, f);
  }
  const rel = files.find((f) => f.webkitRelativePath)?.webkitRelativePath;
  const name = rel && rel.includes('/') ? rel.slice(0, rel.indexOf('/')) : `${files.length} selected files`;
  const lookup = (file: string): File | null => {
    const base = basename(file);
    if (ambiguous.has(base)) {
      throw new Error(`${name}: more than one selected file is named ${base}; pick a single model folder`);
    }
    return byName.get(base) ?? null;
  };
  return {
    name,
    async readText(file) {
      const f = lookup(file);
      return f ? f.text() : null;
    },
    async open(file) {
      const f = lookup(file);
      if (!f) throw new FileNotFoundError(file, `no file named ${basename(file)} among ${name}`);
      return blobSource(f, f.name);
    },
    async list() {
      return [...byName.keys()].sort();
    },
  };
}

function basename(p: string): string {
  const i = Math.max(p.lastIndexOf('/'), p.lastIndexOf('\\'));
  return i >= 0 ? p.slice(i + 1) : p;
}

// ---------------------------------------------------------------------------------------------
// Checkpoint

export interface CheckpointOptions {
  /** Passed to readSafetensorsHeader: skip (rather than reject) tensors of unsupported dtypes. */
  allowUnsupported?: boolean;
}

export class Checkpoint {
  /** Shard file names in folder order (one entry for a single-file checkpoint). */
  readonly files: string[];
  /** Tensors of unsupported dtypes, only with CheckpointOptions.allowUnsupported. */
  readonly skipped: Map<string, SkippedTensor>;
  private closed = false;

  private constructor(
    readonly folder: FolderSource,
    readonly config: Record<string, unknown>,
    /** Union over all shards. */
    readonly tensors: Map<string, TensorInfo>,
    skipped: Map<string, SkippedTensor>,
    files: string[],
    // Keyed by ByteSource name (= TensorInfo.file); all stay open until close().
    private readonly sources: Map<string, ByteSource>,
  ) {
    this.skipped = skipped;
    this.files = files;
  }

  static async open(folder: FolderSource, options: CheckpointOptions = {}): Promise<Checkpoint> {
    const configText = await folder.readText('config.json');
    if (configText === null) {
      throw new CheckpointError(`no config.json in ${folder.name}${await describeContents(folder)}`);
    }
    const config = parseJsonObject(configText, 'config.json', folder.name);
    const headerOpts: HeaderOptions = { allowUnsupported: options.allowUnsupported };

    const sources = new Map<string, ByteSource>();
    try {
      const indexText = await folder.readText(INDEX_FILE);
      let files: string[];
      let tensors: Map<string, TensorInfo>;
      const skipped = new Map<string, SkippedTensor>();
      if (indexText !== null) {
        const weightMap = parseIndex(indexText, folder.name);
        files = [...new Set(weightMap.values())];
        tensors = new Map();
        // Which shard each tensor was actually found in, to reject a tensor stored twice.
        const foundIn = new Map<string, string>();
        for (const shard of files) {
          const src = await openShard(folder, shard, sources);
          const header = await readSafetensorsHeader(src, headerOpts);
          for (const name of [...header.tensors.keys(), ...header.skipped.keys()]) {
            const prev = foundIn.get(name);
            if (prev !== undefined) {
              throw new CheckpointError(`tensor ${name} appears in two shards of ${folder.name}: ${prev} and ${shard}`);
            }
            foundIn.set(name, shard);
          }
          for (const [name, info] of header.tensors) tensors.set(name, info);
          for (const [name, s] of header.skipped) skipped.set(name, s);
        }
        for (const [name, shard] of weightMap) {
          const actual = foundIn.get(name);
          if (actual === shard) continue;
          throw new CheckpointError(
            `${INDEX_FILE} in ${folder.name} maps tensor ${name} to ${shard}, but ${shard} has no tensor ${name}` +
              (actual !== undefined ? ` (it is in ${actual})` : ''),
          );
        }
        // Tensors present in a shard but absent from the index are kept: the bytes are valid and
        // the index is only a lookup aid.
      } else {
        let src: ByteSource;
        try {
          src = await folder.open(SINGLE_FILE);
        } catch (e) {
          if (!isNotFound(e)) throw e;
          throw new CheckpointError(
            `no ${SINGLE_FILE} or ${INDEX_FILE} in ${folder.name}${await describeContents(folder)}`,
          );
        }
        addSource(sources, src);
        const header = await readSafetensorsHeader(src, headerOpts);
        files = [SINGLE_FILE];
        tensors = header.tensors;
        for (const [name, s] of header.skipped) skipped.set(name, s);
      }
      return new Checkpoint(folder, config, tensors, skipped, files, sources);
    } catch (e) {
      await Promise.allSettled([...sources.values()].map((s) => s.close()));
      throw e;
    }
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (info) return info;
    const skipped = this.skipped.get(name);
    if (skipped) {
      throw new CheckpointError(
        `tensor ${name} in ${skipped.file} has unsupported dtype ${skipped.dtype} (vlmscope reads F32, F16, BF16)`,
      );
    }
    throw new CheckpointError(`missing tensor ${name} in ${this.folder.name} (looked in ${this.files.join(', ')})`);
  }

  /** Checks a model's whole weight list at once, so one error lists every missing name. */
  require(names: string[]): void {
    const missing = names.filter((n) => !this.tensors.has(n));
    if (missing.length === 0) return;
    const SHOW = 10;
    const shown = missing.slice(0, SHOW).join(', ');
    const more = missing.length > SHOW ? ` and ${missing.length - SHOW} more` : '';
    throw new CheckpointError(
      `${missing.length} missing tensor${missing.length === 1 ? '' : 's'} in ${this.folder.name} ` +
        `(looked in ${this.files.join(', ')}): ${shown}${more}`,
    );
  }

  /** Raw little-endian bytes of one tensor, read from exactly its byte range. */
  async read(name: string): Promise<Uint8Array> {
    const info = this.info(name);
    return readTensorBytes(this.sourceFor(info), info);
  }

  /** The same bytes as read(), in chunks (see readTensorChunks for alignment). */
  async *readChunks(name: string, chunkBytes: number, scratch?: Uint8Array): AsyncGenerator<{ offset: number; bytes: Uint8Array }> {
    const info = this.info(name);
    yield* readTensorChunks(this.sourceFor(info), info, chunkBytes, scratch);
  }

  /** A side JSON file (preprocessor_config.json, generation_config.json, ...), or null if absent. */
  async readJson(file: string): Promise<Record<string, unknown> | null> {
    const text = await this.folder.readText(file);
    return text === null ? null : parseJsonObject(text, file, this.folder.name);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.sources.values()].map((s) => s.close()));
  }

  private sourceFor(info: TensorInfo): ByteSource {
    if (this.closed) throw new CheckpointError(`checkpoint ${this.folder.name} is closed`);
    const src = this.sources.get(info.file);
    if (!src) throw new CheckpointError(`internal: no open file ${info.file} for tensor ${info.name}`);
    return src;
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

function addSource(sources: Map<string, ByteSource>, src: ByteSource): void {
  // TensorInfo.file is the source name, so names must be unique for reads to find their shard.
  if (sources.has(src.name)) {
    throw new CheckpointError(`two shards open under the same name ${src.name}`);
  }
  sources.set(src.name, src);
}

async function openShard(folder: FolderSource, shard: string, sources: Map<string, ByteSource>): Promise<ByteSource> {
  let src: ByteSource;
  try {
    src = await folder.open(shard);
  } catch (e) {
    if (!isNotFound(e)) throw e;
    throw new CheckpointError(`shard ${shard} listed in ${INDEX_FILE} is missing from ${folder.name}`);
  }
  addSource(sources, src);
  return src;
}

function parseJsonObject(text: string, file: string, folderName: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`${file} in ${folderName} is not valid JSON: ${(e as Error).message}`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new CheckpointError(`${file} in ${folderName} is not a JSON object`);
  }
  return v as Record<string, unknown>;
}

/** Validates the shard index: weight_map must map tensor names to safe relative shard file names. */
function parseIndex(text: string, folderName: string): Map<string, string> {
  const index = parseJsonObject(text, INDEX_FILE, folderName);
  const wm = index.weight_map;
  if (wm === null || typeof wm !== 'object' || Array.isArray(wm)) {
    throw new CheckpointError(`${INDEX_FILE} in ${folderName} has no weight_map object`);
  }
  const out = new Map<string, string>();
  for (const [name, shard] of Object.entries(wm as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard === '') {
      throw new CheckpointError(
        `${INDEX_FILE} in ${folderName}: weight_map entry for ${name} is not a file name (${JSON.stringify(shard)})`,
      );
    }
    // The index is data from the internet: do not let it point outside the folder.
    if (shard.startsWith('/') || /^[A-Za-z]:/.test(shard) || shard.split(/[\\/]/).includes('..')) {
      throw new CheckpointError(`${INDEX_FILE} in ${folderName}: shard path ${shard} for ${name} leaves the folder`);
    }
    out.set(name, shard);
  }
  if (out.size === 0) throw new CheckpointError(`${INDEX_FILE} in ${folderName} has an empty weight_map`);
  return out;
}

/** " (it has: a, b, c)" for error messages, when the folder can be listed. */
async function describeContents(folder: FolderSource): Promise<string> {
  if (!folder.list) return '';
  try {
    const names = await folder.list();
    if (names.length === 0) return ' (the folder is empty)';
    const SHOW = 20;
    const more = names.length > SHOW ? `, and ${names.length - SHOW} more` : '';
    return ` (it has: ${names.slice(0, SHOW).join(', ')}${more})`;
  } catch (e) {
    return ` (${(e as Error).message})`;
  }
}
