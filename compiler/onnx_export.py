"""ONNX export: `export_onnx(program, path)` writes an `nn` / `qnn` program as an ONNX model
that onnxruntime loads (IR version 10, opset 21).

Quantized ops are written in the QDQ form onnxruntime and other tools read: each integer
op becomes DequantizeLinear on its int8 inputs, the float op, and QuantizeLinear to its
result's scale and zero point (weights are int8 initializers behind a per-channel
DequantizeLinear, biases int32 at the accumulator scale). onnxruntime fuses these groups
back into integer kernels; its roundings differ from the spec's in ties and in float32
arithmetic, so results agree within one step of the output scale, not bit for bit.
Three ops are written exactly instead: max pooling runs on the int8 tensor itself, a
lookup table becomes a Gather on the table, and i32 accumulators (ConvInteger /
MatMulInteger imports) are written as those ops. Float `nn` ops (layers kept in float,
softmax, ...) are written as their ONNX ops.

The `pow2` scheme rounds ties up, QuantizeLinear rounds them to even. A pure-shift
requantization by s steps lands its real result on a grid of scale * 2^-s, so adding a
quarter grid step before QuantizeLinear (an Add of scale * 2^-(s+2), per channel) turns
every tie upward and moves nothing else across a rounding boundary: the exported model
then rounds as the spec does (average pooling: see `pow2_average_nudge`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from xdsl.dialects.builtin import TensorType
from xdsl.dialects.func import ReturnOp
from xdsl.ir import Operation, SSAValue

from compiler.errors import LayerloomError
from compiler.program import Program, atomic_write_with, io_names
from compiler.tensors import dtype_of
from dialects import nn, qnn
from dialects.nn import float_list, int_list

IR_VERSION = 10  # onnxruntime 1.3x loads IR version 13 at most; 10 is what the project hands it
OPSET = 21
INT64_MIN = -(2**63)


class Exporter:
    """State of one export: tensor names of SSA values, nodes and initializers so far."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.names: dict[SSAValue, str] = {}
        self.used: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.op: Operation | None = None

    # -- names, constants, nodes ---------------------------------------------------------

    def fresh(self, hint: str) -> str:
        base = hint or "t"
        name, n = base, 1
        while name in self.used:
            name, n = f"{base}_{n}", n + 1
        self.used.add(name)
        return name

    def name(self, value: SSAValue) -> str:
        return self.names[value]

    def layer(self) -> str:
        op = self.op
        return (op.layer_name if isinstance(op, nn.NNOp) else "") or (op.name.partition(".")[2] if op else "")

    def const(self, array: np.ndarray | np.generic | float | int, hint: str, dtype: np.dtype | type | None = None) -> str:
        a = np.asarray(array, dtype=dtype) if dtype is not None else np.asarray(array)
        name = self.fresh(f"{self.layer()}.{hint}")
        self.initializers.append(numpy_helper.from_array(np.array(a, order="C"), name))  # 0-d stays 0-d
        return name

    def node(self, op_type: str, inputs: Sequence[str], outputs: int | Sequence[str] = 1, **attrs: Any) -> list[str]:
        names = [self.fresh(f"{self.layer()}.{op_type.lower()}") for _ in range(outputs)] if isinstance(outputs, int) \
            else list(outputs)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=self.fresh(f"{self.layer()}/{op_type}"),
                                           **attrs))
        return names

    def node1(self, op_type: str, inputs: Sequence[str], **attrs: Any) -> str:
        return self.node(op_type, inputs, 1, **attrs)[0]

    # -- quantization --------------------------------------------------------------------

    def dequantize(self, q: str, scale: np.ndarray | float, zero_point: np.ndarray | int, dtype: np.dtype,
                   axis: int | None = None) -> str:
        scale_a = np.asarray(scale, np.float32)
        zp_a = np.asarray(zero_point, dtype)
        return self.node1("DequantizeLinear", [q, self.const(scale_a, "scale"), self.const(zp_a, "zero_point")],
                          axis=axis if scale_a.ndim else None)

    def dequantize_value(self, value: SSAValue, scale: float, zero_point: int) -> str:
        return self.dequantize(self.name(value), scale, zero_point, dtype_of(value.type))

    def quantize(self, x: str, scale: float, zero_point: int, dtype: np.dtype, output: str | None = None) -> str:
        inputs = [x, self.const(np.float32(scale), "scale"), self.const(np.asarray(zero_point, dtype), "zero_point")]
        return self.node("QuantizeLinear", inputs, [output] if output else 1)[0]


