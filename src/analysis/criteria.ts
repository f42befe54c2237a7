/**
 * Comparing token-selection criteria on one prompt: how alike their scores rank the image tokens
 * (Spearman's rho) and how much of the question's target, the patches of the objects it names,
 * each keeps.
 */

/** Ranks 1..n, ties sharing their mean rank. */
function ranks(xs: ArrayLike<number>): Float64Array {
  const order = Array.from({ length: xs.length }, (_, i) => i).sort((a, b) => xs[a]! - xs[b]!);
  const out = new Float64Array(xs.length);
  for (let i = 0; i < order.length; ) {
    let j = i;
    while (j + 1 < order.length && xs[order[j + 1]!] === xs[order[i]!]) j++;
    for (let k = i; k <= j; k++) out[order[k]!] = (i + j) / 2 + 1;
    i = j + 1;
  }
  return out;
}

/** Spearman's rank correlation (Pearson's on tie-averaged ranks); 0 when either side is constant. */
export function spearman(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const [ra, rb] = [ranks(a), ranks(b)];
  const n = ra.length;
  const mean = (n + 1) / 2;
  let cov = 0;
  let va = 0;
  let vb = 0;
  for (let i = 0; i < n; i++) {
    cov += (ra[i]! - mean) * (rb[i]! - mean);
    va += (ra[i]! - mean) ** 2;
    vb += (rb[i]! - mean) ** 2;
  }
  return va > 0 && vb > 0 ? cov / Math.sqrt(va * vb) : 0;
}

/**
 * Image-token indices (row-major over a grid x grid patch grid of `patch` pixels) whose patch
 * centre lies in one of the boxes, given in the pixels of the model's view of the image.
 */
export function targetPatches(boxes: readonly (readonly number[])[], grid: number, patch: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < grid; r++) {
    for (let c = 0; c < grid; c++) {
      const [x, y] = [(c + 0.5) * patch, (r + 0.5) * patch];
      if (boxes.some(([x0, y0, x1, y1]) => x >= x0! && x <= x1! && y >= y0! && y <= y1!)) out.push(r * grid + c);
    }
  }
  return out;
}

/** Share of `target` in `kept`. */
export function keptShare(kept: readonly number[], target: readonly number[]): number {
  const set = new Set(kept);
  return target.filter((t) => set.has(t)).length / target.length;
}
