"""What the user asked for (``ExportOptions``) and what it resolves to for one export (``ExportPlan``).

``ExportOptions`` is never mutated: target defaults (precision, the ios chunk limit, a quantized model's own
bit width) are resolved into a separate, frozen plan.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from mobilesd.errors import MobileSDError

TARGETS = ("android", "ios", "onnx", "web")
DEFAULT_PRECISION = {"android": "fp16", "ios": "fp16", "onnx": "fp32", "web": "fp16"}
TFLITE_TARGETS = ("android", "web")       # targets whose graphs are .tflite with the GPU-delegate check
BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5, "pal8": 1.0, "pal6": 0.75, "pal4": 0.5}
# Without --unet-chunks / --unet-max-mb, a UNet is cut so that no chunk holds more than this many MiB of fp32
# weights (Core ML: IOS_UNET_MAX_MB instead): converting and GPU-checking a chunk costs about 4-5x its fp32
# weights in memory, so SD1.5 (3.3 GB) exports in 4 chunks at 5.0 GB peak instead of 13.4 GB in one graph
# (docs/benchmarks/export_sd15_default.md). Small models stay one graph.
CONVERT_MAX_FP32_MB = 1024.0
IOS_UNET_MAX_MB = 953.0   # ios default --unet-max-mb: the Neural Engine loads models under 1 GB (10^9 bytes)
VERIFY_PROMPT = "a handwritten digit seven"
ISOLATE_ABOVE_BYTES = 512 * 2**20   # models with more weights than this export through worker processes


@dataclass
class ExportOptions:
    target: str = "android"
    precision: str | None = None          # None: the target's default
    unet_chunks: int | None = None
    unet_max_mb: float | None = None
    unet_batch: int = 2                   # 2: CFG halves in one call (see mobilesd/components.py); cfg overrides
    cfg: str | None = None                # batch | sequential | none; None: from unet_batch (2 batch, 1 sequential)
    height: int | None = None
    width: int | None = None
    allow_cpu_fallback: bool = False
    skip_gpu_check: bool = False
    gpu_run_max_mb: float = 256.0         # run graphs up to this weight size on the (software) GPU too
    verify_steps: int = 4
    verify_scheduler: str = "dpm"
    verify_guidance: float = 7.5
    overwrite: bool = False
    progress: bool = True
    isolate: bool | None = None           # None: automatic, by model size
    worker_timeout_s: float = 4 * 3600.0  # a worker step that runs longer is taken for hung and killed
    quantized: str | None = None          # quantized-model folder (mobilesd quantize): its integers go in the graphs
    simulate_activations: bool = False    # bake its activation fake-quant (step-index input) into the UNet graphs
    activation_quantization: str | None = None  # ios: "static" = W8A8 Core ML ops from the model's tables
    # target options, passed to the converter (None: the target's default; others reject what they lack)
    attention: str | None = None          # original | split-einsum (ios default: split-einsum, Neural Engine)
    min_deployment_target: str | None = None  # ios: iOS16 | iOS17 | iOS18 (default iOS17)
    palettize: int | None = None          # ios: 4 | 6 | 8-bit weight palettization (instead of --precision int*)
    palettize_mode: str | None = None     # ios: kmeans (default) | uniform
    loras: tuple = ()                     # LoraSpec / "FILE[:SCALE]": fused into the weights before everything else
    allow_pickle: bool = False            # pickle LoRAs / tiny decoders (the model's own loading has its own flag)
    vae_decoder: str = "full"             # full | tiny=PATH (a diffusers AutoencoderTiny folder)
    timestep_spacing: str | None = None   # leading | trailing | linspace: recorded, overrides every scheduler's
    default_scheduler: str = "dpm"        # the manifest's scheduler.default
    schedulers: tuple | None = None       # the manifest's scheduler.supported (None: every client scheduler)
    extra: dict = field(default_factory=dict)

    def converter_options(self) -> dict:
        return {"attention": self.attention, "min_deployment_target": self.min_deployment_target,
                "palettize": self.palettize, "palettize_mode": self.palettize_mode}

    def resolved_precision(self) -> str:
        return self.precision or DEFAULT_PRECISION[self.target]


@dataclass(frozen=True)
class ExportPlan:
    """One export's resolved settings: the options with the target's defaults filled in."""

    opts: ExportOptions
    precision: str                        # weight precision of the UNet graphs
    precision_given: bool                 # --precision was passed (else: the target's or quantized model's default)
    unet_max_mb: float | None
    quant_config: dict | None             # quant_config.json of --quantized Q
    cfg_mode: str = "batch"               # batch | sequential | none (the manifest's cfg.mode)
    loras: tuple = ()                     # mobilesd.lora.LoraFile, checked and hashed
    tiny_decoder: dict | None = None      # {"path", "sha256"}: the AutoencoderTiny exported as vae_decoder
    schedulers: tuple = ()                # scheduler.supported
    verify_scheduler: str = "dpm"         # the end-to-end check's scheduler (one the bundle supports)

    @property
    def unet_batch(self) -> int:
        """Batch of the UNet graphs: 2 for CFG in one call, 1 for two calls (sequential) or none."""
        return 2 if self.cfg_mode == "batch" else 1

    @property
    def target(self) -> str:
        return self.opts.target

    def converter(self):
        from mobilesd.converters import get_converter

        return get_converter(self.target, self.opts.converter_options())

    def threshold_key(self, precision: str | None = None) -> str:
        """Key of the verification thresholds (mobilesd.verify): the precision, or e.g. pal6 when palettized."""
        return self.converter().threshold_key(precision or self.precision)

    def graph_precision(self, role: str) -> str:
        """With --quantized and no --precision, the components the quantized model leaves in float (often the
        text encoder and VAE decoder) keep the target's default precision; the rest take the model's integers."""
        if self.quant_config is None or self.precision_given or role == "unet":
            return self.precision
        key = {"text_encoder": "text_encoder", "vae_decoder": "vae"}[role]
        return self.precision if self.quant_config["plan"].get(key) else DEFAULT_PRECISION[self.target]


def make_plan(opts: ExportOptions) -> ExportPlan:
    """Check the options and resolve the defaults; every error here comes before any slow work."""
    from mobilesd.export.quantized import read_quant_config

    if opts.target not in TARGETS:
        raise MobileSDError(f"unknown target {opts.target!r}", f"use one of {list(TARGETS)}")
    if opts.unet_batch not in (1, 2):
        raise MobileSDError(f"--unet-batch must be 1 or 2 (got {opts.unet_batch})", "use 2 (CFG in one call) or 1")
    if opts.verify_steps < 1:
        raise MobileSDError("--verify-steps must be at least 1", "verification is part of every export")
    if opts.worker_timeout_s <= 0:
        raise MobileSDError("the worker timeout must be positive", "pass a number of seconds > 0")
    qcfg = read_quant_config(opts)
    cfg_mode = resolve_cfg_mode(opts)
    loras = resolve_loras(opts, qcfg)
    tiny = resolve_vae_decoder(opts)
    schedulers = resolve_schedulers(opts)
    precision = opts.precision
    if precision is None and qcfg is not None and opts.target in ("android", "ios", "web"):
        precision = f"int{qcfg['weight_bits']}"   # the model's own integers
    precision = precision or DEFAULT_PRECISION[opts.target]
    plan = ExportPlan(opts=opts, precision=precision, precision_given=opts.precision is not None,
                      unet_max_mb=opts.unet_max_mb if (opts.unet_max_mb or opts.target != "ios") else IOS_UNET_MAX_MB,
                      quant_config=qcfg, cfg_mode=cfg_mode, loras=loras, tiny_decoder=tiny, schedulers=schedulers,
                      verify_scheduler=opts.verify_scheduler if opts.verify_scheduler in schedulers
                      else opts.default_scheduler)
    plan.converter().check_precision(precision)
    return plan


CFG_MODES = ("batch", "sequential", "none")
SPACINGS = ("leading", "trailing", "linspace")


def resolve_cfg_mode(opts: ExportOptions) -> str:
    if opts.cfg is None:
        return "batch" if opts.unet_batch == 2 else "sequential"
    if opts.cfg not in CFG_MODES:
        raise MobileSDError(f"unknown --cfg {opts.cfg!r}", f"use one of {', '.join(CFG_MODES)}")
    return opts.cfg


def resolve_loras(opts: ExportOptions, qcfg: dict | None) -> tuple:
    """The LoRAs to fuse, checked and hashed now (a missing, pickle or corrupt file fails before any work). A
    quantized model's LoRAs were fused before quantization: they come from its record, never from --lora."""
    from mobilesd.lora import inspect_loras, recorded_loras

    if qcfg is not None and qcfg.get("loras"):
        if opts.loras:
            raise MobileSDError("--lora with --quantized: the quantized model already holds its LoRAs "
                                f"({', '.join(Path(e['file']).name for e in qcfg['loras'])}), fused before quantization",
                                "drop --lora (its LoRAs are fused again from their recorded files), or quantize "
                                "with the LoRAs you want: mobilesd quantize --lora FILE")
        return recorded_loras(qcfg["loras"])
    if opts.loras and qcfg is not None:
        raise MobileSDError("--lora with --quantized: a LoRA must be fused before quantization, not into a "
                            "quantized model's integers", "quantize with it: mobilesd quantize --lora FILE --out Q, "
                            "then export --quantized Q")
    return inspect_loras(opts.loras, opts.allow_pickle)


