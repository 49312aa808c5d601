"""NumPy kernels for the `qnn` dialect, exactly per docs/quantization.md.

`compiler.quant.intmath` is the spec's one implementation; the kernels compute the same
integers, fast (tests/test_qnn_kernels.py checks them against it and against int64
references, bit for bit):

- Contractions run in float32 BLAS, exact while every partial sum is an integer below
  2^24. A partial sum, whatever order BLAS adds in, is at most max|x| times the L1 norm
  of the weights summed, so convolutions cut their input channels into chunks that keep
  that bound (`channel_chunks`; matmul cuts its inner axis by K * max|a| * max|b|) and sum
  the chunks in float64; int64 beyond float64's reach. Convolution reuses the float
  kernel (`kernels.conv2d`: im2col + GEMM, channels-last) on the raw input padded with its
  zero point; the zero point's share, z_x * sum(w) per output channel, joins the bias (the
  folding of docs/quantization.md section 1, done at run time).
- The output stage (requantize, zero point, clamp) is one floor per element in float64
  (`FloatStage`; float32 for pow2 where exact), derived below from the spec's roundings;
  the fixed scheme's, on a float32 accumulator and an 8-bit result, is the same floor in
  float32 (`CheckedStage`), the elements whose rounding float32 cannot decide (their
  fraction within its error of an integer, or in the tie zone; about 0.15% on ResNet-50)
  flagged and redone in int64; elsewhere one float64 floor and int32 shifts (`FixedStage`);
  where float64 is not exact, `requantize` / `output_stage` do the same in int64 with fewer
  passes than intmath. Stages run on flat slabs (cache-sized) in the calling thread: on a
  thread pool, the GIL changing hands around every NumPy call of a slab made them slower
  than in one thread (ResNet-50, two cores: 53 against 29 ms of output stages). Stages
  have per-op constants compiled once. Where an accumulator could leave int32 (a huge imported
  bias), intmath itself runs, and raises.
- Add, concat, requantize and lookup tables are functions of the operand bytes: tables
  (65536 entries for add) built with `output_stage`, then one gather per element.
"""
from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np
from xdsl.ir import Operation

from backends.reference.kernels import (
    _result_shape,
    as_nchw,
    conv2d,
    derived,
    gemm,
    hwio_weights,
    kernel,
    pad_nhwc,
    window_counts,
    window_view,
)
from compiler.errors import UnsupportedError
from compiler.quant import intmath as im
from compiler.quant.intmath import max_abs
from compiler.tensors import dtype_of
from dialects import nn, qnn

# np.clip's ufunc without np.clip's Python wrapper (which builds an np.iinfo per call on
# integer arrays: a tenth of a slab's time).
clip: np.ufunc = np._core.umath.clip  # type: ignore[attr-defined]
FLOAT32_EXACT = 2**24  # integers below this are exact in float32, and so are their sums below it
FLOAT64_EXACT = 2**53
SLAB_ELEMENTS = 1 << 15  # int64 temporaries of 256 KiB: they stay in L2 cache


# ---------------------------------------------------------------------------------------
# Requantization in few passes (the same integers as intmath)
# ---------------------------------------------------------------------------------------


def requantize(x: np.ndarray, r: im.Requant, clamped_below: bool = False) -> np.ndarray:
    """`r(x)` for int64 `x` holding int32 values: intmath.requantize_pow2 / _fixed, the fixed
    scheme's two roundings as one floor (see below). `clamped_below`: negative results
    are clamped away anyway, so their tie correction may be skipped."""
    m, s = r.multipliers, r.shifts
    if r.scheme == "pow2":
        v = x if np.all(m == 1) else x * m
        if np.all(s == 0):
            return v
        if np.all(s > 0):
            return (v + (np.left_shift(1, s) >> 1)) >> s  # round half up
        return im.rounding_shift_right(v, s)
    left, e = np.maximum(-s, 0), np.maximum(s, 0)
    if np.any(left):
        x = np.clip(np.left_shift(x, left), im.INT32_MIN, im.INT32_MAX)
    halves = (1 << 30) + np.where(e > 0, np.left_shift(1, 30 + e), 0)
    p = x * m
    p += halves
    if not clamped_below and np.any(e > 0):  # P < -2^30 (a negative h): its ties go down
        np.subtract(p, np.where(e > 0, 1 << 31, 0), out=p, where=p < halves - (1 << 30))
    return p >> (31 + e)


def per_channel(values: np.ndarray | None, channels: int, dtype: type) -> np.ndarray:
    """`values` (one per channel, or one for all; None: zeros) as a fresh (channels,) array."""
    if values is None:
        return np.zeros(channels, dtype)
    return np.broadcast_to(values.reshape(-1), (channels,)).astype(dtype)


def output_stage(acc: np.ndarray, stage: im.OutputStage) -> np.ndarray:
    """`stage(acc)` (intmath.OutputStage) for int64 `acc` holding int32 values."""
    v = requantize(acc, stage.requant, stage.lo >= stage.zero_point)
    if stage.negative is not None:
        v = np.where(acc < 0, requantize(acc, stage.negative), v)
    v += stage.zero_point
    return np.clip(v, stage.lo, stage.hi, out=v)


# ---------------------------------------------------------------------------------------
# The output stage as one floor in float64 (where that is exact)
# ---------------------------------------------------------------------------------------
#
# pow2: (a m + 2^(s-1)) >> s is floor(a m 2^-s + 1/2).
# fixed: with P = a' M0 (a' = a << left), SaturatingRoundingDoublingHighMul is
# h = floor((P + 2^30) / 2^31) and RoundingDivideByPOT(h, e) is
# floor((h + 2^(e-1) - [h < 0]) / 2^e). Since floor((floor(x) + k) / n) = floor((x + k) / n)
# for integers k and n > 0, the two roundings are one floor:
#     r = floor(P / 2^(31+e) + 2^-(e+1) + 1/2 - [P < -2^30] 2^-e)        (e > 0)
#     r = floor(P / 2^31 + 1/2)                                          (e = 0)
# (h < 0 exactly when P < -2^30). In float64, a K + C (K = M0 2^left / 2^(31+e)) is exact
# when |a' M0| < 2^53; the floor then only goes wrong if the sum rounds across an integer,
# which cannot happen while its value (|r| below 2^9, anything larger saturates) keeps
# 31 + e fractional bits within float64's 53: e <= 12 (pow2: s <= 40). The zero point and
# the per-channel offset (bias) join C. tests/test_qnn_kernels.py checks it against intmath.

MAX_FIXED_SHIFT = 12
MAX_POW2_SHIFT = 40
MAX_SATURATING_SHIFT = 10  # fixed, no tie correction: beyond float64's exact range results saturate


SCRATCH = threading.local()


