/**
 * The ONNX graphs of a LLaMA / Mistral / Qwen2 decoder: one layer (RMSNorm, rotary GQA attention,
 * SwiGLU FFN), groups of consecutive layers, and the final norm with the LM head. A single layer
 * takes its weights as inputs, so one session serves every layer (compact core-neuron FFNs,
 * layer-by-layer prefills); a group has its layers' weights baked in as initializers, so ONNX
 * Runtime pre-packs them.
 *
 * The layer graph never copies the KV cache. It returns only the new tokens' keys and values
 * (the caller writes them into its preallocated cache), and attends to the cache and to the new
 * tokens as two blocks of one softmax: scores against the whole cache buffer, whose unfilled
 * slots `cache_mask` hides, beside causal scores among the new tokens.
 */
import { GraphBuilder, type BakedTensor } from '../graph/builder.js';
import { activation, mergeHeads, rmsNorm, splitHeads, weightedLinear, type WeightFormat } from '../graph/ops.js';
import type { TextConfig } from '../io/model-config.js';
import { groupPrefix, HEAD, LAYER, STEP } from './decoder-io.js';

/** What a layer run may additionally return, for a sparsity policy. */
export interface TapRequest {
  /** act(gate(h)) * up(h), the FFN's down-projection input, [seq, intermediate]. */
  ffnActivations?: boolean;
  /** Softmax attention of the last query position over cache slots and new tokens. */
  lastAttention?: boolean;
}

export interface LayerGraphVariant extends TapRequest {
  /** Attends to a KV cache (false: the first tokens of a request, nothing cached yet). */
  withCache: boolean;
  format: WeightFormat;
}

export function layerGraphKey(v: LayerGraphVariant): string {
  return `layer:${v.format}:${v.withCache ? 'c' : ''}${v.ffnActivations ? 'a' : ''}${v.lastAttention ? 'p' : ''}`;
}

/** The inputs every layer of one forward pass shares: rows, their RoPE tables and causal mask. */
interface StepInputs {
  cos: string;
  sin: string;
  row: string;
  mask: string;
}

function stepInputs(g: GraphBuilder, c: TextConfig): StepInputs {
  const hd = c.headDim;
  return {
    cos: g.input(STEP.cos, ['seq', hd / 2]),
    sin: g.input(STEP.sin, ['seq', hd / 2]),
    row: g.input(STEP.row, [1, 'seq'], 'int64'),
    mask: g.input(STEP.mask, ['seq', 'seq']),
  };
}

/** One layer on its own, every weight an input: the graph compact core-neuron FFNs and layer-by-layer prefills feed. */
export function buildLayerGraph(c: TextConfig, variant: LayerGraphVariant): Uint8Array {
  const g = new GraphBuilder('decoder_layer');
  const x = g.input(STEP.x, ['seq', c.hiddenSize]);
  const layer = addLayer(g, c, variant, x, stepInputs(g, c), '');
  addLayerOutputs(g, c, variant, layer, '');
  g.output(STEP.out, layer.out, ['seq', c.hiddenSize]);
  return g.toBytes();
}

/**
 * Consecutive decoder layers in one graph, each attending to its KV cache (empty before the first
 * tokens), so a decode step costs one session run per group rather than one per layer. Weights in
 * `baked` become initializers (a layer group's session); the rest are inputs (compact FFNs).
 * Layer l's inputs and outputs are its single-layer graph's, named `l<l>.<name>` (`cache_mask`
 * too: pruned layers hold fewer tokens); the last layer's hidden state is `out`.
 * Only a group of one layer has taps: ONNX Runtime computes and holds every graph output until a
 * run ends whether or not it is fetched, which for FFN activations is 15 MB a layer at 768 tokens
 * (layers of larger groups that must return taps run on their own).
 */
export function buildLayerGroupGraph(c: TextConfig, format: WeightFormat, layers: readonly number[], baked: Readonly<Record<string, BakedTensor>> = {}): Uint8Array {
  const g = new GraphBuilder('decoder_layers');
  let x = g.input(STEP.x, ['seq', c.hiddenSize]);
  const step = stepInputs(g, c);
  // One layer holds its taps as the layer-per-session graphs did; more would hold them all.
  const variant = { withCache: true, format, ffnActivations: layers.length === 1, lastAttention: layers.length === 1 };
  for (const l of layers) {
    const layer = addLayer(g, c, variant, x, step, groupPrefix(l));
    addLayerOutputs(g, c, variant, layer, groupPrefix(l));
    x = layer.out;
  }
  g.output(STEP.out, x, ['seq', c.hiddenSize]);
  return g.toBytes(baked);
}

