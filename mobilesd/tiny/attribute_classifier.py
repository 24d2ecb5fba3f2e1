"""Per-attribute classifiers of the compositional digits task: one CNN body, one head per attribute (left digit,
right digit, left stroke, right stroke, size, colours). Scores generated pictures (binding accuracy per
attribute) and gives the features of the Frechet distance. Stored as safetensors + config.json (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilesd.errors import MobileSDError
from mobilesd.tiny.classifier import DigitClassifier
from mobilesd.tiny.compositional import ATTRIBUTE_NAMES, N_CLASSES

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
SUBDIR = "attribute_classifier"


class AttributeClassifier(nn.Module):
    def __init__(self, channels: tuple[int, int, int] = (32, 64, 64), features: int = 64):
        super().__init__()
        c1, c2, c3 = channels
        self.config = dict(channels=list(channels), features=features, attributes=list(ATTRIBUTE_NAMES),
                           classes=list(N_CLASSES))
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 16x16
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4x4 (position matters: no global pool)
            nn.Flatten(), nn.Dropout(0.2), nn.Linear(c3 * 16, features), nn.ReLU(),
        )
        self.head = nn.Linear(features, sum(N_CLASSES))

    prepare = staticmethod(DigitClassifier.prepare)   # uint8 (N, H, W, 3) or float [-1, 1] -> grey (N, 1, 32, 32)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits per attribute."""
        return list(torch.split(self.head(self.body(x)), list(N_CLASSES), dim=1))

    @torch.no_grad()
    def predict(self, images, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """(labels (N, 6) in ATTRIBUTE_NAMES order, penultimate features (N, F)) of uint8 images."""
        self.eval()
        x = self.prepare(images)
        labels, feats = [], []
        for i in range(0, len(x), batch_size):
            f = self.body(x[i : i + batch_size])
            feats.append(f)
            logits = torch.split(self.head(f), list(N_CLASSES), dim=1)
            labels.append(torch.stack([lg.argmax(1) for lg in logits], 1))
        return torch.cat(labels).numpy(), torch.cat(feats).double().numpy()

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(out / WEIGHTS_NAME))
        config = dict(self.config, input="grayscale 32x32 in [-1, 1] (mean of RGB)",
                      features_layer="body (penultimate, after ReLU)")
        (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        return out


def load_attribute_classifier(path: str | Path) -> AttributeClassifier:
    from safetensors.torch import load_file

    p = Path(path)
    if not (p / CONFIG_NAME).exists() or not (p / WEIGHTS_NAME).exists():
        raise MobileSDError(f"no attribute classifier at {p} (needs {CONFIG_NAME} and {WEIGHTS_NAME})",
                            "point at the attribute_classifier/ folder of the compositional model, or retrain it "
                            "with `python -m mobilesd.tiny.compositional_train`")
    cfg = json.loads((p / CONFIG_NAME).read_text())
    if tuple(cfg.get("attributes", ())) != ATTRIBUTE_NAMES or tuple(cfg.get("classes", ())) != N_CLASSES:
        raise MobileSDError(f"{p} classifies {cfg.get('attributes')}, not this task's {list(ATTRIBUTE_NAMES)}",
                            "retrain the classifier with this mobilesd version")
    model = AttributeClassifier(tuple(cfg["channels"]), cfg["features"])
    model.load_state_dict(load_file(str(p / WEIGHTS_NAME)))
    return model.eval()
