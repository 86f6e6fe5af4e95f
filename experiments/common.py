"""Shared by the experiment scripts: train a recipe (a configs/ file, as ``kpjax train --config`` runs it),
evaluate its best checkpoint on the fixed validation split, and record every figure (with the command that
produced it) as JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import sys
from pathlib import Path

from kpjax.runtime import ensure_hugepage_malloc

ensure_hugepage_malloc(sys.argv)  # before JAX is imported: see kpjax/runtime.py

import jax  # noqa: E402
import numpy as np  # noqa: E402

from kpjax.checkpoint import load_model  # noqa: E402
from kpjax.config import TrainConfig, load_config  # noqa: E402
from kpjax.errors import KpjaxError  # noqa: E402
from kpjax.evaluate import evaluate_model  # noqa: E402
from kpjax.run_writer import read_history  # noqa: E402
from kpjax.train import TrainingInterrupted, TrainResult, load_training_data, split_dataset, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SOURCES_68 = ("youtube-faces-68", "fgnet-68", "helen-68-train")
SOURCES_PARTIAL = ("mtfl-5",)
HEADLINE = "68-point sources, complete"  # the evaluation set every goal is measured on


def parse_args(description: str, variants: tuple[str, ...] = (), model_option: bool = False,
               recipes: tuple[str, ...] = ()) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if recipes:
        parser.add_argument("--recipe", choices=recipes, default=recipes[0],
                            help=f"configs/RECIPE.py to train (default {recipes[0]})")
    if model_option:
        parser.add_argument("--model", type=Path, default=None,
                            help="run directory of the model to compare with (default: the shipped model)")
    if variants:
        parser.add_argument("--variants", nargs="+", choices=variants, default=list(variants), metavar="NAME",
                            help=f"which to run, in order (default all: {' '.join(variants)})")
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data",
                        help="folder holding the real face datasets, or each as SOURCE.npz from kpjax data convert")
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="use N drawn faces instead of real data (a smoke test)")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epoch count")
    parser.add_argument("--seed", type=int, default=0,
                        help="initialisation and training-order seed (the run is named NAME-seedS when not 0); the "
                             "validation split stays that of seed 0")
    parser.add_argument("--split", choices=("group", "row"), default="group",
                        help="validation split: by person (default) or by row")
    parser.add_argument("--run-root", type=Path, default=ROOT / "runs", help="where run directories go")
    parser.add_argument("--results", type=Path, default=ROOT / "experiments" / "results",
                        help="where result JSON files go")
    parser.add_argument("--score-only", action="store_true",
                        help="score the finished run in --run-root as it is, without training (a run trained on "
                             "another machine, e.g. a GPU)")
    parser.add_argument("--trained-on", default="another machine",
                        help="with --score-only: the device the run trained on, for the record")
    return parser.parse_args()


def run_main(main) -> None:
    """Run a script's ``main`` as the CLI runs a command: a user's mistake (a missing source or run, a bad setting)
    ends in its one-line error and exit status 2, not a traceback."""
    try:
        main()
    except KpjaxError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def data_specs(args: argparse.Namespace, sources: tuple[str, ...]) -> list[str]:
    """Each source's folder, or its converted SOURCE.npz (how the faces travel to a machine without them)."""
    if args.synthetic:
        return [f"synthetic:{args.synthetic}"]
    converted = {source: args.data_root / f"{source}.npz" for source in sources}
    return [str(converted[s] if converted[s].is_file() else args.data_root / s) for s in sources]


def recipe_config(name: str, args: argparse.Namespace) -> TrainConfig:
    """configs/NAME.py's recipe, loaded as ``kpjax train --config`` loads it, on its sources under --data-root
    (or --synthetic's faces) and with --split."""
    config = load_config(CONFIGS / f"{name}.py")
    sources = tuple(Path(spec).name for spec in config.data)
    return dataclasses.replace(config, data=data_specs(args, sources), split=args.split)


