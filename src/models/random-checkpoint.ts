// What the random checkpoint writers of every family share (random-llava.ts, random-qwen.ts): a seeded PRNG and
// writing the generated files as a Hugging Face folder.

/** Mulberry32: a small, fast 32-bit PRNG. Returns a function giving uniform floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The files of a generated checkpoint folder. */
export interface CheckpointFiles {
  'config.json': string;
  'preprocessor_config.json': string;
  'model.safetensors': Uint8Array;
}

/** Write generated files into `dir` (created if needed; Node only). */
export async function writeCheckpointFolder(dir: string, files: CheckpointFiles): Promise<void> {
  const { mkdir, writeFile } = await import('node:fs/promises');
  const { join } = await import('node:path');
  await mkdir(dir, { recursive: true });
  for (const [name, data] of Object.entries(files)) await writeFile(join(dir, name), data);
}
