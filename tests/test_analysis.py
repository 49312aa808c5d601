"""compiler.analysis: per-layer kinds, shapes, MACs, parameters and bytes.

MAC formulas are checked against an independent counter: onnxruntime running the same
layer on all-ones tensors without padding or bias, where every output element equals the
number of multiply-accumulates that produced it, so the output's sum is the layer's MACs.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from compiler.analysis import analyze, layer_table, totals
from compiler.program import Program
from compiler.registry import parse_module
from dialects import nn


def tensor(shape: tuple[int, ...], element: str = "f32") -> str:
    return f"tensor<{'x'.join(map(str, shape))}x{element}>" if shape else f"tensor<{element}>"


def module(args: list[tuple[str, tuple[int, ...]]], result: tuple[str, tuple[int, ...]], body: list[str]) -> Program:
    params = ", ".join(f"%{n}: {tensor(s)} {{nn.name = \"{n}\"}}" for n, s in args)
    text = (
        "builtin.module {\n"
        f"  func.func @main({params}) -> ({tensor(result[1])} {{nn.name = \"{result[0]}\"}}) {{\n"
        + "".join(f"    {line}\n" for line in body)
        + f"    func.return %{result[0]} : {tensor(result[1])}\n  }}\n}}\n"
    )
    return Program(parse_module(text, "test.mlir"))


def weight(name: str, shape: tuple[int, ...]) -> str:
    return f'%{name} = nn.weight "{name}" {{value = dense<1.0> : {tensor(shape)}}} : {tensor(shape)}'


def conv(name: str, x: str, w: str, xs, ws, ys, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1,
         extra: str = "") -> str:
    ints = lambda v: ", ".join(map(str, v))  # noqa: E731
    return (
        f'%{name} = nn.conv2d %{x}, %{w} {{name = "{name}", strides = array<i64: {ints(strides)}>, '
        f"pads = array<i64: {ints(pads)}>, dilations = array<i64: {ints(dilations)}>, group = {group} : i64{extra}}}"
        f" : ({tensor(xs)}, {tensor(ws)}) -> {tensor(ys)}"
    )


def small_net() -> Program:
    return module(
        [("x", (1, 4, 8, 8))],
        ("y", (2, 5)),
        [
            weight("w1", (6, 4, 3, 3)),
            conv("c1", "x", "w1", (1, 4, 8, 8), (6, 4, 3, 3), (1, 6, 4, 4), strides=(2, 2), pads=(1, 1, 1, 1),
                 extra=', activation = "relu"'),
            weight("wd", (6, 1, 3, 3)),
            conv("dw", "c1", "wd", (1, 6, 4, 4), (6, 1, 3, 3), (1, 6, 4, 4), pads=(1, 1, 1, 1), group=6),
            weight("wg", (4, 3, 1, 1)),
            conv("gc", "dw", "wg", (1, 6, 4, 4), (4, 3, 1, 1), (1, 4, 4, 4), group=2),
            '%p = nn.pool %gc {name = "p", kind = "max", kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, '
            "pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, ceil_mode = 0 : i64, "
            "count_include_pad = 0 : i64} : (tensor<1x4x4x4xf32>) -> tensor<1x4x2x2xf32>",
            '%cat = nn.concat %p, %p {name = "cat", axis = 1 : i64} : (tensor<1x4x2x2xf32>, tensor<1x4x2x2xf32>) '
            "-> tensor<1x8x2x2xf32>",
            "%r = nn.reshape %cat : (tensor<1x8x2x2xf32>) -> tensor<2x16xf32>",
            weight("fw", (16, 5)),
            '%y = nn.gemm %r, %fw {name = "fc", trans_a = 0 : i64, trans_b = 0 : i64, alpha = 1.0 : f64, '
            "beta = 1.0 : f64} : (tensor<2x16xf32>, tensor<16x5xf32>) -> tensor<2x5xf32>",
        ],
    )


def test_kinds_names_and_shapes_in_program_order() -> None:
    layers = analyze(small_net())
    assert [(x.name, x.op) for x in layers] == [
        ("c1", "conv2d"), ("dw", "depthwise"), ("gc", "conv2d"), ("p", "maxpool"), ("cat", "concat"),
        ("reshape_5", "reshape"), ("fc", "gemm"),
    ]
    c1 = layers[0]
    assert c1.activation == "relu" and c1.label == "conv2d+relu"
    assert c1.input_shapes == ((1, 4, 8, 8),) and c1.output_shape == (1, 6, 4, 4)
    assert c1.weight_shape == (6, 4, 3, 3)
    assert layers[4].input_shapes == ((1, 4, 2, 2), (1, 4, 2, 2))


def test_macs_params_and_bytes_by_hand() -> None:
    by_name = {x.name: x for x in analyze(small_net())}
    # N·M·OH·OW·(C/group)·kh·kw, padding included.
    assert by_name["c1"].macs == 1 * 6 * 4 * 4 * 4 * 3 * 3
    assert by_name["dw"].macs == 6 * 4 * 4 * 1 * 3 * 3
    assert by_name["gc"].macs == 4 * 4 * 4 * 3
    assert by_name["fc"].macs == 2 * 5 * 16
    assert by_name["p"].macs == by_name["cat"].macs == 0
    assert by_name["c1"].params == 6 * 4 * 9 and by_name["c1"].weight_bytes == 4 * 6 * 4 * 9
    assert by_name["fc"].params == 80
    # Activation bytes: inputs read plus outputs written (float32).
    assert by_name["cat"].activation_bytes == 4 * (16 + 16 + 32)
    view = by_name["reshape_5"]
    assert view.is_view and view.activation_bytes == 0 and view.macs == 0


def test_totals_and_json_round_trip() -> None:
    layers = analyze(small_net())
    t = totals(layers)
    assert t.layers == 7
    assert t.macs == sum(x.macs for x in layers) == 3456 + 864 + 192 + 160
    assert t.params == 216 + 54 + 12 + 80
    d = layers[0].as_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["output_shape"] == [1, 6, 4, 4] and d["weight_shape"] == [6, 4, 3, 3]


def test_weights_used_as_operands_of_elementwise_ops_are_parameters() -> None:
    program = module(
        [("x", (1, 3, 2, 2))],
        ("y", (1, 3, 2, 2)),
        [weight("b", (1, 3, 1, 1)), '%y = nn.add %x, %b {name = "bias_add"} : (tensor<1x3x2x2xf32>, tensor<1x3x1x1xf32>) -> tensor<1x3x2x2xf32>'],
    )
    [layer] = analyze(program)
    assert (layer.op, layer.params, layer.input_shapes, layer.weight_shapes) == ("add", 3, ((1, 3, 2, 2),), ((1, 3, 1, 1),))
    assert layer.activation_bytes == 4 * (12 + 12)


def test_table_is_aligned_and_has_totals() -> None:
    text = layer_table(analyze(small_net()))
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "op", "output", "shape", "MACs", "params"]
    body = [ln for ln in lines[2:] if ln and not ln.startswith("-")]
    assert any(ln.startswith("c1 ") and "conv2d+relu" in ln and "1x6x4x4" in ln and "3,456" in ln for ln in body)
    total_line = next(ln for ln in lines if ln.startswith("total"))
    assert total_line.split()[-2:] == ["4,672", "362"]
    # Numbers are right-aligned: every row of the table has the same width up to its last column.
    table_rows = [ln for ln in lines if ln and not ln.startswith("weights")]
    assert len({len(ln) for ln in table_rows}) == 1


def ones_sum(model_nodes, inputs: dict[str, tuple[int, ...]], weights: dict[str, tuple[int, ...]]) -> float:
    """Run a one-node ONNX graph on all-ones tensors with onnxruntime; return the output sum."""
    graph = helper.make_graph(
        model_nodes,
        "count",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones(s, np.float32), n) for n, s in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options)
    (y,) = session.run(None, {n: np.ones(s, np.float32) for n, s in inputs.items()})
    return float(y.astype(np.float64).sum()), y.shape


@given(
    batch=st.integers(1, 2), groups=st.integers(1, 3), cin=st.integers(1, 3), cout=st.integers(1, 3),
    size=st.integers(5, 9), kernel=st.integers(1, 3), stride=st.integers(1, 2), dilation=st.integers(1, 2),
    depthwise=st.booleans(),
)
def test_conv_macs_match_onnxruntime_ones_count(batch, groups, cin, cout, size, kernel, stride, dilation, depthwise) -> None:
    c, m = (groups, groups) if depthwise else (groups * cin, groups * cout)
    xs, ws = (batch, c, size, size), (m, c // groups, kernel, kernel)
    ys = nn.conv2d_output_shape(xs, ws, (stride, stride), (0, 0, 0, 0), (dilation, dilation), groups)
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=groups, strides=[stride] * 2, dilations=[dilation] * 2)
    expected, ort_shape = ones_sum([node], {"x": xs}, {"w": ws})
    program = module([("x", xs)], ("y", ys), [weight("w", ws), conv("y", "x", "w", xs, ws, ys, strides=(stride, stride),
                                                                    dilations=(dilation, dilation), group=groups)])
    [layer] = analyze(program)
    assert layer.output_shape == ort_shape
    assert layer.macs == expected
    # Depthwise: one input channel per group (a channel multiplier M / C > 1 included).
    assert layer.op == ("depthwise" if groups > 1 and ws[1] == 1 else "conv2d")


@given(m=st.integers(1, 5), n=st.integers(1, 5), k=st.integers(1, 5), trans_a=st.booleans(), trans_b=st.booleans())
def test_gemm_macs_match_onnxruntime_ones_count(m, n, k, trans_a, trans_b) -> None:
    a, b = ((k, m) if trans_a else (m, k)), ((n, k) if trans_b else (k, n))
    node = helper.make_node("Gemm", ["a", "b"], ["y"], transA=int(trans_a), transB=int(trans_b))
    expected, _ = ones_sum([node], {"a": a}, {"b": b})
    program = module([("a", a)], ("y", (m, n)), [
        weight("b", b),
        f'%y = nn.gemm %a, %b {{trans_a = {int(trans_a)} : i64, trans_b = {int(trans_b)} : i64, alpha = 1.0 : f64, '
        f"beta = 1.0 : f64}} : ({tensor(a)}, {tensor(b)}) -> {tensor((m, n))}",
    ])
    [layer] = analyze(program)
    assert layer.macs == expected and layer.params == k * n


@given(batch=st.lists(st.integers(1, 3), max_size=2), m=st.integers(1, 4), n=st.integers(1, 4), k=st.integers(1, 4),
       broadcast_b=st.booleans())
def test_matmul_macs_match_onnxruntime_ones_count(batch, m, n, k, broadcast_b) -> None:
    a, b = (*batch, m, k), ((k, n) if broadcast_b else (*batch, k, n))
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    expected, y_shape = ones_sum([node], {"a": a, "b": b}, {})
    program = module([("a", a), ("b", b)], ("y", y_shape), [
        f'%y = nn.matmul %a, %b {{name = "mm"}} : ({tensor(a)}, {tensor(b)}) -> {tensor(y_shape)}',
    ])
    [layer] = analyze(program)
    assert layer.macs == expected and layer.params == 0 and layer.input_shapes == (a, b)
