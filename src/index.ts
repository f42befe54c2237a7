/** The corematching library: load a LLaVA checkpoint folder once, generate many times. */
export { VisionLanguageModel, WEIGHT_FORMATS } from './pipeline/vision-language-model.js';
export type { WeightFormat } from './graph/ops.js';
export { LlavaProcessor, LLAVA_15_TEMPLATE } from './pipeline/processor.js';
export type { GenerateOptions, GenerateResult, LoadOptions, PhaseFlops } from './pipeline/vision-language-model.js';
export type { GenerationStats } from './pipeline/generation-loop.js';
export type { SamplingOptions } from './pipeline/sampling.js';
export { evaluate, normalizeAnswer, type EvalReport } from './pipeline/evaluate.js';
export { renderTokenMap } from './pipeline/token-map.js';
export { createPolicy, POLICY_NAMES, type PolicyName } from './sparsity/create-policy.js';
export { DEFAULT_POLICY_OPTIONS, type PolicyOptions } from './sparsity/options.js';
export type { AttentionTap, FfnTap, PrefillContext, PrefillTaps, SparsityPolicy, SparsityReport } from './sparsity/policy.js';
export { TokenSelectionPolicy } from './sparsity/token-selection.js';
export { CorematchingError } from './io/errors.js';
export { defaultModelDir } from './io/default-model.js';
export { decodeImage, type RgbImage } from './io/image.js';
export { readEvalSet, type EvalItem } from './io/eval-set.js';
export type { LlavaConfig } from './io/model-config.js';
