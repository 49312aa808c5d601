"""The reference executor's qnn kernels: the spec's worked examples (docs/quantization.md)
run through the kernels, and random ops against a plain int64 NumPy reference (the
accumulator summed tap by tap in int64, then intmath's output stage)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Attribute, Block, Operation

from backends.reference import evaluate
from backends.reference.kernels import KERNELS, as_nchw, conv2d
from backends.reference.qnn_kernels import (
    CheckedStage,
    FixedStage,
    chunk_count,
    exact_matmul,
    float_stage,
    max_abs,
    output_stage,
    requantize,
    shifted_applies,
)
from compiler.quant import intmath as im
from compiler.tensors import tensor_type
from dialects import nn, qnn
from dialects.nn import f64attr, floats, i64attr, ints

SCHEMES = st.sampled_from(["pow2", "fixed"])


def run(op_class: type[Operation], arrays: list[np.ndarray], result: tuple[tuple[int, ...], object],
        **properties: Attribute | None) -> np.ndarray:
    """Build `op_class` on block arguments typed like `arrays`, verify it, and evaluate it."""
    return evaluate(build(op_class, arrays, result, **properties), arrays)[0]


def build(op_class: type[Operation], arrays: list[np.ndarray], result: tuple[tuple[int, ...], object],
          **properties: Attribute | None) -> Operation:
    """`op_class` on block arguments typed like `arrays`, verified."""
    block = Block(arg_types=[tensor_type(a.shape, a.dtype) for a in arrays])
    props = {k: v for k, v in properties.items() if v is not None}
    operands: list = list(block.args)
    if op_class is qnn.ConcatOp:
        operands = [operands]
    missing = len(op_class.get_irdl_definition().operands) - len(operands)
    operands += [[]] * missing  # absent optional operands (bias)
    op = op_class.build(operands=operands, result_types=[tensor_type(result[0], result[1])], properties=props)
    op.verify()
    return op


def requant_props(scheme: str, reals: np.ndarray | list[float]) -> dict[str, Attribute]:
    """scheme, multipliers and shifts standing for `reals` (pow2: exact powers of two)."""
    r = np.asarray(reals, dtype=np.float64).reshape(-1)
    if scheme == "pow2":
        return {"scheme": StringAttr("pow2"), "shifts": ints([-int(math.log2(v)) for v in r])}
    m, s = im.quantize_multipliers(r)
    return {"scheme": StringAttr("fixed"), "multipliers": ints(m), "shifts": ints(s)}


def gemm_stage(acc: list[int], sx: float, sw: float, sy: float, zy: int, scheme: str,
               **extra: Attribute) -> np.ndarray:
    """Drive the output stage of a qnn.gemm with the accumulators `acc` (as biases on a
    zero input, one per output channel)."""
    n = len(acc)
    a = np.zeros((1, 1), np.int8)
    b = np.zeros((n, 1), np.int8)
    bias = np.asarray(acc, np.int32)
    props = requant_props(scheme, [sx * sw / sy]) | extra
    return run(qnn.GemmOp, [a, b, bias], ((1, n), np.int8), trans_b=i64attr(1), input_scale=f64attr(sx),
               input_zero_point=i64attr(0), weight_scales=floats([sw]), scale=f64attr(sy), zero_point=i64attr(zy),
               **props)[0]


# ---------------------------------------------------------------------------------------
# The worked examples of docs/quantization.md, through the kernels
# ---------------------------------------------------------------------------------------


def test_p1_pow2_output_stage() -> None:
    acc = [1000, 640, -640, -641, 40000, -1000]
    y = gemm_stage(acc, 2.0**-4, 2.0**-7, 2.0**-3, 0, "pow2")
    assert y.tolist() == [4, 3, -2, -3, 127, -4]
    relu = gemm_stage(acc, 2.0**-4, 2.0**-7, 2.0**-3, 0, "pow2", activation=StringAttr("relu"), clamp_min=i64attr(0))
    assert relu.tolist() == [4, 3, 0, 0, 127, 0]


def test_f1_f2_fixed_output_stage() -> None:
    assert gemm_stage([1000, -1000, 2250, 100000], 0.02, 0.005, 0.05, -5, "fixed").tolist() == [-3, -7, 0, 127]
    assert gemm_stage([10, -10], 0.5, 0.5, 1.0, 0, "fixed").tolist() == [3, -3]  # M = 0.25: ties away from zero
    assert gemm_stage([10, -10], 0.5, 0.5, 1.0, 0, "pow2").tolist() == [3, -2]  # pow2: ties up
    assert gemm_stage([5], 1.0, 3.0, 1.0, 0, "fixed").tolist() == [15]  # M = 3.0: a left shift


def test_l1_l2_leaky_output_stage() -> None:
    m = im.pow2_alpha(0.1)
    pow2 = gemm_stage([-1000, -5000, 1000], 2.0**-4, 2.0**-7, 2.0**-3, 0, "pow2", activation=StringAttr("leaky_relu"),
                      act_alpha=f64attr(0.1), neg_multipliers=ints([m]), neg_shifts=ints([8 + 16]))
    assert pow2.tolist() == [0, -2, 4]
    nm, ns = im.quantize_multiplier(0.002 * 0.1)
    fixed = gemm_stage([-1000, -30000], 0.02, 0.005, 0.05, 0, "fixed", activation=StringAttr("leaky_relu"),
                       act_alpha=f64attr(0.1), neg_multipliers=ints([nm]), neg_shifts=ints([ns]))
    assert fixed.tolist() == [0, -6]


def test_a1_a2_add() -> None:
    a, b = np.array([37, 100], np.int8), np.array([-9, 20], np.int8)
    y = run(qnn.AddOp, [a, b], ((2,), np.int8), input_scales=floats([2.0**-5, 2.0**-3]), input_zero_points=ints([0, 0]),
            scheme=StringAttr("pow2"), operand_shifts=ints([0, -2]), shifts=ints([1]), scale=f64attr(2.0**-4),
            zero_point=i64attr(0))
    assert y.tolist() == [1, 90]
    mid = 0.1 / 2**16
    (m0, m1), (s0, s1) = im.quantize_multipliers([0.04 / mid, 0.1 / mid])
    a, b = np.array([53, -100, 127], np.int8), np.array([15, -60, 127], np.int8)
    y = run(qnn.AddOp, [a, b], ((3,), np.int8), input_scales=floats([0.04, 0.1]), input_zero_points=ints([3, -5]),
            operand_multipliers=ints([m0, m1]), operand_shifts=ints([s0, s1]),
            **requant_props("fixed", [mid / 0.08]), scale=f64attr(0.08), zero_point=i64attr(2))
    assert y.tolist() == [52, -118, 127]


def test_c1_concat() -> None:
    a, b = np.array([[-6, 37]], np.int8), np.array([[5, -7]], np.int8)
    y = run(qnn.ConcatOp, [a, b], ((1, 4), np.int8), axis=i64attr(1), input_scales=floats([2.0**-6, 2.0**-4]),
            input_zero_points=ints([0, 0]), scheme=StringAttr("pow2"), shifts=ints([2, 0]), scale=f64attr(2.0**-4),
            zero_point=i64attr(0))
    assert y.tolist() == [[-1, 9, 5, -7]]  # the second operand is copied


def avg_pool_props(scheme: str, n: int) -> dict[str, Attribute]:
    counts = np.arange(1, n + 1)
    if scheme == "pow2":
        params = [im.pow2_divisor(int(c)) for c in counts]
        return {"scheme": StringAttr("pow2"), "multipliers": ints([m for m, _ in params]), "shifts": ints([s for _, s in params])}
    return requant_props("fixed", 1.0 / counts)


@pytest.mark.parametrize("scheme", ["pow2", "fixed"])
def test_v1_average_pool(scheme: str) -> None:
    x = np.array([[12] + [11] * 8, [-17] + [-11] * 8], np.int8).reshape(1, 2, 3, 3)  # window sums 100 and -105
    same = {"input_scale": f64attr(0.0625), "input_zero_point": i64attr(0), "scale": f64attr(0.0625), "zero_point": i64attr(0)}
    y = run(qnn.PoolOp, [x], ((1, 2, 1, 1), np.int8), kind=StringAttr("avg"), kernel=ints([3, 3]), strides=ints([1, 1]),
            pads=ints([0, 0, 0, 0]), dilations=ints([1, 1]), ceil_mode=i64attr(0), count_include_pad=i64attr(0),
            **same, **avg_pool_props(scheme, 9))
    assert y.reshape(-1).tolist() == [11, -12]


def test_v2_global_average_pool() -> None:
    x = np.full((1, 1, 7, 7), 20, np.int8)
    x[0, 0, 0, 0] = 40  # sum 1000
    y = run(qnn.GlobalPoolOp, [x], ((1, 1, 1, 1), np.int8), kind=StringAttr("avg"), input_scale=f64attr(0.0625),
            input_zero_point=i64attr(0), scale=f64attr(0.0625), zero_point=i64attr(0), **requant_props("fixed", [1 / 49]))
    assert im.quantize_multiplier(1 / 49) == (1402438301, 5)
    assert y.reshape(-1).tolist() == [20]


def test_t1_sigmoid_lookup() -> None:
    table = im.build_table(im.TABLE_FUNCTIONS["sigmoid"], 1 / 16, 0, im.INT8_RANGE, 1 / 128, 0, im.INT8_RANGE)
    x = np.array([0, 16, -128, 127], np.int8)
    y = run(qnn.LutOp, [x, table.astype(np.int8)], ((4,), np.int8), input_scale=f64attr(1 / 16),
            input_zero_point=i64attr(0), scale=f64attr(1 / 128), zero_point=i64attr(0), activation=StringAttr("sigmoid"))
    assert y.tolist() == [64, 94, 0, 127]


def test_q1_d1_boundaries() -> None:
    def quantize(x: list[float], scale: float, zp: int, dtype: type = np.int8) -> list[int]:
        return run(qnn.QuantizeOp, [np.array(x, np.float32)], ((len(x),), dtype), scale=f64attr(scale),
                   zero_point=i64attr(zp)).tolist()

    assert quantize([2.5, 3.5, -2.5, 1000.0], 1.0, 10) == [12, 14, 8, 127]
    assert quantize([0.25], float(np.float32(0.1)), 0) == [2]
    assert quantize([-3.0], 1.0, 0, np.uint8) == [0]
    y = run(qnn.DequantizeOp, [np.array([-7], np.int8)], ((1,), np.float32), scale=f64attr(0.5), zero_point=i64attr(3))
    assert y.dtype == np.float32 and y.tolist() == [-5.0]


def test_uint8_lookup_and_requantize() -> None:
    """ui8 operands: the table is indexed from 0, and a requantize to ui8 saturates to [0, 255]."""
    table = (np.arange(256) // 2).astype(np.uint8)
    x = np.array([0, 1, 255], np.uint8)
    y = run(qnn.LutOp, [x, table], ((3,), np.uint8), input_scale=f64attr(1.0), input_zero_point=i64attr(0),
            scale=f64attr(2.0), zero_point=i64attr(0))
    assert y.tolist() == [0, 0, 127]
    q = np.array([-128, 0, 100], np.int8)
    y = run(qnn.RequantizeOp, [q], ((3,), np.uint8), input_scale=f64attr(0.25), input_zero_point=i64attr(0),
            scale=f64attr(1.0), zero_point=i64attr(128), **requant_props("fixed", [0.25]))
    assert y.tolist() == [96, 128, 153]  # -32, 0, 25 (ties away: 25.0) shifted by 128


# ---------------------------------------------------------------------------------------
# The kernels' requantization is intmath's, bit for bit
# ---------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scheme=SCHEMES, channels=st.sampled_from([1, 4]), leaky=st.booleans(),
       relu=st.booleans(), magnitude=st.sampled_from([2**8, 2**20, 2**31]))
def test_output_stage_is_intmaths(seed: int, scheme: str, channels: int, leaky: bool, relu: bool, magnitude: int) -> None:
    """Random int32 accumulators and parameters over the whole ranges the verifier allows
    (flushed multipliers, left shifts, pure shifts, per-channel mixes, ties)."""
    rng = np.random.default_rng(seed)
    acc = rng.integers(-magnitude, magnitude, (64, channels), dtype=np.int64).clip(im.INT32_MIN, im.INT32_MAX)
    acc[:4] = [[-(2**31)], [2**31 - 1], [0], [-1]]
    acc[4:8] = (rng.integers(-1000, 1000, (4, 1)) << 8) + 128  # exact halves for shifts of 8

    def params() -> im.Requant:
        if scheme == "pow2":
            shifts = rng.integers(-16, 49, channels)
            mults = np.where(shifts < 0, 1, rng.integers(1, 2**16, channels))
            return im.Requant.of("pow2", shifts, mults)
        shifts = rng.integers(-31, 32, channels)
        mults = np.where(rng.random(channels) < 0.3, 2**30, rng.integers(2**30, 2**31, channels))  # 2^30: ties
        flushed = rng.random(channels) < 0.2
        return im.Requant.of("fixed", np.where(flushed, 0, shifts), np.where(flushed, 0, mults))

    zero_point = int(rng.integers(-128, 128))
    stage = im.OutputStage(params(), zero_point, zero_point if relu else -128, 127, params() if leaky else None).along(2, 1)
    assert np.array_equal(output_stage(acc.copy(), stage), stage(acc))


@settings(max_examples=400, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scheme=SCHEMES, channels=st.sampled_from([1, 3]), leaky=st.booleans(),
       relu=st.booleans(), magnitude=st.sampled_from([2**6, 2**12, 2**20, 2**27, 2**30]), offsets=st.booleans())
def test_float_stage_is_intmaths(seed: int, scheme: str, channels: int, leaky: bool, relu: bool, magnitude: int,
                                 offsets: bool) -> None:
    """The one-floor float64 output stage equals intmath's wherever it claims to be exact;
    multipliers of exactly 2^30 (halves) make ties common."""
    rng = np.random.default_rng(seed)
    exact32 = magnitude < 2**24 and rng.random() < 0.5  # the GEMMs hand float32 accumulators when exact
    acc = rng.integers(-magnitude, magnitude + 1, (256, channels)).astype(np.float32 if exact32 else np.float64)
    offset = rng.integers(-magnitude // 4 - 1, magnitude // 4 + 1, channels) if offsets else None

    def params() -> im.Requant:
        if scheme == "pow2":
            shifts = rng.integers(-3, 45, channels)
            mults = np.where(shifts < 0, 1, rng.choice([1, 3, 2**15 + 1, 2**16 - 1], channels))
            return im.Requant.of("pow2", shifts, mults)
        shifts = rng.integers(-4, 24, channels) if rng.random() < 0.5 else np.full(channels, rng.integers(0, 24))
        mults = rng.choice([2**30, 2**30 + 1, 1908874354, 2**31 - 1, 0], channels)
        return im.Requant.of("fixed", np.where(mults == 0, 0, shifts), mults)

    dtype = np.dtype(np.uint8) if rng.random() < 0.3 else np.dtype(np.int8)
    qmin, qmax = im.int_range(dtype)
    zero_point = int(rng.integers(qmin, qmax + 1))
    stage = im.OutputStage(params(), zero_point, zero_point if relu else qmin, qmax, params() if leaky else None).along(2, 1)
    fixed = FixedStage.of(stage, channels, offset, acc.shape[0])  # the fixed scheme's int32 store
    fast = float_stage(stage, channels, offset)
    if fixed is not None and magnitude <= fixed.limit:
        out = np.empty(acc.size, dtype)
        fixed.store(acc.reshape(-1), out)
        assert np.array_equal(out.reshape(acc.shape).astype(np.int64), stage(acc.astype(np.int64) + (0 if offset is None else offset)))
    if fast is None or magnitude > fast.limit:
        return
    want = stage(acc.astype(np.int64) + (0 if offset is None else offset))
    assert np.array_equal(fast.evaluate(acc, np.empty(acc.shape)).astype(np.int64), want)
    for single in (False, True):  # the kernels' fast stores: flat slabs, the floor as a truncating cast
        tiled = fast.tiled(acc.shape[0], acc.dtype, single)
        if tiled is None or magnitude > tiled.limit:
            continue
        out = np.empty(acc.size, dtype)
        tiled.store(acc.reshape(-1), out)
        assert np.array_equal(out.reshape(acc.shape).astype(np.int64), want), single


@pytest.mark.parametrize("multiplier", [2**30, 1908874354, 2**31 - 1])
@pytest.mark.parametrize("zero_point", [-128, 17])
def test_fixed_stage_without_floor_pass_is_intmaths(multiplier: int, zero_point: int) -> None:
    """The lifted FixedStage (truncating cast, sign term from bit 21) on every accumulator
    near 0 and every 61st through both saturation ends, shifts 0 to 12 mixed per channel
    (the sign mask), with and without offsets: against intmath."""
    shifts = np.array([0, 1, 5, 12, 7])
    values = np.concatenate([np.arange(-(2**14), 2**14), np.arange(-(2**22), 2**22, 61)])
    acc = values[:, None] + np.zeros((1, shifts.size), np.int64)
    stage = im.OutputStage(im.Requant.of("fixed", shifts, np.full(shifts.size, multiplier)), zero_point, -128, 127).along(2, 1)
    for offset in (None, np.array([-40000, 3, 0, 2**20, -(2**19)])):
        fixed = FixedStage.of(stage, shifts.size, offset, acc.shape[0])
        assert fixed is not None and fixed.lifted and fixed.limit >= 2**22
        out = np.empty(acc.size, np.int8)
        fixed.store(acc.astype(np.float32).reshape(-1), out)
        want = stage(acc + (0 if offset is None else offset))
        assert np.array_equal(out.reshape(acc.shape).astype(np.int64), want)
        assert want.min() == -128 and want.max() == 127  # both ends reached


def checked_stage_run(stage: im.OutputStage, acc: np.ndarray, offset: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """CheckedStage on the float32 accumulators `acc` (rows x channels), slab by slab: its
    result (after the exact redo) and its flags."""
    checked = CheckedStage.of(stage, acc.shape[1], offset, 1000)  # slabs of 1000 rows, the last one shorter
    assert checked is not None
    a = acc.astype(np.float32).reshape(-1)
    out, flags = np.empty(a.size, np.uint8 if stage.lo >= 0 else np.int8), np.empty(a.size, bool)
    checked.store(a, out, flags)
    checked.redo(a, out, flags, acc.shape[1])
    return out.reshape(acc.shape).astype(np.int64), flags


@pytest.mark.parametrize("multiplier", [2**30, 1908874354, 2**31 - 1])
@pytest.mark.parametrize(("zero_point", "relu", "low", "high"),
                         [(-128, False, -128, 127), (17, False, -128, 127), (17, True, -128, 127), (140, False, 0, 255),
                          (3, True, 0, 255)])
def test_checked_stage_is_intmaths(multiplier: int, zero_point: int, relu: bool, low: int, high: int) -> None:
    """The float32 CheckedStage (flagged elements redone in int64) on every accumulator within
    2^18 of 0 (each result step of the shifts up to 9, all their ties and boundaries) and every
    4099th through both saturation ends up to 2^24 (float32's exact integers), shifts 0 to 12 mixed
    per channel, with and without offsets, int8 and uint8 results: against intmath."""
    shifts = np.array([0, 3, 7, 12, 9])
    values = np.concatenate([np.arange(-(2**18), 2**18), np.arange(-(2**24), 2**24 + 1, 4099)])
    acc = values[:, None] + np.zeros((1, shifts.size), np.int64)
    stage = im.OutputStage(im.Requant.of("fixed", shifts, np.full(shifts.size, multiplier)), zero_point,
                           zero_point if relu else low, high).along(2, 1)
    for offset in (None, np.array([-40000, 3, 0, 2**20, -(2**19)])):
        got, flags = checked_stage_run(stage, acc, offset)
        x = acc + (0 if offset is None else offset)
        want = stage(x)
        assert np.array_equal(got, want)
        assert want.min() == stage.lo and want.max() == high  # both ends reached
        inside = (want > stage.lo) & (want < stage.hi)  # (saturated elements may be flagged: redone alike)
        assert np.count_nonzero(flags.reshape(acc.shape) & inside) < np.count_nonzero(inside) // 20  # few redone
        if stage.lo < zero_point:  # ties went down below 0, and some were kept: the tie term mattered
            assert np.any(flags)
            without_tie = np.clip(requantize(x, stage.requant, clamped_below=True) + zero_point, low, high)
            assert not np.array_equal(without_tie, want)


def test_checked_stage_refuses_coarse_or_left_shifts() -> None:
    """No CheckedStage where a tie zone (2^-e) leaves no room for float32's rounding, for left
    shifts (x << left may saturate) or pow2."""
    def of(shifts: list[int], lo: int = -128, scheme: str = "fixed") -> object:
        requant = im.Requant.of(scheme, shifts, [2**30] * len(shifts))
        return CheckedStage.of(im.OutputStage(requant, 0, lo, 127).along(2, 1), len(shifts), None, 4)

    assert of([3, 7]) is not None
    assert of([2, 7]) is None  # tie zone 1/4
    assert of([2, 7], lo=0) is not None  # under a relu clamp: no tie term
    assert of([-1, 7]) is None
    assert of([3, 7], scheme="pow2") is None


# ---------------------------------------------------------------------------------------
# Exact sums in float BLAS
# ---------------------------------------------------------------------------------------


def test_max_abs_of_int8_minimum_is_128() -> None:
    """np.abs(int8 -128) is -128: the bound must be taken after widening."""
    assert max_abs(np.array([-128, 5], np.int8)) == 128
    assert max_abs(np.array([127, -3], np.int8)) == 127
    assert max_abs(np.array([], np.int8)) == 0
    assert max_abs(np.array([-2.0**40, 3.0])) == 2**40


def test_float32_chunks_keep_every_partial_sum_exact() -> None:
    assert chunk_count(1000, 128 * 127) == 1  # 2.06e7 > 2^24? no: 16,256,000 < 16,777,216
    assert chunk_count(1100, 128 * 127) == 2
    assert chunk_count(2**40, 2**20) == 0  # not even float64
    rng = np.random.default_rng(0)
    # Large values of one sign and a long reduction: float32 in one piece would round.
    a = rng.integers(200, 256, (5, 9000)).astype(np.float32)
    b = rng.integers(-127, -100, (9000, 7)).astype(np.float32)
    want = a.astype(np.int64) @ b.astype(np.int64)
    assert np.array_equal(exact_matmul(a, b).astype(np.int64), want)
    assert not np.array_equal((a @ b).astype(np.int64), want)  # the chunks are needed


# ---------------------------------------------------------------------------------------
# Random ops against an int64 reference
# ---------------------------------------------------------------------------------------

def random_scales(rng: np.random.Generator, scheme: str, n: int) -> np.ndarray:
    if scheme == "pow2":
        return 2.0 ** -rng.integers(2, 9, n).astype(np.float64)
    return rng.uniform(0.002, 0.05, n).astype(np.float32).astype(np.float64)


def reference_conv(x: np.ndarray, w: np.ndarray, zx: int, zw: int, strides: list[int], pads: list[int],
                   dilations: list[int], group: int, out_hw: tuple[int, int]) -> np.ndarray:
    """sum (x - z_x)(w - z_w) in int64, padding with z_x, one kernel tap at a time."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.full((n, c, h + pads[0] + pads[2], wd + pads[1] + pads[3]), zx, np.int64)
    xp[:, :, pads[0]:pads[0] + h, pads[1]:pads[1] + wd] = x
    xp -= zx
    wc = w.astype(np.int64) - zw
    oh, ow = out_hw
    acc = np.zeros((n, m, oh, ow), np.int64)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dilations[0], j * dilations[1]
            tap = xp[:, :, r0:r0 + (oh - 1) * strides[0] + 1:strides[0], c0:c0 + (ow - 1) * strides[1] + 1:strides[1]]
            tap = tap.reshape(n, group, cg, oh, ow)
            acc += np.einsum("ngcyx,gmc->ngmyx", tap, wc[:, :, i, j].reshape(group, m // group, cg)).reshape(n, m, oh, ow)
    return acc


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scheme=SCHEMES, group_kind=st.sampled_from(["one", "grouped", "depthwise"]),
       kernel_size=st.sampled_from([1, 2, 3]), stride=st.sampled_from([1, 2]), dilation=st.sampled_from([1, 2]),
       pad=st.integers(0, 2), per_channel=st.booleans(), unsigned=st.booleans(), result=st.sampled_from(["i8", "i32"]),
       batch=st.sampled_from([1, 2]))
def test_conv2d_matches_int64_reference(seed: int, scheme: str, group_kind: str, kernel_size: int, stride: int,
                                        dilation: int, pad: int, per_channel: bool, unsigned: bool, result: str,
                                        batch: int) -> None:
    """Random convs (one image and stride 1: a GEMM per kernel tap, `shifted_conv2d`) against
    the int64 reference."""
    rng = np.random.default_rng(seed)
    c = {"one": 3, "grouped": 4, "depthwise": 4}[group_kind]
    group = {"one": 1, "grouped": 2, "depthwise": 4}[group_kind]
    m = {"one": 5, "grouped": 6, "depthwise": 8}[group_kind]
    h = w = int(rng.integers(kernel_size * dilation, 9))
    xdtype = np.uint8 if unsigned and scheme == "fixed" else np.int8
    lo, hi = im.int_range(xdtype)
    x = rng.integers(lo, hi + 1, (batch, c, h, w)).astype(xdtype)
    zx = int(rng.integers(lo, hi + 1)) if scheme == "fixed" else 0
    weights = rng.integers(-127, 128, (m, c // group, kernel_size, kernel_size)).astype(np.int8)
    bias = rng.integers(-5000, 5000, m).astype(np.int32)
    strides, dilations, pads = [stride, stride], [dilation, dilation], [pad, 0, pad, pad]
    out = nn.conv2d_output_shape(x.shape, weights.shape, strides, pads, dilations, group)
    sx, sy = float(random_scales(rng, scheme, 1)[0]), float(random_scales(rng, scheme, 1)[0])
    sw = random_scales(rng, scheme, m if per_channel else 1)
    geometry = {"strides": ints(strides), "pads": ints(pads), "dilations": ints(dilations), "group": i64attr(group),
                "input_scale": f64attr(sx), "input_zero_point": i64attr(zx), "weight_scales": floats(sw)}
    acc = reference_conv(x, weights, zx, 0, strides, pads, dilations, group, out[2:]) + bias[None, :, None, None]
    if result == "i32":
        got = run(qnn.Conv2dOp, [x, weights, bias], (out, np.int32), **geometry)
        assert np.array_equal(got, acc)
        return
    zy = int(rng.integers(-20, 20)) if scheme == "fixed" else 0
    props = requant_props(scheme, sx * sw / sy) | {"scale": f64attr(sy), "zero_point": i64attr(zy)}
    got = run(qnn.Conv2dOp, [x, weights, bias], (out, np.int8), **geometry, **props)
    requant = im.Requant.of(scheme, nn.int_list(props["shifts"]), nn.int_list(props["multipliers"]) if "multipliers" in props else None)
    want = im.OutputStage(requant, zy, -128, 127).along(4, 1)(acc)
    assert np.array_equal(got, want)


@pytest.mark.parametrize(("kernel", "pads"), [((3, 3), [1, 1, 1, 1]), ((2, 5), [0, 2, 1, 0]), ((3, 1), [0, 0, 0, 0])])
def test_shifted_conv2d_matches_int64_reference(kernel: tuple[int, int], pads: list[int]) -> None:
    """A GEMM per kernel tap on one image (`shifted_conv2d`), with every weight at +-127 and
    the input at its ends (large sums, wrapped columns and the extra row all read), uint8
    and int8 inputs, zero points: the int64 reference, and the path taken."""
    rng = np.random.default_rng(7)
    c, m, h, w = 24, 6, 9, 11
    weights = np.where(rng.random((m, c, *kernel)) < 0.5, -127, 127).astype(np.int8)
    strides, dilations = [1, 1], [1, 1]
    out = nn.conv2d_output_shape((1, c, h, w), weights.shape, strides, pads, dilations, 1)
    assert shifted_applies((1, c, h, w), weights.shape, strides, dilations, 1)
    for xdtype, zx in ((np.int8, 0), (np.int8, -128), (np.uint8, 3)):
        lo, hi = im.int_range(xdtype)
        x = np.where(rng.random((1, c, h, w)) < 0.5, lo, hi).astype(xdtype)
        geometry = {"strides": ints(strides), "pads": ints(pads), "dilations": ints(dilations), "group": i64attr(1),
                    "input_scale": f64attr(1.0), "input_zero_point": i64attr(zx), "weight_scales": floats([1.0])}
        got = run(qnn.Conv2dOp, [x, weights], (out, np.int32), **geometry)
        want = reference_conv(x, weights, zx, 0, strides, pads, dilations, 1, out[2:])
        assert np.array_equal(got, want)
        assert np.abs(want).max() > 2**12  # large sums, not a trivially small case


@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_with_a_weight_takes_its_column_norms(trans_b: bool) -> None:
    """A read-only weight (as the executor hands them) bounds the sums by its columns' L1 norms:
    inputs at their ends against weights at +-127, K = 1500 (K * 128 * 127 is over 2^24, the
    norms of the sparse columns are not; a dense column makes the other test): the int64
    reference either way."""
    rng = np.random.default_rng(3)
    k, n = 1500, 7
    for density in (0.1, 1.0):
        w = np.where(rng.random((k, n)) < 0.5, -127, 127) * (rng.random((k, n)) < density)
        weight = (w.T if trans_b else w).astype(np.int8)
        weight.flags.writeable = False
        a = np.where(rng.random((3, k)) < 0.5, -128, 127).astype(np.int8)
        got = run(qnn.GemmOp, [a, weight], ((3, n), np.int32), trans_b=i64attr(int(trans_b)), input_scale=f64attr(1.0),
                  input_zero_point=i64attr(0), weight_scales=floats([1.0]))
        assert np.array_equal(got, a.astype(np.int64) @ w.astype(np.int64))


def test_conv2d_offset_follows_its_bias_and_weight_arrays() -> None:
    """A conv keeps its offset (bias - z_x sum(w - z_w)) while it gets the same read-only
    weight and bias arrays, as in the executor's runs, and computes it again for new ones."""
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (1, 3, 5, 5)).astype(np.int8)

    def constant(a: np.ndarray) -> np.ndarray:
        a.flags.writeable = False
        return a

    w1, w2 = (constant(rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)) for _ in range(2))
    b1, b2 = (constant(rng.integers(-5000, 5000, 4).astype(np.int32)) for _ in range(2))
    op = build(qnn.Conv2dOp, [x, w1, b1], ((1, 4, 3, 3), np.int32), strides=ints([1, 1]), pads=ints([0, 0, 0, 0]),
               dilations=ints([1, 1]), group=i64attr(1), input_scale=f64attr(1.0), input_zero_point=i64attr(7),
               weight_scales=floats([1.0]))
    for w, b in ((w1, b1), (w1, b1), (w1, b2), (w2, b2), (w1, b1)):
        got = KERNELS[qnn.Conv2dOp](op, [x, w, b])[0]
        want = reference_conv(x, w, 7, 0, [1, 1], [0, 0, 0, 0], [1, 1], 1, (3, 3)) + b[None, :, None, None]
        assert np.array_equal(got, want)


def test_conv2d_long_reduction_is_exact() -> None:
    """K = 256 * 9 with large values of one sign: sums pass 2^24, float32's exact
    integers, so the input channels must be cut into chunks (as the plain float conv shows)."""
    rng = np.random.default_rng(1)
    x = rng.integers(90, 128, (1, 256, 5, 5)).astype(np.int8)
    w = rng.integers(90, 128, (4, 256, 3, 3)).astype(np.int8)
    got = run(qnn.Conv2dOp, [x, w], ((1, 4, 5, 5), np.int32), strides=ints([1, 1]), pads=ints([1, 1, 1, 1]),
              dilations=ints([1, 1]), group=i64attr(1), input_scale=f64attr(1.0), input_zero_point=i64attr(-3),
              weight_scales=floats([1.0]))
    want = reference_conv(x, w, -3, 0, [1, 1], [1, 1, 1, 1], [1, 1], 1, (5, 5))
    assert np.array_equal(got, want) and np.abs(want).max() > 2**24
    single = conv2d(x.astype(np.float32) + 3, w.astype(np.float32), [1, 1], [1, 1, 1, 1], [1, 1], 1, (5, 5))
    assert not np.array_equal(as_nchw(single).astype(np.int64), want)  # one float32 piece would round


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scheme=SCHEMES, trans_b=st.booleans(), per_channel=st.booleans(),
       k=st.sampled_from([1, 7, 300, 1500]))
def test_gemm_matches_int64_reference(seed: int, scheme: str, trans_b: bool, per_channel: bool, k: int) -> None:
    rng = np.random.default_rng(seed)
    m, n = 3, 5
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    b = rng.integers(-127, 128, (n, k) if trans_b else (k, n)).astype(np.int8)
    bias = rng.integers(-10000, 10000, n).astype(np.int32)
    za = int(rng.integers(-128, 128)) if scheme == "fixed" else 0
    sa, sy = float(random_scales(rng, scheme, 1)[0]), float(random_scales(rng, scheme, 1)[0])
    sw = random_scales(rng, scheme, n if per_channel else 1)
    props = requant_props(scheme, sa * sw / sy)
    got = run(qnn.GemmOp, [a, b, bias], ((m, n), np.int8), trans_b=i64attr(int(trans_b)), input_scale=f64attr(sa),
              input_zero_point=i64attr(za), weight_scales=floats(sw), scale=f64attr(sy), zero_point=i64attr(0), **props)
    bm = b.T if trans_b else b
    acc = (a.astype(np.int64) - za) @ bm.astype(np.int64) + bias
    requant = im.Requant.of(scheme, nn.int_list(props["shifts"]), nn.int_list(props["multipliers"]) if "multipliers" in props else None)
    assert np.array_equal(got, im.OutputStage(requant, 0, -128, 127).along(2, 1)(acc))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), a_shape=st.sampled_from([(4,), (3, 4), (2, 3, 4)]),
       b_shape=st.sampled_from([(4,), (4, 5), (2, 4, 5), (1, 4, 5)]))
