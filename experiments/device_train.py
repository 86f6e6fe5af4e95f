"""How configs/photo_wide.py and configs/photo_hires.py were trained on the GPU lent to a session, whose calls
carry at most 64 MiB: the converted faces travel as WebP (configs/photo.py's 144x144 grey crops with 24 px of
context at quality 85: 51 MB, PSNR 41.9 dB against the crops; photo_hires.py's 192x192 crops at quality 80:
56 MB), and every variant trains in parallel on the one GPU.

    python experiments/device_train.py pack [CONFIG [QUALITY]]   # here: writes .devrun/{images.bin,meta.npz}
    python experiments/device_train.py drive BUDGET_S OUT [NAME=MODEL[:LOSS][,KEY=VALUE...] ...] [--set KEY=VALUE ...]
        # there: calibrate, train, tar runs; --set as kpjax train's, for every run (init=RUN_DIR fine-tunes a run
        # carried along); a variant's own KEY=VALUE for that run alone (seed=1 split_seed=0: another seed, same split)
    python experiments/device_train.py resume BUDGET_S OUT EPOCHS:RUN_DIR ...   # there: continue runs to EPOCHS

The packed faces are CONFIG's (default configs/photo.py), and every run trains CONFIG's recipe with its model and
epochs replaced. On a machine that holds the data, `kpjax train --config CONFIG` is the same training.
"""
import dataclasses
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

PACKED = Path(".devrun")  # kept out of git by .git/info/exclude; carried to the device
VARIANTS = {"heatmap": "heatmap", "wide": "heatmap-wide"}  # drive's runs unless its command line names others
LIMIT = int(os.environ.get("KPJAX_DEV_LIMIT", "0"))  # faces, for a local smoke test
# An epoch's wall time over the training seconds its calibration measured: validation and checkpoints lie outside
# them, and runs side by side slow as they go. At 1.05, then 1.25, two runs in a call reached epochs 224-230 of the
# 266-271 their cosine schedules planned, their learning rates not yet annealed (1.8-1.9 s an epoch of wall time).
EPOCH_WALL = 1.5


def load_dataset():
    import cv2
    from kpjax.dataset import Dataset
    from kpjax.keypoints import LAYOUTS

    meta = np.load(PACKED / "meta.npz")
    blob = np.fromfile(PACKED / "images.bin", np.uint8)
    offsets = meta["offsets"]
    n = LIMIT or len(offsets) - 1
    images = np.empty((n, *meta["shape"][1:]), np.uint8)
    for i in range(n):
        images[i, ..., 0] = cv2.imdecode(blob[offsets[i]:offsets[i + 1]], cv2.IMREAD_GRAYSCALE)
    hidden = meta["hidden"][:n] if "hidden" in meta.files else None  # packed before hidden points were kept
    return Dataset(images, meta["keypoints"][:n], LAYOUTS[str(meta["layout"])], meta["groups"][:n],
                   meta["sources"][:n], hidden)


def packed_config():
    from kpjax.config import load_config

    return load_config(Path(str(np.load(PACKED / "meta.npz")["config"])))


def pack(config: str = "configs/photo.py", quality: int = 85) -> None:
    import cv2
    from kpjax.config import load_config
    from kpjax.train import load_training_data

    dataset = load_training_data(load_config(Path(config)))
    blobs = [cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, quality])[1].tobytes() for image in dataset.images]
    PACKED.mkdir(exist_ok=True)
    (PACKED / "images.bin").write_bytes(b"".join(blobs))
    np.savez_compressed(PACKED / "meta.npz", offsets=np.cumsum([0] + [len(b) for b in blobs]),
                        keypoints=dataset.keypoints, layout=dataset.layout.name, groups=dataset.groups,
                        sources=dataset.sources, hidden=dataset.hidden, shape=np.array(dataset.images.shape),
                        config=config)
    print(f"packed {len(blobs)} faces, {sum(map(len, blobs)) / 1e6:.1f} MB")


def split_variant(variant: str) -> tuple[str, str, list[str]]:
    """``variant``: a model name, or MODEL:LOSS to train it with that loss (TrainConfig.loss) instead of CONFIG's,
    then any ,KEY=VALUE of its own: (model, loss or "", its KEY=VALUE settings)."""
    spec, *own = variant.split(",")
    model, _, loss = spec.partition(":")
    return model, loss, own


def train_one(variant: str, epochs: int, run_dir: str, settings: tuple[str, ...] = ()) -> None:
    """``variant`` as ``split_variant`` reads it; ``settings``: ``--set`` KEY=VALUE overrides for every variant,
    before the variant's own."""
    from kpjax.config import override
    from kpjax.train import train

    model, loss, own = split_variant(variant)
    config = dataclasses.replace(override(packed_config(), [*settings, *own]), model=model, epochs=epochs,
                                 **({"loss": loss} if loss else {}))
    train(config, Path(run_dir), dataset=load_dataset())


def resume_one(epochs: int, run_dir: str) -> None:
    """The run continued to ``epochs`` with the recipe it saved, as ``kpjax train --resume`` continues one."""
    from kpjax.config import TrainConfig
    from kpjax.train import train

    config = dataclasses.replace(TrainConfig.load(Path(run_dir)), epochs=epochs)
    train(config, Path(run_dir), resume=True, dataset=load_dataset())


