"""ONNX export: onnxruntime reproduces the JAX predict step, for the seed CNN and for batch-norm/pooling models."""

from __future__ import annotations

import jax
import numpy as np
import onnxruntime
import pytest
from flax import nnx
from typer.testing import CliRunner

from kpjax.checkpoint import load_model
from kpjax.cli import app
from kpjax.config import TrainConfig
from kpjax.errors import KpjaxError
from kpjax.export import to_onnx, verify
from kpjax.models import MODELS, create_model
from kpjax.sources.synthetic import make_faces
from kpjax.forward import predict_step, split_model


def test_export_round_trip(trained_run, tmp_path):
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(app, ["export", "--model", str(trained_run), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "onnxruntime matches JAX" in result.output
    model, _ = load_model(trained_run)
    graphdef, params, rest = split_model(model)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    faces = make_faces(5, seed=3).images
    for batch in (faces[:1], faces):  # the batch size is free
        (onnx_out,) = session.run(["keypoints"], {"images": batch})
        assert onnx_out.shape == (len(batch), 30)
        np.testing.assert_allclose(onnx_out, np.asarray(predict_step(graphdef, params, rest, batch)[0]), atol=1e-4)


class PoolNet(nnx.Module):
    """Layers the seed CNN lacks: strided SAME conv, batch norm, flax pooling, an activation other than ReLU."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 8, (3, 3), strides=2, padding="SAME", rngs=rngs)
        self.norm = nnx.BatchNorm(8, use_running_average=True, rngs=rngs)
        self.head = nnx.Linear(8 * 12 * 12, 30, rngs=rngs)

    def __call__(self, x):
        x = nnx.max_pool(jax.nn.gelu(self.norm(self.conv(x))), (2, 2), (2, 2))
        x = nnx.avg_pool(x, (3, 3), (2, 2), padding="SAME")
        return self.head(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize("name", ["resnet-small", "heatmap", "heatmap-fine", "pool-net"])
def test_other_layers_export(name):
    config = TrainConfig()  # the frame: 96x96 grey, Kaggle's keypoints
    if name == "pool-net":
        model = PoolNet(nnx.Rngs(0))
        model.norm.mean[...] = jax.random.normal(jax.random.key(1), (8,))
        model.norm.var[...] = jax.random.uniform(jax.random.key(2), (8,), minval=0.5, maxval=2.0)
    else:
        if name not in MODELS:
            pytest.skip(f"{name} is not registered")
        model = create_model(name, num_outputs=30, size=96, channels=1)
    assert verify(to_onnx(model, config), model, config) <= 1e-4


def test_bias_and_relu_after_a_pool_go_onto_the_convolution():
    """The seed adds its bias and applies ReLU after pooling; the graph puts both on the convolution, where
    onnxruntime fuses them, and the outputs stay JAX's."""
    config = TrainConfig(model="seed")
    model = create_model("seed", num_outputs=30, size=96, channels=1)
    proto = to_onnx(model, config)
    ops = [node.op_type for node in proto.graph.node]
    convs = [node for node in proto.graph.node if node.op_type == "Conv"]
    assert len(convs) == 3 and all(len(conv.input) == 3 for conv in convs)  # the bias is the Conv's own
    assert all(ops[i + 1] == "Relu" for i, op in enumerate(ops) if op == "Conv")
    assert "Add" not in ops[: ops.index("Reshape")]
    used = {name for node in proto.graph.node for name in node.input}
    assert all(t.name in used for t in proto.graph.initializer)  # no constant left over for onnxruntime to warn of
    assert verify(proto, model, config) <= 1e-4


def test_a_pooled_value_used_twice_is_left_alone():
    class Branches(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(1, 4, (3, 3), use_bias=False, rngs=rngs)
            self.bias = nnx.Param(jax.random.normal(jax.random.key(3), (4,)))
            self.head = nnx.Linear(48 * 48 * 4, 30, rngs=rngs)

        def __call__(self, x):
            pooled = nnx.max_pool(self.conv(x), (2, 2), (2, 2))
            x = jax.nn.relu(pooled + self.bias[...]) + pooled  # the pooled value is read twice
            return self.head(x.reshape(x.shape[0], -1))

    model, config = Branches(nnx.Rngs(0)), TrainConfig()
    proto = to_onnx(model, config)
    assert all(len(node.input) == 2 for node in proto.graph.node if node.op_type == "Conv")
    assert verify(proto, model, config) <= 1e-4


def test_unsupported_operation_is_named():
    class Sorter(nnx.Module):
        def __call__(self, x):
            return jax.numpy.sort(x.reshape(x.shape[0], -1), axis=1)[:, :30]

    with pytest.raises(KpjaxError, match="sort"):
        to_onnx(Sorter(), TrainConfig())
