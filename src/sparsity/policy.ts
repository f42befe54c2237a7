/**
 * The contract between the generation loop and a sparsity policy. The loop consults a policy at
 * these points only; dense inference is the policy that does nothing, so dense and sparse runs
 * share every line of the loop.
 */
import type { LayerExtras } from '../models/llama.js';

/** What a policy learns about a request before prefill. */
export interface PrefillContext {
  numLayers: number;
  /** Prompt length in tokens, image tokens included. */
  promptLength: number;
  /** Position of the first image token and the number of image tokens (one contiguous span). */
  imageStart: number;
  imageTokens: number;
  /** FFN width of every decoder layer. */
  intermediateSize: number;
  /** Attention layout, to split cached values into heads (the engine always provides it). */
  numAttentionHeads?: number;
  numKeyValueHeads?: number;
  headDim?: number;
}

export interface SparsityReport {
  policy: string;
  /** Kept image tokens as indices into the image-token grid (row-major, ascending). */
  keptImageTokens: number[];
  imageTokens: number;
  /** layer -> number of core neurons used while decoding (only layers that run sparse). */
  coreNeurons: Record<number, number>;
  /** layer -> the core-neuron indices (ascending), when the policy was asked to report them. */
  coreNeuronIndices?: Record<number, number[]>;
}

export interface SparsityPolicy {
  readonly name: string;
  /** When tokens are dropped, also drop them from the KV caches of the layers before. */
  readonly pruneEarlyKv: boolean;
  begin(context: PrefillContext): void;
  /** What prefill must additionally return from `layer` for this policy. */
  prefillExtras(layer: number): LayerExtras;
  /** FFN activations of the tokens `layer` processed, [tokens, intermediate]. */
  afterFfn(layer: number, activations: Float32Array, tokens: number): void;
  /** Last prompt token's attention over the cached tokens [heads, tokens] and the values [kvHeads, tokens, headDim]. */
  afterAttention(layer: number, lastAttention: Float32Array, values: Float32Array): void;
  /** Before `layer` runs in prefill: which of the current tokens to keep (ascending), or null for all. */
  selectTokens(layer: number): number[] | null;
  /** After prefill: core-neuron indices `layer` decodes with (ascending), or null for the dense FFN. */
  decodeNeurons(layer: number): number[] | null;
  report(): SparsityReport;
}

/** Dense inference: no token is dropped and every FFN runs whole. */
export class DensePolicy implements SparsityPolicy {
  readonly name = 'dense';
  readonly pruneEarlyKv = false;
  private imageTokens = 0;

  begin(context: PrefillContext): void {
    this.imageTokens = context.imageTokens;
  }
  prefillExtras(): LayerExtras {
    return {};
  }
  afterFfn(): void {}
  afterAttention(): void {}
  selectTokens(): number[] | null {
    return null;
  }
  decodeNeurons(): number[] | null {
    return null;
  }
  report(): SparsityReport {
    return { policy: this.name, keptImageTokens: Array.from({ length: this.imageTokens }, (_, i) => i), imageTokens: this.imageTokens, coreNeurons: {} };
  }
}
