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


def _patches(x, kh, kw):
    n, h, w, c = x.shape
    ho, wo = h - kh + 1, w - kw + 1
    return jnp.concatenate([x[:, i : i + ho, j : j + wo, :] for i in range(kh) for j in range(kw)], axis=-1)


@jax.custom_vjp
def conv2d_im2col(x, kernel, bias):
    kh, kw, cin, cout = kernel.shape
    return _patches(x, kh, kw) @ kernel.reshape(-1, cout) + bias


def _conv_fwd(x, kernel, bias):
    return conv2d_im2col(x, kernel, bias), (x, kernel)


def _conv_bwd(res, g):
    x, kernel = res
    kh, kw, cin, cout = kernel.shape
    p = _patches(x, kh, kw)
    dk = (p.reshape(-1, p.shape[-1]).T @ g.reshape(-1, cout)).reshape(kernel.shape)
    gp = (g @ kernel.reshape(-1, cout).T)
    n, ho, wo, _ = g.shape
    gp = gp.reshape(n, ho, wo, kh, kw, cin)
    dx = sum(jnp.pad(gp[:, :, :, i, j, :], ((0, 0), (i, kh - 1 - i), (j, kw - 1 - j), (0, 0))) for i in range(kh) for j in range(kw))
    return dx, dk, g.sum(axis=(0, 1, 2))


conv2d_im2col.defvjp(_conv_fwd, _conv_bwd)


@jax.custom_vjp
def conv2d_mixed(x, kernel, bias):
    kh, kw, cin, cout = kernel.shape
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias


def _mixed_fwd(x, kernel, bias):
    return conv2d_mixed(x, kernel, bias), (x, kernel)


def _mixed_bwd(res, g):
    x, kernel = res
    kh, kw, cin, cout = kernel.shape
    p = _patches(x, kh, kw)
    dk = (p.reshape(-1, p.shape[-1]).T @ g.reshape(-1, cout)).reshape(kernel.shape)
    dx = jax.lax.conv_general_dilated(g, kernel[::-1, ::-1].transpose(0, 1, 3, 2), (1, 1), ((kh - 1, kh - 1), (kw - 1, kw - 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return dx, dk, g.sum(axis=(0, 1, 2))


conv2d_mixed.defvjp(_mixed_fwd, _mixed_bwd)
