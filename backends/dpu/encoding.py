"""Binary form of DPU programs (docs/isa.md "Binary encoding"): each instruction is
`words` little-endian 32-bit words, the opcode in bits 31:28 of the first; fields sit at
the bits the table in isa.py gives them; every other bit is reserved and zero.

    data = encode(program)          # bytes
    program == decode(data)         # exact, field for field
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backends.dpu.isa import (
    BY_CODE,
    OPCODE_LSB,
    OPCODE_WIDTH,
    OPCODES,
    QUEUES,
    Choice,
    Field,
    FieldError,
    Instruction,
    QueueSet,
    SInt,
    UInt,
    Value,
)
from compiler.errors import LayerloomError

WORD_BYTES = 4


def encode_words(ins: Instruction) -> list[int]:
    """The words of one instruction; FieldError if a field is missing, unknown or out of range."""
    spec = OPCODES.get(ins.mnemonic)
    if spec is None:
        raise FieldError(f"unknown instruction '{ins.mnemonic}'")
    unknown = sorted(set(ins.fields) - set(spec.by_name))
    if unknown:
        raise FieldError(f"{ins.mnemonic} has no field '{unknown[0]}'")
    words = [0] * spec.words
    words[0] = spec.code << OPCODE_LSB
    for f in spec.fields:
        if f.name not in ins.fields:
            raise FieldError(f"{ins.mnemonic} needs field {f.name}")
        value = ins.fields[f.name]
        f.check(value)
        words[f.word] |= f.to_code(value) << f.lsb
    return words


def encode(program: Sequence[Instruction], where: str = "") -> bytes:
    """The binary of a program; a bad field raises LayerloomError naming the instruction
    index and the field."""
    words: list[int] = []
    for i, ins in enumerate(program):
        try:
            words += encode_words(ins)
        except FieldError as e:
            raise LayerloomError(f"instruction {i} ({ins.mnemonic}): {e}", where) from None
    return np.asarray(words, dtype="<u4").tobytes()


def decode(data: bytes, where: str = "") -> list[Instruction]:
    """The instructions of a binary; a truncated or invalid stream raises LayerloomError
    naming the instruction index and its byte offset. Fields are cut out of all the
    instructions of an opcode at once (numpy); a stream that breaks a rule anywhere is
    decoded again instruction by instruction, which names the first place."""
    if len(data) % WORD_BYTES:
        return _decode_in_order(data, where)
    words = np.frombuffer(data, dtype="<u4").astype(np.int64)
    opcodes = (words >> OPCODE_LSB & ((1 << OPCODE_WIDTH) - 1)).tolist()
    starts: list[int] = []
    at = 0
    while at < len(opcodes):  # each opcode fixes its length: the boundaries are a walk
        length = _LENGTHS[opcodes[at]]
        if length == 0 or at + length > len(opcodes):
            return _decode_in_order(data, where)
        starts.append(at)
        at += length
    first = np.array(starts, np.int64)
    kinds = np.array(opcodes, np.int64)[first] if starts else np.zeros(0, np.int64)
    program: list[Instruction | None] = [None] * len(starts)
    for code in np.unique(kinds).tolist():
        spec = BY_CODE[code]
        where_ = np.flatnonzero(kinds == code)
        block = words[first[where_][:, None] + np.arange(spec.words)]
        if np.any(block & ~np.array(spec.used, np.int64)):
            return _decode_in_order(data, where)
        columns = []
        for f in spec.fields:
            values = _field_values(f, (block[:, f.word] & f.mask) >> f.lsb)
            if values is None:
                return _decode_in_order(data, where)
            columns.append(values)
        names = [f.name for f in spec.fields]
        rows = zip(*columns, strict=True) if columns else [()] * where_.size
        for k, row in zip(where_.tolist(), rows, strict=True):
            program[k] = Instruction(spec.mnemonic, dict(zip(names, row, strict=True)))
    return program  # type: ignore[return-value]


_LENGTHS = [BY_CODE[c].words if c in BY_CODE else 0 for c in range(1 << OPCODE_WIDTH)]


def _field_values(f: Field, codes: np.ndarray) -> list[Value] | None:
    """The values of one field's codes (as `Field.from_code`), None if any is invalid."""
    if isinstance(f, Choice):
        return None if np.any(codes >= len(f.names)) else [f.names[c] for c in codes.tolist()]
    if isinstance(f, QueueSet):
        sets = [f.from_code(c) if not (c >> QUEUES.index(f.own) & 1) else None for c in range(1 << f.width)]
        values = [sets[c] for c in codes.tolist()]
        return None if any(v is None for v in values) else values  # type: ignore[return-value]
    if isinstance(f, SInt):
        codes = np.where(codes >> (f.width - 1) & 1, codes - (1 << f.width), codes)
        lo, hi = f.bounds
    else:
        assert isinstance(f, UInt)
        lo, hi = f.lo, f.top
    return None if np.any((codes < lo) | (codes > hi)) else codes.tolist()


def _decode_in_order(data: bytes, where: str) -> list[Instruction]:
    """`decode` instruction by instruction, raising at the first invalid one."""
    if len(data) % WORD_BYTES:
        raise LayerloomError(
            f"{len(data)} bytes is not a whole number of 32-bit words (truncated, or not a DPU program)", where
        )
    words: list[int] = np.frombuffer(data, dtype="<u4").tolist()
    program: list[Instruction] = []
    at = 0
    while at < len(words):
        i, byte = len(program), at * WORD_BYTES
        code = words[at] >> OPCODE_LSB & ((1 << OPCODE_WIDTH) - 1)
        spec = BY_CODE.get(code)
        if spec is None:
            raise LayerloomError(f"instruction {i} at byte {byte:#x}: opcode {code:#x} is not an instruction", where)
        if at + spec.words > len(words):
            raise LayerloomError(
                f"instruction {i} ({spec.mnemonic}) at byte {byte:#x} needs {spec.words} words, "
                f"but the stream ends after {len(words) - at}",
                where,
            )
        mine = words[at : at + spec.words]
        for k, (word, used) in enumerate(zip(mine, spec.used, strict=True)):
            if word & ~used:
                raise LayerloomError(
                    f"instruction {i} ({spec.mnemonic}) at byte {byte:#x}: reserved bits {word & ~used:#010x} "
                    f"of word {k} are set",
                    where,
                )
        try:
            values = {f.name: f.from_code((mine[f.word] & f.mask) >> f.lsb) for f in spec.fields}
        except FieldError as e:
            raise LayerloomError(f"instruction {i} ({spec.mnemonic}) at byte {byte:#x}: {e}", where) from None
        program.append(Instruction(spec.mnemonic, values))
        at += spec.words
    return program
