"""Face boxes in whole photos, and the affine that crops a box the way the Kaggle faces are cropped.

Two stages. OpenCV's Haar cascades (their weights ship inside
opencv-python-headless, so nothing is downloaded at run time) propose boxes
generously, a lone cascade window enough (``--detector fast``) or two
overlapping ones: the frontal cascade and, for ``--detector thorough``, the
profile cascade on the image and on its mirror (it only knows faces turned one
way). A small CNN (``kpjax.verify``) then scores
every proposal 0..1, overlapping ones are merged by non-maximum suppression,
and those scoring under ``threshold`` are dropped: the verifier, not the
cascade's neighbour count, decides what is a face, so the first stage can take
faces a strict cascade misses (``DETECTORS``; EXPERIMENTS.md, "Finding faces").
The cascades run on a grey copy shrunk to ``detect_size`` pixels on its longer
side: their cost grows with the pixel count, and a face under a tenth of the
picture is too small for a 96-pixel model anyway.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import cv2
import numpy as np

from kpjax.errors import KpjaxError
from kpjax.image import apply_affine
from kpjax.keypoints import KAGGLE_SIZE
from kpjax.sources.convert import fit_crop, kaggle_points
from kpjax.verify import FaceVerifier, Scorer, load_verifier, patches

CASCADES = {"frontal": "haarcascade_frontalface_default.xml", "profile": "haarcascade_profileface.xml"}
# ``--detector`` presets (EXPERIMENTS.md, "Finding faces"). fast: the frontal cascade alone, at coarse pyramid
# steps (1.5: 0.6 of the cascade's time at 1.25) from faces of 30 px of the search copy up, every window it passes a
# proposal (``min_neighbors`` 0: overlapping windows merged by ``group_windows``, a lone one kept, since at such
# steps a face often gets one window), kept where the verifier gives 0.7 or more. thorough: the profile cascades
# too, on the image and its mirror, at steps of 1.2, two overlapping windows making a proposal.
DETECTORS = {
    "fast": {"cascades": ("frontal",), "min_neighbors": 0, "min_size": 30, "scale_factor": 1.5, "threshold": 0.7},
    "thorough": {},
}
# The fast preset before (EXPERIMENTS.md, "Finding faces"): steps of 1.25, two overlapping windows making a
# proposal, the verifier's 0.8; kept for the benchmarks' side-by-side runs.
FAST_BEFORE = {"cascades": ("frontal",), "min_size": 30, "scale_factor": 1.25, "threshold": 0.8}

# Where the model's square frame sits relative to a Haar box (x, y, w, h): its
# centre, in box widths and heights, and its side, in box widths. Measured on
# the real faces in ../shared/data (986 Haar detections: Helen and YouTube
# Faces with iBUG points, FG-NET), as the median over faces of the frame that
# kpjax.sources.convert.fit_crop makes from the annotated points, i.e. the
# crop the training data gets: sides 1.024, 1.024 and 1.061 box widths,
# centres within 0.01 of the box centre. Per face the box still varies (the
# quartiles of the side are about +-6 %), which leaves a median 4-5 px between
# each mapped keypoint and Kaggle's mean face.
FRAME_CENTRE = (0.5, 0.5)
FRAME_SIDE = 1.035


@dataclasses.dataclass(frozen=True)
class Detection:
    """A face box in image pixels (x, y, width, height; pixel indices, as OpenCV's) and its score."""

    box: tuple[float, float, float, float]
    score: float | None  # 0..1, how sure the detector is of a face; None when the whole image was taken as the face


def box_matrix(box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """The image -> frame affine that crops ``box`` into the model's ``size`` frame like a Kaggle face."""
    x, y, w, h = box
    # Box pixels x .. x+w-1 cover the continuous span [x - 0.5, x + w - 0.5].
    cx = x - 0.5 + FRAME_CENTRE[0] * w
    cy = y - 0.5 + FRAME_CENTRE[1] * h
    scale = size / (FRAME_SIDE * w)
    centre = (size - 1) / 2
    return np.array([[scale, 0.0, centre - scale * cx], [0.0, scale, centre - scale * cy]])


def frame_box(matrix: np.ndarray, size: int) -> tuple[float, float, float, float]:
    """The image region (x, y, w, h) that a frame affine crops: the box drawn for a face taken whole."""
    (x0, y0), (x1, y1) = apply_affine(cv2.invertAffineTransform(matrix), np.array([[-0.5, -0.5], [size - 0.5, size - 0.5]]))
    return float(x0 + 0.5), float(y0 + 0.5), float(x1 - x0), float(y1 - y0)


def is_face_crop(image: np.ndarray, size: int) -> bool:
    """A square image of the model's ``size`` or of Kaggle's 96 x 96 is a face already framed for the model (a
    128-pixel model is handed Kaggle's crops too)."""
    return image.shape[0] == image.shape[1] and image.shape[0] in (size, KAGGLE_SIZE)


def overlap(box: Sequence[float], others: np.ndarray) -> np.ndarray:
    """Intersection of ``box`` with each of ``others`` (N, 4) over the smaller one's area.

    Not IoU: a frontal box inside the larger profile box of the same face
    overlaps it little by IoU, but wholly by this measure.
    """
    x, y, w, h = box
    ix = np.clip(np.minimum(x + w, others[:, 0] + others[:, 2]) - np.maximum(x, others[:, 0]), 0, None)
    iy = np.clip(np.minimum(y + h, others[:, 1] + others[:, 3]) - np.maximum(y, others[:, 1]), 0, None)
    return ix * iy / np.minimum(w * h, others[:, 2] * others[:, 3])


def suppress(boxes: np.ndarray, scores: np.ndarray, max_overlap: float = 0.5) -> list[int]:
    """Non-maximum suppression: indices of the best-scored boxes, each overlapping no better one."""
    kept: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if not kept or overlap(boxes[i], boxes[kept]).max() <= max_overlap:
            kept.append(int(i))
    return kept


def group_windows(boxes: np.ndarray, weights: np.ndarray, eps: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Cascade windows merged as OpenCV's ``groupRectangles`` merges them (chains of windows whose four sides lie
    within ``eps`` times the smaller one's side of each other, averaged), but a window without neighbours kept
    too; each merged box weighs its best window's weight.

    OpenCV drops a cluster of ``min_neighbors`` windows or fewer, so its loosest grouping (1) still needs two
    windows: at coarse pyramid steps a face often gets only one.
    """
    if len(boxes) == 0:
        return boxes, weights
    corners = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    delta = eps * (np.minimum.outer(boxes[:, 2], boxes[:, 2]) + np.minimum.outer(boxes[:, 3], boxes[:, 3])) / 2
    similar = (np.abs(corners[:, None] - corners[None]) <= delta[..., None]).all(axis=-1)
    label = np.arange(len(boxes))
    while True:  # each window takes the smallest label among its neighbours until its whole chain shares one
        spread = np.where(similar, label[None, :], len(boxes)).min(axis=1)
        if (spread == label).all():
            break
        label = spread
    clusters = [label == c for c in np.unique(label)]
    return (np.stack([boxes[members].mean(axis=0) for members in clusters]),
            np.array([weights[members].max() for members in clusters]))


def make_detector(name: str, detect_size: int = 320) -> "FaceDetector":
    """``--detector`` NAME, one of ``DETECTORS``."""
    if name not in DETECTORS:
        raise KpjaxError(f"--detector {name}: expected {' or '.join(DETECTORS)}")
    return FaceDetector(detect_size, **DETECTORS[name])


class FaceDetector:
    """Every face in an RGB or grey image, frontal or turned, largest first.

    ``min_neighbors`` is OpenCV's: a proposal needs more than that many overlapping cascade windows, except at 0,
    where every window counts, overlapping ones merged (``group_windows``).

    ``verifier=None`` skips the second stage: every proposal surviving
    suppression is kept, scored by the cascade's last-stage weight squashed
    to 0..1 (with ``cascades=("frontal",), min_neighbors=4`` this is the
    detector kpjax had before the verifier, kept for comparisons).
    """

    def __init__(self, detect_size: int = 320, threshold: float = 0.9, cascades: Sequence[str] = ("frontal", "profile"),
                 min_neighbors: int = 1, scale_factor: float = 1.2, min_size: int = 24,
                 verifier: FaceVerifier | None | str = "shipped"):
        unknown = sorted(set(cascades) - set(CASCADES))
        if unknown or not cascades:
            raise KpjaxError(f"unknown cascade {unknown[0]!r}: expected {' or '.join(CASCADES)}" if unknown
                             else "no cascade to propose faces: expected frontal, profile or both")
        self.cascades = [(name, cv2.CascadeClassifier(cv2.data.haarcascades + CASCADES[name])) for name in cascades]
        self.detect_size = detect_size
        self.threshold = threshold
        self.min_neighbors = min_neighbors
        self.scale_factor = scale_factor
        self.min_size = min_size
        model = load_verifier() if verifier == "shipped" else verifier
        self.scorer = None if model is None else Scorer(model)

    def proposals(self, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 4) cascade boxes in ``grey``'s pixels and their last-stage weights; the profile cascade also mirrored."""
        boxes, weights = [], []
        for name, cascade in self.cascades:
            for mirrored in (False, True) if name == "profile" else (False,):
                found, _, weight = cascade.detectMultiScale3(
                    np.ascontiguousarray(grey[:, ::-1]) if mirrored else grey, self.scale_factor, self.min_neighbors,
                    minSize=(self.min_size, self.min_size), outputRejectLevels=True,
                )
                found = np.reshape(found, (-1, 4)).astype(np.float64)
                if self.min_neighbors == 0:
                    found, weight = group_windows(found, np.ravel(weight))
                if mirrored:
                    found[:, 0] = grey.shape[1] - found[:, 0] - found[:, 2]
                boxes.append(found)
                weights.append(np.ravel(weight))
        return np.concatenate(boxes), np.concatenate(weights)

    def search_image(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The grey copy the cascades search, shrunk to ``detect_size``, and its scale from ``image``."""
        grey = image if image.ndim == 2 or image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        grey = np.ascontiguousarray(grey.reshape(image.shape[:2]))
        factor = min(1.0, self.detect_size / max(grey.shape))
        if factor < 1.0:
            grey = cv2.resize(grey, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        return grey, factor

    def __call__(self, image: np.ndarray) -> list[Detection]:
        grey, factor = self.search_image(image)
        boxes, weights = self.proposals(grey)
        scores = 1.0 / (1.0 + np.exp(-weights)) if self.scorer is None else self.scorer(patches(grey, boxes))
        detections = [
            # A box's span [x - 0.5, x + w - 0.5] scales about the image's corner (-0.5, -0.5).
            Detection(tuple(float(v / factor) for v in boxes[i]), float(scores[i]))
            for i in suppress(boxes, scores) if self.scorer is None or scores[i] >= self.threshold
        ]
        return sorted(detections, key=lambda d: -d.box[2])

    def score(self, image: np.ndarray, boxes: Sequence[Sequence[float]]) -> np.ndarray:
        """The verifier's face probability for given boxes (image pixels): is a followed face still there?"""
        if self.scorer is None:
            raise ValueError("scoring boxes needs a verifier")
        grey, factor = self.search_image(image)
        return self.scorer(patches(grey, np.asarray(boxes, np.float64).reshape(-1, 4) * factor))


def keypoint_box(points: np.ndarray, size: int) -> tuple[float, float, float, float]:
    """The box whose crop (``box_matrix``) puts a face's keypoints where Kaggle's mean face sits.

    How a face is followed through a video without the detector: the next
    frame is cropped where this frame's keypoints say the face is. ``points``
    are the 15 Kaggle keypoints or the 68 iBUG points, in image pixels.
    """
    kaggle = kaggle_points(points, "ibug") if len(points) == 68 else points
    x, y, w, h = frame_box(fit_crop(kaggle, size), size)
    side = w / FRAME_SIDE
    return x + (w - side) / 2, y + (h - side) / 2, side, side
