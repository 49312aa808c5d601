"""The `nn` dialect: float (or integer) tensor ops with value semantics and static shapes.

This is the graph level of layerloom (see docs/dialects/nn.md). Every op carries an
optional `name` (the ONNX node name) that diagnostics and reports use. Weights and
constants are `nn.weight` ops that refer by handle to an array in the program's weight
store; an inline `value` is allowed (tests, self-contained files) and is moved into the
store when a file is loaded.

The shape rules live here, as small pure functions, because the verifiers check them and
the ONNX importer builds result types with them: one rule, used by both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

from xdsl.dialects.builtin import (
    AnyFloat,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    StringAttr,
    TensorType,
    i64,
)
from xdsl.ir import Attribute, Dialect, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

# ---------------------------------------------------------------------------------------
# Attribute helpers (builders and readers used by the importer, passes and executor)
# ---------------------------------------------------------------------------------------


def ints(values: Sequence[int]) -> DenseArrayBase:
    """An `array<i64: ...>` property."""
    return DenseArrayBase.from_list(i64, [int(v) for v in values])


def floats(values: Sequence[float]) -> DenseArrayBase:
    from xdsl.dialects.builtin import f64

    return DenseArrayBase.from_list(f64, [float(v) for v in values])


def f64attr(value: float) -> FloatAttr:
    from xdsl.dialects.builtin import f64

    return FloatAttr(float(value), f64)


def i64attr(value: int) -> IntegerAttr:
    return IntegerAttr(int(value), i64)


def int_list(attr: DenseArrayBase | None) -> tuple[int, ...]:
    return () if attr is None else tuple(int(v) for v in attr.iter_values())  # type: ignore[misc]


def float_list(attr: DenseArrayBase | None) -> tuple[float, ...]:
    return () if attr is None else tuple(float(v) for v in attr.iter_values())  # type: ignore[misc]


def shape_of(value: SSAValue | Attribute) -> tuple[int, ...]:
    t = value.type if isinstance(value, SSAValue) else value
    if not isinstance(t, TensorType):
        raise VerifyException(f"expected a ranked tensor, got {t}")
    return t.get_shape()


def element_type_of(value: SSAValue | Attribute) -> Attribute:
    t = value.type if isinstance(value, SSAValue) else value
    if not isinstance(t, TensorType):
        raise VerifyException(f"expected a ranked tensor, got {t}")
    return t.get_element_type()


def is_float(element_type: Attribute) -> bool:
    return isinstance(element_type, AnyFloat)


def is_integer(element_type: Attribute) -> bool:
    return isinstance(element_type, IntegerType)


# ---------------------------------------------------------------------------------------
# Shape rules (pure functions; raise ValueError with a readable message)
# ---------------------------------------------------------------------------------------


def broadcast_shapes(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    """Numpy / ONNX multidirectional broadcasting."""
    rank = max(len(a), len(b))
    pa = (1,) * (rank - len(a)) + tuple(a)
    pb = (1,) * (rank - len(b)) + tuple(b)
    out: list[int] = []
    for x, y in zip(pa, pb, strict=True):
        if x != y and x != 1 and y != 1:
            raise ValueError(f"shapes {tuple(a)} and {tuple(b)} do not broadcast")
        out.append(y if x == 1 else x)
    return tuple(out)


def window_output_size(
    size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, dilation: int, ceil_mode: bool
) -> int:
    """Output length of one spatial axis of a convolution or pooling window."""
    effective = dilation * (kernel - 1) + 1
    span = size + pad_begin + pad_end - effective
    if span < 0:
        raise ValueError(f"window of {effective} does not fit an axis of {size} padded by ({pad_begin}, {pad_end})")
    if ceil_mode:
        out = -(-span // stride) + 1
        # ONNX / PyTorch: the last window must start inside the input or the begin padding.
        if (out - 1) * stride >= size + pad_begin:
            out -= 1
        return out
    return span // stride + 1


def conv2d_output_shape(
    x: Sequence[int],
    w: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    group: int,
) -> tuple[int, ...]:
    """NCHW input, OIHW weight (I = C / group), pads as (top, left, bottom, right)."""
    if len(x) != 4 or len(w) != 4:
        raise ValueError(f"conv2d needs a 4-d input and weight, got {tuple(x)} and {tuple(w)}")
    n, c, h, wd = x
    m, ci, kh, kw = w
    if group < 1 or c % group or m % group:
        raise ValueError(f"group {group} does not divide input channels {c} and output channels {m}")
    if ci * group != c:
        raise ValueError(f"weight expects {ci * group} input channels, input has {c}")
    oh = window_output_size(h, kh, strides[0], pads[0], pads[2], dilations[0], False)
    ow = window_output_size(wd, kw, strides[1], pads[1], pads[3], dilations[1], False)
    return (n, m, oh, ow)


def pool_output_shape(
    x: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    ceil_mode: bool,
) -> tuple[int, ...]:
    if len(x) != 4:
        raise ValueError(f"pool needs a 4-d input, got {tuple(x)}")
    n, c, h, w = x
    oh = window_output_size(h, kernel[0], strides[0], pads[0], pads[2], dilations[0], ceil_mode)
    ow = window_output_size(w, kernel[1], strides[1], pads[1], pads[3], dilations[1], ceil_mode)
    return (n, c, oh, ow)


def gemm_output_shape(a: Sequence[int], b: Sequence[int], trans_a: bool, trans_b: bool) -> tuple[int, int]:
    if len(a) != 2 or len(b) != 2:
        raise ValueError(f"gemm needs 2-d operands, got {tuple(a)} and {tuple(b)}")
    m, k = (a[1], a[0]) if trans_a else (a[0], a[1])
    k2, n = (b[1], b[0]) if trans_b else (b[0], b[1])
    if k != k2:
        raise ValueError(f"gemm inner dimensions differ: {k} and {k2}")
    return (m, n)


def matmul_output_shape(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    """numpy.matmul semantics, including 1-d operands."""
    if not a or not b:
        raise ValueError("matmul operands must have rank >= 1")
    a2 = (1, a[0]) if len(a) == 1 else tuple(a)
    b2 = (b[0], 1) if len(b) == 1 else tuple(b)
    if a2[-1] != b2[-2]:
        raise ValueError(f"matmul inner dimensions differ: {a2[-1]} and {b2[-2]}")
    batch = broadcast_shapes(a2[:-2], b2[:-2])
    out = batch + ((a2[-2],) if len(a) > 1 else ()) + ((b2[-1],) if len(b) > 1 else ())
    return out


def slice_output_shape(
    x: Sequence[int], starts: Sequence[int], ends: Sequence[int], steps: Sequence[int]
) -> tuple[int, ...]:
    """starts/ends/steps per axis, already clamped as ONNX Slice does (end -1 with a
    negative step means 'through index 0')."""
    out: list[int] = []
    for size, s, e, st in zip(x, starts, ends, steps, strict=True):
        if st == 0:
            raise ValueError("slice step must not be 0")
        out.append(max(0, -(-(e - s) // st)) if st > 0 else max(0, -(-(s - e) // -st)))
        del size
    return tuple(out)


def concat_output_shape(shapes: Sequence[Sequence[int]], axis: int) -> tuple[int, ...]:
    if not shapes:
        raise ValueError("concat needs at least one operand")
    first = list(shapes[0])
    if not 0 <= axis < len(first):
        raise ValueError(f"concat axis {axis} out of range for rank {len(first)}")
    total = 0
    for s in shapes:
        if len(s) != len(first) or any(s[i] != first[i] for i in range(len(first)) if i != axis):
            raise ValueError(f"concat operands {tuple(shapes[0])} and {tuple(s)} differ off axis {axis}")
        total += s[axis]
    first[axis] = total
    return tuple(first)


def gather_output_shape(data: Sequence[int], indices: Sequence[int], axis: int) -> tuple[int, ...]:
    """ONNX Gather: the axis is replaced by the indices' shape."""
    if not 0 <= axis < len(data):
        raise ValueError(f"gather axis {axis} out of range for rank {len(data)}")
    return tuple(data[:axis]) + tuple(indices) + tuple(data[axis + 1 :])


