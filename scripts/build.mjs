// Bundles the CLI, the library and the benchmark for Node. WGSL files are inlined as text so the
// bundle has no file-system lookups for shaders (the same sources go into the browser bundle).
import { build } from 'esbuild';

const common = {
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  sourcemap: true,
  loader: { '.wgsl': 'text' },
  packages: 'external',
  logLevel: 'warning',
};

await build({
  ...common,
  entryPoints: { cli: 'src/cli/main.ts', index: 'src/index.ts', bench: 'scripts/bench.ts' },
  outdir: 'dist',
});
