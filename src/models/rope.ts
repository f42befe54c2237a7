/**
 * Rotary-embedding tables for arbitrary (possibly non-contiguous) positions, rounded the way
 * transformers computes them in fp32: inv_freq = 1 / theta^(2i/d), angle = position * inv_freq,
 * emb = cat(angle, angle).
 */
export interface RopeTables {
  cos: Float32Array; // [positions, headDim]
  sin: Float32Array;
}

export function inverseFrequencies(headDim: number, theta: number): Float32Array {
  const half = headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = Math.fround(1 / Math.fround(theta ** Math.fround((2 * i) / headDim)));
  return inv;
}

export function ropeTables(positions: readonly number[], headDim: number, invFreq: Float32Array): RopeTables {
  const half = headDim / 2;
  const cos = new Float32Array(positions.length * headDim);
  const sin = new Float32Array(positions.length * headDim);
  positions.forEach((p, row) => {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(p * invFreq[i]!);
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      cos[row * headDim + i] = c;
      cos[row * headDim + half + i] = c;
      sin[row * headDim + i] = s;
      sin[row * headDim + half + i] = s;
    }
  });
  return { cos, sin };
}
