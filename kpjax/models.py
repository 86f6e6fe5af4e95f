"""Keypoint regressors as Flax NNX modules, chosen by name from a registry.

Every model maps (N, H, W, C) float images in [0, 1] to (N, 2K) keypoints in
the seed's units; dropout (and any batch statistics) update only when ``rngs``
is passed, which is how training is told apart from inference.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from kpjax.errors import KpjaxError
from kpjax.ops import conv2d, max_pool_2x2


class SeedCNN(nnx.Module):
    """The reference Keras model: three conv+pool blocks, two dense 500 layers with dropout."""

    def __init__(self, *, num_outputs: int, size: int, channels: int, rngs: nnx.Rngs, dropout: float = 0.2):
        self.conv1 = nnx.Conv(channels, 32, (3, 3), padding="VALID", rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, (2, 2), padding="VALID", rngs=rngs)
        self.conv3 = nnx.Conv(64, 128, (2, 2), padding="VALID", rngs=rngs)
        side = size
        for kernel in (3, 2, 2):
            side = (side - kernel + 1) // 2
        self.dense1 = nnx.Linear(side * side * 128, 500, rngs=rngs)
        self.dense2 = nnx.Linear(500, 500, rngs=rngs)
        self.head = nnx.Linear(500, num_outputs, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        for conv in (self.conv1, self.conv2, self.conv3):
            # relu(pool(conv + b)) == relu(pool(conv) + b): bias and ReLU run on the pooled quarter.
            x = jax.nn.relu(max_pool_2x2(conv2d(x, conv.kernel[...])) + conv.bias[...])
        x = x.reshape(x.shape[0], -1)
        train = rngs is not None
        x = self.dropout(jax.nn.relu(self.dense1(x)), deterministic=not train, rngs=rngs)
        x = self.dropout(jax.nn.relu(self.dense2(x)), deterministic=not train, rngs=rngs)
        return self.head(x)


class CompactCNN(nnx.Module):
    """The seed's conv blocks plus a fourth, then one small dense layer: ~1 M parameters instead of 8 M.

    The seed spends 97% of its parameters on one dense layer over an 11x11x128 map;
    pooling once more and narrowing the dense layer keeps its fast conv path
    (and its training speed) while fitting in a few MB and overfitting less.
    """

    def __init__(self, *, num_outputs: int, size: int, channels: int, rngs: nnx.Rngs,
                 widths: tuple[int, ...] = (32, 64, 128, 256), kernels: tuple[int, ...] = (3, 2, 2, 2),
                 hidden: int = 128, dropout: float = 0.2):
        self.convs = nnx.List([
            nnx.Conv(cin, cout, (k, k), padding="VALID", rngs=rngs)
            for cin, cout, k in zip((channels, *widths[:-1]), widths, kernels)
        ])
        side = size
        for kernel in kernels:
            side = (side - kernel + 1) // 2
        self.hidden = nnx.Linear(side * side * widths[-1], hidden, rngs=rngs)
        self.head = nnx.Linear(hidden, num_outputs, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        for conv in self.convs:
            x = jax.nn.relu(max_pool_2x2(conv2d(x, conv.kernel[...])) + conv.bias[...])
        train = rngs is not None
        x = self.dropout(x.reshape(x.shape[0], -1), deterministic=not train, rngs=rngs)
        x = self.dropout(jax.nn.relu(self.hidden(x)), deterministic=not train, rngs=rngs)
        return self.head(x)


class ConvBN(nnx.Module):
    """3x3 (or 1x1) convolution, batch norm, optional ReLU: the unit of the residual models."""

    def __init__(self, cin: int, cout: int, *, stride: int = 1, kernel: int = 3, relu: bool = True, rngs: nnx.Rngs):
        self.conv = nnx.Conv(cin, cout, (kernel, kernel), strides=stride, padding="SAME", use_bias=False, rngs=rngs)
        self.norm = nnx.BatchNorm(cout, momentum=0.9, rngs=rngs)
        self.relu = relu

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = self.norm(self.conv(x), use_running_average=not train)
        return jax.nn.relu(x) if self.relu else x


class ResidualBlock(nnx.Module):
    def __init__(self, cin: int, cout: int, *, stride: int, rngs: nnx.Rngs):
        self.first = ConvBN(cin, cout, stride=stride, rngs=rngs)
        self.second = ConvBN(cout, cout, relu=False, rngs=rngs)
        self.shortcut = ConvBN(cin, cout, stride=stride, kernel=1, relu=False, rngs=rngs) if stride > 1 or cin != cout else None

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        skip = x if self.shortcut is None else self.shortcut(x, train)
        return jax.nn.relu(self.second(self.first(x, train), train) + skip)


class ResNet(nnx.Module):
    """A small residual CNN with batch norm: a strided stem, one block per stage, a dense head.

    Built to train in minutes on a CPU: the stem halves the resolution at once and
    every stage halves it again, so most compute runs on small feature maps.
    """

    def __init__(self, *, num_outputs: int, size: int, channels: int, rngs: nnx.Rngs,
                 widths: tuple[int, ...] = (32, 64, 128, 256), hidden: int = 256, dropout: float = 0.2):
        self.stem = ConvBN(channels, widths[0], stride=2, rngs=rngs)
        self.blocks = nnx.List(
            [ResidualBlock(cin, cout, stride=1 if i == 0 else 2, rngs=rngs)
             for i, (cin, cout) in enumerate(zip((widths[0], *widths[:-1]), widths))]
        )
        side = -(-size // 2)
        for _ in widths[1:]:
            side = -(-side // 2)
        self.hidden = nnx.Linear(side * side * widths[-1], hidden, rngs=rngs)
        self.head = nnx.Linear(hidden, num_outputs, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        train = rngs is not None
        x = self.stem(x, train)
        for block in self.blocks:
            x = block(x, train)
        x = self.dropout(x.reshape(x.shape[0], -1), deterministic=not train, rngs=rngs)
        x = self.dropout(jax.nn.relu(self.hidden(x)), deterministic=not train, rngs=rngs)
        return self.head(x)


MODELS: dict[str, Callable[..., nnx.Module]] = {
    "seed": SeedCNN,
    "compact": CompactCNN,
    "resnet": ResNet,
    "resnet-small": functools.partial(ResNet, widths=(16, 32, 64, 128), hidden=128),
}


def create_model(name: str, *, num_outputs: int, size: int, channels: int, seed: int = 0) -> nnx.Module:
    if name not in MODELS:
        raise KpjaxError(f"--model {name}: unknown model; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[name](num_outputs=num_outputs, size=size, channels=channels, rngs=nnx.Rngs(params=seed))


def to_input(images: jax.Array) -> jax.Array:
    """uint8 images to the models' float [0, 1] input."""
    return images.astype(jnp.float32) / 255.0
