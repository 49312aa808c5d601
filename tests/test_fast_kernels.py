"""The reference executor's fast paths: Winograd F(2x2, 3x3) convolution against the direct
(im2col) convolution and onnxruntime, and the kernels' split over their thread pool against
onnxruntime and NumPy."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from onnx import helper

from backends.reference import kernels
from backends.reference.kernels import conv2d, in_parallel, winograd_applies, winograd_conv3x3
from tests.test_kernels import assert_same, attr_text, check_conv, check_pool, conv_attrs, nn_run, onnx_run, random


def he_weights(m: int, c: int, seed: int) -> np.ndarray:
    """Kernels that keep outputs of order 1, as in a trained network (absolute tolerances mean something)."""
    return (np.random.default_rng(seed).standard_normal((m, c, 3, 3)) * np.sqrt(2 / (9 * c))).astype(np.float32)


def relu(x: np.ndarray, out: np.ndarray) -> None:
    np.maximum(x, np.float32(0), out=out)


# ---------------------------------------------------------------------------------------
# Winograd
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, c, m, h, w, pads",
    [
        (1, 16, 16, 12, 12, (1, 1, 1, 1)),  # "same", even size
        (1, 16, 24, 9, 7, (1, 1, 1, 1)),  # odd output sizes: the last tile row and column are cut
        (2, 20, 17, 11, 14, (0, 1, 2, 0)),  # batch, asymmetric pads, odd channel count
        (1, 32, 16, 10, 13, (0, 0, 0, 0)),  # "valid"
        (1, 16, 16, 8, 8, (2, 3, 0, 1)),  # pads wider than the kernel's half
        (1, 64, 64, 28, 28, (1, 1, 1, 1)),  # a ResNet-50 stage-2 layer
    ],
)
@pytest.mark.parametrize("bias", [False, True])
def test_winograd_matches_direct_convolution(n: int, c: int, m: int, h: int, w: int, pads: tuple, bias: bool) -> None:
    x = random(n, c, h, w, seed=1)
    weight = he_weights(m, c, seed=2)
    b = random(m, seed=3) if bias else None
    out_hw = (h + pads[0] + pads[2] - 2, w + pads[1] + pads[3] - 2)
    exact = conv2d(x.astype(np.float64), weight.astype(np.float64), (1, 1), pads, (1, 1), 1, out_hw,
                   None if b is None else b.astype(np.float64))
    direct = conv2d(x, weight, (1, 1), pads, (1, 1), 1, out_hw, b)
    fast = winograd_conv3x3(x, weight, pads, out_hw, b)
    assert fast.shape == direct.shape == (n, *out_hw, m)
    assert fast.dtype == np.float32 and fast.flags.c_contiguous
    np.testing.assert_allclose(fast, exact, rtol=1e-5, atol=1e-5)
    # Rounding no worse than a small multiple of the direct GEMM's (a transform bug is far larger).
    assert np.abs(fast - exact).max() <= 4 * np.abs(direct - exact).max() + 1e-6


@pytest.mark.parametrize(
    "activation",
    [relu, lambda x, out: kernels.clip(x, 0.0, 0.5, out), lambda x, out: kernels.leaky_relu(x, 0.1, out)],
    ids=["relu", "clip", "leaky_relu"],
)
def test_winograd_applies_the_fused_activation(activation: kernels.Activation) -> None:
    x, weight, b = random(1, 16, 9, 10, seed=4), he_weights(16, 16, seed=5), random(16, seed=6)
    fast = winograd_conv3x3(x, weight, (1, 1, 1, 1), (9, 10), b, activation)
    direct = conv2d(x, weight, (1, 1), (1, 1, 1, 1), (1, 1), 1, (9, 10), b, activation)
    np.testing.assert_allclose(fast, direct, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "x_shape, w_shape, strides, dilations, group, out_hw, expected",
    [
        ((1, 64, 56, 56), (64, 64, 3, 3), (1, 1), (1, 1), 1, (56, 56), True),  # ResNet-50 stage 1
        ((1, 256, 14, 14), (256, 256, 3, 3), (1, 1), (1, 1), 1, (14, 14), True),  # 49 tiles
        ((1, 512, 7, 7), (512, 512, 3, 3), (1, 1), (1, 1), 1, (7, 7), False),  # 16 tiles: GEMMs too small
        ((1, 3, 224, 224), (64, 3, 3, 3), (1, 1), (1, 1), 1, (224, 224), False),  # 3 input channels
        ((1, 64, 56, 56), (64, 64, 3, 3), (2, 2), (1, 1), 1, (28, 28), False),  # stride 2
        ((1, 64, 56, 56), (64, 64, 3, 3), (1, 1), (2, 2), 1, (52, 52), False),  # dilation
        ((1, 64, 56, 56), (64, 32, 3, 3), (1, 1), (1, 1), 2, (54, 54), False),  # groups
        ((1, 64, 56, 56), (64, 64, 5, 5), (1, 1), (1, 1), 1, (52, 52), False),  # 5x5
    ],
)
def test_winograd_applies(x_shape: tuple, w_shape: tuple, strides: tuple, dilations: tuple, group: int,
                          out_hw: tuple, expected: bool) -> None:
    assert winograd_applies(x_shape, w_shape, strides, dilations, group, out_hw) is expected


@pytest.mark.parametrize("pads", [(1, 1, 1, 1), (0, 2, 1, 0)])
def test_conv2d_op_on_the_winograd_path_matches_onnxruntime(pads: tuple) -> None:
    x, weight, b = random(2, 16, 13, 11, seed=7), he_weights(18, 16, seed=8), random(18, seed=9)
    out_hw = (13 + pads[0] + pads[2] - 2, 11 + pads[1] + pads[3] - 2)
    assert winograd_applies(x.shape, weight.shape, (1, 1), (1, 1), 1, out_hw)
    check_conv(x, weight, b, pads=pads)


def test_conv2d_op_with_fused_relu_on_the_winograd_path() -> None:
    operands = [random(1, 16, 12, 12, seed=1), he_weights(16, 16, seed=2), random(16, seed=3)]
    conv = helper.make_node("Conv", ["x0", "x1", "x2"], ["t"], pads=[1, 1, 1, 1])
    expected = onnx_run([conv, helper.make_node("Relu", ["t"], ["y"])], {f"x{i}": a for i, a in enumerate(operands)})
    assert_same(nn_run("nn.conv2d", conv_attrs(pads=(1, 1, 1, 1), activation="relu"), operands, expected), expected)


# ---------------------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------------------


@pytest.fixture
def three_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The kernels as on a three-core machine, whatever this one has."""
    with ThreadPoolExecutor(2) as pool:
        monkeypatch.setattr(kernels, "THREADS", 3)
        monkeypatch.setattr(kernels, "_POOL", pool)
        yield


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "THREADS", 1)
    monkeypatch.setattr(kernels, "_POOL", None)


