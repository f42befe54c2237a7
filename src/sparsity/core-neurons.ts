/**
 * Core neurons (design doc sections 1 and 2).
 *
 * - Token-wise `C_rho(x)`: the `ceil(rho * |A+(x)|)` largest positive activations of one token
 *   (ties: lower index first), found with a quickselect on the positive values (O(D) per token,
 *   no sort), because prefill computes it for every prompt token of every sparse layer.
 * - Sentence-wise `C_rho^beta(S)`: the `ceil(beta * D)` neurons most often in `C_rho(x)` over
 *   `x in S` (ties: lower index first, never a neuron counted 0 times), by a counting pass over
 *   the (integer) counts instead of a sort.
 *
 * All results are ascending neuron indices.
 */
import { ceilCount } from './knee.js';

let scratch = new Float32Array(0);

function scratchOf(size: number): Float32Array {
  if (scratch.length < size) scratch = new Float32Array(size);
  return scratch;
}

/** Rearranges `a[0..n)` so that `a[k]` holds the value it would have sorted descending; returns it. */
function selectDescending(a: Float32Array, n: number, k: number): number {
  let lo = 0;
  let hi = n - 1;
  while (hi > lo) {
    // Median of three as the pivot value, then a Hoare partition (handles runs of equal values).
    const mid = (lo + hi) >>> 1;
    let x = a[lo]!;
    let y = a[mid]!;
    let z = a[hi]!;
    if (x < y) [x, y] = [y, x];
    if (y < z) [y, z] = [z, y];
    if (x < y) y = x;
    const pivot = y;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! > pivot) i++;
      while (a[j]! < pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    }
    // Now a[lo..j] >= pivot, a[i..hi] <= pivot, and a[j+1..i-1] == pivot.
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return a[k]!;
  }
  return a[k]!;
}

let indexScratch = new Int32Array(0);

/**
 * Writes `C_rho(x)` of the token whose activations are `acts[offset .. offset + width)` into
 * `out` (ascending neuron indices, `out.length >= width`) and returns its size.
 *
 * Fast path (branch-free, since activation signs are unpredictable and mispredicted branches cost
 * more than the arithmetic): positive float32 values order like their bit patterns read as int32,
 * so one pass builds a histogram of the top 12 bits, the bucket holding the k-th largest value
 * is found from the counts, only that bucket's values are quickselected, and a last pass keeps
 * every value >= the threshold. Ties at the threshold that must be split, and thresholds in
 * the lowest bucket (zeros, denormals), take the plain path.
 */
export function tokenCoreNeuronsInto(acts: Float32Array, rho: number, out: Int32Array, offset = 0, width = acts.length - offset): number {
  const bits = new Int32Array(acts.buffer, acts.byteOffset + offset * 4, width);
  const hist = histogram;
  hist.fill(0);
  for (let n = 0; n < width; n++) hist[bits[n]! >>> 20]!++;
  let positives = 0;
  for (let b = 1; b < 2048; b++) positives += hist[b]!;
  if (hist[0]! > 0) return plainTokenCore(acts, rho, out, offset, width);
  if (positives === 0) return 0;
  const k = Math.min(positives, ceilCount(rho, positives));
  // Bucket of the k-th largest value: `above` values lie in higher buckets.
  let bucket = 2047;
  let above = 0;
  while (above + hist[bucket]! < k) above += hist[bucket--]!;
  const inBucket = hist[bucket]!;
  const need = k - above;
  let lowest: number; // keep every value whose bits are >= lowest
  if (need === inBucket) lowest = bucket << 20;
  else {
    const values = scratchOf(inBucket);
    let m = 0;
    for (let n = 0; n < width; n++) if (bits[n]! >>> 20 === bucket) values[m++] = acts[offset + n]!;
    const threshold = selectDescending(values, m, need - 1);
    let greater = 0;
    let equal = 0;
    for (let i = 0; i < m; i++) {
      if (values[i]! > threshold) greater++;
      else if (values[i] === threshold) equal++;
    }
    if (greater + equal !== need) return plainTokenCore(acts, rho, out, offset, width);
    thresholdValue[0] = threshold;
    lowest = thresholdBits[0]!;
  }
  let size = 0;
  const limit = lowest - 1;
  for (let n = 0; n < width; n++) {
    const b = bits[n]!;
    out[size] = n;
    // b clamped at 0 (negative floats), then (lowest - 1 - b) < 0 exactly when b >= lowest.
    size += (limit - (b & ~(b >> 31))) >>> 31;
  }
  return size;
}

const histogram = new Int32Array(4096);
const thresholdValue = new Float32Array(1);
const thresholdBits = new Int32Array(thresholdValue.buffer);

