"""The layerloom DPU instruction set as data (the spec is docs/isa.md).

One table, `OPCODES`, describes every instruction: its opcode, its queue, its length in
32-bit words and its fields (word, bit position, width, value range, default, meaning).
The encoder and decoder (encoding.py), the assembler and disassembler (assembler.py)
and the field tables in docs/isa.md (`field_table`, `python -m backends.dpu.isa`) are
all driven by it, so they cannot disagree.

Field values in Python are what they mean: ints for numbers (negative for signed
fields), str for named choices (`act="relu"`, `reg="input"`), frozenset of queue names
for the dependency fields (`wait=frozenset({"load"})`).

    from backends.dpu.isa import Instruction
    conv = Instruction.make("CONVINIT", kernel_h=3, kernel_w=3, act="relu")
    conv.kernel_h, conv.act            # 3, 'relu'
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import namedtuple
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from compiler.errors import LayerloomError

if TYPE_CHECKING:
    from compiler.hw.model import Target

WORD_BITS = 32
OPCODE_LSB, OPCODE_WIDTH = 28, 4

# The three instruction queues, in the order of the bits of a dependency mask.
QUEUES = ("load", "compute", "save")

Value = int | str | frozenset[str]


class FieldError(ValueError):
    """A value a field cannot hold; the caller adds where (instruction index, line:col)."""


# ---------------------------------------------------------------------------------------
# Field kinds
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field(ABC):
    """`width` bits of word `word` starting at bit `lsb`. `default` None = required."""

    name: str
    word: int
    lsb: int
    width: int
    doc: str
    default: Value | None = None

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb

    @property
    def bits(self) -> str:
        """Bit range as the docs write it: `31:28` (or `16` for one bit)."""
        msb = self.lsb + self.width - 1
        return str(self.lsb) if self.width == 1 else f"{msb}:{self.lsb}"

    # The five conversions every kind implements.
    @abstractmethod
    def check(self, value: Value) -> None:
        """Raise FieldError unless `value` is one this field holds."""

    @abstractmethod
    def to_code(self, value: Value) -> int:
        """The field's bits (unshifted) for a checked value."""

    @abstractmethod
    def from_code(self, code: int) -> Value:
        """The value of the field's bits; FieldError for a code no value has."""

    @abstractmethod
    def format(self, value: Value) -> str:
        """The value as assembly text."""

    @abstractmethod
    def kind(self) -> str:
        """Type and range for the docs' field tables."""


@dataclass(frozen=True)
class UInt(Field):
    """An unsigned number in [lo, hi] (hi defaults to the largest the width holds)."""

    lo: int = 0
    hi: int | None = None
    hex: bool = False  # addresses and offsets print in hex

    @property
    def top(self) -> int:
        return (1 << self.width) - 1 if self.hi is None else self.hi

    def check(self, value: Value) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(f"{self.name} takes a number, not {_show(value)}")
        if not self.lo <= value <= self.top:
            raise FieldError(f"{self.name} = {value} is out of range {self.lo}..{self.top}")

    def to_code(self, value: Value) -> int:
        assert isinstance(value, int)
        return value

    def from_code(self, code: int) -> Value:
        self.check(code)
        return code

    def format(self, value: Value) -> str:
        assert isinstance(value, int)
        return f"{value:#x}" if self.hex else str(value)

    def kind(self) -> str:
        return f"uint {self.lo}..{self.top:#x}" if self.hex else f"uint {self.lo}..{self.top}"


