/**
 * Weight-only int8 quantization for ONNX Runtime's DynamicQuantizeMatMul: a linear layer's
 * weight W [out, in] (Hugging Face layout) becomes B = W^T as int8 [in, out] with one symmetric
 * scale per output column, B[i, o] = round(W[o, i] / s[o]), s[o] = max_i |W[o, i]| / 127.
 *
 * A column of B is one output channel (for gate/up: one FFN neuron) and a row is one input
 * channel (for the transposed down projection: one FFN neuron), so gathering the core neurons of
 * either needs no re-quantization: their int8 values and scales are copied as they are.
 */
import ort from 'onnxruntime-node';

/** An int8 weight as DynamicQuantizeMatMul takes it. */
export interface Int8Weight {
  /** [rows, cols] = [in, out] int8. */
  values: ort.Tensor;
  /** [cols] float32, one per output column. */
  scales: ort.Tensor;
}

/** Quantizes W [out, in] (row-major) to B = W^T int8 [in, out] with per-output scales. */
export function quantizeLinear(w: Float32Array, out: number, inFeatures: number): Int8Weight {
  const scales = new Float32Array(out);
  const values = new Int8Array(out * inFeatures);
  for (let o = 0; o < out; o++) {
    let max = 0;
    const row = o * inFeatures;
    for (let i = 0; i < inFeatures; i++) max = Math.max(max, Math.abs(w[row + i]!));
    const scale = max > 0 ? max / 63 : 1;
    scales[o] = scale;
    const inv = 1 / scale;
    for (let i = 0; i < inFeatures; i++) values[i * out + o] = Math.round(w[row + i]! * inv);
  }
  return { values: new ort.Tensor('int8', values, [inFeatures, out]), scales: new ort.Tensor('float32', scales, [out]) };
}

/**
 * Quantizes a matrix already in B layout, M [rows = in, cols = out] (e.g. down_proj transposed,
 * [ffn, hidden]), with one scale per column.
 */
export function quantizeColumns(m: Float32Array, rows: number, cols: number): Int8Weight {
  const max = new Float32Array(cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) max[c] = Math.max(max[c]!, Math.abs(m[r * cols + c]!));
  const scales = max.map((x) => (x > 0 ? x / 63 : 1));
  const inv = scales.map((s) => 1 / s);
  const values = new Int8Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) values[r * cols + c] = Math.round(m[r * cols + c]! * inv[c]!);
  return { values: new ort.Tensor('int8', values, [rows, cols]), scales: new ort.Tensor('float32', scales, [cols]) };
}

/** Column `col` of an int8 B [rows, cols], dequantized: for a tied embedding, one token's vector. */
export function dequantizeColumn(w: Int8Weight, col: number, out: Float32Array, at = 0): void {
  const [rows, cols] = w.values.dims as [number, number];
  const values = w.values.data as Int8Array;
  const scale = (w.scales.data as Float32Array)[col]!;
  for (let r = 0; r < rows; r++) out[at + r] = values[r * cols + col]! * scale;
}
