/**
 * Exact-match accuracy of a model on an evaluation set under one policy, with the mean kept image
 * tokens, FLOPs and wall time, so policies can be compared at equal cost.
 */
import { decodeImage } from '../io/image.js';
import type { EvalItem } from '../io/eval-set.js';
import type { PolicyName } from '../sparsity/create-policy.js';
import type { PolicyOptions } from '../sparsity/options.js';
import type { PhaseFlops, VisionLanguageModel } from './vision-language-model.js';

export interface TypeAccuracy {
  total: number;
  correct: number;
  accuracy: number;
}

export interface EvalReport {
  policy: PolicyName;
  policyOptions: Partial<PolicyOptions>;
  questions: number;
  accuracy: number;
  perType: Record<string, TypeAccuracy>;
  imageTokens: number;
  meanKeptImageTokens: number;
  /** Means over the questions. */
  meanFlops: PhaseFlops;
  /** The same questions run dense. */
  denseFlops: PhaseFlops;
  /** Mean wall time of one question: preprocessing, vision, prefill and decoding. */
  meanSeconds: number;
}

/** Answers compare case-insensitively, ignoring surrounding space and final punctuation. */
export function normalizeAnswer(text: string): string {
  return text.trim().toLowerCase().replace(/[.!?]+$/, '').trim();
}

export async function evaluate(
  vlm: VisionLanguageModel,
  items: readonly EvalItem[],
  policy: PolicyName,
  policyOptions: Partial<PolicyOptions> = {},
  onProgress?: (done: number) => void,
): Promise<EvalReport> {
  const perType: Record<string, TypeAccuracy> = {};
  let correct = 0;
  let kept = 0;
  let imageTokens = 0;
  const flops: PhaseFlops = { vision: 0, prefill: 0, decodeStep: 0 };
  const denseFlops: PhaseFlops = { vision: 0, prefill: 0, decodeStep: 0 };
  const t0 = performance.now();
  for (const [i, item] of items.entries()) {
    const result = await vlm.generate({ image: await decodeImage(item.image), prompt: item.question, maxNewTokens: 8, policy, policyOptions });
    const ok = normalizeAnswer(result.text) === normalizeAnswer(item.answer);
    const t = (perType[item.type] ??= { total: 0, correct: 0, accuracy: 0 });
    t.total++;
    if (ok) {
      t.correct++;
      correct++;
    }
    kept += result.sparsity.keptImageTokens.length;
    imageTokens = result.imageTokens;
    for (const k of ['vision', 'prefill', 'decodeStep'] as const) {
      flops[k] += result.sparsity.flops[k] / items.length;
      denseFlops[k] += result.sparsity.denseFlops[k] / items.length;
    }
    onProgress?.(i + 1);
  }
  for (const t of Object.values(perType)) t.accuracy = t.correct / t.total;
  return {
    policy,
    policyOptions,
    questions: items.length,
    accuracy: correct / items.length,
    perType,
    imageTokens,
    meanKeptImageTokens: kept / items.length,
    meanFlops: flops,
    denseFlops,
    meanSeconds: (performance.now() - t0) / 1000 / items.length,
  };
}
