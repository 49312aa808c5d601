"""Property test: hypothesis builds random small CNNs as ONNX models (convolutions with
strides, pads, dilations and groups, depthwise convs, max/avg pooling with ceil_mode and
count_include_pad, residual and broadcasting adds, concats, batchnorm, nearest resizes,
activations, flatten + gemm heads) with random weights; the reference executor must agree
with onnxruntime straight after import and after `canonicalize,fold-batchnorm,fuse-activation`.

The generator tracks shapes with its own window formula (not the one in dialects/nn.py
under test), so it only builds valid models; onnxruntime's output shape confirms it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from backends.reference import execute
from benchmarks.common import run_ort
from compiler import import_onnx, run_pipeline

PIPELINE = "canonicalize,fold-batchnorm,fuse-activation"
RTOL, ATOL = 1e-4, 1e-5
MAX_CHANNELS = 12
MAX_SIDE = 14

Shape = tuple[int, ...]
Draw = Callable[[st.SearchStrategy], object]


def window_output(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, dilation: int, ceil: bool) -> int:
    """ONNX/PyTorch rule; in ceil mode a last window that would start in the end padding is dropped."""
    span = size + pad_begin + pad_end - (dilation * (kernel - 1) + 1)
    out = (-(-span // stride) if ceil else span // stride) + 1
    return out - 1 if ceil and (out - 1) * stride >= size + pad_begin else out


def drops_last_window(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int) -> bool:
    """onnx 1.23's shape inference does not drop that window, while onnxruntime's and onnx's
    reference kernels do: onnxruntime then refuses the model when a later gemm depends on
    the width. Such pools are generated without ceil_mode."""
    span = size + pad_begin + pad_end - kernel
    return window_output(size, kernel, stride, pad_begin, pad_end, 1, True) != -(-span // stride) + 1


@dataclass
class NetBuilder:
    """An ONNX graph built node by node; every activation is kept with its shape."""

    rng: np.random.Generator
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    shapes: dict[str, Shape] = field(default_factory=dict)

    def name(self, prefix: str) -> str:
        return f"{prefix}{len(self.nodes) + len(self.initializers)}"

    def weight(self, array: np.ndarray) -> str:
        name = self.name("w")
        self.initializers.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def he(self, shape: Shape, fan_in: int) -> str:
        return self.weight(self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in))

    def node(self, op: str, inputs: Sequence[str], shape: Shape, **attrs: object) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        self.shapes[out] = shape
        return out

    def model(self, x: str, y: str, opset: int) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "random_cnn",
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, list(self.shapes[x]))],
            [helper.make_tensor_value_info(y, TensorProto.FLOAT, list(self.shapes[y]))],
            self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 10
        return model


# ---------------------------------------------------------------------------------------
# One layer each: given the builder and the current activation, append nodes and return
# the new activation. Every choice keeps the model valid.
# ---------------------------------------------------------------------------------------


def conv(draw: Draw, b: NetBuilder, x: str) -> str:
    _, c, h, w = b.shapes[x]
    depthwise = draw(st.booleans())
    group = c if depthwise else draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0]))
    out_channels = group * draw(st.integers(1, max(1, MAX_CHANNELS // group)))
    pads = [draw(st.integers(0, 2)) for _ in range(4)]  # top, left, bottom, right
    kernel, dilation, stride, out = [], [], [], []
    for size, begin, end in ((h, pads[0], pads[2]), (w, pads[1], pads[3])):
        d = draw(st.integers(1, 2))
        k = draw(st.integers(1, max(1, min(3, (size + begin + end - 1) // d + 1))))
        s = draw(st.integers(1, 2))
        kernel.append(k), dilation.append(d), stride.append(s)
        out.append(window_output(size, k, s, begin, end, d, False))
    wshape = (out_channels, c // group, *kernel)
    inputs = [x, b.he(wshape, (c // group) * kernel[0] * kernel[1])]
    if draw(st.booleans()):
        inputs.append(b.weight(b.rng.standard_normal(out_channels) * 0.1))
    return b.node("Conv", inputs, (1, out_channels, *out), kernel_shape=kernel, strides=stride, pads=pads,
                  dilations=dilation, group=group)


def pool(draw: Draw, b: NetBuilder, x: str) -> str:
    _, c, h, w = b.shapes[x]
    kind = draw(st.sampled_from(["MaxPool", "AveragePool"]))
    kernel = [draw(st.integers(1, min(3, h))), draw(st.integers(1, min(3, w)))]
    pads = [draw(st.integers(0, kernel[i % 2] - 1)) for i in range(4)]  # a pad must be below the kernel
    strides = [draw(st.integers(1, 3)) for _ in range(2)]
    ceil = draw(st.booleans()) and not any(
        drops_last_window(size, kernel[i], strides[i], pads[i], pads[i + 2]) for i, size in enumerate((h, w))
    )
    attrs: dict[str, object] = {"kernel_shape": kernel, "strides": strides, "pads": pads, "ceil_mode": int(ceil)}
    if kind == "AveragePool":
        attrs["count_include_pad"] = int(draw(st.booleans()))
    out = [window_output(size, kernel[i], strides[i], pads[i], pads[i + 2], 1, ceil) for i, size in enumerate((h, w))]
    return b.node(kind, [x], (1, c, *out), **attrs)


def activation(draw: Draw, b: NetBuilder, x: str) -> str:
    shape = b.shapes[x]
    kind = draw(st.sampled_from(["Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSwish", "Tanh"]))
    if kind == "Clip":
        low = draw(st.sampled_from([0.0, -0.5, -1.0]))
        bounds = [b.weight(np.array(low)), b.weight(np.array(low + draw(st.sampled_from([0.5, 1.0, 6.0]))))]
        return b.node("Clip", [x, *bounds], shape)
    if kind == "LeakyRelu":
        return b.node("LeakyRelu", [x], shape, alpha=draw(st.sampled_from([0.01, 0.1, 0.3])))
    return b.node(kind, [x], shape)


def batchnorm(draw: Draw, b: NetBuilder, x: str) -> str:
    c = b.shapes[x][1]
    params = [
        b.rng.uniform(0.5, 1.5, c),  # scale
        b.rng.standard_normal(c) * 0.1,  # bias
        b.rng.standard_normal(c) * 0.1,  # mean
        b.rng.uniform(0.5, 1.5, c),  # variance
    ]
    return b.node("BatchNormalization", [x, *map(b.weight, params)], b.shapes[x],
                  epsilon=draw(st.sampled_from([1e-5, 1e-3])))


def add(draw: Draw, b: NetBuilder, x: str) -> str:
    """A residual add with an earlier activation of the same shape, a squeeze-and-excite
    style add of the channel means, or a constant broadcast along some axes."""
    shape = b.shapes[x]
    _, c, h, w = shape
    same = [t for t, s in b.shapes.items() if s == shape and t != x]
    kind = draw(st.sampled_from(["residual", "channel-means", "constant"] if same else ["channel-means", "constant"]))
    if kind == "residual":
        other = draw(st.sampled_from(same))
    elif kind == "channel-means":
        other = b.node("GlobalAveragePool", [x], (1, c, 1, 1))
    else:
        other = b.weight(b.rng.standard_normal(draw(st.sampled_from([(c, 1, 1), (1, c, 1, 1), (w,), (1, 1, h, w), (1,)]))))
    operands = [x, other] if draw(st.booleans()) else [other, x]
    return b.node("Add", operands, shape)


def concat(draw: Draw, b: NetBuilder, x: str) -> str:
    _, c, h, w = b.shapes[x]
    fits = [t for t, s in b.shapes.items() if len(s) == 4 and s[2:] == (h, w) and s[1] + c <= MAX_CHANNELS * 2]
    parts = [x, draw(st.sampled_from(fits))] if fits else [x, x]
    if draw(st.booleans()):
        parts.reverse()
    return b.node("Concat", parts, (1, sum(b.shapes[p][1] for p in parts), h, w), axis=1)


def resize(draw: Draw, b: NetBuilder, x: str) -> str:
    _, c, h, w = b.shapes[x]
    scales = [draw(st.integers(1, max(1, MAX_SIDE // h))), draw(st.integers(1, max(1, MAX_SIDE // w)))]
    modes = {
        "coordinate_transformation_mode": draw(st.sampled_from(["asymmetric", "half_pixel", "pytorch_half_pixel", "align_corners"])),
        "nearest_mode": draw(st.sampled_from(["floor", "round_prefer_floor", "round_prefer_ceil", "ceil"])),
    }
    scale_tensor = b.weight(np.array([1.0, 1.0, *scales]))
    return b.node("Resize", [x, "", scale_tensor], (1, c, h * scales[0], w * scales[1]), mode="nearest", **modes)


LAYERS = [conv, conv, pool, activation, batchnorm, add, concat, resize]


def gemm_head(draw: Draw, b: NetBuilder, x: str) -> str:
    """Flatten (after an optional global pool), one or two gemms, optionally activated."""
    if draw(st.booleans()):
        x = b.node(draw(st.sampled_from(["GlobalAveragePool", "GlobalMaxPool"])), [x], (*b.shapes[x][:2], 1, 1))
    features = int(np.prod(b.shapes[x][1:]))
    x = b.node("Flatten", [x], (1, features), axis=1)
    for _ in range(draw(st.integers(1, 2))):
        units, trans_b = draw(st.integers(1, 10)), draw(st.booleans())
        wshape = (units, features) if trans_b else (features, units)
        inputs = [x, b.he(wshape, features)]
        if draw(st.booleans()):
            inputs.append(b.weight(b.rng.standard_normal(draw(st.sampled_from([(units,), (1, units)]))) * 0.1))
        alpha, beta = draw(st.sampled_from([(1.0, 1.0), (0.5, 2.0)]))
        x = b.node("Gemm", inputs, (1, units), transB=int(trans_b), alpha=alpha, beta=beta)
        if draw(st.booleans()):
            x = activation(draw, b, x)
        features = units
    return x


@st.composite
def random_cnns(draw: Draw) -> onnx.ModelProto:
    b = NetBuilder(np.random.default_rng(draw(st.integers(0, 2**32 - 1))))
    x = "input"
    b.shapes[x] = (1, draw(st.integers(1, 4)), draw(st.integers(3, 10)), draw(st.integers(3, 10)))
    y = x
    for _ in range(draw(st.integers(1, 8))):
        y = draw(st.sampled_from(LAYERS))(draw, b, y)
    if draw(st.booleans()):
        y = gemm_head(draw, b, y)
    if y == x:  # keep at least one node
        y = b.node("Relu", [x], b.shapes[x])
    return b.model(x, y, opset=draw(st.sampled_from([14, 17, 21])))


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], when: str) -> None:
    assert list(got) == list(want), when
    for name, expected in want.items():
        assert got[name].shape == expected.shape, f"{when}: {name}"
        np.testing.assert_allclose(got[name], expected, rtol=RTOL, atol=ATOL, err_msg=f"{when}: {name}")


@given(random_cnns(), st.integers(0, 2**16))
def test_random_cnn_matches_onnxruntime_before_and_after_passes(model: onnx.ModelProto, seed: int) -> None:
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    feeds = {"input": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}
    want = run_ort(model, feeds)
    declared = tuple(d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim)
    assert next(iter(want.values())).shape == declared  # the generator tracked shapes correctly

    program = import_onnx(model)
    assert_close(execute(program, feeds), want, "after import")
    run_pipeline(program, PIPELINE)
    assert_close(execute(program, feeds), want, f"after {PIPELINE}")
