"""LoRA files fused into a pipeline's weights, before passes, quantization and conversion (``--lora FILE[:SCALE]``).

Loading and fusing are diffusers' own (``load_lora_weights`` / ``fuse_lora`` / ``unload_lora_weights``, on the
peft backend), so a fused export equals diffusers' pipeline with the same LoRA fused. What is ours is only what
diffusers does not do before it touches a file:

* pickle LoRAs (.bin/.pt/.ckpt/...) are refused unless ``allow_pickle`` (diffusers would unpickle them);
* a corrupt or unreadable file is a clear error, not a traceback;
* a LoRA for another architecture is refused naming the first mismatched layer (diffusers only warns about
  keys that match no layer and drops them, and fails deep inside peft on a shape mismatch);
* after loading, every LoRA layer of the file must have been injected (diffusers drops keys it cannot map
  with a warning; a silently partial LoRA would be a different model).

Formats (``LoraFile.format``): ``diffusers`` (keys ``unet.`` / ``text_encoder.`` with ``lora.down`` /
``lora.up`` or ``lora_linear_layer``), ``kohya`` (kohya-ss / A1111: ``lora_unet_*`` / ``lora_te_*`` with
``.alpha``), ``peft`` (peft's ``lora_A`` / ``lora_B`` keys, with the ``unet.`` / ``text_encoder.`` prefix that
diffusers' ``save_lora_weights`` adds, or as peft saves an adapter: bare module paths or ``base_model.model.``,
``lora_alpha`` from an ``adapter_config.json`` beside the file).
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from mobilesd.errors import MobileSDError

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = {".ckpt", ".bin", ".pt", ".pth", ".pkl"}
COMPONENTS = ("unet", "text_encoder")
FORMATS = ("diffusers", "kohya", "peft")


@dataclass(frozen=True)
class LoraSpec:
    """What the user asked for: ``--lora FILE[:SCALE]``."""

    path: str
    scale: float = 1.0


@dataclass(frozen=True)
class LoraFile:
    """A LoRA file checked and identified (what the manifest records under ``source.loras``)."""

    file: str                 # absolute path
    sha256: str
    scale: float
    format: str               # diffusers | kohya | peft
    components: tuple         # which pipeline components it changes: unet, text_encoder
    layers: int               # number of LoRA layers (pairs of down/up matrices)

    def manifest_entry(self) -> dict:
        d = asdict(self)
        d["components"] = list(self.components)
        return d


def parse_lora_arg(text: str) -> LoraSpec:
    """``FILE`` or ``FILE:SCALE`` (the scale is the part after the last colon, when it is a number)."""
    path, scale = text, 1.0
    if ":" in text:
        head, tail = text.rsplit(":", 1)
        try:
            scale = float(tail)
            path = head
        except ValueError:
            pass
    if not path:
        raise MobileSDError(f"--lora {text!r} names no file", "pass --lora FILE or --lora FILE:SCALE")
    if scale != scale or scale in (float("inf"), float("-inf")):
        raise MobileSDError(f"--lora {text!r}: the scale must be a finite number", "e.g. --lora style.safetensors:0.8")
    return LoraSpec(path, scale)


# ---- reading a file ----------------------------------------------------------------------------------------

def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with the little-endian length of its JSON header, then ``{``."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 0 < n <= path.stat().st_size - 8


def _looks_pickled(path: Path) -> bool:
    """torch.save's zip container or a raw pickle stream (protocol 2+ starts with 0x80)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def read_state_dict(path: str | Path, allow_pickle: bool = False) -> tuple[dict, dict, bool]:
    """(tensors, safetensors metadata, is_pickle) of a LoRA file, with clear errors for every failure."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MobileSDError(f"LoRA file {path} does not exist", "check the path given to --lora")
    if path.is_dir():
        raise MobileSDError(f"--lora {path} is a folder", "pass the LoRA's .safetensors file itself")
    pickled = path.suffix.lower() in PICKLE_SUFFIXES or (not _is_safetensors(path) and _looks_pickled(path))
    if pickled:
        if not allow_pickle:
            raise MobileSDError(f"LoRA {path} is a pickle file: loading it can execute arbitrary code",
                                "use a .safetensors LoRA, or pass --allow-pickle if you trust its source")
        import torch

        try:  # even when allowed, only tensors: weights_only refuses pickled code objects
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise MobileSDError(f"LoRA {path} is not a readable PyTorch checkpoint ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:200] if str(exc) else ''})",
                                "re-download it; it may be truncated or corrupt") from exc
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        if not isinstance(sd, dict) or not all(hasattr(v, "shape") for v in sd.values()):
            raise MobileSDError(f"LoRA {path} does not hold a dictionary of tensors", "pass a LoRA weights file")
        return dict(sd), {}, True
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        sd = load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise MobileSDError(f"LoRA {path} is not a readable safetensors file ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200] if str(exc) else 'unreadable'})",
                            "re-download it; it may be truncated or corrupt") from exc
    if not sd:
        raise MobileSDError(f"LoRA {path} holds no tensors", "pass a LoRA weights file")
    return sd, meta, False


def detect_format(sd: dict, where: str) -> str:
    keys = list(sd)
    if all(k.startswith(("lora_unet_", "lora_te_", "lora_te1_")) for k in keys):
        return "kohya"
    if any(k.startswith(("lora_te2_", "lora_unet_")) for k in keys):
        raise MobileSDError(f"LoRA {where} mixes kohya keys with others or is for SDXL (lora_te2_: a second text "
                            "encoder)", "pass an SD 1.x / 2.x LoRA")
    lora_keys = [k for k in keys if "lora" in k]
    if not lora_keys:
        raise MobileSDError(f"{where} is not a LoRA file: none of its {len(keys)} tensors is a LoRA weight "
                            f"(e.g. {keys[0]!r})", "pass a LoRA (.safetensors with lora_* / *.lora_A.* keys)")
    if any(".lora_A." in k or ".lora_B." in k for k in keys):
        return "peft"
    return "diffusers"


def _peft_component_prefix(sd: dict, pipe_modules: dict) -> dict:
    """Raw peft keys (``base_model.model.<module>.lora_A.weight`` or ``<module>.lora_A.weight``) with the
    component prefix diffusers expects, by which component holds the layers."""
    stripped = {k.removeprefix("base_model.model."): v for k, v in sd.items()}
    if all(k.startswith(tuple(f"{c}." for c in COMPONENTS)) for k in stripped):
        return stripped
    first = next(iter(stripped))
    module = first.split(".lora_")[0]
    for comp, names in pipe_modules.items():
        if module in names:
            return {f"{comp}.{k}": v for k, v in stripped.items()}
    return {f"unet.{k}": v for k, v in stripped.items()}   # reported as a mismatch by check_compatible


def inspect_lora(spec: LoraSpec, allow_pickle: bool = False) -> LoraFile:
    """Read and identify a LoRA file (no model needed): the checks that can fail before any slow work."""
    from mobilesd.bundle import sha256_file

    path = Path(spec.path).expanduser().resolve()
    sd, _, _ = read_state_dict(path, allow_pickle)
    fmt = detect_format(sd, str(path))
    if fmt == "kohya":
        comps = tuple(c for c, p in (("unet", "lora_unet_"), ("text_encoder", "lora_te")) if any(k.startswith(p) for k in sd))
        layers = sum(1 for k in sd if k.endswith("lora_down.weight"))
    else:
        bare = [k.removeprefix("base_model.model.") for k in sd]
        comps = tuple(c for c in COMPONENTS if any(k.startswith(f"{c}.") for k in bare)) or ("unet",)
        layers = sum(1 for k in sd if any(s in k for s in (".lora_A.", "lora.down.", "lora_linear_layer.down.",
                                                             "_lora.down.")))
    return LoraFile(file=str(path), sha256=sha256_file(path), scale=float(spec.scale), format=fmt,
                    components=comps, layers=layers)


def inspect_loras(specs, allow_pickle: bool = False) -> tuple[LoraFile, ...]:
    return tuple(inspect_lora(s if isinstance(s, LoraSpec) else parse_lora_arg(str(s)), allow_pickle) for s in specs)


# ---- checking against a model ---------------------------------------------------------------------------

def _diffusers_state_dict(pipe, sd: dict, fmt: str) -> tuple[dict, dict | None]:
    """The state dict in diffusers naming (diffusers' own kohya conversion) and its network alphas."""
    from diffusers import StableDiffusionPipeline

    if fmt == "kohya":
        try:
            converted, alphas = StableDiffusionPipeline.lora_state_dict(dict(sd))
        except Exception as exc:
            raise MobileSDError(f"diffusers could not convert this kohya LoRA: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:300] if str(exc) else ''}",
                                "pass an SD 1.x / 2.x LoRA in kohya, diffusers or peft format") from exc
        return converted, alphas
    if fmt == "peft":
        return _peft_component_prefix(sd, {c: set(n for n, _ in getattr(pipe, c).named_modules())
                                           for c in COMPONENTS if getattr(pipe, c, None) is not None}), None
    return dict(sd), None


def _peft_keys(component: str, part: dict, model, where: str) -> dict:
    """Component-relative keys in peft naming (``<module>.lora_A.weight``), by diffusers' converters, as diffusers
    maps them when it loads (text encoder: diffusers' key style, then peft's; the ``text_model.`` prefix dropped
    for the flattened CLIPTextModel of recent transformers)."""
    from diffusers.utils.state_dict_utils import (convert_state_dict_to_diffusers, convert_state_dict_to_peft,
                                                  convert_unet_state_dict_to_peft)

    if not part:
        return {}
    if component == "unet":
        if all(".lora_A." in k or ".lora_B." in k for k in part):
            return part
        # diffusers' UNet converter looks at the first key only: convert the non-peft keys on their own
        done = {k: v for k, v in part.items() if ".lora_A." in k or ".lora_B." in k}
        done.update(convert_unet_state_dict_to_peft({k: v for k, v in part.items() if k not in done}))
        return done
    try:
        out = convert_state_dict_to_peft(convert_state_dict_to_diffusers(part))
    except ValueError as exc:
        raise MobileSDError(f"LoRA {where}: diffusers cannot read its text-encoder keys ({exc}; e.g. "
                            f"{next(iter(part))!r})", "pass a LoRA whose text-encoder part diffusers loads (kohya "
                            "lora_te_* with the attention projections, or peft keys)") from None
    if not hasattr(model, "text_model"):
        out = {k.removeprefix("text_model."): v for k, v in out.items()}
    return out


def expected_layers(pipe, sd: dict, where: str) -> dict[str, set]:
    """{component: set of module paths} the LoRA adapts, after checking every layer exists in the pipeline with
    matching shapes; the first mismatch is an error naming the layer (the LoRA is for another architecture)."""
    from torch import nn

    out: dict[str, set] = {}
    unknown = [k for k in sd if not k.startswith(tuple(f"{c}." for c in COMPONENTS))]
    if unknown:
        raise MobileSDError(f"LoRA {where}: key {unknown[0]!r} belongs to no component of an SD pipeline "
                            "(unet, text_encoder)", "pass an SD 1.x / 2.x LoRA")
    for comp in COMPONENTS:
        part = {k[len(comp) + 1:]: v for k, v in sd.items() if k.startswith(f"{comp}.")}
        if not part:
            continue
        model = getattr(pipe, comp, None)
        if model is None:   # e.g. an export worker that did not load the text encoder
            continue
        modules = dict(model.named_modules())
        layers = set()
        for key, t in _peft_keys(comp, part, model, where).items():
            if ".lora_A." not in key and ".lora_B." not in key:
                if "lora_magnitude_vector" in key or "dora_scale" in key:
                    raise MobileSDError(f"LoRA {where} is a DoRA ({key}), which cannot be fused as a plain LoRA",
                                        "pass a plain LoRA")
                continue    # biases (lora_B.bias) and similar travel with their layer
            name = key.split(".lora_")[0]
            m = modules.get(name)
            if m is None:
                raise MobileSDError(
                    f"LoRA {where} does not fit this model: its layer {comp}.{name} does not exist in the model's "
                    f"{comp} (the first mismatched layer; this LoRA is for another architecture)",
                    "use a LoRA trained for this base model")
            a = ".lora_A." in key
            if isinstance(m, nn.Linear):
                want = ("in", m.in_features, t.shape[1]) if a else ("out", m.out_features, t.shape[0])
            elif isinstance(m, nn.Conv2d):
                want = ("in", m.in_channels, t.shape[1]) if a else ("out", m.out_channels, t.shape[0])
            else:
                raise MobileSDError(f"LoRA {where}: layer {comp}.{name} is a {type(m).__name__}, not a Linear or "
                                    "Conv2d (this LoRA is for another architecture)", "use a LoRA for this base model")
            if t.ndim < 2 or want[1] != want[2]:
                raise MobileSDError(
                    f"LoRA {where} does not fit this model: layer {comp}.{name} has {want[1]} {want[0]}put "
                    f"features, the LoRA's {'down' if a else 'up'} matrix {tuple(t.shape)} expects {want[2]} "
                    "(the first mismatched layer; this LoRA is for another architecture)",
                    "use a LoRA trained for this base model")
            layers.add(name)
        out[comp] = layers
    return out


def _loaded_layers(model, adapter: str) -> set:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {name for name, m in model.named_modules()
            if isinstance(m, BaseTunerLayer) and adapter in getattr(m, "lora_A", {})}


# ---- fusing ---------------------------------------------------------------------------------------------

def fuse_loras(pipe, loras, allow_pickle: bool = False) -> None:
    """Fuse each LoRA (``LoraFile`` or ``LoraSpec``) into ``pipe``'s weights in order, with its scale, through
    diffusers; afterwards the pipeline has plain layers again (no peft wrappers), so components, passes and
    converters see an ordinary model. Components the pipeline does not hold (None) are skipped."""
    from mobilesd.bundle import sha256_file

    for i, lora in enumerate(loras):
        if isinstance(lora, LoraSpec):
            lora = inspect_lora(lora, allow_pickle)
        path = Path(lora.file)
        if not path.is_file():
            raise MobileSDError(f"LoRA {path} is not here", "pass the LoRA files again (--lora), or restore them")
        if sha256_file(path) != lora.sha256:
            raise MobileSDError(f"LoRA {path} changed since it was recorded (SHA-256 differs)",
                                "use the same LoRA file, or export again with this one")
        _fuse_one(pipe, path, lora, f"mobilesd_lora_{i}", allow_pickle)


def _fuse_one(pipe, path: Path, lora: LoraFile, adapter: str, allow_pickle: bool) -> None:
    from mobilesd.loading import diffusers_errors_only

    sd, _, pickled = read_state_dict(path, allow_pickle)
    converted, _ = _diffusers_state_dict(pipe, sd, lora.format)
    expected = expected_layers(pipe, converted, str(path))
    present = [c for c in COMPONENTS if getattr(pipe, c, None) is not None and expected.get(c)]
    if not present:
        return
    adapter_cfg = path.with_name("adapter_config.json")
    raw_peft = lora.format == "peft" and not any(k.startswith(("unet.", "text_encoder.")) for k in sd)
    try:
        with diffusers_errors_only():
            if raw_peft and "unet" in present:
                # peft's own adapter layout: diffusers loads it per model, with the adapter's LoraConfig as metadata
                meta = json.loads(adapter_cfg.read_text()) if adapter_cfg.is_file() else None
                pipe.unet.load_lora_adapter({k.removeprefix("unet."): v for k, v in converted.items()}, prefix=None,
                                            adapter_name=adapter, metadata=meta, _pipeline=pipe)
            elif raw_peft:
                pipe.load_lora_weights(converted, adapter_name=adapter)
            elif pickled:   # the tensors as read (diffusers converts kohya keys and alphas itself)
                pipe.load_lora_weights(dict(sd), adapter_name=adapter)
            else:   # diffusers reads the file itself: its kohya conversion, alphas and adapter metadata
                pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter,
                                       use_safetensors=True)
            for comp in present:
                got = _loaded_layers(getattr(pipe, comp), adapter)
                missing = sorted(expected[comp] - got)
                if missing:
                    raise MobileSDError(f"diffusers loaded {len(got)} of the {len(expected[comp])} {comp} layers of LoRA "
                                        f"{path} (first not loaded: {comp}.{missing[0]}); fusing only part of it would "
                                        "make another model", "save the LoRA in one key style (kohya, diffusers or peft)")
            pipe.fuse_lora(components=present, lora_scale=lora.scale, adapter_names=[adapter])
            pipe.unload_lora_weights()
    except MobileSDError:
        raise
    except Exception as exc:
        raise MobileSDError(f"diffusers could not fuse LoRA {path}: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:300] if str(exc) else ''}",
                            "use a LoRA trained for this base model (SD 1.x / 2.x, kohya, diffusers or peft "
                            "format)") from exc
    logger.info("fused LoRA %s (%s, %d layers, scale %g) into %s", path.name, lora.format, lora.layers, lora.scale,
                ", ".join(present))


def recorded_loras(entries: list[dict] | None) -> tuple[LoraFile, ...]:
    """LoraFiles from a manifest's ``source.loras`` or a quantized model's ``loras`` record."""
    return tuple(LoraFile(file=e["file"], sha256=e["sha256"], scale=float(e["scale"]), format=e["format"],
                          components=tuple(e.get("components") or ("unet",)), layers=int(e.get("layers", 0)))
                 for e in entries or [])
