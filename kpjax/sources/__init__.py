"""Data sources behind the one ``--data`` syntax: a path (format detected) or ``synthetic[:N]``."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from kpjax.dataset import Dataset
from kpjax.errors import KpjaxError
from kpjax.keypoints import KAGGLE, KAGGLE_SIZE
from kpjax.sources import aflw, cache, convert, landmarks68, mtfl, synthetic
from kpjax.sources.rows import LoadOptions, Row

DEFAULT_SYNTHETIC_FACES = 1024

NO_DATA_HELP = """no data given and no Kaggle CSVs found in $KPJAX_DATA or ./data.
Get them with the Kaggle CLI:  kaggle competitions download -c facial-keypoints-detection
then unzip training.zip and test.zip into ./data (or point KPJAX_DATA at them), or pass --data PATH.
To try kpjax without them, run a demo on drawn faces:  kpjax train --data synthetic"""


def default_data_specs() -> list[str]:
    """Kaggle's training.csv from $KPJAX_DATA or ./data, else a clear error on how to get it."""
    for folder in (os.environ.get("KPJAX_DATA"), "data"):
        if folder and (Path(folder) / "training.csv").is_file():
            return [str(Path(folder) / "training.csv")]
    raise KpjaxError(NO_DATA_HELP)


FORMAT_HELP = (
    "expected Kaggle training.csv, faces.npz from kpjax data convert, a folder of images with .pts files, "
    "NAME_frames_keypoints.csv beside NAME/, an MTFL list (PATH x1..x5 y1..y5), AFLW's labels.csv "
    "(file,yaw,x1,y1..x21,y21), or a folder holding one of these"
)


def detect_format(path: Path) -> str:
    from kpjax.sources import kaggle  # deferred, as in load_one

    if not path.exists():
        raise KpjaxError(f"{path}: no such file or folder")
    if kaggle.is_kaggle(path):
        return "kaggle"
    if path.is_file() and path.suffix == ".npz":
        return "faces_npz"
    if landmarks68.frames_csvs(path):
        return "frames_csv"
    if mtfl.lists(path):
        return "mtfl"
    if aflw.labels_file(path):
        return "aflw"
    if landmarks68.is_pts_folder(path):
        return "pts"
    raise KpjaxError(f"{path}: unknown data format ({FORMAT_HELP})")


def _landmark_source(path: Path, options: LoadOptions):
    """A face-landmark source's name, its markup (None: to detect) and a reader of its rows (called only when
    the rows are needed: a cached conversion does without them)."""
    fmt = detect_format(path)
    if fmt not in ("frames_csv", "mtfl", "pts", "aflw"):
        raise KpjaxError(f"{path}: holds face crops, not photos with their landmarks ({FORMAT_HELP})")
    if options.markup not in (None, *convert.MARKUPS_68):
        raise KpjaxError(f"unknown markup {options.markup!r}: expected one of {', '.join(convert.MARKUPS_68)}")
    source = (path if path.is_dir() else path.parent).name
    markup = fmt if fmt in ("mtfl", "aflw") else options.markup
    files, read = {
        "frames_csv": (landmarks68.frames_csvs, landmarks68.read_frames_csv),
        "mtfl": (mtfl.lists, mtfl.read_list),
        "pts": (lambda folder: [folder], landmarks68.read_pts_folder),
        "aflw": (lambda found: [aflw.labels_file(found)], aflw.read_labels),
    }[fmt]
    return source, markup, lambda: [row for file in files(path) for row in read(file)]


def read_rows(path: Path, options: LoadOptions = LoadOptions()) -> tuple[str, str | None, list[Row]]:
    """A face-landmark source's name, its markup (None: to detect) and its rows, each face's points as read."""
    source, markup, rows = _landmark_source(path, options)
    return source, markup, rows()


def _load_landmarks(path: Path, fmt: str, options: LoadOptions) -> Dataset:
    """A face-landmark source converted to the options' frame (cached), its skipped rows reported."""
    source, markup, rows = _landmark_source(path, options)

    def convert_source():
        return convert.convert_rows(rows(), source, markup, options.layout, options.size, options.color,
                                    options.margin)

    settings = dict(format=fmt, layout=options.layout.name, size=options.size, color=options.color, markup=markup,
                    margin=options.margin)
    dataset, skips = cache.cached(path, settings, convert_source)
    convert.report_skips(source, skips, len(dataset) + len(skips), options.strict)
    return dataset


