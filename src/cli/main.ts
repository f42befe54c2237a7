#!/usr/bin/env node
/** The `corematching` command. Thin: parse, call the library, print. */
import fs from 'node:fs';
import { Command } from 'commander';
import { CorematchingError } from '../io/errors.js';
import { ablateCommand } from './ablate.js';
import { analyzeCommand } from './analyze.js';
import { chatCommand } from './chat.js';
import { evalCommand } from './eval.js';
import { runCommand } from './run.js';
import { serveCommand } from './serve.js';
import { sweepNeuronsCommand } from './sweep-neurons.js';
import { visualizeCommand } from './visualize.js';

// dist/src/cli/ -> the package's own package.json
const { version } = JSON.parse(fs.readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };

const program = new Command()
  .name('corematching')
  .description('Run LLaVA-family vision-language models from Hugging Face checkpoint folders on CPU.')
  .version(version)
  .showHelpAfterError("(add --help for the command's options)");

runCommand(program);
chatCommand(program);
evalCommand(program);
visualizeCommand(program);
analyzeCommand(program);
ablateCommand(program);
sweepNeuronsCommand(program);
serveCommand(program);

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
