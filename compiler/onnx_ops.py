"""ONNX op converters for the frontend (see compiler/onnx_import.py and docs/frontend.md).

Each converter takes the Builder and one Node and returns one Value per node output: a
NumPy array when the result is known at import time (constants and shape arithmetic are
folded here), else the SSA result of the `nn` ops it emitted. Converters raise
`ValueError` for an inconsistent model and `Refused` for what layerloom does not support;
the import loop adds the node's name to both.

`node_problems` is the static half: what can be refused from the node alone (attributes,
which inputs are constant, which outputs are used), so that the importer can list every
unsupported node before converting anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence, Set

import numpy as np
from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Attribute, SSAValue

from compiler.onnx_import import (
    ONNX_DTYPES,
    Builder,
    Node,
    Refused,
    Value,
    check_size,
    dtype_name,
    dtype_of,
    element_of,
    onnx_dtype,
    shape_of,
)
from dialects import nn
from dialects.nn import f64attr, floats, i64attr, ints

Converter = Callable[[Builder, Node], list[Value]]
CONVERTERS: dict[str, Converter] = {}
# Ops whose outputs are constants (folded with NumPy) when all their inputs are.
FOLDABLE: set[str] = set()


def converter(*op_types: str, foldable: bool = False) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        for op_type in op_types:
            CONVERTERS[op_type] = fn
            if foldable:
                FOLDABLE.add(op_type)
        return fn

    return register


# ---------------------------------------------------------------------------------------
# Static checks (run on every node before any conversion)
# ---------------------------------------------------------------------------------------

def constant_outputs(n: Node, constants: set[str]) -> set[str]:
    """Outputs of `n` that the import will know as constants, given the constant names."""
    outputs = {o for o in n.outputs if o}
    if n.op_type in ("Constant", "Shape"):  # shapes are static, so Shape always folds
        return outputs
    if n.op_type in FOLDABLE and all(i in constants for i in n.inputs if i):
        return outputs
    return set()


def const_inputs(n: Node) -> dict[int, str]:
    """Inputs that must be known at import time, by index, with a name for messages."""
    v = n.opset
    table: dict[str, dict[int, str]] = {
        "Reshape": {1: "shape"},
        "ConstantOfShape": {0: "shape"},
        "Upsample": {1: "scales"},
    }
    if v >= 10:
        table["Slice"] = {1: "starts", 2: "ends", 3: "axes", 4: "steps"}
    if v >= 11:
        table["Clip"] = {1: "min", 2: "max"}
        table["Pad"] = {1: "pads", 2: "constant_value", 3: "axes"}
        table["Resize"] = {2: "scales", 3: "sizes"}
        if n.attr("coordinate_transformation_mode") == "tf_crop_and_resize":
            table["Resize"][1] = "roi"  # read only in this mode
    else:
        table["Resize"] = {1: "scales"}
    if v >= 12:  # the ratio matters only in training mode
        table["Dropout"] = {1: "ratio", 2: "training_mode"} if n.has_input(2) else {}
    if v >= 13:
        table.update({"Split": {1: "split"}, "Squeeze": {1: "axes"}, "Unsqueeze": {1: "axes"}})
    return table.get(n.op_type, {})


def unsupported_outputs(n: Node) -> str | None:
    """Outputs that layerloom does not compute (the node is refused if they are used)."""
    if n.op_type == "MaxPool":
        return "Indices output"
    if n.op_type == "BatchNormalization":
        return "training outputs (mean, var, saved statistics)"
    if n.op_type == "Dropout" and n.opset < 10:  # Dropout-7's mask has the input's type
        return "mask output before opset 10"
    return None


def node_problems(n: Node, constants: Set[str], used: Set[str], graph_inputs: Set[str] = frozenset()) -> Iterator[str]:
    """Reasons why `n` cannot be imported, found without converting anything."""
    for i, what in const_inputs(n).items():
        name = n.inputs[i] if n.has_input(i) else ""
        if name in graph_inputs:
            yield f"input '{what}' must be a constant, but it is the graph input '{name}' (give its value with constants=)"
        elif name and name not in constants:
            yield f"input '{what}' must be a constant (computed tensors are not supported there)"
    unsupported = unsupported_outputs(n)
    if unsupported and any(o in used for o in n.outputs[1:] if o):
        yield f"{unsupported} not supported"
    check = CHECKS.get(n.op_type)
    if check is not None:
        yield from check(n)


def _check_window(n: Node) -> Iterator[str]:
    kernel = n.attr("kernel_shape")
    if n.op_type == "Conv" and kernel is not None and len(kernel) not in (1, 2):
        yield f"{len(kernel)}-D convolution not supported (1-D and 2-D are)"
    if n.op_type != "Conv" and kernel is not None and len(kernel) not in (1, 2, 3):
        yield f"{len(kernel)}-D pooling not supported (1-D, 2-D and 3-D are)"
    auto_pad = n.attr("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        yield f"auto_pad {auto_pad} not supported"
    pads = n.attr("pads")
    if auto_pad != "NOTSET" and pads is not None and (auto_pad != "VALID" or any(pads)):
        # The spec allows one of the two; onnxruntime refuses a Conv with both, and lets a
        # pool's auto_pad win: which one the author meant is anybody's guess.
        yield f"auto_pad {auto_pad} together with pads {list(pads)} (the ONNX spec allows one of them)"
    if n.op_type != "Conv" and auto_pad.startswith("SAME") and max(n.attr("dilations", [1]), default=1) > 1:
        # onnxruntime pads pools for the undilated kernel, the ONNX spec for the dilated one.
        yield f"auto_pad {auto_pad} with dilations > 1 not supported (onnxruntime and the ONNX spec disagree)"


def _check_resize(n: Node) -> Iterator[str]:
    mode = n.attr("mode", "nearest")
    legacy = n.op_type == "Upsample" or n.opset < 11
    if mode not in (("nearest", "linear") if legacy else nn.RESIZE_MODES):
        yield f"mode {mode} not supported ({', '.join(('nearest', 'linear') if legacy else nn.RESIZE_MODES)} are)"
    if legacy:
        return
    coordinates = n.attr("coordinate_transformation_mode", "half_pixel")
    if coordinates not in nn.RESIZE_COORDINATES:  # tf_half_pixel_for_nn (deprecated in 13) among others
        yield f"coordinate_transformation_mode {coordinates} not supported"
    nearest = n.attr("nearest_mode", "round_prefer_floor")
    if mode == "nearest" and nearest not in nn.RESIZE_NEAREST:
        yield f"nearest_mode {nearest} not supported"
    antialias = bool(n.attr("antialias", 0)) and mode != "nearest"  # nearest ignores it
    if n.attr("exclude_outside", 0) and mode != "cubic" and not antialias:
        # onnxruntime refuses it too: the flag only changes cubic and antialiased weights
        yield f"exclude_outside with mode {mode}{'' if mode == 'nearest' else ' without antialias'} not supported"
    policy = n.attr("keep_aspect_ratio_policy", "stretch")
    if policy not in ("stretch", "not_larger", "not_smaller"):
        yield f"keep_aspect_ratio_policy {policy} not supported"


def _check_pad(n: Node) -> Iterator[str]:
    mode = n.attr("mode", "constant")
    if mode not in nn.PAD_MODES:
        yield f"mode {mode} not supported ({', '.join(nn.PAD_MODES)} are)"


def _check_batchnorm(n: Node) -> Iterator[str]:
    if n.attr("training_mode", 0):
        yield "training_mode not supported (inference only)"


def _check_cast(n: Node) -> Iterator[str]:
    to = n.attr("to")
    if to not in ONNX_DTYPES:
        yield f"cast to {dtype_name(to)} not supported"


def _check_constant(n: Node) -> Iterator[str]:
    for key, value in n.attrs.items():
        if key not in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            yield f"{key} not supported"
        elif key == "value" and value.data_type not in ONNX_DTYPES:
            yield f"element type {dtype_name(value.data_type)} not supported"


def _check_constant_of_shape(n: Node) -> Iterator[str]:
    value = n.attr("value")
    if value is not None and value.data_type not in ONNX_DTYPES:
        yield f"element type {dtype_name(value.data_type)} not supported"


CHECKS: dict[str, Callable[[Node], Iterator[str]]] = {
    "Conv": _check_window,
    "MaxPool": _check_window,
    "AveragePool": _check_window,
    "Resize": _check_resize,
    "Upsample": _check_resize,
    "Pad": _check_pad,
    "BatchNormalization": _check_batchnorm,
    "Cast": _check_cast,
    "Constant": _check_constant,
    "ConstantOfShape": _check_constant_of_shape,
}


# ---------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------


def normalize_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise ValueError(f"{what} {axis} out of range for rank {rank}")
    return axis % rank


def normalize_axes(axes: Sequence[int], rank: int) -> list[int]:
    out = [normalize_axis(int(a), rank) for a in axes]
    if len(set(out)) != len(out):
        raise ValueError(f"axes {list(axes)} repeat an axis")
    return out


def same_element(*values: Value) -> None:
    kinds = {str(element_of(v)) for v in values}
    if len(kinds) > 1:
        raise ValueError(f"element types differ: {', '.join(sorted(kinds))}")


def ints_of(array: np.ndarray | None) -> list[int] | None:
    return None if array is None else [int(v) for v in np.asarray(array).reshape(-1)]


def scalar_of(array: np.ndarray | None) -> float | None:
    """A constant scalar input (an empty tensor counts as missing)."""
    if array is None or array.size == 0:
        return None
    if array.size != 1:
        raise ValueError(f"expected a scalar, got shape {array.shape}")
    return float(array.reshape(-1)[0])


def as_ssa(b: Builder, v: Value, hint: str) -> SSAValue:
    return b.weight(v, hint) if isinstance(v, np.ndarray) else v


def unary(b: Builder, n: Node, op_class: type[nn.NNOp], **properties: Attribute | None) -> list[Value]:
    x = b.ssa(n, 0)
    return [b.emit(op_class, [x], shape_of(x), element_of(x), **properties)]


# ---------------------------------------------------------------------------------------
# Constants and shape arithmetic (folded)
# ---------------------------------------------------------------------------------------


@converter("Constant")
def convert_constant(b: Builder, n: Node) -> list[Value]:
    if "value" in n.attrs:
        return [b.reader.read(n.attrs["value"], f"value of {n.label}")]
    if "value_float" in n.attrs:
        return [np.array(n.attrs["value_float"], np.float32)]
    if "value_floats" in n.attrs:
        return [np.array(n.attrs["value_floats"], np.float32)]
    if "value_int" in n.attrs:
        return [np.array(n.attrs["value_int"], np.int64)]
    if "value_ints" in n.attrs:
        return [np.array(n.attrs["value_ints"], np.int64)]
    raise ValueError("Constant has no value")


@converter("ConstantOfShape", foldable=True)
def convert_constant_of_shape(b: Builder, n: Node) -> list[Value]:
    shape = ints_of(b.const(n, 0, "shape")) or []
    check_size(shape, "the requested shape")
    value = n.attr("value")
    fill = b.reader.read(value, f"value of {n.label}") if value is not None else np.zeros(1, np.float32)
    if fill.size != 1:
        raise ValueError(f"value must hold one element, holds {fill.size}")
    return [np.full(shape, fill.reshape(-1)[0], dtype=fill.dtype)]


@converter("Shape")
def convert_shape(b: Builder, n: Node) -> list[Value]:
    shape = shape_of(b.value(n, 0))
    return [np.array(shape[n.attr("start", 0) : n.attr("end", len(shape))], np.int64)]


@converter("Gather", foldable=True)
def convert_gather(b: Builder, n: Node) -> list[Value]:
    """Folded when data and indices are constants (shape arithmetic), else `nn.gather`."""
    data, indices = b.value(n, 0), b.value(n, 1)
    shape = shape_of(data)
    axis = normalize_axis(n.attr("axis", 0), len(shape))
    if dtype_of(indices) not in (np.dtype(np.int32), np.dtype(np.int64)):
        raise ValueError(f"indices must be int32 or int64, not {dtype_of(indices)}")
    if isinstance(indices, np.ndarray):  # known indices are checked (and made non-negative) now
        size = shape[axis]
        if np.any((indices < -size) | (indices >= size)):
            raise ValueError(f"indices out of range for axis {axis} of size {size}")
        indices = np.where(indices < 0, indices + size, indices).astype(indices.dtype)
        if isinstance(data, np.ndarray):
            return [np.take(data, indices, axis=axis)]
    out = nn.gather_output_shape(shape, shape_of(indices), axis)
    operands = [b.ssa(n, 0), as_ssa(b, indices, n.inputs[1])]
    return [b.emit(nn.GatherOp, operands, out, element_of(data), axis=i64attr(axis))]


@converter("Cast", foldable=True)
def convert_cast(b: Builder, n: Node) -> list[Value]:
    target = onnx_dtype(n.attr("to"))
    x = b.value(n, 0)
    if isinstance(x, np.ndarray):
        return [x.astype(target)]
    if dtype_of(x) == target:
        return unary(b, n, nn.IdentityOp)
    raise Refused(f"cast of a computed tensor from {dtype_of(x)} to {target} not supported (only constants are cast)")


# ---------------------------------------------------------------------------------------
# Elementwise
# ---------------------------------------------------------------------------------------


def _divide(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":  # integer division truncates toward zero, as onnxruntime does
        if np.any(c == 0):
            raise ValueError("integer division by zero")
        q = np.floor_divide(a, c)
        return q + ((q < 0) & (q * c != a))
    return a / c


BINARY: dict[str, tuple[type[nn.BinaryElementwiseOp], Callable[[np.ndarray, np.ndarray], np.ndarray]]] = {
    "Add": (nn.AddOp, np.add),
    "Sub": (nn.SubOp, np.subtract),
    "Mul": (nn.MulOp, np.multiply),
    "Div": (nn.DivOp, _divide),
}


def binary(b: Builder, op_type: str, lhs: Value, rhs: Value, hint: str) -> Value:
    op_class, fold = BINARY[op_type]
    same_element(lhs, rhs)
    shape = nn.broadcast_shapes(shape_of(lhs), shape_of(rhs))
    if isinstance(lhs, np.ndarray) and isinstance(rhs, np.ndarray):
        return np.asarray(fold(lhs, rhs)).astype(lhs.dtype, copy=False)
    return b.emit(op_class, [as_ssa(b, lhs, hint), as_ssa(b, rhs, hint)], shape, element_of(lhs))


@converter("Add", "Sub", "Mul", "Div", foldable=True)
def convert_binary(b: Builder, n: Node) -> list[Value]:
    get = b.value if b.all_const(n) else b.ssa
    return [binary(b, n.op_type, get(n, 0), get(n, 1), n.name)]


@converter("Sum", foldable=True)
def convert_sum(b: Builder, n: Node) -> list[Value]:
    if not n.inputs:
        raise ValueError("Sum needs at least one input")
    fold = b.all_const(n)
    get = b.value if fold else b.ssa
    values: list[Value] = [get(n, i) for i in range(len(n.inputs))]
    if len(values) == 1:
        return values if fold else unary(b, n, nn.IdentityOp)
    total = values[0]
    for v in values[1:]:
        total = binary(b, "Add", total, v, n.name)
    return [total]


@converter("Relu")
def convert_relu(b: Builder, n: Node) -> list[Value]:
    return unary(b, n, nn.ReluOp)


@converter("Sigmoid")
def convert_sigmoid(b: Builder, n: Node) -> list[Value]:
    return unary(b, n, nn.SigmoidOp)


@converter("Tanh")
def convert_tanh(b: Builder, n: Node) -> list[Value]:
    return unary(b, n, nn.TanhOp)


@converter("HardSwish")
def convert_hardswish(b: Builder, n: Node) -> list[Value]:
    return unary(b, n, nn.HardSwishOp)


@converter("LeakyRelu")
def convert_leaky_relu(b: Builder, n: Node) -> list[Value]:
    return unary(b, n, nn.LeakyReluOp, alpha=f64attr(n.attr("alpha", 0.01)))


@converter("HardSigmoid")
def convert_hard_sigmoid(b: Builder, n: Node) -> list[Value]:
    return unary(b, n, nn.HardSigmoidOp, alpha=f64attr(n.attr("alpha", 0.2)), beta=f64attr(n.attr("beta", 0.5)))


@converter("Clip")
def convert_clip(b: Builder, n: Node) -> list[Value]:
    if n.opset < 11:
        lo, hi = n.attr("min"), n.attr("max")
    else:
        lo = scalar_of(b.optional_const(n, 1, "min"))
        hi = scalar_of(b.optional_const(n, 2, "max"))
    return unary(
        b, n, nn.ClipOp, min=None if lo is None else f64attr(lo), max=None if hi is None else f64attr(hi)
    )


@converter("LRN")
def convert_lrn(b: Builder, n: Node) -> list[Value]:
    if n.attr("size") is None:
        raise ValueError("LRN needs a size")
    return unary(
        b,
        n,
        nn.LRNOp,
        size=i64attr(n.attr("size")),
        alpha=f64attr(n.attr("alpha", 1e-4)),
        beta=f64attr(n.attr("beta", 0.75)),
        bias=f64attr(n.attr("bias", 1.0)),
    )


@converter("Identity", "Dropout", foldable=True)
def convert_identity(b: Builder, n: Node) -> list[Value]:
    """Identity, and Dropout in inference: the input, and (Dropout) a mask of all true.
    Training mode drops at random, except with ratio 0 (which keeps everything)."""
    if n.op_type == "Dropout" and n.opset >= 12 and n.has_input(2):
        if bool(np.any(b.const(n, 2, "training_mode"))):
            ratio = scalar_of(b.optional_const(n, 1, "ratio"))
            ratio = 0.5 if ratio is None else ratio
            if ratio != 0:
                raise Refused(f"training_mode true with ratio {ratio} not supported (random; inference only)")
    x = b.value(n, 0)
    y = x if isinstance(x, np.ndarray) else unary(b, n, nn.IdentityOp)[0]
    wants_mask = n.op_type == "Dropout" and len(n.outputs) > 1 and n.outputs[1] != ""
    return [y, np.ones(shape_of(x), np.bool_)] if wants_mask else [y]


@converter("Softmax")
def convert_softmax(b: Builder, n: Node) -> list[Value]:
    x = b.ssa(n, 0)
    shape = shape_of(x)
    rank = len(shape)
    if n.opset >= 13:
        return unary(b, n, nn.SoftmaxOp, axis=i64attr(normalize_axis(n.attr("axis", -1), rank)))
    # Before opset 13: flatten to 2-D at `axis`, softmax over the second axis, reshape back.
    axis = normalize_axis(n.attr("axis", 1), max(rank, 1))
    if axis >= rank - 1:
        return unary(b, n, nn.SoftmaxOp, axis=i64attr(max(rank - 1, 0)))
    flat = b.reshape(x, (math.prod(shape[:axis]), math.prod(shape[axis:])))
    assert isinstance(flat, SSAValue)
    y = b.emit(nn.SoftmaxOp, [flat], shape_of(flat), element_of(x), axis=i64attr(1))
    return [b.reshape(y, shape)]


# ---------------------------------------------------------------------------------------
# Convolution, matrix products, normalization, pooling
# ---------------------------------------------------------------------------------------


def window_pads(n: Node, sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]) -> list[int]:
    """ONNX pads (all begins, then all ends) after resolving auto_pad."""
    rank = len(sizes)
    auto_pad = n.attr("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        return [0] * (2 * rank)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(sizes, kernel, strides, dilations, strict=False):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small = total // 2
            begin = small if auto_pad == "SAME_UPPER" else total - small
            begins.append(begin)
            ends.append(total - begin)
        return begins + ends
    pads = list(n.attr("pads", [0] * (2 * rank)))
    if len(pads) != 2 * rank or min(pads, default=0) < 0:
        raise ValueError(f"pads {pads} need {2 * rank} non-negative entries")
    return pads


def window_attrs(n: Node, spatial: int, kernel: Sequence[int], sizes: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    """(strides, dilations, pads) of a conv or pool node with `spatial` axes."""
    strides = list(n.attr("strides", [1] * spatial))
    dilations = list(n.attr("dilations", [1] * spatial))
    if len(strides) != spatial or len(dilations) != spatial or min(strides + dilations, default=1) < 1:
        raise ValueError(f"strides {strides} and dilations {dilations} need {spatial} positive entries")
    return strides, dilations, window_pads(n, sizes, kernel, strides, dilations)


def lift_1d(strides: list[int], dilations: list[int], pads: list[int]) -> tuple[list[int], list[int], list[int]]:
    """1-D window attributes as 2-D ones over an H axis of size 1."""
    return [1, *strides], [1, *dilations], [0, pads[0], 0, pads[1]]


def lifted(b: Builder, v: Value, hint: str) -> SSAValue:
    """A rank-3 (N, C, L) tensor as (N, C, 1, L), so that 1-D windows run as 2-D ones."""
    s = shape_of(v)
    return as_ssa(b, b.reshape(v, (s[0], s[1], 1, s[2])), hint)


@converter("Conv")
def convert_conv(b: Builder, n: Node) -> list[Value]:
    x, w = b.ssa(n, 0), b.value(n, 1)
    xs, ws = shape_of(x), shape_of(w)
    if len(xs) == 5:
        raise Refused("3-D convolution not supported (1-D and 2-D are)")
    if len(xs) not in (3, 4) or len(ws) != len(xs):
        raise ValueError(f"input {xs} and weight {ws} must both have rank 3 or 4")
    kernel = list(n.attr("kernel_shape", ws[2:]))
    if kernel != list(ws[2:]):
        raise ValueError(f"kernel_shape {kernel} differs from the weight's {list(ws[2:])}")
    spatial = len(xs) - 2
    strides, dilations, pads = window_attrs(n, spatial, kernel, xs[2:])
    if spatial == 1:
        strides, dilations, pads = lift_1d(strides, dilations, pads)
        x, w_ssa = lifted(b, x, n.inputs[0]), lifted(b, w, n.inputs[1])
    else:
        w_ssa = b.ssa(n, 1)
    bias = b.ssa(n, 2) if n.has_input(2) else None
    if bias is not None and shape_of(bias) != (ws[0],):
        raise ValueError(f"bias shape {shape_of(bias)} should be ({ws[0]},)")
    same_element(x, w_ssa, *([bias] if bias is not None else []))
    group = int(n.attr("group", 1))
    out = nn.conv2d_output_shape(shape_of(x), shape_of(w_ssa), strides, pads, dilations, group)
    y = b.emit(
        nn.Conv2dOp,
        [x, w_ssa, bias],
        out,
        element_of(x),
        strides=ints(strides),
        pads=ints(pads),
        dilations=ints(dilations),
        group=i64attr(group),
    )
    return [b.reshape(y, (out[0], out[1], out[3])) if spatial == 1 else y]


def pool2d(
    b: Builder,
    x: SSAValue,
    kind: str,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    ceil_mode: int,
    count_include_pad: int,
) -> SSAValue:
    """One `nn.pool` over the last two axes of the rank-4 `x` (pads: top, left, bottom, right)."""
    if kind == "max" and any(p >= (k - 1) * d + 1 for p, k, d in zip(pads, [*kernel, *kernel], [*dilations, *dilations], strict=True)):
        raise ValueError(f"pads {list(pads)} must be smaller than the kernel {list(kernel)}")
    out = nn.pool_output_shape(shape_of(x), kernel, strides, pads, dilations, bool(ceil_mode))
    return b.emit(
        nn.PoolOp,
        [x],
        out,
        element_of(x),
        kind=StringAttr(kind),
        kernel=ints(kernel),
        strides=ints(strides),
        pads=ints(pads),
        dilations=ints(dilations),
        ceil_mode=i64attr(ceil_mode),
        count_include_pad=i64attr(count_include_pad),
    )


@converter("MaxPool", "AveragePool")
def convert_pool(b: Builder, n: Node) -> list[Value]:
    """2-D pools map to one `nn.pool`; 1-D ones run over an H axis of size 1; 3-D ones as two
    2-D pools, first over (H, W), then over D, since a box window is separable: the max of
    maxes, and for averages the divisor (valid taps, or taps inside the padding) is a
    product of per-axis counts."""
    x = b.ssa(n, 0)
    xs = shape_of(x)
    if len(xs) not in (3, 4, 5):
        raise ValueError(f"input {xs} must have rank 3, 4 or 5")
    spatial = len(xs) - 2
    kernel = list(n.attr("kernel_shape", []))
    if len(kernel) != spatial or min(kernel) < 1:
        raise ValueError(f"kernel_shape {kernel} needs {spatial} positive entries")
    strides, dilations, pads = window_attrs(n, spatial, kernel, xs[2:])
    kind = "max" if n.op_type == "MaxPool" else "avg"
    auto_pad = n.attr("auto_pad", "NOTSET")
    for size, k, st, d in zip(xs[2:], kernel, strides, dilations, strict=True):
        if auto_pad.startswith("SAME") and (-(-size // st) - 1) * st + (k - 1) * d + 1 < size:
            # onnxruntime crops the input of AveragePool then, and refuses MaxPool
            raise Refused(f"auto_pad {auto_pad} that needs negative padding (stride {st} over a window of {k}) not supported")
    # With SAME padding the output size is ceil(size / stride) whatever ceil_mode says.
    ceil_mode = int(n.attr("ceil_mode", 0)) if n.attr("auto_pad", "NOTSET") in ("NOTSET", "VALID") else 0
    include_pad = int(n.attr("count_include_pad", 0)) if kind == "avg" else 0
    if spatial == 1:
        strides, dilations, pads = lift_1d(strides, dilations, pads)
        y = pool2d(b, lifted(b, x, n.inputs[0]), kind, [1, *kernel], strides, pads, dilations, ceil_mode, include_pad)
        ys = shape_of(y)
        return [b.reshape(y, (ys[0], ys[1], ys[3]))]
    if spatial == 2:
        return [pool2d(b, x, kind, kernel, strides, pads, dilations, ceil_mode, include_pad)]
    batch, channels, depth, height, width = xs
    planes = as_ssa(b, b.reshape(x, (batch, channels * depth, height, width)), n.inputs[0])
    hw_pads = [pads[1], pads[2], pads[4], pads[5]]
    hw = pool2d(b, planes, kind, kernel[1:], strides[1:], hw_pads, dilations[1:], ceil_mode, include_pad)
    out_h, out_w = shape_of(hw)[2:]
    columns = as_ssa(b, b.reshape(hw, (batch, channels, depth, out_h * out_w)), n.inputs[0])
    d_pads = [pads[0], 0, pads[3], 0]
    y = pool2d(b, columns, kind, [kernel[0], 1], [strides[0], 1], d_pads, [dilations[0], 1], ceil_mode, include_pad)
    return [b.reshape(y, (batch, channels, shape_of(y)[2], out_h, out_w))]


@converter("GlobalAveragePool", "GlobalMaxPool")
def convert_global_pool(b: Builder, n: Node) -> list[Value]:
    x = b.ssa(n, 0)
    xs = shape_of(x)
    if len(xs) < 3:
        raise ValueError(f"input {xs} needs rank >= 3")
    kind = "avg" if n.op_type == "GlobalAveragePool" else "max"
    return [b.emit(nn.GlobalPoolOp, [x], xs[:2] + (1,) * (len(xs) - 2), element_of(x), kind=StringAttr(kind))]


@converter("BatchNormalization")
def convert_batchnorm(b: Builder, n: Node) -> list[Value]:
    if n.attr("spatial", 1) != 1:
        raise Refused("spatial=0 not supported")
    x = b.ssa(n, 0)
    xs = shape_of(x)
    if len(xs) < 2:
        raise ValueError(f"input {xs} needs rank >= 2")
    params = [b.ssa(n, i) for i in range(1, 5)]
    for p, what in zip(params, ("scale", "B", "mean", "var"), strict=False):
        if shape_of(p) != (xs[1],):
            raise ValueError(f"{what} has shape {shape_of(p)}, expected ({xs[1]},)")
    y = b.emit(nn.BatchNormOp, [x, *params], xs, element_of(x), epsilon=f64attr(n.attr("epsilon", 1e-5)))
    return [y]


@converter("Gemm")
def convert_gemm(b: Builder, n: Node) -> list[Value]:
    a, w = b.ssa(n, 0), b.ssa(n, 1)
    c = b.ssa(n, 2) if n.has_input(2) else None
    trans_a, trans_b = int(n.attr("transA", 0)), int(n.attr("transB", 0))
    out = nn.gemm_output_shape(shape_of(a), shape_of(w), bool(trans_a), bool(trans_b))
    same_element(a, w, *([c] if c is not None else []))
    if c is not None and nn.broadcast_shapes(shape_of(c), out) != out:
        raise ValueError(f"C of shape {shape_of(c)} does not broadcast to {out}")
    y = b.emit(
        nn.GemmOp,
        [a, w, c],
        out,
        element_of(a),
        trans_a=i64attr(trans_a),
        trans_b=i64attr(trans_b),
        alpha=f64attr(n.attr("alpha", 1.0)),
        beta=f64attr(n.attr("beta", 1.0)),
    )
    return [y]


@converter("MatMul")
def convert_matmul(b: Builder, n: Node) -> list[Value]:
    a, w = b.ssa(n, 0), b.ssa(n, 1)
    same_element(a, w)
    return [b.emit(nn.MatMulOp, [a, w], nn.matmul_output_shape(shape_of(a), shape_of(w)), element_of(a))]


# ---------------------------------------------------------------------------------------
# Layout: reshape family, transpose, concat, split, slice, pad, resize
# ---------------------------------------------------------------------------------------


def reshape_target(shape: Sequence[int], spec: Sequence[int], allow_zero: bool) -> tuple[int, ...]:
    """ONNX Reshape: 0 copies the input dimension (unless allowzero), -1 is inferred."""
    if allow_zero and 0 in spec and -1 in spec:
        raise ValueError(f"shape {list(spec)} has both 0 and -1 with allowzero")
    out: list[int] = []
    for i, d in enumerate(spec):
        if d == 0 and not allow_zero:
            if i >= len(shape):
                raise ValueError(f"shape {list(spec)} copies dimension {i} of a rank-{len(shape)} input")
            out.append(shape[i])
        elif d < -1:
            raise ValueError(f"shape {list(spec)} has a negative dimension")
        else:
            out.append(d)
    total = math.prod(shape)
    if out.count(-1) > 1:
        raise ValueError(f"shape {list(spec)} has more than one -1")
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or total % known:
            raise ValueError(f"cannot reshape {tuple(shape)} to {list(spec)}")
        out[out.index(-1)] = total // known
    if math.prod(out) != total:
        raise ValueError(f"cannot reshape {tuple(shape)} ({total} elements) to {tuple(out)}")
    return tuple(out)


@converter("Reshape", foldable=True)
def convert_reshape(b: Builder, n: Node) -> list[Value]:
    x = b.value(n, 0)
    spec = ints_of(b.const(n, 1, "shape")) or []
    return [b.reshape(x, reshape_target(shape_of(x), spec, bool(n.attr("allowzero", 0))))]


@converter("Flatten", foldable=True)
def convert_flatten(b: Builder, n: Node) -> list[Value]:
    x = b.value(n, 0)
    shape = shape_of(x)
    axis = n.attr("axis", 1)
    if not -len(shape) <= axis <= len(shape):
        raise ValueError(f"axis {axis} out of range for rank {len(shape)}")
    axis = axis + len(shape) if axis < 0 else axis
    return [b.reshape(x, (math.prod(shape[:axis]), math.prod(shape[axis:])))]


def _axes_input(b: Builder, n: Node) -> list[int] | None:
    return n.attr("axes") if n.opset < 13 else ints_of(b.optional_const(n, 1, "axes"))


@converter("Squeeze", foldable=True)
def convert_squeeze(b: Builder, n: Node) -> list[Value]:
    x = b.value(n, 0)
    shape = shape_of(x)
    axes = _axes_input(b, n)
    if axes is None:
        drop = {i for i, d in enumerate(shape) if d == 1}
    else:
        drop = set(normalize_axes(axes, len(shape)))
        bad = [a for a in sorted(drop) if shape[a] != 1]
        if bad:
            raise ValueError(f"cannot squeeze axes {bad} of shape {shape}: their size is not 1")
    return [b.reshape(x, tuple(d for i, d in enumerate(shape) if i not in drop))]


@converter("Unsqueeze", foldable=True)
def convert_unsqueeze(b: Builder, n: Node) -> list[Value]:
    x = b.value(n, 0)
    shape = shape_of(x)
    axes = _axes_input(b, n)
    if axes is None:
        raise ValueError("Unsqueeze needs axes")
    rank = len(shape) + len(axes)
    inserted = set(normalize_axes(axes, rank))
    rest = iter(shape)
    return [b.reshape(x, tuple(1 if i in inserted else next(rest) for i in range(rank)))]


@converter("Transpose", foldable=True)
def convert_transpose(b: Builder, n: Node) -> list[Value]:
    x = b.value(n, 0)
    shape = shape_of(x)
    perm = list(n.attr("perm", range(len(shape) - 1, -1, -1)))
    if sorted(perm) != list(range(len(shape))):
        raise ValueError(f"perm {perm} is not a permutation of rank {len(shape)}")
    if isinstance(x, np.ndarray):
        return [np.ascontiguousarray(np.transpose(x, perm))]
    return [b.emit(nn.TransposeOp, [x], tuple(shape[p] for p in perm), element_of(x), perm=ints(perm))]


@converter("Concat", foldable=True)
def convert_concat(b: Builder, n: Node) -> list[Value]:
    values = [b.value(n, i) for i in range(len(n.inputs))]
    if not values:
        raise ValueError("Concat needs at least one input")
    if "axis" not in n.attrs:
        raise ValueError("Concat needs an axis")
    axis = normalize_axis(n.attr("axis"), len(shape_of(values[0])))
    same_element(*values)
    out = nn.concat_output_shape([shape_of(v) for v in values], axis)
    arrays = [v for v in values if isinstance(v, np.ndarray)]
    if len(arrays) == len(values):
        return [np.concatenate(arrays, axis=axis)]
    operands = [b.ssa(n, i) for i in range(len(values))]
    return [b.emit(nn.ConcatOp, [operands], out, element_of(values[0]), axis=i64attr(axis))]


def split_sizes(n: Node, size: int, split: list[int] | None) -> list[int]:
    count = len(n.outputs)
    if split is not None:
        if len(split) != count or sum(split) != size or min(split, default=0) < 0:
            raise ValueError(f"split {split} does not cut an axis of {size} into {count} parts")
        return split
    parts = n.attr("num_outputs", count)
    if parts != count or parts < 1:
        raise ValueError(f"num_outputs {parts} differs from the {count} outputs")
    if "num_outputs" in n.attrs:  # opset 18: the last chunk may be smaller
        chunk = -(-size // parts)
        sizes = [chunk] * (parts - 1) + [size - chunk * (parts - 1)]
        if sizes[-1] < 0:
            raise ValueError(f"cannot split an axis of {size} into {parts} chunks of {chunk}")
        return sizes
    if size % count:
        raise ValueError(f"cannot split an axis of {size} into {count} equal parts")
    return [size // count] * count


@converter("Split", foldable=True)
def convert_split(b: Builder, n: Node) -> list[Value]:
    x = b.value(n, 0)
    shape = shape_of(x)
    axis = normalize_axis(n.attr("axis", 0), len(shape))
    split = n.attr("split") if n.opset < 13 else ints_of(b.optional_const(n, 1, "split"))
    sizes = split_sizes(n, shape[axis], split)
    if isinstance(x, np.ndarray):
        return list(np.split(x, np.cumsum(sizes)[:-1], axis=axis))
    shapes = [shape[:axis] + (s,) + shape[axis + 1 :] for s in sizes]
    return b.emit_multi(nn.SplitOp, [x], shapes, element_of(x), {"axis": i64attr(axis)}, variadic_results=True)


def slice_params(
    shape: Sequence[int], starts: list[int], ends: list[int], axes: list[int] | None, steps: list[int] | None
) -> tuple[list[int], list[int], list[int]]:
    """Per-axis (start, end, step), clamped as ONNX Slice does: the nn.slice convention
    (with a negative step, end -1 means 'through index 0')."""
    rank = len(shape)
    axes = normalize_axes(axes if axes is not None else range(len(starts)), rank)
    steps = steps if steps is not None else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ValueError(f"starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length")
    out_starts, out_ends, out_steps = [0] * rank, list(shape), [1] * rank
    for axis, s, e, st in zip(axes, starts, ends, steps, strict=False):
        size = shape[axis]
        if st == 0:
            raise ValueError("slice step must not be 0")
        s = s + size if s < 0 else s
        e = e + size if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), size), min(max(e, 0), size)
        else:
            s, e = min(max(s, 0), max(size - 1, 0)), min(max(e, -1), size - 1)
        out_starts[axis], out_ends[axis], out_steps[axis] = s, e, st
    return out_starts, out_ends, out_steps


@converter("Slice", foldable=True)
def convert_slice(b: Builder, n: Node) -> list[Value]:
    x = b.value(n, 0)
    shape = shape_of(x)
    if n.opset < 10:
        starts, ends, axes, steps = n.attr("starts"), n.attr("ends"), n.attr("axes"), None
        if starts is None or ends is None:
            raise ValueError("Slice needs starts and ends")
    else:
        starts = ints_of(b.const(n, 1, "starts")) or []
        ends = ints_of(b.const(n, 2, "ends")) or []
        axes = ints_of(b.optional_const(n, 3, "axes"))
        steps = ints_of(b.optional_const(n, 4, "steps"))
    s, e, st = slice_params(shape, starts, ends, axes, steps)
    if isinstance(x, np.ndarray):
        index = tuple(slice(a, None if (c == -1 and d < 0) else c, d) for a, c, d in zip(s, e, st, strict=False))
        return [np.ascontiguousarray(x[index])]
    out = nn.slice_output_shape(shape, s, e, st)
    return [b.emit(nn.SliceOp, [x], out, element_of(x), starts=ints(s), ends=ints(e), steps=ints(st))]


@converter("Pad")
def convert_pad(b: Builder, n: Node) -> list[Value]:
    x = b.ssa(n, 0)
    shape = shape_of(x)
    rank = len(shape)
    if n.opset < 11:
        pads, value, axes = n.attr("pads"), float(n.attr("value", 0.0)), None
        if pads is None:
            raise ValueError("Pad needs pads")
    else:
        pads = ints_of(b.const(n, 1, "pads")) or []
        value = scalar_of(b.optional_const(n, 2, "constant_value")) or 0.0
        axes = ints_of(b.optional_const(n, 3, "axes"))
    if axes is not None:
        axes = normalize_axes(axes, rank)
        if len(pads) != 2 * len(axes):
            raise ValueError(f"pads {pads} need two entries per axis in {axes}")
        full = [0] * (2 * rank)
        for j, axis in enumerate(axes):
            full[axis], full[axis + rank] = pads[j], pads[j + len(axes)]
        pads = full
    if len(pads) != 2 * rank:
        raise ValueError(f"pads {pads} need {2 * rank} entries for rank {rank}")
    mode = n.attr("mode", "constant")
    out = tuple(d + pads[i] + pads[i + rank] for i, d in enumerate(shape))
    if min(out, default=1) < 0:
        raise ValueError(f"pads {pads} crop more than the input {shape}")
    if mode == "reflect" and any(p >= d for p, d in zip(pads[:rank] + pads[rank:], shape * 2, strict=False) if p > 0):
        raise ValueError(f"reflect pads {pads} must be smaller than the input {shape}")
    return [
        b.emit(nn.PadOp, [x], out, element_of(x), pads=ints(pads), mode=StringAttr(mode), value=f64attr(value))
    ]


def resize_sizes(
    n: Node, dims: np.ndarray, scales_in: np.ndarray | None, sizes_in: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Output lengths and coordinate scales of the resized axes (float32, as onnxruntime)."""
    if scales_in is not None:
        scales = scales_in.astype(np.float32).reshape(-1)
        if scales.size != dims.size or np.any(scales <= 0):
            raise ValueError(f"scales {scales.tolist()} need {dims.size} positive entries")
        return np.floor(dims * scales).astype(np.int64), scales  # onnxruntime: floor(size * scale)
    assert sizes_in is not None
    sizes = sizes_in.astype(np.int64).reshape(-1)
    if sizes.size != dims.size or np.any(sizes <= 0):
        raise ValueError(f"sizes {sizes.tolist()} need {dims.size} positive entries")
    policy = n.attr("keep_aspect_ratio_policy", "stretch")
    if policy == "stretch":
        return sizes, sizes.astype(np.float32) / dims
    # One scale for every resized axis, the smallest (not_larger) or largest (not_smaller)
    # of sizes / dims; lengths are round(scale * dims), halves away from zero.
    ratios = sizes.astype(np.float32) / dims
    scale = np.float32(ratios.min() if policy == "not_larger" else ratios.max())
    return np.floor(scale * dims + np.float32(0.5)).astype(np.int64), np.full(dims.size, scale, np.float32)