/** A layer's new keys and values and the taps `variant` asks for, as outputs named `${prefix}<name>`. */
function addLayerOutputs(g: GraphBuilder, c: TextConfig, variant: LayerGraphVariant, layer: LayerValues, prefix: string): void {
  g.output(prefix + LAYER.newK, layer.newK, [c.numKeyValueHeads, 'seq', c.headDim]);
  g.output(prefix + LAYER.newV, layer.newV, [c.numKeyValueHeads, 'seq', c.headDim]);
  if (variant.ffnActivations) g.output(prefix + LAYER.ffnAct, layer.act, ['seq', layer.ffn]);
  if (variant.lastAttention) {
    // [kvh, group * seq, keys] -> [heads, seq, keys] (0: keep that dim), then the last row.
    const byHead = g.op('Reshape', [layer.probs, g.constInt64([c.numAttentionHeads, -1, 0])]);
    g.output(prefix + LAYER.lastAttn, g.op('Gather', [byHead, g.constInt64([-1], [])], { axis: 1 }), [c.numAttentionHeads, 'keys']);
  }
}

/** One layer's values in a graph under construction. */
interface LayerValues {
  out: string;
  newK: string;
  newV: string;
  /** The FFN's activations and their width. */
  act: string;
  ffn: number | string;
  /** Softmax attention, [kvh, group * seq, keys]. */
  probs: string;
}

