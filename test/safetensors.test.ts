import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SafetensorsFile, f16ToF32, bf16ToF32 } from '../src/io/safetensors.js';
import { Checkpoint } from '../src/io/checkpoint.js';
import { tempDir as newTempDir, throwsWith } from './helpers.js';

interface Entry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/** Writes a safetensors file from a raw header and data section, so tests can also build broken ones. */
function writeRaw(file: string, header: Record<string, unknown>, data: Uint8Array, headerLenOverride?: number): void {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(headerLenOverride ?? json.length));
  fs.writeFileSync(file, Buffer.concat([len, json, data]));
}

/** Writes a valid file from named typed arrays laid out back to back. */
function writeTensors(file: string, tensors: Record<string, { dtype: string; shape: number[]; data: ArrayBufferView }>): void {
  const header: Record<string, Entry | Record<string, string>> = { __metadata__: { format: 'pt' } };
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    parts.push(bytes);
    offset += bytes.length;
  }
  writeRaw(file, header, Buffer.concat(parts));
}


/** Asserts a CorematchingError whose message contains every fragment. */

test('reads F32, F16 and BF16 tensors as fp32', () => {
  const dir = newTempDir('cm-st-');
  const file = path.join(dir, 'model.safetensors');
  writeTensors(file, {
    a: { dtype: 'F32', shape: [2, 2], data: new Float32Array([1, -2.5, 3e-8, 1e30]) },
    // fp16 bits for 1.0, -2.0, 65504 (max), 2^-24 (smallest subnormal)
    h: { dtype: 'F16', shape: [4], data: new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001]) },
    // bf16 bits for 1.0, -3.0
    b: { dtype: 'BF16', shape: [2], data: new Uint16Array([0x3f80, 0xc040]) },
    empty: { dtype: 'F32', shape: [0, 3], data: new Float32Array(0) },
  });
  const st = new SafetensorsFile(file);
  assert.deepEqual(st.names().sort(), ['a', 'b', 'empty', 'h']);
  assert.deepEqual(st.info('a').shape, [2, 2]);
  assert.equal(st.metadata.format, 'pt');
  assert.deepEqual([...st.read('a')], [...new Float32Array([1, -2.5, 3e-8, 1e30])]);
  assert.deepEqual([...st.read('h')], [1, -2, 65504, 2 ** -24]);
  assert.deepEqual([...st.read('b')], [1, -3]);
  assert.equal(st.read('empty').length, 0);
  st.close();
});

test('fp16 conversion is exact for zeros, subnormals, infinities and NaN', () => {
  const f = f16ToF32(new Uint16Array([0x0000, 0x8000, 0x03ff, 0x8200, 0x0400, 0x7c00, 0xfc00, 0x7e00, 0x3555]));
  assert.ok(Object.is(f[0], 0));
  assert.ok(Object.is(f[1], -0));
  assert.equal(f[2], 1023 * 2 ** -24); // largest subnormal
  assert.equal(f[3], -(2 ** -15));
  assert.equal(f[4], 2 ** -14); // smallest normal
  assert.equal(f[5], Infinity);
  assert.equal(f[6], -Infinity);
  assert.ok(Number.isNaN(f[7]));
  assert.equal(f[8], 0.333251953125);
  // every finite fp16 value matches the formula sign * 2^(e-15) * (1 + m/1024)
  for (let h = 0; h < 0x7c00; h += 37) {
    const e = h >> 10;
    const m = h & 0x3ff;
    const want = e === 0 ? m * 2 ** -24 : 2 ** (e - 15) * (1 + m / 1024);
    assert.equal(f16ToF32(new Uint16Array([h]))[0], want);
  }
  const b = bf16ToF32(new Uint16Array([0x7f80, 0xff80, 0x0001, 0x4049]));
  assert.deepEqual([...b.subarray(0, 2)], [Infinity, -Infinity]);
  assert.equal(b[2], 2 ** -133); // bf16 subnormal
  assert.equal(b[3], 3.140625);
});

