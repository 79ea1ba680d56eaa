// The decoder layer stack every family's language model shares (Llama for LLaVA, Qwen2 for Qwen2-VL / 2.5-VL):
// RMSNorm, rotate_half RoPE from a per-row (cos, sin) table the model builds (1-D or M-RoPE: the decoder does not
// know which), GQA attention with per-head interventions, optional q/k/v and o biases, gated MLP. Records kernel
// calls only; the KV cache lives here.

import type { GpuContext, Recorder } from '../gpu/context.js';
import { RowSplitTensor, type Tensor, type Weight } from '../gpu/tensor.js';
import { rows } from '../../kernels/common.js';
import { matmul, matmulGated } from '../../kernels/matmul.js';
import { rmsNorm } from '../../kernels/norm.js';
import { rope } from '../../kernels/rope.js';
import { attention, imageKeySpanAfter } from '../../kernels/attention.js';
import { embed } from '../../kernels/embed.js';
import type { DecoderConfig } from './config.js';
import type { WeightLoader } from './weights.js';
import { headParamSlotBytes, headVectorSlotBytes } from '../spec/head-params.js';

/**
 * The q, k and v projections: stacked by rows in one weight [(heads + 2 kvHeads) * headDim, hidden] where the
 * checkpoint allows (WeightLoader.stackReason), so one matmul reads the normed row once and writes q, k and v
 * where each belongs (split outputs); else the three as stored.
 */
export type AttentionInput =
  | { fused: Weight; bias: Tensor | null }
  | { q: Weight; k: Weight; v: Weight; qb: Tensor | null; kb: Tensor | null; vb: Tensor | null };

interface LayerWeights {
  inputNorm: Tensor;
  qkv: AttentionInput;
  o: Weight;
  oBias: Tensor | null;
  postNorm: Tensor;
  gate: Weight;
  up: Weight;
  down: Weight;
  gateBias: Tensor | null;
  upBias: Tensor | null;
  downBias: Tensor | null;
}

/** Where each capture of one forward goes; buffers are owned by the caller. */
export interface DecoderCaptures {
  /** Per layer: pattern tensor [heads, rows, nKeys] to fill. */
  pattern?: Map<number, Tensor>;
  /** z rows to copy: for each (layer), copy the listed rows into dst at consecutive slots. */
  z?: { rows: number[]; dst: Tensor };
  /** Hidden states (HF indices: 0 = embeddings, i = output of layer i-1) copied whole into dst. */
  residual?: Map<number, Tensor>;
}

export interface DecoderStep {
  rows: number;
  pos0: number;
  /** Token ids buffer (u32) and the element offset of this step's first id. */
  ids: GPUBuffer;
  idsOffset: number;
  /** The step's ids when the caller knows them (decode): the embedding binds only their table rows. */
  knownIds?: readonly number[] | null;
  /** Image features scattered over image-token rows: i32 row map and f32 data. */
  features?: { map: GPUBuffer; data: Tensor } | null;
  /** f32 rotary table [rows, headDim/2, 2] for this step's positions. */
  rotary: Tensor;
  tempRows: [number, number];
  /** Query rows [begin, end) of this step in each steering scope (head-params.ts steerRows). */
  steerRows: [number, number][];
  /** Attention knockout of this step: a bitset buffer with one 256-byte-aligned slot per layer; only `layers` bind it. */
  knockout?: { buffer: GPUBuffer; slotBytes: number; words: number; layers: Set<number> } | null;
  /**
   * patch_z of this step (head-params.ts patchCall, uploaded): patched layers bind their slot of `buffer` as head
   * vectors (the run's vectors, then the row map and the patch vectors at the given element offsets); the other
   * layers bind the run's head vectors as usual.
   */
  patch?: { buffer: GPUBuffer; slotBytes: number; slots: Map<number, number>; mapOffset: number; vectorOffset: number } | null;
  /**
   * The rows are independent variants of the token at position `variantPrefix` (written to cache slots pos0..):
   * each attends to keys [0, variantPrefix) and to itself only (the attention kernel's VARIANTS). Absent: causal.
   */
  variantPrefix?: number;
  captures?: DecoderCaptures;
}

