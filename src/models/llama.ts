/**
 * LLaMA / Mistral / Qwen2 decoder: RMSNorm, rotary GQA attention with a KV cache, SwiGLU FFN.
 * One ONNX graph runs every layer (weights are inputs); TypeScript owns the loop, the cache and
 * the embeddings, so a sparsity policy can read activations and drop tokens between layers.
 */
import type ort from 'onnxruntime-node';
import { GraphBuilder } from '../graph/builder.js';
import { activation, linear, mergeHeads, rmsNorm, rotary, splitHeads } from '../graph/ops.js';
import { GraphSession, tensor, type Feeds, type RuntimeOptions } from '../graph/session.js';
import type { TextConfig } from '../io/model-config.js';
import { compactFfn, FfnWorkspace, type DenseFfn } from './compact-ffn.js';
import type { KvCache } from './kv-cache.js';
import { inverseFrequencies, ropeTables, type RopeTables } from './rope.js';
import { optionalWeight, weight, type WeightSource } from './weights.js';

/** What a layer run may additionally return, for the sparsity hooks. */
export interface LayerExtras {
  /** act(gate(h)) * up(h), the FFN's down-projection input, [seq, intermediate]. */
  ffnActivations?: boolean;
  /** Softmax attention of the last query position, [heads, cachedLength]. */
  lastAttention?: boolean;
}

/** The core neurons' rows of [gate; up] and of down (stored transposed), used instead of the dense FFN. */
export interface FfnWeights {
  gateUp: ort.Tensor;
  down: ort.Tensor;
  gateUpBias?: ort.Tensor;
}

export interface LayerResult {
  hidden: Float32Array;
  ffnActivations?: Float32Array;
  lastAttention?: Float32Array;
}

type LayerWeights = Record<string, ort.Tensor>;

function buildLayerGraph(c: TextConfig, extras: LayerExtras): Uint8Array {
  const { hiddenSize: h, numAttentionHeads: nh, numKeyValueHeads: kvh, headDim: hd } = c;
  const group = nh / kvh;
  const g = new GraphBuilder('decoder_layer');
  const x = g.input('x', ['seq', h]);
  const cos = g.input('cos', ['seq', hd]);
  const sin = g.input('sin', ['seq', hd]);
  const mask = g.input('mask', ['seq', 'total']);
  const pastK = g.input('past_k', [kvh, 'past', hd]);
  const pastV = g.input('past_v', [kvh, 'past', hd]);
  const w = (name: string, shape: (number | string)[]) => g.input(name, shape);
  const bias = (name: string, size: number | string, present: boolean) => (present ? w(name, [size]) : undefined);

  // q, k and v come from one product with the three weights stacked, [q; k; v] rows: one pass
  // over the weights instead of three, which is what a bandwidth-bound decode step pays for.
  const xn = rmsNorm(g, x, w('input_norm', [h]), c.rmsNormEps);
  const qkvRows = (nh + 2 * kvh) * hd;
  const qkv = linear(g, xn, w('qkv_w', [qkvRows, h]), bias('qkv_b', qkvRows, c.qkvBias));
  const [q, k, v] = g.node('Split', [qkv, g.constInt64([nh * hd, kvh * hd, kvh * hd])], { axis: 1 }, 3) as [string, string, string];
  const qr = g.op('Mul', [rotary(g, splitHeads(g, q, nh, hd), cos, sin), g.constFloat([1 / Math.sqrt(hd)])]);
  const keys = g.op('Concat', [pastK, rotary(g, splitHeads(g, k, kvh, hd), cos, sin)], { axis: 1 });
  const values = g.op('Concat', [pastV, splitHeads(g, v, kvh, hd)], { axis: 1 });
  g.output('present_k', keys, [kvh, 'total', hd]);
  g.output('present_v', values, [kvh, 'total', hd]);

  // Grouped-query attention: query head j*group + r reads kv head j, as transformers' repeat_kv.
  const qGrouped = g.op('Reshape', [qr, g.constInt64([kvh, group, -1, hd])]);
  const kT = g.op('Transpose', [g.op('Unsqueeze', [keys, g.constInt64([1])])], { perm: [0, 1, 3, 2] });
  const scores = g.op('Add', [g.op('MatMul', [qGrouped, kT]), mask]);
  const probs = g.op('Softmax', [scores], { axis: -1 });
  const context = g.op('MatMul', [probs, g.op('Unsqueeze', [values, g.constInt64([1])])]);
  const merged = mergeHeads(g, g.op('Reshape', [context, g.constInt64([nh, -1, hd])]), nh, hd);
  const attnOut = linear(g, merged, w('o_w', [h, nh * hd]), bias('o_b', h, c.oBias));
  const afterAttn = g.op('Add', [x, attnOut]);

  const yn = rmsNorm(g, afterAttn, w('post_norm', [h]), c.rmsNormEps);
  // gate and up likewise: [gate; up] rows, 2 x ffn of them.
  const gateUp = linear(g, yn, w('gate_up_w', ['ffn2', h]), bias('gate_up_b', 'ffn2', c.mlpBias));
  const [gate, up] = g.node('Split', [gateUp], { axis: 1, num_outputs: 2 }, 2) as [string, string];
  const act = g.op('Mul', [activation(g, gate, c.hiddenAct), up]);
  // down_proj is held transposed, [ffn, hidden], so a neuron's weights are one row of each matrix.
  const downInputs = [act, w('down_t', ['ffn', h])];
  if (c.mlpBias) downInputs.push(w('down_b', [h]));
  const down = g.op('Gemm', downInputs);
  g.output('out', g.op('Add', [afterAttn, down]), ['seq', h]);

  if (extras.ffnActivations) g.output('ffn_act', act, ['seq', 'ffn']);
  if (extras.lastAttention) {
    const lastRow = g.op('Gather', [probs, g.constInt64([-1], [])], { axis: 2 });
    g.output('last_attn', g.op('Reshape', [lastRow, g.constInt64([nh, -1])]), [nh, 'total']);
  }
  return g.toBytes();
}

