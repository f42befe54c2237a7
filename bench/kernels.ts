/**
 * ONNX Runtime's matrix products on this machine, as the engine could feed them: each kernel with
 * its weight as a graph input (what the engine does today: one session per kind of layer, compact
 * core-neuron weights fed per request) and as an initializer (pre-packed by ONNX Runtime), at
 * decode (M = 1) and prefill (M = 768) sizes. Twelve distinct [4864 x 896] weights cycle so
 * decode reads them from memory, not cache. Prints a table and writes JSON.
 *
 *   npm run bench:kernels
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import ort from 'onnxruntime-node';
import { GraphBuilder } from '../src/graph/builder.js';
import { GraphSession } from '../src/graph/session.js';

const program = new Command()
  .option('--threads <n>', 'ONNX Runtime threads', (v) => Number(v), os.availableParallelism())
  .option('--out <file>', 'JSON output', 'bench/results/kernels.json')
  .parse();
const o = program.opts<{ threads: number; out: string }>();

const [N, K] = [4864, 896];
const COPIES = 12;
const random = (n: number) => Float32Array.from({ length: n }, () => Math.random() - 0.5);
const bytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** A kernel: the graph inputs/initializers of one weight, and the node using them. */
interface Kernel {
  name: string;
  /** Weight tensors by name: [elem type, dims, data]. */
  weights: () => Record<string, ['float' | 'int8' | 'uint8', number[], Float32Array | Int8Array | Uint8Array]>;
  node: (g: GraphBuilder, x: string, w: Record<string, string>) => string;
}

const nbits = (bits: number): Kernel => {
  const blocks = K / 32;
  const blob = (32 * bits) / 8;
  return {
    name: `MatMulNBits ${bits}-bit, block 32, int8 compute`,
    weights: () => ({
      b: ['uint8', [N, blocks, blob], Uint8Array.from({ length: N * blocks * blob }, () => Math.floor(Math.random() * 256))],
      s: ['float', [N * blocks], new Float32Array(N * blocks).fill(0.01)],
    }),
    node: (g, x, w) => g.node('MatMulNBits', [x, w.b!, w.s!], { K, N, bits, block_size: 32, accuracy_level: 4 }, 1, 'com.microsoft')[0]!,
  };
};

const KERNELS: Kernel[] = [
  {
    name: 'fp32 Gemm, W [out, in], transB',
    weights: () => ({ w: ['float', [N, K], random(N * K)] }),
    node: (g, x, w) => g.op('Gemm', [x, w.w!], { transB: 1 }),
  },
  {
    name: 'fp32 MatMul, W^T [in, out]',
    weights: () => ({ w: ['float', [K, N], random(N * K)] }),
    node: (g, x, w) => g.op('MatMul', [x, w.w!]),
  },
  {
    name: 'int8 DynamicQuantizeMatMul, per-column scales',
    weights: () => ({
      b: ['int8', [K, N], Int8Array.from({ length: N * K }, () => Math.floor(Math.random() * 127) - 63)],
      s: ['float', [N], new Float32Array(N).fill(0.01)],
    }),
    node: (g, x, w) => g.node('DynamicQuantizeMatMul', [x, w.b!, w.s!], {}, 1, 'com.microsoft')[0]!,
  },
  nbits(8),
  nbits(4),
];

const tensorOf = ([type, dims, data]: ['float' | 'int8' | 'uint8', number[], Float32Array | Int8Array | Uint8Array]) =>
  new ort.Tensor(type === 'float' ? 'float32' : type, data, dims);

/** Seconds per product, the weight fed as an input or built in as an initializer. */
async function secondsPerProduct(kernel: Kernel, asInitializer: boolean, m: number): Promise<number> {
  const x = new ort.Tensor('float32', random(m * K), [m, K]);
  const runs: (() => Promise<unknown>)[] = [];
  const shared = asInitializer ? null : await (async () => {
    const g = new GraphBuilder('k');
    const names = Object.fromEntries(Object.entries(kernel.weights()).map(([n, [type, dims]]) => [n, g.input(n, dims, type)]));
    g.output('y', kernel.node(g, g.input('x', ['m', K]), names), ['m', N]);
    return GraphSession.create(g.toBytes(), { threads: o.threads });
  })();
  for (let i = 0; i < COPIES; i++) {
    const weights = kernel.weights();
    if (shared !== null) {
      const feeds = Object.fromEntries(Object.entries(weights).map(([n, w]) => [n, tensorOf(w)]));
      runs.push(() => shared.run({ ...feeds, x }));
    } else {
      const g = new GraphBuilder('k');
      const names = Object.fromEntries(Object.entries(weights).map(([n, [type, dims, data]]) => [n, g.initializer(n, dims, type, bytes(data))]));
      g.output('y', kernel.node(g, g.input('x', ['m', K]), names), ['m', N]);
      const session = await GraphSession.create(g.toBytes(), { threads: o.threads });
      runs.push(() => session.run({ x }));
    }
  }
  for (const run of runs) await run();
  const rounds = m === 1 ? 20 : 2;
  const t0 = performance.now();
  for (let r = 0; r < rounds; r++) for (const run of runs) await run();
  return (performance.now() - t0) / 1000 / (rounds * COPIES);
}

const rows: { kernel: string; decodeInputGparams: number; decodeInitializerGparams: number; prefillInputGops: number; prefillInitializerGops: number }[] = [];
for (const kernel of KERNELS) {
  const [decodeIn, decodeInit, prefillIn, prefillInit] = [
    await secondsPerProduct(kernel, false, 1),
    await secondsPerProduct(kernel, true, 1),
    await secondsPerProduct(kernel, false, 768),
    await secondsPerProduct(kernel, true, 768),
  ];
  rows.push({
    kernel: kernel.name,
    decodeInputGparams: (N * K) / decodeIn / 1e9,
    decodeInitializerGparams: (N * K) / decodeInit / 1e9,
    prefillInputGops: (2 * 768 * N * K) / prefillIn / 1e9,
    prefillInitializerGops: (2 * 768 * N * K) / prefillInit / 1e9,
  });
  process.stderr.write(`measured ${kernel.name}\n`);
}
console.log(`\n[${N} x ${K}] weights, ${COPIES} distinct, ${o.threads} threads: weight as graph input / as initializer\n`);
console.log('| kernel | M=1 Gparam/s, input | M=1 Gparam/s, initializer | M=768 GOP/s, input | M=768 GOP/s, initializer |\n|---|---|---|---|---|');
const f = (x: number) => x.toFixed(1);
for (const r of rows) console.log(`| ${r.kernel} | ${f(r.decodeInputGparams)} | ${f(r.decodeInitializerGparams)} | ${r.prefillInputGops.toFixed(0)} | ${r.prefillInitializerGops.toFixed(0)} |`);
fs.mkdirSync(path.dirname(o.out), { recursive: true });
fs.writeFileSync(o.out, `${JSON.stringify({ date: new Date().toISOString(), threads: o.threads, rows }, null, 2)}\n`);
