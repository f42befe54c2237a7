/** Knee threshold and budgets (design doc section 3.4). */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CorematchingError } from '../src/io/errors.js';
import { ceilCount, kneeIndex, kneeThreshold, resolveBudget, selectByBudget, topK } from '../src/sparsity/knee.js';

/** Brute force: full distances with the denominator, first max. */
function bruteKnee(desc: number[]): number {
  const n = desc.length;
  const [x0, y0, x1, y1] = [0, desc[0]!, n - 1, desc[n - 1]!];
  const den = Math.hypot(x1 - x0, y1 - y0);
  let best = 0;
  let bestD = -1;
  desc.forEach((y, x) => {
    const d = Math.abs((x1 - x0) * (y0 - y) - (x0 - x) * (y1 - y0)) / den;
    if (d > bestD + 1e-12) {
      bestD = d;
      best = x;
    }
  });
  return best;
}

describe('knee', () => {
  test('flat curve keeps everything', () => {
    assert.equal(kneeThreshold([3, 3, 3, 3]), -Infinity);
    assert.deepEqual(selectByBudget([3, 3, 3, 3], 'knee'), [0, 1, 2, 3]);
  });
  test('one point and no point', () => {
    assert.equal(kneeThreshold([5]), -Infinity);
    assert.deepEqual(selectByBudget([5], 'knee'), [0]);
    assert.deepEqual(selectByBudget([], 'knee'), []);
  });
  test('two points: the knee is the first, minKeep keeps the best', () => {
    assert.equal(kneeIndex([4, 1]), 0);
    assert.deepEqual(selectByBudget([1, 4], 'knee'), [1]);
    assert.deepEqual(selectByBudget([1, 4], 'knee', 2), [0, 1]);
  });
  test('straight line: every distance is 0, so only minKeep tokens survive', () => {
    assert.equal(kneeIndex([5, 4, 3, 2, 1]), 0);
    assert.deepEqual(selectByBudget([1, 2, 3, 4, 5], 'knee', 2), [3, 4]);
  });
  test('an elbow', () => {
    // 10 9 8 then a drop to 1 1 1 1 1: the knee is at the first 1 (index 3)? check by brute force
    const desc = [10, 9, 8, 1, 1, 1, 1, 1];
    assert.equal(kneeIndex(desc), bruteKnee(desc));
    assert.equal(kneeThreshold(desc), desc[bruteKnee(desc)]);
    const scores = [1, 10, 1, 8, 1, 9, 1, 1];
    const t = desc[bruteKnee(desc)]!;
    assert.deepEqual(selectByBudget(scores, 'knee'), scores.flatMap((s, i) => (s > t ? [i] : [])));
  });
  test('plateaus: first index of the largest distance, ties excluded at s_e', () => {
    const desc = [9, 9, 5, 5, 5, 5, 1, 1];
    const e = kneeIndex(desc);
    assert.equal(e, bruteKnee(desc));
    const scores = [5, 9, 1, 5, 9, 5, 1, 5];
    assert.deepEqual(selectByBudget(scores, 'knee'), scores.flatMap((s, i) => (s > desc[e]! ? [i] : [])));
  });
  test('noisy curves agree with brute force', () => {
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
    for (let trial = 0; trial < 200; trial++) {
      const n = 2 + Math.floor(rand() * 40);
      const integer = trial % 2 === 0;
      const scores = Array.from({ length: n }, () => (integer ? Math.floor(rand() * 30) : rand() * Math.exp(rand() * 3)));
      const desc = [...scores].sort((a, b) => b - a);
      if (desc[0] === desc[n - 1]) continue;
      const e = bruteKnee(desc);
      assert.equal(kneeIndex(desc), e, `scores ${desc}`);
      let expected = scores.flatMap((s, i) => (s > desc[e]! ? [i] : []));
      if (expected.length < 3) expected = scores.map((s, i) => [s, i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, 3).map(([, i]) => i).sort((a, b) => a - b);
      assert.deepEqual(selectByBudget(scores, 'knee', 3), expected);
    }
  });
  test('monotone convex curve', () => {
    const desc = Array.from({ length: 20 }, (_, i) => Math.round(100 / (i + 1)));
    assert.equal(kneeIndex(desc), bruteKnee(desc));
    assert.ok(kneeIndex(desc) > 0 && kneeIndex(desc) < 19);
  });
});

describe('budgets', () => {
  test('integer K and fractions', () => {
    assert.equal(resolveBudget(8, 64), 8);
    assert.equal(resolveBudget(64, 64), 64);
    assert.equal(resolveBudget(0.25, 64), 16);
    assert.equal(resolveBudget(0.25, 49), 12);
    assert.equal(resolveBudget(0.125, 4), 1); // 0.5 rounds up
    assert.equal(resolveBudget('knee', 10), 'knee');
  });
  test('too large, zero and malformed budgets are errors naming the budget', () => {
    assert.throws(() => resolveBudget(65, 64), (e: unknown) => e instanceof CorematchingError && /budget 65 .*64 image tokens/.test(e.message));
    assert.throws(() => resolveBudget(0.01, 16), CorematchingError);
    for (const bad of [0, -1, 1.5, Number.NaN, 'half']) assert.throws(() => resolveBudget(bad as number, 64), /budget must be/);
  });
  test('top K ties: earlier position first, result ascending', () => {
    assert.deepEqual(topK([1, 5, 5, 2, 5], 2), [1, 2]);
    assert.deepEqual(selectByBudget([3, 1, 3, 3, 0], 2), [0, 2]);
    assert.deepEqual(selectByBudget([0, 1, 2, 3, 4, 5, 6, 7], 0.5), [4, 5, 6, 7]);
  });
  test('ceilCount ignores floating-point noise', () => {
    assert.equal(ceilCount(0.1, 30), 3);
    assert.equal(ceilCount(0.2, 11), 3);
    assert.equal(ceilCount(0.4, 4864), 1946);
    assert.equal(ceilCount(1, 7), 7);
  });
});
