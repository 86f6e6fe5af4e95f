"""How much of the seed CNN's CPU train step (batch 64) its matmuls take: the step as `kpjax bench` times it, and
the same matmuls alone at their own shapes (the im2col convolutions' forward, kernel and input gradients, and
the dense layers'), against `kpjax bench`'s matmul peak (2048² fp32).

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python benchmarks/step_breakdown.py

If the step cannot beat its matmuls, the matmuls' own rate bounds the step's share of the peak.
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from kpjax.bench import bench_train, load_average, matmul_gflops

BATCH = 64
# The seed CNN on 96x96: (output side, kernel, input channels, output channels, input gradient needed).
CONVOLUTIONS = [(94, 3, 1, 32, False), (46, 2, 32, 64, True), (22, 2, 64, 128, True)]
DENSE = [(11 * 11 * 128, 500), (500, 500), (500, 30)]


def step_matmuls() -> list[tuple[int, int, int]]:
    """(rows, inner, columns) of every matmul in one train step."""
    shapes = []
    for side, kernel, cin, cout, input_gradient in CONVOLUTIONS:
        rows, inner = BATCH * side * side, kernel * kernel * cin
        shapes += [(rows, inner, cout), (inner, rows, cout)] + ([(rows, cout, inner)] if input_gradient else [])
    for fan_in, fan_out in DENSE:
        shapes += [(BATCH, fan_in, fan_out), (fan_in, BATCH, fan_out), (BATCH, fan_out, fan_in)]
    return shapes


def main() -> None:
    load_before = load_average()
    shapes = step_matmuls()
    rng = np.random.default_rng(0)
    operands = [(jnp.asarray(rng.standard_normal((m, k)), jnp.float32), jnp.asarray(rng.standard_normal((k, n)),
                                                                                     jnp.float32))
                for m, k, n in shapes]
    matmuls = jax.jit(lambda pairs: [a @ b for a, b in pairs])
    jax.block_until_ready(matmuls(operands))
    seconds = []
    for _ in range(7):
        started = time.perf_counter()
        jax.block_until_ready(matmuls(operands))
        seconds.append(time.perf_counter() - started)
    matmul_ms = statistics.median(seconds) * 1e3
    gflop = sum(2 * m * k * n for m, k, n in shapes) / 1e9
    step = bench_train("seed", BATCH, steps=10, repeats=5, size=96, channels=1)
    step_ms = BATCH / step["train_images_per_s"] * 1e3
    peak = matmul_gflops()
    print(json.dumps({
        "load_before": load_before, "load_after": load_average(),
        "step_ms": step_ms, "train_images_per_s": step["train_images_per_s"],
        "matmuls_ms": matmul_ms, "matmuls_gflop": gflop, "matmuls_gflops": gflop / matmul_ms * 1e3,
        "matmul_peak_gflops": peak,
        "step_share_of_peak": gflop / step_ms * 1e3 / peak, "matmuls_share_of_peak": gflop / matmul_ms * 1e3 / peak,
        "fastest_step_images_per_s_if_only_matmuls": BATCH / matmul_ms * 1e3,
    }, indent=1))


if __name__ == "__main__":
    main()
