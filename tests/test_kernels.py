"""Each nn kernel against onnxruntime: a one-op module (IR text, parsed and verified) and the
equivalent single-node ONNX model run on the same data must agree (rtol 1e-4, atol 1e-5)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from backends.reference import evaluate, execute, kernels
from compiler.program import Program, WeightStore
from compiler.registry import parse_module
from compiler.tensors import element_type

RTOL, ATOL = 1e-4, 1e-5


def random(*shape: int, dtype: type = np.float32, seed: int = 0, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(int(low), int(high) + 1, size=shape).astype(dtype)
    return rng.uniform(low, high, size=shape).astype(dtype)


# ---------------------------------------------------------------------------------------
# Both sides of a comparison: our one-op module and onnxruntime's one-node model
# ---------------------------------------------------------------------------------------


def type_text(shape: Sequence[int], dtype: np.dtype | type) -> str:
    dims = "".join(f"{d}x" for d in shape)
    return f"tensor<{dims}{element_type(dtype)}>"


def attr_text(**props: object) -> str:
    """IR property text from Python values: int, float, str, tuple of ints / floats."""
    parts = []
    for key, v in props.items():
        if isinstance(v, bool | int):
            parts.append(f"{key} = {int(v)} : i64")
        elif isinstance(v, float):
            parts.append(f"{key} = {v:.17e} : f64")
        elif isinstance(v, str):
            parts.append(f'{key} = "{v}"')
        elif all(isinstance(e, int) for e in v):  # type: ignore[attr-defined]
            parts.append(f"{key} = array<i64: {', '.join(str(e) for e in v)}>")  # type: ignore[attr-defined]
        else:
            parts.append(f"{key} = array<f64: {', '.join(f'{float(e):.17e}' for e in v)}>")  # type: ignore[attr-defined]
    return ", ".join(parts)


def nn_program(
    op: str, attrs: str, operands: Sequence[np.ndarray], results: Sequence[np.ndarray], weights: Sequence[int] = ()
) -> Program:
    """@main applies `op` to `operands`: graph inputs a<i>, or `nn.weight`s for the indices
    in `weights`. Result types are the shapes and dtypes of `results`."""
    args, body, store = [], [], {}
    for i, a in enumerate(operands):
        t = type_text(a.shape, a.dtype)
        if i in weights:
            body.append(f'%a{i} = nn.weight "w{i}" : {t}')
            store[f"w{i}"] = a
        else:
            args.append(f'%a{i}: {t} {{nn.name = "a{i}"}}')
    rtypes = [type_text(r.shape, r.dtype) for r in results]
    lhs = "%r" if len(results) == 1 else f"%r:{len(results)}"
    signature = f"({', '.join(type_text(a.shape, a.dtype) for a in operands)}) -> " + (
        rtypes[0] if len(rtypes) == 1 else f"({', '.join(rtypes)})"
    )
    names = ["%r"] if len(results) == 1 else [f"%r#{i}" for i in range(len(results))]
    body.append(f"{lhs} = {op} {', '.join(f'%a{i}' for i in range(len(operands)))} {{{attrs}}} : {signature}")
    body.append(f"func.return {', '.join(names)} : {', '.join(rtypes)}")
    outs = ", ".join(f'{t} {{nn.name = "y{i}"}}' for i, t in enumerate(rtypes))
    text = "builtin.module {\nfunc.func @main(" + ", ".join(args) + f") -> ({outs}) {{\n" + "\n".join(body) + "\n}\n}\n"
    return Program(parse_module(text), WeightStore(store))


def nn_run(
    op: str, attrs: str, operands: Sequence[np.ndarray], results: Sequence[np.ndarray], weights: Sequence[int] = ()
) -> list[np.ndarray]:
    program = nn_program(op, attrs, operands, results, weights)
    outputs = execute(program, {f"a{i}": a for i, a in enumerate(operands) if i not in weights})
    return [outputs[f"y{i}"] for i in range(len(results))]


def ort_session(model: onnx.ModelProto) -> ort.InferenceSession:
    model.ir_version = 10
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def onnx_run(
    nodes: Sequence[onnx.NodeProto],
    feeds: dict[str, np.ndarray],
    consts: dict[str, np.ndarray] | None = None,
    outputs: Sequence[str] = ("y",),
    opset: int = 21,
) -> list[np.ndarray]:
    """Run an ONNX graph of `nodes` with graph inputs `feeds` and initializers `consts`."""
    graph = helper.make_graph(
        list(nodes),
        "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in (consts or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return list(ort_session(model).run(list(outputs), feeds))


def onnx_node_run(
    op_type: str,
    operands: Sequence[np.ndarray],
    consts: Sequence[np.ndarray | None] = (),
    n_outputs: int = 1,
    opset: int = 21,
    **attrs: object,
) -> list[np.ndarray]:
    """One ONNX node on graph inputs x<i> = operands, then constant inputs (None: omitted)."""
    names = [f"x{i}" for i in range(len(operands))] + ["" if c is None else f"c{i}" for i, c in enumerate(consts)]
    outputs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, names, outputs, **attrs)
    constants = {f"c{i}": c for i, c in enumerate(consts) if c is not None}
    return onnx_run([node], {f"x{i}": a for i, a in enumerate(operands)}, constants, outputs, opset)


def assert_same(ours: Sequence[np.ndarray], theirs: Sequence[np.ndarray]) -> None:
    assert len(ours) == len(theirs)
    for got, expected in zip(ours, theirs, strict=True):
        assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
        assert got.shape == expected.shape, (got.shape, expected.shape)
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def check(
    op: str,
    attrs: str,
    onnx_op: str,
    operands: Sequence[np.ndarray],
    consts: Sequence[np.ndarray | None] = (),
    weights: Sequence[int] = (),
    n_outputs: int = 1,
    opset: int = 21,
    **onnx_attrs: object,
) -> list[np.ndarray]:
    """Compare `op` with the ONNX node `onnx_op` on `operands`; return our results."""
    expected = onnx_node_run(onnx_op, operands, consts, n_outputs, opset, **onnx_attrs)
    ours = nn_run(op, attrs, operands, expected, weights)
    assert_same(ours, expected)
    return ours


# ---------------------------------------------------------------------------------------
# Convolution, GEMM, MatMul
# ---------------------------------------------------------------------------------------


def conv_attrs(strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1, **extra: object) -> str:  # type: ignore[no-untyped-def]
    return attr_text(name="conv", strides=strides, pads=pads, dilations=dilations, group=group, **extra)


def check_conv(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1  # type: ignore[no-untyped-def]
) -> None:
    operands = [x, w] + ([b] if b is not None else [])
    check(
        "nn.conv2d",
        conv_attrs(strides, pads, dilations, group),
        "Conv",
        operands,
        weights=(1, 2),
        strides=strides,
        pads=pads,
        dilations=dilations,
        group=group,
    )


@pytest.mark.parametrize(
    "c, m, k, strides, pads, dilations, group",
    [
        (3, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),  # plain 3x3 "same"
        (3, 5, (3, 2), (2, 1), (0, 1, 2, 1), (1, 1), 1),  # asymmetric pads, rectangular kernel
        (4, 4, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),  # dilation
        (4, 6, (3, 3), (2, 2), (1, 1, 1, 1), (1, 2), 2),  # groups
        (6, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 6),  # depthwise
        (4, 8, (3, 3), (2, 2), (1, 0, 1, 2), (2, 1), 4),  # depthwise, channel multiplier 2
        (8, 5, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),  # 1x1: a plain GEMM
        (8, 5, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),  # 1x1 strided
        (8, 5, (1, 1), (1, 1), (1, 0, 0, 1), (1, 1), 1),  # 1x1 with pads (im2col path)
        (3, 4, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1),  # ResNet stem
    ],
)
@pytest.mark.parametrize("batch, bias", [(1, True), (2, False)])
def test_conv2d(c, m, k, strides, pads, dilations, group, batch, bias) -> None:  # type: ignore[no-untyped-def]
    x = random(batch, c, 11, 10, seed=1)
    w = random(m, c // group, *k, seed=2)
    check_conv(x, w, random(m, seed=3) if bias else None, strides, pads, dilations, group)


@pytest.mark.parametrize(
    "activation, onnx_op, props, onnx_attrs, consts",
    [
        ("relu", "Relu", {}, {}, ()),
        ("clip", "Clip", {"act_min": 0.0, "act_max": 6.0}, {}, (np.float32(0), np.float32(6))),
        ("clip", "Clip", {"act_max": 0.5}, {}, (None, np.float32(0.5))),
        ("leaky_relu", "LeakyRelu", {"act_alpha": 0.1}, {"alpha": 0.1}, ()),
    ],
)
@pytest.mark.parametrize("base", ["conv", "gemm"])
def test_fused_activation(activation, onnx_op, props, onnx_attrs, consts, base) -> None:  # type: ignore[no-untyped-def]
    """conv2d / gemm with a fused activation equal the ONNX node followed by the activation."""
    if base == "conv":
        operands = [random(1, 3, 6, 6, seed=1), random(4, 3, 3, 3, seed=2), random(4, seed=3)]
        first = helper.make_node("Conv", ["x0", "x1", "x2"], ["t"], pads=[1, 1, 1, 1])
        attrs = conv_attrs(pads=(1, 1, 1, 1), activation=activation, **props)
        op = "nn.conv2d"
    else:
        operands = [random(3, 5, seed=1), random(5, 4, seed=2), random(4, seed=3)]
        first = helper.make_node("Gemm", ["x0", "x1", "x2"], ["t"])
        attrs = attr_text(trans_a=0, trans_b=0, alpha=1.0, beta=1.0, activation=activation, **props)
        op = "nn.gemm"
    names = ["t"] + ["" if c is None else f"c{i}" for i, c in enumerate(consts)]
    second = helper.make_node(onnx_op, names, ["y"], **onnx_attrs)
    constants = {f"c{i}": np.asarray(c) for i, c in enumerate(consts) if c is not None}
    expected = onnx_run([first, second], {f"x{i}": a for i, a in enumerate(operands)}, constants)
    assert_same(nn_run(op, attrs, operands, expected), expected)


@st.composite
def conv_cases(draw: st.DrawFn) -> tuple:
    group = draw(st.sampled_from([1, 1, 2, 3]))
    c = group * draw(st.integers(1, 3))
    depthwise = draw(st.booleans())
    if depthwise:
        group, c = c, c
    m = group * draw(st.integers(1, 3))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    h = draw(st.integers(max(1, dil[0] * (k[0] - 1) + 1 - pads[0] - pads[2]), 9))
    w = draw(st.integers(max(1, dil[1] * (k[1] - 1) + 1 - pads[1] - pads[3]), 9))
    return c, m, k, strides, pads, dil, group, h, w, draw(st.integers(1, 2)), draw(st.booleans())


@given(conv_cases())
def test_conv2d_random(case: tuple) -> None:
    c, m, k, strides, pads, dil, group, h, w, batch, bias = case
    x = random(batch, c, h, w, seed=4)
    weight = random(m, c // group, *k, seed=5)
    check_conv(x, weight, random(m, seed=6) if bias else None, strides, pads, dil, group)


def channels_last(x: np.ndarray) -> np.ndarray:
    """`x`'s values in channels-last memory, as conv and pool results are."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def reversed_strides(x: np.ndarray) -> np.ndarray:
    """`x`'s values with negative strides on every axis."""
    flip = (slice(None, None, -1),) * x.ndim
    return np.ascontiguousarray(x[flip])[flip]