def num_elements(shape: Sequence[int]) -> int:
    return math.prod(shape)


# ---------------------------------------------------------------------------------------
# Ops
# ---------------------------------------------------------------------------------------

ACTIVATIONS = ("relu", "clip", "leaky_relu")


class NNOp(IRDLOperation):
    """Common to every nn op: the ONNX node name and the uniform generic-looking syntax
    `nn.op %a, %b {attrs} : (types) -> types`."""

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "operands attr-dict `:` functional-type(operands, results)"
    traits = traits_def(Pure())

    node_name = opt_prop_def(StringAttr, prop_name="name")

    @property
    def layer_name(self) -> str:
        return self.node_name.data if self.node_name is not None else ""

    def check(self, condition: bool, message: str | Callable[[], str]) -> None:
        """Fail verification with `message` unless `condition`. A message that prints IR
        (a type, an attribute) should be a callable: verifiers run on every op after every
        pass, and printing is slow, so it is built only when the check fails."""
        if not condition:
            where = f" '{self.layer_name}'" if self.layer_name else ""
            text = message if isinstance(message, str) else message()
            raise VerifyException(f"{self.name}{where}: {text}")

    def check_shape(self, expected: Sequence[int], result: SSAValue) -> None:
        got = shape_of(result)
        self.check(tuple(got) == tuple(expected), lambda: f"result shape {got} should be {tuple(expected)}")

    def check_same_element_type(self, *values: SSAValue) -> None:
        types = {element_type_of(v) for v in values}
        self.check(len(types) == 1, lambda: f"element types differ: {sorted(str(t) for t in types)}")

    def check_static_tensor(self, v: SSAValue) -> None:
        self.check(isinstance(v.type, TensorType), lambda: f"expects ranked tensors, got {v.type}")
        self.check(all(d >= 0 for d in shape_of(v)), lambda: f"dynamic or negative shape {shape_of(v)}")

    def verify_(self) -> None:
        for v in (*self.operands, *self.results):
            self.check_static_tensor(v)
        self.verify_op()

    def verify_op(self) -> None:
        """Op-specific rules; tensor-ness and static shapes are already checked."""

    def check_pool_window(
        self, k: Sequence[int], st: Sequence[int], pd: Sequence[int], dl: Sequence[int], ceil_mode: bool,
        pads_below_kernel: bool = False,
    ) -> tuple[int, ...] | None:
        """The window rules nn.pool and qnn.pool share; the expected result shape, or None
        when the window does not fit (already reported)."""
        self.check(len(k) == 2 and min(k) >= 1, f"kernel {k} must be two positive integers")
        self.check(len(st) == 2 and min(st) >= 1, f"strides {st} must be two positive integers")
        self.check(len(dl) == 2 and min(dl) >= 1, f"dilations {dl} must be two positive integers")
        self.check(len(pd) == 4 and min(pd) >= 0, f"pads {pd} must be four non-negative integers")
        if pads_below_kernel:
            self.check(max(pd[0], pd[2]) < k[0] * dl[0] and max(pd[1], pd[3]) < k[1] * dl[1],
                       f"pads {pd} must be smaller than the kernel {k}")
        try:
            return pool_output_shape(shape_of(self.operands[0]), k, st, pd, dl, ceil_mode)
        except ValueError as e:
            self.check(False, str(e))
            return None