@dataclass(frozen=True)
class SInt(Field):
    """A two's-complement signed number in [lo, hi]."""

    lo: int | None = None
    hi: int | None = None

    @property
    def bounds(self) -> tuple[int, int]:
        lo = -(1 << (self.width - 1)) if self.lo is None else self.lo
        hi = (1 << (self.width - 1)) - 1 if self.hi is None else self.hi
        return lo, hi

    def check(self, value: Value) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(f"{self.name} takes a number, not {_show(value)}")
        lo, hi = self.bounds
        if not lo <= value <= hi:
            raise FieldError(f"{self.name} = {value} is out of range {lo}..{hi}")

    def to_code(self, value: Value) -> int:
        assert isinstance(value, int)
        return value & ((1 << self.width) - 1)

    def from_code(self, code: int) -> Value:
        value = code - (1 << self.width) if code >> (self.width - 1) else code
        self.check(value)
        return value

    def format(self, value: Value) -> str:
        return str(value)

    def kind(self) -> str:
        lo, hi = self.bounds
        return f"int {lo}..{hi}"


@dataclass(frozen=True)
class Choice(Field):
    """One of `names`; the code is the name's index."""

    names: tuple[str, ...] = ()

    def check(self, value: Value) -> None:
        if value not in self.names:
            raise FieldError(f"{self.name} is one of {', '.join(self.names)}; not {_show(value)}")

    def to_code(self, value: Value) -> int:
        assert isinstance(value, str)
        return self.names.index(value)

    def from_code(self, code: int) -> Value:
        if code >= len(self.names):
            raise FieldError(f"{self.name} code {code} names nothing (codes 0..{len(self.names) - 1})")
        return self.names[code]

    def format(self, value: Value) -> str:
        assert isinstance(value, str)
        return value

    def kind(self) -> str:
        return " / ".join(f"{i} {n}" for i, n in enumerate(self.names))


@dataclass(frozen=True)
class QueueSet(Field):
    """A set of queues other than `own` (bit i = QUEUES[i]): the dependency fields."""

    own: str = ""

    def check(self, value: Value) -> None:
        if not isinstance(value, frozenset):
            raise FieldError(f"{self.name} is a set of queues joined by '|' (or none); not {_show(value)}")
        unknown = sorted(value - frozenset(QUEUES))
        if unknown:
            raise FieldError(f"{self.name}: '{unknown[0]}' is not a queue ({', '.join(QUEUES)})")
        if self.own in value:
            raise FieldError(f"{self.name} cannot name the instruction's own queue '{self.own}'")

    def to_code(self, value: Value) -> int:
        assert isinstance(value, frozenset)
        return sum(1 << QUEUES.index(q) for q in value)

    def from_code(self, code: int) -> Value:
        value = frozenset(q for i, q in enumerate(QUEUES) if code >> i & 1)
        self.check(value)
        return value

    def format(self, value: Value) -> str:
        assert isinstance(value, frozenset)
        return "|".join(q for q in QUEUES if q in value) or "none"

    def kind(self) -> str:
        return "queue set: bit 0 load, 1 compute, 2 save"


def _show(value: object) -> str:
    if isinstance(value, frozenset):
        return "{" + ", ".join(sorted(value)) + "}"
    return repr(value)


# ---------------------------------------------------------------------------------------
# Instructions
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Opcode:
    """One instruction of the table: mnemonic, opcode, queue, length and fields
    (the header fields `wait` and `signal` first, then the table's own)."""

    mnemonic: str
    code: int
    queue: str | None  # None: END, handled by the fetch unit
    words: int
    summary: str
    fields: tuple[Field, ...]
    by_name: Mapping[str, Field] = field(init=False, repr=False, compare=False)
    used: tuple[int, ...] = field(init=False, repr=False, compare=False)  # used bits per word
    record: Any = field(init=False, repr=False, compare=False)  # a NamedTuple class of the fields (Instruction.record)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", MappingProxyType({f.name: f for f in self.fields}))
        object.__setattr__(self, "record", namedtuple(self.mnemonic, [f.name for f in self.fields]))  # noqa: PYI024
        used = [0] * self.words
        used[0] = ((1 << OPCODE_WIDTH) - 1) << OPCODE_LSB
        for f in self.fields:
            used[f.word] |= f.mask
        object.__setattr__(self, "used", tuple(used))

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.default is None)

    def field(self, name: str) -> Field:
        try:
            return self.by_name[name]
        except KeyError:
            raise FieldError(f"{self.mnemonic} has no field '{name}' (fields: {', '.join(self.by_name)})") from None

    def build(self, values: Mapping[str, Value]) -> Instruction:
        """Check `values` (missing ones take their defaults) into an Instruction."""
        for name, value in values.items():
            self.field(name).check(value)
        missing = [name for name in self.required if name not in values]
        if missing:
            raise FieldError(f"{self.mnemonic} needs {_plural('field', len(missing))} {', '.join(missing)}")
        full = {f.name: values.get(f.name, f.default) for f in self.fields}
        return Instruction(self.mnemonic, full)  # type: ignore[arg-type]