@pytest.mark.parametrize(
    "op, attrs, operand_shapes, result_shape",
    [
        ("nn.conv2d", conv_attrs(pads=(1, 0, 2, 1)), [(6, 4, 3, 3), (6,)], (1, 6, 8, 5)),
        ("nn.conv2d", conv_attrs(strides=(2, 2)), [(6, 4, 1, 1)], (1, 6, 4, 3)),
        ("nn.conv2d", conv_attrs(pads=(1, 1, 1, 1), group=4), [(4, 1, 3, 3)], (1, 4, 7, 6)),
        ("nn.conv2d", conv_attrs(pads=(1, 1, 1, 1), group=2), [(6, 2, 3, 3)], (1, 6, 7, 6)),
        ("nn.pool", attr_text(kind="avg", kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), dilations=(1, 1), ceil_mode=1, count_include_pad=0), [], (1, 4, 4, 4)),
        ("nn.relu", "", [], (1, 4, 7, 6)),
        ("nn.add", "", [(1, 4, 1, 1)], (1, 4, 7, 6)),
        ("nn.concat", attr_text(axis=1), [(1, 2, 7, 6)], (1, 6, 7, 6)),
    ],
)
def test_results_do_not_depend_on_memory_layout(op: str, attrs: str, operand_shapes: list, result_shape: tuple) -> None:
    """Values flow between kernels in whatever layout the producer chose (conv and pool
    results are channels-last): every kernel gives the same result for every layout."""
    x = random(1, 4, 7, 6, seed=1)
    rest = [random(*shape, seed=i + 2) for i, shape in enumerate(operand_shapes)]
    expected = nn_run(op, attrs, [x, *rest], [np.zeros(result_shape, np.float32)])
    for layout in (channels_last, reversed_strides):
        operands = [layout(a) if a.ndim == 4 else a for a in [x, *rest]]
        assert_same(nn_run(op, attrs, operands, expected), expected)


