/**
 * Property-based fuzzing of every input a user or a checkpoint hands the engine: safetensors
 * headers and offsets, shard indexes, config.json, tokenizer files, chat templates, image bytes,
 * library arguments, what a hub answers for a model id, and converted-weight cache entries. Each
 * generated input must end in success or a CorematchingError within a time bound: any other
 * exception, a hang or a crash fails the run, and fast-check shrinks it to a minimal counterexample.
 *
 * `npm test` runs a small fixed budget; `npm run fuzz` a large one (COREMATCHING_FUZZ_RUNS, default 1000; COREMATCHING_FUZZ_SEED).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { Checkpoint } from '../src/io/checkpoint.js';
import { loadLlavaConfig } from '../src/io/config.js';
import { CorematchingError } from '../src/io/errors.js';
import { resolveModelDir } from '../src/io/hub.js';
import { decodeImage } from '../src/io/image.js';
import { PromptTemplate } from '../src/io/chat-template.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { TextTokenizer } from '../src/io/tokenizer.js';
import { ChatSession } from '../src/pipeline/chat-session.js';
import { VisionLanguageModel } from '../src/pipeline/vision-language-model.js';
import { fixturePath, tempDir } from './helpers.js';
import { startHubStandIn, type StandIn, type TreeEntry } from './hub-stand-in.js';

const RUNS = Number(process.env.COREMATCHING_FUZZ_RUNS ?? 100);
const SEED = process.env.COREMATCHING_FUZZ_SEED === undefined ? 20261129 : Number(process.env.COREMATCHING_FUZZ_SEED);
/** The bound for any single bad input. */
const TIME_LIMIT_MS = 5000;
const params = { numRuns: RUNS, seed: SEED };

/** Runs `fn`; success and CorematchingError pass, anything else (or too long a run) fails. */
async function endsCleanly(fn: () => unknown): Promise<void> {
  const started = performance.now();
  try {
    await fn();
  } catch (err) {
    if (!(err instanceof CorematchingError)) throw new Error(`not a CorematchingError: ${err instanceof Error ? err.stack : String(err)}`);
  }
  const ms = performance.now() - started;
  assert.ok(ms < TIME_LIMIT_MS, `took ${ms.toFixed(0)} ms`);
}

/** A scratch folder, emptied for each generated case. */
function scratch(): () => string {
  const dir = tempDir('cm-fuzz-');
  return () => {
    for (const f of fs.readdirSync(dir)) fs.rmSync(path.join(dir, f), { recursive: true, force: true });
    return dir;
  };
}

/** Sets the value at a random path of a JSON document (or replaces the whole document). */
function mutateJson(doc: unknown, pathChoices: number[], value: unknown): unknown {
  if (pathChoices.length === 0 || typeof doc !== 'object' || doc === null) return value;
  const copy: Record<string, unknown> | unknown[] = Array.isArray(doc) ? [...doc] : { ...(doc as Record<string, unknown>) };
  const keys = Object.keys(copy);
  if (keys.length === 0) return value;
  const key = keys[pathChoices[0]! % keys.length]!;
  (copy as Record<string, unknown>)[key] = mutateJson((copy as Record<string, unknown>)[key], pathChoices.slice(1), value);
  return copy;
}

const jsonMutation = fc.tuple(fc.array(fc.nat(), { maxLength: 4 }), fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constantFrom(-1, 0, 1e12, 2 ** 53, 1.5, '', '../x', null)));

