"""The benchmark protocol every peer script follows, so that their figures line up with ``kpjax bench``.

Same synthetic data, same command-line options, same statistics (images/s as
the median over chunks, batch-1 latency percentiles, batch-256 images/s) and
the same output: one JSON line, the last one on stdout, with kpjax.bench's keys.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

SIZE, OUTPUTS = 96, 30  # grey 96x96 faces, 15 (x, y) keypoints
INFER_BATCH = 256


def argument_parser(description: str) -> argparse.ArgumentParser:
    """The options ``kpjax bench --peers`` passes to every peer; a script may add its own before parsing."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8, help="train steps per timed chunk")
    parser.add_argument("--repeats", type=int, default=7, help="timed train chunks and batch-256 calls")
    parser.add_argument("--calls", type=int, default=200, help="timed batch-1 calls")
    return parser


def synthetic_data(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``n`` NHWC images in [0, 1], targets and a ~70 % mask, all float32 and the same in every framework;
    also the images repeated to an inference batch of INFER_BATCH."""
    rng = np.random.default_rng(0)
    images = rng.random((n, SIZE, SIZE, 1), np.float32)
    targets = rng.standard_normal((n, OUTPUTS), np.float32)
    mask = (rng.random((n, OUTPUTS)) > 0.3).astype(np.float32)
    return images, targets, mask, np.resize(images, (INFER_BATCH, *images.shape[1:]))


def seconds(fn: Callable[[], Any]) -> float:
    """Wall time of ``fn()``, which must return only once its work is done."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def inference_figures(predict: Callable[[Any], Any], one: Callable[[int], Any], many: Any, calls: int,
                      repeats: int) -> dict:
    """Batch-1 latency over ``calls`` inputs ``one(i)`` (made outside the clock) and throughput on ``many``.

    ``predict`` must block until its result is ready; both shapes are called once
    first, so tracing and compilation stay out of the figures.
    """
    warmup = seconds(lambda: (predict(one(0)), predict(many)))
    latencies = [seconds(functools.partial(predict, x)) * 1e3 for x in map(one, range(calls))]  # lazy map
    rates = [len(many) / seconds(functools.partial(predict, many)) for _ in range(repeats)]
    return {
        "infer_warmup_s": warmup,
        "infer_b1_p50_ms": float(np.percentile(latencies, 50)),
        "infer_b1_p90_ms": float(np.percentile(latencies, 90)),
        "infer_b256_images_per_s": statistics.median(rates),
    }


def train_figures(chunk_seconds: list[float], images_per_chunk: int) -> dict:
    """The first chunk (tracing, compilation) reported apart; images/s is the median over the others."""
    return {
        "train_warmup_s": chunk_seconds[0],
        "train_images_per_s": statistics.median(images_per_chunk / s for s in chunk_seconds[1:]),
    }


def emit(**figures) -> None:
    """Print the result line, with this process's peak resident memory as kpjax.bench measures it."""
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}), flush=True)
