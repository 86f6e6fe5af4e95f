"""What a training run records beside its checkpoints: config.json, split.json, metrics.jsonl (one JSON line per
epoch) and the learning curve.

Like big_vision's ``BigVisionMetricWriter``, the writer knows whether it runs in the primary process: the others
write and print nothing, so the training loop never asks. It holds the run directory's lock while it is open and
replaces files whole (kpjax/rundir.py), so a kill leaves each file as it was or as it became.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from kpjax.config import TrainConfig
from kpjax.dataset import Dataset, save_split
from kpjax.errors import KpjaxError
from kpjax.rundir import RunLock, atomic_write


def read_history(metrics_path: Path) -> list[dict]:
    """The epochs in metrics.jsonl; a last line cut short by a kill is left out."""
    if not metrics_path.exists():
        return []
    history = []
    for line in metrics_path.read_text().splitlines():
        try:
            history.append(json.loads(line))
        except ValueError:
            break
    return history


class RunWriter:
    """A run directory's files and log lines, written by process 0 alone; ``history`` holds the epochs so far."""

    def __init__(self, run_dir: Path, log: Callable[[str], None] = print):
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.is_primary = jax.process_index() == 0
        self.history: list[dict] = []
        self._log = log
        self._lock = RunLock(self.run_dir) if self.is_primary else contextlib.nullcontext()

    def __enter__(self) -> RunWriter:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise KpjaxError(f"--run-dir {self.run_dir}: is a file, not a directory")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.__exit__(*exc)

    def log(self, line: str) -> None:
        if self.is_primary:
            self._log(line)

    def write_config(self, config: TrainConfig) -> None:
        if self.is_primary:
            atomic_write(self.run_dir / "config.json", config.to_json())

    def write_split(self, dataset: Dataset, train_index: np.ndarray, val_index: np.ndarray, **info) -> None:
        if self.is_primary:
            save_split(self.run_dir / "split.json", dataset, train_index, val_index, **info)

    def keep_epochs(self, epochs: int) -> None:
        """Start ``history`` from the first ``epochs`` epochs of metrics.jsonl (those of the checkpoint a resume
        starts from; none for a fresh run) and cut the file to them: epochs trained after that checkpoint are
        trained again."""
        self.history = [h for h in read_history(self.metrics_path) if h["epoch"] <= epochs]
        if self.is_primary:
            atomic_write(self.metrics_path, "".join(json.dumps(h) + "\n" for h in self.history))

    def write_epoch(self, record: dict, epochs: int) -> None:
        """Append an epoch's line, before its checkpoints are saved: a resume from them finds it."""
        self.history.append(record)
        if self.is_primary:
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        self.log(_epoch_line(record, epochs))

    def plot_learning_curve(self) -> None:
        if not self.is_primary or not self.history:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [h["epoch"] for h in self.history]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(epochs, [h["train_mse"] for h in self.history], label="train MSE")
        if self.history[0].get("val_mse") is not None:
            ax.plot(epochs, [h["val_mse"] for h in self.history], label="validation MSE")
        ax.set(xlabel="epoch", ylabel="MSE (normalised units)", yscale="log", title=self.run_dir.name)
        ax.legend()
        fig.tight_layout()
        image = io.BytesIO()
        fig.savefig(image, format="png", dpi=100)
        plt.close(fig)
        atomic_write(self.run_dir / "learning_curve.png", image.getvalue())


def _epoch_line(record: dict, epochs: int) -> str:
    line = f"epoch {record['epoch']:>3}/{epochs}  train mse {record['train_mse']:.3e} mae {record['train_mae']:.4f}"
    if "val_mse" in record:
        line += (f"  val mse {record['val_mse']:.3e} mae {record['val_mae']:.4f} "
                 f"rmse {record['val_rmse_px']:.2f}px")
    line += f"  {record['images_per_second']:.0f} img/s"
    return line + ("  *best" if record["best"] else "")
