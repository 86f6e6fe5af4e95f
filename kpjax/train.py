"""The training loop: data on the device, a jitted step per batch, Orbax checkpoints, clean interrupts."""

from __future__ import annotations

import contextlib
import functools
import dataclasses
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from kpjax.augment import make_augmentation
from kpjax.checkpoint import RunCheckpoints, init_run, load_model
from kpjax.config import TrainConfig, option_name
from kpjax.dataset import Dataset, group_split
from kpjax.distributed import DataParallel, sync_processes
from kpjax.errors import KpjaxError
from kpjax.evaluate import keypoint_metrics
from kpjax.forward import predict_step
from kpjax.inference import predict_normalised
from kpjax.models import create_model, estimates_error
from kpjax.run_writer import RunWriter
from kpjax.sources import LoadOptions, load_data
from kpjax.train_step import init_state, make_optimizer, make_train_step


# What ``--resume`` may change: how long the run goes on, its step size (the advice after a divergence)
# and where it runs. Anything else would make it another run.
RESUMABLE = ("epochs", "learning_rate", "devices")
# What a run started from another's weights (``--init``) must share with it: the network itself.
NETWORK = ("model", "keypoints", "size", "color", "error_head")
# A mean squared error far beyond any face (keypoints lie in [-1, 1]): the loss exploded while staying finite.
DIVERGED_MSE = 100.0


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; the latest checkpoint was saved before this was raised."""


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_val: dict
    history: list[dict]

    @classmethod
    def from_history(cls, run_dir: Path, history: list[dict]) -> TrainResult:
        """The run as its epochs record it: the best is the lowest validation MSE (training MSE without one)."""
        best = min(history, key=lambda h: h.get("val_mse", h["train_mse"]))
        return cls(run_dir, best["epoch"], best, history)


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps, so a step is never cut in half."""

    def __init__(self):
        self.signal_name: str | None = None

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def load_training_data(config: TrainConfig) -> Dataset:
    options = LoadOptions(layout=config.layout, size=config.size, color=config.color,
                          strict=config.strict, seed=config.seed, markup=config.markup, margin=config.margin)
    dataset = load_data(config.data, options)
    if config.complete_only:
        complete = dataset.complete_only()
        if not len(complete):
            raise KpjaxError(f"--complete-only: none of the {len(dataset)} faces has all {dataset.layout.num_keypoints} "
                             "keypoints; drop it to train with the missing ones masked out of the loss")
        dataset = complete
    return dataset


def split_seed(config: TrainConfig) -> int:
    return config.seed if config.split_seed is None else config.split_seed


