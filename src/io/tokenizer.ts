/**
 * Text <-> token ids, matching transformers 5.23 on LLaVA folders.
 *
 * For model_type "llava" AutoTokenizer loads TokenizersBackend, i.e. tokenizer.json as written
 * (its normalizer, pre-tokenizer, decoder and post-processor), ignoring tokenizer_config's
 * tokenizer_class, add_bos_token and add_eos_token. What tokenizer_config.json still contributes:
 * special tokens missing from tokenizer.json are added, and clean_up_tokenization_spaces (which
 * transformers ignores for BPE models).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { CorematchingError } from './errors.js';
import { readJsonObject, readOptionalJsonObject } from './json-file.js';
import { tokenBytesReader } from './token-bytes.js';

type Json = Record<string, unknown>;

interface AddedTokenJson {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/** transformers' SPECIAL_TOKENS_ATTRIBUTES: the names chat templates see (bos_token, ...). */
const NAMED_SPECIAL_TOKENS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'];


/** tokenizer_config.json as an object; {} when the folder has none. */
export function readTokenizerConfig(dir: string): Json {
  const file = path.join(dir, 'tokenizer_config.json');
  const cfg = readOptionalJsonObject(file);
  if (cfg === null) return {};
  return cfg as Json;
}

/** A token in tokenizer_config is a string or a serialised AddedToken {"content": ...}. */
function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as Json).content === 'string') return (v as Json).content as string;
  return null;
}

/**
 * The special_tokens_map transformers passes to chat templates: the named tokens that are set,
 * plus model-specific names given by a dict-valued extra_special_tokens (e.g. image_token).
 */
export function specialTokensMap(cfg: Json): Record<string, string> {
  const map: Record<string, string> = {};
  for (const name of NAMED_SPECIAL_TOKENS) {
    const content = tokenContent(cfg[name]);
    if (content !== null) map[name] = content;
  }
  const extra = cfg.extra_special_tokens;
  if (typeof extra === 'object' && extra !== null && !Array.isArray(extra)) {
    for (const [name, v] of Object.entries(extra)) {
      const content = tokenContent(v);
      if (content !== null) map[name] = content;
    }
  }
  return map;
}

/** Every token tokenizer_config declares special, as transformers' TokenizersBackend collects them.
 * The older additional_special_tokens list counts only when extra_special_tokens is empty. */
function declaredSpecialTokens(cfg: Json): string[] {
  const extra = cfg.extra_special_tokens;
  const hasExtra = typeof extra === 'object' && extra !== null && Object.keys(extra).length > 0;
  const list = hasExtra ? extra : cfg.additional_special_tokens;
  const listed = Array.isArray(list) ? list.map(tokenContent) : [];
  return [...Object.values(specialTokensMap(cfg)), ...listed].filter((t): t is string => t !== null);
}

export class TextTokenizer {
  readonly dir: string;
  /** Named special tokens (bos_token, eos_token, ...) from tokenizer_config.json. */
  readonly specialTokens: Readonly<Record<string, string>>;
  private readonly tokenizer: Tokenizer;
  private readonly specialIds: Set<number>;
  private readonly bytesOf: (token: string) => Uint8Array;

  private constructor(dir: string, tokenizer: Tokenizer, specialTokens: Record<string, string>, specialIds: Set<number>, bytesOf: (token: string) => Uint8Array) {
    this.dir = dir;
    this.bytesOf = bytesOf;
    this.tokenizer = tokenizer;
    this.specialTokens = specialTokens;
    this.specialIds = specialIds;
  }

