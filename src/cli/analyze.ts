/** `corematching analyze ...`: the paper's measurements on a checkpoint, as a table, JSON and pictures. */
import type { Command } from 'commander';
import { addCriteriaCommand } from './analyze-criteria.js';
import { addOrthogonalityCommand } from './analyze-orthogonality.js';

export function analyzeCommand(program: Command): void {
  const analyze = program.command('analyze').description("The paper's measurements on a checkpoint: tables, JSON and pictures.");
  addOrthogonalityCommand(analyze);
  addCriteriaCommand(analyze);
}
