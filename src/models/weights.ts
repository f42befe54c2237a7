/**
 * How models see a checkpoint: named fp32 tensors, checked against the shape the config implies.
 * Also the two key layouts LLaVA checkpoints use in the wild.
 */
import ort from 'onnxruntime-node';
import { CorematchingError } from '../io/errors.js';
import { tensor } from '../graph/session.js';

export interface WeightSource {
  readonly dir: string;
  has(name: string): boolean;
  read(name: string, expectedShape?: number[]): Float32Array;
}

/** Tensor-name prefixes of one checkpoint's parts. */
export interface LlavaLayout {
  vision: string;
  projector: string;
  language: string;
  lmHead: string;
}

/**
 * transformers >= 4.52 saves `model.vision_tower.*`, `model.language_model.*`, `lm_head.weight`;
 * older LLaVA checkpoints (llava-hf) use `vision_tower.*`, `language_model.model.*`,
 * `language_model.lm_head.weight`.
 */
export function detectLayout(weights: WeightSource): LlavaLayout {
  if (weights.has('model.language_model.embed_tokens.weight')) {
    return { vision: 'model.vision_tower.', projector: 'model.multi_modal_projector.', language: 'model.language_model.', lmHead: 'lm_head.weight' };
  }
  if (weights.has('language_model.model.embed_tokens.weight')) {
    return { vision: 'vision_tower.', projector: 'multi_modal_projector.', language: 'language_model.model.', lmHead: 'language_model.lm_head.weight' };
  }
  throw new CorematchingError(
    'no language-model embedding found: expected tensor "model.language_model.embed_tokens.weight" or "language_model.model.embed_tokens.weight"',
    weights.dir,
  );
}

/** Reads a tensor as an ORT tensor of the given shape. */
export function weight(source: WeightSource, name: string, shape: number[]): ort.Tensor {
  return tensor(source.read(name, shape), shape);
}

/** Reads an optional bias: present when the config says so, absent otherwise. */
export function optionalWeight(source: WeightSource, name: string, shape: number[], present: boolean): ort.Tensor | undefined {
  return present ? weight(source, name, shape) : undefined;
}
