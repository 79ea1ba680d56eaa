// vlmscope library entry point.
export { acquireGpu, NoGpuError, type Gpu, type GpuLimits } from './gpu/device.js';
export { GpuContext, Recorder } from './gpu/context.js';
export { Tensor, type DType } from './gpu/tensor.js';
export * from './io/safetensors.js';
export * from './io/checkpoint.js';
export * from './io/bytesource.js';
export * from './io/image.js';
export * from './io/resize.js';
export * from './io/clip-processor.js';
export { LlavaModel, type RunInput, type RunResult, type Captured, type PatternCaptured } from './models/llava.js';
export { parseLlavaConfig, type LlavaConfig } from './models/config.js';
export { randomLlava, writeRandomLlava, type RandomLlavaSpec } from './models/random-llava.js';
export * from './interp/spec.js';
export { encodeSafetensors, encodeSafetensorsF32 } from './io/safetensors-writer.js';
export * from './io/tokenizer.js';
export { LlavaProcessor, LLAVA_15_TEMPLATE, type ProcessedPrompt } from './models/llava-processor.js';
export { RowSplitTensor, type Weight } from './gpu/tensor.js';
