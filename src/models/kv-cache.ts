/**
 * Per-layer key/value cache, preallocated for the context a request may reach and written in
 * place (llama2.c's RunState): a decode step appends one token's keys and values, it never copies
 * the cache. Each layer holds [kvHeads, capacity, headDim]; the first `length` slots of every head
 * are filled. Layers may hold different lengths: token pruning leaves later layers with fewer
 * cached tokens than early ones. Buffers are kept across requests and grow only when needed.
 */
import type ort from 'onnxruntime-node';
import { CorematchingError } from '../io/errors.js';
import { tensor } from '../graph/session.js';

interface LayerKv {
  k: Float32Array;
  v: Float32Array;
  length: number;
  /** ORT views of k and v at the current capacity, made once per reset. */
  tensors: { k: ort.Tensor; v: ort.Tensor } | undefined;
}

export class KvCache {
  private readonly layers: LayerKv[];
  private capacityTokens = 0;

  constructor(
    numLayers: number,
    readonly kvHeads: number,
    readonly headDim: number,
  ) {
    this.layers = Array.from({ length: numLayers }, () => ({ k: new Float32Array(0), v: new Float32Array(0), length: 0, tensors: undefined }));
  }

  /** Tokens each layer can hold until the next reset. */
  get capacity(): number {
    return this.capacityTokens;
  }

  /** Empties every layer and makes room for `capacity` tokens per layer. */
  reset(capacity: number): void {
    const size = this.kvHeads * capacity * this.headDim;
    for (const layer of this.layers) {
      if (layer.k.length < size) {
        layer.k = new Float32Array(size);
        layer.v = new Float32Array(size);
      }
      layer.length = 0;
      layer.tensors = undefined;
    }
    this.capacityTokens = capacity;
  }

  /** Makes room for `capacity` tokens per layer, keeping what is cached (a conversation's next turn). */
  reserve(capacity: number): void {
    if (capacity <= this.capacityTokens) return;
    const d = this.headDim;
    for (const layer of this.layers) {
      const [k, v] = [new Float32Array(this.kvHeads * capacity * d), new Float32Array(this.kvHeads * capacity * d)];
      for (let h = 0; h < this.kvHeads; h++) {
        const from = h * this.capacityTokens * d;
        k.set(layer.k.subarray(from, from + layer.length * d), h * capacity * d);
        v.set(layer.v.subarray(from, from + layer.length * d), h * capacity * d);
      }
      [layer.k, layer.v, layer.tensors] = [k, v, undefined];
    }
    this.capacityTokens = capacity;
  }

  /** Forgets the last `tokens` cached tokens of every layer (the end of a conversation that changed). */
  dropLast(tokens: number): void {
    for (const [i, layer] of this.layers.entries()) {
      if (!(Number.isInteger(tokens) && tokens >= 0 && tokens <= layer.length)) throw new CorematchingError(`layer ${i}: cannot drop ${tokens} of ${layer.length} cached tokens`);
    }
    for (const layer of this.layers) layer.length -= tokens;
  }

  length(layer: number): number {
    return this.layers[layer]!.length;
  }

  /**
   * The layer's whole buffers as [kvHeads, capacity, headDim] tensors: slots at `length` and
   * beyond hold stale values, which the attention mask hides.
   */
  buffers(layer: number): { k: ort.Tensor; v: ort.Tensor } {
    const kv = this.layers[layer]!;
    if (kv.tensors === undefined) {
      const size = this.kvHeads * this.capacityTokens * this.headDim;
      const dims = [this.kvHeads, this.capacityTokens, this.headDim];
      kv.tensors = { k: tensor(kv.k.subarray(0, size), dims), v: tensor(kv.v.subarray(0, size), dims) };
    }
    return kv.tensors;
  }

  /** The layer's whole buffers, [kvHeads, capacity, headDim] each, for kernels that write a token in place (then `appended`). */
  rawBuffers(layer: number): { k: Float32Array; v: Float32Array } {
    const { k, v } = this.layers[layer]!;
    return { k, v };
  }

  /** Counts `tokens` tokens a kernel wrote in place after the cached ones. */
  appended(layer: number, tokens: number): void {
    const kv = this.layers[layer]!;
    if (kv.length + tokens > this.capacityTokens) {
      throw new CorematchingError(`layer ${layer}: the KV cache holds ${this.capacityTokens} tokens; ${kv.length} cached + ${tokens} new do not fit`);
    }
    kv.length += tokens;
  }

  /** Zero-slot [kvHeads, 0, headDim] tensors: what a layer attends to before anything is cached. */
  emptyBuffers(): { k: ort.Tensor; v: ort.Tensor } {
    const empty = tensor(new Float32Array(0), [this.kvHeads, 0, this.headDim]);
    return { k: empty, v: empty };
  }

  /** Writes `tokens` new tokens' keys and values, each [kvHeads, tokens, headDim], after the cached ones. */
  append(layer: number, k: Float32Array, v: Float32Array, tokens: number): void {
    const kv = this.layers[layer]!;
    const d = this.headDim;
    if (k.length !== this.kvHeads * tokens * d || v.length !== k.length) {
      throw new CorematchingError(`layer ${layer}: ${k.length} keys and ${v.length} values are not ${this.kvHeads} heads x ${tokens} tokens x ${d}`);
    }
    if (kv.length + tokens > this.capacityTokens) {
      throw new CorematchingError(`layer ${layer}: the KV cache holds ${this.capacityTokens} tokens; ${kv.length} cached + ${tokens} new do not fit`);
    }
    for (let h = 0; h < this.kvHeads; h++) {
      const to = (h * this.capacityTokens + kv.length) * d;
      kv.k.set(k.subarray(h * tokens * d, (h + 1) * tokens * d), to);
      kv.v.set(v.subarray(h * tokens * d, (h + 1) * tokens * d), to);
    }
    kv.length += tokens;
  }

  /** A copy of a layer's cached values, [kvHeads, length, headDim]. */
  values(layer: number): Float32Array {
    const { v, length } = this.layers[layer]!;
    const d = this.headDim;
    const out = new Float32Array(this.kvHeads * length * d);
    for (let h = 0; h < this.kvHeads; h++) out.set(v.subarray(h * this.capacityTokens * d, (h * this.capacityTokens + length) * d), h * length * d);
    return out;
  }

  /** Keeps only the cached tokens at `indices` (ascending, distinct) of one layer, compacting in place. */
  keep(layer: number, indices: readonly number[]): void {
    const kv = this.layers[layer]!;
    const d = this.headDim;
    indices.forEach((t, j) => {
      if (!(Number.isInteger(t) && t >= j && t < kv.length && (j === 0 || t > indices[j - 1]!))) {
        throw new CorematchingError(`layer ${layer}: kept cache indices must ascend within 0 .. ${kv.length - 1}, got ${t} at ${j}`);
      }
    });
    // Ascending indices never move a token forward, so copying front to back overwrites nothing unread.
    for (let h = 0; h < this.kvHeads; h++) {
      const base = h * this.capacityTokens * d;
      indices.forEach((t, j) => {
        if (t === j) return;
        kv.k.copyWithin(base + j * d, base + t * d, base + (t + 1) * d);
        kv.v.copyWithin(base + j * d, base + t * d, base + (t + 1) * d);
      });
    }
    kv.length = indices.length;
  }
}
