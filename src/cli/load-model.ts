/** Loads a model for a command, with a progress bar on stderr when it is a terminal. */
import { Presets, SingleBar } from 'cli-progress';
import { VisionLanguageModel } from '../pipeline/vision-language-model.js';

export async function loadWithProgress(dir: string, threads: number | undefined, quiet = false): Promise<VisionLanguageModel> {
  const bar = new SingleBar({ format: 'loading {bar} {value}/{total} layers', stream: process.stderr, clearOnComplete: true }, Presets.shades_classic);
  let started = false;
  const model = await VisionLanguageModel.load(dir, {
    ...(threads !== undefined ? { threads } : {}),
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
