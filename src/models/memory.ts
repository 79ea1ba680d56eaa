// What every family's load does around its weight map: pass 1 checks every tensor name and shape without touching
// the GPU, then weights + KV cache + activations are checked against the budget (the free RAM of a CPU adapter, or
// what the caller gives) before anything is allocated, then pass 2 uploads.

import { type GpuContext, fmtBytes } from '../gpu/context.js';
import type { Checkpoint } from '../io/checkpoint.js';
import type { DecoderConfig } from './config.js';
import type { LoadOptions, MemoryPlan } from './model.js';
import { WeightLoader } from './weights.js';
import { isCpuAdapter } from '../../kernels/adapter.js';

/**
 * The decoder's share of a plan: the KV cache for `context` tokens, the per-row scratch (h, h2, normed, q, z, and
 * the MLP's act(gate) * up, which matmulGated writes without gate / up intermediates) over a prefill of `context`
 * rows, and one row of logits. `visionScratch`: what the family's vision pass needs when it is fixed (images of a
 * variable size are checked per run instead).
 */
export function planTextMemory(t: DecoderConfig, weightBytes: number, context: number, visionScratch = 0): MemoryPlan {
  const kvCache = 2 * t.layers * context * t.kvHeads * t.headDim * 4;
  const textScratch = context * (3 * t.hidden + 2 * t.heads * t.headDim + t.intermediate) * 4;
  const activations = textScratch + visionScratch + t.vocab * 4 * 2;
  return { weights: weightBytes, kvCache, activations, total: weightBytes + kvCache + activations };
}

/** The checked two-pass load of a family's weights: returns the uploaded parts and the memory facts runs check against. */
export async function loadChecked<P>(
  ctx: GpuContext,
  ckpt: Checkpoint,
  name: string,
  opts: LoadOptions,
  text: DecoderConfig,
  plan: (weightBytes: number, context: number) => MemoryPlan,
  loadWeights: (w: WeightLoader) => Promise<P>,
): Promise<{ parts: P; memory: { weights: number; budget: number | undefined; budgetWhat: string } }> {
  const loaderOpts = { dtype: opts.dtype, maxBindingBytes: opts.maxBindingBytes };
  const check = new WeightLoader(null, ckpt, undefined, 0, loaderOpts);
  await loadWeights(check);
  check.finishCheck();
  const context = opts.contextLength ?? Math.min(2048, text.maxPositions);
  const budget = await checkMemory(ctx, plan(check.bytesNeeded, context), context, opts, name);
  const loader = new WeightLoader(ctx, ckpt, opts.onProgress, check.sourceBytes, loaderOpts);
  const parts = await loadWeights(loader);
  return { parts, memory: { weights: check.bytesNeeded, ...budget } };
}

/**
 * Refuse a model whose plan exceeds the memory budget, with the numbers, before anything is allocated. Returns the
 * budget it checked against (runs check their per-image vision scratch against the same figure).
 */
export async function checkMemory(
  ctx: GpuContext,
  plan: MemoryPlan,
  context: number,
  opts: LoadOptions,
  name: string,
): Promise<{ budget: number | undefined; budgetWhat: string }> {
  let budget = opts.memoryBudget;
  let what = 'the given memory budget';
  // A CPU adapter's "GPU memory" is system RAM: in Node its free memory, in a browser half of what
  // navigator.deviceMemory reports (a rounded, capped figure). WebGPU does not tell a real GPU's memory.
  if (budget === undefined && isCpuAdapter(ctx.gpu.adapterName)) {
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
  return { budget, budgetWhat: what };
}
