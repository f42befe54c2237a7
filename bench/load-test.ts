/**
 * Load test of `corematching serve` on loopback, bounded in requests and time: N concurrent clients
 * each send M requests (a mix of streaming and not, some disconnecting midway, some malformed) for
 * questions of the shipped test images. It checks that every well-formed request is answered
 * exactly once with the answer a sequential greedy run gives, that every error is OpenAI-shaped,
 * and reports p50/p95 latency, throughput and the RSS after warm-up and at the end (of this process,
 * which holds the server and the model; the clients are light fetch calls in it too).
 *
 *   npm run load-test -- [--clients 4] [--requests 25] [--seconds 300]
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { VisionLanguageModel } from '../src/pipeline/vision-language-model.js';
import { CorematchingServer } from '../src/server/server.js';

const { values } = parseArgs({ options: { clients: { type: 'string', default: '4' }, requests: { type: 'string', default: '25' }, seconds: { type: 'string', default: '300' } } });
const CLIENTS = Number(values.clients);
const REQUESTS = Number(values.requests);
const deadline = Date.now() + Number(values.seconds) * 1000;

const root = fileURLToPath(new URL('../..', import.meta.url));
const questions = fs.readFileSync(`${root}/test/fixtures/scenes/questions.jsonl`, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { image: string; question: string });
const dataUrl = (image: string) => `data:image/png;base64,${fs.readFileSync(`${root}/test/fixtures/scenes/${image}`).toString('base64')}`;
const body = (q: { image: string; question: string }, stream: boolean) =>
  JSON.stringify({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: dataUrl(q.image) } }, { type: 'text', text: q.question }] }], max_tokens: 16, temperature: 0, stream });

const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
const rssMb = () => process.memoryUsage().rss / 2 ** 20;

const vlm = await VisionLanguageModel.load(`${root}/models/default`);
// The answers a sequential greedy run gives, to compare every served answer with.
const expected = new Map<string, string>();
for (const q of questions) expected.set(q.question + q.image, (await vlm.generate({ image: `${root}/test/fixtures/scenes/${q.image}`, prompt: q.question, maxNewTokens: 16 })).text);

const server = await CorematchingServer.start(async () => vlm, {
  host: '127.0.0.1', port: 0, modelName: 'default', allowFiles: null, maxBodyBytes: 2 ** 24, maxImagePixels: 2 ** 24,
  maxPromptTokens: 4096, maxTokens: 64, timeoutSeconds: 60, queueLimit: CLIENTS * 2, policy: 'dense', policyOptions: {},
});
await server.loaded;
const url = `${server.url}/v1/chat/completions`;

async function streamText(response: Response): Promise<string> {
  let text = '';
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const part of response.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(part, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end).replace(/^data: /, '');
      buffer = buffer.slice(end + 2);
      if (event === '[DONE]') continue;
      const chunk = JSON.parse(event) as { choices: { delta: { content?: string } }[]; error?: unknown };
      if (chunk.error) throw new Error(`stream error ${JSON.stringify(chunk.error)}`);
      text += chunk.choices[0]?.delta.content ?? '';
    }
  }
  return text;
}

const latencies: number[] = [];
const failures: string[] = [];
let answered = 0;
let wrong = 0;
let disconnected = 0;
let malformed = 0;
let rssWarm = 0;

async function client(c: number): Promise<void> {
  for (let i = 0; i < REQUESTS && Date.now() < deadline; i++) {
    const q = questions[(c + i) % questions.length]!;
    const kind = (c * REQUESTS + i) % 10;
    const started = performance.now();
    if (kind === 9) {
      // Malformed: an error in OpenAI's shape, never a crash.
      const r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"messages": [{"role": "user", "content": 3}]' });
      const e = (await r.json()) as { error?: { message?: unknown; type?: unknown } };
      if (r.status !== 400 || typeof e.error?.message !== 'string' || typeof e.error.type !== 'string') failures.push(`malformed request got ${r.status}`);
      malformed++;
      continue;
    }
    if (kind === 8) {
      // Disconnects after the first event.
      const controller = new AbortController();
      const r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: body(q, true), signal: controller.signal });
      const reader = r.body!.getReader();
      await reader.read();
      controller.abort();
      disconnected++;
      continue;
    }
    const stream = kind % 2 === 0;
    let r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: body(q, stream) });
    while (r.status === 429) {
      await r.json();
      await new Promise((resolve) => setTimeout(resolve, 20));
      r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: body(q, stream) });
    }
    if (r.status !== 200) {
      failures.push(`status ${r.status}: ${await r.text()}`);
      continue;
    }
    const text = stream ? await streamText(r) : ((await r.json()) as { choices: { message: { content: string } }[] }).choices[0]!.message.content;
    latencies.push(performance.now() - started);
    answered++;
    if (text !== expected.get(q.question + q.image)) wrong++;
    if (answered === CLIENTS * 2) rssWarm = rssMb();
  }
}

const t0 = performance.now();
await Promise.all(Array.from({ length: CLIENTS }, (_, c) => client(c)));
const seconds = (performance.now() - t0) / 1000;
while (server.pendingRequests > 0) await new Promise((resolve) => setTimeout(resolve, 10));
const rssEnd = rssMb();
await server.close();

const wellFormed = latencies.length;
console.log(`clients ${CLIENTS} x requests ${REQUESTS}: ${answered} answered (${wrong} differing from sequential greedy), ${disconnected} disconnected midway, ${malformed} malformed`);
console.log(`latency p50 ${percentile(latencies, 50).toFixed(0)} ms, p95 ${percentile(latencies, 95).toFixed(0)} ms; throughput ${(wellFormed / seconds).toFixed(1)} answered requests/s over ${seconds.toFixed(1)} s`);
console.log(`server RSS ${rssWarm.toFixed(0)} MiB after warm-up, ${rssEnd.toFixed(0)} MiB at the end`);
console.log(`cancelled by disconnect: ${server.cancelledRequests}`);
if (failures.length > 0 || wrong > 0) {
  console.error(`FAILED: ${failures.length} failures, ${wrong} wrong answers\n${failures.slice(0, 5).join('\n')}`);
  process.exit(1);
}
