// WeightLoader.loadStacked: a decoder layer's q, k and v projections (or biases) stacked by rows into one weight,
// the bytes of loading them one by one. stackReason on both sides of each rule (one stored dtype or a conversion,
// the same trailing dimensions, 4-byte-aligned parts), stacks that convert, that split into row blocks across the
// parts' boundaries, check mode's byte counts and shape errors; then a model whose q / k / v cannot be stacked
// (k stored in another dtype) loads them as three weights and still reproduces the golden logits.

import { mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Checkpoint, nodeFolder } from '../src/io/checkpoint.js';
import { WeightLoader } from '../src/models/weights.js';
import { RowSplitTensor, Tensor, type Weight, weightParts } from '../src/gpu/tensor.js';
import { LlavaModel } from '../src/models/llava.js';
import { decodeImage } from '../src/io/image.js';
import { parseCapture } from '../src/spec/spec.js';
import { bf16Bytes, encodeSafetensors, f16Bytes, f16ToF32, f32Bytes } from './helpers/safetensors-writer.js';
import { expectClose, gpuContext, read } from './helpers/gpu.js';
import { fixtureDir, golden } from './helpers/fixtures.js';
import { flat } from './helpers/compare.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'vlmscope-stack-'));
  dirs.push(d);
  return d;
}

const seq = (n: number, from: number) => Array.from({ length: n }, (_, i) => from + i * 0.25);

/** q [3, 4], k / v [2, 4] in f16, k2 in bf16, w5 [2, 5], odd-length biases, f32 biases. */
async function checkpoint(): Promise<Checkpoint> {
  const dir = await tempDir();
  const bytes = encodeSafetensors({
    q: { dtype: 'F16', shape: [3, 4], data: f16Bytes(seq(12, 1)) },
    k: { dtype: 'F16', shape: [2, 4], data: f16Bytes(seq(8, -3)) },
    v: { dtype: 'F16', shape: [2, 4], data: f16Bytes(seq(8, 10)) },
    k_bf16: { dtype: 'BF16', shape: [2, 4], data: bf16Bytes(seq(8, -3)) },
    w5: { dtype: 'F16', shape: [2, 5], data: f16Bytes(seq(10, 0)) },
    b3: { dtype: 'F16', shape: [3], data: f16Bytes([1, 2, 3]) },
    b2: { dtype: 'F16', shape: [2], data: f16Bytes([4, 5]) },
    c3: { dtype: 'F32', shape: [3], data: f32Bytes([1, 2, 3]) },
    c2: { dtype: 'F32', shape: [2], data: f32Bytes([4, 5]) },
  });
  await writeFile(join(dir, 'model.safetensors'), bytes);
  await writeFile(join(dir, 'config.json'), '{}');
  return Checkpoint.open(nodeFolder(dir));
}

const part = (name: string, expected: number[]) => ({ name, expected });
const QKV = [part('q', [3, 4]), part('k', [2, 4]), part('v', [2, 4])];

/** All values of a weight, block by block, as f32 (f16 decoded). */
async function values(w: Weight): Promise<number[]> {
  const ctx = await gpuContext();
  const out: number[] = [];
  for (const { tensor } of weightParts(w)) {
    if (tensor.dtype === 'f32') out.push(...(await read(ctx, tensor)));
    else {
      const words = await read(ctx, new Tensor(tensor.buffer, [tensor.buffer.size / 4], 'f32', tensor.label));
      const halves = new Uint16Array(words.buffer, words.byteOffset, tensor.numel);
      out.push(...Array.from(halves, (h) => f16ToF32(h)));
    }
  }
  return out;
}

