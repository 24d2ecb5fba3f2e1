"""The quantized-model folder: one function to save it, one to load it (like diffusers' save/from_pretrained).

Layout (format ``mobilesd-quantized``, version 2; version 1 folders, which have no SVDQuant layers, load too)::

    quant_config.json        method, bits, layer policy (rules and the resolved per-layer plan), timesteps
                             of the activation tables, calibration / training settings, base model
    weights.safetensors      per quantized layer "<component>.<layer>.qweight" (int8 container; 4-bit
                             values in [-7, 7] / [-8, 7]), ".scale" (float32, the weight's rank),
                             ".zero_point" (asymmetric only). LoRA is already merged into these integers.
    activations.safetensors  "<component>.<layer>.act_step": float32 [n_steps] per-step step sizes (one
                             entry for static intervals) for timesteps ``timesteps``; the interval is
                             [-2^(b-1) s, (2^(b-1)-1) s], zero point 0
                             SVDQuant layers (v2) also hold ".lowrank_down" / ".lowrank_up" (float32, the 16-bit
                             branch: [r, I(, kh, kw)] and [O, r(, 1, 1)]) and, when smoothed, ".smooth" (float32
                             [I], the multiplier of the layer's input); their ".qweight" are then the integers of
                             the *residual* W * diag(1 / smooth) - up @ down (the change of meaning behind v2)
    activations.safetensors  (cont.) for SVDQuant layers the step sizes are those of the smoothed input x * smooth
    lora.safetensors         (efficientdm, svdquant --distill) the trained LoRA factors, for reference; already
                             merged ([k, k, O/k, r/k] / [k, k, r/k, (I/k)*kh*kw] for GraLoRA's k x k blocks)
    tdq.safetensors          (tdq intervals) the generator MLPs the tables were frozen from

Layers not in the plan, biases and norms come from the base model recorded in the config (a model path;
``load_quantized(Q, model=...)`` overrides it), so a quantized SD model does not copy GBs of float weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from mobilesd.errors import MobileSDError
from mobilesd.quant.layers import QuantLayer, wrap
from mobilesd.quant.quantizers import ActQuantizer, StepContext

FORMAT = "mobilesd-quantized"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
COMPONENTS = ("unet", "text_encoder", "vae")


def component_module(pipe, name: str) -> nn.Module:
    return {"unet": pipe.unet, "text_encoder": pipe.text_encoder, "vae": pipe.vae}[name]


def install_step_hook(unet: nn.Module, context: StepContext):
    """The UNet's own forward tells the quantizers which timestep (and table entry) is running."""

    def hook(module, args, kwargs):
        t = args[1] if len(args) > 1 else kwargs.get("timestep")
        if t is not None:
            context.set_timestep(t)

    return unet.register_forward_pre_hook(hook, with_kwargs=True)


def replace_layers(module: nn.Module, plan: dict[str, dict], symmetric: bool = True,
                   group_size: int | None = None, init_scales: bool = True) -> dict[str, QuantLayer]:
    out = {}
    for name, spec in plan.items():
        layer = module.get_submodule(name)
        # group-wise only for 4-bit layers whose input channels split into whole groups (others: per channel;
        # the rule depends on shapes only, so saving and loading agree)
        gs = group_size if (spec["weights"] == 4 and group_size and layer.weight.shape[1] % group_size == 0) else None
        q = wrap(layer, spec["weights"], symmetric, gs, init=init_scales)
        module.set_submodule(name, q)
        out[name] = q
    return out


def attach_act_quantizers(layers: dict[str, QuantLayer], plan: dict[str, dict], context: StepContext,
                          tables: dict[str, torch.Tensor]) -> None:
    for name, q in layers.items():
        bits = plan[name]["acts"]
        if bits:
            q.act_quant = ActQuantizer(bits, len(tables[name]), context, tables[name])


