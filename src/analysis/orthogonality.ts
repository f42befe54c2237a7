/**
 * The paper's Section 4 claim, measured on a checkpoint: a decoder's weight products are close to a
 * scaled identity. Per layer, for M_qk = W_q^T W_k (hidden x hidden, each query head paired with
 * its key head as GQA repeats them), W_o W_o^T and M_d = W_down W_down^T (both hidden x hidden):
 * the diagonal share sum(diag(M)^2) / sum(M^2) and the best-fit scale s of M ~ s I
 * (argmin_s ||M - s I||_F = trace(M) / hidden), beside the same figures for Gaussian matrices of the
 * same shapes. The products run on ONNX Runtime (Gemm), the statistics in JavaScript.
 */
import { GraphBuilder } from '../graph/builder.js';
import { GraphSession, tensor } from '../graph/session.js';
import type { WeightSource } from '../models/weights.js';
import { detectLayout } from '../models/weights.js';
import type { TextConfig } from '../io/model-config.js';
import { mulberry32 } from '../util/seeded-random.js';

export interface MatrixFigures {
  diagonalShare: number;
  scale: number;
  /** The diagonal share of the same product of Gaussian matrices of the same shapes. */
  randomDiagonalShare: number;
}

export interface LayerOrthogonality {
  layer: number;
  qk: MatrixFigures;
  o: MatrixFigures;
  down: MatrixFigures;
}

export interface OrthogonalityReport {
  hiddenSize: number;
  layers: LayerOrthogonality[];
  /** The top-left block of one layer's M_qk, row-major, for a heat map. */
  heatmap: { layer: number; size: number; values: Float32Array };
}

/** Diagonal share and best-fit scale of a square n x n matrix. */
export function identityFit(m: Float32Array, n: number): { diagonalShare: number; scale: number } {
  let all = 0;
  let diagonal = 0;
  let trace = 0;
  for (let i = 0; i < m.length; i++) all += m[i]! * m[i]!;
  for (let i = 0; i < n; i++) {
    const d = m[i * n + i]!;
    diagonal += d * d;
    trace += d;
  }
  return { diagonalShare: all > 0 ? diagonal / all : 0, scale: trace / n };
}

/** Rows of W_k repeated so that row block h serves query head h (transformers' repeat_kv). */
export function repeatKeyHeads(wk: Float32Array, heads: number, kvHeads: number, headDim: number, hidden: number): Float32Array {
  const out = new Float32Array(heads * headDim * hidden);
  const group = heads / kvHeads;
  for (let h = 0; h < heads; h++) {
    const src = Math.floor(h / group) * headDim * hidden;
    out.set(wk.subarray(src, src + headDim * hidden), h * headDim * hidden);
  }
  return out;
}

function gaussian(length: number, random: () => number): Float32Array {
  const out = new Float32Array(length);
  for (let i = 0; i < length; i += 2) {
    // Box-Muller: two normals from two uniforms.
    const r = Math.sqrt(-2 * Math.log(1 - random()));
    const t = 2 * Math.PI * random();
    out[i] = r * Math.cos(t);
    if (i + 1 < length) out[i + 1] = r * Math.sin(t);
  }
  return out;
}

/** C = A^T B (A [k, n], B [k, n]) or C = A B^T (A [n, k], B [n, k]), both n x n, on ONNX Runtime. */
class GramProducts {
  private constructor(
    private readonly transposedFirst: GraphSession,
    private readonly transposedSecond: GraphSession,
  ) {}

  static async create(threads?: number): Promise<GramProducts> {
    const graph = (transA: number) => {
      const g = new GraphBuilder(transA ? 'at_b' : 'a_bt');
      const a = g.input('a', ['r', 'c']);
      const b = g.input('b', ['r', 'c']);
      g.output('y', g.op('Gemm', [a, b], transA ? { transA: 1 } : { transB: 1 }), ['n', 'n']);
      return GraphSession.create(g.toBytes(), threads === undefined ? {} : { threads });
    };
    return new GramProducts(await graph(1), await graph(0));
  }

