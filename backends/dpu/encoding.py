"""Binary form of DPU programs (docs/isa.md "Binary encoding"): each instruction is
`words` little-endian 32-bit words, the opcode in bits 31:28 of the first; fields sit at
the bits the table in isa.py gives them; every other bit is reserved and zero.

    data = encode(program)          # bytes
    program == decode(data)         # exact, field for field
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backends.dpu.isa import BY_CODE, OPCODE_LSB, OPCODE_WIDTH, OPCODES, FieldError, Instruction
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
    naming the instruction index and its byte offset."""
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
