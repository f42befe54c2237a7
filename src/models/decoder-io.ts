/**
 * The decoder graphs' input and output names, declared once: decoder-graph.ts names the graphs'
 * values with these, and everything that feeds or reads them (llama.ts, decoder-weights.ts,
 * compact-ffn.ts) uses the same constants.
 */

/** What every layer of one forward pass shares, and the last layer's output. */
export const STEP = { x: 'x', cos: 'cos', sin: 'sin', row: 'row', mask: 'mask', out: 'out' } as const;

/** One layer's weights, KV-cache inputs, new keys and values and taps (in a group graph, `inGroup`'s names). */
export const LAYER = {
  inputNorm: 'input_norm',
  qkv: 'qkv_w',
  qkvBias: 'qkv_b',
  o: 'o_w',
  oBias: 'o_b',
  postNorm: 'post_norm',
  gateUp: 'gate_up_w',
  gateUpBias: 'gate_up_b',
  /** down_proj held transposed, [ffn, hidden]: a neuron is one row. */
  downT: 'down_t',
  downBias: 'down_b',
  cacheK: 'cache_k',
  cacheV: 'cache_v',
  cacheMask: 'cache_mask',
  newK: 'new_k',
  newV: 'new_v',
  ffnAct: 'ffn_act',
  lastAttn: 'last_attn',
} as const;

/** The final norm and LM head. */
export const HEAD = { x: 'x', norm: 'norm', weight: 'lm_w', logits: 'logits' } as const;

/** The prefix of layer `l`'s names in a group graph. */
export const groupPrefix = (l: number): string => `l${l}.`;
