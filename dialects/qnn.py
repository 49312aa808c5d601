"""The `qnn` dialect: integer ops with the exact semantics of docs/quantization.md.

Tensors are plain `tensor<...xi8>` (or `ui8`, `i32`); the quantization of each tensor
lives on the ops as properties, QLinear-style, so that every op is a complete integer
kernel on its own: `scale` / `zero_point` describe an op's result (on `qnn.dequantize`
its operand), `input_*` and `weight_*` describe its operands. The integer parameters
(`scheme`, `multipliers`, `shifts`, clamps) are what the kernels compute with; the
scales are there to check them against, to dequantize, and to export QDQ ONNX.

The verifiers check that scales are positive (powers of two under `pow2`), that zero
points fit the types, that multipliers and shifts lie in the spec's ranges and agree
with the scales, that per-channel parameters have one entry per output channel, and
that an op's `input_*` agree with what its producer (seen through layout-only `nn` ops)
says about that tensor. `output_stage()` and friends hand the parameters to
`compiler.quant.intmath`, the one implementation of the semantics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    Signedness,
    StringAttr,
    TensorType,
)
from xdsl.ir import Dialect, Operation, SSAValue
from xdsl.irdl import (
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    var_operand_def,
)

from compiler.quant import intmath as im
from dialects import nn
from dialects.nn import NNOp, element_type_of, float_list, int_list, is_float, shape_of

# ---------------------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------------------

I8 = IntegerType(8)
UI8 = IntegerType(8, Signedness.UNSIGNED)
I32 = IntegerType(32)


def type_range(element_type: object) -> tuple[int, int] | None:
    """Saturation range of a qnn integer element type (i8, si8, ui8, i32), else None."""
    if not isinstance(element_type, IntegerType):
        return None
    width, signedness = element_type.width.data, element_type.signedness.data
    if width not in (8, 32) or (width == 32 and signedness == Signedness.UNSIGNED):
        return None
    if signedness == Signedness.UNSIGNED:
        return 0, 2**width - 1
    return -(2 ** (width - 1)), 2 ** (width - 1) - 1


def is_quantized(element_type: object) -> bool:
    """An 8-bit integer element type (int8 or uint8): what qnn activations and weights are."""
    r = type_range(element_type)
    return r is not None and r[1] - r[0] == 255


def is_accumulator(element_type: object) -> bool:
    return type_range(element_type) == im.INT32_RANGE


def fval(attr: FloatAttr | None) -> float | None:
    return None if attr is None else float(attr.value.data)


def ival(attr: IntegerAttr | None) -> int | None:
    return None if attr is None else int(attr.value.data)


# Ops that only move values: their result has the quantization of their first operand.
LAYOUT_OPS: tuple[type[Operation], ...] = (nn.ReshapeOp, nn.TransposeOp, nn.SliceOp, nn.SplitOp, nn.IdentityOp)

POW2_MULTIPLIER_TOLERANCE = 2.0**-15  # pool division and leaky slope multipliers
POW2_ALPHA_SLACK_BITS = im.POW2_ALPHA_BITS  # |alpha - m / 2^16| <= 2^-17
FIXED_MULTIPLIER_TOLERANCE = 1e-6  # relative; quantize_multiplier is within 2^-30
ACTIVATIONS = ("relu", "relu6", "clip", "leaky_relu")


def producer_quantization(value: SSAValue) -> tuple[float, int] | None:
    """(scale, zero point) that the op producing `value` states for it, looking through
    layout-only nn ops; None when nothing states it (function argument, weight, ...)."""
    owner = value.owner
    while isinstance(owner, LAYOUT_OPS):
        owner = owner.operands[0].owner
    if isinstance(owner, QNNOp):
        return owner.result_quantization()
    return None


class QNNOp(NNOp):
    """Common to every qnn op: nn's name, syntax and checks, plus quantization checks."""

    def result_quantization(self) -> tuple[float, int] | None:
        """(scale, zero point) of the 8-bit result, if the op has one."""
        return None

    def check_scale(self, scale: float | None, what: str) -> float:
        self.check(scale is not None, f"{what} is missing")
        assert scale is not None
        self.check(math.isfinite(scale) and scale > 0, f"{what} {scale} must be positive and finite")
        return scale

    def check_zero_point(self, zero_point: int, value: SSAValue, what: str) -> None:
        r = type_range(element_type_of(value))
        assert r is not None
        self.check(r[0] <= zero_point <= r[1], f"{what} {zero_point} is outside the range {list(r)} of {element_type_of(value)}")

    def check_quantized(self, value: SSAValue, what: str, accumulator_ok: bool = False) -> None:
        t = element_type_of(value)
        ok = is_quantized(t) or (accumulator_ok and is_accumulator(t))
        allowed = "i8, ui8 or i32" if accumulator_ok else "i8 or ui8"
        self.check(ok, f"{what} must be {allowed}, got {t}")

    def check_input(self, value: SSAValue, scale: float, zero_point: int, what: str) -> None:
        """The operand's stated quantization agrees with what its producer says."""
        stated = producer_quantization(value)
        if stated is None:
            return
        s, z = stated
        self.check(math.isclose(s, scale, rel_tol=1e-9) and z == zero_point,
                   f"{what} quantization (scale {scale}, zero point {zero_point}) differs from its producer's "
                   f"(scale {s}, zero point {z})")

    def check_pow2_symmetric(self, scales: Sequence[float], zero_points: Sequence[int]) -> None:
        for s in scales:
            mantissa, _ = math.frexp(s)
            self.check(mantissa == 0.5, f"scheme pow2 needs power-of-two scales, got {s}")
        self.check(all(z == 0 for z in zero_points), f"scheme pow2 needs zero points 0, got {list(zero_points)}")


