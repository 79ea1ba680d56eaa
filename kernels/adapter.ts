// What the launchers' plans (planMatmul, planAttention) need to know about an adapter: whether it is a CPU
// implementation (workgroup memory and barriers cost more than they save there) and its workgroup limits.

import type { GpuContext } from '../src/gpu/context.js';

/** What a launcher's variant choice needs to know about an adapter. */
export interface AdapterProfile {
  /** A CPU implementation (SwiftShader, llvmpipe/lavapipe, WARP): workgroup memory and barriers cost more than they save. */
  cpu: boolean;
  maxInvocations: number;
  maxWorkgroupStorage: number;
  /** maxComputeWorkgroupsPerDimension (65535 when not given). */
  maxWorkgroups?: number;
}

const CPU_ADAPTER = /swiftshader|llvmpipe|lavapipe|softpipe|microsoft basic render|\bwarp\b|\bcpu\b/i;

/** Whether an adapter (by its description) is a CPU implementation, whose "GPU memory" is system RAM. */
export function isCpuAdapter(adapterName: string): boolean {
  return CPU_ADAPTER.test(adapterName);
}

const profiles = new WeakMap<GpuContext, AdapterProfile>();

/** The profile of this context's adapter (computed once per context). */
export function adapterProfile(ctx: GpuContext): AdapterProfile {
  let p = profiles.get(ctx);
  if (!p) {
    p = {
      cpu: isCpuAdapter(ctx.gpu.adapterName),
      maxInvocations: ctx.limits.maxComputeInvocationsPerWorkgroup,
      maxWorkgroupStorage: ctx.limits.maxComputeWorkgroupStorageSize,
      maxWorkgroups: ctx.limits.maxComputeWorkgroupsPerDimension,
    };
    profiles.set(ctx, p);
  }
  return p;
}
