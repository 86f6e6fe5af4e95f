"""Accuracy of a model on a dataset, in the seed's units and in pixels."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from kpjax.augment import flip_targets
from kpjax.dataset import Dataset
from kpjax.keypoints import denormalise, interocular_distance
from kpjax.train_step import predict_step

PREDICT_BATCH = 256


def predict_normalised(graphdef, params, rest, images: np.ndarray, batch_size: int = PREDICT_BATCH,
                       flip_permutation: tuple[int, ...] | None = None) -> np.ndarray:
    """(N, 2K) predictions in the seed's units, in fixed-size batches so one compilation serves all.

    With ``flip_permutation``, each is averaged with the mirrored face's prediction mapped back (flip
    test-time augmentation).
    """
    outputs = []
    batch_size = min(batch_size, len(images)) or 1
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        padded = np.concatenate([chunk, np.zeros((batch_size - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        outputs.append(np.asarray(predict_step(graphdef, params, rest, padded))[: len(chunk)])
    predictions = np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
    if flip_permutation is None or not len(images):
        return predictions
    mirrored = predict_normalised(graphdef, params, rest, np.ascontiguousarray(images[:, :, ::-1]), batch_size)
    unflipped, _ = flip_targets(jnp.asarray(mirrored), jnp.ones(mirrored.shape, bool), flip_permutation, images.shape[2])
    return (predictions + np.asarray(unflipped)) / 2


def predict_model(model: nnx.Module, images: np.ndarray, batch_size: int = PREDICT_BATCH,
                  flip_permutation: tuple[int, ...] | None = None) -> np.ndarray:
    """Predictions in the seed's units (see ``predict_normalised``)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return predict_normalised(graphdef, params, rest, images, batch_size, flip_permutation)


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
