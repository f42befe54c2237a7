/**
 * The public library API: load a checkpoint folder once, then generate many times.
 *
 *   const vlm = await VisionLanguageModel.load('path/to/llava');
 *   const { text, stats } = await vlm.generate({ image: 'cat.png', prompt: 'What is this?' });
 */
import os from 'node:os';
import { Checkpoint } from '../io/checkpoint.js';
import { renderLlavaPrompt } from '../io/chat-template.js';
import { loadLlavaConfig } from '../io/config.js';
import { CorematchingError } from '../io/errors.js';
import { loadGenerationConfig, type GenerationConfig } from '../io/generation-config.js';
import { decodeImage, type RgbImage } from '../io/image.js';
import { ImageProcessor } from '../io/image-processor.js';
import type { LlavaConfig } from '../io/model-config.js';
import { TextTokenizer } from '../io/tokenizer.js';
import { LlavaModel } from '../models/llava.js';
import { decodeStepFlops, prefillFlops, visionFlops } from '../models/flops.js';
import { createPolicy, type PolicyName } from '../sparsity/create-policy.js';
import type { PolicyOptions } from '../sparsity/options.js';
import type { SparsityPolicy, SparsityReport } from '../sparsity/policy.js';
import { generateTokens, type GenerationStats, type LayerWork } from './generation-loop.js';
import { encodePrompt } from './prompt.js';
import { validateSampling, type SamplingOptions } from './sampling.js';

export interface LoadOptions {
  /** ONNX Runtime intra-op threads (default: the number of CPU cores). */
  threads?: number;
  /** Called as weights load: (done, total) steps. */
  onProgress?: (done: number, total: number) => void;
}

export interface GenerateOptions {
  /** A file path, encoded image bytes (JPEG/PNG/WebP), or decoded RGB pixels. */
  image: string | Uint8Array | RgbImage;
  /** The user's question, wrapped by the chat template; or, with rawPrompt, the whole prompt. */
  prompt: string;
  /** Use `prompt` verbatim; it must hold exactly one image placeholder. */
  rawPrompt?: boolean;
  maxNewTokens?: number;
  sampling?: SamplingOptions;
  /** Keep generating through end-of-sequence tokens (benchmarks, reference comparisons). */
  ignoreEos?: boolean;
  /** Generation stops when the text contains one of these; the text is cut before it. */
  stopStrings?: string[];
  /** Receives each piece of text as soon as it is printable, with the token id that completed it. */
  onText?: (text: string, tokenId: number) => void;
  /** A policy name (default 'dense') or a policy object; a fresh object per call. */
  policy?: PolicyName | SparsityPolicy;
  /** Options of a policy given by name (rho, beta, tokenLayer, budget, ...). */
  policyOptions?: Partial<PolicyOptions>;
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
  promptTokens: number[];
  imageTokens: number;
  stats: GenerationStats & { preprocessMs: number; visionMs: number; firstTokenMs: number };
  sparsity: SparsityReport & { flops: PhaseFlops; denseFlops: PhaseFlops };
}

/** Chat template used when a LLaVA folder ships none (LLaVA-1.5's conversation format). */
export const LLAVA_15_TEMPLATE = 'USER: <image>\n{question} ASSISTANT:';

const isRgbImage = (x: unknown): x is RgbImage => typeof x === 'object' && x !== null && 'data' in x && 'width' in x;

export class VisionLanguageModel {
  private constructor(
    readonly config: LlavaConfig,
    readonly model: LlavaModel,
    readonly tokenizer: TextTokenizer,
    readonly imageProcessor: ImageProcessor,
    readonly generationConfig: GenerationConfig,
    private readonly imageToken: string,
  ) {}

  private queue: Promise<unknown> = Promise.resolve();

  static async load(dir: string, options: LoadOptions = {}): Promise<VisionLanguageModel> {
    const config = loadLlavaConfig(dir);
    const tokenizer = TextTokenizer.load(config.dir);
    const imageProcessor = ImageProcessor.load(config.dir);
    const generationConfig = loadGenerationConfig(config.dir);
    const imageToken = tokenizer.idToToken(config.imageTokenIndex);
    if (imageToken === undefined) {
      throw new CorematchingError(`image_token_index ${config.imageTokenIndex} is not a token of tokenizer.json`, config.dir);
    }
    const checkpoint = Checkpoint.open(config.dir);
    const total = LlavaModel.loadSteps(config);
    let done = 0;
    options.onProgress?.(0, total);
    const runtime = { threads: options.threads ?? os.availableParallelism() };
    try {
      const model = await LlavaModel.load(checkpoint, config, runtime, () => options.onProgress?.(++done, total));
      return new VisionLanguageModel(config, model, tokenizer, imageProcessor, generationConfig, imageToken);
    } finally {
      checkpoint.close();
    }
  }

  /** Frees the ONNX Runtime sessions; the model cannot generate afterwards. */
  release(): Promise<void> {
    return this.model.release();
  }

  /** The prompt text for a question: the chat template, or the architecture's default. */
  renderPrompt(question: string): string {
    return renderLlavaPrompt(this.config.dir, question, LLAVA_15_TEMPLATE);
  }

  /** Generates; concurrent calls on one model run one after another (they share its sessions and workspaces). */
  generate(options: GenerateOptions): Promise<GenerateResult> {
    const run = this.queue.then(() => this.generateNow(options));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async generateNow(options: GenerateOptions): Promise<GenerateResult> {
    const maxNewTokens = options.maxNewTokens ?? this.generationConfig.maxNewTokens ?? 128;
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw new CorematchingError(`max new tokens must be a positive integer, got ${maxNewTokens}`);
    const sampling = options.sampling ?? {};
    validateSampling(sampling);

    const t0 = performance.now();
    const rgb = isRgbImage(options.image) ? options.image : await decodeImage(options.image);
    const { pixelValues } = this.imageProcessor.preprocess(rgb);
    const t1 = performance.now();
    const features = await this.model.imageFeatures(pixelValues);
    const t2 = performance.now();

    const text = options.rawPrompt ? options.prompt : this.renderPrompt(options.prompt);
    const imageTokens = this.model.imageTokenCount;
    const prompt = encodePrompt(text, this.imageToken, this.config.imageTokenIndex, imageTokens, this.tokenizer);
    const context = this.config.text.maxPositionEmbeddings;
    if (prompt.ids.length >= context) {
      throw new CorematchingError(`the prompt is ${prompt.ids.length} tokens (${imageTokens} of them image tokens); the model's context is ${context} tokens`);
    }
    const c = this.config.text;
    const policy =
      typeof options.policy === 'object' ? options.policy : createPolicy(options.policy ?? 'dense', options.policyOptions ?? {}, c.numHiddenLayers, c);
    const eos = new Set(options.ignoreEos ? [] : [...this.config.text.eosTokenIds, ...this.generationConfig.eosTokenIds]);
    const generated = await generateTokens({
      decoder: this.model.decoder,
      tokenizer: this.tokenizer,
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
    });
    return {
      text: generated.text,
      tokens: generated.tokens,
      promptTokens: prompt.ids,
      imageTokens,
      stats: { ...generated.stats, preprocessMs: t1 - t0, visionMs: t2 - t1, firstTokenMs: t2 - t0 + generated.stats.prefillMs },
      sparsity: { ...policy.report(), ...this.flops(prompt.ids.length, generated.work) },
    };
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
