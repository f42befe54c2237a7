/**
 * End-to-end parity with Hugging Face transformers on the committed random-weight checkpoints:
 * every reference under test/fixtures/references was recorded by scripts/make_fixtures.py.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { decodeImage } from '../src/io/image.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { VisionLanguageModel } from '../src/pipeline/vision-language-model.js';
import { fixturePath, maxAbsDiff, relativeL2 } from './helpers.js';

interface Reference {
  model: string;
  photo: string;
  question: string | null;
  prompt: string;
  rawPrompt: boolean;
  inputIds: number[];
  imageTokens: number;
  imageTokenStart: number;
  greedyTokens: number[];
}

const referenceDir = fixturePath('references');
const references = fs
  .readdirSync(referenceDir)
  .filter((f) => f.includes('__') && f.endsWith('.json'))
  .map((f) => ({ file: f, ref: JSON.parse(fs.readFileSync(path.join(referenceDir, f), 'utf8')) as Reference }));
const modelNames = [...new Set(references.map((r) => r.ref.model))];

for (const modelName of modelNames) {
  describe(`parity with transformers: ${modelName}`, () => {
    let vlm: VisionLanguageModel;
    before(async () => {
      vlm = await VisionLanguageModel.load(fixturePath('models', modelName), { threads: 2 });
    });
    after(async () => {
      await vlm.release();
    });

    for (const { file, ref } of references.filter((r) => r.ref.model === modelName)) {
      test(file, async () => {
        const tensors = new SafetensorsFile(path.join(referenceDir, file.replace(/\.json$/, '.safetensors')));
        const image = await decodeImage(fixturePath('photos', ref.photo));
        const { pixelValues } = vlm.processor.imageProcessor.preprocess(image);
        assert.ok(maxAbsDiff(pixelValues, tensors.read('pixel_values')) <= 1e-3, 'pixel values within 1e-3');

        const features = await vlm.model.imageFeatures(pixelValues);
        const featureError = relativeL2(features, tensors.read('image_features'));
        assert.ok(featureError <= 1e-3, `image features relative L2 ${featureError}`);

        const result = await vlm.generate({
          image,
          prompt: ref.rawPrompt ? ref.prompt : ref.question!,
          rawPrompt: ref.rawPrompt,
          maxNewTokens: ref.greedyTokens.length,
          ignoreEos: true,
        });
        assert.deepEqual(result.promptTokens, ref.inputIds, 'input ids');
        assert.equal(result.imageTokens, ref.imageTokens);
        assert.deepEqual(result.tokens, ref.greedyTokens, 'greedy tokens');

        const logits = await vlm.model.lastPromptLogits(ref.inputIds, features, ref.imageTokenStart);
        const logitError = relativeL2(logits, tensors.read('last_logits'));
        assert.ok(logitError <= 1e-3, `last logits relative L2 ${logitError}`);
        tensors.close();
      });
    }
  });
}
