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
from kpjax.ops import conv2d, conv_general_dilated, max_pool_2x2


# nnx.Conv whose convolution takes kpjax.ops' fast gradient on CPU; its parameters are nnx.Conv's.
_Conv = functools.partial(nnx.Conv, conv_general_dilated=conv_general_dilated)


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


def _upsample_2x(x: jax.Array) -> jax.Array:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _space_to_depth_2x(x: jax.Array) -> jax.Array:
    """Each 2x2 block of pixels into channels: half the resolution with nothing lost, and no full-size layer."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h // 2, w // 2, 4 * c)


class HeatmapCNN(nnx.Module):
    """A small encoder-decoder: one heatmap per keypoint at 1/4 resolution (1/2 with ``fine``), decoded by a
    spatial soft-argmax.

    The soft-argmax (the expected position under a softmax over the map) is
    differentiable and sub-pixel, so the same coordinate MSE trains it; unlike a
    dense head over the whole map, each output position is read by shared
    convolution weights, which generalises better from a few thousand faces.
    The encoder goes down to 1/16 for context, the decoder back up to 1/4 with
    skip connections; each decoder convolution runs before its upsampling, and the
    stem folds 2x2 pixels into channels, so it costs about what the seed CNN does.
    """

    def __init__(self, *, num_outputs: int, size: int, channels: int, rngs: nnx.Rngs,
                 widths: tuple[int, ...] = (32, 64, 96, 96), decoder: int = 64, fine: bool = False,
                 error_head: bool = False):
        if size % 16:
            raise KpjaxError(f"--model heatmap needs a --size divisible by 16, got {size}")
        self.size = size
        conv = functools.partial(_Conv, kernel_size=(3, 3), rngs=rngs)
        self.encoder = nnx.List([conv(cin, cout) for cin, cout in zip((4 * channels, *widths[:-1]), widths)])
        self.encoder_norms = nnx.List([nnx.BatchNorm(w, momentum=0.9, rngs=rngs) for w in widths[1:]])
        self.up_16_to_8 = conv(widths[3], widths[2])
        self.up_8_to_4 = conv(widths[2], decoder)
        self.skip_4 = nnx.Conv(widths[1], decoder, (1, 1), rngs=rngs)
        self.decoder_norms = nnx.List([nnx.BatchNorm(w, momentum=0.9, rngs=rngs) for w in (widths[2], decoder)])
        if fine:  # a last stage up to 1/2, half as wide, skipped from the stem: 2-px heatmap cells, not 4
            self.up_4_to_2 = conv(decoder, decoder // 2)
            self.skip_2 = nnx.Conv(widths[0], decoder // 2, (1, 1), rngs=rngs)
            self.fine_norm = nnx.BatchNorm(decoder // 2, momentum=0.9, rngs=rngs)
        self.fine = fine
        head_channels = decoder // 2 if fine else decoder
        self.heatmaps = nnx.Conv(head_channels, num_outputs // 2, (1, 1), rngs=rngs)
        # Created last, so the keypoint layers draw the same initial weights with or without it.
        self.error_head = ErrorHead(head_channels, widths[3], rngs=rngs) if error_head else None

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None, with_error: bool = False):
        """(N, 2K) keypoints; with ``with_error``, also each keypoint's log expected error in frame pixels
        (N, K), or None for a model without an error head."""
        decoded, context = self._features(x, train=rngs is not None)
        n, h, w, k = (*decoded.shape[:3], self.heatmaps.out_features)
        weights = jax.nn.softmax(self.heatmaps(decoded).reshape(n, h * w, k), axis=1).reshape(n, h, w, k)
        points, spread = self._soft_argmax(weights)
        if not with_error:
            return points
        if self.error_head is None:
            return points, None
        # The error head learns from the keypoints' errors without changing how they are found.
        log_error = self.error_head(*jax.lax.stop_gradient((decoded, weights, context, spread)))
        return points, log_error

    def _features(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        """The decoder's features at 1/4 resolution (1/2 with ``fine``) and the encoder's at 1/16."""
        x = jax.nn.relu(self.encoder[0](_space_to_depth_2x(x)))
        features = [x]  # at 1/2, 1/4, 1/8 and 1/16 of the input
        for conv, norm in zip(self.encoder[1:], self.encoder_norms):
            x = jax.nn.relu(norm(conv(max_pool_2x2(x)), use_running_average=not train))
            features.append(x)
        x = _upsample_2x(self.up_16_to_8(x)) + features[2]
        x = jax.nn.relu(self.decoder_norms[0](x, use_running_average=not train))
        x = _upsample_2x(self.up_8_to_4(x)) + self.skip_4(features[1])
        x = jax.nn.relu(self.decoder_norms[1](x, use_running_average=not train))
        if self.fine:
            x = _upsample_2x(self.up_4_to_2(x)) + self.skip_2(features[0])
            x = jax.nn.relu(self.fine_norm(x, use_running_average=not train))
        return x, features[3]

    def _soft_argmax(self, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Each heatmap's expected position (N, 2K, seed's units) and spread (N, K): the RMS distance of its
        mass from that position, in frame pixels."""
        n, h, w, k = weights.shape
        half = self.size / 2
        centres = ((jnp.arange(w) + 0.5) * (self.size / w) - 0.5 - half) / half  # cell centres, seed's units
        x = jnp.sum(weights * centres[None, None, :, None], axis=(1, 2))
        y = jnp.sum(weights * centres[None, :, None, None], axis=(1, 2))
        variance = (jnp.sum(weights * centres[None, None, :, None] ** 2, axis=(1, 2)) - x**2
                    + jnp.sum(weights * centres[None, :, None, None] ** 2, axis=(1, 2)) - y**2)
        spread = jnp.sqrt(jnp.maximum(variance, 0.0)) * half
        return jnp.concatenate([x[..., None], y[..., None]], axis=-1).reshape(n, 2 * k), spread  # x0, y0, x1, ...


