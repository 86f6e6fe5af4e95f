"""Does ensembling pay? Average the (flip-TTA) predictions of trained models and score the mean
on the same fixed validation faces as every recipe.

    python experiments/ensemble.py runs/best runs/best-seed1 [runs/sweep-heatmap-wide-partial]

Writes results/analysis/ensemble-A+B.json: each member alone and the ensemble. An ensemble costs
the training time of all its members.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from common import ROOT, evaluation_sets, write_analysis

from kpjax.checkpoint import load_model
from kpjax.errors import KpjaxError
from kpjax.evaluate import keypoint_metrics, predict_model


def ensemble_predictions(models: list, images: np.ndarray, flip_permutation: tuple[int, ...]) -> np.ndarray:
    return np.mean([predict_model(m, images, flip_permutation=flip_permutation) for m in models], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=Path, nargs="+", help="run directories (or kpjax/weights/default)")
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="score on N drawn faces instead of real data (a smoke test)")
    parser.add_argument("--results", type=Path, default=ROOT / "experiments" / "results")
    args = parser.parse_args()
    try:
        loaded = [load_model(path) for path in args.models]
    except KpjaxError as error:
        sys.exit(f"error: {error}")
    models, configs = [m for m, _ in loaded], [c for _, c in loaded]
    sets = evaluation_sets(configs[0], argparse.Namespace(data_root=args.data_root, synthetic=args.synthetic))
    members = {str(path): {label: keypoint_metrics(ensemble_predictions([model], faces.images,
                                                                        faces.layout.flip_permutation), faces)
                           for label, faces in sets.items()}
               for path, model in zip(args.models, models)}
    mean = {label: keypoint_metrics(ensemble_predictions(models, faces.images, faces.layout.flip_permutation), faces)
            for label, faces in sets.items()}
    for name, evaluations in [*members.items(), ("ensemble", mean)]:
        print(f"{name}: " + ", ".join(f"{label} {e['rmse_px']:.3f}px" for label, e in evaluations.items()))
    record = {"command": "python experiments/ensemble.py " + " ".join(map(str, args.models)),
              "models": list(map(str, args.models)), "flip_tta": True,
              "members": members, "ensemble": mean}
    write_analysis("ensemble-" + "+".join(path.name for path in args.models), record, args.results)


if __name__ == "__main__":
    main()
