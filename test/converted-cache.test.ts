/** Fast reloads: converted int8/int4 weights kept on disk, keyed by the checkpoint, safe against crashes and changes. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CorematchingError } from '../src/io/errors.js';
import { ConvertedCache } from '../src/models/converted-cache.js';
import { VisionLanguageModel } from '../src/pipeline/vision-language-model.js';
import { fixturePath, tempDir } from './helpers.js';

const photo = fixturePath('photos', 'chelsea.png');
const ask = { image: photo, prompt: 'What is shown in this image?', maxNewTokens: 6, ignoreEos: true, logprobs: 1 };

/** A private copy of a fixture checkpoint (so its files can change). */
function copyOf(name: string): string {
  const dir = tempDir('cm-ckpt-');
  fs.cpSync(fixturePath('models', name), dir, { recursive: true });
  return dir;
}

async function answer(dir: string, weights: 'int8' | 'int4', cacheDir: string | false) {
  const vlm = await VisionLanguageModel.load(dir, { threads: 1, weights, cacheDir });
  try {
    const r = await vlm.generate(ask);
    return { tokens: r.tokens, logprobs: r.logprobs!.map((l) => l.logprob) };
  } finally {
    await vlm.release();
  }
}

const entries = (root: string) => (fs.existsSync(root) ? fs.readdirSync(root).sort() : []);

for (const [name, weights] of [['clip-llama', 'int8'], ['siglip-qwen2', 'int4']] as const) {
  test(`${name} ${weights}: a second load reads the converted weights and answers exactly as a load without the cache`, async () => {
    const cacheDir = tempDir('cm-cache-');
    const dir = fixturePath('models', name);
    const fresh = await answer(dir, weights, false);
    assert.deepEqual(entries(cacheDir), [], 'cacheDir false writes nothing');
    const first = await answer(dir, weights, cacheDir);
    const [entry] = entries(cacheDir);
    assert.ok(entry !== undefined && !entry.includes('partial'), entry);
    const stored = fs.readdirSync(path.join(cacheDir, entry));
    for (const f of ['manifest.json', 'embedding', 'projector']) assert.ok(stored.includes(f), f);
    // The LM head is a graph, or, where decode runs natively, the native head with each layer's native weights.
    assert.ok(stored.includes('lm-head.onnx') || (stored.includes('native-head') && stored.includes('native-0')), stored.join(' '));
    assert.ok(stored.some((f) => f.startsWith('decoder-')) && stored.some((f) => f.startsWith('vision-')));
    const second = await answer(dir, weights, cacheDir);
    assert.deepEqual(entries(cacheDir), [entry], 'the hit wrote no new entry');
    assert.deepEqual(first, fresh);
    assert.deepEqual(second, fresh);
  });
}

test('fp32 loads keep nothing on disk', async () => {
  const cacheDir = tempDir('cm-cache-');
  await answer(fixturePath('models', 'clip-mistral'), 'int8', cacheDir);
  const vlm = await VisionLanguageModel.load(fixturePath('models', 'clip-mistral'), { threads: 1, cacheDir: tempDir('cm-cache-') });
  await vlm.release();
  assert.equal(entries(cacheDir).length, 1);
});

test('a changed checkpoint is a new entry, which replaces the old one', async () => {
  const cacheDir = tempDir('cm-cache-');
  const dir = copyOf('clip-mistral');
  const before = await answer(dir, 'int8', cacheDir);
  const [old] = entries(cacheDir);
  // Scale the LM head's weights: new bytes, same size.
  const file = path.join(dir, 'model.safetensors');
  const bytes = fs.readFileSync(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString()) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  const head = header['language_model.lm_head.weight']!;
  assert.equal(head.dtype, 'F32');
  const values = new Float32Array(bytes.buffer.slice(bytes.byteOffset + 8 + headerLength + head.data_offsets[0], bytes.byteOffset + 8 + headerLength + head.data_offsets[1]));
  for (let i = 0; i < values.length; i++) values[i] = -values[i]!;
  Buffer.from(values.buffer).copy(bytes, 8 + headerLength + head.data_offsets[0]);
  fs.writeFileSync(file, bytes);
  fs.utimesSync(file, new Date(), new Date(Date.now() + 5000));
  const after = await answer(dir, 'int8', cacheDir);
  assert.deepEqual(after, await answer(dir, 'int8', false), 'the changed weights, not the cached ones');
  assert.notDeepEqual(after.tokens, before.tokens);
  const now = entries(cacheDir);
  assert.equal(now.length, 1);
  assert.notEqual(now[0], old);
});