def resolve_vae_decoder(opts: ExportOptions) -> dict | None:
    from mobilesd.bundle import sha256_file

    spec = opts.vae_decoder or "full"
    if spec == "full":
        return None
    if not spec.startswith("tiny="):
        raise MobileSDError(f"--vae-decoder {spec!r} is not understood", "use --vae-decoder full or tiny=PATH "
                            "(a diffusers AutoencoderTiny folder)")
    path = Path(spec[len("tiny="):]).expanduser().resolve()
    weights = path / "diffusion_pytorch_model.safetensors"
    if not (path / "config.json").is_file():
        raise MobileSDError(f"--vae-decoder tiny={path}: no config.json there",
                            "pass the folder of a diffusers AutoencoderTiny (config.json + "
                            "diffusion_pytorch_model.safetensors)")
    if not weights.is_file():
        pickled = [p for p in path.glob("diffusion_pytorch_model.*")]
        if not pickled:
            raise MobileSDError(f"--vae-decoder tiny={path}: no weights file there", "re-save the tiny decoder")
        if not opts.allow_pickle:
            raise MobileSDError(f"--vae-decoder tiny={path} has pickle weights ({pickled[0].name}): loading them can "
                                "execute code", "convert them to safetensors, or pass --allow-pickle if you trust them")
        weights = pickled[0]
    return {"path": str(path), "sha256": sha256_file(weights), "weights": weights.name}


def resolve_schedulers(opts: ExportOptions) -> tuple:
    from mobilesd.pipeline import CLIENT_SCHEDULERS

    names = tuple(opts.schedulers) if opts.schedulers else tuple(CLIENT_SCHEDULERS)
    bad = [n for n in names + (opts.default_scheduler,) if n not in CLIENT_SCHEDULERS]
    if bad:
        raise MobileSDError(f"scheduler {bad[0]!r} is not one the app clients implement",
                            f"use {', '.join(CLIENT_SCHEDULERS)}")
    if opts.default_scheduler not in names:
        raise MobileSDError(f"--default-scheduler {opts.default_scheduler} is not in --schedulers {','.join(names)}",
                            "add it to --schedulers")
    if opts.timestep_spacing is not None and opts.timestep_spacing not in SPACINGS:
        raise MobileSDError(f"unknown --timestep-spacing {opts.timestep_spacing!r}", f"use one of {', '.join(SPACINGS)}")
    return names


def replace(opts: ExportOptions, **changes) -> ExportOptions:
    return dataclasses.replace(opts, **changes)
