/**
 * Options of the sparsity policies (design doc sections 1-5), their defaults and their validation
 * (once, in createPolicy). Checks that need the model (layer counts) run in `checkLayers`, those
 * that need the prompt (image-token count, prompt length) in `begin()`.
 */
import { CorematchingError } from '../io/errors.js';
import { validateBudget, type Budget } from './knee.js';

export type Reference = 'last' | 'text' | 'all' | number;
export type Match = 'active' | 'core' | 'weighted';
export type NeuronLayers = 'middle' | 'all' | number[];

export interface PolicyOptions {
  /** Share of a token's positive activations in its core set, (0, 1]. */
  rho: number;
  /** Share of the FFN width in a sentence's core set, (0, 1]. */
  beta: number;
  /** Layers that see every token; selection uses layer tokenLayer - 1. Integer in 1 .. N-1. */
  tokenLayer: number;
  /** Tokens whose core neurons form the reference set R. */
  reference: Reference;
  /** Image-token score: |A+(x) ∩ R| ('active'), |C_rho(x) ∩ R| ('core'), or this project's
   * variant, the sum of x's positive activations over R ('weighted'). */
  match: Match;
  /** 'knee', an integer count K >= 1, or a fraction in (0, 1) of the image tokens. */
  budget: Budget;
  /** With the knee budget, keep at least this many image tokens. */
  minKeep: number;
  /** Layers that decode with core neurons. */
  neuronLayers: NeuronLayers;
  /** Drop pruned tokens from the KV caches of layers 0 .. tokenLayer-1 too. */
  pruneEarlyKv: boolean;
  /** Seed of the random policy. */
  seed: number;
  /** Also report the core-neuron indices of every sparse layer (SparsityReport.coreNeuronIndices). */
  reportNeuronIndices: boolean;
}

/**
 * Decoder layers before which the default policies change what a layer does: the layer that scores
 * image tokens (tokenLayer - 1), the first layer after the selection (tokenLayer), and the first and
 * one-past-last of the middle layers that decode with core neurons. The decoder starts a new group
 * of layers at each (llama.ts), so these policies find whole groups to run as one session.
 */
export function policyLayerBreaks(numLayers: number): number[] {
  const middle = neuronLayerIndices('middle', numLayers);
  const { tokenLayer } = DEFAULT_POLICY_OPTIONS;
  const breaks = [tokenLayer - 1, tokenLayer, ...(middle.length > 0 ? [middle[0]!, middle[middle.length - 1]! + 1] : [])];
  return [...new Set(breaks)].filter((l) => l > 0 && l < numLayers).sort((a, b) => a - b);
}

export const DEFAULT_POLICY_OPTIONS: Readonly<PolicyOptions> = Object.freeze({
  rho: 0.2,
  beta: 0.4,
  tokenLayer: 2,
  reference: 'last',
  match: 'active',
  budget: 'knee',
  minKeep: 1,
  neuronLayers: 'middle',
  pruneEarlyKv: false,
  seed: 0,
  reportNeuronIndices: false,
});

const OPTION_NAMES = Object.keys(DEFAULT_POLICY_OPTIONS) as (keyof PolicyOptions)[];

const show = (value: unknown) => (typeof value === 'string' ? `"${value}"` : Array.isArray(value) ? `[${value.join(', ')}]` : String(value));

/** How errors spell an option: its key by default; the CLI passes its flag names. */
export type OptionSpelling = (key: keyof PolicyOptions) => string;

const asKey: OptionSpelling = (key) => key;

const isInt = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x);

/**
 * Fills in defaults and validates every option that does not depend on the model or the prompt;
 * errors name an option as `spell` says.
 */
