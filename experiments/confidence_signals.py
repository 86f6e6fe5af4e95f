"""Can anything beside the error head rank the points' errors better? Signals of doubt measured end to end.

    python experiments/confidence_signals.py [--model RUN] [--jitters 6] [--refit-epochs 10]

The validation persons' photos go through `kpjax predict`'s pipeline as in experiments/confidence.py (fast
detector, 3 passes, every detection kept). Each found face's last crop, placed again from its keypoints, is then
predicted mirrored (flip disagreement: how far the mirrored prediction lands from the plain one), once more
(movement on a 4th pass) and under ``--jitters`` small random similarities (rotation +-8 degrees, zoom +-8 %,
shift +-4 px; spread: the points' mean distance from their mean), all in photo pixels. Per signal, and for the
head's expected error combined with each (sqrt(head^2 + c signal^2), the best c of a few), the median Spearman
per point against the actual error, as experiments/confidence.py reports it. Last, the head is refitted
``--refit-epochs`` on residuals of persons the keypoints never trained on (the validation persons of aflw-21 and
mtfl-5, whose photos are not scored here) and scored again: does a head that learnt from unseen faces' errors
rank better than one that learnt from the training faces'? Writes results/analysis/confidence-signals.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from kpjax.runtime import ensure_hugepage_malloc

ensure_hugepage_malloc(sys.argv)  # before JAX is imported: see kpjax/runtime.py

import numpy as np  # noqa: E402

from common import ROOT, data_specs, run_main, write_analysis  # noqa: E402
from confidence import PHOTO_SOURCES, end_to_end, spearman_per_keypoint  # noqa: E402
from error_likelihood import fit_head  # noqa: E402

from kpjax import photo_eval  # noqa: E402
from kpjax.checkpoint import load_model  # noqa: E402
from kpjax.detect import make_detector  # noqa: E402
from kpjax.image import compose_affine, mirror_matrix, read_image  # noqa: E402
from kpjax.inference import Predictor, similarity_crop  # noqa: E402
from kpjax.train import load_training_data, split_dataset  # noqa: E402

WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)  # c in sqrt(head^2 + c signal^2)


def jitter_matrices(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` 2x3 similarities about the frame's centre, drawn once and applied to every face."""
    rng = np.random.default_rng(seed)
    centre = np.full(2, (size - 1) / 2)
    matrices = []
    for _ in range(count):
        angle, zoom = np.radians(rng.uniform(-8, 8)), np.exp(rng.uniform(-0.08, 0.08))
        turn = zoom * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        shift = centre - turn @ centre + rng.uniform(-4, 4, 2)
        matrices.append(np.hstack([turn, shift[:, None]]))
    return matrices


def signals(predictor: Predictor, photos: list, records: list[dict], jitters: int) -> dict[str, np.ndarray]:
    """Per found face and point (N, K): the actual error, the head's expected error and each signal, photo px."""
    size, swap = predictor.config.size, list(predictor.layout.flip_permutation)
    variants = [np.eye(2, 3), mirror_matrix(size), *jitter_matrices(jitters, size)]
    rows: dict[str, list] = {name: [] for name in ("actual", "head", "flip disagreement", "4th-pass movement",
                                                   "spread over jittered crops")}
    for match in photo_eval.match_records(photos, records):
        found = [f for f in match.found() if np.isfinite(f[4])]
        if not found:
            continue
        image = read_image(match.photo.image)
        crops = [(image, compose_affine(v, similarity_crop(predicted, predictor.layout.name, size)))
                 for _, _, predicted, _, _ in found for v in variants]
        placed = [points for points, _ in predictor.placed_keypoints(crops)]
        for j, (_, detection, predicted, truth, _) in enumerate(found):
            plain, mirrored, *jittered = placed[j * len(variants):(j + 1) * len(variants)]
            rows["actual"].append(np.linalg.norm(predicted - truth, axis=1))
            rows["head"].append(np.array(list(detection["errors"].values())))
            rows["flip disagreement"].append(np.linalg.norm(plain - mirrored[swap], axis=1))
            rows["4th-pass movement"].append(np.linalg.norm(plain - predicted, axis=1))
            jittered = np.stack(jittered)
            rows["spread over jittered crops"].append(np.linalg.norm(jittered - jittered.mean(0), axis=-1).mean(0))
    return {name: np.array(values) for name, values in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="run directory (default: the shipped model)")
    parser.add_argument("--jitters", type=int, default=6)
    parser.add_argument("--refit-epochs", type=int, default=10)
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.set_defaults(synthetic=0)
    parser.add_argument("--results", type=Path, default=ROOT / "experiments" / "results")
    args = parser.parse_args()
    model, config = load_model(args.model)
    names = config.layout.names
    predictor = Predictor(model, config, make_detector("fast"), not_a_face_nme=None)
    photos = [p for name in PHOTO_SOURCES
              for p in photo_eval.select_persons(photo_eval.read_annotated_photos(str(args.data_root / name)), "val")]
    measured = signals(predictor, photos, photo_eval.run_pipeline(predictor, photos), args.jitters)
    actual, head = measured.pop("actual"), measured.pop("head")
    result = {"command": "python " + shlex.join(["experiments/confidence_signals.py", *sys.argv[1:]]),
              "faces": len(actual), "head": spearman_per_keypoint(head, actual, names)["median"], "signals": {}}
    for name, signal in measured.items():
        combined = {c: spearman_per_keypoint(np.sqrt(head**2 + c * signal**2), actual, names)["median"]
                    for c in WEIGHTS}
        best = max(combined, key=combined.get)
        result["signals"][name] = {"alone": spearman_per_keypoint(signal, actual, names)["median"],
                                   "with_the_head": combined[best], "weight": best}
        print(f"{name}: alone {result['signals'][name]['alone']:.3f}, with the head {combined[best]:.3f}", flush=True)
    config = dataclasses.replace(config, data=data_specs(args, [Path(s).name for s in config.data]))
    dataset = load_training_data(config)
    val = dataset.subset(split_dataset(dataset, config)[1])
    unseen = val.subset(np.flatnonzero(np.isin(val.sources, ["aflw-21", "mtfl-5"])))
    refit = fit_head(model, config, unseen, "laplace", args.refit_epochs, hidden=True, warm=True, learning_rate=3e-4)
    scored = end_to_end(refit, config, args.data_root)
    result["head_refitted_on_unseen_persons"] = {
        "faces": len(unseen), "epochs": args.refit_epochs, "spearman_points": scored["spearman_points"]["median"],
        "pooled": scored["spearman_points"]["pooled"],
        "actual_to_expected_nme": scored["reliability_faces"]["ratio_actual_to_expected"]}
    write_analysis("confidence-signals", result, args.results)


if __name__ == "__main__":
    run_main(main)
