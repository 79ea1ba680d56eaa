// The load-time memory check every family runs: weights + KV cache + activations against the budget (the free RAM
// of a CPU adapter, or what the caller gives), before anything is allocated.

import { type GpuContext, fmtBytes } from '../gpu/context.js';
import type { LoadOptions, MemoryPlan } from './model.js';

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
  return { budget, budgetWhat: what };
}
