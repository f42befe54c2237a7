/**
 * CLIP and SigLIP vision towers: patch embedding (+ CLS and pre-LayerNorm for CLIP), then
 * pre-norm encoder layers. Returns the hidden states LLaVA selects (`vision_feature_layer`),
 * as transformers numbers them: hidden_states[0] is the embedding output, [i] follows layer i-1.
 */
import type ort from 'onnxruntime-node';
import { GraphBuilder } from '../graph/builder.js';
import { activation, layerNorm, mergeHeads, splitHeads, weightedLinear, type WeightFormat } from '../graph/ops.js';
import { GraphSession, tensor, type RuntimeOptions } from '../graph/session.js';
import { CorematchingError } from '../io/errors.js';
import type { VisionConfig } from '../io/model-config.js';
import { collectGarbage } from '../util/collect-garbage.js';
import { ConvertedCache } from './converted-cache.js';
import { linearFeeds, readLinear, tensorBytes, weight, type WeightSource } from './weights.js';

type Weights = Record<string, ort.Tensor>;

const isClip = (c: VisionConfig) => c.modelType === 'clip_vision_model';
const patchesPerSide = (c: VisionConfig) => Math.floor(c.imageSize / c.patchSize);

/** Tokens the tower yields per image: patches, plus CLIP's class token. */
export function visionTokenCount(c: VisionConfig): number {
  return patchesPerSide(c) ** 2 + (isClip(c) ? 1 : 0);
}

function buildEmbeddingGraph(c: VisionConfig): Uint8Array {
  const g = new GraphBuilder('vision_embeddings');
  const { hiddenSize: hid, numChannels: ch, imageSize: size, patchSize: p } = c;
  const pixels = g.input('pixels', [1, ch, size, size]);
  const convInputs = [pixels, g.input('patch_w', [hid, ch, p, p])];
  if (!isClip(c)) convInputs.push(g.input('patch_b', [hid]));
  const conv = g.op('Conv', convInputs, { kernel_shape: [p, p], strides: [p, p] });
  let x = g.op('Transpose', [g.op('Reshape', [conv, g.constInt64([hid, -1])])], { perm: [1, 0] });
  if (isClip(c)) {
    const cls = g.op('Reshape', [g.input('class_emb', [hid]), g.constInt64([1, hid])]);
    x = g.op('Concat', [cls, x], { axis: 0 });
  }
  x = g.op('Add', [x, g.input('pos', [visionTokenCount(c), hid])]);
  if (isClip(c)) x = layerNorm(g, x, g.input('pre_ln_w', [hid]), g.input('pre_ln_b', [hid]), c.layerNormEps);
  g.output('out', x, [visionTokenCount(c), hid]);
  return g.toBytes();
}

/** Encoder layer weights as the layer graph takes them, named `l<layer>.<short>_w` etc. */
const layerPrefix = (l: number) => `l${l}.`;

/** Adds an encoder layer on x [seq, hidden], its weights as inputs named `p` + `ln1_w` etc.; returns its output. */
function addLayer(g: GraphBuilder, c: VisionConfig, format: WeightFormat, x: string, p: string): string {
  const { hiddenSize: hid, numAttentionHeads: nh, intermediateSize: ffn } = c;
  const hd = hid / nh;
  const w = (name: string, shape: number[]) => g.input(`${p}${name}`, shape);
  /** x @ W^T + b for the weight `short`_w [out, in] and its bias `short`_b. */
  const linear = (x: string, short: string, out: number, inFeatures: number) => weightedLinear(g, x, `${p}${short}_w`, out, inFeatures, format, w(`${short}_b`, [out]));
  const xn = layerNorm(g, x, w('ln1_w', [hid]), w('ln1_b', [hid]), c.layerNormEps);
  const q = g.op('Mul', [splitHeads(g, linear(xn, 'q', hid, hid), nh, hd), g.constFloat([1 / Math.sqrt(hd)])]);
  const kFlat = linear(xn, 'k', hid, hid);
  const kT = g.op('Transpose', [g.op('Reshape', [kFlat, g.constInt64([-1, nh, hd])])], { perm: [1, 2, 0] });
  const v = splitHeads(g, linear(xn, 'v', hid, hid), nh, hd);
  const probs = g.op('Softmax', [g.op('MatMul', [q, kT])], { axis: -1 });
  const attn = linear(mergeHeads(g, g.op('MatMul', [probs, v]), nh, hd), 'o', hid, hid);
  const h = g.op('Add', [x, attn]);
  const hn = layerNorm(g, h, w('ln2_w', [hid]), w('ln2_b', [hid]), c.layerNormEps);
  const mlp = linear(activation(g, linear(hn, 'fc1', ffn, hid), c.hiddenAct), 'fc2', hid, ffn);
  return g.op('Add', [h, mlp]);
}