class FusedActivation:
    """Mixin: an optional activation fused into conv2d / gemm by `fuse-activation`."""

    activation = opt_prop_def(StringAttr)
    act_alpha = opt_prop_def(FloatAttr)
    act_min = opt_prop_def(FloatAttr)
    act_max = opt_prop_def(FloatAttr)

    def check_activation(self) -> None:
        assert isinstance(self, NNOp)
        act = self.activation
        if act is None:
            return
        self.check(act.data in ACTIVATIONS, f"unknown fused activation '{act.data}' (one of {ACTIVATIONS})")
        if act.data == "leaky_relu":
            self.check(self.act_alpha is not None, "leaky_relu needs act_alpha")
        if act.data == "clip":
            lo, hi = self.act_min, self.act_max
            if lo is not None and hi is not None:
                self.check(lo.value.data <= hi.value.data, "act_min must not exceed act_max")


@irdl_op_definition
class WeightOp(NNOp):
    """A constant tensor held in the weight store under `handle` (or inline in `value`)."""

    name = "nn.weight"
    assembly_format = "$handle attr-dict `:` type($result)"
    handle = prop_def(StringAttr)
    value = opt_prop_def(DenseIntOrFPElementsAttr)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        self.check(bool(self.handle.data), "empty weight handle")
        if self.value is not None:
            self.check(
                tuple(self.value.get_shape() or ()) == shape_of(self.result) or self.value.get_shape() is None,
                f"inline value shape {self.value.get_shape()} differs from {shape_of(self.result)}",
            )
            element = self.value.get_element_type()
            self.check(element == element_type_of(self.result),
                       f"inline value of type {element} differs from the result's {element_type_of(self.result)}")
            try:
                item = element.compile_time_size
            except NotImplementedError:  # xDSL packs only 8 to 64-bit integers
                raise VerifyException(f"inline values of type {element} are not supported") from None
            size, count = len(self.value.data.data), math.prod(shape_of(self.result))
            self.check(size in (item, item * count),
                       f"inline value holds {size} bytes; {count} values of {element} take {item * count}")


