"""From chosen quantization parameters to `qnn` op properties (the compile-time half of
docs/quantization.md): scale choice, weight and bias quantization, requantization
parameters for each op kind, fused activations. The quantize pass (parameters from
calibration) and the QDQ importer (parameters read from the ONNX model) both build their
qnn ops with these, so an op means the same whichever way it was made.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.irdl import IRDLOperation

from compiler.errors import LayerloomError
from compiler.quant import intmath as im
from compiler.tensors import tensor_type
from dialects import nn, qnn
from dialects.nn import f64attr, floats, i64attr, ints
from dialects.qnn import I8, UI8

Props = dict[str, Attribute]
BIAS_LIMIT = 2**24 - 1  # spec section 5: the pass keeps |bias| < 2^24 so the int32 accumulator cannot overflow


@dataclass(frozen=True)
class QParams:
    """How an 8-bit tensor is quantized: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int
    unsigned: bool = False

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.unsigned else np.int8)

    @property
    def element_type(self) -> Attribute:
        return UI8 if self.unsigned else I8

    @property
    def qrange(self) -> tuple[int, int]:
        return im.UINT8_RANGE if self.unsigned else im.INT8_RANGE

    def result_props(self) -> Props:
        return {"scale": f64attr(self.scale), "zero_point": i64attr(self.zero_point)}

    def input_props(self) -> Props:
        return {"input_scale": f64attr(self.scale), "input_zero_point": i64attr(self.zero_point)}

    def quantize(self, x: np.ndarray) -> np.ndarray:
        return im.quantize(x, self.scale, self.zero_point, *self.qrange).astype(self.dtype)

    def same(self, other: QParams) -> bool:
        return math.isclose(self.scale, other.scale, rel_tol=1e-9) and (self.zero_point, self.unsigned) == (
            other.zero_point,
            other.unsigned,
        )


def float32(x: float) -> float:
    return float(np.float32(x))


def choose_params(lo: float, hi: float, scheme: str) -> QParams:
    """Activation parameters from a calibrated range (spec section 1): `fixed` asymmetric
    int8, `pow2` symmetric with a power-of-two scale."""
    if scheme == "pow2":
        return QParams(2.0 ** -im.pow2_fraction_bits(max(abs(lo), abs(hi))), 0)
    scale, zero_point = im.asymmetric_params(lo, hi)
    return QParams(scale, zero_point)


WEIGHT_SCALES = ("max", "mse")
# Each scheme's default follows its reference toolchain: TFLite / onnxruntime take max|w|
# (fixed), Vitis AI's quantizer the fix position of least error (pow2).
DEFAULT_WEIGHT_SCALES = {"fixed": "max", "pow2": "mse"}
# The mse weight scales' candidates: max|w| / 127 scaled by 0.50, 0.51, ..., 1.00 (`fixed`),
# or the power of two covering max|w| and the next finer ones (`pow2`).
MSE_WEIGHT_FRACTIONS = np.arange(50, 101) / 100.0
MSE_WEIGHT_POW2_STEPS = 3


def weight_scales(w: np.ndarray, axis: int, per_channel: bool, scheme: str, method: str = "max") -> np.ndarray:
    """Symmetric weight scales, one per slice along `axis` (or one): from max|w|, that is
    max|w| / 127 rounded to float32 (`fixed`) or the finest power of two that holds max|w|
    (`pow2`); with `method="mse"`, the candidate scale (docs/quantization.md section 1)
    whose quantized weights are closest to `w` in squared error, per slice."""
    moved = np.moveaxis(np.asarray(w, dtype=np.float64), axis, 0).reshape(w.shape[axis], -1)
    rows = moved if per_channel else moved.reshape(1, -1)
    peaks = np.abs(rows).max(axis=1, initial=0.0)
    if scheme == "pow2":
        fraction_bits = np.array([im.pow2_fraction_bits(float(p)) for p in peaks])
        candidates = [2.0 ** -(fraction_bits + k) for k in range(MSE_WEIGHT_POW2_STEPS if method == "mse" else 1)]
    else:
        fractions = MSE_WEIGHT_FRACTIONS[::-1] if method == "mse" else [1.0]
        candidates = [np.array([im.symmetric_scale(float(p) * f) for p in peaks]) for f in fractions]
    if len(candidates) == 1:
        return candidates[0]
    errors = np.stack([weight_error(rows, s) for s in candidates])  # (candidates, slices)
    best = np.argmin(errors, axis=0)  # ties: the first, i.e. the widest range
    return np.stack(candidates)[best, np.arange(rows.shape[0])]


