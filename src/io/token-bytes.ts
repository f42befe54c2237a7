/**
 * The bytes one vocabulary entry stands for, as OpenAI's `logprobs` report them: a token's text
 * alone can be part of a UTF-8 character (byte-level BPE, SentencePiece byte fallback), so its
 * bytes are read from the vocabulary entry the way tokenizer.json's decoder reads it.
 */
type Json = Record<string, unknown>;

/** GPT-2's bytes_to_unicode, inverted: the character a byte-level vocabulary writes for each byte. */
function byteLevelTable(): Map<string, number> {
  const direct = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const table = new Map<string, number>();
  let next = 256;
  for (let b = 0; b < 256; b++) table.set(String.fromCodePoint(direct(b) ? b : next++), b);
  return table;
}

/** The decoders of a tokenizer.json decoder entry, a Sequence flattened. */
function decoderSteps(decoder: unknown): Json[] {
  if (typeof decoder !== 'object' || decoder === null) return [];
  const d = decoder as Json;
  return d.type === 'Sequence' && Array.isArray(d.decoders) ? d.decoders.flatMap(decoderSteps) : [d];
}

/** A function from a vocabulary entry to its bytes, for the decoder of a tokenizer.json. */
export function tokenBytesReader(decoder: unknown): (token: string) => Uint8Array {
  const steps = decoderSteps(decoder);
  if (steps.some((s) => s.type === 'ByteLevel')) {
    const table = byteLevelTable();
    return (token) => {
      const chars = [...token];
      // Added tokens (special ones) are written as text, not byte-level characters.
      if (!chars.every((c) => table.has(c))) return new TextEncoder().encode(token);
      return Uint8Array.from(chars, (c) => table.get(c)!);
    };
  }
  const byteFallback = steps.some((s) => s.type === 'ByteFallback');
  const replacements = steps
    .filter((s) => s.type === 'Replace' && typeof (s.pattern as Json | undefined)?.String === 'string' && typeof s.content === 'string')
    .map((s) => [(s.pattern as Json).String as string, s.content as string] as const);
  const metaspace = steps.find((s) => s.type === 'Metaspace');
  const spaceMark = typeof metaspace?.replacement === 'string' ? metaspace.replacement : null;
  return (token) => {
    const fallback = byteFallback ? /^<0x([0-9A-Fa-f]{2})>$/.exec(token) : null;
    if (fallback) return Uint8Array.of(parseInt(fallback[1]!, 16));
    let text = token;
    for (const [from, to] of replacements) text = text.split(from).join(to);
    if (spaceMark !== null) text = text.split(spaceMark).join(' ');
    return new TextEncoder().encode(text);
  };
}
