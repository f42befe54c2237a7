/** The package entry point, used the way the README shows. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { CorematchingError, defaultModelDir, POLICY_NAMES, VisionLanguageModel } from '../src/index.js';
import { fixturePath, tempDir } from './helpers.js';

test('load once, generate many times, stream text', async () => {
  const vlm = await VisionLanguageModel.load(fixturePath('models', 'siglip-qwen2'), { threads: 1 });
  const pieces: string[] = [];
  const a = await vlm.generate({ image: fixturePath('photos', 'coffee.png'), prompt: 'What is this?', maxNewTokens: 4, ignoreEos: true, onText: (t) => pieces.push(t) });
  const b = await vlm.generate({ image: fixturePath('photos', 'coffee.png'), prompt: 'What is this?', maxNewTokens: 4, ignoreEos: true, policy: 'fastv', policyOptions: { tokenLayer: 1, budget: 5 } });
  assert.equal(pieces.join(''), a.text);
  assert.equal(a.tokens.length, 4);
  assert.equal(b.sparsity.keptImageTokens.length, 5);
  assert.ok(POLICY_NAMES.includes('corematching'));
  await assert.rejects(vlm.generate({ image: fixturePath('photos', 'coffee.png'), prompt: 'x', policy: 'corematching', policyOptions: { rho: 0 } }), CorematchingError);
  await vlm.release();
});

test("the checkpoint's generation_config.json sampling settings apply unless the call overrides them", async () => {
  const original = fixturePath('models', 'siglip-qwen2');
  const sampling = tempDir('cm-genconfig-');
  for (const f of fs.readdirSync(original)) fs.symlinkSync(path.join(original, f), path.join(sampling, f));
  fs.rmSync(path.join(sampling, 'generation_config.json'));
  fs.writeFileSync(path.join(sampling, 'generation_config.json'), JSON.stringify({ do_sample: true, temperature: 1.5, top_k: 20, top_p: 0.95 }));
  const [a, b] = [await VisionLanguageModel.load(original, { threads: 1 }), await VisionLanguageModel.load(sampling, { threads: 1 })];
  const ask = { image: fixturePath('photos', 'coffee.png'), prompt: 'What is this?', maxNewTokens: 8, ignoreEos: true };
  const explicit = await a.generate({ ...ask, sampling: { doSample: true, temperature: 1.5, topK: 20, topP: 0.95, seed: 3 } });
  const greedy = await a.generate(ask);
  assert.deepEqual((await b.generate({ ...ask, sampling: { seed: 3 } })).tokens, explicit.tokens, 'the file samples');
  assert.deepEqual((await b.generate({ ...ask, sampling: { doSample: false } })).tokens, greedy.tokens, 'the call turns sampling off');
  assert.notDeepEqual(explicit.tokens, greedy.tokens);
  await Promise.all([a.release(), b.release()]);
});

test('load() without a folder is the shipped model; a wrong argument is a CorematchingError', async () => {
  const vlm = await VisionLanguageModel.load(undefined, { threads: 1 });
  assert.equal(path.resolve(vlm.config.dir), path.resolve(defaultModelDir()));
  assert.equal(path.basename(defaultModelDir()), 'default');
  await vlm.release();
  for (const bad of ['', 42, null]) {
    await assert.rejects(VisionLanguageModel.load(bad as unknown as string), (err: Error) => err instanceof CorematchingError && /checkpoint folder path/.test(err.message));
  }
});

test('a text-only prompt runs without the vision tower; a placeholder without an image is refused', async () => {
  const vlm = await VisionLanguageModel.load(undefined, { threads: 1 });
  try {
    const r = await vlm.generate({ prompt: 'What color is the triangle?', maxNewTokens: 4 });
    assert.equal(r.imageTokens, 0);
    assert.equal(r.sparsity.flops.vision, 0);
    assert.equal(r.promptTokens.length, vlm.processor.encode(vlm.processor.renderPrompt('What color is the triangle?', false), false).ids.length);
    assert.ok(!r.promptTokens.includes(vlm.processor.imageTokenId));
    for (const policy of POLICY_NAMES) {
      const sparse = await vlm.generate({ prompt: 'What color is the triangle?', maxNewTokens: 2, policy, policyOptions: policy === 'random' || policy === 'pool' ? { budget: 4 } : {} });
      assert.equal(sparse.sparsity.keptImageTokens.length, 0, policy);
    }
    await assert.rejects(vlm.generate({ prompt: 'USER: <image>\nx ASSISTANT:', rawPrompt: true }), /holds 1 <image> placeholder but no image was given/);
  } finally {
    await vlm.release();
  }
});

test('reuseCache: a conversation\'s next turn prefills only its new tokens and answers as a fresh run does', async () => {
  const vlm = await VisionLanguageModel.load(undefined, { threads: 1 });
  const image = fixturePath('scenes', 'images', 'test-000000.png');
  const turn = (text: string) => ({ role: 'user' as const, content: [{ type: 'text' as const, text }] });
  try {
    const first = await vlm.generate({ image, prompt: 'What color is the triangle?', maxNewTokens: 8, reuseCache: true });
    assert.equal(first.stats.reusedPromptTokens, 0);
    const conversation = vlm.processor.renderConversation([
      { role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'What color is the triangle?' }] },
      { role: 'assistant', content: [{ type: 'text', text: first.text }] },
      turn('How many circles are there?'),
    ]);
    const second = await vlm.generate({ image, prompt: conversation, rawPrompt: true, maxNewTokens: 8, reuseCache: true, logprobs: 0 });
    // The first prompt and every answer token but the last (sampled, never run) were cached.
    assert.equal(second.stats.reusedPromptTokens, first.promptTokens.length + first.tokens.length - 1);
    assert.equal(second.sparsity.flops.vision, 0);
    assert.equal(second.sparsity.keptImageTokens.length, 256);
    const fresh = await vlm.generate({ image, prompt: conversation, rawPrompt: true, maxNewTokens: 8, logprobs: 0 });
    assert.equal(fresh.stats.reusedPromptTokens, 0);
    assert.deepEqual(second.tokens, fresh.tokens);
    second.logprobs!.forEach((e, i) => assert.ok(Math.abs(e.logprob - fresh.logprobs![i]!.logprob) < 1e-4, `token ${i}`));
    // Another image, or a changed conversation before the end of the image, starts over.
    const other = await vlm.generate({ image: fixturePath('scenes', 'images', 'test-000001.png'), prompt: conversation, rawPrompt: true, maxNewTokens: 2, reuseCache: true });
    assert.equal(other.stats.reusedPromptTokens, 0);
    const textOnly = await vlm.generate({ prompt: 'What color is the triangle?', maxNewTokens: 2, reuseCache: true });
    assert.equal(textOnly.stats.reusedPromptTokens, 0);
  } finally {
    await vlm.release();
  }
});
