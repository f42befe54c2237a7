/**
 * The native decode kernels against an independent JavaScript computation of the same arithmetic
 * (activations quantized in blocks of 32, integer dot products, scaled), on odd sizes, on every
 * instruction-set path this CPU has; the row-subset product equals the dense one's gathered rows
 * exactly. Skipped, saying why, where the module was not built.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { compactDown } from './helpers.js';
import { nativeKernels, type KernelPath, type NativeKernels } from '../src/native/kernels.js';
import { quantizeInt4, quantizeLinear } from '../src/models/quantize.js';

const { kernels, reason } = nativeKernels();

/** A seeded generator of values in [-1, 1). */
function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

const f = Math.fround;
/** Round half to even, as C's nearbyint in the default rounding mode. */
const roundEven = (v: number) => (Math.abs(v % 1) === 0.5 ? 2 * Math.round(v / 2) : Math.round(v));

/** x quantized as the kernels do: per block of 32, scale = max |x| / 127 in float32. */
function quantizeX(x: Float32Array): { q: Int32Array; scale: Float64Array } {
  const blocks = Math.ceil(x.length / 32);
  const q = new Int32Array(blocks * 32);
  const scale = new Float64Array(blocks);
  for (let b = 0; b < blocks; b++) {
    let max = 0;
    for (let i = b * 32; i < Math.min(x.length, b * 32 + 32); i++) max = Math.max(max, Math.abs(x[i]!));
    const s = f(max / 127);
    const inv = s > 0 ? f(1 / s) : 0;
    for (let i = b * 32; i < Math.min(x.length, b * 32 + 32); i++) q[i] = roundEven(f(x[i]! * inv));
    scale[b] = s;
  }
  return { q, scale };
}

/** The reference product and each row's magnitude (the sum of |terms|, for a tolerance). */
function reference(bits: 8 | 4, w: Float32Array, rows: number, cols: number, x: Float32Array): { y: Float64Array; size: Float64Array } {
  const { q, scale } = quantizeX(x);
  const y = new Float64Array(rows);
  const size = new Float64Array(rows);
  const int8 = bits === 8 ? quantizeLinear(w, rows, cols) : undefined;
  const int4 = bits === 4 ? quantizeInt4(w, rows, cols) : undefined;
  const blocks = Math.ceil(cols / 32);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < blocks; b++) {
      let dot = 0;
      for (let i = b * 32; i < Math.min(cols, b * 32 + 32); i++) {
        const wq = int8 ? (int8.values.data as Int8Array)[i * rows + r]! : (((int4!.values.data as Uint8Array)[(r * blocks + b) * 16 + ((i % 32) >> 1)]! >> (i & 1 ? 4 : 0)) & 15) - 8;
        dot += wq * q[i]!;
      }
      const ws = int8 ? (int8.scales.data as Float32Array)[r]! : (int4!.scales.data as Float32Array)[r * blocks + b]!;
      y[r] += ws * scale[b]! * dot;
      size[r] += Math.abs(ws * scale[b]! * dot);
    }
  }
  return { y, size };
}

function pack(k: NativeKernels, bits: 8 | 4, w: Float32Array, rows: number, cols: number) {
  if (bits === 8) {
    const q = quantizeLinear(w, rows, cols);
    return k.packInt8(q.values.data as Int8Array, q.scales.data as Float32Array, rows, cols);
  }
  const q = quantizeInt4(w, rows, cols);
  return k.int4(q.values.data as Uint8Array, q.scales.data as Float32Array, rows, cols);
}

const SHAPES: [number, number][] = [[1, 32], [7, 50], [33, 96], [130, 100], [64, 896], [3, 1], [5, 160]];

