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
import { linearFeeds, readLinear, weight, type WeightSource } from './weights.js';

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

function buildLayerGraph(c: VisionConfig, format: WeightFormat): Uint8Array {
  const g = new GraphBuilder('vision_layer');
  const { hiddenSize: hid, numAttentionHeads: nh, intermediateSize: ffn } = c;
  const hd = hid / nh;
  const w = (name: string, shape: number[]) => g.input(name, shape);
  /** x @ W^T + b for the weight `short`_w [out, in] and its bias `short`_b. */
  const linear = (x: string, short: string, out: number, inFeatures: number) => weightedLinear(g, x, `${short}_w`, out, inFeatures, format, w(`${short}_b`, [out]));
  const x = g.input('x', ['seq', hid]);
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
  g.output('out', g.op('Add', [h, mlp]), ['seq', hid]);
  return g.toBytes();
}

export class VisionTower {
  private constructor(
    readonly config: VisionConfig,
    private readonly embeddingWeights: Weights,
    private readonly layers: Weights[],
    private readonly embeddingSession: GraphSession,
    private readonly layerSession: GraphSession,
  ) {}

  /** Loads the layers up to the deepest one a feature layer needs; `prefix` leads to `embeddings.`. */
  static async load(
    source: WeightSource,
    prefix: string,
    c: VisionConfig,
    layersNeeded: number,
    format: WeightFormat,
    runtime: RuntimeOptions,
    onLayer?: () => void,
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
    const layers: Weights[] = [];
    for (let l = 0; l < layersNeeded; l++) {
      const lp = `${prefix}encoder.layers.${l}.`;
      const lw: Weights = {};
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
        if (shape.length === 1) lw[`${short}_w`] = weight(source, `${lp}${name}.weight`, shape);
        else Object.assign(lw, linearFeeds(`${short}_w`, readLinear(source, `${lp}${name}.weight`, shape, format), shape[0]!, shape[1]!, format));
        lw[`${short}_b`] = weight(source, `${lp}${name}.bias`, [shape[0]!]);
      }
      layers.push(lw);
      onLayer?.();
    }
    const [embeddingSession, layerSession] = await Promise.all([
      GraphSession.create(buildEmbeddingGraph(c), runtime),
      GraphSession.create(buildLayerGraph(c, format), runtime),
    ]);
    return new VisionTower(c, emb, layers, embeddingSession, layerSession);
  }

  async release(): Promise<void> {
    await this.embeddingSession.release();
    await this.layerSession.release();
  }

  /** hidden_states[i] for each requested index i, each [tokens, hidden]. */
  async hiddenStates(pixelValues: Float32Array, indices: readonly number[]): Promise<Float32Array[]> {
    const c = this.config;
    if (pixelValues.length !== c.numChannels * c.imageSize * c.imageSize) {
      throw new CorematchingError(`pixel values hold ${pixelValues.length} numbers; the vision tower expects ${c.numChannels}x${c.imageSize}x${c.imageSize}`);
    }
    const deepest = Math.max(...indices);
    const states = new Map<number, Float32Array>();
    let [x] = await this.embeddingSession.runFloat(
      { ...this.embeddingWeights, pixels: tensor(pixelValues, [1, c.numChannels, c.imageSize, c.imageSize]) },
      ['out'],
    );
    states.set(0, x!);
    for (let l = 0; l < deepest; l++) {
      [x] = await this.layerSession.runFloat({ ...this.layers[l], x: tensor(x!, [visionTokenCount(c), c.hiddenSize]) }, ['out']);
      states.set(l + 1, x!);
    }
    return indices.map((i) => states.get(i)!);
  }
}
