/**
 * What `VisionLanguageModel.generate` accepts, and the check every call passes first: the library is
 * called from JavaScript too, where nothing stops `stopStrings: 0` or `image: null`, and a raw
 * TypeError from deep inside the loop tells a user nothing.
 */
import { CorematchingError } from '../io/errors.js';
import type { RgbImage } from '../io/image.js';
import type { PolicyName } from '../sparsity/create-policy.js';
import type { PolicyOptions } from '../sparsity/options.js';
import type { SparsityPolicy } from '../sparsity/policy.js';
import { MAX_TOP_LOGPROBS, type TokenLogprob } from './logprobs.js';
import type { SamplingOptions } from './sampling.js';
import { isPlainObject } from '../util/plain-object.js';

export interface GenerateOptions {
  /** A file path, encoded image bytes (JPEG/PNG/WebP), or decoded RGB pixels; none for a text-only prompt. */
  image?: string | Uint8Array | RgbImage;
  /** The user's question, wrapped by the chat template; or, with rawPrompt, the whole prompt. */
  prompt: string;
  /** Use `prompt` verbatim; it must hold exactly one image placeholder (none without an image). */
  rawPrompt?: boolean;
  /**
   * Continue from this model's KV cache when the prompt (and image) extends the previous call's
   * prompt and answer and the policy (name and options) is the same, as a conversation's next turn
   * is: only the new tokens are prefilled. A reused turn runs dense over what the cache holds (the
   * image tokens its first turn's policy kept).
   */
  reuseCache?: boolean;
  maxNewTokens?: number;
  /** Overrides the checkpoint's generation_config.json (do_sample, temperature, top_k, top_p), field by field. */
  sampling?: SamplingOptions;
  /** Keep generating through end-of-sequence tokens (benchmarks, reference comparisons). */
  ignoreEos?: boolean;
  /** Generation stops when the text contains one of these; the text is cut before it. */
  stopStrings?: string[];
  /** Receives each piece of text as soon as it is printable, with the token id that completed it. */
  onText?: (text: string, tokenId: number) => void;
  /** Report each new token's log-probability and this many most likely alternatives (0 .. 20). */
  logprobs?: number;
  /** Receives each new token's log-probabilities as soon as it is chosen (needs `logprobs`). */
  onLogprob?: (entry: TokenLogprob) => void;
  /** A policy name (default 'dense') or a policy object; a fresh object per call. */
  policy?: PolicyName | SparsityPolicy;
  /** Options of a policy given by name (rho, beta, tokenLayer, budget, ...). */
  policyOptions?: Partial<PolicyOptions>;
  /** Stops the request: before it starts, between prefill and decoding, or at the next token;
   * generate() then rejects with the signal's reason. */
  signal?: AbortSignal;
}

const OPTION_NAMES = ['image', 'prompt', 'rawPrompt', 'reuseCache', 'maxNewTokens', 'sampling', 'ignoreEos', 'stopStrings', 'onText', 'logprobs', 'onLogprob', 'policy', 'policyOptions', 'signal'];
const SAMPLING_NAMES = ['doSample', 'temperature', 'topK', 'topP', 'seed'];

export const isRgbImage = (x: unknown): x is RgbImage => typeof x === 'object' && x !== null && !(x instanceof Uint8Array);


function describe(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'an array';
  if (typeof x === 'string') return JSON.stringify(x.length > 40 ? `${x.slice(0, 40)}...` : x);
  if (typeof x === 'number' || typeof x === 'boolean' || typeof x === 'undefined') return String(x);
  return typeof x;
}

const fail = (option: string, expected: string, got: unknown): never => {
  throw new CorematchingError(`generate(): ${option} must be ${expected}, got ${describe(got)}`);
};

