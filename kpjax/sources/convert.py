"""From a source's own points to the Kaggle frame: which points, which crop, which faces to skip.

The crop is a scale and a translation only, least-squares fitted from the
face's Kaggle keypoints onto Kaggle's mean face. Rotation is left in the data
and no point is pinned in place, so the converted keypoints spread like Kaggle's
(an eye-aligned crop would make the task artificially easy).
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from kpjax.dataset import Dataset
from kpjax.errors import KpjaxError
from kpjax.image import apply_affine, invert_affine, read_image, to_channels, warp
from kpjax.keypoints import IBUG68, KAGGLE, KAGGLE_MEAN_FACE, KAGGLE_NAMES, KAGGLE_SIZE, Layout
from kpjax.sources.rows import Row, Skip

# Source point indices averaged into each Kaggle keypoint; left/right are the subject's.
_KAGGLE_FROM = {
    "ibug": {  # iBUG 68 (300-W): 36-41 the eye on the image's left, 42-47 the other.
        "left_eye_center": range(42, 48), "right_eye_center": range(36, 42),
        "left_eye_inner_corner": [42], "left_eye_outer_corner": [45],
        "right_eye_inner_corner": [39], "right_eye_outer_corner": [36],
        "left_eyebrow_inner_end": [22], "left_eyebrow_outer_end": [26],
        "right_eyebrow_inner_end": [21], "right_eyebrow_outer_end": [17],
        "nose_tip": [30], "mouth_left_corner": [54], "mouth_right_corner": [48],
        "mouth_center_top_lip": [51], "mouth_center_bottom_lip": [57],
    },
    "fgnet": {  # FG-NET's own 68: 27-31 the eye on the image's left (31 pupil), 32-36 the other.
        "left_eye_center": [36], "right_eye_center": [31],
        "left_eye_inner_corner": [34], "left_eye_outer_corner": [32],
        "right_eye_inner_corner": [29], "right_eye_outer_corner": [27],
        "left_eyebrow_inner_end": [18], "left_eyebrow_outer_end": [15],
        "right_eyebrow_inner_end": [24], "right_eyebrow_outer_end": [21],
        "nose_tip": [67], "mouth_left_corner": [54], "mouth_right_corner": [48],
        "mouth_center_top_lip": [51], "mouth_center_bottom_lip": [57],
    },
    # AFLW 21 (0-based): 6-8 the eye on the image's left (7 pupil), 9-11 the other; no lip centres. Its eyebrow
    # ends (0, 2, 3, 5) are left out: AFLW marks them elsewhere than iBUG and FG-NET do (its outer ends sit
    # about 4 px further in, in the Kaggle frame), and a model trained on both conventions drew Helen's
    # eyebrows 4-7 % of the outer-eye distance off, the largest error it made on photos.
    "aflw": {
        "left_eye_center": [10], "right_eye_center": [7],
        "left_eye_inner_corner": [9], "left_eye_outer_corner": [11],
        "right_eye_inner_corner": [8], "right_eye_outer_corner": [6],
        "nose_tip": [14], "mouth_left_corner": [19], "mouth_right_corner": [17],
    },
    "mtfl": {  # MTFL: eye on the image's left, the other eye, nose, mouth corner on the image's left, the other.
        "left_eye_center": [1], "right_eye_center": [0], "nose_tip": [2],
        "mouth_left_corner": [4], "mouth_right_corner": [3],
    },
}
MARKUPS_68 = ("ibug", "fgnet")

# A crop must cover at least this many source pixels (a 96-px crop upscales at most 4x).
MIN_CROP_SOURCE_PIXELS = 24
# Annotations may sit up to this far beyond the image's edge pixels (0- vs 1-based conventions).
EDGE_TOLERANCE = 1.0
# A crop may reach at most this share of its side past the image. More means the points do not sit
# on the face in the image: 2,350 of MTFL's rows (its "_+-40_*" rotated copies) carry unrotated
# labels near the top edge; this catches 98% of them, no other MTFL row and 1% of Helen's faces.
MAX_CROP_OUTSIDE = 0.2


def kaggle_points(points: np.ndarray, markup: str) -> np.ndarray:
    """(P, 2) source points to the (15, 2) Kaggle keypoints, NaN where the markup has none."""
    mapping = _KAGGLE_FROM[markup]
    out = np.full((len(KAGGLE_NAMES), 2), np.nan)
    for k, name in enumerate(KAGGLE_NAMES):
        if name in mapping:
            out[k] = points[list(mapping[name])].mean(axis=0)
    return out


def mean_face(size: int) -> np.ndarray:
    """Kaggle's mean face in a ``size`` frame (pixel-index coordinates)."""
    return (KAGGLE_MEAN_FACE.astype(np.float64) + 0.5) * size / KAGGLE_SIZE - 0.5


