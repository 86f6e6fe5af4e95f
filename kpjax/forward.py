"""The model's forward pass, in the two engines kpjax runs it with.

``predict_step`` is XLA's: the jitted function of (graphdef, params, rest, uint8 images) that training's
validation, evaluation and the export use. Photos go through onnxruntime running the graph ``kpjax export``
writes (``kpjax.export.onnx_forward``): on a 2-core CPU it runs the same outputs at 1.5-2x XLA's speed
(benchmarks/inference_engines.py). Either is a ``Forward``: uint8 NHWC images in, (N, 2K) keypoints in the
seed's units and (N, K) expected errors in frame pixels (None without an error head) out.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kpjax.models import estimates_error, to_input

Forward = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, params, rest): the trained parameters apart from the model's other state (e.g. dropout's RNG)."""
    return nnx.split(model, nnx.Param, ...)


def _predict(graphdef, params, rest, images):
    """(N, 2K) keypoints, and (N, K) expected errors in frame pixels (None for a model without an error head)."""
    model = nnx.merge(graphdef, params, rest)
    if not estimates_error(model):
        return model(to_input(images)), None
    points, log_error = model(to_input(images), with_error=True)
    return points, jnp.exp(log_error)


predict_step = jax.jit(_predict, static_argnums=0)


def xla_forward(model: nnx.Module) -> Forward:
    return functools.partial(predict_step, *split_model(model))
