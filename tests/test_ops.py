"""kpjax.ops: its CPU kernels against plain jax/lax references (values and gradients, ties included), the models
on the CPU path against the stock one, and which ops each platform's lowering holds."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax
from jax.test_util import check_grads

from kpjax import ops
from kpjax.augment import make_augmentation
from kpjax.checkpoint import load_model
from kpjax.config import TrainConfig
from kpjax.forward import split_model
from kpjax.keypoints import KAGGLE
from kpjax.models import HeatmapCNN, create_model
from kpjax.ops import conv2d_cpu, max_pool_2x2_cpu
from kpjax.train_step import init_state, make_optimizer, make_train_step


def pool_ref(x):
    """lax.reduce_window max-pool: its gradient goes to the first maximum of each window."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


NHWC = ("NHWC", "HWIO", "NHWC")


def conv_ref(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=NHWC)


def _rand(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _vjp(f, *args, seed=1):
    out, vjp = jax.vjp(f, *args)
    return out, vjp(_rand(out.shape, seed))


@pytest.mark.parametrize("shape", [(2, 6, 8, 3), (2, 7, 9, 4), (1, 5, 5, 1)])
def test_max_pool_matches_reduce_window(shape):
    x = _rand(shape)
    out, (dx,) = _vjp(max_pool_2x2_cpu, x)
    ref, (dref,) = _vjp(pool_ref, x)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(dx, dref)


def test_max_pool_ties_route_to_first_max_only():
    # Coarse values make ties common; whole windows of equal values included.
    x = jnp.round(_rand((3, 9, 11, 5)) * 1.5) / 2
    x = x.at[0, :4, :4, :].set(1.0)
    out, (dx,) = _vjp(max_pool_2x2_cpu, x)
    ref, (dref,) = _vjp(pool_ref, x)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(dx, dref)
    # one winner per window: a cotangent of ones lands as exactly one 1 per window
    (ones,) = jax.vjp(max_pool_2x2_cpu, x)[1](jnp.ones_like(out))
    assert set(np.unique(np.asarray(ones))) <= {0.0, 1.0}
    assert float(ones.sum()) == out.size


def test_max_pool_grad_numerically():
    check_grads(max_pool_2x2_cpu, (_rand((2, 6, 6, 3)),), order=1, modes=("rev",), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("xs,ks", [((2, 12, 12, 1), (3, 3, 1, 4)), ((2, 9, 10, 5), (2, 2, 5, 6)), ((1, 6, 6, 3), (2, 3, 3, 2))])
def test_conv2d_matches_lax(xs, ks):
    x, k = _rand(xs), _rand(ks, seed=2)
    out, (dx, dk) = _vjp(conv2d_cpu, x, k)
    ref, (dxr, dkr) = _vjp(conv_ref, x, k)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)  # im2col forward (under differentiation)
    np.testing.assert_allclose(jax.jit(conv2d_cpu)(x, k), ref, rtol=1e-5, atol=1e-5)  # inference forward
    np.testing.assert_allclose(dx, dxr, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dk, dkr, rtol=1e-4, atol=1e-4)


def test_conv2d_grad_numerically():
    check_grads(conv2d_cpu, (_rand((1, 5, 6, 2)), _rand((2, 2, 2, 3), seed=3)), order=1, modes=("rev",), atol=1e-2, rtol=1e-2)


@contextlib.contextmanager
def stock_ops():
    """Every platform on the stock ops, as a GPU runs the models: the CPU path's reference.

    The ops read FAST_PLATFORMS when traced, so traces cached on either side are dropped.
    """
    jax.clear_caches()
    saved, ops.FAST_PLATFORMS = ops.FAST_PLATFORMS, ()
    try:
        yield
    finally:
        ops.FAST_PLATFORMS = saved
        jax.clear_caches()


def test_ops_take_the_stock_path_when_asked():
    x, k = _rand((1, 6, 6, 2)), _rand((2, 2, 2, 3), seed=2)
    pool = ops.max_pool_2x2
    conv = lambda x: ops.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC)  # noqa: E731
    fast = [str(jax.make_jaxpr(f)(x)) for f in (pool, conv)]
    with stock_ops():
        stock = [str(jax.make_jaxpr(f)(x)) for f in (pool, conv)]
    assert all("custom_vjp_call" in text for text in fast)
    strided = lambda x: ops.conv_general_dilated(x, k, (2, 2), "SAME", dimension_numbers=NHWC)  # noqa: E731
    assert "custom_vjp_call" not in str(jax.make_jaxpr(strided)(x))  # no im2col gradient for it: stock everywhere
    assert not any("custom_vjp_call" in text for text in stock)


