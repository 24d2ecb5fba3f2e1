"""The MIL interpreter (mobilesd.runtime.mil) against each op's documented definition, and converted tiny
components against PyTorch.

Per-op tests build small programs with coremltools' Builder and compare with numpy written from the op
docstrings in coremltools/converters/mil/mil/ops/defs/iOS15..iOS18 (not from the interpreter's code).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

warnings.filterwarnings("ignore", module="coremltools")   # its import-time notes on Linux
import coremltools as ct  # noqa: E402  (a hard dependency: an import error must fail, not skip)

from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import Function, Program, types

from mobilesd.errors import MobileSDError
from mobilesd.runtime.mil import (
    SUPPORTED_OPS,
    MILInterpreter,
    MILSession,
    UnsupportedMILOp,
    interpret,
    load_program,
    static_facts,
)

iOS16, iOS17, iOS18 = ct.target.iOS16, ct.target.iOS17, ct.target.iOS18
rng = np.random.default_rng(0)


def R(*shape, lo=-2.0, hi=2.0):
    return rng.uniform(lo, hi, shape).astype(np.float32)


def _mil_dtype(a: np.ndarray, fp16: bool):
    if a.dtype == np.bool_:
        return types.bool
    if a.dtype.kind in "iu":
        return types.int32
    return types.fp16 if fp16 else types.fp32


def build_program(build, *arrays, opset=iOS17, fp16=False) -> Program:
    specs = {f"x{i}": mb.placeholder(shape=a.shape, dtype=_mil_dtype(a, fp16)) for i, a in enumerate(arrays)}
    with Function(specs, opset_version=opset) as f:
        outs = build(*[f.inputs[f"x{i}"] for i in range(len(arrays))])
        outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
        f.set_outputs(outs)
    prog = Program()
    prog.add_function("main", f)
    return prog


def run(build, *arrays, opset=iOS17, fp16=False, emulate=True):
    """Build a one-function program around ``build`` and interpret it; the outputs in order."""
    prog = build_program(build, *arrays, opset=opset, fp16=fp16)
    out = interpret(prog, {f"x{i}": a for i, a in enumerate(arrays)}, fp16_emulation=emulate, threads=1)
    vals = [out[v.name] for v in prog.functions["main"].outputs]
    return vals[0] if len(vals) == 1 else vals


def close(got, want, rtol=1e-5, atol=1e-5):
    want = np.asarray(want)
    assert np.asarray(got).shape == want.shape, (np.asarray(got).shape, want.shape)
    if want.dtype == np.bool_ or want.dtype.kind in "iu":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want.astype(np.float32), rtol=rtol, atol=atol)


erf = np.vectorize(math.erf)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---- elementwise ------------------------------------------------------------------------------------

A, B = R(2, 3), R(3)
POS = R(2, 3, lo=0.1, hi=3.0)
BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "real_div": np.divide, "maximum": np.maximum,
    "minimum": np.minimum, "floor_div": lambda x, y: np.floor(x / y), "mod": np.mod,
    "equal": np.equal, "not_equal": np.not_equal, "less": np.less, "less_equal": np.less_equal,
    "greater": np.greater, "greater_equal": np.greater_equal,
}


@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_broadcasting(op):
    y = B.copy()
    y[0] = A[0, 0]  # an equal pair for the comparisons
    close(run(lambda x, z: getattr(mb, op)(x=x, y=z), A, y), BINARY[op](A, y))


def test_pow():
    close(run(lambda x, y: mb.pow(x=x, y=y), POS, B), np.power(POS, B), rtol=1e-5)


@pytest.mark.parametrize("op,fn", [("logical_and", np.logical_and), ("logical_or", np.logical_or),
                                   ("logical_xor", np.logical_xor)])
def test_logical(op, fn):
    a, b = rng.random((2, 4)) > 0.5, rng.random((2, 4)) > 0.5
    close(run(lambda x, y: getattr(mb, op)(x=x, y=y), a, b), fn(a, b))
    close(run(lambda x: mb.logical_not(x=x), a), ~a)


def test_integer_arithmetic_and_select():
    # the text encoder's pattern: select(ids >= 0, ids, ids + vocab)
    ids = np.array([[3, -1, 0, -5]], dtype=np.int32)
    got = run(lambda x: mb.select(cond=mb.greater_equal(x=x, y=0), a=x, b=mb.add(x=x, y=10)), ids)
    close(got, np.where(ids >= 0, ids, ids + 10).astype(np.int32))
    assert got.dtype == np.int32


UNARY = {
    "abs": (np.abs, A), "acos": (np.arccos, R(2, 3, lo=-0.9, hi=0.9)), "asin": (np.arcsin, R(2, 3, lo=-0.9, hi=0.9)),
    "atan": (np.arctan, A), "atanh": (np.arctanh, R(2, 3, lo=-0.9, hi=0.9)), "ceil": (np.ceil, A),
    "cos": (np.cos, A), "cosh": (np.cosh, A), "erf": (erf, A), "exp": (np.exp, A), "exp2": (np.exp2, A),
    "floor": (np.floor, A), "sign": (np.sign, np.array([-2.0, 0.0, 3.0], np.float32)), "sin": (np.sin, A),
    "sinh": (np.sinh, A), "sqrt": (np.sqrt, POS), "square": (np.square, A), "tan": (np.tan, R(2, 3, lo=-1, hi=1)),
    "tanh": (np.tanh, A), "relu": (lambda x: np.maximum(x, 0), A), "relu6": (lambda x: np.minimum(np.maximum(x, 0), 6), A * 5),
    "sigmoid": (sigmoid, A), "silu": (lambda x: x * sigmoid(x), A), "softplus": (lambda x: np.log(1 + np.exp(x)), A),
    "softsign": (lambda x: x / (1 + np.abs(x)), A), "identity": (lambda x: x, A),
}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary(op):
    fn, x = UNARY[op]
    close(run(lambda v: getattr(mb, op)(x=v), x), fn(x.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_round_half_to_zero_and_even():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.4, -0.6], np.float32)
    close(run(lambda v: mb.round(x=v), x), [-2, -2, 0, 0, 2, 2, 0, -1])  # doc: "0.5 is rounded to 0"


def test_epsilon_unaries():
    close(run(lambda v: mb.inverse(x=v, epsilon=0.5), POS), 1 / (POS + 0.5))
    close(run(lambda v: mb.inverse(x=v), POS), 1 / (POS + 1e-4))
    close(run(lambda v: mb.log(x=v, epsilon=0.25), POS), np.log(POS + 0.25))
    close(run(lambda v: mb.rsqrt(x=v, epsilon=0.1), POS), 1 / np.sqrt(POS + 0.1))
    close(run(lambda v: mb.clip(x=v, alpha=-0.5, beta=0.7), A), np.clip(A, -0.5, 0.7))
    close(run(lambda v: mb.threshold(x=v, alpha=0.3), A), np.maximum(A, 0.3))


def test_cast():
    x = np.array([-1.7, -0.2, 0.0, 2.9], np.float32)
    got = run(lambda v: mb.cast(x=v, dtype="int32"), x)
    close(got, x.astype(np.int32))  # numpy astype: towards zero
    close(run(lambda v: mb.cast(x=v, dtype="bool"), x), x != 0)
    close(run(lambda v: mb.cast(x=v, dtype="fp32"), np.array([3, -4], np.int32)), [3.0, -4.0])


@pytest.mark.parametrize("mode", ["EXACT", "TANH_APPROXIMATION", "SIGMOID_APPROXIMATION"])
def test_gelu(mode):
    x = A.astype(np.float64)
    want = {"EXACT": 0.5 * x * (1 + erf(x / np.sqrt(2))),
            "TANH_APPROXIMATION": 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))),
            "SIGMOID_APPROXIMATION": x * sigmoid(1.702 * x)}[mode]
    close(run(lambda v: mb.gelu(x=v, mode=mode), A), want)


def test_parametric_activations():
    x = A.astype(np.float64)
    close(run(lambda v: mb.softmax(x=v, axis=0), A), softmax(x, 0))
    close(run(lambda v: mb.softmax(x=v), A), softmax(x, -1))
    close(run(lambda v: mb.leaky_relu(x=v, alpha=0.1), A), np.where(x >= 0, x, 0.1 * x))
    close(run(lambda v: mb.elu(x=v, alpha=0.7), A), np.where(x > 0, x, 0.7 * (np.exp(x) - 1)))
    close(run(lambda v: mb.clamped_relu(x=v, alpha=0.2, beta=1.0), A), np.minimum(1.0, np.where(x >= 0, x, 0.2 * x)))
    close(run(lambda v: mb.linear_activation(x=v, alpha=1.5, beta=-0.5), A), 1.5 * x - 0.5)
    close(run(lambda v: mb.scaled_tanh(x=v, alpha=2.0, beta=0.5), A), 2 * np.tanh(0.5 * x))
    close(run(lambda v: mb.sigmoid_hard(x=v, alpha=0.3, beta=0.4), A), np.minimum(np.maximum(0.3 * x + 0.4, 0), 1))
    close(run(lambda v: mb.thresholded_relu(x=v, alpha=0.5), A), np.where(x >= 0.5, x, 0))
    x4 = R(2, 3, 2, 2)
    al, be = R(3, lo=0.1, hi=1), R(3, lo=0.1, hi=1)
    close(run(lambda v: mb.prelu(x=v, alpha=al), x4), np.where(x4 > 0, x4, al[None, :, None, None] * x4))
    close(run(lambda v: mb.softplus_parametric(x=v, alpha=al, beta=be), x4),
          al[None, :, None, None] * np.log(1 + np.exp(be[None, :, None, None] * x4)))


# ---- linear algebra ---------------------------------------------------------------------------------

def test_linear_and_matmul():
    x, w, b = R(2, 5, 4), R(3, 4), R(3)
    close(run(lambda v: mb.linear(x=v, weight=w, bias=b), x), x @ w.T + b)
    close(run(lambda v: mb.linear(x=v, weight=w), x), x @ w.T)
    y = R(2, 6, 4)
    close(run(lambda p, q: mb.matmul(x=p, y=q, transpose_y=True), x, y), x @ np.swapaxes(y, -1, -2))
    bx, by = R(3, 1, 2, 4), R(5, 4, 6)  # batch broadcast (numpy rule)
    close(run(lambda p, q: mb.matmul(x=p, y=q), bx, by), bx @ by)


def test_matmul_transpose_x():
    x, y = R(2, 5, 4), R(2, 5, 3)
    close(run(lambda p, q: mb.matmul(x=p, y=q, transpose_x=True), x, y), np.swapaxes(x, -1, -2) @ y)


@pytest.mark.parametrize("eq,sa,sb", [
    ("nchw,nwhu->nchu", (2, 3, 4, 5), (2, 5, 4, 6)),
    ("nchw,nwhu->nchu", (1, 3, 4, 5), (2, 5, 1, 6)),    # B and H broadcast (the doc's size-1 rule)
    ("chw,whr->chr", (3, 4, 5), (5, 4, 2)),
    ("chw,whr->chr", (3, 1, 5), (5, 4, 2)),
    ("bkhc,bchq->bkhq", (2, 6, 1, 5), (2, 5, 1, 7)),  # what coremltools emits for the split-einsum attention
    ("bchk,bkhq->bchq", (2, 5, 1, 6), (2, 6, 1, 7)),
])
def test_einsum(eq, sa, sb):
    a, b = R(*sa), R(*sb)
    # the doc's definition: a matmul over dims -1 (of a) and -3 (of b), the others batch
    bb = np.broadcast_shapes(a.shape[:-3] + a.shape[-2:-1], b.shape[:-3] + b.shape[-2:-1])
    ta = np.moveaxis(a, -2, -3)  # [.., H, C, W]
    tb = np.moveaxis(b, -2, -3)  # [.., H, W, U]
    want = np.moveaxis(np.matmul(ta, tb), -3, -2)
    assert want.shape[-2] == bb[-1]
    close(run(lambda p, q: mb.einsum(values=(p, q), equation=eq), a, b), want, rtol=1e-4)


# ---- convolution ------------------------------------------------------------------------------------

def np_conv(x, w, b, strides, pads, dil, groups):
    """Direct convolution from the definition (cross-correlation over padded input)."""
    n_sp = x.ndim - 2
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + [tuple(p) for p in pads])
    o_ch, cg = w.shape[:2]
    k = w.shape[2:]
    outs = [(xp.shape[2 + i] - (k[i] - 1) * dil[i] - 1) // strides[i] + 1 for i in range(n_sp)]
    y = np.zeros((x.shape[0], o_ch, *outs))
    per_group = o_ch // groups
    for o in range(o_ch):
        g = o // per_group
        for pos in np.ndindex(*outs):
            win = xp[(slice(None), slice(g * cg, (g + 1) * cg)) + tuple(
                slice(pos[i] * strides[i], pos[i] * strides[i] + (k[i] - 1) * dil[i] + 1, dil[i]) for i in range(n_sp))]
            y[(slice(None), o) + pos] = (win * w[o]).reshape(x.shape[0], -1).sum(1) + (b[o] if b is not None else 0)
    return y


@pytest.mark.parametrize("case", ["valid", "same_odd", "same_even", "same_lower_even", "same_stride2", "custom",
                                  "strided_dilated", "depthwise", "grouped_bias", "conv1d"])
def test_conv(case):
    x = R(1, 4, 7, 6)
    w = R(6, 4, 3, 3)
    b = None
    kw = {}
    if case == "valid":
        pads, kw = [(0, 0), (0, 0)], {"pad_type": "valid"}
    elif case == "same_odd":  # doc: odd dilated kernel -> floor(k/2) on both sides
        pads, kw = [(1, 1), (1, 1)], {"pad_type": "same"}
    elif case == "same_even":
        # d_out = ceil(d_in / stride); the total pad (k-1 = 3) puts the extra element after (coremltools maps
        # "same" to BOTTOM_RIGHT_HEAVY and "same_lower" to TOP_LEFT_HEAVY; see docs/mil-interpreter.md)
        w = R(6, 4, 4, 4)
        pads, kw = [(1, 2), (1, 2)], {"pad_type": "same"}
    elif case == "same_lower_even":
        w = R(6, 4, 4, 4)
        pads, kw = [(2, 1), (2, 1)], {"pad_type": "same_lower"}
    elif case == "same_stride2":
        # total = max(0, s * ceil(d / s) - d + k - s): 7 -> 1 (0, 1) with k=2, 6 -> 0
        w = R(6, 4, 2, 2)
        pads, kw = [(0, 1), (0, 0)], {"pad_type": "same", "strides": [2, 2]}
    elif case == "custom":
        pads, kw = [(2, 0), (1, 3)], {"pad_type": "custom", "pad": [2, 0, 1, 3]}
    elif case == "strided_dilated":
        pads, kw = [(1, 1), (0, 2)], {"pad_type": "custom", "pad": [1, 1, 0, 2], "strides": [2, 1], "dilations": [2, 2]}
    elif case == "depthwise":
        w = R(8, 1, 3, 3)
        pads, kw = [(1, 1), (1, 1)], {"pad_type": "same", "groups": 4}
    elif case == "grouped_bias":
        w, b = R(6, 2, 3, 3), R(6)
        pads, kw = [(0, 0), (0, 0)], {"pad_type": "valid", "groups": 2, "bias": b}
    else:
        x, w = R(2, 3, 9), R(5, 3, 3)
        pads, kw = [(1, 1)], {"pad_type": "same"}
    n = x.ndim - 2
    want = np_conv(x, w, b, kw.get("strides", [1] * n), pads, kw.get("dilations", [1] * n), kw.get("groups", 1))
    if case.startswith("same"):
        assert want.shape[2:] == tuple(math.ceil(d / s) for d, s in zip(x.shape[2:], kw.get("strides", [1] * n)))
    close(run(lambda v: mb.conv(x=v, weight=w, **kw), x), want, rtol=1e-4, atol=1e-4)


def np_conv_transpose(x, w, strides, dil, groups):
    n, cin = x.shape[:2]
    cout_g = w.shape[1]
    k = w.shape[2:]
    full = [(x.shape[2 + i] - 1) * strides[i] + (k[i] - 1) * dil[i] + 1 for i in range(len(k))]
    y = np.zeros((n, cout_g * groups, *full))
    cin_g = cin // groups
    for c in range(cin):
        g = c // cin_g
        for pos in np.ndindex(*x.shape[2:]):
            for kp in np.ndindex(*k):
                out = tuple(pos[i] * strides[i] + kp[i] * dil[i] for i in range(len(k)))
                y[(slice(None), slice(g * cout_g, (g + 1) * cout_g)) + out] += (
                    x[(slice(None), c) + pos][:, None] * w[(c, slice(None)) + kp][None, :])
    return y


@pytest.mark.parametrize("custom", [False, True])
def test_conv_transpose(custom):
    x, w = R(1, 4, 3, 4), R(4, 3, 3, 2)
    want = np_conv_transpose(x, w, [2, 1], [1, 1], 1)
    kw = {"strides": [2, 1]}
    if custom:
        kw.update(pad_type="custom", pad=[1, 0, 0, 1])
        want = want[:, :, 1:, :-1]
    close(run(lambda v: mb.conv_transpose(x=v, weight=w, **kw), x), want, rtol=1e-4, atol=1e-4)


# ---- normalization ----------------------------------------------------------------------------------

def test_normalizations():
    x = R(2, 3, 4, 5)
    mean, var, g, b = R(3), R(3, lo=0.5, hi=2), R(3), R(3)
    c = (slice(None), None, None)
    close(run(lambda v: mb.batch_norm(x=v, mean=mean, variance=var, gamma=g, beta=b, epsilon=1e-3), x),
          g[c] * (x - mean[c]) / np.sqrt(var[c] + 1e-3) + b[c])
    m, s = x.mean(axis=(2, 3), keepdims=True), x.var(axis=(2, 3), keepdims=True)
    close(run(lambda v: mb.instance_norm(x=v, gamma=g, beta=b, epsilon=1e-4), x),
          g[c] * (x - m) / np.sqrt(s + 1e-4) + b[c], rtol=1e-4, atol=1e-5)
    gl, bl = R(5), R(5)
    m, s = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    close(run(lambda v: mb.layer_norm(x=v, axes=[-1], gamma=gl, beta=bl, epsilon=1e-5), x),
          gl * (x - m) / np.sqrt(s + 1e-5) + bl, rtol=1e-4, atol=1e-5)
    g2 = R(3, 4)  # axes [1, 2]: gamma has shape x.shape[axes]
    m, s = x.mean(axis=(1, 2), keepdims=True), x.var(axis=(1, 2), keepdims=True)
    close(run(lambda v: mb.layer_norm(x=v, axes=[1, 2], gamma=g2, epsilon=1e-5), x),
          g2[None, :, :, None] * (x - m) / np.sqrt(s + 1e-5), rtol=1e-4, atol=1e-5)
    close(run(lambda v: mb.l2_norm(x=v, epsilon=1e-6), x),
          x / np.sqrt((x ** 2).sum(axis=(1, 2, 3), keepdims=True) + 1e-6))


def test_local_response_norm():
    x = R(1, 6, 2, 2)
    size, alpha, beta, k = 3, 1e-2, 0.75, 1.5
    want = np.empty_like(x)
    for ch in range(6):
        lo, hi = max(0, ch - size // 2), min(6, ch + size // 2 + 1)
        want[:, ch] = x[:, ch] / (k + alpha / size * (x[:, lo:hi] ** 2).sum(1)) ** beta
    close(run(lambda v: mb.local_response_norm(x=v, size=size, alpha=alpha, beta=beta, k=k), x), want)


# ---- pooling ----------------------------------------------------------------------------------------

def np_pool(x, k, s, pads, kind, exclude=False):
    xp = np.pad(x, [(0, 0), (0, 0)] + pads, constant_values=-np.inf if kind == "max" else 0.0)
    mask = np.pad(np.ones(x.shape[2:]), pads)
    oh = (xp.shape[2] - k[0]) // s[0] + 1
    ow = (xp.shape[3] - k[1]) // s[1] + 1
    y = np.zeros(x.shape[:2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xp[:, :, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]]
            if kind == "max":
                y[:, :, i, j] = win.max(axis=(2, 3))
            elif kind == "l2":
                y[:, :, i, j] = np.sqrt((win ** 2).sum(axis=(2, 3)))
            else:
                cnt = mask[i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]].sum() if exclude else k[0] * k[1]
                y[:, :, i, j] = win.sum(axis=(2, 3)) / cnt
    return y


def test_pools():
    x = R(1, 2, 5, 6)
    close(run(lambda v: mb.max_pool(x=v, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid"), x),
          np_pool(x, [2, 2], [2, 2], [(0, 0), (0, 0)], "max"))
    close(run(lambda v: mb.avg_pool(x=v, kernel_sizes=[3, 3], strides=[1, 1], pad_type="same"), x),
          np_pool(x, [3, 3], [1, 1], [(1, 1), (1, 1)], "avg"))
    close(run(lambda v: mb.avg_pool(x=v, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 0, 1],
                                    exclude_padding_from_average=True), x),
          np_pool(x, [3, 3], [2, 2], [(1, 1), (0, 1)], "avg", exclude=True))
    close(run(lambda v: mb.l2_pool(x=v, kernel_sizes=[2, 3], strides=[1, 2], pad_type="valid"), x),
          np_pool(x, [2, 3], [1, 2], [(0, 0), (0, 0)], "l2"))


# ---- reductions -------------------------------------------------------------------------------------

REDUCE = {
    "reduce_sum": np.sum, "reduce_mean": np.mean, "reduce_max": np.max, "reduce_min": np.min, "reduce_prod": np.prod,
    "reduce_l1_norm": lambda x, axis, keepdims: np.abs(x).sum(axis=axis, keepdims=keepdims),
    "reduce_l2_norm": lambda x, axis, keepdims: np.sqrt((x ** 2).sum(axis=axis, keepdims=keepdims)),
    "reduce_sum_square": lambda x, axis, keepdims: (x ** 2).sum(axis=axis, keepdims=keepdims),
    "reduce_log_sum": lambda x, axis, keepdims: np.log(x.sum(axis=axis, keepdims=keepdims)),
    "reduce_log_sum_exp": lambda x, axis, keepdims: np.log(np.exp(x).sum(axis=axis, keepdims=keepdims)),
}


@pytest.mark.parametrize("op", sorted(REDUCE))
def test_reductions(op):
    x = R(2, 3, 4, lo=0.2, hi=1.5)
    close(run(lambda v: getattr(mb, op)(x=v, axes=[0, -1], keep_dims=True), x), REDUCE[op](x, axis=(0, 2), keepdims=True))
    close(run(lambda v: getattr(mb, op)(x=v, axes=[1]), x), REDUCE[op](x, axis=(1,), keepdims=False))
    close(run(lambda v: getattr(mb, op)(x=v), x), REDUCE[op](x, axis=None, keepdims=False))


def test_argmax_argmin():
    x = R(3, 5)
    close(run(lambda v: mb.reduce_argmax(x=v, axis=1), x), np.argmax(x, 1).astype(np.int32))
    close(run(lambda v: mb.reduce_argmin(x=v, axis=0, keep_dims=True), x), np.argmin(x, 0)[None].astype(np.int32))


# ---- shapes -----------------------------------------------------------------------------------------

def test_reshape_transpose_dims():
    x = R(2, 3, 4)
    close(run(lambda v: mb.reshape(x=v, shape=[4, -1]), x), x.reshape(4, 6))
    close(run(lambda v: mb.reshape(x=v, shape=[0, -1, 2]), x), x.reshape(2, 6, 2))  # 0 copies the dim
    close(run(lambda v: mb.reshape(x=v, shape=[1, 0, -1, 0]), x), x.reshape(1, 2, 3, 4))  # iOS17: 0s right-aligned
    close(run(lambda v: mb.transpose(x=v, perm=[0, 2, -2]), x), x.transpose(0, 2, 1))
    close(run(lambda v: mb.expand_dims(x=v, axes=[0, -1]), x), x[None, ..., None])
    y = R(1, 3, 1, 2)
    close(run(lambda v: mb.squeeze(x=v), y), y.reshape(3, 2))
    close(run(lambda v: mb.squeeze(x=v, axes=[0, 1]), y), y.reshape(3, 1, 2))  # non-1 dims are ignored (PyTorch)
    close(run(lambda v: mb.flatten2d(x=v, axis=-1), x), x.reshape(6, 4))
    close(run(lambda v: mb.reshape_like(x=v, ref_tensors=(mb.fill(shape=[3, 8]), mb.fill(shape=[5, 1, 3])),
                                        begins=[1, 1], ends=[2, 2], end_masks=[False, True]), x), x.reshape(8, 1, 3))


def test_concat_stack_split():
    a, b = R(2, 3), R(2, 3)
    close(run(lambda p, q: mb.concat(values=(p, q), axis=1), a, b), np.concatenate([a, b], 1))
    inter = np.empty((4, 3), np.float32)
    inter[0::2], inter[1::2] = a, b  # doc example: output[0::2] = in1, output[1::2] = in2
    close(run(lambda p, q: mb.concat(values=(p, q), axis=0, interleave=True), a, b), inter)
    close(run(lambda p, q: mb.stack(values=(p, q), axis=-1), a, b), np.stack([a, b], -1))
    x = R(6, 4)
    got = run(lambda v: mb.split(x=v, split_sizes=[1, 2, 3], axis=0), x)
    for g, w in zip(got, np.split(x, [1, 3], 0)):
        close(g, w)
    got = run(lambda v: mb.split(x=v, num_splits=2, axis=-1), x)
    for g, w in zip(got, np.split(x, 2, 1)):
        close(g, w)


def test_slices():
    x = R(4, 5, 6)
    close(run(lambda v: mb.slice_by_index(x=v, begin=[1, 0, 5], end=[3, 4, 0], stride=[1, 2, -2]), x), x[1:3, 0:4:2, 5:0:-2])
    close(run(lambda v: mb.slice_by_index(x=v, begin=[9, -1, 2], end=[2, 0, 0], begin_mask=[True, False, False],
                                          end_mask=[False, True, True], squeeze_mask=[False, True, False]), x),
          x[:2, -1, 2:])
    close(run(lambda v: mb.slice_by_index(x=v, begin=[0, 0, 0], end=[0, 0, 0], stride=[1, -1, 1],
                                          begin_mask=[True] * 3, end_mask=[True] * 3), x), x[:, ::-1, :])
    close(run(lambda v: mb.slice_by_size(x=v, begin=[1, 2, -3], size=[2, -1, 2]), x), x[1:3, 2:, 3:5])
    upd = R(3, 2)
    want = x.copy()
    want[1, 0:5:2, 1:3] = upd
    close(run(lambda v, u: mb.slice_update(x=v, update=u, begin=[1, 0, 1], end=[2, 5, 3], stride=[1, 2, 1],
                                           squeeze_mask=[True, False, False]), x, upd, opset=iOS18), want)
    close(run(lambda v: mb.crop(x=v, crop_height=[1, 2], crop_width=[0, 3]), x), x[:, 1:3, 0:3])


def test_tile_reverse_windows():
    x = R(2, 3)
    close(run(lambda v: mb.tile(x=v, reps=[2, 3]), x), np.tile(x, (2, 3)))
    close(run(lambda v: mb.reverse(x=v, axes=[-1]), x), x[:, ::-1])
    close(run(lambda v: mb.reverse(x=v), x), x[::-1, ::-1])
    s = R(3, 5, 2)
    want = s.copy()
    for bi, n in enumerate([2, 5, 0]):
        want[bi, :n] = s[bi, :n][::-1]
    close(run(lambda v: mb.reverse_sequence(x=v, lengths=np.array([2, 5, 0], np.int32), seq_axis=1, batch_axis=0), s), want)
    y = R(2, 7, 3)
    want = np.stack([y[:, i * 2:i * 2 + 3] for i in range((7 - 3) // 2 + 1)], axis=1)  # [2, windows, 3, 3]
    close(run(lambda v: mb.sliding_windows(x=v, axis=1, size=3, stride=2), y), want)


def test_depth_space_shuffles():
    n, c, h, w, bs = 1, 8, 2, 3, 2
    x = R(n, c, h, w)
    # depth_to_space: TensorFlow's DepthToSpace (the TF frontend maps it here) in NCHW:
    # out[n, ch, h*b + i, w*b + j] = in[n, (i*b + j) * C_out + ch, h, w]
    co = c // (bs * bs)
    d2s = np.zeros((n, co, h * bs, w * bs), np.float32)
    for ch, hh, ww, i, j in np.ndindex(co, h, w, bs, bs):
        d2s[0, ch, hh * bs + i, ww * bs + j] = x[0, (i * bs + j) * co + ch, hh, ww]
    close(run(lambda v: mb.depth_to_space(x=v, block_size=bs), x), d2s)
    close(run(lambda v: mb.space_to_depth(x=v, block_size=bs), d2s), x)
    # pixel_shuffle: PyTorch's PixelShuffle: out[n, ch, h*f + i, w*f + j] = in[n, ch*f*f + i*f + j, h, w]
    ps = np.zeros((n, co, h * bs, w * bs), np.float32)
    for ch, hh, ww, i, j in np.ndindex(co, h, w, bs, bs):
        ps[0, ch, hh * bs + i, ww * bs + j] = x[0, ch * bs * bs + i * bs + j, hh, ww]
    close(run(lambda v: mb.pixel_shuffle(x=v, upscale_factor=bs), x), ps)
    close(run(lambda v: mb.pixel_unshuffle(x=v, downscale_factor=np.uint32(bs)), ps, opset=iOS16), x)


# ---- tensor creation and misc -----------------------------------------------------------------------

def test_shape_fill_range():
    x = R(2, 3, 4)
    close(run(lambda v: mb.shape(x=v), x), np.array([2, 3, 4], np.int32))
    close(run(lambda v: mb.add(x=mb.fill(shape=mb.shape(x=v), value=2.5), y=v), x), x + 2.5)
    close(run(lambda v: mb.fill_like(ref_tensor=v, value=-1.0), x, opset=iOS16), np.full_like(x, -1.0))
    close(run(lambda v: mb.add(x=mb.range_1d(start=1.0, end=3.0, step=0.5), y=v), R(4)[:1] * 0), np.arange(1.0, 3.0, 0.5))
    ivec = np.zeros(5, np.int32)
    close(run(lambda v: mb.add(x=mb.range_1d(start=2, end=12, step=2), y=v), ivec), np.arange(2, 12, 2, dtype=np.int32))


def test_band_part_cumsum_pad():
    x = R(2, 4, 5)
    m, n = np.arange(4)[:, None], np.arange(5)[None, :]
    for lower, upper in [(1, 2), (-1, 0), (0, -1), (0, 0)]:
        keep = ((lower < 0) | ((m - n) <= lower)) & ((upper < 0) | ((n - m) <= upper))
        close(run(lambda v, lo=lower, up=upper: mb.band_part(x=v, lower=lo, upper=up), x), x * keep)
    c = np.cumsum(x, axis=1)
    close(run(lambda v: mb.cumsum(x=v, axis=1), x), c)
    close(run(lambda v: mb.cumsum(x=v, axis=1, exclusive=True), x), c - x)
    rc = np.cumsum(x[:, ::-1], axis=1)[:, ::-1]
    close(run(lambda v: mb.cumsum(x=v, axis=1, reverse=True), x), rc)
    close(run(lambda v: mb.cumsum(x=v, axis=1, reverse=True, exclusive=True), x), rc - x)
    close(run(lambda v: mb.pad(x=v, pad=np.array([1, 0, 2, 1], np.int32), constant_val=3.0), x),
          np.pad(x, [(0, 0), (1, 0), (2, 1)], constant_values=3.0))
    close(run(lambda v: mb.pad(x=v, pad=np.array([0, 0, 1, 2, 2, 1], np.int32), mode="reflect"), x),
          np.pad(x, [(0, 0), (1, 2), (2, 1)], mode="reflect"))
    close(run(lambda v: mb.pad(x=v, pad=np.array([2, 3], np.int32), mode="replicate"), x),
          np.pad(x, [(0, 0), (0, 0), (2, 3)], mode="edge"))


def test_one_hot_non_zero_sort():
    idx = np.array([0, 2, 3, 1], np.int32)
    oh = np.full((4, 4), -1.0, np.float32)
    oh[np.arange(4), idx] = 5.0
    close(run(lambda v: mb.one_hot(indices=v, one_hot_vector_size=4, axis=-1, on_value=5.0, off_value=-1.0), idx), oh)
    close(run(lambda v: mb.one_hot(indices=v, one_hot_vector_size=4, axis=0, on_value=5.0, off_value=-1.0), idx), oh.T)
    x = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, -1.0]], np.float32)
    close(run(lambda v: mb.non_zero(x=v), x), np.argwhere(x != 0).astype(np.int32))
    y = R(3, 6)
    close(run(lambda v: mb.argsort(x=v, axis=-1), y), np.argsort(-y, axis=-1).astype(np.int32))
    close(run(lambda v: mb.argsort(x=v, axis=0, ascending=True), y), np.argsort(y, axis=0).astype(np.int32))
    vals, ind = run(lambda v: mb.topk(x=v, k=2, axis=1), y)
    order = np.argsort(-y, axis=1)[:, :2]
    close(ind, order.astype(np.int32))
    close(vals, np.take_along_axis(y, order, 1))
    vals = run(lambda v: mb.topk(x=v, k=3, axis=0, ascending=True, return_indices=False), y, opset=iOS16)
    close(vals, np.sort(y, axis=0)[:3])


# ---- gather / scatter -------------------------------------------------------------------------------

def test_gathers():
    x = R(4, 5, 3)
    idx = np.array([[3, 0], [1, 1]], np.int32)
    close(run(lambda v, i: mb.gather(x=v, indices=i, axis=1), x, idx), x[:, idx, :])  # K = D[:axis] + N + D[axis+1:]
    close(run(lambda v, i: mb.gather(x=v, indices=i, axis=0), x, np.array([-1, 2], np.int32), opset=iOS16), x[[3, 2]])
    bidx = np.array([[0, 4], [2, 2], [1, 3], [4, 0]], np.int32)  # batch_dims=1 over x's first dim
    want = np.stack([x[i][bidx[i]] for i in range(4)])
    close(run(lambda v, i: mb.gather(x=v, indices=i, axis=1, batch_dims=1), x, bidx), want)
    gidx = rng.integers(0, 5, (4, 2, 3)).astype(np.int32)
    close(run(lambda v, i: mb.gather_along_axis(x=v, indices=i, axis=1), x, gidx), np.take_along_axis(x, gidx, 1))
    nd = np.array([[0, 1], [3, 4], [2, 0]], np.int32)  # V = K[:-1] + D[K[-1]:]
    close(run(lambda v, i: mb.gather_nd(x=v, indices=i), x, nd), np.stack([x[a, b] for a, b in nd]))
    nd_b = np.array([[[1]], [[4]], [[0]], [[2]]], np.int32)  # batch_dims=1: V = K[:-1] + D[1 + 1:]
    close(run(lambda v, i: mb.gather_nd(x=v, indices=i, batch_dims=1), x, nd_b, opset=iOS16),
          np.stack([x[b][nd_b[b, :, 0]] for b in range(4)]))


def test_scatters():
    data = R(4, 3)
    idx = np.array([2, 0], np.int32)
    upd = R(2, 3)
    want = data.copy()
    want[idx] = upd
    close(run(lambda d, u: mb.scatter(data=d, indices=idx, updates=u, axis=0, mode="update"), data, upd), want)
    want = data.copy()
    np.add.at(want, np.array([1, 1]), upd)  # duplicates accumulate
    close(run(lambda d, u: mb.scatter(data=d, indices=np.array([1, 1], np.int32), updates=u, axis=0, mode="add"),
              data, upd), want)
    aidx = np.array([[1, 0, 2], [3, 3, 0]], np.int32)
    upd2 = R(2, 3)
    want = data.copy()
    for i, j in np.ndindex(2, 3):
        want[aidx[i, j], j] = max(want[aidx[i, j], j], upd2[i, j])
    close(run(lambda d, u: mb.scatter_along_axis(data=d, indices=aidx, updates=u, axis=0, mode="max"), data, upd2), want)
    nidx = np.array([[0, 1], [3, 2]], np.int32)
    upd3 = R(2)
    want = data.copy()
    want[0, 1] *= upd3[0]
    want[3, 2] *= upd3[1]
    close(run(lambda d, u: mb.scatter_nd(data=d, indices=nidx, updates=u, mode="mul"), data, upd3), want)


# ---- resizing ---------------------------------------------------------------------------------------

LINE = np.array([[[0.0, 1.0]]], np.float32)  # Xin = 2 along W: bilinear outputs equal the grid points


@pytest.mark.parametrize("mode,xout,grid", [  # the grid points listed in resize_bilinear's docstring
    ("UNALIGN_CORNERS", 5, [0.0, 0.1, 0.5, 0.9, 1.0]),
    ("STRICT_ALIGN_CORNERS", 5, [0.0, 0.25, 0.5, 0.75, 1.0]),
    ("ALIGN_CORNERS", 5, [0.0, 0.25, 0.5, 0.75, 1.0]),
    ("DEFAULT", 5, [0.0, 0.4, 0.8, 1.0, 1.0]),
    ("OFFSET_CORNERS", 5, [0.1, 0.3, 0.5, 0.7, 0.9]),
    ("UNALIGN_CORNERS", 6, [0.0, 0.0, 0.33, 0.67, 1.0, 1.0]),
    ("STRICT_ALIGN_CORNERS", 6, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    ("DEFAULT", 6, [0.0, 0.33, 0.67, 1.0, 1.0, 1.0]),
    ("OFFSET_CORNERS", 6, [0.08, 0.25, 0.42, 0.58, 0.75, 0.92]),
])
def test_resize_bilinear_grid(mode, xout, grid):
    got = run(lambda v: mb.resize_bilinear(x=v, target_size_height=1, target_size_width=xout, sampling_mode=mode), LINE)
    close(got, np.array(grid, np.float32)[None, None], atol=0.006)


@pytest.mark.parametrize("align,scale,grid", [
    (False, 2.5, [0.0, 0.1, 0.5, 0.9, 1.0]), (True, 2.5, [0.0, 0.25, 0.5, 0.75, 1.0]),
    (False, 3.0, [0.0, 0.0, 0.33, 0.67, 1.0, 1.0]), (True, 3.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
])
def test_upsample_bilinear_grid(align, scale, grid):
    got = run(lambda v: mb.upsample_bilinear(x=v, scale_factor_height=1.0, scale_factor_width=scale,
                                             align_corners=align), LINE)
    close(got, np.array(grid, np.float32)[None, None], atol=0.006)


def test_upsample_bilinear_2d_and_nearest():
    x = R(1, 2, 3, 4)
    # align_corners=True: grid_point[i] = i * (Xin - 1) / (Xout - 1), separable along H and W
    def lerp(a, axis, xout):
        g = np.arange(xout) * (a.shape[axis] - 1) / (xout - 1)
        i0 = np.floor(g).astype(int)
        i1 = np.minimum(i0 + 1, a.shape[axis] - 1)
        w = g - i0
        shape = [1] * a.ndim
        shape[axis] = -1
        return np.take(a, i0, axis) * (1 - w.reshape(shape)) + np.take(a, i1, axis) * w.reshape(shape)
    close(run(lambda v: mb.upsample_bilinear(x=v, scale_factor_height=2, scale_factor_width=2, align_corners=True), x),
          lerp(lerp(x, 2, 6), 3, 8), rtol=1e-5)
    close(run(lambda v: mb.upsample_nearest_neighbor(x=v, scale_factor_height=2, scale_factor_width=3), x),
          x.repeat(2, axis=2).repeat(3, axis=3))
    close(run(lambda v: mb.resize_nearest_neighbor(x=v, target_size_height=6, target_size_width=8), x, opset=iOS16),
          x.repeat(2, axis=2).repeat(2, axis=3))
    close(run(lambda v: mb.resize(x=v, shape=np.array([6, 0], np.int32), resized_dims=np.uint32(2),
                                  interpolation_mode="NEAREST_NEIGHBOR"), x), x.repeat(2, axis=2))


# ---- attention and quantization ---------------------------------------------------------------------

@pytest.mark.parametrize("mask", [None, "bool", "float"])
def test_scaled_dot_product_attention(mask):
    q, k, v = R(2, 3, 4, 8), R(2, 3, 5, 8), R(2, 3, 5, 6)
    scores = q.astype(np.float64) @ np.swapaxes(k, -1, -2) / np.sqrt(8)
    args = [q, k, v]
    if mask == "bool":
        m = rng.random((4, 5)) > 0.3
        m[:, 0] = True
        scores = np.where(m, scores, -np.inf)
        args.append(m)
    elif mask == "float":
        m = R(4, 5)
        scores = scores + m
        args.append(m)
    want = softmax(scores) @ v
    build = (lambda a, b, c: mb.scaled_dot_product_attention(query=a, key=b, value=c)) if mask is None else (
        lambda a, b, c, d: mb.scaled_dot_product_attention(query=a, key=b, value=c, attn_mask=d))
    close(run(build, *args, opset=iOS18), want, rtol=1e-4)


def test_quantize_dequantize():
    x = np.array([[-1.0, -0.25, 0.0, 0.25, 0.3, 2.0], [0.05, 0.15, 0.25, -0.05, 9.0, -9.0]], np.float32)
    # quantized = clip(round(x / scale) + zero_point), round half to even (numpy / coremltools)
    q = run(lambda v: mb.quantize(input=v, scale=np.float32(0.1), zero_point=np.int8(3), output_dtype="int8"), x)
    close(q, np.clip(np.round(x / np.float32(0.1)) + 3, -128, 127).astype(np.int8))
    assert q.dtype == np.int8
    scale, zp = np.array([0.05, 0.5], np.float32), np.array([128, 10], np.uint8)
    q = run(lambda v: mb.quantize(input=v, scale=scale, zero_point=zp, axis=0, output_dtype="uint8"), x)
    close(q, np.clip(np.round(x / scale[:, None]) + zp[:, None], 0, 255).astype(np.uint8))
    back = run(lambda v: mb.dequantize(input=mb.quantize(input=v, scale=scale, zero_point=zp, axis=0, output_dtype="uint8"),
                                       scale=scale, zero_point=zp, axis=0), x)
    close(back, scale[:, None] * (q.astype(np.float32) - zp[:, None]))
    back = run(lambda v: mb.dequantize(input=mb.quantize(input=v, scale=np.float32(0.02), output_dtype="int8"),
                                       scale=np.float32(0.02)), x)  # no zero point: 0
    close(back, 0.02 * np.clip(np.round(x / np.float32(0.02)), -128, 127))


# ---- constexpr decompression --------------------------------------------------------------------------

def pack_lsb_first(values: np.ndarray, nbits: int) -> np.ndarray:
    """Pack unsigned nbits fields one byte at a time, LSB first (the iOS16 constexpr notes)."""
    bits = []
    for v in values.reshape(-1):
        bits += [(int(v) >> b) & 1 for b in range(nbits)]
    bits += [0] * (-len(bits) % 8)
    return np.array([sum(bits[i + b] << b for b in range(8)) for i in range(0, len(bits), 8)], np.uint8)


def run_const(build, opset, fp16=False):
    """Interpret a program whose output is a constexpr result (added to a zero input)."""
    z = np.zeros((1,), np.float32)
    return run(lambda v: build(), z, opset=opset, fp16=fp16)


def test_constexpr_affine_dequantize():
    q = rng.integers(-128, 128, (3, 4)).astype(np.int8)
    zp, scale = np.array([1, -2, 0], np.int8), np.array([0.5, 0.25, 2.0], np.float32)
    got = run_const(lambda: mb.identity(x=mb.constexpr_affine_dequantize(quantized_data=q, zero_point=zp, scale=scale, axis=0)), iOS16)
    close(got, scale[:, None] * (q.astype(np.float32) - zp[:, None]))
    qu = rng.integers(0, 256, (2, 5)).astype(np.uint8)
    got = run_const(lambda: mb.identity(x=mb.constexpr_affine_dequantize(quantized_data=qu, zero_point=np.uint8(128),
                                                                         scale=np.float16(0.1), axis=1)), iOS16)
    close(got, (np.float16(0.1) * (qu.astype(np.float32) - 128)).astype(np.float16).astype(np.float32))


def test_constexpr_lut_to_dense_ios16():
    # the docstring's example: n_bits = 2, shape = (5,) -> indices [0, 3, 2, 1 | 3] in two bytes
    lut = np.array([10.0, 20.0, 30.0, 40.0], np.float32)
    packed = np.array([0b01101100, 0b00000011], np.uint8)
    got = run_const(lambda: mb.identity(x=mb.constexpr_lut_to_dense(indices=packed, lut=lut, shape=np.array([5], np.uint32))), iOS16)
    close(got, lut[[0, 3, 2, 1, 3]])
    for nbits in (1, 4, 6):
        idx = rng.integers(0, 2 ** nbits, (3, 7))
        lut = R(2 ** nbits)
        got = run_const(lambda idx=idx, nbits=nbits, lut=lut: mb.identity(x=mb.constexpr_lut_to_dense(
            indices=pack_lsb_first(idx, nbits), lut=lut, shape=np.array([3, 7], np.uint32))), iOS16)
        close(got, lut[idx])


def test_constexpr_lut_to_dense_ios18():
    # Case 1 of the docstring: 2-group 2-bit scalar palettization
    idx = np.array([2, 3, 3, 0, 1, 0, 3, 0, 2, 1, 0, 3], dtype=types.np_uint2_dtype).reshape(6, 2)
    lut = np.array([1.0, 5.0, 9.0, 13.0, 2.0, 10.0, 18.0, 26.0], np.float16).reshape(2, 1, 4, 1)
    got = run_const(lambda: mb.identity(x=mb.constexpr_lut_to_dense(indices=idx, lut=lut)), iOS18)
    close(got, [[9, 13], [13, 1], [5, 1], [26, 2], [18, 10], [2, 26]])
    # Case 2: 1-bit vector palettization, vector_axis 1 and 2
    vidx = np.array([[[0, 0], [1, 0]], [[1, 1], [0, 0]]], dtype=types.np_uint1_dtype)
    a, b = [1.0, 2.0, 3.0], [7.0, 8.0, 9.0]
    vlut = np.array([a, b], np.float32).reshape(1, 1, 1, 2, 3)
    got = run_const(lambda: mb.identity(x=mb.constexpr_lut_to_dense(indices=vidx, lut=vlut, vector_axis=np.int32(1))), iOS18)
    a0, a1, a2 = a
    b0, b1, b2 = b
    close(got, [[[a0, a0], [a1, a1], [a2, a2], [b0, a0], [b1, a1], [b2, a2]],
                [[b0, b0], [b1, b1], [b2, b2], [a0, a0], [a1, a1], [a2, a2]]])
    got = run_const(lambda: mb.identity(x=mb.constexpr_lut_to_dense(indices=vidx, lut=vlut, vector_axis=np.int32(2))), iOS18)
    close(got, [[[a0, a1, a2, a0, a1, a2], [b0, b1, b2, a0, a1, a2]],
                [[b0, b1, b2, b0, b1, b2], [a0, a1, a2, a0, a1, a2]]])


def test_constexpr_sparse_to_dense():
    # iOS16 docstring: shape (5,), mask bits i0..i4 = 0, 0, 1, 1, 0 (LSB first)
    got = run_const(lambda: mb.identity(x=mb.constexpr_sparse_to_dense(
        nonzero_data=np.array([3.0, 4.0], np.float32), mask=np.array([0b00001100], np.uint8),
        shape=np.array([5], np.uint32))), iOS16)
    close(got, [0, 0, 3, 4, 0])
    mask = rng.random((3, 4)) > 0.5
    data = R(int(mask.sum()))
    want = np.zeros((3, 4), np.float32)
    want[mask] = data  # row-major order
    got = run_const(lambda: mb.identity(x=mb.constexpr_sparse_to_dense(
        nonzero_data=data, mask=pack_lsb_first(mask.astype(np.uint8), 1), shape=np.array([3, 4], np.uint32))), iOS16)
    close(got, want)
    got = run_const(lambda: mb.identity(x=mb.constexpr_sparse_to_dense(
        nonzero_data=data, mask=mask.astype(types.np_uint1_dtype))), iOS18)
    close(got, want)


def test_constexpr_blockwise_shift_scale():
    data = rng.integers(-8, 8, (4, 6)).astype(types.np_int4_dtype)
    scale = R(2, 3, lo=0.1, hi=1.0)
    offset = rng.integers(-2, 3, (2, 3)).astype(types.np_int4_dtype)
    # output[i, j] = scale[i // 2, j // 2] * (data[i, j] - offset[i // 2, j // 2]); block = shape / scale.shape
    i, j = np.indices((4, 6))
    want = scale[i // 2, j // 2] * (data.astype(np.float32) - offset[i // 2, j // 2])
    got = run_const(lambda: mb.identity(x=mb.constexpr_blockwise_shift_scale(data=data, scale=scale, offset=offset)), iOS18)
    close(got, want)
    d8 = rng.integers(0, 256, (3, 4)).astype(np.uint8)
    s8 = R(3, 1, lo=0.1, hi=1).astype(np.float16)
    got = run_const(lambda: mb.identity(x=mb.constexpr_blockwise_shift_scale(data=d8, scale=s8)), iOS18)
    close(got, (s8.astype(np.float32) * d8).astype(np.float16), rtol=1e-3)


def test_constexpr_sparse_compound_ops():
    # constexpr_lut_to_sparse docstring example (scalar palettization), then sparse_to_dense
    mask = np.array([[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 1], [0, 1, 1, 0, 1, 0], [0, 0, 0, 1, 0, 0]])
    nz = np.array([0, 1, 1, 0, 1, 1, 0, 0, 1], dtype=types.np_uint1_dtype)
    lut = np.array([2.0, 3.0], np.float16).reshape(1, 1, 2, 1)

    def dense():
        m, v = mb.constexpr_lut_to_sparse(indices_mask=mask.astype(types.np_uint1_dtype), indices_nonzero_data=nz, lut=lut)
        return mb.identity(x=mb.constexpr_sparse_to_dense(nonzero_data=v, mask=m))
    want = np.zeros((4, 6), np.float32)
    want[mask.astype(bool)] = [2.0, 3.0, 3.0, 2.0, 3.0, 3.0, 2.0, 2.0, 3.0]
    close(run_const(dense, iOS18), want)
    # vector palettization over axis 0: the mask doubles along axis 0
    vlut = np.array([[2.0, 2.0], [3.0, 3.0]], np.float16).reshape(1, 1, 2, 2)

    def vdense():
        m, v = mb.constexpr_lut_to_sparse(indices_mask=mask.astype(types.np_uint1_dtype), indices_nonzero_data=nz,
                                          lut=vlut, vector_axis=np.int32(0))
        return mb.identity(x=mb.constexpr_sparse_to_dense(nonzero_data=v, mask=m))
    close(run_const(vdense, iOS18), np.repeat(want, 2, axis=0))
    # constexpr_sparse_blockwise_shift_scale docstring example (per-column), then sparse_to_dense
    dmask = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1], [1, 1, 0, 0]])
    nzd = np.array([10, 11, 3, 4, 5, 6, 7, 8, 9], np.int8)
    sc, off = np.array([[0.1, 0.2, 0.3, 0.4]], np.float32), np.array([[1, 2, 3, 4]], np.int8)

    def qdense():
        m, v = mb.constexpr_sparse_blockwise_shift_scale(data_mask=dmask.astype(types.np_uint1_dtype),
                                                         nonzero_data=nzd, scale=sc, offset=off)
        return mb.identity(x=mb.constexpr_sparse_to_dense(nonzero_data=v, mask=m))
    want = np.zeros((4, 4), np.float32)
    want[dmask.astype(bool)] = [0.9, 1.8, 0.2, 0.4, 0.6, 0.9, 1.2, 0.7, 1.4]  # the docstring's values
    close(run_const(qdense, iOS18), want)


def test_constexpr_cast():
    w = R(3, 2).astype(np.float16)
    close(run_const(lambda: mb.identity(x=mb.constexpr_cast(source_val=w, output_dtype="fp32")), iOS16), w.astype(np.float32))


# ---- fp16 emulation, errors, API ---------------------------------------------------------------------

def test_fp16_rounding_happens_after_each_op():
    x = np.array([1.0, 1000.0, 3.0], np.float32)
    eps = np.float16(2.0 ** -11)  # half an fp16 ulp at 1.0: 1 + eps rounds back to 1 (ties to even)

    def build(v):
        return mb.sub(x=mb.add(x=v, y=eps), y=v)
    fp16 = run(build, x, fp16=True, emulate=True)
    fp32 = run(build, x, fp16=True, emulate=False)
    np.testing.assert_array_equal(fp16, [0.0, 0.0, 0.0])  # (1 + 2^-11) is 1 in fp16
    np.testing.assert_allclose(fp32, [2.0 ** -11] * 3, rtol=1e-3)
    assert fp16.dtype == np.float32
    # values beyond fp16 range overflow to inf, as on the device
    big = run(lambda v: mb.mul(x=v, y=np.float16(100.0)), np.array([1000.0], np.float32), fp16=True)
    assert np.isinf(big).all()
    # inputs of an fp16 function are rounded too
    close(run(lambda v: mb.identity(x=v), np.array([0.1], np.float32), fp16=True), [np.float16(0.1).astype(np.float32)])


def test_unknown_op_is_refused_before_running():
    prog = build_program(lambda v: mb.random_normal(shape=mb.shape(x=v), mean=0.0, stddev=1.0), R(2, 2))
    assert "random_normal" not in SUPPORTED_OPS
    with pytest.raises(UnsupportedMILOp) as e:
        MILInterpreter(prog)  # no inputs needed: the whole program is checked first
    assert "random_normal" in str(e.value) and e.value.fix
    assert e.value.op_types == {"random_normal": 1}
    assert isinstance(e.value, MobileSDError)


def test_missing_input_and_bad_shape():
    prog = build_program(lambda v: mb.relu(x=v), R(2, 2))
    with pytest.raises(MobileSDError, match="missing inputs"):
        interpret(prog, {})
    with pytest.raises(MobileSDError, match="shape"):
        interpret(prog, {"x0": R(3, 3)})


def test_supported_ops_cover_the_discovered_graph_ops():
    seen = {  # op types coremltools 9 emits for our components (tiny + SD1.5; docs/mil-interpreter.md)
        "add", "batch_norm", "cast", "clip", "concat", "const", "conv", "cos", "expand_dims", "gather", "gelu",
        "greater_equal", "layer_norm", "linear", "matmul", "mul", "real_div", "reduce_mean", "reshape",
        "scaled_dot_product_attention", "select", "sigmoid", "silu", "sin", "slice_by_index", "softmax", "split",
        "sqrt", "square", "sub", "transpose", "upsample_nearest_neighbor", "constexpr_affine_dequantize",
        "constexpr_blockwise_shift_scale", "constexpr_lut_to_dense", "constexpr_sparse_to_dense", "quantize",
        "dequantize", "einsum", "instance_norm"}
    assert seen <= SUPPORTED_OPS


# ---- converted components (integration) --------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_components():
    from mobilesd.components import (
        text_encoder_component,
        unet_components,
        vae_decoder_component,
    )
    from mobilesd.loading import default_model_path, load_pipeline

    pipe = load_pipeline(default_model_path())
    return {"text_encoder": text_encoder_component(pipe), "vae_decoder": vae_decoder_component(pipe),
            "unet_chunk0": unet_components(pipe, [(0, 3), (3, 8)], batch=2)[0],
            "pipe": pipe}


def _convert(comp, target, precision, path):
    import torch

    names = list(comp.example_inputs)

    class Positional(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *args):
            return self.m(**dict(zip(names, args)))

    ex = tuple(comp.example_inputs[n] for n in names)
    traced = torch.jit.trace(Positional(comp.module).eval(), ex)
    inputs = [ct.TensorType(name=n, shape=tuple(t.shape), dtype=np.int32 if t.dtype == torch.int32 else np.float32)
              for n, t in comp.example_inputs.items()]
    model = ct.convert(traced, inputs=inputs, outputs=[ct.TensorType(name=n) for n in comp.output_names],
                       convert_to="mlprogram", minimum_deployment_target=target, compute_precision=precision)
    model.save(str(path))
    return path


@pytest.fixture(scope="session")
def packages(tiny_components, tmp_path_factory):
    """Tiny components converted once per session (lazily, by key)."""
    root = tmp_path_factory.mktemp("mlpackages")
    made: dict[str, object] = {}
    fp16, fp32 = ct.precision.FLOAT16, ct.precision.FLOAT32
    recipes = {  # te: matmul+softmax attention, gather, select; unet chunk 0 (iOS18): SDPA, conv, group norm
        "te16": ("text_encoder", iOS18, fp16), "te32": ("text_encoder", iOS17, fp32),
        "unet16": ("unet_chunk0", iOS18, fp16),
    }

    def get(key):
        if key not in made:
            name, target, prec = recipes[key]
            made[key] = _convert(tiny_components[name], target, prec, root / f"{key}.mlpackage")
        return made[key]
    return get


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _check(comp, pkg, tol, fp16=True):
    want = [t.numpy() for t in comp.run(comp.example_inputs)]
    got = interpret(pkg, {k: v.numpy() for k, v in comp.example_inputs.items()}, fp16_emulation=fp16, threads=1)
    for name, w in zip(comp.output_names, want):
        err = _rel(got[name], w)
        assert got[name].dtype == np.float32 and got[name].shape == w.shape
        assert err < tol, (name, err)
    return got


@pytest.mark.parametrize("key,comp,tol", [
    ("te16", "text_encoder", 1e-2), ("te32", "text_encoder", 1e-4), ("unet16", "unet_chunk0", 1e-2),
])
def test_converted_component_matches_pytorch(packages, tiny_components, key, comp, tol):
    _check(tiny_components[comp], packages(key), tol)


def test_fp16_package_without_emulation_is_closer(packages, tiny_components):
    comp = tiny_components["text_encoder"]
    want = comp.run(comp.example_inputs)[0].numpy()
    feed = {k: v.numpy() for k, v in comp.example_inputs.items()}
    e16 = _rel(interpret(packages("te16"), feed)["last_hidden_state"], want)
    e32 = _rel(interpret(packages("te16"), feed, fp16_emulation=False)["last_hidden_state"], want)
    assert e32 < e16  # the fp16 emulation is what makes the difference


def _check_compressed(comp, model, path, kind, op_type, tol):
    """A compressed package: its facts, the interpreter's decompression against coremltools' own
    (decompress_weights: the same program with const weights), and the output against PyTorch (loose:
    the quantization error of a tiny model is large)."""
    model.save(str(path))
    facts = static_facts(path)  # from the protobuf alone
    assert facts["op_counts"].get(op_type, 0) > 0 and facts["weight_bytes_by_kind"][kind] > 0
    loaded = static_facts(load_program(path))  # from the pymil program (the loader adds default consts)
    assert {k: v for k, v in loaded.items() if k != "op_counts"} == {k: v for k, v in facts.items() if k != "op_counts"}
    assert {k: v for k, v in loaded["op_counts"].items() if k != "const"} == {
        k: v for k, v in facts["op_counts"].items() if k != "const"}
    plain = path.with_name(path.stem + "_decompressed.mlpackage")
    ct.optimize.coreml.decompress_weights(model).save(str(plain))
    assert not any(t.startswith("constexpr_") for t in static_facts(plain)["op_counts"])
    feed = {k: v.numpy() for k, v in comp.example_inputs.items()}
    a, b = interpret(path, feed), interpret(plain, feed)
    for name in comp.output_names:
        assert _rel(a[name], b[name]) < 1e-3, name
    _check(comp, path, tol)


@pytest.mark.parametrize("how", ["int8", "pal6", "prune"])
def test_compressed_packages(packages, tiny_components, tmp_path, how):
    import coremltools.optimize.coreml as cto

    model = ct.models.MLModel(str(packages("te32")), skip_model_load=True)  # iOS17: the iOS16 constexpr forms
    if how == "int8":
        cfg = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", weight_threshold=256)
        q = cto.linear_quantize_weights(model, cto.OptimizationConfig(global_config=cfg))
        kind, op_type, tol = "int8", "constexpr_affine_dequantize", 3e-2
    elif how == "pal6":
        cfg = cto.OpPalettizerConfig(nbits=6, mode="uniform", weight_threshold=256)
        q = cto.palettize_weights(model, cto.OptimizationConfig(global_config=cfg))
        kind, op_type, tol = "lut", "constexpr_lut_to_dense", 5e-2
    else:
        cfg = cto.OpMagnitudePrunerConfig(target_sparsity=0.25, weight_threshold=256)
        q = cto.prune_weights(model, cto.OptimizationConfig(global_config=cfg))
        kind, op_type, tol = "sparse", "constexpr_sparse_to_dense", 0.5
    _check_compressed(tiny_components["text_encoder"], q, tmp_path / f"{how}.mlpackage", kind, op_type, tol)


@pytest.mark.parametrize("how", ["int4_block", "pal4_grouped"])
def test_compressed_ios18(packages, tiny_components, tmp_path, how):
    import coremltools.optimize.coreml as cto

    model = ct.models.MLModel(str(packages("te16")), skip_model_load=True)  # iOS18: the iOS18 constexpr forms
    if how == "int4_block":
        cfg = cto.OpLinearQuantizerConfig(mode="linear", dtype="int4", granularity="per_block", block_size=8,
                                          weight_threshold=256)
        q = cto.linear_quantize_weights(model, cto.OptimizationConfig(global_config=cfg))
        kind, op_type = "int4", "constexpr_blockwise_shift_scale"
    else:
        cfg = cto.OpPalettizerConfig(nbits=4, mode="uniform", granularity="per_grouped_channel", group_size=4,
                                     weight_threshold=256)
        q = cto.palettize_weights(model, cto.OptimizationConfig(global_config=cfg))
        kind, op_type = "lut", "constexpr_lut_to_dense"
    _check_compressed(tiny_components["text_encoder"], q, tmp_path / f"{how}.mlpackage", kind, op_type, 0.25)


def test_static_facts(packages):
    f16, f32 = static_facts(packages("te16")), static_facts(packages("te32"))
    assert f16["compute_precision"] == "float16" and f32["compute_precision"] == "float32"
    assert f16["functions"] == ["main"]
    assert f16["op_counts"]["linear"] == 12
    assert f16["weight_bytes_by_kind"]["float16"] > 0 and f16["weight_bytes_by_kind"]["int8"] == 0
    # the weights as stored: fp32 twice the fp16 bytes
    assert abs(f32["weight_bytes"] - 2 * f16["weight_bytes"]) < 0.01 * f32["weight_bytes"]
    ne = f16["neural_engine"]
    assert ne["unsupported_ops"].get("gather") == 1 and ne["source"]
    assert any("fp32" in n for n in f32["neural_engine"]["notes"])


def test_open_graph_mlpackage_session(packages, tiny_components):
    from mobilesd.runtime.graphs import open_graph

    comp = tiny_components["text_encoder"]
    feed = {"input_ids": comp.example_inputs["input_ids"].numpy()}
    sess = open_graph(packages("te16"), ["input_ids"], ["last_hidden_state"])
    assert isinstance(sess, MILSession)
    first = sess.run(feed)[0]
    np.testing.assert_array_equal(sess.run(feed)[0], first)  # reusable, deterministic
    # an output name the program lacks falls back to the function's output order
    renamed = MILSession(packages("te16"), ["input_ids"], ["hidden"], threads=1)
    np.testing.assert_array_equal(renamed.run(feed)[0], first)
    mapped = MILSession(packages("te16"), ["ids"], ["last_hidden_state"], name_map={"ids": "input_ids"})
    np.testing.assert_array_equal(mapped.run({"ids": feed["input_ids"]})[0], first)
    with pytest.raises(MobileSDError, match="no inputs"):
        MILSession(packages("te16"), ["tokens"], ["last_hidden_state"])
    assert load_program(packages("te16")).functions["main"].outputs[0].name == "last_hidden_state"


def test_load_program_errors(tmp_path):
    with pytest.raises(MobileSDError, match="no such"):
        load_program(tmp_path / "missing.mlpackage")
    (tmp_path / "x.onnx").write_bytes(b"")
    with pytest.raises(MobileSDError, match="not a Core ML"):
        load_program(tmp_path / "x.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("what,target,precision,tol", [
    ("unet", iOS16, "fp16", 1e-2), ("unet", iOS17, "fp32", 1e-4),
    ("vae", iOS18, "fp16", 1e-2), ("vae", iOS16, "fp32", 1e-4),
])
def test_full_tiny_unet_and_vae(tiny_components, tmp_path, what, target, precision, tol):
    """The whole tiny UNet (one chunk) and the VAE decoder, fp16 and fp32."""
    from mobilesd.components import unet_components

    comp = (unet_components(tiny_components["pipe"], [(0, 8)], batch=2)[0] if what == "unet"
            else tiny_components["vae_decoder"])
    prec = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
    _check(comp, _convert(comp, target, prec, tmp_path / f"{what}.mlpackage"), tol)


@pytest.mark.parametrize("nbits,vsize,blocks", [(1, 1, (1, 1)), (4, 1, (2, 1)), (6, 2, (1, 3)), (8, 1, (3, 2)),
                                                (3, 4, (1, 1))])
def test_hand_written_lut_lookup_equals_coremltools(nbits, vsize, blocks):
    """The interpreter's iOS18 LUT lookup (written for memory, see its docstring) gives coremltools' own
    lut_to_dense result, dtype included."""
    from coremltools.optimize._utils import lut_to_dense as ct_lut_to_dense

    from mobilesd.runtime.mil.ops.constexpr_ops import lut_to_dense

    rng = np.random.default_rng(nbits * 7 + vsize)
    shape = (6, 12)
    indices = rng.integers(0, 2 ** nbits, size=shape).astype(np.uint8)
    lut = rng.standard_normal((*blocks, 2 ** nbits, vsize)).astype(np.float16)
    axis = 0 if vsize > 1 else None
    ours = lut_to_dense(indices, lut, axis)
    ref = ct_lut_to_dense(indices, lut, axis)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref)
