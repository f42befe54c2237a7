/** Token-wise and sentence-wise core neurons (design doc sections 1, 2) against brute force. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { sentenceCoreNeurons, tokenCoreNeurons, tokenCoreNeuronsInto } from '../src/sparsity/core-neurons.js';

const ceilTol = (x: number) => (Math.abs(x - Math.round(x)) < 1e-9 ? Math.round(x) : Math.ceil(x));

function bruteToken(a: ArrayLike<number>, rho: number): number[] {
  const pos = Array.from(a, (v, n) => [v, n] as const).filter(([v]) => v > 0);
  pos.sort((x, y) => y[0] - x[0] || x[1] - y[1]);
  return pos
    .slice(0, ceilTol(rho * pos.length))
    .map(([, n]) => n)
    .sort((x, y) => x - y);
}

function bruteSentence(acts: Float32Array, T: number, D: number, rho: number, beta: number, rows?: number[]): number[] {
  const f = new Array<number>(D).fill(0);
  for (const t of rows ?? Array.from({ length: T }, (_, i) => i)) for (const n of bruteToken(acts.subarray(t * D, (t + 1) * D), rho)) f[n]!++;
  return f
    .map((c, n) => [c, n] as const)
    .filter(([c]) => c > 0)
    .sort((x, y) => y[0] - x[0] || x[1] - y[1])
    .slice(0, ceilTol(beta * D))
    .map(([, n]) => n)
    .sort((x, y) => x - y);
}

let seed = 12345;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
const randomActs = (n: number, quantum = 0) =>
  Float32Array.from({ length: n }, () => {
    const v = (rand() - 0.45) * 4;
    return quantum > 0 ? Math.round(v / quantum) * quantum : v;
  });

describe('token core neurons C_rho(x)', () => {
  test('hand cases: ties lower index first, nothing positive, rho = 1', () => {
    assert.deepEqual(tokenCoreNeurons(Float32Array.from([1, 3, 3, -1, 2]), 0.5), [1, 2]); // |A+| = 4, k = 2
    assert.deepEqual(tokenCoreNeurons(Float32Array.from([2, 2, 2, 2, 2]), 0.4), [0, 1]);
    assert.deepEqual(tokenCoreNeurons(Float32Array.from([-1, 0, -0, -3]), 0.5), []);
    assert.deepEqual(tokenCoreNeurons(Float32Array.from([0.5, -1, 0, 7]), 1), [0, 3]);
    assert.deepEqual(tokenCoreNeurons(Float32Array.from([0.5, -1, 0, 7, 1e-40]), 0.2), [3]); // denormal and zero
    assert.deepEqual(tokenCoreNeurons(Float32Array.from([1, 2, 3]), 0.01), [2]); // ceil(0.03) = 1
  });
  test('random rows match brute force (continuous, tied, sparse)', () => {
    for (let trial = 0; trial < 300; trial++) {
      const D = 1 + Math.floor(rand() * 300);
      const quantum = trial % 3 === 0 ? 0 : trial % 3 === 1 ? 0.25 : 1;
      const a = randomActs(D, quantum);
      const rho = [0.2, 0.05, 0.5, 1, rand()][trial % 5]! || 0.3;
      assert.deepEqual(tokenCoreNeurons(a, rho), bruteToken(a, rho), `trial ${trial}`);
    }
  });
  test('rows at an offset of a larger buffer', () => {
    const acts = randomActs(5 * 37);
    const out = new Int32Array(37);
    for (let t = 0; t < 5; t++) {
      const size = tokenCoreNeuronsInto(acts, 0.3, out, t * 37, 37);
      assert.deepEqual(Array.from(out.subarray(0, size)), bruteToken(acts.subarray(t * 37, (t + 1) * 37), 0.3));
    }
  });
  test('fast: 770 tokens x 4864 neurons in well under 100 ms', () => {
    const T = 770;
    const D = 4864;
    const acts = randomActs(T * D);
    sentenceCoreNeurons(acts, T, D, 0.2, 0.4); // warm up
    const times: number[] = [];
    for (let r = 0; r < 3; r++) {
      const t0 = performance.now();
      sentenceCoreNeurons(acts, T, D, 0.2, 0.4);
      times.push(performance.now() - t0);
    }
    const best = Math.min(...times);
    console.log(`sentenceCoreNeurons 770 x 4864: ${best.toFixed(1)} ms`);
    assert.ok(best < 100, `${best} ms`);
  });
});

describe('sentence core neurons C_rho^beta(S)', () => {
  test('hand case: counts, ties lower index, never a zero count', () => {
    // token 0 core (rho 0.5 of 2 positives -> 1): {1}; token 1: {1}; token 2: {3}
    const acts = Float32Array.from([0.1, 0.9, -1, -1, /**/ 0.2, 0.8, -1, -1, /**/ -1, -1, 0.3, 0.6]);
    assert.deepEqual(sentenceCoreNeurons(acts, 3, 4, 0.5, 0.25), [1]);
    assert.deepEqual(sentenceCoreNeurons(acts, 3, 4, 0.5, 0.5), [1, 3]);
    assert.deepEqual(sentenceCoreNeurons(acts, 3, 4, 0.5, 1), [1, 3]); // neurons 0, 2 count 0
    assert.deepEqual(sentenceCoreNeurons(acts, 3, 4, 1, 1), [0, 1, 2, 3]);
    assert.deepEqual(sentenceCoreNeurons(acts, 3, 4, 0.5, 0.25, [2]), [3]);
    assert.deepEqual(sentenceCoreNeurons(new Float32Array(8).fill(-1), 2, 4, 0.5, 1), []);
  });
  test('random sets match brute force', () => {
    for (let trial = 0; trial < 60; trial++) {
      const T = 1 + Math.floor(rand() * 20);
      const D = 1 + Math.floor(rand() * 120);
      const acts = randomActs(T * D, trial % 2 ? 0 : 0.5);
      const rho = [0.2, 0.5, 1][trial % 3]!;
      const beta = [0.4, 0.1, 1, 0.05][trial % 4]!;
      const rows = trial % 5 === 0 ? [T - 1] : undefined;
      assert.deepEqual(sentenceCoreNeurons(acts, T, D, rho, beta, rows), bruteSentence(acts, T, D, rho, beta, rows), `trial ${trial}`);
    }
  });
});
