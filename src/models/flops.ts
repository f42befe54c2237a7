/**
 * Estimated FLOPs (2 x multiply-adds of every matrix product, attention scores and values
 * included; norms and activations ignored) of the vision tower, the prefill and one decode step.
 */
import type { LlavaConfig, TextConfig } from '../io/model-config.js';
import { imageTokenCount } from './llava.js';
import { visionTokenCount } from './vision-tower.js';

/** Vision tower (patch embedding and the layers LLaVA runs) plus the projector. */
export function visionFlops(c: LlavaConfig): number {
  const v = c.vision;
  const tokens = visionTokenCount(v);
  const patches = Math.floor(v.imageSize / v.patchSize) ** 2;
  const layers = Math.max(...c.visionFeatureLayers);
  const perLayer = tokens * (4 * v.hiddenSize * v.hiddenSize + 2 * v.hiddenSize * v.intermediateSize) + 2 * tokens * tokens * v.hiddenSize;
  const embed = patches * v.hiddenSize * v.numChannels * v.patchSize * v.patchSize;
  const imageTokens = imageTokenCount(c);
  const projector = imageTokens * (v.hiddenSize * c.visionFeatureLayers.length * c.text.hiddenSize + c.text.hiddenSize * c.text.hiddenSize);
  return 2 * (embed + layers * perLayer + projector);
}

/**
 * One decoder layer processing `tokens` new tokens after `past` cached ones (causal attention),
 * with an FFN of `ffnWidth` neurons.
 */
export function decoderLayerFlops(t: TextConfig, tokens: number, past: number, ffnWidth = t.intermediateSize): number {
  const q = t.numAttentionHeads * t.headDim;
  const kv = t.numKeyValueHeads * t.headDim;
  const projections = tokens * (t.hiddenSize * (2 * q + 2 * kv) + 3 * t.hiddenSize * ffnWidth);
  // Query i (0-based) attends to past + i + 1 keys; scores and weighted values each cost q MACs per key.
  const keys = tokens * past + (tokens * (tokens + 1)) / 2;
  return 2 * (projections + 2 * keys * q);
}

export function lmHeadFlops(t: TextConfig, rows = 1): number {
  return 2 * rows * t.hiddenSize * t.vocabSize;
}

/** Prefill where layer l processes tokensPerLayer[l] tokens (all of them when nothing is pruned). */
export function prefillFlops(t: TextConfig, tokensPerLayer: readonly number[]): number {
  return tokensPerLayer.reduce((sum, n) => sum + decoderLayerFlops(t, n, 0), 0) + lmHeadFlops(t);
}

/** One decode step with layer l holding cachedPerLayer[l] tokens and an FFN of ffnWidths[l] neurons. */
export function decodeStepFlops(t: TextConfig, cachedPerLayer: readonly number[], ffnWidths?: readonly number[]): number {
  return cachedPerLayer.reduce((sum, past, l) => sum + decoderLayerFlops(t, 1, past, ffnWidths?.[l] ?? t.intermediateSize), 0) + lmHeadFlops(t);
}

/**
 * Bytes of weights one decode step reads (embedding row excluded, LM head included), at
 * `bytesPerWeight` (4 for fp32, 1 for int8: its per-channel scales are a rounding error).
 */
export function decodeWeightBytes(t: TextConfig, ffnWidths?: readonly number[], bytesPerWeight = 4): number {
  const q = t.numAttentionHeads * t.headDim;
  const kv = t.numKeyValueHeads * t.headDim;
  let params = t.hiddenSize * t.vocabSize + t.hiddenSize;
  for (let l = 0; l < t.numHiddenLayers; l++) {
    params += t.hiddenSize * (2 * q + 2 * kv) + 3 * t.hiddenSize * (ffnWidths?.[l] ?? t.intermediateSize) + 2 * t.hiddenSize;
  }
  return bytesPerWeight * params;
}
