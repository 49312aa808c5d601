"""The integer semantics of layerloom: the one implementation of docs/quantization.md.

Everything here is vectorised NumPy on int64 arrays that hold the spec's int32 (or
narrower) values, so each rule reads as the C++ it becomes: run-time functions use only
integer adds, multiplies, shifts, masks and compares. Float appears only in the
compile-time builders (multipliers, tables, scales), marked as such.

Parameters broadcast against the values: per-channel parameters are laid along an axis
with `along_axis(params, ndim, axis)` first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from compiler.errors import LayerloomError, OutOfRangeError

IntArray = NDArray[np.int64]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT8_RANGE = (-128, 127)
UINT8_RANGE = (0, 255)
INT32_RANGE = (INT32_MIN, INT32_MAX)
WEIGHT_RANGE = (-127, 127)  # symmetric weights never use -128

SCHEMES = ("pow2", "fixed")
FIXED_SHIFT_RANGE = (-31, 31)
FIXED_MULTIPLIER_RANGE = (2**30, 2**31 - 1)  # or 0: a flushed multiplier
POW2_SHIFT_RANGE = (-16, 48)
POW2_MULTIPLIER_RANGE = (1, 2**16 - 1)
POW2_ALPHA_BITS = 16  # leaky-relu slope alpha ~ m / 2^16 in the pow2 scheme
ADD_GUARD_BITS = 16  # fixed add: operands meet at max(s_a, s_b) / 2^16
MAX_REDUCTION = 32768  # K * 255 * 255 stays below 2^31 - 2^24


def int_range(dtype: np.dtype | type) -> tuple[int, int]:
    """Saturation range of an integer element type."""
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


def ints(x: ArrayLike) -> IntArray:
    return np.asarray(x, dtype=np.int64)


def along_axis(params: ArrayLike, ndim: int, axis: int) -> IntArray:
    """Shape a per-channel parameter vector (length 1 or C) to broadcast along `axis`."""
    p = ints(params).reshape(-1)
    shape = [1] * ndim
    shape[axis] = p.size
    return p.reshape(shape)


# ---------------------------------------------------------------------------------------
# Run-time primitives (integers only)
# ---------------------------------------------------------------------------------------


def saturate(x: ArrayLike, lo: int, hi: int) -> IntArray:
    return np.clip(ints(x), lo, hi)


def check_int32(x: IntArray, what: str) -> None:
    if x.size and (int(x.min()) < INT32_MIN or int(x.max()) > INT32_MAX):
        raise OutOfRangeError(f"{what} leaves int32: [{int(x.min())}, {int(x.max())}]")


def rounding_shift_right(v: ArrayLike, s: ArrayLike) -> IntArray:
    """pow2 rounding: (v + (1 << (s-1))) >> s for s > 0 (ties toward +inf), v for s == 0,
    v << -s for s < 0."""
    v, s = ints(v), ints(s)
    right = np.maximum(s, 0)
    left = np.maximum(-s, 0)
    half = np.where(s > 0, np.left_shift(1, np.maximum(s - 1, 0)), 0)
    return np.right_shift(np.left_shift(v, left) + half, right)


def requantize_pow2(x: ArrayLike, multipliers: ArrayLike, shifts: ArrayLike) -> IntArray:
    """round_half_up(x * m / 2^s), exact in int64 (|x| < 2^31, m < 2^16)."""
    x = ints(x)
    check_int32(x, "pow2 requantize input")
    return rounding_shift_right(x * ints(multipliers), shifts)


def saturating_rounding_doubling_high_mul(a: ArrayLike, b: ArrayLike) -> IntArray:
    """gemmlowp's SaturatingRoundingDoublingHighMul: a*b / 2^31, ties toward +inf,
    with -2^31 * -2^31 saturated to 2^31 - 1."""
    a, b = ints(a), ints(b)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    v = ab + nudge
    high = np.where(v >= 0, v >> 31, -((-v) >> 31))  # C division by 2^31 truncates toward 0
    overflow = (a == b) & (a == INT32_MIN)
    return np.where(overflow, INT32_MAX, high)


def rounding_divide_by_pot(x: ArrayLike, exponent: ArrayLike) -> IntArray:
    """gemmlowp's RoundingDivideByPOT: x / 2^e rounded to nearest, ties away from zero."""
    x, e = ints(x), ints(exponent)
    mask = np.left_shift(1, e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def requantize_fixed(x: ArrayLike, multipliers: ArrayLike, shifts: ArrayLike) -> IntArray:
    """x * M0 * 2^-31 * 2^-s: saturating left shift, SRDHM, then RoundingDivideByPOT."""
    x, s = ints(x), ints(shifts)
    check_int32(x, "fixed requantize input")
    shifted = saturate(np.left_shift(x, np.maximum(-s, 0)), INT32_MIN, INT32_MAX)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multipliers), np.maximum(s, 0))