class QuantizedResult:
    """Mixin: the result's quantization. Required for an 8-bit result, absent for i32."""

    scale = opt_prop_def(FloatAttr)
    zero_point = opt_prop_def(IntegerAttr)

    def result_quantization(self) -> tuple[float, int] | None:
        s = fval(self.scale)
        return None if s is None else (s, ival(self.zero_point) or 0)

    def result_range(self) -> tuple[int, int]:
        assert isinstance(self, QNNOp)
        r = type_range(element_type_of(self.results[0]))
        assert r is not None
        return r

    def check_result_quantization(self, accumulator_ok: bool = False) -> bool:
        """True when the result is 8-bit (and so requantized), False for an i32 result."""
        assert isinstance(self, QNNOp)
        result = self.results[0]
        self.check_quantized(result, "result", accumulator_ok)
        if is_accumulator(element_type_of(result)):
            self.check(self.scale is None and self.zero_point is None, "an i32 result takes no scale or zero_point")
            return False
        self.check_scale(fval(self.scale), "scale")
        self.check(self.zero_point is not None, "zero_point is missing")
        self.check_zero_point(ival(self.zero_point) or 0, result, "zero_point")
        return True


class QuantizedInput:
    """Mixin: the quantization of the (first) activation operand."""

    input_scale = prop_def(FloatAttr)
    input_zero_point = prop_def(IntegerAttr)

    def input_quantization(self) -> tuple[float, int]:
        return float(self.input_scale.value.data), int(self.input_zero_point.value.data)

    def check_input_quantization(self, value: SSAValue, accumulator_ok: bool = False) -> tuple[float, int]:
        assert isinstance(self, QNNOp)
        self.check_quantized(value, "input", accumulator_ok)
        s, z = self.input_quantization()
        self.check_scale(s, "input_scale")
        self.check_zero_point(z, value, "input_zero_point")
        self.check_input(value, s, z, "input")
        return s, z


