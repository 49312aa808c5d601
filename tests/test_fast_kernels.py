"""The reference executor's Winograd F(2x2, 3x3) convolution against the direct (im2col)
convolution and onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from backends.reference import kernels
from backends.reference.kernels import conv2d, winograd_applies, winograd_conv3x3
from tests.test_kernels import assert_same, check_conv, conv_attrs, nn_run, onnx_run, random


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
        (1, 128, 96, 29, 27, (1, 1, 1, 1)),  # GEMMs above blas.BATCH_MIN_PRODUCT: one batched call
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


@pytest.mark.parametrize("chunk_tiles", [1, 3 * 7])  # one row of tiles per chunk; three, the last one short
@pytest.mark.parametrize("with_residual", [False, True])
def test_winograd_in_chunks_of_tile_rows(chunk_tiles: int, with_residual: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "WINOGRAD_CHUNK_TILES", chunk_tiles)
    x, weight, b = random(1, 16, 13, 14, seed=10), he_weights(16, 16, seed=11), random(16, seed=12)
    residual = random(1, 13, 14, 16, seed=13)
    whole = conv2d(x, weight, (1, 1), (1, 1, 1, 1), (1, 1), 1, (13, 14), b, relu, residual.copy() if with_residual else None)
    fast = winograd_conv3x3(x, weight, (1, 1, 1, 1), (13, 14), b, relu, residual if with_residual else None)
    np.testing.assert_allclose(fast, whole, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# im2col in chunks of output rows
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_bytes", [1, 5 * 9 * 8 * 4 * 3])  # the fewest rows allowed; three rows, the last chunk short
@pytest.mark.parametrize("with_residual", [False, True])
def test_im2col_in_chunks_of_output_rows(chunk_bytes: int, with_residual: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunked im2col (rows of the output at a time, each GEMM accumulating into its rows of
    the output) gives what one whole im2col gives, bias and residual included."""
    x, weight, b = random(1, 8, 17, 10, seed=20), random(6, 8, 3, 3, seed=21), random(6, seed=22)
    residual = random(1, 8, 5, 6, seed=23)

    def run() -> np.ndarray:
        r = residual.copy() if with_residual else None
        return conv2d(x, weight, (2, 2), (0, 1, 0, 1), (1, 1), 1, (8, 5), b, relu, r)

    monkeypatch.setattr(kernels, "IM2COL_CHUNK_BYTES", 1 << 40)
    whole = run()
    monkeypatch.setattr(kernels, "IM2COL_CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(kernels, "IM2COL_MIN_ROWS", 1)
    chunked = run()
    np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-6)
    check_conv(x, weight, b, strides=(2, 2), pads=(0, 1, 0, 1))  # and against onnxruntime, through the op


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
