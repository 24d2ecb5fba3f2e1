"""Load a Stable Diffusion model from a diffusers folder, a single-file checkpoint or a hub id.

Safetensors only by default: pickle checkpoints (.ckpt/.bin/.pt/.pth) can run code when loaded, so they
are refused unless the user passes ``allow_pickle=True`` (``--allow-pickle``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mobilesd.errors import MobileSDError
# The small digits model trained in this repo, shipped as package data; until it exists, a tiny random SD.
from mobilesd.tiny.model import DEFAULT_MODEL

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = {".ckpt", ".bin", ".pt", ".pth", ".pkl"}
SUPPORTED_PIPELINES = {"StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline",
                       "StableDiffusionInpaintPipeline"}
SUPPORTED_PREDICTIONS = {"epsilon", "v_prediction"}


def cache_dir() -> Path:
    path = Path(os.environ.get("MOBILESD_CACHE", Path.home() / ".cache" / "mobilesd"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_model_path() -> Path:
    """The asset if present, else a tiny random SD saved once in diffusers layout (same loader path)."""
    if (DEFAULT_MODEL / "model_index.json").exists():
        return DEFAULT_MODEL
    from mobilesd.architectures import save_random_pipeline

    path = cache_dir() / "tiny-random-sd"
    if not (path / "model_index.json").exists():
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            save_random_pipeline(Path(tmp) / "m", "tiny", seed=0)
            os.replace(Path(tmp) / "m", path)
    return path


def _looks_like_hub_id(model: str) -> bool:
    parts = model.split("/")
    return len(parts) == 2 and all(parts) and not model.startswith((".", "/", "~"))


def _check_pickle(paths: list[Path], allow_pickle: bool) -> None:
    pickles = [p for p in paths if p.suffix in PICKLE_SUFFIXES]
    if pickles and not allow_pickle:
        raise MobileSDError(
            f"{pickles[0]} is a pickle checkpoint: loading it can execute arbitrary code",
            "convert it to .safetensors, or pass --allow-pickle if you trust its source")


def _check_pipeline(pipe, source: str, skip: tuple = ()):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    name = type(pipe).__name__
    unet = getattr(pipe, "unet", None)
    if not isinstance(unet, UNet2DConditionModel) or (
            "vae" not in skip and not isinstance(getattr(pipe, "vae", None), AutoencoderKL)):
        raise MobileSDError(f"{source} is a {name}, not a Stable Diffusion 1.x/2.x pipeline",
                            "pass an SD 1.x or 2.x model (UNet2DConditionModel + AutoencoderKL + CLIP)")
    from mobilesd.components import check_supported

    try:  # config fields the components cannot carry over faithfully: refused now, not mid-conversion
        check_supported(pipe)
    except MobileSDError as exc:
        raise MobileSDError(f"{source}: {exc.problem}", exc.fix) from None
    pred = pipe.scheduler.config.get("prediction_type", "epsilon")
    if pred not in SUPPORTED_PREDICTIONS:
        raise MobileSDError(f"{source}: prediction_type {pred!r} is not supported",
                            f"use one of {sorted(SUPPORTED_PREDICTIONS)} (--prediction-type)")
    return pipe


def load_pipeline(model: str | Path | None = None, *, allow_pickle: bool = False,
                  prediction_type: str | None = None, config: str | Path | None = None,
                  skip: tuple[str, ...] = (), image_size: int | tuple[int, int] | None = None):
    """A ``StableDiffusionPipeline`` in fp32 on the CPU.

    model: a diffusers folder, a single-file checkpoint (.safetensors; pickle only with
    ``allow_pickle``), a hub id (needs the network), or None for the default model.
    prediction_type: override the scheduler's (e.g. "v_prediction" for SD 2.x 768 single files).
    image_size: the native image size of a single-file checkpoint that does not state it (SD 2.x: 512 for
    2.x-base, 768 for 2.x 768-v; see ``resolve_single_file``); for other models it must match their config.
    config: a diffusers folder (configs only are fine) describing a single-file checkpoint's
    architecture; by default it is inferred from the checkpoint's keys (SD 1.x or 2.x).
    skip: components not to load ("text_encoder", "vae"), to save memory in export workers.
    """
    with diffusers_errors_only():
        return _load_pipeline(model, allow_pickle, prediction_type, config, skip, image_size)


@contextlib.contextmanager
def diffusers_errors_only():
    """diffusers logs only its errors inside the block (loading warns about parts SD deployment does not use,
    e.g. the safety checker); its verbosity is restored after, so a caller's own diffusers setting stays."""
    from diffusers.utils import logging as dlogging

    verbosity = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        yield
    finally:
        dlogging.set_verbosity(verbosity)


