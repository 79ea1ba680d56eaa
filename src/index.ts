// vlmscope library entry point (package.json "exports": `vlmscope` in Node, `vlmscope/browser` and bundlers'
// `browser` condition for pages). Its declarations (dist/types) use WebGPU's types (GPUBuffer, ...): the reference
// below makes consumers' TypeScript load @webgpu/types, a dependency of the package.
/// <reference types="@webgpu/types" preserve="true" />
export { acquireGpu, NoGpuError, type Gpu, type GpuLimits } from './gpu/device.js';
export { GpuContext, Recorder, fmtBytes } from './gpu/context.js';
export { GpuTimer } from './gpu/gpu-timer.js';
export { Tensor, type DType } from './gpu/tensor.js';
export * from './io/safetensors.js';
export * from './io/checkpoint.js';
export * from './io/bytesource.js';
export * from './io/image.js';
export * from './io/resize.js';
export * from './io/clip-processor.js';
// The model surface: load any supported folder, its processor, run / generate.
export { loadModel, modelTypeOf, modelDimsFromConfig } from './models/load.js';
export { VlmModel, firstChangedRow, type PrefixHandle, type ReuseInfo } from './models/vlm.js';
export * from './models/model.js';
export { LlavaModel } from './models/llava.js';
export { QwenModel } from './models/qwen2-vl/model.js';
export { QwenProcessor } from './models/qwen2-vl/processor.js';
export { parseQwenConfig, type QwenConfig } from './models/qwen2-vl/config.js';
export { parseQwenImageProcessorConfig, qwenPreprocess, smartResize, type QwenImageProcessorConfig } from './models/qwen2-vl/image-processor.js';
export { parseLlavaConfig, type LlavaConfig } from './models/config.js';
export { randomLlava, writeRandomLlava, type RandomLlavaSpec } from './models/random-llava.js';
export { randomQwen, writeRandomQwen, type RandomQwenSpec } from './models/random-qwen.js';
export * from './spec/spec.js';
export { encodeSafetensors, encodeSafetensorsF32 } from './io/safetensors-writer.js';
export * from './io/tokenizer.js';
export { LlavaProcessor, LLAVA_15_TEMPLATE } from './models/llava-processor.js';
export { RowSplitTensor, type Weight } from './gpu/tensor.js';
export * from './generate/sampling.js';
export { generate, type GenerateArgs, type GenerateResult, type StopReason } from './generate/generate.js';
export * from './generate/adaptvis.js';
export * from './eval/sweep.js';
export { sweepSvg } from './eval/sweep-plot.js';
export * from './interp/attention-png.js';
export * from './interp/knockout.js';
export * from './interp/patching.js';
export * from './interp/known-heads.js';
export * from './interp/heads-benchmark.js';
export * from './interp/heads-benchmark-scoring.js';
export * from './interp/heads-benchmark-report.js';
export * from './interp/collect.js';
export * from './interp/activation-store.js';
export * from './interp/probes.js';
export * from './interp/probe-cpu.js';
export * from './interp/heads.js';
export * from './interp/statistics.js';
export {
  type AblationStore,
  type AblationStoreExample,
  type AblationStoreInput,
  type DirectionKind,
  type ProbeWeights,
  type SteeringDirection,
  type SteeringOptions,
  type StoreVectorOptions,
  meanVectors,
  steeringDirections,
} from './interp/store-vectors.js';
export * from './interp/ablation-spec.js';
export * from './interp/ablation.js';
export * from './interp/attention-map.js';
export * from './io/cached-folder.js';
export { eosTokenIds } from './generate/eos.js';
// Datasets: question files (vlmscope JSONL, VSR, What'sUp), scoring, evaluation and synthetic scenes.
export * from './eval/dataset.js';
export * from './eval/evaluate.js';
export * from './eval/synthetic.js';
export * from './eval/counterfactual.js';
export * from './eval/paraphrases.js';
export * from './eval/likelihood.js';
export {
  ADAPTVIS_SUBSETS,
  adaptVisFiles,
  readAdaptVis,
  parseAdaptVis,
  parseAdaptVisPrompts,
  isCorrectAdaptVis,
  vsrMetrics,
  pickOption,
  isCorrectByLikelihood,
  splitItems,
  pickBest,
  resultsTable,
  type AdaptVisItem,
  type AdaptVisSubset,
  type AdaptVisResult as AdaptVisTableRow,
  type VsrMetrics,
} from './eval/adaptvis-data.js';
export { PythonRandom } from './eval/python-random.js';
export * from './eval/adaptvis-table.js';
export * from './interp/probe-controls.js';
export * from './interp/mlp-probe.js';
