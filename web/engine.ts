// The attention lab's engine session: one WebGPU device, one loaded model, and `ask()`, which answers a question
// about an image with the current head interventions while capturing every text layer's attention at the last
// prompt row (the query that predicts the answer's first token). Only library code runs here: the same
// model surface (any family loadModel reads), processor and kernels as in Node.

import {
  GpuContext,
  Tokenizer,
  acquireGpu,
  eosTokenIds,
  loadModel,
  generate,
  imageSpans,
  parseCapture,
  parseInterventions,
  type FolderSource,
  type Gpu,
  type ImageSpan,
  type PatternCaptured,
  type RgbImage,
  type TileLayout,
  type VlmModel,
  type VlmProcessor,
} from '../src/index.js';

/** A head's intervention in the lab: its output multiplied by `scale` (0 = ablated, > 1 = gain). */
export type HeadScales = Map<string, number>;
export const headKey = (layer: number, head: number): string => `${layer}:${head}`;

export interface AskOptions {
  image: RgbImage;
  question: string;
  heads: HeadScales;
  /** Image-token attention temperature (1 = unchanged), applied to every query row of every text layer. */
  imageTemperature: number;
  maxNewTokens?: number;
  onText?: (chunk: string) => void;
}

export interface AskResult {
  text: string;
  tokenIds: number[];
  promptIds: number[];
  /** One capture per text layer: [heads, 1, keys] at the last prompt row. */
  patterns: PatternCaptured[];
  /** The image's first run of image tokens (its only one unless the image is tiled). */
  span: ImageSpan;
  /** Every run of image tokens in prompt order (tiled images: one per tile). */
  spans: ImageSpan[];
  /** The image the model saw (after resize / crop), for drawing the heatmap over. */
  modelInput: RgbImage;
  /** Rows x cols of image tokens over modelInput (tiled images: the crops' tokens). */
  grid: [number, number];
  /** Tiled images (Idefics3 / SmolVLM): where each run of `spans` lies (the model's ImageView.tiles). */
  tiles?: TileLayout;
  /** The global tile as the model saw it, drawn as its own view. */
  globalImage?: RgbImage;
  ms: number;
  /** The intervention spec as JSON (what `vlmscope generate --intervene` takes for the same run). */
  interventionJson: Record<string, unknown>;
}

export class LabEngine {
  private constructor(
    readonly gpu: Gpu,
    readonly ctx: GpuContext,
  ) {}

  model: VlmModel | null = null;
  tokenizer: Tokenizer | null = null;
  processor: VlmProcessor | null = null;
  eos: number[] = [];

  /** Acquires the device; `onLost` is told when the device goes away (driver reset, out of memory, tab in background). */
  static async create(onLost: (reason: string) => void): Promise<LabEngine> {
    const gpu = await acquireGpu();
    const engine = new LabEngine(gpu, new GpuContext(gpu));
    void gpu.device.lost.then((info) => {
      if (!engine.destroyed) onLost(info.message || String(info.reason) || 'unknown reason');
    });
    return engine;
  }

  private destroyed = false;

  /** Frees the model and the device (a deliberate destroy is not reported as a loss). */
  destroy(): void {
    this.destroyed = true;
    this.model?.destroy();
    this.gpu.destroy();
  }

  /** `memoryBudget`: GPU memory the model may use (default: loadModel's, e.g. half the RAM on CPU adapters). */
  async load(folder: FolderSource, onProgress: (done: number, total: number) => void, memoryBudget?: number): Promise<void> {
    this.model?.destroy();
    this.model = null;
    // The model first: a wrong folder is then reported by its config.json, the file people recognise.
    const model = await loadModel(this.ctx, folder, { onProgress: (p: { bytesDone: number; bytesTotal: number }) => onProgress(p.bytesDone, p.bytesTotal), memoryBudget });
    let tokenizer: Tokenizer;
    try {
      tokenizer = await Tokenizer.fromFolder(folder);
    } catch (e) {
      model.destroy();
      throw e;
    }
    this.tokenizer = tokenizer;
    this.processor = model.createProcessor(tokenizer);
    this.eos = [...(await eosTokenIds(folder, tokenizer)), ...this.processor.stopTokenIds];
    this.model = model;
  }

  get layers(): number {
    return this.model?.dims.text.layers ?? 0;
  }

  get heads(): number {
    return this.model?.dims.text.heads ?? 0;
  }

  async ask(o: AskOptions): Promise<AskResult> {
    const { model, processor, tokenizer } = this;
    if (!model || !processor || !tokenizer) throw new Error('no model loaded');
    if (this.gpu.lost) throw new Error(`the GPU device was lost (${this.gpu.lost})`);
    const question = o.question.trim();
    if (!question) throw new Error('type a question first');
    if (question.includes(processor.imageToken)) throw new Error(`leave ${processor.imageToken} out of the question; the image is put in the prompt for you`);
    const prompt = processor.formatPrompt(question, 1);
    const { ids, pixelValues } = processor.process(prompt, [o.image]);
    const spans = imageSpans(ids, model.imageTokenId);
    const span = spans[0];
    if (!span) throw new Error('internal: the prompt has no image tokens');
    const view = model.imageView(o.image);
    const runs = view.tiles ? view.tiles.rows * view.tiles.cols + (view.tiles.global ? 1 : 0) : 1;
    if (spans.length !== runs) throw new Error(`internal: the prompt has ${spans.length} runs of image tokens, the image view ${runs}`);
    const last = ids.length - 1;
    const capture = parseCapture({ pattern: Array.from({ length: this.layers }, (_, layer) => ({ tower: 'text', layer, rows: [last] })) }, model.dims);
    const interventionJson: Record<string, unknown> = {};
    const scales = [...o.heads].filter(([, s]) => s !== 1);
    if (scales.length) {
      interventionJson.head_scale = scales.map(([k, scale]) => {
        const [layer, head] = k.split(':').map(Number);
        return { tower: 'text', layer, head, scale };
      });
    }
    if (o.imageTemperature !== 1) interventionJson.image_temperature = { alpha: o.imageTemperature, queries: 'all' };
    const interventions = parseInterventions(interventionJson, model.dims, 'lab interventions');
    const t0 = performance.now();
    const r = await generate(model, {
      ids,
      pixelValues,
      maxNewTokens: o.maxNewTokens ?? 24,
      tokenizer,
      eosTokenIds: this.eos,
      interventions,
      capture,
      onText: o.onText,
    });
    return {
      text: r.text,
      tokenIds: r.tokenIds,
      promptIds: ids,
      patterns: r.captured!.pattern,
      span,
      spans,
      modelInput: view.image,
      grid: view.grid,
      ...(view.tiles ? { tiles: view.tiles } : {}),
      ...(view.globalImage ? { globalImage: view.globalImage } : {}),
      ms: performance.now() - t0,
      interventionJson,
    };
  }
}
