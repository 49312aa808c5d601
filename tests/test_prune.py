"""The prune pass (passes/prune.py, compiler/prune/).

The main oracle: a pruned program must compute exactly what the unpruned program computes
when the removed channels are *masked* instead: the consumers' weights for those input
channels zeroed (a conv's input-channel slice, the rows of a gemm's B), nothing else
changed. That holds only if every tied tensor, depthwise filter, batchnorm parameter,
concat offset and flatten row was sliced consistently, so the random models and the
example networks are checked against it, and against onnxruntime through export_onnx.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper

from backends.reference import execute
from benchmarks.common import run_ort
from compiler import export_onnx, import_onnx, run_pipeline
from compiler.analysis import analyze, totals
from compiler.errors import LayerloomError
from compiler.program import Program
from compiler.prune.groups import CRITERIA
from compiler.prune.report import PruneReport, layer_names
from compiler.prune.search import kept_channels
from compiler.registry import parse_module
from dialects import nn
from examples.models import build
from passes.prune import channel_graph, prune
from passes.utils import new_weight, weight_array
from tests.test_random_cnns import NetBuilder

EXAMPLES = Path(__file__).parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
import train_digits  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5
DIGITS_BATCH = 400  # the test split, one batch; training data in multiples of it


@pytest.fixture(scope="module")
def digits() -> tuple[Program, tuple[np.ndarray, ...]]:
    program = import_onnx(EXAMPLES / train_digits.MODELS["cnn"], input_shapes={"input": (DIGITS_BATCH, 1, 8, 8)})
    return program, train_digits.digits_split()


def accuracy(program: Program, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(execute(program, {"input": x})["logits"].argmax(axis=1) == y))


def masked(program: Program, report: PruneReport) -> Program:
    """`program` unpruned, with the weights that read a removed channel zeroed."""
    copy = program.clone()
    graph = channel_graph(copy)
    names = layer_names(copy.module)
    by_layers = {tuple(names[op] for op in g.sources): g for g in graph.groups if g.prunable}
    maps = graph.index_maps({by_layers[r.layers].index: np.array(r.kept) for r in report.groups})
    for op in list(copy.main.body.block.ops):
        if isinstance(op, nn.Conv2dOp) and op.group.value.data == 1:
            x, w, axis = op.input, op.weight, 1
        elif isinstance(op, nn.GemmOp):
            x, w, axis = op.a, op.b, 1 if op.trans_b.value.data else 0
        else:
            continue
        group = graph.group_of(x)
        kept = maps[group.index] if group is not None else None
        if kept is None:
            continue
        array = np.array(weight_array(w, copy.weights))
        removed = np.setdiff1d(np.arange(array.shape[axis]), kept)
        array[(slice(None),) * axis + (removed,)] = 0
        zeroed = new_weight(copy.weights, array, "masked")
        copy.main.body.block.insert_op_before(zeroed, op)
        op.operands = [zeroed.result if v is w else v for v in op.operands]
    return copy


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], when: str) -> None:
    assert list(got) == list(want), when
    for name, expected in want.items():
        assert got[name].shape == expected.shape, f"{when}: {name}"
        np.testing.assert_allclose(got[name], expected, rtol=RTOL, atol=ATOL, err_msg=f"{when}: {name}")


def check_pruned(program: Program, pruned: Program, report: PruneReport, feeds: dict[str, np.ndarray]) -> None:
    """Verifies, runs as the masked original does (unless biases were compensated) and as
    onnxruntime runs its export."""
    pruned.module.verify()
    ours = execute(pruned, feeds)
    if not report.compensate:
        assert_close(ours, execute(masked(program, report), feeds), "pruned vs masked")
    with tempfile.TemporaryDirectory() as folder:
        model = export_onnx(pruned, Path(folder) / "pruned.onnx")
    assert_close(ours, run_ort(model, feeds), "pruned vs onnxruntime")


# ---------------------------------------------------------------------------------------
# Rounding the kept counts
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channels", "ratio", "multiple", "kept"),
    [
        (16, 0.25, 1, 12),
        (10, 0.25, 1, 8),  # 7.5: ties keep more
        (3, 0.9, 1, 1),  # never zero
        (32, 0.25, 8, 24),
        (16, 0.25, 8, 16),  # 12 lies halfway between 8 and 16
        (17, 0.5, 8, 8),  # 8.5: nearest multiple
        (20, 0.1, 8, 20),  # 18: 16 and the full 20 are equally near
        (16, 0.99, 8, 8),  # at least one multiple
        (4, 0.9, 8, 4),  # narrower than a multiple: never pruned
        (64, 0.0, 8, 64),
    ],
)
def test_kept_channels(channels: int, ratio: float, multiple: int, kept: int) -> None:
    assert kept_channels(channels, ratio, multiple) == kept


@given(st.integers(1, 300), st.floats(0.0, 0.99), st.floats(0.0, 0.99), st.integers(1, 16))
def test_kept_channels_are_multiples_and_fall_with_the_ratio(channels: int, r1: float, r2: float, multiple: int) -> None:
    low, high = sorted((r1, r2))
    a, b = kept_channels(channels, low, multiple), kept_channels(channels, high, multiple)
    for k in (a, b):
        assert 1 <= k <= channels and (k == channels or k % multiple == 0)
    assert b <= a


# ---------------------------------------------------------------------------------------
# The digits CNN and the example networks
# ---------------------------------------------------------------------------------------


def test_ratio_zero_changes_nothing(digits: tuple[Program, tuple[np.ndarray, ...]]) -> None:
    program, (_, _, x_test, _) = digits
    pruned, report = prune(program, ratio=0.0)
    assert pruned.text() == program.text()
    assert np.array_equal(execute(pruned, {"input": x_test})["logits"], execute(program, {"input": x_test})["logits"])
    assert [(g.channels_before, g.channels_after) for g in report.groups] == [(16, 16), (32, 32)]


def test_digits_uniform_quarter(digits: tuple[Program, tuple[np.ndarray, ...]]) -> None:
    program, (_, _, x_test, y_test) = digits
    before = program.text()
    pruned, report = prune(program, x_test, y_test, ratio=0.25)
    assert program.text() == before  # the argument is left as it was
    check_pruned(program, pruned, report, {"input": x_test})
    assert [(g.layers, g.followers, g.channels_after) for g in report.groups] == [
        (("conv1",), ("bn1",), 12), (("conv2",), ("bn2",), 24)]  # fmt: skip
    assert [(s.layers, s.reason) for s in report.skipped] == [(("fc",), "reaches the graph output")]
    shapes = {x.name: x.weight_shapes for x in analyze(pruned)}
    assert shapes["conv2"] == ((24, 12, 3, 3), (24,)) and shapes["fc"] == ((10, 24 * 2 * 2), (10,))
    # The per-layer report is compiler.analysis of the two programs.
    after = {x.name: x for x in analyze(pruned)}
    for change in report.layers:
        assert (change.macs_after, change.params_after) == (after[change.name].macs, after[change.name].params)
    assert report.macs_after == totals(analyze(pruned)).macs < report.macs_before == totals(analyze(program)).macs
    assert report.accuracy_before == accuracy(program, x_test, y_test) == 0.9775
    assert report.accuracy_after == accuracy(pruned, x_test, y_test)
    assert report.samples == DIGITS_BATCH and "accuracy: 97.75% ->" in report.table()


def test_digits_pruned_a_quarter_of_its_macs_keeps_its_accuracy(digits: tuple[Program, tuple[np.ndarray, ...]]) -> None:
    """Sensitivity on (part of) the training split, accuracy on the test split: without
    fine-tuning, removing 25% of the MACs costs at most one point of test accuracy."""
    program, (x_train, y_train, x_test, y_test) = digits
    samples = len(x_train) // DIGITS_BATCH * DIGITS_BATCH
    pruned, report = prune(program, x_train[:samples], y_train[:samples], target="flops", goal=0.75)
    assert report.macs_after <= 0.75 * report.macs_before
    assert report.cost_after == report.macs_after and report.cost_before == report.macs_before
    assert accuracy(pruned, x_test, y_test) >= accuracy(program, x_test, y_test) - 0.01
    # Every group was measured at each candidate count; conv1 (the sensitive one) is kept whole.
    assert all(len(g.sensitivity) >= 5 for g in report.groups)
    assert report.groups[0].channels_after == 16 and report.groups[1].channels_after < 32


def test_compensation_recovers_accuracy(digits: tuple[Program, tuple[np.ndarray, ...]]) -> None:
    """Biases compensated for the mean of the removed channels (measured on the training
    split): a uniform quarter of the channels costs 11.5 points instead of 53, half the
    MACs chosen by sensitivity under one point."""
    program, (x_train, y_train, x_test, y_test) = digits
    samples = len(x_train) // DIGITS_BATCH * DIGITS_BATCH
    plain, _ = prune(program, ratio=0.25)
    uniform, _ = prune(program, x_train[:samples], ratio=0.25, compensate=True)
    assert accuracy(plain, x_test, y_test) < 0.5 and accuracy(uniform, x_test, y_test) >= 0.85
    half, report = prune(program, x_train[:samples], y_train[:samples], target="flops", goal=0.5, compensate=True)
    assert report.macs_after <= 0.5 * report.macs_before
    assert accuracy(half, x_test, y_test) >= accuracy(program, x_test, y_test) - 0.01
    # docs/pruning.md shows this report.
    docs = (Path(__file__).parent.parent / "docs" / "pruning.md").read_text()
    example = docs.split("## Example: the digits CNN")[1].split("```text\n")[1].split("```")[0]
    assert samples == 1200 and example == report.table()


def test_compensation_is_exact_for_constant_channels() -> None:
    """Channels whose filters are zero carry a constant (relu of their bias): removing them
    and adding their contribution to the consumers' biases (a conv without bias, a gemm
    without C) changes no output."""
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((4, 2, 3, 3))
    w1[[1, 3]] = 0  # constant channels: relu(2.0) and relu(-1.0)
    w2 = rng.standard_normal((3, 4, 3, 3))
    w2[2] = 0  # constant channel: relu(0.5 + nothing)
    b = NetBuilder(rng)
    b.shapes["input"] = (1, 2, 4, 4)
    y = b.node("Conv", ["input", b.weight(w1), b.weight(np.array([0.1, 2.0, 0.3, -1.0]))], (1, 4, 4, 4),
               kernel_shape=[3, 3], pads=[1] * 4)  # fmt: skip
    y = b.node("Conv", [b.node("Relu", [y], (1, 4, 4, 4)), b.weight(w2), b.weight(np.array([0.0, 0.0, 0.5]))],
               (1, 3, 2, 2), kernel_shape=[3, 3])  # no padding: a constant input channel adds a constant  # fmt: skip
    y = b.node("Flatten", [b.node("Relu", [y], (1, 3, 2, 2))], (1, 12), axis=1)
    y = b.node("Gemm", [y, b.weight(rng.standard_normal((5, 12)))], (1, 5), transB=1, alpha=0.5)
    program = import_onnx(b.model("input", y, opset=17))
    feeds = {"input": rng.standard_normal((1, 2, 4, 4)).astype(np.float32)}
    options = {"ratios": {b.nodes[0].name: 0.5, b.nodes[2].name: 0.34}}
    exact, report = prune(program, feeds, compensate=True, **options)
    assert [g.kept for g in report.groups] == [(0, 2), (0, 1)]
    assert_close(execute(exact, feeds), execute(program, feeds), "compensated")
    assert {x.op: len(x.weight_shapes) for x in analyze(exact) if x.macs} == {"conv2d": 2, "gemm": 2}  # biases added
    check_pruned(program, exact, report, feeds)
    plain, _ = prune(program, **options)
    assert not np.allclose(execute(plain, feeds)[y], execute(program, feeds)[y])


def test_targets_params_and_uniform_without_data(digits: tuple[Program, tuple[np.ndarray, ...]]) -> None:
    program, _ = digits
    _, by_params = prune(program, target="params", goal=0.6, multiple=2)
    assert by_params.params_after <= 0.6 * by_params.params_before
    # Without data the ratio is uniform: one ratio explains every group's count.
    counts = [(g.channels_before, g.channels_after) for g in by_params.groups]
    assert any(all(kept_channels(c, r / 100, 2) == k for c, k in counts) for r in range(100))
    assert all(k % 2 == 0 for _, k in counts)


def test_latency_target_uses_the_cost_model(digits: tuple[Program, tuple[np.ndarray, ...]]) -> None:
    from compiler.hw import load_target
    from compiler.prune.codesign import mapped

    program, _ = digits
    pruned, report = prune(program, target="latency", goal=0.8, hw="zcu102", arch="hybrid", budget=512)
    target = load_target("zcu102")

    def latency(p: Program) -> float:  # per frame at the throughput of the mapping `estimate` makes
        return mapped(p, target, "hybrid", 512).period_s

    assert report.cost_before == latency(program) and report.cost_after == latency(pruned)
    assert latency(pruned) <= 0.8 * latency(program)


SMALL = {"mobilenet_v2": (0.25, 64), "resnet50": (0.25, 64), "efficientnet_b0": (0.25, 64), "tiny_yolov3": (0.25, 128)}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_example_networks_prune_consistently(name: str) -> None:
    width, resolution = SMALL[name]
    program = import_onnx(build(name, width, resolution))
    pruned, report = prune(program, ratio=0.5, multiple=8, criterion="l2")
    x = np.random.default_rng(3).standard_normal((1, 3, resolution, resolution)).astype(np.float32)
    check_pruned(program, pruned, report, {"input": x})
    assert report.macs_after < 0.6 * report.macs_before
    assert all(g.channels_after == g.channels_before or g.channels_after % 8 == 0 for g in report.groups)
    assert {s.reason for s in report.skipped} == {"reaches the graph output"}
    tied = [g.layers for g in report.groups if len(g.layers) > 1]
    if name == "resnet50":  # a stage's residual adds tie the projection and every branch2c
        assert ("res2a_branch2c", "res2a_branch1", "res2b_branch2c", "res2c_branch2c") in tied
    if name == "mobilenet_v2":  # depthwise filters follow the expand conv
        assert next(g for g in report.groups if g.layers == ("block2_expand",)).followers[:2] == ("block2_expand_bn", "block2_dw")


# ---------------------------------------------------------------------------------------
# Random CNNs with residual blocks, inverted residuals (depthwise), concats, squeeze-excite
# ---------------------------------------------------------------------------------------


def conv(b: NetBuilder, x: str, out: int, kernel: int = 1, group: int = 1) -> str:
    _, c, h, w = b.shapes[x]
    weights = [x, b.he((out, c // group, kernel, kernel), c // group * kernel * kernel)]
    if b.rng.random() < 0.5:
        weights.append(b.weight(b.rng.standard_normal(out) * 0.1))
    return b.node("Conv", weights, (1, out, h, w), kernel_shape=[kernel] * 2, pads=[kernel // 2] * 4, group=group)


def bn_act(b: NetBuilder, x: str, act: str = "Relu") -> str:
    c = b.shapes[x][1]
    params = [b.rng.uniform(0.5, 1.5, c), b.rng.standard_normal(c) * 0.1, b.rng.standard_normal(c) * 0.1,
              b.rng.uniform(0.5, 1.5, c)]  # fmt: skip
    y = b.node("BatchNormalization", [x, *map(b.weight, params)], b.shapes[x])
    return b.node(act, [y], b.shapes[y]) if act else y


def block(draw: st.DrawFn, b: NetBuilder, x: str) -> str:
    _, c, h, w = b.shapes[x]
    kind = draw(st.sampled_from(["residual", "inverted", "concat", "squeeze", "pool", "plain"]))
    if kind == "residual":  # conv-bn-relu, conv-bn, + shortcut (a 1x1 projection when the width changes)
        out = draw(st.integers(2, 12))
        y = bn_act(b, conv(b, bn_act(b, conv(b, x, out, 3)), out, 3), act="")
        shortcut = x if out == c else bn_act(b, conv(b, x, out), act="")
        return b.node("Relu", [b.node("Add", [shortcut, y], b.shapes[y])], b.shapes[y])
    if kind == "inverted":  # expand, depthwise, project (+ shortcut at the same width)
        hidden, out = c * draw(st.integers(1, 4)), draw(st.sampled_from([c, draw(st.integers(2, 12))]))
        y = bn_act(b, conv(b, bn_act(b, conv(b, x, hidden)), hidden, 3, group=hidden))
        y = bn_act(b, conv(b, y, out), act="")
        return b.node("Add", [x, y], b.shapes[y]) if out == c else y
    if kind == "concat":
        parts = [bn_act(b, conv(b, x, draw(st.integers(1, 8)), draw(st.sampled_from([1, 3])))) for _ in range(2)]
        parts += [x] if draw(st.booleans()) else []  # the block's input passes through too
        return b.node("Concat", parts, (1, sum(b.shapes[p][1] for p in parts), h, w), axis=1)
    if kind == "squeeze":  # x * sigmoid(expand(relu(reduce(global pool x))))
        reduced = conv(b, b.node("GlobalAveragePool", [x], (1, c, 1, 1)), draw(st.integers(1, 4)))
        gate = conv(b, b.node("Relu", [reduced], b.shapes[reduced]), c)
        return b.node("Mul", [x, b.node("Sigmoid", [gate], b.shapes[gate])], (1, c, h, w))
    if kind == "pool" and min(h, w) >= 2:
        return b.node("MaxPool", [x], (1, c, h // 2, w // 2), kernel_shape=[2, 2], strides=[2, 2])
    return bn_act(b, conv(b, x, draw(st.integers(2, 12)), 3))


@st.composite
def prunable_cnns(draw: st.DrawFn) -> onnx.ModelProto:
    b = NetBuilder(np.random.default_rng(draw(st.integers(0, 2**32 - 1))))
    side = draw(st.integers(2, 8))
    b.shapes["input"] = (1, draw(st.integers(1, 3)), side, side)
    y = bn_act(b, conv(b, "input", draw(st.integers(2, 12)), 3))
    for _ in range(draw(st.integers(1, 4))):
        y = block(draw, b, y)
    head = draw(st.sampled_from(["flatten-fc", "pool-fc", "conv"]))
    if head != "conv":
        if head == "pool-fc":
            y = b.node("GlobalAveragePool", [y], (*b.shapes[y][:2], 1, 1))
        features = int(np.prod(b.shapes[y][1:]))
        y = b.node("Flatten", [y], (1, features), axis=1)
        hidden = draw(st.integers(2, 10))
        y = b.node("Relu", [b.node("Gemm", [y, b.he((hidden, features), features)], (1, hidden), transB=1)], (1, hidden))
        y = b.node("Gemm", [y, b.he((hidden, 3), hidden), b.weight(np.zeros(3))], (1, 3))
    return b.model("input", y, opset=17)


@given(prunable_cnns(), st.data())
def test_random_cnns_prune_consistently(model: onnx.ModelProto, data: st.DataObject) -> None:
    program = import_onnx(model)
    _, plan = prune(program)
    ratios = {g.layers[0]: data.draw(st.sampled_from([0.0, 0.25, 0.5, 0.9]), label=g.layers[0]) for g in plan.groups}
    criterion = data.draw(st.sampled_from(CRITERIA), label="criterion")
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    feeds = {"input": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    compensate = data.draw(st.booleans(), label="compensate")
    pruned, report = prune(program, feeds if compensate else None, ratios=ratios, criterion=criterion,
                           multiple=data.draw(st.integers(1, 3)), compensate=compensate)  # fmt: skip
    check_pruned(program, pruned, report, feeds)
    for g in report.groups:
        assert g.channels_after == kept_channels(g.channels_before, ratios[g.layers[0]], report.multiple)
        assert len(g.kept) == g.channels_after and list(g.kept) == sorted(set(g.kept))


# ---------------------------------------------------------------------------------------
# The pass in a pipeline, and what users get wrong
# ---------------------------------------------------------------------------------------


def test_pipeline_with_calibration_file(digits: tuple[Program, tuple[np.ndarray, ...]], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    program, (x_train, y_train, _, _) = digits
    data = tmp_path / "val.npz"
    np.savez(data, input=x_train[:800], labels=y_train[:800])
    with caplog.at_level(logging.INFO, logger="layerloom.prune"):
        text = f'prune{{target=flops goal=0.75 calib="{data}" ratios="conv1:0.25" compensate=true}}'
        piped = run_pipeline(program.clone(), text)
    assert capsys.readouterr().out == ""
    assert "accuracy: " in caplog.text and "on 800 samples" in caplog.text and "group conv1: 16 -> 12" in caplog.text
    direct, _ = prune(program, x_train[:800], y_train[:800], target="flops", goal=0.75, ratios={"conv1": 0.25},
                      compensate=True)
    assert piped.text() == direct.text()


def test_bn_gamma_needs_the_batchnorms(digits: tuple[Program, tuple[np.ndarray, ...]]) -> None:
    program, _ = digits
    _, before_fold = prune(program, ratio=0.5, criterion="bn-gamma")
    folded = run_pipeline(program.clone(), "fold-batchnorm")
    _, after_fold = prune(folded, ratio=0.5, criterion="bn-gamma")
    assert {g.criterion for g in before_fold.groups} == {"bn-gamma"}
    assert {g.criterion for g in after_fold.groups} == {"l1 (no batchnorm)"}


def test_exclude_keeps_a_layer(digits: tuple[Program, tuple[np.ndarray, ...]]) -> None:
    program, _ = digits
    pruned, report = prune(program, ratio=0.5, exclude="conv1")
    assert [g.layers for g in report.groups] == [("conv2",)]
    assert ("conv1",) in [s.layers for s in report.skipped]
    assert {x.name: x.output_shape[1] for x in analyze(pruned)}["conv1"] == 16


DEPTHWISE = """
func.func @main(%x: tensor<1x2x3x3xf32>) -> tensor<1x1x3x3xf32> {
  %w1 = nn.weight "w1" {value = dense<1.0> : tensor<4x2x1x1xf32>} : tensor<4x2x1x1xf32>
  %wd = nn.weight "wd" {value = dense<1.0> : tensor<4x1x3x3xf32>} : tensor<4x1x3x3xf32>
  %w2 = nn.weight "w2" {value = dense<1.0> : tensor<1x4x1x1xf32>} : tensor<1x4x1x1xf32>
  %a = nn.conv2d %x, %w1 {name = "expand", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x2x3x3xf32>, tensor<4x2x1x1xf32>) -> tensor<1x4x3x3xf32>
  %d = nn.conv2d %a, %wd {name = "dw", strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 4 : i64} : (tensor<1x4x3x3xf32>, tensor<4x1x3x3xf32>) -> tensor<1x4x3x3xf32>
  %y = nn.conv2d %d, %w2 {name = "project", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x4x3x3xf32>, tensor<1x4x1x1xf32>) -> tensor<1x1x3x3xf32>
  func.return %y : tensor<1x1x3x3xf32>
}
"""


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"criterion": "l3"}, "unknown criterion 'l3'"),
        ({"ratio": 1.0}, r"ratio 1.0 must lie in \[0, 1\)"),
        ({"ratios": {"expand": -0.1}}, "ratio of 'expand' -0.1 must lie in"),
        ({"ratios": "expand"}, "ratios entry 'expand' must be NAME:RATIO"),
        ({"ratios": {"nope": 0.5}}, r"ratios names 'nope', which is no conv2d or gemm of the program \(prunable: expand\)"),
        ({"ratios": {"dw": 0.5}}, "'dw', whose channels follow its input: they are defined by expand"),
        ({"ratios": {"project": 0.5}}, "'project', which cannot be pruned: its output reaches the graph output"),
        ({"ratios": {"expand": 0.5}, "exclude": "expand"}, "which exclude names too"),
        ({"multiple": 0}, "multiple 0 must be a positive integer"),
        ({"target": "flops"}, r"target=flops needs goal in \(0, 1\]"),
        ({"goal": 0.5}, "goal needs a target"),
        ({"target": "energy", "goal": 0.5}, "unknown target 'energy'"),
        ({"target": "flops", "goal": 0.5, "ratio": 0.2}, "ratio and target exclude each other"),
        ({"target": "latency", "goal": 0.5}, "target=latency needs the hardware"),
        ({"target": "params", "goal": 0.1}, "goal 0.1 of the params is out of reach: .* keeps 0.[0-9]+ of it"),
        ({"labels": np.zeros(1)}, "labels need data"),
        ({"compensate": True}, "compensate needs data"),
        ({"data": np.zeros((1, 2, 3, 3), np.float32), "labels": np.zeros(2)}, "2 labels for 1 samples"),
        ({"data": np.zeros((1, 2, 3, 3), np.float32), "labels": np.zeros(1)}, "accuracy needs a first output of shape"),
        ({"data": np.zeros((1, 3, 3, 3), np.float32)}, "calibration input 'input0' has shape 1x3x3x3"),
        ({"speed": 3}, "unexpected keyword argument 'speed'"),
    ],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    program = Program(parse_module(DEPTHWISE))
    with pytest.raises(LayerloomError, match=message) as error:
        prune(program, **options)  # type: ignore[arg-type]
    assert error.value.where == "prune"


def test_pipeline_errors_name_the_pass(tmp_path: Path) -> None:
    program = Program(parse_module(DEPTHWISE))
    with pytest.raises(LayerloomError, match="unknown criterion"):
        run_pipeline(program, "prune{criterion=l3}")
    with pytest.raises(LayerloomError, match="calibration file not found"):
        run_pipeline(program, f'prune{{ratio=0.5 calib="{tmp_path / "missing.npz"}"}}')
    pruned = run_pipeline(program, 'prune{ratios="expand:0.5"}')
    assert {x.name: x.weight_shape for x in analyze(pruned)}["dw"] == (2, 1, 3, 3)


def test_reshapes_keep_or_merge_the_channels() -> None:
    """(1, 4, 2, 3) -> (1, 4, 6) -> (1, 4, 2, 3) keeps the channels; (1, 4, 2, 3) -> (1, 8, 3)
    -> (1, 24) merges them with H, then with W: channel c becomes rows 6c .. 6c + 5 of the FC."""
    b = NetBuilder(np.random.default_rng(2))
    b.shapes["input"] = (1, 2, 2, 3)

    def reshape(x: str, shape: tuple[int, ...]) -> str:
        b.initializers.append(onnx.numpy_helper.from_array(np.array(shape, np.int64), name := b.name("shape")))
        return b.node("Reshape", [x, name], shape)

    def softmax(x: str) -> str:
        return b.node("Softmax", [x], b.shapes[x], axis=len(b.shapes[x]) - 1)

    x = b.node("Relu", [conv(b, "input", 4)], (1, 4, 2, 3))
    kept = conv(b, reshape(softmax(reshape(x, (1, 4, 6))), (1, 4, 2, 3)), 2)
    merged = reshape(softmax(reshape(x, (1, 8, 3))), (1, 24))
    fc = b.node("Gemm", [merged, b.he((24, 2), 24)], (1, 2))
    y = b.node("Add", [b.node("Flatten", [b.node("GlobalAveragePool", [kept], (1, 2, 1, 1))], (1, 2), axis=1), fc],
               (1, 2))  # fmt: skip
    model = b.model("input", y, opset=17)
    program = import_onnx(model)
    pruned, report = prune(program, ratio=0.5)
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 2, 2, 3)).astype(np.float32)}
    check_pruned(program, pruned, report, feeds)
    assert [(g.channels_before, g.channels_after) for g in report.groups] == [(4, 2)]
    assert {x.name: x.weight_shape for x in analyze(pruned)}[fc] == (12, 2)


def test_unfollowable_graphs_are_reported_not_pruned() -> None:
    """A transpose between a conv and its consumer, a grouped conv: skipped, with why."""
    nodes = [
        helper.make_node("Conv", ["input", "w0"], ["a"], name="conv0"),
        helper.make_node("Transpose", ["a"], ["t"], name="swap", perm=[0, 1, 3, 2]),
        helper.make_node("Conv", ["t", "w1"], ["b"], name="conv1"),
        helper.make_node("Conv", ["b", "w2"], ["g"], name="grouped", group=2),
        helper.make_node("Conv", ["g", "w3"], ["output"], name="conv3"),
    ]
    rng = np.random.default_rng(0)
    weights = {"w0": (4, 2, 1, 1), "w1": (4, 4, 1, 1), "w2": (4, 2, 1, 1), "w3": (2, 4, 1, 1)}
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 2, 3, 3])],
        [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, 2, 3, 3])],
        [onnx.numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in weights.items()],
    )  # fmt: skip
    program = import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    pruned, report = prune(program, ratio=0.5)
    assert report.groups == () and pruned.text() == program.text()
    reasons = {s.layers: s.reason for s in report.skipped}
    assert reasons == {
        ("conv0",): "is read by nn.transpose 'swap', which prune cannot follow",
        ("conv1",): "is read by nn.conv2d 'grouped', a grouped convolution (group 2)",
        ("conv3",): "reaches the graph output",
    }
