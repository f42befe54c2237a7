import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadLlavaConfig } from '../src/io/config.js';
import { CorematchingError } from '../src/io/errors.js';
import { loadGenerationConfig } from '../src/io/generation-config.js';
import { tempDir, throwsWith } from './helpers.js';

test('errors name the file', () => {
  assert.equal(new CorematchingError('bad', 'x.json').message, 'x.json: bad');
});

/** A temp folder holding config.json (an object is serialised; a string is written verbatim). */
function folder(config?: unknown, file = 'config.json'): string {
  const dir = tempDir('cm-cfg-');
  if (config !== undefined) {
    fs.writeFileSync(path.join(dir, file), typeof config === 'string' ? config : JSON.stringify(config));
  }
  return dir;
}


// Expected values below were produced by transformers 5.23's LlavaConfig(**config_json).

test('llava-1.5-7b-hf config', () => {
  const dir = folder({
    architectures: ['LlavaForConditionalGeneration'],
    image_token_index: 32000,
    model_type: 'llava',
    pad_token_id: 32001,
    projector_hidden_act: 'gelu',
    text_config: { max_position_embeddings: 4096, model_type: 'llama', rms_norm_eps: 1e-5, torch_dtype: 'float16', vocab_size: 32064 },
    tie_word_embeddings: false,
    vision_config: {
      hidden_size: 1024, image_size: 336, intermediate_size: 4096, model_type: 'clip_vision_model',
      num_attention_heads: 16, num_hidden_layers: 24, patch_size: 14, projection_dim: 768, vocab_size: 32000,
    },
    vision_feature_layer: -2,
    vision_feature_select_strategy: 'default',
  });
  const c = loadLlavaConfig(dir);
  assert.equal(c.dir, path.resolve(dir));
  assert.deepEqual(c.vision, {
    modelType: 'clip_vision_model', hiddenSize: 1024, intermediateSize: 4096, numHiddenLayers: 24,
    numAttentionHeads: 16, numChannels: 3, imageSize: 336, patchSize: 14, hiddenAct: 'quick_gelu', layerNormEps: 1e-5,
  });
  assert.deepEqual(c.text, {
    modelType: 'llama', vocabSize: 32064, hiddenSize: 4096, intermediateSize: 11008, numHiddenLayers: 32,
    numAttentionHeads: 32, numKeyValueHeads: 32, headDim: 128, hiddenAct: 'silu', rmsNormEps: 1e-5, ropeTheta: 10000,
    maxPositionEmbeddings: 4096, qkvBias: false, oBias: false, mlpBias: false, tieWordEmbeddings: false,
    bosTokenId: 1, eosTokenIds: [2], padTokenId: null,
  });
  assert.equal(c.imageTokenIndex, 32000);
  assert.deepEqual(c.visionFeatureLayers, [23]);
  assert.equal(c.visionFeatureSelectStrategy, 'default');
  assert.equal(c.projectorHiddenAct, 'gelu');
  assert.equal(c.projectorBias, true);
});

test('absent sub-configs get LlavaConfig defaults: CLIP-L/336 vision, LLaMA text', () => {
  const c = loadLlavaConfig(folder({ model_type: 'llava', text_config: { vocab_size: 32064 } }));
  assert.deepEqual(
    [c.vision.hiddenSize, c.vision.intermediateSize, c.vision.numHiddenLayers, c.vision.numAttentionHeads, c.vision.imageSize, c.vision.patchSize],
    [1024, 4096, 24, 16, 336, 14],
  );
  assert.equal(c.text.modelType, 'llama');
  assert.equal(c.text.maxPositionEmbeddings, 2048);
  assert.equal(c.imageTokenIndex, 32000);
  assert.deepEqual(c.visionFeatureLayers, [23]);
});

test('a vision_config without model_type is a plain CLIPVisionConfig (ViT-B/32 defaults)', () => {
  const c = loadLlavaConfig(folder({ model_type: 'llava', image_token_index: 3, vision_config: { hidden_size: 768 } }));
  assert.deepEqual(
    [c.vision.modelType, c.vision.intermediateSize, c.vision.numHiddenLayers, c.vision.imageSize, c.vision.patchSize],
    ['clip_vision_model', 3072, 12, 224, 32],
  );
});

