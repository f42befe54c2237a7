/**
 * Loads <dir>/config.json into the fixed LlavaConfig shape, applying the defaults transformers 5.23
 * applies to absent fields (LlavaConfig, CLIPVisionConfig, SiglipVisionConfig, LlamaConfig,
 * MistralConfig, Qwen2Config), and rejecting anything the engine cannot run exactly.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CorematchingError } from './errors.js';
import { readJsonObject } from './json-file.js';
import type {
  Activation,
  LlavaConfig,
  TextConfig,
  TextModelType,
  VisionConfig,
  VisionModelType,
} from './model-config.js';
import { isPlainObject } from '../util/plain-object.js';

type Json = Record<string, unknown>;

const ACTIVATIONS: readonly Activation[] = ['gelu', 'gelu_pytorch_tanh', 'gelu_new', 'quick_gelu', 'silu', 'relu'];
/** ACT2FN aliases that compute the same function as a name above. */
const ACTIVATION_ALIASES: Record<string, Activation> = { swish: 'silu' };

interface VisionDefaults {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_channels: number;
  image_size: number;
  patch_size: number;
  hidden_act: Activation;
  layer_norm_eps: number;
}

const CLIP_DEFAULTS: VisionDefaults = {
  hidden_size: 768,
  intermediate_size: 3072,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  num_channels: 3,
  image_size: 224,
  patch_size: 32,
  hidden_act: 'quick_gelu',
  layer_norm_eps: 1e-5,
};

/** LlavaConfig's sub-config spec: used only when vision_config is absent entirely (a dict without
 * model_type gets plain CLIPVisionConfig defaults instead). */
const LLAVA_ABSENT_VISION_DEFAULTS: VisionDefaults = {
  ...CLIP_DEFAULTS,
  intermediate_size: 4096,
  hidden_size: 1024,
  patch_size: 14,
  image_size: 336,
  num_hidden_layers: 24,
  num_attention_heads: 16,
};

const SIGLIP_DEFAULTS: VisionDefaults = {
  hidden_size: 768,
  intermediate_size: 3072,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  num_channels: 3,
  image_size: 224,
  patch_size: 16,
  hidden_act: 'gelu_pytorch_tanh',
  layer_norm_eps: 1e-6,
};

interface TextDefaults {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  /** null: same as num_attention_heads. */
  num_key_value_heads: number | null;
  max_position_embeddings: number;
  bos_token_id: number | null;
  eos_token_id: number | null;
}

const TEXT_DEFAULTS: Record<TextModelType, TextDefaults> = {
  llama: {
    vocab_size: 32000,
    hidden_size: 4096,
    intermediate_size: 11008,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: null,
    max_position_embeddings: 2048,
    bos_token_id: 1,
    eos_token_id: 2,
  },
  mistral: {
    vocab_size: 32000,
    hidden_size: 4096,
    intermediate_size: 14336,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    max_position_embeddings: 4096 * 32,
    bos_token_id: 1,
    eos_token_id: 2,
  },
  qwen2: {
    vocab_size: 151936,
    hidden_size: 4096,
    intermediate_size: 22016,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 32,
    max_position_embeddings: 32768,
    bos_token_id: null,
    eos_token_id: null,
  },
};

/** transformers' RotaryEmbeddingConfigMixin.default_theta. */
const DEFAULT_ROPE_THETA = 10000;

