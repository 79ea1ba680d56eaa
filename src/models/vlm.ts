// The one model class every family runs through: a vision encoder (the family's part: towers + projector, which
// writes one feature row per image token), the shared decoder, and a rotary position scheme (1-D or M-RoPE).
// `run` is written once here: features scattered over the image-token rows (Hugging Face masked_scatter), prefill
// with interventions and captures in one command encoder, then greedy or sampled decoding with one small readback
// per token. No state of one run survives into the next except buffers (positions and rope deltas are per run),
// and, for prefix reuse (`reuse`, AdaptVis's second pass), the identity of the last run whose KV cache and image
// features are still in those buffers.

import { type GpuContext, fmtBytes as fmt } from '../gpu/context.js';
import type { Tensor } from '../gpu/tensor.js';
import type { RgbImage } from '../io/image.js';
import type { Tokenizer } from '../io/tokenizer.js';
import { rows } from '../../kernels/common.js';
import { argmax } from '../../kernels/reduce.js';
import { Decoder, type DecoderCaptures } from './decoder.js';
import { readPattern, readZ } from './capture-read.js';
import { type Captured, type ImageInput, type ImageView, type ModelType, type PatternCaptured, type ResidualCaptured, type RunInput, type RunResult, type VlmProcessor, isTiledImage } from './model.js';
import {
  type CaptureSpec,
  type ImageTemperature,
  type InterventionSpec,
  type PatchZ,
  type ModelDims,
  type TowerDims,
  EMPTY_INTERVENTIONS,
  SpecError,
  resolvePatchRows,
  resolvePositions,
} from '../spec/spec.js';
import { type RowPatch, headParamTable, headVectorTable, knockoutBits, patchCall, rowPatchCall, steerRows, temperatureRows } from '../spec/head-params.js';
import { matmul } from '../../kernels/matmul.js';

/** What a vision encoder makes of a run's images, decided before anything is recorded. */
export interface VisionPlan {
  /** Image tokens (feature rows) per image, in prompt order. */
  features: number[];
  /** Vision sequence length per image (what vision captures index). */
  tokens: number[];
  /**
   * Feature row read by the k-th image token of the prompt, when the encoder writes its features in another order
   * (Qwen2.5-VL's window order); absent: row k.
   */
  featureRowOf?: Int32Array;
}

/**
 * Reads the vision captures of a recorded run once it was submitted: `pattern[j]` / `residual[j]` answer the j-th
 * vision entry of the capture spec's pattern / residual list, one capture per image.
 */
export type VisionCaptureReader = () => Promise<{ pattern: PatternCaptured[][]; residual: ResidualCaptured[][]; z?: Captured }>;

/**
 * A family's vision side: towers and projector. It writes the features of all images into `features` (one row per
 * image token); the plan's `featureRowOf` says which row the k-th image token of the prompt reads (identity unless
 * the encoder runs its tokens in another order, like Qwen2.5-VL's windows), so no reorder pass is needed.
 */
export interface VisionEncoder {
  readonly dims: TowerDims;
  /** Residual width of the tower (vision captures). */
  readonly width: number;
  /** Check the images (shapes, sizes) and count what they make; throws a one-line error naming the image. */
  plan(images: readonly ImageInput[]): VisionPlan;
  /**
   * Bytes of GPU scratch the vision pass of these images needs in all, and the largest single tensor of it (each is
   * bound whole): the run refuses before allocating when either does not fit.
   */
  scratchBytes(plan: VisionPlan, capture: CaptureSpec): { total: number; largest: number };
  /** Record the towers and projector; allocate per-run tensors through `alloc` (freed after the run). */
  record(
    rec: ReturnType<GpuContext['recorder']>,
    images: readonly ImageInput[],
    plan: VisionPlan,
    features: Tensor,
    capture: CaptureSpec,
    alloc: (shape: number[], label: string) => Tensor,
  ): VisionCaptureReader;
  writeHeadParams(spec: InterventionSpec): void;
  prepare(): void;
  destroy(): void;
}

/** Rotary positions of the text tokens. */
export interface TextPositions {
  /** Positions (axes x L, row-major) and the rotary table [L, headDim/2, 2] of a prompt. */
  prompt(ids: readonly number[], images: readonly ImageInput[]): { axes: number; positions: Int32Array; ropeDelta: number; table: Float32Array };
  /** The rotary table row of the token at sequence index `index` fed back during decoding. */
  decode(index: number, ropeDelta: number): Float32Array;
}

/** A run's prefix that a later run may reuse (KV cache rows and image features); `run` returns one. */
export interface PrefixHandle {
  readonly id: number;
}

/** RunInput plus prefix reuse. */
export interface PrefixRunInput extends RunInput {
  /**
   * Reuse what the run that returned this handle left in the model's buffers: the image features (no vision pass)
   * and the KV cache of every prompt row before the first row whose computation this run changes. Only the
   * image temperature and patch_z may differ between the two runs (same ids, same images, every other intervention
   * the same, no captures but logits 'last'), and no other run may have happened in between; otherwise the run is a
   * full one and `reuse.reason` says why. See `firstChangedRow` and `firstPatchChange` for which rows are recomputed.
   */
  reuse?: PrefixHandle;
  /**
   * Generated tokens to make room for in the KV cache beyond this run's own: a later reuse run that generates
   * more tokens than this one would otherwise grow (reallocate) the cache and lose the prefix.
   */
  reserveNewTokens?: number;
}

