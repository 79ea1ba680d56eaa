// WGSL sources are imported as text (esbuild `text` loader, and the vitest plugin in vitest.config.ts).
declare module '*.wgsl' {
  const source: string;
  export default source;
}
