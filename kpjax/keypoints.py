"""Keypoint layouts: names, flip pairs and the Kaggle frame's mean face.

Left and right are always the *subject's*, as in Kaggle's ``left_eye_center``
(which lies on the image's right half).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Layout:
    """A named set of keypoints and how a horizontal flip permutes them."""

    name: str
    names: tuple[str, ...]
    flip_permutation: tuple[int, ...]

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    @property
    def columns(self) -> list[str]:
        """Kaggle-style column names, x then y per keypoint."""
        return [f"{n}_{axis}" for n in self.names for axis in ("x", "y")]


def _flip_permutation(names: tuple[str, ...]) -> tuple[int, ...]:
    index = {n: i for i, n in enumerate(names)}

    def mirror(name: str) -> str:  # "mouth_left_corner" <-> "mouth_right_corner", not only a leading side
        swap = {"left": "right", "right": "left"}
        return "_".join(swap.get(part, part) for part in name.split("_"))

    return tuple(index[mirror(n)] for n in names)


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
KAGGLE = Layout("kaggle", KAGGLE_NAMES, _flip_permutation(KAGGLE_NAMES))

# iBUG 68 points as seen in the image (index 0 on the image's left); a flip maps
# each point to its mirror partner.
_IBUG_MIRROR = (
    list(zip(range(0, 8), range(16, 8, -1)))  # jaw
    + list(zip(range(17, 22), range(26, 21, -1)))  # eyebrows
    + list(zip((31, 32), (35, 34)))  # nostrils
    + list(zip((36, 37, 38, 39, 40, 41), (45, 44, 43, 42, 47, 46)))  # eyes
    + list(zip((48, 49, 50, 58, 59), (54, 53, 52, 56, 55)))  # outer lip
    + list(zip((60, 61, 67), (64, 63, 65)))  # inner lip
)


def _ibug_flip() -> tuple[int, ...]:
    perm = list(range(68))
    for a, b in _IBUG_MIRROR:
        perm[a], perm[b] = b, a
    return tuple(perm)


IBUG68 = Layout("ibug68", tuple(f"point_{i}" for i in range(68)), _ibug_flip())

LAYOUTS = {layout.name: layout for layout in (KAGGLE, IBUG68)}
# Outer eye corners, the NME normaliser (as 300-W reports it): Kaggle's left/right_eye_outer_corner, iBUG's 45 and 36.
OUTER_CORNERS = {KAGGLE.name: (3, 5), IBUG68.name: (45, 36)}

# Mean of the complete rows of Kaggle's training.csv (pixels, 96x96 frame).
KAGGLE_MEAN_FACE = np.array(
    [
        [66.22, 36.84], [29.64, 37.06], [59.27, 37.86], [73.41, 37.64],
        [36.60, 37.92], [22.36, 38.03], [56.15, 29.22], [79.62, 29.66],
        [39.27, 29.41], [15.76, 30.45], [47.95, 57.25], [63.42, 75.89],
        [32.97, 76.13], [48.08, 72.68], [48.15, 82.63],
    ],
    dtype=np.float32,
)

KAGGLE_SIZE = 96


def normalise(pixels: np.ndarray, size: int) -> np.ndarray:
    """Pixel coordinates to the seed's units, (v - size/2) / (size/2)."""
    half = size / 2
    return (pixels - half) / half


def denormalise(values: np.ndarray, size: int) -> np.ndarray:
    half = size / 2
    return values * half + half


def interocular_distance(keypoints: np.ndarray, layout: Layout) -> np.ndarray:
    """(..., K, 2) keypoints to (...,) distances between the eye centres, the NME normaliser.

    Eye centres in both layouts (iBUG: the mean of each eye's six points), so
    15- and 68-point NMEs are comparable.
    """
    if layout == KAGGLE:
        left, right = keypoints[..., 0, :], keypoints[..., 1, :]
    elif layout == IBUG68:
        left, right = keypoints[..., 42:48, :].mean(axis=-2), keypoints[..., 36:42, :].mean(axis=-2)
    else:
        raise ValueError(f"no eye centres known for layout {layout.name}")
    return np.linalg.norm(left - right, axis=-1)
