/**
 * LLaMA / Mistral / Qwen2 decoder: the forward pass over a KV cache, in the spirit of mlx-lm's
 * `models/llama.py` and llama2.c's `forward()`.
 *
 *   const cache = decoder.newCache(capacity);
 *   let { logits } = await decoder.forward(decoder.embed(promptIds), positions, cache);  // prefill
 *   ({ logits } = await decoder.step(token, position, cache));                           // decode
 *
 * Consecutive layers run as one ONNX graph (decoder-graph.ts) in a session of their own, their
 * weights baked in: a layer group. `hooks` let a caller (the generation loop, on behalf of a
 * sparsity policy) drop rows between layers and read FFN activations and attention inside them;
 * `ffns` swaps in compact core-neuron FFNs, which run through graphs that take every weight as an
 * input. Where a group cannot serve a request (rows dropped or taps read inside it, a compact FFN
 * in a group of one), its layers run one by one through the single-layer graph, fed.
 */
import type ort from 'onnxruntime-node';
import { GraphSession, int64Tensor, tensor, type Feeds, type RuntimeOptions } from '../graph/session.js';
import { SessionCache } from '../graph/session-cache.js';
import { CorematchingError } from '../io/errors.js';
import type { TextConfig } from '../io/model-config.js';
import type { WeightFormat } from '../graph/ops.js';
import { compactFfn, FfnWorkspace } from './compact-ffn.js';
import { buildLayerGraph, buildLayerGroupGraph, cacheMask, causalMask, layerGraphKey, type TapRequest } from './decoder-graph.js';
import { DecoderWeights, type DecoderLoadOptions, type LayerGroup } from './decoder-weights.js';
import { decodeKernels, nativeFfn, packedDown, type DecodeKernel, type NativeFfn } from './native-decode.js';
import type { NativeKernels, PackedWeight } from '../native/kernels.js';
import { groupPrefix, HEAD, LAYER, STEP } from './decoder-io.js';
import { KvCache } from './kv-cache.js';
import { inverseFrequencies, ropeTables } from './rope.js';
import type { WeightSource } from './weights.js';

/**
 * A layer's FFN cut to its core neurons: ONNX Runtime feeds (compact-ffn.ts) fed instead of the
 * dense ones, or, where decode steps run natively, the neurons and their down columns.
 */
export type FfnWeights = Feeds | NativeFfn;

const isNativeFfn = (f: FfnWeights | undefined): f is NativeFfn => f !== undefined && f.neurons instanceof Int32Array;

/** A compact FFN as ONNX Runtime feeds (native ones serve native steps only). */
function ortFfn(f: FfnWeights | undefined): Feeds | undefined {
  if (isNativeFfn(f)) throw new Error('a native compact FFN reached an ONNX Runtime layer');
  return f;
}

/** What a layer returned for its taps. */
export interface LayerTaps {
  /** act(gate(h)) * up(h) of the tokens the layer processed, [tokens, intermediate]. */
  ffnActivations?: Float32Array;
  /** The last token's softmax attention over every token the layer attended to (cached, then new), [heads, keys]. */
  lastAttention?: Float32Array;
}

/** Consulted around each layer of one forward pass. */
export interface LayerHooks {
  /** Before `layer` runs: which of the current rows (at `positions`) go on, ascending, or null for all. */
  selectRows(layer: number, positions: readonly number[]): number[] | null;
  /**
   * Whether selectRows(layer) may drop rows, answered before earlier layers run: a layer group
   * runs in one session only if none of its layers but the first may.
   */
  selectsRowsAt(layer: number): boolean;
  /** What `layer` must additionally return. */
  taps(layer: number): TapRequest;
  /** After `layer` ran on `tokens` rows; its K/V are already in the cache. */
  afterLayer(layer: number, taps: LayerTaps, tokens: number): void;
}

export interface ForwardOptions {
  hooks?: LayerHooks;
  /** Per layer, compact FFN weights used instead of the dense FFN (undefined: dense). */
  ffns?: readonly (FfnWeights | undefined)[];
}

export interface ForwardResult {
  /** Logits of the last row, [vocab]. */
  logits: Float32Array;
  /** Rows each layer processed. */
  tokensPerLayer: number[];
}

