"""The reference executor's plan: residual connections (conv -> add -> activation) fused
into one step against onnxruntime, the plan made again whenever the module, its weights
or the kernel table change, and blas.accumulate_product (C += A @ B) on every layout."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper
from xdsl.dialects.builtin import StringAttr

from backends.reference import KERNELS, blas, execute
from backends.reference.executor import _conv_fusions, _plan_of, _residual_fusions
from compiler import import_onnx, run_pipeline
from compiler.program import Program
from dialects import nn
from tests.test_kernels import assert_same, onnx_run, random


def he(m: int, c: int, k: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((m, c, k, k)) * np.sqrt(2 / (c * k * k))).astype(np.float32)


def conv(x: str, w: str, y: str, b: str | None = None, **attrs: object) -> object:
    return helper.make_node("Conv", [x, w] + ([b] if b else []), [y], **attrs)


def compiled(nodes: list, feeds: dict[str, np.ndarray], consts: dict[str, np.ndarray], outputs: list[str]) -> Program:
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    return run_pipeline(import_onnx(model), "canonicalize,fuse-activation")


def check(nodes: list, feeds: dict[str, np.ndarray], consts: dict[str, np.ndarray], outputs: list[str] | None = None,
          steps: int | None = None) -> None:
    """The executor agrees with onnxruntime (twice: the second run reuses the plan), the
    inputs are not written, and the plan has `steps` steps when given."""
    outputs = outputs or ["y"]
    expected = onnx_run(nodes, feeds, consts, outputs=outputs)
    program = compiled(nodes, feeds, consts, outputs)
    before = {k: v.copy() for k, v in feeds.items()}
    for _ in range(2):
        out = execute(program, feeds)
        assert_same([out[o] for o in outputs], expected)
    for k, v in feeds.items():
        np.testing.assert_array_equal(v, before[k])
    if steps is not None:
        assert len(_plan_of(program.module, program.source).steps) == steps


def test_identity_block_is_one_step() -> None:
    """conv -> add (graph input, read-only: copied, not written) -> relu in one step."""
    x = random(1, 16, 10, 10, seed=1)
    consts = {"w": he(16, 16, 1, 2), "b": random(16, seed=3)}
    nodes = [conv("x", "w", "c", "b"), helper.make_node("Add", ["c", "x"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    check(nodes, {"x": x}, consts, steps=1)


def test_downsample_block_fuses_the_later_conv() -> None:
    """Both addends are convolutions read only by the add: the later one accumulates into
    the earlier one's result (handed over writeable at its last use)."""
    x = random(1, 8, 12, 12, seed=4)
    consts = {"w1": he(16, 8, 3, 5), "b1": random(16, seed=6), "w2": he(32, 16, 1, 7), "w3": he(32, 8, 1, 8), "b3": random(32, seed=9)}
    nodes = [
        conv("x", "w1", "t", "b1", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["t"], ["r"]),
        conv("r", "w2", "u"),
        conv("x", "w3", "v", "b3", strides=[2, 2]),
        helper.make_node("Add", ["u", "v"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    check(nodes, {"x": x}, consts, steps=3)


def test_residual_still_needed_is_not_overwritten() -> None:
    """The residual is read again after the add (concat): the fused step must copy it."""
    x = random(1, 16, 6, 6, seed=10)
    consts = {"w1": he(16, 16, 1, 11), "w2": he(16, 16, 1, 12), "b2": random(16, seed=13)}
    nodes = [
        conv("x", "w1", "t"),
        conv("t", "w2", "u", "b2"),
        helper.make_node("Add", ["t", "u"], ["s"]),
        helper.make_node("Clip", ["s", "lo", "hi"], ["c"]),
        helper.make_node("Concat", ["c", "t"], ["y"], axis=1),
    ]
    consts |= {"lo": np.array(-0.5, np.float32), "hi": np.array(0.75, np.float32)}
    check(nodes, {"x": x}, consts, steps=3)


@pytest.mark.parametrize(
    "activation",
    [helper.make_node("LeakyRelu", ["s"], ["y"], alpha=0.2), None],
    ids=["leaky_relu", "none"],
)
def test_winograd_conv_with_a_residual(activation: object) -> None:
    x = random(1, 16, 12, 12, seed=14)
    consts = {"w": he(16, 16, 3, 15), "b": random(16, seed=16)}
    nodes = [conv("x", "w", "c", "b", pads=[1, 1, 1, 1]), helper.make_node("Add", ["x", "c"], ["s" if activation else "y"])]
    check(nodes + ([activation] if activation else []), {"x": x}, consts, steps=1)


def test_depthwise_conv_with_a_residual() -> None:
    x = random(1, 8, 9, 9, seed=17)
    consts = {"w": he(8, 1, 3, 18), "b": random(8, seed=19)}
    nodes = [conv("x", "w", "c", "b", pads=[1, 1, 1, 1], group=8), helper.make_node("Add", ["c", "x"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    check(nodes, {"x": x}, consts, steps=1)


def test_no_fusion_where_it_would_change_the_result() -> None:
    """A broadcast addend, an add result read twice (one reader an output), and a conv with
    its own activation are left as separate steps."""
    x = random(1, 8, 7, 7, seed=20)
    consts = {"w1": he(8, 8, 1, 21), "w2": he(8, 8, 1, 22), "bias": random(1, 8, 1, 1, seed=23)}
    nodes = [
        conv("x", "w1", "c1"),
        helper.make_node("Add", ["c1", "bias"], ["s1"]),  # broadcast: not fused
        conv("s1", "w2", "c2"),
        helper.make_node("Relu", ["c2"], ["r2"]),  # fused into the conv by fuse-activation
        helper.make_node("Add", ["r2", "x"], ["s"]),  # conv with its own relu: not fused
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    check(nodes, {"x": x}, consts, steps=6 - 1)
    nodes = [conv("x", "w1", "c1"), helper.make_node("Add", ["c1", "x"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    check(nodes, {"x": x}, consts, outputs=["y", "s"], steps=2)  # the add fuses, the relu does not


def fusions_of(program: Program) -> list[set[str]]:
    """The conv fusions of the program's plan, in op order: the names of the options set."""
    block = _plan_of(program.module, program.source).main.body.block
    options, _ = _conv_fusions(block, _residual_fusions(block))
    return [{k for k, v in vars(options[op]).items() if v} if op in options else set()
            for op in block.ops if isinstance(op, nn.Conv2dOp)]


def bottleneck(stride: int, activation: str = "Relu", hw: tuple[int, int] = (12, 12),
               **activation_attrs: object) -> tuple[list, dict, dict]:
    """ResNet's bottleneck block on a `hw` map: 1x1 -> 3x3 (stride) -> 1x1, plus the input
    (through a strided 1x1 conv when the stride is 2), then relu; the inner activations are
    `activation`."""
    x = random(1, 16, *hw, seed=30)
    consts = {"wa": he(16, 16, 1, 31), "ba": random(16, seed=32), "wb": he(16, 16, 3, 33), "bb": random(16, seed=34),
              "wc": he(32, 16, 1, 35), "bc": random(32, seed=36), "wd": he(32, 16, 1, 37), "bd": random(32, seed=38)}
    act_inputs = {"Clip": ["lo", "hi"]}.get(activation, [])
    consts |= {"lo": np.array(0.25, np.float32), "hi": np.array(1.5, np.float32)} if act_inputs else {}
    nodes = [
        conv("x", "wa", "a", "ba"),
        helper.make_node(activation, ["a", *act_inputs], ["ra"], **activation_attrs),
        conv("ra", "wb", "b", "bb", pads=[1, 1, 1, 1], strides=[stride, stride]),
        helper.make_node(activation, ["b", *act_inputs], ["rb"], **activation_attrs),
        conv("rb", "wc", "c", "bc"),
        conv("x", "wd", "d", "bd", strides=[stride, stride]),
        helper.make_node("Add", ["c", "d"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    return nodes, {"x": x}, consts


@pytest.mark.parametrize("stride", [1, 2], ids=["winograd", "im2col"])
@pytest.mark.parametrize(
    "activation, attrs",
    [("Relu", {}), ("Clip", {}), ("LeakyRelu", {"alpha": 0.3})],
    ids=["relu", "clip", "leaky_relu"],
)
def test_bottleneck_chain(stride: int, activation: str, attrs: dict) -> None:
    """The first 1x1 conv leaves its activation to the 3x3 conv, which applies it as it copies
    its input (never to the padding: a clip to [0.25, 1.5] would turn padding zeros into 0.25);
    the 3x3 conv gives its result a channel of ones, which the last 1x1 conv's GEMM uses for
    its bias as it accumulates into the downsampling conv's result (the residual)."""
    nodes, feeds, consts = bottleneck(stride, activation, **attrs)
    check(nodes, feeds, consts, steps=4)
    program = compiled(nodes, feeds, consts, ["y"])
    execute(program, feeds)
    assert fusions_of(program) == [
        {"defer_activation"}, {"input_activation", "ones_channel"}, {"bias_in_k", "residual", "activation"}, set(),
    ]


@pytest.mark.parametrize("hw", [(5, 1), (1, 6), (1, 1), (2, 3)])
def test_bottleneck_chain_on_thin_maps(hw: tuple[int, int]) -> None:
    """A map one pixel high or wide: NumPy's strides of length-1 axes say nothing about the
    memory, and the ones channel must still be found."""
    nodes, feeds, consts = bottleneck(1, hw=hw)
    check(nodes, feeds, consts, steps=4)
    program = compiled(nodes, feeds, consts, ["y"])
    execute(program, feeds)
    assert "bias_in_k" in fusions_of(program)[2]


@pytest.mark.parametrize("kernel", [1, 2, 3], ids=["ones-channel", "deferred-relu-1x2", "deferred-relu-3x3"])
def test_single_channel_conv_feeding_a_conv(kernel: int) -> None:
    """A conv with one input channel and group 1 is dense, not depthwise: it still makes the
    channel of ones its 1x1 reader's bias rides on, and its reader still applies the relu
    it deferred (found by the random-CNN property test: a relu silently dropped)."""
    x = random(1, 1, 6, 6, seed=4)
    shape = (1, kernel) if kernel == 2 else (kernel, kernel)
    w2 = np.random.default_rng(5).standard_normal((3, 1, *shape)).astype(np.float32)
    consts = {"w1": he(1, 1, 3, 6), "b1": random(1, seed=7), "w2": w2, "b2": random(3, seed=8)}
    nodes = [conv("x", "w1", "c", "b1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]), conv("r", "w2", "y", "b2")]
    check(nodes, {"x": x}, consts)


def test_identity_block_chain() -> None:
    """The last 1x1 conv of an identity block takes its bias from the ones channel and its
    residual as the GEMM's initial output: the whole add costs no pass."""
    nodes, feeds, consts = bottleneck(1)
    consts["wc"] = he(16, 16, 1, 39)
    consts["bc"] = random(16, seed=40)
    nodes = [n for n in nodes if n.output[0] not in ("d", "s", "y")]
    nodes += [helper.make_node("Add", ["x", "c"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    check(nodes, feeds, consts, steps=3)
    program = compiled(nodes, feeds, consts, ["y"])
    execute(program, feeds)
    assert fusions_of(program) == [{"defer_activation"}, {"input_activation", "ones_channel"}, {"residual", "activation", "bias_in_k"}]


def test_no_chain_when_a_result_has_other_readers() -> None:
    nodes, feeds, consts = bottleneck(1)
    nodes.append(helper.make_node("Concat", ["ra", "rb"], ["z"], axis=1))
    check(nodes, feeds, consts, outputs=["y", "z"])
    program = compiled(nodes, feeds, consts, ["y", "z"])
    execute(program, feeds)
    assert fusions_of(program) == [set(), set(), set(), {"residual", "activation"}]


def pool_after_conv(activation: str, pool: str = "MaxPool", width: int = 10, **pool_attrs: object) -> tuple[list, dict, dict]:
    x = random(1, 3, 9, width, seed=41)
    consts = {"w": he(8, 3, 3, 42), "b": random(8, seed=43) - np.float32(1), "lo": np.array(0.5, np.float32),
              "hi": np.array(1.0, np.float32)}
    attrs = {"alpha": 0.2} if activation == "LeakyRelu" else {}
    nodes = [
        conv("x", "w", "c", "b", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node(activation, ["c", *(["lo", "hi"] if activation == "Clip" else [])], ["r"], **attrs),
        helper.make_node(pool, ["r"], ["y"], **({"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]} | pool_attrs)),
    ]
    return nodes, {"x": x}, consts


def pool_activations_of(program: Program) -> int:
    block = _plan_of(program.module, program.source).main.body.block
    return len(_conv_fusions(block, _residual_fusions(block))[1])


@pytest.mark.parametrize(
    "activation, pool, attrs, deferred",
    [
        ("Relu", "MaxPool", {}, True),
        ("Clip", "MaxPool", {}, True),
        ("Clip", "MaxPool", {"ceil_mode": 1}, True),  # the last window hangs past the end: it takes the fill
        ("LeakyRelu", "MaxPool", {}, False),  # f(-inf) = -inf: not exchangeable with the padding's fill
        ("Relu", "AveragePool", {}, False),
        # Windows entirely in the padding give the fill, not relu(fill) = 0.
        ("Relu", "MaxPool", {"width": 1, "kernel_shape": [1, 2], "strides": [1, 1], "pads": [0, 1, 0, 1],
                             "dilations": [1, 2]}, False),
    ],
    ids=["relu", "clip", "clip-ceil", "leaky_relu", "average", "window-in-padding"],
)
def test_max_pool_applies_the_conv_activation(activation: str, pool: str, attrs: dict, deferred: bool) -> None:
    """A conv read by one max pool alone leaves its relu / clip to the pool, which applies it
    to the pooled (smaller) map: the same values as pooling the activated map."""
    nodes, feeds, consts = pool_after_conv(activation, pool, **attrs)
    check(nodes, feeds, consts, steps=2)
    program = compiled(nodes, feeds, consts, ["y"])
    execute(program, feeds)
    assert fusions_of(program) == [{"defer_activation"} if deferred else set()]
    assert pool_activations_of(program) == int(deferred)


# ---------------------------------------------------------------------------------------
# The plan follows the module, the weights and the kernel table
# ---------------------------------------------------------------------------------------


def small_block(bias_shift: float = 0.0) -> tuple[Program, dict[str, np.ndarray]]:
    x = random(1, 4, 5, 5, seed=24)
    consts = {"w": he(4, 4, 1, 25), "b": random(4, seed=26) + np.float32(bias_shift)}
    nodes = [conv("x", "w", "c", "b"), helper.make_node("Add", ["c", "x"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    return compiled(nodes, {"x": x}, consts, ["y"]), {"x": x}


def test_plan_follows_changed_weights() -> None:
    program, feeds = small_block()
    first = execute(program, feeds)["y"]
    handle = next(op.handle.data for op in program.module.walk() if isinstance(op, nn.WeightOp) and op.result.type.get_shape() == (4,))
    program.weights.set(handle, program.weights[handle] + np.float32(1))
    second = execute(program, feeds)["y"]
    assert not np.allclose(first, second)
    shifted, _ = small_block(bias_shift=1.0)
    np.testing.assert_allclose(second, execute(shifted, feeds)["y"], rtol=1e-6)


def test_plan_follows_an_op_changed_in_place() -> None:
    program, feeds = small_block()
    conv_op = next(op for op in program.module.walk() if isinstance(op, nn.Conv2dOp))
    plain = execute(program, feeds)["y"]
    conv_op.properties["activation"] = StringAttr("relu")  # no longer fusable, and a different result
    changed = execute(program, feeds)["y"]
    assert not np.allclose(plain, changed)
    del conv_op.properties["activation"]
    np.testing.assert_allclose(execute(program, feeds)["y"], plain)


def test_plan_follows_the_kernel_table(monkeypatch: pytest.MonkeyPatch) -> None:
    program, feeds = small_block()
    plain = execute(program, feeds)["y"]
    monkeypatch.setitem(KERNELS, nn.ReluOp, lambda op, args: [np.zeros_like(args[0])])
    np.testing.assert_array_equal(execute(program, feeds)["y"], 0)
    monkeypatch.undo()
    np.testing.assert_allclose(execute(program, feeds)["y"], plain)


# ---------------------------------------------------------------------------------------
# blas.accumulate_product
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("through_cblas", [True, False])
@pytest.mark.parametrize(
    "layout",
    ["contiguous", "transposed b", "sub-blocks", "strided columns"],
)
def test_accumulate_product(dtype: type, through_cblas: bool, layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if through_cblas and np.dtype(dtype) not in blas.CBLAS:
        pytest.fail(f"NumPy's BLAS has no cblas gemm for {np.dtype(dtype)} (blas.py found none)")
    if not through_cblas:
        monkeypatch.setattr(blas, "CBLAS", {})
    a, b, c = random(9, 6, dtype=dtype, seed=1), random(6, 5, dtype=dtype, seed=2), random(9, 5, dtype=dtype, seed=3)
    if layout == "transposed b":
        b = np.ascontiguousarray(b.T).T
    elif layout == "sub-blocks":
        a, b = random(12, 10, dtype=dtype)[2:11, 3:9], random(8, 7, dtype=dtype)[1:7, 2:7]
        c = random(11, 9, dtype=dtype, seed=3)[1:10, 4:9]
    elif layout == "strided columns":  # not a BLAS layout: NumPy computes it
        a = random(9, 12, dtype=dtype)[:, ::2]
    expected = c.astype(np.float64) + a.astype(np.float64) @ b.astype(np.float64)
    target = c
    result = blas.accumulate_product(a, b, c)
    assert result is target
    np.testing.assert_allclose(c, expected, rtol=1e-5 if dtype == np.float32 else 1e-12)


# ---------------------------------------------------------------------------------------
# blas.batched_product
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(16, 196, 128, 96), (3, 101, 100, 102), (16, 9, 6, 5)])  # the last: np.matmul
def test_batched_product(dtype: type, shape: tuple[int, int, int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    if np.dtype(dtype) not in blas.CBLAS_BATCH:
        pytest.fail(f"NumPy's BLAS has no cblas gemm_batch_strided for {np.dtype(dtype)} (blas.py found none)")
    count, p, k, m = shape
    calls: list[int] = []
    batch = blas.CBLAS_BATCH[np.dtype(dtype)]
    monkeypatch.setitem(blas.CBLAS_BATCH, np.dtype(dtype), lambda a, b, c: (calls.append(1), batch(a, b, c)))
    a, b = random(count, p, k, dtype=dtype, seed=1), random(count, k, m, dtype=dtype, seed=2)
    result = blas.batched_product(a, b)
    assert result.shape == (count, p, m) and result.dtype == dtype
    assert len(calls) == (p * m * k >= blas.BATCH_MIN_PRODUCT)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(result, expected, rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-3)


def test_blas_threads_reads_openblas() -> None:
    from threadpoolctl import threadpool_info

    counts = [int(pool["num_threads"]) for pool in threadpool_info() if pool.get("internal_api") == "openblas"]
    assert counts and blas.blas_threads() == max(counts)
