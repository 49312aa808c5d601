"""Building DPU programs: instructions with their dependency tokens, the weights region
and the layer table, and the instruction sequences of whole layers tile by tile.

`ProgramBuilder.emit` adds one instruction and the tokens it needs: it tracks every
access exactly as the simulator's hazard check does (backends/dpu/hazards.py) and, for
each earlier instruction of another queue that the new one conflicts with and is not
yet ordered after, makes that instruction signal the new one's queue and the new one
wait for it. A token is only created together with its wait, so the k-th signal of a
channel always meets the k-th wait (docs/isa.md section 6) and each token is needed:
drop any and the simulator reports the hazard. Redundant INITs (the configuration in
force already) are left out.

The layer emitters (`conv`, `pool`, `eltwise`, `lut`, `upsample`) cut a layer into output
tiles and emit LOAD / compute / SAVE per tile, double-buffered over two banks per operand
(the tokens then let the load of tile k+1 overlap the compute of tile k). The layer
descriptions (`ConvLayer`, ...) come from qnn ops (`ConvLayer.from_qnn`, ...) with the
checks that an op fits the DPU.

    b = ProgramBuilder(DpuConfig.from_arch("B1024"))
    x = b.feature_map("input", 16, 16, 32)
    y = b.feature_map("output", 16, 16, 64)
    with b.layer("conv1"):
        conv(b, ConvLayer.from_qnn(op, w, bias), x, y, Tile(rows=4))
    built = b.finish()          # .instructions, .layers, .weights, .ddr(), .binary()
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from xdsl.ir import Operation

from backends.dpu.encoding import encode
from backends.dpu.hazards import NO_CLOCK, Clock, HazardTracker, advance, merge
from backends.dpu.isa import EXTENT_MAX, QUEUES, DpuConfig, Instruction
from backends.dpu.memory import (
    TENSOR_ALIGN,
    DdrImage,
    FeatureMap,
    align,
    bias_records,
    conv_weight_words,
    dw_weight_words,
    table_records,
)
from backends.dpu.simulator import Planner, pitch
from compiler.errors import LayerloomError, UnsupportedError
from compiler.quant import intmath as im

# Default banks of the layer emitters: two per operand, for double buffering.
INPUT_BANKS, OUTPUT_BANKS, OTHER_BANKS = (0, 1), (2, 3), (4, 5)


@dataclass
class BuiltProgram:
    """A finished program: instructions (END last), the layer of each, the weights region
    and the sizes of the other regions it addresses."""

    instructions: list[Instruction]
    layers: list[str]
    weights: bytes
    sizes: dict[str, int]

    def ddr(self) -> DdrImage:
        """A DDR image with the weights in place and zeroed work, input and output regions."""
        return DdrImage.allocate(self.weights, **self.sizes)

    def binary(self) -> bytes:
        return encode(self.instructions)


class ProgramBuilder:
    def __init__(self, config: DpuConfig) -> None:
        self.config = config
        self.instructions: list[Instruction] = []
        self.layers: list[str] = []
        self.current_layer = ""
        self.weights = bytearray()
        self.sizes: dict[str, int] = {}
        self._planner = Planner(config, lambda reg, offset, end: (f"ddr:{reg}", offset))
        self._tracker = HazardTracker()
        self._clocks: list[Clock] = []
        self._last: list[Clock] = [NO_CLOCK] * len(QUEUES)
        self._inits: dict[str, Instruction] = {}

    # -- DDR -----------------------------------------------------------------------------

    def feature_map(self, reg: str, h: int, w: int, c: int) -> FeatureMap:
        """A dense h x w x c map at the end of region `reg` (64-byte aligned)."""
        if reg == "weights":
            raise LayerloomError("feature maps do not live in the read-only weights region")
        offset = align(self.sizes.get(reg, 0), TENSOR_ALIGN)
        self.sizes[reg] = offset + h * w * c
        return FeatureMap.dense(reg, offset, h, w, c)

    def constant(self, data: np.ndarray | bytes) -> int:
        """Append bytes (bank-layout weights, records) to the weights region; their offset."""
        offset = align(len(self.weights), TENSOR_ALIGN)
        self.weights.extend(bytes(offset - len(self.weights)))
        self.weights.extend(np.ascontiguousarray(data).tobytes() if isinstance(data, np.ndarray) else data)
        return offset

    # -- instructions --------------------------------------------------------------------

    @contextmanager
    def layer(self, name: str) -> Iterator[None]:
        """Name the layer of the instructions emitted inside."""
        outer, self.current_layer = self.current_layer, name
        try:
            yield
        finally:
            self.current_layer = outer

    def emit(self, mnemonic: str, **fields: Any) -> int | None:
        """Append an instruction with the tokens it needs; its index, or None for an INIT
        equal to the configuration in force."""
        ins = Instruction.make(mnemonic, **fields)
        if mnemonic.endswith("INIT"):
            if self._inits.get(mnemonic) == ins:
                return None
            self._inits[mnemonic] = ins
        index = len(self.instructions)
        step = self._planner.plan(index, ins)
        if step.queue is None:
            raise LayerloomError("END is added by finish()")
        q = step.queue
        clock = advance(self._last[q], q, index)
        found = self._tracker.conflicts(index, q, clock, step.reads, step.writes)
        uninitialised = [c for c in found if c.earlier < 0]
        if uninitialised:
            raise LayerloomError(f"reads {uninitialised[0].region.describe()}, which nothing wrote before",
                                 f"instruction {index} ({mnemonic}) of layer '{self.current_layer}'")
        latest: dict[int, int] = {}
        for c in found:
            source = self._queue_of(c.earlier)
            latest[source] = max(latest.get(source, -1), c.earlier)
        # A token from one queue may order the other queue's instruction too: keep the needed.
        needed = {s: a for s, a in latest.items()
                  if not any(o != s and a <= self._clocks[b][s] for o, b in latest.items())}
        waits = set(ins.wait)
        for source, earlier in needed.items():
            signaller = self.instructions[earlier]
            self.instructions[earlier] = signaller.replace(signal=signaller.signal | {QUEUES[q]})
            waits.add(QUEUES[source])
            clock = merge(clock, self._clocks[earlier])
        if waits != set(ins.wait):
            ins = ins.replace(wait=frozenset(waits))
        self._tracker.record(index, q, step.reads, step.writes)
        self.instructions.append(ins)
        self.layers.append(self.current_layer)
        self._clocks.append(clock)
        self._last[q] = clock
        return index

    def _queue_of(self, index: int) -> int:
        queue = self.instructions[index].queue
        assert queue is not None
        return QUEUES.index(queue)

    def finish(self) -> BuiltProgram:
        """The program with END appended (the builder must not be used afterwards)."""
        self.instructions.append(Instruction.make("END"))
        self.layers.append("")
        sizes = {reg: max(size, 1) for reg, size in self.sizes.items()}
        return BuiltProgram(list(self.instructions), list(self.layers), bytes(self.weights), sizes)

    # -- transfers -----------------------------------------------------------------------

    def load_words(self, mem: str, addr: int, data: np.ndarray) -> None:
        """LOAD bank-layout words (weights or bias records) placed in the weights region,
        in pieces of at most 4095 words."""
        width = self.config.word_bytes(mem)
        words = np.ascontiguousarray(data).view(np.uint8).reshape(-1, width)
        offset = self.constant(words)
        for first in range(0, len(words), EXTENT_MAX):
            count = min(EXTENT_MAX, len(words) - first)
            self.emit("LOAD", mem=mem, addr=addr + first, reg="weights", offset=offset + first * width, rows=1,
                      cols=count, chans=width, row_stride=0, col_stride=width)

    def load_window(self, x: FeatureMap, bank: int, rows: tuple[int, int], cols: tuple[int, int],
                    pad_value: int = 0) -> tuple[int, int, int, int]:
        """LOAD input rows / columns [first, first + count) of `x` (first may be negative,
        the span may run past the end: that part is padding) into a tile at word 0 of
        `bank`; the tile's padding (top, bottom, left, right)."""
        (r0, nr), (c0, nc) = rows, cols
        lo_r, hi_r = max(0, r0), min(x.h, r0 + nr)
        lo_c, hi_c = max(0, c0), min(x.w, c0 + nc)
        if hi_r <= lo_r or hi_c <= lo_c:
            raise UnsupportedError(f"an input tile lies entirely in the padding (rows {r0}..{r0 + nr - 1}, "
                                   f"columns {c0}..{c0 + nc - 1} of a {x.h}x{x.w} map)", self.current_layer)
        pads = (lo_r - r0, r0 + nr - hi_r, lo_c - c0, c0 + nc - hi_c)
        self.emit("LOAD", bank=bank, addr=0, reg=x.reg, offset=x.at(lo_r, lo_c), rows=hi_r - lo_r, cols=hi_c - lo_c,
                  chans=x.c, row_stride=x.row_stride, col_stride=x.col_stride, pad_value=pad_value,
                  pad_top=pads[0], pad_bottom=pads[1], pad_left=pads[2], pad_right=pads[3])
        return pads

    def load_tile(self, x: FeatureMap, bank: int, r0: int, rows: int, c0: int, cols: int) -> None:
        self.load_window(x, bank, (r0, rows), (c0, cols))

    def save_tile(self, y: FeatureMap, bank: int, r0: int, rows: int, c0: int, cols: int) -> None:
        self.emit("SAVE", bank=bank, addr=0, reg=y.reg, offset=y.at(r0, c0), rows=rows, cols=cols, chans=y.c,
                  row_stride=y.row_stride, col_stride=y.col_stride)


