/**
 * `corematching serve`: one model behind an OpenAI-compatible HTTP API (the shape of llama.cpp's
 * llama-server) and a page at `/`. Requests run one at a time on the model, wait in a bounded
 * queue (429 beyond it), stop when their client disconnects or their time runs out, and every
 * failure is an OpenAI-shaped error with its status.
 */
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { CorematchingError } from '../io/errors.js';
import { decodeImage } from '../io/image.js';
import type { VisionLanguageModel, GenerateResult } from '../pipeline/vision-language-model.js';
import type { PolicyName } from '../sparsity/create-policy.js';
import type { PolicyOptions } from '../sparsity/options.js';
import { ApiError, badRequest } from './api-error.js';
import { parseChatRequest, type ChatRequest } from './chat-request.js';
import type { TokenLogprob } from '../pipeline/logprobs.js';
import { logprobContent } from './logprob-content.js';
import { PAGE_HTML } from './page.js';

export interface ServerOptions {
  host: string;
  port: number;
  /** Name reported by /v1/models and in responses. */
  modelName: string;
  apiKey?: string;
  allowFiles: string | null;
  maxBodyBytes: number;
  maxImagePixels: number;
  /** Prompt tokens after the image is expanded; longer prompts get a 400. */
  maxPromptTokens: number;
  /** Cap on max_tokens, and the default when a request gives none. */
  maxTokens: number;
  /** Wall-time limit of one request's generation, in seconds. */
  timeoutSeconds: number;
  /** Requests waiting or running; more get a 429. */
  queueLimit: number;
  policy: PolicyName;
  policyOptions: Partial<PolicyOptions>;
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function sendError(res: http.ServerResponse, err: ApiError): void {
  if (res.headersSent) return;
  sendJson(res, err.status, err.body());
}

/** The request body, refused past `limit` bytes without reading it all. */
function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (declared > limit) return reject(new ApiError(413, `the request body is larger than ${limit} bytes (--max-body-mb)`, 'invalid_request_error', null, 'body_too_large'));
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        reject(new ApiError(413, `the request body is larger than ${limit} bytes (--max-body-mb)`, 'invalid_request_error', null, 'body_too_large'));
        // Answer at once and discard the rest as it arrives, so the client reads the 413.
        req.removeAllListeners('data');
        req.resume();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** What the policy did, for the response's `corematching` object and the page's token map. */
function corematchingReport(r: GenerateResult, grid: number) {
  const s = r.stats;
  return {
    policy: r.sparsity.policy,
    image_tokens: r.imageTokens,
    image_grid: grid,
    kept_image_tokens: r.sparsity.keptImageTokens.length,
    kept_image_token_indices: r.sparsity.keptImageTokens,
    core_neurons: r.sparsity.coreNeurons,
    flops: r.sparsity.flops,
    dense_flops: r.sparsity.denseFlops,
    timings: {
      preprocess_ms: s.preprocessMs,
      vision_ms: s.visionMs,
      prefill_ms: s.prefillMs,
      first_token_ms: s.firstTokenMs,
      decode_ms: s.decodeMs,
      decode_tokens_per_second: s.decodeTokensPerSecond,
    },
  };
}

export class CorematchingServer {
  private model: VisionLanguageModel | null = null;
  private loadError: Error | null = null;
  private pending = 0;
  private cancelled = 0;
  private readonly server: http.Server;

  /** Requests waiting or running. */
  get pendingRequests(): number {
    return this.pending;
  }

  /** Generations stopped because their client disconnected. */
  get cancelledRequests(): number {
    return this.cancelled;
  }

