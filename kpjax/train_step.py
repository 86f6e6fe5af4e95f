"""The pure, jitted train step (the predict step is ``kpjax.inference.predict_step``).

The model is split once into a static graphdef and a state pytree; the step is
a function of (graphdef, state, batch, key) that donates ``state`` so its
buffers are updated in place, and ``nnx.merge`` happens only inside.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from kpjax.config import TrainConfig
from kpjax.forward import split_model
from kpjax.models import LAPLACE_MEAN_DISTANCE, estimates_error, to_input


def masked_mse(predictions: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean squared error over present values only: a missing keypoint adds nothing, not even gradient."""
    squared = jnp.where(mask, (predictions - targets) ** 2, 0.0)
    return squared.sum() / jnp.maximum(mask.sum(), 1)


# Wing loss's width and curvature (Feng et al., CVPR 2018, their values), in the model frame's pixels.
WING_WIDTH_PX = 10.0
WING_CURVATURE_PX = 2.0


def masked_wing(predictions: jax.Array, targets: jax.Array, mask: jax.Array, size: int) -> jax.Array:
    """Wing loss over present values: log-shaped for errors under ``WING_WIDTH_PX``, so the small and medium
    errors that decide a face's NME keep pulling once MSE's gradient has faded, and L1 above, so a mislabelled
    point pulls no harder than a few pixels' error."""
    error = jnp.abs(predictions - targets) * (size / 2)  # frame pixels
    width, curvature = WING_WIDTH_PX, WING_CURVATURE_PX
    wing = jnp.where(error < width, width * jnp.log1p(error / curvature),
                     error - (width - width * jnp.log1p(width / curvature)))
    return jnp.where(mask, wing, 0.0).sum() / jnp.maximum(mask.sum(), 1)


# A hidden point (``Dataset.hidden``) has no position to learn from, only the fact that it cannot be seen: the
# error head learns that its error is at least this (frame pixels; a visible point's median is about 1.6), a
# censored observation weighted by HIDDEN_WEIGHT beside the visible points' likelihood. Chosen by refitting the
# shipped model's head (EXPERIMENTS.md, "How far off is each point?"): in trial refits, 3 px at 0.3 ranked the
# hidden points a little higher (AUC 0.90 against 0.89) but overstated every face's error (its actual over
# expected NME end to end 0.92 against 0.98).
HIDDEN_MIN_ERROR_PX = 2.0
HIDDEN_WEIGHT = 0.2


def error_nll(log_error: jax.Array, predictions: jax.Array, targets: jax.Array, mask: jax.Array,
              size: int, hidden: jax.Array | None = None) -> jax.Array:
    """Negative log-likelihood of the keypoints' residuals under each one's expected error ``exp(log_error)``
    (frame pixels): x and y Laplace-distributed with the scale that gives that mean distance. ``hidden``
    (N, K) points add the likelihood that their error exceeds ``HIDDEN_MIN_ERROR_PX``.

    The residuals are constants here: the likelihood trains the error estimate, never the keypoints.
    """
    residual = jax.lax.stop_gradient(predictions - targets) * (size / 2)  # frame pixels
    present = mask[:, 0::2] & mask[:, 1::2]
    log_scale = log_error - jnp.log(LAPLACE_MEAN_DISTANCE)
    nll = (jnp.abs(residual[:, 0::2]) + jnp.abs(residual[:, 1::2])) * jnp.exp(-log_scale) + 2 * log_scale
    loss = jnp.where(present, nll, 0.0).sum() / jnp.maximum(present.sum(), 1)
    if hidden is None:
        return loss
    # |x| + |y| of two Laplace errors of scale b is Gamma(2, b): P(|x| + |y| > t) = (1 + t/b) exp(-t/b).
    ratio = HIDDEN_MIN_ERROR_PX * jnp.exp(-log_scale)
    censored = jnp.where(hidden, ratio - jnp.log1p(ratio), 0.0).sum() / jnp.maximum(hidden.sum(), 1)
    return loss + HIDDEN_WEIGHT * censored


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    total = config.epochs * steps_per_epoch
    if config.schedule == "cosine":
        warmup = min(steps_per_epoch, total // 10)
        lr = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, max(total, warmup + 1))
    else:
        lr = config.learning_rate
    if config.weight_decay:
        return optax.adamw(lr, weight_decay=config.weight_decay)
    return optax.adam(lr)


def init_state(model: nnx.Module, tx: optax.GradientTransformation):
    """Split the model once: (graphdef, {params, model's other state, optimizer state})."""
    graphdef, params, rest = split_model(model)
    return graphdef, {"params": params, "rest": rest, "opt_state": tx.init(params)}


def make_train_step(tx: optax.GradientTransformation, augment: Callable[[dict, jax.Array], dict] | None,
                    loss: str = "mse"):
    """A jitted step of (graphdef, state, batch, key) -> (state, metrics), state donated. The keypoints learn
    from ``loss`` (TrainConfig.loss); the metrics' ``loss`` is their MSE whatever they learn from."""

    def train_step(graphdef, state, batch, key):
        augment_key, dropout_key = jax.random.split(key)
        if augment is not None:
            batch = augment(batch, augment_key)

        def loss_fn(params):
            model = nnx.merge(graphdef, params, state["rest"], copy=True)
            images, rngs = to_input(batch["images"]), nnx.Rngs(dropout=dropout_key)
            if estimates_error(model):
                predictions, log_error = model(images, rngs=rngs, with_error=True)
            else:
                predictions, log_error = model(images, rngs=rngs), None
            mse = masked_mse(predictions, batch["targets"], batch["mask"])
            aux = {"loss": mse}
            objective = mse if loss == "mse" else masked_wing(predictions, batch["targets"], batch["mask"],
                                                              batch["images"].shape[1])
            if log_error is not None:
                aux["error_nll"] = error_nll(log_error, predictions, batch["targets"], batch["mask"],
                                             batch["images"].shape[1], batch.get("hidden"))
                objective = objective + aux["error_nll"]
            return objective, (aux, predictions, nnx.state(model, nnx.Not(nnx.Param)))

        (_, (aux, predictions, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        mask = batch["mask"]
        metrics = {
            **aux,
            "mae": jnp.where(mask, jnp.abs(predictions - batch["targets"]), 0.0).sum() / jnp.maximum(mask.sum(), 1),
        }
        return {"params": params, "rest": rest, "opt_state": opt_state}, metrics

    return jax.jit(train_step, static_argnums=0, donate_argnums=1)


@functools.partial(jax.jit, static_argnames="batch_size")
def take_batch(data: dict, order: jax.Array, step: jax.Array, batch_size: int):
    """Gather batch number ``step`` of an epoch's ``order`` from device-resident data."""
    index = jax.lax.dynamic_slice_in_dim(order, step * batch_size, batch_size)
    return jax.tree.map(lambda x: x[index], data)
