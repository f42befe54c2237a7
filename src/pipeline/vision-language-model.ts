/**
 * The public library API: load a checkpoint folder once, then generate many times.
 *
 *   const vlm = await VisionLanguageModel.load('path/to/llava');   // or load() for the shipped model
 *   const { text, stats } = await vlm.generate({ image: 'cat.png', prompt: 'What is this?' });
 */
import os from 'node:os';
import type { WeightFormat } from '../graph/ops.js';
import { collectGarbage } from '../util/collect-garbage.js';
import { Checkpoint } from '../io/checkpoint.js';
import { loadLlavaConfig } from '../io/config.js';
import { defaultModelDir } from '../io/default-model.js';
import { CorematchingError } from '../io/errors.js';
import { loadGenerationConfig, type GenerationConfig } from '../io/generation-config.js';
import { decodeImage } from '../io/image.js';
import type { LlavaConfig } from '../io/model-config.js';
import type { KvCache } from '../models/kv-cache.js';
import { LlavaModel } from '../models/llava.js';
import { decodeStepFlops, prefillFlops, visionFlops } from '../models/flops.js';
import { createPolicy } from '../sparsity/create-policy.js';
import { policyLayerBreaks } from '../sparsity/options.js';
import type { SparsityReport } from '../sparsity/policy.js';
import { checkGenerateOptions, isRgbImage, type GenerateOptions } from './generate-options.js';
import { generateTokens, type GenerationStats, type LayerWork } from './generation-loop.js';
import type { TokenLogprob } from './logprobs.js';
import { LlavaProcessor } from './processor.js';
import { validateSampling, type SamplingOptions } from './sampling.js';

export type { GenerateOptions } from './generate-options.js';

export interface LoadOptions {
  /** ONNX Runtime intra-op threads (default: the number of CPU cores). */
  threads?: number;
  /**
   * How linear weights are held and multiplied (default fp32): 'int8' quantizes every linear
   * layer of the vision tower, projector and decoder, and the LM head, at load time (one scale per
   * output channel) and runs them with ONNX Runtime's int8 products.
   */
  weights?: WeightFormat;
  /** Called as weights load: (done, total) steps. */
  onProgress?: (done: number, total: number) => void;
}


export interface PhaseFlops {
  vision: number;
  prefill: number;
  decodeStep: number;
}

export interface GenerateResult {
  text: string;
  /** New token ids, the stop token included when one ended generation. */
  tokens: number[];
  /** With the `logprobs` option: one entry per token of `tokens`. */
  logprobs?: TokenLogprob[];
  /** 'stop': an end-of-sequence token or a stop string ended it; 'length': maxNewTokens did. */
  finishReason: 'stop' | 'length';
  promptTokens: number[];
  imageTokens: number;
  stats: GenerationStats & { preprocessMs: number; visionMs: number; firstTokenMs: number };
  sparsity: SparsityReport & { flops: PhaseFlops; denseFlops: PhaseFlops };
}

export const WEIGHT_FORMATS: readonly WeightFormat[] = ['fp32', 'int8', 'int4'];

function weightFormat(format: unknown = 'fp32'): WeightFormat {
  if (!WEIGHT_FORMATS.includes(format as WeightFormat)) throw new CorematchingError(`weights must be one of ${WEIGHT_FORMATS.join(', ')}, got ${JSON.stringify(format)}`);
  return format as WeightFormat;
}

export class VisionLanguageModel {
  private queue: Promise<unknown> = Promise.resolve();
  /** One KV cache, reused by every request (they run one at a time). */
  private readonly cache: KvCache;

  private constructor(
    readonly config: LlavaConfig,
    readonly model: LlavaModel,
    readonly processor: LlavaProcessor,
    readonly generationConfig: GenerationConfig,
  ) {
    this.cache = model.decoder.newCache(0);
  }

  /** Loads a checkpoint folder; without one (undefined), the model shipped with the package. */
  static async load(dir?: string, options: LoadOptions = {}): Promise<VisionLanguageModel> {
    if (dir !== undefined && (typeof dir !== 'string' || dir === '')) {
      throw new CorematchingError(`load() expects a checkpoint folder path (a non-empty string) or nothing for the shipped model, got ${dir === '' ? 'an empty string' : typeof dir}`);
    }
    const config = loadLlavaConfig(dir ?? defaultModelDir());
    const processor = LlavaProcessor.load(config);
    const generationConfig = loadGenerationConfig(config.dir);
    const checkpoint = Checkpoint.open(config.dir);
    const total = LlavaModel.loadSteps(config);
    let done = 0;
    options.onProgress?.(0, total);
    const runtime = { threads: options.threads ?? os.availableParallelism() };
    let model: LlavaModel;
    try {
      const reopen = () => Checkpoint.open(config.dir);
      const onStep = () => options.onProgress?.(++done, total);
      model = await LlavaModel.load(checkpoint, config, weightFormat(options.weights), runtime, reopen, onStep, policyLayerBreaks(config.text.numHiddenLayers));
    } finally {
      checkpoint.close();
    }
    collectGarbage(); // the conversion buffers went with the checkpoint
    return new VisionLanguageModel(config, model, processor, generationConfig);
  }

