// The CLIP vision tower as LLaVA uses it: patch embedding (conv as im2col + matmul), CLS + learned positions,
// pre_layrnorm, pre-LN encoder layers with quick_gelu MLPs. post_layernorm is never applied to patch
// features (Hugging Face applies it only to the pooled CLS), so it is not loaded.

import type { GpuContext, Recorder } from '../gpu/context.js';
import type { Tensor, Weight } from '../gpu/tensor.js';
import { rows } from '../../kernels/common.js';
import { matmul } from '../../kernels/matmul.js';
import { layerNorm } from '../../kernels/norm.js';
import { attention } from '../../kernels/attention.js';
import { im2col, positionEmbed } from '../../kernels/patch.js';
import type { VitConfig } from './config.js';
import type { WeightLoader } from './weights.js';
import { headParamSlotBytes, headVectorSlotBytes } from '../interp/head-params.js';

interface VitLayer {
  ln1w: Tensor;
  ln1b: Tensor;
  q: Weight;
  qb: Tensor;
  k: Weight;
  kb: Tensor;
  v: Weight;
  vb: Tensor;
  o: Weight;
  ob: Tensor;
  ln2w: Tensor;
  ln2b: Tensor;
  fc1: Weight;
  fc1b: Tensor;
  fc2: Weight;
  fc2b: Tensor;
}

export interface VisionCaptures {
  pattern?: Map<number, Tensor>;
  /** Hidden states by Hugging Face index (0 = after pre_layrnorm, i = output of layer i-1). */
  residual?: Map<number, Tensor>;
  z?: { rows: number[]; dst: Tensor };
}

export class ClipVisionTower {
  readonly layers: VitLayer[] = [];
  patchWeight!: Weight;
  classEmbedding!: Tensor;
  positionEmbedding!: Tensor;
  preNormW!: Tensor;
  preNormB!: Tensor;
  headParams!: GPUBuffer;
  /** [layers] x 256-byte-aligned slots of [heads, 2, headDim] f32 (mean, add); allocated when a spec first needs it. */
  private headVectors: GPUBuffer | null = null;
  /** Whether this run's spec has mean_ablate / steer entries for the vision tower (only then attention binds the vectors). */
  private vectorsOn = false;
  /** Zeros: no vision key is an image-token key in the temperature sense. */
  private noImageKeys!: GPUBuffer;
  private s!: Record<'patches' | 'pe' | 'h' | 'h2' | 'n' | 'q' | 'k' | 'v' | 'z' | 'f', Tensor>;
  readonly tokens: number;

  constructor(
    private ctx: GpuContext,
    readonly cfg: VitConfig,
  ) {
    const grid = cfg.imageSize / cfg.patchSize;
    this.tokens = grid * grid + 1;
  }

  static async load(ctx: GpuContext, cfg: VitConfig, w: WeightLoader, prefixes: string[]): Promise<ClipVisionTower> {
    const t = new ClipVisionTower(ctx, cfg);
    const name = (suffix: string) => w.resolve(prefixes.map((p) => p + suffix));
    const { hidden: E, intermediate: F, channels: C, patchSize: P } = cfg;
    t.patchWeight = await w.load(name('embeddings.patch_embedding.weight'), [E, C, P, P], [E, C * P * P]);
    t.classEmbedding = await w.loadTensor(name('embeddings.class_embedding'), [E]);
    t.positionEmbedding = await w.loadTensor(name('embeddings.position_embedding.weight'), [t.tokens, E]);
    t.preNormW = await w.loadTensor(name('pre_layrnorm.weight'), [E]);
    t.preNormB = await w.loadTensor(name('pre_layrnorm.bias'), [E]);
    // All layers are loaded so captures can reach past the feature layer; a plain run stops at the feature layer.
    for (let l = 0; l < cfg.layers; l++) {
      const p = `encoder.layers.${l}.`;
      t.layers.push({
        ln1w: await w.loadTensor(name(p + 'layer_norm1.weight'), [E]),
        ln1b: await w.loadTensor(name(p + 'layer_norm1.bias'), [E]),
        q: await w.load(name(p + 'self_attn.q_proj.weight'), [E, E]),
        qb: await w.loadTensor(name(p + 'self_attn.q_proj.bias'), [E]),
        k: await w.load(name(p + 'self_attn.k_proj.weight'), [E, E]),
        kb: await w.loadTensor(name(p + 'self_attn.k_proj.bias'), [E]),
        v: await w.load(name(p + 'self_attn.v_proj.weight'), [E, E]),
        vb: await w.loadTensor(name(p + 'self_attn.v_proj.bias'), [E]),
        o: await w.load(name(p + 'self_attn.out_proj.weight'), [E, E]),
        ob: await w.loadTensor(name(p + 'self_attn.out_proj.bias'), [E]),
        ln2w: await w.loadTensor(name(p + 'layer_norm2.weight'), [E]),
        ln2b: await w.loadTensor(name(p + 'layer_norm2.bias'), [E]),
        fc1: await w.load(name(p + 'mlp.fc1.weight'), [F, E]),
        fc1b: await w.loadTensor(name(p + 'mlp.fc1.bias'), [F]),
        fc2: await w.load(name(p + 'mlp.fc2.weight'), [E, F]),
        fc2b: await w.loadTensor(name(p + 'mlp.fc2.bias'), [E]),
      });
    }
    return t;
  }

