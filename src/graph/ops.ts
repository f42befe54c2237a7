/**
 * Transformer building blocks on top of GraphBuilder. Hidden states are 2-D [seq, hidden]
 * (batch 1), so every projection is one Gemm with the Hugging Face [out, in] weight and transB.
 */
import type { Activation } from '../io/model-config.js';
import { float, type Dim, type GraphBuilder } from './builder.js';

/** x @ w^T + b, with w in Hugging Face's [out, in] layout. */
export function linear(g: GraphBuilder, x: string, w: string, b?: string): string {
  return g.op('Gemm', b === undefined ? [x, w] : [x, w, b], { transB: 1 });
}

/** Inputs per int4 block (one scale each): MatMulNBits' block_size. */
export const INT4_BLOCK = 32;

/** The scale input that goes with a quantized weight input `weight` of weightedLinear. */
export const scaleOf = (weight: string): string => `${weight}_scale`;

/**
 * How a model holds its linear weights (quantize.ts): fp32; int8 with one scale per output;
 * int4 in blocks of 32 inputs with a scale each.
 */
export type WeightFormat = 'fp32' | 'int8' | 'int4';

/**
 * x @ W^T + b for the weight the graph takes as input `name`, declared in `format`: fp32 W as
 * [out, in] (Hugging Face's layout; `transposed`: held as [in, out]); int8 B = W^T [in, out]
 * with scales `${name}_scale` [out], run by ONNX Runtime's DynamicQuantizeMatMul; or int4 W
 * [out, blocks, 16] with `${name}_scale` [out * blocks] (always W's own orientation), run by
 * MatMulNBits with int8 compute (accuracy_level 4). MatMulNBits is only fast on an initializer.
 */
export function weightedLinear(
  g: GraphBuilder,
  x: string,
  name: string,
  out: Dim,
  inFeatures: Dim,
  format: WeightFormat,
  b?: string,
  transposed = false,
): string {
  if (format === 'int4') {
    if (typeof out !== 'number' || typeof inFeatures !== 'number') throw new Error(`${name}: an int4 weight needs fixed dimensions`);
    const blocks = Math.ceil(inFeatures / INT4_BLOCK);
    const inputs = [x, g.input(name, [out, blocks, INT4_BLOCK / 2], 'uint8'), g.input(scaleOf(name), [out * blocks])];
    if (b !== undefined) inputs.push('', '', b);
    const attrs = { K: inFeatures, N: out, bits: 4, block_size: INT4_BLOCK, accuracy_level: 4 };
    return g.node('MatMulNBits', inputs, attrs, 1, 'com.microsoft')[0]!;
  }
  if (format === 'int8') {
    const inputs = [x, g.input(name, [inFeatures, out], 'int8'), g.input(scaleOf(name), [out])];
    if (b !== undefined) inputs.push('', b);
    return g.node('DynamicQuantizeMatMul', inputs, {}, 1, 'com.microsoft')[0]!;
  }
  if (transposed) {
    const w = g.input(name, [inFeatures, out]);
    return g.op('Gemm', b === undefined ? [x, w] : [x, w, b]);
  }
  return linear(g, x, g.input(name, [out, inFeatures]), b);
}

/**
 * LLaMA RMSNorm: x / sqrt(mean(x^2) + eps) * w, in fp32 as transformers computes it. Spelled
 * Pow -> ReduceMean -> Add -> Sqrt -> Div -> Mul so ONNX Runtime fuses it into one
 * SimplifiedLayerNormalization kernel (and with the residual Add before it, a skip variant).
 */
export function rmsNorm(g: GraphBuilder, x: string, w: string, eps: number): string {
  const meanSquare = g.op('ReduceMean', [g.op('Pow', [x, g.constFloat([2])]), g.constInt64([-1])], { keepdims: 1 });
  const rms = g.op('Sqrt', [g.op('Add', [meanSquare, g.constFloat([eps])])]);
  return g.op('Mul', [g.op('Div', [x, rms]), w]);
}

export function layerNorm(g: GraphBuilder, x: string, w: string, b: string, eps: number): string {
  return g.op('LayerNormalization', [x, w, b], { axis: -1, epsilon: float(eps) });
}

/** transformers' ACT2FN, composed from ONNX primitives (ORT fuses the GELU patterns). */
export function activation(g: GraphBuilder, x: string, act: Activation): string {
  const half = () => g.constFloat([0.5]);
  const one = () => g.constFloat([1]);
  switch (act) {
    case 'silu':
      return g.op('Mul', [x, g.op('Sigmoid', [x])]);
    case 'relu':
      return g.op('Relu', [x]);
    case 'quick_gelu':
      return g.op('Mul', [x, g.op('Sigmoid', [g.op('Mul', [x, g.constFloat([1.702])])])]);
    case 'gelu': {
      const erf = g.op('Erf', [g.op('Mul', [x, g.constFloat([Math.SQRT1_2])])]);
      return g.op('Mul', [g.op('Mul', [x, half()]), g.op('Add', [erf, one()])]);
    }
    case 'gelu_pytorch_tanh':
    case 'gelu_new': {
      const cube = g.op('Mul', [g.op('Mul', [x, x]), x]);
      const inner = g.op('Add', [x, g.op('Mul', [cube, g.constFloat([0.044715])])]);
      const tanh = g.op('Tanh', [g.op('Mul', [inner, g.constFloat([Math.sqrt(2 / Math.PI)])])]);
      return g.op('Mul', [g.op('Mul', [x, half()]), g.op('Add', [tanh, one()])]);
    }
  }
}

/** [seq, heads * headDim] -> [heads, seq, headDim]. */
export function splitHeads(g: GraphBuilder, x: string, heads: number, headDim: number): string {
  const r = g.op('Reshape', [x, g.constInt64([-1, heads, headDim])]);
  return g.op('Transpose', [r], { perm: [1, 0, 2] });
}

/** [heads, seq, headDim] -> [seq, heads * headDim]. */
export function mergeHeads(g: GraphBuilder, x: string, heads: number, headDim: number): string {
  const t = g.op('Transpose', [x], { perm: [1, 0, 2] });
  return g.op('Reshape', [t, g.constInt64([-1, heads * headDim])]);
}
