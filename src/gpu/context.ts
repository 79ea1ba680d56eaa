// The engine's GPU context: buffer creation checked against the adapter's limits, a pipeline cache with
// explicit bind-group layouts, a recorder that turns one forward step into one command encoder, and readback.

import { type Gpu, subgroupsOffByEnv } from './device.js';
import type { GpuTimer } from './gpu-timer.js';
import { preprocess, definesKey, type Defines } from './wgsl.js';
import { Tensor, type DType, dtypeBytes, numel } from './tensor.js';

/** How a shader binding is used; binding 0 of every kernel is its uniform parameter block. */
export type BindingKind = 'uniform' | 'read' | 'write';

export interface KernelSpec {
  /** Shader family name, e.g. 'matmul' (used in labels and cache keys). */
  name: string;
  source: string;
  entryPoint?: string;
  defines?: Defines;
  /** WGSL `override` constants (workgroup sizes and the like). */
  constants?: Record<string, number>;
  /** Binding kinds, indexed by binding number; `null` marks a binding this variant does not declare. */
  bindings: (BindingKind | null)[];
  /**
   * Compile the kernel's subgroup form: the SUBGROUPS define is set (and keys the pipeline) and the source is
   * prefixed with the directives it needs. Launchers pass `ctx.subgroups`; refused on a context without them.
   */
  subgroups?: boolean;
}

export interface Kernel {
  key: string;
  /** KernelSpec.name (the counters' kernel family). */
  name: string;
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  bindings: (BindingKind | null)[];
  /** Compiled in its subgroup form (KernelSpec.subgroups). */
  subgroups: boolean;
}

/**
 * The directives a subgroup form starts with: the 'subgroups' extension, and the `subgroup_id` / `num_subgroups`
 * builtins, without which the spec does not say which invocations share a subgroup, so subgroups could not be
 * combined through workgroup memory in a fixed order. One line, so compiler messages are off by one line at most.
 */
const SUBGROUP_DIRECTIVES = 'enable subgroups; requires subgroup_id;\n';

/**
 * Whether kernels may use their subgroup forms on this device: the device has the 'subgroups' feature, WGSL offers
 * the `subgroup_id` builtin, and the caller has not turned them off (`wanted`). Pure, for tests.
 */
export function subgroupsUsable(gpu: Pick<Gpu, 'features' | 'wgslFeatures'>, wanted: boolean): boolean {
  return wanted && gpu.features.has('subgroups') && gpu.wgslFeatures.has('subgroup_id');
}

export interface ContextOptions {
  /**
   * Use the kernels' subgroup forms where the device has subgroups (default: yes, unless VLMSCOPE_NO_SUBGROUPS=1).
   * False runs the plain forms on the same device, e.g. to compare the two.
   */
  subgroups?: boolean;
  /**
   * Fold RMSNorms into the decode GEMV that reads them where the variant can (matmul's RowNorm): by default the
   * adapter's rule (kernels/matmul.ts normFolds: GPUs yes, CPU adapters no); true or false forces it, e.g. to run the
   * folded path on a CPU adapter.
   */
  foldNorms?: boolean;
}

export type BufferRef = GPUBuffer | { buffer: GPUBuffer; offset: number; size: number };

interface DispatchOp {
  kind: 'dispatch';
  kernel: Kernel;
  resources: (BufferRef | null)[];
  uniformOffset: number;
  uniformSize: number;
  workgroups: [number, number, number];
  label: string;
}
interface CopyOp {
  kind: 'copy';
  src: GPUBuffer;
  srcOffset: number;
  dst: GPUBuffer;
  dstOffset: number;
  size: number;
}

/** Uniform blocks are 256-byte aligned slots in one arena buffer, written once per submit. */
const UNIFORM_ALIGN = 256;
/** Bind groups kept for reuse per context (GpuContext.bindGroupFor). */
const BIND_GROUP_CACHE = 4096;

