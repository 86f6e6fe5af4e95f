"""On-device augmentation, per sample, from an explicit PRNG key."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def flip_targets(targets: jax.Array, mask: jax.Array, flip_permutation: tuple[int, ...], size: int):
    """Mirror (N, 2K) targets in the seed's units and swap every left/right pair.

    Pixel index x maps to size-1-x, which in units of (x - size/2)/(size/2) is -x - 2/size.
    """
    n = targets.shape[0]
    perm = jnp.asarray(flip_permutation)
    points = targets.reshape(n, -1, 2)[:, perm]
    points = points.at[..., 0].set(-points[..., 0] - 2.0 / size)
    return points.reshape(n, -1), mask.reshape(n, -1, 2)[:, perm].reshape(n, -1)


def random_flip(batch: dict, key: jax.Array, flip_permutation: tuple[int, ...]) -> dict:
    """Flip half the faces of a batch (images NHWC, targets, mask), chosen per sample."""
    images, targets, mask = batch["images"], batch["targets"], batch["mask"]
    size = images.shape[2]
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    flipped_targets, flipped_mask = flip_targets(targets, mask, flip_permutation, size)
    return {
        **batch,
        "images": jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images),
        "targets": jnp.where(flip[:, None], flipped_targets, targets),
        "mask": jnp.where(flip[:, None], flipped_mask, mask),
    }
