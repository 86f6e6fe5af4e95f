"""What every photo peer script shares: its command line, the timing and the output in kpjax's predictions.json shape.

A photo peer runs inside its own virtualenv, which has neither kpjax nor its
dependencies, so this module uses the standard library only.

    PEER_PYTHON benchmarks/peers/photo_NAME.py IMAGES_LIST OUT_JSON

writes ``[{"image", "width", "height", "faces": [{"box": [x, y, w, h],
"score", "keypoints": {name: [x, y]}}], "ms"}]`` (or ``{"image", "error"}``
for a photo that does not decode), coordinates in the photo's pixel indices.
``ms`` is the photo's wall time for decoding, detection and landmarks, each
photo timed once after an untimed warm-up on the first.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

# A copy of kpjax.keypoints.KAGGLE_NAMES (left/right are the subject's): the peers' venvs have no kpjax;
# tests/test_photo_peers.py keeps the two equal.
KAGGLE_NAMES = (
    "left_eye_center",
    "right_eye_center",
    "left_eye_inner_corner",
    "left_eye_outer_corner",
    "right_eye_inner_corner",
    "right_eye_outer_corner",
    "left_eyebrow_inner_end",
    "left_eyebrow_outer_end",
    "right_eyebrow_inner_end",
    "right_eyebrow_outer_end",
    "nose_tip",
    "mouth_left_corner",
    "mouth_right_corner",
    "mouth_center_top_lip",
    "mouth_center_bottom_lip",
)


class PeerFace(NamedTuple):
    box: Sequence[float]  # x, y, width, height in pixel indices, as OpenCV's and kpjax's
    score: float | None
    keypoints: Sequence[Sequence[float]]  # (x, y) per KAGGLE_NAMES entry


def face_record(face: PeerFace) -> dict:
    """One face as kpjax.predict.face_record writes it (two decimals)."""
    return {
        "box": [round(float(v), 2) for v in face.box],
        "score": None if face.score is None else round(float(face.score), 3),
        "keypoints": {name: [round(float(x), 2), round(float(y), 2)]
                      for name, (x, y) in zip(KAGGLE_NAMES, face.keypoints)},
    }


def run(description: str, decode: Callable[[str], Any], find_faces: Callable[[Any], list[PeerFace]]) -> None:
    """Time ``find_faces(decode(path))`` on every listed photo and write the records; ``decode`` returns an
    H x W x 3 array or raises OSError/ValueError for a photo it cannot read."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("images", help="text file: one image path per line")
    parser.add_argument("out", help="JSON file to write")
    args = parser.parse_args()
    with open(args.images) as f:
        paths = [line.strip() for line in f if line.strip()]

    def one(path: str) -> dict:
        started = time.perf_counter()
        try:
            image = decode(path)
        except (OSError, ValueError) as error:
            return {"image": path, "error": f"unreadable image ({error})"}
        faces = find_faces(image)
        ms = (time.perf_counter() - started) * 1e3
        height, width = image.shape[:2]
        return {"image": path, "width": width, "height": height, "faces": [face_record(f) for f in faces],
                "ms": round(ms, 2)}

    if paths:
        one(paths[0])  # warm-up: model loading and first-call costs stay out of the figures
    records = [one(path) for path in paths]
    with open(args.out, "w") as f:
        json.dump(records, f, indent=2)