# ---------------------------------------------------------------------------------------
# Layer descriptions (from qnn ops)
# ---------------------------------------------------------------------------------------


def _ints(attr: Any) -> list[int]:
    from dialects.nn import int_list

    return list(int_list(attr))


def _name(op: Operation) -> str:
    return getattr(op, "layer_name", "") or op.name


def _check_pow2_int8(op: Operation) -> None:
    from compiler.tensors import dtype_of

    scheme = getattr(op, "scheme_name", "")
    if scheme not in ("pow2", ""):  # "": no requantization (max pooling)
        raise UnsupportedError(f"the DPU requantizes by powers of two; '{op.name}' uses scheme '{scheme}'", _name(op))
    for value in (*op.operands[:1], op.results[0]):
        if dtype_of(value.type) != np.int8:
            raise UnsupportedError(f"the DPU computes on int8, not {dtype_of(value.type)}", _name(op))


def _activation(op: Operation, lo: int, hi: int, leaky: bool = False) -> dict[str, Any]:
    """CONVINIT / ELEWINIT activation fields for a clamp range (and leaky slope)."""
    if leaky:
        return {"act": "leaky"}
    if (lo, hi) == im.INT8_RANGE:
        return {"act": "none"}
    if (lo, hi) == (0, 127):
        return {"act": "relu"}
    return {"act": "clip", "clip_lo": lo, "clip_hi": hi}