  async atb(a: Float32Array, b: Float32Array, k: number, n: number): Promise<Float32Array> {
    return (await this.transposedFirst.runFloat({ a: tensor(a, [k, n]), b: tensor(b, [k, n]) }, ['y']))[0]!;
  }

  async abt(a: Float32Array, b: Float32Array, n: number, k: number): Promise<Float32Array> {
    return (await this.transposedSecond.runFloat({ a: tensor(a, [n, k]), b: tensor(b, [n, k]) }, ['y']))[0]!;
  }

  async release(): Promise<void> {
    await Promise.all([this.transposedFirst.release(), this.transposedSecond.release()]);
  }
}

export interface OrthogonalityOptions {
  /** Layer whose M_qk block is kept for the heat map (default: the middle layer). */
  heatmapLayer?: number;
  /** Side of that block (default 64, at most hidden). */
  heatmapSize?: number;
  seed?: number;
  threads?: number;
  onLayer?: (done: number, total: number) => void;
}

export async function analyzeOrthogonality(weights: WeightSource, c: TextConfig, options: OrthogonalityOptions = {}): Promise<OrthogonalityReport> {
  const { hiddenSize: h, numAttentionHeads: nh, numKeyValueHeads: kvh, headDim: hd, intermediateSize: ffn, numHiddenLayers: n } = c;
  const heatmapLayer = options.heatmapLayer ?? Math.floor(n / 2);
  const size = Math.min(options.heatmapSize ?? 64, h);
  const prefix = detectLayout(weights).language;
  const gram = await GramProducts.create(options.threads);
  try {
    // One Gaussian draw per product shape serves every layer (the shapes do not change).
    const random = mulberry32(options.seed ?? 0);
    const randomQk = identityFit(await gram.atb(gaussian(nh * hd * h, random), repeatKeyHeads(gaussian(kvh * hd * h, random), nh, kvh, hd, h), nh * hd, h), h);
    const randomO = identityFit(await gram.abt(...twice(gaussian(h * nh * hd, random)), h, nh * hd), h);
    const randomDown = identityFit(await gram.abt(...twice(gaussian(h * ffn, random)), h, ffn), h);

    const layers: LayerOrthogonality[] = [];
    let heatmap: Float32Array = new Float32Array(0);
    for (let l = 0; l < n; l++) {
      const p = `${prefix}layers.${l}.`;
      const wq = weights.read(`${p}self_attn.q_proj.weight`, [nh * hd, h]);
      const wk = repeatKeyHeads(weights.read(`${p}self_attn.k_proj.weight`, [kvh * hd, h]), nh, kvh, hd, h);
      const qk = await gram.atb(wq, wk, nh * hd, h);
      if (l === heatmapLayer) heatmap = topLeft(qk, h, size);
      const wo = weights.read(`${p}self_attn.o_proj.weight`, [h, nh * hd]);
      const wd = weights.read(`${p}mlp.down_proj.weight`, [h, ffn]);
      layers.push({
        layer: l,
        qk: { ...identityFit(qk, h), randomDiagonalShare: randomQk.diagonalShare },
        o: { ...identityFit(await gram.abt(wo, wo, h, nh * hd), h), randomDiagonalShare: randomO.diagonalShare },
        down: { ...identityFit(await gram.abt(wd, wd, h, ffn), h), randomDiagonalShare: randomDown.diagonalShare },
      });
      options.onLayer?.(l + 1, n);
    }
    return { hiddenSize: h, layers, heatmap: { layer: heatmapLayer, size, values: heatmap } };
  } finally {
    await gram.release();
  }
}

const twice = (m: Float32Array): [Float32Array, Float32Array] => [m, m];

function topLeft(m: Float32Array, n: number, size: number): Float32Array {
  const out = new Float32Array(size * size);
  for (let r = 0; r < size; r++) out.set(m.subarray(r * n, r * n + size), r * size);
  return out;
}
