"""Each keypoint's expected error: learnt beside the keypoints without changing them, and handed out with them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kpjax.config import TrainConfig
from kpjax.models import LAPLACE_MEAN_DISTANCE, create_model, estimates_error
from kpjax.train import train
from kpjax.train_step import error_nll


def test_error_head_leaves_the_keypoints_as_they_were(tmp_path):
    """The head is created last and learns from stop-gradient residuals: the same seed trains the same keypoints."""
    histories = {}
    for error_head in (False, True):
        config = TrainConfig(data=["synthetic:256"], model="heatmap", epochs=2, batch_size=32, shift=3.0, margin=4,
                             error_head=error_head)
        histories[error_head] = train(config, tmp_path / str(error_head), log=lambda _: None).history
    for without, with_head in zip(histories[False], histories[True]):
        assert with_head["train_mse"] == without["train_mse"]
        # Predicting the errors too compiles another graph: the same keypoints up to rounding.
        assert with_head["val_mse"] == pytest.approx(without["val_mse"], rel=1e-5)
        assert "train_error_nll" in with_head and "train_error_nll" not in without
    assert histories[True][1]["train_error_nll"] < histories[True][0]["train_error_nll"]


def test_error_nll_is_least_at_the_true_mean_distance():
    """Under the Laplace likelihood, the best constant estimate is the residuals' mean distance."""
    rng = np.random.default_rng(0)
    size, scale_px = 96, 2.0
    residual_px = rng.laplace(scale=scale_px, size=(4000, 2))
    predictions = jnp.asarray(residual_px.reshape(-1, 2) / (size / 2)).reshape(4000, 2)
    targets, mask = jnp.zeros_like(predictions), jnp.ones(predictions.shape, bool)
    candidates = np.linspace(1.0, 6.0, 101)
    losses = [float(error_nll(jnp.full((4000, 1), np.log(c)), predictions, targets, mask, size)) for c in candidates]
    best = candidates[int(np.argmin(losses))]
    assert best == pytest.approx(LAPLACE_MEAN_DISTANCE * scale_px, rel=0.05)


def test_error_nll_trains_only_the_error_estimate():
    predictions = jnp.array([[0.1, -0.2, 0.3, 0.0]])
    grads = jax.grad(lambda p: error_nll(jnp.zeros((1, 2)), p, jnp.zeros((1, 4)), jnp.ones((1, 4), bool), 96))(predictions)
    assert not np.asarray(grads).any()


def test_only_heatmap_models_grow_an_error_head_and_old_runs_load_without_one():
    kwargs = dict(num_outputs=30, size=96, channels=1, error_head=True)
    assert estimates_error(create_model("heatmap", **kwargs))
    assert not estimates_error(create_model("compact", **kwargs))
    legacy = TrainConfig(model="heatmap").to_json().replace('"error_head": true', '"retired": 1')
    assert TrainConfig.from_json(legacy).error_head is False
    assert TrainConfig.from_json(TrainConfig(model="heatmap").to_json()).error_head is True