def _plural(word: str, count: int) -> str:
    return word if count == 1 else word + "s"


class Instruction:
    """One instruction: its mnemonic and the value of every field (table order).
    Immutable and hashable; read fields as attributes (`i.addr_in`) or items (`i["act"]`)."""

    __slots__ = ("mnemonic", "fields", "_record")
    mnemonic: str
    fields: Mapping[str, Value]

    def __init__(self, mnemonic: str, fields: Mapping[str, Value]) -> None:
        object.__setattr__(self, "mnemonic", mnemonic)
        object.__setattr__(self, "fields", MappingProxyType(dict(fields)))
        object.__setattr__(self, "_record", None)

    @property
    def record(self) -> Any:
        """The fields as a NamedTuple in table order (`i.record.addr_in`): attribute access
        at tuple speed, for the simulator's hot paths (a missing field is None)."""
        record = self._record
        if record is None:
            record = self.spec.record._make(map(self.fields.get, self.spec.record._fields))
            object.__setattr__(self, "_record", record)
        return record

    @staticmethod
    def make(mnemonic: str, **values: Any) -> Instruction:
        """Build and check an instruction; sets may be given as any iterable of queue
        names (`wait={"load"}`). Bad values raise LayerloomError."""
        spec = opcode(mnemonic)
        normal = {k: frozenset(v) if isinstance(v, set | list | tuple) else v for k, v in values.items()}
        try:
            return spec.build(normal)
        except FieldError as e:
            raise LayerloomError(str(e), mnemonic) from None

    @property
    def spec(self) -> Opcode:
        return OPCODES[self.mnemonic]

    @property
    def queue(self) -> str | None:
        return self.spec.queue

    def replace(self, **values: Any) -> Instruction:
        return Instruction.make(self.mnemonic, **{**self.fields, **values})

    def __getattr__(self, name: str) -> Any:
        try:
            return self.fields[name]
        except KeyError:
            raise AttributeError(f"{self.mnemonic} has no field '{name}'") from None

    def __getitem__(self, name: str) -> Value:
        return self.fields[name]

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Instruction is immutable; use .replace(...)")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Instruction) and self.mnemonic == other.mnemonic and self.fields == other.fields

    def __hash__(self) -> int:
        return hash((self.mnemonic, tuple(self.fields.items())))

    def __repr__(self) -> str:
        shown = " ".join(f"{k}={v!r}" for k, v in self.fields.items() if v != self.spec.by_name[k].default)
        return f"<{self.mnemonic} {shown}>" if shown else f"<{self.mnemonic}>"


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------

MEMORIES = ("fmap", "weights", "bias")
REGISTERS = ("weights", "work", "input", "output", "r4", "r5", "r6", "r7")
ACTIVATIONS = ("none", "relu", "clip", "leaky")
ADDR_BITS = 16
EXTENT_MAX = (1 << 12) - 1  # rows and cols of a tile
CHANNELS_MAX = (1 << 13) - 1


def _header(queue: str | None) -> list[Field]:
    if queue is None:
        return []
    return [
        QueueSet(
            "wait", 0, 25, 3, "queues whose token this instruction takes before it starts", frozenset(), own=queue
        ),
        QueueSet("signal", 0, 22, 3, "queues this instruction gives a token when it is done", frozenset(), own=queue),
    ]


