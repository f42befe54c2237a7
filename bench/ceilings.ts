/**
 * This machine's ceilings as ONNX Runtime reaches them, measured in the same run as the model:
 * fp32 GEMM throughput (a prefill-sized product) and weight-streaming bandwidth (a decode-sized
 * product over more weights than the caches hold).
 */
import { GraphBuilder } from '../src/graph/builder.js';
import { linear } from '../src/graph/ops.js';
import { GraphSession, tensor } from '../src/graph/session.js';

export interface Ceilings {
  /** A prefill-sized product: 768 x 896 by 896 x 4864. */
  gemmGflops: number;
  /** The same product with 104 rows, the prefill of a pruned prompt (64 image + 40 text tokens). */
  smallGemmGflops: number;
  bandwidthGBs: number;
}

async function gemmSession(threads: number): Promise<GraphSession> {
  const g = new GraphBuilder('gemm');
  g.output('y', linear(g, g.input('x', ['m', 'k']), g.input('w', ['n', 'k'])), ['m', 'n']);
  return GraphSession.create(g.toBytes(), { threads });
}

function randomData(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() - 0.5;
  return a;
}

// A ceiling is what the machine can do: the best of several runs, robust to a noisy neighbour.
const best = (xs: number[]) => Math.min(...xs);

export async function measureCeilings(threads: number): Promise<Ceilings> {
  const session = await gemmSession(threads);
  const [m, k, n] = [768, 896, 4864];
  const w = tensor(randomData(n * k), [n, k]);
  const gflops = async (rows: number) => {
    const x = tensor(randomData(rows * k), [rows, k]);
    const times: number[] = [];
    for (let i = 0; i < 8; i++) {
      const t = performance.now();
      await session.run({ x, w });
      times.push(performance.now() - t);
    }
    return (2 * rows * k * n) / (best(times.slice(2)) * 1e6);
  };
  const gemmGflops = await gflops(m);
  const smallGemmGflops = await gflops(104);

  // 24 distinct 17 MB weights: 420 MB per sweep, far beyond the last-level cache.
  const weights = Array.from({ length: 24 }, () => tensor(randomData(n * k), [n, k]));
  const one = tensor(randomData(k), [1, k]);
  const sweepTimes: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t = performance.now();
    for (const weight of weights) await session.run({ x: one, w: weight });
    sweepTimes.push(performance.now() - t);
  }
  const bandwidthGBs = (weights.length * n * k * 4) / (best(sweepTimes.slice(1)) * 1e6);
  await session.release();
  return { gemmGflops, smallGemmGflops, bandwidthGBs };
}
