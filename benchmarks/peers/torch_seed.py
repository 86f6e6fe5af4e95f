"""Seed CNN throughput in PyTorch (CPU, plain training loop), the protocol of protocol.py.

Train: Adam(1e-3), masked MSE, a warm-up chunk and ``--repeats`` timed chunks
of ``--steps`` steps. Inference in eval mode under ``inference_mode``.

    /work/venv/bin/python benchmarks/peers/torch_seed.py [--channels-last]
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import protocol


def seed_cnn() -> nn.Module:
    flat = ((((protocol.SIZE - 2) // 2 - 1) // 2 - 1) // 2) ** 2 * 128  # 11 * 11 * 128 at 96 px
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(flat, 500), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(500, 500), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(500, protocol.OUTPUTS),
    )


def main() -> None:
    parser = protocol.argument_parser(__doc__)
    parser.add_argument("--channels-last", action="store_true")
    a = parser.parse_args()
    torch.manual_seed(0)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    n = a.batch * a.steps
    images, targets, masks, images256 = protocol.synthetic_data(n)
    xs, xs256 = (torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).contiguous(memory_format=fmt)
                 for x in (images, images256))
    ys, ms = torch.from_numpy(targets), torch.from_numpy(masks)
    model = seed_cnn().to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def chunk() -> None:
        for i in range(0, n, a.batch):
            x, y, m = xs[i : i + a.batch], ys[i : i + a.batch], ms[i : i + a.batch]
            opt.zero_grad(set_to_none=True)
            loss = (m * (model(x) - y) ** 2).sum() / m.sum().clamp_min(1.0)
            loss.backward()
            opt.step()

    model.train()
    chunks = [protocol.seconds(chunk) for _ in range(1 + a.repeats)]
    model.eval()
    with torch.inference_mode():
        inference = protocol.inference_figures(model, lambda i: xs[i % n : i % n + 1], xs256, a.calls, a.repeats)
    protocol.emit(
        framework="torch", version=torch.__version__, variant="channels_last" if a.channels_last else "nchw",
        threads=torch.get_num_threads(), batch=a.batch, **protocol.train_figures(chunks, n), **inference,
    )


if __name__ == "__main__":
    main()