def weight_error(rows: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Squared error of each row of weights quantized with its scale (values in [-127, 127])."""
    s = scales[:, None]
    q = np.clip(np.rint(rows / s), *im.WEIGHT_RANGE)
    return np.square(rows - q * s).sum(axis=1)


def quantize_weights(w: np.ndarray, scales: np.ndarray, axis: int) -> np.ndarray:
    s = scales if scales.size > 1 else np.full(w.shape[axis], scales[0])
    return im.quantize_weights(w, s, axis).astype(np.int8)


def quantize_bias(bias: np.ndarray, input_scale: float, scales: np.ndarray, channels: int,
                  clip: bool = True) -> np.ndarray:
    """int32 bias at the accumulator scale, kept below 2^24 in magnitude (spec section 5):
    clipped there, or, without `clip`, a LayerloomError when it does not fit."""
    b = np.broadcast_to(np.asarray(bias, dtype=np.float64).reshape(-1), (channels,))
    q = im.quantize_bias(b, input_scale, np.broadcast_to(scales, (channels,)))
    if not clip and np.any(np.abs(q) > BIAS_LIMIT):
        raise LayerloomError(f"a bias does not fit the accumulator (|{int(np.abs(q).max())}| > 2^24 - 1)")
    return np.clip(q, -BIAS_LIMIT, BIAS_LIMIT).astype(np.int32)


def requant_props(scheme: str, reals: np.ndarray | Sequence[float], prefix: str = "") -> Props:
    """(multipliers and) shifts standing for the real multipliers `reals`. Under `pow2`
    every real must be a power of two (a pure shift)."""
    r = np.asarray(reals, dtype=np.float64).reshape(-1)
    if scheme == "pow2":
        shifts = [-pow2_log(v) for v in r]
        bad = [s for s in shifts if not im.POW2_SHIFT_RANGE[0] <= s <= im.POW2_SHIFT_RANGE[1]]
        if bad:
            raise LayerloomError(f"pow2 shift {bad[0]} is outside {list(im.POW2_SHIFT_RANGE)}: the scales are too far apart")
        return {f"{prefix}shifts": ints(shifts)}
    m, s = im.quantize_multipliers(r)
    return {f"{prefix}multipliers": ints(m.tolist()), f"{prefix}shifts": ints(s.tolist())}


def pow2_log(value: float) -> int:
    """log2 of an exact power of two."""
    mantissa, e = math.frexp(value)
    if mantissa != 0.5:
        raise LayerloomError(f"{value!r} is not a power of two")
    return e - 1


# ---------------------------------------------------------------------------------------
# Fused activations
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Activation:
    """An activation folded into an op's output stage: relu, clip [lo, hi] or leaky relu."""

    kind: str
    alpha: float | None = None
    lo: float | None = None
    hi: float | None = None

    @staticmethod
    def of_properties(props: dict[str, Attribute]) -> Activation | None:
        """From an nn conv2d / gemm's fused-activation properties."""
        act = props.get("activation")
        if act is None:
            return None

        def value(key: str) -> float | None:
            attr = props.get(key)
            return None if attr is None else float(attr.value.data)  # type: ignore[attr-defined]

        return Activation(act.data, value("act_alpha"), value("act_min"), value("act_max"))  # type: ignore[attr-defined]


def activation_props(act: Activation | None, out: QParams, scheme: str, reals: np.ndarray, shifts: Sequence[int]) -> Props:
    """Clamps (relu, clip) or negative-accumulator parameters (leaky relu) at the output's
    scale (spec section 5). `reals` and `shifts` are the op's multipliers and shifts."""
    if act is None:
        return {}
    lo, hi = out.qrange
    if act.kind == "relu":
        clamp_min, _ = im.activation_clamp("relu", out.scale, out.zero_point, lo, hi)
        return {"activation": StringAttr("relu"), "clamp_min": i64attr(clamp_min)}
    if act.kind == "clip":
        clamp_min, clamp_max = im.activation_clamp("clip", out.scale, out.zero_point, lo, hi, act.lo, act.hi)
        kind = "relu6" if (act.lo, act.hi) == (0.0, 6.0) else "clip"
        props: Props = {"activation": StringAttr(kind)}
        if act.lo is not None:
            props["clamp_min"] = i64attr(clamp_min)
        if act.hi is not None:
            props["clamp_max"] = i64attr(clamp_max)
        return props
    if act.kind == "leaky_relu":
        alpha = float(act.alpha or 0.0)
        if not 0.0 < alpha < 1.0:
            raise LayerloomError(f"leaky relu slope {alpha} must lie in (0, 1) to be quantized")
        props = {"activation": StringAttr("leaky_relu"), "act_alpha": f64attr(alpha)}
        if scheme == "pow2":
            m = im.pow2_alpha(alpha)
            return props | {"neg_multipliers": ints([m] * len(shifts)),
                            "neg_shifts": ints([s + im.POW2_ALPHA_BITS for s in shifts])}
        return props | requant_props("fixed", np.asarray(reals) * alpha, prefix="neg_")
    raise LayerloomError(f"unknown activation '{act.kind}'")


# ---------------------------------------------------------------------------------------
# Properties of each qnn op kind
# ---------------------------------------------------------------------------------------


def contraction_props(x: QParams, scales: np.ndarray, weight_zero_point: int, out: QParams | None, scheme: str,
                      act: Activation | None = None) -> Props:
    """conv2d / gemm / matmul: input and weight quantization, and (for an 8-bit result)
    the per-channel output stage with its fused activation."""
    props: Props = x.input_props() | {"weight_scales": floats(np.asarray(scales, np.float64).tolist())}
    if weight_zero_point:
        props["weight_zero_point"] = i64attr(weight_zero_point)
    if out is None:
        return props
    reals = x.scale * np.asarray(scales, dtype=np.float64) / out.scale
    requant = requant_props(scheme, reals)
    shifts = [int(s) for s in requant["shifts"].get_values()]  # type: ignore[attr-defined]
    return props | out.result_props() | {"scheme": StringAttr(scheme)} | requant | activation_props(
        act, out, scheme, reals, shifts
    )


def add_props(a: QParams, b: QParams, out: QParams, scheme: str, act: Activation | None = None) -> Props:
    """Residual add (spec section 6): both operands to a common scale, then one output stage."""
    # The common scale: the finer operand's (pow2), or the coarser one's with 16 guard bits (fixed).
    mid = min(a.scale, b.scale) if scheme == "pow2" else max(a.scale, b.scale) / 2**im.ADD_GUARD_BITS
    operand = requant_props(scheme, [a.scale / mid, b.scale / mid], prefix="operand_")
    reals = np.array([mid / out.scale])
    requant = requant_props(scheme, reals)
    shifts = [int(s) for s in requant["shifts"].get_values()]  # type: ignore[attr-defined]
    return ({"input_scales": floats([a.scale, b.scale]), "input_zero_points": ints([a.zero_point, b.zero_point]),
             "scheme": StringAttr(scheme)} | operand | requant | out.result_props()
            | activation_props(act, out, scheme, reals, shifts))


def concat_props(inputs: Sequence[QParams], out: QParams, scheme: str) -> Props:
    """Concat (spec section 6): each operand to the output scale."""
    return ({"input_scales": floats([q.scale for q in inputs]), "input_zero_points": ints([q.zero_point for q in inputs]),
             "scheme": StringAttr(scheme)} | requant_props(scheme, [q.scale / out.scale for q in inputs])
            | out.result_props())


def average_props(x: QParams, out: QParams, counts: Sequence[int], scheme: str) -> Props:
    """Average pooling (spec section 7): one parameter set per window count n."""
    props: Props = x.input_props() | out.result_props() | {"scheme": StringAttr(scheme)}
    if scheme == "pow2":
        d = pow2_log(out.scale) - pow2_log(x.scale)  # f_x - f_y
        params = [im.pow2_divisor(int(n), d) for n in counts]
        return props | {"multipliers": ints([m for m, _ in params]), "shifts": ints([s for _, s in params])}
    return props | requant_props("fixed", [x.scale / (out.scale * n) for n in counts])


def requantize_props(x: QParams, out: QParams, scheme: str, act: Activation | None = None) -> Props:
    reals = np.array([x.scale / out.scale])
    requant = requant_props(scheme, reals)
    shifts = [int(s) for s in requant["shifts"].get_values()]  # type: ignore[attr-defined]
    return (x.input_props() | out.result_props() | {"scheme": StringAttr(scheme)} | requant
            | activation_props(act, out, scheme, reals, shifts))


def pow2_limited_scales(scales: np.ndarray, x: QParams, out: QParams) -> np.ndarray:
    """Power-of-two weight scales moved into the shift range: s = f_x + f_w - f_y must lie in
    [-16, 48] (a channel of tiny weights would otherwise ask for a longer shift)."""
    fx, fy = -pow2_log(x.scale), -pow2_log(out.scale)
    fw = np.array([-pow2_log(float(s)) for s in scales])
    fw = np.clip(fw, im.POW2_SHIFT_RANGE[0] - fx + fy, im.POW2_SHIFT_RANGE[1] - fx + fy)
    return 2.0 ** -fw


# ---------------------------------------------------------------------------------------
# nn op -> qnn op
# ---------------------------------------------------------------------------------------

TABLE_OPS: dict[type[Operation], str] = {
    nn.SigmoidOp: "sigmoid", nn.TanhOp: "tanh", nn.HardSigmoidOp: "hard_sigmoid", nn.HardSwishOp: "hardswish",
    nn.ReluOp: "relu", nn.ClipOp: "clip", nn.LeakyReluOp: "leaky_relu",
}
POOL_GEOMETRY = ("kind", "kernel", "strides", "pads", "dilations", "ceil_mode", "count_include_pad")


def table_function(op: Operation) -> Callable[[np.ndarray], np.ndarray]:
    """The float function a lookup-table op computes, with its parameters bound."""
    fn = im.TABLE_FUNCTIONS[TABLE_OPS[type(op)]]
    if isinstance(op, nn.HardSigmoidOp):
        alpha, beta = float(op.alpha.value.data), float(op.beta.value.data)
        return lambda x: fn(x, alpha, beta)
    if isinstance(op, nn.ClipOp):
        lo, hi = qnn.fval(op.min), qnn.fval(op.max)
        return lambda x: fn(x, -np.inf if lo is None else lo, np.inf if hi is None else hi)
    if isinstance(op, nn.LeakyReluOp):
        alpha = float(op.alpha.value.data)
        return lambda x: fn(x, alpha)
    return fn


class Lowerer(ABC):
    """Builds the qnn form of an nn op. Subclasses say where the integers come from: how an
    operand becomes int8 (`int_operand`), how a constant weight is quantized
    (`quantized_weight`), which values are constants (`constant`) and how new weights are
    made (`add_weight`). The quantize pass answers from calibration, the QDQ importer from
    the model's QuantizeLinear / DequantizeLinear nodes."""

    scheme = "fixed"
    # Whether a bias that does not fit below 2^24 is clipped (the quantize pass chose the
    # scales and accepts the error) or refused (the scales are a model's: clipping would
    # silently change its arithmetic).
    clips_bias = True

    @abstractmethod
    def int_operand(self, value: SSAValue, before: Operation) -> tuple[SSAValue, QParams]:
        """The int8 form of `value` (available before `before`) and its quantization."""

    @abstractmethod
    def quantized_weight(self, value: SSAValue, axis: int, x: QParams, out: QParams,
                         factor: float = 1.0) -> tuple[np.ndarray, np.ndarray, int]:
        """(integers, scales along `axis` or one, zero point) of the constant `value` * factor."""

    @abstractmethod
    def constant(self, value: SSAValue | None) -> np.ndarray | None:
        """The array of a constant value (an nn.weight in the store), else None."""

    @abstractmethod
    def add_weight(self, array: np.ndarray, before: Operation) -> SSAValue:
        """A new weight holding `array`, placed before `before`."""

    def corrected_bias(self, op: Operation, bias: np.ndarray | None, weights: np.ndarray, scales: np.ndarray,
                       axis: int, factor: float = 1.0) -> np.ndarray | None:
        """The float bias (one value per output channel, or None) to quantize for `op`,
        whose constant weights (times `factor`) became `weights` with `scales` along `axis`:
        `bias` itself unless a subclass corrects it."""
        return bias

    def lower(self, op: Operation, out: QParams, act: Activation | None = None) -> Operation:
        """The qnn op computing `op` with result quantization `out` (not yet inserted; the
        weights it needs are, before `op`). `act`: an activation that follows `op` (for a
        conv or gemm, instead of its own fused one)."""
        result_type = tensor_type(nn.shape_of(op.results[0]), out.element_type)

        def build(cls: type[IRDLOperation], operands: list, props: Props) -> Operation:
            return cls.build(operands=operands, result_types=[result_type], properties=props)

        if isinstance(op, nn.Conv2dOp):
            x, xq = self.int_operand(op.input, op)
            w, scales, zw = self.quantized_weight(op.weight, 0, xq, out)
            b_float = self.corrected_bias(op, self.constant(op.bias), w, scales, 0)
            operands: list = [x, self.add_weight(w, op)]
            operands.append([] if b_float is None else self.add_weight(
                quantize_bias(b_float, xq.scale, scales, w.shape[0], self.clips_bias), op))
            props = {k: op.properties[k] for k in ("strides", "pads", "dilations", "group")}
            props |= contraction_props(xq, scales, zw, out, self.scheme, act or Activation.of_properties(op.properties))
            return build(qnn.Conv2dOp, operands, props)
        if isinstance(op, nn.GemmOp):
            a, aq = self.int_operand(op.a, op)
            trans_b, n = int(op.trans_b.value.data), nn.shape_of(op.result)[1]
            c = self.constant(op.c)
            c_float = None if c is None else gemm_bias(c, n) * float(op.beta.value.data)
            if self.constant(op.b) is None:
                b, bq = self.int_operand(op.b, op)
                scales, zw = np.array([bq.scale]), bq.zero_point
            else:
                axis, alpha = 0 if trans_b else 1, float(op.alpha.value.data)
                w, scales, zw = self.quantized_weight(op.b, axis, aq, out, alpha)
                c_float = self.corrected_bias(op, c_float, w, scales, axis, alpha)
                b = self.add_weight(w, op)
            bias = [] if c_float is None else [self.add_weight(quantize_bias(c_float, aq.scale, scales, n, self.clips_bias), op)]
            props = {"trans_b": op.trans_b} | contraction_props(aq, scales, zw, out, self.scheme,
                                                                act or Activation.of_properties(op.properties))
            return build(qnn.GemmOp, [a, b, bias], props)
        if isinstance(op, nn.MatMulOp):
            a, aq = self.int_operand(op.a, op)
            if self.constant(op.b) is None:
                b, bq = self.int_operand(op.b, op)
                scales, zw = np.array([bq.scale]), bq.zero_point
            else:
                w, scales, zw = self.quantized_weight(op.b, len(nn.shape_of(op.b)) - 1, aq, out)
                b = self.add_weight(w, op)
            return build(qnn.MatMulOp, [a, b], contraction_props(aq, scales, zw, out, self.scheme))
        if isinstance(op, nn.AddOp):
            (a, aq), (b, bq) = self.int_operand(op.lhs, op), self.int_operand(op.rhs, op)
            return build(qnn.AddOp, [a, b], add_props(aq, bq, out, self.scheme, act))
        if isinstance(op, nn.ConcatOp):
            parts = [self.int_operand(v, op) for v in op.inputs]
            props = concat_props([q for _, q in parts], out, self.scheme) | {"axis": op.axis}
            return build(qnn.ConcatOp, [[v for v, _ in parts]], props)
        if isinstance(op, nn.PoolOp | nn.GlobalPoolOp):
            x, xq = self.int_operand(op.operands[0], op)
            if isinstance(op, nn.PoolOp):
                kh, kw = nn.int_list(op.kernel)
                counts: Sequence[int] = range(1, kh * kw + 1)
                geometry = {k: op.properties[k] for k in POOL_GEOMETRY}
            else:
                counts, geometry = [math.prod(nn.shape_of(op.input)[2:])], {"kind": op.kind}
            cls = qnn.PoolOp if isinstance(op, nn.PoolOp) else qnn.GlobalPoolOp
            return build(cls, [x], geometry | average_props(xq, out, counts, self.scheme))
        if type(op) in TABLE_OPS:
            x, xq = self.int_operand(op.operands[0], op)
            table = im.build_table(table_function(op), xq.scale, xq.zero_point, xq.qrange, out.scale, out.zero_point,
                                   out.qrange).astype(out.dtype)
            props = xq.input_props() | out.result_props() | {"activation": StringAttr(TABLE_OPS[type(op)])}
            return build(qnn.LutOp, [x, self.add_weight(table, op)], props)
        raise LayerloomError(f"no qnn form for '{op.name}'")


def gemm_bias(c: np.ndarray, n: int) -> np.ndarray:
    """A gemm's C as one value per output column (shapes (), (1,), (N,), (1, N)); ValueError otherwise."""
    if c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1) or c.shape[-1:] not in ((), (1,), (n,)):
        raise ValueError(f"gemm C of shape {c.shape} is not one value per output column")
    return np.broadcast_to(c.reshape(-1) if c.size else np.zeros(1), (n,)).astype(np.float64)
