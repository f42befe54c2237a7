/** `corematching serve`: the model behind an OpenAI-compatible API and a page at /. */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { CorematchingError } from '../io/errors.js';
import { VisionLanguageModel } from '../pipeline/vision-language-model.js';
import { CorematchingServer } from '../server/server.js';
import { addModelFlags, loadOptions, modelFolder, type ModelFlags } from './load-model.js';
import { port, positiveInt, positiveNumber } from './options.js';
import { addPolicyFlags, policyFromFlags, type PolicyFlags } from './policy-flags.js';

interface ServeFlags extends ModelFlags, PolicyFlags {
  host: string;
  port: number;
  apiKey?: string;
  allowFiles?: string;
  maxBodyMb: number;
  maxImagePixels: number;
  maxPromptTokens?: number;
  maxTokens: number;
  timeout: number;
  queue: number;
}

export function serveCommand(program: Command): void {
  const command = addModelFlags(program.command('serve').description('Serve the model over an OpenAI-compatible HTTP API, with a chat page at /.'))
    .option('--host <address>', 'address to listen on (loopback unless told otherwise)', '127.0.0.1')
    .option('--port <n>', 'port (0: any free one)', port, 8080)
    .option('--api-key <key>', 'require "Authorization: Bearer <key>" on every /v1 request')
    .option('--allow-files <dir>', 'let image_url name local files, confined to this folder')
    .option('--max-body-mb <n>', 'largest request body (and image) in MiB', positiveNumber, 20)
    .option('--max-image-pixels <n>', 'largest decoded image, in pixels', positiveInt, 4096 * 4096)
    .option('--max-prompt-tokens <n>', "largest prompt in tokens, the image's included (default: the model's context)", positiveInt)
    .option('--max-tokens <n>', 'cap on max_tokens, and its default', positiveInt, 512)
    .option('--timeout <seconds>', "wall-time limit of one request's generation", positiveNumber, 300)
    .option('--queue <n>', 'requests waiting or running before new ones get 429', positiveInt, 16);
  addPolicyFlags(command).action(async (o: ServeFlags) => {
    const { policy, policyOptions } = policyFromFlags(o);
    if (o.allowFiles !== undefined && !(fs.existsSync(o.allowFiles) && fs.statSync(o.allowFiles).isDirectory())) {
      throw new CorematchingError('--allow-files must name an existing folder', o.allowFiles);
    }
    const dir = await modelFolder(o.model);
    const server = await CorematchingServer.start(
      () => VisionLanguageModel.load(dir, loadOptions(o)),
      {
        host: o.host,
        port: o.port,
        modelName: o.model !== undefined && dir !== o.model ? o.model : path.basename(path.resolve(dir)),
        ...(o.apiKey !== undefined ? { apiKey: o.apiKey } : {}),
        allowFiles: o.allowFiles === undefined ? null : path.resolve(o.allowFiles),
        maxBodyBytes: Math.round(o.maxBodyMb * 2 ** 20),
        maxImagePixels: o.maxImagePixels,
        maxPromptTokens: o.maxPromptTokens ?? Number.MAX_SAFE_INTEGER,
        maxTokens: o.maxTokens,
        timeoutSeconds: o.timeout,
        queueLimit: o.queue,
        policy,
        policyOptions,
      },
    );
    process.stderr.write(`corematching: loading ${dir}; listening on ${server.url}\n`);
    await server.loaded;
    process.stderr.write(`corematching: model loaded; open ${server.url}/ or POST ${server.url}/v1/chat/completions\n`);
    const stop = () => void server.close().then(() => process.exit(0));
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
