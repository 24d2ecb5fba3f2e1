// float32 arithmetic in JavaScript, whose numbers are float64.
//
// Math.fround after a +, -, *, / or sqrt of float32 operands gives the correctly rounded float32 result
// (float64 carries more than 2 * 24 + 2 bits, so rounding twice is harmless for these). A fused multiply-add
// is different: a * b is exact in float64 but the sum is rounded once to float64 and again to float32, which
// can round wrongly when the float64 sum lands on a float32 midpoint. fma32 corrects that with the TwoSum
// error term, as mobilesd/torch_random.py's _fma does (the specification this file ports).

export const fround = Math.fround;

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The bits of a float32 value as an unsigned 32-bit integer. */
export function floatToBits(x) {
  f32[0] = x;
  return u32[0];
}

/** The float32 value of 32 bits. */
export function bitsToFloat(bits) {
  u32[0] = bits >>> 0;
  return f32[0];
}

/** The next float32 after x towards +Infinity (up) or -Infinity (down); x must be a finite float32. */
export function nextFloat32(x, up) {
  if (x === 0) return up ? bitsToFloat(1) : -bitsToFloat(1);
  const bits = floatToBits(x);
  const away = (x > 0) === up;   // moving away from zero increments the magnitude
  return bitsToFloat(away ? bits + 1 : bits - 1);
}

/** float32 fused multiply-add a * b + c, rounded once (a, b, c float32 values). */
export function fma32(a, b, c) {
  const p = a * b;                 // exact: 24 + 24 bits fit in float64's 53
  const s = p + c;
  const bp = s - c;                // TwoSum: s + err === p + c exactly
  const err = (p - bp) + (c - (s - bp));
  const r = fround(s);
  if (err === 0 || r === s || !Number.isFinite(s)) return r;
  const lo = r > s ? nextFloat32(r, false) : r;
  const hi = r > s ? r : nextFloat32(r, true);
  // s sits on the float32 midpoint while the exact sum lies beside it: round towards the exact value
  if ((lo + hi) / 2 === s) return err > 0 ? hi : lo;
  return r;
}
