/**
 * A LLaMA / Mistral / Qwen2 decoder's weights, read from a checkpoint and laid out the way the
 * layer graph takes them: q/k/v stacked into one matrix, gate/up likewise, down_proj transposed so
 * that each FFN neuron is one row of every FFN matrix.
 */
import type ort from 'onnxruntime-node';
import { tensor } from '../graph/session.js';
import type { TextConfig } from '../io/model-config.js';
import type { WeightFormat } from '../graph/ops.js';
import { dequantizeColumn, type Int8Weight } from './quantize.js';
import { linearFeeds, optionalWeight, weight, type WeightSource } from './weights.js';

/** One layer's feeds, by graph input name. */
export type LayerWeights = Record<string, ort.Tensor>;

/** Tensors of `rows[i]` x `width` (width 1: vectors) stacked row-wise into one [sum(rows), width] matrix. */
function stacked(source: WeightSource, names: string[], rows: number[], width = 1): Float32Array {
  const total = rows.reduce((a, b) => a + b, 0);
  const out = new Float32Array(total * width);
  let offset = 0;
  names.forEach((name, i) => {
    out.set(source.read(name, width === 1 ? [rows[i]!] : [rows[i]!, width]), offset);
    offset += rows[i]! * width;
  });
  return out;
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

function loadLayer(source: WeightSource, p: string, c: TextConfig, format: WeightFormat): LayerWeights {
  const { hiddenSize: h, numAttentionHeads: nh, numKeyValueHeads: kvh, headDim: hd, intermediateSize: ffn } = c;
  const qkvRows = [nh * hd, kvh * hd, kvh * hd];
  const qkvNames = (kind: string) => ['q_proj', 'k_proj', 'v_proj'].map((n) => `${p}self_attn.${n}.${kind}`);
  const gateUp = [`${p}mlp.gate_proj`, `${p}mlp.up_proj`];
  const entries: [string, ort.Tensor | undefined][] = [
    ['input_norm', weight(source, `${p}input_layernorm.weight`, [h])],
    ['qkv_b', c.qkvBias ? tensor(stacked(source, qkvNames('bias'), qkvRows), [nh * hd + 2 * kvh * hd]) : undefined],
    ['o_b', optionalWeight(source, `${p}self_attn.o_proj.bias`, [h], c.oBias)],
    ['post_norm', weight(source, `${p}post_attention_layernorm.weight`, [h])],
    ['gate_up_b', c.mlpBias ? tensor(stacked(source, gateUp.map((n) => `${n}.bias`), [ffn, ffn]), [2 * ffn]) : undefined],
    ['down_b', optionalWeight(source, `${p}mlp.down_proj.bias`, [h], c.mlpBias)],
  ];
  return {
    ...Object.fromEntries(entries.filter((e): e is [string, ort.Tensor] => e[1] !== undefined)),
    ...linearFeeds('qkv_w', stacked(source, qkvNames('weight'), qkvRows, h), nh * hd + 2 * kvh * hd, h, format),
    ...linearFeeds('o_w', source.read(`${p}self_attn.o_proj.weight`, [h, nh * hd]), h, nh * hd, format),
    ...linearFeeds('gate_up_w', stacked(source, gateUp.map((n) => `${n}.weight`), [ffn, ffn], h), 2 * ffn, h, format),
    ...linearFeeds('down_t', transpose(source.read(`${p}mlp.down_proj.weight`, [h, ffn]), h, ffn), h, ffn, format, true),
  };
}

/** The token-embedding table: fp32 rows, or the int8 LM head's columns when they are tied. */
type Embedding = { table: Float32Array } | { int8: Int8Weight };

export class DecoderWeights {
  private constructor(
    readonly layers: readonly LayerWeights[],
    private readonly embedding: Embedding,
    readonly finalNorm: ort.Tensor,
    /** The LM head's feeds: lm_w (and lm_w_scale). */
    readonly lmHead: LayerWeights,
  ) {}

  /** Loads weights under `prefix` (e.g. `model.language_model.`); `lmHeadName` unless tied. */
  static load(source: WeightSource, prefix: string, lmHeadName: string, c: TextConfig, format: WeightFormat, onLayer?: () => void): DecoderWeights {
    const layers: LayerWeights[] = [];
    for (let l = 0; l < c.numHiddenLayers; l++) {
      layers.push(loadLayer(source, `${prefix}layers.${l}.`, c, format));
      onLayer?.();
    }
    const [h, vocab] = [c.hiddenSize, c.vocabSize];
    const finalNorm = weight(source, `${prefix}norm.weight`, [h]);
    const embedTable = source.read(`${prefix}embed_tokens.weight`, [vocab, h]);
    const tied = c.tieWordEmbeddings && !source.has(lmHeadName);
    const lmHead = linearFeeds('lm_w', tied ? embedTable : source.read(lmHeadName, [vocab, h]), vocab, h, format);
    // With int8 weights a tied embedding is read from the LM head's columns: no fp32 copy is kept.
    const embedding: Embedding =
      format === 'int8' && tied ? { int8: { values: lmHead.lm_w!, scales: lmHead.lm_w_scale! } } : { table: embedTable };
    return new DecoderWeights(layers, embedding, finalNorm, lmHead);
  }

  /** Writes token `id`'s embedding, `hidden` values, at out[at ..]. */
  embedInto(id: number, hidden: number, out: Float32Array, at: number): void {
    const e = this.embedding;
    if ('table' in e) out.set(e.table.subarray(id * hidden, (id + 1) * hidden), at);
    else dequantizeColumn(e.int8, id, out, at);
  }
}