@dataclass(frozen=True)
class Requant:
    """One requantization: `scheme` with multipliers and shifts that broadcast against
    the values (pow2 multipliers default to 1)."""

    scheme: str
    multipliers: IntArray
    shifts: IntArray

    @staticmethod
    def of(scheme: str, shifts: ArrayLike, multipliers: ArrayLike | None = None) -> Requant:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown requantization scheme '{scheme}' (one of {SCHEMES})")
        s = ints(shifts)
        if multipliers is None:
            if scheme == "fixed":
                raise ValueError("the fixed scheme needs multipliers")
            multipliers = np.ones_like(s)
        return Requant(scheme, ints(multipliers), s)

    def along(self, ndim: int, axis: int) -> Requant:
        """The same parameters laid along `axis` of an ndim-d tensor."""
        return Requant(self.scheme, along_axis(self.multipliers, ndim, axis), along_axis(self.shifts, ndim, axis))

    def take(self, index: ArrayLike) -> Requant:
        """Parameters picked per element from tables (average pooling's per-count sets)."""
        i = ints(index)
        return Requant(self.scheme, self.multipliers.reshape(-1)[i], self.shifts.reshape(-1)[i])

    def __call__(self, x: ArrayLike) -> IntArray:
        apply = requantize_pow2 if self.scheme == "pow2" else requantize_fixed
        return apply(x, self.multipliers, self.shifts)


@dataclass(frozen=True)
class OutputStage:
    """Requantize, optional leaky slope (negative accumulators use `negative`), add the
    zero point, clamp to [lo, hi] (the type's range narrowed by a fused activation)."""

    requant: Requant
    zero_point: int
    lo: int
    hi: int
    negative: Requant | None = None

    def along(self, ndim: int, axis: int) -> OutputStage:
        neg = self.negative.along(ndim, axis) if self.negative is not None else None
        return OutputStage(self.requant.along(ndim, axis), self.zero_point, self.lo, self.hi, neg)

    def __call__(self, acc: ArrayLike) -> IntArray:
        acc = ints(acc)
        v = self.requant(acc)
        if self.negative is not None:
            v = np.where(acc < 0, self.negative(acc), v)
        return saturate(v + self.zero_point, self.lo, self.hi)


def add(
    a: ArrayLike, b: ArrayLike, zero_points: tuple[int, int], operands: tuple[Requant, Requant], out: OutputStage
) -> IntArray:
    """Residual add (broadcasting): each operand to the common scale, exact sum, one
    final requantization to the output."""
    ta = operands[0](ints(a) - zero_points[0])
    tb = operands[1](ints(b) - zero_points[1])
    return out(ta + tb)


def rescale(q: ArrayLike, zero_point: int, out: OutputStage) -> IntArray:
    """One concat operand (or a standalone requantize): to the output scale and zero point."""
    return out(ints(q) - zero_point)


def average_divide(sums: ArrayLike, counts: ArrayLike, out: OutputStage) -> IntArray:
    """Average pooling: window sums of (q - z_x) divided by their counts n, using the
    parameter set n - 1 of `out.requant` (one set per possible count)."""
    stage = OutputStage(out.requant.take(ints(counts) - 1), out.zero_point, out.lo, out.hi)
    return stage(sums)


def lookup(q: ArrayLike, table: ArrayLike, qmin: int) -> IntArray:
    """Table activation: y = table[q - qmin]."""
    return ints(table)[ints(q) - qmin]


