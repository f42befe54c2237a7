/**
 * Compact FFN weights for a set of neurons: the neurons' part of gate, up and (transposed) down,
 * gathered once per request (after prefill) so each decode step reads only the core neurons'
 * weights. Works on the layer's own feeds, in either weight format:
 *
 * - fp32: gate_up_w [2 ffn, hidden] and down_t [ffn, hidden]: a neuron is one row of each.
 * - int8: gate_up_w [hidden, 2 ffn] with one scale per column, down_t [ffn, hidden] with one scale
 *   per hidden column: a neuron is a column (and its scale) of the first and a row of the second,
 *   so its int8 values are copied as they are, never re-quantized.
 */
import ort from 'onnxruntime-node';
import type { Feeds } from '../graph/session.js';
import { ReusableBuffers } from '../util/reusable-buffers.js';
import { scaleOf } from '../graph/ops.js';
import { LAYER } from './decoder-io.js';

type Typed = Float32Array | Int8Array;

/**
 * Buffers the compact weights of one layer live in, kept across requests: allocating fresh
 * matrices for every request costs more in page faults than gathering the rows does.
 */
export class FfnWorkspace {
  private readonly buffers = new ReusableBuffers();

  /** A typed array of `length` elements like `like`, a view into a buffer reused while large enough. */
  take<T extends Typed>(key: string, like: T, length: number): T {
    return this.buffers.take(key, like.constructor as unknown as { new (b: ArrayBuffer, o: number, n: number): T; BYTES_PER_ELEMENT: number }, length);
  }
}

const typeOf = (t: Typed): 'float32' | 'int8' => (t instanceof Int8Array ? 'int8' : 'float32');

/** Rows `rows` of m [*, width] (and rows offset + rows, when `offset` is given) into out. */
function gatherRows<T extends Typed>(out: T, m: T, rows: readonly number[], width: number, offset?: number): void {
  rows.forEach((r, j) => out.set(m.subarray(r * width, (r + 1) * width), j * width));
  if (offset !== undefined) rows.forEach((r, j) => out.set(m.subarray((offset + r) * width, (offset + r + 1) * width), (rows.length + j) * width));
}

/** Columns `cols` then offset + `cols` of m [rows, width] into out [rows, 2 cols.length]. */
function gatherColumnPairs(out: Int8Array, m: Int8Array, rows: number, width: number, cols: readonly number[], offset: number): void {
  const k = cols.length;
  for (let r = 0; r < rows; r++) {
    const from = r * width;
    const to = r * 2 * k;
    for (let j = 0; j < k; j++) {
      out[to + j] = m[from + cols[j]!]!;
      out[to + k + j] = m[from + offset + cols[j]!]!;
    }
  }
}

/**
 * The FFN feeds of `layer` (its dense feeds: gate_up_w, down_t, their scales and gate_up_b) cut
 * to `neurons` (ascending), in `workspace`: valid until its next use.
 */
export function compactFfn(layer: Feeds, neurons: readonly number[], ffn: number, hidden: number, workspace = new FfnWorkspace()): Feeds {
  // An empty core set (no neuron ever fired) contributes nothing: one neuron with a zeroed
  // down-projection row says exactly that without a zero-width tensor.
  const rows = neurons.length === 0 ? [0] : neurons;
  const k = rows.length;
  const gateUpDense = layer[LAYER.gateUp]!.data as Typed;
  const downDense = layer[LAYER.downT]!.data as Typed;
  const gateUp = workspace.take('gate_up', gateUpDense, 2 * k * hidden);
  const down = workspace.take('down', downDense, k * hidden);
  const feeds: Feeds = {};
  if (gateUpDense instanceof Int8Array) {
    gatherColumnPairs(gateUp as Int8Array, gateUpDense, hidden, 2 * ffn, rows, ffn);
    const scales = layer[scaleOf(LAYER.gateUp)]!.data as Float32Array;
    const compactScales = workspace.take('gate_up_scale', scales, 2 * k);
    gatherRows(compactScales, scales, rows, 1, ffn);
    feeds[LAYER.gateUp] = new ort.Tensor('int8', gateUp, [hidden, 2 * k]);
    feeds[scaleOf(LAYER.gateUp)] = new ort.Tensor('float32', compactScales, [2 * k]);
    feeds[scaleOf(LAYER.downT)] = layer[scaleOf(LAYER.downT)]!;
  } else {
    gatherRows(gateUp, gateUpDense, rows, hidden, ffn);
    feeds[LAYER.gateUp] = new ort.Tensor('float32', gateUp, [2 * k, hidden]);
  }
  if (neurons.length === 0) down.fill(0);
  else gatherRows(down, downDense, rows, hidden);
  feeds[LAYER.downT] = new ort.Tensor(typeOf(downDense), down, [k, hidden]);
  const denseBias = layer[LAYER.gateUpBias];
  if (denseBias) {
    const bias = denseBias.data as Float32Array;
    const compactBias = workspace.take('gate_up_b', bias, 2 * k);
    gatherRows(compactBias, bias, rows, 1, ffn);
    feeds[LAYER.gateUpBias] = new ort.Tensor('float32', compactBias, [2 * k]);
  }
  return feeds;
}
