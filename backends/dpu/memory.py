"""The DPU's memories as data (docs/isa.md sections 3 and 4): the DDR image with its
regions and base registers, feature maps in DDR, and the bank layouts of weights and
bias records. The packers here (compile time: arrays -> DDR bytes in bank layout) and
the unpackers (run time: bank words -> arrays) are the two directions of one layout, so
the lowering that writes `weights.bin` and the simulator that reads it cannot disagree.

    ddr = DdrImage.allocate(weights=blob, work=65536, input=x.nbytes, output=4096)
    x_map = FeatureMap.dense("input", 0, 8, 8, 32)
    ddr.write(x_map, x_hwc)                     # int8 (h, w, c)
    ddr.read(FeatureMap.dense("output", 0, 8, 8, 32))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from backends.dpu.isa import BIAS_RECORD_BYTES, REGISTERS, DpuConfig
from compiler.errors import LayerloomError
from compiler.quant import intmath as im

REGION_ALIGN = 4096  # regions of a DDR image start on 4 KiB pages
TENSOR_ALIGN = 64  # tensors and weight blocks inside a region start on 64-byte lines

# A bias-bank record (docs/isa.md section 3), little-endian.
RECORD = np.dtype([("bias", "<i4"), ("mult", "<u2"), ("shift", "i1"), ("reserved", "u1")])
assert RECORD.itemsize == BIAS_RECORD_BYTES
TABLE_RECORDS = 256 // BIAS_RECORD_BYTES  # an ALU lookup table fills 32 records


def align(n: int, to: int) -> int:
    return -(-n // to) * to


# ---------------------------------------------------------------------------------------
# Feature maps in DDR
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureMap:
    """An int8 h x w x c box in DDR, relative to base register `reg`: element (r, col, k)
    is at `base[reg] + offset + r*row_stride + col*col_stride + k` (NHWC for one frame;
    a channel slice of a wider tensor is how concat places its operands)."""

    reg: str
    offset: int
    h: int
    w: int
    c: int
    row_stride: int
    col_stride: int

    @staticmethod
    def dense(reg: str, offset: int, h: int, w: int, c: int) -> FeatureMap:
        return FeatureMap(reg, offset, h, w, c, w * c, c)

    @property
    def nbytes(self) -> int:
        """Bytes from the first element to one past the last."""
        return (self.h - 1) * self.row_stride + (self.w - 1) * self.col_stride + self.c

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.h, self.w, self.c

    def channels(self, first: int, count: int) -> FeatureMap:
        """Channels first .. first+count-1 of this map (a concat operand's place)."""
        if first < 0 or first + count > self.c:
            raise LayerloomError(f"channels {first}..{first + count - 1} outside a map of {self.c} channels")
        return replace(self, offset=self.offset + first, c=count)

    def at(self, row: int, col: int, chan: int = 0) -> int:
        """Offset (from the base register) of element (row, col, chan)."""
        return self.offset + row * self.row_stride + col * self.col_stride + chan


# ---------------------------------------------------------------------------------------
# The DDR image
# ---------------------------------------------------------------------------------------


@dataclass
class DdrImage:
    """The DDR regions, each a byte array of its own, and the base register of each
    (regions are laid out in register order, each on its own 4 KiB page, as the runtime
    would place them). Registers without a region are absent (an instruction using one is
    an error). The `weights` region is read-only: it may be the compiler's blob itself,
    shared by every copy of the image (no run copies 25 MB of ResNet-50 weights)."""

    regions: dict[str, tuple[int, int]]  # register name -> (base, size)
    arrays: dict[str, NDArray[np.uint8]]  # register name -> its bytes

    @staticmethod
    def allocate(weights: bytes | NDArray[np.uint8] | int = 0, **sizes: int) -> DdrImage:
        """Regions in register order (weights first, then work, input, output, r4..r7),
        each on its own 4 KiB page; `weights` is the region's contents (kept, not copied)
        or its size (zeros)."""
        unknown = sorted(set(sizes) - set(REGISTERS))
        if unknown:
            raise LayerloomError(f"'{unknown[0]}' is not a base register ({', '.join(REGISTERS)})")
        if isinstance(weights, int):
            blob = np.zeros(weights, np.uint8)
        elif isinstance(weights, np.ndarray):
            blob = weights.reshape(-1).view(np.uint8)
        else:
            blob = np.frombuffer(weights, np.uint8)
        blob = blob.view()
        blob.flags.writeable = False
        wanted = {"weights": blob.size, **sizes}
        regions: dict[str, tuple[int, int]] = {}
        arrays: dict[str, NDArray[np.uint8]] = {}
        at = 0
        for reg in REGISTERS:
            if reg in wanted:
                regions[reg] = (at, wanted[reg])
                arrays[reg] = blob if reg == "weights" else np.zeros(wanted[reg], np.uint8)
                at = align(at + wanted[reg], REGION_ALIGN)
        return DdrImage(regions, arrays)

    @property
    def data(self) -> NDArray[np.uint8]:
        """The whole image as one byte array (a copy; the gaps between regions are 0)."""
        out = np.zeros(max(base + size for base, size in self.regions.values()), np.uint8)
        for reg, (base, size) in self.regions.items():
            out[base : base + size] = self.arrays[reg]
        return out

    def copy(self) -> DdrImage:
        """Writable regions copied, read-only ones shared."""
        arrays = {reg: a if not a.flags.writeable else a.copy() for reg, a in self.arrays.items()}
        return DdrImage(dict(self.regions), arrays)

    def base(self, reg: str) -> int:
        if reg not in self.regions:
            raise LayerloomError(f"base register '{reg}' is not set (the DDR image has {', '.join(self.regions)})")
        return self.regions[reg][0]

    def region(self, reg: str) -> NDArray[np.uint8]:
        self.base(reg)
        return self.arrays[reg]

    def region_of(self, start: int, stop: int) -> str | None:
        """The region holding the bytes [start, stop), None when no one region does."""
        for reg, (base, size) in self.regions.items():
            if base <= start and stop <= base + size:
                return reg
        return None

    def box(self, address: int, rows: int, cols: int, chans: int, row_stride: int, col_stride: int) -> NDArray[np.uint8]:
        """A (rows, cols, chans) strided view of the bytes at an absolute address, inside
        one region (no copy; writing it writes the image)."""
        reg = self.region_of(address, box_end(address, rows, cols, chans, row_stride, col_stride))
        if reg is None:
            raise LayerloomError(f"the box at {address:#x} is not inside one region of the image")
        return strided_box(self.arrays[reg], address - self.regions[reg][0], rows, cols, chans, row_stride, col_stride)

    def view(self, fmap: FeatureMap) -> NDArray[np.int8]:
        address = self.base(fmap.reg) + fmap.offset
        end = address + fmap.nbytes
        if fmap.offset < 0 or self.region_of(address, end) != fmap.reg:
            base, size = self.regions[fmap.reg]
            raise LayerloomError(
                f"feature map {fmap.h}x{fmap.w}x{fmap.c} at {fmap.reg} + {fmap.offset:#x} "
                f"({fmap.nbytes} bytes) does not fit region '{fmap.reg}' of {size} bytes"
            )
        return strided_box(self.arrays[fmap.reg], fmap.offset, fmap.h, fmap.w, fmap.c, fmap.row_stride,
                           fmap.col_stride).view(np.int8)

    def write(self, fmap: FeatureMap, values: ArrayLike) -> None:
        """Place an int8 (h, w, c) array (a (1, c, h, w) NCHW array is accepted too)."""
        array = np.asarray(values)
        if array.ndim == 4 and array.shape[0] == 1:
            array = array[0].transpose(1, 2, 0)
        if array.shape != fmap.shape:
            raise LayerloomError(f"array of shape {array.shape} written to a feature map of shape {fmap.shape}")
        self.view(fmap)[...] = array.astype(np.int8)

    def read(self, fmap: FeatureMap) -> NDArray[np.int8]:
        """The (h, w, c) int8 contents of a feature map (a copy)."""
        return self.view(fmap).copy()


def strided_box(
    buffer: np.ndarray, start: int, rows: int, cols: int, chans: int, row_stride: int, col_stride: int
) -> np.ndarray:
    """(rows, cols, chans) view of a 1-d contiguous `buffer` from element `start` with
    element strides (read-only when `buffer` is). The box must lie inside the buffer."""
    item = buffer.itemsize
    return np.ndarray((rows, cols, chans), buffer.dtype, buffer, start * item,
                      (row_stride * item, col_stride * item, item))


def box_end(start: int, rows: int, cols: int, chans: int, row_stride: int, col_stride: int) -> int:
    """One past the last byte of a box."""
    return start + (rows - 1) * row_stride + (cols - 1) * col_stride + chans


# ---------------------------------------------------------------------------------------
# Bank layouts (docs/isa.md section 3): pack for DDR, unpack from bank words
# ---------------------------------------------------------------------------------------


def conv_weight_words(weights: ArrayLike, config: DpuConfig) -> NDArray[np.uint8]:
    """CONV weights (oc, ic, kh, kw) int8 in weights-bank layout: ceil(oc/OCP)*kh*kw*ceil(ic/ICP)
    words of ICP*OCP bytes; word ((g*kh + i)*kw + j)*Q + q holds at byte o*ICP + c the weight
    of output channel g*OCP + o, input channel q*ICP + c, tap (i, j)."""
    w = np.asarray(weights, dtype=np.int8)
    oc, ic, kh, kw = w.shape
    groups, q = math.ceil(oc / config.ocp), math.ceil(ic / config.icp)
    padded = np.zeros((groups * config.ocp, q * config.icp, kh, kw), np.int8)
    padded[:oc, :ic] = w
    blocks = padded.reshape(groups, config.ocp, q, config.icp, kh, kw).transpose(0, 4, 5, 2, 1, 3)
    return np.ascontiguousarray(blocks).reshape(-1, config.weights_word).view(np.uint8)


def conv_weight_matrix(words: NDArray[np.uint8], oc: int, ic: int, kh: int, kw: int, config: DpuConfig) -> NDArray[np.int8]:
    """The inverse of `conv_weight_words`: the (kh*kw*ic, oc) matrix of an im2col GEMM
    whose rows run over (i, j, input channel)."""
    groups, q = math.ceil(oc / config.ocp), math.ceil(ic / config.icp)
    blocks = words.view(np.int8).reshape(groups, kh, kw, q, config.ocp, config.icp)
    matrix = blocks.transpose(1, 2, 3, 5, 0, 4).reshape(kh, kw, q * config.icp, groups * config.ocp)
    return matrix[:, :, :ic, :oc].reshape(kh * kw * ic, oc)


def conv_weight_word_count(oc: int, ic: int, kh: int, kw: int, config: DpuConfig) -> int:
    return math.ceil(oc / config.ocp) * kh * kw * math.ceil(ic / config.icp)


def dw_weight_words(weights: ArrayLike, config: DpuConfig) -> NDArray[np.uint8]:
    """DWCONV weights (k, 1, kh, kw) (or (k, kh, kw)) int8: word (i*kw + j)*Q + q holds at
    byte c < ICP the weight of channel q*ICP + c at tap (i, j); its other bytes are 0."""
    w = np.asarray(weights, dtype=np.int8)
    w = w.reshape(w.shape[0], w.shape[-2], w.shape[-1])
    k, kh, kw = w.shape
    q = math.ceil(k / config.icp)
    words = np.zeros((kh, kw, q * config.icp), np.int8)
    words[:, :, :k] = w.transpose(1, 2, 0)
    out = np.zeros((kh * kw * q, config.weights_word), np.int8)
    out[:, : config.icp] = words.reshape(-1, config.icp)
    return out.view(np.uint8)


def dw_weight_taps(words: NDArray[np.uint8], k: int, kh: int, kw: int, config: DpuConfig) -> NDArray[np.int8]:
    """The inverse of `dw_weight_words`: (kh, kw, k) weights."""
    q = math.ceil(k / config.icp)
    return words.view(np.int8)[:, : config.icp].reshape(kh, kw, q * config.icp)[:, :, :k]


def dw_weight_word_count(k: int, kh: int, kw: int, config: DpuConfig) -> int:
    return kh * kw * math.ceil(k / config.icp)


def bias_records(bias: ArrayLike, multipliers: ArrayLike = 1, shifts: ArrayLike = 0) -> NDArray[np.uint8]:
    """Bias-bank records (n, 8 bytes) from int32 biases and pow2 (multiplier, shift)
    pairs (broadcast against each other); each checked against the spec's ranges."""
    b, m, s = np.broadcast_arrays(im.ints(bias), im.ints(multipliers), im.ints(shifts))
    check_records(b.reshape(-1), m.reshape(-1), s.reshape(-1))
    records = np.zeros(b.size, RECORD)
    records["bias"], records["mult"], records["shift"] = b.reshape(-1), m.reshape(-1), s.reshape(-1)
    return records.view(np.uint8).reshape(-1, BIAS_RECORD_BYTES)


def check_records(bias: np.ndarray, mult: np.ndarray, shift: np.ndarray, first: int = 0, what: str = "record") -> None:
    """The ranges docs/isa.md gives a record's fields (requantize_pow2's parameters)."""
    lo, hi = im.POW2_SHIFT_RANGE
    bad = (mult < 1) | (mult > im.POW2_MULTIPLIER_RANGE[1]) | (shift < lo) | (shift > hi) | ((shift < 0) & (mult != 1))
    bad |= (bias < im.INT32_MIN) | (bias > im.INT32_MAX)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise LayerloomError(
            f"{what} {first + i:#x} has bias {int(bias[i])}, multiplier {int(mult[i])}, shift {int(shift[i])}: "
            f"the multiplier must be in 1..65535 (1 when the shift is negative) and the shift in {lo}..{hi}"
        )


def read_records(words: NDArray[np.uint8]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bias, multiplier, shift) int64 arrays of bias-bank words (n, 8 bytes)."""
    records = np.ascontiguousarray(words).view(RECORD).reshape(-1)
    return im.ints(records["bias"]), im.ints(records["mult"]), im.ints(records["shift"])


def table_records(table: ArrayLike) -> NDArray[np.uint8]:
    """A 256-entry int8 lookup table as 32 bias-bank records (byte i of the table is
    byte i mod 8 of record i // 8)."""
    t = np.asarray(table)
    if t.shape != (256,):
        raise LayerloomError(f"a lookup table has 256 entries, got shape {t.shape}")
    return t.astype(np.int8).view(np.uint8).reshape(TABLE_RECORDS, BIAS_RECORD_BYTES)
