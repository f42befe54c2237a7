/** The model flags every command shares, and loading with a progress bar on stderr when it is a terminal. */
import { Presets, SingleBar } from 'cli-progress';
import { Option, type Command } from 'commander';
import type { WeightFormat } from '../graph/ops.js';
import { type LoadOptions, VisionLanguageModel, WEIGHT_FORMATS } from '../pipeline/vision-language-model.js';
import { defaultModelDir } from '../io/default-model.js';
import { resolveModelDir } from '../io/hub.js';
import type { DecodeKernel } from '../models/native-decode.js';
import { positiveInt } from './options.js';

export interface ModelFlags {
  model?: string;
  threads?: number;
  weights: WeightFormat;
  /** --cache-dir DIR */
  cacheDir?: string;
  /** false with --no-cache */
  cache?: boolean;
  decodeKernel?: DecodeKernel;
}

export const MODEL_HELP = 'checkpoint folder, or a Hugging Face model id org/name (from the hub cache; downloaded unless HF_HUB_OFFLINE) (default: the shipped model)';

export function addModelFlags(command: Command): Command {
  return command
    .option('--model <dir|org/name>', MODEL_HELP)
    .addOption(new Option('--weights <format>', 'linear weights: fp32, or int8 or int4 quantized at load time').choices(WEIGHT_FORMATS).default('fp32'))
    .option('--threads <n>', 'ONNX Runtime threads', positiveInt)
    .option('--cache-dir <dir>', 'where int8/int4 keep converted weights between loads (default: $COREMATCHING_CACHE or ~/.cache/corematching)')
    .option('--no-cache', 'convert int8/int4 weights at every load, keeping nothing on disk')
    .addOption(new Option('--decode-kernel <kernel>', "what runs int8/int4 decode steps: native (the project's kernels, where built) or ort").choices(['native', 'ort']));
}

/** The load options the model flags give. */
export function loadOptions(flags: ModelFlags): LoadOptions {
  return {
    weights: flags.weights,
    ...(flags.threads !== undefined ? { threads: flags.threads } : {}),
    ...(flags.cache === false ? { cacheDir: false } : flags.cacheDir !== undefined ? { cacheDir: flags.cacheDir } : {}),
    ...(flags.decodeKernel !== undefined ? { decodeKernel: flags.decodeKernel } : {}),
  };
}

function progressBar(format: string): SingleBar {
  return new SingleBar({ format, stream: process.stderr, clearOnComplete: true }, Presets.shades_classic);
}

/** The folder `--model` names: itself, the shipped model, or a hub model's snapshot (downloading with a progress bar on a terminal). */
export async function modelFolder(model: string | undefined, quiet = false): Promise<string> {
  if (model === undefined) return defaultModelDir();
  const bar = progressBar('downloading {file} {bar} {percentage}% of {size}');
  let current: string | null = null;
  try {
    return await resolveModelDir(model, {
      onDownload: (file, done, total) => {
        if (quiet || !process.stderr.isTTY) return;
        if (file !== current) {
          if (current !== null) bar.stop();
          bar.start(total, done, { file, size: `${(total / 2 ** 20).toFixed(1)} MiB` });
          current = file;
        }
        bar.update(done);
      },
    });
  } finally {
    if (current !== null) bar.stop();
  }
}

export async function loadWithProgress(flags: ModelFlags, quiet = false): Promise<VisionLanguageModel> {
  const bar = progressBar('loading {bar} {value}/{total} layers');
  let started = false;
  const model = await VisionLanguageModel.load(await modelFolder(flags.model, quiet), {
    ...loadOptions(flags),
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
