"""Seed CNN throughput in kpjax (JAX/Flax NNX on CPU), same protocol as benchmarks/peers/*.

Train: batch 64 fp32, Adam(1e-3), masked MSE, one jitted step of (graphdef,
state, batch, key) with donated state; images/s is the median over ``--repeats``
chunks of ``--steps`` steps, after a warm-up (compile) reported apart.
Inference: batch-1 latency p50/p90 over ``--calls`` calls, batch-256 images/s.
Several ``--ops`` variants are measured in one process, chunks alternating,
so machine load hits them alike; one JSON line per variant.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 /work/venv/bin/python benchmarks/kpjax_seed.py --ops fast,reference
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from kpjax.models import SeedCNN


def reference_forward(model: SeedCNN, x, rngs):
    """The pre-issue-7 formulation: nnx.Conv, ReLU, reshape+max pool with autodiff."""
    for conv in (model.conv1, model.conv2, model.conv3):
        x = jax.nn.relu(conv(x))
        n, h, w, c = x.shape
        x = x[:, : h // 2 * 2, : w // 2 * 2, :].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
    x = x.reshape(x.shape[0], -1)
    train = rngs is not None
    x = model.dropout(jax.nn.relu(model.dense1(x)), deterministic=not train, rngs=rngs)
    x = model.dropout(jax.nn.relu(model.dense2(x)), deterministic=not train, rngs=rngs)
    return model.head(x)


FORWARDS = {"fast": lambda m, x, rngs: m(x, rngs=rngs), "reference": reference_forward}


def make(variant: str, batch: int):
    forward = FORWARDS[variant]
    model = SeedCNN(num_outputs=30, size=96, channels=1, rngs=nnx.Rngs(params=0))
    tx = optax.adam(1e-3)
    params = nnx.state(model, nnx.Param)
    graphdef, state = nnx.split(model)
    opt_state = tx.init(params)

    def loss_fn(params, rest, x, y, mask, key):
        m = nnx.merge(graphdef, params, rest)
        pred = forward(m, x, nnx.Rngs(dropout=key))
        return jnp.sum(mask * (pred - y) ** 2) / jnp.maximum(mask.sum(), 1.0)

    @jax.jit
    def _train(carry, x, y, mask, key):
        params, rest, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, rest, x, y, mask, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), rest, opt_state), loss

    train = jax.jit(_train, donate_argnums=0)
    rest = nnx.state(model, nnx.Not(nnx.Param))
    carry = (params, rest, opt_state)

    @jax.jit
    def predict(params, x):
        return forward(nnx.merge(graphdef, params, rest), x, None)

    return train, carry, predict


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ops", default="fast,reference")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--calls", type=int, default=200)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    n_data = a.batch * a.steps
    xs = jnp.asarray(rng.random((n_data, 96, 96, 1), np.float32))
    ys = jnp.asarray(rng.standard_normal((n_data, 30), np.float32))
    masks = jnp.asarray(rng.random((n_data, 30)) > 0.3, jnp.float32)
    batches = [(xs[i : i + a.batch], ys[i : i + a.batch], masks[i : i + a.batch]) for i in range(0, n_data, a.batch)]
    keys = list(jax.random.split(jax.random.key(0), a.steps))

    variants = a.ops.split(",")
    runs, results = {}, {}
    for v in variants:
        train, carry, predict = make(v, a.batch)
        t0 = time.perf_counter()
        carry, loss = train(carry, *batches[0], keys[0])
        jax.block_until_ready(loss)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        jax.block_until_ready(predict(carry[0], xs[:1]))
        jax.block_until_ready(predict(carry[0], xs[:256]))
        runs[v] = [train, carry, predict]
        results[v] = {"framework": "kpjax", "variant": v, "train_compile_s": round(compile_s, 2),
                      "predict_compile_s": round(time.perf_counter() - t0, 2), "chunks": []}

    for _ in range(a.repeats):  # alternate variants chunk by chunk
        for v in variants:
            train, carry, _ = runs[v]
            t0 = time.perf_counter()
            for b, k in zip(batches, keys):
                carry, loss = train(carry, *b, k)
            jax.block_until_ready(loss)
            results[v]["chunks"].append(a.steps * a.batch / (time.perf_counter() - t0))
            runs[v][1] = carry

    lat = {v: [] for v in variants}
    thr = {v: [] for v in variants}
    for i in range(a.calls):  # alternate variants call by call
        for v in variants:
            params, predict = runs[v][1][0], runs[v][2]
            t0 = time.perf_counter()
            jax.block_until_ready(predict(params, xs[i % n_data : i % n_data + 1]))
            lat[v].append((time.perf_counter() - t0) * 1e3)
    for _ in range(a.repeats):
        for v in variants:
            params, predict = runs[v][1][0], runs[v][2]
            t0 = time.perf_counter()
            jax.block_until_ready(predict(params, xs[:256]))
            thr[v].append(256 / (time.perf_counter() - t0))
    for v in variants:
        r = results[v]
        r.update(train_images_per_s=round(statistics.median(r.pop("chunks")), 1),
                 infer_b1_p50_ms=round(float(np.percentile(lat[v], 50)), 3),
                 infer_b1_p90_ms=round(float(np.percentile(lat[v], 90)), 3),
                 infer_b256_images_per_s=round(statistics.median(thr[v]), 1),
                 batch=a.batch, glibc_tunables=os.environ.get("GLIBC_TUNABLES", ""))
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
