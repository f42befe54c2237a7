/**
 * Lazy reader for one .safetensors file: the header is parsed and validated up front, tensor bytes
 * are read on demand with positioned reads, so a multi-gigabyte file is never held in memory.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON header, then the data section.
 * Each header entry is {dtype, shape, data_offsets: [begin, end]} with offsets relative to the
 * start of the data section; the optional "__metadata__" entry is a string map.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { CorematchingError } from './errors.js';
import { checkRegularFile } from './regular-file.js';
import type { ReusableBuffers } from '../util/reusable-buffers.js';

// Typed-array views below read the file's little-endian bytes in host order.
if (os.endianness() !== 'LE') {
  throw new Error('corematching needs a little-endian CPU to read safetensors files');
}

/** Bytes per element of every dtype the safetensors format defines. */
const DTYPE_SIZES: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, F8_E5M2: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8,
};

/** Dtypes `read()` can turn into fp32. Other known dtypes may sit in a file (old CLIP checkpoints
 * store an I64 position_ids buffer) and only fail if someone asks to read them. */
const FLOAT_DTYPES = ['F32', 'F16', 'BF16'];

/** Headers are a few hundred kB even for large sharded models; anything huge is corruption. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface TensorInfo {
  name: string;
  dtype: string;
  shape: number[];
  /** Absolute byte position of the tensor's data in the file. */
  fileOffset: number;
  byteLength: number;
}

