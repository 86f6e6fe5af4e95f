"""68-point sources: a folder of images with ``.pts`` files, and the YouTube-Faces/Udacity csv layout.

Readers only parse; the markup (iBUG or FG-NET) is decided from the points'
geometry by :mod:`kpjax.sources.convert`.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from kpjax.sources.rows import MALFORMED, Row

NUM_POINTS = 68
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm")
FRAMES_CSV_SUFFIX = "_frames_keypoints.csv"

_FGNET_NAME = re.compile(r"(\d+)[aA]\d+[a-z]?")  # 001A02, 001A43a: person 001
_FACE_SUFFIX = re.compile(r"_\d{1,2}$")  # Person_Name_VF (video, frame) or photo_N (face N)


def person_group(stem: str) -> str:
    """The person or photo of a file name: FG-NET's subject number, else the name less a ``_VF``/``_N`` suffix."""
    fgnet = _FGNET_NAME.fullmatch(stem)
    return fgnet.group(1) if fgnet else _FACE_SUFFIX.sub("", stem)


def parse_pts(text: str) -> np.ndarray:
    """iBUG ``.pts`` text (``version``, ``n_points: N``, ``{``, N lines ``x y``, ``}``) to (N, 2).

    A wrong count or syntax raises ValueError saying what is wrong.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "{" not in lines or "}" not in lines or lines.index("}") < lines.index("{"):
        raise ValueError("no { ... } block")
    header = dict(line.split(":", 1) for line in lines[: lines.index("{")] if ":" in line)
    body = lines[lines.index("{") + 1 : lines.index("}")]
    try:
        points = np.array([[float(v) for v in line.split()] for line in body if len(line.split()) == 2])
    except ValueError:
        raise ValueError("a point is not two numbers") from None
    if len(points) != len(body) or not np.isfinite(points).all():
        raise ValueError("a point is not two finite numbers")
    declared = header.get("n_points", str(len(points))).strip()
    if declared != str(len(points)) or len(points) != NUM_POINTS:
        raise ValueError(f"{len(points)} points (n_points: {declared}), expected {NUM_POINTS}")
    return points


def is_pts_folder(path: Path) -> bool:
    return path.is_dir() and next(path.rglob("*.pts"), None) is not None


def _image_for(pts: Path) -> Path:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (pts.with_suffix(suffix), pts.with_suffix(suffix.upper())):
            if candidate.is_file():
                return candidate
    return pts.with_suffix(".jpg")  # missing: the converter reports it


def read_pts_folder(folder: Path) -> list[Row]:
    """Every ``NAME.pts`` under ``folder`` with the image ``NAME.<jpg|png|...>`` beside it."""
    rows = []
    for pts in sorted(folder.rglob("*.pts")):
        name = pts.relative_to(folder).with_suffix("").as_posix()
        group = person_group(name)
        try:
            points = parse_pts(pts.read_text(encoding="utf-8", errors="replace"))
        except ValueError as error:
            rows.append(Row(str(pts), pts, None, group, (MALFORMED, str(error))))
            continue
        rows.append(Row(str(pts), _image_for(pts), points, group))
    return rows


def frames_csvs(path: Path) -> list[Path]:
    """``NAME_frames_keypoints.csv`` files (each with its image folder ``NAME/``) at ``path``."""
    candidates = sorted(path.glob(f"*{FRAMES_CSV_SUFFIX}")) if path.is_dir() else [path]
    return [c for c in candidates if c.name.endswith(FRAMES_CSV_SUFFIX) and c.is_file()]


def read_frames_csv(path: Path) -> list[Row]:
    """Rows ``file,x0,y0,...,x67,y67`` after a header line; images in the folder named like the csv."""
    folder = path.with_name(path.name[: -len(FRAMES_CSV_SUFFIX)])
    rows = []
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for line, fields in enumerate(csv.reader(f), start=1):
            if line == 1 or not fields:
                continue
            where = f"{path}, line {line} ({fields[0]})"
            group = person_group(Path(fields[0]).stem)
            try:
                points = np.array(fields[1:], dtype=np.float64).reshape(NUM_POINTS, 2)
                if not np.isfinite(points).all():
                    raise ValueError
            except ValueError:
                detail = f"{len(fields) - 1} values, expected {2 * NUM_POINTS} numbers"
                rows.append(Row(where, folder / fields[0], None, group, (MALFORMED, detail)))
                continue
            rows.append(Row(where, folder / fields[0], points, group))
    return rows
