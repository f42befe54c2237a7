/**
 * The native decoder layer (native/layer.cc) against an independent JavaScript layer in float64 on
 * the same quantized weights, dequantized: a few decode steps filling the KV cache, in int8 and
 * int4, with and without biases, dense and on core neurons. The native side quantizes its
 * activations in blocks of 32, so the two agree to that rounding, not bit for bit.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { dequantizeInt4Row, quantizeInt4, quantizeLinear } from '../src/models/quantize.js';
import { inverseFrequencies, ropeTables } from '../src/models/rope.js';
import { compactDown } from './helpers.js';
import { nativeKernels, type LayerShape, type NativeKernels, type NativeLayerWeights, type PackedWeight } from '../src/native/kernels.js';

const { kernels, reason } = nativeKernels();

function values(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 31 - 1) * scale;
  });
}

const SHAPE: LayerShape = { hidden: 96, heads: 6, kvHeads: 2, headDim: 16, ffn: 136, eps: 1e-5 };

/** A linear weight W [rows, cols]: packed for the kernels, and its dequantized values for the reference. */
function linear(k: NativeKernels, bits: 8 | 4, rows: number, cols: number, seed: number): { packed: PackedWeight; w: Float64Array; int8?: { values: Int8Array; scales: Float32Array } } {
  const w = values(rows * cols, seed, 1 / Math.sqrt(cols));
  const deq = new Float64Array(rows * cols);
  if (bits === 8) {
    const q = quantizeLinear(w, rows, cols);
    const [b, s] = [q.values.data as Int8Array, q.scales.data as Float32Array];
    for (let r = 0; r < rows; r++) for (let i = 0; i < cols; i++) deq[r * cols + i] = b[i * rows + r]! * s[r]!;
    return { packed: k.packInt8(b, s, rows, cols), w: deq, int8: { values: b, scales: s } };
  }
  const q = quantizeInt4(w, rows, cols);
  const row = new Float32Array(cols);
  for (let r = 0; r < rows; r++) {
    dequantizeInt4Row(q, r, cols, row);
    deq.set(row, r * cols);
  }
  return { packed: k.int4(q.values.data as Uint8Array, q.scales.data as Float32Array, rows, cols), w: deq };
}

const matvec = (w: Float64Array, rows: number, cols: number, x: ArrayLike<number>, only?: readonly number[]) =>
  Float64Array.from(only ?? Array.from({ length: rows }, (_, r) => r), (r) => {
    let s = 0;
    for (let i = 0; i < cols; i++) s += w[r * cols + i]! * x[i]!;
    return s;
  });

function rms(x: ArrayLike<number>, w: Float32Array, eps: number): Float64Array {
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += x[i]! ** 2;
  const inv = 1 / Math.sqrt(sum / x.length + eps);
  return Float64Array.from({ length: x.length }, (_, i) => x[i]! * inv * w[i]!);
}

const relativeL2 = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let [num, den] = [0, 0];
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / den);
};

