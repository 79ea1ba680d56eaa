// The package as a new user gets it: `npm pack` (which runs `prepare`: the bundles and the type declarations), the
// tarball's contents, an install into a fresh project that depends on vlmscope only, the README's library example
// and examples/*.ts type-checked there with `tsc --noEmit --strict` and run with Node on the shipped organism,
// `npx vlmscope --help`, and examples/browser bundled by esbuild for the browser (nothing from Node pulled in,
// checked on the metafile) and run in headless Chromium (SwiftShader WebGPU) against the Node example's answers.
//
// The install is offline: the fresh project gets a lockfile made of the repository's own (the tarball plus the
// non-dev entries of package-lock.json), so `npm ci --offline` takes every package from the npm cache that the
// repository's `npm ci` filled (npm caches tarballs, not registry metadata, so a plain `npm install <tarball>
// --offline` could not resolve version ranges).

import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { build, transform, type Metafile } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from './helpers/fixtures.js';
import { startLab, type Lab } from './helpers/lab-page.js';

const run = promisify(execFile);
const TSC = join(REPO_ROOT, 'node_modules/typescript/bin/tsc');
const ANSWER = readFileSync(join(REPO_ROOT, 'examples/scene-answer.txt'), 'utf8').trim();

/** The environment without what an enclosing `npm test` sets for its own package (prefix, lifecycle, package). */
function cleanEnv(): NodeJS.ProcessEnv {
  const keep = new Set(['npm_config_cache', 'npm_config_userconfig', 'npm_config_globalconfig', 'npm_config_registry', 'npm_config_cafile']);
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_') || keep.has(k.toLowerCase())));
}