# A keypoint's error (x, y) is modelled as two independent Laplace variables of one scale b: its expected distance
# is LAPLACE_MEAN_DISTANCE * b (what the error head predicts), its expected squared distance 4 * b**2.
LAPLACE_MEAN_DISTANCE = 1.6226


class ErrorHead(nnx.Module):
    """Each keypoint's expected error: a small MLP, shared by the keypoints, over the decoder's features pooled
    by that keypoint's heatmap, the whole face's encoder features and the heatmap's spread.

    Trained by ``train_step.error_nll`` on the keypoints' own (stop-gradient) residuals, it answers
    "how far off is this point likely to be?" where the heatmap's shape alone barely does.
    """

    def __init__(self, local_channels: int, context_channels: int, *, rngs: nnx.Rngs, hidden: int = 64):
        self.hidden = nnx.Linear(local_channels + context_channels + 1, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, 1, rngs=rngs)

    def __call__(self, decoded: jax.Array, weights: jax.Array, context: jax.Array, spread: jax.Array) -> jax.Array:
        """(N, K) log expected error, frame pixels."""
        n, h, w, k = weights.shape
        local = jnp.einsum("nsk,nsc->nkc", weights.reshape(n, h * w, k), decoded.reshape(n, h * w, -1))
        context = jnp.broadcast_to(context.mean(axis=(1, 2))[:, None, :], (*local.shape[:2], context.shape[-1]))
        features = jnp.concatenate([local, context, jnp.log(spread + 1e-3)[..., None]], axis=-1)
        return jnp.squeeze(self.out(jax.nn.relu(self.hidden(features))), -1)


MODELS: dict[str, Callable[..., nnx.Module]] = {
    "seed": SeedCNN,
    "compact": CompactCNN,
    "resnet": ResNet,
    "resnet-small": functools.partial(ResNet, widths=(16, 32, 64, 128), hidden=128),
    "heatmap": HeatmapCNN,
    "heatmap-wide": functools.partial(HeatmapCNN, widths=(48, 96, 144, 144), decoder=96),
    # Wider at 1/8 and 1/16, where channels are cheap: 1.9 M parameters for about twice heatmap-wide's time, and
    # end to end no better than heatmap-wide; more pixels were (configs/photo_hires.py).
    "heatmap-xl": functools.partial(HeatmapCNN, widths=(64, 128, 256, 256), decoder=128),
    # Heatmap cells of 2 px instead of 4, for 1.6x heatmap-wide's time: at 128 x 128, no better than it either.
    "heatmap-fine": functools.partial(HeatmapCNN, widths=(48, 96, 144, 144), decoder=96, fine=True),
}


# The models that can estimate each keypoint's error (``error_head``): the heatmap models, from their heatmaps.
WITH_ERROR_HEAD = ("heatmap", "heatmap-wide", "heatmap-xl", "heatmap-fine")


def create_model(name: str, *, num_outputs: int, size: int, channels: int, seed: int = 0,
                 error_head: bool = False) -> nnx.Module:
    """A fresh model; ``error_head`` is honoured by the models in ``WITH_ERROR_HEAD`` and ignored by the others."""
    options = {"error_head": True} if error_head and name in WITH_ERROR_HEAD else {}
    return MODELS[name](num_outputs=num_outputs, size=size, channels=channels, rngs=nnx.Rngs(params=seed), **options)


def estimates_error(model: nnx.Module) -> bool:
    return getattr(model, "error_head", None) is not None


def to_input(images: jax.Array) -> jax.Array:
    """uint8 images to the models' float [0, 1] input."""
    return images.astype(jnp.float32) / 255.0