def test_matmul_with_zero_points_matches_int64_reference(seed: int, a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, a_shape).astype(np.uint8)
    b = rng.integers(-128, 128, b_shape).astype(np.int8)
    za, zb = int(rng.integers(0, 256)), int(rng.integers(-128, 128))
    out = nn.matmul_output_shape(a_shape, b_shape)
    got = run(qnn.MatMulOp, [a, b], (out, np.int32), input_scale=f64attr(1.0), input_zero_point=i64attr(za),
              weight_scales=floats([1.0]), weight_zero_point=i64attr(zb))
    assert np.array_equal(got, np.matmul(a.astype(np.int64) - za, b.astype(np.int64) - zb))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scheme=SCHEMES, kind=st.sampled_from(["max", "avg"]),
       kernel_size=st.sampled_from([2, 3]), stride=st.sampled_from([1, 2]), pad=st.integers(0, 1),
       ceil_mode=st.booleans(), count_include_pad=st.booleans())
def test_pool_matches_int64_reference(seed: int, scheme: str, kind: str, kernel_size: int, stride: int, pad: int,
                                      ceil_mode: bool, count_include_pad: bool) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (2, 3, 7, 6)).astype(np.int8)
    zx = int(rng.integers(-50, 50)) if scheme == "fixed" else 0
    k, strides, pads = [kernel_size] * 2, [stride] * 2, [pad] * 4
    out = nn.pool_output_shape(x.shape, k, strides, pads, [1, 1], ceil_mode)
    sx = float(random_scales(rng, scheme, 1)[0])
    geometry = {"kind": StringAttr(kind), "kernel": ints(k), "strides": ints(strides), "pads": ints(pads),
                "dilations": ints([1, 1]), "ceil_mode": i64attr(int(ceil_mode)),
                "count_include_pad": i64attr(int(count_include_pad)), "input_scale": f64attr(sx),
                "input_zero_point": i64attr(zx)}
    # The reference: every window as explicit index lists, in int64.
    rows = [range(o * stride - pad, o * stride - pad + kernel_size) for o in range(out[2])]
    cols = [range(o * stride - pad, o * stride - pad + kernel_size) for o in range(out[3])]
    if kind == "max":
        got = run(qnn.PoolOp, [x], (out, np.int8), **geometry, scale=f64attr(sx), zero_point=i64attr(zx))
        for oy, rr in enumerate(rows):
            for ox, cc in enumerate(cols):
                inside = x[:, :, [r for r in rr if 0 <= r < 7]][:, :, :, [c for c in cc if 0 <= c < 6]]
                assert np.array_equal(got[:, :, oy, ox], inside.max(axis=(2, 3)))
        return
    sy = float(random_scales(rng, scheme, 1)[0])
    zy = int(rng.integers(-20, 20)) if scheme == "fixed" else 0
    counts = np.arange(1, kernel_size**2 + 1)
    if scheme == "pow2":
        d = round(math.log2(sy / sx))
        params = [im.pow2_divisor(int(c), d) for c in counts]
        props = {"scheme": StringAttr("pow2"), "multipliers": ints([p[0] for p in params]), "shifts": ints([p[1] for p in params])}
    else:
        props = requant_props("fixed", sx / (sy * counts))
    got = run(qnn.PoolOp, [x], (out, np.int8), **geometry, **props, scale=f64attr(sy), zero_point=i64attr(zy))
    requant = im.Requant.of(scheme, nn.int_list(props["shifts"]), nn.int_list(props["multipliers"]))
    for oy, rr in enumerate(rows):
        for ox, cc in enumerate(cols):
            inside_r = [r for r in rr if 0 <= r < 7]
            inside_c = [c for c in cc if 0 <= c < 6]
            total = (x[:, :, inside_r][:, :, :, inside_c].astype(np.int64) - zx).sum(axis=(2, 3))
            if count_include_pad:  # the declared padding counts, the ceil_mode overhang does not
                n = len([r for r in rr if -pad <= r < 7 + pad]) * len([c for c in cc if -pad <= c < 6 + pad])
            else:
                n = len(inside_r) * len(inside_c)
            want = im.OutputStage(requant.take(n - 1), zy, -128, 127)(total)
            assert np.array_equal(got[:, :, oy, ox], want), (oy, ox)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scheme=SCHEMES, b_shape=st.sampled_from([(2, 3, 4, 5), (1, 3, 1, 1), (5,)]),
       relu=st.booleans())
