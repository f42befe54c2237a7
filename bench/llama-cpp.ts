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