def fit_crop(keypoints: np.ndarray, size: int) -> np.ndarray:
    """The scale+translation 2x3 affine that best maps the present Kaggle ``keypoints`` onto the mean face."""
    present = ~np.isnan(keypoints).any(axis=1)
    source, target = keypoints[present], mean_face(size)[present]
    source_centred = source - source.mean(axis=0)
    spread = (source_centred**2).sum()
    scale = (source_centred * (target - target.mean(axis=0))).sum() / spread if spread > 0 else np.inf
    shift = target.mean(axis=0) - scale * source.mean(axis=0)
    return np.array([[scale, 0.0, shift[0]], [0.0, scale, shift[1]]])


def markup_misfit(points: np.ndarray, markup: str) -> float:
    """RMS distance (Kaggle px) of the markup's Kaggle keypoints from the mean face after the best similarity.

    Rotation is allowed here, so a tilted face still fits its own markup; read
    with another markup's indices a face lands some 20 px off.
    """
    keypoints = kaggle_points(points, markup)
    source = keypoints[:, 0] + 1j * keypoints[:, 1]
    target = KAGGLE_MEAN_FACE[:, 0] + 1j * KAGGLE_MEAN_FACE[:, 1]
    source, target = source - source.mean(), target - target.mean()
    similarity = np.vdot(source, target) / np.vdot(source, source)
    return float(np.sqrt(np.mean(np.abs(similarity * source - target) ** 2)))


def best_markup(points: np.ndarray) -> str:
    """The 68-point markup whose reading of ``points`` looks most like a face."""
    return min(MARKUPS_68, key=lambda markup: markup_misfit(points, markup))


class _Skipped(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def skip_summary(skips: list[Skip], total: int) -> str:
    """One line, e.g. ``skipped 12 of 3452: 9 missing image, 3 points outside image``."""
    reasons: dict[str, int] = {}
    for skip in skips:
        reasons[skip.reason] = reasons.get(skip.reason, 0) + 1
    counts = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items(), key=lambda item: -item[1]))
    return f"skipped {len(skips)} of {total}: {counts}"


def report_skips(source: str, skips: list[Skip], total: int, strict: bool) -> None:
    """Never a silent drop: one summary line on stderr, or under ``strict`` an error naming the first skip."""
    if not skips:
        return
    if strict:
        first = skips[0]
        detail = f" ({first.detail})" if first.detail else ""
        raise KpjaxError(f"{first.where}: {first.reason}{detail} [--strict; {skip_summary(skips, total)}]")
    print(f"{source}: {skip_summary(skips, total)}", file=sys.stderr)


def check_rows(rows: list[Row], markup: str | None) -> tuple[str, list[Row | Skip]]:
    """Reader problems, duplicate rows and, for 68 points, faces that do not fit the detected or given markup."""
    seen: set[Path] = set()
    checked: list[Row | Skip] = []
    for row in rows:
        if row.problem:
            checked.append(Skip(row.where, *row.problem))
        elif row.image in seen:
            checked.append(Skip(row.where, "duplicate row", f"{row.image.name} listed before"))
        else:
            seen.add(row.image)
            checked.append(row)
    if markup not in (None, *MARKUPS_68):
        return markup, checked
    best = {id(item): best_markup(item.points) for item in checked if isinstance(item, Row)}
    markup = markup or max(MARKUPS_68, key=list(best.values()).count)
    return markup, [
        Skip(item.where, f"points do not fit the {markup} markup", f"they read as {best[id(item)]}")
        if isinstance(item, Row) and best[id(item)] != markup else item
        for item in checked
    ]


