/** Models by name: the Hugging Face cache layout, downloads from a hub stand-in on loopback, offline use, resuming, verification. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CorematchingError } from '../src/io/errors.js';
import { cachedSnapshot, hubCacheDir, isRepoId, resolveModelDir } from '../src/io/hub.js';
import { VisionLanguageModel } from '../src/pipeline/vision-language-model.js';
import { fixturePath, tempDir } from './helpers.js';
import { folderFiles, STAND_IN_COMMIT, startHubStandIn, type StandIn } from './hub-stand-in.js';

const REPO = 'stand-in/clip-llama';
const model = fixturePath('models', 'clip-llama');
const files = folderFiles(model);
files.set('README.md', Buffer.from('# not a file the engine needs\n'));
const shard = 'model-00002-of-00003.safetensors';
let hub: StandIn;

before(async () => {
  hub = await startHubStandIn(REPO, files);
});
after(() => hub.close());

test('a model id downloads into the hub cache layout, only the files a checkpoint needs, and loads as its folder does', async () => {
  const cacheDir = tempDir('cm-hub-');
  const progress = new Map<string, number>();
  const dir = await resolveModelDir(REPO, { cacheDir, hubUrl: hub.url, offline: false, onDownload: (file, done, total) => {
    assert.ok(done <= total);
    progress.set(file, done);
  } });
  const repoFolder = path.join(cacheDir, 'models--stand-in--clip-llama');
  assert.equal(dir, path.join(repoFolder, 'snapshots', STAND_IN_COMMIT));
  assert.equal(fs.readFileSync(path.join(repoFolder, 'refs', 'main'), 'utf8'), STAND_IN_COMMIT);
  assert.deepEqual(fs.readdirSync(dir).sort(), [...files.keys()].filter((f) => f !== 'README.md').sort());
  for (const f of fs.readdirSync(dir)) {
    assert.ok(fs.lstatSync(path.join(dir, f)).isSymbolicLink(), `${f} links into blobs/`);
    assert.deepEqual(fs.readFileSync(path.join(dir, f)), files.get(f), f);
  }
  assert.equal(progress.get(shard), files.get(shard)!.length);
  const [byName, byFolder] = [await VisionLanguageModel.load(REPO, { threads: 1, hub: { cacheDir, offline: true } }), await VisionLanguageModel.load(model, { threads: 1 })];
  const ask = { image: fixturePath('photos', 'chelsea.png'), prompt: 'What is shown in this image?', maxNewTokens: 4, ignoreEos: true };
  assert.deepEqual((await byName.generate(ask)).tokens, (await byFolder.generate(ask)).tokens);
  await Promise.all([byName.release(), byFolder.release()]);
});

test('offline, a cached model resolves with no request; an uncached one is a clear error', async () => {
  const cacheDir = tempDir('cm-hub-');
  const online = await resolveModelDir(REPO, { cacheDir, hubUrl: hub.url, offline: false });
  const before = hub.requests.length;
  assert.equal(await resolveModelDir(REPO, { cacheDir, hubUrl: hub.url, offline: true }), online);
  assert.equal(hub.requests.length, before);
  assert.equal(cachedSnapshot(cacheDir, REPO, STAND_IN_COMMIT), online);
  await assert.rejects(resolveModelDir('stand-in/other', { cacheDir, offline: true }),
    (err: Error) => err instanceof CorematchingError && /stand-in\/other: no such folder.*not in the Hugging Face cache.*HF_HUB_OFFLINE/.test(err.message));
});

test('an unreachable hub serves the cached snapshot, and without one names the model and the hub', async () => {
  const cacheDir = tempDir('cm-hub-');
  const online = await resolveModelDir(REPO, { cacheDir, hubUrl: hub.url, offline: false });
  const nowhere = 'http://127.0.0.1:9';
  assert.equal(await resolveModelDir(REPO, { cacheDir, hubUrl: nowhere, offline: false }), online);
  await assert.rejects(resolveModelDir(REPO, { cacheDir: tempDir('cm-hub-'), hubUrl: nowhere, offline: false }),
    (err: Error) => err instanceof CorematchingError && err.message.includes(`${REPO}: no such folder`) && err.message.includes(nowhere));
});

test('a partial download resumes with a range request where it stopped', async () => {
  const cacheDir = tempDir('cm-hub-');
  const bytes = files.get(shard)!;
  const oid = hub.tree.find((e) => e.path === shard)!.lfs!.oid as string;
  const blobs = path.join(cacheDir, 'models--stand-in--clip-llama', 'blobs');
  fs.mkdirSync(blobs, { recursive: true });
  fs.writeFileSync(path.join(blobs, `${oid}.incomplete`), bytes.subarray(0, 1000));
  const seen = hub.requests.length;
  const dir = await resolveModelDir(REPO, { cacheDir, hubUrl: hub.url, offline: false });
  assert.deepEqual(fs.readFileSync(path.join(dir, shard)), bytes);
  const ranges = hub.requests.slice(seen).filter((r) => r.path.endsWith(shard) && r.range !== 'bytes=0-0').map((r) => r.range);
  assert.deepEqual(ranges, [`bytes=1000-${bytes.length - 1}`]);
  assert.ok(!fs.readdirSync(blobs).some((f) => f.endsWith('.incomplete')));
});

test('a file whose bytes do not match its hash is removed and named; the next try downloads it whole', async () => {
  const cacheDir = tempDir('cm-hub-');
  const bytes = Buffer.from(files.get(shard)!);
  bytes[bytes.length - 1] ^= 0xff;
  hub.serve.set(shard, bytes);
  try {
    await assert.rejects(resolveModelDir(REPO, { cacheDir, hubUrl: hub.url, offline: false }),
      (err: Error) => err instanceof CorematchingError && err.message.includes(shard) && /arrived as \d+ bytes with hash \w+, expected/.test(err.message));
    const blobs = path.join(cacheDir, 'models--stand-in--clip-llama', 'blobs');
    assert.ok(!fs.readdirSync(blobs).some((f) => f.endsWith('.incomplete')));
    assert.equal(cachedSnapshot(cacheDir, REPO, 'main'), null, 'no ref until every file is there');
  } finally {
    hub.serve.delete(shard);
  }
  const dir = await resolveModelDir(REPO, { cacheDir, hubUrl: hub.url, offline: false });
  assert.deepEqual(fs.readFileSync(path.join(dir, shard)), files.get(shard));
});

test('the cache folder follows HF_HUB_CACHE, then HF_HOME; a name is a model id only where no such folder exists', () => {
  assert.equal(hubCacheDir({ HF_HUB_CACHE: '/a', HF_HOME: '/b' }), '/a');
  assert.equal(hubCacheDir({ HF_HOME: '/b' }), path.join('/b', 'hub'));
  assert.match(hubCacheDir({}), /\.cache\/huggingface\/hub$/);
  assert.ok(isRepoId('org/name'));
  assert.ok(!isRepoId(path.relative(process.cwd(), model)), 'an existing folder');
  for (const name of ['name', '/abs/path', 'a/b/c', '../x', 'org/..']) assert.ok(!isRepoId(name), name);
});

test('corematching run --model org/name downloads through HF_ENDPOINT into HF_HUB_CACHE, then runs offline', async () => {
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const env = { ...process.env, HF_ENDPOINT: hub.url, HF_HUB_CACHE: tempDir('cm-hub-'), HF_HUB_OFFLINE: '' };
  const args = [cli, 'run', '--model', REPO, '--image', fixturePath('photos', 'chelsea.png'), '--prompt', 'What is shown in this image?', '--max-new-tokens', '3', '--json', '--threads', '1'];
  const online = JSON.parse((await promisify(execFile)(process.execPath, args, { env })).stdout);
  const offline = JSON.parse((await promisify(execFile)(process.execPath, args, { env: { ...env, HF_HUB_OFFLINE: '1', HF_ENDPOINT: 'http://127.0.0.1:9' } })).stdout);
  assert.equal(online.tokens.length, 3);
  assert.deepEqual(offline.tokens, online.tokens);
});
