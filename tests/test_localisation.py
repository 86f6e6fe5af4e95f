"""A model trained on jittered crops finds the face in its crop: move or zoom the crop and the points follow.

Without this property the crop a detector places, never where the labels would put it, passes its
error straight into the keypoints (the end-to-end issue measured a slope of 0.01-0.17).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kpjax.checkpoint import load_model
from kpjax.config import TrainConfig
from kpjax.inference import predict_model
from kpjax.keypoints import denormalise
from kpjax.sources.synthetic import make_faces
from kpjax.train import train

MARGIN = 16


@pytest.fixture(scope="module")
def jittered_model(tmp_path_factory):
    config = TrainConfig(data=["synthetic:768"], model="heatmap", epochs=8, batch_size=32, learning_rate=2e-3,
                         schedule="cosine", margin=MARGIN, shift=6.0, scale=0.15, seed=0)
    run_dir = tmp_path_factory.mktemp("jitter") / "run"
    train(config, run_dir, log=lambda _: None)
    return load_model(run_dir)[0]


def _predict(model, crops: np.ndarray) -> np.ndarray:
    return denormalise(predict_model(model, crops), 96).reshape(len(crops), -1, 2)


def _slope(true: np.ndarray, predicted: np.ndarray) -> float:
    true, predicted = true - true.mean(), predicted - predicted.mean()
    return float((true * predicted).sum() / (true * true).sum())


def test_predictions_follow_a_shifted_crop(jittered_model):
    faces = make_faces(8, seed=123).pad(MARGIN)  # faces the model never saw, with context around them
    shifts = np.array([-6, -3, 0, 3, 6])
    moved_x, moved_y = [], []
    for d in shifts:
        # The window moves by d: the face moves by -d in the crop.
        crops_x = faces.images[:, MARGIN:MARGIN + 96, MARGIN + d:MARGIN + d + 96]
        crops_y = faces.images[:, MARGIN + d:MARGIN + d + 96, MARGIN:MARGIN + 96]
        moved_x.append(_predict(jittered_model, np.ascontiguousarray(crops_x))[..., 0].mean(axis=1))
        moved_y.append(_predict(jittered_model, np.ascontiguousarray(crops_y))[..., 1].mean(axis=1))
    true = -np.repeat(shifts[:, None], len(faces), axis=1).astype(np.float64)
    assert _slope(true, np.array(moved_x)) >= 0.9
    assert _slope(true, np.array(moved_y)) >= 0.9


def test_predictions_follow_a_zoomed_crop(jittered_model):
    faces = make_faces(8, seed=321).pad(MARGIN)
    centre = (96 + 2 * MARGIN - 1) / 2
    zooms = np.array([0.85, 0.92, 1.0, 1.08, 1.15])
    true_spread, predicted_spread = [], []
    for zoom in zooms:
        # Scale about the face's context centre, then cut the frame out of it.
        matrix = np.array([[zoom, 0, (1 - zoom) * centre - MARGIN], [0, zoom, (1 - zoom) * centre - MARGIN]])
        crops = np.stack([cv2.warpAffine(image, matrix, (96, 96), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REPLICATE)[..., None] for image in faces.images])
        points = _predict(jittered_model, crops)
        truth = faces.keypoints @ matrix[:, :2].T + matrix[:, 2]
        spread = lambda p: np.linalg.norm(p - p.mean(axis=1, keepdims=True), axis=-1).mean(axis=1)  # noqa: E731
        true_spread.append(spread(truth))
        predicted_spread.append(spread(points))
    assert _slope(np.log(true_spread), np.log(predicted_spread)) >= 0.9
