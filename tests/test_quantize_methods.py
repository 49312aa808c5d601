"""The quantize pass's ways of choosing parameters (docs/quantization.md sections 1 and 11):
the mse calibrator, mse weight scales, the mean input windows and the bias correction
built on them, each against a brute-force computation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from backends.reference import execute
from compiler import import_onnx, quantize, run_pipeline
from compiler.errors import LayerloomError
from compiler.quant import calibrate
from compiler.quant import intmath as im
from compiler.quant.lowering import weight_scales
from dialects import nn, qnn
from passes.utils import weight_array
from tests.test_quantize import model


def stats_of(values: np.ndarray) -> calibrate.TensorStats:
    s = calibrate.TensorStats()
    s.observe_range(values)
    s.observe_histogram(values)
    return s


# ---------------------------------------------------------------------------------------
# The mse calibrator
# ---------------------------------------------------------------------------------------


def test_quantization_mse_is_the_mean_error_over_the_bin_centres() -> None:
    rng = np.random.default_rng(0)
    s = stats_of(rng.standard_normal(5000))
    assert s.histogram is not None
    m, scale, zero_point = s.magnitude, 0.01, 3
    width = 2 * m / s.histogram.size
    centres = np.repeat(-m + width * (np.arange(s.histogram.size) + 0.5), s.histogram)
    q = np.clip(np.rint(centres / scale) + zero_point, -128, 127)
    want = np.mean((centres - scale * (q - zero_point)) ** 2)
    assert calibrate.quantization_mse(s.histogram, m, scale, zero_point) == pytest.approx(want, rel=1e-9)


def test_mse_calibrator_clips_a_lone_outlier() -> None:
    """A million Gaussian values and one at 40: covering it (minmax) spends the int8 steps
    on empty range; the mse range is at most half as wide (clipping 40 to 16 costs
    24^2 / 10^6 = 0.0006, while a step of 44/255 costs 0.0025 on every value)."""
    rng = np.random.default_rng(1)
    s = stats_of(np.concatenate([rng.standard_normal(1_000_000), [40.0]]))
    for scheme in ("fixed", "pow2"):
        lo, hi = s.range("mse", 99.999, scheme)
        assert hi <= 20.0 and lo > -10.0, (scheme, lo, hi)
        assert s.range("minmax", 99.999, scheme) == (s.lo, 40.0)
    # pow2: the exponent of least error among the covering one (f = 1: 127/2 >= 40) and finer ones.
    lo, hi = s.range("mse", 99.999, "pow2")
    f = im.pow2_fraction_bits(max(-lo, hi))
    assert f == 1 + calibrate.MSE_POW2_STEPS - 1  # the finest candidate: 4 fraction bits: a range of 7.9
    assert hi == 127.0 * 2.0**-f


def test_mse_calibrator_keeps_a_range_without_outliers() -> None:
    """Uniform values fill their range: clipping only adds error, the range stays whole."""
    values = np.linspace(-3.0, 3.0, 20001)
    s = stats_of(values)
    assert s.range("mse", 99.999, "fixed") == pytest.approx((-3.0, 3.0))
    lo, hi = s.range("mse", 99.999, "pow2")
    assert im.pow2_fraction_bits(max(-lo, hi)) == im.pow2_fraction_bits(3.0)  # 2^-5: 127/32 = 3.97 covers 3


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scheme=st.sampled_from(["fixed", "pow2"]), tail=st.floats(1.0, 30.0),
       relu=st.booleans())
def test_mse_range_has_the_least_error_of_the_candidates(seed: int, scheme: str, tail: float, relu: bool) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_t(3, 4000) * tail
    s = stats_of(np.maximum(x, 0) if relu else x)
    assert s.histogram is not None

    def error(lo: float, hi: float) -> float:
        from compiler.quant.lowering import choose_params

        q = choose_params(lo, hi, scheme)
        return calibrate.quantization_mse(s.histogram, s.magnitude, q.scale, q.zero_point)

    chosen = error(*s.range("mse", 99.999, scheme))
    assert chosen <= error(s.lo, s.hi) * (1 + 1e-12)  # never worse than min-max
    assert chosen <= error(*s.range("percentile", 99.9, scheme)) * (1 + 1e-12) or scheme == "fixed"


# ---------------------------------------------------------------------------------------
# Weight scales
# ---------------------------------------------------------------------------------------


def quantized_error(w: np.ndarray, scales: np.ndarray) -> np.ndarray:
    q = im.quantize_weights(w, scales, axis=0)
    return ((w - q * scales[:, None]) ** 2).sum(axis=1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scheme=st.sampled_from(["fixed", "pow2"]), channels=st.integers(1, 6))
def test_mse_weight_scales_never_lose_to_max(seed: int, scheme: str, channels: int) -> None:
    rng = np.random.default_rng(seed)
    w = rng.standard_t(2, (channels, 30)) * rng.uniform(0.01, 3.0, (channels, 1))
    by_max = weight_scales(w, 0, True, scheme, "max")
    by_mse = weight_scales(w, 0, True, scheme, "mse")
    assert np.all(quantized_error(w, by_mse) <= quantized_error(w, by_max) * (1 + 1e-12))
    assert np.all(by_mse <= by_max)  # candidates only ever clip
    if scheme == "pow2":
        assert all(im.pow2_exponent(float(s)) >= 0 or s > 1 for s in by_mse)  # still powers of two
        assert np.all(by_mse >= by_max * 2.0 ** -(2))


def test_w1_pow2_weight_scale_by_least_squares() -> None:
    """docs/quantization.md W1."""
    w = np.array([[1.0, 0.9, -0.6, 0.3]])
    errors = [float(quantized_error(w, np.array([2.0**-f]))[0]) for f in (6, 7, 8)]
    assert errors[0] == pytest.approx(8.7890625e-5) and errors[1] == pytest.approx(7.568359375e-5)
    assert errors[2] == pytest.approx(0.42786, abs=1e-5)
    assert im.quantize_weights(w, [2.0**-6]).tolist() == [[64, 58, -38, 19]]
    assert im.quantize_weights(w, [2.0**-7]).tolist() == [[127, 115, -77, 38]]
    assert weight_scales(w, 0, True, "pow2", "max").tolist() == [2.0**-6]
    assert weight_scales(w, 0, True, "pow2", "mse").tolist() == [2.0**-7]


def test_mse_weight_scales_take_a_finer_power_of_two_when_little_is_clipped() -> None:
    """pow2: max|w| = 1.0 asks for 2^-6 (127/64 = 1.98 covers it) and leaves half the codes
    unused; 2^-7 clips only the 1.0 (to 0.992) and halves every other weight's error. Evenly
    spread weights up to 1.9 keep the covering scale; fixed keeps max|w| / 127 for both."""
    rng = np.random.default_rng(7)
    w = np.array([np.r_[rng.uniform(-0.9, 0.9, 63), 1.0], np.linspace(-1.9, 1.9, 64)])
    by_max, by_mse = weight_scales(w, 0, True, "pow2", "max"), weight_scales(w, 0, True, "pow2", "mse")
    assert by_max.tolist() == [2.0**-6, 2.0**-6] and by_mse.tolist() == [2.0**-7, 2.0**-6]
    assert np.array_equal(weight_scales(w, 0, True, "fixed", "mse"), weight_scales(w, 0, True, "fixed", "max"))


# ---------------------------------------------------------------------------------------
# Mean input windows and bias correction
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kernel", "strides", "pads", "dilations"), [
    ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1)), ((2, 3), (2, 1), (0, 1, 2, 0), (1, 2)), ((1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),
])
def test_patch_mean_is_the_mean_im2col_row(kernel: tuple, strides: tuple, pads: tuple, dilations: tuple) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 6))
    mean = calibrate.PatchMean((kernel, strides, pads, dilations))
    mean.observe(x[:1])
    mean.observe(x[1:])
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    rows = [xp[n, :, r : r + (kh - 1) * dh + 1 : dh, c : c + (kw - 1) * dw + 1 : dw]
            for n in range(2) for r in range(0, xp.shape[2] - (kh - 1) * dh, sh)
            for c in range(0, xp.shape[3] - (kw - 1) * dw, sw)]
    np.testing.assert_allclose(mean.mean, np.mean(rows, axis=0), rtol=1e-12)


def conv_gemm_model(rng: np.random.Generator, trans_b: bool, group: int) -> tuple[onnx.ModelProto, dict]:
    """conv (3x3, pad 1, `group`) -> relu -> flatten -> gemm; weights that round unevenly."""
    c = 4
    w = {"w1": rng.standard_normal((4, c // group, 3, 3)) * 0.3, "b1": rng.standard_normal(4) * 0.1,
         "fc": rng.standard_normal((5, 64) if trans_b else (64, 5)) * 0.2}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], group=group, name="conv"),
             helper.make_node("Relu", ["c1"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=int(trans_b), name="fc")]
    return model(nodes, {"x": (3, c, 4, 4)}, {"y": (3, 5)}, w), w


@pytest.mark.parametrize("scheme", ["fixed", "pow2"])
@pytest.mark.parametrize(("trans_b", "group"), [(True, 1), (False, 1), (True, 4)])
def test_bias_correction_adds_the_mean_weight_error_times_the_mean_window(scheme: str, trans_b: bool, group: int) -> None:
    rng = np.random.default_rng(4)
    onnx_model, w = conv_gemm_model(rng, trans_b, group)
    program = import_onnx(onnx_model)
    data = [{"x": rng.uniform(-0.5, 1.0, (3, 4, 4, 4)).astype(np.float32)} for _ in range(3)]
    corrected = quantize(program, data, scheme=scheme)
    plain = quantize(program, data, scheme=scheme, bias_correction=False)
    x = np.concatenate([d["x"] for d in data])
    mean = calibrate.PatchMean(((3, 3), (1, 1), (1, 1, 1, 1), (1, 1)))
    mean.observe(x)
    conv_c, conv_p = (next(op for op in q.module.walk() if isinstance(op, qnn.Conv2dOp)) for q in (corrected, plain))
    wq = weight_array(conv_c.weight, corrected.weights).astype(np.float64)
    scales = np.array(nn.float_list(conv_c.weight_scales))
    sx = conv_c.input_quantization()[0]
    error = w["w1"] - wq * scales[:, None, None, None]
    windows = mean.mean.reshape(group, 4 // group, 3, 3)
    shift = np.einsum("gmcij,gcij->gm", error.reshape(group, 4 // group, 4 // group, 3, 3), windows).reshape(4)
    bias_c = weight_array(conv_c.bias, corrected.weights).astype(np.int64)
    bias_p = weight_array(conv_p.bias, plain.weights).astype(np.int64)
    want = im.quantize_bias(w["b1"] + shift, sx, scales)
    assert np.abs(bias_c - want).max() <= 1  # float32 vs float64 sums
    assert np.array_equal(bias_p, im.quantize_bias(w["b1"], sx, scales))


def test_bias_correction_removes_the_mean_output_shift() -> None:
    """A gemm whose weights all round the same way: without correction every output is
    off by the same amount on average; with it, the mean error is a fraction of that."""
    rng = np.random.default_rng(5)
    weights = (rng.integers(-120, 121, (5, 40)) + 0.4) / 127  # each 0.4 step above a level
    weights[:, 0] = 1.0  # max|w| = 1: the step is 1/127 in every channel
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1, name="fc")]
    program = import_onnx(model(nodes, {"x": (64, 40)}, {"y": (64, 5)}, {"w": weights}))
    data = [{"x": rng.uniform(0.0, 1.0, (64, 40)).astype(np.float32)} for _ in range(4)]
    want = np.concatenate([execute(program, d)["y"] for d in data])

    def mean_error(**options: object) -> np.ndarray:
        q = quantize(program, data, scheme="fixed", calibrator="minmax", **options)
        got = np.concatenate([execute(q, d)["y"] for d in data])
        return np.abs((got - want).mean(axis=0))

    plain, corrected = mean_error(bias_correction=False), mean_error()
    assert plain.min() > 0.05  # 39 weights * 0.4/127 * E[x] = 0.06
    assert corrected.max() < 0.25 * plain.min()


# ---------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------


def test_options_in_pipeline_text_and_their_defaults(tmp_path: object) -> None:
    from pathlib import Path

    from passes.quantize import Options

    assert Options().percentile == calibrate.DEFAULT_PERCENTILE == 99.999  # onnxruntime's
    assert Options().calibrator == "mse" and Options().bias_correction
    assert Options(scheme="fixed").weight_method == "max" and Options(scheme="pow2").weight_method == "mse"
    rng = np.random.default_rng(6)
    onnx_model, _ = conv_gemm_model(rng, True, 1)
    program = import_onnx(onnx_model)
    x = rng.uniform(-0.5, 1.0, (3, 3, 4, 4, 4)).astype(np.float32)
    path = Path(str(tmp_path)) / "calib.npz"
    np.savez(path, x=x)
    text = run_pipeline(program.clone(), f'quantize{{weight-scales=mse bias-correction=false calib="{path}"}}').text()
    python = quantize(program, [{"x": x}], weight_scales="mse", bias_correction=False).text()
    assert text == python != quantize(program, [{"x": x}]).text()
    with pytest.raises(LayerloomError, match="unknown weight-scales 'l1'"):
        quantize(program, [{"x": x}], weight_scales="l1")