class Requantizes:
    """Mixin: requantization to the result (docs/quantization.md sections 3 to 5).

    `multipliers` / `shifts` hold one entry per output channel (or one for all); the
    optional `neg_*` pair requantizes negative accumulators (leaky relu); `clamp_min` /
    `clamp_max` narrow the saturation range (relu, relu6, clip). `activation` and
    `act_alpha` only record what the clamps and slope stand for (for export).
    """

    scheme = opt_prop_def(StringAttr)
    multipliers = opt_prop_def(DenseArrayBase)
    shifts = opt_prop_def(DenseArrayBase)
    neg_multipliers = opt_prop_def(DenseArrayBase)
    neg_shifts = opt_prop_def(DenseArrayBase)
    clamp_min = opt_prop_def(IntegerAttr)
    clamp_max = opt_prop_def(IntegerAttr)
    activation = opt_prop_def(StringAttr)
    act_alpha = opt_prop_def(FloatAttr)

    @property
    def scheme_name(self) -> str:
        return self.scheme.data if self.scheme is not None else ""

    def requant(self) -> im.Requant:
        m = int_list(self.multipliers) if self.multipliers is not None else None
        return im.Requant.of(self.scheme_name, int_list(self.shifts), m)

    def negative_requant(self) -> im.Requant | None:
        if self.neg_shifts is None:
            return None
        m = int_list(self.neg_multipliers) if self.neg_multipliers is not None else None
        return im.Requant.of(self.scheme_name, int_list(self.neg_shifts), m)

    def clamp_range(self) -> tuple[int, int]:
        assert isinstance(self, QuantizedResult)
        lo, hi = self.result_range()
        cmin, cmax = ival(self.clamp_min), ival(self.clamp_max)
        return (lo if cmin is None else max(lo, cmin)), (hi if cmax is None else min(hi, cmax))

    def output_stage(self) -> im.OutputStage:
        """The whole output stage; lay per-channel parameters along the channel axis
        with `.along(ndim, axis)` before applying it."""
        assert isinstance(self, QuantizedResult)
        lo, hi = self.clamp_range()
        return im.OutputStage(self.requant(), ival(self.zero_point) or 0, lo, hi, self.negative_requant())

    def check_no_requant(self, why: str) -> None:
        assert isinstance(self, QNNOp)
        given = [n for n in ("scheme", "multipliers", "shifts", "neg_multipliers", "neg_shifts", "clamp_min",
                             "clamp_max", "activation", "act_alpha") if getattr(self, n) is not None]
        self.check(not given, f"{why}: takes no {', '.join(given)}")

    def check_requant(self, lengths: Sequence[int], reals: np.ndarray, leaky_ok: bool = True) -> None:
        """Ranges of the parameters, their lengths (one of `lengths`) and agreement with
        the real multipliers `reals` the scales call for (broadcast to their length)."""
        assert isinstance(self, QNNOp)
        self.check(self.scheme_name in im.SCHEMES, f"scheme must be one of {im.SCHEMES}, got '{self.scheme_name}'")
        self.check(self.shifts is not None, "shifts are missing")
        shifts = int_list(self.shifts)
        self.check(len(shifts) in set(lengths), f"{len(shifts)} shifts, expected {' or '.join(map(str, sorted(set(lengths))))}")
        self.check_parameters(self.multipliers, shifts, "")
        self.check_agreement(self.requant(), reals, len(shifts), "multipliers")
        lo, hi = self.clamp_range()
        self.check(lo <= hi, f"clamp range [{lo}, {hi}] is empty")
        act = self.activation.data if self.activation is not None else None
        self.check(act is None or act in ACTIVATIONS, f"unknown activation '{act}' (one of {ACTIVATIONS})")
        leaky = self.neg_shifts is not None
        self.check(leaky_ok or not leaky, "takes no neg_shifts (no leaky relu here)")
        self.check(leaky == (act == "leaky_relu"), "neg_shifts go with activation = \"leaky_relu\" and only with it")
        if self.neg_shifts is None:
            self.check(self.neg_multipliers is None, "neg_multipliers without neg_shifts")
            return
        neg = int_list(self.neg_shifts)
        self.check(len(neg) == len(shifts), f"{len(neg)} neg_shifts for {len(shifts)} shifts")
        self.check_parameters(self.neg_multipliers, neg, "neg_")
        alpha = fval(self.act_alpha)
        if alpha is not None:
            negative = self.negative_requant()
            assert negative is not None
            # The pow2 slope is alpha rounded to 16 bits: allow that much on top.
            slack = np.asarray(reals, dtype=np.float64) * 2.0**-POW2_ALPHA_SLACK_BITS
            self.check_agreement(negative, np.asarray(reals) * alpha, len(neg), "neg_multipliers", slack)

    def check_parameters(self, multipliers: DenseArrayBase | None, shifts: Sequence[int], prefix: str) -> None:
        assert isinstance(self, QNNOp)
        if self.scheme_name == "fixed":
            self.check(multipliers is not None, f"scheme fixed needs {prefix}multipliers")
            self.check(all(im.FIXED_SHIFT_RANGE[0] <= s <= im.FIXED_SHIFT_RANGE[1] for s in shifts),
                       f"fixed {prefix}shifts must lie in {list(im.FIXED_SHIFT_RANGE)}, got {list(shifts)}")
        else:
            self.check(all(im.POW2_SHIFT_RANGE[0] <= s <= im.POW2_SHIFT_RANGE[1] for s in shifts),
                       f"pow2 {prefix}shifts must lie in {list(im.POW2_SHIFT_RANGE)}, got {list(shifts)}")
        if multipliers is None:
            return
        m = int_list(multipliers)
        self.check(len(m) == len(shifts), f"{len(m)} {prefix}multipliers for {len(shifts)} {prefix}shifts")
        if self.scheme_name == "fixed":
            lo, hi = im.FIXED_MULTIPLIER_RANGE
            self.check(all(lo <= v <= hi or v == 0 for v in m), f"fixed {prefix}multipliers must lie in [2^30, 2^31) (or be 0), got {list(m)}")
            self.check(all(s == 0 for v, s in zip(m, shifts, strict=True) if v == 0), "a 0 multiplier needs shift 0")
        else:
            lo, hi = im.POW2_MULTIPLIER_RANGE
            self.check(all(lo <= v <= hi for v in m), f"pow2 {prefix}multipliers must lie in [1, 2^16), got {list(m)}")
            self.check(all(v == 1 for v, s in zip(m, shifts, strict=True) if s < 0), "pow2 left shifts need multiplier 1")

    def check_agreement(self, requant: im.Requant, reals: np.ndarray, n: int, what: str,
                        slack: np.ndarray | None = None) -> None:
        """The parameters stand for the real multipliers the scales call for."""
        assert isinstance(self, QNNOp)
        want = np.broadcast_to(np.asarray(reals, dtype=np.float64).reshape(-1), (n,)) if np.size(reals) in (1, n) else None
        self.check(want is not None, f"{np.size(reals)} scales for {n} {what}")
        assert want is not None
        got = im.multiplier_value(requant.multipliers, requant.shifts, requant.scheme)
        if requant.scheme == "fixed":
            tol = want * FIXED_MULTIPLIER_TOLERANCE
            flushed = (requant.multipliers == 0) & (want < 2.0**-31)
            ok = flushed | (np.abs(got - want) <= tol)
        elif np.all(requant.multipliers == 1) and slack is None:
            ok = got == want  # pure shifts: exact
        else:
            extra = 0.0 if slack is None else np.broadcast_to(slack.reshape(-1), (n,))
            ok = np.abs(got - want) <= want * POW2_MULTIPLIER_TOLERANCE + extra
        bad = int(np.argmin(ok)) if not np.all(ok) else -1
        self.check(bad < 0, f"{what}[{bad}] stands for {got[bad] if bad >= 0 else 0:.9g} but the scales call for "
                            f"{want[bad] if bad >= 0 else 0:.9g}")


