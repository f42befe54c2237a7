/**
 * The model that ships in models/default against transformers: every question the fixture scenes
 * admit, recorded by scripts/make_default_model_fixtures.py (prompt ids, greedy answer tokens with
 * EOS, last-position logits).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { defaultModelDir } from '../src/io/default-model.js';
import { decodeImage, type RgbImage } from '../src/io/image.js';
import { VisionLanguageModel } from '../src/pipeline/vision-language-model.js';
import { fixturePath, relativeL2 } from './helpers.js';

interface Case {
  image: string;
  question: string;
  type: string;
  truth: string;
  inputIds: number[];
  greedyTokens: number[];
  answer: string;
  lastLogits: number[];
}

const { maxNewTokens, cases } = JSON.parse(fs.readFileSync(fixturePath('scenes', 'default-model-references.json'), 'utf8')) as {
  maxNewTokens: number;
  cases: Case[];
};

describe('the shipped model (models/default) matches transformers', () => {
  let vlm: VisionLanguageModel;
  const images = new Map<string, RgbImage>();
  before(async () => {
    vlm = await VisionLanguageModel.load(defaultModelDir(), { threads: 2 });
    for (const c of cases) if (!images.has(c.image)) images.set(c.image, await decodeImage(fixturePath('scenes', c.image)));
  });
  after(async () => {
    await vlm.release();
  });

  for (const c of cases) {
    test(`${c.image}: ${c.question}`, async () => {
      const image = images.get(c.image)!;
      const result = await vlm.generate({ image, prompt: c.question, maxNewTokens });
      assert.deepEqual(result.promptTokens, c.inputIds, 'prompt ids');
      assert.deepEqual(result.tokens, c.greedyTokens, 'greedy tokens');
      assert.equal(result.text.trim(), c.answer);

      const features = await vlm.model.imageFeatures(vlm.processor.imageProcessor.preprocess(image).pixelValues);
      const logits = await vlm.model.lastPromptLogits(c.inputIds, features, c.inputIds.indexOf(vlm.model.config.imageTokenIndex));
      const error = relativeL2(logits, c.lastLogits);
      assert.ok(error <= 1e-3, `last logits relative L2 ${error}`);
    });
  }
});
