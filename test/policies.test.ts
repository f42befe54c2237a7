/**
 * Policies (design doc section 5) driven the way the generation loop drives them, on synthetic
 * activations and attention, against a brute-force implementation written here with plain sorts.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CorematchingError } from '../src/io/errors.js';
import type { SparsityPolicy } from '../src/sparsity/policy.js';
import { createPolicy, POLICY_NAMES } from '../src/sparsity/create-policy.js';
import { pooledGrid, poolWindows } from '../src/sparsity/pool.js';
import { resolvePolicyOptions, neuronLayerIndices, type PolicyOptions } from '../src/sparsity/options.js';
import type { CoreMatchingPolicy } from '../src/sparsity/corematching.js';
import { addPolicyFlags, policyFromFlags, type PolicyFlags } from '../src/cli/policy-flags.js';
import { Command } from 'commander';

interface Shape {
  numLayers: number;
  promptLength: number;
  imageStart: number;
  imageTokens: number;
  D: number;
  heads: number;
  kvHeads: number;
  headDim: number;
}

const SHAPE: Shape = { numLayers: 4, promptLength: 30, imageStart: 3, imageTokens: 20, D: 40, heads: 4, kvHeads: 2, headDim: 3 };

/** Deterministic pseudo-random value of (layer, position, index, salt), quantised to create ties. */
function h(...xs: number[]): number {
  let s = 2166136261;
  for (const x of xs) s = Math.imul(s ^ (x + 1013), 16777619) >>> 0;
  s = Math.imul(s ^ (s >>> 15), 2246822507) >>> 0;
  s = Math.imul(s ^ (s >>> 13), 3266489909) >>> 0;
  return ((s ^ (s >>> 16)) >>> 0) / 4294967296;
}
const act = (layer: number, pos: number, n: number) => Math.round((h(layer, pos, n) - 0.5) * 16) / 4;
const attn = (layer: number, head: number, pos: number) => h(layer, head, pos, 7) ** 3;
const value = (layer: number, kv: number, pos: number, d: number) => h(layer, kv, pos, d, 9) - 0.5;

const contextOf = (s: Shape) => ({
  numLayers: s.numLayers,
  promptLength: s.promptLength,
  imageStart: s.imageStart,
  imageTokens: s.imageTokens,
  intermediateSize: s.D,
  numAttentionHeads: s.heads,
  numKeyValueHeads: s.kvHeads,
  headDim: s.headDim,
});

interface Run {
  keptPositions: number[]; // prompt positions the last layer saw
  neurons: (number[] | null)[];
  seenByLayer: number[][];
}

/** What generation-loop.ts does with a policy, with synthetic layer outputs. */
function drive(policy: SparsityPolicy, s: Shape = SHAPE): Run {
  policy.begin(contextOf(s));
  let positions = Array.from({ length: s.promptLength }, (_, i) => i);
  const seenByLayer: number[][] = [];
  for (let l = 0; l < s.numLayers; l++) {
    const keep = policy.selectTokens(l);
    if (keep !== null) positions = keep.map((i) => positions[i]!);
    seenByLayer.push(positions);
    const extras = policy.prefillTaps(l);
    if (extras.ffnActivations) {
      const a = new Float32Array(positions.length * s.D);
      positions.forEach((p, t) => {
        for (let n = 0; n < s.D; n++) a[t * s.D + n] = act(l, p, n);
      });
      policy.afterFfn(l, { activations: a, tokens: positions.length, width: s.D });
    }
    if (extras.lastAttention) {
      const T = positions.length;
      const probs = new Float32Array(s.heads * T);
      for (let hh = 0; hh < s.heads; hh++) {
        let sum = 0;
        for (let t = 0; t < T; t++) sum += attn(l, hh, positions[t]!);
        for (let t = 0; t < T; t++) probs[hh * T + t] = attn(l, hh, positions[t]!) / sum;
      }
      const values = new Float32Array(s.kvHeads * T * s.headDim);
      for (let k = 0; k < s.kvHeads; k++) for (let t = 0; t < T; t++) for (let d = 0; d < s.headDim; d++) values[(k * T + t) * s.headDim + d] = value(l, k, positions[t]!, d);
      policy.afterAttention(l, { probs, values, tokens: T, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim });
    }
  }
  const neurons = Array.from({ length: s.numLayers }, (_, l) => policy.decodeNeurons(l));
  return { keptPositions: positions, neurons, seenByLayer };
}

