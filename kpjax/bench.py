"""Throughput and latency of a registered model on whatever backend JAX has.

Compilation is timed apart from running; every figure is the median over
repeats, because these machines are shared and noisy.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from kpjax.augment import make_augmentation
from kpjax.config import TrainConfig
from kpjax.distributed import FORCE_CPU_DEVICES, DataParallel
from kpjax.errors import KpjaxError
from kpjax.keypoints import KAGGLE
from kpjax.models import create_model
from kpjax.inference import predict_step
from kpjax.train_step import init_state, make_optimizer, make_train_step

PEERS = ("keras", "torch")  # benchmarks/peers/NAME_seed.py: the seed CNN in Keras/TensorFlow and PyTorch
PEERS_DIR_VARIABLE = "KPJAX_PEERS_DIR"
RATIOS = {  # ratio name -> (figure, whether higher is better); every ratio is > 1 where kpjax is better
    "ratio_train": ("train_images_per_s", True),
    "ratio_infer_b256": ("infer_b256_images_per_s", True),
    "ratio_infer_b1_p50": ("infer_b1_p50_ms", False),
}


class BenchProcessFailed(KpjaxError):
    """A benchmark process exited with an error; the message is the last line of its stderr."""


def _timed(fn, *args):
    started = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - started, out


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """The backend's fp32 matmul rate: the yardstick for how far from the hardware a model runs."""
    a = jnp.ones((n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, a))
    seconds = statistics.median(_timed(matmul, a, a)[0] for _ in range(repeats))
    return 2 * n**3 / seconds / 1e9


def peak_rss_mb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def bench_train(model_name: str, batch_size: int, steps: int, repeats: int, size: int, channels: int,
                devices: int = 1) -> dict:
    parallel = DataParallel(devices)
    parallel.check_batch(batch_size)
    model = create_model(model_name, num_outputs=2 * KAGGLE.num_keypoints, size=size, channels=channels)
    tx = make_optimizer(TrainConfig(learning_rate=1e-4), steps_per_epoch=steps)
    graphdef, state = init_state(model, tx)
    state = parallel.put_state(state)
    rng = np.random.default_rng(0)
    batch = parallel.put_batch({
        "images": rng.integers(0, 256, (batch_size, size, size, channels), dtype=np.uint8),
        "targets": rng.uniform(-0.5, 0.5, (batch_size, 2 * KAGGLE.num_keypoints)).astype(np.float32),
        "mask": np.ones((batch_size, 2 * KAGGLE.num_keypoints), bool),
    })
    train_step = make_train_step(tx, make_augmentation(TrainConfig(), KAGGLE))
    key = parallel.put_key(jax.random.key(0))
    started = time.perf_counter()
    compiled = train_step.lower(graphdef, state, batch, key).compile()
    compile_seconds = time.perf_counter() - started
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops_per_image = float(cost.get("flops", 0.0)) / batch_size if cost else 0.0
    state, _ = jax.block_until_ready(train_step(graphdef, state, batch, key))  # warm-up
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(steps):
            state, metrics = train_step(graphdef, state, batch, jax.random.fold_in(key, i))
        jax.block_until_ready(metrics)
        rates.append(steps * batch_size / (time.perf_counter() - started))
    return {
        "train_images_per_s": statistics.median(rates),
        "train_compile_s": compile_seconds,
        "train_gflop_per_image": flops_per_image / 1e9,
        "params": int(sum(x.size for x in jax.tree.leaves(state["params"]))),
    }


def latency_calls(repeats: int) -> int:
    """Batch-1 calls timed for the latency percentiles, here and in the peers."""
    return max(50, 20 * repeats)


def bench_inference(model_name: str, repeats: int, size: int, channels: int) -> dict:
    model = create_model(model_name, num_outputs=2 * KAGGLE.num_keypoints, size=size, channels=channels)
    from flax import nnx

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    one = jnp.zeros((1, size, size, channels), jnp.uint8)
    many = jnp.zeros((256, size, size, channels), jnp.uint8)
    compile_seconds = sum(
        _timed(lambda x: predict_step.lower(graphdef, params, rest, x).compile(), x)[0] for x in (one, many)
    )
    jax.block_until_ready(predict_step(graphdef, params, rest, one))
    latencies = [_timed(predict_step, graphdef, params, rest, one)[0] * 1e3 for _ in range(latency_calls(repeats))]
    jax.block_until_ready(predict_step(graphdef, params, rest, many))
    rates = [256 / _timed(predict_step, graphdef, params, rest, many)[0] for _ in range(repeats)]
    return {
        "infer_b1_p50_ms": float(np.percentile(latencies, 50)),
        "infer_b1_p90_ms": float(np.percentile(latencies, 90)),
        "infer_b256_images_per_s": statistics.median(rates),
        "infer_compile_s": compile_seconds,
    }