@irdl_op_definition
class Conv2dOp(FusedActivation, NNOp):
    """2-d convolution, NCHW / OIHW; `group` covers depthwise. pads = (top, left, bottom, right)."""

    name = "nn.conv2d"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    strides = prop_def(DenseArrayBase)
    pads = prop_def(DenseArrayBase)
    dilations = prop_def(DenseArrayBase)
    group = prop_def(IntegerAttr)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        st, pd, dl = int_list(self.strides), int_list(self.pads), int_list(self.dilations)
        self.check(len(st) == 2 and min(st) >= 1, f"strides {st} must be two positive integers")
        self.check(len(dl) == 2 and min(dl) >= 1, f"dilations {dl} must be two positive integers")
        self.check(len(pd) == 4 and min(pd) >= 0, f"pads {pd} must be four non-negative integers")
        self.check(is_float(element_type_of(self.input)), "conv2d is float-only at the nn level")
        self.check_same_element_type(self.input, self.weight, self.result)
        if self.bias is not None:
            self.check(shape_of(self.bias) == (shape_of(self.weight)[0],), "bias must have one value per output channel")
        try:
            expected = conv2d_output_shape(shape_of(self.input), shape_of(self.weight), st, pd, dl, self.group.value.data)
        except ValueError as e:
            self.check(False, str(e))
            return
        self.check_shape(expected, self.result)
        self.check_activation()


@irdl_op_definition
class GemmOp(FusedActivation, NNOp):
    """Y = alpha * op(A) @ op(B) + beta * C, as ONNX Gemm (C broadcast to [M, N])."""

    name = "nn.gemm"
    a = operand_def(TensorType)
    b = operand_def(TensorType)
    c = opt_operand_def(TensorType)
    trans_a = prop_def(IntegerAttr)
    trans_b = prop_def(IntegerAttr)
    alpha = prop_def(FloatAttr)
    beta = prop_def(FloatAttr)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        self.check_same_element_type(self.a, self.b, self.result)
        try:
            expected = gemm_output_shape(
                shape_of(self.a), shape_of(self.b), bool(self.trans_a.value.data), bool(self.trans_b.value.data)
            )
            if self.c is not None:
                self.check(broadcast_shapes(shape_of(self.c), expected) == expected, "C does not broadcast to [M, N]")
        except ValueError as e:
            self.check(False, str(e))
            return
        self.check_shape(expected, self.result)
        self.check_activation()


