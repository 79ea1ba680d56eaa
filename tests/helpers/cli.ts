// Running the CLI as a process, as users run it (bin/vlmscope.js on the built dist/cli.js), for the tests/cli-*.test.ts
// files: exit code, stdout and stderr; and JSON inputs written into a test's work folder.

import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './fixtures.js';

export const VLMSCOPE_BIN = join(REPO_ROOT, 'bin/vlmscope.js');

export interface CliResult {
  /** Exit code (null when the process was killed, e.g. by the timeout). */
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `vlmscope ARGS` as a child process of this Node, killed after timeoutMs. */
export function vlmscope(args: string[], timeoutMs = 120_000): CliResult {
  const r = spawnSync(process.execPath, [VLMSCOPE_BIN, ...args], { encoding: 'utf8', timeout: timeoutMs });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A writer of JSON files into `dir`: writeJson(name, value) returns the file's path. */
export function jsonWriter(dir: string): (name: string, v: unknown) => string {
  return (name, v) => {
    const p = join(dir, name);
    writeFileSync(p, JSON.stringify(v));
    return p;
  };
}