/** The same set by comparisons: any tie pattern, zeros and denormals. */
function plainTokenCore(acts: Float32Array, rho: number, out: Int32Array, offset: number, width: number): number {
  const values = scratchOf(width);
  let positives = 0;
  for (let n = 0; n < width; n++) {
    const a = acts[offset + n]!;
    if (a > 0) values[positives++] = a;
  }
  if (positives === 0) return 0;
  const k = Math.min(positives, ceilCount(rho, positives));
  let size = 0;
  if (k === positives) {
    for (let n = 0; n < width; n++) if (acts[offset + n]! > 0) out[size++] = n;
    return size;
  }
  const threshold = selectDescending(values, positives, k - 1);
  let above = 0;
  for (let i = 0; i < positives; i++) if (values[i]! > threshold) above++;
  let equalQuota = k - above;
  for (let n = 0; n < width; n++) {
    const a = acts[offset + n]!;
    if (a > threshold) out[size++] = n;
    else if (a === threshold && equalQuota > 0) {
      equalQuota--;
      out[size++] = n;
    }
  }
  return size;
}

/** Calls `visit(n)` for each neuron of `C_rho(x)` (token at `acts[offset .. offset + width)`), ascending. */
export function forEachTokenCoreNeuron(acts: Float32Array, rho: number, visit: (neuron: number) => void, offset = 0, width = acts.length - offset): number {
  if (indexScratch.length < width) indexScratch = new Int32Array(width);
  const out = indexScratch;
  const size = tokenCoreNeuronsInto(acts, rho, out, offset, width);
  for (let i = 0; i < size; i++) visit(out[i]!);
  return size;
}

/** `C_rho(x)` of one token's activations: ascending neuron indices (empty when none is positive). */
export function tokenCoreNeurons(acts: ArrayLike<number>, rho: number): number[] {
  const row = acts instanceof Float32Array ? acts : Float32Array.from(acts);
  const out = new Int32Array(row.length);
  return Array.from(out.subarray(0, tokenCoreNeuronsInto(row, rho, out)));
}

/**
 * `f(n)` over a token set: how many of the given rows of `acts` ([tokens, D] row-major) have `n`
 * in their `C_rho`. `rows` defaults to every token.
 */
export function coreNeuronCounts(acts: Float32Array, tokens: number, D: number, rho: number, rows?: readonly number[]): Int32Array {
  const counts = new Int32Array(D);
  const core = new Int32Array(D);
  const count = rows === undefined ? tokens : rows.length;
  for (let r = 0; r < count; r++) {
    const row = rows === undefined ? r : rows[r]!;
    if (!(row >= 0 && row < tokens)) throw new RangeError(`token row ${row} is outside 0 .. ${tokens - 1}`);
    const size = tokenCoreNeuronsInto(acts, rho, core, row * D, D);
    for (let i = 0; i < size; i++) counts[core[i]!]!++;
  }
  return counts;
}

/** The `ceil(beta * D)` neurons with the largest counts, ties lower index first, never a zero count; ascending. */
export function topNeuronsByCount(counts: Int32Array, beta: number): number[] {
  const D = counts.length;
  const size = Math.min(D, ceilCount(beta, D));
  let max = 0;
  for (let n = 0; n < D; n++) if (counts[n]! > max) max = counts[n]!;
  // histogram[c] = how many neurons have count c; find the smallest count still (partly) taken.
  const histogram = new Int32Array(max + 1);
  for (let n = 0; n < D; n++) histogram[counts[n]!]!++;
  let taken = 0;
  let cutoff = max + 1;
  while (cutoff > 1 && taken + histogram[cutoff - 1]! <= size) taken += histogram[--cutoff]!;
  // Every count >= cutoff is taken whole; `size - taken` more neurons of count cutoff-1 (if >= 1).
  let quota = cutoff - 1 >= 1 ? size - taken : 0;
  const out: number[] = [];
  for (let n = 0; n < D; n++) {
    const c = counts[n]!;
    if (c >= cutoff) out.push(n);
    else if (c === cutoff - 1 && quota > 0) {
      quota--;
      out.push(n);
    }
  }
  return out;
}

/**
 * `C_rho^beta(S)` for the tokens `rows` (default: all `tokens`) of `acts` ([tokens, D] row-major):
 * ascending neuron indices.
 */
export function sentenceCoreNeurons(
  acts: Float32Array,
  tokens: number,
  D: number,
  rho: number,
  beta: number,
  rows?: readonly number[],
): number[] {
  if (acts.length !== tokens * D) throw new RangeError(`activations hold ${acts.length} values, expected ${tokens} x ${D}`);
  return topNeuronsByCount(coreNeuronCounts(acts, tokens, D, rho, rows), beta);
}