  /** GPU buffers the forward needs beyond the weights (separate from load so a check-only load allocates nothing). */
  prepare(): void {
    const { ctx, cfg } = this;
    this.headParams = ctx.createBuffer(
      Math.max(1, cfg.layers) * headParamSlotBytes(cfg.heads),
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
      'vision.head_params',
    );
    this.noImageKeys = ctx.createBuffer(this.tokens * 4, GPUBufferUsage.STORAGE, 'vision.key_is_image');
    const n = this.tokens;
    const { hidden: E, intermediate: F, channels: C, patchSize: P } = cfg;
    const a = (cols: number, label: string) => ctx.activation([n, cols], `vision.${label}`);
    this.s = {
      patches: ctx.activation([n - 1, C * P * P], 'vision.patches'),
      pe: ctx.activation([n - 1, E], 'vision.patch_embeds'),
      h: a(E, 'h'),
      h2: a(E, 'h2'),
      n: a(E, 'normed'),
      q: a(E, 'q'),
      k: a(E, 'k'),
      v: a(E, 'v'),
      z: a(E, 'z'),
      f: a(F, 'mlp'),
    };
  }

  /** This run's head vectors (head-params.ts headVectorTable); null: attention neither binds nor reads any. */
  writeHeadVectors(table: Float32Array | null): void {
    this.vectorsOn = table !== null;
    if (!table) return;
    const { ctx, cfg } = this;
    this.headVectors ??= ctx.createBuffer(
      Math.max(1, cfg.layers) * headVectorSlotBytes(cfg.heads, cfg.headDim),
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
      'vision.head_vectors',
    );
    ctx.write(this.headVectors, 0, table);
  }

  /**
   * Record the tower over one image's pixel values [C, H, W] through hidden state `upTo` (HF index) and return
   * the tensor holding it. States listed in `keep` are copied out as they pass (for multi-layer features).
   */
  record(rec: Recorder, pixels: Tensor, upTo: number, keep: Map<number, Tensor>, captures?: VisionCaptures): Tensor {
    const { ctx, cfg, s } = this;
    const { heads: H, headDim: hd, eps } = cfg;
    const n = this.tokens;
    const slot = headParamSlotBytes(H);
    const vslot = headVectorSlotBytes(H, hd);
    const vectors = this.vectorsOn ? this.headVectors : null;
    // One pass over all tokens: the only steering scope the spec allows here, "all" (code 1), is every row.
    const steer: [number, number][] = [[0, n]];
    if (upTo > this.layers.length) throw new Error(`vision hidden state ${upTo} needs ${upTo} layers, ${this.layers.length} loaded`);
    im2col(ctx, rec, { pixels, patch: cfg.patchSize, out: s.patches });
    matmul(ctx, rec, { x: rows(s.patches), w: this.patchWeight, out: rows(s.pe) });
    positionEmbed(ctx, rec, { patches: s.pe, cls: this.classEmbedding, pos: this.positionEmbedding, out: s.n });
    layerNorm(ctx, rec, { x: rows(s.n), w: this.preNormW, b: this.preNormB, eps, out: rows(s.h) });
    const copyState = (idx: number) => {
      for (const dst of [keep.get(idx), captures?.residual?.get(idx)]) if (dst) rec.copy(s.h.buffer, 0, dst.buffer, 0, s.h.byteLength);
    };
    copyState(0);
    for (let l = 0; l < upTo; l++) {
      const L = this.layers[l];
      layerNorm(ctx, rec, { x: rows(s.h), w: L.ln1w, b: L.ln1b, eps, out: rows(s.n) });
      matmul(ctx, rec, { x: rows(s.n), w: L.q, b: L.qb, out: rows(s.q) });
      matmul(ctx, rec, { x: rows(s.n), w: L.k, b: L.kb, out: rows(s.k) });
      matmul(ctx, rec, { x: rows(s.n), w: L.v, b: L.vb, out: rows(s.v) });
      attention(ctx, rec, {
        q: s.q,
        rows: n,
        heads: H,
        kvHeads: H,
        headDim: hd,
        k: s.k,
        v: s.v,
        nKeys: n,
        causal: false,
        pos0: 0,
        headParams: { buffer: this.headParams, offset: l * slot, size: slot },
        headVectors: vectors && { buffer: vectors, offset: l * vslot, size: vslot },
        steerRows: steer,
        keyIsImage: this.noImageKeys,
        z: s.z,
        pattern: captures?.pattern?.get(l) ?? null,
        label: `vision.${l}.attention`,
      });
      const zc = captures?.z;
      if (zc) {
        const width = H * hd;
        zc.rows.forEach((r, i) => rec.copy(s.z.buffer, r * width * 4, zc.dst.buffer, (l * zc.rows.length + i) * width * 4, width * 4));
      }
      matmul(ctx, rec, { x: rows(s.z), w: L.o, b: L.ob, residual: rows(s.h), out: rows(s.h2) });
      layerNorm(ctx, rec, { x: rows(s.h2), w: L.ln2w, b: L.ln2b, eps, out: rows(s.n) });
      matmul(ctx, rec, { x: rows(s.n), w: L.fc1, b: L.fc1b, out: rows(s.f), act: cfg.act });
      matmul(ctx, rec, { x: rows(s.f), w: L.fc2, b: L.fc2b, residual: rows(s.h2), out: rows(s.h) });
      copyState(l + 1);
    }
    return s.h;
  }
}
