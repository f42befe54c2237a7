/**
 * Dense benchmark: vision, prefill and decode of this engine beside PyTorch transformers on the
 * same checkpoint, in one run, as ratios. Prints a table and writes JSON.
 *
 *   npm run bench -- --model bench/models/llava-qwen-0.5b-shape
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { decodeImage } from '../src/io/image.js';
import { decodeWeightBytes, prefillFlops, visionFlops } from '../src/models/flops.js';
import { VisionLanguageModel } from '../src/pipeline/vision-language-model.js';
import { measureCeilings } from './ceilings.js';

interface Phases {
  visionS: number;
  prefillS: number;
  visionPrefillS: number;
  decodeTokensPerS: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function benchEngine(vlm: VisionLanguageModel, image: string, prompt: string, newTokens: number, repeats: number): Promise<Phases & { promptTokens: number }> {
  const rgb = await decodeImage(image);
  await vlm.generate({ image: rgb, prompt, maxNewTokens: 2, ignoreEos: true }); // warm-up: sessions, caches
  const runs = [];
  for (let i = 0; i < repeats; i++) runs.push(await vlm.generate({ image: rgb, prompt, maxNewTokens: newTokens, ignoreEos: true }));
  const visionS = median(runs.map((r) => r.stats.visionMs)) / 1000;
  const prefillS = median(runs.map((r) => r.stats.prefillMs)) / 1000;
  return {
    visionS,
    prefillS,
    visionPrefillS: median(runs.map((r) => r.stats.visionMs + r.stats.prefillMs)) / 1000,
    decodeTokensPerS: median(runs.map((r) => r.stats.decodeTokensPerSecond)),
    promptTokens: runs[0]!.promptTokens.length,
  };
}

function benchPytorch(model: string, image: string, prompt: string, newTokens: number, repeats: number, threads: number): Phases {
  const out = path.join(os.tmpdir(), `corematching-pytorch-${process.pid}.json`);
  // This machine's shell sets OPENBLAS_CORETYPE, which halves PyTorch's CPU speed: unset it for
  // this command only, as machine-facts.md prescribes.
  const env = { ...process.env };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  const args = ['bench/pytorch_bench.py', '--model', model, '--image', image, '--prompt', prompt, '--new-tokens', String(newTokens), '--repeats', String(repeats), '--threads', String(threads), '--json', out];
  const run = spawnSync('python3', args, { env, stdio: ['ignore', 'inherit', 'inherit'] });
  if (run.status !== 0) throw new Error(`PyTorch benchmark failed (python3 ${args.join(' ')})`);
  const r = JSON.parse(fs.readFileSync(out, 'utf8')) as { vision_s: number; vision_prefill_s: number; decode_tokens_per_s: number };
  return { visionS: r.vision_s, prefillS: r.vision_prefill_s - r.vision_s, visionPrefillS: r.vision_prefill_s, decodeTokensPerS: r.decode_tokens_per_s };
}

const program = new Command()
  .option('--model <dir>', 'checkpoint folder', 'bench/models/llava-qwen-0.5b-shape')
  .option('--image <file>', 'image', 'test/fixtures/photos/chelsea.png')
  .option('--prompt <text>', 'question', 'Describe this picture in detail: what animal is it, what colour is its fur, where is it looking, and what is behind it?')
  .option('--new-tokens <n>', 'decoded tokens per run', (v) => Number(v), 32)
  .option('--repeats <n>', 'timed runs (medians are reported)', (v) => Number(v), 3)
  .option('--threads <n>', 'threads for both engines', (v) => Number(v), os.availableParallelism())
  .option('--no-pytorch', 'skip the PyTorch comparison')
  .option('--out <file>', 'JSON output', 'bench/results/dense.json')
  .parse();
const o = program.opts<{ model: string; image: string; prompt: string; newTokens: number; repeats: number; threads: number; pytorch: boolean; out: string }>();

const ceilings = await measureCeilings(o.threads);
const vlm = await VisionLanguageModel.load(o.model, { threads: o.threads });
const engine = await benchEngine(vlm, o.image, o.prompt, o.newTokens, o.repeats);
await vlm.release();
const pytorch = o.pytorch ? benchPytorch(o.model, o.image, o.prompt, o.newTokens, o.repeats, o.threads) : undefined;

const c = vlm.config;
const flops = { vision: visionFlops(c), prefill: prefillFlops(c.text, Array(c.text.numHiddenLayers).fill(engine.promptTokens)) };
const weightBytes = decodeWeightBytes(c.text);
const share = {
  visionGflops: flops.vision / engine.visionS / 1e9,
  prefillGflops: flops.prefill / engine.prefillS / 1e9,
  decodeGBs: (weightBytes * engine.decodeTokensPerS) / 1e9,
};

const rows: [string, string, string, string][] = [
  ['vision (s)', engine.visionS.toFixed(2), pytorch?.visionS.toFixed(2) ?? '-', pytorch ? `${(pytorch.visionS / engine.visionS).toFixed(2)}x` : '-'],
  ['prefill (s)', engine.prefillS.toFixed(2), pytorch?.prefillS.toFixed(2) ?? '-', pytorch ? `${(pytorch.prefillS / engine.prefillS).toFixed(2)}x` : '-'],
  ['vision + prefill (s)', engine.visionPrefillS.toFixed(2), pytorch?.visionPrefillS.toFixed(2) ?? '-', pytorch ? `${(pytorch.visionPrefillS / engine.visionPrefillS).toFixed(2)}x` : '-'],
  ['decode (tokens/s)', engine.decodeTokensPerS.toFixed(1), pytorch?.decodeTokensPerS.toFixed(1) ?? '-', pytorch ? `${(engine.decodeTokensPerS / pytorch.decodeTokensPerS).toFixed(2)}x` : '-'],
];
console.log(`\n${path.basename(o.model)}: ${engine.promptTokens} prompt tokens, ${o.newTokens} new tokens, ${o.threads} threads, medians of ${o.repeats}\n`);
console.log('| phase | corematching | PyTorch | speedup |\n|---|---|---|---|');
for (const r of rows) console.log(`| ${r.join(' | ')} |`);
console.log(
  `\nmachine ceilings measured now: fp32 GEMM ${ceilings.gemmGflops.toFixed(0)} GFLOP/s, weight streaming ${ceilings.bandwidthGBs.toFixed(1)} GB/s\n` +
    `vision ${share.visionGflops.toFixed(0)} GFLOP/s (${((100 * share.visionGflops) / ceilings.gemmGflops).toFixed(0)}% of GEMM), ` +
    `prefill ${share.prefillGflops.toFixed(0)} GFLOP/s (${((100 * share.prefillGflops) / ceilings.gemmGflops).toFixed(0)}%), ` +
    `decode ${share.decodeGBs.toFixed(1)} GB/s of weights (${((100 * share.decodeGBs) / ceilings.bandwidthGBs).toFixed(0)}% of bandwidth)`,
);
fs.mkdirSync(path.dirname(o.out), { recursive: true });
fs.writeFileSync(o.out, `${JSON.stringify({ model: o.model, date: new Date().toISOString(), options: o, ceilings, flops, weightBytes, engine, pytorch, share }, null, 2)}\n`);
console.log(`\nwrote ${o.out}`);
