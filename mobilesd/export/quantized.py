"""Exporting a quantized model (``mobilesd quantize``): its integer weights into the graphs, its per-step
activation tables into the bundle.

The state is explicit: ``QuantizedExport`` maps layer modules (by object identity, holding the modules) to
their integers, and is handed to whoever builds components; nothing is stored on diffusers objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mobilesd.errors import MobileSDError


def read_quant_config(opts) -> dict | None:
    """quant_config.json of ``opts.quantized`` after checking the options that go with it (None without one)."""
    if opts.simulate_activations and not opts.quantized:
        raise MobileSDError("--simulate-activations needs --quantized Q",
                            "quantize first (mobilesd quantize --out Q), then export --quantized Q")
    if opts.activation_quantization not in (None, "static"):
        raise MobileSDError(f"--activation-quantization {opts.activation_quantization} is not supported",
                            "use --activation-quantization static")
    if opts.activation_quantization and (opts.target != "ios" or not opts.quantized or opts.simulate_activations):
        raise MobileSDError("--activation-quantization static needs --target ios and --quantized Q (and not "
                            "--simulate-activations)", "Core ML runs integer activations (W8A8, iOS17+); the "
                            "android GPU delegate computes activations in float")
    if not opts.quantized:
        return None
    path = Path(opts.quantized)
    cfg_file = path / "quant_config.json"
    if not cfg_file.is_file():
        raise MobileSDError(f"--quantized {path} is not a quantized model (no quant_config.json)",
                            "pass a folder written by `mobilesd quantize --out Q`")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise MobileSDError(f"{cfg_file} is not valid JSON ({exc})", "quantize the model again") from exc
    if cfg.get("svdquant") and opts.target == "ios" and opts.attention in (None, "split-einsum"):
        # the split-einsum pass (mobilesd/passes/split_einsum.py) rewrites attention's Linear layers as 1x1 convs
        # from their .weight; an SVDQuant layer is main + low-rank branch, which that pass does not know
        raise MobileSDError(f"--quantized {path} is an SVDQuant model: its low-rank branches are not supported by "
                            "the split-einsum attention layout (the ios default)",
                            "pass --attention original (the GPU layout) with --target ios")
    if (opts.simulate_activations or opts.activation_quantization) and not (cfg.get("act_bits") and cfg["act_bits"] < 16):
        raise MobileSDError(f"--simulate-activations: {path} does not quantize activations (W{cfg['weight_bits']}"
                            f"A{cfg['act_bits']})", "drop --simulate-activations, or quantize with --acts 8")
    return cfg


@dataclass
class QuantizedExport:
    """What the converters need of a quantized model, keyed by the layer modules inside the loaded pipeline."""

    weights: dict = field(default_factory=dict)       # module -> its integers, scales (quantized_weights entry)
    float_layers: set = field(default_factory=set)    # modules the policy keeps in floating point
    activations: dict = field(default_factory=dict)   # module -> per-step activation scales (ios W8A8)
    step_context: object | None = None                # StepContext when activations are simulated in the graphs
    lowrank: dict = field(default_factory=dict)       # SVDQuant: export module -> {"rank", "smooth": folded|multiply|none}
    smoothing: dict | None = None                     # SVDQuant: {"folded": {norm: [layers]}, "multiply": [layers]}

    def attach(self, comp) -> None:
        """The converters' contract: ``component.quantized_weights`` {parameter name: integers, scale, ...},
        ``component.float_layers`` (module names kept in floating point) and, for ios W8A8,
        ``component.activation_scales``, all by the component module's own names."""
        comp.quantized_weights, comp.float_layers = {}, []
        if self.activations:
            comp.activation_scales = {name: self.activations[m] for name, m in comp.module.named_modules()
                                      if m in self.activations}
        comp.lowrank_layers = {}
        for name, m in comp.module.named_modules():
            if m in self.weights:
                comp.quantized_weights[f"{name}.weight"] = self.weights[m]
            elif m in self.float_layers:
                comp.float_layers.append(name)
            if m in self.lowrank:
                comp.lowrank_layers[name] = self.lowrank[m]


