/**
 * Prompt text -> token ids, as LlavaProcessor does it: the single image placeholder is expanded to
 * one image token per image feature, then the tokenizer's own special-token rules apply. A
 * text-only prompt has no placeholder.
 */
import { CorematchingError } from '../io/errors.js';

export interface Tokenizes {
  encode(text: string): number[];
}

export interface EncodedPrompt {
  ids: number[];
  /** Index of the first image token; image tokens are contiguous. A text-only prompt: its length. */
  imageStart: number;
  /** Image tokens in the prompt: one image's, or 0. */
  imageTokens: number;
}

export function countOccurrences(text: string, needle: string): number {
  let count = 0;
  for (let i = text.indexOf(needle); i !== -1; i = text.indexOf(needle, i + needle.length)) count++;
  return count;
}

/** A prompt with one image placeholder (`withImage`), or a text-only one with none. */
export function encodePrompt(prompt: string, imageToken: string, imageTokenId: number, imageTokens: number, tokenizer: Tokenizes, withImage = true): EncodedPrompt {
  const found = countOccurrences(prompt, imageToken);
  if (!withImage) {
    if (found !== 0) throw new CorematchingError(`the prompt holds ${found} ${imageToken} placeholder${found > 1 ? 's' : ''} but no image was given`);
    const ids = tokenizer.encode(prompt);
    if (ids.includes(imageTokenId)) throw new CorematchingError(`the prompt's text encodes to the image token (id ${imageTokenId}) but no image was given`);
    return { ids, imageStart: ids.length, imageTokens: 0 };
  }
  if (found !== 1) {
    throw new CorematchingError(`the prompt must contain exactly one ${imageToken} placeholder for the image; found ${found}`);
  }
  const ids = tokenizer.encode(prompt.replace(imageToken, imageToken.repeat(imageTokens)));
  const imageStart = ids.indexOf(imageTokenId);
  const span = ids.slice(imageStart, imageStart + imageTokens);
  if (imageStart < 0 || span.length !== imageTokens || span.some((id) => id !== imageTokenId) || ids.lastIndexOf(imageTokenId) !== imageStart + imageTokens - 1) {
    throw new CorematchingError(
      `the tokenizer did not turn ${imageToken} into ${imageTokens} contiguous image tokens (id ${imageTokenId}); is ${imageToken} an added token in tokenizer.json?`,
    );
  }
  return { ids, imageStart, imageTokens };
}
