/** `corematching run`: answer one question about one image. */
import type { Command } from 'commander';
import { addModelFlags, loadWithProgress, type ModelFlags } from './load-model.js';
import { collect } from './options.js';
import { addSamplingFlags, samplingFromFlags, type SamplingFlags } from './sampling-flags.js';
import { addPolicyFlags, policyFromFlags, type PolicyFlags } from './policy-flags.js';

interface RunOptions extends PolicyFlags, ModelFlags, SamplingFlags {
  image: string;
  prompt: string;
  rawPrompt?: boolean;
  stop?: string[];
  json?: boolean;
}

export function runCommand(program: Command): void {
  const command = addModelFlags(program.command('run').description('Answer a question about an image.'))
    .requiredOption('--image <file>', 'image file (JPEG, PNG or WebP)')
    .requiredOption('--prompt <text>', 'the question (wrapped by the chat template unless --raw-prompt)')
    .option('--raw-prompt', 'use the prompt verbatim (it must contain one <image>)')
    .option('--stop <text>', 'stop when the output contains this text (repeatable)', collect)
    .option('--json', 'print one JSON object with text, tokens and stats instead of streaming')
    .option('--report-neurons', 'with --json, list the core-neuron indices of every sparse layer');
  addPolicyFlags(addSamplingFlags(command)).action(async (o: RunOptions) => {
      const { policy, policyOptions } = policyFromFlags(o);
      const vlm = await loadWithProgress(o, o.json === true);
      const result = await vlm.generate({
        image: o.image,
        prompt: o.prompt,
        rawPrompt: o.rawPrompt === true,
        maxNewTokens: o.maxNewTokens,
        sampling: samplingFromFlags(o),
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
