"""The digits data (scikit-learn's ``load_digits``) as SD-style images, and the prompts.

Images are 32x32 RGB in [-1, 1]: dark ink on white paper, the 8x8 originals upsampled bicubically and
replicated to three channels. One stratified train / held-out split is used by every training phase,
so the held-out real digits are never seen by the VAE, the UNet or the classifier.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

IMAGE_SIZE = 32
HELDOUT_FRACTION = 0.2
SPLIT_SEED = 0

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Every token of a held-out template also occurs in some training template, in other combinations:
# the held-out set measures whether the text encoder learned the digit, not the exact wording.
TRAIN_TEMPLATES = (
    "a handwritten digit {word}",
    "the number {num} written by hand",
    "a picture of {a_word}",
    "digit: {num}",
    "{word}",
    "{num}",
    "a handwritten {num}",
    "the digit {word}, handwritten",
    "an image of the number {word}",
    "a drawing of {a_num}",
)
HELDOUT_TEMPLATES = (
    "a picture of the number {num}",
    "the digit {num} written by hand",
    "a handwritten number {word}",
    "a drawing of {a_word}",
    "{word}, written by hand",
    "number {num}",
)


def _article(text: str) -> str:
    return ("an " if text in ("eight", "8") else "a ") + text


def prompt(template: str, digit: int) -> str:
    word, num = WORDS[digit], str(digit)
    return template.format(word=word, num=num, a_word=_article(word), a_num=_article(num))


def train_prompts() -> list[tuple[str, int]]:
    return [(prompt(t, d), d) for t in TRAIN_TEMPLATES for d in range(10)]


def heldout_prompts(n: int | None = None) -> list[tuple[str, int]]:
    """(prompt, digit) pairs of the held-out phrasings, ordered so that any prefix is balanced over digits:
    round r gives every digit once, digit d with template (d + r) mod T, so T rounds cover every pair."""
    n_t = len(HELDOUT_TEMPLATES)
    pairs = [(prompt(HELDOUT_TEMPLATES[(d + r) % n_t], d), d) for r in range(n_t) for d in range(10)]
    if n is None:
        return pairs
    # beyond one pass, repeat the list (more prompts then means more seeds per prompt)
    return [pairs[i % len(pairs)] for i in range(n)]


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32), d.target.astype(np.int64)


def to_images(raw: np.ndarray) -> torch.Tensor:
    """8x8 digits (0 = paper, 16 = ink) -> float tensor (N, 3, 32, 32) in [-1, 1], ink dark."""
    x = torch.from_numpy(1.0 - raw / 8.0).unsqueeze(1)  # 0..16 -> 1..-1
    x = torch.nn.functional.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bicubic", align_corners=False)
    return x.clamp(-1, 1).repeat(1, 3, 1, 1)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8, rounded the way diffusers' image processor does."""
    x = ((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
    return (x * 255).round().astype(np.uint8)


def split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Stratified train / held-out indices (fixed: independent of the training seed)."""
    from sklearn.model_selection import train_test_split

    _, y = _digits()
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=HELDOUT_FRACTION, stratify=y, random_state=SPLIT_SEED)
    return np.sort(tr), np.sort(te)


def load_split(split: str) -> tuple[torch.Tensor, np.ndarray]:
    """``split`` in {"train", "heldout", "all"} -> (images (N,3,32,32) in [-1,1], labels (N,))."""
    raw, y = _digits()
    tr, te = split_indices()
    idx = {"train": tr, "heldout": te, "all": np.arange(len(y))}[split]
    return to_images(raw[idx]), y[idx]


def augment(x: torch.Tensor, generator: torch.Generator, shift: float = 2.0, rotate_deg: float = 8.0,
            scale: float = 0.08) -> torch.Tensor:
    """Small random affine jitter (shift in pixels, rotation, scale); the border is paper (white)."""
    n = x.shape[0]
    u = torch.rand(n, 4, generator=generator) * 2 - 1
    ang = u[:, 0] * rotate_deg * np.pi / 180
    s = 1 + u[:, 1] * scale
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    half = x.shape[-1] / 2
    theta = torch.stack([torch.stack([cos, -sin, u[:, 2] * shift / half], 1),
                         torch.stack([sin, cos, u[:, 3] * shift / half], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    # sample (x - 1) so that out-of-image zeros become paper (+1) after adding 1 back
    return torch.nn.functional.grid_sample(x - 1, grid, mode="bilinear", padding_mode="zeros",
                                           align_corners=False) + 1
