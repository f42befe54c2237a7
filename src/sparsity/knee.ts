/**
 * Image-token budgets (design doc section 3.4): the knee of the sorted score curve, a fixed count
 * `K`, or a fraction of the image tokens. Every selection returns indices into the scored array,
 * ascending.
 */
import { CorematchingError } from '../io/errors.js';

/** `knee`, an integer count K >= 1, or a fraction 0 < r < 1 of the image tokens. */
export type Budget = 'knee' | number;

/**
 * `ceil(x * n)` that ignores floating-point noise: `0.1 * 30` is 3.0000000000000004 in IEEE
 * doubles, and the intended answer is 3, not 4. Used for every `ceil(rho * |A+|)`-style count.
 */
export function ceilCount(fraction: number, n: number): number {
  const x = fraction * n;
  const nearest = Math.round(x);
  return Math.abs(x - nearest) <= 1e-9 * Math.max(1, Math.abs(x)) ? nearest : Math.ceil(x);
}

/**
 * Index `e` of the knee of a descending score curve: the first index with the largest
 * perpendicular distance from `(i, s_i)` to the line through `(0, s_0)` and `(n-1, s_{n-1})`.
 * The distance's constant denominator is left out (it does not change the arg-max), so integer
 * scores give exact integer comparisons. Returns 0 for an empty or one-point curve.
 */
export function kneeIndex(scoresDescending: ArrayLike<number>): number {
  const n = scoresDescending.length;
  if (n < 2) return 0;
  const first = scoresDescending[0]!;
  const rise = scoresDescending[n - 1]! - first;
  const run = n - 1;
  let best = 0;
  let bestDistance = -1;
  for (let i = 0; i < n; i++) {
    // Cross product of (P1 - P0) and (Pi - P0): run * (s_i - s_0) - rise * i.
    const distance = Math.abs(run * (scoresDescending[i]! - first) - rise * i);
    if (distance > bestDistance) {
      bestDistance = distance;
      best = i;
    }
  }
  return best;
}

/**
 * The knee threshold `s_e` of a descending score curve: the tokens to keep are those scoring
 * strictly more. When every score is equal (or there are none) returns -Infinity: keep all.
 */
export function kneeThreshold(scoresDescending: ArrayLike<number>): number {
  const n = scoresDescending.length;
  if (n === 0 || scoresDescending[0] === scoresDescending[n - 1]) return -Infinity;
  return scoresDescending[kneeIndex(scoresDescending)]!;
}

/** Checks the shape of a budget option (without knowing the image-token count). */
export function validateBudget(budget: unknown, option = 'budget'): asserts budget is Budget {
  if (budget === 'knee') return;
  if (typeof budget === 'number' && Number.isFinite(budget)) {
    if (Number.isInteger(budget) && budget >= 1) return;
    if (budget > 0 && budget < 1) return;
  }
  throw new CorematchingError(
    `${option} must be 'knee', an integer K >= 1 or a fraction strictly between 0 and 1, got ${JSON.stringify(budget)}`,
  );
}

/**
 * The number of image tokens a budget keeps out of `imageTokens`, or 'knee'. A fraction r gives
 * round(r * V) (halves round up); a count larger than V, or a fraction that rounds to 0, is an error.
 */
export function resolveBudget(budget: Budget, imageTokens: number): 'knee' | number {
  validateBudget(budget);
  if (budget === 'knee') return 'knee';
  if (Number.isInteger(budget)) {
    if (budget > imageTokens) {
      throw new CorematchingError(`budget ${budget} is larger than the ${imageTokens} image tokens of this prompt; expected at most ${imageTokens}`);
    }
    return budget;
  }
  const k = Math.floor(budget * imageTokens + 0.5);
  if (k < 1) {
    throw new CorematchingError(`budget ${budget} of ${imageTokens} image tokens rounds to 0 tokens; expected a fraction that keeps at least one`);
  }
  return k;
}

/** Positions sorted by score descending, ties by position ascending. */
export function rankDescending(scores: ArrayLike<number>): number[] {
  const order = Array.from({ length: scores.length }, (_, i) => i);
  order.sort((a, b) => scores[b]! - scores[a]! || a - b);
  return order;
}

/** The `k` best positions (ties: earlier position first), ascending. */
export function topK(scores: ArrayLike<number>, k: number): number[] {
  return rankDescending(scores)
    .slice(0, k)
    .sort((a, b) => a - b);
}

/**
 * Which positions a budget keeps, ascending. With 'knee': scores above the knee threshold, or the
 * top `minKeep` when fewer remain (never more than there are scores).
 */
export function selectByBudget(scores: ArrayLike<number>, budget: Budget, minKeep = 1): number[] {
  const resolved = resolveBudget(budget, scores.length);
  if (resolved !== 'knee') return topK(scores, resolved);
  const sorted = Float64Array.from(scores).sort().reverse();
  const threshold = kneeThreshold(sorted);
  const kept: number[] = [];
  for (let i = 0; i < scores.length; i++) if (scores[i]! > threshold) kept.push(i);
  return kept.length >= minKeep ? kept : topK(scores, Math.min(minKeep, scores.length));
}

/**
 * Prompt positions to keep when only the image tokens `keptImage` (grid indices, ascending) of the
 * span `imageStart .. imageStart + imageTokens` survive: every text token and those image tokens.
 */
export function keptPromptPositions(promptLength: number, imageStart: number, imageTokens: number, keptImage: readonly number[]): number[] {
  const out: number[] = [];
  for (let p = 0; p < imageStart; p++) out.push(p);
  for (const i of keptImage) out.push(imageStart + i);
  for (let p = imageStart + imageTokens; p < promptLength; p++) out.push(p);
  return out;
}