  private constructor(private readonly options: ServerOptions) {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => sendError(res, toApiError(err)));
    });
  }

  /** Listens at once (answering 503 while loading), then loads the model. */
  static async start(load: () => Promise<VisionLanguageModel>, options: ServerOptions): Promise<CorematchingServer> {
    const server = new CorematchingServer(options);
    await new Promise<void>((resolve, reject) => {
      server.server.once('error', (err: NodeJS.ErrnoException) => {
        const why = err.code === 'EADDRINUSE' ? 'the address is already in use' : err.code === 'EACCES' ? 'permission denied' : err.code === 'EADDRNOTAVAIL' ? 'no such address on this machine' : err.message;
        reject(new CorematchingError(`cannot listen on ${options.host}:${options.port} (--host/--port): ${why}`));
      });
      server.server.listen(options.port, options.host, () => resolve());
    });
    server.loaded = load().then(
      (model) => {
        server.model = model;
      },
      (err: Error) => {
        server.loadError = err;
      },
    );
    return server;
  }

  /** Settles when the model has loaded (or failed to). */
  loaded: Promise<void> = Promise.resolve();

  get url(): string {
    const address = this.server.address() as { address: string; port: number };
    const host = address.address.includes(':') ? `[${address.address}]` : address.address;
    return `http://${host}:${address.port}`;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
    await this.loaded;
    await this.model?.release();
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const route = `${url.pathname}`;
    const allowed: Record<string, string> = { '/': 'GET', '/health': 'GET', '/v1/models': 'GET', '/v1/chat/completions': 'POST' };
    if (allowed[route] === undefined) throw new ApiError(404, `no route ${route}; the API serves /v1/chat/completions, /v1/models and /health`, 'invalid_request_error', null, 'not_found');
    if (req.method !== allowed[route]) {
      res.setHeader('Allow', allowed[route]);
      throw new ApiError(405, `${route} takes ${allowed[route]}, not ${req.method}`, 'invalid_request_error', null, 'method_not_allowed');
    }
    if (route === '/') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Security-Policy': "default-src 'self' data: blob: 'unsafe-inline'" });
      res.end(PAGE_HTML);
      return;
    }
    if (route === '/health') {
      const status = this.model ? 'ok' : this.loadError ? 'error' : 'loading';
      sendJson(res, this.model ? 200 : 503, { status, ...(this.loadError ? { message: this.loadError.message } : {}) });
      return;
    }
    if (this.options.apiKey !== undefined && req.headers.authorization !== `Bearer ${this.options.apiKey}`) {
      throw new ApiError(401, 'a valid API key is required: Authorization: Bearer <key>', 'invalid_request_error', null, 'invalid_api_key');
    }
    const model = this.model;
    if (model === null) {
      throw this.loadError ? new ApiError(500, `the model failed to load: ${this.loadError.message}`) : new ApiError(503, 'the model is still loading', 'server_error', null, 'loading');
    }
    if (route === '/v1/models') {
      sendJson(res, 200, { object: 'list', data: [{ id: this.options.modelName, object: 'model', created: 0, owned_by: 'corematching' }] });
      return;
    }
    await this.chatCompletions(model, req, res);
  }

  private async chatCompletions(model: VisionLanguageModel, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const o = this.options;
    const raw = await readBody(req, o.maxBodyBytes);
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch (err) {
      throw badRequest(`the request body is not valid JSON: ${(err as Error).message}`);
    }
    const request = parseChatRequest(body, { allowFiles: o.allowFiles, maxImageBytes: o.maxBodyBytes });
    if (this.pending >= o.queueLimit) throw new ApiError(429, `${this.pending} requests are already queued or running (--queue ${o.queueLimit})`, 'rate_limit_error', null, 'queue_full');
    this.pending++;
    const cancel = new AbortController();
    const onClose = () => {
      if (!res.writableFinished) cancel.abort(new ApiError(499, 'the client disconnected'));
    };
    res.on('close', onClose);
    try {
      await this.run(model, request, res, AbortSignal.any([cancel.signal, AbortSignal.timeout(o.timeoutSeconds * 1000)]));
    } finally {
      this.pending--;
      res.off('close', onClose);
    }
  }

  private async run(model: VisionLanguageModel, r: ChatRequest, res: http.ServerResponse, signal: AbortSignal): Promise<void> {
    const o = this.options;
    const image = r.image === null ? undefined : await decodeImage(r.image, 'image_url', o.maxImagePixels).catch((err: unknown) => {
      throw err instanceof CorematchingError ? badRequest(err.message, 'messages', 'invalid_image') : err;
    });
    const prompt = model.processor.renderConversation(r.messages);
    const promptTokens = model.processor.encode(prompt, image !== undefined).ids.length;
    if (promptTokens > o.maxPromptTokens) {
      throw badRequest(`the prompt is ${promptTokens} tokens, more than the limit of ${o.maxPromptTokens} (--max-prompt-tokens)`, 'messages', 'context_length_exceeded');
    }
    if (r.maxTokens !== undefined && r.maxTokens > o.maxTokens) throw badRequest(`max_tokens is ${r.maxTokens}, more than the server's limit of ${o.maxTokens} (--max-tokens)`, 'max_tokens');
    const id = `chatcmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const grid = Math.floor(model.config.vision.imageSize / model.config.vision.patchSize);
    const tokenizer = model.processor.tokenizer;
    // Streamed: each chunk carries the log-probabilities of the tokens chosen since the last one.
    const pendingLogprobs: TokenLogprob[] = [];
    const takeLogprobs = () => (r.topLogprobs === undefined ? {} : { logprobs: { content: logprobContent(tokenizer, pendingLogprobs.splice(0)), refusal: null } });
    const chunk = (delta: object, finish: string | null, extra: object = {}, choice: object = {}) =>
      `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model: o.modelName, choices: [{ index: 0, delta, ...choice, finish_reason: finish }], ...extra })}\n\n`;
    if (r.stream) {
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
      res.write(chunk({ role: 'assistant', content: '' }, null));
    }
    const policy = r.policy ?? o.policy;
    let result: GenerateResult;
    try {
      result = await model.generate({
        ...(image !== undefined ? { image } : {}),
        prompt,
        rawPrompt: true,
        // A conversation's next turn prefills only its new tokens; a reused cache runs dense, so only dense requests reuse it.
        reuseCache: policy === 'dense',
        maxNewTokens: r.maxTokens ?? o.maxTokens,
        sampling: r.sampling,
        stopStrings: r.stop,
        policy,
        policyOptions: r.policy === undefined ? { ...o.policyOptions, ...r.policyOptions } : r.policyOptions,
        signal,
        ...(r.topLogprobs !== undefined ? { logprobs: r.topLogprobs, ...(r.stream ? { onLogprob: (e: TokenLogprob) => pendingLogprobs.push(e) } : {}) } : {}),
        ...(r.stream ? { onText: (text: string) => res.write(chunk({ content: text }, null, {}, takeLogprobs())) } : {}),
      });
    } catch (err) {
      if (signal.aborted && signal.reason instanceof ApiError && signal.reason.status === 499) this.cancelled++;
      const apiError = signal.aborted && !(signal.reason instanceof ApiError)
        ? new ApiError(504, `generation took longer than ${o.timeoutSeconds} s (--timeout)`, 'server_error', null, 'timeout')
        : toApiError(err);
      if (!r.stream) throw apiError;
      if (!res.writableEnded && !res.destroyed) res.end(`data: ${JSON.stringify(apiError.body())}\n\ndata: [DONE]\n\n`);
      return;
    }
    const usage = { prompt_tokens: result.promptTokens.length, completion_tokens: result.tokens.length, total_tokens: result.promptTokens.length + result.tokens.length };
    const report = corematchingReport(result, grid);
    if (r.stream) {
      res.write(chunk({}, result.finishReason, { corematching: report }));
      if (r.includeUsage) res.write(`data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model: o.modelName, choices: [], usage })}\n\n`);
      res.end('data: [DONE]\n\n');
      return;
    }
    sendJson(res, 200, {
      id,
      object: 'chat.completion',
      created,
      model: o.modelName,
      choices: [{
        index: 0,
        message: { role: 'assistant', content: result.text },
        finish_reason: result.finishReason,
        logprobs: result.logprobs ? { content: logprobContent(tokenizer, result.logprobs), refusal: null } : null,
      }],
      usage,
      corematching: report,
    });
  }
}

/** Bad input from the engine is the client's (400); anything else is the server's (500). */
function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof CorematchingError) return badRequest(err.message);
  return new ApiError(500, `internal error: ${err instanceof Error ? err.message : String(err)}`);
}
