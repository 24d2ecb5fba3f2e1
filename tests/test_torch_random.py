"""mobilesd.torch_random (the randn specification the clients port) equals torch's CPU randn bit for bit."""

import numpy as np
import pytest
import torch

from mobilesd.torch_random import MT19937, randn

SHAPES = [(1,), (3,), (2, 5), (15,), (16,), (17,), (100,), (1, 4, 8, 8), (2, 4, 9, 7), (1, 4, 64, 64)]


def _torch(seed, shape):
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32).numpy()


pytestmark = pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
                                reason="the spec follows ATen's AVX path; this host's torch takes libm's")


@pytest.mark.parametrize("seed", [0, 1, 42, 2**32 - 1, 123456789])
def test_randn_is_bit_exact(seed):
    for shape in SHAPES:
        got, ref = randn(seed, shape), _torch(seed, shape)
        assert got.shape == ref.shape
        assert np.array_equal(got.view(np.uint32), ref.view(np.uint32)), (seed, shape)


def test_a_stream_of_draws_carries_the_generator_state():
    g = torch.Generator("cpu").manual_seed(3)
    gen = MT19937(3)
    for shape in [(5,), (20,), (3,), (1, 4, 8, 8), (1,)]:   # scalar path caches its second value
        ref = torch.randn(shape, generator=g).numpy()
        assert np.array_equal(randn(gen, shape).view(np.uint32), ref.view(np.uint32)), shape


def test_a_wrong_rounding_would_show():
    """The check can fail: computing the same algorithm in float64 and rounding once differs from torch."""
    import math

    ref = _torch(0, (1, 4, 64, 64)).reshape(-1)
    gen = MT19937(0)
    u = ((gen.u32_array(16384) & 0xFFFFFF) * 2.0 ** -24).reshape(-1, 16)
    r = np.sqrt(-2 * np.log(1 - u[:, :8]))
    naive = np.concatenate([r * np.cos(2 * math.pi * u[:, 8:]), r * np.sin(2 * math.pi * u[:, 8:])], 1)
    assert (naive.reshape(-1).astype(np.float32) != ref).sum() > 0
