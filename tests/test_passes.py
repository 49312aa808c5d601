"""Numeric correctness of canonicalize, fold-batchnorm and fuse-activation: the reference
executor gives the same outputs before and after the passes (the IR shape of each rewrite
is checked by the filecheck tests in tests/filecheck/)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends.reference import execute
from compiler.errors import LayerloomError
from compiler.pipeline import run_pipeline
from compiler.program import Program, WeightStore
from compiler.registry import parse_module
from dialects.nn import (
    BatchNormOp,
    ClipOp,
    Conv2dOp,
    GemmOp,
    IdentityOp,
    LeakyReluOp,
    NNOp,
    ReluOp,
    ReshapeOp,
    WeightOp,
)

PIPELINE = "canonicalize,fold-batchnorm,fuse-activation"


def t(shape: Sequence[int]) -> str:
    return f"tensor<{'x'.join(map(str, shape))}xf32>"


class GraphText:
    """Builds the MLIR text of `@main` op by op; weights go into a store (by handle)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.lines: list[str] = []
        self.store = WeightStore()
        self.count = 0

    def weight(self, handle: str, array: np.ndarray) -> str:
        self.store.set(handle, array.astype(np.float32))
        return self.emit(f'nn.weight "{handle}"', array.shape, type_only=True)

    def random_weight(self, handle: str, shape: Sequence[int], low: float = -1.0, high: float = 1.0) -> str:
        return self.weight(handle, self.rng.uniform(low, high, shape))

    def emit(self, head: str, result: Sequence[int], operands: Sequence[tuple[str, Sequence[int]]] = (),
             attrs: str = "", type_only: bool = False) -> str:
        self.count += 1
        name = f"%v{self.count}"
        args = ", ".join(v for v, _ in operands)
        attr_text = f" {{{attrs}}}" if attrs else ""
        if type_only:
            self.lines.append(f"    {name} = {head}{attr_text} : {t(result)}")
        else:
            types = ", ".join(t(s) for _, s in operands)
            self.lines.append(f"    {name} = {head} {args}{attr_text} : ({types}) -> {t(result)}")
        return name

    def batchnorm(self, name: str, x: tuple[str, Sequence[int]], epsilon: float = 1e-5) -> str:
        c = x[1][1]
        params = [
            (self.random_weight(f"{name}.scale", (c,), 0.5, 2.0), (c,)),
            (self.random_weight(f"{name}.bias", (c,)), (c,)),
            (self.random_weight(f"{name}.mean", (c,)), (c,)),
            (self.random_weight(f"{name}.var", (c,), 0.1, 3.0), (c,)),
        ]
        return self.emit("nn.batchnorm", x[1], [x, *params], f'name = "{name}", epsilon = {epsilon:e} : f64')

    def program(self, inputs: Sequence[tuple[str, Sequence[int]]], output: tuple[str, Sequence[int]]) -> Program:
        args = ", ".join(f'{v}: {t(s)} {{nn.name = "{v[1:]}"}}' for v, s in inputs)
        text = "\n".join(
            [
                "builtin.module {",
                f'  func.func @main({args}) -> ({t(output[1])} {{nn.name = "y"}}) {{',
                *self.lines,
                f"    func.return {output[0]} : {t(output[1])}",
                "  }",
                "}",
            ]
        )
        return Program(parse_module(text, "test"), self.store, "test")


def conv_attrs(name: str, stride: int, pad: int, group: int) -> str:
    return (
        f'name = "{name}", strides = array<i64: {stride}, {stride}>, pads = array<i64: {pad}, {pad}, {pad}, {pad}>, '
        f"dilations = array<i64: 1, 1>, group = {group} : i64"
    )


