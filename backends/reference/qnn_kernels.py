"""NumPy kernels for the `qnn` dialect, exactly per docs/quantization.md.

Every rounding, shift and saturation goes through `compiler.quant.intmath` (the spec's one
implementation); this module only decides how to get the exact integer sums fast:

- Contractions run in float BLAS on zero-point-centred operands, which is exact whenever
  every partial sum is an integer below the float's 2^24 (float32) or 2^53 (float64): a
  K-long dot product of values bounded by `bx` and `bw` is exact in float32 when
  K * bx * bw < 2^24. Longer reductions are cut into chunks that each stay below it (input
  channels for conv, the inner axis for matmul) and the chunks are summed in float64; a
  reduction that does not even fit float64 (impossible below the verifier's K limit) goes
  to int64. Convolution reuses the float kernel (`kernels.conv2d`: im2col + GEMM,
  channels-last), fed with `x - z_x` so that its zero padding is the input zero point.
- The output stage (requantize, leaky slope, zero point, clamp) runs slab by slab over the
  accumulator, so its int64 temporaries stay in cache.
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
from dialects import nn, qnn

FLOAT32_EXACT = 2**24  # integers below this are exact in float32, and so are their sums below it
FLOAT64_EXACT = 2**53
SLAB_ELEMENTS = 1 << 15  # int64 temporaries of 256 KiB: they stay in L2 cache


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
    k = a.shape[-1]
    chunks = chunk_count(k, max_abs(a) * max_abs(b))
    if chunks == 0:
        return np.matmul(a.astype(np.int64), b.astype(np.int64))
    if b.ndim == 1:
        b = b[:, None]
        return exact_matmul(a, b)[..., 0]
    if chunks == 1:
        return np.matmul(a, b)
    step = math.ceil(k / chunks)
    total = np.matmul(a[..., :step], b[..., :step, :]).astype(np.float64)
    for k0 in range(step, k, step):
        total += np.matmul(a[..., k0 : k0 + step], b[..., k0 : k0 + step, :])
    return total


def exact_conv2d(xc: np.ndarray, wc: np.ndarray, op: qnn.Conv2dOp, out_hw: tuple[int, ...]) -> np.ndarray:
    """The convolution of centred float32 input and weights as a channels-last
    (N, OH, OW, M) array of exact integers (float32, float64 or int64)."""
    strides, pads, dilations = nn.int_list(op.strides), nn.int_list(op.pads), nn.int_list(op.dilations)
    group = int(op.group.value.data)
    _, c_per_group, kh, kw = wc.shape
    bound = max_abs(xc) * max_abs(wc)
    chunks = chunk_count(c_per_group * kh * kw, bound)
    if chunks == 0:
        raise ValueError(f"a reduction of {c_per_group * kh * kw} products bounded by {bound} is not exact in float64")
    if chunks == 1:
        return conv2d(xc, wc, strides, pads, dilations, group, out_hw)
    if group > 1:  # grouped convs have short reductions: this rare rest runs in float64
        return conv2d(xc.astype(np.float64), wc.astype(np.float64), strides, pads, dilations, group, out_hw)
    # Cut the input channels: conv(x, w) is the sum of the convs of channel slices.
    step = math.ceil(c_per_group / chunks)
    total: np.ndarray | None = None
    for c0 in range(0, c_per_group, step):
        part = conv2d(xc[:, c0 : c0 + step], wc[:, c0 : c0 + step], strides, pads, dilations, 1, out_hw)
        total = part.astype(np.float64) if total is None else np.add(total, part, out=total)
    assert total is not None
    return total


# ---------------------------------------------------------------------------------------
# Output stage, slab by slab
# ---------------------------------------------------------------------------------------


def staged_rows(
    acc: np.ndarray, stage: Callable[[np.ndarray], np.ndarray], dtype: np.dtype, offset: np.ndarray | None = None
) -> np.ndarray:
    """`stage(int64(acc) + offset)` over the rows of a 2-d accumulator (per-channel
    parameters along axis 1), a slab of rows at a time, into a fresh `dtype` array."""
    rows, cols = acc.shape
    out = np.empty((rows, cols), dtype=dtype)
    step = max(1, SLAB_ELEMENTS // max(cols, 1))
    for r0 in range(0, rows, step):
        part = acc[r0 : r0 + step].astype(np.int64)
        if offset is not None:
            part += offset
        out[r0 : r0 + step] = stage(part)
    return out


def staged_flat(
    arrays: list[np.ndarray], stage: Callable[..., np.ndarray], dtype: np.dtype
) -> np.ndarray | None:
    """`stage(*int64 slabs)` over same-shaped, same-layout arrays, slab by slab in memory
    order, into a fresh array of that layout; None when the layouts differ (the caller
    then applies the stage to whole arrays)."""
    first = arrays[0]
    if any(a.shape != first.shape or a.strides != first.strides for a in arrays):
        return None
    flats = [np.ravel(a, order="K") for a in arrays]
    if not all(np.shares_memory(f, a) or a.size <= 1 for f, a in zip(flats, arrays, strict=True)):
        return None  # not contiguous in any order: ravel copied
    out = np.empty_like(first, dtype=dtype)
    flat_out = np.ravel(out, order="K")
    if not (np.shares_memory(flat_out, out) or out.size <= 1):
        return None
    for i0 in range(0, flat_out.size, SLAB_ELEMENTS):
        flat_out[i0 : i0 + SLAB_ELEMENTS] = stage(*(f[i0 : i0 + SLAB_ELEMENTS].astype(np.int64) for f in flats))
    return out


def result_dtype(op: Operation) -> np.dtype:
    from compiler.tensors import dtype_of

    return dtype_of(op.results[0].type)


def finish_contraction(op: qnn.ContractionOp, acc: np.ndarray, offset: np.ndarray | None) -> np.ndarray:
    """The result of a contraction from its exact accumulator (channels on the last
    axis) and the per-channel integer `offset` to add (the bias): the output stage, or the
    int32 accumulator itself for an i32 result."""
    dtype = result_dtype(op)
    rows = acc.reshape(-1, acc.shape[-1]) if acc.ndim else acc.reshape(1, 1)
    if op.scale is None:  # i32 result: the accumulator (ONNX ConvInteger / MatMulInteger)
        out = rows.astype(np.int64)
        if offset is not None:
            out += offset
        im.check_int32(out, "accumulator")
        return out.astype(dtype).reshape(acc.shape)
    stage = op.output_stage().along(2, 1)
    return staged_rows(rows, stage, dtype, offset).reshape(acc.shape)


def bias_offset(args: list[np.ndarray], index: int) -> np.ndarray | None:
    return args[index].astype(np.int64) if len(args) > index else None


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
    _, zx = op.input_quantization()
    xc = centred(args[0], zx)  # padding with 0 now pads with the input zero point
    wc = centred_weight(args[1], weight_zero_point(op))
    acc = exact_conv2d(xc, wc, op, _result_shape(op)[2:])
    return [as_nchw(finish_contraction(op, acc, bias_offset(args, 2)))]


@kernel(qnn.GemmOp)
def _gemm(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, qnn.GemmOp)
    _, za = op.input_quantization()
    b = centred_weight(args[1], weight_zero_point(op))
    acc = exact_matmul(centred(args[0], za), b.T if int(op.trans_b.value.data) else b)
    return [finish_contraction(op, acc, bias_offset(args, 2))]


@kernel(qnn.MatMulOp)
def _matmul(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, qnn.MatMulOp)
    _, za = op.input_quantization()
    acc = exact_matmul(centred(args[0], za), centred_weight(args[1], weight_zero_point(op)))
    if args[1].ndim == 1:  # no channel axis: one parameter set, a channel axis of 1
        return [finish_contraction(op, acc[..., None], None)[..., 0]]
    return [finish_contraction(op, acc, None)]


# ---------------------------------------------------------------------------------------
# Elementwise
# ---------------------------------------------------------------------------------------


@kernel(qnn.AddOp)
def _add(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, qnn.AddOp)
    (_, za), (_, zb) = op.input_quantizations()
    operands, stage = op.operand_requants(), op.output_stage()

    def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return im.add(a, b, (za, zb), operands, stage)

    out = staged_flat([args[0], args[1]], add, result_dtype(op))
    return [out if out is not None else add(args[0], args[1])]


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
            continue

        def rescale(q: np.ndarray, z: int = z, stage: im.OutputStage = stage) -> np.ndarray:
            return im.rescale(q, z, stage)

        out = staged_flat([x], rescale, dtype)
        parts.append(out if out is not None else rescale(x).astype(dtype))
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

    def rescale(q: np.ndarray) -> np.ndarray:
        return im.rescale(q, zx, stage)

    out = staged_flat([args[0]], rescale, result_dtype(op))
    return [out if out is not None else rescale(args[0])]


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
    out = im.average_divide(sums, counts, op.output_stage())
    return [as_nchw(out.astype(result_dtype(op)))]


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
    return [op.output_stage()(sums)]  # its one parameter set divides by n