# ---------------------------------------------------------------------------------------
# Per-op exporters: each returns the names of the op's results
# ---------------------------------------------------------------------------------------

Export = Callable[[Exporter, Operation], list[str]]
EXPORTERS: dict[type[Operation], Export] = {}


def exporter(*op_classes: type[Operation]) -> Callable[[Export], Export]:
    def register(fn: Export) -> Export:
        for cls in op_classes:
            EXPORTERS[cls] = fn
        return fn

    return register


def fval(attr: Any) -> float | None:
    return None if attr is None else float(attr.value.data)


def ival(attr: Any) -> int | None:
    return None if attr is None else int(attr.value.data)


def window_attrs(op: Operation) -> dict[str, Any]:
    props = op.properties
    attrs: dict[str, Any] = {"strides": list(int_list(props["strides"])), "pads": list(int_list(props["pads"]))}  # type: ignore[arg-type]
    dilations = list(int_list(props["dilations"]))  # type: ignore[arg-type]
    if dilations != [1, 1]:
        attrs["dilations"] = dilations
    return attrs


def activation(ex: Exporter, y: str, kind: str | None, alpha: float | None, lo: float | None, hi: float | None) -> str:
    """A fused activation as its ONNX op."""
    if kind is None:
        return y
    if kind == "relu":
        return ex.node1("Relu", [y])
    if kind == "leaky_relu":
        return ex.node1("LeakyRelu", [y], alpha=float(alpha or 0.0))
    bounds = [ex.const(np.float32(v), name) if v is not None else "" for v, name in ((lo, "min"), (hi, "max"))]
    while bounds and bounds[-1] == "":
        bounds.pop()
    return ex.node1("Clip", [y, *bounds])


def qnn_activation(ex: Exporter, y: str, op: qnn.Requantizes) -> str:
    """The activation behind a qnn op's clamps or leaky parameters, in real terms."""
    assert isinstance(op, qnn.QNNOp)
    kind = op.activation.data if op.activation is not None else None
    scale, zero_point = op.result_quantization() or (1.0, 0)
    cmin, cmax = qnn.ival(op.clamp_min), qnn.ival(op.clamp_max)
    if kind == "leaky_relu":
        return activation(ex, y, "leaky_relu", qnn.fval(op.act_alpha), None, None)
    if kind == "relu" or (cmin is None and cmax is None):
        return activation(ex, y, kind, None, None, None)
    # relu6 / clip, or bare clamps: the real bounds whose quantization is the clamp.
    lo = None if cmin is None else (cmin - zero_point) * scale
    hi = None if cmax is None else (cmax - zero_point) * scale
    return activation(ex, y, "clip", None, lo, hi)


def tie_nudges(op: qnn.QNNOp) -> np.ndarray | None:
    """pow2 only: a quarter of the grid step the op's real result lies on (per channel, or
    per operand for concat; 0 where a shift rounds nothing). None for other schemes and for
    parameters that are no pure shifts (leaky slopes aside)."""
    if not isinstance(op, qnn.Requantizes) or op.scheme_name != "pow2":
        return None
    if op.multipliers is not None and any(m != 1 for m in int_list(op.multipliers)):
        return None
    scale, _ = op.result_quantization() or (1.0, 0)
    shifts = np.array(int_list(op.shifts), np.float64)
    return np.where(shifts > 0, scale * np.exp2(-shifts - 2), 0.0)