def small_cnn(rng: np.random.Generator) -> Program:
    """conv+bn+relu, dropout, depthwise conv (no bias)+bn+clip, global pool, a reshape
    chain, gemm (transposed B)+bn+leaky_relu, and a weight-only reshape to fold."""
    g = GraphText(rng)
    x = ("%x", (1, 3, 8, 8))
    w1 = (g.random_weight("conv1.w", (8, 3, 3, 3)), (8, 3, 3, 3))
    b1 = (g.random_weight("conv1.b", (8,)), (8,))
    c1 = (g.emit("nn.conv2d", (1, 8, 8, 8), [x, w1, b1], conv_attrs("conv1", 1, 1, 1)), (1, 8, 8, 8))
    n1 = (g.batchnorm("bn1", c1), c1[1])
    r1 = (g.emit("nn.relu", c1[1], [n1], 'name = "relu1"'), c1[1])
    d1 = (g.emit("nn.identity", c1[1], [r1], 'name = "dropout"'), c1[1])
    w2 = (g.random_weight("dw.w", (8, 1, 3, 3)), (8, 1, 3, 3))
    c2 = (g.emit("nn.conv2d", (1, 8, 4, 4), [d1, w2], conv_attrs("dw", 2, 1, 8)), (1, 8, 4, 4))
    n2 = (g.batchnorm("bn2", c2, epsilon=1e-3), c2[1])
    r2 = (g.emit("nn.clip", c2[1], [n2], 'name = "relu6", min = 0.0 : f64, max = 6.0 : f64'), c2[1])
    p = (g.emit("nn.global_pool", (1, 8, 1, 1), [r2], 'name = "gap", kind = "avg"'), (1, 8, 1, 1))
    f1 = (g.emit("nn.reshape", (1, 8, 1), [p], 'name = "squeeze"'), (1, 8, 1))
    f2 = (g.emit("nn.reshape", (1, 8), [f1], 'name = "flatten"'), (1, 8))
    wf = (g.random_weight("fc.w.flat", (40,)), (40,))
    wr = (g.emit("nn.reshape", (5, 8), [wf], 'name = "fc.w.shape"'), (5, 8))
    bf = (g.random_weight("fc.b", (5,)), (5,))
    fc = (g.emit("nn.gemm", (1, 5), [f2, wr, bf], 'name = "fc", trans_a = 0 : i64, trans_b = 1 : i64, '
                 "alpha = 1.5 : f64, beta = 0.5 : f64"), (1, 5))
    n3 = (g.batchnorm("bn3", fc), (1, 5))
    y = (g.emit("nn.leaky_relu", (1, 5), [n3], 'name = "lrelu", alpha = 0.1 : f64'), (1, 5))
    return g.program([x], y)


def outputs(program: Program, inputs: dict[str, np.ndarray]) -> np.ndarray:
    return execute(program, inputs)["y"]


def nn_ops(program: Program) -> list[NNOp]:
    return [op for op in program.module.walk() if isinstance(op, NNOp) and not isinstance(op, WeightOp)]


def test_pipeline_keeps_outputs_of_a_small_cnn() -> None:
    rng = np.random.default_rng(0)
    before = small_cnn(rng)
    after = run_pipeline(before.clone(), PIPELINE)
    x = {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}
    np.testing.assert_allclose(outputs(after, x), outputs(before, x), rtol=1e-4, atol=1e-5)
    # Everything that could go did go: 3 layers left (conv, depthwise, gemm), plus pool and flatten.
    kinds = [op.name for op in nn_ops(after)]
    assert kinds == ["nn.conv2d", "nn.conv2d", "nn.global_pool", "nn.reshape", "nn.gemm"]
    layers = {op.layer_name: op for op in nn_ops(after)}
    assert [(n, layers[n].activation.data) for n in ("conv1", "dw", "fc")] == [  # type: ignore[union-attr]
        ("conv1", "relu"),
        ("dw", "clip"),
        ("fc", "leaky_relu"),
    ]
    assert layers["flatten"].operands[0].owner is layers["gap"]


def test_passes_do_not_change_arrays_shared_with_the_original() -> None:
    rng = np.random.default_rng(1)
    original = small_cnn(rng)
    snapshot = {h: a.copy() for h, a in original.weights.items()}
    run_pipeline(original.clone(), PIPELINE)
    assert set(original.weights) == set(snapshot)
    for handle, array in original.weights.items():
        np.testing.assert_array_equal(array, snapshot[handle], err_msg=handle)


def test_each_pass_alone_keeps_outputs() -> None:
    rng = np.random.default_rng(2)
    before = small_cnn(rng)
    x = {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}
    expected = outputs(before, x)
    # fold-batchnorm alone cannot fold bn3: the gemm's B is a reshape until canonicalize.
    for name, kind, left in (("canonicalize", IdentityOp, []), ("fold-batchnorm", BatchNormOp, ["bn3"])):
        after = run_pipeline(before.clone(), name)
        np.testing.assert_allclose(outputs(after, x), expected, rtol=1e-4, atol=1e-5, err_msg=name)
        assert [op.layer_name for op in after.module.walk() if isinstance(op, kind)] == left, name
    # Once bn1 and bn2 are folded, relu1 and relu6 fuse; lrelu still follows bn3.
    after = run_pipeline(before.clone(), "fold-batchnorm,fuse-activation")
    np.testing.assert_allclose(outputs(after, x), expected, rtol=1e-4, atol=1e-5)
    assert [op.layer_name for op in after.module.walk() if isinstance(op, ReluOp | ClipOp | LeakyReluOp)] == ["lrelu"]


def test_canonicalize_folds_weight_only_ops_into_the_store() -> None:
    before = small_cnn(np.random.default_rng(3))
    flat = before.weights["fc.w.flat"]
    after = run_pipeline(before, "canonicalize")
    gemm = next(op for op in after.module.walk() if isinstance(op, GemmOp))
    folded = gemm.b.owner
    assert isinstance(folded, WeightOp) and folded.layer_name == "fc.w.shape"
    np.testing.assert_array_equal(after.weights[folded.handle.data], flat.reshape(5, 8))
    assert "fc.w.flat" not in after.weights  # the folded-away array is dropped
    # Both reshapes of the activations became one.
    reshapes = [op for op in after.module.walk() if isinstance(op, ReshapeOp)]
    assert [op.layer_name for op in reshapes] == ["flatten"]


