"""What inference hands out and how it is written: faces, their overlays, and their JSON and CSV records.

Below both ``kpjax.predict`` (photos) and ``kpjax.video``, so that each writes
the same records without importing the other.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np


@dataclasses.dataclass
class Face:
    box: tuple[float, float, float, float]  # x, y, width, height in image pixels
    score: float | None  # detector score; None when the image was taken as the face
    points: np.ndarray  # (K, 2) in image pixels
    errors: np.ndarray | None = None  # (K,) each point's expected error, image pixels; None without an error head
    expected_nme: float | None = None  # the quality score: the NME the points are expected to have (lower is better)


def draw_keypoints(image: np.ndarray, points: np.ndarray, colour: tuple[int, int, int] = (255, 40, 40)) -> np.ndarray:
    """An RGB copy of ``image`` with the keypoints marked, sized to stay visible on large images."""
    canvas = np.ascontiguousarray(image.copy())
    radius = max(1, round(max(image.shape[:2]) / 120))
    for x, y in points:
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(canvas, (round(float(x)), round(float(y))), radius, colour, -1, cv2.LINE_AA)
    return canvas


def draw_faces(image: np.ndarray, faces: list[Face]) -> np.ndarray:
    """An RGB copy of ``image`` with each face's box, score and keypoints; a ring around each point as wide as its
    expected error, so the doubtful points stand out, and the face's expected NME beside its score."""
    canvas = np.ascontiguousarray(image.copy())
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for face in faces:
        x, y, w, h = (round(v) for v in face.box)
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), (40, 220, 40), thickness, cv2.LINE_AA)
        label = " ".join(([] if face.score is None else [f"{face.score:.1f}"]) +
                         ([] if face.expected_nme is None else [f"~{100 * face.expected_nme:.1f}%"]))
        if label:
            cv2.putText(canvas, label, (x, max(y - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4 * thickness, (40, 220, 40), thickness, cv2.LINE_AA)
        if face.errors is not None:
            for (px, py), error in zip(face.points, face.errors):
                if np.isfinite(px) and np.isfinite(py):
                    cv2.circle(canvas, (round(float(px)), round(float(py))), max(1, round(float(error))),
                               (255, 190, 40), 1, cv2.LINE_AA)
        canvas = draw_keypoints(canvas, face.points)
    return canvas


def face_record(face: Face, names: tuple[str, ...]) -> dict:
    return {
        "box": [round(float(v), 2) for v in face.box],
        "score": None if face.score is None else round(face.score, 3),
        "expected_nme": None if face.expected_nme is None else round(face.expected_nme, 4),
        "keypoints": {name: [round(float(x), 2), round(float(y), 2)] for name, (x, y) in zip(names, face.points)},
        "errors": None if face.errors is None else {name: round(float(e), 2) for name, e in zip(names, face.errors)},
    }


def csv_header(names: tuple[str, ...]) -> list[str]:
    return ["face", "score", "expected_nme", "box_x", "box_y", "box_w", "box_h",
            *[f"{n}_{a}" for n in names for a in "xy"], *[f"{n}_error" for n in names]]


def csv_cells(index: int, face: Face) -> list:
    """One face's cells under ``csv_header``; the confidence cells are empty for a model without an error head."""
    score = "" if face.score is None else f"{face.score:.3f}"
    quality = "" if face.expected_nme is None else f"{face.expected_nme:.4f}"
    errors = [""] * len(face.points) if face.errors is None else [f"{e:.2f}" for e in face.errors]
    return [index, score, quality, *(f"{v:.2f}" for v in face.box), *(f"{v:.2f}" for v in face.points.reshape(-1)),
            *errors]


@dataclasses.dataclass
class ImageResult:
    """What became of one input image: its faces, or why it was skipped."""

    image: str
    faces: list[Face] = dataclasses.field(default_factory=list)
    width: int = 0
    height: int = 0
    overlay: str = ""
    error: str | None = None

    def to_json(self, names: tuple[str, ...]) -> dict:
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        return {"image": self.image, "width": self.width, "height": self.height, "overlay": self.overlay,
                "faces": [face_record(face, names) for face in self.faces]}
