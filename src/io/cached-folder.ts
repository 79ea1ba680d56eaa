// A model folder served over HTTP whose files are kept in the browser's Cache API: the first visit downloads
// each file once (with byte progress), later visits read it from the cache without touching the network.
// Weight reads then slice the cached Blob, which the browser keeps on disk, so a large checkpoint is not held
// in memory. Where the Cache API is missing (an insecure origin, Node) it falls back to plain range reads.

import { blobSource, FileNotFoundError, type ByteSource } from './bytesource.js';
import { urlFolder, type FolderSource } from './checkpoint.js';

export interface CachedFolderProgress {
  file: string;
  bytesDone: number;
  /** Null when the server does not say (no Content-Length). */
  bytesTotal: number | null;
  fromCache: boolean;
}

export interface CachedFolderOptions {
  /** Cache API bucket (default "vlmscope-weights"). */
  cacheName?: string;
  onProgress?: (p: CachedFolderProgress) => void;
  /** Fetch implementation (tests). */
  fetch?: typeof fetch;
}

/** Files this folder took from the cache rather than the network (for the page's status line). */
export interface CachedFolder extends FolderSource {
  readonly cachedFiles: Set<string>;
  readonly downloadedFiles: Set<string>;
}

const VERSION_HEADERS = ['ETag', 'Last-Modified'];

export function cachedUrlFolder(baseUrl: string, opts: CachedFolderOptions = {}): CachedFolder {
  const base = baseUrl.replace(/\/+$/, '');
  const urlOf = (file: string) => `${base}/${file.split('/').map(encodeURIComponent).join('/')}`;
  const doFetch = opts.fetch ?? ((...a: Parameters<typeof fetch>) => fetch(...a));
  const cachedFiles = new Set<string>();
  const downloadedFiles = new Set<string>();
  const cacheStorage = typeof caches !== 'undefined' ? caches : null;
  if (!cacheStorage) return Object.assign(urlFolder(baseUrl), { cachedFiles, downloadedFiles });
  const cache = cacheStorage.open(opts.cacheName ?? 'vlmscope-weights');

  /** The file's response from the cache, or downloaded (and then cached); null on 404. */
  async function get(file: string): Promise<Blob | null> {
    const url = urlOf(file);
    const c = await cache;
    const hit = await c.match(url);
    if (hit && (await stillCurrent(url, hit))) {
      cachedFiles.add(file);
      const blob = await hit.blob();
      opts.onProgress?.({ file, bytesDone: blob.size, bytesTotal: blob.size, fromCache: true });
      return blob;
    }
    const res = await doFetch(url);
    if (res.status === 404 || res.status === 410) {
      await res.body?.cancel();
      return null;
    }
    if (!res.ok || !res.body) {
      await res.body?.cancel();
      throw new Error(`GET ${url} failed: HTTP ${res.status} ${res.statusText}`);
    }
    const length = res.headers.get('Content-Length');
    const total = length !== null && /^\d+$/.test(length) ? Number(length) : null;
    const parts: Uint8Array[] = [];
    let done = 0;
    const reader = res.body.getReader();
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) break;
      parts.push(value);
      done += value.byteLength;
      opts.onProgress?.({ file, bytesDone: done, bytesTotal: total, fromCache: false });
    }
    if (total !== null && done !== total) throw new Error(`GET ${url}: got ${done} bytes, the server announced ${total}`);
    const blob = new Blob(parts as BlobPart[]);
    // Only complete downloads are cached, so an interrupted one is never taken for the file.
    const headers: Record<string, string> = { 'Content-Type': res.headers.get('Content-Type') ?? 'application/octet-stream', 'Content-Length': String(blob.size) };
    for (const h of VERSION_HEADERS) {
      const v = res.headers.get(h);
      if (v !== null) headers[h] = v;
    }
    await c.put(url, new Response(blob, { headers }));
    downloadedFiles.add(file);
    return blob;
  }

  /**
   * Whether a cached copy is still the server's file: a HEAD request compares ETag / Last-Modified / size, so a
   * retrained model at the same URL is downloaded again. Offline (the request fails) the cached copy is used.
   */
  async function stillCurrent(url: string, hit: Response): Promise<boolean> {
    let head: Response;
    try {
      head = await doFetch(url, { method: 'HEAD', cache: 'no-store' });
    } catch {
      return true;
    }
    if (!head.ok) return head.status !== 404 && head.status !== 410;
    const size = head.headers.get('Content-Length');
    if (size !== null && size !== hit.headers.get('Content-Length')) return false;
    for (const h of VERSION_HEADERS) {
      const now = head.headers.get(h);
      if (now !== null && now !== hit.headers.get(h)) return false;
    }
    return true;
  }

  return {
    name: base,
    cachedFiles,
    downloadedFiles,
    async readText(file) {
      const blob = await get(file);
      return blob ? blob.text() : null;
    },
    async open(file): Promise<ByteSource> {
      const blob = await get(file);
      if (!blob) throw new FileNotFoundError(urlOf(file));
      return blobSource(blob, urlOf(file));
    },
  };
}

/** Removes every cached file of the folder at `baseUrl` (or the whole bucket without it). */
export async function clearWeightCache(baseUrl?: string, cacheName = 'vlmscope-weights'): Promise<number> {
  if (typeof caches === 'undefined') return 0;
  if (!baseUrl) return (await caches.delete(cacheName)) ? 1 : 0;
  const c = await caches.open(cacheName);
  const prefix = baseUrl.replace(/\/+$/, '') + '/';
  let n = 0;
  for (const req of await c.keys()) if (req.url.startsWith(prefix) && (await c.delete(req))) n++;
  return n;
}