def evaluation_sets(config: TrainConfig, args: argparse.Namespace) -> dict:
    """The fixed validation faces every recipe is scored on, whatever it trained on.

    The split depends only on (seed, person), so these are the same faces for
    every recipe: the complete 68-point faces (the headline row), Helen alone
    (faces in the wild), and MTFL's 5-point faces (partial labels, another source).
    """
    specs = data_specs(args, SOURCES_68 + SOURCES_PARTIAL)
    present = specs if args.synthetic else [spec for spec in specs if Path(spec).exists()]
    everything = dataclasses.replace(config, data=present, complete_only=False, margin=0)
    dataset = load_training_data(everything)
    _, val_index = split_dataset(dataset, everything)
    val = dataset.subset(val_index)
    if args.synthetic:
        return {HEADLINE: val}
    sets = {
        HEADLINE: val.subset(np.flatnonzero(np.isin(val.sources, SOURCES_68))).complete_only(),
        "helen-68-train (in the wild)": val.subset(np.flatnonzero(val.sources == "helen-68-train")),
        "mtfl-5 (5 points)": val.subset(np.flatnonzero(val.sources == "mtfl-5")),
    }
    return {label: faces for label, faces in sets.items() if len(faces)}  # a source not given has no row


def run_recipe(name: str, config: TrainConfig, args: argparse.Namespace, *, flip_tta: bool = False) -> dict:
    """Train ``config`` (resuming an unfinished run) and write ``results/NAME.json``."""
    if args.epochs:
        config = dataclasses.replace(config, epochs=args.epochs)
    if args.seed:
        config = dataclasses.replace(config, seed=args.seed, split_seed=config.seed)
        name = f"{name}-seed{args.seed}"
    run_dir = args.run_root / name
    if args.score_only:
        history = read_history(run_dir / "metrics.jsonl")
        if not history:
            print(f"error: --score-only: {run_dir} holds no trained epochs", file=sys.stderr)
            sys.exit(2)
        result = TrainResult.from_history(run_dir, history)
    else:
        try:
            result = train(config, run_dir, resume=(run_dir / "checkpoints" / "latest").exists())
        except TrainingInterrupted as stopped:
            sys.exit(f"{stopped}\n(or rerun this script, which resumes it)")
    model, _ = load_model(run_dir)
    evaluations = {label: evaluate_model(model, faces, flip_tta=flip_tta)
                   for label, faces in evaluation_sets(config, args).items()}
    history = result.history
    best = result.best_val
    record = {
        "name": name,
        "command": "python " + shlex.join([str(Path(sys.argv[0]).relative_to(ROOT))
                                          if Path(sys.argv[0]).is_absolute() else sys.argv[0], *sys.argv[1:]]),
        "config": dataclasses.asdict(config),
        "flip_tta": flip_tta,
        "best_epoch": result.best_epoch,
        "train_mse": best["train_mse"],
        "train_mae": best["train_mae"],
        "epochs_run": len(history),
        "wall_seconds": sum(h["seconds"] for h in history),  # training and validation, resumed parts included
        "train_images_per_second": statistics.median(h["images_per_second"] for h in history),
        "params": int(sum(np.size(x) for x in _param_leaves(model))),
        "device": args.trained_on if args.score_only else jax.devices()[0].device_kind,
        "evaluations": evaluations,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{name}.json").write_text(json.dumps(record, indent=2))
    headline = evaluations[HEADLINE]
    print(f"{name}: val rmse {headline['rmse_px']:.3f}px mse {headline['mse']:.3e} mae {headline['mae']:.4f} "
          f"(best epoch {result.best_epoch}, {record['wall_seconds'] / 60:.1f} min)")
    return record


def write_analysis(name: str, record: dict, results: Path) -> Path:
    """An analysis's figures (not a training recipe's) as results/analysis/NAME.json, for report.py."""
    out = results / "analysis" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return out


def _param_leaves(model):
    from flax import nnx

    return jax.tree.leaves(nnx.state(model, nnx.Param))