# ---------------------------------------------------------------------------------------
# Boundary ops
# ---------------------------------------------------------------------------------------


@irdl_op_definition
class QuantizeOp(QuantizedResult, QNNOp):
    """Float to int8/uint8: saturate(round_half_even(x / scale) + zero_point), in float32."""

    name = "qnn.quantize"
    input = operand_def(TensorType)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        self.check(is_float(element_type_of(self.input)), f"input must be float, got {element_type_of(self.input)}")
        self.check_result_quantization()
        self.check_shape(shape_of(self.input), self.result)


@irdl_op_definition
class DequantizeOp(QNNOp):
    """int8/uint8/int32 to float: (q - zero_point) * scale, in float32. Its `scale` and
    `zero_point` describe its operand."""

    name = "qnn.dequantize"
    input = operand_def(TensorType)
    scale = prop_def(FloatAttr)
    zero_point = prop_def(IntegerAttr)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        self.check_quantized(self.input, "input", accumulator_ok=True)
        self.check(is_float(element_type_of(self.result)), f"result must be float, got {element_type_of(self.result)}")
        s = self.check_scale(fval(self.scale), "scale")
        z = ival(self.zero_point) or 0
        self.check_zero_point(z, self.input, "zero_point")
        self.check_input(self.input, s, z, "input")
        self.check_shape(shape_of(self.input), self.result)