def _convert_face(row: Row, markup: str, layout: Layout, size: int, color: bool,
                  margin: int) -> tuple[np.ndarray, np.ndarray]:
    """The face's crop and keypoints; with a ``margin``, the crop reaches that many pixels past the frame on
    every side (its keypoints in the wider crop's pixels), the context that crop jitter samples from."""
    if not row.image.is_file():
        raise _Skipped("missing image", str(row.image))
    try:
        image = read_image(row.image)
    except KpjaxError as error:
        raise _Skipped("unreadable image", str(error)) from None
    height, width = image.shape[:2]
    low, high = -0.5 - EDGE_TOLERANCE, np.array([width, height]) - 0.5 + EDGE_TOLERANCE
    if ((row.points < low) | (row.points > high)).any():
        raise _Skipped("points outside image", f"{row.image.name} is {width}x{height}")
    keypoints = kaggle_points(row.points, markup)
    matrix = fit_crop(keypoints, size)
    covered = size / matrix[0, 0] if np.isfinite(matrix).all() else 0.0
    if not covered >= MIN_CROP_SOURCE_PIXELS:
        raise _Skipped("face too small", f"its crop would cover {covered:.0f} source pixels")
    corners = apply_affine(invert_affine(matrix), np.array([[-0.5, -0.5], [size - 0.5, size - 0.5]]))
    beyond = np.max([-0.5 - corners[0], corners[1] - [width - 0.5, height - 0.5]])
    if beyond > MAX_CROP_OUTSIDE * (corners[1, 0] - corners[0, 0]):
        raise _Skipped("crop outside image", "the points do not sit on a face inside the image")
    framed = apply_affine(matrix, keypoints)
    present = ~np.isnan(framed)
    if ((framed[present] < 0) | (framed[present] > size - 1)).any():
        raise _Skipped("keypoints outside the crop", "the face does not fit the mean face's frame")
    context = matrix + np.array([[0.0, 0.0, margin], [0.0, 0.0, margin]])
    crop = warp(to_channels(image, color), context, size + 2 * margin, color)
    output = apply_affine(context, keypoints if layout == KAGGLE else row.points)
    return crop, output.astype(np.float32)


def convert_rows(rows: list[Row], source: str, markup: str | None, layout: Layout, size: int,
                 color: bool, margin: int = 0) -> tuple[Dataset, list[Skip]]:
    """Crop every readable face (in parallel: decoding and warping release the GIL) and list the skipped ones."""
    markup, checked = check_rows(rows, markup)
    if layout == IBUG68 and markup != "ibug":
        raise KpjaxError(
            f"{source}: its points use the {markup} markup, which cannot be mapped to all 68 iBUG points; "
            "use --keypoints 15"
        )
    if layout not in (KAGGLE, IBUG68):
        raise KpjaxError(f"{source}: cannot produce the {layout.name} layout")

    def convert(item):
        if isinstance(item, Skip):
            return item
        try:
            return _convert_face(item, markup, layout, size, color, margin)
        except _Skipped as skipped:
            return Skip(item.where, skipped.reason, skipped.detail)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(pool.map(convert, checked))
    kept = [i for i, result in enumerate(results) if not isinstance(result, Skip)]
    skips = [result for result in results if isinstance(result, Skip)]
    if not kept:
        raise KpjaxError(f"{source}: no usable faces ({skip_summary(skips, len(rows))}; first: {skips[0].where})"
                         if skips else f"{source}: no faces found")
    channels = 3 if color else 1
    side = size + 2 * margin
    images = np.stack([results[i][0] for i in kept]).reshape(len(kept), side, side, channels)
    keypoints = np.stack([results[i][1] for i in kept])
    groups = np.array([f"{source}:{checked[i].group}" for i in kept])
    hidden = np.isnan(keypoints).any(axis=-1) & placeable(markup, layout)
    return Dataset(images, keypoints, layout, groups, np.full(len(kept), source), hidden), skips


def placeable(markup: str, layout: Layout) -> np.ndarray:
    """(K,) bool: the layout's keypoints that a face fully annotated in ``markup`` has."""
    if layout == KAGGLE:
        return np.array([name in _KAGGLE_FROM[markup] for name in KAGGLE_NAMES])
    return np.ones(layout.num_keypoints, bool)
