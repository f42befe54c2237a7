/** Compact FFN feeds: the core neurons' part of gate, up and transposed down, in either weight format. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import ort from 'onnxruntime-node';
import { compactFfn, FfnWorkspace } from '../src/models/compact-ffn.js';
import { linearFeeds } from '../src/models/weights.js';

const D = 6; // FFN width
const H = 3; // hidden size
const values = (n: number, salt: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(salt + i * 0.7));
/** A layer's FFN feeds: [gate; up] [2D, H] and down transposed [D, H] (int8: quantized from down [H, D] into that layout). */
function layer(format: 'fp32' | 'int8', bias = false) {
  const feeds = { ...linearFeeds('gate_up_w', values(2 * D * H, 1), 2 * D, H, format), ...linearFeeds('down_t', values(D * H, 2), H, D, format, format === 'fp32') };
  return bias ? { ...feeds, gate_up_b: new ort.Tensor('float32', Float32Array.from({ length: 2 * D }, (_, i) => i), [2 * D]) } : feeds;
}
const row = (t: ort.Tensor, r: number, width: number) => Array.from((t.data as Float32Array | Int8Array).subarray(r * width, (r + 1) * width));
const column = (t: ort.Tensor, c: number) => {
  const [rows, width] = t.dims as [number, number];
  return Array.from({ length: rows }, (_, r) => (t.data as Int8Array)[r * width + c]);
};

test('fp32: gathers [gate rows; up rows] and down rows of the neurons, in order', () => {
  const dense = layer('fp32');
  const ffn = compactFfn(dense, [1, 4], D, H);
  assert.deepEqual(ffn.gate_up_w!.dims, [4, H]);
  assert.deepEqual(ffn.down_t!.dims, [2, H]);
  assert.deepEqual([0, 1, 2, 3].map((i) => row(ffn.gate_up_w!, i, H)), [1, 4, D + 1, D + 4].map((n) => row(dense.gate_up_w!, n, H)));
  assert.deepEqual([0, 1].map((i) => row(ffn.down_t!, i, H)), [1, 4].map((n) => row(dense.down_t!, n, H)));
  assert.equal(ffn.gate_up_b, undefined);
});

test('int8: gathers gate/up columns with their scales and down rows, never re-quantizing', () => {
  const dense = layer('int8');
  const ffn = compactFfn(dense, [0, 5], D, H);
  assert.deepEqual(ffn.gate_up_w!.dims, [H, 4]);
  assert.equal(ffn.gate_up_w!.type, 'int8');
  assert.deepEqual([0, 1, 2, 3].map((i) => column(ffn.gate_up_w!, i)), [0, 5, D, D + 5].map((n) => column(dense.gate_up_w!, n)));
  const scales = dense.gate_up_w_scale!.data as Float32Array;
  assert.deepEqual(Array.from(ffn.gate_up_w_scale!.data as Float32Array), [0, 5, D, D + 5].map((n) => scales[n]));
  assert.deepEqual([0, 1].map((i) => row(ffn.down_t!, i, H)), [0, 5].map((n) => row(dense.down_t!, n, H)));
  assert.equal(ffn.down_t_scale, dense.down_t_scale, 'down keeps its per-hidden-column scales');
});

test('biases follow their neurons', () => {
  assert.deepEqual(Array.from(compactFfn(layer('fp32', true), [0, 5], D, H).gate_up_b!.data as Float32Array), [0, 5, D, D + 5]);
});

test('an empty core set is one neuron whose output is zero', () => {
  for (const format of ['fp32', 'int8'] as const) {
    const ffn = compactFfn(layer(format), [], D, H);
    assert.deepEqual(ffn.down_t!.dims, [1, H]);
    assert.deepEqual(Array.from(ffn.down_t!.data as Float32Array), [0, 0, 0]);
  }
});

test('a workspace is reused while large enough', () => {
  const workspace = new FfnWorkspace();
  const dense = layer('fp32');
  const a = compactFfn(dense, [0, 1, 2], D, H, workspace);
  const buffer = (a.down_t!.data as Float32Array).buffer;
  const b = compactFfn(dense, [5], D, H, workspace);
  assert.equal((b.down_t!.data as Float32Array).buffer, buffer);
  assert.deepEqual(row(b.down_t!, 0, H), row(dense.down_t!, 5, H));
});