def exact_int_matmul(a: ArrayLike, b: ArrayLike) -> IntArray:
    """Integer a @ b, exact: through float32 BLAS when every partial sum is below 2^24,
    float64 BLAS below 2^53 (K * max|a| * max|b| bounds them), else in int64. The bound
    is taken on the operands as given (int8 stays int8: no int64 temporaries)."""
    a, b = np.asarray(a), np.asarray(b)
    bound = a.shape[-1] * max_abs(a) * max_abs(b)
    if bound < 2**24:
        return np.matmul(a.astype(np.float32), b.astype(np.float32)).astype(np.int64)
    if bound < 2**53:
        return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)
    return np.matmul(ints(a), ints(b))


def max_abs(x: np.ndarray) -> int:
    """max |x| as a Python int (0 when empty; an int8 -128 is 128: negated after the conversion)."""
    return max(-int(x.min(initial=0)), int(x.max(initial=0)))


# ---------------------------------------------------------------------------------------
# Boundary ops (float at the edges of the integer graph)
# ---------------------------------------------------------------------------------------


def quantize(x: ArrayLike, scale: float, zero_point: int, lo: int, hi: int) -> IntArray:
    """ONNX QuantizeLinear: saturate(round_half_even(x / s) + z), computed in float32."""
    q = np.rint(np.asarray(x, dtype=np.float32) / np.float32(scale))
    q = np.clip(q, lo - zero_point, hi - zero_point)  # before the cast: no int overflow
    return ints(q) + zero_point


def dequantize(q: ArrayLike, scale: float, zero_point: int) -> NDArray[np.float32]:
    """ONNX DequantizeLinear: (q - z) * s in float32."""
    return (ints(q) - zero_point).astype(np.float32) * np.float32(scale)


# ---------------------------------------------------------------------------------------
# Compile-time builders (float64 allowed here: their results are stored in the IR)
# ---------------------------------------------------------------------------------------


def round_half_even(x: ArrayLike) -> IntArray:
    return ints(np.rint(np.asarray(x, dtype=np.float64)))


def round_half_up(x: ArrayLike) -> IntArray:
    return ints(np.floor(np.asarray(x, dtype=np.float64) + 0.5))


def quantize_multipliers(reals: ArrayLike) -> tuple[IntArray, IntArray]:
    """TFLite's QuantizeMultiplier, vectorised: real = M0 * 2^-31 * 2^-s with M0 in
    [2^30, 2^31); s counts right shifts. Multipliers below 2^-32 flush to (0, 0)."""
    r = np.asarray(reals, dtype=np.float64)
    if r.size and (not np.all(np.isfinite(r)) or np.any(r <= 0)):
        raise LayerloomError(f"requantization multiplier must be positive and finite, got {r[(r <= 0) | ~np.isfinite(r)][0]}")
    q, e = np.frexp(r)
    m = ints(np.floor(q * 2.0**31 + 0.5))  # round half away from zero (q > 0), exact in float64
    carry = m == 2**31
    m = np.where(carry, 2**30, m)
    s = -(ints(e) + carry)
    if np.any(s < FIXED_SHIFT_RANGE[0]):
        raise LayerloomError(f"requantization multiplier {float(r.max())} is too large (must be below 2^31)")
    flush = s > FIXED_SHIFT_RANGE[1]
    return np.where(flush, 0, m), np.where(flush, 0, s)


def quantize_multiplier(real: float) -> tuple[int, int]:
    m, s = quantize_multipliers([real])
    return int(m[0]), int(s[0])


def multiplier_value(m: ArrayLike, s: ArrayLike, scheme: str) -> NDArray[np.float64]:
    """The real number a (multiplier, shift) pair stands for in `scheme`."""
    m64, s64 = np.asarray(m, dtype=np.float64), np.asarray(s, dtype=np.float64)
    return m64 * np.exp2(-s64 - (31 if scheme == "fixed" else 0))


def pow2_exponent(scale: float) -> int:
    """f such that scale == 2^-f exactly (pow2 scheme); LayerloomError otherwise."""
    mantissa, e = math.frexp(scale)
    if scale <= 0 or mantissa != 0.5:
        raise LayerloomError(f"scale {scale!r} is not a power of two")
    return 1 - e


def pow2_divisor(n: int, extra_shift: int = 0) -> tuple[int, int]:
    """(m, s) with m / 2^s ~ 1 / n (times 2^-extra_shift): a pure shift for powers of two,
    else k = 16 + floor(log2 n), m = round_half_up(2^k / n) in (2^15, 2^16)."""
    if n < 1:
        raise ValueError(f"window count {n} must be positive")
    if n & (n - 1) == 0:
        return 1, n.bit_length() - 1 + extra_shift
    k = 16 + n.bit_length() - 1
    return ((1 << (k + 1)) + n) // (2 * n), k + extra_shift


