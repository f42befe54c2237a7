import assert from 'node:assert/strict';
import { test } from 'node:test';
import { argmax, TokenSampler } from '../src/pipeline/sampling.js';

test('greedy takes the first maximum', () => {
  assert.equal(argmax(new Float32Array([1, 3, 3, 2])), 1);
  assert.equal(new TokenSampler().next(new Float32Array([0, 5, 1])), 1);
});

test('top-k 1 is greedy whatever the temperature', () => {
  const s = new TokenSampler({ doSample: true, topK: 1, temperature: 5, seed: 3 });
  for (let i = 0; i < 20; i++) assert.equal(s.next(new Float32Array([0.1, 0.3, 0.2])), 1);
});

test('top-p keeps the smallest set reaching p', () => {
  // probabilities ~ [0.64, 0.24, 0.09, 0.03]: top-p 0.7 keeps the first two only.
  const logits = new Float32Array([Math.log(0.64), Math.log(0.24), Math.log(0.09), Math.log(0.03)]);
  const s = new TokenSampler({ doSample: true, topP: 0.7, seed: 1 });
  const seen = new Set<number>();
  for (let i = 0; i < 400; i++) seen.add(s.next(logits));
  assert.deepEqual([...seen].sort(), [0, 1]);
});

test('sampling follows the distribution and reproduces with a seed', () => {
  const logits = new Float32Array([Math.log(0.75), Math.log(0.25)]);
  const draw = (seed: number) => Array.from({ length: 2000 }, ((s) => () => s.next(logits))(new TokenSampler({ doSample: true, seed })));
  const a = draw(11);
  assert.deepEqual(a, draw(11));
  const share = a.filter((t) => t === 0).length / a.length;
  assert.ok(Math.abs(share - 0.75) < 0.04, `share ${share}`);
});

test('invalid sampling options are refused', () => {
  assert.throws(() => new TokenSampler({ doSample: true, temperature: 0 }), /temperature/);
  assert.throws(() => new TokenSampler({ doSample: true, topP: 1.5 }), /top-p/);
});
