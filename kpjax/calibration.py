"""A trained model's keypoints moved onto one annotation convention: a fixed offset per keypoint, in the frame.

Sources mark the same keypoint differently (where an eyebrow ends, a mouth corner, the pixel origin: 300-W's
.pts files count from 1). A model trained on several settles between them, and flip augmentation keeps it from
learning any offset along x that is the same for a point and its mirror image. ``kpjax calibrate`` measures the
mean residual of each keypoint on the label-fitted crops of annotated faces in the convention wanted (the
training persons of kpjax's split, so the validation persons stay unseen) and stores it beside the checkpoints
with the step of the checkpoint it was fitted to; every prediction of that checkpoint then carries it (weights
trained on are another checkpoint, which it leaves alone). The crops are fitted to the mean face by a similarity, so a frame
offset means the same on every face; it is added after flip TTA, which would otherwise cancel its x part.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from flax import nnx

from kpjax.dataset import Dataset
from kpjax.errors import KpjaxError
from kpjax.keypoints import denormalise
from kpjax.rundir import atomic_write

CALIBRATION_FILE = "calibration.json"


class KeypointOffset(nnx.Variable):
    """(K, 2) frame pixels added to each predicted keypoint: the run's calibration, never trained."""


def offset_of(model: nnx.Module) -> np.ndarray | None:
    """The model's calibration offset, (K, 2) frame pixels, or None for an uncalibrated model."""
    offset = getattr(model, "keypoint_offset", None)
    return None if offset is None else np.asarray(offset[...])


def calibrate(model: nnx.Module, offset: np.ndarray) -> nnx.Module:
    """The model carrying ``offset``, (K, 2) frame pixels: the same object, which every prediction of it then
    moves."""
    model.keypoint_offset = KeypointOffset(np.asarray(offset, np.float32))
    return model


def mirrored(offset: np.ndarray, flip_permutation: tuple[int, ...]) -> np.ndarray:
    """The offset in a mirrored frame: each keypoint there is its mirror partner's, its x reversed."""
    return offset[list(flip_permutation)] * np.array([-1.0, 1.0], np.float32)


def in_seed_units(offset: np.ndarray, size: int) -> np.ndarray:
    """(K, 2) frame pixels as the (2K,) shift of predictions in the seed's units."""
    return offset.reshape(-1) / (size / 2)


def apply_offset(predictions: np.ndarray, offset: np.ndarray | None, size: int,
                 flip_permutation: tuple[int, ...] | None = None) -> np.ndarray:
    """(N, 2K) predictions in the seed's units moved by ``offset`` ((K, 2) frame pixels; None, an uncalibrated
    model's, moves nothing): every numpy prediction path calibrates here, the exported graph by the same
    ``in_seed_units``. ``flip_permutation``: the predictions are of mirrored crops, so the offset is mirrored too."""
    if offset is None:
        return predictions
    if flip_permutation is not None:
        offset = mirrored(offset, flip_permutation)
    return predictions + in_seed_units(offset, size)


def fit_offset(predicted: np.ndarray, dataset: Dataset) -> np.ndarray:
    """(K, 2) frame pixels: each keypoint's mean residual (label minus prediction) over the faces that mark it;
    0 for a keypoint none of them marks. ``predicted``: (N, 2K) in the seed's units, uncalibrated."""
    if not len(dataset):
        raise KpjaxError("calibrate: no faces to measure the offsets on")
    predicted_px = denormalise(predicted, dataset.size).reshape(dataset.keypoints.shape)
    residual = dataset.keypoints - predicted_px
    marked = np.isfinite(residual[..., 0]).sum(axis=0)
    return np.where(marked[:, None] > 0, np.nansum(residual, axis=0) / np.maximum(marked, 1)[:, None], 0.0)


def save(run_dir: Path, offset: np.ndarray, names: tuple[str, ...], step: int, info: dict) -> Path:
    """The offset of the checkpoint at ``step``, and ``info`` on how it was fitted."""
    path = Path(run_dir) / CALIBRATION_FILE
    record = {"offset_px": {name: [round(float(x), 4), round(float(y), 4)] for name, (x, y) in zip(names, offset)},
              "checkpoint_step": int(step), **info}
    atomic_write(path, json.dumps(record, indent=2) + "\n")
    return path


def load(run_dir: Path, names: tuple[str, ...]) -> tuple[np.ndarray, int] | None:
    """The run's stored offset, (K, 2) frame pixels, and the step of the checkpoint it was fitted to; None where
    the run has none."""
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        offset = np.array([record["offset_px"][name] for name in names], np.float32)
        step = int(record["checkpoint_step"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise KpjaxError(f"{path}: not a calibration of this model's keypoints ({type(error).__name__}: {error}); "
                         f"run kpjax calibrate again or delete it") from None
    if offset.shape != (len(names), 2) or not np.isfinite(offset).all():
        raise KpjaxError(f"{path}: expected a finite [x, y] per keypoint; run kpjax calibrate again or delete it")
    return offset, step