class QuantizedModel:
    """A pipeline whose quantized layers are QuantLayers, with its config; ``pipe`` runs it in PyTorch."""

    def __init__(self, pipe, config: dict, layers: dict[str, dict[str, QuantLayer]], context: StepContext):
        self.pipe, self.config, self.layers, self.context = pipe, config, layers, context
        self._hook = install_step_hook(pipe.unet, context)

    # ---------------------------------------------------------------- save
    def save_pretrained(self, path: str | Path, overwrite: bool = False, extra_files: dict | None = None) -> Path:
        from safetensors.torch import save_file

        from mobilesd.bundle import atomic_folder, check_output_dir

        path = Path(path)
        check_output_dir(path, overwrite)
        weights, acts, lora = {}, {}, {}
        for comp, layers in self.layers.items():
            for name, q in layers.items():
                key = f"{comp}.{name}"
                q.merge()
                if q.weight_quant is not None:
                    weights[f"{key}.qweight"] = q.integers.contiguous()
                    weights[f"{key}.scale"] = q.weight_quant.scale.detach().float().contiguous()
                    if not q.weight_quant.symmetric:
                        weights[f"{key}.zero_point"] = q.weight_quant.zero_point.to(torch.int8).contiguous()
                else:  # activation-only layer: keep its float weight with the model
                    weights[f"{key}.weight"] = q.weight.detach().float().contiguous()
                if q.lowrank_down is not None:
                    weights[f"{key}.lowrank_down"] = q.lowrank_down.detach().float().contiguous()
                    weights[f"{key}.lowrank_up"] = q.lowrank_up.detach().float().contiguous()
                    if q.smooth is not None:
                        weights[f"{key}.smooth"] = q.smooth.detach().float().contiguous()
                if q.act_quant is not None:
                    acts[f"{key}.act_step"] = q.act_quant.step.detach().abs().float().reshape(-1).contiguous()
                if getattr(q, "lora_saved", None) is not None:
                    lora[f"{key}.lora_down"], lora[f"{key}.lora_up"] = q.lora_saved
        with atomic_folder(path, overwrite) as tmp:
            save_file(weights, str(tmp / "weights.safetensors"))
            if acts:
                save_file(acts, str(tmp / "activations.safetensors"))
            if lora:
                save_file(lora, str(tmp / "lora.safetensors"))
            for fname, tensors in (extra_files or {}).items():
                save_file(tensors, str(tmp / fname))
            cfg = dict(self.config, format=FORMAT, format_version=FORMAT_VERSION,
                       files=sorted(p.name for p in tmp.iterdir()))
            (tmp / "quant_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        return path

    # ---------------------------------------------------------------- load
    @classmethod
    def from_pretrained(cls, path: str | Path, model: str | Path | None = None, pipe=None) -> "QuantizedModel":
        from safetensors.torch import load_file

        path = Path(path)
        cfg_file = path / "quant_config.json"
        if not cfg_file.is_file():
            raise MobileSDError(f"{path} is not a quantized model (no quant_config.json)",
                                "pass a folder written by `mobilesd quantize --out Q`")
        cfg = json.loads(cfg_file.read_text())
        if cfg.get("format") != FORMAT or cfg.get("format_version") not in READABLE_VERSIONS:
            raise MobileSDError(f"{path}: format {cfg.get('format')!r} v{cfg.get('format_version')} is not "
                                f"{FORMAT} v{'/'.join(map(str, READABLE_VERSIONS))}",
                                "re-run `mobilesd quantize` with this mobilesd version")
        if pipe is None:
            from mobilesd.loading import load_pipeline

            source = model or cfg["base_model"]
            if not Path(str(source)).exists() and model is None:
                raise MobileSDError(f"{path} was quantized from {source}, which is not here",
                                    "pass the base model with --model (the same weights it was quantized from)")
            pipe = load_pipeline(source)
        weights = load_file(str(path / "weights.safetensors"))
        acts = load_file(str(path / "activations.safetensors")) if (path / "activations.safetensors").exists() else {}
        context = StepContext(cfg.get("timesteps"))
        layers = {}
        for comp, plan in cfg["plan"].items():
            module = component_module(pipe, comp)
            missing = [n for n in plan if not _has_submodule(module, n)]
            if missing:
                raise MobileSDError(f"{path}: the base model's {comp} has no layers {missing[:3]}",
                                    "pass the base model this quantized model was made from (--model)")
            qlayers = replace_layers(module, plan, cfg["weight_symmetric"], cfg.get("group_size"), init_scales=False)
            for name, q in qlayers.items():
                key = f"{comp}.{name}"
                if q.weight_quant is not None:
                    ints = weights[f"{key}.qweight"]
                    if ints.shape != q.weight.shape:
                        raise MobileSDError(f"{path}: {key} has shape {tuple(ints.shape)}, the base model's "
                                            f"{tuple(q.weight.shape)}", "pass the matching base model (--model)")
                    q.weight_quant.scale.copy_(weights[f"{key}.scale"])
                    if f"{key}.zero_point" in weights:
                        q.weight_quant.zero_point.copy_(weights[f"{key}.zero_point"].float())
                    q.weight.data = q.weight_quant.dequantize(ints)
                    q.integers = ints
                elif f"{key}.weight" in weights:
                    q.weight.data = weights[f"{key}.weight"]
                    q.integers = None
                if f"{key}.lowrank_down" in weights:
                    q.set_lowrank(weights[f"{key}.lowrank_down"], weights[f"{key}.lowrank_up"],
                                  weights.get(f"{key}.smooth"))
                q.merged = True
            attach_act_quantizers(qlayers, plan, context, {n: acts[f"{comp}.{n}.act_step"] for n in plan
                                                          if f"{comp}.{n}.act_step" in acts})
            layers[comp] = qlayers
        for q in (q for ls in layers.values() for q in ls.values()):
            q.requires_grad_(False)
        return cls(pipe.to(torch.float32), cfg, layers, context)

    # ---------------------------------------------------------------- for exporters
    def quantized_weights(self, component: str, prefix_map=None) -> dict[str, dict]:
        """{weight parameter name: {"int", "scale", "zero_point", "bits", "group_size"}} (numpy), names as in
        the component module (``prefix_map(layer_name)`` renames, e.g. into a UNet chunk's ``parts``)."""
        out = {}
        for name, q in self.layers.get(component, {}).items():
            if q.weight_quant is None:
                continue
            wq = q.weight_quant
            key = (prefix_map(name) if prefix_map else name)
            if key is None:
                continue
            out[key + ".weight"] = {
                "int": q.integers.numpy(), "scale": wq.scale.float().numpy(),
                "zero_point": None if wq.symmetric else wq.zero_point.to(torch.int8).numpy(),
                "bits": wq.bits, "group_size": wq.group_size, "symmetric": wq.symmetric}
        return out

    def lowrank_branches(self, component: str = "unet") -> dict[str, dict]:
        """SVDQuant layers: {layer name: {"rank", "down", "up", "smooth" (or None)}} (numpy)."""
        out = {}
        for name, q in self.layers.get(component, {}).items():
            if q.lowrank_down is not None:
                out[name] = {"rank": int(q.lowrank_down.shape[0]), "down": q.lowrank_down.numpy(),
                             "up": q.lowrank_up.numpy(), "smooth": None if q.smooth is None else q.smooth.numpy()}
        return out

    def activation_tables(self, component: str = "unet") -> dict[str, dict]:
        out = {}
        for name, q in self.layers.get(component, {}).items():
            if q.act_quant is not None:
                out[name] = {"scale": q.act_quant.step.detach().abs().float().numpy().reshape(-1),
                             "zero_point": 0, "bits": q.act_quant.bits,
                             "timesteps": list(self.config.get("timesteps") or [])}
        return out


def _has_submodule(module, name):
    try:
        module.get_submodule(name)
        return True
    except AttributeError:
        return False


def load_quantized(path: str | Path, model: str | Path | None = None):
    """The quantized model as a diffusers pipeline, ready to sample in PyTorch (what ``mobilesd eval`` runs)."""
    return QuantizedModel.from_pretrained(path, model).pipe