def _bank_addr(word: int, bank: str, addr: str, what: str) -> list[Field]:
    return [
        UInt(bank, word, 16, 4, f"feature-map bank of {what}"),
        UInt(addr, word, 0, ADDR_BITS, f"word address of {what} in that bank", hex=True),
    ]


def _pads(word: int, lsb: int, what: str) -> list[Field]:
    return [
        UInt(f"pad_{side}", word, lsb + 4 * i, 4, f"{what} at the {side}", 0)
        for i, side in enumerate(("top", "bottom", "left", "right"))
    ]


def _clip(word: int, lsb: int) -> list[Field]:
    return [
        SInt("clip_lo", word, lsb, 8, "lower bound of act=clip", -128),
        SInt("clip_hi", word, lsb + 8, 8, "upper bound of act=clip", 127),
    ]


def _ddr_box(direction: str) -> list[Field]:
    """Words 1-4 of LOAD and SAVE: the DDR side of the transfer, a rows x cols x chans box."""
    return [
        Choice("reg", 2, 24, 3, f"base register of the DDR address {direction}", names=REGISTERS),
        UInt("offset", 1, 0, 32, "byte offset of element (0, 0, 0) from the base register", hex=True),
        UInt("rows", 4, 0, 12, "rows of the box", lo=1, hi=EXTENT_MAX),
        UInt("cols", 4, 12, 12, "pixels per row of the box", lo=1, hi=EXTENT_MAX),
        UInt("chans", 3, 16, 13, "channels (contiguous bytes) per pixel", lo=1, hi=CHANNELS_MAX),
        UInt("row_stride", 2, 0, 24, "DDR bytes from one row to the next"),
        UInt("col_stride", 3, 0, 16, "DDR bytes from one pixel to the next in a row"),
    ]


def _tile_operands(*inputs: tuple[int, str]) -> list[Field]:
    """Bank operands of a compute instruction: inputs at (word, name suffix), output in word 1."""
    fields: list[Field] = []
    for word, suffix in inputs:
        what = "the input tile" if suffix == "in" else f"operand {suffix}"
        fields += _bank_addr(word, f"bank_{suffix}", f"addr_{suffix}", what)
    return fields + _bank_addr(1, "bank_out", "addr_out", "the output tile")


def _tile_extent(*channels: tuple[int, str, str]) -> list[Field]:
    """Words 3-4 of a compute instruction: the output tile's rows, cols and channel counts."""
    return [
        UInt("out_rows", 3, 0, 12, "rows of the output tile", lo=1, hi=EXTENT_MAX),
        UInt("out_cols", 3, 12, 12, "pixels per row of the output tile", lo=1, hi=EXTENT_MAX),
        *(UInt(name, 4, lsb, 13, doc, lo=1, hi=CHANNELS_MAX) for lsb, name, doc in channels),
    ]


def _window_config() -> list[Field]:
    """CONVINIT and DWINIT: the layer's window, activation and leaky slope."""
    return [
        UInt("kernel_h", 0, 0, 5, "kernel rows", lo=1, hi=16),
        UInt("kernel_w", 0, 5, 5, "kernel columns", lo=1, hi=16),
        UInt("stride_h", 0, 10, 4, "vertical stride", 1, lo=1),
        UInt("stride_w", 0, 14, 4, "horizontal stride", 1, lo=1),
        Choice("act", 0, 18, 2, "fused activation of the output stage", "none", names=ACTIVATIONS),
        UInt("dilation_h", 1, 0, 4, "vertical dilation", 1, lo=1),
        UInt("dilation_w", 1, 4, 4, "horizontal dilation", 1, lo=1),
        *_clip(1, 8),
        UInt("alpha", 2, 0, 16, "leaky slope as alpha * 2^16 (act=leaky)", 0),
    ]


_CHANNELS = (0, "chans", "channels of the tile (in = out)")