def launch(log: Path, command: str, *args) -> subprocess.Popen:
    """``command`` ("train" or "resume-one") with ``args`` in a process of its own: the runs share the GPU, a third
    of its memory each."""
    env = {**os.environ, "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.3", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, __file__, command, *map(str, args)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def epochs_of(run_dir: Path) -> list[dict]:
    from kpjax.run_writer import read_history

    return read_history(run_dir / "metrics.jsonl")


def tar_run(run_dir: Path, out: Path) -> None:
    """The run's records and its best model, resealed without the optimizer state (a file that comes back holds
    at most 16 MB); the latest checkpoint stays there."""
    from kpjax.checkpoint import drop_optimizer_state

    drop_optimizer_state(run_dir)
    with tarfile.open(out / f"run-{run_dir.name}.tar.gz", "w:gz") as tar:
        tar.add(run_dir, arcname=run_dir.name, filter=lambda m: None if "/checkpoints/latest" in m.name else m)


def wait_all(procs: dict, deadline: float) -> None:
    for name, proc in procs.items():
        try:
            proc.wait(timeout=max(deadline - time.time(), 1))
        except subprocess.TimeoutExpired:
            print(f"{name}: past the deadline, stopping it (it saves a checkpoint)", flush=True)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)


def drive(budget: float, out: Path, variants: dict[str, str], settings: tuple[str, ...] = ()) -> None:
    start = time.time()
    work = Path("/tmp/kpjax-gpu")
    work.mkdir(exist_ok=True)
    import jax
    import flax
    import optax
    import orbax.checkpoint
    print("versions", jax.__version__, flax.__version__, optax.__version__, orbax.checkpoint.__version__,
          jax.devices(), flush=True)
    cal_epochs = 3
    procs = {name: launch(work / f"cal-{name}.log", "train", model, cal_epochs, work / f"cal-{name}", *settings)
             for name, model in variants.items()}
    wait_all(procs, start + 240)
    calibration = time.time() - start
    plan = {}
    for name in variants:
        history = epochs_of(work / f"cal-{name}")
        print(name, "calibration", [(h["epoch"], h["seconds"], round(h["val_rmse_px"], 3)) for h in history],
              flush=True)
        if len(history) < cal_epochs:
            print((work / f"cal-{name}.log").read_text()[-3000:], flush=True)
            continue
        epoch_s = max(h["seconds"] for h in history[1:])
        overhead = calibration - sum(h["seconds"] for h in history)  # decode, compile, checkpoints
        plan[name] = (epoch_s, overhead)
    if not plan:
        raise SystemExit("no variant calibrated")
    deadline = start + budget
    left = deadline - time.time() - 30
    procs = {}
    for name, (epoch_s, overhead) in plan.items():
        epochs = int(min(400, (left - overhead) / (epoch_s * EPOCH_WALL)))
        print(f"{name}: {epochs} epochs at {epoch_s:.2f} s (overhead {overhead:.0f} s)", flush=True)
        if epochs < 1:
            continue  # the budget left no time to train it: nothing to launch or bring back
        procs[name] = launch(work / f"{name}.log", "train", variants[name], epochs, work / name, *settings)
    wait_all(procs, deadline)
    for name in procs:
        history = epochs_of(work / name)
        best = min(history, key=lambda h: h["val_mse"]) if history else None
        print(name, "epochs", len(history), "best", best, flush=True)
        print((work / f"{name}.log").read_text()[-1500:], flush=True)
        tar_run(work / name, out)
    print("total", round(time.time() - start), "s", flush=True)


def resume(budget: float, out: Path, jobs: list[str]) -> None:
    """Continue runs (EPOCHS:RUN_DIR) from their newest whole checkpoint, in parallel, to EPOCHS."""
    start = time.time()
    procs, logs = {}, {}
    for job in jobs:
        epochs, run_dir = job.split(":", 1)
        run_dir = Path(run_dir)
        logs[run_dir] = Path(f"/tmp/resume-{run_dir.name}.log")
        procs[run_dir] = launch(logs[run_dir], "resume-one", int(epochs), run_dir)
    wait_all(procs, start + budget)
    for run_dir, log in logs.items():
        print(log.read_text()[-1500:], flush=True)
        tar_run(run_dir, out)
    print("total", round(time.time() - start), "s", flush=True)


def drive_command(budget: float, out: Path, args: list[str]) -> None:
    from kpjax.config import override
    from kpjax.errors import KpjaxError

    cut = args.index("--set") if "--set" in args else len(args)
    settings = tuple(args[cut + 1:])
    variants = dict(v.split("=", 1) for v in args[:cut]) or VARIANTS
    try:  # a bad setting fails here, not in every run's log
        config = override(packed_config(), list(settings))
        for name, variant in variants.items():
            override(config, split_variant(variant)[2], given_by=f"variant {name}:")
    except KpjaxError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    drive(budget, out, variants, settings)


COMMANDS = {
    "pack": lambda config="configs/photo.py", quality="85": pack(config, int(quality)),
    "drive": lambda budget, out, *args: drive_command(float(budget), Path(out), list(args)),
    "train": lambda model, epochs, run_dir, *settings: train_one(model, int(epochs), run_dir, settings=settings),
    "resume": lambda budget, out, *jobs: resume(float(budget), Path(out), list(jobs)),
    "resume-one": lambda epochs, run_dir: resume_one(int(epochs), run_dir),
}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
