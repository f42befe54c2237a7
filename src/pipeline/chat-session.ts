/**
 * A multi-turn conversation about (at most) one image, kept in the model's KV cache between turns
 * (mlx_lm.chat's and llama-mtmd-cli's shape): each turn renders the whole conversation through
 * the chat template and prefills only what the cache does not hold yet.
 */
import type { ChatMessage } from '../io/chat-template.js';
import type { RgbImage } from '../io/image.js';
import type { GenerateOptions } from './generate-options.js';
import type { GenerateResult, VisionLanguageModel } from './vision-language-model.js';

/** What every turn of a session shares: the generate() options other than image, prompt and streaming. */
export type TurnOptions = Omit<GenerateOptions, 'image' | 'prompt' | 'rawPrompt' | 'reuseCache' | 'onText'>;

export class ChatSession {
  private history: ChatMessage[] = [];
  private currentImage: string | Uint8Array | RgbImage | undefined;

  constructor(
    private readonly vlm: VisionLanguageModel,
    private readonly options: TurnOptions = {},
    image?: string | Uint8Array | RgbImage,
  ) {
    this.currentImage = image;
  }

  /** The turns so far (user and assistant messages, the image part in the first user turn). */
  get messages(): readonly ChatMessage[] {
    return this.history;
  }

  get image(): string | Uint8Array | RgbImage | undefined {
    return this.currentImage;
  }

  /** Starts a new conversation about `image` (or none: text only). */
  setImage(image: string | Uint8Array | RgbImage | undefined): void {
    this.currentImage = image;
    this.reset();
  }

  /** Forgets the conversation; the image stays. */
  reset(): void {
    this.history = [];
  }

  /** One user turn and the model's answer; the turn joins the conversation only if it completes. */
  async send(text: string, onText?: (text: string, tokenId: number) => void): Promise<GenerateResult> {
    const first = this.history.length === 0 && this.currentImage !== undefined;
    const user: ChatMessage = { role: 'user', content: [...(first ? [{ type: 'image' as const }] : []), { type: 'text', text }] };
    const withImage = this.currentImage !== undefined;
    const prompt = this.vlm.processor.renderConversation([...this.history, user]);
    const result = await this.vlm.generate({
      ...this.options,
      ...(withImage ? { image: this.currentImage } : {}),
      prompt,
      rawPrompt: true,
      reuseCache: true,
      ...(onText ? { onText } : {}),
    });
    this.history.push(user, { role: 'assistant', content: [{ type: 'text', text: result.text }] });
    return result;
  }
}
