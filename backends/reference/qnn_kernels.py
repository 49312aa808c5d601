"""NumPy kernels for the `qnn` dialect, exactly per docs/quantization.md.

`compiler.quant.intmath` is the spec's one implementation; the kernels compute the same
integers, fast:

- Contractions run in float BLAS, which is exact whenever every partial sum is an integer
  below 2^24 (float32): a K-long dot product of values bounded by `bx` and `bw` is exact in
  float32 when K * bx * bw < 2^24. Longer reductions are cut into chunks that each stay
  below it (input channels for conv, the inner axis for matmul) and the chunks are summed
  in float64 (exact below 2^53); int64 beyond that. Convolution reuses the float kernel
  (`kernels.conv2d`: im2col + GEMM, channels-last) on the raw input padded with its zero
  point; the zero point's share, z_x * sum(w) per output channel, is subtracted with the
  bias (the folding of docs/quantization.md section 1, done at run time).
- Requantization uses `requantize`, the spec's roundings rewritten with fewer NumPy passes
  (SaturatingRoundingDoublingHighMul with a non-negative multiplier is a round-half-up
  shift; RoundingDivideByPOT a round-half-away shift); tests/test_qnn_kernels.py checks it
  against intmath bit for bit. It runs slab by slab so that its int64 temporaries stay in
  cache. Where an accumulator could leave int32 (a huge imported bias), intmath itself
  runs, and raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from xdsl.ir import Operation

from backends.reference.kernels import (
    _result_shape,
    as_nchw,
    conv2d,
    derived,
    kernel,
    pad_nhwc,
    window_counts,
    window_view,
)
from compiler.quant import intmath as im
from compiler.tensors import dtype_of
from dialects import nn, qnn

FLOAT32_EXACT = 2**24  # integers below this are exact in float32, and so are their sums below it
FLOAT64_EXACT = 2**53
SLAB_ELEMENTS = 1 << 15  # int64 temporaries of 256 KiB: they stay in L2 cache


# ---------------------------------------------------------------------------------------
# Requantization in few passes (the same integers as intmath)
# ---------------------------------------------------------------------------------------


def requantize(x: np.ndarray, r: im.Requant) -> np.ndarray:
    """`r(x)` for int64 `x` holding int32 values: intmath.requantize_pow2 / _fixed."""
    m, s = r.multipliers, r.shifts
    if r.scheme == "pow2":
        v = x if np.all(m == 1) else x * m
        if np.all(s == 0):
            return v
        if np.all(s > 0):
            return (v + (np.left_shift(1, s) >> 1)) >> s  # round half up
        return im.rounding_shift_right(v, s)
    left, right = np.maximum(-s, 0), np.maximum(s, 0)
    if np.any(left):
        x = np.clip(np.left_shift(x, left), im.INT32_MIN, im.INT32_MAX)
    high = (x * m + (1 << 30)) >> 31  # SaturatingRoundingDoublingHighMul, m >= 0: ties toward +inf
    if not np.any(right):
        return high
    negative = high < 0 if np.all(right) else (high < 0) & (right > 0)
    return (high + (np.left_shift(1, right) >> 1) - negative) >> right  # RoundingDivideByPOT: ties away


def output_stage(acc: np.ndarray, stage: im.OutputStage) -> np.ndarray:
    """`stage(acc)` (intmath.OutputStage) for int64 `acc` holding int32 values."""
    v = requantize(acc, stage.requant)
    if stage.negative is not None:
        v = np.where(acc < 0, requantize(acc, stage.negative), v)
    v += stage.zero_point
    return np.clip(v, stage.lo, stage.hi, out=v)


# ---------------------------------------------------------------------------------------
# Exact integer sums in float BLAS
# ---------------------------------------------------------------------------------------


def max_abs(a: np.ndarray) -> int:
    return int(np.abs(a).max(initial=0))


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


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b (numpy.matmul, batched) of float arrays holding integers, exactly: float32 BLAS
    on chunks of the inner axis, summed in float64; int64 beyond float64's reach."""
    if b.ndim == 1:
        return exact_matmul(a, b[:, None])[..., 0]
    k = a.shape[-1]
    chunks = chunk_count(k, max_abs(a) * max_abs(b))
    if chunks == 0:
        return np.matmul(a.astype(np.int64), b.astype(np.int64))
    if chunks == 1:
        return np.matmul(a, b)
    step = math.ceil(k / chunks)
    total = np.matmul(a[..., :step], b[..., :step, :]).astype(np.float64)
    for k0 in range(step, k, step):
        total += np.matmul(a[..., k0 : k0 + step], b[..., k0 : k0 + step, :])
    return total


