/**
 * LLaVA wiring: vision tower -> feature selection -> projector -> image features in the decoder's
 * embedding space. The decoder itself is driven by the pipeline's generation loop.
 */
import type { WeightFormat } from '../graph/ops.js';
import type { RuntimeOptions } from '../graph/session.js';
import type { LlavaConfig } from '../io/model-config.js';
import { LlamaDecoder } from './llama.js';
import { Projector } from './projector.js';
import { VisionTower, visionTokenCount } from './vision-tower.js';
import type { ConvertedCache } from './converted-cache.js';
import type { DecodeKernel } from './native-decode.js';
import type { SourceOpener } from './decoder-weights.js';
import { detectLayout, type WeightSource } from './weights.js';

/** Image tokens one image becomes: the tower's tokens, less CLS under the `default` strategy. */
export function imageTokenCount(c: LlavaConfig): number {
  return visionTokenCount(c.vision) - (c.visionFeatureSelectStrategy === 'default' ? 1 : 0);
}

export class LlavaModel {
  private constructor(
    readonly config: LlavaConfig,
    readonly vision: VisionTower,
    readonly projector: Projector,
    readonly decoder: LlamaDecoder,
  ) {}

  /**
   * Loads every part, its linear weights in `format` (quantized here). The vision tower and
   * projector run int8 under int4: their products have hundreds of rows, where MatMulNBits' int4
   * is slower than int8 (bench/kernels.ts). `reopen` serves weights read after loading;
   * `layerBreaks` are decoder layers that start a new layer group (decoder-weights.ts).
   */
  static async load(
    source: WeightSource,
    config: LlavaConfig,
    format: WeightFormat,
    runtime: RuntimeOptions,
    reopen?: SourceOpener,
    onStep?: () => void,
    layerBreaks: readonly number[] = [],
    cache?: ConvertedCache,
    decodeKernel?: DecodeKernel,
  ): Promise<LlavaModel> {
    const layout = detectLayout(source);
    const imageFormat = format === 'int4' ? 'int8' : format;
    const vision = await VisionTower.load(source, layout.vision, config.vision, config.visionFeatureLayers, imageFormat, runtime, onStep, undefined, cache);
    const projector = await Projector.load(
      source,
      layout.projector,
      config.vision.hiddenSize * config.visionFeatureLayers.length,
      config.text.hiddenSize,
      config.projectorHiddenAct,
      config.projectorBias,
      imageFormat,
      runtime,
      cache,
    );
    const decoder = await LlamaDecoder.load(source, layout.language, layout.lmHead, config.text, format, runtime, { ...(reopen ? { reopen } : {}), ...(onStep ? { onLayer: onStep } : {}), layerBreaks, ...(cache ? { cache } : {}), ...(decodeKernel ? { decodeKernel } : {}) });
    return new LlavaModel(config, vision, projector, decoder);
  }

  /** Steps `load` reports through onStep, for a progress bar. */
  static loadSteps(config: LlavaConfig): number {
    return Math.max(...config.visionFeatureLayers) + config.text.numHiddenLayers;
  }

  async release(): Promise<void> {
    await Promise.all([this.vision.release(), this.projector.release(), this.decoder.release()]);
  }

  /**
   * The decoder's logits at the last position of a prompt (`ids`, image tokens included) whose
   * image tokens, from `imageStart` on, carry `imageFeatures`: the prefill generate runs, dense.
   */
  async lastPromptLogits(ids: readonly number[], imageFeatures: Float32Array, imageStart: number): Promise<Float32Array> {
    const hidden = this.decoder.embed(ids);
    hidden.set(imageFeatures, imageStart * this.decoder.config.hiddenSize);
    return (await this.decoder.forward(hidden, ids.map((_, i) => i), this.decoder.newCache(ids.length))).logits;
  }

  /** pixel values [3, H, W] -> image features [imageTokenCount(config), text hidden]. */
  async imageFeatures(pixelValues: Float32Array): Promise<Float32Array> {
    const c = this.config;
    const states = await this.vision.hiddenStates(pixelValues, c.visionFeatureLayers);
    const kept = imageTokenCount(c);
    const skip = visionTokenCount(c.vision) - kept;
    const width = c.vision.hiddenSize;
    // transformers concatenates the selected layers along the hidden dimension.
    const selected = new Float32Array(kept * width * states.length);
    for (let t = 0; t < kept; t++) {
      states.forEach((s, j) => {
        selected.set(s.subarray((t + skip) * width, (t + skip + 1) * width), (t * states.length + j) * width);
      });
    }
    return this.projector.project(selected, kept);
  }
}
