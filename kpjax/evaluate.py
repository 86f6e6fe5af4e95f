"""Accuracy of a model on a dataset, in the seed's units and in pixels: the metrics only, of the predictions
``kpjax.inference`` makes; and the calibration offset (``kpjax.calibration``) fitted on one."""

from __future__ import annotations

import numpy as np
from flax import nnx

from kpjax.calibration import apply_offset, fit_offset, offset_of
from kpjax.dataset import Dataset, group_split
from kpjax.errors import KpjaxError
from kpjax.inference import predict_model
from kpjax.keypoints import denormalise, interocular_distance


def keypoint_metrics(predictions: np.ndarray, dataset: Dataset) -> dict:
    """The seed's MSE/MAE (normalised, present values only), Kaggle's RMSE in pixels, NME and per-keypoint RMSE."""
    mask = dataset.mask
    targets = dataset.targets()
    errors = np.where(mask, predictions - targets, 0.0)
    count = max(int(mask.sum()), 1)
    mse = float((errors**2).sum() / count)
    predicted_px = denormalise(predictions, dataset.size).reshape(dataset.keypoints.shape)
    distance = np.linalg.norm(predicted_px - dataset.keypoints, axis=-1)  # (N, K), NaN where missing
    interocular = interocular_distance(dataset.keypoints, dataset.layout)
    nme = distance / interocular[:, None]
    squared = (predicted_px - dataset.keypoints) ** 2
    present = np.isfinite(squared).sum(axis=(0, 2))
    per_keypoint = np.where(present > 0, np.sqrt(np.nansum(squared, axis=(0, 2)) / np.maximum(present, 1)), np.nan)
    result = {
        "n": len(dataset),
        "mse": mse,
        "mae": float(np.abs(errors).sum() / count),
        "rmse_px": float(np.sqrt(mse) * dataset.size / 2),
        "nme": float(np.nanmean(nme)) if np.isfinite(nme).any() else None,
        "per_keypoint_rmse_px": {
            name: (None if np.isnan(v) else float(v)) for name, v in zip(dataset.layout.names, per_keypoint)
        },
    }
    sources = np.unique(dataset.sources)
    if len(sources) > 1:
        result["by_source"] = {
            str(source): {k: v for k, v in keypoint_metrics(predictions[i], dataset.subset(i)).items() if k != "per_keypoint_rmse_px"}
            for source in sources
            for i in [np.flatnonzero(dataset.sources == source)]
        }
    return result


def evaluate_model(model: nnx.Module, dataset: Dataset, flip_tta: bool = False) -> dict:
    flip_permutation = dataset.layout.flip_permutation if flip_tta else None
    return keypoint_metrics(predict_model(model, dataset.images, flip_permutation=flip_permutation), dataset)


def fit_calibration(model: nnx.Module, dataset: Dataset, persons: str = "train", val_fraction: float = 0.2,
                    seed: int = 0) -> tuple[np.ndarray, dict]:
    """The (K, 2) frame-pixel offset that moves ``model``'s keypoints (uncalibrated) onto ``dataset``'s convention,
    fitted on its ``train`` persons (kpjax's group split) or ``all``, and the accuracy before and after it, on
    those faces and, for ``train``, on the validation persons it never saw."""
    if persons not in ("train", "all"):
        raise KpjaxError(f"--persons {persons}: expected train or all")
    if offset_of(model) is not None:
        raise ValueError("fit_calibration needs the uncalibrated model (load_model(..., calibrated=False))")
    fit_index, held_out = (group_split(dataset.groups, val_fraction, seed) if persons == "train" else
                           (np.arange(len(dataset)), np.zeros(0, int)))
    raw = predict_model(model, dataset.images)
    offset = fit_offset(raw[fit_index], dataset.subset(fit_index))
    moved = apply_offset(raw, offset, dataset.size)
    report = {"persons": persons}
    for name, index in (("fitted on", fit_index), ("held out", held_out)):
        if len(index):
            before, after = (keypoint_metrics(p[index], dataset.subset(index)) for p in (raw, moved))
            report[name] = {"faces": len(index), **{f"{key}_{when}": metrics[key] for key in ("rmse_px", "nme")
                                                    for when, metrics in (("before", before), ("after", after))}}
    return offset, report