/** What a run reused of an earlier run's prefix. */
export interface ReuseInfo {
  /** Whether the earlier run's KV cache and image features were reused. */
  reused: boolean;
  /** The first prompt row recomputed (0 for a full run). */
  fromRow: number;
  /** Prompt rows recomputed (of `promptRows`). */
  rows: number;
  promptRows: number;
  /** Whether the vision tower ran. */
  vision: boolean;
  /** Why a requested reuse fell back to a full run. */
  reason?: string;
}

/** Batched variants of the last prompt row (runVariants). */
export interface VariantRunInput {
  /** The prompt and images of the run that left the prefix (`reuse`). */
  ids: number[];
  pixelValues?: ImageInput[];
  /** The run whose KV cache rows [0, L - 1) the variants read; it must have reserved room for them (reserveNewTokens). */
  reuse: PrefixHandle;
  /** Per variant, the text heads whose z at the last prompt row it replaces (layer, head, [headDim] vector). */
  variants: readonly (readonly Omit<RowPatch, 'row'>[])[];
}

export interface PrefixRunResult extends RunResult {
  /** This run's prefix, for a later run's `reuse`. */
  prefix: PrefixHandle;
  /** Present when the run was asked to reuse a prefix. */
  reuse?: ReuseInfo;
}

/** What the model keeps of its last run to check a later `reuse` against. */
interface PrefixState {
  id: number;
  ids: number[];
  images: ImageInput[];
  spec: InterventionSpec;
  cacheLen: number;
}

export interface ModelParts {
  type: ModelType;
  source: string;
  imageTokenId: number;
  decoder: Decoder;
  vision: VisionEncoder;
  positions: TextPositions;
  preprocess: (img: RgbImage) => ImageInput;
  /** The image as the model sees it and its image-token grid (for heatmaps). */
  imageView: (img: RgbImage) => ImageView;
  createProcessor: (tokenizer: Tokenizer) => VlmProcessor;
  /** GPU memory the folder's weights take and the budget the load was checked against (for per-run checks). */
  memory: { weights: number; budget: number | undefined; budgetWhat: string };
}

export class VlmModel {
  readonly type: ModelType;
  readonly source: string;
  /** The id of the token image features replace (LLaVA <image>, Qwen <|image_pad|>). */
  readonly imageTokenId: number;
  readonly decoder: Decoder;
  readonly visionEncoder: VisionEncoder;
  private readonly positions: TextPositions;
  private readonly parts: ModelParts;
  private idsBuf: GPUBuffer | null = null;
  private idsCap = 0;
  private featureMap: GPUBuffer | null = null;
  private rotaryBuf: Tensor | null = null;
  private features: Tensor | null = null;
  /** The last completed run whose KV cache and image features are in the buffers (prefix reuse). */
  private prefixState: PrefixState | null = null;
  private prefixCount = 0;
  /** Work counters (tests and benchmarks): vision passes recorded and text prompt rows prefilled, since load. */
  readonly counters = { visionPasses: 0, prefillRows: 0 };

  constructor(
    readonly ctx: GpuContext,
    parts: ModelParts,
  ) {
    this.parts = parts;
    this.type = parts.type;
    this.source = parts.source;
    this.imageTokenId = parts.imageTokenId;
    this.decoder = parts.decoder;
    this.visionEncoder = parts.vision;
    this.positions = parts.positions;
    parts.vision.prepare();
    parts.decoder.prepare();
  }

  /** Layers, heads and head dims of both towers: what interventions and captures are checked against. */
  get dims(): ModelDims {
    const t = this.decoder.cfg;
    return { text: { layers: t.layers, heads: t.heads, headDim: t.headDim }, vision: this.visionEncoder.dims };
  }

  get vocabSize(): number {
    return this.decoder.cfg.vocab;
  }

  /** Width of the text residual stream (image features have it too). */
  get hiddenSize(): number {
    return this.decoder.cfg.hidden;
  }

  /** The family's image preprocessing (pixel values as `run` takes them). */
  preprocess(img: RgbImage): ImageInput {
    return this.parts.preprocess(img);
  }

  /** The image as the model sees it (resized / cropped) and the rows x cols grid its image tokens tile it with. */
  imageView(img: RgbImage): ImageView {
    return this.parts.imageView(img);
  }

  /** The family's processor (prompt format, image-token expansion, tokenization) over a tokenizer. */
  createProcessor(tokenizer: Tokenizer): VlmProcessor {
    return this.parts.createProcessor(tokenizer);
  }

  /** Image tokens each preprocessed image makes. */
  imageTokenCounts(images: readonly ImageInput[]): number[] {
    return this.visionEncoder.plan(images).features;
  }

  /** Positions of the prompt whose keys are image tokens (the columns image_temperature scales). */
  imageKeyPositions(ids: readonly number[]): number[] {
    return ids.flatMap((id, i) => (id === this.imageTokenId ? [i] : []));
  }

