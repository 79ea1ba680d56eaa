// Writes a large sharded LLaVA checkpoint (random f16 weights, llava-hf tensor names, 7B-like widths) by
// streaming each tensor to disk in chunks, so generating it never holds a tensor in memory.

import { open, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { f32ToF16Bits } from '../../src/gpu/half.js';

interface Planned {
  name: string;
  shape: number[];
  /** Values are `offset + uniform(-scale, scale)`. */
  scale: number;
  offset: number;
}

export interface BigSpec {
  vocab: number;
  hidden: number;
  intermediate: number;
  heads: number;
  textLayers: number;
  vision: { hidden: number; intermediate: number; layers: number; heads: number; imageSize: number; patchSize: number };
}

const tables = new Map<string, Uint16Array>();

/** 65536 random f16 values `offset + uniform(-scale, scale)`: indexing it with random bits fills GBs quickly. */
function valueTable(scale: number, offset: number): Uint16Array {
  const key = `${scale},${offset}`;
  let t = tables.get(key);
  if (!t) {
    t = new Uint16Array(65536);
    let a = 12345;
    for (let i = 0; i < t.length; i++) {
      a = (Math.imul(a, 1103515245) + 12345) >>> 0;
      t[i] = f32ToF16Bits(offset + ((a / 2 ** 32) * 2 - 1) * scale);
    }
    tables.set(key, t);
  }
  return t;
}

function plan(spec: BigSpec): { shards: Planned[][]; config: Record<string, unknown> } {
  const v = spec.vision;
  const D = spec.hidden;
  const grid = v.imageSize / v.patchSize;
  const vis: Planned[] = [];
  const vp = 'vision_tower.vision_model.';
  const p = (name: string, shape: number[], scale: number, offset = 0) => ({ name, shape, scale, offset });
  vis.push(p(vp + 'embeddings.class_embedding', [v.hidden], 0.5));
  vis.push(p(vp + 'embeddings.patch_embedding.weight', [v.hidden, 3, v.patchSize, v.patchSize], 0.05));
  vis.push(p(vp + 'embeddings.position_embedding.weight', [grid * grid + 1, v.hidden], 0.5));
  vis.push(p(vp + 'pre_layrnorm.weight', [v.hidden], 0.1, 1), p(vp + 'pre_layrnorm.bias', [v.hidden], 0.1));
  for (let l = 0; l < v.layers; l++) {
    const q = `${vp}encoder.layers.${l}.`;
    for (const x of ['q', 'k', 'v', 'out']) vis.push(p(`${q}self_attn.${x}_proj.weight`, [v.hidden, v.hidden], 0.05), p(`${q}self_attn.${x}_proj.bias`, [v.hidden], 0.05));
    for (const x of ['layer_norm1', 'layer_norm2']) vis.push(p(`${q}${x}.weight`, [v.hidden], 0.1, 1), p(`${q}${x}.bias`, [v.hidden], 0.1));
    vis.push(p(`${q}mlp.fc1.weight`, [v.intermediate, v.hidden], 0.05), p(`${q}mlp.fc1.bias`, [v.intermediate], 0.05));
    vis.push(p(`${q}mlp.fc2.weight`, [v.hidden, v.intermediate], 0.05), p(`${q}mlp.fc2.bias`, [v.hidden], 0.05));
  }
  vis.push(p('multi_modal_projector.linear_1.weight', [D, v.hidden], 0.05), p('multi_modal_projector.linear_1.bias', [D], 0.05));
  vis.push(p('multi_modal_projector.linear_2.weight', [D, D], 0.02), p('multi_modal_projector.linear_2.bias', [D], 0.05));
  const text: Planned[] = [];
  const tp = 'language_model.model.';
  const F = spec.intermediate;
  for (let l = 0; l < spec.textLayers; l++) {
    const q = `${tp}layers.${l}.`;
    for (const x of ['q', 'k', 'v', 'o']) text.push(p(`${q}self_attn.${x}_proj.weight`, [D, D], 0.02));
    text.push(p(`${q}mlp.gate_proj.weight`, [F, D], 0.02), p(`${q}mlp.up_proj.weight`, [F, D], 0.02), p(`${q}mlp.down_proj.weight`, [D, F], 0.01));
    text.push(p(`${q}input_layernorm.weight`, [D], 0.1, 1), p(`${q}post_attention_layernorm.weight`, [D], 0.1, 1));
  }
  text.push(p(`${tp}norm.weight`, [D], 0.1, 1));
  // The embedding table is tied to the output (tie_word_embeddings) and is the one tensor over 1 GiB.
  const embed = [p(`${tp}embed_tokens.weight`, [spec.vocab, D], 1)];
  const config = {
    architectures: ['LlavaForConditionalGeneration'],
    model_type: 'llava',
    image_token_index: spec.vocab - 2,
    vision_feature_layer: -2,
    vision_feature_select_strategy: 'default',
    projector_hidden_act: 'gelu',
    tie_word_embeddings: true,
    text_config: {
      model_type: 'llama', hidden_size: D, intermediate_size: F, num_hidden_layers: spec.textLayers,
      num_attention_heads: spec.heads, num_key_value_heads: spec.heads, rms_norm_eps: 1e-5, vocab_size: spec.vocab,
      max_position_embeddings: 4096, tie_word_embeddings: true,
    },
    vision_config: {
      model_type: 'clip_vision_model', hidden_size: v.hidden, intermediate_size: v.intermediate, num_hidden_layers: v.layers,
      num_attention_heads: v.heads, image_size: v.imageSize, patch_size: v.patchSize,
    },
  };
  return { shards: [embed, [...vis, ...text]], config };
}

export async function writeBigCheckpoint(dir: string, spec: BigSpec): Promise<{ shardBytes: number[]; largestTensor: number }> {
  await mkdir(dir, { recursive: true });
  const { shards, config } = plan(spec);
  const weightMap: Record<string, string> = {};
  const shardBytes: number[] = [];
  let largestTensor = 0;
  let seed = 99;
  for (let s = 0; s < shards.length; s++) {
    const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
    const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
    let off = 0;
    for (const t of shards[s]) {
      const bytes = t.shape.reduce((a, b) => a * b, 1) * 2;
      header[t.name] = { dtype: 'F16', shape: t.shape, data_offsets: [off, off + bytes] };
      off += bytes;
      weightMap[t.name] = file;
      largestTensor = Math.max(largestTensor, bytes);
    }
    let json = JSON.stringify(header);
    json += ' '.repeat((8 - ((8 + json.length) % 8)) % 8);
    const fh = await open(join(dir, file), 'w');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    await fh.write(len);
    await fh.write(json);
    const chunk = new Uint16Array(8 << 20); // 16 MiB
    for (const t of shards[s]) {
      let left = t.shape.reduce((a, b) => a * b, 1);
      const values = valueTable(t.scale, t.offset);
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        for (let i = 0; i < n; i++) {
          seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
          chunk[i] = values[seed >>> 16];
        }
        await fh.write(new Uint8Array(chunk.buffer, 0, n * 2));
        left -= n;
      }
    }
    await fh.close();
    shardBytes.push(8 + json.length + off);
  }
  const total = shardBytes.reduce((a, b) => a + b, 0);
  await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 1));
  await writeFile(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  await writeFile(
    join(dir, 'preprocessor_config.json'),
    JSON.stringify({ size: { shortest_edge: spec.vision.imageSize }, crop_size: { height: spec.vision.imageSize, width: spec.vision.imageSize } }),
  );
  return { shardBytes, largestTensor };
}

