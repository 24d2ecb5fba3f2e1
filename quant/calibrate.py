"""Data-free calibration: sample with the full-precision model and record every quantized layer's inputs.

The teacher runs the real sampling loop (scheduler, CFG) on a prompt set. Hooks keep, per layer and per
sampling step, a bounded random sample of the input values plus the exact max |x|, so memory does not
grow with the number of prompts (streamed statistics; ``samples_per_call`` values per forward call).
Activation step sizes are then set per step (or once, pooled over steps) by MSE search over clipping
values.
"""

from __future__ import annotations

import torch
from torch import nn

from mobilesd.quant.quantizers import int_range

GENERIC_PROMPTS = [
    "a photo of a cat sitting on a windowsill", "a mountain lake at sunrise, photograph",
    "a watercolor painting of a lighthouse", "portrait of an old man, studio lighting",
    "a bowl of fruit on a wooden table", "a futuristic city skyline at night",
    "a red sports car on a country road", "an astronaut riding a horse, digital art",
    "a cozy living room with a fireplace", "a plate of sushi, food photography",
    "a forest path in autumn", "a golden retriever puppy in the grass",
    "an oil painting of a ship in a storm", "a minimalist logo of a fox",
    "a close-up of a sunflower", "a snowy village in the mountains",
]


CALIBRATION_PROMPTS_FILE = "calibration_prompts.txt"


def default_prompts(model_dir) -> list[str]:
    """A model folder's own ``calibration_prompts.txt`` (one per line; the compositional model ships its
    training phrasings there), else the tiny digits model's training phrasings (never the held-out eval ones),
    else a generic list."""
    from pathlib import Path

    own = Path(model_dir) / CALIBRATION_PROMPTS_FILE if model_dir is not None else None
    if own is not None and own.is_file():
        lines = [line.strip() for line in own.read_text().splitlines() if line.strip()]
        if lines:
            return lines
    if model_dir is not None and (Path(model_dir) / "classifier").is_dir():
        from mobilesd.tiny.data import train_prompts

        return [p for p, _ in train_prompts()]
    return list(GENERIC_PROMPTS)


def make_scheduler(pipe, name: str):
    from mobilesd.pipeline import make_scheduler as _make

    return _make(name, dict(pipe.scheduler.config))