@dataclass(frozen=True)
class ConvLayer:
    """A convolution (CONV) or depthwise convolution (DWCONV) with its output stage:
    int8 weights (oc, ic, kh, kw) (depthwise: (c, 1, kh, kw)), int32 bias, pow2 shift per
    output channel; pads (top, left, bottom, right)."""

    weights: np.ndarray
    bias: np.ndarray
    shifts: np.ndarray
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    depthwise: bool = False
    activation: dict[str, Any] = field(default_factory=lambda: {"act": "none"})

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weights.shape[2]), int(self.weights.shape[3])

    @property
    def out_channels(self) -> int:
        return int(self.weights.shape[0])

    @staticmethod
    def from_qnn(op: Operation, weight: np.ndarray, bias: np.ndarray | None = None) -> ConvLayer:
        """A qnn.conv2d (pow2, int8) with its weight and bias arrays; group 1 or depthwise."""
        from dialects import qnn

        assert isinstance(op, qnn.Conv2dOp)
        _check_pow2_int8(op)
        oc, icg, kh, kw = weight.shape
        group = int(op.group.value.data)
        depthwise = group > 1
        if depthwise and not (icg == 1 and group == oc):
            raise UnsupportedError(f"grouped convolution (group {group}) is not on the DPU; only group 1 and depthwise",
                                   _name(op))
        requant = op.requant()
        if not np.all(requant.multipliers == 1):
            raise UnsupportedError("a convolution requantizes by shifts alone on the DPU (multipliers 1)", _name(op))
        shifts = np.broadcast_to(requant.shifts.reshape(-1), (oc,))
        activation = _activation(op, *op.clamp_range(), leaky=op.negative_requant() is not None)
        negative = op.negative_requant()
        if negative is not None:
            alpha = np.unique(negative.multipliers)
            if alpha.size != 1 or not np.array_equal(np.broadcast_to(negative.shifts.reshape(-1), (oc,)), shifts + 16):
                raise UnsupportedError("the DPU's leaky slope is one alpha / 2^16 for all channels", _name(op))
            activation["alpha"] = int(alpha[0])
        return ConvLayer(
            np.asarray(weight, np.int8),
            np.zeros(oc, np.int64) if bias is None else np.asarray(bias, np.int64),
            shifts.astype(np.int64),
            tuple(_ints(op.strides)), tuple(_ints(op.pads)), tuple(_ints(op.dilations)),  # type: ignore[arg-type]
            depthwise,
            activation,
        )