export function loadLlavaConfig(dir: string): LlavaConfig {
  const abs = path.resolve(dir);
  if (!fs.existsSync(abs) || !fs.statSync(abs).isDirectory()) {
    throw new CorematchingError('model folder does not exist or is not a folder', abs);
  }
  const file = path.join(abs, 'config.json');
  if (!fs.existsSync(file)) {
    throw new CorematchingError('config.json not found; expected a Hugging Face checkpoint folder', abs);
  }
  const raw = readJsonObject(file);

  const top = new Fields(raw, '', file);
  const modelType = raw.model_type;
  if (modelType !== 'llava') {
    const found = modelType === undefined ? 'model_type is missing' : `unsupported model_type ${JSON.stringify(modelType)}`;
    throw new CorematchingError(`${found}; expected "llava"`, file);
  }

  const vision = parseVision(raw.vision_config, file);
  const text = parseText(raw.text_config, file);

  // LlavaConfig.__post_init__ forwards text_config.tie_word_embeddings to the top level, and the
  // top-level flag is what PreTrainedModel reads when tying lm_head to embed_tokens: so either one set ties.
  text.tieWordEmbeddings = top.bool('tie_word_embeddings', false) || text.tieWordEmbeddings;

  // attribute_map makes image_token_id an alias of image_token_index; it is applied after the
  // dataclass fields, so image_token_id wins when both are present.
  const imageTokenIndex =
    raw.image_token_id !== undefined ? top.int('image_token_id', 0, 0) : top.int('image_token_index', 32000, 0);
  if (imageTokenIndex >= text.vocabSize) {
    throw new CorematchingError(
      `image token id ${imageTokenIndex} is outside the text vocabulary (text_config.vocab_size ${text.vocabSize}); ` +
        'expected an id the embedding table can look up',
      file,
    );
  }

  return {
    dir: abs,
    vision,
    text,
    imageTokenIndex,
    visionFeatureLayers: featureLayers(top, vision.numHiddenLayers),
    visionFeatureSelectStrategy: top.oneOf('vision_feature_select_strategy', ['default', 'full'] as const, 'default'),
    projectorHiddenAct: top.activation('projector_hidden_act', 'gelu'),
    projectorBias: top.bool('multimodal_projector_bias', true),
  };
}

function parseVision(sub: unknown, file: string): VisionConfig {
  if (sub !== undefined && sub !== null && !isPlainObject(sub)) {
    throw new CorematchingError(`vision_config is ${JSON.stringify(sub)}; expected an object`, file);
  }
  const obj = sub ?? {};
  const f = new Fields(obj, 'vision_config.', file);
  const modelType = f.oneOf('model_type', ['clip_vision_model', 'siglip_vision_model'] as const, 'clip_vision_model');
  const d: VisionDefaults =
    modelType === 'siglip_vision_model' ? SIGLIP_DEFAULTS : sub == null ? LLAVA_ABSENT_VISION_DEFAULTS : CLIP_DEFAULTS;

  const cfg: VisionConfig = {
    modelType: modelType as VisionModelType,
    hiddenSize: f.int('hidden_size', d.hidden_size),
    intermediateSize: f.int('intermediate_size', d.intermediate_size),
    numHiddenLayers: f.int('num_hidden_layers', d.num_hidden_layers),
    numAttentionHeads: f.int('num_attention_heads', d.num_attention_heads),
    numChannels: f.int('num_channels', d.num_channels),
    imageSize: f.squareSize('image_size', d.image_size),
    patchSize: f.squareSize('patch_size', d.patch_size),
    hiddenAct: f.activation('hidden_act', d.hidden_act),
    layerNormEps: f.positive('layer_norm_eps', d.layer_norm_eps),
  };
  f.divides('num_attention_heads', cfg.numAttentionHeads, 'hidden_size', cfg.hiddenSize);
  // image_size need not be a multiple of patch_size: the stride-patch conv floors (SigLIP 384/14 -> 27x27).
  if (cfg.patchSize > cfg.imageSize) f.fail('patch_size', cfg.patchSize, `at most image_size (${cfg.imageSize})`);
  return cfg;
}

