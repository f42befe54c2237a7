/** `corematching visualize` writes a picture of the kept tokens. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { renderTokenMap, scoreRanks, type TokenMap } from '../src/pipeline/token-map.js';
import { fixturePath, tempDir } from './helpers.js';

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

test('visualize writes a PNG with both panels and a caption', async () => {
  const out = path.join(tempDir('cm-vis-'), 'map.png');
  const r = spawnSync(process.execPath, [cli, 'visualize', '--model', fixturePath('models', 'siglip-qwen2'), '--image', fixturePath('photos', 'coffee.png'), '--prompt', 'What is this?', '--token-layer', '1', '--budget', '10', '--out', out], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /kept 10\/49 image tokens/);
  const meta = await sharp(out).metadata();
  assert.equal(meta.format, 'png');
  assert.ok(meta.width! > 1.5 * meta.height!, `${meta.width}x${meta.height}: two panels side by side`);
  fs.rmSync(path.dirname(out), { recursive: true });
});

test('visualize refuses a policy that keeps every token', () => {
  const r = spawnSync(process.execPath, [cli, 'visualize', '--model', fixturePath('models', 'siglip-qwen2'), '--image', fixturePath('photos', 'coffee.png'), '--prompt', 'x', '--policy', 'dense', '--out', '/tmp/x.png'], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /visualize needs a token policy/);
});

test('scoreRanks: ranks in [0, 1], ties share their mean rank', () => {
  assert.deepEqual(Array.from(scoreRanks([5, 1, 5, 3], 4)), [(2 + 3) / 2 / 3, 0, (2 + 3) / 2 / 3, 1 / 3]);
  assert.deepEqual(Array.from(scoreRanks([7], 1)), [1]);
});

test('token maps: a legend below the panels, and dropped tokens drawn the same whatever the scale of the scores', async () => {
  const grid = 4;
  const patch = 8;
  const view = { width: 32, height: 32, data: new Uint8Array(32 * 32 * 3).fill(200) };
  const spread = Array.from({ length: 16 }, (_, i) => i);
  // FastV-like: the same order, nearly all the mass on the last token.
  const skewed = spread.map((s) => Math.exp(3 * s));
  const map = (scores: number[] | null): TokenMap => ({ view, grid, patch, kept: [15, 14, 3], scores, caption: 'Q: x   A: y' });
  const [a, b] = await Promise.all([renderTokenMap(map(spread)), renderTokenMap(map(skewed))]);
  assert.ok(a.equals(b), 'a monotone change of the scores changes the picture');
  const { data, info } = await sharp(a).raw().toBuffer({ resolveWithObject: true });
  const scale = Math.floor(384 / 32);
  const [w, gap] = [32 * scale, 12];
  assert.equal(info.height, w + 2 * gap + 48 + 56);
  const pixel = (x: number, y: number) => Array.from(data.subarray((y * info.width + x) * info.channels, (y * info.width + x) * info.channels + 3));
  // Right panel: token 0 (dropped, lowest rank) is dimmed black, token 1 is dimmed too, never left at full colour.
  const cell = (token: number) => pixel(2 * gap + w + ((token % grid) + 0.5) * patch * scale, gap + (Math.floor(token / grid) + 0.5) * patch * scale);
  assert.deepEqual(cell(0), [40, 40, 41]);
  for (const token of [1, 2, 5, 9]) assert.ok(Math.max(...cell(token)) <= Math.round(255 * 0.25 + 40), `token ${token}: ${cell(token)}`);
  assert.ok(Math.max(...cell(15)) > 200, `kept token 15: ${cell(15)}`);
  // The legend's colour bar runs from the ramp's dark end to its bright end.
  const legendRow = w + 2 * gap + 16;
  const bar = Array.from({ length: info.width }, (_, x) => pixel(x, legendRow)).filter(([r, g, bl]) => !(r === 255 && g === 255 && bl === 255));
  assert.ok(bar.some(([r, g, bl]) => r! + g! + bl! < 60) && bar.some(([r, g]) => r! > 240 && g! > 240), 'no colour bar in the legend');
  const unscored = await sharp(await renderTokenMap(map(null))).metadata();
  assert.equal(unscored.height, info.height);
});
