/** `corematching analyze`: figures checked against a direct computation, and the command's outputs. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { keptShare, spearman, targetPatches } from '../src/analysis/criteria.js';
import { analyzeOrthogonality, identityFit } from '../src/analysis/orthogonality.js';
import { Checkpoint } from '../src/io/checkpoint.js';
import { loadLlavaConfig } from '../src/io/config.js';
import { detectLayout } from '../src/models/weights.js';
import { fixturePath, tempDir } from './helpers.js';

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** sum(diag^2) / sum(M^2) and trace / n of M = A^T B (A, B [k, n]) by plain loops, in float64. */
function directFit(a: Float32Array, b: Float32Array, k: number, n: number) {
  let all = 0;
  let diagonal = 0;
  let trace = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let m = 0;
      for (let r = 0; r < k; r++) m += a[r * n + i]! * b[r * n + j]!;
      all += m * m;
      if (i === j) {
        diagonal += m * m;
        trace += m;
      }
    }
  }
  return { diagonalShare: diagonal / all, scale: trace / n };
}

function transpose(m: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(m.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = m[r * cols + c]!;
  return out;
}

test('orthogonality figures equal a direct computation (GQA keys paired with their query heads)', async () => {
  for (const name of ['clip-llama', 'siglip-qwen2']) {
    const dir = fixturePath('models', name);
    const c = loadLlavaConfig(dir).text;
    const checkpoint = Checkpoint.open(dir);
    const report = await analyzeOrthogonality(checkpoint, c, { threads: 1 });
    const p = detectLayout(checkpoint).language;
    const { hiddenSize: h, numAttentionHeads: nh, numKeyValueHeads: kvh, headDim: hd, intermediateSize: ffn } = c;
    for (const l of report.layers) {
      const wq = checkpoint.read(`${p}layers.${l.layer}.self_attn.q_proj.weight`);
      const wk = checkpoint.read(`${p}layers.${l.layer}.self_attn.k_proj.weight`);
      // Query head q reads key head floor(q / (nh / kvh)): build the paired key rows by hand.
      const paired = new Float32Array(nh * hd * h);
      for (let row = 0; row < nh * hd; row++) {
        const keyRow = Math.floor(Math.floor(row / hd) / (nh / kvh)) * hd + (row % hd);
        paired.set(wk.subarray(keyRow * h, keyRow * h + h), row * h);
      }
      const wo = checkpoint.read(`${p}layers.${l.layer}.self_attn.o_proj.weight`);
      const wd = checkpoint.read(`${p}layers.${l.layer}.mlp.down_proj.weight`);
      const expected = {
        qk: directFit(wq, paired, nh * hd, h),
        o: directFit(transpose(wo, h, nh * hd), transpose(wo, h, nh * hd), nh * hd, h),
        down: directFit(transpose(wd, h, ffn), transpose(wd, h, ffn), ffn, h),
      };
      for (const key of ['qk', 'o', 'down'] as const) {
        assert.ok(Math.abs(l[key].diagonalShare - expected[key].diagonalShare) < 1e-4, `${name} layer ${l.layer} ${key} share`);
        assert.ok(Math.abs(l[key].scale - expected[key].scale) < 1e-4 * Math.max(1, Math.abs(expected[key].scale)), `${name} layer ${l.layer} ${key} scale`);
      }
    }
    checkpoint.close();
  }
  // The identity is all diagonal; a constant matrix is 1/n diagonal.
  assert.deepEqual(identityFit(new Float32Array([2, 0, 0, 2]), 2), { diagonalShare: 1, scale: 2 });
  assert.deepEqual(identityFit(new Float32Array(9).fill(1), 3), { diagonalShare: 1 / 3, scale: 1 });
});

test('analyze orthogonality prints JSON, writes pictures and a self-contained report', () => {
  const out = tempDir('cm-analyze-');
  const r = spawnSync(process.execPath, [cli, 'analyze', 'orthogonality', '--model', fixturePath('models', 'clip-llama'), '--json', '--layer', '1', '--out', path.join(out, 'orth'), '--report', path.join(out, 'orth.html')], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const json = JSON.parse(r.stdout) as { layers: { layer: number; qk: Record<string, number> }[] };
  assert.equal(json.layers.length, 3);
  assert.deepEqual(Object.keys(json.layers[0]!.qk).sort(), ['diagonalShare', 'randomDiagonalShare', 'scale']);
  for (const f of ['orth-layers.png', 'orth-heatmap.png']) assert.ok(fs.statSync(path.join(out, f)).size > 1000, f);
  const html = fs.readFileSync(path.join(out, 'orth.html'), 'utf8');
  assert.match(html, /<img alt="[^"]+" src="data:image\/png;base64,/);
  assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//);
  const bad = spawnSync(process.execPath, [cli, 'analyze', 'orthogonality', '--model', fixturePath('models', 'clip-llama'), '--layer', '3'], { encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /^error: --layer must be in 0 \.\. 2/);
});

test('ablate times four configurations per phase and draws them', () => {
  const out = tempDir('cm-ablate-');
  const r = spawnSync(process.execPath, [cli, 'ablate', '--model', fixturePath('models', 'clip-llama'), '--image', fixturePath('photos', 'chelsea.png'), '--prompt', 'What is this?', '--repeats', '1', '--tokens', '3', '--budget', '8', '--json', '--out', path.join(out, 'ablate')], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const json = JSON.parse(r.stdout) as { rows: { configuration: string; keptImageTokens: number; vision: number; decode: number; total: number }[] };
  assert.deepEqual(json.rows.map((x) => x.configuration), ['dense', 'tokens only', 'neurons only', 'both']);
  assert.deepEqual(json.rows.map((x) => x.keptImageTokens), [64, 8, 64, 8]);
  for (const row of json.rows) assert.ok(row.vision > 0 && row.decode > 0 && row.total >= row.vision + row.decode);
  assert.ok(fs.statSync(path.join(out, 'ablate.png')).size > 1000);
});

test('sweep-neurons reports neurons kept, accuracy and speed per beta', () => {
  const out = tempDir('cm-sweep-neurons-');
  const r = spawnSync(process.execPath, [cli, 'sweep-neurons', '--data', fixturePath('scenes'), '--betas', '0.2,1', '--json', '--out', path.join(out, 'neurons')], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const json = JSON.parse(r.stdout) as { rows: { beta: number | null; report: { meanDecodeFfnShare: number; accuracy: number } }[] };
  assert.deepEqual(json.rows.map((x) => x.beta), [null, 0.2, 1]);
  assert.equal(json.rows[0]!.report.meanDecodeFfnShare, 1);
  assert.ok(json.rows[1]!.report.meanDecodeFfnShare < json.rows[2]!.report.meanDecodeFfnShare);
  assert.ok(json.rows[2]!.report.meanDecodeFfnShare < 1);
  assert.match(fs.readFileSync(path.join(out, 'neurons.md'), 'utf8'), /\| 0\.2 \| \d+\.\d \|/);
  const bad = spawnSync(process.execPath, [cli, 'sweep-neurons', '--data', fixturePath('scenes'), '--betas', '0.2,1.5'], { encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /--betas must list numbers in \(0, 1\], got "1.5"/);
});

test('criteria helpers: Spearman with ties, target patches, kept share', () => {
  assert.equal(spearman([1, 2, 3, 4], [10, 20, 30, 40]), 1);
  assert.equal(spearman([1, 2, 3, 4], [4, 3, 2, 1]), -1);
  assert.equal(spearman([1, 1, 1], [1, 2, 3]), 0);
  // ranks with ties: [1.5, 1.5, 3] against [1, 2, 3]: Pearson = 0.866...
  assert.ok(Math.abs(spearman([5, 5, 7], [1, 2, 3]) - Math.sqrt(3) / 2) < 1e-12);
  // A 4 x 4 grid of 10-pixel patches; the box covers the centres (15, 15) .. (25, 25).
  assert.deepEqual(targetPatches([[12, 12, 28, 28]], 4, 10), [5, 6, 9, 10]);
  assert.equal(keptShare([5, 6, 0], [5, 6, 9, 10]), 0.5);
});

test('analyze criteria compares the criteria on a question set with targets', () => {
  const r = spawnSync(process.execPath, [cli, 'analyze', 'criteria', '--data', fixturePath('scenes'), '--budgets', '16,64', '--json'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const json = JSON.parse(r.stdout) as { questions: number; criteria: string[]; spearman: number[][]; targetKept: number[][] };
  assert.equal(json.questions, 4);
  assert.equal(json.criteria.length, 4);
  json.spearman.forEach((row, i) => assert.ok(Math.abs(row[i]! - 1) < 1e-12));
  for (const row of json.targetKept) {
    assert.equal(row.length, 2);
    assert.ok(row[0]! <= row[1]! && row[1]! <= 1, 'a larger budget keeps at least as much of the target');
  }
  const missing = spawnSync(process.execPath, [cli, 'analyze', 'criteria', '--data', fixturePath('models', 'clip-llama')], { encoding: 'utf8' });
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /questions\.jsonl: file not found/);
});
