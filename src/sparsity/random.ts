/**
 * Random token pruning (design doc section 5), the baseline every scorer must beat: a seeded,
 * uniform choice of `budget` image tokens. The same seed and prompt shape give the same tokens.
 * The knee budget has no scores to threshold, so this policy needs a count K or a fraction.
 */
import { CorematchingError } from '../io/errors.js';
import { mulberry32 } from '../util/seeded-random.js';
import type { PrefillContext } from './policy.js';
import { resolveBudget } from './knee.js';
import type { PolicyOptions } from './options.js';
import { TokenSelectionPolicy } from './token-selection.js';

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

  constructor(options: Readonly<PolicyOptions>) {
    super(options);
    if (options.budget === 'knee') {
      throw new CorematchingError("policy random needs budget to be an integer K or a fraction in (0, 1), got 'knee' (random tokens have no scores to find a knee in)");
    }
  }

  override begin(context: PrefillContext): void {
    super.begin(context);
    if (context.imageTokens === 0) return;
    const k = resolveBudget(this.options.budget, context.imageTokens) as number;
    this.keptImage = randomSubset(context.imageTokens, k, mulberry32(this.options.seed));
  }
}
