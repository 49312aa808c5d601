"""NumPy kernels for the `nn` dialect: the one place that defines what an nn op computes.

`KERNELS` maps an op class to a function `(op, args) -> results`; `evaluate` looks the
kernel up, runs it and casts each result to its result type's element type. The executor
and the `canonicalize` pass (constant folding) both go through `evaluate`, so an op means
the same thing everywhere. Semantics are ONNX's, checked against onnxruntime.

Kernels may return views of their arguments, and write into an argument only when it is
writeable: the executor hands a value over writeable only at its last use when no other
live value shares its memory (`evaluate` hands out read-only views). Hot kernels (conv,
pool) are vectorised NumPy: im2col from a strided view (or Winograd) plus BLAS GEMMs.

For running a program many times `prepare` gives an op's kernel with its attributes read
once; a conv2d op also takes a `ConvFusion`, the executor's plan for joining it with the
ops around it (residual add, activations, the next conv's bias).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, ModuleOp, TensorType
from xdsl.ir import Operation

from backends.reference.blas import accumulate_product, batched_product, blas_threads
from backends.reference.resize import resize
from compiler.errors import LayerloomError, UnsupportedError
from compiler.program import array_of, weights_of
from compiler.tensors import dtype_of
from dialects import nn

Kernel = Callable[[Operation, list[np.ndarray]], list[np.ndarray]]
Prepared = Callable[[list[np.ndarray]], list[np.ndarray]]

KERNELS: dict[type[Operation], Kernel] = {}


def register_kernel(op_class: type[Operation], fn: Kernel) -> None:
    """Make `fn` the kernel of `op_class` (other dialects, e.g. qnn, add theirs here)."""
    KERNELS[op_class] = fn


def kernel(*op_classes: type[Operation]) -> Callable[[Kernel], Kernel]:
    """Decorator: register the function as the kernel of every class in `op_classes`."""

    def register(fn: Kernel) -> Kernel:
        for cls in op_classes:
            register_kernel(cls, fn)
        return fn

    return register


def layer_name(op: Operation) -> str:
    name = op.properties.get("name")
    return getattr(name, "data", "") if name is not None else ""


def read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


def evaluate(op: Operation, args: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run `op` on `args` (never modified); results have the element types of the op's
    result types."""
    return run_kernel(op, [read_only(a) for a in args])


def prepare(op: Operation, fusion: ConvFusion | None = None, activation: Activation | None = None) -> Prepared:
    """`op`'s kernel as a function of its operands alone, for running the op many times
    (the executor's plan): hot kernels read their attributes once here. A conv2d op with
    the built-in kernel takes `fusion` (see `ConvFusion`), a max pool `activation` (see
    `pool_commutes`); both only when `fusable`. Results are not cast to the result types
    (`run_kernel` does that)."""
    fn = KERNELS.get(type(op))
    if fn is None:
        raise UnsupportedError(f"the reference executor has no kernel for '{op.name}'", layer_name(op) or op.name)
    if fn is _conv2d:
        assert isinstance(op, nn.Conv2dOp) and activation is None
        return conv2d_kernel(op, fusion or ConvFusion())
    if fn is _pool:
        assert isinstance(op, nn.PoolOp) and fusion is None
        return pool_kernel(op, activation)
    assert fusion is None and activation is None
    return lambda args: fn(op, args)


def fusable(op: Operation) -> bool:
    """Whether the executor may join `op` with its neighbours: a conv2d, add, activation or
    pool op with its built-in kernel (a replaced kernel runs as it is)."""
    builtin: dict[type[Operation], Kernel] = {
        nn.Conv2dOp: _conv2d, nn.AddOp: _binary, nn.ReluOp: _relu, nn.ClipOp: _clip, nn.LeakyReluOp: _leaky_relu,
        nn.PoolOp: _pool,
    }
    return type(op) in builtin and KERNELS.get(type(op)) is builtin[type(op)]


