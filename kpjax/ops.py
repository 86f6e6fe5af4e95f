"""The models' convolution and max-pool: stock Flax/lax ops, with gradients rewritten for XLA:CPU only.

XLA:CPU lowers the stock gradients of max-pooling (select-and-scatter) and of
small-channel convolutions (Eigen spatial convolutions) several times slower
than the equivalent elementwise ops and matmuls, so on CPU these ops carry their
own VJPs built only from reshapes, compares and plain matmuls. GPUs and TPUs
have fast kernels for the stock ops, which the custom VJPs would only hide from
cuDNN and the TPU compiler: there the stock ops run. The choice is made by
``jax.lax.platform_dependent`` when the computation is lowered, so one traced
step (or one ``jax.export`` artefact for several platforms) is right everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

FAST_PLATFORMS = ("cpu",)  # where the custom VJPs below replace the stock ops


def _per_platform(fast, stock, *args):
    return lax.platform_dependent(*args, default=stock, **dict.fromkeys(FAST_PLATFORMS, fast))


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """``nnx.max_pool`` over 2x2 windows, stride 2, NHWC; on CPU through ``max_pool_2x2_cpu``."""
    return _per_platform(max_pool_2x2_cpu, lambda x: nnx.max_pool(x, (2, 2), strides=(2, 2)), x)


def conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """VALID stride-1 NHWC convolution with an HWIO kernel, without bias (so that it can follow a pooling)."""
    return conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding, *,
                         lhs_dilation=None, rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                         **kwargs) -> jax.Array:
    """``lax.conv_general_dilated``, as ``nnx.Conv(conv_general_dilated=...)`` calls it; on CPU, stride-1
    NHWC convolutions with an HWIO kernel go through ``conv2d_cpu`` (after zero padding)."""
    def stock(lhs, rhs):
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                        feature_group_count=feature_group_count, **kwargs)

    im2col = (lhs.ndim == 4 and feature_group_count == 1
              and all(d == 1 for d in (*window_strides, *(lhs_dilation or ()), *(rhs_dilation or ())))
              and all(option is None for option in kwargs.values())  # precision, preferred_element_type, ...
              and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
              == lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC")))
    if not im2col:
        return stock(lhs, rhs)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)

    def fast(lhs, rhs):
        return conv2d_cpu(jnp.pad(lhs, ((0, 0), *padding, (0, 0))), rhs)

    return _per_platform(fast, stock, lhs, rhs)


def _windows(x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2, :].reshape(n, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def max_pool_2x2_cpu(x: jax.Array) -> jax.Array:
    """2x2 max-pool, stride 2, NHWC; odd trailing rows/columns are dropped (Keras 'valid').

    The gradient goes to one winner per window, the first maximum in row-major
    order, as with ``lax.reduce_window`` (and TF's MaxPoolGrad).
    """
    return _windows(x).max(axis=(2, 4))


def _max_pool_fwd(x):
    y = _windows(x).max(axis=(2, 4))
    return y, (x, y)


def _max_pool_bwd(res, g):
    x, y = res
    n, h, w, c = x.shape
    xw = _windows(x)
    taken = jnp.zeros(y.shape, bool)
    parts = []
    for p in (0, 1):
        for q in (0, 1):
            win = (xw[:, :, p, :, q, :] == y) & ~taken
            taken = taken | win
            parts.append(jnp.where(win, g, jnp.zeros((), g.dtype)))
    rows = [jnp.stack(parts[0:2], axis=3), jnp.stack(parts[2:4], axis=3)]
    dx = jnp.stack(rows, axis=2).reshape(n, h // 2 * 2, w // 2 * 2, c)
    return (jnp.pad(dx, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


max_pool_2x2_cpu.defvjp(_max_pool_fwd, _max_pool_bwd)


def _patches(x: jax.Array, kh: int, kw: int) -> jax.Array:
    """im2col for a VALID stride-1 conv: (N, H-kh+1, W-kw+1, kh*kw*C), ordered like an HWIO kernel."""
    ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    return jnp.concatenate([x[:, i : i + ho, j : j + wo, :] for i in range(kh) for j in range(kw)], axis=-1)


@jax.custom_vjp
def conv2d_cpu(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """VALID stride-1 NHWC convolution with an HWIO kernel, without bias.

    Undifferentiated (inference) it is XLA's own convolution, the fastest
    forward. Under differentiation both passes are im2col matmuls: for the seed
    CNN's small channel counts XLA:CPU's convolution gradients (the kernel
    gradient above all) run far below matmul speed, one (N*H*W, kh*kw*C)
    matmul per direction does not. The patches are rebuilt in the backward
    pass rather than kept; the input gradient is a col2im of shifted adds,
    which XLA drops when the input needs no gradient (the first layer).
    """
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _conv2d_fwd(x, kernel):
    kh, kw, cin, cout = kernel.shape
    return _patches(x, kh, kw) @ kernel.reshape(kh * kw * cin, cout), (x, kernel)


def _conv2d_bwd(res, g):
    x, kernel = res
    kh, kw, cin, cout = kernel.shape
    n, ho, wo, _ = g.shape
    g2 = g.reshape(n * ho * wo, cout)
    dk = _patches(x, kh, kw).reshape(n * ho * wo, kh * kw * cin).T @ g2
    gp = (g2 @ kernel.reshape(kh * kw * cin, cout).T).reshape(n, ho, wo, kh, kw, cin)
    dx = sum(
        jnp.pad(gp[:, :, :, i, j, :], ((0, 0), (i, kh - 1 - i), (j, kw - 1 - j), (0, 0)))
        for i in range(kh)
        for j in range(kw)
    )
    return dx, dk.reshape(kernel.shape)


conv2d_cpu.defvjp(_conv2d_fwd, _conv2d_bwd)

