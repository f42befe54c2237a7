/**
 * The project's own decode kernels (native/kernels.cc, a Node-API module that `npm ci` builds with
 * node-gyp and the machine's compiler): int8 and int4 matrix-vector products over weights packed
 * for them, for every row or a subset of rows, on a persistent thread pool. Where the module
 * could not be built, `nativeKernels()` says why and the engine keeps to ONNX Runtime.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

export type KernelPath = 'avx512-vnni' | 'avx2' | 'portable';

interface Addon {
  packInt8(values: Int8Array, rows: number, cols: number): Uint8Array;
  gatherColumns(packed: Uint8Array, rows: number, cols: number, columns: Int32Array): Uint8Array;
  gemv(bits: 8 | 4, out: Float32Array, packed: Uint8Array, scales: Float32Array, x: Float32Array, cols: number, rows: Int32Array | null): void;
  sumBytes(data: Uint8Array): number;
  setThreads(threads: number): void;
  info(): { path: KernelPath; threads: number };
  forcePath(path: KernelPath): void;
  createLayer(config: LayerShape, weights: NativeLayerWeights): NativeLayer;
  layerStep(layer: NativeLayer, h: Float32Array, kCache: Float32Array, vCache: Float32Array, capacity: number, length: number, cos: Float32Array, sin: Float32Array, neurons: Int32Array | null, compactDown: PackedWeight | null): void;
  attend(q: Float32Array, kCache: Float32Array, vCache: Float32Array, heads: number, kvHeads: number, capacity: number, keys: number, context: Float32Array): void;
}

/** A decoder layer's shape, as native/layer.cc takes it. */
export interface LayerShape {
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  ffn: number;
  eps: number;
}

/** A decoder layer's weights for native/layer.cc: norms, the four products, optional biases. */
export interface NativeLayerWeights {
  inputNorm: Float32Array;
  postNorm: Float32Array;
  /** [q; k; v] rows, [heads + 2 kvHeads] x headDim by hidden. */
  qkv: PackedWeight;
  o: PackedWeight;
  /** [gate; up] rows, 2 ffn by hidden. */
  gateUp: PackedWeight;
  /** [hidden, ffn]. */
  down: PackedWeight;
  qkvBias: Float32Array | null;
  oBias: Float32Array | null;
  gateUpBias: Float32Array | null;
  downBias: Float32Array | null;
}

/** A layer made by createLayer: its weights are held by the module until it is garbage. */
export type NativeLayer = { readonly __nativeLayer: unique symbol };

/** A weight [rows, cols] as the kernels read it. */
export interface PackedWeight {
  bits: 8 | 4;
  rows: number;
  cols: number;
  /** int8: [rows, cols padded to 64] bytes of w + 64; int4: MatMulNBits' [rows, blocks, 16]. */
  data: Uint8Array;
  /** int8: one per row; int4: one per block of 32 of each row. */
  scales: Float32Array;
}

export class NativeKernels {
  constructor(private readonly addon: Addon) {}

  /** The instruction-set path in use and the pool's threads (this one included). */
  info(): { path: KernelPath; threads: number } {
    return this.addon.info();
  }

  setThreads(threads: number): void {
    this.addon.setThreads(threads);
  }

  /** Runs a slower path this CPU also has (to compare paths). */
  forcePath(path: KernelPath): void {
    this.addon.forcePath(path);
  }

  /**
   * Packs the engine's int8 weight, B = W^T [cols, rows] with one scale per row of W
   * (models/quantize.ts), as rows of W.
   */
  packInt8(values: Int8Array, scales: Float32Array, rows: number, cols: number): PackedWeight {
    return { bits: 8, rows, cols, data: this.addon.packInt8(values, rows, cols), scales };
  }

  /** The engine's int4 weight (MatMulNBits' [rows, blocks, 16] with a scale per block), read as it is: no copy. */
  int4(values: Uint8Array, scales: Float32Array, rows: number, cols: number): PackedWeight {
    return { bits: 4, rows, cols, data: values, scales };
  }

  createLayer(shape: LayerShape, weights: NativeLayerWeights): NativeLayer {
    return this.addon.createLayer(shape, weights);
  }

  /**
   * One new token through `layer`: h [hidden] is updated in place, the token's key and value are
   * written at slot `length` of the caches ([kvHeads, capacity, headDim]); cos/sin are its RoPE
   * line. With `neurons`, the FFN runs on those only, `compactDown` their columns of down.
   */
  layerStep(layer: NativeLayer, h: Float32Array, kCache: Float32Array, vCache: Float32Array, capacity: number, length: number, cos: Float32Array, sin: Float32Array, neurons: Int32Array | null = null, compactDown: PackedWeight | null = null): void {
    this.addon.layerStep(layer, h, kCache, vCache, capacity, length, cos, sin, neurons, compactDown);
  }

  /**
   * The attention layerStep runs, alone: context [heads, headDim] = softmax(q K^T / sqrt(headDim)) V,
   * each query head over the first `keys` slots of its KV head in the caches [kvHeads, capacity, headDim].
   */
  attend(q: Float32Array, kCache: Float32Array, vCache: Float32Array, heads: number, kvHeads: number, capacity: number, keys: number, context: Float32Array): void {
    this.addon.attend(q, kCache, vCache, heads, kvHeads, capacity, keys, context);
  }

  /** An int8 weight reduced to `columns` (in that order), packed the same way: no re-quantization. */
  gatherColumns(w: PackedWeight, columns: Int32Array): PackedWeight {
    if (w.bits !== 8) throw new Error('gatherColumns reads int8 weights');
    return { bits: 8, rows: w.rows, cols: columns.length, data: this.addon.gatherColumns(w.data, w.rows, w.cols, columns), scales: w.scales };
  }

  /**
   * The sum of `data`'s bytes, read on the pool as the products read their weights, with no
   * arithmetic to speak of: timed over arrays past the caches, the read bandwidth the products
   * are held to (bench:kernels).
   */
  sumBytes(data: Uint8Array): number {
    return this.addon.sumBytes(data);
  }

  /** out[i] = W[rows ? rows[i] : i] . x, the activations quantized in blocks of 32. */
  gemv(w: PackedWeight, x: Float32Array, out: Float32Array, rows: Int32Array | null = null): void {
    this.addon.gemv(w.bits, out, w.data, w.scales, x, w.cols, rows);
  }
}

let loaded: { kernels: NativeKernels | null; reason: string } | undefined;

/** The kernels, or null with the reason they are not available. */
export function nativeKernels(): { kernels: NativeKernels | null; reason: string } {
  if (loaded === undefined) {
    // dist/src/native/ -> the package root's build/Release/
    const file = fileURLToPath(new URL('../../../build/Release/corematching_kernels.node', import.meta.url));
    try {
      loaded = { kernels: new NativeKernels(createRequire(import.meta.url)(file) as Addon), reason: '' };
    } catch (err) {
      loaded = { kernels: null, reason: `the native kernel module was not built (${(err as Error).message.split('\n')[0]}); run npm rebuild corematching with a C++ compiler` };
    }
  }
  return loaded;
}
