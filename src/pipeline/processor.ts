/**
 * Everything that turns a user's image and question into model inputs, loaded once per model (the
 * shape of transformers' LlavaProcessor): the image processor, the tokenizer, the compiled chat
 * template and the image placeholder, expanded to one image token per image feature.
 */
import { PromptTemplate, processorImageToken, type ChatMessage } from '../io/chat-template.js';
import { CorematchingError } from '../io/errors.js';
import { ImageProcessor } from '../io/image-processor.js';
import type { LlavaConfig } from '../io/model-config.js';
import { TextTokenizer } from '../io/tokenizer.js';
import { imageTokenCount } from '../models/llava.js';
import { countOccurrences, encodePrompt, type EncodedPrompt } from './prompt.js';

/** Chat template used when a LLaVA folder ships none (LLaVA-1.5's conversation format). */
export const LLAVA_15_TEMPLATE = 'USER: <image>\n{question} ASSISTANT:';

export class LlavaProcessor {
  private constructor(
    readonly tokenizer: TextTokenizer,
    readonly imageProcessor: ImageProcessor,
    private readonly template: PromptTemplate,
    /** The placeholder prompts hold for the image, e.g. "<image>". */
    readonly imageToken: string,
    readonly imageTokenId: number,
    /** Image tokens one image becomes in the prompt. */
    readonly imageTokenCount: number,
  ) {}

  static load(config: LlavaConfig): LlavaProcessor {
    const tokenizer = TextTokenizer.load(config.dir);
    const imageProcessor = ImageProcessor.load(config.dir);
    const size = imageProcessor.outputSize;
    const side = config.vision.imageSize;
    if (size !== null && (size.height !== side || size.width !== side)) {
      throw new CorematchingError(`the image processor makes ${size.height}x${size.width} images, but the vision tower's image_size is ${side}`, imageProcessor.file);
    }
    // One source for the placeholder: processor_config.json's image_token as transformers reads
    // it, else the token the model's image_token_index names; either way it must be that id.
    const imageToken = processorImageToken(config.dir) ?? tokenizer.idToToken(config.imageTokenIndex);
    if (imageToken === undefined) {
      throw new CorematchingError(`image_token_index ${config.imageTokenIndex} is not a token of tokenizer.json`, config.dir);
    }
    const id = tokenizer.tokenId(imageToken);
    if (id !== config.imageTokenIndex) {
      throw new CorematchingError(
        `the image token ${JSON.stringify(imageToken)} is ${id === undefined ? 'not a token of tokenizer.json' : `token ${id} in tokenizer.json`}, but config.json's image_token_index is ${config.imageTokenIndex}`,
        config.dir,
      );
    }
    const template = PromptTemplate.load(config.dir, imageToken, LLAVA_15_TEMPLATE.replace('<image>', imageToken));
    return new LlavaProcessor(tokenizer, imageProcessor, template, imageToken, id, imageTokenCount(config));
  }

  /** The prompt text for a question about the image (or, `withImage` false, a text-only one): the chat template, or LLaVA-1.5's format. */
  renderPrompt(question: string, withImage = true): string {
    const typed = countOccurrences(question, this.imageToken);
    if (typed > 0) {
      throw new CorematchingError(
        `the question contains ${typed} ${this.imageToken} placeholder${typed > 1 ? 's' : ''}, and the chat template adds the image's own; ` +
          `remove ${typed > 1 ? 'them' : 'it'}, or pass the whole prompt verbatim with --raw-prompt (library: rawPrompt: true)`,
      );
    }
    return withImage ? this.template.render(question) : this.template.renderConversation([{ role: 'user', content: [{ type: 'text', text: question }] }]);
  }

  /** The prompt text of a whole conversation through the chat template. */
  renderConversation(messages: ChatMessage[]): string {
    return this.template.renderConversation(messages);
  }

  /** Token ids of a prompt text holding one image placeholder, expanded to the image tokens (or, `withImage` false, none). */
  encode(prompt: string, withImage = true): EncodedPrompt {
    return encodePrompt(prompt, this.imageToken, this.imageTokenId, this.imageTokenCount, this.tokenizer, withImage);
  }
}
