/**
 * The benchmark: vision, prefill and decode of this engine, dense and under each sparsity policy,
 * beside PyTorch transformers (dense) on the same checkpoint, all in one run, reported as ratios.
 * Prints markdown tables and writes JSON.
 *
 *   npm run bench -- --model bench/models/llava-qwen-0.5b-shape
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { decodeImage, type RgbImage } from '../src/io/image.js';
import { decodeWeightBytes } from '../src/models/flops.js';
import type { PolicyName } from '../src/sparsity/create-policy.js';
import type { PolicyOptions } from '../src/sparsity/options.js';
import type { WeightFormat } from '../src/graph/ops.js';
import type { DecodeKernel } from '../src/models/native-decode.js';
import { VisionLanguageModel, WEIGHT_FORMATS, type GenerateResult } from '../src/pipeline/vision-language-model.js';
import { measureCeilings } from './ceilings.js';
import { benchLlamaCpp, benchLlamaCppImage, type LlamaCppImagePhases, type LlamaCppPhases } from './llama-cpp.js';

interface Case {
  label: string;
  policy: PolicyName;
  options: Partial<PolicyOptions>;
}

interface Measured {
  label: string;
  visionS: number;
  prefillS: number;
  firstTokenS: number;
  compactFfnS: number;
  decodeTokensPerS: number;
  /** vision + prefill + core-neuron gathering + all decoded tokens. */
  endToEndS: number;
  keptImageTokens: number;
  coreNeuronLayers: number;
  flops: GenerateResult['sparsity']['flops'];
  denseFlops: GenerateResult['sparsity']['denseFlops'];
  decodeWeightBytes: number;
}

const CASES: Case[] = [
  { label: 'dense', policy: 'dense', options: {} },
  { label: 'corematching-tokens (knee)', policy: 'corematching-tokens', options: {} },
  { label: 'corematching-neurons', policy: 'corematching-neurons', options: {} },
  { label: 'corematching (knee)', policy: 'corematching', options: {} },
  { label: 'corematching (64)', policy: 'corematching', options: { budget: 64 } },
  { label: 'fastv (64)', policy: 'fastv', options: { budget: 64 } },
];

/** Bytes a decode step reads per weight: int4 packs two a byte plus an fp32 scale per 32. */
const BYTES_PER_WEIGHT: Record<WeightFormat, number> = { fp32: 4, int8: 1, int4: 0.5 + 4 / 32 };

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function measure(vlm: VisionLanguageModel, format: WeightFormat, image: RgbImage, prompt: string, c: Case, newTokens: number, repeats: number): Promise<Measured> {
  const run = () => vlm.generate({ image, prompt, maxNewTokens: newTokens, ignoreEos: true, policy: c.policy, policyOptions: c.options });
  await vlm.generate({ image, prompt, maxNewTokens: 2, ignoreEos: true, policy: c.policy, policyOptions: c.options }); // warm-up
  const runs: GenerateResult[] = [];
  for (let i = 0; i < repeats; i++) runs.push(await run());
  const s = (f: (r: GenerateResult) => number) => median(runs.map(f));
  const last = runs[runs.length - 1]!;
  const widths = Array.from({ length: vlm.config.text.numHiddenLayers }, (_, l) => last.sparsity.coreNeurons[l] ?? vlm.config.text.intermediateSize);
  return {
    label: c.label,
    visionS: s((r) => r.stats.visionMs) / 1000,
    prefillS: s((r) => r.stats.prefillMs) / 1000,
    firstTokenS: s((r) => r.stats.firstTokenMs) / 1000,
    compactFfnS: s((r) => r.stats.compactFfnMs) / 1000,
    decodeTokensPerS: s((r) => r.stats.decodeTokensPerSecond),
    endToEndS: s((r) => r.stats.visionMs + r.stats.prefillMs + r.stats.compactFfnMs + r.stats.decodeMs) / 1000,
    keptImageTokens: last.sparsity.keptImageTokens.length,
    coreNeuronLayers: Object.keys(last.sparsity.coreNeurons).length,
    flops: last.sparsity.flops,
    denseFlops: last.sparsity.denseFlops,
    decodeWeightBytes: decodeWeightBytes(vlm.config.text, widths, BYTES_PER_WEIGHT[format]),
  };
}

