/**
 * int8 and int4 weights: the quantizers' arithmetic, ONNX Runtime's products on them against the
 * dequantized weights, and what they cost against transformers' fp32 references (committed
 * checkpoints and the shipped model). The full per-reference table is
 * `npm run bench:formats`; the shipped model's 1,000-question accuracy is in the README.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { defaultModelDir } from '../src/io/default-model.js';
import { decodeImage } from '../src/io/image.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import ort from 'onnxruntime-node';
import { GraphBuilder } from '../src/graph/builder.js';
import { weightedLinear } from '../src/graph/ops.js';
import { GraphSession, tensor } from '../src/graph/session.js';
import { dequantizeInt4Row, quantizeInt4, quantizeLinear, quantizeRows } from '../src/models/quantize.js';
import { quantizedLinearFeeds, type WeightSource } from '../src/models/weights.js';
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
  });
  test('an unknown weight format is an error', async () => {
    await assert.rejects(VisionLanguageModel.load(fixturePath('models', 'clip-llama'), { weights: 'int3' as 'int8' }), /weights must be one of fp32, int8, int4, got "int3"/);
  });
});

describe('quantizing a checkpoint a slice of rows at a time', () => {
  // Two matrices stacked row-wise (as q/k/v are), 70 inputs (int4: two whole blocks and a padded one).
  const [rows, inFeatures] = [[5, 3], 70];
  const matrices: Record<string, Float32Array> = {
    a: Float32Array.from({ length: 5 * 70 }, (_, i) => Math.sin(i * 0.7) * (1 + (i % 4))),
    b: Float32Array.from({ length: 3 * 70 }, (_, i) => Math.cos(i * 1.1) * (1 + (i % 3))),
  };
  const source: WeightSource = {
    dir: 'memory',
    has: (name) => name in matrices,
    read: (name) => matrices[name]!.slice(),
    readTemporary: (name) => matrices[name]!.slice(),
    readRowsTemporary: (name, [, width], first, count) => matrices[name]!.slice(first * width, (first + count) * width),
  };
  const whole = new Float32Array([...matrices.a!, ...matrices.b!]);
  for (const format of ['int8', 'int4'] as const) {
    test(`${format}: two rows a slice gives the feeds of the whole stacked matrix`, () => {
      const sliced = quantizedLinearFeeds('w', source, ['a', 'b'], rows, inFeatures, format, 2 * inFeatures);
      const q = format === 'int4' ? quantizeInt4(whole, 8, inFeatures) : quantizeLinear(whole, 8, inFeatures);
      assert.deepEqual(sliced.w!.dims, q.values.dims);
      assert.deepEqual(sliced.w!.data, q.values.data);
      assert.deepEqual(sliced.w_scale!.data, q.scales.data);
    });
  }
});

describe('int4 quantization', () => {
  // 70 inputs: two whole blocks of 32 and a padded one of 6.
  const [out, inFeatures] = [5, 70];
  const w = Float32Array.from({ length: out * inFeatures }, (_, i) => Math.sin(i * 1.3) * (1 + (i % 5)));
  const q = quantizeInt4(w, out, inFeatures);
  test('blocks of 32 along each row, every value within half a step of W', () => {
    assert.deepEqual(q.values.dims, [out, 3, 16]);
    assert.equal(q.scales.dims[0], out * 3);
    const row = new Float32Array(inFeatures);
    for (let o = 0; o < out; o++) {
      dequantizeInt4Row(q, o, inFeatures, row);
      for (let i = 0; i < inFeatures; i++) {
        const scale = (q.scales.data as Float32Array)[o * 3 + Math.floor(i / 32)]!;
        assert.ok(Math.abs(row[i]! - w[o * inFeatures + i]!) <= scale / 2 + 1e-6, `row ${o} input ${i}`);
      }
    }
  });
  test('ONNX Runtime\'s MatMulNBits on the baked weight computes x @ dequantized(W)^T', async () => {
    const g = new GraphBuilder('int4');
    g.output('y', weightedLinear(g, g.input('x', ['m', inFeatures]), 'w', out, inFeatures, 'int4'), ['m', out]);
    const session = await GraphSession.create(g.toBytes({ w: q.values, w_scale: q.scales }));
    const x = Float32Array.from({ length: 2 * inFeatures }, (_, i) => Math.cos(i * 0.37));
    const [y] = await session.runFloat({ x: tensor(x, [2, inFeatures]) }, ['y']);
    await session.release();
    const row = new Float32Array(inFeatures);
    const expected = new Float32Array(2 * out);
    for (let o = 0; o < out; o++) {
      dequantizeInt4Row(q, o, inFeatures, row);
      for (let m = 0; m < 2; m++) for (let i = 0; i < inFeatures; i++) expected[m * out + o]! += x[m * inFeatures + i]! * row[i]!;
    }
    // accuracy_level 4 quantizes x to int8 per block: about 1% of the product's size
    assert.ok(relativeL2(y!, expected) < 0.02, `relative L2 ${relativeL2(y!, expected)}`);
  });
  test('a baked tensor must match its input\'s declared type', () => {
    const g = new GraphBuilder('bad');
    g.output('y', weightedLinear(g, g.input('x', [1, inFeatures]), 'w', out, inFeatures, 'int4'), [1, out]);
    assert.throws(() => g.toBytes({ w: new ort.Tensor('float32', new Float32Array(out * 3 * 16), [out, 3, 16]) }), /w: a float32 tensor for an input declared as type 2/);
  });
  test('token-embedding rows quantize to int8 with a scale each', () => {
    const { values, scales } = quantizeRows(w, out, inFeatures);
    for (let r = 0; r < out; r++) for (let i = 0; i < inFeatures; i++) assert.ok(Math.abs(values[r * inFeatures + i]! * scales[r]! - w[r * inFeatures + i]!) <= scales[r]! / 2 + 1e-6);
  });
});

// Measured on these random-weight models (bench:formats), against 5e-7 in fp32: int8 2-11%,
// int4 11-42% (4 bits on random weights is the worst case; the shipped model answers unchanged).
for (const [format, bound] of [['int8', 0.12], ['int4', 0.5]] as const) {
  describe(`${format} weights against transformers fp32`, () => {
    const dir = fixturePath('references');
    const files = fs.readdirSync(dir).filter((f) => f.includes('__') && f.endsWith('__0.json'));
    test(`last logits of every committed checkpoint within ${100 * bound}% relative L2`, async () => {
      for (const model of ['clip-llama', 'siglip-qwen2', 'clip-mistral']) {
        const vlm = await VisionLanguageModel.load(fixturePath('models', model), { threads: 2, weights: format });
        for (const file of files.filter((f) => f.startsWith(`${model}__`))) {
          const ref = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as { photo: string; inputIds: number[]; imageTokenStart: number };
          const tensors = new SafetensorsFile(path.join(dir, file.replace(/\.json$/, '.safetensors')));
          const pixels = vlm.processor.imageProcessor.preprocess(await decodeImage(fixturePath('photos', ref.photo))).pixelValues;
          const logits = await vlm.model.lastPromptLogits(ref.inputIds, await vlm.model.imageFeatures(pixels), ref.imageTokenStart);
          const error = relativeL2(logits, tensors.read('last_logits'));
          tensors.close();
          assert.ok(error < bound, `${file}: ${format} last logits relative L2 ${error}`);
        }
        await vlm.release();
      }
    });

    test('the shipped model answers the fixture scenes as in fp32', async () => {
      const { cases } = JSON.parse(fs.readFileSync(fixturePath('scenes', 'default-model-references.json'), 'utf8')) as {
        cases: { image: string; question: string; answer: string }[];
      };
      const vlm = await VisionLanguageModel.load(defaultModelDir(), { threads: 2, weights: format });
      let same = 0;
      for (const c of cases) {
        const result = await vlm.generate({ image: fixturePath('scenes', c.image), prompt: c.question, maxNewTokens: 8 });
        if (result.text.trim() === c.answer) same++;
      }
      await vlm.release();
      assert.ok(same >= cases.length - 2, `${same} of ${cases.length} answers as in fp32`);
    });

    test('decode-time core neurons run on it (their FFNs read again from the checkpoint)', async () => {
      const { cases } = JSON.parse(fs.readFileSync(fixturePath('scenes', 'default-model-references.json'), 'utf8')) as {
        cases: { image: string; question: string; answer: string }[];
      };
      const vlm = await VisionLanguageModel.load(defaultModelDir(), { threads: 2, weights: format });
      let same = 0;
      for (const c of cases.slice(0, 12)) {
        const result = await vlm.generate({ image: fixturePath('scenes', c.image), prompt: c.question, maxNewTokens: 8, policy: 'corematching' });
        assert.ok(Object.keys(result.sparsity?.coreNeurons ?? {}).length > 0, 'core neurons were used');
        if (result.text.trim() === c.answer) same++;
      }
      await vlm.release();
      // measured 11-12 of 12 in fp32, int8 and int4
      assert.ok(same >= 10, `${same} of 12 answers as dense fp32`);
    });
  });
}