@pytest.mark.parametrize("trans_a, trans_b", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("c_shape", [None, (3, 4), (4,), (1, 4), (3, 1), ()])
def test_gemm(trans_a: int, trans_b: int, c_shape: tuple | None) -> None:
    a = random(*((5, 3) if trans_a else (3, 5)), seed=1)
    b = random(*((4, 5) if trans_b else (5, 4)), seed=2)
    operands = [a, b] + ([random(*c_shape, seed=3)] if c_shape is not None else [])
    attrs = attr_text(trans_a=trans_a, trans_b=trans_b, alpha=0.5, beta=2.0)
    check("nn.gemm", attrs, "Gemm", operands, weights=(1,), transA=trans_a, transB=trans_b, alpha=0.5, beta=2.0)


@pytest.mark.parametrize("a_shape, b_shape", [((3, 5), (5, 4)), ((2, 3, 5), (5, 4)), ((2, 1, 3, 5), (4, 5, 2)), ((5,), (5, 4)), ((3, 5), (5,))])
def test_matmul(a_shape: tuple, b_shape: tuple) -> None:
    check("nn.matmul", "", "MatMul", [random(*a_shape, seed=1), random(*b_shape, seed=2)])


def test_matmul_integer() -> None:
    check("nn.matmul", "", "MatMul", [random(3, 4, dtype=np.int32, low=-50, high=50), random(4, 2, dtype=np.int32, seed=1, low=-50, high=50)])


# ---------------------------------------------------------------------------------------
# Elementwise
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("op, onnx_op", [("nn.add", "Add"), ("nn.sub", "Sub"), ("nn.mul", "Mul"), ("nn.div", "Div")])
@pytest.mark.parametrize("a_shape, b_shape", [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (3, 1)), ((1, 4), (3, 1)), ((2, 3), ())])
def test_binary_broadcasting(op: str, onnx_op: str, a_shape: tuple, b_shape: tuple) -> None:
    b = random(*b_shape, seed=2, low=0.5, high=2.0)  # away from 0 for Div
    check(op, "", onnx_op, [random(*a_shape, seed=1), b])


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("op, onnx_op", [("nn.add", "Add"), ("nn.sub", "Sub"), ("nn.mul", "Mul"), ("nn.div", "Div")])
def test_binary_integer(op: str, onnx_op: str, dtype: type) -> None:
    """Integer division truncates toward zero: -7 / 2 = -3, not Python's -4."""
    a = np.array([-7, 7, -8, 9, 0, -1, 5, -100], dtype=dtype)
    b = np.array([2, -2, 3, 3, 5, 4, -5, 7], dtype=dtype)
    ours = check(op, "", onnx_op, [a, b])
    if op == "nn.div":
        assert ours[0].tolist() == [-3, -3, -2, 3, 0, 0, -1, -14]


