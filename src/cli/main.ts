#!/usr/bin/env node
/** The `corematching` command. Thin: parse, call the library, print. */
import { Command } from 'commander';
import { CorematchingError } from '../io/errors.js';
import { evalCommand } from './eval.js';
import { runCommand } from './run.js';
import { visualizeCommand } from './visualize.js';

const program = new Command()
  .name('corematching')
  .description('Run LLaVA-family vision-language models from Hugging Face checkpoint folders on CPU.')
  .showHelpAfterError();

runCommand(program);
evalCommand(program);
visualizeCommand(program);

try {
  await program.parseAsync(process.argv);
} catch (error) {
  // Bad input is reported in one line; anything else too, with the stack only on request.
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`error: ${message}\n`);
  if (!(error instanceof CorematchingError) && process.env.COREMATCHING_DEBUG && error instanceof Error) {
    process.stderr.write(`${error.stack}\n`);
  }
  process.exitCode = 1;
}
