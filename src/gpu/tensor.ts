// GPU tensors. Activations are always f32; weights keep their stored dtype (f16/bf16 packed two per u32 and
// unpacked in the shader), so `dtype` travels with the buffer and selects the shader variant.

export type DType = 'f32' | 'f16' | 'bf16';

export function dtypeBytes(d: DType): number {
  return d === 'f32' ? 4 : 2;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

export class Tensor {
  constructor(
    readonly buffer: GPUBuffer,
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly label: string,
  ) {}

  get numel(): number {
    return numel(this.shape);
  }

  get byteLength(): number {
    return this.numel * dtypeBytes(this.dtype);
  }

  toString(): string {
    return `${this.label}[${this.shape.join(', ')}] ${this.dtype}`;
  }
}

/** Throws a shape error naming the tensor and both shapes. */
export function expectShape(t: { shape: readonly number[]; label: string }, shape: readonly number[], what = ''): void {
  const ok = t.shape.length === shape.length && t.shape.every((s, i) => s === shape[i]);
  if (!ok) {
    throw new Error(
      `${what ? what + ': ' : ''}tensor ${t.label} has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`,
    );
  }
}