@torch.no_grad()
def encode(pipe, prompts: list[str], device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(unconditional, conditional) text embeddings, as the diffusers pipeline makes them."""
    cond, uncond = pipe.encode_prompt(prompts, device, 1, True, negative_prompt=[""] * len(prompts))
    return uncond, cond


def initial_latents(pipe, n: int, seed: int, device="cpu") -> torch.Tensor:
    c = pipe.unet.config.in_channels
    s = pipe.unet.config.sample_size
    g = torch.Generator("cpu").manual_seed(seed)
    return torch.randn((n, c, s, s), generator=g).to(device)


def teacher_trajectory(unet: nn.Module, scheduler, uncond, cond, latents, guidance: float, steps: int,
                       on_step=None):
    """Run the sampling loop with ``unet`` as the teacher. ``on_step(i, t, x_in, context, guided_eps)`` sees
    each step's UNet input (both CFG halves) and the teacher's guided prediction; the latent is always
    advanced by the teacher."""
    scheduler.set_timesteps(steps)
    latents = latents * scheduler.init_noise_sigma
    context = torch.cat([uncond, cond])
    for i, t in enumerate(scheduler.timesteps):
        x_in = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        with torch.no_grad():
            eps = unet(x_in, t, encoder_hidden_states=context).sample
        u, c = eps.chunk(2)
        guided = u + guidance * (c - u)
        if on_step is not None:
            on_step(i, t, x_in, context, guided)
        latents = scheduler.step(guided, t, latents).prev_sample
    return latents


def channel_dim(layer: nn.Module) -> int:
    """The input-channel dimension of a layer's input: last for Linear, 1 for Conv2d (NCHW)."""
    return 1 if isinstance(layer, nn.Conv2d) or getattr(layer, "kind", "") == "conv" else -1


class InputRecorder:
    """Forward pre-hooks that stream per-(layer, step) input statistics.

    ``per_channel``: also keep each sample's input channel and the exact per-channel max |x| of every step
    (SVDQuant's smoothing needs them; the samples can then be rescaled per channel afterwards)."""

    def __init__(self, layers: dict[str, nn.Module], samples_per_call: int = 2048, seed: int = 0,
                 per_channel: bool = False):
        self.samples_per_call = samples_per_call
        self.step = 0
        self.per_channel = per_channel
        self.samples: dict[str, dict[int, list[torch.Tensor]]] = {n: {} for n in layers}
        self.channels: dict[str, dict[int, list[torch.Tensor]]] = {n: {} for n in layers}
        self.maxabs: dict[str, dict[int, float]] = {n: {} for n in layers}
        self.channel_maxabs: dict[str, dict[int, torch.Tensor]] = {n: {} for n in layers}
        self.gen = torch.Generator("cpu").manual_seed(seed)
        self.handles = [layer.register_forward_pre_hook(self._hook(name, channel_dim(layer)))
                        for name, layer in layers.items()]

    def _hook(self, name, cdim):
        def hook(module, args):
            full = args[0].detach().float()
            x = full.reshape(-1)
            k = min(self.samples_per_call, x.numel())
            idx = torch.randint(0, x.numel(), (k,), generator=self.gen)
            self.samples[name].setdefault(self.step, []).append(x[idx.to(x.device)].cpu())
            m = self.maxabs[name]
            m[self.step] = max(m.get(self.step, 0.0), float(x.abs().max()))
            if self.per_channel:
                c = full.shape[cdim]
                # channel of flat index i: i % C (channels last) or (i // (H*W)) % C (NCHW)
                inner = 1 if cdim == -1 else int(full[0, 0].numel())
                self.channels[name].setdefault(self.step, []).append(((idx // inner) % c).to(torch.int32))
                cm = full.abs().movedim(cdim, -1).reshape(-1, c).amax(0).cpu()
                prev = self.channel_maxabs[name].get(self.step)
                self.channel_maxabs[name][self.step] = cm if prev is None else torch.maximum(prev, cm)
        return hook

    def channel_max(self, name: str) -> torch.Tensor:
        """Per-channel max |x| over all steps."""
        return torch.stack(list(self.channel_maxabs[name].values())).amax(0)

    def scaled_values(self, name: str, scale: torch.Tensor, step: int | None = None) -> tuple[torch.Tensor, float]:
        """``values`` of the input multiplied per channel by ``scale`` (SVDQuant's smoothed input): the samples
        rescaled by their channel's factor, and the exact max |x * scale| from the per-channel maxima."""
        steps = [step] if step is not None else sorted(self.samples[name])
        vals = torch.cat([v for s in steps for v in self.samples[name][s]])
        chans = torch.cat([c for s in steps for c in self.channels[name][s]]).long()
        maxabs = max(float((self.channel_maxabs[name][s] * scale.abs()).max()) for s in steps)
        return vals * scale[chans], maxabs

    def remove(self):
        for h in self.handles:
            h.remove()

    def values(self, name: str, step: int | None = None) -> tuple[torch.Tensor, float]:
        """The sampled values and the true max |x| of one step (None: all steps pooled)."""
        steps = [step] if step is not None else sorted(self.samples[name])
        vals = torch.cat([v for s in steps for v in self.samples[name][s]])
        return vals, max(self.maxabs[name][s] for s in steps)


def mse_step_size(values: torch.Tensor, maxabs: float, bits: int, grid: int = 50) -> float:
    """The step size minimising the quantization MSE of ``values`` over clipping ratios of max |x|."""
    qmin, qmax = int_range(bits, symmetric=False)
    best, best_err = maxabs / qmax, float("inf")
    for r in torch.linspace(0.02, 1.0, grid):
        s = max(float(r) * maxabs / qmax, 1e-8)
        err = float(((torch.clamp(torch.round(values / s), qmin, qmax) * s - values) ** 2).mean())
        if err < best_err:
            best, best_err = s, err
    return best


def record_inputs(pipe, targets: dict[str, nn.Module], prompts: list[str], steps: int, guidance: float,
                  scheduler: str = "dpm", batch_size: int = 8, seed: int = 0, samples_per_call: int = 2048,
                  progress: bool = True, device: str = "cpu", per_channel: bool = False) -> tuple[InputRecorder, list[int]]:
    """Sample with the teacher over ``prompts`` and record the inputs of ``targets``; returns the recorder
    (hooks removed) and the timesteps of the steps it recorded."""
    from tqdm.auto import tqdm

    rec = InputRecorder(targets, samples_per_call, seed, per_channel=per_channel)
    timesteps: list[int] = []
    try:
        batches = [prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size)]
        bar = tqdm(batches, desc="calibrating", unit="batch", disable=not progress)
        for b, chunk in enumerate(bar):
            uncond, cond = encode(pipe, chunk, device)
            sched = make_scheduler(pipe, scheduler)

            def on_step(i, t, *_):
                rec.step = i + 1  # statistics of step i+1 are recorded during the next teacher call

            rec.step = 0
            teacher_trajectory(pipe.unet, sched, uncond, cond, initial_latents(pipe, len(chunk), seed + b, device),
                               guidance, steps, on_step)
            timesteps = [int(t) for t in sched.timesteps]
    finally:
        rec.remove()
    return rec, timesteps


def step_size_tables(rec: InputRecorder, act_bits: dict[str, int], steps: int,
                     smooth: dict[str, torch.Tensor] | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """{"per_step": {layer: [steps]}, "static": {layer: [1]}} by MSE search; layers in ``smooth`` are
    calibrated on their smoothed input x * smooth (SVDQuant)."""
    smooth = smooth or {}

    def vals(name, step=None):
        return rec.scaled_values(name, smooth[name], step) if name in smooth else rec.values(name, step)

    names = [n for n in rec.samples if act_bits.get(n)]
    per_step = {n: torch.tensor([mse_step_size(*vals(n, i), act_bits[n]) for i in range(steps)]) for n in names}
    static = {n: torch.tensor([mse_step_size(*vals(n), act_bits[n])]) for n in names}
    return {"per_step": per_step, "static": static}


def calibrate(pipe, layers: dict[str, nn.Module], act_bits: dict[str, int], prompts: list[str], steps: int,
              guidance: float, scheduler: str = "dpm", batch_size: int = 8, seed: int = 0,
              samples_per_call: int = 2048, progress: bool = True, device: str = "cpu") -> tuple[dict[str, dict[str, torch.Tensor]], list[int]]:
    """Activation step sizes {"per_step": {layer: [steps]}, "static": {layer: [1]}} for the layers with
    activation bits, and the timestep list they belong to. ``layers`` are the teacher's (full-precision) modules, by name."""
    targets = {n: m for n, m in layers.items() if act_bits.get(n)}
    rec, timesteps = record_inputs(pipe, targets, prompts, steps, guidance, scheduler, batch_size, seed,
                                   samples_per_call, progress, device)
    return step_size_tables(rec, act_bits, steps), timesteps