@dataclass(frozen=True)
class PoolLayer:
    """Max or average pooling; average pooling's divisor records are `params` (one
    (multiplier, shift) per window count n = 1 .. len, or one for global pooling)."""

    kind: str
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    count_include_pad: bool = False
    multipliers: tuple[int, ...] = ()
    shifts: tuple[int, ...] = ()

    @property
    def global_(self) -> bool:
        return self.kind == "avg" and len(self.shifts) == 1

    @staticmethod
    def from_qnn(op: Operation, input_hw: tuple[int, int] | None = None) -> PoolLayer:
        """A qnn.pool or qnn.global_pool (give `input_hw` for the global one's window)."""
        from dialects import qnn
        from dialects.nn import shape_of

        assert isinstance(op, qnn.QuantizedPoolOp)
        _check_pow2_int8(op)
        params: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())
        if op.kind.data == "avg":
            r = op.requant()
            params = tuple(int(v) for v in r.multipliers.reshape(-1)), tuple(int(v) for v in r.shifts.reshape(-1))
        if isinstance(op, qnn.GlobalPoolOp):
            hw = input_hw or tuple(shape_of(op.input)[2:])
            if max(hw) > 255:
                raise UnsupportedError(f"a global pool over {hw[0]}x{hw[1]} exceeds the POOL window of 255", _name(op))
            return PoolLayer(op.kind.data, (hw[0], hw[1]), (1, 1), (0, 0, 0, 0), True, *params)
        assert isinstance(op, qnn.PoolOp)
        if _ints(op.dilations) != [1, 1]:
            raise UnsupportedError("the DPU's POOL has no dilation", _name(op))
        return PoolLayer(op.kind.data, tuple(_ints(op.kernel)), tuple(_ints(op.strides)),  # type: ignore[arg-type]
                         tuple(_ints(op.pads)), bool(op.count_include_pad.value.data), *params)  # type: ignore[arg-type]


