// The pre-norm ViT block stack every vision tower shares (CLIP for LLaVA, Qwen2-VL, Qwen2.5-VL):
//   x = x + proj(attn(norm1(x)));  x = x + mlp(norm2(x))
// with the norm (LayerNorm with bias / RMSNorm), the MLP (fc1 -> act -> fc2, or SwiGLU gate/up/down, biases
// optional), the rotary (none, or a per-row (cos, sin) table: Qwen's 2-D vision rotary) and which keys each query
// row sees (all, or per-row key ranges per layer: one block per image, Qwen2.5-VL windows) as parameters. q, k and
// v live side by side in one [n, 3E] scratch (a fused qkv weight writes it at once, separate ones into their
// column slices), and the attention kernel reads them as strided views. Per-head interventions and captures are
// kernel inputs as in the decoder.

import type { BufferRef, GpuContext, Recorder } from '../gpu/context.js';
import { RowSplitTensor, type Tensor, type Weight } from '../gpu/tensor.js';
import type { Activation } from '../../kernels/activation.js';
import { rows, type RowView } from '../../kernels/common.js';
import { matmul, matmulGated } from '../../kernels/matmul.js';
import { layerNorm, rmsNorm } from '../../kernels/norm.js';
import { attention } from '../../kernels/attention.js';
import { rope } from '../../kernels/rope.js';
import type { StackPart, WeightLoader } from './weights.js';
import { headParamSlotBytes, headParamTable, headVectorSlotBytes, headVectorTable } from '../spec/head-params.js';
import type { InterventionSpec, TowerDims } from '../spec/spec.js';

export interface VitBlockConfig {
  hidden: number;
  heads: number;
  headDim: number;
  /** MLP width (fc1 output, or the SwiGLU gate/up width). */
  intermediate: number;
  eps: number;
  norm: 'layernorm' | 'rmsnorm';
  mlp: 'fc' | 'gated';
  act: Activation;
}

/** Where a family keeps a block's tensors, relative to the block prefix (e.g. `encoder.layers.3.`). */
export interface VitBlockNames {
  norm1: string;
  norm2: string;
  /** One fused [3E, E] qkv projection (Qwen `attn.qkv`), or three (CLIP `self_attn.{q,k,v}_proj`). */
  qkv: { fused: string } | { q: string; k: string; v: string };
  o: string;
  /** fc: up = fc1, down = fc2; gated: gate, up, down. */
  mlp: { fc1: string; fc2: string } | { gate: string; up: string; down: string };
  /** Whether attention / MLP projections carry biases (all the supported towers do). */
  bias: boolean;
}

interface NormW {
  w: Tensor;
  b: Tensor | null;
}

interface VitBlock {
  norm1: NormW;
  norm2: NormW;
  qkv: { fused: Weight; bias: Tensor | null } | { q: Weight; k: Weight; v: Weight; qb: Tensor | null; kb: Tensor | null; vb: Tensor | null };
  o: Weight;
  ob: Tensor | null;
  gate: Weight | null;
  gateBias: Tensor | null;
  up: Weight;
  upBias: Tensor | null;
  down: Weight;
  downBias: Tensor | null;
}

export interface VitCaptures {
  /** Per layer: pattern tensor [heads, n, n] to fill. */
  pattern?: Map<number, Tensor>;
  /** Hidden states by index (0 = the blocks' input, i = output of block i-1), copied whole. */
  residual?: Map<number, Tensor>;
  /** z rows to copy per layer into dst at consecutive slots: [layers, rows.length, E]. */
  z?: { rows: number[]; dst: Tensor };
}

export interface VitPass {
  /** Residual stream [n, E], the blocks' input on entry and the output of block upTo-1 on return. */
  h: Tensor;
  n: number;
  /** Run blocks 0..upTo-1. */
  upTo: number;
  /** f32 (cos, sin) table [n, headDim/2, 2] applied to q and k of every block, or null (no rotary). */
  rotary?: Tensor | null;
  /** Per-layer key ranges (u32 [n, 2] per query row), or null for all keys. */
  keyRanges?: (layer: number) => BufferRef | null;
  /** With key ranges: capture patterns relative to each row's range, [heads, n, patternKeys] (the kernel's patternKeys). */
  patternKeys?: number;
  /** States to copy as they pass (hidden-state index -> destination [n, E]). */
  keep?: Map<number, Tensor>;
  captures?: VitCaptures;
}