  static load(dir: string): TextTokenizer {
    const abs = path.resolve(dir);
    const file = path.join(abs, 'tokenizer.json');
    if (!fs.existsSync(file)) {
      throw new CorematchingError(
        'tokenizer.json not found; expected a fast-tokenizer file (sentencepiece-only folders are not supported)',
        abs,
      );
    }
    const json = readJsonObject(file);
    const model = json.model as Json | undefined;
    if (typeof model !== 'object' || model === null || typeof model.type !== 'string') {
      throw new CorematchingError('model.type is missing; expected a tokenizers serialisation with a model', file);
    }
    const vocab = model.vocab as unknown;
    const entries = Array.isArray(vocab) ? vocab.length : typeof vocab === 'object' && vocab !== null ? Object.keys(vocab).length : 0;
    if (entries === 0) {
      throw new CorematchingError(`model.vocab is ${vocab === undefined ? 'missing' : 'empty'}; a ${model.type} tokenizer needs its vocabulary`, file);
    }
    const cfg = readTokenizerConfig(abs);
    checkAddedTokens(json.added_tokens, file);
    const added = mergeAddedTokens(json, cfg);
    // Mirrors transformers: clean-up is skipped for BPE models unless explicitly forced.
    const cleanUp =
      cfg.clean_up_tokenization_spaces === true &&
      (model.type !== 'BPE' || cfg.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output === true);
    // @huggingface/tokenizers reads a WordLevel model's unknown token from this second argument,
    // not from the model (where the tokenizers library and transformers read it): without it,
    // words outside the vocabulary came back as no id at all.
    const unknown = typeof model.unk_token === 'string' ? { unk_token: model.unk_token } : {};
    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer({ ...json, added_tokens: added }, { clean_up_tokenization_spaces: cleanUp, ...unknown });
    } catch (err) {
      throw new CorematchingError(`unsupported tokenizer: ${(err as Error).message}`, file);
    }
    const specialIds = new Set(added.filter((t) => t.special).map((t) => t.id));
    return new TextTokenizer(abs, tokenizer, specialTokensMap(cfg), specialIds, tokenBytesReader(json.decoder));
  }

  /** The tokenizers library trusts the file's structure; a malformed part can surface only when
   * text meets it, so its errors are reported as the file's. */
  private guarded<T>(what: string, run: () => T): T {
    try {
      return run();
    } catch (err) {
      if (err instanceof CorematchingError) throw err;
      throw new CorematchingError(`the tokenizer failed to ${what}: ${(err as Error).message}`, path.join(this.dir, 'tokenizer.json'));
    }
  }

  /** Ids as transformers' tokenizer(text) gives them; the post-processor adds BOS/EOS when asked. */
  encode(text: string, addSpecialTokens = true): number[] {
    const { ids, tokens } = this.guarded('encode text', () => this.tokenizer.encode(text, { add_special_tokens: addSpecialTokens }));
    const missing = ids.findIndex((id: number | undefined) => !Number.isInteger(id));
    if (missing >= 0) {
      // The tokenizers library refuses such text too ("Missing [UNK] token from the vocabulary").
      throw new CorematchingError(`the text has ${JSON.stringify(tokens[missing])}, which is not in the tokenizer's vocabulary, and the tokenizer has no unknown token to stand for it`, path.join(this.dir, 'tokenizer.json'));
    }
    return ids;
  }

  /** Ids with no token (the model's vocab can be padded past the tokenizer's) decode to nothing. */
  decode(ids: number[], skipSpecialTokens = true): string {
    const known = ids.filter((id) => this.tokenizer.id_to_token(id) !== undefined);
    if (known.length === 0) return '';
    return this.guarded('decode tokens', () => this.tokenizer.decode(known, { skip_special_tokens: skipSpecialTokens }));
  }

  tokenId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }

  /** The bytes a token id stands for (empty for an id with no token). */
  tokenBytes(id: number): Uint8Array {
    const token = this.tokenizer.id_to_token(id);
    return token === undefined ? new Uint8Array(0) : this.bytesOf(token);
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  streamDecoder(skipSpecialTokens = true): StreamDecoder {
    return new StreamDecoder(this, skipSpecialTokens);
  }
}

/**
 * tokenizer.json's added tokens, plus tokens tokenizer_config.json declares (added_tokens_decoder
 * entries, then named and extra special tokens) that tokenizer.json lacks: transformers adds those
 * at load time, otherwise such a token would be split into pieces. Like transformers' add_tokens,
 * a new token takes its id from the base vocab if it is there, else the next free id; the id
 * written in added_tokens_decoder is not used.
 */
