"""Op-by-op exploration of the seed CNN's layers on XLA:CPU (forward + backward).

Each variant is jitted, warmed up, then all variants of one case are timed in
alternation (``--repeats`` rounds) and the median is printed, so that load from
other processes hits every variant alike.

    /work/venv/bin/python benchmarks/microbench_ops.py [--repeats 15] [--only pool,conv]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
from jax import lax

from kpjax import ops


# --- reference formulations -------------------------------------------------

def pool_reshape_autodiff(x):
    """The old kpjax op: reshape + max; autodiff splits ties evenly."""
    n, h, w, c = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2, :].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def pool_reduce_window(x):
    """flax/lax style; XLA:CPU lowers the gradient to select-and-scatter."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def conv_lax(x, k, b):
    """nnx.Conv's formulation."""
    y = lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + b


def timeit(fns: dict, args: tuple, repeats: int) -> dict:
    for f in fns.values():
        jax.block_until_ready(f(*args))
        jax.block_until_ready(f(*args))
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def report(case: str, medians: dict) -> None:
    base = next(iter(medians.values()))
    for name, ms in medians.items():
        print(f"{case:32s} {name:28s} {ms:8.2f} ms  x{base / ms:5.2f}", flush=True)


def grad_of(pool_or_conv, argnums):
    def loss(*a):
        return jnp.sum(pool_or_conv(*a) ** 2)
    return jax.jit(jax.grad(loss, argnums=argnums))


def bench_pool(repeats: int) -> None:
    key = jax.random.key(0)
    for shape in [(64, 94, 94, 32), (64, 46, 46, 64), (64, 22, 22, 128)]:
        x = jax.random.normal(key, shape)
        fns = {
            "reduce_window (select&scat)": grad_of(pool_reduce_window, 0),
            "reshape+max autodiff": grad_of(pool_reshape_autodiff, 0),
            "ops.max_pool_2x2_cpu custom_vjp": grad_of(ops.max_pool_2x2_cpu, 0),
        }
        report(f"pool fwd+bwd {shape}", timeit(fns, (x,), repeats))


def bench_conv(repeats: int) -> None:
    key = jax.random.key(0)
    cases = [
        ("conv1 3x3 1->32 (no dx)", (64, 96, 96, 1), (3, 3, 1, 32), (1, 2)),
        ("conv2 2x2 32->64", (64, 47, 47, 32), (2, 2, 32, 64), (0, 1, 2)),
        ("conv3 2x2 64->128", (64, 23, 23, 64), (2, 2, 64, 128), (0, 1, 2)),
    ]
    for case, xs, ks, argnums in cases:
        kx, kk = jax.random.split(key)
        x = jax.random.normal(kx, xs)
        k = jax.random.normal(kk, ks) * 0.1
        b = jnp.zeros(ks[-1])
        fns = {"lax.conv autodiff": grad_of(conv_lax, argnums)}
        for name in sorted(n for n in dir(ops) if n.startswith("conv2d_cpu")):
            fns[f"ops.{name}"] = grad_of(getattr(ops, name), argnums)
        report(case + " fwd+bwd", timeit(fns, (x, k, b), repeats))
        fwd = {"lax.conv fwd": jax.jit(conv_lax)}
        for name in sorted(n for n in dir(ops) if n.startswith("conv2d_cpu")):
            fwd[f"ops.{name} fwd"] = jax.jit(getattr(ops, name))
        report(case + " fwd", timeit(fwd, (x, k, b), repeats))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--only", default="pool,conv")
    a = p.parse_args()
    print(f"jax {jax.__version__} devices {jax.devices()}")
    if "pool" in a.only:
        bench_pool(a.repeats)
    if "conv" in a.only:
        bench_conv(a.repeats)


if __name__ == "__main__":
    main()