/**
 * Encoder layers `first` .. `last` - 1 in one graph, their weights baked in: output `h<i>` is
 * hidden_states[i] for each i in `outputs` (and always the last layer's).
 */
function buildLayersGraph(c: VisionConfig, format: WeightFormat, first: number, last: number, outputs: ReadonlySet<number>, baked: Weights): Uint8Array {
  const g = new GraphBuilder('vision_layers');
  let x = g.input('x', ['seq', c.hiddenSize]);
  for (let l = first; l < last; l++) {
    x = addLayer(g, c, format, x, layerPrefix(l));
    if (outputs.has(l + 1) || l + 1 === last) g.output(`h${l + 1}`, x, ['seq', c.hiddenSize]);
  }
  return g.toBytes(baked);
}

/** One encoder layer whose weights (unprefixed names) are fed with each run: output `out`. */
function buildFedLayerGraph(c: VisionConfig, format: WeightFormat): Uint8Array {
  const g = new GraphBuilder('vision_layer');
  g.output('out', addLayer(g, c, format, g.input('x', ['seq', c.hiddenSize]), ''), ['seq', c.hiddenSize]);
  return g.toBytes();
}

/**
 * Weight bytes per session of consecutive baked layers. Each session's arena keeps about one
 * layer's activations (~150 MB at 729 tokens); the serialised graph a load holds at once, and
 * the memory ONNX Runtime leaves behind converting it, grow with the group. Measured on the 0.5B
 * bench checkpoint in int8: 128 MiB groups (4 sessions) peak at 2.2-2.3 GiB, 512 MiB (1 session)
 * at 2.4-2.6, encoding as fast.
 */
const GROUP_BYTES = 128 * 2 ** 20;

/**
 * Consecutive layers run by one session: its own baked weights, or (`feeds`) the one layer
 * `first` whose weights are fed to the shared graph.
 */
interface LayerGroup {
  first: number;
  last: number;
  session: GraphSession;
  feeds?: Weights;
}

/**
 * Quantized, the encoder's layers run in a few sessions of consecutive layers with their
 * weights baked in, each with a memory arena: ONNX Runtime pre-packs baked weights and reuses
 * one run's activation buffers in the next. Together they encode an image ~1.6x faster than
 * one shared layer graph fed each layer's weights (neither alone gains much; 0.5B bench
 * checkpoint, int8, AVX-512 VNNI host). In fp32, whose weights are 4x larger, that costs
 * ~0.7 GiB more at peak (4 arenas, conversion left-overs), so fp32 keeps the shared graph fed
 * each layer's weights, with one arena.
 */
export class VisionTower {
  private constructor(
    readonly config: VisionConfig,
    private readonly embeddingWeights: Weights,
    private readonly embeddingSession: GraphSession,
    private readonly groups: readonly LayerGroup[],
    private readonly featureLayers: ReadonlySet<number>,
  ) {}

