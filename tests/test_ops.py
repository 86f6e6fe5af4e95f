"""kpjax.ops against plain jax/lax reference formulations: forward values and gradients, ties included."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax
from jax.test_util import check_grads

from kpjax.models import HeatmapCNN, SeedCNN, create_model
from kpjax.ops import conv2d, max_pool_2x2


def pool_ref(x):
    """lax.reduce_window max-pool: its gradient goes to the first maximum of each window."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def conv_ref(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _rand(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _vjp(f, *args, seed=1):
    out, vjp = jax.vjp(f, *args)
    return out, vjp(_rand(out.shape, seed))


@pytest.mark.parametrize("shape", [(2, 6, 8, 3), (2, 7, 9, 4), (1, 5, 5, 1)])
def test_max_pool_matches_reduce_window(shape):
    x = _rand(shape)
    out, (dx,) = _vjp(max_pool_2x2, x)
    ref, (dref,) = _vjp(pool_ref, x)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(dx, dref)


def test_max_pool_ties_route_to_first_max_only():
    # Coarse values make ties common; whole windows of equal values included.
    x = jnp.round(_rand((3, 9, 11, 5)) * 1.5) / 2
    x = x.at[0, :4, :4, :].set(1.0)
    out, (dx,) = _vjp(max_pool_2x2, x)
    ref, (dref,) = _vjp(pool_ref, x)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(dx, dref)
    # one winner per window: a cotangent of ones lands as exactly one 1 per window
    (ones,) = jax.vjp(max_pool_2x2, x)[1](jnp.ones_like(out))
    assert set(np.unique(np.asarray(ones))) <= {0.0, 1.0}
    assert float(ones.sum()) == out.size


def test_max_pool_grad_numerically():
    check_grads(max_pool_2x2, (_rand((2, 6, 6, 3)),), order=1, modes=("rev",), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("xs,ks", [((2, 12, 12, 1), (3, 3, 1, 4)), ((2, 9, 10, 5), (2, 2, 5, 6)), ((1, 6, 6, 3), (2, 3, 3, 2))])
def test_conv2d_matches_lax(xs, ks):
    x, k = _rand(xs), _rand(ks, seed=2)
    out, (dx, dk) = _vjp(conv2d, x, k)
    ref, (dxr, dkr) = _vjp(conv_ref, x, k)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)  # im2col forward (under differentiation)
    np.testing.assert_allclose(jax.jit(conv2d)(x, k), ref, rtol=1e-5, atol=1e-5)  # inference forward
    np.testing.assert_allclose(dx, dxr, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dk, dkr, rtol=1e-4, atol=1e-4)


def test_conv2d_grad_numerically():
    check_grads(conv2d, (_rand((1, 5, 6, 2)), _rand((2, 2, 2, 3), seed=3)), order=1, modes=("rev",), atol=1e-2, rtol=1e-2)


def _seed_ref(model, x):
    """SeedCNN's plain formulation: nnx.Conv, ReLU, then pooling."""
    for conv in (model.conv1, model.conv2, model.conv3):
        x = pool_ref(jax.nn.relu(conv(x)))
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(model.dense2(jax.nn.relu(model.dense1(x))))
    return model.head(x)


def test_seed_cnn_matches_plain_formulation():
    model = SeedCNN(num_outputs=30, size=32, channels=1, rngs=nnx.Rngs(params=0))
    x = jnp.asarray(np.random.default_rng(0).random((2, 32, 32, 1)), jnp.float32)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params, f):
        return jnp.sum(f(nnx.merge(graphdef, params, rest), x) ** 2)

    fast = jax.value_and_grad(loss)(params, lambda m, x: m(x))
    ref = jax.value_and_grad(loss)(params, _seed_ref)
    np.testing.assert_allclose(fast[0], ref[0], rtol=1e-5)
    np.testing.assert_allclose(jax.jit(lambda x: model(x))(x), _seed_ref(model, x), rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(fast[1]), jax.tree.leaves(ref[1])):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_heatmap_soft_argmax_decodes_a_peak_to_its_cell_centre():
    model = HeatmapCNN(num_outputs=4, size=96, channels=1, rngs=nnx.Rngs(params=0))
    logits = jnp.zeros((1, 24, 24, 2)).at[0, 5, 17, 0].set(50.0).at[0, 20, 2, 1].set(50.0)
    cell_centre = lambda i: ((i + 0.5) * 4 - 0.5 - 48) / 48  # noqa: E731  a 1/4-resolution cell, in the seed's units
    expected = [cell_centre(17), cell_centre(5), cell_centre(2), cell_centre(20)]  # x, y per keypoint
    np.testing.assert_allclose(model._soft_argmax(logits)[0], expected, atol=1e-6)
    flat = model._soft_argmax(jnp.zeros((1, 24, 24, 2)))[0]  # a flat map decodes to the frame's centre
    np.testing.assert_allclose(flat, [cell_centre(11.5)] * 4, atol=1e-6)


@pytest.mark.parametrize("name", ["heatmap", "heatmap-wide"])
def test_heatmap_model_predicts_keypoints_and_trains_its_batch_statistics(name):
    model = create_model(name, num_outputs=30, size=96, channels=1)
    x = jnp.asarray(np.random.default_rng(0).random((3, 96, 96, 1)), jnp.float32)
    assert model(x).shape == (3, 30)
    before = np.asarray(model.encoder_norms[0].mean[...])
    model(x, rngs=nnx.Rngs(0))  # training mode updates the running statistics
    assert not np.allclose(before, model.encoder_norms[0].mean[...])
    with pytest.raises(Exception, match="divisible by 16"):
        HeatmapCNN(num_outputs=30, size=100, channels=1, rngs=nnx.Rngs(params=0))
