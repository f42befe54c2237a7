/**
 * Decode speed against context depth: prefill `depth` text tokens through the decoder, then time
 * `steps` decode steps, for each depth in turn (rounds alternate the depths, medians reported).
 * Shows what a step costs beyond its weights: attention over, and bookkeeping of, the KV cache.
 *
 *   npm run bench:depth -- --model bench/models/llava-qwen-0.5b-shape --depths 64,2048 --weights int8
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import type { WeightFormat } from '../src/graph/ops.js';
import { VisionLanguageModel } from '../src/pipeline/vision-language-model.js';

const program = new Command()
  .option('--model <dir>', 'checkpoint folder', 'bench/models/llava-qwen-0.5b-shape')
  .option('--depths <list>', 'context depths, comma-separated', '64,2048')
  .option('--steps <n>', 'decode steps timed per run', (v) => Number(v), 32)
  .option('--rounds <n>', 'rounds over every depth (medians are reported)', (v) => Number(v), 3)
  .option('--weights <format>', 'weight format: fp32, int8 or int4', 'fp32')
  .option('--threads <n>', 'ONNX Runtime threads', (v) => Number(v), os.availableParallelism())
  .option('--out <file>', 'JSON output', 'bench/results/decode-depth.json')
  .parse();
const o = program.opts<{ model: string; depths: string; steps: number; rounds: number; weights: string; threads: number; out: string }>();
const depths = o.depths.split(',').map(Number);

const vlm = await VisionLanguageModel.load(o.model, { threads: o.threads, weights: o.weights as WeightFormat });
const decoder = vlm.model.decoder;
const vocab = decoder.config.vocabSize;

/** Decode tokens/s after a prefill of `depth` tokens (ids spread over the vocabulary). */
async function decodeSpeed(depth: number): Promise<number> {
  const ids = Array.from({ length: depth }, (_, i) => (i * 7919 + 11) % vocab);
  const cache = decoder.newCache(depth + o.steps);
  await decoder.forward(decoder.embed(ids), ids.map((_, i) => i), cache);
  const t0 = performance.now();
  for (let s = 0; s < o.steps; s++) await decoder.step((s * 104729) % vocab, depth + s, cache);
  return (o.steps * 1000) / (performance.now() - t0);
}

const speeds = new Map<number, number[]>(depths.map((d) => [d, []]));
for (let round = 0; round < o.rounds; round++) {
  for (const depth of depths) speeds.get(depth)!.push(await decodeSpeed(depth));
}
await vlm.release();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const rows = depths.map((depth) => ({ depth, tokensPerSecond: median(speeds.get(depth)!), runs: speeds.get(depth)! }));
console.log(`\n${path.basename(o.model)}: ${o.weights} decode after a prefill of each depth, ${o.steps} steps, ${o.threads} threads, medians of ${o.rounds} rounds\n`);
console.log('| context depth | decode tokens/s |\n|---|---|');
for (const r of rows) console.log(`| ${r.depth} | ${r.tokensPerSecond.toFixed(2)} |`);
fs.mkdirSync(path.dirname(o.out), { recursive: true });
fs.writeFileSync(o.out, `${JSON.stringify({ model: o.model, date: new Date().toISOString(), options: o, rows }, null, 2)}\n`);
console.log(`\nwrote ${o.out}`);
