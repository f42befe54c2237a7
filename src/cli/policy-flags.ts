/**
 * The sparsity-policy flags shared by `run`, `eval` and `visualize`. Commander's parsers turn
 * each flag into a typed value (or an error naming the flag); the policy options are then
 * validated by the sparsity layer's one validator, with errors spelled as flags.
 */
import { InvalidArgumentError, type Command } from 'commander';
import { CorematchingError } from '../io/errors.js';
import { isPolicyName, POLICY_NAMES, type PolicyName } from '../sparsity/create-policy.js';
import { resolvePolicyOptions, type NeuronLayers, type PolicyOptions, type Reference } from '../sparsity/options.js';

export interface PolicyFlags {
  policy: string;
  rho?: number;
  beta?: number;
  tokenLayer?: number;
  reference?: Reference;
  match?: PolicyOptions['match'];
  budget?: PolicyOptions['budget'];
  minKeep?: number;
  neuronLayers?: NeuronLayers;
  pruneEarlyKv?: boolean;
  seed?: number;
  reportNeurons?: boolean;
}

/** The flag that sets an option, for error messages: tokenLayer -> --token-layer. */
const flagName = (key: string): string => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

const DECIMAL = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

function invalid(flag: string, value: string, expected: string): never {
  throw new InvalidArgumentError(`${flag} must be ${expected}, got "${value}"`);
}

/** A parser of decimal numbers; ranges are the validator's business. */
const decimal = (flag: string, expected: string) => (value: string) => (DECIMAL.test(value.trim()) ? Number(value) : invalid(flag, value, expected));

const integer = (flag: string, expected: string) => (value: string) => {
  const n = decimal(flag, expected)(value);
  return Number.isSafeInteger(n) ? n : invalid(flag, value, expected);
};

const oneOf =
  <T extends string>(flag: string, choices: readonly T[], other?: (value: string) => number) =>
  (value: string): T | number =>
    (choices as readonly string[]).includes(value) ? (value as T) : other ? other(value) : invalid(flag, value, choices.map((c) => `'${c}'`).join(' or '));

function neuronLayerList(value: string): NeuronLayers {
  const expected = "'middle', 'all' or a comma-separated list of layer indices";
  if (value === 'middle' || value === 'all') return value;
  if (value.trim() === '') invalid('--neuron-layers', value, expected);
  return value.split(',').map((part) => integer('--neuron-layers', expected)(part.trim()));
}

export function addPolicyFlags(command: Command, defaultPolicy = 'dense'): Command {
  return command
    .option('--policy <name>', `sparsity policy: ${POLICY_NAMES.join(', ')}`, defaultPolicy)
    .option('--rho <r>', "share of a token's positive activations in its core neurons, (0, 1] (default 0.2)", decimal('--rho', 'a number in (0, 1]'))
    .option('--beta <b>', "share of the FFN width in a sentence's core neurons, (0, 1] (default 0.4)", decimal('--beta', 'a number in (0, 1]'))
    .option('--token-layer <l>', 'layers that see every token; selection reads layer l-1 (default 2)', integer('--token-layer', 'an integer >= 1'))
    .option(
      '--reference <r>',
      'reference tokens for core-token matching: last, text, all or a prompt position (default last)',
      oneOf('--reference', ['last', 'text', 'all'], integer('--reference', "'last', 'text', 'all' or an integer prompt position")),
    )
    .option('--match <m>', "image-token score: active, core, or weighted (this project's variant: sum of positive activations over the core neurons) (default active)", oneOf('--match', ['active', 'core', 'weighted']))
    .option(
      '--budget <b>',
      'kept image tokens: knee, a count K, or a fraction (default knee)',
      oneOf('--budget', ['knee'], decimal('--budget', "'knee', an integer K >= 1 or a fraction in (0, 1)")),
    )
    .option('--min-keep <n>', 'with the knee budget, keep at least n image tokens (default 1)', integer('--min-keep', 'an integer >= 1'))
    .option('--neuron-layers <l>', 'layers decoding with core neurons: middle, all or a comma list (default middle)', neuronLayerList)
    .option('--prune-early-kv', 'also drop pruned tokens from the KV cache of the first layers')
    .option('--seed <s>', 'seed of the random policy and of sampling (default 0)', integer('--seed', 'an integer in 0 .. 4294967295'));
}

/** The policy name and its validated options from parsed flags (errors name the flag). */
export function policyFromFlags(flags: PolicyFlags): { policy: PolicyName; policyOptions: PolicyOptions } {
  if (!isPolicyName(flags.policy)) {
    throw new CorematchingError(`unknown policy "${flags.policy}"; expected one of ${POLICY_NAMES.join(', ')}`);
  }
  const { rho, beta, tokenLayer, reference, match, budget, minKeep, neuronLayers, pruneEarlyKv, seed } = flags;
  const options = { rho, beta, tokenLayer, reference, match, budget, minKeep, neuronLayers, pruneEarlyKv, seed, reportNeuronIndices: flags.reportNeurons === true };
  return { policy: flags.policy, policyOptions: resolvePolicyOptions(options, flagName) };
}