def nudged(ex: Exporter, y: str, steps: np.ndarray | None, shape: Sequence[int]) -> str:
    """`y` plus the nudges (laid out in `shape`), so that QuantizeLinear's ties go up."""
    if steps is None or not np.any(steps):
        return y
    values = steps.astype(np.float32).reshape(shape) if steps.size > 1 else np.float32(steps[0])
    return ex.node1("Add", [y, ex.const(values, "half_step")])


def quantized_result(ex: Exporter, op: Operation, y: str, channel_shape: Sequence[int] = (-1,),
                     nudge: bool = True) -> list[str]:
    """pow2's tie nudge, the fused activation and the QuantizeLinear to the op's result."""
    assert isinstance(op, qnn.QNNOp)
    if nudge:
        y = nudged(ex, y, tie_nudges(op), channel_shape)
    if isinstance(op, qnn.Requantizes):
        y = qnn_activation(ex, y, op)
    scale, zero_point = op.result_quantization() or (1.0, 0)
    return [ex.quantize(y, scale, zero_point, dtype_of(op.results[0].type))]


def weight_dequantized(ex: Exporter, op: qnn.ContractionOp, axis: int) -> str:
    """The weight operand behind a (per-channel) DequantizeLinear along `axis`."""
    w = op.weight_operand()
    scales = np.asarray(float_list(op.weight_scales), np.float32)
    zero_point = qnn.ival(op.weight_zero_point) or 0
    dtype = dtype_of(w.type)
    if scales.size == 1:
        return ex.dequantize(ex.name(w), scales[0], zero_point, dtype)
    return ex.dequantize(ex.name(w), scales, np.full(scales.size, zero_point), dtype, axis=axis)


def bias_dequantized(ex: Exporter, op: qnn.ContractionOp, bias: SSAValue, channels: int) -> str:
    input_scale, _ = op.input_quantization()
    scales = np.broadcast_to(np.asarray(float_list(op.weight_scales), np.float64) * input_scale, (channels,))
    return ex.dequantize(ex.name(bias), scales.astype(np.float32), np.zeros(channels), np.dtype(np.int32), axis=0)


def zero_point_input(ex: Exporter, zero_point: int, dtype: np.dtype) -> str:
    return ex.const(np.asarray(zero_point, dtype), "zero_point")


# -- qnn ------------------------------------------------------------------------------------


@exporter(qnn.QuantizeOp)
def _quantize(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, qnn.QuantizeOp)
    scale, zero_point = op.result_quantization() or (1.0, 0)
    return [ex.quantize(ex.name(op.input), scale, zero_point, dtype_of(op.result.type))]


@exporter(qnn.DequantizeOp)
def _dequantize(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, qnn.DequantizeOp)
    return [ex.dequantize_value(op.input, float(op.scale.value.data), int(op.zero_point.value.data))]


@exporter(qnn.Conv2dOp)
def _qconv(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, qnn.Conv2dOp)
    scale, zero_point = op.input_quantization()
    attrs = window_attrs(op) | {"group": int(op.group.value.data)}
    if op.scale is None:  # the int32 accumulator
        w_zp = zero_point_input(ex, qnn.ival(op.weight_zero_point) or 0, dtype_of(op.weight.type))
        inputs = [ex.name(op.input), ex.name(op.weight), zero_point_input(ex, zero_point, dtype_of(op.input.type)), w_zp]
        acc = ex.node1("ConvInteger", inputs, **attrs)
        if op.bias is None:
            return [acc]
        return [ex.node1("Add", [acc, ex.node1("Reshape", [ex.name(op.bias), ex.const(np.array([1, -1, 1, 1]), "shape")])])]
    x = ex.dequantize_value(op.input, scale, zero_point)
    inputs = [x, weight_dequantized(ex, op, 0)]
    if op.bias is not None:
        inputs.append(bias_dequantized(ex, op, op.bias, nn.shape_of(op.weight)[0]))
    return quantized_result(ex, op, ex.node1("Conv", inputs, **attrs), (-1, 1, 1))