/** The image argument is a path, encoded bytes, or well-formed RGB pixels. */
function checkImage(image: unknown): void {
  if (typeof image === 'string' || image instanceof Uint8Array) return;
  if (!isRgbImage(image)) fail('image', 'a file path, encoded image bytes or {width, height, data}', image);
  const { width, height, data } = image as Partial<RgbImage>;
  const positive = (x: unknown) => Number.isSafeInteger(x) && (x as number) > 0;
  if (!positive(width) || !positive(height)) throw new CorematchingError(`generate(): image width and height must be positive integers, got ${describe(width)} x ${describe(height)}`);
  if (!(data instanceof Uint8Array) || data.length !== width! * height! * 3) {
    throw new CorematchingError(`generate(): image data must be a Uint8Array of width x height x 3 = ${width! * height! * 3} RGB bytes, got ${data instanceof Uint8Array ? data.length : describe(data)}`);
  }
}

function checkKeys(object: Record<string, unknown>, names: string[], what: string): void {
  for (const key of Object.keys(object)) {
    if (!names.includes(key)) throw new CorematchingError(`generate(): unknown ${what} "${key}"; expected one of ${names.join(', ')}`);
  }
}

/** Every field has the type GenerateOptions says; value ranges are checked where they are used. */
export function checkGenerateOptions(options: unknown): asserts options is GenerateOptions {
  if (!isPlainObject(options)) fail('its argument', 'an options object {image, prompt, ...}', options);
  const o = options as Record<string, unknown>;
  checkKeys(o, OPTION_NAMES, 'option');
  if (o.image !== undefined) checkImage(o.image);
  if (typeof o.prompt !== 'string') fail('prompt', 'a string', o.prompt);
  for (const flag of ['rawPrompt', 'ignoreEos', 'reuseCache']) if (o[flag] !== undefined && typeof o[flag] !== 'boolean') fail(flag, 'true or false', o[flag]);
  if (o.maxNewTokens !== undefined && !(Number.isSafeInteger(o.maxNewTokens) && (o.maxNewTokens as number) > 0)) fail('maxNewTokens', 'a positive integer', o.maxNewTokens);
  if (o.stopStrings !== undefined && !(Array.isArray(o.stopStrings) && o.stopStrings.every((s) => typeof s === 'string' && s.length > 0))) {
    fail('stopStrings', 'an array of non-empty strings', o.stopStrings);
  }
  if (o.onText !== undefined && typeof o.onText !== 'function') fail('onText', 'a function', o.onText);
  if (o.logprobs !== undefined && !(Number.isSafeInteger(o.logprobs) && (o.logprobs as number) >= 0 && (o.logprobs as number) <= MAX_TOP_LOGPROBS)) {
    fail('logprobs', `an integer in 0 .. ${MAX_TOP_LOGPROBS} (alternatives per token)`, o.logprobs);
  }
  if (o.onLogprob !== undefined && typeof o.onLogprob !== 'function') fail('onLogprob', 'a function', o.onLogprob);
  if (o.onLogprob !== undefined && o.logprobs === undefined) fail('logprobs', 'set when onLogprob is given', o.logprobs);
  if (o.policy !== undefined && typeof o.policy !== 'string' && !isPlainObject(o.policy)) fail('policy', 'a policy name or a policy object', o.policy);
  if (o.policyOptions !== undefined && !isPlainObject(o.policyOptions)) fail('policyOptions', 'an object', o.policyOptions);
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) fail('signal', 'an AbortSignal', o.signal);
  if (o.sampling !== undefined) {
    if (!isPlainObject(o.sampling)) fail('sampling', 'an object {doSample, temperature, topK, topP, seed}', o.sampling);
    const s = o.sampling as Record<string, unknown>;
    checkKeys(s, SAMPLING_NAMES, 'sampling option');
    if (s.doSample !== undefined && typeof s.doSample !== 'boolean') fail('sampling.doSample', 'true or false', s.doSample);
    for (const key of ['temperature', 'topP']) if (s[key] !== undefined && typeof s[key] !== 'number') fail(`sampling.${key}`, 'a number', s[key]);
    for (const key of ['topK', 'seed']) if (s[key] !== undefined && !Number.isSafeInteger(s[key])) fail(`sampling.${key}`, 'an integer', s[key]);
  }
}
