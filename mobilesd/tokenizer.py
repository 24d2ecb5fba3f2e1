"""The real SD (CLIP ViT-L/14) BPE tokenizer, built offline.

open_clip's wheel ships ``bpe_simple_vocab_16e6.txt.gz``, the same BPE table OpenAI's CLIP and
therefore every SD 1.x/2.x tokenizer uses. From it we write the ``vocab.json`` + ``merges.txt``
pair that ``transformers.CLIPTokenizer`` (and the phone apps) read. The result is byte-identical in
behaviour to ``openai/clip-vit-large-patch14``'s tokenizer: 49,408 tokens, BOS 49406, EOS/PAD 49407.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

from mobilesd.errors import MobileSDError

VOCAB_SIZE = 49408
BOS_ID = 49406
EOS_ID = 49407
MAX_LENGTH = 77
# CLIP uses 49152 - 256 - 2 merges from the table (the rest of the file is unused).
_N_MERGES = 49152 - 256 - 2


def open_clip_bpe_path() -> Path:
    import importlib.util

    # find_spec does not import open_clip (whose import pulls torchvision, which we do not install).
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise MobileSDError("open_clip_torch is not installed; it carries the CLIP BPE vocabulary",
                            "pip install --no-deps open_clip_torch  (scripts/setup.sh does this)")
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.exists():
        raise MobileSDError(f"open_clip's BPE vocabulary is missing at {path}",
                            "reinstall open_clip_torch from its wheel")
    return path


@lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    # GPT-2/CLIP's reversible byte -> printable unicode map, from transformers (its slow-tokenizer converter)
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    with gzip.open(open_clip_bpe_path(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = lines[1 : _N_MERGES + 1]
    byte_chars = list(bytes_to_unicode().values())  # in byte-table order: the first 512 ids
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == VOCAB_SIZE, len(tokens)
    return {t: i for i, t in enumerate(tokens)}, merges


def write_clip_tokenizer_files(out_dir: str | Path) -> Path:
    """Write vocab.json, merges.txt, special_tokens_map.json and tokenizer_config.json (diffusers layout)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = _vocab_and_merges()
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = dict(special, model_max_length=MAX_LENGTH, do_lower_case=True,
                  tokenizer_class="CLIPTokenizer", clean_up_tokenization_spaces=True)
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return out


def load_clip_tokenizer(path: str | Path | None = None):
    """A ``transformers.CLIPTokenizer`` from ``path`` (a folder with vocab.json + merges.txt), or built
    from open_clip's vocabulary when ``path`` is None."""
    from transformers import CLIPTokenizer

    if path is None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            write_clip_tokenizer_files(tmp)
            return CLIPTokenizer.from_pretrained(tmp)
    return CLIPTokenizer.from_pretrained(str(path))


def tokenize(tokenizer, prompts: list[str], max_length: int = MAX_LENGTH):
    """Token ids exactly as diffusers' StableDiffusionPipeline makes them (pad to max_length, truncate)."""
    return tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True,
                     return_tensors="np").input_ids
