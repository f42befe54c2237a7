/** LLaVA's multi-modal projector: linear_1 -> activation -> linear_2. */
import type ort from 'onnxruntime-node';
import { GraphBuilder } from '../graph/builder.js';
import { activation, weightedLinear, type WeightFormat } from '../graph/ops.js';
import { GraphSession, tensor, type RuntimeOptions } from '../graph/session.js';
import type { Activation } from '../io/model-config.js';
import { ConvertedCache } from './converted-cache.js';
import { linearFeeds, readLinear, weight, type WeightSource } from './weights.js';

export class Projector {
  private constructor(
    private readonly weights: Record<string, ort.Tensor>,
    private readonly session: GraphSession,
    readonly inputSize: number,
    readonly outputSize: number,
  ) {}

  static async load(
    source: WeightSource,
    prefix: string,
    inputSize: number,
    outputSize: number,
    act: Activation,
    bias: boolean,
    format: WeightFormat,
    runtime: RuntimeOptions,
    cache = ConvertedCache.off(),
  ): Promise<Projector> {
    const g = new GraphBuilder('projector');
    const x = g.input('x', ['tokens', inputSize]);
    const b = (name: string, size: number) => (bias ? g.input(name, [size]) : undefined);
    const hidden = activation(g, weightedLinear(g, x, 'w1', outputSize, inputSize, format, b('b1', outputSize)), act);
    g.output('out', weightedLinear(g, hidden, 'w2', outputSize, outputSize, format, b('b2', outputSize)), ['tokens', outputSize]);
    const linears = () => ({
      ...linearFeeds('w1', readLinear(source, `${prefix}linear_1.weight`, [outputSize, inputSize], format), outputSize, inputSize, format),
      ...linearFeeds('w2', readLinear(source, `${prefix}linear_2.weight`, [outputSize, outputSize], format), outputSize, outputSize, format),
    });
    const weights: Record<string, ort.Tensor> = format === 'fp32' ? linears() : { ...cache.tensors('projector', linears) };
    if (bias) {
      weights.b1 = weight(source, `${prefix}linear_1.bias`, [outputSize]);
      weights.b2 = weight(source, `${prefix}linear_2.bias`, [outputSize]);
    }
    return new Projector(weights, await GraphSession.create(g.toBytes(), runtime), inputSize, outputSize);
  }

  release(): Promise<void> {
    return this.session.release();
  }

  /** [tokens, inputSize] -> [tokens, outputSize]. */
  async project(features: Float32Array, tokens: number): Promise<Float32Array> {
    const [out] = await this.session.runFloat({ ...this.weights, x: tensor(features, [tokens, this.inputSize]) }, ['out']);
    return out!;
  }
}
