/**
 * All tensors of a checkpoint folder behind one name -> tensor lookup, whether the weights are one
 * file or shards listed in model.safetensors.index.json.
 *
 * File choice follows transformers: model.safetensors first, then the index; as a convenience a
 * folder holding exactly one other *.safetensors file is accepted too.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CorematchingError } from './errors.js';
import { readJsonObject } from './json-file.js';
import { SafetensorsFile, type TensorInfo } from './safetensors.js';
import { ReusableBuffers } from '../util/reusable-buffers.js';

const SINGLE_FILE = 'model.safetensors';
const INDEX_FILE = 'model.safetensors.index.json';

export class Checkpoint {
  readonly dir: string;
  private readonly files: SafetensorsFile[];
  private readonly byName: Map<string, SafetensorsFile>;

  private constructor(dir: string, files: SafetensorsFile[]) {
    this.dir = dir;
    this.files = files;
    this.byName = new Map();
    for (const file of files) {
      for (const name of file.names()) {
        const other = this.byName.get(name);
        if (other !== undefined) {
          this.close();
          throw new CorematchingError(
            `tensor ${name} is stored in both ${path.basename(other.path)} and ${path.basename(file.path)}; ` +
              'expected each tensor in exactly one shard',
            dir,
          );
        }
        this.byName.set(name, file);
      }
    }
  }

  static open(dir: string): Checkpoint {
    const abs = path.resolve(dir);
    if (!fs.existsSync(abs) || !fs.statSync(abs).isDirectory()) {
      throw new CorematchingError('checkpoint folder does not exist or is not a folder', abs);
    }
    if (fs.existsSync(path.join(abs, SINGLE_FILE))) {
      return new Checkpoint(abs, [new SafetensorsFile(path.join(abs, SINGLE_FILE))]);
    }
    if (fs.existsSync(path.join(abs, INDEX_FILE))) {
      return Checkpoint.openSharded(abs);
    }
    const found = fs.readdirSync(abs).filter((f) => f.endsWith('.safetensors'));
    if (found.length === 1) {
      return new Checkpoint(abs, [new SafetensorsFile(path.join(abs, found[0]!))]);
    }
    throw new CorematchingError(
      found.length === 0
        ? `no weights found; expected ${SINGLE_FILE}, ${INDEX_FILE} or one *.safetensors file`
        : `found ${found.length} .safetensors files (${found.join(', ')}) but no ${INDEX_FILE} saying how they fit together`,
      abs,
    );
  }

  private static openSharded(dir: string): Checkpoint {
    const indexPath = path.join(dir, INDEX_FILE);
    const weightMap = readJsonObject(indexPath).weight_map;
    if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
      throw new CorematchingError('weight_map is missing; expected an object mapping tensor name -> shard file', indexPath);
    }

    const shards = new Map<string, SafetensorsFile>();
    const closeAll = () => shards.forEach((f) => f.close());
    try {
      for (const [name, shard] of Object.entries(weightMap)) {
        if (typeof shard !== 'string') {
          throw new CorematchingError(`weight_map.${name} is ${JSON.stringify(shard)}; expected a file name`, indexPath);
        }
        let file = shards.get(shard);
        if (file === undefined) {
          const shardPath = path.resolve(dir, shard);
          // A shard outside the folder would load weights the folder does not hold.
          const inside = path.relative(dir, shardPath);
          if (path.isAbsolute(shard) || inside === '..' || inside.startsWith(`..${path.sep}`)) {
            throw new CorematchingError(`shard ${JSON.stringify(shard)} (listed for tensor ${name}) is outside the checkpoint folder; expected a file name inside it`, indexPath);
          }
          if (!fs.existsSync(shardPath)) {
            throw new CorematchingError(`shard ${shard} (listed for tensor ${name}) does not exist`, indexPath);
          }
          file = new SafetensorsFile(shardPath);
          shards.set(shard, file);
        }
        if (!file.has(name)) {
          throw new CorematchingError(`weight_map puts tensor ${name} in ${shard}, but that shard does not contain it`, indexPath);
        }
      }
    } catch (err) {
      closeAll();
      throw err;
    }
    return new Checkpoint(dir, [...shards.values()]);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  info(name: string): TensorInfo {
    return this.fileOf(name).info(name);
  }

  shape(name: string): number[] {
    return this.info(name).shape;
  }

  /** Reads a tensor as fp32; with `expectedShape`, a checkpoint that disagrees with the config is an error. */
  read(name: string, expectedShape?: number[]): Float32Array {
    return this.checkedFile(name, expectedShape).read(name);
  }

  /**
   * Reads a tensor as fp32 into a buffer kept for `slot`: valid until the next read into that
   * slot. For weights about to be converted (quantized, stacked, transposed), so loading a large
   * model leaves no garbage behind each tensor.
   */
  readTemporary(name: string, expectedShape: number[], slot: string): Float32Array {
    const count = expectedShape.reduce((a, b) => a * b, 1);
    return this.checkedFile(name, expectedShape).read(name, this.scratch.take(slot, Float32Array, count), this.scratch);
  }

  /** Rows first .. first + count of a matrix, read like readTemporary. */
  readRowsTemporary(name: string, expectedShape: [number, number], first: number, count: number, slot: string): Float32Array {
    const width = expectedShape[1];
    const into = this.scratch.take(slot, Float32Array, count * width);
    return this.checkedFile(name, expectedShape).read(name, into, this.scratch, { first: first * width, count: count * width });
  }

  private scratch = new ReusableBuffers();

  private checkedFile(name: string, expectedShape?: number[]): SafetensorsFile {
    const file = this.fileOf(name);
    if (expectedShape !== undefined) {
      const shape = file.info(name).shape;
      if (shape.length !== expectedShape.length || shape.some((d, i) => d !== expectedShape[i])) {
        throw new CorematchingError(
          `tensor ${name} has shape [${shape.join(', ')}]; expected [${expectedShape.join(', ')}] from config.json`,
          file.path,
        );
      }
    }
    return file;
  }

  close(): void {
    for (const file of this.files) file.close();
    this.scratch = new ReusableBuffers();
  }

  private fileOf(name: string): SafetensorsFile {
    const file = this.byName.get(name);
    if (file === undefined) {
      throw new CorematchingError(`tensor ${name} is missing from the checkpoint`, this.dir);
    }
    return file;
  }
}
