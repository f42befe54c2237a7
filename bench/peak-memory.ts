/**
 * Peak memory of loading a checkpoint in one weight format and answering one question, in a
 * process of its own (so one format's garbage does not count against another), against the
 * size the weights take in memory in that format. Prints one JSON line.
 *
 *   node dist/bench/peak-memory.js --model bench/models/llava-1.5-7b-shape --weights int4
 */
import fs from 'node:fs';
import os from 'node:os';
import { Command } from 'commander';
import type { WeightFormat } from '../src/graph/ops.js';
import { Checkpoint } from '../src/io/checkpoint.js';
import { loadLlavaConfig } from '../src/io/config.js';
import { VisionLanguageModel } from '../src/pipeline/vision-language-model.js';

const program = new Command()
  .option('--model <dir>', 'checkpoint folder', 'bench/models/llava-qwen-0.5b-shape')
  .option('--weights <format>', 'fp32, int8 or int4', 'int8')
  .option('--image <file>', 'image', 'test/fixtures/photos/chelsea.png')
  .option('--new-tokens <n>', 'tokens to decode', (v) => Number(v), 8)
  .option('--decode-kernel <kernel>', 'native or ort (default: native where built)')
  .option('--policy <name>', 'sparsity policy of the question (corematching: core-neuron FFNs made for it)', 'dense')
  .option('--threads <n>', 'ONNX Runtime threads', (v) => Number(v), os.availableParallelism())
  .parse();
const o = program.opts<{ model: string; weights: WeightFormat; image: string; newTokens: number; threads: number; decodeKernel?: 'native' | 'ort'; policy: 'dense' | 'corematching' }>();

/**
 * Bytes the weights take in memory as the engine holds them in `format`: linear weights
 * quantized (int4: the decoder's and LM head's; int8 for the rest), embeddings int8 rows in the
 * quantized formats, everything else fp32. A tied LM head counts twice in the quantized formats
 * (the embedding rows and the head are separate copies).
 */
function weightBytes(dir: string, format: WeightFormat): number {
  const config = loadLlavaConfig(dir);
  const checkpoint = Checkpoint.open(config.dir);
  let bytes = 0;
  try {
    for (const name of checkpoint.names()) {
      const shape = checkpoint.shape(name);
      const count = shape.reduce((a, b) => a * b, 1);
      const decoder = name.includes('language_model') || name.startsWith('lm_head');
      const linear = shape.length === 2 && !name.includes('embed') && !name.includes('position');
      if (format === 'fp32') bytes += 4 * count;
      else if (name.includes('embed_tokens')) bytes += count * (config.text.tieWordEmbeddings ? 2 : 1);
      else if (linear) bytes += count * (format === 'int4' && decoder ? 0.625 : 1);
      else bytes += 4 * count;
    }
  } finally {
    checkpoint.close();
  }
  return bytes;
}

/**
 * This process's peak RSS in bytes. On Linux, VmHWM: the peak of this program's own memory map.
 * ru_maxrss (resourceUsage().maxRSS) would also count the process that spawned this one, whose
 * peak Linux carries across exec: run from `npm run bench` with a model loaded, it reported the
 * bench's RSS (2.7 GiB) for an int8 run that peaked at 2.0.
 */
function peakRssBytes(): number {
  const status = fs.existsSync('/proc/self/status') ? fs.readFileSync('/proc/self/status', 'utf8') : '';
  const hwm = /^VmHWM:\s+(\d+) kB$/m.exec(status);
  return hwm === null ? process.resourceUsage().maxRSS * 1024 : Number(hwm[1]) * 1024;
}

const t0 = performance.now();
// No converted-weight cache: the peak of a load that converts, as a first load is.
const vlm = await VisionLanguageModel.load(o.model, { threads: o.threads, weights: o.weights, cacheDir: false, ...(o.decodeKernel ? { decodeKernel: o.decodeKernel } : {}) });
const loadS = (performance.now() - t0) / 1000;
const afterLoadGiB = process.memoryUsage().rss / 2 ** 30;
const result = await vlm.generate({ image: o.image, prompt: 'Describe this picture.', maxNewTokens: o.newTokens, ignoreEos: true, policy: o.policy });
await vlm.release();
const peakGiB = peakRssBytes() / 2 ** 30;
const weightsGiB = weightBytes(o.model, o.weights) / 2 ** 30;
console.log(
  JSON.stringify({
    model: o.model,
    weights: o.weights,
    decodeKernel: vlm.model.decoder.decodeKernel,
    policy: o.policy,
    loadS,
    afterLoadGiB,
    peakGiB,
    weightsGiB,
    peakOverWeights: peakGiB / weightsGiB,
    decodeTokensPerS: result.stats.decodeTokensPerSecond,
  }),
);