export class VitEncoder {
  readonly blocks: VitBlock[] = [];
  /** [layers] x 256-byte-aligned HeadParams slots (head-params.ts). */
  headParams!: GPUBuffer;
  private headVectors: GPUBuffer | null = null;
  private vectorsOn = false;
  /** Zeros: no vision key is an image-token key in the temperature sense. */
  private noImageKeys: GPUBuffer | null = null;
  private noImageKeysLen = 0;
  private scratchRows = 0;
  private s!: Record<'h2' | 'n' | 'qkv' | 'z' | 'f', Tensor>;

  constructor(
    private ctx: GpuContext,
    readonly cfg: VitBlockConfig,
  ) {}

  /** Load `layers` blocks named `${prefix(l)}${names.*}.{weight,bias}`. */
  static async load(
    ctx: GpuContext,
    cfg: VitBlockConfig,
    layers: number,
    w: WeightLoader,
    name: (suffix: string) => string,
    blockPrefix: (l: number) => string,
    names: VitBlockNames,
  ): Promise<VitEncoder> {
    const enc = new VitEncoder(ctx, cfg);
    const { hidden: E, intermediate: F } = cfg;
    const bias = (n: string, shape: number[]) => (names.bias ? w.loadTensor(name(n + '.bias'), shape) : Promise.resolve(null));
    const stackedBias = async (parts: StackPart[]): Promise<Tensor> => {
      const b = await w.loadStacked(parts, `${parts[0].name} + k + v`);
      if (b instanceof RowSplitTensor) throw new Error(`internal: ${b.label} is too large for one binding`);
      return b;
    };
    for (let l = 0; l < layers; l++) {
      const p = blockPrefix(l);
      const norm = async (n: string): Promise<NormW> => ({
        w: await w.loadTensor(name(p + n + '.weight'), [E]),
        b: cfg.norm === 'layernorm' ? await w.loadTensor(name(p + n + '.bias'), [E]) : null,
      });
      const qn = names.qkv;
      // Separate q / k / v are stacked into one [3E, E] weight where the checkpoint allows (WeightLoader.stackReason):
      // one matmul into the [n, 3E] scratch instead of three.
      const stack = (kind: 'weight' | 'bias') =>
        'fused' in qn ? [] : [qn.q, qn.k, qn.v].map((t) => ({ name: name(`${p}${t}.${kind}`), expected: kind === 'weight' ? [E, E] : [E] }));
      const stackable = !('fused' in qn) && !w.stackReason(stack('weight')) && !(names.bias && w.stackReason(stack('bias')));
      const qkv =
        'fused' in qn
          ? { fused: await w.load(name(p + qn.fused + '.weight'), [3 * E, E]), bias: await bias(p + qn.fused, [3 * E]) }
          : stackable
            ? { fused: await w.loadStacked(stack('weight'), `${name(p + qn.q + '.weight')} + k + v`), bias: names.bias ? await stackedBias(stack('bias')) : null }
            : {
              q: await w.load(name(p + qn.q + '.weight'), [E, E]),
              qb: await bias(p + qn.q, [E]),
              k: await w.load(name(p + qn.k + '.weight'), [E, E]),
              kb: await bias(p + qn.k, [E]),
              v: await w.load(name(p + qn.v + '.weight'), [E, E]),
              vb: await bias(p + qn.v, [E]),
            };
      const m = names.mlp;
      const block: VitBlock = {
        norm1: await norm(names.norm1),
        qkv,
        o: await w.load(name(p + names.o + '.weight'), [E, E]),
        ob: await bias(p + names.o, [E]),
        norm2: await norm(names.norm2),
        ...('fc1' in m
          ? {
              gate: null,
              gateBias: null,
              up: await w.load(name(p + m.fc1 + '.weight'), [F, E]),
              upBias: await bias(p + m.fc1, [F]),
              down: await w.load(name(p + m.fc2 + '.weight'), [E, F]),
              downBias: await bias(p + m.fc2, [E]),
            }
          : {
              gate: await w.load(name(p + m.gate + '.weight'), [F, E]),
              gateBias: await bias(p + m.gate, [F]),
              up: await w.load(name(p + m.up + '.weight'), [F, E]),
              upBias: await bias(p + m.up, [F]),
              down: await w.load(name(p + m.down + '.weight'), [E, F]),
              downBias: await bias(p + m.down, [E]),
            }),
      };
      enc.blocks.push(block);
    }
    return enc;
  }

