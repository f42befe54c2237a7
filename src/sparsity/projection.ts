/**
 * Projection-guided token pruning (design doc section 5, the CoreMatching paper's criterion): at
 * layer L - 1, with M the last prompt token, alpha_h its attention row for query head h and V_i
 * the value vector of token i in h's key/value head,
 *
 *   O_M = sum_i alpha_{M,i} V_i,   s_i = sum_h alpha_{M,i} * ||V_i|| * cos(V_i, O_M)
 *                                      = sum_h alpha_{M,i} * (V_i . O_M) / ||O_M||
 *
 * (a head with O_M = 0 contributes nothing). Image tokens are kept by `budget` as in section 3.4.
 * With grouped-query attention, query head h reads key/value head floor(h / (heads / kvHeads)).
 */
import { CorematchingError } from '../io/errors.js';
import type { AttentionTap, PrefillTaps } from './policy.js';
import { checkAttentionTap, TokenSelectionPolicy } from './token-selection.js';

export class ProjectionPolicy extends TokenSelectionPolicy {
  readonly name: string = 'projection';

  override prefillTaps(layer: number): PrefillTaps {
    return layer === this.scoringLayer ? { lastAttention: true } : {};
  }

  override afterAttention(layer: number, tap: AttentionTap): void {
    if (layer !== this.scoringLayer) return;
    checkAttentionTap(this.name, tap);
    const { imageStart, imageTokens, promptLength } = this.ctx;
    const { probs, values, heads, kvHeads, headDim, tokens: cached } = tap;
    if (cached !== promptLength) throw new CorematchingError(`policy ${this.name}: layer ${layer} attended to ${cached} tokens, expected the whole prompt of ${promptLength}`);
    const group = heads / kvHeads;
    const scores = new Float64Array(imageTokens);
    const out = new Float64Array(headDim);
    for (let h = 0; h < heads; h++) {
      const alpha = probs.subarray(h * cached, (h + 1) * cached);
      const base = Math.floor(h / group) * cached * headDim;
      out.fill(0);
      for (let t = 0; t < cached; t++) {
        const a = alpha[t]!;
        const v = base + t * headDim;
        for (let d = 0; d < headDim; d++) out[d]! += a * values[v + d]!;
      }
      let norm = 0;
      for (let d = 0; d < headDim; d++) norm += out[d]! * out[d]!;
      norm = Math.sqrt(norm);
      if (norm === 0) continue;
      for (let i = 0; i < imageTokens; i++) {
        const t = imageStart + i;
        const v = base + t * headDim;
        let dot = 0;
        for (let d = 0; d < headDim; d++) dot += values[v + d]! * out[d]!;
        scores[i]! += (alpha[t]! * dot) / norm;
      }
    }
    this.choose(scores);
  }
}
