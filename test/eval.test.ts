/** `corematching eval` and the evaluation set reader. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { readEvalSet } from '../src/io/eval-set.js';
import { normalizeAnswer, tokenF1 } from '../src/pipeline/evaluate.js';
import { fixturePath, tempDir } from './helpers.js';

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

function evalSet(lines: string[]): string {
  const dir = tempDir('cm-eval-');
  fs.copyFileSync(fixturePath('photos', 'chelsea.png'), path.join(dir, 'cat.png'));
  fs.writeFileSync(path.join(dir, 'questions.jsonl'), `${lines.join('\n')}\n`);
  return dir;
}

test('answers compare case- and punctuation-insensitively', () => {
  assert.equal(normalizeAnswer(' Red.\n'), 'red');
  assert.notEqual(normalizeAnswer('red square'), 'red');
});

test('eval reports accuracy per type, kept tokens and FLOPs', () => {
  const dir = evalSet([
    JSON.stringify({ image: 'cat.png', question: 'What color is the cat?', answer: 'orange', type: 'color' }),
    JSON.stringify({ image: 'cat.png', question: 'How many cats are there?', answer: '1', type: 'count' }),
  ]);
  const r = spawnSync(process.execPath, [cli, 'eval', '--model', fixturePath('models', 'clip-llama'), '--data', dir, '--policy', 'fastv', '--token-layer', '1', '--budget', '8', '--json'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.questions, 2);
  assert.deepEqual(Object.keys(report.perType).sort(), ['color', 'count']);
  assert.equal(report.meanKeptImageTokens, 8);
  assert.ok(report.accuracy >= 0 && report.accuracy <= 1);
  assert.ok(report.meanFlops.prefill < report.denseFlops.prefill);
  fs.rmSync(dir, { recursive: true });
});

test('a bad evaluation set names the file and the line', () => {
  assert.throws(() => readEvalSet('/no/such/set'), /questions\.jsonl: file not found/);
  const dir = evalSet([JSON.stringify({ image: 'cat.png', question: 'q', answer: 'a', type: 't' }), '{"image": "cat.png", "question": 3}']);
  assert.throws(() => readEvalSet(dir), /line 2: field "question" must be a string/);
  fs.rmSync(dir, { recursive: true });
});

test('the sweep table has as many cells in every row as in its header', async () => {
  const { sweepTable } = await import('../src/cli/eval.js');
  const report = {
    policy: 'fastv' as const, policyOptions: {}, questions: 2, accuracy: 0.5, f1: 0.6, imageTokens: 64, meanKeptImageTokens: 8, meanSeconds: 0.01, decodeTokensPerSecond: 10, meanDecodeFfnShare: 1,
    perType: { color: { total: 1, correct: 1, accuracy: 1, f1: 1 }, list: { total: 1, correct: 0, accuracy: 0, f1: 0.2 } },
    meanFlops: { vision: 1, prefill: 1, decodeStep: 1 }, denseFlops: { vision: 1, prefill: 2, decodeStep: 1 },
  };
  const table = sweepTable([{ label: 'fastv', budget: '8', report }, { label: 'random', budget: 'knee', report: null }], ['color', 'list'], ['list']);
  const cells = table.split('\n').map((line) => line.split('|').length);
  assert.equal(new Set(cells).size, 1, table);
  assert.match(table, /\| list \(F1\) \|/);
  assert.match(table, /\| 100\.0 \| 0\.0 \(20\.0\) \|/);
});

test('token-level F1 scores words as multisets, after normalization', () => {
  assert.equal(tokenF1('Red circle, blue square.', 'red circle, blue square'), 1);
  assert.equal(tokenF1('blue square, red circle', 'red circle, blue square'), 1);
  assert.equal(tokenF1('red circle', 'red circle, blue square'), 2 / 3);
  assert.equal(tokenF1('red red red', 'red circle'), 0.4);
  assert.equal(tokenF1('green', 'red'), 0);
  assert.equal(tokenF1('', ''), 1);
  assert.equal(tokenF1('', 'red'), 0);
});

test('eval --sweep runs the listed policies and budgets and writes the table with F1 columns', () => {
  const dir = evalSet([
    JSON.stringify({ image: 'cat.png', question: 'What color is the cat?', answer: 'orange', type: 'color' }),
    JSON.stringify({ image: 'cat.png', question: 'List the animals.', answer: 'one orange cat', type: 'list' }),
  ]);
  const out = path.join(tempDir('cm-sweep-'), 'sweep');
  const r = spawnSync(process.execPath, [cli, 'eval', '--model', fixturePath('models', 'clip-llama'), '--data', dir, '--sweep', '--policies', 'dense,fastv,random', '--budgets', 'knee,8,25%', '--token-layer', '1', '--out', out], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const md = fs.readFileSync(`${out}.md`, 'utf8');
  assert.match(md, /\| list \(F1\) \|/);
  const rows = md.split('\n').filter((l) => /^\| (dense|fastv|random) \|/.test(l));
  assert.deepEqual(rows.map((l) => l.split('|').slice(1, 3).map((c) => c.trim()).join(' ')), ['dense -', 'fastv knee', 'fastv 8', 'fastv 25%', 'random knee', 'random 8', 'random 25%']);
  const json = JSON.parse(fs.readFileSync(`${out}.json`, 'utf8')) as { rows: { report: { meanKeptImageTokens: number } | null }[] };
  assert.equal(json.rows[2]!.report!.meanKeptImageTokens, 8);
  assert.equal(json.rows[3]!.report!.meanKeptImageTokens, 16);
  // Without --out nothing is written, wherever it runs: the table goes to stdout.
  const cwd = tempDir('cm-sweep-cwd-');
  const plain = spawnSync(process.execPath, [cli, 'eval', '--model', fixturePath('models', 'clip-llama'), '--data', dir, '--sweep', '--policies', 'dense', '--limit', '1'], { encoding: 'utf8', cwd });
  assert.equal(plain.status, 0, plain.stderr);
  assert.match(plain.stdout, /^# Accuracy of every policy and budget/);
  assert.deepEqual(fs.readdirSync(cwd), []);
  const bad = spawnSync(process.execPath, [cli, 'eval', '--data', dir, '--sweep', '--budgets', '16,150%'], { encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /--budgets must list knee, counts >= 1 or percentages in \(0%, 100%\), got "150%"/);
});
