#!/usr/bin/env node
// Do a policy's kept image tokens follow the question? (dev-time; needs `npm run build`)
//
//   python scripts/question_targets.py --data /tmp/small-vlm-scenes/test --out /tmp/targets.jsonl
//   node scripts/token-focus.mjs --targets /tmp/targets.jsonl [--model DIR] [--limit N] [--token-layer L]
//
// For each single-object question (color, shape, side) and each policy: the share of the named
// object's patches that are kept (recall), and how many of the kept tokens lie on the named object
// and on any object. Prints a markdown table.
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { VisionLanguageModel } from '../dist/src/index.js';

const { values: o } = parseArgs({
  options: {
    targets: { type: 'string' },
    model: { type: 'string', default: new URL('../models/default', import.meta.url).pathname },
    limit: { type: 'string', default: '150' },
    'token-layer': { type: 'string', default: '2' },
  },
});
if (!o.targets) throw new Error('--targets FILE is required (see scripts/question_targets.py)');
const rows = fs.readFileSync(o.targets, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).slice(0, Number(o.limit));
const tokenLayer = Number(o['token-layer']);
const runs = [
  ['corematching', 'knee'],
  ['corematching', 16],
  ['fastv', 16],
  ['projection', 16],
  ['random', 16],
];
const vlm = await VisionLanguageModel.load(o.model, { threads: 2 });
const lines = [
  `${rows.length} single-object questions (color, shape, side), token layer ${tokenLayer}, ${new Date().toISOString().slice(0, 10)}`,
  '',
  '| policy | budget | kept | accuracy % | named object kept % | kept on named object % | kept on any object % |',
  '|---|---|---|---|---|---|---|',
];
for (const [policy, budget] of runs) {
  let kept = 0, right = 0, recall = 0, onNamed = 0, onAny = 0;
  for (const r of rows) {
    const out = await vlm.generate({ image: r.image, prompt: r.question, maxNewTokens: 4, policy, policyOptions: { budget, tokenLayer } });
    const keep = out.sparsity.keptImageTokens;
    const target = new Set(r.target);
    const objects = new Set(r.objects.flat());
    kept += keep.length;
    right += Number(out.text.trim() === r.answer);
    recall += keep.filter((t) => target.has(t)).length / Math.max(1, target.size);
    onNamed += keep.filter((t) => target.has(t)).length / keep.length;
    onAny += keep.filter((t) => objects.has(t)).length / keep.length;
  }
  const n = rows.length;
  const pct = (x) => (100 * x / n).toFixed(1);
  lines.push(`| ${policy} | ${budget} | ${(kept / n).toFixed(1)} | ${pct(right)} | ${pct(recall)} | ${pct(onNamed)} | ${pct(onAny)} |`);
}
await vlm.release();
process.stdout.write(`${lines.join('\n')}\n`);
