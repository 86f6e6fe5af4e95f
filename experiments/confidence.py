"""How far off is each keypoint likely to be? Calibration of a model's expected errors (its error head).

    python experiments/confidence.py [--model RUN] [--sources SOURCE ...]

On the validation persons of the model's own split (persons it never trained on):
1. face crops as training makes them: label-fitted, and jittered as the recipe jitters them, and
   misplaced by twice that jitter (what a poor detector box does): per keypoint, the Spearman
   correlation between the expected and the actual error, and a reliability plot (actual error
   against expected, in bins of the expected error);
2. aflw-21's points hidden by the head's own pose: do their expected errors rank above the visible
   points' (ROC AUC; a hidden point has no position: the head learns of it only from error_nll's censored
   term, on the training persons' hidden points);
3. end to end on the validation persons' photos (helen-68-train, fgnet-68, youtube-faces-68) through
   `kpjax predict`'s pipeline (fast detector, 3 passes, every detection kept: the score is measured, not
   used): Spearman per point, the face's expected NME (its quality score) against its actual NME, and how
   many failures (NME > 10 %) and false faces it flags at the threshold that raises at most 10 % false
   alarms among the good faces.
Writes results/analysis/confidence.json and figures/confidence_reliability.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from kpjax.runtime import ensure_hugepage_malloc

ensure_hugepage_malloc(sys.argv)  # before JAX is imported: see kpjax/runtime.py

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from common import ROOT, data_specs, run_main, write_analysis  # noqa: E402

from kpjax import photo_eval  # noqa: E402
from kpjax.augment import random_affine  # noqa: E402
from kpjax.checkpoint import load_model  # noqa: E402
from kpjax.detect import make_detector  # noqa: E402
from kpjax.forward import xla_forward  # noqa: E402
from kpjax.inference import Predictor, predict_with_errors  # noqa: E402
from kpjax.keypoints import OUTER_CORNERS  # noqa: E402
from kpjax.models import LAPLACE_MEAN_DISTANCE  # noqa: E402
from kpjax.train import load_training_data, split_dataset  # noqa: E402

PHOTO_SOURCES = ("helen-68-train", "fgnet-68", "youtube-faces-68")  # whole photos, their validation persons
FALSE_ALARMS = 0.10  # the share of good faces the failure threshold may flag


def crop_errors(model, config, faces, jitter: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) expected and actual errors (frame pixels, NaN where unlabelled) on ``faces``' crops, jittered by
    ``jitter`` times the recipe's rotation, zoom and shift (0: the label-fitted crop)."""
    batch = {"images": jnp.asarray(faces.images), "targets": jnp.asarray(faces.targets(config.margin))}
    if jitter:
        batch = random_affine(batch, jax.random.key(seed), rotation=jitter * config.rotation,
                              scale=jitter * config.scale, shift=jitter * config.shift, size=config.size)
    else:
        batch = {"images": faces.crop(config.margin).images, "targets": batch["targets"]}
    images = np.asarray(batch["images"]).round().clip(0, 255).astype(np.uint8)
    points, expected = predict_with_errors(xla_forward(model), images)
    truth = np.where(faces.mask, np.asarray(batch["targets"]), np.nan)
    actual = np.linalg.norm(((points - truth) * config.size / 2).reshape(len(images), -1, 2), axis=-1)
    return expected, actual


def spearman_per_keypoint(expected: np.ndarray, actual: np.ndarray, names: tuple[str, ...]) -> dict:
    result = {}
    for k, name in enumerate(names):
        present = np.isfinite(actual[:, k])
        if present.sum() > 10:
            result[name] = float(stats.spearmanr(expected[present, k], actual[present, k]).statistic)
    values = list(result.values())
    present = np.isfinite(actual)
    return {"per_keypoint": result, "median": float(np.median(values)), "min": float(min(values)),
            "pooled": float(stats.spearmanr(expected[present], actual[present]).statistic)}


def spearman_interval(expected: np.ndarray, actual: np.ndarray, names: tuple[str, ...], draws: int = 200,
                      seed: int = 0) -> list[float]:
    """The 95 % bootstrap interval of the median per-keypoint Spearman, faces drawn with replacement: how far the
    figure could move on another draw of as many faces."""
    rng = np.random.default_rng(seed)
    medians = [spearman_per_keypoint(expected[i], actual[i], names)["median"]
               for i in (rng.integers(0, len(expected), len(expected)) for _ in range(draws))]
    return [float(v) for v in np.percentile(medians, [2.5, 97.5])]


