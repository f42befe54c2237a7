/**
 * The package as a user gets it: `npm pack`, then an install into an empty folder with the
 * README's command (no network beyond the npm registry), then `npx corematching run` on the
 * shipped model.
 */
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { fixturePath, tempDir } from './helpers.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

function sh(command: string, args: string[], options: SpawnSyncOptions) {
  const r = spawnSync(command, args, { encoding: 'utf8', timeout: 180_000, ...options });
  assert.equal(r.status, 0, `${command} ${args.join(' ')} failed:\n${String(r.stdout)}\n${String(r.stderr)}`);
  return String(r.stdout);
}

test('npm pack, an install into an empty folder and npx corematching run', () => {
  const packDir = tempDir('cm-pack-');
  // dist/ is already built by `npm test`.
  const packed = JSON.parse(sh('npm', ['pack', '--json', '--pack-destination', packDir], { cwd: root })) as {
    filename: string; size: number; files: { path: string }[];
  }[];
  const { filename, size, files } = packed[0]!;
  const tops = new Set(files.map((f) => f.path.split('/')[0]));
  assert.deepEqual([...tops].sort(), ['README.md', 'binding.gyp', 'dist', 'docs', 'models', 'native', 'package.json']);
  assert.ok(files.every((f) => !f.path.startsWith('dist/') || f.path.startsWith('dist/src/')), 'only dist/src is compiled code users need');
  assert.ok(size < 20 * 2 ** 20, `tarball is ${size} bytes`);

  const project = tempDir('cm-consumer-');
  // npm's allowScripts: onnxruntime-node's postinstall would otherwise fetch CUDA binaries from
  // api.nuget.org, which an offline machine (and a CPU-only user) does not need; corematching's
  // own install step builds its native decode kernels. No environment variable, and npm warns
  // about nothing.
  const tarball = path.join(packDir, filename);
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({
    name: 'consumer', version: '1.0.0', private: true, allowScripts: { 'onnxruntime-node': false, [`file:${tarball}`]: true },
  }));
  const env = { ...process.env };
  delete env.ONNXRUNTIME_NODE_INSTALL;
  const install = spawnSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], { cwd: project, env, encoding: 'utf8', timeout: 180_000 });
  assert.equal(install.status, 0, `npm install failed:\n${install.stdout}\n${install.stderr}`);
  assert.doesNotMatch(install.stderr, /warn/i);
  assert.ok(fs.existsSync(path.join(project, 'node_modules', 'corematching', 'build', 'Release', 'corematching_kernels.node')), 'the native kernels were built');
  const image = fixturePath('scenes', 'images', 'test-000000.png');
  const out = sh('npx', ['--no-install', 'corematching', 'run', '--image', image, '--prompt', 'What color is the triangle?', '--json'], { cwd: project });
  assert.equal(JSON.parse(out).text, 'blue');
});
