/** Where the model that ships with corematching lives, relative to the installed package (`VisionLanguageModel.load()` without a folder). */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CorematchingError } from './errors.js';

export function defaultModelDir(): string {
  // dist/src/io/ -> package root
  const dir = fileURLToPath(new URL('../../../models/default', import.meta.url));
  if (!fs.existsSync(dir)) throw new CorematchingError('no model folder given and the shipped model is not installed (models/default in the package); pass a checkpoint folder (--model on the command line)', dir);
  return dir;
}
