"""Load a Stable Diffusion model from a diffusers folder, a single-file checkpoint or a hub id.

Safetensors only by default: pickle checkpoints (.ckpt/.bin/.pt/.pth) can run code when loaded, so they
are refused unless the user passes ``allow_pickle=True`` (``--allow-pickle``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from mobilesd.errors import MobileSDError

REPO_ROOT = Path(__file__).resolve().parent.parent
# The small digits model trained in this repo (assets/); until it exists, a tiny random SD.
DEFAULT_MODEL = REPO_ROOT / "assets" / "tiny-digits-sd"
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
    cfg = unet.config
    if cfg.get("addition_embed_type") or cfg.get("class_embed_type") or cfg.in_channels != 4:
        raise MobileSDError(
            f"{source}: unsupported UNet (addition_embed_type={cfg.get('addition_embed_type')}, "
            f"class_embed_type={cfg.get('class_embed_type')}, in_channels={cfg.in_channels})",
            "mobilesd supports text-to-image SD 1.x / 2.x UNets (4 latent channels, no extra embeddings)")
    pred = pipe.scheduler.config.get("prediction_type", "epsilon")
    if pred not in SUPPORTED_PREDICTIONS:
        raise MobileSDError(f"{source}: prediction_type {pred!r} is not supported",
                            f"use one of {sorted(SUPPORTED_PREDICTIONS)} (--prediction-type)")
    return pipe


def load_pipeline(model: str | Path | None = None, *, allow_pickle: bool = False,
                  prediction_type: str | None = None, config: str | Path | None = None,
                  skip: tuple[str, ...] = ()):
    """A ``StableDiffusionPipeline`` in fp32 on the CPU.

    model: a diffusers folder, a single-file checkpoint (.safetensors; pickle only with
    ``allow_pickle``), a hub id (needs the network), or None for the default model.
    prediction_type: override the scheduler's (e.g. "v_prediction" for SD 2.x 768 single files).
    config: a diffusers folder (configs only are fine) describing a single-file checkpoint's
    architecture; by default it is inferred from the checkpoint's keys (SD 1.x or 2.x).
    skip: components not to load ("text_encoder", "vae"), to save memory in export workers.
    """
    from diffusers.utils import logging as dlogging

    dlogging.set_verbosity_error()
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
        pipe = _load_single_file(path, allow_pickle, config, kwargs)
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


def _infer_architecture(path: Path) -> tuple[str, str | None]:
    """('sd15' | 'sd21', prediction_type or None) from a single-file checkpoint's keys."""
    from safetensors import safe_open

    key_v2 = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            if "model.diffusion_model.input_blocks.0.0.weight" not in keys:
                raise MobileSDError(f"{path} is not a Stable Diffusion checkpoint (no UNet weights in LDM layout)",
                                    "pass an SD 1.x/2.x single-file checkpoint or a diffusers folder")
            if key_v2 in keys and f.get_slice(key_v2).get_shape()[-1] == 1024:
                return "sd21", None
    except MobileSDError:
        raise
    except Exception as exc:
        raise MobileSDError(f"{path} is not a readable safetensors file ({exc})",
                            "re-download the checkpoint; it may be truncated or corrupt") from exc
    return "sd15", None


def _load_single_file(path: Path, allow_pickle: bool, config, kwargs: dict):
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
        from mobilesd.architectures import write_config_folder

        arch, _ = _infer_architecture(path)
        config = cache_dir() / "configs" / arch
        if not (config / "model_index.json").exists():
            write_config_folder(config, arch)
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
