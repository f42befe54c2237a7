/**
 * The llama.cpp side of the benchmark: llama-bench (built by bench/build_llama_cpp.sh) on a GGUF
 * of the bench checkpoint's decoder (bench/make_llama_cpp_models.py): prefill of the prompt's
 * length, and decode of the new tokens with the prompt's length already in context.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const LLAMA_BENCH = path.join('bench', 'vendor', 'llama.cpp', 'build', 'bin', 'llama-bench');

export interface LlamaCppPhases {
  prefillS: number;
  decodeTokensPerS: number;
}

function llamaBench(args: string[]): number {
  const run = spawnSync(LLAMA_BENCH, [...args, '-o', 'json'], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (run.status !== 0) throw new Error(`llama-bench failed (${LLAMA_BENCH} ${args.join(' ')}): ${run.stderr.slice(-500)}`);
  const rows = JSON.parse(run.stdout) as { avg_ts: number }[];
  return rows[0]!.avg_ts;
}

export function benchLlamaCpp(gguf: string, promptTokens: number, newTokens: number, repeats: number, threads: number): LlamaCppPhases {
  const common = ['-m', gguf, '-t', String(threads), '-r', String(repeats)];
  const prefillTokensPerS = llamaBench([...common, '-p', String(promptTokens), '-n', '0']);
  const decodeTokensPerS = llamaBench([...common, '-p', '0', '-n', String(newTokens), '-d', String(promptTokens)]);
  process.stderr.write(`measured llama.cpp ${path.basename(gguf)}\n`);
  return { prefillS: promptTokens / prefillTokensPerS, decodeTokensPerS };
}
