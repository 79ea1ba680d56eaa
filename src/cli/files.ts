// File helpers for the CLI: JSON inputs with errors naming the file, and atomic outputs (a temp file renamed
// into place only after everything succeeded, so a failed run leaves no partial output).

import { readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { UsageError } from './errors.js';

export async function readJsonFile(path: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read ${what} ${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${what} ${path} is not valid JSON: ${(e as Error).message}`);
  }
}

export async function readIdsFile(path: string): Promise<number[]> {
  const v = await readJsonFile(path, 'token ids file');
  if (!Array.isArray(v) || v.length === 0) throw new UsageError(`token ids file ${path} must hold a non-empty JSON array of integers`);
  v.forEach((x, i) => {
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 0) {
      throw new UsageError(`token ids file ${path}: element ${i} is ${JSON.stringify(x)}, expected a non-negative integer`);
    }
  });
  return v as number[];
}

export async function writeAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => {});
    throw new Error(`cannot write ${path}: ${(e as Error).message}`);
  }
}

/**
 * --out must be a folder or not exist yet (the first existing folder up its path is checked); commands create it only
 * when their results are ready.
 */
export async function checkOutDir(out: string): Promise<void> {
  let dir = resolve(out);
  for (;;) {
    let isDir: boolean;
    try {
      isDir = (await stat(dir)).isDirectory();
    } catch {
      const up = dirname(dir);
      if (up === dir) return;
      dir = up;
      continue;
    }
    if (!isDir) throw new UsageError(`--out ${out}: ${dir} is a file, not a folder`);
    return;
  }
}
