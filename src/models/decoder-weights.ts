/**
 * A LLaMA / Mistral / Qwen2 decoder's weights, read from a checkpoint and laid out the way the
 * layer graph takes them: q/k/v stacked into one matrix, gate/up likewise, down_proj transposed so
 * that each FFN neuron is one row of every FFN matrix.
 */
import ort from 'onnxruntime-node';
import { GraphSession, tensor, type RuntimeOptions } from '../graph/session.js';
import { CorematchingError } from '../io/errors.js';
import type { TextConfig } from '../io/model-config.js';
import { scaleOf, type WeightFormat } from '../graph/ops.js';
import { ConvertedCache } from './converted-cache.js';
import type { NativeKernels, PackedWeight } from '../native/kernels.js';
import { nativeLayer, nativeLayerTensors, type NativeDecoderLayer } from './native-decode.js';
import { buildLayerGroupGraph, buildLmHeadGraph } from './decoder-graph.js';
import { groupPrefix, HEAD, LAYER } from './decoder-io.js';
import { emptyInt4, emptyInt8, quantizeInt4Rows, quantizeLinearRows, quantizeRowsInto } from './quantize.js';
import { collectGarbage } from '../util/collect-garbage.js';
import { forEachRowSlice, linearFeeds, optionalWeight, quantizedLinearFeeds, tensorBytes, weight, type WeightSource } from './weights.js';

/** One layer's feeds, by graph input name. */
export type LayerWeights = Record<string, ort.Tensor>;

