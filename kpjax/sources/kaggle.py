"""Kaggle "Facial Keypoints Detection" CSVs: training.csv, test.csv and IdLookupTable.csv."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from kpjax.dataset import Dataset
from kpjax.errors import KpjaxError
from kpjax.image import to_frame
from kpjax.keypoints import KAGGLE, KAGGLE_SIZE
from kpjax.sources.rows import LoadOptions

NUM_PIXELS = KAGGLE_SIZE * KAGGLE_SIZE


def training_csv(path: Path) -> Path:
    return path / "training.csv" if path.is_dir() else path


def is_kaggle(path: Path) -> bool:
    path = training_csv(path)
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().strip().split(",")
    return header[-1] == "Image"  # a renamed keypoint column is then reported by name, not as an unknown format


def _read_csv(path: Path, required: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise KpjaxError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise KpjaxError(f"{path}: empty file") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise KpjaxError(f"{path}: not a readable CSV ({str(error).splitlines()[0]})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise KpjaxError(f"{path}: missing column(s) {', '.join(missing)}")
    if frame.empty:
        raise KpjaxError(f"{path}: no rows below the header")
    return frame


def _first_bad_image(path: Path, column: pd.Series) -> KpjaxError:
    for row, text in enumerate(column):
        tokens = text.split()
        if len(tokens) != NUM_PIXELS:
            return KpjaxError(f"{path}: line {row + 2}, column Image: {len(tokens)} pixel values, expected {NUM_PIXELS}")
        try:
            np.array(tokens, dtype=np.float32)
        except ValueError:
            return KpjaxError(f"{path}: line {row + 2}, column Image: non-numeric pixel value")
    return KpjaxError(f"{path}: column Image: unparseable pixel values")


def parse_images(path: Path, column: pd.Series) -> np.ndarray:
    """Space-separated pixel strings to (N, 96, 96, 1) uint8, naming the first bad row.

    pandas' C parser reads all rows at once, several times faster than splitting
    each row in Python; only a failure is diagnosed row by row.
    """
    try:
        pixels = pd.read_csv(io.StringIO("\n".join(column)), sep=" ", header=None, dtype=np.float32,
                             skipinitialspace=True, skip_blank_lines=False).to_numpy()
    except (ValueError, pd.errors.ParserError):
        raise _first_bad_image(path, column) from None
    if pixels.shape != (len(column), NUM_PIXELS) or np.isnan(pixels).any():
        raise _first_bad_image(path, column)
    bad = ~((pixels >= 0) & (pixels <= 255)).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise KpjaxError(f"{path}: line {row + 2}, column Image: pixel value outside 0..255")
    return pixels.astype(np.uint8).reshape(-1, KAGGLE_SIZE, KAGGLE_SIZE, 1)


def _parse_keypoints(path: Path, frame: pd.DataFrame) -> np.ndarray:
    values = np.full((len(frame), len(KAGGLE.columns)), np.nan, np.float32)
    for j, name in enumerate(KAGGLE.columns):
        text = frame[name].str.strip()
        numbers = pd.to_numeric(text.where(text != ""), errors="coerce")
        bad = numbers.isna() & (text != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise KpjaxError(f"{path}: line {row + 2}, column {name}: not a number ({text.iloc[row]!r})")
        outside = (numbers < 0) | (numbers > KAGGLE_SIZE)
        if outside.any():
            row = int(np.flatnonzero(outside.to_numpy())[0])
            raise KpjaxError(
                f"{path}: line {row + 2}, column {name}: keypoint {numbers.iloc[row]} outside the 0..96 frame"
            )
        values[:, j] = numbers.to_numpy(np.float32)
    return values.reshape(len(frame), KAGGLE.num_keypoints, 2)


def read_training(path: Path, options: LoadOptions) -> Dataset:
    """Kaggle's training.csv: 30 keypoint columns (NaN where missing), then the image."""
    if options.layout != KAGGLE:
        raise KpjaxError(f"{path}: Kaggle data has the 15 Kaggle keypoints only, not {options.layout.name}")
    frame = _read_csv(path, [*KAGGLE.columns, "Image"])
    images = parse_images(path, frame["Image"])
    keypoints = _parse_keypoints(path, frame)
    images, keypoints = to_frame(images, keypoints, options.size, options.color)
    rows = np.array([f"{path.name}:{i}" for i in range(len(frame))])
    return Dataset(images, keypoints, KAGGLE, groups=rows, sources=np.full(len(frame), "kaggle"))


def read_test(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Kaggle's test.csv: (image ids, (N, 96, 96, 1) uint8 images)."""
    frame = _read_csv(path, ["ImageId", "Image"])
    ids = pd.to_numeric(frame["ImageId"], errors="coerce")
    if ids.isna().any():
        row = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise KpjaxError(f"{path}: line {row + 2}, column ImageId: not an integer")
    return ids.to_numpy(np.int64), parse_images(path, frame["Image"])


def read_lookup(path: Path) -> pd.DataFrame:
    """Kaggle's IdLookupTable.csv: which (image, feature) each submission row asks for."""
    frame = _read_csv(path, ["RowId", "ImageId", "FeatureName"])
    unknown = ~frame["FeatureName"].isin(KAGGLE.columns)
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise KpjaxError(f"{path}: line {row + 2}, column FeatureName: unknown keypoint {frame['FeatureName'].iloc[row]!r}")
    for column in ("RowId", "ImageId"):
        numbers = pd.to_numeric(frame[column], errors="coerce")
        if numbers.isna().any():
            row = int(np.flatnonzero(numbers.isna().to_numpy())[0])
            raise KpjaxError(f"{path}: line {row + 2}, column {column}: not an integer")
        frame[column] = numbers.astype(np.int64)
    return frame
