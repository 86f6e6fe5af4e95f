"""Keypoints for face crops: any size or colour in, keypoints in the input image's pixels out."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from flax import nnx

from kpjax.config import TrainConfig
from kpjax.evaluate import predict_model
from kpjax.image import apply_affine, invert_affine, read_image, resize_matrix, warp
from kpjax.keypoints import LAYOUTS, denormalise


def crop_inputs(images: list[np.ndarray], config: TrainConfig) -> tuple[np.ndarray, list[np.ndarray]]:
    """Stretch each whole image onto the model's frame; return the frames and each image -> frame affine."""
    matrices = [resize_matrix(image.shape[:2], config.size) for image in images]
    frames = np.stack([warp(image, m, config.size, config.color) for image, m in zip(images, matrices)])
    return frames, matrices


def predict_images(model: nnx.Module, config: TrainConfig, images: list[np.ndarray]) -> list[np.ndarray]:
    """(K, 2) keypoints per image, in that image's pixels."""
    frames, matrices = crop_inputs(images, config)
    normalised = predict_model(model, frames)
    points = denormalise(normalised, config.size).reshape(len(images), -1, 2)
    return [apply_affine(invert_affine(m), p) for m, p in zip(matrices, points)]


def draw_keypoints(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """An RGB copy of ``image`` with the keypoints marked, sized to stay visible on large images."""
    canvas = np.ascontiguousarray(image.copy())
    radius = max(1, round(max(image.shape[:2]) / 120))
    for x, y in points:
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(canvas, (round(float(x)), round(float(y))), radius, (255, 40, 40), -1, cv2.LINE_AA)
    return canvas


def predict_files(model: nnx.Module, config: TrainConfig, paths: list[Path], out_dir: Path) -> list[dict]:
    """Predict each image file, writing ``NAME.json`` and an overlay ``NAME.png`` to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images = [read_image(path) for path in paths]
    layout = LAYOUTS[config.keypoints]
    results = []
    for path, image, points in zip(paths, images, predict_images(model, config, images)):
        result = {
            "image": str(path),
            "width": image.shape[1],
            "height": image.shape[0],
            "keypoints": {name: [round(float(x), 2), round(float(y), 2)] for name, (x, y) in zip(layout.names, points)},
        }
        (out_dir / f"{path.stem}.json").write_text(json.dumps(result, indent=2))
        cv2.imwrite(str(out_dir / f"{path.stem}.png"), cv2.cvtColor(draw_keypoints(image, points), cv2.COLOR_RGB2BGR))
        results.append(result)
    return results
