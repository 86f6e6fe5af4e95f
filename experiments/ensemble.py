"""Does ensembling pay? Average the (flip-TTA) predictions of trained models and score the mean
on the same fixed validation faces as every recipe.

    python experiments/ensemble.py runs/best runs/best-seed1 [runs/sweep-heatmap-wide-partial]

Writes results/analysis/ensemble-A+B.json: each member alone and the ensemble. An ensemble costs
the training time of all its members.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import ROOT, evaluation_sets, run_main, write_analysis

from kpjax.checkpoint import load_model
from kpjax.evaluate import keypoint_metrics
from kpjax.inference import predict_model


def member_predictions(models: list, images: np.ndarray, flip_permutation: tuple[int, ...]) -> np.ndarray:
    """(models, N, 2K) flip-TTA predictions, each model run once; their mean is the ensemble's."""
    return np.stack([predict_model(m, images, flip_permutation=flip_permutation) for m in models])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=Path, nargs="+", help="run directories (or kpjax/weights/default)")
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="score on N drawn faces instead of real data (a smoke test)")
    parser.add_argument("--results", type=Path, default=ROOT / "experiments" / "results")
    args = parser.parse_args()
    loaded = [load_model(path) for path in args.models]
    models = [model for model, _ in loaded]
    sets = evaluation_sets(loaded[0][1], argparse.Namespace(data_root=args.data_root, synthetic=args.synthetic))
    members, mean = {str(path): {} for path in args.models}, {}
    for label, faces in sets.items():
        predictions = member_predictions(models, faces.images, faces.layout.flip_permutation)
        for path, prediction in zip(args.models, predictions):
            members[str(path)][label] = keypoint_metrics(prediction, faces)
        mean[label] = keypoint_metrics(predictions.mean(axis=0), faces)
    for name, evaluations in [*members.items(), ("ensemble", mean)]:
        print(f"{name}: " + ", ".join(f"{label} {e['rmse_px']:.3f}px" for label, e in evaluations.items()))
    record = {"command": "python experiments/ensemble.py " + " ".join(map(str, args.models)),
              "models": list(map(str, args.models)), "flip_tta": True,
              "members": members, "ensemble": mean}
    write_analysis("ensemble-" + "+".join(path.name for path in args.models), record, args.results)


if __name__ == "__main__":
    run_main(main)