test('Qwen2 text with SigLIP vision, feature-layer list and image_token_id spelling', () => {
  const c = loadLlavaConfig(
    folder({
      model_type: 'llava',
      image_token_id: 151646,
      vision_feature_layer: [-1, -3, 0],
      vision_feature_select_strategy: 'full',
      projector_hidden_act: 'gelu_pytorch_tanh',
      multimodal_projector_bias: false,
      text_config: {
        model_type: 'qwen2', hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14,
        num_key_value_heads: 2, rope_theta: 1e6, vocab_size: 152000, tie_word_embeddings: true, eos_token_id: [151645, 151643],
      },
      vision_config: {
        model_type: 'siglip_vision_model', hidden_size: 1152, intermediate_size: 4304, num_hidden_layers: 26,
        num_attention_heads: 16, image_size: 384, patch_size: 14,
      },
    }),
  );
  assert.deepEqual(c.vision, {
    modelType: 'siglip_vision_model', hiddenSize: 1152, intermediateSize: 4304, numHiddenLayers: 26, numAttentionHeads: 16,
    numChannels: 3, imageSize: 384, patchSize: 14, hiddenAct: 'gelu_pytorch_tanh', layerNormEps: 1e-6,
  });
  assert.deepEqual(c.text, {
    modelType: 'qwen2', vocabSize: 152000, hiddenSize: 896, intermediateSize: 4864, numHiddenLayers: 24,
    numAttentionHeads: 14, numKeyValueHeads: 2, headDim: 64, hiddenAct: 'silu', rmsNormEps: 1e-6, ropeTheta: 1e6,
    maxPositionEmbeddings: 32768, qkvBias: true, oBias: false, mlpBias: false, tieWordEmbeddings: true,
    bosTokenId: null, eosTokenIds: [151645, 151643], padTokenId: null,
  });
  assert.equal(c.imageTokenIndex, 151646);
  assert.deepEqual(c.visionFeatureLayers, [26, 24, 0]);
  assert.equal(c.visionFeatureSelectStrategy, 'full');
  assert.equal(c.projectorBias, false);
});

test('Mistral defaults: 8 KV heads, 131072 positions, no biases', () => {
  const c = loadLlavaConfig(folder({ model_type: 'llava', image_token_index: 3, text_config: { model_type: 'mistral', attention_bias: true } }));
  assert.deepEqual(
    [c.text.numKeyValueHeads, c.text.intermediateSize, c.text.maxPositionEmbeddings, c.text.qkvBias, c.text.oBias],
    [8, 14336, 131072, false, false],
  );
});

test('LLaMA biases, explicit head_dim, null bos and both RoPE spellings', () => {
  const text = {
    model_type: 'llama', hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 32,
    attention_bias: true, mlp_bias: true, bos_token_id: null, eos_token_id: [1, 2],
  };
  const newer = loadLlavaConfig(
    folder({ model_type: 'llava', image_token_index: 3, text_config: { ...text, rope_parameters: { rope_type: 'default', rope_theta: 5e5 } } }),
  );
  assert.deepEqual(
    [newer.text.headDim, newer.text.qkvBias, newer.text.oBias, newer.text.mlpBias, newer.text.bosTokenId, newer.text.eosTokenIds, newer.text.ropeTheta],
    [32, true, true, true, null, [1, 2], 5e5],
  );
  const older = loadLlavaConfig(folder({ model_type: 'llava', image_token_index: 3, text_config: { ...text, rope_theta: 5e5, rope_scaling: null } }));
  assert.equal(older.text.ropeTheta, 5e5);
  // rope_parameters without a theta falls back to the top-level rope_theta
  const mixed = loadLlavaConfig(
    folder({ model_type: 'llava', image_token_index: 3, text_config: { ...text, rope_theta: 3e5, rope_parameters: { rope_type: 'default' } } }),
  );
  assert.equal(mixed.text.ropeTheta, 3e5);
});

test('tie_word_embeddings at either level ties (LlavaConfig forwards the text_config flag)', () => {
  const top = loadLlavaConfig(folder({ model_type: 'llava', image_token_index: 3, tie_word_embeddings: true }));
  assert.equal(top.text.tieWordEmbeddings, true);
  const nested = loadLlavaConfig(folder({ model_type: 'llava', image_token_index: 3, text_config: { tie_word_embeddings: true } }));
  assert.equal(nested.text.tieWordEmbeddings, true);
  const neither = loadLlavaConfig(folder({ model_type: 'llava', image_token_index: 3, tie_word_embeddings: false }));
  assert.equal(neither.text.tieWordEmbeddings, false);
});

test('folder and file errors', () => {
  const missing = path.join(folder(), 'nope');
  throwsWith(() => loadLlavaConfig(missing), missing, 'does not exist');
  const empty = folder();
  throwsWith(() => loadLlavaConfig(empty), empty, 'config.json not found');
  throwsWith(() => loadLlavaConfig(folder('{"model_type": "llava",')), 'config.json', 'invalid JSON');
  throwsWith(() => loadLlavaConfig(folder('[1]')), 'config.json', 'JSON object');
});

test('unsupported model types name the field', () => {
  throwsWith(() => loadLlavaConfig(folder({ model_type: 'llava_next' })), 'config.json', 'unsupported model_type "llava_next"', 'expected "llava"');
  throwsWith(() => loadLlavaConfig(folder({})), 'model_type is missing', 'expected "llava"');
  throwsWith(
    () => loadLlavaConfig(folder({ model_type: 'llava', vision_config: { model_type: 'clip' } })),
    'unsupported vision_config.model_type "clip"', 'clip_vision_model',
  );
  throwsWith(
    () => loadLlavaConfig(folder({ model_type: 'llava', text_config: { model_type: 'gemma' } })),
    'unsupported text_config.model_type "gemma"', '"llama", "mistral", "qwen2"',
  );
  throwsWith(() => loadLlavaConfig(folder({ model_type: 'llava', text_config: 'llama' })), 'text_config is "llama"', 'an object');
});

