/** The sparsity-policy flags shared by `run`, `eval` and `visualize`. */
import type { Command } from 'commander';
import { CorematchingError } from '../io/errors.js';
import { POLICY_NAMES, type PolicyName } from '../sparsity/create-policy.js';
import { parsePolicyOptions, type PolicyOptions } from '../sparsity/options.js';

export interface PolicyFlags {
  policy: string;
  seed?: number;
  reportNeurons?: boolean;
}

export function addPolicyFlags(command: Command, defaultPolicy = 'dense'): Command {
  return command
    .option('--policy <name>', `sparsity policy: ${POLICY_NAMES.join(', ')}`, defaultPolicy)
    .option('--rho <r>', "share of a token's positive activations in its core neurons, (0, 1] (default 0.2)")
    .option('--beta <b>', "share of the FFN width in a sentence's core neurons, (0, 1] (default 0.4)")
    .option('--token-layer <l>', 'layers that see every token; selection reads layer l-1 (default 2)')
    .option('--reference <r>', 'reference tokens for core-token matching: last, text, all or a prompt position (default last)')
    .option('--match <m>', 'image-token score: active or core (default active)')
    .option('--budget <b>', 'kept image tokens: knee, a count K, or a fraction (default knee)')
    .option('--min-keep <n>', 'with the knee budget, keep at least n image tokens (default 1)')
    .option('--neuron-layers <l>', 'layers decoding with core neurons: middle, all or a comma list (default middle)')
    .option('--prune-early-kv', 'also drop pruned tokens from the KV cache of the first layers');
}

/** Validated policy name and options from parsed flags (errors name the flag). */
export function policyFromFlags(flags: PolicyFlags): { policy: PolicyName; policyOptions: PolicyOptions } {
  if (!(POLICY_NAMES as readonly string[]).includes(flags.policy)) {
    throw new CorematchingError(`unknown policy "${flags.policy}"; expected one of ${POLICY_NAMES.join(', ')}`);
  }
  const policyOptions = parsePolicyOptions({
    ...(flags as unknown as Record<string, string | boolean | undefined>),
    seed: flags.seed === undefined ? undefined : String(flags.seed),
    reportNeuronIndices: flags.reportNeurons === true,
  });
  return { policy: flags.policy as PolicyName, policyOptions };
}
