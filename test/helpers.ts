/** Shared test utilities: fixture paths and array comparisons. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CorematchingError } from '../src/io/errors.js';
import type { NativeKernels, PackedWeight } from '../src/native/kernels.js';

// Tests run from dist/test/; fixtures stay in the source tree.
const root = fileURLToPath(new URL('../../', import.meta.url));

export function fixturePath(...parts: string[]): string {
  return path.join(root, 'test', 'fixtures', ...parts);
}

export function relativeL2(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} != ${expected.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < actual.length; i++) {
    num += (actual[i]! - expected[i]!) ** 2;
    den += expected[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

export function maxAbsDiff(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} != ${expected.length}`);
  let max = 0;
  for (let i = 0; i < actual.length; i++) max = Math.max(max, Math.abs(actual[i]! - expected[i]!));
  return max;
}

const tempDirs: string[] = [];
process.on('exit', () => {
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
});

/** A fresh temporary folder, removed when the test process exits. */
export function tempDir(prefix = 'corematching-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

// Quantized loads keep converted weights in a cache folder: the tests' (and the commands they spawn)
// go to a folder of their own, never the user's.
process.env.COREMATCHING_CACHE = tempDir('cm-cache-');

/** Asserts `fn` throws a CorematchingError whose message contains every fragment. */
export function throwsWith(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof CorematchingError, `expected CorematchingError, got ${String(err)}`);
    for (const f of fragments) assert.ok(err.message.includes(f), `message "${err.message}" lacks "${f}"`);
    return true;
  });
}

/**
 * The down projection of `neurons` only, from an int8 down weight B = W^T [ffn, hidden] (a neuron
 * a row, one scale per hidden output): their rows gathered, then packed as a [hidden, neurons]
 * weight. The independent route the native gatherColumns is checked against.
 */
export function compactDown(k: NativeKernels, values: Int8Array, scales: Float32Array, neurons: Int32Array, hidden: number): PackedWeight {
  const rows = new Int8Array(neurons.length * hidden);
  neurons.forEach((n, j) => rows.set(values.subarray(n * hidden, (n + 1) * hidden), j * hidden));
  return k.packInt8(rows, scales, hidden, neurons.length);
}
