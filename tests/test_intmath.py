"""The integer semantics against docs/quantization.md: every worked example of the spec
(labels P1, F1, ... as in the doc), and properties against a scalar, line-by-line
transcription of the spec's pseudo-code (what the C++ backends do)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiler.errors import LayerloomError
from compiler.quant import intmath as im

INT32 = st.integers(im.INT32_MIN, im.INT32_MAX)

# ---------------------------------------------------------------------------------------
# Scalar transcription of the spec (sections 3 and 4), independent of the NumPy code
# ---------------------------------------------------------------------------------------


def c_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def srdhm_scalar(a: int, b: int) -> int:
    if a == b == im.INT32_MIN:
        return im.INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return c_div(ab + nudge, 1 << 31)


def rdbpot_scalar(x: int, e: int) -> int:
    mask = (1 << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


def requantize_fixed_scalar(x: int, m0: int, s: int) -> int:
    shifted = max(min(x << max(-s, 0), im.INT32_MAX), im.INT32_MIN)
    return rdbpot_scalar(srdhm_scalar(shifted, m0), max(s, 0))


def requantize_pow2_scalar(x: int, m: int, s: int) -> int:
    v = x * m
    if s > 0:
        return (v + (1 << (s - 1))) >> s
    return v << -s


def stage(scheme: str, shifts: list[int], multipliers: list[int] | None = None, zp: int = 0,
          lo: int = -128, hi: int = 127) -> im.OutputStage:
    return im.OutputStage(im.Requant.of(scheme, shifts, multipliers), zp, lo, hi)


# ---------------------------------------------------------------------------------------
# Worked examples of the spec
# ---------------------------------------------------------------------------------------


def test_p1_pow2_conv_output_stage() -> None:
    out = stage("pow2", [8])
    assert out([1000, 640, -640, -641, 40000]).tolist() == [4, 3, -2, -3, 127]
    relu = stage("pow2", [8], lo=0)
    assert relu([-1000]).tolist() == [0]


def test_quantize_multiplier_examples() -> None:
    assert im.quantize_multiplier(0.002) == (1099511628, 8)
    assert im.quantize_multiplier(0.25) == (1073741824, 1)
    assert im.quantize_multiplier(1 / 9) == (1908874354, 3)
    assert im.quantize_multiplier(3.0) == (1610612736, -2)
    assert im.quantize_multiplier(1 - 2**-40) == (1073741824, -1)  # rounds up to 2^31: carry
    assert im.quantize_multiplier(2**-40) == (0, 0)  # flushed
    assert im.quantize_multiplier(0.0002) == (1759218604, 12)
    assert im.quantize_multiplier(1 / 49) == (1402438301, 5)


def test_quantize_multiplier_refuses_bad_values() -> None:
    for bad in (0.0, -1.0, float("nan"), 2.0**31):
        with pytest.raises(LayerloomError):
            im.quantize_multiplier(bad)


def test_srdhm_and_rdbpot_examples() -> None:
    assert im.saturating_rounding_doubling_high_mul([1, -1, 3, -3], 1 << 30).tolist() == [1, 0, 2, -1]
    assert im.saturating_rounding_doubling_high_mul(im.INT32_MIN, im.INT32_MIN).tolist() == im.INT32_MAX
    assert im.rounding_divide_by_pot([5, -5, 4, -4, 6, -6], 1).tolist() == [3, -3, 2, -2, 3, -3]


def test_f1_fixed_conv_output_stage() -> None:
    m, s = im.quantize_multiplier(0.02 * 0.005 / 0.05)
    assert (m, s) == (1099511628, 8)
    out = stage("fixed", [s], [m], zp=-5)
    assert out.requant(im.ints([1000, -1000, 2250, 100000])).tolist() == [2, -2, 5, 200]
    assert out([1000, -1000, 2250, 100000]).tolist() == [-3, -7, 0, 127]


def test_f2_ties_fixed_versus_pow2() -> None:
    quarter = im.Requant.of("fixed", [1], [1 << 30])
    assert quarter(im.ints([10, -10])).tolist() == [3, -3]  # away from zero
    assert im.Requant.of("pow2", [2])(im.ints([10, -10])).tolist() == [3, -2]  # toward +inf
    m, s = im.quantize_multiplier(3.0)
    assert im.Requant.of("fixed", [s], [m])(im.ints([5])).tolist() == [15]


def test_relu6_clamp_bounds() -> None:
    scale = float(np.float32(6 / 255))
    assert im.activation_clamp("relu6", scale, -128, -128, 127) == (-128, 127)
    assert im.activation_clamp("relu", 0.05, -5, -128, 127) == (-5, 127)
    assert im.activation_clamp("clip", 0.1, 0, -128, 127, -1.0, 2.0) == (-10, 20)
    assert im.activation_clamp(None, 0.1, 0, -128, 127) == (-128, 127)


def test_l1_leaky_pow2() -> None:
    m = im.pow2_alpha(0.1)
    assert m == 6554
    out = im.OutputStage(im.Requant.of("pow2", [8]), 0, -128, 127, negative=im.Requant.of("pow2", [24], [m]))
    assert out([-1000, -5000, 1000]).tolist() == [0, -2, 4]


def test_l2_leaky_fixed() -> None:
    neg = im.quantize_multiplier(0.002 * 0.1)
    assert neg == (1759218604, 12)
    out = im.OutputStage(im.Requant.of("fixed", [8], [1099511628]), 0, -128, 127,
                         negative=im.Requant.of("fixed", [neg[1]], [neg[0]]))
    assert out([-1000, -30000, 1000]).tolist() == [0, -6, 2]


def test_bias_quantization() -> None:
    assert im.quantize_bias([0.1234], 2**-4, [2**-7]).tolist() == [253]


def test_a1_add_pow2() -> None:
    operands = (im.Requant.of("pow2", [0]), im.Requant.of("pow2", [-2]))
    y = im.add([37, 100], [-9, 20], (0, 0), operands, stage("pow2", [1]))
    assert y.tolist() == [1, 90]


def test_a2_add_fixed() -> None:
    sa, sb, sy = 0.04, 0.1, 0.08
    mid = max(sa, sb) / 2**im.ADD_GUARD_BITS
    pa, pb, po = im.quantize_multiplier(sa / mid), im.quantize_multiplier(sb / mid), im.quantize_multiplier(mid / sy)
    assert (pa, pb, po) == ((1717986918, -15), (1073741824, -17), (1342177280, 15))
    operands = (im.Requant.of("fixed", [pa[1]], [pa[0]]), im.Requant.of("fixed", [pb[1]], [pb[0]]))
    assert operands[0](im.ints([50, -103, 124])).tolist() == [1310720, -2700083, 3250586]
    assert operands[1](im.ints([20, -55, 132])).tolist() == [1310720, -3604480, 8650752]
    y = im.add([53, -100, 127], [15, -60, 127], (3, -5), operands, stage("fixed", [po[1]], [po[0]], zp=2))
    assert y.tolist() == [52, -118, 127]


def test_c1_concat_rescale() -> None:
    assert im.rescale([-6, 37], 0, stage("pow2", [2])).tolist() == [-1, 9]


def test_identity_rescale_is_exact() -> None:
    q = np.arange(-128, 128)
    assert np.array_equal(im.rescale(q, 0, stage("pow2", [0])), q)
    assert im.quantize_multiplier(1.0) == (1 << 30, -1)
    assert np.array_equal(im.rescale(q, 3, stage("fixed", [-1], [1 << 30], zp=3)), np.clip(q, -128, 127))


def test_v1_v2_average_pool_division() -> None:
    m, s = im.pow2_divisor(9)
    assert (m, s) == (58254, 19)
    assert im.requantize_pow2([100, -105], m, s).tolist() == [11, -12]
    assert im.pow2_divisor(4, extra_shift=1) == (1, 3)
    fixed = im.quantize_multiplier(1 / 9)
    assert im.requantize_fixed([100, -105], fixed[0], fixed[1]).tolist() == [11, -12]
    g = im.quantize_multiplier(1 / 49)
    assert im.requantize_fixed([1000], g[0], g[1]).tolist() == [20]


def test_average_divide_uses_the_per_count_parameters() -> None:
    # A border window that counts 6 elements and an inner one that counts 9.
    table = [im.pow2_divisor(n) for n in range(1, 10)]
    out = im.OutputStage(im.Requant.of("pow2", [s for _, s in table], [m for m, _ in table]), 0, -128, 127)
    assert im.average_divide([60, 100], [6, 9], out).tolist() == [10, 11]


def test_pow2_divisor_multiplier_range() -> None:
    for n in range(1, 5000):
        m, s = im.pow2_divisor(n)
        assert im.POW2_MULTIPLIER_RANGE[0] <= m <= im.POW2_MULTIPLIER_RANGE[1]
        assert abs(m / 2**s - 1 / n) <= 2**-16 / n


def test_t1_t2_t3_lookup_tables() -> None:
    def table(name: str, sx: float, sy: float) -> np.ndarray:
        return im.build_table(im.TABLE_FUNCTIONS[name], sx, 0, im.INT8_RANGE, sy, 0, im.INT8_RANGE)

    sig = table("sigmoid", 1 / 16, 1 / 128)
    assert len(sig) == 256
    assert im.lookup([0, 16, -128, 127], sig, -128).tolist() == [64, 94, 0, 127]
    hs = table("hardswish", 1 / 16, 1 / 16)
    assert im.lookup([16, -32, 80], hs, -128).tolist() == [11, -5, 80]
    hsig = table("hard_sigmoid", 1 / 16, 1 / 128)
    assert im.lookup([16], hsig, -128).tolist() == [90]


def test_q1_d1_quantize_and_dequantize() -> None:
    assert im.quantize([2.5, 3.5, -2.5, 1000.0], 1.0, 10, -128, 127).tolist() == [12, 14, 8, 127]
    assert im.quantize([0.25], 0.1, 0, -128, 127).tolist() == [2]
    assert im.quantize([-3.0], 1.0, 0, *im.UINT8_RANGE).tolist() == [0]
    assert im.dequantize([-7], 0.5, 3).tolist() == [-5.0]


def test_scale_choice_examples() -> None:
    scale, zp = im.asymmetric_params(-1.0, 3.0)
    assert scale == float(np.float32(4 / 255)) and zp == -64
    assert im.asymmetric_params(0.5, 2.0)[1] == -128  # widened to contain 0
    assert im.pow2_fraction_bits(3.0) == 5
    assert im.pow2_fraction_bits(0.0) == 0
    assert im.symmetric_scale(0.0) == 1.0
    assert im.pow2_exponent(1 / 32) == 5 and im.pow2_exponent(4.0) == -2
    with pytest.raises(LayerloomError):
        im.pow2_exponent(0.1)


def test_uint8_is_int8_shifted_by_128() -> None:
    # Same real values, same results after the output stage: the uint8 mapping is exact.
    rng = np.random.default_rng(0)
    q_u8 = rng.integers(0, 256, size=100)
    out_u8 = im.rescale(q_u8, 131, im.OutputStage(im.Requant.of("fixed", [1], [1 << 30]), 128, 0, 255))
    out_i8 = im.rescale(q_u8 - 128, 3, im.OutputStage(im.Requant.of("fixed", [1], [1 << 30]), 0, -128, 127))
    assert np.array_equal(out_u8 - 128, out_i8)


def test_weights_are_symmetric_and_never_minus_128() -> None:
    w = np.array([[1.0, -1.0, 0.25], [0.01, -0.04, 0.0]])
    scales = [im.symmetric_scale(float(np.abs(r).max())) for r in w]
    q = im.quantize_weights(w, scales, axis=0)
    assert q.tolist() == [[127, -127, 32], [32, -127, 0]]
    assert im.quantize_weights([[-2.0]], [1 / 127]).tolist() == [[-127]]


def test_exact_int_matmul_both_paths() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, size=(5, 300))
    b = rng.integers(-128, 128, size=(300, 7))
    assert np.array_equal(im.exact_int_matmul(a, b), a @ b)  # float64 BLAS path
    big = np.full((2, 3), 2**40)
    assert np.array_equal(im.exact_int_matmul(big, big.T), big @ big.T)  # int64 path


def test_requantize_refuses_values_outside_int32() -> None:
    with pytest.raises(ValueError):
        im.requantize_fixed([2**31], 1 << 30, 0)
    with pytest.raises(ValueError):
        im.requantize_pow2([-(2**31) - 1], 1, 0)


def test_per_channel_parameters_lie_along_the_channel_axis() -> None:
    acc = np.full((1, 2, 2, 2), 1000)
    out = im.OutputStage(im.Requant.of("pow2", [8, 4]), 0, -128, 127).along(4, 1)
    y = out(acc)
    assert (y[0, 0] == 4).all() and (y[0, 1] == 63).all()  # 1000/256 and 1000/16 -> 62.5 -> 63


# ---------------------------------------------------------------------------------------
# Properties: the vectorised code equals the scalar transcription, and the rules round
# as the spec says (checked with exact rationals)
# ---------------------------------------------------------------------------------------


@given(INT32, INT32)
def test_srdhm_matches_scalar_and_rounds_half_up(a: int, b: int) -> None:
    got = int(im.saturating_rounding_doubling_high_mul(a, b))
    assert got == srdhm_scalar(a, b)
    if not a == b == im.INT32_MIN:
        assert got == math.floor(Fraction(a * b, 2**31) + Fraction(1, 2))


@given(INT32, st.integers(0, 31))
def test_rdbpot_matches_scalar_and_rounds_half_away(x: int, e: int) -> None:
    got = int(im.rounding_divide_by_pot(x, e))
    assert got == rdbpot_scalar(x, e)
    exact = Fraction(x, 2**e)
    assert got == (math.floor(exact + Fraction(1, 2)) if x >= 0 else -math.floor(-exact + Fraction(1, 2)))


@given(INT32, st.integers(1, 2**16 - 1), st.integers(0, 48))
def test_pow2_requantize_rounds_half_up(x: int, m: int, s: int) -> None:
    got = int(im.requantize_pow2(x, m, s))
    assert got == requantize_pow2_scalar(x, m, s) == math.floor(Fraction(x * m, 2**s) + Fraction(1, 2))


@given(INT32, st.integers(-16, -1))
def test_pow2_left_shift_is_exact(x: int, s: int) -> None:
    assert int(im.requantize_pow2(x, 1, s)) == x * 2**-s


@given(st.lists(INT32, min_size=1, max_size=8), st.floats(2.0**-32, 2.0**8, allow_nan=False))
def test_fixed_requantize_matches_scalar_and_is_accurate(xs: list[int], real: float) -> None:
    m0, s = im.quantize_multiplier(real)
    got = im.requantize_fixed(xs, m0, s).tolist()
    assert got == [requantize_fixed_scalar(x, m0, s) for x in xs]
    if m0:
        assert 2**30 <= m0 < 2**31 and -31 <= s <= 31
        for x, y in zip(xs, got, strict=True):
            if abs(x << max(-s, 0)) < 2**31:  # no saturation of the shifted input
                bound = 0.5 + 0.5 * 2.0 ** -max(s, 0) + abs(x * real) * 2.0**-30
                assert abs(y - x * real) <= bound


@given(st.floats(2.0**-31, 2.0**30, allow_nan=False))
def test_quantize_multiplier_is_accurate(real: float) -> None:
    m0, s = im.quantize_multiplier(real)
    value = float(im.multiplier_value(m0, s, "fixed"))
    assert abs(value - real) <= real * 2.0**-30