  /**
   * Loads the layers up to the deepest of `featureLayers` (hidden_states indices, the only ones
   * `hiddenStates` can return); `prefix` leads to `embeddings.`; `groupBytes` caps the weights
   * baked into one session (quantized formats).
   */
  static async load(
    source: WeightSource,
    prefix: string,
    c: VisionConfig,
    featureLayers: readonly number[],
    format: WeightFormat,
    runtime: RuntimeOptions,
    onLayer?: () => void,
    groupBytes = GROUP_BYTES,
    cache = ConvertedCache.off(),
  ): Promise<VisionTower> {
    const { hiddenSize: hid, numChannels: ch, patchSize: p, intermediateSize: ffn } = c;
    const e = `${prefix}embeddings.`;
    const emb: Weights = {
      patch_w: weight(source, `${e}patch_embedding.weight`, [hid, ch, p, p]),
      pos: weight(source, `${e}position_embedding.weight`, [visionTokenCount(c), hid]),
    };
    if (isClip(c)) {
      emb.class_emb = weight(source, `${e}class_embedding`, [hid]);
      emb.pre_ln_w = weight(source, `${prefix}pre_layrnorm.weight`, [hid]);
      emb.pre_ln_b = weight(source, `${prefix}pre_layrnorm.bias`, [hid]);
    } else {
      emb.patch_b = weight(source, `${e}patch_embedding.bias`, [hid]);
    }
    const layersNeeded = Math.max(...featureLayers);
    const outputs = new Set(featureLayers);
    const groups: LayerGroup[] = [];
    const graphName = (first: number, last: number) => `vision-${first}-${last}.onnx`;
    const addGroup = async (first: number, last: number, graph: Uint8Array | string) => {
      groups.push({ first, last, session: await GraphSession.create(graph, runtime, { arena: true }) });
      for (let l = first; l < last; l++) onLayer?.();
    };
    if (format !== 'fp32' && cache.hit) {
      for (const [first, last] of cache.json<[number, number][]>('vision-groups', () => [])) await addGroup(first, last, cache.file(graphName(first, last)));
      return new VisionTower(c, emb, await GraphSession.create(buildEmbeddingGraph(c), runtime), groups, outputs);
    }
    const fed = format === 'fp32' ? await GraphSession.create(buildFedLayerGraph(c, format), runtime, { arena: true }) : undefined;
    let pending: Weights = {};
    let first = 0;
    const flush = async (last: number) => {
      const weights = pending;
      const graph = cache.graph(graphName(first, last), () => buildLayersGraph(c, format, first, last, outputs, weights));
      pending = {};
      collectGarbage();
      await addGroup(first, last, graph);
      first = last;
    };
    for (let l = 0; l < layersNeeded; l++) {
      const lp = `${prefix}encoder.layers.${l}.`;
      const lw: Weights = {};
      const p = fed === undefined ? layerPrefix(l) : '';
      const pairs: [string, string, number[]][] = [
        ['ln1', 'layer_norm1', [hid]],
        ['q', 'self_attn.q_proj', [hid, hid]],
        ['k', 'self_attn.k_proj', [hid, hid]],
        ['v', 'self_attn.v_proj', [hid, hid]],
        ['o', 'self_attn.out_proj', [hid, hid]],
        ['ln2', 'layer_norm2', [hid]],
        ['fc1', 'mlp.fc1', [ffn, hid]],
        ['fc2', 'mlp.fc2', [hid, ffn]],
      ];
      for (const [short, name, shape] of pairs) {
        if (shape.length === 1) lw[`${p}${short}_w`] = weight(source, `${lp}${name}.weight`, shape);
        else Object.assign(lw, linearFeeds(`${p}${short}_w`, readLinear(source, `${lp}${name}.weight`, shape, format), shape[0]!, shape[1]!, format));
        lw[`${p}${short}_b`] = weight(source, `${lp}${name}.bias`, [shape[0]!]);
      }
      if (fed !== undefined) {
        groups.push({ first: l, last: l + 1, session: fed, feeds: lw });
        onLayer?.();
      } else {
        if (l > first && tensorBytes(pending) + tensorBytes(lw) > groupBytes) await flush(l);
        Object.assign(pending, lw);
      }
    }
    if (fed === undefined && layersNeeded > first) await flush(layersNeeded);
    if (fed === undefined) cache.json('vision-groups', () => groups.map((g) => [g.first, g.last]));
    return new VisionTower(c, emb, await GraphSession.create(buildEmbeddingGraph(c), runtime), groups, outputs);
  }

  async release(): Promise<void> {
    for (const session of new Set([this.embeddingSession, ...this.groups.map((group) => group.session)])) await session.release();
  }

  /** hidden_states[i] for each requested index i, each [tokens, hidden]. */
  async hiddenStates(pixelValues: Float32Array, indices: readonly number[]): Promise<Float32Array[]> {
    const c = this.config;
    if (pixelValues.length !== c.numChannels * c.imageSize * c.imageSize) {
      throw new CorematchingError(`pixel values hold ${pixelValues.length} numbers; the vision tower expects ${c.numChannels}x${c.imageSize}x${c.imageSize}`);
    }
    const unknown = indices.find((i) => i !== 0 && !this.featureLayers.has(i));
    if (unknown !== undefined) throw new CorematchingError(`hidden state ${unknown} was not among the feature layers this vision tower was loaded for`);
    const deepest = Math.max(...indices);
    const states = new Map<number, Float32Array>();
    let [x] = await this.embeddingSession.runFloat(
      { ...this.embeddingWeights, pixels: tensor(pixelValues, [1, c.numChannels, c.imageSize, c.imageSize]) },
      ['out'],
    );
    states.set(0, x!);
    for (const { first, last, session, feeds } of this.groups) {
      if (first >= deepest) break;
      if (feeds !== undefined) {
        [x] = await session.runFloat({ ...feeds, x: tensor(x!, [visionTokenCount(c), c.hiddenSize]) }, ['out']);
        states.set(last, x!);
        continue;
      }
      const names = [...Array(last - first).keys()].map((i) => first + i + 1).filter((i) => i === last || this.featureLayers.has(i));
      const out = await session.runFloat({ x: tensor(x!, [visionTokenCount(c), c.hiddenSize]) }, names.map((i) => `h${i}`));
      names.forEach((i, j) => states.set(i, out[j]!));
      x = out[out.length - 1]!;
    }
    return indices.map((i) => states.get(i)!);
  }
}