@pytest.mark.parametrize(
    "op, onnx_op, props, onnx_attrs",
    [
        ("nn.relu", "Relu", {}, {}),
        ("nn.sigmoid", "Sigmoid", {}, {}),
        ("nn.tanh", "Tanh", {}, {}),
        ("nn.hardswish", "HardSwish", {}, {}),
        ("nn.leaky_relu", "LeakyRelu", {"alpha": 0.2}, {"alpha": 0.2}),
        ("nn.hard_sigmoid", "HardSigmoid", {"alpha": 0.3, "beta": 0.4}, {"alpha": 0.3, "beta": 0.4}),
        ("nn.identity", "Identity", {}, {}),
    ],
)
def test_unary(op: str, onnx_op: str, props: dict, onnx_attrs: dict) -> None:
    x = random(2, 3, 5, seed=1, low=-8, high=8)
    x[0, 0, :3] = [-100.0, 100.0, 0.0]  # saturation and overflow regions
    check(op, attr_text(**props), onnx_op, [x], **onnx_attrs)


@pytest.mark.parametrize("lo, hi", [(-1.0, 1.0), (0.0, None), (None, 0.5), (1.0, -1.0), (None, None)])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_clip(lo: float | None, hi: float | None, dtype: type) -> None:
    x = random(3, 7, dtype=dtype, seed=1, low=-3, high=3)
    props = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
    consts = [None if v is None else np.asarray(v, dtype=dtype) for v in (lo, hi)]
    check("nn.clip", attr_text(**props), "Clip", [x], consts)


