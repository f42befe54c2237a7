/**
 * A question-answering evaluation set: <dir>/questions.jsonl, one
 * {"image", "question", "answer", "type"} object per line, image paths relative to <dir>.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CorematchingError } from './errors.js';
import { readRegularTextFile } from './regular-file.js';

export interface EvalItem {
  /** Absolute image path. */
  image: string;
  question: string;
  answer: string;
  type: string;
}

export function readEvalSet(dir: string): EvalItem[] {
  const file = path.join(path.resolve(dir), 'questions.jsonl');
  if (!fs.existsSync(file)) throw new CorematchingError('file not found; an evaluation set is a folder with questions.jsonl and its images', file);
  const items: EvalItem[] = [];
  readRegularTextFile(file, 'questions.jsonl')
    .split('\n')
    .forEach((line, i) => {
      if (line.trim() === '') return;
      let row: unknown;
      try {
        row = JSON.parse(line);
      } catch (e) {
        throw new CorematchingError(`line ${i + 1} is not valid JSON (${(e as Error).message})`, file);
      }
      const r = row as Record<string, unknown>;
      for (const key of ['image', 'question', 'answer', 'type']) {
        if (typeof r[key] !== 'string') throw new CorematchingError(`line ${i + 1}: field "${key}" must be a string`, file);
      }
      items.push({ image: path.resolve(path.dirname(file), r.image as string), question: r.question as string, answer: r.answer as string, type: r.type as string });
    });
  if (items.length === 0) throw new CorematchingError('no questions in the file', file);
  return items;
}
