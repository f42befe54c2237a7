/**
 * FastV-style token pruning (design doc section 5): layers 0 .. L-1 see every token; at layer
 * L - 1 each image token is scored by the last prompt token's attention to it, averaged over the
 * query heads, and only the `budget` best image tokens (or those above the knee) go on to layer L.
 */
import { CorematchingError } from '../io/errors.js';
import type { AttentionTap, PrefillTaps } from './policy.js';
import { checkAttentionTap, TokenSelectionPolicy } from './token-selection.js';

export class FastVPolicy extends TokenSelectionPolicy {
  readonly name: string = 'fastv';

  override prefillTaps(layer: number): PrefillTaps {
    return layer === this.scoringLayer ? { lastAttention: true } : {};
  }

  override afterAttention(layer: number, tap: AttentionTap): void {
    if (layer !== this.scoringLayer) return;
    checkAttentionTap(this.name, tap);
    const { imageStart, imageTokens, promptLength } = this.ctx;
    const { probs, heads, tokens } = tap;
    if (tokens !== promptLength) throw new CorematchingError(`policy ${this.name}: layer ${layer} attended to ${tokens} tokens, expected the whole prompt of ${promptLength}`);
    const scores = new Float64Array(imageTokens);
    for (let h = 0; h < heads; h++) {
      const row = h * tokens + imageStart;
      for (let i = 0; i < imageTokens; i++) scores[i]! += probs[row + i]!;
    }
    for (let i = 0; i < imageTokens; i++) scores[i]! /= heads;
    this.choose(scores);
  }
}