/**
 * Work counters of a context (benchmarks, tests): what was submitted, dispatched, bound, uploaded, read back and
 * allocated. Off by default (`GpuContext.counters` is null: nothing is counted and nothing costs more than a null
 * check); `ctx.countWork()` turns them on. Take a `snapshot()` before and after the work of interest and subtract.
 */
export class GpuCounters {
  /** queue.submit calls: one per recorder step, one per readback (its staging copy). */
  submits = 0;
  dispatches = 0;
  /** Bind groups created (a dispatch over the same buffers and ranges as an earlier one reuses its group). */
  bindGroups = 0;
  /** Compute passes begun (a copy between dispatches ends one). */
  passes = 0;
  /** Buffer-to-buffer copies recorded in steps (captures, cache moves), and their bytes. */
  copies = 0;
  copyBytes = 0;
  /** queue.writeBuffer calls from the host (uniform arena included) and their bytes. */
  uploads = 0;
  uploadBytes = 0;
  /** Dispatches of kernels compiled in their subgroup form (KernelSpec.subgroups). */
  subgroupDispatches = 0;
  /** Readbacks (mapped staging copies) and their bytes. */
  readbacks = 0;
  readbackBytes = 0;
  /** Buffers created through the context and the most bytes alive at once (context accounting). */
  buffersCreated = 0;
  peakAllocatedBytes = 0;
  /**
   * Storage bytes bound per buffer, summed over dispatches: a range binding counts its size, a whole-buffer binding
   * the buffer's size (the uniform block is not counted). What a kernel may read or write, an upper bound on what it does.
   */
  readonly bound = new Map<GPUBuffer, number>();
  /** Per kernel family (KernelSpec.name): dispatches, storage bytes bound, and those per buffer. */
  readonly kernels = new Map<string, { dispatches: number; boundBytes: number; bound: Map<GPUBuffer, number> }>();

  /** A copy of the counts now (the maps copied too). */
  snapshot(): GpuCounters {
    const c = Object.assign(new GpuCounters(), this) as GpuCounters;
    (c as { bound: Map<GPUBuffer, number> }).bound = new Map(this.bound);
    (c as { kernels: GpuCounters['kernels'] }).kernels = new Map([...this.kernels].map(([k, v]) => [k, { ...v, bound: new Map(v.bound) }]));
    return c;
  }

  /** The counts since `earlier` (a snapshot of this object); peakAllocatedBytes stays this one's. */
  since(earlier: GpuCounters): GpuCounters {
    const d = this.snapshot();
    for (const k of ['submits', 'dispatches', 'bindGroups', 'passes', 'copies', 'copyBytes', 'uploads', 'uploadBytes', 'subgroupDispatches', 'readbacks', 'readbackBytes', 'buffersCreated'] as const) {
      d[k] -= earlier[k];
    }
    subtract(d.bound, earlier.bound);
    for (const [name, e] of earlier.kernels) {
      const k = d.kernels.get(name);
      if (!k) continue;
      k.dispatches -= e.dispatches;
      k.boundBytes -= e.boundBytes;
      subtract(k.bound, e.bound);
      if (!k.dispatches) d.kernels.delete(name);
    }
    return d;
  }

  /** Bytes bound in all, or only of the buffers `which` accepts; of one kernel family when `kernel` is given. */
  boundBytes(which?: (b: GPUBuffer) => boolean, kernel?: string): number {
    let n = 0;
    const map = kernel === undefined ? this.bound : (this.kernels.get(kernel)?.bound ?? new Map<GPUBuffer, number>());
    for (const [b, bytes] of map) if (!which || which(b)) n += bytes;
    return n;
  }
}

/** A binding as a range: a whole buffer is [0, size). */
function asRange(r: BufferRef): { buffer: GPUBuffer; offset: number; size: number } {
  return 'offset' in r && 'buffer' in r ? r : { buffer: r, offset: 0, size: r.size };
}

