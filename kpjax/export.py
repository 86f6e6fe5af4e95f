"""ONNX export: the model's inference function, translated from its jaxpr, runs with onnxruntime alone.

The exported graph is kpjax's own predict step, traced with a symbolic batch:

* input ``images``: uint8, NHWC, (batch, size, size, channels), 0..255, as the
  crops ``kpjax.inference.Predictor`` makes (grey models take one channel);
* output ``keypoints``: float32 (batch, 2K), x then y per keypoint in the
  seed's units; frame pixels are ``(v + 1) * size / 2``;
* output ``errors`` (models with an error head): float32 (batch, K), each
  keypoint's expected error in frame pixels.

kpjax itself runs photos on this graph (``onnx_forward``): onnxruntime is
the faster CPU engine for the forward pass (benchmarks/inference_engines.py).

Translating the jaxpr rather than walking the module tree keeps the order of
operations (activations, pooling, custom-gradient ops) exactly as JAX runs it
(where ``kpjax.ops`` chooses per platform, the stock ops that GPUs run),
for any registered model built from convolutions, dense layers, batch norm,
elementwise activations and pooling; anything else is refused by name.
Operations on parameters alone (bias reshapes, batch-norm scales) are folded
into constants at export. jax2onnx 0.17 was tried first: it fails on
``nnx.Dropout(..., rngs=)`` calls and pulls in equinox, huggingface-hub and an
older orbax, so this small translator is used instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.extend.core as jcore
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime
from flax import nnx
from jax import export

from kpjax.calibration import apply_offset, in_seed_units, offset_of
from kpjax.config import TrainConfig
from kpjax.errors import KpjaxError
from kpjax.forward import Forward, predict_step, split_model

OPSET = 19  # AveragePool takes dilations from 19 on
OUTPUTS = ("keypoints", "errors")
TOLERANCE = 1e-4
INT64_MAX = np.iinfo(np.int64).max


class _Graph:
    """ONNX nodes and constants built up while walking a jaxpr; jax variables map to ONNX value names."""

    def __init__(self):
        self.onnx = onnx
        self.nodes, self.initializers = [], []
        self.names: dict = {}  # jax Var -> ONNX value name
        self.constants: dict = {}  # jax Var -> numpy value known at export time
        self.count = 0  # values named so far

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, value, dtype=None) -> str:
        name = self.fresh("const")
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def ints(self, values) -> str:
        return self.const(np.asarray(values, np.int64))

    def node(self, op: str, inputs: list[str], **attributes) -> str:
        output = self.fresh(op.lower())
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], **attributes))
        return output

    def known(self, atom) -> bool:
        return isinstance(atom, jcore.Literal) or atom in self.constants

    def value(self, atom) -> np.ndarray:
        return np.asarray(atom.val, atom.aval.dtype) if isinstance(atom, jcore.Literal) else self.constants[atom]

    def name(self, atom) -> str:
        """The ONNX name of a jaxpr atom; an export-time constant becomes an initializer on first use."""
        if isinstance(atom, jcore.Literal):
            return self.const(self.value(atom))
        if atom not in self.names:
            self.names[atom] = self.const(self.constants[atom])
        return self.names[atom]

    def walk(self, jaxpr: jcore.Jaxpr, consts: list, inputs: list) -> list:
        """Translate ``jaxpr``; ``inputs`` are the atoms of the enclosing scope bound to its invars."""
        for var, value in zip(jaxpr.constvars, consts):
            self.constants[var] = np.asarray(value)
        for var, atom in zip(jaxpr.invars, inputs):
            if self.known(atom):
                self.constants[var] = self.value(atom)
            else:
                self.names[var] = self.names[atom]
        for eqn in jaxpr.eqns:
            inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
            if eqn.primitive.name == "cond" and self.known(eqn.invars[0]):  # e.g. the platform branch chosen below
                inner = eqn.params["branches"][int(self.value(eqn.invars[0]))]
            if eqn.primitive.name == "platform_index":  # ONNX is no XLA backend: platform_dependent's default
                self.constants[eqn.outvars[0]] = np.int32(eqn.params["platforms"].index(None))
            elif inner is not None:  # jit, custom_jvp_call, custom_vjp_call, ...: inline the primal computation
                closed = inner if isinstance(inner, jcore.ClosedJaxpr) else jcore.ClosedJaxpr(inner, [])
                results = self.walk(closed.jaxpr, closed.consts, eqn.invars[-len(closed.jaxpr.invars):])
                for var, atom in zip(eqn.outvars, results):
                    if self.known(atom):
                        self.constants[var] = self.value(atom)
                    else:
                        self.names[var] = self.names[atom]
            elif all(self.known(atom) for atom in eqn.invars):
                values = eqn.primitive.bind(*[self.value(a) for a in eqn.invars], **eqn.params)
                for var, value in zip(eqn.outvars, values if eqn.primitive.multiple_results else [values]):
                    self.constants[var] = np.asarray(value)
            else:
                translate = _TRANSLATIONS.get(eqn.primitive.name)
                if translate is None:
                    raise KpjaxError(f"export: JAX operation {eqn.primitive.name!r} has no ONNX translation")
                self.names[eqn.outvars[0]] = translate(self, eqn)
        return jaxpr.outvars


def _static(shape) -> list[int]:
    """A jaxpr shape as ONNX Reshape wants it: the one symbolic (batch) size becomes -1."""
    dims = [d if isinstance(d, int) else -1 for d in shape]
    if dims.count(-1) > 1:
        raise KpjaxError(f"export: shape {shape} has more than one batch-dependent size")
    return dims


def _elementwise(op: str):
    return lambda g, eqn: g.node(op, [g.name(a) for a in eqn.invars])


def _max(g, eqn):
    """``max(x, 0)`` (``jax.nn.relu``) as Relu, which onnxruntime fuses into the convolution before it."""
    x, y = eqn.invars
    for value, other in ((x, y), (y, x)):
        if g.known(value) and np.ndim(g.value(value)) == 0 and g.value(value) == 0:
            return g.node("Relu", [g.name(other)])
    return g.node("Max", [g.name(x), g.name(y)])


def _sub(g, eqn):
    """``x - c`` for a constant ``c`` (batch norm's mean) as ``x + (-c)``: onnxruntime folds an Add or Mul by a
    constant into the convolution before it, not a Sub."""
    x, y = eqn.invars
    if g.known(y):
        return g.node("Add", [g.name(x), g.const(-g.value(y))])
    return g.node("Sub", [g.name(x), g.name(y)])


def _rsqrt(g, eqn):
    return g.node("Reciprocal", [g.node("Sqrt", [g.name(eqn.invars[0])])])


def _integer_pow(g, eqn):
    x = eqn.invars[0]
    return g.node("Pow", [g.name(x), g.const(eqn.params["y"], x.aval.dtype)])


def _convert(g, eqn):
    onnx = g.onnx
    to = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(eqn.params["new_dtype"]))
    return g.node("Cast", [g.name(eqn.invars[0])], to=to)


def _reshape(g, eqn):
    if eqn.params.get("dimensions") is not None:
        raise KpjaxError("export: reshape with a dimension order has no ONNX translation")
    return g.node("Reshape", [g.name(eqn.invars[0]), g.ints(_static(eqn.params["new_sizes"]))])


def _broadcast_in_dim(g, eqn):
    shape, dims = eqn.params["shape"], eqn.params["broadcast_dimensions"]
    operand = eqn.invars[0]
    kept = [1] * len(shape)
    for i, d in zip(dims, operand.aval.shape):
        kept[i] = d
    x = g.node("Reshape", [g.name(operand), g.ints(_static(kept))])
    # Expand broadcasts both ways, so 1 for the batch size keeps the operand's.
    return g.node("Expand", [x, g.ints([d if isinstance(d, int) else 1 for d in shape])])


def _squeeze(g, eqn):
    return g.node("Squeeze", [g.name(eqn.invars[0]), g.ints(eqn.params["dimensions"])])


def _transpose(g, eqn):
    return g.node("Transpose", [g.name(eqn.invars[0])], perm=list(eqn.params["permutation"]))


def _slice(g, eqn):
    x = eqn.invars[0]
    strides = eqn.params["strides"] or [1] * x.aval.ndim
    limits = [d if isinstance(d, int) else INT64_MAX for d in eqn.params["limit_indices"]]
    return g.node("Slice", [g.name(x), g.ints(eqn.params["start_indices"]), g.ints(limits),
                            g.ints(range(x.aval.ndim)), g.ints(strides)])


def _gather(g, eqn):
    """Only the gather that jnp indexing emits for a constant slice when the batch size is symbolic."""
    operand, indices = eqn.invars
    numbers, sizes = eqn.params["dimension_numbers"], eqn.params["slice_sizes"]
    ndim = operand.aval.ndim
    if (not g.known(indices) or indices.aval.ndim != 1 or numbers.collapsed_slice_dims
            or numbers.operand_batching_dims or tuple(numbers.offset_dims) != tuple(range(ndim))):
        raise KpjaxError("export: a gather other than a constant slice has no ONNX translation")
    starts = [0] * ndim
    for axis, start in zip(numbers.start_index_map, g.value(indices)):
        starts[axis] = int(start)
    ends = [start + size if isinstance(size, int) else INT64_MAX for start, size in zip(starts, sizes)]
    return g.node("Slice", [g.name(operand), g.ints(starts), g.ints(ends), g.ints(range(ndim))])


def _pad(g, eqn):
    config = eqn.params["padding_config"]
    if any(interior or lo < 0 or hi < 0 for lo, hi, interior in config):
        raise KpjaxError("export: interior or negative padding has no ONNX translation")
    pads = [lo for lo, _, _ in config] + [hi for _, hi, _ in config]
    return g.node("Pad", [g.name(eqn.invars[0]), g.ints(pads), g.name(eqn.invars[1])])


def _concatenate(g, eqn):
    return g.node("Concat", [g.name(a) for a in eqn.invars], axis=eqn.params["dimension"])


def _reduce(op: str):
    def translate(g, eqn):
        return g.node(op, [g.name(eqn.invars[0]), g.ints(eqn.params["axes"])], keepdims=0)

    return translate


def _select_n(g, eqn):
    predicate, *cases = eqn.invars
    if len(cases) != 2 or predicate.aval.dtype != np.bool_:
        raise KpjaxError("export: select_n with an integer selector has no ONNX translation")
    return g.node("Where", [g.name(predicate), g.name(cases[1]), g.name(cases[0])])


def _dot_general(g, eqn):
    """A matmul over the last axis by a 2-D matrix, or a batched (B.., M, K) x (B.., K, N) product in any
    axis order with one contracting and at most one free axis a side (as ``jnp.einsum`` writes them)."""
    (contract_l, contract_r), (batch_l, batch_r) = eqn.params["dimension_numbers"]
    lhs, rhs = eqn.invars
    if not batch_l and list(contract_l) == [lhs.aval.ndim - 1] and rhs.aval.ndim == 2:
        weights = g.name(rhs) if list(contract_r) == [0] else g.node("Transpose", [g.name(rhs)], perm=[1, 0])
        return g.node("MatMul", [g.name(lhs), weights])
    free_l = [i for i in range(lhs.aval.ndim) if i not in (*batch_l, *contract_l)]
    free_r = [i for i in range(rhs.aval.ndim) if i not in (*batch_r, *contract_r)]
    if len(contract_l) != 1 or len(free_l) != 1 or len(free_r) != 1:
        raise KpjaxError(f"export: dot_general {eqn.params['dimension_numbers']} has no ONNX translation")
    left = g.node("Transpose", [g.name(lhs)], perm=[*batch_l, *free_l, *contract_l])  # (B.., M, K)
    right = g.node("Transpose", [g.name(rhs)], perm=[*batch_r, *contract_r, *free_r])  # (B.., K, N)
    return g.node("MatMul", [left, right])  # (B.., M, N): dot_general's own output order


def _conv(g, eqn):
    p = eqn.params
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    if any(d != 1 for d in p["lhs_dilation"]) or p["batch_group_count"] != 1:
        raise KpjaxError("export: transposed or batch-grouped convolutions have no ONNX translation")
    x = g.node("Transpose", [g.name(eqn.invars[0])], perm=list(lhs_spec))  # to N, C, spatial...
    kernel = g.node("Transpose", [g.name(eqn.invars[1])], perm=list(rhs_spec))  # to O, I, spatial...
    pads = [lo for lo, _ in p["padding"]] + [hi for _, hi in p["padding"]]
    y = g.node("Conv", [x, kernel], strides=list(p["window_strides"]), pads=pads,
               dilations=list(p["rhs_dilation"]), group=p["feature_group_count"])
    return g.node("Transpose", [y], perm=[int(i) for i in np.argsort(out_spec)])


def _pool(op: str):
    """reduce_window_{max,sum} over the windowed axes, with the other two (batch, channels) moved first."""

    def translate(g, eqn):
        p = eqn.params
        window, strides, padding = p["window_dimensions"], p["window_strides"], p["padding"]
        pooled = [i for i, (w, s, pad) in enumerate(zip(window, strides, padding)) if (w, s, *pad) != (1, 1, 0, 0)]
        rest = [i for i in range(len(window)) if i not in pooled]
        if len(rest) != 2 or any(d != 1 for d in p["base_dilation"]) or any(p["window_dilation"][i] != 1 for i in rest):
            raise KpjaxError(f"export: pooling window {window} has no ONNX translation")
        perm = rest + pooled
        x = g.node("Transpose", [g.name(eqn.invars[0])], perm=perm)
        attributes = {"kernel_shape": [window[i] for i in pooled], "strides": [strides[i] for i in pooled],
                      "pads": [padding[i][0] for i in pooled] + [padding[i][1] for i in pooled],
                      "dilations": [p["window_dilation"][i] for i in pooled]}
        if op == "MaxPool":
            y = g.node("MaxPool", [x], **attributes)
        else:  # a windowed sum is an average that counts the padding, times the window's size
            average = g.node("AveragePool", [x], count_include_pad=1, **attributes)
            y = g.node("Mul", [average, g.const(np.prod(attributes["kernel_shape"]), eqn.outvars[0].aval.dtype)])
        return g.node("Transpose", [y], perm=[int(i) for i in np.argsort(perm)])

    return translate


_TRANSLATIONS = {
    **{name: _elementwise(op) for name, op in {
        "add": "Add", "mul": "Mul", "div": "Div", "min": "Min", "pow": "Pow",
        "neg": "Neg", "exp": "Exp", "log": "Log", "tanh": "Tanh", "logistic": "Sigmoid", "sqrt": "Sqrt",
        "abs": "Abs", "erf": "Erf", "copy": "Identity", "stop_gradient": "Identity",
    }.items()},
    "max": _max,
    "sub": _sub,
    "rsqrt": _rsqrt,
    "integer_pow": _integer_pow,
    "convert_element_type": _convert,
    "reshape": _reshape,
    "broadcast_in_dim": _broadcast_in_dim,
    "squeeze": _squeeze,
    "transpose": _transpose,
    "slice": _slice,
    "gather": _gather,
    "concatenate": _concatenate,
    "pad": _pad,
    "reduce_max": _reduce("ReduceMax"),
    "reduce_min": _reduce("ReduceMin"),
    "reduce_sum": _reduce("ReduceSum"),
    "select_n": _select_n,
    "dot_general": _dot_general,
    "conv_general_dilated": _conv,
    "reduce_window_max": _pool("MaxPool"),
    "reduce_window_sum": _pool("AveragePool"),
}


def _fold_into_convolutions(g: _Graph) -> None:
    """Move a per-channel bias Add and a Relu that follow a max-pool back onto the convolution before it.

    The seed-like models add their bias and apply ReLU after pooling (a quarter of the work in training; exact,
    since a per-channel constant and ReLU both commute with a max). onnxruntime fuses a bias and a Relu into a
    convolution only when they follow it directly; between a convolution and a pool it also keeps the data in
    its blocked layout, where after the pool each Add and Relu made it convert there and back.
    """
    def producer(name):
        return next((n for n in g.nodes if name in n.output), None)

    def consumers(name):
        return [n for n in g.nodes if name in n.input]

    def conv_below(name, channel_axis=None):
        """The Conv ``name`` comes from through Transposes and MaxPools alone, each used once (with
        ``channel_axis``, the axis at ``name`` its channels must arrive on); None otherwise."""
        while len(consumers(name)) == 1 and (node := producer(name)) is not None:
            if node.op_type == "Conv":
                return node if channel_axis in (None, 1) else None
            if node.op_type == "Transpose" and channel_axis is not None:
                channel_axis = list(onnx.helper.get_attribute_value(node.attribute[0]))[channel_axis]
            elif node.op_type not in ("Transpose", "MaxPool") or (node.op_type == "MaxPool" and channel_axis not in (None, 1)):
                return None
            name = node.input[0]
        return None

    def rewire(old, new):
        """Every node that reads ``old`` reads ``new`` instead."""
        for consumer in consumers(old):
            consumer.input[:] = [new if i == old else i for i in consumer.input]

    constants = {t.name: t for t in g.initializers}
    for add in [n for n in g.nodes if n.op_type == "Add"]:
        x, bias = add.input if add.input[1] in constants else reversed(add.input)
        if bias not in constants:
            continue
        value = onnx.numpy_helper.to_array(constants[bias])
        if value.ndim < 2 or any(d != 1 for d in value.shape[:-1]):
            continue
        conv = conv_below(x, value.ndim - 1)
        if conv is not None and len(conv.input) == 2:  # no bias yet
            conv.input.append(g.const(value.reshape(-1)))
            rewire(add.output[0], x)
            g.nodes.remove(add)
    for relu in [n for n in g.nodes if n.op_type == "Relu"]:
        conv = conv_below(relu.input[0])
        if conv is not None:
            rewire(relu.output[0], relu.input[0])
            g.nodes.remove(relu)
            relu.input[:] = [conv.output[0]]
            rewire(conv.output[0], relu.output[0])
            g.nodes.insert(g.nodes.index(conv) + 1, relu)
    used = {name for node in g.nodes for name in node.input}
    g.initializers[:] = [t for t in g.initializers if t.name in used]  # the folded biases' old constants


def to_onnx(model: nnx.Module, config: TrainConfig, calibrated: bool = True):
    """The model's predict step as an ONNX ModelProto: uint8 NHWC images in, (batch, 2K) keypoints out, and with
    an error head (batch, K) expected errors in frame pixels. ``calibrated``: the keypoints carry the model's
    calibration offset (``kpjax.calibration``); kpjax's own engine adds it itself, after flip TTA."""
    graphdef, params, rest = split_model(model)
    (batch,) = export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, config.size, config.size, config.channels), jnp.uint8)
    closed = jax.make_jaxpr(lambda images: predict_step(graphdef, params, rest, images))(spec)
    g = _Graph()
    (images,) = closed.jaxpr.invars
    g.names[images] = "images"
    results = [g.name(result) for result in g.walk(closed.jaxpr, closed.consts, [images])]
    offset = offset_of(model) if calibrated else None
    if offset is not None:
        results[0] = g.node("Add", [results[0], g.const(in_seed_units(offset, config.size)[None], np.float32)])
    names = OUTPUTS[: len(results)]  # the errors only where the model estimates them
    for name, result in zip(names, results):
        g.nodes.append(onnx.helper.make_node("Identity", [result], [name]))
    _fold_into_convolutions(g)
    widths = {"keypoints": 2 * config.layout.num_keypoints, "errors": config.layout.num_keypoints}
    graph = onnx.helper.make_graph(
        g.nodes, "kpjax",
        [onnx.helper.make_tensor_value_info("images", onnx.TensorProto.UINT8,
                                            ["batch", config.size, config.size, config.channels])],
        [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch", widths[name]]) for name in names],
        g.initializers,
    )
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)], producer_name="kpjax")
    proto.ir_version = 9  # readable by onnxruntime releases from 1.16 on
    onnx.helper.set_model_props(proto, {
        "keypoints": json.dumps(config.layout.names), "size": str(config.size), "color": str(config.color),
        "input": "uint8 NHWC 0..255", "output": "x, y per keypoint; frame pixels = (v + 1) * size / 2",
        **({"errors": "each keypoint's expected error, frame pixels"} if "errors" in names else {}),
        **({"calibration_px": json.dumps(offset.round(4).tolist())} if offset is not None else {}),
    })
    onnx.checker.check_model(proto, full_check=True)
    return proto


