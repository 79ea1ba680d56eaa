// GPU time of a step: timestamps written at the beginning and the end of each of its compute passes
// ('timestamp-query', requested with AcquireOptions.timestamps), resolved after the passes in the same command
// buffer and read back. What a benchmark wants on a GPU, where the host's wall time of a short step is mostly
// submit and wait overhead. Copies between passes are not counted (they run outside the passes).
//
//   const timer = new GpuTimer(ctx);
//   const rec = ctx.recorder('timed');
//   ...dispatches...
//   rec.submit(timer);
//   const ms = await timer.read();

import type { GpuContext } from './context.js';

export class GpuTimer {
  private readonly querySet: GPUQuerySet;
  private readonly resolved: GPUBuffer;
  /** Passes written by the last submit that is not read yet. */
  private pending = 0;

  /** `maxPasses`: the most compute passes one timed step may have. */
  constructor(
    private readonly ctx: GpuContext,
    readonly maxPasses = 8,
  ) {
    if (!GpuTimer.available(ctx)) {
      throw new Error("GpuTimer: this device has no 'timestamp-query' (acquire it with { timestamps: true } on an adapter that offers it)");
    }
    this.querySet = ctx.device.createQuerySet({ type: 'timestamp', count: 2 * maxPasses, label: 'gpu-timer' });
    this.resolved = ctx.device.createBuffer({ size: 16 * maxPasses, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC, label: 'gpu-timer-resolved' });
  }

  /** Whether the context's device can write timestamps. */
  static available(ctx: GpuContext): boolean {
    return ctx.gpu.features.has('timestamp-query');
  }

  /** @internal The pass descriptor's timestampWrites for pass `i` of the step being encoded. */
  writes(i: number): GPUComputePassTimestampWrites {
    if (i >= this.maxPasses) throw new Error(`GpuTimer: a timed step has more than ${this.maxPasses} compute passes`);
    return { querySet: this.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 };
  }

  /** @internal After the step's `passes` passes: resolve their timestamps in the same command buffer. */
  resolve(encoder: GPUCommandEncoder, passes: number): void {
    if (this.pending) throw new Error('GpuTimer: the previous timed step was not read');
    if (passes) encoder.resolveQuerySet(this.querySet, 0, 2 * passes, this.resolved, 0);
    this.pending = passes;
  }

  /** Milliseconds of GPU time of the last timed step: the sum over its passes of end minus beginning. */
  async read(): Promise<number> {
    const passes = this.pending;
    this.pending = 0;
    if (!passes) return 0;
    const bytes = await this.ctx.readBytes(this.resolved, 0, 16 * passes);
    const t = new BigUint64Array(bytes.buffer, bytes.byteOffset, 2 * passes);
    let ns = 0n;
    for (let i = 0; i < passes; i++) if (t[2 * i + 1] > t[2 * i]) ns += t[2 * i + 1] - t[2 * i];
    return Number(ns) / 1e6;
  }

  destroy(): void {
    this.querySet.destroy();
    this.resolved.destroy();
  }
}
