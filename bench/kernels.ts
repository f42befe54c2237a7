/**
 * ONNX Runtime's matrix products on this machine, as the engine could feed them: each kernel with
 * its weight as a graph input (what the engine does today: one session per kind of layer, compact
 * core-neuron weights fed per request) and as an initializer (pre-packed by ONNX Runtime), at
 * decode (M = 1) and prefill (M = 768) sizes. Twelve distinct [4864 x 896] weights cycle (52 MB in
 * int8, 209 MB in fp32: past most hosts' caches, not the 300 MiB L3 some of these VMs report, so
 * read these rows as ratios between kernels). Then what a decode step pays besides its products:
 * a session run, one small operator, ONNX Runtime's fused GroupQueryAttention (which the
 * engine measured and does not use), and what baking per-request compact FFN weights into a
 * session of their own would cost (the engine feeds them instead). Then the project's own native
 * kernels on the same shapes. Prints tables and writes JSON.
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
import { quantizeInt4, quantizeLinear } from '../src/models/quantize.js';
import { nativeKernels } from '../src/native/kernels.js';

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
  {
    // The native kernels' int8 layout (rows of W as u8 = w + 64, K padded to 64) as ONNX Runtime
    // would read it if prefill shared those bytes instead of holding its own copy.
    name: 'int8 DynamicQuantizeMatMul on the native layout (Transpose, zero point 64)',
    weights: () => ({
      w: ['uint8', [N, K], Uint8Array.from({ length: N * K }, () => 1 + Math.floor(Math.random() * 127))],
      s: ['float', [N], new Float32Array(N).fill(0.01)],
    }),
    node: (g, x, w) => g.node('DynamicQuantizeMatMul', [x, g.op('Transpose', [w.w!], { perm: [1, 0] }), w.s!, g.initializer('zero_point', [], 'uint8', Uint8Array.of(64))], {}, 1, 'com.microsoft')[0]!,
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

/** Microseconds per call of `run`, after a warm-up. */
async function microseconds(run: () => Promise<unknown>, calls = 400): Promise<number> {
  for (let i = 0; i < 20; i++) await run();
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) await run();
  return ((performance.now() - t0) * 1000) / calls;
}

/** A session of `ops` chained Adds on one [1, 896] row: the fixed costs of a run and of an operator. */
async function chainOfAdds(ops: number): Promise<number> {
  const g = new GraphBuilder('adds');
  let y = g.input('x', [1, K]);
  for (let i = 0; i < ops; i++) y = g.op('Add', [y, g.constFloat([1e-3])]);
  g.output('y', y, [1, K]);
  const session = await GraphSession.create(g.toBytes(), { threads: o.threads });
  const x = new ort.Tensor('float32', random(K), [1, K]);
  return microseconds(() => session.run({ x }));
}

/**
 * GroupQueryAttention at decode with Qwen2-0.5B's heads (14 query, 2 KV, 64 wide): one query
 * against 768 cached tokens in an 800-slot buffer bound as both past and present, so the kernel
 * writes the new token in place and copies nothing (the layout the engine would use).
 */
async function groupQueryAttention(): Promise<number> {
  const [heads, kvHeads, width, slots, cached] = [14, 2, 64, 800, 768];
  const g = new GraphBuilder('gqa');
  const cacheDims = [1, kvHeads, slots, width];
  const inputs = [
    g.input('q', [1, 1, heads * width]),
    g.input('k', [1, 1, kvHeads * width]),
    g.input('v', [1, 1, kvHeads * width]),
    g.input('past_k', cacheDims),
    g.input('past_v', cacheDims),
    g.input('seqlens_k', [1], 'int32'),
    g.input('total', [], 'int32'),
  ];
  const [out, presentK, presentV] = g.node('GroupQueryAttention', inputs, { num_heads: heads, kv_num_heads: kvHeads }, 3, 'com.microsoft');
  g.output('out', out!, [1, 1, heads * width]);
  g.output('present_k', presentK!, cacheDims);
  g.output('present_v', presentV!, cacheDims);
  const session = await GraphSession.create(g.toBytes(), { threads: o.threads });
  const [pastK, pastV] = [new ort.Tensor('float32', random(2 * slots * width), cacheDims), new ort.Tensor('float32', random(2 * slots * width), cacheDims)];
  const feeds = {
    q: new ort.Tensor('float32', random(heads * width), [1, 1, heads * width]),
    k: new ort.Tensor('float32', random(kvHeads * width), [1, 1, kvHeads * width]),
    v: new ort.Tensor('float32', random(kvHeads * width), [1, 1, kvHeads * width]),
    past_k: pastK,
    past_v: pastV,
    seqlens_k: new ort.Tensor('int32', Int32Array.of(cached), [1]),
    total: new ort.Tensor('int32', Int32Array.of(cached + 1), []),
  };
  return microseconds(() => session.run(feeds, { out: null, present_k: pastK, present_v: pastV }));
}

