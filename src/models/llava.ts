// LLaVA: CLIP vision tower -> feature selection (vision_feature_layer / select strategy) -> MLP projector ->
// image features scattered over the <image> tokens of a Llama decoder. One command encoder per forward step:
// the prefill (vision, projector, text, logits, first greedy token) is one submit, each decode step another.

import type { GpuContext, Recorder } from '../gpu/context.js';
import type { DType, Tensor, Weight } from '../gpu/tensor.js';
import { fmtBytes } from '../gpu/context.js';
import { Checkpoint, type FolderSource, nodeFolder } from '../io/checkpoint.js';
import { type ClipProcessorConfig, clipPreprocess, parseClipProcessorConfig } from '../io/clip-processor.js';
import type { RgbImage } from '../io/image.js';
import { rows } from '../../kernels/common.js';
import { matmul } from '../../kernels/matmul.js';
import { copyRows } from '../../kernels/elementwise.js';
import { argmax } from '../../kernels/reduce.js';
import { ClipVisionTower, type VisionCaptures } from './clip.js';
import { LlamaDecoder, type DecoderCaptures } from './llama.js';
import { type LlavaConfig, imageTokenCount, parseLlavaConfig } from './config.js';
import { type LoadProgress, WeightLoader } from './weights.js';
import { inverseFrequencies, rotaryTable } from './rotary.js';
import {
  type CaptureSpec,
  type InterventionSpec,
  type ModelDims,
  type Tower,
  EMPTY_INTERVENTIONS,
  SpecError,
  resolvePositions,
} from '../interp/spec.js';
import { headParamTable, headVectorTable, steerRows, temperatureRows } from '../interp/head-params.js';

// llava-hf checkpoints (legacy names), transformers >= 4.52 names, and transformers 5 state dicts (no vision_model).
const VISION_PREFIXES = ['vision_tower.vision_model.', 'model.vision_tower.vision_model.', 'model.vision_tower.', 'vision_tower.'];
const PROJECTOR_PREFIXES = ['multi_modal_projector.', 'model.multi_modal_projector.'];
const TEXT_PREFIXES = ['language_model.model.', 'model.language_model.', 'language_model.'];
const LM_HEAD_NAMES = ['language_model.lm_head.weight', 'lm_head.weight'];

/** A captured array: row-major data with its shape. */
export interface Captured {
  shape: number[];
  data: Float32Array;
}

export interface PatternCaptured extends Captured {
  tower: Tower;
  layer: number;
  heads: number[];
  rows: number[];
}

export interface RunInput {
  /** Token ids of the prompt, image tokens already expanded. */
  ids: number[];
  /** Preprocessed images, [C, H, W] each, in the order of their image tokens. */
  pixelValues?: Float32Array[];
  interventions?: InterventionSpec;
  capture?: CaptureSpec;
  /** Greedy tokens to generate after the prompt (0 = prefill only). */
  maxNewTokens?: number;
  /** Stop generation at these token ids (not included in the output). */
  stopTokens?: number[];
  /** Called with each generated token as soon as it is known. */
  onToken?: (id: number) => void;
  /**
   * Choose each next token from the last row's logits (sampling). Without it decoding is greedy on the GPU
   * and only the 4-byte token id is read back per step; with it the logits row is read back.
   */
  chooseToken?: (logits: Float32Array, generated: readonly number[]) => number;
  /** Stop after a token when this returns true (e.g. a stop string appeared); the token is kept. */
  stopAfter?: (generated: readonly number[]) => boolean;
}

export interface RunResult {
  logits?: Captured;
  pattern: PatternCaptured[];
  z?: Captured;
  residual: (Captured & { tower: Tower; layer: number })[];
  imageFeatures?: Captured;
  tokens?: number[];
  timings: { prefillMs: number; decodeMs: number; decodeSteps: number };
}

