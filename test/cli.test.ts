/** The `corematching run` command as a user runs it: exit codes, JSON output, one-line errors. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { fixturePath, tempDir } from './helpers.js';

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const model = fixturePath('models', 'clip-llama');
const photo = fixturePath('photos', 'chelsea.png');

function run(...args: string[]) {
  const r = spawnSync(process.execPath, [cli, 'run', ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('--json prints exactly one JSON object with the generated tokens', () => {
  const r = run('--model', model, '--image', photo, '--prompt', 'What is shown in this image?', '--max-new-tokens', '5', '--json');
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 1);
  const out = JSON.parse(lines[0]!);
  assert.equal(out.imageTokens, 64);
  assert.equal(out.tokens.length, 5);
  assert.equal(typeof out.text, 'string');
  assert.ok(out.promptTokens.filter((id: number) => id === 32000).length === 64);
  for (const key of ['preprocessMs', 'visionMs', 'prefillMs', 'firstTokenMs', 'decodeTokensPerSecond']) assert.equal(typeof out.stats[key], 'number', key);
});

test('streams text to stdout and stats to stderr', () => {
  const r = run('--model', model, '--image', photo, '--prompt', 'Hi', '--max-new-tokens', '3');
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.stdout.length > 1);
  assert.match(r.stderr, /decode .* tokens\/s/);
});

test('sampling with a seed reproduces', () => {
  const args = ['--model', model, '--image', photo, '--prompt', 'Hi', '--max-new-tokens', '6', '--temperature', '1.5', '--top-p', '0.9', '--seed', '7', '--json'];
  const a = JSON.parse(run(...args).stdout);
  const b = JSON.parse(run(...args).stdout);
  assert.deepEqual(a.tokens, b.tokens);
});

const errors: [string, string[], RegExp][] = [
  ['missing model folder', ['--model', '/no/such/model', '--image', photo, '--prompt', 'x'], /\/no\/such\/model: .*does not exist/],
  ['missing image', ['--model', model, '--image', '/no/such.png', '--prompt', 'x'], /\/no\/such\.png/],
  ['not an image', ['--model', model, '--image', fixturePath('models', 'clip-llama', 'config.json'), '--prompt', 'x'], /config\.json: not a readable image/],
  ['two image placeholders', ['--model', model, '--image', photo, '--prompt', 'USER: <image> <image> ASSISTANT:', '--raw-prompt'], /exactly one <image>.*found 2/],
  ['no image placeholder', ['--model', model, '--image', photo, '--prompt', 'USER: hi ASSISTANT:', '--raw-prompt'], /exactly one <image>.*found 0/],
  ['bad number', ['--model', model, '--image', photo, '--prompt', 'x', '--max-new-tokens', 'many'], /max-new-tokens.*positive integer/],
  ['bad top-p', ['--model', model, '--image', photo, '--prompt', 'x', '--top-p', '2'], /top-p.*\(0, 1\]/],
];
for (const [name, args, pattern] of errors) {
  test(`bad input gives a one-line error: ${name}`, () => {
    const r = run(...args);
    assert.equal(r.status, 1);
    assert.match(r.stderr, pattern);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });
}

const parserErrors: [string, string[], RegExp][] = [
  ['missing --image', ['--model', model, '--prompt', 'x'], /--image/],
  ['negative --max-new-tokens', ['--model', model, '--image', photo, '--prompt', 'x', '--max-new-tokens', '-5'], /max-new-tokens.*positive integer/],
  ['--threads 0', ['--model', model, '--image', photo, '--prompt', 'x', '--threads', '0'], /threads.*positive integer/],
  ['negative --temperature', ['--model', model, '--image', photo, '--prompt', 'x', '--temperature', '-1'], /temperature.*positive number/],
];
for (const [name, args, pattern] of parserErrors) {
  test(`an argument error is one line and a hint, not the whole help: ${name}`, () => {
    const r = run(...args);
    assert.equal(r.status, 1);
    const lines = r.stderr.trim().split('\n');
    assert.match(lines[0]!, pattern);
    assert.ok(lines.length <= 2, `${lines.length} lines:\n${r.stderr}`);
    assert.match(r.stderr, /--help/);
    assert.doesNotMatch(r.stderr, /Options:/);
  });
}

test('an <image> typed into a templated question is refused, saying the template adds its own', () => {
  const r = run('--model', model, '--image', photo, '--prompt', 'What is this? <image>');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /the question contains 1 <image> placeholder, and the chat template adds the image's own.*--raw-prompt/);
});

test('serve --port out of range names --port', () => {
  const r = spawnSync(process.execPath, [cli, 'serve', '--model', model, '--port', '99999'], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /--port.*99999.*0 to 65535/);
  assert.ok(r.stderr.trim().split('\n').length <= 2, r.stderr);
});

test('a prompt longer than the context is refused', () => {
  const dir = tempDir('cm-ctx-');
  fs.cpSync(model, dir, { recursive: true });
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  config.text_config.max_position_embeddings = 40;
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  const r = run('--model', dir, '--image', photo, '--prompt', 'x');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /the prompt is \d+ tokens .*context is 40 tokens/);
  fs.rmSync(dir, { recursive: true });
});

test('--policy corematching reports kept tokens, core neurons and FLOPs in --json', () => {
  const r = run('--model', model, '--image', photo, '--prompt', 'Hi', '--max-new-tokens', '3', '--json', '--policy', 'corematching', '--token-layer', '1', '--budget', '8', '--neuron-layers', 'all');
  assert.equal(r.status, 0, r.stderr);
  const { sparsity } = JSON.parse(r.stdout);
  assert.equal(sparsity.policy, 'corematching');
  assert.equal(sparsity.imageTokens, 64);
  assert.equal(sparsity.keptImageTokens.length, 8);
  assert.deepEqual([...sparsity.keptImageTokens].sort((a: number, b: number) => a - b), sparsity.keptImageTokens);
  assert.ok(sparsity.keptImageTokens.every((i: number) => i >= 0 && i < 64));
  assert.deepEqual(Object.keys(sparsity.coreNeurons), ['0', '1', '2']);
  assert.ok(sparsity.flops.prefill < sparsity.denseFlops.prefill);
  assert.ok(sparsity.flops.decodeStep < sparsity.denseFlops.decodeStep);
  assert.equal(sparsity.flops.vision, sparsity.denseFlops.vision);
});

const policyErrors: [string, string[], RegExp][] = [
  ['unknown policy', ['--policy', 'nope'], /unknown policy "nope"; expected one of dense, corematching/],
  ['rho outside (0, 1]', ['--policy', 'corematching', '--rho', '1.5'], /--rho must be a number in \(0, 1\]/],
  ['token layer past the last layer', ['--policy', 'corematching', '--token-layer', '3'], /tokenLayer 3 is past the last layer/],
  ['budget larger than the image tokens', ['--policy', 'fastv', '--budget', '65'], /budget 65 is larger than the 64 image tokens/],
];
for (const [name, args, pattern] of policyErrors) {
  test(`bad policy option gives a one-line error: ${name}`, () => {
    const r = run('--model', model, '--image', photo, '--prompt', 'x', ...args);
    assert.equal(r.status, 1);
    assert.match(r.stderr, pattern);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  });
}

test('without --model, run answers a scene question with the shipped model', () => {
  const r = run('--image', fixturePath('scenes', 'images', 'test-000000.png'), '--prompt', 'What color is the triangle?');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'blue');
});

test('a 45k-character command line ends in an answer or a clean error', () => {
  // onnxruntime-node 1.30 crashed (SIGSEGV) making a session under a command line over ~28.9k characters with its telemetry on.
  const long = run('--model', model, '--image', photo, '--prompt', 'cat '.repeat(11_250), '--max-new-tokens', '1');
  assert.equal(long.status, 1, long.stderr);
  assert.match(long.stderr, /^error: the prompt is \d+ tokens .*context is \d+ tokens\n$/);
  const answered = run('--model', model, '--image', photo, '--prompt', 'information '.repeat(1_500), '--max-new-tokens', '2', '--json');
  assert.equal(answered.status, 0, answered.stderr);
  assert.equal(JSON.parse(answered.stdout).tokens.length, 2);
});

test('every command\'s help prints each default once, as the user would type it', () => {
  for (const command of ['run', 'eval', 'visualize', 'serve', 'sweep-neurons', 'ablate', 'analyze criteria', 'analyze orthogonality']) {
    const r = spawnSync(process.execPath, [cli, ...command.split(' '), '--help'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const help = r.stdout.replace(/\s+/g, ' ');
    assert.doesNotMatch(help, /default: [[{]/, `${command}: a default printed as JSON`);
    assert.doesNotMatch(help, /\(default [^)]*\) \(default/, `${command}: a default printed twice`);
  }
});

test('sweep-neurons says why two betas keep the same share of neurons', () => {
  const r = spawnSync(process.execPath, [cli, 'sweep-neurons', '--data', fixturePath('scenes'), '--limit', '4', '--betas', '0.95,1'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /the share counts every decoder layer/);
  assert.match(r.stdout, /beta 0\.95 and 1 keep the same \d+\.\d% of the FFN: a core set holds only neurons/);
});

test('analyze orthogonality explains its columns on stdout', () => {
  const r = spawnSync(process.execPath, [cli, 'analyze', 'orthogonality', '--model', model], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /qk is Wq\^T Wk .* share = sum\(diag\(M\)\^2\)/);
});

test('chat keeps the conversation in the KV cache; /reset, /image and a bad command are handled in the chat', () => {
  const scene = fixturePath('scenes', 'images', 'test-000000.png');
  const input = ['What color is the triangle?', 'How many circles are there?', '/reset', '/image nothing.png', '/bogus', `/image ${fixturePath('scenes', 'images', 'test-000001.png')}`, 'What color is the triangle?', '/quit', 'never asked'].join('\n');
  const r = spawnSync(process.execPath, [cli, 'chat', '--image', scene, '--max-new-tokens', '4'], { encoding: 'utf8', input });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim().split('\n').length, 3, r.stdout);
  const turns = [...r.stderr.matchAll(/\[(\d+) prompt tokens, (\d+) of them from the cache/g)].map((m) => [Number(m[1]), Number(m[2])]);
  assert.equal(turns.length, 3);
  assert.equal(turns[0]![1], 0);
  assert.ok(turns[1]![1] > 256 && turns[1]![1] < turns[1]![0], `second turn: ${turns[1]}`);
  assert.equal(turns[2]![1], 0, 'another image starts over');
  assert.match(r.stderr, /error: nothing\.png: image file not found/);
  assert.match(r.stderr, /error: unknown command \/bogus/);
  const bad = spawnSync(process.execPath, [cli, 'chat', '--image', 'missing.png'], { encoding: 'utf8', input: '' });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /^error: missing\.png: image file not found/);
});

test('--version prints the package version', () => {
  const r = spawnSync(process.execPath, [cli, '--version'], { encoding: 'utf8' });
  assert.equal(r.status, 0);
  assert.equal(r.stdout.trim(), (JSON.parse(fs.readFileSync(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8')) as { version: string }).version);
});

test('a run leaves no ONNX Runtime usage database or debug log behind', () => {
  const home = tempDir('cm-home-');
  const r = spawnSync(process.execPath, [cli, 'run', '--model', model, '--image', photo, '--prompt', 'x', '--max-new-tokens', '1'], {
    encoding: 'utf8',
    env: { ...process.env, HOME: home, ORT_DISABLE_TELEMETRY: undefined },
  });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(fs.readdirSync(home), []);
  assert.equal(fs.existsSync(`/tmp/mat-debug-${r.pid}.log`), false);
});