def verify(proto, model: nnx.Module, config: TrainConfig, batch: int = 8, seed: int = 0) -> float:
    """Max |onnxruntime - JAX| on a batch of random images (relative for the expected errors); raises if it
    exceeds ``TOLERANCE``."""
    shape = (batch, config.size, config.size, config.channels)
    images = np.random.default_rng(seed).integers(0, 256, shape, np.uint8)
    expected = [np.asarray(x) for x in predict_step(*split_model(model), images) if x is not None]
    expected[0] = apply_offset(expected[0], offset_of(model), config.size)
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    actual = session.run(list(OUTPUTS[: len(expected)]), {"images": images})
    difference = max(float(np.abs(a - e).max() / (1.0 if name == "keypoints" else np.abs(e).max()))
                     for name, a, e in zip(OUTPUTS, actual, expected))
    if not difference <= TOLERANCE:
        raise KpjaxError(f"export: ONNX and JAX outputs differ by {difference:.2e} (> {TOLERANCE:g}); nothing written")
    return difference


def onnx_forward(model: nnx.Module, config: TrainConfig, stop_spinning: bool = False) -> Forward:
    """The model's forward pass as onnxruntime runs its exported graph: what photos go through
    (``kpjax.inference.Predictor``); ``verify``'s check of the graph against JAX is the export's and the tests'.

    onnxruntime's threads spin on after each call, ready for the next: the fastest for calls back to back, but
    they take the cores from other work between calls. ``stop_spinning`` stops them as a call returns, for a
    caller that runs the face detector between calls: 13.2 against 19.3 ms a photo, for a tenth of the
    batch-256 throughput (benchmarks/README.md).
    """
    proto = to_onnx(model, config, calibrated=False)
    options = onnxruntime.SessionOptions()
    if stop_spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    session = onnxruntime.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]

    def forward(images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = session.run(names, {"images": np.ascontiguousarray(images)})
        return outputs[0], outputs[1] if len(outputs) > 1 else None

    return forward


def export_onnx(model: nnx.Module, config: TrainConfig, out: Path) -> float:
    """Write the model as ONNX to ``out`` once onnxruntime reproduces JAX on a batch; returns the max difference."""
    proto = to_onnx(model, config)
    difference = verify(proto, model, config)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(proto.SerializeToString())
    return difference
