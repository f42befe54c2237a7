/**
 * CoreMatching (design doc sections 1-4): one class, two switches.
 *
 * - tokens: at layer L - 1 (L = tokenLayer) the reference core set R = C_rho^beta(S_ref) is taken
 *   from the FFN activations, every image token x is scored |A+(x) ∩ R| (match 'active'),
 *   |C_rho(x) ∩ R| (match 'core') or, as this project's variant beyond the paper, the sum of its
 *   positive activations over R (match 'weighted': how strongly, not only whether, x fires the
 *   reference's core neurons), and the budget (knee, K or fraction) picks the image tokens
 *   that go on to layer L. Text tokens are always kept.
 * - neurons: at the end of prefill, each layer l of `neuronLayers` decodes with
 *   C_l = C_rho^beta(every token layer l processed, after pruning).
 *
 * `corematching` = both, `corematching-tokens` = tokens only, `corematching-neurons` = neurons only.
 */
import { CorematchingError } from '../io/errors.js';
import type { FfnTap, PrefillContext, PrefillTaps, SparsityReport } from './policy.js';
import { forEachTokenCoreNeuron, sentenceCoreNeurons } from './core-neurons.js';
import { TokenSelectionPolicy } from './token-selection.js';
import { checkLayers, neuronLayerIndices, referencePosition, type PolicyOptions } from './options.js';

export interface CoreMatchingSwitches {
  tokens: boolean;
  neurons: boolean;
}

const NAMES: Record<string, string> = { 'true,true': 'corematching', 'true,false': 'corematching-tokens', 'false,true': 'corematching-neurons' };

export class CoreMatchingPolicy extends TokenSelectionPolicy {
  readonly name: string;
  private readonly neurons: boolean;
  private neuronLayers = new Set<number>();
  private readonly coreNeurons = new Map<number, number[]>();

  constructor(options: Readonly<PolicyOptions>, switches: CoreMatchingSwitches = { tokens: true, neurons: true }) {
    super(options, switches.tokens);
    const name = NAMES[`${switches.tokens},${switches.neurons}`];
    if (name === undefined) throw new CorematchingError('a CoreMatching policy must select tokens, neurons, or both');
    this.name = name;
    this.neurons = switches.neurons;
  }

  override begin(context: PrefillContext): void {
    super.begin(context);
    this.coreNeurons.clear();
    if (this.neurons) {
      checkLayers(this.options, context.numLayers, false, true);
      this.neuronLayers = new Set(neuronLayerIndices(this.options.neuronLayers, context.numLayers));
    }
    if (this.selectsTokens && typeof this.options.reference === 'number') referencePosition(this.options.reference, context.promptLength);
  }

  override prefillTaps(layer: number): PrefillTaps {
    const tokens = this.selectsTokens && layer === this.scoringLayer && this.ctx.imageTokens > 0;
    return tokens || (this.neurons && this.neuronLayers.has(layer)) ? { ffnActivations: true } : {};
  }

  override afterFfn(layer: number, tap: FfnTap): void {
    const { activations, tokens } = tap;
    const D = this.ctx.intermediateSize;
    if (tap.width !== D || activations.length !== tokens * D) {
      throw new CorematchingError(`policy ${this.name}: layer ${layer} returned ${activations.length} activations (${tokens} x ${tap.width}), expected ${tokens} x ${D}`);
    }
    if (this.selectsTokens && layer === this.scoringLayer && this.ctx.imageTokens > 0) this.selectImageTokens(activations, tokens);
    if (this.neurons && this.neuronLayers.has(layer)) {
      this.coreNeurons.set(layer, sentenceCoreNeurons(activations, tokens, D, this.options.rho, this.options.beta));
    }
  }

  /** The prompt positions whose core neurons form R. */
  private referenceRows(tokens: number): number[] {
    const { imageStart, imageTokens } = this.ctx;
    const r = this.options.reference;
    if (r === 'last') return [tokens - 1];
    if (r === 'all') return Array.from({ length: tokens }, (_, i) => i);
    if (r === 'text') return Array.from({ length: tokens }, (_, i) => i).filter((i) => i < imageStart || i >= imageStart + imageTokens);
    return [referencePosition(r, tokens)];
  }

  private selectImageTokens(acts: Float32Array, tokens: number): void {
    const { imageStart, imageTokens, intermediateSize: D, promptLength } = this.ctx;
    if (tokens !== promptLength) {
      throw new CorematchingError(`policy ${this.name}: layer ${this.scoringLayer} saw ${tokens} tokens, expected the whole prompt of ${promptLength}`);
    }
    const { rho, beta, match } = this.options;
    const reference = sentenceCoreNeurons(acts, tokens, D, rho, beta, this.referenceRows(tokens));
    const inR = new Uint8Array(D);
    for (const n of reference) inR[n] = 1;
    const scores = new Float64Array(imageTokens);
    const referenceIndices = Int32Array.from(reference);
    const bits = new Int32Array(acts.buffer, acts.byteOffset, acts.length);
    for (let i = 0; i < imageTokens; i++) {
      const offset = (imageStart + i) * D;
      let s = 0;
      if (match === 'active') {
        // Counts a > 0 without a branch (activation signs are unpredictable): for the float's
        // bits b, (-b & ~b) has its sign bit set exactly when b > 0, i.e. a is positive.
        for (let j = 0; j < referenceIndices.length; j++) {
          const b = bits[offset + referenceIndices[j]!]!;
          s += (-b & ~b) >>> 31;
        }
      } else if (match === 'weighted') {
        for (let j = 0; j < referenceIndices.length; j++) s += Math.max(0, acts[offset + referenceIndices[j]!]!);
      } else {
        forEachTokenCoreNeuron(acts, rho, (n) => (s += inR[n]!), offset, D);
      }
      scores[i] = s;
    }
    this.choose(scores);
  }

  override decodeNeurons(layer: number): number[] | null {
    if (!this.neurons || !this.neuronLayers.has(layer)) return null;
    const core = this.coreNeurons.get(layer);
    if (core === undefined) throw new CorematchingError(`policy ${this.name}: layer ${layer} returned no FFN activations in prefill`);
    return core;
  }

  /** Core neurons per sparse layer of the last request (ascending indices). */
  coreNeuronIndices(): Record<number, number[]> {
    return Object.fromEntries([...this.coreNeurons].map(([l, n]) => [l, [...n]]));
  }

  protected override coreNeuronReport(): Pick<SparsityReport, 'coreNeurons' | 'coreNeuronIndices'> {
    const counts = Object.fromEntries([...this.coreNeurons].map(([l, n]) => [l, n.length]));
    return this.options.reportNeuronIndices ? { coreNeurons: counts, coreNeuronIndices: this.coreNeuronIndices() } : { coreNeurons: counts };
  }
}