@dataclass(frozen=True)
class EltwiseLayer:
    """ELEW: y = act(requantize_pow2((a << shift_a) [+ (b << shift_b)], 1, shift_out))."""

    inputs: int = 2
    shift_a: int = 0
    shift_b: int = 0
    shift_out: int = 0
    activation: dict[str, Any] = field(default_factory=lambda: {"act": "none"})

    @staticmethod
    def from_qnn_add(op: Operation) -> EltwiseLayer:
        from dialects import qnn
        from dialects.nn import shape_of

        assert isinstance(op, qnn.AddOp)
        _check_pow2_int8(op)
        if shape_of(op.lhs) != shape_of(op.rhs):
            raise UnsupportedError(f"ELEW adds equal shapes, not {shape_of(op.lhs)} and {shape_of(op.rhs)}", _name(op))
        sa, sb = (int(s) for s in op.operand_requant_table().shifts.reshape(-1))
        return EltwiseLayer(2, -sa, -sb, int(op.requant().shifts.reshape(-1)[0]), _activation(op, *op.clamp_range()))

    @staticmethod
    def concat_operand(op: Operation, index: int) -> EltwiseLayer | None:
        """The rescale of operand `index` of a qnn.concat, None when it is copied."""
        from dialects import qnn

        assert isinstance(op, qnn.ConcatOp)
        _check_pow2_int8(op)
        stage = op.operand_stages()[index]
        shift = int(stage.requant.shifts.reshape(-1)[0])
        if shift == 0 and (stage.lo, stage.hi) == im.INT8_RANGE:
            return None
        return EltwiseLayer(1, 0, 0, shift, _activation(op, stage.lo, stage.hi))


# ---------------------------------------------------------------------------------------
# Tiling
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    """Output tile extents (None: as large as fits a bank; channels: all)."""

    rows: int | None = None
    cols: int | None = None
    chans: int | None = None


WHOLE = Tile()  # every extent as large as fits


def spans(total: int, step: int) -> list[tuple[int, int]]:
    return [(first, min(step, total - first)) for first in range(0, total, step)]


def window_extent(out: int, kernel: int, stride: int, dilation: int = 1) -> int:
    return (out - 1) * stride + (kernel - 1) * dilation + 1


