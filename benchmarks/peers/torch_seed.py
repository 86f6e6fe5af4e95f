"""Seed CNN throughput in PyTorch (CPU, plain training loop), same protocol as benchmarks/kpjax_seed.py.

Train: batch 64 fp32, Adam(1e-3), masked MSE, ``--steps`` steps per chunk,
median images/s over ``--repeats`` chunks after a warm-up chunk reported apart.
Inference (eval, inference_mode): batch-1 p50/p90 ms over ``--calls`` calls,
batch-256 images/s. Prints one JSON line.

    /work/venv/bin/python benchmarks/peers/torch_seed.py [--channels-last]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from torch import nn


def seed_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(11 * 11 * 128, 500), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(500, 500), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(500, 30),
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--channels-last", action="store_true")
    a = p.parse_args()
    torch.manual_seed(0)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    rng = np.random.default_rng(0)
    n = a.batch * a.steps
    xs = torch.from_numpy(rng.random((n, 1, 96, 96), np.float32)).contiguous(memory_format=fmt)
    ys = torch.from_numpy(rng.standard_normal((n, 30), np.float32))
    masks = torch.from_numpy((rng.random((n, 30)) > 0.3).astype(np.float32))
    model = seed_cnn().to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def chunk() -> float:
        model.train()
        t0 = time.perf_counter()
        for i in range(0, n, a.batch):
            x, y, m = xs[i : i + a.batch], ys[i : i + a.batch], masks[i : i + a.batch]
            opt.zero_grad(set_to_none=True)
            loss = (m * (model(x) - y) ** 2).sum() / m.sum().clamp_min(1.0)
            loss.backward()
            opt.step()
        return n / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    chunk()
    warm = time.perf_counter() - t0
    rates = [chunk() for _ in range(a.repeats)]

    model.eval()
    lat, thr = [], []
    with torch.inference_mode():
        model(xs[:1]), model(xs[:256])
        for i in range(a.calls):
            t0 = time.perf_counter()
            model(xs[i % n : i % n + 1])
            lat.append((time.perf_counter() - t0) * 1e3)
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            model(xs[:256])
            thr.append(256 / (time.perf_counter() - t0))
    print(json.dumps({
        "framework": "torch", "version": torch.__version__, "variant": "channels_last" if a.channels_last else "nchw",
        "threads": torch.get_num_threads(), "warmup_s": round(warm, 2),
        "train_images_per_s": round(statistics.median(rates), 1),
        "infer_b1_p50_ms": round(float(np.percentile(lat, 50)), 3), "infer_b1_p90_ms": round(float(np.percentile(lat, 90)), 3),
        "infer_b256_images_per_s": round(statistics.median(thr), 1), "batch": a.batch,
    }), flush=True)


if __name__ == "__main__":
    main()
