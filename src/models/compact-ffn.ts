/**
 * Compact FFN weights for a set of neurons: the neurons' rows of gate, up and (transposed) down.
 * Gathered once per request (after prefill) so each decode step reads only the core neurons' weights.
 */
import { tensor } from '../graph/session.js';
import type { FfnWeights } from './llama.js';

export interface DenseFfn {
  /** Each [intermediate, hidden]: one row per neuron (down is down_proj transposed). */
  gate: Float32Array;
  up: Float32Array;
  down: Float32Array;
  gateBias?: Float32Array;
  upBias?: Float32Array;
}

/**
 * Buffers the compact weights of one layer live in, kept across requests: allocating fresh
 * matrices for every request costs more in page faults than gathering the rows does.
 */
export class FfnWorkspace {
  private buffers: Float32Array[] = [];

  /** Three [rows, width] matrices (views into buffers reused while large enough). */
  take(rows: number, width: number): [Float32Array, Float32Array, Float32Array] {
    const size = rows * width;
    if ((this.buffers[0]?.length ?? 0) < size) this.buffers = [0, 1, 2].map(() => new Float32Array(size));
    return this.buffers.map((b) => b.subarray(0, size)) as [Float32Array, Float32Array, Float32Array];
  }
}

function gatherRowsInto(out: Float32Array, m: Float32Array, rows: readonly number[], width: number): Float32Array {
  for (let j = 0; j < rows.length; j++) out.set(m.subarray(rows[j]! * width, (rows[j]! + 1) * width), j * width);
  return out;
}

export function compactFfn(dense: DenseFfn, neurons: readonly number[], hidden: number, workspace = new FfnWorkspace()): FfnWeights {
  // An empty core set (no neuron ever fired) contributes nothing: one neuron with a zeroed
  // down-projection row says exactly that without a zero-width tensor.
  const rows = neurons.length === 0 ? [0] : neurons;
  const k = rows.length;
  const [gate, up, down] = workspace.take(k, hidden);
  gatherRowsInto(gate, dense.gate, rows, hidden);
  gatherRowsInto(up, dense.up, rows, hidden);
  if (neurons.length === 0) down.fill(0);
  else gatherRowsInto(down, dense.down, rows, hidden);
  const result: FfnWeights = { gate: tensor(gate, [k, hidden]), up: tensor(up, [k, hidden]), down: tensor(down, [k, hidden]) };
  if (dense.gateBias) result.gateBias = tensor(Float32Array.from(rows, (n) => dense.gateBias![n]!), [k]);
  if (dense.upBias) result.upBias = tensor(Float32Array.from(rows, (n) => dense.upBias![n]!), [k]);
  return result;
}
