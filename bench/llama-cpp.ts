/**
 * The llama.cpp side of the benchmark: llama-bench (built by bench/build_llama_cpp.sh) on a GGUF
 * of the bench checkpoint's decoder (bench/make_llama_cpp_models.py): prefill of the prompt's
 * length, and decode of the new tokens with the prompt's length already in context.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const LLAMA_BENCH = path.join('bench', 'vendor', 'llama.cpp', 'build', 'bin', 'llama-bench');
const LLAMA_MTMD = path.join('bench', 'vendor', 'llama.cpp', 'build', 'bin', 'llama-mtmd-cli');

export interface LlamaCppPhases {
  prefillS: number;
  decodeTokensPerS: number;
  /** Peak RSS of the decode run (GNU time's maximum resident set size). */
  peakGiB: number;
}

/** Tokens/s of one llama-bench test, and the run's peak RSS in GiB. */
function llamaBench(args: string[]): { tokensPerS: number; peakGiB: number } {
  const rssFile = path.join(os.tmpdir(), `corematching-llama-rss-${process.pid}.txt`);
  const run = spawnSync('/usr/bin/time', ['-f', '%M', '-o', rssFile, LLAMA_BENCH, ...args, '-o', 'json'], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (run.status !== 0) throw new Error(`llama-bench failed (${LLAMA_BENCH} ${args.join(' ')}): ${run.stderr.slice(-500)}`);
  const rows = JSON.parse(run.stdout) as { avg_ts: number }[];
  const peakKiB = Number(fs.readFileSync(rssFile, 'utf8').trim().split('\n').pop());
  fs.rmSync(rssFile, { force: true });
  return { tokensPerS: rows[0]!.avg_ts, peakGiB: peakKiB / 2 ** 20 };
}

export function benchLlamaCpp(gguf: string, promptTokens: number, newTokens: number, repeats: number, threads: number): LlamaCppPhases {
  const common = ['-m', gguf, '-t', String(threads), '-r', String(repeats)];
  const prefill = llamaBench([...common, '-p', String(promptTokens), '-n', '0']);
  const decode = llamaBench([...common, '-p', '0', '-n', String(newTokens), '-d', String(promptTokens)]);
  process.stderr.write(`measured llama.cpp ${path.basename(gguf)}\n`);
  return { prefillS: promptTokens / prefill.tokensPerS, decodeTokensPerS: decode.tokensPerS, peakGiB: Math.max(prefill.peakGiB, decode.peakGiB) };
}

export interface LlamaCppImagePhases {
  /** The image encoded by the vision tower and projector (mmproj), seconds. */
  visionS: number;
  /** From the start of prompt processing to the last of `newTokens` tokens: vision + prefill + decode. */
  endToEndS: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * llama-mtmd-cli answering `prompt` about `image`, greedy, `newTokens` tokens: the image encoding
 * time it logs, and the time from its first prompt chunk to its exit (its log timestamps count
 * from its start; model loading comes before the first chunk). Medians of `repeats` runs.
 */
export function benchLlamaCppImage(
  gguf: string,
  mmproj: string,
  image: string,
  prompt: string,
  chatTemplate: string,
  newTokens: number,
  repeats: number,
  threads: number,
): LlamaCppImagePhases {
  const args = ['-m', gguf, '--mmproj', mmproj, '--image', image, '-p', prompt, '-n', String(newTokens), '--ignore-eos', '--temp', '0', '-t', String(threads), '-c', '4096', '--chat-template', chatTemplate, '--log-timestamps'];
  const vision: number[] = [];
  const total: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    const run = spawnSync(LLAMA_MTMD, args, { encoding: 'utf8', maxBuffer: 1 << 26 });
    const wallS = (performance.now() - t0) / 1000;
    if (run.status !== 0) throw new Error(`llama-mtmd-cli failed (${LLAMA_MTMD} ${args.join(' ')}): ${run.stderr.slice(-500)}`);
    const start = /^(\d+)\.(\d+)\.(\d+)\.(\d+) I encoding mtmd batch/m.exec(run.stderr);
    const encoded = /mtmd batch encoding done in (\d+) ms/.exec(run.stderr);
    if (start === null || encoded === null) throw new Error(`llama-mtmd-cli: no image-encoding lines in its log (${args.join(' ')})`);
    // Log timestamps are minutes.seconds.milliseconds.microseconds since the logger started.
    const [m, s, ms, us] = start.slice(1).map(Number) as [number, number, number, number];
    vision.push(Number(encoded[1]) / 1000);
    total.push(wallS - (m * 60 + s + ms / 1e3 + us / 1e6));
  }
  process.stderr.write(`measured llama.cpp ${path.basename(gguf)} with ${path.basename(mmproj)}\n`);
  return { visionS: median(vision), endToEndS: median(total) };
}
