/** `corematching run`: answer one question about one image. */
import type { Command } from 'commander';
import { addModelFlags, loadWithProgress, type ModelFlags } from './load-model.js';
import type { SamplingOptions } from '../pipeline/sampling.js';
import { collect, nonNegativeInt, positiveInt, positiveNumber, probability } from './options.js';
import { addPolicyFlags, policyFromFlags, type PolicyFlags } from './policy-flags.js';

interface RunOptions extends PolicyFlags, ModelFlags {
  image: string;
  prompt: string;
  maxNewTokens: number;
  greedy?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  rawPrompt?: boolean;
  stop?: string[];
  json?: boolean;
}

/** --greedy, or sampling when a sampling parameter is given; otherwise the checkpoint's generation_config.json decides. */
function samplingOptions(o: RunOptions): SamplingOptions {
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

export function runCommand(program: Command): void {
  const command = addModelFlags(
    program.command('run').description('Answer a question about an image.'),
    'Hugging Face LLaVA checkpoint folder (default: the model shipped with corematching)',
  )
    .requiredOption('--image <file>', 'image file (JPEG, PNG or WebP)')
    .requiredOption('--prompt <text>', 'the question (wrapped by the chat template unless --raw-prompt)')
    .option('--max-new-tokens <n>', 'maximum number of tokens to generate', positiveInt, 128)
    .option('--greedy', "greedy decoding (the default unless a sampling option is given or the checkpoint's generation_config.json samples)")
    .option('--temperature <t>', 'sampling temperature', positiveNumber)
    .option('--top-k <k>', 'sample among the k most likely tokens (0 = all)', nonNegativeInt)
    .option('--top-p <p>', 'nucleus sampling probability mass', probability)
    .option('--raw-prompt', 'use the prompt verbatim (it must contain one <image>)')
    .option('--stop <text>', 'stop when the output contains this text (repeatable)', collect)
    .option('--json', 'print one JSON object with text, tokens and stats instead of streaming')
    .option('--report-neurons', 'with --json, list the core-neuron indices of every sparse layer');
  addPolicyFlags(command).action(async (o: RunOptions) => {
      const { policy, policyOptions } = policyFromFlags(o);
      const vlm = await loadWithProgress(o, o.json === true);
      const result = await vlm.generate({
        image: o.image,
        prompt: o.prompt,
        rawPrompt: o.rawPrompt === true,
        maxNewTokens: o.maxNewTokens,
        sampling: samplingOptions(o),
        stopStrings: o.stop ?? [],
        policy,
        policyOptions,
        ...(o.json ? {} : { onText: (text: string) => process.stdout.write(text) }),
      });
      if (o.json) {
        const { text, tokens, promptTokens, imageTokens, stats, sparsity } = result;
        process.stdout.write(`${JSON.stringify({ text, tokens, promptTokens, imageTokens, stats, sparsity })}\n`);
        return;
      }
      process.stdout.write('\n');
      const s = result.stats;
      const sp = result.sparsity;
      const sparse = sp.policy === 'dense' ? '' : `${sp.policy}: kept ${sp.keptImageTokens.length}/${sp.imageTokens} image tokens, ${Object.keys(sp.coreNeurons).length} layers decode with core neurons; `;
      process.stderr.write(
        `[${s.promptTokenCount} prompt tokens (${result.imageTokens} image), ${s.newTokenCount} new] ${sparse}` +
          `preprocess ${s.preprocessMs.toFixed(0)} ms, vision ${s.visionMs.toFixed(0)} ms, prefill ${s.prefillMs.toFixed(0)} ms, ` +
          `first token ${s.firstTokenMs.toFixed(0)} ms, decode ${s.decodeTokensPerSecond.toFixed(1)} tokens/s\n`,
      );
    });
}