def run_bench(model_name: str = "seed", batch_size: int = 64, steps: int = 10, repeats: int = 5,
              size: int = 96, channels: int = 1) -> dict:
    """One benchmark of ``model_name``: the figures ``kpjax bench`` prints, as a flat dict."""
    device = jax.devices()[0]
    result = {
        "backend": jax.default_backend(),
        "device": device.device_kind,
        "num_devices": jax.device_count(),
        "model": model_name,
        "batch": batch_size,
        **bench_train(model_name, batch_size, steps, repeats, size, channels),
        **bench_inference(model_name, repeats, size, channels),
    }
    if result["backend"] == "cpu":
        result["matmul_gflops"] = matmul_gflops()
        achieved = result["train_images_per_s"] * result["train_gflop_per_image"]
        result["train_share_of_matmul_peak"] = achieved / result["matmul_gflops"]
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def format_table(rows: dict[str, dict]) -> str:
    """Rows (implementation -> figures) as an aligned text table."""
    columns = [
        ("train img/s", "train_images_per_s", "{:.0f}"),
        ("compile s", "train_compile_s", "{:.1f}"),
        ("b1 p50 ms", "infer_b1_p50_ms", "{:.2f}"),
        ("b1 p90 ms", "infer_b1_p90_ms", "{:.2f}"),
        ("b256 img/s", "infer_b256_images_per_s", "{:.0f}"),
        ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
        ("% matmul peak", "train_share_of_matmul_peak", "{:.1%}"),
    ]
    header = ["implementation"] + [c[0] for c in columns]
    body = [[name] + [fmt.format(r[key]) if r.get(key) is not None else "-" for _, key, fmt in columns]
            for name, r in rows.items()]
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).rjust(w) for cell, w in zip(row, widths)) for row in [header, *body])


def _run_json(command: list[str], env: dict | None = None) -> dict:
    """Run one benchmark process; its result is the JSON object on the last line of its stdout."""
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise BenchProcessFailed((done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1])
    return json.loads(done.stdout.splitlines()[-1])


def _run_kpjax(job: str, env: dict | None = None, **kwargs) -> dict:
    """``bench_train`` ("train") or ``run_bench`` ("all") in a fresh process: see the end of this module."""
    return _run_json([sys.executable, "-m", "kpjax.bench", job, json.dumps(kwargs)], env)


def run_scaling(device_counts: list[int], model_name: str = "seed", batch_size: int = 64, steps: int = 10,
                repeats: int = 5, size: int = 96, channels: int = 1) -> list[dict]:
    """Data-parallel training throughput per device count, ``batch_size`` images per device.

    Each count runs in its own process: on CPU the number of devices is fixed by
    XLA_FLAGS before JAX starts. Efficiency is images/s per device against the
    smallest count's.
    """
    rows = []
    for devices in device_counts:
        flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(FORCE_CPU_DEVICES)]
        env = {**os.environ, "XLA_FLAGS": " ".join([*flags, f"{FORCE_CPU_DEVICES}={devices}"])}
        try:
            row = _run_kpjax("train", env, model_name=model_name, batch_size=batch_size * devices, steps=steps,
                             repeats=repeats, size=size, channels=channels, devices=devices)
        except BenchProcessFailed as failed:
            raise KpjaxError(f"--devices {devices}: {failed}") from None
        rows.append({"devices": devices, "global_batch": batch_size * devices, **row})
    base = rows[0]["train_images_per_s"] / rows[0]["devices"]
    for row in rows:
        row["scaling_efficiency"] = row["train_images_per_s"] / row["devices"] / base
    return rows


def format_scaling(rows: list[dict]) -> str:
    header = ["devices", "global batch", "train img/s", "img/s per device", "efficiency", "compile s"]
    body = [[str(r["devices"]), str(r["global_batch"]), f"{r['train_images_per_s']:.0f}",
             f"{r['train_images_per_s'] / r['devices']:.0f}", f"{r['scaling_efficiency']:.0%}",
             f"{r['train_compile_s']:.1f}"] for r in rows]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header, *body])


