/**
 * The quantized vision tower runs its layers in sessions of consecutive layers (vision-tower.ts):
 * however the layers are grouped, the hidden states are the same.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Checkpoint } from '../src/io/checkpoint.js';
import { loadLlavaConfig } from '../src/io/config.js';
import { VisionTower } from '../src/models/vision-tower.js';
import { detectLayout } from '../src/models/weights.js';
import { fixturePath } from './helpers.js';

test('int8 vision layers give the same hidden states in one session as in a session each', async () => {
  const config = loadLlavaConfig(fixturePath('models', 'clip-llama'));
  const checkpoint = Checkpoint.open(config.dir);
  const c = config.vision;
  const layers = [1, 2, 3];
  try {
    const prefix = detectLayout(checkpoint).vision;
    const whole = await VisionTower.load(checkpoint, prefix, c, layers, 'int8', { threads: 1 });
    const perLayer = await VisionTower.load(checkpoint, prefix, c, layers, 'int8', { threads: 1 }, undefined, 1);
    const pixels = Float32Array.from({ length: c.numChannels * c.imageSize * c.imageSize }, (_, i) => Math.sin(i * 0.37));
    const a = await whole.hiddenStates(pixels, [0, ...layers]);
    const b = await perLayer.hiddenStates(pixels, [0, ...layers]);
    a.forEach((state, i) => assert.deepEqual(b[i], state, `hidden state ${i}`));
    await assert.rejects(whole.hiddenStates(pixels, [4]), /hidden state 4 was not among the feature layers/);
    await whole.release();
    await perLayer.release();
  } finally {
    checkpoint.close();
  }
});
