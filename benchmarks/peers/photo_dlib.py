"""dlib's HOG face detector and 68-point shape predictor on whole photos, as the 15 Kaggle keypoints.

Runs in its own venv (benchmarks/peers/setup_photo_peers.sh: dlib-bin, and
face-recognition-models for shape_predictor_68_face_landmarks.dat); benchmarks/photo_peers.py drives it:

    ~/.cache/kpjax/peers/dlib/bin/python benchmarks/peers/photo_dlib.py IMAGES_LIST OUT_JSON

The detector runs on the photo upsampled once (face_recognition's default: it
then finds faces down to about 40 px); ``score`` is its detection score.
The predictor was trained on iBUG 300-W, which includes Helen's training
images: on those it is scored on faces it has seen.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import dlib
import numpy as np

import photo_protocol

UPSAMPLE = 1
# iBUG 68 points averaged into each Kaggle keypoint: kpjax.sources.convert's _KAGGLE_FROM["ibug"].
# 36-41 is the eye on the image's left (the subject's right), 42-47 the other.
IBUG_FROM = {
    "left_eye_center": range(42, 48), "right_eye_center": range(36, 42),
    "left_eye_inner_corner": [42], "left_eye_outer_corner": [45],
    "right_eye_inner_corner": [39], "right_eye_outer_corner": [36],
    "left_eyebrow_inner_end": [22], "left_eyebrow_outer_end": [26],
    "right_eyebrow_inner_end": [21], "right_eyebrow_outer_end": [17],
    "nose_tip": [30], "mouth_left_corner": [54], "mouth_right_corner": [48],
    "mouth_center_top_lip": [51], "mouth_center_bottom_lip": [57],
}


def _predictor_path() -> str:
    """The 68-point model inside face_recognition_models, found without importing the package
    (its __init__ needs pkg_resources, which new virtualenvs lack)."""
    package = importlib.util.find_spec("face_recognition_models").submodule_search_locations[0]
    return str(Path(package) / "models" / "shape_predictor_68_face_landmarks.dat")


detector = dlib.get_frontal_face_detector()
predictor = dlib.shape_predictor(_predictor_path())


def decode(path: str) -> np.ndarray:
    try:
        return dlib.load_rgb_image(path)
    except RuntimeError as error:  # dlib's only error type: missing file or unknown format
        raise ValueError(str(error)) from None


def find_faces(image: np.ndarray) -> list[photo_protocol.PeerFace]:
    boxes, scores, _ = detector.run(image, UPSAMPLE)
    faces = []
    for box, score in zip(boxes, scores):
        shape = predictor(image, box)
        points = np.array([(p.x, p.y) for p in shape.parts()], float)  # dlib's pixel indices (integers)
        keypoints = [points[list(IBUG_FROM[name])].mean(axis=0) for name in photo_protocol.KAGGLE_NAMES]
        faces.append(photo_protocol.PeerFace((box.left(), box.top(), box.width(), box.height()), score, keypoints))
    return faces


if __name__ == "__main__":
    photo_protocol.run(__doc__, decode, find_faces)
