/**
 * Accuracy of a model on an evaluation set under one policy: exact match and a token-level F1
 * (for answers of several words, where exact match is all or nothing), with the mean kept image
 * tokens, FLOPs, wall time and decode speed, so policies can be compared at equal cost.
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
  /** Mean token-level F1 of the answers. */
  f1: number;
}

export interface EvalReport {
  policy: PolicyName;
  policyOptions: Partial<PolicyOptions>;
  questions: number;
  accuracy: number;
  /** Mean token-level F1 over the questions. */
  f1: number;
  perType: Record<string, TypeAccuracy>;
  imageTokens: number;
  meanKeptImageTokens: number;
  /** Means over the questions. */
  meanFlops: PhaseFlops;
  /** The same questions run dense. */
  denseFlops: PhaseFlops;
  /** Mean wall time of one question: preprocessing, vision, prefill and decoding. */
  meanSeconds: number;
  /** Share of the FFN neurons decoding uses, over all layers (a dense layer counts whole). */
  meanDecodeFfnShare: number;
  /** New tokens after the first over the time spent decoding them, all questions together. */
  decodeTokensPerSecond: number;
}

/** Answers compare case-insensitively, ignoring surrounding space and final punctuation. */
export function normalizeAnswer(text: string): string {
  return text.trim().toLowerCase().replace(/[.!?]+$/, '').trim();
}

/** The words of an answer as token-level F1 compares them: normalized, punctuation as spaces. */
function answerWords(text: string): string[] {
  return normalizeAnswer(text).split(/[^\p{L}\p{N}]+/u).filter((w) => w.length > 0);
}

/** SQuAD's token-level F1: the harmonic mean of precision and recall of the answer's words,
 * counted as multisets (word order is not scored; exact match scores it). */
export function tokenF1(prediction: string, reference: string): number {
  const predicted = answerWords(prediction);
  const expected = answerWords(reference);
  if (predicted.length === 0 || expected.length === 0) return predicted.length === expected.length ? 1 : 0;
  const left = new Map<string, number>();
  for (const w of expected) left.set(w, (left.get(w) ?? 0) + 1);
  let common = 0;
  for (const w of predicted) {
    const n = left.get(w) ?? 0;
    if (n > 0) {
      common++;
      left.set(w, n - 1);
    }
  }
  if (common === 0) return 0;
  const precision = common / predicted.length;
  const recall = common / expected.length;
  return (2 * precision * recall) / (precision + recall);
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
  let f1 = 0;
  let decodeTokens = 0;
  let decodeMs = 0;
  let ffnShare = 0;
  const { numHiddenLayers: layers, intermediateSize: width } = vlm.config.text;
  let kept = 0;
  let imageTokens = 0;
  const flops: PhaseFlops = { vision: 0, prefill: 0, decodeStep: 0 };
  const denseFlops: PhaseFlops = { vision: 0, prefill: 0, decodeStep: 0 };
  const t0 = performance.now();
  for (const [i, item] of items.entries()) {
    // Room for the reference answer and a few tokens more; the end-of-turn token usually stops it first.
    const maxNewTokens = vlm.processor.tokenizer.encode(item.answer, false).length + 8;
    const result = await vlm.generate({ image: await decodeImage(item.image), prompt: item.question, maxNewTokens, policy, policyOptions });
    const ok = normalizeAnswer(result.text) === normalizeAnswer(item.answer);
    const score = tokenF1(result.text, item.answer);
    const t = (perType[item.type] ??= { total: 0, correct: 0, accuracy: 0, f1: 0 });
    t.total++;
    t.f1 += score;
    f1 += score;
    decodeTokens += Math.max(0, result.stats.newTokenCount - 1);
    decodeMs += result.stats.decodeMs;
    const sparse = Object.values(result.sparsity.coreNeurons ?? {});
    ffnShare += (sparse.reduce((a, b) => a + b, 0) + (layers - sparse.length) * width) / (layers * width) / items.length;
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
  for (const t of Object.values(perType)) {
    t.accuracy = t.correct / t.total;
    t.f1 /= t.total;
  }
  return {
    policy,
    policyOptions,
    questions: items.length,
    accuracy: correct / items.length,
    f1: f1 / items.length,
    perType,
    imageTokens,
    meanKeptImageTokens: kept / items.length,
    meanFlops: flops,
    denseFlops,
    meanSeconds: (performance.now() - t0) / 1000 / items.length,
    meanDecodeFfnShare: ffnShare,
    decodeTokensPerSecond: decodeMs > 0 ? (1000 * decodeTokens) / decodeMs : 0,
  };
}
