// vitest globalSetup: build the CLI bundle once so process-level tests run what users run.
import { execFileSync } from 'node:child_process';
import { REPO_ROOT } from './fixtures.js';

export default function setup(): void {
  execFileSync(process.execPath, ['scripts/build.mjs'], { cwd: REPO_ROOT, stdio: 'inherit' });
}
