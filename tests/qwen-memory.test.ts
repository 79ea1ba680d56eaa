// The per-run memory check of Qwen images: an image's vision tokens (and captured vision patterns) grow with its
// size, which loading could not know, so `run` counts them before allocating and refuses with the numbers.

import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { GpuContext } from '../src/gpu/context.js';
import { loadModel } from '../src/models/load.js';
import type { PatchedImage } from '../src/models/model.js';
import { parseCapture } from '../src/spec/spec.js';
import { loadImageFile, type RgbImage } from '../src/io/image.js';
import { golden, fixtureDir } from './helpers/fixtures.js';
import { gpuContext } from './helpers/gpu.js';

const dir = fixtureDir('tiny-qwen25vl');
const g = golden('tiny-qwen25vl');

function image(width: number, height: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37) % 251;
  return { width, height, data };
}

/** Golden-like ids for an image making n tokens: text, vision_start, n image pads, vision_end, text. */
const idsFor = (n: number) => [...g.input_ids.slice(0, 6), ...Array(n).fill(251), ...g.input_ids.slice(-7)];

describe('Qwen per-run memory check', () => {
  it('refuses an image whose vision pass exceeds the memory budget, naming its vision tokens, before any GPU work', async () => {
    const ctx = await gpuContext();
    const plain = await loadModel(ctx, dir);
    const small = plain.preprocess(await loadImageFile(join(dir, 'image.png'))) as PatchedImage;
    plain.destroy();
    // A budget the model and the golden image fit in, but not a 1000x1000 image (~1280 patches at max_pixels 12845056).
    const model = await loadModel(ctx, dir, { memoryBudget: 4 * 2 ** 20 });
    const r = await model.run({ ids: g.input_ids, pixelValues: [small] });
    expect(r.logits!.data.length).toBe(256);
    const big = model.preprocess(image(1000, 1000)) as PatchedImage;
    const n = model.imageTokenCounts([big])[0];
    const before = ctx.allocatedBytes;
    await expect(model.run({ ids: idsFor(n), pixelValues: [big] })).rejects.toThrow(
      /^the image\(s\) make \d+ vision tokens whose vision pass needs [\d.]+ MiB of GPU memory; with weights [\d.]+ (KiB|MiB) and KV cache [\d.]+ (KiB|MiB) that exceeds the given memory budget \(4\.0 MiB\); use a smaller image or lower max_pixels$/,
    );
    expect(ctx.allocatedBytes).toBe(before);
    model.destroy();
  });

  it("refuses a vision tensor over the adapter's storage binding limit (e.g. a captured vision pattern) with the numbers", async () => {
    const real = await gpuContext();
    // The same device, with a 1 MiB binding limit as a small adapter would report.
    const ctx = new GpuContext({ ...real.gpu, limits: { ...real.gpu.limits, maxStorageBufferBindingSize: 2 ** 20 } });
    const model = await loadModel(ctx, dir);
    const img = model.preprocess(image(448, 448)) as PatchedImage; // 1024 patches: a [4, 1024, 1024] pattern is 16 MiB
    const n = model.imageTokenCounts([img])[0];
    await expect(
      model.run({ ids: idsFor(n), pixelValues: [img], capture: parseCapture({ pattern: [{ tower: 'vision', layer: 1 }] }, model.dims) }),
    ).rejects.toThrow(/^the image\(s\) make 1024 vision tokens; one vision tensor of 16\.0 MiB exceeds this adapter's storage binding limit \(1\.0 MiB\)/);
    model.destroy();
  });
});