_TABLE: tuple[tuple[str, int, str | None, int, str, list[Field]], ...] = (
    # mnemonic, code, queue, words, summary, fields (after the header)
    ("LOAD", 0x1, "load", 6, "copy a DDR box into an on-chip memory, padding it", [
        Choice("mem", 0, 20, 2, "destination memory", "fmap", names=MEMORIES),
        UInt("bank", 0, 16, 4, "feature-map bank (mem=fmap)", 0),
        UInt("addr", 0, 0, ADDR_BITS, "first word written", hex=True),
        *_ddr_box("read"),
        SInt("pad_value", 4, 24, 8, "value of the padding pixels", 0),
        *_pads(5, 0, "padding pixels written"),
    ]),
    ("SAVE", 0x2, "save", 5, "copy a feature-map tile from a bank to a DDR box", [
        *_bank_addr(0, "bank", "addr", "the tile"),
        *_ddr_box("written"),
    ]),
    ("CONVINIT", 0x3, "compute", 3, "set the configuration of the following CONVs", _window_config()),
    ("CONV", 0x4, "compute", 5, "convolve one tile: all input channels, oc output channels", [
        *_tile_operands((0, "in")),
        UInt("addr_w", 2, 0, ADDR_BITS, "first weights-bank word", hex=True),
        UInt("addr_bias", 2, 16, ADDR_BITS, "first bias-bank record (one per output channel)", hex=True),
        *_tile_extent((0, "ic", "input channels"), (13, "oc", "output channels of the tile")),
    ]),
    ("DWINIT", 0x5, "compute", 3, "set the configuration of the following DWCONVs", _window_config()),
    ("DWCONV", 0x6, "compute", 5, "depthwise-convolve one tile", [
        *_tile_operands((0, "in")),
        UInt("addr_w", 2, 0, ADDR_BITS, "first weights-bank word", hex=True),
        UInt("addr_bias", 2, 16, ADDR_BITS, "first bias-bank record (one per channel)", hex=True),
        *_tile_extent(_CHANNELS),
    ]),
    ("POOLINIT", 0x7, "compute", 2, "set the configuration of the following POOLs", [
        UInt("kernel_h", 0, 0, 8, "window rows", lo=1),
        UInt("kernel_w", 0, 8, 8, "window columns", lo=1),
        Choice("kind", 0, 16, 1, "max or average", names=("max", "avg")),
        UInt("count_pad", 0, 17, 1, "avg: 1 = padding counts in the divisor (ONNX count_include_pad)", 0),
        UInt("stride_h", 1, 0, 4, "vertical stride", 1, lo=1),
        UInt("stride_w", 1, 4, 4, "horizontal stride", 1, lo=1),
    ]),
    ("POOL", 0x8, "compute", 5, "pool one tile", [
        *_tile_operands((0, "in")),
        UInt("addr_bias", 2, 0, ADDR_BITS, "avg: first divisor record", 0, hex=True),
        *_pads(2, 16, "padding rows / columns of the input tile (avg divisor)"),
        *_tile_extent(_CHANNELS),
    ]),
    ("ELEWINIT", 0x9, "compute", 2, "set the configuration of the following ELEWs", [
        UInt("inputs", 0, 0, 2, "operands: 2 = a + b (residual add), 1 = a alone (rescale)", 2, lo=1, hi=2),
        UInt("shift_a", 0, 2, 5, "left shift of operand a to the common scale", 0, hi=16),
        UInt("shift_b", 0, 7, 5, "left shift of operand b to the common scale", 0, hi=16),
        SInt("shift_out", 0, 12, 7, "right shift of the sum to the output scale (< 0: left)", 0, lo=-16, hi=48),
        Choice("act", 0, 19, 2, "fused activation", "none", names=ACTIVATIONS[:3]),
        *_clip(1, 0),
    ]),
    ("ELEW", 0xA, "compute", 5, "add (or rescale) one tile", [*_tile_operands((0, "a"), (2, "b")), *_tile_extent(_CHANNELS)]),
    ("ALU", 0xB, "compute", 5, "table lookup or nearest upsampling of one tile", [
        Choice("op", 0, 20, 2, "lut: y = table[x + 128]; upsample: nearest", names=("lut", "upsample")),
        *_tile_operands((0, "in")),
        UInt("factor_h", 1, 20, 4, "upsample: vertical factor", 1, lo=1),
        UInt("factor_w", 1, 24, 4, "upsample: horizontal factor", 1, lo=1),
        UInt("addr_table", 2, 0, ADDR_BITS, "lut: first of the 32 bias-bank records holding the table", 0, hex=True),
        *_tile_extent(_CHANNELS),
    ]),
    ("END", 0xF, None, 1, "end of the program: stop fetching, finish when all queues drain", []),
)  # fmt: skip

