"""Orbax checkpoints of a run: the best-validation one and the latest one, kept apart.

Each checkpoint holds the model (params and other state), the optimizer state
and a small JSON record of progress (epoch, step, PRNG seed) so ``--resume``
continues exactly where training stopped, and is sealed by a manifest of its
files' checksums (``kpjax.rundir``) so a damaged one is never used.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from kpjax import calibration
from kpjax.config import TrainConfig
from kpjax.errors import KpjaxError
from kpjax.forward import split_model
from kpjax.models import create_model
from kpjax.rundir import MANIFEST_NAME, check_manifest, write_manifest


KINDS = ("latest", "best")


def _manager(path: Path, **options) -> ocp.CheckpointManager:
    # Every step is kept until a newer one is sealed; RunCheckpoints prunes the rest itself.
    return ocp.CheckpointManager(
        path.resolve(),
        options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False, **options),
    )


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _system_cause(error: BaseException) -> str | None:
    """What the system refused (disk full, read-only, permission) behind a failure wrapped by Orbax, asyncio
    or TensorStore (which gives only ``[os_error_code='28']`` in its message), if that was the cause."""
    while error is not None:
        if isinstance(error, OSError) and error.errno:
            return os.strerror(error.errno)
        if code := re.search(r"os_error_code='(\d+)'", str(error)):
            return os.strerror(int(code.group(1)))
        error = error.__cause__ or error.__context__
    return None


def whole_checkpoints(managers: dict[str, ocp.CheckpointManager], kinds: tuple[str, ...], warn=_warn):
    """(kind, step, sealed) of every checkpoint worth restoring, the one to try first first.

    Sealed checkpoints whose files match their checksums come newest first (``kinds`` order
    breaks ties); then unsealed ones, newest first: a save killed before its manifest was written,
    or a run from before manifests. A damaged checkpoint is reported through ``warn`` and left out.
    """
    sealed, unsealed = [], []
    for rank, kind in enumerate(kinds):
        for step in managers[kind].all_steps():
            directory = Path(managers[kind].directory) / str(step)
            if not (directory / MANIFEST_NAME).exists():
                unsealed.append((-step, rank, kind))
            elif (problem := check_manifest(directory)) is None:
                sealed.append((-step, rank, kind))
            else:
                warn(f"{directory}: damaged checkpoint ({problem}); skipped")
    yield from ((kind, -step, True) for step, _, kind in sorted(sealed))
    yield from ((kind, -step, False) for step, _, kind in sorted(unsealed))


def restore_first(managers: dict[str, ocp.CheckpointManager], kinds: tuple[str, ...], args, warn=_warn):
    """(kind, step, restored) of the first of ``whole_checkpoints`` that restores, or None.

    A sealed checkpoint that fails to restore is not damage (its files are as written) but a mismatch,
    such as a model the run was not trained with: that is an error, not a reason to fall back.
    """
    for kind, step, sealed in whole_checkpoints(managers, kinds, warn):
        try:
            return kind, step, managers[kind].restore(step, args=args)
        except Exception as error:  # noqa: BLE001  any failure to read it makes it unusable
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            if sealed:
                raise KpjaxError(f"{managers[kind].directory / str(step)}: cannot restore ({reason})") from None
            warn(f"{managers[kind].directory / str(step)}: unreadable checkpoint ({reason}); skipped")
    return None


class RunCheckpoints:
    """The best-validation and the latest checkpoint of a run, each sealed by a checksum manifest once saved.

    A new checkpoint replaces the previous one of its kind only after it is sealed, so a kill at any
    instant leaves at least one whole checkpoint of each kind that had one.
    """

    def __init__(self, run_dir: Path):
        root = Path(run_dir) / "checkpoints"
        self.managers = {kind: _manager(root / kind, cleanup_tmp_directories=True) for kind in KINDS}

    def save(self, kind: str, step: int, state: dict, progress: dict) -> None:
        manager = self.managers[kind]
        args = ocp.args.Composite(
            model=ocp.args.StandardSave({"params": state["params"], "rest": state["rest"]}),
            opt_state=ocp.args.StandardSave(state["opt_state"]),
            progress=ocp.args.JsonSave(progress),
        )
        try:
            if step in manager.all_steps():  # an unsealed or damaged copy that a crash left behind
                manager.delete(step)
            manager.save(step, args=args, force=True)
            manager.wait_until_finished()
            if jax.process_index() == 0:
                write_manifest(Path(manager.directory) / str(step))
            for old in manager.all_steps():
                if old != step:
                    manager.delete(old)
        except Exception as error:
            cause = _system_cause(error)
            if cause is None:
                raise
            raise KpjaxError(f"{manager.directory}: cannot save the {kind} checkpoint ({cause}); "
                             "any earlier checkpoints are kept") from None

    def has_checkpoint(self) -> bool:
        """Whether any checkpoint here is whole enough to try (damaged ones do not count)."""
        return next(whole_checkpoints(self.managers, KINDS, warn=lambda _: None), None) is not None

    def restore(self, abstract_state: dict) -> tuple[dict, dict] | None:
        """State and progress of the newest whole checkpoint, latest or best; None when there is none."""
        found = restore_first(self.managers, KINDS, ocp.args.Composite(
            model=ocp.args.StandardRestore({"params": abstract_state["params"], "rest": abstract_state["rest"]}),
            opt_state=ocp.args.StandardRestore(abstract_state["opt_state"]),
            progress=ocp.args.JsonRestore(),
        ))
        if found is None:
            return None
        _, _, restored = found
        return {**restored["model"], "opt_state": restored["opt_state"]}, restored["progress"]

    def close(self) -> None:
        for manager in self.managers.values():
            manager.close()


def drop_optimizer_state(run_dir: Path) -> None:
    """Trim a run's best checkpoint to what inference needs, resealed (the runs a lent GPU sends back); such a
    run loads and ships, but does not resume."""
    for step in (Path(run_dir) / "checkpoints" / "best").glob("[0-9]*"):
        shutil.rmtree(step / "opt_state", ignore_errors=True)
        write_manifest(step)


def best_progress(run_dir: Path) -> tuple[int, dict]:
    """The step and progress record of a run's best checkpoint, which may hold no optimizer state
    (``drop_optimizer_state``)."""
    manager = _manager(Path(run_dir) / "checkpoints" / "best", create=False, read_only=True)
    try:
        found = restore_first({"best": manager}, ("best",), ocp.args.Composite(progress=ocp.args.JsonRestore()))
    finally:
        manager.close()
    if found is None:
        raise KpjaxError(f"{run_dir}: no whole best checkpoint")
    _, step, restored = found
    return step, restored["progress"]


DEFAULT_MODEL = Path(__file__).resolve().parent / "weights" / "default"


def find_run(run_dir: Path | None) -> Path:
    """A run directory, checked; ``None`` is the default model shipped inside the package."""
    if run_dir is None:
        if not (DEFAULT_MODEL / "config.json").is_file():
            raise KpjaxError("--model: no run directory given and no default model is installed")
        return DEFAULT_MODEL
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise KpjaxError(f"{run_dir}: not a kpjax run directory (no config.json)")
    return run_dir


def init_run(name: str) -> Path:
    """The run ``--init`` names: a run directory, or ``default`` for the shipped model."""
    if name == "default" and not (DEFAULT_MODEL / "config.json").is_file():
        raise KpjaxError("--init default: no default model is installed; give a run directory")
    return find_run(None if name == "default" else Path(name))


def load_model(run_dir: Path | None = None, which: str = "best",
               calibrated: bool = True) -> tuple[nnx.Module, TrainConfig]:
    """The trained model of a run directory (its best checkpoint by default), carrying the run's calibration
    (``kpjax calibrate``) where it was fitted to that checkpoint, unless ``calibrated`` is False, and the run's
    config; with no run directory, the default model shipped inside the package."""
    run_dir = find_run(run_dir)
    config = TrainConfig.load(run_dir)
    stored = calibration.load(run_dir, config.layout.names) if calibrated else None  # a bad file fails first
    abstract = nnx.eval_shape(
        lambda: create_model(
            config.model, num_outputs=2 * config.layout.num_keypoints, size=config.size, channels=config.channels,
            error_head=config.error_head,
        )
    )
    graphdef, params, rest = split_model(abstract)
    one_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])  # whatever mesh or hosts saved it
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one_device),
                          {"params": params, "rest": rest})
    # The other kind stands in for a damaged or missing one.
    kinds = [kind for kind in (which, *(k for k in KINDS if k != which)) if (run_dir / "checkpoints" / kind).is_dir()]
    managers = {kind: _manager(run_dir / "checkpoints" / kind, create=False, read_only=True) for kind in kinds}
    args = ocp.args.Composite(model=ocp.args.StandardRestore(target))
    try:
        found = next(filter(None, (restore_first(managers, (kind,), args) for kind in kinds)), None)
    finally:
        for manager in managers.values():
            manager.close()
    if found is None:
        raise KpjaxError(f"{run_dir}: no whole checkpoint (did training finish an epoch?)")
    kind, step, restored = found
    if kind != which:
        _warn(f"{run_dir}: no whole {which} checkpoint; using the {kind} one")
    restored = restored["model"]
    model = nnx.merge(graphdef, restored["params"], restored["rest"])
    if stored is not None:
        offset, fitted_step = stored
        if fitted_step == step:
            return calibration.calibrate(model, offset), config
        _warn(f"{run_dir / calibration.CALIBRATION_FILE}: fitted to the checkpoint of step {fitted_step}, not to "
              f"this one (step {step}); not applied: run kpjax calibrate again")
    return model, config