@exporter(qnn.GemmOp)
def _qgemm(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, qnn.GemmOp)
    scale, zero_point = op.input_quantization()
    trans_b = int(op.trans_b.value.data)
    if op.scale is None:
        b = ex.name(op.b) if not trans_b else ex.node1("Transpose", [ex.name(op.b)], perm=[1, 0])
        inputs = [ex.name(op.a), b, zero_point_input(ex, zero_point, dtype_of(op.a.type)),
                  zero_point_input(ex, qnn.ival(op.weight_zero_point) or 0, dtype_of(op.b.type))]
        acc = ex.node1("MatMulInteger", inputs)
        return [acc if op.c is None else ex.node1("Add", [acc, ex.name(op.c)])]
    inputs = [ex.dequantize_value(op.a, scale, zero_point), weight_dequantized(ex, op, 0 if trans_b else 1)]
    if op.c is not None:
        inputs.append(bias_dequantized(ex, op, op.c, nn.shape_of(op.result)[1]))
    return quantized_result(ex, op, ex.node1("Gemm", inputs, transB=trans_b))


@exporter(qnn.MatMulOp)
def _qmatmul(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, qnn.MatMulOp)
    scale, zero_point = op.input_quantization()
    if op.scale is None:
        inputs = [ex.name(op.a), ex.name(op.b), zero_point_input(ex, zero_point, dtype_of(op.a.type)),
                  zero_point_input(ex, qnn.ival(op.weight_zero_point) or 0, dtype_of(op.b.type))]
        return [ex.node1("MatMulInteger", inputs)]
    a = ex.dequantize_value(op.a, scale, zero_point)
    y = ex.node1("MatMul", [a, weight_dequantized(ex, op, len(nn.shape_of(op.b)) - 1)])
    # Full-rank half steps: onnxruntime 1.32 turns MatMul + Add of a 1-d bias on a
    # rank > 2 input into a Gemm and mistypes the QuantizeLinear it adds there.
    return quantized_result(ex, op, y, (1,) * (len(nn.shape_of(op.result)) - 1) + (-1,))


@exporter(qnn.AddOp)
def _qadd(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, qnn.AddOp)
    (sa, za), (sb, zb) = op.input_quantizations()
    y = ex.node1("Add", [ex.dequantize_value(op.lhs, sa, za), ex.dequantize_value(op.rhs, sb, zb)])
    return quantized_result(ex, op, y)


@exporter(qnn.ConcatOp)
def _qconcat(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, qnn.ConcatOp)
    parts = [ex.dequantize_value(v, s, z) for v, (s, z) in zip(op.inputs, op.input_quantizations(), strict=True)]
    steps = tie_nudges(op)
    if steps is not None:  # each operand has its own shift: nudge each before the concat
        parts = [nudged(ex, p, steps[i : i + 1], ()) for i, p in enumerate(parts)]
    y = ex.node1("Concat", parts, axis=int(op.axis.value.data))
    return quantized_result(ex, op, y, nudge=False)


# Activations a table may hold that have an ONNX op of their own (default parameters).
TABLE_OPS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "hardswish": "HardSwish", "hard_sigmoid": "HardSigmoid", "relu": "Relu"}


@exporter(qnn.LutOp)
def _qlut(ex: Exporter, op: Operation) -> list[str]:
    """DequantizeLinear, the activation, QuantizeLinear when the table is exactly that
    activation's (its ONNX form, which the frontend reads back); else exactly the kernel:
    Gather on the table, rolled so that an int8 value indexes it directly (Gather counts
    negative indices from the end)."""
    assert isinstance(op, qnn.LutOp)
    from compiler.quant import intmath as im

    kind = op.activation.data if op.activation is not None else ""
    x_range, y_range = qnn.type_range(nn.element_type_of(op.input)), qnn.type_range(nn.element_type_of(op.result))
    assert x_range is not None and y_range is not None
    (sx, zx), (sy, zy) = op.input_quantization(), op.result_quantization() or (1.0, 0)
    table = ex.program.weights[op.table.owner.handle.data] if isinstance(op.table.owner, nn.WeightOp) else None
    if kind in TABLE_OPS and table is not None:
        want = im.build_table(im.TABLE_FUNCTIONS[kind], sx, zx, x_range, sy, zy, y_range)
        if np.array_equal(want, table):
            y = ex.node1(TABLE_OPS[kind], [ex.dequantize_value(op.input, sx, zx)])
            return [ex.quantize(y, sy, zy, dtype_of(op.result.type))]
    lo = x_range[0]
    rolled = ex.name(op.table)
    if lo:
        rolled = ex.node1("Gather", [rolled, ex.const(np.roll(np.arange(256), lo), "roll")], axis=0)
    index = ex.node1("Cast", [ex.name(op.input)], to=TensorProto.INT32)
    return [ex.node1("Gather", [rolled, index], axis=0)]


