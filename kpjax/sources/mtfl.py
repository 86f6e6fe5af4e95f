"""MTFL's 5-point lists: ``PATH x1..x5 y1..y5`` (optionally 4 attribute columns), paths relative to the list."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kpjax.sources.rows import MALFORMED, Row

NUM_POINTS = 5
FIELD_COUNTS = (1 + 2 * NUM_POINTS, 1 + 2 * NUM_POINTS + 4)  # original MTFL adds gender, smile, glasses, pose


def _looks_like_row(line: str) -> bool:
    fields = line.split()
    if len(fields) not in FIELD_COUNTS:
        return False
    try:
        np.array(fields[1 : 1 + 2 * NUM_POINTS], dtype=np.float64)
    except ValueError:
        return False
    return True


def is_list(path: Path) -> bool:
    if path.suffix.lower() != ".txt" or not path.is_file():
        return False
    with open(path, encoding="utf-8", errors="replace") as f:
        first = next((line for line in f if line.strip()), "")
    return _looks_like_row(first)


def lists(path: Path) -> list[Path]:
    """The list file itself, or the lists in a folder."""
    candidates = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    return [c for c in candidates if is_list(c)]


def read_list(path: Path) -> list[Row]:
    """Each image is its own group (MTFL names no person consistently)."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line, text in enumerate(f, start=1):
            fields = text.split()
            if not fields:
                continue
            relative = fields[0].replace("\\", "/")
            where = f"{path}, line {line} ({relative})"
            image = path.parent / relative
            group = Path(relative).with_suffix("").as_posix()
            if not _looks_like_row(text):
                detail = f"{len(fields)} fields, expected PATH and {2 * NUM_POINTS} numbers"
                rows.append(Row(where, image, None, group, (MALFORMED, detail)))
                continue
            values = np.array(fields[1 : 1 + 2 * NUM_POINTS], dtype=np.float64)
            if not np.isfinite(values).all():
                rows.append(Row(where, image, None, group, (MALFORMED, "a value is not finite")))
                continue
            rows.append(Row(where, image, values.reshape(2, NUM_POINTS).T, group))
    return rows