def apply_quantized(pipe, opts) -> QuantizedExport:
    """Put the quantized model into ``pipe`` (its layers then hold the dequantized integers exactly) and return
    what the converters need. Without --simulate-activations the layers become plain Linear / Conv2d (weights
    only: activations stay float on the GPU); with it the UNet keeps its quantizers and the returned state
    carries the StepContext that gives each chunk a step-index input."""
    from torch import nn

    from mobilesd.quant import QuantizedModel
    from mobilesd.quant.model import component_module
    from mobilesd.quant.svdquant import SVDQuantExport, export_module, fold_smoothing

    qm = QuantizedModel.from_pretrained(opts.quantized, pipe=pipe)
    state = QuantizedExport(step_context=qm.context if opts.simulate_activations else None)
    quantized = set()
    for comp, layers in qm.layers.items():
        module = component_module(pipe, comp)
        if module is None:
            continue
        entries = qm.quantized_weights(comp)
        tables = qm.activation_tables(comp) if opts.activation_quantization else {}
        branches = {}
        for name, q in layers.items():
            simulate = opts.simulate_activations and comp == "unet"
            target = export_module(q, q.act_quant if simulate else None)
            if target is not q:
                module.set_submodule(name, target)
            # an SVDQuant layer's integers are its main branch's; its low-rank pair stays float (fp16 graphs)
            main = target.main if isinstance(target, SVDQuantExport) else target
            quantized.add(main)
            if f"{name}.weight" in entries:
                state.weights[main] = entries[f"{name}.weight"]
            if name in tables:
                state.activations[main] = tables[name]
            if isinstance(target, SVDQuantExport):
                branches[name] = target
        if branches:
            # the smoothing multiply goes into the norm in front where that is exact, else stays a MUL
            state.smoothing = fold_smoothing(module, branches)
            folded = {n for readers in state.smoothing["folded"].values() for n in readers}
            for name, target in branches.items():
                how = "folded" if name in folded else ("multiply" if target.smooth is not None else "none")
                state.lowrank[target] = {"rank": int(target.lowrank_down.weight.shape[0]), "smooth": how,
                                         "branch_parameters": target.branch_parameters()}
    # layers kept in full precision: the policy's (skip / downsampling convs) and SVDQuant's low-rank branches
    state.float_layers = {m for m in pipe.unet.modules()
                          if isinstance(m, (nn.Conv2d, nn.Linear)) and m not in quantized}
    return state


def write_quantization(root: Path, opts, cfg: dict) -> dict:
    """The manifest's quantization section, and the per-step activation tables as a bundle file (for
    runtimes with integer activations; layer names are the PyTorch module names of the UNet)."""
    from safetensors.numpy import load_file

    qdir = Path(opts.quantized)
    section = {
        "source": str(qdir.resolve()), "method": cfg["method"], "weight_bits": cfg["weight_bits"],
        "act_bits": cfg["act_bits"], "act_intervals": cfg["act_intervals"], "group_size": cfg.get("group_size"),
        "weight_symmetric": cfg["weight_symmetric"], "timesteps": cfg.get("timesteps") or [],
        "layers": {comp: len(plan) for comp, plan in cfg["plan"].items()},
        "simulate_activations": bool(opts.simulate_activations),
        "activation_quantization": opts.activation_quantization,
        "activation_tables": None,
    }
    acts_file = qdir / "activations.safetensors"
    if acts_file.exists():
        acts = load_file(str(acts_file))
        plan = cfg["plan"]["unet"]
        tables = {k.removeprefix("unet.").removesuffix(".act_step"): v.astype(float).tolist()
                  for k, v in acts.items() if k.startswith("unet.")}
        (root / "quantization").mkdir(exist_ok=True)
        (root / "quantization" / "activations.json").write_text(json.dumps({
            "format": "mobilesd-activation-tables", "format_version": 1,
            "timesteps": section["timesteps"],
            "rule": "step size s of a layer's input at timestep t: the entry of the nearest table timestep; "
                    "x_q = s * clamp(round(x / s), -2^(b-1), 2^(b-1) - 1), zero point 0",
            "layers": {name: {"bits": plan[name]["acts"], "step_sizes": tables[name]} for name in sorted(tables)},
        }, indent=1, allow_nan=False) + "\n")
        section["activation_tables"] = {"file": "quantization/activations.json", "layers": len(tables)}
    if opts.simulate_activations:
        section["step_index"] = {"input": "step_index", "dtype": "float32", "shape": [1],
                                 "rule": "index of the table timestep nearest the scheduler timestep"}
    for key in ("distill", "learn_weight_scales"):
        section[key] = bool(cfg.get(key))
    section["lora_blocks"] = cfg.get("lora_blocks")
    svd = cfg.get("svdquant")
    if svd:
        layers = svd["layers"]
        section["svdquant"] = {
            "rank": svd["rank"], "smooth_alpha": svd.get("smooth_alpha"), "layers": len(layers),
            "smoothed_layers": sum(1 for v in layers.values() if v["smoothed"]),
            "branch_parameters": svd["branch_parameters"],
            "rule": "y = main(Q_a(x * smooth)) + lowrank_up(lowrank_down(x * smooth)); main holds the residual's "
                    "integers, the low-rank pair is float (fp16 weights); activation tables are of x * smooth",
        }
    return section
