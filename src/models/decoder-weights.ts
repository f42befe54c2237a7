/**
 * A LLaMA / Mistral / Qwen2 decoder's weights, read from a checkpoint and laid out the way the
 * layer graph takes them: q/k/v stacked into one matrix, gate/up likewise, down_proj transposed so
 * that each FFN neuron is one row of every FFN matrix.
 */
import type ort from 'onnxruntime-node';
import { tensor } from '../graph/session.js';
import type { TextConfig } from '../io/model-config.js';
import type { DenseFfn } from './compact-ffn.js';
import { optionalWeight, weight, type WeightSource } from './weights.js';

/** One layer's feeds, by graph input name. */
export type LayerWeights = Record<string, ort.Tensor>;

/** Tensors of `rows[i]` x `width` (width 1: vectors) stacked row-wise into one [sum(rows), width] tensor. */
function stacked(source: WeightSource, names: string[], rows: number[], width = 1): ort.Tensor {
  const total = rows.reduce((a, b) => a + b, 0);
  const out = new Float32Array(total * width);
  let offset = 0;
  names.forEach((name, i) => {
    out.set(source.read(name, width === 1 ? [rows[i]!] : [rows[i]!, width]), offset);
    offset += rows[i]! * width;
  });
  return tensor(out, width === 1 ? [total] : [total, width]);
}

/** [rows, cols] row-major -> [cols, rows], in cache-sized tiles. */
export function transpose(m: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(m.length);
  const tile = 32;
  for (let r0 = 0; r0 < rows; r0 += tile) {
    for (let c0 = 0; c0 < cols; c0 += tile) {
      for (let r = r0; r < Math.min(r0 + tile, rows); r++) {
        for (let c = c0; c < Math.min(c0 + tile, cols); c++) out[c * rows + r] = m[r * cols + c]!;
      }
    }
  }
  return out;
}

function loadLayer(source: WeightSource, p: string, c: TextConfig): LayerWeights {
  const { hiddenSize: h, numAttentionHeads: nh, numKeyValueHeads: kvh, headDim: hd, intermediateSize: ffn } = c;
  const qkvRows = [nh * hd, kvh * hd, kvh * hd];
  const qkvNames = (kind: string) => ['q_proj', 'k_proj', 'v_proj'].map((n) => `${p}self_attn.${n}.${kind}`);
  const entries: [string, ort.Tensor | undefined][] = [
    ['input_norm', weight(source, `${p}input_layernorm.weight`, [h])],
    ['qkv_w', stacked(source, qkvNames('weight'), qkvRows, h)],
    ['qkv_b', c.qkvBias ? stacked(source, qkvNames('bias'), qkvRows) : undefined],
    ['o_w', weight(source, `${p}self_attn.o_proj.weight`, [h, nh * hd])],
    ['o_b', optionalWeight(source, `${p}self_attn.o_proj.bias`, [h], c.oBias)],
    ['post_norm', weight(source, `${p}post_attention_layernorm.weight`, [h])],
    ['gate_up_w', stacked(source, [`${p}mlp.gate_proj.weight`, `${p}mlp.up_proj.weight`], [ffn, ffn], h)],
    ['gate_up_b', c.mlpBias ? stacked(source, [`${p}mlp.gate_proj.bias`, `${p}mlp.up_proj.bias`], [ffn, ffn]) : undefined],
    ['down_t', tensor(transpose(source.read(`${p}mlp.down_proj.weight`, [h, ffn]), h, ffn), [ffn, h])],
    ['down_b', optionalWeight(source, `${p}mlp.down_proj.bias`, [h], c.mlpBias)],
  ];
  return Object.fromEntries(entries.filter((e): e is [string, ort.Tensor] => e[1] !== undefined));
}

export class DecoderWeights {
  private constructor(
    readonly layers: readonly LayerWeights[],
    /** [vocab, hidden]. */
    readonly embedTable: Float32Array,
    readonly finalNorm: ort.Tensor,
    readonly lmHead: ort.Tensor,
  ) {}

  /** Loads weights under `prefix` (e.g. `model.language_model.`); `lmHeadName` unless tied. */
  static load(source: WeightSource, prefix: string, lmHeadName: string, c: TextConfig, onLayer?: () => void): DecoderWeights {
    const layers: LayerWeights[] = [];
    for (let l = 0; l < c.numHiddenLayers; l++) {
      layers.push(loadLayer(source, `${prefix}layers.${l}.`, c));
      onLayer?.();
    }
    const h = c.hiddenSize;
    const embedTable = source.read(`${prefix}embed_tokens.weight`, [c.vocabSize, h]);
    const finalNorm = weight(source, `${prefix}norm.weight`, [h]);
    const lmHead =
      c.tieWordEmbeddings && !source.has(lmHeadName) ? tensor(embedTable, [c.vocabSize, h]) : weight(source, lmHeadName, [c.vocabSize, h]);
    return new DecoderWeights(layers, embedTable, finalNorm, lmHead);
  }

  /** The dense FFN weights of a layer, each [intermediate, hidden] (down transposed). */
  denseFfn(layer: number): DenseFfn {
    const w = this.layers[layer]!;
    const halves = (t: ort.Tensor) => {
      const data = t.data as Float32Array;
      return [data.subarray(0, data.length / 2), data.subarray(data.length / 2)] as const;
    };
    const [gate, up] = halves(w.gate_up_w!);
    const dense: DenseFfn = { gate, up, down: w.down_t!.data as Float32Array };
    if (w.gate_up_b) [dense.gateBias, dense.upBias] = halves(w.gate_up_b);
    return dense;
  }
}
