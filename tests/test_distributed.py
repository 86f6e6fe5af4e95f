"""Data parallelism: forced CPU devices and two local processes must train the model one device would.

XLA_FLAGS fixes the number of CPU devices before JAX starts, and a process
joins ``jax.distributed`` only once, so every configuration runs in a
subprocess of its own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from flax import nnx

from kpjax.checkpoint import load_model
from kpjax.distributed import FORCE_CPU_DEVICES, DataParallel
from kpjax.errors import KpjaxError
from kpjax.evaluate import evaluate_model
from kpjax.keypoints import KAGGLE
from kpjax.models import create_model
from kpjax.sources import LoadOptions, load_data

TRAIN_AND_DUMP = textwrap.dedent("""
    import sys
    import jax, numpy as np
    from flax import nnx
    from kpjax.checkpoint import load_model
    from kpjax.config import TrainConfig
    from kpjax.train import train

    devices, run_dir = int(sys.argv[1]), sys.argv[2]
    train(TrainConfig(data=["synthetic:80"], epochs=1, batch_size=16, seed=7, val_fraction=0.0, devices=devices),
          run_dir, log=lambda _: None)
    model, _ = load_model(run_dir, "latest")
    np.savez(run_dir + ".npz", *[np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))])
""")

KPJAX = [sys.executable, "-c", "from kpjax.cli import main; main()"]


def _env(devices: int) -> dict:
    return {**os.environ, "XLA_FLAGS": f"{FORCE_CPU_DEVICES}={devices}", "JAX_PLATFORMS": "cpu"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_four_devices_train_the_same_parameters_as_one(tmp_path):
    """Same global batches and keys: only the order of the gradient sums differs, so the updates agree to float
    rounding (Adam's first steps are near sign(gradient), which puts a tiny gradient's rounding at lr scale)."""
    params = {}
    for devices in (1, 4):
        run_dir = str(tmp_path / f"devices{devices}")
        subprocess.run([sys.executable, "-c", TRAIN_AND_DUMP, str(devices), run_dir], env=_env(devices),
                       check=True, timeout=600)
        saved = np.load(run_dir + ".npz")
        params[devices] = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    model = create_model("seed", num_outputs=2 * KAGGLE.num_keypoints, size=96, channels=1, seed=7)
    start = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
    assert len(params[1]) == len(params[4]) == len(start)
    for one, four, init in zip(params[1], params[4], start):
        update = np.linalg.norm(one - init)
        assert update > 0
        assert np.linalg.norm(four - one) < 1e-2 * update
        np.testing.assert_allclose(four, one, rtol=0, atol=2e-4)


def test_two_processes_train_one_checkpoint_that_one_process_restores(tmp_path):
    run_dir = tmp_path / "two"
    port = _free_port()
    workers = [
        subprocess.Popen(
            [*KPJAX, "train", "--data", "synthetic:96", "--epochs", "1", "--batch", "16",
             "--run-dir", str(run_dir), "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
             "--process-id", str(i)],
            env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert "epoch   1/1" in outputs[0] and "epoch   1/1" not in outputs[1]  # one process reports
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1

    model, config = load_model(run_dir)
    assert config.devices == 1
    metrics = evaluate_model(model, load_data(["synthetic:32"], LoadOptions(seed=1)))
    assert metrics["n"] == 32 and np.isfinite(metrics["mse"])


def test_a_batch_that_does_not_split_evenly_says_how_to_fix_it(tmp_path):
    done = subprocess.run(
        [*KPJAX, "train", "--data", "synthetic:64", "--devices", "4", "--batch", "30",
         "--run-dir", str(tmp_path / "run")],
        env=_env(4), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --batch 30: does not split evenly over 4 devices; use a multiple of 4, e.g. --batch 32"


def test_more_devices_than_present_is_a_one_line_error():
    with pytest.raises(KpjaxError, match=FORCE_CPU_DEVICES):
        DataParallel(jax.local_device_count() + 1)


def test_one_device_keeps_the_plain_path():
    parallel = DataParallel(1)
    assert parallel.mesh is None
    state = {"w": np.ones(3, np.float32)}
    assert parallel.put_state(state) is state