test('a crash mid-write leaves nothing that is read (and is swept); a damaged entry is rebuilt; an unreadable one is removed with a clear error', async () => {
  const cacheDir = tempDir('cm-cache-');
  const dir = fixturePath('models', 'clip-mistral');
  const expected = await answer(dir, 'int8', false);
  // A load that died while writing: its partial folder holds some files and no manifest.
  const partial = ConvertedCache.open(cacheDir, 'slot', 'identity');
  partial.graph('decoder-0-1.onnx', () => new Uint8Array([1, 2, 3]));
  assert.deepEqual(await answer(dir, 'int8', cacheDir), expected);
  const entry = entries(cacheDir).find((e) => !e.includes('partial'))!;
  const orphan = path.join(cacheDir, `${entry}.partial-999999-dead`);
  fs.mkdirSync(orphan);
  // A stored file cut short (a full disk): the entry is incomplete, so it is rebuilt.
  const graph = fs.readdirSync(path.join(cacheDir, entry)).find((f) => f.startsWith('decoder-'))!;
  fs.truncateSync(path.join(cacheDir, entry, graph), 10);
  assert.deepEqual(await answer(dir, 'int8', cacheDir), expected);
  assert.ok(fs.statSync(path.join(cacheDir, entry, graph)).size > 10, 'rebuilt');
  assert.ok(!fs.existsSync(orphan), "a dead writer's partial folder is swept when its slot is published");
  // Garbage of the right size: ONNX Runtime refuses it; the error names the cache and the entry goes.
  const size = fs.statSync(path.join(cacheDir, entry, graph)).size;
  fs.writeFileSync(path.join(cacheDir, entry, graph), Buffer.alloc(size, 0xff));
  await assert.rejects(answer(dir, 'int8', cacheDir), (err: Error) => err instanceof CorematchingError && /converted-weight cache entry could not be used/.test(err.message));
  assert.ok(!fs.existsSync(path.join(cacheDir, entry)));
  assert.deepEqual(await answer(dir, 'int8', cacheDir), expected);
});

test('a bad cacheDir is a clear error', async () => {
  for (const bad of ['', 3, true]) {
    await assert.rejects(VisionLanguageModel.load(fixturePath('models', 'clip-mistral'), { weights: 'int8', cacheDir: bad as unknown as string }), /cacheDir must be a folder path or false/);
  }
  const file = path.join(tempDir('cm-cache-'), 'a-file');
  fs.writeFileSync(file, '');
  await assert.rejects(VisionLanguageModel.load(fixturePath('models', 'clip-mistral'), { weights: 'int8', cacheDir: file }),
    (err: Error) => err instanceof CorematchingError && /cannot create the converted-weight cache folder/.test(err.message));
});

test('corematching run: --cache-dir keeps the entry there, --no-cache keeps nothing', () => {
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const cacheDir = tempDir('cm-cache-');
  const run = (...extra: string[]) => {
    const r = spawnSync(process.execPath, [cli, 'run', '--model', fixturePath('models', 'clip-mistral'), '--image', photo, '--prompt', 'What is this?', '--max-new-tokens', '3', '--weights', 'int8', '--json', ...extra], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout).tokens as number[];
  };
  const uncached = run('--no-cache', '--cache-dir', cacheDir);
  assert.deepEqual(entries(cacheDir), []);
  assert.deepEqual(run('--cache-dir', cacheDir), uncached);
  assert.equal(entries(cacheDir).length, 1);
  assert.deepEqual(run('--cache-dir', cacheDir), uncached);
});