/**
 * Microseconds to serialise and create a session with one Qwen2-0.5B layer's compact int8 FFN
 * baked in (`neurons` of its 4864: gate/up [896, 2 neurons], down [neurons, 896]), the median
 * of 3: what a request would pay per layer to run its core neurons on pre-packed weights.
 */
async function bakedCompactFfn(neurons: number): Promise<number> {
  const int8 = (dims: [number, number]) => new ort.Tensor('int8', Int8Array.from({ length: dims[0] * dims[1] }, () => Math.floor(Math.random() * 127) - 63), dims);
  const times: number[] = [];
  for (let i = 0; i < 3; i++) {
    const g = new GraphBuilder('compact_ffn');
    const x = g.input('x', [1, K]);
    const gateUp = g.node('DynamicQuantizeMatMul', [x, g.input('gate_up', [K, 2 * neurons], 'int8'), g.input('gate_up_scale', [2 * neurons])], {}, 1, 'com.microsoft')[0]!;
    const [gate, up] = g.node('Split', [gateUp], { axis: 1, num_outputs: 2 }, 2) as [string, string];
    const act = g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate])]), up]);
    g.output('y', g.node('DynamicQuantizeMatMul', [act, g.input('down', [neurons, K], 'int8'), g.input('down_scale', [K])], {}, 1, 'com.microsoft')[0]!, [1, K]);
    const baked = {
      gate_up: int8([K, 2 * neurons]),
      gate_up_scale: new ort.Tensor('float32', new Float32Array(2 * neurons).fill(0.01), [2 * neurons]),
      down: int8([neurons, K]),
      down_scale: new ort.Tensor('float32', new Float32Array(K).fill(0.01), [K]),
    };
    const t0 = performance.now();
    const session = await GraphSession.create(g.toBytes(baked), { threads: o.threads });
    times.push((performance.now() - t0) * 1000);
    await session.release();
  }
  return times.sort((a, b) => a - b)[1]!;
}

const [oneOp, fortyOps] = [await chainOfAdds(1), await chainOfAdds(40)];
const compactNeurons = Math.round(0.6 * N);
const overhead = {
  sessionRunUs: oneOp,
  operatorUs: (fortyOps - oneOp) / 39,
  groupQueryAttentionUs: await groupQueryAttention(),
  bakedCompactFfnUs: await bakedCompactFfn(compactNeurons),
};
console.log(`\nWhat a decode step pays besides its products (${o.threads} threads)\n`);
console.log('| what | microseconds |\n|---|---|');
console.log(`| a session run of one small operator ([1, ${K}] Add), JavaScript to JavaScript | ${overhead.sessionRunUs.toFixed(0)} |`);
console.log(`| each further small operator in the same run | ${overhead.operatorUs.toFixed(1)} |`);
console.log(`| GroupQueryAttention, 1 query over 768 cached tokens (Qwen2-0.5B heads), cache bound in place | ${overhead.groupQueryAttentionUs.toFixed(0)} |`);
console.log(`| a session with one layer's compact int8 FFN baked in (${compactNeurons} of ${N} neurons), serialised and created | ${overhead.bakedCompactFfnUs.toFixed(0)} |`);
fs.mkdirSync(path.dirname(o.out), { recursive: true });