export class Decoder {
  readonly layers: LayerWeights[] = [];
  embedTokens!: Weight;
  finalNorm!: Tensor;
  lmHead!: Weight;
  /** KV cache per layer: [maxLen, kvHeads * headDim] f32. */
  private kCache: Tensor[] = [];
  private vCache: Tensor[] = [];
  maxLen = 0;
  /** Scratch activations, sized for `scratchRows`. */
  private scratchRows = 0;
  private s!: Record<'h' | 'h2' | 'n' | 'q' | 'z' | 'a', Tensor>;
  /** [layers] x 256-byte-aligned slots of HeadParams per head (head-params.ts). */
  headParams!: GPUBuffer;
  /** [layers] x 256-byte-aligned slots of [heads, 2, headDim] f32 (mean, add); allocated when a spec first needs it. */
  private headVectors: GPUBuffer | null = null;
  /** Whether this run's spec has mean_ablate / steer entries for the text tower (only then attention binds the vectors). */
  private vectorsOn = false;
  /** u32 per position: 1 where the token is an image token. */
  keyIsImage!: GPUBuffer;
  /** The image positions as one run [begin, end) while keyIsImage holds exactly that (attention's imageKeySpan); else null. */
  imageKeySpan: [number, number] | null = null;

  constructor(
    private ctx: GpuContext,
    readonly cfg: DecoderConfig,
  ) {}

  static async load(ctx: GpuContext, cfg: DecoderConfig, w: WeightLoader, prefixes: string[], lmHeadNames: string[]): Promise<Decoder> {
    const dec = new Decoder(ctx, cfg);
    const name = (suffix: string) => w.resolve(prefixes.map((p) => p + suffix));
    const opt = (suffix: string, shape: number[], want: boolean) => {
      if (!want) return Promise.resolve(null);
      return w.loadTensor(name(suffix), shape);
    };
    const { hidden: D, intermediate: F, heads: H, kvHeads: KV, headDim: hd, vocab: V } = cfg;
    dec.embedTokens = await w.load(name('embed_tokens.weight'), [V, D]);
    for (let l = 0; l < cfg.layers; l++) {
      const p = `layers.${l}.`;
      const qb = cfg.qkvBias;
      const mb = cfg.mlpBias;
      const inputNorm = await w.loadTensor(name(p + 'input_layernorm.weight'), [D]);
      const proj = (x: string, kind: 'weight' | 'bias', n: number) => ({ name: name(`${p}self_attn.${x}_proj.${kind}`), expected: kind === 'weight' ? [n, D] : [n] });
      const stack = (kind: 'weight' | 'bias') => [proj('q', kind, H * hd), proj('k', kind, KV * hd), proj('v', kind, KV * hd)];
      const stackLabel = (kind: string) => name(`${p}self_attn.q_proj.${kind}`).replace(/q_proj\.(\w+)$/, `{q,k,v}_proj.$1`);
      let qkv: AttentionInput;
      if (!w.stackReason(stack('weight')) && !(qb && w.stackReason(stack('bias')))) {
        const fused = await w.loadStacked(stack('weight'), stackLabel('weight'));
        const bias = qb ? await w.loadStacked(stack('bias'), stackLabel('bias')) : null;
        if (bias instanceof RowSplitTensor) throw new Error(`internal: ${bias.label} is too large for one binding`);
        qkv = { fused, bias };
      } else {
        qkv = {
          q: await w.load(name(p + 'self_attn.q_proj.weight'), [H * hd, D]),
          k: await w.load(name(p + 'self_attn.k_proj.weight'), [KV * hd, D]),
          v: await w.load(name(p + 'self_attn.v_proj.weight'), [KV * hd, D]),
          qb: await opt(p + 'self_attn.q_proj.bias', [H * hd], qb),
          kb: await opt(p + 'self_attn.k_proj.bias', [KV * hd], qb),
          vb: await opt(p + 'self_attn.v_proj.bias', [KV * hd], qb),
        };
      }
      dec.layers.push({
        inputNorm,
        qkv,
        o: await w.load(name(p + 'self_attn.o_proj.weight'), [D, H * hd]),
        oBias: await opt(p + 'self_attn.o_proj.bias', [D], cfg.oBias),
        postNorm: await w.loadTensor(name(p + 'post_attention_layernorm.weight'), [D]),
        gate: await w.load(name(p + 'mlp.gate_proj.weight'), [F, D]),
        up: await w.load(name(p + 'mlp.up_proj.weight'), [F, D]),
        down: await w.load(name(p + 'mlp.down_proj.weight'), [D, F]),
        gateBias: await opt(p + 'mlp.gate_proj.bias', [F], mb),
        upBias: await opt(p + 'mlp.up_proj.bias', [F], mb),
        downBias: await opt(p + 'mlp.down_proj.bias', [D], mb),
      });
    }
    dec.finalNorm = await w.loadTensor(name('norm.weight'), [D]);
    const head = lmHeadNames.find((n) => w.has(n));
    if (head) dec.lmHead = await w.load(head, [V, D]);
    else if (cfg.tieEmbeddings) dec.lmHead = dec.embedTokens;
    else w.resolve(lmHeadNames); // throws the missing-tensor error
    return dec;
  }

