"""The reference executor: a small CNN against onnxruntime, input checking, unsupported ops,
extending the kernel table, and freeing each value after its last use."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
from onnx import helper

from backends.reference import KERNELS, execute, register_kernel
from backends.reference.kernels import evaluate
from compiler import quantize
from compiler.errors import LayerloomError, OutOfRangeError, UnsupportedError
from compiler.program import Program, WeightStore
from compiler.registry import parse_module
from dialects import nn
from tests.test_kernels import assert_same, onnx_run, random

SMALL_CNN = """
builtin.module {
  func.func @main(%x: tensor<1x3x8x8xf32> {nn.name = "image"}) -> (tensor<1x5xf32> {nn.name = "logits"}, tensor<1x8x4x4xf32> {nn.name = "features"}) {
    %w1 = nn.weight "w1" : tensor<4x3x3x3xf32>
    %b1 = nn.weight "b1" : tensor<4xf32>
    %c1 = nn.conv2d %x, %w1, %b1 {name = "conv1", strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, activation = "relu"} : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>, tensor<4xf32>) -> tensor<1x4x8x8xf32>
    %p1 = nn.pool %c1 {name = "pool1", kind = "max", kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, ceil_mode = 0 : i64, count_include_pad = 0 : i64} : (tensor<1x4x8x8xf32>) -> tensor<1x4x4x4xf32>
    %wd = nn.weight "wd" : tensor<4x1x3x3xf32>
    %d = nn.conv2d %p1, %wd {name = "dw", strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 4 : i64} : (tensor<1x4x4x4xf32>, tensor<4x1x3x3xf32>) -> tensor<1x4x4x4xf32>
    %s = nn.add %d, %p1 {name = "residual"} : (tensor<1x4x4x4xf32>, tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32>
    %cat = nn.concat %s, %p1 {name = "cat", axis = 1 : i64} : (tensor<1x4x4x4xf32>, tensor<1x4x4x4xf32>) -> tensor<1x8x4x4xf32>
    %g = nn.global_pool %cat {name = "gap", kind = "avg"} : (tensor<1x8x4x4xf32>) -> tensor<1x8x1x1xf32>
    %f = nn.reshape %g {name = "flatten"} : (tensor<1x8x1x1xf32>) -> tensor<1x8xf32>
    %wf = nn.weight "wf" : tensor<5x8xf32>
    %bf = nn.weight "bf" : tensor<5xf32>
    %y = nn.gemm %f, %wf, %bf {name = "fc", trans_a = 0 : i64, trans_b = 1 : i64, alpha = 1.0 : f64, beta = 1.0 : f64} : (tensor<1x8xf32>, tensor<5x8xf32>, tensor<5xf32>) -> tensor<1x5xf32>
    func.return %y, %cat : tensor<1x5xf32>, tensor<1x8x4x4xf32>
  }
}
"""

SMALL_CNN_WEIGHTS = {
    "w1": random(4, 3, 3, 3, seed=1),
    "b1": random(4, seed=2),
    "wd": random(4, 1, 3, 3, seed=3),
    "wf": random(5, 8, seed=4),
    "bf": random(5, seed=5),
}


def small_cnn() -> Program:
    return Program(parse_module(SMALL_CNN), WeightStore(SMALL_CNN_WEIGHTS))


def test_small_cnn_matches_onnxruntime() -> None:
    make = helper.make_node
    nodes = [
        make("Conv", ["image", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]),
        make("Relu", ["c"], ["c1"]),
        make("MaxPool", ["c1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        make("Conv", ["p1", "wd"], ["d"], pads=[1, 1, 1, 1], group=4),
        make("Add", ["d", "p1"], ["s"]),
        make("Concat", ["s", "p1"], ["features"], axis=1),
        make("GlobalAveragePool", ["features"], ["g"]),
        make("Flatten", ["g"], ["f"]),
        make("Gemm", ["f", "wf", "bf"], ["logits"], transB=1),
    ]
    x = random(1, 3, 8, 8, seed=9)
    expected = onnx_run(nodes, {"image": x}, SMALL_CNN_WEIGHTS, outputs=["logits", "features"])
    out = execute(small_cnn(), {"image": x})
    assert list(out) == ["logits", "features"]
    assert_same([out["logits"], out["features"]], expected)


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({}, "missing input 'image'"),
        ({"image": np.zeros((1, 3, 8, 8), np.float32), "mask": np.zeros(3)}, "unknown input 'mask'"),
        ({"image": np.zeros((1, 3, 8, 7), np.float32)}, "input 'image' is 1x3x8x7 float32, expected 1x3x8x8 float32"),
        ({"image": np.zeros((1, 3, 8, 8), np.float64)}, "input 'image' is 1x3x8x8 float64, expected 1x3x8x8 float32"),
        ({"image": [[1.0, 2.0]]}, "input 'image' is 1x2 float64, expected 1x3x8x8 float32"),
    ],
)
def test_bad_inputs_are_rejected_by_name(inputs: dict, message: str) -> None:
    program = small_cnn()
    program.source = "build/model.mlir"
    with pytest.raises(LayerloomError) as info:
        execute(program, inputs)
    assert message in str(info.value)
    assert info.value.where == "build/model.mlir"


def test_weight_with_the_wrong_shape_in_the_store() -> None:
    weights = dict(SMALL_CNN_WEIGHTS, wf=np.zeros((8, 5), np.float32))
    with pytest.raises(LayerloomError, match="weight 'wf' in the store is 8x5 float32, the IR expects 5x8 float32"):
        execute(small_cnn().module, {"image": random(1, 3, 8, 8)}, WeightStore(weights))


def test_op_without_kernel_names_the_op_and_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(KERNELS, nn.AddOp)
    with pytest.raises(UnsupportedError) as info:
        execute(small_cnn(), {"image": random(1, 3, 8, 8)})
    assert "'nn.add'" in str(info.value) and info.value.where == "residual"


def test_register_kernel_replaces_and_extends_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Other dialects (qnn) add kernels the same way; here the add kernel is swapped."""
    monkeypatch.setitem(KERNELS, nn.AddOp, KERNELS[nn.AddOp])  # restored after the test
    register_kernel(nn.AddOp, lambda op, args: [args[0] - args[1]])
    a, b = np.array([5, 7], np.int32), np.array([1, 2], np.int32)
    module = parse_module(
        """builtin.module { func.func @main(%a: tensor<2xi32> {nn.name = "a"}, %b: tensor<2xi32> {nn.name = "b"}) -> (tensor<2xi32> {nn.name = "y"}) {
        %y = nn.add %a, %b : (tensor<2xi32>, tensor<2xi32>) -> tensor<2xi32>
        func.return %y : tensor<2xi32> } }"""
    )
    assert execute(module, {"a": a, "b": b})["y"].tolist() == [4, 5]


