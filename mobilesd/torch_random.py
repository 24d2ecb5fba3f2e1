"""torch's CPU ``torch.randn`` (float32) rewritten step by step in numpy: the specification the app clients port.

Every client (Java, Swift, JS) reproduces the host's initial noise from a seed, so a seed names an image on
every device. torch's CPU generator is a 32-bit Mersenne Twister (mt19937, seeded with ``init_genrand``);
``torch.randn`` on a float32 tensor then takes one of two paths (ATen ``normal_kernel``):

* **16 elements or more** (contiguous): fill every element with a uniform float ``(u32 & 0xFFFFFF) * 2^-24``,
  then Box-Muller over blocks of 16: lane ``j < 8`` pairs element ``j`` (radius from ``log(1 - u)``) with
  element ``j + 8`` (angle ``2 pi u``): ``data[j] = r cos(theta)``, ``data[j + 8] = r sin(theta)``. When the size
  is not a multiple of 16, 16 *fresh* uniforms are drawn and the last 16 elements recomputed from them.
  On x86 hosts with AVX2 or AVX-512 (``torch.backends.cpu.get_cpu_capability()``) the log, sin and cos are
  the Cephes float polynomials of ATen's ``avx_mathfun.h``, compiled with fused multiply-adds where the
  compiler contracts ``a * b + c``; both are followed here operation by operation, in float32, with exact
  fused multiply-adds. (Hosts on the ``DEFAULT`` capability, e.g. ARM, use libm's ``logf``/``cosf`` instead
  and give other last bits: the golden vectors record the capability they were written with.)
* **fewer than 16 elements**: one ``normal_distribution<double>`` per element: two 53-bit uniforms from
  ``random64()`` (two draws, first one high), ``r = sqrt(-2 log1p(-u2))``, ``theta = 2 pi u1``; returns
  ``r cos(theta)`` and keeps ``r sin(theta)`` in the generator for the next scalar draw.

``tests/test_torch_random.py`` checks this module against torch bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

F32 = np.float32

# Cephes single-precision coefficients (as in ATen's avx_mathfun.h, which follows sse_mathfun / Cephes)
_LOG_P = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
          -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1)
_LOG_Q1, _LOG_Q2 = -2.12194440e-4, 0.693359375
_SQRTHF = 0.707106781186547524
_FOPI = 1.27323954473516                       # 4 / pi
_DP = (-0.78515625, -2.4187564849853515625e-4, -3.77489497744594108e-8)   # -pi/4 in three parts
_SIN_P = (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1)
_COS_P = (2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2)


class MT19937:
    """The 32-bit Mersenne Twister as torch's CPU generator runs it (``manual_seed`` = ``init_genrand``)."""

    def __init__(self, seed: int):
        mt = [0] * 624
        mt[0] = seed & 0xFFFFFFFF
        for i in range(1, 624):
            mt[i] = (1812433253 * (mt[i - 1] ^ (mt[i - 1] >> 30)) + i) & 0xFFFFFFFF
        self.mt, self.index = mt, 624
        self.next_double_normal: float | None = None   # torch caches the second Box-Muller value (scalar path)

    def _twist(self):
        mt = self.mt
        for i in range(624):
            y = (mt[i] & 0x80000000) | (mt[(i + 1) % 624] & 0x7FFFFFFF)
            mt[i] = mt[(i + 397) % 624] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
        self.index = 0

    def next_u32(self) -> int:
        if self.index >= 624:
            self._twist()
        y = self.mt[self.index]
        self.index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680
        y ^= (y << 15) & 0xEFC60000
        y ^= y >> 18
        return y

    def u32_array(self, n: int) -> np.ndarray:
        return np.fromiter((self.next_u32() for _ in range(n)), dtype=np.uint64, count=n)

    def next_u64(self) -> int:
        hi = self.next_u32()
        return (hi << 32) | self.next_u32()


def _fma(a, b, c) -> np.ndarray:
    """float32 fused multiply-add, exactly rounded: a * b is exact in float64; the float64 sum is then
    corrected where rounding it to float32 would round twice (a tie in float32 that is not exact)."""
    a, b, c = (np.asarray(v, F32).astype(np.float64) for v in (a, b, c))
    p = a * b
    s = p + c
    bp = s - c                                # TwoSum: s + err == p + c exactly
    err = (p - bp) + (c - (s - bp))
    r = s.astype(F32)
    # s is a float32 midpoint and the exact sum lies off it: round towards the exact value instead
    lo = np.where(r.astype(np.float64) > s, np.nextafter(r, F32(-np.inf)), r)
    hi = np.where(r.astype(np.float64) < s, np.nextafter(r, F32(np.inf)), r)
    tie = (lo != hi) & ((lo.astype(np.float64) + hi.astype(np.float64)) / 2 == s) & (err != 0)
    return np.where(tie, np.where(err > 0, hi, lo), r).astype(F32)


