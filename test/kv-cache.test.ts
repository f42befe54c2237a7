/** The preallocated KV cache: appends in place, compacts in place, reuses its buffers. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KvCache } from '../src/models/kv-cache.js';
import { throwsWith } from './helpers.js';

/** [kvHeads, tokens, headDim] filled with value(head, token, d) for tokens first .. first+tokens-1. */
function block(kvHeads: number, first: number, tokens: number, headDim: number, salt: number): Float32Array {
  const out = new Float32Array(kvHeads * tokens * headDim);
  for (let h = 0; h < kvHeads; h++) for (let t = 0; t < tokens; t++) for (let d = 0; d < headDim; d++) out[(h * tokens + t) * headDim + d] = salt + 100 * h + first + t + d / 10;
  return out;
}

test('append writes each head at its offset; values() reads back [kvHeads, length, headDim]', () => {
  const cache = new KvCache(2, 2, 3);
  cache.reset(5);
  cache.append(1, block(2, 0, 2, 3, 0), block(2, 0, 2, 3, 1000), 2);
  cache.append(1, block(2, 2, 1, 3, 0), block(2, 2, 1, 3, 1000), 1);
  assert.equal(cache.length(1), 3);
  assert.equal(cache.length(0), 0);
  assert.deepEqual(cache.values(1), block(2, 0, 3, 3, 1000));
  const { k, v } = cache.buffers(1);
  assert.deepEqual(k.dims, [2, 5, 3]);
  assert.deepEqual(v.dims, [2, 5, 3]);
  const keys = k.data as Float32Array;
  // head 1 starts at slot capacity * headDim: its three tokens, then two empty slots
  assert.deepEqual(Array.from(keys.subarray(15, 24)), Array.from(block(1, 0, 3, 3, 100)));
});

test('append beyond the capacity or with the wrong size is an error', () => {
  const cache = new KvCache(1, 1, 2);
  cache.reset(2);
  cache.append(0, new Float32Array(4), new Float32Array(4), 2);
  throwsWith(() => cache.append(0, new Float32Array(2), new Float32Array(2), 1), 'holds 2 tokens', '2 cached + 1 new');
  throwsWith(() => cache.append(0, new Float32Array(3), new Float32Array(3), 1), '3 keys');
});

test('keep compacts in place, per head, and the cache goes on from there', () => {
  const cache = new KvCache(1, 2, 2);
  cache.reset(6);
  cache.append(0, block(2, 0, 5, 2, 0), block(2, 0, 5, 2, 500), 5);
  const buffer = cache.buffers(0).k.data;
  cache.keep(0, [1, 3, 4]);
  assert.equal(cache.length(0), 3);
  assert.equal(cache.buffers(0).k.data, buffer, 'same buffer');
  const expected = (salt: number) => {
    const all = block(2, 0, 5, 2, salt);
    const out = new Float32Array(2 * 3 * 2);
    [1, 3, 4].forEach((t, j) => {
      for (let h = 0; h < 2; h++) out.set(all.subarray((h * 5 + t) * 2, (h * 5 + t + 1) * 2), (h * 3 + j) * 2);
    });
    return out;
  };
  assert.deepEqual(cache.values(0), expected(500));
  cache.append(0, block(2, 9, 1, 2, 0), block(2, 9, 1, 2, 500), 1);
  assert.equal(cache.length(0), 4);
  assert.deepEqual(Array.from(cache.values(0).subarray(6, 8)), Array.from(block(1, 9, 1, 2, 500)));
  throwsWith(() => cache.keep(0, [2, 1]), 'must ascend');
  throwsWith(() => cache.keep(0, [0, 9]), 'must ascend');
});

test('reset empties every layer and reuses buffers that are large enough', () => {
  const cache = new KvCache(2, 1, 4);
  cache.reset(8);
  cache.append(0, new Float32Array(4).fill(1), new Float32Array(4).fill(1), 1);
  const first = cache.buffers(0).k.data as Float32Array;
  cache.reset(4);
  assert.equal(cache.length(0), 0);
  assert.equal(cache.capacity, 4);
  const second = cache.buffers(0).k.data as Float32Array;
  assert.equal(second.buffer, first.buffer, 'a smaller capacity reuses the buffer');
  assert.deepEqual(cache.buffers(0).k.dims, [1, 4, 4]);
  cache.reset(16);
  assert.notEqual((cache.buffers(0).k.data as Float32Array).buffer, first.buffer, 'a larger capacity grows it');
});

test('reserve grows the capacity keeping every head\'s cached tokens; dropLast forgets the tail of every layer', () => {
  const cache = new KvCache(2, 2, 3);
  cache.reset(3);
  cache.append(0, block(2, 0, 3, 3, 0), block(2, 0, 3, 3, 1000), 3);
  cache.append(1, block(2, 0, 2, 3, 0), block(2, 0, 2, 3, 1000), 2);
  cache.reserve(2); // smaller: nothing changes
  assert.equal(cache.capacity, 3);
  cache.reserve(6);
  assert.equal(cache.capacity, 6);
  assert.deepEqual(cache.values(0), block(2, 0, 3, 3, 1000));
  assert.deepEqual(cache.values(1), block(2, 0, 2, 3, 1000));
  assert.deepEqual(cache.buffers(0).k.dims, [2, 6, 3]);
  cache.append(0, block(2, 3, 3, 3, 0), block(2, 3, 3, 3, 1000), 3);
  assert.deepEqual(cache.values(0), block(2, 0, 6, 3, 1000));
  cache.dropLast(2);
  assert.deepEqual([cache.length(0), cache.length(1)], [4, 0]);
  assert.deepEqual(cache.values(0), block(2, 0, 4, 3, 1000));
  throwsWith(() => cache.dropLast(1), 'layer 1: cannot drop 1 of 0');
});
