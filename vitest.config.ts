import { defineConfig } from 'vitest/config';

export default defineConfig({
  plugins: [
    {
      // WGSL is imported as a string, as esbuild's `text` loader does for the bundles.
      name: 'wgsl-text',
      transform(code, id) {
        if (id.endsWith('.wgsl')) return { code: `export default ${JSON.stringify(code)};`, map: null };
        return undefined;
      },
    },
  ],
  test: {
    include: ['tests/**/*.test.ts'],
    globalSetup: ['tests/helpers/build.ts'],
    // Dawn fails inside worker threads: keep the forks pool.
    pool: 'forks',
    testTimeout: 300_000,
    hookTimeout: 300_000,
  },
});