def relu_chain(length: int) -> Program:
    lines = [f"%v{i + 1} = nn.relu %v{i} : (tensor<64x64xf32>) -> tensor<64x64xf32>" for i in range(length)]
    text = (
        'builtin.module { func.func @main(%v0: tensor<64x64xf32> {nn.name = "x"}) -> (tensor<64x64xf32> {nn.name = "y"}) {\n'
        + "\n".join(lines)
        + f"\nfunc.return %v{length} : tensor<64x64xf32> }} }}"
    )
    return Program(parse_module(text))


def test_values_are_freed_after_their_last_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a chain of 30 relus at most one earlier result is alive when a relu runs (its
    argument), and the chain reuses that one buffer: each value is handed on at its last use."""
    produced: list[weakref.ref] = []
    alive_counts: list[int] = []
    relu = KERNELS[nn.ReluOp]

    def watching_relu(op: object, args: list[np.ndarray]) -> list[np.ndarray]:
        alive_counts.append(len({id(r()) for r in produced if r() is not None}))
        results = relu(op, args)  # type: ignore[arg-type]
        produced.extend(weakref.ref(r) for r in results)
        return results

    monkeypatch.setitem(KERNELS, nn.ReluOp, watching_relu)
    x = random(64, 64)
    y = execute(relu_chain(30), {"x": x})["y"]
    assert len(produced) == 30
    assert max(alive_counts) <= 1
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    assert (x < 0).any()  # the input itself is never written


def test_values_still_needed_are_never_overwritten() -> None:
    """A value is reused only at its last use and when no live value shares its memory:
    %a feeds a relu but is used again; %v is a view (reshape) of %a when its relu runs."""
    module = parse_module(
        """builtin.module { func.func @main(%x: tensor<4x4xf32> {nn.name = "x"}) -> (tensor<4x4xf32> {nn.name = "y"}, tensor<16xf32> {nn.name = "z"}) {
        %a = nn.sub %x, %x : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
        %b = nn.add %a, %x : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
        %r = nn.relu %b : (tensor<4x4xf32>) -> tensor<4x4xf32>
        %v = nn.reshape %b : (tensor<4x4xf32>) -> tensor<16xf32>
        %t = nn.leaky_relu %v {alpha = 2.0 : f64} : (tensor<16xf32>) -> tensor<16xf32>
        %y = nn.add %r, %b : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
        func.return %y, %t : tensor<4x4xf32>, tensor<16xf32> } }"""
    )
    x = random(4, 4)
    out = execute(module, {"x": x})
    np.testing.assert_allclose(out["y"], np.maximum(x, 0) + x)
    np.testing.assert_allclose(out["z"], np.where(x < 0, 2 * x, x).ravel())


def test_outputs_belong_to_the_caller_and_inputs_are_not_written() -> None:
    module = parse_module(
        """builtin.module { func.func @main(%x: tensor<3xf32> {nn.name = "x"}) -> (tensor<3xf32> {nn.name = "same"}, tensor<3xf32> {nn.name = "twice"}) {
        %i = nn.identity %x : (tensor<3xf32>) -> tensor<3xf32>
        func.return %i, %x : tensor<3xf32>, tensor<3xf32> } }"""
    )
    x = np.array([1.0, -2.0, 3.0], np.float32)
    out = execute(module, {"x": x})
    out["same"][:] = 0
    out["twice"][:] = 0
    assert x.tolist() == [1.0, -2.0, 3.0]


def test_unused_results_and_inputs_are_fine() -> None:
    module = parse_module(
        """builtin.module { func.func @main(%x: tensor<4xf32> {nn.name = "x"}, %unused: tensor<2xf32> {nn.name = "u"}) -> (tensor<2xf32> {nn.name = "y"}) {
        %a, %b = nn.split %x {axis = 0 : i64} : (tensor<4xf32>) -> (tensor<2xf32>, tensor<2xf32>)
        %dead = nn.tanh %a : (tensor<2xf32>) -> tensor<2xf32>
        func.return %b : tensor<2xf32> } }"""
    )
    out = execute(module, {"x": np.arange(4, dtype=np.float32), "u": np.zeros(2, np.float32)})
    assert out["y"].tolist() == [2.0, 3.0]


def test_parameters_that_overflow_int32_are_a_user_error_naming_the_layer() -> None:
    """An int8 layer whose bias drives its accumulator out of int32 breaks the spec: the
    executor refuses it as a LayerloomError that names the layer (not a bare ValueError)."""
    rng = np.random.default_rng(0)
    q = quantize(small_cnn(), [{"image": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(2)])
    q.weights.set("conv1.q_1", np.full(4, np.iinfo(np.int32).max, np.int32))  # conv1's int32 bias
    with pytest.raises(OutOfRangeError, match="leaves int32") as info:
        execute(q, {"image": np.ones((1, 3, 8, 8), np.float32)})
    assert info.value.where == "layer 'conv1' (qnn.conv2d)"


def test_kernel_bugs_are_not_disguised(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel failing on valid IR is a bug in layerloom: it raises as is, not as a user error."""
    monkeypatch.setitem(KERNELS, nn.ReluOp, lambda op, args: [args[0][99]])
    with pytest.raises(IndexError):
        execute(relu_chain(1), {"x": random(64, 64)})


def test_evaluate_on_an_op_without_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(KERNELS, nn.ReluOp)
    op = next(op for op in relu_chain(1).main.body.block.ops if isinstance(op, nn.ReluOp))
    with pytest.raises(UnsupportedError, match="no kernel for 'nn.relu'"):
        evaluate(op, [random(64, 64)])
