// Model loading shared by the commands: the model folder check, a progress bar on a terminal, --dtype, EOS ids.

import { stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Option } from 'commander';
import { fmtBytes, type GpuContext } from '../gpu/context.js';
import { nodeFolder, type FolderSource } from '../io/checkpoint.js';
import type { Tokenizer } from '../io/tokenizer.js';
import { eosTokenIds } from '../generate/eos.js';
import { loadModel as loadFolder, modelDimsFromConfig } from '../models/load.js';
import type { ModelDims } from '../spec/spec.js';
import type { VlmModel } from '../models/vlm.js';
import type { LoadProgress } from '../models/weights.js';
import type { DType } from '../gpu/tensor.js';
import { progressLine } from './progress.js';
import { bytesArg } from './args.js';

/**
 * The shipped model organism (weights/organism), the default --model: a small LLaVA trained on synthetic
 * spatial scenes (see its README). Resolved from the bundle's location, dist/cli.js -> ../weights/organism.
 */
export const DEFAULT_MODEL = resolve(dirname(fileURLToPath(import.meta.url)), '../weights/organism');

export function modelOption(): Option {
  return new Option('--model <dir>', 'Hugging Face model folder: LLaVA, Qwen2-VL, Qwen2.5-VL or Idefics3 / SmolVLM (config.json, *.safetensors, preprocessor_config.json, tokenizer.json); default: the shipped model organism').default(
    DEFAULT_MODEL,
    'weights/organism',
  );
}

export function dtypeOption(): Option {
  return new Option('--dtype <dtype>', 'store weights as this dtype on the GPU, converting while loading (f16 halves an f32/bf16 checkpoint)').choices([
    'f16',
    'bf16',
    'f32',
  ]);
}

/**
 * --memory-budget: the GPU memory the model may use. The load is checked against it, and so is each run (an image's
 * vision tokens grow with its size), both refused with the numbers before anything is allocated.
 */
export function memoryBudgetOption(): Option {
  return new Option(
    '--memory-budget <bytes>',
    'GPU memory the model may use, e.g. 8GiB or 500000000; the load and each run (large images) are refused with the numbers when they would not fit (default: the free system memory on a CPU adapter, unchecked on a GPU)',
  ).argParser(bytesArg);
}

/** Load a model folder (any supported family) with a progress bar on stderr when it is a terminal. */
export async function loadModel(ctx: GpuContext, folder: FolderSource | string, opts: { dtype?: string; memoryBudget?: number }): Promise<VlmModel> {
  const progress = progressBar(process.stderr);
  try {
    return await loadFolder(ctx, folder, { onProgress: progress.update, dtype: opts.dtype as DType | undefined, memoryBudget: opts.memoryBudget });
  } finally {
    progress.done();
  }
}

/**
 * Weight-loading progress on a terminal: bytes, rate and ETA on one line, redrawn at most 10 times a second
 * and erased when done. Does nothing when the stream is not a TTY (pipes, files, tests).
 */
export function progressBar(stream: NodeJS.WriteStream): { update: (p: LoadProgress) => void; done: () => void } {
  const line = progressLine(stream);
  return {
    update(p) {
      line?.draw(p.bytesDone, p.bytesTotal, (bar, rate, eta) => `loading [${bar}] ${fmtBytes(p.bytesDone)} / ${fmtBytes(p.bytesTotal)}  ${fmtBytes(Math.round(rate))}/s  ETA ${eta.toFixed(0)} s`);
    },
    done: () => line?.done(),
  };
}

export async function checkFolder(dir: string): Promise<void> {
  let isDir: boolean;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch {
    throw new Error(`model folder ${dir} does not exist; give --model a Hugging Face model folder (config.json, *.safetensors, tokenizer.json)`);
  }
  if (!isDir) throw new Error(`--model ${dir} is a file; give the folder that holds config.json, *.safetensors and tokenizer.json`);
}

/** The tokenizer's EOS plus generation_config.json's eos_token_id, as `generate` uses (src/generate/eos.ts). */
export async function eosIds(dir: string, tokenizer: Tokenizer): Promise<number[]> {
  return eosTokenIds(nodeFolder(dir), tokenizer);
}

/** The model's head grid per tower from its config.json, without loading the weights (a loaded model's dims are the same). */
export async function configDims(dir: string): Promise<ModelDims> {
  const text = await nodeFolder(dir).readText('config.json');
  if (text === null) throw new Error(`no config.json in ${dir}; give --model a Hugging Face model folder`);
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${dir}/config.json is not valid JSON: ${(e as Error).message}`);
  }
  return modelDimsFromConfig(json, `${dir}/config.json`);
}