@given(
    cin_per_group=st.integers(1, 3),
    cout_per_group=st.integers(1, 3),
    group=st.sampled_from([1, 2, 3]),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    has_bias=st.booleans(),
    epsilon=st.sampled_from([1e-5, 1e-3, 0.1]),
    seed=st.integers(0, 2**16),
)
def test_fold_batchnorm_matches_unfolded_conv(
    cin_per_group: int, cout_per_group: int, group: int, kernel: int, stride: int, has_bias: bool, epsilon: float,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    g = GraphText(rng)
    cin, cout, size = cin_per_group * group, cout_per_group * group, 6
    out = (size + 2 - kernel) // stride + 1
    x = ("%x", (2, cin, size, size))
    w = (g.random_weight("w", (cout, cin_per_group, kernel, kernel)), (cout, cin_per_group, kernel, kernel))
    operands = [x, w] + ([(g.random_weight("b", (cout,)), (cout,))] if has_bias else [])
    c = (g.emit("nn.conv2d", (2, cout, out, out), operands, conv_attrs("conv", stride, 1, group)), (2, cout, out, out))
    y = (g.batchnorm("bn", c, epsilon), c[1])
    before = g.program([x], y)
    after = run_pipeline(before.clone(), "fold-batchnorm")
    assert [op.name for op in nn_ops(after)] == ["nn.conv2d"]
    assert nn_ops(after)[0].layer_name == "conv"
    inputs = {"x": rng.standard_normal(x[1]).astype(np.float32)}
    np.testing.assert_allclose(outputs(after, inputs), outputs(before, inputs), rtol=1e-4, atol=1e-5)


@given(
    m=st.integers(1, 3),
    k=st.integers(1, 4),
    n=st.integers(1, 4),
    trans_a=st.booleans(),
    trans_b=st.booleans(),
    c_shape=st.sampled_from(["none", "n", "1xn", "mxn", "scalar"]),
    beta=st.sampled_from([1.0, 0.5, -2.0]),
    seed=st.integers(0, 2**16),
)
def test_fold_batchnorm_matches_unfolded_gemm(
    m: int, k: int, n: int, trans_a: bool, trans_b: bool, c_shape: str, beta: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    g = GraphText(rng)
    a = ("%a", (k, m) if trans_a else (m, k))
    b_shape = (n, k) if trans_b else (k, n)
    operands = [a, (g.random_weight("b", b_shape), b_shape)]
    shapes = {"n": (n,), "1xn": (1, n), "mxn": (m, n), "scalar": (1,)}
    if c_shape in shapes:
        operands.append((g.random_weight("c", shapes[c_shape]), shapes[c_shape]))
    attrs = f'name = "fc", trans_a = {int(trans_a)} : i64, trans_b = {int(trans_b)} : i64, alpha = 0.75 : f64, beta = {beta} : f64'
    fc = (g.emit("nn.gemm", (m, n), operands, attrs), (m, n))
    y = (g.batchnorm("bn", fc), (m, n))
    before = g.program([a], y)
    after = run_pipeline(before.clone(), "fold-batchnorm")
    assert [op.name for op in nn_ops(after)] == ["nn.gemm"]
    inputs = {"a": rng.standard_normal(a[1]).astype(np.float32)}
    np.testing.assert_allclose(outputs(after, inputs), outputs(before, inputs), rtol=1e-4, atol=1e-5)


def test_pipeline_errors_are_layerloom_errors() -> None:
    program = small_cnn(np.random.default_rng(4))
    with pytest.raises(LayerloomError, match="unknown pass .fold-batchnorms."):
        run_pipeline(program, "canonicalize,fold-batchnorms")


def test_fused_conv_feeding_two_users_is_not_fused() -> None:
    """relu after a conv whose result is also returned: fusing would change that result."""
    g = GraphText(np.random.default_rng(5))
    x = ("%x", (1, 2, 3, 3))
    w = (g.random_weight("w", (2, 2, 1, 1)), (2, 2, 1, 1))
    c = (g.emit("nn.conv2d", (1, 2, 3, 3), [x, w], conv_attrs("conv", 1, 0, 1)), (1, 2, 3, 3))
    r = (g.emit("nn.relu", c[1], [c], 'name = "relu"'), c[1])
    s = (g.emit("nn.add", c[1], [c, r], 'name = "sum"'), c[1])
    before = g.program([x], s)
    after = run_pipeline(before.clone(), "fuse-activation")
    assert [op.name for op in nn_ops(after)] == ["nn.conv2d", "nn.relu", "nn.add"]
    assert not any(isinstance(op, Conv2dOp) and op.activation is not None for op in after.module.walk())
    inputs = {"x": np.random.default_rng(6).standard_normal((1, 2, 3, 3)).astype(np.float32)}
    np.testing.assert_allclose(outputs(after, inputs), outputs(before, inputs))
