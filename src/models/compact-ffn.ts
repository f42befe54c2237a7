/**
 * Compact FFN weights for a set of neurons: rows of gate/up, columns of down. Gathered once per
 * request (after prefill) so each decode step reads only the core neurons' weights.
 */
import { tensor } from '../graph/session.js';
import type { FfnWeights } from './llama.js';

export interface DenseFfn {
  gate: Float32Array; // [intermediate, hidden]
  up: Float32Array;
  down: Float32Array; // [hidden, intermediate]
  gateBias?: Float32Array;
  upBias?: Float32Array;
}

export function compactFfn(dense: DenseFfn, neurons: readonly number[], hidden: number): FfnWeights {
  // An empty core set (no neuron ever fired) contributes nothing: one neuron with a zeroed
  // down-projection column says exactly that without a zero-width tensor.
  if (neurons.length === 0) {
    const one = compactFfn(dense, [0], hidden);
    return { ...one, down: tensor(new Float32Array(hidden), [hidden, 1]) };
  }
  const k = neurons.length;
  const intermediate = dense.gate.length / hidden;
  const gate = new Float32Array(k * hidden);
  const up = new Float32Array(k * hidden);
  const down = new Float32Array(hidden * k);
  neurons.forEach((n, j) => {
    gate.set(dense.gate.subarray(n * hidden, (n + 1) * hidden), j * hidden);
    up.set(dense.up.subarray(n * hidden, (n + 1) * hidden), j * hidden);
  });
  for (let r = 0; r < hidden; r++) {
    const row = r * intermediate;
    for (let j = 0; j < k; j++) down[r * k + j] = dense.down[row + neurons[j]!]!;
  }
  const result: FfnWeights = { gate: tensor(gate, [k, hidden]), up: tensor(up, [k, hidden]), down: tensor(down, [hidden, k]) };
  if (dense.gateBias) result.gateBias = tensor(Float32Array.from(neurons, (n) => dense.gateBias![n]!), [k]);
  if (dense.upBias) result.upBias = tensor(Float32Array.from(neurons, (n) => dense.upBias![n]!), [k]);
  return result;
}