export interface LlavaLoadOptions {
  onProgress?: (p: LoadProgress) => void;
  /** Store weights in this dtype (converted while loading), e.g. 'f16' to halve an f32/bf16 checkpoint. */
  dtype?: DType;
  /** Split weights above this size into row blocks (default: the adapter's binding limit). */
  maxBindingBytes?: number;
  /** Tokens of context to plan the KV cache for when checking that the model fits (default 2048). */
  contextLength?: number;
  /**
   * Bytes of GPU memory the model may use. Default: for CPU adapters (SwiftShader) the free system memory in Node,
   * half of navigator.deviceMemory in a browser; WebGPU does not tell a real GPU's memory size, so there it is only
   * checked when given.
   */
  memoryBudget?: number;
}

/** What a model needs on the GPU, computed before anything is allocated. */
export interface MemoryPlan {
  weights: number;
  kvCache: number;
  activations: number;
  total: number;
}

export class LlavaModel {
  private linear1!: Weight;
  private linear1Bias: Tensor | null = null;
  private linear2!: Weight;
  private linear2Bias: Tensor | null = null;
  private idsBuf: GPUBuffer | null = null;
  private idsCap = 0;
  private featureMap: GPUBuffer | null = null;
  private rotaryBuf: Tensor | null = null;
  private features: Tensor | null = null;
  private invFreq: Float64Array;

  private constructor(
    readonly ctx: GpuContext,
    readonly cfg: LlavaConfig,
    readonly processor: ClipProcessorConfig,
    readonly vision: ClipVisionTower,
    readonly text: LlamaDecoder,
    readonly source: string,
  ) {
    this.invFreq = inverseFrequencies(cfg.text.headDim, cfg.text.ropeTheta);
  }

  /** Load a Hugging Face LLaVA folder (a path in Node, or any FolderSource). */
  static async load(ctx: GpuContext, folder: FolderSource | string, opts: LlavaLoadOptions = {}): Promise<LlavaModel> {
    const src = typeof folder === 'string' ? nodeFolder(folder) : folder;
    const ckpt = await Checkpoint.open(src);
    try {
      const cfg = parseLlavaConfig(ckpt.config, `${src.name}/config.json`);
      const ppJson = await ckpt.readJson('preprocessor_config.json');
      const processor = parseClipProcessorConfig(ppJson ?? {}, `${src.name}/preprocessor_config.json`);
      const crop = processor.doCenterCrop ? processor.cropSize : null;
      if (crop && (crop.height !== cfg.vision.imageSize || crop.width !== cfg.vision.imageSize)) {
        throw new Error(
          `${src.name}/preprocessor_config.json crops to ${crop.height}x${crop.width} but config.json vision_config.image_size is ${cfg.vision.imageSize}`,
        );
      }
      // Pass 1 checks every tensor name and shape without touching the GPU; pass 2 uploads.
      const loaderOpts = { dtype: opts.dtype, maxBindingBytes: opts.maxBindingBytes };
      const check = new WeightLoader(null, ckpt, undefined, 0, loaderOpts);
      await LlavaModel.loadWeights(ctx, cfg, check);
      check.finishCheck();
      await checkMemory(ctx, cfg, check.bytesNeeded, opts, src.name);
      const loader = new WeightLoader(ctx, ckpt, opts.onProgress, check.sourceBytes, loaderOpts);
      const parts = await LlavaModel.loadWeights(ctx, cfg, loader);
      const model = new LlavaModel(ctx, cfg, processor, parts.vision, parts.text, src.name);
      Object.assign(model, parts.projector);
      parts.vision.prepare();
      parts.text.prepare();
      return model;
    } finally {
      await ckpt.close();
    }
  }

  private static async loadWeights(ctx: GpuContext, cfg: LlavaConfig, w: WeightLoader) {
    const vision = await ClipVisionTower.load(ctx, cfg.vision, w, VISION_PREFIXES);
    const featIn = cfg.vision.hidden * cfg.featureStates.length;
    const D = cfg.text.hidden;
    const pname = (s: string) => w.resolve(PROJECTOR_PREFIXES.map((p) => p + s));
    const projector = {
      linear1: await w.load(pname('linear_1.weight'), [D, featIn]),
      linear1Bias: cfg.projectorBias ? await w.loadTensor(pname('linear_1.bias'), [D]) : null,
      linear2: await w.load(pname('linear_2.weight'), [D, D]),
      linear2Bias: cfg.projectorBias ? await w.loadTensor(pname('linear_2.bias'), [D]) : null,
    };
    const text = await LlamaDecoder.load(ctx, cfg.text, w, TEXT_PREFIXES, LM_HEAD_NAMES);
    return { vision, projector, text };
  }

