"""Layer primitives shared by the models."""

from __future__ import annotations

import jax


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pool, stride 2, NHWC; odd trailing rows/columns are dropped (Keras 'valid')."""
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2, :]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
