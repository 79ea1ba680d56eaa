// Rotary position tables on the CPU (float64 angles, stored f32) for kernels/rope.ts, and the 1-D position scheme
// (Llama: position = sequence index) as the model's TextPositions.

import type { TextPositions } from './vlm.js';

/** Hugging Face inverse frequencies 1 / theta^(2i / dim) for i < dim / 2, in float64. */
export function inverseFrequencies(dim: number, theta: number): Float64Array {
  if (!Number.isInteger(dim) || dim < 2 || dim % 2 !== 0) throw new Error(`rotary: dimension must be a positive even integer, got ${dim}`);
  if (!(theta > 0) || !Number.isFinite(theta)) throw new Error(`rotary: theta must be a finite number > 0, got ${theta}`);
  const half = dim / 2;
  const out = new Float64Array(half);
  for (let i = 0; i < half; i++) out[i] = 1 / Math.pow(theta, (2 * i) / dim);
  return out;
}

/**
 * The (cos, sin) table of `pos * invFreq[j]` per position row: layout [positions.length, invFreq.length, 2], angles
 * and trigonometry in float64, stored as f32. Row r serves the x row the rope kernel pairs with it.
 */
export function rotaryTable(positions: ArrayLike<number>, invFreq: Float64Array): Float32Array {
  const half = invFreq.length;
  const out = new Float32Array(positions.length * half * 2);
  for (let r = 0; r < positions.length; r++) {
    const pos = positions[r];
    if (!Number.isFinite(pos)) throw new Error(`rotary: position ${r} is ${pos}`);
    for (let j = 0; j < half; j++) {
      const angle = pos * invFreq[j];
      out[(r * half + j) * 2] = Math.cos(angle);
      out[(r * half + j) * 2 + 1] = Math.sin(angle);
    }
  }
  return out;
}

/** Llama's 1-D rotary: position = sequence index. */
export class RotaryPositions implements TextPositions {
  private invFreq: Float64Array;
  constructor(headDim: number, theta: number) {
    this.invFreq = inverseFrequencies(headDim, theta);
  }
  prompt(ids: readonly number[]) {
    const positions = Int32Array.from(ids, (_, i) => i);
    return { axes: 1, positions, ropeDelta: 0, table: rotaryTable(positions, this.invFreq) };
  }
  decode(index: number, ropeDelta: number): Float32Array {
    return rotaryTable([index + ropeDelta], this.invFreq);
  }
}

