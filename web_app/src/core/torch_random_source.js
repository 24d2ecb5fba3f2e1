// TorchRandomSource: torch's CPU torch.randn (float32) for a seed, bit for bit.
//
// A port of mobilesd/torch_random.py, the specification (read its docstring for the why of every step):
// mt19937 seeded like torch.manual_seed; >= 16 elements: 24-bit uniforms, Box-Muller over blocks of 16 with
// ATen's AVX Cephes float log / sin / cos (with their fused multiply-adds), the last 16 redrawn when the size
// is not a multiple of 16; < 16 elements: the double-precision scalar path with its cached second value.
// Every float32 operation is rounded with Math.fround; the fused multiply-adds are exact (float32.js).

import { fma32, fround, floatToBits, bitsToFloat } from './float32.js';
import { RandomSource } from './random_source.js';

const N = 624;
const M = 397;

/** The 32-bit Mersenne Twister as torch's CPU generator runs it (manual_seed = init_genrand). */
export class MT19937 {
  constructor(seed) {
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xFFFFFFFF) {
      throw new RangeError(`seed must be an integer in [0, 2^32 - 1], got ${seed}`);
    }
    this.mt = new Uint32Array(N);
    this.mt[0] = seed >>> 0;
    for (let i = 1; i < N; i++) {
      const prev = this.mt[i - 1] ^ (this.mt[i - 1] >>> 30);
      this.mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
    this.index = N;
    this.nextDoubleNormal = null;   // torch caches the second Box-Muller value of the scalar path
  }

  twist() {
    const mt = this.mt;
    for (let i = 0; i < N; i++) {
      const y = (mt[i] & 0x80000000) | (mt[(i + 1) % N] & 0x7FFFFFFF);
      mt[i] = mt[(i + M) % N] ^ (y >>> 1) ^ ((y & 1) ? 0x9908B0DF : 0);
    }
    this.index = 0;
  }

  nextU32() {
    if (this.index >= N) this.twist();
    let y = this.mt[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9D2C5680;
    y ^= (y << 15) & 0xEFC60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** The low 53 bits of random64() (two draws, the first one high) as an exact double in [0, 1). */
  nextDouble53() {
    const hi = this.nextU32();
    const lo = this.nextU32();
    return ((hi & 0x1FFFFF) * 4294967296 + lo) * 2 ** -53;
  }
}

// Cephes single-precision coefficients (ATen's avx_mathfun.h), as float32
const LOG_P = [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
  -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1].map(fround);
const LOG_Q1 = fround(-2.12194440e-4);
const LOG_Q2 = fround(0.693359375);
const SQRTHF = fround(0.707106781186547524);
const FOPI = fround(1.27323954473516);
const DP = [-0.78515625, -2.4187564849853515625e-4, -3.77489497744594108e-8].map(fround);
const SIN_P = [-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1].map(fround);
const COS_P = [2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2].map(fround);
const TWO_PI = fround(2 * Math.PI);
const MIN_NORMAL = bitsToFloat(0x00800000);

/** Cephes logf for x in (0, 1] as the contracted AVX code computes it. */
export function logF32(x0) {
  let x = x0 < MIN_NORMAL ? MIN_NORMAL : x0;
  const bits = floatToBits(x);
  let e = fround((bits >>> 23) - 0x7F);
  x = bitsToFloat((bits & 0x807FFFFF) | 0x3F000000);   // mantissa in [0.5, 1)
  e = fround(e + 1);
  const small = x < SQRTHF;
  if (small) e = fround(e - 1);
  x = fround(fround(x - 1) + (small ? x : 0));           // x - 1, or x + x - 1 below sqrt(1/2)
  const z = fround(x * x);
  let y = LOG_P[0];
  for (let i = 1; i < LOG_P.length; i++) y = fma32(y, x, LOG_P[i]);
  y = fround(y * x);
  y = fma32(y, z, fround(e * LOG_Q1));
  y = fma32(-z, 0.5, y);
  return fma32(e, LOG_Q2, fround(x + y));
}

/** Cephes sinf and cosf (one range reduction for both) as the contracted AVX code computes them: [sin, cos]. */
export function sinCosF32(x0) {
  let sinNegative = x0 < 0 || Object.is(x0, -0);
  let x = Math.abs(x0);
  let j = Math.trunc(fround(x * FOPI)) | 0;
  j = (j + 1) & ~1;
  const y = fround(j);
  sinNegative = sinNegative !== ((j & 4) !== 0);
  const cosNegative = (~(j - 2) & 4) !== 0;
  const firstPoly = (j & 2) === 0;   // the cos polynomial gives cos (else the two swap)
  for (const dp of DP) x = fma32(y, dp, x);
  const z = fround(x * x);
  let yc = COS_P[0];
  yc = fma32(yc, z, COS_P[1]);
  yc = fma32(yc, z, COS_P[2]);
  yc = fround(yc * z);
  yc = fround(fma32(yc, z, -fround(z * 0.5)) + 1);
  let ys = SIN_P[0];
  ys = fma32(ys, z, SIN_P[1]);
  ys = fma32(ys, z, SIN_P[2]);
  ys = fma32(fround(ys * z), x, x);
  const s = firstPoly ? ys : yc;
  const c = firstPoly ? yc : ys;
  return [sinNegative ? -s : s, cosNegative ? -c : c];
}

function boxMuller16(block, out, offset) {
  for (let j = 0; j < 8; j++) {
    const u1 = fround(1 - block[j]);
    const radius = fround(Math.sqrt(fround(-2 * logF32(u1))));
    const theta = fround(TWO_PI * block[j + 8]);
    const [s, c] = sinCosF32(theta);
    out[offset + j] = fround(radius * c);
    out[offset + j + 8] = fround(radius * s);
  }
}

function uniformF32(gen, n) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (gen.nextU32() & 0xFFFFFF) * 2 ** -24;   // exact in float32
  return a;
}

function normalDouble(gen) {
  if (gen.nextDoubleNormal !== null) {
    const value = gen.nextDoubleNormal;
    gen.nextDoubleNormal = null;
    return value;
  }
  const u1 = gen.nextDouble53();
  const u2 = gen.nextDouble53();
  const r = Math.sqrt(-2.0 * Math.log1p(-u2));
  const theta = 2.0 * Math.PI * u1;
  gen.nextDoubleNormal = r * Math.sin(theta);
  return r * Math.cos(theta);
}

/** torch.randn(shape, generator=g) on the CPU, float32, from an MT19937 that goes on with the stream. */
export function randn(gen, shape) {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  if (n < 16) {
    for (let i = 0; i < n; i++) out[i] = normalDouble(gen);   // Float32Array stores round to float32
    return out;
  }
  out.set(uniformF32(gen, n));
  for (let i = 0; i + 16 <= n; i += 16) boxMuller16(out.subarray(i, i + 16), out, i);
  if (n % 16) boxMuller16(uniformF32(gen, 16), out, n - 16);
  return out;
}

/** The noise of `torch.Generator("cpu").manual_seed(seed)`: one stream, drawn shape after shape. */
export class TorchRandomSource extends RandomSource {
  constructor(seed) {
    super();
    this.seed = seed;
    this.generator = new MT19937(seed);
  }

  normalArray(shape) {
    return randn(this.generator, shape);
  }
}