export class LlamaDecoder {
  private readonly sessions: SessionCache;
  private readonly invFreq: Float32Array;
  private readonly workspaces: FfnWorkspace[] = [];
  /** int4 models' int8 down projections packed for native core-neuron FFNs, made on first use. */
  private readonly packedDowns = new Map<number, PackedWeight>();

  private constructor(
    readonly config: TextConfig,
    private readonly weights: DecoderWeights,
    readonly format: WeightFormat,
    runtime: RuntimeOptions,
    private readonly native: NativeKernels | null,
  ) {
    this.sessions = new SessionCache(runtime);
    this.invFreq = inverseFrequencies(config.headDim, config.ropeTheta);
  }

  /** Which kernels run decode steps. */
  get decodeKernel(): DecodeKernel {
    return this.weights.nativeLayers === null ? 'ort' : 'native';
  }

  /**
   * Loads weights under `prefix` (e.g. `model.language_model.`); `lmHeadName` unless tied.
   * `decodeKernel` (default native where the kernels are built) picks what runs decode steps of
   * quantized formats; the rest of `options` goes to DecoderWeights.load.
   */
  static async load(
    source: WeightSource,
    prefix: string,
    lmHeadName: string,
    c: TextConfig,
    format: WeightFormat,
    runtime: RuntimeOptions,
    options: Omit<DecoderLoadOptions, 'native'> & { decodeKernel?: DecodeKernel } = {},
  ): Promise<LlamaDecoder> {
    const native = decodeKernels(options.decodeKernel, format, c);
    if (native !== null && runtime.threads !== undefined) native.setThreads(runtime.threads);
    return new LlamaDecoder(c, await DecoderWeights.load(source, prefix, lmHeadName, c, format, runtime, { ...options, native }), format, runtime, native);
  }

  /** An empty KV cache for this decoder holding up to `capacity` tokens per layer. */
  newCache(capacity: number): KvCache {
    const cache = new KvCache(this.config.numHiddenLayers, this.config.numKeyValueHeads, this.config.headDim);
    cache.reset(capacity);
    return cache;
  }

  /** Token embeddings, [ids.length, hidden]. */
  embed(ids: readonly number[]): Float32Array {
    const { hiddenSize: h, vocabSize } = this.config;
    const out = new Float32Array(ids.length * h);
    ids.forEach((id, i) => {
      // transformers raises here too; a silent zero row would be a wrong answer.
      if (!(Number.isInteger(id) && id >= 0 && id < vocabSize)) {
        throw new CorematchingError(`token id ${id} at position ${i} is outside the embedding's ${vocabSize} rows`);
      }
      this.weights.embedInto(id, h, out, i * h);
    });
    return out;
  }

  /**
   * Runs every layer on `hidden` ([positions.length, hidden]) at `positions`, appending each
   * layer's keys and values to `cache`; returns the last row's logits.
   */
  async forward(hidden: Float32Array, positions: readonly number[], cache: KvCache, options: ForwardOptions = {}): Promise<ForwardResult> {
    const { hooks, ffns } = options;
    const width = this.config.hiddenSize;
    const tokensPerLayer: number[] = [];
    const step = new StepTables(this.config.headDim, this.invFreq, cache.capacity);
    let rows = positions;
    for (let layer = 0; layer < this.config.numHiddenLayers; ) {
      const keep = hooks?.selectRows(layer, rows) ?? null;
      if (keep !== null) {
        hidden = gatherRows(hidden, keep, width);
        rows = keep.map((i) => rows[i]!);
      }
      const group = this.weights.groupAt(layer);
      if (group !== undefined && wholeGroup(group, hooks, ffns)) {
        const single = group.end - group.first === 1;
        const result = hasCompactFfn(group, ffns)
          ? await this.runFedGroup(group, hidden, rows, cache, step, ffns!)
          : await this.runGroup(group, hidden, rows, cache, step, single ? (hooks?.taps(layer) ?? {}) : {});
        hidden = result.hidden;
        for (let l = group.first; l < group.end; l++) {
          tokensPerLayer.push(rows.length);
          hooks?.afterLayer(l, l === group.end - 1 ? result.taps : {}, rows.length);
        }
        layer = group.end;
        continue;
      }
      tokensPerLayer.push(rows.length);
      const result = await this.runLayer(layer, hidden, rows, cache, step, hooks?.taps(layer) ?? {}, ffns?.[layer]);
      hidden = result.hidden;
      hooks?.afterLayer(layer, result.taps, rows.length);
      layer++;
    }
    return { logits: await this.logits(hidden.subarray((rows.length - 1) * width), 1), tokensPerLayer };
  }

