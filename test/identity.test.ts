/**
 * CoreMatching that keeps everything is dense: every image token kept and every neuron that
 * fired (rho = 1, beta = 1) must give the dense greedy tokens. With rho < 1 the sentence core set
 * leaves out neurons that are never among a token's top activations, so it is not an identity.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { decodeImage, type RgbImage } from '../src/io/image.js';
import { VisionLanguageModel } from '../src/pipeline/vision-language-model.js';
import { fixturePath } from './helpers.js';

for (const [name, weights] of [['clip-llama', 'fp32'], ['siglip-qwen2', 'fp32'], ['clip-mistral', 'fp32'], ['clip-llama', 'int8']] as const) {
  describe(`corematching keeping everything equals dense: ${name}, ${weights} weights`, () => {
    let vlm: VisionLanguageModel;
    let image: RgbImage;
    before(async () => {
      vlm = await VisionLanguageModel.load(fixturePath('models', name), { threads: 2, weights });
      image = await decodeImage(fixturePath('photos', 'coffee.png'));
    });
    after(() => vlm.release());

    test('same greedy tokens, all image tokens kept, every layer sparse', async () => {
      const request = { image, prompt: 'What is in this picture?', maxNewTokens: 12, ignoreEos: true };
      const dense = await vlm.generate(request);
      const full = await vlm.generate({
        ...request,
        policy: 'corematching',
        policyOptions: { tokenLayer: 1, budget: dense.imageTokens, rho: 1, beta: 1, neuronLayers: 'all' },
      });
      assert.equal(full.sparsity.keptImageTokens.length, dense.imageTokens);
      assert.equal(Object.keys(full.sparsity.coreNeurons).length, vlm.config.text.numHiddenLayers);
      assert.deepEqual(full.tokens, dense.tokens);
    });
  });
}