/** added_tokens, when present, is a list of {id, content, ...} entries. */
function checkAddedTokens(value: unknown, file: string): void {
  if (value === undefined || value === null) return;
  const ok = Array.isArray(value) && value.every((t: Json | null) => typeof t === 'object' && t !== null && Number.isSafeInteger(t.id) && (t.id as number) >= 0 && typeof t.content === 'string');
  if (!ok) throw new CorematchingError('added_tokens must be a list of {"id": non-negative int, "content": string, ...}', file);
}

function mergeAddedTokens(json: Json, cfg: Json): AddedTokenJson[] {
  const defaults = { single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
  const added: AddedTokenJson[] = ((json.added_tokens as AddedTokenJson[] | undefined) ?? []).map((t) => ({ ...defaults, ...t }));
  const byContent = new Map(added.map((t) => [t.content, t]));
  const vocab = ((json.model as Json).vocab ?? {}) as Record<string, number> | [string, number][];
  // Unigram vocabs are [token, score] lists indexed by id; BPE/WordPiece ones are token -> id maps.
  const vocabId = (token: string): number | undefined => {
    if (!Array.isArray(vocab)) return Object.hasOwn(vocab, token) ? vocab[token] : undefined;
    const i = vocab.findIndex(([t]) => t === token);
    return i >= 0 ? i : undefined;
  };
  const ids = Array.isArray(vocab) ? [vocab.length - 1] : Object.values(vocab);
  let nextId = [...ids, ...added.map((t) => t.id)].reduce((a, b) => Math.max(a, b), -1) + 1;

  const declared: Partial<AddedTokenJson>[] = [];
  const decoder = cfg.added_tokens_decoder;
  if (typeof decoder === 'object' && decoder !== null) {
    const entries = Object.entries(decoder as Record<string, Json>).sort(([a], [b]) => Number(a) - Number(b));
    for (const [, tok] of entries) declared.push(tok as Partial<AddedTokenJson>);
  }
  for (const content of declaredSpecialTokens(cfg)) declared.push({ content, special: true });

  for (const tok of declared) {
    const content = tokenContent(tok);
    if (content === null) continue;
    const existing = byContent.get(content);
    if (existing !== undefined) {
      existing.special ||= tok.special === true;
      continue;
    }
    const entry = { ...defaults, ...tok, content, id: vocabId(content) ?? nextId++ };
    added.push(entry);
    byContent.set(content, entry);
  }
  return added;
}

/**
 * Incremental detokenisation for streaming. Each step decodes a short window of recent ids with
 * and without the new ones and returns the difference, so decoders that depend on context (the
 * SentencePiece leading-space strip) behave as in a full decode; text ending in an incomplete
 * UTF-8 sequence (byte-fallback or byte-level pieces, shown as U+FFFD) is held back until complete.
 */
export class StreamDecoder {
  private readonly ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;
  private emitted = '';

  constructor(
    private readonly tokenizer: TextTokenizer,
    private readonly skipSpecialTokens = true,
  ) {}

  /** Adds one id; returns the text that became printable (often ''). */
  push(id: number): string {
    this.ids.push(id);
    const before = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset), this.skipSpecialTokens);
    const after = this.tokenizer.decode(this.ids.slice(this.prefixOffset), this.skipSpecialTokens);
    if (after.length <= before.length || !after.startsWith(before) || after.endsWith('\uFFFD')) return '';
    const delta = after.slice(before.length);
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    this.emitted += delta;
    return delta;
  }

  /** Whatever is still held back (e.g. a trailing incomplete character), once no more ids come. */
  flush(): string {
    const full = this.tokenizer.decode(this.ids, this.skipSpecialTokens);
    if (!full.startsWith(this.emitted)) return '';
    const rest = full.slice(this.emitted.length);
    this.emitted = full;
    return rest;
  }

  /** All text emitted so far. */
  get text(): string {
    return this.emitted;
  }
}