  /** One decode step: `token` at `position`. */
  async step(token: number, position: number, cache: KvCache, ffns?: readonly (FfnWeights | undefined)[]): Promise<ForwardResult> {
    const layers = this.weights.nativeLayers;
    if (layers === null) return this.forward(this.embed([token]), [position], cache, ffns === undefined ? {} : { ffns });
    // Every layer on the native kernels, each writing its key and value into the cache in place.
    const h = this.embed([token]);
    const { cos, sin } = ropeTables([position], this.config.headDim, this.invFreq);
    const tokensPerLayer: number[] = [];
    layers.forEach((layer, l) => {
      const ffn = ffns?.[l];
      const { k, v } = cache.rawBuffers(l);
      this.native!.layerStep(layer.layer, h, k, v, cache.capacity, cache.length(l), cos, sin, isNativeFfn(ffn) ? ffn.neurons : null, isNativeFfn(ffn) ? ffn.down : null);
      cache.appended(l, 1);
      tokensPerLayer.push(1);
    });
    return { logits: await this.logits(h, 1), tokensPerLayer };
  }

  /** Final norm and LM head over `rows` hidden states, [rows, vocab]. */
  async logits(hidden: Float32Array, rows: number): Promise<Float32Array> {
    const head = this.weights.head;
    if (head instanceof GraphSession) {
      const [logits] = await head.runFloat({ ...this.weights.lmHead, [HEAD.x]: tensor(hidden, [rows, this.config.hiddenSize]) }, [HEAD.logits]);
      return logits!;
    }
    const { hiddenSize: h, vocabSize: vocab, rmsNormEps: eps } = this.config;
    const logits = new Float32Array(rows * vocab);
    const normed = new Float32Array(h);
    for (let r = 0; r < rows; r++) {
      rmsNormInto(hidden.subarray(r * h, (r + 1) * h), head.norm, eps, normed);
      this.native!.gemv(head.weight, normed, logits.subarray(r * vocab, (r + 1) * vocab));
    }
    return logits;
  }

  /**
   * Compact FFN weights of `neurons` for `layer`, in that layer's reusable workspace: valid until
   * the next call for the same layer (generation runs one request at a time).
   */
  compactFfn(layer: number, neurons: readonly number[]): FfnWeights {
    const nativeLayers = this.weights.nativeLayers;
    if (this.native !== null && nativeLayers !== null) {
      const native = this.native;
      const int8Down = () => {
        let packed = this.packedDowns.get(layer);
        if (packed === undefined) this.packedDowns.set(layer, (packed = packedDown(native, this.weights.int8Down(layer), this.config.hiddenSize, this.config.intermediateSize)));
        return packed;
      };
      return nativeFfn(native, nativeLayers[layer]!, neurons, int8Down);
    }
    const workspace = (this.workspaces[layer] ??= new FfnWorkspace());
    return compactFfn(this.weights.layerFeeds(layer), neurons, this.config.intermediateSize, this.config.hiddenSize, workspace);
  }

  async release(): Promise<void> {
    await this.sessions.release();
    await this.weights.release();
  }

  /** `layer` alone through the single-layer graph, fed its weights (and a compact FFN's). */
  private async runLayer(
    layer: number,
    hidden: Float32Array,
    positions: readonly number[],
    cache: KvCache,
    step: StepTables,
    taps: TapRequest,
    ffn: FfnWeights | undefined,
  ): Promise<{ hidden: Float32Array; taps: LayerTaps }> {
    const variant = { withCache: cache.length(layer) > 0, format: this.weights.feedFormat, ...taps };
    const session = await this.sessions.get(layerGraphKey(variant), () => buildLayerGraph(this.config, variant));
    const feeds: Feeds = { ...this.weights.layerFeeds(layer), ...ortFfn(ffn), ...this.stepFeeds(hidden, positions, step) };
    return this.runLayers(session, feeds, [layer], () => '', variant.withCache, positions.length, cache, step, taps);
  }