@exporter(qnn.RequantizeOp)
def _qrequantize(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, qnn.RequantizeOp)
    scale, zero_point = op.input_quantization()
    return quantized_result(ex, op, ex.dequantize_value(op.input, scale, zero_point))


def pool_attrs(op: Operation) -> dict[str, Any]:
    props = op.properties
    attrs = window_attrs(op) | {"kernel_shape": list(int_list(props["kernel"]))}  # type: ignore[arg-type]
    attrs["ceil_mode"] = int(props["ceil_mode"].value.data)  # type: ignore[attr-defined]
    if props["kind"].data == "avg":  # type: ignore[attr-defined]
        attrs["count_include_pad"] = int(props["count_include_pad"].value.data)  # type: ignore[attr-defined]
    return attrs


def window_count_map(op: qnn.QuantizedPoolOp) -> np.ndarray:
    """The number n of elements each output position averages, as (OH, OW)."""
    if isinstance(op, qnn.GlobalPoolOp):
        return np.array([[math.prod(nn.shape_of(op.operands[0])[2:])]])
    from backends.reference.kernels import window_counts

    assert isinstance(op, qnn.PoolOp)
    (kh, kw), strides, pads = int_list(op.kernel), int_list(op.strides), int_list(op.pads)
    dilations, (_, _, h, w), (oh, ow) = int_list(op.dilations), nn.shape_of(op.input), nn.shape_of(op.result)[2:]
    lo, hi = (pads[:2], pads[2:]) if int(op.count_include_pad.value.data) else ((0, 0), (0, 0))
    rows = window_counts(h, oh, kh, strides[0], dilations[0], pads[0], lo[0], hi[0])
    cols = window_counts(w, ow, kw, strides[1], dilations[1], pads[1], lo[1], hi[1])
    return rows[:, None] * cols[None, :]


def average_nudges(op: qnn.QuantizedPoolOp) -> tuple[np.ndarray, np.ndarray, float]:
    """pow2 average pooling: window sum * m / 2^s rounds half up, and m / 2^s is 1/n only
    for powers of two; otherwise m is 1/n rounded, so a tie (sum / n = k + 1/2) lands just
    above or below it: away from zero when m / 2^s > 1/n, toward zero when below. Per output
    position (1, 1, OH, OW): the nudge that always applies (`up`), the one times sign(y)
    (`away`), and their size, a quarter of the finest step between the values'
    fractional parts, min(s_x, s_y) / 4n."""
    from fractions import Fraction

    input_scale, _ = op.input_quantization()
    scale, _ = op.result_quantization() or (1.0, 0)
    ratio = Fraction(input_scale) / Fraction(scale)
    multipliers, shifts = int_list(op.multipliers) or (1,) * len(int_list(op.shifts)), int_list(op.shifts)
    counts = window_count_map(op)
    step = min(input_scale, scale) / (4 * int(counts.max()))
    up, away = np.zeros(counts.shape), np.zeros(counts.shape)
    for n in np.unique(counts):
        index = 0 if isinstance(op, qnn.GlobalPoolOp) else int(n) - 1
        taken = Fraction(multipliers[index], 2**shifts[index]) if shifts[index] >= 0 else Fraction(2 ** -shifts[index])
        exact = ratio / int(n)
        where = counts == n
        if taken == exact:
            up[where] = step
        else:
            away[where] = step if taken > exact else -step
    shape = (1, 1, *counts.shape)
    return up.astype(np.float32).reshape(shape), away.astype(np.float32).reshape(shape), step