/** Tensors of `rows[i]` x `width` (width 1: vectors) stacked row-wise into one fresh [sum(rows), width] matrix. */
function stacked(source: WeightSource, names: string[], rows: number[], width = 1): Float32Array {
  const out = new Float32Array(rows.reduce((a, b) => a + b, 0) * width);
  let offset = 0;
  names.forEach((name, i) => {
    const shape = width === 1 ? [rows[i]!] : [rows[i]!, width];
    out.set(source.readTemporary(name, shape, 'part'), offset);
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

/**
 * One layer's feeds in `format`. fp32 keeps the checkpoint's matrices (q/k/v and gate/up stacked,
 * down_proj transposed); quantized formats convert them a slice of rows at a time as they are
 * read, so loading never holds a layer's matrices in fp32 (at 7B that was ~1 GB of buffers).
 */
function loadLayer(source: WeightSource, p: string, c: TextConfig, format: WeightFormat): LayerWeights {
  const { hiddenSize: h, numAttentionHeads: nh, numKeyValueHeads: kvh, headDim: hd, intermediateSize: ffn } = c;
  const qkvRows = [nh * hd, kvh * hd, kvh * hd];
  const qkvNames = (kind: string) => ['q_proj', 'k_proj', 'v_proj'].map((n) => `${p}self_attn.${n}.${kind}`);
  const gateUp = [`${p}mlp.gate_proj`, `${p}mlp.up_proj`];
  const [oName, downName] = [`${p}self_attn.o_proj.weight`, `${p}mlp.down_proj.weight`];
  const entries: [string, ort.Tensor | undefined][] = [
    [LAYER.inputNorm, weight(source, `${p}input_layernorm.weight`, [h])],
    [LAYER.qkvBias, c.qkvBias ? tensor(stacked(source, qkvNames('bias'), qkvRows), [nh * hd + 2 * kvh * hd]) : undefined],
    [LAYER.oBias, optionalWeight(source, `${p}self_attn.o_proj.bias`, [h], c.oBias)],
    [LAYER.postNorm, weight(source, `${p}post_attention_layernorm.weight`, [h])],
    [LAYER.gateUpBias, c.mlpBias ? tensor(stacked(source, gateUp.map((n) => `${n}.bias`), [ffn, ffn]), [2 * ffn]) : undefined],
    [LAYER.downBias, optionalWeight(source, `${p}mlp.down_proj.bias`, [h], c.mlpBias)],
  ];
  const vectors = Object.fromEntries(entries.filter((e): e is [string, ort.Tensor] => e[1] !== undefined));
  if (format === 'fp32') {
    return {
      ...vectors,
      ...linearFeeds(LAYER.qkv, stacked(source, qkvNames('weight'), qkvRows, h), nh * hd + 2 * kvh * hd, h, format),
      ...linearFeeds(LAYER.o, source.read(oName, [h, nh * hd]), h, nh * hd, format),
      ...linearFeeds(LAYER.gateUp, stacked(source, gateUp.map((n) => `${n}.weight`), [ffn, ffn], h), 2 * ffn, h, format),
      ...linearFeeds(LAYER.downT, transpose(source.read(downName, [h, ffn]), h, ffn), h, ffn, format, true),
    };
  }
  // int8 quantizes W [out, in] to B = W^T [in, out]: down_proj's B is [ffn, h], a neuron a row, as the graph takes down_t.
  return {
    ...vectors,
    ...quantizedLinearFeeds(LAYER.qkv, source, qkvNames('weight'), qkvRows, h, format),
    ...quantizedLinearFeeds(LAYER.o, source, [oName], [h], nh * hd, format),
    ...quantizedLinearFeeds(LAYER.gateUp, source, gateUp.map((n) => `${n}.weight`), [ffn, ffn], h, format),
    ...quantizedLinearFeeds(LAYER.downT, source, [downName], [h], ffn, format),
  };
}

/** The token-embedding table: fp32 rows, or int8 rows with one scale each (quantized formats). */
type Embedding = { table: Float32Array } | { int8: Int8Array; scales: Float32Array };

/**
 * The token embeddings as int8 rows and the LM head's weight in `format` (`headName` undefined:
 * tied to the embeddings), as feeds. Vocabulary-sized tables convert a slice of rows at a time.
 */
function quantizeEmbeddingAndHead(
  source: WeightSource,
  embedName: string,
  headName: string | undefined,
  c: TextConfig,
  format: WeightFormat,
  finalNorm: ort.Tensor,
): { embedding: Record<string, ort.Tensor>; head: Record<string, ort.Tensor> } {
  const [h, vocab] = [c.hiddenSize, c.vocabSize];
  const rows = { values: new Int8Array(vocab * h), scales: new Float32Array(vocab) };
  const headWeight = format === 'int4' ? emptyInt4(vocab, h) : emptyInt8(vocab, h);
  const quantizeHead = (slice: Float32Array, first: number) =>
    format === 'int4' ? quantizeInt4Rows(slice, first, h, headWeight) : quantizeLinearRows(slice, first, h, headWeight);
  forEachRowSlice(source, embedName, vocab, h, (slice, first) => {
    quantizeRowsInto(slice, first, h, rows);
    if (headName === undefined) quantizeHead(slice, first);
  });
  if (headName !== undefined) forEachRowSlice(source, headName, vocab, h, quantizeHead);
  return {
    embedding: { int8: new ort.Tensor('int8', rows.values, [vocab, h]), scales: tensor(rows.scales, [vocab]) },
    head: { [HEAD.weight]: headWeight.values, [scaleOf(HEAD.weight)]: headWeight.scales, [HEAD.norm]: finalNorm },
  };
}

/**
 * The token embeddings, and the LM head: a session with its weight baked in unless it shares an
 * fp32 table with them, or, where decode steps run natively, its weight for the native kernels
 * (it then computes every logit the decoder makes, and no session holds it).
 */
async function loadEmbeddingAndHead(
  source: WeightSource,
  prefix: string,
  lmHeadName: string,
  c: TextConfig,
  format: WeightFormat,
  runtime: RuntimeOptions,
  cache: ConvertedCache,
  native: NativeKernels | null,
): Promise<{ embedding: Embedding; head: GraphSession | NativeHead; lmHead: LayerWeights }> {
  const [h, vocab] = [c.hiddenSize, c.vocabSize];
  const finalNorm = weight(source, `${prefix}norm.weight`, [h]);
  const embedName = `${prefix}embed_tokens.weight`;
  const tied = c.tieWordEmbeddings && !source.has(lmHeadName);
  if (format === 'fp32') {
    const table = source.read(embedName, [vocab, h]);
    // A tied fp32 table serves both; baking it would hold it twice.
    const headFeeds = linearFeeds(HEAD.weight, tied ? table : source.read(lmHeadName, [vocab, h]), vocab, h, format);
    const head = await GraphSession.create(buildLmHeadGraph(c, format, tied ? {} : { ...headFeeds, [HEAD.norm]: finalNorm }), runtime);
    return { embedding: { table }, head, lmHead: tied ? { ...headFeeds, [HEAD.norm]: finalNorm } : {} };
  }
  // One pass converts both (a tied table is read once); a cache hit converts nothing.
  let converted: ReturnType<typeof quantizeEmbeddingAndHead> | undefined;
  const convert = () => (converted ??= quantizeEmbeddingAndHead(source, embedName, tied ? undefined : lmHeadName, c, format, finalNorm));
  const table = cache.tensors('embedding', () => convert().embedding);
  const embedding = { int8: table.int8!.data as Int8Array, scales: table.scales!.data as Float32Array };
  if (native !== null) {
    const t = cache.tensors('native-head', () => {
      const head = convert().head;
      const values = head[HEAD.weight]!.data as Int8Array | Uint8Array;
      const data = format === 'int8' ? native.packInt8(values as Int8Array, head[scaleOf(HEAD.weight)]!.data as Float32Array, c.vocabSize, h).data : (values as Uint8Array);
      return { weight: new ort.Tensor('uint8', data, [data.length]), scales: head[scaleOf(HEAD.weight)]!, norm: finalNorm };
    });
    const weight: PackedWeight = { bits: format === 'int8' ? 8 : 4, rows: vocab, cols: h, data: t.weight!.data as Uint8Array, scales: t.scales!.data as Float32Array };
    return { embedding, head: { weight, norm: t.norm!.data as Float32Array }, lmHead: {} };
  }
  const headGraph = cache.graph('lm-head.onnx', () => buildLmHeadGraph(c, format, convert().head));
  // The head's quantized feeds are garbage once serialised: free them before ONNX Runtime copies the graph.
  converted = undefined;
  collectGarbage();
  return { embedding, head: await GraphSession.create(headGraph, runtime), lmHead: {} };
}

/**
 * The decoder layers, baked into layer groups of consecutive layers (see LayerGroup). A cache hit
 * reads the groups' graphs as the first load wrote them.
 */
async function loadLayerGroups(
  source: WeightSource,
  prefix: string,
  c: TextConfig,
  format: WeightFormat,
  runtime: RuntimeOptions,
  onLayer: (() => void) | undefined,
  layerBreaks: readonly number[],
  cache: ConvertedCache,
  native: NativeKernels | null,
): Promise<{ groups: LayerGroup[]; nativeLayers: NativeDecoderLayer[] | null }> {
  const groups: LayerGroup[] = [];
  const nativeLayers: NativeDecoderLayer[] | null = native === null || format === 'fp32' ? null : [];
  // A layer's native weights come from the feeds its group bakes, so they are cached with them.
  const addNative = (l: number, feeds?: LayerWeights) => {
    if (nativeLayers === null) return;
    const q = format as 'int8' | 'int4';
    nativeLayers.push(nativeLayer(native!, cache.tensors(`native-${l}`, () => nativeLayerTensors(native!, feeds!, c, q)), c, q));
  };
  const graphName = (first: number, end: number) => `decoder-${first}-${end}.onnx`;
  const addGroup = async (first: number, end: number, graph: Uint8Array | string) => {
    groups.push({ first, end, session: await GraphSession.create(graph, runtime) });
    for (let l = first; l < end; l++) onLayer?.();
  };
  if (cache.hit) {
    for (const [first, end] of cache.json<[number, number][]>('decoder-groups', () => [])) await addGroup(first, end, cache.file(graphName(first, end)));
    for (let l = 0; l < c.numHiddenLayers; l++) addNative(l);
    return { groups, nativeLayers };
  }
  let pending: { first: number; feeds: LayerWeights; bytes: number } = { first: 0, feeds: {}, bytes: 0 };
  const bake = async (end: number) => {
    const { first, feeds } = pending;
    const layers = Array.from({ length: end - first }, (_, i) => first + i);
    const graph = cache.graph(graphName(first, end), () => buildLayerGroupGraph(c, format, layers, feeds));
    // The serialised graph holds the weights now: let the feeds go before ONNX Runtime copies them again.
    pending = { first: end, feeds: {}, bytes: 0 };
    collectGarbage();
    await addGroup(first, end, graph);
  };
  for (let l = 0; l < c.numHiddenLayers; l++) {
    const feeds = loadLayer(source, `${prefix}layers.${l}.`, c, format);
    addNative(l, feeds);
    const bytes = tensorBytes(feeds);
    if (l > pending.first && (pending.bytes + bytes > GROUP_BYTES || layerBreaks.includes(l))) await bake(l);
    for (const [name, t] of Object.entries(feeds)) pending.feeds[groupPrefix(l) + name] = t;
    pending.bytes += bytes;
  }
  await bake(c.numHiddenLayers);
  cache.json('decoder-groups', () => groups.map((g) => [g.first, g.end]));
  return { groups, nativeLayers };
}

/** Reopens the checkpoint the decoder was loaded from (for weights read after loading). */
export type SourceOpener = () => WeightSource & { close(): void };

/** The LM head for the native kernels: the final norm's weight and the head's. */
export interface NativeHead {
  norm: Float32Array;
  weight: PackedWeight;
}

export interface DecoderLoadOptions {
  /** Serves weights read after loading (compact FFNs). */
  reopen?: SourceOpener;
  /** Called as each layer is loaded. */
  onLayer?: () => void;
  /** Layers that start a new layer group (see LayerGroup). */
  layerBreaks?: readonly number[];
  /** Where converted weights are kept between loads. */
  cache?: ConvertedCache;
  /** Kernels for native decode steps (int8/int4), or null. */
  native?: NativeKernels | null;
}

/**
 * Consecutive layers first .. end - 1 baked into one session (decoder-graph.ts buildLayerGroupGraph).
 * A group ends where its weights would pass GROUP_BYTES or at a layer break: the layers where the
 * default sparsity policies begin to drop tokens or decode with core neurons, which would otherwise
 * make a group run layer by layer (llama.ts). A group of one layer returns taps.
 */
export interface LayerGroup {
  readonly first: number;
  readonly end: number;
  readonly session: GraphSession;
}

/**
 * Weights a layer group holds at most: each session run costs ~0.15 ms beyond its operators
 * (a decode step of 24 one-layer sessions spent ~3 ms of ~30 on them), while a group's weights
 * are held up to three times over while its session is made (feeds, serialised graph, ONNX
 * Runtime's copy). A layer larger than this is a group of its own.
 */
const GROUP_BYTES = 128 * 1024 * 1024;

/**
 * Everything the decoder's weights are held in. The layers' weights are baked into sessions of
 * consecutive layers (so ORT pre-packs them, and int4 runs at all: see graph/builder.ts), and the
 * JavaScript side keeps only what it reads itself: the token embeddings, and the LM head when
 * it shares an fp32 table with them. A layer's weights as feeds, for the single-layer graph
 * and the group graph that take compact core-neuron FFNs (the single-layer graph also runs a
 * group's layers one by one when a policy drops tokens or reads taps inside it), are read again
 * from the checkpoint the first time a request asks for that layer (int4 models use int8
 * copies: MatMulNBits is ~60x slower on a weight fed as an input).
 */
export class DecoderWeights {
  private readonly feeds = new Map<number, LayerWeights>();

  private constructor(
    private readonly c: TextConfig,
    private readonly prefix: string,
    private readonly embedding: Embedding,
    /** The LM head: a session, whose graph takes `lmHead` as inputs, or its weight for the native kernels. */
    readonly head: GraphSession | NativeHead,
    readonly lmHead: LayerWeights,
    private readonly groups: readonly LayerGroup[],
    readonly feedFormat: WeightFormat,
    private readonly reopen: SourceOpener | undefined,
    /** Each layer for native decode steps (native-decode.ts), or null: decode runs on the groups. */
    readonly nativeLayers: readonly NativeDecoderLayer[] | null,
  ) {}

  /** Loads weights under `prefix` (e.g. `model.language_model.`); `lmHeadName` unless tied. */
  static async load(source: WeightSource, prefix: string, lmHeadName: string, c: TextConfig, format: WeightFormat, runtime: RuntimeOptions, options: DecoderLoadOptions = {}): Promise<DecoderWeights> {
    const { reopen, onLayer, layerBreaks = [], cache = ConvertedCache.off(), native = null } = options;
    // The vocabulary-sized tables first, while little else is held: converting them is the
    // largest transient of a load (a 152k-row head: ~0.5 GiB at int8).
    const { embedding, head, lmHead } = await loadEmbeddingAndHead(source, prefix, lmHeadName, c, format, runtime, cache, native);
    collectGarbage();
    const { groups, nativeLayers } = await loadLayerGroups(source, prefix, c, format, runtime, onLayer, layerBreaks, cache, native);
    collectGarbage();
    const feedFormat = format === 'int4' ? 'int8' : format;
    return new DecoderWeights(c, prefix, embedding, head, lmHead, groups, feedFormat, reopen, nativeLayers);
  }

  /** Writes token `id`'s embedding, `hidden` values, at out[at ..]. */
  embedInto(id: number, hidden: number, out: Float32Array, at: number): void {
    const e = this.embedding;
    if ('table' in e) {
      out.set(e.table.subarray(id * hidden, (id + 1) * hidden), at);
      return;
    }
    const scale = e.scales[id]!;
    for (let i = 0; i < hidden; i++) out[at + i] = e.int8[id * hidden + i]! * scale;
  }

  /** The layer group that starts at `layer`, if one does. */
  groupAt(layer: number): LayerGroup | undefined {
    return this.groups.find((g) => g.first === layer);
  }

  /** Layer `layer`'s weights as feeds in `feedFormat`, read from the checkpoint on first use. */
  layerFeeds(layer: number): LayerWeights {
    let feeds = this.feeds.get(layer);
    if (feeds === undefined) {
      const source = this.reopenSource();
      try {
        feeds = loadLayer(source, `${this.prefix}layers.${layer}.`, this.c, this.feedFormat);
      } finally {
        source.close();
      }
      this.feeds.set(layer, feeds);
    }
    return feeds;
  }

  /**
   * Layer `layer`'s down projection alone as int8 feeds (B [ffn, hidden], a neuron a row), read
   * from the checkpoint (not kept: the caller keeps what it makes of them): what an int4 model's
   * native core-neuron FFNs are cut from.
   */
  int8Down(layer: number): LayerWeights {
    let feeds = this.feeds.get(layer);
    if (feeds === undefined) {
      const source = this.reopenSource();
      try {
        const h = this.c.hiddenSize;
        feeds = quantizedLinearFeeds(LAYER.downT, source, [`${this.prefix}layers.${layer}.mlp.down_proj.weight`], [h], this.c.intermediateSize, 'int8');
      } finally {
        source.close();
      }
    }
    return feeds;
  }

  private reopenSource(): WeightSource & { close(): void } {
    if (this.reopen === undefined) throw new CorematchingError('this decoder was loaded without a way to reopen its checkpoint, so it cannot run compact FFNs');
    return this.reopen();
  }

  async release(): Promise<void> {
    for (const session of this.groups.map((g) => g.session)) await session.release();
    if (this.head instanceof GraphSession) await this.head.release();
  }
}