def peers_dir() -> Path:
    """The peer scripts: benchmarks/peers of the source checkout kpjax runs from, or $KPJAX_PEERS_DIR.

    They are not part of the installed package (a wheel has no benchmarks/).
    """
    return Path(os.environ.get(PEERS_DIR_VARIABLE) or Path(__file__).resolve().parents[1] / "benchmarks" / "peers")


def _medians(rows: list[dict]) -> dict:
    """Each measured (float) figure's median over rounds; counts and names from the first round."""
    return {k: statistics.median(r[k] for r in rows) if isinstance(v, float) else v for k, v in rows[0].items()}


def run_peers(rounds: int = 3, batch_size: int = 64, steps: int = 10, repeats: int = 5) -> dict:
    """The seed CNN in kpjax against the same network in each peer framework, one process per run.

    Runs alternate (kpjax, keras, torch, kpjax, ...) so that the load of a
    shared machine drifts over all of them alike, and every process inherits
    this one's environment: the CLI's huge-page malloc (kpjax.runtime) reaches
    the peers too. Figures are medians over rounds; each ratio is the median of
    the rounds' own ratios, > 1 where kpjax is better. A peer whose framework
    does not import is reported as not installed, and the others still run.
    """
    directory = peers_dir()
    if not directory.is_dir():
        raise KpjaxError(f"--peers: no peer scripts at {directory}; they are in a source checkout's benchmarks/peers, "
                         f"not in the installed package (or set {PEERS_DIR_VARIABLE})")
    peer_args = [f"--batch={batch_size}", f"--steps={steps}", f"--repeats={repeats}",
                 f"--calls={latency_calls(repeats)}"]
    runs = {name: [] for name in ("kpjax", *PEERS)}
    failures = {}
    for _ in range(rounds):
        try:
            runs["kpjax"].append(_run_kpjax("all", batch_size=batch_size, steps=steps, repeats=repeats))
        except BenchProcessFailed as failed:
            raise KpjaxError(f"--peers: kpjax: {failed}") from None
        for name in PEERS:
            if name in failures:
                continue
            script = directory / f"{name}_seed.py"
            if not script.is_file():
                failures[name] = {"status": "not found", "error": f"no {script}"}
                continue
            try:
                runs[name].append(_run_json([sys.executable, str(script), *peer_args]))
            except BenchProcessFailed as failed:
                missing = str(failed).startswith(("ModuleNotFoundError", "ImportError"))
                failures[name] = {"status": "not installed" if missing else "failed", "error": str(failed)}
    peers = {}
    for name in PEERS:
        if name in failures:
            peers[name] = failures[name]
            continue
        peers[name] = _medians(runs[name])
        for ratio, (figure, higher_is_better) in RATIOS.items():
            per_round = [k[figure] / p[figure] if higher_is_better else p[figure] / k[figure]
                         for k, p in zip(runs["kpjax"], runs[name])]
            peers[name][ratio] = statistics.median(per_round)
    return {"kpjax": _medians(runs["kpjax"]), "peers": peers, "rounds": rounds,
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}


def format_peers(result: dict) -> str:
    """run_peers' medians as a table, then one line per peer: its ratios, or why it did not run."""
    measured = {name: peer for name, peer in result["peers"].items() if "status" not in peer}
    lines = [format_table({"kpjax": result["kpjax"], **measured})]
    for name, peer in result["peers"].items():
        if "status" in peer:
            lines.append(f"{name}: {peer['status']} ({peer['error']})")
        else:
            lines.append(f"kpjax vs {name}: training {peer['ratio_train']:.2f}x, batch-256 inference "
                         f"{peer['ratio_infer_b256']:.2f}x, batch-1 p50 latency {peer['ratio_infer_b1_p50']:.2f}x")
    lines.append(f"medians of {result['rounds']} alternated rounds; ratios > 1: kpjax better")
    return "\n".join(lines)


if __name__ == "__main__":  # one benchmark in a process of its own, for run_scaling and run_peers
    job = {"train": bench_train, "all": run_bench}[sys.argv[1]]
    print(json.dumps({"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
                      **job(**json.loads(sys.argv[2]))}))
