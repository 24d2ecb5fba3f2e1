"""Model loading: diffusers folders, SD 2.x v-prediction, pickle refusal, clear errors for bad input."""

import json
import shutil

import pytest
import torch

from mobilesd.errors import MobileSDError
from mobilesd.loading import load_pipeline
from mobilesd.tokenizer import BOS_ID, EOS_ID, VOCAB_SIZE, load_clip_tokenizer


def test_real_clip_tokenizer_built_offline():
    tok = load_clip_tokenizer()
    assert len(tok) == VOCAB_SIZE
    # ids of openai/clip-vit-large-patch14 for this text
    assert tok("a photo of a cat").input_ids == [BOS_ID, 320, 1125, 539, 320, 2368, EOS_ID]


def test_loads_a_diffusers_folder(tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.unet.dtype == torch.float32
    assert pipe.scheduler.config.prediction_type == "epsilon"


def test_sd2_v_prediction_folder(tmp_path):
    from mobilesd.architectures import save_random_pipeline

    path = save_random_pipeline(tmp_path / "v", "tiny", prediction_type="v_prediction")
    assert load_pipeline(path).scheduler.config.prediction_type == "v_prediction"
    assert load_pipeline(path, prediction_type="epsilon").scheduler.config.prediction_type == "epsilon"


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(MobileSDError, match="does not exist"):
        load_pipeline(tmp_path / "nope")
    with pytest.raises(MobileSDError, match="no model_index.json"):
        load_pipeline(tmp_path)


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MobileSDError, match="hub") as err:
        load_pipeline("some-org/some-model")
    assert "--model DIR" in err.value.fix


def test_unsupported_architecture(tmp_path, tiny_model_dir):
    bad = tmp_path / "xl"
    shutil.copytree(tiny_model_dir, bad)
    index = json.loads((bad / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionXLPipeline"
    (bad / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(MobileSDError, match="does not support"):
        load_pipeline(bad)


def test_corrupt_weights(tmp_path, tiny_model_dir):
    bad = tmp_path / "corrupt"
    shutil.copytree(tiny_model_dir, bad)
    weights = next((bad / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(MobileSDError, match="could not load"):
        load_pipeline(bad)


def test_pickle_weights_refused_unless_allowed(tmp_path, tiny_pipe):
    path = tmp_path / "pickled"
    tiny_pipe.save_pretrained(str(path), safe_serialization=False)
    assert not list((path / "unet").glob("*.safetensors"))  # transformers 5 always writes safetensors
    with pytest.raises(MobileSDError, match="pickle") as err:
        load_pipeline(path)
    assert "--allow-pickle" in err.value.fix
    assert type(load_pipeline(path, allow_pickle=True)).__name__ == "StableDiffusionPipeline"


def test_single_pickle_checkpoint_refused(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not even read")
    with pytest.raises(MobileSDError, match="pickle"):
        load_pipeline(ckpt)


def test_loading_leaves_diffusers_logging_as_the_caller_set_it():
    """Loading quiets diffusers only while it loads: an application's own verbosity is restored after
    (it used to be set to errors-only for the whole process)."""
    from diffusers.utils import logging as dlogging

    from mobilesd.loading import default_model_path, load_pipeline

    before = dlogging.get_verbosity()
    dlogging.set_verbosity_info()
    try:
        load_pipeline(default_model_path())
        assert dlogging.get_verbosity() == dlogging.INFO
    finally:
        dlogging.set_verbosity(before)