// ---------------------------------------------------------------------------------------------
// brute force, independent of src/sparsity

const ceilTol = (x: number) => (Math.abs(x - Math.round(x)) < 1e-9 ? Math.round(x) : Math.ceil(x));
const asc = (xs: number[]) => [...xs].sort((a, b) => a - b);
const rowOf = (l: number, p: number, D: number) => Array.from({ length: D }, (_, n) => act(l, p, n));

function core(row: number[], rho: number): number[] {
  const pos = row.map((v, n) => [v, n] as const).filter(([v]) => v > 0).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  return asc(pos.slice(0, ceilTol(rho * pos.length)).map(([, n]) => n));
}
function sentence(rows: number[][], D: number, rho: number, beta: number): number[] {
  const f = new Array<number>(D).fill(0);
  for (const r of rows) for (const n of core(r, rho)) f[n]!++;
  const ranked = f.map((c, n) => [c, n] as const).filter(([c]) => c > 0).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  return asc(ranked.slice(0, ceilTol(beta * D)).map(([, n]) => n));
}
function budgetPick(scores: number[], budget: 'knee' | number, minKeep: number): number[] {
  const ranked = scores.map((v, i) => [v, i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  const top = (k: number) => asc(ranked.slice(0, k).map(([, i]) => i));
  if (budget !== 'knee') return top(Number.isInteger(budget) ? budget : Math.floor(budget * scores.length + 0.5));
  const d = ranked.map(([v]) => v);
  const n = d.length;
  if (d[0] === d[n - 1]) return top(n);
  let e = 0;
  let best = -1;
  const len = Math.hypot(n - 1, d[n - 1]! - d[0]!);
  for (let i = 0; i < n; i++) {
    const dist = Math.abs((n - 1) * (d[i]! - d[0]!) - (d[n - 1]! - d[0]!) * i) / len;
    if (dist > best + 1e-12) [best, e] = [dist, i];
  }
  const kept = scores.flatMap((v, i) => (v > d[e]! ? [i] : []));
  return kept.length >= minKeep ? kept : top(minKeep);
}
function promptWith(keptImage: number[], s: Shape = SHAPE): number[] {
  const all = Array.from({ length: s.promptLength }, (_, i) => i);
  return all.filter((p) => p < s.imageStart || p >= s.imageStart + s.imageTokens || keptImage.includes(p - s.imageStart));
}

function bruteCoreMatching(o: PolicyOptions, s: Shape = SHAPE) {
  const L = o.tokenLayer;
  const all = Array.from({ length: s.promptLength }, (_, i) => i);
  const isImage = (p: number) => p >= s.imageStart && p < s.imageStart + s.imageTokens;
  const refRows =
    o.reference === 'last' ? [s.promptLength - 1] : o.reference === 'all' ? all : o.reference === 'text' ? all.filter((p) => !isImage(p)) : [(o.reference + s.promptLength) % s.promptLength];
  const R = new Set(sentence(refRows.map((p) => rowOf(L - 1, p, s.D)), s.D, o.rho, o.beta));
  const scores = Array.from({ length: s.imageTokens }, (_, i) => {
    const row = rowOf(L - 1, s.imageStart + i, s.D);
    if (o.match === 'weighted') return [...R].reduce((sum, n) => sum + Math.max(0, row[n]!), 0);
    const set = o.match === 'active' ? row.flatMap((v, n) => (v > 0 ? [n] : [])) : core(row, o.rho);
    return set.filter((n) => R.has(n)).length;
  });
  const kept = budgetPick(scores, o.budget, o.minKeep);
  return { kept, scores, positions: promptWith(kept, s) };
}

// ---------------------------------------------------------------------------------------------

describe('corematching policies', () => {
  const cases: Partial<PolicyOptions>[] = [
    { tokenLayer: 1 },
    { tokenLayer: 2, budget: 5 },
    { tokenLayer: 3, budget: 0.25, match: 'core' },
    { tokenLayer: 2, reference: 'text', rho: 0.5, beta: 0.3 },
    { tokenLayer: 1, reference: 'all', match: 'core', minKeep: 4 },
    { tokenLayer: 2, reference: -3, budget: 7 },
    { tokenLayer: 1, reference: 4, rho: 1, beta: 1 },
    { tokenLayer: 2, match: 'weighted', budget: 6 },
    { tokenLayer: 1, reference: 'text', match: 'weighted' },
  ];
  for (const partial of cases) {
    test(`corematching ${JSON.stringify(partial)}`, () => {
      const o = resolvePolicyOptions({ ...partial, neuronLayers: 'all', reportNeuronIndices: true });
      const policy = createPolicy('corematching', o, SHAPE.numLayers) as CoreMatchingPolicy;
      const run = drive(policy);
      const expected = bruteCoreMatching(o);
      assert.deepEqual(run.keptPositions, expected.positions);
      assert.deepEqual(Array.from(policy.imageTokenScores()!), expected.scores);
      for (let l = 0; l < SHAPE.numLayers; l++) {
        assert.deepEqual(run.seenByLayer[l], l < o.tokenLayer ? Array.from({ length: SHAPE.promptLength }, (_, i) => i) : expected.positions);
        const rows = run.seenByLayer[l]!.map((p) => rowOf(l, p, SHAPE.D));
        assert.deepEqual(run.neurons[l], sentence(rows, SHAPE.D, o.rho, o.beta), `layer ${l}`);
      }
      const report = policy.report();
      assert.equal(report.policy, 'corematching');
      assert.deepEqual(report.keptImageTokens, expected.kept);
      assert.equal(report.imageTokens, SHAPE.imageTokens);
      assert.deepEqual(report.coreNeuronIndices, Object.fromEntries(run.neurons.map((n, l) => [l, n])));
      assert.deepEqual(report.coreNeurons, Object.fromEntries(run.neurons.map((n, l) => [l, n!.length])));
    });
  }

  test('corematching-tokens decodes dense; corematching-neurons keeps every token', () => {
    const o = resolvePolicyOptions({ tokenLayer: 2, budget: 6, neuronLayers: [1, 3] });
    const tokens = drive(createPolicy('corematching-tokens', o, 4));
    assert.deepEqual(tokens.keptPositions, bruteCoreMatching(o).positions);
    assert.deepEqual(tokens.neurons, [null, null, null, null]);

    const neuronsPolicy = createPolicy('corematching-neurons', o, 4);
    const neurons = drive(neuronsPolicy);
    assert.equal(neurons.keptPositions.length, SHAPE.promptLength);
    assert.equal(neuronsPolicy.pruneEarlyKv, false);
    const all = Array.from({ length: SHAPE.promptLength }, (_, i) => i);
    assert.deepEqual(neurons.neurons[0], null);
    assert.deepEqual(neurons.neurons[1], sentence(all.map((p) => rowOf(1, p, SHAPE.D)), SHAPE.D, 0.2, 0.4));
    assert.deepEqual(neurons.neurons[3], sentence(all.map((p) => rowOf(3, p, SHAPE.D)), SHAPE.D, 0.2, 0.4));
    assert.deepEqual(neuronsPolicy.report().keptImageTokens, Array.from({ length: SHAPE.imageTokens }, (_, i) => i));
    assert.deepEqual(neuronsPolicy.report().coreNeurons, { 1: neurons.neurons[1]!.length, 3: neurons.neurons[3]!.length });
  });

  test('extras are requested only where needed', () => {
    const p = createPolicy('corematching', { tokenLayer: 2, neuronLayers: [3] }, 4);
    p.begin(contextOf(SHAPE));
    assert.deepEqual([0, 1, 2, 3].map((l) => p.prefillTaps(l)), [{}, { ffnActivations: true }, {}, { ffnActivations: true }]);
    const t = createPolicy('corematching-tokens', { tokenLayer: 2, pruneEarlyKv: true }, 4);
    assert.equal(t.pruneEarlyKv, true);
  });

  test('neuronLayers middle = floor(3N/16) <= l < floor(27N/32)', () => {
    assert.deepEqual(neuronLayerIndices('middle', 32), Array.from({ length: 21 }, (_, i) => 6 + i));
    assert.deepEqual(neuronLayerIndices('middle', 24), Array.from({ length: 20 - 4 }, (_, i) => 4 + i));
    assert.deepEqual(neuronLayerIndices('all', 3), [0, 1, 2]);
    assert.deepEqual(neuronLayerIndices([5, 1], 3), [5, 1].filter((l) => l < 3));
  });
});

describe('attention policies', () => {
  function lastRowProbs(l: number) {
    const T = SHAPE.promptLength;
    return Array.from({ length: SHAPE.heads }, (_, hh) => {
      const raw = Array.from({ length: T }, (_, t) => attn(l, hh, t));
      const sum = raw.reduce((a, b) => a + b, 0);
      return raw.map((x) => Math.fround(x / sum));
    });
  }
  for (const budget of ['knee', 6, 0.3] as const) {
    test(`fastv budget ${budget}`, () => {
      const p = createPolicy('fastv', { tokenLayer: 2, budget }, 4);
      const run = drive(p);
      const probs = lastRowProbs(1);
      const scores = Array.from({ length: SHAPE.imageTokens }, (_, i) => probs.reduce((a, row) => a + row[SHAPE.imageStart + i]!, 0) / SHAPE.heads);
      assert.deepEqual(run.keptPositions, promptWith(budgetPick(scores, budget, 1)));
      assert.deepEqual(run.neurons, [null, null, null, null]);
    });
    test(`projection budget ${budget}`, () => {
      const p = createPolicy('projection', { tokenLayer: 3, budget }, 4);
      const run = drive(p);
      const probs = lastRowProbs(2);
      const T = SHAPE.promptLength;
      const scores = new Array<number>(SHAPE.imageTokens).fill(0);
      for (let hh = 0; hh < SHAPE.heads; hh++) {
        const kv = Math.floor(hh / (SHAPE.heads / SHAPE.kvHeads));
        const V = (t: number) => Array.from({ length: SHAPE.headDim }, (_, d) => Math.fround(value(2, kv, t, d)));
        const O = new Array<number>(SHAPE.headDim).fill(0);
        for (let t = 0; t < T; t++) V(t).forEach((x, d) => (O[d]! += probs[hh]![t]! * x));
        const norm = (x: number[]) => Math.sqrt(x.reduce((a, b) => a + b * b, 0));
        for (let i = 0; i < SHAPE.imageTokens; i++) {
          const v = V(SHAPE.imageStart + i);
          const cos = v.reduce((a, x, d) => a + x * O[d]!, 0) / (norm(v) * norm(O));
          scores[i]! += probs[hh]![SHAPE.imageStart + i]! * norm(v) * cos;
        }
      }
      const got = Array.from(p.imageTokenScores!()!);
      got.forEach((g, i) => assert.ok(Math.abs(g - scores[i]!) < 1e-9, `score ${i}: ${g} vs ${scores[i]}`));
      assert.deepEqual(run.keptPositions, promptWith(budgetPick(scores, budget, 1)));
    });
  }
  test('projection reads the head layout from the attention tap', () => {
    // Two key/value heads of size 3, or one of size 6, over the same numbers: different scores.
    const p = createPolicy('projection', { tokenLayer: 2, budget: 6 }, 4);
    const q = createPolicy('projection', { tokenLayer: 2, budget: 6 }, 4);
    drive(p);
    drive(q, { ...SHAPE, kvHeads: 1, headDim: 6 });
    assert.notDeepEqual(Array.from(p.imageTokenScores!()!), Array.from(q.imageTokenScores!()!));
  });
  test('an attention tap that does not match its head layout is an error', () => {
    const p = createPolicy('projection', { tokenLayer: 2 }, 4);
    p.begin(contextOf(SHAPE));
    const tap = { probs: new Float32Array(4 * 30), values: new Float32Array(2 * 30 * 3), tokens: 30, heads: 4, kvHeads: 2, headDim: 4 };
    assert.throws(() => p.afterAttention(1, tap), /key\/value heads/);
  });
});

describe('random policy', () => {
  test('seeded, uniform-looking, exactly K tokens, text kept', () => {
    const a = drive(createPolicy('random', { budget: 5, seed: 3 }, 4));
    const b = drive(createPolicy('random', { budget: 5, seed: 3 }, 4));
    const c = drive(createPolicy('random', { budget: 5, seed: 4 }, 4));
    assert.deepEqual(a.keptPositions, b.keptPositions);
    assert.notDeepEqual(a.keptPositions, c.keptPositions);
    assert.equal(a.keptPositions.length, SHAPE.promptLength - SHAPE.imageTokens + 5);
    const hits = new Array<number>(SHAPE.imageTokens).fill(0);
    for (let seed = 0; seed < 2000; seed++) {
      const p = createPolicy('random', { budget: 0.25, seed }, 4);
      drive(p);
      for (const i of p.report().keptImageTokens) hits[i]!++;
    }
    // each token is kept with probability 5/20: expect 500 of 2000
    for (const x of hits) assert.ok(x > 400 && x < 600, `${hits}`);
  });
  test('knee budget is an error', () => {
    assert.throws(() => createPolicy('random', {}, 4), (e: unknown) => e instanceof CorematchingError && /random needs budget/.test(e.message));
  });
});

describe('option validation', () => {
  const bad: [Partial<PolicyOptions>, RegExp][] = [
    [{ rho: 0 }, /rho must be a number in \(0, 1\], got 0/],
    [{ rho: 1.5 }, /rho must be/],
    [{ beta: -0.1 }, /beta must be/],
    [{ tokenLayer: 0 }, /tokenLayer must be/],
    [{ tokenLayer: 1.5 }, /tokenLayer must be/],
    [{ budget: 0 }, /budget must be/],
    [{ budget: 2.5 }, /budget must be/],
    [{ minKeep: 0 }, /minKeep must be/],
    [{ match: 'x' as 'core' }, /match must be 'active', 'core' or 'weighted', got "x"/],
    [{ reference: 'first' as 'last' }, /reference must be/],
    [{ neuronLayers: [1, -2] }, /neuronLayers must be/],
    [{ seed: -1 }, /seed must be/],
    [{ nonsense: 1 } as Partial<PolicyOptions>, /unknown sparsity option "nonsense"/],
  ];
  for (const [o, re] of bad) {
    test(`rejects ${JSON.stringify(o)}`, () => {
      assert.throws(() => resolvePolicyOptions(o), (e: unknown) => e instanceof CorematchingError && re.test(e.message));
    });
  }
  test('defaults', () => {
    assert.deepEqual(resolvePolicyOptions(), {
      rho: 0.2, beta: 0.4, tokenLayer: 2, reference: 'last', match: 'active', budget: 'knee', minKeep: 1, neuronLayers: 'middle', pruneEarlyKv: false, seed: 0, reportNeuronIndices: false,
    });
  });
  test('unknown policy lists the valid names', () => {
    assert.throws(() => createPolicy('sparse', {}, 4), (e: unknown) => e instanceof CorematchingError && e.message.includes(POLICY_NAMES.join(', ')));
  });
  test('tokenLayer past the last layer', () => {
    assert.throws(() => createPolicy('corematching', { tokenLayer: 4 }, 4), /tokenLayer 4 is past the last layer.*4 decoder layers/);
    assert.throws(() => createPolicy('fastv', { tokenLayer: 5 }, 4), /past the last layer/);
    // a neurons-only policy does not select tokens, so tokenLayer does not matter
    createPolicy('corematching-neurons', { tokenLayer: 9 }, 4);
    // checked again in begin() when the policy was made without the layer count
    assert.throws(() => drive(createPolicy('corematching', { tokenLayer: 4 })), /past the last layer/);
    assert.throws(() => createPolicy('corematching', { neuronLayers: [1, 4] }, 4), /neuronLayers .* layer 4/);
  });
  test('budget larger than the image tokens fails in begin()', () => {
    for (const name of ['corematching', 'corematching-tokens', 'fastv', 'projection', 'random']) {
      const p = createPolicy(name, { budget: 21 }, 4);
      assert.throws(() => drive(p), (e: unknown) => e instanceof CorematchingError && /budget 21 is larger than the 20 image tokens/.test(e.message), name);
    }
  });
  test('reference position outside the prompt', () => {
    assert.throws(() => drive(createPolicy('corematching', { reference: -31 }, 4)), /reference -31 is outside the prompt of 30 tokens/);
  });
  test('CLI strings', () => {
    /** The policy flags as `run`, `eval` and `visualize` parse them. */
    const parse = (...args: string[]) => {
      const command = addPolicyFlags(new Command()).exitOverride().configureOutput({ writeErr: () => {} });
      command.parse(args, { from: 'user' });
      return policyFromFlags(command.opts<PolicyFlags>()).policyOptions;
    };
    assert.deepEqual(
      parse('--rho', '0.3', '--beta', '0.5', '--token-layer', '3', '--reference', '-5', '--match', 'core', '--budget', '64', '--min-keep', '2', '--neuron-layers', '1, 2,7', '--prune-early-kv', '--seed', '9'),
      { rho: 0.3, beta: 0.5, tokenLayer: 3, reference: -5, match: 'core', budget: 64, minKeep: 2, neuronLayers: [1, 2, 7], pruneEarlyKv: true, seed: 9, reportNeuronIndices: false },
    );
    assert.equal(parse('--budget', '0.25').budget, 0.25);
    assert.equal(parse('--token-layer', '4').tokenLayer, 4);
    assert.equal(parse('--reference', 'text', '--neuron-layers', 'all').neuronLayers, 'all');
    assert.throws(() => parse('--rho', 'abc'), /--rho must be a number in \(0, 1\], got "abc"/);
    assert.throws(() => parse('--rho', '2'), /--rho must be a number in \(0, 1\], got 2/);
    assert.throws(() => parse('--token-layer', '2.5'), /--token-layer must be/);
    assert.throws(() => parse('--budget', 'lots'), /--budget must be/);
    assert.throws(() => parse('--neuron-layers', '1,x'), /--neuron-layers must be/);
    assert.throws(() => parse('--min-keep', '0'), /--min-keep must be/);
  });
});

describe('pool policy', () => {
  const GRID: Shape = { ...SHAPE, promptLength: 16 + 5 + 3, imageTokens: 16 };

  test('output grids: exact factor pairs closest to the grid, else the largest smaller count', () => {
    assert.deepEqual(pooledGrid(16, 16, 64), { rows: 8, cols: 8 });
    assert.deepEqual(pooledGrid(16, 16, 16), { rows: 4, cols: 4 });
    assert.deepEqual(pooledGrid(16, 16, 32), { rows: 8, cols: 4 }); // 4x8 and 8x4 tie: more rows
    assert.deepEqual(pooledGrid(4, 4, 6), { rows: 3, cols: 2 });
    assert.deepEqual(pooledGrid(4, 4, 5), { rows: 2, cols: 2 }); // 5 = 1x5 or 5x1 does not fit 4x4
    assert.deepEqual(pooledGrid(2, 8, 4), { rows: 1, cols: 4 });
  });

  test('windows cover the grid as adaptive_avg_pool2d does, and the kept token is each window\'s first', () => {
    for (const [height, rows] of [[16, 8], [7, 3], [4, 3], [5, 5]] as const) {
      const windows = poolWindows(height, height, rows, rows);
      const covered = new Set<number>();
      for (const w of windows) {
        assert.ok(w.rowEnd > w.rowStart && w.colEnd > w.colStart);
        for (let r = w.rowStart; r < w.rowEnd; r++) for (let c = w.colStart; c < w.colEnd; c++) covered.add(r * height + c);
      }
      assert.equal(covered.size, height * height, `${height} -> ${rows}: every cell in some window`);
      const firsts = windows.map((w) => w.rowStart * height + w.colStart);
      assert.deepEqual(firsts, [...new Set(firsts)].sort((a, b) => a - b), 'distinct, ascending');
    }
  });

  test('writes window means and keeps one token per window, before layer 0, text kept', () => {
    const p = createPolicy('pool', { budget: 4 }, 4);
    assert.equal(p.selectsTokensAt(0), true);
    assert.equal(p.selectsTokensAt(2), false);
    p.begin(contextOf(GRID));
    const hidden = 3;
    const features = Float32Array.from({ length: 16 * hidden }, (_, i) => Math.floor(i / hidden) * 10 + (i % hidden));
    p.mergeImageFeatures!(features, hidden);
    // 4x4 grid, 2x2 windows: token 0's window holds cells 0, 1, 4, 5 (values 0, 10, 40, 50 + d)
    assert.deepEqual(Array.from(features.subarray(0, hidden)), [25, 26, 27]);
    assert.deepEqual(Array.from(features.subarray(10 * hidden, 11 * hidden)), [125, 126, 127]);
    assert.deepEqual(p.report().keptImageTokens, [0, 2, 8, 10]);
    const keep = p.selectTokens(0)!;
    assert.deepEqual(keep, [0, 1, 2, 3, 5, 11, 13, ...Array.from({ length: 5 }, (_, i) => 19 + i)]);
    assert.equal(p.selectTokens(1), null);
  });

  test('knee budgets and non-square grids are errors', () => {
    assert.throws(() => createPolicy('pool', {}, 4), (e: unknown) => e instanceof CorematchingError && /pool needs budget/.test(e.message));
    assert.throws(() => drive(createPolicy('pool', { budget: 4 }, 4)), /square image-token grid, got 20/);
  });
});
