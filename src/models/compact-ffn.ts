/**
 * Compact FFN weights for a set of neurons: the neurons' rows of gate, up and (transposed) down.
 * Gathered once per request (after prefill) so each decode step reads only the core neurons' weights.
 */
import type ort from 'onnxruntime-node';
import { tensor } from '../graph/session.js';

/** A decoder layer's FFN as the graph takes it: [gate; up] rows and down_proj transposed. */
export interface FfnWeights {
  gateUp: ort.Tensor;
  down: ort.Tensor;
  gateUpBias?: ort.Tensor;
}

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
  private gateUp = new Float32Array(0);
  private down = new Float32Array(0);

  /** A [2 rows, width] and a [rows, width] matrix (views into buffers reused while large enough). */
  take(rows: number, width: number): [Float32Array, Float32Array] {
    if (this.down.length < rows * width) {
      this.gateUp = new Float32Array(2 * rows * width);
      this.down = new Float32Array(rows * width);
    }
    return [this.gateUp.subarray(0, 2 * rows * width), this.down.subarray(0, rows * width)];
  }
}

function gatherRowsInto(out: Float32Array, at: number, m: Float32Array, rows: readonly number[], width: number): void {
  for (let j = 0; j < rows.length; j++) out.set(m.subarray(rows[j]! * width, (rows[j]! + 1) * width), at + j * width);
}

export function compactFfn(dense: DenseFfn, neurons: readonly number[], hidden: number, workspace = new FfnWorkspace()): FfnWeights {
  // An empty core set (no neuron ever fired) contributes nothing: one neuron with a zeroed
  // down-projection row says exactly that without a zero-width tensor.
  const rows = neurons.length === 0 ? [0] : neurons;
  const k = rows.length;
  const [gateUp, down] = workspace.take(k, hidden);
  gatherRowsInto(gateUp, 0, dense.gate, rows, hidden);
  gatherRowsInto(gateUp, k * hidden, dense.up, rows, hidden);
  if (neurons.length === 0) down.fill(0);
  else gatherRowsInto(down, 0, dense.down, rows, hidden);
  const result: FfnWeights = { gateUp: tensor(gateUp, [2 * k, hidden]), down: tensor(down, [k, hidden]) };
  if (dense.gateBias && dense.upBias) {
    result.gateUpBias = tensor(Float32Array.from([...rows.map((n) => dense.gateBias![n]!), ...rows.map((n) => dense.upBias![n]!)]), [2 * k]);
  }
  return result;
}
