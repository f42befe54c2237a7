/**
 * The model loop: prefill the prompt layer by layer (consulting the sparsity policy between
 * layers), then decode token by token with the KV cache, streaming text as it becomes printable.
 */
import type { LlamaDecoder, FfnWeights } from '../models/llama.js';
import { KvCache } from '../models/kv-cache.js';
import type { SparsityPolicy } from '../sparsity/policy.js';
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
  stats: GenerationStats;
  work: LayerWork;
}

function gatherRows(data: Float32Array, rows: readonly number[], width: number): Float32Array {
  const out = new Float32Array(rows.length * width);
  rows.forEach((r, i) => out.set(data.subarray(r * width, (r + 1) * width), i * width));
  return out;
}

/** Runs every layer over the prompt; returns the last position's hidden state. */
async function prefill(input: LoopInput, cache: KvCache, tokensPerLayer: number[]): Promise<Float32Array> {
  const { decoder, policy } = input;
  const width = decoder.config.hiddenSize;
  let hidden = decoder.embed(input.promptIds);
  hidden.set(input.imageFeatures, input.imageStart * width);
  let positions = input.promptIds.map((_, i) => i);
  for (let layer = 0; layer < decoder.config.numHiddenLayers; layer++) {
    const keep = policy.selectTokens(layer);
    if (keep !== null) {
      hidden = gatherRows(hidden, keep, width);
      positions = keep.map((i) => positions[i]!);
      // Earlier layers cached every prompt token, so their cache index is the prompt position.
      if (policy.pruneEarlyKv) for (let earlier = 0; earlier < layer; earlier++) cache.keep(earlier, positions);
    }
    tokensPerLayer.push(positions.length);
    const result = await decoder.runLayer(layer, hidden, positions, cache, policy.prefillExtras(layer));
    if (result.ffnActivations) policy.afterFfn(layer, result.ffnActivations, positions.length);
    if (result.lastAttention) policy.afterAttention(layer, result.lastAttention, cache.values(layer));
    hidden = result.hidden;
  }
  return hidden.slice((positions.length - 1) * width);
}

export async function generateTokens(input: LoopInput): Promise<LoopOutput> {
  const { decoder, policy } = input;
  const c = decoder.config;
  const cache = new KvCache(c.numHiddenLayers, c.numKeyValueHeads, c.headDim);
  policy.begin({
    numLayers: c.numHiddenLayers,
    promptLength: input.promptIds.length,
    imageStart: input.imageStart,
    imageTokens: input.imageTokens,
    intermediateSize: c.intermediateSize,
    numAttentionHeads: c.numAttentionHeads,
    numKeyValueHeads: c.numKeyValueHeads,
    headDim: c.headDim,
  });
  const sampler = new TokenSampler(input.sampling);

  const t0 = performance.now();
  const prefillTokens: number[] = [];
  const last = await prefill(input, cache, prefillTokens);
  let token = sampler.next(await decoder.logits(last, 1));
  const t1 = performance.now();

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
  let position = input.promptIds.length;
  for (;;) {
    tokens.push(token);
    if (input.eosTokenIds.has(token)) break;
    const piece = stream.push(token);
    if (piece) input.onText?.(piece, token);
    if (stream.stopped || tokens.length >= input.maxNewTokens) break;

    let hidden = decoder.embed([token]);
    const positions = [position];
    for (let layer = 0; layer < c.numHiddenLayers; layer++) {
      hidden = (await decoder.runLayer(layer, hidden, positions, cache, {}, ffns[layer])).hidden;
    }
    position++;
    token = sampler.next(await decoder.logits(hidden, 1));
  }
  const t2 = performance.now();
  const rest = stream.finish();
  if (rest) input.onText?.(rest, token);
  return {
    text: stream.text,
    tokens,
    work: { prefillTokens, cachedTokens, ffnWidths },
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
