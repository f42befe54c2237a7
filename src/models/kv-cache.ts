/**
 * Per-layer key/value cache, [kvHeads, length, headDim] per layer. Layers may hold different
 * lengths: token pruning leaves later layers with fewer cached tokens than early ones.
 */
import type ort from 'onnxruntime-node';
import { tensor } from '../graph/session.js';

interface LayerKv {
  k: Float32Array;
  v: Float32Array;
  length: number;
}

export class KvCache {
  private readonly layers: LayerKv[];

  constructor(numLayers: number, private readonly kvHeads: number, private readonly headDim: number) {
    this.layers = Array.from({ length: numLayers }, () => ({ k: new Float32Array(0), v: new Float32Array(0), length: 0 }));
  }

  length(layer: number): number {
    return this.layers[layer]!.length;
  }

  past(layer: number): { k: ort.Tensor; v: ort.Tensor } {
    const { k, v, length } = this.layers[layer]!;
    const dims = [this.kvHeads, length, this.headDim];
    return { k: tensor(k, dims), v: tensor(v, dims) };
  }

  /** A layer's cached values, [kvHeads, length, headDim]. */
  values(layer: number): Float32Array {
    return this.layers[layer]!.v;
  }

  /** Replaces a layer's cache with the graph's present K/V (past + new tokens). */
  store(layer: number, k: Float32Array, v: Float32Array): void {
    this.layers[layer] = { k, v, length: k.length / (this.kvHeads * this.headDim) };
  }

  /** Keeps only the cached tokens at `indices` (ascending) of one layer. */
  keep(layer: number, indices: readonly number[]): void {
    const { k, v, length } = this.layers[layer]!;
    const d = this.headDim;
    const nk = new Float32Array(this.kvHeads * indices.length * d);
    const nv = new Float32Array(nk.length);
    for (let h = 0; h < this.kvHeads; h++) {
      indices.forEach((t, j) => {
        const from = (h * length + t) * d;
        const to = (h * indices.length + j) * d;
        nk.set(k.subarray(from, from + d), to);
        nv.set(v.subarray(from, from + d), to);
      });
    }
    this.layers[layer] = { k: nk, v: nv, length: indices.length };
  }
}
