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
    """Flip half the faces of a batch (images NHWC, targets, mask and, if present, hidden), chosen per sample."""
    images, targets, mask = batch["images"], batch["targets"], batch["mask"]
    size = images.shape[2]
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    flipped_targets, flipped_mask = flip_targets(targets, mask, flip_permutation, size)
    flipped = {
        **batch,
        "images": jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images),
        "targets": jnp.where(flip[:, None], flipped_targets, targets),
        "mask": jnp.where(flip[:, None], flipped_mask, mask),
    }
    if "hidden" in batch:
        flipped["hidden"] = jnp.where(flip[:, None], batch["hidden"][:, jnp.asarray(flip_permutation)], batch["hidden"])
    return flipped


def _warp_one(image: jax.Array, inverse: jax.Array, size: int) -> jax.Array:
    """Bilinear resampling of one (H, W, C) image into a ``size`` square: output pixel p reads input pixel
    inverse @ [p, 1]."""
    h, w, c = image.shape
    ys, xs = jnp.meshgrid(jnp.arange(size, dtype=jnp.float32), jnp.arange(size, dtype=jnp.float32), indexing="ij")
    src_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    src_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    coords = [jnp.clip(src_y, 0, h - 1), jnp.clip(src_x, 0, w - 1)]  # replicate the border
    channels = [jax.scipy.ndimage.map_coordinates(image[..., k], coords, order=1) for k in range(c)]
    return jnp.stack(channels, axis=-1)


def random_affine(batch: dict, key: jax.Array, *, rotation: float, scale: float, shift: float, size: int) -> dict:
    """Rotate (degrees), scale (log-uniform, +-fraction) and shift (pixels) each face about the frame centre,
    cropping the ``size`` frame out of images that may carry context around it (``TrainConfig.margin``).

    Keypoints move with the image: the crop a detector makes is off by such a similarity, and a model trained
    on crops that never move learns to place the mean face, not to find the face in its crop.
    """
    images, targets = batch["images"].astype(jnp.float32), batch["targets"]
    n, margin = images.shape[0], (images.shape[1] - size) / 2
    k_angle, k_scale, k_shift = jax.random.split(key, 3)
    angle = jnp.deg2rad(jax.random.uniform(k_angle, (n,), minval=-rotation, maxval=rotation))
    zoom = jnp.exp(jax.random.uniform(k_scale, (n,), minval=-jnp.log1p(scale), maxval=jnp.log1p(scale)))
    offset = jax.random.uniform(k_shift, (n, 2), minval=-shift, maxval=shift)
    cos, sin = zoom * jnp.cos(angle), zoom * jnp.sin(angle)
    linear = jnp.stack([jnp.stack([cos, -sin], -1), jnp.stack([sin, cos], -1)], -2)  # (n, 2, 2)
    centre = (size - 1) / 2
    translation = centre + offset - jnp.einsum("nij,j->ni", linear, jnp.full((2,), centre))
    inverse_linear = jnp.linalg.inv(linear)
    inverse = jnp.concatenate(
        [inverse_linear, margin - jnp.einsum("nij,nj->ni", inverse_linear, translation)[..., None]], axis=-1
    )
    half = size / 2
    points = targets.reshape(n, -1, 2) * half + half
    moved = jnp.einsum("nij,nkj->nki", linear, points) + translation[:, None, :]
    return {
        **batch,
        "images": jax.vmap(_warp_one, in_axes=(0, 0, None))(images, inverse, size),
        "targets": ((moved - half) / half).reshape(n, -1),
    }


def random_photometric(batch: dict, key: jax.Array) -> dict:
    """Random contrast, brightness and blur per face: the seed's "robustness to lighting" step."""
    images = batch["images"].astype(jnp.float32)
    n = images.shape[0]
    k_contrast, k_bright, k_blur, k_blurred = jax.random.split(key, 4)
    contrast = jax.random.uniform(k_contrast, (n, 1, 1, 1), minval=0.6, maxval=1.4)
    brightness = jax.random.uniform(k_bright, (n, 1, 1, 1), minval=-40.0, maxval=40.0)
    mean = images.mean(axis=(1, 2, 3), keepdims=True)
    images = (images - mean) * contrast + mean + brightness
    box = jnp.ones((3, 3, 1, 1), jnp.float32) / 9.0
    blurred = jax.lax.conv_general_dilated(
        images.transpose(0, 3, 1, 2).reshape(-1, 1, *images.shape[1:3]), box.transpose(3, 2, 0, 1),
        (1, 1), "SAME",
    ).reshape(n, images.shape[3], *images.shape[1:3]).transpose(0, 2, 3, 1)
    weight = jax.random.uniform(k_blur, (n, 1, 1, 1)) * jax.random.bernoulli(k_blurred, 0.3, (n, 1, 1, 1))
    images = images * (1 - weight) + blurred * weight
    return {**batch, "images": jnp.clip(images, 0.0, 255.0)}


def make_augmentation(config, layout):
    """The config's augmentations as one function of (batch, key), or None when there are none."""
    steps = []
    if config.rotation or config.scale or config.shift or config.margin:  # first: it crops the frame
        steps.append(lambda batch, key: random_affine(batch, key, rotation=config.rotation, scale=config.scale,
                                                      shift=config.shift, size=config.size))
    if config.flip:
        steps.append(lambda batch, key: random_flip(batch, key, layout.flip_permutation))
    if config.photometric:
        steps.append(random_photometric)
    if not steps:
        return None

    def augment(batch: dict, key: jax.Array) -> dict:
        for step, step_key in zip(steps, jax.random.split(key, len(steps))):
            batch = step(batch, step_key)
        return batch

    return augment