function subtract(from: Map<GPUBuffer, number>, earlier: Map<GPUBuffer, number>): void {
  for (const [b, n] of earlier) {
    const left = (from.get(b) ?? 0) - n;
    if (left) from.set(b, left);
    else from.delete(b);
  }
}

export class GpuContext {
  readonly device: GPUDevice;
  private kernels = new Map<string, Kernel>();
  private arena: GPUBuffer | null = null;
  private bindGroups = new Map<string, GPUBindGroup>();
  private bufferIds = new WeakMap<GPUBuffer, number>();
  private nextBufferId = 1;
  /** Total bytes of GPU buffers created and not destroyed through this context. */
  allocatedBytes = 0;
  /** Work counters; null (the default) counts nothing. See countWork. */
  counters: GpuCounters | null = null;
  /** WebGPU reports shader and command errors asynchronously; they are collected here and thrown at the next sync. */
  private pendingErrors: Promise<string | null>[] = [];
  /**
   * Whether this context's kernels use their subgroup forms (the one question launchers ask: `subgroups:
   * ctx.subgroups` in their KernelSpec). Fixed at construction: see subgroupsUsable and ContextOptions.
   */
  readonly subgroups: boolean;
  /** ContextOptions.foldNorms: undefined leaves it to the adapter's rule. */
  readonly foldNorms: boolean | undefined;

  constructor(
    readonly gpu: Gpu,
    options: ContextOptions = {},
  ) {
    this.device = gpu.device;
    this.subgroups = subgroupsUsable(gpu, options.subgroups ?? !subgroupsOffByEnv());
    this.foldNorms = options.foldNorms;
  }

  /** Run `fn` inside validation + out-of-memory error scopes whose result is checked at the next `checkErrors`. */
  scoped<T>(what: string, fn: () => T): T {
    this.device.pushErrorScope('validation');
    this.device.pushErrorScope('out-of-memory');
    try {
      return fn();
    } finally {
      const oom = this.device.popErrorScope();
      const val = this.device.popErrorScope();
      this.pendingErrors.push(
        Promise.all([oom, val]).then(([o, v]) => {
          const e = o ?? v;
          return e ? `${what}: ${o ? 'out of GPU memory: ' : ''}${e.message}` : null;
        }),
      );
    }
  }

  /** Throw the first GPU error reported since the last check (a broken shader must not read back as zeros). */
  async checkErrors(): Promise<void> {
    const pending = this.pendingErrors;
    this.pendingErrors = [];
    const errors = (await Promise.all(pending)).filter((e): e is string => !!e);
    if (errors.length) throw new Error(`GPU error in ${errors[0]}${errors.length > 1 ? ` (and ${errors.length - 1} more)` : ''}`);
  }

  /** Wait until all submitted work finished, then surface any GPU error. */
  async sync(): Promise<void> {
    await this.device.queue.onSubmittedWorkDone();
    await this.checkErrors();
  }

  get limits() {
    return this.gpu.limits;
  }

  /** Turn the work counters on (kept if already on) and return them. */
  countWork(): GpuCounters {
    this.counters ??= new GpuCounters();
    this.counters.peakAllocatedBytes = Math.max(this.counters.peakAllocatedBytes, this.allocatedBytes);
    return this.counters;
  }

  /** Create a buffer, refusing with a clear message when it exceeds the adapter's limits. */
  createBuffer(size: number, usage: GPUBufferUsageFlags, label: string): GPUBuffer {
    const padded = Math.max(4, Math.ceil(size / 4) * 4);
    if (padded > this.limits.maxBufferSize) {
      throw new Error(
        `buffer ${label} needs ${fmtBytes(padded)} but this adapter's maxBufferSize is ${fmtBytes(this.limits.maxBufferSize)}`,
      );
    }
    if (usage & GPUBufferUsage.STORAGE && padded > this.limits.maxStorageBufferBindingSize) {
      throw new Error(
        `buffer ${label} needs ${fmtBytes(padded)} but this adapter binds at most ` +
          `${fmtBytes(this.limits.maxStorageBufferBindingSize)} (maxStorageBufferBindingSize)`,
      );
    }
    const buffer = this.device.createBuffer({ size: padded, usage, label });
    this.allocatedBytes += padded;
    const c = this.counters;
    if (c) {
      c.buffersCreated++;
      if (this.allocatedBytes > c.peakAllocatedBytes) c.peakAllocatedBytes = this.allocatedBytes;
    }
    return buffer;
  }

