"""Fine-tuning the shipped model on a few hundred faces of persons it never saw (`kpjax train --init default`),
against the same network trained from scratch on them and against the shipped model as it is.

    python experiments/fine_tune.py [--sources fgnet-68 helen-68-train youtube-faces-68] [--epochs 40] [--lr 2e-4]

The faces: each source's persons that the shipped model held out for validation (its own split), split again
by person, 80/20, as `kpjax train` splits with another split seed (1: kpjax's split draws each person's side from
the seed and the person alone, so seed 0 would hold them all out again): the data a user brings, marked in their
own labels' convention.
Each run trains on the 80 % with the shipped recipe (augmentation, context margin, cosine schedule), from the
shipped weights at --lr or from scratch at the recipe's rate; the figures are those `kpjax train` reports on the
20 % (label-fitted crops: RMSE px in the 96-px frame, NME), its best epoch, and the wall time of the run.
Writes results/analysis/fine-tune.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path

from kpjax.runtime import ensure_hugepage_malloc

ensure_hugepage_malloc(sys.argv)  # before JAX is imported: see kpjax/runtime.py

import numpy as np  # noqa: E402

from common import ROOT, data_specs, run_main, write_analysis  # noqa: E402

from kpjax.checkpoint import load_model  # noqa: E402
from kpjax.evaluate import evaluate_model  # noqa: E402
from kpjax.train import load_training_data, split_dataset, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", nargs="+", default=["fgnet-68", "helen-68-train", "youtube-faces-68"])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=2e-4, help="the fine-tune's peak learning rate")
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--run-root", type=Path, default=ROOT / "runs" / "fine-tune")
    parser.add_argument("--results", type=Path, default=ROOT / "experiments" / "results")
    parser.set_defaults(synthetic=0)
    args = parser.parse_args()
    there = [path for source in args.sources for path in (args.run_root / f"{source}-init", args.run_root / f"{source}-scratch")
             if path.exists()]
    if there:
        parser.error(f"{there[0]}: already exists; remove this script's earlier runs or give another --run-root")
    shipped, recipe = load_model(None)
    recipe = dataclasses.replace(recipe, data=data_specs(args, [Path(spec).name for spec in recipe.data]))
    dataset = load_training_data(recipe)
    held_out = dataset.subset(split_dataset(dataset, recipe)[1])
    result = {"command": "python " + shlex.join(["experiments/fine_tune.py", *sys.argv[1:]]), "sources": {}}
    for source in args.sources:
        own = held_out.subset(np.flatnonzero(held_out.sources == source))
        own_recipe = dataclasses.replace(recipe, data=[], epochs=args.epochs, split_seed=1)
        runs = {"fine-tuned (--init default)": dataclasses.replace(own_recipe, init="default", learning_rate=args.lr),
                "from scratch": own_recipe}
        _, val_index = split_dataset(own, runs["from scratch"])
        as_is = evaluate_model(shipped, own.subset(val_index).crop(recipe.margin))
        figures = {"faces": {"train": len(own) - len(val_index), "val": len(val_index)},
                   "shipped as is": {"val_rmse_px": as_is["rmse_px"], "val_nme": as_is["nme"]}}
        for name, config in runs.items():
            run_dir = args.run_root / f"{source}-{'init' if config.init else 'scratch'}"
            started = time.perf_counter()
            trained = train(config, run_dir, dataset=own, log=lambda _: None)
            figures[name] = {"val_rmse_px": trained.best_val["val_rmse_px"], "val_nme": trained.best_val["val_nme"],
                             "best_epoch": trained.best_epoch, "seconds": round(time.perf_counter() - started, 1)}
        result["sources"][source] = figures
        print(source, figures, flush=True)
    write_analysis("fine-tune", result, args.results)


if __name__ == "__main__":
    run_main(main)
