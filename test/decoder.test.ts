/**
 * The decoder's forward API over the preallocated KV cache, on a committed checkpoint: a prompt
 * fed in pieces (a chunk, then single decode steps) gives the logits of feeding it at once, and
 * the taps report what the layer saw.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Checkpoint } from '../src/io/checkpoint.js';
import { loadLlavaConfig } from '../src/io/config.js';
import { LlamaDecoder } from '../src/models/llama.js';
import { detectLayout } from '../src/models/weights.js';
import { VisionLanguageModel } from '../src/pipeline/vision-language-model.js';
import { fixturePath, relativeL2 } from './helpers.js';

let vlm: VisionLanguageModel;
let decoder: LlamaDecoder;
before(async () => {
  vlm = await VisionLanguageModel.load(fixturePath('models', 'siglip-qwen2'), { threads: 2 });
  decoder = vlm.model.decoder;
});
after(() => vlm.release());

const ids = Array.from({ length: 24 }, (_, i) => (i * 7919 + 5) % 1000);
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

test('a chunk, then a second chunk, then decode steps: the logits of one prefill', async () => {
  const whole = await decoder.forward(decoder.embed(ids), range(0, 24), decoder.newCache(24));
  const cache = decoder.newCache(30);
  await decoder.forward(decoder.embed(ids.slice(0, 15)), range(0, 15), cache);
  await decoder.forward(decoder.embed(ids.slice(15, 21)), range(15, 21), cache);
  let last: Float32Array | undefined;
  for (let p = 21; p < 24; p++) last = (await decoder.step(ids[p]!, p, cache)).logits;
  assert.equal(cache.length(0), 24);
  assert.ok(relativeL2(last!, whole.logits) < 1e-5, `relative L2 ${relativeL2(last!, whole.logits)}`);
});

test('taps: FFN activations of every processed row, attention over cached and new tokens', async () => {
  const c = decoder.config;
  const cache = decoder.newCache(20);
  await decoder.forward(decoder.embed(ids.slice(0, 12)), range(0, 12), cache);
  const seen: { layer: number; tokens: number; ffn: number; attention: number; sums: number[] }[] = [];
  await decoder.forward(decoder.embed(ids.slice(12, 16)), range(12, 16), cache, {
    hooks: {
      selectRows: () => null,
      selectsRowsAt: () => false,
      taps: () => ({ ffnActivations: true, lastAttention: true }),
      afterLayer: (layer, taps, tokens) => {
        const a = taps.lastAttention!;
        const keys = a.length / c.numAttentionHeads;
        const sums = range(0, c.numAttentionHeads).map((h) => a.subarray(h * keys, (h + 1) * keys).reduce((s, x) => s + x, 0));
        seen.push({ layer, tokens, ffn: taps.ffnActivations!.length, attention: a.length, sums });
      },
    },
  });
  assert.equal(seen.length, c.numHiddenLayers);
  for (const s of seen) {
    assert.equal(s.tokens, 4);
    assert.equal(s.ffn, 4 * c.intermediateSize);
    assert.equal(s.attention, c.numAttentionHeads * 16, 'every cached and new token, not the empty slots');
    for (const sum of s.sums) assert.ok(Math.abs(sum - 1) < 1e-5);
  }
});

test('rows dropped before a layer: later layers cache and see only the kept rows', async () => {
  const cache = decoder.newCache(24);
  const kept = [0, 2, 5, 9, 11];
  const result = await decoder.forward(decoder.embed(ids.slice(0, 12)), range(0, 12), cache, {
    hooks: { selectRows: (layer) => (layer === 1 ? kept : null), selectsRowsAt: (layer) => layer === 1, taps: () => ({}), afterLayer: () => {} },
  });
  assert.deepEqual(result.tokensPerLayer, [12, ...Array<number>(decoder.config.numHiddenLayers - 1).fill(5)]);
  assert.equal(cache.length(0), 12);
  assert.equal(cache.length(1), 5);
});

for (const format of ['fp32', 'int8'] as const) {
  test(`${format}: a group of layers in one session, and its layers one by one, compute the same`, async () => {
    // Loaded without layer breaks, the fixture's 3 layers are one group (the model's own load
    // breaks them where the default policies act, which for 3 layers leaves groups of one).
    const dir = fixturePath('models', 'siglip-qwen2');
    const config = loadLlavaConfig(dir);
    const source = Checkpoint.open(config.dir);
    const layout = detectLayout(source);
    const reopen = () => Checkpoint.open(config.dir);
    const grouped = await LlamaDecoder.load(source, layout.language, layout.lmHead, config.text, format, { threads: 2 }, { reopen, decodeKernel: 'ort' });
    source.close();
    const c = grouped.config;
    const run = async (oneByOne: boolean) => {
      const cache = grouped.newCache(20);
      const tokens: number[] = [];
      const hooks = {
        selectRows: () => null,
        // A layer that may drop rows keeps its group from running as one session.
        selectsRowsAt: () => oneByOne,
        taps: () => ({}),
        afterLayer: (_layer: number, _taps: object, n: number) => void tokens.push(n),
      };
      await grouped.forward(grouped.embed(ids.slice(0, 12)), range(0, 12), cache, { hooks });
      const { logits } = await grouped.forward(grouped.embed(ids.slice(12, 14)), range(12, 14), cache, { hooks });
      const step = await grouped.step(ids[14]!, 14, cache);
      // Compact core-neuron FFNs (every third neuron) in every layer: the group graph fed them.
      const neurons = range(0, c.intermediateSize).filter((i) => i % 3 === 0);
      const ffns = range(0, c.numHiddenLayers).map((l) => grouped.compactFfn(l, neurons));
      const compact = await grouped.forward(grouped.embed([ids[15]!]), [15], cache, { hooks, ffns });
      return { logits, step: step.logits, compact: compact.logits, tokens, values: range(0, c.numHiddenLayers).map((l) => cache.values(l)) };
    };
    const [group, layers] = [await run(false), await run(true)];
    await grouped.release();
    assert.ok(relativeL2(group.logits, layers.logits) < 1e-6, `relative L2 ${relativeL2(group.logits, layers.logits)}`);
    assert.ok(relativeL2(group.step, layers.step) < 1e-6, `decode step: relative L2 ${relativeL2(group.step, layers.step)}`);
    assert.ok(relativeL2(group.compact, layers.compact) < 1e-6, `compact FFNs: relative L2 ${relativeL2(group.compact, layers.compact)}`);
    assert.deepEqual(group.tokens, [...Array<number>(c.numHiddenLayers).fill(12), ...Array<number>(c.numHiddenLayers).fill(2), ...Array<number>(c.numHiddenLayers).fill(1)]);
    assert.deepEqual(group.tokens, layers.tokens);
    group.values.forEach((v, l) => assert.ok(relativeL2(v, layers.values[l]!) < 1e-6, `layer ${l} cached values`));
  });
}