async function sh(cmd: string, args: string[], cwd: string, timeout = 180_000): Promise<{ stdout: string; stderr: string }> {
  try {
    return await run(cmd, args, { cwd, env: cleanEnv(), timeout, maxBuffer: 64 << 20, encoding: 'utf8' });
  } catch (e) {
    const x = e as Error & { stdout?: string; stderr?: string };
    throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) failed: ${x.message}\n${x.stdout ?? ''}\n${x.stderr ?? ''}`);
  }
}

/** The ```ts block of README.md's Library section. */
function readmeExample(): string {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const lib = readme.slice(readme.indexOf('\n## Library\n'));
  const m = /```ts\n([\s\S]*?)```/.exec(lib);
  if (!m || !lib.startsWith('\n## Library\n')) throw new Error('README.md: no ```ts block in the Library section');
  return m[1]!;
}

interface Packed {
  filename: string;
  integrity: string;
  size: number;
  unpackedSize: number;
  files: { path: string; size: number }[];
}

describe('the npm package in a fresh project', () => {
  let work: string;
  let project: string;
  let packed: Packed;
  let nodeOutputs: Record<string, string>;
  let lab: Lab | undefined;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'vlmscope-package-'));
    project = join(work, 'project');
    mkdirSync(project);
    const { stdout } = await sh('npm', ['pack', '--json', '--pack-destination', work], REPO_ROOT, 240_000);
    packed = (JSON.parse(stdout.slice(stdout.indexOf('['))) as Packed[])[0]!;

    // The fresh project: vlmscope (the tarball) as its only dependency, versions pinned by the repository's lock.
    const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8'));
    const lock = JSON.parse(readFileSync(join(REPO_ROOT, 'package-lock.json'), 'utf8'));
    const spec = `file:../${packed.filename}`;
    const packages: Record<string, unknown> = {
      '': { name: 'consumer', dependencies: { vlmscope: spec } },
      'node_modules/vlmscope': {
        version: pkg.version,
        resolved: spec,
        integrity: packed.integrity,
        license: pkg.license,
        dependencies: pkg.dependencies,
        bin: pkg.bin,
        engines: pkg.engines,
      },
    };
    for (const [path, entry] of Object.entries(lock.packages as Record<string, { dev?: boolean }>)) {
      if (path && !entry.dev) packages[path] = entry;
    }
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module', dependencies: { vlmscope: spec } }, null, 2));
    writeFileSync(join(project, 'package-lock.json'), JSON.stringify({ name: 'consumer', lockfileVersion: 3, requires: true, packages }, null, 2));
    await sh('npm', ['ci', '--offline', '--no-audit', '--no-fund'], project);

    // The README's example and the examples, as a user would copy them.
    writeFileSync(join(project, 'main.ts'), readmeExample());
    for (const f of ['answer.ts', 'capture-ablation.ts']) copyFileSync(join(REPO_ROOT, 'examples', f), join(project, f));
    mkdirSync(join(project, 'browser'));
    for (const f of ['main.ts', 'index.html']) copyFileSync(join(REPO_ROOT, 'examples/browser', f), join(project, 'browser', f));
  });

  afterAll(async () => {
    await lab?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('packs the bundles, declarations, CLI, organism and examples, and nothing else', () => {
    const paths = packed.files.map((f) => f.path);
    for (const p of [
      'package.json',
      'README.md',
      'bin/vlmscope.js',
      'dist/index.js',
      'dist/cli.js',
      'dist/vlmscope.browser.js',
      'dist/types/src/index.d.ts',
      'weights/organism/config.json',
      'weights/organism/model.safetensors',
      'weights/organism/tokenizer.json',
      'examples/answer.ts',
      'examples/capture-ablation.ts',
      'examples/browser/main.ts',
      'examples/browser/index.html',
      'examples/scene.png',
    ]) {
      expect(paths, p).toContain(p);
    }
    const unwanted = paths.filter((p) => /^(src|tests|kernels|shaders|scripts|web|docs|bench-results|test-artifacts)\/|^weights\/(?!organism\/)|\.map$|^dist\/bench/.test(p));
    expect(unwanted).toEqual([]);
    expect(paths.filter((p) => p.startsWith('dist/') && !p.startsWith('dist/types/')).sort()).toEqual(['dist/cli.js', 'dist/index.js', 'dist/vlmscope.browser.js']);
    expect(packed.size).toBeLessThan(5 << 20);
  });

  it('type-checks the README example and examples/ with tsc --noEmit --strict', async () => {
    const files = ['main.ts', 'answer.ts', 'capture-ablation.ts', 'browser/main.ts'];
    // Only the package's declarations and what they pull in (@webgpu/types, a dependency), with the default lib.
    await sh(process.execPath, [TSC, '--noEmit', '--strict', '--skipLibCheck', 'false', '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext', ...files], project);
  });

  it('runs the README example and examples/*.ts with Node on the shipped organism', async () => {
    nodeOutputs = {};
    for (const name of ['main', 'answer', 'capture-ablation']) {
      // Types stripped, imports kept: `vlmscope` is the installed package's dist/index.js.
      const js = await transform(readFileSync(join(project, `${name}.ts`), 'utf8'), { loader: 'ts', format: 'esm', target: 'node20' });
      writeFileSync(join(project, `${name}.mjs`), js.code);
      nodeOutputs[name] = (await sh(process.execPath, [`${name}.mjs`], project)).stdout;
    }
    expect(nodeOutputs.main!.trim()).toBe(`${ANSWER} [ 4, 8, 16 ]`);
    expect(nodeOutputs.answer).toContain(`-> ${ANSWER} (`);
    expect(nodeOutputs['capture-ablation']).toMatch(new RegExp(`^plain: answer "${ANSWER}", p\\("${ANSWER}"\\) = [01]\\.\\d{3}`, 'm'));
    expect(nodeOutputs['capture-ablation']).toMatch(/^ablated: answer "[^"]*", p\(/m);
    expect(nodeOutputs['capture-ablation']).toMatch(/^z \[4,8,16\]: \|z_ablated - z_plain\| per layer: 0\.00 \d/m);
  });

  it('runs `npx vlmscope --help` in the project', async () => {
    const { stdout } = await sh('npx', ['--offline', '--no-install', 'vlmscope', '--help'], project, 60_000);
    expect(stdout).toMatch(/^Usage: vlmscope /m);
    expect(stdout).toMatch(/\bgenerate\b/);
  });

  it('bundles examples/browser for the browser with esbuild: the browser entry, nothing from Node', async () => {
    const bundle = async (entry: string, outfile: string): Promise<Metafile> => {
      const r = await build({ absWorkingDir: project, entryPoints: [entry], bundle: true, platform: 'browser', format: 'esm', target: 'es2022', outfile, metafile: true, logLevel: 'silent' });
      return r.metafile;
    };
    const check = (meta: Metafile) => {
      const inputs = Object.keys(meta.inputs);
      expect(inputs.filter((p) => p.includes('node_modules/vlmscope/'))).toEqual(['node_modules/vlmscope/dist/vlmscope.browser.js']);
      expect(inputs.filter((p) => /^node:|node_modules\/webgpu\/|^\(disabled\)/.test(p))).toEqual([]);
      const imports = [...Object.values(meta.inputs).flatMap((i) => i.imports), ...Object.values(meta.outputs).flatMap((o) => o.imports)];
      expect(imports.filter((i) => i.external || i.path.startsWith('node:'))).toEqual([]);
    };
    mkdirSync(join(project, 'web'));
    check(await bundle('browser/main.ts', 'web/main.js'));
    // A bundler's `browser` condition picks the same file for a plain 'vlmscope' import.
    writeFileSync(join(project, 'plain-import.ts'), "import { loadModel } from 'vlmscope';\nconsole.log(loadModel);\n");
    check(await bundle('plain-import.ts', 'plain-import.js'));
  });

  it('runs the browser example in headless Chromium with the answers of the Node example', async () => {
    expect(nodeOutputs, 'the Node examples ran').toBeDefined();
    // Served like a user's project: the page, the organism and the scene from the installed package.
    copyFileSync(join(project, 'browser/index.html'), join(project, 'web/index.html'));
    mkdirSync(join(project, 'weights'));
    symlinkSync(join(project, 'node_modules/vlmscope/weights/organism'), join(project, 'weights/organism'), 'dir');
    mkdirSync(join(project, 'examples'));
    copyFileSync(join(project, 'node_modules/vlmscope/examples/scene.png'), join(project, 'examples/scene.png'));
    lab = await startLab({ root: project });
    const page = await lab.browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${lab.base}/web/index.html?model=../weights/organism/&image=../examples/scene.png`);
    await page.waitForFunction(() => document.body.dataset.state !== 'loading', undefined, { timeout: 120_000 });
    const text = (await page.textContent('#out')) ?? '';
    expect(await page.evaluate(() => document.body.dataset.state), text).toBe('done');
    expect(errors).toEqual([]);
    const nodeAblated = /^ablated: answer "([^"]*)"/m.exec(nodeOutputs['capture-ablation']!)![1];
    expect(text).toContain(`plain: "${ANSWER}", z [4,8,16]`);
    expect(text).toContain(`ablated: "${nodeAblated}", z [4,8,16]`);
    const nodeHeads = /ablating heads (.*)$/m.exec(nodeOutputs['capture-ablation']!)![1];
    expect(text).toContain(`ablated next: heads ${nodeHeads}`);
  });
});