def resize_roi(b: Builder, n: Node, rank: int, axes: list[int]) -> list[float]:
    """tf_crop_and_resize's region per axis (all starts, then all ends) for all `rank` axes."""
    roi = b.const(n, 1, "roi").astype(np.float64).reshape(-1)
    if roi.size != 2 * len(axes):
        raise ValueError(f"roi {roi.tolist()} needs a start and an end for each of the {len(axes)} resized axes")
    full = [0.0] * rank + [1.0] * rank
    for j, axis in enumerate(axes):
        full[axis], full[rank + axis] = float(roi[j]), float(roi[len(axes) + j])
    return full


@converter("Resize", "Upsample")
def convert_resize(b: Builder, n: Node) -> list[Value]:
    x = b.ssa(n, 0)
    shape = shape_of(x)
    rank = len(shape)
    mode = n.attr("mode", "nearest")
    if mode != "nearest" and dtype_of(x).kind != "f":
        raise Refused(f"{mode} resize of {dtype_of(x)} tensors not supported (float only)")
    legacy = n.op_type == "Upsample" or n.opset < 11  # Upsample-9, Resize-10
    roi: list[float] | None = None
    scales_in: np.ndarray | None
    sizes_in: np.ndarray | None
    if legacy:
        scales_in, sizes_in = b.const(n, 1, "scales"), None
        coordinates, nearest, axes = "asymmetric", "", list(range(rank))
    else:
        scales_in = b.optional_const(n, 2, "scales")
        sizes_in = b.optional_const(n, 3, "sizes")
        coordinates = n.attr("coordinate_transformation_mode", "half_pixel")
        nearest = n.attr("nearest_mode", "round_prefer_floor")
        axes = normalize_axes(n.attr("axes", range(rank)), rank)
        if coordinates == "tf_crop_and_resize":
            roi = resize_roi(b, n, rank, axes)
    if scales_in is not None and scales_in.size == 0:
        scales_in = None
    if sizes_in is not None and sizes_in.size == 0:
        sizes_in = None
    if (scales_in is None) == (sizes_in is None):
        raise ValueError("Resize needs exactly one of scales and sizes")
    sizes, given = resize_sizes(n, np.array([shape[a] for a in axes], np.float32), scales_in, sizes_in)
    scales, out = [1.0] * rank, list(shape)
    for axis, s, size in zip(axes, given.tolist(), sizes.tolist(), strict=False):
        scales[axis], out[axis] = float(s), int(size)
    if min(out, default=1) < 1:
        raise ValueError(f"output shape {out} has an empty axis")
    if legacy and mode == "nearest":
        # onnxruntime's opset < 11 nearest: floor when enlarging an axis, ceil when shrinking.
        if any(s < 1 for s in scales) and any(s > 1 for s in scales):
            raise Refused("nearest resize (opset < 11) that enlarges and shrinks at once not supported")
        nearest = "ceil" if any(s < 1 for s in scales) else "floor"
    antialias = bool(n.attr("antialias", 0)) and mode != "nearest" and not legacy
    y = b.emit(
        nn.ResizeOp,
        [x],
        out,
        element_of(x),
        mode=StringAttr(mode),
        coordinate_mode=StringAttr(coordinates),
        nearest_mode=StringAttr(nearest if mode == "nearest" else "round_prefer_floor"),
        scales=floats(scales),
        cubic_coeff_a=f64attr(n.attr("cubic_coeff_a", -0.75)) if mode == "cubic" else None,
        exclude_outside=i64attr(1) if n.attr("exclude_outside", 0) and not legacy else None,
        antialias=i64attr(1) if antialias else None,
        roi=floats(roi) if roi is not None else None,
        extrapolation_value=f64attr(n.attr("extrapolation_value", 0.0)) if roi is not None else None,
    )
    return [y]


__all__ = ["CONVERTERS", "FOLDABLE", "constant_outputs", "const_inputs", "node_problems"]
