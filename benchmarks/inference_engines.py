"""The forward pass on CPU: XLA (kpjax's jitted predict_step) against onnxruntime running the graph
`kpjax export` writes, for the same model and the same uint8 batches, alternated call by call.

    python benchmarks/inference_engines.py [--models default seed] [--calls 200] [--repeats 7] [--threads 2]

Batch-1 latency (p50, ms) and batch-256 throughput (images/s, median), with the max difference of the two
engines' outputs, the CPU and the load average before and after; one JSON line per model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from kpjax.runtime import ensure_hugepage_malloc

ensure_hugepage_malloc(sys.argv)  # before JAX is imported: see kpjax/runtime.py

import jax  # noqa: E402
import numpy as np  # noqa: E402

from kpjax.bench import busy_warning, measured_under_load  # noqa: E402
from kpjax.checkpoint import load_model  # noqa: E402
from kpjax.config import TrainConfig  # noqa: E402
from kpjax.export import to_onnx  # noqa: E402
from kpjax.forward import predict_step, split_model  # noqa: E402
from kpjax.models import create_model  # noqa: E402


def engines(model, config, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(to_onnx(model, config).SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    parts = split_model(model)
    return {"xla": lambda x: jax.block_until_ready(predict_step(*parts, x)[0]),
            "onnxruntime": lambda x: session.run(["keypoints"], {"images": x})[0]}


def measure(model, config, calls: int, repeats: int, threads: int) -> dict:
    run = engines(model, config, threads)
    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, (1, config.size, config.size, config.channels), np.uint8)
    many = rng.integers(0, 256, (256, config.size, config.size, config.channels), np.uint8)
    difference = float(np.abs(np.asarray(run["xla"](many)) - run["onnxruntime"](many)).max())
    latency = {name: [] for name in run}
    rate = {name: [] for name in run}
    for _ in range(calls):  # alternated, so both see the same load
        for name, f in run.items():
            started = time.perf_counter()
            f(one)
            latency[name].append((time.perf_counter() - started) * 1e3)
    for _ in range(repeats):
        for name, f in run.items():
            started = time.perf_counter()
            f(many)
            rate[name].append(256 / (time.perf_counter() - started))
    return {"max_difference": difference,
            **{name: {"batch1_p50_ms": statistics.median(latency[name][calls // 10:]),
                      "batch256_images_per_s": statistics.median(rate[name])} for name in run}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["default", "seed"],
                        help="default (the shipped model) or a registry name (fresh weights)")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime's intra-op threads")
    args = parser.parse_args()
    for name in args.models:
        if name == "default":
            model, config = load_model(None)
        else:
            config = TrainConfig(model=name)
            model = create_model(name, num_outputs=2 * config.layout.num_keypoints, size=config.size,
                                 channels=config.channels)
        result = measured_under_load(lambda: measure(model, config, args.calls, args.repeats, args.threads))
        print(json.dumps({"model": name, **result}))
        warning = busy_warning([result])
        if warning:
            print(warning, file=sys.stderr)


if __name__ == "__main__":
    main()
