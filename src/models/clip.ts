// The CLIP vision tower as LLaVA uses it: patch embedding (conv as im2col + matmul), CLS + learned positions,
// pre_layrnorm, then the shared pre-LN ViT blocks (src/models/vit.ts) with quick_gelu MLPs. post_layernorm is
// never applied to patch features (Hugging Face applies it only to the pooled CLS), so it is not loaded.

import type { GpuContext, Recorder } from '../gpu/context.js';
import type { Tensor, Weight } from '../gpu/tensor.js';
import { rows } from '../../kernels/common.js';
import { matmul } from '../../kernels/matmul.js';
import { layerNorm } from '../../kernels/norm.js';
import { im2col, positionEmbed } from '../../kernels/patch.js';
import type { VitConfig } from './config.js';
import type { WeightLoader } from './weights.js';
import { VitEncoder, type VitBlockNames, type VitCaptures } from './vit.js';

/** CLIP's encoder-layer tensor names (SigLIP, Idefics3's vision tower, uses the same). */
export const CLIP_BLOCK_NAMES: VitBlockNames = {
  norm1: 'layer_norm1',
  norm2: 'layer_norm2',
  qkv: { q: 'self_attn.q_proj', k: 'self_attn.k_proj', v: 'self_attn.v_proj' },
  o: 'self_attn.out_proj',
  mlp: { fc1: 'mlp.fc1', fc2: 'mlp.fc2' },
  bias: true,
};

export type VisionCaptures = VitCaptures;

/** CLIP embeddings + pre_layrnorm in front of the shared ViT blocks (LayerNorm, q/k/v/out_proj, fc1/fc2). */
export class ClipVisionTower {
  patchWeight!: Weight;
  classEmbedding!: Tensor;
  positionEmbedding!: Tensor;
  preNormW!: Tensor;
  preNormB!: Tensor;
  encoder!: VitEncoder;
  private s!: Record<'patches' | 'pe' | 'h' | 'n', Tensor>;
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
    const { hidden: E, channels: C, patchSize: P } = cfg;
    t.patchWeight = await w.load(name('embeddings.patch_embedding.weight'), [E, C, P, P], [E, C * P * P]);
    t.classEmbedding = await w.loadTensor(name('embeddings.class_embedding'), [E]);
    t.positionEmbedding = await w.loadTensor(name('embeddings.position_embedding.weight'), [t.tokens, E]);
    t.preNormW = await w.loadTensor(name('pre_layrnorm.weight'), [E]);
    t.preNormB = await w.loadTensor(name('pre_layrnorm.bias'), [E]);
    // All layers are loaded so captures can reach past the feature layer; a plain run stops at the feature layer.
    t.encoder = await VitEncoder.load(
      ctx,
      { hidden: E, heads: cfg.heads, headDim: cfg.headDim, intermediate: cfg.intermediate, eps: cfg.eps, norm: 'layernorm', mlp: 'fc', act: cfg.act },
      cfg.layers,
      w,
      name,
      (l) => `encoder.layers.${l}.`,
      CLIP_BLOCK_NAMES,
    );
    return t;
  }

  get headParams(): GPUBuffer {
    return this.encoder.headParams;
  }

  /** This run's head vectors (head-params.ts headVectorTable); null: attention neither binds nor reads any. */
  writeHeadVectors(table: Float32Array | null): void {
    this.encoder.writeHeadVectors(table);
  }

  /** GPU buffers the forward needs beyond the weights (separate from load so a check-only load allocates nothing). */
  prepare(): void {
    this.encoder.prepare();
    const { ctx, cfg } = this;
    const n = this.tokens;
    const { hidden: E, channels: C, patchSize: P } = cfg;
    this.s = {
      patches: ctx.activation([n - 1, C * P * P], 'vision.patches'),
      pe: ctx.activation([n - 1, E], 'vision.patch_embeds'),
      h: ctx.activation([n, E], 'vision.h'),
      n: ctx.activation([n, E], 'vision.embeddings'),
    };
  }

  /**
   * Record the tower over one image's pixel values [C, H, W] through hidden state `upTo` (HF index) and return
   * the tensor holding it. States listed in `keep` are copied out as they pass (for multi-layer features).
   */
  record(rec: Recorder, pixels: Tensor, upTo: number, keep: Map<number, Tensor>, captures?: VisionCaptures): Tensor {
    const { ctx, cfg, s } = this;
    im2col(ctx, rec, { pixels, patch: cfg.patchSize, out: s.patches });
    matmul(ctx, rec, { x: rows(s.patches), w: this.patchWeight, out: rows(s.pe) });
    positionEmbed(ctx, rec, { patches: s.pe, cls: this.classEmbedding, pos: this.positionEmbedding, out: s.n });
    layerNorm(ctx, rec, { x: rows(s.n), w: this.preNormW, b: this.preNormB, eps: cfg.eps, out: rows(s.h) });
    return this.encoder.record(rec, { h: s.h, n: this.tokens, upTo, keep, captures });
  }

  destroy(): void {
    this.encoder.destroy();
    for (const t of Object.values(this.s ?? {})) this.ctx.destroyBuffer(t.buffer);
  }
}
