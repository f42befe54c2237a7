/**
 * A small ONNX graph builder: name values, add nodes, serialise a ModelProto. Weights are declared
 * as graph inputs, so one graph can serve every layer of a kind and take per-request compact
 * weights (core neurons); `toBytes(baked)` turns the inputs it is given data for into
 * initializers instead, so ONNX Runtime can pre-pack them (its 4-bit product runs ~60x slower on
 * a weight fed as an input, measured in bench/kernels.ts).
 */
import protobuf from 'protobufjs';
import { AttributeType, DataType, ModelProto, type ElemType } from './onnx-proto.js';

/** A dimension: a fixed size or a symbolic name such as 'seq'. */
export type Dim = number | string;

/** Wraps a FLOAT attribute; a bare number is an INT attribute. */
export class FloatAttr {
  constructor(readonly value: number) {}
}
export const float = (value: number): FloatAttr => new FloatAttr(value);
export type AttributeValue = number | number[] | string | FloatAttr;
export type Attributes = Record<string, AttributeValue>;

interface NodeSpec {
  opType: string;
  input: string[];
  output: string[];
  attribute: object[];
  domain: string;
}

const OPSET = 18;

function attribute(name: string, value: AttributeValue): object {
  if (value instanceof FloatAttr) return { name, type: AttributeType.FLOAT, f: value.value };
  if (typeof value === 'string') return { name, type: AttributeType.STRING, s: Buffer.from(value) };
  if (Array.isArray(value)) return { name, type: AttributeType.INTS, ints: value };
  return { name, type: AttributeType.INT, i: value };
}

function valueInfo(name: string, elemType: ElemType, shape: Dim[]): object {
  return {
    name,
    type: {
      tensorType: {
        elemType: DataType[elemType],
        shape: { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

/** Data for an input `toBytes` bakes in: an ort.Tensor fits. */
export interface BakedTensor {
  readonly type: string;
  readonly dims: readonly number[];
  /** An ArrayBufferView (ort.Tensor's type also admits string arrays, which cannot be baked). */
  readonly data: unknown;
}

/** An initializer's raw data, if it has any. */
function rawDataOf(initializer: object): Uint8Array | undefined {
  return (initializer as { rawData?: Uint8Array }).rawData;
}

const BAKED_TYPES: Record<string, ElemType> = { float32: 'float', int8: 'int8', uint8: 'uint8' };

export class GraphBuilder {
  private readonly nodes: NodeSpec[] = [];
  private readonly inputs: object[] = [];
  private readonly outputs: object[] = [];
  private readonly initializers: object[] = [];
  private counter = 0;

  constructor(private readonly name: string) {}

  input(name: string, shape: Dim[], elemType: ElemType = 'float'): string {
    this.inputs.push(valueInfo(name, elemType, shape));
    return name;
  }

  /** Declares `value` a graph output, renaming it through Identity when the name differs. */
  output(name: string, value: string, shape: Dim[], elemType: ElemType = 'float'): void {
    if (value !== name) this.node('Identity', [value], {}, [name]);
    this.outputs.push(valueInfo(name, elemType, shape));
  }

  /** A small constant (shapes, axes, scalars) stored as an initializer. */
  constInt64(values: number[], dims: number[] = [values.length]): string {
    const name = `c${this.counter++}`;
    const raw = Buffer.alloc(values.length * 8);
    values.forEach((v, i) => raw.writeBigInt64LE(BigInt(v), i * 8));
    this.initializers.push({ name, dims, dataType: DataType.int64, rawData: raw });
    return name;
  }

  /** A tensor stored in the graph (e.g. a weight ONNX Runtime should pre-pack), from its raw little-endian bytes. */
  initializer(name: string, dims: number[], elemType: ElemType, raw: Uint8Array): string {
    this.initializers.push({ name, dims, dataType: DataType[elemType], rawData: raw });
    return name;
  }

  constFloat(values: number[], dims: number[] = []): string {
    const name = `c${this.counter++}`;
    const raw = Buffer.from(new Float32Array(values).buffer);
    this.initializers.push({ name, dims, dataType: DataType.float, rawData: raw });
    return name;
  }

  /** Adds a node; returns its output names (fresh ones unless given). */
  node(
    opType: string,
    input: string[],
    attrs: Attributes = {},
    output: string[] | number = 1,
    domain = '',
  ): string[] {
    const outs = typeof output === 'number' ? Array.from({ length: output }, () => `v${this.counter++}`) : output;
    const attribute_ = Object.entries(attrs).map(([k, v]) => attribute(k, v));
    this.nodes.push({ opType, input, output: outs, attribute: attribute_, domain });
    return outs;
  }

  /** Single-output node. */
  op(opType: string, input: string[], attrs: Attributes = {}): string {
    return this.node(opType, input, attrs)[0]!;
  }

  /**
   * The serialised model; inputs named in `baked` become initializers holding that data (its
   * declared element type must match).
   */
  toBytes(baked: Readonly<Record<string, BakedTensor>> = {}): Uint8Array {
    const inputs: object[] = [];
    const initializers = [...this.initializers];
    for (const info of this.inputs as { name: string; type: { tensorType: { elemType: number } } }[]) {
      const tensor = baked[info.name];
      if (tensor === undefined) {
        inputs.push(info);
        continue;
      }
      const elemType = BAKED_TYPES[tensor.type];
      const dataType = elemType === undefined ? undefined : DataType[elemType];
      if (dataType !== info.type.tensorType.elemType || !ArrayBuffer.isView(tensor.data)) {
        throw new Error(`${info.name}: a ${tensor.type} tensor for an input declared as type ${info.type.tensorType.elemType}`);
      }
      const { buffer, byteOffset, byteLength } = tensor.data;
      initializers.push({ name: info.name, dims: tensor.dims, dataType, rawData: new Uint8Array(buffer, byteOffset, byteLength) });
    }
    const model = (initializer: object[]) =>
      ModelProto.create({
        irVersion: 8,
        producerName: 'corematching',
        opsetImport: [
          { domain: '', version: OPSET },
          // ONNX Runtime's contrib operators (quantized products)
          { domain: 'com.microsoft', version: 1 },
        ],
        graph: { name: this.name, node: this.nodes, input: inputs, output: this.outputs, initializer },
      });
    // protobufjs grows its buffer by doubling, so encoding a graph of weights held them up to four
    // times over at once (the weights, the old buffer, the new one of twice the size). Sized up
    // front from the graph without its data, the buffer is written once: a tensor's data adds its
    // bytes and at most 10 bytes of lengths, the graph's own length prefix grows by at most 10, and
    // 1 KiB covers what the writer reserves beyond what it writes (3 bytes a character for short strings).
    const dataBytes = initializers.reduce((n, t) => n + (rawDataOf(t)?.byteLength ?? 0), 0);
    const withoutData = initializers.map((t) => (rawDataOf(t) === undefined ? t : { ...t, rawData: new Uint8Array(0) }));
    const size = ModelProto.encode(model(withoutData)).finish().byteLength + dataBytes + 10 * initializers.length + 10 + 1024;
    const writer = protobuf.Writer.create();
    writer.buf = Buffer.allocUnsafe(size);
    return ModelProto.encode(model(initializers), writer).finish(true);
  }
}
