/**
 * What each weight format costs in accuracy, against transformers' fp32 references on every
 * committed fixture (test/fixtures/references): relative L2 error of the last prompt position's
 * logits, and how many of the reference's greedy tokens come out the same before the first
 * difference. Prints a table and writes JSON.
 *
 *   npm run bench:formats
 */
import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import type { WeightFormat } from '../src/graph/ops.js';
import { decodeImage } from '../src/io/image.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { VisionLanguageModel, WEIGHT_FORMATS } from '../src/pipeline/vision-language-model.js';

interface Reference {
  model: string;
  photo: string;
  question: string | null;
  prompt: string;
  rawPrompt: boolean;
  inputIds: number[];
  greedyTokens: number[];
}

const program = new Command()
  .option('--references <dir>', 'reference folder', 'test/fixtures/references')
  .option('--out <file>', 'JSON output', 'bench/results/format-accuracy.json')
  .parse();
const o = program.opts<{ references: string; out: string }>();

const relativeL2 = (a: Float32Array, b: Float32Array) => {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) [num, den] = [num + (a[i]! - b[i]!) ** 2, den + b[i]! ** 2];
  return Math.sqrt(num / den);
};
const agreeing = (a: number[], b: number[]) => {
  const i = a.findIndex((t, j) => t !== b[j]);
  return i < 0 ? a.length : i;
};

const files = fs.readdirSync(o.references).filter((f) => f.includes('__') && f.endsWith('.json'));
const rows: { format: WeightFormat; reference: string; logitError: number; greedyAgreeing: number; greedyTokens: number }[] = [];
for (const format of WEIGHT_FORMATS) {
  const byModel = new Map<string, VisionLanguageModel>();
  for (const file of files) {
    const ref = JSON.parse(fs.readFileSync(path.join(o.references, file), 'utf8')) as Reference;
    if (!byModel.has(ref.model)) byModel.set(ref.model, await VisionLanguageModel.load(path.join('test/fixtures/models', ref.model), { weights: format, threads: 2 }));
    const vlm = byModel.get(ref.model)!;
    const tensors = new SafetensorsFile(path.join(o.references, file.replace(/\.json$/, '.safetensors')));
    const image = await decodeImage(path.join('test/fixtures/photos', ref.photo));
    const ask = { image, prompt: ref.rawPrompt ? ref.prompt : ref.question!, rawPrompt: ref.rawPrompt, ignoreEos: true };
    const result = await vlm.generate({ ...ask, maxNewTokens: ref.greedyTokens.length });
    const features = await vlm.model.imageFeatures(vlm.processor.imageProcessor.preprocess(image).pixelValues);
    const logits = await vlm.model.lastPromptLogits(result.promptTokens, features, result.promptTokens.indexOf(vlm.config.imageTokenIndex));
    rows.push({ format, reference: file, logitError: relativeL2(logits, tensors.read('last_logits')), greedyAgreeing: agreeing(result.tokens, ref.greedyTokens), greedyTokens: ref.greedyTokens.length });
    tensors.close();
  }
  for (const vlm of byModel.values()) await vlm.release();
}

console.log('| weights | reference | last-logit relative L2 vs transformers fp32 | greedy tokens equal before the first difference |\n|---|---|---|---|');
for (const r of rows) console.log(`| ${r.format} | ${r.reference.replace(/\.json$/, '')} | ${r.logitError.toExponential(2)} | ${r.greedyAgreeing} of ${r.greedyTokens} |`);
fs.mkdirSync(path.dirname(o.out), { recursive: true });
fs.writeFileSync(o.out, `${JSON.stringify({ date: new Date().toISOString(), rows }, null, 2)}\n`);
