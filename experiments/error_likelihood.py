"""Which likelihood calibrates the error head better, Laplace or Gaussian? Each is fitted afresh to a trained
model's frozen features, and scored on its validation faces beside the head that trained with the model.

    python experiments/error_likelihood.py --model runs/photo_wide [--epochs 6] [--jitter 1 2 3]
        [--hidden [--hidden-only] [--save runs/photo_wide-hidden]]

The head learns from the keypoints' stop-gradient residuals either way (kpjax/train_step.error_nll is the
Laplace one kpjax trains with); fitting it afterwards on the finished model isolates the likelihood from
the moving target a joint run gives it. ``--jitter 2`` also fits a Laplace head on crops jittered twice as far
as the keypoints were trained on, so that it meets misplaced crops. ``--hidden`` refits the head trained with
the model on the points aflw-21's annotators saw hidden as well (a model trained before ``Dataset.hidden``
existed never met them), and ``--save`` keeps that model as a run to ship. Scored as experiments/confidence.py scores
(its functions): on the validation persons' crops jittered as in training and misplaced by twice that,
Spearman between expected and actual error per keypoint (median) and pooled, the ratio of the mean actual to
the mean expected error (1 is calibrated) and the failures the face's score flags at 10 % false alarms; end
to end on the validation photos; and how aflw-21's hidden points rank against its visible ones. Writes results/analysis/error-likelihood.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
import sys
from pathlib import Path

from kpjax.runtime import ensure_hugepage_malloc

ensure_hugepage_malloc(sys.argv)  # before JAX is imported: see kpjax/runtime.py

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from common import ROOT, data_specs, run_main, write_analysis  # noqa: E402
from confidence import (aflw_hidden_points, crop_errors, end_to_end, flagging, reliability,  # noqa: E402
                        spearman_per_keypoint)

from kpjax import photo_eval  # noqa: E402
from kpjax.augment import make_augmentation  # noqa: E402
from kpjax.checkpoint import RunCheckpoints, best_progress  # noqa: E402
from kpjax.checkpoint import load_model  # noqa: E402
from kpjax.config import TrainConfig  # noqa: E402
from kpjax.models import create_model, to_input  # noqa: E402
from kpjax.train import load_training_data, split_dataset  # noqa: E402
from kpjax.train_step import error_nll, init_state, make_optimizer, take_batch  # noqa: E402

HEAD = nnx.All(nnx.Param, nnx.PathContains("error_head"))
HIDDEN_FIT = "trained with the model, refitted with the hidden points (laplace)"


def gaussian_nll(log_error, predictions, targets, mask, size, hidden=None):
    """The isotropic Gaussian whose mean distance is ``exp(log_error)``: std = mean / sqrt(pi / 2); visible
    points only."""
    if hidden is not None:
        raise ValueError("the Gaussian likelihood has no term for hidden points")
    residual = jax.lax.stop_gradient(predictions - targets) * (size / 2)
    present = mask[:, 0::2] & mask[:, 1::2]
    log_std = log_error - 0.5 * jnp.log(jnp.pi / 2)
    nll = (residual[:, 0::2] ** 2 + residual[:, 1::2] ** 2) / 2 * jnp.exp(-2 * log_std) + 2 * log_std
    return jnp.where(present, nll, 0.0).sum() / jnp.maximum(present.sum(), 1)


LIKELIHOODS = {"laplace": error_nll, "gaussian": gaussian_nll}


def fit_head(model, config, train_set, likelihood, epochs: int, jitter: float = 1.0, seed: int = 0,
             hidden: bool = False, warm: bool = False, learning_rate: float = 1e-3):
    """``model`` with its error head fitted to its frozen keypoints under ``likelihood``, on crops jittered by
    ``jitter`` times the recipe's rotation, zoom and shift: a head that has met misplaced crops may know them.
    ``hidden`` adds the points the annotators saw hidden (Laplace only: ``error_nll``'s censored term);
    ``warm`` starts from the head trained with the model, not a fresh one."""
    fresh = create_model(config.model, num_outputs=2 * train_set.layout.num_keypoints, size=config.size,
                         channels=train_set.channels, seed=seed + 1, error_head=True)
    graphdef, trained, rest = nnx.split(model, HEAD, ...)
    head = jax.tree.map(jnp.array, trained) if warm else nnx.split(fresh, HEAD, ...)[1]
    steps = len(train_set) // config.batch_size
    tx = optax.adam(optax.cosine_decay_schedule(learning_rate, epochs * steps))
    opt_state = tx.init(head)
    augment = make_augmentation(dataclasses.replace(config, rotation=jitter * config.rotation,
                                                    scale=jitter * config.scale, shift=jitter * config.shift),
                                train_set.layout)
    nll = LIKELIHOODS[likelihood]

    @jax.jit
    def step(head, opt_state, batch, key):
        batch = augment(batch, key)

        def loss(head):
            points, log_error = nnx.merge(graphdef, head, rest)(to_input(batch["images"]), with_error=True)
            return nll(log_error, points, batch["targets"], batch["mask"], config.size, batch.get("hidden"))

        value, grads = jax.value_and_grad(loss)(head)
        updates, opt_state = tx.update(grads, opt_state, head)
        return optax.apply_updates(head, updates), opt_state, value

    data = {"images": jnp.asarray(train_set.images), "targets": jnp.asarray(train_set.targets(config.margin)),
            "mask": jnp.asarray(train_set.mask)}
    if hidden:
        data["hidden"] = jnp.asarray(train_set.hidden)
    key = jax.random.key(seed)
    for epoch in range(epochs):
        order = jax.random.permutation(jax.random.fold_in(key, epoch), len(train_set))
        total = 0.0
        for i in range(steps):
            batch = take_batch(data, order, jnp.asarray(i), config.batch_size)
            head, opt_state, value = step(head, opt_state, batch, jax.random.fold_in(key, 1000 * epoch + i))
            total += float(value)
        print(f"{likelihood} epoch {epoch + 1}/{epochs}: nll {total / steps:.3f}", flush=True)
    return nnx.merge(graphdef, head, rest)


def save_run(model, source: Path, destination: Path, record: dict) -> None:
    """``model`` as a run directory to ship: ``source``'s files and its best checkpoint's step and progress with
    ``model``'s weights and a fresh optimizer state (a run trained on a GPU comes back without one), plus
    ``refit.json`` saying how the head was refitted. Written beside ``destination`` and renamed into place whole,
    so a kill leaves no half run."""
    partial = destination.with_name(f"{destination.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)  # what an earlier, killed --save left
    shutil.copytree(source, partial, ignore=shutil.ignore_patterns("checkpoints"))
    _, state = init_state(model, make_optimizer(TrainConfig.load(source), steps_per_epoch=1))
    step, progress = best_progress(source)
    checkpoints = RunCheckpoints(partial)
    checkpoints.save("best", step, state, progress)
    checkpoints.close()
    (partial / "refit.json").write_text(json.dumps(record, indent=2) + "\n")
    partial.rename(destination)


def scores(model, config, val, data_root: Path) -> dict:
    """Calibration on the validation crops as jittered in training and misplaced by twice that, and end to end."""
    result = {}
    for label, jitter in (("jittered", 1.0), ("misplaced", 2.0)):
        expected, actual = crop_errors(model, config, val, jitter=jitter)
        nme = np.sqrt(np.nanmean(actual**2, axis=1)) / photo_eval.KAGGLE_OUTER_EYES_PX
        result[label] = {"spearman": spearman_per_keypoint(expected, actual, val.layout.names),
                         "reliability": reliability(expected, actual),
                         "flagging": flagging(np.sqrt((expected**2).mean(axis=1)), nme > photo_eval.FAILURE_NME)}
    result["end_to_end"] = end_to_end(model, config, data_root)
    if (val.sources == "aflw-21").any():
        result["aflw_hidden_points"] = aflw_hidden_points(model, config, val)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="run directory of a model with an error head")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--jitter", type=float, nargs="+", default=[1.0],
                        help="fit the Laplace head on crops jittered this many times the recipe's jitter")
    parser.add_argument("--hidden", action="store_true",
                        help="also refit the trained head with the hidden points (train_step.error_nll's censored "
                             "term), from where it is, at a learning rate of 3e-4 (a fresh head's: 1e-3)")
    parser.add_argument("--hidden-only", action="store_true",
                        help="with --hidden: refit that head alone, without the likelihoods compared (to ship a model)")
    parser.add_argument("--save", type=Path, default=None,
                        help="with --hidden: write the model with that head as this run directory")
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.set_defaults(synthetic=0)
    parser.add_argument("--results", type=Path, default=ROOT / "experiments" / "results")
    args = parser.parse_args()
    if args.save and not args.hidden:
        parser.error("--save keeps the head that --hidden refits: add --hidden")
    if args.hidden_only and not args.hidden:
        parser.error("--hidden-only refits the head that --hidden refits: add --hidden")
    if args.save and args.save.exists():
        parser.error(f"--save {args.save}: already exists; name a new run directory")
    model, config = load_model(args.model)
    config = dataclasses.replace(config, data=data_specs(args, [Path(s).name for s in config.data]))
    dataset = load_training_data(config)
    train_index, val_index = split_dataset(dataset, config)
    train_set, val = dataset.subset(train_index), dataset.subset(val_index)
    result = {"command": "python " + shlex.join(["experiments/error_likelihood.py", *sys.argv[1:]]),
              "trained with the model (laplace)": scores(model, config, val, args.data_root)}
    fits = [] if args.hidden_only else [("gaussian", 1.0)] + [("laplace", jitter) for jitter in args.jitter]
    for likelihood, jitter in fits:
        label = f"fitted afterwards ({likelihood}" + (f", {jitter:g}x jitter)" if jitter != 1.0 else ")")
        result[label] = scores(fit_head(model, config, train_set, likelihood, args.epochs, jitter), config, val,
                               args.data_root)
    if args.hidden:
        refit = fit_head(model, config, train_set, "laplace", args.epochs, hidden=True, warm=True,
                         learning_rate=3e-4)
        result[HIDDEN_FIT] = scores(refit, config, val, args.data_root)
        if args.save:
            save_run(refit, args.model, args.save, {"command": result["command"], "head": HIDDEN_FIT,
                                                    "epochs": args.epochs, "scores": result[HIDDEN_FIT]})
    for label, r in result.items():
        if label == "command":
            continue
        crops = "; ".join(f"{name} spearman {r[name]['spearman']['median']:.3f} (pooled {r[name]['spearman']['pooled']:.3f}), "
                          f"actual/expected {r[name]['reliability']['ratio_actual_to_expected']:.2f}, failures flagged "
                          f"{r[name]['flagging']['failures_flagged']}/{r[name]['flagging']['failures']}"
                          for name in ("jittered", "misplaced"))
        e = r["end_to_end"]
        print(f"{label}: {crops}; end to end spearman {e['spearman_points']['median']:.3f}, faces "
              f"{e['spearman_faces']:.3f}, failures flagged {e['flagging']['failures_flagged']}/"
              f"{e['flagging']['failures']}, aflw hidden AUC {r.get('aflw_hidden_points', {}).get('auc', float('nan')):.3f}",
              flush=True)
    write_analysis("error-likelihood", result, args.results)


if __name__ == "__main__":
    run_main(main)