  /** GPU buffers beyond the weights (separate from load so a check-only load allocates nothing). */
  prepare(): void {
    const { ctx, cfg } = this;
    const H = cfg.heads;
    this.headParams = ctx.createBuffer(
      cfg.layers * headParamSlotBytes(H),
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
      'text.head_params',
    );
  }

  /** This run's head vectors (head-params.ts headVectorTable); null: attention neither binds nor reads any. */
  writeHeadVectors(table: Float32Array | null): void {
    this.vectorsOn = table !== null;
    if (!table) return;
    const { ctx, cfg } = this;
    this.headVectors ??= ctx.createBuffer(
      cfg.layers * headVectorSlotBytes(cfg.heads, cfg.headDim),
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
      'text.head_vectors',
    );
    ctx.write(this.headVectors, 0, table);
  }

  /** (Re)allocate the KV cache for `maxLen` positions. */
  allocateCache(maxLen: number): void {
    if (maxLen > this.cfg.maxPositions) {
      throw new Error(`a context of ${maxLen} tokens exceeds max_position_embeddings (${this.cfg.maxPositions})`);
    }
    if (maxLen <= this.maxLen) return;
    for (const t of [...this.kCache, ...this.vCache]) this.ctx.destroyBuffer(t.buffer);
    if (this.keyIsImage) this.ctx.destroyBuffer(this.keyIsImage);
    const kvWidth = this.cfg.kvHeads * this.cfg.headDim;
    this.kCache = [];
    this.vCache = [];
    for (let l = 0; l < this.cfg.layers; l++) {
      this.kCache.push(this.ctx.activation([maxLen, kvWidth], `text.${l}.k_cache`));
      this.vCache.push(this.ctx.activation([maxLen, kvWidth], `text.${l}.v_cache`));
    }
    this.keyIsImage = this.ctx.createBuffer(maxLen * 4, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, 'text.key_is_image');
    this.imageKeySpan = [0, 0]; // a new buffer is zeros
    this.maxLen = maxLen;
  }

  private ensureScratch(n: number): void {
    if (n <= this.scratchRows) return;
    if (this.s) for (const t of Object.values(this.s)) this.ctx.destroyBuffer(t.buffer);
    const { hidden: D, intermediate: F, heads: H, headDim: hd } = this.cfg;
    const a = (cols: number, label: string) => this.ctx.activation([n, cols], `text.${label}`);
    this.s = { h: a(D, 'h'), h2: a(D, 'h2'), n: a(D, 'normed'), q: a(H * hd, 'q'), z: a(H * hd, 'z'), a: a(F, 'mlp_act') };
    this.scratchRows = n;
  }

  /** Mark which cache positions [pos0, pos0 + flags.length) hold image tokens. */
  writeImageKeys(pos0: number, flags: Uint32Array): void {
    this.ctx.write(this.keyIsImage, pos0 * 4, flags);
    this.imageKeySpan = imageKeySpanAfter(this.imageKeySpan, pos0, flags, this.maxLen);
  }