def test_relu_integer() -> None:
    check("nn.relu", "", "Relu", [random(4, 5, dtype=np.int8, low=-100, high=100)])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_softmax(axis: int) -> None:
    x = random(2, 3, 4, seed=1, low=-30, high=30)
    check("nn.softmax", attr_text(axis=axis), "Softmax", [x], axis=axis, opset=13)


@pytest.mark.parametrize("size", [1, 3, 5])
def test_lrn(size: int) -> None:
    x = random(2, 7, 3, 4, seed=1)
    props = {"alpha": 1e-3, "beta": 0.75, "bias": 2.0}
    check("nn.lrn", attr_text(size=size, **props), "LRN", [x], size=size, **props)


def test_lrn_even_size() -> None:
    """onnxruntime refuses even sizes (and onnx.reference's LRN loops over the batch, not
    the channels), so the oracle is the spec's formula written out channel by channel:
    the window is [c - floor((size-1)/2), c + ceil((size-1)/2)]."""
    x = random(1, 6, 2, 3, seed=1, low=0.5, high=3.0)
    size, alpha, beta, bias = 4, 0.5, 0.75, 1.0
    expected = np.empty_like(x)
    for c in range(x.shape[1]):
        window = x[:, max(0, c - (size - 1) // 2) : c + size // 2 + 1]
        expected[:, c] = x[:, c] / (bias + alpha / size * (window**2).sum(axis=1)) ** beta
    got = nn_run("nn.lrn", attr_text(size=size, alpha=alpha, beta=beta, bias=bias), [x], [expected])
    assert_same(got, [expected])


def test_batchnorm() -> None:
    x = random(2, 4, 3, 5, seed=1)
    params = [random(4, seed=2), random(4, seed=3), random(4, seed=4), random(4, seed=5, low=0.1, high=2.0)]
    check("nn.batchnorm", attr_text(epsilon=1e-3), "BatchNormalization", [x, *params], weights=(1, 2, 3, 4), epsilon=1e-3, opset=15)


# ---------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------


@st.composite
def pool_cases(draw: st.DrawFn) -> tuple:
    kind = draw(st.sampled_from(["max", "avg"]))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = (draw(st.integers(0, k[0] - 1)), draw(st.integers(0, k[1] - 1)), draw(st.integers(0, k[0] - 1)), draw(st.integers(0, k[1] - 1)))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    h = draw(st.integers(max(1, dil[0] * (k[0] - 1) + 1 - pads[0] - pads[2]), 9))
    w = draw(st.integers(max(1, dil[1] * (k[1] - 1) + 1 - pads[1] - pads[3]), 9))
    return kind, k, strides, pads, dil, draw(st.integers(0, 1)), draw(st.integers(0, 1)), h, w


def check_pool(kind: str, k: tuple, strides: tuple, pads: tuple, dil: tuple, ceil: int, include: int, x: np.ndarray) -> None:
    attrs = attr_text(kind=kind, kernel=k, strides=strides, pads=pads, dilations=dil, ceil_mode=ceil, count_include_pad=include)
    onnx_attrs: dict[str, object] = {"kernel_shape": k, "strides": strides, "pads": pads, "dilations": dil, "ceil_mode": ceil}
    if kind == "avg":
        onnx_attrs["count_include_pad"] = include
    check("nn.pool", attrs, "AveragePool" if kind == "avg" else "MaxPool", [x], opset=19, **onnx_attrs)


@given(pool_cases())
def test_pool_random(case: tuple) -> None:
    kind, k, strides, pads, dil, ceil, include, h, w = case
    check_pool(kind, k, strides, pads, dil, ceil, include, random(1, 2, h, w, seed=7))


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("ceil, include", [(0, 0), (1, 0), (1, 1), (0, 1)])
def test_pool_ceil_mode_and_padding(kind: str, ceil: int, include: int) -> None:
    """A 3x3/2 window with pads 1: ceil_mode adds a last window that hangs past the end
    padding; its divisor never counts the overhang."""
    check_pool(kind, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), ceil, include, random(1, 3, 8, 8, seed=1))


def test_max_pool_window_entirely_in_padding() -> None:
    """Such a window gives the lowest finite value (as onnxruntime), not -inf."""
    check_pool("max", (1, 2), (1, 1), (0, 1, 0, 1), (1, 2), 0, 0, random(1, 2, 1, 1))


@pytest.mark.parametrize(
    "length, size, kernel, stride, dilation, pad_begin",
    [(7, 4, 3, 2, 1, 1), (5, 5, 3, 1, 2, 2), (4, 6, 2, 1, 1, 3), (9, 3, 4, 3, 1, 0), (3, 2, 2, 3, 1, 1), (6, 3, 3, 2, 1, 0)],
)
@pytest.mark.parametrize("reduce", [np.maximum, np.add], ids=["max", "sum"])
def test_pool_axis_reduces_over_the_padded_input(length: int, size: int, kernel: int, stride: int, dilation: int,
                                                  pad_begin: int, reduce: np.ufunc) -> None:
    """Pads wider than the window, windows past the end (ceil_mode), and -inf / nan values:
    the same numbers as reducing over the input padded with the fill value."""
    x = random(2, length, 3, seed=5)
    x[0, 0, 0], x[1, -1, 1], x[0, length // 2, 2] = -np.inf, -np.inf, np.nan
    fill = np.float32(np.finfo(np.float32).min if reduce is np.maximum else 0)
    end = max(0, (size - 1) * stride + (kernel - 1) * dilation + 1 - pad_begin - length)
    padded = np.pad(x, ((0, 0), (pad_begin, end), (0, 0)), constant_values=fill)
    taps = [padded[:, t * dilation : t * dilation + (size - 1) * stride + 1 : stride] for t in range(kernel)]
    expected = taps[0].copy()
    for tap in taps[1:]:
        reduce(expected, tap, out=expected)
    got = kernels.pool_axis(x, 1, size, kernel, stride, dilation, pad_begin, reduce, fill)
    assert got.flags.c_contiguous
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("kind, onnx_op", [("max", "GlobalMaxPool"), ("avg", "GlobalAveragePool")])
def test_global_pool(kind: str, onnx_op: str) -> None:
    check("nn.global_pool", attr_text(kind=kind), onnx_op, [random(2, 3, 5, 4, seed=1)])


# ---------------------------------------------------------------------------------------
# Data movement
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_concat(axis: int) -> None:
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    for i, s in enumerate(shapes):
        s[axis] += i
    check("nn.concat", attr_text(axis=axis), "Concat", [random(*s, seed=i) for i, s in enumerate(shapes)], axis=axis)


def test_split() -> None:
    check("nn.split", attr_text(axis=1), "Split", [random(2, 7, 3)], [np.array([2, 4, 1])], n_outputs=3, axis=1)


def onnx_slice_to_nn(shape: Sequence[int], starts: Sequence[int], ends: Sequence[int], steps: Sequence[int]) -> str:
    """The nn.slice convention: ONNX values made non-negative and clamped (as the importer does)."""
    s_out, e_out = [], []
    for size, s, e, step in zip(shape, starts, ends, steps, strict=True):
        s, e = s + size if s < 0 else s, e + size if e < 0 else e
        if step > 0:
            s_out.append(min(max(s, 0), size))
            e_out.append(min(max(e, 0), size))
        else:
            s_out.append(min(max(s, 0), size - 1))
            e_out.append(min(max(e, -1), size - 1))
    return attr_text(starts=tuple(s_out), ends=tuple(e_out), steps=tuple(steps))


@pytest.mark.parametrize(
    "starts, ends, steps",
    [
        ((0, 1, 0), (2, 3, 5), (1, 1, 2)),
        ((1, -1, 4), (2, -100, -100), (1, -1, -2)),  # negative steps running through index 0
        ((0, 2, 3), (1, 100, 1), (1, 1, -1)),
        ((1, 0, -2), (1, 3, 100), (1, 1, 1)),  # an empty axis
    ],
)
def test_slice(starts: tuple, ends: tuple, steps: tuple) -> None:
    x = random(2, 3, 5)
    ints = [np.array(v, dtype=np.int64) for v in (starts, ends, (0, 1, 2), steps)]
    check("nn.slice", onnx_slice_to_nn(x.shape, starts, ends, steps), "Slice", [x], ints)


def test_reshape_and_transpose() -> None:
    x = random(2, 3, 4)
    check("nn.reshape", "", "Reshape", [x], [np.array([4, 6], dtype=np.int64)])
    check("nn.transpose", attr_text(perm=(2, 0, 1)), "Transpose", [x], perm=(2, 0, 1))


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("pads", [(0, 1, 2, 1, 0, 2), (1, -1, 0, 0, 2, -2)])
def test_pad(mode: str, pads: tuple) -> None:
    x = random(2, 4, 5)
    check("nn.pad", attr_text(pads=pads, mode=mode, value=1.5), "Pad", [x], [np.array(pads, dtype=np.int64), np.float32(1.5)], mode=mode)


# ---------------------------------------------------------------------------------------
# Resize
# ---------------------------------------------------------------------------------------

COORDINATE_MODES = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric"]


@pytest.mark.parametrize("coordinate_mode", COORDINATE_MODES)
@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
# 1.1 keeps the length 5: onnxruntime then copies the input, unless another axis changes.
@pytest.mark.parametrize("scales", [(1.0, 1.0, 2.0, 3.0), (1.0, 1.0, 0.6, 1.7), (1.0, 1.0, 0.5, 0.5), (1.0, 1.0, 1.1, 1.0), (1.0, 1.0, 1.1, 2.0)])
def test_resize_nearest(coordinate_mode: str, nearest_mode: str, scales: tuple) -> None:
    x = random(1, 2, 5, 4)
    attrs = attr_text(mode="nearest", coordinate_mode=coordinate_mode, nearest_mode=nearest_mode, scales=scales)
    check(
        "nn.resize", attrs, "Resize", [x], [None, np.array(scales, dtype=np.float32)],
        mode="nearest", coordinate_transformation_mode=coordinate_mode, nearest_mode=nearest_mode,
    )


@pytest.mark.parametrize("coordinate_mode", COORDINATE_MODES)
@pytest.mark.parametrize("scales", [(1.0, 1.0, 2.0, 3.0), (1.0, 1.0, 0.6, 1.7), (1.0, 1.0, 1.0, 0.5), (1.0, 1.0, 1.1, 1.0), (1.0, 1.0, 1.1, 2.0)])
def test_resize_linear(coordinate_mode: str, scales: tuple) -> None:
    x = random(1, 2, 5, 4)
    attrs = attr_text(mode="linear", coordinate_mode=coordinate_mode, nearest_mode="round_prefer_floor", scales=scales)
    check("nn.resize", attrs, "Resize", [x], [None, np.array(scales, dtype=np.float32)], mode="linear", coordinate_transformation_mode=coordinate_mode)


def test_resize_by_sizes() -> None:
    """With `sizes`, onnxruntime's scale is float32(out) / float32(in): the nn op carries that."""
    x = random(1, 1, 3, 7)
    sizes = np.array([1, 1, 7, 3], dtype=np.int64)
    scales = tuple(float(np.float32(o) / np.float32(i)) for o, i in zip(sizes, x.shape, strict=True))
    for mode in ("nearest", "linear"):
        attrs = attr_text(mode=mode, coordinate_mode="half_pixel", nearest_mode="round_prefer_floor", scales=scales)
        check("nn.resize", attrs, "Resize", [x], [None, None, sizes], mode=mode)


# ---------------------------------------------------------------------------------------
# Weights and evaluate()
# ---------------------------------------------------------------------------------------


def test_weight_inline_and_from_store() -> None:
    module = parse_module(
        """builtin.module { func.func @main() -> (tensor<2xf32> {nn.name = "a"}, tensor<3xi64> {nn.name = "b"}) {
        %a = nn.weight "a" {value = dense<[1.5, -2.0]> : tensor<2xf32>} : tensor<2xf32>
        %b = nn.weight "b" : tensor<3xi64>
        func.return %a, %b : tensor<2xf32>, tensor<3xi64> } }"""
    )
    store = WeightStore({"b": np.array([4, 5, 6], dtype=np.int64)})
    out = execute(module, {}, store)
    assert out["a"].tolist() == [1.5, -2.0] and out["b"].tolist() == [4, 5, 6]
    out["b"][0] = 0  # the caller owns its outputs: the store is untouched
    assert store["b"][0] == 4


def test_evaluate_casts_to_result_type_and_reads_the_module_store() -> None:
    """`evaluate` is what constant folding uses: results carry the result type's dtype."""
    program = nn_program("nn.add", "", [np.array([1, 2], np.int32), np.array([3, 4], np.int32)], [np.zeros(2, np.int32)], weights=(0, 1))
    ops = list(program.main.body.block.ops)
    a, b = (evaluate(op, [])[0] for op in ops[:2])  # nn.weight reads the store attached to the module
    (total,) = evaluate(ops[2], [a, b])
    assert total.dtype == np.int32 and total.tolist() == [4, 6]
    assert not a.flags.writeable  # kernels get read-only weights
