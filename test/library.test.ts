/** The package entry point, used the way the README shows. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CorematchingError, POLICY_NAMES, VisionLanguageModel } from '../src/index.js';
import { fixturePath } from './helpers.js';

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