def exact_conv2d(x: np.ndarray, w: np.ndarray, op: qnn.Conv2dOp) -> tuple[np.ndarray, int]:
    """sum x * (w - z_w) over each window of `x` padded with its zero point, as a
    channels-last (N, OH, OW, M) array of exact integers, and the bound on its magnitude."""
    strides, pads, dilations = nn.int_list(op.strides), nn.int_list(op.pads), nn.int_list(op.dilations)
    group = int(op.group.value.data)
    out_hw = _result_shape(op)[2:]
    _, zx = op.input_quantization()
    zw = qnn.ival(op.weight_zero_point) or 0
    wc = centred_weight(w, zw)
    _, c_per_group, kh, kw = w.shape
    bound = max(abs(v) for v in im.int_range(x.dtype)) * weight_facts(w, zw)[0]
    k = c_per_group * kh * kw
    xp = as_nchw(pad_nhwc(x, pads, zx).astype(np.float32))  # padding holds z_x, i.e. real 0
    no_pads = (0, 0, 0, 0)
    chunks = chunk_count(k, bound)
    if chunks == 1:
        return conv2d(xp, wc, strides, no_pads, dilations, group, out_hw), k * bound
    if chunks == 0 or group > 1:  # grouped convs have short reductions: this rare rest is float64
        if chunks == 0:
            raise ValueError(f"a reduction of {k} products bounded by {bound} is not exact in float64")
        return conv2d(xp.astype(np.float64), wc.astype(np.float64), strides, no_pads, dilations, group, out_hw), k * bound
    # conv(x, w) is the sum of the convs of input-channel slices.
    step = math.ceil(c_per_group / chunks)
    total: np.ndarray | None = None
    for c0 in range(0, c_per_group, step):
        part = conv2d(xp[:, c0 : c0 + step], wc[:, c0 : c0 + step], strides, no_pads, dilations, 1, out_hw)
        total = part.astype(np.float64) if total is None else np.add(total, part, out=total)
    assert total is not None
    return total, k * bound


# ---------------------------------------------------------------------------------------
# Output stage, slab by slab
# ---------------------------------------------------------------------------------------


