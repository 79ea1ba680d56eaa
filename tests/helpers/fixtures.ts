// Locates the golden fixtures: ../shared/fixtures beside the checkout (the source of truth) when present,
// else the copy committed under tests/fixtures so a lone clone still runs the golden tests.

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export function fixtureDir(name: string): string {
  const candidates = [
    process.env.VLMSCOPE_FIXTURES ? join(process.env.VLMSCOPE_FIXTURES, name) : '',
    resolve(repo, '../shared/fixtures', name),
    resolve(repo, 'tests/fixtures', name),
  ].filter(Boolean);
  const found = candidates.find((d) => existsSync(join(d, 'golden.json')));
  if (!found) throw new Error(`fixture ${name} not found (looked in ${candidates.join(', ')})`);
  return found;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function golden(name: string): any {
  return JSON.parse(readFileSync(join(fixtureDir(name), 'golden.json'), 'utf8'));
}

export const REPO_ROOT = repo;
