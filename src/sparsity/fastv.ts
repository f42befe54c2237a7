/**
 * FastV-style token pruning (design doc section 5): layers 0 .. L-1 see every token; at layer
 * L - 1 each image token is scored by the last prompt token's attention to it, averaged over the
 * query heads, and only the `budget` best image tokens (or those above the knee) go on to layer L.
 *
 * Also home of `TokenSelectionPolicy`, the part every token policy shares: the budget, the
 * selection before layer L, and the report.
 */
import type { LayerExtras } from '../models/llama.js';
import { CorematchingError } from '../io/errors.js';
import type { PrefillContext, SparsityPolicy, SparsityReport } from './policy.js';
import { keptPromptPositions, resolveBudget, selectByBudget } from './knee.js';
import { checkLayers, resolvePolicyOptions, type PolicyOptions } from './options.js';

/** SparsityReport plus the core-neuron indices, present when `reportNeuronIndices` is set. */
export interface DetailedSparsityReport extends SparsityReport {
  /** layer -> ascending core-neuron indices used while decoding. */
  coreNeuronIndices?: Record<number, number[]>;
}

export abstract class TokenSelectionPolicy implements SparsityPolicy {
  abstract readonly name: string;
  readonly pruneEarlyKv: boolean;
  readonly options: PolicyOptions;
  protected context: PrefillContext | undefined;
  /** Kept image tokens (grid indices, ascending) once chosen in this request. */
  protected keptImage: number[] | null = null;
  private scores: Float64Array | null = null;

  /** `selectsTokens` false: a policy that never drops a token (e.g. neurons only). */
  constructor(options: Partial<PolicyOptions> = {}, protected readonly selectsTokens = true) {
    this.options = resolvePolicyOptions(options);
    this.pruneEarlyKv = selectsTokens && this.options.pruneEarlyKv;
  }

  /** Layer whose output feeds the selection (L - 1). */
  protected get scoringLayer(): number {
    return this.options.tokenLayer - 1;
  }

  begin(context: PrefillContext): void {
    this.context = context;
    this.keptImage = null;
    this.scores = null;
    if (this.selectsTokens) {
      checkLayers(this.options, context.numLayers, true, false);
      if (context.imageTokens > 0) resolveBudget(this.options.budget, context.imageTokens);
    }
  }

  protected get ctx(): PrefillContext {
    if (this.context === undefined) throw new CorematchingError(`policy ${this.name} was used before begin()`);
    return this.context;
  }

  /** Keeps the image tokens the budget picks from `scores` (one per image token, grid order). */
  protected choose(scores: ArrayLike<number>): void {
    this.scores = Float64Array.from(scores);
    this.keptImage = selectByBudget(scores, this.options.budget, this.options.minKeep);
  }

  /** The image-token scores of the last request (null before selection or without scores). */
  imageTokenScores(): Float64Array | null {
    return this.scores;
  }

  prefillExtras(_layer: number): LayerExtras {
    return {};
  }
  afterFfn(_layer: number, _activations: Float32Array, _tokens: number): void {}
  afterAttention(_layer: number, _lastAttention: Float32Array, _values: Float32Array): void {}

  selectTokens(layer: number): number[] | null {
    if (!this.selectsTokens || layer !== this.options.tokenLayer) return null;
    const c = this.ctx;
    if (c.imageTokens === 0) return null;
    if (this.keptImage === null) throw new CorematchingError(`policy ${this.name}: no image-token selection was made before layer ${layer}`);
    return keptPromptPositions(c.promptLength, c.imageStart, c.imageTokens, this.keptImage);
  }

  decodeNeurons(_layer: number): number[] | null {
    return null;
  }

  protected coreNeuronReport(): Pick<DetailedSparsityReport, 'coreNeurons' | 'coreNeuronIndices'> {
    return { coreNeurons: {} };
  }

  report(): DetailedSparsityReport {
    const v = this.context?.imageTokens ?? 0;
    const kept = this.selectsTokens && this.keptImage !== null ? [...this.keptImage] : Array.from({ length: v }, (_, i) => i);
    return { policy: this.name, keptImageTokens: kept, imageTokens: v, ...this.coreNeuronReport() };
  }
}

/** FastV: mean over heads of layer L-1's attention from the last prompt token to each image token. */
export class FastVPolicy extends TokenSelectionPolicy {
  readonly name: string = 'fastv';

  override prefillExtras(layer: number): LayerExtras {
    return layer === this.scoringLayer ? { lastAttention: true } : {};
  }

  override afterAttention(layer: number, lastAttention: Float32Array, _values: Float32Array): void {
    if (layer !== this.scoringLayer) return;
    const { imageStart, imageTokens, promptLength } = this.ctx;
    const cached = promptLength; // layers before L hold every prompt token
    const heads = lastAttention.length / cached;
    if (!Number.isInteger(heads) || heads < 1) {
      throw new CorematchingError(`policy ${this.name}: attention of ${lastAttention.length} values does not cover ${cached} cached tokens`);
    }
    const scores = new Float64Array(imageTokens);
    for (let h = 0; h < heads; h++) {
      const row = h * cached + imageStart;
      for (let i = 0; i < imageTokens; i++) scores[i]! += lastAttention[row + i]!;
    }
    for (let i = 0; i < imageTokens; i++) scores[i]! /= heads;
    this.choose(scores);
  }
}