def pow2_average_nudge(ex: Exporter, y: str, op: qnn.QuantizedPoolOp) -> str:
    """y + up + away * sign(y) (see `average_nudges`), sign written as clip(y / 4 step,
    -1, 1) with ops the frontend reads back: a nonzero average is at least 4 steps from 0."""
    up, away, step = average_nudges(op)
    nudged = ex.node1("Add", [y, ex.const(up, "tie_up")])
    if not np.any(away):
        return nudged
    sign = ex.node1("Clip", [ex.node1("Mul", [y, ex.const(np.float32(1 / (4 * step)), "inverse_step")]),
                             ex.const(np.float32(-1), "minus_one"), ex.const(np.float32(1), "one")])
    return ex.node1("Add", [nudged, ex.node1("Mul", [sign, ex.const(away, "tie_away")])])


@exporter(qnn.PoolOp, qnn.GlobalPoolOp)
def _qpool(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, qnn.QuantizedPoolOp)
    kind = op.kind.data
    glob = isinstance(op, qnn.GlobalPoolOp)
    onnx_op = ("Global" if glob else "") + ("MaxPool" if kind == "max" else "AveragePool")
    attrs = {} if glob else pool_attrs(op)
    x = op.operands[0]
    if kind == "max" and not glob:  # on the integers, exactly
        return [ex.node1("MaxPool", [ex.name(x)], **attrs)]
    scale, zero_point = op.input_quantization()
    y = ex.node1(onnx_op, [ex.dequantize_value(x, scale, zero_point)], **attrs)
    if kind == "avg" and op.scheme_name == "pow2":
        y = pow2_average_nudge(ex, y, op)
    return quantized_result(ex, op, y, nudge=False)


# -- nn -------------------------------------------------------------------------------------


@exporter(nn.WeightOp)
def _weight(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, nn.WeightOp)
    array = ex.program.weights[op.handle.data]
    return [ex.const(array, op.handle.data)]


def nn_activation(ex: Exporter, y: str, op: Operation) -> str:
    act = op.properties.get("activation")
    p = op.properties
    return activation(ex, y, act.data if act is not None else None, fval(p.get("act_alpha")), fval(p.get("act_min")),  # type: ignore[attr-defined]
                      fval(p.get("act_max")))


@exporter(nn.Conv2dOp)
def _conv(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, nn.Conv2dOp)
    inputs = [ex.name(v) for v in op.operands]
    return [nn_activation(ex, ex.node1("Conv", inputs, **window_attrs(op), group=int(op.group.value.data)), op)]


@exporter(nn.GemmOp)
def _gemm(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, nn.GemmOp)
    y = ex.node1("Gemm", [ex.name(v) for v in op.operands], transA=int(op.trans_a.value.data),
                 transB=int(op.trans_b.value.data), alpha=float(op.alpha.value.data), beta=float(op.beta.value.data))
    return [nn_activation(ex, y, op)]


SIMPLE: dict[type[Operation], str] = {
    nn.MatMulOp: "MatMul", nn.AddOp: "Add", nn.SubOp: "Sub", nn.MulOp: "Mul", nn.DivOp: "Div",
    nn.IdentityOp: "Identity", nn.ReluOp: "Relu", nn.SigmoidOp: "Sigmoid", nn.TanhOp: "Tanh",
    nn.HardSwishOp: "HardSwish",
}


@exporter(*SIMPLE)
def _simple(ex: Exporter, op: Operation) -> list[str]:
    return [ex.node1(SIMPLE[type(op)], [ex.name(v) for v in op.operands])]


@exporter(nn.ClipOp)
def _clip(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, nn.ClipOp)
    dtype = dtype_of(op.input.type)
    bounds = [ex.const(np.asarray(v, dtype), "bound") if v is not None else "" for v in (fval(op.min), fval(op.max))]
    while bounds and bounds[-1] == "":
        bounds.pop()
    return [ex.node1("Clip", [ex.name(op.input), *bounds])]


