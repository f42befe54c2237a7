/** Policies by name (design doc section 5): what the CLI's --policy and the library accept. */
import { CorematchingError } from '../io/errors.js';
import { DensePolicy, type SparsityPolicy } from './policy.js';
import { CoreMatchingPolicy } from './corematching.js';
import { FastVPolicy } from './fastv.js';
import { ProjectionPolicy } from './projection.js';
import { PoolPolicy } from './pool.js';
import { RandomPolicy } from './random.js';
import { checkLayers, resolvePolicyOptions, type OptionSpelling, type PolicyOptions } from './options.js';

export const POLICY_NAMES = ['dense', 'corematching', 'corematching-tokens', 'corematching-neurons', 'fastv', 'projection', 'random', 'pool'] as const;
export type PolicyName = (typeof POLICY_NAMES)[number];

export function isPolicyName(name: string): name is PolicyName {
  return (POLICY_NAMES as readonly string[]).includes(name);
}

/**
 * A fresh policy, its options validated (the one place they are). `numLayers` (the decoder's
 * layer count) lets errors such as a tokenLayer past the last layer surface before any work;
 * `spell` names options in errors (the CLI passes its flag names).
 */
export function createPolicy(name: string, options: Partial<PolicyOptions> = {}, numLayers?: number, spell?: OptionSpelling): SparsityPolicy {
  if (!isPolicyName(name)) {
    throw new CorematchingError(`unknown policy "${name}"; expected one of ${POLICY_NAMES.join(', ')}`);
  }
  const resolved = resolvePolicyOptions(options, spell);
  const tokens = name !== 'dense' && name !== 'corematching-neurons';
  const neurons = name === 'corematching' || name === 'corematching-neurons';
  if (numLayers !== undefined) checkLayers(resolved, numLayers, tokens, neurons);
  switch (name) {
    case 'dense':
      return new DensePolicy();
    case 'corematching':
      return new CoreMatchingPolicy(resolved, { tokens: true, neurons: true });
    case 'corematching-tokens':
      return new CoreMatchingPolicy(resolved, { tokens: true, neurons: false });
    case 'corematching-neurons':
      return new CoreMatchingPolicy(resolved, { tokens: false, neurons: true });
    case 'fastv':
      return new FastVPolicy(resolved);
    case 'projection':
      return new ProjectionPolicy(resolved);
    case 'random':
      return new RandomPolicy(resolved);
    case 'pool':
      return new PoolPolicy(resolved);
  }
}
