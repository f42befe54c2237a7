/**
 * The public library API: load a checkpoint folder once, then generate many times.
 *
 *   const vlm = await VisionLanguageModel.load('path/to/llava');   // or load() for the shipped model
 *   const { text, stats } = await vlm.generate({ image: 'cat.png', prompt: 'What is this?' });
 */
import os from 'node:os';
import path from 'node:path';
import type { WeightFormat } from '../graph/ops.js';
import { collectGarbage } from '../util/collect-garbage.js';
import { Checkpoint } from '../io/checkpoint.js';
import { loadLlavaConfig } from '../io/config.js';
import { defaultModelDir } from '../io/default-model.js';
import { CorematchingError } from '../io/errors.js';
import { loadGenerationConfig, type GenerationConfig } from '../io/generation-config.js';
import { type HubOptions, resolveModelDir } from '../io/hub.js';
import { decodeImage } from '../io/image.js';
import type { LlavaConfig } from '../io/model-config.js';
import type { KvCache } from '../models/kv-cache.js';
import { checkpointFingerprint, ConvertedCache, defaultCacheDir, engineFingerprint } from '../models/converted-cache.js';
import { LlavaModel } from '../models/llava.js';
import { decodeKernels, type DecodeKernel } from '../models/native-decode.js';
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
  /**
   * Where quantized formats keep converted weights between loads (default: $COREMATCHING_CACHE,
   * else ~/.cache/corematching); false: convert at every load. fp32 loads read the checkpoint as it is.
   */
  cacheDir?: string | false;
  /**
   * What runs the decode steps of int8/int4 models: 'native', the project's own kernels (the
   * default where they were built at install), or 'ort', ONNX Runtime's layer groups. Where native
   * kernels cannot run, decoding falls back to ONNX Runtime with a one-time warning.
   */
  decodeKernel?: DecodeKernel;
  /** How a model given by hub id (`org/name`) is found in the Hugging Face cache or downloaded. */
  hub?: HubOptions;
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
  stats: GenerationStats & {
    /** Prompt tokens taken from the previous call's KV cache (`reuseCache`), not prefilled again. */
    reusedPromptTokens: number;
    preprocessMs: number;
    visionMs: number;
    firstTokenMs: number;
  };
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

  /**
   * Loads a checkpoint folder, or a hub model id (`org/name`, when no such folder exists) from the
   * Hugging Face cache, downloading it when online; without either (undefined), the model shipped
   * with the package.
   */
  static async load(dir?: string, options: LoadOptions = {}): Promise<VisionLanguageModel> {
    if (dir !== undefined && (typeof dir !== 'string' || dir === '')) {
      throw new CorematchingError(`load() expects a checkpoint folder path or hub model id (a non-empty string) or nothing for the shipped model, got ${dir === '' ? 'an empty string' : typeof dir}`);
    }
    const format = weightFormat(options.weights);
    if (options.decodeKernel !== undefined && options.decodeKernel !== 'native' && options.decodeKernel !== 'ort') {
      throw new CorematchingError(`decodeKernel must be 'native' or 'ort', got ${JSON.stringify(options.decodeKernel)}`);
    }
    if (options.cacheDir !== undefined && options.cacheDir !== false && (typeof options.cacheDir !== 'string' || options.cacheDir === '')) {
      throw new CorematchingError(`cacheDir must be a folder path or false, got ${JSON.stringify(options.cacheDir)}`);
    }
    const folder = dir === undefined ? defaultModelDir() : await resolveModelDir(dir, options.hub);
    const config = loadLlavaConfig(folder);
    const processor = LlavaProcessor.load(config);
    const generationConfig = loadGenerationConfig(config.dir);
    const layerBreaks = policyLayerBreaks(config.text.numHiddenLayers);
    const checkpoint = Checkpoint.open(config.dir);
    const total = LlavaModel.loadSteps(config);
    let done = 0;
    options.onProgress?.(0, total);
    const runtime = { threads: options.threads ?? os.availableParallelism() };
    let cache = ConvertedCache.off();
    let model: LlavaModel;
    try {
      if (format !== 'fp32' && options.cacheDir !== false) {
        const native = decodeKernels(options.decodeKernel, format, config.text) !== null;
        const identity = { engine: engineFingerprint(), format, layerBreaks, native, checkpoint: checkpointFingerprint(config.dir) };
        cache = ConvertedCache.open(options.cacheDir ?? defaultCacheDir(), { dir: path.resolve(config.dir), format }, identity);
      }
      const reopen = () => Checkpoint.open(config.dir);
      const onStep = () => options.onProgress?.(++done, total);
      model = await LlavaModel.load(checkpoint, config, format, runtime, reopen, onStep, layerBreaks, cache, options.decodeKernel);
      cache.commit();
    } catch (err) {
      if (!cache.hit) {
        cache.abandon();
        throw err;
      }
      // E.g. a stored graph ONNX Runtime cannot read: drop the entry, so the next load converts afresh.
      cache.remove();
      if (err instanceof CorematchingError) throw err;
      throw new CorematchingError(`the converted-weight cache entry could not be used (${(err as Error).message.split('\n')[0]}); it was removed, load again to rebuild it`, cache.folder ?? '');
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
    const processor = this.processor;
    const withImage = options.image !== undefined;

    const t0 = performance.now();
    const pixelValues = withImage ? processor.imageProcessor.preprocess(isRgbImage(options.image) ? options.image : await decodeImage(options.image!)).pixelValues : null;
    const prompt = processor.encode(options.rawPrompt ? options.prompt : processor.renderPrompt(options.prompt, withImage), withImage);
    const context = this.config.text.maxPositionEmbeddings;
    if (prompt.ids.length >= context) {
      throw new CorematchingError(`the prompt is ${prompt.ids.length} tokens (${prompt.imageTokens} of them image tokens); the model's context is ${context} tokens`);
    }
    const imageKey = pixelValues === null ? null : pixelHash(pixelValues);
    // A cache is continued only under the policy and options that built it (a pruned cache is no dense run's).
    const policyKey = typeof options.policy === 'object' ? null : JSON.stringify([options.policy ?? 'dense', options.policyOptions ?? {}]);
    const reused = options.reuseCache && policyKey !== null && this.cached?.policyKey === policyKey ? this.reusablePrefix(prompt.ids, imageKey) : 0;
    const keptBefore = reused > 0 ? this.cached!.keptImageTokens : null;
    const t1 = performance.now();
    // A reused prefix holds the image's tokens already: the vision tower does not run again.
    const features = pixelValues !== null && reused === 0 ? await this.model.imageFeatures(pixelValues) : new Float32Array(0);
    const t2 = performance.now();

    const c = this.config.text;
    const policy =
      reused > 0 ? createPolicy('dense', {}, c.numHiddenLayers)
      : typeof options.policy === 'object' ? options.policy : createPolicy(options.policy ?? 'dense', options.policyOptions ?? {}, c.numHiddenLayers);
    const eos = new Set(options.ignoreEos ? [] : [...this.config.text.eosTokenIds, ...this.generationConfig.eosTokenIds]);
    this.cached = null; // until this call has filled the cache
    const generated = await generateTokens({
      decoder: this.model.decoder,
      cache: this.cache,
      reusedTokens: reused,
      tokenizer: processor.tokenizer,
      promptIds: prompt.ids,
      imageStart: prompt.imageStart,
      imageFeatures: features,
      imageTokens: reused > 0 ? 0 : prompt.imageTokens,
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
    // The last new token was sampled, never run: the cache holds the prompt and the others.
    const report = { ...policy.report(), imageTokens: prompt.imageTokens, ...(keptBefore ? { keptImageTokens: keptBefore } : {}) };
    this.cached = { ids: [...prompt.ids, ...generated.tokens.slice(0, -1)], imageKey, policyKey, imageEnd: prompt.imageStart + prompt.imageTokens, keptImageTokens: report.keptImageTokens };
    return {
      text: generated.text,
      tokens: generated.tokens,
      ...(generated.logprobs ? { logprobs: generated.logprobs } : {}),
      finishReason: generated.finishReason,
      promptTokens: prompt.ids,
      imageTokens: prompt.imageTokens,
      stats: { ...generated.stats, reusedPromptTokens: reused, preprocessMs: t1 - t0, visionMs: t2 - t1, firstTokenMs: t2 - t0 + generated.stats.prefillMs },
      sparsity: { ...report, ...this.flops(prompt.ids.length, reused, features.length > 0, generated.work) },
    };
  }

  /** What the KV cache holds after the last call: its token ids, its image, the policy that built it, where the image ends. */
  private cached: { ids: number[]; imageKey: string | null; policyKey: string | null; imageEnd: number; keptImageTokens: number[] } | null = null;

  /**
   * How many leading tokens of `ids` the cache can stand for: the longest common prefix with what
   * it holds, when the image is the same and the prefix reaches past it (beyond the image every
   * layer caches every token, so the tail can be dropped), leaving at least one token to prefill.
   */
  private reusablePrefix(ids: readonly number[], imageKey: string | null): number {
    const cached = this.cached;
    if (cached === null || cached.imageKey !== imageKey) return 0;
    let common = 0;
    while (common < cached.ids.length && common < ids.length - 1 && cached.ids[common] === ids[common]) common++;
    if (common === 0 || common < cached.imageEnd) return 0;
    this.cache.dropLast(cached.ids.length - common);
    return common;
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

  /** FLOPs of this request as run (`reused` prompt tokens not prefilled again), and of the same request run dense. */
  private flops(promptLength: number, reused: number, ranVision: boolean, work: LayerWork): { flops: PhaseFlops; denseFlops: PhaseFlops } {
    const t = this.config.text;
    const vision = ranVision ? visionFlops(this.config) : 0;
    const all = Array<number>(t.numHiddenLayers).fill(promptLength - reused);
    return {
      flops: { vision, prefill: prefillFlops(t, work.prefillTokens), decodeStep: decodeStepFlops(t, work.cachedTokens, work.ffnWidths) },
      denseFlops: { vision, prefill: prefillFlops(t, all), decodeStep: decodeStepFlops(t, work.cachedTokens.map(() => promptLength)) },
    };
  }
}

/** A fingerprint of an image's pixel values (FNV-1a over their bytes): is a turn's image the cached one? */
function pixelHash(pixels: Float32Array): string {
  const bytes = new Uint8Array(pixels.buffer, pixels.byteOffset, pixels.byteLength);
  let h = 0x811c9dc5;
  let g = 0x01000193;
  for (let i = 0; i < bytes.length; i++) {
    h = Math.imul(h ^ bytes[i]!, 0x01000193);
    g = Math.imul(g ^ bytes[i]!, 0x0100019b);
  }
  return `${pixels.length}:${(h >>> 0).toString(16)}:${(g >>> 0).toString(16)}`;
}