  destroyBuffer(buffer: GPUBuffer): void {
    this.allocatedBytes -= buffer.size;
    buffer.destroy();
  }

  /** A storage tensor of f32 activations (contents undefined). */
  activation(shape: readonly number[], label: string): Tensor {
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    return new Tensor(this.createBuffer(numel(shape) * 4, usage, label), shape, 'f32', label);
  }

  /** Upload raw little-endian bytes of a tensor as stored (f16/bf16 stay packed). */
  uploadTensor(bytes: Uint8Array, shape: readonly number[], dtype: DType, label: string): Tensor {
    const expected = numel(shape) * dtypeBytes(dtype);
    if (bytes.byteLength !== expected) {
      throw new Error(`tensor ${label}: ${bytes.byteLength} bytes for shape [${shape.join(', ')}] ${dtype} (expected ${expected})`);
    }
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    const buffer = this.createBuffer(bytes.byteLength, usage, label);
    this.writeBytes(buffer, 0, bytes);
    return new Tensor(buffer, shape, dtype, label);
  }

  uploadF32(data: Float32Array, shape: readonly number[], label: string): Tensor {
    return this.uploadTensor(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), shape, 'f32', label);
  }

  /** Queue a write of a typed array (any view) into a buffer. */
  write(buffer: GPUBuffer, offset: number, data: ArrayBufferView): void {
    this.writeBytes(buffer, offset, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }

  /** writeBuffer needs 4-byte multiples; pad a copy when the source is not. */
  writeBytes(buffer: GPUBuffer, offset: number, bytes: Uint8Array): void {
    const c = this.counters;
    if (c) {
      c.uploads++;
      c.uploadBytes += bytes.byteLength;
    }
    if (bytes.byteLength % 4 === 0) {
      this.device.queue.writeBuffer(buffer, offset, bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength);
    } else {
      const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
      padded.set(bytes);
      this.device.queue.writeBuffer(buffer, offset, padded.buffer, 0, padded.byteLength);
    }
  }

  kernel(spec: KernelSpec): Kernel {
    const subgroups = !!spec.subgroups;
    if (subgroups && !this.subgroups) {
      throw new Error(`kernel ${spec.name}: its subgroup form was asked for, but this context does not use subgroups (ctx.subgroups is false)`);
    }
    const constants = spec.constants ?? {};
    const constKey = Object.keys(constants)
      .sort()
      .map((k) => `${k}=${constants[k]}`)
      .join(',');
    // SUBGROUPS is a define like any other, so it is part of the key: the two forms are two pipelines.
    const defines = { ...spec.defines, SUBGROUPS: subgroups };
    const key = `${spec.name}:${spec.entryPoint ?? 'main'}[${definesKey(defines)}][${constKey}]`;
    const cached = this.kernels.get(key);
    if (cached) return cached;
    // WebGPU guarantees 8 and adapters offer more or not: a kernel with every optional binding on (an
    // attention with a pattern capture, head vectors, key ranges and knockout binds 10) is refused here with the
    // numbers, not as a pipeline that fails to compile.
    const storage = spec.bindings.filter((k) => k === 'read' || k === 'write').length;
    const maxStorage = this.limits.maxStorageBuffersPerShaderStage;
    if (storage > maxStorage) {
      throw new Error(
        `kernel ${spec.name}: binds ${storage} storage buffers, but this adapter allows ${maxStorage} per shader stage ` +
          '(maxStorageBuffersPerShaderStage); ask for fewer captures or interventions in one run',
      );
    }
    const code = (subgroups ? SUBGROUP_DIRECTIVES : '') + preprocess(spec.source, defines, `${spec.name}.wgsl`);
    return this.scoped(`compiling ${key}`, () => this.createKernel(key, code, spec, subgroups));
  }

  private createKernel(key: string, code: string, spec: KernelSpec, subgroups: boolean): Kernel {
    const constants = spec.constants ?? {};
    const module = this.device.createShaderModule({ code, label: key });
    const entries: GPUBindGroupLayoutEntry[] = [];
    spec.bindings.forEach((kind, binding) => {
      if (!kind) return;
      const type: GPUBufferBindingType =
        kind === 'uniform' ? 'uniform' : kind === 'read' ? 'read-only-storage' : 'storage';
      // The uniform block sits in the shared arena at a per-dispatch offset: dynamic, so a bind group does not
      // depend on where this step's uniforms landed and can be reused (see bindGroupFor).
      entries.push({ binding, visibility: GPUShaderStage.COMPUTE, buffer: { type, hasDynamicOffset: kind === 'uniform' } });
    });
    const layout = this.device.createBindGroupLayout({ entries, label: key });
    const pipeline = this.device.createComputePipeline({
      label: key,
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout], label: key }),
      compute: { module, entryPoint: spec.entryPoint ?? 'main', constants },
    });
    const kernel = { key, name: spec.name, pipeline, layout, bindings: spec.bindings, subgroups };
    this.kernels.set(key, kernel);
    return kernel;
  }

  recorder(label = 'step'): Recorder {
    return new Recorder(this, label);
  }

  /**
   * @internal A bind group of `kernel` over these resources (binding 0: the uniform arena, bound at offset 0 with a
   * dynamic offset per dispatch), made once and reused while the same buffers and ranges are bound: a decode step
   * binds the same weights and scratch every token, so most of its groups are not created again. Least recently
   * used groups beyond BIND_GROUP_CACHE are dropped (ranges that move every token, like a KV row, make new keys).
   * `made` is set when this call created the group.
   */
  bindGroupFor(kernel: Kernel, arena: GPUBuffer, uniformSize: number, resources: (BufferRef | null)[], label: string): { group: GPUBindGroup; made: boolean } {
    const id = (b: GPUBuffer) => {
      let n = this.bufferIds.get(b);
      if (n === undefined) this.bufferIds.set(b, (n = this.nextBufferId++));
      return n;
    };
    const parts = [kernel.key, `${id(arena)}:${uniformSize}`];
    const bound: [number, { buffer: GPUBuffer; offset: number; size: number }][] = [];
    kernel.bindings.forEach((kind, binding) => {
      if (!kind || binding === 0) return;
      const r = resources[binding];
      if (!r) throw new Error(`${label}: binding ${binding} has no buffer`);
      const range = asRange(r);
      parts.push(`${binding}:${id(range.buffer)}:${range.offset}:${range.size}`);
      bound.push([binding, range]);
    });
    const key = parts.join('|');
    const hit = this.bindGroups.get(key);
    if (hit) {
      this.bindGroups.delete(key);
      this.bindGroups.set(key, hit);
      return { group: hit, made: false };
    }
    const entries: GPUBindGroupEntry[] = bound.map(([binding, resource]) => ({ binding, resource }));
    if (kernel.bindings[0]) entries.unshift({ binding: 0, resource: { buffer: arena, offset: 0, size: uniformSize } });
    const group = this.device.createBindGroup({ layout: kernel.layout, entries, label });
    this.bindGroups.set(key, group);
    if (this.bindGroups.size > BIND_GROUP_CACHE) this.bindGroups.delete(this.bindGroups.keys().next().value!);
    return { group, made: true };
  }

  /** @internal the shared uniform arena, grown on demand. */
  uniformArena(size: number): GPUBuffer {
    if (!this.arena || this.arena.size < size) {
      if (this.arena) this.destroyBuffer(this.arena);
      const grown = Math.max(size, 64 * 1024, (this.arena?.size ?? 0) * 2);
      this.arena = this.createBuffer(grown, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, 'uniform-arena');
    }
    return this.arena;
  }

  /** Read `count` f32 values starting at byte `offset` of a buffer (one staging copy + map). */
  async readF32(buffer: GPUBuffer, offset = 0, count?: number): Promise<Float32Array> {
    const bytes = await this.readBytes(buffer, offset, (count ?? (buffer.size - offset) / 4) * 4);
    return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  }

  async readU32(buffer: GPUBuffer, offset = 0, count = 1): Promise<Uint32Array> {
    const bytes = await this.readBytes(buffer, offset, count * 4);
    return new Uint32Array(bytes.buffer, bytes.byteOffset, count);
  }

  async readBytes(buffer: GPUBuffer, offset: number, size: number): Promise<Uint8Array> {
    this.checkAlive();
    const c = this.counters;
    if (c) {
      c.readbacks++;
      c.readbackBytes += size;
      c.submits++;
    }
    const staging = this.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(buffer, offset, staging, 0, size);
    this.device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const out = new Uint8Array(staging.getMappedRange().slice(0));
    staging.unmap();
    staging.destroy();
    await this.checkErrors();
    return out;
  }

  checkAlive(): void {
    if (this.gpu.lost) throw new Error(`the GPU device was lost: ${this.gpu.lost}`);
  }
}

