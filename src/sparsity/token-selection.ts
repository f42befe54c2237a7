/**
 * The part every token policy shares (FastV, projection, random, CoreMatching): the budget, the
 * selection of image tokens before layer L = tokenLayer, and the report. A subclass scores the
 * image tokens in its taps and calls `choose(scores)`, or sets `keptImage` itself.
 */
import { CorematchingError } from '../io/errors.js';
import type { AttentionTap, FfnTap, PrefillContext, PrefillTaps, SparsityPolicy, SparsityReport } from './policy.js';
import { keptPromptPositions, resolveBudget, selectByBudget } from './knee.js';
import { checkLayers, type PolicyOptions } from './options.js';

export abstract class TokenSelectionPolicy implements SparsityPolicy {
  abstract readonly name: string;
  readonly pruneEarlyKv: boolean;
  protected context: PrefillContext | undefined;
  /** Kept image tokens (grid indices, ascending) once chosen in this request. */
  protected keptImage: number[] | null = null;
  private scores: Float64Array | null = null;

  /** `options` as createPolicy resolved them; `selectsTokens` false: a policy that never drops a token (e.g. neurons only). */
  constructor(
    readonly options: Readonly<PolicyOptions>,
    protected readonly selectsTokens = true,
  ) {
    this.pruneEarlyKv = selectsTokens && options.pruneEarlyKv;
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

  prefillTaps(_layer: number): PrefillTaps {
    return {};
  }
  afterFfn(_layer: number, _tap: FfnTap): void {}
  afterAttention(_layer: number, _tap: AttentionTap): void {}

  selectTokens(layer: number): number[] | null {
    if (!this.selectsTokens || layer !== this.options.tokenLayer) return null;
    const c = this.ctx;
    if (c.imageTokens === 0) return null;
    if (this.keptImage === null) throw new CorematchingError(`policy ${this.name}: no image-token selection was made before layer ${layer}`);
    return keptPromptPositions(c.promptLength, c.imageStart, c.imageTokens, this.keptImage);
  }

  selectsTokensAt(layer: number): boolean {
    return this.selectsTokens && layer === this.options.tokenLayer;
  }

  decodeNeurons(_layer: number): number[] | null {
    return null;
  }

  protected coreNeuronReport(): Pick<SparsityReport, 'coreNeurons' | 'coreNeuronIndices'> {
    return { coreNeurons: {} };
  }

  report(): SparsityReport {
    const v = this.context?.imageTokens ?? 0;
    const kept = this.selectsTokens && this.keptImage !== null ? [...this.keptImage] : Array.from({ length: v }, (_, i) => i);
    return { policy: this.name, keptImageTokens: kept, imageTokens: v, ...this.coreNeuronReport() };
  }
}

/** Checks that an attention tap's arrays have the sizes its layout states. */
export function checkAttentionTap(policy: string, tap: AttentionTap): void {
  const { probs, values, tokens, heads, kvHeads, headDim } = tap;
  if (probs.length !== heads * tokens || values.length !== kvHeads * tokens * headDim || heads % kvHeads !== 0) {
    throw new CorematchingError(
      `policy ${policy}: attention [${probs.length}] and values [${values.length}] do not match ${tokens} tokens, ${heads} heads, ${kvHeads} key/value heads of size ${headDim}`,
    );
  }
}