describe('native decoder layer', { skip: kernels === null ? reason : false }, () => {
  const k = kernels!;
  const { hidden: H, heads: NH, kvHeads: KVH, headDim: HD, ffn: F, eps } = SHAPE;
  const qkvRows = (NH + 2 * KVH) * HD;

  for (const bits of [8, 4] as const) {
    for (const biases of [false, true]) {
      for (const core of [false, true]) {
        test(`int${bits}${biases ? ', biases' : ''}${core ? ', core neurons' : ''}: six decode steps match the float64 layer`, () => {
          const [qkv, o, gateUp, down] = [linear(k, bits, qkvRows, H, 1), linear(k, bits, H, NH * HD, 2), linear(k, bits, 2 * F, H, 3), linear(k, 8, H, F, 4)];
          const bias = (n: number, seed: number) => (biases ? values(n, seed, 0.1) : null);
          const weights: NativeLayerWeights = {
            inputNorm: values(H, 5, 0.2).map((v) => 1 + v),
            postNorm: values(H, 6, 0.2).map((v) => 1 + v),
            qkv: qkv.packed, o: o.packed, gateUp: gateUp.packed, down: down.packed,
            qkvBias: bias(qkvRows, 7), oBias: bias(H, 8), gateUpBias: bias(2 * F, 9), downBias: bias(H, 10),
          };
          const layer = k.createLayer(SHAPE, weights);
          const neurons = core ? Int32Array.from({ length: Math.floor((F - 2) / 3) + 1 }, (_, j) => 3 * j + 1) : null;
          const coreDown = neurons === null ? null : compactDown(k, down.int8!.values, down.int8!.scales, neurons, H);
          const capacity = 8;
          const [kCache, vCache] = [new Float32Array(KVH * capacity * HD), new Float32Array(KVH * capacity * HD)];
          const [refK, refV] = [new Float64Array(KVH * capacity * HD), new Float64Array(KVH * capacity * HD)];
          const invFreq = inverseFrequencies(HD, 10000);
          for (let step = 0; step < 6; step++) {
            const position = 10 + step;
            const h = values(H, 100 + step);
            const input = Float64Array.from(h);
            const { cos, sin } = ropeTables([position], HD, invFreq);
            k.layerStep(layer, h, kCache, vCache, capacity, step, cos, sin, neurons, coreDown);

            // The reference: the same layer in float64 on the dequantized weights.
            const x = Float64Array.from(input);
            const qkvOut = matvec(qkv.w, qkvRows, H, rms(x, weights.inputNorm, eps));
            if (weights.qkvBias) qkvOut.forEach((_, i) => (qkvOut[i]! += weights.qkvBias![i]!));
            const rope = (v: Float64Array, at: number) => {
              for (let i = 0; i < HD / 2; i++) {
                const [a, b] = [v[at + i]!, v[at + i + HD / 2]!];
                v[at + i] = a * cos[i]! - b * sin[i]!;
                v[at + i + HD / 2] = b * cos[i]! + a * sin[i]!;
              }
            };
            for (let hh = 0; hh < NH + KVH; hh++) rope(qkvOut, hh * HD);
            for (let j = 0; j < KVH; j++) {
              refK.set(qkvOut.subarray((NH + j) * HD, (NH + j + 1) * HD), (j * capacity + step) * HD);
              refV.set(qkvOut.subarray((NH + KVH + j) * HD, (NH + KVH + j + 1) * HD), (j * capacity + step) * HD);
            }
            const context = new Float64Array(NH * HD);
            for (let hh = 0; hh < NH; hh++) {
              const kv = Math.floor(hh / (NH / KVH));
              const scores = Array.from({ length: step + 1 }, (_, t) => {
                let s = 0;
                for (let i = 0; i < HD; i++) s += qkvOut[hh * HD + i]! * refK[(kv * capacity + t) * HD + i]!;
                return s / Math.sqrt(HD);
              });
              const max = Math.max(...scores);
              const e = scores.map((s) => Math.exp(s - max));
              const total = e.reduce((a, b) => a + b, 0);
              e.forEach((p, t) => {
                for (let i = 0; i < HD; i++) context[hh * HD + i]! += (p / total) * refV[(kv * capacity + t) * HD + i]!;
              });
            }
            const attn = matvec(o.w, H, NH * HD, context);
            x.forEach((_, i) => (x[i]! += attn[i]! + (weights.oBias?.[i] ?? 0)));
            const yn = rms(x, weights.postNorm, eps);
            const active = neurons === null ? Array.from({ length: F }, (_, n) => n) : [...neurons];
            const gu = matvec(gateUp.w, 2 * F, H, yn);
            const act = new Float64Array(F);
            for (const n of active) {
              const g = gu[n]! + (weights.gateUpBias?.[n] ?? 0);
              act[n] = (g / (1 + Math.exp(-g))) * (gu[F + n]! + (weights.gateUpBias?.[F + n] ?? 0));
            }
            const out = matvec(down.w, H, F, act);
            x.forEach((_, i) => (x[i]! += out[i]! + (weights.downBias?.[i] ?? 0)));

            const delta = (a: ArrayLike<number>) => Float64Array.from(x, (_, i) => a[i]! - input[i]!);
            const err = relativeL2(delta(h), delta(x));
            assert.ok(err < 0.03, `step ${step}: relative error of the layer's update ${err}`);
            assert.ok(relativeL2(kCache.subarray(0, KVH * capacity * HD), refK) < 0.02, `step ${step}: keys`);
          }
        });
      }
    }
  }

  test('core neurons that are every neuron give the dense layer exactly', () => {
    const [qkv, o, gateUp, down] = [linear(k, 8, qkvRows, H, 11), linear(k, 8, H, NH * HD, 12), linear(k, 8, 2 * F, H, 13), linear(k, 8, H, F, 14)];
    const weights: NativeLayerWeights = { inputNorm: values(H, 15), postNorm: values(H, 16), qkv: qkv.packed, o: o.packed, gateUp: gateUp.packed, down: down.packed, qkvBias: null, oBias: null, gateUpBias: null, downBias: null };
    const layer = k.createLayer(SHAPE, weights);
    const all = Int32Array.from({ length: F }, (_, n) => n);
    const run = (neurons: Int32Array | null) => {
      const h = values(H, 17);
      const { cos, sin } = ropeTables([3], HD, inverseFrequencies(HD, 10000));
      k.layerStep(layer, h, new Float32Array(KVH * 4 * HD), new Float32Array(KVH * 4 * HD), 4, 0, cos, sin, neurons, neurons && compactDown(k, down.int8!.values, down.int8!.scales, neurons, H));
      return h;
    };
    assert.deepEqual(run(all), run(null));
  });

  test('bad arguments are refused', () => {
    const [qkv, o, gateUp, down] = [linear(k, 8, qkvRows, H, 21), linear(k, 8, H, NH * HD, 22), linear(k, 8, 2 * F, H, 23), linear(k, 8, H, F, 24)];
    const weights: NativeLayerWeights = { inputNorm: values(H, 25), postNorm: values(H, 26), qkv: qkv.packed, o: o.packed, gateUp: gateUp.packed, down: down.packed, qkvBias: null, oBias: null, gateUpBias: null, downBias: null };
    assert.throws(() => k.createLayer({ ...SHAPE, ffn: F + 1 }, weights), /wrong shape/);
    assert.throws(() => k.createLayer(SHAPE, { ...weights, inputNorm: new Float32Array(3) }), /wrong length/);
    const layer = k.createLayer(SHAPE, weights);
    const { cos, sin } = ropeTables([0], HD, inverseFrequencies(HD, 10000));
    const cache = () => new Float32Array(KVH * 2 * HD);
    assert.throws(() => k.layerStep(layer, values(H, 1), cache(), cache(), 2, 2, cos, sin), /cache is full/);
    assert.throws(() => k.layerStep(layer, values(H - 1, 1), cache(), cache(), 2, 0, cos, sin), /h must hold/);
    assert.throws(() => k.layerStep(layer, values(H, 1), cache(), cache(), 2, 0, cos, sin, Int32Array.of(1), null), /neurons need their compactDown/);
    assert.throws(() => k.layerStep(layer, values(H, 1), cache(), cache(), 2, 0, cos, sin, Int32Array.of(F), compactDown(k, down.int8!.values, down.int8!.scales, Int32Array.of(0), H)), /outside the FFN/);
  });
});