def _load_pipeline(model, allow_pickle, prediction_type, config, skip, image_size):
    if prediction_type is not None and prediction_type not in SUPPORTED_PREDICTIONS:
        raise MobileSDError(f"prediction type {prediction_type!r} is not supported",
                            f"use one of {sorted(SUPPORTED_PREDICTIONS)}")
    source = str(model) if model is not None else str(default_model_path())
    path = Path(source).expanduser()
    kwargs = dict(dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
    kwargs.update({name: None for name in skip})

    if path.is_dir():
        pipe = _load_folder(path, allow_pickle, kwargs)
    elif path.is_file():
        pipe = _load_single_file(path, allow_pickle, config, kwargs, prediction_type, image_size)
    elif path.suffix in PICKLE_SUFFIXES | {".safetensors"} or not _looks_like_hub_id(source):
        raise MobileSDError(f"model {source!r} does not exist",
                            "pass a diffusers folder, a .safetensors checkpoint, or a hub id like org/name")
    else:
        pipe = _load_hub(source, kwargs)

    if prediction_type is not None:
        pipe.scheduler.register_to_config(prediction_type=prediction_type)
    for name in skip:  # the single-file loader ignores None components: drop them here
        setattr(pipe, name, None)
    pipe.set_progress_bar_config(disable=True)
    _check_image_size(pipe, image_size, source)
    return _check_pipeline(pipe, source, skip)


def _load_folder(path: Path, allow_pickle: bool, kwargs: dict):
    from diffusers import StableDiffusionPipeline

    index_file = path / "model_index.json"
    if not index_file.exists():
        raise MobileSDError(f"{path} is not a diffusers model folder (no model_index.json)",
                            "pass the folder written by save_pretrained(), or a single .safetensors file")
    try:
        index = json.loads(index_file.read_text())
    except json.JSONDecodeError as exc:
        raise MobileSDError(f"{index_file} is not valid JSON ({exc})", "re-download or re-save the model") from exc
    cls = index.get("_class_name")
    if cls not in SUPPORTED_PIPELINES:
        raise MobileSDError(f"{path} holds a {cls}, which mobilesd does not support",
                            "pass a Stable Diffusion 1.x / 2.x model (StableDiffusionPipeline)")
    weights = [p for p in path.rglob("*") if p.suffix in PICKLE_SUFFIXES | {".safetensors"}]
    if not weights:
        raise MobileSDError(f"{path} has configs but no weight files", "re-download or re-save the model")
    # A component is a pickle risk when its folder has pickle weights and no safetensors alternative.
    by_folder: dict[Path, set[str]] = {}
    for p in weights:
        by_folder.setdefault(p.parent, set()).add(p.suffix)
    pickled = sorted(f for f, suffixes in by_folder.items() if ".safetensors" not in suffixes)
    if pickled:
        _check_pickle([next(p for p in weights if p.parent == pickled[0])], allow_pickle)
    try:
        return StableDiffusionPipeline.from_pretrained(str(path), use_safetensors=None if pickled else True, **kwargs)
    except MobileSDError:
        raise
    except Exception as exc:  # corrupt weights, missing component folders, mismatched shapes
        raise MobileSDError(f"could not load the model in {path}: {type(exc).__name__}: {exc}",
                            "check that the folder is complete and not corrupt (re-download or re-save it)") from exc


# ---- what a single-file checkpoint says about itself ------------------------------------------------
# SD 2.x-base (512 px, epsilon) and SD 2.x (768 px, v-prediction) single files have the same keys and
# shapes; only what the file states (safetensors metadata, an LDM .yaml beside it) or the user tells
# them apart. Never guessed: an SD 2.x file that states neither is refused with the flags to pass.
SD2_VARIANTS = {"stable-diffusion-v2-512": (512, "epsilon"), "stable-diffusion-v2-768-v": (768, "v_prediction")}
SD2_FIX = ("pass --prediction-type epsilon --image-size 512 for SD 2.x-base (e.g. v2-1_512-ema-pruned), or "
           "--prediction-type v_prediction --image-size 768 for SD 2.x 768 (e.g. v2-1_768-ema-pruned)")


@dataclass
class SingleFileFacts:
    """What a single-file checkpoint states: its architecture (from its keys) and, where its metadata or an
    LDM config beside it says so, its prediction type and native image size (``sources``: where each was read)."""

    arch: str                                  # "sd15" | "sd21": the config in mobilesd.architectures
    prediction_type: str | None = None
    image_size: int | tuple[int, int] | None = None   # square side, or (height, width)
    sources: dict = field(default_factory=dict)


def _flag(value) -> bool | None:
    text = str(value).strip().lower()
    return True if text in ("true", "1", "yes") else False if text in ("false", "0", "no") else None


def _prediction_name(value) -> str | None:
    return {"v": "v_prediction", "v_prediction": "v_prediction", "v-prediction": "v_prediction",
            "epsilon": "epsilon", "eps": "epsilon"}.get(str(value).strip().lower())


def _resolution(value) -> int | tuple[int, int] | None:
    """modelspec.resolution "WxH" / ss_resolution "(W, H)" or "512" -> a side or (height, width)."""
    nums = [int(n) for n in re.findall(r"\d+", str(value))]
    if len(nums) == 1 or (len(nums) == 2 and nums[0] == nums[1]):
        return nums[0]
    return (nums[1], nums[0]) if len(nums) == 2 else None


def read_single_file_facts(path: str | Path) -> SingleFileFacts:
    """The architecture of a .safetensors SD checkpoint (keys), and what its metadata states: SAI ModelSpec
    (``modelspec.architecture`` / ``.prediction_type`` / ``.resolution``), kohya-ss (``ss_v2``,
    ``ss_v_parameterization``, ``ss_resolution``), or an LDM config ``<name>.yaml`` beside it (its
    ``parameterization``, as A1111 reads it). Statements that contradict each other are an error."""
    from safetensors import safe_open

    path = Path(path)
    key_v2 = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            meta = f.metadata() or {}
            if "model.diffusion_model.input_blocks.0.0.weight" not in keys:
                raise MobileSDError(f"{path} is not a Stable Diffusion checkpoint (no UNet weights in LDM layout)",
                                    "pass an SD 1.x/2.x single-file checkpoint or a diffusers folder")
            # the cross-attention key width: 1024 (OpenCLIP ViT-H) in SD 2.x, 768 (CLIP ViT-L) in SD 1.x. The
            # key diffusers reads, else any cross-attention key (UNets whose level 0 has one layer)
            attn = key_v2 if key_v2 in keys else next(
                (k for k in sorted(keys) if k.startswith("model.diffusion_model.") and k.endswith(".attn2.to_k.weight")),
                None)
            arch = "sd21" if attn is not None and f.get_slice(attn).get_shape()[-1] == 1024 else "sd15"
    except MobileSDError:
        raise
    except Exception as exc:
        raise MobileSDError(f"{path} is not a readable safetensors file ({exc})",
                            "re-download the checkpoint; it may be truncated or corrupt") from exc

    said: dict[str, list[tuple[object, str]]] = {"prediction_type": [], "image_size": [], "arch": []}
    spec_arch = meta.get("modelspec.architecture")
    if spec_arch in SD2_VARIANTS:
        size, pred = SD2_VARIANTS[spec_arch]
        where = f"metadata modelspec.architecture={spec_arch!r}"
        said["arch"].append(("sd21", where))
        said["prediction_type"].append((pred, where))
        said["image_size"].append((size, where))
    elif spec_arch and spec_arch.startswith("stable-diffusion-v1"):
        said["arch"].append(("sd15", f"metadata modelspec.architecture={spec_arch!r}"))
    for key, reader, field_name in (("modelspec.prediction_type", _prediction_name, "prediction_type"),
                                    ("modelspec.resolution", _resolution, "image_size")):
        if key in meta and reader(meta[key]) is not None:
            said[field_name].append((reader(meta[key]), f"metadata {key}={meta[key]!r}"))
    if _flag(meta.get("ss_v_parameterization")) is not None:
        said["prediction_type"].append(("v_prediction" if _flag(meta["ss_v_parameterization"]) else "epsilon",
                                        f"metadata ss_v_parameterization={meta['ss_v_parameterization']!r}"))
    if _flag(meta.get("ss_v2")) is not None:
        said["arch"].append(("sd21" if _flag(meta["ss_v2"]) else "sd15", f"metadata ss_v2={meta['ss_v2']!r}"))
    if not said["image_size"] and meta.get("ss_resolution") and _resolution(meta["ss_resolution"]) is not None:
        # kohya's training resolution: weaker than modelspec.resolution, so only when that is absent
        said["image_size"].append((_resolution(meta["ss_resolution"]), f"metadata ss_resolution={meta['ss_resolution']!r}"))
    yaml_file = path.with_suffix(".yaml")
    if yaml_file.is_file():
        said["prediction_type"].append((_ldm_yaml_prediction(yaml_file), f"{yaml_file.name} (model.params.parameterization)"))

    keys_say = "SD 2.x (1024-wide cross-attention)" if arch == "sd21" else "SD 1.x (768-wide cross-attention)"
    for value, where in said["arch"]:
        if value != arch:
            raise MobileSDError(f"{path}: {where} contradicts its weights, which are {keys_say}",
                                "pass --config DIR (a diffusers folder of the right architecture)")
    facts = SingleFileFacts(arch)
    for name in ("prediction_type", "image_size"):
        values = {v for v, _ in said[name]}
        if len(values) > 1:
            raise MobileSDError(f"{path} contradicts itself on its {name.replace('_', ' ')}: "
                                + "; ".join(f"{where} says {v}" for v, where in said[name]),
                                "pass --prediction-type and --image-size to say which is right")
        if values:
            setattr(facts, name, values.pop())
            facts.sources[name] = said[name][0][1]
    return facts


def _ldm_yaml_prediction(yaml_file: Path) -> str:
    import yaml

    try:
        cfg = yaml.safe_load(yaml_file.read_text())
        params = cfg["model"]["params"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise MobileSDError(f"{yaml_file} (beside the checkpoint) is not an LDM model config ({exc})",
                            "remove or fix it, or pass --config DIR") from exc
    value = params.get("parameterization", "eps")  # the LDM default is epsilon
    if _prediction_name(value) is None:
        raise MobileSDError(f"{yaml_file}: parameterization {value!r} is not supported",
                            f"use one of {sorted(SUPPORTED_PREDICTIONS)} (--prediction-type)")
    return _prediction_name(value)


def _infer_architecture(path: Path) -> tuple[str, str | None]:
    """('sd15' | 'sd21', the prediction type the file states or None) from a single-file checkpoint."""
    facts = read_single_file_facts(path)
    return facts.arch, facts.prediction_type


def resolve_single_file(path: str | Path, prediction_type: str | None = None,
                        image_size: int | tuple[int, int] | None = None) -> tuple[str, str, int | tuple[int, int]]:
    """(arch, prediction type, native image size) of a .safetensors checkpoint: the user's values where
    given, else what the file states; SD 1.x files that state nothing are 512 px epsilon (every released
    SD 1.x), SD 2.x files that state nothing are refused (their two variants share every key)."""
    facts = read_single_file_facts(path)
    name = Path(path).name
    for given, stated, what in ((prediction_type, facts.prediction_type, "prediction_type"),
                                (image_size, facts.image_size, "image_size")):
        if given is not None and stated is not None and given != stated:
            log.warning("%s: using %s %s (given) instead of %s (%s)", name, what, given, stated, facts.sources[what])
    pred = prediction_type or facts.prediction_type
    size = image_size or facts.image_size
    if facts.arch == "sd15":
        return "sd15", pred or "epsilon", size or 512
    if pred is None or size is None:
        known = [f"its {k.replace('_', ' ')} is {getattr(facts, k)} ({facts.sources[k]})" for k in facts.sources]
        missing = [flag for flag, v in (("--prediction-type", pred), ("--image-size", size)) if v is None]
        raise MobileSDError(
            f"{name} is an SD 2.x checkpoint, and nothing says which: SD 2.x-base (512 px, epsilon) and SD 2.x "
            f"(768 px, v-prediction) have the same keys" + (f"; {'; '.join(known)}" if known else
                                                              ", and the file has no metadata saying which")
            + f" (missing: {' and '.join(missing)})", SD2_FIX)
    return "sd21", pred, size


def single_file_config(path: str | Path, prediction_type: str | None = None,
                       image_size: int | tuple[int, int] | None = None) -> Path:
    """A diffusers config folder (cached) for a .safetensors checkpoint: its architecture, prediction type and
    native image size as ``resolve_single_file`` settles them."""
    from mobilesd.architectures import ARCHITECTURES, write_config_folder

    arch, pred, size = resolve_single_file(path, prediction_type, image_size)
    spec = ARCHITECTURES[arch]
    native = spec["unet"]["sample_size"] * 2 ** (len(spec["vae"]["block_out_channels"]) - 1)
    size_s = f"{size[0]}x{size[1]}" if isinstance(size, tuple) else str(size)
    # the architecture's own variant keeps the plain name (configs/sd15, configs/sd21), others get theirs
    name = arch if (pred, size) == (spec["prediction_type"], native) else f"{arch}-{size_s}-{pred}"
    config = cache_dir() / "configs" / name
    if not (config / "model_index.json").exists():
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:  # written whole or not at all
            write_config_folder(Path(tmp) / "c", arch, prediction_type=pred, image_size=size)
            config.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(Path(tmp) / "c", config)
            except OSError:  # another process wrote it meanwhile
                if not (config / "model_index.json").exists():
                    raise
    return config


def _check_image_size(pipe, image_size, source: str) -> None:
    """--image-size names the native size a single file does not state; a model whose config states another
    one is a contradiction, not an override."""
    if image_size is None:
        return
    factor = pipe.vae_scale_factor
    sample = pipe.unet.config.sample_size
    native = tuple(s * factor for s in sample) if isinstance(sample, (list, tuple)) else sample * factor
    want = tuple(image_size) if isinstance(image_size, (list, tuple)) else image_size
    if isinstance(native, tuple) and len(set(native)) == 1:
        native = native[0]
    if want != native:
        raise MobileSDError(f"--image-size {want} contradicts {source}, whose unet/config.json says "
                            f"{native} px (sample_size {sample} x {factor})",
                            "drop --image-size (it is for single-file checkpoints that do not state their "
                            "size); use --height/--width to export at another size")


def _load_single_file(path: Path, allow_pickle: bool, config, kwargs: dict,
                      prediction_type: str | None = None, image_size=None):
    from diffusers import StableDiffusionPipeline

    if path.suffix in PICKLE_SUFFIXES:
        _check_pickle([path], allow_pickle)
    elif path.suffix != ".safetensors":
        raise MobileSDError(f"{path}: unknown checkpoint format {path.suffix!r}",
                            "pass a .safetensors file or a diffusers folder")
    if config is None:
        if path.suffix != ".safetensors":
            raise MobileSDError(f"cannot infer the architecture of the pickle checkpoint {path}",
                                "pass --config DIR (a diffusers folder of the same architecture)")
        config = single_file_config(path, prediction_type, image_size)
    try:
        pipe = StableDiffusionPipeline.from_single_file(str(path), config=str(config), local_files_only=True,
                                                        **kwargs)
    except Exception as exc:
        raise MobileSDError(f"could not load the single-file checkpoint {path}: {type(exc).__name__}: {exc}",
                            "check the file is a complete SD 1.x/2.x checkpoint; pass --config DIR "
                            "for a non-standard architecture") from exc
    # diffusers leaves a weight the checkpoint lacks on the meta device (for the text encoder without an
    # error): it would fail only at generation time, with "Tensor on device meta".
    missing = [f"{name}.{key}" for name in ("unet", "vae", "text_encoder") if getattr(pipe, name, None) is not None
               for key, t in getattr(pipe, name).state_dict().items() if t.is_meta]
    if missing:
        raise MobileSDError(f"the single-file checkpoint {path} is incomplete: {len(missing)} weights are missing "
                            f"(e.g. {missing[0]})", "re-download the checkpoint; pass --config DIR if it is "
                            "a different architecture")
    return pipe


def _load_hub(model_id: str, kwargs: dict):
    from diffusers import StableDiffusionPipeline

    try:
        return StableDiffusionPipeline.from_pretrained(model_id, use_safetensors=True, **kwargs)
    except Exception as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise MobileSDError(
            f"could not load {model_id!r} from the Hugging Face hub"
            + (" (HF_HUB_OFFLINE=1)" if offline else f" ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"),
            "this machine may be offline: download the model where the hub is reachable "
            "(huggingface-cli download ID --local-dir DIR) and pass --model DIR") from exc
