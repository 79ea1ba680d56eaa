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

/**
 * A weight too large for one storage binding (or one buffer), kept as consecutive blocks of rows, each its own
 * buffer. Matmul runs once per block into the matching output columns; the embedding gather once per block.
 */
export class RowSplitTensor {
  constructor(
    readonly parts: Tensor[],
    /** First row of each part. */
    readonly rowStarts: number[],
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly label: string,
  ) {}

  get numel(): number {
    return numel(this.shape);
  }
}

/** A weight as the kernels take it: one buffer, or row blocks of several. */
export type Weight = Tensor | RowSplitTensor;

/** The (tensor, first row) blocks of a weight; a plain tensor is one block. */
export function weightParts(w: Weight): { tensor: Tensor; rowStart: number }[] {
  return w instanceof RowSplitTensor ? w.parts.map((tensor, i) => ({ tensor, rowStart: w.rowStarts[i] })) : [{ tensor: w, rowStart: 0 }];
}
