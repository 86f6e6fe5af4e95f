"""A calibration that depends on the face's shape: is the error the shipped pipeline leaves the network's, or the
sources' ways of marking the points?

    python experiments/shape_calibration.py [--model RUN] [--ridge 0.1 1 10]

The photos of helen-68-train, fgnet-68 and youtube-faces-68 (all three marked in iBUG's 68 points) go through
`kpjax predict`'s pipeline (fast detector, 3 passes), training and validation persons apart. In each found face's
frame (the similarity that maps its predicted points onto the mean face, as refinement crops are cut), a ridge
regression maps the predicted points to their residuals, fitted on the training persons of the two sources the
headline scores, or of all three, and moves the validation persons' points by it. `kpjax calibrate`'s offset is
the constant term alone. A correction the network needs lowers every source's error; one that lowers some
sources' and raises another's follows their conventions, which no model of the photo can tell apart.
Writes results/analysis/shape-calibration.json.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
from pathlib import Path

from kpjax.runtime import ensure_hugepage_malloc

ensure_hugepage_malloc(sys.argv)  # before JAX is imported: see kpjax/runtime.py

import numpy as np  # noqa: E402

from common import ROOT, run_main, write_analysis  # noqa: E402
from photos_end_to_end import PHOTO_SOURCES  # noqa: E402

from kpjax import photo_eval  # noqa: E402
from kpjax.checkpoint import load_model  # noqa: E402
from kpjax.detect import make_detector  # noqa: E402
from kpjax.image import apply_affine, invert_affine  # noqa: E402
from kpjax.inference import Predictor, similarity_crop  # noqa: E402

SOURCES = (*PHOTO_SOURCES.values(), "youtube-faces-68")
FITS = {"helen-68-train + fgnet-68": tuple(PHOTO_SOURCES.values()), "all three": SOURCES}


def frames(photos: list, records: list[dict], size: int) -> tuple[np.ndarray, np.ndarray]:
    """The found faces' predicted and annotated points, (faces, K, 2) each, in each face's own frame."""
    predicted, annotated = [], []
    for match in photo_eval.match_records(photos, records):
        for _, _, points, truth, _ in match.found():
            to_frame = similarity_crop(points, "kaggle", size)
            predicted.append(apply_affine(to_frame, points))
            annotated.append(apply_affine(to_frame, truth))
    return np.array(predicted), np.array(annotated)


def features(predicted: np.ndarray, size: int) -> np.ndarray:
    """The frame's points over its size, and a constant: the term `kpjax calibrate`'s offset is alone."""
    return np.concatenate([predicted.reshape(len(predicted), -1) / size, np.ones((len(predicted), 1))], axis=1)


def fit(predicted: np.ndarray, annotated: np.ndarray, size: int, ridge: float) -> np.ndarray:
    """Weights from the frame's points (and a constant) to their residuals, by ridge regression."""
    complete = np.isfinite(annotated).all(axis=(1, 2))
    x = features(predicted[complete], size)
    y = (annotated - predicted)[complete].reshape(complete.sum(), -1)
    return np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)


def corrected(records: list[dict], weights: np.ndarray, size: int) -> list[dict]:
    """``records`` with every face's points moved by the correction, in its frame, and mapped back."""
    records = copy.deepcopy(records)
    for face in (face for record in records for face in record.get("faces", [])):
        points = np.array(list(face["keypoints"].values()), np.float64)
        to_frame = similarity_crop(points, "kaggle", size)
        in_frame = apply_affine(to_frame, points)
        correction = (features(in_frame[None], size) @ weights).reshape(-1, 2)
        moved = apply_affine(invert_affine(to_frame), in_frame + correction)
        face["keypoints"] = {name: [float(x), float(y)] for name, (x, y) in zip(face["keypoints"], moved)}
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="run directory (default: the shipped model)")
    parser.add_argument("--ridge", type=float, nargs="+", default=[0.1, 1.0, 10.0], help="ridge penalties to try")
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--results", type=Path, default=ROOT / "experiments" / "results")
    args = parser.parse_args()
    missing = [args.data_root / source for source in SOURCES if not (args.data_root / source).exists()]
    if missing:
        parser.error(f"--data-root: {missing[0]}: no such file or folder")
    model, config = load_model(args.model)
    if config.keypoints != "kaggle":
        parser.error(f"--model: a model of the 15 Kaggle points, not {config.keypoints}")
    predictor = Predictor(model, config, make_detector("fast"), batch_size=1)
    photos, records, train_frames = {}, {}, {}
    for source in SOURCES:
        every = photo_eval.read_annotated_photos(str(args.data_root / source))
        chosen = {side: photo_eval.select_persons(every, side) for side in ("train", "val")}
        photos[source] = chosen["val"]
        records[source] = photo_eval.run_pipeline(predictor, chosen["val"])
        train_frames[source] = frames(chosen["train"], photo_eval.run_pipeline(predictor, chosen["train"]),
                                      config.size)
        print(f"{source}: {len(train_frames[source][0])} training faces found", flush=True)

    def scored(moved: dict) -> dict:
        headline = [p for s in PHOTO_SOURCES.values() for p in photos[s]]
        return {"headline": photo_eval.score(headline, [r for s in PHOTO_SOURCES.values() for r in moved[s]])
                ["nme_mean"], **{s: photo_eval.score(photos[s], moved[s])["nme_mean"] for s in SOURCES}}

    rows = {"as shipped": scored(records)}
    for name, sources in FITS.items():
        predicted, annotated = (np.concatenate([train_frames[s][i] for s in sources]) for i in (0, 1))
        for ridge in args.ridge:
            weights = fit(predicted, annotated, config.size, ridge)
            rows[f"fitted on {name}, ridge {ridge:g}"] = scored(
                {s: corrected(records[s], weights, config.size) for s in SOURCES})
    for label, row in rows.items():
        print(label, " ".join(f"{key} {value:.2%}" for key, value in row.items()), flush=True)
    write_analysis("shape-calibration", {
        "command": "python " + shlex.join(["experiments/shape_calibration.py", *sys.argv[1:]]),
        "model": str(args.model or "shipped"), "rows": rows,
    }, args.results)


if __name__ == "__main__":
    run_main(main)
