/** Token log-probabilities against a direct log-softmax, and the bytes each vocabulary entry stands for. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { TextTokenizer } from '../src/io/tokenizer.js';
import { tokenBytesReader } from '../src/io/token-bytes.js';
import { tokenLogprob } from '../src/pipeline/logprobs.js';
import { fixturePath } from './helpers.js';

test('tokenLogprob equals a sorted log-softmax, ties by lower id', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: -40, max: 40 }), { minLength: 1, maxLength: 60 }), fc.nat(), fc.integer({ min: 0, max: 20 }), (values, pick, top) => {
      const logits = Float32Array.from(values, (v) => v / 4);
      const token = pick % logits.length;
      const got = tokenLogprob(logits, token, top);
      const logSum = Math.log(values.reduce((s, v) => s + Math.exp(v / 4), 0));
      assert.ok(Math.abs(got.logprob - (logits[token]! - logSum)) < 1e-9);
      const order = [...logits.keys()].sort((a, b) => logits[b]! - logits[a]! || a - b).slice(0, top);
      assert.deepEqual(got.top.map((t) => t.token), order);
      for (const t of got.top) assert.ok(Math.abs(t.logprob - (logits[t.token]! - logSum)) < 1e-9);
    }),
  );
  assert.ok(Math.abs(tokenLogprob(Float32Array.of(1000, 0), 1, 1).logprob + 1000) < 1e-6, 'no overflow with large logits');
});

test('token bytes: byte-level pieces, SentencePiece byte fallback and spaces, added tokens', () => {
  const qwen = TextTokenizer.load(fixturePath('models', 'siglip-qwen2'));
  const llama = TextTokenizer.load(fixturePath('models', 'clip-llama'));
  for (const tokenizer of [qwen, llama]) {
    // Every piece of a text with a multi-byte character: their bytes join into the text's.
    const text = 'A café, naïve — 東京 ok';
    const ids = tokenizer.encode(text, false);
    const bytes = Buffer.concat(ids.map((id) => tokenizer.tokenBytes(id)));
    const expected = Buffer.from(tokenizer.decode(ids));
    assert.ok(bytes.toString('utf8').trim() === expected.toString('utf8').trim(), `${bytes.toString('utf8')} against ${expected.toString('utf8')}`);
  }
  assert.deepEqual(Array.from(tokenBytesReader({ type: 'ByteLevel' })('Ġhi')), [0x20, 0x68, 0x69]);
  assert.deepEqual(Array.from(tokenBytesReader({ type: 'Sequence', decoders: [{ type: 'ByteFallback' }] })('<0xE2>')), [0xe2]);
  assert.deepEqual(Array.from(tokenBytesReader({ type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }] })('▁to')), [0x20, 0x74, 0x6f]);
  assert.deepEqual(Array.from(tokenBytesReader({ type: 'ByteLevel' })('<|im_end|>')), Array.from(Buffer.from('<|im_end|>')));
  assert.equal(qwen.tokenBytes(10 ** 7).length, 0);
});
