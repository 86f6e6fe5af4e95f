"""A small CNN that tells a face from a not-face, so the cascades can propose generously.

The cascades (``kpjax.detect``) are run with loose settings and on the
mirrored image, which finds turned and small faces but also a lot of
background. Each candidate box is cropped to a ``CROP`` x ``CROP`` grey patch
(with a margin of context) and scored 0..1 by this network; the weights ship
in the package (``weights/face_verifier.npz``), trained by
``experiments/face_verifier.py`` on the training persons' faces against
background crops and cascade false alarms of the same photos.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kpjax.errors import KpjaxError

CROP = 32
MARGIN = 1.25  # the patch's side in box widths: some context around the face helps tell it from texture
WEIGHTS = Path(__file__).resolve().parent / "weights" / "face_verifier.npz"


class FaceVerifier(nnx.Module):
    """Four 3x3 conv + pool blocks and a linear head: one face logit per (N, CROP, CROP, 1) patch in [0, 1]."""

    def __init__(self, *, rngs: nnx.Rngs, widths: tuple[int, ...] = (16, 32, 48, 64)):
        self.convs = nnx.List([nnx.Conv(cin, cout, (3, 3), padding="SAME", rngs=rngs)
                               for cin, cout in zip((1, *widths[:-1]), widths)])
        self.head = nnx.Linear(widths[-1] * 4, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x - 0.5
        for conv in self.convs:
            x = nnx.max_pool(jax.nn.relu(conv(x)), (2, 2), strides=(2, 2))
        return self.head(x.reshape(x.shape[0], -1))[:, 0]


def patches(grey: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, CROP, CROP, 1) float32 patches centred on each (x, y, w, h) box, ``MARGIN`` box widths a side."""
    out = np.empty((len(boxes), CROP, CROP, 1), np.float32)
    for i, (x, y, w, h) in enumerate(boxes):
        scale = CROP / (MARGIN * w)
        # Box pixels x .. x+w-1 have their centre at x + (w - 1) / 2; it goes to the patch's centre.
        tx = (CROP - 1) / 2 - scale * (x + (w - 1) / 2)
        ty = (CROP - 1) / 2 - scale * (y + (h - 1) / 2)
        matrix = np.array([[scale, 0.0, tx], [0.0, scale, ty]])
        flags = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        out[i, ..., 0] = cv2.warpAffine(grey, matrix, (CROP, CROP), flags=flags,
                                        borderMode=cv2.BORDER_REPLICATE)
    return out / 255.0


@functools.partial(jax.jit, static_argnums=0)
def _probabilities(graphdef, state, x):
    return jax.nn.sigmoid(nnx.merge(graphdef, state)(x))


class Scorer:
    """A verifier's face probabilities for patches, in power-of-two batches so a few compilations serve all."""

    def __init__(self, model: FaceVerifier):
        self.graphdef, self.state = nnx.split(model)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        if n == 0:
            return np.zeros(0, np.float32)
        batch = 1 << (n - 1).bit_length()
        padded = np.concatenate([x, np.zeros((batch - n, *x.shape[1:]), x.dtype)])
        return np.asarray(_probabilities(self.graphdef, self.state, padded))[:n]


def save_verifier(model: FaceVerifier, path: Path) -> None:
    """The parameters as one small ``.npz``, keyed by their path in the module."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    np.savez_compressed(path, **{"/".join(map(str, key)): np.asarray(value[...]) for key, value in flat})


def load_verifier(path: Path = WEIGHTS) -> FaceVerifier:
    model = FaceVerifier(rngs=nnx.Rngs(0))
    try:
        saved = np.load(path)
    except (OSError, ValueError) as error:
        raise KpjaxError(f"{path}: unreadable face verifier weights ({error})") from None
    state = nnx.state(model, nnx.Param)
    flat = nnx.to_flat_state(state)
    for key, value in flat:
        name = "/".join(map(str, key))
        if name not in saved.files or saved[name].shape != value[...].shape:
            raise KpjaxError(f"{path}: not face verifier weights ({name} missing or of another shape)")
        value[...] = jnp.asarray(saved[name])
    nnx.update(model, nnx.from_flat_state(flat))
    return model
