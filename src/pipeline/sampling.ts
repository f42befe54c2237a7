/**
 * Next-token choice from logits: greedy, or sampling with temperature, top-k and top-p applied in
 * that order (as transformers' logits warpers do), from a seeded generator so runs reproduce.
 */
import { CorematchingError } from '../io/errors.js';
import { mulberry32 } from '../util/seeded-random.js';

export interface SamplingOptions {
  /** Greedy when false or absent. */
  doSample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
}

/** Index of the largest logit; the first one on ties, like torch.argmax. */
export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

export function validateSampling(o: SamplingOptions): void {
  if (o.temperature !== undefined && !(o.temperature > 0)) throw new CorematchingError(`temperature must be > 0, got ${o.temperature}`);
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) throw new CorematchingError(`top-p must be in (0, 1], got ${o.topP}`);
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 0)) throw new CorematchingError(`top-k must be a non-negative integer, got ${o.topK}`);
}

export class TokenSampler {
  private readonly random: () => number;

  constructor(private readonly options: SamplingOptions = {}) {
    validateSampling(options);
    this.random = mulberry32(options.seed ?? 0);
  }

  next(logits: Float32Array): number {
    if (!this.options.doSample) return argmax(logits);
    const temperature = this.options.temperature ?? 1;
    // Candidates sorted by logit, descending; top-k then top-p shrink the list. Tokens whose
    // probability is below e^-40 of the best cannot matter, and skipping them keeps the sort short.
    const cutoff = logits[argmax(logits)]! - 40 * temperature;
    let order: number[] = [];
    for (let i = 0; i < logits.length; i++) if (logits[i]! >= cutoff) order.push(i);
    order.sort((a, b) => logits[b]! - logits[a]! || a - b);
    const topK = this.options.topK ?? 0;
    if (topK > 0) order = order.slice(0, topK);
    const max = logits[order[0]!]! / temperature;
    const weights = order.map((i) => Math.exp(logits[i]! / temperature - max));
    const total = weights.reduce((s, w) => s + w, 0);
    let probs = weights.map((w) => w / total);
    const topP = this.options.topP ?? 1;
    if (topP < 1) {
      let cumulative = 0;
      let keep = 0;
      while (keep < probs.length && cumulative < topP) cumulative += probs[keep++]!;
      order = order.slice(0, keep);
      const kept = probs.slice(0, keep);
      const sum = kept.reduce((s, p) => s + p, 0);
      probs = kept.map((p) => p / sum);
    }
    let r = this.random();
    for (let i = 0; i < probs.length; i++) {
      r -= probs[i]!;
      if (r < 0) return order[i]!;
    }
    return order[order.length - 1]!;
  }
}