@exporter(nn.LeakyReluOp)
def _leaky(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, nn.LeakyReluOp)
    return [ex.node1("LeakyRelu", [ex.name(op.input)], alpha=float(op.alpha.value.data))]


@exporter(nn.HardSigmoidOp)
def _hard_sigmoid(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, nn.HardSigmoidOp)
    return [ex.node1("HardSigmoid", [ex.name(op.input)], alpha=float(op.alpha.value.data), beta=float(op.beta.value.data))]


@exporter(nn.SoftmaxOp)
def _softmax(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, nn.SoftmaxOp)
    return [ex.node1("Softmax", [ex.name(op.input)], axis=int(op.axis.value.data))]


@exporter(nn.LRNOp)
def _lrn(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, nn.LRNOp)
    return [ex.node1("LRN", [ex.name(op.input)], size=int(op.size.value.data), alpha=float(op.alpha.value.data),
                     beta=float(op.beta.value.data), bias=float(op.bias.value.data))]


@exporter(nn.BatchNormOp)
def _batchnorm(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, nn.BatchNormOp)
    return [ex.node1("BatchNormalization", [ex.name(v) for v in op.operands], epsilon=float(op.epsilon.value.data))]


@exporter(nn.PoolOp, nn.GlobalPoolOp)
def _pool(ex: Exporter, op: Operation) -> list[str]:
    kind = op.properties["kind"].data  # type: ignore[attr-defined]
    glob = isinstance(op, nn.GlobalPoolOp)
    onnx_op = ("Global" if glob else "") + ("MaxPool" if kind == "max" else "AveragePool")
    return [ex.node1(onnx_op, [ex.name(op.operands[0])], **({} if glob else pool_attrs(op)))]


@exporter(nn.ConcatOp)
def _concat(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, nn.ConcatOp)
    return [ex.node1("Concat", [ex.name(v) for v in op.inputs], axis=int(op.axis.value.data))]


@exporter(nn.SplitOp)
def _split(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, nn.SplitOp)
    axis = int(op.axis.value.data)
    sizes = np.array([nn.shape_of(r)[axis] for r in op.outputs], np.int64)
    return ex.node("Split", [ex.name(op.input), ex.const(sizes, "split")], len(sizes), axis=axis)


@exporter(nn.SliceOp)
def _slice(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, nn.SliceOp)
    starts, ends, steps = int_list(op.starts), int_list(op.ends), int_list(op.steps)
    # nn's "end -1 with a negative step" (through index 0) is ONNX's INT64_MIN.
    ends = tuple(INT64_MIN if (e == -1 and s < 0) else e for e, s in zip(ends, steps, strict=True))
    inputs = [ex.name(op.input)] + [ex.const(np.array(v, np.int64), n) for v, n in
                                    ((starts, "starts"), (ends, "ends"), (range(len(starts)), "axes"), (steps, "steps"))]
    return [ex.node1("Slice", inputs)]


@exporter(nn.ReshapeOp)
def _reshape(ex: Exporter, op: Operation) -> list[str]:
    shape = np.array(nn.shape_of(op.results[0]), np.int64)
    return [ex.node1("Reshape", [ex.name(op.operands[0]), ex.const(shape, "shape")])]


@exporter(nn.TransposeOp)
def _transpose(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, nn.TransposeOp)
    return [ex.node1("Transpose", [ex.name(op.input)], perm=list(int_list(op.perm)))]


@exporter(nn.GatherOp)
def _gather(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, nn.GatherOp)
    return [ex.node1("Gather", [ex.name(op.data), ex.name(op.indices)], axis=int(op.axis.value.data))]


@exporter(nn.PadOp)
def _pad(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, nn.PadOp)
    dtype = dtype_of(op.input.type)
    inputs = [ex.name(op.input), ex.const(np.array(int_list(op.pads), np.int64), "pads")]
    mode = op.mode.data
    if mode == "constant":
        inputs.append(ex.const(np.asarray(float(op.value.value.data)).astype(dtype), "value"))
    return [ex.node1("Pad", inputs, mode=mode)]


