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
import type { LayerExtras } from '../models/llama.js';
import { CorematchingError } from '../io/errors.js';
import type { PrefillContext } from './policy.js';
import type { PolicyOptions } from './options.js';
import { TokenSelectionPolicy } from './fastv.js';

/** How the cached values split into heads; read from the prefill context when it carries them. */
export interface AttentionGeometry {
  numKeyValueHeads: number;
  headDim: number;
}

export class ProjectionPolicy extends TokenSelectionPolicy {
  readonly name: string = 'projection';
  private activeGeometry: AttentionGeometry | undefined;

  constructor(options: Partial<PolicyOptions> = {}, private readonly geometry?: AttentionGeometry) {
    super(options);
  }

  override begin(context: PrefillContext): void {
    super.begin(context);
    const c = context as PrefillContext & Partial<AttentionGeometry>;
    this.activeGeometry =
      c.numKeyValueHeads !== undefined && c.headDim !== undefined ? { numKeyValueHeads: c.numKeyValueHeads, headDim: c.headDim } : this.geometry;
  }

  override prefillExtras(layer: number): LayerExtras {
    return layer === this.scoringLayer ? { lastAttention: true } : {};
  }

  override afterAttention(layer: number, lastAttention: Float32Array, values: Float32Array): void {
    if (layer !== this.scoringLayer) return;
    const g = this.activeGeometry;
    if (g === undefined) {
      throw new CorematchingError('policy projection needs the number of key/value heads and the head size (prefill context or constructor)');
    }
    const { imageStart, imageTokens, promptLength: cached } = this.ctx;
    const { numKeyValueHeads: kvHeads, headDim } = g;
    const heads = lastAttention.length / cached;
    if (!Number.isInteger(heads) || heads % kvHeads !== 0 || values.length !== kvHeads * cached * headDim) {
      throw new CorematchingError(
        `policy projection: attention [${lastAttention.length}] and values [${values.length}] do not match ${cached} tokens, ${kvHeads} key/value heads of size ${headDim}`,
      );
    }
    const group = heads / kvHeads;
    const scores = new Float64Array(imageTokens);
    const out = new Float64Array(headDim);
    for (let h = 0; h < heads; h++) {
      const alpha = lastAttention.subarray(h * cached, (h + 1) * cached);
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
