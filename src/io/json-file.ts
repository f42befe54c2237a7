/** JSON files of a checkpoint folder that must each hold one object; errors name the file. */
import fs from 'node:fs';
import { CorematchingError } from './errors.js';
import { readRegularTextFile } from './regular-file.js';

export type JsonObject = Record<string, unknown>;

export function readJsonObject(file: string): JsonObject {
  const text = readRegularTextFile(file, 'file');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new CorematchingError(`invalid JSON: ${(err as Error).message}`, file);
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