@exporter(nn.ResizeOp)
def _resize(ex: Exporter, op: Operation) -> list[str]:
    assert isinstance(op, nn.ResizeOp)
    x, out = nn.shape_of(op.input), nn.shape_of(op.result)
    scales = np.array(float_list(op.scales), np.float32)
    roi = ex.const(np.array(float_list(op.roi), np.float32), "roi") if op.roi is not None else ""
    # onnxruntime derives the output size as floor(size * scale): give sizes when that misses.
    if tuple(np.floor(np.array(x, np.float32) * scales).astype(int)) == tuple(out):
        inputs = [ex.name(op.input), roi, ex.const(scales, "scales")]
    else:
        inputs = [ex.name(op.input), roi, "", ex.const(np.array(out, np.int64), "sizes")]
    return [ex.node1("Resize", inputs, mode=op.mode.data, coordinate_transformation_mode=op.coordinate_mode.data,
                     nearest_mode=op.nearest_mode.data, cubic_coeff_a=fval(op.cubic_coeff_a),
                     exclude_outside=ival(op.exclude_outside), antialias=ival(op.antialias),
                     extrapolation_value=fval(op.extrapolation_value))]


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------


def rename(nodes: list[onnx.NodeProto], old: str, new: str) -> None:
    for node in nodes:
        for names in (node.input, node.output):
            for i, n in enumerate(names):
                if n == old:
                    names[i] = new


def value_info(name: str, t: object) -> onnx.ValueInfoProto:
    assert isinstance(t, TensorType)
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(dtype_of(t)), list(t.get_shape()))


def to_onnx(program: Program, graph_name: str = "layerloom") -> onnx.ModelProto:
    """The program as an ONNX model (IR version 10, opset 21)."""
    from backends.reference.executor import main_function

    main = main_function(program.module, program.source)
    block = main.body.block
    ex = Exporter(program)
    input_names = io_names(main.arg_attrs, "input", len(block.args))
    output_names = io_names(main.res_attrs, "output", len(main.function_type.outputs))
    ex.used.update(output_names)
    inputs = []
    for arg, name in zip(block.args, input_names, strict=True):
        ex.used.add(name)
        ex.names[arg] = name
        inputs.append(value_info(name, arg.type))
    for op in block.ops:
        if isinstance(op, ReturnOp):
            break
        fn = EXPORTERS.get(type(op))
        if fn is None:
            raise LayerloomError(f"export_onnx: no ONNX form for '{op.name}'", getattr(op, "layer_name", "") or op.name)
        ex.op = op
        for value, name in zip(op.results, fn(ex, op), strict=True):
            ex.names[value] = name
    ex.op = None
    returned = block.last_op
    assert isinstance(returned, ReturnOp)
    outputs = []
    produced = {o: node for node in ex.nodes for o in node.output}
    renamed: set[str] = set()
    for value, name in zip(returned.operands, output_names, strict=True):
        tensor = ex.name(value)
        if tensor in produced and tensor not in renamed:  # the producing node writes the output itself
            rename(ex.nodes, tensor, name)
            renamed.add(tensor)
        else:  # a graph input, a weight, or a value returned twice
            ex.node("Identity", [tensor], [name])
        outputs.append(value_info(name, value.type))
    graph = helper.make_graph(ex.nodes, graph_name, inputs, outputs, ex.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="layerloom")
    model.ir_version = IR_VERSION
    return model


def export_onnx(program: Program, path: str | Path) -> onnx.ModelProto:
    """Write `program` (nn and qnn ops) to `path` as an ONNX model that onnxruntime runs;
    return the model. LayerloomError names the first op without an ONNX form."""
    model = to_onnx(program, Path(program.source).stem if program.source else "layerloom")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise LayerloomError(f"export_onnx wrote an invalid model: {str(e).splitlines()[0]}", str(path)) from None
    data = model.SerializeToString()
    atomic_write_with(Path(path), lambda tmp: Path(tmp).write_bytes(data))
    return model