function parseText(sub: unknown, file: string): TextConfig {
  if (sub !== undefined && sub !== null && !isPlainObject(sub)) {
    throw new CorematchingError(`text_config is ${JSON.stringify(sub)}; expected an object`, file);
  }
  const f = new Fields(sub ?? {}, 'text_config.', file);
  const modelType = f.oneOf('model_type', ['llama', 'mistral', 'qwen2'] as const, 'llama');
  const d = TEXT_DEFAULTS[modelType];

  const hiddenSize = f.int('hidden_size', d.hidden_size);
  const numAttentionHeads = f.int('num_attention_heads', d.num_attention_heads);
  const numKeyValueHeads = f.nullableInt('num_key_value_heads', d.num_key_value_heads, modelType !== 'mistral');
  // head_dim: LLaMA/Mistral fill it from hidden/heads when absent or null; Qwen2 has no field
  // but its attention reads an extra head_dim key from config.json when present.
  const explicitHeadDim = f.nullableInt('head_dim', null, true);
  if (explicitHeadDim === null || modelType === 'llama') {
    // LlamaConfig.validate_architecture demands this even with an explicit head_dim.
    f.divides('num_attention_heads', numAttentionHeads, 'hidden_size', hiddenSize);
  }

  const attentionBias = modelType === 'llama' && f.bool('attention_bias', false);
  const cfg: TextConfig = {
    modelType,
    vocabSize: f.int('vocab_size', d.vocab_size),
    hiddenSize,
    intermediateSize: f.int('intermediate_size', d.intermediate_size),
    numHiddenLayers: f.int('num_hidden_layers', d.num_hidden_layers),
    numAttentionHeads,
    numKeyValueHeads: numKeyValueHeads ?? numAttentionHeads,
    headDim: explicitHeadDim ?? hiddenSize / numAttentionHeads,
    hiddenAct: f.activation('hidden_act', 'silu'),
    rmsNormEps: f.positive('rms_norm_eps', 1e-6),
    ropeTheta: ropeTheta(f),
    maxPositionEmbeddings: f.int('max_position_embeddings', d.max_position_embeddings),
    // Which bias flags each architecture honours: Qwen2 hard-codes q/k/v bias, Mistral has none,
    // LLaMA's attention_bias covers q/k/v/o and mlp_bias covers gate/up/down.
    qkvBias: modelType === 'qwen2' || attentionBias,
    oBias: attentionBias,
    mlpBias: modelType === 'llama' && f.bool('mlp_bias', false),
    tieWordEmbeddings: f.bool('tie_word_embeddings', false),
    bosTokenId: f.nullableInt('bos_token_id', d.bos_token_id, true, 0),
    eosTokenIds: f.tokenIds('eos_token_id', d.eos_token_id),
    padTokenId: f.nullableInt('pad_token_id', null, true, 0),
  };
  if (cfg.numAttentionHeads % cfg.numKeyValueHeads !== 0) {
    f.fail(
      'num_key_value_heads',
      cfg.numKeyValueHeads,
      `a divisor of num_attention_heads (${cfg.numAttentionHeads}) for grouped-query attention`,
    );
  }
  return cfg;
}

/**
 * Mirrors convert_rope_params_to_dict: legacy rope_scaling takes priority when non-empty, then
 * rope_parameters; rope_theta comes from that dict, else the top-level rope_theta, else 10000.
 * Only plain RoPE is implemented, so every scaled variant is refused rather than run wrongly.
 */
function ropeTheta(f: Fields): number {
  const scaling = f.raw('rope_scaling');
  const useScaling = isPlainObject(scaling) && Object.keys(scaling).length > 0;
  const key = useScaling ? 'rope_scaling' : 'rope_parameters';
  const params = useScaling ? scaling : f.raw('rope_parameters');
  const fallback = f.positive('rope_theta', DEFAULT_ROPE_THETA);
  if (params === undefined || params === null) return fallback;
  if (!isPlainObject(params)) f.fail(key, params, 'an object such as {"rope_type": "default", "rope_theta": 10000}');
  const p = params as Json;
  if (Object.values(p).some(isPlainObject)) {
    f.fail(key, p, 'a single RoPE setting; per-layer-type RoPE is not supported');
  }
  const ropeType = p.rope_type ?? p.type ?? 'default';
  if (ropeType !== 'default') {
    throw new CorematchingError(
      `unsupported RoPE type ${JSON.stringify(ropeType)} in ${f.prefix}${key}; only "default" (unscaled) RoPE is supported`,
      f.file,
    );
  }
  return new Fields(p, `${f.prefix}${key}.`, f.file).positive('rope_theta', fallback);
}

