/**
 * An OpenAI chat-completions request checked and turned into what the engine takes: the
 * conversation for the chat template with its image (or none), the sampling and stopping options, and
 * the `corematching` extension (policy and options). Every problem is a 400 or 422 naming the field.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { ChatMessage } from '../io/chat-template.js';
import { isPlainObject } from '../util/plain-object.js';
import { MAX_TOP_LOGPROBS } from '../pipeline/logprobs.js';
import type { SamplingOptions } from '../pipeline/sampling.js';
import { isPolicyName, POLICY_NAMES, type PolicyName } from '../sparsity/create-policy.js';
import type { PolicyOptions } from '../sparsity/options.js';
import { ApiError, badRequest, unsupported } from './api-error.js';

export interface ChatRequest {
  messages: ChatMessage[];
  /** The encoded image (data: URL payload or an allowed file); null for a text-only conversation. */
  image: Uint8Array | null;
  maxTokens: number | undefined;
  sampling: SamplingOptions;
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
  /** With `logprobs: true`, the alternatives per token (`top_logprobs`, default 0); otherwise undefined. */
  topLogprobs: number | undefined;
  policy: PolicyName | undefined;
  policyOptions: Partial<PolicyOptions>;
}

export interface RequestLimits {
  /** Folder local image paths may name (file:// URLs or plain paths); null: none allowed. */
  allowFiles: string | null;
  /** Largest encoded image, in bytes. */
  maxImageBytes: number;
}

type Json = Record<string, unknown>;

const KNOWN_FIELDS = new Set([
  'model', 'messages', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'seed', 'stop', 'stream', 'stream_options',
  'n', 'user', 'corematching', 'frequency_penalty', 'presence_penalty', 'logprobs', 'top_logprobs', 'response_format',
]);

function number(body: Json, field: string, check: (x: number) => boolean, expected: string): number | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !check(v)) throw badRequest(`${field} must be ${expected}, got ${JSON.stringify(v)}`, field);
  return v;
}

