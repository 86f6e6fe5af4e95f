"""Layer primitives shared by the models, with gradients written for XLA:CPU.

XLA:CPU lowers the stock gradients of max-pooling (select-and-scatter) and of
small-channel convolutions (Eigen spatial convolutions) several times slower
than the equivalent elementwise ops and matmuls, so these ops carry their own
VJPs built only from reshapes, compares and plain matmuls.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _windows(x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2, :].reshape(n, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
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


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)



def _patches(x: jax.Array, kh: int, kw: int) -> jax.Array:
    """im2col for a VALID stride-1 conv: (N, H-kh+1, W-kw+1, kh*kw*C), ordered like an HWIO kernel."""
    ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    return jnp.concatenate([x[:, i : i + ho, j : j + wo, :] for i in range(kh) for j in range(kw)], axis=-1)


@jax.custom_vjp
def conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
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


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)