@irdl_op_definition
class MatMulOp(NNOp):
    """numpy.matmul semantics (batched, broadcasting)."""

    name = "nn.matmul"
    a = operand_def(TensorType)
    b = operand_def(TensorType)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        self.check_same_element_type(self.a, self.b, self.result)
        try:
            expected = matmul_output_shape(shape_of(self.a), shape_of(self.b))
        except ValueError as e:
            self.check(False, str(e))
            return
        self.check_shape(expected, self.result)


class BinaryElementwiseOp(NNOp):
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        self.check_same_element_type(self.lhs, self.rhs, self.result)
        try:
            expected = broadcast_shapes(shape_of(self.lhs), shape_of(self.rhs))
        except ValueError as e:
            self.check(False, str(e))
            return
        self.check_shape(expected, self.result)


@irdl_op_definition
class AddOp(BinaryElementwiseOp):
    name = "nn.add"


@irdl_op_definition
class SubOp(BinaryElementwiseOp):
    name = "nn.sub"


@irdl_op_definition
class MulOp(BinaryElementwiseOp):
    name = "nn.mul"


@irdl_op_definition
class DivOp(BinaryElementwiseOp):
    """Float division; integer division truncates toward zero (as onnxruntime does)."""

    name = "nn.div"


class UnaryElementwiseOp(NNOp):
    input = operand_def(TensorType)
    result = result_def(TensorType)
    FLOAT_ONLY: ClassVar[bool] = True

    def verify_op(self) -> None:
        self.check_same_element_type(self.input, self.result)
        self.check_shape(shape_of(self.input), self.result)
        if self.FLOAT_ONLY:
            self.check(is_float(element_type_of(self.input)), f"{self.name} is float-only")
        self.verify_params()

    def verify_params(self) -> None:
        pass


@irdl_op_definition
class IdentityOp(UnaryElementwiseOp):
    """ONNX Identity and Dropout (inference); removed by `canonicalize`."""

    name = "nn.identity"
    FLOAT_ONLY: ClassVar[bool] = False


@irdl_op_definition
class ReluOp(UnaryElementwiseOp):
    name = "nn.relu"
    FLOAT_ONLY: ClassVar[bool] = False


@irdl_op_definition
class SigmoidOp(UnaryElementwiseOp):
    name = "nn.sigmoid"


@irdl_op_definition
class TanhOp(UnaryElementwiseOp):
    name = "nn.tanh"


@irdl_op_definition
class HardSwishOp(UnaryElementwiseOp):
    """x * max(0, min(1, x / 6 + 1 / 2))."""

    name = "nn.hardswish"


@irdl_op_definition
class ClipOp(UnaryElementwiseOp):
    """min(max(x, min), max); a missing bound is unbounded."""

    name = "nn.clip"
    FLOAT_ONLY: ClassVar[bool] = False
    min = opt_prop_def(FloatAttr)
    max = opt_prop_def(FloatAttr)

    def verify_params(self) -> None:
        if self.min is not None and self.max is not None:
            # ONNX allows min > max (every value becomes max); nothing to reject.
            pass


@irdl_op_definition
class LeakyReluOp(UnaryElementwiseOp):
    name = "nn.leaky_relu"
    alpha = prop_def(FloatAttr)


@irdl_op_definition
class HardSigmoidOp(UnaryElementwiseOp):
    """max(0, min(1, alpha * x + beta))."""

    name = "nn.hard_sigmoid"
    alpha = prop_def(FloatAttr)
    beta = prop_def(FloatAttr)


@irdl_op_definition
class SoftmaxOp(UnaryElementwiseOp):
    """Softmax along one axis (opset 13 semantics; the importer rewrites older opsets)."""

    name = "nn.softmax"
    axis = prop_def(IntegerAttr)

    def verify_params(self) -> None:
        rank = len(shape_of(self.input))
        self.check(0 <= self.axis.value.data < max(rank, 1), f"axis {self.axis.value.data} out of range for rank {rank}")