/** hidden_states has numLayers + 1 entries (embeddings first), so -1 is the last layer's output. */
function featureLayers(top: Fields, numLayers: number): number[] {
  const value = top.raw('vision_feature_layer') ?? -2;
  const list = Array.isArray(value) ? value : [value];
  const ok =
    list.length > 0 && list.every((i) => Number.isInteger(i) && (i as number) >= -(numLayers + 1) && (i as number) <= numLayers);
  if (!ok) {
    top.fail(
      'vision_feature_layer',
      value,
      `an integer or non-empty list of integers in [${-(numLayers + 1)}, ${numLayers}] (vision_config.num_hidden_layers = ${numLayers})`,
    );
  }
  return (list as number[]).map((i) => (i < 0 ? i + numLayers + 1 : i));
}

/** Typed reads of one config object; errors name the dotted field path, the value and what was expected. */
class Fields {
  constructor(
    private readonly obj: Json,
    readonly prefix: string,
    readonly file: string,
  ) {}

  raw(key: string): unknown {
    return this.obj[key];
  }

  fail(key: string, value: unknown, expected: string): never {
    throw new CorematchingError(`${this.prefix}${key} is ${JSON.stringify(value)}; expected ${expected}`, this.file);
  }

  int(key: string, def: number, min = 1): number {
    const v = this.obj[key] ?? (key in this.obj ? null : def);
    if (!Number.isSafeInteger(v) || (v as number) < min) {
      this.fail(key, v, min === 1 ? 'a positive integer' : `an integer >= ${min}`);
    }
    return v as number;
  }

  /** For fields transformers types as `int | None`: absent -> def; explicit null -> null when `nullAllowed`. */
  nullableInt(key: string, def: number | null, nullAllowed: boolean, min = 1): number | null {
    const v = this.obj[key];
    if (v === undefined) return def;
    if (v === null && nullAllowed) return null;
    return this.int(key, 0, min);
  }

  positive(key: string, def: number): number {
    const v = key in this.obj ? this.obj[key] : def;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) this.fail(key, v, 'a positive number');
    return v;
  }

  bool(key: string, def: boolean): boolean {
    const v = key in this.obj ? this.obj[key] : def;
    if (typeof v !== 'boolean') this.fail(key, v, 'true or false');
    return v;
  }

  oneOf<T extends string>(key: string, allowed: readonly T[], def: T): T {
    const v = key in this.obj ? this.obj[key] : def;
    if (!allowed.includes(v as T)) {
      throw new CorematchingError(
        `unsupported ${this.prefix}${key} ${JSON.stringify(v)}; expected one of ${allowed.map((a) => `"${a}"`).join(', ')}`,
        this.file,
      );
    }
    return v as T;
  }

  activation(key: string, def: Activation): Activation {
    const v = key in this.obj ? this.obj[key] : def;
    if (typeof v === 'string' && ACTIVATION_ALIASES[v] !== undefined) return ACTIVATION_ALIASES[v];
    return this.oneOf(key, ACTIVATIONS, def);
  }

  /** image_size / patch_size may be an int or an [h, w] pair; the engine handles square ones. */
  squareSize(key: string, def: number): number {
    const v = key in this.obj ? this.obj[key] : def;
    const n = Array.isArray(v) && v.length === 2 && v[0] === v[1] ? v[0] : v;
    if (!Number.isSafeInteger(n) || (n as number) < 1) this.fail(key, v, 'a positive integer or a square [n, n] pair');
    return n as number;
  }

  tokenIds(key: string, def: number | null): number[] {
    const v = key in this.obj ? this.obj[key] : def;
    if (v === null) return [];
    const list = Array.isArray(v) ? v : [v];
    if (!list.every((i) => Number.isSafeInteger(i) && (i as number) >= 0)) {
      this.fail(key, v, 'a token id, a list of token ids, or null');
    }
    return list as number[];
  }

  divides(divisorKey: string, divisor: number, key: string, value: number): void {
    if (value % divisor !== 0) {
      throw new CorematchingError(
        `${this.prefix}${key} (${value}) is not a multiple of ${this.prefix}${divisorKey} (${divisor}); expected it to divide evenly`,
        this.file,
      );
    }
  }
}