function buildHeadGraph(c: TextConfig): Uint8Array {
  const g = new GraphBuilder('lm_head');
  const x = g.input('x', ['rows', c.hiddenSize]);
  const norm = rmsNorm(g, x, g.input('norm', [c.hiddenSize]), c.rmsNormEps);
  g.output('logits', linear(g, norm, g.input('lm_w', [c.vocabSize, c.hiddenSize])), ['rows', c.vocabSize]);
  return g.toBytes();
}

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
function transpose(m: Float32Array, rows: number, cols: number): Float32Array {
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

/** Additive attention mask [seq, past + seq]: everything cached is visible, new tokens causally. */
export function causalMask(seq: number, past: number): Float32Array {
  const total = past + seq;
  const mask = new Float32Array(seq * total);
  for (let i = 0; i < seq; i++) mask.fill(-Infinity, i * total + past + i + 1, (i + 1) * total);
  return mask;
}

export class LlamaDecoder {
  private readonly sessions = new Map<string, Promise<GraphSession>>();
  private readonly invFreq: Float32Array;
  private readonly workspaces: FfnWorkspace[] = [];
  // Every layer of one forward step sees the same positions and cache length: build the RoPE
  // tables and the mask once per step, not once per layer.
  private rope: { positions: readonly number[]; tables: RopeTables } | undefined;
  private mask: { seq: number; past: number; data: Float32Array } | undefined;

  private constructor(
    readonly config: TextConfig,
    private readonly layers: LayerWeights[],
    private readonly embedTable: Float32Array,
    private readonly finalNorm: ort.Tensor,
    private readonly lmHead: ort.Tensor,
    private readonly runtime: RuntimeOptions,
  ) {
    this.invFreq = inverseFrequencies(config.headDim, config.ropeTheta);
  }

  /** Loads weights under `prefix` (e.g. `model.language_model.`); `lmHeadName` unless tied. */
  static load(source: WeightSource, prefix: string, lmHeadName: string, c: TextConfig, runtime: RuntimeOptions, onLayer?: () => void): LlamaDecoder {
    const { hiddenSize: h, numAttentionHeads: nh, numKeyValueHeads: kvh, headDim: hd, intermediateSize: ffn } = c;
    const layers: LayerWeights[] = [];
    for (let l = 0; l < c.numHiddenLayers; l++) {
      const p = `${prefix}layers.${l}.`;
      const entries: [string, ort.Tensor | undefined][] = [
        ['input_norm', weight(source, `${p}input_layernorm.weight`, [h])],
        ['qkv_w', stacked(source, ['q_proj', 'k_proj', 'v_proj'].map((n) => `${p}self_attn.${n}.weight`), [nh * hd, kvh * hd, kvh * hd], h)],
        ['qkv_b', c.qkvBias ? stacked(source, ['q_proj', 'k_proj', 'v_proj'].map((n) => `${p}self_attn.${n}.bias`), [nh * hd, kvh * hd, kvh * hd]) : undefined],
        ['o_w', weight(source, `${p}self_attn.o_proj.weight`, [h, nh * hd])],
        ['o_b', optionalWeight(source, `${p}self_attn.o_proj.bias`, [h], c.oBias)],
        ['post_norm', weight(source, `${p}post_attention_layernorm.weight`, [h])],
        ['gate_up_w', stacked(source, [`${p}mlp.gate_proj.weight`, `${p}mlp.up_proj.weight`], [ffn, ffn], h)],
        ['gate_up_b', c.mlpBias ? stacked(source, [`${p}mlp.gate_proj.bias`, `${p}mlp.up_proj.bias`], [ffn, ffn]) : undefined],
        ['down_t', tensor(transpose(source.read(`${p}mlp.down_proj.weight`, [h, ffn]), h, ffn), [ffn, h])],
        ['down_b', optionalWeight(source, `${p}mlp.down_proj.bias`, [h], c.mlpBias)],
      ];
      layers.push(Object.fromEntries(entries.filter((e): e is [string, ort.Tensor] => e[1] !== undefined)));
      onLayer?.();
    }
    const embedTable = source.read(`${prefix}embed_tokens.weight`, [c.vocabSize, h]);
    const finalNorm = weight(source, `${prefix}norm.weight`, [h]);
    const lmHead =
      c.tieWordEmbeddings && !source.has(lmHeadName) ? tensor(embedTable, [c.vocabSize, h]) : weight(source, lmHeadName, [c.vocabSize, h]);
    return new LlamaDecoder(c, layers, embedTable, finalNorm, lmHead, runtime);
  }

  private session(key: string, build: () => Uint8Array): Promise<GraphSession> {
    let s = this.sessions.get(key);
    if (s === undefined) {
      s = GraphSession.create(build(), this.runtime);
      this.sessions.set(key, s);
    }
    return s;
  }

  /** Token embeddings, [ids.length, hidden]. */
  embed(ids: readonly number[]): Float32Array {
    const h = this.config.hiddenSize;
    const out = new Float32Array(ids.length * h);
    ids.forEach((id, i) => out.set(this.embedTable.subarray(id * h, (id + 1) * h), i * h));
    return out;
  }

  /**
   * Compact FFN weights of `neurons` for `layer`, in that layer's reusable workspace: valid until
   * the next call for the same layer (generation runs one request at a time).
   */
  compactFfn(layer: number, neurons: readonly number[]): FfnWeights {
    const workspace = (this.workspaces[layer] ??= new FfnWorkspace());
    return compactFfn(this.ffnWeights(layer), neurons, this.config.hiddenSize, workspace);
  }

  /** The dense FFN weights of a layer, each [intermediate, hidden] (down transposed). */
  ffnWeights(layer: number): DenseFfn {
    const w = this.layers[layer]!;
    const split = (t: ort.Tensor) => {
      const data = t.data as Float32Array;
      return [data.subarray(0, data.length / 2), data.subarray(data.length / 2)] as const;
    };
    const [gate, up] = split(w.gate_up_w!);
    const dense: DenseFfn = { gate, up, down: w.down_t!.data as Float32Array };
    if (w.gate_up_b) [dense.gateBias, dense.upBias] = split(w.gate_up_b);
    return dense;
  }

  /**
   * Runs one layer on `seq` new tokens at `positions`, appending their K/V to the cache.
   * `ffn` replaces the layer's FFN with compact core-neuron weights.
   */
  async runLayer(layer: number, hidden: Float32Array, positions: readonly number[], cache: KvCache, extras: LayerExtras = {}, ffn?: FfnWeights): Promise<LayerResult> {
    const c = this.config;
    const seq = positions.length;
    const key = `${extras.ffnActivations ? 'a' : ''}${extras.lastAttention ? 'p' : ''}`;
    const session = await this.session(key, () => buildLayerGraph(c, extras));
    if (this.rope?.positions !== positions) this.rope = { positions, tables: ropeTables(positions, c.headDim, this.invFreq) };
    const rope = this.rope.tables;
    const past = cache.past(layer);
    const pastLength = cache.length(layer);
    if (this.mask?.seq !== seq || this.mask.past !== pastLength) this.mask = { seq, past: pastLength, data: causalMask(seq, pastLength) };
    const feeds: Feeds = {
      ...this.layers[layer],
      ...(ffn === undefined ? {} : compactFeeds(ffn)),
      x: tensor(hidden, [seq, c.hiddenSize]),
      cos: tensor(rope.cos, [seq, c.headDim]),
      sin: tensor(rope.sin, [seq, c.headDim]),
      mask: tensor(this.mask.data, [seq, pastLength + seq]),
      past_k: past.k,
      past_v: past.v,
    };
    const names = ['out', 'present_k', 'present_v'];
    if (extras.ffnActivations) names.push('ffn_act');
    if (extras.lastAttention) names.push('last_attn');
    const [out, k, v, ...rest] = await session.runFloat(feeds, names);
    cache.store(layer, k!, v!);
    const result: LayerResult = { hidden: out! };
    if (extras.ffnActivations) result.ffnActivations = rest.shift()!;
    if (extras.lastAttention) result.lastAttention = rest.shift()!;
    return result;
  }

  async release(): Promise<void> {
    for (const session of this.sessions.values()) await (await session).release();
    this.sessions.clear();
  }

  /** Final norm and LM head over `rows` hidden states, [rows, vocab]. */
  async logits(hidden: Float32Array, rows: number): Promise<Float32Array> {
    const session = await this.session('head', () => buildHeadGraph(this.config));
    const [logits] = await session.runFloat(
      { x: tensor(hidden, [rows, this.config.hiddenSize]), norm: this.finalNorm, lm_w: this.lmHead },
      ['logits'],
    );
    return logits!;
  }
}

function compactFeeds(ffn: FfnWeights): Feeds {
  const feeds: Feeds = { gate_up_w: ffn.gateUp, down_t: ffn.down };
  if (ffn.gateUpBias) feeds.gate_up_b = ffn.gateUpBias;
  return feeds;
}