def run_kernel(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    """`evaluate`, except that the kernel may overwrite writeable `args` (see above)."""
    fn = KERNELS.get(type(op))
    if fn is None:
        raise UnsupportedError(f"the reference executor has no kernel for '{op.name}'", layer_name(op) or op.name)
    with np.errstate(all="ignore"):  # inf/nan are ONNX semantics, not errors
        results = fn(op, args)
    out: list[np.ndarray] = []
    for value, array in zip(op.results, results, strict=True):
        dtype = dtype_of(value.type)
        array = np.asarray(array)
        out.append(array if array.dtype == dtype else array.astype(dtype))
    return out


# ---------------------------------------------------------------------------------------
# Attribute readers
# ---------------------------------------------------------------------------------------


def _float(attr: FloatAttr | None, default: float | None = None) -> float | None:
    return default if attr is None else float(attr.value.data)


def _int(attr: IntegerAttr) -> int:
    return int(attr.value.data)


def _result_shape(op: Operation, index: int = 0) -> tuple[int, ...]:
    t = op.results[index].type
    assert isinstance(t, TensorType)
    return tuple(t.get_shape())


def reusable(op: Operation, *args: np.ndarray) -> np.ndarray | None:
    """An argument that the kernel may overwrite (see the module docstring) and that has
    the shape and dtype of the op's result, to write the result into."""
    t = op.results[0].type
    assert isinstance(t, TensorType)
    shape, dtype = tuple(t.get_shape()), dtype_of(t)
    return next((a for a in args if a.flags.writeable and a.shape == shape and a.dtype == dtype), None)


def _compute_dtype(x: np.ndarray | np.dtype) -> np.dtype:
    """Half floats are computed in float32 (NumPy has no half-precision BLAS)."""
    dtype = np.dtype(x.dtype if isinstance(x, np.ndarray) else x)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


# ---------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------


def weight_array(op: nn.WeightOp, store: object) -> np.ndarray:
    """The (read-only) array of a weight op: its inline value or its entry in `store`."""
    t = op.result.type
    assert isinstance(t, TensorType)
    if op.value is not None:
        array = array_of(op.value, t)
    else:
        array = store[op.handle.data]  # type: ignore[index]
    expected, dtype = tuple(t.get_shape()), dtype_of(t)
    if array.shape != expected or array.dtype != dtype:
        shape = "x".join(map(str, array.shape))
        raise LayerloomError(
            f"weight '{op.handle.data}' in the store is {shape} {array.dtype}, the IR expects "
            f"{'x'.join(map(str, expected))} {dtype}",
            layer_name(op) or op.handle.data,
        )
    return read_only(array)


@kernel(nn.WeightOp)
def _weight(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, nn.WeightOp)
    top = op.get_toplevel_object()
    store = weights_of(top) if isinstance(top, ModuleOp) else None
    return [weight_array(op, store)]


# ---------------------------------------------------------------------------------------
# Elementwise
# ---------------------------------------------------------------------------------------


def relu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.maximum(x, x.dtype.type(0), out=out)


def clip(x: np.ndarray, lo: float | None, hi: float | None, out: np.ndarray | None = None) -> np.ndarray:
    """min(max(x, lo), hi); a missing bound is unbounded; with lo > hi every value becomes hi (as ONNX)."""
    for bound_fn, bound in ((np.maximum, lo), (np.minimum, hi)):
        if bound is not None:
            x = bound_fn(x, x.dtype.type(bound), out=out)
            out = x  # the second bound works in place on the first one's result
    if out is not None and out is not x:  # no bound at all
        np.copyto(out, x)
        return out
    return x


def leaky_relu(x: np.ndarray, alpha: float, out: np.ndarray | None = None) -> np.ndarray:
    """x for x >= 0, alpha * x below (into `out` if given, which may be `x` itself)."""
    if out is None:
        return np.where(x < 0, x * x.dtype.type(alpha), x)
    if out is not x:
        np.copyto(out, x)
    np.multiply(out, out.dtype.type(alpha), out=out, where=out < 0)
    return out


Activation = Callable[[np.ndarray, np.ndarray], object]


def make_activation(kind: str, lo: float | None = None, hi: float | None = None, alpha: float = 0.0) -> Activation:
    """relu, clip (to [lo, hi]) or leaky_relu (slope `alpha`) as `f(x, out)` (`out` may be `x`)."""
    if kind == "relu":
        return lambda x, out: np.maximum(x, x.dtype.type(0), out=out)
    if kind == "clip":
        return lambda x, out: clip(x, lo, hi, out=out)
    if kind == "leaky_relu":
        return lambda x, out: leaky_relu(x, alpha, out=out)
    raise AssertionError(f"unknown fused activation {kind}")  # the verifier rejects it


def fused_activation(op: Operation) -> Activation | None:
    """A conv2d / gemm op's fused activation, None without one."""
    act = op.properties.get("activation")
    if act is None:
        return None
    return make_activation(
        act.data,  # type: ignore[attr-defined]
        _float(op.properties.get("act_min")),  # type: ignore[arg-type]
        _float(op.properties.get("act_max")),  # type: ignore[arg-type]
        _float(op.properties.get("act_alpha")) or 0.0,  # type: ignore[arg-type]
    )


def activation_of(op: Operation) -> Activation | None:
    """A relu / clip / leaky_relu op as an `Activation` (to fuse into the op before it),
    None for any other op."""
    if isinstance(op, nn.ReluOp):
        return make_activation("relu")
    if isinstance(op, nn.ClipOp):
        return make_activation("clip", _float(op.min), _float(op.max))
    if isinstance(op, nn.LeakyReluOp):
        return make_activation("leaky_relu", alpha=float(op.alpha.value.data))
    return None


@kernel(nn.IdentityOp)
def _identity(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    return [args[0]]


@kernel(nn.ReluOp)
def _relu(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    return [relu(args[0], out=reusable(op, args[0]))]


@kernel(nn.ClipOp)
def _clip(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, nn.ClipOp)
    return [clip(args[0], _float(op.min), _float(op.max), out=reusable(op, args[0]))]


@kernel(nn.LeakyReluOp)
def _leaky_relu(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, nn.LeakyReluOp)
    return [leaky_relu(args[0], float(op.alpha.value.data), out=reusable(op, args[0]))]


@kernel(nn.SigmoidOp)
def _sigmoid(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    x = args[0]
    e = np.exp(-np.abs(x))  # never overflows
    return [np.where(x >= 0, 1 / (1 + e), e / (1 + e))]


@kernel(nn.TanhOp)
def _tanh(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    return [np.tanh(args[0])]


def hard_sigmoid(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    t = x.dtype.type
    y = x * t(alpha)
    y += t(beta)
    return np.clip(y, t(0), t(1), out=y)


@kernel(nn.HardSigmoidOp)
def _hard_sigmoid(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, nn.HardSigmoidOp)
    return [hard_sigmoid(args[0], float(op.alpha.value.data), float(op.beta.value.data))]


@kernel(nn.HardSwishOp)
def _hardswish(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    x = args[0]
    y = hard_sigmoid(x, 1 / 6, 0.5)
    y *= x
    return [y]


def truncating_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division rounding toward zero (C, onnxruntime), not toward -inf (Python)."""
    q = np.floor_divide(a, b)
    if np.issubdtype(q.dtype, np.signedinteger):
        inexact = (a - q * b != 0) & ((a < 0) != (b < 0))
        q += inexact.astype(q.dtype)
    return q


def _divide(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    if np.issubdtype(np.result_type(a, b), np.integer):
        return truncating_divide(a, b)
    return np.true_divide(a, b, out=out)


_BINARY: dict[type[Operation], Callable[..., np.ndarray]] = {
    nn.AddOp: np.add,
    nn.SubOp: np.subtract,
    nn.MulOp: np.multiply,
    nn.DivOp: _divide,
}


@kernel(*_BINARY)
def _binary(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    return [_BINARY[type(op)](args[0], args[1], out=reusable(op, *args))]


@kernel(nn.SoftmaxOp)
def _softmax(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, nn.SoftmaxOp)
    x, axis = args[0], _int(op.axis)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return [e]


@kernel(nn.LRNOp)
def _lrn(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    """ONNX LRN: the window over channels is [c - floor((size-1)/2), c + ceil((size-1)/2)]."""
    assert isinstance(op, nn.LRNOp)
    x = args[0]
    size = _int(op.size)
    t = x.dtype.type
    square = x * x
    channels = x.shape[1]
    before = (size - 1) // 2
    total = np.zeros_like(square)
    for offset in range(-before, size - before):  # `size` shifted adds, each over the whole tensor
        lo, hi = max(0, -offset), min(channels, channels - offset)
        if lo < hi:
            total[:, lo:hi] += square[:, lo + offset : hi + offset]
    total *= t(float(op.alpha.value.data) / size)
    total += t(float(op.bias.value.data))
    return [x / total ** t(float(op.beta.value.data))]


@kernel(nn.BatchNormOp)
def _batchnorm(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, nn.BatchNormOp)
    x, scale, bias, mean, var = args
    t = x.dtype.type
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    factor = scale / np.sqrt(var + t(float(op.epsilon.value.data)))
    y = x * factor.reshape(shape)
    y += (bias - mean * factor).reshape(shape)
    return [y]


# ---------------------------------------------------------------------------------------
# Convolution, GEMM, MatMul
# ---------------------------------------------------------------------------------------


def channels_last(x: np.ndarray, activation: Activation | None = None) -> np.ndarray:
    """The contiguous (N, H, W, C) array behind an NCHW-shaped `x`, `activation` applied;
    free when `x` is already channels-last in memory, as every conv2d / pool result is, and
    there is no activation."""
    nhwc = x.transpose(0, 2, 3, 1)
    if nhwc.flags.c_contiguous and activation is None:
        return nhwc
    out = np.empty(nhwc.shape, dtype=x.dtype)
    copy_nchw(out, x, activation)
    return out


def copy_nchw(dst: np.ndarray, x: np.ndarray, activation: Activation | None = None) -> None:
    """dst[...] = activation(x.transpose(0, 2, 3, 1)): the NCHW-shaped `x` into the
    channels-last `dst`. From channel-major memory with few channels (an image) one channel
    at a time: NumPy's single copy would run its inner loop over the channels, three values long."""
    if activation is not None:
        activation(x.transpose(0, 2, 3, 1), dst)
    elif x.shape[1] <= 8 and x.strides[1] > x.strides[3]:
        for channel in range(x.shape[1]):
            dst[..., channel] = x[:, channel]
    else:
        dst[...] = x.transpose(0, 2, 3, 1)


def as_nchw(y: np.ndarray) -> np.ndarray:
    """An (N, H, W, C) array seen as NCHW (a view: values keep their channels-last memory)."""
    return y.transpose(0, 3, 1, 2)


def pad_nhwc(x: np.ndarray, pads: Sequence[int], fill: float = 0.0, extra: Sequence[int] = (0, 0),
             activation: Activation | None = None) -> np.ndarray:
    """The NCHW-shaped `x`, `activation` applied, as a channels-last (N, H', W', C) array
    padded by (top, left, bottom, right) plus `extra` rows / columns at the end: one copy
    whatever x's layout."""
    top, left, bottom, right = pads
    bottom, right = bottom + extra[0], right + extra[1]
    if not (top or left or bottom or right):
        return channels_last(x, activation)
    n, c, h, w = x.shape
    xp = np.empty((n, top + h + bottom, left + w + right, c), dtype=x.dtype)
    for border in (xp[:, :top], xp[:, top + h :], xp[:, top : top + h, :left], xp[:, top : top + h, left + w :]):
        border.fill(fill)
    copy_nchw(xp[:, top : top + h, left : left + w], x, activation)
    return xp


def window_view(
    xp: np.ndarray, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int], out_hw: Sequence[int]
) -> np.ndarray:
    """An (N, OH, OW, KH, KW, C) strided view of the padded channels-last `xp`: element
    [n, y, x, i, j, c] is the input under kernel tap (i, j) of output pixel (y, x). No copy."""
    sn, sh, sw, sc = xp.strides
    return as_strided(
        xp,
        shape=(xp.shape[0], out_hw[0], out_hw[1], kernel[0], kernel[1], xp.shape[3]),
        strides=(sn, sh * strides[0], sw * strides[1], sh * dilations[0], sw * dilations[1], sc),
        writeable=False,
    )


_DERIVED: dict[tuple, tuple[weakref.ref, Any]] = {}


def derived(array: np.ndarray, kind: str, make: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`make(array)`, kept while `array`'s memory lives when `array` is read-only (weights
    are immutable): e.g. a conv weight repacked for the GEMM is repacked once, not per run."""
    if array.flags.writeable:
        return make(array)
    seen = _DERIVED_BY_OBJECT.get((id(array), kind))  # the same array object as last time: no key to build
    if seen is not None and seen[0]() is array:
        return seen[1]
    value = _derived(array, kind, make)
    key = (id(array), kind)
    _DERIVED_BY_OBJECT[key] = (weakref.ref(array, lambda _, key=key, cache=_DERIVED_BY_OBJECT: cache.pop(key, None)), value)  # type: ignore[misc]
    return value


# The executor hands a kernel the same read-only weight array in every run.
_DERIVED_BY_OBJECT: dict[tuple[int, str], tuple[weakref.ref, np.ndarray]] = {}


def _derived(array: np.ndarray, kind: str, make: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    def made() -> np.ndarray:
        value = make(array)
        value.flags.writeable = False
        return value

    return kept_with_memory(array, (kind, array.shape, array.strides, array.dtype.str), made)


def kept_with_memory(data: np.ndarray, key: Hashable, make: Callable[[], Any]) -> Any:
    """`make()`, kept per (`data`'s place in memory, `key`) while the array that owns that
    memory lives: for values derived from read-only bytes (weights, a DPU program's weight
    region), which are then the same in every run."""
    root = data
    while isinstance(root.base, np.ndarray):
        root = root.base
    k = (id(root), data.__array_interface__["data"][0], key)
    hit = _DERIVED.get(k)
    if hit is not None and hit[0]() is root:
        return hit[1]
    value = make()
    _DERIVED[k] = (weakref.ref(root, lambda _, k=k, cache=_DERIVED: cache.pop(k, None)), value)  # type: ignore[misc]
    return value


def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None, accumulate: bool = False) -> np.ndarray:
    """`np.matmul`, or with `accumulate` out += a @ b in one BLAS call (2-d operands, see
    blas.py): every BLAS product of the kernels goes through here (benchmarks/foundation.py
    times them)."""
    if accumulate:
        assert out is not None
        return accumulate_product(a, b, out)
    if out is None and a.ndim == b.ndim == 3:
        return batched_product(a, b)
    return np.matmul(a, b, out=out)


def with_ones_channel(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array of `shape` (channels last) whose memory holds one more
    channel, of ones: the view of the first shape[-1] channels (see `conv1x1_bias_in_k`)."""
    whole = np.empty((*shape[:-1], shape[-1] + 1), dtype=dtype)
    whole[..., -1] = 1
    return whole[..., :-1]


def initial_output(rows: int, bias: np.ndarray | None, residual: np.ndarray | None, dtype: np.dtype,
                   columns: int = 0, ones_channel: bool = False) -> np.ndarray | None:
    """The (rows, M) array a GEMM accumulates into: `bias` broadcast over the rows plus the
    channels-last `residual` (written in place when writeable and contiguous), or None with
    neither (the GEMM then writes a fresh array). With `ones_channel` (no residual) it is
    the first M = `columns` columns of a (rows, M + 1) array whose last column is 1."""
    if ones_channel:
        assert residual is None
        out = with_ones_channel((rows, columns), dtype)
        if bias is None:
            out.fill(0)
        else:
            np.copyto(out, bias)
        return out
    if residual is not None:
        if residual.flags.c_contiguous and residual.flags.writeable and residual.dtype == dtype:
            flat = residual.reshape(rows, -1)
        else:
            flat = np.array(residual, dtype=dtype, order="C").reshape(rows, -1)
        if bias is not None:
            np.add(flat, bias, out=flat)
        return flat
    if bias is None:
        return None
    out = np.empty((rows, bias.shape[0]), dtype=dtype)
    np.copyto(out, bias)
    return out


def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    group: int,
    out_hw: Sequence[int],
    bias: np.ndarray | None = None,
    activation: Activation | None = None,
    residual: np.ndarray | None = None,
    input_activation: Activation | None = None,
    ones_channel: bool = False,
) -> np.ndarray:
    """NCHW x OIHW -> a channels-last (N, OH, OW, M) array: the convolution of
    input_activation(x) plus `bias` plus `residual` (channels-last (N, OH, OW, M),
    overwritten with the result when writeable and contiguous), then `activation`.
    Channels-last makes im2col rows runs of KW*C contiguous inputs and lets the GEMM write
    (pixels x channels) directly; the next conv reads the result without a copy. A 1x1
    kernel is a plain GEMM, accumulated into the bias and residual (no pass of its own for
    either); `input_activation` rides on the copy im2col makes anyway; depthwise is a
    multiply-add per kernel tap; other groups batch one GEMM each. With `ones_channel`
    (group 1, no residual) the result's memory holds one more channel, of ones (see
    `conv1x1_bias_in_k`). Every output is one dot product over (kernel tap, input channel)
    in BLAS (no Winograd here), which the qnn kernels' exact integer sums rely on."""
    n, c, _, _ = x.shape
    m, c_per_group, kh, kw = w.shape
    oh, ow = out_hw
    if input_activation is not None and (group > 1 or kh == kw == 1 and not any(pads)):
        x = as_nchw(channels_last(x, input_activation))  # no copy of x below to apply it on
        input_activation = None
    assert not ones_channel or group == 1 and residual is None
    if group == c > 1 and c_per_group == 1:  # (one input channel, group 1: the dense path below)
        y = _depthwise(x, w, strides, pads, dilations, out_hw)
    elif group > 1:
        y = _grouped(x, w, strides, pads, dilations, group, out_hw)
    else:
        if kh == kw == 1 and not any(pads):
            x = x[:, :, : (oh - 1) * strides[0] + 1 : strides[0], : (ow - 1) * strides[1] + 1 : strides[1]]
            cols = channels_last(x).reshape(n * oh * ow, c)
        else:
            cols = None
            windows = window_view(pad_nhwc(x, pads, activation=input_activation), (kh, kw), strides, dilations, out_hw)
        weights = hwio_weights(w)
        out = initial_output(n * oh * ow, bias, residual, x.dtype, m, ones_channel)
        if cols is not None:
            y = gemm(cols, weights) if out is None else gemm(cols, weights, out=out, accumulate=True)
        else:
            y = _im2col_gemm(windows, weights, out, n * oh * ow)
        y = y.reshape(n, oh, ow, m)
        bias = residual = None  # both are in y already
    finish(y, bias, residual, activation)
    return y


# im2col copies at most this much at a time (single images): measured on ResNet-50 in whole
# runs, where its 7.4 MB stem copy would otherwise leave the caches before its GEMM reads it
# (-1.1 ms a run at one thread, -1.7 at two); chunks of fewer rows lose more to smaller GEMMs.
IM2COL_CHUNK_BYTES = 1 << 20
IM2COL_MIN_ROWS = 512


def _im2col_gemm(windows: np.ndarray, weights: np.ndarray, out: np.ndarray | None, rows: int) -> np.ndarray:
    """The GEMM of the (N, OH, OW, KH, KW, C) `windows` copied into im2col rows, accumulated
    into `out` (rows, M) when given, else into a fresh array; the copy goes in chunks of
    whole output rows (`IM2COL_CHUNK_BYTES`), each multiplied while it is still in cache."""
    n, oh, ow = windows.shape[:3]
    k = int(np.prod(windows.shape[3:]))
    accumulate = out is not None
    if out is None:
        out = np.empty((rows, weights.shape[1]), dtype=windows.dtype)
    per_chunk = max(-(-IM2COL_MIN_ROWS // ow), IM2COL_CHUNK_BYTES // (ow * k * windows.itemsize)) if n == 1 else oh
    per_chunk = min(per_chunk, oh)
    buffer = np.empty((n * per_chunk * ow, k), dtype=windows.dtype)
    for r0 in range(0, oh, per_chunk):
        r1 = min(oh, r0 + per_chunk)
        cols = buffer[: n * (r1 - r0) * ow]
        cols.reshape(windows[:, r0:r1].shape)[...] = windows[:, r0:r1]
        gemm(cols, weights, out=out[r0 * ow : r1 * ow] if n == 1 else out, accumulate=accumulate)
    return out


def hwio_weights(w: np.ndarray) -> np.ndarray:
    """An OIHW conv weight as the (KH*KW*C, M) right-hand side of its im2col GEMM, contiguous
    (OpenBLAS is slower with a transposed operand when pixels are few), made once per weight."""
    return derived(w, "hwio", lambda a: np.ascontiguousarray(a.transpose(2, 3, 1, 0)).reshape(-1, a.shape[0]))


def conv1x1_bias_in_k(x: np.ndarray, weights_and_bias: np.ndarray, out_hw: Sequence[int],
                      residual: np.ndarray | None = None, activation: Activation | None = None) -> np.ndarray:
    """A 1x1, stride-1, unpadded convolution whose NCHW-shaped input `x` is a view of
    channels-last memory holding one more channel, of ones (a conv2d result with
    `ones_channel`): one GEMM with the bias as the weights' last row (`weights_and_bias`,
    (C + 1, M)) accumulates into the channels-last `residual` (or a fresh array), then
    `activation`. The bias costs no pass over the map, not even when there is a residual."""
    n, c = x.shape[:2]
    rows = n * out_hw[0] * out_hw[1]
    nhwc = x.transpose(0, 2, 3, 1)
    pixel = (c + 1) * x.itemsize
    expected = (out_hw[0] * out_hw[1] * pixel, out_hw[1] * pixel, pixel, x.itemsize)
    assert all(size == 1 or stride == step for size, stride, step in zip(nhwc.shape, nhwc.strides, expected, strict=True))
    cols = as_strided(nhwc, shape=(rows, c + 1), strides=(pixel, x.itemsize), writeable=False)
    out = initial_output(rows, None, residual, x.dtype)
    y = gemm(cols, weights_and_bias) if out is None else gemm(cols, weights_and_bias, out=out, accumulate=True)
    if activation is not None:
        activation(y, y)
    return y.reshape(n, *out_hw, -1)


def finish(y: np.ndarray, bias: np.ndarray | None, residual: np.ndarray | None, activation: Activation | None) -> None:
    """Add `bias` and `residual` to the channels-last `y` and apply `activation`, in place."""
    if bias is not None:
        np.add(y, bias, out=y)
    if residual is not None:
        np.add(y, residual, out=y)
    if activation is not None:
        activation(y, y)


def _grouped(
    x: np.ndarray,
    w: np.ndarray,
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    group: int,
    out_hw: Sequence[int],
) -> np.ndarray:
    """Grouped convolution: im2col with the columns of each group together, one batched GEMM."""
    n, c, _, _ = x.shape
    m, c_per_group, kh, kw = w.shape
    oh, ow = out_hw
    windows = window_view(pad_nhwc(x, pads), (kh, kw), strides, dilations, out_hw)
    # (N, OH, OW, KH, KW, G, C/G) -> (G, N*OH*OW, KH*KW*C/G)
    by_group = windows.reshape(n, oh, ow, kh, kw, group, c_per_group).transpose(5, 0, 1, 2, 3, 4, 6)
    cols = np.ascontiguousarray(by_group).reshape(group, n * oh * ow, kh * kw * c_per_group)
    weights = derived(w, "g-hwio", lambda a: np.ascontiguousarray(a.reshape(group, m // group, c_per_group, kh, kw).transpose(0, 3, 4, 2, 1)).reshape(group, -1, m // group))
    out = np.empty((n * oh * ow, group, m // group), dtype=x.dtype)
    gemm(cols, weights, out=out.transpose(1, 0, 2))
    return out.reshape(n, oh, ow, m)


def _depthwise(
    x: np.ndarray,
    w: np.ndarray,
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    out_hw: Sequence[int],
) -> np.ndarray:
    """One input channel per group (channel multiplier m / c): a multiply-add per kernel tap,
    each over the whole channels-last tensor."""
    n, c, _, _ = x.shape
    m, _, kh, kw = w.shape
    xp = pad_nhwc(x, pads)
    if m != c:  # output channel o reads input channel o // (m / c)
        xp = np.repeat(xp, m // c, axis=3)
    windows = window_view(xp, (kh, kw), strides, dilations, out_hw)
    taps = derived(w, "hwo", lambda a: np.ascontiguousarray(a[:, 0].transpose(1, 2, 0)))  # (KH, KW, M)
    out = np.multiply(windows[:, :, :, 0, 0], taps[0, 0])
    term = np.empty_like(out)
    for i in range(kh):
        for j in range(kw):
            if i or j:
                np.multiply(windows[:, :, :, i, j], taps[i, j], out=term)
                out += term
    return out


# Winograd F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
# 2016): a 2x2 block of outputs is A^T [(G g G^T) * (B^T d B)] A for the 4x4 input tile d that
# covers it, so a 3x3 convolution takes 16 multiply-adds per 4 outputs and input channel
# instead of 36. Summed over input channels, the 16 elementwise products are 16 GEMMs
# (tiles x C) @ (C x M). B and A hold only 0 and +-1 and G only 0, +-1/2 and 1, so the
# transforms add and subtract (halving is exact) and the rounding error stays that of the
# direct GEMM (tests/test_fast_kernels.py checks it); F(4x4, 3x3) would save more multiply-adds
# but needs the fractions 1/6 .. 1/24 and loses about a decimal digit.
WINOGRAD_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
# Measured on ResNet-50 and VGG layers: with fewer tiles (a 7x7 map has 16) or channels, the
# 16 small GEMMs and the transforms cost more than the one im2col GEMM they replace.
WINOGRAD_MIN_TILES = 32
WINOGRAD_MIN_CHANNELS = 16


def winograd_applies(x_shape: Sequence[int], w_shape: Sequence[int], strides: Sequence[int],
                     dilations: Sequence[int], group: int, out_hw: Sequence[int]) -> bool:
    """Whether `winograd_conv3x3` is the faster way to this convolution."""
    n, c = x_shape[:2]
    m, _, kh, kw = w_shape
    tiles = n * ((out_hw[0] + 1) // 2) * ((out_hw[1] + 1) // 2)
    return (
        (kh, kw) == (3, 3) and tuple(strides) == tuple(dilations) == (1, 1) and group == 1
        and tiles >= WINOGRAD_MIN_TILES and min(c, m) >= WINOGRAD_MIN_CHANNELS
    )


def winograd_weights(w: np.ndarray) -> np.ndarray:
    """G g G^T of every 3x3 kernel of the OIHW `w`, as the (16, C, M) right-hand sides."""
    m, c = w.shape[:2]
    u = np.einsum("ai,mcij,bj->abcm", WINOGRAD_G, w.astype(np.float64), WINOGRAD_G)
    return np.ascontiguousarray(u.reshape(16, c, m).astype(w.dtype))


def _winograd_bt(d: Sequence[np.ndarray], out: np.ndarray) -> None:
    """out[i] = (B^T d)[i] for the four same-shaped arrays d[0..3]."""
    np.subtract(d[0], d[2], out=out[0])
    np.add(d[1], d[2], out=out[1])
    np.subtract(d[2], d[1], out=out[2])
    np.subtract(d[1], d[3], out=out[3])


# A^T m A for every tile at once: row (i, j) of kron(A^T, A^T) takes entry (a, b) of the 16
# products with weight A^T[i, a] A^T[j, b] (0 or +-1), so one small GEMM over the products
# (16 x tiles*M) is the whole output transform, reading them once.
WINOGRAD_AT = np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]])
WINOGRAD_OUTPUT = np.kron(WINOGRAD_AT, WINOGRAD_AT)


def winograd_conv3x3(
    x: np.ndarray,
    w: np.ndarray,
    pads: Sequence[int],
    out_hw: Sequence[int],
    bias: np.ndarray | None = None,
    activation: Activation | None = None,
    residual: np.ndarray | None = None,
    input_activation: Activation | None = None,
    ones_channel: bool = False,
) -> np.ndarray:
    """A 3x3, stride-1 dense convolution of input_activation(x) (the NCHW-shaped `x`) with
    F(2x2, 3x3) Winograd: a fresh channels-last (N, OH, OW, M) array, bias and the
    channels-last `residual` added and activation applied; with `ones_channel` its memory
    holds one more channel, of ones (as `conv2d`'s). Rows of tiles go through in chunks
    whose transformed tiles and products stay in the L2 cache between the passes over them."""
    n, c, h, _ = x.shape
    m = w.shape[0]
    oh, ow = out_hw
    th, tw = (oh + 1) // 2, (ow + 1) // 2  # tiles per column and row; tile (i, j) starts at (2i, 2j)
    top, left = pads[0], pads[1]
    # The zero-padded input with its columns split by parity, xp[:, r, p, k] = padded[:, r, 2k + p]:
    # each operand of the input transform below is then made of whole rows of memory.
    xp = np.empty((n, 2 * th + 2, 2, tw + 1, c), dtype=x.dtype)
    xp[:, :top] = 0
    xp[:, top + h :] = 0
    rows = x.transpose(0, 2, 3, 1)
    for parity in (0, 1):
        first = (parity - left) % 2  # the first input column that lands on this parity
        columns = rows[:, :, first::2]
        start = (first + left) // 2
        inside = xp[:, top : top + h, parity]
        inside[:, :, :start] = 0
        inside[:, :, start + columns.shape[2] :] = 0
        if input_activation is None:
            inside[:, :, start : start + columns.shape[2]] = columns
        else:
            input_activation(columns, inside[:, :, start : start + columns.shape[2]])
    u = derived(w, "winograd", winograd_weights)
    y = with_ones_channel((n, oh, ow, m), x.dtype) if ones_channel else np.empty((n, oh, ow, m), dtype=x.dtype)
    chunks = -(-th // max(1, WINOGRAD_CHUNK_TILES * blas_threads() // (n * tw)))
    per_chunk = -(-th // chunks)
    for t0 in range(0, th, per_chunk):
        t1 = min(th, t0 + per_chunk)
        y_rows = y[:, 2 * t0 : min(oh, 2 * t1)]
        _winograd_tile_rows(xp[:, 2 * t0 : 2 * t1 + 2], u, y_rows, bias, None if residual is not None else activation)
        if residual is not None:
            finish(y_rows, None, residual[:, 2 * t0 : min(oh, 2 * t1)], activation)
    return y


# Tiles per chunk of `winograd_conv3x3`, per BLAS thread. Measured on ResNet-50's layers: on
# the 56x56x64 maps, chunks of 196 tiles (a quarter of the map; 0.8 MB of transformed tiles,
# the L2 cache is 2 MB per core here) beat the whole map by a sixth on one thread; chunks of
# fewer tiles lose it again to smaller GEMMs. The 16 GEMMs of a chunk are one batched call
# that gives each thread its own GEMMs (`blas.batched_product`), so with two threads a chunk
# has twice the tiles and each core's part still fits its cache (56x56x64, 2 threads: 1.35 ms
# in chunks of 392 tiles, 1.77 ms in chunks of 196, whose GEMMs run one at a time).
WINOGRAD_CHUNK_TILES = 196


def _winograd_tile_rows(xp: np.ndarray, u: np.ndarray, y: np.ndarray, bias: np.ndarray | None,
                        activation: Activation | None) -> None:
    """Rows of tiles of `winograd_conv3x3`: from the parity-split padded input rows `xp` to
    the output rows `y` (their last row or column dropped when the map's size is odd)."""
    n, rows, _, columns, c = xp.shape
    th, tw = rows // 2 - 1, columns - 1
    oh, ow, m = y.shape[1:]
    # B^T d B: along the tiles' rows, then along their columns (column k of tile j is 2j + k).
    by_rows = np.empty((4, n, th, 2, tw + 1, c), dtype=xp.dtype)
    _winograd_bt([xp[:, k : k + 2 * th : 2] for k in range(4)], by_rows)
    tiles = np.empty((4, 4, n, th, tw, c), dtype=xp.dtype)
    _winograd_bt([by_rows[:, :, :, k % 2, k // 2 : k // 2 + tw] for k in range(4)], tiles.swapaxes(0, 1))
    products = gemm(tiles.reshape(16, -1, c), u)  # (16, N*th*tw, M)
    if bias is not None:
        products[5] += bias  # entry (1, 1) reaches all four outputs of a tile with weight 1
    # Not through `gemm`: the BLAS products the benchmark times are the convolution's.
    transform = WINOGRAD_OUTPUT.astype(products.dtype, copy=False)
    blocks = np.matmul(transform, products.reshape(16, -1)).reshape(2, 2, n, th, tw, m)
    # Interleave the 2x2 blocks into the output (dropping the last row / column of odd sizes).
    interleave = activation or (lambda a, out: np.copyto(out, a))
    for i in (0, 1):
        for j in (0, 1):
            interleave(blocks[i, j, :, : (oh - i + 1) // 2, : (ow - j + 1) // 2], y[:, i::2, j::2])


@dataclass(frozen=True)
class ConvFusion:
    """How the executor's plan joins a conv2d op with the ops around it (all off by default)."""

    residual: bool = False  # one more operand, a map of the result's shape added before the activation
    activation: Activation | None = None  # with `residual`: the activation after the add (not the op's)
    defer_activation: bool = False  # leave the op's activation to the one conv that reads its result
    input_activation: Activation | None = None  # that conv: the activation to apply to its input
    ones_channel: bool = False  # the result's memory holds one more channel, of ones ...
    bias_in_k: bool = False  # ... which the one 1x1 conv reading it uses to put its bias into its GEMM


def conv2d_kernel(op: nn.Conv2dOp, fusion: ConvFusion = ConvFusion()) -> Prepared:
    """The conv2d op as a function of its operands (plus the residual with
    `fusion.residual`), its attributes read once."""
    strides, pads, dilations = nn.int_list(op.strides), nn.int_list(op.pads), nn.int_list(op.dilations)
    group, out_hw = _int(op.group), _result_shape(op)[2:]
    x_type, w_type = op.operands[0].type, op.operands[1].type
    assert isinstance(x_type, TensorType) and isinstance(w_type, TensorType)
    dtype = _compute_dtype(dtype_of(x_type))
    has_bias = len(op.operands) > 2
    activation = fusion.activation if fusion.residual else fused_activation(op)
    if fusion.defer_activation:
        activation = None
    residual, input_activation, ones_channel = fusion.residual, fusion.input_activation, fusion.ones_channel
    winograd = winograd_applies(x_type.get_shape(), w_type.get_shape(), strides, dilations, group, out_hw)
    assert not fusion.bias_in_k or takes_ones_channel(op)
    packed: list = [None, None, None]  # with bias_in_k: (w, bias, their (C + 1, M) GEMM operand)

    def run(args: list[np.ndarray]) -> list[np.ndarray]:
        x, w = args[0].astype(dtype, copy=False), args[1].astype(dtype, copy=False)
        bias = args[2].astype(dtype, copy=False) if has_bias else None
        r = args[-1].transpose(0, 2, 3, 1) if residual else None
        if fusion.bias_in_k:
            if packed[0] is not w or packed[1] is not bias:
                # Not through `hwio_weights`: its cached copy would be a second one of this weight.
                hwio = w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0])
                packed[:] = [w, bias, np.concatenate([hwio, bias[None]])]  # type: ignore[index]
            return [as_nchw(conv1x1_bias_in_k(x, packed[2], out_hw, r, activation))]
        if winograd:
            return [as_nchw(winograd_conv3x3(x, w, pads, out_hw, bias, activation, r, input_activation, ones_channel))]
        return [as_nchw(conv2d(x, w, strides, pads, dilations, group, out_hw, bias, activation, r, input_activation,
                               ones_channel))]

    return run


def _dense_float(op: nn.Conv2dOp) -> bool:
    """A group-1 float32 / float64 convolution (computed in its own dtype) with the built-in kernel."""
    t = op.results[0].type
    assert isinstance(t, TensorType)
    return KERNELS.get(nn.Conv2dOp) is _conv2d and _int(op.group) == 1 and dtype_of(t) in (np.float32, np.float64)


def copies_input(op: nn.Conv2dOp) -> bool:
    """Whether the conv copies its input anyway (Winograd, im2col): an activation can ride on it."""
    kh, kw = op.operands[1].type.get_shape()[2:]  # type: ignore[attr-defined]
    return _dense_float(op) and (kh * kw > 1 or any(nn.int_list(op.pads)))


def takes_ones_channel(op: nn.Conv2dOp) -> bool:
    """Whether the conv can take its bias into its GEMM from an input with a channel of ones."""
    kh, kw = op.operands[1].type.get_shape()[2:]  # type: ignore[attr-defined]
    return (_dense_float(op) and kh == kw == 1 and not any(nn.int_list(op.pads)) and len(op.operands) > 2
            and tuple(nn.int_list(op.strides)) == (1, 1))


def makes_ones_channel(op: nn.Conv2dOp) -> bool:
    """Whether the conv can give its result that channel of ones."""
    return _dense_float(op)


@kernel(nn.Conv2dOp)
def _conv2d(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, nn.Conv2dOp)
    return conv2d_kernel(op)(args)


@kernel(nn.GemmOp)
def _gemm(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, nn.GemmOp)
    a, b = args[0], args[1]
    dtype = _compute_dtype(a)
    a, b = a.astype(dtype, copy=False), b.astype(dtype, copy=False)
    y = gemm(a.T if _int(op.trans_a) else a, b.T if _int(op.trans_b) else b)
    alpha, beta = float(op.alpha.value.data), float(op.beta.value.data)
    if alpha != 1.0:
        y *= dtype.type(alpha)
    if len(args) > 2 and beta != 0.0:
        c = args[2].astype(dtype, copy=False)
        y += c if beta == 1.0 else c * dtype.type(beta)
    finish(y, None, None, fused_activation(op))
    return [y]


@kernel(nn.MatMulOp)
def _matmul(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    dtype = _compute_dtype(args[0])
    return [gemm(args[0].astype(dtype, copy=False), args[1].astype(dtype, copy=False))]


# ---------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------


def window_counts(size: int, out: int, kernel: int, stride: int, dilation: int, pad_begin: int, lo: int, hi: int) -> np.ndarray:
    """For each output position on one axis (window starting at o * stride - pad_begin),
    how many of its taps lie in [-lo, size + hi) (at least 1)."""
    taps = np.arange(out)[:, None] * stride - pad_begin + np.arange(kernel)[None, :] * dilation
    return np.maximum(((taps >= -lo) & (taps < size + hi)).sum(axis=1), 1)


def pool_kernel(op: nn.PoolOp, activation: Activation | None = None) -> Prepared:
    """Max / average pooling as a function of its operand, separably (along the width, then
    along the height) straight from the (channels-last) input: the padding is never
    materialised. `activation` (a relu or clip the conv before left to a max pool, see
    `pool_commutes`) is applied to the pooled map."""
    kh, kw = nn.int_list(op.kernel)
    strides, pads, dilations = nn.int_list(op.strides), nn.int_list(op.pads), nn.int_list(op.dilations)
    oh, ow = _result_shape(op)[2:]
    is_max = op.kind.data == "max"
    reduce = np.maximum if is_max else np.add
    include_pad = _int(op.count_include_pad)

    def run(args: list[np.ndarray]) -> list[np.ndarray]:
        x = args[0]
        _, _, h, w = x.shape
        if is_max:
            # The lowest finite value, as onnxruntime: a window entirely in the padding gives it.
            fill = np.finfo(x.dtype).min if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
        else:
            fill = 0
        dtype = x.dtype if is_max else _compute_dtype(x)
        nhwc = x.astype(dtype, copy=False).transpose(0, 2, 3, 1)
        rows = pool_axis(nhwc, 2, ow, kw, strides[1], dilations[1], pads[1], reduce, dtype.type(fill))
        out = pool_axis(rows, 1, oh, kh, strides[0], dilations[0], pads[0], reduce, dtype.type(fill))
        if not is_max:
            # The divisor counts valid inputs, plus the declared pads with count_include_pad.
            lo, hi = (pads[:2], pads[2:]) if include_pad else ((0, 0), (0, 0))
            count_h = window_counts(h, oh, kh, strides[0], dilations[0], pads[0], lo[0], hi[0])
            count_w = window_counts(w, ow, kw, strides[1], dilations[1], pads[1], lo[1], hi[1])
            out /= (count_h[:, None, None] * count_w[None, :, None]).astype(dtype)
        if activation is not None:
            activation(out, out)
        return [as_nchw(out)]

    return run


@kernel(nn.PoolOp)
def _pool(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, nn.PoolOp)
    return pool_kernel(op)(args)


def pool_commutes(op: nn.PoolOp, kind: str) -> bool:
    """Whether a max pool (with its built-in kernel) that applies the activation `kind` to
    its result (on 4x fewer values for a 2x2 stride) gives what pooling the activated map
    gives. True for relu and clip when every window reaches into the input: both are
    nondecreasing, max(f(a), f(b)) = f(max(a, b)), and where a window also reaches into the
    padding, its fill (the lowest float) and f(fill) are both at most f of any input, or
    equal. Not for leaky_relu: f(-inf) = -inf is below f(fill)."""
    if not (KERNELS.get(nn.PoolOp) is _pool and op.kind.data == "max" and kind in ("relu", "clip")):
        return False
    x_type = op.operands[0].type
    assert isinstance(x_type, TensorType)
    lengths, sizes = x_type.get_shape()[2:], _result_shape(op)[2:]
    kernels, strides, dilations, pads = (nn.int_list(a) for a in (op.kernel, op.strides, op.dilations, op.pads))
    for axis in (0, 1):
        covered = np.zeros(sizes[axis], dtype=bool)
        for first, end, _ in tap_ranges(lengths[axis], sizes[axis], kernels[axis], strides[axis], dilations[axis],
                                        pads[axis]):
            covered[first:end] = True
        if not covered.all():
            return False
    return True


def tap_ranges(length: int, size: int, kernel: int, stride: int, dilation: int,
               pad_begin: int) -> list[tuple[int, int, int]]:
    """For each tap of a pooling window along one axis that falls inside the input somewhere:
    (the first output it reaches, the end of those outputs, the input index of the first)."""
    ranges = []
    for t in range(kernel):
        offset = t * dilation - pad_begin
        first = max(0, -(offset // stride))  # ceil(-offset / stride): the first input index >= 0
        end = min(size, (length - 1 - offset) // stride + 1) if length - 1 - offset >= 0 else 0
        if first < end:
            ranges.append((first, end, first * stride + offset))
    return ranges


def pool_axis(x: np.ndarray, axis: int, size: int, kernel: int, stride: int, dilation: int, pad_begin: int,
              reduce: np.ufunc, fill: np.generic) -> np.ndarray:
    """One axis of a pooling window, into a fresh C-contiguous array: `size` outputs, output
    o the `reduce` of x[o * stride - pad_begin + t * dilation] over the taps t that fall
    inside x, and of `fill` when any tap falls outside (in the padding, or past the end
    with ceil_mode): what reducing over x padded with `fill` gives, without the padded copy."""
    length = x.shape[axis]

    def part(a: np.ndarray, start: int, stop: int | None, step: int = 1) -> np.ndarray:
        index: list[slice] = [slice(None)] * a.ndim
        index[axis] = slice(start, stop, step)
        return a[tuple(index)]

    taps = [  # (first output, end of outputs, their inputs) for each tap inside x somewhere
        (first, end, part(x, start, start + (end - first - 1) * stride + 1, stride))
        for first, end, start in tap_ranges(length, size, kernel, stride, dilation, pad_begin)
    ]
    shape = list(x.shape)
    shape[axis] = size
    out = np.empty(shape, dtype=x.dtype)
    whole = [inputs for first, end, inputs in taps if first == 0 and end == size]
    if len(whole) >= 2:
        reduce(whole[0], whole[1], out=out)
        whole = whole[:2]
    elif whole:
        np.copyto(out, whole[0])
    else:
        out.fill(fill)
    for first, end, inputs in taps:
        if not any(inputs is used for used in whole):
            reduce(part(out, first, end), inputs, out=part(out, first, end))
    if reduce is np.maximum:  # windows reaching outside x: their padding takes part (adding zeros would not matter)
        inside = (-(-pad_begin // stride), -(-(length + pad_begin - (kernel - 1) * dilation) // stride))
        for first, end in ((0, min(size, inside[0])), (max(0, inside[1]), size)):
            if first < end:
                np.maximum(part(out, first, end), fill, out=part(out, first, end))
    return out


@kernel(nn.GlobalPoolOp)
def _global_pool(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, nn.GlobalPoolOp)
    x = args[0]
    axes = tuple(range(2, x.ndim))
    if op.kind.data == "max":
        return [x.max(axis=axes, keepdims=True)]
    return [x.astype(_compute_dtype(x), copy=False).mean(axis=axes, keepdims=True)]


# ---------------------------------------------------------------------------------------
# Data movement
# ---------------------------------------------------------------------------------------


@kernel(nn.ConcatOp)
def _concat(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, nn.ConcatOp)
    axis = _int(op.axis)
    if axis == 1 and all(a.ndim == 4 and a.transpose(0, 2, 3, 1).flags.c_contiguous for a in args):
        # Channels-last in, channels-last out: the next conv reads the result without a copy.
        return [as_nchw(np.concatenate([a.transpose(0, 2, 3, 1) for a in args], axis=3))]
    return [np.concatenate(args, axis=axis)]


@kernel(nn.SplitOp)
def _split(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, nn.SplitOp)
    axis = _int(op.axis)
    sizes = [_result_shape(op, i)[axis] for i in range(len(op.results))]
    return np.split(args[0], np.cumsum(sizes)[:-1], axis=axis)


@kernel(nn.SliceOp)
def _slice(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, nn.SliceOp)
    index = tuple(
        slice(start, None if (step < 0 and end == -1) else end, step)
        for start, end, step in zip(nn.int_list(op.starts), nn.int_list(op.ends), nn.int_list(op.steps), strict=True)
    )
    return [args[0][index]]


@kernel(nn.ReshapeOp)
def _reshape(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    return [args[0].reshape(_result_shape(op))]


@kernel(nn.TransposeOp)
def _transpose(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, nn.TransposeOp)
    return [np.transpose(args[0], nn.int_list(op.perm))]


@kernel(nn.GatherOp)
def _gather(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, nn.GatherOp)
    data, indices = args
    axis = _int(op.axis)
    size = data.shape[axis]
    if np.any((indices < -size) | (indices >= size)):
        raise LayerloomError(f"gather indices out of range for axis {axis} of size {size}", layer_name(op) or op.name)
    return [np.take(data, np.where(indices < 0, indices + size, indices), axis=axis)]


@kernel(nn.PadOp)
def _pad(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    """ONNX Pad: negative pads crop first, then constant / reflect / edge padding."""
    assert isinstance(op, nn.PadOp)
    x = args[0]
    pads = nn.int_list(op.pads)
    rank = x.ndim
    begins, ends = pads[:rank], pads[rank:]
    x = x[tuple(slice(max(0, -b), size - max(0, -e)) for size, b, e in zip(x.shape, begins, ends, strict=True))]
    widths = [(max(0, b), max(0, e)) for b, e in zip(begins, ends, strict=True)]
    mode = op.mode.data
    if mode == "constant":
        return [np.pad(x, widths, mode="constant", constant_values=x.dtype.type(float(op.value.value.data)))]
    return [np.pad(x, widths, mode=mode)]  # type: ignore[call-overload]


# ---------------------------------------------------------------------------------------
# Resize (backends/reference/resize.py: ONNX Resize as onnxruntime computes it)
# ---------------------------------------------------------------------------------------


@kernel(nn.ResizeOp)
def _resize(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, nn.ResizeOp)
    return [
        resize(
            args[0],
            _result_shape(op),
            nn.float_list(op.scales),
            mode=op.mode.data,
            coordinate_mode=op.coordinate_mode.data,
            nearest_mode=op.nearest_mode.data,
            cubic_coeff_a=_float(op.cubic_coeff_a, -0.75),  # type: ignore[arg-type]
            exclude_outside=op.exclude_outside is not None and bool(_int(op.exclude_outside)),
            antialias=op.antialias is not None and bool(_int(op.antialias)),
            roi=nn.float_list(op.roi) if op.roi is not None else None,
            extrapolation_value=_float(op.extrapolation_value, 0.0),  # type: ignore[arg-type]
        )
    ]