@irdl_op_definition
class LRNOp(UnaryElementwiseOp):
    """Local response normalization across channels (ONNX LRN; AlexNet, GoogLeNet):
    y = x / (bias + alpha / size * sum of x^2 over `size` neighbouring channels) ^ beta."""

    name = "nn.lrn"
    size = prop_def(IntegerAttr)
    alpha = prop_def(FloatAttr)
    beta = prop_def(FloatAttr)
    bias = prop_def(FloatAttr)

    def verify_params(self) -> None:
        self.check(self.size.value.data >= 1, "size must be positive")
        self.check(len(shape_of(self.input)) >= 2, "lrn needs rank >= 2 (channels on axis 1)")


@irdl_op_definition
class BatchNormOp(NNOp):
    """Inference batch normalization over axis 1."""

    name = "nn.batchnorm"
    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    bias = operand_def(TensorType)
    mean = operand_def(TensorType)
    var = operand_def(TensorType)
    epsilon = prop_def(FloatAttr)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        x = shape_of(self.input)
        self.check(len(x) >= 2, f"batchnorm needs rank >= 2, got {x}")
        self.check(is_float(element_type_of(self.input)), "batchnorm is float-only")
        for p in (self.scale, self.bias, self.mean, self.var):
            self.check(shape_of(p) == (x[1],), f"parameter shape {shape_of(p)} should be ({x[1]},)")
        self.check_shape(x, self.result)


@irdl_op_definition
class PoolOp(NNOp):
    """Max or average pooling over H and W. pads = (top, left, bottom, right)."""

    name = "nn.pool"
    input = operand_def(TensorType)
    kind = prop_def(StringAttr)
    kernel = prop_def(DenseArrayBase)
    strides = prop_def(DenseArrayBase)
    pads = prop_def(DenseArrayBase)
    dilations = prop_def(DenseArrayBase)
    ceil_mode = prop_def(IntegerAttr)
    count_include_pad = prop_def(IntegerAttr)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        k, st, pd, dl = int_list(self.kernel), int_list(self.strides), int_list(self.pads), int_list(self.dilations)
        self.check(self.kind.data in ("max", "avg"), f"kind '{self.kind.data}' must be max or avg")
        expected = self.check_pool_window(
            k, st, pd, dl, bool(self.ceil_mode.value.data), pads_below_kernel=self.kind.data == "max"
        )
        self.check_same_element_type(self.input, self.result)
        if expected is not None:
            self.check_shape(expected, self.result)


@irdl_op_definition
class GlobalPoolOp(NNOp):
    """Max or average over all spatial axes, keeping them as size 1."""

    name = "nn.global_pool"
    input = operand_def(TensorType)
    kind = prop_def(StringAttr)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        x = shape_of(self.input)
        self.check(self.kind.data in ("max", "avg"), f"kind '{self.kind.data}' must be max or avg")
        self.check(len(x) >= 3, f"global pool needs rank >= 3, got {x}")
        self.check_same_element_type(self.input, self.result)
        self.check_shape(x[:2] + (1,) * (len(x) - 2), self.result)


@irdl_op_definition
class ConcatOp(NNOp):
    name = "nn.concat"
    inputs = var_operand_def(TensorType)
    axis = prop_def(IntegerAttr)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        self.check(len(self.inputs) >= 1, "concat needs at least one operand")
        self.check_same_element_type(*self.inputs, self.result)
        try:
            expected = concat_output_shape([shape_of(v) for v in self.inputs], self.axis.value.data)
        except ValueError as e:
            self.check(False, str(e))
            return
        self.check_shape(expected, self.result)


