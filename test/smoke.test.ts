import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CorematchingError } from '../src/io/errors.js';

test('errors name the file', () => {
  assert.equal(new CorematchingError('bad', 'x.json').message, 'x.json: bad');
});
