/**
 * The contract between the generation loop and a sparsity policy: everything a policy sees and
 * returns is defined here, so a new policy needs this file alone (and, for token selection, the
 * shared base class in token-selection.ts). The loop consults a policy at these points only;
 * dense inference is the policy that does nothing, so dense and sparse runs share every line of
 * the loop.
 *
 * Order within one request: begin(), mergeImageFeatures() if the policy has it, then for each decoder layer of the prefill selectTokens(l),
 * prefillTaps(l), and after the layer ran afterAttention / afterFfn for the taps it asked for;
 * then decodeNeurons(l) for every layer, once; report() at the end. The decoder runs groups of
 * consecutive layers in one session: it asks selectTokens and prefillTaps of a group's layers
 * before the first of them runs (selectTokens only of layers selectsTokensAt admits, inside a
 * group), then hands each layer's taps over in order.
 */

/** What a policy learns about a request and the model before prefill. */
export interface PrefillContext {
  numLayers: number;
  /** Prompt length in tokens, image tokens included. */
  promptLength: number;
  /** Position of the first image token and the number of image tokens (one contiguous span). */
  imageStart: number;
  imageTokens: number;
  /** FFN width of every decoder layer. */
  intermediateSize: number;
  /** Attention layout: query heads, key/value heads (grouped-query attention) and head size. */
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
}

/** What a policy asks a prefill layer to return beside its output. */
export interface PrefillTaps {
  ffnActivations?: boolean;
  lastAttention?: boolean;
}

/** A layer's FFN activations a(x) = act(gate(h)) * up(h) (or act(fc1(h))), one row per token. */
export interface FfnTap {
  /** [tokens, width], row-major. */
  activations: Float32Array;
  /** Tokens the layer processed (rows). */
  tokens: number;
  /** FFN width (columns). */
  width: number;
}

/** A layer's attention from the last prompt token, with the values it attended to. */
export interface AttentionTap {
  /** Softmax attention of the last token over the layer's `tokens` keys, [heads, tokens]. */
  probs: Float32Array;
  /** The layer's cached values, [kvHeads, tokens, headDim]. */
  values: Float32Array;
  /** Keys the layer attended to: every token it holds, in prompt order. */
  tokens: number;
  /** Query heads; query head h reads key/value head floor(h / (heads / kvHeads)). */
  heads: number;
  kvHeads: number;
  headDim: number;
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
  prefillTaps(layer: number): PrefillTaps;
  afterFfn(layer: number, tap: FfnTap): void;
  afterAttention(layer: number, tap: AttentionTap): void;
  /**
   * Before prefill, for policies that merge image tokens instead of only choosing among them
   * (pool): rewrites the prompt's image-token rows ([imageTokens, hiddenSize], grid order) in place.
   */
  mergeImageFeatures?(features: Float32Array, hiddenSize: number): void;
  /** Before `layer` runs in prefill: which of the current tokens to keep (ascending), or null for all. */
  selectTokens(layer: number): number[] | null;
  /** Whether selectTokens(layer) may keep fewer than all tokens; known after begin(), before any layer runs. */
  selectsTokensAt(layer: number): boolean;
  /** After prefill: core-neuron indices `layer` decodes with (ascending), or null for the dense FFN. */
  decodeNeurons(layer: number): number[] | null;
  /** The image-token scores behind the last selection (grid order), for pictures; null without. */
  imageTokenScores?(): ArrayLike<number> | null;
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
  prefillTaps(): PrefillTaps {
    return {};
  }
  afterFfn(): void {}
  afterAttention(): void {}
  selectTokens(): number[] | null {
    return null;
  }
  selectsTokensAt(): boolean {
    return false;
  }
  decodeNeurons(): number[] | null {
    return null;
  }
  report(): SparsityReport {
    return { policy: this.name, keptImageTokens: Array.from({ length: this.imageTokens }, (_, i) => i), imageTokens: this.imageTokens, coreNeurons: {} };
  }
}