OPCODES: Mapping[str, Opcode] = MappingProxyType(
    {m: Opcode(m, code, q, words, summary, tuple(_header(q) + fields)) for m, code, q, words, summary, fields in _TABLE}
)
BY_CODE: Mapping[int, Opcode] = MappingProxyType({op.code: op for op in OPCODES.values()})


def opcode(mnemonic: str) -> Opcode:
    try:
        return OPCODES[mnemonic]
    except KeyError:
        raise LayerloomError(f"unknown instruction '{mnemonic}' (instructions: {', '.join(OPCODES)})") from None


# ---------------------------------------------------------------------------------------
# Dependency tokens (static: they do not depend on timing)
# ---------------------------------------------------------------------------------------


class Token(NamedTuple):
    """The k-th token on channel source -> dest: given by instruction `signaller` when it
    finishes, taken by instruction `waiter` before it starts (indices into the program)."""

    source: str
    dest: str
    signaller: int
    waiter: int


_QUEUE_BITS: dict[Any, int] = {frozenset(q for i, q in enumerate(QUEUES) if code >> i & 1): code for code in range(1 << len(QUEUES))}


def tokens(program: Sequence[Instruction], where: str = "") -> list[Token]:
    """Pair the k-th signal on each channel with its k-th wait, and check the rules of
    docs/isa.md "Dependency tokens": every wait is preceded (in program order) by its
    signal, no token is left over, END is the last instruction and the only one. The
    pairs are in program order of their waiters (then source queue)."""
    queue = np.empty(len(program), np.int64)
    wait = np.zeros(len(program), np.int64)
    signal = np.zeros(len(program), np.int64)
    for i, ins in enumerate(program):
        spec = ins.spec
        if spec.queue is None:
            queue[i] = -1
            continue
        queue[i] = QUEUES.index(spec.queue)
        fields: Mapping[str, Any] = ins.fields
        wait[i], signal[i] = _QUEUE_BITS.get(fields.get("wait"), -1), _QUEUE_BITS.get(fields.get("signal"), -1)
    ends = np.flatnonzero(queue < 0)
    own = np.left_shift(1, np.maximum(queue, 0))
    good = ends.tolist() == [len(program) - 1] and (wait >= 0).all() and (signal >= 0).all() and \
        not ((wait | signal) & own & (queue >= 0)).any()
    found: list[tuple[np.ndarray, np.ndarray, int, int]] = []
    for source, dest in ((s, d) for s in range(len(QUEUES)) for d in range(len(QUEUES)) if s != d):
        signallers = np.flatnonzero((queue == source) & (signal >> dest & 1 == 1))
        waiters = np.flatnonzero((queue == dest) & (wait >> source & 1 == 1))
        good = good and signallers.size == waiters.size and bool(np.all(signallers < waiters))
        found.append((signallers, waiters, source, dest))
    if not good:  # the rules in program order, naming the first instruction that breaks one
        return _tokens_in_order(program, where)
    by_signaller = np.concatenate([signallers for signallers, _, _, _ in found])
    by_waiter = np.concatenate([waiters for _, waiters, _, _ in found])
    sources = np.concatenate([np.full(s.size, q, np.int64) for s, _, q, _ in found])
    dests = np.concatenate([np.full(s.size, q, np.int64) for s, _, _, q in found])
    order = np.lexsort((sources, by_waiter))  # by waiter, then source queue
    columns = (sources[order].tolist(), dests[order].tolist(), by_signaller[order].tolist(), by_waiter[order].tolist())
    return [Token(QUEUES[a], QUEUES[b], c, d) for a, b, c, d in zip(*columns, strict=True)]