def fit(tile: Tile, out_hw: tuple[int, int], chans: int, words: Any, depth: int, where: str,
        quantum: int = 1) -> tuple[int, int, int]:
    """Resolve a Tile: the given extents, the free ones as large as `words(rows, cols,
    chans)` (the largest tile of the step, in words) allows within a bank: rows first,
    then columns (whole multiples of `quantum`, the pixel parallelism, when it can)."""
    c = min(tile.chans or chans, chans)
    rows, cols = min(tile.rows or out_hw[0], out_hw[0]), min(tile.cols or out_hw[1], out_hw[1])
    if tile.rows is None:
        while rows > 1 and words(rows, cols, c) > depth:
            rows -= 1
        rows = -(-out_hw[0] // -(-out_hw[0] // rows))  # as many tiles, of even heights
    if tile.cols is None and words(rows, cols, c) > depth:
        candidates = [*range(cols // quantum * quantum, 0, -quantum), *range(min(quantum, cols) - 1, 0, -1)]
        cols = next((n for n in candidates if words(rows, n, c) <= depth), 1)
        if cols >= quantum:  # as many tiles, of even widths
            cols = -(-out_hw[1] // -(-out_hw[1] // cols) // quantum) * quantum
    if words(rows, cols, c) > depth:
        raise UnsupportedError(f"a {rows}x{cols}x{c} tile needs {words(rows, cols, c)} words, "
                               f"a bank has {depth}", where)
    return rows, cols, c


def _check_output(y: FeatureMap, out_hw: tuple[int, int], chans: int, where: str) -> None:
    if (y.h, y.w, y.c) != (*out_hw, chans):
        raise LayerloomError(f"output map is {y.h}x{y.w}x{y.c}, the layer makes {out_hw[0]}x{out_hw[1]}x{chans}", where)


def out_size(size: int, kernel: int, stride: int, dilation: int, pad: tuple[int, int], ceil: bool = False) -> int:
    span = size + pad[0] + pad[1] - (kernel - 1) * dilation - 1
    return (-(-span // stride) if ceil else span // stride) + 1


def _slots(depth: int, words: int) -> list[int]:
    """Word addresses of double buffers of `words` in a bank (one buffer if two do not fit)."""
    return [0, depth // 2] if words <= depth // 2 else [0]


# ---------------------------------------------------------------------------------------
# Layer emitters
# ---------------------------------------------------------------------------------------


def conv(b: ProgramBuilder, layer: ConvLayer, x: FeatureMap, y: FeatureMap, tile: Tile = WHOLE,
         banks: tuple[Sequence[int], Sequence[int]] = (INPUT_BANKS, OUTPUT_BANKS)) -> None:
    """CONV (or DWCONV) over output tiles: for each output-channel tile, its weights and
    bias records, then each spatial tile's LOAD, CONV and SAVE. The output map may be a
    channel slice of a wider map (concat by placement)."""
    c, where = b.config, b.current_layer
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.stride, layer.dilation
    pt, pl, pb, pr = layer.pads
    out_hw = (out_size(x.h, kh, sh, dh, (pt, pb)), out_size(x.w, kw, sw, dw, (pl, pr)))
    oc = layer.out_channels
    _check_output(y, out_hw, oc, where)
    ic = x.c
    if layer.depthwise and ic != oc:
        raise LayerloomError(f"depthwise over {ic} input channels makes {ic}, not {oc}", where)
    if not layer.depthwise and layer.weights.shape[1] != ic:
        raise LayerloomError(f"weights for {layer.weights.shape[1]} input channels, the input has {ic}", where)

    def words(rows: int, cols: int, ch: int) -> int:
        in_ch = ch if layer.depthwise else ic
        inputs = window_extent(rows, kh, sh, dh) * window_extent(cols, kw, sw, dw) * pitch(in_ch, c.icp)
        return max(inputs, rows * cols * pitch(ch, c.icp))

    # Output channels per tile: whole OCP groups whose weights fit half the weights bank.
    group_words = kh * kw * (1 if layer.depthwise else math.ceil(ic / c.icp))
    groups = max(1, (c.bank_depth // 2) // group_words)
    width = c.icp if layer.depthwise else c.ocp
    rows, cols, chans = fit(Tile(tile.rows, tile.cols, tile.chans or min(oc, groups * width)), out_hw, oc, words,
                            c.bank_depth, where, c.pp)
    init = "DWINIT" if layer.depthwise else "CONVINIT"
    b.emit(init, kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, dilation_h=dh, dilation_w=dw, **layer.activation)
    w_slots = _slots(c.bank_depth, group_words * math.ceil(chans / width))
    b_slots = _slots(c.bank_depth, chans)
    k = 0
    for t, (o0, n_o) in enumerate(spans(oc, chans)):
        w = layer.weights[o0 : o0 + n_o]
        packed = dw_weight_words(w, c) if layer.depthwise else conv_weight_words(w, c)
        addr_w, addr_b = w_slots[t % len(w_slots)], b_slots[t % len(b_slots)]
        b.load_words("weights", addr_w, packed)
        b.load_words("bias", addr_b, bias_records(layer.bias[o0 : o0 + n_o], 1, layer.shifts[o0 : o0 + n_o]))
        src = x.channels(o0, n_o) if layer.depthwise else x
        for r0, n_r in spans(out_hw[0], rows):
            for c0, n_c in spans(out_hw[1], cols):
                bank_in, bank_out = banks[0][k % len(banks[0])], banks[1][k % len(banks[1])]
                b.load_window(src, bank_in, (r0 * sh - pt, window_extent(n_r, kh, sh, dh)),
                              (c0 * sw - pl, window_extent(n_c, kw, sw, dw)))
                operands = dict(bank_in=bank_in, addr_in=0, bank_out=bank_out, addr_out=0, addr_w=addr_w,
                                addr_bias=addr_b, out_rows=n_r, out_cols=n_c)
                if layer.depthwise:
                    b.emit("DWCONV", **operands, chans=n_o)
                else:
                    b.emit("CONV", **operands, ic=ic, oc=n_o)
                b.save_tile(y.channels(o0, n_o), bank_out, r0, n_r, c0, n_c)
                k += 1


def pool(b: ProgramBuilder, layer: PoolLayer, x: FeatureMap, y: FeatureMap, tile: Tile = WHOLE,
         banks: tuple[Sequence[int], Sequence[int]] = (INPUT_BANKS, OUTPUT_BANKS)) -> None:
    """POOL over output tiles (the output map's size says whether the last windows
    reach past the pads, ONNX's ceil_mode); padding is LOADed as -128 (max) or 0
    (average), and the POOL's border names the padding an average does not count (all of
    it, or with count_include_pad only what lies past the pads)."""
    c, where = b.config, b.current_layer
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    pt, pl, pb, pr = layer.pads
    floor = (out_size(x.h, kh, sh, 1, (pt, pb)), out_size(x.w, kw, sw, 1, (pl, pr)))
    ceil = (out_size(x.h, kh, sh, 1, (pt, pb), True), out_size(x.w, kw, sw, 1, (pl, pr), True))
    out_hw = (y.h, y.w)
    if not (floor[0] <= y.h <= ceil[0] and floor[1] <= y.w <= ceil[1]):
        raise LayerloomError(f"output map is {y.h}x{y.w}, the pool makes {floor[0]}x{floor[1]} "
                             f"(or {ceil[0]}x{ceil[1]} with ceil_mode)", where)
    _check_output(y, out_hw, x.c, where)

    def words(rows: int, cols: int, ch: int) -> int:
        return window_extent(rows, kh, sh) * window_extent(cols, kw, sw) * pitch(ch, c.icp)

    rows, cols, chans = fit(tile, out_hw, x.c, words, c.bank_depth, where, max(1, c.pp // 2))
    average = layer.kind == "avg"
    b.emit("POOLINIT", kernel_h=kh, kernel_w=kw, kind=layer.kind, count_pad=int(layer.global_), stride_h=sh,
           stride_w=sw)
    addr_bias = 0
    if average:
        b.load_words("bias", addr_bias, bias_records(0, np.asarray(layer.multipliers), np.asarray(layer.shifts)))
    k = 0
    for o0, n_o in spans(x.c, chans):
        for r0, n_r in spans(out_hw[0], rows):
            for c0, n_c in spans(out_hw[1], cols):
                bank_in, bank_out = banks[0][k % len(banks[0])], banks[1][k % len(banks[1])]
                first_r, first_c = r0 * sh - pt, c0 * sw - pl
                n_in_r, n_in_c = window_extent(n_r, kh, sh), window_extent(n_c, kw, sw)
                pads = b.load_window(x.channels(o0, n_o), bank_in, (first_r, n_in_r), (first_c, n_in_c),
                                     pad_value=-128 if not average else 0)
                if layer.count_include_pad:  # only what lies past the pads is not counted
                    pads = (0, max(0, first_r + n_in_r - (x.h + pb)), 0, max(0, first_c + n_in_c - (x.w + pr)))
                uncounted = dict(zip(("pad_top", "pad_bottom", "pad_left", "pad_right"), pads, strict=True))
                b.emit("POOL", bank_in=bank_in, addr_in=0, bank_out=bank_out, addr_out=0, addr_bias=addr_bias,
                       out_rows=n_r, out_cols=n_c, chans=n_o, **(uncounted if average and not layer.global_ else {}))
                b.save_tile(y.channels(o0, n_o), bank_out, r0, n_r, c0, n_c)
                k += 1


def _pointwise(b: ProgramBuilder, operands: Sequence[FeatureMap], y: FeatureMap, tile: Tile,
               banks: Sequence[Sequence[int]], emit: Any, in_factor: tuple[int, int] = (1, 1)) -> None:
    """Tiles of a layer whose output pixel depends on one input pixel: LOAD each operand's
    tile, `emit(bank_ins, bank_out, rows, cols, chans)`, SAVE."""
    c = b.config
    fh, fw = in_factor

    def words(rows: int, cols: int, ch: int) -> int:
        return rows * cols * pitch(ch, c.icp)

    rows, cols, chans = fit(tile, (y.h, y.w), y.c, words, c.bank_depth, b.current_layer, c.pp)
    rows, cols = max(fh, rows // fh * fh), max(fw, cols // fw * fw)
    k = 0
    for o0, n_o in spans(y.c, chans):
        for r0, n_r in spans(y.h, rows):
            for c0, n_c in spans(y.w, cols):
                ins = [bank[k % len(bank)] for bank in banks[: len(operands)]]
                for x, bank in zip(operands, ins, strict=True):
                    b.load_tile(x.channels(o0, n_o), bank, r0 // fh, n_r // fh, c0 // fw, n_c // fw)
                out = banks[-1][k % len(banks[-1])]
                emit(ins, out, n_r, n_c, n_o)
                b.save_tile(y.channels(o0, n_o), out, r0, n_r, c0, n_c)
                k += 1


def eltwise(b: ProgramBuilder, layer: EltwiseLayer, a: FeatureMap, other: FeatureMap | None, y: FeatureMap,
            tile: Tile = WHOLE) -> None:
    """ELEW over tiles: a residual add (two operands) or a rescale (one)."""
    operands = [a] if layer.inputs == 1 else [a, other]
    if any(op is None or op.shape != y.shape for op in operands):
        raise LayerloomError(f"ELEW operands must have the output's shape {y.shape}", b.current_layer)
    b.emit("ELEWINIT", inputs=layer.inputs, shift_a=layer.shift_a, shift_b=layer.shift_b, shift_out=layer.shift_out,
           **layer.activation)

    def emit(ins: list[int], out: int, rows: int, cols: int, chans: int) -> None:
        b.emit("ELEW", bank_a=ins[0], addr_a=0, bank_b=ins[-1], addr_b=0, bank_out=out, addr_out=0, out_rows=rows,
               out_cols=cols, chans=chans)

    banks = (INPUT_BANKS, OTHER_BANKS, OUTPUT_BANKS) if layer.inputs == 2 else (INPUT_BANKS, OUTPUT_BANKS)
    _pointwise(b, operands, y, tile, banks, emit)  # type: ignore[arg-type]


def lut(b: ProgramBuilder, table: np.ndarray, x: FeatureMap, y: FeatureMap, tile: Tile = WHOLE) -> None:
    """ALU op=lut over tiles with a 256-entry table (y = table[x + 128])."""
    addr_table = 0
    b.load_words("bias", addr_table, table_records(table))

    def emit(ins: list[int], out: int, rows: int, cols: int, chans: int) -> None:
        b.emit("ALU", op="lut", bank_in=ins[0], addr_in=0, bank_out=out, addr_out=0, addr_table=addr_table,
               out_rows=rows, out_cols=cols, chans=chans)

    _pointwise(b, [x], y, tile, (INPUT_BANKS, OUTPUT_BANKS), emit)


def upsample(b: ProgramBuilder, factor: tuple[int, int], x: FeatureMap, y: FeatureMap, tile: Tile = WHOLE) -> None:
    """ALU op=upsample (nearest) over tiles."""
    if (y.h, y.w, y.c) != (x.h * factor[0], x.w * factor[1], x.c):
        raise LayerloomError(f"upsampling {x.shape} by {factor} makes {(x.h * factor[0], x.w * factor[1], x.c)}, "
                             f"not {y.shape}", b.current_layer)

    def emit(ins: list[int], out: int, rows: int, cols: int, chans: int) -> None:
        b.emit("ALU", op="upsample", bank_in=ins[0], addr_in=0, bank_out=out, addr_out=0, factor_h=factor[0],
               factor_w=factor[1], out_rows=rows, out_cols=cols, chans=chans)

    _pointwise(b, [x], y, tile, (INPUT_BANKS, OUTPUT_BANKS), emit, in_factor=factor)