def load_one(spec: str, options: LoadOptions) -> Dataset:
    # Deferred: Kaggle's reader imports pandas, slow to import and needless to kpjax predict, which loads no data.
    from kpjax.sources import kaggle

    if spec == "synthetic" or spec.startswith("synthetic:"):
        count = spec.partition(":")[2] or str(DEFAULT_SYNTHETIC_FACES)
        if not count.isdigit() or int(count) < 1:
            raise KpjaxError(f"--data {spec}: expected synthetic or synthetic:N with N a positive integer")
        return synthetic.make_faces(int(count), seed=options.seed, options=options).pad(options.margin)
    path = Path(spec)
    fmt = detect_format(path)
    if fmt == "kaggle":
        return kaggle.read_training(kaggle.training_csv(path), options).pad(options.margin)
    if fmt == "faces_npz":
        return _load_faces_npz(path, options).pad(options.margin)
    return _load_landmarks(path, fmt, options)


def _load_faces_npz(path: Path, options: LoadOptions) -> Dataset:
    """Faces converted once by ``kpjax data convert --out F.npz``: carried to another machine as they are."""
    try:
        dataset, _ = cache.load_faces(path)
    except cache.LOAD_ERRORS as error:
        raise KpjaxError(f"{path}: not a faces .npz written by kpjax data convert ({error})") from None
    frame = (options.layout.name, options.size, 3 if options.color else 1)
    found = (dataset.layout.name, dataset.size, dataset.channels)
    if found != frame:
        raise KpjaxError(f"{path}: holds {found[0]} keypoints on {found[1]}x{found[1]}x{found[2]} faces, "
                         f"but this run asks for {frame[0]} on {frame[1]}x{frame[1]}x{frame[2]}")
    return dataset


def load_data(specs: list[str] | None, options: LoadOptions = LoadOptions()) -> Dataset:
    """Load and concatenate every ``--data`` source, or Kaggle's CSVs from the default places."""
    specs = list(specs) if specs else default_data_specs()
    parts = [load_one(spec, options) for spec in specs]
    return Dataset.concatenate(parts) if len(parts) > 1 else parts[0]


def _pixel_strings(images: np.ndarray) -> list[str]:
    """(N, 96, 96, 1) uint8 to Kaggle's space-separated pixel strings, vectorised through a digit table."""
    table = np.zeros((256, 4), np.uint8)  # each value's digits then a space, zero-padded
    for value in range(256):
        text = f"{value} ".encode()
        table[value, : len(text)] = np.frombuffer(text, np.uint8)
    out = []
    for start in range(0, len(images), 512):
        chars = table[images[start : start + 512].reshape(-1, KAGGLE_SIZE * KAGGLE_SIZE)]
        out.extend(row[row != 0].tobytes()[:-1].decode() for row in chars.reshape(len(chars), -1))
    return out


def convert_sources(specs: list[str], out_path: Path, options: LoadOptions = LoadOptions()) -> int:
    """Write the sources as Kaggle's training.csv, or (``.npz``) as faces any kpjax run loads as they are.

    The CSV holds 30 keypoint columns (empty where missing), then Image; the
    ``.npz`` keeps any frame, the groups behind the split and the sources.
    Returns the number of faces written.
    """
    as_npz = out_path.suffix == ".npz"
    if not as_npz and (options.layout != KAGGLE or options.size != KAGGLE_SIZE or options.color):
        raise KpjaxError("a Kaggle training.csv holds 96x96 grey faces with the 15 Kaggle keypoints only; "
                         "write another frame to a .npz")
    dataset = load_data(specs, options)
    if as_npz:
        cache.save_faces(out_path, dataset, [], compress=True)
        return len(dataset)
    values = dataset.keypoints.reshape(len(dataset), -1)
    with open(out_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*KAGGLE.columns, "Image"])
        for row, pixels in zip(values, _pixel_strings(dataset.images)):
            writer.writerow([*("" if np.isnan(v) else f"{v:.4f}" for v in row), pixels])
    return len(dataset)
