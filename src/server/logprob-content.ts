/** Token log-probabilities in the shape of OpenAI's `choices[].logprobs.content`. */
import type { TextTokenizer } from '../io/tokenizer.js';
import type { TokenLogprob } from '../pipeline/logprobs.js';

export interface LogprobEntry {
  token: string;
  logprob: number;
  bytes: number[];
}

export interface LogprobContent extends LogprobEntry {
  top_logprobs: LogprobEntry[];
}

const entry = (tokenizer: TextTokenizer, token: number, logprob: number): LogprobEntry => {
  const bytes = tokenizer.tokenBytes(token);
  return { token: new TextDecoder().decode(bytes), logprob, bytes: Array.from(bytes) };
};

/** The entries of the tokens that are part of the answer's text (special tokens, such as the end of turn, are not). */
export function logprobContent(tokenizer: TextTokenizer, entries: readonly TokenLogprob[]): LogprobContent[] {
  return entries
    .filter((e) => !tokenizer.isSpecial(e.token))
    .map((e) => ({ ...entry(tokenizer, e.token, e.logprob), top_logprobs: e.top.map((t) => entry(tokenizer, t.token, t.logprob)) }));
}
