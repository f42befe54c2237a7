/**
 * The prompt text for one image + question, rendered the way LlavaProcessor.apply_chat_template
 * does it in transformers 5.23.
 *
 * Template lookup follows ProcessorMixin.from_pretrained: a "chat_template" key in
 * processor_config.json, else the legacy chat_template.json, else chat_template.jinja (or
 * chat_templates/default.jinja). transformers' processor stops there; we also try the tokenizer's
 * template from tokenizer_config.json, but only if it renders the image placeholder (text-only
 * templates would silently drop the image), and otherwise use the caller's fallback.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BoundedTemplate } from './bounded-template.js';
import { CorematchingError } from './errors.js';
import { readOptionalJsonObject } from './json-file.js';
import { readRegularTextFile } from './regular-file.js';
import { readTokenizerConfig, specialTokensMap } from './tokenizer.js';

export interface ChatTemplate {
  template: string;
  /** The file it came from, for error messages. */
  file: string;
}

type Json = Record<string, unknown>;


/**
 * A template value may be a string, a {name: template} dict (processor) or a list of
 * {name, template} (tokenizer_config); with several, transformers uses the one named "default".
 */
function pickTemplate(value: unknown, file: string, field: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return value;
  const named: [unknown, unknown][] = Array.isArray(value)
    ? value.map((v: Json | null) => [v?.name, v?.template])
    : typeof value === 'object'
      ? Object.entries(value)
      : [];
  const found = named.find(([name]) => name === 'default');
  if (found !== undefined && typeof found[1] === 'string') return found[1];
  throw new CorematchingError(
    `${field} has no template named "default" (found ${named.map(([n]) => JSON.stringify(n)).join(', ') || 'none'}); ` +
      'expected a string or a set of named templates including "default"',
    file,
  );
}

/** The processor's chat template, as transformers 5.23 finds it; null when the folder has none. */
export function findProcessorChatTemplate(dir: string): ChatTemplate | null {
  const processorFile = path.join(dir, 'processor_config.json');
  const inProcessor = pickTemplate(readOptionalJsonObject(processorFile)?.chat_template, processorFile, 'chat_template');
  if (inProcessor !== null) return { template: inProcessor, file: processorFile };

  const legacyFile = path.join(dir, 'chat_template.json');
  const legacy = readOptionalJsonObject(legacyFile);
  if (legacy !== null) {
    const template = pickTemplate(legacy.chat_template, legacyFile, 'chat_template');
    if (template === null) throw new CorematchingError('chat_template is missing; expected the template string', legacyFile);
    return { template, file: legacyFile };
  }

  for (const file of [path.join(dir, 'chat_template.jinja'), path.join(dir, 'chat_templates', 'default.jinja')]) {
    if (fs.existsSync(file)) return { template: readRegularTextFile(file, 'chat template'), file };
  }
  const extraDir = path.join(dir, 'chat_templates');
  if (fs.existsSync(extraDir) && fs.readdirSync(extraDir).some((f) => f.endsWith('.jinja'))) {
    throw new CorematchingError('has chat templates but none named default.jinja; expected chat_template.jinja or chat_templates/default.jinja', extraDir);
  }
  return null;
}

/** A conversation turn as transformers' chat templates receive it; the image is a `{type: 'image'}` part. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string | ({ type: 'text'; text: string } | { type: 'image' })[];
}

/** The one-image conversation LlavaProcessor users write. */
function llavaConversation(question: string): ChatMessage[] {
  return [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: question }] }];
}

/** A chat template compiled once, rendered with the variables transformers passes: the
 * conversation, the flags and the tokenizer's named special tokens (bos_token, eos_token, ...). */
class CompiledTemplate {
  private readonly template: BoundedTemplate;
  private readonly file: string;

  constructor(
    chat: ChatTemplate,
    private readonly specialTokens: Record<string, string>,
  ) {
    this.file = chat.file;
    try {
      this.template = new BoundedTemplate(chat.template);
    } catch (err) {
      throw new CorematchingError(`chat template failed to parse: ${(err as Error).message}`, chat.file);
    }
  }

  render(messages: ChatMessage[]): string {
    try {
      return this.template.render({ ...this.specialTokens, messages, tools: null, documents: null, add_generation_prompt: true });
    } catch (err) {
      throw new CorematchingError(`chat template failed to render: ${(err as Error).message}`, this.file);
    }
  }
}

/**
 * The prompt text for a question about one image, from the folder's template found once at load.
 * `fallbackTemplate` is used when the folder has no usable template; its `{question}` is replaced
 * by the question (e.g. LLaVA-1.5's 'USER: <image>\n{question} ASSISTANT:').
 */
export class PromptTemplate {
  private constructor(
    private readonly compiled: CompiledTemplate | null,
    private readonly fallbackTemplate: string,
    private readonly imageToken: string,
  ) {}

  static load(dir: string, imageToken: string, fallbackTemplate: string): PromptTemplate {
    const abs = path.resolve(dir);
    const tokenizerConfig = readTokenizerConfig(abs);
    const specialTokens = specialTokensMap(tokenizerConfig);

    const processorTemplate = findProcessorChatTemplate(abs);
    if (processorTemplate !== null) return new PromptTemplate(new CompiledTemplate(processorTemplate, specialTokens), fallbackTemplate, imageToken);
    const tokenizerFile = path.join(abs, 'tokenizer_config.json');
    const tokenizerTemplate = pickTemplate(tokenizerConfig.chat_template, tokenizerFile, 'chat_template');
    if (tokenizerTemplate !== null) {
      const compiled = new CompiledTemplate({ template: tokenizerTemplate, file: tokenizerFile }, specialTokens);
      // A text-only template would silently drop the image: use it only if it renders the placeholder.
      if (compiled.render(llavaConversation('?')).includes(imageToken)) return new PromptTemplate(compiled, fallbackTemplate, imageToken);
    }
    return new PromptTemplate(null, fallbackTemplate, imageToken);
  }

  render(question: string): string {
    return this.compiled === null ? this.fallbackTemplate.split('{question}').join(question) : this.compiled.render(llavaConversation(question));
  }

  /**
   * A whole conversation (system, user and assistant turns, one image part somewhere) ending in a
   * generation prompt. Without a chat template only one user turn (text and the image) can be
   * rendered, into the fallback format.
   */
  renderConversation(messages: ChatMessage[]): string {
    if (this.compiled !== null) return this.compiled.render(messages);
    if (messages.length !== 1 || messages[0]!.role !== 'user') {
      throw new CorematchingError('this checkpoint has no chat template, so a conversation can only be one user message');
    }
    const content = messages[0]!.content;
    const text = typeof content === 'string' ? content : content.map((part) => (part.type === 'text' ? part.text : '')).join('\n');
    const withImage = typeof content !== 'string' && content.some((part) => part.type === 'image');
    // The fallback format without its image: LLaVA-1.5's 'USER: {question} ASSISTANT:'.
    return withImage ? this.render(text) : this.fallbackTemplate.replace(`${this.imageToken}\n`, '').replace(this.imageToken, '').split('{question}').join(text);
  }
}

/** LlavaProcessor's image placeholder as processor_config.json names it (image_token), or null. */
export function processorImageToken(dir: string): string | null {
  const token = readOptionalJsonObject(path.join(dir, 'processor_config.json'))?.image_token;
  return typeof token === 'string' ? token : null;
}