interface PytorchPhases {
  visionS: number;
  visionPrefillS: number;
  decodeTokensPerS: number;
}

interface PeakMemory {
  loadS: number;
  peakGiB: number;
  weightsGiB: number;
  peakOverWeights: number;
}

/** Peak RSS of loading `format` and answering one question, in a process of its own (peak-memory.ts). */
function peakMemory(model: string, format: WeightFormat, threads: number, decodeKernel?: DecodeKernel): PeakMemory {
  const args = [path.join('dist', 'bench', 'peak-memory.js'), '--model', model, '--weights', format, '--threads', String(threads), ...(decodeKernel ? ['--decode-kernel', decodeKernel] : [])];
  const run = spawnSync(process.execPath, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (run.status !== 0) throw new Error(`peak-memory failed (node ${args.join(' ')})`);
  return JSON.parse(run.stdout.trim().split('\n').pop()!) as PeakMemory;
}

function benchPytorch(model: string, image: string, prompt: string, newTokens: number, repeats: number, threads: number): PytorchPhases {
  const out = path.join(os.tmpdir(), `corematching-pytorch-${process.pid}.json`);
  // This machine's shell sets OPENBLAS_CORETYPE, which halves PyTorch's CPU speed: unset it for
  // this command only, as machine-facts.md prescribes.
  const env = { ...process.env };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  const args = ['bench/pytorch_bench.py', '--model', model, '--image', image, '--prompt', prompt, '--new-tokens', String(newTokens), '--repeats', String(repeats), '--threads', String(threads), '--json', out];
  const run = spawnSync('python3', args, { env, stdio: ['ignore', 'inherit', 'inherit'] });
  if (run.status !== 0) throw new Error(`PyTorch benchmark failed (python3 ${args.join(' ')})`);
  const r = JSON.parse(fs.readFileSync(out, 'utf8')) as { vision_s: number; vision_prefill_s: number; decode_tok_s: number };
  return { visionS: r.vision_s, visionPrefillS: r.vision_prefill_s, decodeTokensPerS: r.decode_tok_s };
}

const program = new Command()
  .option('--model <dir>', 'checkpoint folder', 'bench/models/llava-qwen-0.5b-shape')
  .option('--image <file>', 'image', 'test/fixtures/photos/chelsea.png')
  .option('--prompt <text>', 'question (~40 text tokens with the chat template)', 'Describe this picture in detail: what animal is it, what colour is its fur, where is it looking, and what is in the background behind it?')
  .option('--new-tokens <n>', 'decoded tokens per run', (v) => Number(v), 32)
  .option('--repeats <n>', 'timed runs per case (medians are reported)', (v) => Number(v), 3)
  .option('--threads <n>', 'threads for every engine', (v) => Number(v), os.availableParallelism())
  .option('--weights <list>', `weight formats of this engine, comma-separated (${WEIGHT_FORMATS.join(', ')}); int8:ort or int4:ort decodes on ONNX Runtime instead of the native kernels`, WEIGHT_FORMATS.join(','))
  .option('--dense-only', 'only the dense case of each format')
  .option('--cases <list>', `only these cases, comma-separated labels (${CASES.map((c) => c.label).join('; ')})`)
  .option('--no-pytorch', 'skip the PyTorch comparison')
  .option('--llama-cpp <dir>', 'GGUF files of the decoder (bench/make_llama_cpp_models.py); default: <model>-gguf when it exists')
  .option('--no-llama-cpp', 'skip the llama.cpp comparison')
  .option('--out <file>', 'JSON output', 'bench/results/bench.json')
  .parse();
const o = program.opts<{
  model: string;
  image: string;
  prompt: string;
  newTokens: number;
  repeats: number;
  threads: number;
  weights: string;
  denseOnly?: boolean;
  cases?: string;
  pytorch: boolean;
  /** A folder, false for --no-llama-cpp, undefined for the default folder. */
  llamaCpp?: string | boolean;
  out: string;
}>();
/** Each run of this engine: a key for its rows (e.g. int8, int8:ort), its format and what decodes. */
const formats = o.weights.split(',');
const formatOf = (key: string) => key.split(':')[0] as WeightFormat;
const kernelOf = (key: string): DecodeKernel | undefined => (key.endsWith(':ort') ? 'ort' : undefined);
const cases = o.denseOnly ? CASES.slice(0, 1) : o.cases === undefined ? CASES : CASES.filter((c) => o.cases!.split(',').includes(c.label));
if (cases[0]?.label !== 'dense') throw new Error('--cases must include dense (every ratio is taken against it)');
const ggufDir = o.llamaCpp === false ? null : typeof o.llamaCpp === 'string' ? o.llamaCpp : `${o.model.replace(/\/$/, '')}-gguf`;
/** The llama.cpp file compared with each of this engine's formats (same bit width). */
const GGUF_OF: Record<WeightFormat, string> = { fp32: 'f32', int8: 'q8_0', int4: 'q4_0' };
const GGUF_KINDS = ['f32', 'q8_0', 'q4_0'];

const ceilings = await measureCeilings(o.threads);
const image = await decodeImage(o.image);
const results: Record<string, Measured[]> = {};
const llamaCpp: Record<string, LlamaCppPhases> = {};
const memory: Record<string, PeakMemory> = {};
const llamaCppImage: Record<string, LlamaCppImagePhases> = {};
const mmproj = ggufDir === null ? null : path.join(ggufDir, 'mmproj-f16.gguf');
/** llama-mtmd-cli's chat template closest to the checkpoint's (the GGUF carries none). */
const chatTemplate = (model: string) => (JSON.parse(fs.readFileSync(path.join(model, 'config.json'), 'utf8')).text_config?.model_type === 'qwen2' ? 'chatml' : 'vicuna');

/** llama.cpp on GGUF kind `kind`: llama-bench's prefill and decode, and with the mmproj a whole answer. */
function benchPeer(kind: string): void {
  const file = ggufDir === null ? null : path.join(ggufDir, `text-${kind}.gguf`);
  if (file === null || !fs.existsSync(file) || llamaCpp[kind] !== undefined) return;
  llamaCpp[kind] = benchLlamaCpp(file, promptTokens, o.newTokens, o.repeats, o.threads);
  if (mmproj !== null && fs.existsSync(mmproj)) {
    llamaCppImage[kind] = benchLlamaCppImage(file, mmproj, o.image, o.prompt, chatTemplate(o.model), o.newTokens, o.repeats, o.threads);
  }
}
let promptTokens = 0;
for (const key of formats) {
  const format = formatOf(key);
  const decodeKernel = kernelOf(key);
  const vlm = await VisionLanguageModel.load(o.model, { threads: o.threads, weights: format, ...(decodeKernel ? { decodeKernel } : {}) });
  results[key] = [];
  for (const c of cases) {
    results[key].push(await measure(vlm, format, image, o.prompt, c, o.newTokens, o.repeats));
    process.stderr.write(`measured ${key} ${c.label} (decode: ${vlm.model.decoder.decodeKernel})\n`);
  }
  promptTokens = (await vlm.generate({ image, prompt: o.prompt, maxNewTokens: 1 })).promptTokens.length;
  await vlm.release();
  memory[key] = peakMemory(o.model, format, o.threads, decodeKernel);
  // llama.cpp at the same bit width right after, so both see the machine in the same state.
  benchPeer(GGUF_OF[format]);
}
for (const kind of GGUF_KINDS) benchPeer(kind);
const pytorch = o.pytorch ? benchPytorch(o.model, o.image, o.prompt, o.newTokens, o.repeats, o.threads) : undefined;

const f2 = (x: number) => x.toFixed(2);
const ratio = (x: number) => `${x.toFixed(2)}x`;
const first = results[formats[0]!]![0]!;
console.log(`\n${path.basename(o.model)}: ${promptTokens} prompt tokens (${first.keptImageTokens} image), ${o.newTokens} new tokens, ${o.threads} threads, medians of ${o.repeats} runs\n`);

const fp32 = results.fp32?.[0];
if (pytorch && fp32) {
  const prefillPt = pytorch.visionPrefillS - pytorch.visionS;
  console.log('| dense fp32 | corematching | PyTorch transformers | speedup |\n|---|---|---|---|');
  console.log(`| vision (s) | ${f2(fp32.visionS)} | ${f2(pytorch.visionS)} | ${ratio(pytorch.visionS / fp32.visionS)} |`);
  console.log(`| prefill (s) | ${f2(fp32.prefillS)} | ${f2(prefillPt)} | ${ratio(prefillPt / fp32.prefillS)} |`);
  console.log(`| vision + prefill (s) | ${f2(fp32.visionS + fp32.prefillS)} | ${f2(pytorch.visionPrefillS)} | ${ratio(pytorch.visionPrefillS / (fp32.visionS + fp32.prefillS))} |`);
  console.log(`| decode (tokens/s) | ${fp32.decodeTokensPerS.toFixed(1)} | ${pytorch.decodeTokensPerS.toFixed(1)} | ${ratio(fp32.decodeTokensPerS / pytorch.decodeTokensPerS)} |\n`);
}

const share = (r: Measured) => ({
  visionGflops: r.flops.vision / r.visionS / 1e9,
  prefillGflops: r.flops.prefill / r.prefillS / 1e9,
  decodeGBs: (r.decodeWeightBytes * r.decodeTokensPerS) / 1e9,
});
console.log(`machine ceilings measured in this run: fp32 GEMM ${ceilings.gemmGflops.toFixed(0)} GFLOP/s (${ceilings.smallGemmGflops.toFixed(0)} with 104 rows), fp32 weight streaming ${ceilings.bandwidthGBs.toFixed(1)} GB/s`);
for (const format of formats) {
  const s = share(results[format]![0]!);
  console.log(`dense ${format}: vision ${s.visionGflops.toFixed(0)} GFLOP/s, prefill ${s.prefillGflops.toFixed(0)} GFLOP/s, decode ${s.decodeGBs.toFixed(1)} GB/s of weights`);
}

if (Object.keys(llamaCpp).length > 0) {
  console.log(`\nThis engine beside llama.cpp (decoder only: llama.cpp's numbers are prefill of ${promptTokens} tokens and decode of ${o.newTokens} tokens after them, from llama-bench; its vision tower is not converted)\n`);
  console.log('| engine | weights | policy | prefill s | decode tok/s | prefill + decode s | prefill vs llama.cpp | decode vs llama.cpp |\n|---|---|---|---|---|---|---|---|');
  for (const format of formats) {
    const peer = llamaCpp[GGUF_OF[formatOf(format)]];
    for (const r of results[format]!.filter((m) => m.label === 'dense' || m.label.startsWith('corematching ('))) {
      const total = r.prefillS + o.newTokens / r.decodeTokensPerS;
      const vs = peer ? `${ratio(peer.prefillS / r.prefillS)} | ${ratio(r.decodeTokensPerS / peer.decodeTokensPerS)}` : '- | -';
      console.log(`| corematching | ${format} | ${r.label} | ${f2(r.prefillS)} | ${r.decodeTokensPerS.toFixed(1)} | ${f2(total)} | ${vs} |`);
    }
  }
  for (const [kind, r] of Object.entries(llamaCpp)) {
    console.log(`| llama.cpp | ${kind} | dense | ${f2(r.prefillS)} | ${r.decodeTokensPerS.toFixed(1)} | ${f2(r.prefillS + o.newTokens / r.decodeTokensPerS)} | | |`);
  }
}

if (Object.keys(llamaCppImage).length > 0) {
  const fastest = Math.min(...Object.values(llamaCppImage).map((r) => r.endToEndS));
  // Every kind encodes the image with the same f16 mmproj: its vision time is their median.
  const peerVision = median(Object.values(llamaCppImage).map((r) => r.visionS));
  console.log(`\nA whole answer (vision + prefill + ${o.newTokens} tokens) beside llama.cpp's llama-mtmd-cli (its image encoder from the f16 mmproj; fastest dense llama.cpp: ${f2(fastest)} s)\n`);
  console.log('| engine | weights | policy | vision s | vision + prefill + tokens s | vision vs llama.cpp | whole answer vs llama.cpp\'s fastest |\n|---|---|---|---|---|---|---|');
  for (const format of formats) {
    for (const r of results[format]!) {
      console.log(`| corematching | ${format} | ${r.label} | ${f2(r.visionS)} | ${f2(r.endToEndS)} | ${ratio(peerVision / r.visionS)} | ${ratio(fastest / r.endToEndS)} |`);
    }
  }
  for (const [kind, r] of Object.entries(llamaCppImage)) console.log(`| llama.cpp | ${kind} (mmproj f16) | dense | ${f2(r.visionS)} | ${f2(r.endToEndS)} | | |`);
}

console.log('\nPeak memory: this engine loading each format and answering one question, in a process of its own; llama.cpp (decoder only) during llama-bench\n');
console.log('| engine | weights | weights in memory GiB | peak RSS GiB | peak / weights | load s |\n|---|---|---|---|---|---|');
for (const format of formats) {
  const m = memory[format]!;
  console.log(`| corematching | ${format} | ${f2(m.weightsGiB)} | ${f2(m.peakGiB)} | ${ratio(m.peakOverWeights)} | ${m.loadS.toFixed(1)} |`);
}
for (const [kind, r] of Object.entries(llamaCpp)) {
  const file = path.join(ggufDir!, `text-${kind}.gguf`);
  const gib = fs.statSync(file).size / 2 ** 30;
  console.log(`| llama.cpp | ${kind} | ${f2(gib)} | ${f2(r.peakGiB)} | ${ratio(r.peakGiB / gib)} | |`);
}

for (const format of formats) {
  const rows = results[format]!;
  if (rows.length < 2) continue;
  const dense = rows[0]!;
  console.log(`\n${format} weights\n`);
  console.log(`| policy | kept image tokens | vision s | prefill s | first token s | core-neuron gather s | decode tok/s | prefill GFLOP | prefill speedup (ideal) | decode speedup (ideal) | vision+prefill+${o.newTokens} tokens s |`);
  console.log('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const prefillIdeal = dense.flops.prefill / r.flops.prefill;
    const decodeIdeal = dense.decodeWeightBytes / r.decodeWeightBytes;
    console.log(
      `| ${r.label} | ${r.keptImageTokens} | ${f2(r.visionS)} | ${f2(r.prefillS)} | ${f2(r.firstTokenS)} | ${f2(r.compactFfnS)} | ${r.decodeTokensPerS.toFixed(1)} | ${(r.flops.prefill / 1e9).toFixed(0)} | ` +
        `${ratio(dense.prefillS / r.prefillS)} (${ratio(prefillIdeal)}) | ${ratio(r.decodeTokensPerS / dense.decodeTokensPerS)} (${ratio(decodeIdeal)}) | ${f2(r.endToEndS)} |`,
    );
  }
}

fs.mkdirSync(path.dirname(o.out), { recursive: true });
const shares = Object.fromEntries(formats.map((f) => [f, share(results[f]![0]!)]));
fs.writeFileSync(o.out, `${JSON.stringify({ model: o.model, date: new Date().toISOString(), options: o, promptTokens, ceilings, shares, results, memory, llamaCpp, llamaCppImage, pytorch }, null, 2)}\n`);
console.log(`\nwrote ${o.out}`);