describe('fuzz: checkpoint files', () => {
  const fresh = scratch();
  const dtypes = fc.constantFrom('F32', 'F16', 'BF16', 'I8', 'U8', 'F64', 'X', '');
  const dim = fc.oneof(fc.integer({ min: 0, max: 8 }), fc.constantFrom(-1, 2 ** 31, 2 ** 53, 1.5));
  const entry = fc.record({
    dtype: fc.oneof(dtypes, fc.jsonValue({ maxDepth: 1 })),
    shape: fc.oneof(fc.array(dim, { maxLength: 4 }), fc.jsonValue({ maxDepth: 1 })),
    data_offsets: fc.oneof(fc.tuple(fc.integer({ min: -8, max: 300 }), fc.integer({ min: -8, max: 300 })), fc.jsonValue({ maxDepth: 1 })),
  }, { requiredKeys: [] });
  const header = fc.dictionary(fc.oneof(fc.constantFrom('a', 'b', '__metadata__'), fc.string({ maxLength: 4 })), fc.oneof(entry, fc.jsonValue({ maxDepth: 2 })), { maxKeys: 4 });

  test('safetensors headers, lengths and offsets', () => fc.assert(fc.asyncProperty(
    header, fc.oneof(fc.constant(null), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 64n - 1n })), fc.uint8Array({ maxLength: 300 }),
    (head, lengthOverride, data) => endsCleanly(() => {
      const json = Buffer.from(JSON.stringify(head));
      const prefix = Buffer.alloc(8);
      prefix.writeBigUInt64LE(lengthOverride === null ? BigInt(json.length) : BigInt.asUintN(64, lengthOverride));
      const file = path.join(fresh(), 'model.safetensors');
      fs.writeFileSync(file, Buffer.concat([prefix, json, data]));
      const st = new SafetensorsFile(file);
      try {
        for (const name of st.names()) st.read(name);
      } finally {
        st.close();
      }
    }),
  ), params));

  test('raw bytes as a safetensors file', () => fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 64 }), (bytes) => endsCleanly(() => {
    const file = path.join(fresh(), 'model.safetensors');
    fs.writeFileSync(file, bytes);
    new SafetensorsFile(file).close();
  })), params));

  const source = fixturePath('models', 'clip-llama');
  const index = JSON.parse(fs.readFileSync(path.join(source, 'model.safetensors.index.json'), 'utf8')) as unknown;
  test('model.safetensors.index.json', () => fc.assert(fc.asyncProperty(jsonMutation, ([where, value]) => endsCleanly(() => {
    const dir = fresh();
    for (const f of fs.readdirSync(source).filter((f) => f.endsWith('.safetensors'))) fs.symlinkSync(path.join(source, f), path.join(dir, f));
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify(mutateJson(index, where, value)));
    const checkpoint = Checkpoint.open(dir);
    checkpoint.close();
  })), params));

  const config = JSON.parse(fs.readFileSync(path.join(source, 'config.json'), 'utf8')) as unknown;
  test('config.json', () => fc.assert(fc.asyncProperty(jsonMutation, ([where, value]) => endsCleanly(() => {
    const dir = fresh();
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(mutateJson(config, where, value)));
    loadLlavaConfig(dir);
  })), params));
});

describe('fuzz: tokenizer and chat template files', () => {
  const fresh = scratch();
  const source = fixturePath('..', '..', 'models', 'default');
  const tokenizer = JSON.parse(fs.readFileSync(path.join(source, 'tokenizer.json'), 'utf8')) as unknown;
  const tokenizerConfig = JSON.parse(fs.readFileSync(path.join(source, 'tokenizer_config.json'), 'utf8')) as unknown;

  test('tokenizer.json and tokenizer_config.json', () => fc.assert(fc.asyncProperty(
    fc.boolean(), jsonMutation, fc.string({ maxLength: 20 }),
    (inTokenizer, [where, value], text) => endsCleanly(() => {
      const dir = fresh();
      fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(inTokenizer ? mutateJson(tokenizer, where, value) : tokenizer));
      fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(inTokenizer ? tokenizerConfig : mutateJson(tokenizerConfig, where, value)));
      const tok = TextTokenizer.load(dir);
      tok.decode(tok.encode(text));
    }),
  ), params));

  const fragments = fc.constantFrom(
    '{%', '%}', '{{', '}}', '{#', '#}', 'for', 'x', 'in', 'range(', ')', '(', 'if', 'else', 'endif', 'endfor', 'messages', 'message',
    'set', '=', '~', '+', '*', '.', '[', ']', '0', '1', '99999', "'a'", '"<image>"', '|', 'join', 'length', 'tojson', 'indent(',
    'macro', 'endmacro', 'f', ',', 'namespace', 'loop.index', 'raise_exception', 'content', 'role', 'not', 'and', 'is', 'defined', '\n',
  );
  test('chat templates', () => fc.assert(fc.asyncProperty(fc.array(fragments, { maxLength: 40 }), (parts) => endsCleanly(() => {
    const dir = fresh();
    fs.writeFileSync(path.join(dir, 'chat_template.jinja'), parts.join(' '));
    PromptTemplate.load(dir, '<image>', 'USER: <image>\n{question} ASSISTANT:').render('What is shown?');
  })), params));
});

