/** The decoding flags of `run` and `chat`: greedy, or sampling when a sampling parameter is given. */
import type { Command } from 'commander';
import type { SamplingOptions } from '../pipeline/sampling.js';
import { nonNegativeInt, positiveInt, positiveNumber, probability } from './options.js';

export interface SamplingFlags {
  maxNewTokens: number;
  greedy?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
}

export function addSamplingFlags(command: Command): Command {
  return command
    .option('--max-new-tokens <n>', 'maximum number of tokens to generate', positiveInt, 128)
    .option('--greedy', "greedy decoding (the default unless a sampling option is given or the checkpoint's generation_config.json samples)")
    .option('--temperature <t>', 'sampling temperature', positiveNumber)
    .option('--top-k <k>', 'sample among the k most likely tokens (0 = all)', nonNegativeInt)
    .option('--top-p <p>', 'nucleus sampling probability mass', probability);
}

/** --greedy, or sampling when a sampling parameter is given; otherwise the checkpoint's generation_config.json decides. */
export function samplingFromFlags(o: SamplingFlags): SamplingOptions {
  if (o.greedy) return { doSample: false };
  // --seed alone also seeds the random policy, so only a sampling parameter turns sampling on.
  const sampled = o.temperature !== undefined || o.topK !== undefined || o.topP !== undefined;
  if (!sampled) return {};
  return {
    doSample: true,
    ...(o.temperature !== undefined ? { temperature: o.temperature } : {}),
    ...(o.topK !== undefined ? { topK: o.topK } : {}),
    ...(o.topP !== undefined ? { topP: o.topP } : {}),
    seed: o.seed ?? 0,
  };
}
