/**
 * Random token pruning (design doc section 5), the baseline every scorer must beat: a seeded,
 * uniform choice of `budget` image tokens. The same seed and prompt shape give the same tokens.
 * The knee budget has no scores to threshold, so this policy needs a count K or a fraction.
 */
import type { LayerExtras } from '../models/llama.js';
import { CorematchingError } from '../io/errors.js';
import type { PrefillContext } from './policy.js';
import { resolveBudget } from './knee.js';
import type { PolicyOptions } from './options.js';
import { TokenSelectionPolicy } from './fastv.js';

/** mulberry32: a small, well-mixed 32-bit generator; returns uniform floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `k` distinct values of 0 .. n-1 chosen uniformly (partial Fisher-Yates), ascending. */
export function randomSubset(n: number, k: number, random: () => number): number[] {
  const pool = Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(random() * (n - i));
    [pool[i], pool[j]] = [pool[j]!, pool[i]!];
  }
  return pool.slice(0, k).sort((a, b) => a - b);
}

export class RandomPolicy extends TokenSelectionPolicy {
  readonly name: string = 'random';

  constructor(options: Partial<PolicyOptions> = {}) {
    super(options);
    if (this.options.budget === 'knee') {
      throw new CorematchingError("policy random needs budget to be an integer K or a fraction in (0, 1), got 'knee' (random tokens have no scores to find a knee in)");
    }
  }

  override begin(context: PrefillContext): void {
    super.begin(context);
    if (context.imageTokens === 0) return;
    const k = resolveBudget(this.options.budget, context.imageTokens) as number;
    this.keptImage = randomSubset(context.imageTokens, k, mulberry32(this.options.seed));
  }

  override prefillExtras(_layer: number): LayerExtras {
    return {};
  }
}
