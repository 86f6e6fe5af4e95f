"""Is converted data distributed like Kaggle's? Keypoint means, spreads and the mean-face RMSE, per source.

A crop that pins points in place (aligning on the eyes, say) shrinks the spread
and makes the task artificially easy; these figures catch that, and a wrong
point mapping shows up as a mean keypoint far from Kaggle's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from kpjax.dataset import Dataset
from kpjax.errors import KpjaxError
from kpjax.keypoints import KAGGLE, KAGGLE_MEAN_FACE, KAGGLE_NAMES, KAGGLE_SIZE
from kpjax.sources import LoadOptions, load_data

# Per-coordinate standard deviation over the 2140 complete rows of Kaggle's training.csv.
KAGGLE_STD = np.array(
    [
        [2.087, 2.293], [2.051, 2.234], [2.005, 2.034], [2.701, 2.684], [1.822, 2.009],
        [2.768, 2.654], [2.819, 2.866], [3.312, 3.626], [2.609, 2.842], [3.337, 3.643],
        [3.275, 4.528], [3.649, 4.438], [3.594, 4.259], [2.723, 5.107], [3.032, 4.812],
    ]
)

MAX_MEAN_OFFSET = 3.0  # px, every keypoint
STD_RATIO_RANGE = (0.4, 2.0)  # every coordinate
STD_RATIO_MEDIAN_RANGE = (0.85, 1.2)
RMSE_TOLERANCE = 0.15  # relative to Kaggle's mean-face RMSE on the same coordinates


@dataclasses.dataclass(frozen=True)
class Reference:
    """Kaggle's per-keypoint mean and per-coordinate spread (Kaggle frame pixels)."""

    mean: np.ndarray  # (15, 2)
    std: np.ndarray  # (15, 2)
    rows: int


KAGGLE_REFERENCE = Reference(KAGGLE_MEAN_FACE.astype(np.float64), KAGGLE_STD, rows=2140)


def read_reference(labels_csv: Path) -> Reference:
    """The reference from a Kaggle label file (training.csv or its 30 keypoint columns), complete rows only."""
    try:
        frame = pd.read_csv(labels_csv, usecols=KAGGLE.columns)
    except (OSError, ValueError) as error:
        raise KpjaxError(f"{labels_csv}: not a Kaggle label file ({str(error).splitlines()[0]})") from None
    complete = frame.dropna().to_numpy(np.float64).reshape(-1, KAGGLE.num_keypoints, 2)
    return Reference(complete.mean(axis=0), complete.std(axis=0), rows=len(complete))


def _within(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= value <= bounds[1]


def keypoint_stats(keypoints: np.ndarray, reference: Reference = KAGGLE_REFERENCE) -> dict:
    """Figures and pass/fail for (N, 15, 2) Kaggle-frame keypoints (NaN where missing) against the reference."""
    present = ~np.isnan(keypoints)
    counts = present.sum(axis=0)  # (15, 2)
    has = counts > 1
    mean = np.where(has, np.nanmean(np.where(has, keypoints, 0.0), axis=0), np.nan)
    std = np.where(has, np.nanstd(np.where(has, keypoints, 0.0), axis=0), np.nan)
    offset = np.linalg.norm(mean - reference.mean, axis=1)  # NaN for a keypoint never given
    ratio = std / reference.std
    squared = np.nansum((keypoints - mean) ** 2, axis=0)
    rmse = float(np.sqrt(squared[has].sum() / counts[has].sum()))
    reference_rmse = float(np.sqrt((counts * reference.std**2)[has].sum() / counts[has].sum()))
    worst = int(np.nanargmax(offset))
    ratios = ratio[has]
    figures = {
        "faces": int(len(keypoints)),
        "complete": int(present.all(axis=(1, 2)).sum()),
        "max_mean_offset": float(offset[worst]),
        "worst_keypoint": KAGGLE_NAMES[worst],
        "std_ratio_min": float(ratios.min()),
        "std_ratio_median": float(np.median(ratios)),
        "std_ratio_max": float(ratios.max()),
        "mean_face_rmse": rmse,
        "reference_rmse": reference_rmse,
    }
    figures["passes"] = {
        "mean": figures["max_mean_offset"] <= MAX_MEAN_OFFSET,
        "std": _within(figures["std_ratio_min"], STD_RATIO_RANGE) and _within(figures["std_ratio_max"], STD_RATIO_RANGE)
        and _within(figures["std_ratio_median"], STD_RATIO_MEDIAN_RANGE),
        "rmse": abs(rmse / reference_rmse - 1) <= RMSE_TOLERANCE,
    }
    figures["keypoints"] = {
        name: {"mean": mean[k].tolist(), "offset": float(offset[k]), "std_ratio": ratio[k].tolist()}
        for k, name in enumerate(KAGGLE_NAMES) if has[k].all()
    }
    return figures


def dataset_stats(dataset: Dataset, reference: Reference = KAGGLE_REFERENCE) -> dict:
    """Figures for all faces together (``"all"``) and for each source alone."""
    if dataset.layout != KAGGLE or dataset.size != KAGGLE_SIZE:
        raise KpjaxError("distribution stats need the Kaggle frame: 15 keypoints at 96x96")
    by_source = {"all": keypoint_stats(dataset.keypoints, reference)}
    for source in np.unique(dataset.sources):
        by_source[str(source)] = keypoint_stats(dataset.keypoints[dataset.sources == source], reference)
    return {
        "reference": {"rows": reference.rows},
        "criteria": {
            "max_mean_offset": MAX_MEAN_OFFSET, "std_ratio_range": STD_RATIO_RANGE,
            "std_ratio_median_range": STD_RATIO_MEDIAN_RANGE, "rmse_tolerance": RMSE_TOLERANCE,
        },
        "sources": by_source,
    }


def data_stats(specs: list[str], options: LoadOptions = LoadOptions(), reference: Path | None = None) -> dict:
    """Load ``specs`` in the Kaggle frame (96x96 grey, 15 keypoints) and measure them against Kaggle's labels."""
    options = dataclasses.replace(options, layout=KAGGLE, size=KAGGLE_SIZE, color=False)
    return dataset_stats(load_data(specs, options), read_reference(reference) if reference else KAGGLE_REFERENCE)


def format_stats(stats: dict) -> str:
    """A table: one row per source, each criterion's figures followed by ok or FAIL."""
    def verdict(ok: bool) -> str:
        return "ok" if ok else "FAIL"

    lines = [
        f"{'source':<22}{'faces':>7}  {'max mean offset px':<38}{'std ratio min/median/max':<30}mean-face RMSE px",
    ]
    for source, s in stats["sources"].items():
        offset = f"{s['max_mean_offset']:.2f} ({s['worst_keypoint']}) {verdict(s['passes']['mean'])}"
        ratio = (f"{s['std_ratio_min']:.2f}/{s['std_ratio_median']:.2f}/{s['std_ratio_max']:.2f} "
                 f"{verdict(s['passes']['std'])}")
        rmse = f"{s['mean_face_rmse']:.2f} vs {s['reference_rmse']:.2f} {verdict(s['passes']['rmse'])}"
        lines.append(f"{source:<22}{s['faces']:>7}  {offset:<38}{ratio:<30}{rmse}")
    c = stats["criteria"]
    lines.append(
        f"criteria vs Kaggle's {stats['reference']['rows']} complete rows: mean offset <= {c['max_mean_offset']} px; "
        f"std ratio in {c['std_ratio_range']}, median in {c['std_ratio_median_range']}; "
        f"RMSE within {c['rmse_tolerance']:.0%}"
    )
    return "\n".join(lines)
