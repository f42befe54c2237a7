/**
 * Every file the engine reads goes through here: it must be a regular file (not a folder, a FIFO
 * that would block, or a device such as /dev/zero that never ends) of at most `limit` bytes, so a
 * bad path ends in an error naming it, before anything is read.
 */
import fs from 'node:fs';
import { readFile } from 'node:fs/promises';
import { CorematchingError } from './errors.js';

/** Largest JSON or template file read whole (tokenizer.json files run to ~20 MB). */
const TEXT_FILE_LIMIT = 256 * 2 ** 20;
/** Largest image file read whole. */
export const IMAGE_FILE_LIMIT = 256 * 2 ** 20;

/** The size of `file` after checking it is a regular file within `limit`; `what` names it in errors. */
export function checkRegularFile(file: string, what: string, limit = Infinity): number {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CorematchingError(code === 'ENOENT' ? `${what} not found` : `cannot read ${what} (${code})`, file);
  }
  if (stat.isDirectory()) throw new CorematchingError(`${what} is a folder; expected a file`, file);
  if (!stat.isFile()) throw new CorematchingError(`${what} is not a regular file (a pipe, socket or device); expected a file`, file);
  if (stat.size > limit) throw new CorematchingError(`${what} is ${stat.size} bytes; the limit is ${limit}`, file);
  return stat.size;
}

export function readRegularTextFile(file: string, what: string, limit = TEXT_FILE_LIMIT): string {
  checkRegularFile(file, what, limit);
  return fs.readFileSync(file, 'utf8');
}

export async function readRegularFileBytes(file: string, what: string, limit: number): Promise<Buffer> {
  checkRegularFile(file, what, limit);
  return readFile(file);
}