  get dims(): ModelDims {
    return {
      text: { layers: this.cfg.text.layers, heads: this.cfg.text.heads, headDim: this.cfg.text.headDim },
      vision: { layers: this.cfg.vision.layers, heads: this.cfg.vision.heads, headDim: this.cfg.vision.headDim },
    };
  }

  /** Number of <image> tokens one image takes. */
  get imageTokens(): number {
    return imageTokenCount(this.cfg);
  }

  /** CLIP preprocessing of this checkpoint's preprocessor_config.json. */
  preprocess(img: RgbImage): Float32Array {
    return clipPreprocess(img, this.processor).pixelValues;
  }

  /** Prefill (and optionally greedy decoding) with the given interventions and captures. */
  async run(input: RunInput): Promise<RunResult> {
    const { ctx, cfg } = this;
    const ids = input.ids;
    const L = ids.length;
    const maxNew = input.maxNewTokens ?? 0;
    const spec = input.interventions ?? EMPTY_INTERVENTIONS;
    const cap: CaptureSpec = input.capture ?? { logits: 'last', pattern: [], z: null, residual: [], imageFeatures: false };
    if (L === 0) throw new Error('the prompt has no tokens');
    ids.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id >= cfg.text.vocab) {
        throw new Error(`token id ${JSON.stringify(id)} at position ${i} is outside the vocabulary (0..${cfg.text.vocab - 1})`);
      }
    });
    // Image tokens: features of all images fill them in order (Hugging Face masked_scatter).
    const perImage = this.imageTokens;
    const images = input.pixelValues ?? [];
    const imageRows = ids.flatMap((id, i) => (id === cfg.imageTokenIndex ? [i] : []));
    if (imageRows.length !== images.length * perImage) {
      throw new Error(
        `the prompt has ${imageRows.length} image tokens (id ${cfg.imageTokenIndex}) but ${images.length} image(s) give ` +
          `${images.length * perImage} features (${perImage} per image)`,
      );
    }
    const pixelSize = cfg.vision.channels * cfg.vision.imageSize * cfg.vision.imageSize;
    images.forEach((p, i) => {
      if (p.length !== pixelSize) {
        throw new Error(`pixel values of image ${i} have ${p.length} values, expected ${cfg.vision.channels}x${cfg.vision.imageSize}x${cfg.vision.imageSize}`);
      }
    });
    for (const z of [cap.z]) if (z && z.positions.kind !== 'last') resolvePositions(z.positions, z.tower === 'text' ? L : this.vision.tokens);
    for (const p of cap.pattern) {
      const n = p.tower === 'text' ? L : this.vision.tokens;
      for (const r of p.rows ?? []) if (r < -n || r >= n) throw new SpecError(`capture pattern rows: row ${r} is outside the ${p.tower} sequence of ${n} tokens`);
    }

    const maxLen = L + maxNew;
    this.text.allocateCache(maxLen);
    this.ensureBuffers(maxLen + 1, Math.max(1, images.length * perImage));
    this.writeHeadParams(spec);

    const idsU32 = new Uint32Array(ids);
    ctx.write(this.idsBuf!, 0, idsU32);
    const fmap = new Int32Array(L).fill(-1);
    imageRows.forEach((r, k) => (fmap[r] = k));
    ctx.write(this.featureMap!, 0, fmap);
    const flags = new Uint32Array(this.text.maxLen);
    for (const r of imageRows) flags[r] = 1;
    this.text.writeImageKeys(0, flags);
    this.writeRotary(0, L);

    const t0 = performance.now();
    const rec = ctx.recorder('prefill');
    const owned: Tensor[] = [];
    const alloc = (shape: number[], label: string) => {
      const t = ctx.activation(shape, label);
      owned.push(t);
      return t;
    };
    try {
      // Captures: destination buffers filled during the forward.
      const visionCaps: VisionCaptures[] = images.map(() => ({ pattern: new Map(), residual: new Map() }));
      const textCaps: DecoderCaptures = { pattern: new Map(), residual: new Map() };
      const patternOut: { spec: CaptureSpec['pattern'][number]; image: number; t: Tensor }[] = [];
      for (const p of cap.pattern) {
        if (p.tower === 'text') {
          const t = alloc([cfg.text.heads, L, L], `capture.text.${p.layer}.pattern`);
          textCaps.pattern!.set(p.layer, t);
          patternOut.push({ spec: p, image: -1, t });
        } else {
          images.forEach((_, i) => {
            const n = this.vision.tokens;
            const t = alloc([cfg.vision.heads, n, n], `capture.vision.${p.layer}.pattern`);
            visionCaps[i].pattern!.set(p.layer, t);
            patternOut.push({ spec: p, image: i, t });
          });
        }
      }
      const residualOut: { tower: Tower; layer: number; image: number; t: Tensor }[] = [];
      for (const r of cap.residual) {
        if (r.tower === 'text') {
          const t = alloc([L, cfg.text.hidden], `capture.text.residual.${r.layer}`);
          textCaps.residual!.set(r.layer, t);
          residualOut.push({ ...r, image: -1, t });
        } else {
          images.forEach((_, i) => {
            const t = alloc([this.vision.tokens, cfg.vision.hidden], `capture.vision.residual.${r.layer}`);
            visionCaps[i].residual!.set(r.layer, t);
            residualOut.push({ ...r, image: i, t });
          });
        }
      }
      let zOut: { t: Tensor; rows: number[]; tower: Tower; mean: boolean } | null = null;
      if (cap.z) {
        const tower = cap.z.tower;
        const n = tower === 'text' ? L : this.vision.tokens;
        const zRows = resolvePositions(cap.z.positions, n);
        const c = tower === 'text' ? cfg.text : cfg.vision;
        const t = alloc([c.layers, zRows.length, c.heads * c.headDim], `capture.${tower}.z`);
        if (tower === 'text') textCaps.z = { rows: zRows, dst: t };
        else if (images.length) visionCaps[0].z = { rows: zRows, dst: t };
        else throw new SpecError('capture z of the vision tower needs an image');
        zOut = { t, rows: zRows, tower, mean: cap.z.positions.kind === 'mean' };
      }

      // Vision tower and projector, image by image, into the shared features tensor.
      const deepest = Math.max(
        ...cfg.featureStates,
        ...cap.pattern.filter((p) => p.tower === 'vision').map((p) => p.layer + 1),
        ...cap.residual.filter((r) => r.tower === 'vision').map((r) => r.layer),
        ...(cap.z?.tower === 'vision' ? [cfg.vision.layers] : []),
      );
      const E = cfg.vision.hidden;
      const nFeat = cfg.featureStates.length;
      const first = cfg.selectStrategy === 'default' ? 1 : 0;
      const keep = new Map<number, Tensor>();
      if (nFeat > 1 || deepest > cfg.featureStates[0]) {
        for (const s of cfg.featureStates) keep.set(s, alloc([this.vision.tokens, E], `vision.hidden_state.${s}`));
      }
      const concat = nFeat > 1 ? alloc([perImage, E * nFeat], 'vision.features_concat') : null;
      const mid = alloc([perImage, cfg.text.hidden], 'projector.hidden');
      images.forEach((pv, i) => {
        const pixels = alloc([cfg.vision.channels, cfg.vision.imageSize, cfg.vision.imageSize], `pixel_values.${i}`);
        ctx.write(pixels.buffer, 0, pv);
        const last = this.vision.record(rec, pixels, deepest, keep, visionCaps[i]);
        let x;
        if (concat) {
          cfg.featureStates.forEach((s, j) => {
            copyRows(ctx, rec, {
              src: rows(keep.get(s)!, first, perImage),
              dst: { tensor: concat, rows: perImage, cols: E, offset: j * E, stride: E * nFeat },
            });
          });
          x = rows(concat);
        } else {
          x = rows(keep.get(cfg.featureStates[0]) ?? last, first, perImage);
        }
        matmul(ctx, rec, { x, w: this.linear1, b: this.linear1Bias, out: rows(mid), act: cfg.projectorAct });
        matmul(ctx, rec, { x: rows(mid), w: this.linear2, b: this.linear2Bias, out: rows(this.features!, i * perImage, perImage) });
      });

      const hidden = this.text.record(rec, {
        rows: L,
        pos0: 0,
        ids: this.idsBuf!,
        idsOffset: 0,
        features: images.length ? { map: this.featureMap!, data: this.features! } : null,
        rotary: this.rotaryBuf!,
        tempRows: temperatureRows(spec.imageTemperature?.queries ?? null, 'prefill', L),
        steerRows: steerRows('prefill', L),
        captures: textCaps,
      });
      const allLogits = cap.logits === 'all';
      const logits = alloc([allLogits ? L : 1, cfg.text.vocab], 'logits');
      this.text.recordLogits(rec, hidden, allLogits ? 0 : L - 1, allLogits ? L : 1, logits);
      if (maxNew > 0 && !input.chooseToken) argmax(ctx, rec, { x: rows(logits, allLogits ? L - 1 : 0, 1), out: this.idsBuf!, outIndex: L });
      rec.submit();

      // Read back what was captured.
      const result: RunResult = { pattern: [], residual: [], timings: { prefillMs: 0, decodeMs: 0, decodeSteps: 0 } };
      if (cap.logits) {
        const data = await ctx.readF32(logits.buffer, 0, logits.numel);
        result.logits = { shape: allLogits ? [L, cfg.text.vocab] : [cfg.text.vocab], data };
      }
      for (const p of patternOut) result.pattern.push(await this.readPattern(p.spec, p.t));
      for (const r of residualOut) {
        const data = await ctx.readF32(r.t.buffer, 0, r.t.numel);
        result.residual.push({ tower: r.tower, layer: r.layer, shape: [...r.t.shape], data });
      }
      if (zOut) result.z = await this.readZ(zOut);
      if (cap.imageFeatures && images.length) {
        const n = images.length * perImage * cfg.text.hidden;
        result.imageFeatures = { shape: [images.length * perImage, cfg.text.hidden], data: await ctx.readF32(this.features!.buffer, 0, n) };
      }
      if (maxNew > 0) {
        // The first token decides prefill latency: it needs the whole prefill.
        const firstTok = input.chooseToken
          ? this.choose(input, await ctx.readF32(logits.buffer, (allLogits ? L - 1 : 0) * cfg.text.vocab * 4, cfg.text.vocab), [], L)
          : (await ctx.readU32(this.idsBuf!, L * 4, 1))[0];
        result.timings.prefillMs = performance.now() - t0;
        result.tokens = await this.decode(firstTok, L, maxNew, spec, input, result);
      } else {
        await ctx.sync();
        result.timings.prefillMs = performance.now() - t0;
      }
      return result;
    } finally {
      for (const t of owned) ctx.destroyBuffer(t.buffer);
    }
  }

  /** Greedy decode: one forward and one 4-byte readback per token; the token id never leaves the GPU otherwise. */
  private async decode(firstTok: number, L: number, maxNew: number, spec: InterventionSpec, input: RunInput, result: RunResult): Promise<number[]> {
    const { ctx, cfg } = this;
    const stops = new Set(input.stopTokens ?? []);
    const tokens: number[] = [];
    let tok = firstTok;
    const t0 = performance.now();
    const logits = ctx.activation([1, cfg.text.vocab], 'decode.logits');
    try {
      for (let t = 0; ; t++) {
        if (stops.has(tok)) break;
        tokens.push(tok);
        input.onToken?.(tok);
        if (t + 1 >= maxNew || input.stopAfter?.(tokens)) break;
        const pos = L + t;
        this.writeRotary(pos, 1);
        const rec = ctx.recorder('decode');
        const hidden = this.text.record(rec, {
          rows: 1,
          pos0: pos,
          ids: this.idsBuf!,
          idsOffset: pos,
          rotary: this.rotaryBuf!,
          tempRows: temperatureRows(spec.imageTemperature?.queries ?? null, 'decode', 1),
          steerRows: steerRows('decode', 1),
        });
        this.text.recordLogits(rec, hidden, 0, 1, logits);
        if (input.chooseToken) {
          rec.submit();
          tok = this.choose(input, await ctx.readF32(logits.buffer, 0, cfg.text.vocab), tokens, pos + 1);
        } else {
          argmax(ctx, rec, { x: rows(logits), out: this.idsBuf!, outIndex: pos + 1 });
          rec.submit();
          tok = (await ctx.readU32(this.idsBuf!, (pos + 1) * 4, 1))[0];
        }
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
    if (!Number.isInteger(tok) || tok < 0 || tok >= this.cfg.text.vocab) throw new Error(`chooseToken returned ${tok}, not a token id`);
    this.ctx.write(this.idsBuf!, at * 4, new Uint32Array([tok]));
    return tok;
  }

  private async readPattern(p: CaptureSpec['pattern'][number], t: Tensor): Promise<PatternCaptured> {
    const [H, n] = [t.shape[0], t.shape[1]];
    const all = await this.ctx.readF32(t.buffer, 0, t.numel);
    const heads = p.heads ?? Array.from({ length: H }, (_, h) => h);
    const rowsSel = (p.rows ?? Array.from({ length: n }, (_, r) => r)).map((r) => (r < 0 ? n + r : r));
    const data = new Float32Array(heads.length * rowsSel.length * n);
    heads.forEach((h, hi) =>
      rowsSel.forEach((r, ri) => data.set(all.subarray((h * n + r) * n, (h * n + r + 1) * n), (hi * rowsSel.length + ri) * n)),
    );
    return { tower: p.tower, layer: p.layer, heads, rows: rowsSel, shape: [heads.length, rowsSel.length, n], data };
  }

  private async readZ(z: { t: Tensor; rows: number[]; tower: Tower; mean: boolean }): Promise<Captured> {
    const c = z.tower === 'text' ? this.cfg.text : this.cfg.vision;
    const width = c.heads * c.headDim;
    const all = await this.ctx.readF32(z.t.buffer, 0, z.t.numel);
    const nr = z.rows.length;
    if (nr === 1 || z.mean) {
      // [layers, heads, d_head]: one position, or the mean over the range.
      const out = new Float32Array(c.layers * width);
      for (let l = 0; l < c.layers; l++)
        for (let r = 0; r < nr; r++)
          for (let j = 0; j < width; j++) out[l * width + j] += all[(l * nr + r) * width + j] / nr;
      return { shape: [c.layers, c.heads, c.headDim], data: out };
    }
    // [positions, layers, heads, d_head]
    const out = new Float32Array(nr * c.layers * width);
    for (let r = 0; r < nr; r++)
      for (let l = 0; l < c.layers; l++) out.set(all.subarray((l * nr + r) * width, (l * nr + r + 1) * width), (r * c.layers + l) * width);
    return { shape: [nr, c.layers, c.heads, c.headDim], data: out };
  }

  private writeHeadParams(spec: InterventionSpec): void {
    const d = this.dims;
    this.ctx.write(this.text.headParams, 0, headParamTable(spec, 'text', d.text));
    this.ctx.write(this.vision.headParams, 0, headParamTable(spec, 'vision', d.vision));
    this.text.writeHeadVectors(headVectorTable(spec, 'text', d.text));
    this.vision.writeHeadVectors(headVectorTable(spec, 'vision', d.vision));
  }

  private writeRotary(pos0: number, n: number): void {
    const positions = Array.from({ length: n }, (_, i) => pos0 + i);
    this.ctx.write(this.rotaryBuf!.buffer, 0, rotaryTable(positions, this.invFreq));
  }

  private ensureBuffers(idsLen: number, featureRows: number): void {
    const { ctx, cfg } = this;
    if (idsLen > this.idsCap) {
      for (const b of [this.idsBuf, this.featureMap]) if (b) ctx.destroyBuffer(b);
      if (this.rotaryBuf) ctx.destroyBuffer(this.rotaryBuf.buffer);
      const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
      this.idsBuf = ctx.createBuffer(idsLen * 4, usage, 'token_ids');
      this.featureMap = ctx.createBuffer(idsLen * 4, usage, 'image_feature_map');
      this.rotaryBuf = ctx.activation([idsLen, cfg.text.headDim / 2, 2], 'text.rotary');
      this.idsCap = idsLen;
    }
    if (!this.features || this.features.shape[0] < featureRows) {
      if (this.features) ctx.destroyBuffer(this.features.buffer);
      this.features = ctx.activation([featureRows, cfg.text.hidden], 'image_features');
    }
  }

  destroy(): void {
    this.text.destroy();
  }
}

/** Bytes the model needs on the GPU: weights as stored, the KV cache for `context` tokens, and activations. */
export function planMemory(cfg: LlavaConfig, weightBytes: number, context: number): MemoryPlan {
  const t = cfg.text;
  const v = cfg.vision;
  const kvCache = 2 * t.layers * context * t.kvHeads * t.headDim * 4;
  const visionTokens = (v.imageSize / v.patchSize) ** 2 + 1;
  // Per-row scratch of the decoder (h, h2, normed, q, z, gate, up, act) over a prefill of `context` rows, the
  // vision scratch, and the logits of one row.
  const textScratch = context * (3 * t.hidden + 2 * t.heads * t.headDim + 3 * t.intermediate) * 4;
  const visionScratch = visionTokens * (8 * v.hidden + v.intermediate + v.channels * v.patchSize ** 2) * 4;
  const activations = textScratch + visionScratch + t.vocab * 4 * 2;
  return { weights: weightBytes, kvCache, activations, total: weightBytes + kvCache + activations };
}

async function checkMemory(ctx: GpuContext, cfg: LlavaConfig, weightBytes: number, opts: LlavaLoadOptions, name: string): Promise<void> {
  const context = opts.contextLength ?? Math.min(2048, cfg.text.maxPositions);
  const plan = planMemory(cfg, weightBytes, context);
  let budget = opts.memoryBudget;
  let what = 'the given memory budget';
  // A CPU adapter's "GPU memory" is system RAM: in Node its free memory, in a browser half of what
  // navigator.deviceMemory reports (a rounded, capped figure). WebGPU does not tell a real GPU's memory.
  if (budget === undefined && /swiftshader|llvmpipe|lavapipe|cpu/i.test(ctx.gpu.adapterName)) {
    if (typeof process !== 'undefined' && process.versions?.node) {
      const os = await import('node:os');
      budget = os.freemem();
      what = 'the free memory of this CPU adapter (system RAM)';
    } else {
      const ram = typeof navigator !== 'undefined' ? (navigator as Navigator & { deviceMemory?: number }).deviceMemory : undefined;
      if (ram) {
        budget = (ram * 2 ** 30) / 2;
        what = "half the memory the browser reports for this CPU adapter's machine";
      }
    }
  }
  if (budget !== undefined && plan.total > budget) {
    throw new Error(
      `${name} needs ${fmtBytes(plan.total)} of GPU memory (weights ${fmtBytes(plan.weights)} + KV cache ${fmtBytes(plan.kvCache)} ` +
        `for ${context} tokens + activations ${fmtBytes(plan.activations)}) but ${what} is ${fmtBytes(budget)}; ` +
        `try --dtype f16 or a shorter context`,
    );
  }
}
