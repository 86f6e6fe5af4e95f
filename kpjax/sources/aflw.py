"""AFLW's 21-point markup as prepared for 3DDFA: ``labels.csv`` (``file,yaw,x1,y1,...,x21,y21``) beside the images.

A point hidden by the head's pose is an empty cell; it becomes NaN and every
Kaggle keypoint derived from it stays missing (masked out of the loss).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from kpjax.sources.convert import kaggle_points
from kpjax.sources.rows import MALFORMED, Row

NUM_POINTS = 21
LABELS = "labels.csv"
HEADER = ["file", "yaw", *(f"{axis}{i}" for i in range(1, NUM_POINTS + 1) for axis in "xy")]
# fit_crop needs a spread of points; fewer than this many Kaggle keypoints cannot place a face.
MIN_KAGGLE_POINTS = 4


def labels_file(path: Path) -> Path | None:
    """``labels.csv`` with AFLW's header, given directly or inside the folder."""
    candidate = path / LABELS if path.is_dir() else path
    if candidate.name != LABELS or not candidate.is_file():
        return None
    with open(candidate, newline="", encoding="utf-8", errors="replace") as f:
        return candidate if next(csv.reader(f), []) == HEADER else None


def read_labels(path: Path) -> list[Row]:
    """Each photo is its own group: AFLW holds one face per photo here and names no person."""
    rows = []
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        next(reader)
        for line, fields in enumerate(reader, start=2):
            if not fields:
                continue
            where = f"{path}, line {line} ({fields[0]})"
            image = path.parent / fields[0]
            group = Path(fields[0]).stem
            if len(fields) != len(HEADER):
                rows.append(Row(where, image, None, group, (MALFORMED, f"{len(fields)} fields, expected {len(HEADER)}")))
                continue
            try:
                values = np.array([float(v) if v.strip() else np.nan for v in fields[2:]])
            except ValueError:
                rows.append(Row(where, image, None, group, (MALFORMED, "a coordinate is not a number")))
                continue
            points = values.reshape(NUM_POINTS, 2)
            missing = np.isnan(points)
            if (missing.any(axis=1) != missing.all(axis=1)).any():
                rows.append(Row(where, image, None, group, (MALFORMED, "a point has one coordinate only")))
                continue
            present = int((~np.isnan(kaggle_points(points, "aflw")).any(axis=1)).sum())
            if present < MIN_KAGGLE_POINTS:
                rows.append(Row(where, image, None, group,
                                ("too few points", f"{present} of the Kaggle keypoints visible")))
                continue
            rows.append(Row(where, image, points, group))
    return rows