  /** A group's layers in its one session, with their baked weights (`taps`: of a group of one). */
  private runGroup(group: LayerGroup, hidden: Float32Array, positions: readonly number[], cache: KvCache, step: StepTables, taps: TapRequest) {
    const layers = layersOf(group);
    const feeds = this.stepFeeds(hidden, positions, step);
    return this.runLayers(group.session, feeds, layers, groupPrefix, true, positions.length, cache, step, taps);
  }

  /**
   * A group's layers, some with compact FFNs, in one session of the group graph that takes every
   * weight as an input: one run instead of one per layer (built once per group and format).
   */
  private async runFedGroup(group: LayerGroup, hidden: Float32Array, positions: readonly number[], cache: KvCache, step: StepTables, ffns: readonly (FfnWeights | undefined)[]) {
    const format = this.weights.feedFormat;
    const layers = layersOf(group);
    const session = await this.sessions.get(`fed-group:${format}:${group.first}-${group.end}`, () => buildLayerGroupGraph(this.config, format, layers));
    const feeds = this.stepFeeds(hidden, positions, step);
    for (const l of layers) {
      for (const [name, t] of Object.entries({ ...this.weights.layerFeeds(l), ...ortFfn(ffns[l]) })) feeds[groupPrefix(l) + name] = t;
    }
    return this.runLayers(session, feeds, layers, groupPrefix, true, positions.length, cache, step, {});
  }

  /**
   * Runs `layers` in `session` (their inputs and outputs named `${prefix(l)}<name>`), with their
   * caches when `withCache`; appends their new keys and values and returns the last one's output
   * and taps.
   */
  private async runLayers(
    session: GraphSession,
    feeds: Feeds,
    layers: readonly number[],
    prefix: (layer: number) => string,
    withCache: boolean,
    seq: number,
    cache: KvCache,
    step: StepTables,
    taps: TapRequest,
  ): Promise<{ hidden: Float32Array; taps: LayerTaps }> {
    const last = layers[layers.length - 1]!;
    const past = cache.length(last);
    let slots = 0;
    const names: string[] = [STEP.out];
    for (const l of layers) {
      if (withCache) slots = this.cacheFeeds(l, prefix(l), cache, step, feeds);
      names.push(prefix(l) + LAYER.newK, prefix(l) + LAYER.newV);
    }
    if (taps.ffnActivations) names.push(prefix(last) + LAYER.ffnAct);
    if (taps.lastAttention) names.push(prefix(last) + LAYER.lastAttn);
    const [out, ...rest] = await session.runFloat(feeds, names);
    for (const l of layers) cache.append(l, rest.shift()!, rest.shift()!, seq);
    const result: LayerTaps = {};
    if (taps.ffnActivations) result.ffnActivations = rest.shift()!;
    if (taps.lastAttention) result.lastAttention = filledColumns(rest.shift()!, this.config.numAttentionHeads, slots, past, seq);
    return { hidden: out!, taps: result };
  }

  /** The inputs every layer of a pass shares: the rows, their RoPE lines and causal mask. */
  private stepFeeds(hidden: Float32Array, positions: readonly number[], step: StepTables): Feeds {
    const c = this.config;
    const seq = positions.length;
    const rope = step.rope(positions);
    return {
      [STEP.x]: tensor(hidden, [seq, c.hiddenSize]),
      [STEP.cos]: tensor(rope.cos, [seq, c.headDim / 2]),
      [STEP.sin]: tensor(rope.sin, [seq, c.headDim / 2]),
      [STEP.row]: step.rows(seq),
      [STEP.mask]: tensor(step.causal(seq), [seq, seq]),
    };
  }

  /**
   * Adds `layer`'s cache to `feeds` (inputs named `${prefix}cache_k` ...) and returns its slots:
   * the whole buffer once something is cached, nothing before (a prefill attends to no buffer).
   */
  private cacheFeeds(layer: number, prefix: string, cache: KvCache, step: StepTables, feeds: Feeds): number {
    const past = cache.length(layer);
    const { k, v } = past > 0 ? cache.buffers(layer) : cache.emptyBuffers();
    const slots = k.dims[1]!;
    feeds[prefix + LAYER.cacheK] = k;
    feeds[prefix + LAYER.cacheV] = v;
    feeds[prefix + LAYER.cacheMask] = tensor(slots > 0 ? step.cacheMask(past) : new Float32Array(0), [1, slots]);
    return slots;
  }
}

