/**
 * Log-probabilities of generated tokens, as OpenAI's `logprobs` report them: the model's own
 * distribution (log-softmax of the logits, before temperature, top-k or top-p), the chosen
 * token's value and the `top` most likely tokens'.
 */
export interface TokenLogprob {
  token: number;
  logprob: number;
  /** The most likely tokens, most likely first (ties: lower id first). */
  top: { token: number; logprob: number }[];
}

/** The most OpenAI's API returns (top_logprobs <= 20). */
export const MAX_TOP_LOGPROBS = 20;

export function tokenLogprob(logits: Float32Array, token: number, top: number): TokenLogprob {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  const logSum = max + Math.log(sum);
  // The `top` best by insertion into a short sorted list: top <= 20, one pass over the vocabulary.
  const best: number[] = [];
  for (let i = 0; i < logits.length && top > 0; i++) {
    const v = logits[i]!;
    if (best.length === top && v <= logits[best[top - 1]!]!) continue;
    let at = best.length;
    while (at > 0 && logits[best[at - 1]!]! < v) at--;
    best.splice(at, 0, i);
    if (best.length > top) best.pop();
  }
  return { token, logprob: logits[token]! - logSum, top: best.map((i) => ({ token: i, logprob: logits[i]! - logSum })) };
}
