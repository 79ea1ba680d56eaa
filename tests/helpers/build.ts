// vitest globalSetup: build the CLI bundle once so process-level tests run what users run
// (VLMSCOPE_SKIP_BUILD=1 skips it when dist/ is known to be fresh).
import { execFileSync } from 'node:child_process';
import { REPO_ROOT } from './fixtures.js';

export default function setup(): void {
  if (process.env.VLMSCOPE_SKIP_BUILD === '1') return;
  execFileSync(process.execPath, ['scripts/build.mjs'], { cwd: REPO_ROOT, stdio: 'inherit' });
}
