/** The model flags every command shares, and loading with a progress bar on stderr when it is a terminal. */
import { Presets, SingleBar } from 'cli-progress';
import { Option, type Command } from 'commander';
import type { WeightFormat } from '../graph/ops.js';
import { VisionLanguageModel, WEIGHT_FORMATS } from '../pipeline/vision-language-model.js';
import { defaultModelDir } from '../io/default-model.js';
import { positiveInt } from './options.js';

export interface ModelFlags {
  model?: string;
  threads?: number;
  weights: WeightFormat;
}

export function addModelFlags(command: Command, modelHelp: string): Command {
  return command
    .option('--model <dir>', modelHelp)
    .addOption(new Option('--weights <format>', 'linear weights: fp32, or int8 or int4 quantized at load time').choices(WEIGHT_FORMATS).default('fp32'))
    .option('--threads <n>', 'ONNX Runtime threads', positiveInt);
}

export async function loadWithProgress(flags: ModelFlags, quiet = false): Promise<VisionLanguageModel> {
  const bar = new SingleBar({ format: 'loading {bar} {value}/{total} layers', stream: process.stderr, clearOnComplete: true }, Presets.shades_classic);
  let started = false;
  const model = await VisionLanguageModel.load(flags.model ?? defaultModelDir(), {
    ...(flags.threads !== undefined ? { threads: flags.threads } : {}),
    weights: flags.weights,
    onProgress: (done, total) => {
      if (quiet || !process.stderr.isTTY) return;
      if (!started) bar.start(total, done);
      started = true;
      bar.update(done);
    },
  });
  if (started) bar.stop();
  return model;
}
