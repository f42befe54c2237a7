/**
 * The pretrained-LLM testbed (scripts/build_testbed.py, docs/testbed.md) against transformers'
 * references (scripts/make_testbed_fixtures.py): prompt ids, greedy tokens (EOS included) and last
 * logits. The testbed is built, not committed, so this runs only where it exists: in
 * models/testbed, or the folder COREMATCHING_TESTBED names.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { decodeImage } from '../src/io/image.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { VisionLanguageModel } from '../src/pipeline/vision-language-model.js';
import { fixturePath, relativeL2 } from './helpers.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const dir = process.env.COREMATCHING_TESTBED ?? path.join(root, 'models', 'testbed');
const present = fs.existsSync(path.join(dir, 'config.json'));

interface Case {
  image: string;
  question: string;
  inputIds: number[];
  greedyTokens: number[];
  answer: string;
}

describe('the testbed matches transformers', { skip: present ? false : `no testbed at ${dir} (python scripts/build_testbed.py --out ${dir})` }, () => {
  const { maxNewTokens, cases } = JSON.parse(fs.readFileSync(fixturePath('testbed', 'references.json'), 'utf8')) as {
    maxNewTokens: number;
    cases: Case[];
  };
  let vlm: VisionLanguageModel;
  let logits: SafetensorsFile;
  before(async () => {
    vlm = await VisionLanguageModel.load(dir, { threads: 2 });
    logits = new SafetensorsFile(fixturePath('testbed', 'references.safetensors'));
  });
  after(async () => {
    logits.close();
    await vlm.release();
  });

  cases.forEach((c, i) => {
    test(`${c.image}: ${c.question}`, async () => {
      const result = await vlm.generate({ image: fixturePath(c.image), prompt: c.question, maxNewTokens });
      assert.deepEqual(result.promptTokens, c.inputIds, 'prompt ids');
      assert.deepEqual(result.tokens, c.greedyTokens, 'greedy tokens');
      const pixels = vlm.processor.imageProcessor.preprocess(await decodeImage(fixturePath(c.image))).pixelValues;
      const last = await vlm.model.lastPromptLogits(c.inputIds, await vlm.model.imageFeatures(pixels), c.inputIds.indexOf(vlm.config.imageTokenIndex));
      const error = relativeL2(last, logits.read(`case${i}`));
      assert.ok(error <= 1e-3, `last logits relative L2 ${error}`);
    });
  });
});