/** Adds one decoder layer on `x`; its weights and cache are inputs named `${prefix}<name>`. */
function addLayer(g: GraphBuilder, c: TextConfig, variant: LayerGraphVariant, x: string, step: StepInputs, prefix: string): LayerValues {
  const { hiddenSize: h, numAttentionHeads: nh, numKeyValueHeads: kvh, headDim: hd } = c;
  const group = nh / kvh;
  const { cos, sin, row, mask } = step;
  const w = (name: string, shape: (number | string)[]) => g.input(prefix + name, shape);
  const bias = (name: string, size: number | string, present: boolean) => (present ? w(name, [size]) : undefined);
  /** [kvh, rows, hd] queries against [kvh, n, hd] keys -> [kvh, rows, n] scores (a transposed MatMul ORT fuses, no copy). */
  const scoresAgainst = (q: string, keys: string) => g.op('MatMul', [q, g.op('Transpose', [keys], { perm: [0, 2, 1] })]);
  /** ONNX Runtime's RotaryEmbedding (rotate-half form) on [1, seq, heads * hd], row i at its position's line of cos/sin. */
  const rotary = (t: string, heads: number) => g.node('RotaryEmbedding', [t, row, cos, sin], { num_heads: heads }, 1, 'com.microsoft')[0]!;

  // q, k and v come from one product with the three weights stacked, [q; k; v] rows: one pass
  // over the weights instead of three, which is what a bandwidth-bound decode step pays for.
  const xn = rmsNorm(g, x, w(LAYER.inputNorm, [h]), c.rmsNormEps);
  const qkvRows = (nh + 2 * kvh) * hd;
  const proj = (x: string, name: string, out: number | string, inFeatures: number | string, b?: string, transposed = false) =>
    weightedLinear(g, x, prefix + name, out, inFeatures, variant.format, b, transposed);
  const qkv = g.op('Unsqueeze', [proj(xn, LAYER.qkv, qkvRows, h, bias(LAYER.qkvBias, qkvRows, c.qkvBias)), g.constInt64([0])]);
  const [q, k, v] = g.node('Split', [qkv, g.constInt64([nh * hd, kvh * hd, kvh * hd])], { axis: 2 }, 3) as [string, string, string];
  const qr = g.op('Mul', [splitHeads(g, rotary(q, nh), nh, hd), g.constFloat([1 / Math.sqrt(hd)])]);
  const newK = splitHeads(g, rotary(k, kvh), kvh, hd);
  const newV = splitHeads(g, v, kvh, hd);

  // Grouped-query attention: query head j*group + r reads kv head j, as transformers' repeat_kv.
  // Each KV head's queries are one [group * seq, hd] block, so every product below is one
  // matrix product per KV head rather than one per query head.
  const qGrouped = g.op('Reshape', [qr, g.constInt64([kvh, -1, hd])]);
  // Among the new tokens the causal mask is [seq, seq] for every query head: scored per head
  // ([kvh, group, seq, seq]), then back to the blocks ([kvh, group * seq, seq]; 0 keeps a dim).
  const perHead = g.op('Reshape', [qr, g.constInt64([kvh, group, -1, hd])]);
  const newKPerHead = g.op('Transpose', [g.op('Unsqueeze', [newK, g.constInt64([1])])], { perm: [0, 1, 3, 2] });
  const selfScores = g.op('Reshape', [g.op('Add', [g.op('MatMul', [perHead, newKPerHead]), mask]), g.constInt64([kvh, -1, 0])]);
  let probs: string;
  let context: string;
  if (variant.withCache) {
    const cacheK = w(LAYER.cacheK, [kvh, 'capacity', hd]);
    const cacheV = w(LAYER.cacheV, [kvh, 'capacity', hd]);
    const cacheScores = g.op('Add', [scoresAgainst(qGrouped, cacheK), w(LAYER.cacheMask, [1, 'capacity'])]);
    probs = g.op('Softmax', [g.op('Concat', [cacheScores, selfScores], { axis: -1 })], { axis: -1 });
    const capacity = g.op('Gather', [g.op('Shape', [cacheK]), g.constInt64([1])], { axis: 0 });
    const axis = g.constInt64([-1]);
    const cacheProbs = g.op('Slice', [probs, g.constInt64([0]), capacity, axis]);
    const selfProbs = g.op('Slice', [probs, capacity, g.constInt64([Number.MAX_SAFE_INTEGER]), axis]);
    context = g.op('Add', [g.op('MatMul', [cacheProbs, cacheV]), g.op('MatMul', [selfProbs, newV])]);
  } else {
    probs = g.op('Softmax', [selfScores], { axis: -1 });
    context = g.op('MatMul', [probs, newV]);
  }
  const merged = mergeHeads(g, g.op('Reshape', [context, g.constInt64([nh, -1, hd])]), nh, hd);
  const attnOut = proj(merged, LAYER.o, h, nh * hd, bias(LAYER.oBias, h, c.oBias));
  const afterAttn = g.op('Add', [x, attnOut]);

  const yn = rmsNorm(g, afterAttn, w(LAYER.postNorm, [h]), c.rmsNormEps);
  // gate and up likewise: [gate; up] rows, 2 x ffn of them.
  // The FFN's width is symbolic where compact FFNs feed the graph; int4 (baked only) fixes it.
  // Each layer of a group has its own (compact FFNs differ in width from layer to layer).
  const [ffn, ffn2] = variant.format === 'int4' ? [c.intermediateSize, 2 * c.intermediateSize] : [`${prefix}ffn`, `${prefix}ffn2`];
  const gateUp = proj(yn, LAYER.gateUp, ffn2, h, bias(LAYER.gateUpBias, ffn2, c.mlpBias));
  const [gate, up] = g.node('Split', [gateUp], { axis: 1, num_outputs: 2 }, 2) as [string, string];
  const act = g.op('Mul', [activation(g, gate, c.hiddenAct), up]);
  // down_proj is held transposed, [ffn, hidden], so a neuron's weights are one row of each matrix.
  const down = proj(act, LAYER.downT, h, ffn, bias(LAYER.downBias, h, c.mlpBias), true);
  return { out: g.op('Add', [afterAttn, down]), newK, newV, act, ffn, probs };
}

export function buildLmHeadGraph(c: TextConfig, format: WeightFormat, baked: Readonly<Record<string, BakedTensor>> = {}): Uint8Array {
  const g = new GraphBuilder('lm_head');
  const x = g.input(HEAD.x, ['rows', c.hiddenSize]);
  const norm = rmsNorm(g, x, g.input(HEAD.norm, [c.hiddenSize]), c.rmsNormEps);
  g.output(HEAD.logits, weightedLinear(g, norm, HEAD.weight, c.vocabSize, c.hiddenSize, format), ['rows', c.vocabSize]);
  return g.toBytes(baked);
}

/** Additive causal mask among `seq` new tokens, [seq, seq]. */
export function causalMask(seq: number): Float32Array {
  const mask = new Float32Array(seq * seq);
  for (let i = 0; i < seq; i++) mask.fill(-Infinity, i * seq + i + 1, (i + 1) * seq);
  return mask;
}

/** Additive mask over a cache buffer of `capacity` slots of which the first `length` are filled, [1, capacity]. */
export function cacheMask(length: number, capacity: number): Float32Array {
  return new Float32Array(capacity).fill(-Infinity, length);
}