function imageBytes(url: unknown, param: string, limits: RequestLimits): Uint8Array {
  if (typeof url !== 'string') throw badRequest('image_url.url must be a string', param);
  const data = /^data:image\/[a-z0-9.+-]+;base64,(.*)$/is.exec(url);
  if (data) {
    const base64 = data[1]!.replace(/\s+/g, '');
    if ((base64.length * 3) / 4 > limits.maxImageBytes) throw new ApiError(413, `the image is larger than ${limits.maxImageBytes} bytes`, 'invalid_request_error', param, 'image_too_large');
    return Buffer.from(base64, 'base64');
  }
  if (/^https?:/i.test(url)) throw unsupported('remote image URLs are not fetched; send the image as a data: URL', param);
  if (limits.allowFiles === null) throw unsupported('local image paths are refused unless the server runs with --allow-files DIR; send a data: URL', param);
  const file = path.resolve(limits.allowFiles, url.replace(/^file:\/\//i, ''));
  const real = fs.existsSync(file) ? fs.realpathSync(file) : file;
  const root = fs.realpathSync(limits.allowFiles);
  if (real !== root && !real.startsWith(root + path.sep)) throw badRequest(`the image path is outside the --allow-files folder ${root}`, param);
  if (!fs.existsSync(real) || !fs.statSync(real).isFile()) throw badRequest(`no such image file under ${root}: ${url}`, param);
  if (fs.statSync(real).size > limits.maxImageBytes) throw new ApiError(413, `the image is larger than ${limits.maxImageBytes} bytes`, 'invalid_request_error', param, 'image_too_large');
  return fs.readFileSync(real);
}

/** A message's content as template parts; the image part's bytes are collected in `images`. */
function contentParts(content: unknown, param: string, images: Uint8Array[], limits: RequestLimits): ChatMessage['content'] {
  if (typeof content === 'string') return [{ type: 'text', text: content }];
  if (!Array.isArray(content)) throw badRequest('content must be a string or a list of parts', param);
  return content.map((part: unknown, i) => {
    const p = `${param}[${i}]`;
    if (!isPlainObject(part)) throw badRequest('a content part must be an object', p);
    if (part.type === 'text') {
      if (typeof part.text !== 'string') throw badRequest('a text part needs a string "text"', `${p}.text`);
      return { type: 'text' as const, text: part.text };
    }
    if (part.type === 'image_url') {
      const url = isPlainObject(part.image_url) ? part.image_url.url : part.image_url;
      images.push(imageBytes(url, `${p}.image_url`, limits));
      return { type: 'image' as const };
    }
    throw unsupported(`content parts of type ${JSON.stringify(part.type)} are not supported; expected text or image_url`, `${p}.type`);
  });
}

function policyExtension(value: unknown): { policy: PolicyName | undefined; policyOptions: Partial<PolicyOptions> } {
  if (value === undefined || value === null) return { policy: undefined, policyOptions: {} };
  if (!isPlainObject(value)) throw badRequest('corematching must be an object {policy, budget, rho, ...}', 'corematching');
  const { policy, ...policyOptions } = value;
  if (policy !== undefined && (typeof policy !== 'string' || !isPolicyName(policy))) {
    throw badRequest(`corematching.policy must be one of ${POLICY_NAMES.join(', ')}, got ${JSON.stringify(policy)}`, 'corematching.policy');
  }
  return { policy: policy as PolicyName | undefined, policyOptions: policyOptions as Partial<PolicyOptions> };
}

export function parseChatRequest(body: unknown, limits: RequestLimits): ChatRequest {
  if (!isPlainObject(body)) throw badRequest('the request body must be a JSON object');
  for (const key of Object.keys(body)) if (!KNOWN_FIELDS.has(key)) throw badRequest(`unknown field ${JSON.stringify(key)}`, key);
  if (body.n !== undefined && body.n !== null && body.n !== 1) throw unsupported('only n = 1 is supported', 'n');
  if (!Array.isArray(body.messages) || body.messages.length === 0) throw badRequest('messages must be a non-empty list', 'messages');
  const images: Uint8Array[] = [];
  const messages: ChatMessage[] = body.messages.map((m: unknown, i) => {
    const param = `messages[${i}]`;
    if (!isPlainObject(m)) throw badRequest('a message must be an object {role, content}', param);
    if (m.role !== 'system' && m.role !== 'user' && m.role !== 'assistant') {
      throw (m.role === 'tool' || m.role === 'developer' || m.role === 'function' ? unsupported : badRequest)(`role must be system, user or assistant, got ${JSON.stringify(m.role)}`, `${param}.role`);
    }
    return { role: m.role, content: contentParts(m.content, `${param}.content`, images, limits) };
  });
  if (images.length > 1) throw unsupported(`a conversation holds at most one image (an image_url part), got ${images.length}`, 'messages');
  if (messages.at(-1)!.role !== 'user') throw badRequest('the last message must be from the user', 'messages');

  const maxTokens = number(body, 'max_completion_tokens', (x) => Number.isSafeInteger(x) && x > 0, 'a positive integer') ?? number(body, 'max_tokens', (x) => Number.isSafeInteger(x) && x > 0, 'a positive integer');
  const temperature = number(body, 'temperature', (x) => x >= 0 && x <= 2, 'a number in [0, 2]');
  const topP = number(body, 'top_p', (x) => x > 0 && x <= 1, 'a number in (0, 1]');
  const seed = number(body, 'seed', (x) => Number.isSafeInteger(x), 'an integer');
  // OpenAI's temperature 0 is greedy decoding.
  const sampling: SamplingOptions =
    temperature === 0 ? { doSample: false } : { ...(temperature !== undefined ? { doSample: true, temperature } : {}), ...(topP !== undefined ? { doSample: true, topP } : {}), ...(seed !== undefined ? { seed } : {}) };

  let stop: string[] = [];
  if (typeof body.stop === 'string') stop = [body.stop];
  else if (Array.isArray(body.stop)) stop = body.stop as string[];
  else if (body.stop !== undefined && body.stop !== null) throw badRequest('stop must be a string or a list of strings', 'stop');
  if (stop.length > 4 || !stop.every((s) => typeof s === 'string' && s.length > 0)) throw badRequest('stop must hold up to 4 non-empty strings', 'stop');

  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== 'boolean') throw badRequest('stream must be true or false', 'stream');
  const includeUsage = isPlainObject(body.stream_options) && body.stream_options.include_usage === true;
  if (body.logprobs !== undefined && body.logprobs !== null && typeof body.logprobs !== 'boolean') throw badRequest('logprobs must be true or false', 'logprobs');
  const top = number(body, 'top_logprobs', (x) => Number.isSafeInteger(x) && x >= 0 && x <= MAX_TOP_LOGPROBS, `an integer in 0 .. ${MAX_TOP_LOGPROBS}`);
  if (top !== undefined && body.logprobs !== true) throw badRequest('top_logprobs needs logprobs: true', 'top_logprobs');
  const topLogprobs = body.logprobs === true ? (top ?? 0) : undefined;
  return { messages, image: images[0] ?? null, maxTokens, sampling, stop, stream: body.stream === true, includeUsage, topLogprobs, ...policyExtension(body.corematching) };
}