/**
 * Records one step (a forward pass, a decode step) as a list of dispatches and copies, then encodes them into
 * a single command encoder: compute dispatches share one pass until a copy needs to interleave.
 */
export class Recorder {
  private ops: (DispatchOp | CopyOp)[] = [];
  private uniforms: ArrayBuffer[] = [];
  private uniformBytes = 0;

  constructor(
    private ctx: GpuContext,
    private label: string,
  ) {}

  /**
   * Queue a dispatch. `resources[i]` binds binding i (the uniform block at binding 0 is filled from `uniform`).
   * Workgroup counts above the per-dimension limit must be folded by the caller (see `fold`).
   */
  dispatch(
    kernel: Kernel,
    uniform: ArrayBuffer,
    resources: (BufferRef | null)[],
    workgroups: [number, number?, number?],
    label = kernel.key,
  ): void {
    const [x, y = 1, z = 1] = workgroups;
    const max = this.ctx.limits.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max) {
      throw new Error(`${label}: dispatch of [${x}, ${y}, ${z}] workgroups exceeds the adapter's limit of ${max} per dimension`);
    }
    if (x === 0 || y === 0 || z === 0) return;
    const uniformOffset = this.uniformBytes;
    this.uniforms.push(uniform);
    this.uniformBytes += Math.ceil(uniform.byteLength / UNIFORM_ALIGN) * UNIFORM_ALIGN;
    this.ops.push({
      kind: 'dispatch',
      kernel,
      resources,
      uniformOffset,
      uniformSize: uniform.byteLength,
      workgroups: [x, y, z],
      label,
    });
  }

  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, size: number): void {
    if (size > 0) this.ops.push({ kind: 'copy', src, srcOffset, dst, dstOffset, size });
  }

  get dispatchCount(): number {
    return this.ops.filter((o) => o.kind === 'dispatch').length;
  }

  /** Record the queued work into one command buffer and submit it; `timer` times its compute passes (GpuTimer). */
  submit(timer?: GpuTimer): void {
    this.ctx.checkAlive();
    this.ctx.scoped(`step '${this.label}'`, () => this.encodeAndSubmit(timer));
  }

  private encodeAndSubmit(timer?: GpuTimer): void {
    const device = this.ctx.device;
    const arena = this.ctx.uniformArena(Math.max(this.uniformBytes, UNIFORM_ALIGN));
    if (this.uniformBytes) {
      const staging = new Uint8Array(this.uniformBytes);
      let off = 0;
      for (const u of this.uniforms) {
        staging.set(new Uint8Array(u), off);
        off += Math.ceil(u.byteLength / UNIFORM_ALIGN) * UNIFORM_ALIGN;
      }
      device.queue.writeBuffer(arena, 0, staging);
    }
    const c = this.ctx.counters;
    if (c) {
      c.submits++;
      if (this.uniformBytes) {
        c.uploads++;
        c.uploadBytes += this.uniformBytes;
      }
    }
    const encoder = device.createCommandEncoder({ label: this.label });
    let pass: GPUComputePassEncoder | null = null;
    let passes = 0;
    for (const op of this.ops) {
      if (op.kind === 'copy') {
        if (pass) {
          pass.end();
          pass = null;
        }
        encoder.copyBufferToBuffer(op.src, op.srcOffset, op.dst, op.dstOffset, op.size);
        if (c) {
          c.copies++;
          c.copyBytes += op.size;
        }
        continue;
      }
      if (!pass) {
        pass = encoder.beginComputePass({ label: this.label, ...(timer ? { timestampWrites: timer.writes(passes) } : {}) });
        passes++;
        if (c) c.passes++;
      }
      if (c) countDispatch(c, op);
      const { group, made } = this.ctx.bindGroupFor(op.kernel, arena, op.uniformSize, op.resources, op.label);
      if (c && made) c.bindGroups++;
      pass.setPipeline(op.kernel.pipeline);
      pass.setBindGroup(0, group, op.kernel.bindings[0] ? [op.uniformOffset] : []);
      pass.dispatchWorkgroups(...op.workgroups);
    }
    if (pass) pass.end();
    timer?.resolve(encoder, passes);
    device.queue.submit([encoder.finish()]);
    this.ops = [];
    this.uniforms = [];
    this.uniformBytes = 0;
  }
}

