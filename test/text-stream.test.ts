import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TextStream } from '../src/pipeline/text-stream.js';

/** A decoder whose token i is the string pieces[i]. */
function stream(pieces: string[], stops: string[]) {
  let i = 0;
  return new TextStream({ push: () => pieces[i++]!, flush: () => '' }, stops);
}

test('passes text through without stop strings', () => {
  const s = stream(['Hel', 'lo'], []);
  assert.equal(s.push(0) + s.push(1) + s.finish(), 'Hello');
  assert.equal(s.text, 'Hello');
});

test('cuts at a stop string split across tokens and never shows it', () => {
  const s = stream(['a cat', '.\n', '\nUSER', ': more'], ['\n\nUSER:']);
  const shown = [s.push(0), s.push(1), s.push(2), s.push(3)];
  assert.equal(s.stopped, true);
  assert.equal(shown.join('') + s.finish(), 'a cat.');
  assert.equal(s.text, 'a cat.');
});

test('releases a held-back tail that did not become a stop string', () => {
  const s = stream(['x\n', 'y'], ['\n\n']);
  assert.equal(s.push(0), 'x');
  assert.equal(s.push(1), '\ny');
  assert.equal(s.finish(), '');
});
