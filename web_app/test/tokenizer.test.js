import test from 'node:test';
import assert from 'node:assert/strict';
import { section, readText } from './golden.js';
import { BPETokenizer } from '../src/core/bpe_tokenizer.js';

const golden = section('tokenizer');
const tokenizer = new BPETokenizer(JSON.parse(readText(golden.vocab)), readText(golden.merges), {
  bosId: golden.bos_id, eosId: golden.eos_id, padId: golden.pad_id, maxLength: golden.max_length,
});

test('tokenizer special ids and length from the golden vectors', () => {
  assert.equal(tokenizer.encode('x').length, golden.max_length);
  assert.equal(tokenizer.bosId, 49406);
  assert.equal(tokenizer.eosId, 49407);
});

for (const c of golden.cases) {
  test(`tokenizer ids exactly: ${JSON.stringify(c.prompt).slice(0, 60)}`, () => {
    assert.deepEqual(Array.from(tokenizer.encode(c.prompt)), c.ids);
    // untruncated length = BOS + tokens + EOS
    assert.equal(tokenizer.encodeTokens(c.prompt).length + 2, c.untruncated_length);
  });
}