def test_add_matches_reference(seed: int, scheme: str, b_shape: tuple[int, ...], relu: bool) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (2, 3, 4, 5)).astype(np.int8)
    b = rng.integers(-128, 128, b_shape).astype(np.int8)
    sa, sb, sy = (float(s) for s in random_scales(rng, scheme, 3))
    za, zb, zy = (int(z) for z in rng.integers(-30, 30, 3)) if scheme == "fixed" else (0, 0, 0)
    if scheme == "pow2":
        fa, fb, fy = (-int(math.log2(s)) for s in (sa, sb, sy))
        big = max(fa, fb)
        operand = {"operand_shifts": ints([fa - big, fb - big]), "shifts": ints([big - fy]), "scheme": StringAttr("pow2")}
        requants = (im.Requant.of("pow2", [fa - big]), im.Requant.of("pow2", [fb - big]))
        out_requant = im.Requant.of("pow2", [big - fy])
    else:
        mid = max(sa, sb) / 2**16
        om, os_ = im.quantize_multipliers([sa / mid, sb / mid])
        m, s = im.quantize_multipliers([mid / sy])
        operand = {"operand_multipliers": ints(om), "operand_shifts": ints(os_), "multipliers": ints(m), "shifts": ints(s),
                   "scheme": StringAttr("fixed")}
        requants = (im.Requant.of("fixed", [os_[0]], [om[0]]), im.Requant.of("fixed", [os_[1]], [om[1]]))
        out_requant = im.Requant.of("fixed", s, m)
    clamp = {"activation": StringAttr("relu"), "clamp_min": i64attr(zy)} if relu else {}
    got = run(qnn.AddOp, [a, b], (a.shape, np.int8), input_scales=floats([sa, sb]), input_zero_points=ints([za, zb]),
              scale=f64attr(sy), zero_point=i64attr(zy), **operand, **clamp)
    want = im.add(a, b, (za, zb), requants, im.OutputStage(out_requant, zy, zy if relu else -128, 127))
    assert np.array_equal(got, want)
    # A transposed (channels-last) layout gives the same values.
    a_t = np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    if b.shape == a.shape:
        b_t = np.ascontiguousarray(b.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        got_t = run(qnn.AddOp, [a_t, b_t], (a.shape, np.int8), input_scales=floats([sa, sb]),
                    input_zero_points=ints([za, zb]), scale=f64attr(sy), zero_point=i64attr(zy), **operand, **clamp)
        assert np.array_equal(got_t, want)
        # Operands in different layouts: the table add's one-piece path.
        got_mixed = run(qnn.AddOp, [a, b_t], (a.shape, np.int8), input_scales=floats([sa, sb]),
                        input_zero_points=ints([za, zb]), scale=f64attr(sy), zero_point=i64attr(zy), **operand, **clamp)
        assert np.array_equal(got_mixed, want)


@pytest.mark.parametrize(("shifts", "relu"), [
    ((0, -2, 1), False), ((-3, 0, 0), True), ((0, -9, 4), False), ((-1, 0, 2), True), ((0, 0, 3), False),
])
def test_pow2_add_by_shifts_is_intmaths(shifts: tuple[int, int, int], relu: bool) -> None:
    """The pow2 add's shift-and-add form (int16; int32 for the long shift of (0, -9, 4))
    against intmath, on every pair of operand values."""
    a, b = (np.repeat(np.arange(-128, 128), 256).astype(np.int8), np.tile(np.arange(-128, 128), 256).astype(np.int8))
    sa, sb, sy = shifts
    za, zb, zy = 0, 0, 0  # pow2: symmetric
    big = 6  # F: the operands have 2^-(F + shift) (one shift is 0), the output 2^-(F - its shift)
    got = run(qnn.AddOp, [a, b], (a.shape, np.int8), input_scales=floats([2.0 ** -(big + sa), 2.0 ** -(big + sb)]),
              input_zero_points=ints([za, zb]), scale=f64attr(2.0 ** -(big - sy)), zero_point=i64attr(zy),
              scheme=StringAttr("pow2"),
              operand_shifts=ints([sa, sb]), shifts=ints([sy]),
              **({"activation": StringAttr("relu"), "clamp_min": i64attr(zy)} if relu else {}))
    stage = im.OutputStage(im.Requant.of("pow2", [sy]), zy, zy if relu else -128, 127)
    want = im.add(a, b, (za, zb), (im.Requant.of("pow2", [sa]), im.Requant.of("pow2", [sb])), stage)
    assert np.array_equal(got, want)


def test_global_max_pool_and_concat_requantize() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (2, 3, 4, 4)).astype(np.int8)
    y = run(qnn.GlobalPoolOp, [x], ((2, 3, 1, 1), np.int8), kind=StringAttr("max"), input_scale=f64attr(0.5),
            input_zero_point=i64attr(1), scale=f64attr(0.5), zero_point=i64attr(1))
    assert np.array_equal(y, x.max(axis=(2, 3), keepdims=True))
    a, b = x[:, :2], x[:, 2:]
    m, s = im.quantize_multipliers([0.5 / 0.25, 0.25 / 0.25])
    y = run(qnn.ConcatOp, [a, b], ((2, 3, 4, 4), np.int8), axis=i64attr(1), input_scales=floats([0.5, 0.25]),
            input_zero_points=ints([4, 0]), scheme=StringAttr("fixed"), multipliers=ints(m), shifts=ints(s),
            scale=f64attr(0.25), zero_point=i64attr(0))
    assert np.array_equal(y[:, 2:], b)  # identity parameters copy
    assert np.array_equal(y[:, :2], np.clip((a.astype(np.int64) - 4) * 2, -128, 127))