  /**
   * Prefill (and optionally decoding) with the given interventions and captures; with `reuse`, only the prompt rows
   * the changed image temperature reaches are prefilled again (PrefixRunInput).
   */
  async run(input: PrefixRunInput): Promise<PrefixRunResult> {
    const { ctx } = this;
    // Whatever happens below overwrites the cache: the previous prefix is gone unless this run reuses it.
    const previous = this.prefixState;
    this.prefixState = null;
    const tcfg = this.decoder.cfg;
    const ids = input.ids;
    const L = ids.length;
    const maxNew = input.maxNewTokens ?? 0;
    const spec = input.interventions ?? EMPTY_INTERVENTIONS;
    const cap: CaptureSpec = input.capture ?? { logits: 'last', pattern: [], z: null, residual: [], imageFeatures: false };
    if (L === 0) throw new Error('the prompt has no tokens');
    ids.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id >= tcfg.vocab) {
        throw new Error(`token id ${JSON.stringify(id)} at position ${i} is outside the vocabulary (0..${tcfg.vocab - 1})`);
      }
    });
    const images = input.pixelValues ?? [];
    const plan = this.visionEncoder.plan(images);
    const nFeatures = plan.features.reduce((a, b) => a + b, 0);
    const imageRows = this.imageKeyPositions(ids);
    if (imageRows.length !== nFeatures) {
      throw new Error(
        `the prompt has ${imageRows.length} image tokens (id ${this.imageTokenId}) but ${images.length} image(s) give ` +
          `${nFeatures} features (${plan.features.join(' + ') || 0})${tileLayouts(images)}`,
      );
    }
    if (cap.z?.tower === 'text' && cap.z.positions.kind !== 'last') resolvePositions(cap.z.positions, L);
    for (const p of cap.pattern) {
      if (p.tower !== 'text') continue;
      for (const r of p.rows ?? []) if (r < -L || r >= L) throw new SpecError(`capture pattern rows: row ${r} is outside the text sequence of ${L} tokens`);
    }
    spec.visionTokenAdd?.directions.forEach((d, i) => {
      if (d.length !== tcfg.hidden) throw new SpecError(`vision_token_add.directions[${i}] has ${d.length} values, but the text hidden size is ${tcfg.hidden}`);
    });
    spec.patchZ.forEach((e, i) => resolvePatchRows(e, L, tcfg.headDim, `patch_z[${i}]`));
    const reserve = input.reserveNewTokens ?? 0;
    if (!Number.isInteger(reserve) || reserve < 0) throw new Error(`reserveNewTokens must be a non-negative integer, got ${reserve}`);
    this.checkRunMemory(plan, cap, L + Math.max(maxNew, reserve));
    // Positions first: a prompt whose image tokens do not match its images fails here, before any GPU work.
    const pos = this.positions.prompt(ids, images);

    // Prefix reuse: rows [0, r0) of the KV cache and the image features stay from `previous`.
    let reuse: ReuseInfo | undefined;
    if (input.reuse) {
      const why = reuseRefusal(input, previous, ids, images, spec, cap, L + Math.max(maxNew, reserve));
      const r0 =
        why === null
          ? Math.min(
              firstChangedRow(previous!.spec.imageTemperature, spec.imageTemperature, L, imageRows[0] ?? -1, this.dims.text),
              firstPatchChange(previous!.spec.patchZ, spec.patchZ, L),
            )
          : 0;
      reuse = { reused: why === null, fromRow: r0, rows: L - r0, promptRows: L, vision: why !== null && images.length > 0, ...(why === null ? {} : { reason: why }) };
    }
    const r0 = reuse?.reused ? reuse.fromRow : 0;
    const n = L - r0;
    this.decoder.allocateCache(L + Math.max(maxNew, reserve));
    this.ensureBuffers(L + Math.max(maxNew, reserve) + 1, Math.max(1, nFeatures));
    this.writeHeadParams(spec);

    ctx.write(this.idsBuf!, 0, new Uint32Array(ids));
    // The feature map and the rotary table are read relative to this prefill's first row.
    const fmap = new Int32Array(L).fill(-1);
    const rowOf = plan.featureRowOf ?? null;
    imageRows.forEach((r, k) => (fmap[r] = rowOf ? rowOf[k] : k));
    ctx.write(this.featureMap!, 0, fmap.subarray(r0));
    const flags = new Uint32Array(this.decoder.maxLen);
    for (const r of imageRows) flags[r] = 1;
    this.decoder.writeImageKeys(0, flags);
    ctx.write(this.rotaryBuf!.buffer, 0, pos.table.subarray((r0 * pos.table.length) / L));

    const t0 = performance.now();
    const rec = ctx.recorder('prefill');
    const owned: Tensor[] = [];
    const alloc = (shape: number[], label: string) => {
      const t = ctx.activation(shape, label);
      owned.push(t);
      return t;
    };
    try {
      const textCaps: DecoderCaptures = { pattern: new Map(), residual: new Map() };
      const patternOut: { spec: CaptureSpec['pattern'][number]; t: Tensor }[] = [];
      for (const p of cap.pattern) {
        if (p.tower !== 'text') continue;
        const t = alloc([tcfg.heads, L, L], `capture.text.${p.layer}.pattern`);
        textCaps.pattern!.set(p.layer, t);
        patternOut.push({ spec: p, t });
      }
      const residualOut: { layer: number; t: Tensor }[] = [];
      for (const r of cap.residual) {
        if (r.tower !== 'text') continue;
        const t = alloc([L, tcfg.hidden], `capture.text.residual.${r.layer}`);
        textCaps.residual!.set(r.layer, t);
        residualOut.push({ layer: r.layer, t });
      }
      let zOut: { t: Tensor; rows: number; mean: boolean } | null = null;
      if (cap.z?.tower === 'text') {
        const zRows = resolvePositions(cap.z.positions, L);
        const t = alloc([tcfg.layers, zRows.length, tcfg.heads * tcfg.headDim], 'capture.text.z');
        textCaps.z = { rows: zRows, dst: t };
        zOut = { t, rows: zRows.length, mean: cap.z.positions.kind === 'mean' };
      }

      // A reuse run keeps the image features of the run it reuses: no vision pass.
      const readVision = !reuse?.reused && (images.length || cap.z?.tower === 'vision') ? this.recordVision(rec, images, plan, cap, alloc) : null;
      // Dual Mechanisms vision-token enhancement: the embeddings entering layer 0 at image tokens, prefill only.
      const embedded = spec.visionTokenAdd && images.length ? this.recordVisionTokenAdd(rec, spec.visionTokenAdd, nFeatures, alloc) : this.features!;
      const knockout = this.knockoutStep(spec, 'prefill', r0, n, imageRows, alloc);
      const patch = this.patchStep(spec, r0, n, L, alloc);

      // Rows [r0, L) at positions r0..; scopes ('last', 'all') are relative to the call, so row n-1 is L-1.
      const hidden = this.decoder.record(rec, {
        rows: n,
        pos0: r0,
        ids: this.idsBuf!,
        idsOffset: r0,
        features: images.length ? { map: this.featureMap!, data: embedded } : null,
        knockout,
        patch,
        rotary: this.rotaryBuf!,
        tempRows: temperatureRows(spec.imageTemperature?.queries ?? null, 'prefill', n),
        steerRows: steerRows('prefill', n),
        captures: textCaps,
      });
      this.counters.prefillRows += n;
      const allLogits = cap.logits === 'all';
      const logits = alloc([allLogits ? L : 1, tcfg.vocab], 'logits');
      this.decoder.recordLogits(rec, hidden, allLogits ? 0 : n - 1, allLogits ? L : 1, logits);
      if (maxNew > 0 && !input.chooseToken) argmax(ctx, rec, { x: rows(logits, allLogits ? L - 1 : 0, 1), out: this.idsBuf!, outIndex: L });
      rec.submit();

      const result: PrefixRunResult = { pattern: [], residual: [], timings: { prefillMs: 0, decodeMs: 0, decodeSteps: 0 }, prefix: { id: 0 } };
      if (reuse) result.reuse = reuse;
      result.positions = { shape: [pos.axes, L], data: pos.positions, ropeDelta: pos.ropeDelta };
      if (cap.logits) {
        const data = await ctx.readF32(logits.buffer, 0, logits.numel);
        result.logits = { shape: allLogits ? [L, tcfg.vocab] : [tcfg.vocab], data };
      }
      const vision = readVision ? await readVision() : null;
      // Captures keep the order of the spec (text and vision entries interleaved as asked), vision ones per image.
      let [ti, vi] = [0, 0];
      for (const p of cap.pattern) {
        if (p.tower === 'text') result.pattern.push(await readPattern(ctx, p, patternOut[ti++].t));
        else result.pattern.push(...(vision?.pattern[vi++] ?? []));
      }
      [ti, vi] = [0, 0];
      for (const r of cap.residual) {
        if (r.tower === 'text') {
          const t = residualOut[ti++].t;
          result.residual.push({ tower: 'text', layer: r.layer, shape: [...t.shape], data: await ctx.readF32(t.buffer, 0, t.numel) });
        } else {
          result.residual.push(...(vision?.residual[vi++] ?? []));
        }
      }
      if (zOut) result.z = await readZ(ctx, zOut.t, zOut.rows, this.dims.text, zOut.mean);
      else if (vision?.z) result.z = vision.z;
      if (cap.imageFeatures && images.length) {
        const data = await ctx.readF32(this.features!.buffer, 0, nFeatures * tcfg.hidden);
        // Prompt order: the k-th image token's row.
        const ordered = rowOf ? new Float32Array(data.length) : data;
        if (rowOf) for (let k = 0; k < nFeatures; k++) ordered.set(data.subarray(rowOf[k] * tcfg.hidden, (rowOf[k] + 1) * tcfg.hidden), k * tcfg.hidden);
        result.imageFeatures = { shape: [nFeatures, tcfg.hidden], data: ordered };
      }
      if (maxNew > 0) {
        // The first token decides prefill latency: it needs the whole prefill.
        const firstTok = input.chooseToken
          ? this.choose(input, await ctx.readF32(logits.buffer, (allLogits ? L - 1 : 0) * tcfg.vocab * 4, tcfg.vocab), [], L)
          : (await ctx.readU32(this.idsBuf!, L * 4, 1))[0];
        result.timings.prefillMs = performance.now() - t0;
        result.tokens = await this.decode(firstTok, L, maxNew, spec, input, result, pos.ropeDelta, imageRows);
      } else {
        await ctx.sync();
        result.timings.prefillMs = performance.now() - t0;
      }
      // Decoding wrote only rows >= L: the prompt's KV rows and the image features are this run's prefix.
      const id = ++this.prefixCount;
      this.prefixState = { id, ids: ids.slice(), images: images.slice(), spec: structuredClone(spec), cacheLen: this.decoder.maxLen };
      result.prefix = { id };
      return result;
    } finally {
      for (const t of owned) ctx.destroyBuffer(t.buffer);
    }
  }

  /**
   * The last prompt row recomputed once per variant, all variants in one forward: variant v replaces the z of its
   * heads at that row (patch_z at rows "last") and reads the KV cache of rows [0, L - 1) that the run `reuse` left,
   * which must be what the plain prompt computes there (a plain run, or one whose interventions reach only the last
   * row). Each variant row attends to those keys and to itself only (the attention kernel's VARIANTS), at position
   * L - 1, so its logits are those of a separate run `reuse`d from the same prefix with that patch alone. Returns the
   * last-row logits [variants, vocab]. The variants' K/V go to cache slots L - 1 .. L - 2 + V (the prefix run must
   * have reserved V - 1 positions beyond its prompt); rows before L - 1 stay, so the prefix can serve more variants.
   */
  async runVariants(input: VariantRunInput): Promise<{ shape: [number, number]; data: Float32Array }> {
    const { ctx } = this;
    const tcfg = this.decoder.cfg;
    const { ids, variants } = input;
    const L = ids.length;
    const V = variants.length;
    if (V === 0) throw new Error('runVariants: no variants');
    if (L < 2) throw new Error('runVariants: the prompt needs at least two tokens (a prefix and the last row)');
    const images = input.pixelValues ?? [];
    const previous = this.prefixState;
    const why = reuseRefusal({ ids, reuse: input.reuse }, previous, ids, images, EMPTY_INTERVENTIONS, { logits: 'last', pattern: [], z: null, residual: [], imageFeatures: false }, L - 1 + V);
    if (why !== null) throw new Error(`runVariants: cannot read the prefix: ${why}`);
    const imageRows = this.imageKeyPositions(ids);
    const changed = Math.min(
      firstChangedRow(previous!.spec.imageTemperature, null, L, imageRows[0] ?? -1, this.dims.text),
      firstPatchChange(previous!.spec.patchZ, [], L),
    );
    if (changed < L - 1) throw new Error(`runVariants: the prefix run's interventions reach row ${changed}, before the last prompt row`);
    if (ids[L - 1] === this.imageTokenId) throw new Error('runVariants: the last prompt token is an image token');
    const entries: RowPatch[] = variants.flatMap((list, row) => list.map((e) => ({ ...e, row })));
    const patch = rowPatchCall(entries, this.dims.text, V, null);
    const plan = this.visionEncoder.plan(images);
    const pos = this.positions.prompt(ids, images);
    this.ensureBuffers(L + V, Math.max(1, plan.features.reduce((a, b) => a + b, 0)));
    this.writeHeadParams(EMPTY_INTERVENTIONS);
    ctx.write(this.idsBuf!, (L - 1) * 4, new Uint32Array(V).fill(ids[L - 1]!));
    const rowFloats = pos.table.length / L;
    const rotary = new Float32Array(V * rowFloats);
    for (let v = 0; v < V; v++) rotary.set(pos.table.subarray((L - 1) * rowFloats, L * rowFloats), v * rowFloats);
    ctx.write(this.rotaryBuf!.buffer, 0, rotary);
    this.decoder.writeImageKeys(L - 1, new Uint32Array(V));
    const owned: Tensor[] = [];
    const alloc = (shape: number[], label: string) => {
      const t = ctx.activation(shape, label);
      owned.push(t);
      return t;
    };
    try {
      let patchStep: Parameters<Decoder['record']>[1]['patch'] = null;
      if (patch) {
        const t = alloc([patch.data.length], 'text.patch_z.variants');
        ctx.write(t.buffer, 0, patch.data);
        patchStep = { buffer: t.buffer, slotBytes: patch.slotBytes, slots: patch.slots, mapOffset: patch.mapOffset, vectorOffset: patch.vectorOffset };
      }
      const rec = ctx.recorder('variants');
      const hidden = this.decoder.record(rec, {
        rows: V,
        pos0: L - 1,
        ids: this.idsBuf!,
        idsOffset: L - 1,
        rotary: this.rotaryBuf!,
        tempRows: [0, 0],
        steerRows: steerRows('prefill', V),
        patch: patchStep,
        variantPrefix: L - 1,
      });
      const logits = alloc([V, tcfg.vocab], 'variants.logits');
      this.decoder.recordLogits(rec, hidden, 0, V, logits);
      rec.submit();
      this.counters.prefillRows += V;
      return { shape: [V, tcfg.vocab], data: await ctx.readF32(logits.buffer, 0, logits.numel) };
    } finally {
      for (const t of owned) ctx.destroyBuffer(t.buffer);
    }
  }

  private recordVision(
    rec: ReturnType<GpuContext['recorder']>,
    images: readonly ImageInput[],
    plan: ReturnType<VisionEncoder['plan']>,
    cap: CaptureSpec,
    alloc: (shape: number[], label: string) => Tensor,
  ): VisionCaptureReader {
    if (!images.length) {
      if (cap.z?.tower === 'vision') throw new SpecError('capture z of the vision tower needs an image');
      return async () => ({ pattern: [], residual: [] });
    }
    this.counters.visionPasses++;
    return this.visionEncoder.record(rec, images, plan, this.features!, cap, alloc);
  }

  /** Decode: one forward and one small readback per token; the greedy token id never leaves the GPU otherwise. */
  private async decode(
    firstTok: number,
    L: number,
    maxNew: number,
    spec: InterventionSpec,
    input: RunInput,
    result: RunResult,
    ropeDelta: number,
    imageRows: readonly number[],
  ): Promise<number[]> {
    const { ctx } = this;
    const vocab = this.decoder.cfg.vocab;
    const stops = new Set(input.stopTokens ?? []);
    const tokens: number[] = [];
    let tok = firstTok;
    const t0 = performance.now();
    const logits = ctx.activation([1, vocab], 'decode.logits');
    try {
      for (let t = 0; ; t++) {
        if (stops.has(tok)) break;
        tokens.push(tok);
        input.onToken?.(tok);
        if (t + 1 >= maxNew || input.stopAfter?.(tokens)) break;
        const pos = L + t;
        ctx.write(this.rotaryBuf!.buffer, 0, this.positions.decode(pos, ropeDelta));
        const rec = ctx.recorder('decode');
        const stepOwned: Tensor[] = [];
        const knockout = this.knockoutStep(spec, 'decode', pos, 1, imageRows, (shape, label) => {
          const t = ctx.activation(shape, label);
          stepOwned.push(t);
          return t;
        });
        const hidden = this.decoder.record(rec, {
          rows: 1,
          pos0: pos,
          ids: this.idsBuf!,
          idsOffset: pos,
          knownIds: [tok],
          rotary: this.rotaryBuf!,
          knockout,
          tempRows: temperatureRows(spec.imageTemperature?.queries ?? null, 'decode', 1),
          steerRows: steerRows('decode', 1),
        });
        this.decoder.recordLogits(rec, hidden, 0, 1, logits);
        if (input.chooseToken) {
          rec.submit();
          tok = this.choose(input, await ctx.readF32(logits.buffer, 0, vocab), tokens, pos + 1);
        } else {
          argmax(ctx, rec, { x: rows(logits), out: this.idsBuf!, outIndex: pos + 1 });
          rec.submit();
          tok = (await ctx.readU32(this.idsBuf!, (pos + 1) * 4, 1))[0];
        }
        for (const t of stepOwned) ctx.destroyBuffer(t.buffer);
        result.timings.decodeSteps++;
      }
    } finally {
      ctx.destroyBuffer(logits.buffer);
    }
    result.timings.decodeMs = performance.now() - t0;
    return tokens;
  }

  /** Ask the caller's sampler for the next token and put it where the next decode step reads its id. */
  private choose(input: RunInput, logits: Float32Array, generated: readonly number[], at: number): number {
    const tok = input.chooseToken!(logits, generated);
    if (!Number.isInteger(tok) || tok < 0 || tok >= this.decoder.cfg.vocab) throw new Error(`chooseToken returned ${tok}, not a token id`);
    this.ctx.write(this.idsBuf!, at * 4, new Uint32Array([tok]));
    return tok;
  }

  /**
   * h + alpha * sum_k (h . w_k) / (|w_k|^2 + 1e-8) * w_k over the image features, as two thin matmuls: t = h W
   * ([n, k]), then t W'^T + h with W' = W diag(alpha / (|w_k|^2 + 1e-8)).
   */
  private recordVisionTokenAdd(
    rec: ReturnType<GpuContext['recorder']>,
    add: NonNullable<InterventionSpec['visionTokenAdd']>,
    n: number,
    alloc: (shape: number[], label: string) => Tensor,
  ): Tensor {
    const D = this.decoder.cfg.hidden;
    const k = add.directions.length;
    add.directions.forEach((d, i) => {
      if (d.length !== D) throw new SpecError(`vision_token_add.directions[${i}] has ${d.length} values, but the text hidden size is ${D}`);
    });
    const w = new Float32Array(k * D);
    const wScaled = new Float32Array(D * k);
    add.directions.forEach((d, j) => {
      let norm2 = 0;
      for (let i = 0; i < D; i++) norm2 += d[i] * d[i];
      const c = add.alpha / (norm2 + 1e-8);
      w.set(d, j * D);
      for (let i = 0; i < D; i++) wScaled[i * k + j] = d[i] * c;
    });
    const upload = (data: Float32Array, shape: number[], label: string) => {
      const t = alloc(shape, label);
      this.ctx.write(t.buffer, 0, data);
      return t;
    };
    const W = upload(w, [k, D], 'vision_token_add.directions');
    const Ws = upload(wScaled, [D, k], 'vision_token_add.scaled');
    const proj = alloc([n, k], 'vision_token_add.projections');
    const out = alloc([n, D], 'vision_token_add.features');
    matmul(this.ctx, rec, { x: rows(this.features!, 0, n), w: W, out: rows(proj) });
    matmul(this.ctx, rec, { x: rows(proj), w: Ws, residual: rows(this.features!, 0, n), out: rows(out) });
    return out;
  }

  /** The knockout bitsets of one forward call, uploaded (null when the spec has none). */
  private knockoutStep(
    spec: InterventionSpec,
    phase: 'prefill' | 'decode',
    pos0: number,
    n: number,
    imageRows: readonly number[],
    alloc: (shape: number[], label: string) => Tensor,
  ): { buffer: GPUBuffer; slotBytes: number; words: number; layers: Set<number> } | null {
    const layers = this.decoder.cfg.layers;
    const words = Math.ceil(this.decoder.maxLen / 32);
    const ko = knockoutBits(spec, { layers, phase, pos0, rows: n, words, nKeys: pos0 + n, imageKeys: imageRows });
    if (!ko) return null;
    // Storage bindings start at 256-byte offsets: one aligned slot per layer.
    const slot = Math.ceil((n * words * 4) / 256) * 64;
    const data = new Uint32Array(layers * slot);
    for (let l = 0; l < layers; l++) data.set(ko.bits.subarray(l * n * words, (l + 1) * n * words), l * slot);
    const t = alloc([layers * slot], `text.knockout.${phase}`);
    this.ctx.write(t.buffer, 0, data);
    return { buffer: t.buffer, slotBytes: slot * 4, words, layers: ko.layers };
  }

  /** The patch_z data of the prefill over rows [pos0, pos0 + n) of a prompt of L tokens, uploaded (null: none). */
  private patchStep(
    spec: InterventionSpec,
    pos0: number,
    n: number,
    L: number,
    alloc: (shape: number[], label: string) => Tensor,
  ): { buffer: GPUBuffer; slotBytes: number; slots: Map<number, number>; mapOffset: number; vectorOffset: number } | null {
    if (spec.patchZ.length === 0) return null;
    const d = this.dims.text;
    const call = patchCall(spec, d, { pos0, rows: n, promptLength: L, vectors: headVectorTable(spec, 'text', d) });
    if (!call) return null;
    const t = alloc([call.data.length], 'text.patch_z');
    this.ctx.write(t.buffer, 0, call.data);
    return { buffer: t.buffer, slotBytes: call.slotBytes, slots: call.slots, mapOffset: call.mapOffset, vectorOffset: call.vectorOffset };
  }

  private writeHeadParams(spec: InterventionSpec): void {
    const d = this.dims;
    this.ctx.write(this.decoder.headParams, 0, headParamTable(spec, 'text', d.text));
    this.decoder.writeHeadVectors(headVectorTable(spec, 'text', d.text));
    this.visionEncoder.writeHeadParams(spec);
  }

  /**
   * Refuse a run whose vision pass would not fit, with the numbers, before allocating anything: an image's vision
   * tokens (and captured patterns) grow with its size, which the load-time check could not know.
   */
  private checkRunMemory(plan: ReturnType<VisionEncoder['plan']>, cap: CaptureSpec, context: number): void {
    const { total: bytes, largest } = this.visionEncoder.scratchBytes(plan, cap);
    const limit = this.ctx.limits.maxStorageBufferBindingSize;
    const { budget, budgetWhat, weights } = this.parts.memory;
    const tokens = plan.tokens.reduce((a, b) => a + b, 0);
    const t = this.decoder.cfg;
    const kv = 2 * t.layers * context * t.kvHeads * t.headDim * 4;
    if (budget !== undefined && weights + kv + bytes > budget) {
      throw new Error(
        `the image(s) make ${tokens} vision tokens whose vision pass needs ${fmt(bytes)} of GPU memory; with weights ${fmt(weights)} and ` +
          `KV cache ${fmt(kv)} that exceeds ${budgetWhat} (${fmt(budget)}); ${this.smallerImageHint()}`,
      );
    }
    if (largest > limit) {
      throw new Error(
        `the image(s) make ${tokens} vision tokens; one vision tensor of ${fmt(largest)} exceeds this adapter's storage binding limit ` +
          `(${fmt(limit)}); ${this.smallerImageHint()}`,
      );
    }
  }

  /** What makes an image smaller for this family's image processor. */
  private smallerImageHint(): string {
    if (this.type === 'idefics3' || this.type === 'smolvlm') return 'use a smaller image or a lower size.longest_edge in preprocessor_config.json (fewer tiles)';
    return 'use a smaller image or lower max_pixels';
  }

  private ensureBuffers(idsLen: number, featureRows: number): void {
    const { ctx } = this;
    const t = this.decoder.cfg;
    if (idsLen > this.idsCap) {
      for (const b of [this.idsBuf, this.featureMap]) if (b) ctx.destroyBuffer(b);
      if (this.rotaryBuf) ctx.destroyBuffer(this.rotaryBuf.buffer);
      const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
      this.idsBuf = ctx.createBuffer(idsLen * 4, usage, 'token_ids');
      this.featureMap = ctx.createBuffer(idsLen * 4, usage, 'image_feature_map');
      this.rotaryBuf = ctx.activation([idsLen, t.headDim / 2, 2], 'text.rotary');
      this.idsCap = idsLen;
    }
    if (!this.features || this.features.shape[0] < featureRows) {
      if (this.features) ctx.destroyBuffer(this.features.buffer);
      this.features = ctx.activation([featureRows, t.hidden], 'image_features');
    }
  }

  destroy(): void {
    this.decoder.destroy();
    this.visionEncoder.destroy();
  }
}