# ---------------------------------------------------------------------------------------
# Contractions: conv2d, gemm, matmul
# ---------------------------------------------------------------------------------------


class ContractionOp(Requantizes, QuantizedInput, QuantizedResult, QNNOp):
    """acc = bias + sum (x - z_x)(w - z_w), exact in int32, then the output stage (or the
    accumulator itself for an i32 result, as ONNX ConvInteger / MatMulInteger)."""

    weight_scales = prop_def(DenseArrayBase)
    weight_zero_point = opt_prop_def(IntegerAttr)

    def weight_operand(self) -> SSAValue:
        return self.operands[1]

    def bias_operand(self) -> SSAValue | None:
        return None

    def verify_contraction(self, c: int, k: int) -> None:
        """`c` output channels (the length of per-channel parameters), `k` products per
        accumulator."""
        sx, zx = self.check_input_quantization(self.operands[0])
        w = self.weight_operand()
        self.check_quantized(w, "weight")
        ws = float_list(self.weight_scales)
        self.check(len(ws) in (1, c), f"{len(ws)} weight_scales for {c} output channels (expected 1 or {c})")
        for s in ws:
            self.check_scale(s, "weight scale")
        zw = ival(self.weight_zero_point) or 0
        self.check_zero_point(zw, w, "weight_zero_point")
        if len(ws) == 1:
            self.check_input(w, ws[0], zw, "weight")
        bias = self.bias_operand()
        if bias is not None:
            self.check(is_accumulator(element_type_of(bias)), f"bias must be i32, got {element_type_of(bias)}")
            self.check(shape_of(bias) == (c,), f"bias shape {shape_of(bias)} should be ({c},)")
        self.check(k <= im.MAX_REDUCTION, f"reduction length {k} exceeds {im.MAX_REDUCTION}: the int32 accumulator could overflow")
        if not self.check_result_quantization(accumulator_ok=True):
            self.check_no_requant("an i32 result is the accumulator")
            return
        sy, zy = self.result_quantization() or (1.0, 0)
        if self.scheme_name == "pow2":
            self.check_pow2_symmetric([sx, *ws, sy], [zx, zw, zy])
        self.check_requant((1, c), sx * np.asarray(ws) / sy)


