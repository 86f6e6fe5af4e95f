"""Drawn faces with known keypoints in the Kaggle frame: tests and a demo need no downloads."""

from __future__ import annotations

import cv2
import numpy as np

from kpjax.dataset import Dataset
from kpjax.errors import KpjaxError
from kpjax.image import to_frame
from kpjax.keypoints import KAGGLE, KAGGLE_MEAN_FACE, KAGGLE_NAMES, KAGGLE_SIZE
from kpjax.sources.rows import LoadOptions

_SHIFT = 4  # cv2 fixed-point bits, for sub-pixel drawing
_K = {name: i for i, name in enumerate(KAGGLE_NAMES)}


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0] * (1 << _SHIFT))), int(round(p[1] * (1 << _SHIFT)))


def _draw_face(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = KAGGLE_SIZE
    background = rng.uniform(20, 120)
    image = np.full((size, size), background, np.float32)
    skin = rng.uniform(140, 230)
    dark = rng.uniform(10, 70)
    eyes_mid = (points[_K["left_eye_center"]] + points[_K["right_eye_center"]]) / 2
    mouth = points[_K["mouth_center_bottom_lip"]]
    centre = (eyes_mid + mouth) / 2
    eye_distance = np.linalg.norm(points[_K["left_eye_center"]] - points[_K["right_eye_center"]])
    axes = (eye_distance * 1.35, np.linalg.norm(mouth - eyes_mid) * 1.25)
    roll = np.degrees(np.arctan2(*(points[_K["left_eye_center"]] - points[_K["right_eye_center"]])[::-1]))
    cv2.ellipse(image, _pt(centre), _pt(np.array(axes)), roll, 0, 360, skin, -1, cv2.LINE_AA, _SHIFT)
    for side in ("left", "right"):
        inner, outer = points[_K[f"{side}_eye_inner_corner"]], points[_K[f"{side}_eye_outer_corner"]]
        half_width = np.linalg.norm(outer - inner) / 2
        cv2.ellipse(image, _pt(points[_K[f"{side}_eye_center"]]), _pt(np.array([half_width, half_width * 0.45])),
                    roll, 0, 360, dark, -1, cv2.LINE_AA, _SHIFT)
        cv2.line(image, _pt(points[_K[f"{side}_eyebrow_inner_end"]]), _pt(points[_K[f"{side}_eyebrow_outer_end"]]),
                 dark, 2, cv2.LINE_AA, _SHIFT)
    cv2.circle(image, _pt(points[_K["nose_tip"]]), 2 << _SHIFT, dark, -1, cv2.LINE_AA, _SHIFT)
    lips = [points[_K[n]] for n in ("mouth_left_corner", "mouth_center_top_lip", "mouth_right_corner", "mouth_center_bottom_lip")]
    cv2.fillPoly(image, [np.array([_pt(p) for p in lips], np.int32)], dark * 0.8 + 30, cv2.LINE_AA, _SHIFT)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_faces(count: int, seed: int = 0, options: LoadOptions | None = None) -> Dataset:
    """``count`` drawn faces, each a random similarity transform of Kaggle's mean face."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, KAGGLE_SIZE, KAGGLE_SIZE, 1), np.uint8)
    keypoints = np.empty((count, KAGGLE.num_keypoints, 2), np.float32)
    centre = np.array([48.0, 56.0])
    for i in range(count):
        angle = np.radians(rng.uniform(-12, 12))
        scale = rng.uniform(0.85, 1.1)
        rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        shift = rng.uniform(-4, 4, 2)
        points = (KAGGLE_MEAN_FACE - centre) @ rotation.T + centre + shift + rng.normal(0, 0.7, (15, 2))
        keypoints[i] = np.clip(points, 1, KAGGLE_SIZE - 2)
        images[i, ..., 0] = _draw_face(keypoints[i], rng)
    if options is not None:
        images, keypoints = to_frame(images, keypoints, options.size, options.color)
        if options.layout != KAGGLE:
            raise KpjaxError(f"--data synthetic draws the 15 Kaggle keypoints only, not {options.layout.name}")
    groups = np.array([f"synthetic:{i}" for i in range(count)])
    return Dataset(images, keypoints, KAGGLE, groups, np.full(count, "synthetic"))
