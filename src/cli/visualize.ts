/** `corematching visualize`: which image tokens a policy keeps for a question, as a picture. */
import fs from 'node:fs';
import type { Command } from 'commander';
import { CorematchingError } from '../io/errors.js';
import { decodeImage } from '../io/image.js';
import { renderTokenMap } from '../pipeline/token-map.js';
import { createPolicy } from '../sparsity/create-policy.js';
import { addModelFlags, loadWithProgress, type ModelFlags } from './load-model.js';
import { addPolicyFlags, policyFromFlags, type PolicyFlags } from './policy-flags.js';

interface VisualizeOptions extends PolicyFlags, ModelFlags {
  image: string;
  prompt: string;
  out: string;
}

export function visualizeCommand(program: Command): void {
  const command = addModelFlags(program.command('visualize').description('Draw the image with the kept image tokens highlighted, beside a heat map of the token scores.'))
    .requiredOption('--image <file>', 'image file')
    .requiredOption('--prompt <text>', 'the question')
    .requiredOption('--out <file>', 'output PNG');
  addPolicyFlags(command, 'corematching').action(async (o: VisualizeOptions) => {
    const { policy: name, policyOptions } = policyFromFlags(o);
    if (name === 'dense' || name === 'corematching-neurons') throw new CorematchingError(`policy ${name} keeps every image token; visualize needs a token policy`);
    const vlm = await loadWithProgress(o);
    const c = vlm.config;
    const policy = createPolicy(name, policyOptions, c.text.numHiddenLayers);
    const image = await decodeImage(o.image);
    const result = await vlm.generate({ image, prompt: o.prompt, maxNewTokens: 16, policy });
    const grid = Math.floor(c.vision.imageSize / c.vision.patchSize);
    // With CLIP and the `full` strategy the first image token is CLS, which has no place on the grid.
    const skip = result.imageTokens - grid * grid;
    if (skip !== 0 && skip !== 1) throw new CorematchingError(`${result.imageTokens} image tokens do not form a ${grid}x${grid} grid`);
    const scores = policy.imageTokenScores?.() ?? null;
    const png = await renderTokenMap({
      view: vlm.processor.imageProcessor.modelView(image),
      grid,
      patch: c.vision.patchSize,
      kept: result.sparsity.keptImageTokens.map((t) => t - skip).filter((t) => t >= 0),
      scores: scores === null ? null : Array.from(scores).slice(skip),
      scoreLabel: `${name} score`,
      caption: `Q: ${o.prompt}   A: ${result.text.trim()}\n${name}: kept ${result.sparsity.keptImageTokens.length} of ${result.imageTokens} image tokens`,
    });
    fs.writeFileSync(o.out, png);
    process.stdout.write(`${result.text.trim()}\nwrote ${o.out} (kept ${result.sparsity.keptImageTokens.length}/${result.imageTokens} image tokens)\n`);
  });
}
