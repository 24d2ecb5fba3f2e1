"""The digit classifier that scores generated images (prompt accuracy) and gives the features of the
Frechet distance. A small CNN on grayscale 32x32; stored as safetensors + config.json (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilesd.errors import MobileSDError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class DigitClassifier(nn.Module):
    def __init__(self, channels: tuple[int, int, int] = (16, 32, 64), features: int = 64, num_classes: int = 10):
        super().__init__()
        c1, c2, c3 = channels
        self.config = dict(channels=list(channels), features=features, num_classes=num_classes)
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 16x16
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4x4
            nn.Flatten(), nn.Dropout(0.2), nn.Linear(c3 * 16, features), nn.ReLU(),
        )
        self.head = nn.Linear(features, num_classes)

    @staticmethod
    def prepare(images) -> torch.Tensor:
        """uint8 (N, H, W, 3) images, or float (N, 3, H, W) in [-1, 1] -> (N, 1, 32, 32) in [-1, 1]."""
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise MobileSDError(f"classifier input must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}",
                                    "pass the images a generator returns")
            x = torch.from_numpy(images).float().permute(0, 3, 1, 2) / 127.5 - 1
        else:
            x = images.float()
        x = x.mean(1, keepdim=True)
        if x.shape[-2:] != (32, 32):
            x = nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def predict(self, images, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """(labels (N,), penultimate features (N, F)) of uint8 images."""
        self.eval()
        x = self.prepare(images)
        labels, feats = [], []
        for i in range(0, len(x), batch_size):
            f = self.body(x[i : i + batch_size])
            feats.append(f)
            labels.append(self.head(f).argmax(1))
        return torch.cat(labels).numpy(), torch.cat(feats).double().numpy()

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(out / WEIGHTS_NAME))
        config = dict(self.config, input="grayscale 32x32 in [-1, 1] (mean of RGB); ink dark on white",
                      features_layer="body (penultimate, after ReLU)")
        (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        return out


def load_classifier(path: str | Path) -> DigitClassifier:
    from safetensors.torch import load_file

    p = Path(path)
    if not (p / CONFIG_NAME).exists() or not (p / WEIGHTS_NAME).exists():
        raise MobileSDError(f"no digit classifier at {p} (needs {CONFIG_NAME} and {WEIGHTS_NAME})",
                            "point --classifier at the classifier/ folder of the tiny digits model, "
                            "or retrain it with `mobilesd train-tiny`")
    cfg = json.loads((p / CONFIG_NAME).read_text())
    model = DigitClassifier(tuple(cfg["channels"]), cfg["features"], cfg["num_classes"])
    model.load_state_dict(load_file(str(p / WEIGHTS_NAME)))
    return model.eval()
