/** The ONNX graph builder, its building blocks and the session cache, against plain-JS arithmetic. */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { GraphBuilder } from '../src/graph/builder.js';
import { activation, linear, mergeHeads, rmsNorm, splitHeads } from '../src/graph/ops.js';
import { tensor } from '../src/graph/session.js';
import { SessionCache } from '../src/graph/session-cache.js';
import type { Activation } from '../src/io/model-config.js';
import { maxAbsDiff } from './helpers.js';

const sessions = new SessionCache({ threads: 1 });
after(() => sessions.release());

const values = (n: number, salt: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 1.7 + salt) * 2);

/** Runs a one-output graph built by `body` from inputs of the given shapes; the output has `rank` dimensions. */
async function run(key: string, inputs: Record<string, [Float32Array, number[]]>, body: (g: GraphBuilder, x: Record<string, string>) => string, rank = 2): Promise<Float32Array> {
  const session = await sessions.get(key, () => {
    const g = new GraphBuilder(key);
    const names = Object.fromEntries(Object.entries(inputs).map(([name, [, dims]]) => [name, g.input(name, dims)]));
    g.output('y', body(g, names), Array.from({ length: rank }, (_, i) => `d${i}`));
    return g.toBytes();
  });
  const feeds = Object.fromEntries(Object.entries(inputs).map(([name, [data, dims]]) => [name, tensor(data, dims)]));
  return (await session.runFloat(feeds, ['y']))[0]!;
}

test('linear is x @ w^T + b with w in [out, in] layout', async () => {
  const [x, w, b] = [values(2 * 3, 0), values(4 * 3, 1), values(4, 2)];
  const y = await run('linear', { x: [x, [2, 3]], w: [w, [4, 3]], b: [b, [4]] }, (g, i) => linear(g, i.x!, i.w!, i.b!));
  const expected = Float32Array.from({ length: 8 }, (_, k) => {
    const [r, o] = [Math.floor(k / 4), k % 4];
    return b[o]! + [0, 1, 2].reduce((s, j) => s + x[r * 3 + j]! * w[o * 3 + j]!, 0);
  });
  assert.ok(maxAbsDiff(y, expected) < 1e-5);
});

test('rmsNorm is x / sqrt(mean(x^2) + eps) * w', async () => {
  const [x, w] = [values(2 * 5, 3), values(5, 4)];
  const y = await run('rms', { x: [x, [2, 5]], w: [w, [5]] }, (g, i) => rmsNorm(g, i.x!, i.w!, 1e-6));
  const expected = Float32Array.from({ length: 10 }, (_, k) => {
    const r = Math.floor(k / 5);
    const ms = [0, 1, 2, 3, 4].reduce((s, j) => s + x[r * 5 + j]! ** 2, 0) / 5;
    return (x[k]! / Math.sqrt(ms + 1e-6)) * w[k % 5]!;
  });
  assert.ok(maxAbsDiff(y, expected) < 1e-5);
});

const ACTIVATIONS: [Activation, (x: number) => number][] = [
  ['silu', (x) => x / (1 + Math.exp(-x))],
  ['relu', (x) => Math.max(0, x)],
  ['quick_gelu', (x) => x / (1 + Math.exp(-1.702 * x))],
  ['gelu_pytorch_tanh', (x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)))],
];
for (const [name, f] of ACTIVATIONS) {
  test(`activation ${name}`, async () => {
    const x = values(12, 5);
    const y = await run(`act-${name}`, { x: [x, [3, 4]] }, (g, i) => activation(g, i.x!, name));
    assert.ok(maxAbsDiff(y, x.map(f)) < 1e-5);
  });
}

test('splitHeads then mergeHeads is the identity', async () => {
  const x = values(3 * 8, 6);
  assert.deepEqual(await run('heads', { x: [x, [3, 8]] }, (g, i) => mergeHeads(g, splitHeads(g, i.x!, 2, 4), 2, 4)), x);
});

test('the session cache builds a graph once per key', async () => {
  let builds = 0;
  const cache = new SessionCache({ threads: 1 });
  const build = () => {
    builds++;
    const g = new GraphBuilder('id');
    g.output('y', g.op('Identity', [g.input('x', [2])]), [2]);
    return g.toBytes();
  };
  const [a, b] = await Promise.all([cache.get('id', build), cache.get('id', build)]);
  assert.equal(a, b);
  assert.equal(builds, 1);
  assert.deepEqual(Array.from((await a.runFloat({ x: tensor(Float32Array.from([3, 4]), [2]) }, ['y']))[0]!), [3, 4]);
  await cache.release();
});

test('a graph with its weights baked in computes with those weights', async () => {
  const g = new GraphBuilder('baked');
  // Tensors whose data lengths take 2- and 3-byte varints in the serialised model.
  const [w, b] = [values(300 * 200, 7), values(300, 8)];
  g.output('y', linear(g, g.input('x', [1, 200]), g.input('w', [300, 200]), g.input('b', [300])), [1, 300]);
  const session = await sessions.get('baked', () => g.toBytes({ w: tensor(w, [300, 200]), b: tensor(b, [300]) }));
  const x = values(200, 9);
  const y = (await session.runFloat({ x: tensor(x, [1, 200]) }, ['y']))[0]!;
  const expected = Float32Array.from({ length: 300 }, (_, o) => b[o]! + x.reduce((s, v, j) => s + v * w[o * 200 + j]!, 0));
  assert.ok(maxAbsDiff(y, expected) < 1e-3, `max abs diff ${maxAbsDiff(y, expected)}`);
});