/**
 * Why `input` cannot reuse the prefix `prev` (null: it can). The reused rows must be exactly what this run would
 * compute: same ids and images, every intervention but the image temperature and patch_z the same (they act on
 * every row, or on the vision tower, or on the embeddings; those two act on given rows, see firstChangedRow and
 * firstPatchChange), no capture that needs the rows or the vision pass, and a KV cache that is still the one `prev`
 * wrote (no run since, no reallocation to come).
 */
function reuseRefusal(
  input: PrefixRunInput,
  prev: PrefixState | null,
  ids: readonly number[],
  images: readonly ImageInput[],
  spec: InterventionSpec,
  cap: CaptureSpec,
  cacheLen: number,
): string | null {
  if (!prev || input.reuse!.id !== prev.id) return 'the handle is not the last run of this model (another run has overwritten its KV cache)';
  if (ids.length !== prev.ids.length || ids.some((id, i) => id !== prev.ids[i])) return 'the prompt ids differ from the reused run';
  if (images.length !== prev.images.length || images.some((im, i) => !sameValue(im, prev.images[i]))) return 'the images differ from the reused run';
  const { imageTemperature: _a, patchZ: _c, ...rest } = spec;
  const { imageTemperature: _b, patchZ: _d, ...prevRest } = prev.spec;
  if (!sameValue(rest, prevRest)) return 'interventions other than image_temperature and patch_z differ from the reused run';
  if (cap.logits === 'all' || cap.pattern.length || cap.z || cap.residual.length || cap.imageFeatures) {
    return 'captures other than logits "last" need every prompt row (or the vision pass)';
  }
  if (cacheLen > prev.cacheLen) return `the KV cache (${prev.cacheLen} positions) must grow to ${cacheLen} (reserve them in the first run: reserveNewTokens)`;
  return null;
}