@irdl_op_definition
class Conv2dOp(ContractionOp):
    """2-d convolution (NCHW, OIHW, `group` covers depthwise); padding holds the input
    zero point. pads = (top, left, bottom, right)."""

    name = "qnn.conv2d"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    strides = prop_def(DenseArrayBase)
    pads = prop_def(DenseArrayBase)
    dilations = prop_def(DenseArrayBase)
    group = prop_def(IntegerAttr)
    result = result_def(TensorType)

    def bias_operand(self) -> SSAValue | None:
        return self.bias

    def verify_op(self) -> None:
        st, pd, dl = int_list(self.strides), int_list(self.pads), int_list(self.dilations)
        self.check(len(st) == 2 and min(st) >= 1, f"strides {st} must be two positive integers")
        self.check(len(dl) == 2 and min(dl) >= 1, f"dilations {dl} must be two positive integers")
        self.check(len(pd) == 4 and min(pd) >= 0, f"pads {pd} must be four non-negative integers")
        try:
            expected = nn.conv2d_output_shape(shape_of(self.input), shape_of(self.weight), st, pd, dl,
                                              int(self.group.value.data))
        except ValueError as e:
            self.check(False, str(e))
            return
        self.check_shape(expected, self.result)
        _, ci, kh, kw = shape_of(self.weight)
        self.verify_contraction(shape_of(self.weight)[0], ci * kh * kw)


@irdl_op_definition
class GemmOp(ContractionOp):
    """Y = A @ op(B) + bias with A [M, K], B [K, N] (or [N, K] with trans_b = 1); per-channel
    parameters run over N."""

    name = "qnn.gemm"
    a = operand_def(TensorType)
    b = operand_def(TensorType)
    c = opt_operand_def(TensorType)
    trans_b = prop_def(IntegerAttr)
    result = result_def(TensorType)

    def bias_operand(self) -> SSAValue | None:
        return self.c

    def verify_op(self) -> None:
        try:
            expected = nn.gemm_output_shape(shape_of(self.a), shape_of(self.b), False, bool(self.trans_b.value.data))
        except ValueError as e:
            self.check(False, str(e))
            return
        self.check_shape(expected, self.result)
        self.verify_contraction(expected[1], shape_of(self.a)[1])


@irdl_op_definition
class MatMulOp(ContractionOp):
    """numpy.matmul of two quantized tensors (batched, broadcasting); `weight_*` describe
    the second operand, whose per-channel parameters run over its last axis."""

    name = "qnn.matmul"
    a = operand_def(TensorType)
    b = operand_def(TensorType)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        try:
            expected = nn.matmul_output_shape(shape_of(self.a), shape_of(self.b))
        except ValueError as e:
            self.check(False, str(e))
            return
        self.check_shape(expected, self.result)
        b = shape_of(self.b)
        self.verify_contraction(b[-1] if len(b) > 1 else 1, shape_of(self.a)[-1])


# ---------------------------------------------------------------------------------------
# Elementwise: add, concat, lookup table, requantize
# ---------------------------------------------------------------------------------------


class MultiInputOp(Requantizes, QuantizedResult, QNNOp):
    """Operands each with their own scale and zero point (`input_scales`, `input_zero_points`)."""

    input_scales = prop_def(DenseArrayBase)
    input_zero_points = prop_def(DenseArrayBase)

    def input_quantizations(self) -> list[tuple[float, int]]:
        return list(zip(float_list(self.input_scales), int_list(self.input_zero_points), strict=False))

    def check_inputs(self, values: Sequence[SSAValue]) -> list[tuple[float, int]]:
        ss, zs = float_list(self.input_scales), int_list(self.input_zero_points)
        n = len(values)
        self.check(len(ss) == n and len(zs) == n, f"input_scales and input_zero_points need {n} entries, got {len(ss)} and {len(zs)}")
        for i, (v, s, z) in enumerate(zip(values, ss, zs, strict=True)):
            self.check_quantized(v, f"operand {i}")
            self.check_scale(s, f"input scale {i}")
            self.check_zero_point(z, v, f"input zero point {i}")
            self.check_input(v, s, z, f"operand {i}")
        return self.input_quantizations()


