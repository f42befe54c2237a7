/**
 * int8 weights: the quantizer's arithmetic, and what it costs against transformers' fp32
 * references (committed checkpoints and the shipped model). The full per-reference table is
 * `npm run bench:formats`; the shipped model's 1,000-question accuracy is in the README.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { defaultModelDir } from '../src/cli/default-model.js';
import { decodeImage } from '../src/io/image.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { dequantizeColumn, quantizeColumns, quantizeLinear } from '../src/models/quantize.js';
import { VisionLanguageModel } from '../src/pipeline/vision-language-model.js';
import { fixturePath, relativeL2 } from './helpers.js';

describe('int8 quantization', () => {
  const [out, inFeatures] = [5, 7];
  const w = Float32Array.from({ length: out * inFeatures }, (_, i) => Math.sin(i * 1.3) * (1 + (i % 3)));
  test('B = W^T with one scale per output, within half a step of W, in the 7-bit range', () => {
    const q = quantizeLinear(w, out, inFeatures);
    assert.deepEqual(q.values.dims, [inFeatures, out]);
    const values = q.values.data as Int8Array;
    const scales = q.scales.data as Float32Array;
    for (let o = 0; o < out; o++) {
      for (let i = 0; i < inFeatures; i++) {
        const v = values[i * out + o]!;
        assert.ok(Math.abs(v) <= 63);
        assert.ok(Math.abs(v * scales[o]! - w[o * inFeatures + i]!) <= scales[o]! / 2 + 1e-7);
      }
    }
    const column = new Float32Array(inFeatures);
    dequantizeColumn(q, 2, column);
    assert.ok(relativeL2(column, w.subarray(2 * inFeatures, 3 * inFeatures)) < 0.02);
  });
  test('a matrix already in [in, out] layout quantizes to the same B', () => {
    const transposed = Float32Array.from({ length: out * inFeatures }, (_, k) => w[(k % out) * inFeatures + Math.floor(k / out)]!);
    const [a, b] = [quantizeLinear(w, out, inFeatures), quantizeColumns(transposed, inFeatures, out)];
    assert.deepEqual(a.values.data, b.values.data);
    assert.deepEqual(a.scales.data, b.scales.data);
  });
  test('an unknown weight format is an error', async () => {
    await assert.rejects(VisionLanguageModel.load(fixturePath('models', 'clip-llama'), { weights: 'int3' as 'int8' }), /weights must be one of fp32, int8, got "int3"/);
  });
});

describe('int8 weights against transformers fp32', () => {
  const dir = fixturePath('references');
  const files = fs.readdirSync(dir).filter((f) => f.includes('__') && f.endsWith('__0.json'));
  test('last logits of every committed checkpoint within 12% relative L2', async () => {
    for (const model of ['clip-llama', 'siglip-qwen2', 'clip-mistral']) {
      const vlm = await VisionLanguageModel.load(fixturePath('models', model), { threads: 2, weights: 'int8' });
      for (const file of files.filter((f) => f.startsWith(`${model}__`))) {
        const ref = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as { photo: string; inputIds: number[]; imageTokenStart: number };
        const tensors = new SafetensorsFile(path.join(dir, file.replace(/\.json$/, '.safetensors')));
        const pixels = vlm.processor.imageProcessor.preprocess(await decodeImage(fixturePath('photos', ref.photo))).pixelValues;
        const logits = await vlm.model.lastPromptLogits(ref.inputIds, await vlm.model.imageFeatures(pixels), ref.imageTokenStart);
        const error = relativeL2(logits, tensors.read('last_logits'));
        tensors.close();
        // measured 2-11% on these random-weight models (bench:formats), against 5e-7 in fp32
        assert.ok(error < 0.12, `${file}: int8 last logits relative L2 ${error}`);
      }
      await vlm.release();
    }
  });

  test('the shipped model answers the fixture scenes as in fp32', async () => {
    const { cases } = JSON.parse(fs.readFileSync(fixturePath('scenes', 'default-model-references.json'), 'utf8')) as {
      cases: { image: string; question: string; answer: string }[];
    };
    const vlm = await VisionLanguageModel.load(defaultModelDir(), { threads: 2, weights: 'int8' });
    let same = 0;
    for (const c of cases) {
      const result = await vlm.generate({ image: fixturePath('scenes', c.image), prompt: c.question, maxNewTokens: 8 });
      if (result.text.trim() === c.answer) same++;
    }
    await vlm.release();
    assert.ok(same >= cases.length - 2, `${same} of ${cases.length} answers as in fp32`);
  });
});
