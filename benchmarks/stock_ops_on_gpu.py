"""What a GPU runs of kpjax.ops: the compiled train step's convolutions and pooling, and the shipped model's
predictions on the GPU (stock ops) against the CPU (kpjax's CPU path) in one process.

    python benchmarks/stock_ops_on_gpu.py     # on a machine with a CUDA GPU and jax[cuda]

Prints one JSON object: per model, the optimised HLO's count of cuDNN convolution calls, of plain
dot products (the CPU path's im2col matmuls would add them) and of select-and-scatter (the stock
max-pool gradient); and the largest difference between the two backends' predictions.
"""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kpjax.augment import make_augmentation
from kpjax.checkpoint import load_model
from kpjax.config import TrainConfig
from kpjax.keypoints import KAGGLE
from kpjax.models import create_model
from kpjax.train_step import init_state, make_optimizer, make_train_step


def compiled_train_step_ops(name: str) -> dict:
    model = create_model(name, num_outputs=2 * KAGGLE.num_keypoints, size=96, channels=1)
    tx = make_optimizer(TrainConfig(), steps_per_epoch=1)
    graphdef, state = init_state(model, tx)
    step = make_train_step(tx, make_augmentation(TrainConfig(), KAGGLE))
    batch = {"images": jnp.zeros((64, 96, 96, 1), jnp.uint8), "targets": jnp.zeros((64, 30)),
             "mask": jnp.ones((64, 30), bool)}
    hlo = step.lower(graphdef, state, batch, jax.random.key(0)).compile().as_text()
    return {"cudnn_convolutions": len(re.findall(r'custom_call_target="__cudnn\$conv', hlo)),
            "dots": len(re.findall(r"\bdot\(", hlo)) + len(re.findall(r'custom_call_target="__cublas', hlo)),
            "select_and_scatter": len(re.findall(r"select-and-scatter\(", hlo))}


def shipped_model_gpu_vs_cpu() -> float:
    """In full fp32 (no TF32 on the GPU), so that only the ops differ."""
    model, _ = load_model(None)
    graphdef, state = nnx.split(model)
    x = np.random.default_rng(0).random((16, 96, 96, 1)).astype(np.float32)
    predict = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    with jax.default_matmul_precision("highest"):
        on = {kind: np.asarray(predict(*jax.device_put((state, x), jax.devices(kind)[0]))) for kind in ("gpu", "cpu")}
    return float(np.abs(on["gpu"] - on["cpu"]).max())


if __name__ == "__main__":
    print(json.dumps({"devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
                      **{name: compiled_train_step_ops(name) for name in ("seed", "heatmap")},
                      "shipped_model_max_abs_difference_gpu_vs_cpu": shipped_model_gpu_vs_cpu()}))
