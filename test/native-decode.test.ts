/**
 * Decode steps on the native kernels against ONNX Runtime's layer groups, through the library:
 * the same greedy tokens over 32 steps on the shipped model in int8 and int4, dense and with
 * CoreMatching's core-neuron FFNs; and the choice of kernel and its fallback.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CorematchingError } from '../src/io/errors.js';
import type { TextConfig } from '../src/io/model-config.js';
import { decodeKernels } from '../src/models/native-decode.js';
import { nativeKernels } from '../src/native/kernels.js';
import { VisionLanguageModel } from '../src/pipeline/vision-language-model.js';
import { fixturePath } from './helpers.js';

const { kernels, reason } = nativeKernels();
const QUESTIONS = [['test-000000.png', 'What color is the triangle?'], ['test-000001.png', 'How many circles are there?'], ['test-000002.png', 'Is there a red square?']];

describe('native decode steps', { skip: kernels === null ? reason : false }, () => {
  for (const weights of ['int8', 'int4'] as const) {
    test(`${weights}: the shipped model decodes the same 32 greedy tokens as ONNX Runtime, dense and on core neurons`, async () => {
      const [ort, native] = [
        await VisionLanguageModel.load(undefined, { threads: 1, weights, decodeKernel: 'ort', cacheDir: false }),
        await VisionLanguageModel.load(undefined, { threads: 1, weights, cacheDir: false }),
      ];
      try {
        assert.equal(ort.model.decoder.decodeKernel, 'ort');
        assert.equal(native.model.decoder.decodeKernel, 'native', 'native is the default where built');
        for (const [image, prompt] of QUESTIONS) {
          for (const policy of ['dense', 'corematching'] as const) {
            const ask = { image: fixturePath('scenes', 'images', image!), prompt: prompt!, maxNewTokens: 32, ignoreEos: true, policy };
            const [a, b] = [await ort.generate(ask), await native.generate(ask)];
            assert.equal(b.tokens.length, 32);
            assert.deepEqual(b.tokens, a.tokens, `${policy}: ${prompt}`);
            assert.deepEqual(b.sparsity.coreNeurons, a.sparsity.coreNeurons);
          }
        }
      } finally {
        await Promise.all([ort.release(), native.release()]);
      }
    });
  }

  test('a converted-weight cache keeps the native layers too: a reload decodes the same', async () => {
    const cacheDir = (await import('./helpers.js')).tempDir('cm-cache-');
    const ask = { image: fixturePath('scenes', 'images', 'test-000003.png'), prompt: 'Which side is the circle on?', maxNewTokens: 16, ignoreEos: true, policy: 'corematching' as const };
    const answers: number[][] = [];
    for (let i = 0; i < 2; i++) {
      const vlm = await VisionLanguageModel.load(undefined, { threads: 1, weights: 'int8', cacheDir });
      answers.push((await vlm.generate(ask)).tokens);
      await vlm.release();
    }
    assert.deepEqual(answers[1], answers[0]);
  });
});

test('decodeKernel: fp32 and ort decode on ONNX Runtime; a layer the native kernels cannot compute falls back; a bad value is refused', async () => {
  const config = { hiddenAct: 'silu' } as TextConfig;
  assert.equal(decodeKernels('native', 'fp32', config), null);
  assert.equal(decodeKernels('ort', 'int8', config), null);
  assert.equal(decodeKernels(undefined, 'int8', { hiddenAct: 'gelu' } as TextConfig), null);
  await assert.rejects(VisionLanguageModel.load(undefined, { weights: 'int8', decodeKernel: 'gpu' as 'ort' }), (err: Error) => err instanceof CorematchingError && /decodeKernel must be/.test(err.message));
});