def pow2_alpha(alpha: float) -> int:
    """Leaky-relu slope alpha ~ m / 2^16 (pow2 scheme)."""
    return int(round_half_up(alpha * 2**POW2_ALPHA_BITS))


def pow2_fraction_bits(max_abs: float) -> int:
    """The finest f with max_abs * 2^f <= 127 (0 for an all-zero tensor)."""
    if max_abs <= 0:
        return 0
    return math.floor(math.log2(127.0 / max_abs))


def symmetric_scale(max_abs: float) -> float:
    """Per-channel weight scale of the fixed scheme (float32): max|w| / 127, or 1 for zeros."""
    return float(np.float32(max_abs / 127.0)) if max_abs > 0 else 1.0


def asymmetric_params(lo: float, hi: float) -> tuple[float, int]:
    """Activation (scale, zero point) of the fixed scheme from a calibrated [lo, hi]."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi == lo:
        return 1.0, 0
    scale = float(np.float32((hi - lo) / 255.0))
    zero_point = int(np.clip(round_half_even(-128.0 - lo / scale), -128, 127))
    return scale, zero_point


def quantize_bias(bias: ArrayLike, input_scale: float, weight_scales: ArrayLike) -> IntArray:
    """int32 bias at the accumulator scale s_x * s_w[c]."""
    real = np.asarray(bias, dtype=np.float64) / (input_scale * np.asarray(weight_scales, dtype=np.float64))
    return saturate(round_half_even(np.clip(real, INT32_MIN, INT32_MAX)), INT32_MIN, INT32_MAX)


def quantize_weights(w: ArrayLike, scales: ArrayLike, axis: int = 0) -> IntArray:
    """Symmetric weights in [-127, 127] with per-channel scales along `axis`."""
    w64 = np.asarray(w, dtype=np.float64)
    s = np.asarray(scales, dtype=np.float64).reshape([-1 if i == axis else 1 for i in range(w64.ndim)])
    return saturate(round_half_even(w64 / s), *WEIGHT_RANGE)


def activation_clamp(
    activation: str | None, scale: float, zero_point: int, lo: int, hi: int,
    clip_min: float | None = None, clip_max: float | None = None,
) -> tuple[int, int]:
    """Integer [clamp_min, clamp_max] of a fused relu / relu6 / clip at the output scale."""
    def bound(real: float | None, default: int) -> int:
        if real is None or not math.isfinite(real):
            return default
        return int(np.clip(zero_point + round_half_even(real / scale), lo, hi))

    if activation is None or activation == "leaky_relu":
        return lo, hi
    if activation == "relu":
        return bound(0.0, lo), hi
    if activation == "relu6":
        return bound(0.0, lo), bound(6.0, hi)
    if activation == "clip":
        return bound(clip_min, lo), bound(clip_max, hi)
    raise ValueError(f"unknown fused activation '{activation}'")


def build_table(
    fn: Callable[[NDArray[np.float64]], NDArray[np.float64]],
    input_scale: float, input_zero_point: int, input_range: tuple[int, int],
    scale: float, zero_point: int, output_range: tuple[int, int],
) -> IntArray:
    """256-entry table: table[q - qmin] = saturate(round_half_even(f(s_x (q - z_x)) / s_y) + z_y)."""
    q = np.arange(input_range[0], input_range[1] + 1, dtype=np.int64)
    real = fn(input_scale * (q - input_zero_point).astype(np.float64))
    return saturate(round_half_even(real / scale) + zero_point, *output_range)


# Float reference functions for the table activations (ONNX definitions).
TABLE_FUNCTIONS: dict[str, Callable[..., NDArray[np.float64]]] = {
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "hard_sigmoid": lambda x, alpha=0.2, beta=0.5: np.clip(alpha * x + beta, 0.0, 1.0),
    "hardswish": lambda x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "relu": lambda x: np.maximum(x, 0.0),
    "clip": lambda x, lo=-np.inf, hi=np.inf: np.clip(x, lo, hi),
    "leaky_relu": lambda x, alpha=0.01: np.where(x >= 0, x, alpha * x),
}
