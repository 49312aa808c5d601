"""Import of pre-quantized ONNX models into `qnn` (see docs/frontend.md).

Converters for QuantizeLinear, DequantizeLinear, QLinearConv, QLinearMatMul, ConvInteger
and MatMulInteger join the frontend's table (`compiler.onnx_ops.CONVERTERS`):

- QuantizeLinear / DequantizeLinear of a computed tensor become `qnn.quantize` /
  `qnn.dequantize` (per axis: one per channel between an `nn.split` and an `nn.concat`);
  of a constant they are folded. A folded DequantizeLinear of a weight leaves its integers,
  scales and zero points in the weight store (`<node>.qdq.*`) for the fusion below.
- QLinearConv / QLinearMatMul become `qnn.conv2d` / `qnn.matmul` with the `fixed` scheme;
  ConvInteger / MatMulInteger the same ops with an i32 result (the accumulator).

Element types: int8 and uint8 (int32 for biases and accumulators); anything else (int16,
int4, float8, blocked quantization) is refused with the node's name.

After conversion, `fuse_qdq` turns the QDQ pattern into integer ops: a `qnn.quantize` of a
float op whose operands are `qnn.dequantize`d tensors and weights with recorded
quantization becomes the qnn op (built by `compiler.quant.lowering.Lowerer`, as the
quantize pass builds them), with the scales and zero points the model states; relu / clip
fuse into convs, gemms and adds; layout ops and max pooling between a dequantize and a
quantize with the same parameters run on the integers. What does not match stays float
between its dequantize and quantize, which is exactly what the QDQ model means.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from xdsl.dialects.builtin import StringAttr, TensorType
from xdsl.dialects.func import ReturnOp
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.pattern_rewriter import PatternRewriteWalker

from compiler.errors import LayerloomError
from compiler.onnx_import import (
    CONVERTER_VERSIONS,
    Builder,
    Node,
    Refused,
    Value,
    dtype_of,
    element_of,
    onnx_dtype,
    shape_of,
)
from compiler.onnx_ops import converter, lift_1d, lifted, normalize_axis, window_attrs
from compiler.program import Program
from compiler.quant import intmath as im
from compiler.quant.lowering import TABLE_OPS, Activation, Lowerer, QParams, contraction_props, requantize_props
from compiler.registry import verify_module
from compiler.tensors import element_type, tensor_type
from dialects import nn, qnn
from dialects.nn import f64attr, i64attr
from passes.fuse_activation import FuseActivation
from passes.utils import new_weight, weight_array

QUANTIZED = (np.dtype(np.int8), np.dtype(np.uint8))
ACCUMULATOR = np.dtype(np.int32)
RECORD = ".qdq."  # weight-store keys of a folded DequantizeLinear: <node>.qdq.values / scales / zero_points

# Quantize/DequantizeLinear after opset 22 added types (float4, float8e8m0, int2) and one
# attribute each (precision / output_dtype): the converters read those attributes and
# refuse the values that change the result.
CONVERTER_VERSIONS["QuantizeLinear"] = (23, 24, 25, 28)
CONVERTER_VERSIONS["DequantizeLinear"] = (23, 24, 25, 28)


# ---------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------


def scale_param(b: Builder, n: Node, i: int, what: str) -> np.ndarray:
    """A (constant, positive) scale input as float64 holding its float32/16 values."""
    s = b.const(n, i, what)
    if s.dtype.kind != "f":
        raise ValueError(f"{what} must be float, got {s.dtype}")
    s64 = s.astype(np.float64)
    if s64.size == 0 or not np.all(np.isfinite(s64)) or np.any(s64 <= 0):
        raise ValueError(f"{what} must be positive and finite, got {s64.reshape(-1)[:4].tolist()}")
    return s64


def zero_point_param(b: Builder, n: Node, i: int, what: str, default: np.dtype) -> tuple[np.ndarray, np.dtype]:
    """A zero-point input (0 of type `default` when absent) as int64, and its type."""
    if not n.has_input(i):
        return np.zeros(1, np.int64), default
    z = b.const(n, i, what)
    return z.astype(np.int64), z.dtype


def one(values: np.ndarray, what: str) -> int | float:
    """The single value of a per-tensor parameter (all entries equal)."""
    flat = values.reshape(-1)
    if flat.size == 0 or np.any(flat != flat[0]):
        raise Refused(f"{what} differs per channel (one {what} per tensor is supported here)")
    return flat[0].item()


def quantized_type(dtype: np.dtype, what: str, allowed: tuple[np.dtype, ...] = QUANTIZED) -> np.dtype:
    if dtype not in allowed:
        names = " and ".join(str(d) for d in allowed)
        raise Refused(f"{what} of type {dtype} not supported ({names} are)")
    return dtype


def along(values: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """A per-tensor (size 1) or per-axis (1-d, one per entry of `axis`) parameter shaped to
    broadcast against a tensor of `shape`."""
    if values.size == 1:
        return values.reshape(())
    if values.ndim != 1 or values.size != shape[axis]:
        raise ValueError(f"a per-axis parameter of shape {values.shape} does not match axis {axis} of {shape}")
    return values.reshape([-1 if a == axis else 1 for a in range(len(shape))])


def quantization_axis(n: Node, scale: np.ndarray, shape: tuple[int, ...]) -> int:
    """The axis of per-axis parameters (`axis` is ignored for per-tensor ones, as ONNX says)."""
    return normalize_axis(n.attr("axis", 1), len(shape)) if scale.size > 1 else 0


def check_version_attributes(n: Node) -> None:
    if n.attr("block_size", 0):
        raise Refused("blocked quantization (block_size) not supported")
    if n.attr("precision", 0):
        raise Refused("precision not supported")


def emit_quantization(b: Builder, op: type[qnn.QuantizeOp] | type[qnn.DequantizeOp], x: SSAValue, axis: int,
                      scale: np.ndarray, zero_points: np.ndarray, result: Attribute) -> SSAValue:
    """`op` on `x` with its one scale and zero point, or with one per channel along `axis`:
    then on each slice of `x`, concatenated again (a computed tensor quantized per channel)."""

    def emit_one(part: SSAValue, c: int) -> SSAValue:
        sc, zc = (scale, zero_points) if scale.size == 1 else (scale[c : c + 1], zero_points[c : c + 1])
        return b.emit(op, [part], shape_of(part), result, scale=f64attr(float(sc.reshape(-1)[0])),
                      zero_point=i64attr(int(zc.reshape(-1)[0])))

    if scale.size == 1:
        return emit_one(x, 0)
    shape = shape_of(x)
    part = shape[:axis] + (1,) + shape[axis + 1 :]
    parts = b.emit_multi(nn.SplitOp, [x], [part] * shape[axis], element_of(x), {"axis": i64attr(axis)},
                         variadic_results=True)
    outs = [emit_one(p, c) for c, p in enumerate(parts) if isinstance(p, SSAValue)]
    return b.emit(nn.ConcatOp, [outs], shape, element_of(outs[0]), axis=i64attr(axis))


# ---------------------------------------------------------------------------------------
# QuantizeLinear, DequantizeLinear
# ---------------------------------------------------------------------------------------


@converter("QuantizeLinear", foldable=True)
def convert_quantize_linear(b: Builder, n: Node) -> list[Value]:
    check_version_attributes(n)
    scale = scale_param(b, n, 1, "y_scale")
    default = onnx_dtype(n.attr("output_dtype")) if n.attr("output_dtype", 0) else np.dtype(np.uint8)
    zero_points, dtype = zero_point_param(b, n, 2, "y_zero_point", default)
    quantized_type(dtype, "QuantizeLinear to a tensor")
    x = b.value(n, 0)
    shape = shape_of(x)
    axis = quantization_axis(n, scale, shape)
    lo, hi = im.int_range(dtype)
    s, z = along(scale, shape, axis), along(zero_points, shape, axis)
    if isinstance(x, np.ndarray):
        return [im.quantize(x, s.astype(np.float32), z, lo, hi).astype(dtype)]  # type: ignore[arg-type]  # (broadcast)
    if dtype_of(x).kind != "f":
        raise Refused(f"QuantizeLinear of a {dtype_of(x)} tensor not supported (float is)")
    return [emit_quantization(b, qnn.QuantizeOp, x, axis, scale, zero_points, element_type(dtype))]


@converter("DequantizeLinear", foldable=True)
def convert_dequantize_linear(b: Builder, n: Node) -> list[Value]:
    check_version_attributes(n)
    x = b.value(n, 0)
    dtype = quantized_type(dtype_of(x), "DequantizeLinear of a tensor", (*QUANTIZED, ACCUMULATOR))
    scale = scale_param(b, n, 1, "x_scale")
    zero_points, zp_type = zero_point_param(b, n, 2, "x_zero_point", dtype)
    if zp_type != dtype:
        raise ValueError(f"x_zero_point is {zp_type}, x is {dtype}")
    if dtype == ACCUMULATOR and np.any(zero_points != 0):
        raise ValueError("an int32 x needs zero point 0")
    out = onnx_dtype(n.attr("output_dtype")) if n.attr("output_dtype", 0) else b.const(n, 1, "x_scale").dtype
    shape = shape_of(x)
    axis = quantization_axis(n, scale, shape)
    s, z = along(scale, shape, axis), along(zero_points, shape, axis)
    if isinstance(x, np.ndarray):
        # Left for fuse_qdq: the integers and their quantization behind this weight.
        for key, value in (("values", x), ("scales", s), ("zero_points", z)):
            b.store.set(f"{n.name}{RECORD}{key}", np.asarray(value))
        return [im.dequantize(x, s.astype(np.float32), z).astype(out)]  # type: ignore[arg-type]  # (broadcast)
    return [emit_quantization(b, qnn.DequantizeOp, x, axis, scale, zero_points, element_type(out))]


# ---------------------------------------------------------------------------------------
# QLinearConv, ConvInteger, QLinearMatMul, MatMulInteger
# ---------------------------------------------------------------------------------------


def activation_quantization(b: Builder, n: Node, value: int, scale: int | None, zero_point: int,
                            what: str) -> tuple[SSAValue, QParams]:
    """Input `value` of `n` (int8 / uint8) with its scale (input `scale`, or the producer's
    for the integer ops, which have none) and zero point (input `zero_point`, optional)."""
    x = b.ssa(n, value)
    dtype = quantized_type(dtype_of(x), f"{n.op_type} input '{what}'")
    z = int(one(zero_point_param(b, n, zero_point, f"{what}_zero_point", dtype)[0], f"{what} zero point"))
    if scale is not None:
        s = float(one(scale_param(b, n, scale, f"{what}_scale"), f"{what} scale"))
    else:
        stated = qnn.producer_quantization(x)
        s = stated[0] if stated is not None else 1.0
    return x, QParams(s, z, dtype == np.dtype(np.uint8))


def weight_scales(b: Builder, n: Node, scale: int | None, count: int, what: str) -> np.ndarray:
    if scale is None:
        return np.array([1.0])
    s = scale_param(b, n, scale, what).reshape(-1)
    if s.size not in (1, count):
        raise ValueError(f"{what} has {s.size} entries for {count} output channels")
    return s


def props_or_refuse(make: Callable[[], dict]) -> dict:
    try:
        return make()
    except LayerloomError as e:  # e.g. a requantization multiplier of 2^31 or more
        raise Refused(str(e).split(": ", 1)[-1]) from None


def convert_integer_conv(b: Builder, n: Node, quantized: bool) -> list[Value]:
    """QLinearConv (quantized: inputs x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B)
    and ConvInteger (x, w, x_zp, w_zp)."""
    index = {"w": 3, "w_scale": 4, "w_zp": 5} if quantized else {"w": 1, "w_scale": None, "w_zp": 3}
    x, xq = activation_quantization(b, n, 0, 1 if quantized else None, 2, "x")
    w = b.ssa(n, index["w"])  # type: ignore[arg-type]
    xs, ws = shape_of(x), shape_of(w)
    if len(xs) == 5:
        raise Refused("3-D convolution not supported (1-D and 2-D are)")
    if len(xs) not in (3, 4) or len(ws) != len(xs):
        raise ValueError(f"input {xs} and weight {ws} must both have rank 3 or 4")
    quantized_type(dtype_of(w), f"{n.op_type} weight")
    w_zero_points = zero_point_param(b, n, index["w_zp"], "w_zero_point", dtype_of(w))[0].reshape(-1)  # type: ignore[arg-type]
    per_channel = not quantized and w_zero_points.size > 1 and np.any(w_zero_points != w_zero_points[0])
    zw = 0 if per_channel else int(one(w_zero_points, "w zero point"))
    scales = weight_scales(b, n, index["w_scale"], ws[0], "w_scale")
    spatial = len(xs) - 2
    kernel = list(n.attr("kernel_shape", ws[2:]))
    strides, dilations, pads = window_attrs(n, spatial, kernel, xs[2:])
    if spatial == 1:
        strides, dilations, pads = lift_1d(strides, dilations, pads)
        x, w = lifted(b, x, n.inputs[0]), lifted(b, w, n.inputs[index["w"]])  # type: ignore[index]
    out_q = None
    result = element_type(ACCUMULATOR)
    bias = None
    if quantized:
        sy = float(one(scale_param(b, n, 6, "y_scale"), "y scale"))
        y_type = zero_point_param(b, n, 7, "y_zero_point", np.dtype(np.uint8))
        out_q = QParams(sy, int(one(y_type[0], "y zero point")), quantized_type(y_type[1], "QLinearConv output") == np.uint8)
        result = out_q.element_type
        bias = b.ssa(n, 8) if n.has_input(8) else None
        if bias is not None and (dtype_of(bias) != ACCUMULATOR or shape_of(bias) != (ws[0],)):
            raise ValueError(f"B must be int32 of shape ({ws[0]},), got {dtype_of(bias)} {shape_of(bias)}")
    group = int(n.attr("group", 1))
    shape = nn.conv2d_output_shape(shape_of(x), shape_of(w), strides, pads, dilations, group)
    props = props_or_refuse(lambda: contraction_props(xq, scales, zw, out_q, "fixed"))
    geometry = {"strides": nn.ints(strides), "pads": nn.ints(pads), "dilations": nn.ints(dilations), "group": i64attr(group)}
    y = b.emit(qnn.Conv2dOp, [x, w, bias], shape, result, **geometry, **props)
    if per_channel:  # ConvInteger: sum (x - z_x)(w - z_w[c]) = conv(x, w) - z_w[c] * (window sums of x - z_x)
        if group != 1:
            raise Refused("per-channel weight zero points with groups not supported")
        ones = b.weight(np.ones((1, *shape_of(w)[1:]), dtype_of(w)), f"{n.name}.ones")
        sums = b.emit(qnn.Conv2dOp, [x, ones, None], (shape[0], 1, *shape[2:]), result, **geometry, **props)
        per = b.weight(w_zero_points.astype(np.int32).reshape(1, -1, 1, 1), f"{n.name}.w_zero_points")
        y = b.emit(nn.SubOp, [y, b.emit(nn.MulOp, [sums, per], shape, result)], shape, result)
    return [b.reshape(y, (shape[0], shape[1], shape[3])) if spatial == 1 else y]


@converter("QLinearConv")
def convert_qlinear_conv(b: Builder, n: Node) -> list[Value]:
    return convert_integer_conv(b, n, quantized=True)


@converter("ConvInteger")
def convert_conv_integer(b: Builder, n: Node) -> list[Value]:
    return convert_integer_conv(b, n, quantized=False)


def convert_integer_matmul(b: Builder, n: Node, quantized: bool) -> list[Value]:
    """QLinearMatMul (a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp) and MatMulInteger
    (a, b, a_zp, b_zp)."""
    a, aq = activation_quantization(b, n, 0, 1 if quantized else None, 2, "a")
    w_index, w_zp = (3, 5) if quantized else (1, 3)
    w = b.ssa(n, w_index)
    quantized_type(dtype_of(w), f"{n.op_type} input 'b'")
    zw = int(one(zero_point_param(b, n, w_zp, "b_zero_point", dtype_of(w))[0], "b zero point"))
    shape = nn.matmul_output_shape(shape_of(a), shape_of(w))
    ws = shape_of(w)
    scales = weight_scales(b, n, 4 if quantized else None, ws[-1] if len(ws) > 1 else 1, "b_scale")
    out_q = None
    result = element_type(ACCUMULATOR)
    if quantized:
        sy = float(one(scale_param(b, n, 6, "y_scale"), "y scale"))
        y_zp, y_type = zero_point_param(b, n, 7, "y_zero_point", np.dtype(np.uint8))
        out_q = QParams(sy, int(one(y_zp, "y zero point")), quantized_type(y_type, "QLinearMatMul output") == np.uint8)
        result = out_q.element_type
    props = props_or_refuse(lambda: contraction_props(aq, scales, zw, out_q, "fixed"))
    return [b.emit(qnn.MatMulOp, [a, w], shape, result, **props)]


@converter("QLinearMatMul")
def convert_qlinear_matmul(b: Builder, n: Node) -> list[Value]:
    return convert_integer_matmul(b, n, quantized=True)


@converter("MatMulInteger")
def convert_matmul_integer(b: Builder, n: Node) -> list[Value]:
    return convert_integer_matmul(b, n, quantized=False)


# ---------------------------------------------------------------------------------------
# Fusing QDQ groups into integer ops
# ---------------------------------------------------------------------------------------


Nudge = tuple[np.ndarray, np.ndarray]  # (added always, added times sign(y)), as export_onnx writes them


def nudges_match(new: Operation, nudge: Nudge | None, operand_nudges: list[float]) -> bool:
    """Whether the constants added before QuantizeLinear are the tie nudges `export_onnx`
    writes for `new` (so that `new`, with the pow2 scheme, computes what they mean)."""
    from compiler.onnx_export import average_nudges, tie_nudges

    if not isinstance(new, qnn.QNNOp):
        return False
    if isinstance(new, qnn.QuantizedPoolOp):
        if nudge is None:
            return False
        up, away, _ = average_nudges(new)
        return np.allclose(np.broadcast_to(nudge[0], up.shape), up, rtol=1e-6, atol=0) and \
            np.allclose(np.broadcast_to(nudge[1], away.shape), away, rtol=1e-6, atol=0)
    steps = tie_nudges(new)
    if steps is None:
        return False
    if isinstance(new, qnn.ConcatOp):
        return nudge is None and np.allclose(operand_nudges, steps, rtol=1e-6, atol=0)
    if nudge is None or np.any(nudge[1]):
        return False
    given = nudge[0].reshape(-1)
    return given.size in (1, steps.size) and np.allclose(np.broadcast_to(given, steps.shape), steps, rtol=1e-6, atol=0)


class NotFusable(Exception):
    """A QDQ group that does not match an integer op: it stays float."""


LAYOUT_OPS = (nn.ReshapeOp, nn.TransposeOp, nn.SliceOp, nn.IdentityOp, nn.PadOp)
FUSABLE_OPS = (nn.Conv2dOp, nn.GemmOp, nn.MatMulOp, nn.AddOp, nn.ConcatOp, nn.PoolOp, nn.GlobalPoolOp)


def pow2(scale: float) -> bool:
    return math.frexp(scale)[0] == 0.5


def activation_of(op: Operation) -> Activation | None:
    """The activation an unfused relu / clip / leaky relu op stands for."""
    if isinstance(op, nn.ReluOp):
        return Activation("relu")
    if isinstance(op, nn.ClipOp):
        return Activation("clip", lo=qnn.fval(op.min), hi=qnn.fval(op.max))
    if isinstance(op, nn.LeakyReluOp):
        return Activation("leaky_relu", alpha=float(op.alpha.value.data))
    return None


def params_of(op: qnn.QuantizeOp | qnn.DequantizeOp, value: SSAValue) -> QParams:
    """The quantization a quantize op gives (or a dequantize op reads) for `value`."""
    unsigned = qnn.type_range(nn.element_type_of(value)) == im.UINT8_RANGE
    return QParams(float(op.scale.value.data), int(op.zero_point.value.data), unsigned)  # type: ignore[union-attr]


class Fusion(Lowerer):
    """Rewrites `qnn.quantize(float op(qnn.dequantize(...), weights))` into qnn ops."""

    scheme = "fixed"
    clips_bias = False  # a bias too large for the accumulator leaves the op in float, as the model computes it

    def __init__(self, program: Program) -> None:
        from backends.reference.executor import main_function

        self.program = program
        self.store = program.weights
        self.block = main_function(program.module, program.source).body.block
        self.operand_nudges: list[float] = []  # of the concat being lowered, per operand

    # -- the Lowerer's questions ---------------------------------------------------------

    def int_operand(self, value: SSAValue, before: Operation) -> tuple[SSAValue, QParams]:
        owner = value.owner
        if isinstance(before, nn.ConcatOp):  # a concat operand may carry its own tie nudge
            nudge = 0.0
            if isinstance(owner, nn.AddOp):
                for const, other in ((owner.rhs, owner.lhs), (owner.lhs, owner.rhs)):
                    c = weight_array(const, self.store)
                    if c is not None and c.size == 1 and isinstance(other.owner, qnn.DequantizeOp):
                        nudge, owner = float(c.reshape(-1)[0]), other.owner
                        break
            self.operand_nudges.append(nudge)
        if not isinstance(owner, qnn.DequantizeOp) or not qnn.is_quantized(nn.element_type_of(owner.input)):
            raise NotFusable
        q = params_of(owner, owner.input)
        stated = qnn.producer_quantization(owner.input)
        if stated is not None and not q.same(QParams(stated[0], stated[1], q.unsigned)):
            raise NotFusable  # the dequantize disagrees with the quantize that made the tensor
        return owner.input, q

    def quantized_weight(self, value: SSAValue, axis: int, x: QParams, out: QParams,
                         factor: float = 1.0) -> tuple[np.ndarray, np.ndarray, int]:
        op = value.owner
        if factor != 1.0 or not isinstance(op, nn.WeightOp) or op.handle.data not in self.store:
            raise NotFusable
        key = f"{op.layer_name}{RECORD}"
        if f"{key}values" not in self.store:
            raise NotFusable
        values, scales, zero_points = (self.store[f"{key}{k}"] for k in ("values", "scales", "zero_points"))
        if values.dtype not in QUANTIZED or values.shape != self.store[op.handle.data].shape:
            raise NotFusable
        if not np.array_equal(im.dequantize(values, scales.astype(np.float32), zero_points),  # type: ignore[arg-type]
                              self.store[op.handle.data]):
            raise NotFusable  # not the weight that dequantize made (a name shared by two nodes)
        if np.any(zero_points != zero_points.reshape(-1)[0]):
            raise NotFusable
        if scales.size > 1 and scales.shape[axis] != scales.size:
            raise NotFusable  # quantized along another axis than the output channels
        return values, scales.astype(np.float64).reshape(-1), int(zero_points.reshape(-1)[0])

    def constant(self, value: SSAValue | None) -> np.ndarray | None:
        return weight_array(value, self.store)

    def add_weight(self, array: np.ndarray, before: Operation) -> SSAValue:
        name = before.properties.get("name")
        w = new_weight(self.store, array, f"{getattr(name, 'data', 'w')}.q", name if isinstance(name, StringAttr) else None)
        self.block.insert_op_before(w, before)
        return w.result

    # -- the rewrite ---------------------------------------------------------------------

    def run(self) -> None:
        for q in [op for op in self.block.ops if isinstance(op, qnn.QuantizeOp)]:
            value = q.input
            producer = value.owner
            if not isinstance(producer, Operation) or not value.has_one_use():
                continue
            out = params_of(q, q.result)
            try:
                new = self.fused(producer, out)
            except NotFusable:
                continue
            for op in new:
                self.block.insert_op_before(op, q)
            q.result.replace_all_uses_with(new[-1].results[0])
            self.block.erase_op(q)
        self.integer_max_pools()
        self.erase_dead_code()

    def integer_max_pools(self) -> None:
        """Max pooling written on the integers (as export_onnx writes it) becomes qnn.pool /
        qnn.global_pool with the quantization its operand has."""
        for op in list(self.block.ops):
            if not isinstance(op, nn.PoolOp | nn.GlobalPoolOp) or op.kind.data != "max":
                continue
            stated = qnn.producer_quantization(op.input)
            if stated is None or not qnn.is_quantized(nn.element_type_of(op.input)):
                continue
            q = QParams(stated[0], stated[1], qnn.type_range(nn.element_type_of(op.input)) == im.UINT8_RANGE)
            cls = qnn.PoolOp if isinstance(op, nn.PoolOp) else qnn.GlobalPoolOp
            new = cls.build(operands=[op.input], result_types=[op.result.type],
                            properties=dict(op.properties) | q.input_props() | q.result_props())
            self.block.insert_op_before(new, op)
            op.result.replace_all_uses_with(new.results[0])
            self.block.erase_op(op)

    def fused(self, op: Operation, out: QParams) -> list[Operation]:
        """The integer ops computing quantize(op(...)) with result quantization `out`."""
        name = op.properties.get("name")
        act = activation_of(op)
        if act is not None and op.operands[0].has_one_use() and isinstance(op.operands[0].owner, FUSABLE_OPS):
            op = op.operands[0].owner  # an activation after the op (after its nudge, in our exports)
        else:
            act = None
        nudge, op = self.nudge_of(op)
        if isinstance(op, qnn.DequantizeOp) and act is None and nudge is None:  # a change of scale
            x, xq = self.int_operand(op.results[0], op)
            props = props_or_refuse(lambda: requantize_props(xq, out, "fixed"))
            return [qnn.RequantizeOp.build(operands=[x], result_types=[self.int_type(op.results[0], out)],
                                           properties=props | self.named(name))]
        if isinstance(op, LAYOUT_OPS) or isinstance(op, nn.PoolOp | nn.GlobalPoolOp) and op.kind.data == "max":
            if act is not None or nudge is not None:
                raise NotFusable
            return [self.on_integers(op, out)]
        if not isinstance(op, FUSABLE_OPS) and type(op) not in TABLE_OPS:
            raise NotFusable
        if isinstance(op, nn.GemmOp) and int(op.trans_a.value.data):
            raise NotFusable
        if act is not None and act.kind == "leaky_relu" and not isinstance(op, nn.Conv2dOp | nn.GemmOp):
            raise NotFusable
        new = self.lowered(op, out, act, nudge)
        new.properties.update(self.named(op.properties.get("name")))
        return [new]

    def nudge_of(self, op: Operation) -> tuple[Nudge | None, Operation]:
        """The tie nudge of a pow2 export in front of a fusable op: y + c (c a small
        positive constant), or y + up + away * clip(y * k, -1, 1) after average pooling.
        Returns (the nudge, that op), else (None, op)."""
        if not isinstance(op, nn.AddOp):
            return None, op
        for first, second in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
            c = weight_array(second, self.store)
            inner = first.owner
            if c is not None and first.has_one_use() and isinstance(inner, FUSABLE_OPS) and np.all(c >= 0):
                return (c, np.zeros(1)), inner
        for first, second in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
            up_add, sign_mul = first.owner, second.owner
            if not (isinstance(up_add, nn.AddOp) and isinstance(sign_mul, nn.MulOp)):
                continue
            pool, up = self.with_constant(up_add)
            clip, away = self.with_constant(sign_mul)
            scaled = clip.input.owner if isinstance(clip, nn.ClipOp) else None
            if pool is None or not isinstance(scaled, nn.MulOp) or (qnn.fval(clip.min), qnn.fval(clip.max)) != (-1.0, 1.0):  # type: ignore[union-attr]
                continue
            if self.with_constant(scaled)[0] is pool and up is not None and away is not None:
                return (up, away), pool
        return None, op

    def with_constant(self, op: nn.AddOp | nn.MulOp) -> tuple[Operation | None, np.ndarray | None]:
        """(the op producing the non-constant operand, the constant) of an add or mul."""
        for first, second in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
            c = weight_array(second, self.store)
            if c is not None and isinstance(first.owner, Operation):
                return first.owner, c
        return None, None

    def lowered(self, op: Operation, out: QParams, act: Activation | None, nudge: Nudge | None) -> Operation:
        """`op` lowered with the pow2 scheme when its scales allow (and must, after a tie
        nudge, which must then be the one `export_onnx` writes), else fixed."""
        from xdsl.utils.exceptions import VerifyException

        pow2_ok = out.zero_point == 0 and pow2(out.scale)
        schemes = ("pow2",) if nudge is not None else ("pow2", "fixed") if pow2_ok else ("fixed",)
        for scheme in schemes:
            self.scheme = scheme  # type: ignore[misc]
            self.operand_nudges = []
            try:
                new = self.lower(op, out, act)
                new.verify()
            except (LayerloomError, ValueError, VerifyException, NotFusable):
                continue
            if (nudge is not None or any(self.operand_nudges)) and not nudges_match(new, nudge, self.operand_nudges):
                raise NotFusable
            return new
        raise NotFusable

    def named(self, name: object) -> dict:
        return {"name": name} if isinstance(name, StringAttr) else {}

    def int_type(self, value: SSAValue, q: QParams) -> TensorType:
        return tensor_type(nn.shape_of(value), q.element_type)

    def on_integers(self, op: Operation, out: QParams) -> Operation:
        """A layout op or max pooling between a dequantize and a quantize that agree."""
        x, xq = self.int_operand(op.operands[0], op)
        if not xq.same(out) or len(op.results) != 1:
            raise NotFusable
        props = dict(op.properties)
        result_types = [self.int_type(op.results[0], out)]
        if isinstance(op, nn.PoolOp):
            return qnn.PoolOp.build(operands=[x], result_types=result_types, properties=props | xq.input_props() | out.result_props())
        if isinstance(op, nn.GlobalPoolOp):
            return qnn.GlobalPoolOp.build(operands=[x], result_types=result_types,
                                          properties=props | xq.input_props() | out.result_props())
        if isinstance(op, nn.PadOp):
            props["value"] = f64attr(float(out.quantize(np.array([op.value.value.data], np.float32))[0]))
        assert isinstance(op, nn.NNOp)
        return type(op).build(operands=[x], result_types=result_types, properties=props)

    def erase_dead_code(self) -> None:
        for op in reversed(list(self.block.ops)):
            if not isinstance(op, ReturnOp) and op.results and all(not r.uses for r in op.results):
                self.block.erase_op(op)


def fuse_qdq(program: Program) -> Program:
    """Integer ops for the QDQ groups of an imported program (in place; returns it)."""
    if any(isinstance(op, qnn.QuantizeOp | qnn.DequantizeOp) for op in program.module.walk()):
        PatternRewriteWalker(FuseActivation()).rewrite_module(program.module)
        Fusion(program).run()
        verify_module(program.module, program.source)
    if any(RECORD in handle for handle in program.weights):
        program.drop_unused_weights()  # the records of folded DequantizeLinear nodes, unused weights
    return program