describe('WeightLoader.loadStacked', () => {
  it('stackReason: one dtype (or a conversion), the same trailing dimensions, 4-byte-aligned parts', async () => {
    const ckpt = await checkpoint();
    const ctx = await gpuContext();
    const w = new WeightLoader(ctx, ckpt);
    expect(w.stackReason(QKV)).toBeNull();
    expect(w.stackReason([part('q', [3, 4]), part('k_bf16', [2, 4])])).toMatch(/k_bf16 is bf16, q f16/);
    expect(new WeightLoader(ctx, ckpt, undefined, 0, { dtype: 'f32' }).stackReason([part('q', [3, 4]), part('k_bf16', [2, 4])])).toBeNull();
    expect(w.stackReason([part('q', [3, 4]), part('w5', [2, 5])])).toMatch(/trailing dimensions differ/);
    expect(w.stackReason([part('b3', [3]), part('b2', [2])])).toMatch(/b3 does not end on a 4-byte boundary in f16/);
    expect(w.stackReason([part('c3', [3]), part('c2', [2])])).toBeNull();
    expect(w.stackReason([])).toMatch(/nothing/);
    await expect(w.loadStacked([part('q', [3, 4]), part('w5', [2, 5])], 'bad')).rejects.toThrow(/bad cannot be stacked/);
  });

  it('stacks the bytes in order, converts on load, and splits into row blocks across part boundaries', async () => {
    const ckpt = await checkpoint();
    const ctx = await gpuContext();
    const want = [...seq(12, 1), ...seq(8, -3), ...seq(8, 10)];
    const plain = await new WeightLoader(ctx, ckpt).loadStacked(QKV, 'qkv');
    expect(plain).toBeInstanceOf(Tensor);
    expect(plain.shape).toEqual([7, 4]);
    expect(plain.dtype).toBe('f16');
    expect(plain.label).toBe('qkv');
    expect(await values(plain)).toEqual(want);

    const mixed = await new WeightLoader(ctx, ckpt, undefined, 0, { dtype: 'f32' }).loadStacked([part('q', [3, 4]), part('k_bf16', [2, 4]), part('v', [2, 4])], 'qkv');
    expect(mixed.dtype).toBe('f32');
    expect(await values(mixed)).toEqual(want);

    // 2 rows of 8 bytes per block: blocks [0, 2), [2, 4), [4, 6), [6, 7) cut q / k and k / v apart.
    const split = await new WeightLoader(ctx, ckpt, undefined, 0, { maxBindingBytes: 16 }).loadStacked(QKV, 'qkv');
    expect(split).toBeInstanceOf(RowSplitTensor);
    expect((split as RowSplitTensor).rowStarts).toEqual([0, 2, 4, 6]);
    expect(await values(split)).toEqual(want);

    const biases = await new WeightLoader(ctx, ckpt).loadStacked([part('c3', [3]), part('c2', [2])], 'bias');
    expect(biases.shape).toEqual([5]);
    expect(await values(biases)).toEqual([1, 2, 3, 4, 5]);
  });

  it('check mode counts the stack once and reports each wrong shape by name', async () => {
    const ckpt = await checkpoint();
    const check = new WeightLoader(null, ckpt);
    const w = await check.loadStacked(QKV, 'qkv');
    expect(w.shape).toEqual([7, 4]);
    expect(check.bytesNeeded).toBe(7 * 4 * 2);
    await check.loadStacked([part('q', [3, 4]), part('k', [2, 4]), part('v', [2, 4]), part('k', [2, 4])], 'qkvk');
    expect(check.bytesNeeded).toBe(7 * 4 * 2 + 9 * 4 * 2);
    expect(check.problems).toEqual([]);
    await check.loadStacked([part('q', [3, 4]), { name: 'v', expected: [4, 4] }], 'wrong');
    expect(check.problems.join('\n')).toMatch(/tensor v in \S*model\.safetensors has shape \[2, 4\], but the config implies \[4, 4\]/);
    await expect(new WeightLoader(await gpuContext(), ckpt).loadStacked([part('q', [3, 4]), { name: 'v', expected: [4, 4] }], 'wrong')).rejects.toThrow(/tensor v .* has shape \[2, 4\]/);
  });
});

describe('a decoder whose q / k / v cannot be stacked', () => {
  it('loads k stored in f32 beside f16 q / v as three weights, with the same logits as the golden', async () => {
    const src = fixtureDir('tiny-llava');
    const g = golden('tiny-llava');
    const dir = await tempDir();
    for (const f of ['config.json', 'preprocessor_config.json', 'image.png']) await symlink(join(src, f), join(dir, f));
    // Rewrite model.safetensors with layer 0's k_proj widened to f32 (exact), everything else as stored.
    const bytes = new Uint8Array(await readFile(join(src, 'model.safetensors')));
    const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
    const widened = 'language_model.model.layers.0.self_attn.k_proj.weight';
    const tensors: Parameters<typeof encodeSafetensors>[0] = {};
    for (const [name, t] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      let data: Uint8Array = bytes.slice(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1]);
      let dtype = t.dtype;
      if (name === widened) {
        expect(dtype).toBe('F16');
        const halves = new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2);
        data = f32Bytes(Array.from(halves, (h) => f16ToF32(h)));
        dtype = 'F32';
      }
      tensors[name] = { dtype, shape: t.shape, data };
    }
    await writeFile(join(dir, 'model.safetensors'), encodeSafetensors(tensors));

    const ctx = await gpuContext();
    const model = await LlavaModel.load(ctx, dir);
    try {
      const [L0, L1] = model.text.layers;
      expect('q' in L0.qkv && L0.qkv.k.dtype).toBe('f32');
      expect('fused' in L1.qkv).toBe(true); // the other layers still stack
      const img = decodeImage(new Uint8Array(await readFile(join(dir, 'image.png'))), 'image.png');
      const r = await model.run({ ids: g.input_ids, pixelValues: [model.preprocess(img)], capture: parseCapture({ logits: 'all' }, model.dims), maxNewTokens: 6 });
      expectClose(r.logits!.data, flat(g.logits), 1e-3, 0, 'logits (k_proj widened to f32)');
      expect(r.tokens).toEqual(g.greedy_6);
    } finally {
      model.destroy();
    }
  });
});
