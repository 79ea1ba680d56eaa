// Bundles the CLI, the library and the benchmark for Node, and the library and the attention lab page for the
// browser. WGSL files are inlined as text, so no bundle looks shaders up on a file system. The browser bundles
// keep Node-only modules external: they are only reached through dynamic imports on Node code paths
// (nodeFolder, Dawn), never executed in a page.
import { build } from 'esbuild';

const common = {
  bundle: true,
  format: 'esm',
  sourcemap: true,
  loader: { '.wgsl': 'text' },
  logLevel: 'warning',
};

const browser = { ...common, platform: 'browser', target: 'es2022', external: ['node:*', 'webgpu'] };

await Promise.all([
  build({
    ...common,
    platform: 'node',
    target: 'node20',
    packages: 'external',
    entryPoints: { cli: 'src/cli/main.ts', index: 'src/index.ts', bench: 'scripts/bench.ts' },
    outdir: 'dist',
  }),
  // The library for pages and web apps: `import { LlavaModel, acquireGpu, urlFolder } from './vlmscope.browser.js'`.
  build({ ...browser, entryPoints: { 'vlmscope.browser': 'src/index.ts' }, outdir: 'dist' }),
  // The attention lab page (web/index.html loads dist/app.js).
  build({ ...browser, entryPoints: { app: 'web/app.ts' }, outdir: 'web/dist' }),
]);
