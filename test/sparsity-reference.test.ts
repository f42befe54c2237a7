/**
 * The sparsity policies run by the engine against an independent Python implementation
 * (scripts/make_sparsity_fixtures.py: transformers, hand-run decoder layers, numpy selection code)
 * on the committed random-weight checkpoints. Kept image tokens and per-layer core-neuron sets
 * must be equal, except near-ties that float rounding may flip: those are counted and logged, and
 * accepted only when the reference shows a decision within 1e-4 relative of a tie.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { decodeImage } from '../src/io/image.js';
import { VisionLanguageModel } from '../src/pipeline/vision-language-model.js';
import { createPolicy } from '../src/sparsity/create-policy.js';
import type { PolicyOptions } from '../src/sparsity/options.js';
import { fixturePath } from './helpers.js';

interface LayerReference {
  coreNeurons: number[];
  counts: number[];
  margin: number;
}
interface RunReference {
  policy: string;
  options: PolicyOptions;
  keptImageTokens: number[];
  imageScores?: number[];
  scoreMargin?: number;
  /** pool: the reference's greedy tokens after pooling, and each step's top-1 - top-2 logit. */
  greedyTokens?: number[];
  greedyMargins?: number[];
  layers: Record<string, LayerReference>;
}
interface SparsityFixture {
  model: string;
  photo: string;
  prompt: string;
  question: string | null;
  rawPrompt: boolean;
  inputIds: number[];
  imageTokens: number;
  numLayers: number;
  runs: RunReference[];
}

const TOLERANCE = 1e-4;
const dir = fixturePath('sparsity');
const fixtures = fs
  .readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .map((f) => ({ file: f, fx: JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as SparsityFixture }));
const nearTies: string[] = [];

const sameSet = (a: number[], b: number[]) => a.length === b.length && a.every((x, i) => x === b[i]);
const difference = (a: number[], b: number[]) => [...a.filter((x) => !b.includes(x)), ...b.filter((x) => !a.includes(x))];

/** Compares the kept image tokens; true when they are equal, a logged near-tie when not (else fails). */
function checkTokens(where: string, run: RunReference, kept: number[], scores: Float64Array | null): boolean {
  const ref = run.imageScores!;
  assert.ok(scores !== null, `${where}: the policy made no selection`);
  const integer = run.policy.startsWith('corematching');
  const scale = Math.max(...ref.map(Math.abs));
  const scoresAgree = integer ? ref.every((r, i) => r === scores[i]) : ref.every((r, i) => Math.abs(r - scores[i]!) <= TOLERANCE * scale);
  if (scoresAgree && sameSet(kept, run.keptImageTokens)) return true;
  if (integer) {
    // Integer scores differ only when a token-level decision flipped: the reference must show one within tolerance.
    assert.ok((run.scoreMargin ?? Infinity) < TOLERANCE, `${where}: scores ${[...scores]} != reference ${ref}, kept ${kept} != ${run.keptImageTokens}`);
  } else {
    assert.ok(scoresAgree, `${where}: scores ${[...scores]} differ from the reference ${ref} by more than ${TOLERANCE} relative`);
    // A swap of tied candidates: every token kept by one side only scores within tolerance of the other side's.
    const diff = difference(kept, run.keptImageTokens);
    const diffScores = diff.map((i) => ref[i]!);
    const spread = Math.max(...diffScores) - Math.min(...diffScores);
    assert.ok(spread <= TOLERANCE * scale, `${where}: kept ${kept} != reference ${run.keptImageTokens} (differing scores ${diffScores})`);
  }
  nearTies.push(`${where}: kept image tokens (engine ${kept}, reference ${run.keptImageTokens})`);
  return false;
}

function checkNeurons(where: string, layer: LayerReference, engine: number[] | undefined): void {
  assert.ok(engine !== undefined, `${where}: no core neurons reported`);
  if (sameSet(engine, layer.coreNeurons)) return;
  const boundary = Math.min(...layer.coreNeurons.map((n) => layer.counts[n]!));
  const diff = difference(engine, layer.coreNeurons);
  const nearBoundary = diff.every((n) => Math.abs(layer.counts[n]! - boundary) <= 1);
  assert.ok(layer.margin < TOLERANCE && nearBoundary, `${where}: core neurons ${engine} != reference ${layer.coreNeurons}`);
  nearTies.push(`${where}: core neurons differ in ${diff} (reference margin ${layer.margin.toExponential(1)})`);
}

for (const modelName of [...new Set(fixtures.map((f) => f.fx.model))]) {
  describe(`sparsity policies against the Python reference: ${modelName}`, () => {
    let vlm: VisionLanguageModel;
    before(async () => {
      vlm = await VisionLanguageModel.load(fixturePath('models', modelName), { threads: 2 });
    });
    after(async () => {
      await vlm.release();
    });

    for (const { file, fx } of fixtures.filter((f) => f.fx.model === modelName)) {
      test(file, async () => {
        const image = await decodeImage(fixturePath('photos', fx.photo));
        let compared = 0;
        for (const [r, run] of fx.runs.entries()) {
          const where = `${file} run ${r} ${run.policy} ${JSON.stringify(run.options)}`;
          const policy = createPolicy(run.policy, { ...run.options, reportNeuronIndices: true }, fx.numLayers);
          if (run.policy === 'pool') {
            // Pooling changes the image rows themselves: the greedy tokens that follow are the check.
            const pooled = await vlm.generate({ image, prompt: fx.rawPrompt ? fx.prompt : fx.question!, rawPrompt: fx.rawPrompt, maxNewTokens: 4, ignoreEos: true, policy });
            assert.deepEqual(pooled.sparsity.keptImageTokens, run.keptImageTokens, `${where}: kept image tokens`);
            assert.ok(run.greedyMargins!.every((m) => m > 1e-3), `${where}: the reference's greedy margins ${run.greedyMargins} are too small to compare`);
            assert.deepEqual(pooled.tokens, run.greedyTokens, `${where}: greedy tokens after pooling`);
            compared++;
            continue;
          }
          const result = await vlm.generate({
            image,
            prompt: fx.rawPrompt ? fx.prompt : fx.question!,
            rawPrompt: fx.rawPrompt,
            maxNewTokens: 1,
            ignoreEos: true,
            policy,
          });
          assert.deepEqual(result.promptTokens, fx.inputIds, 'input ids');
          const report = result.sparsity;
          assert.equal(report.imageTokens, fx.imageTokens);
          const selects = run.policy !== 'corematching-neurons';
          const tokensMatch = selects
            ? checkTokens(where, run, report.keptImageTokens, (policy.imageTokenScores?.() ?? null) as Float64Array | null)
            : (assert.deepEqual(report.keptImageTokens, run.keptImageTokens), true);
          if (!run.policy.startsWith('corematching') || run.policy === 'corematching-tokens') continue;
          for (let l = 0; l < fx.numLayers; l++) {
            // After a near-tie in the token selection, later layers see other tokens: nothing to compare.
            if (!tokensMatch && l >= run.options.tokenLayer) continue;
            checkNeurons(`${where} layer ${l}`, run.layers[l]!, report.coreNeuronIndices?.[l]);
            assert.equal(report.coreNeurons[l], report.coreNeuronIndices![l]!.length);
            compared++;
          }
        }
        assert.ok(compared > 0);
      });
    }
  });
}

after(() => {
  console.log(`sparsity reference: ${nearTies.length} near-tie(s)${nearTies.length ? `:\n  ${nearTies.join('\n  ')}` : ''}`);
});
