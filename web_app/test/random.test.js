import test from 'node:test';
import assert from 'node:assert/strict';
import { section, array } from './golden.js';
import { TorchRandomSource, MT19937 } from '../src/core/torch_random_source.js';
import { fma32, nextFloat32 } from '../src/core/float32.js';

function assertBitExact(got, want, what) {
  assert.equal(got.length, want.length, `${what}: length`);
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  let diff = 0;
  let first = -1;
  for (let i = 0; i < w.length; i++) {
    if (g[i] !== w[i]) {
      diff++;
      if (first < 0) first = i;
    }
  }
  assert.equal(diff, 0, `${what}: ${diff} of ${w.length} values differ, first at ${first} (${got[first]} vs ${want[first]})`);
}

const randn = section('randn');

for (const c of randn.cases) {
  test(`randn seed ${c.seed} shape [${c.shape}] bit-exact`, () => {
    assertBitExact(new TorchRandomSource(c.seed).normalArray(c.shape), array(c.values), `seed ${c.seed}`);
  });
}

test(`randn stream (seed ${randn.stream.seed}, ${randn.stream.draws.length} draws from one generator) bit-exact`, () => {
  const source = new TorchRandomSource(randn.stream.seed);
  randn.stream.draws.forEach((d, k) => assertBitExact(source.normalArray(d.shape), array(d.values), `draw ${k}`));
});

test('mt19937 first outputs of seed 5489 (the reference implementation)', () => {
  const g = new MT19937(5489);
  assert.deepEqual([g.nextU32(), g.nextU32(), g.nextU32()], [3499211612, 581869302, 3890346734]);
});

test('fma32 rounds once where the float64 sum lands on a float32 midpoint', () => {
  // a * b = 1 - 2^-46 exactly; + c = 2^24 + 3 - 2^-46. float64 drops the 2^-46 and lands on the float32
  // midpoint 2^24 + 3, which rounds to even (2^24 + 4); the exact sum is below it: 2^24 + 2.
  const a = Math.fround(1 + 2 ** -23);
  const b = Math.fround(1 - 2 ** -23);
  const c = 2 ** 24 + 2;
  assert.equal(Math.fround(a * b + c), 2 ** 24 + 4);
  assert.equal(fma32(a, b, c), 2 ** 24 + 2);
  assert.equal(nextFloat32(1, true), 1 + 2 ** -23);
  assert.equal(nextFloat32(-1, true), -(1 - 2 ** -24));
});

test('seed out of range is refused', () => {
  assert.throws(() => new TorchRandomSource(-1), /seed must be an integer/);
  assert.throws(() => new TorchRandomSource(2 ** 32), /seed must be an integer/);
});
