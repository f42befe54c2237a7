// npm's install step: builds the decode kernels (binding.gyp) with node-gyp and the machine's
// compiler, against the Node headers installed beside node when there are some (no download).
// A failed build is not a failed install: the engine then runs its decode on ONNX Runtime.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
if (process.env.COREMATCHING_NATIVE === '0') {
  console.log('corematching: COREMATCHING_NATIVE=0, native decode kernels not built');
  process.exit(0);
}
const prefix = path.resolve(path.dirname(process.execPath), '..');
const nodeGyp = [
  process.env.npm_config_node_gyp,
  path.join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
].find((f) => f && fs.existsSync(f));
const nodedir = fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? [`--nodedir=${prefix}`] : [];
const result = nodeGyp === undefined
  ? { status: 1, stderr: 'node-gyp not found' }
  : spawnSync(process.execPath, [nodeGyp, 'rebuild', ...nodedir], { cwd: root, encoding: 'utf8' });
if (result.status !== 0) {
  const why = `${result.stderr ?? ''}${result.error?.message ?? ''}`.split('\n').filter((l) => /error/i.test(l))[0] ?? `exit code ${result.status}`;
  console.warn(`corematching: native decode kernels not built (${why.trim()}); decoding runs on ONNX Runtime`);
}
