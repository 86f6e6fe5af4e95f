"""Training configuration: one dataclass, saved beside every run so it can be repeated."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from kpjax.errors import KpjaxError
from kpjax.keypoints import LAYOUTS, Layout

# The train options whose names are not their field's: the rest are ``--`` + the field, dashed.
OPTION_NAMES = {"batch_size": "--batch", "learning_rate": "--lr", "flip": "--no-flip"}

# Settings added after runs were saved without them, at the value those runs had: their models lack the part.
LEGACY_DEFAULTS = {"error_head": False}


def option_name(field: str) -> str:
    return OPTION_NAMES.get(field, "--" + field.replace("_", "-"))


@dataclasses.dataclass
class TrainConfig:
    data: list[str] = dataclasses.field(default_factory=list)
    model: str = "seed"
    keypoints: str = "kaggle"  # layout name: "kaggle" (15 points) or "ibug68"
    size: int = 96
    color: bool = False
    epochs: int = 150
    batch_size: int = 64
    learning_rate: float = 1e-3
    schedule: str = "constant"  # or "cosine": decay to 0 over the run after a short warm-up
    weight_decay: float = 0.0
    flip: bool = True
    rotation: float = 0.0  # degrees, uniform in +-rotation
    scale: float = 0.0  # log-uniform zoom in [1/(1+scale), 1+scale]
    shift: float = 0.0  # pixels, uniform in +-shift per axis
    photometric: bool = False  # random contrast, brightness and blur
    margin: int = 0  # context pixels a side around each training crop, so rotation, scale and shift sample real image
    val_fraction: float = 0.2
    split: str = "group"  # "group": all faces of a person on one side; "row": faces split independently
    complete_only: bool = False
    strict: bool = False
    markup: str | None = None  # 68-point markup of .pts sources: "ibug" or "fgnet"; None detects it
    seed: int = 0
    split_seed: int | None = None  # seed of the validation split; None: seed. Fixed, runs of several seeds share it
    devices: int | str = 1  # devices per process for data parallelism, or "all"
    error_head: bool = True  # heatmap models: learn each keypoint's expected error beside it

    @property
    def layout(self) -> Layout:
        return LAYOUTS[self.keypoints]

    @property
    def channels(self) -> int:
        return 3 if self.color else 1

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**LEGACY_DEFAULTS, **{k: v for k, v in json.loads(text).items() if k in known}})

    @classmethod
    def load(cls, run_dir: Path) -> TrainConfig:
        path = Path(run_dir) / "config.json"
        try:
            return cls.from_json(path.read_text())
        except (ValueError, TypeError) as error:
            raise KpjaxError(f"{path}: unreadable run configuration ({error})") from None