describe('fuzz: images and library arguments', () => {
  const png = fs.readFileSync(fixturePath('scenes', 'images', 'test-000000.png'));
  const edit = fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }));

  test('image bytes: corrupted, truncated or random', () => fc.assert(fc.asyncProperty(
    fc.array(edit, { maxLength: 8 }), fc.nat(), fc.uint8Array({ maxLength: 64 }), fc.boolean(),
    (edits, cut, noise, random) => endsCleanly(async () => {
      if (random) return decodeImage(noise);
      const bytes = new Uint8Array(png.subarray(0, 1 + (cut % png.length)));
      for (const [at, value] of edits) bytes[at % bytes.length] = value;
      return decodeImage(bytes);
    }),
  ), params));

  let vlm: VisionLanguageModel;
  before(async () => {
    vlm = await VisionLanguageModel.load(fixturePath('models', 'clip-llama'), { threads: 1 });
  });
  after(() => vlm.release());

  const side = fc.oneof(fc.integer({ min: -2, max: 70 }), fc.constantFrom(0.5, NaN, Infinity, 1e9), fc.string({ maxLength: 2 }));
  const rawImage = fc.record({ width: side, height: side, data: fc.oneof(fc.uint8Array({ maxLength: 64 * 64 * 3 }), fc.anything({ maxDepth: 1 })) }, { requiredKeys: [] });
  const image = fc.oneof(rawImage, fc.anything({ maxDepth: 1 }), fc.constant(fixturePath('photos', 'chelsea.png')), fc.string({ maxLength: 8 }));
  const options = fc.record({
    image,
    prompt: fc.oneof(fc.string({ maxLength: 30 }), fc.constant('<image>'), fc.anything({ maxDepth: 1 })),
    // Few tokens: a valid request for thousands of tokens is a long run, not a bad input.
    maxNewTokens: fc.oneof(fc.integer({ min: -2, max: 3 }), fc.constantFrom(0.5, NaN, Infinity, 1e300, '3', null, true, [])),
    stopStrings: fc.oneof(fc.array(fc.string({ maxLength: 3 }), { maxLength: 2 }), fc.anything({ maxDepth: 1 })),
    sampling: fc.oneof(fc.record({ doSample: fc.boolean(), temperature: fc.double(), topK: fc.integer(), topP: fc.double(), seed: fc.integer() }, { requiredKeys: [] }), fc.anything({ maxDepth: 1 })),
    logprobs: fc.oneof(fc.integer({ min: -2, max: 22 }), fc.constantFrom(0.5, NaN, Infinity, '3', null, true)),
    onLogprob: fc.oneof(fc.constant(() => undefined), fc.anything({ maxDepth: 1 })),
    reuseCache: fc.oneof(fc.boolean(), fc.anything({ maxDepth: 1 })),
  }, { requiredKeys: ['prompt'] });

  test('generate() arguments', () => fc.assert(fc.asyncProperty(options, (opts) => endsCleanly(
    () => vlm.generate(opts as unknown as Parameters<VisionLanguageModel['generate']>[0]),
  )), params));

  // A conversation: turns of any text (placeholders, template syntax, nothing), resets and image changes in any order.
  const turn = fc.oneof(
    fc.record({ say: fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom('<image>', '{{ messages }}', '<|im_end|>', '')) }),
    fc.constant({ reset: true }),
    fc.record({ image: fc.oneof(fc.constant(undefined), fc.constant(fixturePath('photos', 'chelsea.png')), fc.string({ maxLength: 8 })) }),
  );
  test('chat sessions', () => fc.assert(fc.asyncProperty(fc.array(turn, { maxLength: 5 }), (turns) => endsCleanly(async () => {
    const session = new ChatSession(vlm, { maxNewTokens: 2 });
    for (const t of turns) {
      if ('reset' in t) session.reset();
      else if ('image' in t) session.setImage(t.image);
      else await session.send(t.say).catch((err: unknown) => {
        if (!(err instanceof CorematchingError)) throw err;
      });
    }
  })), params));
});