test('rejects truncated files and bad header lengths', () => {
  const dir = newTempDir('cm-st-');
  const tiny = path.join(dir, 'tiny.safetensors');
  fs.writeFileSync(tiny, Buffer.from([1, 2, 3]));
  throwsWith(() => new SafetensorsFile(tiny), 'tiny.safetensors', '3 bytes');

  const past = path.join(dir, 'past.safetensors');
  writeRaw(past, { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4), 10_000);
  throwsWith(() => new SafetensorsFile(past), 'past.safetensors', 'header length 10000', 'past the end');

  const zero = path.join(dir, 'zero.safetensors');
  writeRaw(zero, {}, new Uint8Array(0), 0);
  throwsWith(() => new SafetensorsFile(zero), 'header length 0');

  const huge = path.join(dir, 'huge.safetensors');
  writeRaw(huge, {}, new Uint8Array(0), 2 ** 40);
  throwsWith(() => new SafetensorsFile(huge), 'out of range');

  const data = path.join(dir, 'data.safetensors');
  writeRaw(data, { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, new Uint8Array(8));
  throwsWith(() => new SafetensorsFile(data), 'tensor a', '[0, 16]', 'truncated');

  const json = path.join(dir, 'json.safetensors');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(5n);
  fs.writeFileSync(json, Buffer.concat([len, Buffer.from('{"a":')]));
  throwsWith(() => new SafetensorsFile(json), 'json.safetensors', 'not valid UTF-8 JSON');
});

test('rejects bad header entries', () => {
  const dir = newTempDir('cm-st-');
  const file = path.join(dir, 'bad.safetensors');
  const cases: [Record<string, unknown>, string[]][] = [
    [{ x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, y: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, ['overlap', 'x', 'y']],
    [{ x: { dtype: 'F32', shape: [2], data_offsets: [8, 0] } }, ['tensor x', 'begin after end']],
    [{ x: { dtype: 'F32', shape: [2], data_offsets: [0, 400] } }, ['tensor x', 'past']],
    [{ x: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, ['tensor x', 'hold 8 bytes', 'needs 12']],
    [{ x: { dtype: 'Q4', shape: [2], data_offsets: [0, 8] } }, ['tensor x', 'unsupported dtype "Q4"']],
    [{ x: { dtype: 'toString', shape: [2], data_offsets: [0, 8] } }, ['unsupported dtype']],
    [{ x: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, ['tensor x', 'shape']],
    [{ x: { dtype: 'F32', shape: [2], data_offsets: [0] } }, ['tensor x', 'data_offsets']],
    [{ x: [1, 2] }, ['tensor x', 'expected an object']],
  ];
  for (const [header, fragments] of cases) {
    writeRaw(file, header, new Uint8Array(16));
    throwsWith(() => new SafetensorsFile(file), 'bad.safetensors', ...fragments);
  }
});

test('non-float tensors are listed but refuse to be read as floats', () => {
  const dir = newTempDir('cm-st-');
  const file = path.join(dir, 'ids.safetensors');
  writeTensors(file, { position_ids: { dtype: 'I64', shape: [1, 2], data: new BigInt64Array([0n, 1n]) } });
  const st = new SafetensorsFile(file);
  assert.deepEqual(st.info('position_ids').shape, [1, 2]);
  throwsWith(() => st.read('position_ids'), 'unsupported dtype I64 for tensor position_ids', 'F32, F16, BF16');
  throwsWith(() => st.read('nope'), 'tensor nope not found');
  st.close();
});

test('a file truncated after its header was read fails on read with a clear error', () => {
  const dir = newTempDir('cm-st-');
  const file = path.join(dir, 'model.safetensors');
  writeTensors(file, { a: { dtype: 'F32', shape: [4], data: new Float32Array(4) } });
  const st = new SafetensorsFile(file);
  fs.truncateSync(file, fs.statSync(file).size - 4);
  throwsWith(() => st.read('a'), 'model.safetensors', 'truncated');
  st.close();
});

test('checkpoint: single file, shape checks and missing tensors', () => {
  const dir = newTempDir('cm-st-');
  writeTensors(path.join(dir, 'model.safetensors'), {
    'w.weight': { dtype: 'F32', shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
  });
  const ckpt = Checkpoint.open(dir);
  assert.ok(ckpt.has('w.weight'));
  assert.deepEqual(ckpt.names(), ['w.weight']);
  assert.deepEqual(ckpt.shape('w.weight'), [2, 3]);
  assert.deepEqual([...ckpt.read('w.weight', [2, 3])], [1, 2, 3, 4, 5, 6]);
  throwsWith(() => ckpt.read('w.weight', [3, 2]), 'w.weight', 'shape [2, 3]', 'expected [3, 2]');
  throwsWith(() => ckpt.read('w.weight', [6]), 'shape [2, 3]', 'expected [6]');
  throwsWith(() => ckpt.read('lm_head.weight'), 'lm_head.weight', 'missing', dir);
  ckpt.close();
});

test('checkpoint: sharded via index, with validation of the index', () => {
  const dir = newTempDir('cm-st-');
  writeTensors(path.join(dir, 'model-00001-of-00002.safetensors'), {
    a: { dtype: 'F32', shape: [1], data: new Float32Array([7]) },
  });
  writeTensors(path.join(dir, 'model-00002-of-00002.safetensors'), {
    b: { dtype: 'BF16', shape: [1], data: new Uint16Array([0x4000]) },
  });
  const index = (map: Record<string, string>) =>
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: map }));

  index({ a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' });
  const ckpt = Checkpoint.open(dir);
  assert.deepEqual(ckpt.names().sort(), ['a', 'b']);
  assert.deepEqual([...ckpt.read('a')], [7]);
  assert.deepEqual([...ckpt.read('b')], [2]);
  ckpt.close();

  index({ a: 'model-00001-of-00002.safetensors', b: 'model-00003-of-00002.safetensors' });
  throwsWith(() => Checkpoint.open(dir), 'model.safetensors.index.json', 'shard model-00003-of-00002.safetensors', 'tensor b', 'does not exist');

  index({ a: 'model-00001-of-00002.safetensors', b: 'model-00001-of-00002.safetensors' });
  throwsWith(() => Checkpoint.open(dir), 'tensor b', 'does not contain it');

  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), '{"weight_map": ');
  throwsWith(() => Checkpoint.open(dir), 'model.safetensors.index.json', 'invalid JSON');

  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), '{"metadata": {}}');
  throwsWith(() => Checkpoint.open(dir), 'weight_map is missing');
});

test('checkpoint: folder problems', () => {
  const missing = path.join(newTempDir('cm-st-'), 'nope');
  throwsWith(() => Checkpoint.open(missing), 'nope', 'does not exist');

  const empty = newTempDir('cm-st-');
  throwsWith(() => Checkpoint.open(empty), 'no weights found');

  const one = newTempDir('cm-st-');
  writeTensors(path.join(one, 'weights.safetensors'), { a: { dtype: 'F32', shape: [1], data: new Float32Array([3]) } });
  const ckpt = Checkpoint.open(one);
  assert.deepEqual([...ckpt.read('a')], [3]);
  ckpt.close();

  writeTensors(path.join(one, 'other.safetensors'), { b: { dtype: 'F32', shape: [1], data: new Float32Array([4]) } });
  throwsWith(() => Checkpoint.open(one), 'found 2 .safetensors files');
});