test('unsupported RoPE variants are refused', () => {
  const cfg = (text: object) => folder({ model_type: 'llava', image_token_index: 3, text_config: { model_type: 'llama', ...text } });
  throwsWith(() => loadLlavaConfig(cfg({ rope_scaling: { type: 'linear', factor: 2 } })), 'unsupported RoPE type "linear"', 'text_config.rope_scaling');
  throwsWith(() => loadLlavaConfig(cfg({ rope_parameters: { rope_type: 'yarn', factor: 4, rope_theta: 1e4 } })), 'RoPE type "yarn"', 'text_config.rope_parameters');
  throwsWith(() => loadLlavaConfig(cfg({ rope_scaling: { rope_type: 'llama3', factor: 8 } })), '"llama3"');
  throwsWith(() => loadLlavaConfig(cfg({ rope_parameters: { full_attention: { rope_type: 'default' } } })), 'per-layer-type RoPE');
  throwsWith(() => loadLlavaConfig(cfg({ rope_theta: -1 })), 'text_config.rope_theta is -1', 'positive number');
});

test('bad values name the field, the value and what was expected', () => {
  const cfg = (extra: object) => folder({ model_type: 'llava', image_token_index: 3, ...extra });
  throwsWith(() => loadLlavaConfig(cfg({ text_config: { hidden_size: 'big' } })), 'text_config.hidden_size is "big"', 'positive integer');
  throwsWith(() => loadLlavaConfig(cfg({ text_config: { hidden_size: 100, num_attention_heads: 7 } })), 'text_config.hidden_size (100)', 'num_attention_heads (7)');
  throwsWith(() => loadLlavaConfig(cfg({ text_config: { num_attention_heads: 32, num_key_value_heads: 5 } })), 'num_key_value_heads is 5', 'divisor');
  throwsWith(() => loadLlavaConfig(cfg({ text_config: { model_type: 'mistral', num_key_value_heads: null } })), 'num_key_value_heads is null');
  throwsWith(() => loadLlavaConfig(cfg({ vision_config: { hidden_size: 100, num_attention_heads: 12 } })), 'vision_config.hidden_size (100)');
  throwsWith(() => loadLlavaConfig(cfg({ vision_config: { image_size: [336, 224] } })), 'vision_config.image_size is [336,224]', 'square');
  throwsWith(() => loadLlavaConfig(cfg({ vision_feature_select_strategy: 'cls' })), 'vision_feature_select_strategy "cls"', '"default", "full"');
  throwsWith(() => loadLlavaConfig(cfg({ vision_feature_layer: 25 })), 'vision_feature_layer is 25', '[-25, 24]');
  throwsWith(() => loadLlavaConfig(cfg({ vision_feature_layer: [] })), 'vision_feature_layer is []');
  throwsWith(() => loadLlavaConfig(cfg({ projector_hidden_act: 'mish' })), 'projector_hidden_act "mish"');
  throwsWith(() => loadLlavaConfig(cfg({ multimodal_projector_bias: 'yes' })), 'multimodal_projector_bias is "yes"', 'true or false');
  throwsWith(() => loadLlavaConfig(cfg({ text_config: { eos_token_id: 'x' } })), 'text_config.eos_token_id is "x"');
  throwsWith(() => loadLlavaConfig(folder({ model_type: 'llava' })), 'image token id 32000', 'vocab_size 32000');
});

test('generation_config.json: defaults when absent, parsed when present, errors when bad', () => {
  assert.deepEqual(loadGenerationConfig(folder()), {
    bosTokenId: null, eosTokenIds: [], padTokenId: null, doSample: false, temperature: 1, topK: 50, topP: 1,
    maxNewTokens: null, maxLength: null,
  });
  const dir = folder({ bos_token_id: 1, eos_token_id: [2, 32007], pad_token_id: 0, do_sample: true, temperature: 0.2, top_k: 0, top_p: 0.9, max_new_tokens: 64, max_length: 4096 }, 'generation_config.json');
  assert.deepEqual(loadGenerationConfig(dir), {
    bosTokenId: 1, eosTokenIds: [2, 32007], padTokenId: 0, doSample: true, temperature: 0.2, topK: 0, topP: 0.9,
    maxNewTokens: 64, maxLength: 4096,
  });
  assert.deepEqual(loadGenerationConfig(folder({ eos_token_id: 7 }, 'generation_config.json')).eosTokenIds, [7]);
  throwsWith(() => loadGenerationConfig(folder('{', 'generation_config.json')), 'generation_config.json', 'invalid JSON');
  throwsWith(() => loadGenerationConfig(folder({ top_p: 2 }, 'generation_config.json')), 'top_p is 2', '(0, 1]');
  throwsWith(() => loadGenerationConfig(folder({ eos_token_id: [-1] }, 'generation_config.json')), 'eos_token_id is [-1]');
});