function layersOf(group: LayerGroup): number[] {
  return Array.from({ length: group.end - group.first }, (_, i) => group.first + i);
}

function hasCompactFfn(group: LayerGroup, ffns: readonly (FfnWeights | undefined)[] | undefined): boolean {
  for (let l = group.first; l < group.end; l++) if (ffns?.[l] !== undefined) return true;
  return false;
}

/**
 * Whether `group` can run in one session: none but its first layer may drop rows, and only a
 * group of one returns taps (decoder-graph.ts). A group of one with a compact FFN cannot.
 */
function wholeGroup(group: LayerGroup, hooks: LayerHooks | undefined, ffns?: readonly (FfnWeights | undefined)[]): boolean {
  const single = group.end - group.first === 1;
  if (single && hasCompactFfn(group, ffns)) return false;
  for (let l = group.first; l < group.end; l++) {
    if (l > group.first && hooks?.selectsRowsAt(l)) return false;
    const taps = hooks?.taps(l);
    if (!single && (taps?.ffnActivations || taps?.lastAttention)) return false;
  }
  return true;
}

/**
 * The RoPE tables, row indices and masks of one forward pass: every layer sees the same
 * positions, so they are built once per pass, not once per layer (cache masks once per distinct
 * cached length).
 */
class StepTables {
  private ropeFor: { positions: readonly number[]; tables: ReturnType<typeof ropeTables> } | undefined;
  private perSeq: { seq: number; mask: Float32Array; rows: ort.Tensor } | undefined;
  private readonly cacheMasks = new Map<number, Float32Array>();

  constructor(
    private readonly headDim: number,
    private readonly invFreq: Float32Array,
    private readonly capacity: number,
  ) {}

  rope(positions: readonly number[]): ReturnType<typeof ropeTables> {
    if (this.ropeFor?.positions !== positions) this.ropeFor = { positions, tables: ropeTables(positions, this.headDim, this.invFreq) };
    return this.ropeFor.tables;
  }

  private forSeq(seq: number): NonNullable<StepTables['perSeq']> {
    if (this.perSeq?.seq !== seq) {
      const rows = int64Tensor(Array.from({ length: seq }, (_, i) => i), [1, seq]);
      this.perSeq = { seq, mask: causalMask(seq), rows };
    }
    return this.perSeq;
  }

  causal(seq: number): Float32Array {
    return this.forSeq(seq).mask;
  }

  /** 0 .. seq-1 as [1, seq]: each row reads its own line of the RoPE tables. */
  rows(seq: number): ort.Tensor {
    return this.forSeq(seq).rows;
  }

  cacheMask(length: number): Float32Array {
    let mask = this.cacheMasks.get(length);
    if (mask === undefined) this.cacheMasks.set(length, (mask = cacheMask(length, this.capacity)));
    return mask;
  }
}

/** RMSNorm of one row, as the layer graphs compute it (float32). */
function rmsNormInto(x: Float32Array, weight: Float32Array, eps: number, out: Float32Array): void {
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += x[i]! * x[i]!;
  const inv = 1 / Math.sqrt(sum / x.length + eps);
  for (let i = 0; i < x.length; i++) out[i] = x[i]! * inv * weight[i]!;
}

function gatherRows(data: Float32Array, rows: readonly number[], width: number): Float32Array {
  const out = new Float32Array(rows.length * width);
  rows.forEach((r, i) => out.set(data.subarray(r * width, (r + 1) * width), i * width));
  return out;
}

/** [heads, capacity + seq] attention over cache slots then new tokens -> [heads, past + seq], the filled slots only. */
function filledColumns(probs: Float32Array, heads: number, capacity: number, past: number, seq: number): Float32Array {
  const from = capacity + seq;
  const out = new Float32Array(heads * (past + seq));
  for (let h = 0; h < heads; h++) {
    out.set(probs.subarray(h * from, h * from + past), h * (past + seq));
    out.set(probs.subarray(h * from + capacity, (h + 1) * from), h * (past + seq) + past);
  }
  return out;
}