@pytest.mark.usefixtures("three_threads")
@pytest.mark.parametrize("size, grain, parts", [(40, 1, 12), (10, 1, 10), (10, 4, 2), (10, 20, 1), (2, 1, 2), (0, 1, 1)])
def test_in_parallel_covers_the_range_once(size: int, grain: int, parts: int) -> None:
    seen: list[slice] = []
    in_parallel(seen.append, size, grain)
    assert len(seen) == parts
    covered = sorted(i for part in seen for i in range(size)[part])
    assert covered == list(range(size))
    assert all(part.stop - part.start >= min(grain, size) for part in seen)


@pytest.mark.usefixtures("three_threads")
def test_in_parallel_runs_nested_calls_in_place_and_raises() -> None:
    inner: list[int] = []
    in_parallel(lambda part: in_parallel(lambda p: inner.append(p.stop - p.start), 9), 3)
    # Parts the caller takes split again; parts on the pool's threads run whole (never waiting for the pool).
    assert sum(inner) == 27 and set(inner) <= {1, 9}

    def fail(part: slice) -> None:
        if part.start > 0:
            raise ValueError("part failed")

    with pytest.raises(ValueError, match="part failed"):
        in_parallel(fail, 9)


def conv_cases() -> list[tuple]:
    """(x, w, bias, strides, pads, dilations, group) reaching each split of the conv kernels."""
    return [
        (random(1, 8, 40, 36, seed=1), random(12, 8, 3, 3, seed=2), random(12, seed=3), (1, 1), (1, 1, 1, 1), (2, 1), 1),
        (random(2, 16, 34, 33, seed=1), random(16, 16, 1, 1, seed=2), None, (1, 1), (0, 0, 0, 0), (1, 1), 1),
        (random(1, 16, 31, 33, seed=1), random(140, 16, 1, 1, seed=2), random(140, seed=3), (2, 2), (0, 0, 0, 0), (1, 1), 1),
        (random(1, 32, 9, 8, seed=1), random(130, 32, 3, 3, seed=2), random(130, seed=3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
        (random(1, 16, 60, 58, seed=1), he_weights(16, 16, seed=2), random(16, seed=3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        (random(1, 12, 20, 20, seed=1), random(12, 4, 3, 3, seed=2), random(12, seed=3), (1, 1), (1, 1, 1, 1), (1, 1), 3),
        (random(1, 24, 80, 80, seed=1), random(48, 1, 3, 3, seed=2), random(48, seed=3), (2, 2), (1, 1, 1, 1), (1, 1), 24),
    ]


@pytest.mark.parametrize("case", range(len(conv_cases())))
def test_conv_split_over_threads_matches_onnxruntime(case: int, three_threads: None) -> None:
    check_conv(*conv_cases()[case])


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_split_over_threads_matches_onnxruntime(kind: str, three_threads: None) -> None:
    check_pool(kind, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 0, 0, random(1, 32, 113, 113, seed=4))


def test_elementwise_and_matmul_split_over_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = random(1, 64, 40, 40, seed=1), random(1, 64, 40, 40, seed=2)
    left, right = random(3, 700, seed=3), random(700, 300, seed=4)
    with ThreadPoolExecutor(2) as pool:
        monkeypatch.setattr(kernels, "THREADS", 3)
        monkeypatch.setattr(kernels, "_POOL", pool)
        split_sum = kernels.elementwise(np.add, [a, b], None)
        in_place = a.copy()
        assert kernels.elementwise(np.add, [in_place, b], in_place) is in_place
        split_product = kernels.matmul(left, right)
        split_relu = nn_run("nn.relu", attr_text(name="r"), [a], [a])[0]
    np.testing.assert_array_equal(split_sum, a + b)
    np.testing.assert_array_equal(in_place, a + b)
    np.testing.assert_allclose(split_product, left @ right, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(split_relu, np.maximum(a, 0))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("case", range(len(conv_cases())))
def test_conv_on_one_thread_matches_onnxruntime(case: int) -> None:
    check_conv(*conv_cases()[case])
