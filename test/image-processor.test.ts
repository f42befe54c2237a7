import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeImage, type RgbImage } from '../src/io/image.js';
import { ImageProcessor } from '../src/io/image-processor.js';
import { CorematchingError } from '../src/io/errors.js';
import { tempDir } from './helpers.js';

// Recorded by scripts/pil_cases.py with transformers' CLIPImageProcessorPil / SiglipImageProcessorPil.
const fixtures = fileURLToPath(new URL('../../test/fixtures/pil/', import.meta.url));
const resize = JSON.parse(readFileSync(join(fixtures, 'resize.json'), 'utf8')) as {
  images: { name: string; width: number; height: number; offset: number }[];
};
const resizeBlob = new Uint8Array(readFileSync(join(fixtures, 'resize.bin')));
const cases = JSON.parse(readFileSync(join(fixtures, 'processors.json'), 'utf8')) as {
  name: string;
  image: string;
  shape: [number, number, number];
  offset: number;
}[];
const pixelsBlob = readFileSync(join(fixtures, 'processors.bin'));

async function loadImage(name: string): Promise<RgbImage> {
  if (name.endsWith('.jpg')) return decodeImage(join(fixtures, name));
  const im = resize.images.find((i) => i.name === name)!;
  return { width: im.width, height: im.height, data: resizeBlob.subarray(im.offset, im.offset + im.width * im.height * 3) };
}

for (const c of cases) {
  // The brief allows 1e-4; the port reproduces numpy's float32 rounding, so demand bit equality.
  test(`${c.name}: pixel_values equal transformers' exactly`, async () => {
    const out = ImageProcessor.load(join(fixtures, c.name)).preprocess(await loadImage(c.image));
    assert.deepEqual([3, out.height, out.width], c.shape);
    const n = c.shape[0] * c.shape[1] * c.shape[2];
    const expected = new Float32Array(pixelsBlob.buffer.slice(pixelsBlob.byteOffset + c.offset, pixelsBlob.byteOffset + c.offset + n * 4));
    let maxDiff = 0;
    for (let i = 0; i < n; i++) maxDiff = Math.max(maxDiff, Math.abs(out.pixelValues[i]! - expected[i]!));
    assert.equal(maxDiff, 0);
  });
}

const tmp = tempDir('corematching-processor-');
const good = JSON.parse(readFileSync(join(fixtures, 'clip_cat', 'preprocessor_config.json'), 'utf8')) as Record<string, unknown>;

/** Writes a config (good one with `patch` applied; undefined deletes) and expects load to fail naming file and field. */
function rejects(name: string, patch: Record<string, unknown>, field: RegExp) {
  const dir = join(tmp, name);
  mkdirSync(dir);
  const config = { ...good, ...patch };
  for (const [k, v] of Object.entries(patch)) if (v === undefined) delete config[k];
  writeFileSync(join(dir, 'preprocessor_config.json'), JSON.stringify(config));
  assert.throws(
    () => ImageProcessor.load(dir),
    (err: unknown) => {
      assert.ok(err instanceof CorematchingError, String(err));
      assert.ok(err.message.includes(join(dir, 'preprocessor_config.json')), err.message);
      assert.match(err.message, field);
      return true;
    },
  );
}

test('bad preprocessor_config.json fields are named', () => {
  rejects('no-mean', { image_mean: undefined }, /"image_mean" is missing/);
  rejects('mean-string', { image_mean: '0.5' }, /"image_mean" must be/);
  rejects('mean-two', { image_mean: [0.5, 0.5] }, /"image_mean" must be/);
  rejects('std-zero', { image_std: [0.5, 0, 0.5] }, /"image_std" must be/);
  rejects('size-shape', { size: { longest_edge: 10 } }, /"size" must be/);
  rejects('crop-missing', { crop_size: undefined }, /"crop_size" is missing/);
  rejects('flag-string', { do_resize: 'yes' }, /"do_resize" must be true or false/);
  rejects('resample-lanczos', { resample: 1 }, /"resample" must be/);
  rejects('rescale-negative', { rescale_factor: -1 }, /"rescale_factor" must be/);
  rejects('unknown-type', { image_processor_type: 'LlavaNextImageProcessor' }, /"image_processor_type" must be/);
  rejects('no-type', { image_processor_type: undefined }, /"feature_extractor_type" is missing/);
});

test('a disabled step needs no fields', () => {
  const dir = join(tmp, 'no-normalize');
  mkdirSync(dir);
  writeFileSync(join(dir, 'preprocessor_config.json'), JSON.stringify({ ...good, do_normalize: false, image_mean: undefined }));
  const out = ImageProcessor.load(dir).preprocess({ width: 2, height: 2, data: new Uint8Array(12).fill(255) });
  assert.ok(out.pixelValues.every((v) => v === 1));
});

test('a missing or malformed file is named', () => {
  const missing = join(tmp, 'nowhere');
  assert.throws(() => ImageProcessor.load(missing), /nowhere\/preprocessor_config\.json: file not found/);
  const dir = join(tmp, 'broken');
  mkdirSync(dir);
  writeFileSync(join(dir, 'preprocessor_config.json'), '{"size": ');
  assert.throws(() => ImageProcessor.load(dir), (err: unknown) => err instanceof CorematchingError && /not valid JSON/.test(err.message));
});