describe('fuzz: a hub that lies', () => {
  // A tiny repo (the files need not parse: resolving a model id only downloads and verifies them).
  const repo = 'fuzz/tiny';
  const files = new Map([['config.json', Buffer.from('{"model_type": "llava"}')], ['model.safetensors', Buffer.alloc(300, 7)], ['sub/tokenizer.json', Buffer.from('{}')]]);
  let hub: StandIn;
  let honest: TreeEntry[];
  before(async () => {
    hub = await startHubStandIn(repo, files);
    honest = structuredClone(hub.tree);
  });
  after(() => hub.close());
  const field = fc.constantFrom('type', 'path', 'size', 'oid', 'lfs');
  const value = fc.oneof(
    fc.jsonValue({ maxDepth: 1 }),
    fc.constantFrom('../x', '/etc/passwd', 'a//b', 'config.json/x', 'sub', '', -1, 0, 1, 299, 301, 1e12, 2 ** 53, 1.5, 'f'.repeat(40), { oid: 'a'.repeat(64), size: 300 }),
  );
  const lie = fc.tuple(fc.nat(), field, value);
  const extra = fc.option(fc.record({ type: fc.constant('file'), path: fc.constantFrom('extra.json', 'config.json', 'x/../y.json'), size: fc.nat({ max: 400 }), oid: fc.constant('b'.repeat(40)) }), { nil: undefined });
  const served = fc.option(fc.tuple(fc.constantFrom(...files.keys()), fc.uint8Array({ maxLength: 400 })), { nil: undefined });
  test('tree listings and served bytes', () => fc.assert(fc.asyncProperty(fc.array(lie, { maxLength: 3 }), extra, served, (lies, more, bytes) => endsCleanly(async () => {
    hub.tree.splice(0, hub.tree.length, ...structuredClone(honest));
    for (const [i, key, v] of lies) (hub.tree[i % hub.tree.length] as unknown as Record<string, unknown>)[key] = v;
    if (more !== undefined) hub.tree.push(more);
    hub.serve.clear();
    if (bytes !== undefined) hub.serve.set(bytes[0], Buffer.from(bytes[1]));
    await resolveModelDir(repo, { cacheDir: tempDir('cm-fuzz-hub-'), hubUrl: hub.url, offline: false });
  })), params));
});

describe('fuzz: converted-weight cache entries', () => {
  const model = fixturePath('models', 'clip-mistral');
  const pristine = tempDir('cm-fuzz-cache-');
  let entry = '';
  before(async () => {
    await (await VisionLanguageModel.load(model, { threads: 1, weights: 'int8', cacheDir: pristine })).release();
    entry = fs.readdirSync(pristine)[0]!;
  });
  // An edit of the manifest, or of bytes in (or the length of) one stored file.
  const edit = fc.oneof(
    fc.record({ manifest: jsonMutation }),
    fc.record({ file: fc.nat(), at: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }) }),
    fc.record({ file: fc.nat(), length: fc.nat() }),
  );
  // Each case loads a model: a quarter of the runs of the others.
  test('manifests and stored files', () => fc.assert(fc.asyncProperty(edit, (e) => endsCleanly(async () => {
    const root = tempDir('cm-fuzz-cache-');
    fs.cpSync(path.join(pristine, entry), path.join(root, entry), { recursive: true });
    const folder = path.join(root, entry);
    if ('manifest' in e) {
      const [where, value] = e.manifest;
      const manifest = JSON.parse(fs.readFileSync(path.join(folder, 'manifest.json'), 'utf8')) as unknown;
      fs.writeFileSync(path.join(folder, 'manifest.json'), JSON.stringify(mutateJson(manifest, where, value)));
    } else {
      const files = fs.readdirSync(folder).filter((f) => f !== 'manifest.json').sort();
      const file = path.join(folder, files[e.file % files.length]!);
      const bytes = fs.readFileSync(file);
      if ('length' in e) fs.truncateSync(file, e.length % (bytes.length + 1));
      else {
        for (const [at, value] of e.at) bytes[at % bytes.length] = value;
        fs.writeFileSync(file, bytes);
      }
    }
    const vlm = await VisionLanguageModel.load(model, { threads: 1, weights: 'int8', cacheDir: root });
    try {
      await vlm.generate({ image: fixturePath('photos', 'chelsea.png'), prompt: 'What is this?', maxNewTokens: 2 });
    } finally {
      await vlm.release();
    }
  })), { ...params, numRuns: Math.ceil(RUNS / 4) }));
});
