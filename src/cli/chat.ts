/**
 * `corematching chat`: a conversation in the terminal, turns kept in the KV cache (the shape of
 * llama-mtmd-cli and mlx_lm.chat). Lines are questions; /image FILE starts over about another
 * image, /reset forgets the conversation, /quit (or end of input) leaves.
 */
import readline from 'node:readline';
import type { Command } from 'commander';
import { CorematchingError } from '../io/errors.js';
import { decodeImage, type RgbImage } from '../io/image.js';
import { ChatSession } from '../pipeline/chat-session.js';
import { addModelFlags, loadWithProgress, type ModelFlags } from './load-model.js';
import { addPolicyFlags, policyFromFlags, type PolicyFlags } from './policy-flags.js';
import { addSamplingFlags, samplingFromFlags, type SamplingFlags } from './sampling-flags.js';

interface ChatFlags extends ModelFlags, PolicyFlags, SamplingFlags {
  image?: string;
}

const HELP = 'type a question; /image FILE talks about another image, /reset forgets the conversation, /quit leaves';

export function chatCommand(program: Command): void {
  const command = addModelFlags(program.command('chat').description(`A multi-turn conversation about an image in the terminal (${HELP}).`))
    .option('--image <file>', 'the image to talk about (without it: text only until /image)');
  addPolicyFlags(addSamplingFlags(command)).action(async (o: ChatFlags) => {
    const { policy, policyOptions } = policyFromFlags(o);
    // The image is read before the model loads, so a wrong path fails at once.
    const image: RgbImage | undefined = o.image === undefined ? undefined : await decodeImage(o.image);
    const vlm = await loadWithProgress(o);
    const session = new ChatSession(vlm, { maxNewTokens: o.maxNewTokens, sampling: samplingFromFlags(o), policy, policyOptions }, image);
    const interactive = process.stdin.isTTY === true;
    if (interactive) process.stderr.write(`${HELP}\n`);
    const lines = readline.createInterface({ input: process.stdin, terminal: interactive, ...(interactive ? { prompt: '> ' } : {}) });
    lines.prompt();
    try {
      for await (const raw of lines) {
        const line = raw.trim();
        if (line === '/quit' || line === '/exit') break;
        if (line === '' || (await runChatCommand(line, session))) {
          lines.prompt();
          continue;
        }
        const result = await session.send(line, (text) => process.stdout.write(text));
        const s = result.stats;
        process.stdout.write('\n');
        process.stderr.write(
          `[${s.promptTokenCount} prompt tokens, ${s.reusedPromptTokens} of them from the cache; ${s.newTokenCount} new] ` +
            `first token ${s.firstTokenMs.toFixed(0)} ms, decode ${s.decodeTokensPerSecond.toFixed(1)} tokens/s\n`,
        );
        lines.prompt();
      }
    } finally {
      lines.close();
      await vlm.release();
    }
  });
}

/** Runs a /command; false when the line is a question. A bad command is reported and the chat goes on. */
async function runChatCommand(line: string, session: ChatSession): Promise<boolean> {
  if (!line.startsWith('/')) return false;
  const [name, ...rest] = line.split(/\s+/);
  try {
    if (name === '/reset') {
      session.reset();
      process.stderr.write('(conversation forgotten)\n');
    } else if (name === '/image') {
      const file = rest.join(' ');
      if (file === '') throw new CorematchingError('/image needs a file: /image photo.jpg');
      session.setImage(await decodeImage(file));
      process.stderr.write(`(a new conversation about ${file})\n`);
    } else {
      throw new CorematchingError(`unknown command ${name}; ${HELP}`);
    }
  } catch (err) {
    if (!(err instanceof CorematchingError)) throw err;
    process.stderr.write(`error: ${err.message}\n`);
  }
  return true;
}