@irdl_op_definition
class SplitOp(NNOp):
    """Split along `axis` into the results' sizes, in order."""

    name = "nn.split"
    input = operand_def(TensorType)
    axis = prop_def(IntegerAttr)
    outputs = var_result_def(TensorType)

    def verify_op(self) -> None:
        x = shape_of(self.input)
        axis = self.axis.value.data
        self.check(0 <= axis < len(x), f"axis {axis} out of range for rank {len(x)}")
        self.check(len(self.outputs) >= 1, "split needs at least one result")
        self.check_same_element_type(self.input, *self.outputs)
        try:
            total = concat_output_shape([shape_of(r) for r in self.outputs], axis)
        except ValueError as e:
            self.check(False, str(e))
            return
        self.check(total == x, f"results {[shape_of(r) for r in self.outputs]} do not tile the input {x}")


@irdl_op_definition
class SliceOp(NNOp):
    """Strided slice with one (start, end, step) per axis, clamped as ONNX Slice does;
    with a negative step an end of -1 means 'through index 0'."""

    name = "nn.slice"
    input = operand_def(TensorType)
    starts = prop_def(DenseArrayBase)
    ends = prop_def(DenseArrayBase)
    steps = prop_def(DenseArrayBase)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        x = shape_of(self.input)
        s, e, st = int_list(self.starts), int_list(self.ends), int_list(self.steps)
        self.check(len(s) == len(e) == len(st) == len(x), f"starts/ends/steps need one entry per axis ({len(x)})")
        for size, a, b, step in zip(x, s, e, st, strict=True):
            lo, hi = (0, size) if step > 0 else (0, size - 1)
            self.check(lo <= a <= max(hi, 0), f"start {a} outside [{lo}, {hi}]")
            self.check((0 <= b <= size) if step > 0 else (-1 <= b <= size - 1), f"end {b} out of range")
        self.check_same_element_type(self.input, self.result)
        try:
            expected = slice_output_shape(x, s, e, st)
        except ValueError as err:
            self.check(False, str(err))
            return
        self.check_shape(expected, self.result)


@irdl_op_definition
class ReshapeOp(NNOp):
    """Reshape (also Flatten, Squeeze, Unsqueeze); the new shape is the result type."""

    name = "nn.reshape"
    input = operand_def(TensorType)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        self.check_same_element_type(self.input, self.result)
        a, b = shape_of(self.input), shape_of(self.result)
        self.check(num_elements(a) == num_elements(b), f"cannot reshape {a} ({num_elements(a)} elements) to {b}")


@irdl_op_definition
class TransposeOp(NNOp):
    name = "nn.transpose"
    input = operand_def(TensorType)
    perm = prop_def(DenseArrayBase)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        x, perm = shape_of(self.input), int_list(self.perm)
        self.check(sorted(perm) == list(range(len(x))), f"perm {perm} is not a permutation of rank {len(x)}")
        self.check_same_element_type(self.input, self.result)
        self.check_shape(tuple(x[p] for p in perm), self.result)


@irdl_op_definition
class GatherOp(NNOp):
    """ONNX Gather: entries of `data` along `axis` picked by integer `indices` (negative
    ones count from the end; an index out of range is an error when run)."""

    name = "nn.gather"
    data = operand_def(TensorType)
    indices = operand_def(TensorType)
    axis = prop_def(IntegerAttr)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        kind = element_type_of(self.indices)
        self.check(isinstance(kind, IntegerType) and kind.width.data in (32, 64), f"indices must be i32 or i64, not {kind}")
        self.check_same_element_type(self.data, self.result)
        try:
            expected = gather_output_shape(shape_of(self.data), shape_of(self.indices), self.axis.value.data)
        except ValueError as e:
            self.check(False, str(e))
            return
        self.check_shape(expected, self.result)


PAD_MODES = ("constant", "reflect", "edge", "wrap")


