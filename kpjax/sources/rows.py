"""What the readers hand to the conversion, below both: a face as read, a face skipped, how to convert."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from kpjax.keypoints import KAGGLE, KAGGLE_SIZE, Layout

MALFORMED = "malformed points"  # the skip reason of a row or .pts file that does not parse


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """How every source is converted: the keypoint layout and the frame's size and colour."""

    layout: Layout = KAGGLE
    size: int = KAGGLE_SIZE
    color: bool = False
    strict: bool = False  # any skipped face is an error naming it
    seed: int = 0
    markup: str | None = None  # 68-point markup, "ibug" or "fgnet"; None detects it from the points
    margin: int = 0  # context pixels past the frame on every side, for crop jitter in training


@dataclasses.dataclass(frozen=True)
class Row:
    """One face as a reader found it: ``where`` names it in messages; ``problem`` is a reader-level skip."""

    where: str
    image: Path
    points: np.ndarray | None
    group: str
    problem: tuple[str, str] | None = None  # (reason, detail)


@dataclasses.dataclass(frozen=True)
class Skip:
    where: str
    reason: str
    detail: str = ""