@pytest.mark.parametrize("name", ["seed", "compact", "heatmap"])
def test_models_give_the_same_loss_and_gradients_on_the_cpu_and_stock_paths(name):
    model = create_model(name, num_outputs=30, size=48, channels=1)
    x = jnp.asarray(np.random.default_rng(0).random((2, 48, 48, 1)), jnp.float32)
    graphdef, params, rest = split_model(model)

    def loss(params):
        return jnp.sum(nnx.merge(graphdef, params, rest)(x) ** 2)

    fast = jax.jit(jax.value_and_grad(loss))(params)
    with stock_ops():
        stock = jax.jit(jax.value_and_grad(loss))(params)
    np.testing.assert_allclose(fast[0], stock[0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(fast[1]), jax.tree.leaves(stock[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_shipped_model_predicts_the_same_on_the_cpu_and_stock_paths():
    model, _ = load_model(None)
    x = jnp.asarray(np.random.default_rng(0).random((4, 96, 96, 1)), jnp.float32)
    fast = jax.jit(lambda x: model(x))(x)
    with stock_ops():
        np.testing.assert_allclose(fast, jax.jit(lambda x: model(x))(x), atol=1e-5)


def _lowered_train_step(name: str, platform: str) -> str:
    """The StableHLO of a whole train step of ``name``, lowered for ``platform`` (present or not)."""
    model = create_model(name, num_outputs=30, size=48, channels=1)
    tx = make_optimizer(TrainConfig(), steps_per_epoch=1)
    graphdef, state = init_state(model, tx)
    step = make_train_step(tx, make_augmentation(TrainConfig(), KAGGLE))
    batch = {"images": jnp.zeros((2, 48, 48, 1), jnp.uint8), "targets": jnp.zeros((2, 30)),
             "mask": jnp.ones((2, 30), bool)}
    return jax.export.export(step, platforms=[platform])(graphdef, state, batch, jax.random.key(0)).mlir_module()


@pytest.mark.parametrize("name", ["seed", "heatmap"])
def test_cuda_lowering_runs_stock_ops_and_cpu_lowering_keeps_its_fast_path(name):
    """On CUDA every convolution and pooling is XLA's own (cuDNN's), gradients included: its max-pool gradient
    is select-and-scatter. On CPU the 3x3/2x2 convolutions are matmuls and pooling is reshape-and-max."""
    cuda, cpu = _lowered_train_step(name, "cuda"), _lowered_train_step(name, "cpu")
    assert cuda.count("stablehlo.select_and_scatter") == 3 and "stablehlo.reduce_window" in cuda
    assert "stablehlo.select_and_scatter" not in cpu and "stablehlo.reduce_window" not in cpu
    # forward, kernel gradient, input gradient (none for the first layer); on CPU only the heatmap's two 1x1 layers
    expected_convolutions = {"seed": (3 + 3 + 2, 0), "heatmap": (8 + 8 + 7, 3 * 2)}[name]
    assert (cuda.count("stablehlo.convolution"), cpu.count("stablehlo.convolution")) == expected_convolutions


def test_heatmap_soft_argmax_decodes_a_peak_to_its_cell_centre():
    model = HeatmapCNN(num_outputs=4, size=96, channels=1, rngs=nnx.Rngs(params=0))
    logits = jnp.zeros((1, 24, 24, 2)).at[0, 5, 17, 0].set(50.0).at[0, 20, 2, 1].set(50.0)
    cell_centre = lambda i: ((i + 0.5) * 4 - 0.5 - 48) / 48  # noqa: E731  a 1/4-resolution cell, in the seed's units
    expected = [cell_centre(17), cell_centre(5), cell_centre(2), cell_centre(20)]  # x, y per keypoint
    softmax = lambda x: jax.nn.softmax(x.reshape(1, -1, 2), axis=1).reshape(x.shape)  # noqa: E731
    points, spread = model._soft_argmax(softmax(logits))
    np.testing.assert_allclose(points[0], expected, atol=1e-6)
    np.testing.assert_allclose(spread[0], 0.0, atol=1e-2)  # all the mass on one cell
    flat, flat_spread = model._soft_argmax(softmax(jnp.zeros((1, 24, 24, 2))))  # a flat map: the frame's centre
    np.testing.assert_allclose(flat[0], [cell_centre(11.5)] * 4, atol=1e-6)
    # spread out over the frame: the RMS distance of 24 x 24 cells 4 px apart from their centre
    np.testing.assert_allclose(flat_spread[0], 4 * np.sqrt(2 * (24**2 - 1) / 12), rtol=1e-4)


@pytest.mark.parametrize("name, cell", [("heatmap", 4), ("heatmap-wide", 4), ("heatmap-fine", 2)])
def test_heatmap_model_predicts_keypoints_and_trains_its_batch_statistics(name, cell):
    model = create_model(name, num_outputs=30, size=96, channels=1)
    x = jnp.asarray(np.random.default_rng(0).random((3, 96, 96, 1)), jnp.float32)
    assert model(x).shape == (3, 30)
    assert model._features(x, train=False)[0].shape[1:3] == (96 // cell, 96 // cell)  # the heatmaps' resolution
    before = np.asarray(model.encoder_norms[0].mean[...])
    model(x, rngs=nnx.Rngs(0))  # training mode updates the running statistics
    assert not np.allclose(before, model.encoder_norms[0].mean[...])
    with pytest.raises(Exception, match="divisible by 16"):
        HeatmapCNN(num_outputs=30, size=100, channels=1, rngs=nnx.Rngs(params=0))