/** Deep equality of plain data: numbers, strings, arrays, typed arrays and plain objects. */
function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (ArrayBuffer.isView(a) || ArrayBuffer.isView(b)) {
    if (!ArrayBuffer.isView(a) || !ArrayBuffer.isView(b) || a.constructor !== b.constructor) return false;
    const [x, y] = [a as unknown as ArrayLike<number>, b as unknown as ArrayLike<number>];
    if (x.length !== y.length) return false;
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
    return true;
  }
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && sameValue((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/**
 * The first prompt row whose computation differs between two image temperatures (the rest of the specs equal),
 * capped at L - 1 so that the last row's logits (the first generated token) are computed. The temperature
 * multiplies the scores of image-token keys on the query rows of its scope (AdaptVis model_zoo/llama/
 * modeling_llama_add_attn.py l.269-287): a row before the first image token sees no image key, so no alpha
 * reaches it; 'all' reaches every row from the first image token on (it sees itself), 'last' only row L - 1 in
 * the prefill, 'generated' no prompt row. Rows before the returned one have the same hidden states, hence the
 * same K/V in every layer, under both; every row from it on may differ (through its own scores, or through the
 * K/V of earlier changed rows in the next layers), so all of them are recomputed.
 */
export function firstChangedRow(a: ImageTemperature | null, b: ImageTemperature | null, L: number, firstImageRow: number, text: { layers: number; heads: number }): number {
  if (firstImageRow < 0) return L - 1;
  /** Per (layer, head) the alpha a row of the class gets: 'inner' rows firstImageRow..L-2, or the 'last' row. */
  const alphas = (t: ImageTemperature | null, row: 'inner' | 'last'): Float64Array => {
    const out = new Float64Array(text.layers * text.heads).fill(1);
    if (!t || !(t.queries === 'all' || (t.queries === 'last' && row === 'last'))) return out;
    for (let l = 0; l < text.layers; l++) {
      if (t.layers && !t.layers.includes(l)) continue;
      for (let h = 0; h < text.heads; h++) if (!t.heads || t.heads.includes(h)) out[l * text.heads + h] = t.alpha;
    }
    return out;
  };
  if (firstImageRow < L - 1 && !sameValue(alphas(a, 'inner'), alphas(b, 'inner'))) return firstImageRow;
  return L - 1;
}

/**
 * The first prompt row whose computation differs between two patch_z lists (the rest of the specs equal), L when
 * none does. A patch replaces z_h on its rows only, so a row before the first row of an entry that differs (added,
 * removed, or with other rows or values) computes the same hidden states, hence the same K/V in every layer, under
 * both; rows from it on may differ (through the patched z, or through the K/V of a patched row in later layers).
 */
export function firstPatchChange(a: readonly PatchZ[], b: readonly PatchZ[], L: number): number {
  const key = (e: PatchZ) => `${e.tower}:${e.layer}:${e.head}`;
  const firstRow = (e: PatchZ) => (e.rows === 'last' ? L - 1 : e.rows === 'all' ? 0 : Math.min(...e.rows));
  const inB = new Map(b.map((e) => [key(e), e]));
  const inA = new Map(a.map((e) => [key(e), e]));
  let first = L;
  for (const e of a) if (!sameValue(e, inB.get(key(e)))) first = Math.min(first, firstRow(e));
  for (const e of b) if (!sameValue(e, inA.get(key(e)))) first = Math.min(first, firstRow(e));
  return first;
}

/** For a token-count message: the tile layout of each tiled image (Idefics3), which sets its image tokens. */
function tileLayouts(images: readonly ImageInput[]): string {
  const parts = images.flatMap((im, i) => (isTiledImage(im) ? [`image ${i}: ${im.rows * im.cols > 0 ? `${im.rows}x${im.cols} crops + the global tile` : 'one tile'} = ${im.tiles} tiles`] : []));
  return parts.length ? `; ${parts.join(', ')}` : '';
}
