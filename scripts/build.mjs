// Bundles the CLI, the library and the benchmark for Node, and the library and the attention lab page for the
// browser. WGSL files are inlined as text, so no bundle looks shaders up on a file system.
//
// The browser bundles import nothing from Node: Node-only modules (node:*, the `webgpu` package) are only reached
// through dynamic imports on Node code paths (nodeFolder, Dawn), never executed in a page, and each is replaced by
// a stub that throws when imported. So a web app's bundler (esbuild, Vite, webpack) takes dist/vlmscope.browser.js
// as it is, without resolving Node built-ins.
//
// `node scripts/build.mjs --types` also emits the TypeScript declarations of the library (tsconfig.build.json ->
// dist/types), as `npm pack` and installs from git do (package.json `prepare`).
//
// Files are replaced atomically (written beside, then renamed) and only when their content changes, so a process
// that runs dist/cli.js or serves web/dist while a build runs (the package test packs during `npm test`) never
// reads a half-written bundle.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
process.chdir(ROOT);

const common = {
  bundle: true,
  format: 'esm',
  sourcemap: true,
  loader: { '.wgsl': 'text' },
  logLevel: 'warning',
  write: false,
};

/** Node-only imports of browser bundles become modules that throw when (dynamically) imported. */
const nodeOnlyStubs = {
  name: 'node-only-stubs',
  setup(b) {
    b.onResolve({ filter: /^(node:.*|webgpu)$/ }, (args) => {
      if (args.kind !== 'dynamic-import') {
        throw new Error(`${args.importer} imports ${args.path} statically: a browser bundle may only import Node modules dynamically`);
      }
      return { path: args.path, namespace: 'node-only' };
    });
    b.onLoad({ filter: /.*/, namespace: 'node-only' }, (args) => ({
      contents: `throw new Error(${JSON.stringify(`vlmscope: "${args.path}" is only available in Node`)});`,
      loader: 'js',
    }));
  },
};

const browser = { ...common, platform: 'browser', target: 'es2022', plugins: [nodeOnlyStubs] };

/** Writes a build's files that changed, each through a temporary file and a rename. */
function writeOutputs(result) {
  for (const f of result.outputFiles) {
    let old = null;
    try {
      old = readFileSync(f.path);
    } catch {
      // new file
    }
    if (old && Buffer.compare(old, f.contents) === 0) continue;
    mkdirSync(dirname(f.path), { recursive: true });
    const tmp = `${f.path}.${process.pid}.tmp`;
    writeFileSync(tmp, f.contents);
    renameSync(tmp, f.path);
  }
}

const results = await Promise.all([
  build({
    ...common,
    platform: 'node',
    target: 'node20',
    packages: 'external',
    entryPoints: { cli: 'src/cli/main.ts', index: 'src/index.ts', bench: 'scripts/bench.ts', 'bench-kernels': 'scripts/bench-kernels.ts' },
    outdir: 'dist',
  }),
  // The library for pages and web apps (package entry `vlmscope/browser`, or `vlmscope` under a bundler's
  // `browser` condition): `import { loadModel, acquireGpu, urlFolder } from 'vlmscope/browser'`.
  build({ ...browser, entryPoints: { 'vlmscope.browser': 'src/index.ts' }, outdir: 'dist' }),
  // The attention lab page (web/index.html loads dist/app.js).
  build({ ...browser, entryPoints: { app: 'web/app.ts' }, outdir: 'web/dist' }),
]);
results.forEach(writeOutputs);

if (process.argv.includes('--types')) {
  // Declarations of src/index.ts's graph only; stale ones from removed files must not ship.
  rmSync(join(ROOT, 'dist/types'), { recursive: true, force: true });
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
}
