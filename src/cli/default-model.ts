/** Where the model that ships with corematching lives, relative to the installed package. */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CorematchingError } from '../io/errors.js';

export function defaultModelDir(): string {
  // dist/src/cli/ -> package root
  const dir = fileURLToPath(new URL('../../../models/default', import.meta.url));
  if (!fs.existsSync(dir)) throw new CorematchingError('no --model given and no default model is installed; pass --model <checkpoint folder>', dir);
  return dir;
}
