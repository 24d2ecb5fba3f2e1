"""What the user asked for (``ExportOptions``) and what it resolves to for one export (``ExportPlan``).

``ExportOptions`` is never mutated: target defaults (precision, the ios chunk limit, a quantized model's own
bit width) are resolved into a separate, frozen plan.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mobilesd.errors import MobileSDError

TARGETS = ("android", "ios", "onnx", "web")
DEFAULT_PRECISION = {"android": "fp16", "ios": "fp16", "onnx": "fp32", "web": "fp16"}
TFLITE_TARGETS = ("android", "web")       # targets whose graphs are .tflite with the GPU-delegate check
BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5, "pal8": 1.0, "pal6": 0.75, "pal4": 0.5}
IOS_UNET_MAX_MB = 953.0   # ios default --unet-max-mb: the Neural Engine loads models under 1 GB (10^9 bytes)
VERIFY_PROMPT = "a handwritten digit seven"
ISOLATE_ABOVE_BYTES = 512 * 2**20   # models with more weights than this export through worker processes


@dataclass
class ExportOptions:
    target: str = "android"
    precision: str | None = None          # None: the target's default
    unet_chunks: int | None = None
    unet_max_mb: float | None = None
    unet_batch: int = 2                   # 2: CFG halves in one call (see mobilesd/components.py)
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
    precision = opts.precision
    if precision is None and qcfg is not None and opts.target in ("android", "ios", "web"):
        precision = f"int{qcfg['weight_bits']}"   # the model's own integers
    precision = precision or DEFAULT_PRECISION[opts.target]
    plan = ExportPlan(opts=opts, precision=precision, precision_given=opts.precision is not None,
                      unet_max_mb=opts.unet_max_mb if (opts.unet_max_mb or opts.target != "ios") else IOS_UNET_MAX_MB,
                      quant_config=qcfg)
    plan.converter().check_precision(precision)
    return plan


def replace(opts: ExportOptions, **changes) -> ExportOptions:
    return dataclasses.replace(opts, **changes)
