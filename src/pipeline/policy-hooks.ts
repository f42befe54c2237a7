/**
 * Where a sparsity policy meets the decoder: the decoder's per-layer hooks, answered by the
 * policy's contract (selectTokens, prefillTaps, afterAttention, afterFfn). The decoder knows no
 * policy and the policy knows no decoder; this adapter is the only place that sees both.
 */
import type { KvCache } from '../models/kv-cache.js';
import type { LayerHooks, LayerTaps } from '../models/llama.js';
import type { TextConfig } from '../io/model-config.js';
import type { SparsityPolicy } from '../sparsity/policy.js';

export function policyHooks(policy: SparsityPolicy, cache: KvCache, c: TextConfig): LayerHooks {
  return {
    selectRows(layer, positions) {
      const keep = policy.selectTokens(layer);
      // Earlier layers cached every prompt token, so their cache index is the prompt position.
      if (keep !== null && policy.pruneEarlyKv) {
        const kept = keep.map((i) => positions[i]!);
        for (let earlier = 0; earlier < layer; earlier++) cache.keep(earlier, kept);
      }
      return keep;
    },
    selectsRowsAt: (layer) => policy.selectsTokensAt(layer),
    taps: (layer) => policy.prefillTaps(layer),
    afterLayer(layer, taps: LayerTaps, tokens) {
      if (taps.lastAttention) {
        const cached = cache.length(layer);
        policy.afterAttention(layer, {
          probs: taps.lastAttention,
          values: cache.values(layer),
          tokens: cached,
          heads: c.numAttentionHeads,
          kvHeads: c.numKeyValueHeads,
          headDim: c.headDim,
        });
      }
      if (taps.ffnActivations) policy.afterFfn(layer, { activations: taps.ffnActivations, tokens, width: c.intermediateSize });
    },
  };
}
