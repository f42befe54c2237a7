/**
 * The optional generation_config.json: stop tokens and the checkpoint's preferred decoding settings.
 * Absent fields get transformers' GenerationConfig defaults, except max_length: its default of 20
 * is a placeholder, so it stays null and the caller picks a length.
 */
import * as path from 'node:path';
import { CorematchingError } from './errors.js';
import { readOptionalJsonObject } from './json-file.js';

export interface GenerationConfig {
  bosTokenId: number | null;
  /** Empty when the file (or the field) is absent: callers add config.text.eosTokenIds, as
   * transformers does when it builds a generation config from the model config. */
  eosTokenIds: number[];
  padTokenId: number | null;
  doSample: boolean;
  temperature: number;
  topK: number;
  topP: number;
  maxNewTokens: number | null;
  /** Prompt plus new tokens. */
  maxLength: number | null;
}

export function loadGenerationConfig(dir: string): GenerationConfig {
  const file = path.join(path.resolve(dir), 'generation_config.json');
  const raw = readOptionalJsonObject(file) ?? {};

  const fail = (key: string, expected: string): never => {
    throw new CorematchingError(`${key} is ${JSON.stringify(raw[key])}; expected ${expected}`, file);
  };
  const get = <T>(key: string, def: T, ok: (v: unknown) => boolean, expected: string): T => {
    const v = raw[key] ?? def;
    return ok(v) ? (v as T) : fail(key, expected);
  };
  const isId = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
  const isIdOrNull = (v: unknown) => v === null || isId(v);
  const isCountOrNull = (v: unknown) => v === null || (Number.isSafeInteger(v) && (v as number) > 0);

  const eos = raw.eos_token_id ?? [];
  const eosTokenIds = Array.isArray(eos) ? eos : [eos];
  if (!eosTokenIds.every(isId)) fail('eos_token_id', 'a token id or a list of token ids');

  return {
    bosTokenId: get('bos_token_id', null, isIdOrNull, 'a token id or null'),
    eosTokenIds: eosTokenIds as number[],
    padTokenId: get('pad_token_id', null, isIdOrNull, 'a token id or null'),
    doSample: get('do_sample', false, (v) => typeof v === 'boolean', 'true or false'),
    temperature: get('temperature', 1.0, (v) => typeof v === 'number' && v >= 0 && Number.isFinite(v), 'a number >= 0'),
    topK: get('top_k', 50, (v) => Number.isSafeInteger(v) && (v as number) >= 0, 'an integer >= 0 (0 disables top-k)'),
    topP: get('top_p', 1.0, (v) => typeof v === 'number' && v > 0 && v <= 1, 'a number in (0, 1]'),
    maxNewTokens: get('max_new_tokens', null, isCountOrNull, 'a positive integer or null'),
    maxLength: get('max_length', null, isCountOrNull, 'a positive integer or null'),
  };
}
