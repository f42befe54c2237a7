/**
 * Decode steps on the project's own kernels (native/layer.cc): each layer of an int8 or int4
 * decoder runs for one token in one native call, over the engine's KV cache in place, with no
 * ONNX Runtime session per layer group. Prefill stays on ONNX Runtime, whose products with
 * hundreds of rows are as fast as a hand-written kernel.
 *
 * A layer's native weights are made from the same quantized feeds its layer group bakes (no
 * second quantization): int8 rows packed for the kernels (a copy), int4 read in MatMulNBits'
 * layout as they are.
 */
import ort from 'onnxruntime-node';
import { scaleOf, type WeightFormat } from '../graph/ops.js';
import type { Feeds } from '../graph/session.js';
import type { TextConfig } from '../io/model-config.js';
import { nativeKernels, type NativeKernels, type NativeLayer, type PackedWeight } from '../native/kernels.js';
import { LAYER } from './decoder-io.js';

/** Which kernels run decode steps: the project's own, or ONNX Runtime's layer groups. */
export type DecodeKernel = 'native' | 'ort';

/** A layer's FFN on its core neurons, for a native step: the neurons and their down columns. */
export interface NativeFfn {
  neurons: Int32Array;
  down: PackedWeight;
}

let warned = false;

/**
 * The kernels decode steps of a `format` model with config `c` run on, given the asked kernel
 * (default native where it can): null for ONNX Runtime. Says once, as a process warning, why a
 * native request falls back.
 */
export function decodeKernels(asked: DecodeKernel | undefined, format: WeightFormat, c: TextConfig): NativeKernels | null {
  if (asked === 'ort' || format === 'fp32') return null;
  const why = c.hiddenAct !== 'silu' ? `its FFN activation is ${c.hiddenAct}, and the native layer computes SiLU` : nativeKernels().reason;
  if (why === '' && nativeKernels().kernels !== null) return nativeKernels().kernels;
  if (!warned) {
    warned = true;
    process.emitWarning(`corematching: decoding on ONNX Runtime: ${why}`);
  }
  return null;
}

const packed = (t: Record<string, ort.Tensor>, key: string, bits: 8 | 4, rows: number, cols: number): PackedWeight => ({
  bits,
  rows,
  cols,
  data: t[key]!.data as Uint8Array,
  scales: t[scaleOf(key)]!.data as Float32Array,
});

/**
 * A layer's native weights as tensors (what the converted-weight cache stores), from its
 * quantized feeds: int8 B = W^T [in, out] packed as rows of W; int4 kept as it is.
 */
export function nativeLayerTensors(kernels: NativeKernels, feeds: Feeds, c: TextConfig, format: 'int8' | 'int4'): Record<string, ort.Tensor> {
  const { hiddenSize: h, numAttentionHeads: nh, numKeyValueHeads: kvh, headDim: hd, intermediateSize: ffn } = c;
  const shapes: [string, number, number][] = [
    [LAYER.qkv, (nh + 2 * kvh) * hd, h],
    [LAYER.o, h, nh * hd],
    [LAYER.gateUp, 2 * ffn, h],
    [LAYER.downT, h, ffn],
  ];
  const out: Record<string, ort.Tensor> = {};
  for (const [key, rows, cols] of shapes) {
    const values = feeds[key]!.data as Int8Array | Uint8Array;
    const data = format === 'int8' ? kernels.packInt8(values as Int8Array, feeds[scaleOf(key)]!.data as Float32Array, rows, cols).data : (values as Uint8Array);
    out[key] = new ort.Tensor('uint8', data, [data.length]);
    out[scaleOf(key)] = feeds[scaleOf(key)]!;
  }
  for (const key of [LAYER.inputNorm, LAYER.postNorm, LAYER.qkvBias, LAYER.oBias, LAYER.gateUpBias, LAYER.downBias]) {
    if (feeds[key] !== undefined) out[key] = feeds[key]!;
  }
  return out;
}

/** A decoder layer for native steps, and its down projection (which core-neuron FFNs are cut from). */
export interface NativeDecoderLayer {
  layer: NativeLayer;
  down: PackedWeight;
}

/** The native layer of `nativeLayerTensors`' tensors. */
export function nativeLayer(kernels: NativeKernels, t: Record<string, ort.Tensor>, c: TextConfig, format: 'int8' | 'int4'): NativeDecoderLayer {
  const { hiddenSize: h, numAttentionHeads: nh, numKeyValueHeads: kvh, headDim: hd, intermediateSize: ffn } = c;
  const bits = format === 'int8' ? 8 : 4;
  const vector = (key: string) => (t[key]?.data as Float32Array | undefined) ?? null;
  const layer = kernels.createLayer(
    { hidden: h, heads: nh, kvHeads: kvh, headDim: hd, ffn, eps: c.rmsNormEps },
    {
      inputNorm: vector(LAYER.inputNorm)!,
      postNorm: vector(LAYER.postNorm)!,
      qkv: packed(t, LAYER.qkv, bits, (nh + 2 * kvh) * hd, h),
      o: packed(t, LAYER.o, bits, h, nh * hd),
      gateUp: packed(t, LAYER.gateUp, bits, 2 * ffn, h),
      down: packed(t, LAYER.downT, bits, h, ffn),
      qkvBias: vector(LAYER.qkvBias),
      oBias: vector(LAYER.oBias),
      gateUpBias: vector(LAYER.gateUpBias),
      downBias: vector(LAYER.downBias),
    },
  );
  return { layer, down: packed(t, LAYER.downT, bits, h, ffn) };
}

/**
 * A layer's FFN on `neurons` for native steps: the neurons, and their columns of down, made once
 * per request. int8 cuts them from the layer's own packed down; int4, whose blocks of 32 columns
 * share a scale, from an int8 copy of down packed the same way (`int8Down`, made on first use).
 */
export function nativeFfn(kernels: NativeKernels, layer: NativeDecoderLayer, neurons: readonly number[], int8Down: () => PackedWeight): NativeFfn {
  const ids = Int32Array.from(neurons);
  return { neurons: ids, down: kernels.gatherColumns(layer.down.bits === 8 ? layer.down : int8Down(), ids) };
}

/** An int8 down projection's feeds (B [ffn, hidden], a neuron a row) packed for the kernels. */
export function packedDown(kernels: NativeKernels, feeds: Feeds, hidden: number, ffn: number): PackedWeight {
  return kernels.packInt8(feeds[LAYER.downT]!.data as Int8Array, feeds[scaleOf(LAYER.downT)]!.data as Float32Array, hidden, ffn);
}