describe('native decode kernels', { skip: kernels === null ? reason : false }, () => {
  const k = kernels!;
  const best = k.info().path;
  const paths: KernelPath[] = best === 'avx512-vnni' ? ['avx512-vnni', 'avx2', 'portable'] : best === 'avx2' ? ['avx2', 'portable'] : ['portable'];
  after(() => k.forcePath(best));

  for (const path of paths) {
    for (const bits of [8, 4] as const) {
      test(`${path}, int${bits}: every row and row subsets, K from 1 to 896`, () => {
        k.forcePath(path);
        for (const [rows, cols] of SHAPES) {
          const w = values(rows * cols, rows * 1000 + cols);
          const x = values(cols, cols + 7);
          const packed = pack(k, bits, w, rows, cols);
          const out = new Float32Array(rows);
          k.gemv(packed, x, out);
          const { y, size } = reference(bits, w, rows, cols, x);
          for (let r = 0; r < rows; r++) {
            assert.ok(Math.abs(out[r]! - y[r]!) <= 1e-5 * (size[r]! + 1e-6), `${rows}x${cols} row ${r}: ${out[r]} vs ${y[r]}`);
          }
          const subset = Int32Array.from({ length: Math.ceil(rows * 0.4) }, (_, i) => (i * 7 + 3) % rows);
          const sparse = new Float32Array(subset.length);
          k.gemv(packed, x, sparse, subset);
          assert.deepEqual(sparse, Float32Array.from(subset, (r) => out[r]!), 'the subset is the dense rows, bit for bit');
          const none = new Float32Array(0);
          k.gemv(packed, x, none, new Int32Array(0));
        }
      });
    }
  }

  /** Grouped-query attention in float64, straight from its definition. */
  const attention = (q: Float32Array, kc: Float32Array, vc: Float32Array, heads: number, kvHeads: number, capacity: number, keys: number) => {
    const hd = q.length / heads;
    const out = new Float64Array(q.length);
    for (let h = 0; h < heads; h++) {
      const base = Math.floor(h / (heads / kvHeads)) * capacity * hd;
      const scores = Array.from({ length: keys }, (_, t) => {
        let s = 0;
        for (let i = 0; i < hd; i++) s += q[h * hd + i]! * kc[base + t * hd + i]!;
        return s / Math.sqrt(hd);
      });
      const max = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - max));
      const total = e.reduce((a, b) => a + b, 0);
      e.forEach((p, t) => {
        for (let i = 0; i < hd; i++) out[h * hd + i]! += (p / total) * vc[base + t * hd + i]!;
      });
    }
    return out;
  };

  for (const path of paths) {
    test(`${path}: attention over 1 to 700 cached keys, head sizes 17 to 128 (64 and 128 in registers), peaked and flat scores`, () => {
      k.forcePath(path);
      for (const [heads, kvHeads, hd, keys, sharp] of [[14, 2, 64, 700, 1], [9, 3, 64, 1, 1], [4, 4, 40, 33, 8], [6, 2, 17, 129, 30], [2, 1, 128, 300, 0.01], [3, 3, 128, 301, 3]] as const) {
        const capacity = keys + 5;
        const q = values(heads * hd, heads + hd).map((v) => v * sharp);
        const [kc, vc] = [values(kvHeads * capacity * hd, keys), values(kvHeads * capacity * hd, keys + 1)];
        const context = new Float32Array(heads * hd);
        k.attend(q, kc, vc, heads, kvHeads, capacity, keys, context);
        const want = attention(q, kc, vc, heads, kvHeads, capacity, keys);
        for (let i = 0; i < want.length; i++) {
          assert.ok(Math.abs(context[i]! - want[i]!) <= 2e-6 + 1e-5 * Math.abs(want[i]!), `${heads}/${kvHeads} heads, ${hd}, ${keys} keys, [${i}]: ${context[i]} vs ${want[i]}`);
        }
      }
    });
  }

  test('attention refuses shapes that do not fit its caches', () => {
    const [q, cache, out] = [new Float32Array(8), new Float32Array(2 * 4 * 4), new Float32Array(8)];
    assert.throws(() => k.attend(q, cache, cache, 2, 2, 4, 5, out), /keys must be 1 \.\. capacity/);
    assert.throws(() => k.attend(q, cache, cache, 3, 2, 4, 1, out), /multiple of kvHeads/);
    assert.throws(() => k.attend(q, cache.subarray(1), cache, 2, 2, 4, 1, out), /caches must hold/);
    assert.throws(() => k.attend(q, cache, cache, 2, 2, 4, 1, new Float32Array(7)), /context must be/);
  });

  test('the product is the dequantized weights times x, up to the activations rounding', () => {
    const [rows, cols] = [256, 896];
    const w = values(rows * cols, 5);
    const x = values(cols, 6);
    for (const bits of [8, 4] as const) {
      const out = new Float32Array(rows);
      k.gemv(pack(k, bits, w, rows, cols), x, out);
      const exact = reference(bits, w, rows, cols, Float32Array.from(x)).y;
      let [num, den] = [0, 0];
      for (let r = 0; r < rows; r++) {
        let dense = 0;
        for (let i = 0; i < cols; i++) dense += w[r * cols + i]! * x[i]!;
        num += (out[r]! - dense) ** 2;
        den += dense ** 2;
        assert.ok(Number.isFinite(exact[r]!));
      }
      assert.ok(Math.sqrt(num / den) < (bits === 8 ? 0.03 : 0.2), `int${bits} relative L2 ${Math.sqrt(num / den)}`);
    }
  });

  test('gatherColumns: a packed int8 weight cut to some columns is the packing of those columns, byte for byte', () => {
    for (const [path, [rows, cols]] of paths.flatMap((p) => [[7, 100], [896, 130], [1, 64], [3, 200]].map((s) => [p, s] as const))) {
      k.forcePath(path);
      const w = values(rows * cols, rows + cols);
      const q = quantizeLinear(w, rows, cols);
      const [bValues, scales] = [q.values.data as Int8Array, q.scales.data as Float32Array];
      const whole = k.packInt8(bValues, scales, rows, cols);
      const every = Int32Array.from({ length: cols }, (_, j) => j);
      const shuffled = Int32Array.from({ length: Math.ceil(cols * 0.4) }, (_, j) => (j * 5 + 2) % cols);
      // Ascending sets take the AVX-512 compress path where the CPU has one, the rest the plain loop.
      const ascending = [every, every.filter((j) => (j * 7919) % 5 < 2), every.filter((j) => j % 64 === 63 || j === 0), Int32Array.of(cols - 1)];
      for (const columns of [Int32Array.of(), shuffled, ...ascending]) {
        // compactDown gathers B's rows (a column of W each) and packs them: the independent route.
        const cut = k.gatherColumns(whole, columns);
        const direct = compactDown(k, bValues, scales, columns, rows);
        assert.deepEqual(cut.data, direct.data, `${path}, ${rows}x${cols}, ${columns.length} columns`);
        assert.equal(cut.cols, columns.length);
      }
    }
    k.forcePath(best);
    const packed = k.packInt8(new Int8Array(64 * 4), new Float32Array(4), 4, 64);
    assert.throws(() => k.gatherColumns(packed, Int32Array.of(64)), /outside the matrix/);
    assert.throws(() => k.gatherColumns({ ...packed, data: packed.data.subarray(1) }, Int32Array.of(0)), /must hold rows x cols/);
  });

  test('bad arguments are refused, not read past', () => {
    const packed = pack(k, 8, values(4 * 64, 1), 4, 64);
    assert.throws(() => k.gemv(packed, new Float32Array(63), new Float32Array(4)), /x must hold cols/);
    assert.throws(() => k.gemv(packed, new Float32Array(64), new Float32Array(3)), /out must hold/);
    assert.throws(() => k.gemv(packed, new Float32Array(64), new Float32Array(1), Int32Array.of(4)), /outside the matrix/);
    assert.throws(() => k.gemv({ ...packed, scales: new Float32Array(3) }, new Float32Array(64), new Float32Array(4)), /scales must hold/);
    assert.throws(() => k.setThreads(0), /threads must be/);
  });

  test('any pool size gives the same numbers', () => {
    const [rows, cols] = [300, 128];
    const packed = pack(k, 8, values(rows * cols, 9), rows, cols);
    const x = values(cols, 10);
    const results = [1, 3, 2].map((threads) => {
      k.setThreads(threads);
      const out = new Float32Array(rows);
      k.gemv(packed, x, out);
      return out;
    });
    assert.deepEqual(results[0], results[1]);
    assert.deepEqual(results[0], results[2]);
  });
});
