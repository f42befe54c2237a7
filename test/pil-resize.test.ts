import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { RgbImage } from '../src/io/image.js';
import { pilResize, type Resample } from '../src/io/pil-resize.js';

// Recorded by scripts/pil_cases.py with Pillow's Image.resize.
const dir = fileURLToPath(new URL('../../test/fixtures/pil/', import.meta.url));
const manifest = JSON.parse(readFileSync(dir + 'resize.json', 'utf8')) as {
  images: { name: string; width: number; height: number; offset: number }[];
  cases: { image: string; width: number; height: number; resample: Resample; offset: number }[];
};
const blob = new Uint8Array(readFileSync(dir + 'resize.bin'));
const images = new Map<string, RgbImage>(
  manifest.images.map((im) => [
    im.name,
    { width: im.width, height: im.height, data: blob.subarray(im.offset, im.offset + im.width * im.height * 3) },
  ]),
);
const NAMES = { 0: 'NEAREST', 2: 'BILINEAR', 3: 'BICUBIC' } as const;

for (const c of manifest.cases) {
  const src = images.get(c.image)!;
  test(`${NAMES[c.resample]} ${c.image} ${src.width}x${src.height} -> ${c.width}x${c.height} is bit-identical to PIL`, () => {
    const out = pilResize(src, c.width, c.height, c.resample);
    assert.equal(out.width, c.width);
    assert.equal(out.height, c.height);
    const expected = blob.subarray(c.offset, c.offset + c.width * c.height * 3);
    const firstDiff = out.data.findIndex((v, i) => v !== expected[i]);
    assert.equal(firstDiff, -1, `byte ${firstDiff}: got ${out.data[firstDiff]}, PIL ${expected[firstDiff]}`);
  });
}

test('same size returns an equal copy, not the input buffer', () => {
  const src = images.get('synth')!;
  const out = pilResize(src, src.width, src.height, 3);
  assert.deepEqual(out.data, src.data);
  assert.notEqual(out.data.buffer, src.data.buffer);
});

test('rejects a non-positive or fractional size', () => {
  const src = images.get('synth')!;
  assert.throws(() => pilResize(src, 0, 5, 3), RangeError);
  assert.throws(() => pilResize(src, 5.5, 5, 2), RangeError);
});