def _mul(a, b):
    return (np.asarray(a, F32) * np.asarray(b, F32)).astype(F32)


def _add(a, b):
    return (np.asarray(a, F32) + np.asarray(b, F32)).astype(F32)


def log_f32(x: np.ndarray) -> np.ndarray:
    """Cephes logf for x in (0, 1] as the contracted AVX code computes it."""
    x = np.maximum(np.asarray(x, F32), np.uint32(0x00800000).view(F32))
    bits = x.view(np.uint32)
    e = ((bits >> 23).astype(np.int32) - 0x7F).astype(F32)
    x = ((bits & np.uint32(0x807FFFFF)) | np.uint32(0x3F000000)).view(F32)   # mantissa in [0.5, 1)
    e = _add(e, F32(1))
    small = x < F32(_SQRTHF)
    e = (e - np.where(small, F32(1), F32(0))).astype(F32)
    x = _add((x - F32(1)).astype(F32), np.where(small, x, F32(0)))   # x - 1, or x + x - 1 below sqrt(1/2)
    z = _mul(x, x)
    y = np.full_like(x, F32(_LOG_P[0]))
    for p in _LOG_P[1:]:
        y = _fma(y, x, F32(p))
    y = _mul(y, x)
    y = _fma(y, z, _mul(e, F32(_LOG_Q1)))
    y = _fma(-z, F32(0.5), y)
    return _fma(e, F32(_LOG_Q2), _add(x, y))


def sincos_f32(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cephes sinf/cosf (one range reduction for both) as the contracted AVX code computes them."""
    x = np.asarray(x, F32)
    sin_negative = np.signbit(x)
    x = np.abs(x)
    j = _mul(x, F32(_FOPI)).astype(np.int32)        # truncation
    j = (j + 1) & ~1
    y = j.astype(F32)
    sin_negative = sin_negative ^ ((j & 4) != 0)
    cos_negative = (~(j - 2) & 4) != 0
    first_poly = (j & 2) == 0                    # cos polynomial gives cos (else the two swap)
    for dp in _DP:
        x = _fma(y, F32(dp), x)
    z = _mul(x, x)
    yc = np.full_like(x, F32(_COS_P[0]))
    yc = _fma(yc, z, F32(_COS_P[1]))
    yc = _fma(yc, z, F32(_COS_P[2]))
    yc = _mul(yc, z)
    yc = _add(_fma(yc, z, -_mul(z, F32(0.5))), F32(1))
    ys = np.full_like(x, F32(_SIN_P[0]))
    ys = _fma(ys, z, F32(_SIN_P[1]))
    ys = _fma(ys, z, F32(_SIN_P[2]))
    ys = _fma(_mul(ys, z), x, x)
    s = np.where(first_poly, ys, yc)
    c = np.where(first_poly, yc, ys)
    return np.where(sin_negative, -s, s).astype(F32), np.where(cos_negative, -c, c).astype(F32)


def _box_muller_16(block: np.ndarray) -> np.ndarray:
    u1 = (F32(1) - block[:8]).astype(F32)
    radius = np.sqrt(_mul(F32(-2), log_f32(u1))).astype(F32)
    theta = _mul(F32(2 * math.pi), block[8:16])
    s, c = sincos_f32(theta)
    return np.concatenate([_mul(radius, c), _mul(radius, s)])


def _uniform_f32(gen: MT19937, n: int) -> np.ndarray:
    return ((gen.u32_array(n) & 0xFFFFFF).astype(F32) * F32(2.0 ** -24)).astype(F32)


def _normal_double(gen: MT19937) -> float:
    if gen.next_double_normal is not None:
        value, gen.next_double_normal = gen.next_double_normal, None
        return value
    u1 = (gen.next_u64() & ((1 << 53) - 1)) * 2.0 ** -53
    u2 = (gen.next_u64() & ((1 << 53) - 1)) * 2.0 ** -53
    r = math.sqrt(-2.0 * math.log1p(-u2))
    theta = 2.0 * math.pi * u1
    gen.next_double_normal = r * math.sin(theta)
    return r * math.cos(theta)


def randn(gen: MT19937 | int, shape) -> np.ndarray:
    """``torch.randn(shape, generator=torch.Generator().manual_seed(seed))`` (float32, CPU, AVX2/AVX-512 host).
    Pass an ``MT19937`` to continue a stream, as a sampler that draws noise every step does."""
    gen = MT19937(gen) if isinstance(gen, int) else gen
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape)) if shape else 1
    if n < 16:
        return np.array([_normal_double(gen) for _ in range(n)], np.float64).astype(F32).reshape(shape)
    data = _uniform_f32(gen, n)
    for i in range(0, n - 15, 16):
        data[i:i + 16] = _box_muller_16(data[i:i + 16])
    if n % 16:
        data[n - 16:] = _box_muller_16(_uniform_f32(gen, 16))
    return data.reshape(shape)