def staged_rows(acc: np.ndarray, stage: im.OutputStage, dtype: np.dtype, offset: np.ndarray | None) -> np.ndarray:
    """The output stage (per-channel parameters along axis 1) of int64(acc) + offset over
    the rows of a 2-d accumulator, a slab of rows at a time, into a fresh `dtype` array."""
    rows, cols = acc.shape
    out = np.empty((rows, cols), dtype=dtype)
    step = max(1, SLAB_ELEMENTS // max(cols, 1))
    for r0 in range(0, rows, step):
        part = acc[r0 : r0 + step].astype(np.int64)
        if offset is not None:
            part += offset
        out[r0 : r0 + step] = output_stage(part, stage)
    return out


def staged_flat(arrays: list[np.ndarray], fn: Callable[..., np.ndarray], dtype: np.dtype) -> np.ndarray:
    """`fn(*int64 arrays)` over same-shaped arrays, slab by slab in memory order when they
    share a layout (into an array of that layout), else in one piece."""
    first = arrays[0]
    flats = [np.ravel(a, order="K") for a in arrays]
    same_layout = all(a.shape == first.shape and a.strides == first.strides for a in arrays)
    if same_layout and all(f.base is not None or f is a for f, a in zip(flats, arrays, strict=True)):
        out = np.empty_like(first, dtype=dtype)
        flat_out = np.ravel(out, order="K")
        if np.shares_memory(flat_out, out):
            for i0 in range(0, flat_out.size, SLAB_ELEMENTS):
                flat_out[i0 : i0 + SLAB_ELEMENTS] = fn(*(f[i0 : i0 + SLAB_ELEMENTS].astype(np.int64) for f in flats))
            return out
    return fn(*(a.astype(np.int64) for a in arrays)).astype(dtype)


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
    stage = op.output_stage().along(2, 1)
    if bound + (max_abs(offset) if offset is not None else 0) > im.INT32_MAX:
        # The accumulator might leave int32: the spec's own implementation checks it.
        return stage(rows.astype(np.int64) + (0 if offset is None else offset)).astype(dtype).reshape(acc.shape)
    return staged_rows(rows, stage, dtype, offset).reshape(acc.shape)


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
    _, zx = op.input_quantization()
    _, sums = weight_facts(w, weight_zero_point(op))
    offset = plus(bias_of(args, 2), -zx * sums) if zx else bias_of(args, 2)
    return [as_nchw(finish_contraction(op, acc, offset, bound))]


def contraction_bound(a: np.ndarray, b: np.ndarray) -> int:
    return a.shape[-1] * max_abs(a) * max_abs(b)


@kernel(qnn.GemmOp)
def _gemm(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, qnn.GemmOp)
    _, za = op.input_quantization()
    b = centred_weight(args[1], weight_zero_point(op))
    a, b = centred(args[0], za), b.T if int(op.trans_b.value.data) else b
    return [finish_contraction(op, exact_matmul(a, b), bias_of(args, 2), contraction_bound(a, b))]


@kernel(qnn.MatMulOp)
def _matmul(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, qnn.MatMulOp)
    _, za = op.input_quantization()
    a, b = centred(args[0], za), centred_weight(args[1], weight_zero_point(op))
    acc, bound = exact_matmul(a, b), contraction_bound(a, b)
    if b.ndim == 1:  # no channel axis: one parameter set, a channel axis of 1
        return [finish_contraction(op, acc[..., None], None, bound)[..., 0]]
    return [finish_contraction(op, acc, None, bound)]


# ---------------------------------------------------------------------------------------
# Elementwise
# ---------------------------------------------------------------------------------------


@kernel(qnn.AddOp)
def _add(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, qnn.AddOp)
    (_, za), (_, zb) = op.input_quantizations()
    (ra, rb), stage = op.operand_requants(), op.output_stage()

    def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return output_stage(requantize(a - za, ra) + requantize(b - zb, rb), stage)

    if args[0].shape != args[1].shape:  # broadcasting: in one piece
        return [add(args[0].astype(np.int64), args[1].astype(np.int64))]
    return [staged_flat([args[0], args[1]], add, result_dtype(op))]


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
    for x, (_, z), stage in zip(args, op.input_quantizations(), op.operand_stages(), strict=True):
        if copies(stage, z) and x.dtype == dtype:
            parts.append(x)
        else:
            parts.append(staged_flat([x], lambda q, z=z, stage=stage: output_stage(q - z, stage), dtype))
    return [np.concatenate(parts, axis=int(op.axis.value.data))]


@kernel(qnn.LutOp)
def _lut(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, qnn.LutOp)
    x, table = args
    lo, _ = qnn.type_range(nn.element_type_of(op.input)) or (0, 0)
    if lo == -128:  # int8: q - (-128) is the byte with its top bit flipped
        index = x.view(np.uint8) ^ np.uint8(0x80)
    else:
        index = x
    return [np.take(table, index)]


@kernel(qnn.RequantizeOp)
def _requantize(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, qnn.RequantizeOp)
    _, zx = op.input_quantization()
    stage = op.output_stage()
    return [staged_flat([args[0]], lambda q: output_stage(q - zx, stage), result_dtype(op))]


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
        return [as_nchw(windows.max(axis=(3, 4)))]
    # Average: sum q - z_x over each window; padding holds z_x, so it adds 0.
    windows = window_view(pad_nhwc(x, pads, zx, extra), (kh, kw), strides, dilations, (oh, ow))
    sums = windows.sum(axis=(3, 4), dtype=np.int64) - kh * kw * zx
    lo, hi = (pads[:2], pads[2:]) if int(op.count_include_pad.value.data) else ((0, 0), (0, 0))
    count_h = window_counts(h, oh, kh, strides[0], dilations[0], pads[0], lo[0], hi[0])
    count_w = window_counts(w, ow, kw, strides[1], dilations[1], pads[1], lo[1], hi[1])
    counts = (count_h[:, None] * count_w[None, :])[None, :, :, None]
    stage = op.output_stage()
    parameters = im.OutputStage(stage.requant.take(counts - 1), stage.zero_point, stage.lo, stage.hi)
    return [as_nchw(output_stage(sums, parameters).astype(result_dtype(op)))]


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
    return [output_stage(sums, op.output_stage())]  # its one parameter set divides by n