  get layers(): number {
    return this.blocks.length;
  }

  /** GPU buffers beyond the weights (separate from load so a check-only load allocates nothing). */
  prepare(): void {
    this.headParams = this.ctx.createBuffer(
      Math.max(1, this.layers) * headParamSlotBytes(this.cfg.heads),
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
      'vision.head_params',
    );
  }

  /** This run's vision-tower head parameters and vectors from the intervention spec. */
  writeSpec(spec: InterventionSpec, dims: TowerDims): void {
    this.ctx.write(this.headParams, 0, headParamTable(spec, 'vision', dims));
    this.writeHeadVectors(headVectorTable(spec, 'vision', dims));
  }

  /** This run's head vectors (head-params.ts headVectorTable); null: attention neither binds nor reads any. */
  writeHeadVectors(table: Float32Array | null): void {
    this.vectorsOn = table !== null;
    if (!table) return;
    const { ctx, cfg } = this;
    this.headVectors ??= ctx.createBuffer(
      Math.max(1, this.layers) * headVectorSlotBytes(cfg.heads, cfg.headDim),
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
      'vision.head_vectors',
    );
    ctx.write(this.headVectors, 0, table);
  }

  /** Bytes of scratch a pass over n tokens allocates, and its largest tensor (for the per-run memory check). */
  scratchBytes(n: number): { total: number; largest: number } {
    const { hidden: E, intermediate: F } = this.cfg;
    return { total: n * (E * 6 + F + 1) * 4, largest: n * Math.max(3 * E, F) * 4 };
  }

  private ensureScratch(n: number): void {
    if (n <= this.scratchRows) return;
    this.releaseScratch();
    const { ctx } = this;
    const { hidden: E, intermediate: F } = this.cfg;
    const a = (cols: number, label: string) => ctx.activation([n, cols], `vision.${label}`);
    // f: the MLP's hidden activations, act(fc1) or the fused act(gate) * up.
    this.s = { h2: a(E, 'h2'), n: a(E, 'normed'), qkv: a(3 * E, 'qkv'), z: a(E, 'z'), f: a(F, 'mlp') };
    this.noImageKeys = ctx.createBuffer(n * 4, GPUBufferUsage.STORAGE, 'vision.key_is_image');
    this.noImageKeysLen = n;
    this.scratchRows = n;
  }

  private releaseScratch(): void {
    if (this.s) for (const t of Object.values(this.s)) this.ctx.destroyBuffer(t.buffer);
    if (this.noImageKeys) this.ctx.destroyBuffer(this.noImageKeys);
    this.noImageKeys = null;
    this.scratchRows = 0;
  }

  private norm(rec: Recorder, x: RowView, nw: NormW, out: RowView): void {
    if (this.cfg.norm === 'layernorm') layerNorm(this.ctx, rec, { x, w: nw.w, b: nw.b, eps: this.cfg.eps, out });
    else rmsNorm(this.ctx, rec, { x, w: nw.w, eps: this.cfg.eps, out });
  }

