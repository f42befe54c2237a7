/**
 * A question-answering evaluation set: <dir>/questions.jsonl, one
 * {"image", "question", "answer", "type"} object per line, image paths relative to <dir>; and,
 * where scripts/scenes.py wrote it, <dir>/targets.jsonl: per line the pixel boxes of the objects
 * that question names.
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

/** Pixel boxes [x0, y0, x1, y1] of the objects each question names, aligned with questions.jsonl. */
export function readTargets(dir: string, questions: number): [number, number, number, number][][] {
  const file = path.join(path.resolve(dir), 'targets.jsonl');
  if (!fs.existsSync(file)) throw new CorematchingError('file not found; write the set with scripts/scenes.py, which records the objects each question names', file);
  const lines = readRegularTextFile(file, 'targets.jsonl').split('\n').filter((line) => line.trim() !== '');
  if (lines.length !== questions) throw new CorematchingError(`${lines.length} lines, but questions.jsonl has ${questions}`, file);
  return lines.map((line, i) => {
    let boxes: unknown;
    try {
      boxes = (JSON.parse(line) as Record<string, unknown> | null)?.boxes;
    } catch (e) {
      throw new CorematchingError(`line ${i + 1} is not valid JSON (${(e as Error).message})`, file);
    }
    const valid = Array.isArray(boxes) && boxes.every((b) => Array.isArray(b) && b.length === 4 && b.every((x) => typeof x === 'number' && Number.isFinite(x)));
    if (!valid) throw new CorematchingError(`line ${i + 1}: "boxes" must be a list of [x0, y0, x1, y1] number lists`, file);
    return boxes as [number, number, number, number][];
  });
}
