/**
 * Average pooling of the image-token grid (the `pool` baseline): before the decoder's first
 * layer, the grid is average-pooled down to the budget, as plain downsampling does in LLaVA-style
 * models (2x2 pooling gives 64 of 256 tokens). It scores nothing, so the token layer does not
 * apply and the knee budget has nothing to threshold.
 *
 * The output grid is the gh x gw with gh * gw = K that fits the image grid and is closest to its
 * aspect ratio (ties: more rows); when no such factor pair of K fits, the largest smaller count
 * that has one. Windows are those of PyTorch's adaptive_avg_pool2d (rows floor(i H / gh) ..
 * ceil((i + 1) H / gh), columns alike). Like every token policy here, a kept token keeps a prompt
 * position: each pooled token takes the place (and RoPE position) of its window's first, top-left
 * token, and the window's other tokens are removed before layer 0.
 */
import { CorematchingError } from '../io/errors.js';
import type { PrefillContext } from './policy.js';
import { keptPromptPositions, resolveBudget } from './knee.js';
import type { PolicyOptions } from './options.js';
import { TokenSelectionPolicy } from './token-selection.js';

/** One pooled token: its window's rows [rowStart, rowEnd) and columns [colStart, colEnd). */
export interface PoolWindow {
  rowStart: number;
  rowEnd: number;
  colStart: number;
  colEnd: number;
}

/** The output grid (rows, columns) for `k` pooled tokens of a `height` x `width` grid. */
export function pooledGrid(height: number, width: number, k: number): { rows: number; cols: number } {
  const aspect = Math.log(height / width);
  for (let count = Math.min(k, height * width); count >= 1; count--) {
    let best: { rows: number; cols: number } | null = null;
    let bestDistance = Infinity;
    for (let rows = count; rows >= 1; rows--) {
      if (count % rows !== 0) continue;
      const cols = count / rows;
      if (rows > height || cols > width) continue;
      const distance = Math.abs(Math.log(rows / cols) - aspect);
      if (distance < bestDistance - 1e-12) {
        best = { rows, cols };
        bestDistance = distance;
      }
    }
    if (best !== null) return best;
  }
  throw new CorematchingError(`cannot pool a ${height} x ${width} grid to ${k} tokens`);
}

/** adaptive_avg_pool2d's windows of a `height` x `width` grid pooled to `rows` x `cols`, row-major. */
export function poolWindows(height: number, width: number, rows: number, cols: number): PoolWindow[] {
  const windows: PoolWindow[] = [];
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      windows.push({
        rowStart: Math.floor((i * height) / rows),
        rowEnd: Math.ceil(((i + 1) * height) / rows),
        colStart: Math.floor((j * width) / cols),
        colEnd: Math.ceil(((j + 1) * width) / cols),
      });
    }
  }
  return windows;
}

export class PoolPolicy extends TokenSelectionPolicy {
  readonly name = 'pool';
  private windows: PoolWindow[] = [];
  private side = 0;

  constructor(options: Readonly<PolicyOptions>) {
    super(options);
    if (options.budget === 'knee') {
      throw new CorematchingError("policy pool needs budget to be an integer K or a fraction in (0, 1), got 'knee' (pooling has no scores to find a knee in)");
    }
  }

  override begin(context: PrefillContext): void {
    super.begin(context);
    this.windows = [];
    if (context.imageTokens === 0) return;
    const side = Math.round(Math.sqrt(context.imageTokens));
    if (side * side !== context.imageTokens) {
      throw new CorematchingError(`policy pool needs a square image-token grid, got ${context.imageTokens} image tokens`);
    }
    const k = resolveBudget(this.options.budget, context.imageTokens) as number;
    const grid = pooledGrid(side, side, k);
    this.side = side;
    this.windows = poolWindows(side, side, grid.rows, grid.cols);
    this.keptImage = this.windows.map((w) => w.rowStart * side + w.colStart);
  }

  /** Writes each window's mean into its first token's row of `features` ([imageTokens, hidden]). */
  mergeImageFeatures(features: Float32Array, hiddenSize: number): void {
    const mean = new Float64Array(hiddenSize);
    for (const w of this.windows) {
      mean.fill(0);
      for (let r = w.rowStart; r < w.rowEnd; r++) {
        for (let c = w.colStart; c < w.colEnd; c++) {
          const row = features.subarray((r * this.side + c) * hiddenSize, (r * this.side + c + 1) * hiddenSize);
          for (let d = 0; d < hiddenSize; d++) mean[d]! += row[d]!;
        }
      }
      const n = (w.rowEnd - w.rowStart) * (w.colEnd - w.colStart);
      const first = (w.rowStart * this.side + w.colStart) * hiddenSize;
      for (let d = 0; d < hiddenSize; d++) features[first + d] = mean[d]! / n;
    }
  }

  override selectTokens(layer: number): number[] | null {
    const c = this.ctx;
    if (layer !== 0 || c.imageTokens === 0) return null;
    return keptPromptPositions(c.promptLength, c.imageStart, c.imageTokens, this.keptImage!);
  }

  override selectsTokensAt(layer: number): boolean {
    return layer === 0;
  }
}
