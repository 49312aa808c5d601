"""The Winograd engine plugin, installed (`pip install -e examples/winograd_engine`):
layerloom finds its engine kind, dialect and pass through their entry points; the engine
runs exactly the layers F(2x2,3x3) computes and says why not for the others; its cycle
counts are the hand-computed ones; and the lowered program computes what the nn one does."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from winograd_engine import TARGET
from winograd_engine.dialect import ConvOp
from winograd_engine.engine import WinogradEngine
from winograd_engine.transform import transform_weights, winograd_conv2d

from backends.reference import execute
from compiler import import_onnx, run_pipeline
from compiler.analysis import analyze
from compiler.cost import layer_cost, network_cost
from compiler.engines import Tile, Workload, engine_kinds, workloads
from compiler.errors import LayerloomError, UnsupportedError
from compiler.hw import load_target, parse_target
from compiler.registry import dialect_refs, parse_module, pass_refs

LIGHT_RESNET50 = Path(onnx.__file__).parent / "backend/test/data/light/light_resnet50.onnx"
EXAMPLE = Path(__file__).resolve().parents[1] / "example.mlir"


def test_layerloom_finds_the_plugin_through_its_entry_points() -> None:
    assert isinstance(engine_kinds()["winograd"], WinogradEngine)
    assert {"seml", "sesl", "dpu", "systolic"} <= set(engine_kinds())  # the built-ins are still there
    assert dialect_refs()["winograd"] == "winograd_engine.dialect:Winograd"
    assert pass_refs()["winograd-conv"] == "winograd_engine.lower:WinogradConvPass"
    dist = {ep.dist.name for ep in entry_points(group="layerloom.engines") if ep.name == "winograd"}  # type: ignore[union-attr]
    assert dist == {"layerloom-winograd-engine"}


def test_the_packaged_target_loads() -> None:
    target = load_target(TARGET)
    wino, seml = target.engine("wino"), target.engine("seml")
    assert (wino.kind, wino.pes, wino.params["unroll"]) == ("winograd", 1024, (32, 32))
    assert seml.kind == "seml" and target.pe_budget == 2520


def test_parameters_are_checked_at_their_line() -> None:
    text = TARGET.read_text().replace("        unroll 32 x 32;", "        pes 512; unroll 32 x 32;")
    line = text.splitlines().index("        pes 512; unroll 32 x 32;     # Tm x Tn multipliers: sets pes 1024") + 1
    with pytest.raises(LayerloomError) as info:
        parse_target(text, "wino.hw")
    assert info.value.message == "engine 'wino': unroll 32 x 32 needs 1024 PEs, more than pes 512"
    assert info.value.where == f"wino.hw:{line}:18"  # at `unroll`


RES2A_2B = Workload.conv("res2a_branch2b", c=64, m=64, e=56, f=56, r=3, s=3, pad=1)


@pytest.mark.parametrize(
    ("layer", "reason"),
    [
        (RES2A_2B, None),
        (Workload.conv("odd", c=3, m=8, e=7, f=7, r=3, s=3, pad=1), None),
        (Workload.conv("res3a_branch2b", c=128, m=128, e=28, f=28, r=3, s=3, stride=2, pad=1), "stride 2x2"),
        (Workload.conv("res2a_branch2a", c=64, m=64, e=56, f=56), "needs a 3x3 kernel, not 1x1"),
        (Workload.conv("conv1", c=3, m=64, e=112, f=112, r=7, s=7, stride=2, pad=3), "not 7x7"),
        (Workload.conv("block2_dw", c=32, m=32, e=56, f=56, r=3, s=3, pad=1, groups=32), "grouped convolution"),
        (Workload.gemm("fc1000", rows=1, k=2048, cols=1000), "no sliding 3x3 window"),
        (Workload("pool1", "maxpool", 64, 64, 56, 56, kernel_h=3, kernel_w=3, groups=64), "not 'maxpool' layers"),
        (Workload("dil", "conv2d", 8, 8, 10, 10, kernel_h=3, kernel_w=3, dilation_h=2, dilation_w=2), "dilation 2x2"),
    ],
)
def test_supports_exactly_dense_3x3_stride_1_convs(layer: Workload, reason: str | None) -> None:
    target = load_target(TARGET)
    support = engine_kinds()["winograd"].supports(layer, target.engine("wino"))
    assert bool(support) == (reason is None)
    if reason is None:
        assert layer_cost(layer, target, "wino").compute_cycles > 0
    else:
        assert reason in support.reason
        with pytest.raises(UnsupportedError, match="engine 'wino' \\(winograd\\) cannot run it") as info:
            layer_cost(layer, target, "wino")
        assert info.value.where == layer.name


def test_cycles_of_a_resnet50_3x3_conv() -> None:
    """res2a_branch2b: 64 -> 64 channels, 56 x 56. On the 32 x 32 array: 28 x 28 blocks of
    2x2 outputs, 16 products each, 2 x 2 channel steps; SEML's 32 x 32 array needs 56 x 56
    pixels x 9 taps x 2 x 2 -- 2.25 times as many."""
    target = load_target(TARGET)
    wino = layer_cost(RES2A_2B, target, "wino")
    seml = layer_cost(RES2A_2B, target, "seml")
    assert wino.compute_cycles == 28 * 28 * 16 * 2 * 2 == 50176
    assert seml.compute_cycles == 56 * 56 * 9 * 2 * 2
    assert seml.compute_cycles / wino.compute_cycles == 2.25
    # DRAM traffic and on-chip buffers are the direct conv's: the cost model's, not the engine's.
    assert wino.dram_bytes == seml.dram_bytes and wino.onchip_bytes == seml.onchip_bytes
    # Tiles round up to whole 2x2 blocks: 56 rows in tiles of 7 are 8 x 4 blocks, not 28.
    tiled = layer_cost(RES2A_2B, target, "wino", tile=Tile(m=32, n=32, e=7))
    assert tiled.compute_cycles == (8 * 4) * 28 * 16 * 1 * 1 * 2 * 2
    # Without a fixed unrolling the engine picks the best Tm x Tn within the PEs.
    free = parse_target(TARGET.read_text().replace("        unroll 32 x 32;", "        pes 256;"), "free.hw")
    assert layer_cost(RES2A_2B, free, "wino").compute_cycles == 28 * 28 * 16 * 16  # 64 x 64 over 256 PEs


def test_resnet50_3x3_layers() -> None:
    """The onnx wheel's ResNet-50 (53 convs; 16 are 3x3, 3 of them with stride 2): the
    engine takes the 13 stride-1 3x3 convs and refuses the rest; on them it needs ~2.1x
    fewer cycles than SEML (the 7 x 7 maps of res5 round up to 4 x 4 blocks)."""
    target = load_target(TARGET)
    layers = workloads(import_onnx(LIGHT_RESNET50).module)
    convs_3x3 = [w for w in layers if w.op == "conv2d" and w.window == 9]
    assert len([w for w in layers if w.op == "conv2d"]) == 53 and len(convs_3x3) == 16
    wino = engine_kinds()["winograd"]
    mine = [w for w in layers if wino.supports(w, target.engine("wino"))]
    assert mine == [w for w in convs_3x3 if w.stride_h == 1]
    assert len(mine) == 13
    fast, slow = network_cost(mine, target, "wino"), network_cost(mine, target, "seml")
    assert 2.0 < sum(c.compute_cycles for c in slow.layers) / sum(c.compute_cycles for c in fast.layers) < 2.25


def test_the_transform_is_a_convolution() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 9, 8)).astype(np.float32)
    g = rng.standard_normal((6, 5, 3, 3)).astype(np.float32)
    pads = (1, 0, 2, 1)
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    direct = np.einsum("nchwij,mcij->nmhw", np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3)), g)
    y = winograd_conv2d(x, transform_weights(g), None, pads)
    assert y.shape == (2, 6, 10, 7) and y.dtype == np.float32
    np.testing.assert_allclose(y, direct, rtol=1e-4, atol=1e-5)


def small_model() -> onnx.ModelProto:
    """conv_a (3x3, fused relu after fuse-activation), conv_b (3x3 stride 2), conv_c (1x1)."""
    rng = np.random.default_rng(1)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(
            (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name
        )

    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "wb"], ["b"], name="conv_b", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Conv", ["b", "wc"], ["y"], name="conv_c"),
    ]
    inits = [w("wa", 8, 3, 3, 3), w("ba", 8), w("wb", 8, 8, 3, 3), w("wc", 4, 8, 1, 1)]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 11, 11])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_lowering_keeps_the_result() -> None:
    x = np.random.default_rng(2).standard_normal((1, 3, 11, 11)).astype(np.float32)
    program = run_pipeline(import_onnx(small_model()), "fuse-activation")
    expected = execute(program, {"x": x})["y"]
    lowered = run_pipeline(program.clone(), "winograd-conv")
    layers = {layer.name: layer for layer in analyze(lowered)}
    assert layers["conv_a"].op == "winograd_conv" and layers["conv_a_relu"].op == "relu"
    assert layers["conv_a"].weight_shapes == ((4, 4, 8, 3), (8,))
    assert layers["conv_a"].macs == 6 * 6 * 16 * 8 * 3  # 11 x 11 outputs in 6 x 6 blocks of 2x2
    assert layers["conv_b"].op == "conv2d" and layers["conv_c"].op == "conv2d"  # stride 2, 1x1: not lowered
    np.testing.assert_allclose(execute(lowered, {"x": x})["y"], expected, rtol=1e-4, atol=1e-5)
    # The lowered IR prints and parses back (the dialect is registered through its entry point).
    text = lowered.text()
    assert "winograd.conv" in text
    assert isinstance(next(op for op in parse_module(text).walk() if op.name == "winograd.conv"), ConvOp)


def test_the_verifier_checks_the_transformed_weight() -> None:
    text = """
    builtin.module {
      func.func @main(%x: tensor<1x3x8x8xf32>) -> tensor<1x4x8x8xf32> {
        %u = nn.weight "u" : tensor<3x3x4x3xf32>
        %y = winograd.conv %x, %u {name = "c", pads = array<i64: 1, 1, 1, 1>} : (tensor<1x3x8x8xf32>, tensor<3x3x4x3xf32>) -> tensor<1x4x8x8xf32>
        func.return %y : tensor<1x4x8x8xf32>
      }
    }"""
    with pytest.raises(LayerloomError, match="winograd.conv 'c': weight must be transformed, 4x4xMxC"):
        parse_module(text)
    good = text.replace("3x3x4x3", "4x4x4x3")
    assert parse_module(good) is not None
    with pytest.raises(LayerloomError, match="result shape \\(1, 4, 8, 8\\) should be \\(1, 4, 6, 6\\)"):
        parse_module(good.replace("array<i64: 1, 1, 1, 1>", "array<i64: 0, 0, 0, 0>"))


def test_the_lowering_hook_names_the_pass_function() -> None:
    from winograd_engine.lower import lower_conv

    assert engine_kinds()["winograd"].lowering_for("winograd") is lower_conv
    with pytest.raises(UnsupportedError, match="no lowering to 'hls'"):
        engine_kinds()["winograd"].lowering_for("hls")


def test_layerloom_opt_lowers_the_example() -> None:
    """The pass runs in layerloom's own -opt tool, which knows it only by its entry point."""
    opt = Path(sys.executable).with_name("layerloom-opt")
    done = subprocess.run([str(opt), str(EXAMPLE), "-p", "winograd-conv"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lowered, original = parse_module(done.stdout), parse_module(EXAMPLE.read_text())
    ops = [op.name for op in lowered.walk()]
    assert ops.count("winograd.conv") == 1 and ops.count("nn.conv2d") == 1 and ops.count("nn.relu") == 1
    x = np.random.default_rng(3).standard_normal((1, 1, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(execute(lowered, {"x": x})["y"], execute(original, {"x": x})["y"], rtol=1e-5, atol=1e-6)
