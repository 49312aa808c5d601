"""Text form of DPU programs (docs/isa.md "Assembly"), parsed with lark (asm.lark).

    program = assemble(text)        # list[Instruction]
    text = disassemble(program)     # canonical: fields in table order, defaults left out

`disassemble` is canonical, so text -> binary -> text and binary -> text -> binary are
exact. Bad assembly raises LayerloomError located at `source:line:col` saying what was
expected: syntax, unknown mnemonic or field, duplicate field, value out of range,
missing field.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from functools import cache, lru_cache
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from backends.dpu.isa import OPCODES, Field, FieldError, Instruction, QueueSet, Value
from compiler.errors import LayerloomError

MNEMONIC_WIDTH = max(len(m) for m in OPCODES) + 1

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_NUMBER = re.compile(r"(-?)(?:0[xX]([0-9A-Fa-f]+)|([0-9]+))$")
_NAMES = re.compile(rf"{_NAME}(\|{_NAME})*$")

# How lark's terminals read in "expected ..." messages.
_TERMINALS = {
    "MNEMONIC": "an instruction",
    "OPERAND": "field=value",
    "_NL": "end of line",
    "$END": "end of input",
}


@cache
def _parser() -> Lark:
    return Lark(Path(__file__).with_name("asm.lark").read_text(), parser="lalr")


def _expected(names: Iterable[str]) -> str:
    known = set(names)
    words = [word for terminal, word in _TERMINALS.items() if terminal in known] or sorted(known)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _syntax_error(e: UnexpectedInput, text: str, source: str) -> LayerloomError:
    """One line for lark's error, naming what was expected. A name where an operand was
    expected lexes as a mnemonic: say what the operand lacks instead."""
    pos = e.pos_in_stream or 0
    line_start = text.rfind("\n", 0, pos) + 1
    blank = max(text.rfind(" ", line_start, pos), text.rfind("\t", line_start, pos))
    word_start = blank + 1 if blank >= 0 else line_start
    word = re.match(r"[^\s;#]*", text[word_start:])
    word_text = word.group() if word else ""
    col = word_start - line_start + 1

    def error(message: str, column: int) -> LayerloomError:
        return LayerloomError(message, f"{source}:{e.line}:{column}")

    if re.fullmatch(_NAME + "=", word_text):
        return error(f"expected a value after '{word_text}'", col + len(word_text))
    if re.fullmatch(_NAME + "=.+", word_text) and not text[line_start:word_start].strip():
        return error(f"expected an instruction, got the operand '{word_text}' (an instruction takes one line)", col)
    if isinstance(e, UnexpectedToken):
        got = "end of line" if e.token.type == "_NL" else f"'{e.token}'"
        return error(f"expected {_expected(e.expected)}, got {got}", e.column)
    if isinstance(e, UnexpectedCharacters):
        return error(f"unexpected character '{text[pos]}'; expected {_expected(e.allowed)}", e.column)
    return LayerloomError(str(e).splitlines()[0], source)


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


class _OperandError(Exception):
    """A bad operand; `offset` is the column of the culprit within the operand."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


def _parse_value(field: Field, text: str) -> Value:
    number = _NUMBER.match(text)
    if number:
        sign, hex_digits, digits = number.groups()
        magnitude = int(hex_digits, 16) if hex_digits else int(digits, 10)
        return -magnitude if sign else magnitude
    if not _NAMES.match(text):
        raise FieldError(
            f"bad value '{text}' for {field.name}; expected a number (42, 0x2a, -3), a name or names joined by '|'"
        )
    if isinstance(field, QueueSet):
        return frozenset() if text == "none" else frozenset(text.split("|"))
    return text


@lru_cache(maxsize=4096)
def _operand(mnemonic: str, text: str) -> tuple[str, Value]:
    """`field=value` of an instruction -> (field, checked value). Cached: a program
    repeats most of its operands (addr_in=0x0, wait=load)."""
    spec = OPCODES[mnemonic]
    name, _, raw = text.partition("=")
    field = spec.by_name.get(name)
    if field is None:
        raise _OperandError(f"{mnemonic} has no field '{name}'{_suggest(name, spec.by_name)}", 0)
    try:
        value = _parse_value(field, raw)
        field.check(value)
    except FieldError as e:
        raise _OperandError(str(e), len(name) + 1) from None
    return name, value


def assemble(text: str, source: str = "<asm>") -> list[Instruction]:
    """Parse assembly text into instructions (see the module docstring for errors)."""
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, text, source) from None

    def error(message: str, token: Token, offset: int = 0) -> LayerloomError:
        return LayerloomError(message, f"{source}:{token.line}:{(token.column or 0) + offset}")

    program: list[Instruction] = []
    for node in tree.children:
        assert isinstance(node, Tree)
        mnemonic, *operands = node.children
        assert isinstance(mnemonic, Token)
        spec = OPCODES.get(mnemonic.upper())
        if spec is None:
            raise error(f"unknown instruction '{mnemonic}'{_suggest(mnemonic.upper(), OPCODES)}", mnemonic)
        values: dict[str, Value] = {}
        for operand in operands:
            assert isinstance(operand, Token)
            try:
                name, value = _operand(spec.mnemonic, str(operand))
            except _OperandError as e:
                raise error(str(e), operand, e.offset) from None
            if name in values:
                raise error(f"field '{name}' given twice", operand)
            values[name] = value
        try:
            program.append(spec.build(values))
        except FieldError as e:
            raise error(str(e), mnemonic) from None
    return program


def format_instruction(ins: Instruction) -> str:
    """One line: the mnemonic, then every field that differs from its default."""
    spec = ins.spec
    operands = [f"{f.name}={f.format(ins.fields[f.name])}" for f in spec.fields if ins.fields[f.name] != f.default]
    return f"{ins.mnemonic:<{MNEMONIC_WIDTH}}{' '.join(operands)}".rstrip()


def disassemble(program: Iterable[Instruction]) -> str:
    """Canonical assembly text of a program, one instruction per line."""
    return "".join(format_instruction(ins) + "\n" for ins in program)