@irdl_op_definition
class PadOp(NNOp):
    """pads = all begins then all ends (ONNX order); negative pads crop."""

    name = "nn.pad"
    input = operand_def(TensorType)
    pads = prop_def(DenseArrayBase)
    mode = prop_def(StringAttr)
    value = prop_def(FloatAttr)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        x, pads = shape_of(self.input), int_list(self.pads)
        self.check(len(pads) == 2 * len(x), f"pads {pads} need two entries per axis ({len(x)})")
        self.check(self.mode.data in PAD_MODES, f"mode '{self.mode.data}' must be one of {PAD_MODES}")
        self.check_same_element_type(self.input, self.result)
        r = len(x)
        self.check_shape(tuple(x[i] + pads[i] + pads[i + r] for i in range(r)), self.result)


RESIZE_MODES = ("nearest", "linear", "cubic")
RESIZE_COORDINATES = (
    "half_pixel",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "half_pixel_symmetric",
    "tf_crop_and_resize",
)
RESIZE_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@irdl_op_definition
class ResizeOp(NNOp):
    """Nearest, (multi-)linear or cubic resize to the result shape, as ONNX Resize. `scales`
    (one per axis) are the factors that the coordinate transformation uses. Optional:
    `cubic_coeff_a` (default -0.75), `exclude_outside` and `antialias` (flags, default 0),
    and for `tf_crop_and_resize` the `roi` (all starts, then all ends, one per axis, as
    fractions of the input) and the `extrapolation_value` (default 0) for outside points."""

    name = "nn.resize"
    input = operand_def(TensorType)
    mode = prop_def(StringAttr)
    coordinate_mode = prop_def(StringAttr)
    nearest_mode = prop_def(StringAttr)
    scales = prop_def(DenseArrayBase)
    cubic_coeff_a = opt_prop_def(FloatAttr)
    exclude_outside = opt_prop_def(IntegerAttr)
    antialias = opt_prop_def(IntegerAttr)
    roi = opt_prop_def(DenseArrayBase)
    extrapolation_value = opt_prop_def(FloatAttr)
    result = result_def(TensorType)

    def verify_op(self) -> None:
        x, scales = shape_of(self.input), float_list(self.scales)
        mode = self.mode.data
        self.check(mode in RESIZE_MODES, f"mode '{mode}' must be one of {RESIZE_MODES}")
        self.check(self.coordinate_mode.data in RESIZE_COORDINATES, f"unknown coordinate mode '{self.coordinate_mode.data}'")
        self.check(self.nearest_mode.data in RESIZE_NEAREST, f"unknown nearest mode '{self.nearest_mode.data}'")
        self.check(len(scales) == len(x) and min(scales, default=1.0) > 0, f"scales {scales} need one positive entry per axis")
        self.check_same_element_type(self.input, self.result)
        self.check(len(shape_of(self.result)) == len(x), "resize keeps the rank")
        if mode != "nearest":
            self.check(is_float(element_type_of(self.input)), f"{mode} resize is float-only")
        for flag in (self.exclude_outside, self.antialias):
            self.check(flag is None or flag.value.data in (0, 1), "exclude_outside and antialias are 0 or 1")
        if self.antialias is not None and self.antialias.value.data:
            self.check(mode != "nearest", "antialias needs mode linear or cubic")
        crop = self.coordinate_mode.data == "tf_crop_and_resize"
        roi = float_list(self.roi)
        self.check((self.roi is not None) == crop, "roi is given exactly when the coordinate mode is tf_crop_and_resize")
        self.check(not crop or len(roi) == 2 * len(x), f"roi {roi} needs a start and an end per axis ({2 * len(x)} values)")


NN = Dialect(
    "nn",
    [
        WeightOp,
        Conv2dOp,
        GemmOp,
        MatMulOp,
        AddOp,
        SubOp,
        MulOp,
        DivOp,
        IdentityOp,
        ReluOp,
        SigmoidOp,
        TanhOp,
        HardSwishOp,
        ClipOp,
        LeakyReluOp,
        HardSigmoidOp,
        SoftmaxOp,
        LRNOp,
        BatchNormOp,
        PoolOp,
        GlobalPoolOp,
        ConcatOp,
        SplitOp,
        SliceOp,
        ReshapeOp,
        TransposeOp,
        GatherOp,
        PadOp,
        ResizeOp,
    ],
    [],
)
