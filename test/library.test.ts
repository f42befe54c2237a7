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