/** The last-level cache's size in bytes (Linux sysfs), or 0 where it cannot be read. */
function lastLevelCacheBytes(): number {
  const root = '/sys/devices/system/cpu/cpu0/cache';
  let largest = 0;
  for (const index of fs.existsSync(root) ? fs.readdirSync(root).filter((d) => d.startsWith('index')) : []) {
    const size = /^(\d+)([KMG]?)/.exec(fs.readFileSync(path.join(root, index, 'size'), 'utf8').trim());
    if (size !== null) largest = Math.max(largest, Number(size[1]) * { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[size[2] as '' | 'K' | 'M' | 'G']);
  }
  return largest;
}

/**
 * The project's own kernels (native/kernels.cc) on the same shapes: int8 and int4 products of one
 * row, dense and over 40% of the rows chosen at random (a core-neuron FFN's gate/up), in GB/s of
 * weight bytes read, over distinct weights four times the last-level cache (at least 1 GB), so
 * they stream from memory as a decode step does; beside the machine's read bandwidth, measured
 * the same way by summing the bytes of as large a set of arrays on the same threads.
 */
interface NativeRow { kernel: string; workingSetMB: number; denseGBs: number; subsetGBs: number; subsetTimeRatio: number; shareOfRead: number }
async function nativeRows(): Promise<{ readGBs: number; lastLevelCacheMB: number; rows: NativeRow[] } | string> {
  const { kernels, reason } = nativeKernels();
  if (kernels === null) return reason;
  kernels.setThreads(o.threads);
  const llc = lastLevelCacheBytes();
  const workingSet = Math.max(1e9, 4 * llc);
  const rounds = 5;
  const best = (f: () => void) => {
    f();
    let fastest = Infinity;
    for (let r = 0; r < rounds; r++) {
      const t0 = performance.now();
      f();
      fastest = Math.min(fastest, (performance.now() - t0) / 1000);
    }
    return fastest;
  };
  const arrays = Array.from({ length: Math.ceil(workingSet / (N * K)) }, () => new Uint8Array(N * K).fill(1));
  const readGBs = (arrays.length * N * K) / best(() => arrays.forEach((a) => kernels.sumBytes(a))) / 1e9;
  arrays.length = 0;
  const out: NativeRow[] = [];
  const subset = Int32Array.from(Array.from({ length: N }, (_, i) => i).sort(() => Math.random() - 0.5).slice(0, Math.round(0.4 * N)).sort((a, b) => a - b));
  for (const bits of [8, 4] as const) {
    const one = (() => {
      const w = random(N * K);
      if (bits === 8) {
        const q = quantizeLinear(w, N, K);
        return kernels.packInt8(q.values.data as Int8Array, q.scales.data as Float32Array, N, K);
      }
      const q = quantizeInt4(w, N, K);
      return kernels.int4(q.values.data as Uint8Array, q.scales.data as Float32Array, N, K);
    })();
    const bytesPerMatrix = one.data.byteLength + one.scales.byteLength;
    // Copies of one quantized matrix: distinct memory is what matters, not distinct values.
    const weights = Array.from({ length: Math.ceil(workingSet / bytesPerMatrix) }, () => ({ ...one, data: one.data.slice(), scales: one.scales.slice() }));
    const x = random(K);
    const [dense, sparse] = [new Float32Array(N), new Float32Array(subset.length)];
    const seconds = (rows: Int32Array | null, target: Float32Array) => best(() => weights.forEach((w) => kernels.gemv(w, x, target, rows))) / weights.length;
    const [denseS, subsetS] = [seconds(null, dense), seconds(subset, sparse)];
    const denseGBs = bytesPerMatrix / denseS / 1e9;
    out.push({
      kernel: `native int${bits} (${kernels.info().path})`,
      workingSetMB: (weights.length * bytesPerMatrix) / 1e6,
      denseGBs,
      subsetGBs: ((subset.length / N) * bytesPerMatrix) / subsetS / 1e9,
      subsetTimeRatio: subsetS / denseS,
      shareOfRead: denseGBs / readGBs,
    });
  }
  return { readGBs, lastLevelCacheMB: llc / 2 ** 20, rows: out };
}

const native = await nativeRows();
if (typeof native === 'string') console.log(`\nNative kernels: not measured: ${native}`);
else {
  console.log(`\nThe project's own kernels, [${N} x ${K}] weights, ${o.threads} threads, M = 1, distinct weights past the ${native.lastLevelCacheMB.toFixed(0)} MiB last-level cache; the subset is 40% of the rows at random. Read bandwidth (summing as many bytes on the same threads): ${native.readGBs.toFixed(1)} GB/s\n`);
  console.log('| kernel | working set MB | dense GB/s (weights + scales) | share of read bandwidth | subset GB/s | subset time / dense time |\n|---|---|---|---|---|---|');
  for (const r of native.rows) console.log(`| ${r.kernel} | ${r.workingSetMB.toFixed(0)} | ${r.denseGBs.toFixed(1)} | ${(100 * r.shareOfRead).toFixed(0)}% | ${r.subsetGBs.toFixed(1)} | ${r.subsetTimeRatio.toFixed(2)} |`);
}
fs.writeFileSync(o.out, `${JSON.stringify({ date: new Date().toISOString(), cpu: os.cpus()[0]?.model, threads: o.threads, rows, overhead, native }, null, 2)}\n`);