  /**
   * Record one forward over `step.rows` new tokens at positions pos0.. into the cache; leaves the final hidden
   * states in the returned tensor (rows 0..rows-1), before the final norm.
   */
  record(rec: Recorder, step: DecoderStep): Tensor {
    const { hidden: D, heads: H, kvHeads: KV, headDim: hd, eps } = this.cfg;
    const n = step.rows;
    if (step.pos0 + n > this.maxLen) throw new Error(`positions ${step.pos0}..${step.pos0 + n - 1} exceed the KV cache of ${this.maxLen}`);
    this.ensureScratch(n);
    const { h, h2, n: normed, q, z, a: act } = this.s;
    const ctx = this.ctx;
    const kvWidth = KV * hd;
    const slot = headParamSlotBytes(H);
    const vslot = headVectorSlotBytes(H, hd);
    const vectors = this.vectorsOn ? this.headVectors : null;
    embed(ctx, rec, {
      ids: step.ids,
      idsOffset: step.idsOffset,
      rows: n,
      table: this.embedTokens,
      features: step.features ?? null,
      knownIds: step.knownIds ?? null,
      out: rows(h, 0, n),
    });
    step.captures?.residual?.get(0) && rec.copy(h.buffer, 0, step.captures.residual.get(0)!.buffer, 0, n * D * 4);
    const nKeys = step.pos0 + n;
    this.layers.forEach((L, l) => {
      // The norms ride in the next matmul (RowNorm): folded into its kernel where normFolds says (decode on GPUs),
      // else a pass into `normed` first.
      const norm1 = { w: L.inputNorm, eps, scratch: rows(normed, 0, n) };
      const kc = this.kCache[l];
      const vc = this.vCache[l];
      const cacheRows = { rows: n, cols: kvWidth, offset: step.pos0 * kvWidth, stride: kvWidth };
      const qOut = rows(q, 0, n);
      const kOut = { tensor: kc, ...cacheRows };
      const vOut = { tensor: vc, ...cacheRows };
      if ('fused' in L.qkv) {
        matmul(ctx, rec, { x: rows(h, 0, n), norm: norm1, w: L.qkv.fused, b: L.qkv.bias, out: [qOut, kOut, vOut] });
      } else {
        // Three products of one normalised x: the norm once, as its own pass.
        rmsNorm(ctx, rec, { x: rows(h, 0, n), w: L.inputNorm, eps, out: rows(normed, 0, n) });
        matmul(ctx, rec, { x: rows(normed, 0, n), w: L.qkv.q, b: L.qkv.qb, out: qOut });
        matmul(ctx, rec, { x: rows(normed, 0, n), w: L.qkv.k, b: L.qkv.kb, out: kOut });
        matmul(ctx, rec, { x: rows(normed, 0, n), w: L.qkv.v, b: L.qkv.vb, out: vOut });
      }
      // q rows and this step's K-cache rows turn in one dispatch (same positions, same table).
      rope(ctx, rec, { x: q, rows: n, heads: H, headDim: hd, table: step.rotary, also: { x: kc, rowOffset: step.pos0, heads: KV } });
      const patchSlot = step.patch?.slots.get(l);
      attention(ctx, rec, {
        q,
        rows: n,
        heads: H,
        kvHeads: KV,
        headDim: hd,
        k: kc,
        v: vc,
        nKeys,
        causal: true,
        pos0: step.pos0,
        headParams: { buffer: this.headParams, offset: l * slot, size: slot },
        headVectors: patchSlot !== undefined ? { buffer: step.patch!.buffer, offset: patchSlot * step.patch!.slotBytes, size: step.patch!.slotBytes } : vectors && { buffer: vectors, offset: l * vslot, size: vslot },
        patch: patchSlot !== undefined ? { map: step.patch!.mapOffset, vectors: step.patch!.vectorOffset } : null,
        variants: step.variantPrefix !== undefined ? { prefix: step.variantPrefix } : null,
        keyIsImage: this.keyIsImage,
        imageKeySpan: this.imageKeySpan,
        tempRows: step.tempRows,
        steerRows: step.steerRows,
        knockout:
          step.knockout && step.knockout.layers.has(l)
            ? { bits: { buffer: step.knockout.buffer, offset: l * step.knockout.slotBytes, size: step.knockout.slotBytes }, words: step.knockout.words }
            : null,
        z,
        pattern: step.captures?.pattern?.get(l) ?? null,
        label: `text.${l}.attention`,
      });
      const zc = step.captures?.z;
      if (zc) {
        const width = H * hd;
        zc.rows.forEach((r, i) => rec.copy(z.buffer, r * width * 4, zc.dst.buffer, ((l * zc.rows.length + i) * width) * 4, width * 4));
      }
      matmul(ctx, rec, { x: rows(z, 0, n), w: L.o, b: L.oBias, residual: rows(h, 0, n), out: rows(h2, 0, n) });
      const norm2 = { w: L.postNorm, eps, scratch: rows(normed, 0, n) };
      matmulGated(ctx, rec, { x: rows(h2, 0, n), norm: norm2, gate: L.gate, up: L.up, gateBias: L.gateBias, upBias: L.upBias, act: this.cfg.act, out: rows(act, 0, n) });
      matmul(ctx, rec, { x: rows(act, 0, n), w: L.down, b: L.downBias, residual: rows(h2, 0, n), out: rows(h, 0, n) });
      const res = step.captures?.residual?.get(l + 1);
      if (res) rec.copy(h.buffer, 0, res.buffer, 0, n * D * 4);
    });
    return h;
  }

  /** Final norm + lm_head over rows [first, first+count) of the hidden states into `logits` [count, vocab]. */
  recordLogits(rec: Recorder, hidden: Tensor, first: number, count: number, logits: Tensor): void {
    const normed = this.s.n;
    const norm = { w: this.finalNorm, eps: this.cfg.eps, scratch: rows(normed, 0, count) };
    matmul(this.ctx, rec, { x: rows(hidden, first, count), norm, w: this.lmHead, out: rows(logits, 0, count) });
  }

  destroy(): void {
    for (const t of [...this.kCache, ...this.vCache]) this.ctx.destroyBuffer(t.buffer);
    if (this.headVectors) this.ctx.destroyBuffer(this.headVectors);
    this.headVectors = null;
    this.vectorsOn = false;
    if (this.s) for (const t of Object.values(this.s)) this.ctx.destroyBuffer(t.buffer);
  }
}

