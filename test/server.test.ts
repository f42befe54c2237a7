/** `corematching serve` driven by the official openai client and by raw HTTP for the error cases. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { VisionLanguageModel } from '../src/pipeline/vision-language-model.js';
import { CorematchingServer, type ServerOptions } from '../src/server/server.js';
import { fixturePath } from './helpers.js';

const MODEL = fixturePath('..', '..', 'models', 'default');
const IMAGE = fixturePath('scenes', 'images', 'test-000000.png');
const dataUrl = `data:image/png;base64,${fs.readFileSync(IMAGE).toString('base64')}`;
const question = (text: string, url = dataUrl) => [{ role: 'user' as const, content: [{ type: 'image_url' as const, image_url: { url } }, { type: 'text' as const, text }] }];

const OPTIONS: ServerOptions = {
  host: '127.0.0.1', port: 0, modelName: 'default', apiKey: 'secret', allowFiles: fixturePath('scenes'),
  maxBodyBytes: 2 ** 20, maxImagePixels: 4096 * 4096, maxPromptTokens: 400, maxTokens: 64, timeoutSeconds: 60, queueLimit: 1,
  policy: 'dense', policyOptions: {},
};

describe('serve', () => {
  let server: CorematchingServer;
  let client: OpenAI;
  const post = (body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${server.url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: 'Bearer secret', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const expectError = async (response: Promise<Response>, status: number, fragment: string) => {
    const r = await response;
    assert.equal(r.status, status);
    const body = (await r.json()) as { error: { message: string; type: string; param: unknown; code: unknown } };
    assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
    assert.ok(body.error.message.includes(fragment), body.error.message);
  };

  before(async () => {
    server = await CorematchingServer.start(() => VisionLanguageModel.load(MODEL, { threads: 1 }), OPTIONS);
    await server.loaded;
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'secret', maxRetries: 0 });
  });
  after(() => server.close());

  test('a completion through the openai client, with usage and the corematching report', async () => {
    const r = await client.chat.completions.create({ model: 'default', messages: question('What color is the triangle?'), max_tokens: 8, temperature: 0 });
    assert.equal(r.choices[0]!.message.content, 'blue');
    assert.equal(r.choices[0]!.finish_reason, 'stop');
    assert.equal(r.usage!.prompt_tokens, 267);
    assert.equal(r.usage!.completion_tokens, 2);
    const report = (r as unknown as { corematching: { kept_image_tokens: number; image_grid: number } }).corematching;
    assert.equal(report.kept_image_tokens, 256);
    assert.equal(report.image_grid, 16);
  });

  test('streaming through the openai client, the policy chosen per request', async () => {
    const params: OpenAI.ChatCompletionCreateParamsStreaming & { corematching: object } = {
      model: 'default', messages: question('What color is the triangle?'), stream: true, stream_options: { include_usage: true },
      corematching: { policy: 'corematching', budget: 16 },
    };
    const stream = await client.chat.completions.create(params);
    let text = '';
    let usage: OpenAI.CompletionUsage | undefined;
    let kept: number | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      usage = chunk.usage ?? usage;
      kept = (chunk as unknown as { corematching?: { kept_image_tokens: number } }).corematching?.kept_image_tokens ?? kept;
    }
    assert.equal(text, 'blue');
    assert.equal(usage?.completion_tokens, 2);
    assert.equal(kept, 16);
  });

  test('logprobs and top_logprobs as the OpenAI API defines them, streamed and not', async () => {
    const body = { model: 'default', messages: question('How many circles are there?'), max_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 3 };
    const r = await client.chat.completions.create(body);
    const content = r.choices[0]!.logprobs!.content!;
    // The end-of-turn token ends the answer but is not part of its text.
    assert.equal(content.length, r.usage!.completion_tokens - 1);
    assert.equal(content.map((c) => c.token).join(''), r.choices[0]!.message.content);
    for (const c of content) {
      assert.equal(c.top_logprobs.length, 3);
      assert.ok(c.logprob <= 0 && c.top_logprobs.every((t, i, all) => t.logprob <= 0 && (i === 0 || t.logprob <= all[i - 1]!.logprob)));
      assert.equal(c.top_logprobs[0]!.token, c.token, 'greedy picks the most likely token');
      assert.equal(c.top_logprobs[0]!.logprob, c.logprob);
      assert.deepEqual(c.bytes, Array.from(Buffer.from(c.token)));
      assert.ok(c.top_logprobs.reduce((sum, t) => sum + Math.exp(t.logprob), 0) <= 1 + 1e-9);
    }
    const stream = await client.chat.completions.create({ ...body, stream: true });
    const streamed: typeof content = [];
    for await (const chunk of stream) streamed.push(...(chunk.choices[0]?.logprobs?.content ?? []));
    // The same conversation again reuses the cache (all but its last prompt token): the same tokens, logprobs to float rounding.
    assert.deepEqual(streamed.map((c) => [c.token, c.top_logprobs.map((t) => t.token)]), content.map((c) => [c.token, c.top_logprobs.map((t) => t.token)]));
    streamed.forEach((c, i) => assert.ok(Math.abs(c.logprob - content[i]!.logprob) < 1e-4));
    const plain = await client.chat.completions.create({ model: 'default', messages: question('How many circles are there?'), max_tokens: 8 });
    assert.equal(plain.choices[0]!.logprobs, null);
    await expectError(post({ messages: question('q'), top_logprobs: 2 }), 400, 'top_logprobs needs logprobs: true');
    await expectError(post({ messages: question('q'), logprobs: true, top_logprobs: 21 }), 400, 'top_logprobs must be an integer in 0 .. 20');
    await expectError(post({ messages: question('q'), logprobs: 'yes' }), 400, 'logprobs must be true or false');
  });

  test('a text-only turn answers without an image; a dense conversation\'s next turn reuses the cache', async () => {
    const text = await client.chat.completions.create({ model: 'default', messages: [{ role: 'user', content: 'What color is the triangle?' }], max_tokens: 4, temperature: 0 });
    assert.equal(typeof text.choices[0]!.message.content, 'string');
    const report = (r: unknown) => (r as { corematching: { image_tokens: number; flops: { vision: number } } }).corematching;
    assert.equal(report(text).image_tokens, 0);
    assert.equal(report(text).flops.vision, 0);
    const first = await client.chat.completions.create({ model: 'default', messages: question('What color is the triangle?'), max_tokens: 4, temperature: 0 });
    const messages = [...question('What color is the triangle?'), { role: 'assistant' as const, content: first.choices[0]!.message.content! }, { role: 'user' as const, content: 'How many circles are there?' }];
    const next = await client.chat.completions.create({ model: 'default', messages, max_tokens: 4, temperature: 0 });
    assert.equal(report(next).flops.vision, 0, 'the image came from the cache');
    const sparse = await client.chat.completions.create({ model: 'default', messages, max_tokens: 4, temperature: 0, corematching: { policy: 'corematching', budget: 16 } } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    assert.ok(report(sparse).flops.vision > 0, 'a sparse request runs whole');
  });

  test('a multi-turn conversation goes through the chat template; files only under --allow-files', async () => {
    const messages = [
      ...question('What color is the triangle?', 'images/test-000000.png'),
      { role: 'assistant' as const, content: 'blue' },
      { role: 'user' as const, content: 'What color is the triangle?' },
    ];
    const r = await client.chat.completions.create({ model: 'default', messages, max_tokens: 4 });
    assert.equal(typeof r.choices[0]!.message.content, 'string');
    await expectError(post({ messages: question('q', '../models/clip-llama/config.json') }), 400, 'outside the --allow-files folder');
  });

  test('models, health, and OpenAI-shaped errors with their status codes', async () => {
    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), ['default']);
    assert.deepEqual(await (await fetch(`${server.url}/health`)).json(), { status: 'ok' });
    await expectError(post({ messages: question('q') }, { Authorization: 'Bearer wrong' }), 401, 'API key');
    await expectError(post('{"messages": ['), 400, 'not valid JSON');
    await expectError(post({ messages: question('q'), temperature: 7 }), 400, 'temperature must be');
    await expectError(post({ messages: question('q'), corematching: { policy: 'corematching', budget: -1 } }), 400, 'budget');
    const twoImages = [{ role: 'user', content: [{ type: 'image_url', image_url: { url: dataUrl } }, { type: 'image_url', image_url: { url: dataUrl } }, { type: 'text', text: 'q' }] }];
    await expectError(post({ messages: twoImages }), 422, 'at most one image');
    await expectError(post({ messages: question('q', 'https://example.com/cat.png') }), 422, 'remote image URLs are not fetched');
    await expectError(post({ messages: question('q', 'data:image/png;base64,aGVsbG8=') }), 400, 'not a readable image');
    await expectError(post({ messages: question('word '.repeat(300)) }), 400, 'more than the limit of 400');
    await expectError(post({ messages: question('q'), max_tokens: 1000 }), 400, "server's limit of 64");
    await expectError(post(JSON.stringify({ messages: question('x'.repeat(2 ** 20)) })), 413, 'larger than');
    // Without a Content-Length (chunked), the limit is found while reading.
    const chunked = new ReadableStream({
      start(controller) {
        for (let i = 0; i < 3; i++) controller.enqueue(new TextEncoder().encode('x'.repeat(2 ** 19)));
        controller.close();
      },
    });
    await expectError(fetch(`${server.url}/v1/chat/completions`, { method: 'POST', headers: { Authorization: 'Bearer secret' }, body: chunked, duplex: 'half' } as RequestInit), 413, 'larger than');
    await expectError(fetch(`${server.url}/v1/nothing`), 404, 'no route');
    await expectError(fetch(`${server.url}/v1/chat/completions`), 405, 'takes POST');
  });

  test('a full queue answers 429; a client that disconnects leaves the server serving', async () => {
    const body = { messages: question('What color is the triangle?'), max_tokens: 8 };
    const [first, second] = await Promise.all([post(body), post(body)]);
    assert.deepEqual([first.status, second.status].sort(), [200, 429]);
    const r = await client.chat.completions.create({ model: 'default', messages: question('What color is the triangle?'), max_tokens: 8 });
    assert.equal(r.choices[0]!.message.content, 'blue');
  });
});

test('a client that disconnects mid-stream cancels its generation', async () => {
  // The random-weight fixture never says end-of-sequence, so only the disconnect can end it early.
  const server = await CorematchingServer.start(() => VisionLanguageModel.load(fixturePath('models', 'clip-llama'), { threads: 1 }), { ...OPTIONS, apiKey: undefined as unknown as string, maxTokens: 100000, maxPromptTokens: 100000 });
  try {
    await server.loaded;
    const photo = `data:image/png;base64,${fs.readFileSync(fixturePath('photos', 'chelsea.png')).toString('base64')}`;
    const r = await fetch(`${server.url}/v1/chat/completions`, { method: 'POST', body: JSON.stringify({ messages: question('Describe it.', photo), stream: true, max_tokens: 100000 }) });
    const reader = r.body!.getReader();
    await reader.read();
    await reader.cancel();
    const started = performance.now();
    while (server.pendingRequests > 0) {
      assert.ok(performance.now() - started < 5000, 'the generation did not stop');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(server.cancelledRequests, 1);
    assert.equal((await fetch(`${server.url}/health`)).status, 200);
  } finally {
    await server.close();
  }
});

test('serve answers 503 while the model loads', async () => {
  let finish!: (vlm: VisionLanguageModel) => void;
  const server = await CorematchingServer.start(() => new Promise<VisionLanguageModel>((resolve) => (finish = resolve)), { ...OPTIONS, apiKey: undefined as unknown as string });
  try {
    const health = await fetch(`${server.url}/health`);
    assert.equal(health.status, 503);
    assert.deepEqual(await health.json(), { status: 'loading' });
    const r = await fetch(`${server.url}/v1/models`);
    assert.equal(r.status, 503);
    finish(await VisionLanguageModel.load(MODEL, { threads: 1 }));
    await server.loaded;
    assert.equal((await fetch(`${server.url}/health`)).status, 200);
  } finally {
    await server.close();
  }
});
