/** JSON files of a checkpoint folder that must each hold one object; errors name the file. */
import fs from 'node:fs';
import { CorematchingError } from './errors.js';

export type JsonObject = Record<string, unknown>;

export function readJsonObject(file: string): JsonObject {
  let value: unknown;
  try {
    value = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw new CorematchingError(missing ? 'file not found' : `invalid JSON: ${(err as Error).message}`, file);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new CorematchingError('expected a JSON object at the top level', file);
  }
  return value as JsonObject;
}

/** The object in `file`, or null when there is no such file. */
export function readOptionalJsonObject(file: string): JsonObject | null {
  return fs.existsSync(file) ? readJsonObject(file) : null;
}