def scratch(n: int, dtype: np.dtype, extra_type: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """A `dtype` and an `extra_type` buffer of n elements, kept per thread: a fresh 256 KiB
    array per slab would be mapped and faulted in every time."""
    buffers = getattr(SCRATCH, "buffers", {})
    SCRATCH.buffers = buffers
    key = (dtype.str, extra_type.str)
    if key not in buffers or buffers[key][0].size < n:
        buffers[key] = (np.empty(n, dtype), np.empty(n, extra_type))
    v, extra = buffers[key]
    return v[:n], extra[:n]


def scratch_one(n: int, dtype: type) -> np.ndarray:
    """A per-thread `dtype` buffer of n elements, one per type, beside `scratch`'s pairs
    (a second int32 buffer, CheckedStage's flags for a whole layer, the add's table index)."""
    buffers = getattr(SCRATCH, "singles", {})
    SCRATCH.singles = buffers
    buffer = buffers.get(dtype)
    if buffer is None or buffer.size < n:
        buffer = buffers[dtype] = np.empty(n, dtype)
    return buffer[:n]


@dataclass(frozen=True)
class FloatStage:
    """y = clip(floor(a K + C - [a < T] D), lo, hi) per channel (last axis); for a leaky
    slope, `negative` applies where a < `split` (a + offset < 0)."""

    k: np.ndarray
    c: np.ndarray
    t: np.ndarray | None
    d: np.ndarray | None
    lo: int
    hi: int
    negative: FloatStage | None = None
    split: np.ndarray | None = None
    limit: float = np.inf  # exact for |a| <= limit
    limit32: float = -1.0  # ... and in float32 too for |a| <= limit32 (pow2 only)
    neg_d: np.ndarray | None = None  # -d, for the tiled tie correction
    int32_clip: bool = False  # store: |a K + C| < 2^31 for |a| <= limit, so clip after an int32 cast

    def evaluate(self, a: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Into the float64 buffer `out` (a's shape)."""
        np.multiply(a, self.k, out=out)
        out += self.c
        if self.t is not None and self.d is not None:
            np.subtract(out, self.d, out=out, where=a < self.t)
        np.floor(out, out=out)
        if self.negative is not None and self.split is not None:
            below = a < self.split
            out[...] = np.where(below, self.negative.evaluate(a, np.empty_like(out)), out)
        return np.clip(out, self.lo, self.hi, out=out)

    def tiled(self, rows: int, acc_type: np.dtype, single: bool = False) -> FloatStage | None:
        """The stage with its per-channel terms repeated for `rows` rows and flattened, for
        `store` on flat slabs (long contiguous loops instead of short broadcast ones), its
        thresholds in the accumulator's type (no conversion in the compare); `single`:
        in float32 (only within `limit32`). None for a leaky slope (it uses `evaluate`)."""
        if self.negative is not None or (single and self.limit32 < 0):
            return None
        if single:
            return FloatStage(np.tile(self.k, rows).astype(np.float32), np.tile(self.c - self.lo, rows).astype(np.float32),
                              None, None, self.lo, self.hi, limit=self.limit32, limit32=self.limit32)
        if self.t is None or self.d is None:
            c = self.c - self.lo
            reach = self.limit * float(np.abs(self.k).max(initial=0)) + float(np.abs(c).max(initial=0))
            return FloatStage(np.tile(self.k, rows), np.tile(c, rows), None, None, self.lo, self.hi, limit=self.limit,
                              int32_clip=reach < 2.0**31 - 2)
        # The tie correction as C - D/2 + sign(a - T) D/2: a - T is a nonzero half-integer,
        # so its sign is right even where it rounds; D/2 is a power of two.
        half = np.broadcast_to(self.d, self.k.shape) / 2
        if np.any(np.abs(self.t[np.isfinite(self.t)]) >= 2**22):  # T itself must stay a half-integer
            acc_type = np.dtype(np.float64)
        halves = np.tile(half, rows).astype(acc_type)
        return FloatStage(np.tile(self.k, rows), np.tile(self.c - self.lo - half, rows),
                          np.tile(np.broadcast_to(self.t, self.k.shape), rows).astype(acc_type),
                          halves, self.lo, self.hi, limit=self.limit, neg_d=-halves)

    def store(self, a: np.ndarray, out: np.ndarray) -> None:
        """A tiled stage on the flat slab `a` into the flat 8-bit `out`: the floor is the
        truncating cast once the values are shifted to start at 0 (c holds -lo) and
        clipped to [0, hi - lo]; the byte then gets lo back, modulo 256."""
        n = a.size
        v, extra = scratch(n, self.k.dtype, self.t.dtype if self.t is not None else a.dtype)
        np.copyto(v, a)  # then multiply within one type: faster than a mixed-type multiply
        v *= self.k[:n]
        v += self.c[:n]
        if self.t is not None and self.d is not None and self.neg_d is not None:  # c holds -D/2, d D/2
            # sign(a - T) * D/2 as clip(a - T, -D/2, D/2): |a - T| >= 1/2 > D/2.
            np.subtract(a, self.t[:n], out=extra)
            np.clip(extra, self.neg_d[:n], self.d[:n], out=extra)
            v += extra
        bytes_ = out.view(np.uint8)
        if self.int32_clip:  # the truncating cast, then an integer clip: cheaper than a float64 clip
            h = scratch_one(n, np.int32)
            h[...] = v  # truncation toward 0 is the floor for v >= 0; v in (-1, 0) clips to 0 either way
            clip(h, 0, self.hi - self.lo, out=h)
            bytes_[...] = h
        else:
            clip(v, 0, self.hi - self.lo, out=v)
            bytes_[...] = v
        if self.lo % 256:
            bytes_ += np.uint8(self.lo % 256)


# ---------------------------------------------------------------------------------------
# The fixed scheme's output stage: one float64 floor for SRDHM, the rest in int32
# ---------------------------------------------------------------------------------------
#
# With x = a + offset and M' = M0 << left, SaturatingRoundingDoublingHighMul is
# h = floor(x M' / 2^31 + 1/2) (see above), exact in float64 as a K1 + C1 (K1 = M' / 2^31,
# C1 = 1/2 + offset K1) while |x M'| < 2^53: every term is a multiple of 2^-31 below 2^22.
# For shifts e <= 12 and offsets below 2^51 / M', larger |a K1| only make saturated results
# (see FixedStage.of), so the accumulator's magnitude need not be measured.
# RoundingDivideByPOT(h, e) + z is floor((h + 2^(e-1) - [h < 0] + z 2^e) / 2^e): in int32,
# (h + (h >> 31) + R) >> e with R = 2^(e-1) + z 2^e, the sign term only where e > 0. Under a
# clamp at or above the zero point (relu) the sign term never changes a kept result (a
# negative h gives at most 0 either way), so it is left out. Then the clamp and the cast.

MAX_INT32_STAGE_SHIFT = 22  # |h| < 2^22 and |R| <= 2^30: h + R stays in int32
#
# Without the floor pass (e <= 12, |offset M'| < 2^51): lifted by L = 2^21, v + L is exact
# and positive for |v| < 2^21 (multiples of 2^-31 below 2^22), so the truncating cast is
# floor(v) + L. Every result that is not clipped has |h| <= 256 * 2^e + 2^(e-1) + 1 < 2^21,
# so there h' = h + L lies in [0, 2^22) and h' >> 21 is 1 - [h < 0]: the sign term is that
# shift with 1 more taken off R (R - L - 1). Beyond (|v| >= 2^21) the cast may be one off
# and h' >> 21 other than 0 or 1, but those results clip to the same end however they go:
# (-2^21 + R) >> e <= -2^9 + 128 and (2^21 - 1 + R) >> e >= 2^9 - 129. Channels without
# the sign term (e = 0) get h' >> 21 | 1 (1 where it counts); |h' + ...| stays below 2^31.
LIFT_BITS = 21


@dataclass(frozen=True)
class FixedStage:
    """The fixed scheme's output stage on flat slabs (per-channel terms tiled over `rows`
    rows): float64 for h, int32 for the rest; exact for |a| <= `limit`."""

    k1: np.ndarray  # float64
    c1: np.ndarray  # float64
    r: np.ndarray  # int32
    e: np.ndarray | int  # int32 per element, or one shift for all
    sign: np.ndarray | bool  # apply the sign term: everywhere (True), nowhere (False), or an int32 mask
    lo: int
    hi: int
    limit: float
    lifted: bool = False  # c1 and r hold the lift by 2^LIFT_BITS (no floor pass); the mask is then 1 where e = 0

    @staticmethod
    def of(stage: im.OutputStage, channels: int, offset: np.ndarray | None, rows: int) -> FixedStage | None:
        """`stage` (parameters along the last axis) applied to a + offset, or None where it
        does not apply (pow2, a leaky slope, shifts beyond MAX_INT32_STAGE_SHIFT)."""
        requant = stage.requant
        if requant.scheme != "fixed" or stage.negative is not None:
            return None
        m = per_channel(requant.multipliers, channels, np.float64)
        s = per_channel(requant.shifts, channels, np.int64)
        left, e = np.maximum(-s, 0), np.maximum(s, 0)
        if e.max(initial=0) > MAX_INT32_STAGE_SHIFT:
            return None
        scaled = m * np.exp2(left.astype(np.float64))  # M', exact
        off = per_channel(offset, channels, np.float64)
        spread = float(np.abs(off).max(initial=0))
        k1 = scaled * 2.0**-31
        no_saturation = im.INT32_MAX / float(np.exp2(left.max(initial=0)))  # x << left stays in int32
        lifted = bool(e.max(initial=0) <= MAX_FIXED_SHIFT and spread * float(scaled.max(initial=0)) < FLOAT64_EXACT / 4)
        if lifted:
            # |offset M'| < 2^51, so beyond |x M'| < 2^53, |a K1| >= 1.5 * 2^21 while |C1| < 2^20 + 1/2:
            # |h| >= 2^21 - 1 and the result saturates (|h| / 2^e > 2^9) however v rounds;
            # h + R must only stay in int32.
            limit = min(no_saturation, (2.0**30 - 2.0**21) / max(float(k1.max(initial=0)), 2.0**-31)) - spread
        else:
            limit = min(no_saturation, (FLOAT64_EXACT - 1) / max(float(scaled.max(initial=1)), 1.0)) - spread
        r = np.where(e > 0, np.left_shift(1, np.maximum(e - 1, 0)), 0) + stage.zero_point * np.left_shift(1, e)
        clamped_below = stage.lo >= stage.zero_point
        sign: np.ndarray | bool = False
        if not clamped_below and np.any(e > 0):
            mask = np.where(e > 0, 0, 1) if lifted else np.where(e > 0, -1, 0)
            sign = True if np.all(e > 0) else np.tile(mask, rows).astype(np.int32)
        lift = (1 << LIFT_BITS) if lifted else 0
        if lifted:
            r = r - lift - (1 if sign is not False else 0)
        shifts: np.ndarray | int = int(e[0]) if np.all(e == e[0]) else np.tile(e, rows).astype(np.int32)
        return FixedStage(np.tile(k1, rows), np.tile(0.5 + lift + off * k1, rows), np.tile(r, rows).astype(np.int32),
                          shifts, sign, stage.lo, stage.hi, limit, lifted)

    def store(self, a: np.ndarray, out: np.ndarray) -> None:
        """On the flat slab `a` into the flat 8-bit `out`."""
        n = a.size
        v, h = scratch(n, np.dtype(np.float64), np.dtype(np.int32))
        np.copyto(v, a)  # then multiply within one type: faster than a mixed-type multiply
        v *= self.k1[:n]
        v += self.c1[:n]
        if not self.lifted:
            np.floor(v, out=v)
        h[...] = v  # lifted: the truncating cast is the floor (see above)
        if self.sign is not False:
            t = scratch_one(n, np.int32)
            np.right_shift(h, LIFT_BITS if self.lifted else 31, out=t)  # 1 - [h < 0] (lifted), or -[h < 0]
            if self.sign is not True:
                if self.lifted:
                    t |= self.sign[:n]  # type: ignore[index]
                else:
                    t &= self.sign[:n]  # type: ignore[index]
            h += t
        h += self.r[:n]
        np.right_shift(h, self.e if isinstance(self.e, int) else self.e[:n], out=h)
        clip(h, self.lo, self.hi, out=h)
        out[...] = h


# ---------------------------------------------------------------------------------------
# The fixed scheme's output stage in float32, its few doubtful roundings redone exactly
# ---------------------------------------------------------------------------------------
#
# For shifts s = e >= 0 (no left shift) and x = a + offset in int32, the stage is
# clip(floor(X - [P < -2^30] 2^-e), lo, hi) with X = a K + C, K = M0 / 2^(31+e) and
# C = 1/2 + 2^-(e+1) [e > 0] + z + offset K (the single floor derived above; the tie term only
# where e > 0 and the clamp is below the zero point). CheckedStage evaluates, with the base
# E = 512 + (lo mod 256),
#     t = fl32(fl32(a K32) + C32),   K32 = fl32(K),   C32 = fl32(C - lo + E + d)
# in float32. While X - lo lies in [-1, H + 3] (H = hi - lo <= 255), |a K| <= B = H + 4 + |C - lo|
# and each of the four roundings (K32, the product, C32, the sum, which stays below 1100) is
# at most 2^-24 of its operand, so |t - (X - lo + E + d)| <= 2^-23 (B + |C - lo| + 1100) =: d,
# per channel: t - E lies in [X - lo, X - lo + 2d]. A float32 t in [512, 1024) has bits >> 14
# = 0x11000 + floor(t) - 512 and its low 14 bits are frac(t) exactly, in units of 2^-14; the
# bits of floats are monotone as int32 (negative floats negative), so clip(bits >> 14, F, F + H)
# with F = 0x11000 + E - 512 is F + clip(floor(t - E), 0, H) for every t, and its byte, F being
# lo modulo 256, is the result modulo 256. In [512, 1024), where frac(t) >= 2d + Z (Z = 2^-e where
# the tie term applies, else 0), X - lo lies in [k + Z, k + 1) for k = floor(t - E), so both
# floors are k. Beyond: t >= 1024 means X - lo > H + 1 and t < 512 means X - lo < 0, so both clip
# alike whatever the low bits say. Accumulators beyond that range of X only saturate: K < 1 and
# the float ops are monotone in a, so t is beyond the t of the last accumulator inside it. The
# rest, the elements with frac(t) < 2d + Z (about 2^-e of those a relu does not clamp), are
# flagged and go through `requantize` in int64 (a saturated element may be flagged too: it is
# redone, exactly).

CHECKED_FRACTION_BITS = 14
CHECKED_BINADE = 512  # t + 512 + (lo mod 256) keeps every unsaturated value in float32's [512, 1024)


@dataclass(frozen=True)
class CheckedStage:
    """The fixed scheme's output stage in float32 on flat slabs (per-channel terms tiled over
    `rows` rows), with flags for the elements to redo exactly; for |a + offset| < 2^31."""

    k: np.ndarray  # float32, tiled
    c: np.ndarray  # float32, tiled: C - lo + E + d
    threshold: np.ndarray  # int32: ceil((2d + Z) 2^14), tiled, or its largest value alone where no tie term varies it
    lo: int
    hi: int
    zero_point: int
    ties: bool  # the tie term applies somewhere
    # `redo`'s terms, int64 (channels, 5): M0, 2^30 + 2^(30+e) [e > 0], 31 + e, the tie's 2^31 or 0, offset.
    # Its own form of `requantize`, one gather of a row of terms per element: `output_stage` with
    # per-element parameters (Requant.take) measured a third slower (127 against 94 us for 1339
    # flagged elements), ResNet-50's int8 run 3 ms slower at two threads.
    exact_terms: np.ndarray
    limit: float = float(im.INT32_MAX)

    @staticmethod
    def of(stage: im.OutputStage, channels: int, offset: np.ndarray | None, rows: int) -> CheckedStage | None:
        """`stage` (parameters along the last axis) applied to a + offset, or None where it does
        not apply (pow2, a leaky slope, left shifts, a clamp range over 255, rounding too coarse)."""
        requant = stage.requant
        top = stage.hi - stage.lo
        if requant.scheme != "fixed" or stage.negative is not None or top > 255:
            return None
        m = per_channel(requant.multipliers, channels, np.int64)
        e = per_channel(requant.shifts, channels, np.int64)
        if e.min(initial=0) < 0 or e.max(initial=0) > 30:
            return None
        off = per_channel(offset, channels, np.int64)
        k = m * np.exp2(-31.0 - e)
        c = np.exp2(-1.0 - e) + np.where(e > 0, 0.5, 0.0) + (stage.zero_point - stage.lo) + off * k
        d = 2.0**-23 * ((top + 4 + np.abs(c)) + np.abs(c) + 1100)
        tie = stage.lo < stage.zero_point
        z = np.where(e > 0, np.exp2(-e.astype(np.float64)), 0.0) if tie else 0.0
        threshold = 2 * d + z
        if threshold.max(initial=0) > 0.25:
            return None
        halves = (1 << 30) + np.where(e > 0, np.left_shift(1, 30 + e), 0)
        exact = np.stack([m, halves, 31 + e, np.where((e > 0) & tie, 1 << 31, 0), off], axis=1)
        units = np.ceil(threshold * 2**CHECKED_FRACTION_BITS).astype(np.int32)
        # Without the tie term the channels' thresholds differ little: their largest, unrepeated, is a cheaper compare.
        flag_below = np.tile(units, rows) if tie else units.max(initial=0, keepdims=True)
        return CheckedStage(np.tile(k.astype(np.float32), rows),
                            np.tile((c + CHECKED_BINADE + stage.lo % 256 + d).astype(np.float32), rows), flag_below,
                            stage.lo, stage.hi, stage.zero_point, bool(np.any(exact[:, 3])), exact,
                            float(im.INT32_MAX - np.abs(off).max(initial=0)))

    def store(self, a: np.ndarray, out: np.ndarray, flags: np.ndarray) -> None:
        """On the flat float32 `a` into the flat 8-bit `out`, slab by slab (the tiles' length:
        a whole number of rows); `flags` (bool, a's size) marks the elements `redo` must
        recompute. The per-slab work is seven NumPy calls, positional outs, nothing else."""
        step = self.k.size
        t, bits = scratch(step, np.dtype(np.float32), np.dtype(np.int32))
        raw = t.view(np.int32)
        k, c, threshold = self.k, self.c, self.threshold
        bottom = (np.float32(CHECKED_BINADE).view(np.int32) >> CHECKED_FRACTION_BITS) + np.int32(self.lo % 256)  # lo mod 256
        top = bottom + np.int32(self.hi - self.lo)
        mask, shift = np.int32((1 << CHECKED_FRACTION_BITS) - 1), np.int32(CHECKED_FRACTION_BITS)
        out_bytes = out.view(np.uint8)
        for i in range(0, a.size, step):
            j = min(i + step, a.size)
            if j - i < step:  # the last, shorter slab
                n = j - i
                k, c, threshold, t, bits, raw = k[:n], c[:n], threshold[: n if threshold.size > 1 else 1], t[:n], bits[:n], raw[:n]
            np.multiply(a[i:j], k, t)
            np.add(t, c, t)
            np.bitwise_and(raw, mask, bits)
            np.less(bits, threshold, flags[i:j])
            np.right_shift(raw, shift, raw)
            clip(raw, bottom, top, raw)
            np.copyto(out_bytes[i:j], raw, casting="unsafe")  # F + result - lo: the byte is the result's

    def redo(self, a: np.ndarray, out: np.ndarray, flags: np.ndarray, channels: int) -> None:
        """Recompute the flagged elements of the flat `a` (rows of `channels`) in int64:
        `requantize`'s one floor, (P + 2^30 + 2^(30+e) - [P < -2^30] 2^31) >> (31 + e) for
        P = (a + offset) M0, with per-channel terms looked up per element."""
        where = flagged(flags)
        if where.size == 0:
            return
        channel = where & (channels - 1) if channels & (channels - 1) == 0 else where % channels
        multiplier, halves, shift, tie, offset = np.take(self.exact_terms, channel, axis=0).T
        p = np.take(a, where).astype(np.int64)
        p += offset
        p *= multiplier
        p += halves
        if self.ties:
            np.subtract(p, tie, out=p, where=p < halves - (1 << 30))  # P < -2^30: ties go down
        p >>= shift
        p += self.zero_point
        out[where] = clip(p, self.lo, self.hi, out=p)


def flagged(flags: np.ndarray) -> np.ndarray:
    """np.flatnonzero(flags) for a sparse bool array, faster: its nonzero 8-byte words first."""
    n = flags.size
    whole = n - n % 8
    words = flags[:whole].view(np.uint64)
    busy = np.flatnonzero(words != 0)
    within = np.flatnonzero(np.take(words, busy).view(bool))
    hits = busy[within >> 3] * 8 + (within & 7)
    if whole == n:
        return hits
    return np.concatenate([hits, whole + np.flatnonzero(flags[whole:])])


def float_stage(stage: im.OutputStage, channels: int, offset: np.ndarray | None) -> FloatStage | None:
    """`stage` (parameters along the last axis) applied to a + offset as a FloatStage, exact
    for |a| up to its `limit`; None when no magnitude would be exact."""
    off = per_channel(offset, channels, np.float64)
    spread = float(np.abs(off).max(initial=0))
    main = requant_terms(stage.requant, channels, stage.lo >= stage.zero_point)
    if main is None:
        return None
    k, half, t, d, limit = main
    r = stage.requant
    if r.scheme == "fixed" and t is None and stage.negative is None:
        m = per_channel(r.multipliers, channels, np.float64)
        s = per_channel(r.shifts, channels, np.int64)
        scaled = float((m * np.exp2(np.maximum(-s, 0).astype(np.float64))).max(initial=0))
        if s.max(initial=0) <= MAX_SATURATING_SHIFT and spread * scaled < FLOAT64_EXACT / 4:
            # Beyond |x M'| < 2^53, |a K| >= 1.5 * 2^(21-e) while the constant's offset part stays
            # below 2^(20-e): |y| > 2^(21-e) - 2^9 >= 1536 clips to the right end however it rounds.
            limit = im.INT32_MAX / float(np.exp2(np.maximum(-s, 0).max(initial=0)))
    negative = None
    if stage.negative is not None:
        neg = requant_terms(stage.negative, channels, False)
        if neg is None:
            return None
        nk, nhalf, nt, nd, neg_limit = neg
        limit = min(limit, neg_limit)
        negative = FloatStage(nk, nhalf + stage.zero_point + off * nk, None if nt is None else nt - off, nd,
                              stage.lo, stage.hi)
    return FloatStage(k, half + stage.zero_point + off * k, None if t is None else t - off, d, stage.lo, stage.hi,
                      negative, -off if negative is not None else None, limit - spread,
                      single_limit(stage, channels, off) if negative is None and t is None else -1.0)


def single_limit(stage: im.OutputStage, channels: int, off: np.ndarray) -> float:
    """The largest |a| for which a pow2 stage is exact in float32 (-1: never): a m 2^-s and
    the constant are multiples of 2^-s, so their sum is exact while its numerator
    |a m + off m + 2^(s-1) + (z - lo) 2^s| stays below 2^24."""
    r = stage.requant
    if r.scheme != "pow2":
        return -1.0
    m = per_channel(r.multipliers, channels, np.float64)
    s = per_channel(r.shifts, channels, np.float64)
    spread = abs(stage.zero_point - stage.lo)
    numerator = np.abs(off) * m + np.where(s > 0, np.exp2(s - 1), 0.0) + spread * np.exp2(np.maximum(s, 0))
    limits = np.where(s >= 0, (FLOAT32_EXACT - 1 - numerator) / m,
                      (FLOAT32_EXACT - 1 - spread) * np.exp2(s) - np.abs(off))
    return float(limits.min(initial=np.inf))


def requant_terms(r: im.Requant, channels: int, clamped_below: bool) -> tuple | None:
    """(K, the constant, T, D, the largest exact |a + offset|) of one requantization (see
    above), or None if its shifts are too long to be exact."""
    m = per_channel(r.multipliers, channels, np.float64)
    s = per_channel(r.shifts, channels, np.int64)
    if r.scheme == "pow2":
        if s.max(initial=0) > MAX_POW2_SHIFT:
            return None
        limit = (FLOAT64_EXACT - 1) / max(float(m.max(initial=1)), 1.0)
        return m * np.exp2(-s.astype(np.float64)), np.where(s > 0, 0.5, 0.0), None, None, limit
    left, e = np.maximum(-s, 0), np.maximum(s, 0)
    scaled = m * np.exp2(left.astype(np.float64))
    if e.max(initial=0) > MAX_FIXED_SHIFT:
        return None
    # No int32 saturation in the left shift, and a' M0 below 2^53.
    limit = min(im.INT32_MAX / float(np.exp2(left.max(initial=0))),
                (FLOAT64_EXACT - 1) / max(float(scaled.max(initial=1)), 1.0))
    k = scaled * np.exp2(-31.0 - e)
    half = np.exp2(-1.0 - e) + np.where(e > 0, 0.5, 0.0)
    if clamped_below or not np.any(e > 0):  # the tie correction only moves negative results
        return k, half, None, None, limit
    # a M0' < -2^30 for an integer a is a <= ceil(-2^30 / M0') - 1: compare with that + 1/2,
    # exact in float32 too.
    threshold = np.where(scaled > 0, np.ceil(-(2.0**30) / np.where(scaled > 0, scaled, 1.0)) - 0.5, -np.inf)
    return k, half, threshold, np.where(e > 0, np.exp2(-e.astype(np.float64)), 0.0), limit


# ---------------------------------------------------------------------------------------
# Exact integer sums in float BLAS
# ---------------------------------------------------------------------------------------


def centred(a: np.ndarray, zero_point: int) -> np.ndarray:
    """`a - zero_point` as float32 (exact: 8-bit values and zero points)."""
    c = a.astype(np.float32)
    if zero_point:
        c -= np.float32(zero_point)
    return c


def centred_weight(w: np.ndarray, zero_point: int) -> np.ndarray:
    """`centred` for a read-only weight, computed once per weight array."""
    return derived(w, f"qnn-centred{zero_point}", lambda a: centred(a, zero_point))


def weight_facts(w: np.ndarray, zero_point: int) -> tuple[int, np.ndarray]:
    """max |w - z_w| and the per-output-channel sums of w - z_w (axis 0), once per weight."""
    facts = derived(w, f"qnn-facts{zero_point}", lambda a: np.concatenate(
        [[max_abs(a.astype(np.int64) - zero_point)], (a.astype(np.int64) - zero_point).reshape(a.shape[0], -1).sum(axis=1)]))
    return int(facts[0]), facts[1:]


def chunk_count(k: int, bound: int) -> int:
    """How many chunks a K-long reduction of products bounded by `bound` needs so that
    each chunk's partial sums are exact in float32 (0: not even float64 is exact)."""
    if k * bound < FLOAT32_EXACT:
        return 1
    if k * bound >= FLOAT64_EXACT:
        return 0
    per_chunk = max(1, (FLOAT32_EXACT - 1) // max(bound, 1))
    return math.ceil(k / per_chunk)


def exact_matmul(a: np.ndarray, b: np.ndarray, product_bound: int | None = None) -> np.ndarray:
    """a @ b (numpy.matmul, batched) of float arrays holding integers, exactly: float32 BLAS
    on chunks of the inner axis, summed in float64; int64 beyond float64's reach.
    `product_bound`: max|a| * max|b| when the caller knows it (else measured here)."""
    if b.ndim == 1:
        return exact_matmul(a, b[:, None], product_bound)[..., 0]
    k = a.shape[-1]
    chunks = chunk_count(k, max_abs(a) * max_abs(b) if product_bound is None else product_bound)
    if chunks == 0:
        return np.matmul(a.astype(np.int64), b.astype(np.int64))
    if chunks == 1:
        return np.matmul(a, b)
    step = math.ceil(k / chunks)
    total = np.matmul(a[..., :step], b[..., :step, :]).astype(np.float64)
    for k0 in range(step, k, step):
        total += np.matmul(a[..., k0 : k0 + step], b[..., k0 : k0 + step, :])
    return total


def channel_chunks(w: np.ndarray, zero_point: int, x_bound: int) -> tuple[list[tuple[int, int]], int]:
    """Input-channel ranges of a conv weight (M, C, kh, kw) whose partial sums stay exact in
    float32, and a bound on every accumulator. Whatever order BLAS sums in, a partial sum is
    at most max|x| * sum |w - z_w| over the taps summed (the triangle inequality), so each
    range keeps x_bound * max over output channels of its weights' L1 norm below 2^24;
    far fewer chunks than K * max|x| * max|w| asks. Kept per weight."""

    def make(a: np.ndarray) -> np.ndarray:
        l1 = np.abs(a.astype(np.int64) - zero_point).reshape(a.shape[0], a.shape[1], -1).sum(axis=2)
        prefix = np.concatenate([np.zeros((a.shape[0], 1), np.int64), np.cumsum(l1, axis=1)], axis=1)
        limit = (FLOAT32_EXACT - 1) // max(x_bound, 1)
        ends, start = [], 0
        while start < a.shape[1]:
            reach = (prefix[:, start + 1 :] - prefix[:, start : start + 1]).max(axis=0)  # non-decreasing
            end = start + max(1, int(np.searchsorted(reach, limit, side="right")))
            ends.append(end)
            start = end
        return np.array([int(prefix[:, -1].max()) * x_bound, *ends], np.int64)

    facts = derived(w, f"qnn-chunks{zero_point}-{x_bound}", make)
    starts = [0, *facts[1:-1].tolist()]
    return list(zip(starts, facts[1:].tolist(), strict=True)), int(facts[0])


def conv_attributes(op: qnn.Conv2dOp) -> tuple:
    """Strides, pads, dilations, group, output (H, W), z_x and z_w of a qnn conv."""
    return (nn.int_list(op.strides), nn.int_list(op.pads), nn.int_list(op.dilations), int(op.group.value.data),
            _result_shape(op)[2:], op.input_quantization()[1], qnn.ival(op.weight_zero_point) or 0)


# A stride-1 convolution of one image as one GEMM per kernel tap, accumulated into one output:
# in the padded channels-last input flattened to rows of C values, output pixel (y, x) is the
# sum over taps (i, j) of row (y + i) Wp + x + j times that tap's (C, M) weights, so each tap's
# left operand is a contiguous run of the input's own rows, not an im2col copy. The GEMMs run
# over all Wp columns of each output row; the last kw - 1 straddle the next row (sums of inputs
# all the same, so within the bound) and are dropped after the output stage. Every partial sum,
# within a GEMM or across them, is a sum of some of the products x * w: the bound that makes the
# one im2col GEMM exact in float32 makes these exact too. Measured on ResNet-50's 3x3 layers:
# up to 128 input channels faster than im2col (64 channels at 56x56: 2.0 against 2.3 ms on one
# thread, 1.1 against 2.3 on two, where these GEMMs split better); beyond, slower.
SHIFTED_MAX_CHANNELS = 128


def shifted_applies(x_shape: tuple[int, ...], w_shape: tuple[int, ...], strides: list[int], dilations: list[int],
                    group: int) -> bool:
    return (x_shape[0] == 1 and group == 1 and w_shape[1] <= SHIFTED_MAX_CHANNELS and w_shape[2] * w_shape[3] > 1
            and list(strides) == [1, 1] and list(dilations) == [1, 1])


def shifted_conv2d(x: np.ndarray, wc: np.ndarray, zx: int, pads: list[int], out_hw: tuple[int, ...]) -> np.ndarray:
    """The exact conv of the one image `x` (stride 1) by the centred weight `wc` as a
    channels-last (1, OH, Wp, M) array whose first OW columns are the result (see above)."""
    m, c, kh, kw = wc.shape
    xp = pad_nhwc(x, pads, zx, extra=(1, 0)).astype(np.float32)  # a row more: the last tap reads kw - 1 past the map
    wide = xp.shape[2]
    rows = out_hw[0] * wide
    flat = xp.reshape(-1, c)
    taps = hwio_weights(wc).reshape(kh, kw, c, m)  # tap (i, j)'s (C, M) weights, contiguous
    acc = np.empty((rows, m), np.float32)
    for i in range(kh):
        for j in range(kw):
            start = i * wide + j
            gemm(flat[start : start + rows], taps[i, j], out=acc, accumulate=i > 0 or j > 0)
    return acc.reshape(1, out_hw[0], wide, m)


def exact_conv2d(x: np.ndarray, w: np.ndarray, op: qnn.Conv2dOp) -> tuple[np.ndarray, int]:
    """sum x * (w - z_w) over each window of `x` padded with its zero point, as a
    channels-last (N, OH, OW, M) array of exact integers (or (N, OH, OW', M) with OW' > OW,
    the first OW columns the result: `shifted_conv2d`), and the bound on its magnitude."""
    strides, pads, dilations, group, out_hw, zx, zw = parameters(op, "conv", lambda: conv_attributes(op))
    wc = centred_weight(w, zw)
    x_bound = 128 if x.dtype == np.int8 else max(abs(v) for v in im.int_range(x.dtype))
    chunks, bound = channel_chunks(w, zw, x_bound)
    if len(chunks) == 1 and shifted_applies(x.shape, w.shape, strides, dilations, group):
        return shifted_conv2d(x, wc, zx, pads, out_hw), bound
    xp = as_nchw(pad_nhwc(x, pads, zx).astype(np.float32))  # padding holds z_x, i.e. real 0
    no_pads = (0, 0, 0, 0)
    if len(chunks) == 1:
        return conv2d(xp, wc, strides, no_pads, dilations, group, out_hw), bound
    if bound >= FLOAT64_EXACT:
        raise UnsupportedError(f"convolution sums bounded by {bound} are not exact in float64")
    if group > 1:  # grouped convs have short reductions: this rare rest is float64
        return conv2d(xp.astype(np.float64), wc.astype(np.float64), strides, no_pads, dilations, group, out_hw), bound
    # conv(x, w) is the sum of the convs of input-channel slices.
    total: np.ndarray | None = None
    for c0, c1 in chunks:
        part = conv2d(xp[:, c0:c1], wc[:, c0:c1], strides, no_pads, dilations, 1, out_hw)
        total = part.astype(np.float64) if total is None else np.add(total, part, out=total)
    assert total is not None
    return total, bound


# ---------------------------------------------------------------------------------------
# Output stage, slab by slab
# ---------------------------------------------------------------------------------------


def slabs(rows: int, cols: int) -> list[slice]:
    step = max(1, SLAB_ELEMENTS // max(cols, 1))
    return [slice(r0, r0 + step) for r0 in range(0, rows, step)]


T = TypeVar("T")
PARAMETERS: weakref.WeakKeyDictionary[Operation, tuple[tuple, dict[str, Any]]] = weakref.WeakKeyDictionary()


def parameters(op: Operation, name: str, read: Callable[[], T]) -> T:
    """`read()` (an op's stages or quantizations, which the qnn helpers decode from its
    array properties element by element), kept per op while its properties stay the same
    objects: the executor runs the same ops again and again."""
    current = tuple(op.properties.values())
    entry = PARAMETERS.get(op)
    if entry is None or len(entry[0]) != len(current) or any(a is not b for a, b in zip(entry[0], current, strict=True)):
        entry = (current, {})
        PARAMETERS[op] = entry
    if name not in entry[1]:
        entry[1][name] = read()
    return entry[1][name]


Compiled = tuple[FloatStage | None, FloatStage | FixedStage | None, FloatStage | None, CheckedStage | None]
STAGES: weakref.WeakKeyDictionary[Operation, dict[tuple, Compiled]] = weakref.WeakKeyDictionary()


def compiled_stage(op: Operation, stage: im.OutputStage, cols: int, offset: np.ndarray | None, rows: int,
                   acc_type: np.dtype) -> Compiled:
    """The FloatStage of an op's output stage and its tiled forms (float64, float32), kept
    per op (its parameters and offsets are constants)."""
    key = (cols, rows, acc_type.str, None if offset is None else offset.tobytes())
    cache = STAGES.setdefault(op, {})
    if key not in cache:
        fast = float_stage(stage, cols, offset)
        fixed = FixedStage.of(stage, cols, offset, rows)
        # The float64 floor is faster without a tie correction (under a relu clamp, or where
        # every shift is 0); FixedStage's int32 sign term is faster than the float one.
        tiled: FloatStage | FixedStage | None = None if fast is None else fast.tiled(rows, acc_type)
        if fixed is not None and (tiled is None or fixed.sign is not False):
            tiled = fixed
        single = None if fast is None or acc_type != np.float32 else fast.tiled(rows, acc_type, single=True)
        checked = CheckedStage.of(stage, cols, offset, rows) if acc_type == np.float32 else None
        cache[key] = (fast, tiled, single, checked)
    return cache[key]



def staged_rows(op: Operation, acc: np.ndarray, stage: im.OutputStage, dtype: np.dtype, offset: np.ndarray | None,
                bound: int) -> np.ndarray:
    """The output stage (per-channel parameters along axis 1) of acc + offset over the rows
    of a 2-d accumulator (|acc| <= bound), slab by slab, into a fresh `dtype` array."""
    rows, cols = acc.shape
    out = np.empty((rows, cols), dtype=dtype)
    parts = slabs(rows, cols)
    fast, tiled, single, checked = compiled_stage(op, stage, cols, offset, parts[0].stop - parts[0].start, acc.dtype)
    if dtype.itemsize != 1 or not acc.flags.c_contiguous:
        tiled = single = checked = None
    if checked is not None and bound <= checked.limit:
        flags = scratch_one(acc.size, np.bool_)
        flat_acc, flat_out = acc.reshape(-1), out.reshape(-1)
        checked.store(flat_acc, flat_out, flags)
        checked.redo(flat_acc, flat_out, flags, cols)
        return out
    best = next((s for s in (single, tiled, fast) if s is not None), None)
    if best is not None and bound > best.limit:
        # The actual magnitude lets more layers take the faster paths (two passes over acc:
        # only when the fastest path's bound asks for them).
        bound = min(bound, max_abs(acc))
    if fast is not None and bound > fast.limit:
        fast = None
    if tiled is not None and bound > tiled.limit:
        tiled = None
    if single is not None and bound <= single.limit:
        tiled = single

    def work(part: slice) -> None:
        block = acc[part]
        if tiled is not None:
            tiled.store(block.reshape(-1), out[part].reshape(-1))
        elif fast is not None:
            out[part] = fast.evaluate(block, np.empty(block.shape))
        else:
            a = block.astype(np.int64)
            if offset is not None:
                a += offset
            out[part] = output_stage(a, stage)

    for part in parts:
        work(part)
    return out


def flat(a: np.ndarray) -> np.ndarray | None:
    """`a`'s elements in memory order as a 1-d view, or None if `a` is not contiguous."""
    f = np.ravel(a, order="K")
    return f if a.size <= 1 or np.shares_memory(f, a) else None


def staged_flat(arrays: list[np.ndarray], fn: Callable[..., np.ndarray], dtype: np.dtype) -> np.ndarray:
    """`fn(*slabs)` over same-shaped arrays, slab by slab in memory order
    when they share a layout, into an array of that layout; else in one piece."""
    first = arrays[0]
    out = np.empty_like(first, dtype=dtype)
    flats = [flat(a) for a in arrays]
    flat_out = flat(out)
    if flat_out is None or any(f is None or a.strides != first.strides for f, a in zip(flats, arrays, strict=True)):
        return fn(*arrays).astype(dtype)

    def work(part: slice) -> None:
        flat_out[part] = fn(*(f[part] for f in flats))  # type: ignore[index]

    for i in range(0, first.size, SLAB_ELEMENTS):
        work(slice(i, i + SLAB_ELEMENTS))
    return out


def byte_values(dtype: np.dtype) -> np.ndarray:
    """The 8-bit values in the order of their bytes (0..255): a table indexed by a tensor's
    bytes (`x.view(np.uint8)`) maps each value without any arithmetic."""
    return np.arange(256, dtype=np.uint8).view(dtype).astype(np.int64)


def lookup(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """table[byte of x] for each element of the 8-bit `x`, in x's memory layout."""
    return staged_flat([x.view(np.uint8)], lambda b: np.take(table, b), table.dtype)


def result_dtype(op: Operation) -> np.dtype:
    return dtype_of(op.results[0].type)


def finish_contraction(op: qnn.ContractionOp, acc: np.ndarray, offset: np.ndarray | None, bound: int) -> np.ndarray:
    """The result of a contraction from its exact accumulator (channels on the last axis),
    the per-channel integer `offset` to add (bias, zero-point share) and a bound on the
    accumulator's magnitude without the offset: the output stage, or the int32
    accumulator itself for an i32 result."""
    dtype = result_dtype(op)
    rows = acc.reshape(-1, acc.shape[-1]) if acc.ndim else acc.reshape(1, 1)
    if op.scale is None:  # i32 result: the accumulator (ONNX ConvInteger / MatMulInteger)
        out = rows.astype(np.int64)
        if offset is not None:
            out += offset
        im.check_int32(out, "accumulator")
        return out.astype(dtype).reshape(acc.shape)
    stage = parameters(op, "stage-rows", lambda: op.output_stage().along(2, 1))
    spread = max_abs(offset) if offset is not None else 0
    if bound + spread > im.INT32_MAX:
        bound = min(bound, max_abs(rows))
    if bound + spread > im.INT32_MAX:
        # The accumulator might leave int32: the spec's own implementation checks it.
        return stage(rows.astype(np.int64) + (0 if offset is None else offset)).astype(dtype).reshape(acc.shape)
    return staged_rows(op, rows, stage, dtype, offset, bound).reshape(acc.shape)


def bias_of(args: list[np.ndarray], index: int) -> np.ndarray | None:
    return args[index].astype(np.int64) if len(args) > index else None


def plus(a: np.ndarray | None, b: np.ndarray) -> np.ndarray:
    return b if a is None else a + b


# ---------------------------------------------------------------------------------------
# Boundary ops
# ---------------------------------------------------------------------------------------


@kernel(qnn.QuantizeOp)
def _quantize(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, qnn.QuantizeOp)
    scale, zero_point = op.result_quantization() or (1.0, 0)
    return [im.quantize(args[0], scale, zero_point, *op.result_range())]


@kernel(qnn.DequantizeOp)
def _dequantize(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, qnn.DequantizeOp)
    return [im.dequantize(args[0], float(op.scale.value.data), int(op.zero_point.value.data))]


# ---------------------------------------------------------------------------------------
# Contractions
# ---------------------------------------------------------------------------------------


def weight_zero_point(op: qnn.ContractionOp) -> int:
    return qnn.ival(op.weight_zero_point) or 0


@kernel(qnn.Conv2dOp)
def _conv2d(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, qnn.Conv2dOp)
    x, w = args[0], args[1]
    acc, bound = exact_conv2d(x, w, op)
    y = finish_contraction(op, acc, conv_offset(op, w, args[2] if len(args) > 2 else None), bound)
    width = parameters(op, "conv", lambda: conv_attributes(op))[4][1]
    if y.shape[2] != width:  # shifted_conv2d's extra columns
        y = np.ascontiguousarray(y[:, :, :width])
    return [as_nchw(y)]


def conv_offset(op: qnn.Conv2dOp, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray | None:
    """The per-channel integer a conv adds to its accumulator: bias - z_x * sum(w - z_w),
    kept per op while it gets the same (read-only) weight and bias arrays."""
    seen: dict[str, tuple] = parameters(op, "offset", dict)
    hit = seen.get("last")
    if hit is not None and hit[0] is w and hit[1] is bias:
        return hit[2]
    _, zx = op.input_quantization()
    _, sums = weight_facts(w, weight_zero_point(op))
    offset = None if bias is None else bias.astype(np.int64)
    if zx:
        offset = plus(offset, -zx * sums)
    if offset is not None:
        offset.flags.writeable = False
    if not w.flags.writeable and (bias is None or not bias.flags.writeable):
        seen["last"] = (w, bias, offset)
    return offset


def product_bound(a: np.ndarray, b: np.ndarray, raw_b: np.ndarray, zero_point: int) -> int:
    """max|a| * max|b| for b = centred(raw_b, zero_point): a weight's maximum is taken once
    (weight_facts), not per run (the final FC's weights outnumber its inputs 1000 to 1)."""
    return max_abs(a) * (max_abs(b) if raw_b.flags.writeable else weight_facts(raw_b, zero_point)[0])


def contraction(a: np.ndarray, b: np.ndarray, raw_b: np.ndarray, zero_point: int) -> tuple[np.ndarray, int]:
    """The exact a @ b and a bound on its magnitude: for a weight matrix, max|a| times the
    largest L1 norm of its columns (every partial sum is within it, as for convolutions), one
    float32 GEMM where that is below 2^24 (the final FC of ResNet-50: not K * max|a| * max|b|,
    which asked for two); else K * max|a| * max|b| and `exact_matmul`."""
    if b.ndim == 2 and not raw_b.flags.writeable:
        l1 = int(derived(raw_b, f"qnn-l1{zero_point}-{b.shape}-{b.strides}",  # b is raw_b centred, maybe transposed
                         lambda _: np.array([int(np.abs(b.astype(np.int64)).sum(axis=0).max(initial=0))]))[0])
        l1_bound = max_abs(a) * l1
        if l1_bound < FLOAT32_EXACT:
            return np.matmul(a, b), l1_bound
    bound = product_bound(a, b, raw_b, zero_point)
    return exact_matmul(a, b, bound), a.shape[-1] * bound


@kernel(qnn.GemmOp)
def _gemm(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, qnn.GemmOp)
    _, za = op.input_quantization()
    zw = weight_zero_point(op)
    b = centred_weight(args[1], zw)
    a, b = centred(args[0], za), b.T if int(op.trans_b.value.data) else b
    acc, bound = contraction(a, b, args[1], zw)
    return [finish_contraction(op, acc, bias_of(args, 2), bound)]


@kernel(qnn.MatMulOp)
def _matmul(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, qnn.MatMulOp)
    _, za = op.input_quantization()
    zw = weight_zero_point(op)
    a, b = centred(args[0], za), centred_weight(args[1], zw)
    acc, bound = contraction(a, b, args[1], zw)
    if b.ndim == 1:  # no channel axis: one parameter set, a channel axis of 1
        return [finish_contraction(op, acc[..., None], None, bound)[..., 0]]
    return [finish_contraction(op, acc, None, bound)]


# ---------------------------------------------------------------------------------------
# Elementwise
# ---------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def add_table(a_type: str, b_type: str, za: int, zb: int, scheme: str, operand: tuple, output: tuple,
              out_type: str = "<i2") -> np.ndarray:
    """The result of qnn.add for every pair of operand bytes, at [byte_a << 8 | byte_b]:
    one lookup per element instead of three requantizations (65536 entries, 64 KiB)."""
    ra = im.Requant.of(scheme, [operand[1][0]], [operand[0][0]])
    rb = im.Requant.of(scheme, [operand[1][1]], [operand[0][1]])
    stage = im.OutputStage(im.Requant.of(scheme, [output[1]], [output[0]]), *output[2:])
    qa, qb = byte_values(np.dtype(a_type)), byte_values(np.dtype(b_type))
    t = requantize(qa - za, ra)[:, None] + requantize(qb - zb, rb)[None, :]
    out = output_stage(t.reshape(-1), stage).astype(np.dtype(out_type))
    out.flags.writeable = False
    return out


@kernel(qnn.AddOp)
def _add(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    """A function of the two operand bytes: a table of all 65536 pairs (cached per
    parameters), indexed by byte_a << 8 | byte_b."""
    assert isinstance(op, qnn.AddOp)
    a, b = args
    dtype, shifted, table = parameters(op, f"add {a.dtype.str} {b.dtype.str}", lambda: add_plan(op, a.dtype, b.dtype))
    if shifted is not None and a.shape == b.shape:
        return [staged_flat([a, b], shifted, dtype)]
    a_bytes, b_bytes = a.view(np.uint8), b.view(np.uint8)
    if a.shape != b.shape:  # broadcasting: in one piece (the index takes the broadcast shape)
        qa, qb = np.broadcast_arrays(a_bytes, b_bytes)
        index = np.left_shift(qa, 8, dtype=np.uint16)
        index |= qb
        return [np.take(table, index)]
    out = np.empty_like(a, dtype=dtype)
    fa, fb, fo = flat(a_bytes), flat(b_bytes), flat(out)
    if a.strides != b.strides or fa is None or fb is None or fo is None:
        return [table[(a_bytes.astype(np.uint16) << 8) | b_bytes]]
    step = ADD_SLAB_ELEMENTS
    index, eight = scratch_one(step, np.uint16), np.uint16(8)
    for i in range(0, a.size, step):  # the index in one reused buffer, the gather into out
        j = min(i + step, a.size)
        if j - i < step:
            index = index[: j - i]
        np.left_shift(fa[i:j], eight, index, dtype=np.uint16)
        np.bitwise_or(index, fb[i:j], index)
        np.take(table, index, out=fo[i:j], mode="wrap")  # every uint16 is an index: no bounds to check
    return [out]


ADD_SLAB_ELEMENTS = 1 << 16  # measured on ResNet-50's adds: 65536 beat 32768 and 131072


def add_plan(op: qnn.AddOp, a_type: np.dtype, b_type: np.dtype) -> tuple[np.dtype, Callable | None, np.ndarray]:
    """An add's result type, its pow2 shift-and-add form (or None) and its table, read
    once per op and operand types."""
    (_, za), (_, zb) = op.input_quantizations()
    (ra, rb), stage, dtype = op.operand_requants(), op.output_stage(), result_dtype(op)
    operand = (tuple(int(r.multipliers.reshape(-1)[0]) for r in (ra, rb)),
               tuple(int(r.shifts.reshape(-1)[0]) for r in (ra, rb)))
    output = (int(stage.requant.multipliers.reshape(-1)[0]), int(stage.requant.shifts.reshape(-1)[0]),
              stage.zero_point, stage.lo, stage.hi)
    table = add_table(a_type.str, b_type.str, za, zb, stage.requant.scheme, operand, output, dtype.str)
    return dtype, pow2_shift_add(za, zb, (ra, rb), stage), table


def pow2_shift_add(za: int, zb: int, operands: tuple[im.Requant, im.Requant],
                   stage: im.OutputStage) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """qnn.add in the pow2 scheme as the quantize pass makes it (zero points 0, operands
    shifted left onto the finer scale, one rounding shift to the output, multipliers 1) as
    shifts and adds in int16 (int32 if the sum could leave int16): a few passes over 2-byte
    values instead of a gather per element. None for any other parameters."""
    (ra, rb), out = operands, stage.requant
    if out.scheme != "pow2" or stage.negative is not None or za or zb or stage.zero_point:
        return None
    if any(r.multipliers.size != 1 or int(r.multipliers.reshape(-1)[0]) != 1 for r in (ra, rb, out)):
        return None
    la, lb, s = -int(ra.shifts.reshape(-1)[0]), -int(rb.shifts.reshape(-1)[0]), int(out.shifts.reshape(-1)[0])
    if la < 0 or lb < 0 or s < 0:
        return None
    work = np.dtype(np.int16) if 255 * (2**la + 2**lb) + (1 << s >> 1) < 2**15 else np.dtype(np.int32)

    def add(qa: np.ndarray, qb: np.ndarray) -> np.ndarray:
        t, u = qa.astype(work), qb.astype(work)
        if la:
            np.left_shift(t, la, out=t)
        if lb:
            np.left_shift(u, lb, out=u)
        np.add(t, u, out=t)
        if s:
            np.add(t, 1 << (s - 1), out=t)  # round half up (spec section 3)
            np.right_shift(t, s, out=t)
        return clip(t, stage.lo, stage.hi, out=t)

    return add


def copies(stage: im.OutputStage, zero_point: int) -> bool:
    """A concat operand stage with identity parameters copies its operand (spec section 6)."""
    r = stage.requant
    if zero_point != stage.zero_point:
        return False
    if r.scheme == "pow2":
        return bool(np.all(r.shifts == 0) and np.all(r.multipliers == 1))
    return bool(np.all(r.multipliers == 2**30) and np.all(r.shifts == -1))


@kernel(qnn.ConcatOp)
def _concat(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, qnn.ConcatOp)
    dtype = result_dtype(op)
    parts = []
    stages = parameters(op, "operand stages", op.operand_stages)
    for x, (_, z), stage in zip(args, parameters(op, "inputs", op.input_quantizations), stages, strict=True):
        if copies(stage, z) and x.dtype == dtype:
            parts.append(x)
        else:  # a function of each byte: a table
            parts.append(lookup(x, output_stage(byte_values(x.dtype) - z, stage).astype(dtype)))
    return [np.concatenate(parts, axis=int(op.axis.value.data))]


@kernel(qnn.LutOp)
def _lut(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, qnn.LutOp)
    x, table = args
    lo, _ = qnn.type_range(nn.element_type_of(op.input)) or (0, 0)
    return [lookup(x, table[byte_values(x.dtype) - lo])]  # table[q - qmin], reordered by byte


@kernel(qnn.RequantizeOp)
def _requantize(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, qnn.RequantizeOp)
    x, (_, zx), stage, dtype = args[0], op.input_quantization(), parameters(op, "stage", op.output_stage), result_dtype(op)
    if x.dtype.itemsize == 1:  # 8-bit input: a table
        return [lookup(x, output_stage(byte_values(x.dtype) - zx, stage).astype(dtype))]
    return [staged_flat([x], lambda q: output_stage(q.astype(np.int64) - zx, stage), dtype)]


# ---------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------


@kernel(qnn.PoolOp)
def _pool(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, qnn.PoolOp)
    x = args[0]
    kh, kw = nn.int_list(op.kernel)
    strides, pads, dilations = nn.int_list(op.strides), nn.int_list(op.pads), nn.int_list(op.dilations)
    _, _, h, w = x.shape
    oh, ow = _result_shape(op)[2:]
    # ceil_mode may read rows / columns past the end padding: pad those too (never counted).
    extra = (
        max(0, (oh - 1) * strides[0] + (kh - 1) * dilations[0] + 1 - (h + pads[0] + pads[2])),
        max(0, (ow - 1) * strides[1] + (kw - 1) * dilations[1] + 1 - (w + pads[1] + pads[3])),
    )
    _, zx = op.input_quantization()
    if op.kind.data == "max":
        fill = np.iinfo(x.dtype).min  # padding never wins
        windows = window_view(pad_nhwc(x, pads, fill, extra), (kh, kw), strides, dilations, (oh, ow))
        # Tap by tap (whole maps, channels innermost): a fifth of the time of max over axes (3, 4).
        out = windows[:, :, :, 0, 0].copy()
        for i in range(kh):
            for j in range(kw):
                if i or j:
                    np.maximum(out, windows[:, :, :, i, j], out=out)
        return [as_nchw(out)]
    # Average: sum q - z_x over each window; padding holds z_x, so it adds 0.
    windows = window_view(pad_nhwc(x, pads, zx, extra), (kh, kw), strides, dilations, (oh, ow))
    sums = windows.sum(axis=(3, 4), dtype=np.int64) - kh * kw * zx
    lo, hi = (pads[:2], pads[2:]) if int(op.count_include_pad.value.data) else ((0, 0), (0, 0))
    count_h = window_counts(h, oh, kh, strides[0], dilations[0], pads[0], lo[0], hi[0])
    count_w = window_counts(w, ow, kw, strides[1], dilations[1], pads[1], lo[1], hi[1])
    counts = (count_h[:, None] * count_w[None, :])[None, :, :, None]
    stage = parameters(op, "stage", op.output_stage)
    per_window = im.OutputStage(stage.requant.take(counts - 1), stage.zero_point, stage.lo, stage.hi)
    return [as_nchw(output_stage(sums, per_window).astype(result_dtype(op)))]


@kernel(qnn.GlobalPoolOp)
def _global_pool(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, qnn.GlobalPoolOp)
    x = args[0]
    axes = tuple(range(2, x.ndim))
    if op.kind.data == "max":
        return [x.max(axis=axes, keepdims=True)]
    _, zx = op.input_quantization()
    n = math.prod(x.shape[2:])
    sums = x.sum(axis=axes, keepdims=True, dtype=np.int64) - n * zx
    return [output_stage(sums, parameters(op, "stage", op.output_stage))]  # its one parameter set divides by n
