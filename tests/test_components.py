"""UNet chunking at block boundaries, and the phone components against diffusers' modules."""

import pytest
import torch

from mobilesd.components import (UNetChunk, plan_unet_chunks, run_unet_chunks, stage_weight_bytes,
                                 text_encoder_component, unet_components, unet_example_inputs, unet_stages,
                                 vae_decoder_component)
from mobilesd.errors import MobileSDError


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_chained_chunks_reproduce_the_whole_unet(tiny_pipe, n):
    plan = plan_unet_chunks(tiny_pipe.unet, n)
    assert len(plan) == n and plan[0][0] == 0 and plan[-1][1] == len(unet_stages(tiny_pipe.unet))
    assert all(a[1] == b[0] for a, b in zip(plan, plan[1:])), "chunks must be contiguous"
    comps = unet_components(tiny_pipe, plan, batch=2)
    x = unet_example_inputs(tiny_pipe, batch=2)
    with torch.no_grad():
        ref = tiny_pipe.unet(x["sample"], x["timestep"], x["encoder_hidden_states"]).sample
    specs = [(c.module.input_names(), c.module.output_names(), c.module.aliases()) for c in comps]
    out = run_unet_chunks(comps, specs, x["sample"], x["timestep"], x["encoder_hidden_states"],
                          lambda i, inputs: comps[i].run(inputs))
    assert torch.allclose(out, ref, atol=1e-5)
    # the example inputs the converters see are exactly what the chain feeds each chunk
    for c in comps[1:]:
        assert set(c.example_inputs) == set(c.module.input_names())


@pytest.mark.parametrize("n", [2, 3, 5, 7])
def test_chunks_never_pass_inputs_through(tiny_pipe, n):
    """The GPU delegate returns garbage for outputs that merely repeat an input, so none may exist, and each
    chunk holds only its own stages' weights."""
    comps = unet_components(tiny_pipe, plan_unet_chunks(tiny_pipe.unet, n))
    made = {"sample", "timestep", "encoder_hidden_states"}
    for c in comps:
        ins, outs = set(c.module.input_names()), c.module.output_names()
        assert not (ins - {"hidden"}) & set(outs), (c.name, ins, outs)
        assert ins <= made, f"{c.name} reads {ins - made}, which no earlier chunk made"
        made |= set(outs) | set(c.module.aliases())
    total = sum(p.numel() for p in tiny_pipe.unet.parameters())
    assert sum(sum(p.numel() for p in c.module.parameters()) for c in comps) == total


def test_chunk_plan_balances_weight_bytes(tiny_pipe):
    sizes = stage_weight_bytes(tiny_pipe.unet)
    plan = plan_unet_chunks(tiny_pipe.unet, 2)
    worst = max(sum(sizes[a:b]) for a, b in plan)
    # no other single cut gives a smaller largest chunk
    best = min(max(sum(sizes[:k]), sum(sizes[k:])) for k in range(1, len(sizes)))
    assert worst == best


def test_size_limit_picks_the_fewest_chunks(tiny_pipe):
    sizes = stage_weight_bytes(tiny_pipe.unet)
    limit = max(sizes) * 1.01
    plan = plan_unet_chunks(tiny_pipe.unet, max_bytes=limit)
    assert all(sum(sizes[a:b]) <= limit for a, b in plan)
    assert len(plan) > 1
    assert len(plan_unet_chunks(tiny_pipe.unet, max_bytes=sum(sizes) + 1)) == 1


def test_chunk_counts_that_cannot_fit_are_clear_errors(tiny_pipe):
    n_stages = len(unet_stages(tiny_pipe.unet))
    with pytest.raises(MobileSDError, match="cannot fit"):
        plan_unet_chunks(tiny_pipe.unet, n_stages + 1)
    with pytest.raises(MobileSDError, match="cannot fit"):
        plan_unet_chunks(tiny_pipe.unet, 0)
    with pytest.raises(MobileSDError, match="alone is"):
        plan_unet_chunks(tiny_pipe.unet, max_bytes=1000)
    with pytest.raises(MobileSDError, match="cannot fit under"):
        plan_unet_chunks(tiny_pipe.unet, 1, max_bytes=max(stage_weight_bytes(tiny_pipe.unet)) * 1.01)


def test_text_encoder_and_decoder_match_diffusers(tiny_pipe):
    te = text_encoder_component(tiny_pipe)
    ids = te.example_inputs["input_ids"]
    with torch.no_grad():
        ref = tiny_pipe.text_encoder(ids.long())[0]
    assert torch.equal(te.run(te.example_inputs)[0], ref)
    dec = vae_decoder_component(tiny_pipe)
    z = dec.example_inputs["latent"]
    with torch.no_grad():
        img = tiny_pipe.vae.decode(z / tiny_pipe.vae.config.scaling_factor).sample
    expected = (img / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    assert torch.allclose(dec.run(dec.example_inputs)[0], expected, atol=1e-6)


def test_chunk_io_names(tiny_pipe):
    chunk = UNetChunk(tiny_pipe.unet, 0, 2)  # stem + down_0 (cross-attention)
    assert chunk.input_names() == ["sample", "timestep", "encoder_hidden_states"]
    assert chunk.output_names() == ["hidden", "temb", "skip_0", "skip_1"]
    assert chunk.aliases() == {"skip_2": "hidden"}  # down_0 ends on its downsampler, its last skip
    stem = UNetChunk(tiny_pipe.unet, 0, 1)
    assert stem.input_names() == ["sample", "timestep"] and stem.aliases() == {"skip_0": "hidden"}
    head = UNetChunk(tiny_pipe.unet, 6, 7)
    assert head.input_names() == ["hidden"] and head.output_names() == ["noise_pred"]
