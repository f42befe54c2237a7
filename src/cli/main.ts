#!/usr/bin/env node
/** The `corematching` command. Thin: parse, call the library, print. */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { Command } from 'commander';
import { CorematchingError } from '../io/errors.js';
import { ablateCommand } from './ablate.js';
import { analyzeCommand } from './analyze.js';
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
  .showHelpAfterError();

runCommand(program);
evalCommand(program);
visualizeCommand(program);
analyzeCommand(program);
ablateCommand(program);
sweepNeuronsCommand(program);
serveCommand(program);

/**
 * onnxruntime-node 1.30 crashes (SIGSEGV) creating a session in a process whose command line
 * totals more than ~28.9k characters. A longer command line (a long --prompt) is handed to a child
 * process through the environment instead, so the process that runs ONNX Runtime has a short one.
 */
const COMMAND_LINE_LIMIT = 16_000;
const HANDED_ARGV = 'COREMATCHING_ARGV';

function commandLine(): string[] {
  const handed = process.env[HANDED_ARGV];
  if (handed !== undefined) {
    delete process.env[HANDED_ARGV];
    return JSON.parse(handed) as string[];
  }
  if (process.argv.reduce((n, a) => n + a.length + 1, 0) <= COMMAND_LINE_LIMIT) return process.argv;
  const child = spawnSync(process.execPath, [...process.execArgv, process.argv[1]!], {
    stdio: 'inherit',
    env: { ...process.env, [HANDED_ARGV]: JSON.stringify(process.argv) },
  });
  process.exit(child.status ?? 1);
}

try {
  await program.parseAsync(commandLine());
} catch (error) {
  // Bad input is reported in one line; anything else too, with the stack only on request.
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`error: ${message}\n`);
  if (!(error instanceof CorematchingError) && process.env.COREMATCHING_DEBUG && error instanceof Error) {
    process.stderr.write(`${error.stack}\n`);
  }
  process.exitCode = 1;
}