@irdl_op_definition
class AddOp(MultiInputOp):
    """Residual add with broadcasting: each operand to a common scale with
    operand_multipliers / operand_shifts, exact sum, then the output stage."""

    name = "qnn.add"
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    operand_multipliers = opt_prop_def(DenseArrayBase)
    operand_shifts = prop_def(DenseArrayBase)
    result = result_def(TensorType)

    def operand_requant_table(self) -> im.Requant:
        m = int_list(self.operand_multipliers) if self.operand_multipliers is not None else None
        return im.Requant.of(self.scheme_name, int_list(self.operand_shifts), m)

    def operand_requants(self) -> tuple[im.Requant, im.Requant]:
        """Operand i to the common scale: apply to (q_i - z_i)."""
        table = self.operand_requant_table()
        return table.take(0), table.take(1)

    def verify_op(self) -> None:
        try:
            expected = nn.broadcast_shapes(shape_of(self.lhs), shape_of(self.rhs))
        except ValueError as e:
            self.check(False, str(e))
            return
        self.check_shape(expected, self.result)
        (sa, za), (sb, zb) = self.check_inputs([self.lhs, self.rhs])
        self.check_result_quantization()
        sy, zy = self.result_quantization() or (1.0, 0)
        self.check(self.scheme_name in im.SCHEMES, f"scheme must be one of {im.SCHEMES}, got '{self.scheme_name}'")
        if self.scheme_name == "pow2":
            self.check_pow2_symmetric([sa, sb, sy], [za, zb, zy])
        shifts = int_list(self.operand_shifts)
        self.check(len(shifts) == 2, f"operand_shifts need 2 entries, got {len(shifts)}")
        self.check_parameters(self.operand_multipliers, shifts, "operand_")
        table = self.operand_requant_table()
        # The common scale s_m follows from the first operand's parameters.
        mid = sa / float(im.multiplier_value(table.multipliers, table.shifts, table.scheme)[0])
        self.check_agreement(table, np.array([sa, sb]) / mid, 2, "operand_multipliers")
        self.check_requant((1,), np.array([mid / sy]), leaky_ok=False)


@irdl_op_definition
class ConcatOp(MultiInputOp):
    """Concatenation along `axis`; operand i is requantized to the result with entry i of
    multipliers / shifts (identity parameters copy it)."""

    name = "qnn.concat"
    inputs = var_operand_def(TensorType)
    axis = prop_def(IntegerAttr)
    result = result_def(TensorType)

    def operand_stages(self) -> list[im.OutputStage]:
        stage = self.output_stage()
        return [im.OutputStage(stage.requant.take(i), stage.zero_point, stage.lo, stage.hi) for i in range(len(self.inputs))]

    def verify_op(self) -> None:
        n = len(self.inputs)
        self.check(n >= 1, "concat needs at least one operand")
        try:
            expected = nn.concat_output_shape([shape_of(v) for v in self.inputs], int(self.axis.value.data))
        except ValueError as e:
            self.check(False, str(e))
            return
        self.check_shape(expected, self.result)
        quant = self.check_inputs(list(self.inputs))
        self.check_result_quantization()
        sy, zy = self.result_quantization() or (1.0, 0)
        if self.scheme_name == "pow2":
            self.check_pow2_symmetric([s for s, _ in quant] + [sy], [z for _, z in quant] + [zy])
        self.check_requant((n,), np.array([s for s, _ in quant]) / sy, leaky_ok=False)


@irdl_op_definition
class LutOp(QuantizedInput, QuantizedResult, QNNOp):
    """Table activation: y = table[x - qmin], the 256-entry table built at compile time
    (sigmoid, tanh, hard-sigmoid, hard-swish, unfused relu / clip / leaky relu).
    `activation` records which function the table holds."""

    name = "qnn.lut"
    input = operand_def(TensorType)
    table = operand_def(TensorType)
    activation = opt_prop_def(StringAttr)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        self.check_input_quantization(self.input)
        self.check_result_quantization()
        self.check(shape_of(self.table) == (256,), f"table shape {shape_of(self.table)} should be (256,)")
        self.check(element_type_of(self.table) == element_type_of(self.result),
                   f"table element type {element_type_of(self.table)} differs from the result's {element_type_of(self.result)}")
        self.check_shape(shape_of(self.input), self.result)


