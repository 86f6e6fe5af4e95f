"""Throughput and latency of a registered model on whatever backend JAX has.

Compilation is timed apart from running; every figure is the median over
repeats, because these machines are shared and noisy, and each result records
the CPU and the load average before and after it, so a figure measured beside
other jobs says so.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from kpjax.augment import make_augmentation
from kpjax.config import TrainConfig
from kpjax.distributed import FORCE_CPU_DEVICES, DataParallel
from kpjax.errors import KpjaxError
from kpjax.keypoints import KAGGLE
from kpjax.export import onnx_forward
from kpjax.forward import predict_step, split_model, xla_forward
from kpjax.models import create_model
from kpjax.train_step import init_state, make_optimizer, make_train_step

BUSY_LOAD_PER_CORE = 0.5  # 1-minute load average per core above which other jobs shared the cores


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


def cpu_model() -> str:
    """The processor's marketing name (Linux /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages: how many jobs wanted the cores."""
    return [round(load, 2) for load in os.getloadavg()]


def measured_under_load(measure: Callable[[], dict]) -> dict:
    """``measure()``'s figures with the CPU they ran on and the load average before and after them."""
    load_before = load_average()
    figures = measure()
    return {**figures, "cpu_model": cpu_model(), "cpu_cores": os.cpu_count(), "load_before": load_before,
            "load_after": load_average()}


def busy_warning(results: list[dict]) -> str | None:
    """One line when another job shared the cores before or after any result, or None on a quiet machine."""
    cores = results[0]["cpu_cores"]
    busiest = max(max(r["load_before"][0], r["load_after"][0]) for r in results)
    if busiest <= BUSY_LOAD_PER_CORE * cores:
        return None
    return (f"warning: the machine was busy (1-minute load average up to {busiest:.2f} on {cores} cores, "
            f"over {BUSY_LOAD_PER_CORE} per core): the figures are lower and noisier than a quiet machine's")


def _format_cpu(result: dict) -> str:
    return f"cpu {result['cpu_model']}, {result['cpu_cores']} cores"


def format_conditions(result: dict) -> str:
    before, after = (" / ".join(f"{x:.2f}" for x in result[key]) for key in ("load_before", "load_after"))
    return f"{_format_cpu(result)}; load average (1/5/15 min) {before} before, {after} after"


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


def _forward_figures(forward, one: np.ndarray, many: np.ndarray, repeats: int) -> dict:
    """Batch-1 latency percentiles and batch-256 images/s of one engine's forward pass, after a warm-up call."""
    _timed(forward, one)
    latencies = [_timed(forward, one)[0] * 1e3 for _ in range(latency_calls(repeats))]
    _timed(forward, many)
    rates = [len(many) / _timed(forward, many)[0] for _ in range(repeats)]
    return {"b1_p50_ms": float(np.percentile(latencies, 50)), "b1_p90_ms": float(np.percentile(latencies, 90)),
            "b256_images_per_s": statistics.median(rates)}


def bench_inference(model_name: str, repeats: int, size: int, channels: int) -> dict:
    """The forward pass photos run on (onnxruntime on the exported graph: ``infer_*``), and XLA's beside it
    (``xla_infer_*``: what training's validation and crop evaluation use)."""
    model = create_model(model_name, num_outputs=2 * KAGGLE.num_keypoints, size=size, channels=channels)
    config = TrainConfig(model=model_name, size=size, color=channels == 3)
    one, many = (np.zeros((n, size, size, channels), np.uint8) for n in (1, 256))
    build_seconds, forward = _timed(onnx_forward, model, config)
    graphdef, params, rest = split_model(model)
    compile_seconds = sum(
        _timed(lambda x: predict_step.lower(graphdef, params, rest, x).compile(), x)[0] for x in (one, many)
    )
    engines = {"infer": _forward_figures(forward, one, many, repeats),
               "xla_infer": _forward_figures(xla_forward(model), one, many, repeats)}
    return {**{f"{engine}_{key}": value for engine, figures in engines.items() for key, value in figures.items()},
            "infer_engine": "onnxruntime", "infer_build_s": build_seconds, "xla_infer_compile_s": compile_seconds}


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
        **measured_under_load(lambda: {**bench_train(model_name, batch_size, steps, repeats, size, channels),
                                       **bench_inference(model_name, repeats, size, channels)}),
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
        ("XLA b1 p50 ms", "xla_infer_b1_p50_ms", "{:.2f}"),
        ("XLA b256 img/s", "xla_infer_b256_images_per_s", "{:.0f}"),
        ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
        ("% matmul peak", "train_share_of_matmul_peak", "{:.1%}"),
    ]
    header = ["implementation"] + [c[0] for c in columns]
    body = [[name] + [fmt.format(r[key]) if r.get(key) is not None else "-" for _, key, fmt in columns]
            for name, r in rows.items()]
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).rjust(w) for cell, w in zip(row, widths)) for row in [header, *body])


def run_json(command: list[str], env: dict | None = None) -> dict:
    """Run one benchmark process; its result is the JSON object on the last line of its stdout."""
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise BenchProcessFailed((done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1])
    return json.loads(done.stdout.splitlines()[-1])


def run_kpjax(job: str, env: dict | None = None, **kwargs) -> dict:
    """``bench_train`` ("train") or ``run_bench`` ("all") in a fresh process: see the end of this module."""
    return run_json([sys.executable, "-m", "kpjax.bench", job, json.dumps(kwargs)], env)


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
            row = measured_under_load(lambda: run_kpjax(
                "train", env, model_name=model_name, batch_size=batch_size * devices, steps=steps, repeats=repeats,
                size=size, channels=channels, devices=devices))
        except BenchProcessFailed as failed:
            raise KpjaxError(f"--devices {devices}: {failed}") from None
        rows.append({"devices": devices, "global_batch": batch_size * devices, **row})
    base = rows[0]["train_images_per_s"] / rows[0]["devices"]
    for row in rows:
        row["scaling_efficiency"] = row["train_images_per_s"] / row["devices"] / base
    return rows


def format_scaling(rows: list[dict]) -> str:
    header = ["devices", "global batch", "train img/s", "img/s per device", "efficiency", "compile s",
              "1-min load before/after"]
    body = [[str(r["devices"]), str(r["global_batch"]), f"{r['train_images_per_s']:.0f}",
             f"{r['train_images_per_s'] / r['devices']:.0f}", f"{r['scaling_efficiency']:.0%}",
             f"{r['train_compile_s']:.1f}", f"{r['load_before'][0]:.2f} / {r['load_after'][0]:.2f}"] for r in rows]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header, *body]]
    return "\n".join([*lines, _format_cpu(rows[0])])


if __name__ == "__main__":  # one benchmark in a process of its own, for run_scaling and benchmarks/peers_bench.py
    job = {"train": bench_train, "all": run_bench}[sys.argv[1]]
    print(json.dumps({"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
                      **job(**json.loads(sys.argv[2]))}))
