"""Keypoint regressors as Flax NNX modules, chosen by name from a registry.

Every model maps (N, H, W, C) float images in [0, 1] to (N, 2K) keypoints in
the seed's units; dropout (and any batch statistics) update only when ``rngs``
is passed, which is how training is told apart from inference.
"""

from __future__ import annotations

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


MODELS: dict[str, Callable[..., nnx.Module]] = {
    "seed": SeedCNN,
}


def create_model(name: str, *, num_outputs: int, size: int, channels: int, seed: int = 0) -> nnx.Module:
    if name not in MODELS:
        raise KpjaxError(f"--model {name}: unknown model; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[name](num_outputs=num_outputs, size=size, channels=channels, rngs=nnx.Rngs(params=seed))


def to_input(images: jax.Array) -> jax.Array:
    """uint8 images to the models' float [0, 1] input."""
    return images.astype(jnp.float32) / 255.0
