/**
 * How models see a checkpoint: named fp32 tensors, checked against the shape the config implies.
 * Also the two key layouts LLaVA checkpoints use in the wild.
 */
import ort from 'onnxruntime-node';
import { scaleOf, type WeightFormat } from '../graph/ops.js';
import { CorematchingError } from '../io/errors.js';
import { tensor } from '../graph/session.js';
import { emptyInt4, emptyInt8, quantizeInt4, quantizeInt4Rows, quantizeLinear, quantizeLinearRows } from './quantize.js';

export interface WeightSource {
  readonly dir: string;
  has(name: string): boolean;
  read(name: string, expectedShape?: number[]): Float32Array;
  /** Like read, into a buffer kept for `slot`: valid until the next read into that slot. */
  readTemporary(name: string, expectedShape: number[], slot: string): Float32Array;
  /** Rows first .. first + count of a matrix, like readTemporary. */
  readRowsTemporary(name: string, expectedShape: [number, number], first: number, count: number, slot: string): Float32Array;
}

/** Tensor-name prefixes of one checkpoint's parts. */
export interface LlavaLayout {
  vision: string;
  projector: string;
  language: string;
  lmHead: string;
}

/**
 * LLaVA checkpoints in the wild name their parts in two ways: `language_model.model.*` with
 * `language_model.lm_head.weight` (llava-hf, and what transformers 5 writes), or
 * `model.language_model.*` with `lm_head.weight` (transformers 4.52-4.57). The vision tower may
 * or may not keep CLIP/SigLIP's own `vision_model.` level.
 */
export function detectLayout(weights: WeightSource): LlavaLayout {
  const parts = [
    { language: 'language_model.model.', lmHead: 'language_model.lm_head.weight', outer: '' },
    { language: 'model.language_model.', lmHead: 'lm_head.weight', outer: 'model.' },
  ];
  const part = parts.find((p) => weights.has(`${p.language}embed_tokens.weight`));
  if (part === undefined) {
    throw new CorematchingError(
      'no language-model embedding found: expected tensor "language_model.model.embed_tokens.weight" or "model.language_model.embed_tokens.weight"',
      weights.dir,
    );
  }
  const visionCandidates = [`${part.outer}vision_tower.vision_model.`, `${part.outer}vision_tower.`];
  const vision = visionCandidates.find((p) => weights.has(`${p}embeddings.patch_embedding.weight`));
  if (vision === undefined) {
    throw new CorematchingError(`no vision tower found: expected tensor "${visionCandidates[0]}embeddings.patch_embedding.weight"`, weights.dir);
  }
  return { vision, projector: `${part.outer}multi_modal_projector.`, language: part.language, lmHead: part.lmHead };
}

/**
 * Reads a linear weight [out, in] that `linearFeeds` will convert: a temporary read when `format`
 * copies it anyway (quantized), a fresh array when fp32 keeps it.
 */
export function readLinear(source: WeightSource, name: string, shape: number[], format: WeightFormat, slot = 'linear'): Float32Array {
  return format === 'fp32' ? source.read(name, shape) : source.readTemporary(name, shape, slot);
}

/** Values per slice when a large matrix is converted a slice at a time (64 MB of fp32). */
const SLICE_VALUES = 16 * 1024 * 1024;

/**
 * Calls `each(rows, first)` over a matrix [rows, width] read a slice of rows at a time, so
 * converting a vocabulary-sized table never holds it whole in fp32.
 */
export function forEachRowSlice(
  source: WeightSource,
  name: string,
  rows: number,
  width: number,
  each: (slice: Float32Array, first: number) => void,
  sliceValues = SLICE_VALUES,
): void {
  const step = Math.max(1, Math.floor(sliceValues / width));
  for (let first = 0; first < rows; first += step) {
    const count = Math.min(step, rows - first);
    each(source.readRowsTemporary(name, [rows, width], first, count, 'rows'), first);
  }
}

/** Bytes the tensors' data take: how much a session baking them would hold. */
export function tensorBytes(tensors: Readonly<Record<string, ort.Tensor>>): number {
  return Object.values(tensors).reduce((n, t) => n + (t.data as ArrayBufferView).byteLength, 0);
}

/** Reads a tensor as an ORT tensor of the given shape. */
export function weight(source: WeightSource, name: string, shape: number[]): ort.Tensor {
  return tensor(source.read(name, shape), shape);
}

/** Reads an optional bias: present when the config says so, absent otherwise. */
export function optionalWeight(source: WeightSource, name: string, shape: number[], present: boolean): ort.Tensor | undefined {
  return present ? weight(source, name, shape) : undefined;
}

/**
 * The feeds of one linear weight for `weightedLinear` (graph/ops.ts): fp32 W [out, in] (or, with
 * `transposed`, `w` already [in, out], fp32 only), int8 B = W^T [in, out] with `${key}_scale`, or
 * int4 W in blocks with `${key}_scale`.
 */
export function linearFeeds(key: string, w: Float32Array, out: number, inFeatures: number, format: WeightFormat, transposed = false): Record<string, ort.Tensor> {
  if (format === 'fp32') return { [key]: tensor(w, transposed ? [inFeatures, out] : [out, inFeatures]) };
  if (transposed) throw new Error(`${key}: quantized weights are made from W [out, in]`);
  const q = format === 'int4' ? quantizeInt4(w, out, inFeatures) : quantizeLinear(w, out, inFeatures);
  return { [key]: q.values, [scaleOf(key)]: q.scales };
}

/**
 * The feeds `linearFeeds` would make in a quantized format from the checkpoint's matrices `names`
 * ([rows[i], inFeatures] each) stacked row-wise, converted a slice of rows at a time as they are
 * read: every output row quantizes on its own, so the whole matrix is never held in fp32.
 */
export function quantizedLinearFeeds(
  key: string,
  source: WeightSource,
  names: readonly string[],
  rows: readonly number[],
  inFeatures: number,
  format: 'int8' | 'int4',
  sliceValues = SLICE_VALUES,
): Record<string, ort.Tensor> {
  const out = rows.reduce((a, b) => a + b, 0);
  const q = format === 'int4' ? emptyInt4(out, inFeatures) : emptyInt8(out, inFeatures);
  let offset = 0;
  names.forEach((name, i) => {
    const at = offset;
    forEachRowSlice(
      source,
      name,
      rows[i]!,
      inFeatures,
      (slice, first) => (format === 'int4' ? quantizeInt4Rows(slice, at + first, inFeatures, q) : quantizeLinearRows(slice, at + first, inFeatures, q)),
      sliceValues,
    );
    offset += rows[i]!;
  });
  return { [key]: q.values, [scaleOf(key)]: q.scales };
}