export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  private fd: number | null;
  private readonly tensors: Map<string, TensorInfo>;

  constructor(path: string) {
    this.path = path;
    checkRegularFile(path, 'safetensors file');
    try {
      this.fd = fs.openSync(path, 'r');
    } catch (err) {
      throw new CorematchingError(`cannot open safetensors file: ${(err as Error).message}`, path);
    }
    try {
      const parsed = this.parseHeader(this.fd);
      this.metadata = parsed.metadata;
      this.tensors = parsed.tensors;
    } catch (err) {
      this.close();
      throw err;
    }
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (info === undefined) {
      throw new CorematchingError(`tensor ${name} not found`, this.path);
    }
    return info;
  }

  /**
   * Reads one tensor and converts it to fp32: into a fresh array, or into `into` (exactly the
   * size read) with the file's bytes staged in `scratch`'s buffers. `range` reads `count` values
   * from value `first` on (e.g. some rows of a matrix).
   */
  read(name: string, into?: Float32Array, scratch?: ReusableBuffers, range?: { first: number; count: number }): Float32Array {
    const info = this.info(name);
    if (!FLOAT_DTYPES.includes(info.dtype)) {
      throw new CorematchingError(
        `unsupported dtype ${info.dtype} for tensor ${name}; expected one of ${FLOAT_DTYPES.join(', ')}`,
        this.path,
      );
    }
    const size = info.dtype === 'F32' ? 4 : 2;
    const total = info.byteLength / size;
    const { first, count } = range ?? { first: 0, count: total };
    if (!(first >= 0 && count >= 0 && first + count <= total)) throw new Error(`${name}: values ${first}..${first + count} of ${total}`);
    if (into !== undefined && into.length !== count) throw new Error(`${name}: ${count} values into an array of ${into.length}`);
    const offset = info.fileOffset + first * size;
    if (info.dtype === 'F32') {
      const out = into ?? new Float32Array(count);
      this.readAt(new Uint8Array(out.buffer, out.byteOffset, out.byteLength), offset);
      return out;
    }
    const bytes = scratch === undefined ? new Uint8Array(count * 2) : scratch.take('safetensors-bytes', Uint8Array, count * 2);
    this.readAt(bytes, offset);
    const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, count);
    return info.dtype === 'BF16' ? bf16ToF32(halves, into) : f16ToF32(halves, into);
  }

  close(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }

  private readAt(target: Uint8Array, position: number): void {
    if (this.fd === null) throw new CorematchingError('file was already closed', this.path);
    let done = 0;
    while (done < target.length) {
      const n = fs.readSync(this.fd, target, done, target.length - done, position + done);
      if (n === 0) {
        throw new CorematchingError(
          `file ended at byte ${position + done} while reading ${target.length} bytes at ${position}; it is truncated`,
          this.path,
        );
      }
      done += n;
    }
  }

  private parseHeader(fd: number): { metadata: Record<string, string>; tensors: Map<string, TensorInfo> } {
    const fileSize = fs.fstatSync(fd).size;
    if (fileSize < 8) {
      throw new CorematchingError(`file is ${fileSize} bytes; expected at least the 8-byte header length`, this.path);
    }
    const lenBytes = new Uint8Array(8);
    this.readAt(lenBytes, 0);
    const headerLen = Number(new DataView(lenBytes.buffer).getBigUint64(0, true));
    if (headerLen <= 0 || headerLen > MAX_HEADER_BYTES) {
      throw new CorematchingError(
        `header length ${headerLen} is out of range; expected 1..${MAX_HEADER_BYTES} bytes`,
        this.path,
      );
    }
    if (8 + headerLen > fileSize) {
      throw new CorematchingError(
        `header length ${headerLen} runs past the end of the ${fileSize}-byte file; the file is truncated or not safetensors`,
        this.path,
      );
    }
    const headerBytes = new Uint8Array(headerLen);
    this.readAt(headerBytes, 8);
    let header: unknown;
    try {
      header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
    } catch (err) {
      throw new CorematchingError(`header is not valid UTF-8 JSON: ${(err as Error).message}`, this.path);
    }
    if (!isPlainObject(header)) {
      throw new CorematchingError('header is not a JSON object', this.path);
    }

    const dataStart = 8 + headerLen;
    const dataSize = fileSize - dataStart;
    const metadata: Record<string, string> = {};
    const tensors = new Map<string, TensorInfo>();
    const spans: { name: string; begin: number; end: number }[] = [];
    for (const [name, entry] of Object.entries(header)) {
      if (name === '__metadata__') {
        if (isPlainObject(entry)) {
          for (const [k, v] of Object.entries(entry)) if (typeof v === 'string') metadata[k] = v;
        }
        continue;
      }
      const { dtype, shape, begin, end } = this.validateEntry(name, entry, dataSize);
      spans.push({ name, begin, end });
      tensors.set(name, { name, dtype, shape, fileOffset: dataStart + begin, byteLength: end - begin });
    }

    // Two tensors sharing bytes means a corrupt header; zero-length tensors never overlap anything.
    spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
    let prev: { name: string; end: number } | null = null;
    for (const span of spans) {
      if (span.begin === span.end) continue;
      if (prev !== null && span.begin < prev.end) {
        throw new CorematchingError(
          `tensors ${prev.name} and ${span.name} overlap: ${span.name} starts at data offset ${span.begin} ` +
            `but ${prev.name} ends at ${prev.end}`,
          this.path,
        );
      }
      prev = span;
    }
    return { metadata, tensors };
  }

  private validateEntry(
    name: string,
    entry: unknown,
    dataSize: number,
  ): { dtype: string; shape: number[]; begin: number; end: number } {
    const bad = (what: string): never => {
      throw new CorematchingError(`tensor ${name}: ${what}`, this.path);
    };
    if (!isPlainObject(entry)) return bad(`header entry is ${JSON.stringify(entry)}; expected an object`);
    const { dtype, shape, data_offsets: offsets } = entry;
    if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_SIZES, dtype)) {
      return bad(`unsupported dtype ${JSON.stringify(dtype)}; expected one of ${Object.keys(DTYPE_SIZES).join(', ')}`);
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      return bad(`shape ${JSON.stringify(shape)} is invalid; expected a list of non-negative integers`);
    }
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)
    ) {
      return bad(`data_offsets ${JSON.stringify(offsets)} is invalid; expected [begin, end] non-negative integers`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) return bad(`data_offsets [${begin}, ${end}] has begin after end`);
    if (end > dataSize) {
      return bad(`data_offsets [${begin}, ${end}] run past the ${dataSize}-byte data section; the file is truncated`);
    }
    const expected = (shape as number[]).reduce((a, b) => a * b, 1) * DTYPE_SIZES[dtype]!;
    if (end - begin !== expected) {
      return bad(
        `data_offsets [${begin}, ${end}] hold ${end - begin} bytes; shape [${shape.join(', ')}] of ${dtype} needs ${expected}`,
      );
    }
    return { dtype, shape: shape as number[], begin, end };
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** bfloat16 is the top half of an fp32, so widening is a shift. */
export function bf16ToF32(src: Uint16Array, into?: Float32Array): Float32Array {
  const result = into ?? new Float32Array(src.length);
  const out = new Uint32Array(result.buffer, result.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i]! << 16;
  return result;
}

/** Every fp16 value is exactly representable in fp32, so a 256 kB lookup table converts exactly. */
export function f16ToF32(src: Uint16Array, into?: Float32Array): Float32Array {
  const table = f16Table();
  const out = into ?? new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]!]!;
  return out;
}

let F16_TABLE: Float32Array | null = null;

function f16Table(): Float32Array {
  if (F16_TABLE !== null) return F16_TABLE;
  const bits = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) bits[h] = f16BitsToF32Bits(h);
  F16_TABLE = new Float32Array(bits.buffer);
  return F16_TABLE;
}

function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0; // inf, or NaN keeping its payload
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0; // rebias 15 -> 127
  if (mant === 0) return sign >>> 0; // signed zero
  // Subnormal: shift the mantissa up until its leading 1 becomes the implicit bit.
  let m = mant;
  let e = 113;
  while ((m & 0x400) === 0) {
    m <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((m & 0x3ff) << 13)) >>> 0;
}