def split_dataset(dataset: Dataset, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    # A row split treats every face as its own group: near-identical video frames then land on both sides.
    groups = dataset.groups if config.split == "group" else np.arange(len(dataset)).astype(str)
    train_index, val_index = group_split(groups, config.val_fraction, split_seed(config))
    if len(train_index) < config.batch_size:
        raise KpjaxError(
            f"--batch {config.batch_size}: larger than the {len(train_index)} training faces; use a smaller batch"
        )
    return train_index, val_index


def check_resumable(saved: TrainConfig, config: TrainConfig) -> None:
    """A resume continues the run as it was configured: only the RESUMABLE settings may differ."""
    for field in dataclasses.fields(TrainConfig):
        before, after = getattr(saved, field.name), getattr(config, field.name)
        if field.name not in RESUMABLE and before != after:
            raise KpjaxError(
                f"--resume: {option_name(field.name)} cannot change within a run (it was {before!r}, now {after!r}); "
                f"only {', '.join(option_name(f) for f in RESUMABLE)} can, or start a new --run-dir"
            )


def check_init(config: TrainConfig) -> None:
    """A run starts (``--init``) only from a trained model of the same network: checked before any data is read."""
    source = TrainConfig.load(init_run(config.init))
    for field in NETWORK:
        if getattr(source, field) != getattr(config, field):
            raise KpjaxError(f"--init {config.init}: its {option_name(field)} is {getattr(source, field)!r}, this "
                             f"run's {getattr(config, field)!r}; a run starts only from weights of the same network")


def train(config: TrainConfig, run_dir: Path, *, resume: bool = False, dataset: Dataset | None = None,
          log=print) -> TrainResult:
    """Train ``config`` into ``run_dir``; with ``resume``, continue from its newest whole checkpoint.

    The run directory is locked while training writes to it; a run with no whole checkpoint yet
    (killed before its first save) is started afresh, with ``resume`` or without.
    """
    with RunWriter(run_dir, log) as writer, contextlib.closing(RunCheckpoints(writer.run_dir)) as checkpoints:
        run_dir = writer.run_dir
        if resume and (run_dir / "config.json").is_file():
            check_resumable(TrainConfig.load(run_dir), config)
        has_checkpoint = checkpoints.has_checkpoint()
        if has_checkpoint and not resume:
            raise KpjaxError(f"--run-dir {run_dir}: already holds a run; pass --resume to continue it or pick a new "
                             "directory")
        start_from = config.init if config.init is not None and not (resume and has_checkpoint) else None
        if start_from is not None:  # a resumed run continues from its own checkpoint
            check_init(config)
        parallel = DataParallel(config.devices)
        parallel.check_batch(config.batch_size)
        sync_processes("kpjax: run directory checked")  # before the primary process writes to it
        writer.write_config(config)

        dataset = load_training_data(config) if dataset is None else dataset
        train_index, val_index = split_dataset(dataset, config)
        writer.write_split(dataset, train_index, val_index, seed=split_seed(config), val_fraction=config.val_fraction)
        train_set, val_set = dataset.subset(train_index), dataset.subset(val_index).crop(config.margin)
        writer.log(f"data: {len(dataset)} faces, {len(train_set)} train / {len(val_set)} validation "
                   f"({len(np.unique(dataset.groups[val_index]))} validation groups)")

        layout = dataset.layout
        model = (load_model(init_run(start_from), calibrated=False)[0] if start_from is not None else  # trains raw
                 create_model(config.model, num_outputs=2 * layout.num_keypoints, size=config.size,
                              channels=dataset.channels, seed=config.seed, error_head=config.error_head))
        train_share = parallel.process_share(train_set)  # all of it, with one process
        process_batch = parallel.process_batch_size(config.batch_size)
        steps_per_epoch = len(train_share) // process_batch
        tx = make_optimizer(config, steps_per_epoch)
        graphdef, state = init_state(model, tx)
        state = parallel.put_state(state)
        start_epoch, start_step, best_val_loss = 0, 0, float("inf")
        resumed_sums = dict.fromkeys(("loss", "mae", "error_nll") if estimates_error(model) else ("loss", "mae"), 0.0)
        restored = checkpoints.restore(jax.tree.map(jnp.asarray, state)) if resume and has_checkpoint else None
        if restored is not None:
            state, progress = restored
            start_epoch, start_step = progress["epoch"], progress["step_in_epoch"]
            best_val_loss = progress["best_val_loss"]
            resumed_sums = progress.get("sums", resumed_sums)  # the interrupted epoch's steps so far
            if start_epoch < config.epochs:
                writer.log(f"resuming at epoch {start_epoch + 1}, step {start_step} of {steps_per_epoch}")
            else:
                writer.log(f"the run has finished its {config.epochs} epochs; pass --epochs N to train it longer")
        elif resume:
            writer.log(f"{run_dir} holds no whole checkpoint to resume from; starting afresh")
        writer.keep_epochs(start_epoch)

        train_step = make_train_step(tx, make_augmentation(config, layout), config.loss)
        data = {  # images keep their context; targets are in the model's frame
            "images": train_share.images, "targets": train_share.targets(config.margin), "mask": train_share.mask,
        }
        if train_share.hidden.any():  # only then has the error head a censored term to learn from
            data["hidden"] = train_share.hidden
        device_data = parallel.put_data(data)
        root_key = jax.random.key(config.seed)

        def progress_record(epoch: int, step: int, sums: dict | None = None) -> dict:
            sums = dict.fromkeys(resumed_sums, 0.0) if sums is None else {k: float(v) for k, v in sums.items()}
            return {"epoch": epoch, "step_in_epoch": step, "best_val_loss": best_val_loss, "seed": config.seed,
                    "sums": sums}

        with _StopRequest() as stop:
            for epoch in range(start_epoch, config.epochs):
                order_key, steps_key = jax.random.split(jax.random.fold_in(root_key, epoch))
                steps_key = parallel.put_key(steps_key)
                order = jax.random.permutation(order_key, len(train_share))
                started = time.perf_counter()
                first_step = start_step if epoch == start_epoch else 0
                sums = {k: jnp.asarray(v if epoch == start_epoch else 0.0, jnp.float32)
                        for k, v in resumed_sums.items()}
                bar = tqdm(range(first_step, steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}",
                           leave=False, disable=None)
                for step in bar:
                    batch = parallel.take_batch(device_data, order, step, process_batch)
                    state, metrics = train_step(graphdef, state, batch, jax.random.fold_in(steps_key, step))
                    sums = jax.tree.map(jnp.add, sums, metrics)
                    if step % 10 == 0 and not bar.disable:
                        bar.set_postfix(loss=f"{float(metrics['loss']):.5f}")
                    if stop.signal_name and step + 1 < steps_per_epoch:  # on an epoch's last step, finish the epoch
                        checkpoints.save("latest", epoch * steps_per_epoch + step + 1, state,
                                         progress_record(epoch, step + 1, sums))
                        _stop(writer, f"{stop.signal_name}: stopped at epoch {epoch + 1}, step {step + 1}")
                train_loss = float(sums["loss"]) / max(steps_per_epoch, 1)
                if not np.isfinite(train_loss) or train_loss > DIVERGED_MSE:
                    raise _diverged(epoch, train_loss, config, run_dir, kept=checkpoints.has_checkpoint())
                record = {"epoch": epoch + 1, "train_mse": train_loss,
                          "train_mae": float(sums["mae"]) / max(steps_per_epoch, 1)}
                if "error_nll" in sums:
                    record["train_error_nll"] = float(sums["error_nll"]) / max(steps_per_epoch, 1)
                if len(val_set):
                    params, rest = parallel.local((state["params"], state["rest"]))
                    forward = functools.partial(predict_step, graphdef, params, rest)
                    val = keypoint_metrics(predict_normalised(forward, val_set.images), val_set)
                    record.update(val_mse=val["mse"], val_mae=val["mae"], val_rmse_px=val["rmse_px"],
                                  val_nme=val["nme"])
                val_loss = record.get("val_mse", train_loss)
                record["seconds"] = round(time.perf_counter() - started, 2)
                record["images_per_second"] = round((steps_per_epoch - first_step) * config.batch_size
                                                    / record["seconds"], 1)
                is_best = val_loss < best_val_loss
                if is_best:
                    best_val_loss = val_loss
                record["best"] = is_best
                writer.write_epoch(record, config.epochs)  # before the checkpoints: a resume from them finds it
                global_step = (epoch + 1) * steps_per_epoch
                if is_best:
                    checkpoints.save("best", global_step, state, progress_record(epoch + 1, 0))
                checkpoints.save("latest", global_step, state, progress_record(epoch + 1, 0))
                if stop.signal_name:
                    _stop(writer, f"{stop.signal_name}: stopped after epoch {epoch + 1}")
        writer.plot_learning_curve()
    return TrainResult.from_history(run_dir, writer.history)


def _diverged(epoch: int, train_loss: float, config: TrainConfig, run_dir: Path, kept: bool) -> KpjaxError:
    advice = (f"the last good checkpoints are kept: resume from them with a lower learning rate, "
              f"kpjax train --resume --run-dir {run_dir} --lr {config.learning_rate / 10:g}" if kept else
              f"no checkpoint was saved; start again with a lower --lr than {config.learning_rate:g}")
    return KpjaxError(f"training diverged at epoch {epoch + 1} (train mse {train_loss:.3g}); {advice}")


def _stop(writer: RunWriter, where: str) -> None:
    writer.plot_learning_curve()
    raise TrainingInterrupted(f"{where}; latest checkpoint saved, continue with: kpjax train --resume "
                              f"--run-dir {writer.run_dir}")

