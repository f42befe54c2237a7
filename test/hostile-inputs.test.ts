/**
 * Inputs that used to crash, hang, read without limit or answer silently wrong: each class ends
 * in a CorematchingError naming the file or argument.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { decodeImage } from '../src/io/image.js';
import { CorematchingError } from '../src/io/errors.js';
import { Checkpoint } from '../src/io/checkpoint.js';
import { VisionLanguageModel } from '../src/pipeline/vision-language-model.js';
import { fixturePath, tempDir, throwsWith } from './helpers.js';

const rejectsWith = (promise: Promise<unknown>, ...fragments: string[]) =>
  assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof CorematchingError, `expected CorematchingError, got ${String(err)}`);
    for (const f of fragments) assert.ok(err.message.includes(f), `message "${err.message}" lacks "${f}"`);
    return true;
  });

describe('files that are not regular files', () => {
  const dir = tempDir('cm-hostile-');
  const fifo = path.join(dir, 'fifo.png');
  before(() => execFileSync('mkfifo', [fifo]));

  test('an image that is a folder, a FIFO or a device', async () => {
    await rejectsWith(decodeImage(dir), dir, 'is a folder');
    await rejectsWith(decodeImage(fifo), fifo, 'not a regular file');
    await rejectsWith(decodeImage('/dev/zero'), '/dev/zero', 'not a regular file');
  });

  test('model.safetensors that is a folder or a FIFO', () => {
    const asFolder = tempDir('cm-hostile-');
    fs.mkdirSync(path.join(asFolder, 'model.safetensors'));
    throwsWith(() => Checkpoint.open(asFolder), 'model.safetensors', 'is a folder');
    const asFifo = tempDir('cm-hostile-');
    execFileSync('mkfifo', [path.join(asFifo, 'model.safetensors')]);
    throwsWith(() => Checkpoint.open(asFifo), 'model.safetensors', 'not a regular file');
  });
});

describe('shard paths outside the checkpoint folder', () => {
  const source = fixturePath('models', 'clip-llama');
  /** A copy of the sharded fixture whose index sends its first tensor to `shard`. */
  function withShard(shard: string): string {
    const dir = tempDir('cm-shards-');
    for (const f of fs.readdirSync(source)) fs.symlinkSync(path.join(source, f), path.join(dir, f));
    const index = JSON.parse(fs.readFileSync(path.join(source, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
    const first = Object.keys(index.weight_map)[0]!;
    index.weight_map[first] = shard;
    fs.rmSync(path.join(dir, 'model.safetensors.index.json'));
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
    return dir;
  }
  test('../, an absolute path and a real shard elsewhere are refused', () => {
    const shardElsewhere = path.join(source, fs.readdirSync(source).find((f) => f.endsWith('.safetensors'))!);
    for (const shard of ['../../etc/passwd', '/etc/passwd', path.relative(tempDir(), shardElsewhere), shardElsewhere]) {
      throwsWith(() => Checkpoint.open(withShard(shard)), 'model.safetensors.index.json', 'outside the checkpoint folder');
    }
  });
});

describe('library arguments', () => {
  let vlm: VisionLanguageModel;
  before(async () => {
    vlm = await VisionLanguageModel.load(fixturePath('models', 'clip-llama'), { threads: 1 });
  });
  after(() => vlm.release());

  const bad: [string, unknown, string][] = [
    ['null', null, 'got null'],
    ['width 0', { width: 0, height: 2, data: new Uint8Array(0) }, 'positive integers'],
    ['a fractional width', { width: 1.5, height: 2, data: new Uint8Array(9) }, 'positive integers'],
    ['too little data', { width: 4, height: 4, data: new Uint8Array(10) }, '48 RGB bytes, got 10'],
    ['data that is not bytes', { width: 1, height: 1, data: [1, 2, 3] }, 'Uint8Array'],
  ];
  for (const [name, image, fragment] of bad) {
    test(`image: ${name}`, () => rejectsWith(vlm.generate({ image: image as string, prompt: 'x' }), 'image', fragment));
  }
  test('a token id beyond the embedding', () => {
    const vocab = vlm.config.text.vocabSize;
    throwsWith(() => vlm.model.decoder.embed([1, vocab]), `token id ${vocab} at position 1`, `${vocab} rows`);
  });
  test('generate after release', async () => {
    const other = await VisionLanguageModel.load(fixturePath('models', 'clip-llama'), { threads: 1 });
    await other.release();
    await rejectsWith(other.generate({ image: fixturePath('photos', 'coffee.png'), prompt: 'x' }), 'after release()');
  });
});

describe('degenerate image geometry and processor sizes', () => {
  const source = fixturePath('models', 'clip-llama');
  /** A copy of the fixture whose preprocessor_config.json has `changes` applied. */
  function withProcessor(changes: Record<string, unknown>): string {
    const dir = tempDir('cm-processor-');
    for (const f of fs.readdirSync(source)) {
      if (f !== 'preprocessor_config.json') fs.symlinkSync(path.join(source, f), path.join(dir, f));
    }
    const config = JSON.parse(fs.readFileSync(path.join(source, 'preprocessor_config.json'), 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(path.join(dir, 'preprocessor_config.json'), JSON.stringify({ ...config, ...changes }));
    return dir;
  }

  test('sizes out of range or not matching the vision tower are refused at load', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ size: { shortest_edge: 1e9 } }, 'sides 1..8192'],
      [{ size: { shortest_edge: 0 } }, 'sides 1..8192'],
      [{ crop_size: { height: 100000, width: 64 } }, 'sides 1..8192'],
      [{ crop_size: { height: 32, width: 64 } }, "makes 32x64 images, but the vision tower's image_size is 64"],
      [{ do_center_crop: false, size: { height: 8192, width: 8192 } }, "makes 8192x8192 images"],
    ];
    for (const [changes, fragment] of cases) {
      await rejectsWith(VisionLanguageModel.load(withProcessor(changes), { threads: 1 }), 'preprocessor_config.json', fragment);
    }
  });

  test('an extreme aspect ratio is refused before resizing allocates', async () => {
    const vlm = await VisionLanguageModel.load(withProcessor({ size: { shortest_edge: 2048 } }), { threads: 1 });
    try {
      const started = performance.now();
      const sliver = { width: 8192, height: 1, data: new Uint8Array(8192 * 3) };
      await rejectsWith(vlm.generate({ image: sliver, prompt: 'x' }), '8192x1', 'less extreme aspect ratio');
      assert.ok(performance.now() - started < 5000);
    } finally {
      await vlm.release();
    }
  });
});
