/** Compact FFN weights: the core neurons' rows of gate, up and transposed down, gathered once. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compactFfn, FfnWorkspace, type DenseFfn } from '../src/models/compact-ffn.js';

const D = 6;
const H = 3;
const rowsOf = (salt: number) => Float32Array.from({ length: D * H }, (_, i) => salt + i);
const dense: DenseFfn = { gate: rowsOf(0), up: rowsOf(100), down: rowsOf(200) };
const row = (m: Float32Array, n: number) => Array.from(m.subarray(n * H, (n + 1) * H));

test('gathers [gate rows; up rows] and down rows of the neurons, in order', () => {
  const ffn = compactFfn(dense, [1, 4], H);
  assert.deepEqual(ffn.gateUp.dims, [4, H]);
  assert.deepEqual(ffn.down.dims, [2, H]);
  const gateUp = ffn.gateUp.data as Float32Array;
  assert.deepEqual([0, 1, 2, 3].map((i) => row(gateUp, i)), [row(dense.gate, 1), row(dense.gate, 4), row(dense.up, 1), row(dense.up, 4)]);
  assert.deepEqual([0, 1].map((i) => row(ffn.down.data as Float32Array, i)), [row(dense.down, 1), row(dense.down, 4)]);
  assert.equal(ffn.gateUpBias, undefined);
});

test('biases follow their neurons', () => {
  const withBias: DenseFfn = { ...dense, gateBias: Float32Array.from([0, 1, 2, 3, 4, 5]), upBias: Float32Array.from([10, 11, 12, 13, 14, 15]) };
  assert.deepEqual(Array.from(compactFfn(withBias, [0, 5], H).gateUpBias!.data as Float32Array), [0, 5, 10, 15]);
});

test('an empty core set is one neuron whose output is zero', () => {
  const ffn = compactFfn(dense, [], H);
  assert.deepEqual(ffn.down.dims, [1, H]);
  assert.deepEqual(Array.from(ffn.down.data as Float32Array), [0, 0, 0]);
});

test('a workspace is reused while large enough', () => {
  const workspace = new FfnWorkspace();
  const a = compactFfn(dense, [0, 1, 2], H, workspace);
  const buffer = (a.down.data as Float32Array).buffer;
  const b = compactFfn(dense, [5], H, workspace);
  assert.equal((b.down.data as Float32Array).buffer, buffer);
  assert.deepEqual(row(b.down.data as Float32Array, 0), row(dense.down, 5));
});
