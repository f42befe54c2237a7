/** `corematching visualize` writes a picture of the kept tokens. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { fixturePath, tempDir } from './helpers.js';

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

test('visualize writes a PNG with both panels and a caption', async () => {
  const out = path.join(tempDir('cm-vis-'), 'map.png');
  const r = spawnSync(process.execPath, [cli, 'visualize', '--model', fixturePath('models', 'siglip-qwen2'), '--image', fixturePath('photos', 'coffee.png'), '--prompt', 'What is this?', '--token-layer', '1', '--budget', '10', '--out', out], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /kept 10\/49 image tokens/);
  const meta = await sharp(out).metadata();
  assert.equal(meta.format, 'png');
  assert.ok(meta.width! > 2 * meta.height! * 0.8, `${meta.width}x${meta.height}`);
  fs.rmSync(path.dirname(out), { recursive: true });
});

test('visualize refuses a policy that keeps every token', () => {
  const r = spawnSync(process.execPath, [cli, 'visualize', '--model', fixturePath('models', 'siglip-qwen2'), '--image', fixturePath('photos', 'coffee.png'), '--prompt', 'x', '--policy', 'dense', '--out', '/tmp/x.png'], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /visualize needs a token policy/);
});
