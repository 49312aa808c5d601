"""ONNX frontend: one small model per op family, checked on the IR (op types, attributes,
shapes, weight store) and, where semantics could go wrong (pads, slicing, resizing...),
end to end against onnxruntime through the reference executor."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from backends.reference import execute
from compiler import LayerloomError, Program, import_onnx
from compiler.onnx_import import parameter_inputs
from dialects import nn

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = sorted(p.name for p in LIGHT.glob("light_*.onnx"))
F = TensorProto.FLOAT


def model(
    nodes: Sequence[onnx.NodeProto],
    inputs: dict[str, Sequence[int | str | None]],
    outputs: Sequence[str],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 17,
    elem: int = F,
) -> onnx.ModelProto:
    """A model from nodes; inputs by shape (str or None dims are dynamic), outputs untyped."""
    graph = helper.make_graph(
        list(nodes),
        "g",
        [helper.make_tensor_value_info(k, elem, list(v)) for k, v in inputs.items()],
        [helper.make_tensor_value_info(o, elem, None) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def node(op: str, inputs: Sequence[str], outputs: Sequence[str], name: str | None = None, **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, list(inputs), list(outputs), name=name if name is not None else op.lower(), **attrs)


def layers(program: Program) -> list[nn.NNOp]:
    """The nn ops of main, weights left out."""
    return [op for op in program.main.body.ops if isinstance(op, nn.NNOp) and not isinstance(op, nn.WeightOp)]


def op_names(program: Program) -> list[str]:
    return [op.name for op in layers(program)]


def only(program: Program, op_class: type[nn.NNOp]) -> nn.NNOp:
    found = [op for op in layers(program) if isinstance(op, op_class)]
    assert len(found) == 1, op_names(program)
    return found[0]


def shape(value: object) -> tuple[int, ...]:
    return nn.shape_of(value)  # type: ignore[arg-type]


def out_shapes(program: Program) -> list[tuple[int, ...]]:
    return [tuple(t.get_shape()) for t in program.output_types]


def matches_onnxruntime(m: onnx.ModelProto, seed: int = 0, rtol: float = 1e-4, atol: float = 1e-5) -> Program:
    """Import `m`, run it on random inputs with the reference executor and onnxruntime,
    and assert that the results agree."""
    program = import_onnx(m)
    rng = np.random.default_rng(seed)
    feeds = {
        name: rng.standard_normal(t.get_shape()).astype(np.float32)
        for name, t in zip(program.input_names, program.input_types, strict=True)
    }
    ort_model = onnx.ModelProto()
    ort_model.CopyFrom(m)
    ort_model.ir_version = min(ort_model.ir_version, 10)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(ort_model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    got = execute(program, feeds)
    for name, want in zip(program.output_names, expected, strict=True):
        assert got[name].shape == want.shape, name
        np.testing.assert_allclose(got[name], want, rtol=rtol, atol=atol, err_msg=name)
    return program


def random(*dims: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dims).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Light model-zoo models
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_models_import_and_verify(name: str) -> None:
    m = onnx.load(str(LIGHT / name))  # ir_version as shipped (3)
    program = import_onnx(LIGHT / name)
    program.module.verify()
    assert program.input_names == [i.name for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}]
    assert program.output_names == [o.name for o in m.graph.output]
    declared = [tuple(d.dim_value for d in o.type.tensor_type.shape.dim) for o in m.graph.output]
    assert out_shapes(program) == declared
    convs = sum(1 for n in m.graph.node if n.op_type == "Conv")
    assert sum(isinstance(op, nn.Conv2dOp) for op in layers(program)) == convs
    # ConstantOfShape weights are folded into the store, never left as ops.
    handles = {op.handle.data for op in program.main.body.ops if isinstance(op, nn.WeightOp)}
    assert handles <= set(program.weights)
    assert all(isinstance(program.weights[h], np.ndarray) for h in handles)


def test_light_resnet50_is_fast_and_keeps_weights_as_arrays() -> None:
    start = time.perf_counter()
    program = import_onnx(LIGHT / "light_resnet50.onnx")
    elapsed = time.perf_counter() - start
    assert elapsed < 4.0, f"ResNet-50 import took {elapsed:.2f} s"  # about 0.3 s on an idle core
    params = sum(a.size for _, a in program.weights.items() if a.dtype == np.float32)
    assert params > 25_000_000
    conv1 = layers(program)[0]
    assert isinstance(conv1, nn.Conv2dOp) and conv1.layer_name == "n0"
    assert nn.int_list(conv1.pads) == (3, 3, 3, 3) and nn.int_list(conv1.strides) == (2, 2)


def with_random_weights(m: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """The light models fill every weight with one value (ConstantOfShape), which hides
    layout mistakes; replace each fill by a seeded random Constant (positive 1-D vectors,
    so batchnorm variances stay valid; He-scaled kernels, so activations stay tame)."""
    rng = np.random.default_rng(seed)
    shapes = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    for i, n in enumerate(m.graph.node):
        if n.op_type != "ConstantOfShape":
            continue
        shape = [int(d) for d in shapes[n.input[0]]]
        if len(shape) == 1:
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.standard_normal(shape) * np.sqrt(2.0 / max(1, int(np.prod(shape[1:]))))
        tensor = numpy_helper.from_array(value.astype(np.float32))
        m.graph.node[i].CopyFrom(helper.make_node("Constant", [], [n.output[0]], name=n.name, value=tensor))
    return m


@pytest.mark.parametrize(
    "name", ["light_squeezenet.onnx", "light_shufflenet.onnx", "light_inception_v1.onnx", "light_densenet121.onnx"]
)
def test_light_models_with_random_weights_match_onnxruntime(name: str) -> None:
    program = matches_onnxruntime(with_random_weights(onnx.load(str(LIGHT / name))))
    if name == "light_squeezenet.onnx":
        # Opset-9 softmax on a 1x1000x1x1 tensor: flatten at axis 1, softmax, reshape back.
        assert [type(op).__name__ for op in layers(program)[-3:]] == ["ReshapeOp", "SoftmaxOp", "ReshapeOp"]


# ---------------------------------------------------------------------------------------
# Module layout, names, weights, input shapes
# ---------------------------------------------------------------------------------------


def test_module_layout_names_and_weight_store() -> None:
    w = random(4, 3, 3, 3)
    m = model(
        [node("Conv", ["x", "w"], ["c"], name="conv1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        {"x": [1, 3, 8, 8], "w": [4, 3, 3, 3]},  # w is an initializer listed as an input too
        ["y"],
        {"w": w},
    )
    program = import_onnx(m)
    assert program.input_names == ["x"]
    assert program.output_names == ["y"]
    assert op_names(program) == ["nn.conv2d", "nn.relu"]
    assert [op.layer_name for op in layers(program)] == ["conv1", "Relu_1"]
    weight = next(op for op in program.main.body.ops if isinstance(op, nn.WeightOp))
    assert weight.layer_name == "w"
    np.testing.assert_array_equal(program.weights[weight.handle.data], w)
    text = program.text()
    assert '{nn.name = "x"}' in text and '{nn.name = "y"}' in text
    assert "dense<" not in text  # weights stay in the store


def test_dynamic_dims_default_to_one_and_input_shapes_override() -> None:
    m = model([node("Relu", ["x"], ["y"])], {"x": ["batch", 3, None, 5]}, ["y"])
    assert out_shapes(import_onnx(m)) == [(1, 3, 1, 5)]
    assert out_shapes(import_onnx(m, {"x": [4, 3, 7, 5]})) == [(4, 3, 7, 5)]


def test_model_file_path_and_weights_from_file(tmp_path: Path) -> None:
    m = model([node("Add", ["x", "b"], ["y"])], {"x": [2, 3]}, ["y"], {"b": np.arange(3, dtype=np.float32)})
    path = tmp_path / "add.onnx"
    onnx.save(m, str(path))
    program = import_onnx(str(path))
    assert program.source == str(path)
    assert [a.tolist() for _, a in program.weights.items()] == [[0.0, 1.0, 2.0]]


def test_external_data_inside_the_model_folder_is_read(tmp_path: Path) -> None:
    w = random(64, 32)
    m = model([node("MatMul", ["x", "w"], ["y"])], {"x": [2, 64]}, ["y"], {"w": w})
    (tmp_path / "data").mkdir()
    onnx.save(m, str(tmp_path / "mm.onnx"), save_as_external_data=True, location="data/mm.bin", size_threshold=0)
    program = import_onnx(tmp_path / "mm.onnx")
    np.testing.assert_array_equal(next(a for _, a in program.weights.items()), w)


# ---------------------------------------------------------------------------------------
# Convolution, Gemm, MatMul
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "pads", "out"),
    [
        ({"pads": [1, 2, 1, 2], "strides": [2, 1]}, (1, 2, 1, 2), (1, 6, 5, 14)),
        ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (0, 0, 1, 1), (1, 6, 5, 6)),
        ({"auto_pad": "SAME_LOWER", "strides": [2, 2]}, (1, 1, 0, 0), (1, 6, 5, 6)),
        ({"auto_pad": "VALID", "dilations": [2, 1]}, (0, 0, 0, 0), (1, 6, 6, 10)),
        ({"group": 3, "pads": [1, 1, 1, 1]}, (1, 1, 1, 1), (1, 6, 10, 12)),
    ],
)
def test_conv2d_attributes(attrs: dict[str, object], pads: tuple[int, ...], out: tuple[int, ...]) -> None:
    group = int(attrs.get("group", 1))  # type: ignore[call-overload]
    m = model(
        [node("Conv", ["x", "w", "b"], ["y"], **attrs)],
        {"x": [1, 6, 10, 12]},
        ["y"],
        {"w": random(6, 6 // group, 3, 3), "b": random(6, seed=2)},
    )
    program = matches_onnxruntime(m)
    conv = only(program, nn.Conv2dOp)
    assert nn.int_list(conv.pads) == pads
    assert conv.group.value.data == group
    assert out_shapes(program) == [out]


def test_depthwise_conv() -> None:
    m = model([node("Conv", ["x", "w"], ["y"], group=8, strides=[2, 2], pads=[1, 1, 1, 1])], {"x": [1, 8, 10, 10]}, ["y"], {"w": random(8, 1, 3, 3)})
    program = matches_onnxruntime(m)
    assert only(program, nn.Conv2dOp).group.value.data == 8


def test_conv1d_becomes_conv2d_with_height_one() -> None:
    w = random(5, 4, 3)
    m = model(
        [node("Conv", ["x", "w"], ["y"], strides=[2], pads=[1, 2], dilations=[2])], {"x": [2, 4, 17]}, ["y"], {"w": w}
    )
    program = matches_onnxruntime(m)
    assert op_names(program) == ["nn.reshape", "nn.conv2d", "nn.reshape"]
    conv = only(program, nn.Conv2dOp)
    assert nn.int_list(conv.strides) == (1, 2) and nn.int_list(conv.dilations) == (1, 2)
    assert nn.int_list(conv.pads) == (0, 1, 0, 2)
    assert shape(conv.weight) == (5, 4, 1, 3)
    np.testing.assert_array_equal(next(a for _, a in program.weights.items()), w.reshape(5, 4, 1, 3))


def test_gemm_attributes() -> None:
    m = model(
        [node("Gemm", ["a", "b", "c"], ["y"], transA=1, transB=1, alpha=0.5, beta=2.0)],
        {"a": [6, 3]},
        ["y"],
        {"b": random(4, 6), "c": random(4, seed=3)},
    )
    program = matches_onnxruntime(m)
    gemm = only(program, nn.GemmOp)
    assert (gemm.trans_a.value.data, gemm.trans_b.value.data) == (1, 1)
    assert (gemm.alpha.value.data, gemm.beta.value.data) == (0.5, 2.0)
    assert out_shapes(program) == [(3, 4)]


def test_matmul_batched_broadcast() -> None:
    m = model([node("MatMul", ["a", "b"], ["y"])], {"a": [2, 1, 3, 4], "b": [5, 4, 6]}, ["y"])
    assert out_shapes(matches_onnxruntime(m)) == [(2, 5, 3, 6)]


# ---------------------------------------------------------------------------------------
# Elementwise and activations
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "attrs", "nn_op"),
    [
        ("Relu", {}, nn.ReluOp),
        ("Sigmoid", {}, nn.SigmoidOp),
        ("Tanh", {}, nn.TanhOp),
        ("HardSwish", {}, nn.HardSwishOp),
        ("LeakyRelu", {"alpha": 0.2}, nn.LeakyReluOp),
        ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, nn.HardSigmoidOp),
        ("LRN", {"size": 3, "alpha": 0.01, "beta": 0.5, "bias": 2.0}, nn.LRNOp),
        ("Identity", {}, nn.IdentityOp),
        ("Dropout", {}, nn.IdentityOp),
    ],
)
def test_unary_ops(op: str, attrs: dict[str, object], nn_op: type[nn.NNOp]) -> None:
    program = matches_onnxruntime(model([node(op, ["x"], ["y"], **attrs)], {"x": [1, 5, 4, 4]}, ["y"]))
    converted = only(program, nn_op)
    for key, value in attrs.items():
        prop = getattr(converted, key)
        got = prop.value.data
        assert got == pytest.approx(value), key


def test_clip_attributes_before_opset_11_and_inputs_after() -> None:
    old = import_onnx(model([node("Clip", ["x"], ["y"], min=-1.0, max=2.0)], {"x": [3]}, ["y"], opset=9))
    clip = only(old, nn.ClipOp)
    assert (clip.min.value.data, clip.max.value.data) == (-1.0, 2.0)
    new = model([node("Clip", ["x", "", "hi"], ["y"])], {"x": [3, 4]}, ["y"], {"hi": np.array(0.5, np.float32)})
    clip = only(matches_onnxruntime(new), nn.ClipOp)
    assert clip.min is None and clip.max.value.data == 0.5


def test_binary_broadcasting_and_sum_chain() -> None:
    m = model(
        [node("Sub", ["x", "c"], ["s"]), node("Div", ["s", "x"], ["d"]), node("Sum", ["d", "x", "s"], ["y"])],
        {"x": [2, 3, 4]},
        ["y"],
        {"c": random(3, 1, seed=5)},
    )
    program = matches_onnxruntime(m, rtol=1e-3)
    assert op_names(program) == ["nn.sub", "nn.div", "nn.add", "nn.add"]
    assert [op.layer_name for op in layers(program)[2:]] == ["sum", "sum"]


# ---------------------------------------------------------------------------------------
# Pooling and normalization
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "attrs"),
    [
        ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
        ("MaxPool", {"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 1, 1, 1]}),
        ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
        ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
        ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 0}),
        ("AveragePool", {"kernel_shape": [2, 3], "strides": [2, 2], "ceil_mode": 1}),
    ],
)
def test_pooling(op: str, attrs: dict[str, object]) -> None:
    program = matches_onnxruntime(model([node(op, ["x"], ["y"], **attrs)], {"x": [1, 2, 9, 10]}, ["y"], opset=13))
    pool = only(program, nn.PoolOp)
    assert pool.kind.data == ("max" if op == "MaxPool" else "avg")
    assert pool.ceil_mode.value.data == attrs.get("ceil_mode", 0)
    assert pool.count_include_pad.value.data == attrs.get("count_include_pad", 0)


def test_pool1d_via_reshape() -> None:
    m = model([node("MaxPool", ["x"], ["y"], kernel_shape=[3], strides=[2], pads=[1, 1])], {"x": [1, 3, 11]}, ["y"])
    program = matches_onnxruntime(m)
    assert op_names(program) == ["nn.reshape", "nn.pool", "nn.reshape"]
    assert nn.int_list(only(program, nn.PoolOp).kernel) == (1, 3)


@pytest.mark.parametrize(
    ("op", "attrs"),
    [
        ("MaxPool", {"kernel_shape": [2, 3, 2], "strides": [2, 1, 2], "pads": [1, 0, 1, 0, 1, 1], "ceil_mode": 1}),
        ("MaxPool", {"kernel_shape": [2, 2, 2], "strides": [1, 2, 2], "auto_pad": "SAME_LOWER"}),
        ("MaxPool", {"kernel_shape": [2, 2, 2], "dilations": [2, 1, 2], "pads": [1, 1, 0, 0, 1, 1]}),
        ("AveragePool", {"kernel_shape": [3, 2, 3], "strides": [2, 2, 1], "pads": [1, 1, 0, 2, 0, 1], "count_include_pad": 1, "ceil_mode": 1}),
        ("AveragePool", {"kernel_shape": [3, 3, 2], "strides": [2, 1, 2], "pads": [1, 1, 1, 1, 1, 1], "ceil_mode": 1}),
        ("AveragePool", {"kernel_shape": [2, 2, 2], "dilations": [2, 2, 1], "pads": [1, 0, 1, 1, 1, 0], "count_include_pad": 1}),
    ],
)
def test_pool3d_as_two_separable_2d_pools(op: str, attrs: dict[str, object]) -> None:
    program = matches_onnxruntime(model([node(op, ["x"], ["y"], **attrs)], {"x": [2, 3, 7, 6, 8]}, ["y"], opset=19))
    assert op_names(program) == ["nn.reshape", "nn.pool", "nn.reshape", "nn.pool", "nn.reshape"]


@pytest.mark.parametrize(("op", "kind"), [("GlobalAveragePool", "avg"), ("GlobalMaxPool", "max")])
def test_global_pooling(op: str, kind: str) -> None:
    program = matches_onnxruntime(model([node(op, ["x"], ["y"])], {"x": [2, 3, 5, 4]}, ["y"]))
    assert only(program, nn.GlobalPoolOp).kind.data == kind
    assert out_shapes(program) == [(2, 3, 1, 1)]


def test_batchnorm_inference() -> None:
    rng = np.random.default_rng(4)
    params = {k: rng.uniform(0.5, 1.5, 3).astype(np.float32) for k in ("s", "b", "m", "v")}
    m = model([node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)], {"x": [2, 3, 4, 4]}, ["y"], params)
    bn = only(matches_onnxruntime(m), nn.BatchNormOp)
    assert bn.epsilon.value.data == pytest.approx(1e-3)


# ---------------------------------------------------------------------------------------
# Layout ops
# ---------------------------------------------------------------------------------------


def test_flatten_reshape_transpose() -> None:
    m = model(
        [
            node("Flatten", ["x"], ["f"], axis=-2),
            node("Reshape", ["f", "spec"], ["r"]),
            node("Transpose", ["r"], ["y"]),
        ],
        {"x": [2, 3, 4, 5]},
        ["y"],
        {"spec": np.array([0, -1, 2], np.int64)},
    )
    program = matches_onnxruntime(m)
    assert op_names(program) == ["nn.reshape", "nn.reshape", "nn.transpose"]
    assert shape(layers(program)[0].result) == (6, 20)
    assert shape(layers(program)[1].result) == (6, 10, 2)
    assert nn.int_list(only(program, nn.TransposeOp).perm) == (2, 1, 0)


def test_reshape_allowzero_keeps_zero_dims() -> None:
    m = model(
        [node("Reshape", ["x", "spec"], ["y"], allowzero=1)], {"x": [2, 0, 3]}, ["y"], {"spec": np.array([3, 0, 2], np.int64)}
    )
    assert out_shapes(import_onnx(m)) == [(3, 0, 2)]


def test_concat_and_split_forms() -> None:
    m = model(
        [node("Concat", ["a", "b"], ["c"], axis=-1), node("Split", ["c"], ["y1", "y2"], axis=2, split=[2, 5])],
        {"a": [1, 2, 3], "b": [1, 2, 4]},
        ["y1", "y2"],
        opset=11,
    )
    program = matches_onnxruntime(m)
    assert only(program, nn.ConcatOp).axis.value.data == 2
    assert out_shapes(program) == [(1, 2, 2), (1, 2, 5)]
    by_input = model(
        [node("Split", ["x", "sizes"], ["y1", "y2"], axis=1)], {"x": [2, 7]}, ["y1", "y2"], {"sizes": np.array([3, 4], np.int64)}
    )
    assert out_shapes(matches_onnxruntime(by_input)) == [(2, 3), (2, 4)]
    uneven = model([node("Split", ["x"], ["y1", "y2", "y3"], axis=1, num_outputs=3)], {"x": [2, 7]}, ["y1", "y2", "y3"], opset=18)
    assert out_shapes(matches_onnxruntime(uneven)) == [(2, 3), (2, 3), (2, 1)]


@pytest.mark.parametrize(
    ("starts", "ends", "axes", "steps", "want"),
    [
        ([1, -3], [100, -1], [1, 2], [1, 1], ((0, 1, 3), (2, 6, 5), (1, 1, 1))),
        ([-1], [-1000], [2], [-2], ((0, 0, 5), (2, 6, -1), (1, 1, -2))),
        ([4, 0], [1, 2], [-2, 0], [-1, 1], ((0, 4, 0), (2, 1, 6), (1, -1, 1))),
        ([10], [20], [1], [1], ((0, 6, 0), (2, 6, 6), (1, 1, 1))),
    ],
)
def test_slice_is_normalized(starts: list[int], ends: list[int], axes: list[int], steps: list[int], want: tuple) -> None:
    init = {k: np.array(v, np.int64) for k, v in zip(("s", "e", "a", "t"), (starts, ends, axes, steps), strict=True)}
    m = model([node("Slice", ["x", "s", "e", "a", "t"], ["y"])], {"x": [2, 6, 6]}, ["y"], init)
    sl = only(matches_onnxruntime(m), nn.SliceOp)
    assert (nn.int_list(sl.starts), nn.int_list(sl.ends), nn.int_list(sl.steps)) == want


def test_slice_attributes_before_opset_10() -> None:
    m = model([node("Slice", ["x"], ["y"], starts=[1], ends=[-1], axes=[1])], {"x": [2, 6]}, ["y"], opset=9)
    assert out_shapes(import_onnx(m)) == [(2, 4)]


def test_squeeze_unsqueeze_attribute_and_input_forms() -> None:
    old = model(
        [node("Unsqueeze", ["x"], ["u"], axes=[0, -1]), node("Squeeze", ["u"], ["y"], axes=[0])], {"x": [3, 4]}, ["y"], opset=11
    )
    assert out_shapes(import_onnx(old)) == [(3, 4, 1)]
    new = model(
        [node("Unsqueeze", ["x", "a"], ["u"]), node("Squeeze", ["u"], ["y"])],
        {"x": [3, 1, 4]},
        ["y"],
        {"a": np.array([1], np.int64)},
    )
    program = matches_onnxruntime(new)
    assert out_shapes(program) == [(3, 4)]
    assert op_names(program) == ["nn.reshape", "nn.reshape"]


@pytest.mark.parametrize(
    ("opset", "mode", "extra"),
    [
        (9, "constant", {"pads": [0, 1, 2, 0], "value": 1.5}),
        (13, "reflect", {}),
        (13, "edge", {}),
        (18, "constant", {"axes": True}),
        (19, "wrap", {}),
    ],
)
def test_pad_forms(opset: int, mode: str, extra: dict[str, object]) -> None:
    if opset < 11:
        m = model([node("Pad", ["x"], ["y"], mode=mode, **extra)], {"x": [3, 4]}, ["y"], opset=opset)
        want = (0, 1, 2, 0)
    elif "axes" in extra:
        init = {"p": np.array([2, -1], np.int64), "v": np.array(3.0, np.float32), "a": np.array([-1], np.int64)}
        m = model([node("Pad", ["x", "p", "v", "a"], ["y"], mode=mode)], {"x": [3, 4]}, ["y"], init, opset=opset)
        want = (0, 2, 0, -1)
    else:
        m = model([node("Pad", ["x", "p"], ["y"], mode=mode)], {"x": [3, 4]}, ["y"], {"p": np.array([1, 2, 2, 1], np.int64)}, opset=opset)
        want = (1, 2, 2, 1)
    pad = only(matches_onnxruntime(m), nn.PadOp)
    assert nn.int_list(pad.pads) == want and pad.mode.data == mode


def test_softmax_axis_by_opset() -> None:
    old = matches_onnxruntime(model([node("Softmax", ["x"], ["y"], axis=1)], {"x": [2, 3, 4]}, ["y"], opset=11))
    assert op_names(old) == ["nn.reshape", "nn.softmax", "nn.reshape"]
    assert shape(only(old, nn.SoftmaxOp).input) == (2, 12)
    new = matches_onnxruntime(model([node("Softmax", ["x"], ["y"], axis=1)], {"x": [2, 3, 4]}, ["y"], opset=13))
    assert op_names(new) == ["nn.softmax"] and only(new, nn.SoftmaxOp).axis.value.data == 1


# ---------------------------------------------------------------------------------------
# Resize and Upsample
# ---------------------------------------------------------------------------------------


def test_upsample_opset9_and_resize_opset10_use_onnxruntime_nearest_rules() -> None:
    scales = {"s": np.array([1, 1, 2.5, 2.5], np.float32)}
    up = matches_onnxruntime(model([node("Upsample", ["x", "s"], ["y"])], {"x": [1, 2, 3, 4]}, ["y"], scales, opset=9))
    r = only(up, nn.ResizeOp)
    assert (r.coordinate_mode.data, r.nearest_mode.data) == ("asymmetric", "floor")
    assert out_shapes(up) == [(1, 2, 7, 10)]
    down = {"s": np.array([1, 1, 1, 0.6], np.float32)}
    r10 = matches_onnxruntime(model([node("Resize", ["x", "s"], ["y"])], {"x": [1, 2, 3, 10]}, ["y"], down, opset=10))
    assert only(r10, nn.ResizeOp).nearest_mode.data == "ceil"
    linear = model([node("Resize", ["x", "s"], ["y"], mode="linear")], {"x": [1, 2, 3, 4]}, ["y"], scales, opset=10)
    assert only(matches_onnxruntime(linear), nn.ResizeOp).mode.data == "linear"


@pytest.mark.parametrize(
    ("opset", "attrs"),
    [
        (11, {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}),
        (11, {"mode": "linear", "coordinate_transformation_mode": "align_corners"}),
        (13, {"mode": "nearest", "nearest_mode": "round_prefer_ceil"}),
        (13, {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}),
        (19, {"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"}),
    ],
)
def test_resize_with_scales(opset: int, attrs: dict[str, str]) -> None:
    init = {"roi": np.array([], np.float32), "s": np.array([1, 1, 1.5, 0.5], np.float32)}
    m = model([node("Resize", ["x", "roi", "s"], ["y"], **attrs)], {"x": [1, 2, 4, 6]}, ["y"], init, opset=opset)
    program = matches_onnxruntime(m)
    r = only(program, nn.ResizeOp)
    assert r.mode.data == attrs["mode"]
    assert r.coordinate_mode.data == attrs.get("coordinate_transformation_mode", "half_pixel")
    assert nn.float_list(r.scales) == (1.0, 1.0, 1.5, 0.5)
    assert out_shapes(program) == [(1, 2, 6, 3)]


def test_resize_with_sizes_and_axes() -> None:
    sizes = model(
        [node("Resize", ["x", "", "", "sz"], ["y"], mode="linear")], {"x": [1, 1, 4, 6]}, ["y"], {"sz": np.array([1, 1, 7, 3], np.int64)}
    )
    program = matches_onnxruntime(sizes)
    assert nn.float_list(only(program, nn.ResizeOp).scales) == pytest.approx((1, 1, 7 / 4, 0.5))
    axes = model(
        [node("Resize", ["x", "", "", "sz"], ["y"], axes=[3, 2])], {"x": [1, 1, 4, 6]}, ["y"], {"sz": np.array([9, 2], np.int64)}, opset=18
    )
    assert out_shapes(matches_onnxruntime(axes)) == [(1, 1, 2, 9)]


RESIZE_COORDINATES = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric"]


@pytest.mark.parametrize("coordinates", RESIZE_COORDINATES)
@pytest.mark.parametrize(("a", "exclude_outside"), [(-0.75, 0), (-0.5, 1)])
@pytest.mark.parametrize("scales", [(1.0, 1.0, 2.5, 0.7), (1.0, 1.0, 0.45, 1.8)])
def test_resize_cubic(coordinates: str, a: float, exclude_outside: int, scales: tuple[float, ...]) -> None:
    attrs = {"mode": "cubic", "coordinate_transformation_mode": coordinates, "cubic_coeff_a": a, "exclude_outside": exclude_outside}
    init = {"s": np.array(scales, np.float32)}
    program = matches_onnxruntime(model([node("Resize", ["x", "", "s"], ["y"], **attrs)], {"x": [1, 2, 7, 9]}, ["y"], init, opset=19))
    r = only(program, nn.ResizeOp)
    assert (r.mode.data, r.cubic_coeff_a.value.data, bool(r.exclude_outside)) == ("cubic", a, bool(exclude_outside))


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("exclude_outside", [0, 1])
@pytest.mark.parametrize("sizes", [(1, 2, 3, 5), (1, 2, 12, 2), (1, 2, 17, 13)])
def test_resize_antialias(mode: str, exclude_outside: int, sizes: tuple[int, ...]) -> None:
    attrs = {"mode": mode, "antialias": 1, "exclude_outside": exclude_outside}
    init = {"sz": np.array(sizes, np.int64)}
    program = matches_onnxruntime(model([node("Resize", ["x", "", "", "sz"], ["y"], **attrs)], {"x": [1, 2, 9, 11]}, ["y"], init, opset=19))
    assert only(program, nn.ResizeOp).antialias is not None


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("roi", [(0.1, 0.3, 0.8, 0.9), (-0.2, 0.4, 1.3, 0.7), (0.5, 0.5, 0.5, 0.5)])
def test_resize_tf_crop_and_resize(mode: str, roi: tuple[float, ...]) -> None:
    attrs = {"mode": mode, "coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": -3.0, "axes": [2, 3]}
    init = {"roi": np.array(roi, np.float32), "sz": np.array([5, 4], np.int64)}
    m = model([node("Resize", ["x", "roi", "", "sz"], ["y"], **attrs)], {"x": [1, 2, 6, 7]}, ["y"], init, opset=19)
    r = only(matches_onnxruntime(m), nn.ResizeOp)
    assert nn.float_list(r.roi) == pytest.approx((0, 0, roi[0], roi[1], 1, 1, roi[2], roi[3]))
    assert r.extrapolation_value.value.data == -3.0


@pytest.mark.parametrize("policy", ["not_larger", "not_smaller"])
@pytest.mark.parametrize("sizes", [(5, 9), (3, 2)])
def test_resize_keep_aspect_ratio(policy: str, sizes: tuple[int, int]) -> None:
    init = {"sz": np.array(sizes, np.int64)}
    attrs = {"mode": "linear", "axes": [2, 3], "keep_aspect_ratio_policy": policy}
    program = matches_onnxruntime(model([node("Resize", ["x", "", "", "sz"], ["y"], **attrs)], {"x": [1, 1, 4, 6]}, ["y"], init, opset=19))
    scales = nn.float_list(only(program, nn.ResizeOp).scales)
    assert scales[2] == scales[3]  # one scale keeps the aspect ratio


# ---------------------------------------------------------------------------------------
# Constants and folded shape arithmetic
# ---------------------------------------------------------------------------------------


def test_constant_forms_become_weights() -> None:
    m = model(
        [
            helper.make_node("Constant", [], ["a"], value=numpy_helper.from_array(np.ones((2, 3), np.float32))),
            helper.make_node("Constant", [], ["b"], value_float=2.0),
            helper.make_node("Constant", [], ["c"], value_floats=[1.0, 2.0, 3.0]),
            helper.make_node("Constant", [], ["i"], value_ints=[2, 3]),
            node("Reshape", ["x", "i"], ["r"]),
            node("Add", ["r", "a"], ["s"]),
            node("Mul", ["s", "b"], ["t"]),
            node("Mul", ["t", "c"], ["y"], name="mul2"),
        ],
        {"x": [6]},
        ["y"],
    )
    program = matches_onnxruntime(m)
    assert op_names(program) == ["nn.reshape", "nn.add", "nn.mul", "nn.mul"]
    stored = {handle: a.tolist() for handle, a in program.weights.items()}
    assert stored == {"a": [[1.0] * 3] * 2, "b": 2.0, "c": [1.0, 2.0, 3.0]}
    assert program.weights["b"].shape == ()


def test_shape_arithmetic_is_folded() -> None:
    # y = Reshape(x, Concat(Shape(x)[0:1] * 1, [-1])): a flatten computed with shape ops.
    m = model(
        [
            node("Shape", ["x"], ["shp"], end=2),
            node("Gather", ["shp", "zero"], ["n"], axis=0),
            node("Unsqueeze", ["n", "axes0"], ["n1"]),
            node("Mul", ["n1", "one"], ["n2"]),
            helper.make_node("Cast", ["n2"], ["n3"], to=TensorProto.INT64),
            node("Concat", ["n3", "minus1"], ["spec"], axis=0),
            node("Reshape", ["x", "spec"], ["y"]),
            helper.make_node("ConstantOfShape", ["shp"], ["z"], value=numpy_helper.from_array(np.array([7], np.int32))),
        ],
        {"x": [2, 3, 4]},
        ["y", "z"],
        {
            "zero": np.array(0, np.int64),
            "axes0": np.array([0], np.int64),
            "one": np.array([1], np.int64),
            "minus1": np.array([-1], np.int64),
        },
    )
    m.graph.output[1].type.tensor_type.elem_type = TensorProto.INT32
    program = import_onnx(m)
    assert op_names(program) == ["nn.reshape"]
    assert out_shapes(program) == [(2, 12), (2, 3)]
    z = next(op for op in program.main.body.ops if isinstance(op, nn.WeightOp))
    np.testing.assert_array_equal(program.weights[z.handle.data], np.full((2, 3), 7, np.int32))
    assert z.layer_name == "ConstantOfShape_7"  # unnamed nodes are named <OpType>_<index>


def test_densenet_style_unsqueeze_of_weight_is_folded() -> None:
    m = model(
        [node("Unsqueeze", ["w"], ["wu"], axes=[1, 2]), node("Mul", ["x", "wu"], ["y"])],
        {"x": [1, 3, 2, 2]},
        ["y"],
        {"w": random(3)},
        opset=9,
    )
    program = matches_onnxruntime(m)
    assert op_names(program) == ["nn.mul"]
    assert [a.shape for _, a in program.weights.items()] == [(3, 1, 1)]


def test_cast_of_a_computed_tensor_to_its_own_type_is_identity() -> None:
    m = model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], {"x": [3]}, ["y"])
    assert op_names(import_onnx(m)) == ["nn.identity"]


def test_opset_range_and_integer_tensors() -> None:
    for opset in (9, 22):
        assert op_names(import_onnx(model([node("Relu", ["x"], ["y"])], {"x": [2]}, ["y"], opset=opset))) == ["nn.relu"]
    ints = import_onnx(model([node("Add", ["x", "x"], ["y"])], {"x": [2]}, ["y"], elem=TensorProto.INT32))
    assert str(ints.input_types[0]) == "tensor<2xi32>"


def test_outputs_that_are_inputs_or_constants() -> None:
    m = model([], {"x": [2]}, ["x", "c"], {"c": np.array([1.0, 2.0], np.float32)})
    program = import_onnx(m)
    assert program.output_names == ["x", "c"]
    assert out_shapes(program) == [(2,), (2,)]


def test_unsorted_graph_is_converted_in_dependency_order() -> None:
    m = model([node("Relu", ["h"], ["y"], name="second"), node("Tanh", ["x"], ["h"], name="first")], {"x": [2]}, ["y"])
    program = import_onnx(m)
    assert [op.layer_name for op in layers(program)] == ["first", "second"]


def test_constants_give_graph_inputs_values_and_parameter_inputs_lists_the_needed_ones() -> None:
    nodes = [
        helper.make_node("Cast", ["s"], ["s64"], to=TensorProto.INT64),  # folded, so 's' is needed too
        node("Reshape", ["x", "s64"], ["r"]),
        node("Add", ["r", "b"], ["y"]),
    ]
    m = model(nodes, {"x": [2, 3], "s": [2], "b": [3, 2]}, ["y"])
    assert parameter_inputs(m) == ["s"]
    b = np.arange(6, dtype=np.float32).reshape(3, 2)
    program = import_onnx(m, constants={"s": np.array([3, 2], np.float32), "b": b})
    assert program.input_names == ["x"]  # both became weights
    assert op_names(program) == ["nn.reshape", "nn.add"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(execute(program, {"x": x})["y"], x.reshape(3, 2) + b)
    b[0, 0] = 100  # the program keeps its own copy
    np.testing.assert_array_equal(execute(program, {"x": x})["y"][0, 0], 0)


def test_dropout_mask_is_all_true_in_inference() -> None:
    program = import_onnx(model([node("Dropout", ["x"], ["y", "mask"])], {"x": [2, 3]}, ["y", "mask"], opset=13))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = execute(program, {"x": x})
    np.testing.assert_array_equal(out["y"], x)
    assert out["mask"].dtype == np.bool_ and out["mask"].shape == (2, 3) and out["mask"].all()


def test_gather_on_computed_data_becomes_nn_gather() -> None:
    m = model([node("Gather", ["x", "i"], ["y"], axis=-2)], {"x": [2, 5, 3]}, ["y"], {"i": np.array([[4, -1], [0, -5]], np.int64)})
    g = only(matches_onnxruntime(m), nn.GatherOp)
    assert g.axis.value.data == 1
    assert out_shapes(import_onnx(m)) == [(2, 2, 2, 3)]


def test_gather_with_computed_indices_checks_them_when_run() -> None:
    m = model([node("Gather", ["x", "i"], ["y"], axis=0)], {"x": [4, 2], "i": [3]}, ["y"])
    m.graph.input[1].type.tensor_type.elem_type = TensorProto.INT32
    program = import_onnx(m)
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    np.testing.assert_array_equal(execute(program, {"x": x, "i": np.array([3, -4, 1], np.int32)})["y"], x[[3, 0, 1]])
    with pytest.raises(LayerloomError, match="gather indices out of range for axis 0 of size 4"):
        execute(program, {"x": x, "i": np.array([4, 0, 0], np.int32)})


@pytest.mark.parametrize(("coordinates", "nearest"), [("asymmetric", "round_prefer_ceil"), ("half_pixel", "round_prefer_floor")])
@pytest.mark.parametrize(("length", "size"), [(14, 8), (10, 12), (7, 2), (20, 6)])
def test_resize_nearest_counts_near_halves_as_ties(coordinates: str, nearest: str, length: int, size: int) -> None:
    """x / scale in float32 can land a hair below k + 1/2 (3.4999998 for 14 -> 8 at x = 2);
    onnxruntime treats such coordinates as halves."""
    attrs = {"coordinate_transformation_mode": coordinates, "nearest_mode": nearest}
    init = {"sz": np.array([1, 1, 3, size], np.int64)}
    matches_onnxruntime(model([node("Resize", ["x", "", "", "sz"], ["y"], **attrs)], {"x": [1, 1, 3, length]}, ["y"], init, opset=19))


@st.composite
def resize_nodes(draw: st.DrawFn) -> tuple[onnx.ModelProto, str]:
    """A random Resize (mode, coordinates, rounding, antialias, roi, scales or sizes) on a
    1x2xHxW input."""
    mode = draw(st.sampled_from(["nearest", "linear", "cubic"]))
    coordinates = draw(st.sampled_from([*RESIZE_COORDINATES, "tf_crop_and_resize"]))
    attrs: dict[str, object] = {"mode": mode, "coordinate_transformation_mode": coordinates}
    if mode == "nearest":
        attrs["nearest_mode"] = draw(st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]))
    elif draw(st.booleans()):
        attrs["antialias"] = 1
    if (mode == "cubic" or "antialias" in attrs) and draw(st.booleans()):
        attrs["exclude_outside"] = 1
    if mode == "cubic":
        attrs["cubic_coeff_a"] = draw(st.sampled_from([-0.75, -0.5]))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    inputs, init = ["x", "", "", ""], {}
    if coordinates == "tf_crop_and_resize":
        # Multiples of 1/64 (exact in binary): onnxruntime rounds a start of -7.7e-16 to 0 and
        # samples the input where the spec (and onnx.reference, as we) extrapolate.
        starts = [k / 64 for k in draw(st.lists(st.integers(-16, 48), min_size=2, max_size=2))]
        ends = [k / 64 for k in draw(st.lists(st.integers(16, 80), min_size=2, max_size=2))]
        inputs[1], init["roi"] = "roi", np.array([0, 0, *starts, 1, 1, *ends], np.float32)
        attrs["extrapolation_value"] = 7.0
    if draw(st.booleans()):
        factors = [draw(st.sampled_from([0.5, 0.6, 0.75, 1.0, 1.25, 1.5, 2.0, 2.3, 3.0])) for _ in range(2)]
        scales = np.array([1, 1, *factors], np.float32)
        assume(all(np.floor(np.float32(d) * s) >= 1 for d, s in zip((h, w), factors, strict=True)))
        inputs[2], init["s"] = "s", scales
    else:
        inputs[3], init["sz"] = "sz", np.array([1, 2, draw(st.integers(1, 20)), draw(st.integers(1, 20))], np.int64)
    m = model([node("Resize", inputs, ["y"], **attrs)], {"x": [1, 2, h, w]}, ["y"], init, opset=19)
    return m, str(attrs)


@settings(deadline=None)
@given(resize_nodes())
def test_resize_matches_onnxruntime(case: tuple[onnx.ModelProto, str]) -> None:
    matches_onnxruntime(case[0])
