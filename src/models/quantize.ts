/**
 * Weight-only quantization, at load time.
 *
 * int8, for ONNX Runtime's DynamicQuantizeMatMul: a linear layer's
 * weight W [out, in] (Hugging Face layout) becomes B = W^T as int8 [in, out] with one symmetric
 * scale per output column, B[i, o] = round(W[o, i] / s[o]), s[o] = max_i |W[o, i]| / 127.
 *
 * A column of B is one output channel (for gate/up: one FFN neuron) and a row is one input
 * channel (for the transposed down projection: one FFN neuron), so gathering the core neurons of
 * either needs no re-quantization: their int8 values and scales are copied as they are.
 */
import ort from 'onnxruntime-node';
import { INT4_BLOCK } from '../graph/ops.js';

/** An int8 weight as DynamicQuantizeMatMul takes it. */
export interface Int8Weight {
  /** [rows, cols] = [in, out] int8. */
  values: ort.Tensor;
  /** [cols] float32, one per output column. */
  scales: ort.Tensor;
}

/** Quantizes W [out, in] (row-major) to B = W^T int8 [in, out] with per-output scales. */
export function quantizeLinear(w: Float32Array, out: number, inFeatures: number): Int8Weight {
  const q = emptyInt8(out, inFeatures);
  quantizeLinearRows(w, 0, inFeatures, q);
  return q;
}

/** An int8 weight of W [out, in] to fill with quantizeLinearRows. */
export function emptyInt8(out: number, inFeatures: number): Int8Weight {
  return { values: new ort.Tensor('int8', new Int8Array(out * inFeatures), [inFeatures, out]), scales: new ort.Tensor('float32', new Float32Array(out), [out]) };
}

/** Rows `first` .. of W, given as `rows` [count, in], into q: so a large W converts a slice at a time. */
export function quantizeLinearRows(rows: Float32Array, first: number, inFeatures: number, q: Int8Weight): void {
  const out = q.values.dims[1]!;
  const values = q.values.data as Int8Array;
  const scales = q.scales.data as Float32Array;
  for (let r = 0; r < rows.length / inFeatures; r++) {
    const o = first + r;
    let max = 0;
    const row = r * inFeatures;
    for (let i = 0; i < inFeatures; i++) max = Math.max(max, Math.abs(rows[row + i]!));
    const scale = max > 0 ? max / 63 : 1;
    scales[o] = scale;
    const inv = 1 / scale;
    for (let i = 0; i < inFeatures; i++) values[i * out + o] = Math.round(rows[row + i]! * inv);
  }
}

/** A 4-bit weight as MatMulNBits takes it. */
export interface Int4Weight {
  /** [out, blocks, 16] uint8: two values a byte, the even input index in the low nibble. */
  values: ort.Tensor;
  /** [out * blocks] float32, one per block. */
  scales: ort.Tensor;
}

/**
 * Quantizes W [out, in] (row-major, Hugging Face's layout) to 4 bits in blocks of 32 along each
 * row, symmetric: q = round(w / s) + 8 in 1..15, s = max |w| of the block / 7, MatMulNBits' default
 * zero point 8. A row is one output channel, so the rows of gate/up (one FFN neuron each) stay
 * whole; a row ending mid-block is padded with zeros.
 */
export function quantizeInt4(w: Float32Array, out: number, inFeatures: number): Int4Weight {
  const q = emptyInt4(out, inFeatures);
  quantizeInt4Rows(w, 0, inFeatures, q);
  return q;
}

/** An int4 weight of W [out, in] to fill with quantizeInt4Rows. */
export function emptyInt4(out: number, inFeatures: number): Int4Weight {
  const blocks = Math.ceil(inFeatures / INT4_BLOCK);
  const values = new Uint8Array(out * blocks * (INT4_BLOCK / 2)).fill(0x88);
  return { values: new ort.Tensor('uint8', values, [out, blocks, INT4_BLOCK / 2]), scales: new ort.Tensor('float32', new Float32Array(out * blocks), [out * blocks]) };
}

/** Rows `first` .. of W, given as `rows` [count, in], into q. */
export function quantizeInt4Rows(rows: Float32Array, first: number, inFeatures: number, q: Int4Weight): void {
  const [, blocks, blob] = q.values.dims as [number, number, number];
  const values = q.values.data as Uint8Array;
  const scales = q.scales.data as Float32Array;
  for (let r = 0; r < rows.length / inFeatures; r++) {
    const o = first + r;
    for (let b = 0; b < blocks; b++) {
      const from = r * inFeatures + b * INT4_BLOCK;
      const count = Math.min(INT4_BLOCK, inFeatures - b * INT4_BLOCK);
      let max = 0;
      for (let i = 0; i < count; i++) max = Math.max(max, Math.abs(rows[from + i]!));
      const scale = max > 0 ? max / 7 : 1;
      scales[o * blocks + b] = scale;
      const at = (o * blocks + b) * blob;
      for (let i = 0; i < count; i++) {
        const v = Math.round(rows[from + i]! / scale) + 8;
        values[at + (i >> 1)] = i & 1 ? (values[at + (i >> 1)]! & 0x0f) | (v << 4) : (values[at + (i >> 1)]! & 0xf0) | v;
      }
    }
  }
}

/** Row `row` of an int4 weight, dequantized (`inFeatures` values). */
export function dequantizeInt4Row(w: Int4Weight, row: number, inFeatures: number, out: Float32Array, at = 0): void {
  const [, blocks, blob] = w.values.dims as [number, number, number];
  const values = w.values.data as Uint8Array;
  const scales = w.scales.data as Float32Array;
  for (let i = 0; i < inFeatures; i++) {
    const b = Math.floor(i / INT4_BLOCK);
    const byte = values[(row * blocks + b) * blob + ((i % INT4_BLOCK) >> 1)]!;
    out[at + i] = ((i & 1 ? byte >> 4 : byte & 0x0f) - 8) * scales[row * blocks + b]!;
  }
}

/** A table [rows, width] (e.g. token embeddings) as int8 rows with one scale each, row-major. */
export interface Int8Rows {
  values: Int8Array;
  scales: Float32Array;
}

/** Quantizes a table [rows, width] to int8 rows, so one row dequantizes on its own. */
export function quantizeRows(m: Float32Array, rows: number, width: number): Int8Rows {
  const q = { values: new Int8Array(rows * width), scales: new Float32Array(rows) };
  quantizeRowsInto(m, 0, width, q);
  return q;
}

/** Rows `first` .. of a table, given as `m` [count, width], into q. */
export function quantizeRowsInto(m: Float32Array, first: number, width: number, q: Int8Rows): void {
  for (let r = 0; r < m.length / width; r++) {
    let max = 0;
    for (let i = 0; i < width; i++) max = Math.max(max, Math.abs(m[r * width + i]!));
    const scale = max > 0 ? max / 127 : 1;
    q.scales[first + r] = scale;
    for (let i = 0; i < width; i++) q.values[(first + r) * width + i] = Math.round(m[r * width + i]! / scale);
  }
}
