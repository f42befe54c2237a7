/**
 * The ONNX Runtime boundary: creates CPU sessions from in-memory graphs and runs them with
 * Float32Array feeds. Everything numeric the engine does on ORT goes through here.
 */
import ort from 'onnxruntime-node';

export type Feeds = Record<string, ort.Tensor>;

export interface RuntimeOptions {
  /** Intra-op threads per session (default: all cores ORT sees). */
  threads?: number;
}

export function tensor(data: Float32Array, dims: readonly number[]): ort.Tensor {
  return new ort.Tensor('float32', data, dims as number[]);
}

/** An int64 tensor (indices, positions) of `values`. */
export function int64Tensor(values: readonly number[], dims: readonly number[]): ort.Tensor {
  return new ort.Tensor('int64', BigInt64Array.from(values, BigInt), dims as number[]);
}

/** How a session holds its intermediate tensors. */
export interface MemoryOptions {
  /**
   * Keep them in a memory arena across runs (ONNX Runtime's default; off otherwise). Sessions
   * that run over large activations (the vision tower's layers, 729 tokens) run faster with one
   * (vision-tower.ts); but each session's arena keeps its largest run's activations, so it suits
   * a few sessions, not one per layer.
   */
  arena?: boolean;
}

export class GraphSession {
  private constructor(private readonly session: ort.InferenceSession) {}

  /** A session of a serialised graph, or of a graph file (which ONNX Runtime reads itself). */
  static async create(model: Uint8Array | string, options: RuntimeOptions = {}, memory: MemoryOptions = {}): Promise<GraphSession> {
    // ONNX Runtime on Linux otherwise logs usage events to ~/.cache/Microsoft/DeveloperTools (and
    // may upload them; 1.30 and 1.31 both do); it reads this variable when its environment is made,
    // at the first session. A user's own setting wins.
    process.env.ORT_DISABLE_TELEMETRY ??= '1';
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      enableCpuMemArena: memory.arena === true,
      interOpNumThreads: 1,
      ...(options.threads === undefined ? {} : { intraOpNumThreads: options.threads }),
      // A decode step runs a few sessions of ~50 small operators a layer. Spinning workers answer each
      // operator without a futex wake-up; stopping the spin at the end of every run keeps the idle
      // pools of the other sessions off the cores (spinning without the stop: 2-3 tokens/s).
      extra: { session: { intra_op: { allow_spinning: '1' }, force_spinning_stop: '1' } },
    };
    const session = typeof model === 'string' ? await ort.InferenceSession.create(model, sessionOptions) : await ort.InferenceSession.create(model, sessionOptions);
    return new GraphSession(session);
  }

  /**
   * Runs and returns `outputs` (default: all). Given as a record, an output mapped to a tensor is
   * written into it (ONNX Runtime accepts pre-allocated outputs) and one mapped to null is made.
   */
  async run(feeds: Feeds, outputs?: string[] | Record<string, ort.Tensor | null>): Promise<Record<string, ort.Tensor>> {
    const result = outputs === undefined ? await this.session.run(feeds) : await this.session.run(feeds, outputs);
    return result as Record<string, ort.Tensor>;
  }

  /** Runs and returns the named outputs as Float32Arrays. */
  async runFloat(feeds: Feeds, outputs: string[]): Promise<Float32Array[]> {
    const result = await this.run(feeds, outputs);
    return outputs.map((name) => result[name]!.data as Float32Array);
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