def _tokens_in_order(program: Sequence[Instruction], where: str) -> list[Token]:
    """`tokens` instruction by instruction, raising at the first broken rule."""
    signals: dict[tuple[str, str], list[int]] = {}
    waits: dict[tuple[str, str], list[int]] = {}
    pairs: list[Token] = []
    for i, ins in enumerate(program):
        queue = ins.queue
        if queue is None:
            if i != len(program) - 1:
                raise LayerloomError(f"instruction {i}: END before the last instruction", where)
            continue
        for source in QUEUES:
            if source in ins.wait:
                channel = (source, queue)
                k = len(waits.setdefault(channel, []))
                sent = signals.get(channel, [])
                if k >= len(sent):
                    raise LayerloomError(
                        f"instruction {i} ({ins.mnemonic}) waits for token {k} on {source}->{queue}, "
                        f"but only {len(sent)} {'is' if len(sent) == 1 else 'are'} signalled before it",
                        where,
                    )
                waits[channel].append(i)
                pairs.append(Token(source, queue, sent[k], i))
        for dest in QUEUES:
            if dest in ins.signal:
                signals.setdefault((queue, dest), []).append(i)
    if not program or program[-1].mnemonic != "END":
        raise LayerloomError("the program does not end with END", where)
    for channel, sent in signals.items():
        left = len(sent) - len(waits.get(channel, []))
        if left:
            first = sent[len(sent) - left]
            raise LayerloomError(
                f"{left} {_plural('token', left)} on {channel[0]}->{channel[1]} never waited for "
                f"(first: instruction {first}, {program[first].mnemonic})",
                where,
            )
    return pairs


# ---------------------------------------------------------------------------------------
# Configurations (B512 ... B4096) and their on-chip memories
# ---------------------------------------------------------------------------------------

BIAS_RECORD_BYTES = 8  # int32 bias, uint16 multiplier, int8 shift, one reserved byte


@dataclass(frozen=True)
class DpuConfig:
    """One DPU core's parallelism and on-chip memories; `cores` identical cores."""

    name: str
    pp: int
    icp: int
    ocp: int
    bank_num: int = 8
    bank_depth: int = 2048
    cores: int = 1

    @property
    def fmap_word(self) -> int:
        """Bytes per feature-map word: ICP channels of one pixel."""
        return self.icp

    @property
    def weights_word(self) -> int:
        """Bytes per weights word: OCP x ICP weights of one kernel position."""
        return self.icp * self.ocp

    def word_bytes(self, mem: str) -> int:
        return {"fmap": self.fmap_word, "weights": self.weights_word, "bias": BIAS_RECORD_BYTES}[mem]

    def depth(self, mem: str) -> int:
        """Words per bank: the feature-map banks, the weights bank and the bias bank all
        have `bank_depth` words (the weights bank then holds one OCP group of any kernel
        the DPU accepts: R*S*ceil(C/ICP) <= bank_depth)."""
        return self.bank_depth

    def bank_bytes(self, mem: str) -> int:
        return self.depth(mem) * self.word_bytes(mem)

    @property
    def macs(self) -> int:
        return self.pp * self.icp * self.ocp

    @staticmethod
    def from_arch(arch: str, *, bank_num: int = 8, bank_depth: int = 2048, cores: int = 1) -> DpuConfig:
        from compiler.engines.dpu import ARCHITECTURES

        if arch not in ARCHITECTURES:
            raise LayerloomError(f"unknown DPU configuration '{arch}' (known: {', '.join(ARCHITECTURES)})")
        pp, icp, ocp = ARCHITECTURES[arch]
        return DpuConfig(arch, pp, icp, ocp, bank_num, bank_depth, cores)

    @staticmethod
    def from_target(target: Target, engine: str | None = None) -> DpuConfig:
        """The configuration of a target's DPU engine (the first of kind `dpu` unless
        named): parallelism and bank depth from the engine, cores from its `count`, banks
        per core from its on-chip memory (`size 24 x 32 KB` over 3 cores: 8 banks)."""
        candidates = [e for e in target.engines if e.kind == "dpu" and engine in (None, e.name)]
        if not candidates:
            raise LayerloomError(f"target '{target.name}' has no DPU engine" + (f" '{engine}'" if engine else ""))
        e = candidates[0]
        p = e.params
        name = p.get("arch") or f"{p['pp']}x{p['icp']}x{p['ocp']}"
        memory = target.buffer_of(e)
        bank_num = memory.banks // e.count if memory is not None else 8
        config = DpuConfig(name, p["pp"], p["icp"], p["ocp"], bank_num, p["bank_depth"], e.count)
        if memory is not None and memory.bank_size != config.bank_bytes("fmap"):
            raise LayerloomError(
                f"memory '{memory.name}' has banks of {memory.bank_size} bytes, but a DPU bank holds "
                f"{config.bank_depth} words of ICP = {config.icp} bytes = {config.bank_bytes('fmap')} bytes",
                memory.where or target.source,
            )
        return config