/** Counts one dispatch: its bind group and the storage bytes of each binding (GpuCounters.bound). */
function countDispatch(c: GpuCounters, op: DispatchOp): void {
  c.dispatches++;
  if (op.kernel.subgroups) c.subgroupDispatches++;
  let k = c.kernels.get(op.kernel.name);
  if (!k) {
    k = { dispatches: 0, boundBytes: 0, bound: new Map() };
    c.kernels.set(op.kernel.name, k);
  }
  k.dispatches++;
  op.kernel.bindings.forEach((kind, binding) => {
    if (!kind || kind === 'uniform') return;
    const r = op.resources[binding];
    if (!r) return;
    const { buffer, size } = asRange(r);
    c.bound.set(buffer, (c.bound.get(buffer) ?? 0) + size);
    k.bound.set(buffer, (k.bound.get(buffer) ?? 0) + size);
    k.boundBytes += size;
  });
}

/** Split a 1-D workgroup count over x and y so neither exceeds the per-dimension limit. */
export function fold(count: number, max = 65535): [number, number] {
  if (count <= max) return [count, 1];
  const y = Math.ceil(count / max);
  return [Math.ceil(count / y), y];
}

/** Little helper to build uniform blocks: u32 / i32 / f32 fields in declaration order (4 bytes each). */
export class Uniforms {
  private view: DataView;
  private buf: ArrayBuffer;
  private n = 0;
  constructor(maxFields = 32) {
    this.buf = new ArrayBuffer(maxFields * 4);
    this.view = new DataView(this.buf);
  }
  u32(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Error(`uniform u32 out of range: ${v}`);
    this.view.setUint32(this.n++ * 4, v, true);
    return this;
  }
  i32(v: number): this {
    this.view.setInt32(this.n++ * 4, v, true);
    return this;
  }
  f32(v: number): this {
    this.view.setFloat32(this.n++ * 4, v, true);
    return this;
  }
  done(): ArrayBuffer {
    // Uniform structs are 16-byte aligned in size.
    return this.buf.slice(0, Math.max(16, Math.ceil((this.n * 4) / 16) * 16));
  }
}

export function fmtBytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(2)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}
