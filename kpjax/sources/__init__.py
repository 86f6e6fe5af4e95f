"""Data sources behind the one ``--data`` syntax: a path (format detected) or ``synthetic[:N]``."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from kpjax.dataset import Dataset
from kpjax.errors import KpjaxError
from kpjax.keypoints import KAGGLE, KAGGLE_SIZE, Layout

DEFAULT_SYNTHETIC_FACES = 1024

NO_DATA_HELP = """no data given and no Kaggle CSVs found in $KPJAX_DATA or ./data.
Get them with the Kaggle CLI:  kaggle competitions download -c facial-keypoints-detection
then unzip training.zip and test.zip into ./data (or point KPJAX_DATA at them), or pass --data PATH.
To try kpjax without them, run a demo on drawn faces:  kpjax train --data synthetic"""


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """How every source is converted: the keypoint layout and the frame's size and colour."""

    layout: Layout = KAGGLE
    size: int = KAGGLE_SIZE
    color: bool = False
    strict: bool = False
    seed: int = 0


def default_data_specs() -> list[str]:
    """Kaggle's training.csv from $KPJAX_DATA or ./data, else a clear error on how to get it."""
    for folder in (os.environ.get("KPJAX_DATA"), "data"):
        if folder and (Path(folder) / "training.csv").is_file():
            return [str(Path(folder) / "training.csv")]
    raise KpjaxError(NO_DATA_HELP)


def detect_format(path: Path) -> str:
    from kpjax.sources import kaggle

    if not path.exists():
        raise KpjaxError(f"{path}: no such file or folder")
    if kaggle.is_kaggle(path):
        return "kaggle"
    raise KpjaxError(f"{path}: unknown data format (expected Kaggle training.csv or a folder holding it)")


def load_one(spec: str, options: LoadOptions) -> Dataset:
    from kpjax.sources import kaggle, synthetic

    if spec == "synthetic" or spec.startswith("synthetic:"):
        count = spec.partition(":")[2] or str(DEFAULT_SYNTHETIC_FACES)
        if not count.isdigit() or int(count) < 1:
            raise KpjaxError(f"--data {spec}: expected synthetic or synthetic:N with N a positive integer")
        return synthetic.make_faces(int(count), seed=options.seed, options=options)
    path = Path(spec)
    fmt = detect_format(path)
    if fmt == "kaggle":
        return kaggle.read_training(kaggle.training_csv(path), options)
    raise AssertionError(fmt)


def load_data(specs: list[str] | None, options: LoadOptions = LoadOptions()) -> Dataset:
    """Load and concatenate every ``--data`` source, or Kaggle's CSVs from the default places."""
    specs = list(specs) if specs else default_data_specs()
    parts = [load_one(spec, options) for spec in specs]
    return Dataset.concatenate(parts) if len(parts) > 1 else parts[0]