def spearman_under_the_model(expected: np.ndarray, actual: np.ndarray, seed: int = 0) -> float:
    """The median per-keypoint Spearman if the errors were drawn from the head's Laplace model itself: a point's
    error varies around its expected value by about half of it, so a perfect estimate with this spread between
    faces ranks single points only this well."""
    draws = np.random.default_rng(seed).laplace(size=(*expected.shape, 2))
    simulated = expected * np.linalg.norm(draws, axis=-1) / LAPLACE_MEAN_DISTANCE
    present = np.isfinite(actual)
    return float(np.median([stats.spearmanr(expected[present[:, k], k], simulated[present[:, k], k]).statistic
                            for k in range(expected.shape[1]) if present[:, k].sum() > 10]))


def reliability(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> dict:
    """Mean actual against mean expected error in equal-count bins of the expected error."""
    present = np.isfinite(actual)
    e, a = expected[present], actual[present]
    order = np.argsort(e)
    chunks = np.array_split(order, bins)
    return {"expected": [float(e[c].mean()) for c in chunks], "actual": [float(a[c].mean()) for c in chunks],
            "ratio_actual_to_expected": float(a.mean() / e.mean())}


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half: the Mann-Whitney U over the pairs."""
    u = stats.mannwhitneyu(positive, negative, alternative="greater").statistic
    return float(u / (len(positive) * len(negative)))


def flagging(scores: np.ndarray, failed: np.ndarray, extra: np.ndarray | None = None) -> dict:
    """The threshold that flags at most ``FALSE_ALARMS`` of the good faces, and the failures it flags."""
    threshold = float(np.quantile(scores[~failed], 1 - FALSE_ALARMS, method="higher")) if (~failed).any() else float("inf")
    result = {"threshold": threshold, "failures": int(failed.sum()), "good": int((~failed).sum()),
              "failures_flagged": int((scores[failed] > threshold).sum()),
              "false_alarms": float((scores[~failed] > threshold).mean()) if (~failed).any() else 0.0}
    if failed.any() and (~failed).any():
        result["auc"] = roc_auc(scores[failed], scores[~failed])
    if extra is not None:
        result["false_faces"] = int(len(extra))
        result["false_faces_flagged"] = int((extra > threshold).sum())
    return result


def end_to_end(model, config, data_root: Path) -> dict:
    predictor = Predictor(model, config, make_detector("fast"), not_a_face_nme=None)  # the score on every face
    photos = [p for name in PHOTO_SOURCES
              for p in photo_eval.select_persons(photo_eval.read_annotated_photos(str(data_root / name)), "val")]
    records = photo_eval.run_pipeline(predictor, photos, progress=True)
    point_expected, point_actual, eye_distance, face_expected, face_actual, false_expected = [], [], [], [], [], []
    face_source = []
    outer_a, outer_b = OUTER_CORNERS[predictor.layout.name]
    for match in photo_eval.match_records(photos, records):
        for _, detection, predicted, truth, nme in match.found():  # the shipped model's 15 Kaggle points
            if not np.isfinite(nme):
                continue
            point_expected.append(np.array(list(detection["errors"].values())))
            point_actual.append(np.linalg.norm(predicted - truth, axis=1))
            eye_distance.append(np.linalg.norm(truth[outer_a] - truth[outer_b]))
            face_expected.append(detection["expected_nme"])
            face_actual.append(nme)
            face_source.append(match.photo.source)
        false_expected += [d["expected_nme"] for d in match.false_faces]
    point_expected, point_actual = np.array(point_expected), np.array(point_actual)
    face_size = np.repeat(np.array(eye_distance)[:, None], point_actual.shape[1], axis=1)
    face_expected, face_actual = np.array(face_expected), np.array(face_actual)
    return {
        "photos": len(photos), "faces_scored": len(face_actual),
        "spearman_points": spearman_per_keypoint(point_expected, point_actual, predictor.layout.names),
        "spearman_points_interval": spearman_interval(point_expected, point_actual, predictor.layout.names),
        "spearman_under_the_model": spearman_under_the_model(point_expected, point_actual),
        # Photo pixels rank big faces above small ones: how much of the figure is the face's size alone, and the
        # ranking left when both errors are taken in units of the face's outer-eye distance.
        "spearman_points_face_size_alone": spearman_per_keypoint(face_size, point_actual, predictor.layout.names),
        "spearman_points_per_eye_distance": spearman_per_keypoint(point_expected / face_size,
                                                                 point_actual / face_size, predictor.layout.names),
        # What a score of the whole face could reach at best: each point ranked by its face's actual RMS error.
        "spearman_points_face_error_known": spearman_per_keypoint(
            np.repeat(np.sqrt((point_actual**2).mean(axis=1, keepdims=True)), point_actual.shape[1], axis=1),
            point_actual, predictor.layout.names),
        # Within one source the faces' sizes and the markup are alike: what the head ranks there it knows of the face.
        "spearman_points_by_source": {
            source: {"faces": int(np.sum(np.array(face_source) == source)), **spearman_per_keypoint(
                point_expected[np.array(face_source) == source], point_actual[np.array(face_source) == source],
                predictor.layout.names)}
            for source in PHOTO_SOURCES},
        "spearman_faces": float(stats.spearmanr(face_expected, face_actual).statistic),
        "flagging": flagging(face_expected, face_actual > photo_eval.FAILURE_NME, np.array(false_expected)),
        "nme_mean": float(face_actual.mean()),
        "reliability_faces": reliability(face_expected[:, None], face_actual[:, None], bins=5),
    }


def aflw_hidden_points(model, config, val) -> dict:
    """Expected errors of aflw-21's hidden points against its visible ones, on label-fitted crops."""
    aflw = val.subset(np.flatnonzero(val.sources == "aflw-21"))
    points, expected = predict_with_errors(xla_forward(model), aflw.crop(config.margin).images)
    visible, hidden = ~np.isnan(aflw.keypoints).any(axis=-1), aflw.hidden
    return {"faces": len(aflw), "hidden_points": int(hidden.sum()), "visible_points": int(visible.sum()),
            "auc": roc_auc(expected[hidden], expected[visible]),
            "median_expected_px": {"hidden": float(np.median(expected[hidden])),
                                   "visible": float(np.median(expected[visible]))}}


def plot(curves: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    top = max(max(c["expected"] + c["actual"]) for c in curves.values()) * 1.1
    ax.plot([0, top], [0, top], color="grey", linestyle=":", label="perfect calibration")
    for label, c in curves.items():
        ax.plot(c["expected"], c["actual"], marker="o", label=label)
    ax.set(xlabel="expected error (frame px, bin mean)", ylabel="actual error (frame px, bin mean)",
           xlim=(0, top), ylim=(0, top), title="Per-keypoint expected error, validation persons")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="run directory (default: the shipped model)")
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--sources", nargs="+", default=None,
                        help="the sources whose validation persons to score (default: those the model trained on)")
    parser.set_defaults(synthetic=0)
    parser.add_argument("--results", type=Path, default=ROOT / "experiments" / "results")
    parser.add_argument("--figure", type=Path, default=ROOT / "experiments" / "figures" / "confidence_reliability.png")
    args = parser.parse_args()
    missing = [spec for spec in data_specs(args, args.sources or []) if not Path(spec).exists()]
    if missing:
        parser.error(f"--sources: {missing[0]}: no such file or folder")
    model, config = load_model(args.model)
    sources = args.sources or [Path(spec).name for spec in config.data]
    config = dataclasses.replace(config, data=data_specs(args, sources))
    dataset = load_training_data(config)
    _, val_index = split_dataset(dataset, config)
    val = dataset.subset(val_index)
    names = val.layout.names
    crops, curves = {}, {}
    for label, jitter in (("label-fitted crops", 0.0), ("jittered as in training", 1.0), ("misplaced (2x jitter)", 2.0)):
        expected, actual = crop_errors(model, config, val, jitter)
        nme = np.sqrt(np.nanmean(actual**2, axis=1)) / photo_eval.KAGGLE_OUTER_EYES_PX  # the frame's eye distance
        faces_failed = nme > photo_eval.FAILURE_NME
        crops[label] = {"spearman": spearman_per_keypoint(expected, actual, names),
                        "spearman_under_the_model": spearman_under_the_model(expected, actual),
                        "reliability": reliability(expected, actual),
                        "mean_actual_px": float(np.nanmean(actual)), "mean_expected_px": float(expected.mean()),
                        "flagging": flagging(np.sqrt((expected**2).mean(axis=1)), faces_failed)}
        curves[label] = crops[label]["reliability"]
    result = {
        "command": "python " + shlex.join(["experiments/confidence.py", *sys.argv[1:]]),
        "model": str(args.model or "shipped"),
        "validation_faces": len(val),
        "crops": crops,
        "aflw_hidden_points": aflw_hidden_points(model, config, val),
        "end_to_end": end_to_end(model, config, args.data_root),
    }
    write_analysis("confidence", result, args.results)
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    plot(curves, args.figure)
    print(f"wrote {args.figure}")


if __name__ == "__main__":
    run_main(main)