def configurations() -> list[DpuConfig]:
    from compiler.engines.dpu import ARCHITECTURES

    return [DpuConfig.from_arch(a) for a in ARCHITECTURES]


# ---------------------------------------------------------------------------------------
# Docs
# ---------------------------------------------------------------------------------------


def field_table(mnemonic: str) -> str:
    """The markdown field table of one instruction, as docs/isa.md carries it."""
    op = OPCODES[mnemonic]
    rows = [
        "| field | word | bits | type and range | default | meaning |",
        "|---|---|---|---|---|---|",
        f"| opcode | 0 | {OPCODE_LSB + OPCODE_WIDTH - 1}:{OPCODE_LSB} | {op.code:#x} | | {op.summary} |",
    ]
    for f in sorted(op.fields, key=lambda f: (f.word, -f.lsb)):
        default = "required" if f.default is None else f.format(f.default)
        rows.append(f"| `{f.name}` | {f.word} | {f.bits} | {f.kind()} | {default} | {f.doc} |")
    return "\n".join(rows)


def opcode_table() -> str:
    rows = ["| opcode | mnemonic | queue | words | what it does |", "|---|---|---|---|---|"]
    for op in sorted(OPCODES.values(), key=lambda o: o.code):
        rows.append(f"| {op.code:#x} | {op.mnemonic} | {op.queue or 'fetch'} | {op.words} | {op.summary} |")
    return "\n".join(rows)


def configuration_table(configs: Iterable[DpuConfig] | None = None) -> str:
    rows = [
        "| configuration | PP x ICP x OCP | MACs | feature-map banks | weights bank | bias bank |",
        "|---|---|---|---|---|---|",
    ]
    for c in configs if configs is not None else configurations():
        fmap = f"{c.bank_num} x {c.bank_depth} x {c.fmap_word} B = {c.bank_num * c.bank_bytes('fmap') // 1024} KB"
        weights = f"{c.bank_depth} x {c.weights_word} B = {c.bank_bytes('weights') // 1024} KB"
        bias = f"{c.bank_depth} x {BIAS_RECORD_BYTES} B = {c.bank_bytes('bias') // 1024} KB"
        rows.append(f"| {c.name} | {c.pp} x {c.icp} x {c.ocp} | {c.macs} | {fmap} | {weights} | {bias} |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m backends.dpu.isa: the tables of docs/isa.md
    print(opcode_table(), end="\n\n")
    print(configuration_table(), end="\n\n")
    for mnemonic in OPCODES:
        print(f"### {mnemonic}\n\n{field_table(mnemonic)}\n")