  private released = false;

  /** Frees the ONNX Runtime sessions; the model cannot generate afterwards. */
  release(): Promise<void> {
    this.released = true;
    return this.queue.then(() => this.model.release());
  }

  /** Generates; concurrent calls on one model run one after another (they share its sessions and workspaces). */
  generate(options: GenerateOptions): Promise<GenerateResult> {
    const run = this.queue.then(() => this.generateNow(options));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async generateNow(options: GenerateOptions): Promise<GenerateResult> {
    if (this.released) throw new CorematchingError('generate() after release(): load the model again');
    checkGenerateOptions(options);
    options.signal?.throwIfAborted();
    const maxNewTokens = options.maxNewTokens ?? this.generationConfig.maxNewTokens ?? 128;
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw new CorematchingError(`max new tokens must be a positive integer, got ${maxNewTokens}`);
    const sampling = this.sampling(options.sampling);

    const t0 = performance.now();
    const rgb = isRgbImage(options.image) ? options.image : await decodeImage(options.image);
    const { pixelValues } = this.processor.imageProcessor.preprocess(rgb);
    const t1 = performance.now();
    const features = await this.model.imageFeatures(pixelValues);
    const t2 = performance.now();

    const processor = this.processor;
    const prompt = processor.encode(options.rawPrompt ? options.prompt : processor.renderPrompt(options.prompt));
    const imageTokens = processor.imageTokenCount;
    const context = this.config.text.maxPositionEmbeddings;
    if (prompt.ids.length >= context) {
      throw new CorematchingError(`the prompt is ${prompt.ids.length} tokens (${imageTokens} of them image tokens); the model's context is ${context} tokens`);
    }
    const c = this.config.text;
    const policy =
      typeof options.policy === 'object' ? options.policy : createPolicy(options.policy ?? 'dense', options.policyOptions ?? {}, c.numHiddenLayers);
    const eos = new Set(options.ignoreEos ? [] : [...this.config.text.eosTokenIds, ...this.generationConfig.eosTokenIds]);
    const generated = await generateTokens({
      decoder: this.model.decoder,
      cache: this.cache,
      tokenizer: processor.tokenizer,
      promptIds: prompt.ids,
      imageStart: prompt.imageStart,
      imageFeatures: features,
      imageTokens,
      policy,
      maxNewTokens: Math.min(maxNewTokens, context - prompt.ids.length),
      sampling,
      eosTokenIds: eos,
      stopStrings: options.stopStrings ?? [],
      ...(options.onText ? { onText: options.onText } : {}),
      ...(options.logprobs !== undefined ? { logprobs: options.logprobs } : {}),
      ...(options.onLogprob ? { onLogprob: options.onLogprob } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    return {
      text: generated.text,
      tokens: generated.tokens,
      ...(generated.logprobs ? { logprobs: generated.logprobs } : {}),
      finishReason: generated.finishReason,
      promptTokens: prompt.ids,
      imageTokens,
      stats: { ...generated.stats, preprocessMs: t1 - t0, visionMs: t2 - t1, firstTokenMs: t2 - t0 + generated.stats.prefillMs },
      sparsity: { ...policy.report(), ...this.flops(prompt.ids.length, generated.work) },
    };
  }

  /**
   * The decoding settings of a request: generation_config.json's, overridden field by field by
   * the caller's, as transformers' generate merges them. Greedy unless doSample ends up true.
   */
  private sampling(given: SamplingOptions = {}): SamplingOptions {
    const g = this.generationConfig;
    validateSampling(given);
    const defined = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined));
    const merged: SamplingOptions = { doSample: g.doSample, temperature: g.temperature, topK: g.topK, topP: g.topP, ...defined };
    if (!merged.doSample) return {};
    validateSampling(merged);
    return merged;
  }

  /** FLOPs of this request as run, and of the same request run dense. */
  private flops(promptLength: number, work: LayerWork): { flops: PhaseFlops; denseFlops: PhaseFlops } {
    const t = this.config.text;
    const vision = visionFlops(this.config);
    const all = Array<number>(t.numHiddenLayers).fill(promptLength);
    return {
      flops: { vision, prefill: prefillFlops(t, work.prefillTokens), decodeStep: decodeStepFlops(t, work.cachedTokens, work.ffnWidths) },
      denseFlops: { vision, prefill: prefillFlops(t, all), decodeStep: decodeStepFlops(t, all) },
    };
  }
}
