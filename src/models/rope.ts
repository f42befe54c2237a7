/**
 * Rotary-embedding tables for arbitrary (possibly non-contiguous) positions, rounded the way
 * transformers computes them in fp32: inv_freq = 1 / theta^(2i/d), angle = position * inv_freq.
 * Half tables: transformers' emb = cat(angle, angle) repeats them, ONNX Runtime's RotaryEmbedding
 * (rotate-half form, not interleaved) takes them once.
 */
export interface RopeTables {
  cos: Float32Array; // [positions, headDim / 2]
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
  const cos = new Float32Array(positions.length * half);
  const sin = new Float32Array(positions.length * half);
  positions.forEach((p, row) => {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(p * invFreq[i]!);
      cos[row * half + i] = Math.cos(angle);
      sin[row * half + i] = Math.sin(angle);
    }
  });
  return { cos, sin };
}
