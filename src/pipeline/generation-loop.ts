/**
 * The model loop: prefill the prompt through the decoder with the sparsity policy consulted
 * around each layer, gather the policy's core-neuron FFNs once, then decode token by token with
 * the KV cache, streaming text as it becomes printable.
 */
import type { KvCache } from '../models/kv-cache.js';
import type { FfnWeights, LlamaDecoder } from '../models/llama.js';
import type { SparsityPolicy } from '../sparsity/policy.js';
import { policyHooks } from './policy-hooks.js';
import { tokenLogprob, type TokenLogprob } from './logprobs.js';
import { TokenSampler, type SamplingOptions } from './sampling.js';
import { TextStream, type IncrementalDecoder } from './text-stream.js';

export interface Detokenizes {
  streamDecoder(): IncrementalDecoder;
}

export interface GenerationStats {
  promptTokenCount: number;
  newTokenCount: number;
  prefillMs: number;
  /** Gathering the core neurons' compact FFN weights, once, between prefill and decoding. */
  compactFfnMs: number;
  /** Decoding after the first token. */
  decodeMs: number;
  /** Decode speed after the first token: (new tokens - 1) / decode time. */
  decodeTokensPerSecond: number;
}

export interface LoopInput {
  decoder: LlamaDecoder;
  /** Emptied and sized here for the prompt and the new tokens, unless `reusedTokens` > 0. */
  cache: KvCache;
  /** Prompt tokens whose keys and values `cache` already holds (a conversation's earlier turns): only the rest is prefilled. */
  reusedTokens?: number;
  tokenizer: Detokenizes;
  promptIds: number[];
  imageStart: number;
  imageFeatures: Float32Array;
  imageTokens: number;
  policy: SparsityPolicy;
  maxNewTokens: number;
  sampling: SamplingOptions;
  eosTokenIds: Set<number>;
  stopStrings: string[];
  onText?: (text: string, tokenId: number) => void;
  /** With a count (0 .. 20), each new token's log-probability and that many alternatives. */
  logprobs?: number;
  /** Receives each new token's log-probabilities as soon as it is chosen (before its text). */
  onLogprob?: (entry: TokenLogprob) => void;
  signal?: AbortSignal;
}

/** What each layer processed, for FLOP accounting. */
export interface LayerWork {
  /** Tokens each layer processed in prefill. */
  prefillTokens: number[];
  /** Tokens each layer held in its KV cache when decoding began. */
  cachedTokens: number[];
  /** FFN neurons each layer used while decoding. */
  ffnWidths: number[];
}

export interface LoopOutput {
  text: string;
  tokens: number[];
  /** With `logprobs`, one entry per token of `tokens`. */
  logprobs?: TokenLogprob[];
  /** 'stop': an end-of-sequence token or a stop string; 'length': maxNewTokens reached. */
  finishReason: 'stop' | 'length';
  stats: GenerationStats;
  work: LayerWork;
}

export async function generateTokens(input: LoopInput): Promise<LoopOutput> {
  const { decoder, policy, cache } = input;
  const c = decoder.config;
  const reused = input.reusedTokens ?? 0;
  // The last new token is sampled but never run through the decoder.
  if (reused > 0) cache.reserve(input.promptIds.length + input.maxNewTokens - 1);
  else cache.reset(input.promptIds.length + input.maxNewTokens - 1);
  policy.begin({
    numLayers: c.numHiddenLayers,
    promptLength: input.promptIds.length - reused,
    imageStart: input.imageStart,
    imageTokens: input.imageTokens,
    intermediateSize: c.intermediateSize,
    numAttentionHeads: c.numAttentionHeads,
    numKeyValueHeads: c.numKeyValueHeads,
    headDim: c.headDim,
  });
  const sampler = new TokenSampler(input.sampling);
  const logprobs: TokenLogprob[] = [];
  const choose = (logits: Float32Array): number => {
    const chosen = sampler.next(logits);
    if (input.logprobs !== undefined) {
      const entry = tokenLogprob(logits, chosen, input.logprobs);
      logprobs.push(entry);
      input.onLogprob?.(entry);
    }
    return chosen;
  };

  const t0 = performance.now();
  const embedded = decoder.embed(input.promptIds.slice(reused));
  if (input.imageTokens > 0) {
    embedded.set(input.imageFeatures, (input.imageStart - reused) * c.hiddenSize);
    policy.mergeImageFeatures?.(embedded.subarray((input.imageStart - reused) * c.hiddenSize, (input.imageStart - reused + input.imageTokens) * c.hiddenSize), c.hiddenSize);
  }
  const positions = input.promptIds.slice(reused).map((_, i) => reused + i);
  const prefill = await decoder.forward(embedded, positions, cache, { hooks: policyHooks(policy, cache, c) });
  let token = choose(prefill.logits);
  const t1 = performance.now();

  input.signal?.throwIfAborted();
  const ffns: (FfnWeights | undefined)[] = [];
  const ffnWidths: number[] = [];
  const cachedTokens: number[] = [];
  for (let layer = 0; layer < c.numHiddenLayers; layer++) {
    const neurons = policy.decodeNeurons(layer);
    ffns.push(neurons === null ? undefined : decoder.compactFfn(layer, neurons));
    ffnWidths.push(neurons === null ? c.intermediateSize : neurons.length);
    cachedTokens.push(cache.length(layer));
  }
  const tDecode = performance.now();

  const tokens: number[] = [];
  const stream = new TextStream(input.tokenizer.streamDecoder(), input.stopStrings);
  let finishReason: 'stop' | 'length' = 'stop';
  for (let position = input.promptIds.length; ; position++) {
    tokens.push(token);
    if (input.eosTokenIds.has(token)) break;
    const piece = stream.push(token);
    if (piece) input.onText?.(piece, token);
    if (stream.stopped) break;
    if (tokens.length >= input.maxNewTokens) {
      finishReason = 'length';
      break;
    }
    input.signal?.throwIfAborted();
    token = choose((await decoder.step(token, position, cache, ffns)).logits);
  }
  const t2 = performance.now();
  const rest = stream.finish();
  if (rest) input.onText?.(rest, token);
  return {
    text: stream.text,
    tokens,
    ...(input.logprobs !== undefined ? { logprobs } : {}),
    finishReason,
    work: { prefillTokens: prefill.tokensPerLayer, cachedTokens, ffnWidths },
    stats: {
      promptTokenCount: input.promptIds.length,
      newTokenCount: tokens.length,
      prefillMs: t1 - t0,
      compactFfnMs: tDecode - t1,
      decodeMs: t2 - tDecode,
      decodeTokensPerSecond: tokens.length > 1 ? ((tokens.length - 1) * 1000) / (t2 - tDecode) : 0,
    },
  };
}