@irdl_op_definition
class RequantizeOp(Requantizes, QuantizedInput, QuantizedResult, QNNOp):
    """Change of scale (and zero point): y = output_stage(x - input_zero_point); the input
    may be an i32 accumulator (after ConvInteger / MatMulInteger)."""

    name = "qnn.requantize"
    input = operand_def(TensorType)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        sx, zx = self.check_input_quantization(self.input, accumulator_ok=True)
        self.check_result_quantization()
        sy, zy = self.result_quantization() or (1.0, 0)
        self.check_shape(shape_of(self.input), self.result)
        if self.scheme_name == "pow2":
            self.check_pow2_symmetric([sx, sy], [zx, zy])
        self.check_requant((1,), np.array([sx / sy]))


# ---------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------


class QuantizedPoolOp(Requantizes, QuantizedInput, QuantizedResult, QNNOp):
    """Max pooling on the integers (result quantization = input's, no requantization);
    average pooling sums q - z_x over the n counted elements of each window and
    requantizes with parameter set n - 1 (real multiplier s_x / (s_y n))."""

    kind = prop_def(StringAttr)

    def verify_pool(self, counts: Sequence[int]) -> None:
        """`counts`: the window count n that each average-pooling parameter set is for."""
        self.check(self.kind.data in ("max", "avg"), f"kind '{self.kind.data}' must be max or avg")
        sx, zx = self.check_input_quantization(self.operands[0])
        self.check_result_quantization()
        self.check(element_type_of(self.operands[0]) == element_type_of(self.results[0]),
                   "pooling keeps the element type")
        sy, zy = self.result_quantization() or (1.0, 0)
        if self.kind.data == "max":
            self.check(math.isclose(sx, sy, rel_tol=1e-9) and zx == zy, "max pooling keeps the input's scale and zero point")
            self.check_no_requant("max pooling")
            return
        self.check(self.activation is None, "average pooling fuses no activation")
        if self.scheme_name == "pow2":
            self.check_pow2_symmetric([sx, sy], [zx, zy])
        self.check_requant((len(counts),), sx / (sy * np.asarray(counts, dtype=np.float64)), leaky_ok=False)


@irdl_op_definition
class PoolOp(QuantizedPoolOp):
    """Windowed max or average pooling over H and W, attributes as nn.pool; for average
    pooling `multipliers` / `shifts` have kernel_h * kernel_w entries (entry n - 1 for a
    window that counts n elements)."""

    name = "qnn.pool"
    input = operand_def(TensorType)
    kernel = prop_def(DenseArrayBase)
    strides = prop_def(DenseArrayBase)
    pads = prop_def(DenseArrayBase)
    dilations = prop_def(DenseArrayBase)
    ceil_mode = prop_def(IntegerAttr)
    count_include_pad = prop_def(IntegerAttr)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        k, st, pd, dl = int_list(self.kernel), int_list(self.strides), int_list(self.pads), int_list(self.dilations)
        expected = self.check_pool_window(k, st, pd, dl, bool(self.ceil_mode.value.data))
        if expected is None:
            return
        self.check_shape(expected, self.result)
        self.verify_pool(range(1, k[0] * k[1] + 1))


@irdl_op_definition
class GlobalPoolOp(QuantizedPoolOp):
    """Max or average over all spatial axes (kept as size 1); average pooling has one
    parameter set, for n = the product of the spatial sizes."""

    name = "qnn.global_pool"
    input = operand_def(TensorType)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        x = shape_of(self.input)
        self.check(len(x) >= 3, f"global pool needs rank >= 3, got {x}")
        self.check_shape(x[:2] + (1,) * (len(x) - 2), self.result)
        self.verify_pool([math.prod(x[2:])])


QNN = Dialect(
    "qnn",
    [
        QuantizeOp,
        DequantizeOp,
        Conv2dOp,
        GemmOp,
        MatMulOp,
        AddOp,
        ConcatOp,
        LutOp,
        RequantizeOp,
        PoolOp,
        GlobalPoolOp,
    ],
    [],
)
