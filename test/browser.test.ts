/**
 * The serve page in a real headless browser (Debian's chromium, driven by puppeteer-core): pick an
 * image, ask, see the streamed answer, the stats and the kept-token map. Skipped, with a message,
 * where no chromium is installed (.ci/run installs it).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import puppeteer, { type ElementHandle } from 'puppeteer-core';
import { VisionLanguageModel } from '../src/pipeline/vision-language-model.js';
import { CorematchingServer } from '../src/server/server.js';
import { fixturePath } from './helpers.js';

export const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));

test('the serve page streams an answer and draws the kept-token map', { skip: CHROMIUM === undefined ? 'no chromium installed (apt-get install chromium)' : false }, async () => {
  const server = await CorematchingServer.start(() => VisionLanguageModel.load(fixturePath('..', '..', 'models', 'default'), { threads: 1 }), {
    host: '127.0.0.1', port: 0, modelName: 'default', allowFiles: null, maxBodyBytes: 2 ** 24, maxImagePixels: 2 ** 24,
    maxPromptTokens: 4096, maxTokens: 64, timeoutSeconds: 60, queueLimit: 4, policy: 'dense', policyOptions: {},
  });
  const browser = await puppeteer.launch({ executablePath: CHROMIUM!, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
  try {
    await server.loaded;
    const page = await browser.newPage();
    await page.setViewport({ width: 1100, height: 620 });
    await page.goto(`${server.url}/`);
    const input = (await page.$('#file')) as ElementHandle<HTMLInputElement>;
    await input.uploadFile(fixturePath('scenes', 'images', 'test-000000.png'));
    await page.waitForFunction(() => !(document.getElementById('send') as HTMLButtonElement).disabled);
    await page.select('#policy', 'corematching');
    await page.select('#budget', '16');
    await page.click('#send');
    await page.waitForFunction(() => document.body.dataset.done === 'yes', { timeout: 30_000 });
    assert.equal(await page.$eval('#answer', (e) => e.textContent), 'blue');
    assert.equal(await page.$eval('#error', (e) => e.textContent), '');
    assert.match(await page.$eval('#stats', (e) => e.textContent ?? ''), /16 of 256/);
    // The page's "prefill GFLOP" is the API's prefill alone (it once added the vision tower's).
    const stats = Object.fromEntries(await page.$$eval('#stats tr', (rows) => rows.map((r) => [r.cells[0]!.textContent, r.cells[1]!.textContent])));
    const flops = await page.evaluate(() => (globalThis as unknown as { eval(s: string): { flops: { vision: number; prefill: number } } }).eval('lastReport').flops);
    assert.equal(stats['prefill GFLOP']?.split(' ')[0], (flops.prefill / 1e9).toFixed(2));
    assert.equal(stats['vision GFLOP'], (flops.vision / 1e9).toFixed(2));
    assert.notEqual((flops.prefill / 1e9).toFixed(2), ((flops.prefill + flops.vision) / 1e9).toFixed(2));
    // 240 of the 256 patches are dimmed: most of the canvas is far darker than the scene's light background.
    const dark = await page.$eval('#view', (c) => {
      const { data } = (c as HTMLCanvasElement).getContext('2d')!.getImageData(0, 0, 336, 336);
      let n = 0;
      for (let i = 0; i < data.length; i += 4) if (data[i]! + data[i + 1]! + data[i + 2]! < 350) n++;
      return n / (data.length / 4);
    });
    assert.ok(dark > 0.75, `dimmed share ${dark}`);
    if (process.env.COREMATCHING_SCREENSHOT) await page.screenshot({ path: process.env.COREMATCHING_SCREENSHOT as `${string}.png` });
  } finally {
    await browser.close();
    await server.close();
  }
});

test('an analysis report renders offline in chromium: tables, and every picture decoded', { skip: CHROMIUM === undefined ? 'no chromium installed (apt-get install chromium)' : false }, async () => {
  const { spawnSync } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const path = await import('node:path');
  const { tempDir } = await import('./helpers.js');
  const file = path.join(tempDir('cm-report-'), 'orthogonality.html');
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const r = spawnSync(process.execPath, [cli, 'analyze', 'orthogonality', '--model', fixturePath('models', 'clip-llama'), '--report', file], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const browser = await puppeteer.launch({ executablePath: CHROMIUM!, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
  try {
    const page = await browser.newPage();
    const requests: string[] = [];
    page.on('request', (req) => requests.push(req.url()));
    await page.goto(`file://${file}`, { waitUntil: 'load' });
    const images = await page.$$eval('img', (imgs) => imgs.map((i) => (i as HTMLImageElement).naturalWidth));
    assert.equal(images.length, 2);
    assert.ok(images.every((w) => w > 0), 'every picture decodes');
    assert.equal(await page.$$eval('tbody tr', (rows) => rows.length), 3);
    assert.ok(requests.every((u) => u.startsWith('file:') || u.startsWith('data:')), `fetched ${requests.join(', ')}`);
  } finally {
    await browser.close();
  }
});
