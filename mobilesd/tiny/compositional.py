"""The compositional digits task: two digits side by side, each with its own stroke weight, plus a size and a
colour scheme for the whole picture, named by a prompt that binds every attribute to its digit.

It is the tiny analogue of GenEval's attribute binding ("a thin 3 left of a bold 7, small, black background"):
the model must put the right digit on the right side *and* give each its own stroke weight, so a model that
only half-follows the prompt scores visibly below 100%, and quantization damage shows up as lost bindings.
The data source is the same as the digits model's (scikit-learn's ``load_digits``, the same stratified split):
each picture is rendered from two real 8x8 digits.

Rendering (32x32 RGB in [-1, 1], ink dark on white unless inverted):
* each digit is upsampled bicubically to 32x32; stroke weight by grey-scale morphology at that resolution
  (``thin``: 3x3 erosion, ``bold``: 3x3 dilation), then a fixed contrast curve so both read as solid ink;
* ``large`` digits are 16x16 cells, ``small`` 10x10 (area resampling), centred in the left / right half of
  the canvas with an optional jitter of +-1 pixel;
* ``black background`` inverts the whole picture (white ink on black).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mobilesd.tiny import data

IMAGE_SIZE = 32
CELL = {"large": 16, "small": 10}

# attribute name -> its values (class index = position); the order is the label vector's column order
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "left_digit": tuple(str(d) for d in range(10)),
    "right_digit": tuple(str(d) for d in range(10)),
    "left_stroke": ("thin", "bold"),
    "right_stroke": ("thin", "bold"),
    "size": ("small", "large"),
    # distinct words per value: "black on white" / "white on black" (a first version) hold the same words, and
    # the tiny text encoder could not tell them apart (FP colour accuracy 50%, chance)
    "colours": ("white background", "black background"),
}
ATTRIBUTE_NAMES = tuple(ATTRIBUTES)
N_CLASSES = tuple(len(v) for v in ATTRIBUTES.values())

# Every attribute is named in every template, so every generated picture is scored on all six. The held-out
# templates reorder the clauses (the right digit first, colours before size) with words that all occur in
# training: they test binding by word order, not by memorised phrasing.
TRAIN_TEMPLATES = (
    "a {w1} {d1} left of a {w2} {d2}, {size}, {colours}",
    "a {w2} {d2} right of a {w1} {d1}, {size}, {colours}",
    "{size} digits, {colours}: a {w1} {d1} and a {w2} {d2}",
    "{colours}, {size}: a {w1} {d1} to the left of a {w2} {d2}",
)
HELDOUT_TEMPLATES = (
    "{size}, {colours}: a {w2} {d2} to the right of a {w1} {d1}",
    "a {w1} {d1} left of a {w2} {d2}, {colours}, {size}",
)


def digit_word(d: int, numeral: bool) -> str:
    return str(d) if numeral else data.WORDS[d]


def prompt(template: str, labels, numerals: tuple[bool, bool] = (True, True)) -> str:
    """The prompt of one label vector (left digit, right digit, left stroke, right stroke, size, colours)."""
    d1, d2, w1, w2, size, colours = (int(v) for v in labels)
    return template.format(d1=digit_word(d1, numerals[0]), d2=digit_word(d2, numerals[1]),
                           w1=ATTRIBUTES["left_stroke"][w1], w2=ATTRIBUTES["right_stroke"][w2],
                           size=ATTRIBUTES["size"][size], colours=ATTRIBUTES["colours"][colours])


def random_labels(n: int, generator: torch.Generator) -> np.ndarray:
    """n label vectors, every attribute uniform and independent."""
    cols = [torch.randint(k, (n,), generator=generator) for k in N_CLASSES]
    return torch.stack(cols, 1).numpy().astype(np.int64)


def random_prompts(labels: np.ndarray, generator: torch.Generator, templates=TRAIN_TEMPLATES) -> list[str]:
    """One prompt per label vector: a random template, numerals or number words drawn per digit."""
    t = torch.randint(len(templates), (len(labels),), generator=generator)
    num = torch.rand(len(labels), 2, generator=generator) < 0.5
    return [prompt(templates[int(t[i])], labels[i], (bool(num[i, 0]), bool(num[i, 1]))) for i in range(len(labels))]


def calibration_prompts(n: int = 256, seed: int = 7) -> list[str]:
    """Training-template prompts for data-free calibration / distillation (never the held-out phrasings)."""
    g = torch.Generator().manual_seed(seed)
    return random_prompts(random_labels(n, g), g)


# ---------------------------------------------------------------- rendering

@dataclass
class DigitPool:
    """The 8x8 source digits of one split, by class (ink 0..16 as in load_digits)."""

    images: np.ndarray   # (N, 8, 8) float32
    labels: np.ndarray   # (N,)

    @classmethod
    def of(cls, split: str) -> "DigitPool":
        raw, y = data._digits()
        tr, te = data.split_indices()
        idx = {"train": tr, "heldout": te}[split]
        return cls(raw[idx], y[idx])

    def draw(self, digits: np.ndarray, generator: torch.Generator) -> np.ndarray:
        """For each requested class, a random source image of that class."""
        out = np.empty((len(digits), 8, 8), np.float32)
        for i, d in enumerate(digits):
            members = np.flatnonzero(self.labels == d)
            out[i] = self.images[members[int(torch.randint(len(members), (1,), generator=generator))]]
        return out


def _contrast(ink: torch.Tensor) -> torch.Tensor:
    return ((ink - 0.25) * 2.2).clamp(0, 1)


def stroke_cells(raw8: np.ndarray, strokes: np.ndarray, sizes: np.ndarray) -> list[torch.Tensor]:
    """Ink maps (cell x cell, in [0, 1]) of 8x8 digits with their stroke weight and size."""
    x = torch.from_numpy(np.asarray(raw8, np.float32) / 16.0).unsqueeze(1)
    hi = F.interpolate(x, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)
    thin = -F.max_pool2d(-hi, 3, 1, 1)     # grey-scale erosion
    bold = F.max_pool2d(hi, 3, 1, 1)       # grey-scale dilation
    ink = _contrast(torch.where(torch.from_numpy(np.asarray(strokes) == 1).reshape(-1, 1, 1, 1), bold, thin))
    cells = []
    for i in range(len(ink)):
        c = CELL[ATTRIBUTES["size"][int(sizes[i])]]
        cells.append(F.interpolate(ink[i : i + 1], size=(c, c), mode="area")[0, 0])
    return cells


def render(labels: np.ndarray, pool: DigitPool, generator: torch.Generator, jitter: int = 1) -> torch.Tensor:
    """Pictures (N, 3, 32, 32) in [-1, 1] for label vectors, from random source digits of ``pool``."""
    labels = np.asarray(labels)
    n = len(labels)
    left = stroke_cells(pool.draw(labels[:, 0], generator), labels[:, 2], labels[:, 4])
    right = stroke_cells(pool.draw(labels[:, 1], generator), labels[:, 3], labels[:, 4])
    shifts = (torch.randint(-jitter, jitter + 1, (n, 4), generator=generator) if jitter
              else torch.zeros(n, 4, dtype=torch.long))
    canvas = torch.zeros(n, IMAGE_SIZE, IMAGE_SIZE)
    half = IMAGE_SIZE // 2
    for i in range(n):
        for j, (cell, cx) in enumerate(((left[i], half // 2), (right[i], half + half // 2))):
            c = cell.shape[0]
            y0 = IMAGE_SIZE // 2 - c // 2 + int(shifts[i, 2 * j])
            x0 = cx - c // 2 + int(shifts[i, 2 * j + 1])
            y0, x0 = min(max(y0, 0), IMAGE_SIZE - c), min(max(x0, j * half), (j + 1) * half - c)
            region = canvas[i, y0 : y0 + c, x0 : x0 + c]
            canvas[i, y0 : y0 + c, x0 : x0 + c] = torch.maximum(region, cell)
    img = 1.0 - 2.0 * canvas                                   # ink dark on white paper
    inverted = torch.from_numpy(labels[:, 5] == 1).reshape(-1, 1, 1)
    img = torch.where(inverted, -img, img)
    return img.unsqueeze(1).repeat(1, 3, 1, 1)


# ---------------------------------------------------------------- evaluation cases

SEEDS_PER_PROMPT = 100   # case seed = 100 * prompt index + seed offset (offsets 0..99)


def eval_cases(n_prompts: int, seeds: list[int], phrasings: str = "heldout", case_seed: int = 1234):
    """The (prompt, seed) grid of an evaluation: ``n_prompts`` label vectors (balanced: every attribute value
    equally often, combinations shuffled), each phrased with a held-out (or training) template in turn, times
    every seed offset in ``seeds``. Every case gets its own noise, seed 100 * prompt index + offset: with the
    same few seeds for every prompt, whatever the noise decides (a v1 model's colours did) would be shared by
    a third of all images, and a distance between two seed sets would measure three noises, not the model.
    Returns prompts, labels (N, 6), seeds, prompt index of each case."""
    if any(not 0 <= s < SEEDS_PER_PROMPT for s in seeds):
        raise ValueError(f"seed offsets must lie in [0, {SEEDS_PER_PROMPT})")
    templates = {"heldout": HELDOUT_TEMPLATES, "train": TRAIN_TEMPLATES}[phrasings]
    rng = np.random.default_rng(case_seed)
    cols = []
    for k in N_CLASSES:  # each column: 0..k-1 repeated to length n, independently permuted
        cols.append(rng.permutation(np.arange(n_prompts) % k))
    labels = np.stack(cols, 1).astype(np.int64)
    numerals = rng.random((n_prompts, 2)) < 0.5
    texts = [prompt(templates[i % len(templates)], labels[i], tuple(bool(v) for v in numerals[i]))
             for i in range(n_prompts)]
    prompts = [p for p in texts for _ in seeds]
    case_labels = np.repeat(labels, len(seeds), axis=0)
    case_seeds = [SEEDS_PER_PROMPT * i + s for i in range(n_prompts) for s in seeds]
    prompt_index = np.repeat(np.arange(n_prompts), len(seeds))
    return prompts, case_labels, case_seeds, prompt_index
