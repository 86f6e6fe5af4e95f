"""Face boxes in whole photos, and the affine that crops a box the way the Kaggle faces are cropped.

The detector is OpenCV's frontal-face Haar cascade, whose weights ship inside
opencv-python-headless, so nothing is downloaded at run time. It runs on a
grey copy shrunk to ``detect_size`` pixels on its longer side: the cascade's
cost grows with the pixel count, and a face under a tenth of the picture is
too small for a 96-pixel model anyway.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from kpjax.image import apply_affine

CASCADE = "haarcascade_frontalface_default.xml"

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
    score: float | None  # the cascade's last-stage weight; None when the whole image was taken as the face


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
    """A ``size`` x ``size`` image (Kaggle's 96 x 96 grey crops) is a face already framed for the model."""
    return image.shape[0] == image.shape[1] == size


class FaceDetector:
    """Every frontal face in an RGB or grey image, largest first."""

    # Scale step 1.2 with 4 neighbours finds as many of the real faces in ../shared/data as 1.15 with 5
    # (448 vs 450 of 500 Helen and YouTube Faces; 437 with 5 neighbours) in about three quarters of the time.
    def __init__(self, detect_size: int = 320, min_neighbors: int = 4, scale_factor: float = 1.2):
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
        self.detect_size = detect_size
        self.min_neighbors = min_neighbors
        self.scale_factor = scale_factor

    def __call__(self, image: np.ndarray) -> list[Detection]:
        grey = image if image.ndim == 2 or image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        grey = np.ascontiguousarray(grey.reshape(image.shape[:2]))
        factor = min(1.0, self.detect_size / max(grey.shape))
        if factor < 1.0:
            grey = cv2.resize(grey, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        boxes, _, weights = self.cascade.detectMultiScale3(
            grey, self.scale_factor, self.min_neighbors, minSize=(24, 24), outputRejectLevels=True
        )
        detections = [
            # A box's span [x - 0.5, x + w - 0.5] scales about the image's corner (-0.5, -0.5).
            Detection((float(x / factor), float(y / factor), float(w / factor), float(h / factor)), float(weight))
            for (x, y, w, h), weight in zip(np.reshape(boxes, (-1, 4)), np.ravel(weights))
        ]
        return sorted(detections, key=lambda d: -d.box[2])
