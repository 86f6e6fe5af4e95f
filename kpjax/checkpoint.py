"""Orbax checkpoints of a run: the best-validation one and the latest one, kept apart.

Each checkpoint holds the model (params and other state), the optimizer state
and a small JSON record of progress (epoch, step, PRNG seed) so ``--resume``
continues exactly where training stopped.
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from kpjax.config import TrainConfig
from kpjax.errors import KpjaxError
from kpjax.keypoints import LAYOUTS
from kpjax.models import create_model


def _manager(path: Path, **options) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        path.resolve(),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False, **options),
    )


class RunCheckpoints:
    def __init__(self, run_dir: Path):
        root = Path(run_dir) / "checkpoints"
        self.best = _manager(root / "best", best_fn=lambda metrics: metrics["val_loss"], best_mode="min")
        self.latest = _manager(root / "latest")

    def save(self, which: str, step: int, state: dict, progress: dict, val_loss: float | None = None) -> None:
        manager = self.best if which == "best" else self.latest
        args = ocp.args.Composite(
            model=ocp.args.StandardSave({"params": state["params"], "rest": state["rest"]}),
            opt_state=ocp.args.StandardSave(state["opt_state"]),
            progress=ocp.args.JsonSave(progress),
        )
        manager.save(step, args=args, metrics=None if val_loss is None else {"val_loss": val_loss}, force=True)
        manager.wait_until_finished()

    def restore_latest(self, abstract_state: dict) -> tuple[dict, dict]:
        step = self.latest.latest_step()
        if step is None:
            raise KpjaxError(f"{self.latest.directory}: no checkpoint to resume from")
        restored = self.latest.restore(
            step,
            args=ocp.args.Composite(
                model=ocp.args.StandardRestore({"params": abstract_state["params"], "rest": abstract_state["rest"]}),
                opt_state=ocp.args.StandardRestore(abstract_state["opt_state"]),
                progress=ocp.args.JsonRestore(),
            ),
        )
        state = {**restored["model"], "opt_state": restored["opt_state"]}
        return state, restored["progress"]

    def close(self) -> None:
        self.best.close()
        self.latest.close()


DEFAULT_MODEL = Path(__file__).resolve().parent / "weights" / "default"


def load_model(run_dir: Path | None = None, which: str = "best") -> tuple[nnx.Module, TrainConfig]:
    """The trained model of a run directory (its best checkpoint by default) and the run's config;
    with no run directory, the default model shipped inside the package."""
    if run_dir is None:
        if not (DEFAULT_MODEL / "config.json").is_file():
            raise KpjaxError("--model: no run directory given and no default model is installed")
        run_dir = DEFAULT_MODEL
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise KpjaxError(f"{run_dir}: not a kpjax run directory (no config.json)")
    config = TrainConfig.load(run_dir)
    manager = _manager(run_dir / "checkpoints" / which, create=False)
    step = manager.latest_step()  # each directory keeps one checkpoint: the best, or the latest
    if step is None:
        raise KpjaxError(f"{run_dir}: no {which} checkpoint (did training finish an epoch?)")
    layout = LAYOUTS[config.keypoints]
    abstract = nnx.eval_shape(
        lambda: create_model(
            config.model, num_outputs=2 * layout.num_keypoints, size=config.size, channels=3 if config.color else 1
        )
    )
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    one_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])  # whatever mesh or hosts saved it
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one_device),
                          {"params": params, "rest": rest})
    restored = manager.restore(step, args=ocp.args.Composite(model=ocp.args.StandardRestore(target)))["model"]
    manager.close()
    return nnx.merge(graphdef, restored["params"], restored["rest"]), config