  /** Record blocks 0..upTo-1 over the n rows of `pass.h`. */
  record(rec: Recorder, pass: VitPass): Tensor {
    const { ctx, cfg } = this;
    const { heads: H, headDim: hd, hidden: E } = cfg;
    const { h, n, upTo } = pass;
    if (upTo > this.layers) throw new Error(`vision hidden state ${upTo} needs ${upTo} blocks, ${this.layers} loaded`);
    this.ensureScratch(n);
    const s = this.s;
    const slot = headParamSlotBytes(H);
    const vslot = headVectorSlotBytes(H, hd);
    const vectors = this.vectorsOn ? this.headVectors : null;
    // One pass over all tokens: the only steering scope the spec allows here, "all" (code 1), is every row.
    const steer: [number, number][] = [[0, n]];
    const hv = rows(h, 0, n);
    const copyState = (idx: number) => {
      for (const dst of [pass.keep?.get(idx), pass.captures?.residual?.get(idx)]) if (dst) rec.copy(h.buffer, 0, dst.buffer, 0, n * E * 4);
    };
    copyState(0);
    const col = (c: number) => ({ tensor: s.qkv, rows: n, cols: E, offset: c * E, stride: 3 * E });
    for (let l = 0; l < upTo; l++) {
      const B = this.blocks[l];
      this.norm(rec, hv, B.norm1, rows(s.n, 0, n));
      const x = rows(s.n, 0, n);
      if ('fused' in B.qkv) {
        matmul(ctx, rec, { x, w: B.qkv.fused, b: B.qkv.bias, out: rows(s.qkv, 0, n) });
      } else {
        matmul(ctx, rec, { x, w: B.qkv.q, b: B.qkv.qb, out: col(0) });
        matmul(ctx, rec, { x, w: B.qkv.k, b: B.qkv.kb, out: col(1) });
        matmul(ctx, rec, { x, w: B.qkv.v, b: B.qkv.vb, out: col(2) });
      }
      if (pass.rotary) {
        // q and k sit side by side in each [3E] row: their 2H heads turn in one call with the same table.
        rope(ctx, rec, { x: s.qkv, rows: n, heads: 2 * H, headDim: hd, rowStride: 3 * E, colOffset: 0, table: pass.rotary });
      }
      attention(ctx, rec, {
        q: s.qkv,
        qStride: 3 * E,
        rows: n,
        heads: H,
        kvHeads: H,
        headDim: hd,
        k: s.qkv,
        v: s.qkv,
        kOffset: E,
        vOffset: 2 * E,
        kvStride: 3 * E,
        nKeys: n,
        causal: false,
        pos0: 0,
        keyRanges: pass.keyRanges?.(l) ?? null,
        patternKeys: pass.patternKeys,
        headParams: { buffer: this.headParams, offset: l * slot, size: slot },
        headVectors: vectors && { buffer: vectors, offset: l * vslot, size: vslot },
        steerRows: steer,
        keyIsImage: this.noImageKeys!,
        z: s.z,
        pattern: pass.captures?.pattern?.get(l) ?? null,
        label: `vision.${l}.attention`,
      });
      const zc = pass.captures?.z;
      if (zc) {
        const width = H * hd;
        zc.rows.forEach((r, i) => rec.copy(s.z.buffer, r * width * 4, zc.dst.buffer, (l * zc.rows.length + i) * width * 4, width * 4));
      }
      matmul(ctx, rec, { x: rows(s.z, 0, n), w: B.o, b: B.ob, residual: hv, out: rows(s.h2, 0, n) });
      this.norm(rec, rows(s.h2, 0, n), B.norm2, rows(s.n, 0, n));
      if (B.gate) {
        matmulGated(ctx, rec, { x: rows(s.n, 0, n), gate: B.gate, up: B.up, gateBias: B.gateBias, upBias: B.upBias, act: cfg.act, out: rows(s.f, 0, n) });
      } else {
        matmul(ctx, rec, { x: rows(s.n, 0, n), w: B.up, b: B.upBias, out: rows(s.f, 0, n), act: cfg.act });
      }
      matmul(ctx, rec, { x: rows(s.f, 0, n), w: B.down, b: B.downBias, residual: rows(s.h2, 0, n), out: hv });
      copyState(l + 1);
    }
    return h;
  }

  destroy(): void {
    this.releaseScratch();
    if (this.headVectors) this.ctx.destroyBuffer(this.headVectors);
    this.headVectors = null;
    this.vectorsOn = false;
  }
}
