/**
 * Fast reloads (README, Weight formats): wall time of loading a checkpoint in int8 and int4
 * without the converted-weight cache, with an empty cache (converting and writing it), and again
 * (reading it), each load in a fresh process, alternating, rounds times; medians and the ratio
 * of the second load to the first. Prints a table and writes JSON.
 *
 *   npm run bench:reload -- [--model DIR] [--rounds 3] [--out bench/results/reload.json]
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { VisionLanguageModel } from '../src/pipeline/vision-language-model.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'bench/models/llava-qwen-0.5b-shape' },
    rounds: { type: 'string', default: '3' },
    out: { type: 'string', default: 'bench/results/reload.json' },
    child: { type: 'string' },
    cache: { type: 'string' },
    weights: { type: 'string' },
  },
});

if (values.child !== undefined) {
  // One load in this process: prints its milliseconds.
  const t0 = performance.now();
  const vlm = await VisionLanguageModel.load(values.child, { weights: values.weights as 'int8' | 'int4', cacheDir: values.cache === '' ? false : values.cache! });
  process.stdout.write(`${(performance.now() - t0).toFixed(0)}\n`);
  await vlm.release();
  process.exit(0);
}

const self = fileURLToPath(import.meta.url);
const load = (weights: string, cache: string) =>
  Number(execFileSync(process.execPath, [self, '--child', values.model!, '--weights', weights, '--cache', cache], { encoding: 'utf8' }).trim());
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const results: Record<string, { uncachedMs: number[]; firstMs: number[]; secondMs: number[]; entryMB: number }> = {};
for (const weights of ['int8', 'int4']) {
  const r: (typeof results)[string] = { uncachedMs: [], firstMs: [], secondMs: [], entryMB: 0 };
  results[weights] = r;
  for (let round = 0; round < Number(values.rounds); round++) {
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'cm-reload-'));
    r.uncachedMs.push(load(weights, ''));
    r.firstMs.push(load(weights, cache));
    r.secondMs.push(load(weights, cache));
    const entry = path.join(cache, fs.readdirSync(cache)[0]!);
    r.entryMB = fs.readdirSync(entry).reduce((n, f) => n + fs.statSync(path.join(entry, f)).size, 0) / 1e6;
    fs.rmSync(cache, { recursive: true, force: true });
  }
}
const cpu = os.cpus()[0]?.model ?? 'unknown';
console.log(`\n${values.model}, ${cpu}, medians of ${values.rounds} rounds (each load a fresh process)\n`);
console.log('| weights | no cache s | first load (converts, writes) s | second load (reads) s | second / first | cache entry MB |\n|---|---|---|---|---|---|');
for (const [weights, r] of Object.entries(results)) {
  const [u, f, s] = [median(r.uncachedMs), median(r.firstMs), median(r.secondMs)];
  console.log(`| ${weights} | ${(u / 1000).toFixed(2)} | ${(f / 1000).toFixed(2)} | ${(s / 1000).toFixed(2)} | ${(s / f).toFixed(2)} | ${r.entryMB.toFixed(0)} |`);
}
fs.mkdirSync(path.dirname(values.out!), { recursive: true });
fs.writeFileSync(values.out!, `${JSON.stringify({ date: new Date().toISOString(), cpu, model: values.model, results }, null, 2)}\n`);
