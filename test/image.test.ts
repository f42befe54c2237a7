import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { decodeImage } from '../src/io/image.js';
import { CorematchingError } from '../src/io/errors.js';
import { tempDir } from './helpers.js';

const fixtures = fileURLToPath(new URL('../../test/fixtures/pil/', import.meta.url));
const tmp = tempDir('corematching-image-');

// A 5x3 image with distinct pixels, so a transposed or shifted decode shows.
const W = 5;
const H = 3;
const rgb = Uint8Array.from({ length: W * H * 3 }, (_, i) => (i * 37 + 11) % 256);
const raw = (data: Uint8Array, channels: 1 | 3 | 4) => sharp(data, { raw: { width: W, height: H, channels } });

test('decodes a PNG exactly', async () => {
  const file = join(tmp, 'rgb.png');
  await raw(rgb, 3).png().toFile(file);
  const im = await decodeImage(file);
  assert.deepEqual([im.width, im.height], [W, H]);
  assert.deepEqual(im.data, rgb);
});

test('decodes a lossless WebP exactly, from bytes', async () => {
  const bytes = await raw(rgb, 3).webp({ lossless: true }).toBuffer();
  const im = await decodeImage(new Uint8Array(bytes), 'upload.webp');
  assert.deepEqual(im.data, rgb);
});

test('decodes a JPEG', async () => {
  // A flat colour survives JPEG compression almost unchanged.
  const flat = new Uint8Array(W * H * 3).map((_, i) => [200, 100, 50][i % 3]!);
  const file = join(tmp, 'flat.jpg');
  await raw(flat, 3).jpeg({ quality: 100 }).toFile(file);
  const im = await decodeImage(file);
  assert.deepEqual([im.width, im.height], [W, H]);
  assert.ok(im.data.every((v, i) => Math.abs(v - flat[i]!) <= 2), `${Array.from(im.data.subarray(0, 6))}`);
});

test('applies the EXIF orientation and matches PIL load_image byte for byte', async () => {
  // exif6.jpg is stored 64x48 with orientation 6; exif6.rgb is transformers' load_image of it.
  const im = await decodeImage(join(fixtures, 'exif6.jpg'));
  assert.deepEqual([im.width, im.height], [48, 64]);
  assert.deepEqual(im.data, new Uint8Array(readFileSync(join(fixtures, 'exif6.rgb'))));
});

test('drops alpha without compositing, like convert("RGB")', async () => {
  const rgba = new Uint8Array(W * H * 4);
  for (let p = 0; p < W * H; p++) {
    rgba.set(rgb.subarray(p * 3, p * 3 + 3), p * 4);
    rgba[p * 4 + 3] = p % 2 === 0 ? 0 : 128; // transparent pixels keep their colour
  }
  const file = join(tmp, 'rgba.png');
  await raw(rgba, 4).png().toFile(file);
  assert.deepEqual((await decodeImage(file)).data, rgb);
});

test('replicates grey to three channels', async () => {
  const grey = Uint8Array.from({ length: W * H }, (_, i) => i * 17);
  const file = join(tmp, 'grey.png');
  await raw(grey, 1).toColourspace('b-w').png().toFile(file);
  assert.equal((await sharp(file).metadata()).channels, 1);
  const im = await decodeImage(file);
  assert.deepEqual(im.data, Uint8Array.from({ length: W * H * 3 }, (_, i) => grey[Math.floor(i / 3)]!));
});

async function rejects(input: string | Uint8Array, label: string | undefined, name: string, problem: RegExp) {
  await assert.rejects(decodeImage(input, label), (err: unknown) => {
    assert.ok(err instanceof CorematchingError, String(err));
    assert.ok(err.message.includes(name), err.message);
    assert.match(err.message, problem);
    return true;
  });
}

test('bad input names the file', async () => {
  await rejects(join(tmp, 'missing.png'), undefined, 'missing.png', /not found/);
  const empty = join(tmp, 'empty.jpg');
  writeFileSync(empty, '');
  await rejects(empty, undefined, 'empty.jpg', /empty/);
  const text = join(tmp, 'text.png');
  writeFileSync(text, 'this is not a picture\n');
  await rejects(text, undefined, 'text.png', /not a readable image/);
  await rejects(new Uint8Array([1, 2, 3, 4]), 'pasted bytes', 'pasted bytes', /not a readable image/);
  await rejects(new Uint8Array(0), undefined, '<image bytes>', /empty/);
});