export function resolvePolicyOptions(options: Partial<PolicyOptions> = {}, spell: OptionSpelling = asKey): PolicyOptions {
  for (const key of Object.keys(options)) {
    if (!OPTION_NAMES.includes(key as keyof PolicyOptions)) {
      throw new CorematchingError(`unknown sparsity option "${key}"; expected one of ${OPTION_NAMES.join(', ')}`);
    }
  }
  const defined = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
  const o: PolicyOptions = { ...DEFAULT_POLICY_OPTIONS, ...defined };
  const fail = (key: keyof PolicyOptions, value: unknown, expected: string): never => {
    throw new CorematchingError(`${spell(key)} must be ${expected}, got ${show(value)}`);
  };
  const unitInterval = (name: 'rho' | 'beta', x: unknown) => {
    if (typeof x !== 'number' || !(x > 0 && x <= 1)) fail(name, x, 'a number in (0, 1]');
  };
  unitInterval('rho', o.rho);
  unitInterval('beta', o.beta);
  if (!isInt(o.tokenLayer) || o.tokenLayer < 1) fail('tokenLayer', o.tokenLayer, 'an integer >= 1 (the number of layers that see every token)');
  if (!(o.reference === 'last' || o.reference === 'text' || o.reference === 'all' || isInt(o.reference))) {
    fail('reference', o.reference, "'last', 'text', 'all' or an integer prompt position (negative counts from the end)");
  }
  if (o.match !== 'active' && o.match !== 'core' && o.match !== 'weighted') fail('match', o.match, "'active', 'core' or 'weighted'");
  validateBudget(o.budget, spell('budget'));
  if (!isInt(o.minKeep) || o.minKeep < 1) fail('minKeep', o.minKeep, 'an integer >= 1');
  const layers = o.neuronLayers;
  if (!(layers === 'middle' || layers === 'all' || (Array.isArray(layers) && layers.every((l) => isInt(l) && l >= 0)))) {
    fail('neuronLayers', layers, "'middle', 'all' or a list of layer indices >= 0");
  }
  if (typeof o.pruneEarlyKv !== 'boolean') fail('pruneEarlyKv', o.pruneEarlyKv, 'true or false');
  if (!isInt(o.seed) || o.seed < 0 || o.seed > 0xffffffff) fail('seed', o.seed, 'an integer in 0 .. 4294967295');
  if (typeof o.reportNeuronIndices !== 'boolean') fail('reportNeuronIndices', o.reportNeuronIndices, 'true or false');
  return { ...o, neuronLayers: Array.isArray(layers) ? [...new Set(layers)].sort((a, b) => a - b) : layers };
}

/** Checks the options that depend on the decoder's layer count. */
export function checkLayers(o: PolicyOptions, numLayers: number, usesTokens: boolean, usesNeurons: boolean): void {
  if (usesTokens && o.tokenLayer >= numLayers) {
    throw new CorematchingError(
      `tokenLayer ${o.tokenLayer} is past the last layer: the model has ${numLayers} decoder layers, expected 1 .. ${numLayers - 1}`,
    );
  }
  if (usesNeurons && Array.isArray(o.neuronLayers)) {
    const bad = o.neuronLayers.filter((l) => l >= numLayers);
    if (bad.length > 0) {
      throw new CorematchingError(`neuronLayers [${o.neuronLayers.join(', ')}] names layer ${bad[0]}, but the model has ${numLayers} decoder layers (0 .. ${numLayers - 1})`);
    }
  }
}

/** The layers that decode with core neurons, ascending. `middle` is floor(3N/16) <= l < floor(27N/32). */
export function neuronLayerIndices(layers: NeuronLayers, numLayers: number): number[] {
  if (layers === 'all') return Array.from({ length: numLayers }, (_, i) => i);
  if (layers === 'middle') {
    const from = Math.floor((3 * numLayers) / 16);
    const to = Math.floor((27 * numLayers) / 32);
    return Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);
  }
  return layers.filter((l) => l < numLayers);
}

/** The prompt position of an integer reference (negative counts from the end); an error when outside the prompt. */
export function referencePosition(reference: number, promptLength: number): number {
  const p = reference < 0 ? promptLength + reference : reference;
  if (p < 0 || p >= promptLength) {
    throw new CorematchingError(`reference ${reference} is outside the prompt of ${promptLength} tokens; expected -${promptLength} .. ${promptLength - 1}`);
  }
  return p;
}
